//! The heap: a first-fit allocator over one static region of
//! [`HEAP_SIZE`] bytes, behind a `spin::Mutex`, plus the domain's own heap
//! when the image gives it one (`heap_size`: init maps it at
//! `sys::names::HEAP_ADDRESS` and records its size in the capability table;
//! `rt`'s start-up code adds it with [`Heap::add_region`]).
//!
//! The free space is a sorted table of address ranges ([`FreeRanges`])
//! kept *outside* the heap memory, so the bookkeeping is ordinary safe
//! Rust (and tested on the host); the only unsafe code is the
//! `GlobalAlloc` contract itself. Freed ranges are merged with their
//! neighbours. The table holds [`MAX_FREE_RANGES`] ranges: an allocation
//! that would need one more fails (null), and a free that would need one
//! more is not returned to the table and counted in [`Stats::lost`] — both
//! only happen after extreme fragmentation.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

/// Size of every program's heap in bytes (in `.bss`; 16 pages).
pub const HEAP_SIZE: usize = 64 * 1024;
/// How many separate free ranges the allocator tracks.
pub const MAX_FREE_RANGES: usize = 64;
/// Every block is a multiple of this size and at least this aligned.
const GRAIN: usize = 16;

/// A half-open address range `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Range {
    start: usize,
    end: usize,
}

/// Usage counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stats {
    /// Bytes handed out and not yet freed (after rounding to the grain).
    pub in_use: usize,
    /// Bytes freed that could not be returned to the table.
    pub lost: usize,
}

/// Why [`FreeRanges::add`] or [`Heap::add_region`] refused a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionError {
    /// Smaller than one grain once rounded inwards, or it wraps around.
    Empty,
    /// It overlaps memory the heap already manages.
    Overlaps,
    /// The free table has no room for another range.
    TableFull,
}

/// The free ranges of one heap, sorted by address, never adjacent.
#[derive(Debug)]
pub struct FreeRanges {
    ranges: [Range; MAX_FREE_RANGES],
    count: usize,
    stats: Stats,
}

fn round_up(value: usize, to: usize) -> Option<usize> {
    value.checked_add(to - 1).map(|v| v & !(to - 1))
}

impl FreeRanges {
    /// A heap whose whole region `start..start + size` is free. `start` and
    /// `size` are rounded inwards to the grain (16 bytes).
    pub const fn new(start: usize, size: usize) -> FreeRanges {
        let mut ranges = [Range { start: 0, end: 0 }; MAX_FREE_RANGES];
        let first = (start + GRAIN - 1) & !(GRAIN - 1);
        let end = (start + size) & !(GRAIN - 1);
        let count = if end > first {
            ranges[0] = Range { start: first, end };
            1
        } else {
            0
        };
        FreeRanges {
            ranges,
            count,
            stats: Stats { in_use: 0, lost: 0 },
        }
    }

    /// Usage counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The block size `layout` occupies.
    fn block_size(layout: Layout) -> Option<usize> {
        round_up(layout.size().max(1), GRAIN)
    }

    /// Finds the first free range with room for `layout`; returns the
    /// block's address.
    pub fn allocate(&mut self, layout: Layout) -> Option<usize> {
        let size = FreeRanges::block_size(layout)?;
        let align = layout.align().max(GRAIN);
        for index in 0..self.count {
            let range = self.ranges[index];
            let Some(start) = round_up(range.start, align) else {
                continue;
            };
            let Some(end) = start.checked_add(size) else {
                continue;
            };
            if end > range.end {
                continue;
            }
            let before = Range {
                start: range.start,
                end: start,
            };
            let after = Range {
                start: end,
                end: range.end,
            };
            let pieces = [before, after];
            let kept = pieces.iter().filter(|r| r.start < r.end).count();
            if self.count - 1 + kept > MAX_FREE_RANGES {
                continue;
            }
            self.remove(index);
            for piece in pieces.iter().rev().filter(|r| r.start < r.end) {
                self.insert_at(index, *piece);
            }
            self.stats.in_use += size;
            return Some(start);
        }
        None
    }

    /// Returns the block at `address` allocated with `layout`.
    pub fn free(&mut self, address: usize, layout: Layout) {
        let Some(size) = FreeRanges::block_size(layout) else {
            return;
        };
        self.stats.in_use -= size;
        let block = Range {
            start: address,
            end: address + size,
        };
        let index = self.ranges[..self.count]
            .iter()
            .position(|r| r.start > address)
            .unwrap_or(self.count);
        let joins_before = index > 0 && self.ranges[index - 1].end == block.start;
        let joins_after = index < self.count && self.ranges[index].start == block.end;
        match (joins_before, joins_after) {
            (true, true) => {
                self.ranges[index - 1].end = self.ranges[index].end;
                self.remove(index);
            }
            (true, false) => self.ranges[index - 1].end = block.end,
            (false, true) => self.ranges[index].start = block.start,
            (false, false) if self.count < MAX_FREE_RANGES => self.insert_at(index, block),
            (false, false) => self.stats.lost += size,
        }
    }

    /// Adds the region `start..start + size` (rounded inwards to the grain)
    /// as free memory. The caller knows the region is not otherwise in use;
    /// this checks only that it overlaps no free range.
    pub fn add(&mut self, start: usize, size: usize) -> Result<(), RegionError> {
        let first = round_up(start, GRAIN).ok_or(RegionError::Empty)?;
        let end = start.checked_add(size).ok_or(RegionError::Empty)? & !(GRAIN - 1);
        if end <= first {
            return Err(RegionError::Empty);
        }
        let index = self.ranges[..self.count]
            .iter()
            .position(|r| r.start >= end)
            .unwrap_or(self.count);
        if index > 0 && self.ranges[index - 1].end > first {
            return Err(RegionError::Overlaps);
        }
        let joins_before = index > 0 && self.ranges[index - 1].end == first;
        let joins_after = index < self.count && self.ranges[index].start == end;
        match (joins_before, joins_after) {
            (true, true) => {
                self.ranges[index - 1].end = self.ranges[index].end;
                self.remove(index);
            }
            (true, false) => self.ranges[index - 1].end = end,
            (false, true) => self.ranges[index].start = first,
            (false, false) if self.count < MAX_FREE_RANGES => {
                self.insert_at(index, Range { start: first, end });
            }
            (false, false) => return Err(RegionError::TableFull),
        }
        Ok(())
    }

    fn remove(&mut self, index: usize) {
        self.ranges.copy_within(index + 1..self.count, index);
        self.count -= 1;
    }

    fn insert_at(&mut self, index: usize, range: Range) {
        self.ranges.copy_within(index..self.count, index + 1);
        self.ranges[index] = range;
        self.count += 1;
    }

    /// Total free bytes.
    pub fn free_bytes(&self) -> usize {
        self.ranges[..self.count]
            .iter()
            .map(|r| r.end - r.start)
            .sum()
    }
}

/// The heap's memory: page aligned, zero-initialised, so it lives in `.bss`.
#[repr(C, align(4096))]
struct Memory(UnsafeCell<[u8; HEAP_SIZE]>);

/// A heap over a static region of [`HEAP_SIZE`] bytes; the program's global
/// allocator on the bare-metal targets.
pub struct Heap {
    memory: Memory,
    free: spin::Mutex<Option<FreeRanges>>,
}

// SAFETY: the memory is only reached through pointers handed out by
// `alloc`, each to one owner at a time (the free table, which guarantees
// blocks do not overlap, is behind the mutex); the heap itself never reads
// or writes the memory.
#[allow(unsafe_code)]
unsafe impl Sync for Heap {}

impl Heap {
    /// An empty heap (its table is set up at the first allocation, when the
    /// region's address is known).
    pub const fn new() -> Heap {
        Heap {
            memory: Memory(UnsafeCell::new([0; HEAP_SIZE])),
            free: spin::Mutex::new(None),
        }
    }

    /// Usage counters.
    pub fn stats(&self) -> Stats {
        self.free
            .lock()
            .as_ref()
            .map(FreeRanges::stats)
            .unwrap_or_default()
    }

    fn base(&self) -> *mut u8 {
        self.memory.0.get().cast()
    }

    /// Whether `address` is inside the static region.
    fn in_static_region(&self, address: usize) -> bool {
        (self.base().addr()..self.base().addr() + HEAP_SIZE).contains(&address)
    }

    /// Adds `start..start + size` to the heap (for the domain's image heap).
    ///
    /// # Safety
    /// The region is mapped readable and writable for the rest of the
    /// program, and nothing else in the program uses it (no Rust object
    /// lives there): from now on the allocator hands it out.
    #[allow(unsafe_code)]
    pub unsafe fn add_region(&self, start: usize, size: usize) -> Result<(), RegionError> {
        let end = start.checked_add(size).ok_or(RegionError::Empty)?;
        let base = self.base().addr();
        if start < base + HEAP_SIZE && base < end {
            return Err(RegionError::Overlaps);
        }
        self.with_ranges(|ranges| ranges.add(start, size))
    }

    fn with_ranges<R>(&self, f: impl FnOnce(&mut FreeRanges) -> R) -> R {
        let mut free = self.free.lock();
        let ranges = free.get_or_insert_with(|| FreeRanges::new(self.base().addr(), HEAP_SIZE));
        f(ranges)
    }
}

impl Default for Heap {
    fn default() -> Heap {
        Heap::new()
    }
}

// SAFETY:
// 1. `alloc` returns a block of at least `layout.size()` bytes aligned to
//    `layout.align()` inside the heap's memory, or null; `FreeRanges` never
//    hands out a range twice until it is freed.
// 2. `dealloc` is only called (by contract) with a pointer from `alloc` and
//    the same layout, and returns exactly that block to the table.
// 3. Pointers into the static region keep its provenance (offsets from
//    its base); pointers into an added region take the exposed provenance
//    of memory the loader mapped outside every Rust object (`add_region`'s
//    contract).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = self.base();
        match self.with_ranges(|ranges| ranges.allocate(layout)) {
            Some(address) if self.in_static_region(address) => {
                base.wrapping_add(address - base.addr())
            }
            Some(address) => core::ptr::with_exposed_provenance_mut(address),
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        self.with_ranges(|ranges| ranges.free(pointer.addr(), layout));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_inside() {
        let mut heap = FreeRanges::new(0x1008, 0x1000);
        let mut blocks = std::vec::Vec::new();
        for (size, align) in [(1, 1), (24, 8), (100, 64), (7, 256), (32, 16)] {
            let address = heap.allocate(layout(size, align)).unwrap();
            assert_eq!(address % align.max(16), 0);
            assert!(address >= 0x1010 && address + size <= 0x2008);
            for &(other, other_size) in &blocks {
                assert!(address + size <= other || other + other_size <= address);
            }
            blocks.push((address, size));
        }
    }

    #[test]
    fn freeing_everything_restores_one_range() {
        let mut heap = FreeRanges::new(0, 4096);
        let all = heap.free_bytes();
        let a = heap.allocate(layout(100, 8)).unwrap();
        let b = heap.allocate(layout(200, 8)).unwrap();
        let c = heap.allocate(layout(50, 128)).unwrap();
        heap.free(b, layout(200, 8));
        heap.free(a, layout(100, 8));
        heap.free(c, layout(50, 128));
        assert_eq!(heap.free_bytes(), all);
        assert_eq!(heap.count, 1);
        assert_eq!(heap.stats(), Stats::default());
    }

    #[test]
    fn exhaustion_is_none_and_freed_space_is_reused() {
        let mut heap = FreeRanges::new(0, 256);
        let a = heap.allocate(layout(128, 16)).unwrap();
        let b = heap.allocate(layout(128, 16)).unwrap();
        assert_eq!(heap.allocate(layout(1, 1)), None);
        heap.free(a, layout(128, 16));
        assert_eq!(heap.allocate(layout(64, 16)), Some(a));
        // 65 bytes round up to 80; only 64 are left.
        assert_eq!(heap.allocate(layout(65, 16)), None);
        assert!(heap.allocate(layout(64, 16)).is_some());
        heap.free(b, layout(128, 16));
        assert_eq!(heap.allocate(layout(isize::MAX as usize - 16, 1)), None);
    }

    #[test]
    fn a_full_table_loses_frees_instead_of_corrupting() {
        // Room for 2 * MAX_FREE_RANGES blocks of 32 bytes and a 32-byte tail.
        let mut heap = FreeRanges::new(0, 64 * MAX_FREE_RANGES + 32);
        let blocks: std::vec::Vec<usize> = (0..2 * MAX_FREE_RANGES)
            .map(|_| heap.allocate(layout(32, 16)).unwrap())
            .collect();
        // Free every other block: with the tail, one hole too many; the last
        // one is lost.
        for address in blocks.iter().step_by(2) {
            heap.free(*address, layout(32, 16));
        }
        assert_eq!(heap.count, MAX_FREE_RANGES);
        assert_eq!(heap.stats().lost, 32);
        // The rest merge with their neighbours and everything comes back
        // except the lost block.
        for address in blocks.iter().skip(1).step_by(2) {
            heap.free(*address, layout(32, 16));
        }
        assert_eq!(heap.free_bytes(), 64 * MAX_FREE_RANGES);
    }

    #[test]
    fn added_regions_merge_or_are_refused_when_they_overlap() {
        let mut heap = FreeRanges::new(0x1000, 0x1000);
        // Adjacent above: one range.
        heap.add(0x2000, 0x1000).unwrap();
        assert_eq!(heap.count, 1);
        assert_eq!(heap.free_bytes(), 0x2000);
        // Apart: a second range, used once the first is too small.
        heap.add(0x10_0000, 0x4000).unwrap();
        assert_eq!(heap.count, 2);
        assert_eq!(heap.allocate(layout(0x2000, 16)), Some(0x1000));
        assert_eq!(heap.allocate(layout(0x3000, 16)), Some(0x10_0000));
        assert_eq!(heap.count, 1);
        // Overlapping what is free, or nothing at all, is refused.
        assert_eq!(heap.add(0x10_3000, 0x2000), Err(RegionError::Overlaps));
        assert_eq!(heap.add(0x20_0008, 8), Err(RegionError::Empty));
        assert_eq!(heap.add(usize::MAX - 8, 64), Err(RegionError::Empty));
        // Right after the free tail: it grows.
        heap.add(0x10_4000, 0x1000).unwrap();
        assert_eq!(heap.count, 1);
        assert_eq!(heap.free_bytes(), 0x2000);
    }

    #[test]
    fn a_region_overlapping_the_static_heap_is_refused() {
        static HEAP: Heap = Heap::new();
        let base = HEAP.base().addr();
        #[allow(unsafe_code)]
        // SAFETY: the call is refused before anything is added.
        let result = unsafe { HEAP.add_region(base + HEAP_SIZE - 4096, 8192) };
        assert_eq!(result, Err(RegionError::Overlaps));
    }

    #[test]
    fn the_static_heap_serves_global_alloc_requests() {
        static HEAP: Heap = Heap::new();
        let layout = layout(64, 32);
        #[allow(unsafe_code)]
        // SAFETY: the block is written within its size and freed once with its layout.
        unsafe {
            let block = HEAP.alloc(layout);
            assert!(!block.is_null());
            assert_eq!(block.addr() % 32, 0);
            block.write_bytes(0xAB, 64);
            assert_eq!(HEAP.stats().in_use, 64);
            HEAP.dealloc(block, layout);
        }
        assert_eq!(HEAP.stats(), Stats::default());
    }
}
