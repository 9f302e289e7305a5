//! Per-device configuration of an SMMUv3 (stage-2-only, stage-1-only and nested STEs,
//! context descriptors) and the batched TLB invalidation.

use super::cd::Cd;
use super::queue::Command;
use super::ste::{Stage2Config, Ste};
use super::{Smmu, SmmuError};
use crate::invalidation::{InvalidationBatch, InvalidationStats, InvalidationTarget};
use crate::{FrameAllocator, Mmio, PhysAddr, PhysMem};

impl<M: Mmio> Smmu<M> {
    /// Attaches `stream_id` to a stage-2-only translation (STE.Config=0b110).
    pub fn attach_stage2(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        stream_id: u32,
        stage2: &Stage2Config,
    ) -> Result<(), SmmuError> {
        let ste = Ste::stage2(stage2, self.features()).map_err(SmmuError::InvalidSte)?;
        self.install_ste(mem, alloc, stream_id, &ste)
    }

    /// Attaches `stream_id` to nested translation (STE.Config=0b111) with
    /// one CD at `cd_table_ipa`, an IPA that `stage2` maps (read-only) to
    /// the kernel-owned CD page.
    pub fn attach_nested(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        stream_id: u32,
        stage2: &Stage2Config,
        cd_table_ipa: PhysAddr,
    ) -> Result<(), SmmuError> {
        let ste =
            Ste::nested(stage2, cd_table_ipa, self.features()).map_err(SmmuError::InvalidSte)?;
        self.install_ste(mem, alloc, stream_id, &ste)
    }

    /// Attaches `stream_id` to stage-1-only translation (STE.Config=0b101)
    /// with one CD at physical `cd_table` (a CPU address space shared with
    /// the device: TTB0 only); `vmid` tags its TLB entries (STE.S2VMID).
    pub fn attach_stage1(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        stream_id: u32,
        cd_table: PhysAddr,
        vmid: u16,
    ) -> Result<(), SmmuError> {
        let ste = Ste::stage1(cd_table, vmid, self.features()).map_err(SmmuError::InvalidSte)?;
        self.install_ste(mem, alloc, stream_id, &ste)
    }

    /// Turns stage-2 dirty tracking (STE.S2HA/S2HD, SMMUv3 3.13) of the
    /// live STE of `stream_id` on or off in place: one 64-bit write of
    /// STE word 2 (the only word that changes, so no break is needed),
    /// then CFGI_STE and TLBI_S12_VMALL of its VMID, one CMD_SYNC, so no
    /// cached configuration or TLB entry lets a write skip the update.
    /// The caller marks the stage-2 leaves clean before turning it on and
    /// dirty before turning it off ([`crate::pagetable::PageTable::set_dirty_state`]).
    /// Needs IDR0.HTTU=2 (QEMU: `InvalidSte(Stage2HardwareUpdate)`).
    pub fn set_stage2_dirty_tracking(
        &mut self,
        mem: &impl PhysMem,
        stream_id: u32,
        on: bool,
    ) -> Result<(), SmmuError> {
        let address = self
            .ste_address(mem, stream_id)
            .ok_or(SmmuError::StreamIdOutOfRange { stream_id })?;
        let mut ste = Ste::default();
        for (i, word) in ste.0.iter_mut().enumerate() {
            *word = mem.read_u64(address + 8 * i as u64);
        }
        if !ste.valid() {
            return Err(SmmuError::InvalidParameter {
                what: "dirty tracking needs a valid stage-2 STE on the stream",
            });
        }
        ste.set_stage2_dirty_tracking(on, self.features())
            .map_err(SmmuError::InvalidSte)?;
        ste.check(self.features()).map_err(SmmuError::InvalidSte)?;
        mem.write_u64(address + 16, ste.0[2]);
        self.submit(
            mem,
            [
                Command::CfgiSte { stream_id },
                Command::TlbiS12Vmall { vmid: ste.vmid() },
            ],
        )
    }

    /// Writes CD number `substream` of the CD table at physical `cd_table`
    /// (words 1..7, then word 0 with V) and issues CFGI_CD + CMD_SYNC for
    /// (`stream_id`, `substream`).
    pub fn write_cd(
        &mut self,
        mem: &impl PhysMem,
        cd_table: PhysAddr,
        stream_id: u32,
        substream: u32,
        cd: &Cd,
    ) -> Result<(), SmmuError> {
        let slot = cd_table + 64 * u64::from(substream);
        for (i, word) in cd.0.iter().enumerate().skip(1) {
            mem.write_u64(slot + 8 * i as u64, *word);
        }
        mem.write_u64(slot, cd.0[0]);
        self.submit(
            mem,
            [Command::CfgiCd {
                stream_id,
                substream_id: substream,
            }],
        )
    }

    /// Flushes `batch` (SMMUv3 targets only): one TLBI_S2_IPA / TLBI_NH_VA
    /// per 4 KiB page, or the whole VMID / ASID (TLBI_S12_VMALL /
    /// TLBI_NH_ASID) when a range needs more than
    /// [`InvalidationBatch::MAX_COMMANDS_PER_RANGE`] commands; nested stage-2
    /// targets add TLBI_NH_ALL for the VMID. Then one CMD_SYNC.
    pub fn flush(
        &mut self,
        mem: &impl PhysMem,
        batch: &InvalidationBatch,
    ) -> Result<InvalidationStats, SmmuError> {
        if batch.is_empty() {
            return Ok(InvalidationStats::default());
        }
        for range in batch.iter() {
            if matches!(
                range.target,
                InvalidationTarget::VtdDomain { .. } | InvalidationTarget::VtdPasid { .. }
            ) {
                return Err(SmmuError::InvalidParameter {
                    what: "VT-d invalidation target given to an SMMU",
                });
            }
        }
        let commands = batch.iter().flat_map(|range| {
            let pages = range.length >> 12;
            let whole = pages > InvalidationBatch::MAX_COMMANDS_PER_RANGE as u64;
            let (whole_command, extra) = match range.target {
                InvalidationTarget::SmmuStage2 { vmid, nested } => (
                    Command::TlbiS12Vmall { vmid },
                    nested.then_some(Command::TlbiNhAll { vmid }),
                ),
                InvalidationTarget::SmmuStage1 { vmid, asid } => {
                    (Command::TlbiNhAsid { vmid, asid }, None)
                }
                _ => (Command::TlbiNsnhAll, None),
            };
            let per_page = (0..if whole { 0 } else { pages }).map(move |page| {
                let address = range.start + (page << 12);
                match range.target {
                    InvalidationTarget::SmmuStage2 { vmid, .. } => Command::TlbiS2Ipa {
                        vmid,
                        ipa: address,
                        leaf: false,
                    },
                    InvalidationTarget::SmmuStage1 { vmid, asid } => Command::TlbiNhVa {
                        vmid,
                        asid,
                        address,
                        leaf: false,
                    },
                    _ => whole_command,
                }
            });
            whole
                .then_some(whole_command)
                .into_iter()
                .chain(per_page)
                .chain(extra.filter(|_| !whole))
        });
        let before = self.command_queue().map_or(0, |q| q.commands_issued);
        self.submit(mem, commands)?;
        let after = self.command_queue().map_or(0, |q| q.commands_issued);
        Ok(InvalidationStats {
            commands: after - before - 1,
            waits: 1,
        })
    }
}
