//! The IPA index: which IPAs of each IoSpace are mapped, and by which slot.
//!
//! The IPA index ([`crate::Storage::ipa_index`]) answers `IoSpace.Map`'s
//! overlap check. Frames are 4 KiB or 2 MiB and mapped at an IPA aligned to
//! their size, so two mappings overlap exactly when they are the same 4 KiB
//! page, or one is a 2 MiB mapping of the block the other lies in. The
//! table (open addressing, linear probing, deletion by backward shift, so no
//! tombstones) holds, per IoSpace: a `PAGE` entry per 4 KiB mapping and
//! one entry per 2 MiB block that holds anything, `LARGE` for a 2 MiB
//! mapping of the block or `COUNT` (how many) for 4 KiB ones (never both:
//! they would overlap); `PAGE` and `LARGE` entries name the slot holding
//! the mapping. A 4 KiB map searches for its `PAGE` and its block's entry;
//! a 2 MiB map for its block's entry: two searches or one whatever the
//! number of mappings, and the searches end where the new entries go. The
//! invariant checks the table holds exactly those entries, and that its
//! answer equals a walk of every mapping ([`Caps::ipa_taken_by_walk`]) for
//! every mapped page and block and their neighbours.
//!
//! It is the only index of IO mappings. An earlier list through the slots
//! (each IoSpace's mappings in slot order) cost `IoSpace.Map` about 70
//! guest instructions and `Unmap`, delete and revoke of a mapped copy
//! about 45 each to keep, for one reader: the IoSpace's teardown, which
//! now scans the slot table instead (in slot order, as the list did, so
//! the effects are the same, in the same order).
//!
//! Why not the stage-2 entry itself (the hardware table says whether an
//! IPA is taken)? The model is hardware-agnostic and model-checked on the
//! host without any page table; the decision must be in the code that is
//! checked. The table costs 48 bytes per slot (three 16-byte entries).
//!
//! Every mapping change goes through [`Caps::remember_ipa_at`] (map),
//! [`Caps::unlink_io_mapping`] (unmap, delete and revoke of the mapping
//! capability), [`Caps::rename_io_mapping`] (its move) or the IoSpace's
//! teardown ([`Caps::forget_ipa`]); each is O(1).

use crate::caps::Caps;
use crate::storage::{IpaEntry, Storage};
use crate::types::{LARGE_PAGE_BITS, ObjectId, PAGE_BITS, SlotId};

/// Where a new mapping's entries go in the IPA index ([`Caps::ipa_spot`]):
/// its own entry's key and the free entry the search for it ended at
/// (`None`: the table is full), and, for a 4 KiB mapping, its block's
/// `COUNT` key with where the search for the block's entry ended: `Ok` at
/// the block's `COUNT`, `Err` at the free entry a new one goes in.
pub(crate) struct IpaSpot {
    own: u64,
    free: Option<usize>,
    count: Option<(u64, Option<Result<usize, usize>>)>,
}

/// What an [`IpaEntry`] records (its key's top two bits): a 4 KiB mapping
/// of the page.
const PAGE: u64 = 1 << 62;
/// How many 4 KiB mappings the block holds.
const COUNT: u64 = 2 << 62;
/// A 2 MiB mapping of the block.
const LARGE: u64 = 3 << 62;
/// The key bit that tells a block's `COUNT` from its `LARGE`. A block has
/// at most one entry (a 2 MiB mapping and a 4 KiB one of the same block
/// overlap), so both are hashed and searched for with this bit set: one
/// search for a block's entry answers "a 2 MiB mapping" (`LARGE`), "so
/// many 4 KiB ones" (`COUNT`) or "nothing" (the free entry where either
/// goes). `PAGE` keys have it set already.
const BLOCK_KIND: u64 = 1 << 62;

/// The `PAGE` key of the page at `ipa`.
fn page_key(ipa: u64) -> u64 {
    PAGE | (ipa >> PAGE_BITS)
}

/// The key of kind `kind` (`COUNT` or `LARGE`) for the block at `ipa`.
fn block_key(kind: u64, ipa: u64) -> u64 {
    kind | (ipa >> LARGE_PAGE_BITS)
}

/// Where the search for `(space, key)` starts in a table of `len` entries
/// (a block's `COUNT` and `LARGE` keys start at the same place).
fn home(space: u32, key: u64, len: usize) -> usize {
    let hash = ((key | BLOCK_KIND) ^ (u64::from(space) << 32).rotate_left(17))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((u128::from(hash) * len as u128) >> 64) as usize
}

/// The index of the entry for `(space, key)` in `table` (for a block key,
/// the block's entry of either kind), or of the free entry where it would
/// go (`Err`); `None` if the table is full and has no such entry.
#[inline(always)]
fn probe(table: &[IpaEntry], space: u32, key: u64) -> Option<Result<usize, usize>> {
    let len = table.len();
    if len == 0 {
        return None;
    }
    let wanted = key | BLOCK_KIND;
    let mut i = home(space, key, len);
    for _ in 0..len {
        let entry = &table[i];
        if entry.key == 0 {
            return Some(Err(i));
        }
        if entry.key | BLOCK_KIND == wanted && entry.space == space {
            return Some(Ok(i));
        }
        i = if i + 1 == len { 0 } else { i + 1 };
    }
    None
}

/// The index of the entry for exactly `(space, key)` in `table`, if there
/// is one.
fn find(table: &[IpaEntry], space: u32, key: u64) -> Option<usize> {
    match probe(table, space, key) {
        Some(Ok(at)) if table[at].key == key => Some(at),
        _ => None,
    }
}

/// The entry for `(space, key)` in `table`, if there is one.
pub(crate) fn find_ipa_entry(table: &[IpaEntry], space: u32, key: u64) -> Option<IpaEntry> {
    find(table, space, key).map(|at| table[at])
}

/// The first free entry after `at` (cyclically), if any.
fn next_free(table: &[IpaEntry], at: usize) -> Option<usize> {
    let len = table.len();
    let mut i = at;
    for _ in 1..len {
        i = if i + 1 == len { 0 } else { i + 1 };
        if table[i].key == 0 {
            return Some(i);
        }
    }
    None
}

/// Frees entry `at`, moving later entries of its run back so that every
/// entry stays reachable from its home without tombstones (Knuth's
/// algorithm R for linear probing).
fn remove_at(table: &mut [IpaEntry], at: usize) {
    let len = table.len();
    let mut hole = at;
    let mut j = at;
    loop {
        j = if j + 1 == len { 0 } else { j + 1 };
        let entry = table[j];
        if entry.key == 0 || j == at {
            break;
        }
        let k = home(entry.space, entry.key, len);
        // The entry at j may stay when its home lies cyclically in (hole, j].
        let stays = if hole <= j {
            hole < k && k <= j
        } else {
            hole < k || k <= j
        };
        if !stays {
            table[hole] = entry;
            hole = j;
        }
    }
    table[hole] = IpaEntry::EMPTY;
}

impl<S: Storage> Caps<S> {
    /// Whether a mapping of `2^size_bits` bytes at `ipa` (aligned to its
    /// size) would overlap one of `space`'s: two probes of the IPA index.
    #[cfg(feature = "checker")]
    pub(crate) fn ipa_taken(&self, space: ObjectId, ipa: u64, size_bits: u8) -> bool {
        self.ipa_spot(space, ipa, size_bits).is_none()
    }

    /// [`Caps::ipa_taken`]'s answer as `None` (taken), or else where a
    /// mapping of `2^size_bits` bytes at `ipa` goes in the IPA index, for
    /// [`Caps::remember_ipa_at`]: two probes of the index for 4 KiB (its
    /// page, its block), one for 2 MiB (its block).
    #[inline(always)]
    pub(crate) fn ipa_spot(&self, space: ObjectId, ipa: u64, size_bits: u8) -> Option<IpaSpot> {
        let table = self.store.ipa_index();
        if size_bits > PAGE_BITS {
            let own = block_key(LARGE, ipa);
            return match probe(table, space.0, own) {
                // The block's entry: a 2 MiB mapping or 4 KiB ones.
                Some(Ok(_)) => None,
                free => Some(IpaSpot {
                    own,
                    free: free.and_then(Result::err),
                    count: None,
                }),
            };
        }
        let own = page_key(ipa);
        let free = match probe(table, space.0, own) {
            Some(Ok(_)) => return None,
            free => free.and_then(Result::err),
        };
        let count = block_key(COUNT, ipa);
        let block = probe(table, space.0, count);
        if let Some(Ok(at)) = block
            && table[at].key != count
            && !flawed!(self, index_ignores_blocks)
        {
            // The block's entry is its `LARGE`: a 2 MiB mapping covers it.
            return None;
        }
        Some(IpaSpot {
            own,
            free,
            count: Some((count, block)),
        })
    }

    #[cfg(feature = "checker")]
    /// [`Caps::ipa_taken`] by walking every capability's mapping: what the
    /// overlap check was before the IPA index, kept as its specification
    /// (the invariants compare the two).
    pub(crate) fn ipa_taken_by_walk(&self, space: ObjectId, ipa: u64, size_bits: u8) -> bool {
        let end = ipa.saturating_add(1u64 << size_bits);
        self.store.slots().iter().any(|slot| {
            slot.cap.as_ref().is_some_and(|c| {
                c.mapping.is_some_and(|m| {
                    let other = self.object(c.object).map_or(0, |o| o.size_bits);
                    m.space == space && m.ipa < end && ipa < m.ipa.saturating_add(1u64 << other)
                })
            })
        })
    }

    /// Enters the mapping `slot`'s capability holds in `space` in the IPA
    /// index, at the `spot` [`Caps::ipa_spot`] found for it (the index
    /// unchanged since): no further search, unless the block's new `COUNT`
    /// was to take the free entry the page's entry just took (then the
    /// next free one, which its search would have reached).
    #[inline(always)]
    pub(crate) fn remember_ipa_at(&mut self, space: ObjectId, slot: SlotId, spot: IpaSpot) {
        let space = space.0;
        let table = self.store.ipa_index_mut();
        if let Some(free) = spot.free {
            table[free] = IpaEntry {
                key: spot.own,
                space,
                value: slot.0,
            };
        }
        match spot.count {
            Some((_, Some(Ok(at)))) => table[at].value += 1,
            Some((key, Some(Err(free)))) => {
                let at = if spot.free == Some(free) {
                    next_free(table, free)
                } else {
                    Some(free)
                };
                if let Some(at) = at {
                    table[at] = IpaEntry {
                        key,
                        space,
                        value: 1,
                    };
                }
            }
            _ => {}
        }
    }

    /// Takes the entries of the mapping of `2^size_bits` bytes at `ipa` in
    /// `space` out of the IPA index (before the mapping is dropped): its
    /// own, and its share of its block's `COUNT` (4 KiB).
    pub(crate) fn forget_ipa(&mut self, space: ObjectId, ipa: u64, size_bits: u8) {
        let space = space.0;
        let table = self.store.ipa_index_mut();
        if size_bits > PAGE_BITS {
            if let Some(at) = find(table, space, block_key(LARGE, ipa)) {
                remove_at(table, at);
            }
            return;
        }
        if let Some(at) = find(table, space, page_key(ipa)) {
            remove_at(table, at);
        }
        if let Some(at) = find(table, space, block_key(COUNT, ipa)) {
            if table[at].value > 1 {
                table[at].value -= 1;
            } else {
                remove_at(table, at);
            }
        }
    }

    #[cfg(feature = "checker")]
    /// The IPA index's entry for `space` of kind `PAGE` (`large` false) or
    /// `LARGE` at `ipa`, and the `COUNT` of `ipa`'s block: what the
    /// invariants compare with the mappings.
    pub(crate) fn ipa_index_entry(
        &self,
        space: ObjectId,
        ipa: u64,
        large: bool,
    ) -> (Option<u32>, u32) {
        let table = self.store.ipa_index();
        let get = |key| find_ipa_entry(table, space.0, key).map(|e| e.value);
        let own = get(if large {
            block_key(LARGE, ipa)
        } else {
            page_key(ipa)
        });
        (own, get(block_key(COUNT, ipa)).unwrap_or(0))
    }

    #[cfg(feature = "checker")]
    /// How many entries of the IPA index are in use.
    pub(crate) fn ipa_index_used(&self) -> usize {
        self.store.ipa_index().iter().filter(|e| e.key != 0).count()
    }

    /// Takes the mapping of `2^size_bits` bytes at `ipa` in `space` out of
    /// the IPA index (before the mapping is dropped): unmap, and delete
    /// or revoke of the capability holding it.
    pub(crate) fn unlink_io_mapping(&mut self, space: ObjectId, ipa: u64, size_bits: u8) {
        if !flawed!(self, stale_ipa_index) {
            self.forget_ipa(space, ipa, size_bits);
        }
    }

    /// The mapping of `2^size_bits` bytes at `ipa` in `space` is now held
    /// in slot `to` (its capability moved there): its own entry names it.
    pub(crate) fn rename_io_mapping(
        &mut self,
        space: ObjectId,
        ipa: u64,
        size_bits: u8,
        to: SlotId,
    ) {
        let key = if size_bits > PAGE_BITS {
            block_key(LARGE, ipa)
        } else {
            page_key(ipa)
        };
        let table = self.store.ipa_index_mut();
        if let Some(at) = find(table, space.0, key) {
            table[at].value = to.0;
        }
    }
}
