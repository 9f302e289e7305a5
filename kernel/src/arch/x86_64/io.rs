//! x86 port I/O.

/// Writes one byte to an I/O port.
///
/// # Safety
/// The caller must own the device behind `port`; a write can reconfigure
/// hardware.
pub unsafe fn out8(port: u16, value: u8) {
    // SAFETY: the caller owns the port (function contract).
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Writes a 32-bit value to an I/O port.
///
/// # Safety
/// As for [`out8`].
pub unsafe fn out32(port: u16, value: u32) {
    // SAFETY: the caller owns the port (function contract).
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads one byte from an I/O port.
///
/// # Safety
/// The caller must own the device behind `port`; some reads have side effects.
pub unsafe fn in8(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller owns the port (function contract).
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}
