//! Behaviour of `IoPageTable`: round trips, batching, deferred frees, every
//! error, rollback.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{Call, Recorder, Refused, WINDOW_BASE, frames, table};
use iopt::{
    BitmapPool, Config, ENTRIES_PER_TABLE, Entry, Error, FlushError, Format, FrameNotBacked,
    FramePool, InvalidationRange, IoPageTable, PAGE_SIZE, Rights, SliceMemory, TableFrame,
    TableMemory, Translation,
};

const FORMATS: [Format; 2] = [Format::VtdFirstStage, Format::ArmStage1];
const PAGE: u64 = PAGE_SIZE;

fn translation(ipa: u64, rights: Rights) -> Option<Translation> {
    Some(Translation { ipa, rights })
}

#[test]
fn map_translate_unmap_round_trip() {
    for format in FORMATS {
        let mut storage = frames(16);
        let mut table = table(format, &mut storage);
        table
            .map(0x10_000, 0x4000_0000, 3 * PAGE, Rights::READ_WRITE)
            .unwrap();
        table
            .map(0x7f_0000_0000, 0x5000_0000, 2 * PAGE, Rights::READ)
            .unwrap();
        assert_eq!(
            table.translate(0x10_000).unwrap(),
            translation(0x4000_0000, Rights::READ_WRITE)
        );
        assert_eq!(
            table.translate(0x12_abc).unwrap(),
            translation(0x4000_2abc, Rights::READ_WRITE),
            "{format:?}: the offset in the page is kept"
        );
        assert_eq!(
            table.translate(0x7f_0000_1fff).unwrap(),
            translation(0x5000_1fff, Rights::READ)
        );
        assert_eq!(table.translate(0x13_000).unwrap(), None);
        assert_eq!(table.translate(0xf_f000).unwrap(), None);

        table.unmap(0x10_000, 3 * PAGE).unwrap();
        assert_eq!(table.translate(0x10_000).unwrap(), None);
        assert_eq!(
            table.translate(0x7f_0000_0000).unwrap(),
            translation(0x5000_0000, Rights::READ)
        );
        table.unmap(0x7f_0000_0000, 2 * PAGE).unwrap();
        table.flush(&mut Recorder::default()).unwrap();
        let stats = table.stats();
        assert_eq!(stats.pages_mapped, 5);
        assert_eq!(stats.pages_unmapped, 5);
        assert_eq!(stats.tables_live, 1, "only the root is left");
        assert_eq!(stats.tables_retired, 0);
        assert_eq!(table.pool().in_use(), 1);
        assert_eq!(stats.tables_allocated, stats.tables_released + 1);
    }
}

#[test]
fn a_range_across_1_gib_and_2_mib_boundaries_uses_the_right_tables() {
    for format in FORMATS {
        let mut storage = frames(16);
        let mut table = table(format, &mut storage);
        let iova = (1 << 30) - 3 * PAGE;
        table
            .map(iova, 0x4000_0000, 6 * PAGE, Rights::READ)
            .unwrap();
        // Root, one level-1 table, two level-2 and two level-3 tables.
        assert_eq!(table.stats().tables_live, 6);
        let mut levels = Vec::new();
        table.for_each_table(|level, _| levels.push(level)).unwrap();
        assert_eq!(levels, [0, 1, 2, 3, 2, 3]);
        let mut pages = Vec::new();
        table
            .for_each_mapping(|page, found| pages.push((page, found.ipa)))
            .unwrap();
        let expected: Vec<_> = (0..6)
            .map(|i| (iova + i * PAGE, 0x4000_0000 + i * PAGE))
            .collect();
        assert_eq!(pages, expected);
    }
}

#[test]
fn the_top_of_the_input_space_maps_on_arm_but_not_on_vtd() {
    let mut storage = frames(8);
    let mut arm = table(Format::ArmStage1, &mut storage);
    let top = (1 << 48) - PAGE;
    arm.map(top, 0x4000_0000, PAGE, Rights::READ).unwrap();
    assert_eq!(
        arm.translate(top + 8).unwrap(),
        translation(0x4000_0008, Rights::READ)
    );

    let mut storage = frames(8);
    let mut vtd = table(Format::VtdFirstStage, &mut storage);
    assert_eq!(
        vtd.map(top, 0x4000_0000, PAGE, Rights::READ),
        Err(Error::IovaOutOfRange {
            iova: top,
            len: PAGE
        })
    );
    let vtd_top = (1 << 47) - PAGE;
    vtd.map(vtd_top, 0x4000_0000, PAGE, Rights::READ).unwrap();
    assert_eq!(
        vtd.translate(1 << 47),
        Err(Error::IovaOutOfRange {
            iova: 1 << 47,
            len: 0
        })
    );
}

// ---- invalidation batching ----

#[test]
fn sixty_four_adjacent_single_page_maps_make_one_invalidation() {
    for format in FORMATS {
        let mut storage = frames(16);
        let mut table = table(format, &mut storage);
        let base = 0x20_0000;
        for page in 0..64 {
            table
                .map(
                    base + page * PAGE,
                    0x4000_0000 + page * PAGE,
                    PAGE,
                    Rights::READ_WRITE,
                )
                .unwrap();
        }
        let mut recorder = Recorder::default();
        table.flush(&mut recorder).unwrap();
        assert_eq!(
            recorder.calls,
            [Call::Range(InvalidationRange {
                iova: base,
                len: 64 * PAGE,
                leaf_only: false, // the first map linked new tables
            })]
        );
        assert_eq!(table.stats().invalidation_calls, 1);
        assert_eq!(table.stats().pages_mapped, 64);

        // Unmapping them one by one is one range again; the last unmap
        // retires the tables, so walk caches must go too.
        for page in 0..64 {
            table.unmap(base + page * PAGE, PAGE).unwrap();
        }
        let mut recorder = Recorder::default();
        table.flush(&mut recorder).unwrap();
        assert_eq!(
            recorder.calls,
            [Call::Range(InvalidationRange {
                iova: base,
                len: 64 * PAGE,
                leaf_only: false,
            })]
        );
        assert_eq!(table.stats().invalidation_calls, 2);
    }
}

#[test]
fn a_map_into_existing_tables_is_leaf_only() {
    let mut storage = frames(16);
    let mut table = table(Format::ArmStage1, &mut storage);
    table.map(0, 0x4000_0000, PAGE, Rights::READ).unwrap();
    table.flush(&mut Recorder::default()).unwrap();
    table
        .map(PAGE, 0x4000_1000, 63 * PAGE, Rights::READ)
        .unwrap();
    assert_eq!(
        table.pending_invalidation().ranges(),
        [InvalidationRange {
            iova: PAGE,
            len: 63 * PAGE,
            leaf_only: true
        }]
    );
    // Unmapping some pages of a table that stays non-empty: leaf only.
    table.flush(&mut Recorder::default()).unwrap();
    table.unmap(PAGE, PAGE).unwrap();
    assert_eq!(
        table.pending_invalidation().ranges(),
        [InvalidationRange {
            iova: PAGE,
            len: PAGE,
            leaf_only: true
        }]
    );
}

#[test]
fn too_many_separate_ranges_become_one_invalidate_all() {
    let mut storage = frames(16);
    let mut table = table(Format::VtdFirstStage, &mut storage);
    for index in 0..=iopt::BATCH_CAPACITY as u64 {
        table
            .map(
                index * 2 * PAGE,
                0x4000_0000 + index * PAGE,
                PAGE,
                Rights::READ,
            )
            .unwrap();
    }
    assert!(table.pending_invalidation().is_overflowed());
    let mut recorder = Recorder::default();
    table.flush(&mut recorder).unwrap();
    assert_eq!(recorder.calls, [Call::All]);
    assert_eq!(table.stats().invalidation_calls, 1);
    assert!(table.pending_invalidation().is_empty());
}

#[test]
fn a_refused_invalidation_keeps_the_batch_and_the_retired_frames() {
    let mut storage = frames(16);
    let mut table = table(Format::ArmStage1, &mut storage);
    table.map(0, 0x4000_0000, PAGE, Rights::READ).unwrap();
    table
        .map(0x40_0000, 0x4000_1000, PAGE, Rights::READ)
        .unwrap();
    table.flush(&mut Recorder::default()).unwrap();
    table.unmap(0, PAGE).unwrap();
    table.unmap(0x40_0000, PAGE).unwrap();
    let in_use = table.pool().in_use();
    let mut recorder = Recorder {
        refuse: 1,
        ..Recorder::default()
    };
    assert_eq!(
        table.flush(&mut recorder),
        Err(FlushError::Invalidator(Refused))
    );
    assert_eq!(table.pool().in_use(), in_use, "nothing released");
    assert_eq!(table.pending_invalidation().pending_calls(), 2);
    table.flush(&mut recorder).unwrap();
    assert_eq!(recorder.calls.len(), 2);
    assert!(table.pending_invalidation().is_empty());
    assert_eq!(table.pool().in_use(), 1);
    assert_eq!(table.stats().invalidation_calls, 2 + 2);
}

// ---- deferred frees ----

#[test]
fn retired_tables_read_as_not_present_and_are_not_reused_before_flush() {
    for format in FORMATS {
        let mut storage = frames(16);
        let mut table = table(format, &mut storage);
        table.map(0, 0x4000_0000, PAGE, Rights::READ).unwrap();
        let mut first_tables = Vec::new();
        table
            .for_each_table(|_, frame| first_tables.push(frame))
            .unwrap();
        table.unmap(0, PAGE).unwrap();
        assert_eq!(table.stats().tables_retired, 3);
        assert_eq!(table.stats().tables_live, 1);
        assert_eq!(table.pool().in_use(), 4, "retired frames stay allocated");
        for frame in &first_tables[1..] {
            let words = table.memory().frame(*frame).unwrap();
            for level in 0..4 {
                for word in words {
                    assert_eq!(format.decode(level, *word), Entry::Absent);
                }
            }
        }

        // A new map needing three tables must not get the retired ones.
        table.map(1 << 39, 0x4000_0000, PAGE, Rights::READ).unwrap();
        let mut second_tables = Vec::new();
        table
            .for_each_table(|_, frame| second_tables.push(frame))
            .unwrap();
        for frame in &second_tables[1..] {
            assert!(
                !first_tables.contains(frame),
                "{format:?}: {frame:?} reused"
            );
        }

        table.flush(&mut Recorder::default()).unwrap();
        assert_eq!(table.stats().tables_retired, 0);
        assert_eq!(table.pool().in_use(), 4);
        for frame in &first_tables[1..] {
            assert!(!table.pool().is_allocated(*frame));
            assert!(
                table
                    .memory()
                    .frame(*frame)
                    .unwrap()
                    .iter()
                    .all(|w| *w == 0)
            );
        }
    }
}

/// A map in the 2 MiB region of the last map skips the walk (the table
/// remembers that region's level-3 table); once an unmap has unlinked that
/// table, the next map there walks again and links a new one.
#[test]
fn a_map_after_its_leaf_table_was_pruned_walks_again() {
    for format in FORMATS {
        let mut storage = frames(16);
        let mut table = table(format, &mut storage);
        table.map(0, 0x4000_0000, PAGE, Rights::READ).unwrap();
        // Same region: written into the remembered table.
        table.map(PAGE, 0x4000_1000, PAGE, Rights::READ).unwrap();
        assert_eq!(
            table.translate(PAGE).unwrap(),
            translation(0x4000_1000, Rights::READ)
        );
        assert_eq!(
            table.map(PAGE, 0x4000_1000, PAGE, Rights::READ),
            Err(Error::AlreadyMapped { iova: PAGE }),
            "{format:?}: the remembered table is checked too"
        );
        // Empty the region: its tables are unlinked, then released.
        table.unmap(0, 2 * PAGE).unwrap();
        table.flush(&mut Recorder::default()).unwrap();
        assert_eq!(table.stats().tables_live, 1);
        // The region maps anew, through tables linked again.
        table
            .map(2 * PAGE, 0x4000_2000, PAGE, Rights::READ)
            .unwrap();
        assert_eq!(
            table.translate(2 * PAGE).unwrap(),
            translation(0x4000_2000, Rights::READ),
            "{format:?}: mapped through a linked table"
        );
        assert_eq!(table.stats().tables_live, 4);
    }
}

// ---- errors ----

#[test]
fn bad_arguments_are_refused_with_the_offending_value() {
    for format in FORMATS {
        let mut storage = frames(8);
        let mut table = table(format, &mut storage);
        let rw = Rights::READ_WRITE;
        assert_eq!(table.map(0, 0, 0, rw), Err(Error::ZeroLength));
        assert_eq!(table.unmap(0, 0), Err(Error::ZeroLength));
        assert_eq!(
            table.map(0x1800, 0, PAGE, rw),
            Err(Error::MisalignedIova { iova: 0x1800 })
        );
        assert_eq!(
            table.map(0, 0x10, PAGE, rw),
            Err(Error::MisalignedIpa { ipa: 0x10 })
        );
        assert_eq!(
            table.map(0, 0, 0x1001, rw),
            Err(Error::MisalignedLength { len: 0x1001 })
        );
        assert_eq!(
            table.map(u64::MAX - 0xfff, 0, PAGE, rw),
            Err(Error::IovaOutOfRange {
                iova: u64::MAX - 0xfff,
                len: PAGE
            })
        );
        assert_eq!(
            table.map(0, 1 << 48, PAGE, rw),
            Err(Error::IpaOutOfRange {
                ipa: 1 << 48,
                len: PAGE
            })
        );
        assert_eq!(
            table.map(0, (1 << 48) - PAGE, 2 * PAGE, rw),
            Err(Error::IpaOutOfRange {
                ipa: (1 << 48) - PAGE,
                len: 2 * PAGE
            })
        );
        for rights in [Rights::WRITE, Rights::empty()] {
            assert_eq!(
                table.map(0, 0, PAGE, rights),
                Err(Error::UnsupportedRights { rights })
            );
        }
        assert_eq!(table.unmap(0, PAGE), Err(Error::NotMapped { iova: 0 }));
        assert_eq!(table.stats().tables_live, 1, "{format:?}: nothing changed");
        assert!(table.pending_invalidation().is_empty());
    }
}

#[test]
fn overlapping_a_mapping_is_refused_and_changes_nothing() {
    for format in FORMATS {
        let mut storage = frames(8);
        let mut table = table(format, &mut storage);
        table
            .map(5 * PAGE, 0x4000_0000, PAGE, Rights::READ)
            .unwrap();
        table.flush(&mut Recorder::default()).unwrap();
        assert_eq!(
            table.map(2 * PAGE, 0x5000_0000, 8 * PAGE, Rights::READ_WRITE),
            Err(Error::AlreadyMapped { iova: 5 * PAGE })
        );
        for page in 2..10 {
            let expected = (page == 5).then_some(Translation {
                ipa: 0x4000_0000,
                rights: Rights::READ,
            });
            assert_eq!(table.translate(page * PAGE).unwrap(), expected);
        }
        assert!(table.pending_invalidation().is_empty());
    }
}

#[test]
fn unmapping_a_range_with_a_hole_is_refused_and_changes_nothing() {
    let mut storage = frames(8);
    let mut table = table(Format::VtdFirstStage, &mut storage);
    table.map(0, 0x4000_0000, 3 * PAGE, Rights::READ).unwrap();
    table
        .map(4 * PAGE, 0x4000_4000, 2 * PAGE, Rights::READ)
        .unwrap();
    assert_eq!(
        table.unmap(0, 6 * PAGE),
        Err(Error::NotMapped { iova: 3 * PAGE })
    );
    let mut count = 0;
    table.for_each_mapping(|_, _| count += 1).unwrap();
    assert_eq!(count, 5);
}

#[test]
fn running_out_of_frames_half_way_rolls_the_map_back() {
    for format in FORMATS {
        // Root + one table per level for the first 2 MiB, but not enough
        // for the level-3 table of the second 2 MiB.
        let mut storage = frames(4);
        let mut table = table(format, &mut storage);
        let iova = 0x20_0000 - 2 * PAGE;
        assert_eq!(
            table.map(iova, 0x4000_0000, 4 * PAGE, Rights::READ),
            Err(Error::OutOfFrames { iova: 0x20_0000 })
        );
        assert_eq!(table.translate(iova).unwrap(), None);
        assert_eq!(table.stats().tables_live, 1, "{format:?}: tables pruned");
        assert_eq!(table.stats().pages_mapped, 0);
        // The pages briefly written must still be invalidated.
        assert!(!table.pending_invalidation().is_empty());
        table.flush(&mut Recorder::default()).unwrap();
        assert_eq!(table.pool().in_use(), 1);
        // With the frames back, a smaller map fits.
        table
            .map(iova, 0x4000_0000, 2 * PAGE, Rights::READ)
            .unwrap();
    }
}

#[test]
fn map_pages_maps_each_page_to_its_own_ipa_across_tables() {
    for format in FORMATS {
        let mut storage = frames(8);
        let mut table = table(format, &mut storage);
        // Six pages from 8 KiB below a 2 MiB boundary: two level-3 tables.
        let iova = 0x20_0000 - 2 * PAGE;
        let pages = [
            0x4000_5000,
            0x4000_1000,
            0x7000_0000,
            0,
            0x4000_2000,
            0x1234_5000,
        ];
        table.map_pages(iova, &pages, Rights::READ_WRITE).unwrap();
        for (k, &ipa) in pages.iter().enumerate() {
            assert_eq!(
                table.translate(iova + k as u64 * PAGE + 0x10).unwrap(),
                Some(Translation {
                    ipa: ipa + 0x10,
                    rights: Rights::READ_WRITE
                }),
                "{format:?}: page {k}"
            );
        }
        assert_eq!(table.translate(iova + 6 * PAGE).unwrap(), None);
        assert_eq!(table.translate(iova - PAGE).unwrap(), None);
        assert_eq!(table.stats().pages_mapped, 6);
        // One range recorded, tables added: not leaf-only.
        let ranges = table.pending_invalidation().ranges();
        assert_eq!(ranges.len(), 1);
        assert_eq!((ranges[0].iova, ranges[0].len), (iova, 6 * PAGE));
        assert!(!ranges[0].leaf_only);
        // And it unmaps as one range.
        table.unmap(iova, 6 * PAGE).unwrap();
        assert_eq!(table.translate(iova).unwrap(), None);
    }
}

#[test]
fn map_pages_refuses_bad_ipas_and_overlaps_and_changes_nothing() {
    for format in FORMATS {
        let mut storage = frames(8);
        let mut table = table(format, &mut storage);
        table
            .map(3 * PAGE, 0x4000_0000, PAGE, Rights::READ)
            .unwrap();
        table.flush(&mut Recorder::default()).unwrap();
        let refusals = [
            (
                PAGE,
                vec![0x4000_1000, 0x4000_2010],
                Error::MisalignedIpa { ipa: 0x4000_2010 },
            ),
            (
                PAGE,
                vec![0x4000_1000, 1 << 48],
                Error::IpaOutOfRange {
                    ipa: 1 << 48,
                    len: PAGE,
                },
            ),
            (
                PAGE,
                vec![0x4000_1000, 0x4000_2000, 0x4000_3000],
                Error::AlreadyMapped { iova: 3 * PAGE },
            ),
            (PAGE, vec![], Error::ZeroLength),
            (
                PAGE + 8,
                vec![0x4000_1000],
                Error::MisalignedIova { iova: PAGE + 8 },
            ),
        ];
        for (iova, pages, error) in refusals {
            assert_eq!(
                table.map_pages(iova, &pages, Rights::READ_WRITE),
                Err(error),
                "{format:?}"
            );
            let mut count = 0;
            table.for_each_mapping(|_, _| count += 1).unwrap();
            assert_eq!(count, 1, "{format:?}: {error:?} changed nothing");
            assert!(table.pending_invalidation().is_empty());
        }
    }
}

#[test]
fn running_out_of_frames_in_a_run_prunes_the_tables_it_added() {
    for format in FORMATS {
        // Root, level 1 and level 2 fit; the level-3 table of the run (one
        // table's worth of pages, written with one walk) does not.
        let mut storage = frames(3);
        let mut table = table(format, &mut storage);
        assert_eq!(
            table.map(0x40_0000, 0x4000_0000, 8 * PAGE, Rights::READ),
            Err(Error::OutOfFrames { iova: 0x40_0000 })
        );
        assert_eq!(table.translate(0x40_0000).unwrap(), None);
        assert_eq!(table.stats().tables_live, 1, "{format:?}: tables pruned");
        // The tables were linked (and may be cached): invalidated before
        // their frames go back.
        assert!(!table.pending_invalidation().is_empty());
        assert_eq!(table.stats().tables_retired, 2);
        table.flush(&mut Recorder::default()).unwrap();
        assert_eq!(table.pool().in_use(), 1);
    }
}

#[test]
fn an_empty_pool_fails_at_the_first_table() {
    let mut storage = frames(1);
    let mut table = table(Format::ArmStage1, &mut storage);
    assert_eq!(
        table.map(0x1000, 0, PAGE, Rights::READ),
        Err(Error::OutOfFrames { iova: 0x1000 })
    );
    assert!(table.pending_invalidation().is_empty());
    let memory = SliceMemory::new(WINDOW_BASE, &mut []).unwrap();
    let pool = BitmapPool::<1>::new(WINDOW_BASE, 0).unwrap();
    assert_eq!(
        IoPageTable::new(Config::new(Format::ArmStage1), pool, memory).err(),
        Some(Error::OutOfFrames { iova: 0 })
    );
}

#[test]
fn ipa_size_bounds_pages_and_table_frames() {
    assert_eq!(
        Config::new(Format::VtdFirstStage).with_ipa_bits(12),
        Err(Error::InvalidIpaBits { bits: 12 })
    );
    assert_eq!(
        Config::new(Format::VtdFirstStage).with_ipa_bits(49),
        Err(Error::InvalidIpaBits { bits: 49 })
    );
    let config = Config::new(Format::ArmStage1).with_ipa_bits(32).unwrap();
    assert_eq!(config.ipa_bits(), 32);
    // The root fits just below 4 GiB; the next frame of the pool does not.
    let base = (1 << 32) - PAGE;
    let mut storage = frames(4);
    let memory = SliceMemory::new(base, &mut storage).unwrap();
    let pool = BitmapPool::<1>::new(base, 4).unwrap();
    let mut table = IoPageTable::new(config, pool, memory).unwrap();
    assert_eq!(table.root().ipa(), base);
    assert_eq!(
        table.map(0, 1 << 32, PAGE, Rights::READ),
        Err(Error::IpaOutOfRange {
            ipa: 1 << 32,
            len: PAGE
        })
    );
    assert_eq!(
        table.map(0, 0x1000, PAGE, Rights::READ),
        Err(Error::BadFrame { ipa: 1 << 32 })
    );
    assert_eq!(table.pool().in_use(), 1, "the bad frame went back");
}

/// Table memory the test can poke behind the table's back.
#[derive(Clone)]
struct SharedMemory(Rc<RefCell<Vec<[u64; ENTRIES_PER_TABLE]>>>);

impl SharedMemory {
    fn slot(frame: TableFrame) -> usize {
        ((frame.ipa() - WINDOW_BASE) / PAGE) as usize
    }

    fn poke(&self, frame: TableFrame, index: usize, value: u64) {
        self.0.borrow_mut()[Self::slot(frame)][index] = value;
    }
}

impl TableMemory for SharedMemory {
    fn read(&self, frame: TableFrame, index: usize) -> Result<u64, FrameNotBacked> {
        let not_backed = FrameNotBacked { ipa: frame.ipa() };
        let slot = frame.ipa().checked_sub(WINDOW_BASE).ok_or(not_backed)? / PAGE;
        self.0
            .borrow()
            .get(slot as usize)
            .map(|words| words[index])
            .ok_or(not_backed)
    }

    fn write(&mut self, frame: TableFrame, index: usize, value: u64) -> Result<(), FrameNotBacked> {
        let not_backed = FrameNotBacked { ipa: frame.ipa() };
        let slot = frame.ipa().checked_sub(WINDOW_BASE).ok_or(not_backed)? / PAGE;
        let mut frames = self.0.borrow_mut();
        let words = frames.get_mut(slot as usize).ok_or(not_backed)?;
        words[index] = value;
        Ok(())
    }
}

fn shared_table(format: Format) -> (IoPageTable<BitmapPool<1>, SharedMemory>, SharedMemory) {
    let memory = SharedMemory(Rc::new(RefCell::new(frames(8))));
    let pool = BitmapPool::new(WINDOW_BASE, 8).unwrap();
    let table = IoPageTable::new(Config::new(format), pool, memory.clone()).unwrap();
    (table, memory)
}

#[test]
fn entries_this_crate_never_writes_are_reported_not_followed() {
    for format in FORMATS {
        let (mut table, memory) = shared_table(format);
        table.map(0, 0x4000_0000, PAGE, Rights::READ).unwrap();
        let mut tables = Vec::new();
        table.for_each_table(|_, frame| tables.push(frame)).unwrap();
        // A 2 MiB large page / block in the level-2 table at 2 MiB.
        let large = match format {
            Format::VtdFirstStage => 0x4020_0000 | 0x87,
            Format::ArmStage1 => 0x4020_0000 | 0x401,
        };
        memory.poke(tables[2], 1, large);
        let unexpected = Error::UnexpectedEntry {
            iova: 0x20_0000,
            level: 2,
            entry: large,
        };
        assert_eq!(table.translate(0x20_0000), Err(unexpected));
        assert_eq!(
            table.map(0x20_0000, 0x5000_0000, PAGE, Rights::READ),
            Err(unexpected)
        );
        assert_eq!(table.for_each_mapping(|_, _| {}), Err(unexpected));
        assert_eq!(table.stats().tables_live, 4);

        // A table pointer to an IPA the memory does not back.
        let stray = format.table_entry(0x10_0000_0000);
        memory.poke(tables[2], 1, stray);
        assert_eq!(
            table.translate(0x20_0000),
            Err(Error::FrameNotBacked {
                ipa: 0x10_0000_0000
            })
        );
    }
}

#[test]
fn a_clobbered_retired_frame_stops_the_release() {
    let (mut table, memory) = shared_table(Format::VtdFirstStage);
    table.map(0, 0x4000_0000, PAGE, Rights::READ).unwrap();
    let mut tables = Vec::new();
    table.for_each_table(|_, frame| tables.push(frame)).unwrap();
    table.unmap(0, PAGE).unwrap();
    // The level-1 table was retired last: it heads the list.
    memory.poke(tables[1], 0, 0x1234);
    assert_eq!(
        table.flush(&mut Recorder::default()),
        Err(FlushError::Table(Error::RetiredListCorrupt {
            ipa: tables[1].ipa(),
            word: 0x1234
        }))
    );
    assert_eq!(table.stats().tables_retired, 3);
}

#[test]
fn error_messages_name_the_value() {
    let cases = [
        (Error::MisalignedIova { iova: 0x1800 }, "0x1800"),
        (Error::MisalignedIpa { ipa: 0x10 }, "0x10"),
        (Error::MisalignedLength { len: 0x1001 }, "0x1001"),
        (Error::AlreadyMapped { iova: 0x5000 }, "0x5000"),
        (Error::NotMapped { iova: 0x3000 }, "0x3000"),
        (Error::OutOfFrames { iova: 0x20_0000 }, "0x200000"),
        (Error::BadFrame { ipa: 0x1_0000_0000 }, "0x100000000"),
        (Error::FrameNotBacked { ipa: 0x9000 }, "0x9000"),
        (
            Error::IovaOutOfRange {
                iova: 1 << 47,
                len: 0x1000,
            },
            "0x800000000000",
        ),
        (
            Error::IpaOutOfRange {
                ipa: 1 << 48,
                len: 0x1000,
            },
            "0x1000000000000",
        ),
        (Error::InvalidIpaBits { bits: 12 }, "12"),
        (
            Error::UnsupportedRights {
                rights: Rights::WRITE,
            },
            "WRITE",
        ),
        (
            Error::UnexpectedEntry {
                iova: 0x20_0000,
                level: 2,
                entry: 0x87,
            },
            "0x0000000000000087",
        ),
        (
            Error::RetiredListCorrupt {
                ipa: 0x8000,
                word: 1,
            },
            "0x8000",
        ),
    ];
    for (error, needle) in cases {
        let message = error.to_string();
        assert!(message.contains(needle), "{message:?} lacks {needle}");
    }
    assert_eq!(Error::ZeroLength.to_string(), "length is zero");
}

// ---- the ready-made pool and memory ----

#[test]
fn bitmap_pool_hands_out_each_frame_once_and_ignores_foreign_frees() {
    let mut pool = BitmapPool::<2>::new(0x1_0000, 70).unwrap();
    assert_eq!(pool.capacity(), 70);
    let mut seen = Vec::new();
    while let Some(frame) = pool.alloc() {
        assert!(!seen.contains(&frame));
        seen.push(frame);
    }
    assert_eq!(seen.len(), 70);
    assert_eq!(seen[69].ipa(), 0x1_0000 + 69 * PAGE);
    pool.free(TableFrame::new(0).unwrap()); // below the window
    pool.free(TableFrame::new(0x1_0000 + 70 * PAGE).unwrap()); // past it
    assert_eq!(pool.in_use(), 70);
    pool.free(seen[3]);
    pool.free(seen[3]); // twice: ignored
    assert_eq!(pool.in_use(), 69);
    assert_eq!(pool.alloc(), Some(seen[3]));
    assert!(BitmapPool::<1>::new(0, 65).is_none());
    assert!(BitmapPool::<1>::new(0x800, 1).is_none());
    assert!(BitmapPool::<1>::new(!0xfff, 2).is_none());
}

#[test]
fn slice_memory_refuses_frames_outside_its_window() {
    let mut storage = frames(2);
    assert!(SliceMemory::new(0x800, &mut storage).is_none());
    let mut memory = SliceMemory::new(0x10_000, &mut storage).unwrap();
    let inside = TableFrame::new(0x11_000).unwrap();
    memory.write(inside, 511, 7).unwrap();
    assert_eq!(memory.read(inside, 511), Ok(7));
    assert_eq!(memory.frames()[1][511], 7);
    for ipa in [0xf_000, 0x12_000] {
        let outside = TableFrame::new(ipa).unwrap();
        assert_eq!(memory.read(outside, 0), Err(FrameNotBacked { ipa }));
        assert_eq!(memory.write(outside, 0, 1), Err(FrameNotBacked { ipa }));
    }
    assert_eq!(TableFrame::new(0x10_001), None);
}
