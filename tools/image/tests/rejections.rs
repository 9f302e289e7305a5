//! Every kind of malformed image is rejected before anything is built, with
//! a message naming the file, the line, the entry, the problem and the fix.
//!
//! Each fixture in `tests/fixtures/` is one mistake; the tests check the
//! whole message, not only that validation failed. The fixtures live here,
//! not in `images/`, so that every image in `images/` stays bootable.

use std::path::{Path, PathBuf};

use sysimage::{ImageError, Platform, platform, validate};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn q35() -> Platform {
    platform::load(&root().join("../../images/platforms"), "q35").unwrap()
}

/// The programs the fixtures may name.
fn programs() -> Vec<String> {
    ["client", "edu", "server"].map(String::from).to_vec()
}

fn check(name: &str, on: &Platform) -> Result<validate::Image, ImageError> {
    let text = std::fs::read_to_string(root().join(format!("tests/fixtures/{name}.toml"))).unwrap();
    let file = PathBuf::from(format!("tests/fixtures/{name}.toml"));
    validate::validate(&file, name, &text, on, &programs())
}

/// Checks the rejection of fixture `name` on q35: the message is
/// `<file>:<line>:<column>: <entry>: <problem>; fix: <fix>` with the given
/// position, entry, and a problem and fix containing the given texts.
fn rejects(name: &str, line: usize, entry: &str, problem: &str, fix: &str) -> ImageError {
    let error = match check(name, &q35()) {
        Ok(_) => panic!("{name} was accepted"),
        Err(error) => error,
    };
    let message = error.to_string();
    assert_eq!(
        error.file,
        PathBuf::from(format!("tests/fixtures/{name}.toml")),
        "{message}"
    );
    assert_eq!(
        error.position.map(|(line, _)| line),
        Some(line),
        "{message}"
    );
    assert_eq!(error.entry, entry, "{message}");
    assert!(
        error.problem.contains(problem),
        "problem of {name}: {message}"
    );
    assert!(error.fix.contains(fix), "fix of {name}: {message}");
    assert!(
        message.starts_with(&format!("tests/fixtures/{name}.toml:{line}:")),
        "{message}"
    );
    error
}

#[test]
fn the_reference_image_is_accepted() {
    let image = check("valid", &q35()).unwrap_or_else(|error| panic!("{error}"));
    let system = &image.system;
    assert_eq!(system.domains.len(), 3);
    assert_eq!(system.regions.len(), 3);
    assert_eq!(system.maps.len(), 4);
    assert_eq!(system.channels.len(), 2);
    // Default badge: 1 << the end's own id; explicit badges are kept.
    assert_eq!(system.channels[0].ends[1].badge, 1);
    assert_eq!(system.channels[1].ends[0].badge, 1 << 1);
    assert_eq!(system.channels[1].ends[1].badge, 0x80);
    assert_eq!(system.channels[0].kind, sysdesc::ChannelKind::Endpoint);
    assert_eq!(system.channels[1].kind, sysdesc::ChannelKind::Notification);
    assert_eq!(system.irqs.len(), 1);
    let grant = &system.dma_grants[0];
    assert_eq!(grant.device, sysdesc::PciAddress::parse("00:04.0").unwrap());
    assert_eq!(grant.iospace_size, 4 << 20);
    assert_eq!(grant.mode, sysdesc::IoMode::Nested);
    assert!(grant.fault_queue);
    assert_eq!(system.io_maps.len(), 2);
    assert_eq!(system.domains[1].priority, validate::DEFAULT_PRIORITY);
    assert_eq!(system.domains[1].stack_size, validate::DEFAULT_STACK_SIZE);
    assert_eq!(system.domains[0].untyped_size, 0);
    assert_eq!(system.domains[1].untyped_size, 64 << 10);
    assert_eq!(system.regions[1].page_size, sysdesc::PageSize::Large);
    assert_eq!(image.programs, ["client", "edu", "server"]);
}

#[test]
fn toml_syntax_errors_give_toml_line_and_column() {
    let error = rejects(
        "syntax_error",
        2,
        "",
        "unclosed array table",
        "correct the TOML",
    );
    assert_eq!(error.position, Some((2, 21)));
}

#[test]
fn unknown_keys_are_rejected_at_their_line() {
    let error = rejects(
        "unknown_key",
        7,
        "",
        "unknown field `colour`",
        "images/README.md",
    );
    assert!(
        error.problem.contains("`program`"),
        "lists the keys: {error}"
    );
}

#[test]
fn unknown_keys_inside_inline_tables_are_rejected() {
    let error = rejects(
        "unknown_key_in_io_map",
        16,
        "",
        "unknown field `cached`",
        "images/README.md",
    );
    assert_eq!(error.position, Some((16, 52)));
}

#[test]
fn malformed_sizes_are_rejected() {
    rejects(
        "bad_size",
        5,
        "",
        "`4 KB` is not a size",
        "images/README.md",
    );
}

#[test]
fn unknown_modes_are_rejected() {
    rejects(
        "bad_mode",
        11,
        "",
        "unknown variant `stage1`, expected `stage2` or `nested`",
        "",
    );
}

#[test]
fn overlapping_maps_in_one_address_space_are_rejected() {
    rejects(
        "overlapping_maps",
        20,
        "protection_domain \"driver\" map 1",
        "`regs` at 0x10001000..0x10002000 overlaps `buf` at 0x10000000..0x10002000",
        "0x10002000 is free after `buf`",
    );
}

#[test]
fn overlapping_io_maps_in_one_iospace_are_rejected() {
    rejects(
        "overlapping_io_maps",
        15,
        "dma_grant \"00:04.0\" io_map 1",
        "overlaps `buf` at 0x10000..0x12000 in the same IoSpace",
        "0x12000 is free after `buf`",
    );
}

#[test]
fn unknown_programs_are_rejected() {
    rejects(
        "unknown_program",
        3,
        "protection_domain \"driver\"",
        "unknown program `edu_drvier`",
        "client, edu, server",
    );
}

#[test]
fn unknown_devices_are_rejected() {
    rejects(
        "unknown_device",
        7,
        "dma_grant \"00:09.0\"",
        "the q35 platform has no device at 00:09.0",
        "00:04.0 (edu)",
    );
}

#[test]
fn malformed_pci_addresses_are_rejected() {
    rejects(
        "bad_pci_address",
        7,
        "dma_grant \"0:4\"",
        "`0:4` is not a PCI address",
        "\"00:04.0\"",
    );
}

#[test]
fn msi_without_on_request_is_rejected() {
    rejects(
        "msi_without_on_request",
        7,
        "dma_grant \"00:04.0\"",
        "msi = true for device 00:04.0 without on_request",
        "set on_request = true",
    );
}

#[test]
fn a_device_granted_to_two_domains_is_rejected() {
    rejects(
        "device_granted_twice",
        17,
        "dma_grant \"00:04.0\"",
        "device 00:04.0 is already granted to `driver`",
        "grant each device to one domain",
    );
}

#[test]
fn an_iospace_too_small_for_its_mappings_is_rejected() {
    rejects(
        "iospace_too_small",
        12,
        "dma_grant \"00:04.0\" io_map 0",
        "`big` at ipa 0x200000..0x400000 does not fit the 2 MiB IoSpace",
        "raise iospace_size to at least 4 MiB",
    );
}

#[test]
fn pasids_on_a_platform_without_pasids_are_rejected() {
    rejects(
        "pasids_without_support",
        7,
        "dma_grant \"00:04.0\"",
        "pasids [1, 2] but the q35 platform delivers no PASID-tagged DMA",
        "remove pasids",
    );
}

#[test]
fn pasids_pass_where_the_platform_has_them() {
    let with_pasids = platform::load(&root().join("tests/fixtures/platforms"), "pasid").unwrap();
    let image = check("pasids_without_support", &with_pasids).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(image.system.dma_grants[0].pasids.as_slice(), [1, 2]);
}

#[test]
fn pasid_zero_and_duplicates_are_rejected() {
    let with_pasids = platform::load(&root().join("tests/fixtures/platforms"), "pasid").unwrap();
    let base =
        std::fs::read_to_string(root().join("tests/fixtures/pasids_without_support.toml")).unwrap();
    for (pasids, problem) in [
        ("[0, 1]", "PASID 0 is outside 1..1048576"),
        ("[1048576]", "PASID 1048576 is outside"),
        ("[3, 3]", "PASID 3 is listed twice"),
        (
            "[1, 2, 3, 4, 5, 6, 7, 8, 9]",
            "9 PASIDs, init holds at most 8",
        ),
    ] {
        let text = base.replace("[1, 2]", pasids);
        let error = validate::validate(Path::new("x.toml"), "x", &text, &with_pasids, &programs())
            .unwrap_err();
        assert!(error.problem.contains(problem), "{pasids}: {error}");
        assert_eq!(error.entry, "dma_grant \"00:04.0\"");
    }
}

#[test]
fn duplicate_domain_names_are_rejected() {
    rejects(
        "duplicate_domain",
        7,
        "protection_domain \"driver\"",
        "already exists",
        "its own name",
    );
}

#[test]
fn unknown_regions_are_rejected() {
    rejects(
        "unknown_region",
        7,
        "protection_domain \"driver\" map 0",
        "unknown memory_region `bfu`",
        "[[memory_region]]",
    );
}

#[test]
fn channels_to_unknown_domains_are_rejected() {
    rejects(
        "unknown_domain_in_channel",
        7,
        "channel 0",
        "unknown protection_domain `srever`",
        "use one of: driver",
    );
}

#[test]
fn a_channel_id_used_twice_in_a_domain_is_rejected() {
    rejects(
        "channel_id_reused",
        14,
        "irq 11",
        "id 0 in `driver` is already used by channel 0",
        "e.g. 1",
    );
}

#[test]
fn a_channel_from_a_domain_to_itself_is_rejected() {
    rejects(
        "channel_to_itself",
        7,
        "channel 0",
        "both ends are in `driver`",
        "two different",
    );
}

#[test]
fn an_irq_given_twice_is_rejected() {
    rejects(
        "irq_given_twice",
        16,
        "irq 11",
        "interrupt 11 is already given to `driver`",
        "one domain",
    );
}

#[test]
fn an_irq_outside_the_platform_is_rejected() {
    rejects(
        "irq_out_of_range",
        7,
        "irq 40",
        "interrupts 0..=23 only",
        "from 0 to 23",
    );
}

#[test]
fn level_triggered_lines_are_rejected() {
    rejects(
        "level_trigger",
        7,
        "irq 5",
        "edge-triggered only",
        "trigger = \"edge\"",
    );
}

#[test]
fn misaligned_addresses_are_rejected() {
    rejects(
        "misaligned_vaddr",
        12,
        "protection_domain \"driver\" map 0",
        "vaddr 0x10001000 is not aligned to the region's 2 MiB pages",
        "e.g. 0x10200000",
    );
}

#[test]
fn regions_of_partial_pages_are_rejected() {
    rejects(
        "region_not_whole_pages",
        3,
        "memory_region \"buf\"",
        "size 5000 B is not a whole number of 4 KiB pages",
        "round size up to 8 KiB",
    );
}

#[test]
fn untyped_sizes_that_are_no_power_of_two_are_rejected() {
    rejects(
        "untyped_not_power_of_two",
        3,
        "protection_domain \"builder\"",
        "untyped 48 KiB is not a power of two from 4 KiB to 64 MiB",
        "use untyped = \"64 KiB\"",
    );
}

#[test]
fn untyped_sizes_outside_what_init_gives_are_rejected() {
    for (size, fix) in [("\"2 KiB\"", "\"4 KiB\""), ("\"128 MiB\"", "\"64 MiB\"")] {
        let text = format!(
            "description = \"x\"\n\n[[protection_domain]]\nname = \"d\"\nprogram = \"edu\"\nuntyped = {size}\n"
        );
        let error =
            validate::validate(Path::new("x.toml"), "x", &text, &q35(), &programs()).unwrap_err();
        assert_eq!(error.entry, "protection_domain \"d\"", "{error}");
        assert!(
            error
                .problem
                .contains("is not a power of two from 4 KiB to 64 MiB"),
            "{error}"
        );
        assert!(error.fix.contains(fix), "{size}: {error}");
    }
}

#[test]
fn devices_cannot_be_given_execute_rights() {
    rejects(
        "execute_for_device",
        11,
        "dma_grant \"00:04.0\" io_map 0",
        "perms = \"rx\"",
        "r, rw",
    );
}

#[test]
fn maps_over_the_ipc_buffer_are_rejected() {
    rejects(
        "ipc_buffer_overlap",
        11,
        "protection_domain \"driver\" map 0",
        "covers the IPC buffer page 0x7ffffff000",
        "elsewhere",
    );
}

#[test]
fn maps_over_inits_part_of_the_address_space_are_rejected() {
    rejects(
        "init_reserved_overlap",
        11,
        "protection_domain \"driver\" map 0",
        "where init puts the domain's capability table",
        "below 0x7f80000000",
    );
}

#[test]
fn an_image_for_another_platform_is_rejected() {
    rejects(
        "wrong_platform",
        2,
        "platforms",
        "supports virt but the q35 platform was chosen",
        "--arch",
    );
}

#[test]
fn priorities_above_254_are_rejected() {
    rejects(
        "priority_too_high",
        3,
        "protection_domain \"driver\"",
        "priority 255 is above 254",
        "0 to 254",
    );
}

#[test]
fn more_domains_than_init_holds_are_rejected() {
    let mut text = String::from("description = \"x\"\n");
    for index in 0..=sysdesc::MAX_DOMAINS {
        text.push_str(&format!(
            "\n[[protection_domain]]\nname = \"d{index}\"\nprogram = \"edu\"\n"
        ));
    }
    let error =
        validate::validate(Path::new("x.toml"), "x", &text, &q35(), &programs()).unwrap_err();
    assert_eq!(error.entry, "protection_domain");
    assert!(
        error
            .problem
            .contains("17 entries, but init holds at most 16"),
        "{error}"
    );
    // The position is the first domain too many: the 17th header.
    let line = 2 + 4 * sysdesc::MAX_DOMAINS + 1;
    assert_eq!(error.position, Some((line, 1)), "{error}");
}

#[test]
fn names_longer_than_init_holds_are_rejected() {
    let text = "description = \"x\"\n[[memory_region]]\nname = \"a_name_that_is_far_too_long_for_init\"\nsize = 4096\n";
    let error =
        validate::validate(Path::new("x.toml"), "x", text, &q35(), &programs()).unwrap_err();
    assert!(error.problem.contains("names have at most 32"), "{error}");
}

/// Damaged versions of the reference image (each line dropped, each number
/// replaced by extreme values) never panic the validator, and every
/// rejection names the file and says what to fix.
#[test]
fn damaged_images_are_rejected_or_accepted_but_never_crash() {
    let text = std::fs::read_to_string(root().join("tests/fixtures/valid.toml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut variants = Vec::new();
    for skip in 0..lines.len() {
        let kept: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, l)| *l)
            .collect();
        variants.push(kept.join("\n"));
    }
    for (index, line) in lines.iter().enumerate() {
        for replacement in [
            "0",
            "0xffff_ffff_ffff_f000",
            "63",
            "64",
            "255",
            "-1",
            "\"\"",
        ] {
            let Some(equals) = line.find(" = ") else {
                continue;
            };
            let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            changed[index] = format!("{} = {replacement}", &line[..equals]);
            variants.push(changed.join("\n"));
        }
    }
    let mut rejected = 0;
    for variant in &variants {
        if let Err(error) =
            validate::validate(Path::new("v.toml"), "v", variant, &q35(), &programs())
        {
            rejected += 1;
            assert_eq!(error.file, Path::new("v.toml"));
            assert!(
                !error.problem.is_empty() && !error.fix.is_empty(),
                "{error}"
            );
        }
    }
    assert!(
        rejected > variants.len() / 2,
        "{rejected} of {}",
        variants.len()
    );
}

#[test]
fn unknown_injected_failures_are_rejected() {
    rejects(
        "bad_inject",
        7,
        "",
        "unknown variant `crash-at-boot`, expected one of `crash-mid-io`, `rogue-dma`, `crash-every-run`",
        "",
    );
}

#[test]
fn restarts_above_the_bound_are_rejected() {
    rejects(
        "too_many_restarts",
        3,
        "protection_domain \"driver\"",
        "restarts = 9 is above the 8 init allows",
        "restarts = 0..=8",
    );
}

#[test]
fn restarted_domains_must_ask_for_their_devices() {
    rejects(
        "restart_with_boot_grant",
        8,
        "dma_grant \"00:04.0\"",
        "a restarted driver asks init for its devices again",
        "on_request = true",
    );
}
