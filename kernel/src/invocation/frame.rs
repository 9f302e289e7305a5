//! Frame invocations: `Map` into a CPU address space, `Unmap` (a CPU or an
//! IO mapping).

use super::{Call, Reply};
use crate::objects::{self, CapSystem, Root};
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
            let vaddr = call.argument(0)?;
            let bits = call.argument(1)?;
            let rights = Rights::from_bits_truncate((bits & 3) as u8);
            let execute = bits & 4 != 0;
            if execute && rights.contains(Rights::WRITE) {
                return Err(Error::InvalidRights);
            }
            let root = objects::root_of(caps, vspace)?;
            let (paddr, size_bits) = objects::memory_of(caps, call.slot)?;
            if execute && crate::devmem::is_device_memory(paddr) {
                return Err(Error::DeviceMemory);
            }
            let leaf =
                crate::vspace::can_map(root.paddr, vaddr, size_bits).map_err(|e| match e {
                    crate::vspace::MapError::MissingTable(_) => Error::MissingPageTable,
                    crate::vspace::MapError::BadAddress(_) => Error::InvalidAddress,
                    _ => Error::AddressInUse,
                })?;
            Ok(FrameOp::Map {
                frame: call.slot,
                root,
                vaddr,
                leaf,
                rights,
                execute,
            })
        }
        Invocation::FrameUnmap => Ok(FrameOp::Unmap {
            frame: call.slot,
            cpu: caps.lookup(call.slot)?.cpu_mapping().is_some(),
        }),
        _ => Err(Error::InvalidInvocation),
    }
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
        } => {
            objects::register_root(root);
            sink.execute = execute;
            sink.leaf = leaf;
            caps.map_frame(frame, root.paddr, vaddr, rights, &mut sink)?;
        }
        FrameOp::Unmap { frame, cpu: true } => caps.unmap_frame(frame, &mut sink)?,
        FrameOp::Unmap { frame, cpu: false } => caps.unmap_io(frame, &mut sink)?,
    }
    Ok(Reply::EMPTY)
}
