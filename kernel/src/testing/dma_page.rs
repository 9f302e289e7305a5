//! Statically allocated pages that devices write behind the compiler's back.

use core::cell::UnsafeCell;

/// One 4 KiB page in the kernel image, for DMA tests and boot-time IOMMU
/// structures. All access is volatile: a device may write it at any time.
#[repr(C, align(4096))]
pub struct DmaPage(UnsafeCell<[u8; 4096]>);

// SAFETY: every access is a volatile byte access through `fill`/`read`; the
// kernel is single-core with interrupts off, so no two CPUs race on it, and
// a device write racing a read yields some byte value, never UB in practice
// for MMIO-visible memory.
unsafe impl Sync for DmaPage {}

impl DmaPage {
    /// A zeroed page.
    pub const fn new() -> DmaPage {
        DmaPage(UnsafeCell::new([0; 4096]))
    }

    /// Its physical (bus, without an IOMMU) address.
    pub fn phys(&self) -> u64 {
        crate::arch::kernel_virt_to_phys(self.0.get() as u64)
    }

    /// Sets every byte to `value`.
    pub fn fill(&self, value: u8) {
        let base = self.0.get() as *mut u8;
        for i in 0..4096 {
            // SAFETY: `i` is inside the page.
            unsafe { base.add(i).write_volatile(value) };
        }
    }

    /// Reads byte `index` (modulo the page size).
    pub fn read(&self, index: usize) -> u8 {
        // SAFETY: the index is reduced into the page.
        unsafe {
            (self.0.get() as *const u8)
                .add(index % 4096)
                .read_volatile()
        }
    }

    /// A checksum of the whole page (FNV-1a), to detect any changed byte.
    pub fn checksum(&self) -> u64 {
        (0..4096).fold(0xCBF2_9CE4_8422_2325u64, |hash, i| {
            (hash ^ u64::from(self.read(i))).wrapping_mul(0x100_0000_01B3)
        })
    }
}
