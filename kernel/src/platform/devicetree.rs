//! Device-tree discovery on aarch64 (QEMU virt): memory, command line, SMMUv3, PCIe.

use crate::boot::{MemoryKind, MemoryRegion};
use crate::mem::phys_bytes;
use dtoolkit::fdt::{Fdt, FdtNode};
use dtoolkit::standard::NodeStandard;
use dtoolkit::{Node, Property};

/// The PCIe host bridge (`pci-host-ecam-generic`).
#[derive(Clone, Copy, Debug)]
pub struct PcieHost {
    /// Physical base of the ECAM window.
    pub ecam_base: u64,
    /// Size of the ECAM window.
    pub ecam_size: u64,
    /// The 32-bit memory window for BARs: (PCI address, CPU address, size).
    pub mmio32: Option<(u64, u64, u64)>,
    /// The 64-bit memory window for BARs: (PCI address, CPU address, size).
    pub mmio64: Option<(u64, u64, u64)>,
}

/// What the kernel takes from the device tree.
pub struct DeviceTree {
    /// `/chosen/bootargs`.
    pub bootargs: &'static str,
    /// The SMMUv3 register window (base, size).
    pub smmu: Option<(u64, u64)>,
    /// The PCIe host bridge.
    pub pcie: Option<PcieHost>,
    /// The boot module QEMU loaded for `-initrd` (`/chosen/linux,initrd-*`).
    pub initrd: Option<(u64, u64)>,
}

/// A `/chosen` address property: one or two big-endian cells.
fn chosen_address(chosen: FdtNode<'static>, name: &str) -> Option<u64> {
    let bytes: &[u8] = chosen.property(name)?.value_as().ok()?;
    matches!(bytes.len(), 4 | 8).then(|| be_cells(bytes))
}

fn first_reg(node: FdtNode<'static>) -> Option<(u64, u64)> {
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
fn memory_window(node: FdtNode<'static>, space_code: u32) -> Option<(u64, u64, u64)> {
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

/// Parses the DTB at `pa`, adding its `/memory` ranges to `memory`.
pub fn discover(
    pa: u64,
    memory: &mut impl FnMut(MemoryRegion),
) -> Result<DeviceTree, &'static str> {
    let header = phys_bytes(pa, 8).ok_or("DTB header is outside the direct map")?;
    if header[..4] != [0xD0, 0x0D, 0xFE, 0xED] {
        return Err("no device-tree magic at the DTB address");
    }
    let total = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let bytes = phys_bytes(pa, total).ok_or("DTB is outside the direct map")?;
    let fdt = Fdt::new(bytes).map_err(|_| "DTB fails validation")?;
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
                    memory(MemoryRegion {
                        start,
                        size,
                        kind: MemoryKind::Ram,
                    });
                }
            }
        }
    }

    let bootargs = fdt
        .find_node("/chosen")
        .and_then(|chosen| chosen.property("bootargs"))
        .and_then(|p| p.value_as::<&'static str>().ok())
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
        (end > start).then_some((start, end - start))
    });
    Ok(DeviceTree {
        bootargs,
        smmu,
        pcie,
        initrd,
    })
}
