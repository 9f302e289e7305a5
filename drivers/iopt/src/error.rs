//! Why a table operation was refused.
//!
//! Every variant names the offending address or value so a driver's log line
//! says what was wrong without a debugger. Operations that return an error
//! leave the mappings as they were (see the crate docs).

use core::fmt;

use crate::format::Rights;

/// Why [`IoPageTable`](crate::IoPageTable) refused an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The length of a `map` or `unmap` was zero.
    ZeroLength,
    /// The IOVA is not 4 KiB aligned.
    MisalignedIova {
        /// The IOVA given.
        iova: u64,
    },
    /// The IPA is not 4 KiB aligned.
    MisalignedIpa {
        /// The IPA given.
        ipa: u64,
    },
    /// The length is not a multiple of 4 KiB.
    MisalignedLength {
        /// The length given.
        len: u64,
    },
    /// The IOVA range does not fit in the format's input address space.
    IovaOutOfRange {
        /// Start of the range.
        iova: u64,
        /// Length of the range (0 for a single-address lookup).
        len: u64,
    },
    /// The IPA range does not fit in the configured IPA size.
    IpaOutOfRange {
        /// Start of the range.
        ipa: u64,
        /// Length of the range.
        len: u64,
    },
    /// The rights cannot be expressed: both formats need read access on
    /// every mapping (write-only and no-access mappings do not exist).
    UnsupportedRights {
        /// The rights given.
        rights: Rights,
    },
    /// Part of the range is already mapped; nothing was changed.
    AlreadyMapped {
        /// The first mapped page in the range.
        iova: u64,
    },
    /// Part of the range is not mapped; nothing was changed.
    NotMapped {
        /// The first unmapped page in the range.
        iova: u64,
    },
    /// The frame pool had no frame for a new table; nothing was changed.
    OutOfFrames {
        /// The page whose walk needed the table.
        iova: u64,
    },
    /// The frame pool handed out a frame whose IPA is beyond the configured
    /// IPA size; the frame was given back.
    BadFrame {
        /// The frame's IPA.
        ipa: u64,
    },
    /// The table memory has no frame at this IPA (the pool and the memory
    /// disagree, or a table entry was overwritten from outside).
    FrameNotBacked {
        /// The frame's IPA.
        ipa: u64,
    },
    /// A table entry holds something this crate never writes (a block or
    /// large page, a reserved descriptor type): the table was modified from
    /// outside. Nothing was changed.
    UnexpectedEntry {
        /// The address whose walk met the entry.
        iova: u64,
        /// Level of the table holding the entry (0 = root).
        level: u8,
        /// The raw entry.
        entry: u64,
    },
    /// A retired table frame's link word (word 0, see
    /// [`IoPageTable::flush`](crate::IoPageTable::flush)) was overwritten
    /// from outside; the frames from this one on stay retired.
    RetiredListCorrupt {
        /// IPA of the retired frame.
        ipa: u64,
        /// The word found.
        word: u64,
    },
    /// An IPA size outside 13..=48 bits was requested.
    InvalidIpaBits {
        /// The number of bits asked for.
        bits: u32,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::ZeroLength => write!(f, "length is zero"),
            Error::MisalignedIova { iova } => {
                write!(f, "IOVA {iova:#x} is not 4 KiB aligned")
            }
            Error::MisalignedIpa { ipa } => write!(f, "IPA {ipa:#x} is not 4 KiB aligned"),
            Error::MisalignedLength { len } => {
                write!(f, "length {len:#x} is not a multiple of 4 KiB")
            }
            Error::IovaOutOfRange { iova, len } => write!(
                f,
                "IOVA range {iova:#x} + {len:#x} is beyond the format's input address space"
            ),
            Error::IpaOutOfRange { ipa, len } => write!(
                f,
                "IPA range {ipa:#x} + {len:#x} is beyond the configured IPA size"
            ),
            Error::UnsupportedRights { rights } => write!(
                f,
                "rights {rights:?} cannot be expressed (read is required)"
            ),
            Error::AlreadyMapped { iova } => write!(f, "IOVA {iova:#x} is already mapped"),
            Error::NotMapped { iova } => write!(f, "IOVA {iova:#x} is not mapped"),
            Error::OutOfFrames { iova } => {
                write!(f, "no free table frame for the walk of IOVA {iova:#x}")
            }
            Error::BadFrame { ipa } => write!(
                f,
                "frame pool gave frame IPA {ipa:#x}, beyond the configured IPA size"
            ),
            Error::FrameNotBacked { ipa } => {
                write!(f, "no table memory backs the frame at IPA {ipa:#x}")
            }
            Error::UnexpectedEntry { iova, level, entry } => write!(
                f,
                "unexpected entry {entry:#018x} at level {level} on the walk of IOVA {iova:#x}"
            ),
            Error::RetiredListCorrupt { ipa, word } => write!(
                f,
                "retired table frame at IPA {ipa:#x} holds {word:#018x}, not a link"
            ),
            Error::InvalidIpaBits { bits } => {
                write!(f, "IPA size of {bits} bits is outside 13..=48")
            }
        }
    }
}

impl core::error::Error for Error {}
