//! What every driver domain (`drivers/vblk`, `drivers/vnet`,
//! `drivers/nvme-driver`) does the same way, whatever its device:
//!
//! - [`start`]: asking init for the device, its IoSpace and fault queue,
//!   the stage-1 table frames, attaching the device nested;
//! - [`msix`]: interrupts by MSI-X where the image's grant says
//!   `msi = true`: the line from init, the message from the kernel for the
//!   driver's own IoDevice, the table entry in the device's BAR, and MSI-X
//!   Enable through init's checked configuration write.
//! - [`crash`]: the injected `crash-mid-io` failure of the restart tests.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

pub mod msix;
pub mod start;

pub use rt::testing::Failure;

/// A [`Failure`] from format arguments.
fn failure(args: core::fmt::Arguments<'_>) -> Failure {
    Failure(rt::__format!("{args}"))
}

/// The injected `crash-mid-io` of a driver's restart test: says so on the
/// console (`[driver] injected failure: crashing with ...`, then `what`)
/// and loads from the guard page above the stack, so the run faults and
/// init, its fault handler, restarts it.
pub fn crash(driver: &str, what: core::fmt::Arguments<'_>) -> ! {
    rt::println!(
        "[{driver}] injected failure: crashing with {what} (a load from the unmapped guard page at {:#x})",
        sys::names::STACK_TOP
    );
    #[allow(unsafe_code)]
    // SAFETY: none needed for memory safety: init never maps the page at
    // STACK_TOP (the guard between the stack and the IPC buffer), so the
    // load faults before it reads anything, and the kernel hands the fault
    // to init, which never resumes this run.
    let _ = unsafe { core::ptr::read_volatile(sys::names::STACK_TOP as *const u64) };
    rt::println!("[{driver}] the load from the guard page did not fault");
    rt::exit(1)
}
