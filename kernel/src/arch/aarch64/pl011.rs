//! The PL011 UART of QEMU's virt machine: the kernel console on aarch64.

/// Physical address of the UART's registers on `-M virt`.
const PL011_BASE: u64 = 0x0900_0000;
const DATA: usize = 0x000;
const FLAGS: usize = 0x018;
const CONTROL: usize = 0x030;
/// Flag register: transmit FIFO full.
const FLAGS_TX_FULL: u32 = 1 << 5;
/// Control register: UART enable, transmit enable, receive enable.
const CONTROL_ENABLE: u32 = 0x301;
/// How many times to poll the flags before dropping a byte.
const TX_POLL_LIMIT: u32 = 100_000;

fn register(offset: usize) -> *mut u32 {
    (super::PHYS_MAP_BASE + PL011_BASE + offset as u64) as *mut u32
}

/// Enables the UART.
pub fn init() {
    // SAFETY: the PL011 registers are device memory in the direct map and
    // belong to the kernel console.
    unsafe { register(CONTROL).write_volatile(CONTROL_ENABLE) }
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
        // SAFETY: reading the flag register of the console UART has no side
        // effects.
        if unsafe { register(FLAGS).read_volatile() } & FLAGS_TX_FULL == 0 {
            break;
        }
    }
    // SAFETY: writing the data register of the console UART sends a byte.
    unsafe { register(DATA).write_volatile(u32::from(byte)) }
}
