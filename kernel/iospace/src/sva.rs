//! SVA: a device translating through a CPU address space (a VSpace root
//! the kernel built), first stage only, so the device names memory by the
//! same virtual addresses as the driver's threads (`IoDevice.BindVSpace`
//! for its untagged DMA, `IoPasid.BindVSpace` for one PASID's).
//!
//! - VT-d: the requester's RID_PASID entry with PGTT = first stage, its
//!   FSPTPTR the root (x86 4-level paging format), SRE = 0: requests are
//!   user requests, so the kernel half (PML4 entries 256..511, U/S = 0)
//!   faults. DID `SVA_DIDS + i` for binding `i`. A PASID binding writes
//!   that PASID's entry the same way (PASID-tagged DMA; the unit's
//!   scalable mode has PASID tables wherever it has first-stage tables).
//!   Invalidation names the binding's PASID.
//! - SMMUv3: a stage-1-only STE (Config = 0b101) with one CD (from the
//!   pool, charged to the unit): TTB0 = the root, EPD1 = 1, so the
//!   kernel's TTBR1 half does not exist for the device. VMID 0 (no
//!   IoSpace uses it: IoSpace `d` has VMID `d + 1`), ASID `i + 1`. No
//!   PASID bindings (`NotSupported`): a substream's CD is fetched through
//!   the stream's stage 2 (the layer's substreams are nested), and a
//!   stage-1-only STE would take the stream's own IoSpace away.
//!
//! Strict revocation: every CPU leaf cleared in a bound VSpace (a
//! `Frame.Unmap`, a delete or revoke of the Frame copy, a dead table)
//! is invalidated in the device's IOTLB and waited for before the
//! operation returns ([`State::invalidate_vspace`]); if the unit does
//! not confirm, the device's entry is cleared (and, failing that, the
//! unit fails closed as for any other invalidation).

use crate::state::State;
use crate::{Env, Flaw, IoUnit, POOL_RESERVE};
use abi::Error;
use caps::{ObjectId, ObjectKind};
use iommu::PhysMem;
use iommu::attachments::Exposed;
use iommu::budget::Account;

/// Most devices bound to VSpaces at once.
pub const SVA_BINDINGS: usize = 8;

/// One device bound to a VSpace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The IoDevice object, or the IoPasid object of a PASID binding.
    pub device: ObjectId,
    /// Its requester id.
    pub requester: u16,
    /// The PASID whose DMA translates through the VSpace; `None`: the
    /// device's untagged DMA (VT-d RID_PASID).
    pub pasid: Option<u32>,
    /// The VSpace root's PageTable object.
    pub root_object: ObjectId,
    /// The root table's physical address.
    pub root: u64,
    /// SMMUv3: the CD page (from the pool, charged to the unit).
    pub page: Option<u64>,
}

impl<U: IoUnit, M: PhysMem + Copy, E: Env> State<U, M, E> {
    /// Whether the IoDevice or IoPasid `device` is bound to a VSpace.
    pub fn sva_bound(&self, device: ObjectId) -> bool {
        self.sva.iter().flatten().any(|b| b.device == device)
    }

    /// Whether the VSpace rooted at `root` has a device bound.
    pub fn vspace_bound(&self, root: u64) -> bool {
        self.sva.iter().flatten().any(|b| b.root == root)
    }

    /// The bindings with their hardware tags ([`IoUnit::sva_tag`] of
    /// their slot), for the kernel's abstraction check.
    pub fn sva_bindings(&self) -> impl Iterator<Item = (u16, &Binding)> + '_ {
        self.sva
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.as_ref().map(|b| (U::sva_tag(i), b)))
    }

    /// Before `IoDevice.BindVSpace` (`pasid` `None`) or
    /// `IoPasid.BindVSpace` of requester `rid`, changing nothing:
    /// `NotSupported` unless the unit translates with a first stage it
    /// can be given (VT-d ECAP.FLTS in scalable mode, SMMUv3 IDR0.S1P;
    /// for a PASID, VT-d only: [`IoUnit::sva_pasids_supported`]),
    /// `AlreadyAttached` if `device` is bound already or the PASID's
    /// entry is in use (attached or bound), `ObjectTableFull` when every
    /// binding record is in use, `TableMemoryExhausted` unless the unit's
    /// pages can serve the entry's tables.
    pub fn ensure_sva_room(
        &self,
        unit: &U,
        device: ObjectId,
        rid: u32,
        pasid: Option<u32>,
    ) -> Result<(), Error> {
        if !unit.sva_supported() || (pasid.is_some() && !unit.sva_pasids_supported()) {
            return Err(Error::NotSupported);
        }
        if self.sva_bound(device) {
            return Err(Error::AlreadyAttached);
        }
        if let Some(number) = pasid {
            // The entry a PASID binding writes must be nobody else's
            // (VT-d: PASID 0 is the device's own RID_PASID entry).
            let same = |requester: u16, other: Option<u32>| {
                u32::from(requester) == rid && other.unwrap_or(0) == number
            };
            if self.attached.iter().any(|a| same(a.requester, a.pasid))
                || self
                    .sva
                    .iter()
                    .flatten()
                    .any(|b| same(b.requester, b.pasid))
            {
                return Err(Error::AlreadyAttached);
            }
        }
        if self.sva.iter().all(Option::is_some) {
            return Err(Error::ObjectTableFull);
        }
        if self.pool.ledger.available(Account::Unit) < POOL_RESERVE {
            return Err(Error::TableMemoryExhausted);
        }
        Ok(())
    }

    /// `IoDevice.BindVSpace` (`pasid` `None`) or `IoPasid.BindVSpace`:
    /// points requester `rid`'s untagged DMA (the IoDevice `device`), or
    /// its DMA tagged `pasid` (the IoPasid `device`), at the VSpace rooted
    /// at `root` (the PageTable `root_object`). Checked by
    /// [`State::ensure_sva_room`] first. If the unit fails midway the
    /// entry is blocked again and the call answers `IommuTimeout`.
    pub fn bind_vspace(
        &mut self,
        unit: &mut U,
        device: ObjectId,
        rid: u32,
        pasid: Option<u32>,
        root_object: ObjectId,
        root: u64,
    ) -> Result<(), Error> {
        self.ensure_sva_room(unit, device, rid, pasid)?;
        let requester = u16::try_from(rid).map_err(|_| Error::OutOfScope)?;
        let index = self
            .sva
            .iter()
            .position(Option::is_none)
            .ok_or(Error::ObjectTableFull)?;
        match unit.write_sva_entry(self, requester, pasid, index, root) {
            Ok(page) => {
                self.sva[index] = Some(Binding {
                    device,
                    requester,
                    pasid,
                    root_object,
                    root,
                    page,
                });
                Ok(())
            }
            Err(why) => {
                E::log(&ktext::text!("[io] SVA bind of {:#x}: {}", requester, why));
                self.block_requester(unit, requester, pasid);
                Err(Error::IommuTimeout)
            }
        }
    }

    /// `IoDevice.Detach` of a bound device (`IoPasid.Detach` of a bound
    /// IoPasid): its entry blocks again and the binding goes. Returns
    /// whether `device` was bound.
    pub fn unbind_vspace(&mut self, unit: &mut U, device: ObjectId) -> bool {
        let Some(index) = self
            .sva
            .iter()
            .position(|b| b.is_some_and(|b| b.device == device))
        else {
            return false;
        };
        self.drop_binding(unit, index);
        true
    }

    /// A CPU leaf of `size_bits` at `vaddr` in the VSpace rooted at
    /// `root` was cleared: every device bound to it forgets the
    /// translation before this returns (VT-d PASID-based IOTLB
    /// invalidation of the page(s) and a wait; SMMUv3 CMD_TLBI_NH_VA, or
    /// CMD_TLBI_NH_ASID for a 2 MiB leaf, and CMD_SYNC). A unit that does
    /// not confirm leaves the device blocked and the invocation fails with
    /// `IommuTimeout`.
    #[inline]
    pub fn invalidate_vspace(&mut self, unit: &mut U, root: u64, vaddr: u64, size_bits: u8) {
        if E::broken(Flaw::SkipSvaInvalidation) {
            return;
        }
        for index in 0..crate::sva::SVA_BINDINGS {
            let Some(binding) = self.sva[index].filter(|b| b.root == root) else {
                continue;
            };
            if unit
                .invalidate_sva(self, index, binding.pasid, Some((vaddr, size_bits)))
                .is_err()
            {
                self.block_requester(unit, binding.requester, binding.pasid);
            }
        }
    }

    /// A CPU table was unlinked from some VSpace (`PageTable.Unmap`):
    /// every bound device forgets its whole address space, the
    /// paging-structure entries it may cache for that table included,
    /// before the table's memory can serve anything else.
    pub fn invalidate_all_vspaces(&mut self, unit: &mut U) {
        if E::broken(Flaw::SkipSvaInvalidation) {
            return;
        }
        for index in 0..SVA_BINDINGS {
            let Some(binding) = self.sva[index] else {
                continue;
            };
            if unit
                .invalidate_sva(self, index, binding.pasid, None)
                .is_err()
            {
                self.block_requester(unit, binding.requester, binding.pasid);
            }
        }
    }

    /// CPU tables were unlinked somewhere (a dead PageTable): every bound
    /// device's whole address-space tag is invalidated; devices bound to a
    /// root that died are unbound, and bindings of dead IoDevices go.
    /// `alive(object, kind)` says whether an object still exists.
    pub fn reconcile_sva(
        &mut self,
        unit: &mut U,
        tables_died: bool,
        alive: impl Fn(ObjectId, ObjectKind) -> bool,
    ) {
        for index in 0..SVA_BINDINGS {
            let Some(binding) = self.sva[index] else {
                continue;
            };
            let kind = match binding.pasid {
                Some(_) => ObjectKind::IoPasid,
                None => ObjectKind::IoDevice,
            };
            if !alive(binding.device, kind) || !alive(binding.root_object, ObjectKind::PageTable) {
                self.drop_binding(unit, index);
            }
        }
        if tables_died {
            self.invalidate_all_vspaces(unit);
        }
    }

    /// Clears binding `index`'s entry, frees what it used and forgets it.
    fn drop_binding(&mut self, unit: &mut U, index: usize) {
        let Some(binding) = self.sva[index].take() else {
            return;
        };
        if unit
            .clear_entry(self, binding.requester, binding.pasid)
            .is_err()
        {
            self.fail_closed(unit, Exposed::Everything);
        } else {
            self.release_unit_tables(unit, binding.requester, binding.pasid);
        }
        if let Some(page) = binding.page {
            // The STE no longer names it and CFGI_STE was waited for.
            self.give_back(Account::Unit, page);
        }
    }

    /// Blocks `requester`'s entry for `pasid` after a failed SVA
    /// operation: the entry cleared, or, if the unit does not confirm even
    /// that, every DMA stopped.
    fn block_requester(&mut self, unit: &mut U, requester: u16, pasid: Option<u32>) {
        self.failure = Some(Error::IommuTimeout);
        if unit.clear_entry(self, requester, pasid).is_err() {
            self.fail_closed(unit, Exposed::Everything);
        }
        if let Some(index) = self
            .sva
            .iter()
            .position(|b| b.is_some_and(|b| b.requester == requester && b.pasid == pasid))
            && let Some(binding) = self.sva[index].take()
            && let Some(page) = binding.page
        {
            self.give_back(Account::Unit, page);
        }
    }
}
