//! Building the kernel: `cargo build --release -p kernel --target <arch>-unknown-none`
//! from the workspace root; the ELF is `target/<target>/release/kernel`.
//! That is the release kernel: no test code (`kernel/src/testing/`), what
//! `cargo xtask run` boots. Every other kernel is a [`Kernel`] variant, the
//! same source with cargo features, in a profile folder of its own; which
//! one a system-test configuration boots follows from its command line
//! ([`Kernel::for_configuration`]). The self-test kernel (`tests=boot`,
//! `trap`, `xcheck`, `root-task`) is `cargo build --profile self-tests
//! --features self-tests`, in `target/<target>/self-tests/kernel`; the
//! benchmark kernel (`bench=`, `cargo xtask bench`) is `cargo build
//! --profile benchmarks --features bench`, in
//! `target/<target>/benchmarks/kernel`.
//! The capability-dump kernel (`run --cap-dump`, the `*-capdump` system
//! tests) is `cargo build --profile cap-dump --features cap-dump -p kernel
//! --target <arch>-unknown-none`, in `target/<target>/cap-dump/kernel`, so
//! it never replaces the release kernel the other tests boot. The seeded
//! kernel (the `*-seeded-*` system tests, whose command line plants a
//! seeded bug with `seed=`) is `cargo build --profile seeded --features
//! seeded-bugs -p kernel --target <arch>-unknown-none`, in
//! `target/<target>/seeded/kernel`, for the same reason: the release kernel
//! has no seeded bugs to switch on (the seeded kernel also has the
//! self-tests, for its `tests=boot seed=iommu-off` rows). The fuzz kernel (the `*-user-fuzz`
//! system tests and `cargo xtask fuzz`) is `cargo build --profile fuzz
//! --features fuzz-checks -p kernel --target <arch>-unknown-none`, in
//! `target/<target>/fuzz/kernel`: it answers `DebugCheckAbstraction`
//! (`kernel/src/testing/abstraction.rs`), which the release kernel does not
//! contain. The seeded kernel has the check too, so a seeded bug can be
//! shown caught by it.
//!
//! The release kernel has the kernel's default features: none of its cold
//! IOMMU features ([`IOMMU_FEATURES`]: SVA, page requests, dirty
//! tracking), which answer `NotBuilt`. The full kernel
//! (`cargo build --profile full --features full`, in
//! `target/<target>/full/kernel`) has them all: a configuration that lists
//! `features` boots it, and the test kernels but the benchmark kernel are
//! built with `full` too (the self-tests, the fuzzer, the seeded bugs and
//! the capability dump cover every invocation); the benchmark kernel has
//! the release kernel's set, so its hot rows time the kernel users boot.
//!
//! No RUSTFLAGS are added here: flags the kernel needs live in
//! `.cargo/config.toml` and the kernel's build script, so a plain cargo build
//! and xtask produce the same ELF.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::machines::{Arch, SystemTest};

/// The cargo that runs xtask (so the pinned toolchain builds the kernel too).
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Where the binary of workspace package `package` lands for `arch`.
pub fn package_elf(root: &Path, arch: Arch, package: &str) -> PathBuf {
    profile_elf(root, arch, "release", package)
}

/// The kernel's cold IOMMU features (kernel/Cargo.toml), the names a
/// system-test configuration's `features` may list.
pub const IOMMU_FEATURES: [&str; 4] = ["sva", "page-requests", "dirty", FULL_FEATURE];

/// The kernel feature that turns every one of [`IOMMU_FEATURES`] on.
pub const FULL_FEATURE: &str = "full";
/// The cargo profile of the full kernel (`[profile.full]`, inheriting
/// `release`).
pub const FULL_PROFILE: &str = "full";

/// The cargo profile of the capability-dump kernel (`[profile.cap-dump]`
/// in the root Cargo.toml, inheriting `release`).
pub const CAP_DUMP_PROFILE: &str = "cap-dump";
/// The kernel feature that prints the live derivation tree once init has
/// started every domain (`capdump: ` lines, read by `sysimage::live`).
pub const CAP_DUMP_FEATURE: &str = "cap-dump";

/// The cargo profile of the seeded kernel (`[profile.seeded]`, inheriting
/// `release`).
pub const SEEDED_PROFILE: &str = "seeded";
/// The kernel feature that compiles the seeded bugs in
/// (`kernel/src/testing/seeds.rs`), planted by `seed=NAME`.
pub const SEEDED_FEATURE: &str = "seeded-bugs";

/// The cargo profile of the fuzz kernel (`[profile.fuzz]`, inheriting
/// `release`).
pub const FUZZ_PROFILE: &str = "fuzz";
/// The kernel feature that compiles the abstraction check in
/// (`kernel/src/testing/abstraction.rs`, the `DebugCheckAbstraction` call).
pub const FUZZ_FEATURE: &str = "fuzz-checks";

/// The cargo profile of the self-test kernel (`[profile.self-tests]`).
pub const SELF_TEST_PROFILE: &str = "self-tests";
/// The kernel feature that compiles the boot self-tests, the IOMMU
/// cross-check and the kernel-mode edu driver in (`kernel/src/testing/`).
pub const SELF_TEST_FEATURE: &str = "self-tests";
/// The `tests=` suites the kernel itself runs, which only a kernel with
/// [`SELF_TEST_FEATURE`] has (`tests=user` and `tests=image` are run by
/// the boot module's programs, on the release kernel).
pub const SELF_TEST_SUITES: [&str; 4] = ["boot", "trap", "xcheck", "root-task"];

/// The cargo profile of the benchmark kernel (`[profile.benchmarks]`; not
/// cargo's built-in `bench`, whose output shares the release folder).
pub const BENCH_PROFILE: &str = "benchmarks";
/// The kernel feature that compiles the kernel's own benchmarks in
/// (`kernel/src/testing/bench.rs`, run by `bench=NAME,...`).
pub const BENCH_FEATURE: &str = "bench";

/// Which kernel a system-test configuration (or `run`, `bench`, `fuzz`)
/// boots. Every kernel but the release kernel is built from the same
/// source with test code switched on by cargo features, into a profile
/// folder of its own, so it never replaces the release kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// The release kernel, what `cargo xtask run` boots: no test code,
    /// the default features (none of [`IOMMU_FEATURES`]).
    Release,
    /// The release kernel with every cold IOMMU feature (`full`).
    Full,
    /// The capability-dump kernel (`DebugCapDump`).
    CapDump,
    /// The kernel with seeded bugs (and the abstraction check and the
    /// self-tests, for the `tests=boot seed=iommu-off` rows).
    Seeded,
    /// The kernel with the abstraction check (`DebugCheckAbstraction`).
    Fuzz,
    /// The kernel with the boot self-tests, the IOMMU cross-check and the
    /// kernel-mode edu driver (`tests=boot`, `trap`, `xcheck`, `root-task`).
    SelfTest,
    /// The kernel with its own benchmarks (`bench=NAME`).
    Bench,
}

impl Kernel {
    /// The kernel a system-test configuration boots: what the table says
    /// ([`SystemTest::kernel`]: seeded, fuzz, capability dump), and where
    /// that is the release kernel, what its command line asks for
    /// ([`Kernel::for_command_line`]); the release kernel becomes the full
    /// kernel when the configuration lists kernel `features`.
    pub fn for_configuration(config: &SystemTest) -> Kernel {
        match config.kernel() {
            Kernel::Release => match Kernel::for_command_line(&config.cmdline) {
                Kernel::Release if !config.features.is_empty() => Kernel::Full,
                other => other,
            },
            other => other,
        }
    }

    /// Whether it is built with kernel feature `feature` (one of
    /// [`IOMMU_FEATURES`]): by name, or through `full`.
    #[cfg(test)]
    pub fn has_feature(self, feature: &str) -> bool {
        let features = self.features();
        features.contains(&feature)
            || features.contains(&FULL_FEATURE) && IOMMU_FEATURES.contains(&feature)
    }

    /// The kernel a command line needs: the benchmark kernel for `bench=`,
    /// the self-test kernel when `tests=` names a suite the kernel runs
    /// itself ([`SELF_TEST_SUITES`]), else the release kernel.
    pub fn for_command_line(cmdline: &str) -> Kernel {
        let words = || cmdline.split_whitespace();
        if words().any(|word| word.starts_with("bench=")) {
            return Kernel::Bench;
        }
        let self_test = words()
            .filter_map(|word| word.strip_prefix("tests="))
            .flat_map(|suites| suites.split(','))
            .any(|suite| SELF_TEST_SUITES.contains(&suite));
        if self_test {
            Kernel::SelfTest
        } else {
            Kernel::Release
        }
    }

    /// The cargo profile it is built with.
    pub fn profile(self) -> &'static str {
        match self {
            Kernel::Release => "release",
            Kernel::Full => FULL_PROFILE,
            Kernel::CapDump => CAP_DUMP_PROFILE,
            Kernel::Seeded => SEEDED_PROFILE,
            Kernel::Fuzz => FUZZ_PROFILE,
            Kernel::SelfTest => SELF_TEST_PROFILE,
            Kernel::Bench => BENCH_PROFILE,
        }
    }

    /// The kernel features it is built with.
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Kernel::Release => &[],
            Kernel::Full => &[FULL_FEATURE],
            Kernel::CapDump => &[CAP_DUMP_FEATURE, FULL_FEATURE],
            Kernel::Seeded => &[
                SEEDED_FEATURE,
                FUZZ_FEATURE,
                SELF_TEST_FEATURE,
                FULL_FEATURE,
            ],
            Kernel::Fuzz => &[FUZZ_FEATURE, FULL_FEATURE],
            Kernel::SelfTest => &[SELF_TEST_FEATURE, FULL_FEATURE],
            // The release kernel's features: the hot rows time what users
            // boot.
            Kernel::Bench => &[BENCH_FEATURE],
        }
    }

    /// Where this kernel's ELF for `arch` lands.
    pub fn elf_path(self, root: &Path, arch: Arch) -> PathBuf {
        profile_elf(root, arch, self.profile(), KERNEL_PACKAGE)
    }

    /// Builds this kernel for `arch` and returns the ELF's path.
    pub fn build(self, root: &Path, arch: Arch) -> Result<PathBuf> {
        build_with(
            root,
            arch,
            KERNEL_PACKAGE,
            self.profile(),
            self.features(),
            &[],
        )
    }
}

/// The kernel's package (the only one built for [`Arch::target`]).
const KERNEL_PACKAGE: &str = "kernel";

/// The Rust target `package` is built for on `arch`: the kernel's own, or
/// the user programs' ([`Arch::user_target`]: no FP/SIMD in user code).
fn package_target(arch: Arch, package: &str) -> String {
    if package == KERNEL_PACKAGE {
        arch.target()
    } else {
        arch.user_target()
    }
}

/// Where `package` lands for `arch` when built with cargo profile `profile`.
fn profile_elf(root: &Path, arch: Arch, profile: &str, package: &str) -> PathBuf {
    target_dir(root)
        .join(package_target(arch, package))
        .join(profile)
        .join(package)
}

pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Builds the kernel for `arch` and returns the ELF's path. Cargo's output
/// goes to stderr so that stdout stays the guest's.
pub fn build(root: &Path, arch: Arch) -> Result<PathBuf> {
    build_package(root, arch, KERNEL_PACKAGE)
}

/// Builds the workspace binary package `package` (its binary has the same
/// name) for `arch` and returns the ELF's path.
pub fn build_package(root: &Path, arch: Arch, package: &str) -> Result<PathBuf> {
    build_with(root, arch, package, "release", &[], &[])
}

/// [`build_package`] with environment variables set for the compiler, for
/// a program that reads them with `option_env!` (cargo rebuilds it when
/// they change). Every variable in `env` is set; give each one the program
/// reads, so nothing is inherited from the caller's environment.
pub fn build_package_with_env(
    root: &Path,
    arch: Arch,
    package: &str,
    env: &[(&str, String)],
) -> Result<PathBuf> {
    build_with(root, arch, package, "release", &[], env)
}

/// `cargo build` of `package` for `arch` with cargo profile `profile`,
/// `features` and the environment variables `env`; returns the ELF's path.
fn build_with(
    root: &Path,
    arch: Arch,
    package: &str,
    profile: &str,
    features: &[&str],
    env: &[(&str, String)],
) -> Result<PathBuf> {
    let target = package_target(arch, package);
    let mut args: Vec<String> = vec!["build".into()];
    if profile == "release" {
        args.push("--release".into());
    } else {
        args.extend(["--profile".into(), profile.to_string()]);
    }
    if !features.is_empty() {
        args.extend(["--features".into(), features.join(",")]);
    }
    args.extend([
        "-p".into(),
        package.to_string(),
        "--target".into(),
        target.clone(),
    ]);
    let shown = format!("cargo {}", crate::shell_words(&args));
    let described = if features.is_empty() {
        String::new()
    } else {
        format!(" with {}", features.join(", "))
    };
    eprintln!("xtask: building {package}{described} for {target}");
    let status = Command::new(cargo())
        .args(&args)
        .envs(env.iter().map(|(key, value)| (key, value)))
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .map_err(|error| {
            Error::new(
                format!("cannot run cargo: {error}"),
                "install Rust with rustup",
            )
        })?;
    if !status.success() {
        return Err(Error::new(
            format!("{package}{described} did not build for {target}"),
            format!("see cargo's errors above ({shown})"),
        ));
    }
    let elf = profile_elf(root, arch, profile, package);
    if !elf.is_file() {
        return Err(Error::new(
            format!("cargo built {package} but {} is missing", elf.display()),
            format!("check that {package}'s [[bin]] is named {package}"),
        ));
    }
    Ok(elf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_picks_the_kernel() {
        assert_eq!(Kernel::for_command_line("tests=user"), Kernel::Release);
        assert_eq!(Kernel::for_command_line("tests=image"), Kernel::Release);
        assert_eq!(Kernel::for_command_line("image=default"), Kernel::Release);
        assert_eq!(
            Kernel::for_command_line("tests=boot vtd.ver=0x10"),
            Kernel::SelfTest
        );
        assert_eq!(
            Kernel::for_command_line("tests=user,xcheck"),
            Kernel::SelfTest
        );
        assert_eq!(
            Kernel::for_command_line("tests=root-task"),
            Kernel::SelfTest
        );
        assert_eq!(
            Kernel::for_command_line("bench=null-syscall"),
            Kernel::Bench
        );
    }

    #[test]
    fn every_configuration_boots_a_kernel_with_what_its_command_line_needs() {
        for config in crate::machines::system_tests().unwrap() {
            let kernel = Kernel::for_configuration(config);
            let needed = match Kernel::for_command_line(&config.cmdline) {
                Kernel::SelfTest => Some(SELF_TEST_FEATURE),
                Kernel::Bench => Some(BENCH_FEATURE),
                _ => None,
            };
            if let Some(feature) = needed {
                assert!(
                    kernel.features().contains(&feature),
                    "{} boots {kernel:?}, which lacks `{feature}`",
                    config.name
                );
            }
            if config.seeds().is_some() {
                assert_eq!(kernel, Kernel::Seeded, "{}", config.name);
            }
            for feature in &config.features {
                assert!(
                    kernel.has_feature(feature),
                    "{} lists `{feature}` but boots {kernel:?}, built without it",
                    config.name
                );
            }
        }
        let by_name = |name: &str| {
            let config = crate::machines::system_tests()
                .unwrap()
                .iter()
                .find(|c| c.name == name);
            Kernel::for_configuration(config.expect(name))
        };
        assert_eq!(by_name("x86_64-vtd-scalable"), Kernel::SelfTest);
        assert_eq!(by_name("aarch64-xcheck"), Kernel::SelfTest);
        assert_eq!(by_name("x86_64-image-default"), Kernel::Release);
        assert_eq!(by_name("x86_64-user-hardening"), Kernel::Release);
        assert_eq!(by_name("x86_64-image-default-capdump"), Kernel::CapDump);
        assert_eq!(by_name("x86_64-user-fuzz"), Kernel::Fuzz);
        assert_eq!(by_name("x86_64-sva"), Kernel::Full);
        assert_eq!(by_name("aarch64-user-notbuilt"), Kernel::Release);
    }

    /// Every kernel variant.
    const ALL_KERNELS: [Kernel; 7] = [
        Kernel::Release,
        Kernel::Full,
        Kernel::CapDump,
        Kernel::Seeded,
        Kernel::Fuzz,
        Kernel::SelfTest,
        Kernel::Bench,
    ];

    #[test]
    fn only_the_release_and_benchmark_kernels_lack_the_cold_features() {
        let kernels = ALL_KERNELS;
        for kernel in kernels {
            let lean = matches!(kernel, Kernel::Release | Kernel::Bench);
            for feature in IOMMU_FEATURES {
                assert_eq!(kernel.has_feature(feature), !lean, "{kernel:?} {feature}");
            }
        }
        assert!(!Kernel::Full.has_feature("bench"));
    }

    #[test]
    fn an_unknown_kernel_feature_is_refused() {
        let table = "[[test]]\nname = \"x86_64-a\"\narch = \"x86_64\"\ncmdline = \"tests=user\"\nfeatures = [\"svaa\"]\n";
        let error = crate::machines::parse_table(table).unwrap_err();
        assert!(
            error.to_string().contains("unknown kernel feature `svaa`"),
            "{error}"
        );
    }

    #[test]
    fn every_kernel_has_its_own_directory() {
        let kernels = ALL_KERNELS;
        let mut profiles: Vec<_> = kernels.iter().map(|k| k.profile()).collect();
        profiles.sort();
        profiles.dedup();
        assert_eq!(profiles.len(), kernels.len());
        assert!(
            !profiles.contains(&"bench"),
            "cargo's bench profile shares release's folder"
        );
    }

    #[test]
    fn user_programs_build_for_the_user_target() {
        let root = Path::new("/w");
        let init = package_elf(root, Arch::Aarch64, "init");
        assert!(
            init.ends_with("aarch64-unknown-none-softfloat/release/init"),
            "{}",
            init.display()
        );
        let kernel = package_elf(root, Arch::Aarch64, KERNEL_PACKAGE);
        assert!(
            kernel.ends_with("aarch64-unknown-none/release/kernel"),
            "{}",
            kernel.display()
        );
        let init = package_elf(root, Arch::X86_64, "init");
        assert!(
            init.ends_with("x86_64-unknown-none/release/init"),
            "{}",
            init.display()
        );
    }

    #[test]
    fn the_test_kernels_have_their_own_directories() {
        let root = Path::new("/w");
        let release = Kernel::Release.elf_path(root, Arch::X86_64);
        let dump = Kernel::CapDump.elf_path(root, Arch::X86_64);
        assert!(
            dump.ends_with("x86_64-unknown-none/cap-dump/kernel"),
            "{}",
            dump.display()
        );
        let seeded = Kernel::Seeded.elf_path(root, Arch::Aarch64);
        assert!(
            seeded.ends_with("aarch64-unknown-none/seeded/kernel"),
            "{}",
            seeded.display()
        );
        assert!(
            release.ends_with("x86_64-unknown-none/release/kernel"),
            "{}",
            release.display()
        );
    }
}
