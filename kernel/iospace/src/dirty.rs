//! Dirty tracking of an IoSpace's stage 2 (`IoSpace.SetDirtyTracking`,
//! `IoSpace.ReadDirty`): the unit's entries of every device using the
//! IoSpace get stage-2 dirty updates (VT-d PASID entry SSADE, SMMUv3 STE
//! S2HA / S2HD), its leaves are read and optionally marked clean, and a
//! clear is followed by the invalidation of the IoSpace's tag before the
//! call returns, so an IOTLB entry cached as dirty cannot let a later
//! write through unrecorded.
//!
//! VT-d shadow nests: a device nested through a shadow writes through the
//! shadow's entries, so SSADE is set in its entry too and every
//! `ReadDirty` first moves the D bits of the IoSpace's shadows onto the
//! stage-2 leaves behind them (the IPA the driver's stage 1 gives for the
//! shadow entry's IOVA, checked against the entry's page; else every IPA
//! mapping that page) and invalidates the shadow's DID
//! (`IoUnit::fold_nest_dirty`). Work: the IoSpace's table budget.

use crate::state::State;
use crate::{Env, Flaw, IoUnit, space_tag};
use abi::{Error, READ_DIRTY_PAGES};
use caps::ObjectId;
use iommu::PhysMem;
use iommu::attachments::Exposed;
use iommu::pagetable::Covering;

impl<U: IoUnit, M: PhysMem + Copy, E: Env> State<U, M, E> {
    /// Whether dirty tracking can serve `space`: `NotSupported` if the
    /// unit cannot track, `DeadObject` if it has no stage 2.
    fn dirty_ready(&self, unit: &U, space: ObjectId) -> Result<(), Error> {
        if !unit.dirty_tracking() {
            return Err(Error::NotSupported);
        }
        self.space(space).map_err(|_| Error::DeadObject)?;
        Ok(())
    }

    /// Folds the dirty state of `space`'s nests into its stage 2
    /// (`record`: false discards it); `IommuTimeout` blocks its devices.
    fn fold_nests(&mut self, unit: &mut U, space: ObjectId, record: bool) -> Result<(), Error> {
        for index in 0..self.nests.len() {
            if self.nests[index].as_ref().is_some_and(|n| n.space == space) {
                let folded = unit.fold_nest_dirty(self, index, record);
                if folded == Err(Error::IommuTimeout) {
                    self.fail_closed(unit, Exposed::Nest(index));
                }
                folded?;
            }
        }
        Ok(())
    }

    /// `IoSpace.SetDirtyTracking`: turns stage-2 dirty updates on or off
    /// for every device using `space` (and those attached later). On:
    /// entries first, then every leaf marked clean, then the tag
    /// invalidated, so no write is missed and none from before is
    /// reported. Off: every leaf marked dirty (an SMMUv3 keeps clean
    /// leaves write-protected while it tracks), the tag invalidated, then
    /// the entries. The work is bounded by the IoSpace's table budget.
    /// Errors: `NotSupported` ([`State::read_dirty`]), `IommuTimeout`
    /// (the IoSpace's devices are then blocked).
    pub fn set_dirty_tracking(
        &mut self,
        unit: &mut U,
        space: ObjectId,
        on: bool,
    ) -> Result<(), Error> {
        self.dirty_ready(unit, space)?;
        if on {
            self.set_entries_dirty(unit, space, true)?;
            self.fold_nests(unit, space, false)?;
        }
        let (table, did) = {
            let s = self.space(space).map_err(|_| Error::DeadObject)?;
            (s.table, s.did)
        };
        let mem = self.mem();
        table.for_each_leaf(&mem, |input, _, size_bits, _| {
            let _ = table.set_dirty_state(&mem, input, 1 << size_bits, on);
        });
        if let Some(s) = self.spaces.iter_mut().find(|s| s.object == space) {
            s.dirty_tracking = on;
        }
        self.flush_space(unit, space, did)?;
        if !on {
            self.set_entries_dirty(unit, space, false)?;
        }
        Ok(())
    }

    /// `IoSpace.ReadDirty`: reports the dirty pages among the `pages`
    /// pages from IPA `start` (at most [`READ_DIRTY_PAGES`]) as
    /// `visit(index)`, page `start + 4 KiB x index`; with `clear` marks
    /// them clean and, if any was, invalidates the IoSpace's tag before
    /// returning. A 2 MiB leaf counts as its 512 pages and must lie wholly
    /// inside the range processed. Returns the first IPA not processed and
    /// the pages reported. Errors: `InvalidAddress` (misaligned, wraps,
    /// outside the IPA range, or cuts a 2 MiB leaf), `NotSupported` (the
    /// unit cannot track, or tracking is off),
    /// `DeadObject`, `IommuTimeout`.
    pub fn read_dirty(
        &mut self,
        unit: &mut U,
        space: ObjectId,
        start: u64,
        pages: u64,
        clear: bool,
        mut visit: impl FnMut(u64),
    ) -> Result<(u64, u64), Error> {
        self.dirty_ready(unit, space)?;
        let (table, did, tracking) = {
            let s = self.space(space).map_err(|_| Error::DeadObject)?;
            (s.table, s.did, s.dirty_tracking)
        };
        if !tracking {
            return Err(Error::NotSupported);
        }
        let length = pages.min(READ_DIRTY_PAGES) * 4096;
        let end = start.checked_add(length).ok_or(Error::InvalidAddress)?;
        if start & 0xfff != 0 || end > 1u64 << table.input_bits() {
            return Err(Error::InvalidAddress);
        }
        self.fold_nests(unit, space, true)?;
        let mem = self.mem();
        // A range that cuts a large leaf is refused before anything is
        // cleared: only its first and last page can lie in one.
        for page in [start, end.saturating_sub(4096).max(start)] {
            if length > 0
                && let Covering::Leaf { input, mask, .. } = table.covering(&mem, page)
                && (input < start || input + mask >= end)
            {
                return Err(Error::InvalidAddress);
            }
        }
        let mut reported = 0;
        let scan = table
            .read_dirty(&mem, start, length, clear, |input, size_bits| {
                for page in (input..input + (1 << size_bits)).step_by(4096) {
                    visit((page - start) / 4096);
                    reported += 1;
                }
            })
            .map_err(|_| Error::InvalidAddress)?;
        if scan.cleaned > 0 && !E::broken(Flaw::SkipDirtyFlush) {
            self.flush_space(unit, space, did)?;
        }
        Ok((end, reported))
    }

    /// Turns the dirty updates of every entry pointing at `space` (or at
    /// one of its nests) on or off.
    fn set_entries_dirty(&mut self, unit: &mut U, space: ObjectId, on: bool) -> Result<(), Error> {
        let mem = self.mem();
        let mut failed = false;
        for a in self
            .attached
            .iter()
            .filter(|a| a.space == space && !a.blocked)
        {
            failed |= unit
                .set_entry_dirty_tracking(&mem, a.requester, a.pasid, on)
                .is_err();
        }
        if failed {
            self.fail_closed(unit, Exposed::Spaces(&[space]));
            return Err(Error::IommuTimeout);
        }
        Ok(())
    }

    /// Invalidates `space`'s tag (and what its nests cached under their
    /// own tags) and waits; on failure its devices are blocked and the
    /// answer is `IommuTimeout`.
    fn flush_space(&mut self, unit: &mut U, space: ObjectId, did: u16) -> Result<(), Error> {
        self.invalidate_tags(unit, &[space_tag(did)], false, Exposed::Spaces(&[space]))
            .map_err(|_| Error::IommuTimeout)?;
        for index in 0..self.nests.len() {
            if self.nests[index].as_ref().is_some_and(|n| n.space == space) {
                let flushed = unit.flush_nest_after_clean(self, index);
                if flushed == Err(Error::IommuTimeout) {
                    self.fail_closed(unit, Exposed::Nest(index));
                }
                flushed?;
            }
        }
        Ok(())
    }
}
