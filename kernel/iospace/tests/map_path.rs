//! `IoSpace.Map`'s stage-2 write as the kernel makes it: the space's
//! record found once (`State::space_at`) for decode's checks, the leaf
//! then written there (`State::map_through`), into the last-level table the
//! space remembers for the region it last reached. What was remembered
//! must never put a page where the capability state does not.

mod common;

use caps::{ObjectId, Rights};
use common::{DATA_IPA, MEMORY, Model, PASID_ECAP, World, smmu, take_log, vtd};
use iommu::model::smmu_device::SimSmmu;
use iommu::model::vtd_device::{QEMU_CAP, SimVtd};
use iommu::model::{Access, SimMemory};
use iommu::pagetable::PageTableFormat;
use iommu::vtd::regs::RootTableMode;
use iospace::IoUnit;

/// A record found for a map, then moved (another IoSpace died and one
/// was made, so its position now holds the newcomer's record): the map
/// through it still lands in its own space, never in the newcomer's.
fn moved_record<U, D, F>(world: &mut World<'_, U, D, F>)
where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let spaces: Vec<ObjectId> = (0..4).map(|_| world.create_space().unwrap()).collect();
    let (dying, mapped) = (spaces[1], spaces[3]);
    let at = world.state.space_at(mapped).unwrap();
    world.delete_space(dying).unwrap();
    let newcomer = world.create_space().unwrap();
    // `mapped`'s record moved (the newcomer's took its place).
    assert_ne!(world.state.space_at(mapped), Some(at));
    world.attach(0x10, None, mapped, false).unwrap();
    world.attach(0x11, None, newcomer, false).unwrap();
    let pa = world.page();
    world.map_at(at, mapped, DATA_IPA, pa, Rights::READ_WRITE);
    let requesters = [(0x10, None), (0x11, None)];
    // Reads and writes of the one page, by its space's device alone.
    assert_eq!(world.check(&requesters, true), Ok(2));
    assert_eq!(
        world.device.transact(0x10, None, DATA_IPA, Access::Write),
        Some(pa)
    );
    assert_eq!(
        world.device.transact(0x11, None, DATA_IPA, Access::Read),
        None
    );
    assert!(take_log().is_empty());
}

#[test]
fn vtd_a_map_through_a_moved_record_lands_in_its_own_space() {
    for mode in [RootTableMode::Legacy, RootTableMode::Scalable] {
        let memory = SimMemory::new(MEMORY);
        let device = SimVtd::new(&memory, QEMU_CAP, PASID_ECAP, true);
        moved_record(&mut vtd(&memory, &device, mode));
    }
}

#[test]
fn smmu_a_map_through_a_moved_record_lands_in_its_own_space() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::qemu(&memory);
    moved_record(&mut smmu(&memory, &device));
}

/// Maps that go back and forth between two 2 MiB regions, and between
/// two IoSpaces, each write where the capability state says: the
/// remembered last-level table serves only its own region of its own
/// space.
fn regions_in_turn<U, D, F>(world: &mut World<'_, U, D, F>)
where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let (a, b) = (world.create_space().unwrap(), world.create_space().unwrap());
    world.attach(0x10, None, a, false).unwrap();
    world.attach(0x11, None, b, false).unwrap();
    let far = DATA_IPA + (2 << 20);
    for i in 0..4 {
        for (space, ipa) in [(a, DATA_IPA), (a, far), (b, far), (b, DATA_IPA)] {
            let pa = world.page();
            world
                .map(space, ipa + 4096 * i, pa, Rights::READ_WRITE)
                .unwrap();
        }
    }
    // The data pages (the first region) translate as mapped; the far
    // region's reached by address.
    assert_eq!(
        world.check(&[(0x10, None), (0x11, None)], true),
        Ok(2 * 4 * 2)
    );
    for (rid, space) in [(0x10, a), (0x11, b)] {
        for i in 0..4 {
            let ipa = far + 4096 * i;
            let want = world.spaces[&space].mappings[&ipa].0;
            assert_eq!(
                world.device.transact(rid, None, ipa, Access::Read),
                Some(want),
                "{rid:#x} at {ipa:#x}"
            );
        }
    }
    assert!(take_log().is_empty());
}

#[test]
fn vtd_maps_in_two_regions_in_turn_land_where_the_state_says() {
    for mode in [RootTableMode::Legacy, RootTableMode::Scalable] {
        let memory = SimMemory::new(MEMORY);
        let device = SimVtd::new(&memory, QEMU_CAP, PASID_ECAP, true);
        regions_in_turn(&mut vtd(&memory, &device, mode));
    }
}

#[test]
fn smmu_maps_in_two_regions_in_turn_land_where_the_state_says() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::qemu(&memory);
    regions_in_turn(&mut smmu(&memory, &device));
}
