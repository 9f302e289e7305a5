//! The three access traits the drivers are generic over: MMIO registers,
//! physical memory the IOMMU reads, and a frame allocator.
//!
//! Ordering contract for implementers: a [`PhysMem`] write must be visible to
//! the IOMMU before any later [`Mmio`] write (the kernel's `Mmio::write*`
//! issues a write barrier before the store; on non-coherent walkers
//! `PhysMem::write_u64` also cleans the cache line). Register accesses are
//! little-endian and naturally aligned.

/// A physical (bus) address as the IOMMU sees it.
pub type PhysAddr = u64;

/// The size of the frames [`FrameAllocator`] hands out and of every table page.
pub const PAGE_SIZE: u64 = 4096;

/// One IOMMU register block; offsets are bytes from the block's base.
///
/// Methods take `&self`: a register write is an effect on the device, not on
/// the Rust value, and both the driver and (on the host) the simulated device
/// hold the block.
pub trait Mmio {
    /// Reads the 32-bit register at `offset`.
    fn read32(&self, offset: usize) -> u32;
    /// Writes the 32-bit register at `offset`.
    fn write32(&self, offset: usize, value: u32);
    /// Reads the 64-bit register at `offset`. The default reads the low half
    /// first, then the high half (allowed for every register this crate reads
    /// as 64 bits).
    fn read64(&self, offset: usize) -> u64 {
        u64::from(self.read32(offset)) | (u64::from(self.read32(offset + 4)) << 32)
    }
    /// Writes the 64-bit register at `offset`. The default writes the low
    /// half first, then the high half; implementations that can do a single
    /// 64-bit store should, since the VT-d command registers (CCMD, IOTLB) act
    /// on the write of their upper half.
    fn write64(&self, offset: usize, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}

impl<T: Mmio + ?Sized> Mmio for &T {
    fn read32(&self, offset: usize) -> u32 {
        (**self).read32(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        (**self).write32(offset, value)
    }
    fn read64(&self, offset: usize) -> u64 {
        (**self).read64(offset)
    }
    fn write64(&self, offset: usize, value: u64) {
        (**self).write64(offset, value)
    }
}

/// Physical memory holding the structures the IOMMU walks (tables, queues).
///
/// Addresses are 8-byte aligned for the 64-bit accessors. The kernel
/// implements this over its direct map; the host over `model::SimMemory`.
pub trait PhysMem {
    /// Reads the little-endian u64 at `addr`.
    fn read_u64(&self, addr: PhysAddr) -> u64;
    /// Writes the little-endian u64 at `addr`.
    fn write_u64(&self, addr: PhysAddr, value: u64);
    /// Zeroes `len` bytes (a multiple of 8) from `addr`.
    fn zero(&self, addr: PhysAddr, len: u64) {
        let mut offset = 0;
        while offset < len {
            self.write_u64(addr + offset, 0);
            offset += 8;
        }
    }
    /// Reads the little-endian u32 at 4-byte aligned `addr`.
    fn read_u32(&self, addr: PhysAddr) -> u32 {
        let word = self.read_u64(addr & !7);
        (word >> ((addr & 4) * 8)) as u32
    }
    /// Writes the little-endian u32 at 4-byte aligned `addr`.
    fn write_u32(&self, addr: PhysAddr, value: u32) {
        let aligned = addr & !7;
        let shift = (addr & 4) * 8;
        let word = self.read_u64(aligned);
        let word = (word & !(0xffff_ffff << shift)) | (u64::from(value) << shift);
        self.write_u64(aligned, word);
    }
}

impl<T: PhysMem + ?Sized> PhysMem for &T {
    fn read_u64(&self, addr: PhysAddr) -> u64 {
        (**self).read_u64(addr)
    }
    fn write_u64(&self, addr: PhysAddr, value: u64) {
        (**self).write_u64(addr, value)
    }
    fn zero(&self, addr: PhysAddr, len: u64) {
        (**self).zero(addr, len)
    }
}

/// Source of 4 KiB frames for IOMMU tables and queues.
pub trait FrameAllocator {
    /// Returns the physical address of a fresh, zeroed, 4 KiB-aligned frame,
    /// or `None` when memory is exhausted.
    fn alloc_zeroed_frame(&mut self) -> Option<PhysAddr>;
}
