//! The boot frame allocator: hands out zeroed 4 KiB frames from free RAM for
//! the kernel's own boot-time structures (IOMMU root tables, test spaces).
//! Everything it does not hand out becomes the initial untyped memory.

use crate::boot::{MemoryKind, MemoryRegion};

/// A bump allocator over one RAM range.
pub struct BootFrames {
    start: u64,
    next: u64,
    end: u64,
}

unsafe extern "C" {
    static __kernel_end: u8;
}

impl BootFrames {
    /// Takes the largest RAM range above the kernel image (and above 1 MiB).
    pub fn new(memory: &[MemoryRegion]) -> Option<BootFrames> {
        let kernel_end = crate::arch::kernel_virt_to_phys(&raw const __kernel_end as u64);
        memory
            .iter()
            .filter(|r| r.kind == MemoryKind::Ram)
            .filter_map(|r| {
                let start = r.start.max(kernel_end).max(1 << 20).next_multiple_of(4096);
                let end = (r.start + r.size) & !4095;
                (start < end && crate::arch::phys_map_covers(start, end - start)).then_some(
                    BootFrames {
                        start,
                        next: start,
                        end,
                    },
                )
            })
            .max_by_key(|f| f.end - f.start)
    }

    /// A zeroed 4 KiB frame, or `None` when the range is used up.
    pub fn alloc(&mut self) -> Option<u64> {
        if self.next >= self.end {
            return None;
        }
        let pa = self.next;
        self.next += 4096;
        // SAFETY: the frame is free RAM above the kernel image, inside the
        // direct map, handed out once.
        unsafe { core::ptr::write_bytes(crate::mem::phys_to_virt(pa) as *mut u8, 0, 4096) };
        Some(pa)
    }

    /// The physical range handed out so far.
    pub fn allocated(&self) -> core::ops::Range<u64> {
        self.start..self.next
    }
}
