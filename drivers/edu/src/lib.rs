//! The edu driver: a user-level driver for QEMU's edu device that DMAs
//! through its own stage-1 table nested under its IoSpace. Its parts are
//! the device through its mapped registers (`device`), nested DMA memory,
//! an IoSpace plus the driver's own stage-1 table built with `iopt`
//! (`nested`), and the driver as a protection domain of an image, which
//! asks init for its IOMMU capabilities at run time (`story`).
//!
//! The test suite is apart, in the `edu` program (`src/main.rs`,
//! `src/suite.rs`): booted as the root task it runs the IOMMU system tests
//! with these parts; `userland/tests/iobench` uses them too.
#![no_std]
#![deny(unsafe_code)]

pub mod checks;
pub mod device;
pub mod nested;
pub mod story;

/// Bytes each test transfer moves.
pub const LENGTH: u64 = 64;
/// The pattern a test's source buffer holds.
pub const PATTERN: u8 = 0xA5;
