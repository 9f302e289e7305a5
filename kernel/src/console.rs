//! The kernel console: line-atomic output over the serial port, without
//! `core::fmt`.
//!
//! Output is plain text (see the README for why). Lines from subsystems
//! carry a `[module]` prefix, written by the callers. A line is a
//! template and its arguments ([`say!`](crate::say)), as with `println!`
//! but through `ktext`: integers, strings and the errors the kernel
//! reports. The release kernel has no `core::fmt`
//! (kernel/README.md, "Size"); the test kernels' code in `testing/` keeps
//! `println!` with format strings ([`print`], feature `test-kernel`),
//! which only they have.

use ktext::{Sink, Text};

static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// The serial port as a [`Sink`]; written only through [`locked`].
struct Uart;

impl Sink for Uart {
    fn str(&mut self, text: &str) {
        crate::arch::console_write(text.as_bytes());
    }
}

/// Prints one line: `template` with `args`, then a newline; used by
/// [`say!`](crate::say).
///
/// Never inlined, and cold, as `print` was before it: fat LTO would copy
/// the lock and the loop into every call site, and cold keeps the printing
/// branches out of the hot paths' straight-line code.
#[cold]
#[inline(never)]
pub fn say(template: &str, args: &[ktext::Arg<'_>]) {
    locked(|out| {
        ktext::write(out, template, args);
        out.str("\n");
    });
}

/// Runs `write` with the console to itself: what it writes is never
/// interleaved with another line (the test kernels' `println!` writes
/// through it too).
pub fn locked(write: impl FnOnce(&mut dyn Sink)) {
    let _guard = LOCK.lock();
    write(&mut Uart);
}

/// Prints a line to the kernel console: `say!("[boot] module at {:#x}, {}
/// bytes", start, len)`. Like `println!` with positional placeholders
/// only, and the forms `ktext` knows (`{}`, `{:#x}`, `{:#018x}`, `{:>8}`,
/// ...), checked against the arguments at compile time; each argument is
/// an integer, a string or a [`ktext::Text`].
#[macro_export]
macro_rules! say {
    ($template:literal $(, $arg:expr)* $(,)?) => {{
        #[allow(unused_imports)]
        use ktext::ToArg as _;
        const _: () = assert!(
            ktext::check($template, <[&str]>::len(&[$(stringify!($arg)),*])),
            "the template's placeholders do not match its arguments"
        );
        $crate::console::say($template, &[$(($arg).to_arg()),*])
    }};
}

/// Prints formatted text; used by [`print!`](crate::print) and
/// [`println!`](crate::println), which only the test kernels have (their
/// code in `testing/` keeps format strings; the release kernel prints
/// without `core::fmt`).
#[cfg(feature = "test-kernel")]
#[cold]
#[inline(never)]
pub fn print(args: core::fmt::Arguments<'_>) {
    struct Console<'a>(&'a mut dyn Sink);
    impl core::fmt::Write for Console<'_> {
        fn write_str(&mut self, text: &str) -> core::fmt::Result {
            self.0.str(text);
            Ok(())
        }
    }
    // Console::write_str never fails.
    locked(|out| {
        let _ = core::fmt::Write::write_fmt(&mut Console(out), args);
    });
}

/// Prints to the kernel console with a format string (test kernels only).
#[cfg(feature = "test-kernel")]
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// Prints a line to the kernel console with a format string (test kernels
/// only).
#[cfg(feature = "test-kernel")]
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::console::print(format_args!("{}\n", format_args!($($arg)*)))
    };
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

impl Text for Times {
    fn write(&self, out: &mut dyn Sink) {
        if self.0 != 1 {
            ktext::put!(out, " (x{})", self.0);
        }
    }
}
