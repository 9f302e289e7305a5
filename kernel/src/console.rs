//! The kernel console: formatted, line-atomic output over the serial port.
//!
//! Output is plain text (see the README for why). Lines from subsystems
//! carry a `[module]` prefix, written by the callers.

use core::fmt::{self, Write};

static LOCK: spin::Mutex<()> = spin::Mutex::new(());

struct Console;

impl Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        crate::arch::console_write(text.as_bytes());
        Ok(())
    }
}

/// Prints formatted text; used by [`print!`](crate::print) and [`println!`](crate::println).
pub fn print(args: fmt::Arguments<'_>) {
    let _guard = LOCK.lock();
    // Console::write_str never fails.
    let _ = Console.write_fmt(args);
}

/// Prints to the kernel console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// Prints a line to the kernel console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
