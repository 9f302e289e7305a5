//! What the `nvme` crate asks of its caller, on Portcullis: the
//! controller's BAR 0 through mapped device Frames ([`Bar`]), DMA pages
//! that the device reaches only through the driver's own stage-1 table
//! ([`StageOneDma`]: each page a Frame mapped in the driver, mapped into
//! the IoSpace at an IPA, and mapped by the driver's stage 1 at an IOVA
//! that is neither), and a busy wait ([`Spin`]).
//!
//! ```text
//!   driver VA (cpu)           IPA (IoSpace, stage 2)     IOVA (stage 1, given to the device)
//!   0x30_0010_0000 + 4K*n ──> 0x5000_0000 + 4K*n  <──── 0x40_0000 + 8K*n (every other page)
//! ```

use core::sync::atomic::{Ordering, fence};

use edu::nested::{Buffer, Nested};
use nvme::{DmaError, DmaPage, Iova};
use rt::mmio::Window;
use rt::space::Objects;
use sys::{Cap, MapRights, PageTable};

/// The first IOVA handed to the device; pages are two apart, so no two
/// are contiguous and a driver that assumed contiguity would fault.
pub const FIRST_IOVA: u64 = 0x40_0000;
const IOVA_STEP: u64 = 0x2000;

/// BAR 0 of the controller: the registers and the doorbells, mapped as
/// device memory.
pub struct Bar(pub Window);

impl nvme::Registers for Bar {
    fn read32(&mut self, offset: usize) -> u32 {
        self.0.read32(offset as u64)
    }

    fn write32(&mut self, offset: usize, value: u32) {
        // Every queue entry written before must be in memory before the
        // doorbell that publishes it.
        fence(Ordering::SeqCst);
        self.0.write32(offset as u64, value)
    }
}

/// DMA pages: Frames of the driver's IoSpace, reached by the device at
/// IOVAs of the driver's own stage-1 table.
pub struct StageOneDma<'a> {
    /// Retypes the Frames.
    pub objects: &'a mut Objects,
    /// The IoSpace and the stage-1 table.
    pub nested: &'a mut Nested,
    /// The driver's VSpace.
    pub own: Cap<PageTable>,
    /// IOVAs handed out so far.
    pub pages: u64,
}

impl nvme::Dma for StageOneDma<'_> {
    type Page = Buffer;

    fn allocate_page(&mut self) -> Result<DmaPage<Buffer>, DmaError> {
        let buffer = self
            .nested
            .buffer(self.objects, self.own, MapRights::READ_WRITE)
            .map_err(|_| DmaError {
                reason: "a Frame mapped into the driver and its IoSpace could not be made",
            })?;
        let iova = FIRST_IOVA + IOVA_STEP * self.pages;
        self.nested
            .map(iova, buffer.ipa, iopt::Rights::READ_WRITE)
            .map_err(|_| DmaError {
                reason: "the stage-1 mapping of a DMA page failed",
            })?;
        self.pages += 1;
        buffer.fill(0);
        Ok(DmaPage {
            cpu: buffer,
            device_address: Iova(iova),
        })
    }

    fn read(&mut self, page: &Buffer, offset: usize, bytes: &mut [u8]) {
        // What the device wrote before the entry that was seen is seen too.
        fence(Ordering::SeqCst);
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = page.read((offset + index) as u64);
        }
    }

    fn write(&mut self, page: &Buffer, offset: usize, bytes: &[u8]) {
        for (index, &byte) in bytes.iter().enumerate() {
            write_byte(page, offset + index, byte);
        }
    }
}

/// Writes byte `offset` of `page` (volatile: the device reads it).
#[allow(unsafe_code)]
fn write_byte(page: &Buffer, offset: usize, value: u8) {
    // SAFETY: `page.cpu` is a 4 KiB Frame `Nested::buffer` mapped
    // read-write for the program's life, where no Rust object lives;
    // `offset` is masked into it.
    unsafe { ((page.cpu + (offset as u64 & 0xfff)) as *mut u8).write_volatile(value) }
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
