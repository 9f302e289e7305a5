//! Stream table entries (STEs) and the stream table (linear or 2-level).
//!
//! Source: SMMUv3 5.2 ("Stream Table Entry") and 6.3.24
//! (SMMU_STRTAB_BASE_CFG), 5.1 ("Level 1 Stream Table Descriptor").
//!
//! Every STE the driver writes goes through [`Ste::check`], which refuses
//! the configurations the architecture calls ILLEGAL and those QEMU 10.0.2
//! treats as fatal or unsupported. The worst of those: STE.S2AA64=0 with
//! stage 2 enabled makes QEMU hit `g_assert_not_reached()` (hw/arm/smmuv3.c,
//! `decode_ste_s2_cfg`), killing the whole machine.

use super::SmmuError;
use super::regs::{Features, address_size_bits};
use crate::{FrameAllocator, PAGE_SIZE, PhysAddr, PhysMem, bit, bits};
use core::fmt;

/// STE.Config values (SMMUv3 5.2, STE.Config bits 3:1).
pub mod config {
    /// 0b000: abort all traffic, no event recorded.
    pub const ABORT: u64 = 0b000;
    /// 0b100: bypass both stages.
    pub const BYPASS: u64 = 0b100;
    /// 0b101: stage 1 translate, stage 2 bypass.
    pub const STAGE1: u64 = 0b101;
    /// 0b110: stage 1 bypass, stage 2 translate.
    pub const STAGE2: u64 = 0b110;
    /// 0b111: stage 1 and stage 2 translate (nested).
    pub const NESTED: u64 = 0b111;
}

/// Why an STE was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteError {
    /// STE.Config is a reserved value (0b001..0b011).
    ReservedConfig(u64),
    /// A stage is enabled that SMMU_IDR0 does not advertise (S1P/S2P).
    StageNotSupported {
        /// 1 or 2.
        stage: u8,
    },
    /// STE.S2AA64=0 (AArch32 stage 2 tables): ILLEGAL without IDR0.TTF AArch32, fatal in QEMU.
    Stage2NotAarch64,
    /// STE.S2TG is not the 4 KiB granule (the only one this driver builds) or unsupported.
    Stage2Granule(u64),
    /// STE.S2SL0 is reserved (3) or inconsistent with S2T0SZ.
    Stage2StartLevel(u64),
    /// STE.S2T0SZ outside [max(16, 64 - PS), 39].
    Stage2InputSize(u64),
    /// STE.S2PS above SMMU_IDR5.OAS, or reserved.
    Stage2OutputSize(u64),
    /// STE.S2TTB outside the S2PS range or not 4 KiB aligned.
    Stage2TableAddress(u64),
    /// STE.S2ENDI=1 (big-endian walks): unsupported by QEMU and by this driver.
    Stage2BigEndian,
    /// STE.S2S=1 (stall) while the SMMU cannot stall (IDR0.STALL_MODEL=1).
    Stage2Stall,
    /// STE.S2HA/S2HD set without IDR0.HTTU.
    Stage2HardwareUpdate,
    /// STE.S2FWB set without SMMU_IDR3.FWB (the bit is RES0 there).
    Stage2ForcedWriteBack,
    /// STE.S1CDMax above SMMU_IDR1.SSIDSIZE (QEMU: any non-zero value).
    TooManyContextDescriptors(u64),
    /// STE.S1STALLD=1 (QEMU refuses it; this SMMU cannot stall).
    Stage1StallDisable,
    /// STE.S1Fmt is not linear (0) or S1ContextPtr misaligned.
    ContextTableFormat(u64),
    /// STE.EATS non-zero without SMMU_IDR0.ATS.
    AtsNotSupported,
    /// A stage-2 parameter was out of range before encoding.
    Stage2Parameter(&'static str),
}

impl ktext::Text for SteError {
    fn write(&self, out: &mut dyn ktext::Sink) {
        use ktext::put;
        match self {
            Self::ReservedConfig(c) => put!(out, "STE.Config {:#05b} is reserved", *c),
            Self::StageNotSupported { stage } => put!(
                out,
                "STE enables stage {}, which SMMU_IDR0 does not advertise",
                stage
            ),
            Self::Stage2NotAarch64 => put!(
                out,
                "STE.S2AA64=0: AArch32 stage-2 tables are unsupported (QEMU aborts)"
            ),
            Self::Stage2Granule(g) => put!(out, "STE.S2TG={} is not the 4 KiB granule", g),
            Self::Stage2StartLevel(l) => {
                put!(out, "STE.S2SL0={} is reserved or inconsistent", l)
            }
            Self::Stage2InputSize(t) => put!(out, "STE.S2T0SZ={} is out of range", t),
            Self::Stage2OutputSize(p) => put!(out, "STE.S2PS={} exceeds SMMU_IDR5.OAS", p),
            Self::Stage2TableAddress(a) => {
                put!(out, "STE.S2TTB={:#x} is misaligned or beyond S2PS", *a)
            }
            Self::Stage2BigEndian => put!(out, "STE.S2ENDI=1 (big-endian walks) is unsupported"),
            Self::Stage2Stall => put!(out, "STE.S2S=1 but the SMMU cannot stall"),
            Self::Stage2HardwareUpdate => put!(out, "STE.S2HA/S2HD set without SMMU_IDR0.HTTU"),
            Self::Stage2ForcedWriteBack => put!(out, "STE.S2FWB set without SMMU_IDR3.FWB"),
            Self::TooManyContextDescriptors(n) => {
                put!(out, "STE.S1CDMax={} exceeds SMMU_IDR1.SSIDSIZE", n)
            }
            Self::Stage1StallDisable => put!(out, "STE.S1STALLD=1 is unsupported"),
            Self::ContextTableFormat(v) => {
                put!(out, "STE.S1Fmt/S1ContextPtr invalid ({:#x})", *v)
            }
            Self::AtsNotSupported => put!(out, "STE.EATS set without SMMU_IDR0.ATS"),
            Self::Stage2Parameter(what) => put!(out, "stage-2 parameter out of range: {}", what),
        }
    }
}

impl fmt::Display for SteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ktext::display(self, f)
    }
}

/// Parameters of a stage-2 translation (VMSAv8-64, 4 KiB granule, AArch64 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2Config {
    /// VMID tagging the TLB entries (STE.S2VMID).
    pub vmid: u16,
    /// Physical address of the stage-2 root table (STE.S2TTB).
    pub table: PhysAddr,
    /// IPA size in bits, 25..=48 (STE.S2T0SZ = 64 - ipa_bits).
    pub ipa_bits: u32,
    /// Output (physical) address size in bits: 32, 36, 40, 42, 44, 48 (STE.S2PS).
    pub output_bits: u32,
}

impl Stage2Config {
    /// First lookup level for a 4 KiB granule: 0 above 39 bits, 1 above 30, else 2.
    pub fn start_level(&self) -> u32 {
        start_level_4k(self.ipa_bits)
    }
}

/// First lookup level of a 4 KiB-granule walk covering `input_bits` without concatenation.
pub fn start_level_4k(input_bits: u32) -> u32 {
    match input_bits {
        40.. => 0,
        31..=39 => 1,
        _ => 2,
    }
}

/// One 64-byte stream table entry (SMMUv3 5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ste(pub [u64; 8]);

impl Ste {
    /// V=0: every transaction from the stream raises a C_BAD_STE event (recorded).
    pub const fn invalid() -> Ste {
        Ste([0; 8])
    }

    /// V=1, Config=abort: transactions abort silently (no event; SMMUv3 5.2
    /// STE.Config, and QEMU's smmuv3_translate "no event is recorded on abort").
    pub const fn abort() -> Ste {
        Ste([1 | config::ABORT << 1, 0, 0, 0, 0, 0, 0, 0])
    }

    /// V=1, Config=bypass, SHCFG=incoming (STE word 1 bits 45:44 = 0b01).
    pub const fn bypass() -> Ste {
        Ste([1 | config::BYPASS << 1, 1 << 44, 0, 0, 0, 0, 0, 0])
    }

    /// Stage-2-only translation (Config=0b110).
    pub fn stage2(stage2: &Stage2Config, features: &Features) -> Result<Ste, SteError> {
        let mut ste = Ste([1 | config::STAGE2 << 1, 0, 0, 0, 0, 0, 0, 0]);
        ste.set_stage2(stage2, features)?;
        ste.check(features)?;
        Ok(ste)
    }

    /// Nested translation (Config=0b111): one context descriptor (S1CDMax=0,
    /// linear S1Fmt) at `cd_table`, an IPA translated by `stage2`.
    pub fn nested(
        stage2: &Stage2Config,
        cd_table: PhysAddr,
        features: &Features,
    ) -> Result<Ste, SteError> {
        if cd_table & 0x3f != 0 {
            return Err(SteError::ContextTableFormat(cd_table));
        }
        let word0 = 1 | config::NESTED << 1 | (cd_table & 0x000f_ffff_ffff_ffc0);
        // S1CIR/S1COR = write-back read-allocate (1), S1CSH = inner shareable (3).
        let word1 = 1 << 2 | 1 << 4 | 3 << 6;
        let mut ste = Ste([word0, word1, 0, 0, 0, 0, 0, 0]);
        ste.set_stage2(stage2, features)?;
        ste.check(features)?;
        Ok(ste)
    }

    /// Stage-1-only translation (Config=0b101): one CD at physical
    /// `cd_table`; `vmid` still tags the TLB entries (STE.S2VMID).
    pub fn stage1(cd_table: PhysAddr, vmid: u16, features: &Features) -> Result<Ste, SteError> {
        if cd_table & 0x3f != 0 {
            return Err(SteError::ContextTableFormat(cd_table));
        }
        let word0 = 1 | config::STAGE1 << 1 | (cd_table & 0x000f_ffff_ffff_ffc0);
        let word1 = 1 << 2 | 1 << 4 | 3 << 6;
        let ste = Ste([word0, word1, u64::from(vmid), 0, 0, 0, 0, 0]);
        ste.check(features)?;
        Ok(ste)
    }

    /// Nested translation with a linear table of 2^`cdmax_log2` CDs
    /// (S1CDMax) indexed by SubstreamID; transactions without a SubstreamID
    /// use CD 0 (S1DSS=0b10). Needs SMMU_IDR1.SSIDSIZE >= `cdmax_log2`
    /// (QEMU 10.0.2 has SSIDSIZE=0, so this is refused there).
    pub fn nested_with_substreams(
        stage2: &Stage2Config,
        cd_table: PhysAddr,
        cdmax_log2: u32,
        features: &Features,
    ) -> Result<Ste, SteError> {
        Self::nested_substreams(stage2, cd_table, cdmax_log2, 0b10, features)
    }

    /// As [`Ste::nested_with_substreams`], with `without_substream`
    /// (S1DSS) deciding what a transaction without a SubstreamID does:
    /// 0b00 terminate (C_BAD_SUBSTREAMID), 0b01 bypass stage 1 (stage 2
    /// only), 0b10 use CD 0.
    pub fn nested_substreams(
        stage2: &Stage2Config,
        cd_table: PhysAddr,
        cdmax_log2: u32,
        without_substream: u64,
        features: &Features,
    ) -> Result<Ste, SteError> {
        if without_substream > 0b10 {
            return Err(SteError::Stage2Parameter(
                "S1DSS must be 0b00, 0b01 or 0b10",
            ));
        }
        let mut ste = Self::nested(
            stage2,
            cd_table,
            &Features {
                idr1: super::regs::Idr1(features.idr1.0 | 0x1f << 6),
                ..*features
            },
        )?;
        ste.0[0] |= u64::from(cdmax_log2 & 0x1f) << 59;
        ste.0[1] |= without_substream;
        ste.check(features)?;
        Ok(ste)
    }

    /// Stage-1-only translation (Config=0b101) with a linear table of
    /// 2^`cdmax_log2` CDs indexed by SubstreamID (S1CDMax, S1Fmt=linear)
    /// at physical `cd_table`; `without_substream` (S1DSS) decides what
    /// happens to a transaction without one: 0b00 terminate (C_BAD_SUBSTREAMID),
    /// 0b01 bypass stage 1, 0b10 use CD 0. Needs SMMU_IDR1.SSIDSIZE >= `cdmax_log2`.
    pub fn stage1_with_substreams(
        cd_table: PhysAddr,
        cdmax_log2: u32,
        without_substream: u64,
        vmid: u16,
        features: &Features,
    ) -> Result<Ste, SteError> {
        let mut ste = Self::stage1(cd_table, vmid, features)?;
        if without_substream > 0b10 {
            return Err(SteError::Stage2Parameter(
                "S1DSS must be 0b00, 0b01 or 0b10",
            ));
        }
        ste.0[0] |= u64::from(cdmax_log2 & 0x1f) << 59;
        ste.0[1] |= without_substream;
        ste.check(features)?;
        Ok(ste)
    }

    /// As [`Ste::stage1_with_substreams`] with a 2-level CD table
    /// (S1Fmt=1): `l1_table` holds 2^(`cdmax_log2` - 6) L1CDs, each
    /// pointing at a 4 KiB leaf of 64 CDs ([`super::cd::write_two_level`]).
    /// Needs IDR0.CD2L and `cdmax_log2` > 6.
    pub fn stage1_two_level_cds(
        l1_table: PhysAddr,
        cdmax_log2: u32,
        without_substream: u64,
        vmid: u16,
        features: &Features,
    ) -> Result<Ste, SteError> {
        if cdmax_log2 <= super::cd::CD_SPLIT {
            return Err(SteError::Stage2Parameter(
                "a 2-level CD table needs more than 64 CDs (use a linear one)",
            ));
        }
        let mut ste = Self::stage1(l1_table, vmid, features)?;
        ste.0[0] |= 1 << 4 | u64::from(cdmax_log2 & 0x1f) << 59;
        ste.0[1] |= without_substream & 3;
        ste.check(features)?;
        Ok(ste)
    }

    fn set_stage2(&mut self, s2: &Stage2Config, features: &Features) -> Result<(), SteError> {
        if !(25..=48).contains(&s2.ipa_bits) {
            return Err(SteError::Stage2Parameter("ipa_bits must be 25..=48"));
        }
        let ps = super::regs::address_size_encoding(s2.output_bits).ok_or(
            SteError::Stage2Parameter("output_bits is not an architected size"),
        )?;
        if s2.output_bits > features.idr5.oas_bits() {
            return Err(SteError::Stage2OutputSize(u64::from(ps)));
        }
        if s2.ipa_bits > s2.output_bits {
            return Err(SteError::Stage2Parameter("ipa_bits above output_bits"));
        }
        let t0sz = u64::from(64 - s2.ipa_bits);
        let sl0 = match s2.start_level() {
            0 => 2,
            1 => 1,
            _ => 0,
        };
        // VTCR fields: S2IR0/S2OR0 = WBRA (1), S2SH0 = inner shareable (3), S2TG = 4K (0).
        self.0[2] = u64::from(s2.vmid)
            | t0sz << 32
            | sl0 << 38
            | 1 << 40
            | 1 << 42
            | 3 << 44
            | u64::from(ps) << 48
            | 1 << 51 // S2AA64
            | 1 << 54 // S2PTW
            | 1 << 58 // S2R: record stage-2 faults
            // S2FWB where the SMMU has it: stage 2's MemAttr (forced
            // write-back, `Stage2Format::for_unit`) overrides stage 1's.
            | u64::from(features.idr3.fwb()) << 25;
        self.0[3] = s2.table & 0x000f_ffff_ffff_fff0;
        Ok(())
    }

    /// V (word 0 bit 0).
    pub fn valid(&self) -> bool {
        bit(self.0[0], 0)
    }
    /// Config (word 0 bits 3:1).
    pub fn config(&self) -> u64 {
        bits(self.0[0], 3, 1)
    }
    /// S1ContextPtr (word 0 bits 51:6).
    pub fn context_pointer(&self) -> u64 {
        self.0[0] & 0x000f_ffff_ffff_ffc0
    }
    /// S1CDMax (word 0 bits 63:59).
    pub fn s1_cdmax(&self) -> u64 {
        bits(self.0[0], 63, 59)
    }
    /// S1DSS (word 1 bits 1:0).
    pub fn s1_dss(&self) -> u64 {
        bits(self.0[1], 1, 0)
    }
    /// S2VMID (word 2 bits 15:0).
    pub fn vmid(&self) -> u16 {
        self.0[2] as u16
    }
    /// S2T0SZ (word 2 bits 37:32).
    pub fn s2_t0sz(&self) -> u64 {
        bits(self.0[2], 37, 32)
    }
    /// S2SL0 (word 2 bits 39:38).
    pub fn s2_sl0(&self) -> u64 {
        bits(self.0[2], 39, 38)
    }
    /// S2TG (word 2 bits 47:46).
    pub fn s2_tg(&self) -> u64 {
        bits(self.0[2], 47, 46)
    }
    /// S2PS (word 2 bits 50:48).
    pub fn s2_ps(&self) -> u64 {
        bits(self.0[2], 50, 48)
    }
    /// S2AA64 (word 2 bit 51).
    pub fn s2_aa64(&self) -> bool {
        bit(self.0[2], 51)
    }
    /// S2FWB (word 2 bit 25): stage 2's MemAttr decides the memory type.
    pub fn s2_fwb(&self) -> bool {
        bit(self.0[2], 25)
    }
    /// S2AFFD (word 2 bit 53).
    pub fn s2_affd(&self) -> bool {
        bit(self.0[2], 53)
    }
    /// S2HD (word 2 bit 55): hardware dirty-state update (HTTU).
    pub fn s2_hd(&self) -> bool {
        bit(self.0[2], 55)
    }
    /// S2HA (word 2 bit 56): hardware access-flag update (HTTU).
    pub fn s2_ha(&self) -> bool {
        bit(self.0[2], 56)
    }

    /// Turns stage-2 dirty tracking on or off (STE.S2HA and S2HD, SMMUv3
    /// 5.2 and 3.13): with it, a write through a writable-clean leaf
    /// (DBM=1, S2AP\[1\]=0, see [`super::pagetable::Stage2Format`]) sets
    /// S2AP\[1\] instead of faulting. Needs IDR0.HTTU=2 (QEMU has 0).
    pub fn set_stage2_dirty_tracking(
        &mut self,
        on: bool,
        features: &Features,
    ) -> Result<(), SteError> {
        if on && features.idr0.httu() < 2 {
            return Err(SteError::Stage2HardwareUpdate);
        }
        if self.config() & 2 == 0 {
            return Err(SteError::Stage2Parameter(
                "dirty tracking needs a stage-2 STE",
            ));
        }
        let bits = 1 << 55 | 1 << 56;
        self.0[2] = if on {
            self.0[2] | bits
        } else {
            self.0[2] & !bits
        };
        Ok(())
    }

    /// S2R (word 2 bit 58): record stage-2 faults.
    pub fn s2_record(&self) -> bool {
        bit(self.0[2], 58)
    }
    /// S2TTB (word 3 bits 51:4).
    pub fn s2_table(&self) -> u64 {
        self.0[3] & 0x000f_ffff_ffff_fff0
    }

    /// Refuses ILLEGAL STEs and those QEMU treats as fatal or unsupported
    /// (SMMUv3 5.2 field descriptions; QEMU hw/arm/smmuv3.c `decode_ste`,
    /// `decode_ste_s2_cfg`). Invalid (V=0), abort and bypass STEs pass.
    pub fn check(&self, features: &Features) -> Result<(), SteError> {
        if !self.valid() {
            return Ok(());
        }
        let config = self.config();
        match config {
            config::ABORT | config::BYPASS => return Ok(()),
            config::STAGE1 | config::STAGE2 | config::NESTED => {}
            other => return Err(SteError::ReservedConfig(other)),
        }
        let stage1 = config & 1 != 0;
        let stage2 = config & 2 != 0;
        if stage1 && !features.idr0.s1p() {
            return Err(SteError::StageNotSupported { stage: 1 });
        }
        if stage2 && !features.idr0.s2p() {
            return Err(SteError::StageNotSupported { stage: 2 });
        }
        if bits(self.0[1], 29, 28) != 0 && !features.idr0.ats() {
            return Err(SteError::AtsNotSupported);
        }
        if stage2 {
            self.check_stage2(features)?;
        }
        if stage1 {
            let cdmax = self.s1_cdmax();
            if cdmax > u64::from(features.idr1.ssidsize()) {
                return Err(SteError::TooManyContextDescriptors(cdmax));
            }
            // S1STALLD is meaningful only where stalls are optional
            // (STALL_MODEL 0b00); QEMU (0b01) refuses it.
            if bit(self.0[1], 27) && features.idr0.stall_model() != 0 {
                return Err(SteError::Stage1StallDisable);
            }
            let s1fmt = bits(self.0[0], 5, 4);
            if (s1fmt != 0 && (cdmax == 0 || !features.idr0.cd2l())) || s1fmt == 3 {
                return Err(SteError::ContextTableFormat(s1fmt));
            }
        }
        Ok(())
    }

    fn check_stage2(&self, features: &Features) -> Result<(), SteError> {
        if !self.s2_aa64() {
            return Err(SteError::Stage2NotAarch64);
        }
        if self.s2_tg() != 0 || !features.idr5.gran4k() {
            return Err(SteError::Stage2Granule(self.s2_tg()));
        }
        let ps = self.s2_ps();
        let Some(ps_bits) = address_size_bits(ps as u32) else {
            return Err(SteError::Stage2OutputSize(ps));
        };
        if ps_bits > features.idr5.oas_bits() {
            return Err(SteError::Stage2OutputSize(ps));
        }
        let t0sz = self.s2_t0sz();
        let min_t0sz = u64::from(64 - ps_bits.min(48)).max(16);
        if t0sz > 39 || t0sz < min_t0sz {
            return Err(SteError::Stage2InputSize(t0sz));
        }
        let sl0 = self.s2_sl0();
        let start_level = match sl0 {
            0 => 2,
            1 => 1,
            2 => 0,
            _ => return Err(SteError::Stage2StartLevel(sl0)),
        };
        // At most 16 concatenated tables at the start level (VMSAv8-64 stage 2).
        let input_bits = 64 - t0sz as u32;
        let resolved = 12 + 9 * (4 - start_level);
        if input_bits > resolved + 4 || (input_bits + 9 <= resolved && start_level < 2) {
            return Err(SteError::Stage2StartLevel(sl0));
        }
        let ttb = self.s2_table();
        if ttb & 0xfff != 0 || ttb >> ps_bits != 0 {
            return Err(SteError::Stage2TableAddress(ttb));
        }
        if bit(self.0[2], 52) {
            return Err(SteError::Stage2BigEndian);
        }
        if bit(self.0[2], 57) {
            return Err(SteError::Stage2Stall);
        }
        if (self.s2_hd() && features.idr0.httu() < 2) || (self.s2_ha() && features.idr0.httu() == 0)
        {
            return Err(SteError::Stage2HardwareUpdate);
        }
        if self.s2_fwb() && !features.idr3.fwb() {
            return Err(SteError::Stage2ForcedWriteBack);
        }
        Ok(())
    }
}

/// Number of StreamID bits resolved by one level-2 table (one 4 KiB page of 64 STEs).
pub const SPLIT: u32 = 6;
/// Most StreamID bits a stream table of 4 KiB frames covers: a 2-level
/// table's level-1 array must fit one frame (512 descriptors).
pub const MAX_TWO_LEVEL_SID_BITS: u32 = SPLIT + 9;
/// Most StreamID bits a linear table in one frame covers.
pub const MAX_LINEAR_SID_BITS: u32 = 6;

/// The stream table's shape (SMMU_STRTAB_BASE_CFG.FMT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamTableLayout {
    /// One array of STEs (FMT=0).
    Linear,
    /// Level-1 descriptors pointing at 64-STE level-2 arrays (FMT=1, SPLIT=6).
    TwoLevel,
}

/// A stream table in frames from a [`FrameAllocator`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamTable {
    base: PhysAddr,
    layout: StreamTableLayout,
    sid_bits: u32,
}

impl StreamTable {
    /// Allocates a table covering StreamIDs `0..2^sid_bits`. Level-2 arrays
    /// are allocated on demand by [`StreamTable::populate`]; until then a
    /// 2-level table's descriptors are invalid (SPAN=0), so DMA from those
    /// StreamIDs raises C_BAD_STREAMID.
    pub fn new(
        alloc: &mut impl FrameAllocator,
        layout: StreamTableLayout,
        sid_bits: u32,
    ) -> Result<Self, SmmuError> {
        let limit = match layout {
            StreamTableLayout::Linear => MAX_LINEAR_SID_BITS,
            StreamTableLayout::TwoLevel => MAX_TWO_LEVEL_SID_BITS,
        };
        if sid_bits > limit || (layout == StreamTableLayout::TwoLevel && sid_bits < SPLIT) {
            return Err(SmmuError::InvalidParameter {
                what: "stream table StreamID bits do not fit one frame",
            });
        }
        let base = alloc.alloc_zeroed_frame().ok_or(SmmuError::OutOfMemory {
            what: "stream table",
        })?;
        Ok(Self {
            base,
            layout,
            sid_bits,
        })
    }

    /// Physical base.
    pub fn base(&self) -> PhysAddr {
        self.base
    }
    /// Layout.
    pub fn layout(&self) -> StreamTableLayout {
        self.layout
    }
    /// StreamID bits covered.
    pub fn sid_bits(&self) -> u32 {
        self.sid_bits
    }

    /// SMMU_STRTAB_BASE value: RA (bit 62) | ADDR (bits 51:6) (SMMUv3 6.3.23).
    pub fn base_register(&self) -> u64 {
        1 << 62 | (self.base & 0x000f_ffff_ffff_ffc0)
    }

    /// SMMU_STRTAB_BASE_CFG value: FMT 17:16, SPLIT 10:6, LOG2SIZE 5:0 (SMMUv3 6.3.24).
    pub fn base_cfg(&self) -> u32 {
        match self.layout {
            StreamTableLayout::Linear => self.sid_bits,
            StreamTableLayout::TwoLevel => 1 << 16 | SPLIT << 6 | self.sid_bits,
        }
    }

    fn check_sid(&self, sid: u32) -> Result<(), SmmuError> {
        if u64::from(sid) >> self.sid_bits != 0 {
            Err(SmmuError::StreamIdOutOfRange { stream_id: sid })
        } else {
            Ok(())
        }
    }

    /// Address of the STE for `sid`, or `None` when its level-2 array is absent.
    pub fn ste_address(&self, mem: &impl PhysMem, sid: u32) -> Option<PhysAddr> {
        if u64::from(sid) >> self.sid_bits != 0 {
            return None;
        }
        match self.layout {
            StreamTableLayout::Linear => Some(self.base + 64 * u64::from(sid)),
            StreamTableLayout::TwoLevel => {
                let descriptor = mem.read_u64(self.base + 8 * u64::from(sid >> SPLIT));
                if descriptor & 0x1f == 0 {
                    return None;
                }
                let l2 = descriptor & 0x000f_ffff_ffff_ffc0;
                Some(l2 + 64 * u64::from(sid & ((1 << SPLIT) - 1)))
            }
        }
    }

    /// Makes sure the STEs of `sids` exist: allocates missing level-2 arrays,
    /// fills them with `fill` and publishes their level-1 descriptors
    /// (L1STD: SPAN 4:0 = SPLIT+1, L2Ptr 51:6; SMMUv3 5.1). No-op for linear tables.
    pub fn populate(
        &self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        sids: core::ops::Range<u32>,
        fill: &Ste,
    ) -> Result<(), SmmuError> {
        if sids.is_empty() {
            return Ok(());
        }
        self.check_sid(sids.start)?;
        self.check_sid(sids.end - 1)?;
        if self.layout == StreamTableLayout::Linear {
            for sid in sids {
                self.write_ste_words(mem, self.base + 64 * u64::from(sid), fill);
            }
            return Ok(());
        }
        for group in (sids.start >> SPLIT)..=((sids.end - 1) >> SPLIT) {
            let l1 = self.base + 8 * u64::from(group);
            if mem.read_u64(l1) & 0x1f != 0 {
                continue;
            }
            let l2 = alloc.alloc_zeroed_frame().ok_or(SmmuError::OutOfMemory {
                what: "level-2 stream table",
            })?;
            for index in 0..(PAGE_SIZE / 64) {
                self.write_ste_words(mem, l2 + 64 * index, fill);
            }
            mem.write_u64(l1, l2 | u64::from(SPLIT + 1));
        }
        Ok(())
    }

    fn write_ste_words(&self, mem: &impl PhysMem, address: PhysAddr, ste: &Ste) {
        for word in 1..8 {
            mem.write_u64(address + 8 * word as u64, ste.0[word]);
        }
        mem.write_u64(address, ste.0[0]);
    }

    /// Writes the STE of `sid` after [`Ste::check`]: words 1..7 first, word 0
    /// (with V) last. The caller invalidates (CFGI_STE + CMD_SYNC); changing
    /// a live translating STE should go through an invalid/abort STE first.
    pub fn write_ste(
        &self,
        mem: &impl PhysMem,
        sid: u32,
        ste: &Ste,
        features: &Features,
    ) -> Result<(), SmmuError> {
        ste.check(features).map_err(SmmuError::InvalidSte)?;
        self.check_sid(sid)?;
        let address = self
            .ste_address(mem, sid)
            .ok_or(SmmuError::StreamIdOutOfRange { stream_id: sid })?;
        self.write_ste_words(mem, address, ste);
        Ok(())
    }

    /// The level-2 array of `sid`'s group, if it holds nothing but
    /// `blocking` STEs and `owned` says the caller may free it: its
    /// level-1 descriptor is cleared (SPAN=0: the group's StreamIDs raise
    /// C_BAD_STREAMID, still blocked) and the array returned. The caller
    /// invalidates the group's STEs before freeing it. `None` for linear
    /// tables.
    pub fn unlink_if_blocking(
        &self,
        mem: &impl PhysMem,
        sid: u32,
        blocking: &Ste,
        owned: impl Fn(PhysAddr) -> bool,
    ) -> Option<PhysAddr> {
        if self.layout != StreamTableLayout::TwoLevel || u64::from(sid) >> self.sid_bits != 0 {
            return None;
        }
        let l1 = self.base + 8 * u64::from(sid >> SPLIT);
        let descriptor = mem.read_u64(l1);
        let l2 = descriptor & 0x000f_ffff_ffff_ffc0;
        if descriptor & 0x1f == 0 || !owned(l2) {
            return None;
        }
        let first = sid & !((1 << SPLIT) - 1);
        let all_blocking = (first..first + (1 << SPLIT))
            .all(|sid| self.read_ste(mem, sid).as_ref() == Some(blocking));
        if !all_blocking {
            return None;
        }
        mem.write_u64(l1, 0);
        Some(l2)
    }

    /// Reads the STE of `sid`, if its array exists.
    pub fn read_ste(&self, mem: &impl PhysMem, sid: u32) -> Option<Ste> {
        let address = self.ste_address(mem, sid)?;
        let mut ste = Ste::default();
        for (word, slot) in ste.0.iter_mut().enumerate() {
            *slot = mem.read_u64(address + 8 * word as u64);
        }
        Some(ste)
    }
}
