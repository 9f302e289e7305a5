//! ACPI DMAR table parsing: remapping hardware units (DRHD), their device
//! scopes, and reserved memory regions (RMRR).
//!
//! Source: Intel VT-d specification chapter 8 ("BIOS Considerations").
//! [`Dmar::parse`] checks the whole table once (signature, length, checksum,
//! every structure and device-scope length); the iterators afterwards cannot
//! fail. Structures of other types (ATSR, RHSA, ANDD, SATC, SIDP) are
//! length-checked and skipped.

use core::fmt;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// The standard ACPI system description table header (ACPI 6.x, 5.2.6).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct AcpiHeader {
    /// Table signature, `DMAR` here.
    pub signature: [u8; 4],
    /// Length of the whole table in bytes, header included.
    pub length: U32,
    /// Table revision.
    pub revision: u8,
    /// Byte making the sum of all table bytes zero.
    pub checksum: u8,
    /// OEM identifier.
    pub oem_id: [u8; 6],
    /// OEM table identifier.
    pub oem_table_id: [u8; 8],
    /// OEM revision.
    pub oem_revision: U32,
    /// Creator (ASL compiler) identifier.
    pub creator_id: U32,
    /// Creator revision.
    pub creator_revision: U32,
}

/// The DMAR-specific header following the ACPI header (VT-d 8.1).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct DmarHeader {
    /// Host address width minus one (VT-d 8.1, "Host Address Width").
    pub host_address_width: u8,
    /// Bit 0 INTR_REMAP, bit 1 X2APIC_OPT_OUT, bit 2 DMA_CTRL_PLATFORM_OPT_IN (VT-d 8.1).
    pub flags: u8,
    /// Reserved.
    pub reserved: [u8; 10],
}

/// Common header of every remapping structure (VT-d 8.2).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
struct StructureHeader {
    kind: U16,
    length: U16,
}

/// Fixed part of a DRHD structure after the common header (VT-d 8.3).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
struct DrhdFixed {
    flags: u8,
    size: u8,
    segment: U16,
    register_base: U64,
}

/// Fixed part of an RMRR structure after the common header (VT-d 8.4).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
struct RmrrFixed {
    reserved: U16,
    segment: U16,
    base: U64,
    limit: U64,
}

/// Fixed part of a device scope entry (VT-d 8.3.1).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
struct ScopeFixed {
    kind: u8,
    length: u8,
    flags: u8,
    reserved: u8,
    enumeration_id: u8,
    start_bus: u8,
}

/// One hop of a device-scope path: device and function on the current bus (VT-d 8.3.1).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct PathEntry {
    /// PCI device number.
    pub device: u8,
    /// PCI function number.
    pub function: u8,
}

const ACPI_HEADER_LEN: usize = core::mem::size_of::<AcpiHeader>();
const DMAR_HEADER_LEN: usize = ACPI_HEADER_LEN + core::mem::size_of::<DmarHeader>();
const STRUCTURE_DRHD: u16 = 0;
const STRUCTURE_RMRR: u16 = 1;
const DRHD_FIXED_LEN: usize = 4 + core::mem::size_of::<DrhdFixed>();
const RMRR_FIXED_LEN: usize = 4 + core::mem::size_of::<RmrrFixed>();
const SCOPE_FIXED_LEN: usize = core::mem::size_of::<ScopeFixed>();

/// DRHD flag: this unit covers every PCI device of its segment not claimed
/// by another unit (VT-d 8.3, "INCLUDE_PCI_ALL").
pub const DRHD_INCLUDE_PCI_ALL: u8 = 1;

/// What was wrong with a DMAR table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmarError {
    /// The input is shorter than the DMAR headers.
    TooShortForHeader {
        /// Bytes available.
        available: usize,
    },
    /// The signature is not `DMAR`.
    BadSignature([u8; 4]),
    /// The header's length field is shorter than the headers or longer than the input.
    BadTableLength {
        /// Length claimed by the header.
        claimed: u32,
        /// Bytes available.
        available: usize,
    },
    /// The bytes of the table do not sum to zero.
    BadChecksum {
        /// The sum modulo 256.
        sum: u8,
    },
    /// A remapping structure's length is below its minimum or runs past the table end.
    BadStructureLength {
        /// Byte offset of the structure in the table.
        offset: usize,
        /// Structure type.
        kind: u16,
        /// Length field.
        length: u16,
    },
    /// A device scope's length is below 6, odd, or runs past its structure.
    BadScopeLength {
        /// Byte offset of the scope in the table.
        offset: usize,
        /// Length field.
        length: u8,
    },
    /// A DRHD register base is not 4 KiB aligned.
    MisalignedRegisterBase {
        /// Byte offset of the DRHD in the table.
        offset: usize,
        /// The base.
        base: u64,
    },
    /// An RMRR's limit is below its base, or base/limit+1 are not 4 KiB aligned.
    BadReservedRegion {
        /// Byte offset of the RMRR in the table.
        offset: usize,
        /// Base address.
        base: u64,
        /// Limit address (inclusive).
        limit: u64,
    },
}

impl ktext::Text for DmarError {
    fn write(&self, out: &mut dyn ktext::Sink) {
        use ktext::put;
        match *self {
            Self::TooShortForHeader { available } => put!(
                out,
                "DMAR: {} bytes is shorter than the {}-byte DMAR header",
                available,
                DMAR_HEADER_LEN
            ),
            // The bytes as one big-endian number.
            Self::BadSignature(sig) => put!(
                out,
                "DMAR: signature {:#010x} is not \"DMAR\" (0x444d4152)",
                u32::from_be_bytes(sig)
            ),
            Self::BadTableLength { claimed, available } => put!(
                out,
                "DMAR: header length {} is below {} or exceeds the {} bytes given",
                claimed,
                DMAR_HEADER_LEN,
                available
            ),
            Self::BadChecksum { sum } => put!(out, "DMAR: bytes sum to {:#x}, not 0", sum),
            Self::BadStructureLength {
                offset,
                kind,
                length,
            } => put!(
                out,
                "DMAR: remapping structure type {} at offset {:#x} has bad length {}",
                kind,
                offset as u64,
                length
            ),
            Self::BadScopeLength { offset, length } => put!(
                out,
                "DMAR: device scope at offset {:#x} has bad length {}",
                offset as u64,
                length
            ),
            Self::MisalignedRegisterBase { offset, base } => put!(
                out,
                "DMAR: DRHD at offset {:#x} has register base {:#x} not 4 KiB aligned",
                offset as u64,
                base
            ),
            Self::BadReservedRegion {
                offset,
                base,
                limit,
            } => put!(
                out,
                "DMAR: RMRR at offset {:#x} has bad range {:#x}..={:#x}",
                offset as u64,
                base,
                limit
            ),
        }
    }
}

impl fmt::Display for DmarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ktext::display(self, f)
    }
}

/// A parsed and fully validated DMAR table.
#[derive(Clone, Copy, Debug)]
pub struct Dmar<'a> {
    header: DmarHeader,
    structures: &'a [u8],
}

impl<'a> Dmar<'a> {
    /// Validates the whole DMAR table in `bytes` (which may be longer than the table).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DmarError> {
        let Ok((acpi, rest)) = AcpiHeader::ref_from_prefix(bytes) else {
            return Err(DmarError::TooShortForHeader {
                available: bytes.len(),
            });
        };
        let Ok((dmar, _)) = DmarHeader::ref_from_prefix(rest) else {
            return Err(DmarError::TooShortForHeader {
                available: bytes.len(),
            });
        };
        if &acpi.signature != b"DMAR" {
            return Err(DmarError::BadSignature(acpi.signature));
        }
        let claimed = acpi.length.get();
        let length = claimed as usize;
        if length < DMAR_HEADER_LEN || length > bytes.len() {
            return Err(DmarError::BadTableLength {
                claimed,
                available: bytes.len(),
            });
        }
        let table = &bytes[..length];
        let sum = table.iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
        if sum != 0 {
            return Err(DmarError::BadChecksum { sum });
        }
        let structures = &table[DMAR_HEADER_LEN..];
        validate_structures(structures)?;
        Ok(Self {
            header: *dmar,
            structures,
        })
    }

    /// Host address width in bits (the field plus one; VT-d 8.1).
    pub fn host_address_width(&self) -> u8 {
        self.header.host_address_width.wrapping_add(1)
    }

    /// The DMAR flags byte (VT-d 8.1).
    pub fn flags(&self) -> u8 {
        self.header.flags
    }

    /// The remapping hardware units, in table order.
    pub fn remapping_units(&self) -> impl Iterator<Item = Drhd<'a>> + 'a {
        Structures {
            rest: self.structures,
            offset: DMAR_HEADER_LEN,
        }
        .filter(|(kind, _, _)| *kind == STRUCTURE_DRHD)
        .map(|(_, offset, body)| {
            let Ok((fixed, scopes)) = DrhdFixed::ref_from_prefix(&body[4..]) else {
                unreachable!("validated")
            };
            Drhd {
                flags: fixed.flags,
                segment: fixed.segment.get(),
                register_base: fixed.register_base.get(),
                scopes: DeviceScopes {
                    rest: scopes,
                    offset: offset + DRHD_FIXED_LEN,
                },
            }
        })
    }

    /// The reserved memory regions, in table order.
    pub fn reserved_regions(&self) -> impl Iterator<Item = Rmrr<'a>> + 'a {
        Structures {
            rest: self.structures,
            offset: DMAR_HEADER_LEN,
        }
        .filter(|(kind, _, _)| *kind == STRUCTURE_RMRR)
        .map(|(_, offset, body)| {
            let Ok((fixed, scopes)) = RmrrFixed::ref_from_prefix(&body[4..]) else {
                unreachable!("validated")
            };
            Rmrr {
                segment: fixed.segment.get(),
                base: fixed.base.get(),
                limit: fixed.limit.get(),
                scopes: DeviceScopes {
                    rest: scopes,
                    offset: offset + RMRR_FIXED_LEN,
                },
            }
        })
    }
}

fn validate_structures(mut rest: &[u8]) -> Result<(), DmarError> {
    let mut offset = DMAR_HEADER_LEN;
    while !rest.is_empty() {
        let Ok((header, _)) = StructureHeader::ref_from_prefix(rest) else {
            return Err(DmarError::BadStructureLength {
                offset,
                kind: 0xffff,
                length: rest.len() as u16,
            });
        };
        let kind = header.kind.get();
        let length = header.length.get();
        let minimum = match kind {
            STRUCTURE_DRHD => DRHD_FIXED_LEN,
            STRUCTURE_RMRR => RMRR_FIXED_LEN,
            _ => 4,
        };
        if (length as usize) < minimum || length as usize > rest.len() {
            return Err(DmarError::BadStructureLength {
                offset,
                kind,
                length,
            });
        }
        let body = &rest[..length as usize];
        match kind {
            STRUCTURE_DRHD => {
                let Ok((fixed, scopes)) = DrhdFixed::ref_from_prefix(&body[4..]) else {
                    unreachable!("length checked")
                };
                let base = fixed.register_base.get();
                if base & 0xfff != 0 {
                    return Err(DmarError::MisalignedRegisterBase { offset, base });
                }
                validate_scopes(scopes, offset + DRHD_FIXED_LEN)?;
            }
            STRUCTURE_RMRR => {
                let Ok((fixed, scopes)) = RmrrFixed::ref_from_prefix(&body[4..]) else {
                    unreachable!("length checked")
                };
                let (base, limit) = (fixed.base.get(), fixed.limit.get());
                if limit < base || base & 0xfff != 0 || limit & 0xfff != 0xfff {
                    return Err(DmarError::BadReservedRegion {
                        offset,
                        base,
                        limit,
                    });
                }
                validate_scopes(scopes, offset + RMRR_FIXED_LEN)?;
            }
            _ => {}
        }
        rest = &rest[length as usize..];
        offset += length as usize;
    }
    Ok(())
}

fn validate_scopes(mut rest: &[u8], mut offset: usize) -> Result<(), DmarError> {
    while !rest.is_empty() {
        let length = if rest.len() >= 2 {
            rest[1]
        } else {
            rest.len() as u8
        };
        let len = length as usize;
        if len < SCOPE_FIXED_LEN || len > rest.len() || !(len - SCOPE_FIXED_LEN).is_multiple_of(2) {
            return Err(DmarError::BadScopeLength { offset, length });
        }
        rest = &rest[len..];
        offset += len;
    }
    Ok(())
}

/// Iterator over validated remapping structures: (type, table offset, bytes).
struct Structures<'a> {
    rest: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for Structures<'a> {
    type Item = (u16, usize, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let (header, _) = StructureHeader::ref_from_prefix(self.rest).ok()?;
        let length = header.length.get() as usize;
        let body = &self.rest[..length];
        let item = (header.kind.get(), self.offset, body);
        self.rest = &self.rest[length..];
        self.offset += length;
        Some(item)
    }
}

/// A DMA remapping hardware unit definition (VT-d 8.3).
#[derive(Clone, Copy, Debug)]
pub struct Drhd<'a> {
    /// DRHD flags; see [`DRHD_INCLUDE_PCI_ALL`].
    pub flags: u8,
    /// PCI segment number the unit serves.
    pub segment: u16,
    /// Physical base of the unit's register block.
    pub register_base: u64,
    /// The devices the unit serves (besides INCLUDE_PCI_ALL).
    pub scopes: DeviceScopes<'a>,
}

impl Drhd<'_> {
    /// Whether the unit covers all PCI devices of its segment not listed elsewhere.
    pub fn includes_all_pci(&self) -> bool {
        self.flags & DRHD_INCLUDE_PCI_ALL != 0
    }
}

/// A reserved memory region some devices keep using for DMA (VT-d 8.4).
#[derive(Clone, Copy, Debug)]
pub struct Rmrr<'a> {
    /// PCI segment.
    pub segment: u16,
    /// First byte of the region.
    pub base: u64,
    /// Last byte of the region (inclusive).
    pub limit: u64,
    /// The devices using the region.
    pub scopes: DeviceScopes<'a>,
}

/// Device scope entry types (VT-d 8.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeKind {
    /// A PCI endpoint device.
    PciEndpoint,
    /// A PCI-PCI bridge and every device below it.
    PciSubHierarchy,
    /// An I/O APIC.
    IoApic,
    /// An HPET (MSI-capable timer).
    Hpet,
    /// An ACPI namespace device.
    AcpiNamespaceDevice,
    /// A type this parser does not know.
    Other(u8),
}

impl From<u8> for ScopeKind {
    fn from(value: u8) -> Self {
        match value {
            1 => Self::PciEndpoint,
            2 => Self::PciSubHierarchy,
            3 => Self::IoApic,
            4 => Self::Hpet,
            5 => Self::AcpiNamespaceDevice,
            other => Self::Other(other),
        }
    }
}

/// One device scope entry (VT-d 8.3.1).
#[derive(Clone, Copy, Debug)]
pub struct DeviceScope<'a> {
    /// What the scope names.
    pub kind: ScopeKind,
    /// I/O APIC id, HPET number or ACPI device number (for those kinds).
    pub enumeration_id: u8,
    /// Bus number where the path starts.
    pub start_bus: u8,
    /// Device/function hops from the start bus.
    pub path: &'a [PathEntry],
}

impl DeviceScope<'_> {
    /// The requester id (bus << 8 | device << 3 | function) when the path
    /// has exactly one hop, i.e. the device sits on the start bus.
    pub fn requester_id(&self) -> Option<u16> {
        match self.path {
            [hop] => Some(
                u16::from(self.start_bus) << 8
                    | u16::from(hop.device & 0x1f) << 3
                    | u16::from(hop.function & 7),
            ),
            _ => None,
        }
    }
}

/// Iterator over the (validated) device scopes of one structure.
#[derive(Clone, Copy, Debug)]
pub struct DeviceScopes<'a> {
    rest: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for DeviceScopes<'a> {
    type Item = DeviceScope<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        let (fixed, _) = ScopeFixed::ref_from_prefix(self.rest).ok()?;
        let length = fixed.length as usize;
        let path = <[PathEntry]>::ref_from_bytes(&self.rest[SCOPE_FIXED_LEN..length]).ok()?;
        self.rest = &self.rest[length..];
        self.offset += length;
        Some(DeviceScope {
            kind: fixed.kind.into(),
            enumeration_id: fixed.enumeration_id,
            start_bus: fixed.start_bus,
            path,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::vec::Vec;

    /// Builds a DMAR table like QEMU's q35 one: one DRHD at 0xfed90000 with
    /// INCLUDE_PCI_ALL and an I/O APIC scope, plus one RMRR.
    pub(crate) fn qemu_like_dmar() -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(b"DMAR");
        t.extend_from_slice(&[0; 4]); // length, patched
        t.push(1); // revision
        t.push(0); // checksum, patched
        t.extend_from_slice(b"BOCHS ");
        t.extend_from_slice(b"BXPC    ");
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(b"BXPC");
        t.extend_from_slice(&1u32.to_le_bytes());
        t.push(47); // host address width - 1
        t.push(1); // INTR_REMAP
        t.extend_from_slice(&[0; 10]);
        // DRHD with one IOAPIC scope (6 + 2 bytes).
        t.extend_from_slice(&0u16.to_le_bytes());
        t.extend_from_slice(&(16u16 + 8).to_le_bytes());
        t.push(DRHD_INCLUDE_PCI_ALL);
        t.push(0);
        t.extend_from_slice(&0u16.to_le_bytes());
        t.extend_from_slice(&0xfed9_0000u64.to_le_bytes());
        t.extend_from_slice(&[3, 8, 0, 0, 0, 0xff, 0x1f, 0x07]);
        // RMRR for device 00:1d.0.
        t.extend_from_slice(&1u16.to_le_bytes());
        t.extend_from_slice(&(24u16 + 8).to_le_bytes());
        t.extend_from_slice(&0u16.to_le_bytes());
        t.extend_from_slice(&0u16.to_le_bytes());
        t.extend_from_slice(&0x000e_0000u64.to_le_bytes());
        t.extend_from_slice(&0x000f_ffffu64.to_le_bytes());
        t.extend_from_slice(&[1, 8, 0, 0, 0, 0, 0x1d, 0]);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        fix_checksum(&mut t);
        t
    }

    fn fix_checksum(t: &mut [u8]) {
        t[9] = 0;
        let sum = t.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        t[9] = 0u8.wrapping_sub(sum);
    }

    #[test]
    fn parses_qemu_like_table() {
        let t = qemu_like_dmar();
        let dmar = Dmar::parse(&t).unwrap();
        assert_eq!(dmar.host_address_width(), 48);
        let units: Vec<_> = dmar.remapping_units().collect();
        assert_eq!(units.len(), 1);
        assert_eq!(units[0].register_base, 0xfed9_0000);
        assert!(units[0].includes_all_pci());
        let scopes: Vec<_> = units[0].scopes.collect();
        assert_eq!(scopes.len(), 1);
        assert_eq!(scopes[0].kind, ScopeKind::IoApic);
        assert_eq!(scopes[0].start_bus, 0xff);
        assert_eq!(
            scopes[0].path,
            &[PathEntry {
                device: 0x1f,
                function: 7
            }]
        );
        let rmrrs: Vec<_> = dmar.reserved_regions().collect();
        assert_eq!(rmrrs.len(), 1);
        assert_eq!((rmrrs[0].base, rmrrs[0].limit), (0xe_0000, 0xf_ffff));
        let s: Vec<_> = rmrrs[0].scopes.collect();
        assert_eq!(s[0].requester_id(), Some(0x1d << 3));
    }

    #[test]
    fn rejects_bad_inputs() {
        let good = qemu_like_dmar();
        assert!(matches!(
            Dmar::parse(&good[..40]),
            Err(DmarError::TooShortForHeader { .. })
        ));
        let mut t = good.clone();
        t[0] = b'X';
        assert!(matches!(Dmar::parse(&t), Err(DmarError::BadSignature(_))));
        let mut t = good.clone();
        t[20] ^= 1;
        assert!(matches!(
            Dmar::parse(&t),
            Err(DmarError::BadChecksum { .. })
        ));
        assert!(matches!(
            Dmar::parse(&good[..good.len() - 1]),
            Err(DmarError::BadTableLength { .. })
        ));
        // DRHD length pointing past the end.
        let mut t = good.clone();
        t[48 + 2] = 200;
        fix_checksum(&mut t);
        assert!(matches!(
            Dmar::parse(&t),
            Err(DmarError::BadStructureLength {
                offset: 48,
                kind: 0,
                length: 200
            })
        ));
        // Device scope with an odd length.
        let mut t = good.clone();
        t[48 + 16 + 1] = 7;
        fix_checksum(&mut t);
        let err = Dmar::parse(&t).unwrap_err();
        assert_eq!(
            err,
            DmarError::BadScopeLength {
                offset: 64,
                length: 7
            }
        );
        assert!(std::format!("{err}").contains("device scope"));
        // RMRR limit below base.
        let mut t = good.clone();
        let rmrr = 48 + 24;
        t[rmrr + 16..rmrr + 24].copy_from_slice(&0xdffffu64.to_le_bytes());
        fix_checksum(&mut t);
        assert!(matches!(
            Dmar::parse(&t),
            Err(DmarError::BadReservedRegion { .. })
        ));
        // Never panics on truncated or garbage input.
        for n in 0..good.len() {
            let _ = Dmar::parse(&good[..n]);
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Mutated and truncated tables never panic the parser, and a table
        /// it accepts can be iterated completely.
        #[test]
        fn never_panics_on_mutated_tables(
            flips in proptest::collection::vec((0usize..96, any::<u8>()), 0..8),
            cut in 0usize..100,
            fix in any::<bool>(),
        ) {
            let mut table = tests::qemu_like_dmar();
            for (index, value) in flips {
                if index < table.len() {
                    table[index] = value;
                }
            }
            if fix && table.len() > 9 {
                table[9] = 0;
                let sum = table.iter().fold(0u8, |a, b| a.wrapping_add(*b));
                table[9] = 0u8.wrapping_sub(sum);
            }
            let end = table.len().min(cut.max(1) * table.len() / 100 + 1);
            if let Ok(dmar) = Dmar::parse(&table[..end]) {
                for unit in dmar.remapping_units() {
                    for scope in unit.scopes {
                        let _ = scope.requester_id();
                    }
                }
                for region in dmar.reserved_regions() {
                    prop_assert!(region.limit >= region.base);
                    for scope in region.scopes {
                        let _ = scope.requester_id();
                    }
                }
            }
        }
    }
}
