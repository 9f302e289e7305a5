//! Seeded bugs: deliberate flaws the system tests must catch, each switched
//! on by `seed=NAME` on the command line of a kernel built with the
//! `seeded-bugs` feature (`cargo build --profile seeded --features
//! seeded-bugs -p kernel`, what `cargo xtask test` boots for its
//! `*-seeded-*` configurations).
//!
//! Every seed is checked in one place, `planted(Seed::X)`, at the edge of
//! the operation it breaks (never inside a fast path's loop). Without the
//! feature [`planted`] is `const false`: each seeded branch is dead code the
//! compiler removes, and the kernel holds neither the parsing, the planted
//! set nor the seeds' names; a `seed=` word on its command line switches
//! nothing. `cargo xtask test` checks the release ELF for that
//! (`release_kernel_has_no_seeded_bugs`).

/// One seeded bug: what it breaks, and the test that must then fail (the
/// `must_fail` of its `*-seeded-*` row in `tools/xtask/system-tests.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seed {
    /// `iommu-off`: boot leaves the IOMMU untouched, so DMA is not blocked;
    /// the boot self-test `dma_blocked_by_default` fails.
    IommuOff,
    /// `no-preemption`: the timer no longer rotates the running thread; the
    /// `threads` test `spinning_thread_is_preempted` never finishes.
    NoPreemption,
    /// `stale-lookup-cache`: capability changes leave the generation alone,
    /// so threads keep using capabilities that were deleted; the `threads`
    /// test `a_deleted_capability_stops_working_at_once` fails.
    StaleLookupCache,
    /// `irq-stays-bound`: deleting an IRQ handler leaves its line bound to
    /// the notification; the `irq` test `deleting_the_handler_frees_the_line`
    /// fails.
    IrqStaysBound,
    /// `no-intremap` (x86_64): VT-d interrupt remapping stays off, so any
    /// device raises any vector; the `edu` test
    /// `msi_cannot_be_forged_by_another_device` fails.
    #[cfg(target_arch = "x86_64")]
    NoIntremap,
    /// `io-skip-invalidation`: IOTLB invalidations are skipped, so stale
    /// entries outlive unmaps; the `edu` test
    /// `nothing_lands_after_unmap_returns` fails.
    IoSkipInvalidation,
    /// `io-stage2-identity`: every IoSpace also maps 2 MiB of RAM it holds no
    /// capability for at IPA = PA, so stage 2 no longer confines stage 1;
    /// the `edu` test `malicious_stage1_is_blocked` fails.
    IoStage2Identity,
    /// `io-device-survives-delete`: clearing a device entry is skipped, so a
    /// deleted IoDevice keeps translating; the `edu` test
    /// `deleting_the_device_blocks_it` fails.
    IoDeviceSurvivesDelete,
    /// `dangling-references`: when an object dies, the kernel keeps its
    /// references to it from threads (fault endpoint, a server's pending
    /// reply), interrupt lines and IO fault queues (their notification);
    /// the `hardening` tests `deleted_fault_endpoint_is_never_written`,
    /// `deleted_irq_notification_is_never_signalled` and
    /// `reply_to_a_dead_caller_writes_nothing` and the `edu` test
    /// `deleted_notification_is_never_signalled` fail (the kernel writes
    /// into the Frame that took the dead object's memory).
    DanglingReferences,
    /// `leak-cpu-leaf`: unmapping a Frame from a CPU address space (its
    /// `Frame.Unmap`, delete or revoke) leaves the leaf in the page table,
    /// so the memory stays reachable after the model forgot the mapping;
    /// the fuzzer's abstraction check (`syscall_fuzzer`) fails.
    LeakCpuLeaf,
    /// `sva-skip-invalidation`: a CPU unmap in a VSpace a device is bound
    /// to (SVA) leaves the device's IOTLB alone, so its cached
    /// translation outlives the unmap; the `sva` test
    /// `nothing_lands_after_frame_unmap` fails.
    SvaSkipInvalidation,
    /// `dirty-skip-flush`: `IoSpace.ReadDirty` with clear returns without
    /// invalidating the IoSpace's translations, so a page the device
    /// wrote before the clear is written again through its cached
    /// translation without setting D; the `dirty` test
    /// `written_after_a_clear_is_reported_next_round` fails.
    DirtySkipFlush,
    /// `msi-window-open`: `IoSpace.Map` and `BindUserTable` no longer
    /// refuse the MSI window by name (x86_64: a Frame maps at
    /// `0xFEE0_0000`; aarch64: the capability model's reserved-window check
    /// answers `InvalidAddress`); the `edu` test
    /// `msi_window_cannot_be_mapped` fails.
    MsiWindowOpen,
    /// `no-msi-doorbell` (aarch64): `IrqHandler.MsiMessage` answers the
    /// doorbell IPA without mapping the GICv2m doorbell there, so the
    /// device's MSI write faults in stage 2; the `edu` test
    /// `msi_signals_dma_completion` fails.
    #[cfg(target_arch = "aarch64")]
    NoMsiDoorbell,
    /// `continue-after-invocation`: every invocation the general path
    /// performs is answered as the fast paths' are (`syscall::Next::Continue`:
    /// the caller runs again without the scheduler's pick), though it may
    /// have made another thread ready; the `threads` test
    /// `a_thread_an_invocation_readies_runs_before_its_caller` fails.
    ContinueAfterInvocation,
}

/// Whether `seed` is planted: always `false` in a kernel without the
/// `seeded-bugs` feature, so the branches it guards compile away.
#[cfg(not(feature = "seeded-bugs"))]
#[inline(always)]
pub const fn planted(_: Seed) -> bool {
    false
}

#[cfg(feature = "seeded-bugs")]
pub use planting::{plant, planted};

/// The planted set and the `seed=` parsing: only in the seeded kernel.
#[cfg(feature = "seeded-bugs")]
mod planting {
    use core::sync::atomic::{AtomicU32, Ordering};

    use super::Seed;
    use firmware::cmdline::Cmdline;

    /// Every seed, in the order boot reports them.
    const ALL: &[Seed] = &[
        Seed::IommuOff,
        Seed::NoPreemption,
        Seed::StaleLookupCache,
        Seed::IrqStaysBound,
        #[cfg(target_arch = "x86_64")]
        Seed::NoIntremap,
        Seed::IoSkipInvalidation,
        Seed::IoStage2Identity,
        Seed::IoDeviceSurvivesDelete,
        Seed::DanglingReferences,
        Seed::LeakCpuLeaf,
        Seed::SvaSkipInvalidation,
        Seed::DirtySkipFlush,
        Seed::MsiWindowOpen,
        #[cfg(target_arch = "aarch64")]
        Seed::NoMsiDoorbell,
        Seed::ContinueAfterInvocation,
    ];

    /// One bit per planted seed (bit `Seed as u32`). Written once at boot,
    /// before anything reads it.
    static PLANTED: AtomicU32 = AtomicU32::new(0);

    impl Seed {
        /// The name `seed=` takes.
        fn name(self) -> &'static str {
            match self {
                Seed::IommuOff => "iommu-off",
                Seed::NoPreemption => "no-preemption",
                Seed::StaleLookupCache => "stale-lookup-cache",
                Seed::IrqStaysBound => "irq-stays-bound",
                #[cfg(target_arch = "x86_64")]
                Seed::NoIntremap => "no-intremap",
                Seed::IoSkipInvalidation => "io-skip-invalidation",
                Seed::IoStage2Identity => "io-stage2-identity",
                Seed::IoDeviceSurvivesDelete => "io-device-survives-delete",
                Seed::DanglingReferences => "dangling-references",
                Seed::LeakCpuLeaf => "leak-cpu-leaf",
                Seed::SvaSkipInvalidation => "sva-skip-invalidation",
                Seed::DirtySkipFlush => "dirty-skip-flush",
                Seed::MsiWindowOpen => "msi-window-open",
                #[cfg(target_arch = "aarch64")]
                Seed::NoMsiDoorbell => "no-msi-doorbell",
                Seed::ContinueAfterInvocation => "continue-after-invocation",
            }
        }

        /// What the planted seed breaks, for the boot log.
        fn breaks(self) -> &'static str {
            match self {
                Seed::IommuOff => "the IOMMU is left off",
                Seed::NoPreemption => "the timer does not preempt",
                Seed::StaleLookupCache => "capability changes leave cached lookups valid",
                Seed::IrqStaysBound => "deleted IRQ handlers stay bound",
                #[cfg(target_arch = "x86_64")]
                Seed::NoIntremap => "interrupt remapping is left off",
                Seed::IoSkipInvalidation => "IOTLB invalidations are skipped",
                Seed::IoStage2Identity => "every IoSpace maps foreign RAM at IPA = PA",
                Seed::IoDeviceSurvivesDelete => "deleted IoDevices keep translating",
                Seed::DanglingReferences => "references to dead objects are kept",
                Seed::LeakCpuLeaf => "CPU leaves outlive their unmapping",
                Seed::SvaSkipInvalidation => "a bound device's IOTLB outlives CPU unmaps",
                Seed::DirtySkipFlush => "ReadDirty's clear is not followed by an invalidation",
                Seed::MsiWindowOpen => "the MSI window is not refused by name",
                #[cfg(target_arch = "aarch64")]
                Seed::NoMsiDoorbell => "the MSI doorbell is never mapped",
                Seed::ContinueAfterInvocation => "invocations skip the scheduler's pick",
            }
        }

        fn bit(self) -> u32 {
            1 << self as u32
        }
    }

    /// Plants every seed `cmdline`'s `seed=` lists (comma-separated) and
    /// says so; a name that is no seed of this architecture is reported and
    /// ignored. Called once at boot, before the IOMMU comes up.
    pub fn plant(cmdline: &Cmdline<'_>) {
        let Some(names) = cmdline.get("seed") else {
            return;
        };
        for name in names.split(',') {
            match ALL.iter().find(|seed| seed.name() == name) {
                Some(&seed) => {
                    crate::println!("[boot] SEEDED BUG: {} (seed={name})", seed.breaks());
                    PLANTED.fetch_or(seed.bit(), Ordering::Relaxed);
                }
                None => crate::println!("[boot] seed={name}: no such seeded bug here, ignored"),
            }
        }
    }

    /// Whether `seed` is planted.
    pub fn planted(seed: Seed) -> bool {
        PLANTED.load(Ordering::Relaxed) & seed.bit() != 0
    }
}
