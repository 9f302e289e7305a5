//! Build script: selects the linker script for the target architecture.
fn main() {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let script = match arch.as_str() {
        "x86_64" => "src/arch/x86_64/link.ld",
        "aarch64" => "src/arch/aarch64/link.ld",
        _ => return,
    };
    println!("cargo:rerun-if-changed={script}");
    println!("cargo:rustc-link-arg-bins=-T{dir}/{script}");
    // The kernel is linked at fixed addresses: a plain static executable, not
    // the target's default static PIE (the 32-bit PVH trampoline uses
    // absolute addresses). The code itself stays position independent.
    println!("cargo:rustc-link-arg-bins=--no-pie");
}
