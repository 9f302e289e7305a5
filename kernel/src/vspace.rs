//! User address spaces: a 4-level, 512-entry radix tree on both
//! architectures; the entry formats come from `arch::paging`.

use crate::arch::paging;
use crate::mem;

pub use crate::arch::{Memory, Rights};

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// A page-table level on the way is missing (and may not be allocated).
    MissingTable(u64),
    /// Every table level on the way is already present.
    TablesPresent(u64),
    /// The virtual address is not 4 KiB aligned or not in user space.
    BadAddress(u64),
    /// A page is already mapped there.
    AlreadyMapped(u64),
    /// A huge mapping covers the address.
    HugePageInTheWay(u64),
    /// No frame for an intermediate table.
    OutOfMemory,
}

/// Written by hand, not derived `Debug`: a derived one pulls `core::fmt`'s
/// struct and padding builders into the release kernel ("Size" in the
/// README).
impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (what, at) = match *self {
            MapError::MissingTable(at) => ("a table level is missing at", at),
            MapError::TablesPresent(at) => ("every table level is present at", at),
            MapError::BadAddress(at) => ("bad address", at),
            MapError::AlreadyMapped(at) => ("a page is already mapped at", at),
            MapError::HugePageInTheWay(at) => ("a huge page covers", at),
            MapError::OutOfMemory => return f.write_str("no frame for a table"),
        };
        write!(f, "{what} {at:#x}")
    }
}

const LEVELS: usize = 4;

/// Entry `index` (< 512) of the table at `table_pa`.
fn entry_at(table_pa: u64, index: usize) -> mem::Word<u64> {
    mem::Word::at(table_pa).add(index)
}

fn index(va: u64, level: usize) -> usize {
    ((va >> (12 + 9 * (LEVELS - 1 - level))) & 511) as usize
}

/// Makes `root_pa` (a zeroed frame) the root of a new address space.
/// Out of line: LTO had copied it into five callers (kernel/README.md,
/// "Size").
#[inline(never)]
pub fn init_root(root_pa: u64) {
    // A 4 KiB page-table frame the caller owns (`mem`'s obligation 3).
    mem::with_table(root_pa, paging::init_root);
}

/// Maps the 4 KiB page at `va` to physical `pa` with `rights`, taking zeroed
/// frames for intermediate tables from `alloc`. Boot and loading only, so
/// not inlined into its five callers (kernel/README.md, "Size").
#[inline(never)]
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
        // `table_pa` is a page-table frame of this space (the root, or read
        // from a valid table entry); the index is < 512.
        let slot = entry_at(table_pa, index(va, level));
        let entry = slot.read();
        table_pa = if !paging::entry_valid(entry) {
            let next = alloc().ok_or(MapError::OutOfMemory)?;
            // `next` is a fresh zeroed frame.
            slot.write(paging::table_entry(next));
            next
        } else if paging::entry_is_leaf(entry, level) {
            return Err(MapError::HugePageInTheWay(va));
        } else {
            paging::entry_address(entry)
        };
    }
    // `table_pa` is a last-level table of this space, index < 512.
    let slot = entry_at(table_pa, index(va, LEVELS - 1));
    if paging::entry_valid(slot.read()) {
        return Err(MapError::AlreadyMapped(va));
    }
    slot.write(paging::leaf_entry(pa, rights, Memory::Normal));
    Ok(())
}

/// Where [`space_with_program`] puts the program's single code page.
#[cfg(any(feature = "self-tests", feature = "bench"))]
pub const PROGRAM_ADDRESS: u64 = 0x40_0000;

/// A fresh address space with `program` (position independent, at most one
/// page) mapped read-execute at [`PROGRAM_ADDRESS`]; returns its root.
/// For the kernel's own test and benchmark programs.
#[cfg(any(feature = "self-tests", feature = "bench"))]
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
    // `code` is a fresh 4 KiB frame and the program fits in it (checked
    // above).
    mem::copy_in(code, program);
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

/// The entry for `va` at `level` (0 = root),
/// following present table entries from `root_pa`; `Err` names the first
/// level whose entry is missing (or a huge mapping in the way). Every
/// table on the way is one of this space (the root, or read from a present
/// table entry).
fn slot_at(root_pa: u64, va: u64, level: usize) -> Result<mem::Word<u64>, MapError> {
    let mut table_pa = root_pa;
    for l in 0..level {
        let entry = entry_at(table_pa, index(va, l)).read();
        if !paging::entry_valid(entry) {
            return Err(MapError::MissingTable(va));
        }
        if paging::entry_is_leaf(entry, l) {
            return Err(MapError::HugePageInTheWay(va));
        }
        table_pa = paging::entry_address(entry);
    }
    Ok(entry_at(table_pa, index(va, level)))
}

/// The physical address of the 4 KiB page mapped at `va` (page aligned),
/// if a last-level leaf maps it.
pub fn page_address(root_pa: u64, va: u64) -> Option<u64> {
    let entry = slot_at(root_pa, va, LEVELS - 1).ok()?.read();
    paging::entry_valid(entry).then(|| paging::entry_address(entry))
}

/// The entry a table installed on the way to `va` goes into: the highest
/// missing level's (its physical address), changing nothing.
pub fn free_table_entry(root_pa: u64, va: u64) -> Result<u64, MapError> {
    if va >= paging::USER_TOP {
        return Err(MapError::BadAddress(va));
    }
    for level in 0..LEVELS - 1 {
        let slot = slot_at(root_pa, va, level)?;
        if !paging::entry_valid(slot.read()) {
            return Ok(slot.phys());
        }
    }
    Err(MapError::TablesPresent(va))
}

/// Installs the zeroed table `table_pa` at the entry [`free_table_entry`]
/// found (a physical address).
pub fn install_table(entry: u64, table_pa: u64) {
    // `entry` is an empty entry of a live table of an address space
    // (`free_table_entry`, under the capability lock held since); the new
    // table is a zeroed page-table object.
    mem::write_u64(entry, paging::table_entry(table_pa));
}

/// Checks that a page of `2^size_bits` bytes could be mapped at `va` without
/// allocating: every level above it present, the leaf empty. Returns the
/// leaf entry's physical address, for [`write_leaf`].
pub fn can_map(root_pa: u64, va: u64, size_bits: u8) -> Result<u64, MapError> {
    let level = if size_bits == 21 {
        LEVELS - 2
    } else {
        LEVELS - 1
    };
    if !va.is_multiple_of(1 << size_bits) || va >= paging::USER_TOP {
        return Err(MapError::BadAddress(va));
    }
    let slot = slot_at(root_pa, va, level)?;
    if paging::entry_valid(slot.read()) {
        return Err(MapError::AlreadyMapped(va));
    }
    Ok(slot.phys())
}

/// Writes the leaf of a `2^size_bits`-byte page at the entry [`can_map`]
/// returned for it (the tables have not changed since).
pub fn write_leaf(entry: u64, pa: u64, size_bits: u8, rights: Rights, memory: Memory) {
    let entry_value = if size_bits == 21 {
        paging::large_leaf_entry(pa, rights, memory)
    } else {
        paging::leaf_entry(pa, rights, memory)
    };
    // `entry` is the empty leaf entry of a live table of an address space
    // that `can_map` found, under the capability lock held since.
    mem::write_u64(entry, entry_value);
}

/// Clears the leaf mapping `va` (if the tables still lead there) and flushes.
pub fn unmap_leaf(root_pa: u64, va: u64, size_bits: u8) {
    let level = if size_bits == 21 {
        LEVELS - 2
    } else {
        LEVELS - 1
    };
    if let Ok(slot) = slot_at(root_pa, va, level) {
        slot.write(0);
    }
    paging::flush_tlb();
}

/// The physical address a leaf of `2^size_bits` bytes maps at `va`, if
/// the tables lead to one there.
pub fn mapped_at(root_pa: u64, va: u64, size_bits: u8) -> Option<u64> {
    let level = if size_bits == 21 {
        LEVELS - 2
    } else {
        LEVELS - 1
    };
    let entry = slot_at(root_pa, va, level).ok()?.read();
    (paging::entry_valid(entry) && paging::entry_is_leaf(entry, level))
        .then(|| paging::entry_address(entry))
}

/// Zeroes the page table at `table_pa`, which no address space links any
/// more (the caller flushed when it unlinked it).
pub fn clear_table(table_pa: u64) {
    // The caller names a page-table object's 4 KiB frame that no table entry
    // points at.
    mem::zero(table_pa, 4096);
}

/// Clears the table entry at physical address `entry_pa` and flushes.
pub fn clear_entry(entry_pa: u64) {
    // The caller names a page-table entry it installed.
    mem::write_u64(entry_pa, 0);
    paging::flush_tlb();
}

/// Whether the page table at `table_pa` holds no valid entry.
pub fn table_is_empty(table_pa: u64) -> bool {
    // The caller names a live page-table object's 4 KiB frame; it is only
    // read, word by word (`mem`'s obligation 2).
    let entries = mem::Word::<u64>::at(table_pa);
    !(0..512).any(|i| paging::entry_valid(entries.add(i).read()))
}

/// Calls `visit(va, entry, size_bits)` with every leaf of the user half of
/// the address space rooted at `root_pa`, in address order (the
/// abstraction check's read-back, `testing::abstraction`).
#[cfg(feature = "fuzz-checks")]
pub fn for_each_user_leaf(root_pa: u64, visit: &mut impl FnMut(u64, u64, u8)) {
    fn walk(table_pa: u64, level: usize, base: u64, visit: &mut impl FnMut(u64, u64, u8)) {
        let shift = 12 + 9 * (LEVELS - 1 - level);
        for index in 0..512u64 {
            let va = base | index << shift;
            if level == 0 && va >= paging::USER_TOP {
                break;
            }
            // `table_pa` is a table of this space (the root, or read from a
            // present table entry); index < 512.
            let entry = entry_at(table_pa, index as usize).read();
            if !paging::entry_valid(entry) {
                continue;
            }
            if paging::entry_is_leaf(entry, level) {
                visit(va, entry, shift as u8);
            } else {
                walk(paging::entry_address(entry), level + 1, va, visit);
            }
        }
    }
    walk(root_pa, 0, 0, visit);
}
