//! The capability system: derivation tree, object lifetimes and retype.
//!
//! Every public operation follows the decode/perform discipline: it first
//! checks every argument and precondition without changing anything (and
//! returns an [`Error`] if one fails), then performs the change, which cannot
//! fail, emitting the hardware [`Effect`]s it needs into an [`EffectSink`].

use crate::effect::{Effect, EffectSink, FaultSource, Flush};
use crate::error::Error;
use crate::object::{Attachment, IommuUnit, NewObject, Object, ObjectState};
use crate::storage::{Cap, Slot, Storage};
use crate::types::{Badge, ObjectId, ObjectKind, Rights, SlotId};

/// The capability system over caller-provided [`Storage`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Caps<S> {
    pub(crate) store: S,
    #[cfg(feature = "seeded-bugs")]
    pub(crate) flaws: crate::flaws::Flaws,
}

impl<S: Storage> Caps<S> {
    /// Wrap storage. The storage should be empty (as from
    /// [`crate::ArrayStorage::new`]); boot objects are added with the
    /// `boot_*` functions.
    pub fn new(store: S) -> Self {
        Caps {
            store,
            #[cfg(feature = "seeded-bugs")]
            flaws: crate::flaws::Flaws::default(),
        }
    }

    /// Switch seeded bugs on (verification suite only).
    #[cfg(feature = "seeded-bugs")]
    pub fn set_flaws(&mut self, flaws: crate::flaws::Flaws) {
        self.flaws = flaws;
    }

    /// The underlying storage.
    pub fn storage(&self) -> &S {
        &self.store
    }

    /// Give the storage back.
    pub fn into_storage(self) -> S {
        self.store
    }

    /// The slot table.
    pub fn slots(&self) -> &[Slot] {
        self.store.slots()
    }

    /// The object table.
    pub fn objects(&self) -> &[Option<Object>] {
        self.store.objects()
    }

    /// A live object record.
    pub fn object(&self, id: ObjectId) -> Option<&Object> {
        self.store.objects().get(id.0 as usize)?.as_ref()
    }

    /// Every capability in derivation-tree pre-order, with its slot and
    /// depth: each list of the tree (starting at the lowest slot that has
    /// no predecessor) in turn, every capability followed by its
    /// descendants. A capability's parent is the nearest one before it
    /// whose depth is one less. O(slots); for debugging and checking, not
    /// for the kernel's hot paths.
    pub fn derivation_order(&self) -> crate::storage::DerivationOrder<'_> {
        crate::storage::DerivationOrder::new(self.store.slots())
    }

    // ----- checked access (decode helpers) -----

    pub(crate) fn slot(&self, id: SlotId) -> Result<&Slot, Error> {
        self.store
            .slots()
            .get(id.0 as usize)
            .ok_or(Error::InvalidSlot)
    }

    /// The capability in `slot`.
    pub fn lookup(&self, slot: SlotId) -> Result<&Cap, Error> {
        self.slot(slot)?.cap.as_ref().ok_or(Error::EmptySlot)
    }

    /// The capability in `slot`, checked to name a `kind` object and to hold
    /// at least `rights`.
    pub fn lookup_as(&self, slot: SlotId, kind: ObjectKind, rights: Rights) -> Result<&Cap, Error> {
        let cap = self.lookup(slot)?;
        if cap.kind != kind {
            return Err(Error::WrongKind);
        }
        if !cap.rights.contains(rights) {
            return Err(Error::InsufficientRights);
        }
        Ok(cap)
    }

    /// The slot id of entry `index` of the CNode named by the cap in `cnode`.
    pub fn resolve(&self, cnode: SlotId, index: u32) -> Result<SlotId, Error> {
        let cap = self.lookup_as(cnode, ObjectKind::CNode, Rights::NONE)?;
        match self.object(cap.object).map(|o| o.state) {
            Some(ObjectState::CNode {
                first_slot,
                size_bits,
            }) if u64::from(index) < (1u64 << size_bits) => Ok(SlotId(first_slot.0 + index)),
            _ => Err(Error::InvalidSlot),
        }
    }

    pub(crate) fn need_empty(&self, id: SlotId) -> Result<(), Error> {
        match self.slot(id)?.cap {
            Some(_) => Err(Error::SlotOccupied),
            None => Ok(()),
        }
    }

    pub(crate) fn free_record(&self) -> Result<ObjectId, Error> {
        self.store
            .objects()
            .iter()
            .position(Option::is_none)
            .map(|i| ObjectId(i as u32))
            .ok_or(Error::ObjectTableFull)
    }

    pub(crate) fn live_objects(&self) -> impl Iterator<Item = (ObjectId, &Object)> {
        self.store
            .objects()
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.as_ref().map(|o| (ObjectId(i as u32), o)))
    }

    pub(crate) fn state(&self, id: ObjectId) -> Option<ObjectState> {
        self.object(id).map(|o| o.state)
    }

    pub(crate) fn unit_of(&self, iommu: ObjectId) -> Option<IommuUnit> {
        match self.state(iommu)? {
            ObjectState::IommuControl(unit) => Some(unit),
            _ => None,
        }
    }

    /// `(unit number, DID)` of a live IoSpace (both records read in place).
    pub(crate) fn space_tag(&self, space: ObjectId) -> Option<(u8, u16)> {
        let ObjectState::IoSpace { unit, did, .. } = &self.object(space)?.state else {
            return None;
        };
        let ObjectState::IommuControl(unit) = &self.object(*unit)?.state else {
            return None;
        };
        Some((unit.id, *did))
    }

    // ----- raw mutation (perform helpers; indices were checked by decode) -----

    pub(crate) fn slot_mut(&mut self, id: SlotId) -> &mut Slot {
        &mut self.store.slots_mut()[id.0 as usize]
    }

    pub(crate) fn object_mut(&mut self, id: ObjectId) -> Option<&mut Object> {
        self.store.objects_mut().get_mut(id.0 as usize)?.as_mut()
    }

    pub(crate) fn set_state(&mut self, id: ObjectId, state: ObjectState) {
        if let Some(o) = self.object_mut(id) {
            o.state = state;
        }
    }

    pub(crate) fn create_object(&mut self, id: ObjectId, object: Object) {
        self.store.objects_mut()[id.0 as usize] = Some(object);
    }

    /// Put `cap` into the empty slot `dest`, as a child of `parent` in the
    /// derivation tree (or as a root).
    pub(crate) fn place_cap(&mut self, dest: SlotId, cap: Cap, parent: Option<SlotId>) {
        if let Some(o) = self.object_mut(cap.object) {
            o.cap_count += 1;
        }
        let (depth, prev, next) = match parent {
            Some(p) => {
                let ps = self.store.slots()[p.0 as usize];
                (ps.depth + 1, Some(p), ps.next)
            }
            None => (0, None, None),
        };
        *self.slot_mut(dest) = Slot::holding(cap, prev, next, depth);
        if let Some(p) = prev {
            self.slot_mut(p).next = Some(dest);
        }
        if let Some(n) = next {
            self.slot_mut(n).prev = Some(dest);
        }
    }

    /// The slot after the last descendant of `id` (or `None` at list end).
    fn descendants_end(&self, id: SlotId) -> Option<SlotId> {
        let slots = self.store.slots();
        let depth = slots[id.0 as usize].depth;
        let mut cursor = slots[id.0 as usize].next;
        while let Some(c) = cursor {
            if slots[c.0 as usize].depth <= depth {
                break;
            }
            cursor = slots[c.0 as usize].next;
        }
        cursor
    }

    // ----- boot -----

    fn boot_object(&mut self, dest: SlotId, object: Object) -> Result<ObjectId, Error> {
        self.need_empty(dest)?;
        let id = self.free_record()?;
        let kind = object.kind;
        self.create_object(id, object);
        self.place_cap(
            dest,
            Cap {
                object: id,
                kind,
                rights: Rights::ALL,
                badge: Badge(0),
                mapping: None,
                cpu: None,
            },
            None,
        );
        Ok(id)
    }

    /// Boot: an Untyped covering `[paddr, paddr + 2^size_bits)`, its cap in `dest`.
    pub fn boot_untyped(
        &mut self,
        dest: SlotId,
        paddr: u64,
        size_bits: u8,
        device: bool,
    ) -> Result<ObjectId, Error> {
        if !(4..=47).contains(&size_bits) {
            return Err(Error::InvalidSize);
        }
        if paddr & ((1u64 << size_bits) - 1) != 0 || paddr.checked_add(1u64 << size_bits).is_none()
        {
            return Err(Error::InvalidAddress);
        }
        self.boot_object(
            dest,
            Object {
                kind: ObjectKind::Untyped,
                paddr,
                size_bits,
                has_memory: true,
                permanent: false,
                cap_count: 0,
                parent: None,
                live_children: 0,
                state: ObjectState::Untyped {
                    watermark: 0,
                    device,
                },
            },
        )
    }

    fn boot_permanent(
        &mut self,
        dest: SlotId,
        kind: ObjectKind,
        state: ObjectState,
    ) -> Result<ObjectId, Error> {
        self.boot_object(
            dest,
            Object {
                kind,
                paddr: 0,
                size_bits: 0,
                has_memory: false,
                permanent: true,
                cap_count: 0,
                parent: None,
                live_children: 0,
                state,
            },
        )
    }

    /// Boot: the IommuControl of one unit, its cap in `dest`.
    pub fn boot_iommu_control(&mut self, dest: SlotId, unit: IommuUnit) -> Result<ObjectId, Error> {
        if unit.pasid_bits > 20 || !(12..=52).contains(&unit.ipa_bits) {
            return Err(Error::InvalidSize);
        }
        self.boot_permanent(
            dest,
            ObjectKind::IommuControl,
            ObjectState::IommuControl(unit),
        )
    }

    /// Boot: the IrqControl for lines `0..irq_limit`, its cap in `dest`.
    pub fn boot_irq_control(&mut self, dest: SlotId, irq_limit: u16) -> Result<ObjectId, Error> {
        self.boot_permanent(
            dest,
            ObjectKind::IrqControl,
            ObjectState::IrqControl { irq_limit },
        )
    }

    /// Boot: the kernel console, its cap (all rights) in `dest`.
    pub fn boot_console(&mut self, dest: SlotId) -> Result<ObjectId, Error> {
        self.boot_permanent(dest, ObjectKind::Console, ObjectState::Plain)
    }

    // ----- derivation -----

    /// Copy the capability in `src` into the empty slot `dest`, as its child.
    /// The copy holds no mapping.
    pub fn copy(&mut self, src: SlotId, dest: SlotId) -> Result<(), Error> {
        let cap = *self.lookup(src)?;
        self.need_empty(dest)?;
        self.place_cap(
            dest,
            Cap {
                mapping: None,
                cpu: None,
                ..cap
            },
            Some(src),
        );
        Ok(())
    }

    /// Derive from `src` into `dest` a child with the rights in both `src` and
    /// `rights` and, if `badge` is non-zero, that badge (Endpoint and
    /// Notification only, and only from an unbadged source).
    pub fn mint(
        &mut self,
        src: SlotId,
        dest: SlotId,
        rights: Rights,
        badge: Badge,
    ) -> Result<(), Error> {
        let cap = *self.lookup(src)?;
        self.need_empty(dest)?;
        if badge.0 != 0 {
            if !matches!(
                cap.kind,
                ObjectKind::Endpoint | ObjectKind::Notification | ObjectKind::IoDevice
            ) {
                return Err(Error::NotBadgeable);
            }
            if cap.badge.0 != 0 {
                return Err(Error::AlreadyBadged);
            }
        }
        let rights = if flawed!(self, mint_amplifies) {
            rights
        } else {
            cap.rights.intersect(rights)
        };
        let badge = if badge.0 != 0 { badge } else { cap.badge };
        self.place_cap(
            dest,
            Cap {
                rights,
                badge,
                mapping: None,
                cpu: None,
                ..cap
            },
            Some(src),
        );
        Ok(())
    }

    /// Move the capability in `src` (with its mapping and its place in the
    /// derivation tree) into the empty slot `dest`. O(1); a capability
    /// holding an IO mapping also renames its slot in the IPA index.
    pub fn move_cap(&mut self, src: SlotId, dest: SlotId) -> Result<(), Error> {
        let cap = self.lookup(src)?;
        let (mapping, object) = (cap.mapping, cap.object);
        self.need_empty(dest)?;
        let node = self.store.slots()[src.0 as usize];
        *self.slot_mut(dest) = node;
        *self.slot_mut(src) = Slot::EMPTY;
        if let Some(p) = node.prev {
            self.slot_mut(p).next = Some(dest);
        }
        if let Some(n) = node.next {
            self.slot_mut(n).prev = Some(dest);
        }
        if let Some(m) = mapping
            && !flawed!(self, move_keeps_old_slot)
        {
            let size_bits = self.frame_bits(object);
            self.rename_io_mapping(m.space, m.ipa, size_bits, dest);
        }
        Ok(())
    }

    fn cnode_occupied(&self, cnode: ObjectId) -> bool {
        match self.state(cnode) {
            Some(ObjectState::CNode {
                first_slot,
                size_bits,
            }) => {
                let start = first_slot.0 as usize;
                let end = start + (1usize << size_bits);
                self.store
                    .slots()
                    .get(start..end)
                    .is_some_and(|s| s.iter().any(|s| s.cap.is_some()))
            }
            _ => false,
        }
    }

    /// Delete the capability in `slot` (an empty slot is a no-op). Its mapping
    /// is torn down; if it was the last capability to its object, the object
    /// is destroyed (for IOMMU objects: every translation depending on it is
    /// removed and invalidated, and the wait completed). Its children move up
    /// one level in the derivation tree.
    pub fn delete(
        &mut self,
        slot: SlotId,
        sink: &mut (impl EffectSink + ?Sized),
    ) -> Result<(), Error> {
        let Some(cap) = self.slot(slot)?.cap else {
            return Ok(());
        };
        if cap.kind == ObjectKind::CNode
            && self.object(cap.object).is_some_and(|o| o.cap_count == 1)
            && self.cnode_occupied(cap.object)
        {
            return Err(Error::CnodeNotEmpty);
        }
        let mut flush = Flush::new(flawed!(self, skip_invalidation_wait));
        self.finalise_cap(slot, &mut flush, sink);
        // Lift the descendants one level, then unlink the node.
        let end = self.descendants_end(slot);
        let node = self.store.slots()[slot.0 as usize];
        let mut cursor = node.next;
        while cursor != end {
            let Some(c) = cursor else { break };
            let s = self.slot_mut(c);
            s.depth -= 1;
            cursor = s.next;
        }
        if let Some(p) = node.prev {
            self.slot_mut(p).next = node.next;
        }
        if let Some(n) = node.next {
            self.slot_mut(n).prev = node.prev;
        }
        *self.slot_mut(slot) = Slot::EMPTY;
        flush.finish(sink);
        Ok(())
    }

    /// Delete every descendant of the capability in `slot` (the capability
    /// itself stays). Costs O(number of descendants), plus the teardown of
    /// objects whose last capability goes.
    pub fn revoke(
        &mut self,
        slot: SlotId,
        sink: &mut (impl EffectSink + ?Sized),
    ) -> Result<(), Error> {
        if self.slot(slot)?.cap.is_none() {
            return Ok(());
        }
        let end = self.descendants_end(slot);
        // Decode: refuse if a non-empty CNode would lose its last capability.
        let slots = self.store.slots();
        let mut cursor = slots[slot.0 as usize].next;
        while cursor != end {
            let Some(c) = cursor else { break };
            let s = &slots[c.0 as usize];
            if let Some(cap) = s.cap
                && cap.kind == ObjectKind::CNode
                && self.cnode_occupied(cap.object)
            {
                let mut count = 0u32;
                let mut inner = slots[slot.0 as usize].next;
                while inner != end {
                    let Some(i) = inner else { break };
                    if slots[i.0 as usize]
                        .cap
                        .is_some_and(|k| k.object == cap.object)
                    {
                        count += 1;
                    }
                    inner = slots[i.0 as usize].next;
                }
                if self
                    .object(cap.object)
                    .is_some_and(|o| o.cap_count == count)
                {
                    return Err(Error::CnodeNotEmpty);
                }
            }
            cursor = s.next;
        }
        // Perform.
        let mut flush = Flush::new(flawed!(self, skip_invalidation_wait));
        let mut cursor = self.store.slots()[slot.0 as usize].next;
        while cursor != end {
            let Some(c) = cursor else { break };
            self.finalise_cap(c, &mut flush, sink);
            cursor = self.store.slots()[c.0 as usize].next;
            *self.slot_mut(c) = Slot::EMPTY;
        }
        self.slot_mut(slot).next = end;
        if let Some(e) = end {
            self.slot_mut(e).prev = Some(slot);
        }
        flush.finish(sink);
        Ok(())
    }

    /// Tear down what the capability in `slot` holds and drop its reference.
    /// Leaves the slot's links alone.
    fn finalise_cap(
        &mut self,
        slot: SlotId,
        flush: &mut Flush,
        sink: &mut (impl EffectSink + ?Sized),
    ) {
        let Some(cap) = self.store.slots()[slot.0 as usize].cap else {
            return;
        };
        if let Some(mapping) = cap.mapping {
            let size_bits = self.frame_bits(cap.object);
            if let Some((unit, did)) = self.unmap_emit(size_bits, mapping.space, mapping.ipa, sink)
            {
                flush.note(unit, did, sink);
            }
            self.unlink_io_mapping(mapping.space, mapping.ipa, size_bits);
            if let Some(c) = self.slot_mut(slot).cap.as_mut() {
                c.mapping = None;
            }
        }
        if let Some(cpu) = cap.cpu {
            let size_bits = self
                .object(cap.object)
                .map_or(crate::PAGE_BITS, |o| o.size_bits);
            sink.push(Effect::UnmapCpuPage {
                vspace: cpu.vspace,
                vaddr: cpu.vaddr,
                size_bits,
            });
            if let Some(c) = self.slot_mut(slot).cap.as_mut() {
                c.cpu = None;
            }
        }
        let Some(object) = self.object_mut(cap.object) else {
            sink.capability_removed(cap.kind, false);
            return;
        };
        object.cap_count -= 1;
        let destroyed = object.cap_count == 0 && !object.permanent;
        if destroyed {
            self.destroy(cap.object, flush, sink);
            self.release(cap.object);
        }
        sink.capability_removed(cap.kind, destroyed);
    }

    /// The size (as a power of two) of the Frame `object` a mapping maps
    /// (4 KiB if the record is gone, which a live capability rules out).
    pub(crate) fn frame_bits(&self, object: ObjectId) -> u8 {
        self.object(object)
            .map_or(crate::PAGE_BITS, |o| o.size_bits)
    }

    /// Emit the unmap of the `2^size_bits` bytes at `ipa` in `space`;
    /// returns the space's `(unit, DID)` (`None`, and nothing emitted, if
    /// it is not a live IoSpace) for the caller's invalidation.
    pub(crate) fn unmap_emit(
        &self,
        size_bits: u8,
        space: ObjectId,
        ipa: u64,
        sink: &mut (impl EffectSink + ?Sized),
    ) -> Option<(u8, u16)> {
        let (unit, did) = self.space_tag(space)?;
        sink.push(Effect::UnmapIoPage {
            unit,
            did,
            space,
            ipa,
            size_bits,
        });
        Some((unit, did))
    }

    /// Free the record of an object with no capabilities and no live
    /// children, then walk up the Untyped chain doing the same.
    fn release(&mut self, id: ObjectId) {
        let mut current = id;
        loop {
            let Some(o) = self.object(current) else {
                return;
            };
            if o.cap_count > 0 || o.live_children > 0 || o.permanent {
                return;
            }
            let parent = o.parent;
            self.store.objects_mut()[current.0 as usize] = None;
            let Some(p) = parent else { return };
            let Some(po) = self.object_mut(p) else {
                return;
            };
            po.live_children -= 1;
            current = p;
        }
    }

    /// Object-specific teardown when the last capability goes.
    fn destroy(&mut self, id: ObjectId, flush: &mut Flush, sink: &mut (impl EffectSink + ?Sized)) {
        let Some(state) = self.state(id) else { return };
        match state {
            ObjectState::IoSpace {
                unit,
                did,
                fault_queue,
            } => {
                let unit_id = self.unit_of(unit).map_or(0, |u| u.id);
                // Unmap every frame mapped in this space, in slot order: a
                // scan of the slot table (the IPA index answers the map's
                // overlap check; teardown is the one walk over mappings).
                for i in 0..self.store.slots().len() {
                    let Some((object, ipa)) = self.store.slots()[i]
                        .cap
                        .as_ref()
                        .and_then(|c| Some((c.object, c.mapping?)))
                        .and_then(|(object, m)| (m.space == id).then_some((object, m.ipa)))
                    else {
                        continue;
                    };
                    let size_bits = self.frame_bits(object);
                    self.unmap_emit(size_bits, id, ipa, sink);
                    if !flawed!(self, teardown_keeps_ipa_index) {
                        self.forget_ipa(id, ipa, size_bits);
                    }
                    if let Some(c) = self.store.slots_mut()[i].cap.as_mut() {
                        c.mapping = None;
                    }
                }
                if !flawed!(self, keep_devices_on_space_delete) {
                    self.detach_all_using(|a| a.space == id, flush, sink);
                }
                for i in 0..self.store.objects().len() {
                    let oid = ObjectId(i as u32);
                    if let Some(ObjectState::IoUserTable {
                        space: Some(s),
                        root_ipa,
                    }) = self.state(oid)
                        && s == id
                    {
                        self.set_state(
                            oid,
                            ObjectState::IoUserTable {
                                space: None,
                                root_ipa,
                            },
                        );
                    }
                }
                if fault_queue.is_some() {
                    sink.push(Effect::RouteFaults {
                        unit: unit_id,
                        source: FaultSource::Domain(did),
                        queue: None,
                    });
                }
                flush.note(unit_id, did, sink);
            }
            ObjectState::IoUserTable { .. } => {
                self.detach_all_using(|a| a.user_table == Some(id), flush, sink);
            }
            ObjectState::IoDevice {
                unit,
                rid,
                attached,
                fault_queue,
            } => {
                if attached.is_some() {
                    self.detach_device_now(id, flush, sink);
                }
                if fault_queue.is_some() {
                    let unit_id = self.unit_of(unit).map_or(0, |u| u.id);
                    sink.push(Effect::RouteFaults {
                        unit: unit_id,
                        source: FaultSource::Device(rid),
                        queue: None,
                    });
                }
                for i in 0..self.store.objects().len() {
                    let oid = ObjectId(i as u32);
                    if let Some(ObjectState::IoPasid {
                        device: Some(d),
                        pasid,
                        attached,
                    }) = self.state(oid)
                        && d == id
                    {
                        self.set_state(
                            oid,
                            ObjectState::IoPasid {
                                device: None,
                                pasid,
                                attached,
                            },
                        );
                    }
                }
            }
            ObjectState::IoPasid {
                attached: Some(_), ..
            } => self.detach_pasid_now(id, flush, sink),
            ObjectState::Plain
                if self.object(id).map(|o| o.kind) == Some(ObjectKind::IoFaultQueue) =>
            {
                for i in 0..self.store.objects().len() {
                    let oid = ObjectId(i as u32);
                    match self.state(oid) {
                        Some(ObjectState::IoSpace {
                            unit,
                            did,
                            fault_queue: Some(q),
                        }) if q == id => {
                            self.set_state(
                                oid,
                                ObjectState::IoSpace {
                                    unit,
                                    did,
                                    fault_queue: None,
                                },
                            );
                            let unit_id = self.unit_of(unit).map_or(0, |u| u.id);
                            sink.push(Effect::RouteFaults {
                                unit: unit_id,
                                source: FaultSource::Domain(did),
                                queue: None,
                            });
                        }
                        Some(ObjectState::IoDevice {
                            unit,
                            rid,
                            attached,
                            fault_queue: Some(q),
                        }) if q == id => {
                            self.set_state(
                                oid,
                                ObjectState::IoDevice {
                                    unit,
                                    rid,
                                    attached,
                                    fault_queue: None,
                                },
                            );
                            let unit_id = self.unit_of(unit).map_or(0, |u| u.id);
                            sink.push(Effect::RouteFaults {
                                unit: unit_id,
                                source: FaultSource::Device(rid),
                                queue: None,
                            });
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// Detach every device and PASID whose attachment matches.
    fn detach_all_using(
        &mut self,
        matches: impl Fn(&Attachment) -> bool,
        flush: &mut Flush,
        sink: &mut (impl EffectSink + ?Sized),
    ) {
        for i in 0..self.store.objects().len() {
            let oid = ObjectId(i as u32);
            match self.state(oid) {
                Some(ObjectState::IoDevice {
                    attached: Some(a), ..
                }) if matches(&a) => self.detach_device_now(oid, flush, sink),
                _ => {}
            }
        }
        for i in 0..self.store.objects().len() {
            let oid = ObjectId(i as u32);
            match self.state(oid) {
                Some(ObjectState::IoPasid {
                    attached: Some(a), ..
                }) if matches(&a) => self.detach_pasid_now(oid, flush, sink),
                _ => {}
            }
        }
    }

    /// Block a device: detach its PASIDs, clear its entry, note the domain.
    pub(crate) fn detach_device_now(
        &mut self,
        device: ObjectId,
        flush: &mut Flush,
        sink: &mut (impl EffectSink + ?Sized),
    ) {
        let Some(ObjectState::IoDevice {
            unit,
            rid,
            attached: Some(attachment),
            fault_queue,
        }) = self.state(device)
        else {
            return;
        };
        for i in 0..self.store.objects().len() {
            let oid = ObjectId(i as u32);
            if let Some(ObjectState::IoPasid {
                device: Some(d),
                attached: Some(_),
                ..
            }) = self.state(oid)
                && d == device
            {
                self.detach_pasid_now(oid, flush, sink);
            }
        }
        let unit_id = self.unit_of(unit).map_or(0, |u| u.id);
        sink.push(Effect::ClearDeviceEntry { unit: unit_id, rid });
        if let Some((u, did)) = self.space_tag(attachment.space) {
            flush.note(u, did, sink);
        }
        self.set_state(
            device,
            ObjectState::IoDevice {
                unit,
                rid,
                attached: None,
                fault_queue,
            },
        );
    }

    /// Block one PASID: clear its entry, note the domain.
    pub(crate) fn detach_pasid_now(
        &mut self,
        pasid_object: ObjectId,
        flush: &mut Flush,
        sink: &mut (impl EffectSink + ?Sized),
    ) {
        let Some(ObjectState::IoPasid {
            device,
            pasid,
            attached: Some(attachment),
        }) = self.state(pasid_object)
        else {
            return;
        };
        if let Some(ObjectState::IoDevice { unit, rid, .. }) = device.and_then(|d| self.state(d)) {
            let unit_id = self.unit_of(unit).map_or(0, |u| u.id);
            sink.push(Effect::ClearPasidEntry {
                unit: unit_id,
                rid,
                pasid,
            });
        }
        if let Some((u, did)) = self.space_tag(attachment.space) {
            flush.note(u, did, sink);
        }
        self.set_state(
            pasid_object,
            ObjectState::IoPasid {
                device,
                pasid,
                attached: None,
            },
        );
    }

    // ----- retype -----

    /// Carve one new object out of the Untyped named by the cap in `untyped`
    /// (which needs WRITE), placing its capability (all rights) in `dest` as
    /// a child of the Untyped capability.
    ///
    /// The object goes at the Untyped's watermark rounded up to the object's
    /// alignment (its size); the watermark restarts at 0 only when no object
    /// carved from the Untyped is live, so a live object is never overlapped.
    /// Returns [`Error::UntypedExhausted`] when the object does not fit.
    pub fn retype(
        &mut self,
        untyped: SlotId,
        new: NewObject,
        dest: SlotId,
        sink: &mut (impl EffectSink + ?Sized),
    ) -> Result<ObjectId, Error> {
        let ucap = *self.lookup_as(untyped, ObjectKind::Untyped, Rights::WRITE)?;
        self.need_empty(dest)?;
        let plan = self.plan_retypes(ucap.object, new, 1)?;
        let RetypePlan {
            id,
            kind,
            size_bits,
            start,
            state,
            device,
            untyped_paddr,
        } = plan;
        // Perform.
        self.create_object(
            id,
            Object {
                kind,
                paddr: start,
                size_bits,
                has_memory: true,
                permanent: false,
                cap_count: 0,
                parent: Some(ucap.object),
                live_children: 0,
                state,
            },
        );
        if let Some(u) = self.object_mut(ucap.object) {
            u.live_children += 1;
            u.state = ObjectState::Untyped {
                watermark: start + (1u64 << size_bits) - untyped_paddr,
                device,
            };
        }
        self.place_cap(
            dest,
            Cap {
                object: id,
                kind,
                rights: Rights::ALL,
                badge: Badge(0),
                mapping: None,
                cpu: None,
            },
            Some(untyped),
        );
        if !device && kind != ObjectKind::Untyped {
            sink.push(Effect::ClearMemory {
                paddr: start,
                size_bits,
            });
        }
        Ok(id)
    }

    /// Whether `count` successive [`Caps::retype`]s of `new` from the
    /// Untyped in `untyped`, each into a distinct empty slot, would all
    /// succeed: `Ok` exactly when they would, else the error the first
    /// failing one would return (room at the watermark with each object's
    /// alignment, object records, DIDs for IoSpaces, slot memory for
    /// CNodes). Changes nothing. The destinations are the caller's to
    /// check ([`Error::SlotOccupied`] comes before all but the rights
    /// check in `retype`). `count` 0 answers `Ok`.
    ///
    /// This is what makes a retype of many objects all-or-nothing: check
    /// with this, then the retypes cannot fail.
    pub fn check_retype(&self, untyped: SlotId, new: NewObject, count: usize) -> Result<(), Error> {
        if count == 0 {
            return Ok(());
        }
        let ucap = *self.lookup_as(untyped, ObjectKind::Untyped, Rights::WRITE)?;
        self.plan_retypes(ucap.object, new, count).map(|_| ())
    }

    /// The decode of `count` successive retypes of `new` out of the
    /// Untyped object `untyped` (its capability already checked): every
    /// check `retype` makes after the destination's, in its order, for
    /// each of them in turn. Returns the placement of the first.
    fn plan_retypes(
        &self,
        untyped: ObjectId,
        new: NewObject,
        count: usize,
    ) -> Result<RetypePlan, Error> {
        let size_bits = new.size_bits().ok_or(Error::InvalidSize)?;
        let Some(uobj) = self.object(untyped).copied() else {
            return Err(Error::DeadObject);
        };
        let ObjectState::Untyped { watermark, device } = uobj.state else {
            return Err(Error::WrongKind);
        };
        let kind = new.kind();
        if device && !matches!(kind, ObjectKind::Frame | ObjectKind::Untyped) {
            return Err(Error::DeviceMemory);
        }
        let mut state = match new {
            NewObject::Untyped { .. } => ObjectState::Untyped {
                watermark: 0,
                device,
            },
            _ => ObjectState::Plain,
        };
        // DIDs and records the retypes may take, one each.
        let mut free_dids = usize::MAX;
        if let NewObject::IoSpace { iommu } = new {
            let icap = *self.lookup_as(iommu, ObjectKind::IommuControl, Rights::WRITE)?;
            let unit = self.unit_of(icap.object).ok_or(Error::DeadObject)?;
            let did = self.free_did(icap.object, unit.domain_ids)?;
            state = ObjectState::IoSpace {
                unit: icap.object,
                did,
                fault_queue: None,
            };
            free_dids = self.free_dids(icap.object, unit.domain_ids);
        }
        let id = self.free_record()?;
        let free_records = self.store.objects().iter().filter(|o| o.is_none()).count();
        let region_end = uobj.paddr + (1u64 << uobj.size_bits);
        let size = 1u64 << size_bits;
        let mut watermark = watermark;
        let mut first = None;
        for made in 0..count {
            if made >= free_dids {
                return Err(Error::NoDomainIds);
            }
            if made >= free_records {
                return Err(Error::ObjectTableFull);
            }
            // The retypes before this one are live children too.
            if (uobj.live_children == 0 && made == 0) || flawed!(self, retype_overlap) {
                watermark = 0;
            }
            let start = (uobj.paddr + watermark)
                .checked_add(size - 1)
                .map(|x| x & !(size - 1));
            let Some(start) =
                start.filter(|s| s.checked_add(size).is_some_and(|e| e <= region_end))
            else {
                return Err(Error::UntypedExhausted);
            };
            if let NewObject::CNode { size_bits: slots } = new {
                let first_slot = self
                    .store
                    .cnode_slots(start, slots)
                    .filter(|f| (f.0 as usize) + (1usize << slots) <= self.store.slots().len())
                    .ok_or(Error::NoSlotMemory)?;
                if made == 0 {
                    state = ObjectState::CNode {
                        first_slot,
                        size_bits: slots,
                    };
                }
            }
            first.get_or_insert(start);
            watermark = start + size - uobj.paddr;
        }
        Ok(RetypePlan {
            id,
            kind,
            size_bits,
            start: first.unwrap_or(uobj.paddr),
            state,
            device,
            untyped_paddr: uobj.paddr,
        })
    }

    /// How many DIDs of the unit no live IoSpace uses: one object-table
    /// scan, counting on live IoSpaces of a unit having distinct DIDs below
    /// its limit (the unique-tags invariant).
    fn free_dids(&self, unit: ObjectId, domain_ids: u16) -> usize {
        let used = self
            .live_objects()
            .filter(|(_, o)| {
                matches!(o.state, ObjectState::IoSpace { unit: u, did, .. } if u == unit && did < domain_ids)
            })
            .count();
        usize::from(domain_ids).saturating_sub(used)
    }

    /// Smallest DID of the unit not used by a live IoSpace.
    fn free_did(&self, unit: ObjectId, domain_ids: u16) -> Result<u16, Error> {
        (0..domain_ids)
            .find(|&d| {
                !self.live_objects().any(|(_, o)| {
                    matches!(o.state, ObjectState::IoSpace { unit: u, did, .. } if u == unit && did == d)
                })
            })
            .ok_or(Error::NoDomainIds)
    }
}

/// Where [`Caps::retype`] puts the object it makes, as its decode decided.
struct RetypePlan {
    id: ObjectId,
    kind: ObjectKind,
    size_bits: u8,
    start: u64,
    state: ObjectState,
    device: bool,
    untyped_paddr: u64,
}
