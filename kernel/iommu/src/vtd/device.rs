//! Per-device configuration of a VT-d unit: legacy context entries and
//! scalable-mode PASID entries, each change followed by the invalidations
//! VT-d 6.5.3.3 ("Guidance to Software for Invalidations") requires, in one
//! batch with one completion wait.

use super::qi::{ContextScope, Descriptor, IotlbScope, PasidCacheScope, PasidIotlbScope};
use super::regs::RootTableMode;
use super::tables::{
    LegacyContext, PASID_LIMIT, PasidConfig, PasidEntry, legacy_context_entry,
    pasid_directory_entry, scalable_context_entry,
};
use super::{VtdError, VtdUnit};
use crate::invalidation::{
    InvalidationBatch, InvalidationRange, InvalidationStats, InvalidationTarget, aligned_chunks,
};
use crate::{FrameAllocator, Mmio, PhysAddr, PhysMem, bit};

/// Pages [`VtdUnit::release_tables`] unlinked, for the caller to free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Released {
    pages: [Option<PhysAddr>; crate::budget::UNIT_TABLES_PER_ENTRY],
}

impl Released {
    pub(crate) fn push(&mut self, page: PhysAddr) {
        if let Some(free) = self.pages.iter_mut().find(|p| p.is_none()) {
            *free = Some(page);
        }
    }
    /// How many pages.
    pub fn count(&self) -> usize {
        self.pages.iter().flatten().count()
    }
    /// The pages.
    pub fn pages(&self) -> impl Iterator<Item = PhysAddr> + '_ {
        self.pages.iter().flatten().copied()
    }
}

fn no_root(mode: RootTableMode) -> VtdError {
    match mode {
        RootTableMode::Legacy => VtdError::InvalidParameter {
            what: "no legacy-mode root table installed",
        },
        RootTableMode::Scalable => VtdError::InvalidParameter {
            what: "no scalable-mode root table installed",
        },
    }
}

impl<M: Mmio> VtdUnit<M> {
    fn root_for(&self, mode: RootTableMode) -> Result<PhysAddr, VtdError> {
        match self.root_table() {
            Some((root, installed)) if installed == mode => Ok(root),
            _ => Err(no_root(mode)),
        }
    }

    fn ensure_table(
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        slot: PhysAddr,
        what: &'static str,
    ) -> Result<(PhysAddr, bool), VtdError> {
        let entry = mem.read_u64(slot);
        if bit(entry, 0) {
            return Ok((entry & 0x000f_ffff_ffff_f000, false));
        }
        let table = alloc
            .alloc_zeroed_frame()
            .ok_or(VtdError::OutOfMemory { what })?;
        mem.write_u64(slot, table | 1);
        Ok((table, true))
    }

    /// After an invalidation failed or timed out: clears the context entry
    /// (legacy) or PASID entry (scalable) of every attachment `exposed`
    /// covers, as a detach does, with its cache invalidations, and marks
    /// it blocked in `attachments`. Returns whether every clear was
    /// confirmed; when not, stale context or IOTLB entries may survive
    /// until the unit processes invalidations again (VT-d offers no
    /// "abort everything" short of translation off, which passes DMA
    /// through; a new root table needs the same queue to flush the
    /// caches). Tested in `tests/vtd_fail_closed.rs`.
    pub fn fail_closed<S: Copy + Eq, const N: usize>(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        attachments: &mut crate::attachments::Attachments<S, N>,
        exposed: crate::attachments::Exposed<'_, S>,
    ) -> bool {
        let scalable = matches!(self.root_table(), Some((_, RootTableMode::Scalable)));
        attachments
            .block(exposed, |a| {
                if scalable {
                    self.set_pasid_entry(mem, alloc, a.requester, a.pasid.unwrap_or(0), None)
                } else {
                    self.set_legacy_context(mem, alloc, a.requester, None)
                }
            })
            .is_ok()
    }

    /// Legacy mode: points requester `source_id` at `context` (or blocks it
    /// with `None`), then invalidates its context-cache entry and the IOTLB
    /// of the old and new domains, with one wait. A present entry is first
    /// made not-present and invalidated (no torn 128-bit update is visible).
    pub fn set_legacy_context(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        source_id: u16,
        context: Option<LegacyContext>,
    ) -> Result<(), VtdError> {
        let root = self.root_for(RootTableMode::Legacy)?;
        let new = context
            .map(|c| legacy_context_entry(c, self.capability(), self.extended_capability()))
            .transpose()?;
        let bus = u64::from(source_id >> 8);
        let (table, _) = Self::ensure_table(mem, alloc, root + 16 * bus, "context table")?;
        let slot = table + 16 * u64::from(source_id & 0xff);
        let old_low = mem.read_u64(slot);
        let old_domain = (mem.read_u64(slot + 8) >> 8) as u16;
        if bit(old_low, 0) {
            mem.write_u64(slot, 0);
            self.invalidate_device(mem, source_id, old_domain)?;
        }
        match new {
            Some([low, high]) => {
                mem.write_u64(slot + 8, high);
                mem.write_u64(slot, low);
                self.invalidate_device(mem, source_id, (high >> 8) as u16)
            }
            None => {
                mem.write_u64(slot + 8, 0);
                Ok(())
            }
        }
    }

    fn invalidate_device(
        &mut self,
        mem: &impl PhysMem,
        source_id: u16,
        domain: u16,
    ) -> Result<(), VtdError> {
        let drain = self.capability().drd() || self.capability().dwd();
        if self.queue().is_some() {
            self.submit(
                mem,
                [
                    Descriptor::context_cache(ContextScope::Device {
                        domain,
                        source_id,
                        function_mask: 0,
                    }),
                    Descriptor::iotlb(IotlbScope::Domain(domain), drain),
                ],
            )
        } else {
            self.invalidate_all(mem)
        }
    }

    /// Scalable mode: sets the PASID-table entry of (`source_id`, `pasid`)
    /// to `config` (or clears it with `None`), creating the context entry,
    /// PASID directory and PASID table on first use. Requests without a
    /// PASID use RID_PASID 0. A present entry is first cleared and
    /// invalidated; the new one is written words 1..7 then word 0, then the
    /// PASID cache, PASID-based IOTLB and IOTLB of the domain are invalidated
    /// (plus the context cache when the context entry is new), one wait.
    pub fn set_pasid_entry(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        source_id: u16,
        pasid: u32,
        config: Option<PasidConfig>,
    ) -> Result<(), VtdError> {
        let root = self.root_for(RootTableMode::Scalable)?;
        let ecap = self.extended_capability();
        let pasid_limit = if ecap.pasid() {
            PASID_LIMIT.min(1 << ecap.pasid_bits().min(20))
        } else {
            1
        };
        if pasid >= pasid_limit {
            return Err(VtdError::InvalidParameter {
                what: "PASID beyond the unit's PASID width or the 32768 the directory covers",
            });
        }
        let entry = config
            .map(|c| PasidEntry::encode(c, self.capability(), ecap))
            .transpose()?;
        let bus = u64::from(source_id >> 8);
        let devfn = u64::from(source_id & 0xff);
        let half = if devfn >= 128 { 8 } else { 0 };
        let (context_table, _) =
            Self::ensure_table(mem, alloc, root + 16 * bus + half, "scalable context table")?;
        let context_slot = context_table + 32 * (devfn % 128);
        let new_context = !bit(mem.read_u64(context_slot), 0);
        let directory = if new_context {
            let directory = alloc.alloc_zeroed_frame().ok_or(VtdError::OutOfMemory {
                what: "PASID directory",
            })?;
            let words = scalable_context_entry(directory, 0, ecap.pasid());
            for (i, word) in words.iter().enumerate().skip(1) {
                mem.write_u64(context_slot + 8 * i as u64, *word);
            }
            mem.write_u64(context_slot, words[0]);
            directory
        } else {
            mem.read_u64(context_slot) & 0x000f_ffff_ffff_f000
        };
        let dir_slot = directory + 8 * u64::from(pasid >> 6);
        let pasid_table = match mem.read_u64(dir_slot) {
            e if bit(e, 0) => e & 0x000f_ffff_ffff_f000,
            _ => {
                let table = alloc.alloc_zeroed_frame().ok_or(VtdError::OutOfMemory {
                    what: "PASID table",
                })?;
                mem.write_u64(dir_slot, pasid_directory_entry(table));
                table
            }
        };
        let slot = pasid_table + 64 * u64::from(pasid & 0x3f);
        let old = mem.read_u64(slot);
        let old_domain = mem.read_u64(slot + 8) as u16;
        if bit(old, 0) {
            mem.write_u64(slot, 0);
            self.invalidate_pasid(mem, source_id, pasid, old_domain, false)?;
        }
        let Some(entry) = entry else {
            return if new_context {
                self.invalidate_pasid(mem, source_id, pasid, 0, true)
            } else {
                Ok(())
            };
        };
        for (i, word) in entry.0.iter().enumerate().skip(1) {
            mem.write_u64(slot + 8 * i as u64, *word);
        }
        mem.write_u64(slot, entry.0[0]);
        self.invalidate_pasid(mem, source_id, pasid, entry.domain(), new_context)
    }

    /// After (`source_id`, `pasid`)'s entry was cleared: unlinks the
    /// unit's tables on its path that hold no present entry any more and
    /// that `owned` says the caller may free — scalable mode: its PASID
    /// table, then its PASID directory (the context entry), then the
    /// half-bus context table (the root entry); legacy mode: the bus's
    /// context table — then invalidates the context cache (device, or
    /// global when a root entry went) and, in scalable mode, the PASID
    /// cache, with one wait, and returns the unlinked pages for the
    /// caller to free. On an error nothing is returned: the unlinked pages
    /// may still be cached and must not be reused.
    pub fn release_tables(
        &mut self,
        mem: &impl PhysMem,
        source_id: u16,
        pasid: u32,
        owned: impl Fn(PhysAddr) -> bool,
    ) -> Result<Released, VtdError> {
        let Some((root, mode)) = self.root_table() else {
            return Err(no_root(RootTableMode::Legacy));
        };
        let address = |entry: u64| entry & 0x000f_ffff_ffff_f000;
        let empty = |table: PhysAddr, entries: u64, stride: u64| {
            (0..entries).all(|i| !bit(mem.read_u64(table + stride * i), 0))
        };
        let mut released = Released::default();
        let bus = u64::from(source_id >> 8);
        let devfn = u64::from(source_id & 0xff);
        let root_slot = match mode {
            RootTableMode::Legacy => root + 16 * bus,
            RootTableMode::Scalable => root + 16 * bus + if devfn >= 128 { 8 } else { 0 },
        };
        let root_entry = mem.read_u64(root_slot);
        if !bit(root_entry, 0) {
            return Ok(released);
        }
        let context_table = address(root_entry);
        let (entries, stride) = match mode {
            RootTableMode::Legacy => (256, 16),
            RootTableMode::Scalable => (128, 32),
        };
        if mode == RootTableMode::Scalable {
            let context_slot = context_table + 32 * (devfn % 128);
            let context = mem.read_u64(context_slot);
            if bit(context, 0) {
                let directory = address(context);
                let dir_slot = directory + 8 * u64::from(pasid >> 6);
                let dir_entry = mem.read_u64(dir_slot);
                let table = address(dir_entry);
                if bit(dir_entry, 0) && owned(table) && empty(table, 64, 64) {
                    mem.write_u64(dir_slot, 0);
                    released.push(table);
                }
                if owned(directory) && empty(directory, 512, 8) {
                    mem.write_u64(context_slot, 0);
                    for word in 1..4 {
                        mem.write_u64(context_slot + 8 * word, 0);
                    }
                    released.push(directory);
                }
            }
        }
        let root_cleared = owned(context_table) && empty(context_table, entries, stride);
        if root_cleared {
            mem.write_u64(root_slot, 0);
            if mode == RootTableMode::Legacy {
                mem.write_u64(root_slot + 8, 0);
            }
            released.push(context_table);
        }
        if released.count() == 0 {
            return Ok(released);
        }
        let context = Descriptor::context_cache(if root_cleared {
            ContextScope::Global
        } else {
            ContextScope::Device {
                domain: 0,
                source_id,
                function_mask: 0,
            }
        });
        match mode {
            RootTableMode::Legacy if self.queue().is_none() => self.invalidate_all(mem)?,
            RootTableMode::Legacy => self.submit(mem, [context])?,
            RootTableMode::Scalable => self.submit(
                mem,
                [context, Descriptor::pasid_cache(PasidCacheScope::Global)],
            )?,
        }
        Ok(released)
    }

    /// Scalable mode: the address of `source_id`'s context entry, if present.
    fn context_slot(&self, mem: &impl PhysMem, source_id: u16) -> Result<PhysAddr, VtdError> {
        let root = self.root_for(RootTableMode::Scalable)?;
        let bus = u64::from(source_id >> 8);
        let devfn = u64::from(source_id & 0xff);
        let half = if devfn >= 128 { 8 } else { 0 };
        let root_entry = mem.read_u64(root + 16 * bus + half);
        let slot = (root_entry & 0x000f_ffff_ffff_f000) + 32 * (devfn % 128);
        if bit(root_entry, 0) && bit(mem.read_u64(slot), 0) {
            Ok(slot)
        } else {
            Err(VtdError::InvalidParameter {
                what: "no context entry for this requester (set a PASID entry first)",
            })
        }
    }

    /// Scalable mode: the address of (`source_id`, `pasid`)'s PASID entry, if present.
    fn pasid_entry_slot(
        &self,
        mem: &impl PhysMem,
        source_id: u16,
        pasid: u32,
    ) -> Result<PhysAddr, VtdError> {
        let not_present = VtdError::InvalidParameter {
            what: "no PASID entry for this requester and PASID",
        };
        let context = mem.read_u64(self.context_slot(mem, source_id)?);
        if pasid >= PASID_LIMIT {
            return Err(not_present);
        }
        let dir_entry = mem.read_u64((context & 0x000f_ffff_ffff_f000) + 8 * u64::from(pasid >> 6));
        let slot = (dir_entry & 0x000f_ffff_ffff_f000) + 64 * u64::from(pasid & 0x3f);
        if bit(dir_entry, 0) && bit(mem.read_u64(slot), 0) {
            Ok(slot)
        } else {
            Err(not_present)
        }
    }

    /// Scalable mode: sets or clears the PRE bit of `source_id`'s context
    /// entry (VT-d 9.4), so the device's page requests reach the page
    /// request queue, then invalidates the device's context cache. The
    /// context entry must exist (a PASID entry was set). Needs ECAP.PRS.
    pub fn set_page_requests(
        &mut self,
        mem: &impl PhysMem,
        source_id: u16,
        on: bool,
    ) -> Result<(), VtdError> {
        if on && !self.extended_capability().prs() {
            return Err(VtdError::Unsupported {
                what: "page requests (ECAP.PRS)",
            });
        }
        let context_slot = self.context_slot(mem, source_id)?;
        let word = mem.read_u64(context_slot);
        mem.write_u64(context_slot, (word & !(1 << 4)) | u64::from(on) << 4);
        // Scalable-mode context entries carry no domain: device-selective
        // context-cache invalidation with DID 0, and the PASID cache.
        self.submit(
            mem,
            [
                Descriptor::context_cache(ContextScope::Device {
                    domain: 0,
                    source_id,
                    function_mask: 0,
                }),
                Descriptor::pasid_cache(PasidCacheScope::Global),
            ],
        )
    }

    /// Scalable mode: turns second-stage dirty tracking (the PASID entry's
    /// SSADE, VT-d 9.6) on or off for (`source_id`, `pasid`), a
    /// second-stage or nested entry, then invalidates the PASID cache and
    /// the PASID's IOTLB entries so no cached translation skips the
    /// update. Needs ECAP.SLADS (QEMU has none: `Unsupported`).
    pub fn set_dirty_tracking(
        &mut self,
        mem: &impl PhysMem,
        source_id: u16,
        pasid: u32,
        on: bool,
    ) -> Result<(), VtdError> {
        let slot = self.pasid_entry_slot(mem, source_id, pasid)?;
        let mut entry = PasidEntry::default();
        for (i, word) in entry.0.iter_mut().enumerate() {
            *word = mem.read_u64(slot + 8 * i as u64);
        }
        let entry = entry.with_dirty_tracking(on, self.extended_capability())?;
        mem.write_u64(slot, entry.0[0]);
        self.invalidate_pasid(mem, source_id, pasid, entry.domain(), false)
    }

    fn invalidate_pasid(
        &mut self,
        mem: &impl PhysMem,
        source_id: u16,
        pasid: u32,
        domain: u16,
        context_too: bool,
    ) -> Result<(), VtdError> {
        let drain = self.capability().drd() || self.capability().dwd();
        let context = Descriptor::context_cache(ContextScope::Device {
            domain,
            source_id,
            function_mask: 0,
        });
        let descriptors = [
            Descriptor::pasid_cache(PasidCacheScope::Pasid { domain, pasid }),
            Descriptor::pasid_iotlb(PasidIotlbScope::Pasid { domain, pasid }),
            Descriptor::iotlb(IotlbScope::Domain(domain), drain),
        ];
        let context = context_too.then_some(context);
        self.submit(mem, context.into_iter().chain(descriptors))
    }
}

impl<M: Mmio> VtdUnit<M> {
    /// Flushes `batch` (VT-d targets only): page-selective IOTLB / PASID-based
    /// IOTLB descriptors in aligned chunks (AM up to CAP.MAMV; whole-domain
    /// or whole-PASID when CAP.PSI is clear or a range needs more than
    /// [`InvalidationBatch::MAX_COMMANDS_PER_RANGE`] descriptors), then one
    /// wait descriptor. SMMU targets are refused.
    pub fn flush(
        &mut self,
        mem: &impl PhysMem,
        batch: &InvalidationBatch,
    ) -> Result<InvalidationStats, VtdError> {
        if batch.is_empty() {
            return Ok(InvalidationStats::default());
        }
        let cap = self.capability();
        let drain = cap.drd() || cap.dwd();
        let max_order = cap.mamv().min(63);
        for range in batch.iter() {
            if matches!(
                range.target,
                InvalidationTarget::SmmuStage1 { .. } | InvalidationTarget::SmmuStage2 { .. }
            ) {
                return Err(VtdError::InvalidParameter {
                    what: "SMMUv3 invalidation target given to a VT-d unit",
                });
            }
        }
        let page_selective = |range: &InvalidationRange| {
            cap.psi()
                && !matches!(
                    range.target,
                    InvalidationTarget::VtdDomain { nested: true, .. }
                )
                && aligned_chunks(range.start, range.length, max_order)
                    .nth(InvalidationBatch::MAX_COMMANDS_PER_RANGE)
                    .is_none()
        };
        let descriptors = batch.iter().flat_map(move |range| {
            let selective = page_selective(&range);
            let whole = match range.target {
                InvalidationTarget::VtdPasid { domain, pasid } => {
                    Descriptor::pasid_iotlb(PasidIotlbScope::Pasid { domain, pasid })
                }
                InvalidationTarget::VtdDomain { domain, .. } => {
                    Descriptor::iotlb(IotlbScope::Domain(domain), drain)
                }
                _ => Descriptor::iotlb(IotlbScope::Global, drain),
            };
            let chunks = aligned_chunks(range.start, range.length, max_order)
                .filter(move |_| selective)
                .map(move |(address, order)| match range.target {
                    InvalidationTarget::VtdPasid { domain, pasid } => {
                        Descriptor::pasid_iotlb(PasidIotlbScope::Pages {
                            domain,
                            pasid,
                            address,
                            order,
                            leaf_only: false,
                        })
                    }
                    InvalidationTarget::VtdDomain { domain, .. } => Descriptor::iotlb(
                        IotlbScope::Pages {
                            domain,
                            address,
                            order,
                            leaf_only: false,
                        },
                        drain,
                    ),
                    _ => whole,
                });
            (!selective).then_some(whole).into_iter().chain(chunks)
        });
        let before = self.queue().map_or(0, |q| q.descriptors_issued);
        if self.queue().is_none() {
            return Err(VtdError::Unsupported {
                what: "batched invalidation needs queued invalidation",
            });
        }
        self.submit(mem, descriptors)?;
        let after = self.queue().map_or(0, |q| q.descriptors_issued);
        Ok(InvalidationStats {
            commands: after - before - 1,
            waits: 1,
        })
    }
}
