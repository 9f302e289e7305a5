//! Timing from user space with the cycle counter (x86_64 `rdtsc`, aarch64
//! `cntvct_el0`). Under QEMU's `-icount shift=0,sleep=off` the counter
//! advances one tick per guest instruction, so differences are instruction
//! counts, identical from run to run. Benchmark programs print
//! `bench NAME instructions=N` lines for `cargo xtask bench`.

/// The cycle counter.
#[allow(unsafe_code)]
pub fn counter() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc reads the time-stamp counter; user mode may (CR4.TSD = 0).
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(target_arch = "aarch64")]
    {
        let value: u64;
        // SAFETY: the kernel lets EL0 read the virtual counter (CNTKCTL_EL1.EL0VCTEN).
        unsafe {
            core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) value, options(nomem, nostack))
        };
        value
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        0
    }
}

/// Whether [`io_counter`] counts instructions with the PMU: on aarch64,
/// when the kernel lets user code read the event counters
/// (PMUSERENR_EL0.ER, which EL0 may read: only the benchmark kernel sets
/// it, with event counter 0 counting INST_RETIRED system-wide).
#[allow(unsafe_code)]
pub fn pmu_counting() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        let enabled: u64;
        // SAFETY: EL0 may read PMUSERENR_EL0; no memory is touched.
        unsafe {
            core::arch::asm!("mrs {}, pmuserenr_el0", out(reg) enabled, options(nomem, nostack))
        };
        enabled & (1 << 3) != 0
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}

/// The counter the block I/O benchmarks (drivers and their client) time
/// with: with [`pmu_counting`], PMU event counter 0 (INST_RETIRED: every
/// instruction the CPU retires, kernel and every domain included, and
/// nothing while it sleeps in WFI, so under `-icount shift=0,sleep=on` a
/// driver that sleeps for its interrupt is counted without the device's
/// time); else [`counter`].
#[allow(unsafe_code)]
pub fn io_counter() -> u64 {
    #[cfg(target_arch = "aarch64")]
    if pmu_counting() {
        let value: u64;
        // SAFETY: PMUSERENR_EL0.ER lets EL0 read the event counters.
        unsafe {
            core::arch::asm!("isb", "mrs {}, pmevcntr0_el0", out(reg) value, options(nomem, nostack))
        };
        return value;
    }
    counter()
}

/// Batches [`measure`] takes (the median is reported).
pub const BATCHES: usize = 7;

/// Median over [`BATCHES`] of (counter ticks of `operations` x `operation`
/// minus the same loop without it), per operation.
pub fn measure(operations: u64, mut operation: impl FnMut()) -> u64 {
    let mut samples = [0u64; BATCHES];
    for sample in &mut samples {
        let start = counter();
        for _ in 0..operations {
            operation();
        }
        let with = counter() - start;
        let start = counter();
        for _ in 0..operations {
            core::hint::black_box(());
        }
        let without = counter() - start;
        *sample = with.saturating_sub(without) / operations.max(1);
    }
    samples.sort_unstable();
    samples[BATCHES / 2]
}
