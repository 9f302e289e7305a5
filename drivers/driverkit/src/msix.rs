//! Interrupts for a PCI function in a driver domain, by MSI-X vector 0,
//! where the image's grant says `msi = true`:
//!
//! 1. init gives an MSI line (`sys::resources::MSI`): an IrqHandler bound
//!    to the Notification the device's fault queue signals too (badge
//!    `sys::resources::MSI_BADGE` for the line);
//! 2. the kernel gives the message for the driver's own IoDevice
//!    (`IrqHandler.MsiMessage`): on x86_64 an address naming the line's
//!    interrupt remapping entry, on aarch64 the GICv2m doorbell the kernel
//!    mapped into the IoSpace, which a nested device reaches only through
//!    the driver's stage 1, so the driver maps an IOVA to it (the caller's
//!    `map_doorbell`);
//! 3. the driver writes MSI-X table entry 0 in the BAR the capability names
//!    (device memory init mapped for it: the caller's `write_bar`);
//! 4. init sets MSI-X Enable, the one configuration write a driver may ask
//!    for (`sys::resources::CONFIG_WRITE`, checked by
//!    `pci::Function::write_msi_field`).
//!
//! What the device then writes is checked by the IOMMU, not by init. Used
//! by `virtio::msix` (which also points a virtqueue at the vector) and the
//! NVMe driver domain.

use pci::msi::{MSIX_CAPABILITY, location, msix_enabled, table_entry, target};
use sys::resources::{self, RequestError};
use sys::{Cap, Endpoint, IoDevice, IrqHandler, Notification};

use crate::{Failure, failure};

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

/// Who woke an [`Interrupt::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Woken {
    /// The MSI line (acknowledged already).
    pub line: bool,
    /// Something else sharing the notification, such as the device's
    /// fault queue: its records are worth a look.
    pub other: bool,
}

impl Interrupt {
    /// Blocks until the notification is signalled: by the line (then
    /// acknowledged so it can fire again) or by something else sharing
    /// the notification, such as the device's fault queue; says which
    /// (both, when both signalled).
    pub fn wait(&self) -> Result<Woken, Failure> {
        let word = self
            .notification
            .wait()
            .map_err(|e| failure(format_args!("waiting for the MSI: {e:?}")))?;
        let line = word & resources::MSI_BADGE != 0;
        if line {
            self.handler
                .ack()
                .map_err(|e| failure(format_args!("IrqHandler.Ack: {e:?}")))?;
        }
        Ok(Woken {
            line,
            other: word & !resources::MSI_BADGE != 0,
        })
    }

    /// A sentence for the console: where the device's vector 0 writes.
    pub fn describe(&self) -> alloc::string::String {
        rt::__format!(
            "the device's MSI-X vector 0 writes {:#x} <- {:#x}{}",
            self.message.0,
            self.message.1,
            if cfg!(target_arch = "x86_64") {
                " (an interrupt remapping entry that accepts only this device)"
            } else {
                ", an IOVA its stage 1 maps to the GICv2m doorbell the kernel keeps in the IoSpace"
            }
        )
    }
}

/// A function's MSI-X capability, its configuration space read through
/// init.
pub struct Msix {
    init: Cap<Endpoint>,
    pci: u64,
    /// The capability's offset in configuration space.
    at: u16,
}

/// Asks init for an MSI line for the function at `function` and programs
/// MSI-X table entry 0 with the message the kernel gives for `device` (the
/// driver's IoDevice, attached already: on aarch64 the doorbell is in its
/// IoSpace). `map_doorbell(iova, ipa)` maps a page of the driver's stage 1
/// to the doorbell page (aarch64 only) and answers the IOVA the device is
/// to write; `write_bar(bar, offset, value)` writes 32 bits at `offset` of
/// BAR `bar` (the table's). MSI-X stays off until [`Msix::enable`], so the
/// caller can point its queues at vector 0 first. `Ok(None)` when the image
/// gives the driver no MSI line: it polls.
pub fn request(
    init: Cap<Endpoint>,
    (bus, dev, function): (u8, u8, u8),
    device: Cap<IoDevice>,
    map_doorbell: impl FnOnce(u64) -> Result<u64, Failure>,
    mut write_bar: impl FnMut(usize, u64, u32) -> Result<(), Failure>,
) -> Result<Option<(Interrupt, Msix)>, Failure> {
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
        target(address, None).written
    } else {
        target(address, Some(map_doorbell(address & !0xFFF)?)).written
    };
    let mut msix = Msix { init, pci, at: 0 };
    msix.at = msix
        .capability(|id, _| id == MSIX_CAPABILITY)?
        .ok_or_else(|| {
            failure(format_args!(
                "{bus:02x}:{dev:02x}.{function} has no MSI-X capability"
            ))
        })?;
    let (bar, table) = location(msix.read(msix.at + 4)?);
    for (offset, value) in table_entry(table, 0, written, data) {
        write_bar(bar, offset, value)?;
    }
    Ok(Some((
        Interrupt {
            handler,
            notification,
            message: (written, data),
        },
        msix,
    )))
}

impl Msix {
    /// MSI-X on, the function unmasked: init's checked write.
    pub fn enable(&self) -> Result<(), Failure> {
        let control = self.read(self.at)?;
        let now = resources::config_write(self.init, self.pci, self.at, msix_enabled(control))
            .map_err(|e| failure(format_args!("asking init to enable MSI-X: {e:?}")))?;
        if now & pci::msi::MSIX_ENABLE == 0 {
            return Err(failure(format_args!(
                "MSI-X Enable did not stick ({now:#x})"
            )));
        }
        Ok(())
    }

    /// Reads the configuration register at `offset` through init.
    pub fn read(&self, offset: u16) -> Result<u32, Failure> {
        resources::config_read(self.init, self.pci, offset).map_err(|e| {
            failure(format_args!(
                "reading configuration offset {offset:#x} through init: {e:?}"
            ))
        })
    }

    /// The offset of the first capability for which `wanted(id, first
    /// register)` holds.
    pub fn capability(&self, wanted: impl Fn(u8, u32) -> bool) -> Result<Option<u16>, Failure> {
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
