//! aarch64 support: boot at EL1, PL011 console, exception vectors, semihosting exit.
//!
//! Address-space layout (see kernel/README.md for the picture):
//! - `0xFFFF_0000_0000_0000 + pa` (TTBR1): the direct map of physical memory,
//!   covering 0..4 GiB and the PCIe ECAM window at 256 GiB. The kernel image
//!   is linked inside it, at its physical address plus that base.
//! - TTBR0 (the lower half) is left for user address spaces; boot turns its
//!   walks off once the kernel runs high.

mod boot;
mod gic;
pub mod paging;
mod pl011;
mod trap;
mod user;

#[cfg(feature = "bench")]
pub use user::user_bench_program;
#[cfg(feature = "self-tests")]
pub use user::user_probe_program;
pub use user::{Exit, UserContext, run_user, set_address_space};

use crate::boot_types::{BootInfo, Platform};

/// Where the direct map of physical memory starts.
pub const PHYS_MAP_BASE: u64 = 0xFFFF_0000_0000_0000;

/// Physical address of a kernel-image (static) virtual address: the image
/// is linked inside the direct map.
pub fn kernel_virt_to_phys(va: u64) -> u64 {
    va - PHYS_MAP_BASE
}

/// The architecture's name as the tools spell it.
pub const NAME: &str = "aarch64";

/// Where QEMU's virt machine puts the device tree for a bare ELF kernel.
const VIRT_DTB: u64 = 0x4000_0000;

/// Returns whether `[pa, pa + len)` lies inside the direct map.
pub fn phys_map_covers(pa: u64, len: u64) -> bool {
    const GIB: u64 = 1 << 30;
    let Some(end) = pa.checked_add(len) else {
        return false;
    };
    end <= 4 * GIB || (pa >= 256 * GIB && end <= 257 * GIB)
}

/// Brings the architecture up (called by the code [`super::entry!`]
/// defines, in the upper half with whatever the loader left in x0) and
/// says where the device tree is.
pub fn start(loader_x0: u64, upcalls: &'static super::Upcalls) -> Result<BootInfo, &'static str> {
    super::set_upcalls(upcalls);
    pl011::init();
    disable_lower_half();
    gic::init();
    // SAFETY: CNTKCTL_EL1.EL0VCTEN lets user code read the virtual counter
    // (benchmarks time themselves with it) and EL0PTEN lets it program the
    // EL1 physical timer, whose interrupt (PPI 30) a user handler may own;
    // the kernel's own timer is the virtual one.
    unsafe {
        core::arch::asm!("mrs {t}, cntkctl_el1", "orr {t}, {t}, #2", "orr {t}, {t}, #0x200", "msr cntkctl_el1, {t}", t = out(reg) _, options(nostack))
    };
    #[cfg(feature = "bench")]
    count_instructions_for_user();
    // QEMU leaves x0 = 0 for a bare ELF; the DTB is at the start of RAM.
    let dtb = if loader_x0 != 0 { loader_x0 } else { VIRT_DTB };
    Ok(BootInfo::new(Platform::DeviceTree { dtb }))
}

/// The benchmark kernel only: PMU event counter 0 counts INST_RETIRED
/// (event 0x08) at EL1 and EL0, system-wide (never reset or switched), and
/// user code may read it (PMUSERENR_EL0.ER: reads of the event counters,
/// no writes). Under QEMU's `-icount` it counts executed instructions and
/// nothing while the vCPU sleeps in WFI, so the block benchmarks
/// (`rt::bench::io_counter`) can count what the CPU runs per I/O with the
/// driver sleeping for its interrupt (`-icount shift=0,sleep=on`).
#[cfg(feature = "bench")]
fn count_instructions_for_user() {
    const INST_RETIRED: u64 = 0x08;
    const PMCR_ENABLE: u64 = 1;
    const PMUSERENR_ER: u64 = 1 << 3;
    // SAFETY: PMU configuration only: PMEVTYPER0_EL0 with the event and
    // no filter bits (EL1 and EL0 counted), counter 0 enabled
    // (PMCNTENSET_EL0), the PMU enabled (PMCR_EL0.E), and EL0 read access
    // to the event counters; no memory is touched and nothing else in the
    // kernel uses the PMU.
    unsafe {
        core::arch::asm!(
            "msr pmevtyper0_el0, {event}",
            "msr pmcntenset_el0, {one}",
            "mrs {t}, pmcr_el0",
            "orr {t}, {t}, {enable}",
            "msr pmcr_el0, {t}",
            "msr pmuserenr_el0, {user}",
            "isb",
            event = in(reg) INST_RETIRED,
            one = in(reg) 1u64,
            enable = in(reg) PMCR_ENABLE,
            user = in(reg) PMUSERENR_ER,
            t = out(reg) _,
            options(nostack)
        )
    };
}

/// Stops TTBR0 walks (TCR_EL1.EPD0) so the boot identity map is gone.
fn disable_lower_half() {
    // SAFETY: the kernel runs from the upper half only; setting EPD0 makes
    // lower-half accesses fault, and the TLB flush drops stale entries.
    unsafe {
        core::arch::asm!(
            "mrs {tcr}, tcr_el1",
            "orr {tcr}, {tcr}, #(1 << 7)",
            "msr tcr_el1, {tcr}",
            "isb",
            "tlbi vmalle1",
            "dsb ish",
            "isb",
            tcr = out(reg) _,
            options(nostack),
        );
    }
}

/// Ends the QEMU session with `status` through semihosting SYS_EXIT
/// (QEMU's exit code becomes `status`).
pub fn exit_qemu(status: u32) -> ! {
    /// ADP_Stopped_ApplicationExit.
    const APPLICATION_EXIT: u64 = 0x2_0026;
    const SYS_EXIT: u64 = 0x18;
    let block = [APPLICATION_EXIT, u64::from(status)];
    // SAFETY: a semihosting call with a valid parameter block; QEMU runs with
    // -semihosting and ends the VM.
    unsafe {
        core::arch::asm!("hlt #0xf000", in("x0") SYS_EXIT, in("x1") block.as_ptr(), options(nostack));
    }
    halt()
}

/// Stops this CPU for good.
pub fn halt() -> ! {
    loop {
        // SAFETY: masking interrupts and waiting parks the CPU.
        unsafe { core::arch::asm!("msr daifset, #0xf", "wfi", options(nomem, nostack)) };
    }
}

/// Writes bytes to the console.
pub fn console_write(bytes: &[u8]) {
    pl011::write_bytes(bytes);
}

/// Orders earlier memory writes (tables, queue entries) before a following
/// device-register write, so the device never sees a stale structure.
pub fn io_write_barrier() {
    // SAFETY: a data synchronization barrier has no other effect.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// The interrupt the preemption timer raises (the virtual timer's PPI).
pub const TIMER_IRQ: u32 = gic::TIMER_IRQ;

/// A user program that spins forever (`b .`), for preemption tests.
#[cfg(feature = "self-tests")]
pub const SPIN_PROGRAM: &[u8] = &[0x00, 0x00, 0x00, 0x14];

/// Arms the one-shot preemption timer `ticks` counter ticks from now.
pub fn timer_start(ticks: u32) {
    gic::timer_start(ticks);
}

/// Disarms the preemption timer.
pub fn timer_stop() {
    gic::timer_stop();
}

/// A free-running count that only grows (the virtual count, CNTVCT_EL0),
/// for deadlines: [`COUNTER_PER_SECOND`] counts are about a second.
pub fn counter() -> u64 {
    let count: u64;
    // SAFETY: reading CNTVCT_EL0 changes nothing; EL1 may always read it.
    unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) count, options(nostack)) };
    count
}

/// Counts of [`counter`] in about a second: QEMU virt's CNTFRQ_EL0 is
/// 62.5 MHz (hardware: 1-100 MHz, so 0.6 s to 60 s there).
pub const COUNTER_PER_SECOND: u64 = 62_500_000;

/// Identifies the interrupt that ended `run_user` (reads the GIC's IAR).
pub fn acknowledge_interrupt(_vector: u8) -> Option<u32> {
    gic::acknowledge()
}

/// Sleeps (`wfi`) until an interrupt arrives and returns its id, for the
/// scheduler's idle; the caller ends it with [`end_interrupt`].
///
/// The kernel keeps IRQs masked (PSTATE.I) throughout: a pending IRQ still
/// ends `wfi` (the Arm ARM's WFI wake-up events include an IRQ that PSTATE
/// masks), so no exception is taken at EL1; the GIC's IAR names the
/// interrupt. One pending before the `wfi` makes it return at once, so none
/// is lost between the decision to idle and the sleep.
pub fn wait_for_interrupt() -> u32 {
    loop {
        // SAFETY: `dsb sy` completes earlier writes (an end-of-interrupt,
        // a device register) before the core sleeps; `wfi` only waits, and
        // with IRQs masked it returns on a pending interrupt without taking it.
        unsafe { core::arch::asm!("dsb sy", "wfi", options(nostack, preserves_flags)) };
        if let Some(id) = gic::acknowledge() {
            return id;
        }
    }
}

/// The interrupt an IOMMU fault event is delivered as: the SMMUv3
/// event-queue interrupt, a wired edge SPI (74 on virt, INTID 106).
pub const IOMMU_FAULT_IRQ: u32 = 32 + 74;

/// The interrupt a page request is delivered as: the SMMUv3 PRI-queue
/// interrupt, the SPI after the event queue's (75 on virt's layout:
/// eventq, priq, cmdq-sync, gerror). Enabled only where the unit has a
/// PRI queue (QEMU has none).
pub const IOMMU_PAGE_REQUEST_IRQ: u32 = IOMMU_FAULT_IRQ + 1;

/// Enables delivery of shared interrupt `id` to this CPU.
pub fn enable_interrupt(id: u32) {
    gic::enable_spi(id);
}

/// Whether interrupt `id` is waiting at the interrupt controller.
#[cfg(feature = "self-tests")]
pub fn interrupt_pending(id: u32) -> bool {
    gic::pending(id)
}

/// Drops interrupt `id`'s pending state (it was consumed by polling).
#[cfg(feature = "self-tests")]
pub fn clear_interrupt(id: u32) {
    gic::clear_pending(id);
}

/// Ends the handling of interrupt `id` so another can arrive.
pub fn end_interrupt(id: u32) {
    gic::end_of_interrupt(id);
}

/// The EL1 physical timer's interrupt: a line user handlers may own.
const USER_TIMER_IRQ: u16 = 30;

/// Whether user handlers may own interrupt line `line` (a GIC INTID): the
/// physical timer and the shared peripheral interrupts, except the SMMU's.
pub fn irq_line_available(line: u16) -> bool {
    let smmu = (IOMMU_FAULT_IRQ..IOMMU_FAULT_IRQ + 4).contains(&u32::from(line));
    (line == USER_TIMER_IRQ || (32..1020).contains(&line)) && !smmu
}

/// The doorbell a device writes to raise line `line` (physical address
/// of GICv2m's `MSI_SETSPI`) and the data (the line's INTID), if the line
/// is one of the GICv2m frame's SPIs. The caller maps the doorbell into
/// the device's IoSpace (`io_space::map_msi_doorbell`); GICv2m cannot tell
/// devices apart, so `requester` checks nothing here (kernel/README.md,
/// "MSIs on aarch64").
pub fn bind_msi_line(line: u16, _requester: u16) -> Option<(u64, u32)> {
    gic::msi_doorbell(u32::from(line)).map(|doorbell| (doorbell, u32::from(line)))
}

/// The interrupt id line `line` arrives as (the INTID itself).
pub fn irq_line_id(line: u16) -> u32 {
    u32::from(line)
}

/// Line `line` has no handler any more (nothing beyond masking on aarch64).
pub fn irq_line_release(_line: u16) {}

/// Lets line `line` interrupt (`true`) or masks it.
pub fn irq_line_enable(line: u16, enabled: bool) {
    if enabled && line >= 32 {
        gic::enable_spi(u32::from(line));
    } else {
        gic::set_enabled(u32::from(line), enabled);
    }
}
