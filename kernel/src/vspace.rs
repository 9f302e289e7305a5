//! User address spaces: a 4-level, 512-entry radix tree on both
//! architectures; the entry formats come from `arch::paging`.

use crate::arch::paging;
use crate::mem::phys_to_virt;

/// What a mapping allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rights {
    /// Writable.
    pub write: bool,
    /// Executable.
    pub execute: bool,
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The virtual address is not 4 KiB aligned or not in user space.
    BadAddress(u64),
    /// A page is already mapped there.
    AlreadyMapped(u64),
    /// A huge mapping covers the address.
    HugePageInTheWay(u64),
    /// No frame for an intermediate table.
    OutOfMemory,
}

const LEVELS: usize = 4;

fn table(pa: u64) -> *mut u64 {
    phys_to_virt(pa) as *mut u64
}

fn index(va: u64, level: usize) -> usize {
    ((va >> (12 + 9 * (LEVELS - 1 - level))) & 511) as usize
}

/// Makes `root_pa` (a zeroed frame) the root of a new address space.
pub fn init_root(root_pa: u64) {
    // SAFETY: the caller hands a 4 KiB frame it owns, in the direct map.
    let root = unsafe { &mut *(phys_to_virt(root_pa) as *mut [u64; 512]) };
    paging::init_root(root);
}

/// Maps the 4 KiB page at `va` to physical `pa` with `rights`, taking zeroed
/// frames for intermediate tables from `alloc`.
pub fn map_page(
    root_pa: u64,
    va: u64,
    pa: u64,
    rights: Rights,
    alloc: &mut dyn FnMut() -> Option<u64>,
) -> Result<(), MapError> {
    if !va.is_multiple_of(4096) || va >= paging::USER_TOP {
        return Err(MapError::BadAddress(va));
    }
    let mut table_pa = root_pa;
    for level in 0..LEVELS - 1 {
        let slot = table(table_pa).wrapping_add(index(va, level));
        // SAFETY: `table_pa` is a page-table frame of this space (the root, or
        // read from a valid table entry), in the direct map; the index is < 512.
        let entry = unsafe { slot.read_volatile() };
        table_pa = if !paging::entry_valid(entry) {
            let next = alloc().ok_or(MapError::OutOfMemory)?;
            // SAFETY: as above; `next` is a fresh zeroed frame.
            unsafe { slot.write_volatile(paging::table_entry(next)) };
            next
        } else if paging::entry_is_leaf(entry, level) {
            return Err(MapError::HugePageInTheWay(va));
        } else {
            paging::entry_address(entry)
        };
    }
    let slot = table(table_pa).wrapping_add(index(va, LEVELS - 1));
    // SAFETY: `table_pa` is a last-level table of this space, index < 512.
    unsafe {
        if paging::entry_valid(slot.read_volatile()) {
            return Err(MapError::AlreadyMapped(va));
        }
        slot.write_volatile(paging::leaf_entry(pa, rights));
    }
    Ok(())
}

/// Where [`space_with_program`] puts the program's single code page.
pub const PROGRAM_ADDRESS: u64 = 0x40_0000;

/// A fresh address space with `program` (position independent, at most one
/// page) mapped read-execute at [`PROGRAM_ADDRESS`]; returns its root.
/// For the kernel's own test and benchmark programs.
pub fn space_with_program(
    program: &[u8],
    frames: &mut crate::frames::BootFrames,
) -> Result<u64, MapError> {
    if program.len() > 4096 {
        return Err(MapError::BadAddress(PROGRAM_ADDRESS));
    }
    let (Some(root), Some(code)) = (frames.alloc(), frames.alloc()) else {
        return Err(MapError::OutOfMemory);
    };
    // SAFETY: `code` is a fresh 4 KiB frame in the direct map and the
    // program fits in it (checked above).
    unsafe {
        core::ptr::copy_nonoverlapping(
            program.as_ptr(),
            phys_to_virt(code) as *mut u8,
            program.len(),
        )
    };
    init_root(root);
    let code_rights = Rights {
        write: false,
        execute: true,
    };
    map_page(root, PROGRAM_ADDRESS, code, code_rights, &mut || {
        frames.alloc()
    })?;
    Ok(root)
}
