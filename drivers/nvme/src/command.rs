//! Queue entries as bytes: the 64-byte submission queue entry and the
//! 16-byte completion queue entry (NVMe base spec 2.0, 4.2 and 4.6), and
//! the opcodes the driver sends.

use crate::Iova;

/// Admin opcode: Delete I/O Submission Queue (5.6).
pub const DELETE_IO_SUBMISSION_QUEUE: u8 = 0x00;
/// Admin opcode: Delete I/O Completion Queue (5.5).
pub const DELETE_IO_COMPLETION_QUEUE: u8 = 0x04;
/// Admin opcode: Create I/O Submission Queue (5.4).
pub const CREATE_IO_SUBMISSION_QUEUE: u8 = 0x01;
/// Admin opcode: Create I/O Completion Queue (5.3).
pub const CREATE_IO_COMPLETION_QUEUE: u8 = 0x05;
/// Admin opcode: Identify (5.17).
pub const IDENTIFY: u8 = 0x06;
/// NVM opcode: Write (NVM command set 3.2.6).
pub const WRITE: u8 = 0x01;
/// NVM opcode: Read (NVM command set 3.2.4).
pub const READ: u8 = 0x02;

/// Identify CNS 00h: the Identify Namespace data structure of NSID.
pub const CNS_NAMESPACE: u32 = 0x00;
/// Identify CNS 01h: the Identify Controller data structure.
pub const CNS_CONTROLLER: u32 = 0x01;

/// Bytes in a submission queue entry (CC.IOSQES = 6).
pub const SUBMISSION_ENTRY_BYTES: usize = 64;
/// Bytes in a completion queue entry (CC.IOCQES = 4).
pub const COMPLETION_ENTRY_BYTES: usize = 16;

/// A submission queue entry being built: its sixteen dwords.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubmissionEntry {
    dwords: [u32; 16],
}

impl SubmissionEntry {
    /// A command with `opcode` for namespace `namespace_id` (0 when the
    /// command has none), PRPs for data (FUSE = 0, PSDT = 0: PRPs).
    pub fn new(opcode: u8, namespace_id: u32) -> SubmissionEntry {
        let mut dwords = [0; 16];
        dwords[0] = opcode as u32;
        dwords[1] = namespace_id;
        SubmissionEntry { dwords }
    }

    /// The opcode (CDW0 bits 7:0).
    pub fn opcode(&self) -> u8 {
        self.dwords[0] as u8
    }

    /// Sets the command identifier (CDW0 bits 31:16).
    pub fn set_command_id(&mut self, command_id: u16) {
        self.dwords[0] = (self.dwords[0] & 0xffff) | (command_id as u32) << 16;
    }

    /// Sets PRP entry 1 (dwords 6-7) and PRP entry 2 (dwords 8-9).
    pub fn with_prps(mut self, prp1: Iova, prp2: Option<Iova>) -> SubmissionEntry {
        let prp2 = prp2.map_or(0, |address| address.0);
        self.dwords[6] = prp1.0 as u32;
        self.dwords[7] = (prp1.0 >> 32) as u32;
        self.dwords[8] = prp2 as u32;
        self.dwords[9] = (prp2 >> 32) as u32;
        self
    }

    /// Sets command dword `index` (10..=15).
    pub fn with_dword(mut self, index: usize, value: u32) -> SubmissionEntry {
        self.dwords[index] = value;
        self
    }

    /// The entry as the controller reads it: little-endian dwords.
    pub fn to_bytes(self) -> [u8; SUBMISSION_ENTRY_BYTES] {
        let mut bytes = [0; SUBMISSION_ENTRY_BYTES];
        for (chunk, dword) in bytes.chunks_exact_mut(4).zip(self.dwords) {
            chunk.copy_from_slice(&dword.to_le_bytes());
        }
        bytes
    }
}

/// A completion queue entry as read from the completion queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletionEntry {
    /// Dword 0: command specific result.
    pub result: u32,
    /// Dword 2 bits 15:0: the submission queue head the controller has
    /// consumed up to.
    pub submission_head: u16,
    /// Dword 2 bits 31:16: the submission queue the command came from.
    pub submission_queue: u16,
    /// Dword 3 bits 15:0: the command identifier.
    pub command_id: u16,
    /// Dword 3 bit 16: the phase tag.
    pub phase: bool,
    /// Dword 3 bits 31:17: the status field.
    pub status: u16,
}

impl CompletionEntry {
    /// Decodes the 16 bytes of an entry.
    pub fn from_bytes(bytes: &[u8; COMPLETION_ENTRY_BYTES]) -> CompletionEntry {
        let dword = |index: usize| {
            let mut word = [0; 4];
            word.copy_from_slice(&bytes[4 * index..4 * index + 4]);
            u32::from_le_bytes(word)
        };
        let (dword2, dword3) = (dword(2), dword(3));
        CompletionEntry {
            result: dword(0),
            submission_head: dword2 as u16,
            submission_queue: (dword2 >> 16) as u16,
            command_id: dword3 as u16,
            phase: dword3 & 1 << 16 != 0,
            status: (dword3 >> 17) as u16,
        }
    }

    /// The 16 bytes of an entry (what a controller writes: the model).
    #[cfg(feature = "model")]
    pub fn to_bytes(self) -> [u8; COMPLETION_ENTRY_BYTES] {
        let dword2 = self.submission_head as u32 | (self.submission_queue as u32) << 16;
        let dword3 =
            self.command_id as u32 | (self.phase as u32) << 16 | (self.status as u32) << 17;
        let mut bytes = [0; COMPLETION_ENTRY_BYTES];
        bytes[0..4].copy_from_slice(&self.result.to_le_bytes());
        bytes[8..12].copy_from_slice(&dword2.to_le_bytes());
        bytes[12..16].copy_from_slice(&dword3.to_le_bytes());
        bytes
    }
}
