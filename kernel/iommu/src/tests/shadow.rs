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
use crate::pagetable::{PageSize, PageTable, Perms};
use crate::vtd::VtdUnit;
use crate::vtd::regs::{Capability, RootTableMode};
use crate::vtd::shadow::{Dependencies, ShadowError, shadow_range, shadow_range_recording};
use crate::vtd::tables::{LegacyContext, PasidConfig, SecondStageFormat, SecondStageLevels};
use proptest::prelude::*;
use std::boxed::Box;
use std::vec::Vec;

const WINDOW: u64 = 4 * MIB;

/// Both units over the same second stage, and the shadow with what it
/// depends on.
struct Shadowed<'m> {
    nested: SimVtd<'m>,
    shadowed: SimVtd<'m>,
    /// The last update's count of entries mapped.
    mapped: u64,
    second: PageTable<SecondStageFormat>,
    shadow: PageTable<SecondStageFormat>,
    dependencies: Dependencies,
    root_ipa: u64,
}

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
    let s = setup_recording(memory, fills, root_page, allow_1g, None);
    (s.nested, s.shadowed, s.mapped)
}

/// [`setup`], keeping the tables and the shadow's dependencies; with
/// `large`, the second stage maps the guest's first 2 MiB with one leaf
/// (of those rights) to the 2 MiB at 64 MiB (the guest pages' home, in
/// another order: every page still holds what the fills wrote).
fn setup_recording<'m>(
    memory: &'m SimMemory,
    fills: &[&dyn Fn(&SimMemory)],
    root_page: u64,
    allow_1g: bool,
    large: Option<Perms>,
) -> Shadowed<'m> {
    setup_with(memory, fills, root_page, allow_1g, (large, None))
}

/// The IPA of the 2 MiB region [`setup_with`] may map besides the
/// guest's, with one stage-2 leaf (to the 2 MiB at 128 MiB).
const FAR: u64 = 2 * MIB;

/// [`setup_recording`], the second stage also mapping [`FAR`] with one
/// 2 MiB leaf of rights `far`, if given.
fn setup_with<'m>(
    memory: &'m SimMemory,
    fills: &[&dyn Fn(&SimMemory)],
    root_page: u64,
    allow_1g: bool,
    (large, far): (Option<Perms>, Option<Perms>),
) -> Shadowed<'m> {
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
    match large {
        Some(perms) => second
            .map(memory, &mut frames, 0, 64 * MIB, PageSize::Size2M, perms)
            .unwrap(),
        None => {
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
        }
    }
    if let Some(perms) = far {
        second
            .map(memory, &mut frames, FAR, 128 * MIB, PageSize::Size2M, perms)
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
    let mut dependencies = Dependencies::new();
    for fill in fills {
        fill(memory);
        let stats = shadow_range_recording(
            memory,
            &mut frames,
            (root_ipa, &second, &shadow),
            0,
            WINDOW,
            1024,
            allow_1g,
            &mut dependencies,
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
    Shadowed {
        nested: nested_unit,
        shadowed: shadow_unit,
        mapped,
        second,
        shadow,
        dependencies,
        root_ipa,
    }
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
    well_formed_spread(seed, physical_page, 0)
}

/// [`well_formed`] with guest page `p` at physical address `home(p)`,
/// about half the leaves `far` above the guest's IPAs (in another 2 MiB
/// region of IPAs when `far` is [`FAR`]).
fn well_formed_spread(seed: u64, home: fn(u64) -> u64, far: u64) -> impl Fn(&SimMemory) {
    move |memory| {
        let mut rng = Rng(seed);
        let table = home;
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
                let page = (((r >> 8) % (2 * GUEST_PAGES)) << 12) | (((r >> 40) & 1) * far);
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

/// Two updates of the window, from well-formed first stages (`seed`,
/// then another) with guest page `p` at `home(p)` and leaves spread by
/// `far`, under the second stage `stages` ([`setup_with`]): every page
/// translates as a nesting unit translates it; unless `maps_none_is_fine`,
/// the last update mapped something. The second update finds the
/// last-level tables and takes the composing loop.
fn twice_translates_like_hardware_nesting(
    seed: u64,
    (home, far): (fn(u64) -> u64, u64),
    stages: (Option<Perms>, Option<Perms>),
    maps_none_is_fine: bool,
) -> Result<(), TestCaseError> {
    let memory = SimMemory::new(256 * MIB);
    let (first, second) = (
        well_formed_spread(seed, home, far),
        well_formed_spread(seed ^ 0x5eed, home, far),
    );
    let s = setup_with(&memory, &[&first, &second], ROOT_PAGE, false, stages);
    prop_assert!(maps_none_is_fine || s.mapped > 0);
    same_translations(&s.nested, &s.shadowed, (0..WINDOW).step_by(4096))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Under a second stage of one 2 MiB leaf (read-write, read-only or
    /// write-only: then no table is readable), well-formed first stages
    /// re-shadowed: every page of the window translates as a nesting unit
    /// translates it (the composing loop's one-leaf case).
    #[test]
    fn shadow_under_a_large_second_stage_leaf_translates_like_hardware_nesting(
        seed in 1u64..,
        rights in 0u64..3,
    ) {
        let home = |page: u64| 64 * MIB + (page << 12);
        twice_translates_like_hardware_nesting(
            seed,
            (home, 0),
            (Some(perms_of(rights)), None),
            rights == 2,
        )?;
    }

    /// Leaves of one 2 MiB region of IOVAs into two regions of IPAs, the
    /// guest's under stage-2 4 KiB leaves, [`FAR`] under one 2 MiB leaf
    /// (read-write, read-only or write-only), re-shadowed: every page of
    /// the window translates as a nesting unit translates it (the
    /// composing loop's runs end where the leaves' IPA region changes).
    #[test]
    fn leaves_into_two_ipa_regions_translate_like_hardware_nesting(
        seed in 1u64..,
        rights in 0u64..3,
    ) {
        twice_translates_like_hardware_nesting(
            seed,
            (physical_page, FAR),
            (None, Some(perms_of(rights))),
            false,
        )?;
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

/// A second stage mapping every guest page read-write.
fn read_write_second_stage(
    memory: &SimMemory,
    frames: &mut SimFrames<'_>,
    format: SecondStageFormat,
) -> PageTable<SecondStageFormat> {
    let second = PageTable::new(frames, format, 4, 48).unwrap();
    for page in 0..GUEST_PAGES {
        second
            .map(
                memory,
                frames,
                page << 12,
                physical_page(page),
                PageSize::Size4K,
                crate::pagetable::Perms::READ_WRITE,
            )
            .unwrap();
    }
    second
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
    let second = read_write_second_stage(&memory, &mut frames, format);
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

/// Where the nesting unit and the shadow disagree after stage-2 unmaps
/// (their dependents dropped from the shadow): `Err` when the shadow
/// reaches a page the nesting unit's fresh walk does not give (strict
/// revocation broken), or faults where the nesting unit translates into
/// a frame that was neither unmapped nor mapped anew (an entry dropped
/// that depended on nothing unmapped). Returns the pages both translate.
fn after_unmaps(s: &Shadowed<'_>, touched_frames: &[u64]) -> Result<u64, TestCaseError> {
    let mut both = 0;
    for address in (0..WINDOW).step_by(4096) {
        for access in [Access::Read, Access::Write] {
            let request = Request {
                source_id: 0x10,
                pasid: None,
                address: address + 8,
                access,
            };
            let nested = s.nested.dma(request).ok();
            let shadowed = s.shadowed.dma(request).ok();
            match (shadowed, nested) {
                (Some(got), want) => {
                    prop_assert_eq!(Some(got), want, "{:#x} {:?}", address, access);
                    both += 1;
                }
                (None, Some(want)) => prop_assert!(
                    touched_frames.contains(&(want & !0xfff)),
                    "{:#x} {:?} faults; nested hardware reaches {:#x}, which no unmap touched",
                    address,
                    access,
                    want
                ),
                (None, None) => {}
            }
        }
    }
    Ok(both)
}

/// Unmaps guest page `page` from the second stage and drops what depends
/// on it; with `remap`, maps the IPA again to a fresh frame (zeroed, at
/// 128 MiB up). The frames that changed hands.
fn unmap_and_drop(memory: &SimMemory, s: &mut Shadowed<'_>, page: u64, remap: bool) -> Vec<u64> {
    let Ok((pa, size)) = s.second.unmap(memory, page << 12) else {
        return Vec::new();
    };
    let ipa = (page << 12) & !(size.bytes() - 1);
    // As the kernel's layer does: the records are asked only when the
    // unmap meets their span (a summary it keeps per IoSpace).
    let (start, end) = s.dependencies.span();
    if ipa < end && start < ipa + size.bytes() {
        s.dependencies
            .drop_dependents(memory, &s.shadow, ipa, size.bytes(), pa);
    }
    let mut touched: Vec<u64> = (pa..pa + size.bytes()).step_by(4096).collect();
    if remap {
        let fresh = 128 * MIB + (page << 12);
        memory.zero(fresh, 4096);
        let mut frames = SimFrames::new(memory, 200 * MIB, 210 * MIB);
        s.second
            .map(
                memory,
                &mut frames,
                page << 12,
                fresh,
                PageSize::Size4K,
                crate::pagetable::Perms::READ_WRITE,
            )
            .unwrap();
        touched.push(fresh);
    }
    touched
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Stage-2 unmaps of any guest pages (the first stage's table pages,
    /// its leaves' targets, or neither), some mapped again to other
    /// (zeroed) frames: the shadow never reaches what nested hardware
    /// would not, and keeps every translation that depended on nothing
    /// unmapped; or, composed again, translates as nested hardware does.
    #[test]
    fn unmaps_drop_exactly_what_depended_on_them(
        seed in 1u64..,
        well in any::<bool>(),
        root_page in 0u64..GUEST_PAGES,
        unmaps in proptest::collection::vec((0u64..GUEST_PAGES, any::<bool>()), 1..6),
        large in proptest::option::weighted(0.25, 0u64..3),
        recompose in any::<bool>(),
    ) {
        let memory = SimMemory::new(256 * MIB);
        let fill: Box<dyn Fn(&SimMemory)> = if well {
            Box::new(well_formed(seed))
        } else {
            Box::new(adversarial(seed, 0b111))
        };
        let root = if well { ROOT_PAGE } else { root_page };
        let large = large.map(perms_of);
        let mut s = setup_recording(&memory, &[&*fill], root, false, large);
        let mut touched = Vec::new();
        for (page, remap) in unmaps {
            touched.extend(unmap_and_drop(&memory, &mut s, page, remap));
        }
        if recompose {
            // The driver's next Invalidate: what the records kept of
            // stage 2 (the tables' pages) must not outlive an unmap.
            let mut frames = SimFrames::new(&memory, 220 * MIB, 230 * MIB);
            shadow_range_recording(
                &memory,
                &mut frames,
                (s.root_ipa, &s.second, &s.shadow),
                0,
                WINDOW,
                1024,
                false,
                &mut s.dependencies,
            )
            .unwrap();
            same_translations(&s.nested, &s.shadowed, (0..WINDOW).step_by(4096))?;
        } else {
            after_unmaps(&s, &touched)?;
        }
    }
}

/// Well-formed tables over both 2 MiB regions of the window: unmapping
/// the first region's last-level table page drops that region's entries
/// and no other; unmapping a leaf target drops the entries into it; the
/// rest keeps translating without the driver's `Invalidate`.
#[test]
fn an_unmap_drops_only_the_entries_through_it() {
    let memory = SimMemory::new(256 * MIB);
    let mut s = setup_recording(&memory, &[&well_formed(7)], ROOT_PAGE, false, None);
    assert!(!s.dependencies.overflowed());
    // Counted in the shadow table (a DMA now would fill the unit's
    // IOTLB, which the tests do not invalidate).
    let translating = |s: &Shadowed<'_>, region: u64| {
        (0..512u64)
            .filter(|page| {
                s.shadow
                    .lookup(&memory, (region << 21) + (page << 12))
                    .is_some()
            })
            .count()
    };
    let into = |s: &Shadowed<'_>, page: u64| {
        (0..512u64)
            .filter(|&i| {
                s.shadow
                    .lookup(&memory, (1 << 21) + (i << 12))
                    .is_some_and(|(out, _)| out & !0xfff == physical_page(page))
            })
            .count()
    };
    let (first, second) = (translating(&s, 0), translating(&s, 1));
    assert!(first > 100 && second > 100, "{first} {second}");
    // Guest page 4 holds the first region's last-level table (and is a
    // leaf target of some of the second region's entries).
    let second = second - into(&s, 4);
    let mut touched = unmap_and_drop(&memory, &mut s, 4, false);
    assert_eq!((translating(&s, 0), translating(&s, 1)), (0, second));
    // A leaf target of the second region: only the entries into it go.
    let target = (0..GUEST_PAGES)
        .filter(|&page| ![ROOT_PAGE, 1, 3, 4, 6].contains(&page))
        .max_by_key(|&page| into(&s, page))
        .unwrap();
    let dropped = into(&s, target);
    assert!(dropped > 0);
    touched.extend(unmap_and_drop(&memory, &mut s, target, false));
    assert_eq!(translating(&s, 1), second - dropped);
    // Every DMA through the shadow agrees with nested hardware.
    let both = after_unmaps(&s, &touched).unwrap();
    assert!(both > 100, "{both}");
}

/// More regions than the records hold: the records overflow, and the
/// next stage-2 unmap clears the whole shadow (the fallback is safe).
#[test]
fn overflowing_records_clear_the_whole_shadow() {
    let memory = SimMemory::new(256 * MIB);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 48 * MIB);
    let format = SecondStageFormat::for_unit(Capability(QEMU_CAP));
    let second = read_write_second_stage(&memory, &mut frames, format);
    // Root at guest page 0, level 3 at 1, level 2 at 2, one last-level
    // table at 3 used by every 2 MiB region: each region maps its first
    // page to guest page 8.
    let write = |gpa_page: u64, index: u64, value: u64| {
        memory.write_u64(physical_page(gpa_page) + 8 * index, value)
    };
    write(0, 0, 1 << 12 | 0b111);
    write(1, 0, 2 << 12 | 0b111);
    let regions = crate::vtd::shadow::DEPENDENCY_REGIONS as u64 + 2;
    for region in 0..regions {
        write(2, region, 3 << 12 | 0b111);
    }
    write(3, 0, 8 << 12 | 0b111);
    let shadow = PageTable::new(&mut frames, format, 4, 48).unwrap();
    let mut dependencies = Dependencies::new();
    for region in 0..regions {
        shadow_range_recording(
            &memory,
            &mut frames,
            (0, &second, &shadow),
            region << 21,
            4096,
            1,
            false,
            &mut dependencies,
        )
        .unwrap();
    }
    assert!(dependencies.overflowed());
    // Guest page 20 is nobody's table or target; still everything goes.
    let (pa, _) = second.unmap(&memory, 20 << 12).unwrap();
    assert_eq!(
        dependencies.drop_dependents(&memory, &shadow, 20 << 12, 4096, pa),
        regions
    );
    assert!(dependencies.is_empty());
}

/// The first stage's root in a 2 MiB region of IPAs of its own, away
/// from every table and leaf target the records name: its stage-2 unmap
/// still drops every entry (and what the records kept of it).
#[test]
fn an_unmap_of_a_root_away_from_the_records_drops_everything() {
    let dependencies = unmap_of_a_far_table_drops_everything(0);
    assert!(dependencies.is_empty());
}

/// The first stage's last-level table in a 2 MiB region of IPAs of its
/// own, away from the other tables and the leaves' targets: the span a
/// caller asks first holds it, and its unmap drops every entry.
#[test]
fn an_unmap_of_a_table_away_from_the_leaves_drops_its_entries() {
    unmap_of_a_far_table_drops_everything(3);
}

/// Composes IOVA pages 0..8 -> guest pages 8.. through four first-stage
/// tables (level 4 down; guest pages 0..3) of which table `far` is at IPA
/// 4 MiB instead (physical 100 MiB, alone in its 2 MiB region), then
/// unmaps that IPA from stage 2 as the kernel's layer does (the records
/// asked only when the unmap meets their span): every entry goes.
fn unmap_of_a_far_table_drops_everything(far: u64) -> Dependencies {
    let memory = SimMemory::new(256 * MIB);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 48 * MIB);
    let format = SecondStageFormat::for_unit(Capability(QEMU_CAP));
    let second = read_write_second_stage(&memory, &mut frames, format);
    let far_ipa = 4 * MIB;
    second
        .map(
            &memory,
            &mut frames,
            far_ipa,
            100 * MIB,
            PageSize::Size4K,
            Perms::READ_WRITE,
        )
        .unwrap();
    // Table `level` (0: the root): its IPA and where it is written.
    let ipa = |level: u64| if level == far { far_ipa } else { level << 12 };
    let home = |level: u64| {
        if level == far {
            100 * MIB
        } else {
            physical_page(level)
        }
    };
    let write = |pa: u64, index: u64, value: u64| memory.write_u64(pa + 8 * index, value);
    for level in 0..3 {
        write(home(level), 0, ipa(level + 1) | 0b111);
    }
    for i in 0..8u64 {
        write(home(3), i, (8 + i) << 12 | 0b111);
    }
    let shadow = PageTable::new(&mut frames, format, 4, 48).unwrap();
    let mut dependencies = Dependencies::new();
    let stats = shadow_range_recording(
        &memory,
        &mut frames,
        (ipa(0), &second, &shadow),
        0,
        8 << 12,
        8,
        false,
        &mut dependencies,
    )
    .unwrap();
    assert_eq!(stats.mapped, 8);
    let (start, end) = dependencies.span();
    assert!(start <= far_ipa && far_ipa < end);
    let (pa, _) = second.unmap(&memory, far_ipa).unwrap();
    assert_eq!(
        dependencies.drop_dependents(&memory, &shadow, far_ipa, 4096, pa),
        8
    );
    assert!((0..8u64).all(|i| shadow.lookup(&memory, i << 12).is_none()));
    dependencies
}
