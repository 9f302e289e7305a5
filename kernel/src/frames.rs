//! The boot frame allocator: hands out zeroed 4 KiB frames from free RAM for
//! the kernel's own boot-time structures (IOMMU root tables, test spaces).
//! Everything it does not hand out becomes the initial untyped memory.

use crate::boot_types::{MemoryKind, MemoryRegion};

/// A bump allocator over one RAM range.
pub struct BootFrames {
    start: u64,
    next: u64,
    end: u64,
}

impl BootFrames {
    /// Takes the largest piece of RAM above the kernel image (and above
    /// 1 MiB) that overlaps none of `reserved` (boot modules).
    pub fn new(memory: &[MemoryRegion], reserved: &[(u64, u64)]) -> Option<BootFrames> {
        let kernel_end = crate::mem::kernel_image_end();
        let mut best: Option<BootFrames> = None;
        for region in memory.iter().filter(|r| r.kind == MemoryKind::Ram) {
            let mut start = region
                .start
                .max(kernel_end)
                .max(1 << 20)
                .next_multiple_of(4096);
            let end = (region.start + region.size) & !4095;
            // Walk the pieces between reserved ranges, in address order.
            while start < end {
                let blocker = reserved
                    .iter()
                    .filter(|&&(at, len)| at < end && at.saturating_add(len) > start)
                    .min_by_key(|&&(at, _)| at);
                let piece_end = blocker.map_or(end, |&(at, _)| at.max(start) & !4095);
                let candidate = BootFrames {
                    start,
                    next: start,
                    end: piece_end,
                };
                if piece_end > start
                    && crate::arch::phys_map_covers(start, piece_end - start)
                    && best
                        .as_ref()
                        .is_none_or(|b| b.end - b.start < piece_end - start)
                {
                    best = Some(candidate);
                }
                match blocker {
                    Some(&(at, len)) => start = at.saturating_add(len).next_multiple_of(4096),
                    None => break,
                }
            }
        }
        best
    }

    /// A zeroed 4 KiB frame, or `None` when the range is used up.
    ///
    /// Boot only, and not inlined: LTO had copied it into 26 call sites
    /// (kernel/README.md, "Size").
    #[inline(never)]
    pub fn alloc(&mut self) -> Option<u64> {
        if self.next >= self.end {
            return None;
        }
        let pa = self.next;
        self.next += 4096;
        // Free RAM above the kernel image, in the direct map, handed out once.
        crate::mem::zero(pa, 4096);
        Some(pa)
    }

    /// The physical range handed out so far.
    #[cfg(feature = "self-tests")]
    pub fn allocated(&self) -> core::ops::Range<u64> {
        self.start..self.next
    }

    /// Ends boot allocation: returns the range not handed out, which the
    /// caller turns into Untyped memory. Later `alloc` calls return `None`.
    pub fn take_rest(&mut self) -> core::ops::Range<u64> {
        let rest = self.next..self.end;
        self.next = self.end;
        rest
    }
}
