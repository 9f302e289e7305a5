//! Memory a protection domain shares with another: word access to a region
//! init mapped (`[[protection_domain.map]]`), volatile because the other
//! side reads and writes it at any time.

/// `words` 64-bit words from `address`, shared with another domain.
#[derive(Clone, Copy, Debug)]
pub struct SharedWords {
    address: u64,
    words: usize,
}

impl SharedWords {
    /// The words at `address`.
    ///
    /// # Safety
    ///
    /// `words * 8` bytes from `address` (8-byte aligned) are mapped
    /// readable, and writable if [`write`](SharedWords::write) is used, for
    /// the rest of the program, and nothing in this program refers to them
    /// except through this type.
    #[allow(unsafe_code)]
    pub const unsafe fn new(address: u64, words: usize) -> SharedWords {
        SharedWords { address, words }
    }

    /// Word `index`, or `None` past the end.
    #[allow(unsafe_code)]
    pub fn read(&self, index: usize) -> Option<u64> {
        (index < self.words).then(|| {
            // SAFETY: `new`'s contract: the word is mapped readable; the
            // index is in bounds; volatile, as the other domain writes it.
            unsafe { (self.address as *const u64).add(index).read_volatile() }
        })
    }

    /// Writes word `index`; `false` (nothing written) past the end.
    #[allow(unsafe_code)]
    pub fn write(&self, index: usize, value: u64) -> bool {
        if index >= self.words {
            return false;
        }
        // SAFETY: `new`'s contract: the word is mapped writable; the index
        // is in bounds; volatile, as the other domain reads it.
        unsafe { (self.address as *mut u64).add(index).write_volatile(value) };
        true
    }
}
