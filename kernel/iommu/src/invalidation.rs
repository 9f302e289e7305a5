//! Batching invalidation API shared by VT-d and SMMUv3.
//!
//! Callers collect every range whose mappings changed into an
//! [`InvalidationBatch`], then flush it with [`crate::vtd::VtdUnit::flush`]
//! or [`crate::smmuv3::Smmu::flush`]: the ranges become page-selective
//! commands (VT-d: naturally aligned power-of-two chunks up to CAP.MAMV;
//! SMMUv3: one TLBI per 4 KiB page), a target with too many commands is
//! invalidated whole instead, and the batch ends with exactly **one**
//! completion wait (VT-d wait descriptor / SMMUv3 CMD_SYNC). Nothing
//! returns before the hardware has completed every command.

/// What TLB entries a range belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidationTarget {
    /// VT-d second-stage (or pass-through) mappings of a domain: IOTLB
    /// invalidation descriptors (VT-d 6.5.2.3). `nested`: the domain is
    /// also the second stage of nested PASIDs, whose combined entries are
    /// tagged by input address, not IPA, so the whole domain is invalidated.
    VtdDomain {
        /// Domain id.
        domain: u16,
        /// Whether first stages are nested on this domain.
        nested: bool,
    },
    /// VT-d first-stage or nested mappings of one PASID: PASID-based IOTLB
    /// descriptors (VT-d 6.5.2.4).
    VtdPasid {
        /// Domain id.
        domain: u16,
        /// PASID.
        pasid: u32,
    },
    /// SMMUv3 stage-2 mappings of a VMID: CMD_TLBI_S2_IPA; `nested` also
    /// issues CMD_TLBI_NH_ALL for the VMID, since combined stage-1+2
    /// entries may cache the old stage-2 output.
    SmmuStage2 {
        /// VMID.
        vmid: u16,
        /// Whether stage 1 is nested on this stage 2.
        nested: bool,
    },
    /// SMMUv3 stage-1 mappings of an ASID: CMD_TLBI_NH_VA.
    SmmuStage1 {
        /// VMID.
        vmid: u16,
        /// ASID.
        asid: u16,
    },
}

/// One changed range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidationRange {
    /// Whose entries.
    pub target: InvalidationTarget,
    /// First byte (rounded down to 4 KiB).
    pub start: u64,
    /// Length in bytes (rounded up to whole pages).
    pub length: u64,
}

/// Ranges waiting to be invalidated together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidationBatch {
    ranges: [Option<InvalidationRange>; Self::CAPACITY],
    len: usize,
}

impl InvalidationBatch {
    /// Ranges one batch holds.
    pub const CAPACITY: usize = 32;
    /// Above this many page-selective commands for one range, the whole
    /// target is invalidated instead.
    pub const MAX_COMMANDS_PER_RANGE: usize = 16;

    /// An empty batch.
    pub const fn new() -> Self {
        Self {
            ranges: [None; Self::CAPACITY],
            len: 0,
        }
    }

    /// Adds a range; returns `false` (adding nothing) when the batch is full
    /// and must be flushed first. Empty ranges are ignored.
    pub fn add(&mut self, target: InvalidationTarget, start: u64, length: u64) -> bool {
        if length == 0 {
            return true;
        }
        if self.len == Self::CAPACITY {
            return false;
        }
        let first = start & !0xfff;
        let end = start.saturating_add(length).saturating_add(0xfff) & !0xfff;
        self.ranges[self.len] = Some(InvalidationRange {
            target,
            start: first,
            length: end - first,
        });
        self.len += 1;
        true
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Removes every range.
    pub fn clear(&mut self) {
        *self = Self::new();
    }
    /// The ranges.
    pub fn iter(&self) -> impl Iterator<Item = InvalidationRange> + '_ {
        self.ranges[..self.len].iter().filter_map(|r| *r)
    }
}

impl Default for InvalidationBatch {
    fn default() -> Self {
        Self::new()
    }
}

/// What one flush issued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InvalidationStats {
    /// Invalidation commands/descriptors issued, completion waits excluded.
    pub commands: u64,
    /// Completion waits (wait descriptors / CMD_SYNCs): 1 per non-empty batch.
    pub waits: u64,
}

/// Splits `[start, start + length)` (page aligned) into naturally aligned
/// power-of-two blocks of pages, each at most 2^`max_order` pages, as
/// `(address, order)`. This is the address/AM pair of VT-d page-selective
/// invalidation (VT-d 6.5.2.3: the address must be aligned to 2^(12+AM)).
pub fn aligned_chunks(start: u64, length: u64, max_order: u32) -> impl Iterator<Item = (u64, u8)> {
    let mut page = start >> 12;
    let end = (start + length) >> 12;
    core::iter::from_fn(move || {
        if page >= end {
            return None;
        }
        let align = if page == 0 { 63 } else { page.trailing_zeros() };
        let fit = 63 - (end - page).leading_zeros();
        let order = align.min(fit).min(max_order);
        let chunk = (page << 12, order as u8);
        page += 1 << order;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn chunks_are_aligned_and_cover_exactly() {
        let chunks: Vec<_> = aligned_chunks(0x3000, 0x9000, 18).collect();
        assert_eq!(chunks, [(0x3000, 0), (0x4000, 2), (0x8000, 2)]);
        let chunks: Vec<_> = aligned_chunks(0, 1 << 21, 18).collect();
        assert_eq!(chunks, [(0, 9)]);
        let chunks: Vec<_> = aligned_chunks(0, 1 << 21, 3).collect();
        assert_eq!(chunks.len(), 64);
        for start in (0..64u64).map(|p| p << 12) {
            for pages in 1..40u64 {
                let mut next = start;
                for (address, order) in aligned_chunks(start, pages << 12, 4) {
                    assert_eq!(address, next);
                    assert_eq!(address % (4096 << order), 0);
                    next += 4096 << order;
                }
                assert_eq!(next, start + (pages << 12));
            }
        }
    }

    #[test]
    fn batch_rounds_and_fills() {
        let mut batch = InvalidationBatch::new();
        let target = InvalidationTarget::VtdDomain {
            domain: 1,
            nested: false,
        };
        assert!(batch.add(target, 0x1234, 0x10));
        assert!(batch.add(target, 0, 0));
        let range = batch.iter().next().unwrap();
        assert_eq!((range.start, range.length), (0x1000, 0x1000));
        for _ in 1..InvalidationBatch::CAPACITY {
            assert!(batch.add(target, 0, 1));
        }
        assert!(!batch.add(target, 0, 1));
        batch.clear();
        assert!(batch.is_empty());
    }
}
