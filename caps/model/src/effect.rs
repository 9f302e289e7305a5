//! Hardware effects: what an operation needs the kernel to do to hardware.
//!
//! Operations never touch hardware. They emit effects, in order, into an
//! [`EffectSink`]. Ordering rules the kernel may rely on:
//! - table entries are cleared before the invalidation that covers them;
//! - every invalidation of an operation is followed, before the operation
//!   returns, by a [`Effect::WaitForInvalidation`] on the same unit
//!   (invalidations are batched per domain, never skipped);
//! - an operation that returns an error emits nothing.

use crate::types::{ObjectId, ObjectKind, Rights};

/// Where an IOMMU unit sends faults of one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultSource {
    /// Faults of every device using the domain with this DID/VMID.
    Domain(u16),
    /// Faults of this requester id.
    Device(u32),
}

/// One hardware action the kernel must perform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Effect {
    /// Zero freshly retyped memory before the new object is used.
    ClearMemory {
        /// Physical address.
        paddr: u64,
        /// Size as a power of two.
        size_bits: u8,
    },
    /// Map a Frame into a CPU address space: `vaddr -> paddr` with `rights`
    /// (never executable; the kernel maps program code itself).
    MapCpuPage {
        /// The address space (the kernel's name for it).
        vspace: u64,
        /// Virtual address.
        vaddr: u64,
        /// Physical address of the frame.
        paddr: u64,
        /// Page size as a power of two.
        size_bits: u8,
        /// Access allowed (read, or read and write).
        rights: Rights,
    },
    /// Remove a CPU mapping and flush the TLB for it.
    UnmapCpuPage {
        /// The address space.
        vspace: u64,
        /// Virtual address.
        vaddr: u64,
        /// Page size as a power of two.
        size_bits: u8,
    },
    /// Write a stage-2 leaf entry `ipa -> paddr` into the IoSpace's table.
    MapIoPage {
        /// IOMMU unit number.
        unit: u8,
        /// The IoSpace's DID/VMID.
        did: u16,
        /// The IoSpace object whose table is written.
        space: ObjectId,
        /// Intermediate physical address (stage-2 input).
        ipa: u64,
        /// Physical address of the frame.
        paddr: u64,
        /// Page size as a power of two.
        size_bits: u8,
        /// Access allowed (a subset of read and write).
        rights: Rights,
    },
    /// Clear the stage-2 leaf entry at `ipa` (shadow entries that used it too).
    UnmapIoPage {
        /// IOMMU unit number.
        unit: u8,
        /// The IoSpace's DID/VMID.
        did: u16,
        /// The IoSpace object whose table is written.
        space: ObjectId,
        /// Intermediate physical address.
        ipa: u64,
        /// Page size as a power of two.
        size_bits: u8,
    },
    /// Point a requester at a domain (VT-d context/PASID-0 entry, SMMUv3 STE).
    InstallDeviceEntry {
        /// IOMMU unit number.
        unit: u8,
        /// Requester id.
        rid: u32,
        /// DID/VMID of the domain.
        did: u16,
        /// The IoSpace providing stage 2.
        space: ObjectId,
        /// Root IPA of the user's stage-1 table, if nested.
        stage1_root: Option<u64>,
    },
    /// Block a requester's DMA (clear its device entry).
    ClearDeviceEntry {
        /// IOMMU unit number.
        unit: u8,
        /// Requester id.
        rid: u32,
    },
    /// Point one PASID of a requester at a domain.
    InstallPasidEntry {
        /// IOMMU unit number.
        unit: u8,
        /// Requester id.
        rid: u32,
        /// The PASID.
        pasid: u32,
        /// DID/VMID of the domain.
        did: u16,
        /// The IoSpace providing stage 2.
        space: ObjectId,
        /// Root IPA of the user's stage-1 table, if nested.
        stage1_root: Option<u64>,
    },
    /// Clear one PASID entry of a requester.
    ClearPasidEntry {
        /// IOMMU unit number.
        unit: u8,
        /// Requester id.
        rid: u32,
        /// The PASID.
        pasid: u32,
    },
    /// Send the faults of `source` to `queue` (or stop delivering them).
    RouteFaults {
        /// IOMMU unit number.
        unit: u8,
        /// Whose faults.
        source: FaultSource,
        /// The IoFaultQueue object, or `None` to drop faults.
        queue: Option<ObjectId>,
    },
    /// Queue an invalidation of every cached translation and device/PASID
    /// entry tagged with this DID/VMID.
    InvalidateDomain {
        /// IOMMU unit number.
        unit: u8,
        /// DID/VMID.
        did: u16,
    },
    /// Wait until every invalidation queued on the unit has completed
    /// (VT-d wait descriptor, SMMUv3 CMD_SYNC).
    WaitForInvalidation {
        /// IOMMU unit number.
        unit: u8,
    },
}

/// Receives the effects of an operation, in order.
///
/// The kernel's sink applies them to hardware as they arrive (table writes
/// cannot fail; invalidations are queued and `WaitForInvalidation` drains
/// them). The host's sink records or applies them to the abstract IOMMU.
/// Any `FnMut(Effect)` closure is a sink.
pub trait EffectSink {
    /// Take one effect.
    fn push(&mut self, effect: Effect);

    /// Not a hardware effect: a capability to an object of `kind` left its
    /// slot (`Caps::delete`, `Caps::revoke`, after its own effects), and
    /// `destroyed` says whether it was the object's last, so the object was
    /// destroyed. The kernel uses it to skip reconciling what it keeps
    /// about objects and capabilities when nothing it could hold died.
    /// Ignored by default.
    fn capability_removed(&mut self, kind: ObjectKind, destroyed: bool) {
        let _ = (kind, destroyed);
    }
}

impl<F: FnMut(Effect) + ?Sized> EffectSink for F {
    fn push(&mut self, effect: Effect) {
        self(effect)
    }
}

/// A sink that drops every effect (for operations known to emit none, and
/// benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardEffects;

impl EffectSink for DiscardEffects {
    fn push(&mut self, _effect: Effect) {}
}

/// Collects the domains an operation must invalidate and emits each
/// invalidation once, followed by one wait per unit.
pub(crate) struct Flush {
    domains: [(u8, u16); Flush::CAPACITY],
    len: usize,
    skip_wait: bool,
}

impl Flush {
    const CAPACITY: usize = 8;

    pub(crate) fn new(skip_wait: bool) -> Self {
        Flush {
            domains: [(0, 0); Flush::CAPACITY],
            len: 0,
            skip_wait,
        }
    }

    /// Remember that a table entry tagged `(unit, did)` was cleared.
    pub(crate) fn note(&mut self, unit: u8, did: u16, sink: &mut (impl EffectSink + ?Sized)) {
        if self.domains[..self.len].contains(&(unit, did)) {
            return;
        }
        if self.len == Flush::CAPACITY {
            self.finish(sink);
        }
        self.domains[self.len] = (unit, did);
        self.len += 1;
    }

    /// Emit the pending invalidations and the waits that complete them.
    pub(crate) fn finish(&mut self, sink: &mut (impl EffectSink + ?Sized)) {
        for &(unit, did) in &self.domains[..self.len] {
            sink.push(Effect::InvalidateDomain { unit, did });
        }
        if !self.skip_wait {
            for i in 0..self.len {
                let unit = self.domains[i].0;
                if !self.domains[..i].iter().any(|d| d.0 == unit) {
                    sink.push(Effect::WaitForInvalidation { unit });
                }
            }
        }
        self.len = 0;
    }
}
