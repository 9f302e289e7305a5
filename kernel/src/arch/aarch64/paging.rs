//! AArch64 stage-1 translation-table entry format, 4 KiB granule, 48-bit
//! (Arm ARM D8.3), for user address spaces in TTBR0.

use crate::arch::{Memory, Rights};

const VALID: u64 = 1 << 0;
const TABLE_OR_PAGE: u64 = 1 << 1;
/// AttrIndx 1: normal write-back memory (MAIR_EL1 set at boot).
const ATTR_NORMAL: u64 = 1 << 2;
/// AttrIndx 2: Device-nGnRE (MAIR_EL1 Attr2 = 0x04, set at boot): no
/// gathering, no reordering, early write acknowledgement (Arm ARM B2.7.2).
const ATTR_DEVICE: u64 = 2 << 2;
/// SH[1:0] for device memory: outer shareable (the field is ignored for
/// device types, which are always treated as outer shareable).
const OUTER_SHAREABLE: u64 = 2 << 8;
/// AP[1]: EL0 may access.
const AP_EL0: u64 = 1 << 6;
/// AP[2]: read-only.
const AP_READ_ONLY: u64 = 1 << 7;
const INNER_SHAREABLE: u64 = 3 << 8;
const ACCESS_FLAG: u64 = 1 << 10;
const NOT_GLOBAL: u64 = 1 << 11;
const PRIVILEGED_NO_EXECUTE: u64 = 1 << 53;
const USER_NO_EXECUTE: u64 = 1 << 54;
const ADDRESS: u64 = 0x0000_FFFF_FFFF_F000;

/// Lowest address that is not user space (TTBR0 with T0SZ = 16).
pub const USER_TOP: u64 = 1 << 48;

/// An entry pointing at a next-level table.
pub fn table_entry(pa: u64) -> u64 {
    (pa & ADDRESS) | VALID | TABLE_OR_PAGE
}

/// A 4 KiB EL0 page with `rights`, of `memory`'s type (device memory is
/// Device-nGnRE and never executable); the kernel may never execute it.
pub fn leaf_entry(pa: u64, rights: Rights, memory: Memory) -> u64 {
    let attributes = match memory {
        Memory::Normal => ATTR_NORMAL | INNER_SHAREABLE,
        Memory::Device => ATTR_DEVICE | OUTER_SHAREABLE | USER_NO_EXECUTE,
    };
    let mut entry = (pa & ADDRESS)
        | VALID
        | TABLE_OR_PAGE
        | attributes
        | AP_EL0
        | ACCESS_FLAG
        | NOT_GLOBAL
        | PRIVILEGED_NO_EXECUTE;
    if !rights.write {
        entry |= AP_READ_ONLY;
    }
    if !rights.execute {
        entry |= USER_NO_EXECUTE;
    }
    entry
}

/// A 2 MiB EL0 block at level 2 with `rights` and `memory`.
pub fn large_leaf_entry(pa: u64, rights: Rights, memory: Memory) -> u64 {
    // A block descriptor is a page descriptor with bit 1 clear.
    leaf_entry(pa & !0x1F_FFFF, rights, memory) & !TABLE_OR_PAGE
}

/// Drops every EL1&0 translation (all address spaces: no ASIDs yet).
pub fn flush_tlb() {
    // SAFETY: TLB maintenance only discards cached translations.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi vmalle1",
            "dsb ish",
            "isb",
            options(nostack)
        )
    };
}

/// Whether an entry is valid.
pub fn entry_valid(entry: u64) -> bool {
    entry & VALID != 0
}

/// Whether a valid entry at `level` (0 = root) maps memory rather than a table.
pub fn entry_is_leaf(entry: u64, level: usize) -> bool {
    level == 3 || entry & TABLE_OR_PAGE == 0
}

/// Whether a valid leaf lets user code write.
#[cfg(feature = "fuzz-checks")]
pub fn entry_writable(entry: u64) -> bool {
    entry & AP_READ_ONLY == 0
}

/// The physical address an entry points at.
pub fn entry_address(entry: u64) -> u64 {
    entry & ADDRESS
}

/// Fills a new root table: TTBR0 covers only user space, so it starts empty.
pub fn init_root(root: &mut [u64; 512]) {
    root.fill(0);
}
