//! Shadow nesting for VT-d units without ECAP.NEST (QEMU 10.0.2): the
//! user's first-stage table (IA-32e format, rooted at an IPA) is composed
//! with the kernel's second stage into a kernel-owned second-stage table
//! that the device actually uses (DESIGN.md, "VT-d without nesting").
//!
//! [`shadow_range`] walks the first stage exactly as nested hardware would
//! (VT-d 9.7 entries; every table fetch and the output translated by the
//! second stage, which must allow reads of the tables), and for each 4 KiB
//! page of the range writes `IOVA -> PA` with rights = first-stage rights
//! AND second-stage rights, or removes the shadow entry. The user's tables
//! are never trusted: an address the second stage does not map is simply
//! not shadowed. Work is bounded by the page count the caller allows.
//! Afterwards the caller invalidates the range on the shadow's domain.
//!
//! Revoking an IPA from the second stage: [`shadow_range_recording`]
//! records, per 2 MiB region of IOVAs, the IPAs the composition walked
//! through (the first stage's tables below the root, and the 2 MiB IPA
//! regions its leaves pointed into) in the nest's [`Dependencies`];
//! [`Dependencies::drop_dependents`] then removes exactly the shadow
//! entries that depended on an unmapped IPA: every entry composed through
//! a table page at that IPA, and every entry of a region whose leaves
//! pointed near it that translates into the unmapped frame. The caller
//! then invalidates the shadow's domain. Entries that did not depend on
//! the IPA keep translating; a stage-2 unmap no longer costs the driver
//! its whole composed shadow.
//!
//! The invariant [`Dependencies`] keeps: every present shadow leaf lies in
//! the entry range of a record of its region whose walk (table IPAs) is
//! the one it was composed through and whose target range holds the IPA
//! it was composed from, unless the record list overflowed (then any
//! stage-2 unmap clears the whole shadow, as before).

use super::tables::SecondStageFormat;
use crate::pagetable::{Covering, MapError, PageTable, PageTableFormat, Perms};
use crate::{FrameAllocator, PhysMem, bit};
use core::fmt;

/// Why a shadow update was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowError {
    /// The range is not page aligned, is in the upper (non-canonical for
    /// the shadow) half, or exceeds the page budget.
    BadRange,
    /// Updating the shadow table failed.
    Map(MapError),
}

impl fmt::Display for ShadowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRange => write!(f, "shadow: range misaligned, too large or above 2^47"),
            Self::Map(e) => write!(f, "shadow: {e}"),
        }
    }
}

/// What one update did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShadowStats {
    /// Pages examined.
    pub pages: u64,
    /// Shadow entries written (pages that translate).
    pub mapped: u64,
}

/// The shadow's entry for a 4 KiB page: stage 2's page address.
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;

/// No table at this level of a recorded walk (it ended in a large page).
const NO_TABLE: u64 = u64::MAX;

/// The first-stage tables a nested walk of one 2 MiB region of IOVAs read
/// below the root: the IPAs of its level-3, level-2 and last-level tables
/// ([`NO_TABLE`] below a large page).
type Chain = [u64; 3];

/// What a walk of the upper levels read: the root's physical page, and
/// the tables below it ([`Chain`]) with their physical pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Walked {
    root: u64,
    chain: Chain,
    pages: Chain,
}

/// Stage 2's translations of table IPAs a walk may take instead of
/// looking them up: `Walked::root` for the first stage's root, and a
/// recorded chain's pages for its IPAs. Sound because a stage-2 unmap of
/// any of them drops the record that holds it ([`Dependencies`]), and
/// stage 2 maps nothing anew without unmapping it first.
#[derive(Clone, Copy, Debug)]
struct Known {
    root: u64,
    chain: Chain,
    pages: Chain,
}

impl Known {
    const NOTHING: Known = Known {
        root: NO_TABLE,
        chain: [NO_TABLE; 3],
        pages: [NO_TABLE; 3],
    };
}

/// Where a nested walk of the upper first-stage levels ends for one 2 MiB
/// region of IOVAs: every page of the region shares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upper {
    /// The walk faults for the whole region.
    Fault,
    /// A last-level table (physical address), writable so far, and the
    /// tables walked to it.
    Table {
        table: u64,
        writable: bool,
        walked: Walked,
    },
    /// A large page covering the region: its IPA and mask, writable so
    /// far, and the tables walked to it.
    Large {
        ipa: u64,
        mask: u64,
        writable: bool,
        walked: Walked,
    },
}

impl Upper {
    fn walked(self) -> Option<Walked> {
        match self {
            Upper::Fault => None,
            Upper::Table { walked, .. } | Upper::Large { walked, .. } => Some(walked),
        }
    }
}

/// Walks levels 4..2 of the first stage for `iova` (every table fetch
/// translated by `second`, which must allow reads; translations `known`
/// holds are taken from it).
fn walk_upper(
    mem: &impl PhysMem,
    first_stage_root: u64,
    second: &PageTable<SecondStageFormat>,
    (iova, allow_1g): (u64, bool),
    known: Known,
) -> Upper {
    let readable_table = |ipa: u64| match second.lookup(mem, ipa) {
        Some((pa, perms)) if perms.read => Some(pa & !0xfff),
        _ => None,
    };
    let root = match known.root {
        NO_TABLE => readable_table(first_stage_root),
        root => Some(root),
    };
    let Some(mut table) = root else {
        return Upper::Fault;
    };
    let mut writable = true;
    let mut walked = Walked {
        root: table,
        chain: [NO_TABLE; 3],
        pages: [NO_TABLE; 3],
    };
    for level in (2..=4u32).rev() {
        let index = (iova >> (12 + 9 * (level - 1))) & 0x1ff;
        let entry = mem.read_u64(table + 8 * index);
        if !bit(entry, 0) || !bit(entry, 2) {
            return Upper::Fault;
        }
        writable &= bit(entry, 1);
        let next = entry & ADDRESS;
        if bit(entry, 7) {
            if level == 4 || (level == 3 && !allow_1g) {
                return Upper::Fault;
            }
            let mask = (1u64 << (12 + 9 * (level - 1))) - 1;
            if next & mask != 0 {
                return Upper::Fault;
            }
            return Upper::Large {
                ipa: next,
                mask,
                writable,
                walked,
            };
        }
        let step = 4 - level as usize;
        let page = if known.chain[step] == next {
            Some(known.pages[step])
        } else {
            readable_table(next)
        };
        match page {
            Some(pa) => table = pa,
            None => return Upper::Fault,
        }
        walked.chain[step] = next;
        walked.pages[step] = table;
    }
    Upper::Table {
        table,
        writable,
        walked,
    }
}

/// The first stage's leaf for `iova` below `upper`: the IPA of its page
/// and whether every level allowed writes, or `None` when it would fault.
fn first_stage_leaf(mem: &impl PhysMem, upper: Upper, iova: u64) -> Option<(u64, bool)> {
    match upper {
        Upper::Fault => None,
        Upper::Large {
            ipa,
            mask,
            writable,
            ..
        } => Some((ipa | (iova & mask & !0xfff), writable)),
        Upper::Table {
            table, writable, ..
        } => {
            let entry = mem.read_u64(table + 8 * ((iova >> 12) & 0x1ff));
            if !bit(entry, 0) || !bit(entry, 2) {
                return None;
            }
            Some((entry & ADDRESS, writable && bit(entry, 1)))
        }
    }
}

/// The composed page and rights: stage 2's page, readable as stage 2
/// says, writable only if both stages allow it.
fn combine(pa: u64, second: Perms, writable: bool) -> Option<(u64, Perms)> {
    let perms = Perms {
        read: second.read,
        write: writable && second.write,
    };
    (perms.read || perms.write).then_some((pa & !0xfff, perms))
}

/// The 2 MiB IPA regions (`ipa >> 21`, inclusive) leaves pointed into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Targets {
    low: u64,
    high: u64,
}

impl Targets {
    const NONE: Targets = Targets {
        low: u64::MAX,
        high: 0,
    };

    fn add(&mut self, region: u64) {
        self.low = self.low.min(region);
        self.high = self.high.max(region);
    }

    fn merge(&mut self, other: Targets) {
        self.low = self.low.min(other.low);
        self.high = self.high.max(other.high);
    }

    fn meets(self, low: u64, high: u64) -> bool {
        self.low <= high && low <= self.high
    }
}

/// Stage 2's covering of the 2 MiB region of IPAs `ipa` is in, walked
/// once per region (`region` keeps the last one); a new region is added
/// to `targets`.
#[inline(always)]
fn covering_of(
    mem: &impl PhysMem,
    second: &PageTable<SecondStageFormat>,
    region: &mut Option<(u64, Covering)>,
    targets: &mut Targets,
    ipa: u64,
) -> Covering {
    match *region {
        Some((r, covering)) if r == ipa >> 21 => covering,
        _ => {
            let covering = walk_covering(mem, second, ipa);
            *region = Some((ipa >> 21, covering));
            targets.add(ipa >> 21);
            covering
        }
    }
}

/// [`covering_of`]'s walk, for a region not walked last: out of the
/// composing loop.
#[cold]
#[inline(never)]
fn walk_covering(mem: &impl PhysMem, second: &PageTable<SecondStageFormat>, ipa: u64) -> Covering {
    second.covering(mem, ipa)
}

/// Finishes the walk of `iova` below `upper`: the physical page and rights,
/// or `None` when it would fault.
fn walk_lower(
    mem: &impl PhysMem,
    second: &PageTable<SecondStageFormat>,
    upper: Upper,
    iova: u64,
) -> Option<(u64, Perms)> {
    let (ipa, writable) = first_stage_leaf(mem, upper, iova)?;
    let (pa, perms) = second.lookup(mem, ipa)?;
    combine(pa, perms, writable)
}

/// Composes one 4 KiB page: the physical page and rights a nested walk
/// would give `iova`, or `None` when it would fault.
pub fn compose_page(
    mem: &impl PhysMem,
    first_stage_root: u64,
    second: &PageTable<SecondStageFormat>,
    iova: u64,
    allow_1g: bool,
) -> Option<(u64, Perms)> {
    let upper = walk_upper(
        mem,
        first_stage_root,
        second,
        (iova, allow_1g),
        Known::NOTHING,
    );
    walk_lower(mem, second, upper, iova)
}

/// Re-shadows the pages `iovas` (within one 2 MiB region) whose
/// first-stage entries are in the last-level table `first` (`writable`:
/// whether the upper levels allow writes) into the shadow's last-level
/// table `shadow`: what [`shadow_range`]'s general loop does, with the
/// walk's outcome fixed for the region. Where stage 2 maps the leaf's IPA
/// with a 4 KiB leaf (the usual case) the composed entry is stage 2's
/// entry with its write right masked by stage 1's: the same bits
/// `SecondStageFormat::leaf_entry` writes, without decoding them.
///
/// Runs of present leaves into the IPA region stage 2 was last walked
/// for go through [`Leaves::run`] (the common case: one buffer's pages);
/// every other entry (not present, another IPA region, stage 2 in the
/// general form) through the general step here, which walks stage 2 for
/// a new IPA region.
#[allow(clippy::too_many_arguments)]
fn shadow_region(
    mem: &impl PhysMem,
    second: &PageTable<SecondStageFormat>,
    second_region: &mut Option<(u64, Covering)>,
    targets: &mut Targets,
    (first, writable): (u64, bool),
    (format, shadow): (SecondStageFormat, u64),
    iovas: core::ops::Range<u64>,
    stats: &mut ShadowStats,
) {
    // Stage 1's write right (bit 1) survives only if the upper levels
    // allow writes too.
    let upper_write = if writable { 0b10 } else { 0 };
    // Stage 2 over the region of IPAs last looked up, in the loop's form.
    let mut key = second_region.map_or(u64::MAX, |(r, _)| r);
    let mut leaves = second_region.map_or(Leaves::NOTHING, |(r, c)| Leaves::of(c, r));
    let mut mapped = 0;
    let first_index = (iovas.start >> 12) & 0x1ff;
    let end = first_index + ((iovas.end - iovas.start) >> 12);
    let mut index = first_index;
    while index < end {
        if key != u64::MAX {
            index = leaves.run(
                mem,
                (first, shadow),
                index..end,
                key,
                upper_write,
                &mut mapped,
            );
            if index == end {
                break;
            }
        }
        let entry = mem.read_u64(first + 8 * index);
        // Present (bit 0) and user (bit 2), as `first_stage_leaf` asks.
        let new = if entry & 0b101 == 0b101 {
            let ipa = entry & ADDRESS;
            if ipa >> 21 != key {
                key = ipa >> 21;
                leaves = Leaves::walk(mem, second, second_region, ipa);
                targets.add(key);
            }
            // Stage 2's entry for the page (address, read and write).
            let leaf = if leaves.table != 0 {
                mem.read_u64(leaves.table + 8 * ((ipa >> 12) & 0x1ff))
            } else if !leaves.walk {
                leaves.base | (ipa & 0x1f_f000)
            } else {
                walk_leaf(mem, second, *second_region, ipa, format)
            };
            // Its page and read right; its write right where stage 1
            // allows writes. No right left: none.
            let composed = leaf & (ADDRESS | 0b01 | (entry & upper_write));
            if composed & 0b11 == 0 { 0 } else { composed }
        } else {
            0
        };
        // Written whether or not it changed: a store is cheaper than the
        // load and compare, and the unit sees the same entry either way.
        mem.write_u64(shadow + 8 * index, new);
        mapped += u64::from(new != 0);
        index += 1;
    }
    stats.mapped += mapped;
}

/// Stage 2's entry for `ipa` by the general lookup in the region
/// `second_region` holds (a leaf smaller than it): address and rights.
#[cold]
#[inline(never)]
fn walk_leaf(
    mem: &impl PhysMem,
    second: &PageTable<SecondStageFormat>,
    second_region: Option<(u64, Covering)>,
    ipa: u64,
    format: SecondStageFormat,
) -> u64 {
    let covering = second_region.map_or(Covering::Nothing, |(_, c)| c);
    second
        .lookup_in(mem, covering, ipa)
        .map_or(0, |(pa, perms)| format.leaf_entry(pa & !0xfff, 1, perms))
}

/// Stage 2 over one 2 MiB region of IPAs, as the composing loop reads it:
/// a last-level table (its physical address, else 0), or one entry for
/// every page (the address of the region's first page and the rights of
/// the leaf covering it; 0 where nothing is mapped), or `walk`: the
/// general lookup.
#[derive(Clone, Copy)]
struct Leaves {
    table: u64,
    base: u64,
    walk: bool,
}

impl Leaves {
    const NOTHING: Leaves = Leaves {
        table: 0,
        base: 0,
        walk: false,
    };

    /// `covering` of the IPA region `region` (`ipa >> 21`).
    fn of(covering: Covering, region: u64) -> Leaves {
        let start = region << 21;
        match covering {
            Covering::Nothing => Leaves::NOTHING,
            Covering::Table(table) => Leaves {
                table,
                ..Leaves::NOTHING
            },
            Covering::Leaf {
                input,
                output,
                mask,
                perms,
            } if mask >= 0x1f_ffff && start & !mask == input => Leaves {
                base: ((output | (start & mask)) & ADDRESS)
                    | u64::from(perms.read)
                    | u64::from(perms.write) << 1,
                ..Leaves::NOTHING
            },
            Covering::Leaf { .. } => Leaves {
                walk: true,
                ..Leaves::NOTHING
            },
        }
    }

    /// The general step of [`shadow_region`] for each entry of `first`
    /// from `indices.start` on, while the entry is a present user leaf
    /// into the IPA region `key` and stage 2 holds it by its last-level
    /// table or by one readable leaf: the same entry the general step
    /// writes, in fewer instructions (one mask selects the run, no
    /// decisions per entry). Returns the first index it left.
    #[inline(always)]
    fn run(
        self,
        mem: &impl PhysMem,
        (first, shadow): (u64, u64),
        indices: core::ops::Range<u64>,
        key: u64,
        upper_write: u64,
        mapped: &mut u64,
    ) -> u64 {
        // Present, user, and the leaf's IPA in region `key`.
        let select = (ADDRESS & !0x1f_ffff) | 0b101;
        let wanted = (key << 21) | 0b101;
        let mut index = indices.start;
        if self.table != 0 {
            while index < indices.end {
                let entry = mem.read_u64(first + 8 * index);
                if entry & select != wanted {
                    break;
                }
                let leaf = mem.read_u64(self.table + 8 * ((entry >> 12) & 0x1ff));
                let composed = leaf & (ADDRESS | 0b01 | (entry & upper_write));
                let new = if composed & 0b11 == 0 { 0 } else { composed };
                mem.write_u64(shadow + 8 * index, new);
                *mapped += u64::from(new != 0);
                index += 1;
            }
        } else if !self.walk && self.base & 0b01 != 0 {
            // Readable, so every entry of the run is present; writable
            // where stage 2, the upper levels and the leaf all allow it.
            let base = self.base & (ADDRESS | 0b01 | upper_write);
            while index < indices.end {
                let entry = mem.read_u64(first + 8 * index);
                if entry & select != wanted {
                    break;
                }
                let new = (base | (entry & 0x1f_f000)) & (entry | !0b10);
                mem.write_u64(shadow + 8 * index, new);
                index += 1;
            }
            *mapped += index - indices.start;
        }
        index
    }

    /// Walks stage 2 for the region of `ipa` (recorded in `second_region`
    /// for the loops that follow): out of the composing loop.
    #[cold]
    #[inline(never)]
    fn walk(
        mem: &impl PhysMem,
        second: &PageTable<SecondStageFormat>,
        second_region: &mut Option<(u64, Covering)>,
        ipa: u64,
    ) -> Leaves {
        let covering = second.covering(mem, ipa);
        *second_region = Some((ipa >> 21, covering));
        Leaves::of(covering, ipa >> 21)
    }
}

/// Re-shadows `[start, start + length)`: every page gets the composed
/// translation or none. Refuses more than `max_pages` pages. Records
/// nothing: for a shadow that must survive stage-2 unmaps in part, use
/// [`shadow_range_recording`].
#[allow(clippy::too_many_arguments)]
pub fn shadow_range(
    mem: &impl PhysMem,
    alloc: &mut impl FrameAllocator,
    first_stage_root: u64,
    second: &PageTable<SecondStageFormat>,
    shadow: &PageTable<SecondStageFormat>,
    start: u64,
    length: u64,
    max_pages: u64,
    allow_1g: bool,
) -> Result<ShadowStats, ShadowError> {
    shadow_range_recording(
        mem,
        alloc,
        (first_stage_root, second, shadow),
        start,
        length,
        max_pages,
        allow_1g,
        &mut Dependencies::new(),
    )
}

/// The first stage's root IPA, the second stage, and the shadow.
pub type Tables<'a> = (
    u64,
    &'a PageTable<SecondStageFormat>,
    &'a PageTable<SecondStageFormat>,
);

/// [`shadow_range`] for the shadow of the first stage at `first_stage_root`
/// under `second`, recording in `dependencies` the IPAs each composed
/// entry depends on. On an error some pages may be composed without a
/// record: `dependencies` then counts as overflowed (the next stage-2
/// unmap clears the whole shadow).
#[allow(clippy::too_many_arguments)]
pub fn shadow_range_recording(
    mem: &impl PhysMem,
    alloc: &mut impl FrameAllocator,
    (first_stage_root, second, shadow): Tables<'_>,
    start: u64,
    length: u64,
    max_pages: u64,
    allow_1g: bool,
    dependencies: &mut Dependencies,
) -> Result<ShadowStats, ShadowError> {
    let pages = length / 4096;
    if start & 0xfff != 0
        || length & 0xfff != 0
        || pages > max_pages
        || start.checked_add(length).is_none_or(|end| end > 1 << 47)
    {
        return Err(ShadowError::BadRange);
    }
    if dependencies.root != first_stage_root {
        // Recorded for another root (or never): nothing recorded is about
        // this one.
        if dependencies.root != NO_TABLE {
            dependencies.overflowed = true;
        }
        dependencies.root = first_stage_root;
        dependencies.root_page = NO_TABLE;
    }
    let mut stats = ShadowStats {
        pages,
        ..ShadowStats::default()
    };
    let composed = compose(
        mem,
        alloc,
        (first_stage_root, second, shadow),
        (start, start + length),
        allow_1g,
        dependencies,
        &mut stats,
    );
    if composed.is_err() {
        dependencies.overflowed = true;
    }
    composed.map(|()| stats)
}

/// The loop of [`shadow_range_recording`] over `[start, end)`.
fn compose(
    mem: &impl PhysMem,
    alloc: &mut impl FrameAllocator,
    (first_stage_root, second, shadow): Tables<'_>,
    (start, end): (u64, u64),
    allow_1g: bool,
    dependencies: &mut Dependencies,
    stats: &mut ShadowStats,
) -> Result<(), ShadowError> {
    // Each table level is walked once per 2 MiB region: the first stage's
    // upper levels and the shadow's per region of IOVAs, the second
    // stage's per region of IPAs; within a region each page is one entry
    // of a last-level table.
    let mut second_region: Option<(u64, Covering)> = None;
    let format = *shadow.format();
    let mut iova = start;
    while iova < end {
        let region_start = iova;
        let region_end = (((iova >> 21) + 1) << 21).min(end);
        let (known, recorded_table) = dependencies.known(iova >> 21);
        let walked = walk_upper(mem, first_stage_root, second, (iova, allow_1g), known);
        let mut table = match recorded_table {
            Some(table) => Some(table),
            None => shadow
                .find_leaf_table(mem, iova)
                .map_err(ShadowError::Map)?,
        };
        if walked == Upper::Fault && table.is_none() {
            // Nothing to shadow, nothing shadowed.
            iova = region_end;
            continue;
        }
        // The region's leaves point into the IPA region stage 2's walk
        // is cached for, if they use it.
        let mut targets = Targets::NONE;
        if let Some((r, _)) = second_region {
            targets.add(r);
        }
        if let (
            Upper::Table {
                table: first,
                writable,
                ..
            },
            Some(page_table),
        ) = (walked, table)
        {
            // The usual case, both last-level tables present: one entry
            // of each per page, no decisions left for the region.
            shadow_region(
                mem,
                second,
                &mut second_region,
                &mut targets,
                (first, writable),
                (format, page_table),
                iova..region_end,
                stats,
            );
            iova = region_end;
        } else {
            while iova < region_end {
                let composed = first_stage_leaf(mem, walked, iova).and_then(|(ipa, writable)| {
                    let covering = covering_of(mem, second, &mut second_region, &mut targets, ipa);
                    let (pa, perms) = second.lookup_in(mem, covering, ipa)?;
                    combine(pa, perms, writable)
                });
                let page_table = match (table, composed) {
                    (Some(page_table), _) => page_table,
                    // Nothing shadowed in this region, nothing to shadow here.
                    (None, None) => {
                        iova += 4096;
                        continue;
                    }
                    (None, Some(_)) => {
                        let new = shadow
                            .leaf_table_or_new(mem, alloc, iova)
                            .map_err(ShadowError::Map)?;
                        table = Some(new);
                        new
                    }
                };
                let slot = page_table + 8 * ((iova >> 12) & 0x1ff);
                let new = composed.map_or(0, |(pa, perms)| format.leaf_entry(pa, 1, perms));
                mem.write_u64(slot, new);
                stats.mapped += u64::from(composed.is_some());
                iova += 4096;
            }
        }
        if let Some(page_table) = table {
            let entries = (
                ((region_start >> 12) & 0x1ff) as u16,
                (((region_end - 1) >> 12) & 0x1ff) as u16,
            );
            dependencies.record(
                region_start >> 21,
                page_table,
                walked.walked(),
                entries,
                targets,
            );
        }
    }
    Ok(())
}

/// Most 2 MiB regions of IOVAs (walks, per region) one shadow's
/// [`Dependencies`] records; beyond that it overflows, and a stage-2
/// unmap clears the whole shadow.
pub const DEPENDENCY_REGIONS: usize = 16;

/// What a group of a shadow's entries depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Region {
    /// The region of IOVAs (`iova >> 21`).
    iova_region: u64,
    /// The shadow's last-level table for it (physical).
    shadow_table: u64,
    /// The first-stage tables the walk read below the root, and stage 2's
    /// pages for them (what [`Known`] hands the next walk).
    chain: Chain,
    pages: Chain,
    /// Where the leaves pointed (2 MiB IPA regions).
    targets: Targets,
    /// The entries of `shadow_table` composed through this walk, first
    /// and last index (inclusive).
    entries: (u16, u16),
}

const NO_REGION: Region = Region {
    iova_region: 0,
    shadow_table: 0,
    chain: [NO_TABLE; 3],
    pages: [NO_TABLE; 3],
    targets: Targets::NONE,
    entries: (0, 0),
};

/// The stage-2 IPAs one shadow's entries were composed through (module
/// docs): the first stage's root, and per region of IOVAs the tables
/// walked and the IPA regions the leaves pointed into. Kept by the
/// caller with the shadow, updated by [`shadow_range_recording`], used by
/// [`Dependencies::drop_dependents`] on every stage-2 unmap.
#[derive(Clone, Debug)]
pub struct Dependencies {
    /// The first stage's root IPA ([`NO_TABLE`]: nothing composed yet).
    root: u64,
    /// Stage 2's page for it, once a walk read it ([`Known`]).
    root_page: u64,
    regions: [Region; DEPENDENCY_REGIONS],
    len: usize,
    /// Some entries may lack a record: any stage-2 unmap clears all.
    overflowed: bool,
    /// Every table IPA a record names lies in `[tables.0, tables.1)`,
    /// every leaf target in `[targets.0, targets.1)` (grown as records
    /// are made, kept as they go): an unmap outside both and the root
    /// drops nothing, found without visiting the records.
    tables: (u64, u64),
    targets: (u64, u64),
}

impl Default for Dependencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Dependencies {
    /// Nothing composed.
    pub const fn new() -> Self {
        Dependencies {
            root: NO_TABLE,
            root_page: NO_TABLE,
            regions: [NO_REGION; DEPENDENCY_REGIONS],
            len: 0,
            overflowed: false,
            tables: (u64::MAX, 0),
            targets: (u64::MAX, 0),
        }
    }

    /// Whether nothing is recorded: no shadow entry depends on anything
    /// (the shadow holds no leaves) and no stage-2 translation is kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0 && !self.overflowed && self.root_page == NO_TABLE
    }

    /// What a walk for the IOVA region `iova_region` may take from the
    /// records ([`Known`]), and the shadow's last-level table for it.
    fn known(&self, iova_region: u64) -> (Known, Option<u64>) {
        let mut known = Known {
            root: self.root_page,
            ..Known::NOTHING
        };
        let region = self.regions[..self.len]
            .iter()
            .find(|r| r.iova_region == iova_region);
        if let Some(r) = region {
            known.chain = r.chain;
            known.pages = r.pages;
        }
        (known, region.map(|r| r.shadow_table))
    }

    /// Whether an unmap of `[ipa, ipa + length)` may drop anything: the
    /// check [`Dependencies::drop_dependents`] starts with, cheap enough
    /// for every stage-2 unmap of a space with shadows.
    #[inline]
    pub fn touches(&self, ipa: u64, length: u64) -> bool {
        let end = ipa.saturating_add(length);
        !self.is_empty()
            && length != 0
            && (self.overflowed
                || (ipa < self.tables.1 && self.tables.0 < end)
                || (ipa < self.targets.1 && self.targets.0 < end)
                || (ipa..end).contains(&self.root))
    }

    /// The smallest range of IPAs `[start, end)` holding every IPA an
    /// unmap of which [`Dependencies::touches`] answers yes for (empty,
    /// `start >= end`, when nothing is recorded; everything when the
    /// records overflowed): what a caller keeps as a summary of several
    /// shadows, so a stage-2 unmap away from all of them looks at none.
    pub fn span(&self) -> (u64, u64) {
        if self.is_empty() {
            return (u64::MAX, 0);
        }
        if self.overflowed {
            return (0, u64::MAX);
        }
        let mut span = (
            self.tables.0.min(self.targets.0),
            self.tables.1.max(self.targets.1),
        );
        if self.root != NO_TABLE {
            span = (span.0.min(self.root), span.1.max(self.root + 1));
        }
        span
    }

    /// Whether the records overflowed (or a composition failed midway):
    /// the next stage-2 unmap clears the whole shadow.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Entries `entries` of the shadow's table for `iova_region` were just
    /// composed through `walked` (`None`: the walk faulted, they were
    /// cleared) with leaves into `targets`.
    fn record(
        &mut self,
        iova_region: u64,
        shadow_table: u64,
        walked: Option<Walked>,
        entries: (u16, u16),
        targets: Targets,
    ) {
        let chain = walked.map(|w| w.chain);
        let mut merged = false;
        let mut i = 0;
        while i < self.len {
            let r = &mut self.regions[i];
            if r.iova_region != iova_region {
                i += 1;
                continue;
            }
            if chain.is_some_and(|c| c[0] == r.chain[0] && c[1] == r.chain[1] && c[2] == r.chain[2])
            {
                r.entries = (r.entries.0.min(entries.0), r.entries.1.max(entries.1));
                r.targets.merge(targets);
                merged = true;
            } else if entries.0 <= r.entries.0 && r.entries.1 <= entries.1 {
                // Every entry it covered was composed again just now.
                self.len -= 1;
                self.regions[i] = self.regions[self.len];
                continue;
            }
            i += 1;
        }
        let Some(walked) = walked else {
            return;
        };
        let chain = walked.chain;
        self.root_page = walked.root;
        // Grow the spans by the walk's tables and the leaves' targets.
        for table in chain.into_iter().filter(|&t| t != NO_TABLE) {
            self.tables = (self.tables.0.min(table), self.tables.1.max(table + 4096));
        }
        if targets.low <= targets.high {
            self.targets = (
                self.targets.0.min(targets.low << 21),
                self.targets.1.max((targets.high + 1) << 21),
            );
        }
        if merged {
            return;
        }
        if self.len == DEPENDENCY_REGIONS {
            self.overflowed = true;
            return;
        }
        self.regions[self.len] = Region {
            iova_region,
            shadow_table,
            chain,
            pages: walked.pages,
            targets,
            entries,
        };
        self.len += 1;
    }

    /// Stage 2 no longer maps `[ipa, ipa + length)`, which it mapped to
    /// `[pa, pa + length)`: removes from `shadow` every entry composed
    /// through a first-stage table in that range, and every entry of a
    /// region whose leaves pointed into it that translates into
    /// `[pa, pa + length)` (an entry composed from another IPA of the
    /// same frame goes too: it is recomposed at the driver's next
    /// `Invalidate`). Returns how many entries were removed; the caller
    /// invalidates the shadow's domain. Bounded by the records (16
    /// regions of 512 entries), or by the shadow's size when they
    /// overflowed.
    pub fn drop_dependents<F: PageTableFormat>(
        &mut self,
        mem: &impl PhysMem,
        shadow: &PageTable<F>,
        ipa: u64,
        length: u64,
        pa: u64,
    ) -> u64 {
        // (Not empty: the root's page may be kept even with no records.)
        if !self.touches(ipa, length) {
            return 0;
        }
        let end = ipa.saturating_add(length);
        let inside = |address: u64| (ipa..end).contains(&address);
        if self.overflowed {
            let removed = shadow.remove_leaves_to(mem, 0, u64::MAX);
            *self = Self::new();
            return removed;
        }
        let everything = inside(self.root);
        let (low, high) = (ipa >> 21, (end - 1) >> 21);
        let format = shadow.format();
        let mut removed = 0;
        let mut i = 0;
        while i < self.len {
            let r = self.regions[i];
            let through_table = everything || r.chain.iter().any(|&t| inside(t));
            if !through_table && !r.targets.meets(low, high) {
                i += 1;
                continue;
            }
            for index in u64::from(r.entries.0)..=u64::from(r.entries.1) {
                let slot = r.shadow_table + 8 * index;
                let entry = mem.read_u64(slot);
                if format.is_present(entry)
                    && (through_table || (pa..pa + length).contains(&format.address(entry)))
                {
                    mem.write_u64(slot, 0);
                    removed += 1;
                }
            }
            if through_table {
                self.len -= 1;
                self.regions[i] = self.regions[self.len];
            } else {
                i += 1;
            }
        }
        if everything {
            *self = Self::new();
        }
        removed
    }
}
