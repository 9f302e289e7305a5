//! SMMUv3 command queue (commands, CMD_SYNC completion) and event queue
//! (records, drain, overflow).
//!
//! Source: SMMUv3 3.5 ("Command and Event queues"), 4 ("Commands"), 7.3
//! ("Event records"), 6.3.25-30 (queue registers). Queue indexes are
//! `log2size` index bits plus one wrap bit.

use super::SmmuError;
use super::regs::{gerror, offset};
use crate::list::RecordList;
use crate::{FrameAllocator, Mmio, PhysAddr, PhysMem, PollLimit};
#[cfg(any(test, feature = "decode"))]
use core::fmt;

/// Command opcodes (SMMUv3 4.1, Table "Commands").
pub mod opcode {
    /// CMD_PREFETCH_CONFIG.
    pub const PREFETCH_CONFIG: u8 = 0x01;
    /// CMD_CFGI_STE.
    pub const CFGI_STE: u8 = 0x03;
    /// CMD_CFGI_STE_RANGE (CFGI_ALL is this with Range=31).
    pub const CFGI_STE_RANGE: u8 = 0x04;
    /// CMD_CFGI_CD.
    pub const CFGI_CD: u8 = 0x05;
    /// CMD_CFGI_CD_ALL.
    pub const CFGI_CD_ALL: u8 = 0x06;
    /// CMD_TLBI_NH_ALL.
    pub const TLBI_NH_ALL: u8 = 0x10;
    /// CMD_TLBI_NH_ASID.
    pub const TLBI_NH_ASID: u8 = 0x11;
    /// CMD_TLBI_NH_VA.
    pub const TLBI_NH_VA: u8 = 0x12;
    /// CMD_TLBI_S12_VMALL.
    pub const TLBI_S12_VMALL: u8 = 0x28;
    /// CMD_TLBI_S2_IPA.
    pub const TLBI_S2_IPA: u8 = 0x2a;
    /// CMD_TLBI_NSNH_ALL.
    pub const TLBI_NSNH_ALL: u8 = 0x30;
    /// CMD_PRI_RESP.
    pub const PRI_RESP: u8 = 0x41;
    /// CMD_RESUME.
    pub const RESUME: u8 = 0x44;
    /// CMD_SYNC.
    pub const SYNC: u8 = 0x46;
}

/// The answer of CMD_PRI_RESP (SMMUv3 4.7.1, Resp field; PCIe PRG Response).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PriResponse {
    /// 0b00 Deny ("Invalid Request"): the device reports an error for the request.
    Deny,
    /// 0b01 Fail ("Response Failure"): the device stops making page requests.
    Fail,
    /// 0b10 Success: the device retries its translation.
    Success,
}

impl PriResponse {
    /// The 2-bit Resp encoding.
    pub fn bits(self) -> u64 {
        match self {
            Self::Deny => 0,
            Self::Fail => 1,
            Self::Success => 2,
        }
    }
}

/// What CMD_RESUME does with a stalled transaction (SMMUv3 4.7.2, Action).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeAction {
    /// 0b00 Terminate: the transaction ends (aborted or RAZ/WI per CD.A).
    Terminate,
    /// 0b01 Retry: the transaction is translated again from the tables.
    Retry,
    /// 0b10 Abort: the transaction ends with an abort to the device.
    Abort,
}

impl ResumeAction {
    /// The 2-bit Action encoding.
    pub fn bits(self) -> u64 {
        match self {
            Self::Terminate => 0,
            Self::Retry => 1,
            Self::Abort => 2,
        }
    }
}

/// One command (SMMUv3 chapter 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// CMD_CFGI_STE (4.3.2): SID 63:32; word 1 Leaf bit 0.
    CfgiSte {
        /// StreamID.
        stream_id: u32,
    },
    /// CMD_CFGI_ALL (4.3.4): CFGI_STE_RANGE with Range=31.
    CfgiAll,
    /// CMD_CFGI_CD (4.3.5): SSID 31:12, SID 63:32; word 1 Leaf bit 0.
    CfgiCd {
        /// StreamID.
        stream_id: u32,
        /// SubstreamID.
        substream_id: u32,
    },
    /// CMD_CFGI_CD_ALL (4.3.6): SID 63:32.
    CfgiCdAll {
        /// StreamID.
        stream_id: u32,
    },
    /// CMD_TLBI_NH_ALL (4.4.1): VMID 47:32; every stage-1 entry of the VMID.
    TlbiNhAll {
        /// VMID.
        vmid: u16,
    },
    /// CMD_TLBI_NH_ASID (4.4.2): ASID 63:48, VMID 47:32.
    TlbiNhAsid {
        /// VMID.
        vmid: u16,
        /// ASID.
        asid: u16,
    },
    /// CMD_TLBI_NH_VA (4.4.3): VMID 47:32, ASID 63:48; word 1 Leaf 0, Address 63:12.
    TlbiNhVa {
        /// VMID.
        vmid: u16,
        /// ASID.
        asid: u16,
        /// Virtual address (page aligned).
        address: u64,
        /// Only leaf entries changed.
        leaf: bool,
    },
    /// CMD_TLBI_S12_VMALL (4.4.6): VMID 47:32.
    TlbiS12Vmall {
        /// VMID.
        vmid: u16,
    },
    /// CMD_TLBI_S2_IPA (4.4.5): VMID 47:32; word 1 Leaf 0, Address 51:12.
    TlbiS2Ipa {
        /// VMID.
        vmid: u16,
        /// IPA (page aligned).
        ipa: u64,
        /// Only leaf entries changed.
        leaf: bool,
    },
    /// CMD_TLBI_NSNH_ALL (4.4.7).
    TlbiNsnhAll,
    /// CMD_SYNC (4.7.3) with CS=0 (completion seen through CMDQ_CONS).
    Sync,
    /// CMD_PRI_RESP (4.7.1): SSV bit 11, SSID 31:12, SID 63:32; word 1
    /// PRG index 8:0, Resp 13:12.
    PriResponse {
        /// StreamID of the requester.
        stream_id: u32,
        /// SubstreamID (PASID) of the request, if it had one.
        substream_id: Option<u32>,
        /// Page request group index.
        group_index: u16,
        /// The answer.
        response: PriResponse,
    },
    /// CMD_RESUME (4.7.2): Action 13:12, SID 63:32; word 1 STAG 15:0.
    Resume {
        /// StreamID of the stalled transaction.
        stream_id: u32,
        /// STAG from the stall event.
        stall_tag: u16,
        /// Retry, terminate or abort.
        action: ResumeAction,
    },
}

impl Command {
    /// The words of `TlbiNhAsid { vmid, asid }`, on their own so that a hot
    /// path gets them without `encode`'s match.
    #[inline(always)]
    pub const fn tlbi_nh_asid(vmid: u16, asid: u16) -> [u64; 2] {
        [
            opcode::TLBI_NH_ASID as u64 | (vmid as u64) << 32 | (asid as u64) << 48,
            0,
        ]
    }

    /// The two 64-bit words of the command (inlinable: a constant
    /// command folds to its words).
    #[inline]
    pub fn encode(&self) -> [u64; 2] {
        let op = |code: u8| u64::from(code);
        match *self {
            Command::CfgiSte { stream_id } => {
                [op(opcode::CFGI_STE) | u64::from(stream_id) << 32, 1]
            }
            Command::CfgiAll => [op(opcode::CFGI_STE_RANGE), 31],
            Command::CfgiCd {
                stream_id,
                substream_id,
            } => [
                op(opcode::CFGI_CD)
                    | u64::from(substream_id & 0xf_ffff) << 12
                    | u64::from(stream_id) << 32,
                1,
            ],
            Command::CfgiCdAll { stream_id } => {
                [op(opcode::CFGI_CD_ALL) | u64::from(stream_id) << 32, 0]
            }
            Command::TlbiNhAll { vmid } => [op(opcode::TLBI_NH_ALL) | u64::from(vmid) << 32, 0],
            Command::TlbiNhAsid { vmid, asid } => Command::tlbi_nh_asid(vmid, asid),
            Command::TlbiNhVa {
                vmid,
                asid,
                address,
                leaf,
            } => [
                op(opcode::TLBI_NH_VA) | u64::from(vmid) << 32 | u64::from(asid) << 48,
                (address & !0xfff) | u64::from(leaf),
            ],
            Command::TlbiS12Vmall { vmid } => {
                [op(opcode::TLBI_S12_VMALL) | u64::from(vmid) << 32, 0]
            }
            Command::TlbiS2Ipa { vmid, ipa, leaf } => [
                op(opcode::TLBI_S2_IPA) | u64::from(vmid) << 32,
                (ipa & 0x000f_ffff_ffff_f000) | u64::from(leaf),
            ],
            Command::TlbiNsnhAll => [op(opcode::TLBI_NSNH_ALL), 0],
            Command::Sync => [op(opcode::SYNC), 0],
            Command::PriResponse {
                stream_id,
                substream_id,
                group_index,
                response,
            } => {
                let ssid = match substream_id {
                    Some(ssid) => 1 << 11 | u64::from(ssid & 0xf_ffff) << 12,
                    None => 0,
                };
                [
                    op(opcode::PRI_RESP) | ssid | u64::from(stream_id) << 32,
                    u64::from(group_index & 0x1ff) | response.bits() << 12,
                ]
            }
            Command::Resume {
                stream_id,
                stall_tag,
                action,
            } => [
                op(opcode::RESUME) | action.bits() << 12 | u64::from(stream_id) << 32,
                u64::from(stall_tag),
            ],
        }
    }
}

/// `Command::Sync.encode()` as a constant (CS = SIG_NONE: completion is
/// seen in CONS), so a hot path need not inline `encode`'s match.
const SYNC_WORDS: [u64; 2] = [opcode::SYNC as u64, 0];

/// A producer or consumer position: `log2size` index bits and a wrap bit.
fn index(position: u32, log2: u32) -> u32 {
    position & ((1 << log2) - 1)
}
fn advance(position: u32, log2: u32) -> u32 {
    (position + 1) & ((2 << log2) - 1)
}

/// The command queue: one 4 KiB page of 256 commands.
#[derive(Debug)]
pub struct CommandQueue {
    base: PhysAddr,
    log2: u32,
    /// `(2 << log2) - 1`: a position's index bits and wrap bit, computed
    /// once for the hot path.
    positions: u32,
    producer: u32,
    /// Commands written so far, CMD_SYNCs included.
    pub commands_issued: u64,
    /// CMD_SYNC completions waited for.
    pub syncs_issued: u64,
}

impl CommandQueue {
    /// Allocates the queue (log2 entries capped by SMMU_IDR1.CMDQS).
    pub fn new(alloc: &mut impl FrameAllocator, cmdqs: u32) -> Result<Self, SmmuError> {
        let base = alloc.alloc_zeroed_frame().ok_or(SmmuError::OutOfMemory {
            what: "command queue",
        })?;
        let log2 = 8.min(cmdqs);
        Ok(Self {
            base,
            log2,
            positions: (2 << log2) - 1,
            producer: 0,
            commands_issued: 0,
            syncs_issued: 0,
        })
    }

    /// SMMU_CMDQ_BASE value: RA (bit 62) | ADDR 51:5 | LOG2SIZE 4:0 (6.3.25).
    pub fn base_register(&self) -> u64 {
        1 << 62 | (self.base & 0x000f_ffff_ffff_ffe0) | u64::from(self.log2)
    }

    /// Resets the producer index (queue just (re)programmed with PROD=CONS=0).
    pub fn reset(&mut self) {
        self.producer = 0;
    }

    fn full(&self, consumer: u32) -> bool {
        index(self.producer, self.log2) == index(consumer, self.log2)
            && (self.producer ^ consumer) >> self.log2 & 1 == 1
    }

    fn consumer(mmio: &impl Mmio) -> u32 {
        mmio.read32(offset::CMDQ_CONS)
    }

    fn check_error(&self, mmio: &impl Mmio, mem: &impl PhysMem) -> Result<(), SmmuError> {
        let active = mmio.read32(offset::GERROR) ^ mmio.read32(offset::GERRORN);
        if active & gerror::CMDQ_ERR == 0 {
            return Ok(());
        }
        // The SMMU stopped at CONS; replace the bad command with CMD_SYNC and
        // acknowledge so the queue can move again (SMMUv3 7.1).
        let consumer = Self::consumer(mmio);
        let code = (consumer >> 24) & 0x7f;
        let slot = self.slot(consumer);
        let bad_opcode = (mem.read_u64(slot) & 0xff) as u8;
        let sync = SYNC_WORDS;
        mem.write_u64(slot + 8, sync[1]);
        mem.write_u64(slot, sync[0]);
        let gerrorn = mmio.read32(offset::GERRORN);
        mmio.write32(offset::GERRORN, gerrorn ^ gerror::CMDQ_ERR);
        Err(SmmuError::CommandError {
            code,
            opcode: bad_opcode,
        })
    }

    /// Writes `commands` and a CMD_SYNC, publishes PROD, and waits (bounded)
    /// until CONS has passed the CMD_SYNC, i.e. every command completed.
    ///
    /// CONS is read once up front and again only while the queue looks
    /// full (it only moves forward, so an old value can only make the queue
    /// look fuller than it is).
    pub fn submit(
        &mut self,
        mmio: &impl Mmio,
        mem: &impl PhysMem,
        commands: impl IntoIterator<Item = Command>,
        limit: PollLimit,
    ) -> Result<(), SmmuError> {
        let mut consumer = Self::consumer(mmio);
        for command in commands.into_iter().chain(core::iter::once(Command::Sync)) {
            self.push(mmio, mem, &mut consumer, command.encode(), limit)?;
        }
        self.complete(mmio, mem, limit)
    }

    /// [`CommandQueue::submit`] of one command, given as its encoded
    /// `words`: the same queue writes and the same wait, without the
    /// iterator (an invalidation's hot path: `IoUserTable.Invalidate` is
    /// one TLBI and its CMD_SYNC).
    ///
    /// When CONS shows room for both, the two entries are written after
    /// one test and PROD moves by two; otherwise each is pushed as
    /// [`CommandQueue::submit`] does, waiting for room.
    #[inline(always)]
    pub fn submit_one(
        &mut self,
        mmio: &impl Mmio,
        mem: &impl PhysMem,
        words: [u64; 2],
        limit: PollLimit,
    ) -> Result<(), SmmuError> {
        let consumer = Self::consumer(mmio);
        if !self.room_for_two(consumer) {
            return self.submit_one_waiting(mmio, mem, consumer, words, limit);
        }
        let sync = SYNC_WORDS;
        let first = self.slot(self.producer);
        let second = self.slot(self.producer + 1);
        mem.write_u64(first, words[0]);
        mem.write_u64(first + 8, words[1]);
        mem.write_u64(second, sync[0]);
        mem.write_u64(second + 8, sync[1]);
        self.producer = (self.producer + 2) & self.positions;
        self.commands_issued += 2;
        self.complete(mmio, mem, limit)
    }

    /// [`CommandQueue::submit_one`] when CONS showed no room for both
    /// entries: each pushed as [`CommandQueue::submit`] does, waiting for
    /// room. Out of line, so the common case stays one straight path.
    #[cold]
    #[inline(never)]
    fn submit_one_waiting(
        &mut self,
        mmio: &impl Mmio,
        mem: &impl PhysMem,
        mut consumer: u32,
        words: [u64; 2],
        limit: PollLimit,
    ) -> Result<(), SmmuError> {
        self.push(mmio, mem, &mut consumer, words, limit)?;
        self.push(mmio, mem, &mut consumer, SYNC_WORDS, limit)?;
        self.complete(mmio, mem, limit)
    }

    /// Whether two entries are free by `consumer` (a CONS value, error
    /// bits ignored): the entries between CONS and PROD, whose wrap bits
    /// make the difference exact modulo twice the size, are at most the
    /// size less two. (`positions / 2` is the size less one.) A CONS past
    /// PROD (never from a working unit) reads as a queue too full, so the
    /// pushes' own tests decide.
    #[inline(always)]
    fn room_for_two(&self, consumer: u32) -> bool {
        self.producer.wrapping_sub(consumer) & self.positions < self.positions / 2
    }

    /// The address of the entry at position `position` (any wrap bit).
    fn slot(&self, position: u32) -> PhysAddr {
        self.base + 16 * u64::from(position & (self.positions / 2))
    }

    /// Writes one encoded command at PROD (not yet published), first
    /// waiting (bounded) for room if the queue looks full by `consumer`,
    /// which it updates.
    #[inline(always)]
    fn push(
        &mut self,
        mmio: &impl Mmio,
        mem: &impl PhysMem,
        consumer: &mut u32,
        words: [u64; 2],
        limit: PollLimit,
    ) -> Result<(), SmmuError> {
        if self.full(*consumer) {
            mmio.write32(offset::CMDQ_PROD, self.producer);
            let mut error = Ok(());
            let drained = limit.wait(|| {
                *consumer = Self::consumer(mmio);
                if !self.full(*consumer) {
                    return true;
                }
                error = self.check_error(mmio, mem);
                error.is_err()
            });
            error?;
            if !drained {
                return Err(SmmuError::Timeout {
                    register: "SMMU_CMDQ_CONS",
                    bit: "RD (queue full)",
                });
            }
        }
        let slot = self.slot(self.producer);
        mem.write_u64(slot, words[0]);
        mem.write_u64(slot + 8, words[1]);
        self.producer = advance(self.producer, self.log2);
        self.commands_issued += 1;
        Ok(())
    }

    /// Publishes PROD and waits (bounded) until CONS has passed the last
    /// command written (a CMD_SYNC). CONS is read first: the SMMU stops at
    /// a command in error (SMMUv3 7.1), so CONS at PROD means every command
    /// completed without one; GERROR is read only while CONS is short.
    ///
    /// The first read is made here (a unit that completes at once, as
    /// QEMU's does inside the PROD write, is seen by it), the bounded poll
    /// out of line.
    #[inline(always)]
    fn complete(
        &mut self,
        mmio: &impl Mmio,
        mem: &impl PhysMem,
        limit: PollLimit,
    ) -> Result<(), SmmuError> {
        mmio.write32(offset::CMDQ_PROD, self.producer);
        // Counted after the doorbell: next to the caller's count of
        // commands, the compiler paired the two additions into vector
        // registers through the stack (19 instructions on aarch64).
        self.syncs_issued += 1;
        if Self::consumer(mmio) & self.positions == self.producer {
            return Ok(());
        }
        self.wait_for_completion(mmio, mem, limit)
    }

    /// [`CommandQueue::complete`]'s bounded poll of CONS.
    #[cold]
    #[inline(never)]
    fn wait_for_completion(
        &mut self,
        mmio: &impl Mmio,
        mem: &impl PhysMem,
        limit: PollLimit,
    ) -> Result<(), SmmuError> {
        let target = self.producer;
        let mut error = Ok(());
        let done = limit.wait(|| {
            if Self::consumer(mmio) & self.positions == target {
                return true;
            }
            error = self.check_error(mmio, mem);
            error.is_err()
        });
        error?;
        if done {
            Ok(())
        } else {
            Err(SmmuError::Timeout {
                register: "SMMU_CMDQ_CONS",
                bit: "RD (CMD_SYNC completion)",
            })
        }
    }
}

/// Event record types (SMMUv3 7.3, Table "Event records").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// 0x01 F_UUT: unsupported upstream transaction.
    UnsupportedTransaction,
    /// 0x02 C_BAD_STREAMID: StreamID out of range or L1 descriptor invalid.
    BadStreamId,
    /// 0x03 F_STE_FETCH: external abort fetching the STE.
    SteFetch,
    /// 0x04 C_BAD_STE: STE invalid (V=0) or ILLEGAL.
    BadSte,
    /// 0x05 F_BAD_ATS_TREQ.
    BadAtsRequest,
    /// 0x06 F_STREAM_DISABLED.
    StreamDisabled,
    /// 0x07 F_TRANSL_FORBIDDEN.
    TranslationForbidden,
    /// 0x08 C_BAD_SUBSTREAMID.
    BadSubstreamId,
    /// 0x09 F_CD_FETCH.
    CdFetch,
    /// 0x0A C_BAD_CD.
    BadCd,
    /// 0x0B F_WALK_EABT: external abort during a table walk.
    WalkAbort,
    /// 0x10 F_TRANSLATION: no valid descriptor.
    Translation,
    /// 0x11 F_ADDR_SIZE: address beyond the configured size.
    AddressSize,
    /// 0x12 F_ACCESS: access flag clear.
    Access,
    /// 0x13 F_PERMISSION.
    Permission,
    /// 0x20 F_TLB_CONFLICT.
    TlbConflict,
    /// 0x21 F_CFG_CONFLICT.
    ConfigConflict,
    /// 0x24 E_PAGE_REQUEST.
    PageRequest,
    /// 0x25 F_VMS_FETCH.
    VmsFetch,
    /// A code this decoder does not know.
    Other(u8),
}

impl EventKind {
    /// The event type code.
    pub fn code(self) -> u8 {
        match self {
            Self::UnsupportedTransaction => 0x01,
            Self::BadStreamId => 0x02,
            Self::SteFetch => 0x03,
            Self::BadSte => 0x04,
            Self::BadAtsRequest => 0x05,
            Self::StreamDisabled => 0x06,
            Self::TranslationForbidden => 0x07,
            Self::BadSubstreamId => 0x08,
            Self::CdFetch => 0x09,
            Self::BadCd => 0x0a,
            Self::WalkAbort => 0x0b,
            Self::Translation => 0x10,
            Self::AddressSize => 0x11,
            Self::Access => 0x12,
            Self::Permission => 0x13,
            Self::TlbConflict => 0x20,
            Self::ConfigConflict => 0x21,
            Self::PageRequest => 0x24,
            Self::VmsFetch => 0x25,
            Self::Other(code) => code,
        }
    }

    /// The kind for a type code.
    pub fn from_code(code: u8) -> Self {
        [
            Self::UnsupportedTransaction,
            Self::BadStreamId,
            Self::SteFetch,
            Self::BadSte,
            Self::BadAtsRequest,
            Self::StreamDisabled,
            Self::TranslationForbidden,
            Self::BadSubstreamId,
            Self::CdFetch,
            Self::BadCd,
            Self::WalkAbort,
            Self::Translation,
            Self::AddressSize,
            Self::Access,
            Self::Permission,
            Self::TlbConflict,
            Self::ConfigConflict,
            Self::PageRequest,
            Self::VmsFetch,
        ]
        .into_iter()
        .find(|kind| kind.code() == code)
        .unwrap_or(Self::Other(code))
    }

    /// The architecture's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::UnsupportedTransaction => "F_UUT",
            Self::BadStreamId => "C_BAD_STREAMID",
            Self::SteFetch => "F_STE_FETCH",
            Self::BadSte => "C_BAD_STE",
            Self::BadAtsRequest => "F_BAD_ATS_TREQ",
            Self::StreamDisabled => "F_STREAM_DISABLED",
            Self::TranslationForbidden => "F_TRANSL_FORBIDDEN",
            Self::BadSubstreamId => "C_BAD_SUBSTREAMID",
            Self::CdFetch => "F_CD_FETCH",
            Self::BadCd => "C_BAD_CD",
            Self::WalkAbort => "F_WALK_EABT",
            Self::Translation => "F_TRANSLATION",
            Self::AddressSize => "F_ADDR_SIZE",
            Self::Access => "F_ACCESS",
            Self::Permission => "F_PERMISSION",
            Self::TlbConflict => "F_TLB_CONFLICT",
            Self::ConfigConflict => "F_CFG_CONFLICT",
            Self::PageRequest => "E_PAGE_REQUEST",
            Self::VmsFetch => "F_VMS_FETCH",
            Self::Other(_) => "unknown event",
        }
    }

    /// Whether the record carries an input address and IPA (translation faults).
    pub fn is_translation_fault(self) -> bool {
        matches!(
            self,
            Self::Translation
                | Self::AddressSize
                | Self::Access
                | Self::Permission
                | Self::WalkAbort
        )
    }
}

/// Which fetch a stage-2 fault happened on (event CLASS, bits 105:104).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultClass {
    /// 0b00: fetching a CD.
    ContextDescriptor,
    /// 0b01: fetching a stage-1 table descriptor.
    TranslationTable,
    /// 0b10: translating the input address itself.
    Input,
}

/// One decoded 32-byte event record (SMMUv3 7.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Type (word 0 bits 7:0).
    pub kind: EventKind,
    /// StreamID (word 0 bits 63:32).
    pub stream_id: u32,
    /// SubstreamID when SSV (word 0 bit 11; SSID bits 31:12).
    pub substream_id: Option<u32>,
    /// Translation faults: read (RnW=1, word 1 bit 35) or write.
    pub read: bool,
    /// Translation faults: raised by stage 2 (word 1 bit 39).
    pub stage2: bool,
    /// Translation faults: CLASS (word 1 bits 41:40).
    pub class: FaultClass,
    /// Translation faults: input address (word 2). Fetch faults: 0.
    pub input_address: u64,
    /// Translation faults: IPA (word 3 bits 51:12); fetch faults: fetch address (word 3 bits 51:3).
    pub address: u64,
    /// A stalled transaction's STAG (word 1 bits 15:0) when Stall (word 1
    /// bit 31) is set: it waits for CMD_RESUME with this tag.
    pub stall_tag: Option<u16>,
}

impl Event {
    /// Decodes a record.
    pub fn decode(words: [u64; 4]) -> Event {
        let kind = EventKind::from_code(words[0] as u8);
        let ssv = words[0] >> 11 & 1 == 1;
        let class = match (words[1] >> 40) & 3 {
            0 => FaultClass::ContextDescriptor,
            1 => FaultClass::TranslationTable,
            _ => FaultClass::Input,
        };
        let address = if kind.is_translation_fault() {
            words[3] & 0x000f_ffff_ffff_f000
        } else {
            words[3] & 0x000f_ffff_ffff_fff8
        };
        Event {
            kind,
            stream_id: (words[0] >> 32) as u32,
            substream_id: ssv.then_some(((words[0] >> 12) & 0xf_ffff) as u32),
            read: words[1] >> 35 & 1 == 1,
            stage2: words[1] >> 39 & 1 == 1,
            class,
            input_address: words[2],
            address,
            stall_tag: (words[1] >> 31 & 1 == 1).then_some(words[1] as u16),
        }
    }

    /// Encodes the record (used by the simulated SMMU).
    pub fn encode(&self) -> [u64; 4] {
        let mut word0 = u64::from(self.kind.code()) | u64::from(self.stream_id) << 32;
        if let Some(ssid) = self.substream_id {
            word0 |= 1 << 11 | u64::from(ssid & 0xf_ffff) << 12;
        }
        let class = match self.class {
            FaultClass::ContextDescriptor => 0,
            FaultClass::TranslationTable => 1,
            FaultClass::Input => 2,
        };
        let stall = match self.stall_tag {
            Some(tag) => 1 << 31 | u64::from(tag),
            None => 0,
        };
        let word1 = u64::from(self.read) << 35 | u64::from(self.stage2) << 39 | class << 40 | stall;
        let address_mask = if self.kind.is_translation_fault() {
            0x000f_ffff_ffff_f000
        } else {
            0x000f_ffff_ffff_fff8
        };
        [
            word0,
            word1,
            self.input_address,
            self.address & address_mask,
        ]
    }
}

#[cfg(any(test, feature = "decode"))]
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SMMU event {} ({:#04x}) sid {:#x}",
            self.kind.name(),
            self.kind.code(),
            self.stream_id
        )?;
        if let Some(ssid) = self.substream_id {
            write!(f, " ssid {ssid:#x}")?;
        }
        if let Some(tag) = self.stall_tag {
            write!(f, " stalled stag {tag:#x}")?;
        }
        if self.kind.is_translation_fault() {
            write!(
                f,
                " {} addr {:#x} ipa {:#x} stage {} class {:?}",
                if self.read { "read" } else { "write" },
                self.input_address,
                self.address,
                if self.stage2 { 2 } else { 1 },
                self.class
            )?;
        } else if self.address != 0 {
            write!(f, " fetch {:#x}", self.address)?;
        }
        Ok(())
    }
}

/// Up to 32 events from one drain, plus what was lost.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EventDrain {
    /// The records read (oldest first); `events.dropped` counts records read but not kept.
    pub events: RecordList<Event, 32>,
    /// The SMMU overflowed the queue (EVENTQ_PROD.OVFLG toggled) and lost events.
    pub overflowed: bool,
    /// GERROR bits that were active and have been acknowledged.
    pub global_errors: u32,
}

/// The event queue: one 4 KiB page of 128 records.
#[derive(Debug)]
pub struct EventQueue {
    base: PhysAddr,
    log2: u32,
    consumer: u32,
    overflow_ack: u32,
}

impl EventQueue {
    /// Allocates the queue (log2 entries capped by SMMU_IDR1.EVENTQS).
    pub fn new(alloc: &mut impl FrameAllocator, eventqs: u32) -> Result<Self, SmmuError> {
        let base = alloc.alloc_zeroed_frame().ok_or(SmmuError::OutOfMemory {
            what: "event queue",
        })?;
        Ok(Self {
            base,
            log2: 7.min(eventqs),
            consumer: 0,
            overflow_ack: 0,
        })
    }

    /// SMMU_EVENTQ_BASE value: WA (bit 62) | ADDR 51:5 | LOG2SIZE 4:0 (6.3.28).
    pub fn base_register(&self) -> u64 {
        1 << 62 | (self.base & 0x000f_ffff_ffff_ffe0) | u64::from(self.log2)
    }

    /// Number of records the queue holds.
    pub fn capacity(&self) -> u32 {
        1 << self.log2
    }

    /// Resets the consumer index (queue just (re)programmed with PROD=CONS=0).
    pub fn reset(&mut self) {
        self.consumer = 0;
        self.overflow_ack = 0;
    }

    /// Reads every record between CONS and PROD, publishes the new CONS and
    /// acknowledges an overflow (CONS.OVACKFLG := PROD.OVFLG, 6.3.30).
    pub fn drain(&mut self, mmio: &impl Mmio, mem: &impl PhysMem, into: &mut EventDrain) {
        let producer_register = mmio.read32(offset::EVENTQ_PROD);
        let overflow_flag = producer_register & (1 << 31);
        if overflow_flag != self.overflow_ack {
            into.overflowed = true;
            self.overflow_ack = overflow_flag;
        }
        let producer = producer_register & ((2 << self.log2) - 1);
        // Bounded by the queue size: a misbehaving PROD cannot loop us.
        for _ in 0..self.capacity() {
            if self.consumer == producer {
                break;
            }
            let slot = self.base + 32 * u64::from(index(self.consumer, self.log2));
            let mut words = [0u64; 4];
            for (i, word) in words.iter_mut().enumerate() {
                *word = mem.read_u64(slot + 8 * i as u64);
            }
            into.events.push(Event::decode(words));
            self.consumer = advance(self.consumer, self.log2);
        }
        mmio.write32(offset::EVENTQ_CONS, self.consumer | self.overflow_ack);
    }
}
