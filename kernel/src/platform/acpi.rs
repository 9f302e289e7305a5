//! ACPI discovery on x86_64: RSDP -> RSDT/XSDT -> the tables the kernel needs.
//!
//! Only locating and checking tables lives here; the DMAR is decoded by the
//! `iommu` crate. Every length is checked against the direct map and the
//! table's own header, and every checksum is verified.

use crate::mem::phys_bytes;
use core::fmt;
use zerocopy::{FromBytes, Immutable, KnownLayout, little_endian::U32, little_endian::U64};

/// Root System Description Pointer (ACPI 6.5, 5.2.5.3), revision 2 layout.
/// Every field is kept so the offsets match the specification.
#[allow(dead_code)]
#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C, packed)]
struct Rsdp {
    signature: [u8; 8],
    checksum: u8,
    oem_id: [u8; 6],
    revision: u8,
    rsdt_address: U32,
    length: U32,
    xsdt_address: U64,
    extended_checksum: u8,
    reserved: [u8; 3],
}

/// System description table header (ACPI 6.5, 5.2.6).
#[allow(dead_code)]
#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C, packed)]
pub struct SdtHeader {
    /// Four-letter table name.
    pub signature: [u8; 4],
    /// Length of the whole table, header included.
    pub length: U32,
    revision: u8,
    checksum: u8,
    oem_id: [u8; 6],
    oem_table_id: [u8; 8],
    oem_revision: U32,
    creator_id: U32,
    creator_revision: U32,
}

const SDT_HEADER_LEN: usize = size_of::<SdtHeader>();
const RSDP_V1_LEN: usize = 20;

/// What went wrong while walking the ACPI tables.
#[derive(Debug, Clone, Copy)]
pub enum AcpiError {
    /// A table (named) lies outside the direct map.
    Unmapped(&'static str, u64),
    /// The RSDP signature is wrong.
    BadRsdpSignature,
    /// A table's checksum does not add up to zero.
    BadChecksum([u8; 4]),
    /// A table's length is shorter than its header or overflows.
    BadLength([u8; 4], u32),
    /// The root table is neither an RSDT nor an XSDT.
    BadRootSignature([u8; 4]),
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn name(signature: &[u8; 4]) -> &str {
            core::str::from_utf8(signature).unwrap_or("????")
        }
        match self {
            AcpiError::Unmapped(what, pa) => {
                write!(f, "{what} at {pa:#x} is outside the direct map")
            }
            AcpiError::BadRsdpSignature => write!(f, "RSDP signature is not \"RSD PTR \""),
            AcpiError::BadChecksum(sig) => write!(f, "table {} has a bad checksum", name(sig)),
            AcpiError::BadLength(sig, len) => {
                write!(f, "table {} has an impossible length {len}", name(sig))
            }
            AcpiError::BadRootSignature(sig) => {
                write!(f, "root table {} is neither RSDT nor XSDT", name(sig))
            }
        }
    }
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b)) == 0
}

/// Borrows a whole table at `pa`, checking its length and checksum.
fn table(pa: u64) -> Result<&'static [u8], AcpiError> {
    let header_bytes =
        phys_bytes(pa, SDT_HEADER_LEN).ok_or(AcpiError::Unmapped("table header", pa))?;
    let (header, _) = SdtHeader::read_from_prefix(header_bytes)
        .map_err(|_| AcpiError::Unmapped("table header", pa))?;
    let length = header.length.get();
    if (length as usize) < SDT_HEADER_LEN {
        return Err(AcpiError::BadLength(header.signature, length));
    }
    let bytes = phys_bytes(pa, length as usize).ok_or(AcpiError::Unmapped("table", pa))?;
    if !checksum_ok(bytes) {
        return Err(AcpiError::BadChecksum(header.signature));
    }
    Ok(bytes)
}

/// The tables the kernel uses, each as its full byte image.
#[derive(Default)]
pub struct AcpiTables {
    /// The DMA remapping table (VT-d), if present.
    pub dmar: Option<&'static [u8]>,
    /// The PCI memory-mapped configuration table, if present.
    pub mcfg: Option<&'static [u8]>,
}

/// Walks RSDP -> RSDT (or XSDT) and collects the DMAR and MCFG tables.
pub fn discover(rsdp_pa: u64) -> Result<AcpiTables, AcpiError> {
    let rsdp_bytes =
        phys_bytes(rsdp_pa, size_of::<Rsdp>()).ok_or(AcpiError::Unmapped("RSDP", rsdp_pa))?;
    let (rsdp, _) =
        Rsdp::read_from_prefix(rsdp_bytes).map_err(|_| AcpiError::Unmapped("RSDP", rsdp_pa))?;
    if &rsdp.signature != b"RSD PTR " {
        return Err(AcpiError::BadRsdpSignature);
    }
    if !checksum_ok(&rsdp_bytes[..RSDP_V1_LEN]) {
        return Err(AcpiError::BadChecksum(*b"RSDP"));
    }
    // ACPI 2.0+ provides the XSDT with 64-bit entries; QEMU's q35 tables are
    // revision 0 (RSDT only).
    let (root_pa, entry_size) = if rsdp.revision >= 2 && rsdp.xsdt_address.get() != 0 {
        (rsdp.xsdt_address.get(), 8)
    } else {
        (u64::from(rsdp.rsdt_address.get()), 4)
    };
    let root = table(root_pa)?;
    let signature: [u8; 4] = [root[0], root[1], root[2], root[3]];
    let expected: &[u8; 4] = if entry_size == 8 { b"XSDT" } else { b"RSDT" };
    if &signature != expected {
        return Err(AcpiError::BadRootSignature(signature));
    }
    let mut tables = AcpiTables::default();
    for entry in root[SDT_HEADER_LEN..].chunks_exact(entry_size) {
        let pa = entry
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let bytes = table(pa)?;
        match &bytes[..4] {
            b"DMAR" => tables.dmar = Some(bytes),
            b"MCFG" => tables.mcfg = Some(bytes),
            _ => {}
        }
    }
    Ok(tables)
}

/// One MCFG allocation (PCI Firmware Specification 3.2, 4.1.2).
#[allow(dead_code)]
#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C, packed)]
struct McfgAllocation {
    base: U64,
    segment: [u8; 2],
    start_bus: u8,
    end_bus: u8,
    reserved: U32,
}

/// Returns the ECAM base of PCI segment 0 from an MCFG table.
pub fn ecam_from_mcfg(mcfg: &[u8]) -> Option<(u64, u8, u8)> {
    // The allocations follow the header and 8 reserved bytes.
    let allocations = mcfg.get(SDT_HEADER_LEN + 8..)?;
    allocations
        .chunks_exact(size_of::<McfgAllocation>())
        .filter_map(|raw| McfgAllocation::read_from_bytes(raw).ok())
        .find(|a| a.segment == [0, 0])
        .map(|a| (a.base.get(), a.start_bus, a.end_bus))
}
