//! The flattened device tree (aarch64, QEMU virt): RAM, the command line,
//! the SMMUv3, the PCIe host bridge and the initrd.
//!
//! One pass over the structure block (Devicetree Specification v0.4,
//! chapter 5) answers the questions the kernel asks; nothing it returns
//! points outside the blob, and a malformed blob is an error, never a
//! panic. It replaced the `dtoolkit` crate in the kernel (kernel/README.md,
//! "Size": its parser and the `Debug` its internal `expect`s pulled in were
//! ~13 KB of aarch64 `.text`); the tests check it against `dtoolkit`.

use crate::PhysicalMemory;
use core::fmt;

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
    /// The header or the structure block is malformed.
    Invalid,
}

impl ktext::Text for DeviceTreeError {
    fn write(&self, out: &mut dyn ktext::Sink) {
        out.str(match self {
            DeviceTreeError::HeaderUnmapped => "DTB header is outside the direct map",
            DeviceTreeError::NoMagic => "no device-tree magic at the DTB address",
            DeviceTreeError::Unmapped => "DTB is outside the direct map",
            DeviceTreeError::Invalid => "DTB fails validation",
        })
    }
}

impl fmt::Display for DeviceTreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ktext::display(self, f)
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
    let mut tokens = Tokens::new(bytes).ok_or(DeviceTreeError::Invalid)?;
    let mut tree = DeviceTree {
        bootargs: "",
        smmu: None,
        pcie: None,
        initrd: None,
    };
    let (mut initrd_start, mut initrd_end) = (None, None);
    // `cells[d]`: (#address-cells, #size-cells) of the node at depth `d`
    // (the root is 0), i.e. how its children's `reg` reads.
    let mut cells = [DEFAULT_CELLS; MAX_DEPTH];
    let mut depth = 0;
    let mut node = NodeProps {
        done: true,
        ..NodeProps::default()
    };
    let mut ended = false;
    loop {
        match tokens.next().ok_or(DeviceTreeError::Invalid)? {
            Token::Begin(name) => {
                if ended || depth == MAX_DEPTH {
                    return Err(DeviceTreeError::Invalid);
                }
                node.finish(&cells, &mut tree, ram);
                cells[depth] = DEFAULT_CELLS;
                node = NodeProps {
                    depth,
                    chosen: depth == 1 && (name == b"chosen" || name.starts_with(b"chosen@")),
                    ..NodeProps::default()
                };
                depth += 1;
            }
            Token::End => {
                if depth == 0 {
                    return Err(DeviceTreeError::Invalid);
                }
                node.finish(&cells, &mut tree, ram);
                depth -= 1;
                ended = depth == 0;
            }
            Token::Prop(name, value) => {
                // Properties come before a node's children (Devicetree
                // Specification 5.4.1): one after a child has ended is
                // malformed.
                if depth == 0 || node.done || node.depth + 1 != depth {
                    return Err(DeviceTreeError::Invalid);
                }
                match name {
                    b"#address-cells" => cells[depth - 1].0 = one_cell(value)?,
                    b"#size-cells" => cells[depth - 1].1 = one_cell(value)?,
                    b"reg" => node.reg = Some(value),
                    b"ranges" => node.ranges = Some(value),
                    b"device_type" => node.memory = value.starts_with(b"memory"),
                    b"compatible" => {
                        for model in value.split(|&b| b == 0) {
                            node.smmu |= model == b"arm,smmu-v3";
                            node.pcie |= model == b"pci-host-ecam-generic";
                        }
                    }
                    b"bootargs" if node.chosen => {
                        tree.bootargs = c_string(value).unwrap_or("");
                    }
                    b"linux,initrd-start" if node.chosen => initrd_start = chosen_address(value),
                    b"linux,initrd-end" if node.chosen => initrd_end = chosen_address(value),
                    _ => {}
                }
            }
            Token::Finish if ended => break,
            Token::Finish => return Err(DeviceTreeError::Invalid),
        }
    }
    tree.initrd = initrd_start.zip(initrd_end).and_then(|(start, end)| {
        // Checked before subtracting: an end below the start is no initrd.
        let size = end.checked_sub(start).filter(|&size| size > 0)?;
        Some((start, size))
    });
    Ok(tree)
}

/// How deep a device tree may nest (QEMU's virt: 3 levels).
const MAX_DEPTH: usize = 16;

/// `#address-cells` and `#size-cells` where a node has none (Devicetree
/// Specification 2.3.5).
const DEFAULT_CELLS: (u32, u32) = (2, 1);

/// What one node's properties said, used when its properties are complete
/// (its first child begins or it ends).
#[derive(Default)]
struct NodeProps<'a> {
    /// The node's depth (the root is 0).
    depth: usize,
    done: bool,
    chosen: bool,
    memory: bool,
    smmu: bool,
    pcie: bool,
    reg: Option<&'a [u8]>,
    ranges: Option<&'a [u8]>,
}

impl<'a> NodeProps<'a> {
    /// Records what the node adds to `tree`, its `reg` read with its
    /// parent's entry of `cells`; only once, before any of its children,
    /// so "the first" node of a kind is the first in a depth-first walk.
    /// The root adds nothing.
    fn finish(
        &mut self,
        cells: &[(u32, u32); MAX_DEPTH],
        tree: &mut DeviceTree<'a>,
        ram: &mut impl FnMut(MemoryRange),
    ) {
        if core::mem::replace(&mut self.done, true) || self.depth == 0 {
            return;
        }
        let regs = || Regs::new(self.reg.unwrap_or(&[]), cells[self.depth - 1]);
        if self.memory && self.depth == 1 {
            for (start, size) in regs().into_iter().flatten() {
                ram(MemoryRange { start, size });
            }
        }
        if self.smmu && tree.smmu.is_none() {
            tree.smmu = regs().and_then(|mut regs| regs.next());
        }
        if self.pcie && tree.pcie.is_none() {
            let ranges = self.ranges.unwrap_or(&[]);
            tree.pcie = regs()
                .and_then(|mut regs| regs.next())
                .map(|(ecam_base, ecam_size)| PcieHost {
                    ecam_base,
                    ecam_size,
                    mmio32: memory_window(ranges, 2),
                    mmio64: memory_window(ranges, 3),
                });
        }
    }
}

/// The (address, size) pairs of a `reg` value, each as 64-bit numbers;
/// a pair whose cells do not fit 64 bits is left out.
struct Regs<'a> {
    entries: core::slice::ChunksExact<'a, u8>,
    address_bytes: usize,
}

impl<'a> Regs<'a> {
    /// `None` if the value is not a whole number of entries.
    fn new(value: &'a [u8], (address_cells, size_cells): (u32, u32)) -> Option<Regs<'a>> {
        let address_bytes = 4 * address_cells as usize;
        let entry = address_bytes + 4 * size_cells as usize;
        (entry > 0 && value.len().is_multiple_of(entry)).then(|| Regs {
            entries: value.chunks_exact(entry),
            address_bytes,
        })
    }
}

impl Iterator for Regs<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        self.entries.find_map(|entry| {
            let (address, size) = entry.split_at(self.address_bytes);
            Some((fit_u64(address)?, fit_u64(size)?))
        })
    }
}

/// Big-endian cells as one number, if it fits 64 bits.
fn fit_u64(bytes: &[u8]) -> Option<u64> {
    let cut = bytes.len().saturating_sub(8);
    bytes[..cut]
        .iter()
        .all(|&b| b == 0)
        .then(|| be_cells(&bytes[cut..]))
}

/// A one-cell property (`#address-cells`, `#size-cells`); more than 4
/// cells is not a real tree (Devicetree Specification 2.3.5).
fn one_cell(value: &[u8]) -> Result<u32, DeviceTreeError> {
    match value {
        &[a, b, c, d] if u32::from_be_bytes([a, b, c, d]) <= 4 => {
            Ok(u32::from_be_bytes([a, b, c, d]))
        }
        _ => Err(DeviceTreeError::Invalid),
    }
}

/// A string property: UTF-8 ending in its only NUL.
fn c_string(value: &[u8]) -> Option<&str> {
    let (&0, text) = value.split_last()? else {
        return None;
    };
    if text.contains(&0) {
        return None;
    }
    core::str::from_utf8(text).ok()
}

/// One token of the structure block.
enum Token<'a> {
    /// `FDT_BEGIN_NODE` and the node's name (unit address included).
    Begin(&'a [u8]),
    /// `FDT_END_NODE`.
    End,
    /// `FDT_PROP`: its name (from the strings block) and value.
    Prop(&'a [u8], &'a [u8]),
    /// `FDT_END`.
    Finish,
}

/// The structure block's tokens, `FDT_NOP` skipped; `None` where the block
/// is malformed.
struct Tokens<'a> {
    structure: &'a [u8],
    strings: &'a [u8],
    at: usize,
}

/// Header offsets (Devicetree Specification 5.2): big-endian words.
const HEADER_LEN: usize = 40;

impl<'a> Tokens<'a> {
    /// Checks the header (magic, sizes, versions, the two blocks inside
    /// the blob) and starts at the first token.
    fn new(blob: &'a [u8]) -> Option<Tokens<'a>> {
        let word = |offset: usize| -> Option<usize> {
            let bytes = blob.get(offset..offset + 4)?;
            Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
        };
        if blob.get(..4)? != MAGIC || blob.len() < HEADER_LEN {
            return None;
        }
        let total = word(4)?;
        let (off_struct, off_strings) = (word(8)?, word(12)?);
        let (version, last_compatible) = (word(20)?, word(24)?);
        let (size_strings, size_struct) = (word(32)?, word(36)?);
        if total > blob.len()
            || version < 17
            || last_compatible > 17
            || !off_struct.is_multiple_of(4)
        {
            return None;
        }
        let blob = &blob[..total];
        Some(Tokens {
            structure: blob.get(off_struct..off_struct.checked_add(size_struct)?)?,
            strings: blob.get(off_strings..off_strings.checked_add(size_strings)?)?,
            at: 0,
        })
    }

    fn word(&mut self) -> Option<u32> {
        let bytes = self.structure.get(self.at..self.at + 4)?;
        self.at += 4;
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// Moves past `len` bytes and the padding to the next 4-byte boundary.
    fn skip(&mut self, len: usize) -> Option<&'a [u8]> {
        let bytes = self.structure.get(self.at..self.at.checked_add(len)?)?;
        self.at = (self.at + len).next_multiple_of(4);
        Some(bytes)
    }

    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            return Some(match self.word()? {
                FDT_BEGIN_NODE => {
                    let rest = self.structure.get(self.at..)?;
                    let len = rest.iter().position(|&b| b == 0)?;
                    let name = self.skip(len + 1)?;
                    Token::Begin(&name[..len])
                }
                FDT_END_NODE => Token::End,
                FDT_PROP => {
                    let len = self.word()? as usize;
                    let name_at = self.word()? as usize;
                    let value = self.skip(len)?;
                    let names = self.strings.get(name_at..)?;
                    let name_len = names.iter().position(|&b| b == 0)?;
                    Token::Prop(&names[..name_len], value)
                }
                FDT_NOP => continue,
                FDT_END => Token::Finish,
                _ => return None,
            });
        }
    }
}

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// A `/chosen` address property: one or two big-endian cells.
fn chosen_address(bytes: &[u8]) -> Option<u64> {
    matches!(bytes.len(), 4 | 8).then(|| be_cells(bytes))
}

/// Big-endian cells as one number (the high cells shifted out if more
/// than two). Not inlined: boot code, which LTO had copied 16 times.
#[inline(never)]
fn be_cells(bytes: &[u8]) -> u64 {
    bytes.chunks_exact(4).fold(0u64, |acc, cell| {
        (acc << 32) | u64::from(u32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]))
    })
}

/// A memory range of a PCI host's `ranges` (3 PCI cells, 2 CPU cells, 2
/// size cells per entry on virt) by its space code: 2 is 32-bit memory, 3
/// is 64-bit memory (IEEE 1275 PCI binding, 2.2.1.1).
fn memory_window(ranges: &[u8], space_code: u32) -> Option<PciWindow> {
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

    /// The parser the kernel used before (`dtoolkit`'s), kept here as the
    /// reference `parse` must agree with.
    mod before {
        use super::super::{
            DeviceTree, DeviceTreeError, MemoryRange, PciWindow, PcieHost, be_cells,
        };
        use dtoolkit::fdt::{Fdt, FdtNode};
        use dtoolkit::standard::NodeStandard;
        use dtoolkit::{Node, Property};

        pub(super) fn reference<'a>(
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
                        mmio32: ref_memory_window(node, 2),
                        mmio64: ref_memory_window(node, 3),
                    })
                });
            let initrd = fdt.find_node("/chosen").and_then(|chosen| {
                let start = ref_chosen_address(chosen, "linux,initrd-start")?;
                let end = ref_chosen_address(chosen, "linux,initrd-end")?;
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
        fn ref_chosen_address(chosen: FdtNode<'_>, name: &str) -> Option<u64> {
            let bytes: &[u8] = chosen.property(name)?.value_as().ok()?;
            matches!(bytes.len(), 4 | 8).then(|| be_cells(bytes))
        }

        fn first_reg(node: FdtNode<'_>) -> Option<(u64, u64)> {
            let reg = node.reg().ok()??.next()?;
            Some((reg.address::<u64>().ok()?, reg.size::<u64>().ok()?))
        }

        /// A memory range of a PCI host's `ranges` (3 PCI cells, 2 CPU cells, 2
        /// size cells per entry on virt) by its space code: 2 is 32-bit memory, 3
        /// is 64-bit memory (IEEE 1275 PCI binding, 2.2.1.1).
        fn ref_memory_window(node: FdtNode<'_>, space_code: u32) -> Option<PciWindow> {
            let ranges: &[u8] = node.property("ranges")?.value_as().ok()?;
            ranges.chunks_exact(28).find_map(|entry| {
                let space =
                    (u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]) >> 24) & 3;
                (space == space_code).then(|| {
                    (
                        be_cells(&entry[4..12]),
                        be_cells(&entry[12..20]),
                        be_cells(&entry[20..28]),
                    )
                })
            })
        }
    }

    /// Both QEMU trees read the same through `parse` and the old parser,
    /// and so does every blob of a few thousand single-byte corruptions of
    /// them that both accept; `parse` never panics on any of them.
    #[test]
    fn parse_agrees_with_dtoolkit() {
        type Read<'a> = Result<(DeviceTree<'a>, Vec<MemoryRange>), DeviceTreeError>;
        fn read(blob: &[u8]) -> (Read<'_>, Read<'_>) {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            (
                parse(blob, &mut |range| ours.push(range)).map(|tree| (tree, ours)),
                before::reference(blob, &mut |range| theirs.push(range)).map(|tree| (tree, theirs)),
            )
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let (mut compared, mut rejected) = (0, 0);
        for blob in [VIRT, VIRT_INITRD] {
            let (ours, theirs) = read(blob);
            assert!(ours.is_ok());
            assert_eq!(ours, theirs);
            for _ in 0..3000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let mut bad = blob.to_vec();
                let at = (seed % bad.len() as u64) as usize;
                bad[at] = (seed >> 32) as u8;
                match read(&bad) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a, b, "byte {at} set to {:#x}", (seed >> 32) as u8);
                        compared += 1;
                    }
                    _ => rejected += 1,
                }
            }
        }
        assert!(
            compared > 1000 && rejected > 10,
            "{compared} compared, {rejected} rejected"
        );
    }

    #[test]
    fn cells_are_big_endian() {
        assert_eq!(be_cells(&[0, 0, 0, 1, 0, 0, 0, 2]), (1 << 32) | 2);
        assert_eq!(be_cells(&[0x12, 0x34, 0x56, 0x78]), 0x1234_5678);
    }
}
