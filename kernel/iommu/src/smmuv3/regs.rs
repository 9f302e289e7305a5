//! The SMMUv3 register block: offsets, ID register decoding, control bits.
//!
//! Source: Arm IHI 0070 (SMMUv3 architecture specification), chapter 6
//! ("Memory map and registers"); section numbers are those of issue F/G.

use crate::{bit, bits};
#[cfg(any(test, feature = "decode"))]
use core::fmt;

/// Register offsets (SMMUv3 6.2, "Register overview").
pub mod offset {
    /// SMMU_IDR0 (6.3.1).
    pub const IDR0: usize = 0x00;
    /// SMMU_IDR1 (6.3.2).
    pub const IDR1: usize = 0x04;
    /// SMMU_IDR3 (6.3.4).
    pub const IDR3: usize = 0x0c;
    /// SMMU_IDR5 (6.3.6).
    pub const IDR5: usize = 0x14;
    /// SMMU_CR0 (6.3.9).
    pub const CR0: usize = 0x20;
    /// SMMU_CR0ACK (6.3.10).
    pub const CR0ACK: usize = 0x24;
    /// SMMU_CR1 (6.3.11).
    pub const CR1: usize = 0x28;
    /// SMMU_CR2 (6.3.12).
    pub const CR2: usize = 0x2c;
    /// SMMU_GBPA (6.3.14).
    pub const GBPA: usize = 0x44;
    /// SMMU_IRQ_CTRL (6.3.16).
    pub const IRQ_CTRL: usize = 0x50;
    /// SMMU_IRQ_CTRLACK (6.3.17).
    pub const IRQ_CTRLACK: usize = 0x54;
    /// SMMU_GERROR (6.3.18).
    pub const GERROR: usize = 0x60;
    /// SMMU_GERRORN (6.3.19).
    pub const GERRORN: usize = 0x64;
    /// SMMU_STRTAB_BASE (6.3.23), 64-bit.
    pub const STRTAB_BASE: usize = 0x80;
    /// SMMU_STRTAB_BASE_CFG (6.3.24).
    pub const STRTAB_BASE_CFG: usize = 0x88;
    /// SMMU_CMDQ_BASE (6.3.25), 64-bit.
    pub const CMDQ_BASE: usize = 0x90;
    /// SMMU_CMDQ_PROD (6.3.26).
    pub const CMDQ_PROD: usize = 0x98;
    /// SMMU_CMDQ_CONS (6.3.27).
    pub const CMDQ_CONS: usize = 0x9c;
    /// SMMU_EVENTQ_BASE (6.3.28), 64-bit.
    pub const EVENTQ_BASE: usize = 0xa0;
    /// SMMU_EVENTQ_PROD, in register page 1 (6.3.29).
    pub const EVENTQ_PROD: usize = 0x1_00a8;
    /// SMMU_EVENTQ_CONS, in register page 1 (6.3.30).
    pub const EVENTQ_CONS: usize = 0x1_00ac;
    /// SMMU_PRIQ_BASE (6.3.31), 64-bit: WA bit 62, ADDR 51:5, LOG2SIZE 4:0.
    pub const PRIQ_BASE: usize = 0xc0;
    /// SMMU_PRIQ_PROD (6.3.32, page 1): WR index + wrap, OVFLG bit 31.
    pub const PRIQ_PROD: usize = 0x1_00c8;
    /// SMMU_PRIQ_CONS (6.3.33, page 1): RD index + wrap, OVACKFLG bit 31.
    pub const PRIQ_CONS: usize = 0x1_00cc;
}

/// SMMU_CR0 / SMMU_CR0ACK bits (6.3.9).
pub mod cr0 {
    /// SMMUEN: translation enabled.
    pub const SMMUEN: u32 = 1 << 0;
    /// PRIQEN.
    pub const PRIQEN: u32 = 1 << 1;
    /// EVENTQEN.
    pub const EVENTQEN: u32 = 1 << 2;
    /// CMDQEN.
    pub const CMDQEN: u32 = 1 << 3;
}

/// SMMU_GERROR / GERRORN bits (6.3.18); an error is active while the two differ.
pub mod gerror {
    /// CMDQ_ERR: command queue error, see CMDQ_CONS.ERR.
    pub const CMDQ_ERR: u32 = 1 << 0;
    /// EVENTQ_ABT_ERR: event queue write aborted (QEMU also raises it on a full queue).
    pub const EVENTQ_ABT_ERR: u32 = 1 << 2;
    /// PRIQ_ABT_ERR.
    pub const PRIQ_ABT_ERR: u32 = 1 << 3;
    /// MSI_CMDQ_ABT_ERR.
    pub const MSI_CMDQ_ABT_ERR: u32 = 1 << 4;
    /// MSI_EVENTQ_ABT_ERR.
    pub const MSI_EVENTQ_ABT_ERR: u32 = 1 << 5;
    /// MSI_PRIQ_ABT_ERR.
    pub const MSI_PRIQ_ABT_ERR: u32 = 1 << 6;
    /// MSI_GERROR_ABT_ERR.
    pub const MSI_GERROR_ABT_ERR: u32 = 1 << 7;
    /// SFM_ERR: service failure mode.
    pub const SFM_ERR: u32 = 1 << 8;
    /// Every defined bit.
    pub const ALL: u32 = 0x1fd;
}

/// SMMU_GBPA bits (6.3.14).
pub mod gbpa {
    /// UPDATE: write 1 with new fields; hardware clears when applied.
    pub const UPDATE: u32 = 1 << 31;
    /// ABORT: abort incoming transactions while SMMUEN=0.
    pub const ABORT: u32 = 1 << 20;
}

/// SMMU_IRQ_CTRL bits (6.3.16).
pub mod irq_ctrl {
    /// GERROR_IRQEN.
    pub const GERROR: u32 = 1 << 0;
    /// PRIQ_IRQEN.
    pub const PRIQ: u32 = 1 << 1;
    /// EVENTQ_IRQEN.
    pub const EVENTQ: u32 = 1 << 2;
}

/// SMMU_IDR0 (6.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Idr0(pub u32);

impl Idr0 {
    fn field(self, hi: u32, lo: u32) -> u32 {
        bits(u64::from(self.0), hi, lo) as u32
    }
    /// S2P: stage 2 translation (bit 0).
    pub fn s2p(self) -> bool {
        bit(u64::from(self.0), 0)
    }
    /// S1P: stage 1 translation (bit 1).
    pub fn s1p(self) -> bool {
        bit(u64::from(self.0), 1)
    }
    /// TTF: translation table formats (bits 3:2): 1 AArch32, 2 AArch64, 3 both.
    pub fn ttf(self) -> u32 {
        self.field(3, 2)
    }
    /// Whether AArch64 tables are supported (TTF bit 1).
    pub fn aarch64_tables(self) -> bool {
        self.ttf() & 2 != 0
    }
    /// COHACC: coherent access to tables and queues (bit 4).
    pub fn cohacc(self) -> bool {
        bit(u64::from(self.0), 4)
    }
    /// BTM: broadcast TLB maintenance (bit 5).
    pub fn btm(self) -> bool {
        bit(u64::from(self.0), 5)
    }
    /// HTTU: hardware table update (bits 7:6).
    pub fn httu(self) -> u32 {
        self.field(7, 6)
    }
    /// HYP (bit 9).
    pub fn hyp(self) -> bool {
        bit(u64::from(self.0), 9)
    }
    /// ATS (bit 10).
    pub fn ats(self) -> bool {
        bit(u64::from(self.0), 10)
    }
    /// ASID16: 16-bit ASIDs (bit 12).
    pub fn asid16(self) -> bool {
        bit(u64::from(self.0), 12)
    }
    /// MSI: message-signalled interrupts (bit 13).
    pub fn msi(self) -> bool {
        bit(u64::from(self.0), 13)
    }
    /// PRI (bit 16).
    pub fn pri(self) -> bool {
        bit(u64::from(self.0), 16)
    }
    /// VMID16: 16-bit VMIDs (bit 18).
    pub fn vmid16(self) -> bool {
        bit(u64::from(self.0), 18)
    }
    /// CD2L: 2-level CD tables (bit 19).
    pub fn cd2l(self) -> bool {
        bit(u64::from(self.0), 19)
    }
    /// TTENDIAN (bits 22:21): 0 mixed, 2 little, 3 big.
    pub fn ttendian(self) -> u32 {
        self.field(22, 21)
    }
    /// STALL_MODEL (bits 25:24): 0 stall+terminate, 1 terminate only, 2 stall forced.
    pub fn stall_model(self) -> u32 {
        self.field(25, 24)
    }
    /// TERM_MODEL (bit 26): 1 = terminated transactions always abort (CD.A must be 1).
    pub fn term_model(self) -> bool {
        bit(u64::from(self.0), 26)
    }
    /// ST_LEVEL (bits 28:27): 0 linear only, 1 linear and 2-level.
    pub fn st_level(self) -> u32 {
        self.field(28, 27)
    }
}

#[cfg(any(test, feature = "decode"))]
impl fmt::Display for Idr0 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IDR0 {:#010x}: S1P={} S2P={} TTF={} COHACC={} BTM={} HTTU={} ATS={} ASID16={} MSI={} PRI={} VMID16={} CD2L={} TTENDIAN={} STALL_MODEL={} TERM_MODEL={} ST_LEVEL={}",
            self.0,
            u8::from(self.s1p()),
            u8::from(self.s2p()),
            match self.ttf() {
                1 => "AArch32",
                2 => "AArch64",
                3 => "AArch32+AArch64",
                _ => "reserved",
            },
            u8::from(self.cohacc()),
            u8::from(self.btm()),
            self.httu(),
            u8::from(self.ats()),
            u8::from(self.asid16()),
            u8::from(self.msi()),
            u8::from(self.pri()),
            u8::from(self.vmid16()),
            u8::from(self.cd2l()),
            self.ttendian(),
            self.stall_model(),
            u8::from(self.term_model()),
            match self.st_level() {
                0 => "linear",
                1 => "2-level",
                _ => "reserved",
            },
        )
    }
}

/// SMMU_IDR1 (6.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Idr1(pub u32);

impl Idr1 {
    fn field(self, hi: u32, lo: u32) -> u32 {
        bits(u64::from(self.0), hi, lo) as u32
    }
    /// SIDSIZE: StreamID width in bits (bits 5:0).
    pub fn sidsize(self) -> u32 {
        self.field(5, 0)
    }
    /// SSIDSIZE: SubstreamID width in bits (bits 10:6); 0 = no substreams.
    pub fn ssidsize(self) -> u32 {
        self.field(10, 6)
    }
    /// PRIQS: log2 of the maximum PRI queue entries (bits 15:11).
    pub fn priqs(self) -> u32 {
        self.field(15, 11)
    }
    /// EVENTQS: log2 of the maximum event queue entries (bits 20:16).
    pub fn eventqs(self) -> u32 {
        self.field(20, 16)
    }
    /// CMDQS: log2 of the maximum command queue entries (bits 25:21).
    pub fn cmdqs(self) -> u32 {
        self.field(25, 21)
    }
    /// REL: base addresses are relative (bit 28).
    pub fn rel(self) -> bool {
        bit(u64::from(self.0), 28)
    }
    /// QUEUES_PRESET (bit 29).
    pub fn queues_preset(self) -> bool {
        bit(u64::from(self.0), 29)
    }
    /// TABLES_PRESET (bit 30).
    pub fn tables_preset(self) -> bool {
        bit(u64::from(self.0), 30)
    }
}

#[cfg(any(test, feature = "decode"))]
impl fmt::Display for Idr1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IDR1 {:#010x}: SIDSIZE={} SSIDSIZE={} PRIQS={} EVENTQS={} CMDQS={} REL={} QUEUES_PRESET={} TABLES_PRESET={}",
            self.0,
            self.sidsize(),
            self.ssidsize(),
            self.priqs(),
            self.eventqs(),
            self.cmdqs(),
            u8::from(self.rel()),
            u8::from(self.queues_preset()),
            u8::from(self.tables_preset()),
        )
    }
}

/// SMMU_IDR3 (6.3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Idr3(pub u32);

impl Idr3 {
    /// HAD: hierarchical attribute disables (bit 2).
    pub fn had(self) -> bool {
        bit(u64::from(self.0), 2)
    }
    /// XNX: stage-2 execute-never for EL0/EL1 (bit 4).
    pub fn xnx(self) -> bool {
        bit(u64::from(self.0), 4)
    }
    /// FWB: stage 2 may force memory attributes (STE.S2FWB; bit 8).
    pub fn fwb(self) -> bool {
        bit(u64::from(self.0), 8)
    }
    /// RIL: range invalidation (bit 10).
    pub fn ril(self) -> bool {
        bit(u64::from(self.0), 10)
    }
    /// BBML: break-before-make level (bits 12:11).
    pub fn bbml(self) -> u32 {
        bits(u64::from(self.0), 12, 11) as u32
    }
}

#[cfg(any(test, feature = "decode"))]
impl fmt::Display for Idr3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IDR3 {:#010x}: HAD={} XNX={} FWB={} RIL={} BBML={}",
            self.0,
            u8::from(self.had()),
            u8::from(self.xnx()),
            u8::from(self.fwb()),
            u8::from(self.ril()),
            self.bbml(),
        )
    }
}

/// SMMU_IDR5 (6.3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Idr5(pub u32);

/// Output address size encodings shared by IDR5.OAS, STE.S2PS and CD.IPS.
pub fn address_size_bits(encoding: u32) -> Option<u32> {
    match encoding {
        0 => Some(32),
        1 => Some(36),
        2 => Some(40),
        3 => Some(42),
        4 => Some(44),
        5 => Some(48),
        6 => Some(52),
        _ => None,
    }
}

/// The encoding of an address size in bits (inverse of [`address_size_bits`]).
pub fn address_size_encoding(size_bits: u32) -> Option<u32> {
    (0..7).find(|e| address_size_bits(*e) == Some(size_bits))
}

impl Idr5 {
    /// OAS encoding (bits 2:0).
    pub fn oas(self) -> u32 {
        self.0 & 7
    }
    /// Output address size in bits.
    pub fn oas_bits(self) -> u32 {
        address_size_bits(self.oas()).unwrap_or(32)
    }
    /// GRAN4K (bit 4).
    pub fn gran4k(self) -> bool {
        bit(u64::from(self.0), 4)
    }
    /// GRAN16K (bit 5).
    pub fn gran16k(self) -> bool {
        bit(u64::from(self.0), 5)
    }
    /// GRAN64K (bit 6).
    pub fn gran64k(self) -> bool {
        bit(u64::from(self.0), 6)
    }
    /// VAX: virtual address extension (bits 11:10).
    pub fn vax(self) -> u32 {
        bits(u64::from(self.0), 11, 10) as u32
    }
    /// STALL_MAX (bits 31:16).
    pub fn stall_max(self) -> u32 {
        self.0 >> 16
    }
}

#[cfg(any(test, feature = "decode"))]
impl fmt::Display for Idr5 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IDR5 {:#010x}: OAS={}-bit granules",
            self.0,
            self.oas_bits()
        )?;
        for (set, name) in [
            (self.gran4k(), "4K"),
            (self.gran16k(), "16K"),
            (self.gran64k(), "64K"),
        ] {
            if set {
                write!(f, " {name}")?;
            }
        }
        write!(f, " VAX={} STALL_MAX={}", self.vax(), self.stall_max())
    }
}

/// The ID registers the driver needs, read once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// SMMU_IDR0.
    pub idr0: Idr0,
    /// SMMU_IDR1.
    pub idr1: Idr1,
    /// SMMU_IDR3.
    pub idr3: Idr3,
    /// SMMU_IDR5.
    pub idr5: Idr5,
}

impl Features {
    /// QEMU 10.0.2 `virt,iommu=smmuv3` values (see QEMU.md; IDR3 as the
    /// kernel reads it there: HAD, XNX, RIL, BBML=2, no FWB).
    pub const QEMU: Features = Features {
        idr0: Idr0(0x0d44_101b),
        idr1: Idr1(0x0273_0010),
        idr3: Idr3(0x1414),
        idr5: Idr5(0x74),
    };

    /// A unit with what QEMU 10.0.2 leaves out, per the specification:
    /// QEMU's registers plus IDR0.PRI, STALL_MODEL=0 (stall and
    /// terminate), HTTU=2 (access flag and dirty state), CD2L, and IDR1
    /// SSIDSIZE=8 and PRIQS=8. The executable model's "per spec" unit.
    pub const PER_SPEC: Features = Features {
        idr0: Idr0((0x0d44_101b & !(3 << 24)) | 1 << 16 | 1 << 19 | 2 << 6),
        idr1: Idr1(0x0273_0010 | 8 << 6 | 8 << 11),
        idr3: Idr3(0x1414),
        idr5: Idr5(0x74),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn decodes_qemu_id_registers() {
        let Features {
            idr0,
            idr1,
            idr3,
            idr5,
        } = Features::QEMU;
        assert!(idr3.had() && idr3.xnx() && idr3.ril() && !idr3.fwb());
        assert_eq!(idr3.bbml(), 2);
        assert!(idr0.s1p() && idr0.s2p() && idr0.aarch64_tables());
        assert_eq!(idr0.ttf(), 2);
        assert!(idr0.cohacc() && idr0.asid16() && idr0.vmid16());
        assert_eq!(idr0.stall_model(), 1);
        assert!(idr0.term_model());
        assert_eq!(idr0.st_level(), 1);
        assert!(!idr0.cd2l() && !idr0.msi() && !idr0.pri() && !idr0.ats());
        assert_eq!(idr0.httu(), 0);
        assert_eq!((idr1.sidsize(), idr1.ssidsize()), (16, 0));
        assert_eq!((idr1.eventqs(), idr1.cmdqs()), (19, 19));
        assert_eq!(idr5.oas_bits(), 44);
        assert!(idr5.gran4k() && idr5.gran16k() && idr5.gran64k());
        let text = format!("{idr0}");
        assert!(text.contains("S1P=1 S2P=1 TTF=AArch64 COHACC=1"), "{text}");
        assert!(text.contains("ST_LEVEL=2-level"), "{text}");
        let text = format!("{idr1}");
        assert!(text.contains("SIDSIZE=16 SSIDSIZE=0"), "{text}");
        assert_eq!(
            format!("{idr5}"),
            "IDR5 0x00000074: OAS=44-bit granules 4K 16K 64K VAX=0 STALL_MAX=0"
        );
        assert_eq!(address_size_encoding(44), Some(4));
    }
}
