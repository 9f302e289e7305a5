//! Architecture support. Both architectures export the same names; the rest
//! of the kernel only ever says `arch::`.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64::*;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

#[cfg(feature = "test-kernel")]
pub mod stack;

use ktext::Text;

// The page-table format's vocabulary, named here so that `paging` needs
// nothing above `arch`; `vspace` re-exports it.

/// What a mapping allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rights {
    /// Writable.
    pub write: bool,
    /// Executable.
    pub execute: bool,
}

/// What kind of memory a leaf maps: the kernel picks it from the Frame
/// (memory carved from a device Untyped is [`Memory::Device`], see
/// `devmem`); a user can ask for neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memory {
    /// RAM: normal write-back cacheable memory.
    Normal,
    /// Device registers: uncached, strongly ordered (x86_64 PCD|PWT = UC,
    /// aarch64 Device-nGnRE), never executable.
    Device,
}

/// What the kernel above lends the architecture at entry ([`entry!`]):
/// `arch` calls nothing above it by name.
pub struct Upcalls {
    /// Borrows physical memory that nothing writes after boot (`mem`'s
    /// `phys_bytes`): x86_64 reads the PVH start info through it.
    #[cfg_attr(
        target_arch = "aarch64",
        expect(
            dead_code,
            reason = "aarch64 hands boot the device tree's address only"
        )
    )]
    pub phys_bytes: fn(u64, usize) -> Option<&'static [u8]>,
    /// Reports an unexpected CPU exception (one line, raw values) and ends
    /// the session: `main`'s.
    pub unexpected_trap: fn(&dyn Text) -> !,
}

/// The upcalls, set once by the entry before anything can trap.
static UPCALLS: spin::Once<&'static Upcalls> = spin::Once::new();

/// The entry's first step: keeps the kernel's upcalls.
fn set_upcalls(upcalls: &'static Upcalls) {
    UPCALLS.call_once(|| upcalls);
}

/// Reports an unexpected CPU exception through `main` and ends the session.
fn unexpected_trap(report: &dyn Text) -> ! {
    match UPCALLS.get() {
        Some(upcalls) => (upcalls.unexpected_trap)(report),
        // Before the entry's first line (not reachable: the entry sets the
        // upcalls before it installs the trap vectors): `main`'s
        // EXIT_UNEXPECTED_TRAP (asserted there), unannounced.
        None => exit_qemu(3),
    }
}

/// Defines the symbol the architecture's boot code jumps to
/// (`kernel_entry`, with the boot loader's argument): the architecture is
/// brought up with `$upcalls` (an `&'static Upcalls`), then `$main` is
/// called with what the entry read, `Result<BootInfo, &'static str>`.
/// Invoked once, by `boot`, which thus names the layers above `arch`
/// instead of `arch` naming them.
macro_rules! entry {
    ($upcalls:expr, $main:path) => {
        /// First Rust code, called by the architecture's boot code.
        #[allow(unsafe_code)]
        // SAFETY: the one symbol of this name (the boot code's jump target);
        // it is not called from Rust.
        #[unsafe(no_mangle)]
        extern "C" fn kernel_entry(argument: u64) -> ! {
            $main($crate::arch::start(argument, $upcalls))
        }
    };
}
pub(crate) use entry;

/// Reads an unmapped upper-half kernel address: the `tests=trap` boot
/// self-test's deliberate kernel bug. The read faults, and the exception
/// handler reports it and ends the session.
#[cfg(feature = "self-tests")]
pub fn read_unmapped_kernel_address() -> u64 {
    // SAFETY: not safe by design: the read faults (nothing is mapped at
    // this upper-half address on either architecture), and the exception
    // handler reports it and ends the session; no memory is changed.
    unsafe { core::ptr::read_volatile(0xFFFF_F000_0000_0000usize as *const u64) }
}
