//! Strict revocation (DESIGN.md invariant 2) against the models' caches:
//! after an unmap, the old translation survives in the modelled IOTLB/TLB
//! until the batched flush, and is gone once the flush returns. Also shows
//! why nested second stages need whole-domain / TLBI_NH_ALL invalidation.

use super::common::MIB;
use super::smmu_translate::{
    CD_IPA, EDU as SMMU_EDU, GUEST_BASE as SMMU_GUEST, build_nested_smmu, cd_params, request,
};
use super::vtd_translate::{GUEST_BASE as VTD_GUEST, build_nested_vtd};
use crate::invalidation::{InvalidationBatch, InvalidationTarget};
use crate::model::smmu::Outcome;
use crate::model::smmu_device::SimSmmu;
use crate::model::vtd::{Request, reason};
use crate::model::vtd_device::{NESTING_ECAP, QEMU_CAP, SimVtd};
use crate::model::{Access, SimFrames, SimMemory};
use crate::pagetable::{PageSize, PageTable, Perms};
use crate::smmuv3::cd::Cd;
use crate::smmuv3::pagetable::{Stage2Format, levels_4k};
use crate::smmuv3::queue::EventKind;
use crate::smmuv3::ste::Stage2Config;
use crate::smmuv3::{BlockPolicy, Smmu};
use crate::vtd::VtdUnit;
use crate::vtd::regs::{Capability, RootTableMode};
use crate::vtd::tables::{LegacyContext, PasidConfig, SecondStageFormat, SecondStageLevels};

const EDU: u16 = 0x0010;

fn vtd_request(address: u64, access: Access) -> Request {
    Request {
        source_id: EDU,
        pasid: None,
        address,
        access,
    }
}

#[test]
fn vtd_unmap_is_stale_until_flush() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::qemu_default(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut frames, RootTableMode::Legacy)
        .unwrap();
    let table = PageTable::new(
        &mut frames,
        SecondStageFormat::for_unit(Capability(QEMU_CAP)),
        4,
        48,
    )
    .unwrap();
    for page in 0..4u64 {
        table
            .map(
                &memory,
                &mut frames,
                page << 12,
                0x300_0000 + (page << 12),
                PageSize::Size4K,
                Perms::READ_WRITE,
            )
            .unwrap();
    }
    let context = LegacyContext::Translated {
        domain: 1,
        table: table.root(),
        levels: SecondStageLevels::Four,
    };
    unit.set_legacy_context(&memory, &mut frames, EDU, Some(context))
        .unwrap();
    for page in 0..4u64 {
        assert!(device.dma(vtd_request(page << 12, Access::Write)).is_ok());
    }
    assert_eq!(device.cached_translations(), 4);
    table.unmap(&memory, 0x1000).unwrap();
    table.unmap(&memory, 0x2000).unwrap();
    // Stale: the IOTLB still holds the translations.
    assert_eq!(
        device.dma(vtd_request(0x1000, Access::Write)),
        Ok(0x300_1000)
    );
    let mut batch = InvalidationBatch::new();
    batch.add(
        InvalidationTarget::VtdDomain {
            domain: 1,
            nested: false,
        },
        0x1000,
        0x2000,
    );
    let stats = unit.flush(&memory, &batch).unwrap();
    assert_eq!((stats.commands, stats.waits), (2, 1));
    assert_eq!(
        device.dma(vtd_request(0x1000, Access::Write)),
        Err(reason::WRITE)
    );
    assert_eq!(
        device.dma(vtd_request(0x2000, Access::Read)),
        Err(reason::READ)
    );
    // Untouched pages stay cached and valid.
    assert_eq!(
        device.dma(vtd_request(0x3000, Access::Read)),
        Ok(0x300_3000)
    );
    assert_eq!(device.cached_translations(), 2);
}

#[test]
fn vtd_nested_second_stage_change_needs_whole_domain_flush() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, NESTING_ECAP, false);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut frames, RootTableMode::Scalable)
        .unwrap();
    let nested = build_nested_vtd(&memory, &mut frames);
    let config = PasidConfig::Nested {
        domain: 4,
        first_stage_table: nested.first_root_gpa,
        second_stage_table: nested.second.root(),
        levels: SecondStageLevels::Four,
    };
    unit.set_pasid_entry(&memory, &mut frames, EDU, 0, Some(config))
        .unwrap();
    let iova = 0x1000_0010;
    assert_eq!(
        device.dma(vtd_request(iova, Access::Read)),
        Ok(VTD_GUEST + 0x20_0010)
    );
    // The kernel revokes GPA page 0x200000 from the domain's stage 2.
    nested.second.unmap(&memory, 0x20_0000).unwrap();
    let mut by_ipa = InvalidationBatch::new();
    by_ipa.add(
        InvalidationTarget::VtdDomain {
            domain: 4,
            nested: false,
        },
        0x20_0000,
        0x1000,
    );
    unit.flush(&memory, &by_ipa).unwrap();
    // Page-selective by IPA misses the combined IOVA-tagged entry.
    assert_eq!(
        device.dma(vtd_request(iova, Access::Read)),
        Ok(VTD_GUEST + 0x20_0010)
    );
    let mut whole = InvalidationBatch::new();
    whole.add(
        InvalidationTarget::VtdDomain {
            domain: 4,
            nested: true,
        },
        0x20_0000,
        0x1000,
    );
    let stats = unit.flush(&memory, &whole).unwrap();
    assert_eq!((stats.commands, stats.waits), (1, 1));
    assert_eq!(
        device.dma(vtd_request(iova, Access::Read)),
        Err(reason::SM_READ)
    );
}

fn stage2_smmu(
    memory: &SimMemory,
    frames: &mut SimFrames,
) -> (PageTable<Stage2Format>, Stage2Config) {
    let s2 = PageTable::new(frames, Stage2Format::default(), levels_4k(40), 40).unwrap();
    for page in 0..4u64 {
        s2.map(
            memory,
            frames,
            page << 12,
            0x300_0000 + (page << 12),
            PageSize::Size4K,
            Perms::READ_WRITE,
        )
        .unwrap();
    }
    let config = Stage2Config {
        vmid: 3,
        table: s2.root(),
        ipa_bits: 40,
        output_bits: 44,
    };
    (s2, config)
}

#[test]
fn smmu_unmap_is_stale_until_flush() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..64)
        .unwrap();
    let (s2, config) = stage2_smmu(&memory, &mut frames);
    smmu.attach_stage2(&memory, &mut frames, SMMU_EDU, &config)
        .unwrap();
    assert_eq!(
        device.dma(request(0x1008, Access::Write, None)),
        Outcome::Translated(0x300_1008)
    );
    s2.unmap(&memory, 0x1000).unwrap();
    assert_eq!(
        device.dma(request(0x1008, Access::Write, None)),
        Outcome::Translated(0x300_1008)
    );
    let mut batch = InvalidationBatch::new();
    batch.add(
        InvalidationTarget::SmmuStage2 {
            vmid: 3,
            nested: false,
        },
        0x1000,
        0x1000,
    );
    assert_eq!(smmu.flush(&memory, &batch).unwrap().waits, 1);
    match device.dma(request(0x1008, Access::Write, None)) {
        Outcome::Fault(event) => {
            assert_eq!((event.kind, event.stage2), (EventKind::Translation, true))
        }
        other => panic!("{other:?}"),
    }
    // Detaching the device takes effect at once (CFGI_STE + CMD_SYNC).
    assert!(matches!(
        device.dma(request(0x2000, Access::Read, None)),
        Outcome::Translated(_)
    ));
    smmu.block_stream(&memory, &mut frames, SMMU_EDU).unwrap();
    assert!(matches!(
        device.dma(request(0x2000, Access::Read, None)),
        Outcome::Fault(e) if e.kind == EventKind::BadSte
    ));
}

#[test]
fn smmu_nested_second_stage_change_needs_nh_all() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..64)
        .unwrap();
    let nested = build_nested_smmu(&memory, &mut frames);
    let cd = Cd::new(&cd_params(nested.stage1_root_ipa, 1), smmu.features()).unwrap();
    smmu.write_cd(&memory, nested.cd_page, SMMU_EDU, 0, &cd)
        .unwrap();
    smmu.attach_nested(&memory, &mut frames, SMMU_EDU, &nested.stage2, CD_IPA)
        .unwrap();
    let va = 0x1000_0010;
    assert_eq!(
        device.dma(request(va, Access::Read, None)),
        Outcome::Translated(SMMU_GUEST + 0x20_0010)
    );
    // Revoke IPA page 0x200000 from stage 2.
    nested.stage2_table.unmap(&memory, 0x20_0000).unwrap();
    let mut by_ipa = InvalidationBatch::new();
    by_ipa.add(
        InvalidationTarget::SmmuStage2 {
            vmid: 1,
            nested: false,
        },
        0x20_0000,
        0x1000,
    );
    smmu.flush(&memory, &by_ipa).unwrap();
    // TLBI_S2_IPA alone leaves the combined stage-1+2 entry.
    assert_eq!(
        device.dma(request(va, Access::Read, None)),
        Outcome::Translated(SMMU_GUEST + 0x20_0010)
    );
    let mut nested_batch = InvalidationBatch::new();
    nested_batch.add(
        InvalidationTarget::SmmuStage2 {
            vmid: 1,
            nested: true,
        },
        0x20_0000,
        0x1000,
    );
    let stats = smmu.flush(&memory, &nested_batch).unwrap();
    assert_eq!((stats.commands, stats.waits), (2, 1));
    match device.dma(request(va, Access::Read, None)) {
        Outcome::Fault(event) => {
            assert_eq!((event.kind, event.stage2), (EventKind::Translation, true))
        }
        other => panic!("{other:?}"),
    }
}
