//! SMMUv3 recoverable faults: the PRI queue (page requests from PCIe
//! devices with ATS and PRI, answered by CMD_PRI_RESP) and stalled
//! transactions (events with Stall=1, answered by CMD_RESUME).
//!
//! Source: SMMUv3 3.9 ("PCIe Page Request Interface"), 3.12.2 ("Stall
//! model"), 4.7.1-4.7.2 (CMD_PRI_RESP, CMD_RESUME), 6.3.31-33 (PRIQ
//! registers), 8 ("Page request queue entries"). Every read is bounded by
//! the queue size; the queue is one 4 KiB page of 256 16-byte entries.

use super::queue::{Command, PriResponse, ResumeAction};
use super::regs::{cr0, irq_ctrl, offset};
use super::{Smmu, SmmuError};
use crate::list::RecordList;
use crate::{FrameAllocator, Mmio, PhysAddr, PhysMem};

/// One PRI queue entry (SMMUv3 8.1). Word 0: StreamID 31:0, SubstreamID
/// 51:32, Priv 58, Exec 59, Read 60, Write 61, Last 62, SSV 63; word 1:
/// PRG index 8:0, page address 63:12.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PriRequest {
    /// StreamID of the requester.
    pub stream_id: u32,
    /// SubstreamID (PASID) when SSV.
    pub substream_id: Option<u32>,
    /// Page address (4 KiB aligned).
    pub address: u64,
    /// Read access requested.
    pub read: bool,
    /// Write access requested.
    pub write: bool,
    /// Execute access requested.
    pub execute: bool,
    /// Privileged access requested.
    pub privileged: bool,
    /// Last request of its group (the group wants a response).
    pub last: bool,
    /// Page request group index, echoed in CMD_PRI_RESP.
    pub group_index: u16,
}

impl PriRequest {
    /// Decodes an entry.
    pub fn decode(words: [u64; 2]) -> Self {
        let bit = |n: u32| words[0] >> n & 1 == 1;
        Self {
            stream_id: words[0] as u32,
            substream_id: bit(63).then_some(((words[0] >> 32) & 0xf_ffff) as u32),
            address: words[1] & !0xfff,
            read: bit(60),
            write: bit(61),
            execute: bit(59),
            privileged: bit(58),
            last: bit(62),
            group_index: (words[1] & 0x1ff) as u16,
        }
    }

    /// Encodes the entry (the simulated SMMU writes it).
    pub fn encode(&self) -> [u64; 2] {
        let ssid = match self.substream_id {
            Some(ssid) => 1 << 63 | u64::from(ssid & 0xf_ffff) << 32,
            None => 0,
        };
        [
            u64::from(self.stream_id)
                | ssid
                | u64::from(self.privileged) << 58
                | u64::from(self.execute) << 59
                | u64::from(self.read) << 60
                | u64::from(self.write) << 61
                | u64::from(self.last) << 62,
            (self.address & !0xfff) | u64::from(self.group_index & 0x1ff),
        ]
    }
}

/// What one read of the PRI queue found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriDrain {
    /// The requests read, oldest first (at most 16 per call).
    pub requests: RecordList<PriRequest, 16>,
    /// More entries are waiting: call again.
    pub more: bool,
    /// The queue overflowed (PRIQ_PROD.OVFLG) and requests were lost.
    pub overflowed: bool,
}

/// The PRI queue: one 4 KiB page of 256 entries.
#[derive(Debug)]
pub struct PriQueue {
    base: PhysAddr,
    log2: u32,
    consumer: u32,
    overflow_ack: u32,
}

impl PriQueue {
    /// SMMU_PRIQ_BASE value: WA (bit 62) | ADDR 51:5 | LOG2SIZE 4:0.
    pub fn base_register(&self) -> u64 {
        1 << 62 | (self.base & 0x000f_ffff_ffff_ffe0) | u64::from(self.log2)
    }

    fn drain(&mut self, mmio: &impl Mmio, mem: &impl PhysMem) -> PriDrain {
        let mut drain = PriDrain::default();
        let producer_register = mmio.read32(offset::PRIQ_PROD);
        let overflow_flag = producer_register & (1 << 31);
        if overflow_flag != self.overflow_ack {
            drain.overflowed = true;
            self.overflow_ack = overflow_flag;
        }
        let wrap_mask = (2u32 << self.log2) - 1;
        let producer = producer_register & wrap_mask;
        let capacity = drain.requests.capacity();
        for _ in 0..(1u32 << self.log2) {
            if self.consumer == producer {
                break;
            }
            if drain.requests.len() == capacity {
                drain.more = true;
                break;
            }
            let slot = self.base + 16 * u64::from(self.consumer & ((1 << self.log2) - 1));
            let words = [mem.read_u64(slot), mem.read_u64(slot + 8)];
            drain.requests.push(PriRequest::decode(words));
            self.consumer = (self.consumer + 1) & wrap_mask;
        }
        mmio.write32(offset::PRIQ_CONS, self.consumer | self.overflow_ack);
        drain
    }
}

impl<M: Mmio> Smmu<M> {
    /// Sets up and enables the PRI queue (CR0.PRIQEN, with CR0ACK polled):
    /// one zeroed frame, PROD = CONS = 0. Needs IDR0.PRI (QEMU has none:
    /// `Unsupported`) and [`Smmu::block_all_dma`] done.
    pub fn enable_page_requests(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
    ) -> Result<(), SmmuError> {
        if !self.features.idr0.pri() {
            return Err(SmmuError::Unsupported {
                what: "PRI queue (SMMU_IDR0.PRI)",
            });
        }
        if self.command_queue.is_none() {
            return Err(SmmuError::NotInitialised);
        }
        let current = self.mmio.read32(offset::CR0);
        if current & cr0::PRIQEN != 0 {
            self.write_cr0(current & !cr0::PRIQEN, "PRIQEN clear")?;
        }
        let base = match &self.pri_queue {
            Some(queue) => queue.base,
            None => alloc
                .alloc_zeroed_frame()
                .ok_or(SmmuError::OutOfMemory { what: "PRI queue" })?,
        };
        mem.zero(base, crate::PAGE_SIZE);
        let queue = PriQueue {
            base,
            log2: 8.min(self.features.idr1.priqs()),
            consumer: 0,
            overflow_ack: 0,
        };
        self.mmio.write64(offset::PRIQ_BASE, queue.base_register());
        self.mmio.write32(offset::PRIQ_PROD, 0);
        self.mmio.write32(offset::PRIQ_CONS, 0);
        self.pri_queue = Some(queue);
        self.write_cr0(current | cr0::PRIQEN, "PRIQEN")
    }

    /// Turns the PRI queue's interrupt on (IRQ_CTRL.PRIQ_IRQEN, 6.3.16,
    /// with IRQ_CTRLACK polled), keeping the other interrupts as they
    /// are: each request the SMMU queues raises it (the wired "priq" SPI,
    /// the one after the event queue's on Arm's virt layout), so a page
    /// request is taken at once rather than at the next event interrupt,
    /// `Pop` or timer. Needs the PRI queue ([`Smmu::enable_page_requests`];
    /// QEMU has none: `Unsupported`).
    pub fn enable_page_request_interrupt(&self) -> Result<(), SmmuError> {
        if self.pri_queue.is_none() {
            return Err(SmmuError::Unsupported {
                what: "the PRIQ interrupt without a PRI queue",
            });
        }
        let value = self.mmio.read32(offset::IRQ_CTRL) | irq_ctrl::PRIQ;
        self.write_irq_ctrl(value, "PRIQ_IRQEN")
    }

    /// Takes up to 16 page requests from the PRI queue (bounded; call
    /// again while `more`). Empty if the queue is not enabled.
    pub fn read_page_requests(&mut self, mem: &impl PhysMem) -> PriDrain {
        match self.pri_queue.as_mut() {
            Some(queue) => queue.drain(&self.mmio, mem),
            None => PriDrain::default(),
        }
    }

    /// Answers `request`'s group with CMD_PRI_RESP and waits for CMD_SYNC.
    pub fn respond_page_request(
        &mut self,
        mem: &impl PhysMem,
        request: &PriRequest,
        response: PriResponse,
    ) -> Result<(), SmmuError> {
        if self.pri_queue.is_none() {
            return Err(SmmuError::Unsupported {
                what: "page requests are not enabled",
            });
        }
        self.submit(
            mem,
            [Command::PriResponse {
                stream_id: request.stream_id,
                substream_id: request.substream_id,
                group_index: request.group_index,
                response,
            }],
        )
    }

    /// Resumes the stalled transaction `stall_tag` of `stream_id` (from an
    /// event with Stall=1) with CMD_RESUME and waits for CMD_SYNC. Needs a
    /// stalling SMMU (IDR0.STALL_MODEL != 0b01; QEMU: `Unsupported`).
    pub fn resume_stalled(
        &mut self,
        mem: &impl PhysMem,
        stream_id: u32,
        stall_tag: u16,
        action: ResumeAction,
    ) -> Result<(), SmmuError> {
        if self.features.idr0.stall_model() == 1 {
            return Err(SmmuError::Unsupported {
                what: "stalls (SMMU_IDR0.STALL_MODEL is terminate-only)",
            });
        }
        self.submit(
            mem,
            [Command::Resume {
                stream_id,
                stall_tag,
                action,
            }],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_commands_encode_per_the_specification() {
        let request = PriRequest {
            stream_id: 0x10,
            substream_id: Some(7),
            address: 0x1234_5000,
            read: false,
            write: true,
            execute: false,
            privileged: false,
            last: true,
            group_index: 0x1ff,
        };
        assert_eq!(PriRequest::decode(request.encode()), request);
        assert_eq!(
            request.encode()[0],
            0x10 | 7 << 32 | 1 << 61 | 1 << 62 | 1 << 63
        );
        let response = Command::PriResponse {
            stream_id: 0x10,
            substream_id: Some(7),
            group_index: 0x1ff,
            response: PriResponse::Success,
        };
        assert_eq!(
            response.encode(),
            [0x41 | 1 << 11 | 7 << 12 | 0x10 << 32, 0x1ff | 2 << 12]
        );
        let resume = Command::Resume {
            stream_id: 0x10,
            stall_tag: 0xbeef,
            action: ResumeAction::Retry,
        };
        assert_eq!(resume.encode(), [0x44 | 1 << 12 | 0x10 << 32, 0xbeef]);
    }
}
