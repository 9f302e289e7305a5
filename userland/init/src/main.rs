//! The `init` program: the root task's entry, which runs [`init::run`].
//!
//! Init only runs on the bare-metal targets; a host build (the workspace's
//! default members build everything for the host, where `init`'s library
//! is tested) gets a `main` that says so.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

#[cfg(target_os = "none")]
rt::entry!(start);

/// The root task's `main`.
#[cfg(target_os = "none")]
fn start(_startup: &rt::Startup) -> i32 {
    init::run()
}

/// On the host there is no kernel to build a system on.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "init is the root task of a Portcullis image: build it for x86_64-unknown-none or aarch64-unknown-none-softfloat (cargo xtask run --image NAME)"
    );
    std::process::exit(2);
}
