//! VT-d page requests: the page request queue (PRQ) the unit fills with
//! page request descriptors, and page group responses sent back through
//! the invalidation queue.
//!
//! Source: VT-d 7.5 ("Page Request Handling"), 7.6 ("Page Group
//! Response"), 6.5.2.9 (page group response descriptor), 11.4.11 (PQH,
//! PQT, PQA, PRS, PECTL). A device whose translation misses (ATS, with its
//! PCIe PRI capability enabled, and the context entry's PRE bit set) sends
//! a page request; software makes the page present and answers the group
//! with Success (the device retries), Invalid or Failure (the device sees
//! an error). Every read is bounded by the queue size; the queue is one
//! 4 KiB page of 128 32-byte descriptors.

use super::qi::Descriptor;
use super::regs::{offset, prs};
use super::{VtdError, VtdUnit};
use crate::list::RecordList;
use crate::{FrameAllocator, Mmio, PAGE_SIZE, PhysAddr, PhysMem};

/// Bytes of one page request descriptor.
pub const DESCRIPTOR_BYTES: u64 = 32;

/// Page request descriptor type (VT-d 7.5.1.1, word 0 bits 7:0).
pub const PAGE_REQUEST_TYPE: u64 = 0x1;

/// How software answers a page request group (VT-d 7.6.1, response codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseCode {
    /// 0h: the pages are present now; the device retries its translation.
    Success,
    /// 1h: the request is invalid; the device reports an error for it.
    Invalid,
    /// Fh: servicing failed; the device treats it as a catastrophic error
    /// for the function and stops issuing page requests.
    Failure,
}

impl ResponseCode {
    /// The 4-bit code.
    pub fn bits(self) -> u8 {
        match self {
            Self::Success => 0x0,
            Self::Invalid => 0x1,
            Self::Failure => 0xf,
        }
    }
    /// Decodes a 4-bit code (reserved codes are `None`).
    pub fn from_bits(code: u8) -> Option<Self> {
        match code {
            0x0 => Some(Self::Success),
            0x1 => Some(Self::Invalid),
            0xf => Some(Self::Failure),
            _ => None,
        }
    }
}

/// One page request (VT-d 7.5.1.1). Word 0: type 7:0, PASID present 8,
/// requester id 31:16, PASID 51:32, execute 52, privileged 53; word 1:
/// read 0, write 1, last page in group 2, group index 11:3, page address 63:12.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// Requester id (bus << 8 | devfn).
    pub source_id: u16,
    /// PASID, when the request carried one.
    pub pasid: Option<u32>,
    /// Page address (4 KiB aligned).
    pub address: u64,
    /// Read access requested.
    pub read: bool,
    /// Write access requested.
    pub write: bool,
    /// Execute access requested.
    pub execute: bool,
    /// Privileged-mode access requested.
    pub privileged: bool,
    /// LPIG: the last request of its group (the group wants a response).
    pub last_in_group: bool,
    /// Page request group index, echoed in the response.
    pub group_index: u16,
}

impl PageRequest {
    /// Decodes a descriptor; `None` if its type is not a page request.
    pub fn decode(words: [u64; 4]) -> Option<Self> {
        if words[0] & 0xff != PAGE_REQUEST_TYPE {
            return None;
        }
        let pasid_present = words[0] >> 8 & 1 == 1;
        Some(Self {
            source_id: (words[0] >> 16) as u16,
            pasid: pasid_present.then_some(((words[0] >> 32) & 0xf_ffff) as u32),
            address: words[1] & !0xfff,
            read: words[1] & 1 == 1,
            write: words[1] >> 1 & 1 == 1,
            execute: words[0] >> 52 & 1 == 1,
            privileged: words[0] >> 53 & 1 == 1,
            last_in_group: words[1] >> 2 & 1 == 1,
            group_index: ((words[1] >> 3) & 0x1ff) as u16,
        })
    }

    /// Encodes the descriptor (the simulated unit writes it).
    pub fn encode(&self) -> [u64; 4] {
        let pasid = match self.pasid {
            Some(pasid) => 1 << 8 | u64::from(pasid & 0xf_ffff) << 32,
            None => 0,
        };
        [
            PAGE_REQUEST_TYPE
                | pasid
                | u64::from(self.source_id) << 16
                | u64::from(self.execute) << 52
                | u64::from(self.privileged) << 53,
            (self.address & !0xfff)
                | u64::from(self.read)
                | u64::from(self.write) << 1
                | u64::from(self.last_in_group) << 2
                | u64::from(self.group_index & 0x1ff) << 3,
            0,
            0,
        ]
    }
}

/// What one read of the page request queue found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageRequestDrain {
    /// The requests read, oldest first (at most 16 per call: call again
    /// while [`PageRequestDrain::more`]).
    pub requests: RecordList<PageRequest, 16>,
    /// Descriptors that were not page requests (skipped).
    pub skipped: u32,
    /// More requests are waiting in the queue.
    pub more: bool,
    /// PRS.PRO was set: the queue was full and requests were dropped (it is
    /// cleared once the queue has been emptied).
    pub overflowed: bool,
}

/// The page request queue: one 4 KiB page of 128 descriptors.
#[derive(Debug)]
pub struct PageRequestQueue {
    base: PhysAddr,
}

impl PageRequestQueue {
    /// Descriptors the queue holds.
    pub const ENTRIES: u64 = PAGE_SIZE / DESCRIPTOR_BYTES;

    /// The PQA value: base, PQS=0 (one 4 KiB page).
    pub fn pqa_value(&self) -> u64 {
        self.base
    }

    /// Reads up to 16 descriptors between PQH and PQT, then publishes the
    /// new head (freeing the slots), and clears PRS.PRO once the queue is
    /// empty (VT-d 7.5.2). Bounded by the queue size.
    fn drain(&self, mmio: &impl Mmio, mem: &impl PhysMem) -> PageRequestDrain {
        let mut drain = PageRequestDrain::default();
        let ring = Self::ENTRIES * DESCRIPTOR_BYTES;
        // Clear PPR first so a request arriving after the read sets it again.
        mmio.write32(offset::PRS, prs::PPR);
        let tail = mmio.read64(offset::PQT) & (ring - 1) & !(DESCRIPTOR_BYTES - 1);
        let mut head = mmio.read64(offset::PQH) & (ring - 1) & !(DESCRIPTOR_BYTES - 1);
        let capacity = drain.requests.capacity();
        for _ in 0..Self::ENTRIES {
            if head == tail {
                break;
            }
            if drain.requests.len() == capacity {
                drain.more = true;
                break;
            }
            let slot = self.base + head;
            let mut words = [0u64; 4];
            for (i, word) in words.iter_mut().enumerate() {
                *word = mem.read_u64(slot + 8 * i as u64);
            }
            match PageRequest::decode(words) {
                Some(request) => drain.requests.push(request),
                None => drain.skipped += 1,
            }
            head = (head + DESCRIPTOR_BYTES) % ring;
        }
        mmio.write64(offset::PQH, head);
        if mmio.read32(offset::PRS) & prs::PRO != 0 {
            drain.overflowed = true;
            if head == tail {
                mmio.write32(offset::PRS, prs::PRO);
            }
        }
        drain
    }
}

impl<M: Mmio> VtdUnit<M> {
    /// Sets up the page request queue (VT-d 7.5.2): one zeroed frame,
    /// PQH = PQT = 0, PQA, PRS cleared. Needs ECAP.PRS and queued
    /// invalidation (responses go through it). Devices still need their
    /// context entry's PRE bit ([`super::tables::scalable_context_entry_with_page_requests`]).
    pub fn enable_page_requests(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
    ) -> Result<(), VtdError> {
        if !self.extended.prs() {
            return Err(VtdError::Unsupported {
                what: "page requests (ECAP.PRS)",
            });
        }
        if self.queue.is_none() {
            return Err(VtdError::Unsupported {
                what: "page responses need queued invalidation enabled first",
            });
        }
        let base = match &self.page_requests {
            Some(queue) => queue.base,
            None => alloc.alloc_zeroed_frame().ok_or(VtdError::OutOfMemory {
                what: "page request queue",
            })?,
        };
        mem.zero(base, PAGE_SIZE);
        let queue = PageRequestQueue { base };
        self.mmio.write64(offset::PQH, 0);
        self.mmio.write64(offset::PQT, 0);
        self.mmio.write64(offset::PQA, queue.pqa_value());
        self.mmio.write32(offset::PRS, prs::PPR | prs::PRO);
        self.page_requests = Some(queue);
        Ok(())
    }

    /// Whether [`VtdUnit::enable_page_requests`] succeeded.
    pub fn page_requests_enabled(&self) -> bool {
        self.page_requests.is_some()
    }

    /// Programs the page request event MSI (PEADDR/PEUADDR/PEDATA) and unmasks it.
    pub fn set_page_request_interrupt(&self, address: u64, data: u32) {
        self.mmio.write32(offset::PEDATA, data);
        self.mmio.write32(offset::PEADDR, address as u32);
        self.mmio.write32(offset::PEUADDR, (address >> 32) as u32);
        self.mmio.write32(offset::PECTL, 0);
    }

    /// Takes up to 16 page requests from the queue (bounded; call again
    /// while `more`). Empty if page requests are not enabled.
    pub fn read_page_requests(&mut self, mem: &impl PhysMem) -> PageRequestDrain {
        match &self.page_requests {
            Some(queue) => queue.drain(&self.mmio, mem),
            None => PageRequestDrain::default(),
        }
    }

    /// Answers `request`'s group with `code` (a page group response through
    /// the invalidation queue, waited for). A request without LPIG needs no
    /// response; answering its group index still answers the whole group.
    pub fn respond_page_request(
        &mut self,
        mem: &impl PhysMem,
        request: &PageRequest,
        code: ResponseCode,
    ) -> Result<(), VtdError> {
        if self.page_requests.is_none() {
            return Err(VtdError::Unsupported {
                what: "page requests are not enabled",
            });
        }
        self.submit(
            mem,
            [Descriptor::page_group_response(
                request.source_id,
                request.pasid,
                request.group_index,
                code,
            )],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip() {
        let request = PageRequest {
            source_id: 0x0308,
            pasid: Some(0x1_2345),
            address: 0x7fff_1234_5000,
            read: true,
            write: true,
            execute: false,
            privileged: false,
            last_in_group: true,
            group_index: 0x1a5,
        };
        assert_eq!(PageRequest::decode(request.encode()), Some(request));
        let response =
            Descriptor::page_group_response(0x0308, Some(0x1_2345), 0x1a5, ResponseCode::Invalid);
        assert_eq!(response.kind(), 0x9);
        assert_eq!(
            response.0[0],
            0x9 | 1 << 4 | 1 << 12 | 0x0308 << 16 | 0x1_2345 << 32
        );
        assert_eq!(response.0[1], 0x1a5 << 3);
    }
}
