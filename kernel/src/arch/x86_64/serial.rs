//! The 16550 UART on COM1 (I/O port 0x3F8): the kernel console on x86_64.

use super::io::{in8, out8};

const COM1: u16 = 0x3F8;
/// Line status register: transmit holding register empty.
const LSR_THR_EMPTY: u8 = 1 << 5;
/// How many times to poll the line status before dropping a byte: the
/// emulated UART is always ready, a real one drains a byte in ~90 us.
const TX_POLL_LIMIT: u32 = 100_000;

/// Programs COM1 for 115200 baud, 8N1, FIFOs on.
pub fn init() {
    // SAFETY: COM1 belongs to the kernel console; these writes only set the
    // line parameters.
    unsafe {
        out8(COM1 + 1, 0x00); // no interrupts
        out8(COM1 + 3, 0x80); // DLAB on
        out8(COM1, 0x01); // divisor 1: 115200 baud
        out8(COM1 + 1, 0x00);
        out8(COM1 + 3, 0x03); // 8N1, DLAB off
        out8(COM1 + 2, 0xC7); // FIFO on, cleared
        out8(COM1 + 4, 0x0B); // DTR, RTS, OUT2
    }
}

/// Sends bytes, translating `\n` to `\r\n`.
pub fn write_bytes(bytes: &[u8]) {
    for &byte in bytes {
        if byte == b'\n' {
            put(b'\r');
        }
        put(byte);
    }
}

fn put(byte: u8) {
    for _ in 0..TX_POLL_LIMIT {
        // SAFETY: reading the line status register of the console UART has no
        // side effects.
        if unsafe { in8(COM1 + 5) } & LSR_THR_EMPTY != 0 {
            break;
        }
    }
    // SAFETY: writing the transmit register of the console UART sends a byte.
    unsafe { out8(COM1, byte) }
}
