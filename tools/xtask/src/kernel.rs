//! Building the kernel: `cargo build --release -p kernel --target <arch>-unknown-none`
//! from the workspace root; the ELF is `target/<target>/release/kernel`.
//! The capability-dump kernel (`run --cap-dump`, the `*-capdump` system
//! tests) is `cargo build --profile cap-dump --features cap-dump -p kernel
//! --target <arch>-unknown-none`, in `target/<target>/cap-dump/kernel`, so
//! it never replaces the release kernel the other tests boot. The seeded
//! kernel (the `*-seeded-*` system tests, whose command line plants a
//! seeded bug with `seed=`) is `cargo build --profile seeded --features
//! seeded-bugs -p kernel --target <arch>-unknown-none`, in
//! `target/<target>/seeded/kernel`, for the same reason: the release kernel
//! has no seeded bugs to switch on. The fuzz kernel (the `*-user-fuzz`
//! system tests and `cargo xtask fuzz`) is `cargo build --profile fuzz
//! --features fuzz-checks -p kernel --target <arch>-unknown-none`, in
//! `target/<target>/fuzz/kernel`: it answers `DebugCheckAbstraction`
//! (`kernel/src/testing/abstraction.rs`), which the release kernel does not
//! contain. The seeded kernel has the check too, so a seeded bug can be
//! shown caught by it.
//!
//! No RUSTFLAGS are added here: flags the kernel needs live in
//! `.cargo/config.toml` and the kernel's build script, so a plain cargo build
//! and xtask produce the same ELF.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::machines::Arch;

/// The cargo that runs xtask (so the pinned toolchain builds the kernel too).
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Where the kernel ELF for `arch` lands.
pub fn elf_path(root: &Path, arch: Arch) -> PathBuf {
    package_elf(root, arch, "kernel")
}

/// Where the binary of workspace package `package` lands for `arch`.
pub fn package_elf(root: &Path, arch: Arch, package: &str) -> PathBuf {
    profile_elf(root, arch, "release", package)
}

/// The cargo profile of the capability-dump kernel (`[profile.cap-dump]`
/// in the root Cargo.toml, inheriting `release`).
pub const CAP_DUMP_PROFILE: &str = "cap-dump";
/// The kernel feature that prints the live derivation tree once init has
/// started every domain (`capdump: ` lines, read by `sysimage::live`).
pub const CAP_DUMP_FEATURE: &str = "cap-dump";

/// Where the capability-dump kernel ELF for `arch` lands.
pub fn cap_dump_elf_path(root: &Path, arch: Arch) -> PathBuf {
    profile_elf(root, arch, CAP_DUMP_PROFILE, "kernel")
}

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

/// Which kernel a system-test configuration boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// The release kernel, what `cargo xtask run` boots.
    Release,
    /// The capability-dump kernel ([`build_cap_dump`]).
    CapDump,
    /// The kernel with seeded bugs ([`build_seeded`]).
    Seeded,
    /// The kernel with the abstraction check ([`build_fuzz`]).
    Fuzz,
}

impl Kernel {
    /// Where this kernel's ELF for `arch` lands.
    pub fn elf_path(self, root: &Path, arch: Arch) -> PathBuf {
        match self {
            Kernel::Release => elf_path(root, arch),
            Kernel::CapDump => cap_dump_elf_path(root, arch),
            Kernel::Seeded => seeded_elf_path(root, arch),
            Kernel::Fuzz => profile_elf(root, arch, FUZZ_PROFILE, "kernel"),
        }
    }
}

/// Where the seeded kernel ELF for `arch` lands.
pub fn seeded_elf_path(root: &Path, arch: Arch) -> PathBuf {
    profile_elf(root, arch, SEEDED_PROFILE, "kernel")
}

/// Where `package` lands for `arch` when built with cargo profile `profile`.
fn profile_elf(root: &Path, arch: Arch, profile: &str, package: &str) -> PathBuf {
    target_dir(root)
        .join(arch.target())
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
    build_package(root, arch, "kernel")
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

/// Builds the kernel for `arch` with the `cap-dump` feature under the
/// `cap-dump` profile and returns the ELF's path.
pub fn build_cap_dump(root: &Path, arch: Arch) -> Result<PathBuf> {
    build_with(
        root,
        arch,
        "kernel",
        CAP_DUMP_PROFILE,
        &[CAP_DUMP_FEATURE],
        &[],
    )
}

/// Builds the kernel for `arch` with the `seeded-bugs` feature (and the
/// abstraction check, `fuzz-checks`, so a seeded bug can be caught by the
/// fuzzer) under the `seeded` profile and returns the ELF's path.
pub fn build_seeded(root: &Path, arch: Arch) -> Result<PathBuf> {
    let features = [SEEDED_FEATURE, FUZZ_FEATURE];
    build_with(root, arch, "kernel", SEEDED_PROFILE, &features, &[])
}

/// Builds the kernel for `arch` with the `fuzz-checks` feature under the
/// `fuzz` profile and returns the ELF's path.
pub fn build_fuzz(root: &Path, arch: Arch) -> Result<PathBuf> {
    build_with(root, arch, "kernel", FUZZ_PROFILE, &[FUZZ_FEATURE], &[])
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
    let target = arch.target();
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
    fn the_test_kernels_have_their_own_directories() {
        let root = Path::new("/w");
        let release = elf_path(root, Arch::X86_64);
        let dump = cap_dump_elf_path(root, Arch::X86_64);
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
