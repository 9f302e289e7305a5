//! The flattened device tree (aarch64, QEMU virt): RAM, the command line,
//! the SMMUv3, the PCIe host bridge and the initrd.
//!
//! Parsing and validation are `dtoolkit`'s; this module asks the questions
//! the kernel asks, and nothing it returns points outside the blob.

use crate::PhysicalMemory;
use core::fmt;
use dtoolkit::fdt::{Fdt, FdtNode};
use dtoolkit::standard::NodeStandard;
use dtoolkit::{Node, Property};

/// The first four bytes of every DTB (big-endian 0xD00DFEED).
pub const MAGIC: [u8; 4] = [0xD0, 0x0D, 0xFE, 0xED];

/// Why the device tree cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceTreeError {
    /// The 8 bytes of magic and total size are not readable.
    HeaderUnmapped,
    /// The blob does not start with [`MAGIC`].
    NoMagic,
    /// The whole blob (its header's total size) is not readable.
    Unmapped,
    /// `dtoolkit` rejects the blob.
    Invalid,
}

impl fmt::Display for DeviceTreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceTreeError::HeaderUnmapped => "DTB header is outside the direct map",
            DeviceTreeError::NoMagic => "no device-tree magic at the DTB address",
            DeviceTreeError::Unmapped => "DTB is outside the direct map",
            DeviceTreeError::Invalid => "DTB fails validation",
        })
    }
}

/// A PCI memory window: `size` bytes at `pci_address` on the bus, seen by
/// the CPU at `cpu_address`.
pub type PciWindow = (u64, u64, u64);

/// The PCIe host bridge (`pci-host-ecam-generic`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcieHost {
    /// Physical base of the ECAM window.
    pub ecam_base: u64,
    /// Size of the ECAM window.
    pub ecam_size: u64,
    /// The 32-bit memory window for BARs: (PCI address, CPU address, size).
    pub mmio32: Option<PciWindow>,
    /// The 64-bit memory window for BARs: (PCI address, CPU address, size).
    pub mmio64: Option<PciWindow>,
}

/// A range of RAM a `/memory` node's `reg` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRange {
    /// Physical start.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

/// What the kernel takes from the device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceTree<'a> {
    /// `/chosen/bootargs` (empty if absent or not a string), inside the blob.
    pub bootargs: &'a str,
    /// The SMMUv3 register window (base, size): the first
    /// `arm,smmu-v3`'s first `reg`.
    pub smmu: Option<(u64, u64)>,
    /// The PCIe host bridge: the first `pci-host-ecam-generic`.
    pub pcie: Option<PcieHost>,
    /// The boot module QEMU loaded for `-initrd`
    /// (`/chosen/linux,initrd-start` and `-end`): (start, size), size never 0.
    pub initrd: Option<(u64, u64)>,
}

/// The total size a DTB header (its first 8 bytes) announces.
pub fn total_size(header: &[u8; 8]) -> Result<usize, DeviceTreeError> {
    if header[..4] != MAGIC {
        return Err(DeviceTreeError::NoMagic);
    }
    Ok(u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize)
}

/// Reads the DTB at `pa` (its header, then as many bytes as it announces)
/// and [`parse`]s it.
pub fn discover<'a>(
    memory: &impl PhysicalMemory<'a>,
    pa: u64,
    ram: &mut impl FnMut(MemoryRange),
) -> Result<DeviceTree<'a>, DeviceTreeError> {
    let header = memory
        .read(pa, 8)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(DeviceTreeError::HeaderUnmapped)?;
    let total = total_size(header)?;
    let bytes = memory
        .read(pa, total)
        .filter(|bytes| bytes.len() == total)
        .ok_or(DeviceTreeError::Unmapped)?;
    parse(bytes, ram)
}

/// Parses a whole DTB, handing every `reg` range of every root child whose
/// `device_type` starts with `memory` to `ram` (in order; a range whose
/// cells do not fit 64 bits is left out).
pub fn parse<'a>(
    bytes: &'a [u8],
    ram: &mut impl FnMut(MemoryRange),
) -> Result<DeviceTree<'a>, DeviceTreeError> {
    let fdt = Fdt::new(bytes).map_err(|_| DeviceTreeError::Invalid)?;
    let root = fdt.root();

    for node in root.children() {
        let is_memory = node
            .property("device_type")
            .is_some_and(|p| p.value().starts_with(b"memory"));
        if !is_memory {
            continue;
        }
        if let Ok(Some(regs)) = node.reg() {
            for reg in regs {
                if let (Ok(start), Ok(size)) = (reg.address::<u64>(), reg.size::<u64>()) {
                    ram(MemoryRange { start, size });
                }
            }
        }
    }

    let bootargs = fdt
        .find_node("/chosen")
        .and_then(|chosen| chosen.property("bootargs"))
        .and_then(|p| p.value_as::<&'a str>().ok())
        .unwrap_or("");
    let smmu = root
        .find_compatible("arm,smmu-v3")
        .next()
        .and_then(first_reg);
    let pcie = root
        .find_compatible("pci-host-ecam-generic")
        .next()
        .and_then(|node| {
            let (ecam_base, ecam_size) = first_reg(node)?;
            Some(PcieHost {
                ecam_base,
                ecam_size,
                mmio32: memory_window(node, 2),
                mmio64: memory_window(node, 3),
            })
        });
    let initrd = fdt.find_node("/chosen").and_then(|chosen| {
        let start = chosen_address(chosen, "linux,initrd-start")?;
        let end = chosen_address(chosen, "linux,initrd-end")?;
        // Checked before subtracting (`then_some` would compute `end -
        // start` first: an overflow panic when end < start).
        let size = end.checked_sub(start).filter(|&size| size > 0)?;
        Some((start, size))
    });
    Ok(DeviceTree {
        bootargs,
        smmu,
        pcie,
        initrd,
    })
}

/// A `/chosen` address property: one or two big-endian cells.
fn chosen_address(chosen: FdtNode<'_>, name: &str) -> Option<u64> {
    let bytes: &[u8] = chosen.property(name)?.value_as().ok()?;
    matches!(bytes.len(), 4 | 8).then(|| be_cells(bytes))
}

fn first_reg(node: FdtNode<'_>) -> Option<(u64, u64)> {
    let reg = node.reg().ok()??.next()?;
    Some((reg.address::<u64>().ok()?, reg.size::<u64>().ok()?))
}

fn be_cells(bytes: &[u8]) -> u64 {
    bytes.chunks_exact(4).fold(0u64, |acc, cell| {
        (acc << 32) | u64::from(u32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]))
    })
}

/// A memory range of a PCI host's `ranges` (3 PCI cells, 2 CPU cells, 2
/// size cells per entry on virt) by its space code: 2 is 32-bit memory, 3
/// is 64-bit memory (IEEE 1275 PCI binding, 2.2.1.1).
fn memory_window(node: FdtNode<'_>, space_code: u32) -> Option<PciWindow> {
    let ranges: &[u8] = node.property("ranges")?.value_as().ok()?;
    ranges.chunks_exact(28).find_map(|entry| {
        let space = (u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]) >> 24) & 3;
        (space == space_code).then(|| {
            (
                be_cells(&entry[4..12]),
                be_cells(&entry[12..20]),
                be_cells(&entry[20..28]),
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryImage;

    extern crate std;
    use std::vec::Vec;

    /// QEMU 10.0.2's `virt,iommu=smmuv3` device tree, dumped with
    /// `dumpdtb=` and packed (the fuzz target's seed).
    const VIRT: &[u8] =
        include_bytes!("../../../tools/fuzz/corpus/devicetree/qemu-virt-smmuv3.dtb");

    #[test]
    fn qemu_virt_reads_as_the_kernel_expects() {
        let mut ram = Vec::new();
        let tree = parse(VIRT, &mut |range| ram.push(range)).unwrap();
        assert_eq!(
            ram,
            [MemoryRange {
                start: 0x4000_0000,
                size: 128 << 20
            }]
        );
        assert_eq!(tree.bootargs, "tests=boot");
        assert!(crate::lies_within(tree.bootargs.as_bytes(), VIRT));
        assert_eq!(tree.smmu, Some((0x905_0000, 0x20000)));
        let pcie = tree.pcie.unwrap();
        assert_eq!(
            (pcie.ecam_base, pcie.ecam_size),
            (0x40_1000_0000, 256 << 20)
        );
        assert_eq!(pcie.mmio32, Some((0x1000_0000, 0x1000_0000, 0x2EFF_0000)));
        assert_eq!(
            pcie.mmio64,
            Some((0x80_0000_0000, 0x80_0000_0000, 0x80_0000_0000))
        );
        assert_eq!(tree.initrd, None);
    }

    /// The same with `-initrd` (100 bytes).
    const VIRT_INITRD: &[u8] =
        include_bytes!("../../../tools/fuzz/corpus/devicetree/qemu-virt-initrd.dtb");

    #[test]
    fn the_initrd_comes_from_chosen() {
        let tree = parse(VIRT_INITRD, &mut |_| {}).unwrap();
        assert_eq!(tree.bootargs, "image=default");
        assert_eq!(tree.initrd.map(|(_, size)| size), Some(100));
    }

    /// Regression (fuzz target `devicetree`): `linux,initrd-end` below
    /// `linux,initrd-start` made `parse` compute `end - start` before
    /// comparing them (`bool::then_some` evaluates its argument), an
    /// overflow panic with overflow checks on.
    #[test]
    fn an_initrd_that_ends_before_it_starts_is_none() {
        let (start, size) = parse(VIRT_INITRD, &mut |_| {}).unwrap().initrd.unwrap();
        let end = (start + size) as u32;
        let mut blob = VIRT_INITRD.to_vec();
        let at = blob
            .windows(4)
            .position(|cells| cells == end.to_be_bytes())
            .expect("initrd-end is one cell");
        blob[at..at + 4].copy_from_slice(&(start as u32 - 1).to_be_bytes());
        let tree = parse(&blob, &mut |_| {}).unwrap();
        assert_eq!(tree.initrd, None);
        blob[at..at + 4].copy_from_slice(&(start as u32).to_be_bytes());
        assert_eq!(parse(&blob, &mut |_| {}).unwrap().initrd, None);
    }

    #[test]
    fn discover_reads_as_much_as_the_header_says() {
        let mut memory = std::vec![0u8; 0x100];
        memory.extend_from_slice(VIRT);
        memory.extend_from_slice(&[0xAA; 16]);
        let image = MemoryImage {
            base: 0x4000_0000,
            bytes: &memory,
        };
        let tree = discover(&image, 0x4000_0100, &mut |_| {}).unwrap();
        assert_eq!(tree.bootargs, "tests=boot");
        assert_eq!(
            discover(&image, 0x4000_0000, &mut |_| {}),
            Err(DeviceTreeError::NoMagic)
        );
        assert_eq!(
            discover(&image, 0x3FFF_FFFF, &mut |_| {}),
            Err(DeviceTreeError::HeaderUnmapped)
        );
        let cut = MemoryImage {
            base: 0,
            bytes: &VIRT[..VIRT.len() - 1],
        };
        assert_eq!(
            discover(&cut, 0, &mut |_| {}),
            Err(DeviceTreeError::Unmapped)
        );
        let mut broken = VIRT.to_vec();
        broken[8..12].copy_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
        assert_eq!(parse(&broken, &mut |_| {}), Err(DeviceTreeError::Invalid));
    }

    #[test]
    fn errors_read_as_before() {
        assert_eq!(
            std::format!("{}", DeviceTreeError::Invalid),
            "DTB fails validation"
        );
    }

    #[test]
    fn cells_are_big_endian() {
        assert_eq!(be_cells(&[0, 0, 0, 1, 0, 0, 0, 2]), (1 << 32) | 2);
        assert_eq!(be_cells(&[0x12, 0x34, 0x56, 0x78]), 0x1234_5678);
    }
}
