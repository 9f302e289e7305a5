//! Fuzz target `vtd_dmar`: the ACPI DMAR table (VT-d 8), which firmware
//! hands the kernel, through `iommu::vtd::dmar::Dmar::parse` and every
//! accessor the kernel uses (remapping units, reserved regions, device
//! scopes, requester ids).
//!
//! Each input is parsed as it is, then again with its checksum byte set so
//! that the table sums to zero (libFuzzer cannot fix a checksum, and the
//! structures behind it are what needs fuzzing).
//!
//! Asserts: no panic on any table; every error renders; walking a parsed
//! table ends, with no more structures and scopes than its length allows
//! (each takes at least 8 and 6 bytes) and every reserved region's base
//! at or below its limit.
#![no_main]

use iommu::vtd::dmar::Dmar;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    walk(bytes);
    if bytes.len() >= 36 {
        let mut fixed = bytes.to_vec();
        let claimed = u32::from_le_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]) as usize;
        let length = claimed.clamp(36, fixed.len());
        fixed[9] = 0;
        let sum = fixed[..length]
            .iter()
            .fold(0u8, |sum, byte| sum.wrapping_add(*byte));
        fixed[9] = sum.wrapping_neg();
        walk(&fixed);
    }
});

/// Parses `bytes` and walks everything a parsed table offers.
fn walk(bytes: &[u8]) {
    let dmar = match Dmar::parse(bytes) {
        Ok(dmar) => dmar,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    let _ = (dmar.host_address_width(), dmar.flags());
    let mut structures = 0;
    let mut scopes = 0;
    for unit in dmar.remapping_units() {
        structures += 1;
        let _ = (unit.includes_all_pci(), unit.register_base, unit.segment);
        for scope in unit.scopes {
            scopes += 1;
            let _ = (scope.kind, scope.enumeration_id, scope.requester_id());
        }
    }
    for region in dmar.reserved_regions() {
        structures += 1;
        assert!(region.base <= region.limit, "{region:?}");
        for scope in region.scopes {
            scopes += 1;
            let _ = scope.requester_id();
        }
    }
    assert!(8 * structures + 6 * scopes <= bytes.len());
}
