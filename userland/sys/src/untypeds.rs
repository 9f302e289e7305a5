//! Finding the root task's initial Untypeds in the boot-info page: RAM
//! Untypeds to build objects from, and the device Untyped covering a
//! physical address (an ECAM window, a BAR) to retype into device Frames.
//!
//! The kernel lists every Untyped it handed over in
//! [`BootInfo::untypeds`], in slot order from [`bootinfo::FIRST_UNTYPED`];
//! entries with `is_device != 0` are device memory (MMIO the kernel does not
//! drive) and can only become Frames and smaller device Untypeds.

use crate::bootinfo::{self, BootInfo, UntypedDescriptor, device_kind};
use crate::{Cap, Error, Frame, Slot, Untyped};

/// One initial Untyped: the slot of its capability in the root CNode and
/// what the boot-info page says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitialUntyped {
    /// Slot in the root task's CNode.
    pub slot: Slot,
    /// Physical address, size, device flag.
    pub descriptor: UntypedDescriptor,
}

impl InitialUntyped {
    /// First physical address covered.
    pub fn start(&self) -> u64 {
        self.descriptor.physical_address
    }

    /// Size in bytes (0 for a size the kernel never hands out, above 2^63).
    pub fn size(&self) -> u64 {
        1u64.checked_shl(u32::from(self.descriptor.size_bits))
            .unwrap_or(0)
    }

    /// Whether it is device memory.
    pub fn is_device(&self) -> bool {
        self.descriptor.is_device != 0
    }

    /// Its capability (the slot comes from the boot-info page's order).
    pub fn cap(&self) -> Cap<Untyped> {
        Cap::from_slot(self.slot)
    }

    /// Whether `[address, address + length)` lies inside it (`length` 0 is
    /// treated as 1).
    pub fn covers(&self, address: u64, length: u64) -> bool {
        let last = address.saturating_add(length.max(1) - 1);
        let end = self.start().saturating_add(self.size());
        address >= self.start() && last < end && last >= address
    }
}

/// Every initial Untyped the boot-info page lists (at most
/// [`bootinfo::MAX_UNTYPEDS`], whatever `untyped_count` claims).
pub fn initial_untypeds(info: &BootInfo) -> impl Iterator<Item = InitialUntyped> + '_ {
    let count = usize::try_from(info.untyped_count)
        .unwrap_or(usize::MAX)
        .min(bootinfo::MAX_UNTYPEDS);
    info.untypeds[..count]
        .iter()
        .enumerate()
        .map(|(index, descriptor)| InitialUntyped {
            slot: bootinfo::untyped_slot(index as u32),
            descriptor: *descriptor,
        })
}

/// The largest RAM Untyped other than the CNode arena (the first one,
/// which the kernel keeps as the only source of CNodes).
pub fn largest_ram_untyped(info: &BootInfo) -> Option<InitialUntyped> {
    initial_untypeds(info)
        .skip(1)
        .filter(|u| !u.is_device())
        .max_by_key(|u| u.descriptor.size_bits)
}

/// The smallest RAM Untyped other than the CNode arena.
pub fn smallest_ram_untyped(info: &BootInfo) -> Option<InitialUntyped> {
    initial_untypeds(info)
        .skip(1)
        .filter(|u| !u.is_device())
        .min_by_key(|u| u.descriptor.size_bits)
}

/// The device Untyped covering `[address, address + length)`, for a driver
/// that read an address from firmware or config space (the ECAM window, a
/// BAR) and wants a Frame of it: retype Frames from the returned slot in
/// address order (an Untyped hands out memory from its start, aligned to
/// each object's size, so first retype a device Untyped or Frames to skip
/// to the page wanted). `None` if no device Untyped covers the range
/// entirely (RAM, or MMIO the kernel keeps for itself).
pub fn device_untyped_covering(
    info: &BootInfo,
    address: u64,
    length: u64,
) -> Option<InitialUntyped> {
    initial_untypeds(info).find(|u| u.is_device() && u.covers(address, length))
}

/// The device Untyped at the start of the PCI ECAM window (bus 0 at its
/// first byte; `device_kind::PCI_ECAM`), if the platform has one.
pub fn pci_ecam(info: &BootInfo) -> Option<InitialUntyped> {
    initial_untypeds(info)
        .filter(|u| u.is_device() && u.descriptor.device_kind == device_kind::PCI_ECAM)
        .min_by_key(|u| u.start())
}

/// Retypes from `untyped` a Frame of `2^size_bits` bytes (12 or 21) at
/// physical `address`, the way to reach one page of a device window (a
/// function's config page, a BAR) or one particular page of RAM.
///
/// An Untyped carves each object at its watermark rounded up to the
/// object's size, and starts again from its first byte when nothing carved
/// from it is live. So this asks for padding Untypeds first, one per set
/// bit of the offset from high to low (each naturally aligned and exactly
/// filling the gap), then the Frame. Every capability goes to a slot
/// `next_slot` hands out (its error ends the call); the padding Untypeds stay there (deleting them
/// while the Frame lives is fine; deleting the Frame too lets the Untyped
/// start over).
///
/// `untyped` must have no live object carved from it, else the Frame lands
/// elsewhere: the result is checked against nothing the kernel reports, so
/// keep to fresh Untypeds. Errors: `InvalidAddress` when `address` is not
/// `2^size_bits`-aligned or `untyped` does not cover the Frame; any error
/// of `Untyped.Retype`.
pub fn retype_frame_at(
    untyped: InitialUntyped,
    address: u64,
    size_bits: u8,
    next_slot: &mut dyn FnMut() -> Result<Slot, Error>,
) -> Result<Cap<Frame>, Error> {
    retype_frame_after(untyped, untyped.start(), address, size_bits, next_slot)
}

/// As [`retype_frame_at`], for an Untyped already carved up to
/// `watermark` (the end of the last object carved from it, page aligned):
/// padding Untypeds fill `[watermark, address)`, each the largest that is
/// naturally aligned and fits, then the Frame. Returns `InvalidAddress`
/// when `address` lies below the watermark (an Untyped never goes back).
pub fn retype_frame_after(
    untyped: InitialUntyped,
    watermark: u64,
    address: u64,
    size_bits: u8,
    next_slot: &mut dyn FnMut() -> Result<Slot, Error>,
) -> Result<Cap<Frame>, Error> {
    let size = 1u64.checked_shl(u32::from(size_bits)).unwrap_or(0);
    if size == 0
        || !address.is_multiple_of(size)
        || !untyped.covers(address, size)
        || watermark < untyped.start()
        || watermark > address
        || !watermark.is_multiple_of(4096)
    {
        return Err(Error::InvalidAddress);
    }
    let mut at = watermark;
    while at < address {
        let aligned = at.trailing_zeros();
        let fits = 63 - (address - at).leading_zeros();
        let bits = aligned.min(fits);
        untyped
            .cap()
            .retype_sized::<Untyped>(bits as u8, next_slot()?)?;
        at += 1 << bits;
    }
    untyped.cap().retype_sized::<Frame>(size_bits, next_slot()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(untypeds: &[(u64, u8, bool)]) -> BootInfo {
        let mut info = BootInfo {
            magic: bootinfo::BOOT_INFO_MAGIC,
            version: 1,
            untyped_count: untypeds.len() as u64,
            first_free_slot: 0,
            image_address: 0,
            image_length: 0,
            untypeds: [UntypedDescriptor::default(); bootinfo::MAX_UNTYPEDS],
        };
        for (slot, &(physical_address, size_bits, device)) in untypeds.iter().enumerate() {
            info.untypeds[slot] = UntypedDescriptor {
                physical_address,
                size_bits,
                is_device: u8::from(device),
                device_kind: match (device, size_bits) {
                    (false, _) => device_kind::UNKNOWN,
                    (true, 28) if physical_address > 1 << 32 => device_kind::PCI_ECAM,
                    (true, _) => device_kind::PCI_MEMORY,
                },
                ..Default::default()
            };
        }
        info
    }

    const MACHINE: &[(u64, u8, bool)] = &[
        (0x4000_0000, 17, false),
        (0x4400_0000, 26, false),
        (0x1000_0000, 28, true),
        (0x40_1000_0000, 28, true),
        (0x4800_0000, 20, false),
        (0x80_0000_0000, 39, true),
    ];

    #[test]
    fn finds_the_device_untyped_covering_an_address() {
        let info = info(MACHINE);
        let ecam = device_untyped_covering(&info, 0x40_1002_0000, 4096).unwrap();
        assert_eq!(ecam.slot, bootinfo::untyped_slot(3));
        assert_eq!(ecam.start(), 0x40_1000_0000);
        assert!(ecam.is_device());
        let bar = device_untyped_covering(&info, 0x1000_0000, 1 << 20).unwrap();
        assert_eq!(bar.slot, bootinfo::untyped_slot(2));
        // The last byte of a window is covered, one past it is not.
        assert!(device_untyped_covering(&info, 0x1FFF_FFFF, 1).is_some());
        assert!(device_untyped_covering(&info, 0x1FFF_FFFF, 2).is_none());
        // RAM is never device memory.
        assert!(device_untyped_covering(&info, 0x4400_0000, 4096).is_none());
        // Length 0 means the one byte; a range that wraps is not covered.
        assert!(device_untyped_covering(&info, 0x80_0000_0000, 0).is_some());
        assert!(device_untyped_covering(&info, u64::MAX, 2).is_none());
    }

    #[test]
    fn ram_untypeds_skip_the_arena_and_device_memory() {
        let info = info(MACHINE);
        let largest = largest_ram_untyped(&info).unwrap();
        assert_eq!(largest.slot, bootinfo::untyped_slot(1));
        assert_eq!(largest.descriptor.size_bits, 26);
        let smallest = smallest_ram_untyped(&info).unwrap();
        assert_eq!(smallest.slot, bootinfo::untyped_slot(4));
    }

    #[test]
    fn the_ecam_window_is_tagged() {
        let info = info(MACHINE);
        assert_eq!(pci_ecam(&info).map(|u| u.start()), Some(0x40_1000_0000));
        assert_eq!(
            pci_ecam(&info).map(|u| u.slot),
            Some(bootinfo::untyped_slot(3))
        );
    }

    /// The (type, size_bits, slot) of every `Untyped.Retype` the kernel saw.
    fn retypes(run: impl FnOnce()) -> std::vec::Vec<(u64, u64, u64)> {
        use crate::host::{SyscallIn, clear_kernel, set_kernel};
        use std::{cell::RefCell, rc::Rc, vec::Vec};
        let seen = Rc::new(RefCell::new(Vec::new()));
        let log = Rc::clone(&seen);
        set_kernel(move |call: SyscallIn, _: &mut crate::ipc::IpcBuffer| {
            log.borrow_mut()
                .push((call.mrs[0], call.mrs[1], call.mrs[2]));
            // Success: MR0 says every object asked for (MR3) was made.
            crate::syscall::SyscallOut {
                status: 0,
                badge: 0,
                info: crate::MessageInfo::new(0, 1).to_word(),
                mrs: [call.mrs[3], 0, 0, 0],
            }
        });
        run();
        clear_kernel();
        seen.take()
    }

    #[test]
    fn a_frame_at_an_address_is_preceded_by_padding() {
        let info = info(MACHINE);
        let window = device_untyped_covering(&info, 0x1010_0000, 4096).unwrap();
        let mut next = 100;
        let mut slots = || {
            next += 1;
            Ok(Slot::new(next - 1))
        };
        let mut frame = None;
        let seen = retypes(|| frame = Some(retype_frame_at(window, 0x1010_3000, 12, &mut slots)));
        assert_eq!(frame, Some(Ok(Cap::from_slot(Slot::new(103)))));
        let (untyped, frame_type) = (
            crate::ObjectType::Untyped as u64,
            crate::ObjectType::Frame as u64,
        );
        // Offset 0x103000: 1 MiB, 8 KiB and 4 KiB of padding, then the Frame.
        assert_eq!(
            seen,
            [
                (untyped, 20, 100),
                (untyped, 13, 101),
                (untyped, 12, 102),
                (frame_type, 12, 103),
            ]
        );
    }

    #[test]
    fn a_second_frame_pads_from_the_watermark() {
        let info = info(MACHINE);
        let window = device_untyped_covering(&info, 0x1010_0000, 4096).unwrap();
        let mut next = 100;
        let mut slots = || {
            next += 1;
            Ok(Slot::new(next - 1))
        };
        let mut frame = None;
        // The window's first 0x104000 bytes are carved; the next Frame at
        // +0x180000 needs 16 + 32 + 64 + 128 + 256 KiB of padding.
        let seen = retypes(|| {
            frame = Some(retype_frame_after(
                window,
                window.start() + 0x10_4000,
                window.start() + 0x18_0000,
                12,
                &mut slots,
            ))
        });
        assert_eq!(frame, Some(Ok(Cap::from_slot(Slot::new(105)))));
        let (untyped, frame_type) = (
            crate::ObjectType::Untyped as u64,
            crate::ObjectType::Frame as u64,
        );
        assert_eq!(
            seen,
            [
                (untyped, 14, 100),
                (untyped, 15, 101),
                (untyped, 16, 102),
                (untyped, 17, 103),
                (untyped, 18, 104),
                (frame_type, 12, 105),
            ]
        );
        let below = retype_frame_after(
            window,
            window.start() + 0x2000,
            window.start(),
            12,
            &mut slots,
        );
        assert_eq!(below, Err(Error::InvalidAddress));
    }

    #[test]
    fn frames_outside_or_misaligned_are_refused_before_any_call() {
        let info = info(MACHINE);
        let ecam = pci_ecam(&info).unwrap();
        let mut slots = || Ok(Slot::new(0));
        let seen = retypes(|| {
            assert_eq!(
                retype_frame_at(ecam, 0x40_1000_0800, 12, &mut slots),
                Err(Error::InvalidAddress)
            );
            assert_eq!(
                retype_frame_at(ecam, 0x40_2000_0000, 12, &mut slots),
                Err(Error::InvalidAddress)
            );
            assert_eq!(
                retype_frame_at(ecam, 0x40_1FF0_0000, 21, &mut slots),
                Err(Error::InvalidAddress)
            );
            assert_eq!(
                retype_frame_at(ecam, 0x40_1000_0000, 64, &mut slots),
                Err(Error::InvalidAddress)
            );
        });
        assert!(seen.is_empty());
    }

    #[test]
    fn a_lying_count_is_bounded() {
        let mut info = info(MACHINE);
        info.untyped_count = u64::MAX;
        assert_eq!(initial_untypeds(&info).count(), bootinfo::MAX_UNTYPEDS);
        info.untyped_count = 1;
        assert!(largest_ram_untyped(&info).is_none());
        assert!(device_untyped_covering(&info, 0x1000_0000, 1).is_none());
    }
}
