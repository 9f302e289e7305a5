//! Shadow nesting equals hardware nesting: for adversarial first-stage
//! tables under a fixed second stage, the shadow second-stage table built by
//! `vtd::shadow::shadow_range`, used by a unit without nesting (QEMU's
//! legacy mode), translates every address exactly as a NEST=1 unit does.

use super::common::MIB;
use super::confinement::{GUEST_PAGES, Rng, fill_guest, perms_of, physical_page};
use crate::PhysMem;
use crate::model::vtd::Request;
use crate::model::vtd_device::{NESTING_ECAP, QEMU_CAP, SimVtd};
use crate::model::{Access, SimFrames, SimMemory};
use crate::pagetable::{PageSize, PageTable};
use crate::vtd::VtdUnit;
use crate::vtd::regs::{Capability, RootTableMode};
use crate::vtd::shadow::{ShadowError, shadow_range};
use crate::vtd::tables::{LegacyContext, PasidConfig, SecondStageFormat, SecondStageLevels};
use proptest::prelude::*;
use std::vec::Vec;

const WINDOW: u64 = 4 * MIB;

/// Builds both units over the same second stage and the shadow: one
/// shadow update of the window after each of `fills` (which write the
/// first-stage tables into guest memory); the last update's count of
/// entries mapped.
fn setup<'m>(
    memory: &'m SimMemory,
    fills: &[&dyn Fn(&SimMemory)],
    root_page: u64,
    allow_1g: bool,
) -> (SimVtd<'m>, SimVtd<'m>, u64) {
    let cap = if allow_1g {
        QEMU_CAP | 1 << 56
    } else {
        QEMU_CAP
    };
    let nested_unit = SimVtd::new(memory, cap, NESTING_ECAP, false);
    let shadow_unit = SimVtd::new(memory, cap, crate::model::vtd_device::QEMU_ECAP, true);
    let mut frames = SimFrames::new(memory, 16 * MIB, 48 * MIB);
    let format = SecondStageFormat::for_unit(Capability(QEMU_CAP));
    let second = PageTable::new(&mut frames, format, 4, 48).unwrap();
    for page in 0..GUEST_PAGES {
        second
            .map(
                memory,
                &mut frames,
                page << 12,
                physical_page(page),
                PageSize::Size4K,
                perms_of(page),
            )
            .unwrap();
    }
    let root_ipa = root_page << 12;

    let mut nested = VtdUnit::new(&nested_unit);
    nested
        .block_all_dma(memory, &mut frames, RootTableMode::Scalable)
        .unwrap();
    let config = PasidConfig::Nested {
        domain: 1,
        first_stage_table: root_ipa,
        second_stage_table: second.root(),
        levels: SecondStageLevels::Four,
    };
    nested
        .set_pasid_entry(memory, &mut frames, 0x10, 0, Some(config))
        .unwrap();

    let mut legacy = VtdUnit::new(&shadow_unit);
    legacy
        .block_all_dma(memory, &mut frames, RootTableMode::Legacy)
        .unwrap();
    let shadow = PageTable::new(&mut frames, format, 4, 48).unwrap();
    let mut mapped = 0;
    for fill in fills {
        fill(memory);
        let stats = shadow_range(
            memory,
            &mut frames,
            root_ipa,
            &second,
            &shadow,
            0,
            WINDOW,
            1024,
            allow_1g,
        )
        .unwrap();
        assert_eq!(stats.pages, 1024);
        mapped = stats.mapped;
    }
    let context = LegacyContext::Translated {
        domain: 2,
        table: shadow.root(),
        levels: SecondStageLevels::Four,
    };
    legacy
        .set_legacy_context(memory, &mut frames, 0x10, Some(context))
        .unwrap();
    (nested_unit, shadow_unit, mapped)
}

/// Every read and write DMA of requester 0x10 to `addresses`: the same
/// outcome on the nesting unit and the shadowed one.
fn same_translations(
    nested: &SimVtd<'_>,
    shadowed: &SimVtd<'_>,
    addresses: impl IntoIterator<Item = u64>,
) -> Result<(), TestCaseError> {
    for address in addresses {
        for access in [Access::Read, Access::Write] {
            let request = Request {
                source_id: 0x10,
                pasid: None,
                address,
                access,
            };
            prop_assert_eq!(
                nested.dma(request).ok(),
                shadowed.dma(request).ok(),
                "{:#x} {:?}",
                address,
                access
            );
        }
    }
    Ok(())
}

/// Adversarial first-stage tables from `seed` (`flags_bias` set in most
/// entries).
fn adversarial(seed: u64, flags_bias: u64) -> impl Fn(&SimMemory) {
    move |memory| fill_guest(memory, &mut Rng(seed), flags_bias)
}

/// Well-formed first-stage tables rooted at guest page [`ROOT_PAGE`]
/// whose walks reach a last-level table for both 2 MiB regions of the
/// window: random leaves (absent, supervisor-only, read-only or
/// writable, to any guest page or beyond) under upper levels whose write
/// permission is random too.
fn well_formed(seed: u64) -> impl Fn(&SimMemory) {
    move |memory| {
        let mut rng = Rng(seed);
        let table = |page: u64| physical_page(page);
        for page in [ROOT_PAGE, 1, 3, 4, 6] {
            memory.zero(table(page), 4096);
        }
        // Level 4 at page 0 (RW), 3 at page 1 (R), 2 at page 3 (RW),
        // last-level tables at 4 (R) and 6 (RW) in stage 2.
        memory.write_u64(table(ROOT_PAGE), 1 << 12 | 0b111);
        memory.write_u64(table(1), 3 << 12 | 0b111);
        for (index, leaf_table) in [(0, 4u64), (1, 6)] {
            let write = rng.next() & 0b10;
            memory.write_u64(table(3) + 8 * index, leaf_table << 12 | 0b101 | write);
            for slot in 0..512 {
                let r = rng.next();
                let page = ((r >> 8) % (2 * GUEST_PAGES)) << 12;
                let entry = match r % 8 {
                    0 => 0,
                    1 => page | 0b011,
                    _ => page | 0b101 | ((r >> 4) & 0b10),
                };
                memory.write_u64(table(leaf_table) + 8 * slot, entry);
            }
        }
    }
}

/// The guest page [`well_formed`] puts its root table in.
const ROOT_PAGE: u64 = 0;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn shadow_translates_like_hardware_nesting(
        seed in 1u64..,
        root_page in 0u64..(2 * GUEST_PAGES),
        allow_1g in any::<bool>(),
        twice in any::<bool>(),
        probes in proptest::collection::vec(0u64..WINDOW, 64),
    ) {
        let memory = SimMemory::new(256 * MIB);
        let first = adversarial(seed, 0b111);
        // Different tables over the shadow just built, some leaves
        // read-only: the update rewrites, adds and removes in place.
        let second = adversarial(seed ^ 0x5eed_5eed, 0b101);
        let fills: &[&dyn Fn(&SimMemory)] = if twice { &[&first, &second] } else { &[&first] };
        let (nested, shadowed, _) = setup(&memory, fills, root_page, allow_1g);
        same_translations(&nested, &shadowed, probes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Re-shadowing well-formed tables (the update's common case: both
    /// last-level tables present) after they changed: every page of the
    /// window translates as a nesting unit translates it.
    #[test]
    fn reshadowing_changed_tables_translates_like_hardware_nesting(
        seeds in proptest::collection::vec(1u64.., 2..4),
    ) {
        let memory = SimMemory::new(256 * MIB);
        let fills: Vec<_> = seeds.iter().map(|&seed| well_formed(seed)).collect();
        let fills: Vec<&dyn Fn(&SimMemory)> =
            fills.iter().map(|f| f as &dyn Fn(&SimMemory)).collect();
        let (nested, shadowed, mapped) = setup(&memory, &fills, ROOT_PAGE, false);
        prop_assert!(mapped > 0);
        same_translations(&nested, &shadowed, (0..WINDOW).step_by(4096))?;
    }
}

#[test]
fn shadow_is_not_vacuous_and_is_bounded() {
    let memory = SimMemory::new(256 * MIB);
    let mut mapped = 0;
    for seed in 1..60 {
        let (_, _, count) = setup(&memory, &[&adversarial(seed, 0b111)], 0, true);
        mapped += count;
    }
    assert!(mapped > 0);
    let mut frames = SimFrames::new(&memory, 48 * MIB, 64 * MIB);
    let format = SecondStageFormat::for_unit(Capability(QEMU_CAP));
    let second = PageTable::new(&mut frames, format, 4, 48).unwrap();
    let shadow = PageTable::new(&mut frames, format, 4, 48).unwrap();
    assert_eq!(
        shadow_range(
            &memory,
            &mut frames,
            0,
            &second,
            &shadow,
            0,
            2 * WINDOW,
            1024,
            false
        ),
        Err(ShadowError::BadRange)
    );
    assert_eq!(
        shadow_range(
            &memory,
            &mut frames,
            0,
            &second,
            &shadow,
            1 << 47,
            4096,
            1024,
            false
        ),
        Err(ShadowError::BadRange)
    );
}

/// Revoking a data frame from the second stage and removing the shadow
/// leaves that point into it keeps the shadow equal to nested hardware.
#[test]
fn revoking_a_data_frame_keeps_the_shadow_exact() {
    use crate::invalidation::{InvalidationBatch, InvalidationTarget};
    let memory = SimMemory::new(256 * MIB);
    let cap = QEMU_CAP;
    let nested_unit = SimVtd::new(&memory, cap, NESTING_ECAP, false);
    let shadow_unit = SimVtd::new(&memory, cap, crate::model::vtd_device::QEMU_ECAP, true);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 48 * MIB);
    let format = SecondStageFormat::for_unit(Capability(cap));
    let second = PageTable::new(&mut frames, format, 4, 48).unwrap();
    for page in 0..GUEST_PAGES {
        second
            .map(
                &memory,
                &mut frames,
                page << 12,
                physical_page(page),
                PageSize::Size4K,
                crate::pagetable::Perms::READ_WRITE,
            )
            .unwrap();
    }
    // A well-formed first stage in GPA pages 0..=3 (written at their
    // physical homes): IOVA page i -> GPA page 8 + i, read-write.
    let write = |gpa_page: u64, index: u64, value: u64| {
        crate::PhysMem::write_u64(&memory, physical_page(gpa_page) + 8 * index, value)
    };
    write(0, 0, 1 << 12 | 0b111);
    write(1, 0, 2 << 12 | 0b111);
    write(2, 0, 3 << 12 | 0b111);
    for i in 0..8u64 {
        write(3, i, (8 + i) << 12 | 0b111);
    }
    let mut nested = VtdUnit::new(&nested_unit);
    nested
        .block_all_dma(&memory, &mut frames, RootTableMode::Scalable)
        .unwrap();
    let config = PasidConfig::Nested {
        domain: 1,
        first_stage_table: 0,
        second_stage_table: second.root(),
        levels: SecondStageLevels::Four,
    };
    nested
        .set_pasid_entry(&memory, &mut frames, 0x10, 0, Some(config))
        .unwrap();
    let mut legacy = VtdUnit::new(&shadow_unit);
    legacy
        .block_all_dma(&memory, &mut frames, RootTableMode::Legacy)
        .unwrap();
    let shadow = PageTable::new(&mut frames, format, 4, 48).unwrap();
    let stats = shadow_range(
        &memory,
        &mut frames,
        0,
        &second,
        &shadow,
        0,
        8 << 12,
        8,
        false,
    )
    .unwrap();
    assert_eq!(stats.mapped, 8);
    let context = LegacyContext::Translated {
        domain: 2,
        table: shadow.root(),
        levels: SecondStageLevels::Four,
    };
    legacy
        .set_legacy_context(&memory, &mut frames, 0x10, Some(context))
        .unwrap();
    let same = |address: u64| {
        let request = Request {
            source_id: 0x10,
            pasid: None,
            address,
            access: Access::Write,
        };
        (nested_unit.dma(request).ok(), shadow_unit.dma(request).ok())
    };
    assert_eq!(
        same(0x2010),
        (
            Some(physical_page(10) + 0x10),
            Some(physical_page(10) + 0x10)
        )
    );
    // Revoke GPA page 10 from the second stage; remove its shadow leaves; flush both.
    let (revoked, _) = second.unmap(&memory, 10 << 12).unwrap();
    assert_eq!(shadow.remove_leaves_to(&memory, revoked, 4096), 1);
    let mut batch = InvalidationBatch::new();
    batch.add(
        InvalidationTarget::VtdDomain {
            domain: 1,
            nested: true,
        },
        10 << 12,
        4096,
    );
    nested.flush(&memory, &batch).unwrap();
    let mut batch = InvalidationBatch::new();
    batch.add(
        InvalidationTarget::VtdDomain {
            domain: 2,
            nested: false,
        },
        0x2000,
        4096,
    );
    legacy.flush(&memory, &batch).unwrap();
    for page in 0..8u64 {
        let (a, b) = same(page << 12);
        assert_eq!(a, b, "page {page}");
    }
    assert_eq!(same(0x2010), (None, None));
    // Clearing the whole shadow leaves nothing translatable.
    assert_eq!(shadow.remove_leaves_to(&memory, 0, u64::MAX), 7);
}
