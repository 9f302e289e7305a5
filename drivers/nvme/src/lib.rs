//! `nvme`: a small polling NVMe driver (NVM Express Base Specification
//! 2.0, NVM Command Set 1.0) for user-level drivers, generic over how its
//! registers and its DMA memory are reached, so that every address it
//! hands the device is one the caller gave it: an IOVA of the driver's own
//! stage-1 table, never a physical address the driver guessed.
//!
//! The crate never touches hardware itself. The caller implements:
//!
//! - [`Registers`]: 32-bit (and 64-bit) reads and writes at offsets into
//!   BAR 0, the controller's register block and its doorbells;
//! - [`Dma`]: pages of device-visible memory, each with the CPU's handle
//!   to it and the device address ([`Iova`]) the device must use;
//! - [`Delay`]: a wait of some microseconds, which bounds every poll.
//!
//! What it does, with [`Controller::bring_up`] (base spec 3.5.1,
//! "Memory-based Controller Initialization"): read CAP and VS, disable the
//! controller if it was enabled and wait for CSTS.RDY = 0, program AQA,
//! ASQ and ACQ with an admin queue pair, enable with CC (4 KiB pages, the
//! NVM command set, 64-byte submission and 16-byte completion entries),
//! wait for CSTS.RDY = 1 (both waits bounded by CAP.TO), Identify the
//! controller and namespace 1, and create one I/O completion queue and one
//! I/O submission queue. Then [`Controller::read`] and
//! [`Controller::write`] move blocks between namespace 1 and pages the
//! caller names by IOVA, with PRP1, PRP2 and a PRP list for transfers of
//! more than two pages. Every command is polled to completion, or, with
//! [`Config::interrupts`], waited for by interrupt: the I/O completion
//! queue is created with interrupts on (MSI-X vector 0, which the admin
//! completion queue uses too) and a look that finds nothing waits with
//! [`Delay::wait_for_interrupt`]; a completion's status is decoded into [`Status`] and a
//! failure comes back as an [`Error`] that names the command and what was
//! wrong.
//!
//! ```text
//!   driver (CPU view through Dma)             controller (device view: IOVAs)
//!
//!   admin SQ page  [cmd][cmd][   ][   ]  <── ASQ    fetches from the SQ head
//!                            ^ tail ──── SQ0 tail doorbell (BAR0 0x1000)
//!   admin CQ page  [cpl][cpl][   ][   ]  <── ACQ    posts with phase bit P
//!                            ^ head ──── CQ0 head doorbell (0x1000 + stride)
//!
//!   I/O SQ 1 page  [rd ][wr ][   ][   ]  <── Create I/O SQ (PRP1 = its IOVA)
//!                                        ──── SQ1 tail doorbell (0x1000 + 2 * stride)
//!   I/O CQ 1 page  [cpl][cpl][   ][   ]  <── Create I/O CQ
//!                                        ──── CQ1 head doorbell (0x1000 + 3 * stride)
//!
//!   read/write:    PRP1 ──> data page 0
//!                  PRP2 ──> data page 1                    (exactly two pages)
//!                  PRP2 ──> PRP list page [page 1][page 2]...[page n-1]
//!                                                          (more than two)
//!   stride = 4 << CAP.DSTRD bytes. A completion is new when its phase bit
//!   equals the phase the driver expects; the expected phase flips each
//!   time the CQ head wraps to slot 0.
//! ```
//!
//! With the `model` feature, [`model`] is an executable model of an NVMe
//! controller (registers, doorbells, admin and one I/O queue pair,
//! Identify, Read/Write through PRPs, a RAM-backed namespace) whose DMA
//! goes through an IOVA translation that records every address the driver
//! did not hand out: the host tests run the driver against it.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "model")]
extern crate alloc;

mod command;
mod controller;
mod error;
mod identify;
mod queue;
pub mod registers;
mod status;

#[cfg(feature = "model")]
pub mod model;

pub use controller::{Config, Controller};
pub use error::{Error, QueueKind, WaitingFor};
pub use identify::{ControllerIdentity, NamespaceIdentity};
pub use queue::{COMPLETION_POLL_MICROSECONDS, MAX_WAKES};
pub use registers::{Capabilities, Version};
pub use status::{CommandSpecificStatus, GenericStatus, MediaStatus, Status, StatusCodeType};

/// The memory page size the driver programs (CC.MPS = 0: 4 KiB); every
/// [`Dma`] page is this size and every PRP entry points at one.
pub const PAGE_SIZE: usize = 4096;

/// An address as the device sees it: where a page of [`Dma`] memory lies
/// in the device's IO address space (with an IOMMU, an IOVA of the
/// driver's stage 1; without one, whatever the bus uses). The driver only
/// copies these into commands; it never derives one from another
/// address except by adding an offset inside a page it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Iova(pub u64);

impl Iova {
    /// The address `bytes` further on (inside the same page, for every use
    /// the driver makes of it).
    pub fn offset(self, bytes: usize) -> Iova {
        Iova(self.0 + bytes as u64)
    }

    /// Whether the address starts a [`PAGE_SIZE`] page.
    pub fn is_page_aligned(self) -> bool {
        self.0.is_multiple_of(PAGE_SIZE as u64)
    }
}

/// The controller's registers: reads and writes at a byte offset into BAR
/// 0 (base spec 3.1.3). Offsets are 4-byte aligned for the 32-bit
/// accessors and 8-byte aligned for the 64-bit ones.
///
/// An implementation over real memory-mapped registers must use volatile
/// accesses and make every [`Dma`] write the driver made before a register
/// write visible to the device before that register write lands (a
/// doorbell write publishes the queue entries written before it): a write
/// barrier before each register write, or device memory ordered that way.
pub trait Registers {
    /// Reads the 32-bit register at `offset`.
    fn read32(&mut self, offset: usize) -> u32;
    /// Writes the 32-bit register at `offset`.
    fn write32(&mut self, offset: usize, value: u32);
    /// Reads the 64-bit register at `offset` (CAP, ASQ, ACQ). By default
    /// two 32-bit reads, low half first, for buses without 64-bit access.
    fn read64(&mut self, offset: usize) -> u64 {
        let low = self.read32(offset) as u64;
        let high = self.read32(offset + 4) as u64;
        low | high << 32
    }
    /// Writes the 64-bit register at `offset`. By default two 32-bit
    /// writes, low half first (the driver only writes 64-bit registers
    /// while the controller is disabled, so the halves cannot be seen
    /// apart).
    fn write64(&mut self, offset: usize, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}

/// One page of device-visible memory: the CPU's handle to it and the
/// address the device uses for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaPage<P> {
    /// What the [`Dma`] implementation needs to reach the page from the
    /// CPU (a virtual address, an index...); opaque to the driver.
    pub cpu: P,
    /// Where the device sees the page: [`PAGE_SIZE`]-aligned.
    pub device_address: Iova,
}

/// Why a [`Dma`] allocation failed, in the allocator's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaError {
    /// What went wrong, e.g. "no free page in the DMA pool".
    pub reason: &'static str,
}

/// Device-visible memory: the driver allocates the pages of its queues,
/// its Identify buffer and its PRP list here at bring-up, and reads and
/// writes them only through this trait.
///
/// An implementation over real memory must use volatile accesses (the
/// device writes completion entries behind the CPU's back) and order them:
/// a [`Dma::read`] that follows a read which saw a new completion must see
/// everything the device wrote before it (a read barrier), and writes must
/// reach memory before the next [`Registers`] write (see there).
pub trait Dma {
    /// The CPU's handle to one page.
    type Page;
    /// Allocates one [`PAGE_SIZE`] page, mapped for the device at a
    /// page-aligned device address.
    fn allocate_page(&mut self) -> Result<DmaPage<Self::Page>, DmaError>;
    /// Copies `bytes.len()` bytes at `offset` in `page` into `bytes`
    /// (`offset + bytes.len() <= PAGE_SIZE`).
    fn read(&mut self, page: &Self::Page, offset: usize, bytes: &mut [u8]);
    /// Copies `bytes` to `offset` in `page` (`offset + bytes.len() <=
    /// PAGE_SIZE`).
    fn write(&mut self, page: &Self::Page, offset: usize, bytes: &[u8]);
}

/// A way to wait: every poll of the controller waits this way between
/// looks and gives up after a bounded total.
pub trait Delay {
    /// Returns after at least `microseconds` (or as close as the platform
    /// can tell).
    fn delay_microseconds(&mut self, microseconds: u32);
    /// In interrupt mode ([`Config::interrupts`]), between two looks at a
    /// completion queue: blocks until the controller's interrupt (MSI-X
    /// vector 0), or anything else that wakes the caller, and acknowledges
    /// it. The driver looks again after each return, at most
    /// [`MAX_WAKES`] times for one command. By default a delay of
    /// [`COMPLETION_POLL_MICROSECONDS`] (a platform without interrupts).
    fn wait_for_interrupt(&mut self) {
        self.delay_microseconds(COMPLETION_POLL_MICROSECONDS);
    }
}
