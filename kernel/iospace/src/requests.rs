//! Recoverable IO page faults: page requests (VT-d page request queue,
//! SMMUv3 PRI queue) routed to fault queues as records a driver answers
//! with `IoFaultQueue.Respond`, and the kernel's own `Failure` answers so
//! a device never waits forever.
//!
//! A request goes where the requester's faults go (the device's queue,
//! else its domain's). It is queued as a record (MR4 = 0: a page request,
//! MR5 = its id; ids count from 1 per queue and are never reused by that
//! queue) and kept as *pending* until one answer reaches the device:
//!
//! - the driver's `Respond(id, Success | Invalid | Failure)`;
//! - `Invalid` from the kernel at once when nobody can take it (no route,
//!   the queue's records or pending table full): only that request
//!   fails, the device keeps its page requests;
//! - `Failure` from the kernel when the queue dies, when the requester's
//!   entry (device or PASID) is cleared (its capability deleted, detached,
//!   or its IoSpace deleted), or when the request is older than
//!   [`Env::RESPONSE_DEADLINE`] at the next [`State::expire_requests`].
//!
//! Stalled transactions (SMMUv3 stall model, where IDR0.STALL_MODEL
//! allows it and [`State::enable_stalls`] turned it on: every nest's CD
//! has S = 1) are the same kind of record: an event with Stall = 1
//! becomes a request whose answer is CMD_RESUME with its StreamID and
//! STAG (`Success`: Retry; `Invalid`, `Failure`: Abort), and the kernel's
//! own answers above end it the same way.
//!
//! An answered id is refused afterwards (`RequestAnswered`), an id the
//! queue never issued too (`UnknownRequest`). A group (VT-d page request
//! group, PCIe PRG) is answered once: answering one of its requests
//! answers the others of the same group still pending in that queue.

use crate::state::State;
use crate::{DmaFault, Env, IoUnit, MAX_FAULTS};
use abi::Error;
use caps::ObjectId;
use iommu::PhysMem;

/// Page requests one queue may have unanswered at once; more are answered
/// `Invalid` at once.
pub const PENDING_REQUESTS: usize = 16;

/// How a page request is answered (`IoFaultQueue.Respond` MR1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    /// 0: the page is there now; the device retries its translation.
    Success,
    /// 1: the request is refused; the device reports an error for it.
    Invalid,
    /// 2: servicing failed; the device stops making page requests (VT-d
    /// "Response Failure", SMMUv3 CMD_PRI_RESP Fail).
    Failure,
}

impl Response {
    /// The response with ABI number `number`.
    pub fn from_number(number: u64) -> Option<Response> {
        match number {
            0 => Some(Response::Success),
            1 => Some(Response::Invalid),
            2 => Some(Response::Failure),
            _ => None,
        }
    }
}

/// One page request, vendor-neutral.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// Requester ID (PCI bus/device/function) or StreamID.
    pub requester: u16,
    /// The PASID (SubstreamID) the request carried.
    pub pasid: Option<u32>,
    /// The page (4 KiB aligned).
    pub address: u64,
    /// Read access requested.
    pub read: bool,
    /// Write access requested.
    pub write: bool,
    /// Execute access requested.
    pub execute: bool,
    /// Privileged access requested.
    pub privileged: bool,
    /// The page request group index, echoed in the answer.
    pub group: u16,
    /// Not a page request but a stalled transaction (SMMUv3 event with
    /// Stall = 1): its STAG, echoed in CMD_RESUME.
    pub stall_tag: Option<u16>,
}

impl From<&iommu::vtd::prq::PageRequest> for PageRequest {
    fn from(r: &iommu::vtd::prq::PageRequest) -> PageRequest {
        PageRequest {
            requester: r.source_id,
            pasid: r.pasid,
            address: r.address,
            read: r.read,
            write: r.write,
            execute: r.execute,
            privileged: r.privileged,
            group: r.group_index,
            stall_tag: None,
        }
    }
}

impl From<&iommu::smmuv3::priq::PriRequest> for PageRequest {
    fn from(r: &iommu::smmuv3::priq::PriRequest) -> PageRequest {
        PageRequest {
            requester: r.stream_id as u16,
            pasid: r.substream_id,
            address: r.address,
            read: r.read,
            write: r.write,
            execute: r.execute,
            privileged: r.privileged,
            group: r.group_index,
            stall_tag: None,
        }
    }
}

impl PageRequest {
    /// The request a stalled transaction makes (`fault.stall_tag` set):
    /// its page (stalls are translation-related faults, which carry their
    /// address), its access, no group.
    fn stalled(fault: &DmaFault) -> Option<PageRequest> {
        Some(PageRequest {
            requester: fault.requester,
            pasid: fault.pasid,
            address: fault.address.unwrap_or(0) & !0xfff,
            read: fault.read,
            write: fault.write,
            execute: false,
            privileged: false,
            group: 0,
            stall_tag: Some(fault.stall_tag?),
        })
    }

    /// The record `Pop` returns for it: badge, PASID, address, access
    /// (bit 0 read, 1 write, 2 execute, 3 privileged), 0 (a page request,
    /// not a stage), its id.
    fn record(&self, badge: u64, id: u64) -> crate::Record {
        [
            badge,
            self.pasid.map_or(u64::MAX, u64::from),
            self.address,
            u64::from(self.read)
                | u64::from(self.write) << 1
                | u64::from(self.execute) << 2
                | u64::from(self.privileged) << 3,
            0,
            id,
        ]
    }

    /// Whether `other` belongs to the same page request group.
    fn same_group(&self, other: &PageRequest) -> bool {
        self.requester == other.requester
            && self.pasid == other.pasid
            && self.group == other.group
            && self.stall_tag == other.stall_tag
    }
}

/// One request a queue's driver has not answered yet.
#[derive(Clone, Copy)]
pub(crate) struct Pending {
    pub(crate) id: u64,
    pub(crate) request: PageRequest,
    /// Answered `Failure` by the kernel at this time (caller's clock).
    pub(crate) expires: u64,
}

/// Counts of what the kernel answered itself (for tests and the log).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelAnswers {
    /// `Invalid`: no route, or the queue was full.
    pub refused: u64,
    /// `Failure`: the queue, the requester's entry or the deadline ran out.
    pub failed: u64,
}

impl<U: IoUnit, M: PhysMem + Copy, E: Env> State<U, M, E> {
    /// Turns the unit's page requests on (VT-d page request queue, SMMUv3
    /// PRI queue) with the queue page from `frames`; from then on every
    /// device entry the layer writes lets its device ask (VT-d context
    /// PRE). `Ok(false)`: the unit has none (QEMU).
    pub fn enable_page_requests(
        &mut self,
        unit: &mut U,
        frames: &mut impl iommu::FrameAllocator,
    ) -> Result<bool, &'static str> {
        if !unit.page_requests_supported() {
            return Ok(false);
        }
        unit.start_page_requests(&self.mem(), frames)?;
        Ok(true)
    }

    /// Turns stalls on where the unit can stall (SMMUv3 IDR0.STALL_MODEL
    /// 0b00 or 0b10): every nest CD written from now on has S = 1, so a
    /// stage-1 translation, access, address-size or permission fault
    /// holds the transaction (an event with Stall = 1) until its record
    /// is answered. For every stream: the nests' CDs are shared by the
    /// streams attached to them, and CD.S = 1 under an STE with
    /// S1STALLD = 1 is ILLEGAL (SMMUv3 5.5). A device whose PRI is on
    /// asks with a page request instead. Call before the first nest
    /// (boot). `false`: the unit cannot stall (QEMU, VT-d).
    pub fn enable_stalls(&mut self, unit: &U) -> bool {
        self.stalls = unit.stalls_supported();
        self.stalls
    }

    /// Whether nest CDs stall faults ([`State::enable_stalls`]).
    pub fn stalls_enabled(&self) -> bool {
        self.stalls
    }

    /// What the unit recorded since the last call: `faults` (drained by
    /// the caller) and the page requests the unit queued (drained here,
    /// bounded), queued to their routes at time `now`; requests nobody
    /// can take are answered `Invalid` at once. Returns the notifications
    /// to signal and the requesters of faults nobody takes.
    pub fn deliver(
        &mut self,
        unit: &mut U,
        faults: &[DmaFault],
        now: u64,
    ) -> crate::Drained<E::Notify> {
        let mut drained = self.queue_faults(faults);
        // Stalled transactions: recoverable records, in the order recorded.
        for fault in faults {
            if let Some(request) = PageRequest::stalled(fault) {
                self.queue_request(unit, &request, now, &mut drained);
            }
        }
        // The unit's queue holds at most 256 entries: 16 rounds of 16.
        for _ in 0..16 {
            let mut requests: heapless::Vec<PageRequest, MAX_FAULTS> = heapless::Vec::new();
            let more = unit.take_page_requests(&self.mem(), &mut requests);
            for request in &requests {
                self.queue_request(unit, request, now, &mut drained);
            }
            if !more {
                break;
            }
        }
        drained
    }

    fn queue_request(
        &mut self,
        unit: &mut U,
        request: &PageRequest,
        now: u64,
        drained: &mut crate::Drained<E::Notify>,
    ) {
        let fault = DmaFault {
            requester: request.requester,
            address: Some(request.address),
            reason: 0,
            read: request.read,
            write: request.write,
            stage: 1,
            pasid: request.pasid,
            stall_tag: None,
        };
        let taken = self.route(&fault).and_then(|index| {
            let queue = &mut self.queues[index];
            if queue.records.is_full() || queue.pending.is_full() {
                queue.lost += 1;
                return None;
            }
            let id = queue.next_id;
            queue.next_id += 1;
            let _ = queue.records.push_back(request.record(queue.badge, id));
            let _ = queue.pending.push(Pending {
                id,
                request: *request,
                expires: now.saturating_add(E::RESPONSE_DEADLINE),
            });
            Some(queue.notification)
        });
        match taken {
            Some(notification) => {
                if let Some(target) = notification
                    && !drained
                        .signals
                        .iter()
                        .any(|t| E::same_notification(t, &target))
                {
                    let _ = drained.signals.push(target);
                }
            }
            None => {
                let _ = drained.dropped.push(request.requester);
                self.kernel_answers.refused += 1;
                self.answer(unit, request, Response::Invalid);
            }
        }
    }

    /// `IoFaultQueue.Respond`: answers request `id` of `queue` (and the
    /// rest of its group pending there) with `response`. Errors:
    /// `NotSupported` (the unit takes no page requests and does not
    /// stall: no id is ever issued), `UnknownRequest` (the queue never issued `id`), `RequestAnswered`
    /// (answered already, by its driver or by the kernel), `IommuTimeout`
    /// (the unit did not take the answer; the request counts as answered).
    pub fn respond(
        &mut self,
        unit: &mut U,
        queue: ObjectId,
        id: u64,
        response: Response,
    ) -> Result<(), Error> {
        if !unit.page_requests_supported() && !self.stalls {
            return Err(Error::NotSupported);
        }
        let queue = self
            .queues
            .iter_mut()
            .find(|q| q.object == queue && !q.dead)
            .ok_or(Error::UnknownRequest)?;
        let Some(position) = queue.pending.iter().position(|p| p.id == id) else {
            return Err(if id == 0 || id >= queue.next_id {
                Error::UnknownRequest
            } else {
                Error::RequestAnswered
            });
        };
        let request = queue.pending.swap_remove(position).request;
        queue.pending.retain(|p| !p.request.same_group(&request));
        self.forget_failure();
        self.answer(unit, &request, response);
        self.take_failure().map_or(Ok(()), Err)
    }

    /// Answers `Failure` to every request older than its deadline at
    /// `now`. Returns how many.
    pub fn expire_requests(&mut self, unit: &mut U, now: u64) -> usize {
        self.fail_requests(unit, |p| p.expires <= now, false)
    }

    /// Whether any page request waits for an answer (the caller must keep
    /// calling [`State::expire_requests`]).
    pub fn requests_pending(&self) -> bool {
        self.queues.iter().any(|q| !q.pending.is_empty())
    }

    /// What the kernel answered itself so far.
    pub fn kernel_answers(&self) -> KernelAnswers {
        self.kernel_answers
    }

    /// Answers `Failure` to every pending request of `requester` (`pasid`
    /// `None`: of every PASID): its entry was cleared.
    pub(crate) fn fail_requester(&mut self, unit: &mut U, requester: u16, pasid: Option<u32>) {
        let doomed = |p: &Pending| {
            p.request.requester == requester && (pasid.is_none() || p.request.pasid == pasid)
        };
        self.fail_requests(unit, doomed, false);
    }

    /// Answers `Failure` to the requests of queues that died and forgets
    /// those queues (`reconcile` marked them: it has no unit). Returns
    /// how many groups were answered.
    pub fn fail_orphans(&mut self, unit: &mut U) -> usize {
        let failed = self.fail_requests(unit, |_| true, true);
        self.queues.retain(|q| !q.dead);
        failed
    }

    /// Answers `Failure` to the pending requests `doomed` names (in dead
    /// queues only, with `dead`), one group at a time.
    fn fail_requests(
        &mut self,
        unit: &mut U,
        doomed: impl Fn(&Pending) -> bool,
        dead: bool,
    ) -> usize {
        let mut count = 0;
        for q in 0..self.queues.len() {
            if self.queues[q].dead != dead {
                continue;
            }
            // Bounded: each round answers and removes at least one request.
            while let Some(request) = self.queues[q]
                .pending
                .iter()
                .find(|p| doomed(p))
                .map(|p| p.request)
            {
                self.queues[q]
                    .pending
                    .retain(|p| !p.request.same_group(&request));
                count += 1;
                self.kernel_answers.failed += 1;
                self.answer(unit, &request, Response::Failure);
            }
        }
        count
    }

    /// Sends `response` for `request`'s group to the unit; a unit that
    /// does not take it leaves `IommuTimeout` for the invocation. Out of
    /// line: page requests are rare, and LTO had copied it into five
    /// callers (kernel/README.md, "Size").
    #[inline(never)]
    fn answer(&mut self, unit: &mut U, request: &PageRequest, response: Response) {
        if let Err(why) = unit.answer_page_request(&self.mem(), request, response) {
            self.unit_failed(why);
            E::log(&ktext::text!(
                "[io] page request of {:#x} not answered: {}",
                request.requester,
                why
            ));
        }
    }
}
