//! IOMMU capabilities at work: applies the capability model's IOMMU effects
//! to the unit (stage-2 tables, device and PASID entries, VT-d shadow
//! tables, SMMUv3 context descriptors, fault routes) and keeps the IO fault
//! queues.
//!
//! ```text
//!  IoSpace object page ── stage-2 root (IPA -> PA), intermediate tables
//!        │                 from the table pool
//!        ├── device attached directly: context/PASID entry or STE -> root
//!        └── IoUserTable (driver's stage 1 at root_ipa) = a "nest":
//!              SMMUv3: CD page from the pool, mapped read-only at an IPA in
//!                      the reserved window; STE nested (stage 1 + stage 2)
//!              VT-d:   shadow table from the pool (IOVA -> PA composed by
//!                      `Invalidate`); context/PASID entry -> shadow
//! ```
//!
//! Hardware tags: an IoSpace with model DID `d` uses tag `d + 1` (VT-d
//! reserves DID 0 under caching mode); nest `i` uses DID `0x8001 + i` for
//! its shadow (VT-d) or ASID `i + 1` (SMMUv3), so no two tables share a tag.
//!
//! Table memory is charged to the IoSpace it serves (`iommu::budget`):
//! each IoSpace reserves [`SPACE_BUDGET`] pages of the pool when it is
//! created (`TableMemoryExhausted` if the pool cannot set them aside), and
//! every page of its stage 2, its shadows and its CDs comes out of that
//! reservation and goes back to it. So do the unit's own tables (context,
//! PASID, level-2 stream tables) an attach needs: charged to the attaching
//! IoSpace, freed and refunded when their last entry goes; one still
//! shared when its payer dies passes to the [`UNIT_FLOOR`] pages no
//! IoSpace may reserve. So one IoSpace that fills its tables runs out
//! alone.
//!
//! Every effect is applied under the unit lock; invocations check
//! beforehand that the account they charge has enough pages left
//! ([`ensure_pool`], [`ensure_attach_room`]), so an effect never fails for
//! lack of memory.
//!
//! Fail closed: an invalidation that fails or times out blocks every
//! device that may still translate through what it was meant to remove
//! (`iommu::attachments`; on SMMUv3, DMA stops altogether when even that
//! cannot be confirmed) and fails the invocation with `IommuTimeout`
//! ([`take_failure`]). Shares: one IoSpace holds at most
//! [`SHARE`] of the unit's attachments and nests (`IoShareExhausted`).

use crate::frames::BootFrames;
use crate::iommu_unit::{DirectMemory, DmaFault, UNIT, Unit};
use crate::testing::seeds::{Seed, planted};
use abi::Error;
use caps::{Effect, FaultSource, ObjectId, Rights};
use iommu::FrameAllocator;
use iommu::attachments::{Attachment, Attachments, Exposed, Share, ShareError};
use iommu::budget::{
    Account, Budget, BudgetError, Ledger, Recording, UNIT_TABLES_PER_ENTRY, UnitTables,
};
use iommu::pagetable::{PageSize, PageTable, Perms};

/// Most live IoSpaces, nests, attached requesters, routes and queues.
const SPACES: usize = 64;
/// Table pages each IoSpace reserves when it is created: the most its
/// stage 2, shadows and CDs may hold. The `edu` tests' IoSpaces peak at 9
/// (kernel/README.md); 64 leaves room for a driver spread over about 50
/// 2 MiB regions.
pub const SPACE_BUDGET: usize = 64;
/// Pool pages no IoSpace may reserve: the unit's context and PASID tables
/// (VT-d) and level-2 stream tables (SMMUv3) still shared by other
/// IoSpaces when the IoSpace that paid for them died (at most one per
/// attachment) pass to them.
pub const UNIT_FLOOR: usize = 64;
/// Pages taken at boot for IOMMU tables created after boot: a reservation
/// for every one of the [`SPACES`] IoSpaces plus the unit's floor
/// (4,160 pages, 16.25 MiB).
const POOL_PAGES: usize = SPACES * SPACE_BUDGET + UNIT_FLOOR;
/// Pages an invocation needs left in the IoSpace's account before it may
/// change IO tables: a stage-2 walk (3), a shadow or CD (1), or a VT-d
/// shadow update over two 2 MiB regions (6); for an attach, the unit's
/// context / PASID / level-2 stream tables it may need (3), which are
/// charged to the attaching IoSpace too. With margin.
pub const POOL_RESERVE: usize = 8;
const NESTS: usize = 32;
const ATTACHED: usize = 64;
/// The unit's table pages from the pool in use at once: each holds a
/// live entry, and one attachment's entry needs at most
/// [`UNIT_TABLES_PER_ENTRY`].
const UNIT_TABLES: usize = ATTACHED * UNIT_TABLES_PER_ENTRY;
const QUEUES: usize = 32;
/// What one IoSpace may use of the unit's `ATTACHED` attachment records
/// and `NESTS` nests: a quarter, so one IoSpace's holder cannot fill
/// them for everyone.
pub const SHARE: Share = Share {
    attachments: ATTACHED / 4,
    nests: NESTS / 4,
};
/// Records one fault queue holds; later faults are counted as lost.
const QUEUE_DEPTH: usize = 32;
/// Pages one `Invalidate` composes on a shadow-nested unit (bounded work).
#[cfg(target_arch = "x86_64")]
pub const SHADOW_PAGES_PER_CALL: u64 = 512;

#[cfg(target_arch = "x86_64")]
type Stage2Format = iommu::vtd::tables::SecondStageFormat;
#[cfg(target_arch = "aarch64")]
type Stage2Format = iommu::smmuv3::pagetable::Stage2Format;
type Stage2 = PageTable<Stage2Format>;

/// Free table pages.
struct FreePages {
    pages: heapless::Vec<u64, POOL_PAGES>,
}

impl FrameAllocator for FreePages {
    fn alloc_zeroed_frame(&mut self) -> Option<u64> {
        let page = self.pages.pop()?;
        // SAFETY: pool pages are kernel-owned frames in the direct map that
        // no table references any more (they were freed after their
        // entries were cleared and invalidated).
        unsafe { core::ptr::write_bytes(crate::mem::phys_to_virt(page) as *mut u8, 0, 4096) };
        Some(page)
    }
}

/// The table pool: its free pages and who may take them.
struct Pool {
    free: FreePages,
    ledger: Ledger<ObjectId, SPACES>,
}

/// The pool as one account sees it: every page taken is charged to it.
type Charged<'a> = iommu::budget::Charged<'a, FreePages, ObjectId, SPACES>;

impl Pool {
    /// The pool seen by `space`: pages for its stage 2, shadows and CDs.
    fn of_space(&mut self, space: ObjectId) -> Charged<'_> {
        Charged::new(&mut self.free, &mut self.ledger, Account::Space(space))
    }

    /// The pool seen by the unit: pages for its context, PASID and stream
    /// tables.
    fn of_unit(&mut self) -> Charged<'_> {
        Charged::new(&mut self.free, &mut self.ledger, Account::Unit)
    }

    /// Returns `page`, charged to `account`, to the pool.
    fn give_back(&mut self, account: Account<ObjectId>, page: u64) {
        if self.free.pages.push(page).is_err() {
            crate::println!("[io] table page {page:#x} does not fit the pool: leaked");
            return;
        }
        if let Err(why) = self.ledger.refund(account) {
            crate::println!("[io] table page {page:#x} refunded to no reservation: {why:?}");
        }
    }

    /// `TableMemoryExhausted` unless `account` has [`POOL_RESERVE`] pages
    /// left.
    fn ensure(&self, account: Account<ObjectId>) -> Result<(), Error> {
        if self.ledger.available(account) >= POOL_RESERVE {
            Ok(())
        } else {
            Err(Error::TableMemoryExhausted)
        }
    }
}

struct Space {
    object: ObjectId,
    table: Stage2,
    did: u16,
}

/// A driver's stage-1 table in use by devices: (space, root IPA) and what
/// the kernel built for it.
struct Nest {
    space: ObjectId,
    root_ipa: u64,
    /// VT-d: the shadow table's root; SMMUv3: the CD page.
    page: u64,
    users: u32,
    /// VT-d: how many leaves the shadow holds (a clear of an empty shadow
    /// is skipped).
    leaves: u64,
}

struct Queue {
    object: ObjectId,
    notification: Option<crate::sched::Target>,
    badge: u64,
    records: heapless::Deque<[u64; 6], QUEUE_DEPTH>,
    lost: u64,
}

struct State {
    pool: Pool,
    spaces: heapless::Vec<Space, SPACES>,
    nests: [Option<Nest>; NESTS],
    /// Requesters (or PASIDs) pointed at a domain, with their nest.
    attached: Attachments<ObjectId, ATTACHED>,
    /// The unit's own table pages taken from the pool, and who paid.
    unit_tables: UnitTables<ObjectId, UNIT_TABLES>,
    routes: heapless::Vec<(FaultSource, ObjectId), ATTACHED>,
    queues: heapless::Vec<Queue, QUEUES>,
    interrupt_on: bool,
    /// Hardware tags to invalidate at the next `WaitForInvalidation`.
    pending_tags: heapless::Vec<u16, PENDING_TAGS>,
    /// The IoSpaces those tags belong to (whose devices a failed
    /// invalidation blocks).
    pending_spaces: heapless::Vec<ObjectId, PENDING_TAGS>,
    /// An invalidation failed or timed out during the current invocation.
    failure: Option<Error>,
    /// IoSpaces whose stage 2 lost entries since the last invalidation:
    /// their VT-d shadows are cleared before it.
    dirty: heapless::Vec<ObjectId, SPACES>,
}

/// Most tags one batch of invalidations names (more: everything).
const PENDING_TAGS: usize = 16;

static STATE: spin::Mutex<State> = spin::Mutex::new(State {
    pool: Pool {
        free: FreePages {
            pages: heapless::Vec::new(),
        },
        ledger: Ledger::new(Budget {
            per_space: SPACE_BUDGET,
            unit_floor: UNIT_FLOOR,
        }),
    },
    spaces: heapless::Vec::new(),
    nests: [const { None }; NESTS],
    attached: Attachments::new(SHARE),
    unit_tables: UnitTables::new(),
    routes: heapless::Vec::new(),
    queues: heapless::Vec::new(),
    interrupt_on: false,
    pending_tags: heapless::Vec::new(),
    pending_spaces: heapless::Vec::new(),
    failure: None,
    dirty: heapless::Vec::new(),
});

/// Takes the table pool's pages from the boot allocator.
pub fn reserve_pool(frames: &mut BootFrames) {
    let mut state = STATE.lock();
    let pool = &mut state.pool;
    let before = pool.free.pages.len();
    while !pool.free.pages.is_full() {
        let Some(page) = frames.alloc() else { break };
        let _ = pool.free.pages.push(page);
    }
    let added = pool.free.pages.len() - before;
    pool.ledger.add_pages(added);
    let spaces = Ledger::<ObjectId, SPACES>::spaces_for(pool.ledger.budget(), added);
    crate::println!(
        "[io] table pool: {added} pages, {SPACE_BUDGET} reserved per IoSpace: {spaces} IoSpaces at once"
    );
}

/// Before an `IoSpace.Map` in `space`: `TableMemoryExhausted` unless its
/// reservation can serve one more stage-2 walk.
pub fn ensure_pool(space: ObjectId) -> Result<(), Error> {
    STATE.lock().pool.ensure(Account::Space(space))
}

/// Before an attach to `space` (through the stage-1 table at `root_ipa`
/// for a nested attach): `TableMemoryExhausted` unless the unit's pages
/// (and `space`'s reservation, if a new nest is needed) can serve it,
/// `ObjectTableFull` unless the unit has an attachment record (and a
/// nest slot, if a new nest is needed) free, `IoShareExhausted` when
/// `space` already uses its [`SHARE`] (so the effects that follow cannot
/// fail for lack of room).
pub fn ensure_attach_room(space: ObjectId, root_ipa: Option<u64>) -> Result<(), Error> {
    let state = STATE.lock();
    // The unit's context, PASID and stream tables the attach may need are
    // charged to `space` too.
    state.pool.ensure(Account::Space(space))?;
    let new_nest = root_ipa.is_some_and(|root| {
        !state
            .nests
            .iter()
            .flatten()
            .any(|n| n.space == space && n.root_ipa == root)
    });
    if new_nest && state.nests.iter().all(Option::is_some) {
        return Err(Error::ObjectTableFull);
    }
    state.attached.admit(space, new_nest).map_err(|e| match e {
        ShareError::UnitFull => Error::ObjectTableFull,
        ShareError::SpaceShareUsed => Error::IoShareExhausted,
    })
}

/// Clears the failure record before an invocation.
pub fn forget_failure() {
    STATE.lock().failure = None;
}

/// `IommuTimeout` if an invalidation failed or timed out since
/// [`forget_failure`]: the invocation must fail (its devices were left
/// blocked).
pub fn take_failure() -> Option<Error> {
    STATE.lock().failure.take()
}

/// Records that the unit failed (an invalidation or its wait did not
/// complete) for the invocation's result, and passes `why` on.
fn unit_failed(failure: &mut Option<Error>, why: &'static str) -> &'static str {
    *failure = Some(Error::IommuTimeout);
    why
}

/// The hardware tag of an IoSpace's stage 2.
fn space_tag(did: u16) -> u16 {
    did + 1
}

/// The stage-2 table of a fresh IoSpace, rooted in its object's page.
fn stage2_at(unit: &Unit, root: u64) -> Option<Stage2> {
    match unit {
        #[cfg(target_arch = "x86_64")]
        Unit::Vtd(vtd) => {
            let levels = iommu::vtd::tables::SecondStageLevels::best(vtd.capability())?;
            PageTable::at(
                root,
                Stage2Format::for_unit(vtd.capability()),
                levels.height(),
                levels.input_bits(),
            )
            .ok()
        }
        #[cfg(target_arch = "aarch64")]
        Unit::Smmu(smmu) => {
            let bits = u32::from(unit.model_unit().ipa_bits);
            PageTable::at(
                root,
                Stage2Format::for_unit(smmu.features()),
                iommu::smmuv3::pagetable::levels_4k(bits),
                bits,
            )
            .ok()
        }
    }
}

/// Whether [`register_space`] would succeed for `count` new IoSpaces in a
/// row, changing nothing: the error the first failing one would return.
/// What `Untyped.Retype` of IoSpaces checks before it makes any.
pub fn can_register(count: usize) -> Result<(), Error> {
    let guard = UNIT.lock();
    let unit = guard.as_ref().ok_or(Error::NotSupported)?;
    // The stage-2 shape depends on the unit alone (any page-aligned root).
    stage2_at(unit, 0).ok_or(Error::NotSupported)?;
    let state = STATE.lock();
    for made in 1..=count {
        if state.spaces.len() + made > state.spaces.capacity() {
            return Err(Error::ObjectTableFull);
        }
        state
            .pool
            .ledger
            .can_reserve(made)
            .map_err(reservation_error)?;
    }
    Ok(())
}

/// What a refused reservation of a new IoSpace's table pages answers.
fn reservation_error(e: BudgetError) -> Error {
    match e {
        BudgetError::LedgerFull => Error::ObjectTableFull,
        _ => Error::TableMemoryExhausted,
    }
}

/// Records a new IoSpace whose zeroed page at `root` becomes its stage-2
/// root, and reserves its [`SPACE_BUDGET`] table pages. Errors:
/// `TableMemoryExhausted` when the pool cannot set them aside (too many
/// IoSpaces live), `ObjectTableFull` when the kernel's IoSpace records are
/// full; the caller deletes the IoSpace again.
pub fn register_space(object: ObjectId, root: u64, did: u16) -> Result<(), Error> {
    let guard = UNIT.lock();
    let unit = guard.as_ref().ok_or(Error::NotSupported)?;
    let table = stage2_at(unit, root).ok_or(Error::NotSupported)?;
    let mut state = STATE.lock();
    let state = &mut *state;
    state.spaces.retain(|s| s.object != object);
    if state.spaces.is_full() {
        return Err(Error::ObjectTableFull);
    }
    state
        .pool
        .ledger
        .reserve(object)
        .map_err(reservation_error)?;
    if planted(Seed::IoStage2Identity) {
        for page in (FOREIGN_IPA..FOREIGN_IPA + (2 << 20)).step_by(4096) {
            let read_write = Perms::READ_WRITE;
            let _ = table.map(
                &DirectMemory,
                &mut state.pool.of_space(object),
                page,
                page,
                PageSize::Size4K,
                read_write,
            );
        }
    }
    let _ = state.spaces.push(Space { object, table, did });
    Ok(())
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

/// Applies one IOMMU effect other than invalidation (which `Unit::apply`
/// does). Failures here are kernel bugs (invocations check first) and are
/// reported, never ignored silently.
pub fn apply(unit: &mut Unit, effect: &Effect) {
    let mut state = STATE.lock();
    let state = &mut *state;
    let result = match *effect {
        Effect::MapIoPage {
            space,
            ipa,
            paddr,
            size_bits,
            rights,
            ..
        } => state.map(space, ipa, paddr, size_bits, rights),
        Effect::UnmapIoPage { space, ipa, .. } => state.unmap(space, ipa),
        Effect::InstallDeviceEntry {
            rid,
            space,
            stage1_root,
            ..
        } => state.install(unit, rid, None, space, stage1_root),
        Effect::InstallPasidEntry {
            rid,
            pasid,
            space,
            stage1_root,
            ..
        } => state.install(unit, rid, Some(pasid), space, stage1_root),
        Effect::ClearDeviceEntry { rid, .. } => state.clear(unit, rid, None),
        Effect::ClearPasidEntry { rid, pasid, .. } => state.clear(unit, rid, Some(pasid)),
        Effect::InvalidateDomain { .. } | Effect::WaitForInvalidation { .. }
            if planted(Seed::IoSkipInvalidation) =>
        {
            Ok(())
        }
        Effect::InvalidateDomain { did, .. } => {
            state.clear_dirty_shadows();
            state.note_tags(did);
            Ok(())
        }
        Effect::WaitForInvalidation { .. } => {
            state.clear_dirty_shadows();
            state.invalidate_pending(unit)
        }
        Effect::RouteFaults { source, queue, .. } => {
            state.routes.retain(|(s, _)| *s != source);
            match queue {
                Some(q) => state
                    .routes
                    .push((source, q))
                    .map_err(|_| "the fault route table is full"),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    };
    if let Err(why) = result {
        crate::println!("[io] {effect:?} not applied: {why}");
    }
}

impl State {
    fn space(&self, object: ObjectId) -> Result<&Space, &'static str> {
        self.spaces
            .iter()
            .find(|s| s.object == object)
            .ok_or("the IoSpace has no stage-2 table")
    }

    fn map(
        &mut self,
        space: ObjectId,
        ipa: u64,
        paddr: u64,
        size_bits: u8,
        rights: Rights,
    ) -> Result<(), &'static str> {
        let size = page_size(size_bits).ok_or("a Frame size the IOMMU cannot map")?;
        let table = self.space(space)?.table;
        table
            .map(
                &DirectMemory,
                &mut self.pool.of_space(space),
                ipa,
                paddr,
                size,
                perms(rights),
            )
            .map_err(|_| "the stage-2 table refused the mapping")
    }

    fn unmap(&mut self, space: ObjectId, ipa: u64) -> Result<(), &'static str> {
        let table = self.space(space)?.table;
        table
            .unmap(&DirectMemory, ipa)
            .map_err(|_| "nothing mapped there")?;
        // VT-d shadows were composed through stage 2, and the unmapped page
        // may have held stage-1 tables: every shadow entry of the space may
        // depend on it. They are dropped before the invalidation that
        // follows (once per operation, however many pages it unmaps); the
        // driver's next Invalidate rebuilds them.
        if cfg!(target_arch = "x86_64")
            && !self.dirty.contains(&space)
            && self.dirty.push(space).is_err()
        {
            self.clear_shadows_of(space);
        }
        Ok(())
    }

    fn clear_shadows_of(&mut self, space: ObjectId) {
        let Ok(table) = self.space(space).map(|s| s.table) else {
            return;
        };
        for nest in self.nests.iter_mut().flatten() {
            if nest.space != space || nest.leaves == 0 {
                continue;
            }
            if let Some(shadow) = shadow_at(nest.page, &table) {
                shadow.remove_leaves_to(&DirectMemory, 0, u64::MAX);
                nest.leaves = 0;
            }
        }
    }

    fn clear_dirty_shadows(&mut self) {
        while let Some(space) = self.dirty.pop() {
            self.clear_shadows_of(space);
        }
    }

    /// Queues the tags of the IoSpace with model DID `did`: its stage 2
    /// and, on VT-d, its shadows (SMMUv3's per-VMID invalidation covers
    /// the nests' ASIDs).
    fn note_tags(&mut self, did: u16) {
        let mut tags: heapless::Vec<u16, 8> = heapless::Vec::new();
        let _ = tags.push(space_tag(did));
        let space = self.spaces.iter().find(|s| s.did == did).map(|s| s.object);
        if let Some(space) = space
            && !self.pending_spaces.contains(&space)
            && self.pending_spaces.push(space).is_err()
        {
            // Too many to name: a failure blocks everything.
            self.pending_tags.clear();
            let _ = self.pending_tags.push(0);
        }
        if cfg!(target_arch = "x86_64") {
            for (i, nest) in self.nests.iter().enumerate() {
                if nest.as_ref().is_some_and(|n| Some(n.space) == space) {
                    let _ = tags.push(0x8001 + i as u16);
                }
            }
        }
        for tag in tags {
            if !self.pending_tags.contains(&tag) && self.pending_tags.push(tag).is_err() {
                // Too many: invalidate everything (tag 0 marks it).
                self.pending_tags.clear();
                let _ = self.pending_tags.push(0);
                return;
            }
        }
    }

    /// Invalidates the queued tags (domain-selective IOTLB on VT-d, TLBI
    /// by VMID on SMMUv3) and waits for completion. On failure, fails
    /// closed for the IoSpaces they belong to.
    fn invalidate_pending(&mut self, unit: &mut Unit) -> Result<(), &'static str> {
        let everything = self.pending_tags.contains(&0);
        let tags = core::mem::take(&mut self.pending_tags);
        let spaces = core::mem::take(&mut self.pending_spaces);
        let exposed = if everything {
            Exposed::Everything
        } else {
            Exposed::Spaces(&spaces)
        };
        let done = match unit {
            #[cfg(target_arch = "x86_64")]
            Unit::Vtd(vtd) => {
                use iommu::vtd::qi::{Descriptor, IotlbScope};
                let done = if everything {
                    vtd.invalidate_all(&DirectMemory)
                } else {
                    let drain = vtd.capability().drd() || vtd.capability().dwd();
                    let descriptors = tags
                        .iter()
                        .map(|&tag| Descriptor::iotlb(IotlbScope::Domain(tag), drain));
                    vtd.submit(&DirectMemory, descriptors)
                };
                done.is_ok()
            }
            #[cfg(target_arch = "aarch64")]
            Unit::Smmu(smmu) => {
                use iommu::smmuv3::queue::Command;
                let mut commands: heapless::Vec<Command, PENDING_TAGS> = heapless::Vec::new();
                if everything {
                    let _ = commands.push(Command::CfgiAll);
                    let _ = commands.push(Command::TlbiNsnhAll);
                } else {
                    commands.extend(tags.iter().map(|&vmid| Command::TlbiS12Vmall { vmid }));
                }
                // Blocks the spaces' devices itself when the commands fail.
                let done = smmu.invalidate_or_block(
                    &DirectMemory,
                    &mut self.pool.of_unit(),
                    commands,
                    &mut self.attached,
                    exposed,
                );
                if done.is_err() {
                    self.failure = Some(Error::IommuTimeout);
                    return Err("the invalidation failed: its devices are blocked");
                }
                true
            }
        };
        if done {
            return Ok(());
        }
        self.fail_closed(unit, exposed);
        Err("the invalidation failed: its devices are blocked")
    }

    /// After an invalidation failed or timed out: blocks every attachment
    /// `exposed` covers (not blocked yet; on SMMUv3 stops all DMA when even
    /// that is not confirmed) and fails the current invocation.
    fn fail_closed(&mut self, unit: &mut Unit, exposed: Exposed<'_, ObjectId>) {
        self.failure = Some(Error::IommuTimeout);
        let confirmed = match unit {
            #[cfg(target_arch = "x86_64")]
            Unit::Vtd(vtd) => vtd.fail_closed(
                &DirectMemory,
                &mut self.pool.of_unit(),
                &mut self.attached,
                exposed,
            ),
            #[cfg(target_arch = "aarch64")]
            Unit::Smmu(smmu) => {
                let stopped = smmu.fail_closed(
                    &DirectMemory,
                    &mut self.pool.of_unit(),
                    &mut self.attached,
                    exposed,
                );
                if stopped {
                    crate::println!(
                        "[io] the SMMU does not confirm invalidations: all DMA stopped"
                    );
                }
                !stopped
            }
        };
        if !confirmed {
            crate::println!("[io] blocking entries were written but not confirmed by the unit");
        }
    }

    /// Finds or builds the nest for (`space`, `root_ipa`).
    fn nest(
        &mut self,
        unit: &mut Unit,
        space: ObjectId,
        root_ipa: u64,
    ) -> Result<usize, &'static str> {
        if let Some(i) = self.nests.iter().position(|n| {
            n.as_ref()
                .is_some_and(|n| n.space == space && n.root_ipa == root_ipa)
        }) {
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
        let built = self.build_nest(unit, space, root_ipa, index, page);
        if let Err(why) = built {
            self.pool.give_back(Account::Space(space), page);
            return Err(why);
        }
        self.nests[index] = Some(Nest {
            space,
            root_ipa,
            page,
            users: 0,
            leaves: 0,
        });
        Ok(index)
    }

    #[cfg(target_arch = "x86_64")]
    fn build_nest(
        &mut self,
        unit: &mut Unit,
        _space: ObjectId,
        _root_ipa: u64,
        _index: usize,
        _page: u64,
    ) -> Result<(), &'static str> {
        // A fresh shadow table: empty until the driver's first Invalidate.
        // Its DID may have been used by an earlier nest: flush it.
        let Unit::Vtd(vtd) = unit;
        vtd.invalidate_all(&DirectMemory).map_err(|_| {
            unit_failed(
                &mut self.failure,
                "the invalidation before reusing a shadow DID failed",
            )
        })
    }

    #[cfg(target_arch = "aarch64")]
    fn build_nest(
        &mut self,
        unit: &mut Unit,
        space: ObjectId,
        root_ipa: u64,
        index: usize,
        page: u64,
    ) -> Result<(), &'static str> {
        use iommu::smmuv3::cd::Cd;
        let model = unit.model_unit();
        let Unit::Smmu(smmu) = unit;
        let (table, did) = {
            let s = self.space(space)?;
            (s.table, s.did)
        };
        let cd_ipa = model.reserved_ipa_base + 4096 * index as u64;
        table
            .map(
                &DirectMemory,
                &mut self.pool.of_space(space),
                cd_ipa,
                page,
                PageSize::Size4K,
                Perms::READ,
            )
            .map_err(|_| "mapping the CD page in stage 2 failed")?;
        let asid = index as u16 + 1;
        let cd = Cd::for_nest(asid, root_ipa, u32::from(model.ipa_bits), smmu.features())
            .map_err(|_| "the CD was refused")?;
        for (i, word) in cd.0.iter().enumerate() {
            iommu::PhysMem::write_u64(&DirectMemory, page + 8 * i as u64, *word);
        }
        // The ASID may have served an earlier nest of this VMID.
        smmu.submit(
            &DirectMemory,
            [iommu::smmuv3::queue::Command::TlbiNhAsid {
                vmid: space_tag(did),
                asid,
            }],
        )
        .map_err(|_| {
            unit_failed(
                &mut self.failure,
                "the TLB invalidation of a reused ASID failed",
            )
        })
    }

    /// Points a requester (or PASID) at `space` or at its nest for
    /// `stage1_root`. If the unit fails midway, the requester is blocked
    /// again (fail closed) and the invocation fails.
    fn install(
        &mut self,
        unit: &mut Unit,
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
            let _ = self.clear_entry(unit, requester, pasid);
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
        unit: &mut Unit,
        rid: u32,
        pasid: Option<u32>,
        space: ObjectId,
        stage1_root: Option<u64>,
    ) -> Result<(), &'static str> {
        let (table, did) = {
            let s = self.space(space)?;
            (s.table, s.did)
        };
        let nest = match stage1_root {
            Some(root_ipa) => Some(self.nest(unit, space, root_ipa)?),
            None => None,
        };
        let requester = u16::try_from(rid).map_err(|_| "requester id above 16 bits")?;
        match unit {
            #[cfg(target_arch = "x86_64")]
            Unit::Vtd(vtd) => {
                use iommu::vtd::regs::RootTableMode;
                use iommu::vtd::tables::{LegacyContext, PasidConfig};
                let nest_page = nest.and_then(|i| self.nests[i].as_ref()).map(|n| n.page);
                let (domain, root) = match (nest, nest_page) {
                    (Some(i), Some(page)) => (0x8001 + i as u16, page),
                    _ => (space_tag(did), table.root()),
                };
                let levels = iommu::vtd::tables::SecondStageLevels::best(vtd.capability())
                    .ok_or("no second-stage depth")?;
                let scalable = matches!(vtd.root_table(), Some((_, RootTableMode::Scalable)));
                if scalable {
                    let config = match (nest, stage1_root) {
                        // Hardware nesting (ECAP.NEST): the unit walks the
                        // driver's table itself; the nest page is unused.
                        (Some(i), Some(root_ipa)) if hardware_nesting(vtd) => PasidConfig::Nested {
                            domain: 0x8001 + i as u16,
                            first_stage_table: root_ipa,
                            second_stage_table: table.root(),
                            levels,
                        },
                        _ => PasidConfig::SecondStage {
                            domain,
                            table: root,
                            levels,
                        },
                    };
                    self.with_space_tables(space, |frames| {
                        vtd.set_pasid_entry(
                            &DirectMemory,
                            frames,
                            requester,
                            pasid.unwrap_or(0),
                            Some(config),
                        )
                    })
                    .map_err(|_| {
                        unit_failed(&mut self.failure, "writing the PASID entry failed")
                    })?;
                } else {
                    if pasid.is_some() {
                        return Err("PASIDs need scalable mode");
                    }
                    let context = LegacyContext::Translated {
                        domain,
                        table: root,
                        levels,
                    };
                    self.with_space_tables(space, |frames| {
                        vtd.set_legacy_context(&DirectMemory, frames, requester, Some(context))
                    })
                    .map_err(|_| {
                        unit_failed(&mut self.failure, "writing the context entry failed")
                    })?;
                }
            }
            #[cfg(target_arch = "aarch64")]
            Unit::Smmu(smmu) => {
                use iommu::smmuv3::ste::Stage2Config;
                if pasid.is_some_and(|p| p != 0) {
                    return Err("this SMMU has no substreams");
                }
                let bits = table.input_bits();
                let config = Stage2Config {
                    vmid: space_tag(did),
                    table: table.root(),
                    ipa_bits: bits,
                    output_bits: smmu.features().idr5.oas_bits().min(48),
                };
                let sid = u32::from(requester);
                let cd_ipa = nest.map(|i| unit_reserved_base(bits) + 4096 * i as u64);
                self.with_space_tables(space, |frames| match cd_ipa {
                    Some(cd_ipa) => smmu.attach_nested(&DirectMemory, frames, sid, &config, cd_ipa),
                    None => smmu.attach_stage2(&DirectMemory, frames, sid, &config),
                })
                .map_err(|_| unit_failed(&mut self.failure, "installing the STE failed"))?;
            }
        }
        if let Some(i) = nest
            && let Some(n) = self.nests[i].as_mut()
        {
            n.users += 1;
        }
        self.attached
            .insert(Attachment {
                requester,
                pasid,
                space,
                nest,
                blocked: false,
            })
            .map_err(|_| "the attachment table is full")
    }

    /// Detaches a requester (or PASID): its entry blocks again. If the
    /// unit does not confirm that, the invocation fails and, on SMMUv3,
    /// DMA stops (fail closed); the record goes either way, as the
    /// capability's attachment did.
    fn clear(&mut self, unit: &mut Unit, rid: u32, pasid: Option<u32>) -> Result<(), &'static str> {
        if planted(Seed::IoDeviceSurvivesDelete) {
            return Ok(());
        }
        let requester = u16::try_from(rid).map_err(|_| "requester id above 16 bits")?;
        let cleared = self.clear_entry(unit, requester, pasid);
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

    /// Writes the blocking entry of a requester (or PASID) and invalidates it.
    fn clear_entry(
        &mut self,
        unit: &mut Unit,
        requester: u16,
        pasid: Option<u32>,
    ) -> Result<(), &'static str> {
        match unit {
            #[cfg(target_arch = "x86_64")]
            Unit::Vtd(vtd) => {
                use iommu::vtd::regs::RootTableMode;
                if matches!(vtd.root_table(), Some((_, RootTableMode::Scalable))) {
                    vtd.set_pasid_entry(
                        &DirectMemory,
                        &mut self.pool.of_unit(),
                        requester,
                        pasid.unwrap_or(0),
                        None,
                    )
                } else {
                    vtd.set_legacy_context(&DirectMemory, &mut self.pool.of_unit(), requester, None)
                }
                .map_err(|_| "clearing the device entry failed")
            }
            #[cfg(target_arch = "aarch64")]
            Unit::Smmu(smmu) => {
                // No substreams: the stream's STE covers every PASID.
                let _ = pasid;
                smmu.block_stream(
                    &DirectMemory,
                    &mut self.pool.of_unit(),
                    u32::from(requester),
                )
                .map_err(|_| "blocking the stream failed")
            }
        }
    }

    /// Runs `write` (an attach) with the pool's pages charged to `space`,
    /// and records the unit's table pages it took as paid by `space`.
    fn with_space_tables<T>(
        &mut self,
        space: ObjectId,
        write: impl FnOnce(&mut Recording<'_, Charged<'_>>) -> T,
    ) -> T {
        let mut charged = self.pool.of_space(space);
        let mut frames = Recording::new(&mut charged);
        let result = write(&mut frames);
        let mut taken = [None; UNIT_TABLES_PER_ENTRY];
        for (slot, page) in taken.iter_mut().zip(frames.taken()) {
            *slot = Some(page);
        }
        for page in taken.into_iter().flatten() {
            if let Err(page) = self.unit_tables.record(page, Account::Space(space)) {
                crate::println!("[io] unit table {page:#x} not recorded: never freed");
            }
        }
        result
    }

    /// After a detach: frees the unit's tables on the requester's path
    /// that hold no entry any more (pool pages only), refunded to
    /// whoever paid for them. A unit that does not confirm the unlink
    /// keeps them (they may still be cached).
    fn release_unit_tables(&mut self, unit: &mut Unit, requester: u16, pasid: Option<u32>) {
        let tables = &self.unit_tables;
        let owned = |page: u64| tables.owns(page);
        let mut freed = [None; UNIT_TABLES_PER_ENTRY];
        let released = match unit {
            #[cfg(target_arch = "x86_64")]
            Unit::Vtd(vtd) => vtd
                .release_tables(&DirectMemory, requester, pasid.unwrap_or(0), owned)
                .map(|released| {
                    for (slot, page) in freed.iter_mut().zip(released.pages()) {
                        *slot = Some(page);
                    }
                }),
            #[cfg(target_arch = "aarch64")]
            Unit::Smmu(smmu) => {
                // No substreams: the stream's STE covers every PASID.
                let _ = pasid;
                smmu.release_stream_table(&DirectMemory, u32::from(requester), owned)
                    .map(|released| freed[0] = released)
            }
        };
        if released.is_err() {
            crate::println!("[io] unlinked unit tables not confirmed by the unit: kept");
            return;
        }
        for page in freed.into_iter().flatten() {
            match self.unit_tables.take(page) {
                Some(payer) => self.pool.give_back(payer, page),
                None => crate::println!("[io] unit table {page:#x} has no payer: kept"),
            }
        }
    }

    /// Frees a nest no device uses any more (its entries are cleared; the
    /// effects that follow invalidate them).
    fn drop_nest(&mut self, index: usize) {
        let Some(nest) = self.nests[index].take() else {
            return;
        };
        let account = Account::Space(nest.space);
        let Ok(table) = self.space(nest.space).map(|s| s.table) else {
            self.pool.give_back(account, nest.page);
            return;
        };
        if cfg!(target_arch = "x86_64") {
            if let Some(shadow) = shadow_at(nest.page, &table) {
                free_tables(&mut self.pool, account, &shadow, None);
            }
        } else {
            let cd_ipa = unit_reserved_base(table.input_bits()) + 4096 * index as u64;
            let _ = table.unmap(&DirectMemory, cd_ipa);
            self.pool.give_back(account, nest.page);
        }
    }
}

/// Returns every page of `table` but `keep` (an IoSpace's root, its
/// object's own page) to the pool, refunded to `account`. The walk reads
/// each table before it is given back, and nothing allocates meanwhile.
fn free_tables(pool: &mut Pool, account: Account<ObjectId>, table: &Stage2, keep: Option<u64>) {
    table.for_each_table(&DirectMemory, |page| {
        if Some(page) != keep {
            pool.give_back(account, page);
        }
    });
}

/// Whether the unit nests in hardware (ECAP.NEST, scalable mode): then
/// the kernel installs PGTT=nested entries instead of shadows. QEMU 10 has
/// no NEST; the entry encoding is checked against the executable model in
/// the `iommu` crate (tests/vtd_translate.rs).
#[cfg(target_arch = "x86_64")]
fn hardware_nesting(vtd: &iommu::vtd::VtdUnit<crate::iommu_unit::DirectMmio>) -> bool {
    vtd.extended_capability().nest()
        && matches!(
            vtd.root_table(),
            Some((_, iommu::vtd::regs::RootTableMode::Scalable))
        )
}

/// The VT-d shadow table rooted at `root`, shaped like the stage 2 `like`.
fn shadow_at(root: u64, like: &Stage2) -> Option<Stage2> {
    PageTable::at(root, *like.format(), like.height(), like.input_bits()).ok()
}

/// Where the reserved IPA window starts for an `ipa_bits`-bit IoSpace.
fn unit_reserved_base(ipa_bits: u32) -> u64 {
    (1u64 << ipa_bits) - crate::iommu_unit::RESERVED_IPA_WINDOW
}

/// After a delete or revoke: forget IoSpaces and queues that died, return
/// their tables to the pool. `alive(object, kind)` says whether a record's
/// object still exists.
pub fn reconcile(
    alive: impl Fn(ObjectId, caps::ObjectKind) -> bool,
    notification_alive: impl Fn(&crate::sched::Target) -> bool,
) {
    let mut state = STATE.lock();
    let state = &mut *state;
    state
        .queues
        .retain(|q| alive(q.object, caps::ObjectKind::IoFaultQueue));
    // A dead notification is never signalled: its memory may be anything by
    // the next fault (records still queue; `Pop` reads them).
    for queue in state.queues.iter_mut() {
        if queue
            .notification
            .as_ref()
            .is_some_and(|n| !notification_alive(n))
            && !planted(Seed::DanglingReferences)
        {
            queue.notification = None;
        }
    }
    let mut index = 0;
    while index < state.spaces.len() {
        let space = &state.spaces[index];
        if alive(space.object, caps::ObjectKind::IoSpace) {
            index += 1;
            continue;
        }
        let (object, table) = (space.object, space.table);
        // Nests first, while the space's record still shapes their shadows.
        for i in 0..NESTS {
            if state.nests[i].as_ref().is_some_and(|n| n.space == object) {
                // Its devices were detached by the model's effects.
                state.drop_nest(i);
            }
        }
        state.spaces.swap_remove(index);
        // The root is the object's own page: not a pool page.
        free_tables(
            &mut state.pool,
            Account::Space(object),
            &table,
            Some(table.root()),
        );
        // Its unit tables still holding other IoSpaces' entries pass to
        // the unit (at most one per live attachment).
        let mut retired = Ok(0);
        state
            .unit_tables
            .hand_to_unit(&mut state.pool.ledger, object, |ledger| {
                retired = ledger.retire(object);
            });
        match retired {
            Ok(0) => {}
            Ok(kept) => crate::println!("[io] a dead IoSpace kept {kept} table pages: leaked"),
            Err(why) => crate::println!("[io] a dead IoSpace had no table reservation: {why:?}"),
        }
    }
}

/// `IoUserTable.Invalidate`: makes the hardware see the driver's stage-1
/// changes in `start..start + length` of the table at (`space`,
/// `root_ipa`). Returns the first IOVA not processed and the invalidation
/// commands issued (each followed by one completion wait: VT-d's wait
/// descriptor, SMMUv3's CMD_SYNC). If the unit does not complete them,
/// the nest's devices are blocked and the answer is `IommuTimeout`.
pub fn invalidate_user_table(
    space: ObjectId,
    root_ipa: u64,
    start: u64,
    length: u64,
) -> Result<(u64, u64), Error> {
    let mut guard = UNIT.lock();
    let unit = guard.as_mut().ok_or(Error::NotSupported)?;
    let mut state = STATE.lock();
    let state = &mut *state;
    if start & 0xfff != 0 || length & 0xfff != 0 {
        return Err(Error::InvalidAddress);
    }
    let end = start.checked_add(length).ok_or(Error::InvalidAddress)?;
    let Some(index) = state.nests.iter().position(|n| {
        n.as_ref()
            .is_some_and(|n| n.space == space && n.root_ipa == root_ipa)
    }) else {
        // No device uses the table: nothing is cached, nothing to build.
        return Ok((end, 0));
    };
    let done = invalidate_nest(state, unit, index, space, root_ipa, start, length);
    if done == Err(Error::IommuTimeout) {
        state.fail_closed(unit, Exposed::Nest(index));
    }
    done
}

/// [`invalidate_user_table`] for the nest at `index`.
fn invalidate_nest(
    state: &mut State,
    unit: &mut Unit,
    index: usize,
    space: ObjectId,
    root_ipa: u64,
    start: u64,
    length: u64,
) -> Result<(u64, u64), Error> {
    let end = start.saturating_add(length);
    // Only the VT-d shadow composes from the table's root.
    #[cfg(target_arch = "aarch64")]
    let _ = root_ipa;
    match unit {
        #[cfg(target_arch = "x86_64")]
        Unit::Vtd(vtd) if hardware_nesting(vtd) => {
            // The unit walks the driver's table: flush its first-stage
            // entries, for every PASID that uses this nest.
            use iommu::vtd::qi::{Descriptor, PasidIotlbScope};
            let domain = 0x8001 + index as u16;
            let mut descriptors: heapless::Vec<Descriptor, ATTACHED> = heapless::Vec::new();
            for a in state.attached.iter().filter(|a| a.nest == Some(index)) {
                let pasid = a.pasid.unwrap_or(0);
                let _ = descriptors.push(Descriptor::pasid_iotlb(PasidIotlbScope::Pasid {
                    domain,
                    pasid,
                }));
            }
            let commands = descriptors.len() as u64;
            vtd.submit(&DirectMemory, descriptors)
                .map_err(|_| Error::IommuTimeout)?;
            Ok((if length == 0 { u64::MAX } else { end }, commands))
        }
        #[cfg(target_arch = "x86_64")]
        Unit::Vtd(vtd) => {
            if length == 0 {
                // A shadow is built per range; "everything" would be 2^35 pages.
                return Err(Error::InvalidArgument);
            }
            let table = state.space(space).map_err(|_| Error::DeadObject)?.table;
            let page = state.nests[index].as_ref().map_or(0, |n| n.page);
            let shadow = shadow_at(page, &table).ok_or(Error::DeadObject)?;
            let take = length.min(SHADOW_PAGES_PER_CALL * 4096);
            state.pool.ensure(Account::Space(space))?;
            let composed = iommu::vtd::shadow::shadow_range(
                &DirectMemory,
                &mut state.pool.of_space(space),
                root_ipa,
                &table,
                &shadow,
                start,
                take,
                SHADOW_PAGES_PER_CALL,
                false,
            );
            // The leaf count lets a stage-2 unmap skip an empty shadow; after
            // a failure midway it is unknown, so the next unmap clears.
            let nest = state.nests[index].as_mut().ok_or(Error::DeadObject)?;
            let stats = match composed {
                Ok(stats) => stats,
                Err(_) => {
                    nest.leaves = u64::MAX;
                    return Err(Error::InvalidAddress);
                }
            };
            nest.leaves = nest
                .leaves
                .saturating_add(stats.added)
                .saturating_sub(stats.removed);
            // One domain-selective IOTLB invalidation of the shadow's DID.
            let descriptor = iommu::vtd::qi::Descriptor::iotlb(
                iommu::vtd::qi::IotlbScope::Domain(0x8001 + index as u16),
                vtd.capability().drd() || vtd.capability().dwd(),
            );
            vtd.submit(&DirectMemory, [descriptor])
                .map_err(|_| Error::IommuTimeout)?;
            Ok((start + take, 1))
        }
        #[cfg(target_arch = "aarch64")]
        Unit::Smmu(smmu) => {
            let did = state.space(space).map_err(|_| Error::DeadObject)?.did;
            smmu.submit(
                &DirectMemory,
                [iommu::smmuv3::queue::Command::TlbiNhAsid {
                    vmid: space_tag(did),
                    asid: index as u16 + 1,
                }],
            )
            .map_err(|_| Error::IommuTimeout)?;
            Ok((if length == 0 { u64::MAX } else { end }, 1))
        }
    }
}

/// `IoFaultQueue.Bind`'s kernel half: records of `queue` signal
/// `notification` and carry `badge` (the bound source capability's badge).
pub fn bind_queue(
    queue: ObjectId,
    notification: crate::sched::Target,
    badge: u64,
) -> Result<(), Error> {
    let mut guard = UNIT.lock();
    let mut state = STATE.lock();
    if let Some(q) = state.queues.iter_mut().find(|q| q.object == queue) {
        q.notification = Some(notification);
        q.badge = badge;
    } else {
        state
            .queues
            .push(Queue {
                object: queue,
                notification: Some(notification),
                badge,
                records: heapless::Deque::new(),
                lost: 0,
            })
            .map_err(|_| Error::ObjectTableFull)?;
    }
    if !state.interrupt_on
        && let Some(unit) = guard.as_mut()
    {
        match unit.enable_fault_interrupt() {
            Ok(()) => state.interrupt_on = true,
            Err(why) => crate::println!("[io] the fault interrupt stays off: {why}"),
        }
    }
    Ok(())
}

/// `IoFaultQueue.Pop`: the oldest record of `queue` (after collecting what
/// the unit recorded since the last interrupt), and how many were lost to
/// a full queue so far.
pub fn pop(queue: ObjectId) -> (Option<[u64; 6]>, u64) {
    collect();
    let mut state = STATE.lock();
    match state.queues.iter_mut().find(|q| q.object == queue) {
        Some(q) => (q.records.pop_front(), q.lost),
        None => (None, 0),
    }
}

/// Whether a thread waits for IO faults (the idle loop must keep taking
/// interrupts for it).
pub fn faults_awaited() -> bool {
    STATE.lock().queues.iter().any(|q| q.notification.is_some())
}

/// The IOMMU's fault interrupt: queue what the unit recorded and signal the
/// queues' notifications.
pub fn deliver_faults() {
    for target in collect() {
        let _ = crate::sched::signal(&target);
    }
}

/// Drains the unit into the queues; returns the notifications to signal.
fn collect() -> heapless::Vec<crate::sched::Target, QUEUES> {
    let mut signals = heapless::Vec::new();
    let faults = match UNIT.lock().as_mut() {
        Some(unit) => unit.drain_faults(),
        None => return signals,
    };
    let mut state = STATE.lock();
    let mut dropped = heapless::Vec::<u16, { crate::iommu_unit::MAX_FAULTS }>::new();
    for fault in faults.iter() {
        let Some(index) = state.route(fault) else {
            // `dropped` has room for every fault of `faults` (both MAX_FAULTS).
            let _ = dropped.push(fault.requester);
            continue;
        };
        let queue = &mut state.queues[index];
        let record = [
            queue.badge,
            fault.pasid.map_or(u64::MAX, u64::from),
            fault.address.unwrap_or(0),
            u64::from(fault.read) | u64::from(fault.write) << 1,
            u64::from(fault.stage),
            u64::from(fault.reason),
        ];
        if queue.records.push_back(record).is_err() {
            queue.lost += 1;
        }
        if let Some(target) = &queue.notification
            && !signals
                .iter()
                .any(|t: &crate::sched::Target| t.paddr == target.paddr)
        {
            let _ = signals.push(*target);
        }
    }
    crate::console::bursts(
        dropped,
        |a, b| a == b,
        |requester, _, count| {
            crate::println!(
                "[io] fault of requester {requester:#x} with no queue: dropped{}",
                crate::console::Times(count)
            );
        },
    );
    signals
}

impl State {
    /// The queue a fault goes to: its device's route, else its domain's.
    fn route(&self, fault: &DmaFault) -> Option<usize> {
        let rid = u32::from(fault.requester);
        let did = self
            .attached
            .iter()
            .find(|a| a.requester == fault.requester)
            .and_then(|a| self.space(a.space).ok())
            .map(|s| s.did);
        let queue = self
            .routes
            .iter()
            .find(|(s, _)| *s == FaultSource::Device(rid))
            .or_else(|| {
                self.routes
                    .iter()
                    .find(|(s, _)| did.is_some_and(|d| *s == FaultSource::Domain(d)))
            })
            .map(|(_, q)| *q)?;
        self.queues.iter().position(|q| q.object == queue)
    }
}

/// Read-only views of the IOMMU state for the abstraction check
/// (`testing::abstraction`). Each calls its visitor under this module's
/// lock: the visitor must not call back into `io_space`.
#[cfg(feature = "fuzz-checks")]
pub mod view {
    use super::{DirectMemory, NESTS, STATE, unit_reserved_base};
    use caps::ObjectId;
    use iommu::pagetable::Perms;

    /// Every IoSpace: (object, stage-2 root, model DID, hardware tag).
    pub fn spaces(mut visit: impl FnMut(ObjectId, u64, u16, u16)) {
        for s in STATE.lock().spaces.iter() {
            visit(s.object, s.table.root(), s.did, super::space_tag(s.did));
        }
    }

    /// Every leaf of every IoSpace's stage 2: (space, IPA, physical
    /// address, size bits, rights).
    pub fn stage2_leaves(mut visit: impl FnMut(ObjectId, u64, u64, u32, Perms)) {
        for s in STATE.lock().spaces.iter() {
            let object = s.object;
            s.table
                .for_each_leaf(&DirectMemory, |ipa, pa, bits, perms| {
                    visit(object, ipa, pa, bits, perms)
                });
        }
    }

    /// Every nest: (index, space, stage-1 root IPA, page, hardware tag,
    /// the IPA its CD page is mapped at on SMMUv3).
    pub fn nests(mut visit: impl FnMut(usize, ObjectId, u64, u64, u16, Option<u64>)) {
        let state = STATE.lock();
        for (index, nest) in state.nests.iter().enumerate().take(NESTS) {
            let Some(nest) = nest else { continue };
            let bits = state.space(nest.space).map(|s| s.table.input_bits());
            let cd_ipa = match bits {
                Ok(bits) if cfg!(target_arch = "aarch64") => {
                    Some(unit_reserved_base(bits) + 4096 * index as u64)
                }
                _ => None,
            };
            let tag = if cfg!(target_arch = "aarch64") {
                index as u16 + 1
            } else {
                0x8001 + index as u16
            };
            visit(index, nest.space, nest.root_ipa, nest.page, tag, cd_ipa);
        }
    }

    /// Every attachment record: (requester, PASID, space, nest, blocked).
    pub fn attachments(mut visit: impl FnMut(u16, Option<u32>, ObjectId, Option<usize>, bool)) {
        for a in STATE.lock().attached.iter() {
            visit(a.requester, a.pasid, a.space, a.nest, a.blocked);
        }
    }
}

/// The stage-1 format `IoSpace.BindUserTable` accepts on this machine
/// (`sys::UserTableFormat`): x86 first-stage 4-level on VT-d, VMSAv8-64
/// 4 KiB granule 48-bit on SMMUv3.
#[cfg(target_arch = "x86_64")]
pub const USER_TABLE_FORMAT: u64 = 1;
#[cfg(target_arch = "aarch64")]
pub const USER_TABLE_FORMAT: u64 = 2;

/// Whether `IoPasid.Attach` can install entries: VT-d in scalable mode.
pub fn pasids_supported() -> bool {
    match UNIT.lock().as_ref() {
        #[cfg(target_arch = "x86_64")]
        Some(Unit::Vtd(vtd)) => matches!(
            vtd.root_table(),
            Some((_, iommu::vtd::regs::RootTableMode::Scalable))
        ),
        _ => false,
    }
}

/// RAM the `io-stage2-identity` seed maps: inside RAM on both machines and
/// outside every IPA the `edu` tests map.
#[cfg(target_arch = "x86_64")]
const FOREIGN_IPA: u64 = 0x1000_0000;
#[cfg(target_arch = "aarch64")]
const FOREIGN_IPA: u64 = 0x5800_0000;
