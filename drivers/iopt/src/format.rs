//! The two stage-1 entry formats, bit by bit.
//!
//! Both are 4-level, 4 KiB-granule radix trees of 512 64-bit entries per
//! table; they differ only in how an entry is encoded. This crate maps 4 KiB
//! pages only: it writes table entries at levels 0..=2 and page entries at
//! level 3, never large pages or blocks, and [`Format::decode`] reports any
//! other kind of entry as [`Entry::Unexpected`].
//!
//! Every address in an entry is an IPA: the IOMMU translates it through the
//! kernel-owned stage 2 before it uses it, both for the next table and for the
//! page.
//!
//! Choices common to both formats, so that a device can read and write its
//! buffers whatever privilege its requests carry:
//! - read access is always granted (neither format can express write-only);
//! - user/unprivileged access is always granted (VT-d U/S=1, Arm AP\[1\]=1);
//! - execute is denied on Arm pages (PXN and UXN); VT-d XD is left 0, because
//!   the VT-d specification has withdrawn Execute-Requested requests and
//!   deprecated XD and the PASID entry's NXE (with NXE = 0, XD is reserved);
//! - the accessed flag (and on writable VT-d pages the dirty flag) is set up
//!   front, so an IOMMU without hardware A/D update never faults on it and
//!   one with it never has to write the tables.

use bitflags::bitflags;

bitflags! {
    /// What a device may do through a mapping.
    ///
    /// Both formats need [`Rights::READ`] on every mapping, so the only
    /// expressible values are `READ` and `READ | WRITE`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Rights: u8 {
        /// The device may read.
        const READ = 1 << 0;
        /// The device may write.
        const WRITE = 1 << 1;
    }
}

impl Rights {
    /// Read and write.
    pub const READ_WRITE: Rights = Rights::READ.union(Rights::WRITE);

    /// Whether both formats can express these rights (`READ` or
    /// `READ | WRITE`).
    pub fn is_expressible(self) -> bool {
        self == Rights::READ || self == Rights::READ_WRITE
    }
}

bitflags! {
    /// Bits of a VT-d first-stage paging entry (Intel VT-d specification,
    /// section 9.7 "First-Stage Paging Entries"; the layout is that of x86-64
    /// 4-level paging, Intel SDM vol. 3, section 4.5).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct VtdFirstStageBits: u64 {
        /// P, bit 0: present.
        const PRESENT = 1 << 0;
        /// R/W, bit 1: writes allowed (must be set at every level for a
        /// write to succeed).
        const WRITABLE = 1 << 1;
        /// U/S, bit 2: user-mode requests allowed. A request without a
        /// supervisor privilege (all DMA without PASID privilege) is a user
        /// request, so this is set at every level.
        const USER = 1 << 2;
        /// PWT, bit 3: page-level write-through (left 0).
        const WRITE_THROUGH = 1 << 3;
        /// PCD, bit 4: page-level cache disable (left 0).
        const CACHE_DISABLE = 1 << 4;
        /// A, bit 5: accessed; set up front.
        const ACCESSED = 1 << 5;
        /// D, bit 6 (leaf only): dirty; set up front on writable pages.
        const DIRTY = 1 << 6;
        /// PS, bit 7 at levels 1 and 2: the entry maps a large page (never
        /// written here; reserved at level 0). At level 3 bit 7 is PAT.
        const PAGE_SIZE = 1 << 7;
        /// XD, bit 63: execute disable. Never set here: the VT-d
        /// specification deprecated it together with Execute-Requested
        /// requests, and it is reserved unless the PASID entry sets NXE,
        /// which the kernel does not. (QEMU 10 ignores bits 63:52.)
        const EXECUTE_DISABLE = 1 << 63;
    }
}

bitflags! {
    /// Bits of an Arm VMSAv8-64 stage-1 descriptor, 4 KiB granule (Arm ARM,
    /// DDI 0487, "VMSAv8-64 translation table format descriptors"; used by the
    /// SMMUv3 for stage 1 as the CPU uses it).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ArmStage1Bits: u64 {
        /// Bit 0: valid.
        const VALID = 1 << 0;
        /// Bit 1: with bit 0, descriptor type 0b11 = table at levels 0..=2,
        /// page at level 3 (0b01 would be a block, never written here).
        const TABLE_OR_PAGE = 1 << 1;
        /// AttrIndx\[2:0\], bits 4:2: index into the MAIR of the context
        /// descriptor. Left 0: **the kernel programs MAIR attribute 0 as
        /// Normal memory, Inner and Outer Write-Back cacheable** (0xFF).
        const ATTR_INDEX = 0b111 << 2;
        /// NS, bit 5: non-secure (ignored for non-secure streams; left 0).
        const NON_SECURE = 1 << 5;
        /// AP\[1\], bit 6: unprivileged (EL0) access allowed; set on every
        /// page, as Linux does for DMA without `IOMMU_PRIV`, so the mapping
        /// works whatever privilege the device's requests carry.
        const AP_UNPRIVILEGED = 1 << 6;
        /// AP\[2\], bit 7: read-only.
        const AP_READ_ONLY = 1 << 7;
        /// SH\[1:0\], bits 9:8 = 0b11: Inner Shareable.
        const INNER_SHAREABLE = 0b11 << 8;
        /// AF, bit 10: access flag. Must be set: without hardware access-flag
        /// update (QEMU has none) an access through AF=0 faults unless the
        /// CD sets AFFD.
        const ACCESS_FLAG = 1 << 10;
        /// nG, bit 11: not global, so the TLB entry is tagged with the CD's
        /// ASID.
        const NOT_GLOBAL = 1 << 11;
        /// PXN, bit 53: privileged execute never.
        const PRIVILEGED_EXECUTE_NEVER = 1 << 53;
        /// UXN/XN, bit 54: unprivileged execute never.
        const UNPRIVILEGED_EXECUTE_NEVER = 1 << 54;
    }
}

/// Output-address field of a VT-d first-stage entry: bits 51:12.
const VTD_ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Output-address field of an Arm 4 KiB-granule descriptor: bits 47:12.
const ARM_ADDRESS_MASK: u64 = 0x0000_ffff_ffff_f000;

/// The stage-1 table format the IOMMU will walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Intel VT-d first-stage (scalable mode, PGTT = first-stage or nested),
    /// 4-level, 48-bit input. Only the lower canonical half (IOVAs below
    /// 2^47) is used, as Linux does, so no IOVA needs sign extension.
    VtdFirstStage,
    /// Arm VMSAv8-64 stage 1 for an SMMUv3 context descriptor: 4 KiB
    /// granule, T0SZ = 16 (48-bit input, walk starts at level 0), TTB0 = the
    /// root's IPA, MAIR attribute 0 = Normal Write-Back.
    ArmStage1,
}

/// What one decoded entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Not present / invalid: the walk faults here.
    Absent,
    /// A pointer to the next-level table at this IPA (levels 0..=2).
    Table {
        /// IPA of the next-level table.
        ipa: u64,
    },
    /// A 4 KiB page (level 3).
    Page {
        /// IPA of the page.
        ipa: u64,
        /// What the device may do.
        rights: Rights,
    },
    /// Something this crate never writes: a large page or block, a reserved
    /// encoding, or a present entry missing the bits every entry here has.
    Unexpected,
}

impl Format {
    /// Number of IOVA bits the format translates: 47 for VT-d (lower
    /// canonical half of a 48-bit space), 48 for Arm.
    pub const fn iova_bits(self) -> u32 {
        match self {
            Format::VtdFirstStage => 47,
            Format::ArmStage1 => 48,
        }
    }

    /// The entry pointing at a next-level table at `table_ipa` (4 KiB
    /// aligned, below 2^48; other bits are masked off).
    ///
    /// VT-d: P, R/W, U/S, A — the page entry alone restricts rights.
    /// Arm: descriptor type 0b11, no hierarchical attributes (APTable,
    /// XNTable, NSTable all 0).
    pub fn table_entry(self, table_ipa: u64) -> u64 {
        match self {
            Format::VtdFirstStage => {
                (table_ipa & VTD_ADDRESS_MASK)
                    | (VtdFirstStageBits::PRESENT
                        | VtdFirstStageBits::WRITABLE
                        | VtdFirstStageBits::USER
                        | VtdFirstStageBits::ACCESSED)
                        .bits()
            }
            Format::ArmStage1 => {
                (table_ipa & ARM_ADDRESS_MASK)
                    | (ArmStage1Bits::VALID | ArmStage1Bits::TABLE_OR_PAGE).bits()
            }
        }
    }

    /// The level-3 entry mapping the 4 KiB page at `page_ipa` (4 KiB
    /// aligned, below 2^48; other bits are masked off) with `rights`
    /// (anything without [`Rights::WRITE`] is read-only).
    pub fn page_entry(self, page_ipa: u64, rights: Rights) -> u64 {
        let writable = rights.contains(Rights::WRITE);
        match self {
            Format::VtdFirstStage => {
                let mut bits = VtdFirstStageBits::PRESENT
                    | VtdFirstStageBits::USER
                    | VtdFirstStageBits::ACCESSED;
                if writable {
                    bits |= VtdFirstStageBits::WRITABLE | VtdFirstStageBits::DIRTY;
                }
                (page_ipa & VTD_ADDRESS_MASK) | bits.bits()
            }
            Format::ArmStage1 => {
                let mut bits = ArmStage1Bits::VALID
                    | ArmStage1Bits::TABLE_OR_PAGE
                    | ArmStage1Bits::AP_UNPRIVILEGED
                    | ArmStage1Bits::INNER_SHAREABLE
                    | ArmStage1Bits::ACCESS_FLAG
                    | ArmStage1Bits::NOT_GLOBAL
                    | ArmStage1Bits::PRIVILEGED_EXECUTE_NEVER
                    | ArmStage1Bits::UNPRIVILEGED_EXECUTE_NEVER;
                if !writable {
                    bits |= ArmStage1Bits::AP_READ_ONLY;
                }
                (page_ipa & ARM_ADDRESS_MASK) | bits.bits()
            }
        }
    }

    /// Decodes `entry` found in a table at `level` (0 = root, 3 = pages).
    ///
    /// Accepts what [`Format::table_entry`] and [`Format::page_entry`] write,
    /// plus the accessed/dirty bits an IOMMU with hardware A/D update may
    /// add; anything else present is [`Entry::Unexpected`]. A level above 3
    /// is [`Entry::Unexpected`] too.
    pub fn decode(self, level: usize, entry: u64) -> Entry {
        if level > 3 {
            return Entry::Unexpected;
        }
        match self {
            Format::VtdFirstStage => {
                let bits = VtdFirstStageBits::from_bits_retain(entry);
                if !bits.contains(VtdFirstStageBits::PRESENT) {
                    return Entry::Absent;
                }
                if !bits.contains(VtdFirstStageBits::USER) {
                    return Entry::Unexpected;
                }
                let ipa = entry & VTD_ADDRESS_MASK;
                if level < 3 {
                    // PS: a large page at levels 1-2, reserved at level 0.
                    if bits.contains(VtdFirstStageBits::PAGE_SIZE) {
                        return Entry::Unexpected;
                    }
                    Entry::Table { ipa }
                } else {
                    let rights = if bits.contains(VtdFirstStageBits::WRITABLE) {
                        Rights::READ_WRITE
                    } else {
                        Rights::READ
                    };
                    Entry::Page { ipa, rights }
                }
            }
            Format::ArmStage1 => {
                let bits = ArmStage1Bits::from_bits_retain(entry);
                if !bits.contains(ArmStage1Bits::VALID) {
                    return Entry::Absent;
                }
                if !bits.contains(ArmStage1Bits::TABLE_OR_PAGE) {
                    // 0b01: a block at levels 1-2, reserved at levels 0 and 3.
                    return Entry::Unexpected;
                }
                let ipa = entry & ARM_ADDRESS_MASK;
                if level < 3 {
                    Entry::Table { ipa }
                } else if !bits.contains(ArmStage1Bits::ACCESS_FLAG) {
                    Entry::Unexpected
                } else {
                    let rights = if bits.contains(ArmStage1Bits::AP_READ_ONLY) {
                        Rights::READ
                    } else {
                        Rights::READ_WRITE
                    };
                    Entry::Page { ipa, rights }
                }
            }
        }
    }
}
