//! CPU mappings of Frames: a Frame capability copy holds at most one
//! mapping, CPU or IO, and deleting the copy removes it.
//!
//! Address spaces are named by the kernel (a `u64`, its root table's
//! address); the model does not track page tables, only which capability
//! copy holds which mapping, so that delete and revoke can emit the unmap.

use crate::caps::Caps;
use crate::effect::{Effect, EffectSink};
use crate::error::Error;
use crate::storage::{CpuMapping, Storage};
use crate::types::{ObjectKind, Rights, SlotId};

impl<S: Storage> Caps<S> {
    /// Map the Frame in `frame` into address space `vspace` at `vaddr` with
    /// `rights` (read, or read and write; at most the capability's).
    ///
    /// Errors: `AlreadyMapped` (this copy holds a CPU or IO mapping),
    /// `InvalidRights` (empty or more than read and write),
    /// `InsufficientRights`, `InvalidAddress` (not aligned to the frame).
    #[inline]
    pub fn map_frame(
        &mut self,
        frame: SlotId,
        vspace: u64,
        vaddr: u64,
        rights: Rights,
        sink: &mut (impl EffectSink + ?Sized),
    ) -> Result<(), Error> {
        // Fields read in place: copying the capability and the object
        // record cost the kernel's `Frame.Map` about 30 instructions.
        let cap = self.lookup_as(frame, ObjectKind::Frame, Rights::NONE)?;
        if cap.mapping.is_some() || cap.cpu.is_some() {
            return Err(Error::AlreadyMapped);
        }
        if !rights.contains(Rights::READ) || !Rights::READ_WRITE.contains(rights) {
            return Err(Error::InvalidRights);
        }
        if !cap.rights.contains(rights) {
            return Err(Error::InsufficientRights);
        }
        let object = self.object(cap.object).ok_or(Error::DeadObject)?;
        let (paddr, size_bits) = (object.paddr, object.size_bits);
        if vaddr & ((1u64 << size_bits) - 1) != 0 {
            return Err(Error::InvalidAddress);
        }
        sink.push(Effect::MapCpuPage {
            vspace,
            vaddr,
            paddr,
            size_bits,
            rights,
        });
        if let Some(c) = self.slot_mut(frame).cap.as_mut() {
            c.cpu = Some(CpuMapping {
                vspace,
                vaddr,
                rights,
            });
        }
        Ok(())
    }

    /// Remove the CPU mapping this Frame copy holds. Errors: `NotMapped`.
    #[inline]
    pub fn unmap_frame(
        &mut self,
        frame: SlotId,
        sink: &mut (impl EffectSink + ?Sized),
    ) -> Result<(), Error> {
        let cap = self.lookup_as(frame, ObjectKind::Frame, Rights::NONE)?;
        let cpu = cap.cpu.ok_or(Error::NotMapped)?;
        let size_bits = self
            .object(cap.object)
            .map_or(crate::PAGE_BITS, |o| o.size_bits);
        sink.push(Effect::UnmapCpuPage {
            vspace: cpu.vspace,
            vaddr: cpu.vaddr,
            size_bits,
        });
        if let Some(c) = self.slot_mut(frame).cap.as_mut() {
            c.cpu = None;
        }
        Ok(())
    }
}
