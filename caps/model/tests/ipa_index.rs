//! The IPA index against a brute-force oracle: random sequences of
//! `IoSpace.Map` / `Unmap` / delete / move of 4 KiB and 2 MiB Frame copies in
//! two IoSpaces, at IPAs crowded into a few 2 MiB blocks. Each map's answer
//! must be what an overlap check against every live mapping gives, and the
//! mapping-index invariant (which also compares the index's answer with the
//! walk of the mapping list) must hold after every step. Seeded bugs in the
//! index are caught.

use caps::checker::invariants::mapping_index;
use caps::checker::model::model_unit;
use caps::{
    ArrayStorage, Caps, DiscardEffects, Error, Flaws, IommuUnit, NewObject, Rights, SlotId, Storage,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const SLOTS: usize = 64;
type Model = Caps<ArrayStorage<SLOTS, 16>>;

/// 4 KiB Frames (slots 4..8) and 2 MiB Frames (8..10), each with two more
/// copies (so a Frame may be mapped up to three times).
const SMALL: [u32; 4] = [4, 5, 6, 7];
const LARGE: [u32; 2] = [8, 9];
/// The two IoSpaces.
const SPACES: [u32; 2] = [2, 3];
/// Where the copies of Frame `i` (of the six) start.
const COPIES: u32 = 16;

fn unit() -> IommuUnit {
    IommuUnit {
        ipa_bits: 32,
        reserved_ipa_base: 0,
        reserved_ipa_size: 0,
        ..model_unit()
    }
}

fn boot() -> Model {
    let mut caps: Model = Caps::new(ArrayStorage::new());
    let s = SlotId;
    caps.boot_untyped(s(0), 0x1000_0000, 24, false).unwrap();
    caps.boot_iommu_control(s(1), unit()).unwrap();
    let sink = &mut DiscardEffects;
    for space in SPACES {
        caps.retype(s(0), NewObject::IoSpace { iommu: s(1) }, s(space), sink)
            .unwrap();
    }
    for frame in SMALL {
        caps.retype(s(0), NewObject::Frame { size_bits: 12 }, s(frame), sink)
            .unwrap();
    }
    for frame in LARGE {
        caps.retype(s(0), NewObject::Frame { size_bits: 21 }, s(frame), sink)
            .unwrap();
    }
    for (i, frame) in SMALL.iter().chain(&LARGE).enumerate() {
        for copy in 0..2 {
            caps.copy(s(*frame), s(COPIES + 2 * i as u32 + copy))
                .unwrap();
        }
    }
    caps
}

/// Every slot that holds a Frame capability (originals and copies).
fn frame_slots() -> Vec<u32> {
    SMALL
        .iter()
        .chain(&LARGE)
        .copied()
        .chain(COPIES..COPIES + 12)
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Map the Frame capability `frame` (an index into `frame_slots`) in
    /// space `space` at page `page` of block `block`.
    Map {
        frame: usize,
        space: usize,
        block: u64,
        page: u64,
    },
    Unmap {
        frame: usize,
    },
    /// Delete the capability, then copy it back from its Frame's original
    /// (a delete of a mapped copy unmaps it).
    Delete {
        frame: usize,
    },
    /// Move the capability to a free slot (the index checked there) and
    /// back.
    Move {
        frame: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let frame = 0..frame_slots().len();
    prop_oneof![
        6 => (frame.clone(), 0..2usize, 0..3u64, prop_oneof![Just(0u64), Just(1), Just(2), Just(511)])
            .prop_map(|(frame, space, block, page)| Op::Map { frame, space, block, page }),
        3 => frame.clone().prop_map(|frame| Op::Unmap { frame }),
        1 => frame.clone().prop_map(|frame| Op::Delete { frame }),
        1 => frame.prop_map(|frame| Op::Move { frame }),
    ]
}

/// The original Frame capability `slot` was copied from.
fn original(slot: u32) -> u32 {
    if slot < COPIES {
        slot
    } else {
        let i = ((slot - COPIES) / 2) as usize;
        *SMALL.iter().chain(&LARGE).nth(i).unwrap()
    }
}

fn run(flaws: Flaws, ops: &[Op]) -> Result<(), String> {
    let mut caps = boot();
    caps.set_flaws(flaws);
    let frames = frame_slots();
    let sink = &mut DiscardEffects;
    // The oracle: every live mapping (space slot, ipa, size bits, holder).
    let mut live: Vec<(u32, u64, u8, u32)> = Vec::new();
    for (step, &op) in ops.iter().enumerate() {
        match op {
            Op::Map {
                frame,
                space,
                block,
                page,
            } => {
                let slot = frames[frame];
                let bits = if LARGE.contains(&original(slot)) {
                    21
                } else {
                    12
                };
                let ipa = (block << 21) + if bits == 12 { page << 12 } else { 0 };
                let space = SPACES[space];
                let end = ipa + (1 << bits);
                let expected = if live.iter().any(|m| m.3 == slot) {
                    Err(Error::AlreadyMapped)
                } else if live
                    .iter()
                    .any(|&(s, i, b, _)| s == space && i < end && ipa < i + (1 << b))
                {
                    Err(Error::AddressInUse)
                } else {
                    Ok(())
                };
                let got = caps.map_io(SlotId(slot), SlotId(space), ipa, Rights::READ, sink);
                if got != expected {
                    return Err(format!(
                        "step {step}: {op:?} (slot {slot}, {ipa:#x}) answered {got:?}, the oracle {expected:?}; live {live:x?}"
                    ));
                }
                if got.is_ok() {
                    live.push((space, ipa, bits, slot));
                }
            }
            Op::Unmap { frame } => {
                let slot = frames[frame];
                let got = caps.unmap_io(SlotId(slot), sink);
                let was = live.iter().position(|m| m.3 == slot);
                if got.is_ok() != was.is_some() {
                    return Err(format!("step {step}: {op:?} answered {got:?}"));
                }
                if let Some(i) = was {
                    live.remove(i);
                }
            }
            Op::Delete { frame } => {
                let slot = frames[frame];
                if slot == original(slot) {
                    continue;
                }
                caps.delete(SlotId(slot), sink)
                    .map_err(|e| format!("{e:?}"))?;
                live.retain(|m| m.3 != slot);
                caps.copy(SlotId(original(slot)), SlotId(slot))
                    .map_err(|e| format!("step {step}: copy back {e:?}"))?;
            }
            Op::Move { frame } => {
                let slot = frames[frame];
                let spare = SLOTS as u32 - 1;
                caps.move_cap(SlotId(slot), SlotId(spare))
                    .map_err(|e| format!("step {step}: move {e:?}"))?;
                // The index must name the slot the mapping is held in now.
                mapping_index(&caps)
                    .map_err(|e| format!("step {step}: {op:?}, moved away: {e}"))?;
                caps.move_cap(SlotId(spare), SlotId(slot))
                    .map_err(|e| format!("step {step}: move back {e:?}"))?;
            }
        }
        mapping_index(&caps).map_err(|e| format!("step {step}: {op:?}: {e}"))?;
    }
    Ok(())
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: 1_000,
        failure_persistence: None,
        max_shrink_iters: 500,
        ..Config::default()
    })
}

fn sequences() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..60)
}

#[test]
fn ipa_index_answers_as_the_oracle() {
    runner()
        .run(&sequences(), |ops| {
            run(Flaws::default(), &ops).map_err(TestCaseError::fail)
        })
        .unwrap();
}

#[test]
fn seeded_ipa_index_bugs_are_caught() {
    let seeded = [
        Flaws {
            index_ignores_blocks: true,
            ..Flaws::default()
        },
        Flaws {
            stale_ipa_index: true,
            ..Flaws::default()
        },
        Flaws {
            move_keeps_old_slot: true,
            ..Flaws::default()
        },
    ];
    for flaws in seeded {
        let result = runner().run(&sequences(), |ops| {
            run(flaws, &ops).map_err(TestCaseError::fail)
        });
        let caught = result.expect_err("a seeded IPA index bug went unnoticed");
        println!("{flaws:?} caught: {caught}");
    }
}

/// `Caps::reset` empties a used capability system in place (capabilities,
/// object records, IO mappings and their IPA index entries) into exactly
/// the state a fresh one starts in, whatever root slots and CNode memory
/// it is given.
#[test]
fn reset_gives_the_fresh_state() {
    let mut caps = boot();
    let sink = &mut DiscardEffects;
    caps.map_io(
        SlotId(SMALL[0]),
        SlotId(SPACES[0]),
        0x4000,
        Rights::READ,
        sink,
    )
    .unwrap();
    caps.map_io(
        SlotId(LARGE[0]),
        SlotId(SPACES[1]),
        0x20_0000,
        Rights::READ,
        sink,
    )
    .unwrap();
    assert!(
        caps.storage()
            .ipa_index()
            .iter()
            .any(|e| *e != Default::default())
    );
    let mut fresh = caps.clone();
    fresh.reset(SLOTS as u32, 0);
    assert_eq!(fresh, Caps::new(ArrayStorage::new()));
    caps.reset(8, 0x8000);
    assert_eq!(caps, Caps::new(ArrayStorage::with_cnode_memory(8, 0x8000)));
    assert!(
        caps.storage()
            .ipa_index()
            .iter()
            .all(|e| *e == Default::default())
    );
}
