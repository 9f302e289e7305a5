//! Frame invocations: `Map` into a CPU address space, `Unmap` (a CPU or an
//! IO mapping).

use super::{Call, Reply};
use crate::objects::{self, CapSystem, Root};
use crate::sched::Threads;
use abi::{Error, Invocation};
use caps::{Rights, SlotId};

/// A decoded Frame invocation on the Frame capability `frame`.
pub(super) enum FrameOp {
    /// Map at `vaddr` of the address space `root`, whose leaf (the entry
    /// at physical address `leaf`) is free and every table above it
    /// present.
    Map {
        frame: SlotId,
        root: Root,
        vaddr: u64,
        leaf: u64,
        rights: Rights,
        execute: bool,
        /// Device memory or RAM: decided here once, applied by the sink.
        memory: crate::vspace::Memory,
    },
    /// Remove the CPU mapping (`cpu`) or the IO mapping this copy holds.
    Unmap { frame: SlotId, cpu: bool },
}

/// Decodes a Frame invocation; changes nothing.
#[inline(always)]
pub(super) fn decode(caps: &CapSystem, call: &Call) -> Result<FrameOp, Error> {
    match call.invocation {
        Invocation::FrameMap => {
            let vspace = call.extra_cap(caps, 0)?;
            decode_map(
                caps,
                call.slot,
                vspace,
                call.argument(0)?,
                call.argument(1)?,
            )
        }
        Invocation::FrameUnmap => Ok(FrameOp::Unmap {
            frame: call.slot,
            cpu: caps.lookup(call.slot)?.cpu_mapping().is_some(),
        }),
        _ => Err(Error::InvalidInvocation),
    }
}

/// `Frame.Map` of the Frame capability in `frame` into the address space
/// whose root capability is in `vspace`, at `vaddr` with the rights and
/// execute bits `bits`: the checks after the message's, in the order
/// `abi::Invocation::FrameMap` documents. Changes nothing.
#[inline(always)]
fn decode_map(
    caps: &CapSystem,
    frame: SlotId,
    vspace: SlotId,
    vaddr: u64,
    bits: u64,
) -> Result<FrameOp, Error> {
    let rights = Rights::from_bits_truncate((bits & 3) as u8);
    let execute = bits & 4 != 0;
    if execute && rights.contains(Rights::WRITE) {
        return Err(Error::InvalidRights);
    }
    let root = objects::root_of(caps, vspace)?;
    let (paddr, size_bits) = objects::memory_of(caps, frame)?;
    let memory = crate::devmem::memory_type(paddr);
    if execute && memory == crate::vspace::Memory::Device {
        return Err(Error::DeviceMemory);
    }
    let leaf = crate::vspace::can_map(root.paddr, vaddr, size_bits).map_err(|e| match e {
        crate::vspace::MapError::MissingTable(_) => Error::MissingPageTable,
        crate::vspace::MapError::BadAddress(_) => Error::InvalidAddress,
        _ => Error::AddressInUse,
    })?;
    Ok(FrameOp::Map {
        frame,
        root,
        vaddr,
        leaf,
        rights,
        execute,
        memory,
    })
}

/// Performs a decoded Frame invocation. The model's `map_frame` may still
/// refuse (`AlreadyMapped`: this copy holds a mapping; `InsufficientRights`)
/// and `unmap_frame` / `unmap_io` (`NotMapped`), having changed nothing; a
/// new address-space root stays recorded as one.
#[inline(always)]
pub(super) fn perform(caps: &mut CapSystem, op: FrameOp) -> Result<Reply, Error> {
    let mut sink = objects::SINK;
    match op {
        FrameOp::Map {
            frame,
            root,
            vaddr,
            leaf,
            rights,
            execute,
            memory,
        } => {
            objects::register_root(root);
            sink.execute = execute;
            sink.leaf = leaf;
            sink.memory = Some(memory);
            caps.map_frame(frame, root.paddr, vaddr, rights, &mut sink)?;
        }
        FrameOp::Unmap { frame, cpu: true } => caps.unmap_frame(frame, &mut sink)?,
        FrameOp::Unmap { frame, cpu: false } => caps.unmap_io(frame, &mut sink)?,
    }
    Ok(Reply::EMPTY)
}

/// `Frame.Map` and `Frame.Unmap` of a CPU mapping ahead of the general
/// invocation path (issue 13: the pair cost 1,229 / 1,140 instructions,
/// half of it the general path's message, `Reply`, IOMMU failure record
/// and second resolution of the invoked capability). A `Call` of `thread`
/// (IPC buffer at `ipc_buffer`) whose label is one of them is answered
/// here from the registers and the invoked capability's slot in the
/// thread's lookup cache (`objects::cached_slot`), under the capability
/// lock without bumping the generation (as `decode_and_perform` takes it
/// for a Frame). `true` once answered; `false`, having changed nothing,
/// for every other call and whenever anything is unusual (a stale cache,
/// a short message, any refusal of decode, an IO mapping), which the
/// general path then answers with its own error: the checks made are
/// decode's own ([`decode_map`]) and the model's (`map_frame`,
/// `unmap_frame`), whose refusal changes nothing and is answered as the
/// general path answers it.
///
/// `Map` writes one empty leaf and invalidates nothing, so it skips the
/// IOMMU failure record; `Unmap` of a CPU mapping may invalidate the
/// IOTLB of devices bound to the VSpace (SVA), so it keeps it when SVA is
/// built (`io_space::CPU_UNMAP_MAY_INVALIDATE`).
///
/// The caller (`syscall::invoke_fast_first`) has tested the label; this
/// checks the rest.
#[inline(never)]
pub fn frame_now(threads: &mut Threads, thread: u64, cspace: SlotId, ipc_buffer: u64) -> bool {
    let context = &threads.tcb(thread).context;
    if context.syscall_number() != abi::Syscall::Call as u64 {
        return false;
    }
    let (cap, info, vaddr, bits) = (
        context.syscall_arg(0),
        context.syscall_arg(1),
        context.syscall_arg(2),
        context.syscall_arg(3),
    );
    let Ok(message) = abi::MessageInfo::from_word(info) else {
        return false;
    };
    let map = message.label == Invocation::FrameMap as u32;
    if map && (message.length < 2 || message.extra_caps == 0) {
        return false;
    }
    let Some(caps) = objects::CAPS.get() else {
        return false;
    };
    let mut caps = caps.lock();
    let Some(frame) =
        objects::cached_slot(&caps, threads, thread, cspace, cap, caps::ObjectKind::Frame)
    else {
        return false;
    };
    let result = if map {
        // The first extra capability pointer, as `syscall::invoke` reads
        // it (a kernel-allocated frame).
        let pointer = crate::mem::Word::<u32>::at(ipc_buffer + abi::ipc::CAPS_OFFSET as u64).read();
        let Ok(vspace) = caps.resolve(cspace, pointer) else {
            return false;
        };
        let Ok(op) = decode_map(&caps, frame, vspace, vaddr, bits) else {
            return false;
        };
        perform(&mut caps, op)
    } else {
        // Only an SVA invalidation can fail here; without SVA built there
        // is none, and no failure record to keep.
        let record = crate::io_space::CPU_UNMAP_MAY_INVALIDATE;
        if record {
            crate::io_space::forget_failure();
        }
        // The model refuses a copy without a CPU mapping (`NotMapped`,
        // nothing changed): the general path then unmaps its IO mapping
        // or answers.
        if perform(&mut caps, FrameOp::Unmap { frame, cpu: true }).is_err() {
            return false;
        }
        drop(caps);
        match record.then(crate::io_space::take_failure).flatten() {
            Some(error) => Err(error),
            None => Ok(Reply::EMPTY),
        }
    };
    let reply = match result {
        Ok(_) => (0, abi::MessageInfo::new(0, 0).to_word()),
        Err(e) => (u64::from(e.code()), 0),
    };
    threads
        .tcb(thread)
        .context
        .set_reply(reply.0, 0, reply.1, [0; 4]);
    true
}
