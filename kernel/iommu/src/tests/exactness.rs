//! Encoders + models translate exactly as intended: random mappings built
//! with the drivers' page-table builders and attached with their encoders
//! translate every mapped address to exactly its target with exactly the
//! mapped rights, and fault everywhere else (VT-d legacy and scalable
//! second stage, 3 and 4 levels; SMMUv3 stage 2 at every IPA size).

use super::common::MIB;
use crate::model::smmu::{Outcome, SmmuRequest};
use crate::model::smmu_device::SimSmmu;
use crate::model::vtd::Request;
use crate::model::vtd_device::{QEMU_CAP, QEMU_ECAP, SimVtd};
use crate::model::{Access, SimFrames, SimMemory};
use crate::pagetable::{PageSize, PageTable, Perms};
use crate::smmuv3::pagetable::{Stage2Format, levels_4k};
use crate::smmuv3::ste::Stage2Config;
use crate::smmuv3::{BlockPolicy, Smmu};
use crate::vtd::VtdUnit;
use crate::vtd::regs::{Capability, RootTableMode};
use crate::vtd::tables::{LegacyContext, PasidConfig, SecondStageFormat, SecondStageLevels};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::vec::Vec;

fn perms(code: u8) -> Perms {
    match code % 3 {
        0 => Perms::READ,
        1 => Perms::WRITE,
        _ => Perms::READ_WRITE,
    }
}

fn size(code: u8) -> PageSize {
    match code % 8 {
        0 => PageSize::Size2M,
        _ => PageSize::Size4K,
    }
}

/// Random non-overlapping mappings: input -> (output, size, perms).
fn mappings(input_bits: u32) -> impl Strategy<Value = Vec<(u64, u64, u8, u8)>> {
    proptest::collection::vec(
        (
            0u64..(1 << (input_bits - 21)),
            0u64..512,
            0u64..(1 << 10),
            any::<u8>(),
            any::<u8>(),
        ),
        1..12,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .map(|(block, page, out, size_code, perm_code)| {
                // 2 MiB-aligned block, a page inside it; outputs below 4 GiB.
                (
                    (block << 21) | (page << 12),
                    out << 21 | (page << 12),
                    size_code,
                    perm_code,
                )
            })
            .collect()
    })
}

type Expected = BTreeMap<u64, (u64, Perms)>;

fn build<F: crate::pagetable::PageTableFormat>(
    memory: &SimMemory,
    frames: &mut SimFrames,
    table: &PageTable<F>,
    raw: &[(u64, u64, u8, u8)],
) -> Expected {
    let mut expected = Expected::new();
    for &(input, output, size_code, perm_code) in raw {
        let size = size(size_code);
        let (input, output) = (input & !(size.bytes() - 1), output & !(size.bytes() - 1));
        let p = perms(perm_code);
        if table.map(memory, frames, input, output, size, p).is_ok() {
            let mut offset = 0;
            while offset < size.bytes() {
                expected.insert(input + offset, (output + offset, p));
                offset += 4096;
            }
        }
    }
    expected
}

fn probes(expected: &Expected, extra: &[u64]) -> Vec<u64> {
    let mut probes: Vec<u64> = expected.keys().copied().step_by(37).collect();
    probes.extend(expected.keys().take(8));
    probes.extend(extra.iter().map(|a| a & !0xfff));
    probes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn vtd_second_stage_translates_exactly(
        four_levels in any::<bool>(),
        scalable in any::<bool>(),
        raw in mappings(39),
        extra in proptest::collection::vec(0u64..(1 << 39), 8),
    ) {
        let levels = if four_levels { SecondStageLevels::Four } else { SecondStageLevels::Three };
        let ecap = if scalable { QEMU_ECAP | 1 << 43 | 1 << 46 } else { QEMU_ECAP };
        let memory = SimMemory::new(8192 * MIB);
        let device = SimVtd::new(&memory, QEMU_CAP, ecap, false);
        let mut frames = SimFrames::new(&memory, 16 * MIB, 64 * MIB);
        let mut unit = VtdUnit::new(&device);
        let mode = if scalable { RootTableMode::Scalable } else { RootTableMode::Legacy };
        unit.block_all_dma(&memory, &mut frames, mode).unwrap();
        let table = PageTable::new(
            &mut frames,
            SecondStageFormat::for_unit(Capability(QEMU_CAP)),
            levels.height(),
            levels.input_bits(),
        )
        .unwrap();
        let expected = build(&memory, &mut frames, &table, &raw);
        if scalable {
            let config = PasidConfig::SecondStage { domain: 2, table: table.root(), levels };
            unit.set_pasid_entry(&memory, &mut frames, 0x10, 0, Some(config)).unwrap();
        } else {
            let context = LegacyContext::Translated { domain: 2, table: table.root(), levels };
            unit.set_legacy_context(&memory, &mut frames, 0x10, Some(context)).unwrap();
        }
        for address in probes(&expected, &extra) {
            for access in [Access::Read, Access::Write] {
                let got = device.dma(Request { source_id: 0x10, pasid: None, address: address | 0x18, access });
                match expected.get(&address) {
                    Some(&(output, p)) if (access == Access::Read && p.read) || (access == Access::Write && p.write) => {
                        prop_assert_eq!(got, Ok(output | 0x18));
                    }
                    _ => prop_assert!(got.is_err(), "{address:#x} {access:?} -> {got:?}"),
                }
            }
        }
        let _ = unit.read_faults();
    }

    #[test]
    fn smmu_stage2_translates_exactly(
        ipa_bits in 32u32..=44,
        raw in mappings(32),
        extra in proptest::collection::vec(0u64..(1 << 32), 8),
    ) {
        let memory = SimMemory::new(8192 * MIB);
        let device = SimSmmu::qemu(&memory);
        let mut frames = SimFrames::new(&memory, 16 * MIB, 64 * MIB);
        let mut smmu = Smmu::new(&device);
        smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..64).unwrap();
        let table = PageTable::new(&mut frames, Stage2Format::default(), levels_4k(ipa_bits), ipa_bits).unwrap();
        let expected = build(&memory, &mut frames, &table, &raw);
        let config = Stage2Config { vmid: 9, table: table.root(), ipa_bits, output_bits: 44 };
        smmu.attach_stage2(&memory, &mut frames, 0x10, &config).unwrap();
        for address in probes(&expected, &extra) {
            for access in [Access::Read, Access::Write] {
                let got = device.dma(SmmuRequest { stream_id: 0x10, substream_id: None, address: address | 0x18, access });
                match expected.get(&address) {
                    Some(&(output, p)) if (access == Access::Read && p.read) || (access == Access::Write && p.write) => {
                        prop_assert_eq!(got, Outcome::Translated(output | 0x18));
                    }
                    _ => prop_assert!(matches!(got, Outcome::Fault(_)), "{address:#x} {access:?} -> {got:?}"),
                }
            }
        }
        let _ = smmu.drain_events(&memory);
    }
}
