//! Architecture-neutral boot: memory map, command line, platform discovery.

use core::fmt;

/// What a physical memory range holds.
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

impl fmt::Display for MemoryRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#014x}..{:#014x} {:>8} KiB {:?}",
            self.start,
            self.start.saturating_add(self.size),
            self.size / 1024,
            self.kind
        )
    }
}

/// How the platform describes itself.
#[derive(Clone, Copy, Debug)]
pub enum Platform {
    /// ACPI, with the physical address of the RSDP.
    Acpi {
        /// Physical address of the RSDP.
        rsdp: u64,
    },
    /// A flattened device tree at this physical address.
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
}

impl BootInfo {
    /// An empty boot info for `platform`.
    pub fn new(platform: Platform) -> BootInfo {
        BootInfo { memory: heapless::Vec::new(), memory_dropped: 0, cmdline: "", platform }
    }

    /// Records a memory-map entry, counting (not silently losing) overflow.
    pub fn add_memory(&mut self, region: MemoryRegion) {
        if self.memory.push(region).is_err() {
            self.memory_dropped += 1;
        }
    }
}

/// The architecture-neutral boot path.
pub fn main(info: BootInfo) -> ! {
    crate::println!("Portcullis {} ({})", env!("CARGO_PKG_VERSION"), crate::arch::NAME);
    crate::println!("[boot] command line: \"{}\"", info.cmdline);
    crate::println!("[boot] memory map ({} entries):", info.memory.len());
    for region in &info.memory {
        crate::println!("[boot]   {region}");
    }
    if info.memory_dropped > 0 {
        crate::println!("[boot]   ... {} more entries not kept", info.memory_dropped);
    }
    crate::exit(crate::EXIT_SUCCESS)
}
