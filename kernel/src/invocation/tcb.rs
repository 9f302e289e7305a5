//! Tcb invocations: `Configure`, `SetPriority`, `WriteRegisters`,
//! `Resume`, `Suspend`, `SetFaultHandler`. Every capability a call names is
//! resolved under the one capability lock the decode holds.

use super::{Call, Reply};
use crate::objects::{self, CapSystem, Root};
use crate::sched::{Target, Threads};
use abi::{Error, Invocation};
use caps::{Badge, ObjectId, ObjectKind, Rights, SlotId};

/// A decoded Tcb invocation on the thread `(object, physical address)`.
pub(super) struct TcbOp {
    thread: (ObjectId, u64),
    action: Action,
}

enum Action {
    /// Start at `pc` with stack `sp` and first argument `first`.
    WriteRegisters {
        pc: u64,
        sp: u64,
        first: u64,
    },
    SetPriority(u8),
    /// The thread is configured (address space, CSpace, IPC buffer).
    Resume,
    Suspend,
    SetFaultHandler(Target),
    Configure(Configure),
}

/// What `Tcb.Configure` found: every capability resolved, the kernel slot
/// for the thread's CSpace capability free.
struct Configure {
    root: Root,
    fault_endpoint: Option<Target>,
    /// The CNode capability the thread's CSpace copies.
    cnode: SlotId,
    /// The empty kernel-held slot that copy goes into.
    kernel_slot: SlotId,
    /// The IPC buffer Frame (object, physical address).
    buffer: (ObjectId, u64),
}

/// Decodes a Tcb invocation; changes nothing. Every one needs the write
/// right on the Tcb capability.
#[inline(always)]
pub(super) fn decode(caps: &CapSystem, threads: &mut Threads, call: &Call) -> Result<TcbOp, Error> {
    let cap = *caps.lookup(call.slot)?;
    let action = match call.invocation {
        Invocation::TcbConfigure => {
            if !cap.rights().contains(Rights::WRITE) {
                return Err(Error::InsufficientRights);
            }
            if call.message.info.extra_caps < 2 {
                return Err(Error::TruncatedMessage);
            }
            let (tcb, _) = objects::memory_of(caps, call.slot)?;
            let configure = decode_configure(caps, call, (cap.object(), tcb))?;
            return Ok(TcbOp {
                thread: (cap.object(), tcb),
                action: Action::Configure(configure),
            });
        }
        Invocation::TcbWriteRegisters
        | Invocation::TcbSetPriority
        | Invocation::TcbResume
        | Invocation::TcbSuspend
        | Invocation::TcbSetFaultHandler => call.invocation,
        _ => return Err(Error::InvalidInvocation),
    };
    if !cap.rights().contains(Rights::WRITE) {
        return Err(Error::InsufficientRights);
    }
    let paddr = caps
        .object(cap.object())
        .and_then(|o| o.memory())
        .map(|(p, _)| p)
        .ok_or(Error::DeadObject)?;
    let action = match action {
        Invocation::TcbWriteRegisters => {
            let (pc, sp, first) = (call.argument(0)?, call.argument(1)?, call.argument(2)?);
            let top = crate::arch::paging::USER_TOP;
            if pc >= top || sp > top {
                return Err(Error::InvalidArgument);
            }
            Action::WriteRegisters { pc, sp, first }
        }
        Invocation::TcbSetPriority => Action::SetPriority(
            u8::try_from(call.argument(0)?).map_err(|_| Error::InvalidArgument)?,
        ),
        Invocation::TcbResume if !crate::sched::configured(threads, paddr) => {
            return Err(Error::NotConfigured);
        }
        Invocation::TcbResume => {
            crate::sched::registry_room(&[(cap.object(), paddr)])?;
            Action::Resume
        }
        Invocation::TcbSuspend => Action::Suspend,
        // Both capabilities resolved under the one lock held since the
        // TCB's lookup.
        _ => {
            let endpoint = objects::lookup_in(
                caps,
                call.cspace,
                call.argument(0)?,
                ObjectKind::Endpoint,
                Rights::WRITE,
            )?;
            crate::sched::registry_room(&[
                (cap.object(), paddr),
                (endpoint.object, endpoint.paddr),
            ])?;
            Action::SetFaultHandler(endpoint)
        }
    };
    Ok(TcbOp {
        thread: (cap.object(), paddr),
        action,
    })
}

/// `Tcb.Configure`'s capabilities, in the order their errors are checked,
/// then the kernel's room: a kernel slot for the CSpace copy and registry
/// entries for the thread `thread`, its buffer and its fault endpoint.
fn decode_configure(
    caps: &CapSystem,
    call: &Call,
    thread: (ObjectId, u64),
) -> Result<Configure, Error> {
    let root = objects::root_of(caps, call.extra_cap(caps, 1)?)?;
    // The fault endpoint (0: none), resolved under this lock.
    let fault_endpoint = match call.argument(0)? {
        0 => None,
        cptr => Some(objects::lookup_in(
            caps,
            call.cspace,
            cptr,
            ObjectKind::Endpoint,
            Rights::WRITE,
        )?),
    };
    // The thread's CSpace: a copy of the CNode capability in a kernel-held
    // slot (revoking the user's capability revokes it).
    let cnode = call.extra_cap(caps, 0)?;
    caps.lookup_as(cnode, ObjectKind::CNode, Rights::NONE)?;
    let buffer_slot = call.extra_cap(caps, 2)?;
    // The kernel reads and writes message registers there.
    let buffer_object = caps
        .lookup_as(buffer_slot, ObjectKind::Frame, Rights::READ | Rights::WRITE)?
        .object();
    let (buffer, buffer_bits) = objects::memory_of(caps, buffer_slot)?;
    if buffer_bits != 12 {
        return Err(Error::InvalidSize);
    }
    // The kernel reads and writes the buffer through its direct map, which
    // need not cover device memory (nor should a message land in device
    // registers).
    if crate::devmem::is_device_memory(buffer) {
        return Err(Error::DeviceMemory);
    }
    let kernel_slot = (2..objects::ROOT_SLOTS)
        .map(SlotId)
        .find(|&s| caps.lookup(s).is_err())
        .ok_or(Error::ObjectTableFull)?;
    let endpoint = fault_endpoint
        .as_ref()
        .map_or(thread, |e| (e.object, e.paddr));
    crate::sched::registry_room(&[thread, (buffer_object, buffer), endpoint])?;
    Ok(Configure {
        root,
        fault_endpoint,
        cnode,
        kernel_slot,
        buffer: (buffer_object, buffer),
    })
}

/// Performs a decoded Tcb invocation. Registering objects with the
/// scheduler (`Resume`, `SetFaultHandler`, `Configure`) finds the room
/// decode checked (`sched::registry_room`), so only `Configure`'s copy of
/// the CNode capability can refuse: a `caps` operation, which changes
/// nothing when it refuses; the address-space root is recorded only after
/// it. The scheduler's answers are still passed on (and the copy deleted
/// again), should a later change break decode's check.
#[inline(always)]
pub(super) fn perform(
    caps: &mut CapSystem,
    threads: &mut Threads,
    op: TcbOp,
) -> Result<Reply, Error> {
    let (object, paddr) = op.thread;
    match op.action {
        Action::WriteRegisters { pc, sp, first } => {
            crate::sched::write_registers(threads, paddr, pc, sp, first)
        }
        Action::SetPriority(priority) => crate::sched::set_priority(threads, paddr, priority),
        Action::Resume => crate::sched::resume(threads, object, paddr)?,
        Action::Suspend => crate::sched::suspend(threads, paddr),
        Action::SetFaultHandler(endpoint) => {
            crate::sched::set_fault_handler(threads, op.thread, &endpoint)?
        }
        Action::Configure(configure) => perform_configure(caps, threads, op.thread, configure)?,
    }
    Ok(Reply::EMPTY)
}

fn perform_configure(
    caps: &mut CapSystem,
    threads: &mut Threads,
    thread: (ObjectId, u64),
    configure: Configure,
) -> Result<(), Error> {
    let mut sink = objects::SINK;
    caps.mint(
        configure.cnode,
        configure.kernel_slot,
        Rights::ALL,
        Badge(0),
    )?;
    objects::register_root(configure.root);
    match crate::sched::set_cspace_and_buffer(
        threads,
        thread,
        configure.kernel_slot.0,
        configure.buffer,
    ) {
        Ok(0) => {}
        // The root task's CSpace is its CNode's original capability, not a
        // kernel-held copy: it stays.
        Ok(old) if old == objects::ROOT_CNODE_SLOT.0 => {}
        Ok(old) => {
            let _ = caps.delete(SlotId(old), &mut sink);
        }
        Err(e) => {
            let _ = caps.delete(configure.kernel_slot, &mut sink);
            return Err(e);
        }
    }
    if let Some(endpoint) = configure.fault_endpoint {
        crate::sched::set_fault_handler(threads, thread, &endpoint)?;
    }
    crate::sched::set_address_space(threads, thread.1, configure.root.paddr);
    Ok(())
}
