//! SVA through the layer (`State::bind_vspace`, `invalidate_vspace`,
//! `unbind_vspace`, `reconcile_sva`) against the executable models: VT-d
//! as QEMU 10.0.2 with `x-flts=on` (first stage only) and SMMUv3 as QEMU
//! (stage-1-only STE). A CPU-style address space is built in the model's
//! memory, as the kernel's would be (x86 4-level paging with the kernel
//! half's entries supervisor-only; VMSAv8-64 TTB0 tables), and the device
//! DMAs by its virtual addresses.
//!
//! Checked by DMA through the models: the bound device reaches what the
//! VSpace maps; after a leaf is cleared and `invalidate_vspace` returns,
//! the device no longer reaches it even though its IOTLB held the
//! translation (with the `SkipSvaInvalidation` flaw it still does); the
//! kernel half is unreachable (VT-d: U/S clear; SMMUv3: no TTB1); unbind
//! and a dead root block the device and give the pool's pages back.

mod common;

use caps::{ObjectId, ObjectKind};
use common::{MEMORY, Model, World, plant, smmu, vtd};
use iommu::PhysMem;
use iommu::model::smmu_device::SimSmmu;
use iommu::model::vtd_device::{NESTING_ECAP, QEMU_CAP, QEMU_FLTS_ECAP, SimVtd};
use iommu::model::{Access, SimFrames, SimMemory};
use iommu::pagetable::{PageSize, PageTable, PageTableFormat, Perms};
use iommu::smmuv3::pagetable::{Stage1Format, levels_4k};
use iommu::smmuv3::regs::Features;
use iommu::vtd::regs::RootTableMode;
use iommu::vtd::tables::FirstStageFormat;
use iospace::{Flaw, IoUnit};

const EDU: u16 = 0x10;
const DEVICE: ObjectId = ObjectId(900);
const ROOT: ObjectId = ObjectId(901);
/// Where the VSpace maps its data page.
const VA: u64 = 0x50_0000_0000;
/// The CPU's page-table pages and the data pages, apart from the world's.
const TABLES: (u64, u64) = (400 << 20, 416 << 20);

/// A VSpace in the model's memory: its root, the data page mapped at
/// [`VA`], and the table.
struct VSpace<F: PageTableFormat> {
    table: PageTable<F>,
    data: u64,
}

fn vspace<F: PageTableFormat + Copy>(
    memory: &SimMemory,
    frames: &mut SimFrames<'_>,
    format: F,
    height: u32,
) -> VSpace<F> {
    let table = PageTable::new(frames, format, height, 48).unwrap();
    let data = iommu::FrameAllocator::alloc_zeroed_frame(frames).unwrap();
    table
        .map(
            memory,
            frames,
            VA,
            data,
            PageSize::Size4K,
            Perms::READ_WRITE,
        )
        .unwrap();
    VSpace { table, data }
}

/// Binds the test's device (its `pasid`, or untagged) to the VSpace
/// rooted at `root`: what `bind_vspace` answers.
fn bind<U, D, F>(
    world: &mut World<'_, U, D, F>,
    pasid: Option<u32>,
    root: u64,
) -> Result<(), abi::Error>
where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    world
        .state
        .bind_vspace(&mut world.unit, DEVICE, u32::from(EDU), pasid, ROOT, root)
}

/// What every vendor must show, given a bound `space` whose device is
/// `world.device` (its DMA tagged `pasid`, or untagged).
fn revocation<U, D, F>(
    world: &mut World<'_, U, D, F>,
    space: &VSpace<impl PageTableFormat>,
    pasid: Option<u32>,
) where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let root = space.table.root();
    let reached = world.device.transact(EDU, pasid, VA + 8, Access::Write);
    assert_eq!(reached, Some(space.data + 8), "the bound device reaches VA");
    // The CPU leaf goes; the device's IOTLB still holds it until the
    // layer invalidates.
    space.table.unmap(world.memory, VA).unwrap();
    plant(Some(Flaw::SkipSvaInvalidation));
    world.state.invalidate_vspace(&mut world.unit, root, VA, 12);
    let stale = world.device.transact(EDU, pasid, VA, Access::Write);
    plant(None);
    assert_eq!(
        stale,
        Some(space.data),
        "without the invalidation the cached translation survives (the seeded flaw)"
    );
    world.state.invalidate_vspace(&mut world.unit, root, VA, 12);
    assert_eq!(world.state.take_failure(), None);
    assert_eq!(
        world.device.transact(EDU, pasid, VA, Access::Write),
        None,
        "after invalidate_vspace the device no longer reaches the page"
    );
}

/// Unbind blocks the device and returns the pool's pages; so does a dead
/// root (`reconcile_sva`).
fn unbind<U, D, F>(world: &mut World<'_, U, D, F>, root: u64, free_before: usize)
where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    assert!(world.state.unbind_vspace(&mut world.unit, DEVICE));
    assert!(!world.state.sva_bound(DEVICE));
    assert_eq!(world.state.free_pages(), free_before, "pages back");
    world
        .state
        .bind_vspace(&mut world.unit, DEVICE, u32::from(EDU), None, ROOT, root)
        .unwrap();
    world.state.reconcile_sva(&mut world.unit, true, |o, kind| {
        !(o == ROOT && kind == ObjectKind::PageTable)
    });
    assert!(!world.state.sva_bound(DEVICE), "a dead root's binding ends");
    assert_eq!(world.state.free_pages(), free_before);
    assert_eq!(world.device.transact(EDU, None, VA, Access::Read), None);
}

#[test]
fn vtd_first_stage_binding_revokes_and_hides_the_kernel_half() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, QEMU_FLTS_ECAP, true);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    assert!(world.unit.sva_supported() && !world.unit.stage2_supported());
    let mut frames = SimFrames::new(&memory, TABLES.0, TABLES.1);
    let format = FirstStageFormat::for_unit(world.unit.capability());
    let space = vspace(&memory, &mut frames, format, 4);
    // The kernel half: PML4 entry 256 onwards, as `init_root` copies it.
    let kernel_page = iommu::FrameAllocator::alloc_zeroed_frame(&mut frames).unwrap();
    let kernel_va = 0xFFFF_8000_0000_0000u64;
    space
        .table
        .map(
            &memory,
            &mut frames,
            kernel_va & 0xFFFF_FFFF_FFFF,
            kernel_page,
            PageSize::Size4K,
            Perms::READ_WRITE,
        )
        .unwrap();
    let root = space.table.root();
    let free_before = world.state.free_pages();
    bind(&mut world, None, root).unwrap();
    // With U/S set the device would reach the page: the path is real.
    assert_eq!(
        device.transact(EDU, None, kernel_va, Access::Read),
        Some(kernel_page)
    );
    // As the kernel writes it: supervisor only. (The entry changed: the
    // whole address space is flushed, as after a table change.)
    let slot = root + 256 * 8;
    memory.write_u64(slot, memory.read_u64(slot) & !(1 << 2));
    world
        .state
        .reconcile_sva(&mut world.unit, true, |_, _| true);
    assert_eq!(
        device.transact(EDU, None, kernel_va, Access::Read),
        None,
        "the kernel half is unreachable"
    );
    revocation(&mut world, &space, None);
    unbind(&mut world, root, free_before);
}

#[test]
fn smmu_stage1_binding_revokes_and_has_no_kernel_half() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::new(&memory, Features::QEMU);
    let mut world = smmu(&memory, &device);
    assert!(world.unit.sva_supported());
    let mut frames = SimFrames::new(&memory, TABLES.0, TABLES.1);
    let space = vspace(&memory, &mut frames, Stage1Format, levels_4k(48));
    let root = space.table.root();
    let free_before = world.state.free_pages();
    bind(&mut world, None, root).unwrap();
    // TTB0 only: an upper-half (TTBR1) address does not translate.
    assert_eq!(
        device.transact(EDU, None, 0xFFFF_0000_4020_0000, Access::Read),
        None
    );
    revocation(&mut world, &space, None);
    unbind(&mut world, root, free_before);
}

#[test]
fn vtd_without_first_stage_answers_not_supported() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, common::PASID_ECAP, true);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    assert!(!world.unit.sva_supported() && world.unit.stage2_supported());
    assert_eq!(
        world
            .state
            .bind_vspace(&mut world.unit, DEVICE, u32::from(EDU), None, ROOT, 0x1000),
        Err(abi::Error::NotSupported)
    );
}

#[test]
fn vtd_pasid_binding_beside_the_devices_own_io_space() {
    // VT-d per spec: scalable mode with first and second stages, PASIDs.
    const PASID: u32 = 5;
    const PASID_OBJECT: ObjectId = ObjectId(902);
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, NESTING_ECAP, false);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    assert!(world.unit.sva_pasids_supported());
    // The device's own DMA through an IoSpace.
    let io_space = world.create_space().unwrap();
    let page = world.page();
    world
        .map(io_space, 0, page, caps::Rights::READ_WRITE)
        .unwrap();
    world.attach(EDU, None, io_space, false).unwrap();
    let mut frames = SimFrames::new(&memory, TABLES.0, TABLES.1);
    let format = FirstStageFormat::for_unit(world.unit.capability());
    let space = vspace(&memory, &mut frames, format, 4);
    let root = space.table.root();
    let free_before = world.state.free_pages();
    let rid = u32::from(EDU);
    // PASID 0 is the device's own (attached) entry.
    assert_eq!(
        world
            .state
            .bind_vspace(&mut world.unit, PASID_OBJECT, rid, Some(0), ROOT, root),
        Err(abi::Error::AlreadyAttached)
    );
    world
        .state
        .bind_vspace(&mut world.unit, PASID_OBJECT, rid, Some(PASID), ROOT, root)
        .unwrap();
    // Another IoPasid object for the same entry, or the same one again.
    for object in [ObjectId(903), PASID_OBJECT] {
        assert_eq!(
            world
                .state
                .bind_vspace(&mut world.unit, object, rid, Some(PASID), ROOT, root),
            Err(abi::Error::AlreadyAttached)
        );
    }
    // Untagged DMA stays in the IoSpace; PASID 5 reaches the VSpace.
    assert_eq!(device.transact(EDU, None, 8, Access::Read), Some(page + 8));
    assert_eq!(device.transact(EDU, None, VA, Access::Read), None);
    assert_eq!(device.transact(EDU, Some(6), VA, Access::Read), None);
    revocation(&mut world, &space, Some(PASID));
    assert_eq!(device.transact(EDU, None, 8, Access::Read), Some(page + 8));
    // Unbind blocks PASID 5 only and gives the pages back.
    space
        .table
        .map(
            &memory,
            &mut frames,
            VA,
            space.data,
            PageSize::Size4K,
            Perms::READ_WRITE,
        )
        .unwrap();
    assert_eq!(
        device.transact(EDU, Some(PASID), VA, Access::Read),
        Some(space.data)
    );
    assert!(world.state.unbind_vspace(&mut world.unit, PASID_OBJECT));
    assert_eq!(device.transact(EDU, Some(PASID), VA, Access::Read), None);
    assert_eq!(device.transact(EDU, None, 8, Access::Read), Some(page + 8));
    assert_eq!(world.state.free_pages(), free_before, "pages back");
    // A dead IoPasid's binding ends.
    world
        .state
        .bind_vspace(&mut world.unit, PASID_OBJECT, rid, Some(PASID), ROOT, root)
        .unwrap();
    world
        .state
        .reconcile_sva(&mut world.unit, false, |o, kind| {
            !(o == PASID_OBJECT && kind == ObjectKind::IoPasid)
        });
    assert!(!world.state.sva_bound(PASID_OBJECT));
    assert_eq!(device.transact(EDU, Some(PASID), VA, Access::Read), None);
    assert_eq!(world.state.free_pages(), free_before);
}

#[test]
fn smmu_and_vtd_without_first_stage_refuse_pasid_bindings() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::per_spec(&memory);
    let mut world = smmu(&memory, &device);
    assert!(world.unit.sva_supported() && !world.unit.sva_pasids_supported());
    assert_eq!(
        bind(&mut world, Some(1), 0x1000),
        Err(abi::Error::NotSupported)
    );
    // VT-d with PASIDs but no first stage (QEMU without x-flts).
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, common::PASID_ECAP, true);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    assert!(!world.unit.sva_pasids_supported());
    assert_eq!(
        bind(&mut world, Some(1), 0x1000),
        Err(abi::Error::NotSupported)
    );
}
