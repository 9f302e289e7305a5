//! `cargo xtask`: the front door for building, running and testing Portcullis.
//!
//! - `cargo xtask run`: build the kernel, boot it in QEMU with the serial
//!   console on the terminal, exit with the guest's status.
//! - `cargo xtask test`: host tests, then every QEMU system-test
//!   configuration on both architectures; one closing `N passed, N failed`.
//! - `cargo xtask fuzz`: the in-kernel random-invocation fuzzer with a
//!   chosen number of calls and seed, on one or both architectures.
//! - `cargo xtask build`: build the kernel only.
//! - `cargo xtask graph --image NAME`: draw an image's capabilities as an SVG.
//! - `cargo xtask pack --image NAME`: pack kernel, programs and description
//!   into one boot-image archive.
//! - `cargo xtask fuzz-host`: fuzz the host-buildable parsers (nightly,
//!   cargo-fuzz; `tools/fuzz`).
//!
//! Each command first sets the machine up (Rust targets, QEMU 10.0 from
//! bookworm-backports), so a fresh Debian 12 machine needs nothing else.
//! The QEMU machines are in `machines.rs`; the system-test configurations
//! are data, `system-tests.toml` beside this crate's manifest.

mod bench;
mod capdump;
mod console;
mod disk;
mod error;
mod fuzz;
mod fuzz_host;
mod image;
mod kernel;
#[cfg(test)]
mod layers;
mod machines;
mod net;
mod parse;
mod qemu;
mod setup;
mod suite;
mod xcheck;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{Error, Result};
use crate::machines::Arch;

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
struct TestArgs {
    /// Only the host tests (cargo test).
    #[arg(long, conflicts_with = "qemu_only")]
    host_only: bool,
    /// Only the QEMU system tests.
    #[arg(long)]
    qemu_only: bool,
    /// Only this architecture's QEMU configurations.
    #[arg(long)]
    arch: Option<Arch>,
    /// List the selected QEMU configurations and their command lines; run nothing.
    #[arg(long)]
    list: bool,
    /// Only host tests and QEMU configurations whose names contain this.
    filter: Option<String>,
}

/// Build, run and test Portcullis.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Build the kernel and boot it in QEMU; exits with the guest's status.
    Run {
        /// Architecture to boot.
        #[arg(long, default_value = Arch::DEFAULT.name())]
        arch: Arch,
        /// System image, the file images/<NAME>.toml.
        #[arg(long, value_name = "NAME", default_value = image::DEFAULT_IMAGE)]
        image: String,
        /// Wait for a debugger on localhost:1234 before the first instruction (QEMU -s -S).
        #[arg(long)]
        gdb: bool,
        /// Host port on 127.0.0.1 forwarded to the guest's HTTP port 80 (the
        /// next port to its echo port 7), for images with a network device.
        #[arg(long, default_value_t = net::DEFAULT_PORT)]
        port: u16,
        /// Boot the cap-dump kernel, draw its live capability derivation tree as
        /// target/images/<NAME>-<arch>-live.{dot,svg,txt} and compare it with the image.
        #[arg(long)]
        cap_dump: bool,
        /// Arguments passed to QEMU verbatim, e.g. `-- -d int`.
        #[arg(last = true, value_name = "QEMU_ARGS")]
        qemu_args: Vec<String>,
    },
    /// Run the host tests and every QEMU system-test configuration.
    Test(TestArgs),
    /// Run the kernel benchmarks under -icount and report guest instruction counts.
    Bench {
        /// Architecture to measure (both unless given).
        #[arg(long)]
        arch: Option<Arch>,
    },
    /// Run the in-kernel random-invocation fuzzer (userland/tests/fuzz) with
    /// N calls and seed S; report count, seed, outcome and wall time per
    /// architecture. Non-zero exit status on any failure.
    Fuzz {
        /// Architecture to fuzz (both unless given).
        #[arg(long)]
        arch: Option<Arch>,
        /// Number of system calls per architecture.
        #[arg(long, value_name = "N", default_value_t = fuzz::CI_CALLS, value_parser = fuzz::parse_number)]
        calls: u64,
        /// Seed of the fuzzer's random sequence (decimal or 0x-hexadecimal).
        #[arg(long, value_name = "S", default_value_t = fuzz::CI_SEED, value_parser = fuzz::parse_number)]
        seed: u64,
    },
    /// Draw an image's capability distribution as an SVG (Graphviz), under target/images/.
    Graph {
        /// System image, the file images/<NAME>.toml.
        #[arg(long, value_name = "NAME", default_value = image::DEFAULT_IMAGE)]
        image: String,
        /// Architecture whose platform (images/platforms/) the image is checked against.
        #[arg(long, default_value = Arch::DEFAULT.name())]
        arch: Arch,
    },
    /// Build the kernel and the image's programs and pack them with the
    /// description into one boot-image archive under target/images/.
    Pack {
        /// System image, the file images/<NAME>.toml.
        #[arg(long, value_name = "NAME", default_value = image::DEFAULT_IMAGE)]
        image: String,
        /// Architecture to pack for.
        #[arg(long, default_value = Arch::DEFAULT.name())]
        arch: Arch,
    },
    /// Fuzz every host-buildable parser of untrusted bytes with libFuzzer
    /// (nightly, cargo-fuzz), one target after another; print each target's
    /// executions and crashes. Fails on any crash.
    FuzzHost {
        /// Only this target (tools/fuzz/fuzz_targets/<NAME>.rs).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Stop each target after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        time: Option<u64>,
        /// Stop each target after this many executions (1000000 when
        /// neither --time nor --runs is given).
        #[arg(long, value_name = "N")]
        runs: Option<u64>,
    },
    /// Build the kernel (for both architectures unless --arch is given).
    Build {
        /// Architecture to build for.
        #[arg(long)]
        arch: Option<Arch>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = workspace_root();
    let result = match cli.command {
        Task::Run {
            arch,
            image,
            gdb,
            port,
            cap_dump,
            qemu_args,
        } => run(
            &root,
            arch,
            &image,
            Run {
                gdb,
                port,
                cap_dump,
                qemu_args: &qemu_args,
            },
        ),
        Task::Test(args) => test(&root, &args),
        Task::Build { arch } => build(&root, arch),
        Task::Bench { arch } => bench(&root, arch),
        Task::Fuzz { arch, calls, seed } => fuzz(&root, arch, calls, seed),
        Task::Graph { image, arch } => graph(&root, arch, &image),
        Task::Pack { image, arch } => pack(&root, arch, &image),
        Task::FuzzHost { target, time, runs } => fuzz_host::run(
            &root,
            target.as_deref(),
            fuzz_host::Budget {
                seconds: time,
                runs,
            },
        )
        .map(|clean| {
            if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask lives in `tools/xtask`.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// The architectures an optional `--arch` selects.
fn arches(arch: Option<Arch>) -> Vec<Arch> {
    arch.map_or_else(|| Arch::ALL.to_vec(), |arch| vec![arch])
}

fn bench(root: &Path, arch: Option<Arch>) -> Result<ExitCode> {
    let arches = arches(arch);
    setup::rust_targets(root)?;
    let machines: Vec<_> = arches.iter().map(|arch| arch.machine()).collect();
    setup::qemu(&machines)?;
    bench::run(root, &arches)?;
    Ok(ExitCode::SUCCESS)
}

fn fuzz(root: &Path, arch: Option<Arch>, calls: u64, seed: u64) -> Result<ExitCode> {
    let arches = arches(arch);
    setup::rust_targets(root)?;
    let machines: Vec<_> = arches.iter().map(|arch| arch.machine()).collect();
    setup::qemu(&machines)?;
    Ok(if fuzz::run(root, &arches, calls, seed)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn build(root: &Path, arch: Option<Arch>) -> Result<ExitCode> {
    let arches = arches(arch);
    setup::rust_targets(root)?;
    for arch in arches {
        let elf = kernel::build(root, arch)?;
        println!("{}", elf.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The options of `cargo xtask run`.
struct Run<'a> {
    gdb: bool,
    port: u16,
    cap_dump: bool,
    qemu_args: &'a [String],
}

fn run(root: &Path, arch: Arch, image: &str, options: Run<'_>) -> Result<ExitCode> {
    let Run {
        gdb,
        port,
        cap_dump,
        qemu_args,
    } = options;
    let image = image::load(root, arch, image)?;
    let machine = arch.machine();
    setup::rust_targets(root)?;
    setup::qemu(&[machine])?;
    if cap_dump {
        setup::graphviz()?;
    }
    let elf = if cap_dump {
        kernel::Kernel::CapDump.build(root, arch)?
    } else {
        kernel::build(root, arch)?
    };

    eprintln!(
        "xtask: booting image `{}` on {}: {}",
        image.name, machine.qemu, image.description
    );
    // The devices of the platform (images/platforms/), e.g. the edu at
    // 00:04.0, and the disk of an image that drives a virtio-blk.
    let (mut extra, disk) = disk::devices(&image::output_dir(root)?, arch, &image)?;
    // And the user-networking backend of an image's virtio-net.
    let ports = if net::granted(&image) {
        let ports = net::Ports::from_http(port)?;
        extra.extend(net::netdev(ports));
        Some(ports)
    } else {
        None
    };
    if gdb {
        extra.extend(["-s".to_string(), "-S".to_string()]);
        let debugger = match arch {
            Arch::X86_64 => "gdb",
            Arch::Aarch64 => "gdb-multiarch",
        };
        eprintln!("xtask: QEMU waits for a debugger; in another terminal run:");
        eprintln!(
            "  {debugger} -ex 'target remote localhost:1234' {}",
            elf.display()
        );
        if arch == Arch::Aarch64 {
            eprintln!(
                "  (gdb-multiarch is Debian's package for debugging aarch64 from an x86_64 host)"
            );
        }
    }
    // The packed image is the boot module: the kernel starts its init.
    let packed = image::pack(root, arch, &image)?;
    let (module, suffix) =
        machines::module_arguments(arch, &packed.path.display().to_string(), packed.size as u64);
    extra.extend(module);
    extra.extend(qemu_args.iter().cloned());
    let cmdline = format!("image={}{suffix}", image.name);
    let args = qemu::arguments(machine, machine.run_args, &elf, &cmdline, &extra);
    let mut transcript = Vec::new();
    let run = qemu::run(machine.qemu, &args, qemu::Echo::Terminal, None, |line| {
        if cap_dump {
            transcript.push(line.to_string());
        }
        if let Some(ports) = ports.filter(|_| line.contains(net::SERVING)) {
            eprintln!(
                "xtask: the guest serves: curl http://localhost:{}/ (status page); echo: nc localhost {} (forwarded on 127.0.0.1 only)",
                ports.http, ports.echo
            );
        }
    })?;
    if cap_dump {
        let outcome = capdump::judge(root, &image, arch, &transcript)?;
        eprintln!("xtask: live capability dump: {}", outcome.call.summary);
        for file in &outcome.call.files {
            println!("{}", file.display());
        }
        match &outcome.halt {
            Some(halt) => {
                eprintln!(
                    "xtask: at DebugHalt (drawn, not compared with the image): {}",
                    halt.summary
                );
                for file in &halt.files {
                    println!("{}", file.display());
                }
            }
            None if outcome.warnings.is_empty() => {
                eprintln!("xtask: no `halt` dump: the session did not end with DebugHalt")
            }
            None => {}
        }
        for warning in &outcome.warnings {
            eprintln!("xtask: warning: {warning}");
        }
        if !outcome.mismatches.is_empty() {
            eprintln!(
                "xtask: the live system differs from images/{}.toml in {} way(s):",
                image.name,
                outcome.mismatches.len()
            );
            for mismatch in &outcome.mismatches {
                eprintln!("  {mismatch}");
            }
            return Ok(ExitCode::FAILURE);
        }
        eprintln!("xtask: the live system matches images/{}.toml", image.name);
    }
    if let Some(disk) = disk {
        match disk.verify() {
            Ok(summary) => eprintln!("xtask: {summary}"),
            Err(problem) => {
                eprintln!("xtask: the disk file is wrong: {problem}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    match qemu::guest_status(machine.exit, &run) {
        Ok(guest) => Ok(ExitCode::from(u8::try_from(guest).unwrap_or(u8::MAX))),
        Err(problem) => Err(Error::new(
            problem,
            format!(
                "check the QEMU arguments (including those after `--`): {} {}",
                machine.qemu,
                shell_words(&args)
            ),
        )),
    }
}

/// Arguments quoted for a POSIX shell (`shlex`), so a command line shown to
/// the user (a failing QEMU run, `test --list`, a cargo build, a replay) can
/// be pasted. An argument with a NUL byte cannot be quoted (nor passed to a
/// program): the list is then shown as Rust strings, with the reason.
pub fn shell_words(args: &[String]) -> String {
    shlex::try_join(args.iter().map(String::as_str))
        .unwrap_or_else(|error| format!("{args:?} ({error})"))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|error| {
        Error::new(
            format!("cannot write {}: {error}", path.display()),
            "check the permissions of the target directory",
        )
    })
}

fn graph(root: &Path, arch: Arch, image: &str) -> Result<ExitCode> {
    let image = image::load(root, arch, image)?;
    setup::graphviz()?;
    let dir = image::output_dir(root)?;
    let stem = format!("{}-{}", image.name, arch.name());
    let source = sysimage::graph::dot(&image);
    let dot = dir.join(format!("{stem}.dot"));
    write_file(&dot, source.as_bytes())?;
    let svg = dir.join(format!("{stem}.svg"));
    sysimage::graph::render_svg(&source, &svg).map_err(|error| {
        Error::new(
            format!("Graphviz could not draw {}: {error}", dot.display()),
            format!("run `dot -Tsvg {}` to see the problem", dot.display()),
        )
    })?;
    println!("{}", svg.display());
    Ok(ExitCode::SUCCESS)
}

fn pack(root: &Path, arch: Arch, image: &str) -> Result<ExitCode> {
    let image = image::load(root, arch, image)?;
    setup::rust_targets(root)?;
    let packed = image::pack(root, arch, &image)?;
    eprintln!(
        "xtask: packed image `{}` for {}: kernel, init, {} program(s) ({}), description; {} bytes",
        image.name,
        arch.name(),
        packed.programs.len(),
        packed.programs.join(", "),
        packed.size
    );
    println!("{}", packed.path.display());
    Ok(ExitCode::SUCCESS)
}

fn test(root: &Path, args: &TestArgs) -> Result<ExitCode> {
    let selection = suite::Selection {
        host: !args.qemu_only,
        qemu: !args.host_only,
        arch: args.arch,
        filter: args.filter.as_deref(),
    };
    let configs = suite::configurations(&selection)?;
    if args.list {
        for config in configs {
            let kernel = kernel::Kernel::for_configuration(config).elf_path(root, config.arch);
            let module = match (config.program.as_deref(), config.image.as_deref()) {
                (Some(program), _) => Some(kernel::package_elf(root, config.arch, program)),
                (None, Some(name)) => Some(image::packed_path(root, config.arch, name)),
                (None, None) => None,
            };
            // With the disk file an image's virtio-blk needs, written
            // afresh, so that the printed command runs as is.
            let devices = match config.image.as_deref() {
                Some(name) => {
                    let image = image::load(root, config.arch, name)?;
                    let mut devices =
                        disk::devices(&image::output_dir(root)?, config.arch, &image)?.0;
                    // The test takes two free ports at run time; shown
                    // with the default ones.
                    if net::granted(&image) {
                        devices.extend(net::netdev(net::Ports::from_http(net::DEFAULT_PORT)?));
                    }
                    devices
                }
                None => Vec::new(),
            };
            let qemu_args = suite::arguments(config, &kernel, module.as_deref(), &devices);
            println!("{} (timeout {} s)", config.name, config.timeout_secs);
            println!(
                "  {} {}",
                config.arch.machine().qemu,
                shell_words(&qemu_args)
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !configs.is_empty() {
        setup::rust_targets(root)?;
        let mut machines: Vec<_> = Arch::ALL.iter().map(|arch| arch.machine()).collect();
        machines.retain(|machine| configs.iter().any(|config| config.arch == machine.arch));
        setup::qemu(&machines)?;
        if configs.iter().any(|config| config.cap_dump) {
            setup::graphviz()?;
        }
    }
    let tally = suite::run(root, &selection)?;
    Ok(if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        let args = [
            "-append".to_string(),
            "tests=boot a=1".to_string(),
            "it's".to_string(),
        ];
        let line = shell_words(&args);
        assert_eq!(line, r#"-append 'tests=boot a=1' "it's""#);
        // What is printed splits back into the same arguments.
        assert_eq!(shlex::split(&line).as_deref(), Some(&args[..]));
        // A NUL cannot be quoted: the arguments are shown, with the reason.
        let line = shell_words(&["a\0b".to_string()]);
        assert!(line.contains("nul"), "{line}");
    }
}
