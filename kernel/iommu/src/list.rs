//! A fixed-capacity list for returning fault and event records without a heap.

/// Up to `N` records, in order; `dropped` counts records that did not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordList<T: Copy, const N: usize> {
    items: [Option<T>; N],
    len: usize,
    /// Records read from hardware but not kept because the list was full.
    pub dropped: usize,
}

impl<T: Copy, const N: usize> RecordList<T, N> {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            items: [None; N],
            len: 0,
            dropped: 0,
        }
    }
    /// Appends `item`, or counts it as dropped when full.
    pub fn push(&mut self, item: T) {
        if self.len < N {
            self.items[self.len] = Some(item);
            self.len += 1;
        } else {
            self.dropped += 1;
        }
    }
    /// Most records the list keeps.
    pub const fn capacity(&self) -> usize {
        N
    }
    /// Number of records kept.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether no record was kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The record at `index`.
    pub fn get(&self, index: usize) -> Option<T> {
        self.items.get(index).copied().flatten()
    }
    /// Iterates over the kept records.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.items[..self.len].iter().filter_map(|item| *item)
    }
}

impl<T: Copy, const N: usize> Default for RecordList<T, N> {
    fn default() -> Self {
        Self::new()
    }
}
