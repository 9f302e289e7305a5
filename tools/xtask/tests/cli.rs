//! The `xtask` binary's handling of user errors: one line naming the problem
//! and the fix, a non-zero exit, and nothing built or booted first.

use std::process::{Command, Output};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("xtask runs")
}

fn one_error_line(output: &Output) -> String {
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

/// `--arch` is a `clap::ValueEnum`: clap refuses anything else, names the
/// value and lists the choices, before anything is built.
#[test]
fn unknown_arch() {
    for args in [
        &["run", "--arch", "riscv64"][..],
        &["test", "--arch", "riscv64"],
        &["build", "--arch", "riscv64"],
    ] {
        let output = xtask(args);
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with("error: invalid value 'riscv64' for '--arch"),
            "{stderr}"
        );
        assert!(
            stderr.contains("[possible values: x86_64, aarch64]"),
            "{stderr}"
        );
    }
}

#[test]
fn unknown_image_lists_the_available_ones() {
    let line = one_error_line(&xtask(&["run", "--image", "no-such-image"]));
    assert!(line.contains("unknown image `no-such-image`"), "{line}");
    assert!(line.contains("one of: blk, blk-irq, default,"), "{line}");
}

#[test]
fn image_names_are_not_paths() {
    let line = one_error_line(&xtask(&["run", "--image", "../Cargo"]));
    assert!(line.contains("invalid image name"), "{line}");
}

#[test]
fn host_only_and_qemu_only_conflict() {
    let output = xtask(&["test", "--host-only", "--qemu-only"]);
    assert!(!output.status.success());
}
