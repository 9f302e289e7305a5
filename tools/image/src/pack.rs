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

/// The page-rounded `[start, end)` of every loadable segment of a checked
/// ELF64 (see [`check_elf`]); `Err` if the program header table lies
/// outside the file.
pub fn load_segments(bytes: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let table = word(32).ok_or("no program header offset")?;
    let (entry_size, count) = (usize::from(u16_at(54)), usize::from(u16_at(56)));
    let mut segments = Vec::new();
    for index in 0..count {
        let at = usize::try_from(table)
            .ok()
            .and_then(|table| table.checked_add(index.checked_mul(entry_size)?))
            .filter(|_| entry_size >= 56)
            .ok_or("the program header table is malformed")?;
        let header = at
            .checked_add(56)
            .and_then(|end| bytes.get(at..end))
            .ok_or("the program header table lies outside the file")?;
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if kind != 1 {
            continue;
        }
        let vaddr = u64::from_le_bytes(header[16..24].try_into().map_err(|_| "short header")?);
        let memory_size =
            u64::from_le_bytes(header[40..48].try_into().map_err(|_| "short header")?);
        if memory_size == 0 {
            continue;
        }
        let start = vaddr & !(PAGE - 1);
        let end = vaddr
            .checked_add(memory_size)
            .and_then(|end| end.checked_next_multiple_of(PAGE))
            .ok_or("a segment ends above 2^64")?;
        segments.push((start, end));
    }
    Ok(segments)
}

const PAGE: u64 = 4096;

/// Checks that no map of a domain covers a page its program is loaded at.
fn check_maps_clear_of_programs(
    image: &Image,
    file: &Path,
    programs: &BTreeMap<String, Vec<u8>>,
) -> Result<(), ImageError> {
    let system = &image.system;
    for (domain_index, domain) in system.domains.iter().enumerate() {
        let Some(bytes) = programs.get(domain.program.as_str()) else {
            continue;
        };
        let segments = load_segments(bytes).map_err(|problem| {
            ImageError::new(
                file,
                format!("program `{}`", domain.program),
                format!("the ELF is malformed: {problem}"),
                "rebuild the program",
            )
        })?;
        let maps = system
            .maps
            .iter()
            .filter(|map| usize::from(map.domain) == domain_index);
        for (map_index, map) in maps.enumerate() {
            let region = &system.regions[usize::from(map.region)];
            let end = map.vaddr.saturating_add(region.size);
            if let Some((start, stop)) = segments
                .iter()
                .find(|(start, stop)| *start < end && map.vaddr < *stop)
            {
                return Err(ImageError::new(
                    file,
                    format!("protection_domain \"{}\" map {map_index}", domain.name),
                    format!(
                        "`{}` at {:#x}..{end:#x} overlaps program `{}` loaded at {start:#x}..{stop:#x}",
                        region.name, map.vaddr, domain.program
                    ),
                    format!("map the region at or above {stop:#x}, or below {start:#x}"),
                ));
            }
        }
    }
    Ok(())
}

/// Packs `image` for `arch` with the kernel ELF and one ELF per program the
/// image names (`programs`: name -> bytes; extra programs are refused, so
/// the archive holds exactly what the description uses). Checks what only
/// the ELFs can tell: each is an executable for `arch`, and no domain maps
/// a region over the pages its program is loaded at.
///
/// The archive has no root task: the kernel cannot boot it on its own (see
/// [`pack_with_root_task`]).
pub fn pack(
    image: &Image,
    arch: Arch,
    kernel: &[u8],
    programs: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<u8>, ImageError> {
    pack_with_root_task(image, arch, kernel, None, programs)
}

/// [`pack`], with the root task's ELF (init, `userland/init`) as the
/// [`EntryKind::RootTask`] entry: the archive the kernel boots.
pub fn pack_with_root_task(
    image: &Image,
    arch: Arch,
    kernel: &[u8],
    root_task: Option<&[u8]>,
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

    if let Some(bytes) = root_task {
        check_elf(bytes, arch).map_err(|problem| {
            error(
                "root task",
                format!("the root task (init) is {problem}"),
                "build userland/init for this architecture",
            )
        })?;
    }
    check_maps_clear_of_programs(image, &file, programs)?;

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

    // Sorted by (kind, name): description, kernel, programs by name, root task.
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
    if let Some(bytes) = root_task {
        payloads.push((EntryKind::RootTask, archive::ROOT_TASK_NAME, bytes));
    }
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
