//! `cargo xtask fuzz-host`: coverage-guided fuzzing, on the host, of every
//! parser of bytes the kernel or init does not control (the kernel's own
//! firmware and boot-module parsers through the `firmware` crate) (the cargo-fuzz
//! project in `tools/fuzz`, one libFuzzer target per parser; the table
//! below).
//!
//! Nightly Rust is needed (libFuzzer's instrumentation); cargo-fuzz is
//! installed with `cargo install cargo-fuzz` when missing. Targets run one
//! after another (the machine is shared): each starts from its checked-in
//! seeds (`tools/fuzz/corpus/<target>/`, only read) plus what earlier runs
//! found (`target/fuzz/corpus/<target>/`, where libFuzzer writes), logs to
//! `target/fuzz/logs/<target>.log`, and leaves a crashing input under
//! `target/fuzz/artifacts/<target>/`. What is printed per target comes from
//! libFuzzer's `-print_final_stats=1` lines.
//!
//! Built with `--sanitizer none`: every crate under test is safe Rust
//! (`forbid(unsafe_code)`, or unsafe only in bare-metal builds), so
//! AddressSanitizer would find nothing a panic does not and would cost
//! half the speed; `--debug-assertions` keeps overflow checks, so an
//! arithmetic overflow is a crash too.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::error::{Error, Result};

/// One fuzz target: its name (the file `tools/fuzz/fuzz_targets/<name>.rs`)
/// and the longest input libFuzzer builds for it.
pub struct Target {
    /// The target's name.
    pub name: &'static str,
    /// libFuzzer's `-max_len`: the seeds' size and then some.
    pub max_len: usize,
}

/// Every target; each file's `//!` says what it fuzzes and asserts.
pub const TARGETS: &[Target] = &[
    Target {
        name: "archive",
        max_len: 32 << 10,
    },
    Target {
        name: "description",
        max_len: 4096,
    },
    Target {
        name: "init_image",
        max_len: 32 << 10,
    },
    Target {
        name: "elf_load",
        max_len: 4096,
    },
    Target {
        name: "ipc_message",
        max_len: 64,
    },
    Target {
        name: "image_toml",
        max_len: 8192,
    },
    Target {
        name: "image_platform",
        max_len: 4096,
    },
    Target {
        name: "image_live",
        max_len: 16 << 10,
    },
    Target {
        name: "image_elf",
        max_len: 4096,
    },
    Target {
        name: "smmu_events",
        max_len: 4096,
    },
    Target {
        name: "vtd_faults",
        max_len: 4096,
    },
    Target {
        name: "vtd_dmar",
        max_len: 4096,
    },
    Target {
        name: "vtd_shadow",
        max_len: 8192,
    },
    Target {
        name: "acpi",
        max_len: 4096,
    },
    Target {
        name: "devicetree",
        max_len: 8192,
    },
    Target {
        name: "boot_module",
        max_len: 32 << 10,
    },
    Target {
        name: "cmdline",
        max_len: 512,
    },
];

/// How long each target runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// `-max_total_time`, seconds.
    pub seconds: Option<u64>,
    /// `-runs`, executions.
    pub runs: Option<u64>,
}

impl Budget {
    /// Executions per target when neither a time nor a count is given.
    pub const DEFAULT_RUNS: u64 = 1_000_000;

    /// libFuzzer's options for this budget.
    fn arguments(self) -> Vec<String> {
        let runs = match (self.seconds, self.runs) {
            (None, None) => Some(Self::DEFAULT_RUNS),
            (_, runs) => runs,
        };
        let mut arguments = Vec::new();
        if let Some(runs) = runs {
            arguments.push(format!("-runs={runs}"));
        }
        if let Some(seconds) = self.seconds {
            arguments.push(format!("-max_total_time={seconds}"));
        }
        arguments
    }
}

/// What one run of a target came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `stat::number_of_executed_units`, if libFuzzer printed it.
    pub executions: Option<u64>,
    /// Seconds of fuzzing (libFuzzer's `Done N runs in S second(s)`).
    pub seconds: Option<u64>,
    /// Crashing inputs written (libFuzzer stops at the first).
    pub crashes: u64,
    /// Where the crashing input was written.
    pub artifact: Option<String>,
}

/// Reads libFuzzer's output: the final stats line, and whether (and where)
/// it wrote a crashing, leaking, timing-out or out-of-memory input.
pub fn parse_output(output: &str) -> Outcome {
    let executions = output.lines().rev().find_map(|line| {
        line.trim()
            .strip_prefix("stat::number_of_executed_units:")
            .and_then(|count| count.trim().parse().ok())
    });
    let seconds = output.lines().rev().find_map(|line| {
        let (_, rest) = line.strip_prefix("Done ")?.split_once(" runs in ")?;
        rest.strip_suffix(" second(s)")?.trim().parse().ok()
    });
    let artifacts: Vec<&str> = output
        .lines()
        .filter_map(|line| {
            let (_, path) = line.split_once("Test unit written to ")?;
            Some(path.trim())
        })
        .collect();
    let died = output
        .lines()
        .any(|line| line.starts_with("==") && line.contains("ERROR: libFuzzer"));
    Outcome {
        executions,
        seconds,
        crashes: (artifacts.len() as u64).max(u64::from(died)),
        artifact: artifacts.last().map(|path| path.to_string()),
    }
}

/// Runs the selected targets (all when `only` is `None`) one after another
/// and prints per target its executions and crashes, then a summary line.
/// `Ok(false)` when any target crashed.
pub fn run(root: &Path, only: Option<&str>, budget: Budget) -> Result<bool> {
    let selected: Vec<&Target> = match only {
        Some(name) => vec![
            TARGETS
                .iter()
                .find(|target| target.name == name)
                .ok_or_else(|| {
                    Error::new(
                        format!("unknown fuzz target `{name}`"),
                        format!(
                            "use --target with one of: {}",
                            TARGETS
                                .iter()
                                .map(|target| target.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?,
        ],
        None => TARGETS.iter().collect(),
    };
    nightly(root)?;
    cargo_fuzz(root)?;
    let mut total_executions = 0;
    let mut total_crashes = 0;
    for target in &selected {
        let outcome = run_target(root, target, budget)?;
        let executions = outcome
            .executions
            .map_or_else(|| "? (no final stats)".to_string(), |n| n.to_string());
        let seconds = outcome
            .seconds
            .map_or_else(String::new, |seconds| format!(" in {seconds} s"));
        print!(
            "fuzz-host: {}: {executions} executions{seconds}, {} crash{}",
            target.name,
            outcome.crashes,
            if outcome.crashes == 1 { "" } else { "es" }
        );
        match &outcome.artifact {
            Some(path) => {
                let replay = [
                    "cargo",
                    "+nightly",
                    "fuzz",
                    "run",
                    "--fuzz-dir",
                    "tools/fuzz",
                    "-a",
                    "-s",
                    "none",
                    target.name,
                    path,
                ]
                .map(str::to_string);
                println!(" (input: {path}; replay: {})", crate::shell_words(&replay))
            }
            None => println!(),
        }
        total_executions += outcome.executions.unwrap_or(0);
        total_crashes += outcome.crashes;
    }
    println!(
        "fuzz-host: {} target{}, {total_executions} executions, {total_crashes} crash{}",
        selected.len(),
        if selected.len() == 1 { "" } else { "s" },
        if total_crashes == 1 { "" } else { "es" }
    );
    Ok(total_crashes == 0)
}

/// Builds and runs one target; its output goes to its log.
fn run_target(root: &Path, target: &Target, budget: Budget) -> Result<Outcome> {
    let work = root.join("target/fuzz/corpus").join(target.name);
    let artifacts = root.join("target/fuzz/artifacts").join(target.name);
    let logs = root.join("target/fuzz/logs");
    for dir in [&work, &artifacts, &logs] {
        fs::create_dir_all(dir).map_err(|error| {
            Error::new(
                format!("cannot create {}: {error}", dir.display()),
                "check the permissions of target/",
            )
        })?;
    }
    let seeds = root.join("tools/fuzz/corpus").join(target.name);
    let log = logs.join(format!("{}.log", target.name));
    eprintln!("xtask: fuzzing {} (log: {})", target.name, log.display());
    let started = Instant::now();
    let output = Command::new("cargo")
        .args(["+nightly", "fuzz", "run", "--fuzz-dir", "tools/fuzz"])
        .args(["--debug-assertions", "--sanitizer", "none"])
        .arg(target.name)
        .arg(&work)
        .arg(&seeds)
        .arg("--")
        .arg("-print_final_stats=1")
        .arg(format!("-max_len={}", target.max_len))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(budget.arguments())
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| {
            Error::new(
                format!("cannot start cargo +nightly fuzz: {error}"),
                "install cargo-fuzz with `cargo install cargo-fuzz`",
            )
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    fs::write(&log, &text).map_err(|error| {
        Error::new(
            format!("cannot write {}: {error}", log.display()),
            "check the permissions of target/",
        )
    })?;
    let outcome = parse_output(&text);
    eprintln!(
        "xtask: {} ran {:.0} s",
        target.name,
        started.elapsed().as_secs_f64()
    );
    if !output.status.success() && outcome.crashes == 0 {
        return Err(Error::new(
            format!(
                "fuzz target {} failed without a crashing input ({})",
                target.name, output.status
            ),
            format!("read {}", log.display()),
        ));
    }
    Ok(outcome)
}

/// Whether `program args` runs and succeeds (its output discarded).
fn succeeds(root: &Path, program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Checks that rustup has a nightly toolchain.
fn nightly(root: &Path) -> Result<()> {
    if succeeds(root, "rustup", &["run", "nightly", "rustc", "--version"]) {
        Ok(())
    } else {
        Err(Error::new(
            "no nightly Rust toolchain (libFuzzer's instrumentation needs one)",
            "run `rustup toolchain install nightly`",
        ))
    }
}

/// Installs cargo-fuzz when `cargo +nightly fuzz` is missing.
fn cargo_fuzz(root: &Path) -> Result<()> {
    if succeeds(root, "cargo", &["+nightly", "fuzz", "--version"]) {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz (cargo install cargo-fuzz)");
    let installed = Command::new("cargo")
        .args(["install", "cargo-fuzz"])
        .current_dir(root)
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        Ok(())
    } else {
        Err(Error::new(
            "cargo install cargo-fuzz failed",
            "install it by hand with `cargo install cargo-fuzz`",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_run_counts_its_executions() {
        let output = "\
#1000000\tDONE   cov: 310 ft: 900 corp: 80/2Kb lim: 64 exec/s: 50000 rss: 60Mb
Done 1000000 runs in 20 second(s)
stat::number_of_executed_units: 1000000
stat::average_exec_per_sec:     50000
stat::new_units_added:          12
";
        assert_eq!(
            parse_output(output),
            Outcome {
                executions: Some(1_000_000),
                seconds: Some(20),
                crashes: 0,
                artifact: None
            }
        );
    }

    #[test]
    fn a_crash_names_its_input() {
        let output = "\
thread '<unnamed>' panicked at fuzz_targets/archive.rs:20:5
==1234== ERROR: libFuzzer: deadly signal
MS: 1 ChangeBit-; base unit: 0
artifact_prefix='target/fuzz/artifacts/archive/'; Test unit written to target/fuzz/artifacts/archive/crash-abc
stat::number_of_executed_units: 4711
";
        assert_eq!(
            parse_output(output),
            Outcome {
                executions: Some(4711),
                seconds: None,
                crashes: 1,
                artifact: Some("target/fuzz/artifacts/archive/crash-abc".to_string())
            }
        );
    }

    #[test]
    fn the_default_budget_is_a_million_runs() {
        let default = Budget {
            seconds: None,
            runs: None,
        };
        assert_eq!(default.arguments(), ["-runs=1000000"]);
        let timed = Budget {
            seconds: Some(60),
            runs: None,
        };
        assert_eq!(timed.arguments(), ["-max_total_time=60"]);
    }

    #[test]
    fn every_target_has_a_source_file_and_seeds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for target in TARGETS {
            let source = root.join(format!("tools/fuzz/fuzz_targets/{}.rs", target.name));
            assert!(source.is_file(), "{}", source.display());
            let seeds = root.join("tools/fuzz/corpus").join(target.name);
            let count = fs::read_dir(&seeds).map_or(0, |dir| dir.count());
            assert!(count > 0, "no seeds in {}", seeds.display());
        }
        let sources = fs::read_dir(root.join("tools/fuzz/fuzz_targets")).expect("fuzz_targets/");
        for source in sources.flatten() {
            let path = source.path();
            let name = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .unwrap_or("");
            assert!(
                TARGETS.iter().any(|target| target.name == name),
                "{} is not in TARGETS",
                path.display()
            );
        }
    }
}
