//! VMSAv8-64 translation-table entry formats for the 4 KiB granule, as the
//! SMMU walks them: stage 2 (kernel-owned IoSpace tables) and stage 1 (built
//! by user drivers; here for tests and the models).
//!
//! Source: Arm ARM D8.3 ("Translation table descriptor formats"), D8.4
//! (memory attributes, S2AP), D8.5 (access flag). Bits 1:0 = 0b11 table
//! (above level 3) or page (level 3), 0b01 block (levels 1 and 2); output
//! address bits 47:12; SH bits 9:8; AF bit 10.

use super::regs::Features;
use crate::PhysAddr;
use crate::pagetable::{PageTableFormat, Perms};

const OUTPUT_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Stage-2 descriptors: S2AP bits 7:6 (bit 6 read, bit 7 write), SH =
/// inner shareable, AF = 1, and MemAttr bits 5:2 (Arm ARM D8.6): 0b1111
/// (Normal, inner and outer Write-Back: the access gets stage 1's
/// attributes, or stricter ones), or under STE.S2FWB 0b0110 (Normal
/// Write-Back forced, whatever stage 1 chose).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stage2Format {
    /// Encode MemAttr for STE.S2FWB = 1 (the STE must set it too).
    pub forced_write_back: bool,
}

impl Stage2Format {
    /// The format the kernel uses on an SMMU with these ID registers:
    /// forced write-back where SMMU_IDR3.FWB (and [`super::ste::Ste`]
    /// then sets STE.S2FWB).
    pub fn for_unit(features: &Features) -> Stage2Format {
        Stage2Format {
            forced_write_back: features.idr3.fwb(),
        }
    }

    /// The leaf's MemAttr (bits 5:2).
    fn mem_attr(&self) -> u64 {
        if self.forced_write_back {
            0b0110
        } else {
            0b1111
        }
    }
}

impl PageTableFormat for Stage2Format {
    fn table_entry(&self, table: PhysAddr) -> u64 {
        (table & OUTPUT_MASK) | 0b11
    }
    fn leaf_entry(&self, address: PhysAddr, height: u32, perms: Perms) -> u64 {
        let kind = if height == 1 { 0b11 } else { 0b01 };
        (address & OUTPUT_MASK)
            | kind
            | self.mem_attr() << 2
            | u64::from(perms.read) << 6
            | u64::from(perms.write) << 7
            | 3 << 8
            | 1 << 10
    }
    fn is_present(&self, entry: u64) -> bool {
        entry & 1 != 0
    }
    fn is_table(&self, entry: u64, height: u32) -> bool {
        height > 1 && entry & 0b11 == 0b11
    }
    fn perms(&self, entry: u64) -> Perms {
        Perms {
            read: entry & (1 << 6) != 0,
            write: entry & (S2AP_WRITE | DBM) != 0,
        }
    }
    fn max_leaf_height(&self) -> u32 {
        3
    }
    /// Dirty state by the Dirty Bit Modifier (Arm ARM D8.4.6, "Hardware
    /// management of the dirty state"; SMMUv3 3.13 HTTU, STE.S2HD): a
    /// writable leaf is kept writable-clean (DBM=1, S2AP\[1\]=0) and the
    /// SMMU sets S2AP\[1\] on the first write; DBM=1 with S2AP\[1\]=1 is dirty.
    fn tracks_dirty(&self) -> bool {
        true
    }
    fn is_dirty(&self, entry: u64) -> bool {
        entry & DBM != 0 && entry & S2AP_WRITE != 0
    }
    fn clean(&self, entry: u64) -> u64 {
        if entry & (DBM | S2AP_WRITE) != 0 {
            (entry | DBM) & !S2AP_WRITE
        } else {
            entry
        }
    }
    fn mark_dirty(&self, entry: u64) -> u64 {
        if entry & DBM != 0 {
            entry | S2AP_WRITE
        } else {
            entry
        }
    }
}

/// Stage-2 S2AP\[1\]: write permission (bit 7).
pub const S2AP_WRITE: u64 = 1 << 7;
/// Dirty Bit Modifier (bit 51): with STE.S2HD the SMMU turns a
/// write-protected leaf writable (dirty) on the first write.
pub const DBM: u64 = 1 << 51;
/// Access flag (bit 10).
pub const ACCESS_FLAG: u64 = 1 << 10;

/// Stage-1 descriptors: AttrIndx bits 4:2 = 0 (MAIR Attr0, normal memory),
/// AP\[1\] bit 6 = 1 (unprivileged access), AP\[2\] bit 7 = read-only,
/// SH = inner shareable, AF = 1, nG bit 11 = 1 (ASID-tagged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage1Format;

impl PageTableFormat for Stage1Format {
    fn table_entry(&self, table: PhysAddr) -> u64 {
        (table & OUTPUT_MASK) | 0b11
    }
    fn leaf_entry(&self, address: PhysAddr, height: u32, perms: Perms) -> u64 {
        let kind = if height == 1 { 0b11 } else { 0b01 };
        (address & OUTPUT_MASK)
            | kind
            | 1 << 6
            | u64::from(!perms.write) << 7
            | 3 << 8
            | 1 << 10
            | 1 << 11
    }
    fn is_present(&self, entry: u64) -> bool {
        entry & 1 != 0
    }
    fn is_table(&self, entry: u64, height: u32) -> bool {
        height > 1 && entry & 0b11 == 0b11
    }
    fn perms(&self, entry: u64) -> Perms {
        Perms {
            read: true,
            write: entry & (1 << 7) == 0,
        }
    }
    fn max_leaf_height(&self) -> u32 {
        3
    }
}

/// Number of table levels for a 4 KiB-granule walk of `input_bits`
/// starting at [`super::ste::start_level_4k`].
pub fn levels_4k(input_bits: u32) -> u32 {
    4 - super::ste::start_level_4k(input_bits)
}
