//! The SMMUv3 half: stage-2 and nested STEs, a CD page per nest mapped
//! read-only in the reserved IPA window, TLBI by VMID (and by ASID for
//! `Invalidate`), failing closed through `Smmu::invalidate_or_block` and
//! `Smmu::fail_closed` (all DMA stops when blocking is not confirmed).

use crate::state::State;
use crate::{Env, IoUnit, PENDING_TAGS, reserved_base, space_tag};
use abi::Error;
use caps::ObjectId;
use iommu::attachments::Exposed;
use iommu::budget::{Account, UNIT_TABLES_PER_ENTRY};
use iommu::pagetable::{PageSize, PageTable, Perms};
use iommu::smmuv3::Smmu;
use iommu::smmuv3::cd::{Cd, CdParams};
use iommu::smmuv3::pagetable::{Stage2Format, levels_4k};
use iommu::smmuv3::queue::Command;
use iommu::smmuv3::ste::Stage2Config;
use iommu::{FrameAllocator, Mmio, PhysMem};

/// The VMID of every SVA binding's TLB entries: no IoSpace uses it
/// (IoSpace `d` has VMID `d + 1`).
const SVA_VMID: u16 = 0;

/// MAIR_EL1 as the kernel sets it at boot (`arch/aarch64/boot.rs`):
/// Attr0 Device-nGnRnE, Attr1 Normal Write-Back, Attr2 Device-nGnRE
/// (user MMIO); an SVA binding's CD uses it, as the CPU does.
const CPU_MAIR: u64 = 0x04_FF00;

/// The ASID of SVA binding `index`.
fn sva_asid(index: usize) -> u16 {
    index as u16 + 1
}

/// The IPA bits of every IoSpace's stage 2 on `smmu`.
fn ipa_bits<R: Mmio>(smmu: &Smmu<R>) -> u32 {
    smmu.features().idr5.oas_bits().min(48)
}

impl<R: Mmio> IoUnit for Smmu<R> {
    type Format = Stage2Format;
    const SHADOWS: bool = false;
    const USER_TABLE_FORMAT: u64 = 2;

    fn stage2_at(&self, root: u64) -> Option<PageTable<Stage2Format>> {
        let bits = ipa_bits(self);
        PageTable::at(
            root,
            Stage2Format::for_unit(self.features()),
            levels_4k(bits),
            bits,
        )
        .ok()
    }

    fn nest_tag(index: usize) -> u16 {
        index as u16 + 1
    }

    fn cd_ipa(ipa_bits: u32, index: usize) -> Option<u64> {
        Some(reserved_base(ipa_bits) + 4096 * index as u64)
    }

    fn pasids_supported(&self) -> bool {
        false
    }

    fn dirty_tracking(&self) -> bool {
        self.extensions().dirty_tracking
    }

    fn first_stage_dirty(&self) -> bool {
        false
    }

    fn stage2_supported(&self) -> bool {
        self.features().idr0.s2p()
    }

    fn sva_supported(&self) -> bool {
        self.features().idr0.s1p() && self.features().idr0.aarch64_tables()
    }

    fn write_sva_entry<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        requester: u16,
        index: usize,
        root: u64,
    ) -> Result<Option<u64>, &'static str> {
        let mem = state.mem();
        let page = state
            .pool
            .of_unit()
            .alloc_zeroed_frame()
            .ok_or("no pool page for the CD")?;
        // TTB0 only (EPD1 = 1): the kernel's TTBR1 half does not exist for
        // the device. The CPU's MAIR, so the device sees each page with the
        // memory type the driver's threads see.
        let params = CdParams {
            asid: sva_asid(index),
            ttb0: root,
            va_bits: 48,
            output_bits: ipa_bits(self),
            mair: CPU_MAIR,
        };
        let written = Cd::new(&params, self.features())
            .map_err(|_| "the CD was refused")
            .and_then(|cd| {
                for (i, word) in cd.0.iter().enumerate() {
                    mem.write_u64(page + 8 * i as u64, *word);
                }
                // The ASID may have served an earlier binding.
                self.submit(
                    &mem,
                    [Command::TlbiNhAsid {
                        vmid: SVA_VMID,
                        asid: sva_asid(index),
                    }],
                )
                .map_err(|_| state.unit_failed("the TLB invalidation of a reused ASID failed"))
            })
            .and_then(|()| {
                state
                    .with_tables_of(Account::Unit, |frames| {
                        self.attach_stage1(&mem, frames, u32::from(requester), page, SVA_VMID)
                    })
                    .map_err(|_| state.unit_failed("installing the stage-1 STE failed"))
            });
        match written {
            Ok(()) => Ok(Some(page)),
            Err(why) => {
                state.give_back(Account::Unit, page);
                Err(why)
            }
        }
    }

    #[inline]
    fn invalidate_sva<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        index: usize,
        leaf: Option<(u64, u8)>,
    ) -> Result<(), &'static str> {
        let asid = sva_asid(index);
        let command = match leaf {
            Some((address, 12)) => Command::TlbiNhVa {
                vmid: SVA_VMID,
                asid,
                address,
                leaf: false,
            },
            _ => Command::TlbiNhAsid {
                vmid: SVA_VMID,
                asid,
            },
        };
        self.submit(&state.mem(), [command])
            .map_err(|_| "the stage-1 TLB invalidation failed")
    }

    fn set_entry_dirty_tracking(
        &mut self,
        mem: &impl PhysMem,
        requester: u16,
        _pasid: Option<u32>,
        on: bool,
    ) -> Result<(), &'static str> {
        // No substreams: the stream's STE (S2HA / S2HD) covers it.
        self.set_stage2_dirty_tracking(mem, u32::from(requester), on)
            .map_err(|_| "setting the STE's S2HA / S2HD failed")
    }

    fn fold_nest_dirty<M: PhysMem + Copy, E: Env>(
        &mut self,
        _state: &mut State<Self, M, E>,
        _index: usize,
        _record: bool,
    ) -> Result<(), Error> {
        // A nested STE translates through stage 2, whose leaves S2HD marks.
        Ok(())
    }

    fn flush_nest_after_clean<M: PhysMem + Copy, E: Env>(
        &mut self,
        _state: &mut State<Self, M, E>,
        _index: usize,
    ) -> Result<(), Error> {
        // TLBI_S12_VMALL of the IoSpace's VMID covered its nests too.
        Ok(())
    }

    #[inline]
    fn invalidate_tags<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        tags: &[u16],
        everything: bool,
        exposed: Exposed<'_, ObjectId>,
    ) -> Result<(), &'static str> {
        let mut commands: heapless::Vec<Command, PENDING_TAGS> = heapless::Vec::new();
        if everything {
            let _ = commands.push(Command::CfgiAll);
            let _ = commands.push(Command::TlbiNsnhAll);
        } else {
            commands.extend(tags.iter().map(|&vmid| Command::TlbiS12Vmall { vmid }));
        }
        // Blocks the spaces' devices itself when the commands fail.
        let mem = state.mem();
        let mut frames = state.pool.of_unit();
        let done =
            self.invalidate_or_block(&mem, &mut frames, commands, &mut state.attached, exposed);
        if done.is_err() {
            state.failure = Some(Error::IommuTimeout);
            return Err("the invalidation failed: its devices are blocked");
        }
        Ok(())
    }

    fn block<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        exposed: Exposed<'_, ObjectId>,
    ) -> bool {
        let mem = state.mem();
        let mut frames = state.pool.of_unit();
        let stopped = self.fail_closed(&mem, &mut frames, &mut state.attached, exposed);
        if stopped {
            E::log(format_args!(
                "[io] the SMMU does not confirm invalidations: all DMA stopped"
            ));
        }
        !stopped
    }

    fn build_nest<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        space: ObjectId,
        root_ipa: u64,
        index: usize,
        page: u64,
    ) -> Result<(), &'static str> {
        let (table, did) = {
            let s = state.space(space)?;
            (s.table, s.did)
        };
        let bits = ipa_bits(self);
        let mem = state.mem();
        let cd_ipa = reserved_base(bits) + 4096 * index as u64;
        table
            .map(
                &mem,
                &mut state.pool.of_space(space),
                cd_ipa,
                page,
                PageSize::Size4K,
                Perms::READ,
            )
            .map_err(|_| "mapping the CD page in stage 2 failed")?;
        let asid = Self::nest_tag(index);
        let cd = Cd::for_nest(asid, root_ipa, bits, self.features())
            .map_err(|_| "the CD was refused")?;
        for (i, word) in cd.0.iter().enumerate() {
            mem.write_u64(page + 8 * i as u64, *word);
        }
        // The ASID may have served an earlier nest of this VMID.
        self.submit(
            &mem,
            [Command::TlbiNhAsid {
                vmid: space_tag(did),
                asid,
            }],
        )
        .map_err(|_| state.unit_failed("the TLB invalidation of a reused ASID failed"))
    }

    fn write_entry<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        requester: u16,
        pasid: Option<u32>,
        space: ObjectId,
        nest: Option<(usize, u64)>,
    ) -> Result<(), &'static str> {
        if pasid.is_some_and(|p| p != 0) {
            return Err("this SMMU has no substreams");
        }
        let (table, did) = {
            let s = state.space(space)?;
            (s.table, s.did)
        };
        let mem = state.mem();
        let bits = table.input_bits();
        let config = Stage2Config {
            vmid: space_tag(did),
            table: table.root(),
            ipa_bits: bits,
            output_bits: ipa_bits(self),
        };
        let sid = u32::from(requester);
        let cd_ipa = nest.map(|(i, _)| reserved_base(bits) + 4096 * i as u64);
        state
            .with_space_tables(space, |frames| match cd_ipa {
                Some(cd_ipa) => self.attach_nested(&mem, frames, sid, &config, cd_ipa),
                None => self.attach_stage2(&mem, frames, sid, &config),
            })
            .map_err(|_| state.unit_failed("installing the STE failed"))
    }

    fn clear_entry<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        requester: u16,
        _pasid: Option<u32>,
    ) -> Result<(), &'static str> {
        // No substreams: the stream's STE covers every PASID.
        let mem = state.mem();
        let mut frames = state.pool.of_unit();
        self.block_stream(&mem, &mut frames, u32::from(requester))
            .map_err(|_| "blocking the stream failed")
    }

    fn release_tables(
        &mut self,
        mem: &impl PhysMem,
        requester: u16,
        _pasid: Option<u32>,
        owned: impl Fn(u64) -> bool,
    ) -> Result<[Option<u64>; UNIT_TABLES_PER_ENTRY], &'static str> {
        // No substreams: the stream's STE covers every PASID.
        let released = self
            .release_stream_table(mem, u32::from(requester), owned)
            .map_err(|_| "the unit did not confirm the unlink")?;
        let mut freed = [None; UNIT_TABLES_PER_ENTRY];
        freed[0] = released;
        Ok(freed)
    }

    #[inline]
    fn invalidate_nest<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        index: usize,
        space: ObjectId,
        _root_ipa: u64,
        start: u64,
        length: u64,
    ) -> Result<(u64, u64), Error> {
        let end = start.saturating_add(length);
        let did = state.space(space).map_err(|_| Error::DeadObject)?.did;
        self.submit(
            &state.mem(),
            [Command::TlbiNhAsid {
                vmid: space_tag(did),
                asid: Self::nest_tag(index),
            }],
        )
        .map_err(|_| Error::IommuTimeout)?;
        Ok((if length == 0 { u64::MAX } else { end }, 1))
    }

    fn free_nest<M: PhysMem + Copy, E: Env>(
        state: &mut State<Self, M, E>,
        index: usize,
        page: u64,
        space: ObjectId,
        table: &PageTable<Stage2Format>,
    ) {
        let cd_ipa = reserved_base(table.input_bits()) + 4096 * index as u64;
        let _ = table.unmap(&state.mem(), cd_ipa);
        state.give_back(Account::Space(space), page);
    }
}
