//! Pure parsers of the bytes the kernel does not control: what firmware and
//! the boot loader hand it before anything else runs.
//!
//! - [`acpi`]: RSDP, RSDT/XSDT and MCFG (x86_64); locating the DMAR, which
//!   the `iommu` crate decodes.
//! - [`devicetree`]: the flattened device tree (aarch64): RAM, bootargs,
//!   the SMMUv3, the PCIe host, the initrd.
//! - [`boot_module`]: a packed system image or a bare ELF; the root task's
//!   ELF checked and cut into the pages to map.
//! - [`cmdline`]: `key=value` words.
//!
//! Bytes in, a typed result or a named error out: nothing here touches
//! MMIO, page tables or global state, so everything is tested on the host
//! (`cargo test -p firmware`) and fuzzed (`cargo xtask fuzz-host`, targets
//! `acpi`, `devicetree`, `boot_module`, `cmdline`). Where a parser must
//! follow physical addresses (ACPI tables point at each other), it reads
//! through [`PhysicalMemory`]: the kernel passes its direct map
//! (`mem::phys_bytes`, where the one `unsafe` of reading firmware memory
//! stays), tests and fuzz targets a [`MemoryImage`].
#![no_std]
#![forbid(unsafe_code)]

pub mod acpi;
pub mod boot_module;
pub mod cmdline;
pub mod devicetree;

/// Physical memory a parser may read.
pub trait PhysicalMemory<'a> {
    /// The `length` bytes at physical `address`, or `None` if they are not
    /// all readable.
    fn read(&self, address: u64, length: usize) -> Option<&'a [u8]>;
}

/// Any `Fn(address, length)`, such as the kernel's `mem::phys_bytes`.
impl<'a, F> PhysicalMemory<'a> for F
where
    F: Fn(u64, usize) -> Option<&'a [u8]>,
{
    fn read(&self, address: u64, length: usize) -> Option<&'a [u8]> {
        self(address, length)
    }
}

/// A byte slice standing in for physical memory from `base` onwards;
/// nothing outside it is readable.
#[derive(Clone, Copy, Debug)]
pub struct MemoryImage<'a> {
    /// The physical address of `bytes[0]`.
    pub base: u64,
    /// The memory's contents.
    pub bytes: &'a [u8],
}

impl<'a> PhysicalMemory<'a> for MemoryImage<'a> {
    fn read(&self, address: u64, length: usize) -> Option<&'a [u8]> {
        let offset = usize::try_from(address.checked_sub(self.base)?).ok()?;
        self.bytes.get(offset..offset.checked_add(length)?)
    }
}

/// Whether `inner` is a part of `outer` (the same memory, not equal bytes):
/// what tests and fuzz targets check of every slice a parser returns.
pub fn lies_within(inner: &[u8], outer: &[u8]) -> bool {
    let outer = outer.as_ptr_range();
    let inner = inner.as_ptr_range();
    outer.start <= inner.start && inner.end <= outer.end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_image_reads_only_inside_itself() {
        let bytes = [1, 2, 3, 4];
        let memory = MemoryImage {
            base: 0x1000,
            bytes: &bytes,
        };
        assert_eq!(memory.read(0x1001, 2), Some(&bytes[1..3]));
        assert_eq!(memory.read(0x1000, 4), Some(&bytes[..]));
        assert_eq!(memory.read(0x1004, 0), Some(&[][..]));
        assert_eq!(memory.read(0x1003, 2), None);
        assert_eq!(memory.read(0xFFF, 1), None);
        assert_eq!(memory.read(0x1001, usize::MAX), None);
        assert_eq!(memory.read(u64::MAX, 1), None);
    }

    #[test]
    fn lies_within_compares_memory_not_contents() {
        let bytes = [7u8; 8];
        let copy = bytes;
        assert!(lies_within(&bytes[2..5], &bytes));
        assert!(lies_within(&bytes, &bytes));
        assert!(!lies_within(&copy[..1], &bytes));
    }
}
