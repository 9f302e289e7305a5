//! Build script: links the program with rt's linker script, as a plain
//! static executable at fixed addresses (not the targets' default static
//! PIE: no loader applies relocations), with 4 KiB segment alignment in
//! the file (aarch64 defaults to 64 KiB). Host builds link nothing special.
fn main() {
    if let Ok(script) = std::env::var("DEP_PORTCULLIS_RT_LINKER_SCRIPT") {
        println!("cargo::rustc-link-arg-bins=-T{script}");
        println!("cargo::rustc-link-arg-bins=--no-pie");
        println!("cargo::rustc-link-arg-bins=-zmax-page-size=4096");
    }
}
