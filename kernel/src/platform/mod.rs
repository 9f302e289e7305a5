//! Platform discovery: firmware tables (ACPI or device tree) into one description.

#[cfg(target_arch = "x86_64")]
pub mod acpi;
#[cfg(target_arch = "aarch64")]
pub mod devicetree;
