//! CNode invocations: `Copy`, `Mint`, `Move` (also between CNodes),
//! `Delete`, `Revoke`.

use super::{Call, Reply, slot_index};
use crate::objects::{self, CapSystem};
use abi::{Error, Invocation};
use caps::{Badge, ObjectKind, Rights, SlotId};

/// A decoded CNode invocation: the slots resolved, the CNode capabilities
/// holding the rights each needs.
pub(super) enum CnodeOp {
    /// `Copy` (badge 0) and `Mint`: `source` into the empty `dest`.
    Mint {
        source: SlotId,
        dest: SlotId,
        rights: Rights,
        badge: Badge,
    },
    /// `Move`: `source` into the empty `dest`.
    Move { source: SlotId, dest: SlotId },
    /// `Delete` of the capability in `target`.
    Delete { target: SlotId },
    /// `Revoke` of everything derived from `target`.
    Revoke { target: SlotId },
}

/// Decodes a CNode invocation; changes nothing. Writing a slot takes the
/// write right on its CNode capability; copying out of one the read right
/// (moving out: write).
#[inline(always)]
pub(super) fn decode(caps: &CapSystem, call: &Call) -> Result<CnodeOp, Error> {
    let invocation = call.invocation;
    match invocation {
        Invocation::CnodeCopy | Invocation::CnodeMint | Invocation::CnodeMove => {
            caps.lookup_as(call.slot, ObjectKind::CNode, Rights::WRITE)?;
            let dest = caps.resolve(call.slot, slot_index(call.argument(0)?)?)?;
            // Cap 0, if given, is the CNode the source slot is in.
            let source_cnode = if call.message.info.extra_caps > 0 {
                call.extra_cap(caps, 0)?
            } else {
                call.slot
            };
            let source_right = if invocation == Invocation::CnodeMove {
                Rights::WRITE
            } else {
                Rights::READ
            };
            caps.lookup_as(source_cnode, ObjectKind::CNode, source_right)?;
            let source = caps.resolve(source_cnode, slot_index(call.argument(1)?)?)?;
            if invocation == Invocation::CnodeMove {
                return Ok(CnodeOp::Move { source, dest });
            }
            let rights = Rights::from_bits_truncate(call.argument(2)? as u8);
            let badge = if invocation == Invocation::CnodeMint {
                Badge(call.argument(3)?)
            } else {
                Badge(0)
            };
            Ok(CnodeOp::Mint {
                source,
                dest,
                rights,
                badge,
            })
        }
        Invocation::CnodeDelete | Invocation::CnodeRevoke => {
            caps.lookup_as(call.slot, ObjectKind::CNode, Rights::WRITE)?;
            let target = caps.resolve(call.slot, slot_index(call.argument(0)?)?)?;
            Ok(if invocation == Invocation::CnodeDelete {
                CnodeOp::Delete { target }
            } else {
                CnodeOp::Revoke { target }
            })
        }
        _ => Err(Error::InvalidInvocation),
    }
}

/// Performs a decoded CNode invocation. The model's operation may still
/// refuse (`EmptySlot`, `SlotOccupied`, `NotBadgeable`, `AlreadyBadged`,
/// `CnodeNotEmpty`, ...), having changed nothing. A delete or revoke
/// reconciles the kernel's state with what died before it answers.
#[inline(always)]
pub(super) fn perform(
    caps: &mut CapSystem,
    threads: &mut crate::sched::Threads,
    op: CnodeOp,
) -> Result<Reply, Error> {
    let mut sink = objects::SINK;
    match op {
        CnodeOp::Mint {
            source,
            dest,
            rights,
            badge,
        } => caps.mint(source, dest, rights, badge)?,
        CnodeOp::Move { source, dest } => caps.move_cap(source, dest)?,
        CnodeOp::Delete { target } => {
            let result = caps.delete(target, &mut sink);
            objects::reconcile(caps, threads, sink.removed);
            result?
        }
        CnodeOp::Revoke { target } => {
            let result = caps.revoke(target, &mut sink);
            objects::reconcile(caps, threads, sink.removed);
            result?
        }
    }
    Ok(Reply::EMPTY)
}
