//! `iocaps`: the IOMMU capability invocations from user space, without DMA
//! (the `edu` driver does DMA). Runs as the root task on both machines.
//!
//! - IoSpace.Map checks: alignment, the reserved kernel window, rights
//!   above the Frame capability's, a Frame mapped twice, the wrong format
//!   for a user table.
//! - IoDevice: one per requester; Attach / AttachNested / Detach, and
//!   `AlreadyAttached` / `NotAttached` / `WrongKind` when misused.
//! - Revoking an IoSpace detaches every device using it.
//! - IoPasid: duplicates and PASIDs above the unit's limit are refused;
//!   PASIDs attach on VT-d scalable mode (RID_PASID entry) and are
//!   `NotSupported` where the unit has no PASID entries.
//! - IoFaultQueue: binds to a device; Pop on an empty queue is `None`.
//! - IoUserTable.Invalidate answers the end of the range it processed.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use abi::bootinfo;
use rt::check;
use rt::space::Objects;
use rt::testing::{Failure, Outcome, Suite};
use sys::{
    Cap, Error, Frame, IoDevice, IoFaultQueue, IoSpace, IommuControl, MapRights, Notification,
    ObjectType, Rights, UserTableFormat,
};

rt::entry!(main);

fn control() -> Cap<IommuControl> {
    Cap::from_slot(bootinfo::IOMMU_CONTROL)
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
    fn take(&mut self) -> u32 {
        // The root CNode has 1024 slots; the tests use a few dozen.
        self.objects.slot().unwrap_or(0)
    }

    fn make<T: sys::CapType>(&mut self, kind: ObjectType) -> Result<Cap<T>, Failure> {
        self.objects
            .make(kind, 12)
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
    suite.run("one_device_per_requester", || {
        one_device_per_requester(&mut world)
    });
    suite.run("attach_and_detach", || attach_and_detach(&mut world));
    suite.run("user_tables_and_invalidate", || {
        user_tables_and_invalidate(&mut world)
    });
    suite.run("revoking_the_space_detaches_its_devices", || {
        revoking_the_space_detaches_its_devices(&mut world)
    });
    suite.run("pasids", || pasids(&mut world));
    suite.run("fault_queue_binds_and_starts_empty", || {
        fault_queue_binds_and_starts_empty(&mut world)
    });
    suite.finish()
}

fn io_space_map_checks(world: &mut World) -> Outcome {
    let info = control().identify();
    check!(info.is_ok(), "Identify: {info:?}");
    let space = world.io_space()?;
    world.space = Some(space);
    let frame: Cap<Frame> = world.make(ObjectType::Frame)?;
    let mapped = space.map(frame, 0x10_0000, MapRights::READ_WRITE);
    check!(mapped.is_ok(), "map a frame: {mapped:?}");
    let twice = space.map(frame, 0x20_0000, MapRights::READ);
    check!(
        twice == Err(Error::AlreadyMapped),
        "the same Frame capability mapped twice: {twice:?}"
    );
    let other: Cap<Frame> = world.make(ObjectType::Frame)?;
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
    // The top 2 MiB of the IPA space are the kernel's.
    #[cfg(target_arch = "aarch64")]
    let window = (1u64 << 44) - 4096;
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
    let copied = world.objects.cnode().copy(copy, other.slot(), Rights::READ);
    check!(copied.is_ok(), "copy read-only: {copied:?}");
    let read_only: Cap<Frame> = Cap::from_slot(copy);
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
    let frame: Cap<Frame> = world.make(ObjectType::Frame)?;
    let wrong = device.attach(Cap::from_slot(frame.slot()));
    check!(
        wrong == Err(Error::WrongKind),
        "attach to a Frame: {wrong:?}"
    );
    Ok(())
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
    let table = space.bind_user_table(0x40_0000, FORMAT, world.take());
    let Ok(table) = table else {
        rt::fail!("BindUserTable: {table:?}")
    };
    let nested = device.attach_nested(table);
    check!(nested.is_ok(), "AttachNested: {nested:?}");
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
    let detached = device.detach();
    check!(detached.is_ok(), "Detach from the user table: {detached:?}");
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
    Ok(())
}

fn fault_queue_binds_and_starts_empty(world: &mut World) -> Outcome {
    let slot = world.take();
    let minted = control().mint_device(OTHER_REQUESTER, slot);
    let Ok(device) = minted else {
        rt::fail!("MintDevice: {minted:?}")
    };
    let queue: Cap<IoFaultQueue> = world.make(ObjectType::IoFaultQueue)?;
    let notification: Cap<Notification> = world.make(ObjectType::Notification)?;
    let bound = queue.bind(notification, device);
    check!(bound.is_ok(), "Bind: {bound:?}");
    let popped = queue.pop();
    check!(popped == Ok(None), "Pop on an empty queue: {popped:?}");
    Ok(())
}
