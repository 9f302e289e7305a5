//! Setting up the machine, automatically on every `run`, `build` and `test`:
//! the Rust targets from `rust-toolchain.toml` and QEMU 10.0 or newer; for
//! `graph`, Graphviz.
//!
//! Debian 12 ships QEMU 7.2, which lacks what the kernel needs (SMMUv3
//! nesting, VT-d scalable-mode first stage), so QEMU comes from
//! bookworm-backports. As root xtask installs it; otherwise it prints the
//! exact commands and stops. Nothing is installed by hand in advance: a fresh
//! machine gets the same steps.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::machines::Machine;
use crate::parse;

/// The oldest QEMU that emulates what the kernel is tested against.
pub const MIN_QEMU: (u32, u32) = (10, 0);

/// Where the backports source is written.
pub const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/portcullis-backports.sources";

/// The deb822 source for bookworm-backports (same URI and keyring as Debian's own).
pub const BACKPORTS_SOURCE: &str = "\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

/// Makes sure rustup has installed every target `rust-toolchain.toml` lists.
pub fn rust_targets(root: &Path) -> Result<()> {
    let wanted = toolchain_targets(root)?;
    let installed = match Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(root)
        .output()
    {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
        // Without rustup there is nothing to check; cargo will name a missing target.
        _ => return Ok(()),
    };
    let missing: Vec<&str> = wanted
        .iter()
        .map(String::as_str)
        .filter(|target| !installed.lines().any(|line| line.trim() == *target))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let missing = missing.join(" ");
    eprintln!("xtask: installing the Rust targets {missing}");
    let status = Command::new("rustup")
        .args(["target", "add"])
        .args(missing.split(' '))
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status();
    match status {
        Ok(status) if status.success() => Ok(()),
        _ => Err(Error::new(
            format!("could not install the Rust targets {missing}"),
            format!("run `rustup target add {missing}` in the workspace"),
        )),
    }
}

/// The `targets` list of `rust-toolchain.toml`.
fn toolchain_targets(root: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct File {
        toolchain: Toolchain,
    }
    #[derive(serde::Deserialize)]
    struct Toolchain {
        #[serde(default)]
        targets: Vec<String>,
    }
    let path = root.join("rust-toolchain.toml");
    let text = fs::read_to_string(&path).map_err(|error| {
        Error::new(
            format!("cannot read {}: {error}", path.display()),
            "run xtask inside a Portcullis checkout",
        )
    })?;
    let file: File = toml::from_str(&text).map_err(|error| {
        Error::new(
            format!("{}: {}", path.display(), error.message().trim_end()),
            "fix rust-toolchain.toml",
        )
    })?;
    Ok(file.toolchain.targets)
}

/// What one QEMU binary looks like on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QemuFound {
    /// Not on PATH.
    Missing,
    /// Present but its version could not be read or is too old.
    TooOld(String),
    /// Good enough.
    Ok,
}

/// Checks one QEMU binary.
fn probe(qemu: &str) -> QemuFound {
    let output = match Command::new(qemu)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(_) => return QemuFound::Missing,
    };
    let text = String::from_utf8_lossy(&output.stdout);
    judge(&text)
}

/// Judges `--version` output against [`MIN_QEMU`].
pub fn judge(version_output: &str) -> QemuFound {
    match parse::qemu_version(version_output) {
        Some((major, minor, _)) if (major, minor) >= MIN_QEMU => QemuFound::Ok,
        Some((major, minor, micro)) => QemuFound::TooOld(format!("{major}.{minor}.{micro}")),
        None => QemuFound::TooOld("an unreadable version".to_string()),
    }
}

/// Makes sure the QEMU of each machine is 10.0 or newer, installing it from
/// bookworm-backports when running as root.
pub fn qemu(machines: &[&Machine]) -> Result<()> {
    let problems = |machines: &[&Machine]| -> Vec<String> {
        machines
            .iter()
            .filter_map(|machine| match probe(machine.qemu) {
                QemuFound::Ok => None,
                QemuFound::Missing => Some(format!("{} is not installed", machine.qemu)),
                QemuFound::TooOld(version) => Some(format!("{} is {version}", machine.qemu)),
            })
            .collect()
    };
    let found = problems(machines);
    if found.is_empty() {
        return Ok(());
    }
    let summary = format!(
        "QEMU {}.{} or newer is needed ({})",
        MIN_QEMU.0,
        MIN_QEMU.1,
        found.join(", ")
    );
    if !is_root() {
        return Err(Error::new(
            summary,
            format!("install it with:\n{}", install_commands()),
        ));
    }
    eprintln!("xtask: {summary}; installing it from bookworm-backports");
    install()?;
    let left = problems(machines);
    if left.is_empty() {
        Ok(())
    } else {
        Err(Error::new(
            format!(
                "after installing from bookworm-backports: {}",
                left.join(", ")
            ),
            format!(
                "check `apt-cache policy qemu-system-x86 qemu-system-arm`; the commands were:\n{}",
                install_commands()
            ),
        ))
    }
}

/// The Debian package with Graphviz `dot`, which draws `cargo xtask graph`.
pub const GRAPHVIZ_PACKAGE: &str = "graphviz";

/// Makes sure Graphviz `dot` is installed, installing Debian's `graphviz`
/// when running as root; otherwise the error gives the exact command.
pub fn graphviz() -> Result<()> {
    let present = || {
        Command::new("dot")
            .arg("-V")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if present() {
        return Ok(());
    }
    let command =
        format!("  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y {GRAPHVIZ_PACKAGE}");
    if !is_root() {
        return Err(Error::new(
            "Graphviz `dot` is not installed",
            format!("install it with:\n{command}"),
        ));
    }
    eprintln!("xtask: Graphviz `dot` is missing; installing Debian's {GRAPHVIZ_PACKAGE}");
    if apt(&["install", "-y", GRAPHVIZ_PACKAGE]).is_err() {
        // A fresh machine may not have package lists yet.
        apt(&["update"])?;
        apt(&["install", "-y", GRAPHVIZ_PACKAGE])?;
    }
    if present() {
        Ok(())
    } else {
        Err(Error::new(
            format!("`dot` is still missing after installing {GRAPHVIZ_PACKAGE}"),
            format!("check `apt-cache policy {GRAPHVIZ_PACKAGE}`; the command was:\n{command}"),
        ))
    }
}

/// The commands [`install`] runs, written for a user who is not root.
pub fn install_commands() -> String {
    format!(
        "  printf '{}' | sudo tee {BACKPORTS_FILE}\n  sudo apt-get update\n  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -t bookworm-backports {}",
        BACKPORTS_SOURCE.replace('\n', "\\n"),
        packages().join(" ")
    )
}

/// The Debian packages with the QEMUs of every machine.
fn packages() -> Vec<&'static str> {
    crate::machines::Arch::ALL
        .iter()
        .map(|arch| arch.machine().package)
        .collect()
}

/// Whether xtask runs as root (it then may install packages).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Adds the backports source and installs QEMU from it.
fn install() -> Result<()> {
    let current = fs::read_to_string(BACKPORTS_FILE).unwrap_or_default();
    if current != BACKPORTS_SOURCE {
        fs::write(BACKPORTS_FILE, BACKPORTS_SOURCE).map_err(|error| {
            Error::new(
                format!("cannot write {BACKPORTS_FILE}: {error}"),
                format!("install QEMU with:\n{}", install_commands()),
            )
        })?;
    }
    apt(&["update"])?;
    let mut install = vec!["install", "-y", "-t", "bookworm-backports"];
    install.extend(packages());
    apt(&install)
}

fn apt(args: &[&str]) -> Result<()> {
    // apt's progress goes to stderr: stdout is the guest's (run) or the test log.
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status();
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(Error::new(
            format!("`apt-get {}` failed ({status})", args.join(" ")),
            "see apt's output above; QEMU 10.0 comes from Debian 12's bookworm-backports",
        )),
        Err(error) => Err(Error::new(
            format!("cannot run apt-get: {error}"),
            "on a system without apt, install QEMU 10.0 or newer (qemu-system-x86_64, qemu-system-aarch64) yourself",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_judged_by_major_and_minor() {
        assert_eq!(
            judge("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"),
            QemuFound::Ok
        );
        assert_eq!(judge("QEMU emulator version 10.1.0"), QemuFound::Ok);
        assert_eq!(
            judge("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)"),
            QemuFound::TooOld("7.2.15".into())
        );
        assert_eq!(
            judge("QEMU emulator version 9.2.4"),
            QemuFound::TooOld("9.2.4".into())
        );
        assert!(matches!(judge("garbage"), QemuFound::TooOld(_)));
    }

    #[test]
    fn install_commands_are_complete() {
        let commands = install_commands();
        assert!(commands.contains(BACKPORTS_FILE));
        assert!(commands.contains("Suites: bookworm-backports"));
        assert!(commands.contains("apt-get update"));
        assert!(commands.contains("-t bookworm-backports qemu-system-x86 qemu-system-arm"));
    }

    #[test]
    fn toolchain_lists_the_kernel_and_user_targets() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let targets = toolchain_targets(&root).unwrap();
        for arch in crate::machines::Arch::ALL {
            assert!(targets.contains(&arch.target()), "{targets:?}");
            assert!(targets.contains(&arch.user_target()), "{targets:?}");
        }
    }
}
