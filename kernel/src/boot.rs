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

/// Where the IOMMU and the PCI bus are, as the firmware describes them.
pub struct Discovered {
    /// The DMAR table (x86_64).
    pub dmar: Option<&'static [u8]>,
    /// The SMMUv3 register window (aarch64).
    pub smmu: Option<(u64, u64)>,
    /// PCI segment 0's ECAM base.
    pub ecam: Option<u64>,
    /// The 32-bit memory window for BARs nobody assigned: (PCI, CPU, size).
    pub mmio32: Option<(u64, u64, u64)>,
}

fn fail(what: core::fmt::Arguments<'_>) -> ! {
    crate::println!("[boot] cannot continue: {what}");
    crate::exit(crate::EXIT_BOOT_FAILED)
}

#[cfg(target_arch = "x86_64")]
fn discover(info: &mut BootInfo) -> Discovered {
    let Platform::Acpi { rsdp } = info.platform else {
        fail(format_args!("x86_64 boots from ACPI, but the loader gave no RSDP"));
    };
    let tables = crate::platform::acpi::discover(rsdp).unwrap_or_else(|e| fail(format_args!("ACPI: {e}")));
    let ecam = tables.mcfg.and_then(crate::platform::acpi::ecam_from_mcfg);
    if let Some((base, first, last)) = ecam {
        crate::println!("[acpi] MCFG: PCI segment 0 ECAM at {base:#x}, buses {first}..={last}");
    }
    if let Some(dmar) = tables.dmar {
        crate::println!("[acpi] DMAR: {} bytes", dmar.len());
    }
    Discovered { dmar: tables.dmar, smmu: None, ecam: ecam.map(|e| e.0), mmio32: None }
}

#[cfg(target_arch = "aarch64")]
fn discover(info: &mut BootInfo) -> Discovered {
    let Platform::DeviceTree { dtb } = info.platform else {
        fail(format_args!("aarch64 boots from a device tree, but none was found"));
    };
    let tree = crate::platform::devicetree::discover(dtb, &mut |region| info.add_memory(region))
        .unwrap_or_else(|e| fail(format_args!("device tree at {dtb:#x}: {e}")));
    info.cmdline = tree.bootargs;
    if let Some((base, size)) = tree.smmu {
        crate::println!("[fdt] SMMUv3 at {base:#x} ({} KiB)", size / 1024);
    }
    if let Some(pcie) = tree.pcie {
        crate::println!("[fdt] PCIe ECAM at {:#x} ({} MiB)", pcie.ecam_base, pcie.ecam_size >> 20);
    }
    Discovered {
        dmar: None,
        smmu: tree.smmu,
        ecam: tree.pcie.map(|p| p.ecam_base),
        mmio32: tree.pcie.and_then(|p| p.mmio32),
    }
}

/// The architecture-neutral boot path.
pub fn main(mut info: BootInfo) -> ! {
    crate::println!("Portcullis {} ({})", env!("CARGO_PKG_VERSION"), crate::arch::NAME);
    let found = discover(&mut info);
    crate::println!("[boot] command line: \"{}\"", info.cmdline);
    crate::println!("[boot] memory map ({} entries):", info.memory.len());
    for region in &info.memory {
        crate::println!("[boot]   {region}");
    }
    if info.memory_dropped > 0 {
        crate::println!("[boot]   ... {} more entries not kept", info.memory_dropped);
    }
    let Some(mut frames) = crate::frames::BootFrames::new(&info.memory) else {
        fail(format_args!("no free RAM above the kernel image"));
    };
    #[cfg(target_arch = "x86_64")]
    if let Err(why) = crate::iommu_unit::init(&found, &mut frames) {
        fail(format_args!("IOMMU: {why}"));
    }
    let cmdline = crate::cmdline::Cmdline::new(info.cmdline);
    if cmdline.lists("tests", "boot") {
        crate::exit(crate::boot_tests::run(&cmdline, &found, &mut frames));
    }
    crate::exit(crate::EXIT_SUCCESS)
}
