//! A radix page-table builder shared by the four formats this crate writes:
//! VT-d second stage and first stage, VMSAv8-64 stage 2 and stage 1 (all
//! with 4 KiB tables of 512 8-byte entries).
//!
//! Heights count from the leaf: height 1 tables map 4 KiB pages, height 2
//! 2 MiB, height 3 1 GiB, height 4 512 GiB (Arm level 3 is height 1, Arm
//! level 0 is height 4; VT-d "level" equals height). A format says how a
//! table pointer and a leaf look; the builder allocates tables on demand.

use crate::{FrameAllocator, PhysAddr, PhysMem};
use core::fmt;

/// Access rights of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perms {
    /// Device reads allowed.
    pub read: bool,
    /// Device writes allowed.
    pub write: bool,
}

impl Perms {
    /// Read-only.
    pub const READ: Perms = Perms {
        read: true,
        write: false,
    };
    /// Read-write.
    pub const READ_WRITE: Perms = Perms {
        read: true,
        write: true,
    };
    /// Write-only (second stages only).
    pub const WRITE: Perms = Perms {
        read: false,
        write: true,
    };
}

/// Page sizes (4 KiB granule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB, a height-1 leaf.
    Size4K,
    /// 2 MiB, a height-2 leaf.
    Size2M,
    /// 1 GiB, a height-3 leaf.
    Size1G,
}

impl PageSize {
    /// Bytes.
    pub fn bytes(self) -> u64 {
        1 << self.shift()
    }
    /// log2 of the size.
    pub fn shift(self) -> u32 {
        match self {
            Self::Size4K => 12,
            Self::Size2M => 21,
            Self::Size1G => 30,
        }
    }
    /// The table height the leaf sits at.
    pub fn height(self) -> u32 {
        (self.shift() - 12) / 9 + 1
    }
}

/// Why a map or unmap failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Address or size not aligned to the page size.
    Misaligned,
    /// Input address beyond what the table covers.
    OutOfRange,
    /// Something is already mapped there.
    AlreadyMapped,
    /// Nothing is mapped there (unmap).
    NotMapped,
    /// The page size is not allowed by this table (or the hardware).
    PageSizeNotSupported,
    /// The frame allocator is exhausted.
    OutOfMemory,
    /// No access right given.
    NoAccess,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Misaligned => "address not aligned to the page size",
            Self::OutOfRange => "address beyond the table's input range",
            Self::AlreadyMapped => "address already mapped",
            Self::NotMapped => "address not mapped",
            Self::PageSizeNotSupported => "page size not supported",
            Self::OutOfMemory => "out of frames for page tables",
            Self::NoAccess => "mapping without any access right",
        })
    }
}

/// How one format encodes its entries.
pub trait PageTableFormat {
    /// An entry pointing at the next-level table.
    fn table_entry(&self, table: PhysAddr) -> u64;
    /// A leaf entry at `height` (1 = 4 KiB page).
    fn leaf_entry(&self, address: PhysAddr, height: u32, perms: Perms) -> u64;
    /// Whether `entry` is present (maps or points at something).
    fn is_present(&self, entry: u64) -> bool;
    /// Whether a present `entry` at `height` points at a table.
    fn is_table(&self, entry: u64, height: u32) -> bool;
    /// The leaf's rights.
    fn perms(&self, entry: u64) -> Perms;
    /// Output address of an entry.
    fn address(&self, entry: u64) -> PhysAddr {
        entry & 0x000f_ffff_ffff_f000
    }
    /// Largest height a leaf may sit at (1 = 4 KiB only).
    fn max_leaf_height(&self) -> u32;
}

/// A page table rooted at one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageTable<F: PageTableFormat> {
    root: PhysAddr,
    height: u32,
    format: F,
    /// The root table is indexed by all remaining input bits (Arm stage-2
    /// start levels cover `input_bits`, possibly less than 9 bits).
    input_bits: u32,
}

impl<F: PageTableFormat> PageTable<F> {
    /// Allocates an empty table of `height` levels covering `input_bits`
    /// (at most 12 + 9 * height).
    pub fn new(
        alloc: &mut impl FrameAllocator,
        format: F,
        height: u32,
        input_bits: u32,
    ) -> Result<Self, MapError> {
        if !(1..=5).contains(&height)
            || input_bits > 12 + 9 * height
            || input_bits <= 12 + 9 * (height - 1)
        {
            return Err(MapError::OutOfRange);
        }
        let root = alloc.alloc_zeroed_frame().ok_or(MapError::OutOfMemory)?;
        Ok(Self {
            root,
            height,
            format,
            input_bits,
        })
    }

    /// Root table address.
    pub fn root(&self) -> PhysAddr {
        self.root
    }
    /// Number of levels.
    pub fn height(&self) -> u32 {
        self.height
    }
    /// Input address bits covered.
    pub fn input_bits(&self) -> u32 {
        self.input_bits
    }
    /// The entry format.
    pub fn format(&self) -> &F {
        &self.format
    }

    fn index(address: u64, height: u32) -> u64 {
        (address >> (12 + 9 * (height - 1))) & 0x1ff
    }

    /// Maps `[input, input + size)` to `[output, output + size)`.
    pub fn map(
        &self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        input: u64,
        output: PhysAddr,
        size: PageSize,
        perms: Perms,
    ) -> Result<(), MapError> {
        if !perms.read && !perms.write {
            return Err(MapError::NoAccess);
        }
        let leaf_height = size.height();
        if leaf_height > self.format.max_leaf_height() || leaf_height > self.height {
            return Err(MapError::PageSizeNotSupported);
        }
        if !input.is_multiple_of(size.bytes()) || !output.is_multiple_of(size.bytes()) {
            return Err(MapError::Misaligned);
        }
        if input >> self.input_bits != 0 {
            return Err(MapError::OutOfRange);
        }
        let mut table = self.root;
        let mut height = self.height;
        while height > leaf_height {
            let slot = table + 8 * Self::index(input, height);
            let entry = mem.read_u64(slot);
            table = if self.format.is_present(entry) {
                if !self.format.is_table(entry, height) {
                    return Err(MapError::AlreadyMapped);
                }
                self.format.address(entry)
            } else {
                let next = alloc.alloc_zeroed_frame().ok_or(MapError::OutOfMemory)?;
                mem.write_u64(slot, self.format.table_entry(next));
                next
            };
            height -= 1;
        }
        let slot = table + 8 * Self::index(input, height);
        if self.format.is_present(mem.read_u64(slot)) {
            return Err(MapError::AlreadyMapped);
        }
        mem.write_u64(slot, self.format.leaf_entry(output, height, perms));
        Ok(())
    }

    /// Removes the leaf mapping `input` (of any size); returns its output
    /// address and size. Intermediate tables stay (they are reused).
    pub fn unmap(&self, mem: &impl PhysMem, input: u64) -> Result<(PhysAddr, PageSize), MapError> {
        let (slot, entry, height) = self.find_leaf(mem, input).ok_or(MapError::NotMapped)?;
        mem.write_u64(slot, 0);
        let size = match height {
            1 => PageSize::Size4K,
            2 => PageSize::Size2M,
            _ => PageSize::Size1G,
        };
        Ok((self.format.address(entry), size))
    }

    fn find_leaf(&self, mem: &impl PhysMem, input: u64) -> Option<(PhysAddr, u64, u32)> {
        if input >> self.input_bits != 0 {
            return None;
        }
        let mut table = self.root;
        let mut height = self.height;
        loop {
            let slot = table + 8 * Self::index(input, height);
            let entry = mem.read_u64(slot);
            if !self.format.is_present(entry) {
                return None;
            }
            if height > 1 && self.format.is_table(entry, height) {
                table = self.format.address(entry);
                height -= 1;
                continue;
            }
            return Some((slot, entry, height));
        }
    }

    /// Software walk: the output address and rights for `input`.
    pub fn lookup(&self, mem: &impl PhysMem, input: u64) -> Option<(PhysAddr, Perms)> {
        let (_, entry, height) = self.find_leaf(mem, input)?;
        let mask = (1u64 << (12 + 9 * (height - 1))) - 1;
        Some((
            (self.format.address(entry) & !mask) | (input & mask),
            self.format.perms(entry),
        ))
    }
}
