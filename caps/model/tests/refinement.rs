//! Property tests (state-machine style): random operation sequences run on
//! the real model and on the reference specification; every step must give
//! the same result and the same visible state (refinement), emit nothing on
//! error, and keep DESIGN invariants 1–5 on the real model plus the
//! abstract IOMMU.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use caps::checker::hardware::AbstractIommu;
use caps::checker::invariants::check_all;
use caps::checker::model::model_unit;
use caps::checker::ops::{Op, format_trace};
use caps::checker::reference::{Reference, visible_of};
use caps::{ArrayStorage, Caps, Flaws, NewObject, ObjectKind, ObjectState, Rights, SlotId};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const SLOTS: usize = 12;
const OBJECTS: usize = 12;
/// Operations per sequence.
const SEQUENCE_LENGTH: usize = 200;
/// Sequences per test function (two functions run in parallel).
const SEQUENCES_PER_TEST: u32 = 5_000;

static SEQUENCES: AtomicUsize = AtomicUsize::new(0);
static OPERATIONS: AtomicUsize = AtomicUsize::new(0);
static SUCCEEDED: AtomicUsize = AtomicUsize::new(0);
static ERRORS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn boot() -> (Caps<ArrayStorage<SLOTS, OBJECTS>>, Reference) {
    let mut caps = Caps::new(ArrayStorage::new());
    caps.boot_untyped(SlotId(0), 0x10000, 16, false).unwrap();
    caps.boot_iommu_control(SlotId(1), model_unit()).unwrap();
    caps.boot_irq_control(SlotId(2), 4).unwrap();
    caps.boot_untyped(SlotId(3), 0x100000, 14, true).unwrap();
    caps.boot_console(SlotId(SLOTS as u32 - 1)).unwrap();
    let mut reference = Reference::new(SLOTS, OBJECTS);
    reference.boot_untyped(0, 0x10000, 16, false);
    reference.boot_control(
        1,
        ObjectKind::IommuControl,
        ObjectState::IommuControl(model_unit()),
    );
    reference.boot_control(
        2,
        ObjectKind::IrqControl,
        ObjectState::IrqControl { irq_limit: 4 },
    );
    reference.boot_untyped(3, 0x100000, 14, true);
    reference.boot_control(SLOTS as u32 - 1, ObjectKind::Console, ObjectState::Plain);
    (caps, reference)
}

fn slot() -> impl Strategy<Value = u32> {
    prop_oneof![20 => 0..SLOTS as u32, 1 => Just(SLOTS as u32)]
}

fn new_object() -> impl Strategy<Value = NewObject> {
    prop_oneof![
        6 => Just(NewObject::Frame { size_bits: 12 }),
        1 => Just(NewObject::Frame { size_bits: 21 }),
        1 => Just(NewObject::Frame { size_bits: 13 }),
        4 => prop_oneof![Just(1u32), slot()].prop_map(|s| NewObject::IoSpace { iommu: SlotId(s) }),
        2 => (11u8..15).prop_map(|size_bits| NewObject::Untyped { size_bits }),
        1 => Just(NewObject::Endpoint),
        1 => Just(NewObject::Notification),
        1 => Just(NewObject::Tcb),
        1 => Just(NewObject::PageTable),
        2 => Just(NewObject::IoFaultQueue),
        1 => Just(NewObject::CNode { size_bits: 2 }),
    ]
}

fn rights() -> impl Strategy<Value = Rights> {
    (0u8..8).prop_map(Rights::from_bits_truncate)
}

fn op() -> impl Strategy<Value = Op> {
    let ipa = prop_oneof![
        Just(0u64),
        Just(0x1000),
        Just(0x2000),
        Just(0xf000),
        Just(0x800),
        Just(0x20_0000)
    ];
    prop_oneof![
        10 => (slot(), new_object(), slot()).prop_map(|(untyped, object, dest)| Op::Retype { untyped, object, dest }),
        3 => (slot(), slot()).prop_map(|(src, dest)| Op::Copy { src, dest }),
        4 => (slot(), slot(), rights(), prop_oneof![3 => Just(0u64), 1 => 1u64..3])
            .prop_map(|(src, dest, rights, badge)| Op::Mint { src, dest, rights, badge }),
        2 => (slot(), slot()).prop_map(|(src, dest)| Op::Move { src, dest }),
        4 => slot().prop_map(|slot| Op::Delete { slot }),
        2 => slot().prop_map(|slot| Op::Revoke { slot }),
        3 => (slot(), 0u32..5, slot()).prop_map(|(iommu, rid, dest)| Op::MintDevice { iommu, rid, dest }),
        3 => (slot(), 0u32..3, slot()).prop_map(|(device, pasid, dest)| Op::MintPasid { device, pasid, dest }),
        2 => (slot(), prop_oneof![Just(0x3000u64), Just(0x3001), Just(0xf000), Just(0x1_0000)], slot())
            .prop_map(|(space, root_ipa, dest)| Op::BindUserTable { space, root_ipa, dest }),
        6 => (slot(), slot()).prop_map(|(device, target)| Op::AttachDevice { device, target }),
        2 => slot().prop_map(|device| Op::DetachDevice { device }),
        5 => (slot(), slot()).prop_map(|(pasid, target)| Op::AttachPasid { pasid, target }),
        2 => slot().prop_map(|pasid| Op::DetachPasid { pasid }),
        8 => (slot(), slot(), ipa, rights()).prop_map(|(frame, space, ipa, rights)| Op::MapIo { frame, space, ipa, rights }),
        3 => slot().prop_map(|frame| Op::UnmapIo { frame }),
        2 => (slot(), slot()).prop_map(|(target, queue)| Op::BindFaultQueue { target, queue }),
        1 => (slot(), 0u16..6, slot()).prop_map(|(control, irq, dest)| Op::IssueIrq { control, irq, dest }),
        2 => (slot(), prop::option::of(slot())).prop_map(|(space, bitmap)| Op::DirtyAccess { space, bitmap }),
        2 => slot().prop_map(|queue| Op::RespondAccess { queue }),
        2 => (slot(), slot()).prop_map(|(device, root)| Op::BindVSpace { device, root }),
        2 => (slot(), slot()).prop_map(|(pasid, root)| Op::BindPasidVSpace { pasid, root }),
    ]
}

/// Most generated operations are "aimed": each slot argument `r` becomes
/// the `r`-th (cyclically) slot holding the kind the operation expects (or
/// the `r`-th empty slot for destinations), so that sequences go deep
/// instead of failing on kind checks. Unaimed operations keep raw slots and
/// exercise the error paths.
fn aim(op: Op, caps: &Caps<ArrayStorage<SLOTS, OBJECTS>>) -> Op {
    let pick = |r: u32, want: &dyn Fn(Option<ObjectKind>) -> bool| -> u32 {
        if r >= SLOTS as u32 {
            return r;
        }
        let matching: Vec<u32> = caps
            .slots()
            .iter()
            .enumerate()
            .filter(|(_, s)| want(s.cap().map(|c| c.kind())))
            .map(|(i, _)| i as u32)
            .collect();
        if matching.is_empty() {
            r
        } else {
            matching[r as usize % matching.len()]
        }
    };
    let kind = |k: ObjectKind| move |c: Option<ObjectKind>| c == Some(k);
    let any = |c: Option<ObjectKind>| c.is_some();
    let empty = |c: Option<ObjectKind>| c.is_none();
    let target =
        |c: Option<ObjectKind>| matches!(c, Some(ObjectKind::IoSpace | ObjectKind::IoUserTable));
    match op {
        Op::Retype {
            untyped,
            object,
            dest,
        } => Op::Retype {
            untyped: pick(untyped, &kind(ObjectKind::Untyped)),
            object: match object {
                NewObject::IoSpace { iommu } => NewObject::IoSpace {
                    iommu: SlotId(pick(iommu.0, &kind(ObjectKind::IommuControl))),
                },
                other => other,
            },
            dest: pick(dest, &empty),
        },
        Op::Copy { src, dest } => Op::Copy {
            src: pick(src, &any),
            dest: pick(dest, &empty),
        },
        Op::Mint {
            src,
            dest,
            rights,
            badge,
        } => Op::Mint {
            src: pick(src, &any),
            dest: pick(dest, &empty),
            rights,
            badge,
        },
        Op::Move { src, dest } => Op::Move {
            src: pick(src, &any),
            dest: pick(dest, &empty),
        },
        Op::Delete { slot } => Op::Delete {
            slot: pick(slot, &any),
        },
        Op::Revoke { slot } => Op::Revoke {
            slot: pick(slot, &any),
        },
        Op::MintDevice { iommu, rid, dest } => Op::MintDevice {
            iommu: pick(iommu, &kind(ObjectKind::IommuControl)),
            rid,
            dest: pick(dest, &empty),
        },
        Op::MintPasid {
            device,
            pasid,
            dest,
        } => Op::MintPasid {
            device: pick(device, &kind(ObjectKind::IoDevice)),
            pasid,
            dest: pick(dest, &empty),
        },
        Op::BindUserTable {
            space,
            root_ipa,
            dest,
        } => Op::BindUserTable {
            space: pick(space, &kind(ObjectKind::IoSpace)),
            root_ipa,
            dest: pick(dest, &empty),
        },
        Op::AttachDevice { device, target: t } => Op::AttachDevice {
            device: pick(device, &kind(ObjectKind::IoDevice)),
            target: pick(t, &target),
        },
        Op::DetachDevice { device } => Op::DetachDevice {
            device: pick(device, &kind(ObjectKind::IoDevice)),
        },
        Op::AttachPasid { pasid, target: t } => Op::AttachPasid {
            pasid: pick(pasid, &kind(ObjectKind::IoPasid)),
            target: pick(t, &target),
        },
        Op::DetachPasid { pasid } => Op::DetachPasid {
            pasid: pick(pasid, &kind(ObjectKind::IoPasid)),
        },
        Op::MapIo {
            frame,
            space,
            ipa,
            rights,
        } => Op::MapIo {
            frame: pick(frame, &kind(ObjectKind::Frame)),
            space: pick(space, &kind(ObjectKind::IoSpace)),
            ipa,
            rights,
        },
        Op::UnmapIo { frame } => Op::UnmapIo {
            frame: pick(frame, &kind(ObjectKind::Frame)),
        },
        Op::BindFaultQueue { target: t, queue } => Op::BindFaultQueue {
            target: pick(t, &|c| {
                matches!(c, Some(ObjectKind::IoSpace | ObjectKind::IoDevice))
            }),
            queue: pick(queue, &kind(ObjectKind::IoFaultQueue)),
        },
        Op::DirtyAccess { space, bitmap } => Op::DirtyAccess {
            space: pick(space, &kind(ObjectKind::IoSpace)),
            bitmap: bitmap.map(|b| pick(b, &kind(ObjectKind::Frame))),
        },
        Op::RespondAccess { queue } => Op::RespondAccess {
            queue: pick(queue, &kind(ObjectKind::IoFaultQueue)),
        },
        Op::BindVSpace { device, root } => Op::BindVSpace {
            device: pick(device, &kind(ObjectKind::IoDevice)),
            root: pick(root, &kind(ObjectKind::PageTable)),
        },
        Op::BindPasidVSpace { pasid, root } => Op::BindPasidVSpace {
            pasid: pick(pasid, &kind(ObjectKind::IoPasid)),
            root: pick(root, &kind(ObjectKind::PageTable)),
        },
        Op::IssueIrq { control, irq, dest } => Op::IssueIrq {
            control: pick(control, &kind(ObjectKind::IrqControl)),
            irq,
            dest: pick(dest, &empty),
        },
    }
}

/// Run one sequence; `Err` describes the first divergence or violation.
fn run_sequence(ops: &[(bool, Op)]) -> Result<(), String> {
    run_sequence_with(Flaws::default(), ops)
}

fn run_sequence_with(flaws: Flaws, ops: &[(bool, Op)]) -> Result<(), String> {
    let (mut caps, mut reference) = boot();
    caps.set_flaws(flaws);
    let mut hw = AbstractIommu::default();
    let mut trace = Vec::new();
    for (i, &(aimed, op)) in ops.iter().enumerate() {
        let op = &if aimed { aim(op, &caps) } else { op };
        let before = caps.clone();
        let mut effects = 0usize;
        let result = op.apply(&mut caps, &mut |e| {
            effects += 1;
            hw.apply(e)
        });
        let expected = reference.apply(op);
        trace.push((*op, result));
        let fail = |why: String| Err(format!("step {}: {why}\n{}", i + 1, format_trace(&trace)));
        if result != expected {
            return fail(format!("result {result:?}, reference says {expected:?}"));
        }
        if result.is_err() && (effects > 0 || caps != before) {
            return fail("an error changed state or emitted effects".into());
        }
        let (mine, theirs) = (visible_of(&caps), reference.visible());
        if mine != theirs {
            return fail(format!(
                "visible state differs:\n real      {mine:?}\n reference {theirs:?}"
            ));
        }
        if let Err((name, why)) = check_all(&caps, &hw) {
            return fail(format!("invariant '{name}' violated: {why}"));
        }
        match result {
            Ok(()) => {
                SUCCEEDED.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => *ERRORS.lock().unwrap().entry(format!("{e:?}")).or_default() += 1,
        }
    }
    if flaws == Flaws::default() {
        OPERATIONS.fetch_add(ops.len(), Ordering::Relaxed);
        SEQUENCES.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn run(name: &str) {
    let mut runner = TestRunner::new(Config {
        cases: SEQUENCES_PER_TEST,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(
        &proptest::collection::vec(
            (prop::bool::weighted(0.85), op()),
            SEQUENCE_LENGTH..=SEQUENCE_LENGTH,
        ),
        |ops| run_sequence(&ops).map_err(TestCaseError::fail),
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    println!(
        "refinement [{name}]: so far {} sequences, {} operations ({} succeeded) agree with the reference and keep the invariants",
        SEQUENCES.load(Ordering::Relaxed),
        OPERATIONS.load(Ordering::Relaxed),
        SUCCEEDED.load(Ordering::Relaxed)
    );
    println!("  errors returned so far: {:?}", ERRORS.lock().unwrap());
}

#[test]
fn refinement_and_invariants_a() {
    run("a");
}

#[test]
fn refinement_and_invariants_b() {
    run("b");
}

#[test]
fn a_seeded_divergence_is_detected() {
    // The harness itself must be able to fail: a reference that disagrees
    // (here: one missing operation) is caught on the first differing step.
    let ops = [(
        false,
        Op::Retype {
            untyped: 0,
            object: NewObject::Frame { size_bits: 12 },
            dest: 4,
        },
    )];
    assert!(run_sequence(&ops).is_ok());
    let (mut caps, reference) = boot();
    ops[0]
        .1
        .apply(&mut caps, &mut caps::DiscardEffects)
        .unwrap();
    assert_ne!(visible_of(&caps), reference.visible());
}

#[test]
fn property_tests_catch_every_seeded_bug() {
    // The same harness against each seeded bug: random sequences must find a
    // divergence from the reference or an invariant violation.
    let mut caught = Vec::new();
    for (bug, flaws) in Flaws::each() {
        let mut runner = TestRunner::new(Config {
            cases: 2_000,
            failure_persistence: None,
            max_shrink_iters: 200,
            ..Config::default()
        });
        let result = runner.run(
            &proptest::collection::vec(
                (prop::bool::weighted(0.85), op()),
                SEQUENCE_LENGTH..=SEQUENCE_LENGTH,
            ),
            |ops| run_sequence_with(flaws, &ops).map_err(TestCaseError::fail),
        );
        match result {
            Err(e) => {
                let text = e.to_string();
                let first: String = text
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(160)
                    .collect();
                println!("property tests caught seeded bug {bug}: {first}");
                caught.push(bug);
            }
            Ok(()) => println!("property tests did NOT catch seeded bug {bug}"),
        }
    }
    assert_eq!(caught.len(), Flaws::each().len(), "caught only {caught:?}");
}

fn wild_slot() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0..SLOTS as u32 + 2, 1 => any::<u32>()]
}

fn wild_op() -> impl Strategy<Value = Op> {
    let object = prop_oneof![
        any::<u8>().prop_map(|size_bits| NewObject::Frame { size_bits }),
        any::<u8>().prop_map(|size_bits| NewObject::Untyped { size_bits }),
        any::<u8>().prop_map(|size_bits| NewObject::CNode { size_bits }),
        wild_slot().prop_map(|s| NewObject::IoSpace { iommu: SlotId(s) }),
        Just(NewObject::IoFaultQueue),
    ];
    let rights = any::<u8>().prop_map(Rights::from_bits_truncate);
    prop_oneof![
        (wild_slot(), object, wild_slot()).prop_map(|(untyped, object, dest)| Op::Retype {
            untyped,
            object,
            dest
        }),
        (wild_slot(), wild_slot(), rights.clone(), any::<u64>()).prop_map(
            |(src, dest, rights, badge)| Op::Mint {
                src,
                dest,
                rights,
                badge
            }
        ),
        (wild_slot(), wild_slot()).prop_map(|(src, dest)| Op::Move { src, dest }),
        wild_slot().prop_map(|slot| Op::Delete { slot }),
        wild_slot().prop_map(|slot| Op::Revoke { slot }),
        (wild_slot(), any::<u32>(), wild_slot()).prop_map(|(iommu, rid, dest)| Op::MintDevice {
            iommu,
            rid,
            dest
        }),
        (wild_slot(), any::<u32>(), wild_slot()).prop_map(|(device, pasid, dest)| Op::MintPasid {
            device,
            pasid,
            dest
        }),
        (wild_slot(), any::<u64>(), wild_slot()).prop_map(|(space, root_ipa, dest)| {
            Op::BindUserTable {
                space,
                root_ipa,
                dest,
            }
        }),
        (wild_slot(), wild_slot()).prop_map(|(device, target)| Op::AttachDevice { device, target }),
        (wild_slot(), wild_slot()).prop_map(|(pasid, target)| Op::AttachPasid { pasid, target }),
        (wild_slot(), wild_slot(), any::<u64>(), rights).prop_map(|(frame, space, ipa, rights)| {
            Op::MapIo {
                frame,
                space,
                ipa,
                rights,
            }
        }),
        wild_slot().prop_map(|frame| Op::UnmapIo { frame }),
        (wild_slot(), prop::option::of(wild_slot()))
            .prop_map(|(space, bitmap)| Op::DirtyAccess { space, bitmap }),
        wild_slot().prop_map(|queue| Op::RespondAccess { queue }),
        (wild_slot(), wild_slot()).prop_map(|(device, root)| Op::BindVSpace { device, root }),
        (wild_slot(), wild_slot()).prop_map(|(pasid, root)| Op::BindPasidVSpace { pasid, root }),
        (wild_slot(), any::<u16>(), wild_slot()).prop_map(|(control, irq, dest)| Op::IssueIrq {
            control,
            irq,
            dest
        }),
    ]
}

#[test]
fn wild_inputs_return_errors_and_never_panic() {
    // DESIGN invariant 6 on the model: arbitrary arguments (any slot id,
    // size, address, PASID, rights) return an error or succeed; nothing
    // panics, an error changes nothing, and invariants 1-5 keep holding.
    let mut runner = TestRunner::new(Config {
        cases: 1_000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &proptest::collection::vec((prop::bool::weighted(0.7), wild_op()), 100),
            |ops| {
                let (mut caps, _) = boot();
                let mut hw = AbstractIommu::default();
                for (aimed, op) in ops {
                    let op = if aimed { aim(op, &caps) } else { op };
                    let before = caps.clone();
                    let mut effects = 0usize;
                    let result = op.apply(&mut caps, &mut |e| {
                        effects += 1;
                        hw.apply(e)
                    });
                    prop_assert!(
                        result.is_ok() || (effects == 0 && caps == before),
                        "{op}: error had effects"
                    );
                    if let Err((name, why)) = check_all(&caps, &hw) {
                        return Err(TestCaseError::fail(format!("{op}: {name}: {why}")));
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}
