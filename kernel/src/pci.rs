//! PCI configuration space through ECAM, and the little enumeration boot needs.

use crate::mmio::DirectMmio;

#[cfg(feature = "self-tests")]
pub use pci_config::Bdf;

/// Configuration-space register offsets (PCI Local Bus 3.0, 6.1).
#[cfg(feature = "self-tests")]
pub mod reg {
    /// Command register (low 16 bits).
    pub const COMMAND: u16 = 0x04;
    /// Base address register 0.
    pub const BAR0: u16 = 0x10;
}

/// Command register: memory space decoding.
#[cfg(feature = "self-tests")]
pub const COMMAND_MEMORY: u32 = 1 << 1;
/// Command register: bus mastering (the device may DMA).
#[cfg(feature = "self-tests")]
pub const COMMAND_BUS_MASTER: u32 = 1 << 2;

/// A PCI segment's ECAM window.
#[derive(Clone, Copy)]
pub struct Ecam {
    window: DirectMmio,
}

impl Ecam {
    /// The ECAM window at physical address `base` (bus 0 at offset 0).
    pub fn new(base: u64) -> Ecam {
        Ecam {
            window: DirectMmio::new(base),
        }
    }

    #[cfg(feature = "self-tests")]
    fn offset(bdf: Bdf, offset: u16) -> u64 {
        bdf.ecam_offset() + u64::from(offset & 0xFFC)
    }

    /// Reads a 32-bit configuration register.
    #[cfg(feature = "self-tests")]
    pub fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
        // A config read has no side effects on the devices the kernel uses.
        self.window.read32(Self::offset(bdf, offset))
    }

    /// Writes a 32-bit configuration register.
    #[cfg(feature = "self-tests")]
    pub fn write32(&self, bdf: Bdf, offset: u16, value: u32) {
        // Only kernel boot code configures devices here.
        self.window.write32(Self::offset(bdf, offset), value)
    }

    /// Finds the first function on bus 0 with this vendor and device ID.
    #[cfg(feature = "self-tests")]
    pub fn find(&self, vendor: u16, device: u16) -> Option<Bdf> {
        pci_config::find(&mut self.clone(), 0, vendor, device)
    }
}

/// The `pci` crate's view: 32-bit accesses at an offset into the window.
impl pci_config::ConfigAccess for Ecam {
    fn read32(&mut self, offset: u64) -> u32 {
        // Every offset of the 256 buses stays inside the window; a config
        // read has no side effects on the devices the kernel uses.
        self.window.read32(offset & 0x0FFF_FFFC)
    }

    fn write32(&mut self, offset: u64, value: u32) {
        // As for `read32`; only kernel boot code configures devices through
        // this (BAR assignment, before any user program runs).
        self.window.write32(offset & 0x0FFF_FFFC, value)
    }
}
