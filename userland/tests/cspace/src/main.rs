//! `cspace`: capabilities seen from user space. Runs as the root task with
//! the kernel's initial capabilities (abi::bootinfo slots) and checks that
//! retype, the CNode operations and IommuControl.Identify behave as the
//! capability model says, and that bad invocations get error codes.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use rt::check;
use rt::testing::{Outcome, Suite};
use sys::bootinfo::{self, BootInfo};
use sys::{CNode, Cap, Endpoint, Error, Frame, IommuControl, RetypeError, Rights, Slot, Untyped};

rt::entry!(main);

/// The boot-info page the kernel maps read-only at a fixed address.
#[allow(unsafe_code)]
fn boot_info() -> &'static BootInfo {
    // SAFETY: the kernel maps one page holding a `BootInfo` (repr(C), fits
    // in a page) read-only at BOOT_INFO_ADDRESS for the root task's whole
    // life; nothing writes it after boot.
    unsafe { &*(bootinfo::BOOT_INFO_ADDRESS as *const BootInfo) }
}

fn cnode() -> Cap<CNode> {
    bootinfo::INIT_CNODE
}

fn main(_startup: &rt::Startup) -> i32 {
    let mut suite = Suite::new();
    suite.run("boot_info_lists_untypeds", boot_info_lists_untypeds);
    suite.run(
        "retype_until_exhaustion_then_reuse",
        retype_until_exhaustion_then_reuse,
    );
    suite.run(
        "retype_many_is_all_or_nothing",
        retype_many_is_all_or_nothing,
    );
    suite.run("cspace_copy_mint_move_revoke", cspace_copy_mint_move_revoke);
    suite.run("iommu_identify", iommu_identify);
    suite.run(
        "bad_invocations_get_error_codes",
        bad_invocations_get_error_codes,
    );
    suite.finish()
}

fn boot_info_lists_untypeds() -> Outcome {
    let info = boot_info();
    check!(
        info.magic == bootinfo::BOOT_INFO_MAGIC,
        "magic {:#x}",
        info.magic
    );
    check!(info.untyped_count >= 2, "{} untypeds", info.untyped_count);
    check!(
        info.first_free_slot == u64::from(bootinfo::FIRST_UNTYPED) + info.untyped_count,
        "first free slot {} with {} untypeds",
        info.first_free_slot,
        info.untyped_count
    );
    Ok(())
}

/// The smallest RAM Untyped after the CNode arena (index 0): its
/// capability and size.
fn smallest_untyped() -> (Cap<Untyped>, u8) {
    let info = boot_info();
    sys::untypeds::smallest_ram_untyped(info)
        .map_or((bootinfo::ARENA, info.untypeds[0].size_bits), |u| {
            (u.cap(), u.descriptor.size_bits)
        })
}

/// Free slot `offset` of the root CNode (from the boot info's first free).
fn free_slot(offset: u32) -> Slot {
    Slot::new(boot_info().first_free_slot as u32 + offset)
}

fn retype_until_exhaustion_then_reuse() -> Outcome {
    let (untyped, size_bits) = smallest_untyped();
    check!(
        (12..=18).contains(&size_bits),
        "smallest untyped is 2^{size_bits}: too big for this test's slots"
    );
    let expected = 1u32 << (size_bits - 12);
    let mut made = 0;
    loop {
        match untyped.retype_sized::<Frame>(12, free_slot(made)) {
            Ok(_) => made += 1,
            Err(Error::UntypedExhausted) => break,
            Err(e) => check!(false, "retype number {made} failed with {e:?}"),
        }
        check!(
            made <= expected,
            "made {made} frames from 2^{size_bits} bytes"
        );
    }
    check!(
        made == expected,
        "made {made} 4 KiB frames from 2^{size_bits} bytes, expected {expected}"
    );
    // Deleting every frame frees the memory again.
    for i in 0..made {
        check!(cnode().delete(free_slot(i)).is_ok(), "deleting frame {i}");
    }
    let again = untyped.retype_sized::<Frame>(12, free_slot(0));
    check!(again.is_ok(), "retype after deleting everything");
    check!(cnode().delete(free_slot(0)).is_ok(), "clean up");
    Ok(())
}

/// Whether `slot` of the root CNode is empty (a copy out of it answers
/// `EmptySlot`; `spare` must be empty).
fn slot_is_empty(slot: Slot, spare: Slot) -> bool {
    let cap: Cap<Frame> = Cap::from_slot(slot);
    match cnode().copy(spare, cap, Rights::ALL) {
        Err(Error::EmptySlot) => true,
        Ok(_) => {
            let _ = cnode().delete(spare);
            false
        }
        Err(_) => false,
    }
}

/// A retype of 5 Frames into an Untyped with room for 3 makes none of them:
/// it answers `UntypedExhausted`, all 5 slots stay empty, and the room is
/// what it was (3 Frames fit after it, a 4th does not).
fn retype_many_is_all_or_nothing() -> Outcome {
    let Some(parent) = sys::untypeds::largest_ram_untyped(boot_info()) else {
        rt::fail!("no RAM untyped");
    };
    let parent = parent.cap();
    let (child_slot, first_frame) = (free_slot(0), free_slot(1));
    let batch = 2;
    let spare = free_slot(batch + 5);
    // A 16 KiB Untyped holding one 4 KiB Frame: room for 3 more.
    let child: Cap<Untyped> = match parent.retype_sized(14, child_slot) {
        Ok(child) => child,
        Err(e) => rt::fail!("retype a 16 KiB untyped: {e:?}"),
    };
    if let Err(e) = child.retype_sized::<Frame>(12, first_frame) {
        rt::fail!("retype the first frame: {e:?}");
    }
    let five = child.retype_many::<Frame>(12, free_slot(batch), 5);
    check!(
        five == Err(RetypeError::Refused(Error::UntypedExhausted)),
        "5 frames into room for 3 answered {five:?}"
    );
    for i in 0..5 {
        check!(
            slot_is_empty(free_slot(batch + i), spare),
            "after the refused retype, destination {i} of 5 is not empty"
        );
    }
    let three = child.retype_many::<Frame>(12, free_slot(batch), 3);
    check!(three.is_ok(), "3 frames into room for 3 answered {three:?}");
    let fourth = child.retype_sized::<Frame>(12, free_slot(batch + 3));
    check!(
        fourth == Err(Error::UntypedExhausted),
        "a 4th frame answered {fourth:?}"
    );
    for i in 0..3 {
        check!(cnode().delete(free_slot(batch + i)).is_ok(), "clean up {i}");
    }
    check!(
        cnode().delete(first_frame).is_ok() && cnode().delete(child_slot).is_ok(),
        "clean up"
    );
    Ok(())
}

fn cspace_copy_mint_move_revoke() -> Outcome {
    let (untyped, _) = smallest_untyped();
    let (a, b, d, spare) = (free_slot(1), free_slot(2), free_slot(3), free_slot(4));
    let endpoint: Cap<Endpoint> = match untyped.retype(free_slot(0)) {
        Ok(endpoint) => endpoint,
        Err(e) => rt::fail!("retype an endpoint: {e:?}"),
    };
    let c = cnode();
    let copy = match c.copy(a, endpoint, Rights::ALL) {
        Ok(copy) => copy,
        Err(e) => rt::fail!("copy: {e:?}"),
    };
    let badged = match c.mint(b, endpoint, Rights::READ_WRITE, 5) {
        Ok(badged) => badged,
        Err(e) => rt::fail!("mint with badge 5: {e:?}"),
    };
    let again = c.mint(spare, badged, Rights::ALL, 6);
    check!(
        again == Err(Error::AlreadyBadged),
        "re-badging answered {again:?}"
    );
    let moved = match c.move_(d, badged) {
        Ok(moved) => moved,
        Err(e) => rt::fail!("move the badged copy: {e:?}"),
    };
    let moved_from = c.copy(spare, badged, Rights::ALL);
    check!(
        moved_from == Err(Error::EmptySlot),
        "the moved-from slot answered {moved_from:?}"
    );
    let occupied = c.copy(a, endpoint, Rights::ALL);
    check!(
        occupied == Err(Error::SlotOccupied),
        "copy into an occupied slot answered {occupied:?}"
    );
    check!(c.revoke(endpoint.slot()).is_ok(), "revoke");
    for (name, cap) in [("copy", copy), ("moved badged copy", moved)] {
        let gone = c.copy(spare, cap, Rights::ALL);
        check!(
            gone == Err(Error::EmptySlot),
            "after revoke the {name} answered {gone:?}"
        );
    }
    check!(
        c.copy(a, endpoint, Rights::ALL).is_ok(),
        "the revoked capability itself survives"
    );
    check!(
        c.delete(a).is_ok() && c.delete(endpoint.slot()).is_ok(),
        "clean up"
    );
    Ok(())
}

fn iommu_identify() -> Outcome {
    let control: Cap<IommuControl> = bootinfo::IOMMU_CONTROL;
    let info = match control.identify() {
        Ok(info) => info,
        Err(e) => rt::fail!("identify answered {e:?}"),
    };
    let expected = if cfg!(target_arch = "x86_64") {
        sys::Vendor::VtD
    } else {
        sys::Vendor::SmmuV3
    };
    check!(info.vendor == expected, "vendor {:?}", info.vendor);
    check!(info.stage2, "no stage 2");
    check!(
        info.hardware_nesting || info.shadow_nesting,
        "no nesting of either kind"
    );
    check!(info.domain_ids > 0, "no domain ids");
    check!(info.page_sizes & (1 << 12) != 0, "no 4 KiB pages");
    let blind = match cnode().copy(free_slot(2), control, Rights::WRITE) {
        Ok(blind) => blind,
        Err(e) => rt::fail!("copying the IommuControl without read answered {e:?}"),
    };
    let refused = blind.identify();
    check!(
        cnode().delete(blind.slot()).is_ok(),
        "deleting the copy without read"
    );
    check!(
        matches!(refused, Err(Error::InsufficientRights)),
        "identify without the read right answered {:?}",
        refused.map(|info| info.vendor)
    );
    Ok(())
}

fn bad_invocations_get_error_codes() -> Outcome {
    let untyped: Cap<Untyped> = bootinfo::ARENA;
    let nowhere: Cap<Untyped> = Cap::from_slot(Slot::new(1 << 20));
    let lookup = nowhere.retype_sized::<Frame>(12, Slot::new(100));
    check!(
        lookup == Err(Error::LookupFailed),
        "a slot outside the CSpace answered {lookup:?}"
    );
    let frame_on_untyped: Cap<Frame> = untyped.cast();
    let wrong = frame_on_untyped.unmap();
    check!(
        wrong == Err(Error::InvalidInvocation),
        "a Frame invocation on an Untyped answered {wrong:?}"
    );
    let free = free_slot(0);
    let too_many = untyped.retype_many::<Frame>(12, free, 100_000);
    check!(
        too_many == Err(RetypeError::Refused(Error::InvalidArgument)),
        "a huge count answered {too_many:?}"
    );
    let bad_size = untyped.retype_sized::<Frame>(13, free);
    check!(
        bad_size == Err(Error::InvalidSize),
        "a 8 KiB frame answered {bad_size:?}"
    );
    let endpoint: Cap<Endpoint> = Cap::from_slot(free);
    let empty = cnode().copy(free_slot(1), endpoint, Rights::ALL);
    check!(
        empty == Err(Error::EmptySlot),
        "copying an empty slot answered {empty:?}"
    );
    Ok(())
}
