//! Packing: the archive holds exactly the kernel, the programs and the
//! description, init's reader (`sysdesc::archive`) reads it back, and the
//! same inputs give the same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sysdesc::archive::{self, Arch, Archive, EntryKind};
use sysimage::{pack, platform, validate};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// A minimal ELF64 executable header for `machine`, followed by `body`.
fn elf(machine: u16, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; 64];
    bytes[..4].copy_from_slice(b"\x7fELF");
    bytes[4] = 2; // 64-bit
    bytes[5] = 1; // little-endian
    bytes[6] = 1; // version
    bytes[16..18].copy_from_slice(&2u16.to_le_bytes()); // executable
    bytes[18..20].copy_from_slice(&machine.to_le_bytes());
    bytes.extend_from_slice(body);
    bytes
}

const X86_64: u16 = 62;
const AARCH64: u16 = 183;

fn reference_image(arch: Arch) -> validate::Image {
    let platforms = root().join("../../images/platforms");
    let platform = platform::load(&platforms, platform::for_arch(arch)).unwrap();
    let text = std::fs::read_to_string(root().join("tests/fixtures/valid.toml")).unwrap();
    // The reference image's IRQ 11 is a q35 number; drop it for virt.
    let text = if arch == Arch::Aarch64 {
        text.replace("irq = 11", "irq = 40")
    } else {
        text
    };
    let programs = ["client", "edu", "server"].map(String::from);
    validate::validate(
        Path::new("valid.toml"),
        "valid",
        &text,
        &platform,
        &programs,
    )
    .unwrap_or_else(|error| panic!("{error}"))
}

fn programs(machine: u16) -> BTreeMap<String, Vec<u8>> {
    ["server", "client", "edu"]
        .into_iter()
        .map(|name| (name.to_string(), elf(machine, name.repeat(1000).as_bytes())))
        .collect()
}

#[test]
fn a_packed_image_reads_back_entry_by_entry() {
    for (arch, machine) in [(Arch::X86_64, X86_64), (Arch::Aarch64, AARCH64)] {
        let image = reference_image(arch);
        let kernel = elf(machine, &[0xAB; 10_000]);
        let programs = programs(machine);
        let bytes = pack::pack(&image, arch, &kernel, &programs).unwrap();
        let archive = Archive::parse(&bytes).unwrap();
        assert_eq!(archive.arch(), arch);
        let names: Vec<(EntryKind, &str)> = archive.entries().map(|e| (e.kind, e.name)).collect();
        assert_eq!(
            names,
            [
                (EntryKind::Description, archive::DESCRIPTION_NAME),
                (EntryKind::Kernel, pack::KERNEL_NAME),
                (EntryKind::Program, "client"),
                (EntryKind::Program, "edu"),
                (EntryKind::Program, "server"),
            ]
        );
        for entry in archive.entries() {
            assert_eq!(entry.offset % archive::ALIGN, 0, "{}", entry.name);
        }
        let kernel_entry = archive.find(EntryKind::Kernel, pack::KERNEL_NAME).unwrap();
        assert_eq!(archive.payload(&kernel_entry), kernel.as_slice());
        for (name, bytes) in &programs {
            let entry = archive.find(EntryKind::Program, name).unwrap();
            assert_eq!(archive.payload(&entry), bytes.as_slice(), "{name}");
        }
        assert_eq!(archive.description().unwrap(), image.system);
        // Padding between payloads is zero.
        let description = archive
            .find(EntryKind::Description, archive::DESCRIPTION_NAME)
            .unwrap();
        let padding_start = (description.offset + description.size) as usize;
        assert!(
            bytes[padding_start..kernel_entry.offset as usize]
                .iter()
                .all(|&b| b == 0)
        );
    }
}

#[test]
fn packing_is_reproducible() {
    let image = reference_image(Arch::X86_64);
    let kernel = elf(X86_64, b"kernel");
    let first = pack::pack(&image, Arch::X86_64, &kernel, &programs(X86_64)).unwrap();
    // Same inputs built afresh, programs inserted in another order.
    let mut reversed = BTreeMap::new();
    for (name, bytes) in programs(X86_64).into_iter().rev() {
        reversed.insert(name, bytes);
    }
    let second = pack::pack(
        &reference_image(Arch::X86_64),
        Arch::X86_64,
        &kernel.clone(),
        &reversed,
    )
    .unwrap();
    assert_eq!(first, second);
    // And a change in any input changes the bytes.
    let other_kernel = elf(X86_64, b"kernel2");
    let third = pack::pack(&image, Arch::X86_64, &other_kernel, &programs(X86_64)).unwrap();
    assert_ne!(first, third);
}

#[test]
fn programs_for_the_wrong_architecture_are_refused() {
    let image = reference_image(Arch::X86_64);
    let mut wrong = programs(X86_64);
    wrong.insert("edu".to_string(), elf(AARCH64, b"arm"));
    let error = pack::pack(&image, Arch::X86_64, &elf(X86_64, b"k"), &wrong).unwrap_err();
    assert_eq!(error.entry, "program `edu`");
    assert!(
        error.problem.contains("ELF machine 183, not 62 (x86_64)"),
        "{error}"
    );

    let error =
        pack::pack(&image, Arch::X86_64, &elf(AARCH64, b"k"), &programs(X86_64)).unwrap_err();
    assert_eq!(error.entry, "kernel");

    let error = pack::pack(
        &image,
        Arch::Aarch64,
        &elf(AARCH64, b"k"),
        &programs(AARCH64),
    )
    .unwrap_err();
    assert!(
        error.problem.contains("validated for the q35 platform"),
        "{error}"
    );
}

#[test]
fn missing_extra_and_non_elf_programs_are_refused() {
    let image = reference_image(Arch::X86_64);
    let kernel = elf(X86_64, b"k");
    let mut missing = programs(X86_64);
    missing.remove("server");
    let error = pack::pack(&image, Arch::X86_64, &kernel, &missing).unwrap_err();
    assert_eq!(error.entry, "program `server`");
    assert!(error.problem.contains("no ELF was supplied"), "{error}");

    let mut extra = programs(X86_64);
    extra.insert("stray".to_string(), elf(X86_64, b""));
    let error = pack::pack(&image, Arch::X86_64, &kernel, &extra).unwrap_err();
    assert_eq!(error.entry, "program `stray`");

    let mut text = programs(X86_64);
    text.insert(
        "client".to_string(),
        b"#!/bin/sh\necho not an ELF, but long enough to hold a header..........\n".to_vec(),
    );
    let error = pack::pack(&image, Arch::X86_64, &kernel, &text).unwrap_err();
    assert!(error.problem.contains("not an ELF file"), "{error}");
}

/// An ELF64 executable for x86_64 with one loadable segment.
fn elf_loaded_at(vaddr: u64, memory_size: u64) -> Vec<u8> {
    let mut bytes = elf(X86_64, &[]);
    bytes[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    bytes[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    bytes[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let mut header = [0u8; 56];
    header[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    header[16..24].copy_from_slice(&vaddr.to_le_bytes());
    header[40..48].copy_from_slice(&memory_size.to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes
}

#[test]
fn maps_over_a_programs_segments_are_refused() {
    let image = reference_image(Arch::X86_64);
    let kernel = elf(X86_64, b"k");
    assert_eq!(
        pack::load_segments(&elf_loaded_at(0x40_0123, 0x10)).unwrap(),
        [(0x40_0000, 0x40_1000)]
    );
    // Loaded where the server maps `shared` (0x1000_0000).
    let mut programs = programs(X86_64);
    programs.insert("server".to_string(), elf_loaded_at(0x0fff_f800, 0x1000));
    let error = pack::pack(&image, Arch::X86_64, &kernel, &programs).unwrap_err();
    assert_eq!(error.entry, "protection_domain \"server\" map 0");
    assert!(
        error
            .problem
            .contains("overlaps program `server` loaded at 0xffff000..0x10001000"),
        "{error}"
    );
    assert!(error.fix.contains("at or above 0x10001000"), "{error}");
    // Loaded where programs are linked today (0x40_0000): accepted.
    programs.insert("server".to_string(), elf_loaded_at(0x40_0000, 0x3000));
    assert!(pack::pack(&image, Arch::X86_64, &kernel, &programs).is_ok());
    // A program header table outside the file.
    let mut broken = elf_loaded_at(0x40_0000, 0x1000);
    broken.truncate(100);
    programs.insert("server".to_string(), broken);
    let error = pack::pack(&image, Arch::X86_64, &kernel, &programs).unwrap_err();
    assert!(error.problem.contains("outside the file"), "{error}");
}

/// Random damage to a packed archive never panics init's reader: it is
/// refused, or every entry it hands out lies inside the archive.
#[test]
fn damaged_archives_never_crash_the_reader() {
    let image = reference_image(Arch::X86_64);
    let bytes = pack::pack(
        &image,
        Arch::X86_64,
        &elf(X86_64, b"kernel"),
        &programs(X86_64),
    )
    .unwrap();
    // Header and table: where damage matters most.
    let interesting = archive::HEADER_SIZE + 5 * archive::ENTRY_SIZE;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut refused = 0;
    for _ in 0..5000 {
        let mut copy = bytes.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() as usize) % interesting;
            copy[at] = next() as u8;
        }
        let cut = if next() % 8 == 0 {
            (next() as usize) % copy.len()
        } else {
            copy.len()
        };
        match Archive::parse(&copy[..cut]) {
            Ok(parsed) => {
                for entry in parsed.entries() {
                    assert!(entry.offset + entry.size <= cut as u64);
                    assert_eq!(parsed.payload(&entry).len() as u64, entry.size);
                }
                let _ = parsed.description();
            }
            Err(_) => refused += 1,
        }
    }
    assert!(refused > 0);
}

#[test]
fn the_root_task_is_the_last_entry_and_is_checked() {
    let image = reference_image(Arch::X86_64);
    let kernel = elf(X86_64, b"kernel");
    let init = elf(X86_64, b"init");
    let bytes = pack::pack_with_root_task(
        &image,
        Arch::X86_64,
        &kernel,
        Some(&init),
        &programs(X86_64),
    )
    .unwrap();
    let archive = Archive::parse(&bytes).unwrap();
    let last = archive.entries().last().unwrap();
    assert_eq!(
        (last.kind, last.name),
        (EntryKind::RootTask, archive::ROOT_TASK_NAME)
    );
    assert_eq!(archive.root_task(), Some(init.as_slice()));
    let wrong = elf(AARCH64, b"init");
    let error = pack::pack_with_root_task(
        &image,
        Arch::X86_64,
        &kernel,
        Some(&wrong),
        &programs(X86_64),
    )
    .unwrap_err();
    assert!(error.to_string().contains("root task"), "{error}");
}

/// Found by `cargo xtask fuzz-host --target image_elf`: a program header
/// table whose offset is within 56 bytes of 2^64 made `load_segments`
/// overflow computing the header's end instead of refusing the file.
#[test]
fn a_program_header_table_at_the_top_of_the_address_space_is_refused() {
    let bytes = include_bytes!("fuzz/image_elf-program-headers-at-the-top.bin");
    assert_eq!(pack::check_elf(bytes, Arch::X86_64), Ok(()));
    assert_eq!(
        pack::load_segments(bytes),
        Err("the program header table lies outside the file".to_string())
    );
}
