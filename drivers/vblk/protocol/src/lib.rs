//! The block protocol between a client domain and a block driver domain
//! (`drivers/vblk` for virtio-blk, `drivers/nvme-driver` for NVMe), and
//! the seeded pattern a test disk holds.
//!
//! A client calls the driver's endpoint; the data of one block travels
//! through a 4 KiB page both domains map (`images/blk.toml`):
//!
//! | request (label) | MR0 | what the driver does | reply MR0 |
//! |---|---|---|---|
//! | [`INFO`] | 0 | nothing | the disk's size in [`BLOCK_SIZE`] blocks; MR1 the driver ([`Driver`]); MR2 the runs of the driver init started before this one; MR3 the failure its image injects (`sys::names::INJECT_*`, 0: none; a driver that knows no injection answers 0 and 0) |
//! | [`READ`] | block number | reads the block from the device into the shared page | 0 |
//! | [`WRITE`] | block number | writes the shared page to the block | 0 |
//! | [`STATS`] | 0 | nothing | [`Stats`] in MR0..MR3 |
//! | [`SHARING`] | a [`Sharing`] code | shares the next requests' buffers so | 0 |
//! | [`READ_FRAME`] | block number, with the client's Frame (cap 0) | zero copy: maps the Frame into its IoSpace at [`FRAME_IPA`], where its stage 1 maps one IOVA, has the device write the block into it, deletes its copy (unmapped, invalidated) | 0 |
//! | [`WRITE_FRAME`] | block number, with the client's Frame | the same, the device reading the Frame | 0 |
//! | [`READ_FRAME_HELD`] | block number, with the client's Frame | as `READ_FRAME`, but keeps the Frame mapped: the I/O stays open | the IOVA the device was given |
//! | [`FINISH_HELD`] | block number | has the device write the block through the held Frame's IOVA again, then drops the Frame | [`Finished`] in MR0..MR2 |
//! | [`COMPLETIONS`] | 0 | nothing | [`POLLING`] or [`INTERRUPTS`]; MR1 the device interrupts taken so far; MR2 the ticks the last request spent taking its MSI after polling (`WAIT_FIRST`), else 0; MR3 the requests so far for whose completion the driver slept (waited on its MSI after the doorbell, with no earlier MSI pending) |
//! | [`WAIT_FIRST`] | 1 or 0 | in interrupt mode, the next requests poll to the completion, then take its MSI (1), or sleep until the MSI (0) | 0 |
//!
//! `INFO`'s reply MR1 names the driver ([`Driver`]).
//!
//! A reply's label is 0 on success, else a [`Status`] code. A `READ` or
//! `WRITE` reply also carries the driver's own cost ([`Cost`], MR1..MR3),
//! counted with the CPU's counter, which under QEMU's `-icount
//! shift=0,sleep=off` counts guest instructions (`cargo xtask bench`).
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

/// Ask for the driver's IOMMU counters.
pub const STATS: u32 = 0x20_0004;

/// Change how the driver gives buffers to the device.
pub const SHARING: u32 = 0x20_0005;

/// Zero copy: read block MR0 into the Frame the message carries (the
/// client's endpoint capability needs the grant right).
pub const READ_FRAME: u32 = 0x20_0006;
/// Zero copy: write the Frame the message carries to block MR0.
pub const WRITE_FRAME: u32 = 0x20_0007;
/// As [`READ_FRAME`], the Frame kept mapped after the reply until
/// [`FINISH_HELD`]: an I/O the client can revoke its Frame in the middle
/// of (the revoke test).
pub const READ_FRAME_HELD: u32 = 0x20_0008;
/// Ends the held I/O: the device writes block MR0 through the held
/// Frame's IOVA once more, and the driver drops the Frame.
pub const FINISH_HELD: u32 = 0x20_0009;
/// Ask how the driver learns of completions: reply MR0 [`POLLING`] or
/// [`INTERRUPTS`], MR1 the device interrupts it has taken, MR2 the ticks
/// the last request spent taking its MSI after polling ([`WAIT_FIRST`]),
/// MR3 the requests it slept for. In interrupt mode a driver takes a
/// request's MSI before ringing the next doorbell if the request found its
/// completion without waiting, so each wait is for the request's own MSI.
/// A driver that only polls may answer `UnknownRequest`.
pub const COMPLETIONS: u32 = 0x20_000A;
/// `COMPLETIONS`' MR0: the driver polls for completions.
pub const POLLING: u64 = 0;
/// `COMPLETIONS`' MR0: the driver sleeps until the device's MSI (or a
/// fault record).
pub const INTERRUPTS: u64 = 1;
/// In interrupt mode, MR0 1: each next request polls the used ring to its
/// completion (the emulated device's time, left out as in polling mode),
/// then takes the MSI the device sent with it (`Notification.Wait`, which
/// then finds the signal, and `IrqHandler.Ack`), so every request
/// consumes its own interrupt and the count does not hold the idle
/// halt, whose length under `-icount` is the host's (the bench's
/// `blk-read-4k-msi` rows); MR0 0: sleeps until the MSI (the default).
/// `UnknownRequest` from a driver that polls.
pub const WAIT_FIRST: u32 = 0x20_000B;

/// The IPA in the driver's IoSpace where a client's Frame is mapped for a
/// zero-copy request: the driver's stage 1 maps one IOVA of its own to it
/// for good, and the IoSpace maps the Frame there only during a request.
pub const FRAME_IPA: u64 = 0x18_0000;

/// Which driver serves the protocol (`INFO`'s reply MR1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// `drivers/vblk` (1).
    VirtioBlk,
    /// `drivers/nvme-driver` (2).
    Nvme,
}

impl Driver {
    /// Its code.
    pub fn code(self) -> u64 {
        match self {
            Driver::VirtioBlk => 1,
            Driver::Nvme => 2,
        }
    }

    /// From its code.
    pub fn from_code(code: u64) -> Option<Driver> {
        match code {
            1 => Some(Driver::VirtioBlk),
            2 => Some(Driver::Nvme),
            _ => None,
        }
    }
}

/// What [`FINISH_HELD`] saw (reply MR0..MR2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Finished {
    /// IOMMU fault records the driver's fault queue held after the
    /// device's access.
    pub faults: u64,
    /// The address of the first of them (0 when none).
    pub first_fault: u64,
    /// Whether the driver still held the Frame (1: nobody revoked it) or
    /// found its copy gone (0).
    pub still_held: u64,
}

impl Finished {
    /// As reply MR0..MR2.
    pub fn to_mrs(self) -> [u64; 3] {
        [self.faults, self.first_fault, self.still_held]
    }

    /// From reply MR0..MR2.
    pub fn from_mrs(mrs: [u64; 3]) -> Finished {
        Finished {
            faults: mrs[0],
            first_fault: mrs[1],
            still_held: mrs[2],
        }
    }
}

/// How the driver gives a request's buffers to the device (`SHARING`'s
/// MR0): the three strategies a benchmark compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// (a) every buffer mapped in stage 1 and invalidated for the request
    /// only (0; the default).
    PerRequest,
    /// Request headers and statuses through pages kept mapped; the data
    /// page still per request (1).
    StagedBounces,
    /// (b) a pre-mapped pool: nothing changes in stage 1 per request (2).
    Premapped,
    /// As `PerRequest`, the maps invalidated together before the doorbell
    /// and the unmaps together after the device returned the request (3).
    Batched,
}

impl Sharing {
    /// Its code.
    pub fn code(self) -> u64 {
        match self {
            Sharing::PerRequest => 0,
            Sharing::StagedBounces => 1,
            Sharing::Premapped => 2,
            Sharing::Batched => 3,
        }
    }

    /// From its code.
    pub fn from_code(code: u64) -> Option<Sharing> {
        match code {
            0 => Some(Sharing::PerRequest),
            1 => Some(Sharing::StagedBounces),
            2 => Some(Sharing::Premapped),
            3 => Some(Sharing::Batched),
            _ => None,
        }
    }
}

/// What a `READ` or `WRITE` cost in the driver, in counter ticks (guest
/// instructions under icount).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Polling the used ring until the device returned the request: the
    /// emulated device's time, which benchmarks leave out.
    pub wait: u64,
    /// Everything the driver ran from the request's arrival to its reply,
    /// the wait excepted (the next two included).
    pub driver: u64,
    /// Of which stage-1 map, unmap and `IoUserTable.Invalidate`.
    pub iommu: u64,
    /// Of which the doorbell (the virtqueue notify register write).
    pub doorbell: u64,
}

impl Cost {
    /// As reply MR1..MR3 (`iommu` and `doorbell` share MR3, 32 bits each).
    pub fn to_mrs(self) -> [u64; 3] {
        [
            self.wait,
            self.driver,
            (self.iommu.min(u64::from(u32::MAX)) << 32) | self.doorbell.min(u64::from(u32::MAX)),
        ]
    }

    /// From reply MR1..MR3.
    pub fn from_mrs(mrs: [u64; 3]) -> Cost {
        Cost {
            wait: mrs[0],
            driver: mrs[1],
            iommu: mrs[2] >> 32,
            doorbell: mrs[2] & u64::from(u32::MAX),
        }
    }
}

/// The driver's IOMMU counters (`STATS` reply MR0..MR3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `IoUserTable.Invalidate` calls so far.
    pub invalidations: u64,
    /// Buffers the device was given in place (the driver's data page).
    pub in_place: u64,
    /// Buffers given through a bounce copy (request headers, statuses).
    pub bounced: u64,
    /// Whether the data page's IOVA translates right now (1) or not (0):
    /// between requests it must not.
    pub data_mapped: u64,
}

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
    /// A zero-copy request that carries no Frame, or one the driver cannot
    /// map into its IoSpace (5).
    NoFrame,
    /// A held zero-copy I/O is open ([`READ_FRAME_HELD`] twice), or none is
    /// ([`FINISH_HELD`] without one) (6).
    HeldState,
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
            Status::NoFrame => 5,
            Status::HeldState => 6,
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
            5 => Some(Status::NoFrame),
            6 => Some(Status::HeldState),
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
            Status::NoFrame,
            Status::HeldState,
            Status::Unknown(99),
        ] {
            assert_eq!(Status::from_code(status.code()), Some(status));
        }
    }

    #[test]
    fn sharings_round_trip_through_their_codes() {
        for sharing in [
            Sharing::PerRequest,
            Sharing::StagedBounces,
            Sharing::Premapped,
            Sharing::Batched,
        ] {
            assert_eq!(Sharing::from_code(sharing.code()), Some(sharing));
        }
        assert_eq!(Sharing::from_code(4), None);
    }

    #[test]
    fn drivers_and_finishes_round_trip() {
        for driver in [Driver::VirtioBlk, Driver::Nvme] {
            assert_eq!(Driver::from_code(driver.code()), Some(driver));
        }
        assert_eq!(Driver::from_code(0), None);
        let finished = Finished {
            faults: 1,
            first_fault: 0x1000_0000,
            still_held: 0,
        };
        assert_eq!(Finished::from_mrs(finished.to_mrs()), finished);
    }

    #[test]
    fn costs_round_trip_through_three_registers() {
        let cost = Cost {
            wait: 1 << 40,
            driver: 12_345,
            iommu: 6_789,
            doorbell: 321,
        };
        assert_eq!(Cost::from_mrs(cost.to_mrs()), cost);
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
