//! The bounded system the model checker explores exhaustively.
//!
//! One IOMMU unit; an Untyped; Frames, IoSpaces and IoDevices created at
//! boot by the real operations; free slots into which the actions derive
//! capabilities (two drivers' worth of delegation). Every action is one real
//! [`Caps`] operation whose effects are applied to the [`AbstractIommu`];
//! after every step the checker evaluates DESIGN invariants 1–5 plus "an
//! error changes nothing" and "the IO mapping index agrees with a scan".
//! Destinations are always the lowest free slot, so states that differ only
//! in slot choice are not explored twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::vec::Vec;

use stateright::{Model, Property};

use super::hardware::AbstractIommu;
use super::invariants;
use super::ops::Op;
use crate::caps::Caps;
use crate::flaws::Flaws;
use crate::object::{IommuUnit, NewObject, ObjectState};
use crate::storage::ArrayStorage;
use crate::types::{ObjectKind, Rights, SlotId};

/// Slots in the model's table.
pub const MODEL_SLOTS: usize = 14;
/// Object records in the model's table.
pub const MODEL_OBJECTS: usize = 14;
/// Storage used by the model.
pub type ModelStore = ArrayStorage<MODEL_SLOTS, MODEL_OBJECTS>;

/// Slot of the boot Untyped.
pub const UNTYPED_SLOT: u32 = 0;
/// Slot of the IommuControl.
pub const IOMMU_SLOT: u32 = 1;
/// Root IPA used for user tables.
pub const USER_TABLE_ROOT: u64 = 0x3000;

/// The unit the model (and the property tests) use.
pub fn model_unit() -> IommuUnit {
    IommuUnit {
        id: 0,
        pasid_bits: 1,
        domain_ids: 3,
        ipa_bits: 16,
        rid_limit: 4,
        reserved_ipa_base: 0xf000,
        reserved_ipa_size: 0x1000,
    }
}

/// Bounds of the explored system.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// Frames created at boot.
    pub frames: u32,
    /// IoSpaces created at boot.
    pub spaces: u32,
    /// IoDevices minted at boot.
    pub devices: u32,
    /// PASIDs that may be minted (`0..pasids`).
    pub pasids: u32,
    /// IPAs frames may be mapped at.
    pub ipas: Vec<u64>,
    /// Offer retype actions (new Frames and IoSpaces).
    pub retype: bool,
    /// Offer user-table binding.
    pub user_tables: bool,
    /// Offer mint actions (read-only and all-rights).
    pub mint: bool,
    /// Offer revoke actions.
    pub revoke: bool,
    /// Offer device/PASID attach, detach and PASID minting.
    pub attach: bool,
    /// Offer delete actions.
    pub delete: bool,
    /// Offer `IoSpace.SetDirtyTracking` / `ReadDirty` on every IoSpace cap
    /// (with every Frame cap as the bitmap), and read-only and all-rights
    /// mints of IoSpace caps; and one IoFaultQueue at boot, with
    /// `IoFaultQueue.Respond` on every IoFaultQueue cap and read-only and
    /// all-rights mints of them.
    pub dirty: bool,
    /// Retype one PageTable (a VSpace root) at boot, offer
    /// `IoDevice.BindVSpace` for every IoDevice and PageTable cap, and
    /// read-only and all-rights mints of both.
    pub sva: bool,
    /// Slots (after the boot capabilities) actions may fill.
    pub free_slots: u32,
    /// Exploration depth bound (0: explore the whole reachable state space).
    pub depth: usize,
}

impl Default for Bounds {
    /// The default run of the suite: 1 unit, 2 devices, 2 frames,
    /// 2 IoSpaces, PASIDs 0..2, 2 free slots, the whole reachable space.
    fn default() -> Self {
        Bounds {
            frames: 2,
            spaces: 2,
            devices: 2,
            pasids: 2,
            ipas: std::vec![0x0],
            retype: true,
            user_tables: true,
            mint: true,
            revoke: true,
            attach: true,
            delete: true,
            dirty: false,
            sva: false,
            free_slots: 2,
            depth: 0,
        }
    }
}

impl Bounds {
    /// Scenario "IOMMU": 1 frame, 2 IoSpaces, 2 devices, PASIDs 0..2, user
    /// tables, 2 free slots; map, unmap, attach, detach, mint PASID, bind
    /// user table, delete; the whole reachable state space (it is finite:
    /// about 1.4 million states).
    pub fn iommu() -> Self {
        Bounds {
            frames: 1,
            retype: false,
            mint: false,
            revoke: false,
            depth: 0,
            ..Bounds::default()
        }
    }

    /// Scenario "everything": every action family at once (the seeded-bug
    /// bounds), 2 frames, 2 IoSpaces, 2 devices, PASIDs 0..2, 2 free slots;
    /// every state within 4 operations.
    pub fn everything() -> Self {
        Bounds {
            depth: 4,
            ..Bounds::default()
        }
    }

    /// Scenario "dirty" (the access rules of the IOMMU extras): 2 frames,
    /// 1 IoSpace, 1 device, 1 IoFaultQueue, 1 free slot; mint (IoSpace,
    /// Frame and IoFaultQueue caps, read-only or all rights), map, unmap,
    /// attach, detach, delete, revoke, the dirty-tracking calls with every
    /// IoSpace cap and bitmap Frame cap, and `Respond` with every
    /// IoFaultQueue cap; every state within 6 operations.
    pub fn dirty() -> Self {
        Bounds {
            frames: 2,
            spaces: 1,
            devices: 1,
            pasids: 0,
            free_slots: 1,
            retype: false,
            user_tables: false,
            dirty: true,
            depth: 6,
            ..Bounds::default()
        }
    }

    /// Scenario "sva": 1 frame, 1 IoSpace, 1 device, PASID 0, 1
    /// PageTable, 2 free slots; mint (IoDevice, IoPasid and PageTable
    /// caps, read-only or all rights), mint PASID, map, unmap, attach,
    /// detach, delete, revoke, and `BindVSpace` with every IoDevice or
    /// IoPasid cap and PageTable cap; every state within 6 operations.
    pub fn sva() -> Self {
        Bounds {
            frames: 1,
            spaces: 1,
            devices: 1,
            pasids: 1,
            free_slots: 2,
            retype: false,
            user_tables: false,
            sva: true,
            depth: 6,
            ..Bounds::default()
        }
    }

    /// Scenario "derivation": 2 frames, 1 IoSpace, 1 device, PASID 0, 1 free
    /// slot; retype, mint, revoke and delete next to map and attach; every
    /// state within 8 operations.
    pub fn derivation() -> Self {
        Bounds {
            frames: 2,
            spaces: 1,
            devices: 1,
            pasids: 1,
            user_tables: false,
            free_slots: 1,
            depth: 8,
            ..Bounds::default()
        }
    }
}

/// One state of the system: capabilities plus hardware.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SystemState {
    /// The real capability state.
    pub caps: Caps<ModelStore>,
    /// The abstract IOMMU after applying every effect so far.
    pub hw: AbstractIommu,
    /// Set if an operation returned an error yet changed state or emitted
    /// effects (decode/perform violated).
    pub error_had_effect: bool,
    /// Set if a dirty-tracking call succeeded without `WRITE` on its
    /// IoSpace cap or its bitmap Frame cap.
    pub dirty_without_write: bool,
    /// Set if a `Respond` succeeded without `WRITE` on its IoFaultQueue cap.
    pub respond_without_write: bool,
    /// Set if an `IoDevice.BindVSpace` or `IoPasid.BindVSpace` succeeded
    /// without `WRITE` on its IoDevice or IoPasid cap or its root
    /// PageTable cap.
    pub sva_without_write: bool,
}

/// The model: bounds plus the seeded bugs switched on (none by default).
#[derive(Clone, Debug, Default)]
pub struct SystemModel {
    /// What to explore.
    pub bounds: Bounds,
    /// Seeded bugs to switch on.
    pub flaws: Flaws,
    /// Number of states whose properties the checker evaluated (stateright
    /// also counts the unexpanded frontier in its state count).
    pub checked: Arc<AtomicUsize>,
}

/// Build the boot state with the real operations; returns it and the boot
/// operations (the start of every trace).
pub fn boot(bounds: &Bounds, flaws: Flaws) -> (SystemState, Vec<Op>) {
    let mut caps = Caps::new(ModelStore::new());
    let mut hw = AbstractIommu::default();
    caps.boot_untyped(SlotId(UNTYPED_SLOT), 0x10000, 16, false)
        .expect("boot untyped");
    caps.boot_iommu_control(SlotId(IOMMU_SLOT), model_unit())
        .expect("boot iommu");
    let mut ops = Vec::new();
    let mut dest = 2;
    for _ in 0..bounds.frames {
        ops.push(Op::Retype {
            untyped: UNTYPED_SLOT,
            object: NewObject::Frame { size_bits: 12 },
            dest,
        });
        dest += 1;
    }
    for _ in 0..bounds.spaces {
        ops.push(Op::Retype {
            untyped: UNTYPED_SLOT,
            object: NewObject::IoSpace {
                iommu: SlotId(IOMMU_SLOT),
            },
            dest,
        });
        dest += 1;
    }
    for rid in 0..bounds.devices {
        ops.push(Op::MintDevice {
            iommu: IOMMU_SLOT,
            rid,
            dest,
        });
        dest += 1;
    }
    if bounds.dirty {
        ops.push(Op::Retype {
            untyped: UNTYPED_SLOT,
            object: NewObject::IoFaultQueue,
            dest,
        });
        dest += 1;
    }
    if bounds.sva {
        ops.push(Op::Retype {
            untyped: UNTYPED_SLOT,
            object: NewObject::PageTable,
            dest,
        });
    }
    for op in &ops {
        op.apply(&mut caps, &mut |e| hw.apply(e)).expect("boot op");
    }
    caps.set_flaws(flaws);
    (
        SystemState {
            caps,
            hw,
            error_had_effect: false,
            dirty_without_write: false,
            respond_without_write: false,
            sva_without_write: false,
        },
        ops,
    )
}

impl SystemModel {
    /// Apply one operation to a state: the real code, then the effects on
    /// the abstract IOMMU. Returns the new state and the operation's result.
    pub fn step(&self, state: &SystemState, op: Op) -> (SystemState, Result<(), crate::Error>) {
        let mut next = state.clone();
        let mut effects = 0usize;
        let SystemState { caps, hw, .. } = &mut next;
        let result = op.apply(caps, &mut |e| {
            effects += 1;
            hw.apply(e)
        });
        if result.is_err() && (effects > 0 || next.caps != state.caps) {
            next.error_had_effect = true;
        }
        // Whether `slot` held a `kind` cap with WRITE before the operation.
        let writable = |slot: u32, kind: ObjectKind| {
            state
                .caps
                .lookup(SlotId(slot))
                .is_ok_and(|c| c.kind() == kind && c.rights().contains(Rights::WRITE))
        };
        if let Op::DirtyAccess { space, bitmap } = op
            && result.is_ok()
            && (!writable(space, ObjectKind::IoSpace)
                || bitmap.is_some_and(|b| !writable(b, ObjectKind::Frame)))
        {
            next.dirty_without_write = true;
        }
        if let Op::RespondAccess { queue } = op
            && result.is_ok()
            && !state.caps.lookup(SlotId(queue)).is_ok_and(|c| {
                c.kind() == ObjectKind::IoFaultQueue && c.rights().contains(Rights::WRITE)
            })
        {
            next.respond_without_write = true;
        }
        if let Op::BindVSpace { device, root } = op
            && result.is_ok()
            && (!writable(device, ObjectKind::IoDevice) || !writable(root, ObjectKind::PageTable))
        {
            next.sva_without_write = true;
        }
        if let Op::BindPasidVSpace { pasid, root } = op
            && result.is_ok()
            && (!writable(pasid, ObjectKind::IoPasid) || !writable(root, ObjectKind::PageTable))
        {
            next.sva_without_write = true;
        }
        (next, result)
    }
}

impl Model for SystemModel {
    type State = SystemState;
    type Action = Op;

    fn init_states(&self) -> Vec<SystemState> {
        std::vec![boot(&self.bounds, self.flaws).0]
    }

    fn actions(&self, state: &SystemState, actions: &mut Vec<Op>) {
        let caps = &state.caps;
        let slots = caps.slots();
        let limit = (2
            + self.bounds.frames
            + self.bounds.spaces
            + self.bounds.devices
            + u32::from(self.bounds.sva)
            + self.bounds.free_slots) as usize;
        let free = slots
            .iter()
            .take(limit)
            .position(|s| s.cap().is_none())
            .map(|f| f as u32);
        let of_kind = |kinds: &[ObjectKind]| -> Vec<u32> {
            slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.cap().is_some_and(|c| kinds.contains(&c.kind())))
                .map(|(i, _)| i as u32)
                .collect()
        };
        let spaces = of_kind(&[ObjectKind::IoSpace]);
        if self.bounds.dirty {
            for &space in &spaces {
                actions.push(Op::DirtyAccess {
                    space,
                    bitmap: None,
                });
                for bitmap in of_kind(&[ObjectKind::Frame]) {
                    actions.push(Op::DirtyAccess {
                        space,
                        bitmap: Some(bitmap),
                    });
                }
            }
            for queue in of_kind(&[ObjectKind::IoFaultQueue]) {
                actions.push(Op::RespondAccess { queue });
            }
        }
        if self.bounds.sva {
            for device in of_kind(&[ObjectKind::IoDevice]) {
                for root in of_kind(&[ObjectKind::PageTable]) {
                    actions.push(Op::BindVSpace { device, root });
                }
            }
            for pasid in of_kind(&[ObjectKind::IoPasid]) {
                for root in of_kind(&[ObjectKind::PageTable]) {
                    actions.push(Op::BindPasidVSpace { pasid, root });
                }
            }
        }
        let targets = of_kind(&[ObjectKind::IoSpace, ObjectKind::IoUserTable]);
        for (i, slot) in slots.iter().enumerate() {
            let i = i as u32;
            let Some(cap) = slot.cap() else { continue };
            let attached = match caps.object(cap.object()).map(|o| *o.state()) {
                Some(ObjectState::IoDevice { attached, .. })
                | Some(ObjectState::IoPasid { attached, .. }) => attached.is_some(),
                _ => false,
            };
            match cap.kind() {
                ObjectKind::Frame => {
                    if cap.mapping().is_some() {
                        actions.push(Op::UnmapIo { frame: i });
                    } else {
                        let rights = cap.rights().intersect(Rights::READ_WRITE);
                        for &space in &spaces {
                            for &ipa in &self.bounds.ipas {
                                actions.push(Op::MapIo {
                                    frame: i,
                                    space,
                                    ipa,
                                    rights,
                                });
                            }
                        }
                    }
                }
                ObjectKind::IoDevice | ObjectKind::IoPasid if self.bounds.attach => {
                    let device = cap.kind() == ObjectKind::IoDevice;
                    if attached {
                        actions.push(if device {
                            Op::DetachDevice { device: i }
                        } else {
                            Op::DetachPasid { pasid: i }
                        });
                    } else {
                        for &target in &targets {
                            actions.push(if device {
                                Op::AttachDevice { device: i, target }
                            } else {
                                Op::AttachPasid { pasid: i, target }
                            });
                        }
                    }
                    if device && let Some(dest) = free {
                        for pasid in 0..self.bounds.pasids {
                            actions.push(Op::MintPasid {
                                device: i,
                                pasid,
                                dest,
                            });
                        }
                    }
                }
                ObjectKind::IoSpace => {
                    if self.bounds.user_tables
                        && let Some(dest) = free
                    {
                        actions.push(Op::BindUserTable {
                            space: i,
                            root_ipa: USER_TABLE_ROOT,
                            dest,
                        });
                    }
                }
                ObjectKind::Untyped => {
                    if self.bounds.retype
                        && let Some(dest) = free
                    {
                        actions.push(Op::Retype {
                            untyped: i,
                            object: NewObject::Frame { size_bits: 12 },
                            dest,
                        });
                        actions.push(Op::Retype {
                            untyped: i,
                            object: NewObject::IoSpace {
                                iommu: SlotId(IOMMU_SLOT),
                            },
                            dest,
                        });
                    }
                }
                _ => {}
            }
            let mintable = cap.kind() == ObjectKind::Frame
                || (self.bounds.dirty
                    && matches!(cap.kind(), ObjectKind::IoSpace | ObjectKind::IoFaultQueue))
                || (self.bounds.sva
                    && matches!(
                        cap.kind(),
                        ObjectKind::IoDevice | ObjectKind::IoPasid | ObjectKind::PageTable
                    ));
            if self.bounds.mint
                && mintable
                && let Some(dest) = free
            {
                for rights in [Rights::READ, Rights::ALL] {
                    actions.push(Op::Mint {
                        src: i,
                        dest,
                        rights,
                        badge: 0,
                    });
                }
            }
            if self.bounds.delete && i != UNTYPED_SLOT && i != IOMMU_SLOT {
                actions.push(Op::Delete { slot: i });
            }
            let has_children = slot
                .next()
                .is_some_and(|n| slots[n.0 as usize].depth() > slot.depth());
            if self.bounds.revoke && has_children {
                actions.push(Op::Revoke { slot: i });
            }
        }
    }

    fn next_state(&self, state: &SystemState, op: Op) -> Option<SystemState> {
        let (next, result) = self.step(state, op);
        (result.is_ok() || next.error_had_effect).then_some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = std::vec![
            Property::always("confinement", |m: &SystemModel, s: &SystemState| {
                m.checked.fetch_add(1, Ordering::Relaxed);
                invariants::confinement(&s.caps, &s.hw).is_ok()
            }),
            Property::always("strict revocation", |_, s: &SystemState| {
                invariants::strict_revocation(&s.caps, &s.hw).is_ok()
            }),
            Property::always("no amplification", |_, s: &SystemState| {
                invariants::no_amplification(&s.caps).is_ok()
            }),
            Property::always("retype memory safety", |_, s: &SystemState| {
                invariants::retype_safety(&s.caps).is_ok()
            }),
            Property::always("unique tags", |_, s: &SystemState| {
                invariants::unique_tags(&s.caps).is_ok()
            }),
            Property::always("mapping index", |_, s: &SystemState| {
                invariants::mapping_index(&s.caps).is_ok()
            }),
            Property::always("errors change nothing", |_, s: &SystemState| !s
                .error_had_effect),
            Property::always("dirty access needs write", |_, s: &SystemState| !s
                .dirty_without_write),
            Property::always("respond needs write", |_, s: &SystemState| !s
                .respond_without_write),
            Property::always("sva bind needs write", |_, s: &SystemState| !s
                .sva_without_write),
            Property::sometimes("a device reaches a frame", |_, s: &SystemState| {
                !s.hw.valid_now().is_empty()
            }),
        ];
        if self.bounds.retype {
            properties.push(Property::always(
                "check_retype agrees with retyping",
                |_, s: &SystemState| retype_checks_agree(&s.caps),
            ));
        }
        let deep_enough = self.bounds.depth == 0 || self.bounds.depth >= 5;
        if self.bounds.user_tables && self.bounds.attach && self.bounds.pasids > 0 && deep_enough {
            // Sanity: the bounds are rich enough to reach nested PASID DMA.
            properties.push(Property::sometimes(
                "a PASID reaches a frame through a user table",
                |_, s: &SystemState| {
                    s.hw.pasids.values().any(|e| e.stage1_root.is_some())
                        && s.hw.valid_now().iter().any(|t| t.pasid.is_some())
                },
            ));
        }
        properties
    }
}

/// Whether [`Caps::check_retype`] from the boot Untyped answers, for a
/// Frame and an IoSpace and every count the empty slots can take, what
/// that many retypes in a row do (`Ok`, or the first failure's error).
fn retype_checks_agree(caps: &Caps<ModelStore>) -> bool {
    let empty: Vec<SlotId> = (0..MODEL_SLOTS as u32)
        .map(SlotId)
        .filter(|&slot| caps.lookup(slot).is_err())
        .collect();
    let untyped = SlotId(UNTYPED_SLOT);
    let kinds = [
        NewObject::Frame { size_bits: 12 },
        NewObject::IoSpace {
            iommu: SlotId(IOMMU_SLOT),
        },
    ];
    kinds.into_iter().all(|new| {
        // One retype more per count; after the first failure, all fail.
        let mut done = caps.clone();
        let mut made = Ok(());
        empty.iter().enumerate().all(|(index, &dest)| {
            if made.is_ok() {
                made = done
                    .retype(untyped, new, dest, &mut crate::DiscardEffects)
                    .map(|_| ());
            }
            caps.check_retype(untyped, new, index + 1) == made
        })
    })
}

/// One step of a trace: the operation and its result.
pub type Step = (Op, Result<(), crate::Error>);

/// Re-run a sequence of operations from the boot state and return each
/// step's result (to print a counterexample).
pub fn replay(model: &SystemModel, ops: &[Op]) -> (SystemState, Vec<Step>) {
    let (mut state, _) = boot(&model.bounds, model.flaws);
    let mut steps = Vec::new();
    for &op in ops {
        let (next, result) = model.step(&state, op);
        steps.push((op, result));
        state = next;
    }
    (state, steps)
}
