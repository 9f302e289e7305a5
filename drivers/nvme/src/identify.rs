//! The parts of the Identify data structures the driver uses (NVMe base
//! spec 2.0, 5.17.2.1 Identify Controller; NVM command set 1.0, 4.1.5.1
//! Identify Namespace), parsed from the bytes the controller wrote.

use core::fmt;

use crate::Error;

/// Byte ranges of Identify Controller the driver reads: the head (up to
/// VER) and SQES..NN.
pub const CONTROLLER_HEAD: core::ops::Range<usize> = 0..84;
/// SQES (512), CQES (513), MAXCMD (514-515), NN (516-519).
pub const CONTROLLER_QUEUES: core::ops::Range<usize> = 512..520;
/// Identify Namespace: NSZE..FLBAS.
pub const NAMESPACE_HEAD: core::ops::Range<usize> = 0..32;
/// Identify Namespace: the LBA Format table (64 four-byte entries).
pub const NAMESPACE_FORMATS: core::ops::Range<usize> = 128..384;

fn le16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    le32(bytes, at) as u64 | (le32(bytes, at + 4) as u64) << 32
}

/// Identify Controller, the fields the driver uses or reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControllerIdentity {
    /// VID: the PCI vendor ID.
    pub vendor_id: u16,
    /// SN: the serial number, ASCII padded with spaces.
    pub serial: [u8; 20],
    /// MN: the model number, ASCII padded with spaces.
    pub model: [u8; 40],
    /// MDTS: the largest transfer is 2^MDTS minimum-size pages (0: no
    /// limit).
    pub max_transfer_shift: u8,
    /// CNTLID.
    pub controller_id: u16,
    /// SQES: bits 3:0 the required, 7:4 the largest submission entry size
    /// (log2 bytes).
    pub submission_entry_sizes: u8,
    /// CQES: the same for completion entries.
    pub completion_entry_sizes: u8,
    /// NN: the largest namespace identifier.
    pub namespaces: u32,
}

impl ControllerIdentity {
    /// Parses the bytes of [`CONTROLLER_HEAD`] and [`CONTROLLER_QUEUES`].
    pub fn parse(head: &[u8; 84], queues: &[u8; 8]) -> ControllerIdentity {
        let mut serial = [0; 20];
        serial.copy_from_slice(&head[4..24]);
        let mut model = [0; 40];
        model.copy_from_slice(&head[24..64]);
        ControllerIdentity {
            vendor_id: le16(head, 0),
            serial,
            model,
            max_transfer_shift: head[77],
            controller_id: le16(head, 78),
            submission_entry_sizes: queues[0],
            completion_entry_sizes: queues[1],
            namespaces: le32(queues, 4),
        }
    }

    /// Checks that 64-byte submission and 16-byte completion entries are
    /// allowed (required size <= the size <= the largest).
    pub fn check_entry_sizes(&self) -> Result<(), Error> {
        let allows = |sizes: u8, shift: u8| {
            let (required, largest) = (sizes & 0xf, sizes >> 4);
            // A controller that leaves the field 0 states no limit.
            sizes == 0 || (required <= shift && shift <= largest)
        };
        if allows(self.submission_entry_sizes, 6) && allows(self.completion_entry_sizes, 4) {
            Ok(())
        } else {
            Err(Error::EntrySizesUnsupported {
                submission: self.submission_entry_sizes,
                completion: self.completion_entry_sizes,
            })
        }
    }

    /// The serial number without its padding.
    pub fn serial_number(&self) -> &str {
        ascii_field(&self.serial)
    }

    /// The model number without its padding.
    pub fn model_number(&self) -> &str {
        ascii_field(&self.model)
    }
}

/// An ASCII field up to its trailing spaces (or NULs); a field that is
/// not ASCII reads as "?".
fn ascii_field(bytes: &[u8]) -> &str {
    let end = bytes
        .iter()
        .rposition(|&byte| byte != b' ' && byte != 0)
        .map_or(0, |last| last + 1);
    match core::str::from_utf8(&bytes[..end]) {
        Ok(text) if text.is_ascii() => text,
        _ => "?",
    }
}

impl fmt::Display for ControllerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vendor {:#06x} model \"{}\" serial \"{}\" controller {} namespaces {} MDTS {}",
            self.vendor_id,
            self.model_number(),
            self.serial_number(),
            self.controller_id,
            self.namespaces,
            self.max_transfer_shift
        )
    }
}

/// Identify Namespace for namespace 1: its size and block format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceIdentity {
    /// NSZE: the size in blocks.
    pub blocks: u64,
    /// NCAP: the capacity in blocks.
    pub capacity: u64,
    /// The index of the LBA format in use (FLBAS).
    pub format_index: u8,
    /// log2 of the block size (LBADS of that format).
    pub block_shift: u8,
}

impl NamespaceIdentity {
    /// Parses the bytes of [`NAMESPACE_HEAD`] and [`NAMESPACE_FORMATS`],
    /// and checks the format is one the driver handles: a power-of-two
    /// block of 512 bytes to 4 KiB without metadata.
    pub fn parse(head: &[u8; 32], formats: &[u8; 256]) -> Result<NamespaceIdentity, Error> {
        let blocks = le64(head, 0);
        if blocks == 0 {
            return Err(Error::NoNamespace);
        }
        let flbas = head[26];
        // FLBAS bits 3:0 are the format's low bits; bits 6:5 its high bits
        // when NLBAF says there are more than 16 formats.
        let format_index = (flbas & 0xf) | ((flbas >> 5) & 3) << 4;
        let at = 4 * format_index as usize;
        let metadata_bytes = le16(formats, at);
        let block_shift = formats[at + 2];
        if metadata_bytes != 0 || !(9..=12).contains(&block_shift) {
            return Err(Error::LbaFormatUnsupported {
                index: format_index,
                data_shift: block_shift,
                metadata_bytes,
            });
        }
        Ok(NamespaceIdentity {
            blocks,
            capacity: le64(head, 8),
            format_index,
            block_shift,
        })
    }

    /// The block size in bytes.
    pub fn block_size(&self) -> usize {
        1 << self.block_shift
    }

    /// The size in bytes.
    pub fn bytes(&self) -> u64 {
        self.blocks << self.block_shift
    }
}

impl fmt::Display for NamespaceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "namespace 1: {} blocks of {} bytes ({} KiB), LBA format {}",
            self.blocks,
            self.block_size(),
            self.bytes() / 1024,
            self.format_index
        )
    }
}
