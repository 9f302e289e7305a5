//! Interrupts for a virtio-pci function in a driver domain, by MSI-X, where
//! the image's grant says `msi = true`: `driverkit::msix` asks init for
//! the line, the kernel for the message, and programs table entry 0 in the
//! BAR the MSI-X capability names (device memory init mapped for it); here
//! the virtqueue's vector is set in the virtio common configuration before
//! init sets MSI-X Enable. On aarch64 the doorbell's IOVA is mapped in the
//! driver's stage 1 with [`crate::dma::map_fixed`].
//!
//! What the device then writes is checked by the IOMMU, not by init.

use sys::{Cap, Endpoint, IoDevice};

use crate::pci::MappedBar;
use crate::{Failure, failure};

pub use driverkit::msix::Interrupt;

/// PCI vendor-specific capability id (virtio's structures).
const VENDOR: u8 = 0x09;
/// virtio's `cfg_type` of the common configuration structure.
const COMMON_CFG: u32 = 1;
/// Offsets in the common configuration (virtio 1.2, 4.1.4.3).
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_MSIX_VECTOR: u64 = 0x1A;

/// Asks init for an MSI line for the function at `function` and routes
/// virtqueue `queue`'s used-buffer notifications to it by MSI-X vector 0.
/// `device` is the driver's IoDevice (attached already: on aarch64 the
/// doorbell goes into its IoSpace), `bars` the BARs init mapped, and
/// `doorbell_iova` a free IOVA of the driver's stage 1 for the doorbell.
/// `Ok(None)` when the image gives the driver no MSI line: it polls.
pub fn enable(
    init: Cap<Endpoint>,
    function: (u8, u8, u8),
    device: Cap<IoDevice>,
    bars: &[Option<MappedBar>; 6],
    queue: u16,
    doorbell_iova: u64,
) -> Result<Option<Interrupt>, Failure> {
    let requested = driverkit::msix::request(
        init,
        function,
        device,
        |doorbell| {
            crate::dma::map_fixed(doorbell_iova, doorbell)?;
            Ok(doorbell_iova)
        },
        |bar, offset, value| write32(mapped(bars, bar)?, offset, value),
    )?;
    let Some((interrupt, msix)) = requested else {
        return Ok(None);
    };
    // The queue's vector, in the common configuration structure.
    let common = msix
        .capability(|id, header| id == VENDOR && (header >> 24) & 0xFF == COMMON_CFG)?
        .ok_or_else(|| failure(format_args!("no virtio common configuration capability")))?;
    let (bar, offset) =
        pci::msi::location((msix.read(common + 4)? & 0x7) | (msix.read(common + 8)? & !0x7));
    let bar = mapped(bars, bar)?;
    write16(bar, offset + QUEUE_SELECT, queue)?;
    write16(bar, offset + QUEUE_MSIX_VECTOR, 0)?;
    let vector = read16(bar, offset + QUEUE_MSIX_VECTOR)?;
    if vector != 0 {
        return Err(failure(format_args!(
            "the device refused MSI-X vector 0 for queue {queue} (reads {vector:#x})"
        )));
    }
    msix.enable()?;
    Ok(Some(interrupt))
}

/// BAR `index`, if init mapped it.
fn mapped(bars: &[Option<MappedBar>; 6], index: usize) -> Result<&MappedBar, Failure> {
    bars.get(index).and_then(Option::as_ref).ok_or_else(|| {
        failure(format_args!(
            "BAR {index} is not mapped (init was not asked for it)"
        ))
    })
}

/// Where `size` bytes at `offset` of `bar` are here, if inside it and
/// aligned.
fn register(bar: &MappedBar, offset: u64, size: u64) -> Result<u64, Failure> {
    if offset.is_multiple_of(size) && offset.checked_add(size).is_some_and(|end| end <= bar.size) {
        Ok(bar.address + offset)
    } else {
        Err(failure(format_args!(
            "offset {offset:#x} is outside the {:#x} bytes of the BAR at {:#x}",
            bar.size, bar.physical
        )))
    }
}

#[allow(unsafe_code)]
fn write32(bar: &MappedBar, offset: u64, value: u32) -> Result<(), Failure> {
    let at = register(bar, offset, 4)?;
    // SAFETY: init mapped the whole BAR read-write and uncached at
    // `bar.address` for the domain's life (`sys::resources::BAR`); `at` is
    // aligned and inside it (`register`), and device memory holds no Rust
    // object.
    unsafe { (at as *mut u32).write_volatile(value) };
    Ok(())
}

#[allow(unsafe_code)]
fn write16(bar: &MappedBar, offset: u64, value: u16) -> Result<(), Failure> {
    let at = register(bar, offset, 2)?;
    // SAFETY: as in `write32`.
    unsafe { (at as *mut u16).write_volatile(value) };
    Ok(())
}

#[allow(unsafe_code)]
fn read16(bar: &MappedBar, offset: u64) -> Result<u16, Failure> {
    let at = register(bar, offset, 2)?;
    // SAFETY: as in `write32`.
    Ok(unsafe { (at as *const u16).read_volatile() })
}
