//! Host fixtures shared by the integration tests: a window of table frames
//! in a `Vec`, a bitmap pool over the same IPAs, and an invalidator that
//! records its calls.
#![allow(dead_code)]

use iopt::{
    BitmapPool, Config, ENTRIES_PER_TABLE, Format, InvalidationRange, Invalidator, IoPageTable,
    SliceMemory,
};

/// IPA of the first table frame: deliberately not 0, so an IPA is never
/// mistaken for a slot number.
pub const WINDOW_BASE: u64 = 0x8000_0000;

/// A table over `frames` (all of them in the pool).
pub type HostTable<'a> = IoPageTable<BitmapPool<8>, SliceMemory<'a>>;

/// `count` zeroed frames.
pub fn frames(count: usize) -> Vec<[u64; ENTRIES_PER_TABLE]> {
    vec![[0; ENTRIES_PER_TABLE]; count]
}

/// A table of `format` over `frames`, every frame in the pool.
pub fn table(format: Format, frames: &mut [[u64; ENTRIES_PER_TABLE]]) -> HostTable<'_> {
    let count = frames.len();
    let memory = SliceMemory::new(WINDOW_BASE, frames).expect("window fits");
    let pool = BitmapPool::new(WINDOW_BASE, count).expect("pool fits");
    IoPageTable::new(Config::new(format), pool, memory).expect("root frame")
}

/// One call an invalidator received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `invalidate_range`.
    Range(InvalidationRange),
    /// `invalidate_all`.
    All,
}

/// Records every call; refuses the next `refuse` calls.
#[derive(Debug, Default)]
pub struct Recorder {
    pub calls: Vec<Call>,
    pub refuse: usize,
}

/// The error a refusing [`Recorder`] returns.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused;

impl Invalidator for Recorder {
    type Error = Refused;

    fn invalidate_range(&mut self, range: InvalidationRange) -> Result<(), Refused> {
        if self.refuse > 0 {
            self.refuse -= 1;
            return Err(Refused);
        }
        self.calls.push(Call::Range(range));
        Ok(())
    }

    fn invalidate_all(&mut self) -> Result<(), Refused> {
        if self.refuse > 0 {
            self.refuse -= 1;
            return Err(Refused);
        }
        self.calls.push(Call::All);
        Ok(())
    }
}
