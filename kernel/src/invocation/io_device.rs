//! IOMMU device invocations: `IommuControl.Identify` and `MintDevice`,
//! `IoDevice.Attach`, `AttachNested`, `Detach`, `MintPasid`,
//! `IoPasid.Attach`, `Detach`, and SVA: `IoDevice.BindVSpace`,
//! `IoPasid.BindVSpace`.

use super::{Call, Reply};
use crate::iommu_unit::Feature;
use crate::objects::{self, CapSystem};
use abi::{Error, Invocation};
use caps::{ObjectId, ObjectKind, Rights, SlotId};

/// A decoded IommuControl, IoDevice or IoPasid invocation on the invoked
/// capability's slot `slot` where it needs one.
pub(super) enum DeviceOp {
    /// `Identify`: the unit's answer, read by decode.
    Identify([u64; 6]),
    /// `MintDevice`: the IoDevice for `requester` into `dest`.
    MintDevice {
        iommu: SlotId,
        requester: u32,
        dest: SlotId,
    },
    /// `Attach`/`AttachNested` of the device, `IoPasid.Attach` (`pasid`) of
    /// the PASID, to `target` (an IoSpace or IoUserTable); the unit has the
    /// room the attach needs.
    Attach {
        slot: SlotId,
        target: SlotId,
        pasid: bool,
    },
    /// `Detach` of the device, or (`pasid`) of the PASID.
    Detach { slot: SlotId, pasid: bool },
    /// `Detach` of a device (or PASID) bound to a VSpace.
    Unbind { device: ObjectId },
    /// `BindVSpace`: the IoDevice `device` (requester `rid`) translates
    /// through the VSpace rooted at `root` (the PageTable `root_object`);
    /// with `pasid`, `device` is the IoPasid and its tagged DMA does.
    Bind {
        device: ObjectId,
        rid: u32,
        pasid: Option<u32>,
        root: objects::Root,
    },
    /// `MintPasid`: the IoPasid `pasid` of the device into `dest`.
    MintPasid {
        device: SlotId,
        pasid: u32,
        dest: SlotId,
    },
}

/// Decodes an IommuControl, IoDevice or IoPasid invocation; changes nothing.
#[inline(always)]
pub(super) fn decode(caps: &CapSystem, call: &Call) -> Result<DeviceOp, Error> {
    let slot = call.slot;
    match (call.kind, call.invocation) {
        (ObjectKind::IommuControl, Invocation::IommuIdentify) => {
            caps.lookup_as(slot, ObjectKind::IommuControl, Rights::READ)?;
            let guard = crate::iommu_unit::UNIT.lock();
            let unit = guard.as_ref().ok_or(Error::NotSupported)?;
            Ok(DeviceOp::Identify(unit.identify()))
        }
        (ObjectKind::IommuControl, Invocation::IommuMintDevice) => {
            let requester = u32::try_from(call.argument(0)?).map_err(|_| Error::OutOfScope)?;
            Ok(DeviceOp::MintDevice {
                iommu: slot,
                requester,
                dest: call.slot_argument(caps, 1)?,
            })
        }
        (
            ObjectKind::IoDevice,
            invocation @ (Invocation::IoDeviceAttach | Invocation::IoDeviceAttachNested),
        ) => {
            let target = call.extra_cap(caps, 0)?;
            let wanted = if invocation == Invocation::IoDeviceAttach {
                ObjectKind::IoSpace
            } else {
                ObjectKind::IoUserTable
            };
            if caps.lookup(target)?.kind() != wanted {
                return Err(Error::WrongKind);
            }
            check_not_bound(caps, slot)?;
            // Nesting needs a stage 2; a plain attach also works on a unit
            // whose IoSpaces are first-stage tables (VT-d x-flts).
            let able = if invocation == Invocation::IoDeviceAttach {
                crate::io_space::spaces_supported()
            } else {
                crate::io_space::stage2_supported()
            };
            if !able {
                return Err(Error::NotSupported);
            }
            check_attach_room(caps, target)?;
            Ok(DeviceOp::Attach {
                slot,
                target,
                pasid: false,
            })
        }
        (ObjectKind::IoDevice, Invocation::IoDeviceDetach) => {
            let device = caps
                .lookup_as(slot, ObjectKind::IoDevice, caps::Rights::WRITE)?
                .object();
            if crate::io_space::sva_bound(device) {
                return Ok(DeviceOp::Unbind { device });
            }
            Ok(DeviceOp::Detach { slot, pasid: false })
        }
        (ObjectKind::IoDevice, Invocation::IoDeviceBindVSpace) => decode_bind(caps, call),
        (ObjectKind::IoDevice, Invocation::IoDeviceMintPasid) => {
            let pasid = u32::try_from(call.argument(0)?).map_err(|_| Error::PasidOutOfRange)?;
            Ok(DeviceOp::MintPasid {
                device: slot,
                pasid,
                dest: call.slot_argument(caps, 1)?,
            })
        }
        (ObjectKind::IoPasid, Invocation::IoPasidAttach) => {
            if crate::io_space::sva_bound(caps.lookup(slot)?.object()) {
                return Err(Error::AlreadyAttached);
            }
            let target = call.extra_cap(caps, 0)?;
            let (_, root_ipa) = attach_target(caps, target)?;
            let able = if root_ipa.is_some() {
                crate::io_space::stage2_supported()
            } else {
                crate::io_space::spaces_supported()
            };
            if !crate::io_space::pasids_supported(root_ipa.is_some()) || !able {
                return Err(Error::NotSupported);
            }
            check_attach_room(caps, target)?;
            Ok(DeviceOp::Attach {
                slot,
                target,
                pasid: true,
            })
        }
        (ObjectKind::IoPasid, Invocation::IoPasidDetach) => {
            let pasid = caps
                .lookup_as(slot, ObjectKind::IoPasid, Rights::WRITE)?
                .object();
            if crate::io_space::sva_bound(pasid) {
                return Ok(DeviceOp::Unbind { device: pasid });
            }
            Ok(DeviceOp::Detach { slot, pasid: true })
        }
        (ObjectKind::IoPasid, Invocation::IoPasidBindVSpace) => decode_pasid_bind(caps, call),
        _ => Err(Error::InvalidInvocation),
    }
}

/// `IoDevice.BindVSpace`: a kernel built with `sva` (else `NotBuilt`),
/// both capabilities with write (the `caps` rule `sva_bind_access`), the
/// cap a root, the unit able and with room.
fn decode_bind(caps: &CapSystem, call: &Call) -> Result<DeviceOp, Error> {
    crate::io_space::require(Feature::Sva)?;
    let root_slot = call.extra_cap(caps, 0)?;
    let (device, _) = caps.sva_bind_access(call.slot, root_slot)?;
    let root = objects::root_of(caps, root_slot)?;
    let Some(caps::ObjectState::IoDevice { rid, .. }) = caps.object(device).map(|o| *o.state())
    else {
        return Err(Error::DeadObject);
    };
    crate::io_space::ensure_sva_room(device, rid, None)?;
    Ok(DeviceOp::Bind {
        device,
        rid,
        pasid: None,
        root,
    })
}

/// `IoPasid.BindVSpace`: a kernel built with `sva` (else `NotBuilt`),
/// both capabilities with write (the `caps` rule `pasid_bind_access`),
/// the cap a root, the unit able (PASID entries with a first stage) and
/// with room.
fn decode_pasid_bind(caps: &CapSystem, call: &Call) -> Result<DeviceOp, Error> {
    crate::io_space::require(Feature::Sva)?;
    let root_slot = call.extra_cap(caps, 0)?;
    let (object, device, pasid, _) = caps.pasid_bind_access(call.slot, root_slot)?;
    let root = objects::root_of(caps, root_slot)?;
    let Some(caps::ObjectState::IoDevice { rid, .. }) = caps.object(device).map(|o| *o.state())
    else {
        return Err(Error::DeadObject);
    };
    crate::io_space::ensure_sva_room(object, rid, Some(pasid))?;
    Ok(DeviceOp::Bind {
        device: object,
        rid,
        pasid: Some(pasid),
        root,
    })
}

/// `AlreadyAttached` if the IoDevice in `slot` is bound to a VSpace.
fn check_not_bound(caps: &CapSystem, slot: SlotId) -> Result<(), Error> {
    if crate::io_space::sva_bound(caps.lookup(slot)?.object()) {
        return Err(Error::AlreadyAttached);
    }
    Ok(())
}

/// The unit has the room an attach to `target` needs (an IoSpace, or an
/// IoUserTable: its IoSpace and a nest for its stage-1 root), so the
/// effects that follow cannot fail for lack of it.
fn check_attach_room(caps: &CapSystem, target: SlotId) -> Result<(), Error> {
    let (space, root_ipa) = attach_target(caps, target)?;
    crate::io_space::ensure_attach_room(space, root_ipa)
}

/// The IoSpace an attach to `target` (an IoSpace or an IoUserTable) uses,
/// and the stage-1 root of an IoUserTable.
fn attach_target(caps: &CapSystem, target: SlotId) -> Result<(ObjectId, Option<u64>), Error> {
    let object = caps.lookup(target)?.object();
    match caps.object(object).map(|o| *o.state()) {
        Some(caps::ObjectState::IoUserTable {
            space: Some(space),
            root_ipa,
        }) => Ok((space, Some(root_ipa))),
        _ => Ok((object, None)),
    }
}

/// Performs a decoded device invocation. The model's operation may still
/// refuse (`DeviceInUse`, `OutOfScope`, `AlreadyAttached`, `WrongUnit`,
/// `NotAttached`, `PasidOutOfRange`, `PasidInUse`, `DeviceNotAttached`,
/// `SpaceMismatch`, ...), having changed nothing; an attach or detach whose
/// invalidation fails answers `IommuTimeout` (`invoke`).
#[inline(always)]
pub(super) fn perform(caps: &mut CapSystem, op: DeviceOp) -> Result<Reply, Error> {
    let mut sink = objects::SINK;
    match op {
        DeviceOp::Identify([a, b, c, d, e, f]) => {
            return Ok(Reply {
                mrs: [a, b, c, d, e, f, 0, 0],
                length: 6,
            });
        }
        DeviceOp::MintDevice {
            iommu,
            requester,
            dest,
        } => {
            caps.mint_device(iommu, requester, dest)?;
        }
        DeviceOp::Attach {
            slot,
            target,
            pasid: false,
        } => caps.attach_device(slot, target, &mut sink)?,
        DeviceOp::Attach {
            slot,
            target,
            pasid: true,
        } => caps.attach_pasid(slot, target, &mut sink)?,
        DeviceOp::Detach { slot, pasid: false } => caps.detach_device(slot, &mut sink)?,
        DeviceOp::Detach { slot, pasid: true } => caps.detach_pasid(slot, &mut sink)?,
        DeviceOp::Unbind { device } => {
            crate::io_space::unbind_vspace(device);
        }
        DeviceOp::Bind {
            device,
            rid,
            pasid,
            root,
        } => {
            // A PageTable not yet a root gets the kernel's half first
            // (x86_64: supervisor-only entries, which the device's user
            // requests cannot pass).
            objects::register_root(root);
            crate::io_space::bind_vspace(device, rid, pasid, root.object(), root.paddr)?;
        }
        DeviceOp::MintPasid {
            device,
            pasid,
            dest,
        } => {
            caps.mint_pasid(device, pasid, dest)?;
        }
    }
    Ok(Reply::EMPTY)
}
