//! SMMUv3 encoders against the translation model: stage 2 only, nested
//! (CD fetch and stage-1 walk through stage 2), substreams, bypass, abort,
//! fault events with stage and class, and batched invalidation.

use super::common::{GuestFrames, GuestView, MIB};
use crate::invalidation::{InvalidationBatch, InvalidationTarget};
use crate::model::smmu::{Outcome, SmmuRequest};
use crate::model::smmu_device::SimSmmu;
use crate::model::{Access, SimFrames, SimMemory};
use crate::pagetable::{PageSize, PageTable, Perms};
use crate::smmuv3::cd::{Cd, CdError, CdParams, DEFAULT_MAIR};
use crate::smmuv3::pagetable::{Stage1Format, Stage2Format, levels_4k};
use crate::smmuv3::queue::{Command, EventKind, FaultClass, opcode};
use crate::smmuv3::regs::{Features, Idr1};
use crate::smmuv3::ste::{Stage2Config, Ste, SteError};
use crate::smmuv3::{BlockPolicy, Smmu};
use crate::{FrameAllocator, PhysMem};

pub(super) const EDU: u32 = 0x10;
pub(super) const GUEST_BASE: u64 = 128 * MIB;
pub(super) const GUEST_SIZE: u64 = 4 * MIB;
pub(super) const CD_IPA: u64 = 0x100_0000;

pub(super) fn request(address: u64, access: Access, substream_id: Option<u32>) -> SmmuRequest {
    SmmuRequest {
        stream_id: EDU,
        substream_id,
        address,
        access,
    }
}

/// Stage 2: guest-physical 0..4 MiB -> GUEST_BASE (even pages RW, odd RO),
/// plus the CD page read-only at CD_IPA.
pub(super) struct NestedSmmu {
    pub stage2: Stage2Config,
    pub stage2_table: PageTable<Stage2Format>,
    pub cd_page: u64,
    pub stage1_root_ipa: u64,
}

pub(super) fn build_nested_smmu(memory: &SimMemory, frames: &mut SimFrames) -> NestedSmmu {
    let s2 = PageTable::new(frames, Stage2Format::default(), levels_4k(40), 40).unwrap();
    for page in 0..GUEST_SIZE / 4096 {
        let perms = if page % 2 == 0 {
            Perms::READ_WRITE
        } else {
            Perms::READ
        };
        s2.map(
            memory,
            frames,
            page * 4096,
            GUEST_BASE + page * 4096,
            PageSize::Size4K,
            perms,
        )
        .unwrap();
    }
    let cd_page = frames.alloc_zeroed_frame().unwrap();
    s2.map(
        memory,
        frames,
        CD_IPA,
        cd_page,
        PageSize::Size4K,
        Perms::READ,
    )
    .unwrap();
    let view = GuestView {
        memory,
        offset: GUEST_BASE,
    };
    let mut guest_frames = GuestFrames {
        view: &view,
        next: 0,
        end: MIB,
    };
    let s1 = PageTable::new(&mut guest_frames, Stage1Format, levels_4k(48), 48).unwrap();
    s1.map(
        &view,
        &mut guest_frames,
        0x1000_0000,
        0x20_0000,
        PageSize::Size4K,
        Perms::READ_WRITE,
    )
    .unwrap();
    s1.map(
        &view,
        &mut guest_frames,
        0x1000_1000,
        0x20_1000,
        PageSize::Size4K,
        Perms::READ_WRITE,
    )
    .unwrap();
    s1.map(
        &view,
        &mut guest_frames,
        0x1000_2000,
        0x800_0000,
        PageSize::Size4K,
        Perms::READ_WRITE,
    )
    .unwrap();
    s1.map(
        &view,
        &mut guest_frames,
        0x1000_3000,
        0x20_2000,
        PageSize::Size4K,
        Perms::READ,
    )
    .unwrap();
    // A level-0 table descriptor whose next table lies outside stage 2.
    view.write_u64(s1.root() + 8 * 5, 0x900_0000 | 0b11);
    NestedSmmu {
        stage2_table: s2,
        stage2: Stage2Config {
            vmid: 1,
            table: s2.root(),
            ipa_bits: 40,
            output_bits: 44,
        },
        cd_page,
        stage1_root_ipa: s1.root(),
    }
}

pub(super) fn cd_params(ttb0: u64, asid: u16) -> CdParams {
    CdParams {
        asid,
        ttb0,
        va_bits: 48,
        output_bits: 40,
        mair: DEFAULT_MAIR,
    }
}

fn fault(outcome: Outcome) -> crate::smmuv3::queue::Event {
    match outcome {
        Outcome::Fault(event) => event,
        other => panic!("expected a fault, got {other:?}"),
    }
}

#[test]
fn stage2_only() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..256)
        .unwrap();
    let nested = build_nested_smmu(&memory, &mut frames);
    smmu.attach_stage2(&memory, &mut frames, EDU, &nested.stage2)
        .unwrap();
    assert_eq!(
        device.dma(request(0x20_0010, Access::Write, None)),
        Outcome::Translated(GUEST_BASE + 0x20_0010)
    );
    let event = fault(device.dma(request(0x20_1010, Access::Write, None)));
    assert_eq!(event.kind, EventKind::Permission);
    assert!(event.stage2 && !event.read);
    assert_eq!(
        (event.class, event.address, event.stream_id),
        (FaultClass::Input, 0x20_1000, EDU)
    );
    let event = fault(device.dma(request(0x80_0000, Access::Read, None)));
    assert_eq!((event.kind, event.stage2), (EventKind::Translation, true));
    // Beyond the 40-bit IPA space.
    let event = fault(device.dma(request(1 << 41, Access::Read, None)));
    assert_eq!(event.kind, EventKind::Translation);
    // A substream on a stage-2-only STE.
    assert_eq!(
        fault(device.dma(request(0, Access::Read, Some(1)))).kind,
        EventKind::BadSubstreamId
    );
    let drained = smmu.drain_events(&memory);
    assert_eq!(drained.events.len(), 4);
    assert!(std::format!("{}", drained.events.get(0).unwrap()).contains("F_PERMISSION"));
}

#[test]
fn nested_stage1_through_stage2() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..256)
        .unwrap();
    let nested = build_nested_smmu(&memory, &mut frames);
    let cd = Cd::new(&cd_params(nested.stage1_root_ipa, 1), smmu.features()).unwrap();
    smmu.write_cd(&memory, nested.cd_page, EDU, 0, &cd).unwrap();
    smmu.attach_nested(&memory, &mut frames, EDU, &nested.stage2, CD_IPA)
        .unwrap();
    assert_eq!(device.command_count(opcode::CFGI_CD), 1);

    assert_eq!(
        device.dma(request(0x1000_0010, Access::Write, None)),
        Outcome::Translated(GUEST_BASE + 0x20_0010)
    );
    assert_eq!(
        device.dma(request(0x1000_1010, Access::Read, None)),
        Outcome::Translated(GUEST_BASE + 0x20_1010)
    );
    // Stage 1 allows the write, stage 2 refuses it.
    let event = fault(device.dma(request(0x1000_1010, Access::Write, None)));
    assert_eq!(
        (event.kind, event.stage2, event.class),
        (EventKind::Permission, true, FaultClass::Input)
    );
    assert_eq!(
        (event.input_address, event.address),
        (0x1000_1010, 0x20_1000)
    );
    // Stage 1 read-only page.
    let event = fault(device.dma(request(0x1000_3000, Access::Write, None)));
    assert_eq!((event.kind, event.stage2), (EventKind::Permission, false));
    // Stage 1 output outside the stage-2 image.
    let event = fault(device.dma(request(0x1000_2000, Access::Read, None)));
    assert_eq!(
        (event.kind, event.stage2, event.address),
        (EventKind::Translation, true, 0x800_0000)
    );
    // Stage 1 unmapped.
    let event = fault(device.dma(request(0x2000_0000, Access::Read, None)));
    assert_eq!((event.kind, event.stage2), (EventKind::Translation, false));
    // Stage-1 table pointer outside stage 2: the table fetch faults.
    let event = fault(device.dma(request(5 << 39, Access::Read, None)));
    assert_eq!(
        (event.kind, event.stage2, event.class),
        (EventKind::Translation, true, FaultClass::TranslationTable)
    );
    // CD table at an IPA stage 2 does not map: the CD fetch faults.
    smmu.attach_nested(&memory, &mut frames, EDU, &nested.stage2, 0x200_0000)
        .unwrap();
    let event = fault(device.dma(request(0x1000_0010, Access::Read, None)));
    assert_eq!(
        (event.kind, event.stage2, event.class),
        (EventKind::Translation, true, FaultClass::ContextDescriptor)
    );
    // An invalid CD.
    smmu.write_cd(&memory, nested.cd_page, EDU, 0, &Cd::invalid())
        .unwrap();
    smmu.attach_nested(&memory, &mut frames, EDU, &nested.stage2, CD_IPA)
        .unwrap();
    assert_eq!(
        fault(device.dma(request(0x1000_0010, Access::Read, None))).kind,
        EventKind::BadCd
    );
}

#[test]
fn substreams_on_hardware_with_ssids_and_refused_on_qemu() {
    let memory = SimMemory::new(256 * MIB);
    let features = Features {
        idr1: Idr1(Features::QEMU.idr1.0 | 5 << 6),
        ..Features::QEMU
    };
    let device = SimSmmu::new(&memory, features);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..256)
        .unwrap();
    let nested = build_nested_smmu(&memory, &mut frames);
    let cd0 = Cd::new(&cd_params(nested.stage1_root_ipa, 1), &features).unwrap();
    // CD 1: a stage-1 table whose root has nothing mapped (fresh guest page).
    let empty_root = 0x8_0000;
    let cd1 = Cd::new(&cd_params(empty_root, 2), &features).unwrap();
    smmu.write_cd(&memory, nested.cd_page, EDU, 0, &cd0)
        .unwrap();
    smmu.write_cd(&memory, nested.cd_page, EDU, 1, &cd1)
        .unwrap();
    let ste = Ste::nested_with_substreams(&nested.stage2, CD_IPA, 2, &features).unwrap();
    smmu.install_ste(&memory, &mut frames, EDU, &ste).unwrap();
    let ok = Outcome::Translated(GUEST_BASE + 0x20_0010);
    assert_eq!(device.dma(request(0x1000_0010, Access::Read, None)), ok);
    assert_eq!(device.dma(request(0x1000_0010, Access::Read, Some(0))), ok);
    let event = fault(device.dma(request(0x1000_0010, Access::Read, Some(1))));
    assert_eq!(
        (event.kind, event.substream_id),
        (EventKind::Translation, Some(1))
    );
    assert_eq!(
        fault(device.dma(request(0, Access::Read, Some(4)))).kind,
        EventKind::BadSubstreamId
    );
    // QEMU 10.0.2 has SSIDSIZE=0: the same STE is refused by the encoder.
    assert_eq!(
        Ste::nested_with_substreams(&nested.stage2, CD_IPA, 2, &Features::QEMU),
        Err(SteError::TooManyContextDescriptors(2))
    );
}

#[test]
fn bypass_and_abort() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..256)
        .unwrap();
    smmu.install_ste(&memory, &mut frames, EDU, &Ste::bypass())
        .unwrap();
    assert_eq!(
        device.dma(request(0x4567_8000, Access::Write, None)),
        Outcome::Translated(0x4567_8000)
    );
    smmu.install_ste(&memory, &mut frames, EDU, &Ste::abort())
        .unwrap();
    assert_eq!(
        device.dma(request(0x4567_8000, Access::Write, None)),
        Outcome::Aborted
    );
    smmu.block_stream(&memory, &mut frames, EDU).unwrap();
    assert_eq!(
        fault(device.dma(request(0, Access::Read, None))).kind,
        EventKind::BadSte
    );
    // A StreamID beyond the populated range gets its level-2 array on demand.
    smmu.install_ste(&memory, &mut frames, 0x4000, &Ste::bypass())
        .unwrap();
    let far = SmmuRequest {
        stream_id: 0x4000,
        ..request(0x1000, Access::Read, None)
    };
    assert_eq!(device.dma(far), Outcome::Translated(0x1000));
    assert!(
        smmu.install_ste(&memory, &mut frames, 1 << 15, &Ste::bypass())
            .is_err()
    );
}

#[test]
fn cd_parameters_are_validated() {
    let features = Features::QEMU;
    assert!(Cd::new(&cd_params(0x1000, 1), &features).unwrap().valid());
    assert_eq!(
        Cd::new(
            &CdParams {
                va_bits: 49,
                ..cd_params(0x1000, 1)
            },
            &features
        ),
        Err(CdError::InputSize(49))
    );
    assert_eq!(
        Cd::new(
            &CdParams {
                output_bits: 48,
                ..cd_params(0x1000, 1)
            },
            &features
        ),
        Err(CdError::OutputSize(48))
    );
    assert_eq!(
        Cd::new(&cd_params(0x1001, 1), &features),
        Err(CdError::TableAddress(0x1001))
    );
    let asid8 = Features {
        idr0: crate::smmuv3::regs::Idr0(features.idr0.0 & !(1 << 12)),
        ..features
    };
    assert_eq!(
        Cd::new(&cd_params(0x1000, 0x100), &asid8),
        Err(CdError::AsidTooWide(0x100))
    );
}

#[test]
fn batched_invalidation_one_sync_and_counted() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..64)
        .unwrap();
    let syncs = device.command_count(opcode::SYNC);
    let mut batch = InvalidationBatch::new();
    batch.add(
        InvalidationTarget::SmmuStage2 {
            vmid: 1,
            nested: true,
        },
        0x1000,
        0x3000,
    );
    batch.add(
        InvalidationTarget::SmmuStage1 { vmid: 1, asid: 3 },
        0x7000,
        0x1000,
    );
    batch.add(
        InvalidationTarget::SmmuStage2 {
            vmid: 2,
            nested: false,
        },
        0,
        1 << 30,
    );
    let stats = smmu.flush(&memory, &batch).unwrap();
    // 3 S2_IPA + NH_ALL, 1 NH_VA, 1 S12_VMALL.
    assert_eq!(
        stats,
        crate::invalidation::InvalidationStats {
            commands: 6,
            waits: 1
        }
    );
    assert_eq!(device.command_count(opcode::SYNC) - syncs, 1);
    assert_eq!(device.command_count(opcode::TLBI_S2_IPA), 3);
    assert_eq!(device.command_count(opcode::TLBI_NH_ALL), 1);
    assert_eq!(device.command_count(opcode::TLBI_NH_VA), 1);
    assert_eq!(device.command_count(opcode::TLBI_S12_VMALL), 1);
    // A batch larger than the 256-entry queue still completes (queue wraps).
    let mut big = InvalidationBatch::new();
    for i in 0..32 {
        big.add(
            InvalidationTarget::SmmuStage1 { vmid: 1, asid: 1 },
            i << 20,
            16 << 12,
        );
    }
    let stats = smmu.flush(&memory, &big).unwrap();
    assert_eq!(
        stats,
        crate::invalidation::InvalidationStats {
            commands: 512,
            waits: 1
        }
    );
}

/// `invalidate_asid` (`CommandQueue::submit_one`) writes its command and CMD_SYNC after one room test when
/// CONS shows room for both, and pushes them one by one (waiting for
/// room) when it does not: every queued command is still processed, none
/// overwritten, across the wrap and with one free entry left; and it
/// returns success only once CONS has passed its CMD_SYNC.
#[test]
fn one_command_and_its_sync_wrap_and_wait_for_room() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device).with_poll_limit(crate::PollLimit(8));
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..64)
        .unwrap();
    let syncs = device.command_count(opcode::SYNC);
    // 300 pairs: the 256-entry queue wraps twice, pair by pair.
    for n in 0..300 {
        smmu.invalidate_asid(&memory, 1, n).unwrap();
    }
    assert_eq!(device.command_count(opcode::TLBI_NH_ASID), 300);
    assert_eq!(device.command_count(opcode::SYNC) - syncs, 300);
    // Fill the queue to one free entry while the unit stops consuming:
    // 254 TLBI_NH_ALL and a CMD_SYNC that is never waited for.
    device.stall_commands.set(true);
    let fill = [Command::TlbiNhAll { vmid: 1 }; 254];
    assert!(smmu.submit(&memory, fill).is_err());
    assert_eq!(device.command_count(opcode::TLBI_NH_ALL), 0);
    // Room for one: the TLBI goes in, the CMD_SYNC waits for the unit.
    device.stall_commands.set(false);
    smmu.invalidate_asid(&memory, 1, 300).unwrap();
    assert_eq!(device.command_count(opcode::TLBI_NH_ALL), 254);
    assert_eq!(device.command_count(opcode::TLBI_NH_ASID), 301);
    assert_eq!(device.command_count(opcode::SYNC) - syncs, 302);
    // A unit that does not consume: the call does not return success.
    device.stall_commands.set(true);
    let stalled = smmu.invalidate_asid(&memory, 1, 301);
    assert!(
        matches!(stalled, Err(crate::smmuv3::SmmuError::Timeout { .. })),
        "{stalled:?}"
    );
}

#[test]
fn stage1_only() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..256)
        .unwrap();
    let s1 = PageTable::new(&mut frames, Stage1Format, levels_4k(39), 39).unwrap();
    s1.map(
        &memory,
        &mut frames,
        0x8000_0000,
        0x300_0000,
        PageSize::Size2M,
        Perms::READ_WRITE,
    )
    .unwrap();
    let cd_table = frames.alloc_zeroed_frame().unwrap();
    let params = CdParams {
        va_bits: 39,
        ..cd_params(s1.root(), 5)
    };
    let cd = Cd::new(&params, smmu.features()).unwrap();
    smmu.write_cd(&memory, cd_table, EDU, 0, &cd).unwrap();
    let ste = Ste::stage1(cd_table, 0, smmu.features()).unwrap();
    smmu.install_ste(&memory, &mut frames, EDU, &ste).unwrap();
    assert_eq!(
        device.dma(request(0x8012_3456, Access::Write, None)),
        Outcome::Translated(0x312_3456)
    );
    // Beyond the 39-bit input range of TTB0.
    let event = fault(device.dma(request(1 << 40, Access::Read, None)));
    assert_eq!((event.kind, event.stage2), (EventKind::Translation, false));
}
