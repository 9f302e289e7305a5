//! Host-only executable hardware models: simulated physical memory, a frame
//! allocator over it, simulated VT-d and SMMUv3 register blocks that react
//! to the driver's writes, and translation models of both IOMMUs written
//! from the architecture specifications.
//!
//! The translation models read exactly the structures the drivers write
//! into [`SimMemory`] and answer "device, PASID/SSID, address, access ->
//! physical address or the fault the hardware reports".
//!
//! A device that can wait (PCIe ATS + PRI, or an SMMU stall) goes through
//! `device_dma` instead: a recoverable miss raises a page request or a
//! stall and the transaction waits ([`DeviceOutcome::Waiting`]) until the
//! driver's response retries it or fails it. Walks also perform the
//! hardware's A/D (VT-d) and HTTU (SMMUv3) updates; `probe` asks without them.

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

/// Names one device transaction that is waiting for a page request or a
/// stall to be answered.
pub type TransactionId = u32;

/// Why a device transaction failed, as the device sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// An unrecoverable translation fault: the VT-d fault reason or the
    /// SMMU event type (recorded in FRCD / the event queue).
    Fault(u32),
    /// Terminated without a record (SMMU abort STE, or a fault whose record is off).
    Aborted,
    /// The page request was answered with this response code (VT-d 0x1
    /// Invalid / 0xF Failure; SMMU PRI 0 Deny / 1 Fail).
    Response(u8),
    /// A stalled transaction ended by CMD_RESUME with Abort or Terminate.
    Terminated,
    /// The page request queue was full: the request was dropped (PRS.PRO /
    /// PRIQ_PROD.OVFLG) and the model ends the transaction with an error
    /// (the hardware would let the device retry later).
    Overflow,
}

/// What a device sees of one transaction that may raise a page request
/// (PCIe PRI after an ATS miss) or stall (SMMUv3 stall model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceOutcome {
    /// Translated; the access reached this physical address.
    Completed(u64),
    /// Waiting for software's response to a page request or stall.
    Waiting(TransactionId),
    /// The device sees an error.
    Failed(DeviceError),
}

/// One transaction: its request, the tag (group index or stall tag) of
/// its outstanding request, and its outcome once finished.
type TransactionEntry<R> = (R, u16, Option<DeviceOutcome>);

/// Transactions waiting for a response, and finished ones, by id.
#[derive(Debug)]
pub(crate) struct Transactions<R: Copy> {
    next: Cell<TransactionId>,
    next_tag: Cell<u16>,
    /// id -> (request, tag of the outstanding request/stall, state).
    entries: RefCell<BTreeMap<TransactionId, TransactionEntry<R>>>,
}

impl<R: Copy> Default for Transactions<R> {
    fn default() -> Self {
        Self {
            next: Cell::new(0),
            next_tag: Cell::new(0),
            entries: RefCell::new(BTreeMap::new()),
        }
    }
}

impl<R: Copy> Transactions<R> {
    /// Starts waiting for `request`; returns its id and the tag (page
    /// request group index modulo `tag_modulus`, or stall tag) it waits under.
    pub(crate) fn start(&self, request: R, tag_modulus: u32) -> (TransactionId, u16) {
        let id = self.next.get();
        self.next.set(id.wrapping_add(1));
        let tag = self.new_tag(tag_modulus);
        self.entries.borrow_mut().insert(id, (request, tag, None));
        (id, tag)
    }
    pub(crate) fn new_tag(&self, tag_modulus: u32) -> u16 {
        let tag = self.next_tag.get();
        self.next_tag
            .set(((u32::from(tag) + 1) % tag_modulus) as u16);
        tag
    }
    /// The waiting transactions whose request and tag match.
    pub(crate) fn waiting(
        &self,
        matches: impl Fn(&R, u16) -> bool,
    ) -> std::vec::Vec<(TransactionId, R)> {
        self.entries
            .borrow()
            .iter()
            .filter(|(_, (request, tag, state))| state.is_none() && matches(request, *tag))
            .map(|(id, (request, _, _))| (*id, *request))
            .collect()
    }
    /// Records the outcome of `id`: still waiting under a new tag, or finished.
    pub(crate) fn settle(&self, id: TransactionId, outcome: DeviceOutcome, tag: u16) {
        if let Some(entry) = self.entries.borrow_mut().get_mut(&id) {
            match outcome {
                DeviceOutcome::Waiting(_) => entry.1 = tag,
                done => entry.2 = Some(done),
            }
        }
    }
    /// Where `id` stands (`Failed(Aborted)` for an unknown id).
    pub(crate) fn outcome(&self, id: TransactionId) -> DeviceOutcome {
        match self.entries.borrow().get(&id) {
            Some((_, _, Some(done))) => *done,
            Some((_, _, None)) => DeviceOutcome::Waiting(id),
            None => DeviceOutcome::Failed(DeviceError::Aborted),
        }
    }
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
