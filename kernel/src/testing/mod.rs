//! Code only test kernels contain: a release kernel compiles this folder
//! down to one check of the command line.
//!
//! - `seeds.rs`: the seeded bugs (feature `seeded-bugs`, profile `seeded`).
//! - `abstraction.rs`: the abstraction check behind `DebugCheckAbstraction`
//!   (feature `fuzz-checks`, profile `fuzz`; the seeded kernel has it too).
//! - `selftest.rs`, `boot_tests.rs`, `xcheck.rs`, `edu.rs`, `dma_page.rs`:
//!   the boot self-tests (`tests=boot`, `tests=trap`, `tests=root-task`),
//!   the IOMMU cross-check (`tests=xcheck`) and the kernel-mode edu driver
//!   both program DMA with (feature `self-tests`, profile `self-tests`; the
//!   seeded kernel has them too, for `tests=boot seed=iommu-off`).
//! - `bench.rs`: the kernel's own benchmarks, `bench=NAME,...` (feature
//!   `bench`, profile `benchmarks`: cargo's built-in `bench` profile would
//!   share the release kernel's folder).
//! - `cap_dump.rs`: `DebugCapDump`, the live derivation tree (feature
//!   `cap-dump`, profile `cap-dump`).
//!
//! Everything here is behind a cargo feature of the kernel crate, or (like
//! [`seeds::planted`]) is a constant the compiler folds away without it, so
//! `cargo build --release -p kernel` carries none of it: the suite's
//! `release_kernel_has_no_seeded_bugs` reads the release ELF's symbol table
//! and fails on any of these modules' functions. The test kernels have
//! profiles of their own (root Cargo.toml) and never replace the release
//! kernel. A kernel without a feature answers the command line that asks
//! for it with one `[boot]` line and a failure status, never by running
//! anything.

#[cfg(feature = "fuzz-checks")]
pub mod abstraction;
#[cfg(feature = "bench")]
mod bench;
#[cfg(feature = "self-tests")]
mod boot_tests;
#[cfg(feature = "cap-dump")]
pub mod cap_dump;
#[cfg(feature = "self-tests")]
mod dma_page;
#[cfg(feature = "self-tests")]
mod edu;
pub mod seeds;
#[cfg(feature = "self-tests")]
pub mod selftest;
#[cfg(feature = "self-tests")]
mod xcheck;

use crate::boot_types::Discovered;
use crate::frames::BootFrames;
use firmware::cmdline::Cmdline;

/// The `tests=` suites a kernel without self-tests refuses (`tests=user`
/// and `tests=image` are the boot module's programs, run on any kernel;
/// `tests=root-task` it ignores, see [`root_task_status`]).
#[cfg(not(feature = "self-tests"))]
const SELF_TEST_SUITES: [&str; 3] = ["boot", "trap", "xcheck"];

/// Runs what the command line asks of a test kernel, before any boot
/// module: `bench=NAMES`, `tests=trap`, `tests=xcheck` or `tests=boot`, and
/// leaves QEMU with its status. Returns when the command line asks for none
/// of them (or only for `tests=root-task`, judged by [`root_task_status`]
/// once the root task halts). A kernel built without the feature a request
/// needs says so in one line and exits with [`crate::EXIT_TESTS_FAILED`].
pub fn run_requested(cmdline: &Cmdline<'_>, found: &Discovered, frames: &mut BootFrames) {
    if let Some(names) = cmdline.get("bench") {
        #[cfg(feature = "bench")]
        crate::exit(bench::run(names, frames));
        #[cfg(not(feature = "bench"))]
        missing("bench=", names, "benchmarks", "bench", "benchmarks");
    }
    #[cfg(feature = "self-tests")]
    {
        if cmdline.lists("tests", "trap") {
            boot_tests::trap();
        }
        if cmdline.lists("tests", "xcheck") {
            crate::exit(xcheck::run(found, frames));
        }
        if cmdline.lists("tests", "boot") {
            crate::exit(boot_tests::run(cmdline, found, frames));
        }
    }
    #[cfg(not(feature = "self-tests"))]
    {
        let _ = (found, &frames);
        let asked = SELF_TEST_SUITES
            .into_iter()
            .find(|suite| cmdline.lists("tests", suite));
        if let Some(suite) = asked {
            missing("tests=", suite, "self-tests", "self-tests", "self-tests");
        }
    }
}

/// The exit status once the root task halted with `status`: under
/// `tests=root-task` (self-test kernels) a one-test suite judging it,
/// otherwise `status` itself. A kernel without self-tests ignores
/// `tests=root-task`: the root task's own status is the verdict either way.
pub fn root_task_status(cmdline: &Cmdline<'_>, status: u32) -> u32 {
    #[cfg(feature = "self-tests")]
    if cmdline.lists("tests", "root-task") {
        let mut suite = selftest::Suite::default();
        suite.run("root_task_runs_and_halts_cleanly", || {
            crate::check!(status == 0, "the root task ended with status {status}");
            Ok(())
        });
        return suite.finish();
    }
    let _ = cmdline;
    status
}

/// The one line a kernel built without `feature` (so without `what`)
/// answers `key` `value` with, then the failure exit.
#[cfg(not(all(feature = "bench", feature = "self-tests")))]
fn missing(key: &str, value: &str, what: &str, feature: &str, profile: &str) -> ! {
    crate::say!(
        "[boot] {}{}: this kernel has no {} (cargo xtask builds them with --features {} into target/<target>/{}/)",
        key,
        value,
        what,
        feature,
        profile
    );
    crate::exit(crate::EXIT_TESTS_FAILED)
}
