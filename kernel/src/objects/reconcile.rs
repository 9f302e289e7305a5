//! After a delete or revoke: the kernel state of objects that died is
//! dropped before the operation returns, so nothing is left pointing at
//! memory that can be retyped (kernel/README.md, "What refers to what").

use super::effects::{Removed, SINK};
use super::{ROOT_CNODE_SLOT, Storage};
use crate::sched::Threads;
use caps::{Caps, ObjectKind, SlotId};

/// Whether `object` is alive, of `kind`, at `paddr` (a kernel record of it
/// is still about the same object).
pub(super) fn alive(
    caps: &Caps<Storage>,
    object: caps::ObjectId,
    kind: ObjectKind,
    paddr: u64,
) -> bool {
    caps.object(object)
        .is_some_and(|o| o.kind() == kind && o.memory().map(|(p, _)| p) == Some(paddr))
}

/// After a delete or revoke that removed `removed` (what the operation's
/// sink noted): drop the kernel state of objects that died. With no object
/// destroyed every record the kernel keeps still names a live object, so
/// only a removed CNode capability (a thread's CSpace) can leave work.
pub fn reconcile(caps: &mut Caps<Storage>, threads: &mut Threads, removed: Removed) {
    if !removed.destroyed {
        if removed.cnode {
            drop_lost_cspaces(caps, threads);
        }
        return;
    }
    let freed = crate::sched::reconcile(threads, |object, kind, paddr| {
        alive(caps, object, kind, paddr)
    });
    crate::sched::reconcile_irqs(
        |handler| {
            caps.object(handler)
                .is_some_and(|o| o.kind() == ObjectKind::IrqHandler)
        },
        |n| alive(caps, n.object, ObjectKind::Notification, n.paddr),
        |device, rid| {
            caps.object(device).is_some_and(
                |o| matches!(o.state(), caps::ObjectState::IoDevice { rid: r, .. } if *r == rid),
            )
        },
    );
    crate::io_space::reconcile(
        |object, kind| caps.object(object).is_some_and(|o| o.kind() == kind),
        |n| alive(caps, n.object, ObjectKind::Notification, n.paddr),
    );
    drop_lost_cspaces(caps, threads);
    // Kernel-held CSpace capabilities of threads that died (the root task's
    // is its CNode's original, never freed here).
    for slot in freed.into_iter().filter(|&s| s != ROOT_CNODE_SLOT.0) {
        let mut sink = SINK;
        if let Err(e) = caps.delete(SlotId(slot), &mut sink) {
            crate::println!(
                "[caps] a dead thread's CSpace capability stays in kernel slot {slot}: {e}"
            );
        }
    }
    super::page_tables::reconcile(caps, threads);
}

/// Threads whose kernel-held CSpace capability went (their CNode capability
/// was revoked): they keep no CSpace, and the slot they named may now hold
/// another thread's.
fn drop_lost_cspaces(caps: &Caps<Storage>, threads: &mut Threads) {
    crate::sched::drop_lost_cspaces(threads, |slot| {
        caps.lookup(SlotId(slot))
            .is_ok_and(|c| c.kind() == ObjectKind::CNode)
    });
}
