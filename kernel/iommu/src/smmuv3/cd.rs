//! Context descriptors (CDs), built only from validated parameters.
//!
//! Source: SMMUv3 5.4 ("Context Descriptor"). In nested mode the CD table
//! address and TTB0 are IPAs, translated by the STE's stage 2.

use super::regs::{Features, address_size_encoding};
use crate::PhysAddr;
use core::fmt;

/// Parameters of a stage-1 context (VMSAv8-64, 4 KiB granule, TTB0 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CdParams {
    /// ASID tagging the TLB entries (CD.ASID).
    pub asid: u16,
    /// Stage-1 root table address, 4 KiB aligned (CD.TTB0); an IPA in nested mode.
    pub ttb0: PhysAddr,
    /// Input (IOVA) size in bits, 25..=48 (CD.T0SZ = 64 - va_bits).
    pub va_bits: u32,
    /// Output size of stage 1 in bits (CD.IPS): 32, 36, 40, 42, 44 or 48.
    pub output_bits: u32,
    /// Memory attribute indirection register value (CD.MAIR, word 3).
    pub mair: u64,
}

/// Why context-descriptor parameters were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CdError {
    /// Stage 1 not advertised by SMMU_IDR0.S1P / AArch64 tables.
    Stage1NotSupported,
    /// ASID wider than SMMU_IDR0.ASID16 allows.
    AsidTooWide(u16),
    /// va_bits outside 25..=48 (T0SZ 16..=39, what QEMU accepts).
    InputSize(u32),
    /// output_bits not an architected size or above SMMU_IDR5.OAS.
    OutputSize(u32),
    /// TTB0 not 4 KiB aligned or beyond the output size.
    TableAddress(u64),
    /// CD.S (stall) on an SMMU that cannot stall (IDR0.STALL_MODEL=0b01).
    StallNotSupported,
    /// No frame for a 2-level CD table's leaf.
    OutOfMemory,
}

impl ktext::Text for CdError {
    fn write(&self, out: &mut dyn ktext::Sink) {
        use ktext::put;
        match self {
            Self::Stage1NotSupported => put!(out, "CD: stage 1 (AArch64) is not supported"),
            Self::AsidTooWide(a) => {
                put!(out, "CD: ASID {:#x} is wider than the SMMU supports", *a)
            }
            Self::InputSize(v) => put!(out, "CD: {}-bit input size is outside 25..=48", v),
            Self::OutputSize(o) => put!(out, "CD: {}-bit output size is not supported", o),
            Self::TableAddress(t) => {
                put!(out, "CD: TTB0 {:#x} is misaligned or too large", *t)
            }
            Self::OutOfMemory => put!(out, "CD: out of frames for a CD leaf table"),
            Self::StallNotSupported => put!(
                out,
                "CD: stall requested but SMMU_IDR0.STALL_MODEL is terminate-only"
            ),
        }
    }
}

impl fmt::Display for CdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ktext::display(self, f)
    }
}

/// One 64-byte context descriptor (SMMUv3 5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cd(pub [u64; 8]);

impl Cd {
    /// An invalid CD (V=0): translations using it raise C_BAD_CD.
    pub const fn invalid() -> Cd {
        Cd([0; 8])
    }

    /// Builds a valid CD: T0SZ, TG0=4K, IR0/OR0=WBRA, SH0=ISH, EPD1=1 (no TTB1),
    /// V=1, IPS, AA64=1, R=1 (record faults), A=1 (abort on fault, required by
    /// IDR0.TERM_MODEL=1), ASET=1, ASID; TTB0; MAIR. Word 0 bit positions per
    /// SMMUv3 5.4: T0SZ 5:0, TG0 7:6, IR0 9:8, OR0 11:10, SH0 13:12, EPD0 14,
    /// EPD1 30, V 31, IPS 34:32, AA64 41, R 45, A 46, ASET 47, ASID 63:48.
    pub fn new(params: &CdParams, features: &Features) -> Result<Cd, CdError> {
        if !features.idr0.s1p() || !features.idr0.aarch64_tables() {
            return Err(CdError::Stage1NotSupported);
        }
        if !features.idr0.asid16() && params.asid > 0xff {
            return Err(CdError::AsidTooWide(params.asid));
        }
        if !(25..=48).contains(&params.va_bits) {
            return Err(CdError::InputSize(params.va_bits));
        }
        let ips = address_size_encoding(params.output_bits)
            .filter(|_| params.output_bits <= features.idr5.oas_bits() && params.output_bits <= 48)
            .ok_or(CdError::OutputSize(params.output_bits))?;
        if params.ttb0 & 0xfff != 0 || params.ttb0 >> params.output_bits != 0 {
            return Err(CdError::TableAddress(params.ttb0));
        }
        let word0 = u64::from(64 - params.va_bits)
            | 1 << 8
            | 1 << 10
            | 3 << 12
            | 1 << 30
            | 1 << 31
            | u64::from(ips) << 32
            | 1 << 41
            | 1 << 45
            | 1 << 46
            | 1 << 47
            | u64::from(params.asid) << 48;
        Ok(Cd([word0, params.ttb0, 0, params.mair, 0, 0, 0, 0]))
    }

    /// The CD with CD.S (word 0 bit 44) on: a stage-1 translation fault
    /// stalls the transaction (an event with Stall=1 and a STAG) until
    /// CMD_RESUME retries or ends it (SMMUv3 3.12.2). The STE must leave
    /// S1STALLD clear. Refused where IDR0.STALL_MODEL is terminate-only (QEMU).
    pub fn with_stall(mut self, features: &Features) -> Result<Cd, CdError> {
        if features.idr0.stall_model() == 1 {
            return Err(CdError::StallNotSupported);
        }
        self.0[0] |= 1 << 44;
        Ok(self)
    }

    /// V (word 0 bit 31).
    pub fn valid(&self) -> bool {
        self.0[0] >> 31 & 1 == 1
    }
    /// ASID (word 0 bits 63:48).
    pub fn asid(&self) -> u16 {
        (self.0[0] >> 48) as u16
    }
    /// TTB0 (word 1 bits 51:4).
    pub fn ttb0(&self) -> u64 {
        self.0[1] & 0x000f_ffff_ffff_fff0
    }
}

/// SubstreamID bits one 4 KiB leaf of a 2-level CD table resolves (64 CDs; S1Fmt=1).
pub const CD_SPLIT: u32 = 6;

/// Writes `cd` as SubstreamID `substream`'s descriptor in the 2-level CD
/// table at `l1_table` (S1Fmt=1, SMMUv3 5.3): allocates the 4 KiB leaf on
/// first use and points its L1CD (V bit 0, L2Ptr 51:12) at it. Words 1..7
/// are written before word 0 (V). The caller issues CMD_CFGI_CD. The L1
/// table must be large enough for `substream` (8 bytes per 64 SubstreamIDs).
pub fn write_two_level(
    mem: &impl crate::PhysMem,
    alloc: &mut impl crate::FrameAllocator,
    l1_table: PhysAddr,
    substream: u32,
    cd: &Cd,
) -> Result<(), CdError> {
    let slot = l1_table + 8 * u64::from(substream >> CD_SPLIT);
    let l1 = mem.read_u64(slot);
    let leaf = if l1 & 1 == 1 {
        l1 & 0x000f_ffff_ffff_f000
    } else {
        let leaf = alloc.alloc_zeroed_frame().ok_or(CdError::OutOfMemory)?;
        mem.write_u64(slot, leaf | 1);
        leaf
    };
    let at = leaf + 64 * u64::from(substream & ((1 << CD_SPLIT) - 1));
    for (i, word) in cd.0.iter().enumerate().skip(1) {
        mem.write_u64(at + 8 * i as u64, *word);
    }
    mem.write_u64(at, cd.0[0]);
    Ok(())
}

/// The MAIR value this driver uses: Attr0 = normal write-back, Attr1 = device-nGnRE.
pub const DEFAULT_MAIR: u64 = 0x04ff;

/// MAIR of the CD the kernel writes for a driver's stage-1 table (a
/// "nest"): every one of the eight attributes is 0xFF, Normal inner and
/// outer Write-Back (read/write-allocate, non-transient). A driver's
/// stage-1 entry picks an index (AttrIndx) but cannot pick a memory type:
/// Device or Non-cacheable attributes on RAM would let its device read
/// stale DRAM or write around the CPU's caches on a system whose DMA is
/// not coherent for such accesses (kernel README, "Memory attributes a
/// driver chooses"). Where SMMU_IDR3.FWB, stage 2 forces Write-Back as well.
pub const NEST_MAIR: u64 = u64::MAX;

impl Cd {
    /// The CD of a nest: the driver's stage-1 table at IPA `root_ipa`
    /// (48-bit IOVAs, ASID `asid`, output `output_bits`), with
    /// [`NEST_MAIR`]. The kernel writes exactly this.
    pub fn for_nest(
        asid: u16,
        root_ipa: u64,
        output_bits: u32,
        features: &Features,
    ) -> Result<Cd, CdError> {
        let params = CdParams {
            asid,
            ttb0: root_ipa,
            va_bits: 48,
            output_bits,
            mair: NEST_MAIR,
        };
        Cd::new(&params, features)
    }
}
