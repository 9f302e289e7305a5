//! Fuzz target `acpi`: the kernel's ACPI walk (`firmware::acpi`): RSDP,
//! RSDT or XSDT, every table they list, and the MCFG's ECAM window.
//!
//! Each input is physical memory from address 0 with the RSDP at 0 (the
//! seeds: an RSDP, an RSDT or XSDT at 0x40, then a FACP, an MCFG and the
//! `vtd_dmar` seed). It is walked as it is, then again with every checksum
//! on the way made right (the RSDP's, the root table's, each listed
//! table's), since libFuzzer cannot fix a checksum and the structures
//! behind it are what needs fuzzing. The pieces are also fed the raw bytes
//! (RSDP, table header, MCFG).
//!
//! Asserts: no panic; every error renders; every table the walk returns
//! lies within the input, carries its signature, is exactly as long as its
//! header says and sums to zero; an ECAM window decodes buses
//! `first..=last` with `first <= last`, is 1 to 256 MiB, ends inside the
//! 64-bit space, and is an allocation of the MCFG for segment 0.
#![no_main]

use firmware::acpi::{
    self, MCFG_ALLOCATION_LENGTH, MCFG_ALLOCATIONS_OFFSET, RSDP_LENGTH, SDT_HEADER_LENGTH,
};
use firmware::{MemoryImage, lies_within};
use libfuzzer_sys::fuzz_target;

/// Root-table entries whose checksums the fixing pass repairs.
const MAX_FIXED_ENTRIES: usize = 64;

fuzz_target!(|bytes: &[u8]| {
    if let Some(rsdp) = bytes.get(..RSDP_LENGTH) {
        let _ = acpi::parse_rsdp(rsdp.try_into().unwrap());
    }
    if let Some(header) = bytes.get(..SDT_HEADER_LENGTH)
        && let Ok((_, length)) = acpi::parse_header(header.try_into().unwrap())
    {
        assert!(length >= SDT_HEADER_LENGTH);
    }
    check_ecam(bytes);
    walk(bytes);
    let mut fixed = bytes.to_vec();
    fix_checksums(&mut fixed);
    walk(&fixed);
});

/// Walks the tables of memory `bytes` from an RSDP at 0.
fn walk(bytes: &[u8]) {
    let memory = MemoryImage { base: 0, bytes };
    let tables = match acpi::discover(&memory, 0) {
        Ok(tables) => tables,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    for (table, signature) in [(tables.dmar, b"DMAR"), (tables.mcfg, b"MCFG")] {
        let Some(table) = table else { continue };
        assert!(lies_within(table, bytes));
        assert_eq!(&table[..4], signature);
        assert!(acpi::checksum_ok(table));
        let (_, length) = acpi::parse_header(table[..SDT_HEADER_LENGTH].try_into().unwrap())
            .expect("a returned table has a good header");
        assert_eq!(length, table.len());
    }
    if let Some(mcfg) = tables.mcfg {
        check_ecam(mcfg);
    }
}

/// What `ecam_from_mcfg` promises of its window.
fn check_ecam(mcfg: &[u8]) {
    let Some(window) = acpi::ecam_from_mcfg(mcfg) else {
        return;
    };
    assert!(window.first_bus <= window.last_bus, "{window:?}");
    let size = window.size();
    assert!((1 << 20..=256 << 20).contains(&size), "{window:?}");
    assert!(window.base.checked_add(size).is_some(), "{window:?}");
    let listed = mcfg[MCFG_ALLOCATIONS_OFFSET..]
        .chunks_exact(MCFG_ALLOCATION_LENGTH)
        .any(|allocation| {
            allocation[..8] == window.base.to_le_bytes()
                && allocation[8..10] == [0, 0]
                && allocation[10] == window.first_bus
                && allocation[11] == window.last_bus
        });
    assert!(listed, "{window:?} is no segment 0 allocation of the table");
}

/// Sets byte `at` so that `bytes[range]` sums to zero.
fn fix(bytes: &mut [u8], at: usize, start: usize, end: usize) {
    if at < start || end > bytes.len() || at >= end {
        return;
    }
    bytes[at] = 0;
    let sum = bytes[start..end]
        .iter()
        .fold(0u8, |sum, byte| sum.wrapping_add(*byte));
    bytes[at] = sum.wrapping_neg();
}

/// Makes right the checksum of the table at `pa` (byte 9), if its header
/// lies in `bytes`; returns the table's range.
fn fix_table(bytes: &mut [u8], pa: u64) -> Option<(usize, usize)> {
    let start = usize::try_from(pa).ok()?;
    let header = bytes.get(start..start.checked_add(SDT_HEADER_LENGTH)?)?;
    let (_, length) = acpi::parse_header(header.try_into().unwrap()).ok()?;
    let end = start.checked_add(length)?.min(bytes.len());
    fix(bytes, start + 9, start, end);
    Some((start, end))
}

/// Makes right every checksum the walk checks, in the order it checks them.
fn fix_checksums(bytes: &mut [u8]) {
    if bytes.len() < RSDP_LENGTH {
        return;
    }
    fix(bytes, 8, 0, 20);
    let Ok(root) = acpi::parse_rsdp(bytes[..RSDP_LENGTH].try_into().unwrap()) else {
        return;
    };
    let Some((start, end)) = fix_table(bytes, root.address()) else {
        return;
    };
    let entries: Vec<u64> = root
        .entries(&bytes[start..end])
        .take(MAX_FIXED_ENTRIES)
        .collect();
    for pa in entries {
        fix_table(bytes, pa);
    }
    // Fixing a listed table may have changed the root table's sum.
    fix_table(bytes, root.address());
}
