//! Interrupts for a virtio-pci function in a driver domain, by MSI-X, where
//! the image's grant says `msi = true`:
//!
//! 1. init gives an MSI line (`sys::resources::MSI`): an IrqHandler bound
//!    to a Notification;
//! 2. the kernel gives the message for the driver's own IoDevice
//!    (`IrqHandler.MsiMessage`): on x86_64 an address naming the line's
//!    interrupt remapping entry, on aarch64 the GICv2m doorbell the kernel
//!    mapped into the IoSpace, which a nested device reaches only through
//!    the driver's stage 1, so the driver maps an IOVA to it
//!    ([`crate::dma::map_fixed`]);
//! 3. the driver writes MSI-X table entry 0 in the BAR the MSI-X capability
//!    names (device memory init mapped for it) and sets the queue's vector
//!    in the virtio common configuration;
//! 4. init sets MSI-X Enable, the one configuration write a driver may ask
//!    for (`sys::resources::CONFIG_WRITE`, checked by
//!    `pci::Function::write_msi_field`).
//!
//! What the device then writes is checked by the IOMMU, not by init.

use sys::resources::{self, RequestError};
use sys::{Cap, Endpoint, IoDevice, IrqHandler, Notification};

use crate::pci::MappedBar;
use crate::{Failure, failure};

/// PCI capability ids: MSI-X, vendor-specific (virtio's structures).
const MSIX: u8 = 0x11;
const VENDOR: u8 = 0x09;
/// virtio's `cfg_type` of the common configuration structure.
const COMMON_CFG: u32 = 1;
/// Offsets in the common configuration (virtio 1.2, 4.1.4.3).
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_MSIX_VECTOR: u64 = 0x1A;
/// MSI-X Message Control, as bits of the capability's first register.
const MSIX_ENABLE: u32 = 1 << 31;
const FUNCTION_MASK: u32 = 1 << 30;
/// Capabilities followed at most (a looping list ends the walk).
const MAX_CAPABILITIES: usize = 48;

/// The driver's interrupt: the line's handler and the notification it
/// signals.
#[derive(Clone, Copy, Debug)]
pub struct Interrupt {
    /// The MSI line's handler (acknowledged after each wait).
    pub handler: Cap<IrqHandler>,
    /// What the line signals.
    pub notification: Cap<Notification>,
    /// The message the device writes: address (an IOVA on aarch64) and data.
    pub message: (u64, u32),
}

impl Interrupt {
    /// Blocks until the notification is signalled: by the line (then
    /// acknowledged so it can fire again, and `true`) or by something
    /// else sharing the notification, such as the device's fault queue
    /// (`false`).
    pub fn wait(&self) -> Result<bool, Failure> {
        let word = self
            .notification
            .wait()
            .map_err(|e| failure(format_args!("waiting for the MSI: {e:?}")))?;
        let fired = word & resources::MSI_BADGE != 0;
        if fired {
            self.handler
                .ack()
                .map_err(|e| failure(format_args!("IrqHandler.Ack: {e:?}")))?;
        }
        Ok(fired)
    }
}

/// Asks init for an MSI line for the function at `function` and routes
/// virtqueue `queue`'s used-buffer notifications to it by MSI-X vector 0.
/// `device` is the driver's IoDevice (attached already: on aarch64 the
/// doorbell goes into its IoSpace), `bars` the BARs init mapped, and
/// `doorbell_iova` a free IOVA of the driver's stage 1 for the doorbell.
/// `Ok(None)` when the image gives the driver no MSI line: it polls.
pub fn enable(
    init: Cap<Endpoint>,
    (bus, dev, function): (u8, u8, u8),
    device: Cap<IoDevice>,
    bars: &[Option<MappedBar>; 6],
    queue: u16,
    doorbell_iova: u64,
) -> Result<Option<Interrupt>, Failure> {
    let pci = resources::pci_address(bus, dev, function);
    let (handler, notification) = match resources::request_msi(init, pci) {
        Ok(line) => line,
        Err(RequestError::Refused(resources::Refusal::NotGranted)) => return Ok(None),
        Err(e) => return Err(failure(format_args!("asking init for an MSI line: {e:?}"))),
    };
    let (address, data) = handler
        .msi_message(device)
        .map_err(|e| failure(format_args!("IrqHandler.MsiMessage: {e:?}")))?;
    let written = if cfg!(target_arch = "x86_64") {
        // The VT-d unit takes the write as an interrupt request before
        // any translation.
        address
    } else {
        crate::dma::map_fixed(doorbell_iova, address & !0xFFF)?;
        doorbell_iova + (address & 0xFFF)
    };
    let config = Config { init, pci };
    let msix = config.capability(|id, _| id == MSIX)?.ok_or_else(|| {
        failure(format_args!(
            "{bus:02x}:{dev:02x}.{function} has no MSI-X capability"
        ))
    })?;
    // Table entry 0: address, upper address, data, vector control (clear:
    // unmasked).
    let table = config.read(msix + 4)?;
    let (bar, offset) = mapped(bars, table)?;
    write32(bar, offset, written as u32)?;
    write32(bar, offset + 4, (written >> 32) as u32)?;
    write32(bar, offset + 8, data)?;
    write32(bar, offset + 12, 0)?;
    // The queue's vector, in the common configuration structure.
    let common = config
        .capability(|id, header| id == VENDOR && (header >> 24) & 0xFF == COMMON_CFG)?
        .ok_or_else(|| failure(format_args!("no virtio common configuration capability")))?;
    let (bar, offset) = mapped(
        bars,
        (config.read(common + 4)? & 0x7) | (config.read(common + 8)? & !0x7),
    )?;
    write16(bar, offset + QUEUE_SELECT, queue)?;
    write16(bar, offset + QUEUE_MSIX_VECTOR, 0)?;
    let vector = read16(bar, offset + QUEUE_MSIX_VECTOR)?;
    if vector != 0 {
        return Err(failure(format_args!(
            "the device refused MSI-X vector 0 for queue {queue} (reads {vector:#x})"
        )));
    }
    // MSI-X on, the function unmasked: init's checked write.
    let control = config.read(msix)?;
    let enabled = (control | MSIX_ENABLE) & !FUNCTION_MASK;
    let now = resources::config_write(init, pci, msix, enabled)
        .map_err(|e| failure(format_args!("asking init to enable MSI-X: {e:?}")))?;
    if now & MSIX_ENABLE == 0 {
        return Err(failure(format_args!(
            "MSI-X Enable did not stick ({now:#x})"
        )));
    }
    Ok(Some(Interrupt {
        handler,
        notification,
        message: (written, data),
    }))
}

/// The function's configuration space, read through init.
struct Config {
    init: Cap<Endpoint>,
    pci: u64,
}

impl Config {
    fn read(&self, offset: u16) -> Result<u32, Failure> {
        resources::config_read(self.init, self.pci, offset).map_err(|e| {
            failure(format_args!(
                "reading configuration offset {offset:#x} through init: {e:?}"
            ))
        })
    }

    /// The offset of the first capability for which `wanted(id, first
    /// register)` holds.
    fn capability(&self, wanted: impl Fn(u8, u32) -> bool) -> Result<Option<u16>, Failure> {
        const STATUS_CAPABILITIES: u32 = 1 << 20;
        if self.read(0x04)? & STATUS_CAPABILITIES == 0 {
            return Ok(None);
        }
        let mut next = (self.read(0x34)? & 0xFC) as u16;
        for _ in 0..MAX_CAPABILITIES {
            if next < 0x40 {
                return Ok(None);
            }
            let header = self.read(next)?;
            if wanted((header & 0xFF) as u8, header) {
                return Ok(Some(next));
            }
            next = ((header >> 8) & 0xFC) as u16;
        }
        Ok(None)
    }
}

/// The BAR and offset a capability names as `BIR | offset` (BIR in bits
/// 0..3), if init mapped that BAR.
fn mapped(
    bars: &[Option<MappedBar>; 6],
    bir_and_offset: u32,
) -> Result<(&MappedBar, u64), Failure> {
    let index = (bir_and_offset & 0x7) as usize;
    let bar = bars.get(index).and_then(Option::as_ref).ok_or_else(|| {
        failure(format_args!(
            "BAR {index} is not mapped (init was not asked for it)"
        ))
    })?;
    Ok((bar, u64::from(bir_and_offset & !0x7)))
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
