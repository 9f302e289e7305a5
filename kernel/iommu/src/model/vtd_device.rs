//! A simulated VT-d register block that reacts to the driver's writes the
//! way the hardware does (VT-d chapter 11), and routes DMA through
//! [`super::vtd::VtdModel`], recording faults in FSTS/FRCD.

use super::vtd::{CacheTag, Request, VtdModel, reason};
use super::{
    Access, DeviceError, DeviceOutcome, RegisterFile, SimMemory, TransactionId, Transactions,
};
use crate::vtd::prq::{DESCRIPTOR_BYTES, PageRequest};
use crate::vtd::regs::{
    Capability, ExtendedCapability, FaultAccess, FaultRecord, FaultStatus, GlobalBits,
    RootTableMode, offset, prs,
};
use crate::{Mmio, PhysMem};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

/// One cached translation of a 4 KiB page (context/PASID-cache tags plus the IOTLB entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CachedPage {
    tag: CacheTag,
    output_page: u64,
    read: bool,
    write: bool,
    /// Filled by a write's walk (which set D where the walk sets it).
    dirty: bool,
}

/// QEMU 10.0.2 default `intel-iommu` CAP.
pub const QEMU_CAP: u64 = 0x00d2_008c_222f_0606;
/// QEMU 10.0.2 default `intel-iommu` ECAP (QI, IR, PT).
pub const QEMU_ECAP: u64 = 0x0000_0000_00f0_0f4a;
/// QEMU 10.0.2 `x-scalable-mode=on,x-flts=on,x-pasid-mode=on` ECAP.
pub const QEMU_FLTS_ECAP: u64 = 0x0000_8900_00f0_0f4a;
/// A NEST=1 unit: QEMU's default plus SMTS, SLTS, FLTS, NEST, PASID (PSS=19).
pub const NESTING_ECAP: u64 =
    QEMU_ECAP | 1 << 43 | 1 << 46 | 1 << 47 | 1 << 26 | 1 << 40 | 19 << 35;

/// Counts of the invalidation descriptors the simulated unit processed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InvalidationCounts {
    /// Context-cache descriptors.
    pub context: u64,
    /// IOTLB descriptors.
    pub iotlb: u64,
    /// PASID-cache descriptors.
    pub pasid_cache: u64,
    /// PASID-based IOTLB descriptors.
    pub pasid_iotlb: u64,
    /// Wait descriptors.
    pub wait: u64,
    /// Register-based invalidations (CCMD, IOTLB register).
    pub register: u64,
    /// Interrupt entry cache descriptors.
    pub interrupt_entry: u64,
}

/// Where an interrupt request ends (VT-d 5.1): delivered as a vector to a
/// local APIC, or dropped with the fault reason the unit records.
pub type InterruptOutcome = Result<(u8, u8), u8>;

/// Interrupt remapping fault reasons (VT-d 7.1.3, table 26).
pub mod interrupt_reason {
    /// The handle is beyond the table's size.
    pub const INDEX_OVER: u8 = 0x21;
    /// The IRTE is not present.
    pub const NOT_PRESENT: u8 = 0x22;
    /// The IRTE holds reserved or unsupported values.
    pub const RESERVED: u8 = 0x24;
    /// A compatibility-format request while CFIS is clear.
    pub const COMPATIBILITY: u8 = 0x25;
    /// The requester failed the IRTE's source-id check.
    pub const SOURCE_ID: u8 = 0x26;
}

/// The simulated unit.
pub struct SimVtd<'m> {
    memory: &'m SimMemory,
    regs: RegisterFile,
    /// Status bits that never change (to test bounded polls).
    pub stuck: Cell<GlobalBits>,
    /// A wedged invalidation queue: the unit fetches no descriptor, so
    /// IQH stays and no wait completes (the driver's waits time out).
    /// Descriptors queued meanwhile are processed once it is cleared and
    /// the tail is written again.
    pub stall_queue: Cell<bool>,
    /// The next this many descriptors other than waits are refused with
    /// FSTS.IQE (as QEMU does for a malformed one), one per fetch: a
    /// transient invalidation failure. The driver replaces each refused
    /// descriptor with a no-op, so its invalidation never happens.
    pub reject_descriptors: Cell<u32>,
    /// Invalidations processed.
    pub counts: Cell<InvalidationCounts>,
    latched_root: Cell<Option<(u64, RootTableMode)>>,
    qemu_mode: Cell<bool>,
    /// Model the context/PASID caches and the IOTLB (on by default): a
    /// translation once made is reused until an invalidation covering it,
    /// so a missing invalidation shows up as a stale translation.
    pub caching: Cell<bool>,
    /// Context/PASID cache: (source id, PASID or None) -> tags.
    config_cache: RefCell<BTreeMap<(u16, Option<u32>), CacheTag>>,
    /// IOTLB: (domain, PASID, input page) -> translation.
    iotlb: RefCell<BTreeMap<(u16, u32, u64), CachedPage>>,
    msis: RefCell<std::vec::Vec<(u64, u32)>>,
    /// The interrupt remapping table latched by SIRTP: (address, entries).
    latched_interrupt_table: Cell<Option<(u64, usize)>>,
    /// Interrupt entry cache: IRTE index -> the entry as read.
    irte_cache: RefCell<BTreeMap<u16, [u64; 2]>>,
    /// Requesters whose PCIe PRI capability is enabled (the endpoint's
    /// side of page requests; the context entry's PRE is the unit's).
    page_request_devices: RefCell<BTreeSet<u16>>,
    /// Device transactions waiting for a page group response.
    transactions: Transactions<Request>,
    page_request_msis: RefCell<std::vec::Vec<(u64, u32)>>,
    /// Page group response descriptors processed.
    pub page_responses: Cell<u64>,
}

impl<'m> SimVtd<'m> {
    /// A unit with the given CAP/ECAP over `memory`. `qemu_mode` makes
    /// nested PGTT fault like QEMU 10.0.2 regardless of ECAP.NEST.
    pub fn new(memory: &'m SimMemory, cap: u64, ecap: u64, qemu_mode: bool) -> Self {
        let regs = RegisterFile::default();
        regs.set(offset::VER, 0x10);
        regs.set64(offset::CAP, cap);
        regs.set64(offset::ECAP, ecap);
        regs.set(offset::FECTL, 1 << 31);
        regs.set(offset::PECTL, 1 << 31);
        Self {
            memory,
            regs,
            stuck: Cell::new(GlobalBits::empty()),
            stall_queue: Cell::new(false),
            reject_descriptors: Cell::new(0),
            counts: Cell::new(InvalidationCounts::default()),
            latched_root: Cell::new(None),
            qemu_mode: Cell::new(qemu_mode),
            caching: Cell::new(true),
            config_cache: RefCell::new(BTreeMap::new()),
            iotlb: RefCell::new(BTreeMap::new()),
            msis: RefCell::new(std::vec::Vec::new()),
            latched_interrupt_table: Cell::new(None),
            irte_cache: RefCell::new(BTreeMap::new()),
            page_request_devices: RefCell::new(BTreeSet::new()),
            transactions: Transactions::default(),
            page_request_msis: RefCell::new(std::vec::Vec::new()),
            page_responses: Cell::new(0),
        }
    }

    /// An interrupt request: a device's write of `data` to `address` in
    /// 0xFEEx_xxxx, arriving with requester id `source_id`. With remapping
    /// off it is delivered as written (the hole remapping closes); with it
    /// on, per VT-d 5.1: compatibility format only while CFIS is set,
    /// remappable format through a present IRTE whose source-id check
    /// passes. Entries are cached until an interrupt entry cache
    /// invalidation (when [`SimVtd::caching`] is on).
    pub fn interrupt(&self, address: u64, data: u32, source_id: u16) -> InterruptOutcome {
        use crate::vtd::intremap::Irte;
        let gsts = GlobalBits::from_bits_retain(self.regs.get(offset::GSTS));
        let compatibility = || Ok((data as u8, (address >> 12) as u8));
        if !gsts.contains(GlobalBits::INTERRUPT_REMAPPING) {
            return compatibility();
        }
        if address & (1 << 4) == 0 {
            return if gsts.contains(GlobalBits::COMPATIBILITY_FORMAT) {
                compatibility()
            } else {
                Err(interrupt_reason::COMPATIBILITY)
            };
        }
        let mut index = ((address >> 5) & 0x7fff) as u32 | (((address >> 2) & 1) as u32) << 15;
        if address & (1 << 3) != 0 {
            index += data & 0xffff;
        }
        let Some((table, entries)) = self.latched_interrupt_table.get() else {
            return Err(interrupt_reason::INDEX_OVER);
        };
        if index as usize >= entries {
            return Err(interrupt_reason::INDEX_OVER);
        }
        let index = index as u16;
        let cached = self.irte_cache.borrow().get(&index).copied();
        let words = cached.unwrap_or_else(|| {
            let at = table + u64::from(index) * 16;
            [self.memory.read_u64(at), self.memory.read_u64(at + 8)]
        });
        if words[0] & 1 == 0 {
            return Err(interrupt_reason::NOT_PRESENT);
        }
        let Some(entry) = Irte::decode(words) else {
            return Err(interrupt_reason::RESERVED);
        };
        if self.caching.get() {
            self.irte_cache.borrow_mut().insert(index, words);
        }
        if !entry.accepts(source_id) {
            return Err(interrupt_reason::SOURCE_ID);
        }
        Ok((entry.vector, entry.destination))
    }

    /// Switches between QEMU 10.0.2 behaviour and the specification's.
    pub fn set_qemu_mode(&self, qemu: bool) {
        self.qemu_mode.set(qemu);
    }

    /// QEMU's default `intel-iommu`.
    pub fn qemu_default(memory: &'m SimMemory) -> Self {
        Self::new(memory, QEMU_CAP, QEMU_ECAP, true)
    }

    fn cap(&self) -> Capability {
        Capability(self.regs.get64(offset::CAP))
    }
    fn ecap(&self) -> ExtendedCapability {
        ExtendedCapability(self.regs.get64(offset::ECAP))
    }

    /// The translation model for the latched root table, if translation is on.
    pub fn model(&self) -> Option<VtdModel> {
        let gsts = GlobalBits::from_bits_retain(self.regs.get(offset::GSTS));
        if !gsts.contains(GlobalBits::TRANSLATION_ENABLE) {
            return None;
        }
        let (root, mode) = self.latched_root.get()?;
        let ecap = self.ecap();
        Some(VtdModel {
            root_table: root,
            mode,
            nesting: ecap.nest() && !self.qemu_mode.get(),
            first_stage: ecap.flts(),
            second_stage: mode == RootTableMode::Legacy || ecap.slts(),
            pass_through: ecap.pt(),
            first_stage_1g: self.cap().fl1gp(),
            mgaw: self.cap().mgaw(),
            qemu_fault_codes: self.qemu_mode.get(),
            second_stage_ad: ecap.slads() && !self.qemu_mode.get(),
            qemu_ad_update: self.qemu_mode.get(),
        })
    }

    /// A device DMA: translated (or passed through with TE=0); faults are
    /// recorded in the fault recording registers like the hardware does.
    pub fn dma(&self, request: Request) -> Result<u64, u8> {
        let Some(model) = self.model() else {
            return Ok(request.address);
        };
        if let Some(hit) = self.cached(request) {
            return Ok(hit);
        }
        let result = model.translate(self.memory, request);
        if let (Ok(output), true) = (result, self.caching.get()) {
            self.fill(&model, request, output);
        }
        result.map_err(|fault| {
            self.record_dma_fault(&model, request, fault.reason);
            fault.reason
        })
    }

    fn record_dma_fault(&self, model: &VtdModel, request: Request, reason: u8) {
        let pasid = match model.mode {
            RootTableMode::Scalable => request.pasid,
            RootTableMode::Legacy => None,
        };
        self.record_fault(FaultRecord {
            source_id: request.source_id,
            reason,
            address: request.address & !0xfff,
            access: match request.access {
                Access::Read => FaultAccess::Read,
                Access::Write => FaultAccess::Write,
            },
            pasid,
            privileged: false,
            execute: false,
            address_type: 0,
            index: 0,
        });
    }

    /// Enables or disables the PCIe PRI capability of requester
    /// `source_id` (what the device's driver does in configuration space).
    /// A Failure response disables it again, as PCIe specifies.
    pub fn enable_device_page_requests(&self, source_id: u16, on: bool) {
        let mut devices = self.page_request_devices.borrow_mut();
        if on {
            devices.insert(source_id);
        } else {
            devices.remove(&source_id);
        }
    }

    /// A DMA from a device that can wait for a page request (ATS + PRI):
    /// a translation that misses (not present, or no write/read right) in
    /// scalable mode, with ECAP.PRS, the context entry's PRE, the device's
    /// PRI enabled and a page request queue, writes a page request
    /// descriptor into the queue (PRS.PPR, a page request event) and
    /// waits; every other fault is recorded like [`SimVtd::dma`]. After a
    /// Success response the device retries (and may miss and ask again);
    /// Invalid or Failure fail it.
    pub fn device_dma(&self, request: Request) -> DeviceOutcome {
        self.attempt(request, None).0
    }

    /// Where transaction `id` stands now.
    pub fn transaction(&self, id: TransactionId) -> DeviceOutcome {
        self.transactions.outcome(id)
    }

    /// Page request event MSIs sent so far: (address, data).
    pub fn page_request_msis(&self) -> std::vec::Vec<(u64, u32)> {
        self.page_request_msis.borrow().clone()
    }

    /// One try of `request`; `waiting` is the transaction it retries.
    /// Returns the outcome and the group index it now waits under.
    fn attempt(&self, request: Request, waiting: Option<TransactionId>) -> (DeviceOutcome, u16) {
        let Some(model) = self.model() else {
            return (DeviceOutcome::Completed(request.address), 0);
        };
        if let Some(hit) = self.cached(request) {
            return (DeviceOutcome::Completed(hit), 0);
        }
        match model.translate(self.memory, request) {
            Ok(output) => {
                if self.caching.get() {
                    self.fill(&model, request, output);
                }
                (DeviceOutcome::Completed(output), 0)
            }
            Err(fault) if self.page_requests_apply(&model, request, fault.reason) => {
                let (id, group) = match waiting {
                    Some(id) => (id, self.transactions.new_tag(512)),
                    None => self.transactions.start(request, 512),
                };
                let outcome = if self.raise_page_request(request, group) {
                    DeviceOutcome::Waiting(id)
                } else {
                    DeviceOutcome::Failed(DeviceError::Overflow)
                };
                self.transactions.settle(id, outcome, group);
                (outcome, group)
            }
            Err(fault) => {
                self.record_dma_fault(&model, request, fault.reason);
                (
                    DeviceOutcome::Failed(DeviceError::Fault(u32::from(fault.reason))),
                    0,
                )
            }
        }
    }

    /// Whether a fault with `reason` becomes a page request (VT-d 7.5).
    fn page_requests_apply(&self, model: &VtdModel, request: Request, fault: u8) -> bool {
        let recoverable = matches!(
            fault,
            reason::FS_NOT_PRESENT | reason::SM_WRITE | reason::SM_READ
        );
        let pre = model
            .context_entry(self.memory, request.source_id)
            .is_some_and(|context| context[0] >> 4 & 1 == 1);
        recoverable
            && model.mode == RootTableMode::Scalable
            && self.ecap().prs()
            && pre
            && self.regs.get64(offset::PQA) != 0
            && self
                .page_request_devices
                .borrow()
                .contains(&request.source_id)
    }

    /// Writes a page request descriptor at PQT (VT-d 7.5.1); `false` when
    /// the queue is full (PRS.PRO set, the request dropped).
    fn raise_page_request(&self, request: Request, group: u16) -> bool {
        let pqa = self.regs.get64(offset::PQA);
        let base = pqa & !0xfff;
        let ring = 4096u64 << (pqa & 7);
        let mask = (ring - 1) & !(DESCRIPTOR_BYTES - 1);
        let head = self.regs.get64(offset::PQH) & mask;
        let tail = self.regs.get64(offset::PQT) & mask;
        let next = (tail + DESCRIPTOR_BYTES) % ring;
        if next == head {
            self.regs
                .set(offset::PRS, self.regs.get(offset::PRS) | prs::PRO);
            return false;
        }
        let descriptor = PageRequest {
            source_id: request.source_id,
            pasid: request.pasid,
            address: request.address & !0xfff,
            read: request.access == Access::Read,
            write: request.access == Access::Write,
            execute: false,
            privileged: false,
            last_in_group: true,
            group_index: group,
        };
        for (i, word) in descriptor.encode().iter().enumerate() {
            self.memory.write_u64(base + tail + 8 * i as u64, *word);
        }
        self.regs.set64(offset::PQT, next);
        self.regs
            .set(offset::PRS, self.regs.get(offset::PRS) | prs::PPR);
        // Page request event (VT-d 7.5.3): an MSI unless PECTL.IM.
        let control = self.regs.get(offset::PECTL);
        if control & (1 << 31) != 0 {
            self.regs.set(offset::PECTL, control | 1 << 30);
        } else {
            self.send_page_request_msi();
        }
        true
    }

    fn send_page_request_msi(&self) {
        let address = u64::from(self.regs.get(offset::PEADDR))
            | u64::from(self.regs.get(offset::PEUADDR)) << 32;
        self.page_request_msis
            .borrow_mut()
            .push((address, self.regs.get(offset::PEDATA)));
    }

    /// A page group response descriptor (VT-d 6.5.2.9) reaching the device:
    /// Success retries every transaction of the group, Invalid fails them,
    /// Failure (and reserved codes) fails them and turns the device's PRI off.
    fn page_group_response(&self, low: u64, high: u64) {
        self.page_responses.set(self.page_responses.get() + 1);
        let source_id = (low >> 16) as u16;
        let pasid = (low >> 4 & 1 == 1).then_some(((low >> 32) & 0xf_ffff) as u32);
        let code = ((low >> 12) & 0xf) as u8;
        let group = ((high >> 3) & 0x1ff) as u16;
        let waiting = self.transactions.waiting(|request, tag| {
            request.source_id == source_id && request.pasid == pasid && tag == group
        });
        for (id, request) in waiting {
            match code {
                0x0 => {
                    let (outcome, tag) = self.attempt(request, Some(id));
                    self.transactions.settle(id, outcome, tag);
                }
                0x1 => self.transactions.settle(
                    id,
                    DeviceOutcome::Failed(DeviceError::Response(code)),
                    group,
                ),
                _ => {
                    self.enable_device_page_requests(source_id, false);
                    self.transactions.settle(
                        id,
                        DeviceOutcome::Failed(DeviceError::Response(code)),
                        group,
                    );
                }
            }
        }
    }

    fn cached(&self, request: Request) -> Option<u64> {
        if !self.caching.get() {
            return None;
        }
        // A context/PASID-cache miss walks the root, context and PASID
        // entries again; IOTLB entries are tagged by DID and PASID and
        // survive context/PASID-cache invalidations (VT-d 6.2).
        let cached_tag = self
            .config_cache
            .borrow()
            .get(&(request.source_id, request.pasid))
            .copied();
        let tag = match cached_tag {
            Some(tag) => tag,
            None => self.model()?.cache_tag(self.memory, request)?,
        };
        let page = request.address >> 12;
        let entry = *self.iotlb.borrow().get(&(tag.domain, tag.pasid, page))?;
        let allowed = match request.access {
            Access::Read => entry.read,
            // A write through an entry cached by a read must walk again to
            // set D (VT-d 9.7); QEMU 10.0.2 reuses the entry and skips D.
            Access::Write => entry.write && (entry.dirty || self.qemu_mode.get()),
        };
        allowed.then_some(entry.output_page | (request.address & 0xfff))
    }

    fn fill(&self, model: &VtdModel, request: Request, output: u64) {
        let Some(tag) = model.cache_tag(self.memory, request) else {
            return;
        };
        let other = match request.access {
            Access::Read => Access::Write,
            Access::Write => Access::Read,
        };
        let other_ok = model
            .probe(
                self.memory,
                Request {
                    access: other,
                    ..request
                },
            )
            .is_ok();
        let (read, write) = match request.access {
            Access::Read => (true, other_ok),
            Access::Write => (other_ok, true),
        };
        self.config_cache
            .borrow_mut()
            .insert((request.source_id, request.pasid), tag);
        self.iotlb.borrow_mut().insert(
            (tag.domain, tag.pasid, request.address >> 12),
            CachedPage {
                tag,
                output_page: output & !0xfff,
                read,
                write,
                dirty: request.access == Access::Write,
            },
        );
    }

    /// Number of cached IOTLB entries (for tests).
    pub fn cached_translations(&self) -> usize {
        self.iotlb.borrow().len()
    }

    fn invalidate(&self, low: u64, high: u64) {
        let granularity = (low >> 4) & 3;
        let domain = (low >> 16) as u16;
        let pasid = ((low >> 32) & 0xf_ffff) as u32;
        let mut config = self.config_cache.borrow_mut();
        let mut iotlb = self.iotlb.borrow_mut();
        let in_range = |page: u64| {
            let order = high & 0x3f;
            let first = (high & !0xfff) >> 12;
            page >> order == first >> order
        };
        match low & 0xf {
            // Context cache (6.5.2.1): global, domain, device (source id).
            1 => match granularity {
                1 => config.clear(),
                2 => config.retain(|_, tag| tag.domain != domain),
                _ => {
                    let source = ((low >> 32) & 0xffff) as u16;
                    config.retain(|(sid, _), _| *sid != source);
                }
            },
            // PASID cache (6.5.2.2): domain, PASID, global.
            7 => match granularity {
                0 => config.retain(|_, tag| tag.domain != domain),
                1 => config.retain(|_, tag| tag.domain != domain || tag.pasid != pasid),
                _ => config.clear(),
            },
            // IOTLB (6.5.2.3): global, domain, page-selective (domain-granular entries).
            2 => match granularity {
                1 => iotlb.clear(),
                2 => iotlb.retain(|(did, _, _), _| *did != domain),
                _ => iotlb.retain(|(did, _, page), entry| {
                    *did != domain || entry.tag.pasid_granular || !in_range(*page)
                }),
            },
            // PASID-based IOTLB (6.5.2.4): all of a PASID, or pages of it.
            6 => match granularity {
                3 => iotlb
                    .retain(|(did, p, page), _| *did != domain || *p != pasid || !in_range(*page)),
                _ => iotlb.retain(|(did, p, _), _| *did != domain || *p != pasid),
            },
            // Interrupt entry cache (6.5.2.7): global, or 2^IM entries from IIDX.
            4 => {
                let mut cache = self.irte_cache.borrow_mut();
                if low & (1 << 4) == 0 {
                    cache.clear();
                } else {
                    let first = (low >> 32) as u16 as u32;
                    let count = 1u32 << ((low >> 27) & 0x1f);
                    cache.retain(|index, _| !(first..first + count).contains(&u32::from(*index)));
                }
            }
            _ => {}
        }
    }

    fn record_fault(&self, record: FaultRecord) {
        let cap = self.cap();
        let status = self.regs.get(offset::FSTS);
        let count = cap.nfr();
        // Next free slot after FRI; if it holds a fault, overflow.
        let fri = (status >> 8) & 0xff;
        let pending = status & FaultStatus::PPF.bits() != 0;
        let index = if pending {
            (fri + self.pending_count()) % count
        } else {
            0
        };
        let register = cap.fault_recording_offset() + 16 * index as usize;
        if self.regs.get64(register + 8) >> 63 == 1 {
            self.regs
                .set(offset::FSTS, status | FaultStatus::PFO.bits());
            return;
        }
        let (low, high) = record.encode();
        self.regs.set64(register, low);
        self.regs.set64(register + 8, high);
        let fri = if pending { fri } else { index };
        self.regs.set(
            offset::FSTS,
            (status & !0xff00) | FaultStatus::PPF.bits() | fri << 8,
        );
        self.fault_event();
    }

    /// A fault event (VT-d 7.4.1): an MSI built from FEADDR/FEUADDR/FEDATA
    /// if FECTL.IM is clear, else FECTL.IP is set and the MSI is sent when
    /// software unmasks.
    fn fault_event(&self) {
        let control = self.regs.get(offset::FECTL);
        if control & (1 << 31) != 0 {
            self.regs.set(offset::FECTL, control | 1 << 30);
        } else {
            self.send_fault_msi();
        }
    }

    fn send_fault_msi(&self) {
        let address = u64::from(self.regs.get(offset::FEADDR))
            | u64::from(self.regs.get(offset::FEUADDR)) << 32;
        self.msis
            .borrow_mut()
            .push((address, self.regs.get(offset::FEDATA)));
    }

    /// The fault-event MSIs sent so far: (address, data).
    pub fn fault_msis(&self) -> std::vec::Vec<(u64, u32)> {
        self.msis.borrow().clone()
    }

    fn pending_count(&self) -> u32 {
        let cap = self.cap();
        (0..cap.nfr())
            .filter(|i| {
                self.regs
                    .get64(cap.fault_recording_offset() + 16 * *i as usize + 8)
                    >> 63
                    == 1
            })
            .count() as u32
    }

    fn update_ppf(&self) {
        let status = self.regs.get(offset::FSTS);
        let status = if self.pending_count() == 0 {
            status & !FaultStatus::PPF.bits()
        } else {
            status
        };
        self.regs.set(offset::FSTS, status);
    }

    fn global_command(&self, value: u32) {
        let command = GlobalBits::from_bits_retain(value);
        let stuck = self.stuck.get();
        let old = GlobalBits::from_bits_retain(self.regs.get(offset::GSTS));
        let mut new = (command & GlobalBits::PERSISTENT) | (old & !GlobalBits::PERSISTENT);
        if command.contains(GlobalBits::ROOT_TABLE_POINTER) {
            let rtaddr = self.regs.get64(offset::RTADDR);
            let mode = if (rtaddr >> 10) & 3 == 1 {
                RootTableMode::Scalable
            } else {
                RootTableMode::Legacy
            };
            self.latched_root.set(Some((rtaddr & !0xfff, mode)));
            new |= GlobalBits::ROOT_TABLE_POINTER;
        }
        if command.contains(GlobalBits::INTERRUPT_TABLE_POINTER) {
            let irta = self.regs.get64(offset::IRTA);
            let entries = 2usize << (irta & 0xf);
            self.latched_interrupt_table
                .set(Some((irta & !0xfff, entries)));
            new |= GlobalBits::INTERRUPT_TABLE_POINTER;
        }
        if command.contains(GlobalBits::QUEUED_INVALIDATION)
            && !old.contains(GlobalBits::QUEUED_INVALIDATION)
        {
            self.regs.set64(offset::IQH, 0);
        }
        let new = (new & !stuck) | (old & stuck);
        self.regs.set(offset::GSTS, new.bits());
    }

    fn process_queue(&self) {
        let gsts = GlobalBits::from_bits_retain(self.regs.get(offset::GSTS));
        if !gsts.contains(GlobalBits::QUEUED_INVALIDATION) || self.stall_queue.get() {
            return;
        }
        let iqa = self.regs.get64(offset::IQA);
        let base = iqa & !0xfff;
        let wide = iqa & (1 << 11) != 0;
        let size = if wide { 32 } else { 16 };
        let queue_bytes = 4096u64 << (iqa & 7);
        let tail = self.regs.get64(offset::IQT) & 0x7_fff0;
        let mut head = self.regs.get64(offset::IQH) & 0x7_fff0;
        if self.regs.get(offset::FSTS) & FaultStatus::IQE.bits() != 0 {
            return;
        }
        let mut counts = self.counts.get();
        while head != tail {
            let low = self.memory.read_u64(base + head);
            let high = self.memory.read_u64(base + head + 8);
            let rejected = low & 0xf != 5 && self.reject_descriptors.get() > 0;
            if rejected {
                self.reject_descriptors
                    .set(self.reject_descriptors.get() - 1);
            }
            // A page group response needs ECAP.PRS.
            let unsupported = low & 0xf == 9 && !self.ecap().prs();
            if rejected || unsupported || !descriptor_well_formed(low, high) {
                let status = self.regs.get(offset::FSTS);
                self.regs
                    .set(offset::FSTS, status | FaultStatus::IQE.bits());
                break;
            }
            self.invalidate(low, high);
            match low & 0xf {
                9 => self.page_group_response(low, high),
                1 => counts.context += 1,
                2 => counts.iotlb += 1,
                6 => counts.pasid_iotlb += 1,
                7 => counts.pasid_cache += 1,
                4 => counts.interrupt_entry += 1,
                5 => {
                    counts.wait += 1;
                    if low & (1 << 5) != 0 {
                        self.memory.write_u32(high & !3, (low >> 32) as u32);
                    }
                }
                _ => {
                    let status = self.regs.get(offset::FSTS);
                    self.regs
                        .set(offset::FSTS, status | FaultStatus::IQE.bits());
                    break;
                }
            }
            head = (head + size) % queue_bytes;
        }
        self.regs.set64(offset::IQH, head);
        self.counts.set(counts);
    }
}

impl Mmio for SimVtd<'_> {
    fn read32(&self, offset: usize) -> u32 {
        self.regs.get(offset)
    }

    fn write32(&self, register: usize, value: u32) {
        let iotlb = self.ecap().iotlb_register_offset() + 8;
        let fro = self.cap().fault_recording_offset();
        let frcd_end = fro + 16 * self.cap().nfr() as usize;
        match register {
            offset::VER | offset::CAP | 0x0c | offset::ECAP | 0x14 | offset::GSTS => {}
            offset::GCMD => self.global_command(value),
            offset::FSTS => {
                let clear = value & FaultStatus::from_bits_retain(value).clearable().bits();
                self.regs
                    .set(offset::FSTS, self.regs.get(offset::FSTS) & !clear);
                if clear & FaultStatus::IQE.bits() != 0 {
                    // Fetching resumes at IQH once IQE is cleared.
                    self.process_queue();
                }
            }
            0x2c => {
                // CCMD upper half: ICC is acted on (this model: every
                // granularity as global) and cleared.
                self.regs.set(register, value & !(1 << 31));
                self.config_cache.borrow_mut().clear();
                let mut counts = self.counts.get();
                counts.register += 1;
                self.counts.set(counts);
            }
            r if r == iotlb + 4 => {
                // IOTLB register: every granularity treated as global.
                self.regs.set(register, value & !(1 << 31));
                self.iotlb.borrow_mut().clear();
                let mut counts = self.counts.get();
                counts.register += 1;
                self.counts.set(counts);
            }
            offset::FECTL => {
                // IM is writable; IP is read-only. Unmasking delivers a pending event.
                let pending = self.regs.get(offset::FECTL) & (1 << 30);
                if value & (1 << 31) == 0 && pending != 0 {
                    self.regs.set(offset::FECTL, 0);
                    self.send_fault_msi();
                } else {
                    self.regs.set(offset::FECTL, (value & (1 << 31)) | pending);
                }
            }
            offset::PRS => {
                let status = self.regs.get(offset::PRS);
                self.regs
                    .set(offset::PRS, status & !(value & (prs::PPR | prs::PRO)));
            }
            offset::PECTL => {
                let pending = self.regs.get(offset::PECTL) & (1 << 30);
                if value & (1 << 31) == 0 && pending != 0 {
                    self.regs.set(offset::PECTL, 0);
                    self.send_page_request_msi();
                } else {
                    self.regs.set(offset::PECTL, (value & (1 << 31)) | pending);
                }
            }
            offset::IQT => {
                self.regs.set(register, value);
                self.process_queue();
            }
            r if r >= fro && r < frcd_end && (r - fro) % 16 == 12 => {
                if value & (1 << 31) != 0 {
                    self.regs.set(r, self.regs.get(r) & !(1 << 31));
                    self.update_ppf();
                }
            }
            r if r >= fro && r < frcd_end => {}
            _ => self.regs.set(register, value),
        }
    }
}

/// Reserved-bit and form checks QEMU 10.0.2 applies before processing a
/// descriptor (hw/i386/intel_iommu_internal.h masks; a violation is IQE).
fn descriptor_well_formed(low: u64, high: u64) -> bool {
    match low & 0xf {
        1 => low & 0xfffc_0000_0000_ffc0 == 0 && high == 0,
        2 => low & 0xffff_ffff_0000_ff00 == 0 && high & 0xf80 == 0,
        4 => low & 0xffff_0000_07ff_ffe0 == 0 && high == 0,
        5 => low & 0xffff_ff80 == 0 && high & 3 == 0 && low & (1 << 5 | 1 << 4) != 0,
        6 => low & 0xfff0_0000_0000_f1c0 == 0 && high & 0xf80 == 0,
        7 => low & 0xfff0_0000_0000_f1c0 == 0,
        // Page group response (6.5.2.9): bits 11:5 and 63:52 reserved.
        9 => low & 0xfff0_0000_0000_0fe0 == 0 && high & !0xff8 == 0,
        _ => false,
    }
}
