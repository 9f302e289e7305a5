//! Bounded polling of hardware status bits.
//!
//! Every wait in this crate spins at most [`PollLimit`] times; the caller
//! turns a `false` into an error naming the register and bit.

/// How many times a status register is read before giving up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollLimit(pub u32);

impl PollLimit {
    /// A generous default for real hardware (each iteration is one MMIO read).
    pub const DEFAULT: PollLimit = PollLimit(1_000_000);

    /// Calls `done` until it returns true, at most `self.0` times.
    /// Returns whether it became true.
    pub fn wait(self, mut done: impl FnMut() -> bool) -> bool {
        for _ in 0..self.0 {
            if done() {
                return true;
            }
            core::hint::spin_loop();
        }
        false
    }
}

impl Default for PollLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}
