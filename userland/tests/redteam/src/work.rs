//! The honest domain's work, in one place for both sides: the words it
//! writes into its private memory and the answer it computes from them,
//! which the attacker recomputes from the definition to check it.

/// The honest domain's private memory (`honest_memory`, 16 KiB), here and
/// where the image maps it in the honest domain.
pub const HONEST_MEMORY: u64 = 0x4000_0000;
/// Words of it.
pub const WORDS: usize = 16 * 1024 / 8;
/// The label of the attacker's last call: "check your work"; MR0 a nonce.
pub const CHECK: u32 = 0xC4EC;

/// Word `index` of the honest domain's memory: a tag in the high half
/// (which the attacker looks for in what its device reads) and the index
/// mixed into the rest.
pub fn word(index: usize) -> u64 {
    0x484F_4E45_0000_0000 | ((index as u64).wrapping_mul(0x9E37_79B9) & 0xFFFF_FFFF)
}

/// Whether `value` looks like a word of the honest domain's memory.
pub fn is_honest(value: u64) -> bool {
    value >> 32 == 0x484F_4E45
}

/// The answer to [`CHECK`] with `nonce`, from the memory's words.
pub fn answer(nonce: u64, words: impl Iterator<Item = u64>) -> u64 {
    words.fold(nonce, |acc, value| {
        (acc ^ value).rotate_left(13).wrapping_mul(0x100_0000_01B3)
    })
}
