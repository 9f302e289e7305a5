//! Confinement property (DESIGN.md invariant 1) for both vendors' nested
//! modes: under a fixed, kernel-owned stage 2, random adversarial stage-1
//! contents (every entry of every guest page random, the stage-1 root
//! anywhere) never produce a translation outside the stage-2 image, and a
//! write only lands where stage 2 allows writes.

use super::common::MIB;
use crate::model::smmu::{Outcome, SmmuRequest};
use crate::model::smmu_device::SimSmmu;
use crate::model::vtd::Request;
use crate::model::vtd_device::{NESTING_ECAP, QEMU_CAP, SimVtd};
use crate::model::{Access, SimFrames, SimMemory};
use crate::pagetable::{PageSize, PageTable, Perms};
use crate::smmuv3::cd::{Cd, CdParams, DEFAULT_MAIR};
use crate::smmuv3::pagetable::{Stage2Format, levels_4k};
use crate::smmuv3::ste::Stage2Config;
use crate::smmuv3::{BlockPolicy, Smmu};
use crate::vtd::VtdUnit;
use crate::vtd::regs::{Capability, RootTableMode};
use crate::vtd::tables::{PasidConfig, SecondStageFormat, SecondStageLevels};
use crate::{FrameAllocator, PhysMem};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::vec::Vec;

/// Guest pages the stage 2 maps (GPA page p -> a scrambled physical page).
pub(super) const GUEST_PAGES: u64 = 32;
const GUEST_PHYS_BASE: u64 = 64 * MIB;

pub(super) fn physical_page(gpa_page: u64) -> u64 {
    GUEST_PHYS_BASE + ((gpa_page * 13) % GUEST_PAGES) * 4096
}

pub(super) fn perms_of(gpa_page: u64) -> Perms {
    match gpa_page % 3 {
        0 => Perms::READ_WRITE,
        1 => Perms::READ,
        _ => Perms::WRITE,
    }
}

pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A random entry: usually a plausible pointer into (or just beyond) the
/// guest's address space with random flag bits, sometimes pure noise.
fn adversarial_entry(rng: &mut Rng, flags_bias: u64) -> u64 {
    let r = rng.next();
    match r % 8 {
        0 => rng.next(),
        1 => 0,
        _ => {
            let page = rng.next() % (2 * GUEST_PAGES);
            let large = if rng.next().is_multiple_of(8) {
                1 << 7
            } else {
                0
            };
            (page << 12) | (rng.next() & 0xfff & !(1 << 7)) | flags_bias | large
        }
    }
}

/// Fills every guest page with adversarial entries (through stage 2's
/// mapping, i.e. the memory the driver could write).
pub(super) fn fill_guest(memory: &SimMemory, rng: &mut Rng, flags_bias: u64) {
    for page in 0..GUEST_PAGES {
        let base = physical_page(page);
        for index in 0..512 {
            memory.write_u64(base + 8 * index, adversarial_entry(rng, flags_bias));
        }
    }
}

/// The stage-2 image: physical page -> rights.
type Image = BTreeMap<u64, Perms>;

fn check_confined(image: &Image, physical: u64, access: Access) -> Result<(), TestCaseError> {
    let page = physical & !0xfff;
    let Some(perms) = image.get(&page) else {
        return Err(TestCaseError::fail(std::format!(
            "translation to {physical:#x} is outside the stage-2 image"
        )));
    };
    let allowed = match access {
        Access::Read => perms.read,
        Access::Write => perms.write,
    };
    prop_assert!(
        allowed,
        "{access:?} to {physical:#x} exceeds the stage-2 rights {perms:?}"
    );
    Ok(())
}

fn queries() -> impl Strategy<Value = Vec<(u64, bool)>> {
    proptest::collection::vec(
        (
            prop_oneof![
                0u64..(1 << 22),
                0u64..(1 << 32),
                0u64..(1 << 48),
                any::<u64>()
            ],
            any::<bool>(),
        ),
        96,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn vtd_nested_stage1_never_escapes_stage2(
        seed in 1u64..,
        root_page in 0u64..(2 * GUEST_PAGES),
        queries in queries(),
    ) {
        let memory = SimMemory::new(256 * MIB);
        let device = SimVtd::new(&memory, QEMU_CAP | 1 << 56, NESTING_ECAP, false);
        let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
        let mut unit = VtdUnit::new(&device);
        unit.block_all_dma(&memory, &mut frames, RootTableMode::Scalable).unwrap();
        let second = PageTable::new(
            &mut frames,
            SecondStageFormat::for_unit(Capability(QEMU_CAP)),
            4,
            48,
        )
        .unwrap();
        let mut image = Image::new();
        for page in 0..GUEST_PAGES {
            second
                .map(&memory, &mut frames, page << 12, physical_page(page), PageSize::Size4K, perms_of(page))
                .unwrap();
            image.insert(physical_page(page), perms_of(page));
        }
        let config = PasidConfig::Nested {
            domain: 1,
            first_stage_table: root_page << 12,
            second_stage_table: second.root(),
            levels: SecondStageLevels::Four,
        };
        unit.set_pasid_entry(&memory, &mut frames, 0x10, 0, Some(config)).unwrap();
        unit.set_pasid_entry(&memory, &mut frames, 0x10, 7, Some(config)).unwrap();
        // P, R/W, U/S usually set so walks go deep.
        fill_guest(&memory, &mut Rng(seed), 0b111);
        let mut translated = 0;
        for (address, write) in queries {
            let access = if write { Access::Write } else { Access::Read };
            for pasid in [None, Some(7)] {
                let request = Request { source_id: 0x10, pasid, address, access };
                if let Ok(physical) = device.dma(request) {
                    check_confined(&image, physical, access)?;
                    translated += 1;
                }
            }
        }
        let _ = translated;
        let _ = unit.read_faults();
    }

    #[test]
    fn smmu_nested_stage1_never_escapes_stage2(
        seed in 1u64..,
        root_page in 0u64..(2 * GUEST_PAGES),
        queries in queries(),
    ) {
        let memory = SimMemory::new(256 * MIB);
        let device = SimSmmu::qemu(&memory);
        let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
        let mut smmu = Smmu::new(&device);
        smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..64).unwrap();
        let s2 = PageTable::new(&mut frames, Stage2Format::default(), levels_4k(40), 40).unwrap();
        let mut image = Image::new();
        for page in 0..GUEST_PAGES {
            s2.map(&memory, &mut frames, page << 12, physical_page(page), PageSize::Size4K, perms_of(page))
                .unwrap();
            image.insert(physical_page(page), perms_of(page));
        }
        // The kernel's CD page, read-only in the reserved IPA window.
        let cd_page = frames.alloc_zeroed_frame().unwrap();
        let cd_ipa = 0x100_0000;
        s2.map(&memory, &mut frames, cd_ipa, cd_page, PageSize::Size4K, Perms::READ).unwrap();
        image.insert(cd_page, Perms::READ);
        let stage2 = Stage2Config { vmid: 1, table: s2.root(), ipa_bits: 40, output_bits: 44 };
        let params = CdParams { asid: 1, ttb0: root_page << 12, va_bits: 48, output_bits: 44, mair: DEFAULT_MAIR };
        let cd = Cd::new(&params, smmu.features()).unwrap();
        smmu.write_cd(&memory, cd_page, 0x10, 0, &cd).unwrap();
        smmu.attach_nested(&memory, &mut frames, 0x10, &stage2, cd_ipa).unwrap();
        // Valid-looking descriptors (bits 1:0 = 0b11) with AF usually set.
        fill_guest(&memory, &mut Rng(seed), 0b11 | 1 << 10);
        for (address, write) in queries {
            let access = if write { Access::Write } else { Access::Read };
            let request = SmmuRequest { stream_id: 0x10, substream_id: None, address, access };
            if let Outcome::Translated(physical) = device.dma(request) {
                check_confined(&image, physical, access)?;
            }
        }
        let _ = smmu.drain_events(&memory);
    }
}

/// The adversarial generator does produce successful nested translations
/// (so the property above is not vacuous).
#[test]
fn adversarial_tables_do_translate_sometimes() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..64)
        .unwrap();
    let s2 = PageTable::new(&mut frames, Stage2Format::default(), levels_4k(40), 40).unwrap();
    for page in 0..GUEST_PAGES {
        s2.map(
            &memory,
            &mut frames,
            page << 12,
            physical_page(page),
            PageSize::Size4K,
            Perms::READ_WRITE,
        )
        .unwrap();
    }
    let cd_page = frames.alloc_zeroed_frame().unwrap();
    s2.map(
        &memory,
        &mut frames,
        0x100_0000,
        cd_page,
        PageSize::Size4K,
        Perms::READ,
    )
    .unwrap();
    let stage2 = Stage2Config {
        vmid: 1,
        table: s2.root(),
        ipa_bits: 40,
        output_bits: 44,
    };
    let params = CdParams {
        asid: 1,
        ttb0: 0,
        va_bits: 48,
        output_bits: 44,
        mair: DEFAULT_MAIR,
    };
    smmu.write_cd(
        &memory,
        cd_page,
        0x10,
        0,
        &Cd::new(&params, smmu.features()).unwrap(),
    )
    .unwrap();
    smmu.attach_nested(&memory, &mut frames, 0x10, &stage2, 0x100_0000)
        .unwrap();
    let mut translated = 0;
    for seed in 1..20 {
        fill_guest(&memory, &mut Rng(seed), 0b11 | 1 << 10);
        let mut rng = Rng(seed * 7919);
        for _ in 0..200 {
            let request = SmmuRequest {
                stream_id: 0x10,
                substream_id: None,
                address: rng.next() % (1 << 22),
                access: Access::Read,
            };
            if let Outcome::Translated(_) = device.dma(request) {
                translated += 1;
            }
        }
    }
    assert!(translated > 0);
    let _ = smmu.drain_events(&memory);
}

/// Same for VT-d: adversarial first-stage tables do reach stage 2 output.
#[test]
fn adversarial_vtd_tables_do_translate_sometimes() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP | 1 << 56, NESTING_ECAP, false);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut frames, RootTableMode::Scalable)
        .unwrap();
    let second = PageTable::new(
        &mut frames,
        SecondStageFormat::for_unit(Capability(QEMU_CAP)),
        4,
        48,
    )
    .unwrap();
    for page in 0..GUEST_PAGES {
        second
            .map(
                &memory,
                &mut frames,
                page << 12,
                physical_page(page),
                PageSize::Size4K,
                Perms::READ_WRITE,
            )
            .unwrap();
    }
    let config = PasidConfig::Nested {
        domain: 1,
        first_stage_table: 0,
        second_stage_table: second.root(),
        levels: SecondStageLevels::Four,
    };
    unit.set_pasid_entry(&memory, &mut frames, 0x10, 0, Some(config))
        .unwrap();
    let mut translated = 0;
    let mut reasons = BTreeMap::new();
    for seed in 1..200 {
        fill_guest(&memory, &mut Rng(seed), 0b111);
        let mut rng = Rng(seed * 7919);
        for _ in 0..50 {
            let request = Request {
                source_id: 0x10,
                pasid: None,
                address: rng.next() % (1 << 47),
                access: Access::Read,
            };
            match device.dma(request) {
                Ok(_) => translated += 1,
                Err(r) => *reasons.entry(r).or_insert(0) += 1,
            }
        }
    }
    assert!(translated > 0, "{reasons:x?}");
}
