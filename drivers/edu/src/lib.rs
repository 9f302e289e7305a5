//! The edu driver's parts, shared by the driver (`src/main.rs`) and the
//! IOMMU benchmark (`userland/tests/iobench`): the device through its
//! mapped registers, and nested DMA memory (an IoSpace plus the driver's
//! own stage-1 table built with `iopt`).
#![no_std]
#![deny(unsafe_code)]

pub mod device;
pub mod nested;
