//! Disks the host can check, for images that drive a virtio-blk device
//! (`images/blk.toml`) or an NVMe controller (`images/nvme.toml`).
//!
//! A platform's `virtio-blk` or `nvme` device (`images/platforms/*.toml`,
//! model `virtio-blk` or `nvme`) names a QEMU drive (`drive=ID`) that needs a disk file,
//! so it is added only to an image that grants it. For such an image
//! xtask writes `target/images/<NAME>-<arch>.disk` before boot:
//! `vblk_protocol::DISK_BLOCKS` blocks of the pattern
//! `vblk_protocol::OLD_SEED`, attached with `-drive if=none,id=ID,
//! format=raw`. The image's client rewrites it with `NEW_SEED`; after QEMU
//! exits, [`Disk::verify`] checks every byte of the file (`cargo xtask run`
//! prints the result; the system test counts it as the test
//! `host_disk_holds_the_new_pattern`).

use std::path::{Path, PathBuf};

use vblk_protocol::{BLOCK_SIZE, DISK_BLOCKS, NEW_SEED, OLD_SEED, fill_block, first_mismatch};

use crate::error::{Error, Result};
use crate::machines::Arch;

/// The platform device models that need a disk.
const MODELS: [&str; 2] = ["virtio-blk", "nvme"];
/// The platform device models added only where granted, with a backend
/// the caller adds (`crate::net::netdev`).
const GRANTED_ONLY: [&str; 1] = [crate::net::MODEL];

/// A disk file attached to a run.
#[derive(Debug, Clone)]
pub struct Disk {
    /// The file.
    pub path: PathBuf,
}

/// The QEMU arguments of the platform's devices for `image` (as
/// `Platform::qemu_args`, in file order), leaving out a `virtio-blk` the
/// image does not grant; for one it grants, the disk file is created with
/// the seeded pattern in `dir` (xtask's `target/images/`) and attached.
pub fn devices(
    dir: &Path,
    arch: Arch,
    image: &sysimage::Image,
) -> Result<(Vec<String>, Option<Disk>)> {
    let mut args = Vec::new();
    let mut disk = None;
    for device in &image.platform.devices {
        let granted = image
            .system
            .dma_grants
            .iter()
            .any(|grant| grant.device == device.pci);
        if GRANTED_ONLY.contains(&device.model.as_str()) {
            if granted {
                args.extend(device.qemu.iter().cloned());
            }
            continue;
        }
        if !MODELS.contains(&device.model.as_str()) {
            args.extend(device.qemu.iter().cloned());
            continue;
        }
        if !granted {
            continue;
        }
        let drive = drive_id(&device.qemu).ok_or_else(|| {
            Error::new(
                format!(
                    "platform {}: device `{}` names no `drive=ID`",
                    image.platform.name, device.name
                ),
                "add drive=disk0 to its -device options",
            )
        })?;
        let path = dir.join(format!("{}-{}.disk", image.name, arch.name()));
        write_pattern(&path)?;
        args.extend([
            "-drive".to_string(),
            format!("if=none,id={drive},format=raw,file={}", path.display()),
        ]);
        args.extend(device.qemu.iter().cloned());
        disk = Some(Disk { path });
    }
    Ok((args, disk))
}

/// The `drive=ID` of a device's `-device` options.
fn drive_id(qemu: &[String]) -> Option<String> {
    qemu.iter()
        .flat_map(|arg| arg.split(','))
        .find_map(|option| option.strip_prefix("drive="))
        .map(str::to_string)
}

/// Writes the disk file: every block of pattern `OLD_SEED`.
fn write_pattern(path: &Path) -> Result<()> {
    let mut bytes = Vec::with_capacity(DISK_BLOCKS as usize * BLOCK_SIZE);
    let mut block = [0u8; BLOCK_SIZE];
    for number in 0..DISK_BLOCKS {
        fill_block(OLD_SEED, number, &mut block);
        bytes.extend_from_slice(&block);
    }
    std::fs::write(path, bytes).map_err(|error| {
        Error::new(
            format!("cannot write the disk {}: {error}", path.display()),
            "check the permissions of the target directory",
        )
    })
}

impl Disk {
    /// Checks that the file holds pattern `NEW_SEED` in every block; a
    /// sentence saying what was found either way.
    pub fn verify(&self) -> std::result::Result<String, String> {
        let bytes = std::fs::read(&self.path)
            .map_err(|error| format!("cannot read {}: {error}", self.path.display()))?;
        check(&bytes).map(|()| {
            format!(
                "{} holds the client's new pattern in all {DISK_BLOCKS} blocks",
                self.path.display()
            )
        })
    }
}

/// `Ok` when `bytes` are `DISK_BLOCKS` blocks of pattern `NEW_SEED`.
fn check(bytes: &[u8]) -> std::result::Result<(), String> {
    let expected = DISK_BLOCKS as usize * BLOCK_SIZE;
    if bytes.len() != expected {
        return Err(format!("the disk is {} bytes, not {expected}", bytes.len()));
    }
    for (number, block) in bytes.chunks(BLOCK_SIZE).enumerate() {
        let number = number as u64;
        if let Some(offset) = first_mismatch(NEW_SEED, number, block) {
            let old = first_mismatch(OLD_SEED, number, block).is_none();
            return Err(format!(
                "block {number} differs from the new pattern at byte {offset}{}",
                if old {
                    " (it still holds the pattern xtask wrote: never written)"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(seed: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut block = [0u8; BLOCK_SIZE];
        for number in 0..DISK_BLOCKS {
            fill_block(seed, number, &mut block);
            bytes.extend_from_slice(&block);
        }
        bytes
    }

    #[test]
    fn only_a_fully_rewritten_disk_passes() {
        assert_eq!(check(&disk(NEW_SEED)), Ok(()));
        let untouched = check(&disk(OLD_SEED)).unwrap_err();
        assert!(
            untouched.contains("block 0") && untouched.contains("never written"),
            "{untouched}"
        );
        let mut last_missing = disk(NEW_SEED);
        let last = (DISK_BLOCKS as usize - 1) * BLOCK_SIZE;
        last_missing[last..].copy_from_slice(&disk(OLD_SEED)[last..]);
        let error = check(&last_missing).unwrap_err();
        assert!(
            error.contains(&format!("block {}", DISK_BLOCKS - 1)),
            "{error}"
        );
        let mut flipped = disk(NEW_SEED);
        flipped[5000] ^= 0x40;
        assert!(check(&flipped).unwrap_err().contains("byte 904"));
        assert!(
            check(&disk(NEW_SEED)[..4096])
                .unwrap_err()
                .contains("bytes")
        );
    }

    #[test]
    fn drives_are_found_in_device_options() {
        let qemu = [
            "-device".to_string(),
            "virtio-blk-pci,addr=05.0,drive=disk0".to_string(),
        ];
        assert_eq!(drive_id(&qemu).as_deref(), Some("disk0"));
        assert_eq!(drive_id(&["-device".to_string(), "edu".to_string()]), None);
    }

    /// Images that do not grant the disk get no virtio-blk (whose drive
    /// would be missing); `blk` gets it with its drive and a fresh disk
    /// of the old pattern, which verification refuses.
    #[test]
    fn the_disk_is_attached_only_where_granted() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = std::env::temp_dir().join(format!("xtask-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for arch in Arch::ALL {
            let default = crate::image::load(&root, arch, "default").unwrap();
            let (args, disk) = devices(&dir, arch, &default).unwrap();
            assert!(disk.is_none());
            assert!(!args.join(" ").contains("virtio-blk"), "{args:?}");
            assert!(args.join(" ").contains("edu,addr=04.0"), "{args:?}");
            let blk = crate::image::load(&root, arch, "blk").unwrap();
            let (args, disk) = devices(&dir, arch, &blk).unwrap();
            let disk = disk.unwrap();
            let joined = args.join(" ");
            assert!(
                joined.contains("-drive if=none,id=disk0,format=raw,file="),
                "{joined}"
            );
            assert!(joined.contains("virtio-blk-pci,addr=05.0,drive=disk0,iommu_platform=on"));
            let error = disk.verify().unwrap_err();
            assert!(error.contains("never written"), "{error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
