//! [`IoPageTable`]: a 4-level stage-1 table built in driver memory.
//!
//! The walk, for both formats (every arrow is an IPA, which stage 2
//! translates before the IOMMU reads the next table or the page):
//!
//! ```text
//! IOVA bits: 47..39   38..30   29..21   20..12   11..0
//!            index 0  index 1  index 2  index 3  offset
//! root IPA -> level 0 -> level 1 -> level 2 -> level 3 -> page IPA + offset
//! ```
//!
//! How the operations keep the hardware safe while it may be walking:
//! - a new table is zeroed (and synced) before the entry that links it is
//!   written, so the IOMMU never sees a half-initialised table;
//! - `map` and `unmap` check the whole range first and change nothing when
//!   the check fails; when `map` runs out of frames half way it unmaps what
//!   it mapped and prunes the tables it added;
//! - a table left with no present entry by `unmap` is unlinked at once and
//!   **retired**: kept on a list threaded through the retired frames
//!   themselves (word 0 holds the next frame's IPA with bit 1 set, bit 0
//!   clear, so both formats still read the frame as all not-present) and
//!   handed back to the [`FramePool`] only by [`IoPageTable::flush`], after
//!   the invalidation covering it completed. Until then a stale walk-cache
//!   entry may still point at it, so it must not be reused.

use crate::error::Error;
use crate::format::{Entry, Format, Rights};
use crate::invalidation::{FlushError, InvalidationBatch, InvalidationRange, Invalidator};
use crate::memory::{FramePool, TableFrame, TableMemory};
use crate::{ENTRIES_PER_TABLE, LEVELS, MAX_IPA_BITS, PAGE_SIZE};
use core::sync::atomic::{Ordering, compiler_fence};

/// Marks word 0 of a retired frame as a link to the next retired frame
/// (bit 0 stays clear: not present in both formats).
const RETIRED_LINK_TAG: u64 = 1 << 1;

/// Smallest IPA size accepted: one table frame's worth of address bits.
const MIN_IPA_BITS: u32 = 13;

/// Format and address-size parameters of a table; the kernel validates the
/// same parameters when the driver binds the table (`IoSpace.BindUserTable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    format: Format,
    ipa_bits: u32,
}

impl Config {
    /// `format` with a 48-bit IPA size.
    pub const fn new(format: Format) -> Config {
        Config {
            format,
            ipa_bits: MAX_IPA_BITS,
        }
    }

    /// The same configuration with IPAs limited to `bits` bits (13..=48):
    /// every table frame and every mapped page must lie below `2^bits`.
    /// Use the stage-2 input size of the IoSpace (for SMMUv3 also no more
    /// than the CD's IPS).
    pub fn with_ipa_bits(self, bits: u32) -> Result<Config, Error> {
        if (MIN_IPA_BITS..=MAX_IPA_BITS).contains(&bits) {
            Ok(Config {
                ipa_bits: bits,
                ..self
            })
        } else {
            Err(Error::InvalidIpaBits { bits })
        }
    }

    /// The entry format.
    pub const fn format(&self) -> Format {
        self.format
    }

    /// The IPA size in bits.
    pub const fn ipa_bits(&self) -> u32 {
        self.ipa_bits
    }

    fn ipa_limit(&self) -> u64 {
        1 << self.ipa_bits
    }

    fn iova_limit(&self) -> u64 {
        1 << self.format.iova_bits()
    }
}

/// Where an IOVA leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The IPA (page IPA plus the IOVA's offset in the page).
    pub ipa: u64,
    /// What the device may do.
    pub rights: Rights,
}

/// Counters of one table's work, for benchmarks and leak checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Pages mapped by successful `map` calls, in total.
    pub pages_mapped: u64,
    /// Pages unmapped by successful `unmap` calls, in total.
    pub pages_unmapped: u64,
    /// Invalidator calls completed by `flush`, in total (one per range, one
    /// per "all").
    pub invalidation_calls: u64,
    /// Table frames taken from the pool, in total (the root included).
    pub tables_allocated: u64,
    /// Table frames given back to the pool, in total.
    pub tables_released: u64,
    /// Table frames linked in the tree now (the root included).
    pub tables_live: usize,
    /// Table frames unlinked but waiting for `flush` to release them.
    pub tables_retired: usize,
}

/// A driver's stage-1 IO page table: the tables live in frames from `P`,
/// reached through `M`; every address in them is an IPA.
#[derive(Debug)]
pub struct IoPageTable<P: FramePool, M: TableMemory> {
    config: Config,
    pool: P,
    memory: M,
    root: TableFrame,
    batch: InvalidationBatch,
    retired_head: Option<TableFrame>,
    /// The level-3 table of the 2 MiB region (IOVA >> 21) the last map
    /// wrote into: a map inside that region skips the walk from the root.
    /// Only [`IoPageTable::retire`] unlinks a table, and it forgets the
    /// hint, so a hinted table is always linked where the hint says.
    leaf_hint: Option<(u64, TableFrame)>,
    stats: Stats,
}

/// The IPAs of a map's pages: a run from a first IPA (`map`) or one IPA
/// per page (`map_pages`); checked aligned and below the IPA limit.
#[derive(Clone, Copy)]
enum Pages<'a> {
    Run(u64),
    List(&'a [u64]),
}

impl<'a> Pages<'a> {
    /// The pages of a map from `iova`, from `cursor` (inside the map) on.
    fn from(self, iova: u64, cursor: u64) -> Pages<'a> {
        match self {
            // ipa + (cursor - iova) < ipa + len, checked.
            Pages::Run(ipa) => Pages::Run(ipa + (cursor - iova)),
            Pages::List(list) => Pages::List(&list[((cursor - iova) / PAGE_SIZE) as usize..]),
        }
    }

    /// The IPA of page `k`.
    fn ipa(self, k: usize) -> u64 {
        match self {
            Pages::Run(ipa) => ipa + k as u64 * PAGE_SIZE,
            Pages::List(list) => list[k],
        }
    }
}

fn level_shift(level: usize) -> u32 {
    // Level 0 indexes bits 47..39, level 3 bits 20..12.
    39 - 9 * (level as u32)
}

fn index(iova: u64, level: usize) -> usize {
    ((iova >> level_shift(level)) & (ENTRIES_PER_TABLE as u64 - 1)) as usize
}

/// Start of the next region covered by one entry of a level-`level` table.
fn next_boundary(iova: u64, level: usize) -> u64 {
    let span = 1u64 << level_shift(level);
    (iova | (span - 1)).saturating_add(1)
}

/// Whether every word of `run` is zero, eight words at a time.
fn all_zero(run: &[u64]) -> bool {
    let (groups, rest) = run.as_chunks::<8>();
    groups
        .iter()
        .all(|group| group.iter().fold(0, |any, &word| any | word) == 0)
        && rest.iter().all(|&word| word == 0)
}

/// Writes the page entries of `pages` with `rights` into `words`, one
/// store per entry. The entries differ only in their address field, which
/// holds the page's IPA as is (the IPAs were checked aligned and below the
/// limit): one encoded entry serves them all.
#[inline]
fn write_run(words: &mut [u64], format: Format, pages: Pages<'_>, rights: Rights) {
    match pages {
        Pages::Run(first_ipa) => {
            // Adding a page to the first entry gives the next one.
            let mut entry = format.page_entry(first_ipa, rights);
            // Eight entries at a time, each group followed by a compiler
            // fence: the compiler keeps plain pairs of stores (left alone,
            // it vectorises the loop into stores through the stack, about
            // twice the instructions on aarch64); 15 instructions per eight
            // entries on aarch64 (17 with `black_box` on each group).
            let (groups, rest) = words.as_chunks_mut::<8>();
            for group in groups {
                *group = core::array::from_fn(|k| entry + k as u64 * PAGE_SIZE);
                compiler_fence(Ordering::SeqCst);
                entry += 8 * PAGE_SIZE;
            }
            for word in rest {
                *word = entry;
                entry += PAGE_SIZE;
            }
        }
        Pages::List(list) => {
            let attributes = format.page_entry(0, rights);
            for (word, &ipa) in words.iter_mut().zip(list) {
                *word = attributes | ipa;
            }
        }
    }
}

impl<P: FramePool, M: TableMemory> IoPageTable<P, M> {
    /// An empty table: takes the root frame from `pool` and zeroes it.
    ///
    /// Fails with [`Error::OutOfFrames`] (iova 0) on an empty pool,
    /// [`Error::BadFrame`] or [`Error::FrameNotBacked`] when the pool's
    /// frame is unusable; `pool` and `memory` are dropped then.
    pub fn new(config: Config, pool: P, memory: M) -> Result<Self, Error> {
        let mut table = IoPageTable {
            config,
            pool,
            memory,
            root: TableFrame::ZERO,
            batch: InvalidationBatch::new(),
            retired_head: None,
            leaf_hint: None,
            stats: Stats::default(),
        };
        table.root = table.alloc_table(0)?;
        Ok(table)
    }

    /// The configuration.
    pub fn config(&self) -> Config {
        self.config
    }

    /// The entry format.
    pub fn format(&self) -> Format {
        self.config.format
    }

    /// The root table: its IPA is what the kernel installs (VT-d PASID
    /// entry first-stage pointer, SMMUv3 CD TTB0).
    pub fn root(&self) -> TableFrame {
        self.root
    }

    /// The frame pool.
    pub fn pool(&self) -> &P {
        &self.pool
    }

    /// The table memory (read-only: writes go through the table's
    /// operations).
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The invalidations recorded since the last flush.
    pub fn pending_invalidation(&self) -> &InvalidationBatch {
        &self.batch
    }

    /// Maps the `len` bytes at `iova` to the IPAs from `ipa`, 4 KiB pages,
    /// allocating intermediate tables from the pool.
    ///
    /// All three of `iova`, `ipa`, `len` must be 4 KiB aligned, `len`
    /// non-zero, the IOVA range inside the format's input space, the IPA
    /// range below `2^ipa_bits`, `rights` `READ` or `READ | WRITE`, and no
    /// page of the range mapped already. On error nothing changed.
    /// Records the range for invalidation; the device may use the new
    /// mapping only after [`IoPageTable::flush`].
    pub fn map(&mut self, iova: u64, ipa: u64, len: u64, rights: Rights) -> Result<(), Error> {
        let end = self.check_iova_range(iova, len)?;
        self.check_ipa_range(ipa, len)?;
        self.map_checked(iova, end, Pages::Run(ipa), rights)
    }

    /// Maps `pages.len()` 4 KiB pages from `iova`, page `k` to the IPA
    /// `pages[k]`: a scatter-gather buffer in one call. Like
    /// [`IoPageTable::map`] it walks from the root once per level-3 table
    /// the range touches (not once per page), adds each missing table once,
    /// and writes each table's run of entries in one pass.
    ///
    /// `iova` must be 4 KiB aligned, `pages` non-empty, every IPA 4 KiB
    /// aligned and below `2^ipa_bits` (the first one that is not is named
    /// in the error), `rights` `READ` or `READ | WRITE`, and no page of the
    /// range mapped already. On error nothing changed. Records the range
    /// for invalidation, as `map` does.
    pub fn map_pages(&mut self, iova: u64, pages: &[u64], rights: Rights) -> Result<(), Error> {
        let len = (pages.len() as u64).saturating_mul(PAGE_SIZE);
        let end = self.check_iova_range(iova, len)?;
        let limit = self.config.ipa_limit();
        if let Some(&ipa) = pages
            .iter()
            .find(|&&ipa| !ipa.is_multiple_of(PAGE_SIZE) || ipa >= limit)
        {
            return Err(if ipa.is_multiple_of(PAGE_SIZE) {
                Error::IpaOutOfRange {
                    ipa,
                    len: PAGE_SIZE,
                }
            } else {
                Error::MisalignedIpa { ipa }
            });
        }
        self.map_checked(iova, end, Pages::List(pages), rights)
    }

    /// `map` and `map_pages` once the IOVA range and the IPAs are checked.
    fn map_checked(
        &mut self,
        iova: u64,
        end: u64,
        pages: Pages<'_>,
        rights: Rights,
    ) -> Result<(), Error> {
        if !rights.is_expressible() {
            return Err(Error::UnsupportedRights { rights });
        }
        let len = end - iova;
        let allocated_before = self.stats.tables_allocated;
        if (end - 1) >> level_shift(LEVELS - 2) == iova >> level_shift(LEVELS - 2) {
            // A run of leaves in one table: one walk from the root.
            self.map_run(iova, end, pages, rights)?;
        } else {
            if let Some(mapped) = self.first_page_where(iova, end, true)? {
                return Err(Error::AlreadyMapped { iova: mapped });
            }
            let mut cursor = iova;
            while cursor < end {
                let here = pages.from(iova, cursor);
                let result = match self.leaf_table_or_allocate(cursor) {
                    Ok(leaf) => self.fill(leaf, &mut cursor, end, here, rights),
                    Err(error) => Err(error),
                };
                if let Err(error) = result {
                    self.roll_back_map(iova, cursor);
                    return Err(error);
                }
            }
        }
        self.batch.record(InvalidationRange {
            iova,
            len,
            leaf_only: self.stats.tables_allocated == allocated_before,
        });
        self.stats.pages_mapped += len / PAGE_SIZE;
        Ok(())
    }

    /// Unmaps the `len` bytes at `iova`; every page of the range must be
    /// mapped. Tables left empty are unlinked and retired until the next
    /// [`IoPageTable::flush`]. On error nothing changed (barring a failing
    /// [`TableMemory`]). Records the range for invalidation: the device may
    /// keep using the old translations until the flush.
    pub fn unmap(&mut self, iova: u64, len: u64) -> Result<(), Error> {
        let end = self.check_iova_range(iova, len)?;
        if let Some(unmapped) = self.first_page_where(iova, end, false)? {
            return Err(Error::NotMapped { iova: unmapped });
        }
        let live_before = self.stats.tables_live;
        let result = self.clear_range(iova, end);
        self.batch.record(InvalidationRange {
            iova,
            len,
            leaf_only: result.is_ok() && self.stats.tables_live == live_before,
        });
        result?;
        self.stats.pages_unmapped += len / PAGE_SIZE;
        Ok(())
    }

    /// Walks the tables in software as the IOMMU would (stage 1 only):
    /// where `iova` leads, or `None` if it is not mapped.
    pub fn translate(&self, iova: u64) -> Result<Option<Translation>, Error> {
        if iova >= self.config.iova_limit() {
            return Err(Error::IovaOutOfRange { iova, len: 0 });
        }
        let Some(leaf) = self.leaf_table(iova)? else {
            return Ok(None);
        };
        let entry = self.read(leaf, index(iova, 3))?;
        match self.format().decode(3, entry) {
            Entry::Absent => Ok(None),
            Entry::Page { ipa, rights } => Ok(Some(Translation {
                ipa: ipa | (iova % PAGE_SIZE),
                rights,
            })),
            Entry::Table { .. } | Entry::Unexpected => Err(Error::UnexpectedEntry {
                iova,
                level: 3,
                entry,
            }),
        }
    }

    /// Calls `visit(iova, translation)` for every mapped page, in IOVA
    /// order.
    pub fn for_each_mapping(&self, mut visit: impl FnMut(u64, Translation)) -> Result<(), Error> {
        self.walk(&mut |_, _| {}, &mut visit)
    }

    /// Calls `visit(level, frame)` for every table frame linked in the tree
    /// (the root first, then depth first in IOVA order): the frames a test
    /// copies into a simulated memory to check the IOMMU's own walk.
    pub fn for_each_table(&self, mut visit: impl FnMut(usize, TableFrame)) -> Result<(), Error> {
        self.walk(&mut visit, &mut |_, _| {})
    }

    /// Issues the recorded invalidations (one [`Invalidator`] call per
    /// coalesced range, or one `invalidate_all` after an overflow), then
    /// gives the retired table frames back to the pool.
    ///
    /// If the invalidator fails, the ranges not yet invalidated stay
    /// recorded and no frame is released; calling `flush` again retries.
    pub fn flush<I: Invalidator>(
        &mut self,
        invalidator: &mut I,
    ) -> Result<(), FlushError<I::Error>> {
        let (calls, result) = self.batch.issue(invalidator);
        self.stats.invalidation_calls += calls;
        result.map_err(FlushError::Invalidator)?;
        self.release_retired().map_err(FlushError::Table)
    }

    // ---- checks ----

    fn check_iova_range(&self, iova: u64, len: u64) -> Result<u64, Error> {
        if len == 0 {
            return Err(Error::ZeroLength);
        }
        if !iova.is_multiple_of(PAGE_SIZE) {
            return Err(Error::MisalignedIova { iova });
        }
        if !len.is_multiple_of(PAGE_SIZE) {
            return Err(Error::MisalignedLength { len });
        }
        match iova.checked_add(len) {
            Some(end) if end <= self.config.iova_limit() => Ok(end),
            _ => Err(Error::IovaOutOfRange { iova, len }),
        }
    }

    fn check_ipa_range(&self, ipa: u64, len: u64) -> Result<(), Error> {
        if !ipa.is_multiple_of(PAGE_SIZE) {
            return Err(Error::MisalignedIpa { ipa });
        }
        match ipa.checked_add(len) {
            Some(end) if end <= self.config.ipa_limit() => Ok(()),
            _ => Err(Error::IpaOutOfRange { ipa, len }),
        }
    }

    // ---- memory access ----

    fn read(&self, frame: TableFrame, index: usize) -> Result<u64, Error> {
        self.memory
            .read(frame, index)
            .map_err(|not_backed| Error::FrameNotBacked {
                ipa: not_backed.ipa,
            })
    }

    fn write(&mut self, frame: TableFrame, index: usize, value: u64) -> Result<(), Error> {
        self.memory
            .write(frame, index, value)
            .map_err(|not_backed| Error::FrameNotBacked {
                ipa: not_backed.ipa,
            })
    }

    /// The table that entry `slot` of the level-`level` table `table` links
    /// to, `None` if the entry is not present. `iova` names the walk in
    /// errors.
    fn child(
        &self,
        table: TableFrame,
        level: usize,
        slot: usize,
        iova: u64,
    ) -> Result<Option<TableFrame>, Error> {
        let entry = self.read(table, slot)?;
        let unexpected = Error::UnexpectedEntry {
            iova,
            level: level as u8,
            entry,
        };
        match self.format().decode(level, entry) {
            Entry::Absent => Ok(None),
            Entry::Table { ipa } if level < LEVELS - 1 => {
                TableFrame::new(ipa).map(Some).ok_or(unexpected)
            }
            _ => Err(unexpected),
        }
    }

    /// The tables on the walk of `iova`, root first, and how many exist
    /// (`LEVELS` when the walk reaches a level-3 table).
    fn path(&self, iova: u64) -> Result<([TableFrame; LEVELS], usize), Error> {
        let mut frames = [self.root; LEVELS];
        for level in 0..LEVELS - 1 {
            match self.child(frames[level], level, index(iova, level), iova)? {
                Some(next) => frames[level + 1] = next,
                None => return Ok((frames, level + 1)),
            }
        }
        Ok((frames, LEVELS))
    }

    fn leaf_table(&self, iova: u64) -> Result<Option<TableFrame>, Error> {
        let (frames, depth) = self.path(iova)?;
        Ok((depth == LEVELS).then_some(frames[LEVELS - 1]))
    }

    fn is_empty_table(&self, frame: TableFrame, level: usize) -> Result<bool, Error> {
        for slot in 0..ENTRIES_PER_TABLE {
            let entry = self.read(frame, slot)?;
            if self.format().decode(level, entry) != Entry::Absent {
                return Ok(false);
            }
        }
        Ok(true)
    }

    // ---- the operations' steps ----

    /// The first page in `[iova, end)` that is mapped (`want_mapped`) or
    /// not mapped (`!want_mapped`); skips absent subtrees whole.
    fn first_page_where(
        &self,
        iova: u64,
        end: u64,
        want_mapped: bool,
    ) -> Result<Option<u64>, Error> {
        let mut cursor = iova;
        while cursor < end {
            let (frames, depth) = self.path(cursor)?;
            if depth < LEVELS {
                if !want_mapped {
                    return Ok(Some(cursor));
                }
                // The entry at level depth - 1 is absent: skip its region.
                cursor = next_boundary(cursor, depth - 1);
                continue;
            }
            let leaf = frames[LEVELS - 1];
            let stop = next_boundary(cursor, LEVELS - 2).min(end);
            if let Some(found) = self.first_in_leaf(leaf, cursor, stop, want_mapped)? {
                return Ok(Some(found));
            }
            cursor = stop;
        }
        Ok(None)
    }

    /// [`IoPageTable::first_page_where`] inside the level-3 table `leaf`,
    /// for `[cursor, stop)` (`stop` at most the table's end).
    fn first_in_leaf(
        &self,
        leaf: TableFrame,
        cursor: u64,
        stop: u64,
        want_mapped: bool,
    ) -> Result<Option<u64>, Error> {
        let first = index(cursor, 3);
        let count = ((stop - cursor) / PAGE_SIZE) as usize;
        let decode = |at: u64, entry: u64| match self.format().decode(3, entry) {
            Entry::Absent => Ok(false),
            Entry::Page { .. } => Ok(true),
            Entry::Table { .. } | Entry::Unexpected => Err(Error::UnexpectedEntry {
                iova: at,
                level: 3,
                entry,
            }),
        };
        let Some(words) = self.memory.words(leaf) else {
            for k in 0..count {
                let at = cursor + k as u64 * PAGE_SIZE;
                if decode(at, self.read(leaf, first + k)?)? == want_mapped {
                    return Ok(Some(at));
                }
            }
            return Ok(None);
        };
        // The whole run at once; zero is absent in both formats.
        let mut run = &words[first..first + count];
        let mut skipped = 0;
        if want_mapped {
            // Looking for a mapped page: only a non-zero word can be one,
            // so skip the zeroes without decoding them, eight words at a
            // time.
            for chunk in run.chunks_exact(8) {
                if chunk.iter().fold(0, |any, &word| any | word) != 0 {
                    break;
                }
                skipped += 8;
            }
            skipped += run[skipped..]
                .iter()
                .position(|&entry| entry != 0)
                .unwrap_or(run.len() - skipped);
            run = &run[skipped..];
        }
        let from = cursor + skipped as u64 * PAGE_SIZE;
        for (k, &entry) in run.iter().enumerate() {
            let at = from + k as u64 * PAGE_SIZE;
            if (entry != 0 && decode(at, entry)?) == want_mapped {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    /// `map` of `[iova, end)` inside one level-3 table, from `pages`, with one
    /// walk from the root: the run is checked and written in the table the
    /// walk reaches, or, where the walk stops at an absent entry (so no
    /// page of the run is mapped), written into the tables added from
    /// there, one per missing level. On error nothing changed.
    fn map_run(
        &mut self,
        iova: u64,
        end: u64,
        pages: Pages<'_>,
        rights: Rights,
    ) -> Result<(), Error> {
        let region = iova >> level_shift(LEVELS - 2);
        let leaf = match self.leaf_hint {
            // The last map's table: no walk, and with its words at hand
            // the run is checked and written in one place.
            Some((hinted, leaf)) if hinted == region => {
                if self.fill_unmapped_run(leaf, iova, end, pages, rights) {
                    return Ok(());
                }
                self.check_unmapped(leaf, iova, end)?;
                leaf
            }
            _ => {
                let (frames, depth) = self.path(iova)?;
                let leaf = if depth == LEVELS {
                    let leaf = frames[LEVELS - 1];
                    self.check_unmapped(leaf, iova, end)?;
                    leaf
                } else {
                    match self.extend_path(frames[depth - 1], depth, iova) {
                        Ok(leaf) => leaf,
                        Err(error) => {
                            self.roll_back_map(iova, iova);
                            return Err(error);
                        }
                    }
                };
                self.leaf_hint = Some((region, leaf));
                leaf
            }
        };
        let mut cursor = iova;
        let result = self.fill(leaf, &mut cursor, end, pages, rights);
        if result.is_err() {
            self.roll_back_map(iova, cursor);
        }
        result
    }

    /// Writes `[iova, end)` (inside the level-3 table `leaf`) from `pages`
    /// if the memory lends the table's words and every word of the run is
    /// zero (absent in both formats); `false`, having changed nothing,
    /// otherwise (the caller then checks entry by entry and names what it
    /// finds).
    #[inline]
    fn fill_unmapped_run(
        &mut self,
        leaf: TableFrame,
        iova: u64,
        end: u64,
        pages: Pages<'_>,
        rights: Rights,
    ) -> bool {
        let format = self.format();
        let first = index(iova, 3);
        let count = ((end - iova) / PAGE_SIZE) as usize;
        let Some(words) = self.memory.words_mut(leaf) else {
            return false;
        };
        // In one table: first + count <= ENTRIES_PER_TABLE.
        let Some(run) = words.get_mut(first..first + count) else {
            return false;
        };
        if !all_zero(run) {
            return false;
        }
        write_run(run, format, pages, rights);
        self.memory.sync(leaf, first, count);
        true
    }

    /// `AlreadyMapped` (the first mapped page) unless `[iova, end)` of the
    /// level-3 table `leaf` is unmapped.
    fn check_unmapped(&self, leaf: TableFrame, iova: u64, end: u64) -> Result<(), Error> {
        match self.first_in_leaf(leaf, iova, end, true)? {
            Some(mapped) => Err(Error::AlreadyMapped { iova: mapped }),
            None => Ok(()),
        }
    }

    /// Adds the tables below `table`, the level-`depth - 1` table on the
    /// walk of `iova` whose entry for it is absent, down to level 3; each is
    /// zeroed before the entry linking it is written. Returns the level-3
    /// table. On error the tables linked so far stay (empty) for the caller
    /// to prune.
    fn extend_path(
        &mut self,
        mut table: TableFrame,
        depth: usize,
        iova: u64,
    ) -> Result<TableFrame, Error> {
        for level in depth - 1..LEVELS - 1 {
            let slot = index(iova, level);
            let new = self.alloc_table(iova)?;
            let entry = self.format().table_entry(new.ipa());
            if let Err(error) = self.write(table, slot, entry) {
                // Never linked, so never visible: give it back now.
                self.pool.free(new);
                self.stats.tables_live -= 1;
                self.stats.tables_released += 1;
                return Err(error);
            }
            self.memory.sync(table, slot, 1);
            table = new;
        }
        Ok(table)
    }

    /// Takes a frame from the pool, checks it and zeroes it.
    fn alloc_table(&mut self, iova: u64) -> Result<TableFrame, Error> {
        let frame = self.pool.alloc().ok_or(Error::OutOfFrames { iova })?;
        let fits = frame
            .ipa()
            .checked_add(PAGE_SIZE)
            .is_some_and(|end| end <= self.config.ipa_limit());
        if !fits {
            self.pool.free(frame);
            return Err(Error::BadFrame { ipa: frame.ipa() });
        }
        if let Some(words) = self.memory.words_mut(frame) {
            // The frame is not linked yet: no walker sees it being zeroed.
            // Eight words at a time, each group followed by a compiler
            // fence (no instruction: it only keeps the compiler from
            // merging the groups) so the stores stay inline instead of
            // becoming a `memset` call (a byte loop in the bare-metal
            // runtime: 4,671 instructions for one table on aarch64,
            // measured; larger groups turn back into `memset` calls). The
            // fence replaced `black_box` on each group, which cost a store
            // and a load through the stack per group: 576 -> 448 per table.
            let (groups, _) = words.as_chunks_mut::<8>();
            for group in groups {
                *group = [0; 8];
                compiler_fence(Ordering::SeqCst);
            }
        } else {
            for slot in 0..ENTRIES_PER_TABLE {
                if let Err(error) = self.write(frame, slot, 0) {
                    self.pool.free(frame);
                    return Err(error);
                }
            }
        }
        self.memory.sync(frame, 0, ENTRIES_PER_TABLE);
        self.stats.tables_allocated += 1;
        self.stats.tables_live += 1;
        Ok(frame)
    }

    /// The level-3 table on the walk of `iova`, adding missing tables.
    fn leaf_table_or_allocate(&mut self, iova: u64) -> Result<TableFrame, Error> {
        let (frames, depth) = self.path(iova)?;
        if depth == LEVELS {
            return Ok(frames[LEVELS - 1]);
        }
        self.extend_path(frames[depth - 1], depth, iova)
    }

    /// Writes page entries into `leaf` from `*cursor` up to `end` or the end
    /// of the leaf table, advancing `*cursor` past each page written.
    fn fill(
        &mut self,
        leaf: TableFrame,
        cursor: &mut u64,
        end: u64,
        pages: Pages<'_>,
        rights: Rights,
    ) -> Result<(), Error> {
        let stop = next_boundary(*cursor, LEVELS - 2).min(end);
        let first_slot = index(*cursor, 3);
        let format = self.format();
        let count = ((stop - *cursor) / PAGE_SIZE) as usize;
        if let Some(words) = self.memory.words_mut(leaf) {
            // The whole run at once, one store per entry.
            write_run(
                &mut words[first_slot..first_slot + count],
                format,
                pages,
                rights,
            );
            *cursor = stop;
            self.memory.sync(leaf, first_slot, count);
            return Ok(());
        }
        let mut written = 0;
        let mut result = Ok(());
        while written < count {
            let entry = self.format().page_entry(pages.ipa(written), rights);
            result = self.write(leaf, first_slot + written, entry);
            if result.is_err() {
                break;
            }
            written += 1;
            *cursor += PAGE_SIZE;
        }
        self.memory.sync(leaf, first_slot, written);
        result
    }

    /// Undoes a `map` that failed at `failed`: unmaps `[iova, failed)` and
    /// prunes the empty tables it may have added on the walk of `failed`.
    /// Best effort: a failing [`TableMemory`] can stop it.
    fn roll_back_map(&mut self, iova: u64, failed: u64) {
        let live_before = self.stats.tables_live;
        let _ = self.clear_range(iova, failed);
        if let Ok((frames, depth)) = self.path(failed) {
            let _ = self.prune(&frames, depth, failed);
        }
        // Pages were written (and possibly walked) or tables linked: the
        // caches must forget them before the frames are reused.
        if failed > iova || self.stats.tables_live != live_before {
            self.batch.record(InvalidationRange {
                iova,
                len: failed - iova + PAGE_SIZE,
                leaf_only: false,
            });
        }
    }

    /// Clears every page entry in `[iova, end)` and prunes tables left
    /// empty; absent subtrees are skipped.
    fn clear_range(&mut self, iova: u64, end: u64) -> Result<(), Error> {
        let mut cursor = iova;
        while cursor < end {
            let (frames, depth) = self.path(cursor)?;
            if depth < LEVELS {
                cursor = next_boundary(cursor, depth - 1);
                continue;
            }
            let leaf = frames[LEVELS - 1];
            let stop = next_boundary(cursor, LEVELS - 2).min(end);
            let first_slot = index(cursor, 3);
            let mut cleared = 0;
            let inside = cursor;
            while cursor < stop {
                if let Err(error) = self.write(leaf, index(cursor, 3), 0) {
                    self.memory.sync(leaf, first_slot, cleared);
                    return Err(error);
                }
                cleared += 1;
                cursor += PAGE_SIZE;
            }
            self.memory.sync(leaf, first_slot, cleared);
            self.prune(&frames, depth, inside)?;
        }
        Ok(())
    }

    /// Unlinks and retires the tables on a walk of `iova` that have no
    /// present entry, deepest first; stops at the first non-empty one and
    /// never touches the root.
    fn prune(
        &mut self,
        frames: &[TableFrame; LEVELS],
        depth: usize,
        iova: u64,
    ) -> Result<(), Error> {
        for level in (1..depth).rev() {
            if !self.is_empty_table(frames[level], level)? {
                break;
            }
            let parent = frames[level - 1];
            let slot = index(iova, level - 1);
            self.write(parent, slot, 0)?;
            self.memory.sync(parent, slot, 1);
            self.retire(frames[level])?;
        }
        Ok(())
    }

    /// Puts an unlinked, empty frame on the retired list.
    fn retire(&mut self, frame: TableFrame) -> Result<(), Error> {
        // It may be the hinted table; forgetting every time is simplest.
        self.leaf_hint = None;
        let link = match self.retired_head {
            Some(next) => next.ipa() | RETIRED_LINK_TAG,
            None => 0,
        };
        self.stats.tables_live -= 1;
        self.write(frame, 0, link)?;
        self.retired_head = Some(frame);
        self.stats.tables_retired += 1;
        Ok(())
    }

    /// Gives every retired frame back to the pool, zeroed.
    fn release_retired(&mut self) -> Result<(), Error> {
        while let Some(frame) = self.retired_head {
            let word = self.read(frame, 0)?;
            let next = if word == 0 {
                None
            } else {
                let corrupt = Error::RetiredListCorrupt {
                    ipa: frame.ipa(),
                    word,
                };
                if word & RETIRED_LINK_TAG == 0 {
                    return Err(corrupt);
                }
                Some(TableFrame::new(word & !RETIRED_LINK_TAG).ok_or(corrupt)?)
            };
            self.write(frame, 0, 0)?;
            self.retired_head = next;
            self.pool.free(frame);
            self.stats.tables_retired -= 1;
            self.stats.tables_released += 1;
        }
        Ok(())
    }

    /// Depth-first walk of the whole tree: `on_table(level, frame)` for each
    /// linked table, `on_page(iova, translation)` for each mapped page.
    fn walk(
        &self,
        on_table: &mut dyn FnMut(usize, TableFrame),
        on_page: &mut dyn FnMut(u64, Translation),
    ) -> Result<(), Error> {
        on_table(0, self.root);
        for slot0 in 0..ENTRIES_PER_TABLE {
            let base0 = (slot0 as u64) << level_shift(0);
            let Some(table1) = self.child(self.root, 0, slot0, base0)? else {
                continue;
            };
            on_table(1, table1);
            for slot1 in 0..ENTRIES_PER_TABLE {
                let base1 = base0 | (slot1 as u64) << level_shift(1);
                let Some(table2) = self.child(table1, 1, slot1, base1)? else {
                    continue;
                };
                on_table(2, table2);
                for slot2 in 0..ENTRIES_PER_TABLE {
                    let base2 = base1 | (slot2 as u64) << level_shift(2);
                    let Some(table3) = self.child(table2, 2, slot2, base2)? else {
                        continue;
                    };
                    on_table(3, table3);
                    for slot3 in 0..ENTRIES_PER_TABLE {
                        let iova = base2 | (slot3 as u64) << level_shift(3);
                        let entry = self.read(table3, slot3)?;
                        match self.format().decode(3, entry) {
                            Entry::Absent => {}
                            Entry::Page { ipa, rights } => {
                                on_page(iova, Translation { ipa, rights })
                            }
                            Entry::Table { .. } | Entry::Unexpected => {
                                return Err(Error::UnexpectedEntry {
                                    iova,
                                    level: 3,
                                    entry,
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
