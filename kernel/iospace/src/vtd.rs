//! The VT-d half: context or PASID entries, shadow nests composed at
//! `Invalidate` (PGTT=nested entries where ECAP.NEST), domain-selective
//! IOTLB invalidation per tag, failing closed through `VtdUnit::fail_closed`.

use crate::state::{ANY_SPAN, State, shadow_at};
use crate::{Env, IoUnit, space_tag};
use abi::Error;
use caps::ObjectId;
use iommu::attachments::Exposed;
use iommu::budget::{Account, UNIT_TABLES_PER_ENTRY};
use iommu::pagetable::{PageTable, PageTableFormat};
use iommu::vtd::VtdUnit;
use iommu::vtd::prq::ResponseCode;
use iommu::vtd::qi::{Descriptor, IotlbScope, PasidIotlbScope};
use iommu::vtd::regs::RootTableMode;
use iommu::vtd::tables::{
    FirstStageFormat, LegacyContext, PasidConfig, SecondStageFormat, SecondStageLevels, SpaceFormat,
};
use iommu::{Mmio, PhysMem};

/// Pages one `Invalidate` composes on a shadow-nested unit (bounded work).
pub const SHADOW_PAGES_PER_CALL: u64 = 512;

/// Most PASIDs one nest's hardware-nesting `Invalidate` names.
const NEST_PASIDS: usize = crate::ATTACHED;

/// The first DID of the shadows (nest `i` uses `SHADOW_DIDS + i`).
const SHADOW_DIDS: u16 = 0x8001;

/// The first DID of the SVA bindings (binding `i` uses `SVA_DIDS + i`),
/// above the shadows'.
const SVA_DIDS: u16 = SHADOW_DIDS + 0x100;

/// A driver's stage-1 tables read at their IPAs through stage 2 (for
/// lookups only: table pages stage 2 does not map readable read as 0,
/// not present; nothing is written).
struct ThroughStage2<'a, M> {
    mem: M,
    table: &'a PageTable<SecondStageFormat>,
}

impl<M: PhysMem> PhysMem for ThroughStage2<'_, M> {
    fn read_u64(&self, ipa: u64) -> u64 {
        match self.table.lookup(&self.mem, ipa) {
            Some((pa, perms)) if perms.read => self.mem.read_u64(pa),
            _ => 0,
        }
    }

    fn write_u64(&self, _ipa: u64, _value: u64) {}
}

/// Marks the stage-2 leaf holding `ipa` dirty (a 4 KiB or 2 MiB leaf).
fn mark_dirty(table: &PageTable<impl PageTableFormat>, mem: &impl PhysMem, ipa: u64) {
    if table.set_dirty_state(mem, ipa, 4096, false).is_err() {
        let _ = table.set_dirty_state(mem, ipa & !0x1f_ffff, 0x20_0000, false);
    }
}

fn scalable<R: Mmio>(vtd: &VtdUnit<R>) -> bool {
    matches!(vtd.root_table(), Some((_, RootTableMode::Scalable)))
}

/// Whether IoSpaces are first-stage tables: a scalable-mode unit with
/// first-stage translation and no second stage (QEMU `x-flts=on`). Their
/// devices' entries are PGTT = first stage, their A/D bits serve dirty
/// tracking, and nesting is `NotSupported` (shadows are second-stage).
pub(crate) fn first_stage_spaces<R: Mmio>(vtd: &VtdUnit<R>) -> bool {
    scalable(vtd) && vtd.extended_capability().flts() && !vtd.extended_capability().slts()
}

/// Input bits of a first-stage IoSpace: 4-level paging whose addresses
/// must be canonical, so the lower half only (bit 47 clear).
pub const FIRST_STAGE_IPA_BITS: u32 = 47;

/// An IoSpace's table as second stage (what shadows compose through);
/// `None` for a first-stage IoSpace, which has no nests.
fn second_stage(table: &PageTable<SpaceFormat>) -> Option<PageTable<SecondStageFormat>> {
    let format = table.format().second()?;
    PageTable::at(table.root(), format, table.height(), table.input_bits()).ok()
}

/// Whether the unit nests in hardware (ECAP.NEST, scalable mode): then
/// the layer installs PGTT=nested entries instead of shadows. QEMU 10 has
/// no NEST; the entry encoding is checked against the executable model in
/// the `iommu` crate (tests/vtd_translate.rs).
fn hardware_nesting<R: Mmio>(vtd: &VtdUnit<R>) -> bool {
    vtd.extended_capability().nest() && scalable(vtd)
}

/// The PASID-based IOTLB invalidations (PASID-selective, with the tag as
/// DID) of every entry attached to an IoSpace tagged with one of `tags`:
/// what a domain-selective IOTLB invalidation does for second-stage
/// tables.
fn first_stage_flushes<R: Mmio, M: PhysMem + Copy, E: Env>(
    state: &State<VtdUnit<R>, M, E>,
    tags: &[u16],
) -> heapless::Vec<Descriptor, { crate::ATTACHED }> {
    let mut descriptors = heapless::Vec::new();
    for a in state.attached.iter() {
        let Ok(space) = state.space(a.space) else {
            continue;
        };
        let domain = space_tag(space.did);
        if tags.contains(&domain) {
            let pasid = a.pasid.unwrap_or(0);
            let _ = descriptors.push(Descriptor::pasid_iotlb(PasidIotlbScope::Pasid {
                domain,
                pasid,
            }));
        }
    }
    descriptors
}

impl<R: Mmio> IoUnit for VtdUnit<R> {
    type Format = SpaceFormat;
    const SHADOWS: bool = true;
    const USER_TABLE_FORMAT: u64 = 1;

    fn stage2_at(&self, root: u64) -> Option<PageTable<SpaceFormat>> {
        if first_stage_spaces(self) {
            let format = SpaceFormat::First(FirstStageFormat::for_unit(self.capability()));
            return PageTable::at(root, format, 4, FIRST_STAGE_IPA_BITS).ok();
        }
        let levels = SecondStageLevels::best(self.capability())?;
        PageTable::at(
            root,
            SpaceFormat::Second(SecondStageFormat::for_unit(self.capability())),
            levels.height(),
            levels.input_bits(),
        )
        .ok()
    }

    fn nest_tag(index: usize) -> u16 {
        SHADOW_DIDS + index as u16
    }

    fn cd_ipa(_ipa_bits: u32, _index: usize) -> Option<u64> {
        None
    }

    fn pasids_supported(&self, _nested: bool) -> bool {
        scalable(self)
    }

    fn dirty_tracking(&self) -> bool {
        scalable(self) && self.extensions().dirty_tracking || first_stage_spaces(self)
    }

    fn first_stage_dirty(&self) -> bool {
        scalable(self) && self.extensions().first_stage_dirty
    }

    fn page_requests_supported(&self) -> bool {
        scalable(self) && self.extended_capability().prs() && self.queue().is_some()
    }

    fn stalls_supported(&self) -> bool {
        false
    }

    fn start_page_requests(
        &mut self,
        mem: &impl PhysMem,
        frames: &mut impl iommu::FrameAllocator,
    ) -> Result<(), &'static str> {
        self.enable_page_requests(mem, frames)
            .map_err(|_| "the page request queue was not set up")
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
        let code = match response {
            crate::Response::Success => ResponseCode::Success,
            crate::Response::Invalid => ResponseCode::Invalid,
            crate::Response::Failure => ResponseCode::Failure,
        };
        let vtd_request = iommu::vtd::prq::PageRequest {
            source_id: request.requester,
            pasid: request.pasid,
            address: request.address,
            read: request.read,
            write: request.write,
            execute: request.execute,
            privileged: request.privileged,
            last_in_group: true,
            group_index: request.group,
        };
        self.respond_page_request(mem, &vtd_request, code)
            .map_err(|_| "the page group response was not completed")
    }

    fn stage2_supported(&self) -> bool {
        !scalable(self) || self.extended_capability().slts()
    }

    fn spaces_supported(&self) -> bool {
        self.stage2_supported() || first_stage_spaces(self)
    }

    fn space_ipa_bits(&self) -> Option<u32> {
        first_stage_spaces(self).then_some(FIRST_STAGE_IPA_BITS)
    }

    fn sva_supported(&self) -> bool {
        scalable(self) && self.extended_capability().flts()
    }

    fn sva_pasids_supported(&self) -> bool {
        self.sva_supported() && self.extended_capability().pasid()
    }

    fn sva_tag(index: usize) -> u16 {
        SVA_DIDS + index as u16
    }

    fn write_sva_entry<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        requester: u16,
        pasid: Option<u32>,
        index: usize,
        root: u64,
    ) -> Result<Option<u64>, &'static str> {
        // First stage only; SRE stays 0 (`PasidEntry::encode`): the
        // device's requests are user requests, and the kernel's PML4
        // entries (U/S = 0) fault for them.
        let config = PasidConfig::FirstStage {
            domain: Self::sva_tag(index),
            table: root,
        };
        let mem = state.mem();
        state
            .with_tables_of(Account::Unit, |frames| {
                self.set_pasid_entry(&mem, frames, requester, pasid.unwrap_or(0), Some(config))
            })
            .map_err(|_| state.unit_failed("writing the first-stage PASID entry failed"))?;
        Ok(None)
    }

    #[inline]
    fn invalidate_sva<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        index: usize,
        pasid: Option<u32>,
        leaf: Option<(u64, u8)>,
    ) -> Result<(), &'static str> {
        let domain = Self::sva_tag(index);
        let pasid = pasid.unwrap_or(0);
        let scope = match leaf {
            Some((address, size_bits)) => PasidIotlbScope::Pages {
                domain,
                pasid,
                address,
                order: size_bits.saturating_sub(12),
                leaf_only: false,
            },
            None => PasidIotlbScope::Pasid { domain, pasid },
        };
        self.submit(&state.mem(), [Descriptor::pasid_iotlb(scope)])
            .map_err(|_| "the PASID-based IOTLB invalidation failed")
    }

    fn set_entry_dirty_tracking(
        &mut self,
        mem: &impl PhysMem,
        requester: u16,
        pasid: Option<u32>,
        on: bool,
    ) -> Result<(), &'static str> {
        if first_stage_spaces(self) {
            // First-stage A/D bits are always updated: nothing to turn on
            // (the caller's flush drops translations cached before).
            return Ok(());
        }
        // SSADE in the PASID entry (RID_PASID 0 for a device's own DMA).
        self.set_dirty_tracking(mem, requester, pasid.unwrap_or(0), on)
            .map_err(|_| "setting the PASID entry's SSADE failed")
    }

    fn fold_nest_dirty<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        index: usize,
        record: bool,
    ) -> Result<(), Error> {
        if hardware_nesting(self) {
            // PGTT=nested: SSADE marks the second stage itself.
            return Ok(());
        }
        let Some((space, root_ipa, page)) = state.nests[index]
            .as_ref()
            .map(|n| (n.space, n.root_ipa, n.page))
        else {
            return Ok(());
        };
        let space_table = state.space(space).map_err(|_| Error::DeadObject)?.table;
        let shadow = shadow_at(page, &space_table).ok_or(Error::DeadObject)?;
        let table = second_stage(&space_table).ok_or(Error::DeadObject)?;
        let mem = state.mem();
        let format = FirstStageFormat::for_unit(self.capability());
        let stage1 = PageTable::at(root_ipa, format, 4, 48).map_err(|_| Error::DeadObject)?;
        let view = ThroughStage2 { mem, table: &table };
        let mut cleaned = false;
        shadow.for_each_leaf(&mem, |iova, pa, size_bits, _| {
            let mut dirty = false;
            let _ = shadow.read_dirty(&mem, iova, 1 << size_bits, true, |_, _| dirty = true);
            cleaned |= dirty;
            if !dirty || !record {
                return;
            }
            // The IPA the shadow entry was composed from, if the driver's
            // stage 1 still says so; else every IPA mapping the page.
            let ipa = stage1
                .lookup(&view, iova)
                .map(|(ipa, _)| ipa & !0xfff)
                .filter(|&ipa| table.lookup(&mem, ipa).map(|(p, _)| p & !0xfff) == Some(pa));
            match ipa {
                Some(ipa) => mark_dirty(&space_table, &mem, ipa),
                None => table.for_each_leaf(&mem, |ipa, out, bits, _| {
                    if (out..out + (1 << bits)).contains(&pa) {
                        mark_dirty(&space_table, &mem, ipa);
                    }
                }),
            }
        });
        if !cleaned {
            return Ok(());
        }
        let descriptor = Descriptor::iotlb(
            IotlbScope::Domain(Self::nest_tag(index)),
            self.capability().drd() || self.capability().dwd(),
        );
        self.submit(&mem, [descriptor])
            .map_err(|_| Error::IommuTimeout)
    }

    fn flush_nest_after_clean<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        index: usize,
    ) -> Result<(), Error> {
        if !hardware_nesting(self) {
            // A shadow's entries carry their own D bits.
            return Ok(());
        }
        let Some((space, root_ipa, did)) = state.nests[index]
            .as_ref()
            .map(|n| (n.space, n.root_ipa, n.did))
        else {
            return Ok(());
        };
        // Length 0: every PASID's first-stage entries of the nest.
        self.invalidate_nest(state, index, did, space, root_ipa, 0, 0)
            .map(drop)
    }

    #[inline]
    fn submit_tags<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &State<Self, M, E>,
        tags: &[u16],
        everything: bool,
    ) -> bool {
        let mem = state.mem();
        let done = if everything {
            self.invalidate_all(&mem)
        } else if first_stage_spaces(self) {
            // First-stage translations are dropped by PASID-based IOTLB
            // invalidation (VT-d 6.5.2.4), one per PASID entry using a tag.
            let descriptors = first_stage_flushes(state, tags);
            self.submit(&mem, descriptors)
        } else {
            let drain = self.capability().drd() || self.capability().dwd();
            let descriptors = tags
                .iter()
                .map(|&tag| Descriptor::iotlb(IotlbScope::Domain(tag), drain));
            self.submit(&mem, descriptors)
        };
        done.is_ok()
    }

    fn invalidation_failed<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        exposed: Exposed<'_, ObjectId>,
    ) {
        state.fail_closed(self, exposed);
    }

    #[inline]
    fn nests_walk_stage2(&self) -> bool {
        hardware_nesting(self)
    }

    fn block<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        exposed: Exposed<'_, ObjectId>,
    ) -> bool {
        let mem = state.mem();
        let mut frames = state.pool.of_unit();
        self.fail_closed(&mem, &mut frames, &mut state.attached, exposed)
    }

    fn build_nest<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        _space: ObjectId,
        _root_ipa: u64,
        _index: usize,
        _page: u64,
    ) -> Result<(), &'static str> {
        // A fresh shadow table: empty until the driver's first Invalidate.
        // Its DID may have been used by an earlier nest: flush it.
        self.invalidate_all(&state.mem())
            .map_err(|_| state.unit_failed("the invalidation before reusing a shadow DID failed"))
    }

    fn write_entry<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        requester: u16,
        pasid: Option<u32>,
        space: ObjectId,
        nest: Option<(usize, u64)>,
    ) -> Result<(), &'static str> {
        let (table, did) = {
            let s = state.space(space)?;
            (s.table, s.did)
        };
        let mem = state.mem();
        let nest_page = nest
            .and_then(|(i, _)| state.nests[i].as_ref())
            .map(|n| n.page);
        let (domain, root) = match (nest, nest_page) {
            (Some((i, _)), Some(page)) => (Self::nest_tag(i), page),
            _ => (space_tag(did), table.root()),
        };
        let levels = SecondStageLevels::best(self.capability()).ok_or("no second-stage depth");
        if scalable(self) {
            let config = match nest {
                // The IoSpace is a first-stage table (no stage 2); nests
                // need one (refused before any effect).
                Some(_) if first_stage_spaces(self) => return Err("nesting needs a second stage"),
                None if first_stage_spaces(self) => PasidConfig::FirstStage {
                    domain,
                    table: root,
                },
                // Hardware nesting (ECAP.NEST): the unit walks the
                // driver's table itself; the nest page is unused.
                Some((i, root_ipa)) if hardware_nesting(self) => PasidConfig::Nested {
                    domain: Self::nest_tag(i),
                    first_stage_table: root_ipa,
                    second_stage_table: table.root(),
                    levels: levels?,
                },
                _ => PasidConfig::SecondStage {
                    domain,
                    table: root,
                    levels: levels?,
                },
            };
            state
                .with_space_tables(space, |frames| {
                    self.set_pasid_entry(&mem, frames, requester, pasid.unwrap_or(0), Some(config))
                })
                .map_err(|_| state.unit_failed("writing the PASID entry failed"))?;
            if self.page_requests_enabled() {
                // Context PRE: the device's page requests reach the queue
                // (a context entry made afresh has it clear).
                self.set_page_requests(&mem, requester, true)
                    .map_err(|_| state.unit_failed("setting the context entry's PRE failed"))?;
            }
            Ok(())
        } else {
            if pasid.is_some() {
                return Err("PASIDs need scalable mode");
            }
            let context = LegacyContext::Translated {
                domain,
                table: root,
                levels: levels?,
            };
            state
                .with_space_tables(space, |frames| {
                    self.set_legacy_context(&mem, frames, requester, Some(context))
                })
                .map_err(|_| state.unit_failed("writing the context entry failed"))
        }
    }

    fn clear_entry<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        requester: u16,
        pasid: Option<u32>,
    ) -> Result<(), &'static str> {
        let mem = state.mem();
        let mut frames = state.pool.of_unit();
        if scalable(self) {
            self.set_pasid_entry(&mem, &mut frames, requester, pasid.unwrap_or(0), None)
        } else {
            self.set_legacy_context(&mem, &mut frames, requester, None)
        }
        .map_err(|_| "clearing the device entry failed")
    }

    fn release_tables(
        &mut self,
        mem: &impl PhysMem,
        requester: u16,
        pasid: Option<u32>,
        owned: impl Fn(u64) -> bool,
    ) -> Result<[Option<u64>; UNIT_TABLES_PER_ENTRY], &'static str> {
        let released = VtdUnit::release_tables(self, mem, requester, pasid.unwrap_or(0), owned)
            .map_err(|_| "the unit did not confirm the unlink")?;
        let mut freed = [None; UNIT_TABLES_PER_ENTRY];
        for (slot, page) in freed.iter_mut().zip(released.pages()) {
            *slot = Some(page);
        }
        Ok(freed)
    }

    #[inline]
    fn invalidate_nest<M: PhysMem + Copy, E: Env>(
        &mut self,
        state: &mut State<Self, M, E>,
        index: usize,
        _did: u16,
        space: ObjectId,
        root_ipa: u64,
        start: u64,
        length: u64,
    ) -> Result<(u64, u64), Error> {
        let end = start.saturating_add(length);
        let mem = state.mem();
        if hardware_nesting(self) {
            // The unit walks the driver's table: flush its first-stage
            // entries, for every PASID that uses this nest.
            let domain = Self::nest_tag(index);
            let mut descriptors: heapless::Vec<Descriptor, NEST_PASIDS> = heapless::Vec::new();
            for a in state.attached.iter().filter(|a| a.nest == Some(index)) {
                let pasid = a.pasid.unwrap_or(0);
                let _ = descriptors.push(Descriptor::pasid_iotlb(PasidIotlbScope::Pasid {
                    domain,
                    pasid,
                }));
            }
            let commands = descriptors.len() as u64;
            self.submit(&mem, descriptors)
                .map_err(|_| Error::IommuTimeout)?;
            return Ok((if length == 0 { u64::MAX } else { end }, commands));
        }
        if length == 0 {
            // A shadow is built per range; "everything" would be 2^35 pages.
            return Err(Error::InvalidArgument);
        }
        let position = state.space_position(space).ok_or(Error::DeadObject)?;
        let record = state.spaces.get_mut(position).ok_or(Error::DeadObject)?;
        let table = second_stage(&record.table).ok_or(Error::NotSupported)?;
        // The composition records more in the nest's dependencies: until
        // a stage-2 unmap visits the nests again, every unmap does.
        record.shadow_span = ANY_SPAN;
        let page = state.nests[index].as_ref().map_or(0, |n| n.page);
        let shadow = shadow_at(page, &table).ok_or(Error::DeadObject)?;
        let take = length.min(SHADOW_PAGES_PER_CALL * 4096);
        state.ensure_pool(space)?;
        let nest = state.nests[index].as_mut().ok_or(Error::DeadObject)?;
        // Records what each composed entry went through, so a stage-2
        // unmap drops only the entries that depended on its IPA; after a
        // failure midway the records count as overflowed (the next unmap
        // clears the whole shadow).
        iommu::vtd::shadow::shadow_range_recording(
            &mem,
            &mut state.pool.of_space(space),
            (root_ipa, &table, &shadow),
            start,
            take,
            SHADOW_PAGES_PER_CALL,
            false,
            &mut nest.dependencies,
        )
        .map_err(|_| Error::InvalidAddress)?;
        // One domain-selective IOTLB invalidation of the shadow's DID.
        let descriptor = Descriptor::iotlb(
            IotlbScope::Domain(Self::nest_tag(index)),
            self.capability().drd() || self.capability().dwd(),
        );
        self.submit(&mem, [descriptor])
            .map_err(|_| Error::IommuTimeout)?;
        Ok((start + take, 1))
    }

    fn free_nest<M: PhysMem + Copy, E: Env>(
        state: &mut State<Self, M, E>,
        _index: usize,
        page: u64,
        space: ObjectId,
        table: &PageTable<SpaceFormat>,
    ) {
        if let Some(shadow) = shadow_at(page, table) {
            state.free_tables(Account::Space(space), &shadow, None);
        }
    }
}
