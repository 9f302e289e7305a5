//! Bit-level checks of both entry formats against values worked out by hand
//! from the specifications, and of the raw table words a map leaves in
//! memory (every pointer an IPA).

mod common;

use common::{WINDOW_BASE, frames, table};
use iopt::{ENTRIES_PER_TABLE, Entry, Format, PAGE_SIZE, Rights, TableFrame};

// ---- VT-d first stage (VT-d spec 9.7; x86-64 4-level paging layout) ----

#[test]
fn vtd_page_read_write_is_p_rw_us_a_d_plus_address() {
    // P(0) + R/W(1) + U/S(2) + A(5) + D(6) = 0x67; XD (bit 63) stays 0.
    assert_eq!(
        Format::VtdFirstStage.page_entry(0x123_4000, Rights::READ_WRITE),
        0x0000_0000_0123_4067
    );
}

#[test]
fn vtd_page_read_only_has_no_rw_and_no_dirty() {
    // P + U/S + A = 0x25.
    assert_eq!(
        Format::VtdFirstStage.page_entry(0x123_4000, Rights::READ),
        0x0000_0000_0123_4025
    );
}

#[test]
fn vtd_table_entry_is_p_rw_us_a_without_xd_or_ps() {
    assert_eq!(Format::VtdFirstStage.table_entry(0xabc_d000), 0xabc_d027);
}

#[test]
fn vtd_address_field_reaches_bit_47() {
    let ipa = 0x0000_ffff_ffff_f000;
    let entry = Format::VtdFirstStage.page_entry(ipa, Rights::READ);
    assert_eq!(entry & 0x000f_ffff_ffff_f000, ipa);
}

#[test]
fn vtd_decode_round_trips_and_tolerates_hardware_accessed_dirty() {
    let format = Format::VtdFirstStage;
    assert_eq!(
        format.decode(0, format.table_entry(0x5000)),
        Entry::Table { ipa: 0x5000 }
    );
    assert_eq!(
        format.decode(3, format.page_entry(0x7000, Rights::READ)),
        Entry::Page {
            ipa: 0x7000,
            rights: Rights::READ
        }
    );
    // A table entry without A, a read-only page with D set by hardware.
    assert_eq!(format.decode(1, 0x5007), Entry::Table { ipa: 0x5000 });
    assert_eq!(
        format.decode(3, 0x7065),
        Entry::Page {
            ipa: 0x7000,
            rights: Rights::READ
        }
    );
}

#[test]
fn vtd_decode_rejects_large_pages_missing_user_and_bad_levels() {
    let format = Format::VtdFirstStage;
    assert_eq!(format.decode(2, 0x20_0000 | 0x87), Entry::Unexpected); // PS: 2 MiB page
    assert_eq!(format.decode(0, 0x5000 | 0x83), Entry::Unexpected); // PS reserved at level 0
    assert_eq!(format.decode(3, 0x7000 | 0x3), Entry::Unexpected); // U/S clear
    assert_eq!(format.decode(4, 0x7027), Entry::Unexpected);
    assert_eq!(format.decode(3, 0x7026), Entry::Absent); // P clear
}

// ---- Arm VMSAv8-64 stage 1, 4 KiB granule ----

#[test]
fn arm_page_read_only_has_af_ap2_type_11_and_attr_index_0() {
    let entry = Format::ArmStage1.page_entry(0x4000_1000, Rights::READ);
    // 0b11 page | AP[1] 0x40 | AP[2] 0x80 | SH=11 0x300 | AF 0x400 | nG 0x800
    // | PXN (53) | UXN (54).
    assert_eq!(entry, 0x0060_0000_4000_1fc3);
    assert_eq!(entry & 0b11, 0b11, "descriptor type: page");
    assert_ne!(entry & (1 << 10), 0, "AF");
    assert_eq!((entry >> 6) & 0b11, 0b11, "AP[2:1] = read-only, EL0 too");
    assert_eq!((entry >> 2) & 0b111, 0, "AttrIndx 0 = Normal Write-Back");
    assert_eq!((entry >> 8) & 0b11, 0b11, "Inner Shareable");
}

#[test]
fn arm_page_read_write_clears_ap2_only() {
    let read_only = Format::ArmStage1.page_entry(0x4000_1000, Rights::READ);
    let read_write = Format::ArmStage1.page_entry(0x4000_1000, Rights::READ_WRITE);
    assert_eq!(read_write, 0x0060_0000_4000_1f43);
    assert_eq!(read_only ^ read_write, 1 << 7);
}

#[test]
fn arm_table_descriptor_is_type_11_and_address_only() {
    assert_eq!(Format::ArmStage1.table_entry(0x4000_2000), 0x4000_2003);
}

#[test]
fn arm_decode_round_trips_and_rejects_blocks_and_missing_af() {
    let format = Format::ArmStage1;
    assert_eq!(
        format.decode(2, format.table_entry(0x4000_2000)),
        Entry::Table { ipa: 0x4000_2000 }
    );
    assert_eq!(
        format.decode(3, format.page_entry(0x4000_1000, Rights::READ_WRITE)),
        Entry::Page {
            ipa: 0x4000_1000,
            rights: Rights::READ_WRITE
        }
    );
    assert_eq!(format.decode(1, 0x4000_0000 | 0x401), Entry::Unexpected); // block
    assert_eq!(format.decode(3, 0x4000_1000 | 0x401), Entry::Unexpected); // reserved at L3
    assert_eq!(format.decode(3, 0x4000_1000 | 0x3), Entry::Unexpected); // AF = 0
    assert_eq!(format.decode(3, 0x4000_1000 | 0x402), Entry::Absent); // invalid
}

#[test]
fn input_sizes_are_47_bits_for_vtd_and_48_for_arm() {
    assert_eq!(Format::VtdFirstStage.iova_bits(), 47);
    assert_eq!(Format::ArmStage1.iova_bits(), 48);
}

// ---- raw words left in memory ----

/// Follows one walk through the raw frames, reading each next table at the
/// IPA found in the entry, and returns the level-3 entry.
fn raw_walk(format: Format, frames: &[[u64; ENTRIES_PER_TABLE]], root_ipa: u64, iova: u64) -> u64 {
    let mut table_ipa = root_ipa;
    for level in 0..4 {
        let slot = ((iova >> (39 - 9 * level)) & 511) as usize;
        let frame_index = ((table_ipa - WINDOW_BASE) / PAGE_SIZE) as usize;
        let entry = frames[frame_index][slot];
        if level == 3 {
            return entry;
        }
        match format.decode(level, entry) {
            Entry::Table { ipa } => {
                assert!(
                    ipa >= WINDOW_BASE,
                    "pointer {ipa:#x} is an IPA in the window"
                );
                table_ipa = ipa;
            }
            other => panic!("level {level}: expected a table entry, found {other:?}"),
        }
    }
    unreachable!()
}

#[test]
fn map_links_four_levels_by_ipa_and_writes_the_spec_leaf() {
    for format in [Format::VtdFirstStage, Format::ArmStage1] {
        let mut storage = frames(8);
        let iova = (1 << 39) | (2 << 30) | (3 << 21) | (4 << 12);
        let root = {
            let mut table = table(format, &mut storage);
            table
                .map(iova, 0x4000_1000, PAGE_SIZE, Rights::READ)
                .unwrap();
            table.root()
        };
        assert_eq!(root, TableFrame::new(WINDOW_BASE).unwrap());
        let leaf = raw_walk(format, &storage, root.ipa(), iova);
        assert_eq!(leaf, format.page_entry(0x4000_1000, Rights::READ));
        // Root, three new tables; nothing else written.
        let used = storage.iter().filter(|f| f.iter().any(|w| *w != 0)).count();
        assert_eq!(used, 4, "{format:?}");
    }
}
