//! Random sequences of IOMMU operations (map, unmap, attach directly or
//! nested, detach, the driver's Invalidate, IoSpace delete) through the
//! layer against the VT-d (legacy, scalable with shadows, hardware
//! nesting) and SMMUv3 models. After every step, every DMA the model lets
//! through for any of the devices must land on a live IO mapping of its
//! IoSpace with the right for the access; direct attachments (and nests
//! the hardware walks, or a shadow just composed) must also reach every
//! live mapping. The layer must log nothing (no effect left unapplied),
//! and its indexes (IoSpace by object id and by DID, nests by IoSpace)
//! must agree with a scan of its records.

mod common;

use caps::{ObjectId, Rights};
use common::{DATA_IPA, DATA_PAGES, MEMORY, Model, World, smmu, take_log, vtd};
use iommu::model::SimMemory;
use iommu::model::smmu_device::SimSmmu;
use iommu::model::vtd_device::{NESTING_ECAP, QEMU_CAP, SimVtd};
use iommu::pagetable::PageTableFormat;
use iommu::vtd::regs::RootTableMode;
use iospace::IoUnit;
use proptest::prelude::*;

const SPACES: usize = 3;
const DEVICES: [u16; 6] = [0x10, 0x11, 0x12, 0x18, 0x19, 0x1a];

#[derive(Clone, Debug)]
enum Op {
    Map {
        space: usize,
        page: u64,
        write: bool,
    },
    Unmap {
        space: usize,
        page: u64,
    },
    Attach {
        device: usize,
        space: usize,
        nested: bool,
    },
    Detach {
        device: usize,
    },
    Invalidate {
        space: usize,
    },
    Delete {
        space: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let space = 0..SPACES;
    let page = 0..DATA_PAGES;
    let device = 0..DEVICES.len();
    prop_oneof![
        4 => (space.clone(), page.clone(), any::<bool>())
            .prop_map(|(space, page, write)| Op::Map { space, page, write }),
        2 => (space.clone(), page).prop_map(|(space, page)| Op::Unmap { space, page }),
        2 => (device.clone(), space.clone(), any::<bool>())
            .prop_map(|(device, space, nested)| Op::Attach { device, space, nested }),
        1 => device.prop_map(|device| Op::Detach { device }),
        2 => space.clone().prop_map(|space| Op::Invalidate { space }),
        1 => space.prop_map(|space| Op::Delete { space }),
    ]
}

/// Runs `ops`, checking after each. `shadows`: nests are VT-d shadows,
/// which reach a new mapping only after the driver's Invalidate.
fn run<U, D, F>(world: &mut World<'_, U, D, F>, ops: &[Op], shadows: bool) -> Result<(), String>
where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let mut slots: [Option<ObjectId>; SPACES] = [None; SPACES];
    // Whether each space's shadows were composed since its last change.
    let mut composed = [true; SPACES];
    let requesters: Vec<(u16, Option<u32>)> = DEVICES.iter().map(|&d| (d, None)).collect();
    for (step, op) in ops.iter().enumerate() {
        let mut space_of = |world: &mut World<'_, U, D, F>, slot: usize| {
            *slots[slot].get_or_insert_with(|| world.create_space().unwrap())
        };
        match *op {
            Op::Map { space, page, write } => {
                let object = space_of(world, space);
                let ipa = DATA_IPA + 4096 * page;
                if !world.spaces[&object].mappings.contains_key(&ipa) {
                    let pa = world.page();
                    let rights = if write {
                        Rights::READ_WRITE
                    } else {
                        Rights::READ
                    };
                    world
                        .map(object, ipa, pa, rights)
                        .map_err(|e| format!("map: {e:?}"))?;
                    composed[space] = false;
                }
            }
            Op::Unmap { space, page } => {
                let ipa = DATA_IPA + 4096 * page;
                if let Some(object) = slots[space]
                    && world.spaces[&object].mappings.contains_key(&ipa)
                {
                    world
                        .unmap(object, ipa)
                        .map_err(|e| format!("unmap: {e:?}"))?;
                    composed[space] = false;
                }
            }
            Op::Attach {
                device,
                space,
                nested,
            } => {
                let rid = DEVICES[device];
                if !world.attached.contains_key(&(rid, None)) {
                    let object = space_of(world, space);
                    world
                        .attach(rid, None, object, nested)
                        .map_err(|e| format!("attach: {e:?}"))?;
                    // A new shadow is empty until the driver's Invalidate.
                    composed[space] &= !nested;
                }
            }
            Op::Detach { device } => {
                let rid = DEVICES[device];
                if world.attached.contains_key(&(rid, None)) {
                    world
                        .detach(rid, None)
                        .map_err(|e| format!("detach: {e:?}"))?;
                }
            }
            Op::Invalidate { space } => {
                if let Some(object) = slots[space] {
                    world
                        .user_invalidate(object)
                        .map_err(|e| format!("invalidate: {e:?}"))?;
                    composed[space] = true;
                }
            }
            Op::Delete { space } => {
                if let Some(object) = slots[space].take() {
                    world
                        .delete_space(object)
                        .map_err(|e| format!("delete: {e:?}"))?;
                    composed[space] = true;
                }
            }
        }
        // Safety for everyone; liveness where the hardware must reach.
        world
            .check(&requesters, false)
            .map_err(|e| format!("step {step} ({op:?}): {e}"))?;
        let live: Vec<(u16, Option<u32>)> = requesters
            .iter()
            .copied()
            .filter(|key| {
                world.attached.get(key).is_some_and(|a| {
                    let slot = slots.iter().position(|s| *s == Some(a.space));
                    !a.nested || !shadows || slot.is_some_and(|s| composed[s])
                })
            })
            .collect();
        world
            .check(&live, true)
            .map_err(|e| format!("step {step} ({op:?}): {e}"))?;
        world
            .state
            .check_indexes(ObjectId(u32::MAX))
            .map_err(|e| format!("step {step} ({op:?}): {e}"))?;
        let log = take_log();
        if !log.is_empty() {
            return Err(format!("step {step} ({op:?}): the layer logged {log:?}"));
        }
    }
    Ok(())
}

/// Creates (`true`, with the object id given unless in use) or deletes
/// IoSpaces in [`CHURN_SLOTS`] slots in the order `ops` gives, mapping and unmapping a page in each new one (found
/// through the index), and checks the layer's indexes against a scan of
/// its records after every step.
fn churn_spaces<U, D, F>(
    world: &mut World<'_, U, D, F>,
    ops: &[(usize, bool, u32)],
) -> Result<(), String>
where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let mut slots: Vec<Option<ObjectId>> = vec![None; CHURN_SLOTS];
    for (step, &(slot, create, id)) in ops.iter().enumerate() {
        match (slots[slot], create) {
            (None, true) => {
                let object = if world.spaces.contains_key(&ObjectId(id)) {
                    world.create_space()
                } else {
                    world.create_space_as(ObjectId(id))
                }
                .map_err(|e| format!("create: {e:?}"))?;
                let pa = world.page();
                world
                    .map(object, DATA_IPA, pa, Rights::READ_WRITE)
                    .map_err(|e| format!("map: {e:?}"))?;
                world
                    .unmap(object, DATA_IPA)
                    .map_err(|e| format!("unmap: {e:?}"))?;
                slots[slot] = Some(object);
            }
            (Some(object), false) => {
                world
                    .delete_space(object)
                    .map_err(|e| format!("delete: {e:?}"))?;
                slots[slot] = None;
            }
            _ => continue,
        }
        for absent in [ObjectId(0), ObjectId(u32::MAX)] {
            world
                .state
                .check_indexes(absent)
                .map_err(|e| format!("step {step}: {e}"))?;
        }
        let log = take_log();
        if !log.is_empty() {
            return Err(format!("step {step}: the layer logged {log:?}"));
        }
    }
    Ok(())
}

/// IoSpaces alive at once in [`churn_spaces`]: most of what the test
/// pool holds, so the index sees collisions and long probes.
const CHURN_SLOTS: usize = 48;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn vtd_scalable_shadows_translate_only_live_mappings(ops in prop::collection::vec(op(), 1..40)) {
        let memory = SimMemory::new(MEMORY);
        let device = SimVtd::new(&memory, QEMU_CAP, common::PASID_ECAP, true);
        let mut world = vtd(&memory, &device, RootTableMode::Scalable);
        run(&mut world, &ops, true).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn vtd_legacy_shadows_translate_only_live_mappings(ops in prop::collection::vec(op(), 1..40)) {
        let memory = SimMemory::new(MEMORY);
        let device = SimVtd::new(&memory, QEMU_CAP, common::PASID_ECAP, true);
        let mut world = vtd(&memory, &device, RootTableMode::Legacy);
        run(&mut world, &ops, true).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn vtd_hardware_nesting_translates_only_live_mappings(ops in prop::collection::vec(op(), 1..40)) {
        let memory = SimMemory::new(MEMORY);
        let device = SimVtd::new(&memory, QEMU_CAP, NESTING_ECAP, false);
        let mut world = vtd(&memory, &device, RootTableMode::Scalable);
        run(&mut world, &ops, false).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn vtd_space_indexes_match_a_scan(
        ops in prop::collection::vec(
            (0..CHURN_SLOTS, prop::bool::weighted(0.7), 1..u32::MAX),
            1..160,
        )
    ) {
        let memory = SimMemory::new(MEMORY);
        let device = SimVtd::new(&memory, QEMU_CAP, common::PASID_ECAP, true);
        let mut world = vtd(&memory, &device, RootTableMode::Scalable);
        churn_spaces(&mut world, &ops).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn smmu_translates_only_live_mappings(ops in prop::collection::vec(op(), 1..40)) {
        let memory = SimMemory::new(MEMORY);
        let device = SimSmmu::qemu(&memory);
        let mut world = smmu(&memory, &device);
        run(&mut world, &ops, false).map_err(TestCaseError::fail)?;
    }
}
