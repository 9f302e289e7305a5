//! Where the table frames come from and how their words are read and written.
//!
//! The library knows a table frame only by its IPA ([`TableFrame`]); the
//! driver says which frames it may use ([`FramePool`]) and how to reach a
//! frame's words ([`TableMemory`]). In a driver both are backed by frames it
//! holds capabilities to, mapped once into its VSpace (so it can write them)
//! and into its IoSpace (so the IOMMU can walk them): [`SliceMemory`] over
//! that mapping and [`BitmapPool`] over the same IPA window are enough. On
//! the host the same two types work over a `Vec` of frames.
//!
//! A frame's content is always 512 little-endian 64-bit words, entry `i` at
//! byte offset `8 * i` of the frame, exactly as the IOMMU reads it.

use crate::{ENTRIES_PER_TABLE, PAGE_SIZE};

/// One 4 KiB table frame, named by its IPA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableFrame {
    ipa: u64,
}

impl TableFrame {
    /// The frame at IPA 0 (a placeholder until the root is allocated).
    pub(crate) const ZERO: TableFrame = TableFrame { ipa: 0 };

    /// The frame at `ipa`, or `None` if `ipa` is not 4 KiB aligned.
    pub const fn new(ipa: u64) -> Option<TableFrame> {
        if ipa.is_multiple_of(PAGE_SIZE) {
            Some(TableFrame { ipa })
        } else {
            None
        }
    }

    /// The frame's IPA.
    pub const fn ipa(self) -> u64 {
        self.ipa
    }
}

/// The frames the library may use for tables.
///
/// The library zeroes every frame it takes before linking it, and gives a
/// frame back only when no table links to it and its last invalidation has
/// completed ([`IoPageTable::flush`](crate::IoPageTable::flush)), so a pool
/// may reuse a freed frame at once.
pub trait FramePool {
    /// Takes a free frame, or `None` when the pool is empty.
    fn alloc(&mut self) -> Option<TableFrame>;
    /// Gives back a frame that [`FramePool::alloc`] returned.
    fn free(&mut self, frame: TableFrame);
}

/// A frame IPA that no table memory backs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameNotBacked {
    /// The frame's IPA.
    pub ipa: u64,
}

/// Reads and writes the 64-bit words of table frames.
///
/// `index` is always below [`ENTRIES_PER_TABLE`].
pub trait TableMemory {
    /// Word `index` of `frame`.
    fn read(&self, frame: TableFrame, index: usize) -> Result<u64, FrameNotBacked>;
    /// Stores `value` as word `index` of `frame`. Each write must be a single
    /// 64-bit store: the IOMMU may walk the table concurrently.
    fn write(&mut self, frame: TableFrame, index: usize, value: u64) -> Result<(), FrameNotBacked>;
    /// Called after a run of writes to words `first .. first + count` of
    /// `frame`, before the library links the frame or reports success. An
    /// IOMMU whose table walks do not snoop the CPU caches (VT-d with
    /// ECAP.C = 0) needs those lines written back here; the default does
    /// nothing, right for coherent walkers (QEMU's VT-d and SMMUv3, SMMUv3
    /// with COHACC).
    fn sync(&mut self, frame: TableFrame, first: usize, count: usize) {
        let _ = (frame, first, count);
    }
    /// Every word of `frame` at once, if this memory can lend them: the
    /// library then scans runs of entries without a call per word. The
    /// default lends nothing.
    fn words(&self, frame: TableFrame) -> Option<&[u64; ENTRIES_PER_TABLE]> {
        let _ = frame;
        None
    }
    /// As [`TableMemory::words`], writable; each word is still written with
    /// one 64-bit store.
    fn words_mut(&mut self, frame: TableFrame) -> Option<&mut [u64; ENTRIES_PER_TABLE]> {
        let _ = frame;
        None
    }
}

/// [`TableMemory`] over a contiguous window of frames: frame `i` of the slice
/// is the frame at IPA `base_ipa + i * 4096`.
///
/// In a driver the slice is the driver's own CPU mapping of the frames (the
/// one place that needs `unsafe` to build it lives in the driver's runtime,
/// not here); on the host it is a `Vec`.
#[derive(Debug)]
pub struct SliceMemory<'a> {
    base_ipa: u64,
    frames: &'a mut [[u64; ENTRIES_PER_TABLE]],
}

impl<'a> SliceMemory<'a> {
    /// The window of `frames` starting at `base_ipa`, or `None` if
    /// `base_ipa` is not 4 KiB aligned or the window would pass 2^64.
    pub fn new(base_ipa: u64, frames: &'a mut [[u64; ENTRIES_PER_TABLE]]) -> Option<Self> {
        let count = u64::try_from(frames.len()).ok()?;
        count.checked_mul(PAGE_SIZE)?.checked_add(base_ipa)?;
        TableFrame::new(base_ipa)?;
        Some(SliceMemory { base_ipa, frames })
    }

    /// IPA of the first frame.
    pub fn base_ipa(&self) -> u64 {
        self.base_ipa
    }

    /// All frames, in IPA order.
    pub fn frames(&self) -> &[[u64; ENTRIES_PER_TABLE]] {
        self.frames
    }

    /// The words of the frame at `frame`, if the window holds it.
    pub fn frame(&self, frame: TableFrame) -> Option<&[u64; ENTRIES_PER_TABLE]> {
        let slot = self.slot(frame)?;
        self.frames.get(slot)
    }

    fn slot(&self, frame: TableFrame) -> Option<usize> {
        let offset = frame.ipa().checked_sub(self.base_ipa)?;
        usize::try_from(offset / PAGE_SIZE).ok()
    }
}

impl TableMemory for SliceMemory<'_> {
    fn read(&self, frame: TableFrame, index: usize) -> Result<u64, FrameNotBacked> {
        self.frame(frame)
            .and_then(|words| words.get(index))
            .copied()
            .ok_or(FrameNotBacked { ipa: frame.ipa() })
    }

    fn words(&self, frame: TableFrame) -> Option<&[u64; ENTRIES_PER_TABLE]> {
        self.frame(frame)
    }

    fn words_mut(&mut self, frame: TableFrame) -> Option<&mut [u64; ENTRIES_PER_TABLE]> {
        let slot = self.slot(frame)?;
        self.frames.get_mut(slot)
    }

    fn write(&mut self, frame: TableFrame, index: usize, value: u64) -> Result<(), FrameNotBacked> {
        let not_backed = FrameNotBacked { ipa: frame.ipa() };
        let slot = self.slot(frame).ok_or(not_backed)?;
        let word = self
            .frames
            .get_mut(slot)
            .and_then(|words| words.get_mut(index))
            .ok_or(not_backed)?;
        *word = value;
        Ok(())
    }
}

/// [`FramePool`] over a window of `count` frames starting at `base_ipa`,
/// with one bit per frame; holds up to `64 * WORDS` frames, needs no heap.
///
/// Frees of frames outside the window or not allocated are ignored (the
/// library never makes them).
#[derive(Clone, Debug)]
pub struct BitmapPool<const WORDS: usize> {
    base_ipa: u64,
    count: usize,
    used: [u64; WORDS],
    in_use: usize,
}

impl<const WORDS: usize> BitmapPool<WORDS> {
    /// A pool of the `count` frames at `base_ipa`, `base_ipa + 4096`, ...,
    /// all free; `None` if `base_ipa` is not 4 KiB aligned, `count` exceeds
    /// `64 * WORDS` or the window would pass 2^64.
    pub fn new(base_ipa: u64, count: usize) -> Option<Self> {
        TableFrame::new(base_ipa)?;
        if count > WORDS.checked_mul(64)? {
            return None;
        }
        u64::try_from(count)
            .ok()?
            .checked_mul(PAGE_SIZE)?
            .checked_add(base_ipa)?;
        Some(BitmapPool {
            base_ipa,
            count,
            used: [0; WORDS],
            in_use: 0,
        })
    }

    /// Number of frames in the window.
    pub fn capacity(&self) -> usize {
        self.count
    }

    /// Number of frames currently allocated.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Whether the frame at `frame` is currently allocated.
    pub fn is_allocated(&self, frame: TableFrame) -> bool {
        self.slot(frame)
            .is_some_and(|slot| self.used[slot / 64] & (1 << (slot % 64)) != 0)
    }

    fn slot(&self, frame: TableFrame) -> Option<usize> {
        let offset = frame.ipa().checked_sub(self.base_ipa)?;
        let slot = usize::try_from(offset / PAGE_SIZE).ok()?;
        (slot < self.count).then_some(slot)
    }
}

impl<const WORDS: usize> FramePool for BitmapPool<WORDS> {
    fn alloc(&mut self) -> Option<TableFrame> {
        for (word_index, word) in self.used.iter_mut().enumerate() {
            if *word == u64::MAX {
                continue;
            }
            let bit = word.trailing_ones() as usize;
            let slot = word_index * 64 + bit;
            if slot >= self.count {
                return None;
            }
            *word |= 1 << bit;
            self.in_use += 1;
            // slot < count, and new() checked that the window fits in u64.
            return TableFrame::new(self.base_ipa + slot as u64 * PAGE_SIZE);
        }
        None
    }

    fn free(&mut self, frame: TableFrame) {
        if let Some(slot) = self.slot(frame) {
            let mask = 1 << (slot % 64);
            if self.used[slot / 64] & mask != 0 {
                self.used[slot / 64] &= !mask;
                self.in_use -= 1;
            }
        }
    }
}
