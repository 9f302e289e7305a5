//! PCI configuration space through ECAM, and the little enumeration boot needs.

use crate::mem::phys_to_virt;
use core::fmt;

/// A PCI requester: bus, device, function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bdf {
    /// Bus number.
    pub bus: u8,
    /// Device number (0..32).
    pub device: u8,
    /// Function number (0..8).
    pub function: u8,
}

impl Bdf {
    /// The 16-bit requester ID the IOMMU sees (VT-d source ID, SMMU StreamID on virt).
    pub fn requester_id(self) -> u16 {
        (u16::from(self.bus) << 8) | (u16::from(self.device) << 3) | u16::from(self.function)
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Configuration-space register offsets (PCI Local Bus 3.0, 6.1).
pub mod reg {
    /// Vendor ID (low 16 bits) and device ID (high 16 bits).
    pub const ID: u16 = 0x00;
    /// Command register (low 16 bits).
    pub const COMMAND: u16 = 0x04;
    /// Base address register 0.
    pub const BAR0: u16 = 0x10;
}

/// Command register: memory space decoding.
pub const COMMAND_MEMORY: u32 = 1 << 1;
/// Command register: bus mastering (the device may DMA).
pub const COMMAND_BUS_MASTER: u32 = 1 << 2;

/// A PCI segment's ECAM window.
#[derive(Clone, Copy)]
pub struct Ecam {
    base: u64,
}

impl Ecam {
    /// The ECAM window at physical address `base` (bus 0 at offset 0).
    pub fn new(base: u64) -> Ecam {
        Ecam { base }
    }

    fn address(&self, bdf: Bdf, offset: u16) -> *mut u32 {
        let function_offset = (u64::from(bdf.bus) << 20)
            | (u64::from(bdf.device & 31) << 15)
            | (u64::from(bdf.function & 7) << 12);
        phys_to_virt(self.base + function_offset + u64::from(offset & 0xFFC)) as *mut u32
    }

    /// Reads a 32-bit configuration register.
    pub fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
        // SAFETY: the ECAM window is device memory in the direct map; a config
        // read has no side effects on the devices the kernel uses.
        unsafe { self.address(bdf, offset).read_volatile() }
    }

    /// Writes a 32-bit configuration register.
    pub fn write32(&self, bdf: Bdf, offset: u16, value: u32) {
        // SAFETY: the ECAM window is device memory in the direct map; only
        // kernel boot code configures devices here.
        unsafe { self.address(bdf, offset).write_volatile(value) }
    }

    /// Finds the first function on bus 0 with this vendor and device ID.
    pub fn find(&self, vendor: u16, device: u16) -> Option<Bdf> {
        let wanted = (u32::from(device) << 16) | u32::from(vendor);
        (0..32u8)
            .flat_map(|d| {
                (0..8u8).map(move |f| Bdf {
                    bus: 0,
                    device: d,
                    function: f,
                })
            })
            .find(|&bdf| self.read32(bdf, reg::ID) == wanted)
    }
}
