//! The local APIC: the timer that preempts user threads, and end-of-interrupt.
//!
//! Interrupts reach the CPU only while a user thread runs (the kernel runs
//! with IF clear), so an interrupt always ends `run_user` with
//! `Exit::Interrupt(vector)`; the kernel then acknowledges it here.

/// Physical address of the local APIC registers (architectural default).
const LAPIC_BASE: u64 = 0xFEE0_0000;
const SPURIOUS: usize = 0x0F0;
const END_OF_INTERRUPT: usize = 0x0B0;
const TIMER_VECTOR_REG: usize = 0x320;
const TIMER_INITIAL: usize = 0x380;
const TIMER_DIVIDE: usize = 0x3E0;
/// LVT mask bit.
const MASKED: u32 = 1 << 16;

/// The vector the timer raises.
pub const TIMER_VECTOR: u8 = 32;
/// The spurious-interrupt vector (low nibble all ones, as old APICs require).
const SPURIOUS_VECTOR: u32 = 0x2F;

fn register(offset: usize) -> *mut u32 {
    (super::PHYS_MAP_BASE + LAPIC_BASE + offset as u64) as *mut u32
}

fn write(offset: usize, value: u32) {
    // SAFETY: the local APIC is device memory in the direct map, owned by
    // the kernel; `offset` names one of its registers.
    unsafe { register(offset).write_volatile(value) }
}

/// Software-enables the local APIC with the timer masked.
pub fn init() {
    write(SPURIOUS, (1 << 8) | SPURIOUS_VECTOR);
    write(TIMER_DIVIDE, 0b1011); // divide by 1
    write(TIMER_VECTOR_REG, MASKED | u32::from(TIMER_VECTOR));
}

/// Arms a one-shot timer interrupt after `ticks` APIC timer ticks.
pub fn timer_start(ticks: u32) {
    write(TIMER_VECTOR_REG, u32::from(TIMER_VECTOR));
    write(TIMER_INITIAL, ticks.max(1));
}

/// Disarms the timer.
pub fn timer_stop() {
    write(TIMER_INITIAL, 0);
    write(TIMER_VECTOR_REG, MASKED | u32::from(TIMER_VECTOR));
}

/// Whether `vector` is requested at the local APIC (IRR, Intel SDM vol. 3,
/// 11.8.4): an interrupt that arrived while the kernel ran with interrupts
/// off waits there.
#[cfg(feature = "self-tests")]
pub fn requested(vector: u8) -> bool {
    let offset = 0x200 + 0x10 * usize::from(vector / 32);
    // SAFETY: the IRR registers are read-only status in the local APIC page.
    let word = unsafe { register(offset).read_volatile() };
    word & (1 << (vector % 32)) != 0
}

/// Signals end of interrupt for the vector being handled.
pub fn end_of_interrupt() {
    write(END_OF_INTERRUPT, 0);
}
