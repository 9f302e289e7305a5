//! IoSpace and IoUserTable invocations: `IoSpace.Map`, `Unmap`,
//! `BindUserTable`, `SetDirtyTracking`, `ReadDirty`,
//! `IoUserTable.Invalidate`.

use super::{Call, Reply};
use crate::iommu_unit::DirectMemory;
use crate::iommu_unit::Feature;
use crate::objects::{self, CapSystem};
use crate::sched::Threads;
use abi::{Error, Invocation};
use caps::{Effect, EffectSink, ObjectId, ObjectKind, Rights, SlotId};
use iommu::PhysMem;
use iospace::SpaceAt;

/// A decoded IoSpace or IoUserTable invocation.
pub(super) enum SpaceOp {
    /// Map a RAM Frame into an IoSpace ([`MapOp`]).
    Map(MapOp),
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

/// `IoSpace.Map` decoded: the RAM Frame `frame` at `ipa` of `space`, whose
/// table reservation can serve the walk, checked under the `STATE` lock
/// `held` (`io_space::MapHeld`), kept until the mapping is written into the space's stage-2
/// record, which the checks found `at`.
pub(super) struct MapOp {
    space: SlotId,
    frame: SlotId,
    ipa: u64,
    rights: Rights,
    held: crate::io_space::MapHeld,
    at: SpaceAt,
}

impl MapOp {
    /// The model's `map_io`, whose `MapIoPage` goes to [`MapSink`]: it
    /// may still refuse, having changed nothing.
    #[inline(always)]
    fn perform(self, caps: &mut CapSystem) -> Result<(), Error> {
        let mut sink = MapSink {
            held: Some(self.held),
            at: self.at,
        };
        Ok(caps.map_io(self.frame, self.space, self.ipa, self.rights, &mut sink)?)
    }
}

/// Decodes an IoSpace or IoUserTable invocation; changes nothing.
#[inline(always)]
pub(super) fn decode(caps: &CapSystem, call: &Call) -> Result<SpaceOp, Error> {
    let slot = call.slot;
    match (call.kind, call.invocation) {
        (ObjectKind::IoSpace, Invocation::IoSpaceMap) => {
            let frame = call.extra_cap(caps, 0)?;
            let (ipa, rights) = (call.argument(0)?, call.argument(1)?);
            decode_map(caps, slot, frame, ipa, rights)
        }
        (ObjectKind::IoSpace, Invocation::IoSpaceUnmap) => {
            let frame = call.extra_cap(caps, 0)?;
            decode_unmap(caps, slot, frame)
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
            crate::io_space::require(Feature::Dirty)?;
            let (space, _) = caps.dirty_access(slot, None)?;
            let on = match call.argument(0)? {
                0 => false,
                1 => true,
                _ => return Err(Error::InvalidArgument),
            };
            Ok(SpaceOp::SetDirtyTracking { space, on })
        }
        (ObjectKind::IoSpace, Invocation::IoSpaceReadDirty) => {
            crate::io_space::require(Feature::Dirty)?;
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

/// `IoSpace.Map` of the Frame capability in `frame` into the IoSpace
/// capability in `space` at `ipa` with the rights bits `rights`: the
/// checks after the message's, in the order `abi::Invocation::IoSpaceMap`
/// documents (the model's `map_io` makes the rest), the space's under the
/// `STATE` lock (`io_space::MapHeld`), which the operation keeps for the
/// map. Changes nothing.
#[inline(always)]
fn decode_map(
    caps: &CapSystem,
    space: SlotId,
    frame: SlotId,
    ipa: u64,
    rights: u64,
) -> Result<SpaceOp, Error> {
    if rights > 3 {
        return Err(Error::InvalidRights);
    }
    // x86 paging (first-stage IoSpaces) cannot refuse reads of a
    // present page: a write-only mapping would grant reads too. Read
    // before `STATE` is taken (`UNIT` is never taken under it).
    if rights == u64::from(Rights::WRITE.bits()) && crate::io_space::first_stage_spaces() {
        return Err(Error::NotSupported);
    }
    let held = crate::io_space::hold_for_map();
    // Device memory never goes into an IoSpace: no peer-to-peer
    // DMA, and the VT-d shadow walk reads only RAM as tables.
    let (paddr, bits) = objects::memory_of(caps, frame)?;
    if crate::devmem::is_device_memory(paddr) {
        return Err(Error::DeviceMemory);
    }
    let size = 1u64
        .checked_shl(u32::from(bits))
        .ok_or(Error::InvalidSize)?;
    let at = held.ensure_map(caps.lookup(space)?.object(), ipa, size)?;
    Ok(SpaceOp::Map(MapOp {
        space,
        frame,
        ipa,
        rights: Rights::from_bits_truncate(rights as u8),
        held,
        at,
    }))
}

/// `IoSpace.Unmap` of the Frame capability in `frame` from the IoSpace
/// capability in `space` (write right): the Frame copy must hold its IO
/// mapping in that IoSpace. Changes nothing.
#[inline(always)]
fn decode_unmap(caps: &CapSystem, space: SlotId, frame: SlotId) -> Result<SpaceOp, Error> {
    let space = caps
        .lookup_as(space, ObjectKind::IoSpace, Rights::WRITE)?
        .object();
    let mapping = caps.lookup(frame)?.mapping().ok_or(Error::NotMapped)?;
    if mapping.space != space {
        return Err(Error::NotMapped);
    }
    Ok(SpaceOp::Unmap { frame })
}

/// The sink of `IoSpace.Unmap`: the stage-2 and invalidation effects it
/// emits (three) applied under one hold of the IOMMU locks, taken at the
/// first and released when the operation is done, so an unmap still
/// returns after its invalidation completed. Any other effect (none today)
/// goes to [`objects::SINK`] with the locks released first, as that sink
/// takes them itself.
struct IoSink {
    held: Option<crate::io_space::Held>,
}

impl EffectSink for IoSink {
    #[inline(always)]
    fn push(&mut self, effect: Effect) {
        push_held(&mut self.held, effect, crate::io_space::Held::apply);
    }
}

/// What [`IoSink`] and [`MapSink`] do with an effect: a stage-2 or
/// invalidation effect goes to `apply` under the IOMMU locks `held` (taken
/// at the first); any other to [`objects::SINK`], the locks released first.
#[inline(always)]
fn push_held(
    held: &mut Option<crate::io_space::Held>,
    effect: Effect,
    apply: impl FnOnce(&mut crate::io_space::Held, &Effect),
) {
    match effect {
        Effect::MapIoPage { .. }
        | Effect::UnmapIoPage { .. }
        | Effect::InvalidateDomain { .. }
        | Effect::WaitForInvalidation { .. } => {
            apply(held.get_or_insert_with(crate::io_space::hold), &effect)
        }
        other => {
            *held = None;
            objects::apply_elsewhere(other);
        }
    }
}

/// The sink of `IoSpace.Map`: holding the `STATE` lock decode took (not
/// `UNIT`: `io_space::MapHeld` says why), whose one `MapIoPage` goes
/// straight to the stage-2 record decode found (`at`,
/// `io_space::MapHeld::map_at`). A sink of its own so that `Unmap`'s
/// (inlined into the model's `unmap_io`) stays as small as it was.
struct MapSink {
    held: Option<crate::io_space::MapHeld>,
    at: SpaceAt,
}

impl EffectSink for MapSink {
    #[inline]
    fn push(&mut self, effect: Effect) {
        match &mut self.held {
            Some(held) if matches!(effect, Effect::MapIoPage { .. }) => {
                held.map_at(self.at, &effect)
            }
            _ => self.push_other(effect),
        }
    }
}

impl MapSink {
    /// Any effect but the `MapIoPage` (`map_io` emits none): the lock
    /// decode took released, then to [`objects::SINK`], which takes both
    /// IOMMU locks itself for an IOMMU effect.
    #[cold]
    #[inline(never)]
    fn push_other(&mut self, effect: Effect) {
        self.held = None;
        objects::apply_elsewhere(effect);
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
    match op {
        SpaceOp::Map(op) => op.perform(caps)?,
        SpaceOp::Unmap { frame } => caps.unmap_io(frame, &mut IoSink { held: None })?,
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
/// thread's lookup cache (which holds the table's IoSpace and root IPA),
/// without the capability lock (the invocation changes no capability, so
/// every thread's cached lookups stay valid). `true` once answered (success, or the unit's own error);
/// `false`, having changed nothing, for every other call and for each
/// refusal, which the general path then makes with its own error
/// (`decode` repeats every check made here).
///
/// The test of the label is inlined into the system-call path; the rest
/// is out of line, so that other calls pay one load and one comparison.
#[inline(always)]
pub fn invalidate_fast(threads: &mut Threads, thread: u64, cspace: SlotId) -> bool {
    let context = &threads.tcb(thread).context;
    (context.syscall_arg(1) >> 32) as u32 == Invocation::IoUserTableInvalidate as u32
        && context.syscall_number() == abi::Syscall::Call as u64
        && invalidate_now(threads, thread, cspace)
}

/// [`invalidate_fast`] once the call is a `Call` whose message's label is
/// `IoUserTable.Invalidate` (also called so by
/// `syscall::invoke_fast_first`, which `syscall::round_trip_fast` enters
/// only for a `Call`): the rest of the tests, and the call.
#[inline(never)]
pub fn invalidate_now(threads: &mut Threads, thread: u64, cspace: SlotId) -> bool {
    let context = &threads.tcb(thread).context;
    let (cap, info) = (context.syscall_arg(0), context.syscall_arg(1));
    // Two message registers at least, no extra capability, no reserved bit
    // (the word `abi::MessageInfo::from_word` accepts, tested on its
    // fields at once: bits 0..7 the length, 7..9 the extra capabilities).
    let registers = info & 0x7f;
    let (start, length) = (context.syscall_arg(2), context.syscall_arg(3));
    if info as u32 & !0x7f != 0
        || !(2..=abi::registers::MAX_MESSAGE_REGISTERS as u64).contains(&registers)
        || start & 0xfff != 0
        || length & 0xfff != 0
        || start.checked_add(length).is_none()
    {
        return false;
    }
    let Some((space, root_ipa)) = objects::cached_user_table(threads, thread, cspace, cap) else {
        return false;
    };
    // No capability lock: the cached state is current (see
    // `objects::cached_user_table`), and an invalidation of a nest that is
    // found under the IOMMU's locks is harmless whatever happens to the
    // capabilities meanwhile.
    let reply = match crate::io_space::invalidate_user_table(space, root_ipa, start, length) {
        Ok((next, commands)) => (0, abi::MessageInfo::new(0, 2).to_word(), [next, commands]),
        Err(e) => (u64::from(e.code()), 0, [0, 0]),
    };
    threads
        .tcb(thread)
        .context
        .set_reply(reply.0, 0, reply.1, [reply.2[0], reply.2[1], 0, 0]);
    true
}

/// `IoSpace.Map` and `IoSpace.Unmap` ahead of the general invocation path
/// (issue 13: 1,113 / 1,082 and 1,403 / 1,207 instructions, x86_64 /
/// aarch64, for 700 and 900; about 250 of each the general path's message,
/// `Reply`, second resolution of the invoked capability and dispatch). A
/// `Call` of `thread` (IPC buffer at `ipc_buffer`) whose label is one of
/// them is answered here from the registers, the IPC buffer's first
/// capability pointer and the invoked capability's slot in the thread's
/// lookup cache (`objects::cached_slot`), under the capability lock
/// without bumping the generation (as `decode_and_perform` takes it for
/// these two). `true` once answered; `false`, having changed nothing, for
/// every other call and whenever anything is unusual (a stale cache, a
/// capability of another kind, a short message, a pointer that does not
/// resolve, any refusal of decode), which the general path then answers
/// with its own error. The checks made are decode's own ([`decode_map`],
/// [`decode_unmap`]) and the model's (`map_io`, `unmap_io`: the Frame's
/// rights, the IPA's alignment and range, whether it is taken, and the
/// mapping's revocation bookkeeping), whose refusal changes nothing and is
/// answered as the general path answers it.
///
/// `Map` writes one stage-2 leaf and invalidates nothing, so it skips the
/// IOMMU failure record; `Unmap` invalidates and waits, so it keeps it: a
/// failed or timed-out invalidation answers `IommuTimeout`.
///
/// The caller (`syscall::invoke_fast_first`) has tested the label; this
/// checks the rest.
#[inline(never)]
pub fn space_now(threads: &mut Threads, thread: u64, cspace: SlotId, ipc_buffer: u64) -> bool {
    let Some(super::FastCall {
        cap,
        message,
        mrs: [ipa, rights],
    }) = super::fast_call(threads, thread)
    else {
        return false;
    };
    let map = message.label == Invocation::IoSpaceMap as u32;
    if message.extra_caps == 0 || map && message.length < 2 {
        return false;
    }
    let Some(caps) = objects::CAPS.get() else {
        return false;
    };
    let mut caps = caps.lock();
    let Some(space) =
        objects::cached_slot(&caps, threads, thread, cspace, cap, ObjectKind::IoSpace)
    else {
        return false;
    };
    let Ok(frame) = caps.resolve(cspace, super::first_extra_cap(ipc_buffer)) else {
        return false;
    };
    let decoded = if map {
        decode_map(&caps, space, frame, ipa, rights)
    } else {
        decode_unmap(&caps, space, frame)
    };
    // Straight to the model's operations: no `Reply` to build.
    let result = match decoded {
        Ok(SpaceOp::Map(op)) => op.perform(&mut caps),
        Ok(SpaceOp::Unmap { frame }) => unmap_recording_failure(&mut caps, frame),
        _ => return false,
    };
    super::fast_reply(threads, thread, result);
    true
}

/// `IoSpace.Unmap` of the Frame in `frame` (decoded) with the IOMMU
/// failure record cleared before and read after, all under one hold of the
/// IOMMU locks (the general path, [`super::invoke`], takes the `STATE`
/// lock twice more for the record): `IommuTimeout` when the invalidation
/// failed or timed out.
fn unmap_recording_failure(caps: &mut CapSystem, frame: SlotId) -> Result<(), Error> {
    let mut held = crate::io_space::hold();
    held.forget_failure();
    let mut sink = IoSink { held: Some(held) };
    let result = caps.unmap_io(frame, &mut sink);
    let failure = match sink.held.as_mut() {
        Some(held) => held.take_failure(),
        None => crate::io_space::take_failure(),
    };
    match failure {
        Some(e) => Err(e),
        None => result.map_err(Error::from),
    }
}
