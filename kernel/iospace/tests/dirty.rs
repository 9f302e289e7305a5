//! Dirty tracking through the layer (`State::set_dirty_tracking`,
//! `State::read_dirty`) against the executable models: VT-d scalable mode
//! with ECAP.SLADS (PASID entry SSADE) and SMMUv3 with HTTU = 2 (STE
//! S2HA / S2HD), each as the specification describes them; and both units
//! as QEMU 10.0.2 emulates them, which answer `NotSupported`.
//!
//! The properties, checked by DMA through the models: every page written
//! is reported in the next round; no page that was not written is; a page
//! written after a clear (also one whose translation a read or write had
//! cached) is reported again in the next round; pages mapped while
//! tracking start clean; unmapping a page or deleting the IoSpace while
//! tracking is safe (DMA refused, the calls answer, nothing panics).

mod common;

use abi::Error;
use caps::{ObjectId, Rights};
use common::{
    DATA_IPA, DATA_PAGES, IOVA, MEMORY, Model, PASID_ECAP, VtdWorld, World, smmu, take_log, vtd,
};
use iommu::model::smmu_device::SimSmmu;
use iommu::model::vtd_device::{NESTING_ECAP, QEMU_CAP, QEMU_ECAP, QEMU_FLTS_ECAP, SimVtd};
use iommu::model::{Access, SimMemory};
use iommu::pagetable::PageTableFormat;
use iommu::smmuv3::regs::Features;
use iommu::vtd::regs::RootTableMode;
use iospace::IoUnit;
use std::collections::BTreeSet;

const EDU: u16 = 0x10;
/// ECAP.SLADS: second-stage accessed / dirty (VT-d 11.4.3, bit 45).
const SLADS_ECAP: u64 = PASID_ECAP | 1 << 45;

/// Pages reported dirty in `0..DATA_PAGES` (`clear`: and cleared).
fn read<U, D, F>(world: &mut World<'_, U, D, F>, space: ObjectId, clear: bool) -> BTreeSet<u64>
where
    U: IoUnit + common::Faults,
    D: common::Model,
    F: PageTableFormat + Copy,
{
    let mut pages = BTreeSet::new();
    let (next, count) = world
        .state
        .read_dirty(&mut world.unit, space, DATA_IPA, DATA_PAGES, clear, |i| {
            assert!(pages.insert(i), "page {i} reported twice");
        })
        .unwrap();
    assert_eq!(next, DATA_IPA + DATA_PAGES * 4096);
    assert_eq!(count, pages.len() as u64);
    pages
}

/// DMA to data page `page`; whether it landed.
fn dma<U, D: common::Model, F>(world: &World<'_, U, D, F>, page: u64, access: Access) -> bool
where
    U: IoUnit,
{
    world
        .device
        .transact(EDU, None, DATA_IPA + page * 4096, access)
        .is_some()
}

fn set<T: Ord + Copy>(items: &[T]) -> BTreeSet<T> {
    items.iter().copied().collect()
}

/// One IoSpace, `DATA_PAGES` pages read-write, the device attached.
fn space_with_pages<U, D, F>(world: &mut World<'_, U, D, F>) -> ObjectId
where
    U: IoUnit + common::Faults,
    D: common::Model,
    F: PageTableFormat + Copy,
{
    let space = world.create_space().unwrap();
    for i in 0..DATA_PAGES {
        let pa = world.page();
        world
            .map(space, DATA_IPA + i * 4096, pa, Rights::READ_WRITE)
            .unwrap();
    }
    world.attach(EDU, None, space, false).unwrap();
    space
}

/// The rounds every unit that tracks must pass.
fn rounds<U, D, F>(world: &mut World<'_, U, D, F>)
where
    U: IoUnit + common::Faults,
    D: common::Model,
    F: PageTableFormat + Copy,
{
    let space = space_with_pages(world);
    // Writes before tracking starts are not reported.
    assert!(dma(world, 0, Access::Write));
    assert_eq!(
        world
            .state
            .read_dirty(&mut world.unit, space, 0, 1, false, |_| {}),
        Err(Error::NotSupported),
        "tracking is off"
    );
    world
        .state
        .set_dirty_tracking(&mut world.unit, space, true)
        .unwrap();
    assert!(read(world, space, true).is_empty());

    // Round 1: writes to 1, 3, 5; reads of 2 and 3.
    for page in [1, 3, 5] {
        assert!(dma(world, page, Access::Write));
    }
    assert!(dma(world, 2, Access::Read) && dma(world, 3, Access::Read));
    // Without clearing, the report stays.
    assert_eq!(read(world, space, false), set(&[1, 3, 5]));
    assert_eq!(read(world, space, true), set(&[1, 3, 5]));
    assert!(read(world, space, true).is_empty(), "cleared");

    // Round 2: 1 again (its translation was cached by the write of round
    // 1), 2 (cached by a read), 7 fresh.
    for page in [1, 2, 7] {
        assert!(dma(world, page, Access::Write));
    }
    assert_eq!(read(world, space, true), set(&[1, 2, 7]));

    // A page mapped while tracking starts clean; written, it is reported.
    let extra = DATA_IPA + DATA_PAGES * 4096;
    let pa = world.page();
    world.map(space, extra, pa, Rights::READ_WRITE).unwrap();
    let mut seen = Vec::new();
    let in_extra = |world: &mut World<'_, U, D, F>, seen: &mut Vec<u64>| {
        world
            .state
            .read_dirty(&mut world.unit, space, extra, 1, true, |i| seen.push(i))
            .unwrap()
    };
    assert_eq!(in_extra(world, &mut seen), (extra + 4096, 0));
    assert!(
        world
            .device
            .transact(EDU, None, extra, Access::Write)
            .is_some()
    );
    assert_eq!(in_extra(world, &mut seen), (extra + 4096, 1));
    assert_eq!(seen, [0]);

    // Unmapping a page while tracking: no report for it, DMA refused.
    assert!(dma(world, 9, Access::Write));
    world.unmap(space, DATA_IPA + 9 * 4096).unwrap();
    assert!(!dma(world, 9, Access::Write));
    assert!(read(world, space, true).is_empty());

    // Bounded work: a larger request answers where it stopped.
    let (next, _) = world
        .state
        .read_dirty(&mut world.unit, space, 0, 600, false, |_| {})
        .unwrap();
    assert_eq!(next, 512 * 4096);
    assert_eq!(
        world
            .state
            .read_dirty(&mut world.unit, space, 0x800, 1, false, |_| {}),
        Err(Error::InvalidAddress)
    );
    assert_eq!(
        world
            .state
            .read_dirty(&mut world.unit, space, !0xfff, 2, false, |_| {}),
        Err(Error::InvalidAddress)
    );

    // Off: writes still land (an SMMU would fault on a clean leaf without
    // S2HD), and reads answer NotSupported; on again starts clean.
    world
        .state
        .set_dirty_tracking(&mut world.unit, space, false)
        .unwrap();
    assert!(dma(world, 4, Access::Write));
    world
        .state
        .set_dirty_tracking(&mut world.unit, space, true)
        .unwrap();
    assert!(read(world, space, true).is_empty());

    // A device attached while tracking is tracked too.
    world.detach(EDU, None).unwrap();
    world.attach(EDU, None, space, false).unwrap();
    assert!(dma(world, 6, Access::Write));
    assert_eq!(read(world, space, true), set(&[6]));

    // Deleting the IoSpace mid-tracking: its DMA is refused, the calls
    // answer DeadObject.
    assert!(dma(world, 8, Access::Write));
    world.delete_space(space).unwrap();
    assert!(!dma(world, 8, Access::Write));
    assert_eq!(
        world
            .state
            .read_dirty(&mut world.unit, space, 0, 1, true, |_| {}),
        Err(Error::DeadObject)
    );
    assert_eq!(
        world
            .state
            .set_dirty_tracking(&mut world.unit, space, false),
        Err(Error::DeadObject)
    );
    assert!(take_log().is_empty(), "{:?}", take_log());
}

#[test]
fn vtd_second_stage_dirty_tracking_with_ssads() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, SLADS_ECAP, false);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    assert!(world.unit.dirty_tracking());
    rounds(&mut world);
}

/// VT-d as QEMU 10.0.2 with `x-flts=on` (first stage only, its IOTLB
/// quirk on): IoSpaces are first-stage tables entered through PGTT =
/// first stage, and their D bits serve the same rounds.
#[test]
fn vtd_first_stage_dirty_tracking_as_qemu_x_flts() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, QEMU_FLTS_ECAP, true);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    assert!(world.unit.dirty_tracking() && world.unit.spaces_supported());
    assert!(!world.unit.stage2_supported());
    rounds(&mut world);
}

/// The same unit with the planted `SkipDirtyFlush`: a page written,
/// reported and cleared, then written again through its cached
/// translation, is missed (the kernel's `dirty-skip-flush` seed).
#[test]
fn vtd_first_stage_without_the_flush_misses_a_rewrite() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, QEMU_FLTS_ECAP, true);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    let space = space_with_pages(&mut world);
    world
        .state
        .set_dirty_tracking(&mut world.unit, space, true)
        .unwrap();
    assert!(dma(&world, 1, Access::Write));
    common::plant(Some(iospace::Flaw::SkipDirtyFlush));
    let first = read(&mut world, space, true);
    assert!(dma(&world, 1, Access::Write));
    let second = read(&mut world, space, true);
    common::plant(None);
    assert_eq!(first, set(&[1]));
    assert!(second.is_empty(), "the rewrite was seen without the flush");
}

/// A 2 MiB mapping counts as its 512 pages; a range that cuts it at
/// either end is refused before anything is cleared (on the first-stage
/// unit as QEMU x-flts, and on SMMUv3 with HTTU).
#[test]
fn a_range_cutting_a_2m_leaf_is_refused_and_clears_nothing() {
    fn case<U, D, F>(world: &mut World<'_, U, D, F>)
    where
        U: IoUnit + common::Faults,
        D: common::Model,
        F: PageTableFormat + Copy,
    {
        let space = space_with_pages(world);
        let (ipa, pa) = (0x4000_0000, MEMORY - 0x40_0000);
        let did = world.did(space);
        world.apply(caps::Effect::MapIoPage {
            unit: 0,
            did,
            space,
            ipa,
            paddr: pa,
            size_bits: 21,
            rights: Rights::READ_WRITE,
        });
        // A 4 KiB page just below it, written too: a refused range that
        // starts there must not have cleared it.
        let below = world.page();
        world
            .map(space, ipa - 0x1000, below, Rights::READ_WRITE)
            .unwrap();
        world
            .state
            .set_dirty_tracking(&mut world.unit, space, true)
            .unwrap();
        for address in [ipa + 0x1000, ipa - 0x1000] {
            let written = world.device.transact(EDU, None, address, Access::Write);
            assert!(written.is_some());
        }
        let mut read = |start: u64, pages: u64, clear: bool| {
            let mut seen = 0;
            world
                .state
                .read_dirty(&mut world.unit, space, start, pages, clear, |_| seen += 1)
                .map(|(_, count)| (count, seen))
        };
        assert_eq!(read(ipa + 0x1000, 511, true), Err(Error::InvalidAddress));
        assert_eq!(read(ipa, 256, true), Err(Error::InvalidAddress));
        assert_eq!(read(ipa - 0x1000, 512, true), Err(Error::InvalidAddress));
        assert_eq!(read(ipa, 512, true), Ok((512, 512)), "nothing was cleared");
        assert_eq!(read(ipa, 512, true), Ok((0, 0)));
        assert_eq!(read(ipa - 0x1000, 1, true), Ok((1, 1)), "nor below");
    }
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, QEMU_FLTS_ECAP, true);
    case(&mut vtd(&memory, &device, RootTableMode::Scalable));
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::new(&memory, Features::PER_SPEC);
    case(&mut smmu(&memory, &device));
}

#[test]
fn smmu_stage2_dirty_tracking_with_httu() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::new(&memory, Features::PER_SPEC);
    let mut world = smmu(&memory, &device);
    assert!(world.unit.dirty_tracking());
    rounds(&mut world);
}

/// A VT-d shadow nest in the IoSpace (SLADS without NEST): its device
/// writes through the shadow; the layer reports those pages against the
/// IoSpace pages behind them, round after round, beside a device attached
/// directly; discarded when tracking starts.
#[test]
fn vtd_shadow_nest_dirty_pages_are_reported() {
    nested_rounds(SLADS_ECAP);
}

/// The same through VT-d hardware nesting (NEST and SLADS: PGTT=nested,
/// the unit marks stage 2 itself).
#[test]
fn vtd_hardware_nest_dirty_pages_are_reported() {
    nested_rounds(NESTING_ECAP | 1 << 45);
}

fn nested_rounds(ecap: u64) {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, ecap, false);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    let space = space_with_pages(&mut world);
    let nested = EDU + 1;
    world.attach(nested, None, space, true).unwrap();
    world.user_invalidate(space).unwrap();
    let write = |world: &VtdWorld<'_>, page: u64| {
        world
            .device
            .transact(nested, None, IOVA + page * 4096, Access::Write)
            .is_some()
    };
    // Written before tracking: not reported.
    assert!(write(&world, 2));
    world
        .state
        .set_dirty_tracking(&mut world.unit, space, true)
        .unwrap();
    assert!(read(&mut world, space, true).is_empty());
    assert!(write(&world, 2) && write(&world, 4) && dma(&world, 5, Access::Write));
    assert!(
        world
            .device
            .transact(nested, None, IOVA + 6 * 4096, Access::Read)
            .is_some()
    );
    assert_eq!(read(&mut world, space, true), set(&[2, 4, 5]));
    // Its translations were cached by the writes: the rewrite is seen.
    assert!(write(&world, 2) && write(&world, 6));
    assert_eq!(read(&mut world, space, false), set(&[2, 6]));
    assert_eq!(read(&mut world, space, true), set(&[2, 6]));
    assert!(read(&mut world, space, true).is_empty());
    // Deleting the IoSpace mid-tracking.
    assert!(write(&world, 3));
    world.delete_space(space).unwrap();
    assert!(!write(&world, 3));
    assert_eq!(
        world
            .state
            .read_dirty(&mut world.unit, space, 0, 1, true, |_| {}),
        Err(Error::DeadObject)
    );
    assert!(take_log().is_empty(), "{:?}", take_log());
}

/// As QEMU 10.0.2 emulates them: no second-stage A/D on VT-d (neither
/// mode), no HTTU on the SMMU.
#[test]
fn units_as_qemu_answer_not_supported() {
    fn refused<U, D, F>(world: &mut World<'_, U, D, F>)
    where
        U: IoUnit + common::Faults,
        D: common::Model,
        F: PageTableFormat + Copy,
    {
        assert!(!world.unit.dirty_tracking());
        let space = space_with_pages(world);
        assert_eq!(
            world.state.set_dirty_tracking(&mut world.unit, space, true),
            Err(Error::NotSupported)
        );
        assert_eq!(
            world
                .state
                .read_dirty(&mut world.unit, space, 0, 1, true, |_| {}),
            Err(Error::NotSupported)
        );
        assert!(dma(world, 0, Access::Write));
    }
    for (ecap, mode) in [
        (QEMU_ECAP, RootTableMode::Legacy),
        (PASID_ECAP, RootTableMode::Scalable),
        // SLADS without scalable mode: no PASID entry to carry SSADE.
        (SLADS_ECAP, RootTableMode::Legacy),
    ] {
        let memory = SimMemory::new(MEMORY);
        let device = SimVtd::new(&memory, QEMU_CAP, ecap, true);
        refused(&mut vtd(&memory, &device, mode));
    }
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::new(&memory, Features::QEMU);
    refused(&mut smmu(&memory, &device));
}

/// The invalidation after a clear is refused: the read answers
/// `IommuTimeout` and the IoSpace's device is blocked (a cached dirty
/// translation could otherwise let writes through unrecorded).
fn refused_flush_blocks<U, D, F>(world: &mut World<'_, U, D, F>)
where
    U: IoUnit + common::Faults,
    D: common::Model,
    F: PageTableFormat + Copy,
{
    let space = space_with_pages(world);
    world
        .state
        .set_dirty_tracking(&mut world.unit, space, true)
        .unwrap();
    assert!(dma(world, 3, Access::Write));
    world.device.break_invalidation(Some(false));
    let mut reported = Vec::new();
    let answer = world
        .state
        .read_dirty(&mut world.unit, space, DATA_IPA, DATA_PAGES, true, |i| {
            reported.push(i)
        });
    world.device.break_invalidation(None);
    assert_eq!(answer, Err(Error::IommuTimeout));
    assert_eq!(reported, [3], "the page was reported before the flush");
    assert!(!dma(world, 3, Access::Write), "the device is blocked");
    assert!(world.state.attachments().all(|a| a.blocked));
    take_log();
}

#[test]
fn vtd_refused_flush_after_a_clear_blocks_the_device() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, SLADS_ECAP, false);
    refused_flush_blocks(&mut vtd(&memory, &device, RootTableMode::Scalable));
}

#[test]
fn smmu_refused_flush_after_a_clear_blocks_the_device() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::new(&memory, Features::PER_SPEC);
    refused_flush_blocks(&mut smmu(&memory, &device));
}
