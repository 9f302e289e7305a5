//! IOMMU capabilities at work: the kernel's side of the `iospace` crate
//! (kernel/iospace), which applies the capability model's IOMMU effects
//! to the unit and keeps the IO fault queues. Here: the one instance and
//! its lock, the concrete memory and register access (the direct map),
//! the table pool taken from boot frames, the seeded bugs, the console,
//! and waking the threads a fault queue's notification names (the crate
//! never calls up into the scheduler).
//!
//! ```text
//!  objects (invocations, effects)
//!      │  UNIT lock, then STATE lock
//!      v
//!  io_space ── State<Hw, DirectMemory, Kernel> ──> iospace (kernel/iospace)
//!      │                                              │
//!      └── deliver_faults: drains the unit,           └── iommu (VT-d / SMMUv3
//!          queues, then signals (sched)                   drivers over DirectMmio)
//! ```

use crate::frames::BootFrames;
use crate::iommu_unit::{DirectMemory, Feature, UNIT, Unit};
use crate::testing::seeds::{Seed, planted};
use abi::Error;
use caps::{Effect, ObjectId};
use core::sync::atomic::{AtomicBool, Ordering};
use iospace::{Env, Flaw, IoUnit, SpaceAt};

/// Whether any device may be bound to a VSpace (SVA): set before a bind,
/// recomputed after an unbind or reconcile. While it is clear, a CPU unmap
/// takes neither IOMMU lock (`invalidate_vspace`). It is never clear while
/// a binding exists: only `bind_vspace` makes one, and it sets it first.
static SVA_BOUND: AtomicBool = AtomicBool::new(false);

/// Recomputes [`SVA_BOUND`] from the bindings `state` holds.
fn note_sva_bindings(state: &State) {
    SVA_BOUND.store(state.sva_bindings().next().is_some(), Ordering::Release);
}

pub use iospace::SPACE_BUDGET;

/// `Ok` if this kernel was built with `feature`, else `NotBuilt` (an
/// invocation's decode asks before anything else it checks).
#[inline(always)]
pub fn require(feature: Feature) -> Result<(), Error> {
    if feature.built() {
        Ok(())
    } else {
        not_built(feature)
    }
}

/// Whether [`not_built`] printed its line for each [`Feature`] yet.
static NOT_BUILT_SAID: [AtomicBool; 3] = [const { AtomicBool::new(false) }; 3];

/// `NotBuilt`, naming `feature` on the console the first time.
#[cold]
#[inline(never)]
fn not_built(feature: Feature) -> Result<(), Error> {
    if !NOT_BUILT_SAID[feature as usize].swap(true, Ordering::Relaxed) {
        crate::say!(
            "[io] this kernel is built without feature `{}`: its invocations answer NotBuilt (build with --features {} or full)",
            feature.name(),
            feature.name()
        );
    }
    Err(Error::NotBuilt)
}

/// The unit's driver on this machine.
#[cfg(target_arch = "x86_64")]
type Hw = iommu::vtd::VtdUnit<crate::iommu_unit::DirectMmio>;
#[cfg(target_arch = "aarch64")]
type Hw = iommu::smmuv3::Smmu<crate::iommu_unit::DirectMmio>;

/// The kernel as the layer's environment.
pub struct Kernel;

impl Env for Kernel {
    type Notify = crate::sched::Target;

    fn same_notification(a: &Self::Notify, b: &Self::Notify) -> bool {
        a.paddr == b.paddr
    }

    #[cold]
    #[inline(never)]
    fn log(line: &dyn ktext::Text) {
        crate::say!("{}", line);
    }

    #[inline(always)]
    fn broken(flaw: Flaw) -> bool {
        planted(match flaw {
            Flaw::SkipInvalidation => Seed::IoSkipInvalidation,
            Flaw::Stage2Identity => Seed::IoStage2Identity,
            Flaw::DeviceSurvivesDelete => Seed::IoDeviceSurvivesDelete,
            Flaw::DanglingReferences => Seed::DanglingReferences,
            Flaw::SkipSvaInvalidation => Seed::SvaSkipInvalidation,
            Flaw::SkipDirtyFlush => Seed::DirtySkipFlush,
            #[cfg(target_arch = "aarch64")]
            Flaw::NoMsiDoorbell => Seed::NoMsiDoorbell,
            #[cfg(not(target_arch = "aarch64"))]
            Flaw::NoMsiDoorbell => return false,
        })
    }

    /// RAM the `io-stage2-identity` seed maps: inside RAM on both
    /// machines and outside every IPA the `edu` tests map.
    #[cfg(target_arch = "x86_64")]
    const FOREIGN_IPA: u64 = 0x1000_0000;
    #[cfg(target_arch = "aarch64")]
    const FOREIGN_IPA: u64 = 0x5800_0000;

    /// About a second of `arch::counter` (kernel/README.md, "Recoverable
    /// IO page faults"): then the kernel answers a page request `Failure`.
    const RESPONSE_DEADLINE: u64 = crate::arch::COUNTER_PER_SECOND;
}

type State = iospace::State<Hw, DirectMemory, Kernel>;

static STATE: spin::Mutex<State> = spin::Mutex::new(State::new(DirectMemory));

/// The driver inside the kernel's unit.
fn hw(unit: &mut Unit) -> &mut Hw {
    match unit {
        #[cfg(target_arch = "x86_64")]
        Unit::Vtd(vtd) => vtd,
        #[cfg(target_arch = "aarch64")]
        Unit::Smmu(smmu) => smmu,
    }
}

/// Takes the table pool's pages from the boot allocator.
pub fn reserve_pool(frames: &mut BootFrames) {
    let mut state = STATE.lock();
    let mut taken = 0usize;
    let limit = iospace::POOL_PAGES;
    let pages = core::iter::from_fn(|| {
        if taken == limit {
            return None;
        }
        taken += 1;
        frames.alloc()
    });
    let (added, spaces) = state.add_pool_pages(pages);
    crate::say!(
        "[io] table pool: {} pages, {} reserved per IoSpace: {} IoSpaces at once",
        added,
        SPACE_BUDGET,
        spaces
    );
}

/// Turns the unit's page requests on where it has them (VT-d ECAP.PRS in
/// scalable mode, SMMUv3 IDR0.PRI; QEMU has neither), the queue page from
/// `frames`, and its stalls where it can stall (SMMUv3 IDR0.STALL_MODEL
/// 0b00 or 0b10; QEMU cannot: `iospace::State::enable_stalls`). Page
/// requests are taken at `arch::IOMMU_PAGE_REQUEST_IRQ`: VT-d's page
/// request event MSI (the fault interrupt's vector), the SMMUv3 PRI-queue
/// interrupt (IRQ_CTRL.PRIQ_IRQEN, its SPI); also at the event interrupt
/// (where stalls arrive), at each `Pop` and at the timer.
pub fn enable_page_requests(frames: &mut BootFrames) {
    if !Feature::PageRequests.built() {
        return;
    }
    let mut guard = UNIT.lock();
    let Some(unit) = guard.as_mut() else { return };
    let mut state = STATE.lock();
    if state.enable_stalls(hw(unit)) {
        crate::say!("[io] stalls on");
    }
    match state.enable_page_requests(hw(unit), frames) {
        Ok(false) => {}
        Ok(true) => {
            #[cfg(target_arch = "x86_64")]
            {
                let (address, data) = crate::arch::msi_message(crate::arch::IOMMU_PAGE_REQUEST_IRQ);
                hw(unit).set_page_request_interrupt(address, data);
            }
            #[cfg(target_arch = "aarch64")]
            {
                crate::arch::enable_interrupt(crate::arch::IOMMU_PAGE_REQUEST_IRQ);
                if hw(unit).enable_page_request_interrupt().is_err() {
                    crate::say!("[io] the PRIQ interrupt stays off: read at the timer");
                }
            }
            crate::say!("[io] page requests on");
        }
        Err(why) => crate::say!("[io] page requests stay off: {}", why),
    }
}

/// `MsiWindow` if `ipa..ipa + size` of `space` overlaps its MSI window:
/// x86_64 the interrupt address range `0xFEE0_0000..0xFEF0_0000` (the VT-d
/// unit takes device writes there as interrupt requests), aarch64 the
/// doorbell page (`iospace::msi_doorbell_ipa`), which belongs to the
/// kernel whether it is mapped yet or not.
pub fn check_msi_window(space: ObjectId, ipa: u64, size: u64) -> Result<(), Error> {
    let state = STATE.lock();
    msi_window_free(&state, state.space_at(space), ipa, size)
}

/// [`check_msi_window`] for the IoSpace whose record is `at` (`None`: it
/// has no stage 2, so no doorbell).
#[inline(always)]
fn msi_window_free(state: &State, at: Option<SpaceAt>, ipa: u64, size: u64) -> Result<(), Error> {
    if planted(Seed::MsiWindowOpen) {
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    let window = {
        let _ = (state, at);
        Some((0xFEE0_0000u64, 0x10_0000u64))
    };
    #[cfg(target_arch = "aarch64")]
    let window = at
        .and_then(|at| state.msi_doorbell_at(at))
        .map(|ipa| (ipa, 4096u64));
    match window {
        Some((base, length)) if ipa < base + length && base < ipa.saturating_add(size) => {
            Err(Error::MsiWindow)
        }
        _ => Ok(()),
    }
}

/// `IrqHandler.MsiMessage` on aarch64: maps the interrupt controller's
/// doorbell page holding `doorbell` into `space` at its doorbell IPA
/// (once) and returns the address the device must write there: the
/// doorbell IPA plus `doorbell`'s offset in its page.
#[cfg(target_arch = "aarch64")]
pub fn map_msi_doorbell(space: ObjectId, doorbell: u64) -> Result<u64, Error> {
    let mut state = STATE.lock();
    state.ensure_pool(space)?;
    let ipa = state.map_msi_doorbell(space, doorbell & !0xfff)?;
    Ok(ipa + (doorbell & 0xfff))
}

/// Before an attach to `space` (through the stage-1 table at `root_ipa`
/// for a nested attach): room in the unit and in `space`'s share and
/// reservation (`iospace::State::ensure_attach_room`).
pub fn ensure_attach_room(space: ObjectId, root_ipa: Option<u64>) -> Result<(), Error> {
    STATE.lock().ensure_attach_room(space, root_ipa)
}

/// Clears the failure record before an invocation.
pub fn forget_failure() {
    STATE.lock().forget_failure();
}

/// `IommuTimeout` if an invalidation failed or timed out since
/// [`forget_failure`]: the invocation must fail (its devices were left
/// blocked).
pub fn take_failure() -> Option<Error> {
    STATE.lock().take_failure()
}

/// Whether [`register_space`] would succeed for `count` new IoSpaces in a
/// row, changing nothing: the error the first failing one would return.
pub fn can_register(count: usize) -> Result<(), Error> {
    let mut guard = UNIT.lock();
    let unit = guard.as_mut().ok_or(Error::NotSupported)?;
    STATE.lock().can_register(hw(unit), count)
}

/// Records a new IoSpace whose zeroed page at `root` becomes its stage-2
/// root, and reserves its [`SPACE_BUDGET`] table pages; on an error the
/// caller deletes the IoSpace again.
pub fn register_space(object: ObjectId, root: u64, did: u16) -> Result<(), Error> {
    let mut guard = UNIT.lock();
    let unit = guard.as_mut().ok_or(Error::NotSupported)?;
    STATE.lock().register_space(hw(unit), object, root, did)
}

/// Both IOMMU locks, `UNIT` then `STATE`, held across the effects of one
/// operation: `IoSpace.Unmap` applies three effects, and took and
/// released both locks for each before (kernel/README.md, "Measured").
/// `IoSpace.Map` holds `STATE` alone ([`MapHeld`]).
pub struct Held {
    unit: spin::MutexGuard<'static, Option<Unit>>,
    state: spin::MutexGuard<'static, State>,
}

/// Takes both IOMMU locks, in the kernel's order (`UNIT`, then `STATE`).
#[inline]
pub fn hold() -> Held {
    let unit = UNIT.lock();
    Held {
        unit,
        state: STATE.lock(),
    }
}

impl Held {
    /// Applies one IOMMU effect of the capability model to the unit
    /// ([`apply`] under the locks already held).
    #[inline]
    pub fn apply(&mut self, effect: &Effect) {
        if let Some(unit) = self.unit.as_mut() {
            self.state.apply(hw(unit), effect);
        }
    }

    /// [`forget_failure`] under the locks already held.
    #[inline]
    pub fn forget_failure(&mut self) {
        self.state.forget_failure();
    }

    /// [`take_failure`] under the locks already held.
    #[inline]
    pub fn take_failure(&mut self) -> Option<Error> {
        self.state.take_failure()
    }
}

/// Whether IoSpaces are first-stage tables (VT-d without a second stage),
/// which cannot express a write-only mapping (x86 paging has no
/// read-disable bit): `IoSpace.Map` refuses one with `NotSupported`.
/// Takes `UNIT` for the read: not under [`MapHeld`] (lock order).
pub fn first_stage_spaces() -> bool {
    UNIT.lock()
        .as_mut()
        .is_some_and(|unit| hw(unit).space_ipa_bits().is_some())
}

/// The `STATE` lock alone, held by `IoSpace.Map` from its checks
/// ([`MapHeld::ensure_map`]) to its stage-2 write ([`MapHeld::map_at`]):
/// [`Held`] without `UNIT`, which that write does not need. `UNIT`
/// guards the unit itself (its registers, command queue, context and
/// stream tables, interrupt remapping): the map touches none of it. It
/// writes one leaf of the IoSpace's stage-2 tables, which `STATE` owns
/// (the record, the remembered leaf table, the pool and ledger), and
/// issues no invalidation (a non-present entry made present; the map
/// never did, under either lock). Whatever could pull the record or its
/// tables away under the write takes `STATE` too: an IoSpace's death
/// (`reconcile`, `UNIT` then `STATE`), registration (the record moves,
/// the same) and the unit-wide table teardown; the unit is set once at
/// boot and never removed. So the write is serialized with all of them
/// by `STATE` alone, on SMP as on today's one CPU (where the kernel runs
/// with interrupts masked under `CAPS`, which the invocation holds
/// throughout, and no lock is ever contended). Taking `STATE` without
/// `UNIT` keeps the lock order (`UNIT` is never taken under it:
/// [`first_stage_spaces`] is read before).
pub struct MapHeld {
    state: spin::MutexGuard<'static, State>,
}

/// Takes the `STATE` lock for an `IoSpace.Map` ([`MapHeld`]).
#[inline]
pub fn hold_for_map() -> MapHeld {
    MapHeld {
        state: STATE.lock(),
    }
}

impl MapHeld {
    /// Before an `IoSpace.Map` of `size` bytes at `ipa` in `space`:
    /// `MsiWindow` if that overlaps the MSI window ([`check_msi_window`]),
    /// `TableMemoryExhausted` unless its reservation can serve one more
    /// stage-2 walk. Returns where `space`'s record is, for the map's
    /// write ([`MapHeld::map_at`]); the checks found it there.
    #[inline(always)]
    pub fn ensure_map(&self, space: ObjectId, ipa: u64, size: u64) -> Result<SpaceAt, Error> {
        let at = self.state.space_at(space);
        msi_window_free(&self.state, at, ipa, size)?;
        self.state.ensure_pool(space)?;
        // A space without a record has no reservation either.
        at.ok_or(Error::TableMemoryExhausted)
    }

    /// A `MapIoPage` into the IoSpace whose record [`MapHeld::ensure_map`]
    /// found (`at`) written straight to that record
    /// (`iospace::State::map_through`). Only a `MapIoPage`: any other
    /// effect needs the unit, and is not applied here.
    #[inline]
    pub fn map_at(&mut self, at: SpaceAt, effect: &Effect) {
        self.state.map_through(at, effect);
    }
}

/// Applies one IOMMU effect of the capability model to the unit.
pub fn apply(unit: &mut Unit, effect: &Effect) {
    STATE.lock().apply(hw(unit), effect);
}

impl Unit {
    /// Applies a capability-model effect to the hardware ([`apply`]).
    pub fn apply(&mut self, effect: &Effect) {
        apply(self, effect);
    }
}

/// After a delete or revoke: forget IoSpaces and queues that died, return
/// their tables to the pool. `alive(object, kind)` says whether a record's
/// object still exists.
pub fn reconcile(
    alive: impl Fn(ObjectId, caps::ObjectKind) -> bool,
    notification_alive: impl Fn(&crate::sched::Target) -> bool,
) {
    let mut guard = UNIT.lock();
    let mut state = STATE.lock();
    state.reconcile(alive, notification_alive);
    // The page requests of queues that died: answered `Failure`.
    if let Some(unit) = guard.as_mut()
        && Feature::PageRequests.built()
    {
        state.fail_orphans(hw(unit));
    }
}

/// `IoUserTable.Invalidate`: makes the hardware see the driver's stage-1
/// changes in `start..start + length` of the table at (`space`,
/// `root_ipa`). Returns the first IOVA not processed and the invalidation
/// commands issued; `IommuTimeout` if the unit does not complete them
/// (the nest's devices are then blocked).
///
/// A whole invocation under one acquisition of each lock, so the fast
/// path (`invocation::invalidate_fast`) can call it alone. On VT-d the
/// failure record is forgotten before and taken after, as
/// `invocation::invoke` does around every invocation (a shadow's
/// composition reaches the pool and the stage-2 code that record there).
/// On SMMUv3 the call records a failure only in `State::fail_closed`,
/// after a timed-out TLBI or CMD_SYNC, whose `IommuTimeout` the result
/// carries already: the record is only cleared after a failure, so it is
/// left as every invocation leaves it, and the successful call pays
/// neither.
#[inline(always)]
pub fn invalidate_user_table(
    space: ObjectId,
    root_ipa: u64,
    start: u64,
    length: u64,
) -> Result<(u64, u64), Error> {
    let mut guard = UNIT.lock();
    let mut state = STATE.lock();
    // The unit tested under both locks: its SMMUv3 queue's test then reads
    // the same word with no lock taken between (one load for both).
    let unit = guard.as_mut().ok_or(Error::NotSupported)?;
    #[cfg(target_arch = "x86_64")]
    state.forget_failure();
    let done = state.invalidate_user_table(hw(unit), space, root_ipa, start, length);
    if cfg!(target_arch = "aarch64") {
        if done.is_err() {
            state.forget_failure();
        }
        return done;
    }
    state.take_failure().map_or(done, Err)
}

/// `IoFaultQueue.Bind`'s kernel half: records of `queue` signal
/// `notification` and carry `badge` (the bound source capability's badge).
pub fn bind_queue(
    queue: ObjectId,
    notification: crate::sched::Target,
    badge: u64,
) -> Result<(), Error> {
    let mut guard = UNIT.lock();
    STATE
        .lock()
        .bind_queue(queue, notification, badge, || match guard.as_mut() {
            Some(unit) => unit.enable_fault_interrupt(),
            None => Err("there is no IOMMU"),
        })
}

/// Whether `IoFaultQueue.Bind` of `queue` will find a record for it
/// (decode's check). Errors: `ObjectTableFull`.
pub fn can_bind_queue(queue: ObjectId) -> Result<(), Error> {
    STATE.lock().can_bind_queue(queue)
}

/// `IoFaultQueue.Pop`: the oldest record of `queue` (after collecting what
/// the unit recorded since the last interrupt), and how many were lost to
/// a full queue so far.
pub fn pop(queue: ObjectId) -> (Option<[u64; 6]>, u64) {
    collect();
    STATE.lock().pop(queue)
}

/// `IoFaultQueue.Respond`: answers page request `id` of `queue` (and the
/// rest of its group) with `response` (`iospace::State::respond`).
pub fn respond(queue: ObjectId, id: u64, response: iospace::Response) -> Result<(), Error> {
    require(Feature::PageRequests)?;
    let mut guard = UNIT.lock();
    let unit = guard.as_mut().ok_or(Error::NotSupported)?;
    let mut state = STATE.lock();
    state.expire_requests(hw(unit), crate::arch::counter());
    state.respond(hw(unit), queue, id, response)
}

/// Whether a thread waits for IO faults, or a page request for its answer
/// (the idle loop must keep taking interrupts, and the timer must run,
/// for them).
pub fn faults_awaited() -> bool {
    let state = STATE.lock();
    state.faults_awaited() || Feature::PageRequests.built() && state.requests_pending()
}

/// Whether a page request waits for its answer: the scheduler keeps the
/// timer running while one does, and calls [`expire_requests`] at it.
pub fn requests_pending() -> bool {
    Feature::PageRequests.built() && STATE.lock().requests_pending()
}

/// Answers `Failure` to every page request past its deadline.
pub fn expire_requests() {
    if !Feature::PageRequests.built() {
        return;
    }
    let mut guard = UNIT.lock();
    if let Some(unit) = guard.as_mut() {
        STATE
            .lock()
            .expire_requests(hw(unit), crate::arch::counter());
    }
}

/// The IOMMU's fault interrupt: queue what the unit recorded and signal the
/// queues' notifications.
pub fn deliver_faults(threads: &mut crate::sched::Threads) {
    for target in collect() {
        let _ = crate::sched::signal(threads, &target);
    }
}

/// Drains the unit (faults and page requests) into the queues, answers
/// page requests past their deadline; returns the notifications to signal.
fn collect() -> heapless::Vec<crate::sched::Target, { iospace::QUEUES }> {
    let mut guard = UNIT.lock();
    let Some(unit) = guard.as_mut() else {
        return heapless::Vec::new();
    };
    let faults = unit.drain_faults();
    let now = crate::arch::counter();
    let mut state = STATE.lock();
    // Without page requests the unit takes none and nothing stalls: the
    // faults alone.
    let drained = if Feature::PageRequests.built() {
        let drained = state.deliver(hw(unit), &faults, now);
        state.expire_requests(hw(unit), now);
        drained
    } else {
        state.queue_faults(&faults)
    };
    drop(state);
    drop(guard);
    crate::console::bursts(
        drained.dropped,
        |a, b| a == b,
        |requester, _, count| {
            crate::say!(
                "[io] fault of requester {:#x} with no queue: dropped{}",
                *requester,
                crate::console::Times(count)
            );
        },
    );
    drained.signals
}

/// Read-only views of the IOMMU state for the abstraction check
/// (`testing::abstraction`). Each calls its visitor under this module's
/// lock: the visitor must not call back into `io_space`.
#[cfg(feature = "fuzz-checks")]
pub mod view {
    use super::STATE;
    use caps::ObjectId;
    use iommu::pagetable::Perms;

    /// Every IoSpace: (object, stage-2 root, model DID, hardware tag).
    pub fn spaces(mut visit: impl FnMut(ObjectId, u64, u16, u16)) {
        for (object, root, did, tag) in STATE.lock().spaces() {
            visit(object, root, did, tag);
        }
    }

    /// Every leaf of every IoSpace's stage 2: (space, IPA, physical
    /// address, size bits, rights).
    pub fn stage2_leaves(visit: impl FnMut(ObjectId, u64, u64, u32, Perms)) {
        STATE.lock().stage2_leaves(visit);
    }

    /// Every MSI doorbell the kernel mapped: (space, IPA, physical
    /// address), write-only 4 KiB leaves of the kernel's own.
    pub fn msi_doorbells(visit: impl FnMut(ObjectId, u64, u64)) {
        STATE.lock().msi_doorbells(visit);
    }

    /// Every nest: (index, space, stage-1 root IPA, page, hardware tag,
    /// the IPA its CD page is mapped at on SMMUv3).
    pub fn nests(visit: impl FnMut(usize, ObjectId, u64, u64, u16, Option<u64>)) {
        STATE.lock().nests(visit);
    }

    /// Every SVA binding: (requester, PASID, device or IoPasid object,
    /// root object, root table, hardware tag, SMMUv3 CD page).
    #[allow(clippy::type_complexity)]
    pub fn sva_bindings(
        mut visit: impl FnMut(u16, Option<u32>, ObjectId, ObjectId, u64, u16, Option<u64>),
    ) {
        for (tag, b) in STATE.lock().sva_bindings() {
            visit(
                b.requester,
                b.pasid,
                b.device,
                b.root_object,
                b.root,
                tag,
                b.page,
            );
        }
    }

    /// Every attachment record: (requester, PASID, space, nest, blocked).
    pub fn attachments(mut visit: impl FnMut(u16, Option<u32>, ObjectId, Option<usize>, bool)) {
        for a in STATE.lock().attachments() {
            visit(a.requester, a.pasid, a.space, a.nest, a.blocked);
        }
    }
}

/// The stage-1 format `IoSpace.BindUserTable` accepts on this machine
/// (`sys::UserTableFormat`): x86 first-stage 4-level on VT-d, VMSAv8-64
/// 4 KiB granule 48-bit on SMMUv3.
pub const USER_TABLE_FORMAT: u64 = Hw::USER_TABLE_FORMAT;

/// `IoSpace.SetDirtyTracking`: stage-2 dirty updates of `space` on or off
/// (`iospace::State::set_dirty_tracking`).
pub fn set_dirty_tracking(space: ObjectId, on: bool) -> Result<(), Error> {
    require(Feature::Dirty)?;
    let mut guard = UNIT.lock();
    let unit = guard.as_mut().ok_or(Error::NotSupported)?;
    STATE.lock().set_dirty_tracking(hw(unit), space, on)
}

/// `IoSpace.ReadDirty`: the dirty pages among `pages` pages from `start`
/// of `space` as a bitmap (bit `i`: page `i`; at most
/// `abi::READ_DIRTY_PAGES`), cleared with `clear`; the first IPA not
/// processed and the pages reported (`iospace::State::read_dirty`).
pub fn read_dirty(
    space: ObjectId,
    start: u64,
    pages: u64,
    clear: bool,
    bitmap: &mut [u64; (abi::READ_DIRTY_PAGES / 64) as usize],
) -> Result<(u64, u64), Error> {
    require(Feature::Dirty)?;
    let mut guard = UNIT.lock();
    let unit = guard.as_mut().ok_or(Error::NotSupported)?;
    STATE
        .lock()
        .read_dirty(hw(unit), space, start, pages, clear, |page| {
            if let Some(word) = bitmap.get_mut((page / 64) as usize) {
                *word |= 1 << (page % 64);
            }
        })
}

/// Whether `IoPasid.Attach` can install entries, through an IoUserTable
/// (`nested`) or straight to an IoSpace: VT-d in scalable mode both,
/// SMMUv3 with SubstreamIDs nested only (QEMU's SMMUv3 has none).
pub fn pasids_supported(nested: bool) -> bool {
    UNIT.lock()
        .as_mut()
        .is_some_and(|unit| hw(unit).pasids_supported(nested))
}

/// Whether devices can attach to IoSpaces (a stage 2): not on a VT-d
/// unit with first-stage translation only (QEMU `x-flts=on`), where
/// nesting (`IoDevice.AttachNested`) answers `NotSupported`.
pub fn stage2_supported() -> bool {
    UNIT.lock()
        .as_mut()
        .is_some_and(|unit| hw(unit).stage2_supported())
}

/// Whether devices can attach straight to IoSpaces: through a stage 2,
/// or on a VT-d unit with first-stage translation only (QEMU `x-flts=on`)
/// through IoSpaces written as first-stage tables. Nesting needs
/// [`stage2_supported`].
pub fn spaces_supported() -> bool {
    UNIT.lock()
        .as_mut()
        .is_some_and(|unit| hw(unit).spaces_supported())
}

/// Before `IoDevice.BindVSpace` of `device` (`pasid` `None`) or
/// `IoPasid.BindVSpace`, requester `rid`: `NotSupported`,
/// `AlreadyAttached`, `ObjectTableFull` or `TableMemoryExhausted`
/// (`iospace::State::ensure_sva_room`), changing nothing.
pub fn ensure_sva_room(device: ObjectId, rid: u32, pasid: Option<u32>) -> Result<(), Error> {
    let mut guard = UNIT.lock();
    let unit = guard.as_mut().ok_or(Error::NotSupported)?;
    STATE.lock().ensure_sva_room(hw(unit), device, rid, pasid)
}

/// Whether the IoDevice or IoPasid `device` is bound to a VSpace.
pub fn sva_bound(device: ObjectId) -> bool {
    Feature::Sva.built() && STATE.lock().sva_bound(device)
}

/// `IoDevice.BindVSpace`: requester `rid` (the IoDevice `device`)
/// translates through the VSpace rooted at `root` (the PageTable
/// `root_object`), first stage only (`iospace::State::bind_vspace`);
/// `IoPasid.BindVSpace` (`pasid`, `device` the IoPasid): its DMA tagged
/// `pasid` does.
pub fn bind_vspace(
    device: ObjectId,
    rid: u32,
    pasid: Option<u32>,
    root_object: ObjectId,
    root: u64,
) -> Result<(), Error> {
    require(Feature::Sva)?;
    let mut guard = UNIT.lock();
    let unit = guard.as_mut().ok_or(Error::NotSupported)?;
    SVA_BOUND.store(true, Ordering::Release);
    let mut state = STATE.lock();
    let bound = state.bind_vspace(hw(unit), device, rid, pasid, root_object, root);
    note_sva_bindings(&state);
    bound
}

/// `IoDevice.Detach` of a bound device: its entry blocks again. Whether
/// `device` was bound.
pub fn unbind_vspace(device: ObjectId) -> bool {
    if !Feature::Sva.built() {
        return false;
    }
    let mut guard = UNIT.lock();
    let Some(unit) = guard.as_mut() else {
        return false;
    };
    let mut state = STATE.lock();
    let was_bound = state.unbind_vspace(hw(unit), device);
    note_sva_bindings(&state);
    was_bound
}

/// Whether clearing a CPU leaf may invalidate an IOMMU ([`invalidate_vspace`]):
/// only with SVA built. Without it no such invalidation can fail, so
/// `Frame.Unmap`'s fast path keeps no failure record (the one constant
/// decides both).
pub const CPU_UNMAP_MAY_INVALIDATE: bool = Feature::Sva.built();

/// A CPU leaf (`vaddr`, `size_bits`) of the VSpace rooted at `root` was
/// cleared: devices bound to it forget it before this returns
/// (`iospace::State::invalidate_vspace`; a failure makes the invocation
/// answer `IommuTimeout`, the device blocked).
///
/// The test inlined, the rest out of line: whole, its frame cost every
/// `Frame.Unmap` 16 instructions on aarch64 with no device bound.
#[inline(always)]
pub fn invalidate_vspace(root: u64, vaddr: u64, size_bits: u8) {
    if CPU_UNMAP_MAY_INVALIDATE && SVA_BOUND.load(Ordering::Acquire) {
        invalidate_bound_vspace(root, vaddr, size_bits);
    }
}

/// [`invalidate_vspace`] once some device is bound to some VSpace.
#[inline(never)]
fn invalidate_bound_vspace(root: u64, vaddr: u64, size_bits: u8) {
    let mut guard = UNIT.lock();
    let Some(unit) = guard.as_mut() else {
        return;
    };
    let mut state = STATE.lock();
    if state.vspace_bound(root) {
        state.invalidate_vspace(hw(unit), root, vaddr, size_bits);
    }
}

/// A CPU table was unlinked (`PageTable.Unmap`): every bound device
/// forgets its whole address space before the call returns
/// (`iospace::State::invalidate_all_vspaces`).
pub fn invalidate_all_vspaces() {
    if !Feature::Sva.built() || !SVA_BOUND.load(Ordering::Acquire) {
        return;
    }
    let mut guard = UNIT.lock();
    let Some(unit) = guard.as_mut() else {
        return;
    };
    let mut state = STATE.lock();
    if state.sva_bindings().next().is_some() {
        state.invalidate_all_vspaces(hw(unit));
    }
}

/// After a delete or revoke: bindings of dead IoDevices or dead roots end;
/// with `tables_died` (CPU tables were unlinked) every bound device's
/// address-space tag is invalidated (`iospace::State::reconcile_sva`).
pub fn reconcile_sva(tables_died: bool, alive: impl Fn(ObjectId, caps::ObjectKind) -> bool) {
    if !Feature::Sva.built() {
        return;
    }
    let mut guard = UNIT.lock();
    let Some(unit) = guard.as_mut() else {
        return;
    };
    let mut state = STATE.lock();
    if state.sva_bindings().next().is_some() {
        state.reconcile_sva(hw(unit), tables_died, alive);
        note_sva_bindings(&state);
    }
}
