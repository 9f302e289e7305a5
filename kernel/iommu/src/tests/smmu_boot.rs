//! SMMUv3 boot path: block_all_dma, events (C_BAD_STE, C_BAD_STREAMID),
//! overflow, refused STEs, bounded polls.

use crate::model::smmu::{Outcome, SmmuRequest};
use crate::model::smmu_device::SimSmmu;
use crate::model::{Access, SimFrames, SimMemory};
use crate::smmuv3::queue::{EventKind, opcode};
use crate::smmuv3::regs::{Features, cr0, offset};
use crate::smmuv3::ste::{Ste, SteError, StreamTableLayout};
use crate::smmuv3::{BlockPolicy, Smmu, SmmuError};
use crate::{Mmio, PollLimit};

const MIB: u64 = 1 << 20;

fn edu_dma(stream_id: u32) -> SmmuRequest {
    SmmuRequest {
        stream_id,
        substream_id: None,
        address: 0x4_0000,
        access: Access::Write,
    }
}

#[test]
fn block_all_dma_records_bad_ste_for_every_device() {
    let memory = SimMemory::new(64 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    assert_eq!(smmu.features(), &Features::QEMU);

    // Before: SMMU disabled, GBPA reset value bypasses.
    assert_eq!(device.dma(edu_dma(0x10)), Outcome::Translated(0x4_0000));

    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..256)
        .unwrap();
    assert_eq!(
        device.read32(offset::CR0ACK),
        cr0::SMMUEN | cr0::EVENTQEN | cr0::CMDQEN
    );
    let table = smmu.stream_table().unwrap();
    assert_eq!(table.layout(), StreamTableLayout::TwoLevel);
    assert_eq!(table.sid_bits(), 15);
    // 1 L1 + 4 L2 (256 SIDs / 64) + cmdq + eventq.
    assert_eq!(frames.allocated, 7);
    assert_eq!(device.command_count(opcode::CFGI_STE_RANGE), 1);
    assert_eq!(device.command_count(opcode::TLBI_NSNH_ALL), 1);
    assert_eq!(device.command_count(opcode::SYNC), 1);
    assert_eq!(smmu.command_queue().unwrap().syncs_issued, 1);

    // edu at 00:02.0 -> StreamID 0x10: refused and recorded as C_BAD_STE.
    let outcome = device.dma(edu_dma(0x10));
    assert!(matches!(outcome, Outcome::Fault(e) if e.kind == EventKind::BadSte));
    // A StreamID without a level-2 array: C_BAD_STREAMID.
    assert!(matches!(
        device.dma(edu_dma(0x1234)),
        Outcome::Fault(e) if e.kind == EventKind::BadStreamId
    ));
    let drain = smmu.drain_events(&memory);
    assert!(!drain.overflowed);
    let events: std::vec::Vec<_> = drain.events.iter().collect();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].kind, events[0].stream_id),
        (EventKind::BadSte, 0x10)
    );
    assert_eq!(
        (events[1].kind, events[1].stream_id),
        (EventKind::BadStreamId, 0x1234)
    );
    assert!(std::format!("{}", events[0]).contains("C_BAD_STE (0x04) sid 0x10"));
    assert!(smmu.drain_events(&memory).events.is_empty());
}

#[test]
fn silent_abort_policy_records_nothing() {
    let memory = SimMemory::new(64 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::SilentAbort, 0..64)
        .unwrap();
    assert_eq!(device.dma(edu_dma(0x10)), Outcome::Aborted);
    assert!(smmu.drain_events(&memory).events.is_empty());
}

fn overflow(qemu_overflow: bool) {
    let memory = SimMemory::new(64 * MIB);
    let mut device = SimSmmu::qemu(&memory);
    device.qemu_overflow = qemu_overflow;
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..64)
        .unwrap();
    // 128-entry queue: 127 fit (one slot tells full from empty? no: wrap bit), rest lost.
    for _ in 0..200 {
        let _ = device.dma(edu_dma(8));
    }
    let drain = smmu.drain_events(&memory);
    assert!(drain.overflowed);
    assert_eq!(drain.events.len() + drain.events.dropped, 128);
    // Acknowledged: new events flow again and no overflow is reported.
    let _ = device.dma(edu_dma(9));
    let drain = smmu.drain_events(&memory);
    assert!(!drain.overflowed, "{drain:?}");
    assert_eq!(drain.events.get(0).unwrap().stream_id, 9);
    assert_eq!(smmu.global_errors(), 0);
}

#[test]
fn event_queue_overflow_qemu_gerror() {
    overflow(true);
}

#[test]
fn event_queue_overflow_architected_ovflg() {
    overflow(false);
}

#[test]
fn stuck_cr0ack_times_out_naming_the_bit() {
    let memory = SimMemory::new(64 * MIB);
    let device = SimSmmu::qemu(&memory);
    device.stuck_cr0.set(cr0::SMMUEN);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device).with_poll_limit(PollLimit(50));
    let err = smmu
        .block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..64)
        .unwrap_err();
    assert_eq!(
        err,
        SmmuError::Timeout {
            register: "SMMU_CR0ACK",
            bit: "SMMUEN"
        }
    );
}

#[test]
fn fatal_stes_are_refused_before_reaching_memory() {
    let memory = SimMemory::new(64 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..64)
        .unwrap();
    let features = Features::QEMU;
    let s2 = crate::smmuv3::ste::Stage2Config {
        vmid: 1,
        table: 0x20_0000,
        ipa_bits: 40,
        output_bits: 44,
    };
    let good = Ste::stage2(&s2, &features).unwrap();
    assert!(good.s2_aa64());

    // S2AA64=0: QEMU would abort the whole machine.
    let mut aarch32 = good;
    aarch32.0[2] &= !(1 << 51);
    assert_eq!(aarch32.check(&features), Err(SteError::Stage2NotAarch64));
    let before = smmu.stream_table().unwrap().read_ste(&memory, 8).unwrap();
    let err = smmu
        .install_ste(&memory, &mut frames, 8, &aarch32)
        .unwrap_err();
    assert_eq!(err, SmmuError::InvalidSte(SteError::Stage2NotAarch64));
    assert!(std::format!("{err}").contains("S2AA64=0"));
    assert_eq!(
        smmu.stream_table().unwrap().read_ste(&memory, 8).unwrap(),
        before
    );

    // Other configurations QEMU refuses or the architecture calls ILLEGAL.
    let mut cdmax = Ste::nested(&s2, 0x30_0000, &features).unwrap();
    cdmax.0[0] |= 1 << 59;
    assert_eq!(
        cdmax.check(&features),
        Err(SteError::TooManyContextDescriptors(1))
    );
    let mut stall = good;
    stall.0[2] |= 1 << 57;
    assert_eq!(stall.check(&features), Err(SteError::Stage2Stall));
    let mut endian = good;
    endian.0[2] |= 1 << 52;
    assert_eq!(endian.check(&features), Err(SteError::Stage2BigEndian));
    let mut sl0 = good;
    sl0.0[2] |= 3 << 38;
    assert_eq!(sl0.check(&features), Err(SteError::Stage2StartLevel(3)));
    let mut granule = good;
    granule.0[2] |= 1 << 46;
    assert_eq!(granule.check(&features), Err(SteError::Stage2Granule(1)));
    let mut reserved = Ste::abort();
    reserved.0[0] |= 0b010 << 1;
    assert_eq!(
        reserved.check(&features),
        Err(SteError::ReservedConfig(0b010))
    );
    let mut stalld = Ste::nested(&s2, 0x30_0000, &features).unwrap();
    stalld.0[1] |= 1 << 27;
    assert_eq!(stalld.check(&features), Err(SteError::Stage1StallDisable));
    // Encoder-side parameter checks.
    assert!(
        Ste::stage2(
            &crate::smmuv3::ste::Stage2Config {
                output_bits: 48,
                ..s2
            },
            &features
        )
        .is_err()
    );
    assert!(
        Ste::stage2(
            &crate::smmuv3::ste::Stage2Config { ipa_bits: 49, ..s2 },
            &features
        )
        .is_err()
    );
    let no_s2 = Features {
        idr0: crate::smmuv3::regs::Idr0(Features::QEMU.idr0.0 & !1),
        ..features
    };
    assert_eq!(
        Ste::stage2(&s2, &no_s2),
        Err(SteError::StageNotSupported { stage: 2 })
    );
    // Installing a valid STE issues CFGI_STE twice (break, make) with a sync each.
    smmu.install_ste(&memory, &mut frames, 8, &good).unwrap();
    assert_eq!(device.command_count(opcode::CFGI_STE), 2);
    assert_eq!(
        smmu.stream_table().unwrap().read_ste(&memory, 8).unwrap(),
        good
    );
}

#[test]
fn rejected_command_is_reported_and_the_queue_recovers() {
    use crate::invalidation::{InvalidationBatch, InvalidationTarget};
    let memory = SimMemory::new(64 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device).with_poll_limit(PollLimit(1000));
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..64)
        .unwrap();
    device.reject_opcode.set(Some(opcode::TLBI_S2_IPA));
    let mut batch = InvalidationBatch::new();
    batch.add(
        InvalidationTarget::SmmuStage2 {
            vmid: 1,
            nested: false,
        },
        0,
        0x1000,
    );
    let err = smmu.flush(&memory, &batch).unwrap_err();
    assert_eq!(
        err,
        SmmuError::CommandError {
            code: 1,
            opcode: opcode::TLBI_S2_IPA
        }
    );
    assert!(std::format!("{err}").contains("CERROR_ILL"));
    assert_eq!(smmu.global_errors(), 0);
    device.reject_opcode.set(None);
    let mut batch = InvalidationBatch::new();
    batch.add(
        InvalidationTarget::SmmuStage1 { vmid: 1, asid: 1 },
        0,
        0x1000,
    );
    assert_eq!(smmu.flush(&memory, &batch).unwrap().waits, 1);
}

#[test]
fn event_records_round_trip() {
    use crate::smmuv3::queue::{Event, FaultClass};
    for code in [
        0x01u8, 0x02, 0x03, 0x04, 0x08, 0x09, 0x0a, 0x10, 0x11, 0x12, 0x13, 0x25, 0x77,
    ] {
        let kind = EventKind::from_code(code);
        assert_eq!(kind.code(), code);
        let event = Event {
            kind,
            stream_id: 0x1234,
            substream_id: Some(9),
            read: true,
            stage2: true,
            class: FaultClass::TranslationTable,
            input_address: 0xdead_b000,
            address: 0x4_5000,
            stall_tag: (code == 0x10).then_some(0xbeef),
        };
        assert_eq!(Event::decode(event.encode()), event);
    }
    assert_eq!(EventKind::from_code(0x77).name(), "unknown event");
}

#[test]
fn linear_stream_table_when_two_levels_are_not_offered() {
    use crate::smmuv3::regs::Idr0;
    let memory = SimMemory::new(64 * MIB);
    let features = Features {
        idr0: Idr0(Features::QEMU.idr0.0 & !(3 << 27)),
        ..Features::QEMU
    };
    let device = SimSmmu::new(&memory, features);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..64)
        .unwrap();
    let table = smmu.stream_table().unwrap();
    assert_eq!(
        (table.layout(), table.sid_bits()),
        (StreamTableLayout::Linear, 6)
    );
    assert!(matches!(device.dma(edu_dma(5)), Outcome::Fault(e) if e.kind == EventKind::BadSte));
    assert!(
        matches!(device.dma(edu_dma(100)), Outcome::Fault(e) if e.kind == EventKind::BadStreamId)
    );
    smmu.install_ste(&memory, &mut frames, 5, &Ste::bypass())
        .unwrap();
    assert_eq!(device.dma(edu_dma(5)), Outcome::Translated(0x4_0000));
    assert!(
        smmu.install_ste(&memory, &mut frames, 64, &Ste::bypass())
            .is_err()
    );
}
