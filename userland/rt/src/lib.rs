//! `rt`: the runtime every Portcullis user program links.
//!
//! - Entry: `_start` (per architecture, in `start.rs`) zeroes `.bss` and
//!   calls the program's `main`, declared with [`entry!`]:
//!   `fn main(startup: &rt::Startup) -> i32`. When `main` returns, its value
//!   is the thread's exit status ([`exit`]).
//! - [`Startup`]: what the program is given: its capability table.
//! - Panics print `[rt] panicked at ...` on the debug console and exit with
//!   [`PANIC_STATUS`].
//! - A heap of [`heap::HEAP_SIZE`] bytes, plus the image's `heap_size`
//!   when init mapped one, is the global allocator, so programs can use
//!   `alloc` (`Box`, `Vec`, ...).
//! - [`print!`] and [`println!`] write to the kernel's debug console.
//! - [`testing`]: `test NAME ... ok` lines and the closing count for
//!   system-test programs.
//! - [`space`]: retyping objects into free slots, page tables, filling
//!   Frames, loading an ELF into another address space (init and the tests
//!   that build address spaces).
//! - [`shared`]: word access to memory shared with another domain.
//! - [`boot`]: the root task's boot-info page and packed system image.
//!
//! Programs link with `link-<arch>.ld` (see `userland/README.md`).
//!
//! On the host, the entry, allocator and panic handler are left out (the
//! host's `std` has its own); what remains is tested with `cargo test`.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod bench;
pub mod boot;
pub mod heap;
pub mod mmio;
pub mod shared;
pub mod space;
#[cfg(target_os = "none")]
mod start;
pub mod testing;

#[doc(hidden)]
pub use alloc::format as __format;

use core::fmt;
use sys::names::CapTable;
use sys::{Cap, CapType};

/// The status a panicking program exits with (Rust's own convention).
pub const PANIC_STATUS: i32 = 101;

/// What a program receives at entry.
#[derive(Clone, Copy, Debug)]
pub struct Startup {
    argument: u64,
    caps: Option<&'static CapTable>,
}

impl Startup {
    /// The startup of a program whose first argument register held
    /// `argument`: the address of its [`CapTable`] or 0. A table with a bad
    /// header (or a misaligned address) is treated as absent.
    #[cfg(target_os = "none")]
    fn from_argument(argument: u64) -> Startup {
        let aligned = argument.is_multiple_of(align_of::<CapTable>() as u64);
        let caps = (argument != 0 && aligned)
            .then(|| table_at(argument))
            .filter(|table| table.is_valid());
        Startup { argument, caps }
    }

    /// A startup with the given table (for tests and for programs that
    /// build their own table).
    pub const fn with_table(caps: Option<&'static CapTable>) -> Startup {
        Startup { argument: 0, caps }
    }

    /// The raw first argument register.
    pub const fn argument(&self) -> u64 {
        self.argument
    }

    /// The domain's capability table, if init gave it one.
    pub const fn caps(&self) -> Option<&'static CapTable> {
        self.caps
    }

    /// The capability named `name`, if the table has one of kind `T`.
    pub fn lookup<T: CapType>(&self, name: &str) -> Option<Cap<T>> {
        self.caps?.lookup(name)
    }
}

/// The capability table at `address`.
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
fn table_at(address: u64) -> &'static CapTable {
    let table: *const CapTable = core::ptr::with_exposed_provenance(address as usize);
    // SAFETY:
    // 1. By the entry contract (`start`), a non-zero argument is the address
    //    of a CapTable that init mapped read-only for the life of the
    //    domain; the caller checked it is non-null and aligned.
    // 2. Every bit pattern is a valid CapTable (integers and byte arrays).
    // 3. The mapping is read-only and nothing in the domain writes it, so a
    //    shared `'static` reference does not alias a mutation.
    unsafe { &*table }
}

/// Ends the program with `status`: `sys::debug_halt(status as u32)` (a
/// negative status is passed as its two's-complement bits). This is the
/// debug kernel's exit; a system-wide exit protocol (reporting to init)
/// will replace it.
pub fn exit(status: i32) -> ! {
    sys::debug_halt(status as u32)
}

/// Declares the program's `main`: `rt::entry!(main)` with
/// `fn main(startup: &rt::Startup) -> i32`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// The program entry `rt` calls after `_start`.
        #[unsafe(no_mangle)]
        fn __rt_main(startup: &$crate::Startup) -> i32 {
            let main: fn(&$crate::Startup) -> i32 = $main;
            main(startup)
        }
    };
}

/// The kernel console: each byte is a `DebugPutChar` system call through
/// the program's Console capability (`sys::console`). Errors (no Console,
/// as in a domain whose image gives none) are dropped: output is best
/// effort, and without the capability nothing is printed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let _ = sys::debug_put_str(text);
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(arguments: fmt::Arguments<'_>) {
    let _ = fmt::Write::write_fmt(&mut Console, arguments);
}

/// Prints to the debug console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::_print(format_args!($($arg)*))
    };
}

/// Prints a line to the debug console.
#[macro_export]
macro_rules! println {
    () => {
        $crate::print!("\n")
    };
    ($($arg:tt)*) => {
        $crate::_print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use sys::{Endpoint, Frame, ObjectKind};

    #[test]
    fn lookup_goes_through_the_table() {
        let mut table = CapTable::new();
        table
            .push("log", sys::Slot::new(12), ObjectKind::Endpoint)
            .unwrap();
        let table: &'static CapTable = std::boxed::Box::leak(std::boxed::Box::new(table));
        let startup = Startup::with_table(Some(table));
        assert_eq!(
            startup.lookup::<Endpoint>("log"),
            Some(Cap::from_slot(sys::Slot::new(12)))
        );
        assert_eq!(startup.lookup::<Frame>("log"), None);
        assert_eq!(Startup::with_table(None).lookup::<Endpoint>("log"), None);
    }

    #[test]
    fn printing_without_a_kernel_is_harmless() {
        println!("nothing to see {}", 1);
        print!("");
    }
}
