//! The IOMMU object layer against the executable VT-d and SMMUv3 models,
//! through the code the kernel runs: many devices and IoSpaces, nests
//! (VT-d shadows and hardware nesting, SMMUv3 nested STE + CD), PASIDs,
//! revocation, table budgets, failing closed, fault routing.

mod common;

use caps::{FaultSource, ObjectId, Rights};
use common::{
    DATA_IPA, DATA_PAGES, IOVA, MEMORY, Model, PASID_ECAP, World, plant, smmu, take_log, vtd,
};
use iommu::model::smmu_device::SimSmmu;
use iommu::model::vtd_device::{NESTING_ECAP, QEMU_CAP, QEMU_ECAP, SimVtd};
use iommu::model::{Access, SimMemory};
use iommu::pagetable::PageTableFormat;
use iommu::vtd::regs::RootTableMode;
use iospace::{Flaw, IoUnit, SPACE_BUDGET};

const RW: Rights = Rights::READ_WRITE;

/// Three IoSpaces with two devices each, every data page mapped
/// read-write except every fourth read-only: each device reaches its own
/// space's pages and nothing else.
fn many_devices<U, D, F>(world: &mut World<'_, U, D, F>)
where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let mut requesters = Vec::new();
    for s in 0..3u16 {
        let space = world.create_space().unwrap();
        for i in 0..DATA_PAGES {
            let pa = world.page();
            let rights = if i % 4 == 3 { Rights::READ } else { RW };
            world.map(space, DATA_IPA + 4096 * i, pa, rights).unwrap();
        }
        for d in 0..2u16 {
            let rid = 0x10 + 8 * s + d;
            world.attach(rid, None, space, false).unwrap();
            requesters.push((rid, None));
        }
    }
    let seen = world.check(&requesters, true).unwrap();
    // Reads of every page, writes of three in four.
    assert_eq!(seen, 6 * (16 + 12));
    // A device nobody attached reaches nothing.
    assert_eq!(world.device.transact(0x40, None, 0x8, Access::Read), None);
    assert!(take_log().is_empty());
}

#[test]
fn vtd_many_devices_reach_only_their_own_spaces() {
    for mode in [RootTableMode::Legacy, RootTableMode::Scalable] {
        let memory = SimMemory::new(MEMORY);
        let device = SimVtd::new(&memory, QEMU_CAP, PASID_ECAP, true);
        many_devices(&mut vtd(&memory, &device, mode));
    }
}

#[test]
fn smmu_many_devices_reach_only_their_own_spaces() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::qemu(&memory);
    many_devices(&mut smmu(&memory, &device));
}

/// A device nested on its space's stage 1, another attached directly:
/// after the driver's `Invalidate` the nested one reaches every data page
/// through its IOVA; an unmap takes the page away from both at once, and
/// deleting the IoSpace takes every path.
fn nest_and_revoke<U, D, F>(world: &mut World<'_, U, D, F>)
where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let space = world.create_space().unwrap();
    let other = world.create_space().unwrap();
    for i in 0..DATA_PAGES {
        let pa = world.page();
        world.map(space, DATA_IPA + 4096 * i, pa, RW).unwrap();
        let pa = world.page();
        world.map(other, DATA_IPA + 4096 * i, pa, RW).unwrap();
    }
    world.attach(0x10, None, space, true).unwrap();
    world.attach(0x11, None, space, false).unwrap();
    world.attach(0x18, None, other, true).unwrap();
    world.user_invalidate(space).unwrap();
    world.user_invalidate(other).unwrap();
    let all = [(0x10, None), (0x11, None), (0x18, None)];
    assert_eq!(world.check(&all, true).unwrap(), 3 * 32);
    // A nested DMA really went through the driver's table.
    let landed = world
        .device
        .transact(0x10, None, IOVA + 0x3008, Access::Write);
    assert_eq!(
        landed,
        world.allowed(0x10, None, IOVA + 0x3008, Access::Write)
    );
    assert!(landed.is_some());

    // Unmap one page: no path to it is left (the translations above are
    // cached), the other pages still work after the driver's Invalidate.
    world.unmap(space, DATA_IPA + 0x3000).unwrap();
    assert_eq!(
        world
            .device
            .transact(0x10, None, IOVA + 0x3008, Access::Write),
        None
    );
    assert_eq!(
        world
            .device
            .transact(0x11, None, DATA_IPA + 0x3008, Access::Read),
        None
    );
    world.check(&all, false).unwrap();
    world.user_invalidate(space).unwrap();
    assert_eq!(world.check(&all, true).unwrap(), 3 * 32 - 2 * 2);

    // Delete the IoSpace: every path through it faults, the other
    // space's device still works, and its table pages are back.
    let free_before = world.state.free_pages();
    world.delete_space(space).unwrap();
    for (rid, address) in [(0x10, IOVA + 8), (0x11, DATA_IPA + 8)] {
        assert_eq!(
            world.device.transact(rid, None, address, Access::Read),
            None
        );
    }
    assert_eq!(world.check(&[(0x18, None)], true).unwrap(), 32);
    assert!(world.state.free_pages() > free_before);
    assert_eq!(world.state.available(space), None);
    assert!(take_log().is_empty(), "{:?}", take_log());
}

#[test]
fn vtd_shadow_nests_compose_and_revoke() {
    for mode in [RootTableMode::Legacy, RootTableMode::Scalable] {
        let memory = SimMemory::new(MEMORY);
        let device = SimVtd::new(&memory, QEMU_CAP, PASID_ECAP, true);
        nest_and_revoke(&mut vtd(&memory, &device, mode));
    }
}

/// A new IoSpace with every data page mapped read-write.
fn space_with_data<U, D, F>(world: &mut World<'_, U, D, F>) -> ObjectId
where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let space = world.create_space().unwrap();
    for i in 0..DATA_PAGES {
        let pa = world.page();
        world.map(space, DATA_IPA + 4096 * i, pa, RW).unwrap();
    }
    space
}

/// One IoSpace at its share of nests, a device on each: an unmap
/// invalidates the space and every one of its shadows, so no device
/// keeps a cached translation of the page.
#[test]
fn vtd_unmap_invalidates_every_shadow_of_a_space() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, PASID_ECAP, true);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    let space = space_with_data(&mut world);
    let mut requesters = Vec::new();
    for copy in 0..iospace::SHARE.nests as u64 {
        let root = if copy == 0 {
            world.stage1_of(space).unwrap()
        } else {
            world.another_stage1(space, copy).unwrap()
        };
        let rid = 0x20 + copy as u16;
        world.attach_at(rid, None, space, Some(root)).unwrap();
        world.user_invalidate_at(space, root).unwrap();
        requesters.push((rid, None));
    }
    // Every device reaches every page (and the model caches them).
    assert_eq!(
        world.check(&requesters, true).unwrap(),
        requesters.len() * DATA_PAGES as usize * 2
    );
    world.unmap(space, DATA_IPA).unwrap();
    world.check(&requesters, false).unwrap();
    assert_eq!(take_log(), Vec::<String>::new());
}

/// Two shadow nests of one IoSpace, each device's translations cached: a
/// stage-2 unmap no shadow entry was composed through (a page in another
/// 2 MiB region than the data and the stage-1 tables) invalidates the
/// IoSpace's tag alone, one IOTLB descriptor, and every nested page
/// still translates; an unmap of a data page the shadows translate to
/// invalidates the space's tag and both shadows', and neither device
/// reaches that page any more, though both had it cached.
#[test]
fn vtd_unmap_away_from_the_shadows_spares_their_tags() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, PASID_ECAP, true);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    let space = space_with_data(&mut world);
    let roots = [
        world.stage1_of(space).unwrap(),
        world.another_stage1(space, 1).unwrap(),
    ];
    let requesters = [(0x20, None), (0x21, None)];
    for (root, &(rid, pasid)) in roots.iter().zip(&requesters) {
        world.attach_at(rid, pasid, space, Some(*root)).unwrap();
        world.user_invalidate_at(space, *root).unwrap();
    }
    let far = 0x2000_0000;
    let pa = world.page();
    world.map(space, far, pa, RW).unwrap();
    let pages = 2 * DATA_PAGES as usize * 2;
    assert_eq!(world.check(&requesters, true).unwrap(), pages);
    let iotlb = || device.counts.get().iotlb;

    let before = iotlb();
    world.unmap(space, far).unwrap();
    assert_eq!(iotlb() - before, 1);
    assert_eq!(world.check(&requesters, true).unwrap(), pages);

    let before = iotlb();
    world.unmap(space, DATA_IPA + 0x2000).unwrap();
    assert_eq!(iotlb() - before, 3);
    for &(rid, pasid) in &requesters {
        for access in [Access::Read, Access::Write] {
            let through = world.device.transact(rid, pasid, IOVA + 0x2008, access);
            assert_eq!(through, None, "{rid:#x} {access:?}");
        }
    }
    world.check(&requesters, false).unwrap();
    assert_eq!(take_log(), Vec::<String>::new());
}

/// One batch unmapping a page of two IoSpaces, each with a shadow nest
/// whose device cached it, then invalidating both domains with one wait
/// (a `CNode.Revoke` of Frame copies mapped in both): each domain's
/// invalidation names its own shadow, so neither device reaches its
/// page. (The layer remembers where the last unmapped space's record is;
/// the invalidation of the first space must not take the second's.)
#[test]
fn vtd_one_batch_unmaps_from_two_spaces_with_shadows() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, PASID_ECAP, true);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    let spaces = [space_with_data(&mut world), space_with_data(&mut world)];
    let requesters = [(0x20, None), (0x28, None)];
    for (&space, &(rid, pasid)) in spaces.iter().zip(&requesters) {
        world.attach(rid, pasid, space, true).unwrap();
        world.user_invalidate(space).unwrap();
    }
    let pages = 2 * DATA_PAGES as usize * 2;
    assert_eq!(world.check(&requesters, true).unwrap(), pages);
    let dids = spaces.map(|space| world.did(space));
    for (&space, &did) in spaces.iter().zip(&dids) {
        world
            .spaces
            .get_mut(&space)
            .unwrap()
            .mappings
            .remove(&DATA_IPA);
        world.apply(caps::Effect::UnmapIoPage {
            unit: 0,
            did,
            space,
            ipa: DATA_IPA,
            size_bits: 12,
        });
    }
    for did in dids {
        world.apply(caps::Effect::InvalidateDomain { unit: 0, did });
    }
    world.apply(caps::Effect::WaitForInvalidation { unit: 0 });
    for &(rid, pasid) in &requesters {
        assert_eq!(
            world.device.transact(rid, pasid, IOVA + 8, Access::Read),
            None
        );
    }
    world.check(&requesters, false).unwrap();
    assert_eq!(take_log(), Vec::<String>::new());
}

/// Every DMA of `requesters` through their nests faults.
fn all_fault<U, D, F>(world: &World<'_, U, D, F>, requesters: &[(u16, Option<u32>)]) -> bool
where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    requesters.iter().all(|&(rid, pasid)| {
        (0..DATA_PAGES).all(|i| {
            [Access::Read, Access::Write].into_iter().all(|access| {
                world
                    .device
                    .transact(rid, pasid, IOVA + 4096 * i, access)
                    .is_none()
            })
        })
    })
}

/// Shadow nests of one IoSpace for several devices and PASIDs, three
/// stage 1s (devices 0x20, 0x21 and PASID 1 of 0x22 share the first):
/// a stage-2 unmap drops only the shadow entries composed through the
/// unmapped IPA, before it returns. A page none depends on: every page
/// still translates. A data page: no device reaches it, every other page
/// still translates without the driver's `Invalidate` (the check demands
/// it: `live`). A table page of one stage 1: every
/// DMA through that nest faults, even after the IPA is mapped again to
/// another frame, and the other nests keep translating every page.
#[test]
fn vtd_unmap_drops_only_the_shadow_entries_through_it() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, PASID_ECAP, true);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    let space = space_with_data(&mut world);
    let roots = [
        world.stage1_of(space).unwrap(),
        world.another_stage1(space, 1).unwrap(),
        world.another_stage1(space, 2).unwrap(),
    ];
    let users: [&[(u16, Option<u32>)]; 3] = [
        &[(0x20, None), (0x21, None), (0x22, Some(1))],
        &[(0x23, None), (0x22, Some(2))],
        &[(0x24, Some(7))],
    ];
    for (root, users) in roots.iter().zip(users) {
        for &(rid, pasid) in users {
            world.attach_at(rid, pasid, space, Some(*root)).unwrap();
        }
        world.user_invalidate_at(space, *root).unwrap();
    }
    let everyone: Vec<(u16, Option<u32>)> = users.concat();
    let pages = DATA_PAGES as usize * 2;
    assert_eq!(
        world.check(&everyone, true).unwrap(),
        everyone.len() * pages
    );

    // A page no shadow depends on (a 2 MiB region of IPAs away from
    // the tables and the data): nothing dropped, and the space's shadow
    // span shrinks to what the nests record, which the unmaps below
    // must still meet.
    let unrelated = 0x2000_0000;
    let frame = world.page();
    world.map(space, unrelated, frame, RW).unwrap();
    world.unmap(space, unrelated).unwrap();
    assert_eq!(
        world.check(&everyone, true).unwrap(),
        everyone.len() * pages
    );

    // A data page: gone for every device, the rest still translates.
    world.unmap(space, DATA_IPA + 5 * 4096).unwrap();
    assert_eq!(
        world.check(&everyone, true).unwrap(),
        everyone.len() * (pages - 2)
    );

    // The last-level table page of the second stage 1, mapped again
    // to a fresh (zeroed) frame: its nest's devices reach nothing.
    let table_ipa = world.stage1_table_ipas(roots[1])[3];
    world.unmap(space, table_ipa).unwrap();
    let fresh = world.page();
    world.map(space, table_ipa, fresh, RW).unwrap();
    assert!(all_fault(&world, users[1]));
    let others: Vec<(u16, Option<u32>)> = [users[0], users[2]].concat();
    assert_eq!(
        world.check(&others, true).unwrap(),
        others.len() * (pages - 2)
    );
    // The root page of the third: the same for its nest.
    let root_ipa = world.stage1_table_ipas(roots[2])[0];
    world.unmap(space, root_ipa).unwrap();
    assert!(all_fault(&world, users[2]));
    assert_eq!(
        world.check(users[0], true).unwrap(),
        users[0].len() * (pages - 2)
    );
    assert_eq!(take_log(), Vec::<String>::new());
}

#[test]
fn vtd_hardware_nests_translate_and_revoke() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, NESTING_ECAP, false);
    nest_and_revoke(&mut vtd(&memory, &device, RootTableMode::Scalable));
}

#[test]
fn smmu_nested_stes_translate_and_revoke() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::qemu(&memory);
    nest_and_revoke(&mut smmu(&memory, &device));
}

/// PASIDs of one requester in different IoSpaces (VT-d scalable mode):
/// each reaches its own space; detaching one PASID leaves the others.
#[test]
fn vtd_pasids_of_one_device_reach_their_own_spaces() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, PASID_ECAP, true);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    assert!(world.unit.pasids_supported(true));
    let mut requesters = Vec::new();
    for (k, pasid) in [1u32, 2, 64, 1000].into_iter().enumerate() {
        let space = world.create_space().unwrap();
        for i in 0..DATA_PAGES {
            let pa = world.page();
            world.map(space, DATA_IPA + 4096 * i, pa, RW).unwrap();
        }
        world.attach(0x20, Some(pasid), space, k % 2 == 1).unwrap();
        world.user_invalidate(space).unwrap();
        requesters.push((0x20, Some(pasid)));
    }
    assert_eq!(world.check(&requesters, true).unwrap(), 4 * 32);
    world.detach(0x20, Some(2)).unwrap();
    assert_eq!(
        world.device.transact(0x20, Some(2), IOVA + 8, Access::Read),
        None
    );
    assert_eq!(world.check(&requesters, true).unwrap(), 3 * 32);
    // Legacy mode (and the SMMU without substreams) has no PASIDs.
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, QEMU_ECAP, true);
    let world = vtd(&memory, &device, RootTableMode::Legacy);
    assert!(!world.unit.pasids_supported(true));
    assert!(take_log().is_empty());
}

/// One IoSpace maps pages in fresh 1 GiB regions until its reservation
/// refuses: `TableMemoryExhausted` for it alone; another IoSpace still
/// maps and attaches; the pages come back when it dies.
fn budgets<U, D, F>(world: &mut World<'_, U, D, F>)
where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let free = world.state.free_pages();
    let hog = world.create_space().unwrap();
    let other = world.create_space().unwrap();
    let frame = world.page();
    let mut maps = 0u64;
    let refused = loop {
        match world.map(hog, (maps + 1) << 30, frame, Rights::READ) {
            Ok(()) => maps += 1,
            Err(e) => break e,
        }
        assert!(maps < 1000);
    };
    assert_eq!(refused, abi::Error::TableMemoryExhausted);
    // Two tables per fresh 1 GiB region under a shared top table.
    assert!(maps >= (SPACE_BUDGET as u64 - 8) / 2 - 1, "{maps} maps");
    assert_eq!(
        world.state.ensure_attach_room(hog, None),
        Err(abi::Error::TableMemoryExhausted)
    );
    world.map(other, DATA_IPA, frame, RW).unwrap();
    world.attach(0x30, None, other, false).unwrap();
    assert_eq!(world.check(&[(0x30, None)], true).unwrap(), 2);
    world.delete_space(hog).unwrap();
    world.delete_space(other).unwrap();
    assert_eq!(world.state.free_pages(), free);
    assert!(take_log().is_empty(), "{:?}", take_log());
}

#[test]
fn vtd_one_space_runs_out_of_table_pages_alone() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, PASID_ECAP, true);
    budgets(&mut vtd(&memory, &device, RootTableMode::Scalable));
}

#[test]
fn smmu_one_space_runs_out_of_table_pages_alone() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::qemu(&memory);
    budgets(&mut smmu(&memory, &device));
}

/// Shares: one IoSpace holds at most a quarter of the attachments.
#[test]
fn one_space_holds_at_most_its_share_of_attachments() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, PASID_ECAP, true);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    let space = world.create_space().unwrap();
    let mut rid = 0x100;
    let refused = loop {
        match world.attach(rid, None, space, false) {
            Ok(()) => rid += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(refused, abi::Error::IoShareExhausted);
    assert_eq!(rid - 0x100, iospace::SHARE.attachments as u16);
    let other = world.create_space().unwrap();
    world.attach(0x300, None, other, false).unwrap();
}

/// A failed invalidation after an unmap: the invocation answers
/// `IommuTimeout` and every device of the IoSpace is blocked (even for
/// pages still mapped); with a refused command the other IoSpace keeps
/// working, with a wedged queue (SMMUv3) all DMA stops. `kick`: the unit
/// only acts on the queued blocking once something is queued after the
/// queue moves again (VT-d): unmap a page of the other IoSpace first.
fn fail_closed<U, D, F>(
    world: &mut World<'_, U, D, F>,
    wedged: bool,
    others_survive: bool,
    kick: bool,
) where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let a = world.create_space().unwrap();
    let b = world.create_space().unwrap();
    for (space, rids) in [(a, [0x10u16, 0x11]), (b, [0x18, 0x19])] {
        for i in 0..4 {
            let pa = world.page();
            world.map(space, DATA_IPA + 4096 * i, pa, RW).unwrap();
        }
        for rid in rids {
            world.attach(rid, None, space, false).unwrap();
        }
    }
    let all = [(0x10, None), (0x11, None), (0x18, None), (0x19, None)];
    world.check(&all, true).unwrap();
    world.device.break_invalidation(Some(wedged));
    assert_eq!(world.unmap(a, DATA_IPA), Err(abi::Error::IommuTimeout));
    world.device.break_invalidation(None);
    if kick {
        world.unmap(b, DATA_IPA + 0x3000).unwrap();
    }
    for rid in [0x10, 0x11] {
        for page in 0..4 {
            let address = DATA_IPA + 4096 * page;
            assert_eq!(
                world.device.transact(rid, None, address, Access::Read),
                None,
                "{rid:#x} {address:#x}"
            );
        }
    }
    let survivors = world.check(&[(0x18, None), (0x19, None)], false).unwrap();
    let expected = if kick { 12 } else { 16 };
    assert_eq!(
        survivors == expected,
        others_survive,
        "{survivors} translations of space b"
    );
    let blocked = world.state.attachments().filter(|a| a.blocked).count();
    assert!(blocked >= 2, "{blocked} attachments blocked");
    take_log();
}

#[test]
fn vtd_fails_closed_on_a_refused_invalidation() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, PASID_ECAP, true);
    fail_closed(
        &mut vtd(&memory, &device, RootTableMode::Scalable),
        false,
        true,
        false,
    );
}

#[test]
fn vtd_fails_closed_on_a_wedged_queue() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, QEMU_ECAP, true);
    // The clears are queued behind the wedge and take effect when it
    // clears (kernel README, "Fail closed"); space b's devices were not
    // exposed and keep working.
    fail_closed(
        &mut vtd(&memory, &device, RootTableMode::Legacy),
        true,
        true,
        true,
    );
}

#[test]
fn smmu_fails_closed_on_a_refused_invalidation() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::qemu(&memory);
    fail_closed(&mut smmu(&memory, &device), false, true, false);
}

#[test]
fn smmu_stops_all_dma_on_a_wedged_queue() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::qemu(&memory);
    fail_closed(&mut smmu(&memory, &device), true, false, false);
}

/// Faults go to the queue of their device's route, else of their
/// domain's, with the bound badge; nobody's faults are dropped; each
/// notification is signalled once per drain.
fn fault_routing<U, D, F>(world: &mut World<'_, U, D, F>)
where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let space = world.create_space().unwrap();
    let lonely = world.create_space().unwrap();
    let pa = world.page();
    world.map(space, DATA_IPA, pa, Rights::READ).unwrap();
    for rid in [0x10, 0x11] {
        world.attach(rid, None, space, false).unwrap();
    }
    world.attach(0x20, None, lonely, false).unwrap();
    let did = world.spaces[&space].did;
    world.bind(ObjectId(900), 7, 0xd0, FaultSource::Device(0x10));
    world.bind(ObjectId(901), 8, 0xd1, FaultSource::Domain(did));
    world.deliver();
    // 0x10 writes a read-only page; 0x11 reads an unmapped one; 0x20 has
    // no route.
    let cases = [
        (0x10u16, 0x8u64, Access::Write),
        (0x11, 0x5000, Access::Read),
        (0x20, 0x0, Access::Read),
    ];
    let mut routed = Vec::new();
    for (rid, address, access) in cases {
        assert_eq!(world.device.transact(rid, None, address, access), None);
        let drained = world.deliver();
        routed.push((drained.signals.to_vec(), drained.dropped.to_vec()));
    }
    assert_eq!(routed[0], (vec![7], vec![]));
    assert_eq!(routed[1], (vec![8], vec![]));
    assert_eq!(routed[2], (vec![], vec![0x20]));
    let (record, lost) = world.state.pop(ObjectId(900));
    let record = record.expect("a record for the device's queue");
    assert_eq!(
        (record[0], record[1], record[2] & !0xfff, record[3] & 2),
        (0xd0, u64::MAX, 0, 2)
    );
    assert_eq!(lost, 0);
    let record = world
        .state
        .pop(ObjectId(901))
        .0
        .expect("a record for the domain's queue");
    assert_eq!(
        (record[0], record[2] & !0xfff, record[3] & 1),
        (0xd1, 0x5000, 1)
    );
    assert_eq!(world.state.pop(ObjectId(900)).0, None);
    // A queue whose notification died keeps its records, signals nobody.
    world.state.reconcile(|_, _| true, |n| *n != 7);
    assert!(
        world
            .device
            .transact(0x10, None, 0x8, Access::Write)
            .is_none()
    );
    let drained = world.deliver();
    assert!(drained.signals.is_empty());
    assert!(world.state.pop(ObjectId(900)).0.is_some());
    assert!(world.state.faults_awaited());
}

#[test]
fn vtd_faults_reach_their_queues() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, PASID_ECAP, true);
    fault_routing(&mut vtd(&memory, &device, RootTableMode::Scalable));
}

#[test]
fn smmu_faults_reach_their_queues() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::qemu(&memory);
    fault_routing(&mut smmu(&memory, &device));
}

/// The checks catch a layer that skips invalidations (the kernel's
/// `io-skip-invalidation` seed): a cached translation outlives the unmap.
#[test]
fn a_skipped_invalidation_is_caught() {
    fn run(smmu_unit: bool, planted: bool) -> Result<usize, String> {
        plant(planted.then_some(Flaw::SkipInvalidation));
        let memory = SimMemory::new(MEMORY);
        let result = if smmu_unit {
            let device = SimSmmu::qemu(&memory);
            unmap_after_dma(&mut smmu(&memory, &device))
        } else {
            let device = SimVtd::new(&memory, QEMU_CAP, PASID_ECAP, true);
            unmap_after_dma(&mut vtd(&memory, &device, RootTableMode::Scalable))
        };
        plant(None);
        result
    }
    for smmu_unit in [false, true] {
        let caught = run(smmu_unit, true).expect_err("the stale translation went unnoticed");
        assert!(caught.contains("reached"), "{caught}");
        assert_eq!(run(smmu_unit, false), Ok(0));
    }
}

/// DMA through page 0, unmap it, check every path.
fn unmap_after_dma<U, D, F>(world: &mut World<'_, U, D, F>) -> Result<usize, String>
where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let space = world.create_space().unwrap();
    let pa = world.page();
    world.map(space, DATA_IPA, pa, RW).unwrap();
    world.attach(0x10, None, space, false).unwrap();
    world.check(&[(0x10, None)], true)?;
    world.unmap(space, DATA_IPA).unwrap();
    world.check(&[(0x10, None)], true)
}

/// The MSI doorbell (SMMUv3, `IrqHandler.MsiMessage` on aarch64): mapped
/// once, write-only, at the last page of the IoSpace's IPA range; a
/// device attached to the space can write it and not read it, another
/// space's device reaches nothing there; a second call changes nothing;
/// it goes with the IoSpace.
#[test]
fn smmu_msi_doorbell_is_write_only_in_its_own_space() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::qemu(&memory);
    let mut world = smmu(&memory, &device);
    let space = world.create_space().unwrap();
    let other = world.create_space().unwrap();
    world.attach(0x10, None, space, false).unwrap();
    world.attach(0x18, None, other, false).unwrap();
    // A RAM page stands in for the GICv2m frame.
    let doorbell = world.page();
    let ipa = world.state.map_msi_doorbell(space, doorbell).unwrap();
    assert_eq!(Some(ipa), world.state.msi_doorbell_of(space));
    assert_eq!(ipa & 0xfff, 0);
    let free = world.state.free_pages();
    let available = world.state.available(space);
    assert_eq!(world.state.map_msi_doorbell(space, doorbell), Ok(ipa));
    assert_eq!(world.state.free_pages(), free, "mapped once");
    assert_eq!(world.state.available(space), available);
    let write = world.device.transact(0x10, None, ipa + 0x40, Access::Write);
    assert_eq!(write, Some(doorbell + 0x40));
    let read = world.device.transact(0x10, None, ipa + 0x40, Access::Read);
    assert_eq!(read, None, "the doorbell is write-only");
    let elsewhere = world.device.transact(0x18, None, ipa + 0x40, Access::Write);
    assert_eq!(elsewhere, None, "another space has no doorbell");
    let mut doorbells = Vec::new();
    world
        .state
        .msi_doorbells(|s, at, pa| doorbells.push((s, at, pa)));
    assert_eq!(doorbells, [(space, ipa, doorbell)]);
    world.delete_space(space).unwrap();
    doorbells.clear();
    world
        .state
        .msi_doorbells(|s, at, pa| doorbells.push((s, at, pa)));
    assert!(doorbells.is_empty());
    assert_eq!(
        world.state.map_msi_doorbell(space, doorbell),
        Err(abi::Error::DeadObject)
    );
    assert!(take_log().is_empty(), "{:?}", take_log());
}

/// `IoFaultQueue.Bind`'s decode asks `can_bind_queue` before the model
/// routes the source, so the bind that follows finds its record: the check
/// answers as the bind does, for a new queue with every record taken
/// (`ObjectTableFull`) and for a queue that already has one (rebinding).
#[test]
fn the_queue_record_check_agrees_with_the_bind() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::qemu(&memory);
    let mut world = smmu(&memory, &device);
    for queue in 0..iospace::QUEUES as u32 {
        assert_eq!(world.state.can_bind_queue(ObjectId(1000 + queue)), Ok(()));
        world
            .state
            .bind_queue(ObjectId(1000 + queue), 1, 0, || Ok(()))
            .unwrap();
    }
    let new = ObjectId(2000);
    assert_eq!(
        world.state.can_bind_queue(new),
        Err(abi::Error::ObjectTableFull)
    );
    assert_eq!(
        world.state.bind_queue(new, 1, 0, || Ok(())),
        Err(abi::Error::ObjectTableFull)
    );
    assert_eq!(world.state.can_bind_queue(ObjectId(1000)), Ok(()));
    assert_eq!(
        world.state.bind_queue(ObjectId(1000), 2, 5, || Ok(())),
        Ok(())
    );
}
