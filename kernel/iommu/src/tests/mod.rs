//! Cross-module host tests: the drivers run against the simulated hardware
//! and the translation models check what they wrote.

mod common;
mod confinement;
mod dirty_property;
mod exactness;
mod fail_closed;
mod revocation;
mod shadow;
mod smmu_attributes;
mod smmu_boot;
mod smmu_recoverable;
mod smmu_translate;
mod unit_tables;
mod vtd_boot;
mod vtd_dirty;
mod vtd_fail_closed;
mod vtd_intremap;
mod vtd_page_requests;
mod vtd_translate;
