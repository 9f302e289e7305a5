//! virtio-pci for Portcullis driver domains, on the `virtio-drivers` crate
//! (0.13, `no_std`): what a driver domain supplies so that the crate's
//! device drivers (`VirtIOBlk`, ...) run in user space with their device
//! confined by the IOMMU.
//!
//! - [`dma`]: the crate's `Hal`. Every DMA allocation and every buffer the
//!   crate `share`s is mapped in the driver's **own stage-1 table** (built
//!   with `iopt`, bound in its IoSpace with `IoSpace.BindUserTable`) and
//!   invalidated (`IoUserTable.Invalidate`) before its address is handed
//!   to the device; `unshare` and deallocation unmap and invalidate again.
//!   So every address the device sees is an IOVA that only the driver's
//!   tables translate, into memory of the driver's IoSpace.
//! - [`pci`]: the device's configuration space, read through init (a
//!   driver never writes it) and its BARs, mapped by init on request.
//! - [`platform`]: a transport wrapper that accepts
//!   `VIRTIO_F_ACCESS_PLATFORM`, which none of the crate's device drivers
//!   lists, and which QEMU's `iommu_platform=on` devices require (their
//!   DMA goes through the IOMMU only then, and they refuse `FEATURES_OK`
//!   without it).
//! - [`msix`]: interrupts instead of polling, where the image gives the
//!   driver an MSI line: the MSI-X table entry in the device's BAR, the
//!   queue's vector in the common configuration, and MSI-X enabled
//!   through init's checked configuration write.
//! - [`crash`]: the drivers' injected `crash-mid-io` failure, for the
//!   restart tests.
#![no_std]
#![deny(unsafe_code)]

pub mod dma;
pub mod msix;
pub mod pci;
pub mod platform;

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
