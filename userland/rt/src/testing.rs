//! System-test programs: `test NAME ... ok|FAILED` lines and a closing
//! `N passed, N failed` line on the debug console, the format
//! `cargo xtask test` watches for (the same as the kernel's boot
//! self-tests).
//!
//! ```ignore
//! fn main(_: &rt::Startup) -> i32 {
//!     let mut suite = rt::testing::Suite::new();
//!     suite.run("two_plus_two", || {
//!         rt::check!(2 + 2 == 4, "arithmetic is broken");
//!         Ok(())
//!     });
//!     suite.finish()
//! }
//! ```

use alloc::string::String;

/// A test's result.
pub type Outcome = Result<(), Failure>;

/// Why a test failed: a message printed under its `FAILED` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure(pub String);

/// Returns early from a test with a formatted [`Failure`].
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::testing::Failure($crate::__format!($($arg)*)))
    };
}

/// Fails the test with a formatted message unless `condition` holds.
#[macro_export]
macro_rules! check {
    ($condition:expr, $($arg:tt)*) => {
        if !$condition {
            $crate::fail!($($arg)*);
        }
    };
}

/// Counts results as tests run.
#[derive(Debug, Default)]
pub struct Suite {
    passed: u32,
    failed: u32,
}

impl Suite {
    /// No tests run yet.
    pub const fn new() -> Suite {
        Suite {
            passed: 0,
            failed: 0,
        }
    }

    /// Runs one test and prints its line (and its failure message).
    pub fn run(&mut self, name: &str, test: impl FnOnce() -> Outcome) {
        match test() {
            Ok(()) => {
                self.passed += 1;
                crate::println!("test {name} ... ok");
            }
            Err(Failure(message)) => {
                self.failed += 1;
                crate::println!("test {name} ... FAILED");
                crate::println!("    {message}");
            }
        }
    }

    /// How many tests passed and failed so far.
    pub const fn counts(&self) -> (u32, u32) {
        (self.passed, self.failed)
    }

    /// Prints the closing line and returns the program's exit status: 0
    /// when every test passed, 1 otherwise (the kernel's "a self-test
    /// failed" status).
    pub fn finish(self) -> i32 {
        crate::println!("{} passed, {} failed", self.passed, self.failed);
        if self.failed == 0 { 0 } else { 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks_something(value: u32) -> Outcome {
        crate::check!(value == 4, "expected 4, got {value}");
        Ok(())
    }

    #[test]
    fn failures_carry_their_message_and_are_counted() {
        assert_eq!(
            checks_something(5),
            Err(Failure(String::from("expected 4, got 5")))
        );
        let mut suite = Suite::new();
        suite.run("passes", || checks_something(4));
        suite.run("fails", || checks_something(3));
        assert_eq!(suite.counts(), (1, 1));
        assert_eq!(suite.finish(), 1);
        assert_eq!(Suite::new().finish(), 0);
    }
}
