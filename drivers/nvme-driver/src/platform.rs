//! What the `nvme` crate asks of its caller, on Portcullis: the
//! controller's BAR 0 through mapped device Frames ([`Bar`]), DMA pages
//! that the device reaches only through the driver's own stage-1 table
//! ([`StageOneDma`] over [`Frames`]: each page a Frame mapped in the
//! driver, mapped into the IoSpace at an IPA, and mapped by the driver's
//! stage 1 at an IOVA that is neither; or over a [`Region`]: pages of an
//! image's memory region the driver's stage 1 maps), and a busy wait
//! ([`Spin`]).
//!
//! [`Timeline`] timestamps the two ends of each command's wait, so that
//! the instructions the driver itself runs per command can be counted
//! without the time spent waiting for the device.
//!
//! ```text
//!   driver VA (cpu)           IPA (IoSpace, stage 2)     IOVA (stage 1, given to the device)
//!   0x30_0010_0000 + 4K*n ──> 0x5000_0000 + 4K*n  <──── 0x40_0000 + 8K*n (every other page)
//! ```

use core::cell::Cell;
use core::sync::atomic::{Ordering, fence};

use edu::nested::Nested;
use nvme::{DmaError, DmaPage, Iova};
use rt::bench::io_counter as counter;
use rt::mmio::Window;
use rt::space::Objects;
use sys::{Cap, MapRights, PageTable};

/// The first IOVA handed to the device; pages are two apart, so no two
/// are contiguous and a driver that assumed contiguity would fault.
pub const FIRST_IOVA: u64 = 0x40_0000;
const IOVA_STEP: u64 = 0x2000;

/// Counter values at the edges of the last command's wait (`rt::bench`:
/// guest instructions under `-icount shift=0`). The driver rings a
/// submission tail doorbell, polls, then rings the completion head
/// doorbell, always in pairs, so doorbell writes alternate.
#[derive(Default)]
pub struct Timeline {
    doorbells: Cell<u64>,
    /// Ticks spent in doorbell writes so far.
    pub doorbell_ticks: Cell<u64>,
    /// Right after the last submission doorbell write.
    pub submitted: Cell<u64>,
    /// At the start of the latest DMA read (a look at the completion queue).
    read_started: Cell<u64>,
    /// At the start of the look that found the last completion.
    pub completion_seen: Cell<u64>,
    /// An injected `crash-mid-io` (the restart tests): the block whose
    /// read crashes the driver right after its submission doorbell.
    pub crash_after_submission: Cell<Option<u64>>,
}

/// BAR 0 of the controller: the registers and the doorbells, mapped as
/// device memory.
pub struct Bar<'a> {
    /// The mapped registers.
    pub registers: Window,
    /// Where doorbell times go.
    pub timeline: &'a Timeline,
}

impl nvme::Registers for Bar<'_> {
    fn read32(&mut self, offset: usize) -> u32 {
        self.registers.read32(offset as u64)
    }

    fn write32(&mut self, offset: usize, value: u32) {
        // Every queue entry written before must be in memory before the
        // doorbell that publishes it.
        fence(Ordering::SeqCst);
        let start = counter();
        self.registers.write32(offset as u64, value);
        if offset >= nvme::registers::DOORBELLS {
            let timeline = self.timeline;
            timeline
                .doorbell_ticks
                .set(timeline.doorbell_ticks.get() + (counter() - start));
            let count = timeline.doorbells.get();
            timeline.doorbells.set(count + 1);
            if count.is_multiple_of(2) {
                timeline.submitted.set(counter());
                if let Some(block) = timeline.crash_after_submission.take() {
                    driverkit::crash("nvme", format_args!("block {block}'s read in flight"));
                }
            } else {
                timeline.completion_seen.set(timeline.read_started.get());
            }
        }
    }
}

/// A DMA page as the CPU reaches it: its address in this program. Only
/// the page sources here make one, for a page mapped read-write for the
/// program's life where no Rust object lives.
#[derive(Clone, Copy, Debug)]
pub struct Mapped(u64);

impl Mapped {
    /// The page's address in this program.
    pub fn address(self) -> u64 {
        self.0
    }
}

/// Where DMA pages come from: each with its CPU address and the IOVA the
/// driver's stage 1 gives it.
pub trait PageSource {
    /// The next page, not yet zeroed.
    fn next_page(&mut self) -> Result<(Mapped, Iova), DmaError>;
}

/// Frames made one by one: each mapped in the driver and into the
/// IoSpace at an IPA (`edu::nested`), and mapped by the driver's stage 1
/// at an IOVA that is neither.
pub struct Frames<'a> {
    /// Retypes the Frames.
    pub objects: &'a mut Objects,
    /// The IoSpace and the stage-1 table.
    pub nested: &'a mut Nested,
    /// The driver's VSpace.
    pub own: Cap<PageTable>,
    /// IOVAs handed out so far.
    pub pages: u64,
}

impl PageSource for Frames<'_> {
    fn next_page(&mut self) -> Result<(Mapped, Iova), DmaError> {
        let buffer = self
            .nested
            .buffer(self.objects, self.own, MapRights::READ_WRITE)
            .map_err(|_| DmaError {
                reason: "a Frame mapped into the driver and its IoSpace could not be made",
            })?;
        let iova = pool_iova(FIRST_IOVA, self.pages);
        self.nested
            .map(iova, buffer.ipa, iopt::Rights::READ_WRITE)
            .map_err(|_| DmaError {
                reason: "the stage-1 mapping of a DMA page failed",
            })?;
        self.pages += 1;
        Ok((Mapped(buffer.cpu), Iova(iova)))
    }
}

/// An image's DMA region (`images/nvme.toml`), already mapped by the
/// driver's stage 1 at [`pool_iova`]: its pages in order.
pub struct Region {
    va: u64,
    iova: u64,
    pages: u64,
    used: u64,
}

impl Region {
    /// The `pages` pages from `va`, the first at IOVA `iova`.
    ///
    /// # Safety
    ///
    /// The `pages` pages from `va` are mapped read-write for the program's
    /// life, no Rust object lives there, and nothing else in the program
    /// touches them (the region hands each out once).
    #[allow(unsafe_code)]
    pub unsafe fn new(va: u64, iova: u64, pages: u64) -> Region {
        Region {
            va,
            iova,
            pages,
            used: 0,
        }
    }
}

impl PageSource for Region {
    fn next_page(&mut self) -> Result<(Mapped, Iova), DmaError> {
        if self.used == self.pages {
            return Err(DmaError {
                reason: "every page of the image's DMA region is in use",
            });
        }
        let page = Mapped(self.va + 4096 * self.used);
        let iova = Iova(pool_iova(self.iova, self.used));
        self.used += 1;
        Ok((page, iova))
    }
}

/// The driver's DMA memory: pages from `source`, zeroed, read and written
/// volatile; reads timestamped on the [`Timeline`].
pub struct StageOneDma<'a, S> {
    /// Where the pages come from.
    pub source: S,
    /// Where DMA read times go.
    pub timeline: &'a Timeline,
}

impl<S: PageSource> nvme::Dma for StageOneDma<'_, S> {
    type Page = Mapped;

    fn allocate_page(&mut self) -> Result<DmaPage<Mapped>, DmaError> {
        let (page, iova) = self.source.next_page()?;
        copy_to(page, 0, &[0; 4096]);
        Ok(DmaPage {
            cpu: page,
            device_address: iova,
        })
    }

    fn read(&mut self, page: &Mapped, offset: usize, bytes: &mut [u8]) {
        self.timeline.read_started.set(counter());
        copy_from(*page, offset, bytes);
    }

    fn write(&mut self, page: &Mapped, offset: usize, bytes: &[u8]) {
        copy_to(*page, offset, bytes);
    }
}

/// The IOVA of page `page` of a pool whose first page is at `first`:
/// pages two apart, so none is contiguous with the next.
pub const fn pool_iova(first: u64, page: u64) -> u64 {
    first + IOVA_STEP * page
}

/// Copies `bytes.len()` bytes at `offset` of `page` out (volatile: the
/// device writes the page), whole words from an aligned offset.
fn copy_from(page: Mapped, offset: usize, bytes: &mut [u8]) {
    // What the device wrote before the entry that was seen is seen too.
    fence(Ordering::SeqCst);
    let whole = if offset.is_multiple_of(8) {
        bytes.len() / 8 * 8
    } else {
        0
    };
    let (head, tail) = bytes.split_at_mut(whole);
    let mut at = offset;
    for word in head.chunks_exact_mut(8) {
        word.copy_from_slice(&read_word(page, at).to_le_bytes());
        at += 8;
    }
    for byte in tail {
        *byte = read_byte(page, at);
        at += 1;
    }
}

/// Copies `bytes` to `offset` of `page` (volatile: the device reads it).
fn copy_to(page: Mapped, offset: usize, bytes: &[u8]) {
    let whole = if offset.is_multiple_of(8) {
        bytes.len() / 8 * 8
    } else {
        0
    };
    let (head, tail) = bytes.split_at(whole);
    let mut at = offset;
    for word in head.chunks_exact(8) {
        let mut value = [0u8; 8];
        value.copy_from_slice(word);
        write_word(page, at, u64::from_le_bytes(value));
        at += 8;
    }
    for &byte in tail {
        write_byte(page, at, byte);
        at += 1;
    }
}

/// The address of byte `offset` of `page` for an access of `size` bytes:
/// inside the page, aligned down to `size`.
fn address(page: Mapped, offset: usize, size: usize) -> u64 {
    page.0 + (offset as u64 & 0xfff & !(size as u64 - 1))
}

/// Reads 8 bytes at `offset` (8-byte aligned) of `page`.
#[allow(unsafe_code)]
fn read_word(page: Mapped, offset: usize) -> u64 {
    // SAFETY: a `Mapped` page is mapped read-write for the program's life,
    // where no Rust object lives (its type's invariant); `address` keeps
    // the access inside it and aligned.
    unsafe { (address(page, offset, 8) as *const u64).read_volatile() }
}

/// Writes 8 bytes at `offset` (8-byte aligned) of `page`.
#[allow(unsafe_code)]
fn write_word(page: Mapped, offset: usize, value: u64) {
    // SAFETY: as in `read_word`.
    unsafe { (address(page, offset, 8) as *mut u64).write_volatile(value) }
}

/// Reads byte `offset` of `page`.
#[allow(unsafe_code)]
fn read_byte(page: Mapped, offset: usize) -> u8 {
    // SAFETY: as in `read_word`, one byte.
    unsafe { (address(page, offset, 1) as *const u8).read_volatile() }
}

/// Writes byte `offset` of `page`.
#[allow(unsafe_code)]
fn write_byte(page: Mapped, offset: usize, value: u8) {
    // SAFETY: as in `read_word`, one byte.
    unsafe { (address(page, offset, 1) as *mut u8).write_volatile(value) }
}

/// A busy wait: about `SPINS_PER_MICROSECOND` spin-loop hints per
/// microsecond. Under QEMU (TCG) the emulated controller runs on another
/// host thread, so spinning does not hold it up; the count only bounds
/// the polls.
pub struct Spin;

/// Spin-loop iterations taken for one microsecond.
const SPINS_PER_MICROSECOND: u32 = 100;

impl nvme::Delay for Spin {
    fn delay_microseconds(&mut self, microseconds: u32) {
        for _ in 0..microseconds.saturating_mul(SPINS_PER_MICROSECOND) {
            core::hint::spin_loop();
        }
    }
}
