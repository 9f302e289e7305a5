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
///
/// Never inlined, and cold: fat LTO inlined it (lock, `write_fmt`) into
/// each of ~70 call sites, 6.9 KB of x86_64 `.text` (kernel/README.md,
/// "Size"); cold also keeps the printing branches out of the hot paths'
/// straight-line code.
#[cold]
#[inline(never)]
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

/// Calls `print(first, last, count)` once per burst: a run of consecutive
/// `items` that `same` says are one event repeated. Devices fault on every
/// word of a DMA (16 events for edu's 64 bytes), so a burst prints one line
/// with its count ([`Times`]) instead of one line per event.
pub fn bursts<T: Copy>(
    items: impl IntoIterator<Item = T>,
    same: impl Fn(&T, &T) -> bool,
    mut print: impl FnMut(&T, &T, usize),
) {
    let mut run: Option<(T, T, usize)> = None;
    for item in items {
        run = match run {
            Some((first, last, count)) if same(&last, &item) => Some((first, item, count + 1)),
            Some((first, last, count)) => {
                print(&first, &last, count);
                Some((item, item, 1))
            }
            None => Some((item, item, 1)),
        };
    }
    if let Some((first, last, count)) = run {
        print(&first, &last, count);
    }
}

/// How many times a console line stands for: nothing for once, ` (xN)` for
/// a burst of N.
pub struct Times(pub usize);

impl fmt::Display for Times {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            1 => Ok(()),
            count => write!(f, " (x{count})"),
        }
    }
}
