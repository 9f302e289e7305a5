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
    /// The memory type a `Frame.Map`'s decode found for the page it maps
    /// (`devmem::is_device_memory`, from the Frame's address under the
    /// capability lock held since); `None`: found afresh.
    pub memory: Option<crate::vspace::Memory>,
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
    memory: None,
    removed: Removed {
        destroyed: false,
        cnode: false,
    },
};

impl caps::EffectSink for ApplyEffects {
    /// Only the dispatch is inlined into the model's operations: the CPU
    /// arms went through one out-of-line `push` whose frame (six saved
    /// registers, for the IOMMU arm) cost `Frame.Map` + `Unmap` about 30
    /// instructions.
    #[inline(always)]
    fn push(&mut self, effect: Effect) {
        match effect {
            Effect::MapCpuPage {
                vspace,
                vaddr,
                paddr,
                size_bits,
                rights,
            } => self.map_cpu_page(vspace, vaddr, paddr, size_bits, rights),
            Effect::UnmapCpuPage {
                vspace,
                vaddr,
                size_bits,
            } => unmap_cpu_page(vspace, vaddr, size_bits),
            other => apply(other),
        }
    }

    #[inline]
    fn capability_removed(&mut self, kind: ObjectKind, destroyed: bool) {
        self.removed.destroyed |= destroyed;
        self.removed.cnode |= kind == ObjectKind::CNode;
    }
}

impl ApplyEffects {
    /// `Effect::MapCpuPage`: the leaf written where decode found it empty.
    /// Inlined (`map_frame` is its one caller): out of line it cost
    /// `Frame.Map` 23 instructions on x86_64.
    #[inline(always)]
    fn map_cpu_page(&self, vspace: u64, vaddr: u64, paddr: u64, size_bits: u8, rights: Rights) {
        // Memory from a device Untyped maps as device memory, never
        // executable (`Frame.Map` refuses to be asked).
        let memory = self
            .memory
            .unwrap_or_else(|| crate::devmem::memory_type(paddr));
        let rights = crate::vspace::Rights {
            write: rights.contains(Rights::WRITE),
            execute: self.execute
                && !rights.contains(Rights::WRITE)
                && memory == crate::vspace::Memory::Normal,
        };
        // Checked by `can_map` before the model was asked.
        let leaf = match self.leaf {
            0 => leaf_afresh(vspace, vaddr, size_bits),
            leaf => leaf,
        };
        if leaf != 0 {
            crate::vspace::write_leaf(leaf, paddr, size_bits, rights, memory);
        }
    }
}

/// The leaf entry for a mapping no decode looked at (boot's, `initial`):
/// found afresh; 0, said on the console, if the checked mapping cannot be
/// made. Out of line, so that `Frame.Map`'s path carries no walk or
/// message (on aarch64 they made `map_frame` save six more registers).
#[cold]
#[inline(never)]
fn leaf_afresh(vspace: u64, vaddr: u64, size_bits: u8) -> u64 {
    crate::vspace::can_map(vspace, vaddr, size_bits).unwrap_or_else(|e| {
        crate::println!("[caps] a checked mapping failed: {e}");
        0
    })
}

/// `Effect::UnmapCpuPage`: the leaf cleared, the TLB flushed, and devices
/// bound to the VSpace (SVA) forget the leaf too, before the operation
/// returns. Out of line: inlined into every model operation that may
/// unmap (delete, revoke), it grew their frames.
#[inline(never)]
fn unmap_cpu_page(vspace: u64, vaddr: u64, size_bits: u8) {
    if crate::testing::seeds::planted(crate::testing::seeds::Seed::LeakCpuLeaf) {
        return;
    }
    crate::vspace::unmap_leaf(vspace, vaddr, size_bits);
    crate::io_space::invalidate_vspace(vspace, vaddr, size_bits);
}

/// [`SINK`]'s `push` out of line, for another sink's fallback: the
/// inlined dispatch made `IoSpace.Unmap`'s sink (`invocation::io_space`)
/// 69 instructions dearer on x86_64.
#[inline(never)]
pub fn apply_elsewhere(effect: Effect) {
    let mut sink = SINK;
    caps::EffectSink::push(&mut sink, effect);
}

/// Every other effect: retyped memory cleared, IOMMU effects handed to the
/// unit. Out of line (the IOMMU arm's frame is large).
#[inline(never)]
fn apply(effect: Effect) {
    match effect {
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
