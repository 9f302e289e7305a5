//! Where each IoSpace's record sits in `State::spaces`, by object id and
//! by model DID, so the hot paths (`IoSpace.Map`, `Unmap`, their
//! invalidations) find it in a probe or two instead of scanning.

use crate::SPACES;

/// Slots of one index: twice the records, so probes stay short.
const SLOTS: usize = 2 * SPACES;
/// Bits of a slot number.
const SLOT_BITS: u32 = SLOTS.trailing_zeros();
const _: () = assert!(SLOTS.is_power_of_two() && SPACES < u8::MAX as usize);

/// Positions in `State::spaces` by key (an object id or a DID): open
/// addressing with linear probing; a slot holds position + 1, 0 is free.
/// Rebuilt whenever records move, so it never holds a stale position.
pub(crate) struct Index {
    slots: [u8; SLOTS],
}

impl Index {
    pub(crate) const fn new() -> Self {
        Index { slots: [0; SLOTS] }
    }

    /// The slot a probe for `key` starts at (Fibonacci hashing).
    #[inline]
    fn home(key: u32) -> usize {
        (key.wrapping_mul(0x9e37_79b9) >> (32 - SLOT_BITS)) as usize
    }

    /// Forgets every key.
    pub(crate) fn clear(&mut self) {
        self.slots = [0; SLOTS];
    }

    /// Records that `key`'s record is at `position` (at most [`SPACES`]
    /// keys, so a free slot always exists).
    pub(crate) fn insert(&mut self, key: u32, position: usize) {
        let mut slot = Self::home(key);
        for _ in 0..SLOTS {
            if self.slots[slot] == 0 {
                self.slots[slot] = position as u8 + 1;
                return;
            }
            slot = (slot + 1) % SLOTS;
        }
    }

    /// `key`'s record: what `at` gives for the first position on
    /// `key`'s probe sequence for which it gives something (`at` checks
    /// that the record there has the key).
    #[inline(always)]
    pub(crate) fn find<T>(&self, key: u32, at: impl Fn(usize) -> Option<T>) -> Option<T> {
        let mut slot = Self::home(key);
        for _ in 0..SLOTS {
            let position = usize::from(self.slots[slot]).checked_sub(1)?;
            if let Some(found) = at(position) {
                return Some(found);
            }
            slot = (slot + 1) % SLOTS;
        }
        None
    }
}
