//! VT-d translation structures: root and context entries (legacy and
//! scalable mode), PASID directory and table entries, and the second-stage
//! and first-stage paging-entry formats.
//!
//! Source: VT-d chapter 9 ("Translation Structure Formats"): 9.1 root entry,
//! 9.2 scalable-mode root entry, 9.3 context entry, 9.4 scalable-mode
//! context entry, 9.5 PASID directory entry, 9.6 PASID table entry, 9.7
//! first-stage paging entries, 9.8 second-stage paging entries.

use super::VtdError;
use super::regs::{Capability, ExtendedCapability, Sagaw};
use crate::PhysAddr;
use crate::pagetable::{PageTableFormat, Perms};

const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Legacy root entry (VT-d 9.1): P bit 0, CTP bits 63:12 of the low quadword.
pub fn legacy_root_entry(context_table: PhysAddr) -> [u64; 2] {
    [(context_table & ADDRESS_MASK) | 1, 0]
}

/// Scalable-mode root entry (VT-d 9.2): LP/LCTP in the low quadword for
/// devfn 0-127, UP/UCTP in the high quadword for devfn 128-255.
pub fn scalable_root_entry(lower: Option<PhysAddr>, upper: Option<PhysAddr>) -> [u64; 2] {
    let half = |table: Option<PhysAddr>| table.map_or(0, |t| (t & ADDRESS_MASK) | 1);
    [half(lower), half(upper)]
}

/// Second-stage depth: AW field values (VT-d 9.3 context AW, 9.6 PASID AW).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecondStageLevels {
    /// AW=1: 39-bit, 3-level.
    Three,
    /// AW=2: 48-bit, 4-level.
    Four,
}

impl SecondStageLevels {
    /// The AW field.
    pub fn aw(self) -> u64 {
        match self {
            Self::Three => 1,
            Self::Four => 2,
        }
    }
    /// Number of levels.
    pub fn height(self) -> u32 {
        match self {
            Self::Three => 3,
            Self::Four => 4,
        }
    }
    /// Input bits covered.
    pub fn input_bits(self) -> u32 {
        12 + 9 * self.height()
    }
    /// The deepest depth CAP.SAGAW offers (4-level preferred), limited by MGAW.
    pub fn best(cap: Capability) -> Option<Self> {
        if cap.sagaw().contains(Sagaw::LEVEL4_48BIT) {
            Some(Self::Four)
        } else if cap.sagaw().contains(Sagaw::LEVEL3_39BIT) {
            Some(Self::Three)
        } else {
            None
        }
    }
    fn check(self, cap: Capability) -> Result<(), VtdError> {
        let flag = match self {
            Self::Three => Sagaw::LEVEL3_39BIT,
            Self::Four => Sagaw::LEVEL4_48BIT,
        };
        if cap.sagaw().contains(flag) {
            Ok(())
        } else {
            Err(VtdError::Unsupported {
                what: "second-stage depth not in CAP.SAGAW",
            })
        }
    }
}

fn check_domain(cap: Capability, domain: u16) -> Result<(), VtdError> {
    if u32::from(domain) >> cap.domain_id_bits() != 0 {
        return Err(VtdError::InvalidParameter {
            what: "domain id wider than CAP.ND allows",
        });
    }
    if cap.cm() && domain == 0 {
        return Err(VtdError::InvalidParameter {
            what: "domain id 0 is reserved when CAP.CM=1",
        });
    }
    Ok(())
}

/// What a legacy context entry does for its device (VT-d 9.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyContext {
    /// TT=00: untranslated requests go through the second-stage table.
    Translated {
        /// Domain id (DID, high bits 23:8).
        domain: u16,
        /// Second-stage root (SLPTPTR, low bits 63:12).
        table: PhysAddr,
        /// Depth (AW, high bits 2:0).
        levels: SecondStageLevels,
    },
    /// TT=10: pass-through (needs ECAP.PT).
    PassThrough {
        /// Domain id.
        domain: u16,
    },
}

/// Encodes a legacy context entry (VT-d 9.3): low P bit 0, FPD bit 1 (0:
/// faults recorded), TT bits 3:2, SLPTPTR 63:12; high AW 2:0, DID 23:8.
pub fn legacy_context_entry(
    context: LegacyContext,
    cap: Capability,
    ecap: ExtendedCapability,
) -> Result<[u64; 2], VtdError> {
    match context {
        LegacyContext::Translated {
            domain,
            table,
            levels,
        } => {
            check_domain(cap, domain)?;
            levels.check(cap)?;
            Ok([
                (table & ADDRESS_MASK) | 1,
                levels.aw() | u64::from(domain) << 8,
            ])
        }
        LegacyContext::PassThrough { domain } => {
            check_domain(cap, domain)?;
            if !ecap.pt() {
                return Err(VtdError::Unsupported {
                    what: "pass-through (ECAP.PT)",
                });
            }
            let levels = SecondStageLevels::best(cap).ok_or(VtdError::Unsupported {
                what: "any second-stage depth (CAP.SAGAW)",
            })?;
            Ok([2 << 2 | 1, levels.aw() | u64::from(domain) << 8])
        }
    }
}

/// PASID directory size this driver uses: one 4 KiB page of 512 entries
/// (PDTS=2: 2^(2+7) entries), i.e. PASIDs 0..32768.
pub const PASID_DIRECTORY_PDTS: u64 = 2;
/// PASIDs covered by one directory page.
pub const PASID_LIMIT: u32 = 512 * 64;

/// Encodes a scalable-mode context entry (VT-d 9.4): word 0 P bit 0, FPD
/// bit 1, DTE bit 2, PASIDE bit 3, PRE bit 4, PDTS bits 11:9, PASIDDIRPTR
/// bits 63:12; word 1 RID_PASID bits 19:0.
pub fn scalable_context_entry(
    pasid_directory: PhysAddr,
    rid_pasid: u32,
    pasid_enable: bool,
) -> [u64; 4] {
    [
        (pasid_directory & ADDRESS_MASK)
            | 1
            | u64::from(pasid_enable) << 3
            | PASID_DIRECTORY_PDTS << 9,
        u64::from(rid_pasid & 0xf_ffff),
        0,
        0,
    ]
}

/// A scalable-mode context entry as [`scalable_context_entry`], plus PRE
/// (word 0 bit 4) when `page_requests`: the device's page requests are
/// accepted into the page request queue (VT-d 9.4; needs ECAP.PRS).
pub fn scalable_context_entry_with_page_requests(
    pasid_directory: PhysAddr,
    rid_pasid: u32,
    pasid_enable: bool,
    page_requests: bool,
) -> [u64; 4] {
    let mut entry = scalable_context_entry(pasid_directory, rid_pasid, pasid_enable);
    entry[0] |= u64::from(page_requests) << 4;
    entry
}

/// PASID directory entry (VT-d 9.5): P bit 0, FPD bit 1, SMPTBLPTR 63:12.
pub fn pasid_directory_entry(pasid_table: PhysAddr) -> u64 {
    (pasid_table & ADDRESS_MASK) | 1
}

/// What a scalable-mode PASID entry does (VT-d 9.6, PGTT bits 8:6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasidConfig {
    /// PGTT=001b: first stage only (needs ECAP.FLTS).
    FirstStage {
        /// Domain id.
        domain: u16,
        /// First-stage root (FSPTPTR, word 2 bits 63:12), a physical address.
        table: PhysAddr,
    },
    /// PGTT=010b: second stage only (needs ECAP.SLTS).
    SecondStage {
        /// Domain id.
        domain: u16,
        /// Second-stage root (SSPTPTR, word 0 bits 63:12).
        table: PhysAddr,
        /// Depth (AW, word 0 bits 4:2).
        levels: SecondStageLevels,
    },
    /// PGTT=011b: first stage nested in second stage (needs ECAP.NEST);
    /// the first-stage root and every first-stage table are guest-physical.
    Nested {
        /// Domain id (shared by both stages).
        domain: u16,
        /// First-stage root, a guest-physical (IPA) address.
        first_stage_table: PhysAddr,
        /// Second-stage root.
        second_stage_table: PhysAddr,
        /// Second-stage depth.
        levels: SecondStageLevels,
    },
    /// PGTT=100b: pass-through (needs ECAP.PT).
    PassThrough {
        /// Domain id.
        domain: u16,
    },
}

/// One 512-bit scalable-mode PASID table entry (VT-d 9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PasidEntry(pub [u64; 8]);

impl PasidEntry {
    /// Encodes after checking the unit supports the configuration. Word 0:
    /// P bit 0, FPD bit 1 (0), AW 4:2, PGTT 8:6, SSPTPTR 63:12. Word 1:
    /// DID 15:0. Word 2: SRE bit 0 (0: user requests only), FLPM 3:2
    /// (0: 4-level), FSPTPTR 63:12.
    pub fn encode(
        config: PasidConfig,
        cap: Capability,
        ecap: ExtendedCapability,
    ) -> Result<Self, VtdError> {
        let mut words = [0u64; 8];
        match config {
            PasidConfig::FirstStage { domain, table } => {
                check_domain(cap, domain)?;
                if !ecap.flts() {
                    return Err(VtdError::Unsupported {
                        what: "first-stage translation (ECAP.FLTS)",
                    });
                }
                // AW (word 0 bits 4:2) describes the second stage, which a
                // first-stage entry has none of; it is set to 4-level
                // (48-bit) anyway: QEMU 10 derives the input width of a
                // first-stage walk from it (AW = 0 would make every IOVA
                // from 1 GiB up "non-canonical", fault 0x80).
                words[0] = 1 | SecondStageLevels::Four.aw() << 2 | 0b001 << 6;
                words[1] = u64::from(domain);
                words[2] = table & ADDRESS_MASK;
            }
            PasidConfig::SecondStage {
                domain,
                table,
                levels,
            } => {
                check_domain(cap, domain)?;
                levels.check(cap)?;
                if !ecap.slts() {
                    return Err(VtdError::Unsupported {
                        what: "second-stage translation in scalable mode (ECAP.SLTS)",
                    });
                }
                words[0] = 1 | levels.aw() << 2 | 0b010 << 6 | (table & ADDRESS_MASK);
                words[1] = u64::from(domain);
            }
            PasidConfig::Nested {
                domain,
                first_stage_table,
                second_stage_table,
                levels,
            } => {
                check_domain(cap, domain)?;
                levels.check(cap)?;
                if !ecap.nest() || !ecap.flts() || !ecap.slts() {
                    return Err(VtdError::Unsupported {
                        what: "nested translation (ECAP.NEST with FLTS and SLTS)",
                    });
                }
                words[0] = 1 | levels.aw() << 2 | 0b011 << 6 | (second_stage_table & ADDRESS_MASK);
                words[1] = u64::from(domain);
                words[2] = first_stage_table & ADDRESS_MASK;
            }
            PasidConfig::PassThrough { domain } => {
                check_domain(cap, domain)?;
                if !ecap.pt() {
                    return Err(VtdError::Unsupported {
                        what: "pass-through (ECAP.PT)",
                    });
                }
                let levels = SecondStageLevels::best(cap).ok_or(VtdError::Unsupported {
                    what: "any second-stage depth (CAP.SAGAW)",
                })?;
                words[0] = 1 | levels.aw() << 2 | 0b100 << 6;
                words[1] = u64::from(domain);
            }
        }
        Ok(Self(words))
    }

    /// Encodes without capability checks: QEMU cross-check tests use this
    /// to write a nested entry on a unit without ECAP.NEST (QEMU then
    /// faults with 0x5B). Parameters are still range-checked against a
    /// 16-bit-DID, 3/4-level unit; an out-of-range one yields a zeroed
    /// (not-present) entry.
    pub fn encode_unchecked(config: PasidConfig) -> Self {
        let cap = Capability(0x00d2_008c_222f_0606);
        let every_feature = ExtendedCapability(u64::MAX);
        Self::encode(config, cap, every_feature).unwrap_or_default()
    }

    /// The entry with second-stage A/D updates (SSADE, word 0 bit 9) on or
    /// off: dirty tracking of a PGTT second-stage or nested entry. Needs
    /// ECAP.SLADS (QEMU 10.0.2 has none).
    pub fn with_dirty_tracking(
        mut self,
        on: bool,
        ecap: ExtendedCapability,
    ) -> Result<Self, VtdError> {
        if on && !ecap.slads() {
            return Err(VtdError::Unsupported {
                what: "second-stage dirty tracking (ECAP.SLADS)",
            });
        }
        if !matches!(self.pgtt(), 0b010 | 0b011) {
            return Err(VtdError::InvalidParameter {
                what: "dirty tracking needs a second-stage or nested PASID entry",
            });
        }
        self.0[0] = (self.0[0] & !PASID_SSADE) | if on { PASID_SSADE } else { 0 };
        Ok(self)
    }

    /// SSADE (word 0 bit 9).
    pub fn dirty_tracking(&self) -> bool {
        self.0[0] & PASID_SSADE != 0
    }

    /// PGTT (word 0 bits 8:6).
    pub fn pgtt(&self) -> u64 {
        (self.0[0] >> 6) & 7
    }
    /// DID (word 1 bits 15:0).
    pub fn domain(&self) -> u16 {
        self.0[1] as u16
    }
}

/// VT-d second-stage paging entries (VT-d 9.8): R bit 0, W bit 1, PS bit 7
/// (leaf above height 1), address bits 51:12. Non-leaf entries carry R|W
/// (rights are ANDed down the walk). Snoop and memory type are left 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecondStageFormat {
    /// Largest leaf height allowed (1, 2 with SLLPS 2 MiB, 3 with 1 GiB).
    pub max_leaf_height: u32,
}

impl SecondStageFormat {
    /// The format with the large pages CAP.SLLPS allows.
    pub fn for_unit(cap: Capability) -> Self {
        let max_leaf_height = if cap.second_stage_1g() {
            3
        } else if cap.second_stage_2m() {
            2
        } else {
            1
        };
        Self { max_leaf_height }
    }
}

impl PageTableFormat for SecondStageFormat {
    fn table_entry(&self, table: PhysAddr) -> u64 {
        (table & ADDRESS_MASK) | 0b11
    }
    fn leaf_entry(&self, address: PhysAddr, height: u32, perms: Perms) -> u64 {
        let large = if height > 1 { 1 << 7 } else { 0 };
        (address & ADDRESS_MASK) | u64::from(perms.read) | u64::from(perms.write) << 1 | large
    }
    fn is_present(&self, entry: u64) -> bool {
        entry & 0b11 != 0
    }
    fn is_table(&self, entry: u64, height: u32) -> bool {
        height > 1 && entry & (1 << 7) == 0
    }
    fn perms(&self, entry: u64) -> Perms {
        Perms {
            read: entry & 1 != 0,
            write: entry & 2 != 0,
        }
    }
    fn max_leaf_height(&self) -> u32 {
        self.max_leaf_height
    }
    /// With the PASID entry's SSADE (ECAP.SLADS), the unit sets A (bit 8)
    /// and, on writes, D (bit 9) in second-stage entries (VT-d 9.8).
    fn tracks_dirty(&self) -> bool {
        true
    }
    fn is_dirty(&self, entry: u64) -> bool {
        entry & SECOND_STAGE_DIRTY != 0
    }
    fn clean(&self, entry: u64) -> u64 {
        entry & !SECOND_STAGE_DIRTY
    }
    fn mark_dirty(&self, entry: u64) -> u64 {
        entry | SECOND_STAGE_DIRTY
    }
}

/// Second-stage entry Accessed bit (VT-d 9.8, with SSADE).
pub const SECOND_STAGE_ACCESSED: u64 = 1 << 8;
/// Second-stage entry Dirty bit (VT-d 9.8, with SSADE).
pub const SECOND_STAGE_DIRTY: u64 = 1 << 9;
/// First-stage entry Accessed bit (VT-d 9.7).
pub const FIRST_STAGE_ACCESSED: u64 = 1 << 5;
/// First-stage leaf Dirty bit (VT-d 9.7).
pub const FIRST_STAGE_DIRTY: u64 = 1 << 6;
/// PASID entry SSADE: second-stage A/D updates enabled (word 0 bit 9; needs ECAP.SLADS).
pub const PASID_SSADE: u64 = 1 << 9;

/// VT-d first-stage paging entries, IA-32e format (VT-d 9.7): P bit 0,
/// R/W bit 1, U/S bit 2 (set: DMA requests are user-privilege), A bit 5,
/// D bit 6 (pre-set on writable leaves so no A/D update is needed), PS
/// bit 7, address bits 51:12, XD bit 63 (0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstStageFormat {
    /// Largest leaf height allowed (2, or 3 with CAP.FL1GP).
    pub max_leaf_height: u32,
}

impl FirstStageFormat {
    /// The format with the large pages CAP allows.
    pub fn for_unit(cap: Capability) -> Self {
        Self {
            max_leaf_height: if cap.fl1gp() { 3 } else { 2 },
        }
    }
}

impl PageTableFormat for FirstStageFormat {
    fn table_entry(&self, table: PhysAddr) -> u64 {
        (table & ADDRESS_MASK) | 0b111 | 1 << 5
    }
    fn leaf_entry(&self, address: PhysAddr, height: u32, perms: Perms) -> u64 {
        let large = if height > 1 { 1 << 7 } else { 0 };
        let write = if perms.write { 1 << 1 | 1 << 6 } else { 0 };
        (address & ADDRESS_MASK) | 1 | 1 << 2 | 1 << 5 | write | large
    }
    fn is_present(&self, entry: u64) -> bool {
        entry & 1 != 0
    }
    fn is_table(&self, entry: u64, height: u32) -> bool {
        height > 1 && entry & (1 << 7) == 0
    }
    fn perms(&self, entry: u64) -> Perms {
        Perms {
            read: true,
            write: entry & 2 != 0,
        }
    }
    fn max_leaf_height(&self) -> u32 {
        self.max_leaf_height
    }
    /// The unit sets A at every level and D on the leaf for a write
    /// (VT-d 9.7; live in QEMU with `x-flts=on`). Leaves are written with
    /// D pre-set, so tracking starts with a clearing pass.
    fn tracks_dirty(&self) -> bool {
        true
    }
    fn is_dirty(&self, entry: u64) -> bool {
        entry & 2 != 0 && entry & FIRST_STAGE_DIRTY != 0
    }
    /// Clears A as well as D: QEMU 10.0.2 writes neither into a leaf that
    /// has A set (`vtd_set_flag_in_pte` skips the update when any of the
    /// bits is set), so a leaf left accessed would never turn dirty there.
    /// A clear A only means the unit sets it again.
    fn clean(&self, entry: u64) -> u64 {
        entry & !(FIRST_STAGE_DIRTY | FIRST_STAGE_ACCESSED)
    }
    /// A writable leaf with A or D set: QEMU 10.0.2 sets D only in a leaf
    /// whose A is clear, so a clear resets a leaf a read walked too (a
    /// page read, then written in a later round, is then reported).
    fn needs_clean(&self, entry: u64) -> bool {
        entry & 2 != 0 && entry & (FIRST_STAGE_DIRTY | FIRST_STAGE_ACCESSED) != 0
    }
    fn mark_dirty(&self, entry: u64) -> u64 {
        if entry & 2 != 0 {
            entry | FIRST_STAGE_DIRTY | FIRST_STAGE_ACCESSED
        } else {
            entry
        }
    }
}

/// The format of an IoSpace's table on a VT-d unit: second stage where
/// the unit has one (legacy mode, or ECAP.SLTS), else first stage (x86
/// 4-level paging, entered through a PASID entry with PGTT = first
/// stage): a unit with FLTS and no SLTS, such as QEMU's `x-flts=on`,
/// whose first-stage A/D bits make `IoSpace.ReadDirty` work there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceFormat {
    /// Second-stage entries (VT-d 9.8).
    Second(SecondStageFormat),
    /// First-stage entries (VT-d 9.7), U/S set at every level.
    First(FirstStageFormat),
}

impl SpaceFormat {
    /// The second-stage format, if the table is in it.
    pub fn second(self) -> Option<SecondStageFormat> {
        match self {
            Self::Second(format) => Some(format),
            Self::First(_) => None,
        }
    }
}

/// Forwards each [`PageTableFormat`] method to the variant's format.
macro_rules! forward {
    ($self:ident, $f:ident => $call:expr) => {
        match $self {
            SpaceFormat::Second($f) => $call,
            SpaceFormat::First($f) => $call,
        }
    };
}

impl PageTableFormat for SpaceFormat {
    fn table_entry(&self, table: PhysAddr) -> u64 {
        forward!(self, f => f.table_entry(table))
    }
    fn leaf_entry(&self, address: PhysAddr, height: u32, perms: Perms) -> u64 {
        forward!(self, f => f.leaf_entry(address, height, perms))
    }
    fn is_present(&self, entry: u64) -> bool {
        forward!(self, f => f.is_present(entry))
    }
    fn is_table(&self, entry: u64, height: u32) -> bool {
        forward!(self, f => f.is_table(entry, height))
    }
    fn perms(&self, entry: u64) -> Perms {
        forward!(self, f => f.perms(entry))
    }
    fn address(&self, entry: u64) -> PhysAddr {
        forward!(self, f => f.address(entry))
    }
    fn max_leaf_height(&self) -> u32 {
        forward!(self, f => f.max_leaf_height())
    }
    fn tracks_dirty(&self) -> bool {
        forward!(self, f => f.tracks_dirty())
    }
    fn is_dirty(&self, entry: u64) -> bool {
        forward!(self, f => f.is_dirty(entry))
    }
    fn clean(&self, entry: u64) -> u64 {
        forward!(self, f => f.clean(entry))
    }
    fn needs_clean(&self, entry: u64) -> bool {
        forward!(self, f => f.needs_clean(entry))
    }
    fn mark_dirty(&self, entry: u64) -> u64 {
        forward!(self, f => f.mark_dirty(entry))
    }
}
