//! VT-d queued invalidation: descriptor encoders and the invalidation queue
//! with a bounded wait for completion.
//!
//! Source: VT-d 6.5.2 ("Queued Invalidation Interface") and 11.4.9 (IQH, IQT,
//! IQA). Every batch ends with one invalidation wait descriptor whose status
//! write the driver polls for; a batch never returns before the hardware has
//! processed every descriptor in it.

use super::VtdError;
use super::regs::{FaultStatus, offset};
use crate::{FrameAllocator, Mmio, PAGE_SIZE, PhysAddr, PhysMem, PollLimit};

/// One invalidation descriptor; 128-bit descriptors use the first two words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Descriptor(pub [u64; 4]);

/// Descriptor type codes (VT-d 6.5.2, bits 3:0).
pub mod kind {
    /// Context-cache invalidate (6.5.2.1).
    pub const CONTEXT_CACHE: u64 = 0x1;
    /// IOTLB invalidate (6.5.2.3).
    pub const IOTLB: u64 = 0x2;
    /// Invalidation wait (6.5.2.8).
    pub const WAIT: u64 = 0x5;
    /// PASID-based IOTLB invalidate (6.5.2.4).
    pub const PASID_IOTLB: u64 = 0x6;
    /// PASID-cache invalidate (6.5.2.2).
    pub const PASID_CACHE: u64 = 0x7;
    /// Page group response (6.5.2.9).
    pub const PAGE_GROUP_RESPONSE: u64 = 0x9;
}

/// Scope of a context-cache invalidation (VT-d 6.5.2.1, G field bits 5:4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextScope {
    /// Every context entry.
    Global,
    /// Entries tagged with one domain id.
    Domain(u16),
    /// One device's entry (source id, function mask bits).
    Device {
        /// Domain id the entry was tagged with.
        domain: u16,
        /// Requester id.
        source_id: u16,
        /// FM: function-mask (which low bits of the source id to ignore).
        function_mask: u8,
    },
}

/// Scope of an IOTLB invalidation (VT-d 6.5.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IotlbScope {
    /// Every IOTLB entry.
    Global,
    /// Every entry of one domain.
    Domain(u16),
    /// A naturally aligned range of 2^order pages of one domain.
    Pages {
        /// Domain id.
        domain: u16,
        /// First address (aligned to 2^(12+order)).
        address: u64,
        /// AM: address mask (log2 of the number of 4 KiB pages).
        order: u8,
        /// IH: invalidation hint, only leaf entries changed.
        leaf_only: bool,
    },
}

/// Scope of a PASID-cache invalidation (VT-d 6.5.2.2, G field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasidCacheScope {
    /// G=00: every PASID entry tagged with the domain.
    Domain(u16),
    /// G=01: one PASID of the domain.
    Pasid {
        /// Domain id.
        domain: u16,
        /// PASID.
        pasid: u32,
    },
    /// G=11: everything.
    Global,
}

/// Scope of a PASID-based IOTLB invalidation (VT-d 6.5.2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasidIotlbScope {
    /// G=10: every entry of one PASID in a domain.
    Pasid {
        /// Domain id.
        domain: u16,
        /// PASID.
        pasid: u32,
    },
    /// G=11: 2^order pages of one PASID.
    Pages {
        /// Domain id.
        domain: u16,
        /// PASID.
        pasid: u32,
        /// First address.
        address: u64,
        /// AM, log2 of the page count.
        order: u8,
        /// IH, only leaves changed.
        leaf_only: bool,
    },
}

impl Descriptor {
    /// Context-cache invalidate descriptor (VT-d 6.5.2.1): G bits 5:4,
    /// DID 31:16, SID 47:32, FM 49:48.
    pub fn context_cache(scope: ContextScope) -> Self {
        let low = match scope {
            ContextScope::Global => 1 << 4,
            ContextScope::Domain(did) => 2 << 4 | u64::from(did) << 16,
            ContextScope::Device {
                domain,
                source_id,
                function_mask,
            } => {
                3 << 4
                    | u64::from(domain) << 16
                    | u64::from(source_id) << 32
                    | u64::from(function_mask & 3) << 48
            }
        };
        Self([kind::CONTEXT_CACHE | low, 0, 0, 0])
    }

    /// IOTLB invalidate descriptor (VT-d 6.5.2.3): G bits 5:4, DW bit 6,
    /// DR bit 7, DID 31:16; high: AM 5:0, IH 6, ADDR 63:12.
    pub fn iotlb(scope: IotlbScope, drain: bool) -> Self {
        let drain_bits = if drain { 3 << 6 } else { 0 };
        let (low, high) = match scope {
            IotlbScope::Global => (1 << 4, 0),
            IotlbScope::Domain(did) => (2 << 4 | u64::from(did) << 16, 0),
            IotlbScope::Pages {
                domain,
                address,
                order,
                leaf_only,
            } => (
                3 << 4 | u64::from(domain) << 16,
                (address & !0xfff) | u64::from(leaf_only) << 6 | u64::from(order & 0x3f),
            ),
        };
        Self([kind::IOTLB | drain_bits | low, high, 0, 0])
    }

    /// PASID-cache invalidate descriptor (VT-d 6.5.2.2): G 5:4, DID 31:16, PASID 51:32.
    pub fn pasid_cache(scope: PasidCacheScope) -> Self {
        let low = match scope {
            PasidCacheScope::Domain(did) => u64::from(did) << 16,
            PasidCacheScope::Pasid { domain, pasid } => {
                1 << 4 | u64::from(domain) << 16 | u64::from(pasid & 0xf_ffff) << 32
            }
            PasidCacheScope::Global => 3 << 4,
        };
        Self([kind::PASID_CACHE | low, 0, 0, 0])
    }

    /// PASID-based IOTLB invalidate descriptor (VT-d 6.5.2.4): G 5:4,
    /// DID 31:16, PASID 51:32; high: AM 5:0, IH 6, ADDR 63:12.
    pub fn pasid_iotlb(scope: PasidIotlbScope) -> Self {
        let (low, high) = match scope {
            PasidIotlbScope::Pasid { domain, pasid } => (
                2 << 4 | u64::from(domain) << 16 | u64::from(pasid & 0xf_ffff) << 32,
                0,
            ),
            PasidIotlbScope::Pages {
                domain,
                pasid,
                address,
                order,
                leaf_only,
            } => (
                3 << 4 | u64::from(domain) << 16 | u64::from(pasid & 0xf_ffff) << 32,
                (address & !0xfff) | u64::from(leaf_only) << 6 | u64::from(order & 0x3f),
            ),
        };
        Self([kind::PASID_IOTLB | low, high, 0, 0])
    }

    /// Invalidation wait descriptor with status write (VT-d 6.5.2.8): SW bit 5,
    /// FN bit 6 (fence), status data 63:32; high: status address 63:2.
    pub fn wait(status_address: PhysAddr, status_data: u32) -> Self {
        Self([
            kind::WAIT | 1 << 5 | 1 << 6 | u64::from(status_data) << 32,
            status_address & !3,
            0,
            0,
        ])
    }

    /// Page group response descriptor (VT-d 6.5.2.9): answers the page
    /// request group `group_index` of requester `source_id`. Word 0: PASID
    /// present bit 4, response code 15:12, requester id 31:16, PASID 51:32;
    /// word 1: page request group index 11:3.
    pub fn page_group_response(
        source_id: u16,
        pasid: Option<u32>,
        group_index: u16,
        code: super::prq::ResponseCode,
    ) -> Self {
        let pasid_bits = match pasid {
            Some(pasid) => 1 << 4 | u64::from(pasid & 0xf_ffff) << 32,
            None => 0,
        };
        Self([
            kind::PAGE_GROUP_RESPONSE
                | pasid_bits
                | u64::from(code.bits()) << 12
                | u64::from(source_id) << 16,
            u64::from(group_index & 0x1ff) << 3,
            0,
            0,
        ])
    }

    /// The descriptor type (bits 3:0).
    pub fn kind(&self) -> u64 {
        self.0[0] & 0xf
    }
}

/// The invalidation queue: one 4 KiB ring plus a status word for wait descriptors.
#[derive(Debug)]
pub struct InvalidationQueue {
    base: PhysAddr,
    status: PhysAddr,
    wide: bool,
    entries: u32,
    tail: u32,
    /// IQH as last read: the hardware's head is at or past it, so the
    /// ring is not full while the next tail differs from it.
    head: u32,
    sequence: u32,
    /// Descriptors submitted so far, wait descriptors included.
    pub descriptors_issued: u64,
    /// Completion waits issued so far (one per batch).
    pub waits_issued: u64,
}

impl InvalidationQueue {
    /// Allocates the ring and the status word. `wide` selects 256-bit
    /// descriptors (IQA.DW=1), required in scalable mode.
    pub fn new(
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        wide: bool,
    ) -> Result<Self, VtdError> {
        let base = alloc.alloc_zeroed_frame().ok_or(VtdError::OutOfMemory {
            what: "invalidation queue",
        })?;
        let status = alloc.alloc_zeroed_frame().ok_or(VtdError::OutOfMemory {
            what: "invalidation wait status",
        })?;
        mem.write_u64(status, 0);
        let size = if wide { 32 } else { 16 };
        Ok(Self {
            base,
            status,
            wide,
            entries: (PAGE_SIZE / size) as u32,
            tail: 0,
            head: 0,
            sequence: 0,
            descriptors_issued: 0,
            waits_issued: 0,
        })
    }

    /// The IQA value: base, DW (bit 11), QS=0 for one 4 KiB page (VT-d 11.4.9.3).
    pub fn iqa_value(&self) -> u64 {
        self.base | u64::from(self.wide) << 11
    }

    fn descriptor_size(&self) -> u64 {
        if self.wide { 32 } else { 16 }
    }

    /// Resets the software tail; called when the queue is (re-)enabled with IQT=0.
    pub fn reset(&mut self) {
        self.tail = 0;
        self.head = 0;
    }

    fn head_index(&self, mmio: &impl Mmio) -> u32 {
        ((mmio.read64(offset::IQH) & 0x7_fff0) / self.descriptor_size()) as u32
    }

    /// Reports FSTS.IQE/ITE/ICE and recovers (VT-d 6.5.2.10): for IQE the
    /// descriptor at IQH is replaced by a harmless wait descriptor and IQE
    /// is cleared so the hardware resumes; ITE/ICE are cleared. The error
    /// is still returned to the caller.
    fn check_errors(&self, mmio: &impl Mmio, mem: &impl PhysMem) -> Result<(), VtdError> {
        let status = FaultStatus::from_bits_retain(mmio.read32(offset::FSTS));
        let errors = status & (FaultStatus::IQE | FaultStatus::ITE | FaultStatus::ICE);
        if errors.is_empty() {
            return Ok(());
        }
        self.recover(mmio, mem, errors)
    }

    /// The error half of [`Self::check_errors`]: cold and out of line, so
    /// the callers' waits keep only the status test (LTO had copied it
    /// into seven callers; kernel/README.md, "Size").
    #[cold]
    #[inline(never)]
    fn recover(
        &self,
        mmio: &impl Mmio,
        mem: &impl PhysMem,
        errors: FaultStatus,
    ) -> Result<(), VtdError> {
        if errors.contains(FaultStatus::IQE) {
            let slot = self.base + u64::from(self.head_index(mmio)) * self.descriptor_size();
            let words = if self.wide { 4 } else { 2 };
            // A wait descriptor writing 0 to the status word: harmless
            // (waits compare against sequence numbers >= 1), and valid for
            // QEMU, which rejects a wait descriptor with neither SW nor IF.
            let no_op = Descriptor::wait(self.status, 0);
            for (i, word) in no_op.0.iter().take(words).enumerate().rev() {
                mem.write_u64(slot + 8 * i as u64, *word);
            }
        }
        mmio.write32(offset::FSTS, errors.bits());
        Err(VtdError::InvalidationQueueError { status: errors })
    }

    fn publish_tail(&self, mmio: &impl Mmio) {
        mmio.write64(offset::IQT, u64::from(self.tail) * self.descriptor_size());
    }

    /// The ring position after `position`.
    #[inline(always)]
    fn after(&self, position: u32) -> u32 {
        if position + 1 == self.entries {
            0
        } else {
            position + 1
        }
    }

    /// Writes `descriptor` at the tail (not yet published). The ring has
    /// room while the next tail differs from the head last read; only
    /// when it meets it is IQH read again, and the bounded wait for room
    /// is out of line ([`Self::make_room`]).
    #[inline(always)]
    fn push(
        &mut self,
        mmio: &impl Mmio,
        mem: &impl PhysMem,
        descriptor: &Descriptor,
        limit: PollLimit,
    ) -> Result<(), VtdError> {
        let next = self.after(self.tail);
        if next == self.head {
            self.make_room(mmio, mem, next, limit)?;
        }
        let slot = self.base + u64::from(self.tail) * self.descriptor_size();
        let [low, high, wide_low, wide_high] = descriptor.0;
        mem.write_u64(slot, low);
        mem.write_u64(slot + 8, high);
        if self.wide {
            mem.write_u64(slot + 16, wide_low);
            mem.write_u64(slot + 24, wide_high);
        }
        self.tail = next;
        self.descriptors_issued += 1;
        Ok(())
    }

    /// [`Self::push`] when the next tail `next` meets the head last read:
    /// reads IQH again and, while the ring is still full, lets the
    /// hardware consume what is queued (bounded).
    #[cold]
    #[inline(never)]
    fn make_room(
        &mut self,
        mmio: &impl Mmio,
        mem: &impl PhysMem,
        next: u32,
        limit: PollLimit,
    ) -> Result<(), VtdError> {
        self.head = self.head_index(mmio);
        if next != self.head {
            return Ok(());
        }
        self.publish_tail(mmio);
        let mut error = Ok(());
        let drained = limit.wait(|| {
            error = self.check_errors(mmio, mem);
            error.is_err() || next != self.head_index(mmio)
        });
        error?;
        if !drained {
            return Err(VtdError::Timeout {
                register: "IQH",
                bit: "QH (queue full)",
            });
        }
        self.head = self.head_index(mmio);
        Ok(())
    }

    /// Queues `descriptors` followed by one wait descriptor, publishes the
    /// tail and waits (bounded) until the hardware writes the wait status.
    ///
    /// The status is read once here (a unit that completes at once, as
    /// QEMU's does inside the IQT write, is seen by it); the bounded poll
    /// is out of line ([`Self::wait_for_status`]).
    #[inline]
    pub fn submit_and_wait(
        &mut self,
        mmio: &impl Mmio,
        mem: &impl PhysMem,
        descriptors: impl IntoIterator<Item = Descriptor>,
        limit: PollLimit,
    ) -> Result<(), VtdError> {
        for descriptor in descriptors {
            self.push(mmio, mem, &descriptor, limit)?;
        }
        self.sequence = self.sequence.wrapping_add(1).max(1);
        let sequence = self.sequence;
        self.push(mmio, mem, &Descriptor::wait(self.status, sequence), limit)?;
        self.waits_issued += 1;
        self.publish_tail(mmio);
        if mem.read_u32(self.status) == sequence {
            return Ok(());
        }
        self.wait_for_status(mmio, mem, sequence, limit)
    }

    /// [`Self::submit_and_wait`]'s bounded poll of the wait status for
    /// `sequence`, checking the queue's error bits between reads.
    #[cold]
    #[inline(never)]
    fn wait_for_status(
        &self,
        mmio: &impl Mmio,
        mem: &impl PhysMem,
        sequence: u32,
        limit: PollLimit,
    ) -> Result<(), VtdError> {
        let mut error = Ok(());
        let done = limit.wait(|| {
            if mem.read_u32(self.status) == sequence {
                return true;
            }
            error = self.check_errors(mmio, mem);
            error.is_err()
        });
        error?;
        if done {
            Ok(())
        } else {
            Err(VtdError::Timeout {
                register: "invalidation wait status",
                bit: "status data",
            })
        }
    }
}
