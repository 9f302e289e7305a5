//! `cargo xtask fuzz`: the in-kernel random-invocation fuzzer
//! (`userland/tests/fuzz`, booted as the root task) with a chosen number of
//! calls and seed, on one or both architectures.
//!
//! The count and the seed reach the program at build time: xtask builds it
//! with `FUZZ_CALLS` and `FUZZ_SEED` in the compiler's environment, which
//! the program reads with `option_env!` (cargo rebuilds it when they
//! change). Every build sets both, so nothing leaks in from the caller's
//! environment; `cargo xtask test` builds it with [`CI_CALLS`] and
//! [`CI_SEED`] for its `*-user-fuzz` rows.
//!
//! The run boots exactly what the `<arch>-user-fuzz` row of
//! `system-tests.toml` boots (the fuzz kernel, whose `DebugCheckAbstraction`
//! the program calls after every batch; QEMU options; command line), with a
//! timeout that grows with the count ([`timeout_secs`]), and reports per
//! architecture the count, the seed, the outcome, the wall time and the
//! program's `fuzz:` lines (the answers by status code).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::kernel;
use crate::machines::{self, Arch, SystemTest};
use crate::parse;
use crate::qemu::{self, Echo};

/// Calls per architecture in `cargo xtask test` (the `*-user-fuzz` rows).
pub const CI_CALLS: u64 = 1_000_000;
/// The seed `cargo xtask test` runs with (and `cargo xtask fuzz` without `--seed`).
pub const CI_SEED: u64 = 0x5EED_0FC0_FFEE;
/// The program's name (a workspace package) and its environment variables.
pub const PROGRAM: &str = "fuzz";
const CALLS_VARIABLE: &str = "FUZZ_CALLS";
const SEED_VARIABLE: &str = "FUZZ_SEED";

/// Seconds a run of `calls` calls may take under TCG before it counts as
/// hung: a minute for booting and the closing checks, plus 250 us per
/// call (measured on a loaded 2-core machine: about 25-40 us per call with
/// the abstraction check every 10,000 calls, so this leaves a wide
/// margin without letting a hang run for hours).
pub const fn timeout_secs(calls: u64) -> u64 {
    60 + calls / 4_000
}

/// Builds the fuzz program for `arch` with `calls` and `seed` compiled in.
pub fn build_program(root: &Path, arch: Arch, calls: u64, seed: u64) -> Result<PathBuf> {
    kernel::build_package_with_env(
        root,
        arch,
        PROGRAM,
        &[
            (CALLS_VARIABLE, calls.to_string()),
            (SEED_VARIABLE, format!("{seed:#x}")),
        ],
    )
}

/// The system-test row whose machine, command line and kernel a fuzz run
/// on `arch` uses.
fn row(arch: Arch) -> Result<&'static SystemTest> {
    machines::system_tests()?
        .iter()
        .find(|config| {
            config.arch == arch
                && config.program.as_deref() == Some(PROGRAM)
                && config.must_fail.is_empty()
        })
        .ok_or_else(|| {
            Error::new(
                format!(
                    "no {}-user-fuzz row in {}",
                    arch.name(),
                    machines::TABLE_FILE
                ),
                format!("add the row ({})", machines::TABLE_FILE),
            )
        })
}

/// How one architecture's run went.
struct Outcome {
    arch: Arch,
    passed: bool,
    why: String,
    elapsed: Duration,
}

/// Runs the fuzzer with `calls` and `seed` on each of `arches`; prints one
/// summary line per architecture. Returns whether every run passed.
pub fn run(root: &Path, arches: &[Arch], calls: u64, seed: u64) -> Result<bool> {
    let mut outcomes = Vec::new();
    for &arch in arches {
        let config = row(arch)?;
        let kernel_elf = kernel::Kernel::for_configuration(config).build(root, arch)?;
        let program = build_program(root, arch, calls, seed)?;
        outcomes.push(run_one(config, &kernel_elf, &program, calls, seed)?);
    }
    println!("fuzz: {calls} calls per architecture, seed {seed:#x}");
    for outcome in &outcomes {
        println!(
            "fuzz: {:<8} {:<6} {:>9.1} s{}",
            outcome.arch.name(),
            if outcome.passed { "ok" } else { "FAILED" },
            outcome.elapsed.as_secs_f64(),
            if outcome.why.is_empty() {
                String::new()
            } else {
                format!("  ({})", outcome.why)
            }
        );
    }
    Ok(outcomes.iter().all(|outcome| outcome.passed))
}

/// Boots one run and judges it: the program's test line passed and the
/// guest exited with status 0.
fn run_one(
    config: &SystemTest,
    kernel_elf: &Path,
    program: &Path,
    calls: u64,
    seed: u64,
) -> Result<Outcome> {
    let machine = config.arch.machine();
    let args = crate::suite::arguments(config, kernel_elf, Some(program), &[]);
    let timeout = Duration::from_secs(timeout_secs(calls));
    let prefix = format!("[{}]", config.arch.name());
    eprintln!(
        "xtask: fuzzing on {} with {calls} calls, seed {seed:#x} (timeout {} s)",
        machine.qemu,
        timeout.as_secs()
    );
    let mut verdict: Option<bool> = None;
    let mut in_failure = false;
    let started = Instant::now();
    let run = qemu::run(machine.qemu, &args, Echo::Quiet, Some(timeout), |line| {
        if let Some(test) = parse::test_line(line) {
            verdict = Some(verdict.unwrap_or(true) && test.passed);
            in_failure = !test.passed;
            println!("{prefix} {line}");
        } else if line.starts_with("fuzz:")
            || line.starts_with("[abstraction]")
            || line.contains("SEEDED BUG")
            || in_failure
            || parse::exit_line(line).is_some()
        {
            println!("{prefix} {line}");
        }
    })?;
    let elapsed = started.elapsed();
    let status = qemu::guest_status(machine.exit, &run);
    let why = match (verdict, &status) {
        (Some(true), Ok(0)) => String::new(),
        (Some(false), _) => "the fuzzer reported a failure".to_string(),
        (_, Err(problem)) => problem.clone(),
        (None, Ok(guest)) => format!("the guest exited ({guest}) without the fuzzer's test line"),
        (Some(true), Ok(guest)) => format!("the guest exited with status {guest}"),
    };
    if !why.is_empty() {
        println!("{prefix} last {} serial lines:", run.tail.len());
        for line in &run.tail {
            println!("{prefix} | {line}");
        }
        println!(
            "{prefix} QEMU: {} {}",
            machine.qemu,
            crate::shell_words(&args)
        );
    }
    Ok(Outcome {
        arch: config.arch,
        passed: why.is_empty(),
        why,
        elapsed,
    })
}

/// Parses a `--seed` value: decimal or `0x`-prefixed hexadecimal.
pub fn parse_number(text: &str) -> std::result::Result<u64, String> {
    let text = text.replace('_', "");
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|error| format!("`{text}` is not a number: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_both_bases() {
        assert_eq!(parse_number("1000000"), Ok(1_000_000));
        assert_eq!(parse_number("10_000_000"), Ok(10_000_000));
        assert_eq!(parse_number("0x5EED_0FC0_FFEE"), Ok(CI_SEED));
        assert!(parse_number("seed").is_err());
    }

    #[test]
    fn the_timeout_grows_with_the_count() {
        assert!(timeout_secs(0) >= 60);
        assert!(timeout_secs(10_000_000) > timeout_secs(1_000_000));
        // Ten million calls must fit: measured well under 40 us per call.
        assert!(timeout_secs(10_000_000) as f64 > 10_000_000.0 * 40e-6);
    }

    /// The table writes the fuzz rows' timeout as a number (310):
    /// [`timeout_secs`] of CI's count, on every row that boots the fuzzer.
    #[test]
    fn every_architecture_has_a_fuzz_row() {
        for arch in Arch::ALL {
            row(arch).unwrap();
        }
        for config in machines::system_tests()
            .unwrap()
            .iter()
            .filter(|config| config.program.as_deref() == Some(PROGRAM))
        {
            assert_eq!(
                config.timeout_secs,
                timeout_secs(CI_CALLS),
                "{}",
                config.name
            );
        }
    }
}
