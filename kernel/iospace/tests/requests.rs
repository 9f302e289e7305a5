//! Recoverable IO page faults through the layer against the executable
//! models (`State::deliver`, `State::respond`, the kernel's own answers):
//! VT-d per spec (scalable mode, hardware nesting, page request queue,
//! PASID-tagged DMA) and SMMUv3 per spec (PRI queue; nested STEs). Each
//! test plays the devices (DMA through the model that waits for a page
//! request's answer) and the driver (pops the record, maps the page,
//! invalidates its stage 1, answers with `Respond`).
//!
//! Properties: a page request becomes exactly one record, in the queue its
//! requester's faults go to, with its PASID, page and access; `Success`
//! after the page is mapped completes the very transaction that waited,
//! at the new page; `Invalid` and `Failure` reach the device as errors; a
//! request is answered once (`RequestAnswered` after, `UnknownRequest`
//! for ids never issued); and the kernel answers `Failure` itself when
//! the queue, the requester's entry (detach, IoSpace delete) or the
//! deadline runs out, `Invalid` when nobody takes the request.

mod common;

use abi::Error;
use caps::{FaultSource, ObjectId};
use common::page_requests::{
    DEVICE_BADGE, DEVICE_NOTIFY, DEVICE_QUEUE, DOMAIN_QUEUE, Requester, RoundTrip, SMMU_SIDS,
    VTD_RIDS, ask, pop_all, record_of, round_trip, scenario, smmu_round_trip, space_with_data,
    vtd_round_trip, vtd_unit,
};
use common::{Faults, IOVA, MEMORY, Model, World, smmu, vtd};
use iommu::model::smmu_device::SimSmmu;
use iommu::model::vtd_device::{QEMU_CAP, QEMU_ECAP, SimVtd};
use iommu::model::{Access, DeviceError, DeviceOutcome, SimMemory, TransactionId};
use iommu::pagetable::PageTableFormat;
use iommu::smmuv3::queue::{EventKind, opcode};
use iommu::smmuv3::regs::{Features, Idr0};
use iommu::vtd::regs::RootTableMode;
use iospace::{IoUnit, Response};
use std::collections::BTreeMap;

/// One round trip's queue entries, waits included: the driver's
/// `Invalidate` of the page one command and its wait (the `Map` of a page
/// that was not mapped needs none), the answer another two (VT-d: page
/// group response + wait descriptor; SMMUv3: CMD_PRI_RESP + CMD_SYNC).
fn costs_four(vendor: &str, cost: RoundTrip) {
    assert_eq!(cost.service, 2, "{vendor}: the Invalidate");
    assert_eq!(cost.answer, 2, "{vendor}: the answer");
    assert_eq!(cost.total(), 4);
    println!(
        "{vendor} page-request round trip: {} + {} queue entries",
        cost.service, cost.answer
    );
}

// The functions `cargo xtask bench` runs for its
// `page-request-round-trip-{vtd,smmu}-commands` rows.
#[test]
fn vtd_pasids_of_many_devices_page_request_answered_success() {
    costs_four("VT-d", vtd_round_trip());
}

#[test]
fn smmu_streams_page_request_answered_success() {
    costs_four("SMMUv3", smmu_round_trip());
}

/// The device's view after one request answered `response` by the driver.
fn answered<U, D, F>(
    world: &mut World<'_, U, D, F>,
    rids: &[u16],
    pasids: &[u32],
) -> BTreeMap<&'static str, DeviceOutcome>
where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let (_, requesters) = scenario(world, rids, pasids);
    let mut seen = BTreeMap::new();
    for (name, response) in [
        ("invalid", Response::Invalid),
        ("failure", Response::Failure),
    ] {
        let r = &requesters[0];
        let waiting = ask(world, r);
        world.deliver_at(0);
        let records = pop_all(world);
        let (queue, id) = record_of(&records, r, rids[0]);
        world
            .state
            .respond(&mut world.unit, queue, id, response)
            .unwrap();
        seen.insert(name, world.device.outcome(waiting));
    }
    // After Failure the device makes no more page requests: the same miss
    // is an ordinary fault, recorded as one.
    let r = &requesters[0];
    let again = world
        .device
        .device_transact(r.rid, r.pasid, r.missing(), Access::Read);
    assert!(matches!(
        again,
        DeviceOutcome::Failed(DeviceError::Fault(_))
    ));
    world.deliver_at(0);
    let records = pop_all(world);
    assert_eq!(records.len(), 1);
    assert_ne!(records[0].1[4], 0, "a stage fault record");
    seen
}

#[test]
fn invalid_and_failure_reach_the_device_as_errors() {
    let memory = SimMemory::new(MEMORY);
    let device = vtd_unit(&memory);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    let seen = answered(&mut world, &VTD_RIDS[..1], &[1]);
    assert_eq!(
        seen["invalid"],
        DeviceOutcome::Failed(DeviceError::Response(0x1))
    );
    assert_eq!(
        seen["failure"],
        DeviceOutcome::Failed(DeviceError::Response(0xf))
    );
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::per_spec(&memory);
    let mut world = smmu(&memory, &device);
    let seen = answered(&mut world, &SMMU_SIDS[..1], &[]);
    // PRI: 0 Deny, 1 Fail.
    assert_eq!(
        seen["invalid"],
        DeviceOutcome::Failed(DeviceError::Response(0))
    );
    assert_eq!(
        seen["failure"],
        DeviceOutcome::Failed(DeviceError::Response(1))
    );
}

/// How the kernel's own answer is provoked.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// The fault queue is deleted.
    Queue,
    /// The requester's entry is cleared (device or PASID detached; the
    /// capability's delete does the same).
    Detach,
    /// The IoSpace is deleted.
    Space,
    /// The deadline passes.
    Deadline,
}

/// Every requester asks; `death` happens; every request is answered
/// `Failure` by the kernel (the devices see the failure code), and the
/// ids are refused afterwards.
fn kernel_fails<U, D, F>(
    world: &mut World<'_, U, D, F>,
    rids: &[u16],
    pasids: &[u32],
    death: Death,
    failure: DeviceOutcome,
) where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let (space, requesters) = scenario(world, rids, pasids);
    let waiting: Vec<TransactionId> = requesters.iter().map(|r| ask(world, r)).collect();
    let start = 1000;
    world.deliver_at(start);
    let records = pop_all(world);
    let ids: Vec<(ObjectId, u64)> = requesters
        .iter()
        .map(|r| record_of(&records, r, rids[0]))
        .collect();
    assert!(world.state.requests_pending());
    let mut answered_ids = Vec::new();
    match death {
        Death::Queue => {
            // Only the device queue dies: its requests fail, the others wait.
            let failed = world.delete_queue(DEVICE_QUEUE);
            let in_queue = ids.iter().filter(|(q, _)| *q == DEVICE_QUEUE).count();
            assert_eq!(failed, in_queue);
            for (i, (queue, id)) in ids.iter().enumerate() {
                if *queue == DEVICE_QUEUE {
                    assert_eq!(world.device.outcome(waiting[i]), failure);
                    assert_eq!(
                        world
                            .state
                            .respond(&mut world.unit, *queue, *id, Response::Success),
                        Err(Error::UnknownRequest),
                        "the queue is gone"
                    );
                } else {
                    assert_eq!(
                        world.device.outcome(waiting[i]),
                        DeviceOutcome::Waiting(waiting[i])
                    );
                }
            }
            world.delete_queue(DOMAIN_QUEUE);
        }
        Death::Detach => {
            // The first requester alone, then the rest.
            let r = requesters[0];
            world.detach(r.rid, r.pasid).unwrap();
            assert_eq!(world.device.outcome(waiting[0]), failure);
            for (i, other) in requesters.iter().enumerate().skip(1) {
                if (other.rid, other.pasid) != (r.rid, r.pasid) {
                    assert_eq!(
                        world.device.outcome(waiting[i]),
                        DeviceOutcome::Waiting(waiting[i])
                    );
                }
            }
            for r in requesters.iter().skip(1) {
                world.detach(r.rid, r.pasid).unwrap();
            }
            answered_ids = ids.clone();
        }
        Death::Space => {
            world.delete_space(space).unwrap();
            answered_ids = ids.clone();
        }
        Death::Deadline => {
            let deadline = <common::TestEnv as iospace::Env>::RESPONSE_DEADLINE;
            assert_eq!(
                world
                    .state
                    .expire_requests(&mut world.unit, start + deadline - 1),
                0
            );
            assert_eq!(
                world.device.outcome(waiting[0]),
                DeviceOutcome::Waiting(waiting[0])
            );
            let expired = world
                .state
                .expire_requests(&mut world.unit, start + deadline);
            assert_eq!(expired, requesters.len());
            answered_ids = ids.clone();
        }
    }
    for (i, r) in requesters.iter().enumerate() {
        assert_eq!(world.device.outcome(waiting[i]), failure, "{r:?} {death:?}");
    }
    for (queue, id) in answered_ids {
        assert_eq!(
            world
                .state
                .respond(&mut world.unit, queue, id, Response::Success),
            Err(Error::RequestAnswered),
            "{death:?}"
        );
    }
    assert!(!world.state.requests_pending());
    assert_eq!(world.state.kernel_answers().failed, requesters.len() as u64);
}

#[test]
fn vtd_kernel_answers_failure_on_each_death_and_the_deadline() {
    for death in [Death::Queue, Death::Detach, Death::Space, Death::Deadline] {
        let memory = SimMemory::new(MEMORY);
        let device = vtd_unit(&memory);
        let mut world = vtd(&memory, &device, RootTableMode::Scalable);
        let failure = DeviceOutcome::Failed(DeviceError::Response(0xf));
        kernel_fails(&mut world, &VTD_RIDS[..2], &[1, 2], death, failure);
    }
}

#[test]
fn smmu_kernel_answers_failure_on_each_death_and_the_deadline() {
    // Streams nested themselves, then streams with substreams.
    for (sids, pasids) in [(&SMMU_SIDS[..3], &[][..]), (&SMMU_SIDS[..2], &[1, 2][..])] {
        for death in [Death::Queue, Death::Detach, Death::Space, Death::Deadline] {
            let memory = SimMemory::new(MEMORY);
            let device = SimSmmu::per_spec(&memory);
            let mut world = smmu(&memory, &device);
            let failure = DeviceOutcome::Failed(DeviceError::Response(1));
            kernel_fails(&mut world, sids, pasids, death, failure);
        }
    }
}

#[test]
fn a_request_nobody_takes_is_answered_invalid_at_once() {
    let memory = SimMemory::new(MEMORY);
    let device = vtd_unit(&memory);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    assert!(world.enable_page_requests());
    let space = world.create_space().unwrap();
    world.attach(0x30, None, space, false).unwrap();
    let root = world.stage1_of(space).unwrap();
    world.attach_at(0x30, Some(3), space, Some(root)).unwrap();
    world.device.device_page_requests(0x30, true);
    let r = Requester {
        rid: 0x30,
        pasid: Some(3),
        root,
        k: 0,
    };
    let waiting = ask(&world, &r);
    let drained = world.deliver_at(0);
    assert_eq!(drained.dropped.as_slice(), [0x30]);
    assert_eq!(
        world.device.outcome(waiting),
        DeviceOutcome::Failed(DeviceError::Response(0x1))
    );
    assert_eq!(world.state.kernel_answers().refused, 1);
    assert!(!world.state.requests_pending());
    // Invalid, not Failure: the device still asks.
    let again = ask(&world, &r);
    world.deliver_at(0);
    assert_eq!(
        world.device.outcome(again),
        DeviceOutcome::Failed(DeviceError::Response(0x1))
    );
}

/// As QEMU: no page requests; `Respond` answers `NotSupported`.
fn no_page_requests<U, D, F>(world: &mut World<'_, U, D, F>)
where
    U: IoUnit + common::Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    assert!(!world.unit.page_requests_supported());
    assert!(!world.enable_page_requests());
    world.bind(
        DEVICE_QUEUE,
        DEVICE_NOTIFY,
        DEVICE_BADGE,
        FaultSource::Device(0x10),
    );
    assert_eq!(
        world
            .state
            .respond(&mut world.unit, DEVICE_QUEUE, 1, Response::Success),
        Err(Error::NotSupported)
    );
}

#[test]
fn units_as_qemu_have_no_page_requests() {
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, QEMU_ECAP, true);
    no_page_requests(&mut vtd(&memory, &device, RootTableMode::Legacy));
    let memory = SimMemory::new(MEMORY);
    let device = SimVtd::new(&memory, QEMU_CAP, common::PASID_ECAP, true);
    no_page_requests(&mut vtd(&memory, &device, RootTableMode::Scalable));
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::qemu(&memory);
    no_page_requests(&mut smmu(&memory, &device));
}

#[test]
fn smmu_substreams_of_many_streams_page_request_answered_success() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::per_spec(&memory);
    let mut world = smmu(&memory, &device);
    // Each stream attached to stage 2 directly, PASIDs 1 and 2 each through
    // its own stage 1 (SubstreamIDs, S1DSS = bypass for the stream's own DMA).
    let (service, answer) = round_trip(&mut world, &SMMU_SIDS[..3], &[1, 2]);
    costs_four("SMMUv3 substream", RoundTrip { service, answer });
    let own: Vec<(u16, Option<u32>)> = SMMU_SIDS[..3].iter().map(|&s| (s, None)).collect();
    assert_eq!(world.check(&own, true).unwrap(), 3 * 32);
}

/// SMMUv3 substreams through the layer: a stream's PASIDs each translate
/// through their own stage 1 beside the stream's own DMA (nested: CD 0,
/// S1DSS = 0b10; direct: stage 2 only, S1DSS = 0b01); detaching one PASID
/// leaves the others; the last one puts the stream's STE back and its CD
/// table page back in the IoSpace's reservation. As QEMU (SSIDSIZE = 0):
/// no PASIDs.
#[test]
fn smmu_substreams_translate_beside_the_stream_and_go_back() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::per_spec(&memory);
    let mut world = smmu(&memory, &device);
    assert!(world.unit.pasids_supported(true));
    assert!(!world.unit.pasids_supported(false));
    let space = space_with_data(&mut world);
    let own = world.stage1_of(space).unwrap();
    let roots: Vec<u64> = (1..=3)
        .map(|k| world.another_stage1(space, k).unwrap())
        .collect();
    // 0x10 nested itself, 0x18 straight to stage 2.
    world.attach_at(0x10, None, space, Some(own)).unwrap();
    world.attach(0x18, None, space, false).unwrap();
    let before = world.state.available(space).unwrap();
    world
        .attach_at(0x10, Some(1), space, Some(roots[0]))
        .unwrap();
    world
        .attach_at(0x10, Some(2), space, Some(roots[1]))
        .unwrap();
    world
        .attach_at(0x18, Some(3), space, Some(roots[2]))
        .unwrap();
    let all = [
        (0x10, None),
        (0x10, Some(1)),
        (0x10, Some(2)),
        (0x18, None),
        (0x18, Some(3)),
    ];
    assert_eq!(world.check(&all, true).unwrap(), 5 * 32);
    // A PASID of no CD, and one beyond the table: refused.
    assert_eq!(
        world.device.transact(0x10, Some(4), IOVA + 8, Access::Read),
        None
    );
    assert_eq!(
        world
            .device
            .transact(0x10, Some(64), IOVA + 8, Access::Read),
        None
    );
    world.detach(0x10, Some(1)).unwrap();
    assert_eq!(
        world.device.transact(0x10, Some(1), IOVA + 8, Access::Read),
        None
    );
    assert_eq!(world.check(&all, true).unwrap(), 4 * 32);
    world.detach(0x10, Some(2)).unwrap();
    world.detach(0x18, Some(3)).unwrap();
    assert_eq!(
        world.device.transact(0x10, Some(2), IOVA + 8, Access::Read),
        None
    );
    assert_eq!(world.check(&all, true).unwrap(), 2 * 32);
    // The CD tables (and the PASIDs' nests) went back to the reservation.
    assert_eq!(world.state.available(space), Some(before));
    world.unit.drain(&memory);
    assert!(common::take_log().is_empty());
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::qemu(&memory);
    let world = smmu(&memory, &device);
    assert!(!world.unit.pasids_supported(true));
}

/// SMMUv3 per spec (IDR0.STALL_MODEL 0b00) with the layer's stalls on:
/// every nest CD has S = 1, and the devices' PRI stays off, so their
/// stage-1 faults stall (events with Stall = 1) instead of asking.
fn stalling<'m>(memory: &'m SimMemory, device: &'m SimSmmu<'m>) -> common::SmmuWorld<'m> {
    let mut world = smmu(memory, device);
    assert!(world.state.enable_stalls(&world.unit));
    world
}

#[test]
fn smmu_stalled_dma_answered_success_completes() {
    // Streams nested themselves, then streams with substreams.
    for (sids, pasids) in [(&SMMU_SIDS[..], &[][..]), (&SMMU_SIDS[..3], &[1, 2][..])] {
        let memory = SimMemory::new(MEMORY);
        let device = SimSmmu::per_spec(&memory);
        let mut world = stalling(&memory, &device);
        // The scenario's requests are stalls: one record each (MR4 = 0,
        // MR5 its id); the answer is CMD_RESUME Retry + CMD_SYNC.
        let (service, answer) = round_trip(&mut world, sids, pasids);
        assert_eq!((service, answer), (2, 2), "{sids:x?} {pasids:?}");
        let requesters = (sids.len() * pasids.len().max(1)) as u64;
        assert_eq!(device.command_count(opcode::RESUME), requesters);
        assert_eq!(device.command_count(opcode::PRI_RESP), 0, "no PRI");
    }
}

#[test]
fn smmu_stall_invalid_and_failure_abort_the_transaction() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::per_spec(&memory);
    let mut world = stalling(&memory, &device);
    let (_, requesters) = scenario(&mut world, &SMMU_SIDS[..2], &[]);
    for response in [Response::Invalid, Response::Failure] {
        for r in &requesters {
            let waiting = ask(&world, r);
            world.deliver_at(0);
            let records = pop_all(&mut world);
            let (queue, id) = record_of(&records, r, SMMU_SIDS[0]);
            world
                .state
                .respond(&mut world.unit, queue, id, response)
                .unwrap();
            assert_eq!(
                world.device.outcome(waiting),
                DeviceOutcome::Failed(DeviceError::Terminated),
                "{r:?} {response:?}"
            );
            assert_eq!(
                world.state.respond(&mut world.unit, queue, id, response),
                Err(Error::RequestAnswered)
            );
        }
    }
    // Unlike PRI's Failure, an abort leaves the device as it was: the
    // next miss stalls again.
    ask(&world, &requesters[0]);
    assert_eq!(device.command_count(opcode::RESUME), 4);
}

#[test]
fn smmu_kernel_ends_stalls_on_each_death_and_the_deadline() {
    for (sids, pasids) in [(&SMMU_SIDS[..3], &[][..]), (&SMMU_SIDS[..2], &[1, 2][..])] {
        for death in [Death::Queue, Death::Detach, Death::Space, Death::Deadline] {
            let memory = SimMemory::new(MEMORY);
            let device = SimSmmu::per_spec(&memory);
            let mut world = stalling(&memory, &device);
            let failure = DeviceOutcome::Failed(DeviceError::Terminated);
            kernel_fails(&mut world, sids, pasids, death, failure);
            assert!(device.command_count(opcode::RESUME) > 0, "{death:?}");
        }
    }
}

#[test]
fn a_stall_nobody_takes_is_aborted_at_once() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::per_spec(&memory);
    let mut world = stalling(&memory, &device);
    let space = world.create_space().unwrap();
    let root = world.stage1_of(space).unwrap();
    world.attach_at(0x30, None, space, Some(root)).unwrap();
    let r = Requester {
        rid: 0x30,
        pasid: None,
        root,
        k: 0,
    };
    let waiting = ask(&world, &r);
    let drained = world.deliver_at(0);
    assert_eq!(drained.dropped.as_slice(), [0x30]);
    assert_eq!(
        world.device.outcome(waiting),
        DeviceOutcome::Failed(DeviceError::Terminated)
    );
    assert_eq!(world.state.kernel_answers().refused, 1);
    assert!(!world.state.requests_pending());
}

#[test]
fn units_as_qemu_do_not_stall() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::qemu(&memory);
    let mut world = smmu(&memory, &device);
    assert!(!world.unit.stalls_supported());
    assert!(!world.state.enable_stalls(&world.unit));
    no_page_requests(&mut world);
    let memory = SimMemory::new(MEMORY);
    let device = vtd_unit(&memory);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    assert!(!world.state.enable_stalls(&world.unit));
}

#[test]
fn smmu_page_request_delivered_at_its_interrupt() {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::per_spec(&memory);
    let mut world = smmu(&memory, &device);
    let (space, requesters) = scenario(&mut world, &SMMU_SIDS[..1], &[]);
    // What the kernel's boot does where the unit has a PRI queue.
    world.unit.enable_page_request_interrupt().unwrap();
    let r = &requesters[0];
    let waiting = ask(&world, r);
    assert_eq!(device.page_request_interrupts(), 1, "raised by the request");
    // Its handler delivers at once (time 0: no timer tick, no Pop).
    let drained = world.deliver_at(0);
    assert_eq!(drained.signals.as_slice(), [DEVICE_NOTIFY]);
    let records = pop_all(&mut world);
    let (queue, id) = record_of(&records, r, SMMU_SIDS[0]);
    let frame = common::page_requests::serve(&mut world, space, r);
    world
        .state
        .respond(&mut world.unit, queue, id, Response::Success)
        .unwrap();
    assert_eq!(
        world.device.outcome(waiting),
        DeviceOutcome::Completed(frame + 0x40)
    );
}

#[test]
fn smmu_forcing_stalls_needs_the_layers_cd_s() {
    // IDR0.STALL_MODEL = 0b10: a CD with S = 0 is ILLEGAL (C_BAD_CD).
    let features = Features {
        idr0: Idr0(Features::PER_SPEC.idr0.0 | 2 << 24),
        ..Features::PER_SPEC
    };
    let bad_cd = DeviceOutcome::Failed(DeviceError::Fault(u32::from(EventKind::BadCd.code())));
    for stalls in [false, true] {
        let memory = SimMemory::new(MEMORY);
        let device = SimSmmu::new(&memory, features);
        let mut world = smmu(&memory, &device);
        // Without: as a kernel that never turned stalls on writes its CDs.
        if stalls {
            assert!(world.state.enable_stalls(&world.unit));
        }
        let space = space_with_data(&mut world);
        let root = world.stage1_of(space).unwrap();
        world.attach_at(0x30, None, space, Some(root)).unwrap();
        let got = world
            .device
            .device_transact(0x30, None, IOVA + 8, Access::Read);
        if stalls {
            let want = world.allowed(0x30, None, IOVA + 8, Access::Read).unwrap();
            assert_eq!(got, DeviceOutcome::Completed(want));
        } else {
            assert_eq!(got, bad_cd);
        }
    }
}
