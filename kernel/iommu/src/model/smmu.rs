//! Executable model of SMMUv3 translation (SMMUv3 chapter 3 "Operation",
//! 5 "Data structure formats", 7.3 "Event records"; VMSAv8-64 4 KiB-granule
//! walks per the Arm ARM, chapter D8).
//!
//! StreamID -> STE (linear or 2-level) -> Config: abort (silent), bypass,
//! stage 2 only, stage 1 only, nested. Stage 1: SubstreamID selects a CD
//! (S1CDMax, S1DSS); the CD fetch and every stage-1 table fetch are IPAs
//! translated by stage 2 when it is enabled. Faults become event records
//! with the type, StreamID, SubstreamID, stage, class, input address, IPA.
//!
//! Simplifications (documented, not silent): only the 4 KiB granule and
//! AArch64 little-endian tables; TBI off; AP\[1\] (EL0) is ignored since
//! device requests are treated as unprivileged data accesses allowed by
//! AP\[1\]=1 (what the driver writes).
//!
//! Memory attributes ([`SmmuModel::translate_with_attributes`]): stage 1
//! looks its leaf's AttrIndx up in the CD's MAIR; stage 2's MemAttr is
//! combined with it (Arm ARM D8.6.5 "Combining the stage 1 and stage 2
//! attributes": Device beats Normal, the more restrictive Device type and
//! the weaker cacheability win), or, with STE.S2FWB (SMMUv3 5.2, Arm ARM
//! "FEAT_S2FWB"), overrides it: MemAttr 0b0110 forces Normal Write-Back
//! whatever stage 1 says, 0b0111 takes stage 1's, 0b0101 Non-cacheable
//! unless stage 1 is Device, 0b00xx Device. A transaction that skips stage 1
//! arrives as Normal Write-Back (a PCIe request without No Snoop; STE.MTCFG
//! is 0). Shareability and allocation hints are not modelled.

use super::{Access, SimMemory};
use crate::smmuv3::pagetable::{ACCESS_FLAG, DBM, S2AP_WRITE};
use crate::smmuv3::queue::{Event, EventKind, FaultClass};
use crate::smmuv3::regs::{Features, address_size_bits};
use crate::smmuv3::ste::{Ste, config};
use crate::{PhysMem, bits};

/// One transaction as the SMMU sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmmuRequest {
    /// StreamID (PCI RID on QEMU virt).
    pub stream_id: u32,
    /// SubstreamID (PASID), if the transaction carries one.
    pub substream_id: Option<u32>,
    /// Input address.
    pub address: u64,
    /// Read or write.
    pub access: Access,
}

/// What happened to a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Translated to this physical address.
    Translated(u64),
    /// Terminated without an event (abort STE, or a fault whose record is disabled).
    Aborted,
    /// Terminated and this event recorded.
    Fault(Event),
}

/// A Device memory type, most restrictive first (Arm ARM B2.8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceType {
    /// Device-nGnRnE.
    NGnRnE,
    /// Device-nGnRE.
    NGnRE,
    /// Device-nGRE.
    NGRE,
    /// Device-GRE.
    GRE,
}

/// Cacheability of Normal memory, weakest first (Arm ARM B2.8.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cacheability {
    /// Non-cacheable: the access goes around the caches.
    NonCacheable,
    /// Write-Through.
    WriteThrough,
    /// Write-Back.
    WriteBack,
}

/// The memory type and cacheability a translated access uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryAttributes {
    /// Device memory of this type.
    Device(DeviceType),
    /// Normal memory.
    Normal {
        /// Inner cacheability.
        inner: Cacheability,
        /// Outer cacheability.
        outer: Cacheability,
    },
    /// A reserved or UNPREDICTABLE encoding was used.
    Unpredictable,
}

impl MemoryAttributes {
    /// Normal, inner and outer Write-Back: what coherent DMA needs.
    pub const WRITE_BACK: MemoryAttributes = MemoryAttributes::Normal {
        inner: Cacheability::WriteBack,
        outer: Cacheability::WriteBack,
    };

    /// One MAIR attribute byte (Arm ARM D19, `MAIR_EL1.Attr<n>`): high
    /// nibble 0 = Device (low nibble 0b0000 nGnRnE, 0b0100 nGnRE, 0b1000
    /// nGRE, 0b1100 GRE), else Normal with outer = high and inner = low
    /// nibble, each 0b0100 Non-cacheable, 0b00RW / 0b10RW Write-Through,
    /// 0b01RW / 0b11RW Write-Back (RW != 0; inner 0b0000 is UNPREDICTABLE).
    pub fn from_mair(attr: u8) -> MemoryAttributes {
        let (high, low) = (attr >> 4, attr & 0xf);
        if high == 0 {
            return match low {
                0b0000 => Self::Device(DeviceType::NGnRnE),
                0b0100 => Self::Device(DeviceType::NGnRE),
                0b1000 => Self::Device(DeviceType::NGRE),
                0b1100 => Self::Device(DeviceType::GRE),
                _ => Self::Unpredictable,
            };
        }
        let nibble = |n: u8| match (n >> 2, n & 3) {
            (0b01, 0) => Some(Cacheability::NonCacheable),
            (_, 0) => None,
            (0b00 | 0b10, _) => Some(Cacheability::WriteThrough),
            _ => Some(Cacheability::WriteBack),
        };
        match (nibble(low), nibble(high)) {
            (Some(inner), Some(outer)) => Self::Normal { inner, outer },
            _ => Self::Unpredictable,
        }
    }

    /// A stage-2 descriptor's MemAttr (bits 5:2) without FWB (Arm ARM
    /// D8.6.4): MemAttr\[3:2\] = 0 Device (MemAttr\[1:0\] the type), else
    /// Normal with outer = MemAttr\[3:2\], inner = MemAttr\[1:0\], each 0b01
    /// Non-cacheable, 0b10 Write-Through, 0b11 Write-Back.
    pub fn from_stage2(mem_attr: u8) -> MemoryAttributes {
        let device = [
            DeviceType::NGnRnE,
            DeviceType::NGnRE,
            DeviceType::NGRE,
            DeviceType::GRE,
        ];
        let level = |bits: u8| match bits & 3 {
            0b01 => Some(Cacheability::NonCacheable),
            0b10 => Some(Cacheability::WriteThrough),
            0b11 => Some(Cacheability::WriteBack),
            _ => None,
        };
        match (mem_attr >> 2 & 3, level(mem_attr)) {
            (0, _) => Self::Device(device[usize::from(mem_attr & 3)]),
            (outer, Some(inner)) => Self::Normal {
                inner,
                outer: level(outer).unwrap_or(Cacheability::NonCacheable),
            },
            (_, None) => Self::Unpredictable,
        }
    }

    /// Stage 1's attributes combined with stage 2's MemAttr: without FWB
    /// the more restrictive of the two wins; with FWB stage 2 decides
    /// (see the file's header).
    pub fn combine(stage1: MemoryAttributes, mem_attr: u8, fwb: bool) -> MemoryAttributes {
        use MemoryAttributes::{Device, Normal, Unpredictable};
        let stage2 = if fwb {
            match mem_attr & 0b111 {
                0b000..=0b011 => Self::from_stage2(mem_attr & 3),
                0b101 => Normal {
                    inner: Cacheability::NonCacheable,
                    outer: Cacheability::NonCacheable,
                },
                0b110 => return Self::WRITE_BACK,
                0b111 => return stage1,
                _ => Unpredictable,
            }
        } else {
            Self::from_stage2(mem_attr)
        };
        match (stage1, stage2) {
            (Unpredictable, _) | (_, Unpredictable) => Unpredictable,
            (Device(a), Device(b)) => Device(a.min(b)),
            (Device(a), Normal { .. }) | (Normal { .. }, Device(a)) => Device(a),
            (
                Normal {
                    inner: i1,
                    outer: o1,
                },
                Normal {
                    inner: i2,
                    outer: o2,
                },
            ) => Normal {
                inner: i1.min(i2),
                outer: o1.min(o2),
            },
        }
    }
}

/// A translated transaction: where it goes and with which attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address.
    pub address: u64,
    /// The memory type and cacheability of the access.
    pub attributes: MemoryAttributes,
}

/// A cached configuration (see [`SmmuModel::config_tag`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigTag {
    /// STE.Config = abort.
    Abort,
    /// STE.Config = bypass.
    Bypass,
    /// Translating: TLB entries tagged with this VMID and, with stage 1, ASID.
    Translate {
        /// STE.S2VMID.
        vmid: u16,
        /// CD.ASID when stage 1 translates.
        asid: Option<u16>,
    },
}

/// The stream table registers the model walks from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmmuModel {
    /// SMMU_STRTAB_BASE (address part).
    pub strtab_base: u64,
    /// SMMU_STRTAB_BASE_CFG.
    pub strtab_cfg: u32,
    /// ID registers.
    pub features: Features,
}

struct Walk<'a> {
    memory: &'a SimMemory,
    request: SmmuRequest,
    /// Perform hardware table updates (HTTU); off for a probe.
    update: bool,
}

/// Stage-2 state of an STE.
#[derive(Clone, Copy)]
struct Stage2 {
    table: u64,
    input_bits: u32,
    start_level: u32,
    output_bits: u32,
    affd: bool,
    record: bool,
    /// STE.S2FWB: stage 2's MemAttr overrides stage 1's attributes.
    fwb: bool,
    /// STE.S2HA with IDR0.HTTU >= 1: the SMMU sets AF instead of faulting.
    ha: bool,
    /// STE.S2HD with IDR0.HTTU = 2: a DBM=1 leaf becomes writable on a write.
    hd: bool,
}

/// A fault before it becomes an event.
struct Fault {
    kind: EventKind,
    stage2: bool,
    class: FaultClass,
    ipa: u64,
    record: bool,
}

impl Walk<'_> {
    fn event(&self, kind: EventKind) -> Outcome {
        Outcome::Fault(Event {
            kind,
            stream_id: self.request.stream_id,
            substream_id: self.request.substream_id,
            read: self.request.access == Access::Read,
            stage2: false,
            class: FaultClass::Input,
            input_address: 0,
            address: 0,
            stall_tag: None,
        })
    }

    fn fault_outcome(&self, fault: Fault) -> Outcome {
        if !fault.record {
            return Outcome::Aborted;
        }
        Outcome::Fault(Event {
            kind: fault.kind,
            stream_id: self.request.stream_id,
            substream_id: self.request.substream_id,
            read: self.request.access == Access::Read,
            stage2: fault.stage2,
            class: fault.class,
            input_address: self.request.address,
            // The record holds IPA bits 51:12 (SMMUv3 7.3.12).
            address: fault.ipa & 0x000f_ffff_ffff_f000,
            stall_tag: None,
        })
    }

    fn stage2(
        &self,
        s2: &Stage2,
        ipa: u64,
        access: Access,
        class: FaultClass,
    ) -> Result<u64, Fault> {
        self.stage2_leaf(s2, ipa, access, class).map(|(pa, _)| pa)
    }

    /// VMSAv8-64 stage-2 walk, 4 KiB granule: descriptor bits 1:0 = 0b11
    /// table/page, 0b01 block (levels 1-2); MemAttr bits 5:2; S2AP bits
    /// 7:6 (bit 6 read, bit 7 write); AF bit 10; output bits 47:12.
    /// Returns the output address and the leaf's MemAttr.
    fn stage2_leaf(
        &self,
        s2: &Stage2,
        ipa: u64,
        access: Access,
        class: FaultClass,
    ) -> Result<(u64, u8), Fault> {
        let fault = |kind| Fault {
            kind,
            stage2: true,
            class,
            ipa,
            record: s2.record,
        };
        if ipa >> s2.input_bits != 0 {
            return Err(fault(EventKind::Translation));
        }
        let mut table = s2.table;
        let mut level = s2.start_level;
        loop {
            let shift = 12 + 9 * (3 - level);
            let index = if level == s2.start_level {
                ipa >> shift
            } else {
                (ipa >> shift) & 0x1ff
            };
            let entry_addr = table + 8 * index;
            if !self.memory.contains(entry_addr) {
                return Err(fault(EventKind::WalkAbort));
            }
            let entry = self.memory.read_u64(entry_addr);
            let kind = entry & 3;
            let output = entry & 0x0000_ffff_ffff_f000;
            if kind == 0 || kind == 2 || (kind == 1 && (level == 0 || level == 3)) {
                return Err(fault(EventKind::Translation));
            }
            if kind == 3 && level < 3 {
                table = output;
                level += 1;
                continue;
            }
            if output >> s2.output_bits != 0 {
                return Err(fault(EventKind::AddressSize));
            }
            // HTTU (SMMUv3 3.13, Arm ARM D8.4.5-6): with S2HA a clear AF is
            // set instead of faulting; with S2HD a write to a DBM=1,
            // S2AP[1]=0 (writable-clean) leaf sets S2AP[1] (dirty).
            let mut updated = entry;
            if entry & ACCESS_FLAG == 0 && !s2.affd {
                if !s2.ha {
                    return Err(fault(EventKind::Access));
                }
                updated |= ACCESS_FLAG;
            }
            let allowed = match access {
                Access::Read => entry & (1 << 6) != 0,
                Access::Write => entry & S2AP_WRITE != 0 || (entry & DBM != 0 && s2.hd),
            };
            if !allowed {
                return Err(fault(EventKind::Permission));
            }
            if access == Access::Write && s2.hd {
                updated |= S2AP_WRITE;
            }
            if self.update && updated != entry {
                self.memory.write_u64(entry_addr, updated);
            }
            let mask = (1u64 << shift) - 1;
            return Ok(((output & !mask) | (ipa & mask), (entry >> 2 & 0xf) as u8));
        }
    }

    /// The physical address of CD `substream` (SMMUv3 5.3): S1Fmt 0 a
    /// linear table; 1 (2) a level-1 table of L1CDs (V bit 0, L2Ptr
    /// 51:12) indexed by SubstreamID\[S1CDMax-1:6\] (\[..:10\]) over leaf
    /// tables of 64 (1024) CDs. Table addresses are IPAs under stage 2; an
    /// invalid L1CD is C_BAD_SUBSTREAMID.
    fn cd_address(&self, ste: &Ste, s2: Option<&Stage2>, substream: u32) -> Result<u64, Outcome> {
        let fetch = |ipa: u64| {
            self.maybe_stage2(s2, ipa, Access::Read, FaultClass::ContextDescriptor)
                .map_err(|fault| self.fault_outcome(fault))
        };
        let split = match bits(ste.0[0], 5, 4) {
            0 => return fetch(ste.context_pointer() + 64 * u64::from(substream)),
            1 => 6,
            _ => 10,
        };
        let l1_pa = fetch(ste.context_pointer() + 8 * u64::from(substream >> split))?;
        if !self.memory.contains(l1_pa) {
            return Err(self.event(EventKind::CdFetch));
        }
        let l1 = self.memory.read_u64(l1_pa);
        if l1 & 1 == 0 {
            return Err(self.event(EventKind::BadSubstreamId));
        }
        let index = u64::from(substream & ((1 << split) - 1));
        fetch((l1 & 0x000f_ffff_ffff_f000) + 64 * index)
    }

    fn maybe_stage2(
        &self,
        s2: Option<&Stage2>,
        ipa: u64,
        access: Access,
        class: FaultClass,
    ) -> Result<u64, Fault> {
        match s2 {
            Some(s2) => self.stage2(s2, ipa, access, class),
            None => Ok(ipa),
        }
    }

    /// VMSAv8-64 stage-1 walk from a CD, 4 KiB granule, TTB0 only:
    /// AP\[2\] (bit 7) read-only; APTable\[1\] (bit 62) removes write below;
    /// AF bit 10; output bits 47:12 limited by CD.IPS. Returns the output
    /// address and the leaf's AttrIndx (bits 4:2).
    fn stage1(
        &self,
        cd: [u64; 8],
        s2: Option<&Stage2>,
        record: bool,
        oas_bits: u32,
    ) -> Result<(u64, u8), Fault> {
        let address = self.request.address;
        let access = self.request.access;
        let fault = |kind| Fault {
            kind,
            stage2: false,
            class: FaultClass::Input,
            ipa: 0,
            record,
        };
        let t0sz = (cd[0] & 0x3f) as u32;
        let input_bits = 64 - t0sz;
        if address >> input_bits != 0 || cd[0] & (1 << 14) != 0 {
            return Err(fault(EventKind::Translation));
        }
        let output_bits = address_size_bits(((cd[0] >> 32) & 7) as u32)
            .unwrap_or(48)
            .min(oas_bits);
        let mut level = crate::smmuv3::ste::start_level_4k(input_bits);
        let mut table_ipa = cd[1] & 0x000f_ffff_ffff_f000;
        let mut write_allowed = true;
        loop {
            let table =
                self.maybe_stage2(s2, table_ipa, Access::Read, FaultClass::TranslationTable)?;
            let shift = 12 + 9 * (3 - level);
            let index = (address >> shift) & 0x1ff;
            let entry_addr = table + 8 * index;
            if !self.memory.contains(entry_addr) {
                return Err(fault(EventKind::WalkAbort));
            }
            let entry = self.memory.read_u64(entry_addr);
            let kind = entry & 3;
            let output = entry & 0x0000_ffff_ffff_f000;
            if kind == 0 || kind == 2 || (kind == 1 && (level == 0 || level == 3)) {
                return Err(fault(EventKind::Translation));
            }
            if output >> output_bits != 0 {
                return Err(fault(EventKind::AddressSize));
            }
            if kind == 3 && level < 3 {
                if entry & (1 << 62) != 0 {
                    write_allowed = false;
                }
                table_ipa = output;
                level += 1;
                continue;
            }
            if entry & (1 << 10) == 0 {
                return Err(fault(EventKind::Access));
            }
            if access == Access::Write && (entry & (1 << 7) != 0 || !write_allowed) {
                return Err(fault(EventKind::Permission));
            }
            let mask = (1u64 << shift) - 1;
            return Ok(((output & !mask) | (address & mask), (entry >> 2 & 7) as u8));
        }
    }
}

impl SmmuModel {
    /// Finds the STE for `stream_id` (SMMUv3 3.3.2, 6.3.24), or the event.
    fn fetch_ste(&self, memory: &SimMemory, stream_id: u32) -> Result<Ste, EventKind> {
        let log2size = self.strtab_cfg & 0x3f;
        if u64::from(stream_id) >> log2size.min(self.features.idr1.sidsize()) != 0 {
            return Err(EventKind::BadStreamId);
        }
        let address = if (self.strtab_cfg >> 16) & 3 == 1 {
            let split = (self.strtab_cfg >> 6) & 0x1f;
            let descriptor = memory.read_u64(self.strtab_base + 8 * u64::from(stream_id >> split));
            let span = (descriptor & 0x1f) as u32;
            if span == 0 {
                return Err(EventKind::BadStreamId);
            }
            let index = stream_id & ((1 << split) - 1);
            if u64::from(index) >= 1u64 << (span - 1) {
                return Err(EventKind::BadSte);
            }
            (descriptor & 0x000f_ffff_ffff_ffc0) + 64 * u64::from(index)
        } else {
            self.strtab_base + 64 * u64::from(stream_id)
        };
        if !memory.contains(address) {
            return Err(EventKind::SteFetch);
        }
        let mut ste = Ste::default();
        for (i, word) in ste.0.iter_mut().enumerate() {
            *word = memory.read_u64(address + 8 * i as u64);
        }
        Ok(ste)
    }

    /// Translates one transaction, with the hardware table updates
    /// (HTTU) the STE enables.
    pub fn translate(&self, memory: &SimMemory, request: SmmuRequest) -> Outcome {
        match self.translate_with_attributes(memory, request) {
            Ok(translation) => Outcome::Translated(translation.address),
            Err(outcome) => outcome,
        }
    }

    /// [`SmmuModel::translate`] without table updates: what a walk would
    /// answer, changing nothing.
    pub fn probe(&self, memory: &SimMemory, request: SmmuRequest) -> Outcome {
        match self.translate_inner(memory, request, false) {
            Ok(translation) => Outcome::Translated(translation.address),
            Err(outcome) => outcome,
        }
    }

    /// Translates one transaction and says which memory attributes the
    /// access uses; `Err` holds the abort or fault [`Self::translate`] reports.
    pub fn translate_with_attributes(
        &self,
        memory: &SimMemory,
        request: SmmuRequest,
    ) -> Result<Translation, Outcome> {
        self.translate_inner(memory, request, true)
    }

    fn stage2_of(&self, ste: &Ste) -> Stage2 {
        let httu = self.features.idr0.httu();
        Stage2 {
            table: ste.s2_table(),
            input_bits: 64 - ste.s2_t0sz() as u32,
            start_level: match ste.s2_sl0() {
                0 => 2,
                1 => 1,
                _ => 0,
            },
            output_bits: address_size_bits(ste.s2_ps() as u32)
                .unwrap_or(32)
                .min(self.features.idr5.oas_bits()),
            affd: ste.s2_affd(),
            record: ste.s2_record(),
            fwb: ste.s2_fwb(),
            ha: httu >= 1 && ste.s2_ha(),
            hd: httu >= 2 && ste.s2_hd(),
        }
    }

    fn translate_inner(
        &self,
        memory: &SimMemory,
        request: SmmuRequest,
        update: bool,
    ) -> Result<Translation, Outcome> {
        let walk = Walk {
            memory,
            request,
            update,
        };
        let ste = self
            .fetch_ste(memory, request.stream_id)
            .map_err(|kind| walk.event(kind))?;
        if !ste.valid() || ste.check(&self.features).is_err() {
            return Err(walk.event(EventKind::BadSte));
        }
        let cfg = ste.config();
        if cfg == config::ABORT {
            return Err(Outcome::Aborted);
        }
        if cfg == config::BYPASS {
            return if request.substream_id.is_some() {
                Err(walk.event(EventKind::BadSubstreamId))
            } else {
                Ok(Translation {
                    address: request.address,
                    attributes: MemoryAttributes::WRITE_BACK,
                })
            };
        }
        let s2 = (cfg & 2 != 0).then(|| self.stage2_of(&ste));
        // The last stage: stage 2 if enabled, combining its MemAttr with
        // what stage 1 (or the incoming transaction) chose.
        let finish = |ipa: u64, stage1: MemoryAttributes| match s2 {
            Some(s2) => walk
                .stage2_leaf(&s2, ipa, request.access, FaultClass::Input)
                .map(|(address, mem_attr)| Translation {
                    address,
                    attributes: MemoryAttributes::combine(stage1, mem_attr, s2.fwb),
                })
                .map_err(|fault| walk.fault_outcome(fault)),
            None => Ok(Translation {
                address: ipa,
                attributes: stage1,
            }),
        };
        if cfg & 1 == 0 {
            // Stage 2 only.
            if request.substream_id.is_some() {
                return Err(walk.event(EventKind::BadSubstreamId));
            }
            return finish(request.address, MemoryAttributes::WRITE_BACK);
        }
        // Stage 1: choose the CD.
        let cdmax = ste.s1_cdmax();
        let substream = match request.substream_id {
            Some(ssid) => {
                if cdmax == 0 || u64::from(ssid) >> cdmax != 0 {
                    return Err(walk.event(EventKind::BadSubstreamId));
                }
                ssid
            }
            None if cdmax == 0 => 0,
            None => match ste.s1_dss() {
                // Stage 1 bypassed for transactions without SSID.
                0b01 => return finish(request.address, MemoryAttributes::WRITE_BACK),
                0b10 => 0,
                _ => return Err(walk.event(EventKind::BadSubstreamId)),
            },
        };
        let cd_pa = walk.cd_address(&ste, s2.as_ref(), substream)?;
        if !memory.contains(cd_pa) {
            return Err(walk.event(EventKind::CdFetch));
        }
        let mut cd = [0u64; 8];
        for (i, word) in cd.iter_mut().enumerate() {
            *word = memory.read_u64(cd_pa + 8 * i as u64);
        }
        let s1stalld = ste.0[1] >> 27 & 1 == 1;
        self.check_cd(cd, s1stalld)
            .map_err(|kind| walk.event(kind))?;
        let record = cd[0] & (1 << 45) != 0;
        let (ipa, attr_index) = walk
            .stage1(cd, s2.as_ref(), record, self.features.idr5.oas_bits())
            .map_err(|fault| walk.fault_outcome(fault))?;
        // CD word 3 is MAIR; AttrIndx n selects its byte n.
        let attr = (cd[3] >> (8 * u32::from(attr_index))) as u8;
        finish(ipa, MemoryAttributes::from_mair(attr))
    }

    /// The configuration the SMMU would cache for `request` (SMMUv3 3.8
    /// "Configuration and translation lookup"): abort, bypass, or the VMID
    /// and ASID (stage 1) its TLB entries are tagged with. `None` when the
    /// configuration does not decode.
    pub fn config_tag(&self, memory: &SimMemory, request: SmmuRequest) -> Option<ConfigTag> {
        let ste = self.fetch_ste(memory, request.stream_id).ok()?;
        if !ste.valid() || ste.check(&self.features).is_err() {
            return None;
        }
        match ste.config() {
            config::ABORT => return Some(ConfigTag::Abort),
            config::BYPASS => return Some(ConfigTag::Bypass),
            // Stage 1 off: a SubstreamID is C_BAD_SUBSTREAMID before any
            // TLB lookup (the walk says so; no cached entry may answer).
            cfg if cfg & 1 == 0 && request.substream_id.is_some() => return None,
            cfg if cfg & 1 == 0 => {
                return Some(ConfigTag::Translate {
                    vmid: ste.vmid(),
                    asid: None,
                });
            }
            _ => {}
        }
        let cdmax = ste.s1_cdmax();
        let substream = match request.substream_id {
            Some(ssid) if cdmax != 0 && u64::from(ssid) >> cdmax == 0 => ssid,
            None if cdmax == 0 || ste.s1_dss() == 0b10 => 0,
            None if ste.s1_dss() == 0b01 => {
                return Some(ConfigTag::Translate {
                    vmid: ste.vmid(),
                    asid: None,
                });
            }
            _ => return None,
        };
        let walk = Walk {
            memory,
            request,
            update: false,
        };
        let s2 = (ste.config() & 2 != 0).then(|| Stage2 {
            record: false,
            ..self.stage2_of(&ste)
        });
        let cd_pa = walk.cd_address(&ste, s2.as_ref(), substream).ok()?;
        let word0 = memory.read_u64(cd_pa);
        Some(ConfigTag::Translate {
            vmid: ste.vmid(),
            asid: Some((word0 >> 48) as u16),
        })
    }

    /// Whether `stream_id`'s STE has stage-2 dirty tracking on (S2HD with
    /// IDR0.HTTU = 2).
    pub fn dirty_tracking(&self, memory: &SimMemory, stream_id: u32) -> bool {
        self.features.idr0.httu() >= 2
            && self
                .fetch_ste(memory, stream_id)
                .is_ok_and(|ste| ste.valid() && ste.config() & 2 != 0 && ste.s2_hd())
    }

    /// Whether a stage-1 translation fault of `request` stalls rather than
    /// terminates (SMMUv3 3.12.2): the SMMU can stall (IDR0.STALL_MODEL
    /// 0b00, or 0b10 forced), the STE allows it (S1STALLD=0) and the CD
    /// asks for it (CD.S=1).
    pub fn stalls(&self, memory: &SimMemory, request: SmmuRequest) -> bool {
        let model = self.features.idr0.stall_model();
        if model == 1 {
            return false;
        }
        let Ok(ste) = self.fetch_ste(memory, request.stream_id) else {
            return false;
        };
        if !ste.valid() || ste.config() & 1 == 0 || (model == 0 && ste.0[1] >> 27 & 1 == 1) {
            return false;
        }
        let substream = request.substream_id.unwrap_or(0);
        let walk = Walk {
            memory,
            request,
            update: false,
        };
        let s2 = (ste.config() & 2 != 0).then(|| self.stage2_of(&ste));
        walk.cd_address(&ste, s2.as_ref(), substream)
            .is_ok_and(|cd_pa| memory.read_u64(cd_pa) >> 44 & 1 == 1)
    }

    /// CD checks (SMMUv3 5.4 ILLEGAL values, plus QEMU's `decode_cd`
    /// limits). CD.S (5.5): ILLEGAL set where the SMMU cannot stall
    /// (STALL_MODEL 0b01) or the STE disabled stalls (S1STALLD under
    /// 0b00), and clear where stalls are forced (0b10).
    fn check_cd(&self, cd: [u64; 8], s1stalld: bool) -> Result<(), EventKind> {
        let word0 = cd[0];
        let stall = word0 & (1 << 44) != 0;
        let stall_model = self.features.idr0.stall_model();
        let bad = word0 & (1 << 31) == 0 // V
            || word0 & (1 << 41) == 0 // AA64
            || (self.features.idr0.term_model() && word0 & (1 << 46) == 0) // A
            || (stall_model == 1 && stall)
            || (stall_model == 0 && s1stalld && stall)
            || (stall_model == 2 && !stall)
            || word0 & (3 << 42) != 0 // HA/HD: stage-1 HTTU is not modelled
            || word0 & (1 << 15) != 0 // ENDI
            || (word0 >> 6) & 3 != 0 // TG0 != 4K
            || !(16..=39).contains(&(word0 & 0x3f)); // T0SZ
        if bad { Err(EventKind::BadCd) } else { Ok(()) }
    }
}
