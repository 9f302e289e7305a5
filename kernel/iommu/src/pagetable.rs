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

/// What covers one 2 MiB region of a table's input
/// ([`PageTable::covering`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Covering {
    /// A last-level table of 4 KiB entries (its physical address).
    Table(PhysAddr),
    /// A 2 MiB or 1 GiB leaf: its output base, the offset mask within it,
    /// and its rights.
    Leaf {
        /// Input address of the leaf's first byte.
        input: u64,
        /// Output address of the leaf's first byte.
        output: PhysAddr,
        /// The input bits kept as the offset (size - 1).
        mask: u64,
        /// The leaf's rights.
        perms: Perms,
    },
    /// Nothing is mapped in the region.
    Nothing,
}

/// The allocator of a walk that allocates nothing.
struct NoFrames;

impl FrameAllocator for NoFrames {
    fn alloc_zeroed_frame(&mut self) -> Option<PhysAddr> {
        None
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
    /// Whether the hardware can record writes in this format's leaves
    /// (a dirty bit the unit sets; see [`PageTable::read_dirty`]).
    fn tracks_dirty(&self) -> bool {
        false
    }
    /// Whether a present leaf `entry` is marked dirty (written through it
    /// since it was last cleaned). Formats without tracking: never.
    fn is_dirty(&self, entry: u64) -> bool {
        let _ = entry;
        false
    }
    /// The leaf `entry` marked clean: a later write through it marks it
    /// dirty again (once the IOTLB no longer holds it). Rights unchanged.
    fn clean(&self, entry: u64) -> u64 {
        entry
    }
    /// Whether a clear must rewrite the leaf `entry` ([`Self::clean`]):
    /// when it is dirty, and in formats whose hardware needs more reset
    /// (VT-d first stage under QEMU: an accessed leaf never turns dirty).
    fn needs_clean(&self, entry: u64) -> bool {
        self.is_dirty(entry)
    }
    /// The leaf `entry` marked dirty (used when tracking stops, so a
    /// format whose clean state is write-protected is writable again).
    fn mark_dirty(&self, entry: u64) -> u64 {
        entry
    }
}

/// What [`PageTable::read_dirty`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirtyScan {
    /// Dirty leaves reported.
    pub dirty: u64,
    /// Leaves cleaned (0 unless asked to clear).
    pub cleaned: u64,
    /// Present leaves visited.
    pub leaves: u64,
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
        if !Self::valid_shape(height, input_bits) {
            return Err(MapError::OutOfRange);
        }
        let root = alloc.alloc_zeroed_frame().ok_or(MapError::OutOfMemory)?;
        Self::at(root, format, height, input_bits)
    }

    /// The table rooted at `root`, a zeroed (or previously built) frame
    /// the caller owns, such as the memory of a kernel object.
    pub fn at(root: PhysAddr, format: F, height: u32, input_bits: u32) -> Result<Self, MapError> {
        if !Self::valid_shape(height, input_bits) || root & 0xfff != 0 {
            return Err(MapError::OutOfRange);
        }
        Ok(Self {
            root,
            height,
            format,
            input_bits,
        })
    }

    fn valid_shape(height: u32, input_bits: u32) -> bool {
        (1..=5).contains(&height)
            && input_bits <= 12 + 9 * height
            && input_bits > 12 + 9 * (height - 1)
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

    /// Maps the 4 KiB page at `input` to `output` in `leaf_table`, the
    /// last-level table of `input`'s 2 MiB region (as
    /// [`PageTable::leaf_table_or_new`] returned it, and the caller kept):
    /// [`PageTable::map`] of one 4 KiB page without the walk from the root.
    /// The same errors for the same input; `AlreadyMapped` if the entry is
    /// present. The caller answers for `leaf_table` being that region's
    /// table of this page table.
    #[inline(always)]
    pub fn map_4k_in(
        &self,
        mem: &impl PhysMem,
        leaf_table: PhysAddr,
        input: u64,
        output: PhysAddr,
        perms: Perms,
    ) -> Result<(), MapError> {
        if !perms.read && !perms.write {
            return Err(MapError::NoAccess);
        }
        if input & 0xfff != 0 || output & 0xfff != 0 {
            return Err(MapError::Misaligned);
        }
        if input >> self.input_bits != 0 {
            return Err(MapError::OutOfRange);
        }
        let slot = leaf_table + 8 * Self::index(input, 1);
        if self.format.is_present(mem.read_u64(slot)) {
            return Err(MapError::AlreadyMapped);
        }
        mem.write_u64(slot, self.format.leaf_entry(output, 1, perms));
        Ok(())
    }

    /// Clears the 4 KiB entry for `input` in `leaf_table`, the last-level
    /// table of its 2 MiB region ([`PageTable::map_4k_in`]'s): what
    /// [`PageTable::unmap`] does for a 4 KiB leaf, without the walk.
    /// Returns the output page; `NotMapped` if the entry is absent.
    pub fn unmap_4k_in(
        &self,
        mem: &impl PhysMem,
        leaf_table: PhysAddr,
        input: u64,
    ) -> Result<PhysAddr, MapError> {
        if input >> self.input_bits != 0 {
            return Err(MapError::NotMapped);
        }
        let slot = leaf_table + 8 * Self::index(input, 1);
        let entry = mem.read_u64(slot);
        if !self.format.is_present(entry) {
            return Err(MapError::NotMapped);
        }
        mem.write_u64(slot, 0);
        Ok(self.format.address(entry))
    }

    /// Sets the 4 KiB entry for `input` to `leaf` (an output page and its
    /// rights) or clears it (`None`), in one walk; allocates the tables a
    /// new leaf needs. Returns whether a 4 KiB leaf was there before. A
    /// larger leaf covering `input` is `Misaligned` and changes nothing.
    pub fn set_4k(
        &self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        input: u64,
        leaf: Option<(PhysAddr, Perms)>,
    ) -> Result<bool, MapError> {
        if input & 0xfff != 0 || leaf.is_some_and(|(output, _)| output & 0xfff != 0) {
            return Err(MapError::Misaligned);
        }
        if input >> self.input_bits != 0 {
            return Err(MapError::OutOfRange);
        }
        if leaf.is_some_and(|(_, perms)| !perms.read && !perms.write) {
            return Err(MapError::NoAccess);
        }
        // Only a new leaf needs the tables on its way.
        let table = match leaf {
            Some(_) => self.leaf_table(mem, Some(alloc), input)?,
            None => self.find_leaf_table(mem, input)?,
        };
        let Some(table) = table else {
            return Ok(false);
        };
        let slot = table + 8 * Self::index(input, 1);
        let had = self.format.is_present(mem.read_u64(slot));
        let entry = match leaf {
            Some((output, perms)) => self.format.leaf_entry(output, 1, perms),
            None => 0,
        };
        mem.write_u64(slot, entry);
        Ok(had)
    }

    /// The last-level (4 KiB) table covering `input`, walking table
    /// entries only: `Ok(Some(table))`, `Ok(None)` when a table on the
    /// way is missing (nothing is mapped in that region), `Err(Misaligned)`
    /// when a larger leaf covers `input`, `Err(OutOfRange)` beyond the
    /// table's input bits. For runs of 4 KiB entries in one 2 MiB region:
    /// walk once, then index the table.
    pub fn find_leaf_table(
        &self,
        mem: &impl PhysMem,
        input: u64,
    ) -> Result<Option<PhysAddr>, MapError> {
        self.leaf_table(mem, None::<&mut NoFrames>, input)
    }

    /// [`PageTable::find_leaf_table`], allocating the missing tables.
    pub fn leaf_table_or_new(
        &self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        input: u64,
    ) -> Result<PhysAddr, MapError> {
        self.leaf_table(mem, Some(alloc), input)?
            .ok_or(MapError::OutOfMemory)
    }

    fn leaf_table<A: FrameAllocator>(
        &self,
        mem: &impl PhysMem,
        mut alloc: Option<&mut A>,
        input: u64,
    ) -> Result<Option<PhysAddr>, MapError> {
        if input >> self.input_bits != 0 {
            return Err(MapError::OutOfRange);
        }
        let mut table = self.root;
        let mut height = self.height;
        while height > 1 {
            let slot = table + 8 * Self::index(input, height);
            let entry = mem.read_u64(slot);
            table = if self.format.is_present(entry) {
                if !self.format.is_table(entry, height) {
                    return Err(MapError::Misaligned);
                }
                self.format.address(entry)
            } else if let Some(alloc) = alloc.as_deref_mut() {
                let next = alloc.alloc_zeroed_frame().ok_or(MapError::OutOfMemory)?;
                mem.write_u64(slot, self.format.table_entry(next));
                next
            } else {
                return Ok(None);
            };
            height -= 1;
        }
        Ok(Some(table))
    }

    /// What covers the 2 MiB region of `input` (for runs of lookups in
    /// one region: walk once, then index the last-level table):
    /// [`Covering::Table`], a larger leaf, or nothing.
    pub fn covering(&self, mem: &impl PhysMem, input: u64) -> Covering {
        let Some((_, entry, height)) = self.find_entry(mem, input, 2) else {
            return Covering::Nothing;
        };
        if height == 2 && self.format.is_table(entry, 2) {
            return Covering::Table(self.format.address(entry));
        }
        let mask = (1u64 << (12 + 9 * (height - 1))) - 1;
        Covering::Leaf {
            input: input & !mask,
            output: self.format.address(entry) & !mask,
            mask,
            perms: self.format.perms(entry),
        }
    }

    /// One lookup inside the region [`PageTable::covering`] described:
    /// the output address and rights for `input`.
    pub fn lookup_in(
        &self,
        mem: &impl PhysMem,
        covering: Covering,
        input: u64,
    ) -> Option<(PhysAddr, Perms)> {
        match covering {
            Covering::Table(table) => {
                let entry = mem.read_u64(table + 8 * Self::index(input, 1));
                self.format.is_present(entry).then(|| {
                    (
                        self.format.address(entry) | (input & 0xfff),
                        self.format.perms(entry),
                    )
                })
            }
            Covering::Leaf {
                input: base,
                output,
                mask,
                perms,
            } if input & !mask == base => Some((output | (input & mask), perms)),
            // A leaf smaller than the region (a one-level table): walk.
            Covering::Leaf { .. } => self.lookup(mem, input),
            Covering::Nothing => None,
        }
    }

    fn find_leaf(&self, mem: &impl PhysMem, input: u64) -> Option<(PhysAddr, u64, u32)> {
        self.find_entry(mem, input, 1)
    }

    /// Walks towards `input` down to height `lowest`: the slot, entry and
    /// height of the first leaf, or of the table entry at `lowest`.
    fn find_entry(
        &self,
        mem: &impl PhysMem,
        input: u64,
        lowest: u32,
    ) -> Option<(PhysAddr, u64, u32)> {
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
            if height > lowest && self.format.is_table(entry, height) {
                table = self.format.address(entry);
                height -= 1;
                continue;
            }
            return Some((slot, entry, height));
        }
    }

    /// Unmaps every leaf inside `[start, start + length)` (page aligned;
    /// large leaves must lie wholly inside) and returns how many bytes were
    /// unmapped. Absent pages are skipped. The caller adds the range to an
    /// [`crate::invalidation::InvalidationBatch`] and flushes before
    /// reusing the frames. Work is bounded by `length / 4 KiB` lookups.
    pub fn unmap_range(
        &self,
        mem: &impl PhysMem,
        start: u64,
        length: u64,
    ) -> Result<u64, MapError> {
        if start & 0xfff != 0 || length & 0xfff != 0 {
            return Err(MapError::Misaligned);
        }
        let end = start.checked_add(length).ok_or(MapError::OutOfRange)?;
        let mut address = start;
        let mut unmapped = 0;
        while address < end {
            match self.find_leaf(mem, address) {
                Some((slot, _, height)) => {
                    let size = 1u64 << (12 + 9 * (height - 1));
                    if !address.is_multiple_of(size) || address + size > end {
                        return Err(MapError::Misaligned);
                    }
                    mem.write_u64(slot, 0);
                    unmapped += size;
                    address += size;
                }
                None => address += 1 << 12,
            }
        }
        Ok(unmapped)
    }

    /// Removes every leaf whose output range intersects
    /// `[output, output + length)` (e.g. a frame revoked from a stage 2, in
    /// a shadow table) and returns how many were removed. Visits every
    /// entry once: bounded by the table's size.
    pub fn remove_leaves_to(&self, mem: &impl PhysMem, output: PhysAddr, length: u64) -> u64 {
        self.remove_in(
            mem,
            self.root,
            self.height,
            output,
            output.saturating_add(length),
        )
    }

    fn remove_in(
        &self,
        mem: &impl PhysMem,
        table: PhysAddr,
        height: u32,
        start: u64,
        end: u64,
    ) -> u64 {
        let mut removed = 0;
        for index in 0..512 {
            let slot = table + 8 * index;
            let entry = mem.read_u64(slot);
            if !self.format.is_present(entry) {
                continue;
            }
            if height > 1 && self.format.is_table(entry, height) {
                removed += self.remove_in(mem, self.format.address(entry), height - 1, start, end);
                continue;
            }
            let size = 1u64 << (12 + 9 * (height - 1));
            let leaf = self.format.address(entry) & !(size - 1);
            if leaf < end && start < leaf + size {
                mem.write_u64(slot, 0);
                removed += 1;
            }
        }
        removed
    }

    /// Calls `visit` with every table frame of this page table (the root
    /// last), so the owner can reclaim them after the table is detached and
    /// invalidated. Depth is bounded by the table height.
    pub fn for_each_table(&self, mem: &impl PhysMem, mut visit: impl FnMut(PhysAddr)) {
        self.visit_tables(mem, self.root, self.height, &mut visit);
    }

    fn visit_tables(
        &self,
        mem: &impl PhysMem,
        table: PhysAddr,
        height: u32,
        visit: &mut impl FnMut(PhysAddr),
    ) {
        if height > 1 {
            for index in 0..512 {
                let entry = mem.read_u64(table + 8 * index);
                if self.format.is_present(entry) && self.format.is_table(entry, height) {
                    self.visit_tables(mem, self.format.address(entry), height - 1, visit);
                }
            }
        }
        visit(table);
    }

    /// Calls `visit(input, output, size_bits, perms)` with every leaf of
    /// this page table, in input order: a read-back of what the hardware
    /// would translate (the kernel's abstraction check compares it with
    /// the capability model). Visits every present entry once.
    pub fn for_each_leaf(
        &self,
        mem: &impl PhysMem,
        mut visit: impl FnMut(u64, PhysAddr, u32, Perms),
    ) {
        let shift = 12 + 9 * (self.height - 1);
        let entries = (1u64 << (self.input_bits.saturating_sub(shift)).min(9)).min(512);
        self.visit_leaves(mem, self.root, self.height, 0, entries, &mut visit);
    }

    fn visit_leaves(
        &self,
        mem: &impl PhysMem,
        table: PhysAddr,
        height: u32,
        base: u64,
        entries: u64,
        visit: &mut impl FnMut(u64, PhysAddr, u32, Perms),
    ) {
        let shift = 12 + 9 * (height - 1);
        for index in 0..entries {
            let entry = mem.read_u64(table + 8 * index);
            if !self.format.is_present(entry) {
                continue;
            }
            let input = base | index << shift;
            if height > 1 && self.format.is_table(entry, height) {
                self.visit_leaves(
                    mem,
                    self.format.address(entry),
                    height - 1,
                    input,
                    512,
                    visit,
                );
            } else {
                let output = self.format.address(entry) & !((1u64 << shift) - 1);
                visit(input, output, shift, self.format.perms(entry));
            }
        }
    }

    /// Reports every dirty leaf inside `[start, start + length)` (page
    /// aligned; a large leaf must lie wholly inside) as `visit(input,
    /// size_bits)`, and with `clear` marks it clean. The caller must then
    /// invalidate the range (the IOTLB may hold the entry as dirty and let
    /// a later write through without marking it) before relying on the
    /// next read. Work is bounded by `length / 4 KiB` lookups.
    /// [`MapError::PageSizeNotSupported`] if the format cannot track.
    pub fn read_dirty(
        &self,
        mem: &impl PhysMem,
        start: u64,
        length: u64,
        clear: bool,
        mut visit: impl FnMut(u64, u32),
    ) -> Result<DirtyScan, MapError> {
        self.for_leaves_in(mem, start, length, |slot, entry, address, height| {
            let mut scan = DirtyScan {
                leaves: 1,
                ..DirtyScan::default()
            };
            if self.format.is_dirty(entry) {
                visit(address, 12 + 9 * (height - 1));
                scan.dirty = 1;
            }
            if clear && self.format.needs_clean(entry) {
                mem.write_u64(slot, self.format.clean(entry));
                scan.cleaned = 1;
            }
            scan
        })
    }

    /// Marks every leaf inside `[start, start + length)` clean (`clean`) or
    /// dirty (`!clean`): the first when tracking starts, the second when it
    /// stops. The caller invalidates the range afterwards. Bounded like
    /// [`PageTable::read_dirty`].
    pub fn set_dirty_state(
        &self,
        mem: &impl PhysMem,
        start: u64,
        length: u64,
        clean: bool,
    ) -> Result<DirtyScan, MapError> {
        self.for_leaves_in(mem, start, length, |slot, entry, _, _| {
            let new = if clean {
                self.format.clean(entry)
            } else {
                self.format.mark_dirty(entry)
            };
            if new != entry {
                mem.write_u64(slot, new);
            }
            DirtyScan {
                leaves: 1,
                cleaned: u64::from(clean && new != entry),
                dirty: u64::from(self.format.is_dirty(entry)),
            }
        })
    }

    fn for_leaves_in(
        &self,
        mem: &impl PhysMem,
        start: u64,
        length: u64,
        mut each: impl FnMut(PhysAddr, u64, u64, u32) -> DirtyScan,
    ) -> Result<DirtyScan, MapError> {
        if !self.format.tracks_dirty() {
            return Err(MapError::PageSizeNotSupported);
        }
        if start & 0xfff != 0 || length & 0xfff != 0 {
            return Err(MapError::Misaligned);
        }
        let end = start.checked_add(length).ok_or(MapError::OutOfRange)?;
        let mut total = DirtyScan::default();
        let mut add = |scan: DirtyScan| {
            total.dirty += scan.dirty;
            total.cleaned += scan.cleaned;
            total.leaves += scan.leaves;
        };
        let mut address = start;
        while address < end {
            // One walk per 2 MiB region: its last-level table is indexed.
            let region_end = ((address | 0x1f_ffff) + 1).min(end);
            match self.covering(mem, address) {
                Covering::Table(table) => {
                    for page in (address..region_end).step_by(4096) {
                        let slot = table + 8 * Self::index(page, 1);
                        let entry = mem.read_u64(slot);
                        if self.format.is_present(entry) {
                            add(each(slot, entry, page, 1));
                        }
                    }
                    address = region_end;
                }
                Covering::Leaf { .. } => {
                    let (slot, entry, height) =
                        self.find_leaf(mem, address).ok_or(MapError::OutOfRange)?;
                    let size = 1u64 << (12 + 9 * (height - 1));
                    if !address.is_multiple_of(size) || address + size > end {
                        return Err(MapError::Misaligned);
                    }
                    add(each(slot, entry, address, height));
                    address += size;
                }
                // No table below this region: nothing mapped in it.
                Covering::Nothing => address = region_end,
            }
        }
        Ok(total)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SimFrames, SimMemory};
    use crate::smmuv3::pagetable::Stage2Format;
    use crate::vtd::regs::Capability;
    use crate::vtd::tables::{FirstStageFormat, SecondStageFormat};

    /// A VT-d second-stage table in `memory` (tables from 16 MiB) with
    /// `pages` mapped: (input, output, size, rights).
    fn second_stage_with(
        memory: &SimMemory,
        pages: &[(u64, u64, PageSize, Perms)],
    ) -> PageTable<SecondStageFormat> {
        let mut frames = SimFrames::new(memory, 16 << 20, 32 << 20);
        let format = SecondStageFormat::for_unit(Capability(0x00d2_008c_222f_0606));
        let table = PageTable::new(&mut frames, format, 4, 48).unwrap();
        for &(input, output, size, perms) in pages {
            table
                .map(memory, &mut frames, input, output, size, perms)
                .unwrap();
        }
        table
    }

    #[test]
    fn every_leaf_is_read_back() {
        let memory = SimMemory::new(64 << 20);
        let pages = [
            (0x1000, 0x9000, PageSize::Size4K, Perms::READ),
            (0x20_0000, 0x40_0000, PageSize::Size2M, Perms::READ_WRITE),
            (0x7f_ffff_f000, 0xa000, PageSize::Size4K, Perms::WRITE),
        ];
        let table = second_stage_with(&memory, &pages);
        let mut seen = std::vec::Vec::new();
        table.for_each_leaf(&memory, |input, output, bits, perms| {
            seen.push((input, output, bits, perms))
        });
        let expected: std::vec::Vec<_> = pages
            .iter()
            .map(|&(i, o, size, p)| (i, o, size.shift(), p))
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn lookups_in_a_covered_region_agree_with_full_walks() {
        let memory = SimMemory::new(64 << 20);
        let table = second_stage_with(
            &memory,
            &[
                (0x1000, 0x9000, PageSize::Size4K, Perms::READ),
                (0x3000, 0xb000, PageSize::Size4K, Perms::READ_WRITE),
                (0x20_0000, 0x40_0000, PageSize::Size2M, Perms::READ_WRITE),
                (0x4000_0000, 0x8000_0000, PageSize::Size1G, Perms::READ),
            ],
        );
        let inputs = (0..0x60_0000u64)
            .step_by(0x1800)
            .chain((0x4000_0000..0x4060_0000).step_by(0x3_3000))
            .chain([0x8000_0000, 1 << 47, u64::MAX]);
        for input in inputs {
            let covering = table.covering(&memory, input);
            assert_eq!(
                table.lookup_in(&memory, covering, input),
                table.lookup(&memory, input),
                "{input:#x} in {covering:x?}"
            );
            // Any other input of the same 2 MiB region, with its covering.
            let other = (input & !0x1f_ffff) | 0x1_f008;
            assert_eq!(
                table.lookup_in(&memory, covering, other),
                table.lookup(&memory, other),
                "{other:#x} in {covering:x?}"
            );
        }
    }

    #[test]
    fn map_lookup_unmap_and_reclaim() {
        let memory = SimMemory::new(64 << 20);
        let mut frames = SimFrames::new(&memory, 16 << 20, 32 << 20);
        let table = PageTable::new(
            &mut frames,
            SecondStageFormat::for_unit(Capability(0x00d2_008c_222f_0606)),
            4,
            48,
        )
        .unwrap();
        table
            .map(
                &memory,
                &mut frames,
                0x1000,
                0x9000,
                PageSize::Size4K,
                Perms::READ,
            )
            .unwrap();
        table
            .map(
                &memory,
                &mut frames,
                0x20_0000,
                0x40_0000,
                PageSize::Size2M,
                Perms::READ_WRITE,
            )
            .unwrap();
        table
            .map(
                &memory,
                &mut frames,
                0x4000_0000,
                0x8000_0000,
                PageSize::Size1G,
                Perms::WRITE,
            )
            .unwrap();
        assert_eq!(table.lookup(&memory, 0x1234), Some((0x9234, Perms::READ)));
        assert_eq!(
            table.lookup(&memory, 0x21_0000),
            Some((0x41_0000, Perms::READ_WRITE))
        );
        assert_eq!(
            table.lookup(&memory, 0x4000_1000),
            Some((0x8000_1000, Perms::WRITE))
        );
        assert_eq!(
            table.map(
                &memory,
                &mut frames,
                0x1000,
                0x9000,
                PageSize::Size4K,
                Perms::READ
            ),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(
            table.map(
                &memory,
                &mut frames,
                0x1800,
                0x9000,
                PageSize::Size4K,
                Perms::READ
            ),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            table.map(
                &memory,
                &mut frames,
                1 << 48,
                0x9000,
                PageSize::Size4K,
                Perms::READ
            ),
            Err(MapError::OutOfRange)
        );
        assert_eq!(
            table.map(
                &memory,
                &mut frames,
                0x5000,
                0x9000,
                PageSize::Size4K,
                Perms {
                    read: false,
                    write: false
                }
            ),
            Err(MapError::NoAccess)
        );
        // A range cutting a 2 MiB leaf is refused; covering it works.
        assert_eq!(
            table.unmap_range(&memory, 0x20_0000, 0x1000),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            table.unmap_range(&memory, 0, 0x40_0000),
            Ok(0x1000 + 0x20_0000)
        );
        assert_eq!(table.lookup(&memory, 0x1000), None);
        assert_eq!(table.unmap(&memory, 0x1000), Err(MapError::NotMapped));
        let mut tables = std::vec::Vec::new();
        table.for_each_table(&memory, |t| tables.push(t));
        assert_eq!(tables.last(), Some(&table.root()));
        // Root, one level-3 table; level-2 tables for 0x0 and 0x4000_0000 is a 1G leaf; one level-1 table.
        assert_eq!(tables.len() as u64, frames.allocated);
    }

    #[test]
    fn large_pages_follow_the_format() {
        let memory = SimMemory::new(64 << 20);
        let mut frames = SimFrames::new(&memory, 16 << 20, 32 << 20);
        let no_1g = FirstStageFormat::for_unit(Capability(0x00d2_008c_222f_0606));
        let table = PageTable::new(&mut frames, no_1g, 4, 48).unwrap();
        assert_eq!(
            table.map(&memory, &mut frames, 0, 0, PageSize::Size1G, Perms::READ),
            Err(MapError::PageSizeNotSupported)
        );
        let s2 = PageTable::new(&mut frames, Stage2Format::default(), 3, 39).unwrap();
        s2.map(
            &memory,
            &mut frames,
            0x4000_0000,
            0,
            PageSize::Size1G,
            Perms::READ,
        )
        .unwrap();
        assert_eq!(s2.lookup(&memory, 0x4000_0010), Some((0x10, Perms::READ)));
        assert!(PageTable::new(&mut frames, Stage2Format::default(), 3, 40).is_err());
    }
}
