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
//! - [`crash`] (`driverkit::crash`): the drivers' injected `crash-mid-io`
//!   failure, for the restart tests.
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

pub use driverkit::crash;
