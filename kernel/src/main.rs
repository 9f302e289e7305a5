//! The Portcullis microkernel: entry after the architecture's boot code.
//!
//! Boot order: `arch` (entry, console, traps, page tables) -> [`boot::main`]
//! (memory map, platform discovery, IOMMUs with all DMA blocked) -> the
//! boot module (or, in a test kernel, the self-tests the command line asks
//! for: `testing/`) -> exit.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
// Unsafe code only where hardware demands it: the architecture (`arch`),
// physical memory through the direct map (`mem`, whose obligations cover
// every kernel object, page table and frame access) and device registers
// (`mmio`). Every other module is denied it.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod arch;
mod boot;
mod boot_types;
mod console;
mod devmem;
mod frames;
#[cfg(target_arch = "x86_64")]
mod interrupt_remap;
mod invocation;
mod io_space;
mod iommu_unit;
mod loader;
#[allow(unsafe_code)]
mod mem;
#[allow(unsafe_code)]
mod mmio;
mod objects;
mod pci;
mod sched;
mod syscall;
mod testing;
mod vspace;

/// Guest exit status: everything passed.
pub const EXIT_SUCCESS: u32 = 0;
/// Guest exit status: at least one boot self-test failed.
pub const EXIT_TESTS_FAILED: u32 = 1;
/// Guest exit status: the kernel panicked.
pub const EXIT_PANIC: u32 = 2;
/// Guest exit status: an unexpected CPU exception.
pub const EXIT_UNEXPECTED_TRAP: u32 = 3;
const _: () = assert!(
    EXIT_UNEXPECTED_TRAP == 3,
    "arch::unexpected_trap exits with 3 before the upcalls are set"
);
/// Guest exit status: boot could not continue (bad firmware data, no IOMMU).
pub const EXIT_BOOT_FAILED: u32 = 4;

/// Announces the exit status (the runner reads this line) and leaves QEMU.
pub fn exit(status: u32) -> ! {
    #[cfg(feature = "test-kernel")]
    let status = stack_checked(status);
    say!("portcullis: exit {}", status);
    arch::exit_qemu(status)
}

/// The kernel stack's high-water mark, printed (`arch::stack`); an
/// overflow turns a successful `status` into [`EXIT_TESTS_FAILED`].
#[cfg(feature = "test-kernel")]
fn stack_checked(status: u32) -> u32 {
    match arch::stack::check() {
        Ok((used, size)) => {
            println!("[stack] kernel stack high-water mark: {used} of {size} bytes");
            status
        }
        Err((used, size)) => {
            println!(
                "[stack] FAIL: the kernel stack overflowed: {used} of {size} bytes used, into its bottom {} bytes",
                arch::stack::GUARD
            );
            if status == EXIT_SUCCESS {
                EXIT_TESTS_FAILED
            } else {
                status
            }
        }
    }
}

/// Prints where the kernel panicked and, when it is a plain string, the
/// message (a formatted one would need `core::fmt`, which the release
/// kernel leaves out: kernel/README.md, "Size"; test kernels print it).
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    #[cfg(feature = "test-kernel")]
    println!("[panic] {info}");
    #[cfg(not(feature = "test-kernel"))]
    {
        match info.location() {
            Some(at) => say!(
                "[panic] panicked at {}:{}:{}:",
                at.file(),
                at.line(),
                at.column()
            ),
            None => say!("[panic] panicked:"),
        }
        say!(
            "{}",
            info.message()
                .as_str()
                .unwrap_or("(formatted: the release kernel prints no formatted message)")
        );
    }
    exit(EXIT_PANIC)
}
