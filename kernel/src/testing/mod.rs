//! Code only test kernels contain: a release kernel compiles this folder
//! down to nothing.
//!
//! Everything here is behind a cargo feature of the kernel crate, or (like
//! [`seeds::planted`]) is a constant the compiler folds away without it, so
//! `cargo build --release -p kernel` carries none of it. The test kernels
//! have profiles of their own (`[profile.seeded]` in the root Cargo.toml)
//! and never replace the release kernel.

pub mod seeds;
