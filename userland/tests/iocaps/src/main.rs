//! `iocaps`: the IOMMU capability invocations from user space, without DMA
//! (the `edu` driver does DMA). Runs as the root task on both machines.
//!
//! - IoSpace.Map checks: alignment, the reserved kernel window, rights
//!   above the Frame capability's, a Frame mapped twice, the wrong format
//!   for a user table.
//! - The kernel's IoSpace.Map / Unmap fast path refuses as the general
//!   path does: an IoSpace label on a Frame capability, a read-only
//!   IoSpace capability, a Frame mapped in another IoSpace, a Frame
//!   argument of another kind, an IPA taken by a mapping it just made;
//!   and a Frame revoked or deleted right after it mapped it is unmapped
//!   (its IPA is free again).
//! - IoDevice: one per requester; Attach / AttachNested / Detach, and
//!   `AlreadyAttached` / `NotAttached` / `WrongKind` when misused.
//! - Revoking an IoSpace detaches every device using it.
//! - IoPasid: duplicates and PASIDs above the unit's limit are refused;
//!   PASIDs attach on VT-d scalable mode (RID_PASID entry) and are
//!   `NotSupported` where the unit has no PASID entries.
//! - IoFaultQueue: binds to a device; Pop on an empty queue is `None`;
//!   `Identify` says the unit takes no page requests (QEMU, both machines)
//!   and `Respond` answers `NotSupported`, or `InsufficientRights` on a
//!   read-only copy of the queue.
//! - Dirty tracking: `SetDirtyTracking` and `ReadDirty` need the write
//!   right on the IoSpace and on the bitmap Frame; on a unit that cannot
//!   track (QEMU: `Identify` says so on both machines) they answer
//!   `NotSupported`; where it can, a space with nothing written reads clean.
//! - IoUserTable.Invalidate answers the end of the range it processed, and
//!   refuses a read-only IoUserTable capability and, right after it
//!   invalidated through it, one whose IoSpace died (`DeadObject`).
//! - IO table memory is charged per IoSpace: one IoSpace that fills its
//!   tables (VT-d: a stage 1 aliasing every 2 MiB region, shadowed region
//!   by region through Invalidate; both machines: stage-2 maps each in a
//!   new 1 GiB region) runs out itself, and another IoSpace still maps
//!   and invalidates.
//! - The unit's own tables (VT-d context tables, PASID directories and
//!   tables; SMMUv3 level-2 stream tables) cannot be drained either:
//!   attaching and detaching devices spread over many buses or stream
//!   groups leaves another IoSpace able to attach.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use rt::check;
use rt::space::Objects;
use rt::testing::{Failure, Outcome, Suite};
use sys::bootinfo;
use sys::{
    Cap, Error, Frame, IoDevice, IoFaultQueue, IoSpace, IoUserTable, IommuControl, MapRights,
    Notification, PageResponse, PageTable, Retype, Rights, Slot, UserTableFormat,
};

rt::entry!(main);

fn control() -> Cap<IommuControl> {
    bootinfo::IOMMU_CONTROL
}

/// Requesters no device on either machine uses: the test attaches them
/// without running DMA.
const REQUESTER: u32 = 0x50;
const OTHER_REQUESTER: u32 = 0x58;

/// The stage-1 format of this machine's IOMMU.
#[cfg(target_arch = "x86_64")]
const FORMAT: UserTableFormat = UserTableFormat::X86FirstStage4Level;
#[cfg(target_arch = "x86_64")]
const WRONG_FORMAT: UserTableFormat = UserTableFormat::ArmStage1Granule4k48Bit;
#[cfg(target_arch = "aarch64")]
const FORMAT: UserTableFormat = UserTableFormat::ArmStage1Granule4k48Bit;
#[cfg(target_arch = "aarch64")]
const WRONG_FORMAT: UserTableFormat = UserTableFormat::X86FirstStage4Level;

/// The root task's objects and those the tests share.
struct World {
    objects: Objects,
    space: Option<Cap<IoSpace>>,
    device: Option<Cap<IoDevice>>,
}

fn failure(what: &str, e: Error) -> Failure {
    Failure(rt::__format!("{what}: {e:?}"))
}

impl World {
    fn take(&mut self) -> Slot {
        // The root CNode has 1024 slots; the tests use a few dozen.
        self.objects.slot().unwrap_or(Slot::new(0))
    }

    /// One object of the kind the caller names (`let frame: Cap<Frame> =
    /// world.make()?`), 4 KiB where the kind has a size.
    fn make<T: Retype>(&mut self) -> Result<Cap<T>, Failure> {
        self.objects
            .make_sized(12)
            .map_err(|e| failure("retype", e))
    }

    fn io_space(&mut self) -> Result<Cap<IoSpace>, Failure> {
        self.objects
            .make_io_space(control())
            .map_err(|e| failure("retype an IoSpace", e))
    }
}

fn main(_startup: &rt::Startup) -> i32 {
    let Some(info) = rt::boot::boot_info() else {
        rt::println!("iocaps: no boot-info page");
        return 1;
    };
    let mut world = World {
        objects: Objects::from_boot_info(info),
        space: None,
        device: None,
    };
    let mut suite = Suite::new();
    suite.run("io_space_map_checks", || io_space_map_checks(&mut world));
    suite.run("io_space_fast_path_refusals", || {
        io_space_fast_path_refusals(&mut world)
    });
    suite.run("revoke_right_after_a_fast_map_unmaps", || {
        revoke_right_after_a_fast_map_unmaps(&mut world)
    });
    suite.run("one_device_per_requester", || {
        one_device_per_requester(&mut world)
    });
    suite.run("attach_and_detach", || attach_and_detach(&mut world));
    suite.run("user_tables_and_invalidate", || {
        user_tables_and_invalidate(&mut world)
    });
    suite.run("invalidate_after_the_space_died", || {
        invalidate_after_the_space_died(&mut world)
    });
    suite.run("revoking_the_space_detaches_its_devices", || {
        revoking_the_space_detaches_its_devices(&mut world)
    });
    suite.run("pasids", || pasids(&mut world));
    suite.run("dirty_tracking_answers", || {
        dirty_tracking_answers(&mut world)
    });
    suite.run("fault_queue_binds_and_starts_empty", || {
        fault_queue_binds_and_starts_empty(&mut world)
    });
    suite.run("one_space_cannot_drain_the_table_pool", || {
        one_space_cannot_drain_the_table_pool(&mut world)
    });
    suite.run("stage2_maps_cannot_drain_the_table_pool", || {
        stage2_maps_cannot_drain_the_table_pool(&mut world)
    });
    suite.run("attach_and_detach_cannot_drain_the_unit_tables", || {
        attach_and_detach_cannot_drain_the_unit_tables(&mut world)
    });
    suite.finish()
}

fn io_space_map_checks(world: &mut World) -> Outcome {
    let info = control().identify();
    check!(info.is_ok(), "Identify: {info:?}");
    let space = world.io_space()?;
    world.space = Some(space);
    let frame: Cap<Frame> = world.make()?;
    let mapped = space.map(frame, 0x10_0000, MapRights::READ_WRITE);
    check!(mapped.is_ok(), "map a frame: {mapped:?}");
    let twice = space.map(frame, 0x20_0000, MapRights::READ);
    check!(
        twice == Err(Error::AlreadyMapped),
        "the same Frame capability mapped twice: {twice:?}"
    );
    let other: Cap<Frame> = world.make()?;
    let overlap = space.map(other, 0x10_0000, MapRights::READ);
    check!(
        overlap == Err(Error::AddressInUse),
        "a second frame at a used IPA: {overlap:?}"
    );
    let misaligned = space.map(other, 0x10_0800, MapRights::READ);
    check!(
        misaligned == Err(Error::InvalidAddress),
        "a misaligned IPA: {misaligned:?}"
    );
    // The top 2 MiB of the IPA space are the kernel's; on aarch64 its last
    // page is the MSI doorbell's, refused with its own error.
    #[cfg(target_arch = "aarch64")]
    let window = (1u64 << 44) - 2 * 4096;
    #[cfg(target_arch = "aarch64")]
    {
        let doorbell = space.map(other, (1u64 << 44) - 4096, MapRights::READ);
        check!(
            doorbell == Err(Error::MsiWindow),
            "the MSI doorbell's page: {doorbell:?}"
        );
    }
    #[cfg(target_arch = "x86_64")]
    let window = (1u64 << 48) - 4096;
    let reserved = space.map(other, window, MapRights::READ);
    check!(
        reserved == Err(Error::InvalidAddress),
        "an IPA in the reserved window: {reserved:?}"
    );
    let no_rights = space.map(other, 0x30_0000, MapRights::from_bits(0));
    check!(
        no_rights == Err(Error::InvalidRights),
        "no rights: {no_rights:?}"
    );
    let execute = space.map(other, 0x30_0000, MapRights::READ_EXECUTE);
    check!(
        execute == Err(Error::InvalidRights),
        "execute rights for a device: {execute:?}"
    );
    // A read-only copy cannot be mapped writable.
    let copy = world.take();
    let copied = world.objects.cnode().copy(copy, other, Rights::READ);
    let Ok(read_only) = copied else {
        rt::fail!("copy read-only: {copied:?}");
    };
    let above = space.map(read_only, 0x30_0000, MapRights::READ_WRITE);
    check!(
        above == Err(Error::InsufficientRights),
        "write through a read-only Frame capability: {above:?}"
    );
    let ok = space.map(read_only, 0x30_0000, MapRights::READ);
    check!(ok.is_ok(), "read-only mapping: {ok:?}");
    let unmapped = space.unmap(read_only);
    check!(unmapped.is_ok(), "unmap: {unmapped:?}");
    let again = space.unmap(read_only);
    check!(again == Err(Error::NotMapped), "unmap twice: {again:?}");
    // `Frame.Unmap` removes the IO mapping too (the kernel's Frame fast
    // path takes only CPU mappings and leaves this one to the general
    // path).
    let ok = space.map(read_only, 0x30_0000, MapRights::READ);
    check!(ok.is_ok(), "map again: {ok:?}");
    let unmapped = read_only.unmap();
    check!(
        unmapped.is_ok(),
        "Frame.Unmap of an IO mapping: {unmapped:?}"
    );
    let gone = space.unmap(read_only);
    check!(
        gone == Err(Error::NotMapped),
        "IoSpace.Unmap after Frame.Unmap: {gone:?}"
    );
    Ok(())
}

/// Where the fast-path tests map (nothing else in the suite maps there).
const FAST_IPA: u64 = 0x50_0000;

/// `IoSpace.Map` and `Unmap` refusals, which the kernel's fast path for
/// them (`invocation::space_now`) must answer as the general path does;
/// each refusal leaves the mappings as they were.
fn io_space_fast_path_refusals(world: &mut World) -> Outcome {
    let space = world.io_space()?;
    let other_space = world.io_space()?;
    let frame: Cap<Frame> = world.make()?;
    let other: Cap<Frame> = world.make()?;
    // The IoSpace labels on a Frame capability.
    let on_frame: Cap<IoSpace> = frame.cast();
    let wrong = on_frame.map(frame, FAST_IPA, MapRights::READ);
    check!(
        wrong == Err(Error::InvalidInvocation),
        "IoSpace.Map on a Frame capability: {wrong:?}"
    );
    // A read-only copy of the IoSpace capability maps nothing.
    let slot = world.take();
    let copied = world.objects.cnode().copy(slot, space, Rights::READ);
    let Ok(read_only) = copied else {
        rt::fail!("copy the IoSpace read-only: {copied:?}");
    };
    let refused = read_only.map(frame, FAST_IPA, MapRights::READ);
    check!(
        refused == Err(Error::InsufficientRights),
        "IoSpace.Map through a read-only IoSpace capability: {refused:?}"
    );
    let mapped = space.map(frame, FAST_IPA, MapRights::READ_WRITE);
    check!(mapped.is_ok(), "map through the writable one: {mapped:?}");
    // The IPA it just took.
    let taken = space.map(other, FAST_IPA, MapRights::READ);
    check!(
        taken == Err(Error::AddressInUse),
        "a second Frame at the IPA just mapped: {taken:?}"
    );
    // ... is only taken in that IoSpace.
    let elsewhere = other_space.map(other, FAST_IPA, MapRights::READ);
    check!(
        elsewhere.is_ok(),
        "the same IPA in another IoSpace: {elsewhere:?}"
    );
    check!(other_space.unmap(other).is_ok(), "unmap the other Frame");
    // Neither a read-only IoSpace capability, nor another IoSpace, nor an
    // IoSpace label on the Frame itself unmaps it.
    let refused = read_only.unmap(frame);
    check!(
        refused == Err(Error::InsufficientRights),
        "IoSpace.Unmap through a read-only IoSpace capability: {refused:?}"
    );
    let refused = other_space.unmap(frame);
    check!(
        refused == Err(Error::NotMapped),
        "IoSpace.Unmap through another IoSpace: {refused:?}"
    );
    let refused = on_frame.unmap(frame);
    check!(
        refused == Err(Error::InvalidInvocation),
        "IoSpace.Unmap on a Frame capability: {refused:?}"
    );
    let still = space.map(other, FAST_IPA, MapRights::READ);
    check!(
        still == Err(Error::AddressInUse),
        "the Frame stays mapped after those refusals: {still:?}"
    );
    // The Frame argument must be a Frame (an IoSpace has memory too).
    let not_frame: Cap<Frame> = other_space.cast();
    let refused = space.map(not_frame, FAST_IPA + 0x1000, MapRights::READ);
    check!(
        refused == Err(Error::WrongKind),
        "an IoSpace capability as the Frame: {refused:?}"
    );
    let unmapped = space.unmap(frame);
    check!(unmapped.is_ok(), "unmap: {unmapped:?}");
    let again = space.unmap(frame);
    check!(again == Err(Error::NotMapped), "unmap twice: {again:?}");
    let free = space.map(other, FAST_IPA, MapRights::READ);
    check!(free.is_ok(), "the IPA is free after the unmap: {free:?}");
    check!(space.unmap(other).is_ok(), "unmap the other Frame");
    Ok(())
}

/// A copy of a Frame mapped (through the fast path) and at once revoked
/// from its parent, or deleted, is unmapped: its IPA is free again, and
/// no capability is left to unmap.
fn revoke_right_after_a_fast_map_unmaps(world: &mut World) -> Outcome {
    let space = world.io_space()?;
    let frame: Cap<Frame> = world.make()?;
    let other: Cap<Frame> = world.make()?;
    for revoke in [true, false] {
        let slot = world.take();
        let minted = world.objects.cnode().mint(slot, frame, Rights::ALL, 0);
        let Ok(copy) = minted else {
            rt::fail!("copy the Frame: {minted:?}");
        };
        let mapped = space.map(copy, FAST_IPA, MapRights::READ_WRITE);
        check!(mapped.is_ok(), "map the copy: {mapped:?}");
        let gone = if revoke {
            world.objects.cnode().revoke(frame.slot())
        } else {
            world.objects.cnode().delete(copy.slot())
        };
        check!(gone.is_ok(), "revoke ({revoke}) or delete: {gone:?}");
        let stale = space.unmap(copy);
        check!(
            stale == Err(Error::EmptySlot),
            "IoSpace.Unmap of the revoked ({revoke}) copy: {stale:?}"
        );
        let free = space.map(other, FAST_IPA, MapRights::READ);
        check!(
            free.is_ok(),
            "the IPA after the copy was revoked ({revoke}) or deleted: {free:?}"
        );
        check!(space.unmap(other).is_ok(), "unmap the other Frame");
    }
    Ok(())
}

fn one_device_per_requester(world: &mut World) -> Outcome {
    let slot = world.take();
    let device = control().mint_device(REQUESTER, slot);
    check!(device.is_ok(), "MintDevice: {device:?}");
    world.device = device.ok();
    let twice = control().mint_device(REQUESTER, world.take());
    check!(
        twice.err() == Some(Error::DeviceInUse),
        "a second IoDevice for the requester: {twice:?}"
    );
    let beyond = control().mint_device(1 << 16, world.take());
    check!(
        beyond.err() == Some(Error::OutOfScope),
        "a requester id above 16 bits: {beyond:?}"
    );
    Ok(())
}

fn attach_and_detach(world: &mut World) -> Outcome {
    let (Some(device), Some(space)) = (world.device, world.space) else {
        rt::fail!("needs the space and the device of the earlier tests")
    };
    let attached = device.attach(space);
    check!(attached.is_ok(), "Attach: {attached:?}");
    let twice = device.attach(space);
    check!(
        twice == Err(Error::AlreadyAttached),
        "attach twice: {twice:?}"
    );
    let detached = device.detach();
    check!(detached.is_ok(), "Detach: {detached:?}");
    let again = device.detach();
    check!(again == Err(Error::NotAttached), "detach twice: {again:?}");
    // Attach names an IoSpace; a Frame is the wrong kind.
    let frame: Cap<Frame> = world.make()?;
    let wrong = device.attach(frame.cast());
    check!(
        wrong == Err(Error::WrongKind),
        "attach to a Frame: {wrong:?}"
    );
    Ok(())
}

/// A user table rooted at IPA 0x40_0000 of `space`, `device` attached
/// nested through it.
fn nested_table(
    world: &mut World,
    space: Cap<IoSpace>,
    device: Cap<IoDevice>,
) -> Result<Cap<IoUserTable>, Failure> {
    let table = space
        .bind_user_table(0x40_0000, FORMAT, world.take())
        .map_err(|e| failure("BindUserTable", e))?;
    device
        .attach_nested(table)
        .map_err(|e| failure("AttachNested", e))?;
    Ok(table)
}

fn user_tables_and_invalidate(world: &mut World) -> Outcome {
    let (Some(device), Some(space)) = (world.device, world.space) else {
        rt::fail!("needs the space and the device of the earlier tests")
    };
    let wrong = space.bind_user_table(0x40_0000, WRONG_FORMAT, world.take());
    check!(
        wrong.err() == Some(Error::InvalidArgument),
        "the other vendor's format: {wrong:?}"
    );
    let table = nested_table(world, space, device)?;
    let end = table.invalidate(0x10_0000, 0x4000);
    check!(
        end == Ok(0x10_4000),
        "Invalidate answers the end of the range: {end:?}"
    );
    let misaligned = table.invalidate(0x10_0100, 0x1000);
    check!(
        misaligned == Err(Error::InvalidAddress),
        "a misaligned range: {misaligned:?}"
    );
    let range = table.invalidate_range(0, 4 << 20);
    check!(range.is_ok(), "a 4 MiB range (continued): {range:?}");
    let slot = world.take();
    let copied = world.objects.cnode().copy(slot, table, Rights::READ);
    let Ok(read_table) = copied else {
        rt::fail!("copy the IoUserTable read-only: {copied:?}");
    };
    let refused = read_table.invalidate(0x10_0000, 0x1000);
    check!(
        refused == Err(Error::InsufficientRights),
        "Invalidate through a read-only IoUserTable: {refused:?}"
    );
    let detached = device.detach();
    check!(detached.is_ok(), "Detach from the user table: {detached:?}");
    Ok(())
}

/// An IoUserTable whose IoSpace died answers `DeadObject`, also right
/// after an `Invalidate` through it: the kernel's fast path answers from
/// the thread's cached lookup, which holds the table's IoSpace, and a
/// stale one would find no nest and answer `Ok`.
fn invalidate_after_the_space_died(world: &mut World) -> Outcome {
    let Some(device) = world.device else {
        rt::fail!("needs the device of the earlier tests")
    };
    let space = world.io_space()?;
    let table = nested_table(world, space, device)?;
    let before = table.invalidate(0x10_0000, 0x1000);
    check!(before == Ok(0x10_1000), "Invalidate: {before:?}");
    let deleted = world.objects.cnode().delete(space.slot());
    check!(deleted.is_ok(), "delete the IoSpace: {deleted:?}");
    let after = table.invalidate(0x10_0000, 0x1000);
    check!(
        after == Err(Error::DeadObject),
        "Invalidate through a table whose IoSpace died: {after:?}"
    );
    let detach = device.detach();
    check!(
        detach == Err(Error::NotAttached),
        "the device is still attached after its space died: {detach:?}"
    );
    Ok(())
}

fn revoking_the_space_detaches_its_devices(world: &mut World) -> Outcome {
    let Some(device) = world.device else {
        rt::fail!("needs the device of the earlier tests")
    };
    let space = world.io_space()?;
    let attached = device.attach(space);
    check!(attached.is_ok(), "Attach: {attached:?}");
    let deleted = world.objects.cnode().delete(space.slot());
    check!(deleted.is_ok(), "delete the IoSpace: {deleted:?}");
    let detach = device.detach();
    check!(
        detach == Err(Error::NotAttached),
        "the device is still attached after its space died: {detach:?}"
    );
    // A fresh space works, and the device can move to it.
    let fresh = world.io_space()?;
    let again = device.attach(fresh);
    check!(again.is_ok(), "Attach to a fresh space: {again:?}");
    Ok(())
}

fn dirty_tracking_answers(world: &mut World) -> Outcome {
    let info = control().identify();
    let Ok(info) = info else {
        rt::fail!("Identify: {info:?}");
    };
    let space = world.io_space()?;
    let bitmap: Cap<Frame> = world.make()?;
    let page: Cap<Frame> = world.make()?;
    let mapped = space.map(page, 0, MapRights::READ_WRITE);
    check!(mapped.is_ok(), "map a page: {mapped:?}");
    // Write rights on both capabilities first, whatever the unit.
    let cnode = world.objects.cnode();
    let (slot, other) = (world.take(), world.take());
    let copied = cnode.copy(slot, space, Rights::READ);
    let Ok(read_space) = copied else {
        rt::fail!("copy the IoSpace read-only: {copied:?}");
    };
    let copied = cnode.copy(other, bitmap, Rights::READ);
    let Ok(read_bitmap) = copied else {
        rt::fail!("copy the bitmap read-only: {copied:?}");
    };
    let refused = [
        (
            read_space.set_dirty_tracking(true),
            Error::InsufficientRights,
            "SetDirtyTracking through a read-only IoSpace",
        ),
        (
            read_space.read_dirty(0, 1, bitmap, true).map(drop),
            Error::InsufficientRights,
            "ReadDirty through a read-only IoSpace",
        ),
        (
            space.read_dirty(0, 1, read_bitmap, true).map(drop),
            Error::InsufficientRights,
            "ReadDirty into a read-only bitmap",
        ),
        // Tracking is off (or absent): nothing to read yet.
        (
            space.read_dirty(0, 1, page, true).map(drop),
            Error::NotSupported,
            "ReadDirty before tracking",
        ),
    ];
    for (answer, error, what) in refused {
        check!(answer == Err(error), "{what}: {answer:?}");
    }
    let set = space.set_dirty_tracking(true);
    let read = space.read_dirty(0, 600, bitmap, true);
    if info.dirty_tracking {
        check!(set.is_ok(), "SetDirtyTracking on a tracking unit: {set:?}");
        check!(
            read == Ok((512 * 4096, 0)),
            "ReadDirty of 600 clean pages: {read:?}"
        );
    } else {
        check!(
            set == Err(Error::NotSupported) && read == Err(Error::NotSupported),
            "SetDirtyTracking / ReadDirty on a unit that cannot track: {set:?} {read:?}"
        );
    }
    rt::println!(
        "iocaps: dirty tracking {} (first-stage A/D {})",
        if info.dirty_tracking {
            "present"
        } else {
            "absent: NotSupported"
        },
        info.first_stage_dirty
    );
    for cap in [slot, other] {
        let deleted = cnode.delete(cap);
        check!(deleted.is_ok(), "delete a copy: {deleted:?}");
    }
    let unmapped = space.unmap(page);
    check!(unmapped.is_ok(), "unmap: {unmapped:?}");
    Ok(())
}

fn pasids(world: &mut World) -> Outcome {
    let Some(device) = world.device else {
        rt::fail!("needs the device of the earlier tests")
    };
    let info = control()
        .identify()
        .map_err(|e| Failure(rt::__format!("{e:?}")))?;
    let limit = 1u64 << info.pasid_bits;
    let above = device.mint_pasid(limit as u32, world.take());
    check!(
        above.err() == Some(Error::PasidOutOfRange),
        "PASID {limit} on a unit with {} PASID bits: {above:?}",
        info.pasid_bits
    );
    let number = if limit > 1 { 1 } else { 0 };
    let pasid = device.mint_pasid(number, world.take());
    let Ok(pasid) = pasid else {
        rt::fail!("MintPasid {number}: {pasid:?}")
    };
    let duplicate = device.mint_pasid(number, world.take());
    check!(
        duplicate.err() == Some(Error::PasidInUse),
        "a second IoPasid for PASID {number}: {duplicate:?}"
    );
    // The device is attached to the space of the previous test.
    let other = world.io_space()?;
    let mismatch = pasid.attach(other);
    check!(
        matches!(
            mismatch,
            Err(Error::SpaceMismatch) | Err(Error::NotSupported)
        ),
        "a PASID attached to another space than its device's: {mismatch:?}"
    );
    // SVA for this PASID: the rights first (`pasid_bind_access`), then the
    // unit, and neither of QEMU's binds a PASID here (VT-d without
    // `x-flts` has no first stage; SMMUv3 never does).
    let root: Cap<PageTable> = world.make()?;
    let slot = world.take();
    let copied = world.objects.cnode().copy(slot, pasid, Rights::READ);
    let Ok(read_pasid) = copied else {
        rt::fail!("copy the IoPasid read-only: {copied:?}");
    };
    let refused = read_pasid.bind_vspace(root);
    check!(
        refused == Err(Error::InsufficientRights),
        "IoPasid.BindVSpace through a read-only IoPasid: {refused:?}"
    );
    let bound = pasid.bind_vspace(root);
    check!(
        bound == Err(Error::NotSupported),
        "IoPasid.BindVSpace on QEMU's unit: {bound:?}"
    );
    Ok(())
}

fn fault_queue_binds_and_starts_empty(world: &mut World) -> Outcome {
    let slot = world.take();
    let minted = control().mint_device(OTHER_REQUESTER, slot);
    let Ok(device) = minted else {
        rt::fail!("MintDevice: {minted:?}")
    };
    let queue: Cap<IoFaultQueue> = world.make()?;
    let notification: Cap<Notification> = world.make()?;
    let bound = queue.bind(notification, device);
    check!(bound.is_ok(), "Bind: {bound:?}");
    let popped = queue.pop();
    check!(popped == Ok(None), "Pop on an empty queue: {popped:?}");
    let info = control().identify();
    check!(
        info.is_ok_and(|i| !i.page_requests && !i.stall),
        "QEMU's unit takes no page requests and does not stall: {info:?}"
    );
    let answered = queue.respond(1, PageResponse::Success);
    check!(
        answered == Err(Error::NotSupported),
        "Respond without page requests: {answered:?}"
    );
    let slot = world.take();
    let copied = world.objects.cnode().copy(slot, queue, Rights::READ);
    let Ok(read_queue) = copied else {
        rt::fail!("copy the queue read-only: {copied:?}");
    };
    let refused = read_queue.respond(1, PageResponse::Success);
    check!(
        refused == Err(Error::InsufficientRights),
        "Respond through a read-only queue capability: {refused:?}"
    );
    Ok(())
}

/// Requesters the drain tests attach (no device on either machine).
const DRAINER: u32 = 0x60;
const VICTIM: u32 = 0x68;
/// Where the root task fills frames before they go into an IoSpace.
const SCRATCH_VA: u64 = 0x28_0000_0000;
/// The IPA of the drain tests' stage-1 tables (root first) and data page.
const STAGE1_IPA: u64 = 0x80_0000;
/// More table pages than the kernel's whole pool: a drain that has not
/// met `TableMemoryExhausted` by then was not bounded at all.
const DRAIN_LIMIT: u64 = 5000;

/// One stage-1 table in `space` whose entries alias: on x86, every PDPT
/// entry points at one PD and every PD entry at one PT, which maps the
/// data page, so each 2 MiB region of IOVAs (up to 512 GiB) translates and
/// a shadow needs one more table page per region. On Arm (where
/// Invalidate composes nothing) an empty root. Returns the bound table.
fn aliasing_stage1(
    world: &mut World,
    space: Cap<IoSpace>,
) -> Result<Cap<sys::IoUserTable>, Failure> {
    let scratch = rt::space::Scratch::for_root_task(&mut world.objects, SCRATCH_VA)
        .map_err(|e| failure("scratch page", e))?;
    let present = |ipa: u64| (ipa | 0x7).to_le_bytes(); // P, R/W, U/S
    let repeated = |ipa: u64| {
        let mut page = [0u8; 4096];
        for entry in page.chunks_exact_mut(8) {
            entry.copy_from_slice(&present(ipa));
        }
        page
    };
    let pages: [[u8; 4096]; 5] = if cfg!(target_arch = "x86_64") {
        let mut root = [0u8; 4096];
        root[..8].copy_from_slice(&present(STAGE1_IPA + 0x1000));
        let mut leaf = [0u8; 4096];
        leaf[..8].copy_from_slice(&present(STAGE1_IPA + 0x4000));
        [
            root,
            repeated(STAGE1_IPA + 0x2000),
            repeated(STAGE1_IPA + 0x3000),
            leaf,
            [0u8; 4096],
        ]
    } else {
        [[0u8; 4096]; 5]
    };
    for (i, bytes) in pages.iter().enumerate() {
        let frame = scratch
            .filled_frame(&mut world.objects, bytes)
            .map_err(|e| failure("fill a stage-1 frame", e))?;
        let rights = if i == 4 {
            MapRights::READ_WRITE
        } else {
            MapRights::READ
        };
        space
            .map(frame, STAGE1_IPA + 0x1000 * i as u64, rights)
            .map_err(|e| failure("IoSpace.Map of a stage-1 frame", e))?;
    }
    space
        .bind_user_table(STAGE1_IPA, FORMAT, world.take())
        .map_err(|e| failure("BindUserTable", e))
}

/// What another IoSpace must still be able to do after one drained its
/// table memory: be created, map a page, nest a device under its own
/// stage 1 and have its Invalidate work (on VT-d that composes a shadow).
fn another_space_still_works(world: &mut World) -> Outcome {
    let victim = world.io_space()?;
    let frame: Cap<Frame> = world.make()?;
    let mapped = victim.map(frame, 0x4000_0000, MapRights::READ_WRITE);
    check!(
        mapped.is_ok(),
        "another IoSpace maps a page after one drained its tables: {mapped:?}"
    );
    let table = aliasing_stage1(world, victim)?;
    let slot = world.take();
    let device = control()
        .mint_device(VICTIM, slot)
        .map_err(|e| failure("MintDevice", e))?;
    let nested = device.attach_nested(table);
    check!(
        nested.is_ok(),
        "another IoSpace's AttachNested after the drain: {nested:?}"
    );
    let invalidated = table.invalidate(0, 0x1000);
    check!(
        invalidated == Ok(0x1000),
        "another IoSpace's Invalidate after the drain: {invalidated:?}"
    );
    let detached = device.detach();
    check!(detached.is_ok(), "Detach the victim's device: {detached:?}");
    let deleted = world.objects.delete(device.slot());
    check!(deleted.is_ok(), "delete the victim's IoDevice: {deleted:?}");
    let deleted = world.objects.delete(victim.slot());
    check!(deleted.is_ok(), "delete the victim's IoSpace: {deleted:?}");
    Ok(())
}

/// The drainer's IoSpace goes, and its table memory with it: a fresh
/// IoSpace can map again.
fn drained_space_returns_its_memory(world: &mut World, drainer: Cap<IoSpace>) -> Outcome {
    let deleted = world.objects.delete(drainer.slot());
    check!(deleted.is_ok(), "delete the drained IoSpace: {deleted:?}");
    let fresh = world.io_space()?;
    let frame: Cap<Frame> = world.make()?;
    let mapped = fresh.map(frame, 0x4000_0000, MapRights::READ_WRITE);
    check!(
        mapped.is_ok(),
        "a fresh IoSpace maps after the drainer died: {mapped:?}"
    );
    let deleted = world.objects.delete(fresh.slot());
    check!(deleted.is_ok(), "delete the fresh IoSpace: {deleted:?}");
    Ok(())
}

/// Issue 12 item 3: a driver whose stage 1 aliases every 2 MiB region
/// makes the kernel build a table page per region it invalidates (VT-d
/// shadow nesting); on SMMUv3, where Invalidate builds nothing, stage-2
/// maps in fresh 1 GiB regions do the same. Either way the IoSpace runs
/// out of table memory itself, and another IoSpace still works.
fn one_space_cannot_drain_the_table_pool(world: &mut World) -> Outcome {
    if cfg!(target_arch = "aarch64") {
        return stage2_maps_cannot_drain_the_table_pool(world);
    }
    let drainer = world.io_space()?;
    let table = aliasing_stage1(world, drainer)?;
    let slot = world.take();
    let device = control()
        .mint_device(DRAINER, slot)
        .map_err(|e| failure("MintDevice", e))?;
    let nested = device.attach_nested(table);
    check!(nested.is_ok(), "AttachNested: {nested:?}");
    let mut regions = 0;
    let stopped = loop {
        if regions == DRAIN_LIMIT {
            break None;
        }
        match table.invalidate(regions << 21, 0x1000) {
            Ok(_) => regions += 1,
            Err(e) => break Some(e),
        }
    };
    rt::println!("iocaps: Invalidate shadowed {regions} aliased 2 MiB regions, then {stopped:?}");
    check!(
        stopped == Some(Error::TableMemoryExhausted),
        "the drainer's Invalidate after {regions} regions: {stopped:?}"
    );
    another_space_still_works(world)?;
    let detached = device.detach();
    check!(
        detached.is_ok(),
        "Detach the drainer's device: {detached:?}"
    );
    let deleted = world.objects.delete(device.slot());
    check!(
        deleted.is_ok(),
        "delete the drainer's IoDevice: {deleted:?}"
    );
    drained_space_returns_its_memory(world, drainer)
}

/// The stage-2 path on both machines: one Frame mapped and unmapped in a
/// new 1 GiB region each time leaves the intermediate tables behind (they
/// go with the IoSpace), until the IoSpace runs out of table memory;
/// another IoSpace still works.
fn stage2_maps_cannot_drain_the_table_pool(world: &mut World) -> Outcome {
    let drainer = world.io_space()?;
    let frame: Cap<Frame> = world.make()?;
    let mut regions = 0;
    let stopped = loop {
        if regions == DRAIN_LIMIT {
            break None;
        }
        let ipa = (regions + 1) << 30;
        match drainer.map(frame, ipa, MapRights::READ_WRITE) {
            Ok(()) => {}
            Err(e) => break Some(e),
        }
        let unmapped = drainer.unmap(frame);
        check!(unmapped.is_ok(), "unmap at {ipa:#x}: {unmapped:?}");
        regions += 1;
    };
    rt::println!("iocaps: stage 2 mapped in {regions} fresh 1 GiB regions, then {stopped:?}");
    check!(
        stopped == Some(Error::TableMemoryExhausted),
        "the drainer's Map after {regions} regions: {stopped:?}"
    );
    another_space_still_works(world)?;
    drained_space_returns_its_memory(world, drainer)
}

/// Requesters the unit-table test goes through: on VT-d consecutive
/// ones from bus 1 on (scalable mode: a PASID directory and PASID table
/// each, a context table per half bus), on SMMUv3 one per group of 64
/// StreamIDs (a level-2 stream table each; the kernel's stream table
/// covers 2^15 StreamIDs).
fn spread_requester(index: u32) -> u32 {
    if cfg!(target_arch = "x86_64") {
        0x100 + index
    } else {
        (index + 1) << 6
    }
}
/// How many: on VT-d more pages (two each) than the whole 4,160-page
/// pool; on SMMUv3 every level-2 stream table the unit can have but one.
const SPREAD: u32 = if cfg!(target_arch = "x86_64") {
    2500
} else {
    510
};
/// More IoSpaces than the kernel keeps records for (64).
const MOST_SPACES: usize = 70;

/// How many more IoSpaces can be created now (all deleted again).
fn spaces_that_fit(world: &mut World) -> Result<usize, Failure> {
    let mut made: [Option<Cap<IoSpace>>; MOST_SPACES] = [None; MOST_SPACES];
    let mut count = 0;
    while count < MOST_SPACES {
        match world.objects.make_io_space(control()) {
            Ok(space) => made[count] = Some(space),
            Err(_) => break,
        }
        count += 1;
    }
    for space in made.iter().flatten() {
        world
            .objects
            .delete(space.slot())
            .map_err(|e| failure("delete an IoSpace", e))?;
    }
    Ok(count)
}

/// Attaches one requester (and PASID 1 when the unit has PASIDs) to
/// `space` and detaches it again; the first attach error is returned.
fn attach_and_detach_once(
    world: &mut World,
    requester: u32,
    space: Cap<IoSpace>,
    pasids: bool,
) -> Result<Result<(), Error>, Failure> {
    let slot = world.take();
    let device = control()
        .mint_device(requester, slot)
        .map_err(|e| failure("MintDevice", e))?;
    let mut attached = device.attach(space);
    let device_attached = attached.is_ok();
    if attached.is_ok() && pasids {
        let slot = world.take();
        let pasid = device
            .mint_pasid(1, slot)
            .map_err(|e| failure("MintPasid", e))?;
        let result = pasid.attach(space);
        if result.is_ok() {
            pasid.detach().map_err(|e| failure("detach PASID 1", e))?;
        }
        world
            .objects
            .delete(pasid.slot())
            .map_err(|e| failure("delete the IoPasid", e))?;
        attached = result;
    }
    if device_attached {
        device.detach().map_err(|e| failure("Detach", e))?;
    }
    world
        .objects
        .delete(device.slot())
        .map_err(|e| failure("delete the IoDevice", e))?;
    Ok(attached)
}

/// Issue 12: the unit's own tables came from one shared floor and were
/// never freed, so one holder attaching and detaching devices on many
/// buses (or stream groups) used them up and every other IoSpace's
/// attach failed. Now they are freed when their last entry goes and
/// charged to the IoSpace whose attach needed them.
fn attach_and_detach_cannot_drain_the_unit_tables(world: &mut World) -> Outcome {
    let pasids = control()
        .identify()
        .map_err(|e| failure("Identify", e))?
        .pasid_bits
        > 0;
    let victim = world.io_space()?;
    let drainer = world.io_space()?;
    let fit_before = spaces_that_fit(world)?;
    let mut cycles = 0;
    let stopped = loop {
        if cycles == SPREAD {
            break None;
        }
        match attach_and_detach_once(world, spread_requester(cycles), drainer, pasids)? {
            Ok(()) => cycles += 1,
            Err(e) => break Some(e),
        }
    };
    let fit_after = spaces_that_fit(world)?;
    rt::println!(
        "iocaps: attached and detached {cycles} requesters (PASID 1 too: {pasids}), then {stopped:?}; IoSpaces that fit: {fit_before} before, {fit_after} after"
    );
    let attached = attach_and_detach_once(world, VICTIM, victim, pasids)?;
    check!(
        attached.is_ok(),
        "another IoSpace's Attach after the drain: {attached:?}"
    );
    check!(
        fit_after == fit_before,
        "IoSpaces that can be created: {fit_before} before the drain, {fit_after} after"
    );
    check!(
        stopped.is_none(),
        "attach after {cycles} attach-detach cycles: {stopped:?}"
    );
    for space in [drainer, victim] {
        let deleted = world.objects.delete(space.slot());
        check!(deleted.is_ok(), "delete an IoSpace: {deleted:?}");
    }
    Ok(())
}
