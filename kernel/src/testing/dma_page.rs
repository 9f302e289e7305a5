//! Statically allocated pages that devices write behind the compiler's back.

use core::sync::atomic::{AtomicU8, Ordering};

/// One 4 KiB page in the kernel image, for DMA tests and boot-time IOMMU
/// structures. Its bytes are atomics: a device may write it at any time,
/// so the compiler may not assume a byte keeps the value the kernel wrote
/// (and the page is `Sync` without an `unsafe impl`).
#[repr(C, align(4096))]
pub struct DmaPage([AtomicU8; 4096]);

impl DmaPage {
    /// A zeroed page.
    pub const fn new() -> DmaPage {
        DmaPage([const { AtomicU8::new(0) }; 4096])
    }

    /// Its physical (bus, without an IOMMU) address.
    pub fn phys(&self) -> u64 {
        crate::arch::kernel_virt_to_phys(self.0.as_ptr() as u64)
    }

    /// Sets every byte to `value`.
    pub fn fill(&self, value: u8) {
        for byte in &self.0 {
            byte.store(value, Ordering::Relaxed);
        }
    }

    /// Reads byte `index` (modulo the page size).
    pub fn read(&self, index: usize) -> u8 {
        self.0[index % 4096].load(Ordering::Relaxed)
    }

    /// A checksum of the whole page (FNV-1a), to detect any changed byte.
    pub fn checksum(&self) -> u64 {
        (0..4096).fold(0xCBF2_9CE4_8422_2325u64, |hash, i| {
            (hash ^ u64::from(self.read(i))).wrapping_mul(0x100_0000_01B3)
        })
    }
}
