//! Device registers from user space: a device Frame this program mapped
//! into its own address space, as a bounds-checked window of volatile
//! accesses.
//!
//! [`Window::map`] maps the Frame itself, so a window always starts out
//! backed by the mapping it describes; it stays valid while that Frame
//! stays mapped (unmapping it turns accesses into page faults). Accesses
//! outside the window read as all ones and write nothing, like an absent
//! PCI function.

use crate::space::{Objects, map_frame};
use sys::{Cap, Error, Frame, MapRights, PageTable};

/// `len` bytes of device registers mapped at `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    base: u64,
    len: u64,
}

impl Window {
    /// Maps `frame` (device memory of at least `len` bytes) read-write at
    /// `address` of `own`, this program's VSpace, adding PageTables as
    /// needed; the window covers `len` bytes from `address`.
    pub fn map(
        objects: &mut Objects,
        frame: Cap<Frame>,
        own: Cap<PageTable>,
        address: u64,
        len: u64,
    ) -> Result<Window, Error> {
        map_frame(objects, frame, own, address, MapRights::READ_WRITE)?;
        Ok(Window { base: address, len })
    }

    /// The registers of a granted device, which init mapped at `address`
    /// before the domain started or when it answered the request
    /// (`sys::names::DEVICE_REGISTERS_ADDRESS`, `sys::resources`). Only
    /// ranges inside init's register windows are accepted (no Rust object
    /// lives there); anything else gives an empty window.
    pub fn granted(address: u64, len: u64) -> Window {
        use sys::names::{DEVICE_REGISTERS_ADDRESS, DEVICE_REGISTERS_STRIDE};
        let end = DEVICE_REGISTERS_ADDRESS + 64 * DEVICE_REGISTERS_STRIDE;
        let inside = address >= DEVICE_REGISTERS_ADDRESS
            && address.checked_add(len).is_some_and(|last| last <= end);
        Window {
            base: address,
            len: if inside { len } else { 0 },
        }
    }

    /// Where the window starts.
    pub fn base(&self) -> u64 {
        self.base
    }

    fn address(&self, offset: u64, size: u64) -> Option<u64> {
        (offset.checked_add(size)? <= self.len && offset.is_multiple_of(size))
            .then(|| self.base + offset)
    }

    /// The 32-bit register at `offset` (all ones outside the window).
    #[allow(unsafe_code)]
    pub fn read32(&self, offset: u64) -> u32 {
        match self.address(offset, 4) {
            // SAFETY: inside a device Frame mapped read-write at `base` (see
            // the module documentation), aligned; volatile, not elided.
            Some(address) => unsafe { (address as *const u32).read_volatile() },
            None => u32::MAX,
        }
    }

    /// Writes the 32-bit register at `offset` (nothing outside the window).
    #[allow(unsafe_code)]
    pub fn write32(&self, offset: u64, value: u32) {
        if let Some(address) = self.address(offset, 4) {
            // SAFETY: as in `read32`; the page is device memory, where no
            // Rust object lives.
            unsafe { (address as *mut u32).write_volatile(value) }
        }
    }

    /// The 64-bit register at `offset` (all ones outside the window).
    #[allow(unsafe_code)]
    pub fn read64(&self, offset: u64) -> u64 {
        match self.address(offset, 8) {
            // SAFETY: as in `read32`, 8-byte aligned.
            Some(address) => unsafe { (address as *const u64).read_volatile() },
            None => u64::MAX,
        }
    }

    /// Writes the 64-bit register at `offset` (nothing outside the window).
    #[allow(unsafe_code)]
    pub fn write64(&self, offset: u64, value: u64) {
        if let Some(address) = self.address(offset, 8) {
            // SAFETY: as in `write32`, 8-byte aligned.
            unsafe { (address as *mut u64).write_volatile(value) }
        }
    }
}
