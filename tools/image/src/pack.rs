//! Packing: the kernel ELF, the user program ELFs and the postcard-encoded
//! description become one archive ([`sysdesc::archive`] has the layout).
//!
//! Reproducible by construction: entries sorted by (kind, name), payloads
//! at the next 4 KiB boundary with zero padding, no timestamps, paths or
//! host data anywhere, so the same inputs always give the same bytes.

use std::collections::BTreeMap;
use std::path::Path;

use sysdesc::archive::{self, Arch, Entry, EntryKind};

use crate::error::ImageError;
use crate::validate::Image;

/// The name of the kernel entry.
pub const KERNEL_NAME: &str = "kernel";

/// ELF `e_machine` of each architecture.
fn elf_machine(arch: Arch) -> u16 {
    match arch {
        Arch::X86_64 => 62,
        Arch::Aarch64 => 183,
    }
}

/// Checks that `bytes` are a little-endian ELF64 executable for `arch`;
/// returns what is wrong otherwise.
pub fn check_elf(bytes: &[u8], arch: Arch) -> Result<(), String> {
    if bytes.len() < 64 || bytes[..4] != *b"\x7fELF" {
        return Err("not an ELF file".to_string());
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a little-endian 64-bit ELF".to_string());
    }
    let kind = u16::from_le_bytes([bytes[16], bytes[17]]);
    if kind != 2 {
        return Err(format!("ELF type {kind}, not an executable (2)"));
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if machine != elf_machine(arch) {
        return Err(format!(
            "built for ELF machine {machine}, not {} ({})",
            elf_machine(arch),
            crate::platform::arch_name(arch)
        ));
    }
    Ok(())
}

/// Packs `image` for `arch` with the kernel ELF and one ELF per program the
/// image names (`programs`: name -> bytes; extra programs are refused, so
/// the archive holds exactly what the description uses).
pub fn pack(
    image: &Image,
    arch: Arch,
    kernel: &[u8],
    programs: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<u8>, ImageError> {
    let file = Path::new("images").join(format!("{}.toml", image.name));
    let error =
        |entry: &str, problem: String, fix: &str| ImageError::new(&file, entry, problem, fix);
    if image.platform.arch != arch {
        return Err(error(
            "",
            format!(
                "validated for the {} platform ({}), packed for {}",
                image.platform.name,
                crate::platform::arch_name(image.platform.arch),
                crate::platform::arch_name(arch)
            ),
            "validate against the platform of the architecture you pack for",
        ));
    }
    check_elf(kernel, arch).map_err(|problem| {
        error(
            "kernel",
            format!("the kernel is {problem}"),
            "build the kernel for this architecture",
        )
    })?;
    for name in &image.programs {
        let bytes = programs.get(name).ok_or_else(|| {
            error(
                &format!("program `{name}`"),
                "no ELF was supplied".to_string(),
                "build the program before packing",
            )
        })?;
        check_elf(bytes, arch).map_err(|problem| {
            error(
                &format!("program `{name}`"),
                format!("the ELF is {problem}"),
                "build the program for this architecture",
            )
        })?;
    }
    if let Some(extra) = programs.keys().find(|name| !image.programs.contains(name)) {
        return Err(error(
            &format!("program `{extra}`"),
            "supplied but no protection_domain runs it".to_string(),
            "pack only the programs the image names",
        ));
    }

    let mut description = vec![0u8; 64 << 10];
    let used = image
        .system
        .encode(&mut description)
        .map_err(|codec| {
            error(
                "",
                format!("cannot encode the description: {codec}"),
                "report this: sysdesc capacities bound its size",
            )
        })?
        .len();
    description.truncate(used);

    // Sorted by (kind, name): description, kernel, programs by name.
    let mut payloads: Vec<(EntryKind, &str, &[u8])> = vec![
        (
            EntryKind::Description,
            archive::DESCRIPTION_NAME,
            &description,
        ),
        (EntryKind::Kernel, KERNEL_NAME, kernel),
    ];
    payloads.extend(
        programs
            .iter()
            .map(|(name, bytes)| (EntryKind::Program, name.as_str(), bytes.as_slice())),
    );
    let table_end = archive::HEADER_SIZE + payloads.len() * archive::ENTRY_SIZE;
    let mut offset = (table_end as u64).next_multiple_of(archive::ALIGN);
    let mut entries = Vec::new();
    for (kind, name, bytes) in &payloads {
        entries.push(Entry {
            name,
            kind: *kind,
            offset,
            size: bytes.len() as u64,
        });
        offset = (offset + bytes.len() as u64).next_multiple_of(archive::ALIGN);
    }
    let image_size = entries
        .last()
        .map_or(table_end as u64, |last| last.offset + last.size);

    let mut out = vec![0u8; image_size as usize];
    let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    out[..archive::HEADER_SIZE].copy_from_slice(&archive::encode_header(arch, count, image_size));
    for (index, (entry, (_, _, bytes))) in entries.iter().zip(&payloads).enumerate() {
        let row = archive::encode_entry(entry).ok_or_else(|| {
            error(
                &format!("program `{}`", entry.name),
                format!("the name is longer than {} bytes", archive::ENTRY_NAME_LEN),
                "use a shorter program name",
            )
        })?;
        let at = archive::HEADER_SIZE + index * archive::ENTRY_SIZE;
        out[at..at + archive::ENTRY_SIZE].copy_from_slice(&row);
        let start = entry.offset as usize;
        out[start..start + bytes.len()].copy_from_slice(bytes);
    }
    Ok(out)
}
