//! IoFaultQueue invocations: `Bind` (a notification and a fault source),
//! `Pop` (the oldest record), `Respond` (answer a page request).

use super::{Call, Reply};
use crate::objects::{self, CapSystem};
use crate::sched::Target;
use abi::{Error, Invocation};
use caps::{ObjectId, ObjectKind, Rights, SlotId};

/// A decoded IoFaultQueue invocation.
pub(super) enum QueueOp {
    /// Route the faults of `source` (an IoDevice or IoSpace capability with
    /// badge `badge`) to the queue in `slot` (object `queue`), signalling
    /// `notification`.
    Bind {
        slot: SlotId,
        queue: ObjectId,
        source: SlotId,
        badge: u64,
        notification: Target,
    },
    /// Take the oldest record of `queue`.
    Pop { queue: ObjectId },
    /// Answer page request `id` of `queue` with `response`.
    Respond {
        queue: ObjectId,
        id: u64,
        response: iospace::Response,
    },
}

/// Decodes an IoFaultQueue invocation; changes nothing.
#[inline(always)]
pub(super) fn decode(caps: &CapSystem, call: &Call) -> Result<QueueOp, Error> {
    match call.invocation {
        Invocation::IoFaultQueueBind => {
            if call.message.info.extra_caps < 2 {
                return Err(Error::TruncatedMessage);
            }
            let queue = caps
                .lookup_as(call.slot, ObjectKind::IoFaultQueue, Rights::WRITE)?
                .object();
            let source = call.extra_cap(caps, 1)?;
            let badge = caps.lookup(source)?.badge().0;
            let notification = call.notification(caps, 0)?;
            // The kernel's record for the queue: checked here, so perform
            // never leaves the model's route without one.
            crate::io_space::can_bind_queue(queue)?;
            Ok(QueueOp::Bind {
                slot: call.slot,
                queue,
                source,
                badge,
                notification,
            })
        }
        Invocation::IoFaultQueuePop => Ok(QueueOp::Pop {
            queue: caps
                .lookup_as(call.slot, ObjectKind::IoFaultQueue, Rights::READ)?
                .object(),
        }),
        Invocation::IoFaultQueueRespond => {
            crate::io_space::require(crate::iommu_unit::Feature::PageRequests)?;
            let (id, response) = (call.argument(0)?, call.argument(1)?);
            let response =
                iospace::Response::from_number(response).ok_or(Error::InvalidArgument)?;
            Ok(QueueOp::Respond {
                queue: caps.respond_access(call.slot)?,
                id,
                response,
            })
        }
        _ => Err(Error::InvalidInvocation),
    }
}

/// Performs a decoded IoFaultQueue invocation. `Bind` can refuse only in
/// the model's `bind_fault_queue` (`WrongKind`, ..., nothing changed):
/// the kernel's queue record it then takes was checked by decode
/// (`io_space::can_bind_queue`; its answer is still passed on). `Pop`
/// cannot fail. `Respond` refuses an id the queue never issued
/// (`UnknownRequest`) or one answered already (`RequestAnswered`), and
/// changes nothing then.
#[inline(always)]
pub(super) fn perform(caps: &mut CapSystem, op: QueueOp) -> Result<Reply, Error> {
    match op {
        QueueOp::Bind {
            slot,
            queue,
            source,
            badge,
            notification,
        } => {
            let mut sink = objects::SINK;
            caps.bind_fault_queue(source, slot, &mut sink)?;
            crate::io_space::bind_queue(queue, notification, badge)?;
            Ok(Reply::EMPTY)
        }
        QueueOp::Pop { queue } => Ok(match crate::io_space::pop(queue) {
            (Some([a, b, c, d, e, f]), _) => Reply {
                mrs: [a, b, c, d, e, f, 0, 0],
                length: 6,
            },
            (None, _) => Reply::EMPTY,
        }),
        QueueOp::Respond {
            queue,
            id,
            response,
        } => {
            crate::io_space::respond(queue, id, response)?;
            Ok(Reply::EMPTY)
        }
    }
}
