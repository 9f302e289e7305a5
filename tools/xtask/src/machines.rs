//! The QEMU machines Portcullis boots on, and the system-test configurations
//! read from `tools/xtask/system-tests.toml` (the file to edit when adding
//! one; compiled in, parsed and checked once, every error naming the line
//! and the configuration). A QEMU command line is assembled as
//!
//! ```text
//! qemu-system-<arch> COMMON_ARGS <machine args> <configuration args>
//!                    <device args> -kernel <ELF> -append "<cmdline>"
//!                    -serial stdio [arguments after `--`]
//! ```
//!
//! The configuration's arguments sit between the machine and its devices
//! because QEMU wants `intel-iommu` created before the PCI devices it
//! translates.
//!
//! The `key=value` pairs on the system tests' command lines are the facts
//! measured under QEMU 10.0.2 (VT-d VER/CAP/ECAP, SMMUv3 IDR0/1/5): the kernel
//! compares what it decodes from the hardware with them.

use std::collections::HashSet;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::kernel::Kernel;

/// An architecture Portcullis builds for; also the `--arch` value, whose
/// spelling is [`Arch::name`] (clap rejects any other with the choices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
pub enum Arch {
    /// x86_64 on QEMU's `q35` machine with Intel VT-d.
    #[value(name = "x86_64")]
    #[serde(rename = "x86_64")]
    X86_64,
    /// AArch64 on QEMU's `virt` machine with an Arm SMMUv3.
    #[value(name = "aarch64")]
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl Arch {
    /// Every architecture, in the order tests run.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The architecture used when `--arch` is not given.
    pub const DEFAULT: Arch = Arch::Aarch64;

    /// The name used on the command line and in target triples.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The Rust target the kernel is built for.
    pub fn target(self) -> String {
        format!("{}-unknown-none", self.name())
    }

    /// The Rust target user programs are built for: one whose code never
    /// touches FP/SIMD registers, which the kernel neither saves nor gives
    /// to user mode (kernel/README.md "FP/SIMD state"). `x86_64-unknown-none`
    /// is soft-float already; on aarch64 it takes the `-softfloat` target,
    /// since `aarch64-unknown-none` uses NEON (memcpy and friends).
    pub fn user_target(self) -> String {
        match self {
            Arch::X86_64 => self.target(),
            Arch::Aarch64 => format!("{}-softfloat", self.target()),
        }
    }

    /// The QEMU machine this architecture boots on.
    pub fn machine(self) -> &'static Machine {
        match self {
            Arch::X86_64 => &X86_64_Q35,
            Arch::Aarch64 => &AARCH64_VIRT,
        }
    }
}

/// How the guest's exit status `g` reaches QEMU's own exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestExit {
    /// x86 `isa-debug-exit`: the guest writes `g` to the port and QEMU exits
    /// with `(g << 1) | 1`, so a guest status is always odd.
    IsaDebugExit,
    /// Arm semihosting `SYS_EXIT`: QEMU exits with `g` itself.
    Semihosting,
}

impl GuestExit {
    /// QEMU's exit status when the guest exits with `guest`.
    pub fn qemu_status(self, guest: u32) -> i32 {
        // Process exit statuses are 8 bits wide; the masks say so explicitly.
        match self {
            GuestExit::IsaDebugExit => ((guest.wrapping_shl(1) | 1) & 0xff) as i32,
            GuestExit::Semihosting => (guest & 0xff) as i32,
        }
    }
}

/// Arguments every QEMU run gets, whatever the architecture.
pub const COMMON_ARGS: &[&str] = &[
    "-accel",
    "tcg",
    "-display",
    "none",
    "-no-reboot",
    "-m",
    "512M",
];

/// One QEMU machine: the emulator binary and the arguments around a
/// configuration's own.
#[derive(Debug)]
pub struct Machine {
    /// The architecture booted on this machine.
    pub arch: Arch,
    /// The QEMU executable.
    pub qemu: &'static str,
    /// Debian package that ships [`Machine::qemu`].
    pub package: &'static str,
    /// Machine and CPU, before the configuration's arguments.
    pub machine_args: &'static [&'static str],
    /// Devices after the configuration's arguments (exit device, `edu`).
    pub device_args: &'static [&'static str],
    /// The configuration's arguments for `cargo xtask run`.
    pub run_args: &'static [&'static str],
    /// How the guest's exit status is encoded in QEMU's.
    pub exit: GuestExit,
}

/// x86_64: `q35` with an Intel VT-d unit, `isa-debug-exit` and `edu`.
pub const X86_64_Q35: Machine = Machine {
    arch: Arch::X86_64,
    qemu: "qemu-system-x86_64",
    package: "qemu-system-x86",
    machine_args: &["-M", "q35", "-cpu", "qemu64"],
    // The edu at an explicit slot: it stays at 00:03.0 (after VGA and the
    // default NIC) when an image's `-netdev` removes QEMU's default NIC.
    device_args: &[
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-device",
        "edu,addr=03.0",
    ],
    run_args: &["-device", "intel-iommu,x-scalable-mode=on"],
    exit: GuestExit::IsaDebugExit,
};

/// AArch64: `virt` with an SMMUv3 (nested stages), semihosting and `edu`.
pub const AARCH64_VIRT: Machine = Machine {
    arch: Arch::Aarch64,
    qemu: "qemu-system-aarch64",
    package: "qemu-system-arm",
    machine_args: &["-M", "virt,iommu=smmuv3", "-cpu", "max"],
    // RAM starts at 1 GiB on virt, above edu's default 28-bit DMA mask.
    // At an explicit slot, 00:02.0 (after the default NIC), also when an
    // image's `-netdev` removes QEMU's default NIC.
    device_args: &[
        "-semihosting",
        "-device",
        "edu,addr=02.0,dma_mask=0xffffffffff",
    ],
    run_args: &[],
    exit: GuestExit::Semihosting,
};

/// Where the aarch64 boot module is placed: QEMU's virt machine loads no
/// `-initrd` for an ELF kernel, so the generic loader puts the file in RAM
/// and the command line tells the kernel where.
pub const AARCH64_MODULE_ADDRESS: u64 = 0x4800_0000;

/// QEMU arguments and a kernel command-line suffix that hand the file at
/// `path` (`size` bytes) to the kernel as its boot module: `-initrd` on
/// x86_64 (the PVH start info lists it), the generic loader plus
/// `module=ADDRESS,LENGTH` on aarch64.
pub fn module_arguments(arch: Arch, path: &str, size: u64) -> (Vec<String>, String) {
    match arch {
        Arch::X86_64 => (vec!["-initrd".into(), path.into()], String::new()),
        Arch::Aarch64 => (
            vec![
                "-device".into(),
                format!("loader,file={path},addr={AARCH64_MODULE_ADDRESS:#x},force-raw=on"),
            ],
            format!(" module={AARCH64_MODULE_ADDRESS:#x},{size}"),
        ),
    }
}

/// Seconds a system-test configuration may run unless it says otherwise.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// One QEMU system-test configuration: a `[[test]]` table of
/// [`TABLE_FILE`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemTest {
    /// Name shown before each of its output lines; starts with the arch name.
    pub name: String,
    /// Architecture (and so machine) it boots.
    pub arch: Arch,
    /// Extra QEMU arguments (IOMMU variant); none by default.
    #[serde(default)]
    pub qemu_args: Vec<String>,
    /// Kernel command line: `tests=<suite>` then `key=value` facts.
    pub cmdline: String,
    /// Seconds before the guest is stopped and counted as failed;
    /// [`DEFAULT_TIMEOUT_SECS`] by default.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// A user program (a workspace package of the same name) booted as the
    /// root task: the boot module (see [`module_arguments`]).
    #[serde(default)]
    pub program: Option<String>,
    /// A system image (`images/<NAME>.toml`) packed with init and its
    /// programs and booted as the boot module instead: the kernel starts
    /// init, which builds the image's domains (`cargo xtask run --image`).
    #[serde(default)]
    pub image: Option<String>,
    /// A seeded-bug configuration: the kernel is deliberately broken (a
    /// `seed=` word on its command line, booting the seeded kernel, see
    /// [`SystemTest::kernel`]) and these tests must FAIL. Each
    /// that fails counts as a pass (the bug was caught), each that passes
    /// as a failure; the configuration's other tests are not counted.
    #[serde(default)]
    pub must_fail: Vec<String>,
    /// Tests that must be among those the guest reports passed: a run
    /// that leaves one out (a guest that took another path and ran
    /// another test, such as a driver that polls where the image asks for
    /// interrupts) fails.
    #[serde(default)]
    pub must_pass: Vec<String>,
    /// The kernel is expected to die of an unexpected exception: the run
    /// passes (one test) when it reports the exception with its vector,
    /// faulting address and registers and exits with status 3.
    #[serde(default)]
    pub expect_trap: bool,
    /// Boot the capability-dump kernel (`--profile cap-dump --features
    /// cap-dump`, see `kernel.rs`) with the configuration's image: one more
    /// test, `cap_dump_matches_image`, passes when the kernel's dump of the
    /// live derivation tree parses, Graphviz draws it and it matches the
    /// image (`sysimage::live::check_against`); no dump fails it.
    #[serde(default)]
    pub cap_dump: bool,
    /// The cold kernel features its tests need (`kernel/Cargo.toml`:
    /// [`crate::kernel::IOMMU_FEATURES`]); none by default, when the
    /// release kernel (or the test kernel its command line asks for)
    /// boots. A configuration that lists any boots a kernel built with
    /// them ([`Kernel::for_configuration`]); an unknown name is an error.
    #[serde(default)]
    pub features: Vec<String>,
}

impl SystemTest {
    /// The seeded bugs the command line plants (`seed=NAME,...`), if any.
    pub fn seeds(&self) -> Option<&str> {
        self.cmdline
            .split(' ')
            .find_map(|word| word.strip_prefix("seed="))
    }

    /// The kernel this configuration boots: the seeded kernel when its
    /// command line plants a seeded bug (the release kernel has none), the
    /// capability-dump kernel for `cap_dump`, the fuzz kernel (with the
    /// abstraction check) for the fuzz program, else the release kernel.
    pub fn kernel(&self) -> Kernel {
        if self.seeds().is_some() {
            Kernel::Seeded
        } else if self.program.as_deref() == Some(crate::fuzz::PROGRAM) {
            Kernel::Fuzz
        } else if self.cap_dump {
            Kernel::CapDump
        } else {
            Kernel::Release
        }
    }

    /// What a configuration must be on its own: the first broken rule.
    fn check(&self) -> std::result::Result<(), String> {
        let arch = self.arch.name();
        if !self.name.starts_with(&format!("{arch}-")) {
            return Err(format!("the name must start with its arch, `{arch}-`"));
        }
        if self.timeout_secs == 0 {
            return Err("timeout_secs must be above 0".into());
        }
        let mut words = self.cmdline.split(' ');
        let first = words.next().unwrap_or_default();
        if !first.starts_with("tests=") || first.len() <= "tests=".len() {
            return Err(format!(
                "the command line must start with `tests=<suite>`, not `{first}`"
            ));
        }
        for word in words {
            let (key, value) = word.split_once('=').unwrap_or_default();
            if key.is_empty() || value.is_empty() {
                return Err(format!(
                    "command-line word `{word}` is not `key=value` (words are separated by one space)"
                ));
            }
        }
        if self.program.is_some() && self.image.is_some() {
            return Err("a program or an image, not both".into());
        }
        if self.cap_dump && self.image.is_none() {
            return Err("a capability dump is checked against an image: add `image`".into());
        }
        // Only a seeded kernel can fail its tests on purpose, and a seeded
        // kernel is only booted to see them fail.
        if self.seeds().is_some() == self.must_fail.is_empty() {
            return Err(
                "`seed=` on the command line goes with `must_fail`, and only with it".into(),
            );
        }
        if self.seeds().is_some() && !self.must_pass.is_empty() {
            return Err("a seeded kernel's tests must fail: no `must_pass`".into());
        }
        if self.seeds().is_some() && self.cap_dump {
            return Err("the seeded kernel has no capability dump".into());
        }
        if !self.qemu_args.len().is_multiple_of(2) {
            return Err("qemu_args come in `-option value` pairs".into());
        }
        if let Some(unknown) = self
            .features
            .iter()
            .find(|f| !crate::kernel::IOMMU_FEATURES.contains(&f.as_str()))
        {
            return Err(format!(
                "unknown kernel feature `{unknown}` in `features` (the kernel's are {})",
                crate::kernel::IOMMU_FEATURES.join(", ")
            ));
        }
        Ok(())
    }
}

/// The file of system-test configurations, as named in errors.
pub const TABLE_FILE: &str = "tools/xtask/system-tests.toml";

/// [`TABLE_FILE`]'s contents, compiled in: xtask needs no path at run time.
const TABLE: &str = include_str!("../system-tests.toml");

fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

/// Every system-test configuration, run by `cargo xtask test`, in the
/// file's order; parsed and checked on first use.
pub fn system_tests() -> Result<&'static [SystemTest]> {
    static TESTS: OnceLock<Result<Vec<SystemTest>>> = OnceLock::new();
    TESTS
        .get_or_init(|| parse_table(TABLE))
        .as_deref()
        .map_err(Clone::clone)
}

/// The file's shape: `[[test]]` tables and nothing else. Each is kept as a
/// table with its place first, so an error can name line and configuration.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    test: Vec<toml::Spanned<toml::Table>>,
}

/// Parses and checks the system-test table `text` (the contents of
/// [`TABLE_FILE`]).
pub(crate) fn parse_table(text: &str) -> Result<Vec<SystemTest>> {
    const FIX: &str = "fix the entry (the keys are listed at the top of the file)";
    let file: TableFile = toml::from_str(text).map_err(|error| {
        let at = error.span().map_or(String::new(), |span| {
            let (line, column) = sysimage::error::line_column(text, span.start);
            format!(":{line}:{column}")
        });
        Error::new(format!("{TABLE_FILE}{at}: {}", error.message()), FIX)
    })?;
    let mut tests: Vec<SystemTest> = Vec::with_capacity(file.test.len());
    let mut names = HashSet::new();
    for (index, entry) in file.test.into_iter().enumerate() {
        let (line, column) = sysimage::error::line_column(text, entry.span().start);
        let table = entry.into_inner();
        let label = match table.get("name").and_then(toml::Value::as_str) {
            Some(name) => format!("test \"{name}\""),
            None => format!("test {} (no name)", index + 1),
        };
        let reject = |problem: &str| {
            Error::new(
                format!("{TABLE_FILE}:{line}:{column}: {label}: {problem}"),
                FIX,
            )
        };
        let test: SystemTest = toml::Value::Table(table)
            .try_into()
            .map_err(|error: toml::de::Error| reject(error.message().trim_end()))?;
        test.check().map_err(|problem| reject(&problem))?;
        if !names.insert(test.name.clone()) {
            return Err(reject("the name is taken by an earlier configuration"));
        }
        tests.push(test);
    }
    Ok(tests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_round_trip() {
        use clap::ValueEnum;
        assert_eq!(Arch::value_variants(), Arch::ALL);
        for arch in Arch::ALL {
            assert_eq!(Arch::from_str(arch.name(), false), Ok(arch));
            // The table's spelling is the command line's.
            let value = toml::Value::String(arch.name().to_string());
            assert_eq!(value.try_into::<Arch>(), Ok(arch));
            assert_eq!(arch.machine().arch, arch);
        }
        assert_eq!(Arch::X86_64.target(), "x86_64-unknown-none");
        assert_eq!(Arch::X86_64.user_target(), "x86_64-unknown-none");
        assert_eq!(
            Arch::Aarch64.user_target(),
            "aarch64-unknown-none-softfloat"
        );
    }

    #[test]
    fn unknown_arch_names_the_choices() {
        use clap::ValueEnum;
        let error = Arch::from_str("riscv64", false).unwrap_err();
        assert!(error.contains("riscv64"), "{error}");
        let choices: Vec<_> = Arch::value_variants()
            .iter()
            .filter_map(|arch| arch.to_possible_value())
            .map(|value| value.get_name().to_string())
            .collect();
        assert_eq!(choices, ["x86_64", "aarch64"]);
    }

    #[test]
    fn guest_exit_encodings() {
        assert_eq!(GuestExit::IsaDebugExit.qemu_status(0), 1);
        assert_eq!(GuestExit::IsaDebugExit.qemu_status(1), 3);
        assert_eq!(GuestExit::IsaDebugExit.qemu_status(4), 9);
        assert_eq!(GuestExit::Semihosting.qemu_status(0), 0);
        assert_eq!(GuestExit::Semihosting.qemu_status(3), 3);
    }

    /// The file parses and passes [`SystemTest::check`] row by row (names
    /// unique and led by the arch, `tests=` first, `key=value` words, a
    /// program or an image, a dump only with an image, `seed=` exactly with
    /// `must_fail` and never with a dump, arguments in pairs); every
    /// architecture has a row.
    #[test]
    fn system_test_table_is_consistent() {
        let tests = system_tests().unwrap_or_else(|error| panic!("{error}"));
        assert!(!tests.is_empty());
        for arch in Arch::ALL {
            assert!(
                tests.iter().any(|config| config.arch == arch),
                "no test for {arch:?}"
            );
        }
    }

    /// Each broken rule is an error naming the file, the line and the entry.
    #[test]
    fn table_errors_name_the_entry() {
        let good = "[[test]]\nname = \"x86_64-a\"\narch = \"x86_64\"\ncmdline = \"tests=user\"\n";
        let tests = parse_table(good).unwrap();
        assert_eq!(tests[0].timeout_secs, DEFAULT_TIMEOUT_SECS);
        assert!(tests[0].qemu_args.is_empty() && tests[0].must_fail.is_empty());
        for (second, problem) in [
            (
                "name = \"x86_64-b\"\narch = \"x86_64\"\ncmdline = \"tests=user\"\nqemu_arg = []",
                "unknown field `qemu_arg`",
            ),
            (
                "name = \"x86_64-b\"\narch = \"riscv64\"\ncmdline = \"tests=user\"",
                "riscv64",
            ),
            (
                "name = \"x86_64-b\"\narch = \"x86_64\"",
                "missing field `cmdline`",
            ),
            (
                "name = \"x86_64-b\"\narch = \"aarch64\"\ncmdline = \"tests=user\"",
                "start with its arch",
            ),
            (
                "name = \"x86_64-b\"\narch = \"x86_64\"\ncmdline = \"user\"",
                "`tests=<suite>`",
            ),
            (
                "name = \"x86_64-b\"\narch = \"x86_64\"\ncmdline = \"tests=user  a=1\"",
                "not `key=value`",
            ),
            (
                "name = \"x86_64-b\"\narch = \"x86_64\"\ncmdline = \"tests=user seed=x\"",
                "must_fail",
            ),
            (
                "name = \"x86_64-b\"\narch = \"x86_64\"\ncmdline = \"tests=user\"\nprogram = \"p\"\nimage = \"i\"",
                "not both",
            ),
            (
                "name = \"x86_64-b\"\narch = \"x86_64\"\ncmdline = \"tests=user\"\ncap_dump = true",
                "add `image`",
            ),
            (
                "name = \"x86_64-b\"\narch = \"x86_64\"\ncmdline = \"tests=user\"\nqemu_args = [\"-device\"]",
                "pairs",
            ),
            (
                "name = \"x86_64-b\"\narch = \"x86_64\"\ncmdline = \"tests=user\"\ntimeout_secs = 0",
                "above 0",
            ),
            (
                "name = \"x86_64-a\"\narch = \"x86_64\"\ncmdline = \"tests=user\"",
                "taken",
            ),
        ] {
            let text = format!("{good}\n[[test]]\n{second}\n");
            let error = parse_table(&text).unwrap_err().problem;
            let name = if problem == "taken" {
                "x86_64-a"
            } else {
                "x86_64-b"
            };
            assert!(
                error.starts_with(&format!("{TABLE_FILE}:6:1: test \"{name}\": ")),
                "{error}"
            );
            assert!(error.contains(problem), "{error}");
        }
        // Outside any entry: the file's own line.
        let error = parse_table("tests = 1\n").unwrap_err().problem;
        assert!(error.starts_with(&format!("{TABLE_FILE}:1:1: ")), "{error}");
    }

    #[test]
    fn vtd_configurations_carry_an_intel_iommu_and_the_measured_facts() {
        let tests = system_tests().unwrap();
        for config in tests.iter().filter(|config| config.arch == Arch::X86_64) {
            assert_eq!(config.qemu_args[0], "-device");
            assert!(
                config.qemu_args[1].starts_with("intel-iommu"),
                "{}",
                config.name
            );
            // The boot suite checks the decoded registers; other suites
            // (the cross-check) need no facts.
            if config.cmdline.starts_with("tests=boot") {
                assert!(config.cmdline.contains("vtd.ver=0x10"), "{}", config.name);
            }
        }
        // The QEMU 10.0.2 values measured in the project's notes.
        let legacy = tests
            .iter()
            .find(|config| config.name == "x86_64-vtd-legacy")
            .unwrap();
        assert!(legacy.cmdline.contains("vtd.cap=0x00d2008c222f0606"));
        assert!(legacy.cmdline.contains("vtd.ecap=0x0000000000f00f4a"));
        let smmu = tests
            .iter()
            .find(|config| config.name == "aarch64-smmuv3")
            .unwrap();
        assert!(smmu.cmdline.contains("smmu.idr0=0x0d44101b"));
        assert!(smmu.cmdline.contains("smmu.idr1=0x02730010"));
        assert!(smmu.cmdline.contains("smmu.idr5=0x74"));
    }
}
