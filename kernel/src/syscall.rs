//! System-call dispatch for user threads: raw registers in, a typed
//! [`Syscall`] decoded, an effect performed, a status out.
//!
//! `Call` on an object capability is an invocation, decoded and performed by
//! [`crate::objects`]. Endpoints and notifications (`Call` on an endpoint,
//! `Send`, `Recv`, `ReplyRecv`, `Signal`, `Wait`) arrive with the rest of the
//! kernel core; until then they answer [`Error::NotSupported`] so a program
//! can tell.

use crate::arch::UserContext;
use crate::mem::Word;
use crate::sched::Threads;
use abi::{Error, MessageInfo, Syscall};

/// What the kernel knows about the calling thread.
pub struct Caller {
    /// Its TCB (physical address).
    pub thread: u64,
    /// Its CSpace root (a kernel-held slot holding a CNode capability).
    pub cspace: caps::SlotId,
    /// Physical address of its IPC buffer (layout: `abi::ipc`).
    pub ipc_buffer: u64,
}

impl Caller {
    // The IPC buffer is a frame the kernel allocated for this thread; word
    // indices are reduced below 64 (512 bytes).
    fn buffer_word(&self, index: usize) -> u64 {
        Word::<u64>::at(self.ipc_buffer).add(index % 64).read()
    }

    fn set_buffer_word(&self, index: usize, value: u64) {
        Word::<u64>::at(self.ipc_buffer)
            .add(index % 64)
            .write(value)
    }

    // The capability pointers `[u32; 3]` start at CAPS_OFFSET of the IPC
    // buffer page; the index is reduced below 3.
    fn extra_cap(&self, index: usize) -> u32 {
        let base = self.ipc_buffer + abi::ipc::CAPS_OFFSET as u64;
        Word::<u32>::at(base).add(index % 3).read()
    }
}

/// Performs `Call` on an object capability: an invocation. The message is
/// copied out of the caller's TCB first, so the invocation may change any
/// TCB, the caller's own included. Out of line: the round trip's fast path
/// ([`handle_thread`]) reaches it too and stays small.
#[inline(never)]
fn invoke(threads: &mut Threads, thread: u64, cspace: caps::SlotId, ipc_buffer: u64) {
    let caller = &Caller {
        thread,
        cspace,
        ipc_buffer,
    };
    let (cap, info_word, registers) = {
        let context = &threads.tcb(caller.thread).context;
        let registers = [2, 3, 4, 5].map(|i| context.syscall_arg(i));
        (context.syscall_arg(0), context.syscall_arg(1), registers)
    };
    // The reply borrows the TCB afresh: the invocation may have changed
    // any TCB, the caller's own included.
    let reply = |threads: &mut Threads, status: u64, info: u64, mrs: [u64; 4]| {
        threads
            .tcb(caller.thread)
            .context
            .set_reply(status, 0, info, mrs);
    };
    let info = match MessageInfo::from_word(info_word) {
        Ok(info) => info,
        Err(e) => return reply(threads, u64::from(e.code()), 0, [0; 4]),
    };
    // The IPC buffer is read only when the message reaches into it: a
    // decoder reads a register or an extra capability only below the
    // length or count it checked (`invocation::Call`), so the rest may stay
    // zero.
    let mut mrs = [
        registers[0],
        registers[1],
        registers[2],
        registers[3],
        0,
        0,
        0,
        0,
    ];
    if info.length > 4 {
        for (i, mr) in mrs.iter_mut().enumerate().skip(4) {
            *mr = caller.buffer_word(i);
        }
    }
    let extra_caps = if info.extra_caps == 0 {
        [0; 3]
    } else {
        [0, 1, 2].map(|i| caller.extra_cap(i))
    };
    let message = crate::invocation::Message {
        cap,
        info,
        mrs,
        extra_caps,
    };
    match crate::invocation::invoke(threads, caller.cspace, &message) {
        Ok(result) => {
            for i in 4..usize::from(result.length).min(8) {
                caller.set_buffer_word(i, result.mrs[i]);
            }
            let info = MessageInfo::new(0, result.length).to_word();
            reply(
                threads,
                0,
                info,
                [result.mrs[0], result.mrs[1], result.mrs[2], result.mrs[3]],
            );
        }
        Err(e) => reply(threads, u64::from(e.code()), 0, [0; 4]),
    }
}

/// Handles the system call of the thread in `caller` (its registers are in
/// its TCB): message passing through [`crate::sched`], invocations through
/// [`crate::invocation`], the rest through [`handle`].
///
/// The round trip's two halves are tried first, in a small frame
/// ([`round_trip_fast`]); everything else, and whatever they cannot carry,
/// goes the general way ([`handle_general`], out of line).
#[inline]
pub fn handle_thread(threads: &mut Threads, caller: &Caller) -> Next {
    match round_trip_fast(threads, caller) {
        Fast::Done => Next::Resume,
        // The out-of-line paths take the caller's fields, not `&Caller`:
        // passed in registers, they need no copy on the stack.
        Fast::Invoke { fast_path: true } => {
            invoke_fast_first(threads, caller.thread, caller.cspace, caller.ipc_buffer)
        }
        Fast::Invoke { fast_path: false } => {
            invoke(threads, caller.thread, caller.cspace, caller.ipc_buffer);
            if crate::testing::seeds::planted(crate::testing::seeds::Seed::ContinueAfterInvocation)
            {
                return Next::Continue;
            }
            Next::Resume
        }
        Fast::General => handle_general(threads, caller.thread),
    }
}

/// An invocation [`round_trip_fast`] found on a capability of a kind with
/// a fast path ([`FAST_PATH_KINDS`]): `Frame.Map` / `Unmap`'s,
/// `IoSpace.Map` / `Unmap`'s and `IoUserTable.Invalidate`'s own fast
/// paths first (the latter as in
/// [`handle_general`]), chosen by the label, then [`invoke`] for whatever
/// they leave. Invocations on every other kind go straight to [`invoke`]
/// and pay none of this (the call and the label tests cost them 9-14
/// instructions when every invocation came here). Out of line: with the
/// label tests inlined into [`handle_thread`], the round trip paid 6-8
/// instructions more on aarch64; inside [`invoke`], the fast paths paid
/// its larger frame (kernel/README.md "Measured", the Frame fast path).
///
/// [`Next::Continue`] when a fast path answered (none of them changes a
/// thread's state), [`Next::Resume`] after [`invoke`].
#[inline(never)]
fn invoke_fast_first(
    threads: &mut Threads,
    thread: u64,
    cspace: caps::SlotId,
    ipc_buffer: u64,
) -> Next {
    use abi::Invocation;
    // The two Frame labels, and the two IoSpace ones, are consecutive:
    // one comparison each.
    const _: () = assert!(Invocation::FrameUnmap as u32 == Invocation::FrameMap as u32 + 1);
    const _: () = assert!(Invocation::IoSpaceUnmap as u32 == Invocation::IoSpaceMap as u32 + 1);
    let label = (threads.tcb(thread).context.syscall_arg(1) >> 32) as u32;
    let answered = if label.wrapping_sub(Invocation::FrameMap as u32) <= 1 {
        crate::invocation::frame_now(threads, thread, cspace, ipc_buffer)
    } else if label.wrapping_sub(Invocation::IoSpaceMap as u32) <= 1 {
        crate::invocation::space_now(threads, thread, cspace, ipc_buffer)
    } else if label == Invocation::IoUserTableInvalidate as u32 {
        crate::invocation::invalidate_now(threads, thread, cspace)
    } else {
        false
    };
    if answered {
        return Next::Continue;
    }
    invoke(threads, thread, cspace, ipc_buffer);
    Next::Resume
}

/// The object kinds with an invocation fast path ([`invoke_fast_first`]),
/// one bit per `caps::ObjectKind` number. A new fast path there adds its
/// kind here, or it is never reached (its invocations then take the
/// general path: right answers, no gain).
const FAST_PATH_KINDS: u64 = 1 << caps::ObjectKind::Frame as u64
    | 1 << caps::ObjectKind::IoSpace as u64
    | 1 << caps::ObjectKind::IoUserTable as u64;

/// What [`round_trip_fast`] found.
enum Fast {
    /// The round trip's half is done.
    Done,
    /// A `Call` (not with the fault label) on a capability that is not an
    /// endpoint: an invocation, as [`handle_general`] would decide after
    /// the same lookup; `fast_path` if the capability's kind has one
    /// ([`FAST_PATH_KINDS`]). The kind is the lookup cache's, which that
    /// lookup has just made current; it only chooses where to start: a
    /// fast path checks the capability again and hands back what it does
    /// not take.
    Invoke {
        /// Whether [`invoke_fast_first`] may take it.
        fast_path: bool,
    },
    /// Anything else: [`handle_general`] decides, nothing changed.
    General,
}

/// A `Call` or `ReplyRecv` on an endpoint that `sched::call_fast` or
/// `sched::reply_recv_fast` completes ([`Fast::Done`]), or a `Call` that is
/// an invocation ([`Fast::Invoke`]); otherwise nothing changed and the
/// general path decides (it repeats these checks, and refuses the fault
/// label with its error).
#[inline(always)]
fn round_trip_fast(threads: &mut Threads, caller: &Caller) -> Fast {
    let context = &threads.tcb(caller.thread).context;
    let (number, cap, info) = (
        context.syscall_number(),
        context.syscall_arg(0),
        context.syscall_arg(1),
    );
    let call = number == Syscall::Call as u64;
    if !call && number != Syscall::ReplyRecv as u64 || info >> 32 == u64::from(abi::FAULT_LABEL) {
        return Fast::General;
    }
    let rights = if call {
        caps::Rights::WRITE
    } else {
        caps::Rights::READ
    };
    let done = match crate::objects::lookup_cached(
        threads,
        caller.thread,
        caller.cspace,
        cap,
        caps::ObjectKind::Endpoint,
        rights,
    ) {
        Ok(endpoint) if call => crate::sched::call_fast(threads, caller.thread, &endpoint),
        Ok(endpoint) => crate::sched::reply_recv_fast(threads, caller.thread, &endpoint),
        // The lookup checks the kind first, whatever the rights.
        Err(Error::WrongKind) if call => {
            let kind = threads.tcb(caller.thread).lookup_cache.kind;
            return Fast::Invoke {
                fast_path: FAST_PATH_KINDS >> (kind & 63) & 1 != 0,
            };
        }
        Err(_) => false,
    };
    if done { Fast::Done } else { Fast::General }
}

/// [`handle_thread`] for every system call the fast path did not complete.
///
/// It reads the caller's CSpace and IPC buffer from its TCB again, where
/// the scheduler loop's handler found both (a thread runs only with both,
/// `sched`; no fast path changes them): passed along, they stayed live
/// across the fast path's calls, which cost the round trip register moves.
#[inline(never)]
fn handle_general(threads: &mut Threads, thread: u64) -> Next {
    let (cspace, ipc_buffer) = {
        let t = threads.tcb(thread);
        (caps::SlotId(t.cspace_slot), t.ipc_buffer)
    };
    let caller = &Caller {
        thread,
        cspace,
        ipc_buffer,
    };
    // The driver's one call after writing its stage-1 entries (issue 13),
    // tested here, out of the scheduler loop's code, so that the other
    // system calls pay one load and one comparison.
    if crate::invocation::invalidate_fast(threads, caller.thread, caller.cspace) {
        return Next::Continue;
    }
    let (number, cap) = {
        let context = &threads.tcb(caller.thread).context;
        (context.syscall_number(), context.syscall_arg(0))
    };
    // The round trip's two halves first (`sched::call_fast`).
    let call = number == Syscall::Call as u64;
    let sends = call || number == Syscall::Send as u64 || number == Syscall::ReplyRecv as u64;
    // Only the kernel sends the fault label (`abi::FAULT_LABEL`), so a fault
    // handler can trust it. (An invocation with it is refused too: no
    // invocation has that label.)
    if sends
        && threads.tcb(caller.thread).context.syscall_arg(1) >> 32 == u64::from(abi::FAULT_LABEL)
    {
        crate::sched::fail(threads, caller.thread, Error::InvalidMessage);
        return Next::Resume;
    }
    if call || number == Syscall::ReplyRecv as u64 {
        let rights = if call {
            caps::Rights::WRITE
        } else {
            caps::Rights::READ
        };
        if let Ok(endpoint) = crate::objects::lookup_cached(
            threads,
            caller.thread,
            caller.cspace,
            cap,
            caps::ObjectKind::Endpoint,
            rights,
        ) {
            let result = if call {
                if crate::sched::call_fast(threads, caller.thread, &endpoint) {
                    return Next::Resume;
                }
                crate::sched::send(threads, caller.thread, &endpoint, true)
            } else {
                if crate::sched::reply_recv_fast(threads, caller.thread, &endpoint) {
                    return Next::Resume;
                }
                crate::sched::receive(threads, caller.thread, &endpoint, true)
            };
            if let Err(e) = result {
                crate::sched::fail(threads, caller.thread, e);
            }
            return Next::Resume;
        }
    }
    let Some(call) = Syscall::from_number(number) else {
        return handle(&mut threads.tcb(caller.thread).context);
    };
    let (kind, rights) = match call {
        Syscall::Call | Syscall::Send => (caps::ObjectKind::Endpoint, caps::Rights::WRITE),
        Syscall::Recv | Syscall::ReplyRecv => (caps::ObjectKind::Endpoint, caps::Rights::READ),
        Syscall::Signal => (caps::ObjectKind::Notification, caps::Rights::WRITE),
        Syscall::Wait => (caps::ObjectKind::Notification, caps::Rights::READ),
        // The null system call without a detour (`handle` answers it the
        // same way).
        Syscall::Yield => {
            threads.tcb(caller.thread).context.set_syscall_result(0, 0);
            return Next::Yield;
        }
        _ => return not_message_passing(threads, caller, call, cap),
    };
    let target =
        crate::objects::lookup_cached(threads, caller.thread, caller.cspace, cap, kind, rights);
    let result = match (call, target) {
        // `Call` on anything but an endpoint is an invocation.
        (Syscall::Call, Err(Error::WrongKind)) => {
            invoke(threads, thread, cspace, ipc_buffer);
            return Next::Resume;
        }
        (_, Err(e)) => Err(e),
        (Syscall::Call, Ok(t)) => crate::sched::send(threads, caller.thread, &t, true),
        (Syscall::Send, Ok(t)) => crate::sched::send(threads, caller.thread, &t, false),
        (Syscall::Recv, Ok(t)) => crate::sched::receive(threads, caller.thread, &t, false),
        (Syscall::ReplyRecv, Ok(t)) => crate::sched::receive(threads, caller.thread, &t, true),
        (Syscall::Signal, Ok(t)) => {
            let done = crate::sched::signal(threads, &t);
            if done.is_ok() {
                threads
                    .tcb(caller.thread)
                    .context
                    .set_reply(0, 0, 0, [0; 4]);
            }
            done
        }
        (_, Ok(t)) => crate::sched::wait(threads, caller.thread, &t),
    };
    if let Err(e) = result {
        crate::sched::fail(threads, caller.thread, e);
    }
    Next::Resume
}

/// The system calls of `caller` that pass no message: those that check a
/// capability (`DebugNameThread`, `DebugPutChar`, `DebugHalt`) here, the
/// rest through [`handle`]. Out of line, so that the message-passing path
/// above stays as small as it was (measured: inline, the IPC round trip
/// on aarch64 cost 13 instructions more).
#[inline(never)]
fn not_message_passing(threads: &mut Threads, caller: &Caller, call: Syscall, cap: u64) -> Next {
    match call {
        Syscall::DebugNameThread => {
            name_thread(threads, caller, cap);
            Next::Resume
        }
        Syscall::DebugPutChar | Syscall::DebugHalt => console(threads, caller, call, cap),
        Syscall::DebugCapDump => {
            // The dump reads every TCB, the caller's too, so it runs with
            // no borrow of the caller's registers live (not in `handle`).
            #[cfg(feature = "cap-dump")]
            let status = {
                crate::testing::cap_dump::dump(threads, crate::testing::cap_dump::Moment::Call);
                0
            };
            #[cfg(not(feature = "cap-dump"))]
            let status = u64::from(Error::NotSupported.code());
            threads
                .tcb(caller.thread)
                .context
                .set_syscall_result(status, 0);
            Next::Resume
        }
        _ => handle(&mut threads.tcb(caller.thread).context),
    }
}

/// `DebugPutChar` and `DebugHalt` through the Console capability `cap`:
/// printing takes its write right, halting the write and the grant right.
/// Without them the call answers the lookup's error and the console is
/// untouched.
fn console(threads: &mut Threads, caller: &Caller, call: Syscall, cap: u64) -> Next {
    let rights = if call == Syscall::DebugHalt {
        caps::Rights::WRITE | caps::Rights::GRANT
    } else {
        caps::Rights::WRITE
    };
    let argument = threads.tcb(caller.thread).context.syscall_arg(2);
    let status = match console_held(caller.cspace, cap, rights) {
        Ok(_) if call == Syscall::DebugHalt => {
            // The final state, for `cargo xtask run --cap-dump` (it reads
            // every TCB, the caller's too: no borrow of one is live here).
            #[cfg(feature = "cap-dump")]
            crate::testing::cap_dump::dump(threads, crate::testing::cap_dump::Moment::Halt);
            return Next::Halt(argument as u32);
        }
        Ok(_) => {
            crate::arch::console_write(&[argument as u8]);
            0
        }
        Err(e) => u64::from(e.code()),
    };
    threads
        .tcb(caller.thread)
        .context
        .set_reply(status, 0, 0, [0; 4]);
    Next::Resume
}

/// Whether `cap` in `cspace` names a Console capability that holds
/// `rights` (the Console has no memory, which `objects::lookup` answers
/// `DeadObject`). Errors: `LookupFailed` (no such slot), the model's
/// lookup errors (`EmptySlot`, `WrongKind`, `InsufficientRights`).
fn console_held(cspace: caps::SlotId, cap: u64, rights: caps::Rights) -> Result<(), Error> {
    let caps = crate::objects::CAPS
        .get()
        .ok_or(Error::NotSupported)?
        .lock();
    let index = crate::objects::slot_index(cap).map_err(|_| Error::LookupFailed)?;
    let slot = caps
        .resolve(cspace, index)
        .map_err(|_| Error::LookupFailed)?;
    caps.lookup_as(slot, caps::ObjectKind::Console, rights)?;
    Ok(())
}

/// `DebugNameThread`: the Tcb capability `cap` (write right) gets the name
/// in message registers 0..4.
fn name_thread(threads: &mut Threads, caller: &Caller, cap: u64) {
    let context = &threads.tcb(caller.thread).context;
    let mut name = [0u8; 32];
    for (i, chunk) in name.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&context.syscall_arg(2 + i).to_le_bytes());
    }
    let status = match crate::objects::lookup(
        caller.cspace,
        cap,
        caps::ObjectKind::Tcb,
        caps::Rights::WRITE,
    ) {
        Ok(target) => {
            crate::sched::set_name(threads, target.paddr, name);
            0
        }
        Err(e) => u64::from(e.code()),
    };
    threads
        .tcb(caller.thread)
        .context
        .set_reply(status, 0, 0, [0; 4]);
}

pub use crate::sched::Next;

/// Decodes and performs the system call in `context`, writing its result
/// registers. Never panics: every input gets a status code.
pub fn handle(context: &mut UserContext) -> Next {
    let Some(call) = Syscall::from_number(context.syscall_number()) else {
        context.set_syscall_result(u64::from(Error::InvalidSyscall.code()), 0);
        return Next::Resume;
    };
    match call {
        Syscall::DebugCheckAbstraction => {
            #[cfg(feature = "fuzz-checks")]
            let status = match crate::testing::abstraction::check() {
                Ok(()) => 0,
                Err(e) => u64::from(e.code()),
            };
            #[cfg(not(feature = "fuzz-checks"))]
            let status = u64::from(Error::NotSupported.code());
            context.set_syscall_result(status, 0);
            Next::Resume
        }
        Syscall::Yield => {
            context.set_syscall_result(0, 0);
            Next::Yield
        }
        Syscall::Call
        | Syscall::Send
        | Syscall::Recv
        | Syscall::ReplyRecv
        | Syscall::Signal
        | Syscall::Wait
        | Syscall::DebugPutChar
        | Syscall::DebugHalt
        | Syscall::DebugNameThread
        | Syscall::DebugCapDump => {
            // Each has its own path (`handle_thread`).
            context.set_syscall_result(u64::from(Error::NotSupported.code()), 0);
            Next::Resume
        }
    }
}
