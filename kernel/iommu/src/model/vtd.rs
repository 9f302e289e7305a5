//! Executable model of VT-d DMA address translation (VT-d chapter 3,
//! "DMA Remapping", and chapter 9, "Translation Structure Formats").
//!
//! Legacy mode: root entry -> context entry -> second-stage walk or
//! pass-through. Scalable mode: root entry (lower/upper half) -> 256-bit
//! context entry -> PASID directory -> PASID table entry -> PGTT selects
//! first-stage, second-stage, nested (first-stage walk and output translated
//! by second stage) or pass-through. Faults carry the VT-d fault reason code
//! (VT-d 7.1.3); see [`crate::vtd::regs::fault_reason_name`].
//!
//! [`VtdModel::qemu_mode`] reproduces QEMU 10.0.2, which has no nesting:
//! PGTT=011b is an invalid PASID entry (reason 0x5B). QEMU also reports a
//! not-present scalable-mode root or context entry with the legacy codes
//! 0x01 / 0x02, where the specification has 0x39 / 0x41 (found by the
//! QEMU cross-check, `tests=xcheck`), and scalable-mode second-stage
//! faults with the legacy codes 0x04-0x07/0x0C instead of 0x83-0x86/0x7A
//! (hw/i386/intel_iommu.c, the second-stage walk).

use super::{Access, SimMemory};
use crate::vtd::regs::RootTableMode;
use crate::vtd::tables::{
    FIRST_STAGE_ACCESSED, FIRST_STAGE_DIRTY, SECOND_STAGE_ACCESSED, SECOND_STAGE_DIRTY,
};
use crate::{PhysMem, bit, bits};

/// Fault reason codes used by the model (VT-d 7.1.3).
pub mod reason {
    /// Legacy: root entry not present.
    pub const ROOT_NOT_PRESENT: u8 = 0x01;
    /// Legacy: context entry not present.
    pub const CONTEXT_NOT_PRESENT: u8 = 0x02;
    /// Legacy: invalid context entry programming.
    pub const CONTEXT_INVALID: u8 = 0x03;
    /// Legacy: input address above the guest address width.
    pub const ADDRESS_BEYOND_WIDTH: u8 = 0x04;
    /// Legacy: write to a read-only or not-present page.
    pub const WRITE: u8 = 0x05;
    /// Legacy: read from a not-readable page.
    pub const READ: u8 = 0x06;
    /// Legacy: paging entry fetch failed.
    pub const PAGING_ACCESS: u8 = 0x07;
    /// Legacy: reserved bit set in a paging entry.
    pub const PAGING_RESERVED: u8 = 0x0c;
    /// Legacy: request type blocked by the context entry (e.g. PASID request).
    pub const CONTEXT_TT: u8 = 0x0d;
    /// Scalable: root entry not present.
    pub const SM_ROOT_NOT_PRESENT: u8 = 0x39;
    /// Scalable: context entry not present.
    pub const SM_CONTEXT_NOT_PRESENT: u8 = 0x41;
    /// Scalable: PASID-tagged request but context PASIDE clear.
    pub const SM_PASID_DISABLED: u8 = 0x45;
    /// Scalable: PASID beyond the PASID directory size.
    pub const SM_PASID_TOO_LARGE: u8 = 0x46;
    /// Scalable: PASID directory entry not present.
    pub const SM_PASID_DIR_NOT_PRESENT: u8 = 0x51;
    /// Scalable: PASID table entry not present.
    pub const SM_PASID_NOT_PRESENT: u8 = 0x59;
    /// Scalable: invalid PASID table entry (unsupported PGTT, bad AW).
    pub const SM_PASID_INVALID: u8 = 0x5b;
    /// Scalable: first-stage entry fetch failed.
    pub const FS_ACCESS: u8 = 0x70;
    /// Scalable: first-stage entry not present.
    pub const FS_NOT_PRESENT: u8 = 0x71;
    /// Scalable: reserved bit in a first-stage entry.
    pub const FS_RESERVED: u8 = 0x72;
    /// Scalable: first-stage root pointer invalid.
    pub const FS_ROOT_INVALID: u8 = 0x73;
    /// Scalable, nested: first-stage root table not readable through second stage.
    pub const NESTED_FS_ROOT_READ: u8 = 0x75;
    /// Scalable, nested: first-stage entry not readable through second stage.
    pub const NESTED_FS_ENTRY_READ: u8 = 0x76;
    /// Scalable: second-stage entry fetch failed.
    pub const SS_ACCESS: u8 = 0x78;
    /// Scalable: reserved bit in a second-stage entry.
    pub const SS_RESERVED: u8 = 0x7a;
    /// Scalable: non-canonical first-stage input address.
    pub const FS_NON_CANONICAL: u8 = 0x80;
    /// Scalable: first-stage U/S clear for a user request.
    pub const FS_USER: u8 = 0x81;
    /// Scalable: input address beyond the address width.
    pub const SM_ADDRESS_BEYOND_WIDTH: u8 = 0x83;
    /// Scalable: no write permission.
    pub const SM_WRITE: u8 = 0x85;
    /// Scalable: no read permission.
    pub const SM_READ: u8 = 0x86;
}

/// What the unit supports and where its root table is (the state latched by SRTP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VtdModel {
    /// RTADDR address.
    pub root_table: u64,
    /// RTADDR.TTM.
    pub mode: RootTableMode,
    /// ECAP.NEST: nested PGTT translates. `false` is QEMU 10.0.2 (fault 0x5B).
    pub nesting: bool,
    /// ECAP.FLTS.
    pub first_stage: bool,
    /// ECAP.SLTS (scalable) / always for legacy.
    pub second_stage: bool,
    /// ECAP.PT.
    pub pass_through: bool,
    /// CAP.FL1GP.
    pub first_stage_1g: bool,
    /// CAP.MGAW in bits.
    pub mgaw: u32,
    /// Report not-present scalable root/context entries with the legacy
    /// codes 0x01/0x02, as QEMU 10.0.2 does.
    pub qemu_fault_codes: bool,
    /// ECAP.SLADS: a PASID entry's SSADE makes second-stage walks set A
    /// and D. `false` is QEMU 10.0.2 (SSADE is then a reserved bit: 0x5B).
    pub second_stage_ad: bool,
    /// QEMU 10.0.2's first-stage A/D update (`vtd_set_flag_in_pte`): the
    /// entry is written only if none of the bits is set, so a leaf with A
    /// set (a read walked it, or software wrote it so) never gets D.
    pub qemu_ad_update: bool,
}

impl VtdModel {
    /// A unit with every feature (real NEST=1 hardware).
    pub fn full(root_table: u64, mode: RootTableMode) -> Self {
        Self {
            root_table,
            mode,
            nesting: true,
            first_stage: true,
            second_stage: true,
            pass_through: true,
            first_stage_1g: true,
            mgaw: 48,
            qemu_fault_codes: false,
            second_stage_ad: true,
            qemu_ad_update: false,
        }
    }

    /// QEMU 10.0.2 behaviour: no nested translation (PGTT=nested faults 0x5B).
    pub fn qemu_mode(mut self) -> Self {
        self.nesting = false;
        self.qemu_fault_codes = true;
        self.second_stage_ad = false;
        self.qemu_ad_update = true;
        self
    }
}

/// One DMA request as the IOMMU sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Requester id: bus << 8 | devfn.
    pub source_id: u16,
    /// PASID prefix, if the request carries one.
    pub pasid: Option<u32>,
    /// Input (IO virtual) address.
    pub address: u64,
    /// Read or write.
    pub access: Access,
}

/// Tags of a cached translation (see [`VtdModel::cache_tag`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheTag {
    /// Domain id.
    pub domain: u16,
    /// PASID (RID_PASID for requests without one, 0 in legacy mode).
    pub pasid: u32,
    /// First-stage or nested (PASID-granular) rather than second-stage/pass-through.
    pub pasid_granular: bool,
}

/// A translation fault: the reason code plus the PASID used (for the record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// VT-d fault reason.
    pub reason: u8,
}

fn fault<T>(reason: u8) -> Result<T, Fault> {
    Err(Fault { reason })
}

/// Which set of fault codes a second-stage walk reports.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Codes {
    Legacy,
    Scalable,
    /// A first-stage structure fetched through second stage (nested).
    NestedFetch {
        root: bool,
    },
}

impl VtdModel {
    /// Translates `request` through the structures in `memory`, as the
    /// hardware's walk does: first-stage entries get A at every level and
    /// D on the leaf of a write (VT-d 9.7, also QEMU 10.0.2), second-stage
    /// entries A and D when the PASID entry's SSADE is set (VT-d 9.8).
    pub fn translate(&self, memory: &SimMemory, request: Request) -> Result<u64, Fault> {
        self.translate_updating(memory, request, true)
    }

    /// [`VtdModel::translate`] without the A/D updates: what a walk would
    /// answer, changing nothing (to ask whether another access would pass).
    pub fn probe(&self, memory: &SimMemory, request: Request) -> Result<u64, Fault> {
        self.translate_updating(memory, request, false)
    }

    fn translate_updating(
        &self,
        memory: &SimMemory,
        request: Request,
        update: bool,
    ) -> Result<u64, Fault> {
        match self.mode {
            RootTableMode::Legacy => self.translate_legacy(memory, request),
            RootTableMode::Scalable => self.translate_scalable(memory, request, update),
        }
    }

    /// The context entry's first two words for `source_id`, if root and
    /// context entries are present (for the PRE bit and tags).
    pub fn context_entry(&self, memory: &SimMemory, source_id: u16) -> Option<[u64; 2]> {
        let bus = u64::from(source_id >> 8);
        let devfn = u64::from(source_id & 0xff);
        let (root_addr, context_addr) = match self.mode {
            RootTableMode::Legacy => (self.root_table + bus * 16, devfn * 16),
            RootTableMode::Scalable => (
                self.root_table + bus * 16 + if devfn >= 128 { 8 } else { 0 },
                (devfn % 128) * 32,
            ),
        };
        let root = memory.read_u64(root_addr);
        bit(root, 0).then_some(())?;
        let at = (root & !0xfff) + context_addr;
        let low = memory.read_u64(at);
        bit(low, 0).then_some([low, memory.read_u64(at + 8)])
    }

    fn translate_legacy(&self, memory: &SimMemory, request: Request) -> Result<u64, Fault> {
        let bus = u64::from(request.source_id >> 8);
        let devfn = u64::from(request.source_id & 0xff);
        let root = memory.read_u64(self.root_table + bus * 16);
        if !bit(root, 0) {
            return fault(reason::ROOT_NOT_PRESENT);
        }
        let context_addr = (root & !0xfff) + devfn * 16;
        let low = memory.read_u64(context_addr);
        let high = memory.read_u64(context_addr + 8);
        if !bit(low, 0) {
            return fault(reason::CONTEXT_NOT_PRESENT);
        }
        if request.pasid.is_some() {
            return fault(reason::CONTEXT_TT);
        }
        match bits(low, 3, 2) {
            0 | 1 => {
                let levels = match bits(high, 2, 0) {
                    1 => 3,
                    2 => 4,
                    _ => return fault(reason::CONTEXT_INVALID),
                };
                self.second_stage_walk(
                    memory,
                    low & !0xfff,
                    levels,
                    request.address,
                    request.access,
                    Codes::Legacy,
                    false,
                )
            }
            2 if self.pass_through => Ok(request.address),
            _ => fault(reason::CONTEXT_INVALID),
        }
    }

    fn translate_scalable(
        &self,
        memory: &SimMemory,
        request: Request,
        update: bool,
    ) -> Result<u64, Fault> {
        let bus = u64::from(request.source_id >> 8);
        let devfn = u64::from(request.source_id & 0xff);
        let root = memory.read_u64(self.root_table + bus * 16 + if devfn >= 128 { 8 } else { 0 });
        if !bit(root, 0) {
            return fault(if self.qemu_fault_codes {
                reason::ROOT_NOT_PRESENT
            } else {
                reason::SM_ROOT_NOT_PRESENT
            });
        }
        let context_addr = (root & !0xfff) + (devfn % 128) * 32;
        let c0 = memory.read_u64(context_addr);
        let c1 = memory.read_u64(context_addr + 8);
        if !bit(c0, 0) {
            return fault(if self.qemu_fault_codes {
                reason::CONTEXT_NOT_PRESENT
            } else {
                reason::SM_CONTEXT_NOT_PRESENT
            });
        }
        let pasid = match request.pasid {
            Some(pasid) => {
                if !bit(c0, 3) {
                    return fault(reason::SM_PASID_DISABLED);
                }
                pasid
            }
            None => bits(c1, 19, 0) as u32,
        };
        let directory_entries = 1u64 << (bits(c0, 11, 9) + 7);
        let dir_index = u64::from(pasid >> 6);
        if dir_index >= directory_entries {
            return fault(reason::SM_PASID_TOO_LARGE);
        }
        let dir_entry = memory.read_u64((c0 & !0xfff) + dir_index * 8);
        if !bit(dir_entry, 0) {
            return fault(reason::SM_PASID_DIR_NOT_PRESENT);
        }
        let entry_addr = (dir_entry & !0xfff) + u64::from(pasid & 0x3f) * 64;
        let p0 = memory.read_u64(entry_addr);
        let p2 = memory.read_u64(entry_addr + 16);
        if !bit(p0, 0) {
            return fault(reason::SM_PASID_NOT_PRESENT);
        }
        // SSADE (word 0 bit 9) is reserved without ECAP.SLADS.
        let ssade = bit(p0, 9);
        if ssade && !self.second_stage_ad {
            return fault(reason::SM_PASID_INVALID);
        }
        let ss_ad = update && ssade;
        let ss_levels = || match bits(p0, 4, 2) {
            1 => Ok(3),
            2 => Ok(4),
            _ => fault(reason::SM_PASID_INVALID),
        };
        let ss_root = p0 & 0x000f_ffff_ffff_f000;
        let fs_root = p2 & 0x000f_ffff_ffff_f000;
        let fs_levels = || match bits(p2, 3, 2) {
            0 => Ok(4),
            _ => fault(reason::SM_PASID_INVALID),
        };
        match bits(p0, 8, 6) {
            0b001 if self.first_stage => {
                let levels = fs_levels()?;
                self.first_stage_walk(memory, fs_root, levels, request, None, update)
            }
            0b010 if self.second_stage => self.second_stage_walk(
                memory,
                ss_root,
                ss_levels()?,
                request.address,
                request.access,
                Codes::Scalable,
                ss_ad,
            ),
            0b011 if self.nesting && self.first_stage && self.second_stage => {
                let nested = (ss_root, ss_levels()?, ss_ad);
                let levels = fs_levels()?;
                self.first_stage_walk(memory, fs_root, levels, request, Some(nested), update)
            }
            0b100 if self.pass_through => Ok(request.address),
            _ => fault(reason::SM_PASID_INVALID),
        }
    }

    /// The tags the hardware would cache a successful translation of
    /// `request` under (VT-d 6.2.1-6.2.3): domain id, PASID (RID_PASID for
    /// requests without one; 0 in legacy mode), and whether the entry is
    /// PASID-granular (first-stage or nested, invalidated by PASID-based
    /// IOTLB descriptors) or domain-granular (second-stage only or
    /// pass-through). `None` if the structures do not resolve.
    pub fn cache_tag(&self, memory: &SimMemory, request: Request) -> Option<CacheTag> {
        let bus = u64::from(request.source_id >> 8);
        let devfn = u64::from(request.source_id & 0xff);
        match self.mode {
            RootTableMode::Legacy => {
                let root = memory.read_u64(self.root_table + bus * 16);
                let context_addr = (root & !0xfff) + devfn * 16;
                bit(root, 0).then_some(())?;
                bit(memory.read_u64(context_addr), 0).then_some(())?;
                Some(CacheTag {
                    domain: (memory.read_u64(context_addr + 8) >> 8) as u16,
                    pasid: 0,
                    pasid_granular: false,
                })
            }
            RootTableMode::Scalable => {
                let root =
                    memory.read_u64(self.root_table + bus * 16 + if devfn >= 128 { 8 } else { 0 });
                bit(root, 0).then_some(())?;
                let context_addr = (root & !0xfff) + (devfn % 128) * 32;
                let c0 = memory.read_u64(context_addr);
                bit(c0, 0).then_some(())?;
                let pasid = request
                    .pasid
                    .unwrap_or(bits(memory.read_u64(context_addr + 8), 19, 0) as u32);
                let dir_entry = memory.read_u64((c0 & !0xfff) + u64::from(pasid >> 6) * 8);
                bit(dir_entry, 0).then_some(())?;
                let entry_addr = (dir_entry & !0xfff) + u64::from(pasid & 0x3f) * 64;
                let p0 = memory.read_u64(entry_addr);
                bit(p0, 0).then_some(())?;
                Some(CacheTag {
                    domain: memory.read_u64(entry_addr + 8) as u16,
                    pasid,
                    pasid_granular: matches!(bits(p0, 8, 6), 0b001 | 0b011),
                })
            }
        }
    }

    /// Second-stage walk (VT-d 9.8, "Second-Stage Paging Entries"): R bit 0,
    /// W bit 1, PS bit 7, address bits 51:12; an entry with R=W=0 is not
    /// present. With `ad` (SSADE) every entry used gets A (bit 8) and a
    /// write's leaf D (bit 9), written back like the hardware's atomic update.
    #[allow(clippy::too_many_arguments)]
    fn second_stage_walk(
        &self,
        memory: &SimMemory,
        root: u64,
        levels: u32,
        address: u64,
        access: Access,
        codes: Codes,
        ad: bool,
    ) -> Result<u64, Fault> {
        let width = 12 + 9 * levels;
        // QEMU 10.0.2 reports second-stage faults in scalable mode with the
        // legacy codes 0x04/0x05/0x06/0x07/0x0C (vtd_iova_to_sspte).
        let codes = if self.qemu_fault_codes && codes == Codes::Scalable {
            Codes::Legacy
        } else {
            codes
        };
        let denied = |a: Access| match (codes, a) {
            (Codes::Legacy, Access::Read) => reason::READ,
            (Codes::Legacy, Access::Write) => reason::WRITE,
            (Codes::Scalable, Access::Read) => reason::SM_READ,
            (Codes::Scalable, Access::Write) => reason::SM_WRITE,
            (Codes::NestedFetch { root: true }, _) => reason::NESTED_FS_ROOT_READ,
            (Codes::NestedFetch { root: false }, _) => reason::NESTED_FS_ENTRY_READ,
        };
        let (beyond, access_error, reserved) = match codes {
            Codes::Legacy => (
                reason::ADDRESS_BEYOND_WIDTH,
                reason::PAGING_ACCESS,
                reason::PAGING_RESERVED,
            ),
            Codes::Scalable => (
                reason::SM_ADDRESS_BEYOND_WIDTH,
                reason::SS_ACCESS,
                reason::SS_RESERVED,
            ),
            Codes::NestedFetch { root } => {
                let code = if root {
                    reason::NESTED_FS_ROOT_READ
                } else {
                    reason::NESTED_FS_ENTRY_READ
                };
                (code, reason::SS_ACCESS, reason::SS_RESERVED)
            }
        };
        if address >> width.min(self.mgaw) != 0 {
            return fault(beyond);
        }
        let mut table = root;
        let mut level = levels;
        loop {
            let index = (address >> (12 + 9 * (level - 1))) & 0x1ff;
            let entry_addr = table + index * 8;
            if !memory.contains(entry_addr) {
                // A bad root pointer is an invalid context entry (legacy 0x03).
                if level == levels && codes == Codes::Legacy {
                    return fault(reason::CONTEXT_INVALID);
                }
                return fault(access_error);
            }
            let entry = memory.read_u64(entry_addr);
            let readable = bit(entry, 0);
            let writable = bit(entry, 1);
            if !readable && !writable {
                return fault(denied(access));
            }
            // Bit 7 is PS above the last level and ignored in a 4 KiB leaf.
            let large = level > 1 && bit(entry, 7);
            if large && level > 3 {
                return fault(reserved);
            }
            let output_base = entry & 0x000f_ffff_ffff_f000;
            if level == 1 || large {
                let allowed = match access {
                    Access::Read => readable,
                    Access::Write => writable,
                };
                if !allowed {
                    return fault(denied(access));
                }
                let page_bits = 12 + 9 * (level - 1);
                let page_mask = (1u64 << page_bits) - 1;
                if output_base & page_mask != 0 {
                    return fault(reserved);
                }
                if ad {
                    let dirty = if access == Access::Write {
                        SECOND_STAGE_DIRTY
                    } else {
                        0
                    };
                    set_bits(memory, entry_addr, entry, SECOND_STAGE_ACCESSED | dirty);
                }
                return Ok(output_base | (address & page_mask));
            }
            // Non-leaf: access rights are the AND over the walk.
            let allowed = match access {
                Access::Read => readable,
                Access::Write => writable,
            };
            if !allowed {
                return fault(denied(access));
            }
            if ad {
                set_bits(memory, entry_addr, entry, SECOND_STAGE_ACCESSED);
            }
            table = output_base;
            level -= 1;
        }
    }

    /// First-stage walk (VT-d 9.7, IA-32e format): P bit 0, R/W bit 1, U/S
    /// bit 2, A bit 5, D bit 6, PS bit 7, address bits 51:12. With
    /// `nested`, every table address and the output are guest-physical and
    /// go through second stage (with its SSADE). With `update`, A is set in
    /// every entry walked and D in the leaf of a write, as QEMU 10.0.2 does.
    fn first_stage_walk(
        &self,
        memory: &SimMemory,
        root: u64,
        levels: u32,
        request: Request,
        nested: Option<(u64, u32, bool)>,
        update: bool,
    ) -> Result<u64, Fault> {
        let address = request.address;
        let width = 12 + 9 * levels;
        let sign = address >> (width - 1);
        if sign != 0 && sign != (u64::MAX >> (width - 1)) {
            return fault(reason::FS_NON_CANONICAL);
        }
        let through_second_stage = |gpa: u64, access: Access, codes: Codes| -> Result<u64, Fault> {
            match nested {
                Some((ss_root, ss_levels, ss_ad)) => {
                    self.second_stage_walk(memory, ss_root, ss_levels, gpa, access, codes, ss_ad)
                }
                None => Ok(gpa),
            }
        };
        let mut table =
            through_second_stage(root, Access::Read, Codes::NestedFetch { root: true })?;
        if !memory.contains(table) {
            return fault(reason::FS_ROOT_INVALID);
        }
        let mut level = levels;
        let mut writable = true;
        loop {
            let index = (address >> (12 + 9 * (level - 1))) & 0x1ff;
            let entry_addr = table + index * 8;
            if !memory.contains(entry_addr) {
                return fault(reason::FS_ACCESS);
            }
            let entry = memory.read_u64(entry_addr);
            if !bit(entry, 0) {
                return fault(reason::FS_NOT_PRESENT);
            }
            if !bit(entry, 2) {
                return fault(reason::FS_USER);
            }
            writable &= bit(entry, 1);
            // Bit 7 is PS above the last level, PAT in a 4 KiB leaf.
            let large = level > 1 && bit(entry, 7);
            if large && (level == 4 || (level == 3 && !self.first_stage_1g)) {
                return fault(reason::FS_RESERVED);
            }
            let next = entry & 0x000f_ffff_ffff_f000;
            if level == 1 || large {
                if request.access == Access::Write && !writable {
                    return fault(reason::SM_WRITE);
                }
                let page_bits = 12 + 9 * (level - 1);
                let page_mask = (1u64 << page_bits) - 1;
                if next & page_mask != 0 {
                    return fault(reason::FS_RESERVED);
                }
                let output = next | (address & page_mask);
                let translated = through_second_stage(output, request.access, Codes::Scalable)?;
                if update {
                    let dirty = if request.access == Access::Write {
                        FIRST_STAGE_DIRTY
                    } else {
                        0
                    };
                    let bits = FIRST_STAGE_ACCESSED | dirty;
                    if !(self.qemu_ad_update && entry & bits != 0) {
                        set_bits(memory, entry_addr, entry, bits);
                    }
                }
                return Ok(translated);
            }
            if update {
                set_bits(memory, entry_addr, entry, FIRST_STAGE_ACCESSED);
            }
            table = through_second_stage(next, Access::Read, Codes::NestedFetch { root: false })?;
            level -= 1;
        }
    }
}

/// The hardware's atomic A/D update: sets `bits` in the entry at `address`
/// (read as `entry`) if any is clear.
fn set_bits(memory: &SimMemory, address: u64, entry: u64, bits: u64) {
    if entry & bits != bits {
        memory.write_u64(address, entry | bits);
    }
}
