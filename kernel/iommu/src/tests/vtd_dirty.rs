//! VT-d dirty tracking, driver page-table code against the model:
//! first-stage A/D (as QEMU 10.0.2 emulates them, with its read-cached
//! write quirk), second-stage A/D under the PASID entry's SSADE (per the
//! specification; QEMU has no ECAP.SLADS). Writes mark exactly the written
//! pages; read-only access marks nothing; clear + invalidate makes a later
//! write mark again, and clear without the invalidation can lose it.

use super::common::MIB;
use super::vtd_page_requests::SPEC_ECAP;
use crate::model::vtd::Request;
use crate::model::vtd_device::{QEMU_CAP, QEMU_FLTS_ECAP, SimVtd};
use crate::model::{Access, SimFrames, SimMemory};
use crate::pagetable::{PageSize, PageTable, PageTableFormat, Perms};
use crate::vtd::qi::{Descriptor, PasidIotlbScope};
use crate::vtd::regs::{Capability, RootTableMode};
use crate::vtd::tables::{FirstStageFormat, PasidConfig, SecondStageFormat, SecondStageLevels};
use crate::vtd::{VtdError, VtdUnit};

const EDU: u16 = 0x0010;
const PAGES: u64 = 16;
const DOMAIN: u16 = 7;

fn dma(device: &SimVtd, page: u64, access: Access) -> Result<u64, u8> {
    device.dma(Request {
        source_id: EDU,
        pasid: None,
        address: page * 4096 + 8,
        access,
    })
}

/// The dirty pages of `0..PAGES` (optionally cleaning them).
fn dirty_pages<F: PageTableFormat>(
    table: &PageTable<F>,
    memory: &SimMemory,
    clear: bool,
) -> std::vec::Vec<u64> {
    let mut pages = std::vec::Vec::new();
    table
        .read_dirty(memory, 0, PAGES * 4096, clear, |input, bits| {
            assert_eq!(bits, 12);
            pages.push(input / 4096);
        })
        .unwrap();
    pages
}

fn invalidate(unit: &mut VtdUnit<&SimVtd>, memory: &SimMemory) {
    unit.submit(
        memory,
        [Descriptor::pasid_iotlb(PasidIotlbScope::Pasid {
            domain: DOMAIN,
            pasid: 0,
        })],
    )
    .unwrap();
}

/// A unit with `ecap`, RID_PASID 0 of EDU on `config(table)`, pages
/// `0..PAGES` mapped read-write (the last one read-only) at 64 MiB.
fn setup<'m, F: PageTableFormat + Copy>(
    memory: &'m SimMemory,
    device: &'m SimVtd<'m>,
    format: F,
    height: u32,
    input_bits: u32,
    config: impl Fn(u64) -> PasidConfig,
) -> (VtdUnit<&'m SimVtd<'m>>, PageTable<F>) {
    let mut frames = SimFrames::new(memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(device);
    unit.block_all_dma(memory, &mut frames, RootTableMode::Scalable)
        .unwrap();
    let table = PageTable::new(&mut frames, format, height, input_bits).unwrap();
    for page in 0..PAGES {
        let perms = if page == PAGES - 1 {
            Perms::READ
        } else {
            Perms::READ_WRITE
        };
        table
            .map(
                memory,
                &mut frames,
                page * 4096,
                64 * MIB + page * 4096,
                PageSize::Size4K,
                perms,
            )
            .unwrap();
    }
    unit.set_pasid_entry(memory, &mut frames, EDU, 0, Some(config(table.root())))
        .unwrap();
    (unit, table)
}

fn first_stage_case(qemu: bool) {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, QEMU_FLTS_ECAP, qemu);
    let (mut unit, table) = setup(
        &memory,
        &device,
        FirstStageFormat::for_unit(Capability(QEMU_CAP)),
        4,
        48,
        |root| PasidConfig::FirstStage {
            domain: DOMAIN,
            table: root,
        },
    );
    // Leaves are written with D set: tracking starts with a clearing pass
    // and an invalidation.
    assert_eq!(dirty_pages(&table, &memory, true).len(), PAGES as usize - 1);
    invalidate(&mut unit, &memory);
    assert!(dirty_pages(&table, &memory, false).is_empty());
    for page in [1, 3, 5] {
        dma(&device, page, Access::Write).unwrap();
    }
    for page in [2, 4, PAGES - 1] {
        dma(&device, page, Access::Read).unwrap();
    }
    assert_eq!(dirty_pages(&table, &memory, true), [1, 3, 5]);
    assert!(dirty_pages(&table, &memory, false).is_empty());
    // After the invalidation a later write marks again.
    invalidate(&mut unit, &memory);
    dma(&device, 3, Access::Write).unwrap();
    assert_eq!(dirty_pages(&table, &memory, false), [3]);
    // A page first read (cached writable), then written: the
    // specification walks again and sets D; QEMU 10.0.2 reuses the cached
    // entry and skips D, and even after an invalidation its walk leaves D
    // clear in a leaf whose A the read set (`vtd_set_flag_in_pte` writes
    // nothing when any of A, D is set).
    dma(&device, 8, Access::Read).unwrap();
    dma(&device, 8, Access::Write).unwrap();
    let expected: &[u64] = if qemu { &[3] } else { &[3, 8] };
    assert_eq!(dirty_pages(&table, &memory, false), expected);
    invalidate(&mut unit, &memory);
    dma(&device, 8, Access::Write).unwrap();
    assert_eq!(dirty_pages(&table, &memory, false), expected);
    // A clear resets A too (`FirstStageFormat::needs_clean`): after it and
    // the invalidation, the write is seen on both.
    assert_eq!(dirty_pages(&table, &memory, true), expected);
    invalidate(&mut unit, &memory);
    dma(&device, 8, Access::Write).unwrap();
    assert_eq!(dirty_pages(&table, &memory, false), [8]);
}

#[test]
fn first_stage_dirty_bits_per_specification() {
    first_stage_case(false);
}

#[test]
fn first_stage_dirty_bits_as_qemu_with_its_read_cached_write_quirk() {
    first_stage_case(true);
}

fn second_stage_setup<'m>(
    memory: &'m SimMemory,
    device: &'m SimVtd<'m>,
) -> (VtdUnit<&'m SimVtd<'m>>, PageTable<SecondStageFormat>) {
    let levels = SecondStageLevels::best(Capability(QEMU_CAP)).unwrap();
    setup(
        memory,
        device,
        SecondStageFormat::for_unit(Capability(QEMU_CAP)),
        levels.height(),
        levels.input_bits(),
        |root| PasidConfig::SecondStage {
            domain: DOMAIN,
            table: root,
            levels,
        },
    )
}

#[test]
fn second_stage_dirty_tracking_with_ssade() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, SPEC_ECAP, false);
    let (mut unit, table) = second_stage_setup(&memory, &device);
    // Off: the walk writes nothing.
    dma(&device, 1, Access::Write).unwrap();
    assert!(dirty_pages(&table, &memory, false).is_empty());
    unit.set_dirty_tracking(&memory, EDU, 0, true).unwrap();
    for page in [1, 2, 9] {
        dma(&device, page, Access::Write).unwrap();
    }
    for page in [4, 5, PAGES - 1] {
        dma(&device, page, Access::Read).unwrap();
    }
    // Reads set A (bit 8) but never D: only the written pages are dirty.
    assert_eq!(dirty_pages(&table, &memory, true), [1, 2, 9]);
    // Clear without invalidation: the write hits the cached (dirty) entry
    // and is lost to tracking; with the invalidation it is seen.
    dma(&device, 2, Access::Write).unwrap();
    assert!(dirty_pages(&table, &memory, false).is_empty());
    invalidate(&mut unit, &memory);
    dma(&device, 2, Access::Write).unwrap();
    assert_eq!(dirty_pages(&table, &memory, false), [2]);
    // Off again: no further updates.
    unit.set_dirty_tracking(&memory, EDU, 0, false).unwrap();
    dirty_pages(&table, &memory, true);
    dma(&device, 6, Access::Write).unwrap();
    assert!(dirty_pages(&table, &memory, false).is_empty());
}

#[test]
fn second_stage_tracking_needs_slads() {
    let memory = SimMemory::new(256 * MIB);
    // QEMU-like scalable second stage without SLADS (and without PRS).
    let ecap = SPEC_ECAP & !(1 << 45);
    let device = SimVtd::new(&memory, QEMU_CAP, ecap, false);
    let (mut unit, _) = second_stage_setup(&memory, &device);
    assert!(matches!(
        unit.set_dirty_tracking(&memory, EDU, 0, true),
        Err(VtdError::Unsupported { .. })
    ));
    // First-stage entries cannot carry SSADE at all.
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, SPEC_ECAP, false);
    let (mut unit, _) = setup(
        &memory,
        &device,
        FirstStageFormat::for_unit(Capability(QEMU_CAP)),
        4,
        48,
        |root| PasidConfig::FirstStage {
            domain: DOMAIN,
            table: root,
        },
    );
    assert!(matches!(
        unit.set_dirty_tracking(&memory, EDU, 0, true),
        Err(VtdError::InvalidParameter { .. })
    ));
}

#[test]
fn nested_second_stage_dirty_tracking_reports_the_guest_physical_pages_written() {
    use super::vtd_translate::{GUEST_SIZE, build_nested_vtd};
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, SPEC_ECAP, false);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut frames, RootTableMode::Scalable)
        .unwrap();
    let nested = build_nested_vtd(&memory, &mut frames);
    let config = PasidConfig::Nested {
        domain: DOMAIN,
        first_stage_table: nested.first_root_gpa,
        second_stage_table: nested.second.root(),
        levels: SecondStageLevels::Four,
    };
    unit.set_pasid_entry(&memory, &mut frames, EDU, 0, Some(config))
        .unwrap();
    unit.set_dirty_tracking(&memory, EDU, 0, true).unwrap();
    let request = |address, access| Request {
        source_id: EDU,
        pasid: None,
        address,
        access,
    };
    // IOVA 0x1000_0000 -> GPA 0x20_0000 (written), 0x1000_1000 -> GPA
    // 0x20_1000 (read). The walk also reads the first-stage tables through
    // the second stage: those GPA pages get A, never D.
    device.dma(request(0x1000_0010, Access::Write)).unwrap();
    device.dma(request(0x1000_1010, Access::Read)).unwrap();
    let mut dirty = std::vec::Vec::new();
    nested
        .second
        .read_dirty(&memory, 0, GUEST_SIZE, true, |gpa, _| dirty.push(gpa))
        .unwrap();
    assert_eq!(dirty, [0x20_0000]);
}
