//! What boot learns and hands on: the memory map, where the platform
//! describes itself, and the devices found there. Plain data with no
//! imports from the rest of the kernel, so the architecture's entry, the
//! frame allocator and device memory can take it without importing `boot`
//! (which imports most of the kernel).

use ktext::{Sink, Text};

/// What a physical memory range holds. The device tree only reports RAM;
/// the other kinds come from the x86 (E820-style) memory map.
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Usable RAM.
    Ram,
    /// Firmware-reserved.
    Reserved,
    /// ACPI tables, reclaimable after parsing.
    AcpiReclaimable,
    /// ACPI non-volatile storage.
    AcpiNvs,
    /// Defective RAM.
    Unusable,
}

/// One range of the physical memory map.
#[derive(Clone, Copy, Debug)]
pub struct MemoryRegion {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// What it holds.
    pub kind: MemoryKind,
}

impl MemoryKind {
    /// The kind's name, as the boot log prints it.
    pub fn name(self) -> &'static str {
        match self {
            MemoryKind::Ram => "Ram",
            MemoryKind::Reserved => "Reserved",
            MemoryKind::AcpiReclaimable => "AcpiReclaimable",
            MemoryKind::AcpiNvs => "AcpiNvs",
            MemoryKind::Unusable => "Unusable",
        }
    }
}

/// The boot log's line for a region: `0x000000100000..0x000007fe0000
/// 130944 KiB Ram`.
impl Text for MemoryRegion {
    fn write(&self, out: &mut dyn Sink) {
        ktext::put!(
            out,
            "{:#014x}..{:#014x} {:>8} KiB {}",
            self.start,
            self.start.saturating_add(self.size),
            self.size / 1024,
            self.kind.name()
        );
    }
}

/// How the platform describes itself.
#[derive(Clone, Copy, Debug)]
pub enum Platform {
    /// ACPI, with the physical address of the RSDP.
    #[cfg(target_arch = "x86_64")]
    Acpi {
        /// Physical address of the RSDP.
        rsdp: u64,
    },
    /// A flattened device tree at this physical address.
    #[cfg(target_arch = "aarch64")]
    DeviceTree {
        /// Physical address of the DTB.
        dtb: u64,
    },
}

/// The most memory-map entries the kernel keeps.
pub const MAX_MEMORY_REGIONS: usize = 32;

/// What the architecture's boot code learned from the loader.
pub struct BootInfo {
    /// The physical memory map.
    pub memory: heapless::Vec<MemoryRegion, MAX_MEMORY_REGIONS>,
    /// Entries that did not fit in `memory`.
    pub memory_dropped: usize,
    /// The kernel command line.
    pub cmdline: &'static str,
    /// Where the platform description is.
    pub platform: Platform,
    /// The boot module (QEMU `-initrd`): physical address and length.
    pub initrd: Option<(u64, u64)>,
}

impl BootInfo {
    /// An empty boot info for `platform`.
    pub fn new(platform: Platform) -> BootInfo {
        BootInfo {
            memory: heapless::Vec::new(),
            memory_dropped: 0,
            cmdline: "",
            platform,
            initrd: None,
        }
    }

    /// Records a memory-map entry, counting (not silently losing) overflow.
    pub fn add_memory(&mut self, region: MemoryRegion) {
        if self.memory.push(region).is_err() {
            self.memory_dropped += 1;
        }
    }
}

/// Where the IOMMU and the PCI bus are, as the firmware describes them.
pub struct Discovered {
    /// The DMAR table (x86_64).
    #[cfg(target_arch = "x86_64")]
    pub dmar: Option<&'static [u8]>,
    /// The SMMUv3 register window (aarch64).
    #[cfg(target_arch = "aarch64")]
    pub smmu: Option<(u64, u64)>,
    /// PCI segment 0's ECAM base.
    pub ecam: Option<u64>,
    /// Its size in bytes (1 MiB per bus).
    pub ecam_size: u64,
    /// The 32-bit memory window for BARs nobody assigned: (PCI, CPU, size).
    pub mmio32: Option<(u64, u64, u64)>,
    /// The 64-bit memory window for BARs: (PCI, CPU, size).
    pub mmio64: Option<(u64, u64, u64)>,
}
