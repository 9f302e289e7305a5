//! VT-d encoders against the translation model: legacy, scalable
//! first-stage, second-stage, nested (NEST=1 and QEMU mode), pass-through,
//! PASID-tagged requests, and batched invalidation.

use super::common::{GuestFrames, GuestView, MIB};
use crate::invalidation::{InvalidationBatch, InvalidationTarget};
use crate::model::vtd::{Request, reason};
use crate::model::vtd_device::{NESTING_ECAP, QEMU_CAP, QEMU_ECAP, QEMU_FLTS_ECAP, SimVtd};
use crate::model::{Access, SimFrames, SimMemory};
use crate::pagetable::{PageSize, PageTable, Perms};
use crate::vtd::regs::RootTableMode;
use crate::vtd::tables::{
    FirstStageFormat, LegacyContext, PasidConfig, SecondStageFormat, SecondStageLevels,
};
use crate::vtd::{VtdError, VtdUnit};

const EDU: u16 = 0x0010; // 00:02.0
const SCALABLE_SS_ECAP: u64 = QEMU_ECAP | 1 << 43 | 1 << 46 | 1 << 31;
/// `aw-bits=39`: SAGAW 3-level only, MGAW 39.
const QEMU_CAP_39: u64 = (QEMU_CAP & !(0x1f << 8) & !(0x3f << 16)) | 0x2 << 8 | 38 << 16;

fn request(address: u64, access: Access) -> Request {
    Request {
        source_id: EDU,
        pasid: None,
        address,
        access,
    }
}

fn second_stage(
    memory: &SimMemory,
    frames: &mut SimFrames,
    cap: u64,
    levels: SecondStageLevels,
) -> PageTable<SecondStageFormat> {
    let format = SecondStageFormat::for_unit(crate::vtd::regs::Capability(cap));
    let table = PageTable::new(frames, format, levels.height(), levels.input_bits()).unwrap();
    table
        .map(
            memory,
            frames,
            0x4_0000,
            0x300_0000,
            PageSize::Size4K,
            Perms::READ_WRITE,
        )
        .unwrap();
    table
        .map(
            memory,
            frames,
            0x5_0000,
            0x301_0000,
            PageSize::Size4K,
            Perms::READ,
        )
        .unwrap();
    table
        .map(
            memory,
            frames,
            0x20_0000,
            0x400_0000,
            PageSize::Size2M,
            Perms::WRITE,
        )
        .unwrap();
    table
}

#[test]
fn legacy_second_stage_four_and_three_levels() {
    for (cap, levels) in [
        (QEMU_CAP, SecondStageLevels::Four),
        (QEMU_CAP_39, SecondStageLevels::Three),
    ] {
        let memory = SimMemory::new(256 * MIB);
        let device = SimVtd::new(&memory, cap, QEMU_ECAP, true);
        let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
        let mut unit = VtdUnit::new(&device);
        unit.block_all_dma(&memory, &mut frames, RootTableMode::Legacy)
            .unwrap();
        let table = second_stage(&memory, &mut frames, cap, levels);
        let context = LegacyContext::Translated {
            domain: 7,
            table: table.root(),
            levels,
        };
        unit.set_legacy_context(&memory, &mut frames, EDU, Some(context))
            .unwrap();

        assert_eq!(device.dma(request(0x4_0123, Access::Write)), Ok(0x300_0123));
        assert_eq!(device.dma(request(0x5_0010, Access::Read)), Ok(0x301_0010));
        assert_eq!(
            device.dma(request(0x5_0010, Access::Write)),
            Err(reason::WRITE)
        );
        assert_eq!(
            device.dma(request(0x6_0000, Access::Read)),
            Err(reason::READ)
        );
        assert_eq!(
            device.dma(request(0x21_2345, Access::Write)),
            Ok(0x401_2345)
        );
        assert_eq!(
            device.dma(request(0x21_2345, Access::Read)),
            Err(reason::READ)
        );
        // Beyond the adjusted width.
        let beyond = 1u64 << levels.input_bits();
        assert_eq!(
            device.dma(request(beyond, Access::Read)),
            Err(reason::ADDRESS_BEYOND_WIDTH)
        );
        // Another device on the bus has no context entry.
        let other = Request {
            source_id: 0x0018,
            ..request(0x4_0000, Access::Read)
        };
        assert_eq!(device.dma(other), Err(reason::CONTEXT_NOT_PRESENT));
        // Detach: blocked again.
        unit.set_legacy_context(&memory, &mut frames, EDU, None)
            .unwrap();
        assert_eq!(
            device.dma(request(0x4_0123, Access::Write)),
            Err(reason::CONTEXT_NOT_PRESENT)
        );
        assert!(!unit.read_faults().is_empty());
    }
}

#[test]
fn legacy_refuses_depth_outside_sagaw_and_wide_domain() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP_39, QEMU_ECAP, true);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut frames, RootTableMode::Legacy)
        .unwrap();
    let four = LegacyContext::Translated {
        domain: 1,
        table: 0x100_0000,
        levels: SecondStageLevels::Four,
    };
    assert!(matches!(
        unit.set_legacy_context(&memory, &mut frames, EDU, Some(four)),
        Err(VtdError::Unsupported { .. })
    ));
    let narrow = VtdUnit::new(SimVtd::new(&memory, QEMU_CAP & !7, QEMU_ECAP, true));
    assert_eq!(narrow.capability().domain_id_bits(), 4);
    let wide = crate::vtd::tables::legacy_context_entry(
        LegacyContext::PassThrough { domain: 16 },
        narrow.capability(),
        narrow.extended_capability(),
    );
    assert!(matches!(wide, Err(VtdError::InvalidParameter { .. })));
}

#[test]
fn legacy_pass_through() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::qemu_default(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut frames, RootTableMode::Legacy)
        .unwrap();
    unit.set_legacy_context(
        &memory,
        &mut frames,
        EDU,
        Some(LegacyContext::PassThrough { domain: 2 }),
    )
    .unwrap();
    assert_eq!(
        device.dma(request(0x1234_5678, Access::Write)),
        Ok(0x1234_5678)
    );
}

#[test]
fn scalable_second_stage_via_rid_pasid() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, SCALABLE_SS_ECAP, true);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut frames, RootTableMode::Scalable)
        .unwrap();
    let table = second_stage(&memory, &mut frames, QEMU_CAP, SecondStageLevels::Four);
    let config = PasidConfig::SecondStage {
        domain: 3,
        table: table.root(),
        levels: SecondStageLevels::Four,
    };
    // Upper half of the root entry too (devfn >= 128).
    for sid in [EDU, 0x0190] {
        unit.set_pasid_entry(&memory, &mut frames, sid, 0, Some(config))
            .unwrap();
        let r = Request {
            source_id: sid,
            ..request(0x4_0008, Access::Write)
        };
        assert_eq!(device.dma(r), Ok(0x300_0008));
    }
    // QEMU reports scalable-mode second-stage faults with the legacy codes.
    assert_eq!(
        device.dma(request(0x5_0000, Access::Write)),
        Err(reason::WRITE)
    );
    assert_eq!(
        device.dma(request(0x7_0000, Access::Read)),
        Err(reason::READ)
    );
    device.set_qemu_mode(false);
    assert_eq!(
        device.dma(request(0x5_0000, Access::Write)),
        Err(reason::SM_WRITE)
    );
    assert_eq!(
        device.dma(request(0x7_0000, Access::Read)),
        Err(reason::SM_READ)
    );
    let counts = device.counts.get();
    assert!(counts.pasid_cache >= 2 && counts.pasid_iotlb >= 2);
    // First stage is not offered by this unit.
    let fs = PasidConfig::FirstStage {
        domain: 3,
        table: table.root(),
    };
    assert!(matches!(
        unit.set_pasid_entry(&memory, &mut frames, EDU, 0, Some(fs)),
        Err(VtdError::Unsupported { .. })
    ));
    // PASID beyond what a unit without ECAP.PASID supports.
    assert!(
        unit.set_pasid_entry(&memory, &mut frames, EDU, 1, Some(config))
            .is_err()
    );
}

fn first_stage_table(memory: &SimMemory, frames: &mut SimFrames) -> PageTable<FirstStageFormat> {
    let format = FirstStageFormat::for_unit(crate::vtd::regs::Capability(QEMU_CAP | 1 << 56));
    let table = PageTable::new(frames, format, 4, 48).unwrap();
    table
        .map(
            memory,
            frames,
            0x20_0000,
            0x500_0000,
            PageSize::Size4K,
            Perms::READ_WRITE,
        )
        .unwrap();
    table
        .map(
            memory,
            frames,
            0x20_1000,
            0x500_1000,
            PageSize::Size4K,
            Perms::READ,
        )
        .unwrap();
    table
        .map(
            memory,
            frames,
            0x4000_0000,
            0x4000_0000,
            PageSize::Size1G,
            Perms::READ_WRITE,
        )
        .unwrap();
    table
}

#[test]
fn scalable_first_stage_like_qemu_flts() {
    let memory = SimMemory::new(2048 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP | 1 << 56, QEMU_FLTS_ECAP, true);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut frames, RootTableMode::Scalable)
        .unwrap();
    let table = first_stage_table(&memory, &mut frames);
    let config = PasidConfig::FirstStage {
        domain: 9,
        table: table.root(),
    };
    unit.set_pasid_entry(&memory, &mut frames, EDU, 0, Some(config))
        .unwrap();
    assert_eq!(
        device.dma(request(0x20_0040, Access::Write)),
        Ok(0x500_0040)
    );
    assert_eq!(device.dma(request(0x20_1040, Access::Read)), Ok(0x500_1040));
    assert_eq!(
        device.dma(request(0x20_1040, Access::Write)),
        Err(reason::SM_WRITE)
    );
    assert_eq!(
        device.dma(request(0x30_0000, Access::Read)),
        Err(reason::FS_NOT_PRESENT)
    );
    assert_eq!(
        device.dma(request(0x4123_4567, Access::Read)),
        Ok(0x4123_4567)
    );
    assert_eq!(
        device.dma(request(1 << 50, Access::Read)),
        Err(reason::FS_NON_CANONICAL)
    );
    // PASID-tagged request (QEMU sends none, hardware may): PASID 1 has no entry.
    let tagged = Request {
        pasid: Some(1),
        ..request(0x20_0040, Access::Read)
    };
    assert_eq!(device.dma(tagged), Err(reason::SM_PASID_NOT_PRESENT));
    // Nested is refused by the encoder on a unit without ECAP.NEST.
    let nested = PasidConfig::Nested {
        domain: 9,
        first_stage_table: table.root(),
        second_stage_table: table.root(),
        levels: SecondStageLevels::Four,
    };
    assert!(matches!(
        unit.set_pasid_entry(&memory, &mut frames, EDU, 0, Some(nested)),
        Err(VtdError::Unsupported { .. })
    ));
}

/// Builds the nested setup: a second stage mapping guest-physical
/// `0..64 MiB` to physical `GUEST_BASE..`, and a first stage written in
/// guest-physical addresses by the "driver".
pub(super) struct NestedVtd {
    pub second: PageTable<SecondStageFormat>,
    pub first_root_gpa: u64,
}

pub(super) const GUEST_BASE: u64 = 128 * MIB;
pub(super) const GUEST_SIZE: u64 = 4 * MIB;

pub(super) fn build_nested_vtd(memory: &SimMemory, frames: &mut SimFrames) -> NestedVtd {
    let format = SecondStageFormat::for_unit(crate::vtd::regs::Capability(QEMU_CAP));
    let second = PageTable::new(frames, format, 4, 48).unwrap();
    for page in 0..GUEST_SIZE / 4096 {
        let perms = if page % 2 == 0 {
            Perms::READ_WRITE
        } else {
            Perms::READ
        };
        second
            .map(
                memory,
                frames,
                page * 4096,
                GUEST_BASE + page * 4096,
                PageSize::Size4K,
                perms,
            )
            .unwrap();
    }
    let view = GuestView {
        memory,
        offset: GUEST_BASE,
    };
    let mut guest_frames = GuestFrames {
        view: &view,
        next: 0,
        end: MIB,
    };
    let format = FirstStageFormat::for_unit(crate::vtd::regs::Capability(QEMU_CAP));
    let first = PageTable::new(&mut guest_frames, format, 4, 48).unwrap();
    // IOVA 0x1000_0000 -> GPA 0x20_0000 (even page: RW in stage 2), and
    // IOVA 0x1000_1000 -> GPA 0x20_1000 (odd page: read-only in stage 2).
    first
        .map(
            &view,
            &mut guest_frames,
            0x1000_0000,
            0x20_0000,
            PageSize::Size4K,
            Perms::READ_WRITE,
        )
        .unwrap();
    first
        .map(
            &view,
            &mut guest_frames,
            0x1000_1000,
            0x20_1000,
            PageSize::Size4K,
            Perms::READ_WRITE,
        )
        .unwrap();
    // Outside the stage-2 image.
    first
        .map(
            &view,
            &mut guest_frames,
            0x1000_2000,
            0x800_0000,
            PageSize::Size4K,
            Perms::READ_WRITE,
        )
        .unwrap();
    NestedVtd {
        second,
        first_root_gpa: first.root(),
    }
}

#[test]
fn scalable_nested_translates_on_nest_hardware_and_faults_5b_in_qemu_mode() {
    for qemu_mode in [false, true] {
        let memory = SimMemory::new(256 * MIB);
        let device = SimVtd::new(&memory, QEMU_CAP, NESTING_ECAP, qemu_mode);
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
        for pasid in [0, 5] {
            unit.set_pasid_entry(&memory, &mut frames, EDU, pasid, Some(config))
                .unwrap();
        }
        let tagged = |address, access, pasid| Request {
            pasid,
            ..request(address, access)
        };
        if qemu_mode {
            assert_eq!(device.dma(request(0x1000_0010, Access::Read)), Err(0x5b));
            let fault = unit.read_faults().get(0).unwrap();
            assert_eq!((fault.reason, fault.source_id), (0x5b, EDU));
            continue;
        }
        for pasid in [None, Some(5)] {
            assert_eq!(
                device.dma(tagged(0x1000_0010, Access::Write, pasid)),
                Ok(GUEST_BASE + 0x20_0010)
            );
            assert_eq!(
                device.dma(tagged(0x1000_1010, Access::Read, pasid)),
                Ok(GUEST_BASE + 0x20_1010)
            );
            // First stage allows the write, stage 2 does not.
            assert_eq!(
                device.dma(tagged(0x1000_1010, Access::Write, pasid)),
                Err(reason::SM_WRITE)
            );
            // First stage points outside the stage-2 image.
            assert_eq!(
                device.dma(tagged(0x1000_2000, Access::Read, pasid)),
                Err(reason::SM_READ)
            );
        }
        // A PASID without an entry, and PASID-tagged faults carry the PASID.
        assert_eq!(
            device.dma(tagged(0x1000_0000, Access::Read, Some(6))),
            Err(reason::SM_PASID_NOT_PRESENT)
        );
        let faults = unit.read_faults();
        assert!(
            faults
                .iter()
                .any(|f| f.pasid == Some(6) || f.pasid == Some(5))
                || faults.dropped > 0
        );
    }
}

#[test]
fn scalable_pass_through() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, NESTING_ECAP, false);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut frames, RootTableMode::Scalable)
        .unwrap();
    unit.set_pasid_entry(
        &memory,
        &mut frames,
        EDU,
        0,
        Some(PasidConfig::PassThrough { domain: 1 }),
    )
    .unwrap();
    assert_eq!(
        device.dma(request(0xabc_d000, Access::Write)),
        Ok(0xabc_d000)
    );
    unit.set_pasid_entry(&memory, &mut frames, EDU, 0, None)
        .unwrap();
    assert_eq!(
        device.dma(request(0xabc_d000, Access::Write)),
        Err(reason::SM_PASID_NOT_PRESENT)
    );
}

#[test]
fn batched_invalidation_one_wait_and_counted() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, NESTING_ECAP, false);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut frames, RootTableMode::Scalable)
        .unwrap();
    let before = device.counts.get();
    let mut batch = InvalidationBatch::new();
    // 3 pages at 0x3000 -> chunks (0x3000, 0), (0x4000, 1): 2 descriptors.
    batch.add(
        InvalidationTarget::VtdDomain {
            domain: 1,
            nested: false,
        },
        0x3000,
        0x3000,
    );
    // 2 MiB aligned: one descriptor with AM=9.
    batch.add(
        InvalidationTarget::VtdPasid {
            domain: 1,
            pasid: 5,
        },
        0x20_0000,
        0x20_0000,
    );
    // Huge range: domain-selective instead.
    batch.add(
        InvalidationTarget::VtdDomain {
            domain: 2,
            nested: false,
        },
        0x1000,
        0x1_0000_0000,
    );
    let stats = unit.flush(&memory, &batch).unwrap();
    assert_eq!(stats.commands, 4);
    assert_eq!(stats.waits, 1);
    let after = device.counts.get();
    assert_eq!(after.wait - before.wait, 1);
    assert_eq!(after.iotlb - before.iotlb, 3);
    assert_eq!(after.pasid_iotlb - before.pasid_iotlb, 1);
    let mut smmu_batch = InvalidationBatch::new();
    smmu_batch.add(
        InvalidationTarget::SmmuStage2 {
            vmid: 1,
            nested: false,
        },
        0,
        4096,
    );
    assert!(unit.flush(&memory, &smmu_batch).is_err());
    assert_eq!(
        unit.flush(&memory, &InvalidationBatch::new())
            .unwrap()
            .waits,
        0
    );
}

#[test]
fn legacy_bad_table_pointers() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::qemu_default(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut frames, RootTableMode::Legacy)
        .unwrap();
    // A second-stage root outside memory: invalid context entry.
    let context = LegacyContext::Translated {
        domain: 1,
        table: 1 << 40,
        levels: SecondStageLevels::Four,
    };
    unit.set_legacy_context(&memory, &mut frames, EDU, Some(context))
        .unwrap();
    assert_eq!(
        device.dma(request(0x1000, Access::Read)),
        Err(reason::CONTEXT_INVALID)
    );
    // A lower-level table outside memory: paging entry access error.
    let table = PageTable::new(
        &mut frames,
        SecondStageFormat::for_unit(crate::vtd::regs::Capability(QEMU_CAP)),
        4,
        48,
    )
    .unwrap();
    crate::PhysMem::write_u64(&memory, table.root(), (1 << 40) | 3);
    let context = LegacyContext::Translated {
        domain: 1,
        table: table.root(),
        levels: SecondStageLevels::Four,
    };
    unit.set_legacy_context(&memory, &mut frames, EDU, Some(context))
        .unwrap();
    assert_eq!(
        device.dma(request(0x1000, Access::Read)),
        Err(reason::PAGING_ACCESS)
    );
}

#[test]
fn unchecked_nested_entry_for_qemu_cross_checks() {
    use crate::vtd::tables::PasidEntry;
    let entry = PasidEntry::encode_unchecked(PasidConfig::Nested {
        domain: 3,
        first_stage_table: 0x1000,
        second_stage_table: 0x2000,
        levels: SecondStageLevels::Four,
    });
    assert_eq!((entry.pgtt(), entry.domain()), (0b011, 3));
    assert_eq!(entry.0[2] & !0xfff, 0x1000);
}
