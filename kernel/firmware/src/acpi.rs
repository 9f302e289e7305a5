//! ACPI (x86_64): RSDP -> RSDT/XSDT -> the tables the kernel needs, and the
//! PCI segment 0 ECAM window from the MCFG.
//!
//! Only locating and checking tables lives here; the DMAR is decoded by the
//! `iommu` crate. Every length is checked against the memory it is read
//! from and the table's own header, and every checksum is verified. Tables
//! point at each other by physical address, so the walk reads through a
//! [`PhysicalMemory`]; the pieces it is made of take byte slices.

use crate::PhysicalMemory;
use core::fmt;
use zerocopy::{FromBytes, Immutable, KnownLayout, little_endian::U32, little_endian::U64};

/// Root System Description Pointer (ACPI 6.5, 5.2.5.3), revision 2 layout.
/// Every field is kept so the offsets match the specification.
#[allow(dead_code)]
#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C, packed)]
struct RsdpLayout {
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
struct SdtHeaderLayout {
    signature: [u8; 4],
    length: U32,
    revision: u8,
    checksum: u8,
    oem_id: [u8; 6],
    oem_table_id: [u8; 8],
    oem_revision: U32,
    creator_id: U32,
    creator_revision: U32,
}

/// Bytes the walk reads at the RSDP's address: the revision 2 layout (a
/// revision 0 RSDP is the first 20 of them).
pub const RSDP_LENGTH: usize = size_of::<RsdpLayout>();
/// Bytes of a system description table header.
pub const SDT_HEADER_LENGTH: usize = size_of::<SdtHeaderLayout>();
/// Bytes the revision 0 checksum covers.
const RSDP_V1_LENGTH: usize = 20;

/// What went wrong while walking the ACPI tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    /// A table (named) lies outside readable memory (the kernel's direct map).
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

impl ktext::Text for AcpiError {
    fn write(&self, out: &mut dyn ktext::Sink) {
        use ktext::put;
        fn name(signature: &[u8; 4]) -> &str {
            core::str::from_utf8(signature).unwrap_or("????")
        }
        match self {
            AcpiError::Unmapped(what, pa) => {
                put!(out, "{} at {:#x} is outside the direct map", what, *pa)
            }
            AcpiError::BadRsdpSignature => put!(out, "RSDP signature is not \"RSD PTR \""),
            AcpiError::BadChecksum(sig) => put!(out, "table {} has a bad checksum", name(sig)),
            AcpiError::BadLength(sig, len) => {
                put!(out, "table {} has an impossible length {}", name(sig), len)
            }
            AcpiError::BadRootSignature(sig) => {
                put!(out, "root table {} is neither RSDT nor XSDT", name(sig))
            }
        }
    }
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ktext::display(self, f)
    }
}

/// Whether `bytes` add up to zero (mod 256), as every ACPI checksum demands.
pub fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b)) == 0
}

/// The root table an RSDP points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootTable {
    /// The RSDT at this physical address: 32-bit entries.
    Rsdt(u64),
    /// The XSDT at this physical address: 64-bit entries.
    Xsdt(u64),
}

impl RootTable {
    /// Its physical address.
    pub fn address(self) -> u64 {
        match self {
            RootTable::Rsdt(pa) | RootTable::Xsdt(pa) => pa,
        }
    }

    /// The signature it must carry.
    pub fn signature(self) -> [u8; 4] {
        match self {
            RootTable::Rsdt(_) => *b"RSDT",
            RootTable::Xsdt(_) => *b"XSDT",
        }
    }

    /// Bytes per entry.
    pub fn entry_size(self) -> usize {
        match self {
            RootTable::Rsdt(_) => 4,
            RootTable::Xsdt(_) => 8,
        }
    }

    /// The physical addresses a root table (`table`, header included) lists;
    /// a trailing partial entry is ignored.
    pub fn entries(self, table: &[u8]) -> impl Iterator<Item = u64> + '_ {
        table
            .get(SDT_HEADER_LENGTH..)
            .unwrap_or(&[])
            .chunks_exact(self.entry_size())
            .map(|entry| {
                entry
                    .iter()
                    .rev()
                    .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
            })
    }
}

/// Checks an RSDP (signature, revision 0 checksum) and says which root
/// table it points at: the XSDT when revision 2 or later names one (ACPI
/// 2.0+), else the RSDT (QEMU's q35 tables are revision 0).
pub fn parse_rsdp(bytes: &[u8; RSDP_LENGTH]) -> Result<RootTable, AcpiError> {
    let Ok(rsdp) = RsdpLayout::read_from_bytes(bytes) else {
        unreachable!("RSDP_LENGTH is the layout's size")
    };
    if &rsdp.signature != b"RSD PTR " {
        return Err(AcpiError::BadRsdpSignature);
    }
    if !checksum_ok(&bytes[..RSDP_V1_LENGTH]) {
        return Err(AcpiError::BadChecksum(*b"RSDP"));
    }
    Ok(if rsdp.revision >= 2 && rsdp.xsdt_address.get() != 0 {
        RootTable::Xsdt(rsdp.xsdt_address.get())
    } else {
        RootTable::Rsdt(u64::from(rsdp.rsdt_address.get()))
    })
}

/// A table header's signature and whole length (header included), checked
/// to be at least the header's.
pub fn parse_header(header: &[u8; SDT_HEADER_LENGTH]) -> Result<([u8; 4], usize), AcpiError> {
    let Ok(header) = SdtHeaderLayout::read_from_bytes(header) else {
        unreachable!("the layout's size")
    };
    let length = header.length.get();
    if (length as usize) < SDT_HEADER_LENGTH {
        return Err(AcpiError::BadLength(header.signature, length));
    }
    Ok((header.signature, length as usize))
}

/// Reads the whole table at `pa`, checking its length and checksum.
pub fn read_table<'a>(memory: &impl PhysicalMemory<'a>, pa: u64) -> Result<&'a [u8], AcpiError> {
    let header = memory
        .read(pa, SDT_HEADER_LENGTH)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(AcpiError::Unmapped("table header", pa))?;
    let (signature, length) = parse_header(header)?;
    let bytes = memory
        .read(pa, length)
        .filter(|bytes| bytes.len() == length)
        .ok_or(AcpiError::Unmapped("table", pa))?;
    if !checksum_ok(bytes) {
        return Err(AcpiError::BadChecksum(signature));
    }
    Ok(bytes)
}

/// The tables the kernel uses, each as its full byte image (checked:
/// length as its header says, checksum zero).
#[derive(Clone, Copy, Debug, Default)]
pub struct AcpiTables<'a> {
    /// The DMA remapping table (VT-d), if present.
    pub dmar: Option<&'a [u8]>,
    /// The PCI memory-mapped configuration table, if present.
    pub mcfg: Option<&'a [u8]>,
}

/// Walks RSDP -> RSDT (or XSDT) and collects the DMAR and MCFG tables (the
/// last of each the root table lists). Every table the root lists must be
/// readable and sum to zero, whatever its signature.
pub fn discover<'a>(
    memory: &impl PhysicalMemory<'a>,
    rsdp_pa: u64,
) -> Result<AcpiTables<'a>, AcpiError> {
    let rsdp = memory
        .read(rsdp_pa, RSDP_LENGTH)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(AcpiError::Unmapped("RSDP", rsdp_pa))?;
    let root_table = parse_rsdp(rsdp)?;
    let root = read_table(memory, root_table.address())?;
    let signature: [u8; 4] = [root[0], root[1], root[2], root[3]];
    if signature != root_table.signature() {
        return Err(AcpiError::BadRootSignature(signature));
    }
    let mut tables = AcpiTables::default();
    for pa in root_table.entries(root) {
        let bytes = read_table(memory, pa)?;
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

/// Bytes of one MCFG allocation.
pub const MCFG_ALLOCATION_LENGTH: usize = size_of::<McfgAllocation>();
/// Where the allocations start: after the header and 8 reserved bytes.
pub const MCFG_ALLOCATIONS_OFFSET: usize = SDT_HEADER_LENGTH + 8;

/// An ECAM window: configuration space of buses `first_bus..=last_bus`,
/// 1 MiB per bus from `base` (which is where bus 0's would be).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcamWindow {
    /// Physical base address.
    pub base: u64,
    /// The first bus decoded.
    pub first_bus: u8,
    /// The last bus decoded; never below `first_bus`.
    pub last_bus: u8,
}

impl EcamWindow {
    /// Its size in bytes: 1 MiB per bus.
    pub fn size(&self) -> u64 {
        (u64::from(self.last_bus) - u64::from(self.first_bus) + 1) << 20
    }
}

/// The ECAM window of PCI segment 0 from an MCFG table (header included):
/// its first allocation for segment 0 that describes at least one bus and
/// whose window ends inside the 64-bit address space. `None` if there is
/// none.
pub fn ecam_from_mcfg(mcfg: &[u8]) -> Option<EcamWindow> {
    let allocations = mcfg.get(MCFG_ALLOCATIONS_OFFSET..)?;
    allocations
        .chunks_exact(MCFG_ALLOCATION_LENGTH)
        .filter_map(|raw| McfgAllocation::read_from_bytes(raw).ok())
        .filter(|a| a.segment == [0, 0])
        .map(|a| EcamWindow {
            base: a.base.get(),
            first_bus: a.start_bus,
            last_bus: a.end_bus,
        })
        .find(|window| {
            window.first_bus <= window.last_bus && window.base.checked_add(window.size()).is_some()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryImage;

    extern crate std;
    use std::vec::Vec;

    /// Sets byte `at` so that `bytes` sums to zero.
    fn fix_checksum(bytes: &mut [u8], at: usize) {
        bytes[at] = 0;
        let sum = bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b));
        bytes[at] = sum.wrapping_neg();
    }

    /// A table with `signature` and `body`, checksum right.
    fn table(signature: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(signature);
        bytes.extend_from_slice(&((SDT_HEADER_LENGTH + body.len()) as u32).to_le_bytes());
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(b"BOCHS BXPC    \0\0\0\0BXPC\x01\0\0\0");
        assert_eq!(bytes.len(), SDT_HEADER_LENGTH);
        bytes.extend_from_slice(body);
        fix_checksum(&mut bytes, 9);
        bytes
    }

    fn rsdp(revision: u8, rsdt: u32, xsdt: u64) -> [u8; RSDP_LENGTH] {
        let mut bytes = [0u8; RSDP_LENGTH];
        bytes[..8].copy_from_slice(b"RSD PTR ");
        bytes[9..15].copy_from_slice(b"BOCHS ");
        bytes[15] = revision;
        bytes[16..20].copy_from_slice(&rsdt.to_le_bytes());
        bytes[20..24].copy_from_slice(&36u32.to_le_bytes());
        bytes[24..32].copy_from_slice(&xsdt.to_le_bytes());
        fix_checksum(&mut bytes[..RSDP_V1_LENGTH], 8);
        fix_checksum(&mut bytes, 32);
        bytes
    }

    fn mcfg(allocations: &[(u64, u16, u8, u8)]) -> Vec<u8> {
        let mut body = std::vec![0u8; 8];
        for &(base, segment, first, last) in allocations {
            body.extend_from_slice(&base.to_le_bytes());
            body.extend_from_slice(&segment.to_le_bytes());
            body.extend_from_slice(&[first, last, 0, 0, 0, 0]);
        }
        table(b"MCFG", &body)
    }

    /// Memory at 0: the RSDP at 0, tables at 0x40, 0x100, 0x200, ...
    fn q35_like(xsdt: bool) -> Vec<u8> {
        let dmar = table(b"DMAR", &[38, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mcfg = mcfg(&[(0xB000_0000, 0, 0, 0xFF)]);
        let facp = table(b"FACP", &[0; 8]);
        let mut memory = std::vec![0u8; 0x400];
        let entries: Vec<u8> = [0x100u64, 0x200, 0x300]
            .iter()
            .flat_map(|&pa| {
                if xsdt {
                    pa.to_le_bytes().to_vec()
                } else {
                    (pa as u32).to_le_bytes().to_vec()
                }
            })
            .collect();
        let root = table(if xsdt { b"XSDT" } else { b"RSDT" }, &entries);
        let pointer = if xsdt {
            rsdp(2, 0, 0x40)
        } else {
            rsdp(0, 0x40, 0)
        };
        memory[..RSDP_LENGTH].copy_from_slice(&pointer);
        memory[0x40..0x40 + root.len()].copy_from_slice(&root);
        memory[0x100..0x100 + facp.len()].copy_from_slice(&facp);
        memory[0x200..0x200 + mcfg.len()].copy_from_slice(&mcfg);
        memory[0x300..0x300 + dmar.len()].copy_from_slice(&dmar);
        memory
    }

    #[test]
    fn the_walk_finds_the_dmar_and_the_mcfg_through_an_rsdt_or_an_xsdt() {
        for xsdt in [false, true] {
            let bytes = q35_like(xsdt);
            let memory = MemoryImage {
                base: 0,
                bytes: &bytes,
            };
            let tables = discover(&memory, 0).unwrap();
            assert_eq!(&tables.dmar.unwrap()[..4], b"DMAR");
            assert!(crate::lies_within(tables.dmar.unwrap(), &bytes));
            let ecam = ecam_from_mcfg(tables.mcfg.unwrap()).unwrap();
            assert_eq!(
                ecam,
                EcamWindow {
                    base: 0xB000_0000,
                    first_bus: 0,
                    last_bus: 0xFF
                }
            );
            assert_eq!(ecam.size(), 256 << 20);
        }
    }

    /// The `acpi` fuzz target's seeds are walks that succeed.
    #[test]
    fn the_fuzz_seeds_walk() {
        let seeds: [&[u8]; 2] = [
            include_bytes!("../../../tools/fuzz/corpus/acpi/q35-like-rsdt"),
            include_bytes!("../../../tools/fuzz/corpus/acpi/q35-like-xsdt"),
        ];
        for bytes in seeds {
            let tables = discover(&MemoryImage { base: 0, bytes }, 0).unwrap();
            assert_eq!(tables.dmar.map(|dmar| dmar.len()), Some(104));
            let ecam = ecam_from_mcfg(tables.mcfg.unwrap()).unwrap();
            assert_eq!((ecam.base, ecam.size()), (0xB000_0000, 256 << 20));
        }
    }

    #[test]
    fn each_broken_piece_has_its_own_error() {
        let good = q35_like(false);
        let walk =
            |bytes: &[u8], at: u64| discover(&MemoryImage { base: 0, bytes }, at).map(|_| ());
        assert_eq!(
            walk(&good, 0x3F0).unwrap_err(),
            AcpiError::Unmapped("RSDP", 0x3F0)
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(walk(&bad, 0).unwrap_err(), AcpiError::BadRsdpSignature);
        let mut bad = good.clone();
        bad[8] ^= 1;
        assert_eq!(walk(&bad, 0).unwrap_err(), AcpiError::BadChecksum(*b"RSDP"));
        let mut bad = good.clone();
        bad[0x40 + 4..0x40 + 8].copy_from_slice(&35u32.to_le_bytes());
        assert_eq!(
            walk(&bad, 0).unwrap_err(),
            AcpiError::BadLength(*b"RSDT", 35)
        );
        let mut bad = good.clone();
        bad[0x40 + 4..0x40 + 8].copy_from_slice(&0x1000u32.to_le_bytes());
        assert_eq!(
            walk(&bad, 0).unwrap_err(),
            AcpiError::Unmapped("table", 0x40)
        );
        let mut bad = good.clone();
        bad[0x100 + 20] ^= 1;
        assert_eq!(walk(&bad, 0).unwrap_err(), AcpiError::BadChecksum(*b"FACP"));
        let mut bad = good.clone();
        bad[0x40..0x44].copy_from_slice(b"XSDT");
        fix_checksum(&mut bad[0x40..0x40 + SDT_HEADER_LENGTH + 12], 9);
        assert_eq!(
            walk(&bad, 0).unwrap_err(),
            AcpiError::BadRootSignature(*b"XSDT")
        );
        // A root entry pointing outside memory.
        let mut bad = good;
        bad[0x40 + 36..0x40 + 40].copy_from_slice(&0x3F0u32.to_le_bytes());
        fix_checksum(&mut bad[0x40..0x40 + SDT_HEADER_LENGTH + 12], 9);
        assert_eq!(
            walk(&bad, 0).unwrap_err(),
            AcpiError::Unmapped("table header", 0x3F0)
        );
    }

    #[test]
    fn errors_read_as_before() {
        assert_eq!(
            std::format!("{}", AcpiError::BadLength(*b"MCFG", 3)),
            "table MCFG has an impossible length 3"
        );
        assert_eq!(
            std::format!("{}", AcpiError::Unmapped("RSDP", 0xE0000)),
            "RSDP at 0xe0000 is outside the direct map"
        );
        assert_eq!(
            std::format!("{}", AcpiError::BadRootSignature([0xFF; 4])),
            "root table ???? is neither RSDT nor XSDT"
        );
    }

    #[test]
    fn a_revision_2_rsdp_without_an_xsdt_uses_the_rsdt() {
        assert_eq!(parse_rsdp(&rsdp(2, 0x1234, 0)), Ok(RootTable::Rsdt(0x1234)));
        assert_eq!(
            parse_rsdp(&rsdp(2, 0x1234, 0x5678)),
            Ok(RootTable::Xsdt(0x5678))
        );
        assert_eq!(
            parse_rsdp(&rsdp(1, 0x1234, 0x5678)),
            Ok(RootTable::Rsdt(0x1234))
        );
    }

    #[test]
    fn the_mcfg_gives_the_first_usable_segment_0_window() {
        let mcfg = super::tests::mcfg(&[
            (0xC000_0000, 1, 0, 0xFF),
            (0xB000_0000, 0, 0x10, 0x1F),
            (0xA000_0000, 0, 0, 0),
        ]);
        let ecam = ecam_from_mcfg(&mcfg).unwrap();
        assert_eq!(
            (ecam.base, ecam.first_bus, ecam.last_bus),
            (0xB000_0000, 0x10, 0x1F)
        );
        assert_eq!(ecam.size(), 16 << 20);
        assert_eq!(ecam_from_mcfg(&mcfg[..MCFG_ALLOCATIONS_OFFSET + 15]), None);
        assert_eq!(ecam_from_mcfg(&mcfg[..10]), None);
    }

    /// Regression: an allocation whose last bus is below its first made
    /// boot compute the window's size as `(last - first + 1) << 20`, which
    /// overflows (a panic with overflow checks, a huge window without).
    #[test]
    fn an_allocation_with_its_buses_backwards_is_skipped() {
        let mcfg = super::tests::mcfg(&[(0xB000_0000, 0, 0x20, 0x10)]);
        assert_eq!(ecam_from_mcfg(&mcfg), None);
        let mcfg = super::tests::mcfg(&[(0xB000_0000, 0, 0x20, 0x10), (0xE000_0000, 0, 0, 0)]);
        assert_eq!(ecam_from_mcfg(&mcfg).map(|e| e.base), Some(0xE000_0000));
    }

    /// Regression: a window whose end lies past 2^64 is no window.
    #[test]
    fn an_allocation_past_the_end_of_the_address_space_is_skipped() {
        let mcfg = super::tests::mcfg(&[(u64::MAX - (1 << 20), 0, 0, 1)]);
        assert_eq!(ecam_from_mcfg(&mcfg), None);
        let mcfg = super::tests::mcfg(&[(u64::MAX - (2 << 20), 0, 0, 1)]);
        assert!(ecam_from_mcfg(&mcfg).is_some());
    }
}
