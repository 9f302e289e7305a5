//! The effects of the model's operations, applied as they come: CPU leaves
//! written and cleared (a cleared one also invalidated in the IOTLB of
//! devices bound to its VSpace), retyped memory cleared, IOMMU effects
//! handed to the unit (`iommu_unit`, which applies them through `io_space`).
//! It also notes what a delete or revoke removed, for `reconcile`.

use crate::iommu_unit::UNIT;
use caps::{Effect, ObjectKind, Rights};

/// The kernel's [`caps::EffectSink`]: applies CPU and memory effects itself
/// and hands IOMMU effects to the unit. It cannot refuse an effect (the
/// model's contract): a CPU leaf was checked by `vspace::can_map` before
/// the model was asked.
pub struct ApplyEffects {
    /// A `Frame.Map` asked for execute permission (read-only frames only).
    pub execute: bool,
    /// The leaf entry (physical address) a `Frame.Map`'s decode found empty
    /// for the page it maps (`vspace::can_map`, under the capability lock
    /// held since); 0: found afresh.
    pub leaf: u64,
    /// What the operation removed (`super::reconcile` skips what it cannot
    /// have to do).
    pub removed: Removed,
}

/// What a delete or revoke removed, as the model reported it
/// ([`caps::EffectSink::capability_removed`]).
#[derive(Clone, Copy, Default)]
pub struct Removed {
    /// An object was destroyed (its last capability went).
    pub destroyed: bool,
    /// A CNode capability went (it may have been a thread's kernel-held
    /// CSpace capability).
    pub cnode: bool,
}

/// The sink for every operation but an executable `Frame.Map`.
pub const SINK: ApplyEffects = ApplyEffects {
    execute: false,
    leaf: 0,
    removed: Removed {
        destroyed: false,
        cnode: false,
    },
};

impl caps::EffectSink for ApplyEffects {
    #[inline]
    fn push(&mut self, effect: Effect) {
        match effect {
            Effect::MapCpuPage {
                vspace,
                vaddr,
                paddr,
                size_bits,
                rights,
            } => {
                // Memory from a device Untyped maps as device memory, never
                // executable (`Frame.Map` refuses to be asked).
                let memory = if crate::devmem::is_device_memory(paddr) {
                    crate::vspace::Memory::Device
                } else {
                    crate::vspace::Memory::Normal
                };
                let rights = crate::vspace::Rights {
                    write: rights.contains(Rights::WRITE),
                    execute: self.execute
                        && !rights.contains(Rights::WRITE)
                        && memory == crate::vspace::Memory::Normal,
                };
                // Checked by `can_map` before the model was asked.
                let leaf = match self.leaf {
                    0 => crate::vspace::can_map(vspace, vaddr, size_bits),
                    leaf => Ok(leaf),
                };
                match leaf {
                    Ok(leaf) => crate::vspace::write_leaf(leaf, paddr, size_bits, rights, memory),
                    Err(e) => crate::say!("[caps] a checked mapping failed: {}", e),
                }
            }
            Effect::UnmapCpuPage { .. }
                if crate::testing::seeds::planted(crate::testing::seeds::Seed::LeakCpuLeaf) => {}
            Effect::UnmapCpuPage {
                vspace,
                vaddr,
                size_bits,
            } => {
                crate::vspace::unmap_leaf(vspace, vaddr, size_bits);
                // Devices bound to the VSpace (SVA) forget the leaf too,
                // before the operation returns.
                crate::io_space::invalidate_vspace(vspace, vaddr, size_bits);
            }
            Effect::ClearMemory { paddr, size_bits } => {
                if crate::arch::phys_map_covers(paddr, 1 << size_bits) {
                    // The model hands out memory of an Untyped the kernel
                    // created from free RAM, never twice while live
                    // (invariant 4, model-checked).
                    crate::mem::zero(paddr, 1 << size_bits);
                }
            }
            other => {
                if let Some(unit) = UNIT.lock().as_mut() {
                    unit.apply(&other);
                }
            }
        }
    }

    #[inline]
    fn capability_removed(&mut self, kind: ObjectKind, destroyed: bool) {
        self.removed.destroyed |= destroyed;
        self.removed.cnode |= kind == ObjectKind::CNode;
    }
}
