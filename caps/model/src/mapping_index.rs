//! The per-IoSpace index of IO mappings.
//!
//! Each IoSpace heads a doubly linked list, through [`Slot::io_prev`] and
//! [`Slot::io_next`], of the slots whose capability holds an IO mapping in
//! it, in increasing slot order; the head is the IoSpace object's
//! [`crate::Object::first_io_mapping`]. Invariant (checked after every step
//! of the model checker and the property tests by
//! `checker::invariants::mapping_index`): a slot is on IoSpace X's list
//! exactly when its capability's mapping names X, and a slot on no list has
//! no links.
//!
//! Slot order makes the index a function of the mappings alone, so
//! - tearing down an IoSpace unmaps in the order a scan of the slot table
//!   would (the effects are the same, in the same order), and
//! - two states with the same mappings hold the same index (the model
//!   checker explores no extra states).
//!
//! With k the number of mappings in one IoSpace: walking the list is O(k);
//! linking is O(k) (finding the place; `map_io` finds it during its overlap
//! check, which walks the list anyway); unlinking is O(1). Every mapping
//! change goes through [`Caps::link_io_mapping`] and
//! [`Caps::unlink_io_mapping`]: map, unmap, move, delete and revoke of the
//! mapping capability, and the IoSpace's teardown.

use crate::caps::Caps;
use crate::storage::{Slot, Storage};
use crate::types::{ObjectId, SlotId};

/// The slots holding a mapping in one IoSpace, in slot order.
pub(crate) struct IoMappings<'a> {
    slots: &'a [Slot],
    cursor: Option<SlotId>,
}

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
    pub(crate) fn io_mappings(&self, space: ObjectId) -> IoMappings<'_> {
        IoMappings {
            slots: self.store.slots(),
            cursor: self.object(space).and_then(|o| o.first_io_mapping),
        }
    }

    /// Where `slot` belongs on `space`'s list: after the returned slot (the
    /// last one below `slot`), or first (`None`).
    pub(crate) fn io_mapping_place(&self, space: ObjectId, slot: SlotId) -> Option<SlotId> {
        self.io_mappings(space)
            .take_while(|(s, _)| s.0 < slot.0)
            .last()
            .map(|(s, _)| s)
    }

    /// Enter `slot`, whose capability now holds a mapping in `space`, on
    /// `space`'s list right after `after` (`None`: first), which must be
    /// [`Caps::io_mapping_place`].
    pub(crate) fn link_io_mapping(&mut self, slot: SlotId, space: ObjectId, after: Option<SlotId>) {
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
        if let Some(n) = next {
            self.slot_mut(n).io_prev = Some(slot);
        }
    }

    /// Take `slot` off `space`'s list (before its mapping is dropped).
    pub(crate) fn unlink_io_mapping(&mut self, slot: SlotId, space: ObjectId) {
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
        if let Some(n) = io_next {
            self.slot_mut(n).io_prev = io_prev;
        }
        let entry = self.slot_mut(slot);
        entry.io_prev = None;
        entry.io_next = None;
    }
}
