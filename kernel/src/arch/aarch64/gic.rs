//! The GICv2 of QEMU's virt machine and the EL1 virtual timer: the timer
//! that preempts user threads, and interrupt acknowledgement.
//!
//! Interrupts reach the CPU only while a user thread runs (the kernel runs
//! with DAIF masked), so an IRQ always ends `run_user` with
//! `Exit::Interrupt`; the kernel then acknowledges it here.

/// Distributor base on `-M virt` (GICv2).
const DISTRIBUTOR: u64 = 0x0800_0000;
/// CPU interface base on `-M virt` (GICv2).
const CPU_INTERFACE: u64 = 0x0801_0000;
const GICD_CTLR: usize = 0x000;
const GICD_ISENABLER: usize = 0x100;
const GICD_IPRIORITYR: usize = 0x400;
const GICC_CTLR: usize = 0x000;
const GICC_PMR: usize = 0x004;
const GICC_IAR: usize = 0x00C;
const GICC_EOIR: usize = 0x010;
/// Interrupt ID of the EL1 virtual timer (a PPI).
pub const TIMER_IRQ: u32 = 27;
/// IAR value meaning "nothing pending".
const SPURIOUS: u32 = 1023;

fn register(base: u64, offset: usize) -> *mut u32 {
    (super::PHYS_MAP_BASE + base + offset as u64) as *mut u32
}

fn write(base: u64, offset: usize, value: u32) {
    // SAFETY: the GIC is device memory in the direct map, owned by the kernel.
    unsafe { register(base, offset).write_volatile(value) }
}

fn read(base: u64, offset: usize) -> u32 {
    // SAFETY: as in `write`.
    unsafe { register(base, offset).read_volatile() }
}

/// GICv2m MSI frame on `-M virt` (GICv2 with TCG): a device's write of an
/// INTID to `MSI_SETSPI` raises that SPI, if it is one of the frame's.
const V2M_FRAME: u64 = 0x0802_0000;
/// `MSI_TYPER`: bits 25:16 the first SPI's INTID, 9:0 how many.
const V2M_MSI_TYPER: usize = 0x008;
/// `MSI_SETSPI_NS`: the doorbell.
const V2M_MSI_SETSPI: u64 = 0x040;

/// The frame's SPIs as (first INTID, count), read once at boot.
static V2M_SPIS: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// The physical doorbell that raises `id`, if `id` is one of GICv2m's SPIs.
pub fn msi_doorbell(id: u32) -> Option<u64> {
    let typer = V2M_SPIS.load(core::sync::atomic::Ordering::Relaxed);
    let (first, count) = ((typer >> 16) & 0x3FF, typer & 0x3FF);
    (first >= 32 && (first..first + count).contains(&id)).then_some(V2M_FRAME + V2M_MSI_SETSPI)
}

/// Enables the distributor and CPU interface and the timer's PPI, and
/// reads which SPIs the GICv2m frame raises.
pub fn init() {
    V2M_SPIS.store(
        read(V2M_FRAME, V2M_MSI_TYPER),
        core::sync::atomic::Ordering::Relaxed,
    );
    write(DISTRIBUTOR, GICD_CTLR, 1);
    let priority_word = GICD_IPRIORITYR + (TIMER_IRQ as usize & !3);
    let shift = (TIMER_IRQ % 4) * 8;
    let old = read(DISTRIBUTOR, priority_word);
    write(
        DISTRIBUTOR,
        priority_word,
        (old & !(0xFF << shift)) | (0x80 << shift),
    );
    write(DISTRIBUTOR, GICD_ISENABLER, 1 << TIMER_IRQ);
    write(CPU_INTERFACE, GICC_PMR, 0xFF);
    write(CPU_INTERFACE, GICC_CTLR, 1);
}

#[cfg(feature = "self-tests")]
const GICD_ISPENDR: usize = 0x200;
#[cfg(feature = "self-tests")]
const GICD_ICPENDR: usize = 0x280;
const GICD_ITARGETSR: usize = 0x800;
const GICD_ICFGR: usize = 0xC00;

/// Enables shared peripheral interrupt `id` (>= 32) as edge-triggered (the
/// SMMU's wired interrupts are edge SPIs) and routes it to CPU 0.
pub fn enable_spi(id: u32) {
    let config = GICD_ICFGR + 4 * (id as usize / 16);
    let edge = 2 << (2 * (id % 16));
    write(DISTRIBUTOR, config, read(DISTRIBUTOR, config) | edge);
    let word = 4 * (id as usize / 32);
    let target = GICD_ITARGETSR + (id as usize & !3);
    let shift = (id % 4) * 8;
    let old = read(DISTRIBUTOR, target);
    write(DISTRIBUTOR, target, (old & !(0xFF << shift)) | (1 << shift));
    write(DISTRIBUTOR, GICD_ISENABLER + word, 1 << (id % 32));
}

const GICD_ICENABLER: usize = 0x180;

/// Enables (`true`) or disables interrupt `id` at the distributor.
pub fn set_enabled(id: u32, enabled: bool) {
    let register = if enabled {
        GICD_ISENABLER
    } else {
        GICD_ICENABLER
    };
    write(
        DISTRIBUTOR,
        register + 4 * (id as usize / 32),
        1 << (id % 32),
    );
}

/// Whether interrupt `id` is pending at the distributor.
#[cfg(feature = "self-tests")]
pub fn pending(id: u32) -> bool {
    read(DISTRIBUTOR, GICD_ISPENDR + 4 * (id as usize / 32)) & (1 << (id % 32)) != 0
}

/// Clears interrupt `id`'s pending state.
#[cfg(feature = "self-tests")]
pub fn clear_pending(id: u32) {
    write(
        DISTRIBUTOR,
        GICD_ICPENDR + 4 * (id as usize / 32),
        1 << (id % 32),
    );
}

/// Arms the virtual timer to fire after `ticks` counter ticks.
pub fn timer_start(ticks: u32) {
    // SAFETY: CNTV_TVAL/CTL belong to the kernel; enabling with IMASK clear
    // raises PPI 27 when the count expires.
    unsafe {
        core::arch::asm!("msr cntv_tval_el0, {}", "msr cntv_ctl_el0, {}", "isb", in(reg) u64::from(ticks.max(1)), in(reg) 1u64, options(nostack))
    };
}

/// Disarms the virtual timer.
pub fn timer_stop() {
    // SAFETY: disabling the timer has no other effect.
    unsafe { core::arch::asm!("msr cntv_ctl_el0, xzr", "isb", options(nostack)) };
}

/// Acknowledges the highest-priority pending interrupt and returns its ID.
pub fn acknowledge() -> Option<u32> {
    let iar = read(CPU_INTERFACE, GICC_IAR);
    let id = iar & 0x3FF;
    (id != SPURIOUS).then_some(iar)
}

/// Signals end of interrupt for a value returned by [`acknowledge`].
pub fn end_of_interrupt(iar: u32) {
    write(CPU_INTERFACE, GICC_EOIR, iar);
}
