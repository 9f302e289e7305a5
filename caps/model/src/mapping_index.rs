//! The per-IoSpace index of IO mappings, and the IPA index.
//!
//! Each IoSpace heads a doubly linked list, through [`Slot::io_prev`] and
//! [`Slot::io_next`], of the slots whose capability holds an IO mapping in
//! it, in increasing slot order; the head is the IoSpace object's
//! [`crate::Object::first_io_mapping`], the tail its
//! [`crate::Object::last_io_mapping`]. Invariant (checked after every step
//! of the model checker and the property tests by
//! `checker::invariants::mapping_index`): a slot is on IoSpace X's list
//! exactly when its capability's mapping names X, and a slot on no list has
//! no links.
//!
//! Slot order makes the list a function of the mappings alone, so
//! - tearing down an IoSpace unmaps in the order a scan of the slot table
//!   would (the effects are the same, in the same order), and
//! - two states with the same mappings hold the same list (the model
//!   checker explores no extra states).
//!
//! The IPA index ([`crate::Storage::ipa_index`]) answers `IoSpace.Map`'s
//! overlap check. Frames are 4 KiB or 2 MiB and mapped at an IPA aligned to
//! their size, so two mappings overlap exactly when they are the same 4 KiB
//! page, or one is a 2 MiB mapping of the block the other lies in. The
//! table (open addressing, linear probing, deletion by backward shift, so no
//! tombstones) holds, per IoSpace: a `PAGE` entry per 4 KiB mapping, a
//! `LARGE` entry per 2 MiB mapping, and a `COUNT` entry per 2 MiB block
//! holding 4 KiB mappings, with how many. A 4 KiB map asks for its `PAGE`
//! and its block's `LARGE`; a 2 MiB map for its block's `LARGE` and
//! `COUNT`: two lookups whatever the number of mappings. The invariant
//! checks the table holds exactly those entries, and that its answer equals
//! the old walk of the list ([`Caps::ipa_taken_by_walk`]) for every mapped
//! page and block and their neighbours.
//!
//! Why not the stage-2 entry itself (the hardware table says whether an
//! IPA is taken)? The model is hardware-agnostic and model-checked on the
//! host without any page table; the decision must be in the code that is
//! checked. The table costs 48 bytes per slot (three 16-byte entries).
//!
//! With k the number of mappings in one IoSpace: the overlap check is
//! O(1); linking is O(1) when the new slot is above every slot on the list
//! (found from the tail), else O(slots on the list above it); unlinking is
//! O(1). Every mapping change goes through [`Caps::link_io_mapping`] and
//! [`Caps::unlink_io_mapping`] (map, unmap, move, delete and revoke of the
//! mapping capability) or the IoSpace's teardown ([`Caps::forget_ipa`]).

use crate::caps::Caps;
use crate::storage::{IpaEntry, Slot, Storage};
use crate::types::{LARGE_PAGE_BITS, ObjectId, PAGE_BITS, SlotId};

/// Where a new mapping's entries go in the IPA index ([`Caps::ipa_spot`]):
/// its own entry's key and the free entry the search for it ended at
/// (`None`: the table is full), and its block's `COUNT` key (4 KiB).
pub(crate) struct IpaSpot {
    own: u64,
    free: Option<usize>,
    count: Option<u64>,
}

/// What an [`IpaEntry`] records (its key's top two bits).
const PAGE: u64 = 1 << 62;
/// A 2 MiB mapping of the block.
const LARGE: u64 = 2 << 62;
/// How many 4 KiB mappings the block holds.
const COUNT: u64 = 3 << 62;

/// The key of an entry of kind `kind` for the page or block at `ipa`.
fn ipa_key(kind: u64, ipa: u64) -> u64 {
    let bits = if kind == PAGE {
        PAGE_BITS
    } else {
        LARGE_PAGE_BITS
    };
    kind | (ipa >> bits)
}

/// Where the search for `(space, key)` starts in a table of `len` entries.
fn home(space: u32, key: u64, len: usize) -> usize {
    let hash = (key ^ (u64::from(space) << 32).rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((u128::from(hash) * len as u128) >> 64) as usize
}

/// The index of the entry for `(space, key)` in `table`, or of the free
/// entry where it would go (`Err`); `None` if the table is full and has no
/// such entry.
fn probe(table: &[IpaEntry], space: u32, key: u64) -> Option<Result<usize, usize>> {
    let len = table.len();
    if len == 0 {
        return None;
    }
    let mut i = home(space, key, len);
    for _ in 0..len {
        let entry = &table[i];
        if entry.key == 0 {
            return Some(Err(i));
        }
        if entry.key == key && entry.space == space {
            return Some(Ok(i));
        }
        i = if i + 1 == len { 0 } else { i + 1 };
    }
    None
}

/// The entry for `(space, key)` in `table`, if there is one.
pub(crate) fn find_ipa_entry(table: &[IpaEntry], space: u32, key: u64) -> Option<IpaEntry> {
    match probe(table, space, key) {
        Some(Ok(at)) => Some(table[at]),
        _ => None,
    }
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

/// The slots holding a mapping in one IoSpace, in slot order.
#[cfg(feature = "checker")]
pub(crate) struct IoMappings<'a> {
    slots: &'a [Slot],
    cursor: Option<SlotId>,
}

#[cfg(feature = "checker")]
impl<'a> Iterator for IoMappings<'a> {
    type Item = (SlotId, &'a Slot);

    fn next(&mut self) -> Option<Self::Item> {
        let id = self.cursor?;
        let slot = self.slots.get(id.0 as usize)?;
        self.cursor = slot.io_next;
        Some((id, slot))
    }
}

impl<S: Storage> Caps<S> {
    /// The slots holding a mapping in `space`, in slot order.
    #[cfg(feature = "checker")]
    pub(crate) fn io_mappings(&self, space: ObjectId) -> IoMappings<'_> {
        IoMappings {
            slots: self.store.slots(),
            cursor: self.object(space).and_then(|o| o.first_io_mapping),
        }
    }

    /// Where `slot` belongs on `space`'s list: after the returned slot (the
    /// last one below `slot`), or first (`None`). Searched from the tail,
    /// so O(1) when `slot` is above every listed slot.
    pub(crate) fn io_mapping_place(&self, space: ObjectId, slot: SlotId) -> Option<SlotId> {
        let slots = self.store.slots();
        let mut cursor = self.object(space).and_then(|o| o.last_io_mapping);
        while let Some(s) = cursor {
            if s.0 < slot.0 {
                return Some(s);
            }
            cursor = slots.get(s.0 as usize).and_then(|e| e.io_prev);
        }
        None
    }

    /// Whether a mapping of `2^size_bits` bytes at `ipa` (aligned to its
    /// size) would overlap one of `space`'s: two probes of the IPA index.
    #[cfg(feature = "checker")]
    pub(crate) fn ipa_taken(&self, space: ObjectId, ipa: u64, size_bits: u8) -> bool {
        self.ipa_spot(space, ipa, size_bits).is_none()
    }

    /// [`Caps::ipa_taken`]'s answer as `None` (taken), or else where a
    /// mapping of `2^size_bits` bytes at `ipa` goes in the IPA index, for
    /// [`Caps::remember_ipa_at`]: two probes of the index.
    #[inline(always)]
    pub(crate) fn ipa_spot(&self, space: ObjectId, ipa: u64, size_bits: u8) -> Option<IpaSpot> {
        let table = self.store.ipa_index();
        let find = |kind| probe(table, space.0, ipa_key(kind, ipa));
        let (own, count) = if size_bits <= PAGE_BITS {
            (PAGE, Some(ipa_key(COUNT, ipa)))
        } else {
            (LARGE, None)
        };
        let free = match find(own) {
            Some(Ok(_)) => return None,
            Some(Err(free)) => Some(free),
            None => None,
        };
        let blocked = if size_bits <= PAGE_BITS {
            !flawed!(self, index_ignores_blocks) && matches!(find(LARGE), Some(Ok(_)))
        } else {
            matches!(find(COUNT), Some(Ok(_)))
        };
        (!blocked).then_some(IpaSpot {
            own: ipa_key(own, ipa),
            free,
            count,
        })
    }

    #[cfg(feature = "checker")]
    /// [`Caps::ipa_taken`] by walking `space`'s mapping list: what the
    /// overlap check was before the IPA index, kept as its specification
    /// (the invariants compare the two).
    pub(crate) fn ipa_taken_by_walk(&self, space: ObjectId, ipa: u64, size_bits: u8) -> bool {
        let end = ipa.saturating_add(1u64 << size_bits);
        self.io_mappings(space).any(|(_, slot)| {
            slot.cap.as_ref().is_some_and(|c| {
                c.mapping.is_some_and(|m| {
                    let other = self.object(c.object).map_or(0, |o| o.size_bits);
                    m.space == space && m.ipa < end && ipa < m.ipa.saturating_add(1u64 << other)
                })
            })
        })
    }

    /// The IPA index entries the mapping `slot`'s capability holds stands
    /// for: its own (`PAGE` or `LARGE`), and its block's `COUNT` (4 KiB).
    fn ipa_entries(&self, slot: SlotId) -> Option<(u32, u64, Option<u64>)> {
        let cap = self.store.slots().get(slot.0 as usize)?.cap?;
        let m = cap.mapping?;
        let size_bits = self.object(cap.object).map_or(PAGE_BITS, |o| o.size_bits);
        Some(if size_bits <= PAGE_BITS {
            (m.space.0, ipa_key(PAGE, m.ipa), Some(ipa_key(COUNT, m.ipa)))
        } else {
            (m.space.0, ipa_key(LARGE, m.ipa), None)
        })
    }

    /// Enters the mapping `slot`'s capability holds in the IPA index.
    fn remember_ipa(&mut self, slot: SlotId) {
        let Some((space, own, count)) = self.ipa_entries(slot) else {
            return;
        };
        let free = match probe(self.store.ipa_index(), space, own) {
            Some(Err(free)) => Some(free),
            _ => None,
        };
        self.remember_ipa_at(ObjectId(space), slot, IpaSpot { own, free, count });
    }

    /// Enters the mapping `slot`'s capability holds in `space` in the IPA
    /// index, at the `spot` [`Caps::ipa_spot`] found for it (the index
    /// unchanged since).
    #[inline]
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
        if let Some(count) = spot.count {
            match probe(table, space, count) {
                Some(Ok(at)) => table[at].value += 1,
                Some(Err(free)) => {
                    table[free] = IpaEntry {
                        key: count,
                        space,
                        value: 1,
                    }
                }
                None => {}
            }
        }
    }

    /// Takes the mapping `slot`'s capability holds out of the IPA index
    /// (before the mapping is dropped).
    pub(crate) fn forget_ipa(&mut self, slot: SlotId) {
        let Some((space, own, count)) = self.ipa_entries(slot) else {
            return;
        };
        let table = self.store.ipa_index_mut();
        if let Some(Ok(at)) = probe(table, space, own) {
            remove_at(table, at);
        }
        if let Some(count) = count
            && let Some(Ok(at)) = probe(table, space, count)
        {
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
        let get = |key| match probe(table, space.0, key) {
            Some(Ok(at)) => Some(table[at].value),
            _ => None,
        };
        let own = get(ipa_key(if large { LARGE } else { PAGE }, ipa));
        (own, get(ipa_key(COUNT, ipa)).unwrap_or(0))
    }

    #[cfg(feature = "checker")]
    /// How many entries of the IPA index are in use.
    pub(crate) fn ipa_index_used(&self) -> usize {
        self.store.ipa_index().iter().filter(|e| e.key != 0).count()
    }

    /// Enter `slot`, whose capability now holds a mapping in `space`, on
    /// `space`'s list right after `after` (`None`: first), which must be
    /// [`Caps::io_mapping_place`], and in the IPA index.
    pub(crate) fn link_io_mapping(&mut self, slot: SlotId, space: ObjectId, after: Option<SlotId>) {
        self.link_io_list(slot, space, after);
        self.remember_ipa(slot);
    }

    /// [`Caps::link_io_mapping`]'s list half: the caller enters the IPA
    /// index itself ([`Caps::remember_ipa_at`]).
    pub(crate) fn link_io_list(&mut self, slot: SlotId, space: ObjectId, after: Option<SlotId>) {
        let next = match after {
            Some(a) => self.store.slots()[a.0 as usize].io_next,
            None => self.object(space).and_then(|o| o.first_io_mapping),
        };
        let entry = self.slot_mut(slot);
        entry.io_prev = after;
        entry.io_next = next;
        match after {
            Some(a) => self.slot_mut(a).io_next = Some(slot),
            None => {
                if let Some(o) = self.object_mut(space) {
                    o.first_io_mapping = Some(slot);
                }
            }
        }
        match next {
            Some(n) => self.slot_mut(n).io_prev = Some(slot),
            None => {
                if let Some(o) = self.object_mut(space) {
                    o.last_io_mapping = Some(slot);
                }
            }
        }
    }

    /// Take `slot` off `space`'s list (before its mapping is dropped).
    pub(crate) fn unlink_io_mapping(&mut self, slot: SlotId, space: ObjectId) {
        if !flawed!(self, stale_ipa_index) {
            self.forget_ipa(slot);
        }
        let Slot {
            io_prev, io_next, ..
        } = self.store.slots()[slot.0 as usize];
        match io_prev {
            Some(p) => self.slot_mut(p).io_next = io_next,
            None => {
                if let Some(o) = self.object_mut(space)
                    && o.first_io_mapping == Some(slot)
                {
                    o.first_io_mapping = io_next;
                }
            }
        }
        match io_next {
            Some(n) => self.slot_mut(n).io_prev = io_prev,
            None => {
                if let Some(o) = self.object_mut(space)
                    && o.last_io_mapping == Some(slot)
                {
                    o.last_io_mapping = io_prev;
                }
            }
        }
        let entry = self.slot_mut(slot);
        entry.io_prev = None;
        entry.io_next = None;
    }
}
