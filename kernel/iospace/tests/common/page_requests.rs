//! The page-request scenario of the host tests (`tests/requests.rs`):
//! requesters attached through their own stage 1, their faults routed to
//! two queues, and the driver's side of one round trip (page request ->
//! `IoFaultQueue` record -> map + `Invalidate` -> `Respond(Success)` ->
//! the waiting DMA completes). Also compiled into the crate under its
//! `model-bench` feature (`model_bench`), so `cargo xtask bench` counts
//! the round trip's queue entries by running it.

use super::{DATA_IPA, DATA_PAGES, Faults, IOVA, MEMORY, Model, World, smmu, vtd};
use abi::Error;
use caps::{FaultSource, ObjectId, Rights};
use iommu::model::smmu_device::SimSmmu;
use iommu::model::vtd_device::{NESTING_ECAP, QEMU_CAP, SimVtd};
use iommu::model::{Access, DeviceOutcome, SimMemory, TransactionId};
use iommu::pagetable::PageTableFormat;
use iommu::vtd::regs::RootTableMode;
use iospace::{IoUnit, Response};
use std::vec::Vec;

/// VT-d per spec: nesting, PASIDs and ECAP.PRS (page requests, bit 29).
pub const PRS_ECAP: u64 = NESTING_ECAP | 1 << 29;
/// The two queues: the first device's own, and its IoSpace's.
pub const DEVICE_QUEUE: ObjectId = ObjectId(9001);
pub const DOMAIN_QUEUE: ObjectId = ObjectId(9002);
/// Their notifications and the badges of the bound capabilities.
pub const DEVICE_NOTIFY: u32 = 7;
pub const DOMAIN_NOTIFY: u32 = 8;
pub const DEVICE_BADGE: u64 = 0xdead;
pub const DOMAIN_BADGE: u64 = 0xbeef;

/// A new IoSpace with its `DATA_PAGES` data pages mapped read-write.
pub fn space_with_data<U, D, F>(world: &mut World<'_, U, D, F>) -> ObjectId
where
    U: IoUnit + Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let space = world.create_space().unwrap();
    for i in 0..DATA_PAGES {
        let pa = world.page();
        world
            .map(space, DATA_IPA + 4096 * i, pa, Rights::READ_WRITE)
            .unwrap();
    }
    space
}

/// A requester (RID, PASID) of the scenario and its driver stage 1.
#[derive(Clone, Copy, Debug)]
pub struct Requester {
    pub rid: u16,
    pub pasid: Option<u32>,
    pub root: u64,
    /// Its missing page: IOVA `IOVA + 4096 * (DATA_PAGES + k)`, to be
    /// backed by IPA `DATA_IPA + 4096 * (DATA_PAGES + k)`.
    pub k: u64,
}

impl Requester {
    pub fn missing(&self) -> u64 {
        IOVA + 4096 * (DATA_PAGES + self.k)
    }
    pub fn ipa(&self) -> u64 {
        DATA_IPA + 4096 * (DATA_PAGES + self.k)
    }
}

/// One IoSpace with its data pages, every requester attached through its
/// own stage 1 (`pasids`: devices attached directly, their PASIDs
/// nested; else the devices nested), the first device's faults to
/// [`DEVICE_QUEUE`], the IoSpace's to [`DOMAIN_QUEUE`], page requests on
/// (the devices' PRI off where the layer stalls faults instead).
pub fn scenario<U, D, F>(
    world: &mut World<'_, U, D, F>,
    rids: &[u16],
    pasids: &[u32],
) -> (ObjectId, Vec<Requester>)
where
    U: IoUnit + Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    assert!(world.enable_page_requests(), "the unit has page requests");
    let space = space_with_data(world);
    let mut requesters = Vec::new();
    for &rid in rids {
        let numbers: Vec<Option<u32>> = if pasids.is_empty() {
            vec![None]
        } else {
            world.attach(rid, None, space, false).unwrap();
            pasids.iter().map(|&p| Some(p)).collect()
        };
        for pasid in numbers {
            let k = requesters.len() as u64;
            let root = world.another_stage1(space, k + 1).unwrap();
            world.attach_at(rid, pasid, space, Some(root)).unwrap();
            requesters.push(Requester {
                rid,
                pasid,
                root,
                k,
            });
        }
        // Where the layer stalls faults, the devices make no page
        // requests: their faults stall (SMMUv3 CD.S).
        world
            .device
            .device_page_requests(rid, !world.state.stalls_enabled());
    }
    let did = world.spaces[&space].did;
    world.bind(
        DEVICE_QUEUE,
        DEVICE_NOTIFY,
        DEVICE_BADGE,
        FaultSource::Device(u32::from(rids[0])),
    );
    world.bind(
        DOMAIN_QUEUE,
        DOMAIN_NOTIFY,
        DOMAIN_BADGE,
        FaultSource::Domain(did),
    );
    (space, requesters)
}

/// The requester's write to its missing page: must wait.
pub fn ask<U, D: Model, F>(world: &World<'_, U, D, F>, r: &Requester) -> TransactionId
where
    U: IoUnit,
{
    match world
        .device
        .device_transact(r.rid, r.pasid, r.missing() + 0x40, Access::Write)
    {
        DeviceOutcome::Waiting(id) => id,
        other => panic!("{r:?}: the missing page must raise a page request, got {other:?}"),
    }
}

/// Every record of both queues: (queue, record).
pub fn pop_all<U, D, F>(world: &mut World<'_, U, D, F>) -> Vec<(ObjectId, [u64; 6])>
where
    U: IoUnit + Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let mut records = Vec::new();
    for queue in [DEVICE_QUEUE, DOMAIN_QUEUE] {
        while let (Some(record), _) = world.state.pop(queue) {
            records.push((queue, record));
        }
    }
    records
}

/// The record of `r`'s page request among `records`: (queue, id).
pub fn record_of(
    records: &[(ObjectId, [u64; 6])],
    r: &Requester,
    first_rid: u16,
) -> (ObjectId, u64) {
    let mine: Vec<_> = records
        .iter()
        .filter(|(_, rec)| rec[2] == r.missing())
        .collect();
    assert_eq!(mine.len(), 1, "{r:?}: one record, got {mine:x?}");
    let (queue, record) = *mine[0];
    let (want_queue, badge) = if r.rid == first_rid {
        (DEVICE_QUEUE, DEVICE_BADGE)
    } else {
        (DOMAIN_QUEUE, DOMAIN_BADGE)
    };
    assert_eq!(queue, want_queue, "{r:?}: routed to its queue");
    assert_eq!(record[0], badge);
    assert_eq!(record[1], r.pasid.map_or(u64::MAX, u64::from));
    assert_eq!(record[3], 0b10, "a write");
    assert_eq!(record[4], 0, "a page request, not a stage fault");
    assert_ne!(record[5], 0, "an id");
    (queue, record[5])
}

/// The driver's service of `r`'s request: a new frame at its IPA, the
/// stage-1 entry, `Invalidate`. Returns the frame.
pub fn serve<U, D, F>(world: &mut World<'_, U, D, F>, space: ObjectId, r: &Requester) -> u64
where
    U: IoUnit + Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    let frame = world.page();
    world
        .map(space, r.ipa(), frame, Rights::READ_WRITE)
        .unwrap();
    world.map_stage1(r.root, r.missing(), r.ipa());
    world
        .state
        .invalidate_user_table(&mut world.unit, space, r.root, r.missing(), 4096)
        .unwrap();
    frame
}

/// Queue entries the unit has issued (VT-d descriptors; SMMUv3 commands),
/// waits included.
pub trait Issued {
    fn issued(&self) -> u64;
}

impl Issued for iommu::vtd::VtdUnit<&SimVtd<'_>> {
    fn issued(&self) -> u64 {
        self.queue().unwrap().descriptors_issued
    }
}

impl Issued for iommu::smmuv3::Smmu<&SimSmmu<'_>> {
    fn issued(&self) -> u64 {
        self.command_queue().unwrap().commands_issued
    }
}

/// Every requester asks at once; the driver serves them in reverse order
/// and answers `Success`; each waiting transaction completes at its new
/// frame. Returns the queue entries (waits included) the driver's service
/// of one request cost (its `Map` and `Invalidate`), and its answer.
pub fn round_trip<U, D, F>(
    world: &mut World<'_, U, D, F>,
    rids: &[u16],
    pasids: &[u32],
) -> (u64, u64)
where
    U: IoUnit + Faults + Issued,
    D: Model,
    F: PageTableFormat + Copy,
{
    let (space, requesters) = scenario(world, rids, pasids);
    // Page 0 of every stage 1 is there: no request.
    for r in &requesters {
        let got = world
            .device
            .device_transact(r.rid, r.pasid, IOVA + 8, Access::Read);
        let want = world
            .allowed(r.rid, r.pasid, IOVA + 8, Access::Read)
            .unwrap();
        assert_eq!(got, DeviceOutcome::Completed(want), "{r:?}");
    }
    let waiting: Vec<TransactionId> = requesters.iter().map(|r| ask(world, r)).collect();
    let drained = world.deliver_at(0);
    assert!(drained.dropped.is_empty());
    let mut signals = drained.signals.to_vec();
    signals.sort();
    assert_eq!(signals, [DEVICE_NOTIFY, DOMAIN_NOTIFY]);
    let records = pop_all(world);
    assert_eq!(records.len(), requesters.len());
    let ids: Vec<(ObjectId, u64)> = requesters
        .iter()
        .map(|r| record_of(&records, r, rids[0]))
        .collect();
    let (mut cost, mut invalidation) = (0, 0);
    for (i, r) in requesters.iter().enumerate().rev() {
        // Still waiting until its answer.
        assert_eq!(
            world.device.outcome(waiting[i]),
            DeviceOutcome::Waiting(waiting[i])
        );
        let before = world.unit.issued();
        let frame = serve(world, space, r);
        invalidation = world.unit.issued() - before;
        let (queue, id) = ids[i];
        let before = world.unit.issued();
        world
            .state
            .respond(&mut world.unit, queue, id, Response::Success)
            .unwrap();
        cost = world.unit.issued() - before;
        assert_eq!(
            world.device.outcome(waiting[i]),
            DeviceOutcome::Completed(frame + 0x40),
            "{r:?}: the retried DMA lands on the new page"
        );
        // Answered once.
        assert_eq!(
            world
                .state
                .respond(&mut world.unit, queue, id, Response::Success),
            Err(Error::RequestAnswered)
        );
    }
    for queue in [DEVICE_QUEUE, DOMAIN_QUEUE] {
        for id in [0, 1000] {
            assert_eq!(
                world
                    .state
                    .respond(&mut world.unit, queue, id, Response::Success),
                Err(Error::UnknownRequest)
            );
        }
    }
    assert_eq!(
        world
            .state
            .respond(&mut world.unit, ObjectId(4242), 1, Response::Success),
        Err(Error::UnknownRequest)
    );
    assert!(!world.state.requests_pending());
    assert_eq!(world.state.kernel_answers(), Default::default());
    (invalidation, cost)
}

pub fn vtd_unit(memory: &SimMemory) -> SimVtd<'_> {
    SimVtd::new(memory, QEMU_CAP, PRS_ECAP, false)
}

pub const VTD_RIDS: [u16; 3] = [0x10, 0x18, 0x20];
pub const SMMU_SIDS: [u16; 4] = [0x10, 0x18, 0x20, 0x28];

/// Queue entries (waits included) of one page-request round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundTrip {
    /// The driver's service: its `Map` and `Invalidate` of the page.
    pub service: u64,
    /// Its answer, `Respond(Success)`.
    pub answer: u64,
}

impl RoundTrip {
    /// Both together: the round trip's cost.
    pub fn total(&self) -> u64 {
        self.service + self.answer
    }
}

/// The VT-d round trip (per spec, scalable mode, hardware nesting): the
/// PASIDs 1 and 2 of each of [`VTD_RIDS`], each through its own stage 1.
pub fn vtd_round_trip() -> RoundTrip {
    let memory = SimMemory::new(MEMORY);
    let device = vtd_unit(&memory);
    let mut world = vtd(&memory, &device, RootTableMode::Scalable);
    let (service, answer) = round_trip(&mut world, &VTD_RIDS, &[1, 2]);
    RoundTrip { service, answer }
}

/// The SMMUv3 round trip (per spec, PRI): each of [`SMMU_SIDS`] nested
/// through its own stage 1.
pub fn smmu_round_trip() -> RoundTrip {
    let memory = SimMemory::new(MEMORY);
    let device = SimSmmu::per_spec(&memory);
    let mut world = smmu(&memory, &device);
    let (service, answer) = round_trip(&mut world, &SMMU_SIDS, &[]);
    RoundTrip { service, answer }
}
