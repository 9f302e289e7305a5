//! IO faults: what the unit recorded, routed to the fault queue of its
//! requester (`Bind` with an IoDevice) or else of its domain (`Bind` with
//! an IoSpace), as a record a driver pops.

use crate::requests::{PENDING_REQUESTS, Pending};
use crate::state::State;
use crate::{Env, IoUnit, QUEUE_DEPTH, QUEUES};
use caps::{FaultSource, ObjectId};
use iommu::PhysMem;

/// Most faults one drain returns.
pub const MAX_FAULTS: usize = 16;

/// One DMA the IOMMU refused, as the unit recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaFault {
    /// Requester ID (PCI bus/device/function) or StreamID.
    pub requester: u16,
    /// The faulting address (page-aligned on VT-d); `None` for faults that
    /// carry no address (SMMU configuration errors such as C_BAD_STE).
    pub address: Option<u64>,
    /// The vendor's fault reason or event code.
    pub reason: u32,
    /// The request read (or, on VT-d, was a read or atomic).
    pub read: bool,
    /// The request wrote.
    pub write: bool,
    /// The translation stage that faulted: 1 or 2 (VT-d reports 2: the
    /// device always walks a second-stage table, shadows included).
    pub stage: u8,
    /// The PASID the request carried.
    pub pasid: Option<u32>,
    /// The transaction is stalled, not ended (SMMUv3 event with Stall = 1):
    /// its STAG. [`State::deliver`] queues it as a recoverable record, and
    /// its answer is CMD_RESUME (`requests.rs`).
    pub stall_tag: Option<u16>,
}

impl From<&iommu::vtd::regs::FaultRecord> for DmaFault {
    fn from(record: &iommu::vtd::regs::FaultRecord) -> DmaFault {
        use iommu::vtd::regs::FaultAccess;
        DmaFault {
            requester: record.source_id,
            address: Some(record.address),
            reason: u32::from(record.reason),
            read: record.access == FaultAccess::Read,
            write: record.access == FaultAccess::Write,
            stage: 2,
            pasid: record.pasid,
            stall_tag: None,
        }
    }
}

impl From<&iommu::smmuv3::queue::Event> for DmaFault {
    fn from(event: &iommu::smmuv3::queue::Event) -> DmaFault {
        DmaFault {
            requester: event.stream_id as u16,
            address: event
                .kind
                .is_translation_fault()
                .then_some(event.input_address),
            reason: u32::from(event.kind.code()),
            read: event.read,
            write: !event.read,
            stage: if event.stage2 { 2 } else { 1 },
            pasid: event.substream_id,
            stall_tag: event.stall_tag,
        }
    }
}

/// A fault queue record as `IoFaultQueue.Pop` returns it: badge of the
/// bound capability, PASID (`u64::MAX`: none), address, access (bit 0
/// read, bit 1 write; page requests also bit 2 execute, bit 3
/// privileged), stage (1 or 2; 0: a page request), then the vendor's
/// reason, or a page request's id for `Respond` (`requests.rs`).
pub type Record = [u64; 6];

/// One bound fault queue.
pub(crate) struct Queue<N> {
    pub(crate) object: ObjectId,
    pub(crate) notification: Option<N>,
    pub(crate) badge: u64,
    pub(crate) records: heapless::Deque<Record, QUEUE_DEPTH>,
    pub(crate) lost: u64,
    /// Page requests queued here and not answered yet.
    pub(crate) pending: heapless::Vec<Pending, PENDING_REQUESTS>,
    /// The id the next page request gets (ids start at 1).
    pub(crate) next_id: u64,
    /// The queue object died with requests pending: they are answered
    /// `Failure` by [`State::fail_orphans`], then the queue goes.
    pub(crate) dead: bool,
}

/// What one drain of faults into the queues leaves for the caller.
pub struct Drained<N> {
    /// The notifications to signal, each once.
    pub signals: heapless::Vec<N, QUEUES>,
    /// Requesters of faults no queue takes (dropped), in order.
    pub dropped: heapless::Vec<u16, MAX_FAULTS>,
}

impl<U: IoUnit, M: PhysMem + Copy, E: Env> State<U, M, E> {
    /// Queues `faults` (what the unit recorded) to their routes and
    /// returns the notifications to signal and the faults nobody takes.
    /// Stalled transactions (`stall_tag`) are skipped: they wait for an
    /// answer, which only [`State::deliver`] arranges.
    pub fn queue_faults(&mut self, faults: &[DmaFault]) -> Drained<E::Notify> {
        let mut drained = Drained {
            signals: heapless::Vec::new(),
            dropped: heapless::Vec::new(),
        };
        for fault in faults.iter().filter(|f| f.stall_tag.is_none()) {
            let Some(index) = self.route(fault) else {
                let _ = drained.dropped.push(fault.requester);
                continue;
            };
            let queue = &mut self.queues[index];
            let record = [
                queue.badge,
                fault.pasid.map_or(u64::MAX, u64::from),
                fault.address.unwrap_or(0),
                u64::from(fault.read) | u64::from(fault.write) << 1,
                u64::from(fault.stage),
                u64::from(fault.reason),
            ];
            if queue.records.push_back(record).is_err() {
                queue.lost += 1;
            }
            if let Some(target) = &queue.notification
                && !drained
                    .signals
                    .iter()
                    .any(|t| E::same_notification(t, target))
            {
                let _ = drained.signals.push(*target);
            }
        }
        drained
    }

    /// The queue a fault goes to: its device's route, else its domain's.
    pub(crate) fn route(&self, fault: &DmaFault) -> Option<usize> {
        let rid = u32::from(fault.requester);
        let did = self
            .attached
            .iter()
            .find(|a| a.requester == fault.requester)
            .and_then(|a| self.space(a.space).ok())
            .map(|s| s.did);
        let queue = self
            .routes
            .iter()
            .find(|(s, _)| *s == FaultSource::Device(rid))
            .or_else(|| {
                self.routes
                    .iter()
                    .find(|(s, _)| did.is_some_and(|d| *s == FaultSource::Domain(d)))
            })
            .map(|(_, q)| *q)?;
        self.queues
            .iter()
            .position(|q| q.object == queue && !q.dead)
    }

    /// Whether `IoFaultQueue.Bind` of `queue` finds a record for it (its
    /// own, or room for one): decode's check, so the bind itself cannot
    /// refuse after the model routed the source. Errors: `ObjectTableFull`.
    pub fn can_bind_queue(&self, queue: ObjectId) -> Result<(), abi::Error> {
        if self.queues.is_full() && !self.queues.iter().any(|q| q.object == queue) {
            return Err(abi::Error::ObjectTableFull);
        }
        Ok(())
    }

    /// `IoFaultQueue.Bind`'s kernel half: records of `queue` signal
    /// `notification` and carry `badge` (the bound source capability's
    /// badge). The first bind turns the unit's fault interrupt on through
    /// `enable_interrupt` (a failure is logged; `Pop` still drains).
    pub fn bind_queue(
        &mut self,
        queue: ObjectId,
        notification: E::Notify,
        badge: u64,
        enable_interrupt: impl FnOnce() -> Result<(), &'static str>,
    ) -> Result<(), abi::Error> {
        if let Some(q) = self
            .queues
            .iter_mut()
            .find(|q| q.object == queue && !q.dead)
        {
            q.notification = Some(notification);
            q.badge = badge;
        } else {
            self.queues
                .push(Queue {
                    object: queue,
                    notification: Some(notification),
                    badge,
                    records: heapless::Deque::new(),
                    lost: 0,
                    pending: heapless::Vec::new(),
                    next_id: 1,
                    dead: false,
                })
                .map_err(|_| abi::Error::ObjectTableFull)?;
        }
        if !self.interrupt_on {
            match enable_interrupt() {
                Ok(()) => self.interrupt_on = true,
                Err(why) => E::log(&ktext::text!("[io] the fault interrupt stays off: {}", why)),
            }
        }
        Ok(())
    }

    /// The oldest record of `queue` and how many were lost to a full
    /// queue so far (the caller queues what the unit recorded first).
    pub fn pop(&mut self, queue: ObjectId) -> (Option<Record>, u64) {
        match self
            .queues
            .iter_mut()
            .find(|q| q.object == queue && !q.dead)
        {
            Some(q) => (q.records.pop_front(), q.lost),
            None => (None, 0),
        }
    }

    /// Whether a thread waits for IO faults (a queue has a notification).
    pub fn faults_awaited(&self) -> bool {
        self.queues.iter().any(|q| q.notification.is_some())
    }
}
