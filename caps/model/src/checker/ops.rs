//! Operations as data: what the model checker and the property tests run,
//! and how a counterexample trace reads.

use core::fmt;
use std::string::String;
use std::vec::Vec;

use crate::caps::Caps;
use crate::effect::{Effect, EffectSink};
use crate::error::Error;
use crate::object::NewObject;
use crate::storage::Storage;
use crate::types::{Badge, Rights, SlotId};

/// One invocation, with slot arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`Caps::retype`].
    Retype {
        /// Untyped cap slot.
        untyped: u32,
        /// What to create.
        object: NewObject,
        /// Destination slot.
        dest: u32,
    },
    /// [`Caps::copy`].
    Copy {
        /// Source slot.
        src: u32,
        /// Destination slot.
        dest: u32,
    },
    /// [`Caps::mint`].
    Mint {
        /// Source slot.
        src: u32,
        /// Destination slot.
        dest: u32,
        /// Rights asked for.
        rights: Rights,
        /// Badge (0: keep).
        badge: u64,
    },
    /// [`Caps::move_cap`].
    Move {
        /// Source slot.
        src: u32,
        /// Destination slot.
        dest: u32,
    },
    /// [`Caps::delete`].
    Delete {
        /// Slot.
        slot: u32,
    },
    /// [`Caps::revoke`].
    Revoke {
        /// Slot.
        slot: u32,
    },
    /// [`Caps::mint_device`].
    MintDevice {
        /// IommuControl slot.
        iommu: u32,
        /// Requester id.
        rid: u32,
        /// Destination slot.
        dest: u32,
    },
    /// [`Caps::mint_pasid`].
    MintPasid {
        /// IoDevice slot.
        device: u32,
        /// PASID.
        pasid: u32,
        /// Destination slot.
        dest: u32,
    },
    /// [`Caps::bind_user_table`].
    BindUserTable {
        /// IoSpace slot.
        space: u32,
        /// Root IPA.
        root_ipa: u64,
        /// Destination slot.
        dest: u32,
    },
    /// [`Caps::attach_device`].
    AttachDevice {
        /// IoDevice slot.
        device: u32,
        /// IoSpace or IoUserTable slot.
        target: u32,
    },
    /// [`Caps::detach_device`].
    DetachDevice {
        /// IoDevice slot.
        device: u32,
    },
    /// [`Caps::attach_pasid`].
    AttachPasid {
        /// IoPasid slot.
        pasid: u32,
        /// IoSpace or IoUserTable slot.
        target: u32,
    },
    /// [`Caps::detach_pasid`].
    DetachPasid {
        /// IoPasid slot.
        pasid: u32,
    },
    /// [`Caps::map_io`].
    MapIo {
        /// Frame slot.
        frame: u32,
        /// IoSpace slot.
        space: u32,
        /// IPA.
        ipa: u64,
        /// Mapping rights.
        rights: Rights,
    },
    /// [`Caps::unmap_io`].
    UnmapIo {
        /// Frame slot.
        frame: u32,
    },
    /// [`Caps::bind_fault_queue`].
    BindFaultQueue {
        /// IoSpace or IoDevice slot.
        target: u32,
        /// IoFaultQueue slot.
        queue: u32,
    },
    /// [`Caps::dirty_access`]: `IoSpace.SetDirtyTracking` (no bitmap) or
    /// `IoSpace.ReadDirty` (into the bitmap Frame).
    DirtyAccess {
        /// IoSpace slot.
        space: u32,
        /// Bitmap Frame slot (`ReadDirty`).
        bitmap: Option<u32>,
    },
    /// [`Caps::respond_access`]: `IoFaultQueue.Respond`.
    RespondAccess {
        /// IoFaultQueue slot.
        queue: u32,
    },
    /// [`Caps::pasid_bind_access`]: `IoPasid.BindVSpace`.
    BindPasidVSpace {
        /// IoPasid slot.
        pasid: u32,
        /// Root PageTable slot.
        root: u32,
    },
    /// [`Caps::sva_bind_access`]: `IoDevice.BindVSpace`.
    BindVSpace {
        /// IoDevice slot.
        device: u32,
        /// Root PageTable slot.
        root: u32,
    },
    /// [`Caps::issue_irq_handler`].
    IssueIrq {
        /// IrqControl slot.
        control: u32,
        /// Line.
        irq: u16,
        /// Destination slot.
        dest: u32,
    },
}

impl Op {
    /// Run the operation on the real code.
    pub fn apply<S: Storage>(
        &self,
        caps: &mut Caps<S>,
        sink: &mut (impl EffectSink + ?Sized),
    ) -> Result<(), Error> {
        let s = SlotId;
        match *self {
            Op::Retype {
                untyped,
                object,
                dest,
            } => caps.retype(s(untyped), object, s(dest), sink).map(drop),
            Op::Copy { src, dest } => caps.copy(s(src), s(dest)),
            Op::Mint {
                src,
                dest,
                rights,
                badge,
            } => caps.mint(s(src), s(dest), rights, Badge(badge)),
            Op::Move { src, dest } => caps.move_cap(s(src), s(dest)),
            Op::Delete { slot } => caps.delete(s(slot), sink),
            Op::Revoke { slot } => caps.revoke(s(slot), sink),
            Op::MintDevice { iommu, rid, dest } => {
                caps.mint_device(s(iommu), rid, s(dest)).map(drop)
            }
            Op::MintPasid {
                device,
                pasid,
                dest,
            } => caps.mint_pasid(s(device), pasid, s(dest)).map(drop),
            Op::BindUserTable {
                space,
                root_ipa,
                dest,
            } => caps.bind_user_table(s(space), root_ipa, s(dest)).map(drop),
            Op::AttachDevice { device, target } => caps.attach_device(s(device), s(target), sink),
            Op::DetachDevice { device } => caps.detach_device(s(device), sink),
            Op::AttachPasid { pasid, target } => caps.attach_pasid(s(pasid), s(target), sink),
            Op::DetachPasid { pasid } => caps.detach_pasid(s(pasid), sink),
            Op::MapIo {
                frame,
                space,
                ipa,
                rights,
            } => caps.map_io(s(frame), s(space), ipa, rights, sink),
            Op::UnmapIo { frame } => caps.unmap_io(s(frame), sink),
            Op::BindFaultQueue { target, queue } => {
                caps.bind_fault_queue(s(target), s(queue), sink)
            }
            Op::DirtyAccess { space, bitmap } => {
                caps.dirty_access(s(space), bitmap.map(s)).map(drop)
            }
            Op::RespondAccess { queue } => caps.respond_access(s(queue)).map(drop),
            Op::BindVSpace { device, root } => caps.sva_bind_access(s(device), s(root)).map(drop),
            Op::BindPasidVSpace { pasid, root } => {
                caps.pasid_bind_access(s(pasid), s(root)).map(drop)
            }
            Op::IssueIrq { control, irq, dest } => {
                caps.issue_irq_handler(s(control), irq, s(dest)).map(drop)
            }
        }
    }

    /// Run the operation and collect its effects.
    pub fn apply_collect<S: Storage>(
        &self,
        caps: &mut Caps<S>,
    ) -> (Result<(), Error>, Vec<Effect>) {
        let mut effects = Vec::new();
        let result = self.apply(caps, &mut |e| effects.push(e));
        (result, effects)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Retype {
                untyped,
                object,
                dest,
            } => {
                write!(
                    f,
                    "retype Untyped[slot {untyped}] into {object:?} -> slot {dest}"
                )
            }
            Op::Copy { src, dest } => write!(f, "copy slot {src} -> slot {dest}"),
            Op::Mint {
                src,
                dest,
                rights,
                badge,
            } => write!(
                f,
                "mint slot {src} -> slot {dest} with rights {rights:?} badge {badge}"
            ),
            Op::Move { src, dest } => write!(f, "move slot {src} -> slot {dest}"),
            Op::Delete { slot } => write!(f, "delete slot {slot}"),
            Op::Revoke { slot } => write!(f, "revoke slot {slot}"),
            Op::MintDevice { iommu, rid, dest } => {
                write!(
                    f,
                    "IommuControl[slot {iommu}].MintDevice(rid {rid}) -> slot {dest}"
                )
            }
            Op::MintPasid {
                device,
                pasid,
                dest,
            } => {
                write!(
                    f,
                    "IoDevice[slot {device}].MintPasid({pasid}) -> slot {dest}"
                )
            }
            Op::BindUserTable {
                space,
                root_ipa,
                dest,
            } => {
                write!(
                    f,
                    "IoSpace[slot {space}].BindUserTable(root {root_ipa:#x}) -> slot {dest}"
                )
            }
            Op::AttachDevice { device, target } => {
                write!(f, "IoDevice[slot {device}].Attach(slot {target})")
            }
            Op::DetachDevice { device } => write!(f, "IoDevice[slot {device}].Detach"),
            Op::AttachPasid { pasid, target } => {
                write!(f, "IoPasid[slot {pasid}].Attach(slot {target})")
            }
            Op::DetachPasid { pasid } => write!(f, "IoPasid[slot {pasid}].Detach"),
            Op::MapIo {
                frame,
                space,
                ipa,
                rights,
            } => write!(
                f,
                "IoSpace[slot {space}].Map(Frame[slot {frame}], ipa {ipa:#x}, {rights:?})"
            ),
            Op::UnmapIo { frame } => write!(f, "IoSpace.Unmap(Frame[slot {frame}])"),
            Op::BindFaultQueue { target, queue } => {
                write!(
                    f,
                    "bind faults of slot {target} to IoFaultQueue[slot {queue}]"
                )
            }
            Op::DirtyAccess {
                space,
                bitmap: None,
            } => write!(f, "IoSpace[slot {space}].SetDirtyTracking"),
            Op::DirtyAccess {
                space,
                bitmap: Some(bitmap),
            } => write!(f, "IoSpace[slot {space}].ReadDirty(Frame[slot {bitmap}])"),
            Op::RespondAccess { queue } => write!(f, "IoFaultQueue[slot {queue}].Respond"),
            Op::BindVSpace { device, root } => {
                write!(
                    f,
                    "IoDevice[slot {device}].BindVSpace(PageTable[slot {root}])"
                )
            }
            Op::BindPasidVSpace { pasid, root } => {
                write!(
                    f,
                    "IoPasid[slot {pasid}].BindVSpace(PageTable[slot {root}])"
                )
            }
            Op::IssueIrq { control, irq, dest } => {
                write!(
                    f,
                    "IrqControl[slot {control}].Issue(irq {irq}) -> slot {dest}"
                )
            }
        }
    }
}

/// A numbered, readable trace of operations with their results.
pub fn format_trace(steps: &[(Op, Result<(), Error>)]) -> String {
    let mut out = String::new();
    for (i, (op, result)) in steps.iter().enumerate() {
        let result = match result {
            Ok(()) => String::from("ok"),
            Err(e) => std::format!("error {e:?}"),
        };
        out.push_str(&std::format!("  {:>2}. {op}  => {result}\n", i + 1));
    }
    out
}
