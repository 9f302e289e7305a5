//! `print!` and `println!` with format strings, for the test kernels' code
//! only: the release kernel prints without `core::fmt` (`console::say`).

/// Prints formatted text; used by [`print!`](crate::print) and
/// [`println!`](crate::println).
#[cold]
#[inline(never)]
pub fn print(args: core::fmt::Arguments<'_>) {
    struct Console<'a>(&'a mut dyn ktext::Sink);
    impl core::fmt::Write for Console<'_> {
        fn write_str(&mut self, text: &str) -> core::fmt::Result {
            self.0.str(text);
            Ok(())
        }
    }
    // Console::write_str never fails.
    crate::console::locked(|out| {
        let _ = core::fmt::Write::write_fmt(&mut Console(out), args);
    });
}

/// Prints to the kernel console with a format string (test kernels only).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::testing::print::print(format_args!($($arg)*)) };
}

/// Prints a line to the kernel console with a format string (test kernels
/// only).
#[macro_export]
macro_rules! println {
    () => { $crate::testing::print::print(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::testing::print::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
