//! The abstract IOMMU: what the hardware may do, given the effects applied.
//!
//! State per unit: stage-2 mappings per IoSpace, device and PASID entries,
//! and a translation cache. It is deliberately pessimistic:
//! - **user stage 1 is adversarial**: a device whose entry has a stage-1
//!   root may map any IOVA to any IPA at any time, so it can reach every
//!   page mapped in the stage 2 of its IoSpace (which is also what a device
//!   without stage 1 reaches, since it may emit any address);
//! - **the cache may hold any translation valid at some point since its last
//!   invalidation**: before and after every effect, every currently valid
//!   translation (tagged with the DID it was made under) is added to the
//!   cache; `InvalidateDomain` only queues, and the entries of a domain are
//!   dropped when a later `WaitForInvalidation` on the unit completes.

use std::collections::{BTreeMap, BTreeSet};
use std::vec::Vec;

use crate::effect::{Effect, FaultSource};
use crate::types::{ObjectId, Rights};

/// One translation a device can complete: `(unit, rid, pasid)` reaches the
/// page at `paddr` with `rights`, tagged with `did`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Translation {
    /// IOMMU unit number.
    pub unit: u8,
    /// Requester id.
    pub rid: u32,
    /// PASID, or `None` for requests without one.
    pub pasid: Option<u32>,
    /// DID/VMID the translation was made (and is cached) under.
    pub did: u16,
    /// Physical address of the page.
    pub paddr: u64,
    /// Page size as a power of two.
    pub size_bits: u8,
    /// Access allowed.
    pub rights: Rights,
}

/// A device or PASID entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// DID/VMID.
    pub did: u16,
    /// IoSpace providing stage 2.
    pub space: ObjectId,
    /// Root IPA of the user's stage 1, if nested.
    pub stage1_root: Option<u64>,
}

/// A stage-2 leaf entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stage2Entry {
    /// Physical address of the page.
    pub paddr: u64,
    /// Page size as a power of two.
    pub size_bits: u8,
    /// Access allowed.
    pub rights: Rights,
}

/// The abstract IOMMU (all units).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AbstractIommu {
    /// Stage-2 leaves, keyed by (IoSpace, IPA).
    pub stage2: BTreeMap<(ObjectId, u64), Stage2Entry>,
    /// Device entries, keyed by (unit, rid).
    pub devices: BTreeMap<(u8, u32), Entry>,
    /// PASID entries, keyed by (unit, rid, PASID).
    pub pasids: BTreeMap<(u8, u32, u32), Entry>,
    /// Translations the caches may still hold.
    pub cache: BTreeSet<Translation>,
    /// Queued, not yet completed domain invalidations.
    pub pending: BTreeSet<(u8, u16)>,
    /// Fault routing.
    pub fault_routes: BTreeMap<(u8, FaultSource), ObjectId>,
}

impl AbstractIommu {
    /// Every translation the current tables allow.
    pub fn valid_now(&self) -> BTreeSet<Translation> {
        let mut out = BTreeSet::new();
        let sources = self
            .devices
            .iter()
            .map(|(&(unit, rid), e)| (unit, rid, None, e))
            .chain(
                self.pasids
                    .iter()
                    .map(|(&(unit, rid, pasid), e)| (unit, rid, Some(pasid), e)),
            );
        for (unit, rid, pasid, entry) in sources {
            for (_, leaf) in self
                .stage2
                .range((entry.space, 0)..=(entry.space, u64::MAX))
            {
                out.insert(Translation {
                    unit,
                    rid,
                    pasid,
                    did: entry.did,
                    paddr: leaf.paddr,
                    size_bits: leaf.size_bits,
                    rights: leaf.rights,
                });
            }
        }
        out
    }

    /// Every translation a device can complete now: from the tables or from
    /// a cache.
    pub fn reachable(&self) -> BTreeSet<Translation> {
        let mut all = self.valid_now();
        all.extend(self.cache.iter().copied());
        all
    }

    /// Can requester `rid` of `unit` (with `pasid`) reach the byte at
    /// `paddr` with access `access`?
    pub fn can_reach(
        &self,
        unit: u8,
        rid: u32,
        pasid: Option<u32>,
        paddr: u64,
        access: Rights,
    ) -> bool {
        self.reachable().iter().any(|t| {
            t.unit == unit
                && t.rid == rid
                && t.pasid == pasid
                && t.paddr <= paddr
                && paddr - t.paddr < (1u64 << t.size_bits)
                && t.rights.contains(access)
        })
    }

    fn absorb(&mut self) {
        let now = self.valid_now();
        self.cache.extend(now);
    }

    /// Apply one effect.
    pub fn apply(&mut self, effect: Effect) {
        self.absorb();
        match effect {
            // The abstract IOMMU models DMA only; CPU mappings do not reach it.
            Effect::ClearMemory { .. }
            | Effect::MapCpuPage { .. }
            | Effect::UnmapCpuPage { .. } => {}
            Effect::MapIoPage {
                space,
                ipa,
                paddr,
                size_bits,
                rights,
                ..
            } => {
                self.stage2.insert(
                    (space, ipa),
                    Stage2Entry {
                        paddr,
                        size_bits,
                        rights,
                    },
                );
            }
            Effect::UnmapIoPage { space, ipa, .. } => {
                self.stage2.remove(&(space, ipa));
            }
            Effect::InstallDeviceEntry {
                unit,
                rid,
                did,
                space,
                stage1_root,
            } => {
                self.devices.insert(
                    (unit, rid),
                    Entry {
                        did,
                        space,
                        stage1_root,
                    },
                );
            }
            Effect::ClearDeviceEntry { unit, rid } => {
                self.devices.remove(&(unit, rid));
            }
            Effect::InstallPasidEntry {
                unit,
                rid,
                pasid,
                did,
                space,
                stage1_root,
            } => {
                self.pasids.insert(
                    (unit, rid, pasid),
                    Entry {
                        did,
                        space,
                        stage1_root,
                    },
                );
            }
            Effect::ClearPasidEntry { unit, rid, pasid } => {
                self.pasids.remove(&(unit, rid, pasid));
            }
            Effect::RouteFaults {
                unit,
                source,
                queue,
            } => match queue {
                Some(q) => {
                    self.fault_routes.insert((unit, source), q);
                }
                None => {
                    self.fault_routes.remove(&(unit, source));
                }
            },
            Effect::InvalidateDomain { unit, did } => {
                self.pending.insert((unit, did));
            }
            Effect::WaitForInvalidation { unit } => {
                let done: Vec<(u8, u16)> = self
                    .pending
                    .iter()
                    .copied()
                    .filter(|p| p.0 == unit)
                    .collect();
                for (u, did) in done {
                    self.pending.remove(&(u, did));
                    self.cache.retain(|t| !(t.unit == u && t.did == did));
                }
            }
        }
        self.absorb();
    }
}
