//! What differs between the vendors: [`IoUnit`], implemented for the
//! `iommu` crate's VT-d unit (`vtd.rs`) and SMMUv3 (`smmu.rs`) over any
//! register access. [`State`] holds everything else.

use crate::Env;
use crate::state::State;
use abi::Error;
use caps::ObjectId;
use iommu::PhysMem;
use iommu::attachments::Exposed;
use iommu::budget::UNIT_TABLES_PER_ENTRY;
use iommu::pagetable::{PageTable, PageTableFormat};

/// An IOMMU unit the layer drives. The methods taking a [`State`] are the
/// vendor's half of one [`State`] operation; only the layer calls them.
pub trait IoUnit: Sized {
    /// The entry format of an IoSpace's table (VT-d: second stage, or
    /// first stage on a unit without one).
    type Format: PageTableFormat + Copy;
    /// Whether nests are shadow tables the layer composes (VT-d): a
    /// stage-2 unmap drops the entries composed through its IPA, and
    /// their DIDs are invalidated with their IoSpace's.
    const SHADOWS: bool;
    /// The stage-1 format `IoSpace.BindUserTable` accepts
    /// (`sys::UserTableFormat`): x86 first-stage 4-level on VT-d,
    /// VMSAv8-64 4 KiB granule 48-bit on SMMUv3.
    const USER_TABLE_FORMAT: u64;

    /// The table of an IoSpace rooted at the page `root`, shaped for this
    /// unit: stage 2, or first stage where [`IoUnit::space_ipa_bits`]
    /// says so (VT-d without a second stage).
    fn stage2_at(&self, root: u64) -> Option<PageTable<Self::Format>>;
    /// The hardware tag of nest `index` (VT-d shadow DID, SMMUv3 ASID).
    fn nest_tag(index: usize) -> u16;
    /// The IPA a nest's CD page is mapped at (SMMUv3), in an IoSpace of
    /// `ipa_bits`.
    fn cd_ipa(ipa_bits: u32, index: usize) -> Option<u64>;
    /// Whether `IoPasid.Attach` can install entries, through a driver's
    /// stage 1 (`nested`: an IoUserTable) or straight to an IoSpace: VT-d
    /// in scalable mode both; SMMUv3 with SubstreamIDs (IDR1.SSIDSIZE > 0)
    /// nested only, since a substream always translates through a CD.
    fn pasids_supported(&self, nested: bool) -> bool;
    /// Whether the unit updates dirty state in stage 2, so
    /// `IoSpace.SetDirtyTracking` and `ReadDirty` work: VT-d ECAP.SLADS in
    /// scalable mode (PASID entry SSADE), SMMUv3 IDR0.HTTU = 2 (STE.S2HD).
    fn dirty_tracking(&self) -> bool;
    /// Whether the unit sets accessed / dirty bits in first-stage tables
    /// (VT-d ECAP.FLTS in scalable mode).
    fn first_stage_dirty(&self) -> bool;
    /// Whether the unit can take page requests: VT-d ECAP.PRS in scalable
    /// mode with queued invalidation, SMMUv3 IDR0.PRI.
    fn page_requests_supported(&self) -> bool;

    /// Whether the unit can stall faulting transactions for software to
    /// resume: SMMUv3 IDR0.STALL_MODEL 0b00 or 0b10; VT-d never.
    fn stalls_supported(&self) -> bool;

    /// Sets up the unit's page request queue (VT-d PQA, SMMUv3 PRIQ) in a
    /// page from `frames`.
    #[doc(hidden)]
    fn start_page_requests(
        &mut self,
        mem: &impl PhysMem,
        frames: &mut impl iommu::FrameAllocator,
    ) -> Result<(), &'static str>;
    /// Moves up to `out`'s capacity of queued page requests into `out`;
    /// whether more wait.
    #[doc(hidden)]
    fn take_page_requests(
        &mut self,
        mem: &impl PhysMem,
        out: &mut heapless::Vec<crate::PageRequest, { crate::MAX_FAULTS }>,
    ) -> bool;
    /// Answers `request`'s group (VT-d page group response, SMMUv3
    /// CMD_PRI_RESP), or resumes its stalled transaction (SMMUv3
    /// CMD_RESUME), waited for.
    #[doc(hidden)]
    fn answer_page_request(
        &mut self,
        mem: &impl PhysMem,
        request: &crate::PageRequest,
        response: crate::Response,
    ) -> Result<(), &'static str>;

    /// Whether devices can translate through an IoSpace's stage 2 (VT-d:
    /// legacy mode or ECAP.SLTS; QEMU's `x-flts=on` has first stage only).
    fn stage2_supported(&self) -> bool;
    /// Whether devices can attach straight to an IoSpace: through a
    /// stage 2, or where the unit has none, through an IoSpace written as
    /// a first-stage table (VT-d FLTS without SLTS: QEMU `x-flts=on`).
    /// Nesting still needs [`IoUnit::stage2_supported`].
    fn spaces_supported(&self) -> bool {
        self.stage2_supported()
    }
    /// The input width of an IoSpace when the unit narrows it below its
    /// address width (VT-d first-stage IoSpaces: 47 bits, canonical).
    fn space_ipa_bits(&self) -> Option<u32> {
        None
    }
    /// The hardware tag of SVA binding `index` (VT-d DID; SMMUv3 VMID).
    fn sva_tag(index: usize) -> u16;
    /// Whether `IoDevice.BindVSpace` can install a first-stage-only entry
    /// (VT-d ECAP.FLTS in scalable mode; SMMUv3 IDR0.S1P).
    fn sva_supported(&self) -> bool;
    /// Whether `IoPasid.BindVSpace` can, for one PASID's DMA: VT-d where
    /// [`IoUnit::sva_supported`] (a PASID entry like RID_PASID's); never
    /// SMMUv3 (`sva.rs`).
    fn sva_pasids_supported(&self) -> bool;

    /// Writes the entry pointing `requester`'s untagged DMA (`pasid`
    /// `None`), or its DMA tagged `pasid`, at the CPU address space rooted
    /// at `root` (SVA binding `index`): VT-d RID_PASID (or that PASID's)
    /// entry with PGTT = first stage; SMMUv3 stage-1-only STE and a CD
    /// whose TTB0 is `root` (no PASIDs). Returns the CD page it took from
    /// the pool (SMMUv3).
    #[doc(hidden)]
    fn write_sva_entry<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        requester: u16,
        pasid: Option<u32>,
        index: usize,
        root: u64,
    ) -> Result<Option<u64>, &'static str>;
    /// Invalidates what SVA binding `index`'s device (its DMA tagged
    /// `pasid`, or untagged) may cache for the leaf (`vaddr`,
    /// `size_bits`), or for its whole address space (`None`), and waits.
    #[doc(hidden)]
    fn invalidate_sva<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        index: usize,
        pasid: Option<u32>,
        leaf: Option<(u64, u8)>,
    ) -> Result<(), &'static str>;

    /// Turns the unit's stage-2 dirty updates on or off in the live entry
    /// of (`requester`, `pasid`), with the invalidations that make them
    /// take effect.
    #[doc(hidden)]
    fn set_entry_dirty_tracking(
        &mut self,
        mem: &impl PhysMem,
        requester: u16,
        pasid: Option<u32>,
        on: bool,
    ) -> Result<(), &'static str>;

    /// Moves the dirty state the unit recorded in nest `index`'s own
    /// tables (VT-d shadows) onto the IoSpace's stage-2 leaves behind
    /// them and cleans those tables (`record`: false only discards it),
    /// then invalidates the nest's tag. Nothing to do where nests
    /// translate through stage 2 itself (SMMUv3, VT-d hardware nesting).
    #[doc(hidden)]
    fn fold_nest_dirty<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        index: usize,
        record: bool,
    ) -> Result<(), Error>;

    /// After stage-2 leaves of nest `index`'s IoSpace were cleaned: drops
    /// translations cached under the nest's own tag that combine them
    /// (VT-d hardware nesting: PASID-based IOTLB of every PASID using
    /// it). Nothing where the IoSpace's tag covers them (SMMUv3: TLBI by
    /// VMID) or the nest does not use stage-2 leaves (VT-d shadows).
    #[doc(hidden)]
    fn flush_nest_after_clean<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        index: usize,
    ) -> Result<(), Error>;

    /// Invalidates `tags` (or everything) and waits; whether the unit
    /// completed. When not, the caller calls
    /// [`IoUnit::invalidation_failed`]. It reads `state` only, so the tags
    /// may be borrowed from it (the pending ones are not copied out).
    #[doc(hidden)]
    fn submit_tags<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &State<Self, M, E>,
        tags: &[u16],
        everything: bool,
    ) -> bool;
    /// After [`IoUnit::submit_tags`] failed: blocks what `exposed` covers
    /// and fails the current invocation.
    #[doc(hidden)]
    fn invalidation_failed<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        exposed: Exposed<'_, ObjectId>,
    );
    /// Whether the unit itself walks stage 2 for what devices attached
    /// through nests translate (SMMUv3 nesting, VT-d hardware nesting), so
    /// translations cached under a nest's tag may go through any stage-2
    /// entry. Not so for VT-d shadows, which hold what the layer composed:
    /// a stage-2 unmap none of them depended on leaves their tags alone.
    #[doc(hidden)]
    fn nests_walk_stage2(&self) -> bool;
    /// Blocks what `exposed` covers after a failed invalidation; whether
    /// the unit confirmed it.
    #[doc(hidden)]
    fn block<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        exposed: Exposed<'_, ObjectId>,
    ) -> bool;
    /// Prepares the nest page `page` (slot `index`) for (`space`,
    /// `root_ipa`).
    #[doc(hidden)]
    fn build_nest<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        space: ObjectId,
        root_ipa: u64,
        index: usize,
        page: u64,
    ) -> Result<(), &'static str>;
    /// Writes the entry pointing (`requester`, `pasid`) at `space`, or at
    /// its nest `nest` for the stage 1 at `stage1_root`.
    #[doc(hidden)]
    fn write_entry<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        requester: u16,
        pasid: Option<u32>,
        space: ObjectId,
        nest: Option<(usize, u64)>,
    ) -> Result<(), &'static str>;
    /// Writes the blocking entry of (`requester`, `pasid`) and invalidates it.
    #[doc(hidden)]
    fn clear_entry<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        requester: u16,
        pasid: Option<u32>,
    ) -> Result<(), &'static str>;
    /// Unlinks the unit's tables on (`requester`, `pasid`)'s path that
    /// hold no entry any more and that `owned` says came from the pool.
    #[doc(hidden)]
    fn release_tables(
        &mut self,
        mem: &impl PhysMem,
        requester: u16,
        pasid: Option<u32>,
        owned: impl Fn(u64) -> bool,
    ) -> Result<[Option<u64>; UNIT_TABLES_PER_ENTRY], &'static str>;
    /// `IoUserTable.Invalidate` of the nest at `index`, of `space`, whose
    /// DID the caller read from the nest under the same lock
    /// (`State::nest_found`): the unit need not look the slot up again.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    fn invalidate_nest<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        index: usize,
        did: u16,
        space: ObjectId,
        root_ipa: u64,
        start: u64,
        length: u64,
    ) -> Result<(u64, u64), Error>;
    /// Returns a dropped nest's pages (slot `index`, page `page`) to the
    /// pool; `table` is its IoSpace's stage 2.
    #[doc(hidden)]
    fn free_nest<M: PhysMem + Copy, E: Env>(
        state: &mut State<Self, M, E>,
        index: usize,
        page: u64,
        space: ObjectId,
        table: &PageTable<Self::Format>,
    );
}
