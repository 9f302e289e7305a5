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
//! Revoking a frame from the second stage: remove the shadow leaves that
//! point into it (`PageTable::remove_leaves_to`). If the frame may hold
//! the user's first-stage tables, every shadow entry may depend on it:
//! clear the shadow (`remove_leaves_to(0, u64::MAX)`) and let the user's
//! next invalidation repopulate it. Then invalidate the shadow's domain.

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
    /// Shadow entries written.
    pub mapped: u64,
    /// Of those, entries where there was none before.
    pub added: u64,
    /// Shadow entries removed.
    pub removed: u64,
}

/// Where a nested walk of the upper first-stage levels ends for one 2 MiB
/// region of IOVAs: every page of the region shares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upper {
    /// The walk faults for the whole region.
    Fault,
    /// A last-level table (physical address), writable so far.
    Table { table: u64, writable: bool },
    /// A large page covering the region: its IPA and mask, writable so far.
    Large { ipa: u64, mask: u64, writable: bool },
}

/// Walks levels 4..2 of the first stage for `iova` (every table fetch
/// translated by `second`, which must allow reads).
fn walk_upper(
    mem: &impl PhysMem,
    first_stage_root: u64,
    second: &PageTable<SecondStageFormat>,
    iova: u64,
    allow_1g: bool,
) -> Upper {
    let readable_table = |ipa: u64| match second.lookup(mem, ipa) {
        Some((pa, perms)) if perms.read => Some(pa & !0xfff),
        _ => None,
    };
    let Some(mut table) = readable_table(first_stage_root) else {
        return Upper::Fault;
    };
    let mut writable = true;
    for level in (2..=4u32).rev() {
        let index = (iova >> (12 + 9 * (level - 1))) & 0x1ff;
        let entry = mem.read_u64(table + 8 * index);
        if !bit(entry, 0) || !bit(entry, 2) {
            return Upper::Fault;
        }
        writable &= bit(entry, 1);
        let next = entry & 0x000f_ffff_ffff_f000;
        if level > 1 && bit(entry, 7) {
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
            };
        }
        match readable_table(next) {
            Some(pa) => table = pa,
            None => return Upper::Fault,
        }
    }
    Upper::Table { table, writable }
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
        } => Some((ipa | (iova & mask & !0xfff), writable)),
        Upper::Table { table, writable } => {
            let entry = mem.read_u64(table + 8 * ((iova >> 12) & 0x1ff));
            if !bit(entry, 0) || !bit(entry, 2) {
                return None;
            }
            Some((entry & 0x000f_ffff_ffff_f000, writable && bit(entry, 1)))
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

/// Stage 2's page and rights for `ipa`, walking its tables once per 2 MiB
/// region of IPAs (`region` keeps what covers the last one).
fn second_stage_in(
    mem: &impl PhysMem,
    second: &PageTable<SecondStageFormat>,
    region: &mut Option<(u64, Covering)>,
    ipa: u64,
) -> Option<(u64, Perms)> {
    let covering = match *region {
        Some((r, covering)) if r == ipa >> 21 => covering,
        _ => {
            let covering = second.covering(mem, ipa);
            *region = Some((ipa >> 21, covering));
            covering
        }
    };
    second.lookup_in(mem, covering, ipa)
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
    let upper = walk_upper(mem, first_stage_root, second, iova, allow_1g);
    walk_lower(mem, second, upper, iova)
}

/// Re-shadows the pages `iovas` (within one 2 MiB region) whose
/// first-stage entries are in the last-level table `first` (`writable`:
/// whether the upper levels allow writes) into the shadow's last-level
/// table `shadow` (in `format`): what [`shadow_range`]'s general loop does, with the
/// walk's outcome fixed for the region.
fn shadow_region(
    mem: &impl PhysMem,
    second: &PageTable<SecondStageFormat>,
    second_region: &mut Option<(u64, Covering)>,
    (first, writable): (u64, bool),
    (format, shadow): (SecondStageFormat, u64),
    iovas: core::ops::Range<u64>,
    stats: &mut ShadowStats,
) {
    let (mut mapped, mut added, mut removed) = (0, 0, 0);
    for iova in iovas.step_by(4096) {
        let index = 8 * ((iova >> 12) & 0x1ff);
        let entry = mem.read_u64(first + index);
        // Present (bit 0) and user (bit 2), as `first_stage_leaf` asks.
        let composed = if entry & 0b101 == 0b101 {
            let ipa = entry & 0x000f_ffff_ffff_f000;
            second_stage_in(mem, second, second_region, ipa)
                .and_then(|(pa, perms)| combine(pa, perms, writable && bit(entry, 1)))
        } else {
            None
        };
        let slot = shadow + index;
        let old = mem.read_u64(slot);
        let had = format.is_present(old);
        let new = composed.map_or(0, |(pa, perms)| format.leaf_entry(pa, 1, perms));
        if new != old {
            mem.write_u64(slot, new);
        }
        if composed.is_some() {
            mapped += 1;
            added += u64::from(!had);
        } else {
            removed += u64::from(had);
        }
    }
    stats.mapped += mapped;
    stats.added += added;
    stats.removed += removed;
}

/// Re-shadows `[start, start + length)`: every page gets the composed
/// translation or none. Refuses more than `max_pages` pages.
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
    let pages = length / 4096;
    if start & 0xfff != 0
        || length & 0xfff != 0
        || pages > max_pages
        || start.checked_add(length).is_none_or(|end| end > 1 << 47)
    {
        return Err(ShadowError::BadRange);
    }
    let mut stats = ShadowStats {
        pages,
        ..ShadowStats::default()
    };
    // Each table level is walked once per 2 MiB region: the first stage's
    // upper levels and the shadow's per region of IOVAs, the second
    // stage's per region of IPAs; within a region each page is one entry
    // of a last-level table.
    let mut second_region: Option<(u64, Covering)> = None;
    let format = *shadow.format();
    let end = start + length;
    let mut iova = start;
    while iova < end {
        let region_end = (((iova >> 21) + 1) << 21).min(end);
        let walked = walk_upper(mem, first_stage_root, second, iova, allow_1g);
        let mut table = shadow
            .find_leaf_table(mem, iova)
            .map_err(ShadowError::Map)?;
        if walked == Upper::Fault && table.is_none() {
            // Nothing to shadow, nothing shadowed.
            iova = region_end;
            continue;
        }
        if let (
            Upper::Table {
                table: first,
                writable,
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
                (first, writable),
                (format, page_table),
                iova..region_end,
                &mut stats,
            );
            iova = region_end;
            continue;
        }
        while iova < region_end {
            let composed = first_stage_leaf(mem, walked, iova).and_then(|(ipa, writable)| {
                let (pa, perms) = second_stage_in(mem, second, &mut second_region, ipa)?;
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
            let old = mem.read_u64(slot);
            let had = format.is_present(old);
            let new = composed.map_or(0, |(pa, perms)| format.leaf_entry(pa, 1, perms));
            if new != old {
                mem.write_u64(slot, new);
            }
            match composed {
                Some(_) => {
                    stats.mapped += 1;
                    stats.added += u64::from(!had);
                }
                None if had => stats.removed += 1,
                None => {}
            }
            iova += 4096;
        }
    }
    Ok(stats)
}
