//! The block protocol between a client domain and the virtio-blk driver
//! domain (`drivers/vblk`), and the seeded pattern a test disk holds.
//!
//! A client calls the driver's endpoint; the data of one block travels
//! through a 4 KiB page both domains map (`images/blk.toml`):
//!
//! | request (label) | MR0 | what the driver does | reply MR0 |
//! |---|---|---|---|
//! | [`INFO`] | 0 | nothing | the disk's size in [`BLOCK_SIZE`] blocks |
//! | [`READ`] | block number | reads the block from the device into the shared page | 0 |
//! | [`WRITE`] | block number | writes the shared page to the block | 0 |
//!
//! A reply's label is 0 on success, else a [`Status`] code.
//!
//! The pattern: byte `8 * w .. 8 * w + 8` of a disk holds
//! [`pattern_word`]`(seed, w)` little-endian. xtask writes the disk with
//! [`OLD_SEED`] before boot; the client checks every block against it, then
//! writes [`NEW_SEED`]; xtask checks the file after QEMU exits. `no_std`,
//! no unsafe; the host tests are in this file.
#![no_std]
#![forbid(unsafe_code)]

/// Bytes of one block of the protocol (eight 512-byte sectors).
pub const BLOCK_SIZE: usize = 4096;
/// Blocks of the test disk xtask creates (256 KiB).
pub const DISK_BLOCKS: u64 = 64;
/// Sectors (virtio-blk's 512-byte unit) per block.
pub const SECTORS_PER_BLOCK: u64 = (BLOCK_SIZE / 512) as u64;

/// Ask for the disk's size in blocks.
pub const INFO: u32 = 0x20_0001;
/// Read block MR0 into the shared page.
pub const READ: u32 = 0x20_0002;
/// Write the shared page to block MR0.
pub const WRITE: u32 = 0x20_0003;

/// The seed of the disk image xtask creates.
pub const OLD_SEED: u64 = 0x5EED_0000_B10C_0001;
/// The seed of what the client writes back.
pub const NEW_SEED: u64 = 0x5EED_0000_B10C_0002;

/// Why a request failed: the reply's label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The block number is past the end of the disk (1).
    OutOfRange,
    /// The device reported an error, or the request could not be queued
    /// (2).
    DeviceError,
    /// A label the driver does not know (3).
    UnknownRequest,
    /// The disk is read-only (4).
    ReadOnly,
    /// A code this crate does not know.
    Unknown(u32),
}

impl Status {
    /// The reply label.
    pub fn code(self) -> u32 {
        match self {
            Status::OutOfRange => 1,
            Status::DeviceError => 2,
            Status::UnknownRequest => 3,
            Status::ReadOnly => 4,
            Status::Unknown(code) => code,
        }
    }

    /// From a reply's label (0 is success: `None`).
    pub fn from_code(code: u32) -> Option<Status> {
        match code {
            0 => None,
            1 => Some(Status::OutOfRange),
            2 => Some(Status::DeviceError),
            3 => Some(Status::UnknownRequest),
            4 => Some(Status::ReadOnly),
            other => Some(Status::Unknown(other)),
        }
    }
}

/// Word `index` (the 8 bytes at `8 * index`) of the disk pattern `seed`:
/// splitmix64 of `seed + index`, so every word of every block differs.
pub fn pattern_word(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `block` (its bytes at disk offset `block_number * BLOCK_SIZE`)
/// with pattern `seed`.
pub fn fill_block(seed: u64, block_number: u64, block: &mut [u8; BLOCK_SIZE]) {
    let first = block_number * (BLOCK_SIZE as u64 / 8);
    for (i, word) in block.chunks_exact_mut(8).enumerate() {
        word.copy_from_slice(&pattern_word(seed, first + i as u64).to_le_bytes());
    }
}

/// The first byte offset in `block` (at block `block_number`) that differs
/// from pattern `seed`, or `None` when the whole block matches.
pub fn first_mismatch(seed: u64, block_number: u64, block: &[u8]) -> Option<usize> {
    let first = block_number * (BLOCK_SIZE as u64 / 8);
    block.chunks(8).enumerate().find_map(|(i, word)| {
        let expected = pattern_word(seed, first + i as u64).to_le_bytes();
        word.iter()
            .zip(expected)
            .position(|(&have, want)| have != want)
            .map(|byte| 8 * i + byte)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_codes() {
        assert_eq!(Status::from_code(0), None);
        for status in [
            Status::OutOfRange,
            Status::DeviceError,
            Status::UnknownRequest,
            Status::ReadOnly,
            Status::Unknown(99),
        ] {
            assert_eq!(Status::from_code(status.code()), Some(status));
        }
    }

    #[test]
    fn a_filled_block_matches_and_a_changed_byte_is_found() {
        let mut block = [0u8; BLOCK_SIZE];
        fill_block(OLD_SEED, 7, &mut block);
        assert_eq!(first_mismatch(OLD_SEED, 7, &block), None);
        assert_eq!(first_mismatch(NEW_SEED, 7, &block), Some(0));
        assert_eq!(first_mismatch(OLD_SEED, 6, &block), Some(0));
        block[1234] ^= 1;
        assert_eq!(first_mismatch(OLD_SEED, 7, &block), Some(1234));
    }

    #[test]
    fn words_differ_across_blocks_and_seeds() {
        let words = BLOCK_SIZE as u64 / 8;
        assert_ne!(pattern_word(OLD_SEED, 0), pattern_word(OLD_SEED, words));
        assert_ne!(pattern_word(OLD_SEED, 3), pattern_word(NEW_SEED, 3));
        assert_ne!(pattern_word(OLD_SEED, 0), 0);
    }
}
