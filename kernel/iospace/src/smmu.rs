//! The SMMUv3 half: stage-2 and nested STEs, a CD page per nest mapped
//! read-only in the reserved IPA window, TLBI by VMID (and by ASID for
//! `Invalidate`), failing closed through `Smmu::fail_closed` (all DMA
//! stops when blocking is not confirmed).
//!
//! Substreams (PASIDs), where the unit has SubstreamIDs (IDR1.SSIDSIZE >
//! 0; QEMU 10.0.2 has none): the first PASID attached on a stream gives
//! it a CD table, one pool page of 64 CDs (S1CDMax = 6, so PASIDs 1..63)
//! charged to the IoSpace and mapped read-only in its stage 2 at a slot
//! of the reserved window ([`SUBSTREAM_WINDOW`]), and the stream a
//! nested STE over it. CD `p` is a copy of the CD of PASID `p`'s nest
//! (same ASID, so `Invalidate` of the nest reaches it); the device's own
//! DMA keeps its translation: S1DSS = 0b10 with CD 0 = its nest's CD when
//! it is attached nested, else 0b01 (stage 1 bypassed: stage 2 only). A
//! substream always translates through a CD, so a PASID attaches to an
//! IoUserTable, never straight to an IoSpace (`pasids_supported(false)`
//! is false). The last PASID's detach puts the device's own STE back and
//! frees the table.

use crate::state::State;
use crate::{Env, IoUnit, reserved_base, space_tag};
use abi::Error;
use caps::ObjectId;
use iommu::attachments::Exposed;
use iommu::budget::{Account, UNIT_TABLES_PER_ENTRY};
use iommu::pagetable::{PageSize, PageTable, Perms};
use iommu::smmuv3::Smmu;
use iommu::smmuv3::cd::{Cd, CdParams};
use iommu::smmuv3::pagetable::{Stage2Format, levels_4k};
use iommu::smmuv3::priq::PriRequest;
use iommu::smmuv3::queue::{Command, PriResponse, ResumeAction};
use iommu::smmuv3::ste::{Stage2Config, Ste};
use iommu::{FrameAllocator, Mmio, PhysMem};

/// Where the substream CD tables sit in the reserved IPA window: slot `i`
/// at `reserved_base + SUBSTREAM_WINDOW + 4096 * i` (the nests' CD pages
/// take the window's first [`crate::NESTS`] pages).
pub const SUBSTREAM_WINDOW: u64 = 1 << 20;

/// log2 of the CDs in one stream's table: one 4 KiB page of 64-byte CDs.
const SUBSTREAM_BITS: u32 = 6;

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

    fn pasids_supported(&self, nested: bool) -> bool {
        let features = self.features();
        nested && features.idr1.ssidsize() > 0 && features.idr0.s1p() && features.idr0.s2p()
    }

    fn dirty_tracking(&self) -> bool {
        self.extensions().dirty_tracking
    }

    fn first_stage_dirty(&self) -> bool {
        false
    }

    fn page_requests_supported(&self) -> bool {
        self.extensions().page_requests
    }

    fn stalls_supported(&self) -> bool {
        self.extensions().stall
    }

    fn start_page_requests(
        &mut self,
        mem: &impl PhysMem,
        frames: &mut impl iommu::FrameAllocator,
    ) -> Result<(), &'static str> {
        self.enable_page_requests(mem, frames)
            .map_err(|_| "the PRI queue was not set up")
    }

    fn take_page_requests(
        &mut self,
        mem: &impl PhysMem,
        out: &mut heapless::Vec<crate::PageRequest, { crate::MAX_FAULTS }>,
    ) -> bool {
        let drain = self.read_page_requests(mem);
        for request in drain.requests.iter() {
            let _ = out.push(crate::PageRequest::from(&request));
        }
        drain.more
    }

    fn answer_page_request(
        &mut self,
        mem: &impl PhysMem,
        request: &crate::PageRequest,
        response: crate::Response,
    ) -> Result<(), &'static str> {
        if let Some(stall_tag) = request.stall_tag {
            // A stalled transaction: Retry re-translates it (it may stall
            // again, under a new STAG); the others end it with an abort.
            let action = match response {
                crate::Response::Success => ResumeAction::Retry,
                crate::Response::Invalid | crate::Response::Failure => ResumeAction::Abort,
            };
            return self
                .resume_stalled(mem, u32::from(request.requester), stall_tag, action)
                .map_err(|_| "CMD_RESUME was not completed");
        }
        let response = match response {
            crate::Response::Success => PriResponse::Success,
            crate::Response::Invalid => PriResponse::Deny,
            crate::Response::Failure => PriResponse::Fail,
        };
        let pri = PriRequest {
            stream_id: u32::from(request.requester),
            substream_id: request.pasid,
            address: request.address,
            read: request.read,
            write: request.write,
            execute: request.execute,
            privileged: request.privileged,
            last: true,
            group_index: request.group,
        };
        self.respond_page_request(mem, &pri, response)
            .map_err(|_| "CMD_PRI_RESP was not completed")
    }

    fn stage2_supported(&self) -> bool {
        self.features().idr0.s2p()
    }

    fn sva_supported(&self) -> bool {
        self.features().idr0.s1p() && self.features().idr0.aarch64_tables()
    }

    fn sva_pasids_supported(&self) -> bool {
        false
    }

    fn sva_tag(_index: usize) -> u16 {
        SVA_VMID
    }

    fn write_sva_entry<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        requester: u16,
        pasid: Option<u32>,
        index: usize,
        root: u64,
    ) -> Result<Option<u64>, &'static str> {
        if pasid.is_some() {
            // `sva_pasids_supported` is false: decode refused it.
            return Err("SMMUv3 PASID bindings are not supported");
        }
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
        _pasid: Option<u32>,
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
    fn submit_tags<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &State<Self, M, E>,
        tags: &[u16],
        everything: bool,
    ) -> bool {
        let mem = state.mem();
        let done = match (everything, tags) {
            // One IoSpace's VMID (an `IoSpace.Unmap`): the TLBI and its
            // CMD_SYNC after one test for room, as the queue's
            // `submit_one` writes them.
            (false, &[vmid]) => self.invalidate_vmid(&mem, vmid),
            (false, _) => self.submit(
                &mem,
                tags.iter().map(|&vmid| Command::TlbiS12Vmall { vmid }),
            ),
            (true, _) => self.submit(&mem, [Command::CfgiAll, Command::TlbiNsnhAll]),
        };
        done.is_ok()
    }

    fn invalidation_failed<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        exposed: Exposed<'_, ObjectId>,
    ) {
        // What `Smmu::invalidate_or_block` does when its commands fail.
        let mem = state.mem();
        let mut frames = state.pool.of_unit();
        self.fail_closed(&mem, &mut frames, &mut state.attached, exposed);
        state.failure = Some(Error::IommuTimeout);
    }

    fn nests_walk_stage2(&self) -> bool {
        // Stage 1 nested over stage 2 in the unit (STE.Config = 0b111).
        true
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
            E::log(&ktext::text!(
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
        let mut cd = Cd::for_nest(asid, root_ipa, bits, self.features())
            .map_err(|_| "the CD was refused")?;
        if state.stalls {
            // CD.S: stage-1 faults stall (`State::enable_stalls`).
            cd = cd
                .with_stall(self.features())
                .map_err(|_| "the unit refused CD.S")?;
        }
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
        if let Some(ssid) = pasid.filter(|&p| p != 0) {
            return write_substream(self, state, requester, ssid, space, nest);
        }
        let (config, bits) = stage2_config(self, state, space)?;
        let mem = state.mem();
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
        pasid: Option<u32>,
    ) -> Result<(), &'static str> {
        if let Some(ssid) = pasid.filter(|&p| p != 0) {
            return clear_substream(self, state, requester, ssid);
        }
        // The stream's STE covers its substreams too.
        let mem = state.mem();
        let mut frames = state.pool.of_unit();
        let blocked = self
            .block_stream(&mem, &mut frames, u32::from(requester))
            .map_err(|_| "blocking the stream failed");
        if blocked.is_ok() {
            free_substreams(self, state, requester)?;
        }
        blocked
    }

    fn release_tables(
        &mut self,
        mem: &impl PhysMem,
        requester: u16,
        _pasid: Option<u32>,
        owned: impl Fn(u64) -> bool,
    ) -> Result<[Option<u64>; UNIT_TABLES_PER_ENTRY], &'static str> {
        // A stream's level-2 table goes once its STE blocks (not while
        // only one of its substreams was cleared).
        let released = self
            .release_stream_table(mem, u32::from(requester), owned)
            .map_err(|_| "the unit did not confirm the unlink")?;
        let mut freed = [None; UNIT_TABLES_PER_ENTRY];
        freed[0] = released;
        Ok(freed)
    }

    #[inline(always)]
    fn invalidate_nest<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        index: usize,
        did: u16,
        _space: ObjectId,
        _root_ipa: u64,
        start: u64,
        length: u64,
    ) -> Result<(u64, u64), Error> {
        let end = start.saturating_add(length);
        // `did` is the nest's, found with `index` under the same lock.
        self.invalidate_asid(&state.mem(), space_tag(did), Self::nest_tag(index))
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

/// The stage-2 configuration of `space` and its IPA bits.
fn stage2_config<R: Mmio, M: PhysMem + Copy, E: Env>(
    smmu: &Smmu<R>,
    state: &State<Smmu<R>, M, E>,
    space: ObjectId,
) -> Result<(Stage2Config, u32), &'static str> {
    let s = state.space(space)?;
    let bits = s.table.input_bits();
    let config = Stage2Config {
        vmid: space_tag(s.did),
        table: s.table.root(),
        ipa_bits: bits,
        output_bits: ipa_bits(smmu),
    };
    Ok((config, bits))
}

/// The CD of nest `index` (its CD page's first 64 bytes).
fn nest_cd<R: Mmio, M: PhysMem + Copy, E: Env>(
    state: &State<Smmu<R>, M, E>,
    index: usize,
) -> Option<Cd> {
    let page = state.nests[index].as_ref()?.page;
    let mem = state.mem();
    let mut cd = Cd([0; 8]);
    for (i, word) in cd.0.iter_mut().enumerate() {
        *word = mem.read_u64(page + 8 * i as u64);
    }
    Some(cd)
}

/// Points substream `ssid` of `requester` at nest `nest` of `space`;
/// the first one gives the stream its CD table and nested STE.
fn write_substream<R: Mmio, M: PhysMem + Copy, E: Env>(
    smmu: &mut Smmu<R>,
    state: &mut State<Smmu<R>, M, E>,
    requester: u16,
    ssid: u32,
    space: ObjectId,
    nest: Option<(usize, u64)>,
) -> Result<(), &'static str> {
    let (index, _) =
        nest.ok_or("an SMMUv3 substream translates through a stage 1 (an IoUserTable)")?;
    let cdmax = SUBSTREAM_BITS.min(smmu.features().idr1.ssidsize());
    if cdmax == 0 || ssid >> cdmax != 0 {
        return Err("the PASID is beyond the stream's CD table");
    }
    let cd = nest_cd(state, index).ok_or("the nest has no CD")?;
    let (config, bits) = stage2_config(smmu, state, space)?;
    let mem = state.mem();
    let sid = u32::from(requester);
    if let Some(table) = state
        .substreams
        .iter()
        .flatten()
        .find(|t| t.stream == requester)
    {
        let page = table.page;
        return smmu
            .write_cd(&mem, page, sid, ssid, &cd)
            .map_err(|_| state.unit_failed("writing the substream's CD failed"));
    }
    let slot = state
        .substreams
        .iter()
        .position(Option::is_none)
        .ok_or("every substream table is in use")?;
    let page = state
        .pool
        .of_space(space)
        .alloc_zeroed_frame()
        .ok_or("the IoSpace's table reservation is used up")?;
    let ipa = reserved_base(bits) + SUBSTREAM_WINDOW + 4096 * slot as u64;
    let stage2 = state.space(space)?.table;
    if stage2
        .map(
            &mem,
            &mut state.pool.of_space(space),
            ipa,
            page,
            PageSize::Size4K,
            Perms::READ,
        )
        .is_err()
    {
        state.give_back(Account::Space(space), page);
        return Err("mapping the CD table in stage 2 failed");
    }
    state.substreams[slot] = Some(crate::state::Substreams {
        stream: requester,
        space,
        page,
    });
    for (i, word) in cd.0.iter().enumerate() {
        mem.write_u64(page + 64 * u64::from(ssid) + 8 * i as u64, *word);
    }
    // The device's own DMA: its nest's CD as CD 0, else stage 2 only.
    let own = state
        .attached
        .iter()
        .find(|a| a.requester == requester && a.pasid.is_none())
        .and_then(|a| a.nest);
    let without_substream = match own.and_then(|i| nest_cd(state, i)) {
        Some(own_cd) => {
            for (i, word) in own_cd.0.iter().enumerate() {
                mem.write_u64(page + 8 * i as u64, *word);
            }
            0b10
        }
        None => 0b01,
    };
    let ste = Ste::nested_substreams(&config, ipa, cdmax, without_substream, smmu.features())
        .map_err(|_| "the substream STE was refused")?;
    state
        .with_space_tables(space, |frames| smmu.install_ste(&mem, frames, sid, &ste))
        .map_err(|_| state.unit_failed("installing the substream STE failed"))
}

/// Clears substream `ssid` of `requester` (its CD invalid, CFGI_CD);
/// the last one puts the device's own STE back and frees the table.
fn clear_substream<R: Mmio, M: PhysMem + Copy, E: Env>(
    smmu: &mut Smmu<R>,
    state: &mut State<Smmu<R>, M, E>,
    requester: u16,
    ssid: u32,
) -> Result<(), &'static str> {
    let Some(page) = state
        .substreams
        .iter()
        .flatten()
        .find(|t| t.stream == requester)
        .map(|t| t.page)
    else {
        return Ok(());
    };
    let mem = state.mem();
    let sid = u32::from(requester);
    // This substream's record is still there: the caller drops it after.
    let others = state
        .attached
        .iter()
        .any(|a| a.requester == requester && a.pasid.is_some_and(|p| p != 0 && p != ssid));
    if others {
        return smmu
            .write_cd(&mem, page, sid, ssid, &Cd([0; 8]))
            .map_err(|_| "invalidating the substream's CD failed");
    }
    let own = state
        .attached
        .iter()
        .find(|a| a.requester == requester && a.pasid.is_none())
        .map(|a| (a.space, a.nest));
    let restored = match own {
        Some((space, nest)) => {
            let nest = nest.and_then(|i| state.nests[i].as_ref().map(|n| (i, n.root_ipa)));
            smmu.write_entry(state, requester, None, space, nest)
        }
        None => {
            let mut frames = state.pool.of_unit();
            smmu.block_stream(&mem, &mut frames, sid)
                .map_err(|_| "blocking the stream failed")
        }
    };
    restored?;
    free_substreams(smmu, state, requester)
}

/// Frees `requester`'s CD table (its STE no longer names it): CFGI_CD_ALL,
/// then the page leaves stage 2 and goes back to the pool.
fn free_substreams<R: Mmio, M: PhysMem + Copy, E: Env>(
    smmu: &mut Smmu<R>,
    state: &mut State<Smmu<R>, M, E>,
    requester: u16,
) -> Result<(), &'static str> {
    let Some(slot) = state
        .substreams
        .iter()
        .position(|t| t.as_ref().is_some_and(|t| t.stream == requester))
    else {
        return Ok(());
    };
    let mem = state.mem();
    smmu.submit(
        &mem,
        [Command::CfgiCdAll {
            stream_id: u32::from(requester),
        }],
    )
    .map_err(|_| state.unit_failed("CFGI_CD_ALL after the substreams failed"))?;
    let Some(table) = state.substreams[slot].take() else {
        return Ok(());
    };
    if let Ok(stage2) = state.space(table.space).map(|s| s.table) {
        let ipa = reserved_base(stage2.input_bits()) + SUBSTREAM_WINDOW + 4096 * slot as u64;
        let _ = stage2.unmap(&mem, ipa);
    }
    state.give_back(Account::Space(table.space), table.page);
    Ok(())
}
