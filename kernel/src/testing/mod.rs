//! Code only test kernels contain: a release kernel compiles this folder
//! down to nothing.
//!
//! - `seeds.rs`: the seeded bugs (feature `seeded-bugs`).
//! - `abstraction.rs`: the abstraction check behind `DebugCheckAbstraction`
//!   (feature `fuzz-checks`, profile `fuzz`; the seeded kernel has it too).
//!
//! Everything here is behind a cargo feature of the kernel crate, or (like
//! [`seeds::planted`]) is a constant the compiler folds away without it, so
//! `cargo build --release -p kernel` carries none of it. The test kernels
//! have profiles of their own (`[profile.seeded]`, `[profile.fuzz]` in the root Cargo.toml)
//! and never replace the release kernel.

#[cfg(feature = "fuzz-checks")]
pub mod abstraction;
pub mod seeds;
