//! Helpers for the translation tests: a guest-physical view of simulated
//! memory, so first-stage / stage-1 tables can be built with IPAs.

use crate::model::{SimFrames, SimMemory};
use crate::pagetable::{PageSize, PageTable, PageTableFormat, Perms};
use crate::{FrameAllocator, PAGE_SIZE, PhysAddr, PhysMem};

pub const MIB: u64 = 1 << 20;

/// Physical memory seen through a fixed offset: guest-physical `g` is
/// physical `g + offset` (what a stage 2 mapping the window does).
pub struct GuestView<'a> {
    pub memory: &'a SimMemory,
    pub offset: u64,
}

impl PhysMem for GuestView<'_> {
    fn read_u64(&self, addr: PhysAddr) -> u64 {
        self.memory.read_u64(addr + self.offset)
    }
    fn write_u64(&self, addr: PhysAddr, value: u64) {
        self.memory.write_u64(addr + self.offset, value)
    }
}

/// Frames handed out as guest-physical addresses in `[next, end)`.
pub struct GuestFrames<'a> {
    pub view: &'a GuestView<'a>,
    pub next: u64,
    pub end: u64,
}

impl FrameAllocator for GuestFrames<'_> {
    fn alloc_zeroed_frame(&mut self) -> Option<PhysAddr> {
        if self.next >= self.end {
            return None;
        }
        let frame = self.next;
        self.next += PAGE_SIZE;
        self.view.zero(frame, PAGE_SIZE);
        Some(frame)
    }
}

/// The fail-closed tests' IoSpace `space`: IPA pages 0..4 mapped
/// read-write at `64 MiB * space` onwards.
pub fn map_space_pages<F: PageTableFormat>(
    table: &PageTable<F>,
    memory: &SimMemory,
    frames: &mut SimFrames,
    space: u32,
) {
    for page in 0..4u64 {
        let pa = 64 * MIB * u64::from(space) + page * 4096;
        table
            .map(
                memory,
                frames,
                page * 4096,
                pa,
                PageSize::Size4K,
                Perms::READ_WRITE,
            )
            .unwrap();
    }
}
