//! The IOMMU object state machine: devices, IoSpaces, user tables, PASIDs,
//! fault queues and IO mappings of Frames.
//!
//! Rules (DESIGN "The IOMMU objects"):
//! - an IO mapping's rights never exceed the Frame capability's rights, and
//!   each Frame capability copy holds at most one mapping;
//! - a device is attached to at most one IoSpace (directly, or through an
//!   IoUserTable of that IoSpace); all PASIDs of a device use that IoSpace;
//! - at most one live IoDevice per (unit, requester id) and one live IoPasid
//!   per (device, PASID), with the PASID below the unit's limit;
//! - each live IoSpace has a DID/VMID unique on its unit;
//! - configuration invocations need WRITE on every capability that names a
//!   configured object.

use crate::caps::Caps;
use crate::effect::{Effect, EffectSink, FaultSource, Flush};
use crate::error::Error;
use crate::object::{Attachment, Object, ObjectState};
use crate::storage::{Cap, IoMapping, Storage};
use crate::types::{Badge, ObjectId, ObjectKind, PAGE_BITS, Rights, SlotId};

impl<S: Storage> Caps<S> {
    fn new_child_object(
        &mut self,
        parent_slot: SlotId,
        dest: SlotId,
        id: ObjectId,
        kind: ObjectKind,
        state: ObjectState,
    ) {
        self.create_object(
            id,
            Object {
                kind,
                paddr: 0,
                size_bits: 0,
                has_memory: false,
                permanent: false,
                cap_count: 0,
                parent: None,
                live_children: 0,
                state,
            },
        );
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
            Some(parent_slot),
        );
    }

    /// `IommuControl.MintDevice`: an IoDevice for requester `rid`, its cap in
    /// `dest` (a child of the IommuControl cap). The device starts blocked.
    pub fn mint_device(
        &mut self,
        iommu: SlotId,
        rid: u32,
        dest: SlotId,
    ) -> Result<ObjectId, Error> {
        let icap = *self.lookup_as(iommu, ObjectKind::IommuControl, Rights::WRITE)?;
        self.need_empty(dest)?;
        let unit = self.unit_of(icap.object).ok_or(Error::DeadObject)?;
        if rid >= unit.rid_limit {
            return Err(Error::OutOfScope);
        }
        if self.live_objects().any(|(_, o)| {
            matches!(o.state, ObjectState::IoDevice { unit: u, rid: r, .. } if u == icap.object && r == rid)
        }) {
            return Err(Error::DeviceInUse);
        }
        let id = self.free_record()?;
        self.new_child_object(
            iommu,
            dest,
            id,
            ObjectKind::IoDevice,
            ObjectState::IoDevice {
                unit: icap.object,
                rid,
                attached: None,
                fault_queue: None,
            },
        );
        Ok(id)
    }

    /// `IrqControl.Issue`: an IrqHandler for line `irq`, its cap in `dest`.
    pub fn issue_irq_handler(
        &mut self,
        control: SlotId,
        irq: u16,
        dest: SlotId,
    ) -> Result<ObjectId, Error> {
        let ccap = *self.lookup_as(control, ObjectKind::IrqControl, Rights::WRITE)?;
        self.need_empty(dest)?;
        let Some(ObjectState::IrqControl { irq_limit }) = self.state(ccap.object) else {
            return Err(Error::DeadObject);
        };
        if irq >= irq_limit {
            return Err(Error::OutOfScope);
        }
        if self
            .live_objects()
            .any(|(_, o)| matches!(o.state, ObjectState::IrqHandler { irq: i } if i == irq))
        {
            return Err(Error::DeviceInUse);
        }
        let id = self.free_record()?;
        self.new_child_object(
            control,
            dest,
            id,
            ObjectKind::IrqHandler,
            ObjectState::IrqHandler { irq },
        );
        Ok(id)
    }

    /// `IoDevice.MintPasid`: an IoPasid for (`device`, `pasid`), its cap in
    /// `dest` (a child of the device cap).
    pub fn mint_pasid(
        &mut self,
        device: SlotId,
        pasid: u32,
        dest: SlotId,
    ) -> Result<ObjectId, Error> {
        let dcap = *self.lookup_as(device, ObjectKind::IoDevice, Rights::WRITE)?;
        self.need_empty(dest)?;
        let Some(ObjectState::IoDevice { unit, .. }) = self.state(dcap.object) else {
            return Err(Error::DeadObject);
        };
        let unit = self.unit_of(unit).ok_or(Error::DeadObject)?;
        if u64::from(pasid) >= (1u64 << unit.pasid_bits) {
            return Err(Error::PasidOutOfRange);
        }
        if !flawed!(self, duplicate_pasid)
            && self.live_objects().any(|(_, o)| {
                matches!(o.state, ObjectState::IoPasid { device: Some(d), pasid: p, .. } if d == dcap.object && p == pasid)
            })
        {
            return Err(Error::PasidInUse);
        }
        let id = self.free_record()?;
        self.new_child_object(
            device,
            dest,
            id,
            ObjectKind::IoPasid,
            ObjectState::IoPasid {
                device: Some(dcap.object),
                pasid,
                attached: None,
            },
        );
        Ok(id)
    }

    /// Whether `2^size_bits` bytes at `ipa` may be mapped in the live
    /// IoSpace `space`: aligned to their size, inside the unit's IPA range,
    /// outside its reserved window (`InvalidAddress`; `DeadObject` for a
    /// dead space). Returns the space's `(unit number, DID)`
    /// ([`Caps::space_tag`]), read from the same records. Inlined: its
    /// answer then stays in registers (`IoSpace.Map` paid about 20 guest
    /// instructions to pack and unpack it).
    #[inline(always)]
    fn check_ipa(&self, space: ObjectId, ipa: u64, size_bits: u8) -> Result<(u8, u16), Error> {
        let Some(ObjectState::IoSpace { unit, did, .. }) = self.object(space).map(|o| &o.state)
        else {
            return Err(Error::DeadObject);
        };
        let Some(ObjectState::IommuControl(unit)) = self.object(*unit).map(|o| &o.state) else {
            return Err(Error::DeadObject);
        };
        let size = 1u64 << size_bits;
        let end = ipa.checked_add(size).ok_or(Error::InvalidAddress)?;
        let reserved_end = unit
            .reserved_ipa_base
            .saturating_add(unit.reserved_ipa_size);
        if ipa & (size - 1) != 0
            || end > (1u64 << unit.ipa_bits)
            || (unit.reserved_ipa_size != 0 && ipa < reserved_end && unit.reserved_ipa_base < end)
        {
            return Err(Error::InvalidAddress);
        }
        Ok((unit.id, *did))
    }

    /// `IoSpace.BindUserTable`: an IoUserTable rooted at `root_ipa` (4 KiB
    /// aligned, inside the IPA range, outside the reserved window) in the
    /// IoSpace named by `space`; its cap goes in `dest` (a child of `space`).
    pub fn bind_user_table(
        &mut self,
        space: SlotId,
        root_ipa: u64,
        dest: SlotId,
    ) -> Result<ObjectId, Error> {
        let scap = *self.lookup_as(space, ObjectKind::IoSpace, Rights::WRITE)?;
        self.need_empty(dest)?;
        self.check_ipa(scap.object, root_ipa, PAGE_BITS)?;
        let id = self.free_record()?;
        self.new_child_object(
            space,
            dest,
            id,
            ObjectKind::IoUserTable,
            ObjectState::IoUserTable {
                space: Some(scap.object),
                root_ipa,
            },
        );
        Ok(id)
    }

    /// Where a cap to an IoSpace or IoUserTable (with WRITE) would attach.
    fn attach_target(&self, target: SlotId) -> Result<(Attachment, Option<u64>), Error> {
        let cap = *self.lookup(target)?;
        match cap.kind {
            ObjectKind::IoSpace | ObjectKind::IoUserTable => {}
            _ => return Err(Error::WrongKind),
        }
        if !cap.rights.contains(Rights::WRITE) {
            return Err(Error::InsufficientRights);
        }
        match self.state(cap.object) {
            Some(ObjectState::IoSpace { .. }) => Ok((
                Attachment {
                    space: cap.object,
                    user_table: None,
                },
                None,
            )),
            Some(ObjectState::IoUserTable {
                space: Some(space),
                root_ipa,
            }) => Ok((
                Attachment {
                    space,
                    user_table: Some(cap.object),
                },
                Some(root_ipa),
            )),
            _ => Err(Error::DeadObject),
        }
    }

    /// `IoDevice.Attach` / `AttachNested`: point the device named by `device`
    /// at the IoSpace or IoUserTable named by `target`. The device must be
    /// blocked (detach first to move it).
    pub fn attach_device(
        &mut self,
        device: SlotId,
        target: SlotId,
        sink: &mut (impl EffectSink + ?Sized),
    ) -> Result<(), Error> {
        let dcap = *self.lookup_as(device, ObjectKind::IoDevice, Rights::WRITE)?;
        let (attachment, stage1_root) = self.attach_target(target)?;
        let Some(ObjectState::IoDevice {
            unit,
            rid,
            attached,
            fault_queue,
        }) = self.state(dcap.object)
        else {
            return Err(Error::DeadObject);
        };
        let Some(ObjectState::IoSpace {
            unit: space_unit,
            did,
            ..
        }) = self.state(attachment.space)
        else {
            return Err(Error::DeadObject);
        };
        if space_unit != unit {
            return Err(Error::WrongUnit);
        }
        if attached.is_some() {
            return Err(Error::AlreadyAttached);
        }
        let unit_id = self.unit_of(unit).ok_or(Error::DeadObject)?.id;
        sink.push(Effect::InstallDeviceEntry {
            unit: unit_id,
            rid,
            did,
            space: attachment.space,
            stage1_root,
        });
        self.set_state(
            dcap.object,
            ObjectState::IoDevice {
                unit,
                rid,
                attached: Some(attachment),
                fault_queue,
            },
        );
        Ok(())
    }

    /// `IoDevice.Detach`: block the device and every PASID of it; returns
    /// after the invalidation has completed.
    pub fn detach_device(
        &mut self,
        device: SlotId,
        sink: &mut (impl EffectSink + ?Sized),
    ) -> Result<(), Error> {
        let dcap = *self.lookup_as(device, ObjectKind::IoDevice, Rights::WRITE)?;
        let Some(ObjectState::IoDevice { attached, .. }) = self.state(dcap.object) else {
            return Err(Error::DeadObject);
        };
        if attached.is_none() {
            return Err(Error::NotAttached);
        }
        let mut flush = Flush::new(flawed!(self, skip_invalidation_wait));
        self.detach_device_now(dcap.object, &mut flush, sink);
        flush.finish(sink);
        Ok(())
    }

    /// `IoPasid.Attach`: point the PASID at the IoSpace or IoUserTable named
    /// by `target`, which must use the IoSpace its device is attached to.
    pub fn attach_pasid(
        &mut self,
        pasid: SlotId,
        target: SlotId,
        sink: &mut (impl EffectSink + ?Sized),
    ) -> Result<(), Error> {
        let pcap = *self.lookup_as(pasid, ObjectKind::IoPasid, Rights::WRITE)?;
        let (attachment, stage1_root) = self.attach_target(target)?;
        let Some(ObjectState::IoPasid {
            device,
            pasid: number,
            attached,
        }) = self.state(pcap.object)
        else {
            return Err(Error::DeadObject);
        };
        let Some(ObjectState::IoDevice {
            rid,
            attached: device_attached,
            ..
        }) = device.and_then(|d| self.state(d))
        else {
            return Err(Error::DeadObject);
        };
        if attached.is_some() {
            return Err(Error::AlreadyAttached);
        }
        let Some(device_attachment) = device_attached else {
            return Err(Error::DeviceNotAttached);
        };
        if device_attachment.space != attachment.space {
            return Err(Error::SpaceMismatch);
        }
        let (unit_id, did) = self.space_tag(attachment.space).ok_or(Error::DeadObject)?;
        sink.push(Effect::InstallPasidEntry {
            unit: unit_id,
            rid,
            pasid: number,
            did,
            space: attachment.space,
            stage1_root,
        });
        self.set_state(
            pcap.object,
            ObjectState::IoPasid {
                device,
                pasid: number,
                attached: Some(attachment),
            },
        );
        Ok(())
    }

    /// `IoPasid.Detach`: block the PASID; returns after the invalidation has
    /// completed.
    pub fn detach_pasid(
        &mut self,
        pasid: SlotId,
        sink: &mut (impl EffectSink + ?Sized),
    ) -> Result<(), Error> {
        let pcap = *self.lookup_as(pasid, ObjectKind::IoPasid, Rights::WRITE)?;
        let Some(ObjectState::IoPasid { attached, .. }) = self.state(pcap.object) else {
            return Err(Error::DeadObject);
        };
        if attached.is_none() {
            return Err(Error::NotAttached);
        }
        let mut flush = Flush::new(flawed!(self, skip_invalidation_wait));
        self.detach_pasid_now(pcap.object, &mut flush, sink);
        flush.finish(sink);
        Ok(())
    }

    /// `IoSpace.Map`: map the frame named by `frame` at `ipa` in the IoSpace
    /// named by `space` (WRITE) with `rights` (a non-empty subset of
    /// read/write, within the frame cap's rights). The frame cap copy then
    /// holds this mapping; it may hold only one.
    pub fn map_io(
        &mut self,
        frame: SlotId,
        space: SlotId,
        ipa: u64,
        rights: Rights,
        sink: &mut (impl EffectSink + ?Sized),
    ) -> Result<(), Error> {
        // The capabilities and the Frame's record are read in place, not
        // copied (a `Cap` and an `Object` are 64 and 80 bytes).
        let fcap = self.lookup_as(frame, ObjectKind::Frame, Rights::NONE)?;
        let (fobject, frights) = (fcap.object, fcap.rights);
        let held = fcap.mapping.is_some() || fcap.cpu.is_some();
        let space = self
            .lookup_as(space, ObjectKind::IoSpace, Rights::WRITE)?
            .object;
        if held {
            return Err(Error::AlreadyMapped);
        }
        if rights.is_empty() || !Rights::READ_WRITE.contains(rights) {
            return Err(Error::InvalidRights);
        }
        if !frights.contains(rights) {
            return Err(Error::InsufficientRights);
        }
        let Some(fobj) = self.object(fobject) else {
            return Err(Error::DeadObject);
        };
        let (paddr, size_bits) = (fobj.paddr, fobj.size_bits);
        let (unit, did) = self.check_ipa(space, ipa, size_bits)?;
        // The overlap check asks the IPA index: a constant number of
        // probes, however many mappings the IoSpace holds. Its answer
        // says where the mapping's entries go.
        let Some(spot) = self.ipa_spot(space, ipa, size_bits) else {
            return Err(Error::AddressInUse);
        };
        // Checked: from here on nothing fails. The index first, while the
        // search's answer is at hand, then the capability, then the
        // effect (the sink does not read the capabilities).
        if !flawed!(self, map_skips_index) {
            self.remember_ipa_at(space, frame, spot);
        }
        if let Some(c) = self.slot_mut(frame).cap.as_mut() {
            c.mapping = Some(IoMapping { space, ipa, rights });
        }
        sink.push(Effect::MapIoPage {
            unit,
            did,
            space,
            ipa,
            paddr,
            size_bits,
            rights,
        });
        Ok(())
    }

    /// `IoSpace.Unmap` (invoked on the frame cap): remove the mapping this
    /// frame cap copy holds; returns after the invalidation has completed.
    pub fn unmap_io(
        &mut self,
        frame: SlotId,
        sink: &mut (impl EffectSink + ?Sized),
    ) -> Result<(), Error> {
        let fcap = self.lookup_as(frame, ObjectKind::Frame, Rights::NONE)?;
        let Some(mapping) = fcap.mapping else {
            return Err(Error::NotMapped);
        };
        let size_bits = self.frame_bits(fcap.object);
        let tag = self.unmap_emit(size_bits, mapping.space, mapping.ipa, sink);
        self.unlink_io_mapping(mapping.space, mapping.ipa, size_bits);
        if let Some(c) = self.slot_mut(frame).cap.as_mut() {
            c.mapping = None;
        }
        // One entry of one domain: the invalidation and its wait a `Flush`
        // of that one domain emits, without gathering a batch (the kernel's
        // `IoSpace.Unmap` paid about 60 instructions for the batch).
        if !flawed!(self, skip_unmap_invalidation)
            && let Some((unit, did)) = tag
        {
            sink.push(Effect::InvalidateDomain { unit, did });
            if !flawed!(self, skip_invalidation_wait) {
                sink.push(Effect::WaitForInvalidation { unit });
            }
        }
        Ok(())
    }

    /// `IoSpace.SetDirtyTracking` and `IoSpace.ReadDirty`: who may turn
    /// dirty tracking on or off, and read (optionally clearing) an
    /// IoSpace's dirty bits into a bitmap Frame. Reading clears hardware
    /// state another driver relies on, and turning tracking on or off
    /// changes how the IoSpace's stage 2 behaves, so both need `WRITE` on
    /// the IoSpace cap (`space`); the bitmap (`bitmap`, for `ReadDirty`)
    /// is written, so its Frame cap needs `WRITE` too. Changes nothing:
    /// returns the IoSpace and the bitmap's Frame objects; the work on the
    /// unit is the kernel's (`iospace::State::read_dirty`).
    pub fn dirty_access(
        &self,
        space: SlotId,
        bitmap: Option<SlotId>,
    ) -> Result<(ObjectId, Option<ObjectId>), Error> {
        let needed = if flawed!(self, dirty_needs_read_only) {
            Rights::READ
        } else {
            Rights::WRITE
        };
        let scap = *self.lookup_as(space, ObjectKind::IoSpace, needed)?;
        self.space_tag(scap.object).ok_or(Error::DeadObject)?;
        let frame = match bitmap {
            Some(slot) => Some(
                self.lookup_as(slot, ObjectKind::Frame, Rights::WRITE)?
                    .object,
            ),
            None => None,
        };
        Ok((scap.object, frame))
    }

    /// `IoFaultQueue.Respond`: who may answer a page request queued in the
    /// IoFaultQueue named by `queue`. An answer changes what a device does
    /// (it retries, reports an error, or stops making page requests), so
    /// it needs `WRITE` on the queue cap, like `Bind`; `Pop` needs only
    /// `READ`, so a holder that may watch faults cannot answer them.
    /// Changes nothing: returns the queue; which requests are pending is
    /// the kernel's (`iospace::State::respond`).
    pub fn respond_access(&self, queue: SlotId) -> Result<ObjectId, Error> {
        let needed = if flawed!(self, respond_needs_read_only) {
            Rights::READ
        } else {
            Rights::WRITE
        };
        Ok(self
            .lookup_as(queue, ObjectKind::IoFaultQueue, needed)?
            .object)
    }

    /// `IoDevice.BindVSpace` (SVA): who may let a device translate through
    /// a CPU address space. The device then reaches everything the
    /// VSpace maps, with the rights of its leaves, and each later CPU
    /// mapping as it appears, so both capabilities need `WRITE`: the
    /// IoDevice's (its translation is configured) and the root
    /// PageTable's (the right `Frame.Map` asks of a VSpace: whoever may
    /// only read a VSpace capability cannot make a device write through
    /// it). The device must not be attached to an IoSpace
    /// (`AlreadyAttached`). Changes nothing: returns the IoDevice and the
    /// PageTable objects; the binding, its revocation on every CPU unmap
    /// and its end are the kernel's (`iospace::State::bind_vspace`).
    pub fn sva_bind_access(
        &self,
        device: SlotId,
        root: SlotId,
    ) -> Result<(ObjectId, ObjectId), Error> {
        let needed = if flawed!(self, sva_bind_read_only) {
            Rights::READ
        } else {
            Rights::WRITE
        };
        let (device, state, root) = self.bind_vspace_lookups(
            (device, ObjectKind::IoDevice, Rights::WRITE),
            (root, needed),
        )?;
        let ObjectState::IoDevice { attached, .. } = state else {
            return Err(Error::DeadObject);
        };
        if attached.is_some() {
            return Err(Error::AlreadyAttached);
        }
        Ok((device, root))
    }

    /// The lookups both `BindVSpace` rules make, in this order: `bound`
    /// (slot, kind, rights), whose object must still have its state
    /// (`DeadObject`), then the root PageTable (slot, rights). Returns
    /// the bound object, its state and the PageTable object.
    fn bind_vspace_lookups(
        &self,
        (bound, kind, bound_rights): (SlotId, ObjectKind, Rights),
        (root, root_rights): (SlotId, Rights),
    ) -> Result<(ObjectId, ObjectState, ObjectId), Error> {
        let bcap = *self.lookup_as(bound, kind, bound_rights)?;
        let state = self.state(bcap.object).ok_or(Error::DeadObject)?;
        let rcap = *self.lookup_as(root, ObjectKind::PageTable, root_rights)?;
        Ok((bcap.object, state, rcap.object))
    }

    /// `IoPasid.BindVSpace` (SVA for one PASID): the rule of
    /// [`Caps::sva_bind_access`] for the IoPasid's (device, PASID), whose
    /// tagged DMA then translates through the CPU address space: `WRITE`
    /// on the IoPasid (its translation is configured) and on the root
    /// PageTable. The IoPasid must not be attached to an IoSpace
    /// (`AlreadyAttached`) and its IoDevice must live (`DeadObject`).
    /// Changes nothing: returns the IoPasid, its IoDevice, the PASID and
    /// the PageTable; the binding is the kernel's
    /// (`iospace::State::bind_vspace` with a PASID).
    pub fn pasid_bind_access(
        &self,
        pasid: SlotId,
        root: SlotId,
    ) -> Result<(ObjectId, ObjectId, u32, ObjectId), Error> {
        let needed = if flawed!(self, pasid_bind_read_only) {
            Rights::READ
        } else {
            Rights::WRITE
        };
        let (pasid, state, root) =
            self.bind_vspace_lookups((pasid, ObjectKind::IoPasid, needed), (root, Rights::WRITE))?;
        let ObjectState::IoPasid {
            device,
            pasid: number,
            attached,
        } = state
        else {
            return Err(Error::DeadObject);
        };
        if attached.is_some() {
            return Err(Error::AlreadyAttached);
        }
        let device = device.ok_or(Error::DeadObject)?;
        Ok((pasid, device, number, root))
    }

    /// Route the IO faults of the IoSpace or IoDevice named by `target`
    /// (WRITE) to the IoFaultQueue named by `queue` (WRITE), replacing any
    /// earlier route.
    pub fn bind_fault_queue(
        &mut self,
        target: SlotId,
        queue: SlotId,
        sink: &mut (impl EffectSink + ?Sized),
    ) -> Result<(), Error> {
        let tcap = *self.lookup(target)?;
        if !matches!(tcap.kind, ObjectKind::IoSpace | ObjectKind::IoDevice) {
            return Err(Error::WrongKind);
        }
        if !tcap.rights.contains(Rights::WRITE) {
            return Err(Error::InsufficientRights);
        }
        let qcap = *self.lookup_as(queue, ObjectKind::IoFaultQueue, Rights::WRITE)?;
        let q = Some(qcap.object);
        match self.state(tcap.object) {
            Some(ObjectState::IoSpace { unit, did, .. }) => {
                let unit_id = self.unit_of(unit).ok_or(Error::DeadObject)?.id;
                sink.push(Effect::RouteFaults {
                    unit: unit_id,
                    source: FaultSource::Domain(did),
                    queue: q,
                });
                self.set_state(
                    tcap.object,
                    ObjectState::IoSpace {
                        unit,
                        did,
                        fault_queue: q,
                    },
                );
            }
            Some(ObjectState::IoDevice {
                unit,
                rid,
                attached,
                ..
            }) => {
                let unit_id = self.unit_of(unit).ok_or(Error::DeadObject)?.id;
                sink.push(Effect::RouteFaults {
                    unit: unit_id,
                    source: FaultSource::Device(rid),
                    queue: q,
                });
                self.set_state(
                    tcap.object,
                    ObjectState::IoDevice {
                        unit,
                        rid,
                        attached,
                        fault_queue: q,
                    },
                );
            }
            _ => return Err(Error::DeadObject),
        }
        Ok(())
    }
}
