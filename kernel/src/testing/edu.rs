//! A kernel-mode driver for QEMU's `edu` PCI device, used by the boot self-tests.
//!
//! The device has a 4 KiB buffer at device address 0x40000 and a DMA engine
//! (source 0x80, destination 0x88, count 0x90, command 0x98). A transfer
//! completes after 100 ms of virtual time; errors are never reported to the
//! driver: the IOMMU records them.

use crate::pci::{self, Bdf, Ecam};

/// PCI vendor ID of QEMU's test devices.
pub const VENDOR: u16 = 0x1234;
/// PCI device ID of `edu`.
pub const DEVICE: u16 = 0x11E8;
/// Device address of the DMA buffer.
pub const BUFFER: u64 = 0x4_0000;

const IDENTIFICATION: usize = 0x00;
const DMA_SOURCE: usize = 0x80;
const DMA_DESTINATION: usize = 0x88;
const DMA_COUNT: usize = 0x90;
const DMA_COMMAND: usize = 0x98;
const COMMAND_START: u64 = 1 << 0;
const COMMAND_TO_RAM: u64 = 1 << 1;

/// How many status reads to wait for a DMA (100 ms of virtual time each).
const DMA_POLL_LIMIT: u64 = 200_000_000;

/// Why the edu device could not be used.
#[derive(Debug)]
pub enum EduError {
    /// No `-device edu` on bus 0.
    NotFound,
    /// BAR 0 is unassigned: boot found no room for it (`devmem`).
    BarUnassigned,
    /// The identification register is not 0x010000ed.
    BadIdentification(u32),
    /// A transfer did not finish within the poll bound.
    DmaTimeout,
}

impl core::fmt::Display for EduError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EduError::NotFound => {
                write!(f, "no edu device (1234:11e8) on PCI bus 0; add -device edu")
            }
            EduError::BarUnassigned => write!(
                f,
                "edu BAR 0 is unassigned: boot placed no address there (see the [pci] lines)"
            ),
            EduError::BadIdentification(id) => write!(
                f,
                "edu identification register reads {id:#x}, expected 0x010000ed"
            ),
            EduError::DmaTimeout => {
                write!(f, "edu DMA still busy after {DMA_POLL_LIMIT} status reads")
            }
        }
    }
}

/// One edu device.
pub struct Edu {
    /// Where it sits on the bus.
    pub bdf: Bdf,
    registers: crate::mmio::DirectMmio,
}

impl Edu {
    /// Finds the device at the BAR 0 boot placed (`devmem`: firmware's on
    /// x86_64, the kernel's on aarch64; PCI and CPU addresses agree on both
    /// machines), and enables memory decoding and bus mastering.
    pub fn probe(ecam: &Ecam) -> Result<Edu, EduError> {
        let bdf = ecam.find(VENDOR, DEVICE).ok_or(EduError::NotFound)?;
        let bar = u64::from(ecam.read32(bdf, pci::reg::BAR0) & !0xF);
        if bar == 0 {
            return Err(EduError::BarUnassigned);
        }
        let command = ecam.read32(bdf, pci::reg::COMMAND);
        ecam.write32(
            bdf,
            pci::reg::COMMAND,
            command | pci::COMMAND_MEMORY | pci::COMMAND_BUS_MASTER,
        );
        let edu = Edu {
            bdf,
            registers: crate::mmio::DirectMmio::new(bar),
        };
        let id = edu.read32(IDENTIFICATION);
        if id != 0x0100_00ED {
            return Err(EduError::BadIdentification(id));
        }
        Ok(edu)
    }

    fn read32(&self, offset: usize) -> u32 {
        // BAR 0 of the edu device, owned by the kernel's self-tests.
        self.registers.read32(offset as u64)
    }

    fn read64(&self, offset: usize) -> u64 {
        self.registers.read64(offset as u64)
    }

    fn write64(&self, offset: usize, value: u64) {
        // The writes program the DMA engine.
        self.registers.write64(offset as u64, value)
    }

    /// Copies `len` bytes from the device buffer to bus address `to` and waits.
    pub fn dma_to_memory(&self, to: u64, len: u64) -> Result<(), EduError> {
        self.transfer(BUFFER, to, len, COMMAND_TO_RAM)
    }

    /// Copies `len` bytes from bus address `from` into the device buffer and waits.
    pub fn dma_from_memory(&self, from: u64, len: u64) -> Result<(), EduError> {
        self.transfer(from, BUFFER, len, 0)
    }

    fn transfer(
        &self,
        source: u64,
        destination: u64,
        len: u64,
        direction: u64,
    ) -> Result<(), EduError> {
        self.write64(DMA_SOURCE, source);
        self.write64(DMA_DESTINATION, destination);
        self.write64(DMA_COUNT, len);
        self.write64(DMA_COMMAND, COMMAND_START | direction);
        for _ in 0..DMA_POLL_LIMIT {
            if self.read64(DMA_COMMAND) & COMMAND_START == 0 {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(EduError::DmaTimeout)
    }
}
