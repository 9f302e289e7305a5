//! What can go wrong, each variant naming what was wrong and, where there
//! is one, what the caller can do about it.

use core::fmt;

use crate::{DmaError, Iova, Status};

/// Which queue pair a command went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueKind {
    /// The admin queue pair (queue 0).
    Admin,
    /// The I/O queue pair (queue 1).
    Io,
}

/// What a bounded poll was waiting for when it gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitingFor {
    /// CSTS.RDY = 0 after CC.EN was cleared.
    Disabled,
    /// CSTS.RDY = 1 after CC.EN was set.
    Ready,
    /// The completion of the command with this opcode on this queue.
    Completion {
        /// The queue the command was submitted to.
        queue: QueueKind,
        /// The command's opcode.
        opcode: u8,
    },
}

/// An error of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// CAP.CSS does not offer the NVM command set.
    NoNvmCommandSet {
        /// The CAP register read.
        capabilities: u64,
    },
    /// The controller does not support 4 KiB memory pages (CAP.MPSMIN,
    /// CAP.MPSMAX).
    PageSizeUnsupported {
        /// log2 of the smallest page size it supports.
        min_page_shift: u32,
        /// log2 of the largest page size it supports.
        max_page_shift: u32,
    },
    /// CAP.MQES allows queues of fewer than two entries, which cannot hold
    /// a command.
    QueuesTooSmall {
        /// MQES + 1.
        max_queue_entries: u32,
    },
    /// A bounded poll ran out of time. After a completion timed out the
    /// command may still complete later, into a slot the driver has moved
    /// past: the controller needs a reset (a new bring-up) before more
    /// commands.
    Timeout {
        /// What it was waiting for.
        waiting_for: WaitingFor,
        /// How long it waited.
        milliseconds: u32,
    },
    /// Interrupt mode: the driver woke `wakes` times waiting for a
    /// command's completion and found none (an interrupt that never
    /// comes leaves the wait blocked; one that comes for nothing ends
    /// here). The controller needs a reset, as after a timeout.
    NoCompletionAfterWakes {
        /// The queue waited on.
        queue: QueueKind,
        /// The command's opcode.
        opcode: u8,
        /// Wakes taken.
        wakes: u32,
    },
    /// CSTS.CFS: the controller reports a fatal error; it needs a reset.
    ControllerFatal {
        /// The CSTS register read.
        status: u32,
    },
    /// A command completed with an error status.
    Command {
        /// The queue the command went to.
        queue: QueueKind,
        /// The command's opcode.
        opcode: u8,
        /// The status, decoded.
        status: Status,
    },
    /// A completion that is not the one for the command just submitted:
    /// the controller answered another command or another queue.
    UnexpectedCompletion {
        /// The queue polled.
        queue: QueueKind,
        /// The command identifier submitted.
        expected_command_id: u16,
        /// The command identifier in the completion.
        command_id: u16,
        /// The submission queue identifier in the completion.
        submission_queue: u16,
    },
    /// The [`crate::Dma`] implementation could not allocate a page.
    Dma(DmaError),
    /// A page the [`crate::Dma`] implementation returned is not
    /// page-aligned for the device.
    DmaPageNotAligned {
        /// Its device address.
        device_address: Iova,
    },
    /// The controller's Identify data does not allow 64-byte submission
    /// or 16-byte completion entries (SQES, CQES).
    EntrySizesUnsupported {
        /// The SQES byte of Identify Controller.
        submission: u8,
        /// The CQES byte of Identify Controller.
        completion: u8,
    },
    /// The controller has no namespace 1 (Identify Controller NN = 0, or
    /// namespace 1 has size 0).
    NoNamespace,
    /// Namespace 1's LBA format is not one the driver handles: data size
    /// a power of two from 512 bytes to 4 KiB and no metadata.
    LbaFormatUnsupported {
        /// The format's index (FLBAS).
        index: u8,
        /// log2 of its data size (LBADS).
        data_shift: u8,
        /// Its metadata bytes per block (MS).
        metadata_bytes: u16,
    },
    /// A read or write of zero blocks, or of more than 65,536 (the 16-bit
    /// NLB field).
    TransferBlocksInvalid {
        /// The blocks asked for.
        blocks: u32,
    },
    /// A read or write past the end of the namespace.
    OutOfRange {
        /// The first block asked for.
        lba: u64,
        /// The number of blocks asked for.
        blocks: u32,
        /// The namespace's size in blocks.
        namespace_blocks: u64,
    },
    /// The buffer's page count does not match the transfer's size.
    BufferSizeMismatch {
        /// The pages given.
        pages_given: usize,
        /// The pages the blocks fill.
        pages_needed: usize,
    },
    /// The transfer is longer than the controller (MDTS) or the driver's
    /// single PRP list page allows.
    TransferTooLarge {
        /// The pages asked for.
        pages: usize,
        /// The most pages one command may move.
        max_pages: usize,
    },
    /// A buffer page's device address is not page-aligned.
    BufferNotAligned {
        /// Its position in the buffer.
        index: usize,
        /// The address given.
        device_address: Iova,
    },
}

impl From<DmaError> for Error {
    fn from(error: DmaError) -> Error {
        Error::Dma(error)
    }
}

impl fmt::Display for QueueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueueKind::Admin => "admin queue",
            QueueKind::Io => "I/O queue 1",
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::NoNvmCommandSet { capabilities } => write!(
                f,
                "CAP {capabilities:#x}: the controller does not support the NVM command set (CSS bit 37)"
            ),
            Error::PageSizeUnsupported {
                min_page_shift,
                max_page_shift,
            } => write!(
                f,
                "the controller's memory pages are 2^{min_page_shift}..2^{max_page_shift} bytes; the driver needs 4 KiB"
            ),
            Error::QueuesTooSmall { max_queue_entries } => write!(
                f,
                "CAP.MQES allows queues of {max_queue_entries} entries; at least 2 are needed"
            ),
            Error::Timeout {
                waiting_for,
                milliseconds,
            } => match waiting_for {
                WaitingFor::Disabled => write!(
                    f,
                    "CSTS.RDY still 1 {milliseconds} ms (CAP.TO) after clearing CC.EN"
                ),
                WaitingFor::Ready => write!(
                    f,
                    "CSTS.RDY still 0 {milliseconds} ms (CAP.TO) after setting CC.EN"
                ),
                WaitingFor::Completion { queue, opcode } => write!(
                    f,
                    "no completion on the {queue} for opcode {opcode:#04x} after {milliseconds} ms"
                ),
            },
            Error::NoCompletionAfterWakes {
                queue,
                opcode,
                wakes,
            } => write!(
                f,
                "no completion on the {queue} for opcode {opcode:#04x} after {wakes} interrupts or other wakes"
            ),
            Error::ControllerFatal { status } => write!(
                f,
                "CSTS {status:#x}: the controller reports a fatal status (CFS); reset it"
            ),
            Error::Command {
                queue,
                opcode,
                status,
            } => write!(f, "opcode {opcode:#04x} on the {queue} failed: {status}"),
            Error::UnexpectedCompletion {
                queue,
                expected_command_id,
                command_id,
                submission_queue,
            } => write!(
                f,
                "the {queue} completed command {command_id} of submission queue {submission_queue}, expected command {expected_command_id}"
            ),
            Error::Dma(error) => write!(f, "DMA allocation failed: {}", error.reason),
            Error::DmaPageNotAligned { device_address } => write!(
                f,
                "the DMA allocator returned a page at device address {:#x}, not 4 KiB-aligned",
                device_address.0
            ),
            Error::EntrySizesUnsupported {
                submission,
                completion,
            } => write!(
                f,
                "Identify Controller SQES {submission:#04x} CQES {completion:#04x}: 64-byte submission and 16-byte completion entries not allowed"
            ),
            Error::NoNamespace => f.write_str("the controller has no namespace 1"),
            Error::LbaFormatUnsupported {
                index,
                data_shift,
                metadata_bytes,
            } => write!(
                f,
                "namespace 1 uses LBA format {index}: 2^{data_shift}-byte blocks with {metadata_bytes} metadata bytes; the driver handles 512 B..4 KiB blocks without metadata"
            ),
            Error::TransferBlocksInvalid { blocks } => write!(
                f,
                "a transfer of {blocks} blocks: one command moves 1..=65536"
            ),
            Error::OutOfRange {
                lba,
                blocks,
                namespace_blocks,
            } => write!(
                f,
                "blocks {lba}..{} are past the namespace's {namespace_blocks} blocks",
                lba as u128 + blocks as u128
            ),
            Error::BufferSizeMismatch {
                pages_given,
                pages_needed,
            } => write!(
                f,
                "the buffer has {pages_given} pages; the blocks fill {pages_needed}"
            ),
            Error::TransferTooLarge { pages, max_pages } => write!(
                f,
                "a transfer of {pages} pages; one command moves at most {max_pages} (MDTS, one PRP list page)"
            ),
            Error::BufferNotAligned {
                index,
                device_address,
            } => write!(
                f,
                "buffer page {index} at device address {:#x} is not 4 KiB-aligned",
                device_address.0
            ),
        }
    }
}
