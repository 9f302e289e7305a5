//! A deliberately simple reference specification of the capability model.
//!
//! It states the same rules as [`crate::Caps`] in the most direct way, with
//! none of its data-structure cleverness:
//! - the derivation tree is a parent pointer per slot (revoke searches every
//!   slot for descendants; a move rewrites the children's pointers);
//! - reference counts and live-children counts are not stored, they are
//!   recounted from the tables whenever needed;
//! - object death is computed after the fact: every object that had
//!   capabilities before an operation and has none after is torn down, then
//!   records with no capabilities and no live children are freed until
//!   nothing changes.
//!
//! The property tests run random operation sequences on both and require
//! the same result for every operation and the same visible state after it
//! (refinement). The check order of errors is part of the specification.

use std::vec::Vec;

use crate::error::Error;
use crate::object::{Attachment, IommuUnit, NewObject, ObjectState};
use crate::storage::{IoMapping, Storage};
use crate::types::{ObjectId, ObjectKind, PAGE_BITS, Rights};

use super::ops::Op;

/// A capability in the reference model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefCap {
    /// Object index.
    pub object: u32,
    /// Kind.
    pub kind: ObjectKind,
    /// Rights.
    pub rights: Rights,
    /// Badge.
    pub badge: u64,
    /// Mapping held by this Frame cap copy.
    pub mapping: Option<IoMapping>,
    /// Derivation parent slot.
    pub parent: Option<u32>,
}

/// An object in the reference model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefObject {
    /// Kind.
    pub kind: ObjectKind,
    /// `(paddr, size_bits)` for objects with memory.
    pub memory: Option<(u64, u8)>,
    /// Outlives its capabilities.
    pub permanent: bool,
    /// Untyped it was carved from.
    pub parent: Option<u32>,
    /// Kind-specific state (the same vocabulary as the real model).
    pub state: ObjectState,
}

/// What both models show: per slot, per object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Visible {
    /// Per slot: the capability and its derivation parent.
    pub slots: Vec<Option<RefCap>>,
    /// Per object record.
    pub objects: Vec<Option<RefObject>>,
}

/// The reference model.
#[derive(Clone, Debug)]
pub struct Reference {
    /// Slots.
    pub slots: Vec<Option<RefCap>>,
    /// Object records.
    pub objects: Vec<Option<RefObject>>,
}

type R<T> = Result<T, Error>;

impl Reference {
    /// Empty reference with the given table sizes (CNode memory: none).
    pub fn new(slots: usize, objects: usize) -> Self {
        Reference {
            slots: std::vec![None; slots],
            objects: std::vec![None; objects],
        }
    }

    /// The visible state.
    pub fn visible(&self) -> Visible {
        Visible {
            slots: self.slots.clone(),
            objects: self.objects.clone(),
        }
    }

    fn cap(&self, s: u32) -> R<RefCap> {
        self.slots
            .get(s as usize)
            .ok_or(Error::InvalidSlot)?
            .ok_or(Error::EmptySlot)
    }
    fn cap_as(&self, s: u32, kind: ObjectKind, rights: Rights) -> R<RefCap> {
        let c = self.cap(s)?;
        if c.kind != kind {
            return Err(Error::WrongKind);
        }
        if !c.rights.contains(rights) {
            return Err(Error::InsufficientRights);
        }
        Ok(c)
    }
    fn empty(&self, s: u32) -> R<()> {
        match self.slots.get(s as usize).ok_or(Error::InvalidSlot)? {
            Some(_) => Err(Error::SlotOccupied),
            None => Ok(()),
        }
    }
    fn obj(&self, o: u32) -> Option<RefObject> {
        self.objects.get(o as usize).copied().flatten()
    }
    fn state(&self, o: u32) -> Option<ObjectState> {
        self.obj(o).map(|o| o.state)
    }
    fn set_state(&mut self, o: u32, state: ObjectState) {
        if let Some(Some(x)) = self.objects.get_mut(o as usize) {
            x.state = state;
        }
    }
    fn cap_count(&self, o: u32) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|c| c.object == o)
            .count()
    }
    fn live_children(&self, o: u32) -> usize {
        self.objects
            .iter()
            .flatten()
            .filter(|x| x.parent == Some(o))
            .count()
    }
    fn free_record(&self) -> R<u32> {
        self.objects
            .iter()
            .position(Option::is_none)
            .map(|i| i as u32)
            .ok_or(Error::ObjectTableFull)
    }
    fn unit(&self, o: ObjectId) -> Option<IommuUnit> {
        match self.state(o.0)? {
            ObjectState::IommuControl(u) => Some(u),
            _ => None,
        }
    }
    fn live_states(&self) -> impl Iterator<Item = (u32, ObjectState)> + '_ {
        self.objects
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.map(|o| (i as u32, o.state)))
    }

    fn add_cap(&mut self, dest: u32, object: u32, kind: ObjectKind, parent: u32) {
        self.slots[dest as usize] = Some(RefCap {
            object,
            kind,
            rights: Rights::ALL,
            badge: 0,
            mapping: None,
            parent: Some(parent),
        });
    }

    /// Boot an Untyped.
    pub fn boot_untyped(&mut self, dest: u32, paddr: u64, size_bits: u8, device: bool) {
        let id = self.free_record().expect("room");
        self.objects[id as usize] = Some(RefObject {
            kind: ObjectKind::Untyped,
            memory: Some((paddr, size_bits)),
            permanent: false,
            parent: None,
            state: ObjectState::Untyped {
                watermark: 0,
                device,
            },
        });
        self.slots[dest as usize] = Some(RefCap {
            object: id,
            kind: ObjectKind::Untyped,
            rights: Rights::ALL,
            badge: 0,
            mapping: None,
            parent: None,
        });
    }

    /// Boot a permanent control object.
    pub fn boot_control(&mut self, dest: u32, kind: ObjectKind, state: ObjectState) {
        let id = self.free_record().expect("room");
        self.objects[id as usize] = Some(RefObject {
            kind,
            memory: None,
            permanent: true,
            parent: None,
            state,
        });
        self.slots[dest as usize] = Some(RefCap {
            object: id,
            kind,
            rights: Rights::ALL,
            badge: 0,
            mapping: None,
            parent: None,
        });
    }

    /// Run one operation.
    pub fn apply(&mut self, op: &Op) -> R<()> {
        match *op {
            Op::Copy { src, dest } => {
                let c = self.cap(src)?;
                self.empty(dest)?;
                self.slots[dest as usize] = Some(RefCap {
                    mapping: None,
                    parent: Some(src),
                    ..c
                });
                Ok(())
            }
            Op::Mint {
                src,
                dest,
                rights,
                badge,
            } => {
                let c = self.cap(src)?;
                self.empty(dest)?;
                if badge != 0 {
                    if !matches!(
                        c.kind,
                        ObjectKind::Endpoint | ObjectKind::Notification | ObjectKind::IoDevice
                    ) {
                        return Err(Error::NotBadgeable);
                    }
                    if c.badge != 0 {
                        return Err(Error::AlreadyBadged);
                    }
                }
                self.slots[dest as usize] = Some(RefCap {
                    rights: c.rights.intersect(rights),
                    badge: if badge != 0 { badge } else { c.badge },
                    mapping: None,
                    parent: Some(src),
                    ..c
                });
                Ok(())
            }
            Op::Move { src, dest } => {
                let c = self.cap(src)?;
                self.empty(dest)?;
                self.slots[dest as usize] = Some(c);
                self.slots[src as usize] = None;
                for s in self.slots.iter_mut().flatten() {
                    if s.parent == Some(src) {
                        s.parent = Some(dest);
                    }
                }
                Ok(())
            }
            Op::Delete { slot } => {
                let Some(c) = *self.slots.get(slot as usize).ok_or(Error::InvalidSlot)? else {
                    return Ok(());
                };
                if c.kind == ObjectKind::CNode && self.cap_count(c.object) == 1 {
                    // Storage without CNode memory: no CNode can exist.
                    return Err(Error::CnodeNotEmpty);
                }
                self.remove_caps(&[slot]);
                Ok(())
            }
            Op::Revoke { slot } => {
                if self
                    .slots
                    .get(slot as usize)
                    .ok_or(Error::InvalidSlot)?
                    .is_none()
                {
                    return Ok(());
                }
                let victims: Vec<u32> = (0..self.slots.len() as u32)
                    .filter(|&s| self.descends_from(s, slot))
                    .collect();
                self.remove_caps(&victims);
                Ok(())
            }
            Op::Retype {
                untyped,
                object,
                dest,
            } => self.retype(untyped, object, dest),
            Op::MintDevice { iommu, rid, dest } => {
                let ic = self.cap_as(iommu, ObjectKind::IommuControl, Rights::WRITE)?;
                self.empty(dest)?;
                let unit = self.unit(ObjectId(ic.object)).ok_or(Error::DeadObject)?;
                if rid >= unit.rid_limit {
                    return Err(Error::OutOfScope);
                }
                if self.live_states().any(|(_, s)| {
                    matches!(s, ObjectState::IoDevice { unit: u, rid: r, .. } if u.0 == ic.object && r == rid)
                }) {
                    return Err(Error::DeviceInUse);
                }
                let id = self.free_record()?;
                self.new_object(
                    id,
                    ObjectKind::IoDevice,
                    ObjectState::IoDevice {
                        unit: ObjectId(ic.object),
                        rid,
                        attached: None,
                        fault_queue: None,
                    },
                );
                self.add_cap(dest, id, ObjectKind::IoDevice, iommu);
                Ok(())
            }
            Op::DirtyAccess { space, bitmap } => {
                let sc = self.cap_as(space, ObjectKind::IoSpace, Rights::WRITE)?;
                if !matches!(self.state(sc.object), Some(ObjectState::IoSpace { .. })) {
                    return Err(Error::DeadObject);
                }
                if let Some(bitmap) = bitmap {
                    self.cap_as(bitmap, ObjectKind::Frame, Rights::WRITE)?;
                }
                Ok(())
            }
            Op::RespondAccess { queue } => {
                self.cap_as(queue, ObjectKind::IoFaultQueue, Rights::WRITE)?;
                Ok(())
            }
            Op::BindVSpace { device, root } => {
                let dc = self.cap_as(device, ObjectKind::IoDevice, Rights::WRITE)?;
                let Some(ObjectState::IoDevice { attached, .. }) = self.state(dc.object) else {
                    return Err(Error::DeadObject);
                };
                self.cap_as(root, ObjectKind::PageTable, Rights::WRITE)?;
                if attached.is_some() {
                    return Err(Error::AlreadyAttached);
                }
                Ok(())
            }
            Op::BindPasidVSpace { pasid, root } => {
                let pc = self.cap_as(pasid, ObjectKind::IoPasid, Rights::WRITE)?;
                let Some(ObjectState::IoPasid {
                    device, attached, ..
                }) = self.state(pc.object)
                else {
                    return Err(Error::DeadObject);
                };
                self.cap_as(root, ObjectKind::PageTable, Rights::WRITE)?;
                if attached.is_some() {
                    return Err(Error::AlreadyAttached);
                }
                if device.is_none() {
                    return Err(Error::DeadObject);
                }
                Ok(())
            }
            Op::IssueIrq { control, irq, dest } => {
                let cc = self.cap_as(control, ObjectKind::IrqControl, Rights::WRITE)?;
                self.empty(dest)?;
                let Some(ObjectState::IrqControl { irq_limit }) = self.state(cc.object) else {
                    return Err(Error::DeadObject);
                };
                if irq >= irq_limit {
                    return Err(Error::OutOfScope);
                }
                if self
                    .live_states()
                    .any(|(_, s)| matches!(s, ObjectState::IrqHandler { irq: i } if i == irq))
                {
                    return Err(Error::DeviceInUse);
                }
                let id = self.free_record()?;
                self.new_object(id, ObjectKind::IrqHandler, ObjectState::IrqHandler { irq });
                self.add_cap(dest, id, ObjectKind::IrqHandler, control);
                Ok(())
            }
            Op::MintPasid {
                device,
                pasid,
                dest,
            } => {
                let dc = self.cap_as(device, ObjectKind::IoDevice, Rights::WRITE)?;
                self.empty(dest)?;
                let Some(ObjectState::IoDevice { unit, .. }) = self.state(dc.object) else {
                    return Err(Error::DeadObject);
                };
                let unit = self.unit(unit).ok_or(Error::DeadObject)?;
                if u64::from(pasid) >= 1u64 << unit.pasid_bits {
                    return Err(Error::PasidOutOfRange);
                }
                if self.live_states().any(|(_, s)| {
                    matches!(s, ObjectState::IoPasid { device: Some(d), pasid: p, .. } if d.0 == dc.object && p == pasid)
                }) {
                    return Err(Error::PasidInUse);
                }
                let id = self.free_record()?;
                self.new_object(
                    id,
                    ObjectKind::IoPasid,
                    ObjectState::IoPasid {
                        device: Some(ObjectId(dc.object)),
                        pasid,
                        attached: None,
                    },
                );
                self.add_cap(dest, id, ObjectKind::IoPasid, device);
                Ok(())
            }
            Op::BindUserTable {
                space,
                root_ipa,
                dest,
            } => {
                let sc = self.cap_as(space, ObjectKind::IoSpace, Rights::WRITE)?;
                self.empty(dest)?;
                self.check_ipa(sc.object, root_ipa, PAGE_BITS)?;
                let id = self.free_record()?;
                self.new_object(
                    id,
                    ObjectKind::IoUserTable,
                    ObjectState::IoUserTable {
                        space: Some(ObjectId(sc.object)),
                        root_ipa,
                    },
                );
                self.add_cap(dest, id, ObjectKind::IoUserTable, space);
                Ok(())
            }
            Op::AttachDevice { device, target } => {
                let dc = self.cap_as(device, ObjectKind::IoDevice, Rights::WRITE)?;
                let a = self.target(target)?;
                let Some(ObjectState::IoDevice {
                    unit,
                    rid,
                    attached,
                    fault_queue,
                }) = self.state(dc.object)
                else {
                    return Err(Error::DeadObject);
                };
                let Some(ObjectState::IoSpace { unit: su, .. }) = self.state(a.space.0) else {
                    return Err(Error::DeadObject);
                };
                if su != unit {
                    return Err(Error::WrongUnit);
                }
                if attached.is_some() {
                    return Err(Error::AlreadyAttached);
                }
                self.set_state(
                    dc.object,
                    ObjectState::IoDevice {
                        unit,
                        rid,
                        attached: Some(a),
                        fault_queue,
                    },
                );
                Ok(())
            }
            Op::DetachDevice { device } => {
                let dc = self.cap_as(device, ObjectKind::IoDevice, Rights::WRITE)?;
                match self.state(dc.object) {
                    Some(ObjectState::IoDevice {
                        attached: Some(_), ..
                    }) => {
                        self.detach_device(dc.object);
                        Ok(())
                    }
                    _ => Err(Error::NotAttached),
                }
            }
            Op::AttachPasid { pasid, target } => {
                let pc = self.cap_as(pasid, ObjectKind::IoPasid, Rights::WRITE)?;
                let a = self.target(target)?;
                let Some(ObjectState::IoPasid {
                    device,
                    pasid: number,
                    attached,
                }) = self.state(pc.object)
                else {
                    return Err(Error::DeadObject);
                };
                let Some(ObjectState::IoDevice {
                    attached: device_attached,
                    ..
                }) = device.and_then(|d| self.state(d.0))
                else {
                    return Err(Error::DeadObject);
                };
                if attached.is_some() {
                    return Err(Error::AlreadyAttached);
                }
                let Some(da) = device_attached else {
                    return Err(Error::DeviceNotAttached);
                };
                if da.space != a.space {
                    return Err(Error::SpaceMismatch);
                }
                self.set_state(
                    pc.object,
                    ObjectState::IoPasid {
                        device,
                        pasid: number,
                        attached: Some(a),
                    },
                );
                Ok(())
            }
            Op::DetachPasid { pasid } => {
                let pc = self.cap_as(pasid, ObjectKind::IoPasid, Rights::WRITE)?;
                match self.state(pc.object) {
                    Some(ObjectState::IoPasid {
                        attached: Some(_), ..
                    }) => {
                        self.detach_pasid(pc.object);
                        Ok(())
                    }
                    _ => Err(Error::NotAttached),
                }
            }
            Op::MapIo {
                frame,
                space,
                ipa,
                rights,
            } => {
                let fc = self.cap_as(frame, ObjectKind::Frame, Rights::NONE)?;
                let sc = self.cap_as(space, ObjectKind::IoSpace, Rights::WRITE)?;
                if fc.mapping.is_some() {
                    return Err(Error::AlreadyMapped);
                }
                if rights.is_empty() || !Rights::READ_WRITE.contains(rights) {
                    return Err(Error::InvalidRights);
                }
                if !fc.rights.contains(rights) {
                    return Err(Error::InsufficientRights);
                }
                let size_bits = self
                    .obj(fc.object)
                    .and_then(|o| o.memory)
                    .map_or(0, |m| m.1);
                self.check_ipa(sc.object, ipa, size_bits)?;
                let end = ipa + (1u64 << size_bits);
                let overlap = self.slots.iter().flatten().any(|c| match c.mapping {
                    Some(m) if m.space.0 == sc.object => {
                        let other = self.obj(c.object).and_then(|o| o.memory).map_or(0, |m| m.1);
                        m.ipa < end && ipa < m.ipa + (1u64 << other)
                    }
                    _ => false,
                });
                if overlap {
                    return Err(Error::AddressInUse);
                }
                if let Some(c) = self.slots[frame as usize].as_mut() {
                    c.mapping = Some(IoMapping {
                        space: ObjectId(sc.object),
                        ipa,
                        rights,
                    });
                }
                Ok(())
            }
            Op::UnmapIo { frame } => {
                let fc = self.cap_as(frame, ObjectKind::Frame, Rights::NONE)?;
                if fc.mapping.is_none() {
                    return Err(Error::NotMapped);
                }
                if let Some(c) = self.slots[frame as usize].as_mut() {
                    c.mapping = None;
                }
                Ok(())
            }
            Op::BindFaultQueue { target, queue } => {
                let tc = self.cap(target)?;
                if !matches!(tc.kind, ObjectKind::IoSpace | ObjectKind::IoDevice) {
                    return Err(Error::WrongKind);
                }
                if !tc.rights.contains(Rights::WRITE) {
                    return Err(Error::InsufficientRights);
                }
                let qc = self.cap_as(queue, ObjectKind::IoFaultQueue, Rights::WRITE)?;
                let q = Some(ObjectId(qc.object));
                match self.state(tc.object) {
                    Some(ObjectState::IoSpace { unit, did, .. }) => self.set_state(
                        tc.object,
                        ObjectState::IoSpace {
                            unit,
                            did,
                            fault_queue: q,
                        },
                    ),
                    Some(ObjectState::IoDevice {
                        unit,
                        rid,
                        attached,
                        ..
                    }) => self.set_state(
                        tc.object,
                        ObjectState::IoDevice {
                            unit,
                            rid,
                            attached,
                            fault_queue: q,
                        },
                    ),
                    _ => return Err(Error::DeadObject),
                }
                Ok(())
            }
        }
    }

    fn new_object(&mut self, id: u32, kind: ObjectKind, state: ObjectState) {
        self.objects[id as usize] = Some(RefObject {
            kind,
            memory: None,
            permanent: false,
            parent: None,
            state,
        });
    }

    fn descends_from(&self, s: u32, ancestor: u32) -> bool {
        let mut cur = self.slots[s as usize].and_then(|c| c.parent);
        while let Some(p) = cur {
            if p == ancestor {
                return true;
            }
            cur = self.slots[p as usize].and_then(|c| c.parent);
        }
        false
    }

    fn check_ipa(&self, space: u32, ipa: u64, size_bits: u8) -> R<()> {
        let Some(ObjectState::IoSpace { unit, .. }) = self.state(space) else {
            return Err(Error::DeadObject);
        };
        let u = self.unit(unit).ok_or(Error::DeadObject)?;
        let size = 1u64 << size_bits;
        let Some(end) = ipa.checked_add(size) else {
            return Err(Error::InvalidAddress);
        };
        let misaligned = !ipa.is_multiple_of(size);
        let outside = end > 1u64 << u.ipa_bits;
        let reserved = u.reserved_ipa_size != 0
            && ipa < u.reserved_ipa_base.saturating_add(u.reserved_ipa_size)
            && u.reserved_ipa_base < end;
        if misaligned || outside || reserved {
            return Err(Error::InvalidAddress);
        }
        Ok(())
    }

    fn target(&self, t: u32) -> R<Attachment> {
        let c = self.cap(t)?;
        if !matches!(c.kind, ObjectKind::IoSpace | ObjectKind::IoUserTable) {
            return Err(Error::WrongKind);
        }
        if !c.rights.contains(Rights::WRITE) {
            return Err(Error::InsufficientRights);
        }
        match self.state(c.object) {
            Some(ObjectState::IoSpace { .. }) => Ok(Attachment {
                space: ObjectId(c.object),
                user_table: None,
            }),
            Some(ObjectState::IoUserTable { space: Some(s), .. }) => Ok(Attachment {
                space: s,
                user_table: Some(ObjectId(c.object)),
            }),
            _ => Err(Error::DeadObject),
        }
    }

    fn retype(&mut self, untyped: u32, new: NewObject, dest: u32) -> R<()> {
        let uc = self.cap_as(untyped, ObjectKind::Untyped, Rights::WRITE)?;
        self.empty(dest)?;
        let size_bits = new.size_bits().ok_or(Error::InvalidSize)?;
        let u = self.obj(uc.object).ok_or(Error::DeadObject)?;
        let ObjectState::Untyped { watermark, device } = u.state else {
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
        if let NewObject::IoSpace { iommu } = new {
            let ic = self.cap_as(iommu.0, ObjectKind::IommuControl, Rights::WRITE)?;
            let unit = self.unit(ObjectId(ic.object)).ok_or(Error::DeadObject)?;
            let used: Vec<u16> = self
                .live_states()
                .filter_map(|(_, s)| match s {
                    ObjectState::IoSpace { unit, did, .. } if unit.0 == ic.object => Some(did),
                    _ => None,
                })
                .collect();
            let did = (0..unit.domain_ids)
                .find(|d| !used.contains(d))
                .ok_or(Error::NoDomainIds)?;
            state = ObjectState::IoSpace {
                unit: ObjectId(ic.object),
                did,
                fault_queue: None,
            };
        }
        let id = self.free_record()?;
        let (base, ubits) = u.memory.ok_or(Error::WrongKind)?;
        let from = if self.live_children(uc.object) == 0 {
            base
        } else {
            base + watermark
        };
        let size = 1u64 << size_bits;
        let start = from.div_ceil(size) * size;
        if start + size > base + (1u64 << ubits) {
            return Err(Error::UntypedExhausted);
        }
        if kind == ObjectKind::CNode {
            return Err(Error::NoSlotMemory);
        }
        self.objects[id as usize] = Some(RefObject {
            kind,
            memory: Some((start, size_bits)),
            permanent: false,
            parent: Some(uc.object),
            state,
        });
        self.set_state(
            uc.object,
            ObjectState::Untyped {
                watermark: start + size - base,
                device,
            },
        );
        self.add_cap(dest, id, kind, untyped);
        Ok(())
    }

    fn detach_pasid(&mut self, p: u32) {
        if let Some(ObjectState::IoPasid { device, pasid, .. }) = self.state(p) {
            self.set_state(
                p,
                ObjectState::IoPasid {
                    device,
                    pasid,
                    attached: None,
                },
            );
        }
    }

    fn detach_device(&mut self, d: u32) {
        let pasids: Vec<u32> = self
            .live_states()
            .filter_map(|(i, s)| match s {
                ObjectState::IoPasid {
                    device: Some(x), ..
                } if x.0 == d => Some(i),
                _ => None,
            })
            .collect();
        for p in pasids {
            self.detach_pasid(p);
        }
        if let Some(ObjectState::IoDevice {
            unit,
            rid,
            fault_queue,
            ..
        }) = self.state(d)
        {
            self.set_state(
                d,
                ObjectState::IoDevice {
                    unit,
                    rid,
                    attached: None,
                    fault_queue,
                },
            );
        }
    }

    /// Remove the caps in `victims` (a removed cap's children move to its
    /// parent), tear down objects that lost their last cap, then free
    /// records with no caps and no live children until none is left.
    fn remove_caps(&mut self, victims: &[u32]) {
        let had_caps: Vec<u32> = (0..self.objects.len() as u32)
            .filter(|&o| self.obj(o).is_some() && self.cap_count(o) > 0)
            .collect();
        for &v in victims {
            let parent = self.slots[v as usize].and_then(|c| c.parent);
            self.slots[v as usize] = None;
            for s in self.slots.iter_mut().flatten() {
                if s.parent == Some(v) {
                    s.parent = parent;
                }
            }
        }
        for o in had_caps {
            let Some(obj) = self.obj(o) else { continue };
            if self.cap_count(o) > 0 || obj.permanent {
                continue;
            }
            self.teardown(o, obj);
        }
        loop {
            let dead = (0..self.objects.len() as u32).find(|&o| {
                self.obj(o).is_some_and(|x| {
                    !x.permanent && self.cap_count(o) == 0 && self.live_children(o) == 0
                })
            });
            match dead {
                Some(o) => self.objects[o as usize] = None,
                None => break,
            }
        }
    }

    fn teardown(&mut self, o: u32, obj: RefObject) {
        let id = ObjectId(o);
        match obj.state {
            ObjectState::IoSpace { .. } => {
                for c in self.slots.iter_mut().flatten() {
                    if c.mapping.is_some_and(|m| m.space == id) {
                        c.mapping = None;
                    }
                }
                self.detach_using(|a| a.space == id);
                for (i, s) in self.live_states().collect::<Vec<_>>() {
                    if let ObjectState::IoUserTable {
                        space: Some(s),
                        root_ipa,
                    } = s
                        && s == id
                    {
                        self.set_state(
                            i,
                            ObjectState::IoUserTable {
                                space: None,
                                root_ipa,
                            },
                        );
                    }
                }
            }
            ObjectState::IoUserTable { .. } => self.detach_using(|a| a.user_table == Some(id)),
            ObjectState::IoDevice { .. } => {
                self.detach_device(o);
                for (i, s) in self.live_states().collect::<Vec<_>>() {
                    if let ObjectState::IoPasid {
                        device: Some(d),
                        pasid,
                        attached,
                    } = s
                        && d == id
                    {
                        self.set_state(
                            i,
                            ObjectState::IoPasid {
                                device: None,
                                pasid,
                                attached,
                            },
                        );
                    }
                }
            }
            ObjectState::IoPasid { .. } => self.detach_pasid(o),
            ObjectState::Plain if obj.kind == ObjectKind::IoFaultQueue => {
                for (i, s) in self.live_states().collect::<Vec<_>>() {
                    match s {
                        ObjectState::IoSpace {
                            unit,
                            did,
                            fault_queue: Some(q),
                        } if q == id => self.set_state(
                            i,
                            ObjectState::IoSpace {
                                unit,
                                did,
                                fault_queue: None,
                            },
                        ),
                        ObjectState::IoDevice {
                            unit,
                            rid,
                            attached,
                            fault_queue: Some(q),
                        } if q == id => self.set_state(
                            i,
                            ObjectState::IoDevice {
                                unit,
                                rid,
                                attached,
                                fault_queue: None,
                            },
                        ),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    fn detach_using(&mut self, matches: impl Fn(&Attachment) -> bool) {
        for (i, s) in self.live_states().collect::<Vec<_>>() {
            if let ObjectState::IoDevice {
                attached: Some(a), ..
            } = s
                && matches(&a)
            {
                self.detach_device(i);
            }
        }
        for (i, s) in self.live_states().collect::<Vec<_>>() {
            if let ObjectState::IoPasid {
                attached: Some(a), ..
            } = s
                && matches(&a)
            {
                self.detach_pasid(i);
            }
        }
    }
}

/// The visible state of the real model, in the reference's vocabulary.
pub fn visible_of<S: Storage>(caps: &crate::Caps<S>) -> Visible {
    let parents = super::invariants::parents(caps);
    let slots = caps
        .slots()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.cap().map(|c| RefCap {
                object: c.object().0,
                kind: c.kind(),
                rights: c.rights(),
                badge: c.badge().0,
                mapping: c.mapping(),
                parent: parents.get(&crate::SlotId(i as u32)).map(|p| p.0),
            })
        })
        .collect();
    let objects = caps
        .objects()
        .iter()
        .map(|o| {
            o.as_ref().map(|o| RefObject {
                kind: o.kind(),
                memory: o.memory(),
                permanent: o.is_permanent(),
                parent: o.parent().map(|p| p.0),
                state: *o.state(),
            })
        })
        .collect();
    Visible { slots, objects }
}
