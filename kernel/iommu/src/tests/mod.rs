//! Cross-module host tests: the drivers run against the simulated hardware
//! and the translation models check what they wrote.

mod smmu_boot;
mod vtd_boot;
