//! Build script: tells program crates which linker script to use.
//!
//! For the bare-metal targets it publishes the absolute path of
//! `link-<arch>.ld` as the `linker_script` metadata of the `portcullis_rt`
//! link name; a program's own build script reads it as
//! `DEP_PORTCULLIS_RT_LINKER_SCRIPT` (see `userland/README.md`). Host builds
//! publish nothing: there is no user program to link.
fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let script = match (os.as_str(), arch.as_str()) {
        ("none", "x86_64") => "link-x86_64.ld",
        ("none", "aarch64") => "link-aarch64.ld",
        _ => return,
    };
    println!("cargo::rerun-if-changed={script}");
    println!("cargo::metadata=linker_script={dir}/{script}");
}
