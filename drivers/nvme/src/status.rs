//! A completion's status field decoded (NVMe base spec 2.0, 4.6.1.2: the
//! status code type and status code; NVM command set 1.0, 4.1.1.x for the
//! I/O command statuses).

use core::fmt;

/// Status Code Type (SCT, 3 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusCodeType {
    /// 0: generic command status.
    Generic,
    /// 1: command specific status.
    CommandSpecific,
    /// 2: media and data integrity errors.
    MediaAndDataIntegrity,
    /// 3: path related status.
    PathRelated,
    /// 7: vendor specific.
    VendorSpecific,
    /// 4..=6: reserved.
    Reserved(u8),
}

impl StatusCodeType {
    fn from_bits(bits: u8) -> StatusCodeType {
        match bits {
            0 => StatusCodeType::Generic,
            1 => StatusCodeType::CommandSpecific,
            2 => StatusCodeType::MediaAndDataIntegrity,
            3 => StatusCodeType::PathRelated,
            7 => StatusCodeType::VendorSpecific,
            other => StatusCodeType::Reserved(other),
        }
    }
}

/// Generic command statuses (SCT 0) the driver can meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenericStatus {
    /// 0x01: the opcode is not supported.
    InvalidOpcode,
    /// 0x02: a field of the command is invalid.
    InvalidField,
    /// 0x03: the command identifier is already in use.
    CommandIdConflict,
    /// 0x04: moving the data (or a PRP list) failed, e.g. a DMA fault.
    DataTransferError,
    /// 0x05: aborted because of a power loss notification.
    AbortedPowerLoss,
    /// 0x06: the controller failed internally.
    InternalError,
    /// 0x07: aborted on an Abort command.
    AbortRequested,
    /// 0x08: aborted because its submission queue was deleted.
    AbortedQueueDeleted,
    /// 0x0b: the namespace does not exist or its format is invalid.
    InvalidNamespaceOrFormat,
    /// 0x0c: the command breaks a required sequence.
    CommandSequenceError,
    /// 0x13: a PRP entry has an offset it may not have.
    PrpOffsetInvalid,
    /// 0x80: the LBA range goes past the namespace's end.
    LbaOutOfRange,
    /// 0x81: the namespace is full.
    CapacityExceeded,
    /// 0x82: the namespace is not ready.
    NamespaceNotReady,
}

/// Command specific statuses (SCT 1) of the commands the driver sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandSpecificStatus {
    /// 0x00 (Create I/O Submission Queue): the completion queue named is
    /// invalid.
    CompletionQueueInvalid,
    /// 0x01 (Create I/O queue): the queue identifier is invalid or in use.
    InvalidQueueIdentifier,
    /// 0x02 (Create I/O queue): the queue size is invalid.
    InvalidQueueSize,
    /// 0x08 (Create I/O Completion Queue): the interrupt vector is invalid.
    InvalidInterruptVector,
    /// 0x80 (NVM): conflicting attributes.
    ConflictingAttributes,
    /// 0x81 (NVM): invalid protection information.
    InvalidProtectionInformation,
    /// 0x82 (NVM): a write to a read-only range.
    WriteToReadOnlyRange,
}

/// Media and data integrity errors (SCT 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaStatus {
    /// 0x80: the write could not be completed.
    WriteFault,
    /// 0x81: the data could not be read back.
    UnrecoveredReadError,
    /// 0x82..=0x84: an end-to-end protection check failed.
    EndToEndCheckError,
    /// 0x85: a Compare command found a difference.
    CompareFailure,
    /// 0x86: access to the range was denied.
    AccessDenied,
    /// 0x87: the block was deallocated or never written.
    DeallocatedOrUnwrittenBlock,
}

/// A completion's status: success, or what went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// SCT 0, SC 0.
    Success,
    /// A generic status the driver names.
    Generic(GenericStatus),
    /// A command specific status the driver names.
    CommandSpecific(CommandSpecificStatus),
    /// A media or data integrity error the driver names.
    Media(MediaStatus),
    /// Any other type and code, as the controller sent them.
    Other {
        /// The status code type.
        code_type: StatusCodeType,
        /// The status code.
        code: u8,
    },
}

impl Status {
    /// Decodes the 15-bit status field (completion dword 3 bits 31:17):
    /// SC bits 7:0, SCT bits 10:8, then CRD, M and DNR, which do not
    /// change what the status means.
    pub fn from_field(field: u16) -> Status {
        let code = field as u8;
        let code_type = StatusCodeType::from_bits(((field >> 8) & 7) as u8);
        let named = match code_type {
            StatusCodeType::Generic => match code {
                0x00 => return Status::Success,
                0x01 => Some(Status::Generic(GenericStatus::InvalidOpcode)),
                0x02 => Some(Status::Generic(GenericStatus::InvalidField)),
                0x03 => Some(Status::Generic(GenericStatus::CommandIdConflict)),
                0x04 => Some(Status::Generic(GenericStatus::DataTransferError)),
                0x05 => Some(Status::Generic(GenericStatus::AbortedPowerLoss)),
                0x06 => Some(Status::Generic(GenericStatus::InternalError)),
                0x07 => Some(Status::Generic(GenericStatus::AbortRequested)),
                0x08 => Some(Status::Generic(GenericStatus::AbortedQueueDeleted)),
                0x0b => Some(Status::Generic(GenericStatus::InvalidNamespaceOrFormat)),
                0x0c => Some(Status::Generic(GenericStatus::CommandSequenceError)),
                0x13 => Some(Status::Generic(GenericStatus::PrpOffsetInvalid)),
                0x80 => Some(Status::Generic(GenericStatus::LbaOutOfRange)),
                0x81 => Some(Status::Generic(GenericStatus::CapacityExceeded)),
                0x82 => Some(Status::Generic(GenericStatus::NamespaceNotReady)),
                _ => None,
            },
            StatusCodeType::CommandSpecific => {
                use CommandSpecificStatus as C;
                match code {
                    0x00 => Some(C::CompletionQueueInvalid),
                    0x01 => Some(C::InvalidQueueIdentifier),
                    0x02 => Some(C::InvalidQueueSize),
                    0x08 => Some(C::InvalidInterruptVector),
                    0x80 => Some(C::ConflictingAttributes),
                    0x81 => Some(C::InvalidProtectionInformation),
                    0x82 => Some(C::WriteToReadOnlyRange),
                    _ => None,
                }
                .map(Status::CommandSpecific)
            }
            StatusCodeType::MediaAndDataIntegrity => match code {
                0x80 => Some(MediaStatus::WriteFault),
                0x81 => Some(MediaStatus::UnrecoveredReadError),
                0x82..=0x84 => Some(MediaStatus::EndToEndCheckError),
                0x85 => Some(MediaStatus::CompareFailure),
                0x86 => Some(MediaStatus::AccessDenied),
                0x87 => Some(MediaStatus::DeallocatedOrUnwrittenBlock),
                _ => None,
            }
            .map(Status::Media),
            _ => None,
        };
        named.unwrap_or(Status::Other { code_type, code })
    }

    /// Whether the command succeeded.
    pub fn is_success(self) -> bool {
        self == Status::Success
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Success => f.write_str("success"),
            Status::Generic(status) => write!(f, "generic status {status:?}"),
            Status::CommandSpecific(status) => write!(f, "command specific status {status:?}"),
            Status::Media(status) => write!(f, "media error {status:?}"),
            Status::Other { code_type, code } => {
                write!(f, "status code {code:#04x} of type {code_type:?}")
            }
        }
    }
}
