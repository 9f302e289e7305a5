//! The layer's state and its operations: IoSpaces and their stage 2,
//! nests, attachments, the unit's pooled tables, pending invalidations,
//! fault routes and queues.

use crate::faults::Queue;
use crate::index::Index;
use crate::pool::{Charged, FreePages, GiveBack, Pool};
use crate::{
    ATTACHED, Env, Flaw, IoUnit, NESTS, PENDING_TAGS, QUEUES, SHARE, SPACE_BUDGET, SPACES,
    UNIT_FLOOR, UNIT_TABLES, space_tag,
};
use abi::Error;
use caps::{Effect, FaultSource, ObjectId, ObjectKind, Rights};
use core::marker::PhantomData;
use iommu::FrameAllocator;
use iommu::PhysMem;
use iommu::attachments::{Attachment, Attachments, Exposed, ShareError};
use iommu::budget::{
    Account, Budget, BudgetError, Ledger, Recording, UNIT_TABLES_PER_ENTRY, UnitTables,
};
use iommu::pagetable::{PageSize, PageTable, Perms};
use iommu::vtd::shadow::Dependencies;

/// One IoSpace: its stage 2 and model DID.
pub(crate) struct Space<F: iommu::pagetable::PageTableFormat> {
    pub(crate) object: ObjectId,
    pub(crate) table: PageTable<F>,
    pub(crate) did: u16,
    /// `IoSpace.SetDirtyTracking` is on (`dirty.rs`).
    pub(crate) dirty_tracking: bool,
    /// The nest slots built over this space (bit `i`: nest `i`), so its
    /// shadows and their tags are found without scanning every nest.
    pub(crate) nests: u32,
    /// The MSI doorbell page mapped at its reserved IPA (`msi.rs`).
    pub(crate) msi_doorbell: Option<u64>,
    /// The last-level table of the 2 MiB region a 4 KiB map or unmap last
    /// reached: (IPA >> 21, table), so the next one in that region
    /// skips the walk from the root. Stage-2 tables are never taken out
    /// of the table while the space lives (only unit-wide teardown,
    /// [`State::free_tables`], frees them, and it clears this), so the
    /// region's table stays the one its 2 MiB entry points to.
    pub(crate) leaf_table: Option<(u64, u64)>,
    /// VT-d shadow nests: every IPA a stage-2 unmap must drop shadow
    /// entries for lies in `[shadow_span.0, shadow_span.1)`, so an unmap
    /// away from it visits no nest. Empty (start >= end) while nothing is
    /// composed; everything ([`ANY_SPAN`]) after an `Invalidate` recorded
    /// more (one store on that path); the union of the nests'
    /// `Dependencies::span` once an unmap has visited them and none
    /// depended on its IPA.
    pub(crate) shadow_span: (u64, u64),
}

// `Space::nests` holds one bit per nest slot.
const _: () = assert!(NESTS <= u32::BITS as usize);

/// A driver's stage-1 table in use by devices: (space, root IPA) and what
/// the layer built for it.
pub(crate) struct Nest {
    pub(crate) space: ObjectId,
    pub(crate) root_ipa: u64,
    /// VT-d: the shadow table's root; SMMUv3: the CD page.
    pub(crate) page: u64,
    pub(crate) users: u32,
    /// VT-d: the stage-2 IPAs the shadow's entries were composed through,
    /// so a stage-2 unmap drops only the entries that depended on it
    /// (`iommu::vtd::shadow::Dependencies`; unused on SMMUv3).
    pub(crate) dependencies: Dependencies,
    /// The space's model DID (fixed for the space's life), so an
    /// invalidation needs no lookup of the space.
    pub(crate) did: u16,
}

/// An SMMUv3 stream whose PASIDs (SubstreamIDs) are attached: its CD
/// table page, charged to `space` and mapped read-only in its stage 2
/// (`smmu.rs`).
pub(crate) struct Substreams {
    pub(crate) stream: u16,
    pub(crate) space: ObjectId,
    pub(crate) page: u64,
}

/// Where an IoSpace's record is, found once by [`State::space_at`] for an
/// `IoSpace.Map`'s checks and then its stage-2 write
/// ([`State::map_through`]), which need not search for it again. Records
/// move only when an IoSpace is registered or dies, which the kernel does
/// not do while it holds the state between the two; `map_through` checks
/// the record is still the IoSpace's all the same, and searches again if
/// not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceAt {
    pub(crate) object: ObjectId,
    pub(crate) position: usize,
}

/// What the effects applied since the last `WaitForInvalidation` did to
/// the translations VT-d shadows hold ([`State::note_tags`]). A shadow
/// holds what the layer composed, and its tag's cached translations are
/// dropped whenever the layer drops shadow entries (here, by the unmap's
/// invalidation) or recomposes them (`IoUserTable.Invalidate`): so a
/// stage-2 unmap no shadow entry was composed through (none of the
/// nests' `Dependencies` touches the IPA) leaves nothing under a shadow's
/// tag that translates into the unmapped frame, and its invalidation
/// needs only the IoSpace's own tag. Not so where the unit walks stage 2
/// for nests itself ([`IoUnit::nests_walk_stage2`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ShadowTags {
    /// Nothing since the last wait.
    Untouched,
    /// Only stage-2 unmaps of the IoSpace with this model DID, none of
    /// which a shadow depended on (besides unmaps of spaces without
    /// nests, `InvalidateDomain`s, and what makes no cached translation
    /// stale: stage-2 maps, installed entries, fault routes).
    Spared(u16),
    /// An unmap a shadow depended on, one of another IoSpace with nests,
    /// or a device or PASID entry cleared: every shadow's tag is
    /// invalidated.
    Owed,
}

/// Everything the layer keeps for unit `U`, reaching table memory through
/// `M`, reporting to `E`.
pub struct State<U: IoUnit, M, E: Env> {
    pub(crate) pool: Pool<M>,
    pub(crate) spaces: heapless::Vec<Space<U::Format>, SPACES>,
    /// Positions in `spaces` by object id and by model DID.
    by_object: Index,
    by_did: Index,
    pub(crate) nests: [Option<Nest>; NESTS],
    /// SMMUv3 CD tables of streams with substreams; slot `i` is mapped at
    /// its own IPA of the reserved window.
    pub(crate) substreams: [Option<Substreams>; crate::SUBSTREAM_TABLES],
    /// Requesters (or PASIDs) pointed at a domain, with their nest.
    pub(crate) attached: Attachments<ObjectId, ATTACHED>,
    /// The unit's own table pages taken from the pool, and who paid.
    pub(crate) unit_tables: UnitTables<ObjectId, UNIT_TABLES>,
    pub(crate) routes: heapless::Vec<(FaultSource, ObjectId), ATTACHED>,
    pub(crate) queues: heapless::Vec<Queue<E::Notify>, QUEUES>,
    pub(crate) interrupt_on: bool,
    /// Hardware tags to invalidate at the next `WaitForInvalidation`.
    pending_tags: heapless::Vec<u16, PENDING_TAGS>,
    /// The IoSpaces those tags belong to (whose devices a failed
    /// invalidation blocks).
    pending_spaces: heapless::Vec<ObjectId, PENDING_TAGS>,
    /// Whether the next `InvalidateDomain` must name the VT-d shadows'
    /// tags too ([`ShadowTags`]).
    shadow_tags: ShadowTags,
    /// Where in `spaces` the IoSpace the last stage-2 unmap reached was: a
    /// hint, checked against the record before use, so the unmap's
    /// invalidation (and the next unmap) find the space without a probe.
    recent: usize,
    /// An invalidation failed or timed out during the current invocation.
    pub(crate) failure: Option<Error>,
    /// Page requests the kernel answered itself (`requests.rs`).
    pub(crate) kernel_answers: crate::KernelAnswers,
    /// Nest CDs stall stage-1 faults (`State::enable_stalls`).
    pub(crate) stalls: bool,
    /// Devices bound to CPU address spaces (`sva.rs`).
    pub(crate) sva: [Option<crate::sva::Binding>; crate::sva::SVA_BINDINGS],
    unit: PhantomData<fn() -> U>,
}

impl<U: IoUnit, M: PhysMem + Copy, E: Env> State<U, M, E> {
    /// An empty state whose tables are reached through `mem`; the pool is
    /// empty until [`State::add_pool_pages`].
    pub const fn new(mem: M) -> Self {
        State {
            pool: Pool {
                free: FreePages {
                    mem,
                    pages: heapless::Vec::new(),
                },
                ledger: Ledger::new(Budget {
                    per_space: SPACE_BUDGET,
                    unit_floor: UNIT_FLOOR,
                }),
            },
            spaces: heapless::Vec::new(),
            by_object: Index::new(),
            by_did: Index::new(),
            nests: [const { None }; NESTS],
            substreams: [const { None }; crate::SUBSTREAM_TABLES],
            attached: Attachments::new(SHARE),
            unit_tables: UnitTables::new(),
            routes: heapless::Vec::new(),
            queues: heapless::Vec::new(),
            interrupt_on: false,
            pending_tags: heapless::Vec::new(),
            pending_spaces: heapless::Vec::new(),
            shadow_tags: ShadowTags::Untouched,
            recent: 0,
            failure: None,
            kernel_answers: crate::KernelAnswers {
                refused: 0,
                failed: 0,
            },
            stalls: false,
            sva: [None; crate::sva::SVA_BINDINGS],
            unit: PhantomData,
        }
    }

    /// The memory access tables are written through.
    pub(crate) fn mem(&self) -> M {
        self.pool.free.mem
    }

    /// Gives the pool the pages `pages` yields until it is full (each a
    /// 4 KiB frame only the layer uses from now on). Returns how many it
    /// took and how many IoSpaces can now live at once.
    pub fn add_pool_pages(&mut self, pages: impl IntoIterator<Item = u64>) -> (usize, usize) {
        let pool = &mut self.pool;
        let before = pool.free.pages.len();
        for page in pages {
            if pool.free.pages.push(page).is_err() {
                break;
            }
        }
        let added = pool.free.pages.len() - before;
        pool.ledger.add_pages(added);
        let spaces =
            Ledger::<ObjectId, SPACES>::spaces_for(pool.ledger.budget(), pool.ledger.free_pages());
        (added, spaces)
    }

    /// Whether the pool can take more pages.
    pub fn pool_is_full(&self) -> bool {
        self.pool.free.pages.is_full()
    }

    /// Before an `IoSpace.Map` in `space`: `TableMemoryExhausted` unless
    /// its reservation can serve one more stage-2 walk.
    #[inline]
    pub fn ensure_pool(&self, space: ObjectId) -> Result<(), Error> {
        self.pool.ensure(Account::Space(space))
    }

    /// Pages left in `space`'s reservation (`None`: no such IoSpace).
    pub fn available(&self, space: ObjectId) -> Option<usize> {
        self.pool.ledger.usage(space)?;
        Some(self.pool.ledger.available(Account::Space(space)))
    }

    /// Free pages in the pool.
    pub fn free_pages(&self) -> usize {
        self.pool.free.pages.len()
    }

    /// Before an attach to `space` (through the stage-1 table at
    /// `root_ipa` for a nested attach): `TableMemoryExhausted` unless the
    /// unit's pages (and `space`'s reservation, if a new nest is needed)
    /// can serve it, `ObjectTableFull` unless the unit has an attachment
    /// record (and a nest slot, if a new nest is needed) free,
    /// `IoShareExhausted` when `space` already uses its [`SHARE`] (so the
    /// effects that follow cannot fail for lack of room).
    pub fn ensure_attach_room(&self, space: ObjectId, root_ipa: Option<u64>) -> Result<(), Error> {
        // The unit's context, PASID and stream tables the attach may need
        // are charged to `space` too.
        self.pool.ensure(Account::Space(space))?;
        let new_nest = root_ipa.is_some_and(|root| {
            !self
                .nests
                .iter()
                .flatten()
                .any(|n| n.space == space && n.root_ipa == root)
        });
        if new_nest && self.nests.iter().all(Option::is_some) {
            return Err(Error::ObjectTableFull);
        }
        self.attached.admit(space, new_nest).map_err(|e| match e {
            ShareError::UnitFull => Error::ObjectTableFull,
            ShareError::SpaceShareUsed => Error::IoShareExhausted,
        })
    }

    /// Clears the failure record before an invocation.
    #[inline]
    pub fn forget_failure(&mut self) {
        self.failure = None;
    }

    /// `IommuTimeout` if an invalidation failed or timed out since
    /// [`State::forget_failure`]: the invocation must fail (its devices
    /// were left blocked).
    #[inline]
    pub fn take_failure(&mut self) -> Option<Error> {
        self.failure.take()
    }

    /// Records that the unit failed (an invalidation or its wait did not
    /// complete) for the invocation's result, and passes `why` on.
    pub(crate) fn unit_failed(&mut self, why: &'static str) -> &'static str {
        self.failure = Some(Error::IommuTimeout);
        why
    }

    /// Whether [`State::register_space`] would succeed for `count` new
    /// IoSpaces in a row, changing nothing: the error the first failing
    /// one would return. What `Untyped.Retype` of IoSpaces checks before
    /// it makes any.
    pub fn can_register(&self, unit: &U, count: usize) -> Result<(), Error> {
        // The stage-2 shape depends on the unit alone (any page-aligned root).
        unit.stage2_at(0).ok_or(Error::NotSupported)?;
        for made in 1..=count {
            if self.spaces.len() + made > self.spaces.capacity() {
                return Err(Error::ObjectTableFull);
            }
            self.pool
                .ledger
                .can_reserve(made)
                .map_err(reservation_error)?;
        }
        Ok(())
    }

    /// Records a new IoSpace whose zeroed page at `root` becomes its
    /// stage-2 root, and reserves its [`SPACE_BUDGET`] table pages.
    /// Errors: `TableMemoryExhausted` when the pool cannot set them aside
    /// (too many IoSpaces live), `ObjectTableFull` when the IoSpace
    /// records are full; the caller deletes the IoSpace again.
    pub fn register_space(
        &mut self,
        unit: &U,
        object: ObjectId,
        root: u64,
        did: u16,
    ) -> Result<(), Error> {
        let table = unit.stage2_at(root).ok_or(Error::NotSupported)?;
        self.spaces.retain(|s| s.object != object);
        self.reindex();
        if self.spaces.is_full() {
            return Err(Error::ObjectTableFull);
        }
        self.pool
            .ledger
            .reserve(object)
            .map_err(reservation_error)?;
        if E::broken(Flaw::Stage2Identity) {
            let mem = self.mem();
            for page in (E::FOREIGN_IPA..E::FOREIGN_IPA + (2 << 20)).step_by(4096) {
                let _ = table.map(
                    &mem,
                    &mut self.pool.of_space(object),
                    page,
                    page,
                    PageSize::Size4K,
                    Perms::READ_WRITE,
                );
            }
        }
        let _ = self.spaces.push(Space {
            object,
            table,
            did,
            dirty_tracking: false,
            nests: 0,
            msi_doorbell: None,
            leaf_table: None,
            shadow_span: NO_SPAN,
        });
        self.reindex();
        Ok(())
    }

    /// Rebuilds the indexes of `spaces` after records moved (an IoSpace
    /// made or destroyed, never a map): out of line, LTO had copied it
    /// into three callers (kernel/README.md, "Size").
    #[inline(never)]
    fn reindex(&mut self) {
        self.by_object.clear();
        self.by_did.clear();
        for (position, s) in self.spaces.iter().enumerate() {
            self.by_object.insert(s.object.0, position);
            self.by_did.insert(u32::from(s.did), position);
        }
    }

    /// Applies one IOMMU effect of the capability model to `unit`.
    /// Failures here are kernel bugs (invocations check first) and are
    /// logged, never ignored silently; a unit that fails an invalidation
    /// leaves [`State::take_failure`] set.
    ///
    /// Each effect has its own function, out of line, so a caller that
    /// knows the effect (the kernel's sink for the model's `map_io` and
    /// `unmap_io`, where this is inlined) calls that one alone.
    #[inline(always)]
    pub fn apply(&mut self, unit: &mut U, effect: &Effect) {
        match *effect {
            Effect::MapIoPage { space, .. } => self.apply_map(space, effect),
            Effect::UnmapIoPage { space, ipa, .. } => self.apply_unmap(space, ipa),
            Effect::InvalidateDomain { did, .. } => self.apply_invalidate_domain(unit, did),
            Effect::WaitForInvalidation { .. } => self.apply_wait(unit),
            _ => self.apply_other(unit, effect),
        }
    }

    /// [`State::apply`] of `MapIoPage`.
    #[inline(never)]
    fn apply_map(&mut self, space: ObjectId, effect: &Effect) {
        if let Err(why) = self.map(space, effect) {
            not_applied::<E>("MapIoPage", why);
        }
    }

    /// [`State::apply`] of `UnmapIoPage`.
    #[inline(never)]
    fn apply_unmap(&mut self, space: ObjectId, ipa: u64) {
        if let Err(why) = self.unmap(space, ipa) {
            not_applied::<E>("UnmapIoPage", why);
        }
    }

    /// [`State::apply`] of `InvalidateDomain`: queues the domain's tags.
    #[inline(never)]
    fn apply_invalidate_domain(&mut self, unit: &U, did: u16) {
        if !E::broken(Flaw::SkipInvalidation) {
            self.note_tags(unit, did);
        }
    }

    /// [`State::apply`] of `WaitForInvalidation`: invalidates the queued
    /// tags and waits.
    #[inline(never)]
    fn apply_wait(&mut self, unit: &mut U) {
        if !E::broken(Flaw::SkipInvalidation)
            && let Err(why) = self.invalidate_pending(unit)
        {
            not_applied::<E>("WaitForInvalidation", why);
        }
    }

    /// [`State::apply`] of the effects other than a stage-2 map, unmap and
    /// invalidation: device and PASID entries, fault routes.
    #[inline(never)]
    fn apply_other(&mut self, unit: &mut U, effect: &Effect) {
        let result = match *effect {
            Effect::InstallDeviceEntry {
                rid,
                space,
                stage1_root,
                ..
            } => self.install(unit, rid, None, space, stage1_root),
            Effect::InstallPasidEntry {
                rid,
                pasid,
                space,
                stage1_root,
                ..
            } => self.install(unit, rid, Some(pasid), space, stage1_root),
            // A detach (the model invalidates the domain after it): its
            // invalidation names every shadow's tag.
            Effect::ClearDeviceEntry { rid, .. } => {
                self.shadow_tags = ShadowTags::Owed;
                self.clear(unit, rid, None)
            }
            Effect::ClearPasidEntry { rid, pasid, .. } => {
                self.shadow_tags = ShadowTags::Owed;
                self.clear(unit, rid, Some(pasid))
            }
            Effect::RouteFaults { source, queue, .. } => {
                self.routes.retain(|(s, _)| *s != source);
                match queue {
                    Some(q) => self
                        .routes
                        .push((source, q))
                        .map_err(|_| "the fault route table is full"),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        };
        if let Err(why) = result {
            not_applied::<E>(effect_name(effect), why);
        }
    }

    #[inline]
    pub(crate) fn space(&self, object: ObjectId) -> Result<&Space<U::Format>, &'static str> {
        let spaces = &self.spaces;
        self.by_object
            .find(object.0, |i| spaces.get(i).filter(|s| s.object == object))
            .ok_or("the IoSpace has no stage-2 table")
    }

    /// Where `object`'s record is in `spaces`.
    #[inline]
    pub(crate) fn space_position(&self, object: ObjectId) -> Option<usize> {
        let spaces = &self.spaces;
        self.by_object.find(object.0, |i| {
            spaces
                .get(i)
                .is_some_and(|s| s.object == object)
                .then_some(i)
        })
    }

    /// Checks the indexes against a scan of every record (host tests):
    /// every IoSpace found where it is, by object and by DID, each nest
    /// in its space's set, and `absent` (no IoSpace) found nowhere.
    #[doc(hidden)]
    pub fn check_indexes(&self, absent: ObjectId) -> Result<(), &'static str> {
        for (position, s) in self.spaces.iter().enumerate() {
            if self.space_position(s.object) != Some(position) {
                return Err("an IoSpace's object id is not indexed at its record");
            }
            let spaces = &self.spaces;
            let by_did = self.by_did.find(u32::from(s.did), |i| {
                spaces.get(i).is_some_and(|t| t.did == s.did).then_some(i)
            });
            if by_did != spaces.iter().position(|t| t.did == s.did) {
                return Err("an IoSpace's DID is not indexed at its record");
            }
            let nests = self.nests.iter().enumerate().fold(0, |set, (i, n)| {
                set | (u32::from(n.as_ref().is_some_and(|n| n.space == s.object)) << i)
            });
            if nests != s.nests {
                return Err("an IoSpace's nest set differs from its nests");
            }
        }
        let scanned = self.spaces.iter().any(|s| s.object == absent);
        if self.space_position(absent).is_some() != scanned {
            return Err("the index and the records disagree on an object id");
        }
        Ok(())
    }

    /// The `MapIoPage` `effect` into `space`.
    #[inline]
    fn map(&mut self, space: ObjectId, effect: &Effect) -> Result<(), &'static str> {
        let position = self
            .space_position(space)
            .ok_or("the IoSpace has no stage-2 table")?;
        self.map_at(position, effect)
    }

    /// Where `space`'s record is, for [`State::map_through`] (`None`: the
    /// IoSpace has no stage-2 table).
    #[inline]
    pub fn space_at(&self, space: ObjectId) -> Option<SpaceAt> {
        self.space_position(space).map(|position| SpaceAt {
            object: space,
            position,
        })
    }

    /// [`State::apply`] of a `MapIoPage` `effect` into the IoSpace whose
    /// record [`State::space_at`] found (`at`): straight to the stage-2
    /// write, without the dispatch over every effect and without searching
    /// for the record again while it is still the IoSpace's (a stale `at`
    /// is searched again). Needs no unit (`IoSpace.Map` holds the state
    /// alone). Given any other effect it does nothing: the caller applies
    /// those with [`State::apply`]. Out of line, so that the effect
    /// sink's dispatch stays a jump.
    #[inline(never)]
    pub fn map_through(&mut self, at: SpaceAt, effect: &Effect) {
        let Effect::MapIoPage { space, .. } = *effect else {
            return;
        };
        let here = self
            .spaces
            .get(at.position)
            .is_some_and(|s| s.object == space && space == at.object);
        let result = if here {
            self.map_at(at.position, effect)
        } else {
            self.map(space, effect)
        };
        if let Err(why) = result {
            not_applied::<E>("MapIoPage", why);
        }
    }

    /// [`State::map`] into the record at `position`: a 4 KiB page in the
    /// region of the last-level table the space remembers
    /// ([`Space::leaf_table`]) is written there, inline; the rest
    /// ([`State::map_walking`]) walks from the root.
    #[inline(always)]
    fn map_at(&mut self, position: usize, effect: &Effect) -> Result<(), &'static str> {
        let (ipa, paddr, size_bits, rights) = leaf_of(effect)?;
        let s = &self.spaces[position];
        match s.leaf_table {
            Some((region, table))
                if size_bits == 12 && region == ipa >> 21 && !s.dirty_tracking =>
            {
                s.table
                    .map_4k_in(&self.mem(), table, ipa, paddr, perms(rights))
                    .map_err(|_| "the stage-2 table refused the mapping")
            }
            _ => self.map_walking(position, effect),
        }
    }

    /// [`State::map_at`] outside the remembered region, of a larger page,
    /// or with dirty tracking on.
    #[inline(never)]
    fn map_walking(&mut self, position: usize, effect: &Effect) -> Result<(), &'static str> {
        let (ipa, paddr, size_bits, rights) = leaf_of(effect)?;
        let size = page_size(size_bits).ok_or("a Frame size the IOMMU cannot map")?;
        let Space {
            object: space,
            table,
            dirty_tracking,
            leaf_table,
            ..
        } = self.spaces[position];
        let mem = self.mem();
        let refused = |_| "the stage-2 table refused the mapping";
        if size == PageSize::Size4K {
            // One 4 KiB page: into its region's last-level table, walked
            // to (and built) only when the region is not the last one.
            let region = ipa >> 21;
            let leaf = match leaf_table {
                Some((r, t)) if r == region => t,
                _ => {
                    let t = table
                        .leaf_table_or_new(&mem, &mut self.pool.of_space(space), ipa)
                        .map_err(refused)?;
                    self.spaces[position].leaf_table = Some((region, t));
                    t
                }
            };
            table
                .map_4k_in(&mem, leaf, ipa, paddr, perms(rights))
                .map_err(refused)?;
        } else {
            table
                .map(
                    &mem,
                    &mut self.pool.of_space(space),
                    ipa,
                    paddr,
                    size,
                    perms(rights),
                )
                .map_err(refused)?;
        }
        if dirty_tracking {
            // Written since tracking started: none of it yet.
            let _ = table.set_dirty_state(&mem, ipa, size.bytes(), true);
        }
        Ok(())
    }

    #[inline]
    fn unmap(&mut self, space: ObjectId, ipa: u64) -> Result<(), &'static str> {
        let position = match self.spaces.get(self.recent) {
            Some(s) if s.object == space => Some(self.recent),
            _ => self.space_position(space),
        };
        let s = position
            .and_then(|i| self.spaces.get(i))
            .ok_or("the IoSpace has no stage-2 table")?;
        self.recent = position.unwrap_or(0);
        let (table, nests, span, did) = (s.table, s.nests, s.shadow_span, s.did);
        let mem = self.mem();
        // In the region [`State::map`] last reached, the entry is a 4 KiB
        // leaf of its table (the region's 2 MiB entry is that table).
        let (pa, bytes) = match s.leaf_table {
            Some((region, leaf)) if region == ipa >> 21 => table
                .unmap_4k_in(&mem, leaf, ipa)
                .map(|pa| (pa, 4096))
                .map_err(|_| "nothing mapped there")?,
            _ => table
                .unmap(&mem, ipa)
                .map(|(pa, size)| (pa, size.bytes()))
                .map_err(|_| "nothing mapped there")?,
        };
        // VT-d shadows were composed through stage 2: the entries composed
        // through the unmapped IPA (a stage-1 table page there, or a leaf
        // pointing into it) are dropped now, before the invalidation that
        // follows; the others keep translating. A space without nests has
        // no shadow to drop, nor one whose shadows' span the IPA misses;
        // and when none depended on the IPA, the invalidation may spare
        // their tags ([`ShadowTags`]).
        let start = ipa & !(bytes - 1);
        if U::SHADOWS && nests != 0 {
            let near = start < span.1 && span.0 < start.saturating_add(bytes);
            let dropped = near
                && self.drop_shadow_dependents((space, position, &table, nests), start, pa, bytes);
            self.shadow_tags = match self.shadow_tags {
                _ if dropped => ShadowTags::Owed,
                ShadowTags::Untouched => ShadowTags::Spared(did),
                ShadowTags::Spared(d) if d == did => ShadowTags::Spared(did),
                _ => ShadowTags::Owed,
            };
        }
        Ok(())
    }

    /// Drops from the shadows of `space`'s nests (`nests`, its nest set;
    /// `table`, its stage 2; `position`, its record's) every entry
    /// composed through `[ipa, ipa + bytes)`, which stage 2 mapped to
    /// `pa`; when none depended on it, sets its [`Space::shadow_span`] to
    /// what they record. Whether any nest depended on it.
    fn drop_shadow_dependents(
        &mut self,
        (space, position, table, nests): (ObjectId, Option<usize>, &PageTable<U::Format>, u32),
        ipa: u64,
        pa: u64,
        bytes: u64,
    ) -> bool {
        let mem = self.mem();
        let (mut span, mut dropped) = (NO_SPAN, false);
        for i in bits(nests) {
            let Some(nest) = self.nests[i].as_mut() else {
                continue;
            };
            if nest.space != space {
                continue;
            }
            if nest.dependencies.touches(ipa, bytes) {
                dropped = true;
                if let Some(shadow) = shadow_at(nest.page, table) {
                    nest.dependencies
                        .drop_dependents(&mem, &shadow, ipa, bytes, pa);
                }
            } else {
                span = union(span, nest.dependencies.span());
            }
        }
        // No nest depended on the IPA (one unmap of many, as a revoke
        // makes): the span becomes exactly what the nests record (their
        // spans, joined), so the next unmaps away from it visit none.
        // Otherwise (the unmap that ends a zero-copy request, before the
        // driver's next `Invalidate`) it stays as it was, which still
        // holds everything: dropping only shrinks the records.
        if !dropped && let Some(s) = position.and_then(|i| self.spaces.get_mut(i)) {
            s.shadow_span = span;
        }
        dropped
    }

    /// Queues the tags of the IoSpace with model DID `did`: its stage 2
    /// and, on VT-d, its shadows (SMMUv3's per-VMID invalidation covers
    /// the nests' ASIDs), unless what happened since the last wait spares
    /// them ([`ShadowTags`]).
    #[inline]
    fn note_tags(&mut self, unit: &U, did: u16) {
        let spaces = &self.spaces;
        // Model DIDs are unique among IoSpaces: the record at the hint
        // with this DID is the space's.
        let (space, nests) = match spaces.get(self.recent) {
            Some(s) if s.did == did => (Some(s.object), s.nests),
            _ => self
                .by_did
                .find(u32::from(did), |i| spaces.get(i).filter(|s| s.did == did))
                .map_or((None, 0), |s| (Some(s.object), s.nests)),
        };
        if let Some(space) = space
            && !self.pending_spaces.contains(&space)
            && self.pending_spaces.push(space).is_err()
        {
            // Too many to name: a failure blocks everything.
            self.pending_tags.clear();
            let _ = self.pending_tags.push(0);
        }
        let spared = matches!(self.shadow_tags, ShadowTags::Spared(d) if d == did)
            && !unit.nests_walk_stage2();
        let shadows = if U::SHADOWS && !spared { nests } else { 0 };
        // Every one of them: the space's and each shadow's (up to its
        // share of nests; none may be dropped).
        self.note_tag(space_tag(did));
        for i in bits(shadows) {
            self.note_tag(U::nest_tag(i));
        }
    }

    /// Queues `tag` unless it is queued; when the list is full, queues
    /// everything instead (tag 0, alone and so first).
    #[inline]
    fn note_tag(&mut self, tag: u16) {
        if !has_tag(&self.pending_tags, tag) && self.pending_tags.push(tag).is_err() {
            self.pending_tags.clear();
            let _ = self.pending_tags.push(0);
        }
    }

    /// Invalidates the queued tags (domain-selective IOTLB on VT-d, TLBI
    /// by VMID on SMMUv3) and waits for completion. On failure, fails
    /// closed for the IoSpaces they belong to.
    /// The tags are read where they are queued (moving the vectors out
    /// cost a ~100-instruction `memcpy` per `IoSpace.Unmap` on aarch64,
    /// kernel/README.md "Measured"); tag 0, everything, is only ever the
    /// first ([`State::note_tags`] clears the list to push it).
    #[inline]
    fn invalidate_pending(&mut self, unit: &mut U) -> Result<(), &'static str> {
        self.shadow_tags = ShadowTags::Untouched;
        let everything = self.pending_tags.first() == Some(&0);
        if unit.submit_tags(self, &self.pending_tags, everything) {
            self.pending_tags.clear();
            self.pending_spaces.clear();
            return Ok(());
        }
        self.pending_failed(unit, everything)
    }

    /// [`State::invalidate_pending`] when the unit failed: blocks the
    /// pending tags' IoSpaces (everything, for tag 0).
    #[cold]
    #[inline(never)]
    fn pending_failed(&mut self, unit: &mut U, everything: bool) -> Result<(), &'static str> {
        self.pending_tags.clear();
        let spaces = core::mem::take(&mut self.pending_spaces);
        let exposed = if everything {
            Exposed::Everything
        } else {
            Exposed::Spaces(&spaces)
        };
        unit.invalidation_failed(self, exposed);
        Err("the invalidation failed: its devices are blocked")
    }

    /// Invalidates `tags` (or everything) and waits; on failure blocks
    /// what `exposed` covers.
    pub(crate) fn invalidate_tags(
        &mut self,
        unit: &mut U,
        tags: &[u16],
        everything: bool,
        exposed: Exposed<'_, ObjectId>,
    ) -> Result<(), &'static str> {
        if unit.submit_tags(self, tags, everything) {
            return Ok(());
        }
        unit.invalidation_failed(self, exposed);
        Err("the invalidation failed: its devices are blocked")
    }

    /// After an invalidation failed or timed out: blocks every attachment
    /// `exposed` covers (not blocked yet; on SMMUv3 stops all DMA when
    /// even that is not confirmed) and fails the current invocation.
    pub(crate) fn fail_closed(&mut self, unit: &mut U, exposed: Exposed<'_, ObjectId>) {
        self.failure = Some(Error::IommuTimeout);
        if !unit.block(self, exposed) {
            E::log(&ktext::text!(
                "[io] blocking entries were written but not confirmed by the unit"
            ));
        }
    }

    /// Finds or builds the nest for (`space`, `root_ipa`).
    fn nest(
        &mut self,
        unit: &mut U,
        space: ObjectId,
        root_ipa: u64,
    ) -> Result<usize, &'static str> {
        if let Some(i) = self.nest_index(space, root_ipa) {
            return Ok(i);
        }
        let index = self
            .nests
            .iter()
            .position(Option::is_none)
            .ok_or("every nest slot is in use")?;
        let page = self
            .pool
            .of_space(space)
            .alloc_zeroed_frame()
            .ok_or("the IoSpace's table reservation is used up")?;
        let built = unit.build_nest(self, space, root_ipa, index, page);
        let did = self.space(space).map(|s| s.did);
        let (Ok(()), Ok(did)) = (built, did) else {
            self.give_back(Account::Space(space), page);
            return Err(built
                .err()
                .or(did.err())
                .unwrap_or("the IoSpace has no stage-2 table"));
        };
        self.nests[index] = Some(Nest {
            space,
            root_ipa,
            page,
            users: 0,
            dependencies: Dependencies::new(),
            did,
        });
        if let Some(i) = self.space_position(space) {
            self.spaces[i].nests |= 1 << index;
        }
        Ok(index)
    }

    /// The slot of the nest for (`space`, `root_ipa`), if devices use it.
    #[inline]
    pub(crate) fn nest_index(&self, space: ObjectId, root_ipa: u64) -> Option<usize> {
        self.nest_found(space, root_ipa).map(|(index, _)| index)
    }

    /// The slot of the nest for (`space`, `root_ipa`) and its DID, if
    /// devices use it: found once, for the unit's `invalidate_nest`.
    #[inline]
    pub(crate) fn nest_found(&self, space: ObjectId, root_ipa: u64) -> Option<(usize, u16)> {
        self.nests.iter().enumerate().find_map(|(index, n)| {
            n.as_ref()
                .filter(|n| n.space == space && n.root_ipa == root_ipa)
                .map(|n| (index, n.did))
        })
    }

    /// Points a requester (or PASID) at `space` or at its nest for
    /// `stage1_root`. If the unit fails midway, the requester is blocked
    /// again (fail closed) and the invocation fails.
    fn install(
        &mut self,
        unit: &mut U,
        rid: u32,
        pasid: Option<u32>,
        space: ObjectId,
        stage1_root: Option<u64>,
    ) -> Result<(), &'static str> {
        let failed_before = self.failure.is_some();
        let result = self.install_entry(unit, rid, pasid, space, stage1_root);
        if result.is_err()
            && !failed_before
            && self.failure.is_some()
            && let Ok(requester) = u16::try_from(rid)
        {
            let _ = unit.clear_entry(self, requester, pasid);
        }
        if result.is_err() {
            // A nest built for this attach and used by nobody.
            for i in 0..NESTS {
                if self.nests[i].as_ref().is_some_and(|n| n.users == 0) {
                    self.drop_nest(i);
                }
            }
        }
        result
    }

    fn install_entry(
        &mut self,
        unit: &mut U,
        rid: u32,
        pasid: Option<u32>,
        space: ObjectId,
        stage1_root: Option<u64>,
    ) -> Result<(), &'static str> {
        self.space(space)?;
        let nest = match stage1_root {
            Some(root_ipa) => Some((self.nest(unit, space, root_ipa)?, root_ipa)),
            None => None,
        };
        let requester = u16::try_from(rid).map_err(|_| "requester id above 16 bits")?;
        unit.write_entry(self, requester, pasid, space, nest)?;
        if self.space(space)?.dirty_tracking {
            // Tracked like the IoSpace's other devices; if the unit does
            // not take it, `install` blocks the entry again.
            let mem = self.mem();
            unit.set_entry_dirty_tracking(&mem, requester, pasid, true)
                .map_err(|_| self.unit_failed("turning dirty tracking on in the entry failed"))?;
        }
        if let Some((i, _)) = nest
            && let Some(n) = self.nests[i].as_mut()
        {
            n.users += 1;
        }
        self.attached
            .insert(Attachment {
                requester,
                pasid,
                space,
                nest: nest.map(|(i, _)| i),
                blocked: false,
            })
            .map_err(|_| "the attachment table is full")
    }

    /// Detaches a requester (or PASID): its entry blocks again. If the
    /// unit does not confirm that, the invocation fails and, on SMMUv3,
    /// DMA stops (fail closed); the record goes either way, as the
    /// capability's attachment did.
    fn clear(&mut self, unit: &mut U, rid: u32, pasid: Option<u32>) -> Result<(), &'static str> {
        if E::broken(Flaw::DeviceSurvivesDelete) {
            return Ok(());
        }
        let requester = u16::try_from(rid).map_err(|_| "requester id above 16 bits")?;
        let cleared = unit.clear_entry(self, requester, pasid);
        // Nobody can serve its page requests any more: the device (or
        // PASID) is blocked. A device's clear covers its PASIDs too.
        self.fail_requester(unit, requester, pasid);
        if cleared.is_err() {
            // Retried through the record, then escalated.
            self.fail_closed(unit, Exposed::Requester(requester, pasid));
        } else {
            self.release_unit_tables(unit, requester, pasid);
        }
        if let Some(gone) = self.attached.remove(requester, pasid)
            && let Some(i) = gone.nest
        {
            let last = self.nests[i].as_mut().is_some_and(|n| {
                n.users -= 1;
                n.users == 0
            });
            if last {
                self.drop_nest(i);
            }
        }
        cleared
    }

    /// Runs `write` (an attach) with the pool's pages charged to `space`,
    /// and records the unit's table pages it took as paid by `space`.
    pub(crate) fn with_space_tables<T>(
        &mut self,
        space: ObjectId,
        write: impl FnOnce(&mut Recording<'_, Charged<'_, M>>) -> T,
    ) -> T {
        self.with_tables_of(Account::Space(space), write)
    }

    /// Runs `write` with the pool's pages charged to `account`, and
    /// records the unit's table pages it took as paid by it.
    pub(crate) fn with_tables_of<T>(
        &mut self,
        account: Account<ObjectId>,
        write: impl FnOnce(&mut Recording<'_, Charged<'_, M>>) -> T,
    ) -> T {
        let mut charged = match account {
            Account::Space(space) => self.pool.of_space(space),
            Account::Unit => self.pool.of_unit(),
        };
        let mut frames = Recording::new(&mut charged);
        let result = write(&mut frames);
        let mut taken = [None; UNIT_TABLES_PER_ENTRY];
        for (slot, page) in taken.iter_mut().zip(frames.taken()) {
            *slot = Some(page);
        }
        for page in taken.into_iter().flatten() {
            if let Err(page) = self.unit_tables.record(page, account) {
                E::log(&ktext::text!(
                    "[io] unit table {:#x} not recorded: never freed",
                    page
                ));
            }
        }
        result
    }

    /// After a detach: frees the unit's tables on the requester's path
    /// that hold no entry any more (pool pages only), refunded to
    /// whoever paid for them. A unit that does not confirm the unlink
    /// keeps them (they may still be cached).
    pub(crate) fn release_unit_tables(&mut self, unit: &mut U, requester: u16, pasid: Option<u32>) {
        let tables = &self.unit_tables;
        let owned = |page: u64| tables.owns(page);
        let Ok(freed) = unit.release_tables(&self.pool.free.mem, requester, pasid, owned) else {
            E::log(&ktext::text!(
                "[io] unlinked unit tables not confirmed by the unit: kept"
            ));
            return;
        };
        for page in freed.into_iter().flatten() {
            match self.unit_tables.take(page) {
                Some(payer) => self.give_back(payer, page),
                None => E::log(&ktext::text!(
                    "[io] unit table {:#x} has no payer: kept",
                    page
                )),
            }
        }
    }

    /// Returns `page`, charged to `account`, to the pool (logging what
    /// cannot be).
    pub(crate) fn give_back(&mut self, account: Account<ObjectId>, page: u64) {
        match self.pool.give_back(account, page) {
            Ok(()) => {}
            Err(GiveBack::Full) => E::log(&ktext::text!(
                "[io] table page {:#x} does not fit the pool: leaked",
                page
            )),
            Err(GiveBack::NotCharged(why)) => E::log(&ktext::text!(
                "[io] table page {:#x} refunded to no reservation: {}",
                page,
                why
            )),
        }
    }

    /// Frees a nest no device uses any more (its entries are cleared; the
    /// effects that follow invalidate them).
    pub(crate) fn drop_nest(&mut self, index: usize) {
        let Some(nest) = self.nests[index].take() else {
            return;
        };
        if let Some(i) = self.space_position(nest.space) {
            self.spaces[i].nests &= !(1 << index);
        }
        let account = Account::Space(nest.space);
        let Ok(table) = self.space(nest.space).map(|s| s.table) else {
            self.give_back(account, nest.page);
            return;
        };
        U::free_nest(self, index, nest.page, nest.space, &table);
    }

    /// Returns every page of `table` but `keep` (an IoSpace's root, its
    /// object's own page) to the pool, refunded to `account`. The walk
    /// reads each table before it is given back, and nothing allocates
    /// meanwhile.
    pub(crate) fn free_tables(
        &mut self,
        account: Account<ObjectId>,
        table: &PageTable<U::Format>,
        keep: Option<u64>,
    ) {
        let mem = self.mem();
        // No space's last-level table cache may outlive its table.
        for s in self.spaces.iter_mut() {
            if s.table.root() == table.root() {
                s.leaf_table = None;
            }
        }
        table.for_each_table(&mem, |page| {
            if Some(page) != keep {
                self.give_back(account, page);
            }
        });
    }

    /// After a delete or revoke: forget IoSpaces and queues that died,
    /// return their tables to the pool. `alive(object, kind)` says
    /// whether a record's object still exists, `notification_alive`
    /// whether a queue's notification does.
    pub fn reconcile(
        &mut self,
        alive: impl Fn(ObjectId, ObjectKind) -> bool,
        notification_alive: impl Fn(&E::Notify) -> bool,
    ) {
        // A dead queue with page requests pending stays until
        // `fail_orphans` has answered them (`Failure`).
        for queue in self.queues.iter_mut() {
            if !alive(queue.object, ObjectKind::IoFaultQueue) {
                queue.dead = true;
                queue.notification = None;
            }
        }
        self.queues.retain(|q| !q.dead || !q.pending.is_empty());
        // A dead notification is never signalled: its memory may be
        // anything by the next fault (records still queue; `Pop` reads
        // them).
        for queue in self.queues.iter_mut() {
            if queue
                .notification
                .as_ref()
                .is_some_and(|n| !notification_alive(n))
                && !E::broken(Flaw::DanglingReferences)
            {
                queue.notification = None;
            }
        }
        let mut index = 0;
        while index < self.spaces.len() {
            let space = &self.spaces[index];
            if alive(space.object, ObjectKind::IoSpace) {
                index += 1;
                continue;
            }
            let (object, table) = (space.object, space.table);
            // Nests first, while the space's record still shapes their
            // shadows.
            for i in 0..NESTS {
                if self.nests[i].as_ref().is_some_and(|n| n.space == object) {
                    // Its devices were detached by the model's effects.
                    self.drop_nest(i);
                }
            }
            self.spaces.swap_remove(index);
            self.reindex();
            // The root is the object's own page: not a pool page.
            self.free_tables(Account::Space(object), &table, Some(table.root()));
            // Its unit tables still holding other IoSpaces' entries pass
            // to the unit (at most one per live attachment).
            let mut retired = Ok(0);
            self.unit_tables
                .hand_to_unit(&mut self.pool.ledger, object, |ledger| {
                    retired = ledger.retire(object);
                });
            match retired {
                Ok(0) => {}
                Ok(kept) => E::log(&ktext::text!(
                    "[io] a dead IoSpace kept {} table pages: leaked",
                    kept
                )),
                Err(why) => E::log(&ktext::text!(
                    "[io] a dead IoSpace had no table reservation: {}",
                    why
                )),
            }
        }
    }

    /// `IoUserTable.Invalidate`: makes the hardware see the driver's
    /// stage-1 changes in `start..start + length` of the table at
    /// (`space`, `root_ipa`). Returns the first IOVA not processed and
    /// the invalidation commands issued (each followed by one completion
    /// wait: VT-d's wait descriptor, SMMUv3's CMD_SYNC). If the unit does
    /// not complete them, the nest's devices are blocked and the answer
    /// is `IommuTimeout`.
    #[inline(always)]
    pub fn invalidate_user_table(
        &mut self,
        unit: &mut U,
        space: ObjectId,
        root_ipa: u64,
        start: u64,
        length: u64,
    ) -> Result<(u64, u64), Error> {
        if start & 0xfff != 0 || length & 0xfff != 0 {
            return Err(Error::InvalidAddress);
        }
        let end = start.checked_add(length).ok_or(Error::InvalidAddress)?;
        let Some((index, did)) = self.nest_found(space, root_ipa) else {
            // No device uses the table: nothing is cached, nothing to build.
            return Ok((end, 0));
        };
        let done = unit.invalidate_nest(self, index, did, space, root_ipa, start, length);
        if done == Err(Error::IommuTimeout) {
            self.fail_closed(unit, Exposed::Nest(index));
        }
        done
    }

    /// Every IoSpace: (object, stage-2 root, model DID, hardware tag).
    pub fn spaces(&self) -> impl Iterator<Item = (ObjectId, u64, u16, u16)> + '_ {
        self.spaces
            .iter()
            .map(|s| (s.object, s.table.root(), s.did, space_tag(s.did)))
    }

    /// Every leaf of every IoSpace's stage 2: (space, IPA, physical
    /// address, size bits, rights).
    pub fn stage2_leaves(&self, mut visit: impl FnMut(ObjectId, u64, u64, u32, Perms)) {
        let mem = self.mem();
        for s in self.spaces.iter() {
            let object = s.object;
            s.table.for_each_leaf(&mem, |ipa, pa, bits, perms| {
                visit(object, ipa, pa, bits, perms)
            });
        }
    }

    /// Every nest: (index, space, stage-1 root IPA, page, hardware tag,
    /// the IPA its CD page is mapped at on SMMUv3).
    pub fn nests(&self, mut visit: impl FnMut(usize, ObjectId, u64, u64, u16, Option<u64>)) {
        for (index, nest) in self.nests.iter().enumerate() {
            let Some(nest) = nest else { continue };
            let cd_ipa = self
                .space(nest.space)
                .ok()
                .and_then(|s| U::cd_ipa(s.table.input_bits(), index));
            visit(
                index,
                nest.space,
                nest.root_ipa,
                nest.page,
                U::nest_tag(index),
                cd_ipa,
            );
        }
    }

    /// Every attachment record: (requester, PASID, space, nest, blocked).
    pub fn attachments(&self) -> impl Iterator<Item = &Attachment<ObjectId>> + '_ {
        self.attached.iter()
    }
}

/// The numbers of the bits set in `set`, lowest first.
/// An empty range of IPAs ([`Space::shadow_span`]).
const NO_SPAN: (u64, u64) = (u64::MAX, 0);

/// Every IPA ([`Space::shadow_span`] not known).
pub(crate) const ANY_SPAN: (u64, u64) = (0, u64::MAX);

/// The smallest range holding both ranges of IPAs (`[start, end)`; an
/// empty one, start >= end, adds nothing).
fn union(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    if b.0 >= b.1 {
        a
    } else if a.0 >= a.1 {
        b
    } else {
        (a.0.min(b.0), a.1.max(b.1))
    }
}

fn bits(mut set: u32) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        let bit = set.trailing_zeros();
        set &= set.wrapping_sub(1);
        (bit < 32).then_some(bit as usize)
    })
}

/// Whether `tags` holds `tag`: a plain loop over the few queued tags
/// (`<[u16]>::contains` is a chunked search whose set-up cost 72
/// instructions per `IoSpace.Unmap`, kernel/README.md "Measured").
#[inline]
#[allow(clippy::manual_contains)] // `contains` is what this avoids
fn has_tag(tags: &[u16], tag: u16) -> bool {
    tags.iter().any(|&t| t == tag)
}

/// Logs that the effect named `name` was not applied, and why (a kernel
/// bug: invocations check first).
#[cold]
#[inline(never)]
fn not_applied<E: Env>(name: &str, why: &str) {
    E::log(&ktext::text!("[io] {} not applied: {}", name, why));
}

/// What a refused reservation of a new IoSpace's table pages answers.
/// The name of an IOMMU effect in a console line: printing the effect with
/// its derived `Debug` would pull `core::fmt`'s struct builders and every
/// field's `Debug` into the kernel (kernel/README.md, "Size").
fn effect_name(effect: &Effect) -> &'static str {
    match effect {
        Effect::MapIoPage { .. } => "MapIoPage",
        Effect::UnmapIoPage { .. } => "UnmapIoPage",
        Effect::InstallDeviceEntry { .. } => "InstallDeviceEntry",
        Effect::InstallPasidEntry { .. } => "InstallPasidEntry",
        Effect::ClearDeviceEntry { .. } => "ClearDeviceEntry",
        Effect::ClearPasidEntry { .. } => "ClearPasidEntry",
        Effect::InvalidateDomain { .. } => "InvalidateDomain",
        Effect::WaitForInvalidation { .. } => "WaitForInvalidation",
        Effect::RouteFaults { .. } => "RouteFaults",
        _ => "an IOMMU effect",
    }
}

fn reservation_error(e: BudgetError) -> Error {
    match e {
        BudgetError::LedgerFull => Error::ObjectTableFull,
        _ => Error::TableMemoryExhausted,
    }
}

/// The leaf a `MapIoPage` effect writes: its IPA, physical address, size
/// (log2 bytes) and rights.
#[inline(always)]
fn leaf_of(effect: &Effect) -> Result<(u64, u64, u8, Rights), &'static str> {
    match *effect {
        Effect::MapIoPage {
            ipa,
            paddr,
            size_bits,
            rights,
            ..
        } => Ok((ipa, paddr, size_bits, rights)),
        _ => Err("not a MapIoPage"),
    }
}

fn perms(rights: Rights) -> Perms {
    Perms {
        read: rights.contains(Rights::READ),
        write: rights.contains(Rights::WRITE),
    }
}

fn page_size(size_bits: u8) -> Option<PageSize> {
    match size_bits {
        12 => Some(PageSize::Size4K),
        21 => Some(PageSize::Size2M),
        30 => Some(PageSize::Size1G),
        _ => None,
    }
}

/// The VT-d shadow table rooted at `root`, shaped like the stage 2 `like`.
pub(crate) fn shadow_at<F: iommu::pagetable::PageTableFormat + Copy>(
    root: u64,
    like: &PageTable<F>,
) -> Option<PageTable<F>> {
    PageTable::at(root, *like.format(), like.height(), like.input_bits()).ok()
}
