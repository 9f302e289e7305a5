//! Access to physical memory through the direct map.

use crate::arch;

/// Returns the kernel virtual address of physical address `pa`.
pub fn phys_to_virt(pa: u64) -> u64 {
    arch::PHYS_MAP_BASE + pa
}

/// Borrows `len` bytes of physical memory at `pa` for reading, or `None` if
/// the range is outside the direct map.
///
/// Used for firmware tables (ACPI, device tree, PVH start info) that nothing
/// writes after boot.
pub fn phys_bytes(pa: u64, len: usize) -> Option<&'static [u8]> {
    if !arch::phys_map_covers(pa, len as u64) {
        return None;
    }
    // SAFETY: the range is inside the direct map (checked above), which maps
    // it for the kernel's whole life; firmware tables are not written after
    // boot, so no mutable alias exists.
    Some(unsafe { core::slice::from_raw_parts(phys_to_virt(pa) as *const u8, len) })
}

#[cfg(target_arch = "x86_64")]
/// Borrows a NUL-terminated UTF-8 string of at most 4 KiB at `pa`.
pub fn phys_c_str(pa: u64) -> Option<&'static str> {
    const MAX: usize = 4096;
    let mut len = 0;
    while len < MAX {
        if *phys_bytes(pa + len as u64, 1)?.first()? == 0 {
            return core::str::from_utf8(phys_bytes(pa, len)?).ok();
        }
        len += 1;
    }
    None
}
