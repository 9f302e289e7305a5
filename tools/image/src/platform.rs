//! Platforms: `images/platforms/<NAME>.toml`, one per QEMU machine. A
//! platform says which architecture and IOMMU the machine has, whether
//! PASID-tagged DMA exists, which interrupts domains may take, and which PCI
//! devices exist with the QEMU arguments that create them.
//!
//! Images are architecture-neutral; `--arch` picks the platform
//! ([`for_arch`]): `q35` for x86_64, `virt` for aarch64.

use std::fs;
use std::path::Path;

use sysdesc::PciAddress;
use sysdesc::archive::Arch;

use crate::error::ImageError;
use crate::format::PlatformFile;
use crate::toml_error;

/// The IOMMU of a platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iommu {
    /// Intel VT-d.
    Vtd,
    /// Arm SMMUv3.
    Smmuv3,
}

/// A PCI device that exists on a platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Short name, e.g. `edu`.
    pub name: String,
    /// Its PCI address.
    pub pci: PciAddress,
    /// The QEMU device model.
    pub model: String,
    /// QEMU arguments that create it (empty: xtask's machine table does).
    pub qemu: Vec<String>,
}

/// A checked platform file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// The file name without `.toml`, e.g. `q35`.
    pub name: String,
    /// What the machine is.
    pub description: String,
    /// Its architecture.
    pub arch: Arch,
    /// Its IOMMU.
    pub iommu: Iommu,
    /// Bits of PASID its DMA can carry (0: none).
    pub pasid_bits: u32,
    /// The interrupt numbers domains may take, inclusive.
    pub irqs: (u32, u32),
    /// Its PCI devices, in file order.
    pub devices: Vec<Device>,
}

impl Platform {
    /// The device at `pci`, if the platform has one.
    pub fn device(&self, pci: PciAddress) -> Option<&Device> {
        self.devices.iter().find(|device| device.pci == pci)
    }

    /// The QEMU arguments of every device, in file order.
    pub fn qemu_args(&self) -> Vec<String> {
        self.devices
            .iter()
            .flat_map(|device| device.qemu.iter().cloned())
            .collect()
    }
}

/// The platform file name used for `arch`.
pub fn for_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "q35",
        Arch::Aarch64 => "virt",
    }
}

/// The architecture called `name` (`x86_64` or `aarch64`).
pub fn arch_named(name: &str) -> Option<Arch> {
    match name {
        "x86_64" => Some(Arch::X86_64),
        "aarch64" => Some(Arch::Aarch64),
        _ => None,
    }
}

/// The name of `arch`.
pub fn arch_name(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86_64",
        Arch::Aarch64 => "aarch64",
    }
}

/// Parses and checks the text of a platform file; `file` names it in errors.
pub fn parse(file: &Path, name: &str, text: &str) -> Result<Platform, ImageError> {
    let raw: PlatformFile = toml::from_str(text).map_err(|error| {
        toml_error(
            file,
            text,
            &error,
            "platform files have description, arch, iommu, pasid_bits, irqs and [[device]] tables (images/README.md)",
        )
    })?;
    let whole = |problem: String, fix: &str| ImageError::new(file, "", problem, fix);
    let arch = arch_named(&raw.arch).ok_or_else(|| {
        whole(
            format!("unknown arch `{}`", raw.arch),
            "write arch = \"x86_64\" or arch = \"aarch64\"",
        )
    })?;
    let iommu = match raw.iommu.as_str() {
        "vtd" => Iommu::Vtd,
        "smmuv3" => Iommu::Smmuv3,
        other => {
            return Err(whole(
                format!("unknown iommu `{other}`"),
                "write iommu = \"vtd\" or iommu = \"smmuv3\"",
            ));
        }
    };
    if raw.pasid_bits > 20 {
        return Err(whole(
            format!(
                "pasid_bits = {} but PASIDs have at most 20 bits",
                raw.pasid_bits
            ),
            "use 0..=20",
        ));
    }
    let [first, last] = raw.irqs;
    if first > last {
        return Err(whole(
            format!("irqs = [{first}, {last}] is empty"),
            "write irqs = [first, last] with first <= last",
        ));
    }
    let mut devices: Vec<Device> = Vec::new();
    for spanned in &raw.device {
        let entry = spanned.get_ref();
        let label = format!("device \"{}\"", entry.name);
        let error = |problem: String, fix: &str| {
            ImageError::new(file, label.clone(), problem, fix).at(text, spanned.span().start)
        };
        let pci = PciAddress::parse(&entry.pci).ok_or_else(|| {
            error(
                format!("`{}` is not a PCI address", entry.pci),
                "write pci = \"BB:DD.F\" in hexadecimal, e.g. \"00:04.0\"",
            )
        })?;
        if let Some(other) = devices.iter().find(|device| device.pci == pci) {
            return Err(error(
                format!("PCI address {pci} is also device \"{}\"", other.name),
                "give each device its own address",
            ));
        }
        devices.push(Device {
            name: entry.name.clone(),
            pci,
            model: entry.model.clone(),
            qemu: entry.qemu.clone(),
        });
    }
    Ok(Platform {
        name: name.to_string(),
        description: raw.description,
        arch,
        iommu,
        pasid_bits: raw.pasid_bits,
        irqs: (first, last),
        devices,
    })
}

/// Loads `<platforms_dir>/<name>.toml`.
pub fn load(platforms_dir: &Path, name: &str) -> Result<Platform, ImageError> {
    let path = platforms_dir.join(format!("{name}.toml"));
    let shown = Path::new("images/platforms").join(format!("{name}.toml"));
    let text = fs::read_to_string(&path).map_err(|error| {
        ImageError::new(
            &shown,
            "",
            format!("cannot read {}: {error}", path.display()),
            "platform files live in images/platforms/ (q35.toml, virt.toml)",
        )
    })?;
    parse(&shown, name, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platforms_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/platforms")
    }

    #[test]
    fn both_platform_files_load() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let platform = load(&platforms_dir(), for_arch(arch)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(platform.arch, arch);
            // QEMU's emulated IOMMUs deliver no PASID-tagged DMA (QEMU.md).
            assert_eq!(platform.pasid_bits, 0);
            let edu = platform
                .device(PciAddress::parse("00:04.0").unwrap())
                .expect("the image edu at 00:04.0");
            assert!(edu.qemu.join(" ").contains("addr=04.0"), "{:?}", edu.qemu);
        }
        let q35 = load(&platforms_dir(), "q35").unwrap();
        assert_eq!(q35.iommu, Iommu::Vtd);
        let virt = load(&platforms_dir(), "virt").unwrap();
        assert_eq!(virt.iommu, Iommu::Smmuv3);
        // Above virt's RAM at 1 GiB: edu's default 28-bit mask is too small.
        assert!(virt.qemu_args().join(" ").contains("dma_mask=0xffffffffff"));
    }

    #[test]
    fn bad_platforms_are_rejected() {
        let file = Path::new("images/platforms/x.toml");
        let base = "description = \"d\"\narch = \"x86_64\"\niommu = \"vtd\"\npasid_bits = 0\nirqs = [0, 23]\n";
        assert!(parse(file, "x", base).is_ok());
        let cases = [
            (base.replace("x86_64", "riscv"), "unknown arch"),
            (base.replace("\"vtd\"", "\"amdvi\""), "unknown iommu"),
            (
                base.replace("pasid_bits = 0", "pasid_bits = 21"),
                "at most 20 bits",
            ),
            (base.replace("[0, 23]", "[9, 1]"), "is empty"),
            (
                format!("{base}[[device]]\nname = \"a\"\npci = \"0:4\"\nmodel = \"edu\"\n"),
                "not a PCI address",
            ),
            (
                format!(
                    "{base}[[device]]\nname = \"a\"\npci = \"00:04.0\"\nmodel = \"edu\"\n[[device]]\nname = \"b\"\npci = \"00:04.0\"\nmodel = \"edu\"\n"
                ),
                "also device \"a\"",
            ),
            (format!("{base}colour = 1\n"), "unknown field `colour`"),
        ];
        for (text, expected) in cases {
            let error = parse(file, "x", &text).unwrap_err();
            assert!(error.to_string().contains(expected), "{expected}: {error}");
        }
    }
}
