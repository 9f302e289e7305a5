//! The VT-d remapping unit's register block: offsets and typed decodings.
//!
//! Source: Intel VT-d specification chapter 11 ("Register Descriptions").
//! Section numbers below are those of revision 4.x / 5.0.

use crate::{bit, bits};
use bitflags::bitflags;
#[cfg(any(test, feature = "decode"))]
use core::fmt;

/// Register offsets from the unit's base (VT-d 11.4, Table "Address Mapping for Remapping Hardware Registers").
pub mod offset {
    /// Version register (VT-d 11.4.1), 32-bit.
    pub const VER: usize = 0x00;
    /// Capability register (VT-d 11.4.2), 64-bit.
    pub const CAP: usize = 0x08;
    /// Extended capability register (VT-d 11.4.3), 64-bit.
    pub const ECAP: usize = 0x10;
    /// Global command register (VT-d 11.4.4.1), 32-bit, write-only.
    pub const GCMD: usize = 0x18;
    /// Global status register (VT-d 11.4.4.2), 32-bit.
    pub const GSTS: usize = 0x1c;
    /// Root table address register (VT-d 11.4.5), 64-bit.
    pub const RTADDR: usize = 0x20;
    /// Context command register (VT-d 11.4.6.1), 64-bit.
    pub const CCMD: usize = 0x28;
    /// Fault status register (VT-d 11.4.7.1), 32-bit.
    pub const FSTS: usize = 0x34;
    /// Fault event control register (VT-d 11.4.7.2), 32-bit.
    pub const FECTL: usize = 0x38;
    /// Fault event data register (VT-d 11.4.7.3), 32-bit.
    pub const FEDATA: usize = 0x3c;
    /// Fault event address register (VT-d 11.4.7.4), 32-bit.
    pub const FEADDR: usize = 0x40;
    /// Fault event upper address register (VT-d 11.4.7.5), 32-bit.
    pub const FEUADDR: usize = 0x44;
    /// Invalidation queue head (VT-d 11.4.9.1), 64-bit.
    pub const IQH: usize = 0x80;
    /// Invalidation queue tail (VT-d 11.4.9.2), 64-bit.
    pub const IQT: usize = 0x88;
    /// Invalidation queue address (VT-d 11.4.9.3), 64-bit.
    pub const IQA: usize = 0x90;
    /// Invalidation completion status (VT-d 11.4.9.4), 32-bit.
    pub const ICS: usize = 0x9c;
    /// Invalidation event control (VT-d 11.4.9.5), 32-bit.
    pub const IECTL: usize = 0xa0;
    /// Interrupt remapping table address (VT-d 11.4.29), 64-bit.
    pub const IRTA: usize = 0xb8;
    /// Page request queue head (VT-d 11.4.11.1), 64-bit: offset bits 18:5.
    pub const PQH: usize = 0xc0;
    /// Page request queue tail (VT-d 11.4.11.2), 64-bit: offset bits 18:5.
    pub const PQT: usize = 0xc8;
    /// Page request queue address (VT-d 11.4.11.3), 64-bit: base 63:12, PQS 2:0.
    pub const PQA: usize = 0xd0;
    /// Page request status (VT-d 11.4.11.4), 32-bit: PPR bit 0, PRO bit 1 (RW1C).
    pub const PRS: usize = 0xdc;
    /// Page request event control (VT-d 11.4.11.5), 32-bit: IM bit 31, IP bit 30.
    pub const PECTL: usize = 0xe0;
    /// Page request event data (VT-d 11.4.11.6), 32-bit.
    pub const PEDATA: usize = 0xe4;
    /// Page request event address (VT-d 11.4.11.7), 32-bit.
    pub const PEADDR: usize = 0xe8;
    /// Page request event upper address (VT-d 11.4.11.8), 32-bit.
    pub const PEUADDR: usize = 0xec;
}

/// Page request status bits (PRS_REG, VT-d 11.4.11.4); both write-1-to-clear.
pub mod prs {
    /// PPR: a page request is pending in the queue.
    pub const PPR: u32 = 1 << 0;
    /// PRO: the queue was full and a page request was dropped.
    pub const PRO: u32 = 1 << 1;
}

/// VER: architecture version (VT-d 11.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version(pub u32);

impl Version {
    /// Major version (bits 7:4).
    pub fn major(self) -> u32 {
        (self.0 >> 4) & 0xf
    }
    /// Minor version (bits 3:0).
    pub fn minor(self) -> u32 {
        self.0 & 0xf
    }
}

#[cfg(any(test, feature = "decode"))]
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VT-d {}.{}", self.major(), self.minor())
    }
}

bitflags! {
    /// Supported second-stage page-table depths (CAP.SAGAW, VT-d 11.4.2 bits 12:8).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Sagaw: u8 {
        /// 39-bit AGAW, 3-level tables.
        const LEVEL3_39BIT = 1 << 1;
        /// 48-bit AGAW, 4-level tables.
        const LEVEL4_48BIT = 1 << 2;
        /// 57-bit AGAW, 5-level tables.
        const LEVEL5_57BIT = 1 << 3;
    }
}

/// CAP: hardware capabilities (VT-d 11.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability(pub u64);

impl Capability {
    /// ND, number of domains supported (bits 2:0).
    pub fn nd(self) -> u32 {
        bits(self.0, 2, 0) as u32
    }
    /// Width of domain identifiers in bits: 4 + 2 * ND.
    pub fn domain_id_bits(self) -> u32 {
        4 + 2 * self.nd()
    }
    /// AFL, advanced fault logging (bit 3).
    pub fn afl(self) -> bool {
        bit(self.0, 3)
    }
    /// RWBF, write-buffer flushing required (bit 4).
    pub fn rwbf(self) -> bool {
        bit(self.0, 4)
    }
    /// CM, caching mode: not-present entries may be cached (bit 7).
    pub fn cm(self) -> bool {
        bit(self.0, 7)
    }
    /// SAGAW, supported second-stage depths (bits 12:8).
    pub fn sagaw(self) -> Sagaw {
        Sagaw::from_bits_truncate(bits(self.0, 12, 8) as u8)
    }
    /// MGAW, maximum guest address width in bits (field bits 21:16 plus one).
    pub fn mgaw(self) -> u32 {
        bits(self.0, 21, 16) as u32 + 1
    }
    /// ZLR, zero-length reads (bit 22).
    pub fn zlr(self) -> bool {
        bit(self.0, 22)
    }
    /// Byte offset of the first fault recording register: FRO (bits 33:24) * 16.
    pub fn fault_recording_offset(self) -> usize {
        bits(self.0, 33, 24) as usize * 16
    }
    /// SLLPS bit 0: second-stage 2 MiB pages (bits 37:34).
    pub fn second_stage_2m(self) -> bool {
        bit(self.0, 34)
    }
    /// SLLPS bit 1: second-stage 1 GiB pages.
    pub fn second_stage_1g(self) -> bool {
        bit(self.0, 35)
    }
    /// PSI, page-selective invalidation (bit 39).
    pub fn psi(self) -> bool {
        bit(self.0, 39)
    }
    /// NFR, number of fault recording registers (field bits 47:40 plus one).
    pub fn nfr(self) -> u32 {
        bits(self.0, 47, 40) as u32 + 1
    }
    /// MAMV, maximum address mask value for page-selective invalidation (bits 53:48).
    pub fn mamv(self) -> u32 {
        bits(self.0, 53, 48) as u32
    }
    /// DWD, write draining (bit 54).
    pub fn dwd(self) -> bool {
        bit(self.0, 54)
    }
    /// DRD, read draining (bit 55).
    pub fn drd(self) -> bool {
        bit(self.0, 55)
    }
    /// FL1GP, first-stage 1 GiB pages (bit 56).
    pub fn fl1gp(self) -> bool {
        bit(self.0, 56)
    }
    /// PI, posted interrupts (bit 59).
    pub fn pi(self) -> bool {
        bit(self.0, 59)
    }
    /// FL5LP, first-stage 5-level paging (bit 60).
    pub fn fl5lp(self) -> bool {
        bit(self.0, 60)
    }
    /// ESIRTPS, enhanced SIRTP (bit 62).
    pub fn esirtps(self) -> bool {
        bit(self.0, 62)
    }
    /// ESRTPS, enhanced SRTP: SRTP also invalidates caches (bit 63).
    pub fn esrtps(self) -> bool {
        bit(self.0, 63)
    }
}

#[cfg(any(test, feature = "decode"))]
impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CAP {:#018x}: ND={} ({}-bit DIDs) SAGAW=",
            self.0,
            self.nd(),
            self.domain_id_bits()
        )?;
        let mut first = true;
        for (flag, depth) in [
            (Sagaw::LEVEL3_39BIT, 3),
            (Sagaw::LEVEL4_48BIT, 4),
            (Sagaw::LEVEL5_57BIT, 5),
        ] {
            if self.sagaw().contains(flag) {
                write!(f, "{}{depth}", if first { "" } else { "+" })?;
                first = false;
            }
        }
        write!(
            f,
            "-level MGAW={} FRO={:#x} NFR={} MAMV={} PSI={} CM={} RWBF={} SLLPS(2M={} 1G={}) FL1GP={} DRD={} DWD={} ESRTPS={}",
            self.mgaw(),
            self.fault_recording_offset(),
            self.nfr(),
            self.mamv(),
            u8::from(self.psi()),
            u8::from(self.cm()),
            u8::from(self.rwbf()),
            u8::from(self.second_stage_2m()),
            u8::from(self.second_stage_1g()),
            u8::from(self.fl1gp()),
            u8::from(self.drd()),
            u8::from(self.dwd()),
            u8::from(self.esrtps()),
        )
    }
}

/// ECAP: extended capabilities (VT-d 11.4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtendedCapability(pub u64);

macro_rules! ecap_bits {
    ($($(#[$doc:meta])* $name:ident = $bit:expr;)*) => {
        impl ExtendedCapability {
            $($(#[$doc])* pub fn $name(self) -> bool { bit(self.0, $bit) })*
        }
    };
}

ecap_bits! {
    /// C, page-walk coherency (bit 0).
    coherent = 0;
    /// QI, queued invalidation (bit 1).
    qi = 1;
    /// DT, device-TLB (bit 2).
    dt = 2;
    /// IR, interrupt remapping (bit 3).
    ir = 3;
    /// EIM, extended interrupt mode (bit 4).
    eim = 4;
    /// PT, pass-through (bit 6).
    pt = 6;
    /// SC, snoop control (bit 7).
    sc = 7;
    /// MTS, memory type support (bit 25).
    mts = 25;
    /// NEST, nested translation (bit 26).
    nest = 26;
    /// PRS, page requests (bit 29).
    prs = 29;
    /// ERS, execute requests (bit 30).
    ers = 30;
    /// SRS, supervisor requests (bit 31).
    srs = 31;
    /// NWFS, no write flag (bit 33).
    nwfs = 33;
    /// EAFS, extended accessed flag (bit 34).
    eafs = 34;
    /// PASID support (bit 40).
    pasid = 40;
    /// DIT, device-TLB invalidation throttling (bit 41).
    dit = 41;
    /// PDS, page-request drain (bit 42).
    pds = 42;
    /// SMTS, scalable-mode translation (bit 43).
    smts = 43;
    /// VCS, virtual command (bit 44).
    vcs = 44;
    /// SLADS, second-stage accessed/dirty (bit 45).
    slads = 45;
    /// SLTS, second-stage translation in scalable mode (bit 46).
    slts = 46;
    /// FLTS, first-stage translation in scalable mode (bit 47).
    flts = 47;
    /// SMPWCS, scalable-mode page-walk coherency (bit 48).
    smpwcs = 48;
    /// RPS, RID_PASID (bit 49).
    rps = 49;
    /// ADMS, abort-DMA mode (bit 50).
    adms = 50;
    /// RPRIVS, RID_PRIV (bit 51).
    rprivs = 51;
}

impl ExtendedCapability {
    /// Byte offset of the IOTLB registers: IRO (bits 17:8) * 16.
    pub fn iotlb_register_offset(self) -> usize {
        bits(self.0, 17, 8) as usize * 16
    }
    /// MHMV, handle mask value for interrupt-entry-cache invalidation (bits 23:20).
    pub fn mhmv(self) -> u32 {
        bits(self.0, 23, 20) as u32
    }
    /// PSS field (bits 39:35); PASID width is PSS + 1 bits when PASID is set.
    pub fn pss(self) -> u32 {
        bits(self.0, 39, 35) as u32
    }
    /// Width of supported PASIDs in bits, 0 without PASID support.
    pub fn pasid_bits(self) -> u32 {
        if self.pasid() { self.pss() + 1 } else { 0 }
    }
}

#[cfg(any(test, feature = "decode"))]
impl fmt::Display for ExtendedCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ECAP {:#018x}:", self.0)?;
        let flags: [(&str, bool); 25] = [
            ("C", self.coherent()),
            ("QI", self.qi()),
            ("DT", self.dt()),
            ("IR", self.ir()),
            ("EIM", self.eim()),
            ("PT", self.pt()),
            ("SC", self.sc()),
            ("MTS", self.mts()),
            ("NEST", self.nest()),
            ("PRS", self.prs()),
            ("ERS", self.ers()),
            ("SRS", self.srs()),
            ("NWFS", self.nwfs()),
            ("EAFS", self.eafs()),
            ("PASID", self.pasid()),
            ("DIT", self.dit()),
            ("PDS", self.pds()),
            ("SMTS", self.smts()),
            ("VCS", self.vcs()),
            ("SLADS", self.slads()),
            ("SLTS", self.slts()),
            ("FLTS", self.flts()),
            ("SMPWCS", self.smpwcs()),
            ("RPS", self.rps()),
            ("ADMS", self.adms()),
        ];
        for (name, set) in flags {
            if set {
                write!(f, " {name}")?;
            }
        }
        write!(
            f,
            " IRO={:#x} MHMV={} PSS={}",
            self.iotlb_register_offset(),
            self.mhmv(),
            self.pss()
        )
    }
}

bitflags! {
    /// GCMD / GSTS bits; a command bit and its status bit share a position (VT-d 11.4.4).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct GlobalBits: u32 {
        /// TE / TES: translation enable.
        const TRANSLATION_ENABLE = 1 << 31;
        /// SRTP / RTPS: set root table pointer (one-shot).
        const ROOT_TABLE_POINTER = 1 << 30;
        /// SFL / FLS: set fault log (one-shot).
        const FAULT_LOG = 1 << 29;
        /// EAFL / AFLS: advanced fault logging.
        const ADVANCED_FAULT_LOG = 1 << 28;
        /// WBF / WBFS: write buffer flush (one-shot).
        const WRITE_BUFFER_FLUSH = 1 << 27;
        /// QIE / QIES: queued invalidation enable.
        const QUEUED_INVALIDATION = 1 << 26;
        /// IRE / IRES: interrupt remapping enable.
        const INTERRUPT_REMAPPING = 1 << 25;
        /// SIRTP / IRTPS: set interrupt remapping table pointer (one-shot).
        const INTERRUPT_TABLE_POINTER = 1 << 24;
        /// CFI / CFIS: compatibility format interrupts.
        const COMPATIBILITY_FORMAT = 1 << 23;
    }
}

impl GlobalBits {
    /// The status bits that reflect persistent enables; one-shot bits are
    /// masked out when a GSTS value is written back to GCMD (VT-d 11.4.4.1).
    pub const PERSISTENT: GlobalBits = GlobalBits::TRANSLATION_ENABLE
        .union(GlobalBits::ADVANCED_FAULT_LOG)
        .union(GlobalBits::QUEUED_INVALIDATION)
        .union(GlobalBits::INTERRUPT_REMAPPING)
        .union(GlobalBits::COMPATIBILITY_FORMAT);

    /// Register.bit name for errors.
    pub fn status_name(self) -> &'static str {
        match self {
            Self::TRANSLATION_ENABLE => "GSTS.TES",
            Self::ROOT_TABLE_POINTER => "GSTS.RTPS",
            Self::FAULT_LOG => "GSTS.FLS",
            Self::ADVANCED_FAULT_LOG => "GSTS.AFLS",
            Self::WRITE_BUFFER_FLUSH => "GSTS.WBFS",
            Self::QUEUED_INVALIDATION => "GSTS.QIES",
            Self::INTERRUPT_REMAPPING => "GSTS.IRES",
            Self::INTERRUPT_TABLE_POINTER => "GSTS.IRTPS",
            Self::COMPATIBILITY_FORMAT => "GSTS.CFIS",
            _ => "GSTS",
        }
    }
}

/// RTADDR translation table mode (VT-d 11.4.5, bits 11:10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootTableMode {
    /// TTM=00: legacy root and context entries.
    Legacy,
    /// TTM=01: scalable-mode root and context entries, PASID tables.
    Scalable,
}

impl RootTableMode {
    /// The TTM field value.
    pub fn ttm(self) -> u64 {
        match self {
            Self::Legacy => 0,
            Self::Scalable => 1,
        }
    }
}

/// CCMD bits (VT-d 11.4.6.1).
pub mod ccmd {
    /// ICC: invalidate context cache (bit 63); hardware clears it when done.
    pub const ICC: u64 = 1 << 63;
    /// CIRG=01: global invalidation request (bits 62:61).
    pub const GLOBAL: u64 = 1 << 61;
}

/// IOTLB invalidate register bits (VT-d 11.4.8.1), at ECAP.IRO + 8.
pub mod iotlb_reg {
    /// IVT: invalidate IOTLB (bit 63); hardware clears it when done.
    pub const IVT: u64 = 1 << 63;
    /// IIRG=01: global invalidation request (bits 61:60).
    pub const GLOBAL: u64 = 1 << 60;
    /// DR: drain reads (bit 49).
    pub const DRAIN_READS: u64 = 1 << 49;
    /// DW: drain writes (bit 48).
    pub const DRAIN_WRITES: u64 = 1 << 48;
}

bitflags! {
    /// FSTS: fault status (VT-d 11.4.7.1). Status bits are RW1C.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct FaultStatus: u32 {
        /// PFO: primary fault overflow.
        const PFO = 1 << 0;
        /// PPF: primary pending fault (some FRCD has F set).
        const PPF = 1 << 1;
        /// AFO: advanced fault overflow.
        const AFO = 1 << 2;
        /// APF: advanced pending fault.
        const APF = 1 << 3;
        /// IQE: invalidation queue error.
        const IQE = 1 << 4;
        /// ICE: invalidation completion error.
        const ICE = 1 << 5;
        /// ITE: invalidation time-out error.
        const ITE = 1 << 6;
        /// FRI: fault record index (bits 15:8).
        const FRI = 0xff << 8;
    }
}

impl FaultStatus {
    /// FRI: index of the first fault recording register with a fault.
    pub fn fault_record_index(self) -> u32 {
        (self.bits() >> 8) & 0xff
    }
    /// The RW1C status bits that are set (for writing back to clear).
    pub fn clearable(self) -> FaultStatus {
        self & (Self::PFO | Self::AFO | Self::APF | Self::IQE | Self::ICE | Self::ITE)
    }
}

/// FECTL bits (VT-d 11.4.7.2).
pub mod fectl {
    /// IM: interrupt mask (bit 31); reset value is masked.
    pub const IM: u32 = 1 << 31;
    /// IP: interrupt pending (bit 30).
    pub const IP: u32 = 1 << 30;
}

/// Whether a faulting request read or wrote (FRCD.T1/T2, VT-d 11.4.14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAccess {
    /// A write request (T2:T1 = 00).
    Write,
    /// A read or atomic request (T2:T1 = 01 in rev 4: T1=1).
    Read,
    /// A page request (T2 = 1).
    PageRequest,
}

/// One decoded fault recording register (VT-d 11.4.14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// SID: requester id (bits 79:64).
    pub source_id: u16,
    /// FR: fault reason (bits 103:96); see [`fault_reason_name`].
    pub reason: u8,
    /// FI: page address of the faulting request (bits 63:12).
    pub address: u64,
    /// T1/T2: request type.
    pub access: FaultAccess,
    /// PV when PP (bit 95) is set: the request's PASID (bits 123:104).
    pub pasid: Option<u32>,
    /// PRIV (bit 93): supervisor request.
    pub privileged: bool,
    /// EXE (bit 94): execute request.
    pub execute: bool,
    /// AT (bits 125:124): address type.
    pub address_type: u8,
    /// Index of the recording register it came from.
    pub index: u32,
}

impl FaultRecord {
    /// Decodes the two quadwords of a fault recording register.
    /// Returns `None` when F (bit 127) is clear.
    pub fn decode(index: u32, low: u64, high: u64) -> Option<Self> {
        if !bit(high, 63) {
            return None;
        }
        let access = if bit(high, 28) {
            FaultAccess::PageRequest
        } else if bit(high, 62) {
            FaultAccess::Read
        } else {
            FaultAccess::Write
        };
        Some(Self {
            source_id: bits(high, 15, 0) as u16,
            reason: bits(high, 39, 32) as u8,
            address: low & !0xfff,
            access,
            pasid: bit(high, 31).then(|| bits(high, 59, 40) as u32),
            privileged: bit(high, 29),
            execute: bit(high, 30),
            address_type: bits(high, 61, 60) as u8,
            index,
        })
    }

    /// Encodes the record as (low, high) quadwords with F set (used by the models).
    pub fn encode(&self) -> (u64, u64) {
        let mut high = u64::from(self.source_id) | (u64::from(self.reason) << 32) | (1 << 63);
        match self.access {
            FaultAccess::Read => high |= 1 << 62,
            FaultAccess::PageRequest => high |= 1 << 28,
            FaultAccess::Write => {}
        }
        if let Some(pasid) = self.pasid {
            high |= 1 << 31 | (u64::from(pasid & 0xf_ffff) << 40);
        }
        if self.privileged {
            high |= 1 << 29;
        }
        if self.execute {
            high |= 1 << 30;
        }
        high |= u64::from(self.address_type & 3) << 60;
        (self.address & !0xfff, high)
    }
}

#[cfg(any(test, feature = "decode"))]
impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sid = self.source_id;
        if is_interrupt_fault(self.reason) {
            // Interrupt remapping faults carry the IRTE index in FI's top
            // 16 bits (VT-d 10.4.14) and no address or access type.
            return write!(
                f,
                "interrupt remapping fault: {:02x}:{:02x}.{} IRTE {} reason {:#x} ({})",
                sid >> 8,
                (sid >> 3) & 0x1f,
                sid & 7,
                self.address >> 48,
                self.reason,
                fault_reason_name(self.reason)
            );
        }
        write!(
            f,
            "DMAR fault: {:02x}:{:02x}.{} {:?} addr {:#x} reason {:#x} ({})",
            sid >> 8,
            (sid >> 3) & 0x1f,
            sid & 7,
            self.access,
            self.address,
            self.reason,
            fault_reason_name(self.reason)
        )?;
        if let Some(pasid) = self.pasid {
            write!(f, " pasid {pasid:#x}")?;
        }
        Ok(())
    }
}

/// Whether `reason` is an interrupt remapping fault (VT-d 7.1.3: 0x20..=0x26).
pub fn is_interrupt_fault(reason: u8) -> bool {
    (0x20..=0x26).contains(&reason)
}

/// Names of the non-recoverable fault reasons (VT-d 7.1.3, Table "Fault reasons").
pub fn fault_reason_name(reason: u8) -> &'static str {
    match reason {
        0x01 => "root entry not present",
        0x02 => "context entry not present",
        0x03 => "invalid context entry",
        0x04 => "address beyond MGAW",
        0x05 => "no write permission",
        0x06 => "no read permission",
        0x07 => "cannot access second-stage paging entry",
        0x08 => "cannot access root entry",
        0x09 => "cannot access context entry",
        0x0a => "reserved bits in root entry",
        0x0b => "reserved bits in context entry",
        0x0c => "reserved bits in second-stage paging entry",
        0x0d => "request blocked by context entry TT",
        0x20 => "IR: reserved field set in the interrupt request",
        0x21 => "IR: interrupt index beyond the table",
        0x22 => "IR: interrupt remapping entry not present",
        0x23 => "IR: cannot access the interrupt remapping table",
        0x24 => "IR: reserved field set in the interrupt remapping entry",
        0x25 => "IR: compatibility-format interrupt refused",
        0x26 => "IR: source id does not match the entry",
        0x30 => "SM: invalid root table address",
        0x38 => "SM: cannot access root entry",
        0x39 => "SM: root entry not present",
        0x3a => "SM: reserved bits in root entry",
        0x40 => "SM: cannot access context entry",
        0x41 => "SM: context entry not present",
        0x42 => "SM: reserved bits in context entry",
        0x43 => "SM: invalid context entry",
        0x50 => "SM: cannot access PASID directory entry",
        0x51 => "SM: PASID directory entry not present",
        0x52 => "SM: reserved bits in PASID directory entry",
        0x58 => "SM: cannot access PASID table entry",
        0x59 => "SM: PASID table entry not present",
        0x5a => "SM: reserved bits in PASID table entry",
        0x5b => "SM: invalid PASID table entry (e.g. unsupported PGTT)",
        0x70 => "SM: cannot access first-stage paging entry",
        0x71 => "SM: first-stage paging entry not present",
        0x72 => "SM: reserved bits in first-stage paging entry",
        0x73 => "SM: cannot access first-stage root (invalid FSPTPTR)",
        0x74 => "SM: first-stage entry address beyond MGAW (nested)",
        0x75 => "SM: no read permission for first-stage root (nested)",
        0x76 => "SM: no read permission for first-stage entry (nested)",
        0x77 => "SM: no write permission for first-stage A/D update (nested)",
        0x78 => "SM: cannot access second-stage paging entry",
        0x79 => "SM: second-stage entry not present",
        0x7a => "SM: reserved bits in second-stage paging entry",
        0x7b => "SM: invalid second-stage table pointer",
        0x80 => "SM: non-canonical first-stage address",
        0x81 => "SM: first-stage U/S clear for user request",
        0x83 => "SM: address beyond MGAW",
        0x84 => "SM: second-stage output beyond the address width",
        0x85 => "SM: no write permission",
        0x86 => "SM: no read permission",
        0x87 => "SM: address in the interrupt range",
        _ => "unknown fault reason",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn decodes_qemu_default_cap_ecap() {
        let cap = Capability(0x00d2_008c_222f_0606);
        assert_eq!(cap.nd(), 6);
        assert_eq!(cap.domain_id_bits(), 16);
        assert_eq!(cap.sagaw(), Sagaw::LEVEL3_39BIT | Sagaw::LEVEL4_48BIT);
        assert_eq!(cap.mgaw(), 48);
        assert!(cap.psi());
        assert_eq!(cap.nfr(), 1);
        assert_eq!(cap.fault_recording_offset(), 0x220);
        assert_eq!(cap.mamv(), 18);
        assert!(cap.second_stage_2m() && cap.second_stage_1g());
        assert!(!cap.cm() && !cap.fl1gp());
        assert!(cap.drd() && cap.dwd());
        let text = format!("{cap}");
        assert!(text.contains("ND=6 (16-bit DIDs)"), "{text}");
        assert!(text.contains("SAGAW=3+4-level"), "{text}");
        assert!(text.contains("MGAW=48"), "{text}");
        assert!(text.contains("FRO=0x220"), "{text}");

        let ecap = ExtendedCapability(0x0000_0000_00f0_0f4a);
        assert!(ecap.qi() && ecap.ir() && ecap.pt());
        assert!(!ecap.smts() && !ecap.nest() && !ecap.pasid());
        assert_eq!(ecap.iotlb_register_offset(), 0xf0);
        assert_eq!(ecap.mhmv(), 0xf);
        let text = format!("{ecap}");
        assert!(text.contains(" QI IR PT IRO=0xf0"), "{text}");
    }

    #[test]
    fn decodes_qemu_flts_ecap() {
        let ecap = ExtendedCapability(0x0000_8900_00f0_0f4a);
        assert!(ecap.smts() && ecap.flts() && ecap.pasid());
        assert!(!ecap.slts() && !ecap.nest());
        assert_eq!(ecap.pss(), 0);
        assert_eq!(ecap.pasid_bits(), 1);
        assert_eq!(Version(0x10).major(), 1);
        assert_eq!(format!("{}", Version(0x10)), "VT-d 1.0");
    }

    #[test]
    fn fault_record_round_trip() {
        let rec = FaultRecord {
            source_id: 0x0018,
            reason: 0x5b,
            address: 0x4_0000,
            access: FaultAccess::Read,
            pasid: Some(5),
            privileged: false,
            execute: false,
            address_type: 0,
            index: 0,
        };
        let (lo, hi) = rec.encode();
        assert_eq!(FaultRecord::decode(0, lo, hi), Some(rec));
        assert_eq!(FaultRecord::decode(0, lo, hi & !(1 << 63)), None);
        let text = format!("{rec}");
        assert!(text.contains("00:03.0") && text.contains("0x5b"), "{text}");
    }
}
