//! Device registers through the direct map: the kernel's one MMIO wrapper
//! outside `arch` (the IOMMU units, PCI ECAM, the test kernels' edu
//! device), and with `arch` and `mem` the only module allowed `unsafe`.
//!
//! # Obligation
//!
//! [`DirectMmio::new`] is given the base of a device's register window
//! that the firmware names (the ACPI DMAR, MCFG or the device tree) or
//! that boot placed (a PCI BAR in a device window, `devmem`). Such a
//! window is never RAM: no Rust value and no kernel object lives there,
//! so the volatile accesses below alias nothing the compiler knows about
//! (the direct map maps it for the kernel's whole life). Callers check
//! that the window lies in the direct map before they make one.

use crate::mem::phys_to_virt;

/// A register window reached through the direct map.
#[derive(Clone, Copy)]
pub struct DirectMmio {
    base: u64,
}

impl DirectMmio {
    /// The register window at physical address `pa` (see the obligation
    /// above).
    pub fn new(pa: u64) -> DirectMmio {
        DirectMmio {
            base: phys_to_virt(pa),
        }
    }

    /// Reads the 32-bit register at `offset` (4-byte aligned, inside the
    /// window).
    #[inline(always)]
    pub fn read32(&self, offset: u64) -> u32 {
        // SAFETY: device memory of the window (the obligation above); the
        // caller's offset stays inside it.
        unsafe { ((self.base + offset) as *const u32).read_volatile() }
    }

    /// Writes the 32-bit register at `offset`.
    #[inline(always)]
    pub fn write32(&self, offset: u64, value: u32) {
        // SAFETY: as in `read32`.
        unsafe { ((self.base + offset) as *mut u32).write_volatile(value) }
    }

    /// Reads the 64-bit register at `offset` (8-byte aligned).
    #[inline(always)]
    pub fn read64(&self, offset: u64) -> u64 {
        // SAFETY: as in `read32`.
        unsafe { ((self.base + offset) as *const u64).read_volatile() }
    }

    /// Writes the 64-bit register at `offset`.
    #[inline(always)]
    pub fn write64(&self, offset: u64, value: u64) {
        // SAFETY: as in `read32`.
        unsafe { ((self.base + offset) as *mut u64).write_volatile(value) }
    }
}

/// The `iommu` crate's view: an IOMMU's register block, writes ordered
/// after the kernel's earlier stores to the tables they publish.
impl iommu::Mmio for DirectMmio {
    fn read32(&self, offset: usize) -> u32 {
        DirectMmio::read32(self, offset as u64)
    }

    fn write32(&self, offset: usize, value: u32) {
        crate::arch::io_write_barrier();
        DirectMmio::write32(self, offset as u64, value)
    }

    fn read64(&self, offset: usize) -> u64 {
        DirectMmio::read64(self, offset as u64)
    }

    fn write64(&self, offset: usize, value: u64) {
        crate::arch::io_write_barrier();
        DirectMmio::write64(self, offset as u64, value)
    }
}
