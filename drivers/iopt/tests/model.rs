//! Property test: random map (runs and scattered pages), unmap and flush
//! sequences against a `BTreeMap` model of page -> (IPA, rights). After
//! every step the table's mappings equal the model's, and the table frames
//! in use are exactly those the model implies (the root, plus one table
//! per distinct prefix of the mapped pages at each level), so neither a
//! leak nor a premature free goes unnoticed.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Recorder, WINDOW_BASE, frames};
use iopt::{
    BitmapPool, Config, Error, Format, IoPageTable, PAGE_SIZE, Rights, SliceMemory, TableFrame,
    Translation,
};
use proptest::prelude::*;

/// Frames available for tables: small enough that some sequences run out.
const POOL_FRAMES: usize = 16;

/// Page numbers (IOVA / 4 KiB) where the generated ranges start: around a
/// 2 MiB, a 1 GiB and a 512 GiB boundary, so ranges cross tables at every
/// level.
const CLUSTERS: [u64; 4] = [
    0,
    (1 << 18) - 600,
    (1 << 27) - 600,
    5 << 27 | 3 << 18 | 7 << 9,
];

#[derive(Clone, Debug)]
enum Op {
    /// `map` of a run of IPAs, or (`scatter`) `map_pages` of IPAs three
    /// pages apart.
    Map {
        page: u64,
        count: u64,
        ipa_page: u64,
        write: bool,
        scatter: bool,
    },
    Unmap {
        page: u64,
        count: u64,
    },
    /// Unmap starting at a mapped page (the `index`-th in the model, any
    /// page if none), so that most of these succeed.
    UnmapMapped {
        index: prop::sample::Index,
        count: u64,
    },
    Flush,
}

fn page() -> impl Strategy<Value = u64> {
    (0..CLUSTERS.len(), 0u64..1200).prop_map(|(cluster, offset)| CLUSTERS[cluster] + offset)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (page(), 1u64..40, 0u64..100_000, any::<bool>(), any::<bool>()).prop_map(
            |(page, count, ipa_page, write, scatter)| Op::Map { page, count, ipa_page, write, scatter }
        ),
        1 => (page(), 1u64..40).prop_map(|(page, count)| Op::Unmap { page, count }),
        3 => (any::<prop::sample::Index>(), 1u64..40)
            .prop_map(|(index, count)| Op::UnmapMapped { index, count }),
        1 => Just(Op::Flush),
    ]
}

type Model = BTreeMap<u64, (u64, Rights)>;

/// Table frames a tree holding exactly `pages` needs: the root, then one
/// table per distinct page-number prefix at levels 1, 2 and 3.
fn implied_tables<'a>(pages: impl Iterator<Item = &'a u64> + Clone) -> usize {
    let distinct = |shift: u32| {
        pages
            .clone()
            .map(|page| page >> shift)
            .collect::<BTreeSet<_>>()
            .len()
    };
    1 + distinct(27) + distinct(18) + distinct(9)
}

fn run(format: Format, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut storage = frames(POOL_FRAMES);
    let memory = SliceMemory::new(WINDOW_BASE, &mut storage).unwrap();
    let pool = BitmapPool::<1>::new(WINDOW_BASE, POOL_FRAMES).unwrap();
    let mut table = IoPageTable::new(Config::new(format), pool, memory).unwrap();
    let mut model = Model::new();
    let mut recorder = Recorder::default();
    let mut tracked = Frames::default();

    for op in ops {
        let op = match op {
            Op::UnmapMapped { index, count } => {
                let page = match model.len() {
                    0 => 0,
                    len => *model.keys().nth(index.index(len)).unwrap(),
                };
                // Stop at the end of the run of mapped pages, mostly.
                let run = (page..).take_while(|page| model.contains_key(page)).count() as u64;
                let count = if count % 8 == 0 {
                    count
                } else {
                    count.min(run.max(1))
                };
                Op::Unmap { page, count }
            }
            other => other,
        };
        match op {
            Op::Map {
                page,
                count,
                ipa_page,
                write,
                scatter,
            } => {
                let rights = if write {
                    Rights::READ_WRITE
                } else {
                    Rights::READ
                };
                let stride = if scatter { 3 } else { 1 };
                let ipas: Vec<u64> = (0..count)
                    .map(|k| (ipa_page + stride * k) * PAGE_SIZE)
                    .collect();
                let result = if scatter {
                    table.map_pages(page * PAGE_SIZE, &ipas, rights)
                } else {
                    table.map(
                        page * PAGE_SIZE,
                        ipa_page * PAGE_SIZE,
                        count * PAGE_SIZE,
                        rights,
                    )
                };
                let range = page..page + count;
                if let Some((&mapped, _)) = model.range(range.clone()).next() {
                    prop_assert_eq!(
                        result,
                        Err(Error::AlreadyMapped {
                            iova: mapped * PAGE_SIZE
                        })
                    );
                    continue;
                }
                let after =
                    implied_tables(model.keys().chain(range.clone().collect::<Vec<_>>().iter()));
                let needed = after - table.stats().tables_live;
                let free = POOL_FRAMES - table.pool().in_use();
                if needed > free {
                    prop_assert!(
                        matches!(result, Err(Error::OutOfFrames { .. })),
                        "expected OutOfFrames, got {:?}",
                        result
                    );
                } else {
                    prop_assert_eq!(result, Ok(()));
                    for (page, &ipa) in range.zip(&ipas) {
                        model.insert(page, (ipa, rights));
                    }
                }
            }
            Op::Unmap { page, count } => {
                let result = table.unmap(page * PAGE_SIZE, count * PAGE_SIZE);
                match (page..page + count).find(|page| !model.contains_key(page)) {
                    Some(hole) => prop_assert_eq!(
                        result,
                        Err(Error::NotMapped {
                            iova: hole * PAGE_SIZE
                        })
                    ),
                    None => {
                        prop_assert_eq!(result, Ok(()));
                        for page in page..page + count {
                            model.remove(&page);
                        }
                    }
                }
            }
            Op::UnmapMapped { .. } => unreachable!("turned into Unmap above"),
            Op::Flush => {
                prop_assert!(table.flush(&mut recorder).is_ok());
                prop_assert_eq!(table.stats().tables_retired, 0);
                prop_assert!(table.pending_invalidation().is_empty());
                for ipa in std::mem::take(&mut tracked.retired) {
                    let frame = TableFrame::new(ipa).unwrap();
                    prop_assert!(!table.pool().is_allocated(frame), "not released");
                }
            }
        }
        check(&table, &model, &mut tracked)?;
    }
    Ok(())
}

/// What the test remembers between steps about the table frames.
#[derive(Default)]
struct Frames {
    /// IPAs of the frames linked in the tree after the last step.
    linked: BTreeSet<u64>,
    /// IPAs of the frames unlinked since the last flush.
    retired: BTreeSet<u64>,
}

fn check(
    table: &IoPageTable<BitmapPool<1>, SliceMemory<'_>>,
    model: &Model,
    frames: &mut Frames,
) -> Result<(), TestCaseError> {
    let mut mapped = Model::new();
    table
        .for_each_mapping(|iova, Translation { ipa, rights }| {
            mapped.insert(iova / PAGE_SIZE, (ipa, rights));
        })
        .unwrap();
    prop_assert_eq!(&mapped, model);
    for (&page, &(ipa, rights)) in model.iter().take(64) {
        prop_assert_eq!(
            table.translate(page * PAGE_SIZE + 0x123).unwrap(),
            Some(Translation {
                ipa: ipa + 0x123,
                rights
            })
        );
    }

    // Exactly the tables the model implies are linked ...
    let stats = table.stats();
    let implied = implied_tables(model.keys());
    prop_assert_eq!(stats.tables_live, implied);
    let mut linked = BTreeSet::new();
    table
        .for_each_table(|_, frame| {
            linked.insert(frame.ipa());
        })
        .unwrap();
    prop_assert_eq!(linked.len(), implied);
    prop_assert!(linked.contains(&table.root().ipa()));

    // ... a table unlinked since the last flush is neither linked again nor
    // back in the pool (the pool's allocated frames that are not linked are
    // the retired ones, including tables a rolled-back map added and pruned
    // within one step) ...
    let allocated: BTreeSet<u64> = (0..POOL_FRAMES as u64)
        .map(|slot| WINDOW_BASE + slot * PAGE_SIZE)
        .filter(|&ipa| table.pool().is_allocated(TableFrame::new(ipa).unwrap()))
        .collect();
    let retired: BTreeSet<u64> = allocated.difference(&linked).copied().collect();
    prop_assert!(
        linked.is_disjoint(&frames.retired),
        "a retired frame was reused"
    );
    prop_assert!(
        retired.is_superset(&frames.retired),
        "released before a flush"
    );
    prop_assert!(
        frames
            .linked
            .difference(&linked)
            .all(|ipa| retired.contains(ipa)),
        "unlinked and released in the same step"
    );
    prop_assert_eq!(retired.len(), stats.tables_retired);
    frames.retired = retired;
    frames.linked = linked;

    // ... and nothing else is taken from the pool.
    prop_assert_eq!(
        table.pool().in_use(),
        stats.tables_live + stats.tables_retired
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn vtd_first_stage_agrees_with_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(Format::VtdFirstStage, ops)?;
    }

    #[test]
    fn arm_stage1_agrees_with_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(Format::ArmStage1, ops)?;
    }
}
