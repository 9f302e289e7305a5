//! A simulated SMMUv3 register block that reacts to the driver's writes
//! (CR0/CR0ACK, GBPA, queues, GERROR) and routes DMA through
//! [`super::smmu::SmmuModel`], writing events into the event queue.

use super::smmu::{ConfigTag, Outcome, SmmuModel, SmmuRequest};
use super::{
    Access, DeviceError, DeviceOutcome, RegisterFile, SimMemory, TransactionId, Transactions,
};
use crate::smmuv3::priq::PriRequest;
use crate::smmuv3::queue::{Event, EventKind, FaultClass, opcode};
use crate::smmuv3::regs::{Features, cr0, gbpa, gerror, irq_ctrl, offset};
use crate::{Mmio, PhysMem};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

/// TLB key: VMID, ASID (None for stage-2-only entries), input page number.
type TlbKey = (u16, Option<u16>, u64);
/// TLB entry: output page address, read allowed, write allowed, and
/// whether a write may use it without a walk (false for a writable-clean
/// stage-2 leaf under S2HD: the write must walk to set the dirty state).
type TlbEntry = (u64, bool, bool, bool);
/// A device transaction: the request and whether it is stalled (else it
/// waits for a PRI response).
type Pending = (SmmuRequest, bool);

/// The simulated SMMU.
pub struct SimSmmu<'m> {
    memory: &'m SimMemory,
    regs: RegisterFile,
    features: Features,
    /// QEMU behaviour on a full event queue: GERROR.EVENTQ_ABT_ERR instead of
    /// (as the architecture says) toggling EVENTQ_PROD.OVFLG.
    pub qemu_overflow: bool,
    /// An opcode this SMMU treats as illegal (CERROR_ILL), to test recovery.
    pub reject_opcode: Cell<Option<u8>>,
    /// CR0ACK bits that never follow CR0 (to test bounded polls).
    pub stuck_cr0: Cell<u32>,
    /// The command queue stops moving (CONS stays), so every CMD_SYNC
    /// times out: a wedged SMMU, to test failing closed.
    pub stall_commands: Cell<bool>,
    /// Commands processed, by opcode.
    pub commands: std::cell::RefCell<BTreeMap<u8, u64>>,
    /// Model the configuration cache and TLB (on by default): translations
    /// are reused until a CFGI_* / TLBI_* command covers them.
    pub caching: Cell<bool>,
    /// Configuration cache: (StreamID, SubstreamID) -> configuration.
    config_cache: RefCell<BTreeMap<(u32, Option<u32>), ConfigTag>>,
    /// TLB: (VMID, ASID or None for stage-2-only, input page) -> (output page, read, write).
    tlb: RefCell<BTreeMap<TlbKey, TlbEntry>>,
    /// StreamIDs whose PCIe PRI capability is enabled (the endpoint's side).
    pri_devices: RefCell<BTreeSet<u32>>,
    /// Device transactions waiting for CMD_PRI_RESP or CMD_RESUME.
    transactions: Transactions<Pending>,
    /// Edges raised on the wired interrupt lines: (event queue, PRI
    /// queue). Each entry written while its IRQ_CTRLACK enable is set
    /// raises one (the lines are edge-triggered SPIs on Arm's virt).
    raised: Cell<(u64, u64)>,
}

impl<'m> SimSmmu<'m> {
    /// An SMMU with the given ID registers.
    pub fn new(memory: &'m SimMemory, features: Features) -> Self {
        let regs = RegisterFile::default();
        regs.set(offset::IDR0, features.idr0.0);
        regs.set(offset::IDR1, features.idr1.0);
        regs.set(offset::IDR3, features.idr3.0);
        regs.set(offset::IDR5, features.idr5.0);
        Self {
            memory,
            regs,
            features,
            qemu_overflow: false,
            stuck_cr0: Cell::new(0),
            stall_commands: Cell::new(false),
            reject_opcode: Cell::new(None),
            commands: Default::default(),
            caching: Cell::new(true),
            config_cache: RefCell::new(BTreeMap::new()),
            tlb: RefCell::new(BTreeMap::new()),
            pri_devices: RefCell::new(BTreeSet::new()),
            transactions: Transactions::default(),
            raised: Cell::new((0, 0)),
        }
    }

    /// Edges raised so far on the event-queue interrupt line.
    pub fn event_interrupts(&self) -> u64 {
        self.raised.get().0
    }

    /// Edges raised so far on the PRI-queue interrupt line.
    pub fn page_request_interrupts(&self) -> u64 {
        self.raised.get().1
    }

    /// Raises the line of `enable` (an IRQ_CTRL bit) if it is enabled.
    fn raise(&self, enable: u32) {
        if self.regs.get(offset::IRQ_CTRLACK) & enable == 0 {
            return;
        }
        let (events, requests) = self.raised.get();
        self.raised.set(match enable {
            irq_ctrl::PRIQ => (events, requests + 1),
            _ => (events + 1, requests),
        });
    }

    /// An SMMU per the specification where QEMU lacks features
    /// ([`Features::PER_SPEC`]: PRI, stall, HTTU, 8-bit SubstreamIDs).
    pub fn per_spec(memory: &'m SimMemory) -> Self {
        Self::new(memory, Features::PER_SPEC)
    }

    /// Enables or disables the PCIe PRI capability of `stream_id` (what
    /// the device's driver does in configuration space). A Fail response
    /// disables it again, as PCIe specifies.
    pub fn enable_device_page_requests(&self, stream_id: u32, on: bool) {
        let mut devices = self.pri_devices.borrow_mut();
        if on {
            devices.insert(stream_id);
        } else {
            devices.remove(&stream_id);
        }
    }

    /// A transaction from a device that can wait: a stage-1 translation,
    /// access-flag or permission fault becomes a PRI queue entry when the
    /// SMMU has PRI (IDR0.PRI, CR0.PRIQEN) and the device's PRI is on, or
    /// stalls (an event with Stall=1 and a STAG) when the STE and CD allow
    /// it ([`SmmuModel::stalls`]); the transaction then waits for
    /// CMD_PRI_RESP / CMD_RESUME. Other faults are recorded as [`SimSmmu::dma`] does.
    pub fn device_dma(&self, request: SmmuRequest) -> DeviceOutcome {
        if self.regs.get(offset::CR0ACK) & cr0::SMMUEN == 0 {
            return match self.dma(request) {
                Outcome::Translated(address) => DeviceOutcome::Completed(address),
                _ => DeviceOutcome::Failed(DeviceError::Aborted),
            };
        }
        self.attempt(request, None).0
    }

    /// Where transaction `id` stands now.
    pub fn transaction(&self, id: TransactionId) -> DeviceOutcome {
        self.transactions.outcome(id)
    }

    fn attempt(
        &self,
        request: SmmuRequest,
        waiting: Option<TransactionId>,
    ) -> (DeviceOutcome, u16) {
        let done = |outcome: Outcome| match outcome {
            Outcome::Translated(address) => DeviceOutcome::Completed(address),
            Outcome::Aborted => DeviceOutcome::Failed(DeviceError::Aborted),
            Outcome::Fault(event) => {
                DeviceOutcome::Failed(DeviceError::Fault(u32::from(event.kind.code())))
            }
        };
        if let Some(hit) = self.cached(request) {
            return (done(hit), 0);
        }
        let model = self.model();
        let outcome = model.translate(self.memory, request);
        let event = match outcome {
            Outcome::Translated(output) => {
                if self.caching.get() {
                    self.fill(&model, request, output);
                }
                return (done(outcome), 0);
            }
            Outcome::Aborted => return (done(outcome), 0),
            Outcome::Fault(event) => event,
        };
        let recoverable = !event.stage2
            && event.class == FaultClass::Input
            && matches!(
                event.kind,
                EventKind::Translation | EventKind::Access | EventKind::Permission
            );
        let pri = recoverable
            && self.features.idr0.pri()
            && self.regs.get(offset::CR0ACK) & cr0::PRIQEN != 0
            && self.pri_devices.borrow().contains(&request.stream_id);
        let stall = recoverable && !pri && model.stalls(self.memory, request);
        if !pri && !stall {
            self.record(&event);
            return (done(outcome), 0);
        }
        let (id, tag) = match waiting {
            Some(id) => (id, self.transactions.new_tag(512)),
            None => self.transactions.start((request, stall), 512),
        };
        let result = if stall {
            self.record(&Event {
                stall_tag: Some(tag),
                ..event
            });
            DeviceOutcome::Waiting(id)
        } else if self.write_pri_entry(request, tag) {
            DeviceOutcome::Waiting(id)
        } else {
            DeviceOutcome::Failed(DeviceError::Overflow)
        };
        self.transactions.settle(id, result, tag);
        (result, tag)
    }

    /// Appends a PRI queue entry (SMMUv3 8.1); `false` when the queue is
    /// full (PRIQ_PROD.OVFLG toggled, the request lost).
    fn write_pri_entry(&self, request: SmmuRequest, group: u16) -> bool {
        let base_reg = self.regs.get64(offset::PRIQ_BASE);
        let log2 = (base_reg & 0x1f) as u32;
        let base = base_reg & 0x000f_ffff_ffff_ffe0;
        let prod = self.regs.get(offset::PRIQ_PROD);
        let cons = self.regs.get(offset::PRIQ_CONS);
        let mask = (1u32 << log2) - 1;
        let wrap = 1u32 << log2;
        if (prod & mask) == (cons & mask) && (prod & wrap) != (cons & wrap) {
            if (prod ^ cons) & (1 << 31) == 0 {
                self.regs.set(offset::PRIQ_PROD, prod ^ (1 << 31));
            }
            return false;
        }
        let entry = PriRequest {
            stream_id: request.stream_id,
            substream_id: request.substream_id,
            address: request.address & !0xfff,
            read: request.access == Access::Read,
            write: request.access == Access::Write,
            execute: false,
            privileged: false,
            last: true,
            group_index: group,
        };
        let slot = base + 16 * u64::from(prod & mask);
        for (i, word) in entry.encode().iter().enumerate() {
            self.memory.write_u64(slot + 8 * i as u64, *word);
        }
        let next = ((prod & (2 * wrap - 1)) + 1) & (2 * wrap - 1);
        self.regs.set(offset::PRIQ_PROD, next | (prod & (1 << 31)));
        self.raise(irq_ctrl::PRIQ);
        true
    }

    /// CMD_PRI_RESP (SMMUv3 4.7.1) reaching the device: Success retries
    /// the group's transactions, Deny fails them, Fail (and the reserved
    /// code) fails them and turns the device's PRI off.
    fn pri_response(&self, words: [u64; 2]) {
        let stream_id = (words[0] >> 32) as u32;
        let substream_id =
            (words[0] >> 11 & 1 == 1).then_some(((words[0] >> 12) & 0xf_ffff) as u32);
        let group = (words[1] & 0x1ff) as u16;
        let response = ((words[1] >> 12) & 3) as u8;
        let waiting = self.transactions.waiting(|(request, stalled), tag| {
            !stalled
                && request.stream_id == stream_id
                && request.substream_id == substream_id
                && tag == group
        });
        for (id, (request, _)) in waiting {
            let (outcome, tag) = match response {
                2 => self.attempt(request, Some(id)),
                0 => (
                    DeviceOutcome::Failed(DeviceError::Response(response)),
                    group,
                ),
                _ => {
                    self.enable_device_page_requests(stream_id, false);
                    (
                        DeviceOutcome::Failed(DeviceError::Response(response)),
                        group,
                    )
                }
            };
            self.transactions.settle(id, outcome, tag);
        }
    }

    /// CMD_RESUME (SMMUv3 4.7.2): Retry translates the stalled transaction
    /// again (it may stall again under a new STAG); Terminate and Abort end it.
    fn resume(&self, words: [u64; 2]) {
        let stream_id = (words[0] >> 32) as u32;
        let action = (words[0] >> 12) & 3;
        let stall_tag = words[1] as u16;
        let waiting = self.transactions.waiting(|(request, stalled), tag| {
            *stalled && request.stream_id == stream_id && tag == stall_tag
        });
        for (id, (request, _)) in waiting {
            let (outcome, tag) = if action == 1 {
                self.attempt(request, Some(id))
            } else {
                (DeviceOutcome::Failed(DeviceError::Terminated), stall_tag)
            };
            self.transactions.settle(id, outcome, tag);
        }
    }

    /// QEMU 10.0.2's `virt,iommu=smmuv3`.
    pub fn qemu(memory: &'m SimMemory) -> Self {
        let mut smmu = Self::new(memory, Features::QEMU);
        smmu.qemu_overflow = true;
        smmu
    }

    /// How many commands with `code` were processed.
    pub fn command_count(&self, code: u8) -> u64 {
        self.commands.borrow().get(&code).copied().unwrap_or(0)
    }

    /// The translation model over the programmed stream table.
    pub fn model(&self) -> SmmuModel {
        SmmuModel {
            strtab_base: self.regs.get64(offset::STRTAB_BASE) & 0x000f_ffff_ffff_ffc0,
            strtab_cfg: self.regs.get(offset::STRTAB_BASE_CFG),
            features: self.features,
        }
    }

    /// One device transaction. With SMMUEN=0, GBPA decides (abort or bypass).
    pub fn dma(&self, request: SmmuRequest) -> Outcome {
        let ack = self.regs.get(offset::CR0ACK);
        if ack & cr0::SMMUEN == 0 {
            return if self.regs.get(offset::GBPA) & gbpa::ABORT != 0 {
                Outcome::Aborted
            } else {
                Outcome::Translated(request.address)
            };
        }
        if let Some(hit) = self.cached(request) {
            return hit;
        }
        let model = self.model();
        let outcome = model.translate(self.memory, request);
        match outcome {
            Outcome::Fault(event) => self.record(&event),
            Outcome::Translated(output) if self.caching.get() => self.fill(&model, request, output),
            Outcome::Aborted if self.caching.get() => {
                if let Some(ConfigTag::Abort) = model.config_tag(self.memory, request) {
                    self.config_cache
                        .borrow_mut()
                        .insert((request.stream_id, request.substream_id), ConfigTag::Abort);
                }
            }
            _ => {}
        }
        outcome
    }

    fn cached(&self, request: SmmuRequest) -> Option<Outcome> {
        if !self.caching.get() {
            return None;
        }
        // A configuration-cache miss fetches the STE/CD again (SMMUv3
        // 3.8); TLB entries are tagged by VMID/ASID, not by the
        // configuration, and survive CFGI_* until a TLBI covers them.
        let cached_tag = self
            .config_cache
            .borrow()
            .get(&(request.stream_id, request.substream_id))
            .copied();
        let tag = match cached_tag {
            Some(tag) => tag,
            None => match self.model().config_tag(self.memory, request)? {
                ConfigTag::Translate { vmid, asid } => ConfigTag::Translate { vmid, asid },
                _ => return None,
            },
        };
        match tag {
            ConfigTag::Abort => Some(Outcome::Aborted),
            ConfigTag::Bypass => Some(Outcome::Translated(request.address)),
            ConfigTag::Translate { vmid, asid } => {
                let (page, read, write, write_hit) =
                    *self
                        .tlb
                        .borrow()
                        .get(&(vmid, asid, request.address >> 12))?;
                let allowed = match request.access {
                    Access::Read => read,
                    Access::Write => write && write_hit,
                };
                allowed.then_some(Outcome::Translated(page | (request.address & 0xfff)))
            }
        }
    }

    fn fill(&self, model: &SmmuModel, request: SmmuRequest, output: u64) {
        let Some(tag) = model.config_tag(self.memory, request) else {
            return;
        };
        self.config_cache
            .borrow_mut()
            .insert((request.stream_id, request.substream_id), tag);
        if let ConfigTag::Translate { vmid, asid } = tag {
            let other = match request.access {
                Access::Read => Access::Write,
                Access::Write => Access::Read,
            };
            let other_ok = matches!(
                model.probe(
                    self.memory,
                    SmmuRequest {
                        access: other,
                        ..request
                    }
                ),
                Outcome::Translated(_)
            );
            let (read, write) = match request.access {
                Access::Read => (true, other_ok),
                Access::Write => (other_ok, true),
            };
            // A writable-clean leaf (DBM under S2HD) cached by a read: a
            // later write must walk to mark it dirty (SMMUv3 3.13.2).
            let write_hit = request.access == Access::Write
                || !model.dirty_tracking(self.memory, request.stream_id);
            self.tlb.borrow_mut().insert(
                (vmid, asid, request.address >> 12),
                (output & !0xfff, read, write, write_hit),
            );
        }
    }

    /// Number of cached TLB entries (for tests).
    pub fn cached_translations(&self) -> usize {
        self.tlb.borrow().len()
    }

    /// Applies one command's invalidation to the modelled caches (SMMUv3 4.3, 4.4).
    fn invalidate(&self, words: [u64; 2]) {
        let code = (words[0] & 0xff) as u8;
        let sid = (words[0] >> 32) as u32;
        let vmid = (words[0] >> 32) as u16;
        let asid = (words[0] >> 48) as u16;
        let mut config = self.config_cache.borrow_mut();
        let mut tlb = self.tlb.borrow_mut();
        match code {
            opcode::CFGI_STE | opcode::CFGI_CD | opcode::CFGI_CD_ALL => {
                config.retain(|(s, _), _| *s != sid);
            }
            opcode::CFGI_STE_RANGE => {
                let range = (words[1] & 0x1f) as u32;
                let span = if range >= 31 {
                    u64::MAX
                } else {
                    (2u64 << range) - 1
                };
                config.retain(|(s, _), _| u64::from(*s) & !span != u64::from(sid) & !span);
            }
            opcode::TLBI_NH_ALL => tlb.retain(|(v, a, _), _| *v != vmid || a.is_none()),
            opcode::TLBI_NH_ASID => tlb.retain(|(v, a, _), _| *v != vmid || *a != Some(asid)),
            opcode::TLBI_NH_VA => {
                let page = (words[1] & !0xfff) >> 12;
                tlb.retain(|key, _| *key != (vmid, Some(asid), page));
            }
            opcode::TLBI_S2_IPA => {
                let page = (words[1] & 0x000f_ffff_ffff_f000) >> 12;
                tlb.retain(|key, _| *key != (vmid, None, page));
            }
            opcode::TLBI_S12_VMALL => tlb.retain(|(v, _, _), _| *v != vmid),
            opcode::TLBI_NSNH_ALL => tlb.clear(),
            _ => {}
        }
    }

    fn record(&self, event: &Event) {
        if self.regs.get(offset::CR0ACK) & cr0::EVENTQEN == 0 {
            return;
        }
        let base_reg = self.regs.get64(offset::EVENTQ_BASE);
        let log2 = (base_reg & 0x1f) as u32;
        let base = base_reg & 0x000f_ffff_ffff_ffe0;
        let prod = self.regs.get(offset::EVENTQ_PROD);
        let cons = self.regs.get(offset::EVENTQ_CONS);
        let mask = (1u32 << log2) - 1;
        let wrap = 1u32 << log2;
        let full = (prod & mask) == (cons & mask) && (prod & wrap) != (cons & wrap);
        if full {
            if self.qemu_overflow {
                let active = self.regs.get(offset::GERROR) ^ self.regs.get(offset::GERRORN);
                if active & gerror::EVENTQ_ABT_ERR == 0 {
                    let g = self.regs.get(offset::GERROR);
                    self.regs.set(offset::GERROR, g ^ gerror::EVENTQ_ABT_ERR);
                }
            } else if (prod ^ cons) & (1 << 31) == 0 {
                self.regs.set(offset::EVENTQ_PROD, prod ^ (1 << 31));
            }
            return;
        }
        let slot = base + 32 * u64::from(prod & mask);
        for (i, word) in event.encode().iter().enumerate() {
            self.memory.write_u64(slot + 8 * i as u64, *word);
        }
        let next = ((prod & (2 * wrap - 1)) + 1) & (2 * wrap - 1);
        self.regs
            .set(offset::EVENTQ_PROD, next | (prod & (1 << 31)));
        self.raise(irq_ctrl::EVENTQ);
    }

    fn process_commands(&self) {
        if self.regs.get(offset::CR0ACK) & cr0::CMDQEN == 0 || self.stall_commands.get() {
            return;
        }
        let active = self.regs.get(offset::GERROR) ^ self.regs.get(offset::GERRORN);
        if active & gerror::CMDQ_ERR != 0 {
            return;
        }
        let base_reg = self.regs.get64(offset::CMDQ_BASE);
        let log2 = (base_reg & 0x1f) as u32;
        let base = base_reg & 0x000f_ffff_ffff_ffe0;
        let wrap_mask = (2u32 << log2) - 1;
        let prod = self.regs.get(offset::CMDQ_PROD) & wrap_mask;
        let mut cons = self.regs.get(offset::CMDQ_CONS) & wrap_mask;
        while cons != prod {
            let slot = base + 16 * u64::from(cons & ((1 << log2) - 1));
            let code = (self.memory.read_u64(slot) & 0xff) as u8;
            let known = [
                opcode::PREFETCH_CONFIG,
                opcode::CFGI_STE,
                opcode::CFGI_STE_RANGE,
                opcode::CFGI_CD,
                opcode::CFGI_CD_ALL,
                opcode::TLBI_NH_ALL,
                opcode::TLBI_NH_ASID,
                opcode::TLBI_NH_VA,
                opcode::TLBI_S12_VMALL,
                opcode::TLBI_S2_IPA,
                opcode::TLBI_NSNH_ALL,
                opcode::SYNC,
            ];
            // CMD_PRI_RESP needs IDR0.PRI, CMD_RESUME a stalling SMMU.
            let recoverable = (code == opcode::PRI_RESP && self.features.idr0.pri())
                || (code == opcode::RESUME && self.features.idr0.stall_model() != 1);
            if !(known.contains(&code) || recoverable) || self.reject_opcode.get() == Some(code) {
                // CERROR_ILL: stop at this command, flag GERROR.CMDQ_ERR.
                self.regs.set(offset::CMDQ_CONS, cons | 1 << 24);
                let g = self.regs.get(offset::GERROR);
                self.regs.set(offset::GERROR, g ^ gerror::CMDQ_ERR);
                return;
            }
            *self.commands.borrow_mut().entry(code).or_insert(0) += 1;
            let words = [self.memory.read_u64(slot), self.memory.read_u64(slot + 8)];
            self.invalidate(words);
            match code {
                opcode::PRI_RESP => self.pri_response(words),
                opcode::RESUME => self.resume(words),
                _ => {}
            }
            cons = (cons + 1) & wrap_mask;
        }
        self.regs.set(offset::CMDQ_CONS, cons);
    }
}

impl Mmio for SimSmmu<'_> {
    fn read32(&self, register: usize) -> u32 {
        self.regs.get(register)
    }

    fn write32(&self, register: usize, value: u32) {
        match register {
            offset::IDR0
            | offset::IDR1
            | offset::IDR3
            | offset::IDR5
            | offset::CR0ACK
            | offset::IRQ_CTRLACK
            | offset::GERROR => {}
            offset::CR0 => {
                self.regs.set(offset::CR0, value);
                let stuck = self.stuck_cr0.get();
                let old = self.regs.get(offset::CR0ACK);
                self.regs
                    .set(offset::CR0ACK, (value & !stuck) | (old & stuck));
                self.process_commands();
            }
            offset::GBPA => self.regs.set(offset::GBPA, value & !gbpa::UPDATE),
            offset::IRQ_CTRL => {
                self.regs.set(offset::IRQ_CTRL, value);
                self.regs.set(offset::IRQ_CTRLACK, value);
            }
            offset::GERRORN => {
                self.regs.set(offset::GERRORN, value);
                self.process_commands();
            }
            offset::CMDQ_PROD => {
                self.regs.set(offset::CMDQ_PROD, value);
                self.process_commands();
            }
            offset::CMDQ_CONS => {
                // Writable only while the queue is disabled.
                if self.regs.get(offset::CR0ACK) & cr0::CMDQEN == 0 {
                    self.regs.set(register, value);
                }
            }
            _ => self.regs.set(register, value),
        }
    }
}
