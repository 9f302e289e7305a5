//! Capability invocations: decode, then perform, one file per object kind.
//!
//! Following seL4 (`src/object/objecttype.c`, `tcb.c`), every invocation
//! is two steps under one hold of the capability lock:
//!
//! - `decode` reads the message and checks it against the capabilities
//!   (every capability resolved, of the right kind and rights; every
//!   argument parsed and in range; every kernel resource the operation
//!   will need available) and **changes nothing**. It returns a typed
//!   operation carrying what it resolved, or the `abi::Error` of the first
//!   check that failed, in the order the checks are documented.
//! - `perform` applies that operation and builds the reply.
//!
//! What a perform may still answer, and why (nothing else reaches it):
//! - an error of the `caps` model's own operation (`mint`, `map_io`,
//!   `attach_device`, ...). Each model operation checks everything before
//!   it changes anything (model-checked, `caps/README.md`), so such an
//!   error means nothing changed; decode does not repeat those checks.
//! - `ObjectTableFull` from the scheduler's object registry (`sched`) when
//!   a thread, endpoint, buffer or notification is registered: the
//!   registry is the scheduler's and has no check apart from the change.
//! - `IommuTimeout`, the one hardware failure: an IOMMU invalidation that
//!   failed or timed out (its devices were left blocked, `io_space`);
//!   [`invoke`] turns it into the invocation's error whatever performed.
//!
//! The invocation where a perform has two steps that can each refuse,
//! and what the second's refusal leaves, is listed on its `perform`.
//! Each invocation's arguments and errors are documented once, in
//! `abi::Invocation`.
//!
//! Dispatch is on the kind of the invoked capability; a label of another
//! kind answers `InvalidInvocation`.

mod cnode;
mod fault_queue;
mod frame;
pub use frame::frame_now;
mod io_device;
mod io_space;
pub use io_space::{invalidate_fast, invalidate_now, space_now};
mod irq;
mod page_table;
mod tcb;
mod untyped;

use crate::objects::{self, CapSystem, slot_index};
use crate::sched::Target;
use abi::{Error, Invocation, MessageInfo};
use caps::{ObjectKind, Rights, SlotId};

/// An invocation's message as the caller sent it.
pub struct Message {
    /// The invoked capability pointer (index in the caller's CSpace).
    pub cap: u64,
    /// Label, length, extra caps.
    pub info: MessageInfo,
    /// Message registers 0..8 (4..8 from the IPC buffer).
    pub mrs: [u64; 8],
    /// Extra capability pointers (from the IPC buffer).
    pub extra_caps: [u32; 3],
}

/// What an invocation answers: message registers 0..8 and how many are set.
pub struct Reply {
    /// Message registers.
    pub mrs: [u64; 8],
    /// How many are meaningful.
    pub length: u8,
}

impl Reply {
    /// No message registers.
    const EMPTY: Reply = Reply {
        mrs: [0; 8],
        length: 0,
    };
}

/// What every decoder reads: the caller's CSpace, the invoked capability's
/// slot and kind, the label and the message.
struct Call<'a> {
    cspace: SlotId,
    slot: SlotId,
    kind: ObjectKind,
    invocation: Invocation,
    message: &'a Message,
}

impl Call<'_> {
    /// Message register `index`. Errors: `TruncatedMessage`.
    #[inline(always)]
    fn argument(&self, index: usize) -> Result<u64, Error> {
        if index >= usize::from(self.message.info.length) {
            return Err(Error::TruncatedMessage);
        }
        Ok(self.message.mrs[index])
    }

    /// The slot message register `index` names in the caller's CSpace.
    /// Errors: `TruncatedMessage`, `InvalidSlot` (not a slot index), the
    /// model's resolve errors.
    #[inline]
    fn slot_argument(&self, caps: &CapSystem, index: usize) -> Result<SlotId, Error> {
        let slot = slot_index(self.argument(index)?)?;
        Ok(caps.resolve(self.cspace, slot)?)
    }

    /// The Notification (write right) extra capability `index` names,
    /// looked up as `Signal` looks it up (the caller checked the message
    /// has that many caps). Errors: the lookup's (`objects::lookup`).
    #[inline]
    fn notification(&self, caps: &CapSystem, index: usize) -> Result<Target, Error> {
        objects::lookup_in(
            caps,
            self.cspace,
            u64::from(self.message.extra_caps[index]),
            ObjectKind::Notification,
            Rights::WRITE,
        )
    }

    /// Extra capability `index` of the message, resolved in the caller's
    /// CSpace. Errors: `TruncatedMessage`, `LookupFailed`.
    #[inline(always)]
    fn extra_cap(&self, caps: &CapSystem, index: usize) -> Result<SlotId, Error> {
        if usize::from(self.message.info.extra_caps) <= index {
            return Err(Error::TruncatedMessage);
        }
        caps.resolve(self.cspace, self.message.extra_caps[index])
            .map_err(|_| Error::LookupFailed)
    }
}

/// What an invocation's fast path (`space_now`) reads of a `Call`: the
/// invoked capability pointer, the message info and message registers 0
/// and 1; `None` for another system call or a malformed message info (the
/// general path answers those). `frame_now` keeps its own reads: through
/// these helpers `Frame.Map` + `Unmap` cost 19 instructions more on
/// aarch64 (kernel/README.md, the IoSpace fast path).
struct FastCall {
    cap: u64,
    message: MessageInfo,
    mrs: [u64; 2],
}

/// [`FastCall`] from `thread`'s saved registers.
#[inline(always)]
fn fast_call(threads: &mut crate::sched::Threads, thread: u64) -> Option<FastCall> {
    let context = &threads.tcb(thread).context;
    if context.syscall_number() != abi::Syscall::Call as u64 {
        return None;
    }
    Some(FastCall {
        cap: context.syscall_arg(0),
        message: MessageInfo::from_word(context.syscall_arg(1)).ok()?,
        mrs: [context.syscall_arg(2), context.syscall_arg(3)],
    })
}

/// The first extra capability pointer of the message in the IPC buffer at
/// `ipc_buffer`, as `syscall::invoke` reads it (a kernel-allocated frame).
#[inline(always)]
fn first_extra_cap(ipc_buffer: u64) -> u32 {
    crate::mem::Word::<u32>::at(ipc_buffer + abi::ipc::CAPS_OFFSET as u64).read()
}

/// A fast path's answer to `thread`: no message registers on success, the
/// error's code otherwise, as the general path answers.
#[inline(always)]
fn fast_reply<T>(threads: &mut crate::sched::Threads, thread: u64, result: Result<T, Error>) {
    let reply = match result {
        Ok(_) => (0, MessageInfo::new(0, 0).to_word()),
        Err(e) => (u64::from(e.code()), 0),
    };
    threads
        .tcb(thread)
        .context
        .set_reply(reply.0, 0, reply.1, [0; 4]);
}

/// Decodes and performs one capability invocation for a thread whose
/// CSpace root is `cspace`. Never panics on user input. An IOMMU
/// invalidation that failed or timed out on the way fails it with
/// `IommuTimeout` (its devices were left blocked, `io_space`).
pub fn invoke(
    threads: &mut crate::sched::Threads,
    cspace: SlotId,
    message: &Message,
) -> Result<Reply, Error> {
    crate::io_space::forget_failure();
    let result = decode_and_perform(threads, cspace, message);
    crate::io_space::take_failure().map_or(result, Err)
}

/// [`invoke`] under the capability lock: the invoked capability's kind
/// picks the object kind's decode, whose operation its perform applies.
fn decode_and_perform(
    threads: &mut crate::sched::Threads,
    cspace: SlotId,
    message: &Message,
) -> Result<Reply, Error> {
    let Some(mut caps) = objects::caps_to_invoke() else {
        return Err(Error::NotSupported);
    };
    let index = slot_index(message.cap).map_err(|_| Error::LookupFailed)?;
    let slot = caps
        .resolve(cspace, index)
        .map_err(|_| Error::LookupFailed)?;
    let kind = caps.lookup(slot)?.kind();
    let invocation = Invocation::from_label(message.info.label).ok_or(Error::InvalidInvocation)?;
    // Cached lookups (`objects::lookup_cached`) hold a capability's kind,
    // rights, object, its memory and badge, by CSpace and pointer.
    // Frame invocations (`Map`, `Unmap`: page tables and the mapping a
    // Frame capability copy records) and `IoSpace.Map` and `Unmap` (a
    // Frame capability's IO mapping, its place on the IoSpace's list and
    // the IPA index) change none of them; every other invocation makes
    // them stale. A thread's next `Call` then still finds its capability
    // in the cache (a miss cost 87-90 instructions per call,
    // kernel/README.md "Measured").
    let keeps_lookups = kind == ObjectKind::Frame
        || kind == ObjectKind::IoSpace
            && matches!(
                invocation,
                Invocation::IoSpaceMap | Invocation::IoSpaceUnmap
            );
    if !keeps_lookups {
        objects::invalidate_lookups();
    }
    let call = Call {
        cspace,
        slot,
        kind,
        invocation,
        message,
    };
    let caps = &mut *caps;
    match kind {
        ObjectKind::Untyped => untyped::perform(caps, threads, untyped::decode(caps, &call)?),
        ObjectKind::CNode => cnode::perform(caps, threads, cnode::decode(caps, &call)?),
        ObjectKind::Tcb => {
            let op = tcb::decode(caps, threads, &call)?;
            tcb::perform(caps, threads, op)
        }
        ObjectKind::Frame => frame::perform(caps, frame::decode(caps, &call)?),
        ObjectKind::PageTable => Ok(page_table::perform(page_table::decode(caps, &call)?)),
        ObjectKind::IrqControl | ObjectKind::IrqHandler => {
            irq::perform(caps, irq::decode(caps, &call)?)
        }
        ObjectKind::IommuControl | ObjectKind::IoDevice | ObjectKind::IoPasid => {
            io_device::perform(caps, io_device::decode(caps, &call)?)
        }
        ObjectKind::IoSpace | ObjectKind::IoUserTable => {
            io_space::perform(caps, io_space::decode(caps, &call)?)
        }
        ObjectKind::IoFaultQueue => fault_queue::perform(caps, fault_queue::decode(caps, &call)?),
        ObjectKind::Endpoint | ObjectKind::Notification | ObjectKind::Console => {
            Err(Error::InvalidInvocation)
        }
    }
}
