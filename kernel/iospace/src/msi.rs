//! The MSI doorbell window of an IoSpace (SMMUv3): on Arm a device's MSI is
//! a DMA write through the IOMMU to the interrupt controller's doorbell
//! (GICv2m `MSI_SETSPI`), so it reaches the GIC only where the device's
//! translation maps that page. The kernel maps it itself, write-only, at a
//! fixed IPA in the IoSpace's reserved window (its last page, clear of the
//! CD pages at the window's start), the way Linux's iommufd reserves a
//! software MSI window; no capability names that page, so no driver can
//! map over it or unmap it (`IoSpace.Map` there: `MsiWindow`). A driver
//! whose device is nested reaches it through its own stage 1: an IOVA it
//! maps to the doorbell IPA.

use crate::state::State;
use crate::{Env, IoUnit, RESERVED_IPA_WINDOW};
use abi::Error;
use caps::ObjectId;
use iommu::PhysMem;
use iommu::pagetable::{PageSize, Perms};

/// The doorbell IPA of an `ipa_bits`-bit IoSpace: the last page of its
/// reserved window.
pub fn msi_doorbell_ipa(ipa_bits: u32) -> u64 {
    (1u64 << ipa_bits) - 4096
}

// The doorbell page lies inside the reserved window, after the CD pages
// of every nest (`reserved_base + 4096 * nest`).
const _: () = assert!(RESERVED_IPA_WINDOW > 4096 * (crate::NESTS as u64 + 1));

impl<U: IoUnit, M: PhysMem + Copy, E: Env> State<U, M, E> {
    /// Maps the doorbell page `doorbell` (4 KiB aligned, the interrupt
    /// controller's) write-only at `space`'s doorbell IPA, unless it is
    /// mapped already; returns that IPA. A page that was never mapped
    /// needs no invalidation. `DeadObject` without a stage 2,
    /// `TableMemoryExhausted` when the space's reservation cannot hold the
    /// walk (the caller checks [`State::ensure_pool`] first).
    pub fn map_msi_doorbell(&mut self, space: ObjectId, doorbell: u64) -> Result<u64, Error> {
        let (table, mapped) = {
            let s = self.space(space).map_err(|_| Error::DeadObject)?;
            (s.table, s.msi_doorbell)
        };
        let ipa = msi_doorbell_ipa(table.input_bits());
        if mapped == Some(doorbell) {
            return Ok(ipa);
        }
        if !E::broken(crate::Flaw::NoMsiDoorbell) {
            let mem = self.mem();
            table
                .map(
                    &mem,
                    &mut self.pool.of_space(space),
                    ipa,
                    doorbell,
                    PageSize::Size4K,
                    Perms::WRITE,
                )
                .map_err(|_| Error::TableMemoryExhausted)?;
        }
        if let Some(s) = self.spaces.iter_mut().find(|s| s.object == space) {
            s.msi_doorbell = Some(doorbell);
        }
        Ok(ipa)
    }

    /// `space`'s doorbell IPA (mapped or not yet); `None` without a
    /// stage 2.
    pub fn msi_doorbell_of(&self, space: ObjectId) -> Option<u64> {
        let s = self.space(space).ok()?;
        Some(msi_doorbell_ipa(s.table.input_bits()))
    }

    /// [`State::msi_doorbell_of`] the IoSpace whose record `at` names
    /// ([`State::space_at`]), without searching for it again.
    #[inline(always)]
    pub fn msi_doorbell_at(&self, at: crate::SpaceAt) -> Option<u64> {
        let s = self
            .spaces
            .get(at.position)
            .filter(|s| s.object == at.object)
            .or_else(|| self.space(at.object).ok())?;
        Some(msi_doorbell_ipa(s.table.input_bits()))
    }

    /// Every doorbell the layer mapped: (space, IPA, physical address),
    /// for the abstraction check (the kernel's own leaves).
    pub fn msi_doorbells(&self, mut visit: impl FnMut(ObjectId, u64, u64)) {
        for s in self.spaces.iter() {
            if let Some(doorbell) = s.msi_doorbell {
                visit(s.object, msi_doorbell_ipa(s.table.input_bits()), doorbell);
            }
        }
    }
}
