//! Batched invalidation of the IOTLB and walk caches after table changes.
//!
//! Every `map` and `unmap` records the IOVA range it touched in a small
//! bounded batch instead of invalidating at once. The batch keeps ranges
//! coalesced: a new range that overlaps or touches a recorded one is merged
//! with it (repeatedly, so it can join two), so mapping 64 adjacent pages one
//! at a time leaves a single range. When a range fits nowhere and the batch
//! already holds [`BATCH_CAPACITY`] ranges, the batch overflows and becomes
//! one "invalidate everything of this table" request.
//!
//! [`IoPageTable::flush`](crate::IoPageTable::flush) hands the batch to an
//! [`Invalidator`]: one call per range, or one `invalidate_all` after an
//! overflow. Maps are recorded too, not only unmaps: VT-d in caching mode
//! (QEMU `caching-mode=on`) and the kernel's shadow of a VT-d first stage
//! (DESIGN.md, "Per vendor") only learn of new mappings through
//! invalidations.

/// Maximum number of separate ranges a batch holds before it overflows into
/// a single "invalidate all".
pub const BATCH_CAPACITY: usize = 8;

/// A range of IOVAs whose translations changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidationRange {
    /// First IOVA of the range (4 KiB aligned).
    pub iova: u64,
    /// Length in bytes (a non-zero multiple of 4 KiB).
    pub len: u64,
    /// Only page (level-3) entries changed in the range. When false, a table
    /// entry was also added or removed, so walk caches (VT-d paging-structure
    /// caches, SMMU walk caches) must be invalidated for the range too
    /// (VT-d IH = 0; SMMU TLBI without Leaf).
    pub leaf_only: bool,
}

impl InvalidationRange {
    /// One past the last IOVA of the range (saturating at 2^64).
    pub fn end(&self) -> u64 {
        self.iova.saturating_add(self.len)
    }
}

/// Carries invalidation requests to whoever can perform them; in a driver,
/// the `IoUserTable.Invalidate` invocation, which returns only after the
/// hardware has completed the invalidation.
pub trait Invalidator {
    /// Why an invalidation could not be performed.
    type Error;
    /// Invalidates cached translations of `range`; returns when complete.
    fn invalidate_range(&mut self, range: InvalidationRange) -> Result<(), Self::Error>;
    /// Invalidates every cached translation of this table (walk caches
    /// included); returns when complete.
    fn invalidate_all(&mut self) -> Result<(), Self::Error>;
}

/// Why [`IoPageTable::flush`](crate::IoPageTable::flush) stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushError<E> {
    /// The invalidator refused; the ranges not yet invalidated stay in the
    /// batch and no table frame was released, so a later flush can retry.
    Invalidator(E),
    /// All invalidations completed, but a retired table frame could not be
    /// read or cleared while being released; the frames from that one on
    /// stay retired.
    Table(crate::Error),
}

impl<E: core::fmt::Display> core::fmt::Display for FlushError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FlushError::Invalidator(error) => write!(f, "invalidation failed: {error}"),
            FlushError::Table(error) => write!(f, "releasing retired tables failed: {error}"),
        }
    }
}

/// The pending invalidations: up to [`BATCH_CAPACITY`] disjoint,
/// non-adjacent ranges, or "everything" after an overflow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidationBatch {
    ranges: [InvalidationRange; BATCH_CAPACITY],
    len: usize,
    overflowed: bool,
}

impl Default for InvalidationBatch {
    fn default() -> Self {
        Self::new()
    }
}

const EMPTY_RANGE: InvalidationRange = InvalidationRange {
    iova: 0,
    len: 0,
    leaf_only: true,
};

impl InvalidationBatch {
    /// An empty batch.
    pub const fn new() -> Self {
        InvalidationBatch {
            ranges: [EMPTY_RANGE; BATCH_CAPACITY],
            len: 0,
            overflowed: false,
        }
    }

    /// Adds `range`, merging it with every recorded range it overlaps or
    /// touches; overflows into "everything" when it fits nowhere. An empty
    /// range is ignored.
    #[inline]
    pub fn record(&mut self, range: InvalidationRange) {
        if range.len == 0 || self.overflowed {
            return;
        }
        let mut merged = range;
        let mut index = 0;
        while index < self.len {
            let other = self.ranges[index];
            if other.iova <= merged.end() && merged.iova <= other.end() {
                let start = other.iova.min(merged.iova);
                let end = other.end().max(merged.end());
                merged = InvalidationRange {
                    iova: start,
                    len: end - start,
                    leaf_only: merged.leaf_only && other.leaf_only,
                };
                self.remove(index);
                // Restart: the grown range may now touch an earlier one.
                index = 0;
            } else {
                index += 1;
            }
        }
        if self.len == BATCH_CAPACITY {
            self.overflowed = true;
            self.len = 0;
        } else {
            self.ranges[self.len] = merged;
            self.len += 1;
        }
    }

    /// The recorded ranges (empty after an overflow), in no particular order.
    pub fn ranges(&self) -> &[InvalidationRange] {
        &self.ranges[..self.len]
    }

    /// Whether the batch overflowed into "invalidate everything".
    pub fn is_overflowed(&self) -> bool {
        self.overflowed
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0 && !self.overflowed
    }

    /// Number of invalidator calls a flush would make now.
    pub fn pending_calls(&self) -> usize {
        if self.overflowed { 1 } else { self.len }
    }

    /// Forgets everything pending.
    pub fn clear(&mut self) {
        self.len = 0;
        self.overflowed = false;
    }

    /// Issues the pending invalidations, one call each, forgetting each one
    /// once it succeeds; returns the number of calls that succeeded and the
    /// first error.
    pub(crate) fn issue<I: Invalidator>(
        &mut self,
        invalidator: &mut I,
    ) -> (u64, Result<(), I::Error>) {
        if self.overflowed {
            return match invalidator.invalidate_all() {
                Ok(()) => {
                    self.clear();
                    (1, Ok(()))
                }
                Err(error) => (0, Err(error)),
            };
        }
        let mut calls = 0;
        while self.len > 0 {
            let range = self.ranges[self.len - 1];
            if let Err(error) = invalidator.invalidate_range(range) {
                return (calls, Err(error));
            }
            self.len -= 1;
            calls += 1;
        }
        (calls, Ok(()))
    }

    fn remove(&mut self, index: usize) {
        self.ranges.copy_within(index + 1..self.len, index);
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(page: u64, pages: u64, leaf_only: bool) -> InvalidationRange {
        InvalidationRange {
            iova: page * 4096,
            len: pages * 4096,
            leaf_only,
        }
    }

    #[test]
    fn adjacent_pages_coalesce_into_one_range() {
        let mut batch = InvalidationBatch::new();
        for page in 0..64 {
            batch.record(range(100 + page, 1, true));
        }
        assert_eq!(batch.ranges(), &[range(100, 64, true)]);
    }

    #[test]
    fn a_range_bridging_two_merges_all_three() {
        let mut batch = InvalidationBatch::new();
        batch.record(range(0, 2, true));
        batch.record(range(4, 2, true));
        assert_eq!(batch.ranges().len(), 2);
        batch.record(range(2, 2, false));
        assert_eq!(batch.ranges(), &[range(0, 6, false)]);
    }

    #[test]
    fn overlapping_ranges_merge_and_lose_leaf_only_if_either_lacks_it() {
        let mut batch = InvalidationBatch::new();
        batch.record(range(10, 5, false));
        batch.record(range(12, 10, true));
        assert_eq!(batch.ranges(), &[range(10, 12, false)]);
    }

    #[test]
    fn overflow_turns_into_all() {
        let mut batch = InvalidationBatch::new();
        for index in 0..BATCH_CAPACITY as u64 {
            batch.record(range(index * 2, 1, true));
        }
        assert!(!batch.is_overflowed());
        assert_eq!(batch.pending_calls(), BATCH_CAPACITY);
        batch.record(range(1000, 1, true));
        assert!(batch.is_overflowed());
        assert_eq!(batch.ranges(), &[]);
        assert_eq!(batch.pending_calls(), 1);
        batch.clear();
        assert!(batch.is_empty());
    }

    #[test]
    fn empty_ranges_are_ignored() {
        let mut batch = InvalidationBatch::new();
        batch.record(range(5, 0, true));
        assert!(batch.is_empty());
    }
}
