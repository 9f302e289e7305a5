//! IoSpace and IoUserTable invocations: `IoSpace.Map`, `Unmap`,
//! `BindUserTable`, `SetDirtyTracking`, `ReadDirty`,
//! `IoUserTable.Invalidate`.

use super::{Call, Reply};
use crate::iommu_unit::DirectMemory;
use crate::objects::{self, CapSystem};
use crate::sched::Threads;
use abi::{Error, Invocation};
use caps::{Effect, EffectSink, ObjectId, ObjectKind, Rights, SlotId};
use iommu::PhysMem;

/// A decoded IoSpace or IoUserTable invocation.
pub(super) enum SpaceOp {
    /// Map the RAM Frame `frame` at `ipa` of `space`, whose table
    /// reservation can serve the walk.
    Map {
        space: SlotId,
        frame: SlotId,
        ipa: u64,
        rights: Rights,
    },
    /// Unmap the Frame `frame`, which holds an IO mapping in this space.
    Unmap { frame: SlotId },
    /// An IoUserTable rooted at `root_ipa` of `space`, into `dest`.
    BindUserTable {
        space: SlotId,
        root_ipa: u64,
        dest: SlotId,
    },
    /// Turn stage-2 dirty tracking of `space` on or off.
    SetDirtyTracking { space: ObjectId, on: bool },
    /// Report the dirty pages among `pages` pages from `start` of `space`
    /// into the bitmap Frame at physical `bitmap` (RAM, written through
    /// the direct map), cleared with `clear`.
    ReadDirty {
        space: ObjectId,
        start: u64,
        pages: u64,
        clear: bool,
        bitmap: u64,
    },
    /// Make the hardware see the stage-1 entries for `start..start+length`
    /// of the user table at `root_ipa` of `space`.
    Invalidate {
        space: ObjectId,
        root_ipa: u64,
        start: u64,
        length: u64,
    },
}

/// Decodes an IoSpace or IoUserTable invocation; changes nothing.
#[inline(always)]
pub(super) fn decode(caps: &CapSystem, call: &Call) -> Result<SpaceOp, Error> {
    let slot = call.slot;
    match (call.kind, call.invocation) {
        (ObjectKind::IoSpace, Invocation::IoSpaceMap) => {
            let frame = call.extra_cap(caps, 0)?;
            let ipa = call.argument(0)?;
            let rights = call.argument(1)?;
            if rights > 3 {
                return Err(Error::InvalidRights);
            }
            // x86 paging (first-stage IoSpaces) cannot refuse reads of a
            // present page: a write-only mapping would grant reads too.
            if rights == u64::from(Rights::WRITE.bits()) && crate::io_space::first_stage_spaces() {
                return Err(Error::NotSupported);
            }
            // Device memory never goes into an IoSpace: no peer-to-peer
            // DMA, and the VT-d shadow walk reads only RAM as tables.
            let (paddr, bits) = objects::memory_of(caps, frame)?;
            if crate::devmem::is_device_memory(paddr) {
                return Err(Error::DeviceMemory);
            }
            let size = 1u64
                .checked_shl(u32::from(bits))
                .ok_or(Error::InvalidSize)?;
            crate::io_space::ensure_map(caps.lookup(slot)?.object(), ipa, size)?;
            Ok(SpaceOp::Map {
                space: slot,
                frame,
                ipa,
                rights: Rights::from_bits_truncate(rights as u8),
            })
        }
        (ObjectKind::IoSpace, Invocation::IoSpaceUnmap) => {
            let frame = call.extra_cap(caps, 0)?;
            let space = caps
                .lookup_as(slot, ObjectKind::IoSpace, Rights::WRITE)?
                .object();
            let mapping = caps.lookup(frame)?.mapping().ok_or(Error::NotMapped)?;
            if mapping.space != space {
                return Err(Error::NotMapped);
            }
            Ok(SpaceOp::Unmap { frame })
        }
        (ObjectKind::IoSpace, Invocation::IoSpaceBindUserTable) => {
            let root_ipa = call.argument(0)?;
            if call.argument(1)? != crate::io_space::USER_TABLE_FORMAT {
                return Err(Error::InvalidArgument);
            }
            crate::io_space::check_msi_window(caps.lookup(slot)?.object(), root_ipa, 4096)?;
            Ok(SpaceOp::BindUserTable {
                space: slot,
                root_ipa,
                dest: call.slot_argument(caps, 2)?,
            })
        }
        (ObjectKind::IoSpace, Invocation::IoSpaceSetDirtyTracking) => {
            let (space, _) = caps.dirty_access(slot, None)?;
            let on = match call.argument(0)? {
                0 => false,
                1 => true,
                _ => return Err(Error::InvalidArgument),
            };
            Ok(SpaceOp::SetDirtyTracking { space, on })
        }
        (ObjectKind::IoSpace, Invocation::IoSpaceReadDirty) => {
            let frame = call.extra_cap(caps, 0)?;
            let (start, pages, flags) = (call.argument(0)?, call.argument(1)?, call.argument(2)?);
            let (space, _) = caps.dirty_access(slot, Some(frame))?;
            if flags > 1 {
                return Err(Error::InvalidArgument);
            }
            // Pages only, and no wrap (`io_space` checks the range again).
            let length = pages.min(abi::READ_DIRTY_PAGES) * 4096;
            if start & 0xfff != 0 || start.checked_add(length).is_none() {
                return Err(Error::InvalidAddress);
            }
            // The bitmap is written through the direct map: RAM only.
            let (bitmap, _) = objects::memory_of(caps, frame)?;
            if crate::devmem::is_device_memory(bitmap) {
                return Err(Error::DeviceMemory);
            }
            Ok(SpaceOp::ReadDirty {
                space,
                start,
                pages,
                clear: flags == 1,
                bitmap,
            })
        }
        (ObjectKind::IoUserTable, Invocation::IoUserTableInvalidate) => {
            let cap = *caps.lookup_as(slot, ObjectKind::IoUserTable, Rights::WRITE)?;
            let state = caps.object(cap.object()).map(|o| *o.state());
            let Some(caps::ObjectState::IoUserTable {
                space: Some(space),
                root_ipa,
            }) = state
            else {
                return Err(Error::DeadObject);
            };
            let (start, length) = (call.argument(0)?, call.argument(1)?);
            // Pages only, and no wrap (`io_space` checks it again).
            if start & 0xfff != 0 || length & 0xfff != 0 || start.checked_add(length).is_none() {
                return Err(Error::InvalidAddress);
            }
            Ok(SpaceOp::Invalidate {
                space,
                root_ipa,
                start,
                length,
            })
        }
        _ => Err(Error::InvalidInvocation),
    }
}

/// The sink of `IoSpace.Map` and `Unmap`: the stage-2 and invalidation
/// effects they emit (a map one, an unmap three) applied under one hold of
/// the IOMMU locks, taken at the first and released when the operation is
/// done, so an unmap still returns after its invalidation completed. Any
/// other effect (none today) goes to [`objects::SINK`] with the locks
/// released first, as that sink takes them itself.
struct IoSink {
    held: Option<crate::io_space::Held>,
}

impl EffectSink for IoSink {
    #[inline]
    fn push(&mut self, effect: Effect) {
        match effect {
            Effect::MapIoPage { .. }
            | Effect::UnmapIoPage { .. }
            | Effect::InvalidateDomain { .. }
            | Effect::WaitForInvalidation { .. } => self
                .held
                .get_or_insert_with(crate::io_space::hold)
                .apply(&effect),
            other => {
                self.held = None;
                let mut sink = objects::SINK;
                sink.push(other);
            }
        }
    }
}

/// Performs a decoded IoSpace or IoUserTable invocation. The model's
/// `map_io`, `unmap_io` and `bind_user_table` may still refuse
/// (`InvalidAddress`, `AddressInUse`, `AlreadyMapped`, `InsufficientRights`,
/// ...), having changed nothing. `Invalidate` is the kernel's own work on
/// the unit: it answers `TableMemoryExhausted` when the IoSpace's table
/// reservation cannot hold a shadow's tables (VT-d shadow nesting, found
/// while composing) and `IommuTimeout` when the hardware's invalidation
/// fails or times out (`io_space::invalidate_user_table`).
/// `SetDirtyTracking` and `ReadDirty` are the kernel's own work on the
/// unit too: they answer `NotSupported` when the unit cannot track (or,
/// for `ReadDirty`, tracking is off), `InvalidAddress` when the range leaves the IPA range or
/// cuts a 2 MiB mapping, and `IommuTimeout` (`iospace::State::read_dirty`);
/// the bitmap is written only after the unit answered.
#[inline(always)]
pub(super) fn perform(caps: &mut CapSystem, op: SpaceOp) -> Result<Reply, Error> {
    let mut sink = IoSink { held: None };
    match op {
        SpaceOp::Map {
            space,
            frame,
            ipa,
            rights,
        } => caps.map_io(frame, space, ipa, rights, &mut sink)?,
        SpaceOp::Unmap { frame } => caps.unmap_io(frame, &mut sink)?,
        SpaceOp::BindUserTable {
            space,
            root_ipa,
            dest,
        } => {
            caps.bind_user_table(space, root_ipa, dest)?;
        }
        SpaceOp::SetDirtyTracking { space, on } => {
            crate::io_space::set_dirty_tracking(space, on)?;
        }
        SpaceOp::ReadDirty {
            space,
            start,
            pages,
            clear,
            bitmap,
        } => {
            let mut bits = [0u64; (abi::READ_DIRTY_PAGES / 64) as usize];
            let (next, dirty) = crate::io_space::read_dirty(space, start, pages, clear, &mut bits)?;
            for (i, word) in bits.iter().enumerate() {
                // The Frame is RAM (decode refused device memory), at least
                // 4 KiB, held with the write right: the bitmap's 64 bytes
                // fit in its first page.
                DirectMemory.write_u64(bitmap + 8 * i as u64, *word);
            }
            return Ok(Reply {
                mrs: [next, dirty, 0, 0, 0, 0, 0, 0],
                length: 2,
            });
        }
        SpaceOp::Invalidate {
            space,
            root_ipa,
            start,
            length,
        } => {
            let (next, commands) =
                crate::io_space::invalidate_user_table(space, root_ipa, start, length)?;
            return Ok(Reply {
                mrs: [next, commands, 0, 0, 0, 0, 0, 0],
                length: 2,
            });
        }
    }
    Ok(Reply::EMPTY)
}

/// `IoUserTable.Invalidate` ahead of the general invocation path (issue 13:
/// the driver's one call after writing its stage-1 entries): a `Call` of
/// `thread` whose message is that invocation is answered here, from the
/// thread's lookup cache and under the capability lock taken only to read
/// (the invocation changes no capability, so every thread's cached lookups
/// stay valid). `true` once answered (success, or the unit's own error);
/// `false`, having changed nothing, for every other call and for each
/// refusal, which the general path then makes with its own error
/// (`decode` repeats every check made here).
///
/// The test of the label is inlined into the system-call path; the rest
/// is out of line, so that other calls pay one load and one comparison.
#[inline(always)]
pub fn invalidate_fast(threads: &mut Threads, thread: u64, cspace: SlotId) -> bool {
    (threads.tcb(thread).context.syscall_arg(1) >> 32) as u32
        == Invocation::IoUserTableInvalidate as u32
        && invalidate_now(threads, thread, cspace)
}

/// [`invalidate_fast`] once the message's label is
/// `IoUserTable.Invalidate` (also called so by
/// `syscall::invoke_fast_first`): the rest of the tests, and the call.
#[inline(never)]
pub fn invalidate_now(threads: &mut Threads, thread: u64, cspace: SlotId) -> bool {
    let context = &threads.tcb(thread).context;
    if context.syscall_number() != abi::Syscall::Call as u64 {
        return false;
    }
    let (cap, info) = (context.syscall_arg(0), context.syscall_arg(1));
    // Two message registers at least, no extra capability.
    let Ok(message) = abi::MessageInfo::from_word(info) else {
        return false;
    };
    let (start, length) = (context.syscall_arg(2), context.syscall_arg(3));
    if message.length < 2
        || message.extra_caps != 0
        || start & 0xfff != 0
        || length & 0xfff != 0
        || start.checked_add(length).is_none()
    {
        return false;
    }
    let Ok(table) = objects::lookup_cached_object(
        threads,
        thread,
        cspace,
        cap,
        ObjectKind::IoUserTable,
        Rights::WRITE,
    ) else {
        return false;
    };
    let Some(caps) = objects::CAPS.get() else {
        return false;
    };
    // Held across the unit's work, as on the general path (lock order:
    // capabilities, then the IOMMU's).
    let caps = caps.lock();
    let Some(caps::ObjectState::IoUserTable {
        space: Some(space),
        root_ipa,
    }) = caps.object(table).map(|o| *o.state())
    else {
        return false;
    };
    let reply = match crate::io_space::invalidate_user_table(space, root_ipa, start, length) {
        Ok((next, commands)) => (0, abi::MessageInfo::new(0, 2).to_word(), [next, commands]),
        Err(e) => (u64::from(e.code()), 0, [0, 0]),
    };
    drop(caps);
    threads
        .tcb(thread)
        .context
        .set_reply(reply.0, 0, reply.1, [reply.2[0], reply.2[1], 0, 0]);
    true
}
