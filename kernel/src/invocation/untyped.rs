//! `Untyped.Retype`: decoded all or nothing (`caps::Caps::check_retype`),
//! then performed.

use super::{Call, Reply, slot_index};
use crate::objects::{self, CapSystem};
use abi::{Error, Invocation, ObjectType};
use caps::{NewObject, ObjectKind, SlotId};

/// Most objects one `Retype` creates.
const MAX_RETYPE_COUNT: u64 = 256;

/// A decoded `Untyped.Retype`: every destination resolves and is empty,
/// and all `count` objects fit.
pub(super) struct Retype {
    untyped: SlotId,
    new: NewObject,
    cspace: SlotId,
    first: u32,
    count: u32,
}

/// Decodes `Untyped.Retype`; changes nothing.
#[inline(always)]
pub(super) fn decode(caps: &CapSystem, call: &Call) -> Result<Retype, Error> {
    if (call.kind, call.invocation) != (ObjectKind::Untyped, Invocation::UntypedRetype) {
        return Err(Error::InvalidInvocation);
    }
    let object_type = ObjectType::from_number(call.argument(0)?).ok_or(Error::InvalidArgument)?;
    let size_bits = u8::try_from(call.argument(1)?).map_err(|_| Error::InvalidSize)?;
    let first = slot_index(call.argument(2)?)?;
    let count = call.argument(3)?;
    if count == 0 || count > MAX_RETYPE_COUNT {
        return Err(Error::InvalidArgument);
    }
    let new = match object_type {
        ObjectType::Untyped => NewObject::Untyped { size_bits },
        ObjectType::Cnode => NewObject::CNode { size_bits },
        ObjectType::Tcb => NewObject::Tcb,
        ObjectType::Endpoint => NewObject::Endpoint,
        ObjectType::Notification => NewObject::Notification,
        ObjectType::Frame => NewObject::Frame { size_bits },
        ObjectType::PageTable => NewObject::PageTable,
        ObjectType::IoSpace => NewObject::IoSpace {
            iommu: call.extra_cap(caps, 0)?,
        },
        ObjectType::IoFaultQueue => NewObject::IoFaultQueue,
    };
    let count = count as u32;
    // Every destination must resolve and be empty, and all `count` objects
    // must fit (room at the watermark, records, DIDs, slot memory; for
    // IoSpaces the kernel's records and table-page reservations).
    for i in 0..count {
        let dest = caps.resolve(call.cspace, first.checked_add(i).ok_or(Error::InvalidSlot)?)?;
        if caps.lookup(dest).is_ok() {
            return Err(Error::SlotOccupied);
        }
    }
    caps.check_retype(call.slot, new, count as usize)?;
    if let NewObject::IoSpace { .. } = new {
        crate::io_space::can_register(count as usize)?;
    }
    Ok(Retype {
        untyped: call.slot,
        new,
        cspace: call.cspace,
        first,
        count,
    })
}

/// Performs a decoded `Retype`: MR0 is the count made. Decode checked each
/// step, so a refusal here is a kernel bug (decode let through what the
/// model or `io_space` refuses): everything made is taken back and the
/// error answered, all or nothing.
#[inline(always)]
pub(super) fn perform(
    caps: &mut CapSystem,
    threads: &mut crate::sched::Threads,
    op: Retype,
) -> Result<Reply, Error> {
    let mut sink = objects::SINK;
    for i in 0..op.count {
        let dest = caps.resolve(op.cspace, op.first + i)?;
        let made = caps
            .retype(op.untyped, op.new, dest, &mut sink)
            .map_err(Error::from);
        let made = made.and_then(|id| match op.new {
            NewObject::IoSpace { .. } => register_io_space(caps, id, dest),
            _ => Ok(()),
        });
        if let Err(e) = made {
            crate::println!("[caps] retype {i} of {} failed after decode: {e}", op.count);
            for j in 0..i {
                let made = caps.resolve(op.cspace, op.first + j)?;
                let _ = caps.delete(made, &mut sink);
            }
            objects::reconcile(caps, threads, sink.removed);
            return Err(e);
        }
    }
    Ok(Reply {
        mrs: [u64::from(op.count), 0, 0, 0, 0, 0, 0, 0],
        length: 1,
    })
}

/// Gives a fresh IoSpace (cap in `dest`) its stage-2 table; deletes it
/// again if the kernel cannot.
fn register_io_space(caps: &mut CapSystem, id: caps::ObjectId, dest: SlotId) -> Result<(), Error> {
    let object = caps.object(id).ok_or(Error::DeadObject)?;
    let root = object.memory().map(|(p, _)| p).ok_or(Error::DeadObject)?;
    let caps::ObjectState::IoSpace { did, .. } = *object.state() else {
        return Err(Error::WrongKind);
    };
    let registered = crate::io_space::register_space(id, root, did);
    if registered.is_err() {
        let mut sink = objects::SINK;
        let _ = caps.delete(dest, &mut sink);
    }
    registered
}
