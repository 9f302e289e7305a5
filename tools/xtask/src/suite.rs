//! `cargo xtask test`: host tests, then every QEMU system-test configuration,
//! closing with one `N passed, N failed` line for both together.
//!
//! Host tests are `cargo test` over the workspace's default members (the
//! kernel is not one: it only builds for the bare-metal targets); their
//! counts come from libtest's `test result:` lines. Each system-test
//! configuration boots under a timeout; its `test NAME ... ok|FAILED` lines
//! are echoed with the configuration's name in front. A configuration that
//! times out, stops without its closing line, disagrees with its own closing
//! line or exits non-zero counts as one more failure, and its last serial
//! lines are shown.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::kernel::{self, Kernel};
use crate::machines::{self, Arch, SystemTest};
use crate::parse;
use crate::qemu::{self, Echo};
use crate::xcheck;

/// Passed and failed counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed (and runs that could not finish).
    pub failed: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// What to run.
#[derive(Debug)]
pub struct Selection<'a> {
    /// Run `cargo test`.
    pub host: bool,
    /// Run the QEMU configurations.
    pub qemu: bool,
    /// Only this architecture's configurations.
    pub arch: Option<Arch>,
    /// Only host tests and configurations whose names contain this.
    pub filter: Option<&'a str>,
}

/// The configurations a selection runs, in table order.
pub fn configurations(selection: &Selection<'_>) -> Result<Vec<&'static SystemTest>> {
    if !selection.qemu {
        return Ok(Vec::new());
    }
    Ok(machines::system_tests()?
        .iter()
        .filter(|config| selection.arch.is_none_or(|arch| config.arch == arch))
        .filter(|config| {
            selection
                .filter
                .is_none_or(|filter| config.name.contains(filter))
        })
        .collect())
}

/// Runs the selection and prints the closing line; the tally decides the exit status.
pub fn run(root: &Path, selection: &Selection<'_>) -> Result<Tally> {
    let mut total = Tally::default();
    if selection.host {
        total.add(host_tests(root, selection.filter)?);
    }
    let configs = configurations(selection)?;
    let seed_words = seed_words(machines::system_tests()?);
    for arch in Arch::ALL {
        let configs: Vec<_> = configs
            .iter()
            .filter(|config| config.arch == arch)
            .collect();
        if configs.is_empty() {
            continue;
        }
        // The release kernel is always built and checked first: whatever
        // the configurations boot, it must hold no seeded bug.
        let release = kernel::build(root, arch);
        if let Ok(elf) = &release {
            total.add(release_kernel_check(arch, elf, &seed_words));
        }
        // The test kernels are built once, when the first configuration
        // that needs one comes (`Kernel::for_configuration`).
        let mut test_kernels: HashMap<Kernel, Result<PathBuf>> = HashMap::new();
        for config in configs {
            let elf = match Kernel::for_configuration(config) {
                Kernel::Release => &release,
                test_kernel => test_kernels
                    .entry(test_kernel)
                    .or_insert_with(|| test_kernel.build(root, arch)),
            };
            let elf = match elf {
                Ok(elf) => elf.clone(),
                Err(error) => {
                    println!("[{}] not run: {error}", config.name);
                    total.failed += 1;
                    continue;
                }
            };
            let (module, mut devices, image, disk) = match boot_module(root, config) {
                Ok(booted) => booted,
                Err(error) => {
                    println!("[{}] not run: {error}", config.name);
                    total.failed += 1;
                    continue;
                }
            };
            let dump = image
                .as_ref()
                .filter(|_| config.cap_dump)
                .map(|image| (root, image));
            // An image with a network device: its backend on two free
            // loopback ports, which the host's checks connect to.
            let ports = match image.as_ref().filter(|image| crate::net::granted(image)) {
                Some(image) => match crate::net::free_ports() {
                    Ok(ports) => {
                        devices.extend(crate::net::netdev(ports));
                        Some((ports, crate::net::restarts(image)))
                    }
                    Err(error) => {
                        println!("[{}] not run: {error}", config.name);
                        total.failed += 1;
                        continue;
                    }
                },
                None => None,
            };
            if let Some(net) = ports {
                total.add(net_test(config, &elf, module.as_deref(), &devices, net));
                continue;
            }
            total.add(system_test(config, &elf, module.as_deref(), &devices, dump));
            if let Some(disk) = disk {
                total.add(disk_test(config, &disk));
            }
        }
    }
    println!("{} passed, {} failed", total.passed, total.failed);
    Ok(total)
}

/// The release-ELF tests on `arch`'s release kernel:
/// `release_kernel_has_no_seeded_bugs` ([`seed_traces`] finds nothing: the
/// seeded bugs, their names and their `seed=` parsing live only in the
/// kernel built with `seeded-bugs`) and `release_kernel_has_no_test_code`
/// ([`test_code_symbols`] finds nothing: the self-tests, the IOMMU
/// cross-check, the kernel-mode edu driver, the benchmarks and the
/// capability dump live only in the test kernels) and
/// `release_kernel_has_no_core_fmt` ([`fmt_symbols`] finds nothing: the
/// release kernel prints through `ktext`, kernel/README.md "Size").
fn release_kernel_check(arch: Arch, elf: &Path, seed_words: &[String]) -> Tally {
    let name = format!("{}-release", arch.name());
    let bytes =
        std::fs::read(elf).map_err(|error| format!("cannot read {}: {error}", elf.display()));
    let checks: [(&str, &str, Traces); 3] = [
        (
            "release_kernel_has_no_seeded_bugs",
            "holds seeded-bug code though it is built without `seeded-bugs`",
            bytes
                .clone()
                .and_then(|bytes| seed_traces(&bytes, seed_words)),
        ),
        (
            "release_kernel_has_no_test_code",
            "holds test-kernel functions (kernel/src/testing/) though it is built without their features",
            bytes.clone().and_then(|bytes| test_code_symbols(&bytes)),
        ),
        (
            "release_kernel_has_no_core_fmt",
            "formats with core::fmt (print with `say!` / `ktext`, not `format_args!` or a `Display`)",
            bytes.and_then(|bytes| fmt_symbols(&bytes)),
        ),
    ];
    let mut tally = Tally::default();
    for (test, what, traces) in checks {
        match traces {
            Ok(traces) if traces.is_empty() => {
                println!("[{name}] test {test} ... ok ({})", elf.display());
                tally.passed += 1;
            }
            Ok(traces) => {
                println!("[{name}] test {test} ... FAILED");
                println!("[{name}]     {} {what}:", elf.display());
                for trace in traces.iter().take(20) {
                    println!("[{name}]     {trace}");
                }
                if traces.len() > 20 {
                    println!("[{name}]     ... and {} more", traces.len() - 20);
                }
                tally.failed += 1;
            }
            Err(why) => {
                println!("[{name}] test {test} ... FAILED");
                println!("[{name}]     {why}");
                tally.failed += 1;
            }
        }
    }
    tally
}

/// What a release-ELF check found, or why it could not look.
type Traces = std::result::Result<Vec<String>, String>;

/// The kernel modules only test kernels compile (`kernel/src/testing/`,
/// and where they lived before they moved there: `kernel::X` as well as
/// `kernel::testing::X`).
const TEST_MODULES: [&str; 9] = [
    "boot_tests",
    "selftest",
    "xcheck",
    "edu",
    "dma_page",
    "bench",
    "cap_dump",
    "abstraction",
    "seeds",
];

/// Test-only functions outside `testing/` (the user programs the self-tests
/// and the benchmarks run, in `arch/*/user.rs`) and their assembly labels.
const TEST_FUNCTIONS: [&str; 4] = [
    "user_probe_program",
    "user_bench_program",
    "_user_probe_start",
    "_user_bench_start",
];

/// The symbols of the kernel ELF `elf` that belong to test code: a Rust
/// path `kernel::M::...` or `kernel::testing::M::...` with `M` one of
/// [`TEST_MODULES`] (in impl paths too, `<kernel::M::T as ...>`), or a name
/// containing one of [`TEST_FUNCTIONS`]. An ELF without a symbol table
/// cannot be checked and is an error.
fn test_code_symbols(elf: &[u8]) -> Traces {
    symbols_where(elf, |name| {
        let path = rust_path(name);
        let in_test_module = path
            .windows(2)
            .any(|pair| pair[0] == "kernel" && TEST_MODULES.contains(&pair[1]))
            || path.windows(3).any(|triple| {
                triple[..2] == ["kernel", "testing"] && TEST_MODULES.contains(&triple[2])
            });
        let test_function = TEST_FUNCTIONS
            .iter()
            .any(|function| name.contains(function));
        if in_test_module || test_function {
            // Shown without the hash segment (`h` and 16 hex digits).
            let hash = |part: &&str| {
                part.len() == 17
                    && part.starts_with('h')
                    && part[1..].bytes().all(|b| b.is_ascii_hexdigit())
            };
            let shown: Vec<&str> = path.iter().filter(|part| !hash(part)).copied().collect();
            Some(if shown.is_empty() {
                name.to_string()
            } else {
                shown.join("::")
            })
        } else {
            None
        }
    })
}

/// Pieces of mangled names only `core::fmt`'s formatting brings in: the
/// writer (`core::fmt::write`), `Formatter::pad`, the struct and list
/// builders, `Arguments`' and `Write`'s methods (v0 mangling, as the
/// toolchain's `core` is built).
const CORE_FMT_MACHINERY: [&str; 5] = [
    "3fmt5write",
    "9Formatter3pad",
    "8builders",
    "9Arguments",
    "5Write",
];

/// The symbols of the kernel ELF `elf` that are `core::fmt` at work: an
/// impl of a `core::fmt` trait or a function in `core::fmt` from the
/// workspace's crates or their dependencies (legacy mangling,
/// `core..fmt`), or `core::fmt`'s machinery ([`CORE_FMT_MACHINERY`]).
/// What `core` keeps for its own panic messages (`panic_bounds_check`
/// names `<usize as Display>::fmt` in the message it hands the panic
/// handler, which never formats it) is not machinery and is let through.
fn fmt_symbols(elf: &[u8]) -> Traces {
    symbols_where(elf, |name| {
        let ours = name.contains("core..fmt");
        let machinery = name.contains("4core3fmt")
            && CORE_FMT_MACHINERY.iter().any(|piece| name.contains(piece));
        (ours || machinery).then(|| name.to_string())
    })
}

/// What `shown` makes of the names of the ELF `elf`'s symbols, sorted, each
/// once (`None`: not listed). An ELF without a symbol table cannot be
/// checked and is an error.
fn symbols_where(elf: &[u8], shown: impl Fn(&str) -> Option<String>) -> Traces {
    use object::{Object, ObjectSymbol};
    let file = object::File::parse(elf).map_err(|e| format!("not an ELF file: {e}"))?;
    let mut count = 0;
    let mut found = Vec::new();
    for symbol in file.symbols() {
        count += 1;
        let Ok(name) = symbol.name() else { continue };
        found.extend(shown(name));
    }
    if count == 0 {
        return Err("the ELF has no symbol table to check (was it stripped?)".to_string());
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// The identifiers of a legacy-mangled Rust symbol (`_ZN6kernel4edu3Edu5probe17h...E`
/// gives `kernel`, `edu`, `Edu`, `probe`, `h...`), impl paths split too
/// (`_$LT$kernel..edu..Edu$u20$as$u20$...` gives `kernel`, `edu`, `Edu`,
/// ...); empty for any other name.
fn rust_path(symbol: &str) -> Vec<&str> {
    let Some(mut rest) = symbol.strip_prefix("_ZN") else {
        return Vec::new();
    };
    let mut parts = Vec::new();
    while let Some(digits) = rest.find(|c: char| !c.is_ascii_digit()).filter(|&n| n > 0) {
        let Ok(length) = rest[..digits].parse::<usize>() else {
            break;
        };
        let Some(ident) = rest.get(digits..digits + length) else {
            break;
        };
        parts.extend(
            ident
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|part| !part.is_empty() && *part != "_"),
        );
        rest = &rest[digits + length..];
    }
    parts
}

/// What no byte of the release kernel may spell: the seeded kernel's boot
/// line (`SEEDED BUG`), the `seed=` key and the name of every seed the
/// table plants.
fn seed_words(tests: &[SystemTest]) -> Vec<String> {
    let mut words = vec!["SEEDED BUG".to_string(), "seed=".to_string()];
    for seeds in tests.iter().filter_map(SystemTest::seeds) {
        for seed in seeds.split(',') {
            if !words.iter().any(|word| word == seed) {
                words.push(seed.to_string());
            }
        }
    }
    words
}

/// Traces of seeded bugs in the kernel ELF `elf`: each of `words` anywhere
/// in the file, and "seed" in any letter case in what is loaded (the
/// sections with SHF_ALLOC: code and data). Debug information is not
/// loaded and may name the `Seed` type (each `planted(Seed::X)` call site
/// compiles to nothing, but its argument's type stays described), as it
/// names serde's `DeserializeSeed`.
fn seed_traces(elf: &[u8], words: &[String]) -> std::result::Result<Vec<String>, String> {
    use object::{Object, ObjectSection, SectionFlags};
    const SHF_ALLOC: u64 = 0x2;
    let file = object::File::parse(elf).map_err(|e| format!("not an ELF file: {e}"))?;
    let mut traces: Vec<String> = words_in(elf, words)
        .into_iter()
        .map(|word| format!("`{word}`"))
        .collect();
    for section in file.sections() {
        let loaded = matches!(
            section.flags(),
            SectionFlags::Elf { sh_flags } if sh_flags & SHF_ALLOC != 0
        );
        let data = section.data().unwrap_or_default();
        if loaded
            && data
                .windows(4)
                .any(|window| window.eq_ignore_ascii_case(b"seed"))
        {
            let name = section.name().unwrap_or("?");
            traces.push(format!("\"seed\" in the loaded section {name}"));
        }
    }
    Ok(traces)
}

/// The `words` that occur somewhere in `bytes`.
fn words_in<'w>(bytes: &[u8], words: &'w [String]) -> Vec<&'w str> {
    words
        .iter()
        .filter(|word| {
            bytes
                .windows(word.len())
                .any(|window| window == word.as_bytes())
        })
        .map(String::as_str)
        .collect()
}

/// A configuration's boot module, its devices' QEMU options, its image and
/// the disk file it writes.
type Booted = (
    Option<PathBuf>,
    Vec<String>,
    Option<sysimage::Image>,
    Option<crate::disk::Disk>,
);

/// The test `host_disk_holds_the_new_pattern`: after a configuration whose
/// image drives a virtio-blk, the disk file must hold what its client
/// wrote (`crate::disk`).
fn disk_test(config: &SystemTest, disk: &crate::disk::Disk) -> Tally {
    match disk.verify() {
        Ok(summary) => {
            println!(
                "[{}] test host_disk_holds_the_new_pattern ... ok ({summary})",
                config.name
            );
            Tally {
                passed: 1,
                failed: 0,
            }
        }
        Err(problem) => {
            println!(
                "[{}] test host_disk_holds_the_new_pattern ... FAILED",
                config.name
            );
            println!("[{}]     {problem}", config.name);
            Tally {
                passed: 0,
                failed: 1,
            }
        }
    }
}

/// Builds a configuration's boot module: its program's ELF, or its image
/// packed with init and the image's programs; with an image, also the
/// QEMU options of its platform's devices (as `cargo xtask run --image`)
/// and the validated image.
fn boot_module(root: &Path, config: &SystemTest) -> Result<Booted> {
    match (config.program.as_deref(), config.image.as_deref()) {
        // The fuzzer's count and seed are compiled in: CI's, whatever the
        // last `cargo xtask fuzz` built.
        (Some(crate::fuzz::PROGRAM), _) => {
            let (calls, seed) = (crate::fuzz::CI_CALLS, crate::fuzz::CI_SEED);
            crate::fuzz::build_program(root, config.arch, calls, seed)
                .map(|path| (Some(path), Vec::new(), None, None))
        }
        (Some(program), _) => kernel::build_package(root, config.arch, program)
            .map(|path| (Some(path), Vec::new(), None, None)),
        (None, Some(name)) => {
            let image = crate::image::load(root, config.arch, name)?;
            let packed = crate::image::pack(root, config.arch, &image)?;
            let dir = crate::image::output_dir(root)?;
            let (devices, disk) = crate::disk::devices(&dir, config.arch, &image)?;
            Ok((Some(packed.path), devices, Some(image), disk))
        }
        (None, None) => Ok((None, Vec::new(), None, None)),
    }
}

/// `cargo test` over the default members, echoing its output. Not
/// `--workspace`: that would add the kernel, which only builds for the
/// bare-metal targets.
fn host_tests(root: &Path, filter: Option<&str>) -> Result<Tally> {
    let mut command = Command::new(kernel::cargo());
    command
        .args(["test", "--no-fail-fast"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if let Some(filter) = filter {
        command.args(["--", filter]);
    }
    let mut child = command.spawn().map_err(|error| {
        Error::new(
            format!("cannot run cargo test: {error}"),
            "install Rust with rustup",
        )
    })?;
    let mut tally = Tally::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(|line| line.ok()) {
            println!("{line}");
            if let Some((passed, failed)) = parse::libtest_summary(&line) {
                tally.add(Tally { passed, failed });
            }
        }
    }
    let status = child
        .wait()
        .map_err(|error| Error::new(format!("cargo test: {error}"), ""))?;
    if !status.success() && tally.failed == 0 {
        // A build error: no test failed because none ran.
        println!(
            "[host] cargo test failed without a failing test ({status}); see its errors above"
        );
        tally.failed += 1;
    }
    Ok(tally)
}

/// Boots one configuration and counts its tests; a run that cannot finish
/// counts as one more failure. With `dump` (the workspace root and the
/// image of a `cap_dump` configuration), the kernel's capability dump is
/// one more test.
fn system_test(
    config: &SystemTest,
    elf: &Path,
    module: Option<&Path>,
    devices: &[String],
    dump: Option<(&Path, &sysimage::Image)>,
) -> Tally {
    let machine = config.arch.machine();
    let args = arguments(config, elf, module, devices);
    let timeout = Duration::from_secs(config.timeout_secs);
    let mut report = Report::default();
    let mut cross_check = xcheck::Collector::default();
    let mut transcript = Vec::new();
    let run = qemu::run(machine.qemu, &args, Echo::Quiet, Some(timeout), |line| {
        if dump.is_some() {
            transcript.push(line.to_string());
        }
        if cross_check.see(line) {
            return;
        }
        if report.see(line) {
            println!("[{}] {line}", config.name);
        }
    });
    let run = match run {
        Ok(run) => run,
        Err(error) => {
            println!("[{}] not run: {error}", config.name);
            return Tally {
                passed: report.tally.passed,
                failed: report.tally.failed + 1,
            };
        }
    };
    if config.expect_trap {
        return trap_tally(config, &run, machine);
    }
    if !config.must_fail.is_empty() {
        let hung = matches!(run.ended, qemu::Ended::TimedOut(_));
        return seeded_tally(config, &report, hung);
    }
    let problem = report.problem(qemu::guest_status(machine.exit, &run));
    let mut tally = report.tally;
    for name in &config.must_pass {
        if !report.passed_names.iter().any(|passed| passed == name) {
            tally.failed += 1;
            println!(
                "[{}] FAILED: {name} must pass here and was not reported passed",
                config.name
            );
        }
    }
    for case in cross_check.cases() {
        match case.judge() {
            Ok(summary) => {
                tally.passed += 1;
                println!(
                    "[{}] test xcheck_{} ... ok ({summary})",
                    config.name, case.name
                );
            }
            Err(why) => {
                tally.failed += 1;
                println!("[{}] test xcheck_{} ... FAILED", config.name, case.name);
                println!("[{}]     {why}", config.name);
            }
        }
    }
    if let Some((root, image)) = dump {
        tally.add(cap_dump_test(config, root, image, &transcript));
    }
    if let Some(problem) = problem {
        tally.failed += 1;
        report_problem(config, &problem, Some(&run), &args);
    }
    tally
}

/// Prints why a run failed beyond its tests, its last serial lines (when
/// it ran) and the QEMU command line to replay it.
fn report_problem(config: &SystemTest, problem: &str, run: Option<&qemu::Run>, args: &[String]) {
    println!("[{}] FAILED: {problem}", config.name);
    if let Some(run) = run {
        println!("[{}] last {} serial lines:", config.name, run.tail.len());
        for line in &run.tail {
            println!("[{}] | {line}", config.name);
        }
    }
    println!(
        "[{}] QEMU: {} {}",
        config.name,
        config.arch.machine().qemu,
        crate::shell_words(args)
    );
}

/// Boots a configuration whose image serves on the network
/// (`crate::net`): once the guest says it serves, the host's checks run
/// (each bounded, `net::TIMEOUT`), then xtask stops QEMU. Each check is a
/// test; a guest that never serves, or that ends before the checks did,
/// counts as one more failure. When the image restarts its driver
/// (`restarts`), the host runs `net::check_restart` instead, and the test
/// `console_counts_one_restart` counts init's restart lines.
fn net_test(
    config: &SystemTest,
    elf: &Path,
    module: Option<&Path>,
    devices: &[String],
    (ports, restarts): (crate::net::Ports, bool),
) -> Tally {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let machine = config.arch.machine();
    let args = arguments(config, elf, module, devices);
    let timeout = Duration::from_secs(config.timeout_secs);
    let stop = Arc::new(AtomicBool::new(false));
    let mut checker = None;
    let mut restart_lines = 0;
    let run = qemu::run_until(
        machine.qemu,
        &args,
        Echo::Quiet,
        Some(timeout),
        Some(Arc::clone(&stop)),
        |line| {
            if echo_all() {
                println!("[{}] {line}", config.name);
            }
            if line.contains("[init] restart ") && line.contains(crate::net::RESTART_LINE) {
                restart_lines += 1;
            }
            if checker.is_none() && line.contains(crate::net::SERVING) {
                let stop = Arc::clone(&stop);
                checker = Some(std::thread::spawn(move || {
                    let checks = if restarts {
                        crate::net::check_restart(ports)
                    } else {
                        crate::net::check(ports)
                    };
                    stop.store(true, Ordering::Release);
                    checks
                }));
            }
        },
    );
    let mut tally = Tally::default();
    let checks = checker.map(|checker| {
        checker.join().map(|mut checks| {
            if restarts {
                let counted = crate::net::judge_restarts(restart_lines, 1);
                checks.push(("console_counts_one_restart", counted));
            }
            checks
        })
    });
    let problem = match (&run, checks) {
        (Err(error), _) => Some(format!("not run: {error}")),
        (Ok(_), None) => Some(format!("the guest never printed `{}`", crate::net::SERVING)),
        (Ok(_), Some(Err(_))) => Some("the host's checks panicked".to_string()),
        (Ok(run), Some(Ok(checks))) => {
            for (name, outcome) in checks {
                match outcome {
                    Ok(summary) => {
                        tally.passed += 1;
                        println!("[{}] test {name} ... ok ({summary})", config.name);
                    }
                    Err(why) => {
                        tally.failed += 1;
                        println!("[{}] test {name} ... FAILED", config.name);
                        for line in why.lines() {
                            println!("[{}]     {line}", config.name);
                        }
                    }
                }
            }
            (run.ended != qemu::Ended::Stopped).then(|| {
                format!(
                    "QEMU ended ({:?}) before the host's checks were done",
                    run.ended
                )
            })
        }
    };
    if let Some(problem) = problem {
        tally.failed += 1;
        report_problem(config, &problem, run.as_ref().ok(), &args);
    }
    tally
}

/// The test `cap_dump_matches_image`: the `call` dump in `transcript`
/// parses, Graphviz draws it (and the `halt` dump, when there is one), and
/// it matches `image`. A truncated `halt` dump is a warning in the test's
/// line (see `capdump`), not a failure.
fn cap_dump_test(
    config: &SystemTest,
    root: &Path,
    image: &sysimage::Image,
    transcript: &[String],
) -> Tally {
    let name = "cap_dump_matches_image";
    let verdict = match crate::capdump::judge(root, image, config.arch, transcript) {
        Ok(outcome) if outcome.mismatches.is_empty() => {
            let mut detail = format!(
                "{}; {}",
                outcome.call.summary,
                outcome.call.files[1].display()
            );
            if let Some(halt) = &outcome.halt {
                detail.push_str(&format!("; at DebugHalt {}", halt.files[1].display()));
            }
            for warning in &outcome.warnings {
                detail.push_str(&format!("; warning: {warning}"));
            }
            Ok(detail)
        }
        Ok(mut outcome) => {
            let tree = format!("the live tree: {}", outcome.call.files[2].display());
            outcome.mismatches.push(tree);
            outcome
                .mismatches
                .extend(outcome.warnings.iter().map(|w| format!("warning: {w}")));
            Err(outcome.mismatches)
        }
        Err(error) => Err(vec![error.to_string()]),
    };
    match verdict {
        Ok(detail) => {
            println!("[{}] test {name} ... ok ({detail})", config.name);
            Tally {
                passed: 1,
                failed: 0,
            }
        }
        Err(lines) => {
            println!("[{}] test {name} ... FAILED", config.name);
            for line in lines {
                println!("[{}]     {line}", config.name);
            }
            Tally {
                passed: 0,
                failed: 1,
            }
        }
    }
}

/// The QEMU arguments of one configuration: its kernel `elf` and, for a
/// configuration with a program or an image, that program's ELF or the
/// packed image as the boot module, after the image platform's `devices`.
pub fn arguments(
    config: &SystemTest,
    elf: &Path,
    module: Option<&Path>,
    devices: &[String],
) -> Vec<String> {
    let (module_args, suffix) = match module {
        Some(path) => {
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            machines::module_arguments(config.arch, &path.display().to_string(), size)
        }
        None => (Vec::new(), String::new()),
    };
    let cmdline = format!("{}{suffix}", config.cmdline);
    let mut extra = devices.to_vec();
    extra.extend(module_args);
    qemu::arguments(
        config.arch.machine(),
        &config.qemu_args,
        elf,
        &cmdline,
        &extra,
    )
}

/// Counts a deliberate-exception configuration: one pass when the kernel
/// reported the exception (vector, faulting address, registers: its raw
/// `[trap]` line as decoded into the tail, console.rs) and exited
/// with the unexpected-trap status 3, one failure otherwise.
fn trap_tally(config: &SystemTest, run: &qemu::Run, machine: &machines::Machine) -> Tally {
    let text: Vec<&str> = run.tail.iter().map(String::as_str).collect();
    let reported = text
        .iter()
        .any(|l| l.contains("[trap] unexpected exception"))
        && text.iter().any(|l| l.contains("faulting address"))
        && text.iter().any(|l| l.contains("rip") || l.contains("elr"));
    let status = qemu::guest_status(machine.exit, run);
    if reported && status == Ok(3) {
        println!("[{}] test kernel_exception_is_reported ... ok", config.name);
        Tally {
            passed: 1,
            failed: 0,
        }
    } else {
        println!(
            "[{}] test kernel_exception_is_reported ... FAILED",
            config.name
        );
        println!(
            "[{}]     report seen: {reported}, guest status {status:?} (expected 3)",
            config.name
        );
        for line in &run.tail {
            println!("[{}] | {line}", config.name);
        }
        Tally {
            passed: 0,
            failed: 1,
        }
    }
}

/// Counts a seeded-bug configuration: each test in `must_fail` that failed
/// caught the seeded bug (a pass), and so did one that never finished
/// because the guest hung (`hung`: a liveness test, such as preemption,
/// fails by never returning); one that passed missed it.
fn seeded_tally(config: &SystemTest, report: &Report, hung: bool) -> Tally {
    let mut tally = Tally::default();
    for name in &config.must_fail {
        let passed = report.passed_names.iter().any(|p| p == name);
        if report.failed_names.iter().any(|failed| failed == name) {
            tally.passed += 1;
            println!(
                "[{}] seeded bug caught: {name} failed as it must",
                config.name
            );
        } else if hung && !passed {
            tally.passed += 1;
            println!(
                "[{}] seeded bug caught: {name} never finished (the guest hung)",
                config.name
            );
        } else {
            tally.failed += 1;
            println!(
                "[{}] FAILED: seeded bug missed: {name} did not fail",
                config.name
            );
        }
    }
    tally
}

/// What the guest's serial lines said about its tests.
#[derive(Debug, Default)]
struct Report {
    tally: Tally,
    closing: Option<Tally>,
    /// Inside a failed test's detail lines (from `FAILED` to the next verdict).
    in_failure: bool,
    /// Names of the tests that failed.
    failed_names: Vec<String>,
    /// Names of the tests that passed.
    passed_names: Vec<String>,
}

/// `XTASK_ECHO=all`: echo every serial line (for debugging a configuration).
fn echo_all() -> bool {
    std::env::var("XTASK_ECHO").is_ok_and(|v| v == "all")
}

impl Report {
    /// Takes one serial line; returns whether it is worth echoing: verdicts,
    /// the detail lines after a `FAILED`, the closing and the exit line.
    fn see(&mut self, line: &str) -> bool {
        if let Some(test) = parse::test_line(line) {
            if test.passed {
                self.tally.passed += 1;
                self.passed_names.push(test.name.clone());
            } else {
                self.tally.failed += 1;
                self.failed_names.push(test.name.clone());
            }
            self.in_failure = !test.passed;
            true
        } else if let Some((passed, failed)) = parse::closing_line(line) {
            self.closing = Some(Tally { passed, failed });
            self.in_failure = false;
            true
        } else {
            self.in_failure || parse::exit_line(line).is_some() || echo_all()
        }
    }

    /// Why this run is a failure beyond its failed tests, if it is.
    fn problem(&self, status: std::result::Result<u32, String>) -> Option<String> {
        let guest = match status {
            Ok(guest) => guest,
            Err(problem) => return Some(problem),
        };
        match self.closing {
            None => Some(format!(
                "the guest exited ({guest}) without its closing `N passed, N failed` line"
            )),
            Some(closing) if closing != self.tally => Some(format!(
                "the guest's closing line says {} passed, {} failed but its test lines say {} passed, {} failed",
                closing.passed, closing.failed, self.tally.passed, self.tally.failed
            )),
            Some(_) if guest != 0 && self.tally.failed == 0 => Some(format!(
                "the guest exited with status {guest} though no test failed"
            )),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(lines: &[&str]) -> Report {
        let mut report = Report::default();
        for line in lines {
            report.see(line);
        }
        report
    }

    #[test]
    fn a_clean_run_has_no_problem() {
        let report = report(&[
            "Portcullis 0.1.0",
            "test vtd_ver ... ok",
            "test vtd_cap ... ok",
            "2 passed, 0 failed",
            "portcullis: exit 0",
        ]);
        assert_eq!(
            report.tally,
            Tally {
                passed: 2,
                failed: 0
            }
        );
        assert_eq!(report.problem(Ok(0)), None);
    }

    #[test]
    fn failed_tests_count_without_an_extra_problem() {
        let report = report(&[
            "test a ... ok",
            "test b ... FAILED",
            "  expected 0x10, read 0x11",
            "1 passed, 1 failed",
        ]);
        assert_eq!(
            report.tally,
            Tally {
                passed: 1,
                failed: 1
            }
        );
        assert_eq!(report.problem(Ok(1)), None);
    }

    #[test]
    fn detail_lines_after_a_failure_are_echoed() {
        let mut report = Report::default();
        assert!(report.see("test a ... FAILED"));
        assert!(report.see("    byte 0 is 0x5a, expected 0x11"));
        assert!(report.see("test b ... ok"));
        assert!(!report.see("[boot] noise"));
        assert!(report.see("1 passed, 1 failed"));
        assert!(report.see("portcullis: exit 1"));
    }

    #[test]
    fn missing_or_inconsistent_closing_lines_are_problems() {
        assert!(
            report(&["test a ... ok"])
                .problem(Ok(0))
                .unwrap()
                .contains("without its closing")
        );
        assert!(
            report(&["test a ... ok", "2 passed, 0 failed"])
                .problem(Ok(0))
                .unwrap()
                .contains("says 2 passed")
        );
        assert!(
            report(&["test a ... ok", "1 passed, 0 failed"])
                .problem(Ok(2))
                .unwrap()
                .contains("status 2")
        );
        assert_eq!(
            report(&[]).problem(Err("timed out".into())),
            Some("timed out".into())
        );
    }

    /// This test binary formats with `core::fmt` (through std's
    /// `println!` and `format!`): the release check must see it.
    #[test]
    fn the_core_fmt_check_finds_formatting() {
        let exe = std::env::current_exe().unwrap();
        let found = fmt_symbols(&std::fs::read(exe).unwrap()).unwrap();
        assert!(
            found.iter().any(|name| name.contains("3fmt5write")),
            "core::fmt::write not found among {found:?}"
        );
        assert!(found.iter().any(|name| name.contains("core..fmt")));
    }

    #[test]
    fn the_release_check_looks_for_every_seed_the_table_plants() {
        let words = seed_words(machines::system_tests().unwrap());
        for expected in ["SEEDED BUG", "seed=", "iommu-off", "io-skip-invalidation"] {
            assert!(words.iter().any(|w| w == expected), "{expected}");
        }
        let kernel = b"\0[boot] command line\0iommu-off\0";
        assert_eq!(words_in(kernel, &words), ["iommu-off"]);
        assert!(words_in(b"next_element_seed<T>", &words).is_empty());
    }

    #[test]
    fn the_test_code_check_reads_rust_paths() {
        let path = rust_path("_ZN6kernel7testing10boot_tests3run17h0123456789abcdefE");
        assert_eq!(
            path,
            [
                "kernel",
                "testing",
                "boot_tests",
                "run",
                "h0123456789abcdef"
            ]
        );
        let display = "_ZN68_$LT$kernel..edu..EduError$u20$as$u20$core..fmt..Display$GT$3fmt17h0123456789abcdefE";
        assert_eq!(
            &rust_path(display)[..4],
            ["LT", "kernel", "edu", "EduError"]
        );
        assert!(rust_path("x86_64_user_bench_start").is_empty());
        assert!(rust_path("_ZN6kernel4").is_empty() || rust_path("_ZN6kernel4")[0] == "kernel");
    }

    #[test]
    fn selection() {
        let all = Selection {
            host: true,
            qemu: true,
            arch: None,
            filter: None,
        };
        assert_eq!(
            configurations(&all).unwrap().len(),
            machines::system_tests().unwrap().len()
        );
        let arm = Selection {
            arch: Some(Arch::Aarch64),
            ..all
        };
        assert!(
            configurations(&arm)
                .unwrap()
                .iter()
                .all(|config| config.arch == Arch::Aarch64)
        );
        let vtd = Selection {
            filter: Some("vtd"),
            arch: None,
            ..arm
        };
        assert!(
            configurations(&vtd)
                .unwrap()
                .iter()
                .all(|config| config.name.contains("vtd"))
        );
        assert!(!configurations(&vtd).unwrap().is_empty());
        let host_only = Selection { qemu: false, ..vtd };
        assert!(configurations(&host_only).unwrap().is_empty());
    }
}
