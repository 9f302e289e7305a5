//! System images: `images/<NAME>.toml`, validated by the `sysimage` crate
//! (tools/image) against the platform of the chosen architecture before
//! anything is built.
//!
//! The format, the platforms and every rejection are described in
//! `images/README.md`; this file only connects xtask to them: it picks the
//! platform for `--arch`, lists the workspace's user programs, and turns
//! an image error (file, line, entry, problem, fix) into xtask's [`Error`].

use std::path::{Path, PathBuf};

use sysimage::sysdesc::archive;

use crate::error::{Error, Result};
use crate::kernel;
use crate::machines::Arch;

/// The image `cargo xtask run` boots when `--image` is not given.
pub const DEFAULT_IMAGE: &str = "default";

impl From<sysimage::ImageError> for Error {
    fn from(error: sysimage::ImageError) -> Error {
        let mut located = error.file.display().to_string();
        if let Some((line, column)) = error.position {
            located.push_str(&format!(":{line}:{column}"));
        }
        if !error.entry.is_empty() {
            located.push_str(&format!(": {}", error.entry));
        }
        Error::new(format!("{located}: {}", error.problem), error.fix)
    }
}

/// The architecture as the image tools name it.
pub fn image_arch(arch: Arch) -> archive::Arch {
    match arch {
        Arch::X86_64 => archive::Arch::X86_64,
        Arch::Aarch64 => archive::Arch::Aarch64,
    }
}

/// The platform `--arch` selects: `images/platforms/q35.toml` for x86_64,
/// `virt.toml` for aarch64.
pub fn platform(root: &Path, arch: Arch) -> Result<sysimage::Platform> {
    let name = sysimage::platform::for_arch(image_arch(arch));
    Ok(sysimage::platform::load(
        &root.join("images/platforms"),
        name,
    )?)
}

/// Loads `images/<name>.toml` and validates it against the platform of
/// `arch` and the user programs of the workspace.
pub fn load(root: &Path, arch: Arch, name: &str) -> Result<sysimage::Image> {
    let platform = platform(root, arch)?;
    let programs = sysimage::workspace_programs(root)?;
    Ok(sysimage::load(
        &root.join("images"),
        name,
        &platform,
        &programs,
    )?)
}

/// The root task every packed image carries (`userland/init`).
pub const ROOT_TASK_PACKAGE: &str = "init";

/// A packed boot image on disk.
pub struct Packed {
    /// `target/images/<NAME>-<arch>.img`.
    pub path: PathBuf,
    /// The programs it carries, by name.
    pub programs: Vec<String>,
    /// Its size in bytes.
    pub size: usize,
}

/// Builds the kernel, init and the image's programs for `arch` and packs
/// them with the description of `image` into `target/images/<NAME>-<arch>.img`.
pub fn pack(root: &Path, arch: Arch, image: &sysimage::Image) -> Result<Packed> {
    let kernel_elf = read(&kernel::build(root, arch)?)?;
    let init_elf = read(&kernel::build_package(root, arch, ROOT_TASK_PACKAGE)?)?;
    let mut programs = std::collections::BTreeMap::new();
    for program in &image.programs {
        let path = kernel::build_package(root, arch, program)?;
        programs.insert(program.clone(), read(&path)?);
    }
    let bytes = sysimage::pack::pack_with_root_task(
        image,
        image_arch(arch),
        &kernel_elf,
        Some(&init_elf),
        &programs,
    )?;
    output_dir(root)?;
    let path = packed_path(root, arch, &image.name);
    std::fs::write(&path, &bytes).map_err(|error| {
        Error::new(
            format!("cannot write {}: {error}", path.display()),
            "check the permissions of the target directory",
        )
    })?;
    Ok(Packed {
        path,
        programs: image.programs.clone(),
        size: bytes.len(),
    })
}

/// Where `graph` and `pack` write, `target/images/`, created if missing.
pub fn output_dir(root: &Path) -> Result<PathBuf> {
    let dir = kernel::target_dir(root).join("images");
    std::fs::create_dir_all(&dir).map_err(|error| {
        Error::new(
            format!("cannot create {}: {error}", dir.display()),
            "check the permissions of the target directory",
        )
    })?;
    Ok(dir)
}

/// Where [`pack`] writes image `name` for `arch`.
pub fn packed_path(root: &Path, arch: Arch, name: &str) -> PathBuf {
    kernel::target_dir(root)
        .join("images")
        .join(format!("{name}-{}.img", arch.name()))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| {
        Error::new(
            format!("cannot read {}: {error}", path.display()),
            "rebuild it with cargo xtask build",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// On every architecture whose platform the image lists (all when it
    /// lists none); an image limited to other platforms is refused by
    /// name, and every image runs somewhere.
    #[test]
    fn every_image_in_the_repository_loads_on_its_architectures() {
        let names = sysimage::available(&root().join("images"));
        assert!(names.iter().any(|name| name == DEFAULT_IMAGE), "{names:?}");
        for name in &names {
            let mut loaded = 0;
            for arch in Arch::ALL {
                match load(&root(), arch, name) {
                    Ok(image) => {
                        assert!(!image.description.trim().is_empty(), "{name}");
                        loaded += 1;
                    }
                    Err(error) if error.problem.contains(": platforms: ") => {}
                    Err(error) => panic!("{error}"),
                }
            }
            assert!(loaded > 0, "{name} loads on no architecture");
        }
    }

    #[test]
    fn image_errors_keep_file_line_entry_and_fix() {
        let error = Error::from(
            sysimage::ImageError::new(
                Path::new("images/x.toml"),
                "channel 0",
                "unknown protection_domain `srv`",
                "use one of: server",
            )
            .at("a\nb", 2),
        );
        assert_eq!(
            error.problem,
            "images/x.toml:2:1: channel 0: unknown protection_domain `srv`"
        );
        assert_eq!(error.fix, "use one of: server");
    }

    #[test]
    fn unknown_images_list_the_available_ones() {
        let error = load(&root(), Arch::X86_64, "no-such-image").unwrap_err();
        assert!(
            error.problem.contains("unknown image `no-such-image`"),
            "{error}"
        );
        assert!(error.fix.contains(DEFAULT_IMAGE), "{error}");
    }

    /// The platform files say which edu the machine table creates on every
    /// run (`qemu = []`); they must agree with `machines.rs`.
    #[test]
    fn platforms_agree_with_the_machine_table() {
        for arch in Arch::ALL {
            let platform = platform(&root(), arch).unwrap();
            assert_eq!(platform.arch, image_arch(arch));
            let machine_edus = arch
                .machine()
                .device_args
                .iter()
                .filter(|arg| arg.split(',').next() == Some("edu"))
                .count();
            let listed = platform
                .devices
                .iter()
                .filter(|device| device.qemu.is_empty() && device.model == "edu")
                .count();
            assert_eq!(machine_edus, listed, "{}", platform.name);
            // ... at the address the platform lists (QEMU's slot choice
            // moves when an image's `-netdev` drops the default NIC).
            for device in platform.devices.iter().filter(|d| d.qemu.is_empty()) {
                let address = format!("addr={:02x}.{:x}", device.pci.device, device.pci.function);
                assert!(
                    arch.machine()
                        .device_args
                        .iter()
                        .any(|arg| arg.starts_with("edu,") && arg.contains(&address)),
                    "{}: {address}",
                    device.name
                );
            }
            // Every device an image can add is created at an explicit address.
            for device in platform.devices.iter().filter(|d| !d.qemu.is_empty()) {
                let address = format!("addr={:02x}.{:x}", device.pci.device, device.pci.function);
                assert!(
                    device.qemu.join(" ").contains(&address),
                    "{}: {:?}",
                    device.name,
                    device.qemu
                );
            }
        }
    }
}
