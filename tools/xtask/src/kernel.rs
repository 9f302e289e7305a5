//! Building the kernel: `cargo build --release -p kernel --target <arch>-unknown-none`
//! from the workspace root; the ELF is `target/<target>/release/kernel`.
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
    target_dir(root)
        .join(arch.target())
        .join("release")
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
    let target = arch.target();
    eprintln!("xtask: building {package} for {target}");
    let status = Command::new(cargo())
        .args(["build", "--release", "-p", package, "--target", &target])
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
            format!("{package} did not build for {target}"),
            format!(
                "see cargo's errors above (cargo build --release -p {package} --target {target})"
            ),
        ));
    }
    let elf = package_elf(root, arch, package);
    if !elf.is_file() {
        return Err(Error::new(
            format!("cargo built {package} but {} is missing", elf.display()),
            format!("check that {package}'s [[bin]] is named {package}"),
        ));
    }
    Ok(elf)
}
