//! `pci`: the configuration space of PCI functions reached through an ECAM
//! window (PCI Express Base 4.0, 7.2.2: bus << 20 | device << 15 |
//! function << 12 | register), for user-level drivers and for the kernel's
//! boot-time BAR assignment.
//!
//! The crate never touches hardware itself: whoever holds the window (a
//! driver with the ECAM page mapped as device memory, the kernel through
//! its direct map, a host test with an array) implements [`ConfigAccess`],
//! 32-bit reads and writes at an offset into the window. What it offers:
//!
//! - [`Function`]: one function's vendor/device IDs, command register,
//!   header type, and its base address registers decoded ([`Bar`]: memory
//!   32/64-bit, prefetchable, or I/O) and sized.
//! - [`BusScan`] and [`find`]: the functions present on a bus (function 0
//!   of each device, the others only where function 0 says it is
//!   multi-function), and the first with a vendor/device ID.
//! - [`msi`]: where a device writes the message the kernel gave, and the
//!   MSI-X table entry and enable bits (every driver's interrupt setup).
//! - [`assign`]: placing the memory BARs nobody assigned in the host
//!   bridge's windows (what the kernel does at boot on a machine without
//!   firmware).
//!
//! Register layout: PCI Local Bus 3.0, 6.1 (type 0 header) and 6.2.5 (base
//! address registers).
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod assign;
pub mod msi;

use core::fmt;

/// 32-bit configuration accesses at a byte offset into an ECAM window
/// (4-byte aligned; the crate never asks for another alignment).
pub trait ConfigAccess {
    /// Reads the register at `offset`. An absent function reads all ones.
    fn read32(&mut self, offset: u64) -> u32;
    /// Writes the register at `offset`.
    fn write32(&mut self, offset: u64, value: u32);
}

/// A [`ConfigAccess`] made of two closures: `read(offset)` and
/// `write(offset, value)`.
pub struct Closures<R, W> {
    /// Reads a register.
    pub read: R,
    /// Writes a register.
    pub write: W,
}

impl<R: FnMut(u64) -> u32, W: FnMut(u64, u32)> ConfigAccess for Closures<R, W> {
    fn read32(&mut self, offset: u64) -> u32 {
        (self.read)(offset)
    }

    fn write32(&mut self, offset: u64, value: u32) {
        (self.write)(offset, value)
    }
}

/// A PCI function's address: bus, device (0..32), function (0..8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bdf {
    /// Bus number.
    pub bus: u8,
    /// Device number, 0..32.
    pub device: u8,
    /// Function number, 0..8.
    pub function: u8,
}

impl Bdf {
    /// `bus`, `device`, `function` (device and function masked to their widths).
    pub fn new(bus: u8, device: u8, function: u8) -> Bdf {
        Bdf {
            bus,
            device: device & 31,
            function: function & 7,
        }
    }

    /// The byte offset of this function's 4 KiB configuration page in its
    /// segment's ECAM window.
    pub fn ecam_offset(self) -> u64 {
        (u64::from(self.bus) << 20)
            | (u64::from(self.device & 31) << 15)
            | (u64::from(self.function & 7) << 12)
    }

    /// The 16-bit requester ID (VT-d source ID; the SMMU StreamID on virt).
    pub fn requester_id(self) -> u16 {
        (u16::from(self.bus) << 8)
            | (u16::from(self.device & 31) << 3)
            | u16::from(self.function & 7)
    }
}

impl ktext::Text for Bdf {
    fn write(&self, out: &mut dyn ktext::Sink) {
        ktext::put!(
            out,
            "{:02x}:{:02x}.{}",
            self.bus,
            self.device,
            self.function
        );
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ktext::display(self, f)
    }
}

/// Type 0 header register offsets (PCI Local Bus 3.0, 6.1).
pub mod register {
    /// Vendor ID (bits 0..16), device ID (16..32).
    pub const ID: u16 = 0x00;
    /// Command (bits 0..16), status (16..32).
    pub const COMMAND: u16 = 0x04;
    /// Revision, class code.
    pub const CLASS: u16 = 0x08;
    /// Cache line, latency timer, header type (bits 16..24), BIST.
    pub const HEADER: u16 = 0x0C;
    /// Base address register 0; BAR n is at `BAR0 + 4 * n`.
    pub const BAR0: u16 = 0x10;
}

/// Command register bits (PCI Local Bus 3.0, 6.2.2).
pub mod command {
    /// Responds to I/O space accesses.
    pub const IO_SPACE: u16 = 1 << 0;
    /// Responds to memory space accesses (its memory BARs decode).
    pub const MEMORY_SPACE: u16 = 1 << 1;
    /// May master the bus (DMA).
    pub const BUS_MASTER: u16 = 1 << 2;
}

/// How many BARs a type 0 header has.
pub const BAR_COUNT: u8 = 6;

/// What one base address register decodes (PCI Local Bus 3.0, 6.2.5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    /// A memory BAR: its bus address, whether it is 64-bit (it then also
    /// uses the next register) and prefetchable.
    Memory {
        /// The PCI bus address it decodes (0 if unassigned).
        address: u64,
        /// A 64-bit BAR: the next register holds the upper 32 bits.
        is_64bit: bool,
        /// Prefetchable memory.
        prefetchable: bool,
    },
    /// An I/O space BAR.
    Io {
        /// The I/O port base (0 if unassigned).
        port: u32,
    },
}

impl Bar {
    /// How many registers it takes: 2 for a 64-bit memory BAR, else 1.
    pub fn registers(&self) -> u8 {
        match self {
            Bar::Memory { is_64bit: true, .. } => 2,
            _ => 1,
        }
    }
}

/// What went wrong reading a function's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// No function answers at this address (vendor ID 0xFFFF).
    NoFunction(Bdf),
    /// The function has no MSI capability.
    NoMsiCapability(Bdf),
    /// The MSI capability takes 32-bit addresses only.
    MsiAddressTooHigh {
        /// The function.
        bdf: Bdf,
        /// The address asked for.
        address: u64,
    },
    /// A checked MSI write ([`Function::write_msi_field`]) at an offset
    /// that is no MSI or MSI-X capability field a driver may write.
    NotMsiField {
        /// The function.
        bdf: Bdf,
        /// The 32-bit register's offset.
        offset: u16,
    },
    /// A checked MSI write that changes bits outside the field's writable
    /// ones (capability id, next pointer, read-only control bits, ...).
    MsiReadOnlyBits {
        /// The function.
        bdf: Bdf,
        /// The 32-bit register's offset.
        offset: u16,
        /// The bits it would have changed that are not the driver's.
        bits: u32,
    },
    /// The BAR index is 6 or more.
    BarIndexOutOfRange(u8),
    /// The header is not type 0 (a bridge or CardBus): its BARs differ.
    NotAType0Header {
        /// The function.
        bdf: Bdf,
        /// Its header type (bits 0..7).
        header_type: u8,
    },
    /// BAR 5 says it is 64-bit, but there is no BAR 6 for its upper half.
    SixtyFourBitBarAtTheEnd(Bdf),
    /// The BAR's type field holds a reserved value (memory type 1 or 3).
    ReservedBarType {
        /// The function.
        bdf: Bdf,
        /// The BAR index.
        index: u8,
    },
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PciError::NoFunction(bdf) => write!(f, "no PCI function at {bdf}"),
            PciError::NoMsiCapability(bdf) => write!(f, "{bdf} has no MSI capability"),
            PciError::MsiAddressTooHigh { bdf, address } => write!(
                f,
                "{bdf}: its MSI capability takes 32-bit addresses, not {address:#x}"
            ),
            PciError::NotMsiField { bdf, offset } => write!(
                f,
                "{bdf}: offset {offset:#x} is no MSI or MSI-X field a driver may write"
            ),
            PciError::MsiReadOnlyBits { bdf, offset, bits } => write!(
                f,
                "{bdf}: the write at {offset:#x} changes bits {bits:#x}, which are not the MSI fields'"
            ),
            PciError::BarIndexOutOfRange(index) => {
                write!(f, "BAR index {index} is out of range (0..6)")
            }
            PciError::NotAType0Header { bdf, header_type } => write!(
                f,
                "{bdf} has header type {header_type}, not 0: its BARs are not decoded here"
            ),
            PciError::SixtyFourBitBarAtTheEnd(bdf) => {
                write!(f, "{bdf}: BAR 5 claims 64 bits with no register after it")
            }
            PciError::ReservedBarType { bdf, index } => {
                write!(f, "{bdf}: BAR {index} has a reserved memory type")
            }
        }
    }
}

/// One PCI function's configuration space.
pub struct Function<'a, A: ConfigAccess + ?Sized> {
    access: &'a mut A,
    bdf: Bdf,
}

impl<'a, A: ConfigAccess + ?Sized> Function<'a, A> {
    /// The function at `bdf`, if one answers there.
    pub fn open(access: &'a mut A, bdf: Bdf) -> Result<Function<'a, A>, PciError> {
        let mut function = Function { access, bdf };
        if function.vendor_id() == 0xFFFF {
            return Err(PciError::NoFunction(bdf));
        }
        Ok(function)
    }

    /// Its address.
    pub fn bdf(&self) -> Bdf {
        self.bdf
    }

    /// Reads the 32-bit register at `register` (masked to 4-byte alignment
    /// inside the 4 KiB page).
    pub fn read(&mut self, register: u16) -> u32 {
        self.access
            .read32(self.bdf.ecam_offset() + u64::from(register & 0xFFC))
    }

    /// Writes the 32-bit register at `register` (as for [`Function::read`]).
    pub fn write(&mut self, register: u16, value: u32) {
        self.access
            .write32(self.bdf.ecam_offset() + u64::from(register & 0xFFC), value)
    }

    /// Vendor ID.
    pub fn vendor_id(&mut self) -> u16 {
        self.read(register::ID) as u16
    }

    /// Device ID.
    pub fn device_id(&mut self) -> u16 {
        (self.read(register::ID) >> 16) as u16
    }

    /// Header type (bits 0..7) without the multi-function bit.
    pub fn header_type(&mut self) -> u8 {
        ((self.read(register::HEADER) >> 16) & 0x7F) as u8
    }

    /// Whether function 0 of this device says it has other functions.
    pub fn is_multi_function(&mut self) -> bool {
        self.read(register::HEADER) & (1 << 23) != 0
    }

    /// The command register.
    pub fn command(&mut self) -> u16 {
        self.read(register::COMMAND) as u16
    }

    /// Writes the command register (the status half is written as 0, which
    /// clears no status bit: they are write-1-to-clear).
    pub fn set_command(&mut self, value: u16) {
        self.write(register::COMMAND, u32::from(value))
    }

    /// The configuration-space offset of capability `id` (PCI 3.0, 6.7),
    /// following the list from 0x34 for at most 48 entries (a looping or
    /// damaged list ends the walk); `None` without a capability list.
    pub fn capability(&mut self, id: u8) -> Option<u16> {
        const STATUS_CAPABILITIES: u32 = 1 << 20;
        if self.read(register::COMMAND) & STATUS_CAPABILITIES == 0 {
            return None;
        }
        let mut next = (self.read(0x34) & 0xFC) as u16;
        for _ in 0..48 {
            if next < 0x40 {
                return None;
            }
            let header = self.read(next);
            if header & 0xFF == u32::from(id) {
                return Some(next);
            }
            next = ((header >> 8) & 0xFC) as u16;
        }
        None
    }

    /// Programs and enables the function's MSI capability (one vector):
    /// message `address` (64-bit when the capability says so, else it must
    /// fit 32 bits) and `data`. Errors: `NoMsiCapability`,
    /// `MsiAddressTooHigh`.
    pub fn enable_msi(&mut self, address: u64, data: u16) -> Result<(), PciError> {
        let bdf = self.bdf;
        let at = self
            .capability(msi::MSI_CAPABILITY)
            .ok_or(PciError::NoMsiCapability(bdf))?;
        let control = self.read(at) >> 16;
        let wide = control & (1 << 7) != 0;
        if !wide && address >> 32 != 0 {
            return Err(PciError::MsiAddressTooHigh { bdf, address });
        }
        self.write(at + 4, address as u32);
        let data_at = if wide {
            self.write(at + 8, (address >> 32) as u32);
            at + 12
        } else {
            at + 8
        };
        let old = self.read(data_at);
        self.write(data_at, (old & !0xFFFF) | u32::from(data));
        // Enable, one message (Multiple Message Enable = 0).
        let header = self.read(at);
        let control = (header >> 16) & !(0b111 << 4) | 1;
        self.write(at, (header & 0xFFFF) | (control << 16));
        Ok(())
    }

    /// The bits of the 32-bit register at `offset` a driver may write to
    /// set up its interrupts: the MSI capability's enable and Multiple
    /// Message Enable, message address, upper address (64-bit capable),
    /// data and mask bits (per-vector masking); the MSI-X capability's
    /// enable and function mask. `None` for every other register: the
    /// capability's id and next pointer, the table offsets, the command
    /// register, BARs, anything else.
    pub fn msi_writable_bits(&mut self, offset: u16) -> Option<u32> {
        if let Some(at) = self.capability(msi::MSI_CAPABILITY) {
            let control = self.read(at) >> 16;
            let wide = control & (1 << 7) != 0;
            let masking = control & (1 << 8) != 0;
            let data = if wide { at + 12 } else { at + 8 };
            let field = match offset {
                o if o == at => Some(0x0071_0000),
                o if o == at + 4 => Some(0xFFFF_FFFC),
                o if wide && o == at + 8 => Some(u32::MAX),
                o if o == data => Some(0x0000_FFFF),
                o if masking && o == data + 4 => Some(u32::MAX),
                _ => None,
            };
            if field.is_some() {
                return field;
            }
        }
        match self.capability(msi::MSIX_CAPABILITY) {
            Some(at) if offset == at => Some(msi::MSIX_ENABLE | msi::MSIX_FUNCTION_MASK),
            _ => None,
        }
    }

    /// The checked write a driver's request may make (init's
    /// `sys::resources::CONFIG_WRITE`): writes `value` to the register at
    /// `offset` if it is one of [`Function::msi_writable_bits`]'s and
    /// `value` changes no other bit of it; returns the register read back.
    /// Errors: `NotMsiField`, `MsiReadOnlyBits` (nothing written).
    pub fn write_msi_field(&mut self, offset: u16, value: u32) -> Result<u32, PciError> {
        let bdf = self.bdf;
        let writable = self
            .msi_writable_bits(offset)
            .ok_or(PciError::NotMsiField { bdf, offset })?;
        let old = self.read(offset);
        let bits = (old ^ value) & !writable;
        if bits != 0 {
            return Err(PciError::MsiReadOnlyBits { bdf, offset, bits });
        }
        self.write(offset, value);
        Ok(self.read(offset))
    }

    /// Sets `bits` in the command register, keeping the others.
    pub fn enable(&mut self, bits: u16) {
        let value = self.command() | bits;
        self.set_command(value)
    }

    fn check_bar(&mut self, index: u8) -> Result<(), PciError> {
        if index >= BAR_COUNT {
            return Err(PciError::BarIndexOutOfRange(index));
        }
        let header_type = self.header_type();
        if header_type != 0 {
            return Err(PciError::NotAType0Header {
                bdf: self.bdf,
                header_type,
            });
        }
        Ok(())
    }

    fn bar_register(index: u8) -> u16 {
        register::BAR0 + 4 * u16::from(index)
    }

    /// Decodes BAR `index` (for a 64-bit BAR, `index` is its lower half).
    pub fn bar(&mut self, index: u8) -> Result<Bar, PciError> {
        self.check_bar(index)?;
        let low = self.read(Self::bar_register(index));
        if low & 1 != 0 {
            return Ok(Bar::Io { port: low & !3 });
        }
        let prefetchable = low & (1 << 3) != 0;
        match (low >> 1) & 3 {
            0 => Ok(Bar::Memory {
                address: u64::from(low & !0xF),
                is_64bit: false,
                prefetchable,
            }),
            2 => {
                if index + 1 >= BAR_COUNT {
                    return Err(PciError::SixtyFourBitBarAtTheEnd(self.bdf));
                }
                let high = self.read(Self::bar_register(index + 1));
                Ok(Bar::Memory {
                    address: (u64::from(high) << 32) | u64::from(low & !0xF),
                    is_64bit: true,
                    prefetchable,
                })
            }
            _ => Err(PciError::ReservedBarType {
                bdf: self.bdf,
                index,
            }),
        }
    }

    /// Decodes BAR `index` and measures its size in bytes (0: the BAR is not
    /// implemented). Sizing writes all ones to the register(s) with memory
    /// and I/O decoding off, then restores the address and the command
    /// register, so it is for code that owns the device (not while a driver
    /// uses it).
    pub fn bar_with_size(&mut self, index: u8) -> Result<(Bar, u64), PciError> {
        let bar = self.bar(index)?;
        let command = self.command();
        self.set_command(command & !(command::MEMORY_SPACE | command::IO_SPACE));
        let register = Self::bar_register(index);
        let low_mask = self.probe(register);
        let size = match bar {
            Bar::Io { .. } => {
                let mask = low_mask & !3;
                // Devices that decode 16 bits of port address read 0 above.
                let width = if mask >> 16 == 0 { 0xFFFF } else { u32::MAX };
                size_of_mask(u64::from(mask), u64::from(width))
            }
            Bar::Memory {
                is_64bit: false, ..
            } => size_of_mask(u64::from(low_mask & !0xF), u64::from(u32::MAX)),
            Bar::Memory { is_64bit: true, .. } => {
                let high_mask = self.probe(register + 4);
                size_of_mask(
                    (u64::from(high_mask) << 32) | u64::from(low_mask & !0xF),
                    u64::MAX,
                )
            }
        };
        self.set_command(command);
        Ok((bar, size))
    }

    /// Writes all ones to `register`, reads what sticks, restores it.
    fn probe(&mut self, register: u16) -> u32 {
        let saved = self.read(register);
        self.write(register, u32::MAX);
        let mask = self.read(register);
        self.write(register, saved);
        mask
    }

    /// Writes `address` into memory BAR `index` (both halves of a 64-bit
    /// BAR; a 32-bit BAR takes the low half only).
    pub fn set_bar_address(&mut self, index: u8, address: u64) -> Result<(), PciError> {
        let bar = self.bar(index)?;
        let register = Self::bar_register(index);
        match bar {
            Bar::Memory { is_64bit, .. } => {
                let flags = self.read(register) & 0xF;
                self.write(register, (address as u32 & !0xF) | flags);
                if is_64bit {
                    self.write(register + 4, (address >> 32) as u32);
                }
            }
            Bar::Io { .. } => {
                let flags = self.read(register) & 3;
                self.write(register, (address as u32 & !3) | flags);
            }
        }
        Ok(())
    }
}

/// The size a BAR's writable address bits `mask` (within `width`) encode:
/// the lowest set bit; 0 when no bit sticks (the BAR is not implemented).
fn size_of_mask(mask: u64, width: u64) -> u64 {
    if mask == 0 {
        0
    } else {
        (!mask).wrapping_add(1) & width
    }
}

/// A walk over the functions present on one bus, in address order:
/// function 0 of each device that answers, and functions 1..8 where
/// function 0 says the device is multi-function. It holds no access, so
/// the caller can open each function it returns.
#[derive(Clone, Debug)]
pub struct BusScan {
    bus: u8,
    /// The next (device, function) to look at; device 32 is the end.
    next: (u8, u8),
    multi_function: bool,
}

impl BusScan {
    /// A walk over `bus`.
    pub fn new(bus: u8) -> BusScan {
        BusScan {
            bus,
            next: (0, 0),
            multi_function: false,
        }
    }

    /// The next function present, or `None` after the last.
    pub fn next<A: ConfigAccess + ?Sized>(&mut self, access: &mut A) -> Option<Bdf> {
        while self.next.0 < 32 {
            let (device, function) = self.next;
            self.next = if function == 7 {
                (device + 1, 0)
            } else {
                (device, function + 1)
            };
            if function > 0 && !self.multi_function {
                self.next = (device + 1, 0);
                continue;
            }
            let bdf = Bdf::new(self.bus, device, function);
            match Function::open(access, bdf) {
                Ok(mut found) => {
                    if function == 0 {
                        self.multi_function = found.is_multi_function();
                    }
                    return Some(bdf);
                }
                Err(_) if function == 0 => {
                    self.multi_function = false;
                    self.next = (device + 1, 0);
                }
                Err(_) => {}
            }
        }
        None
    }
}

/// The first function on `bus` with this vendor and device ID.
pub fn find<A: ConfigAccess + ?Sized>(
    access: &mut A,
    bus: u8,
    vendor: u16,
    device: u16,
) -> Option<Bdf> {
    let mut scan = BusScan::new(bus);
    while let Some(bdf) = scan.next(access) {
        let id = access.read32(bdf.ecam_offset() + u64::from(register::ID));
        if id == (u32::from(device) << 16) | u32::from(vendor) {
            return Some(bdf);
        }
    }
    None
}

#[cfg(test)]
mod tests;
