//! Dirty tracking as a property, on both vendors' models per the
//! specification: in every round of random reads and writes, the pages
//! read-and-cleared as dirty are exactly the pages written in that round
//! (clear, then invalidate, between rounds). VT-d second stage (SSADE),
//! VT-d first stage, SMMUv3 stage 2 (HTTU).

use super::common::MIB;
use super::vtd_page_requests::SPEC_ECAP;
use crate::model::smmu::{Outcome, SmmuRequest};
use crate::model::smmu_device::SimSmmu;
use crate::model::vtd::Request;
use crate::model::vtd_device::{QEMU_CAP, SimVtd};
use crate::model::{Access, SimFrames, SimMemory};
use crate::pagetable::{PageSize, PageTable, PageTableFormat, Perms};
use crate::smmuv3::pagetable::{Stage2Format, levels_4k};
use crate::smmuv3::queue::Command;
use crate::smmuv3::ste::{Stage2Config, Ste};
use crate::smmuv3::{BlockPolicy, Smmu};
use crate::vtd::VtdUnit;
use crate::vtd::qi::{Descriptor, PasidIotlbScope};
use crate::vtd::regs::{Capability, RootTableMode};
use crate::vtd::tables::{FirstStageFormat, PasidConfig, SecondStageFormat, SecondStageLevels};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::vec::Vec;

const PAGES: u64 = 12;
const BASE: u64 = 64 * MIB;
const EDU: u16 = 0x10;

/// One round: (page, write?) accesses.
type Round = Vec<(u64, bool)>;

fn map_all<F: PageTableFormat>(table: &PageTable<F>, memory: &SimMemory, frames: &mut SimFrames) {
    for page in 0..PAGES {
        table
            .map(
                memory,
                frames,
                page * 4096,
                BASE + page * 4096,
                PageSize::Size4K,
                Perms::READ_WRITE,
            )
            .unwrap();
    }
}

/// Runs `rounds` through `dma`, checking each round's dirty set, with
/// `invalidate` after each clear. Returns the first mismatch.
fn check_rounds<F: PageTableFormat>(
    table: &PageTable<F>,
    memory: &SimMemory,
    rounds: &[Round],
    mut dma: impl FnMut(u64, Access) -> bool,
    mut invalidate: impl FnMut(),
) -> Result<(), std::string::String> {
    table
        .set_dirty_state(memory, 0, PAGES * 4096, true)
        .unwrap();
    invalidate();
    for (n, round) in rounds.iter().enumerate() {
        let mut written = BTreeSet::new();
        for &(page, write) in round {
            let access = if write { Access::Write } else { Access::Read };
            if !dma(page, access) {
                return Err(std::format!("round {n}: {access:?} of page {page} failed"));
            }
            if write {
                written.insert(page);
            }
        }
        let mut reported = BTreeSet::new();
        table
            .read_dirty(memory, 0, PAGES * 4096, true, |input, _| {
                reported.insert(input / 4096);
            })
            .unwrap();
        if reported != written {
            return Err(std::format!(
                "round {n}: wrote {written:?}, reported {reported:?}"
            ));
        }
        invalidate();
    }
    Ok(())
}

fn vtd_case(rounds: &[Round], first_stage: bool) -> Result<(), std::string::String> {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, SPEC_ECAP, false);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut frames, RootTableMode::Scalable)
        .unwrap();
    let cap = Capability(QEMU_CAP);
    let dma = |page: u64, access| {
        device
            .dma(Request {
                source_id: EDU,
                pasid: None,
                address: page * 4096,
                access,
            })
            .is_ok()
    };
    let invalidate = |unit: &mut VtdUnit<&SimVtd>| {
        unit.submit(
            &memory,
            [Descriptor::pasid_iotlb(PasidIotlbScope::Pasid {
                domain: 1,
                pasid: 0,
            })],
        )
        .unwrap();
    };
    if first_stage {
        let table = PageTable::new(&mut frames, FirstStageFormat::for_unit(cap), 4, 48).unwrap();
        map_all(&table, &memory, &mut frames);
        let config = PasidConfig::FirstStage {
            domain: 1,
            table: table.root(),
        };
        unit.set_pasid_entry(&memory, &mut frames, EDU, 0, Some(config))
            .unwrap();
        check_rounds(&table, &memory, rounds, dma, || invalidate(&mut unit))
    } else {
        let levels = SecondStageLevels::best(cap).unwrap();
        let table = PageTable::new(
            &mut frames,
            SecondStageFormat::for_unit(cap),
            levels.height(),
            levels.input_bits(),
        )
        .unwrap();
        map_all(&table, &memory, &mut frames);
        let config = PasidConfig::SecondStage {
            domain: 1,
            table: table.root(),
            levels,
        };
        unit.set_pasid_entry(&memory, &mut frames, EDU, 0, Some(config))
            .unwrap();
        unit.set_dirty_tracking(&memory, EDU, 0, true).unwrap();
        check_rounds(&table, &memory, rounds, dma, || invalidate(&mut unit))
    }
}

fn smmu_case(rounds: &[Round]) -> Result<(), std::string::String> {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::per_spec(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..64)
        .unwrap();
    let features = *smmu.features();
    let table = PageTable::new(
        &mut frames,
        Stage2Format::for_unit(&features),
        levels_4k(40),
        40,
    )
    .unwrap();
    map_all(&table, &memory, &mut frames);
    let stage2 = Stage2Config {
        vmid: 1,
        table: table.root(),
        ipa_bits: 40,
        output_bits: 44,
    };
    let mut ste = Ste::stage2(&stage2, &features).unwrap();
    ste.set_stage2_dirty_tracking(true, &features).unwrap();
    smmu.install_ste(&memory, &mut frames, u32::from(EDU), &ste)
        .unwrap();
    let dma = |page: u64, access| {
        matches!(
            device.dma(SmmuRequest {
                stream_id: u32::from(EDU),
                substream_id: None,
                address: page * 4096,
                access,
            }),
            Outcome::Translated(_)
        )
    };
    check_rounds(&table, &memory, rounds, dma, || {
        smmu.submit(&memory, [Command::TlbiS12Vmall { vmid: 1 }])
            .unwrap();
    })
}

fn rounds() -> impl Strategy<Value = Vec<Round>> {
    prop::collection::vec(
        prop::collection::vec((0..PAGES, any::<bool>()), 0..16),
        1..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn vtd_second_stage_reports_exactly_the_written_pages(rounds in rounds()) {
        prop_assert_eq!(vtd_case(&rounds, false), Ok(()));
    }

    #[test]
    fn vtd_first_stage_reports_exactly_the_written_pages(rounds in rounds()) {
        prop_assert_eq!(vtd_case(&rounds, true), Ok(()));
    }

    #[test]
    fn smmu_stage2_reports_exactly_the_written_pages(rounds in rounds()) {
        prop_assert_eq!(smmu_case(&rounds), Ok(()));
    }
}
