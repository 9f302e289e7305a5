//! The I/O APIC (q35: one, at 0xFEC0_0000) and the 8254 PIT behind it: the
//! interrupt lines user-level handlers can own.
//!
//! Line `n` (an ISA IRQ number) arrives on global system interrupt `n`,
//! except the PIT's IRQ 0, which q35's ACPI tables route to GSI 2 (the
//! usual interrupt source override); it is delivered as vector
//! [`FIRST_LINE_VECTOR`] + `n` to this CPU, edge-triggered, active high.

/// Physical address of the I/O APIC (the architectural default on q35).
const IOAPIC_BASE: u64 = 0xFEC0_0000;
/// Vector of line 0; lines 0..15 use the IDT stubs 33..48.
pub const FIRST_LINE_VECTOR: u8 = 33;
/// Lines user handlers may have.
pub const LINES: u16 = 15;

fn write(register: u32, value: u32) {
    let base = super::PHYS_MAP_BASE + IOAPIC_BASE;
    // SAFETY: the I/O APIC's index (offset 0) and data (offset 0x10)
    // registers, device memory in the direct map, owned by the kernel.
    unsafe {
        (base as *mut u32).write_volatile(register);
        ((base + 0x10) as *mut u32).write_volatile(value);
    }
}

fn gsi(line: u16) -> u32 {
    if line == 0 { 2 } else { u32::from(line) }
}

/// Routes `line` to its vector on this CPU, masked or not: through its
/// interrupt remapping entry (index `line`) when remapping is on. Out of
/// line: it was inlined into 8 callers (kernel/README.md, "Size").
#[inline(never)]
pub fn set_line(line: u16, masked: bool) {
    let entry = 0x10 + 2 * gsi(line);
    let vector = FIRST_LINE_VECTOR + line as u8;
    // Fixed delivery, physical destination APIC 0, edge, active high.
    let value = super::REMAPPING
        .get()
        .and_then(|remapping| (remapping.ioapic_entry)(line, vector, masked))
        .unwrap_or(u64::from(vector) | u64::from(masked) << 16);
    // Masked while the two halves disagree: low half (mask bit) first when
    // masking, last when unmasking.
    write(entry, value as u32 | 1 << 16);
    write(entry + 1, (value >> 32) as u32);
    write(entry, value as u32);
}

/// Masks every line and starts the PIT at 100 Hz (its interrupt stays
/// masked until a handler owns line 0).
pub fn init() {
    for line in 0..LINES {
        set_line(line, true);
    }
    // SAFETY: ports 0x43/0x40 are the PIT's mode and channel-0 registers;
    // mode 2 (rate generator) at 1193182 / 11932 = 100 Hz.
    unsafe {
        super::io::out8(0x43, 0x34);
        super::io::out8(0x40, 0x9C);
        super::io::out8(0x40, 0x2E);
    }
}
