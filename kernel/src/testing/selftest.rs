//! Boot self-tests: `test NAME ... ok|FAILED` lines and a closing count, as
//! `cargo xtask test` expects them.

use core::fmt;

/// A test's result.
pub type Outcome = Result<(), Failure>;

/// The message of the last failure, kept until [`Suite::run`] prints it
/// after the test's `FAILED` line.
static LAST_FAILURE: spin::Mutex<heapless::String<256>> = spin::Mutex::new(heapless::String::new());

/// A test failed; its message waits in [`LAST_FAILURE`]. Zero-sized, so a
/// test's `Result` stays as small as a flag.
pub struct Failure(());

impl Failure {
    /// Records a failure described by formatted text (cut at 256 bytes,
    /// marked with `...`).
    pub fn new(args: fmt::Arguments<'_>) -> Failure {
        let mut text = LAST_FAILURE.lock();
        text.clear();
        if fmt::write(&mut *text, args).is_err() {
            // The text was cut; say so.
            while text.len() > 252 {
                text.pop();
            }
            let _ = text.push_str("...");
        }
        Failure(())
    }
}

/// Returns early from a test with a formatted [`Failure`].
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => { return Err($crate::testing::selftest::Failure::new(format_args!($($arg)*))) };
}

/// Checks a condition, failing the test with a formatted message otherwise.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($arg:tt)*) => { if !$cond { $crate::fail!($($arg)*); } };
}

/// Counts results as tests run.
#[derive(Default)]
pub struct Suite {
    passed: u32,
    failed: u32,
}

impl Suite {
    /// Runs one test and prints its line.
    pub fn run(&mut self, name: &str, test: impl FnOnce() -> Outcome) {
        match test() {
            Ok(()) => {
                self.passed += 1;
                crate::println!("test {name} ... ok");
            }
            Err(Failure(())) => {
                self.failed += 1;
                crate::println!("test {name} ... FAILED");
                crate::println!("    {}", LAST_FAILURE.lock());
            }
        }
    }

    /// Prints the closing line and returns the exit status.
    pub fn finish(self) -> u32 {
        crate::println!("{} passed, {} failed", self.passed, self.failed);
        if self.failed == 0 {
            crate::EXIT_SUCCESS
        } else {
            crate::EXIT_TESTS_FAILED
        }
    }
}
