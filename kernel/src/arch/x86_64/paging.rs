//! x86-64 4-level page-table entry format (Intel SDM vol. 3, 4.5).

use crate::arch::{Memory, Rights};

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
/// PWT and PCD: with the PAT at its reset value (PA3 = UC, Intel SDM vol. 3,
/// 13.12.4; the kernel never writes IA32_PAT) a leaf with both bits set is
/// uncacheable, whatever the MTRRs say: strong ordering for device
/// registers. Bit 7 (4 KiB) / 12 (2 MiB), the PAT bit, stays clear.
const UNCACHED: u64 = (1 << 3) | (1 << 4);
const HUGE: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;
const ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;

/// Lowest address that is not user space (the canonical lower half).
pub const USER_TOP: u64 = 0x0000_8000_0000_0000;

/// An entry pointing at a next-level table. Permissions are granted at the
/// leaves; intermediate entries allow everything.
pub fn table_entry(pa: u64) -> u64 {
    (pa & ADDRESS) | PRESENT | WRITABLE | USER
}

/// A 4 KiB user leaf with `rights`, of `memory`'s type (device memory is
/// uncached and never executable).
pub fn leaf_entry(pa: u64, rights: Rights, memory: Memory) -> u64 {
    let mut entry = (pa & ADDRESS) | PRESENT | USER;
    if memory == Memory::Device {
        entry |= UNCACHED | NO_EXECUTE;
    }
    if rights.write {
        entry |= WRITABLE;
    }
    if !rights.execute {
        entry |= NO_EXECUTE;
    }
    entry
}

/// A 2 MiB user leaf with `rights` and `memory` (a page-directory entry
/// with PS set).
pub fn large_leaf_entry(pa: u64, rights: Rights, memory: Memory) -> u64 {
    leaf_entry(pa & !0x1F_FFFF, rights, memory) | HUGE
}

/// Drops every non-global translation of the current address space.
pub fn flush_tlb() {
    // SAFETY: rewriting CR3 with its own value only flushes the TLB.
    unsafe {
        core::arch::asm!("mov {t}, cr3", "mov cr3, {t}", t = out(reg) _, options(nostack, preserves_flags));
    }
}

/// Whether an entry is present.
pub fn entry_valid(entry: u64) -> bool {
    entry & PRESENT != 0
}

/// Whether a present entry at `level` (0 = root) maps memory rather than a table.
pub fn entry_is_leaf(entry: u64, level: usize) -> bool {
    level == 3 || entry & HUGE != 0
}

/// Whether a present leaf lets user code write.
#[cfg(feature = "fuzz-checks")]
pub fn entry_writable(entry: u64) -> bool {
    entry & WRITABLE != 0
}

/// The physical address an entry points at.
pub fn entry_address(entry: u64) -> u64 {
    entry & ADDRESS
}

/// Fills a new root table: the upper half (entries 256..512) is the kernel's,
/// shared by every address space.
pub fn init_root(root: &mut [u64; 512]) {
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags))
    };
    let kernel_root = (super::PHYS_MAP_BASE + (cr3 & ADDRESS)) as *const u64;
    for (index, slot) in root.iter_mut().enumerate() {
        *slot = if index >= 256 {
            // SAFETY: the kernel root table is a 512-entry page in the direct map.
            unsafe { kernel_root.add(index).read_volatile() }
        } else {
            0
        };
    }
}
