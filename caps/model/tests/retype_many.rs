//! `Caps::check_retype` against the retypes it stands for: from random
//! states (an Untyped partly carved, some objects deleted again, few object
//! records, few DIDs, CNode memory), `check_retype(untyped, new, count)`
//! must answer `Ok` exactly when `count` successive retypes into empty slots
//! all succeed, and otherwise the error the first failing one returns. The
//! kernel's `Untyped.Retype` of many objects is all-or-nothing on this.

use caps::{
    ArrayStorage, Badge, Caps, DiscardEffects, Error, Flaws, IommuUnit, NewObject, Rights, SlotId,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Root slots: 0 the Untyped, 1 IommuControl, 2 a read-only copy of the
/// Untyped, 3..12 for the set-up retypes, 12..24 for the checked batch.
const ROOT_SLOTS: u32 = 24;
const SLOTS: usize = 48;
const OBJECTS: usize = 10;
const UNTYPED_BASE: u64 = 0x40000;
const BATCH: u32 = 12;

type Model = Caps<ArrayStorage<SLOTS, OBJECTS>>;

#[derive(Clone, Copy, Debug)]
enum Step {
    Retype(NewObject, u32),
    Delete(u32),
}

fn new_object() -> impl Strategy<Value = NewObject> {
    prop_oneof![
        (4u8..15).prop_map(|size_bits| NewObject::Untyped { size_bits }),
        (1u8..5).prop_map(|size_bits| NewObject::CNode { size_bits }),
        Just(NewObject::Tcb),
        Just(NewObject::Endpoint),
        Just(NewObject::Notification),
        prop_oneof![Just(12u8), Just(13), Just(21)]
            .prop_map(|size_bits| NewObject::Frame { size_bits }),
        Just(NewObject::PageTable),
        Just(NewObject::IoSpace { iommu: SlotId(1) }),
        Just(NewObject::IoSpace { iommu: SlotId(0) }),
        Just(NewObject::IoFaultQueue),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (new_object(), 3u32..BATCH).prop_map(|(new, dest)| Step::Retype(new, dest)),
        1 => (3u32..BATCH).prop_map(Step::Delete),
    ]
}

/// Untyped size, device memory, DIDs, the set-up steps, the checked
/// retype (from slot 0 or the read-only copy), and the flaw switch.
type Case = (u8, bool, u16, Vec<Step>, NewObject, bool, u32, bool);

fn case() -> impl Strategy<Value = Case> {
    (
        10u8..17,
        prop::bool::weighted(0.15),
        1u16..5,
        proptest::collection::vec(step(), 0..12),
        new_object(),
        prop::bool::weighted(0.1),
        1u32..=BATCH,
        prop::bool::weighted(0.2),
    )
}

fn boot(size_bits: u8, device: bool, domain_ids: u16, overlap_flaw: bool) -> Model {
    let mut caps = Caps::new(ArrayStorage::with_cnode_memory(ROOT_SLOTS, UNTYPED_BASE));
    caps.set_flaws(Flaws {
        retype_overlap: overlap_flaw,
        ..Flaws::default()
    });
    caps.boot_untyped(SlotId(0), UNTYPED_BASE, size_bits, device)
        .unwrap();
    caps.boot_iommu_control(
        SlotId(1),
        IommuUnit {
            id: 0,
            pasid_bits: 1,
            domain_ids,
            ipa_bits: 16,
            rid_limit: 4,
            reserved_ipa_base: 0xf000,
            reserved_ipa_size: 0x1000,
        },
    )
    .unwrap();
    caps.mint(SlotId(0), SlotId(2), Rights::READ, Badge(0))
        .unwrap();
    caps
}

/// Runs one case; returns the checked answer and how many retypes
/// succeeded before the first failure, for the statistics.
fn agree(case: Case) -> Result<(Result<(), Error>, u32), TestCaseError> {
    let (size_bits, device, domain_ids, steps, new, read_only, count, flaw) = case;
    let mut caps = boot(size_bits, device, domain_ids, flaw);
    for step in steps {
        let _ = match step {
            Step::Retype(new, dest) => caps
                .retype(SlotId(0), new, SlotId(dest), &mut DiscardEffects)
                .map(|_| ()),
            Step::Delete(slot) => caps.delete(SlotId(slot), &mut DiscardEffects),
        };
    }
    let untyped = SlotId(if read_only { 2 } else { 0 });
    let before = caps.clone();
    let checked = caps.check_retype(untyped, new, count as usize);
    prop_assert_eq!(&caps, &before, "check_retype changed the state");
    let mut done = caps.clone();
    let mut first_error = Ok(());
    let mut made_before = 0;
    for i in 0..count {
        let made = done.retype(untyped, new, SlotId(BATCH + i), &mut DiscardEffects);
        if let Err(e) = made {
            first_error = Err(e);
            break;
        }
        made_before += 1;
    }
    prop_assert_eq!(
        checked,
        first_error,
        "check_retype({:?}, {:?}, {}) disagrees with the retypes one by one",
        untyped,
        new,
        count
    );
    Ok((checked, made_before))
}

#[test]
fn check_retype_agrees_with_retypes_one_by_one() {
    let mut runner = TestRunner::new(Config {
        cases: 20_000,
        failure_persistence: None,
        ..Config::default()
    });
    let answers = std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new());
    let result = runner.run(&case(), |case| {
        let (answer, made_before) = agree(case)?;
        let mut answers = answers.lock().unwrap();
        *answers.entry(format!("{answer:?}")).or_default() += 1;
        if answer.is_err() && made_before > 0 {
            *answers.entry(format!("{answer:?} part-way")).or_default() += 1;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let answers = answers.into_inner().unwrap();
    println!("check_retype answers over 20,000 cases: {answers:?}");
    // The cases must reach every error, and every way a batch can fail
    // part-way (after some retypes of it would have succeeded).
    for needed in [
        "Err(UntypedExhausted) part-way",
        "Err(ObjectTableFull) part-way",
        "Err(NoDomainIds) part-way",
        "Err(NoSlotMemory) part-way",
        "Ok(())",
        "Err(UntypedExhausted)",
        "Err(ObjectTableFull)",
        "Err(NoDomainIds)",
        "Err(NoSlotMemory)",
        "Err(InsufficientRights)",
        "Err(DeviceMemory)",
        "Err(InvalidSize)",
    ] {
        assert!(answers.contains_key(needed), "no case answered {needed}");
    }
}

#[test]
fn five_frames_into_room_for_three_is_refused_whole() {
    // A 16 KiB Untyped holding one Frame has room for 3 more 4 KiB Frames.
    let mut caps: Model = Caps::new(ArrayStorage::new());
    caps.boot_untyped(SlotId(0), 0x10000, 14, false).unwrap();
    let frame = NewObject::Frame { size_bits: 12 };
    caps.retype(SlotId(0), frame, SlotId(1), &mut DiscardEffects)
        .unwrap();
    assert_eq!(
        caps.check_retype(SlotId(0), frame, 5),
        Err(Error::UntypedExhausted)
    );
    assert_eq!(
        caps.check_retype(SlotId(0), frame, 4),
        Err(Error::UntypedExhausted)
    );
    assert_eq!(caps.check_retype(SlotId(0), frame, 3), Ok(()));
    assert_eq!(caps.check_retype(SlotId(0), frame, 0), Ok(()));
    // With the Frame deleted the watermark starts again from 0: room for 4.
    caps.delete(SlotId(1), &mut DiscardEffects).unwrap();
    assert_eq!(caps.check_retype(SlotId(0), frame, 4), Ok(()));
    assert_eq!(
        caps.check_retype(SlotId(0), frame, 5),
        Err(Error::UntypedExhausted)
    );
}
