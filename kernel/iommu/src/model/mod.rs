//! Host-only executable hardware models: simulated physical memory, a frame
//! allocator over it, simulated VT-d and SMMUv3 register blocks that react
//! to the driver's writes, and translation models of both IOMMUs written
//! from the architecture specifications.
//!
//! The translation models read exactly the structures the drivers write
//! into [`SimMemory`] and answer "device, PASID/SSID, address, access ->
//! physical address or the fault the hardware reports".

pub mod smmu;
pub mod smmu_device;
pub mod vtd;
pub mod vtd_device;

use crate::{FrameAllocator, PAGE_SIZE, PhysAddr, PhysMem};
use std::boxed::Box;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

/// Read or write, as seen by the IOMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A DMA read.
    Read,
    /// A DMA write.
    Write,
}

/// Sparse simulated physical memory of `size` bytes; unwritten memory reads as zero.
#[derive(Debug)]
pub struct SimMemory {
    pages: RefCell<BTreeMap<u64, Box<[u64; 512]>>>,
    size: u64,
    reads: Cell<u64>,
}

impl SimMemory {
    /// Memory covering physical addresses `0..size`.
    pub fn new(size: u64) -> Self {
        Self {
            pages: RefCell::new(BTreeMap::new()),
            size,
            reads: Cell::new(0),
        }
    }
    /// Whether `addr` is backed (an IOMMU fetch elsewhere is an access error).
    pub fn contains(&self, addr: PhysAddr) -> bool {
        addr < self.size
    }
    /// How many u64 reads were made (to see that walks happened).
    pub fn reads(&self) -> u64 {
        self.reads.get()
    }
}

impl PhysMem for SimMemory {
    fn read_u64(&self, addr: PhysAddr) -> u64 {
        assert_eq!(addr & 7, 0, "unaligned read at {addr:#x}");
        self.reads.set(self.reads.get() + 1);
        self.pages
            .borrow()
            .get(&(addr / PAGE_SIZE))
            .map_or(0, |page| page[((addr % PAGE_SIZE) / 8) as usize])
    }
    fn write_u64(&self, addr: PhysAddr, value: u64) {
        assert_eq!(addr & 7, 0, "unaligned write at {addr:#x}");
        assert!(
            self.contains(addr),
            "write outside simulated memory at {addr:#x}"
        );
        let mut pages = self.pages.borrow_mut();
        let page = pages
            .entry(addr / PAGE_SIZE)
            .or_insert_with(|| Box::new([0; 512]));
        page[((addr % PAGE_SIZE) / 8) as usize] = value;
    }
}

/// A bump allocator of zeroed frames in `[next, end)`.
#[derive(Debug)]
pub struct SimFrames<'a> {
    memory: &'a SimMemory,
    next: PhysAddr,
    end: PhysAddr,
    /// Frames handed out.
    pub allocated: u64,
}

impl<'a> SimFrames<'a> {
    /// Allocates from `start..end` of `memory`.
    pub fn new(memory: &'a SimMemory, start: PhysAddr, end: PhysAddr) -> Self {
        Self {
            memory,
            next: start,
            end,
            allocated: 0,
        }
    }
}

impl FrameAllocator for SimFrames<'_> {
    fn alloc_zeroed_frame(&mut self) -> Option<PhysAddr> {
        if self.next + PAGE_SIZE > self.end {
            return None;
        }
        let frame = self.next;
        self.next += PAGE_SIZE;
        self.allocated += 1;
        self.memory.zero(frame, PAGE_SIZE);
        Some(frame)
    }
}

/// Simple little register file used by the simulated devices.
#[derive(Debug, Default)]
pub(crate) struct RegisterFile {
    words: RefCell<BTreeMap<usize, u32>>,
}

impl RegisterFile {
    pub(crate) fn get(&self, offset: usize) -> u32 {
        self.words.borrow().get(&offset).copied().unwrap_or(0)
    }
    pub(crate) fn set(&self, offset: usize, value: u32) {
        self.words.borrow_mut().insert(offset, value);
    }
    pub(crate) fn get64(&self, offset: usize) -> u64 {
        u64::from(self.get(offset)) | u64::from(self.get(offset + 4)) << 32
    }
    pub(crate) fn set64(&self, offset: usize, value: u64) {
        self.set(offset, value as u32);
        self.set(offset + 4, (value >> 32) as u32);
    }
}
