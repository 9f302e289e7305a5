//! Asking init for IOMMU capabilities at run time.
//!
//! A domain that an image's `[[dma_grant]]` marks `on_request = true` gets
//! no IOMMU capabilities at boot; it asks init for them through the
//! endpoint named `init` in its capability table. Init checks every request
//! against the image (which domain may have which device, how large an
//! IoSpace) and answers with the slot of a capability it placed in the
//! caller's CSpace, or with a [`Refusal`].
//!
//! | request (label) | MR0 | MR1 | reply MR0 | reply MR1 |
//! |---|---|---|---|---|
//! | [`DEVICE`] | PCI address | badge for the IoDevice | IoDevice slot | where BAR 0 is mapped in the caller |
//! | [`SPACE`] | PCI address | IoSpace size, bytes | IoSpace slot (the grant's `io_map` regions mapped) | 0 |
//! | [`FAULT_QUEUE`] | PCI address | 0 | IoFaultQueue slot (bound to the device) | its Notification's slot |
//! | [`RETURN_SPACE`] | PCI address | 0 | 0 | 0 |
//! | [`BAR`] | PCI address | BAR index (0..=5) | where the whole BAR is mapped in the caller | its size, bytes |
//! | [`CONFIG_READ`] | PCI address | offset in its configuration space (4-byte aligned, below 4096) | the 32-bit word there | 0 |
//! | [`CONFIG_WRITE`] | PCI address | offset (low 16 bits) and the new 32-bit word (bits 32..64) | the word read back | 0 |
//! | [`MSI`] | PCI address | 0 | IrqHandler slot (a free line of [`MSI_LINES`]) | its Notification's slot (badge [`MSI_BADGE`]) |
//!
//! A PCI address is `bus << 8 | device << 3 | function` (the requester
//! id). A reply's label is 0 on success, else the [`Refusal`] code (MR0
//! then carries the kernel's error code for [`Refusal::KernelError`]).
//! `RETURN_SPACE` hands the IoSpace back: init revokes and deletes it, so
//! the device is blocked and every IO mapping gone when the reply arrives.
//! `BAR` and `CONFIG_READ` need the device first: a driver whose registers
//! are not all in BAR 0's first page (virtio-pci's are in a capability-
//! named BAR) reads its function's configuration space through init, which
//! never lets a driver write it, and asks for the BARs it names. A device
//! without a memory BAR 0 gets no registers with [`DEVICE`] (reply MR1 0).
//!
//! `MSI` needs the device, its fault queue and a grant with `msi = true`
//! (the image's setting for a driver that takes interrupts): init takes
//! the first free MSI line, binds it to a copy badged [`MSI_BADGE`] of the
//! fault queue's Notification and gives the domain the handler and that
//! copy. A restart takes the line back with the rest.
//! The driver then asks the kernel for the message with its own IoDevice
//! (`IrqHandler.MsiMessage`; on aarch64 after attaching the device) and
//! programs it through `CONFIG_WRITE` and the MSI-X table in its BAR.
//!
//! `CONFIG_WRITE` is the one configuration write a driver may make: a
//! register of its own device's MSI or MSI-X capability, changing only the
//! bits a driver sets up its interrupts with (MSI: enable and Multiple
//! Message Enable, address, upper address, data, mask bits; MSI-X: enable
//! and function mask; `pci::Function::msi_writable_bits`). Anything else
//! (the command register, BARs, another capability, read-only bits) is
//! refused with [`Refusal::NotMsiField`] and nothing is written. The
//! message itself comes from `IrqHandler.MsiMessage`; init does not check
//! it, the IOMMU does (x86_64: interrupt remapping refuses a message whose
//! entry is not the device's; aarch64: the write must translate to the
//! doorbell through the device's own IoSpace).

use crate::cap::{Cap, Endpoint, IoDevice, IoFaultQueue, IoSpace, IrqHandler, Notification, Slot};
use crate::{Error, MessageInfo};

/// Request a device's IoDevice (and its registers mapped).
pub const DEVICE: u32 = 0x10_0001;
/// Request an IoSpace for a granted device.
pub const SPACE: u32 = 0x10_0002;
/// Request a fault queue bound to a granted device, with its Notification.
pub const FAULT_QUEUE: u32 = 0x10_0003;
/// Hand the IoSpace back: init revokes it.
pub const RETURN_SPACE: u32 = 0x10_0004;

/// Request one memory BAR of a granted device, mapped whole.
pub const BAR: u32 = 0x10_0005;
/// Read one word of a granted device's configuration space.
pub const CONFIG_READ: u32 = 0x10_0006;
/// Write one register of a granted device's MSI or MSI-X capability.
pub const CONFIG_WRITE: u32 = 0x10_0007;
/// Request an MSI line (IrqHandler and Notification) for a granted device.
pub const MSI: u32 = 0x10_0008;
/// The badge an [`MSI`] line signals its Notification with: the device's
/// fault queue's Notification (whose records signal bit 0), so a driver
/// waiting for its MSI also wakes when its device faulted instead of
/// completing.
pub const MSI_BADGE: u64 = 1 << 1;

/// The message-signalled lines init hands out with [`MSI`]: x86_64 lines
/// 16..32 (remapped vectors 48..64), aarch64 the GICv2m frame's SPIs on
/// QEMU's `virt` (INTIDs 80..144).
#[cfg(target_arch = "x86_64")]
pub const MSI_LINES: core::ops::Range<u64> = 16..32;
/// The message-signalled lines init hands out (see the x86_64 one).
#[cfg(not(target_arch = "x86_64"))]
pub const MSI_LINES: core::ops::Range<u64> = 80..144;

/// Why init refused a request (the reply's label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `[[dma_grant]]` of the image gives this device to this domain
    /// on request (1).
    NotGranted,
    /// The IoSpace asked for is larger than the grant's `iospace_size` (2).
    TooLarge,
    /// Init already gave this capability and it was not handed back (3).
    AlreadyGiven,
    /// The request needs the device first (4).
    DeviceFirst,
    /// Not a request init knows (5).
    UnknownRequest,
    /// The BAR index or configuration offset names nothing init maps or
    /// reads: no memory BAR there, one too large, or an offset out of
    /// range (7).
    BadArgument,
    /// The kernel refused one of init's invocations (6); the error is in
    /// the reply's MR0.
    KernelError(Error),
    /// A configuration write that is not to the device's MSI or MSI-X
    /// fields, or changes bits a driver may not (8).
    NotMsiField,
    /// A reply label this crate does not know.
    Unknown(u32),
}

impl Refusal {
    /// The reply label.
    pub fn code(self) -> u32 {
        match self {
            Refusal::NotGranted => 1,
            Refusal::TooLarge => 2,
            Refusal::AlreadyGiven => 3,
            Refusal::DeviceFirst => 4,
            Refusal::UnknownRequest => 5,
            Refusal::KernelError(_) => 6,
            Refusal::BadArgument => 7,
            Refusal::NotMsiField => 8,
            Refusal::Unknown(code) => code,
        }
    }

    /// From a reply's label and MR0.
    pub fn from_reply(label: u32, mr0: u64) -> Refusal {
        match label {
            1 => Refusal::NotGranted,
            2 => Refusal::TooLarge,
            3 => Refusal::AlreadyGiven,
            4 => Refusal::DeviceFirst,
            5 => Refusal::UnknownRequest,
            6 => Refusal::KernelError(
                u8::try_from(mr0)
                    .ok()
                    .and_then(Error::from_code)
                    .unwrap_or(crate::syscall::UNKNOWN_STATUS),
            ),
            7 => Refusal::BadArgument,
            8 => Refusal::NotMsiField,
            other => Refusal::Unknown(other),
        }
    }
}

/// Why a request failed: the call itself, or init's refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The `Call` to init failed.
    Call(Error),
    /// Init refused.
    Refused(Refusal),
}

/// The PCI address (requester id) of `bus:device.function`.
pub const fn pci_address(bus: u8, device: u8, function: u8) -> u64 {
    (bus as u64) << 8 | ((device & 0x1f) as u64) << 3 | (function & 7) as u64
}

fn request(init: Cap<Endpoint>, label: u32, mrs: [u64; 2]) -> Result<[u64; 2], RequestError> {
    let reply = init
        .call(MessageInfo::new(label, 2), [mrs[0], mrs[1], 0, 0])
        .map_err(RequestError::Call)?;
    if reply.info.label != 0 {
        return Err(RequestError::Refused(Refusal::from_reply(
            reply.info.label,
            reply.mrs[0],
        )));
    }
    Ok([reply.mrs[0], reply.mrs[1]])
}

fn slot(value: u64) -> Result<Slot, RequestError> {
    u32::try_from(value)
        .map(Slot::new)
        .map_err(|_| RequestError::Call(crate::syscall::UNKNOWN_STATUS))
}

/// [`DEVICE`]: the IoDevice for the device at `pci` (its capability
/// badged `badge`, which fault records carry) and where its BAR 0 is
/// mapped in this domain.
pub fn request_device(
    init: Cap<Endpoint>,
    pci: u64,
    badge: u64,
) -> Result<(Cap<IoDevice>, u64), RequestError> {
    let [device, registers] = request(init, DEVICE, [pci, badge])?;
    Ok((Cap::from_slot(slot(device)?), registers))
}

/// [`SPACE`]: an IoSpace of `size` bytes for the device at `pci`, with the
/// grant's `io_map` regions mapped.
pub fn request_space(
    init: Cap<Endpoint>,
    pci: u64,
    size: u64,
) -> Result<Cap<IoSpace>, RequestError> {
    let [space, _] = request(init, SPACE, [pci, size])?;
    Ok(Cap::from_slot(slot(space)?))
}

/// [`FAULT_QUEUE`]: a fault queue bound to the device at `pci`, and the
/// Notification it signals.
pub fn request_fault_queue(
    init: Cap<Endpoint>,
    pci: u64,
) -> Result<(Cap<IoFaultQueue>, Cap<Notification>), RequestError> {
    let [queue, signal] = request(init, FAULT_QUEUE, [pci, 0])?;
    Ok((Cap::from_slot(slot(queue)?), Cap::from_slot(slot(signal)?)))
}

/// [`RETURN_SPACE`]: hands the device's IoSpace back; init revokes it.
pub fn return_space(init: Cap<Endpoint>, pci: u64) -> Result<(), RequestError> {
    request(init, RETURN_SPACE, [pci, 0]).map(|_| ())
}

/// [`BAR`]: BAR `index` of the device at `pci`, mapped whole (read-write,
/// uncached); where it starts in this domain and its size in bytes.
pub fn request_bar(init: Cap<Endpoint>, pci: u64, index: u8) -> Result<(u64, u64), RequestError> {
    let [address, size] = request(init, BAR, [pci, u64::from(index)])?;
    Ok((address, size))
}

/// [`CONFIG_READ`]: the 32-bit word at `offset` of the configuration space
/// of the device at `pci`.
pub fn config_read(init: Cap<Endpoint>, pci: u64, offset: u16) -> Result<u32, RequestError> {
    let [word, _] = request(init, CONFIG_READ, [pci, u64::from(offset)])?;
    Ok(word as u32)
}

/// [`MSI`]: an IrqHandler for a free MSI line, for the device at `pci`,
/// and the Notification the line signals (badge 1).
pub fn request_msi(
    init: Cap<Endpoint>,
    pci: u64,
) -> Result<(Cap<IrqHandler>, Cap<Notification>), RequestError> {
    let [handler, signal] = request(init, MSI, [pci, 0])?;
    Ok((
        Cap::from_slot(slot(handler)?),
        Cap::from_slot(slot(signal)?),
    ))
}

/// [`CONFIG_WRITE`]: writes `value` to the register at `offset` of the
/// MSI or MSI-X capability of the device at `pci`; the word read back.
pub fn config_write(
    init: Cap<Endpoint>,
    pci: u64,
    offset: u16,
    value: u32,
) -> Result<u32, RequestError> {
    let [word, _] = request(
        init,
        CONFIG_WRITE,
        [pci, u64::from(offset) | u64::from(value) << 32],
    )?;
    Ok(word as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_round_trip_through_their_codes() {
        for refusal in [
            Refusal::NotGranted,
            Refusal::TooLarge,
            Refusal::AlreadyGiven,
            Refusal::DeviceFirst,
            Refusal::UnknownRequest,
            Refusal::BadArgument,
            Refusal::NotMsiField,
            Refusal::Unknown(77),
        ] {
            assert_eq!(Refusal::from_reply(refusal.code(), 0), refusal);
        }
        let kernel = Refusal::KernelError(Error::NoDomainIds);
        assert_eq!(
            Refusal::from_reply(kernel.code(), u64::from(Error::NoDomainIds.code())),
            kernel
        );
    }

    #[test]
    fn pci_addresses_are_requester_ids() {
        assert_eq!(pci_address(0, 4, 0), 0x20);
        assert_eq!(pci_address(1, 0x1f, 7), 0x1ff);
    }
}
