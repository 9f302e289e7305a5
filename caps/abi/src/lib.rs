//! The Portcullis kernel ABI: the one source shared by kernel and userland.
//!
//! - [`Syscall`]: the system-call numbers and, per architecture, which
//!   registers carry what ([`registers`]).
//! - [`MessageInfo`]: the word describing a message (label, length, extra caps).
//! - [`Error`]: every error code, with fixed numbers; codes 1..=63 are the
//!   capability model's (`caps::Error`, same numbers), 64.. are the kernel's.
//! - [`Invocation`]: every invocation label, with its arguments, rights and
//!   errors documented once, here.
//! - [`ObjectType`]: the kinds `Untyped.Retype` can create.
//! - [`bootinfo`]: the initial capabilities and the boot-info page init receives.
#![no_std]
#![forbid(unsafe_code)]

pub mod bootinfo;
mod error;
mod invocation;
pub mod ipc;

pub use error::Error;
pub use invocation::{FAULT_LABEL, Invocation, ObjectType, READ_DIRTY_PAGES};

/// System-call numbers.
///
/// A capability invocation is a [`Syscall::Call`] on the capability with a
/// [`MessageInfo`] whose label is an [`Invocation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Syscall {
    /// Send a message and wait for the reply; on an object capability, invoke it.
    Call = 1,
    /// Send a message on an endpoint (blocking until a receiver takes it).
    Send = 2,
    /// Wait for a message on an endpoint (or a signal on a bound notification).
    Recv = 3,
    /// Reply to the last caller, then wait for the next message.
    ReplyRecv = 4,
    /// Signal a notification: OR the capability's badge into its word.
    Signal = 5,
    /// Wait for a notification's word to become non-zero, and take it.
    Wait = 6,
    /// Give up the rest of the time slice.
    Yield = 7,
    /// Write the byte MR0 to the kernel console, through the Console
    /// capability named as the call's capability (write right). Errors: the
    /// lookup's (`LookupFailed`, `EmptySlot`, `WrongKind`,
    /// `InsufficientRights`): a thread without a Console capability prints
    /// nothing.
    DebugPutChar = 32,
    /// End the QEMU session with status MR0, through the Console capability
    /// named as the call's capability, which must hold the write and the
    /// grant right (on a Console, the grant right is the right to halt).
    /// Errors: as [`Syscall::DebugPutChar`]; on success it does not return.
    DebugHalt = 33,
    /// Kernels built with the `cap-dump` feature: print every live object and
    /// the whole capability derivation tree on the console (format: the
    /// kernel's `cap_dump` module); others answer [`Error::NotSupported`].
    DebugCapDump = 34,
    /// Name the thread of the Tcb capability (write right) for the console
    /// and the capability dump: up to 32 bytes of UTF-8 in message registers
    /// 0..4, little-endian, NUL-padded.
    DebugNameThread = 35,
    /// Kernels built with `fuzz-checks`: compare the kernel's real tables
    /// (CPU page tables, IoSpace stage 2, IOMMU device and PASID entries,
    /// x86_64 MSI remapping entries) with the capability model's view of
    /// who maps, attaches and binds what; [`Error::AbstractionBroken`] on
    /// the first disagreement (printed on the console). Others answer
    /// [`Error::NotSupported`].
    DebugCheckAbstraction = 36,
}

impl Syscall {
    /// Decodes a system-call number; `None` for an unknown number.
    pub const fn from_number(number: u64) -> Option<Syscall> {
        Some(match number {
            1 => Syscall::Call,
            2 => Syscall::Send,
            3 => Syscall::Recv,
            4 => Syscall::ReplyRecv,
            5 => Syscall::Signal,
            6 => Syscall::Wait,
            7 => Syscall::Yield,
            32 => Syscall::DebugPutChar,
            33 => Syscall::DebugHalt,
            34 => Syscall::DebugCapDump,
            35 => Syscall::DebugNameThread,
            36 => Syscall::DebugCheckAbstraction,
            _ => return None,
        })
    }
}

/// Which registers carry a system call, per architecture.
///
/// | role | x86_64 | aarch64 |
/// |---|---|---|
/// | syscall number in, [`Error`] code out | `rax` | `x8` |
/// | capability pointer in, badge out | `rdi` | `x0` |
/// | [`MessageInfo`] in and out | `rsi` | `x1` |
/// | message registers 0..4 | `rdx`, `r10`, `r8`, `r9` | `x2`..`x5` |
///
/// Message registers beyond [`registers::IN_REGISTERS`] live in the IPC
/// buffer. `rcx` and `r11` are clobbered by `syscall` on x86_64; on
/// aarch64, `svc` does not preserve x9..x18 (each comes back holding its
/// own value or zero, never a kernel value; kernel/README.md "The
/// system-call ABI"). Every other register keeps its value.
pub mod registers {
    /// How many message registers travel in CPU registers.
    pub const IN_REGISTERS: usize = 4;
    /// The most message registers a message can have (registers + IPC buffer).
    pub const MAX_MESSAGE_REGISTERS: usize = 64;
    /// The most capabilities one message can carry.
    pub const MAX_EXTRA_CAPS: usize = 3;
}

/// Describes a message: `label` (bits 63..32), `length` in message
/// registers (bits 6..0), extra capabilities (bits 8..7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MessageInfo {
    /// The invocation label, or a protocol's own message tag.
    pub label: u32,
    /// Message registers used, at most [`registers::MAX_MESSAGE_REGISTERS`].
    pub length: u8,
    /// Extra capabilities carried, at most [`registers::MAX_EXTRA_CAPS`].
    pub extra_caps: u8,
}

impl MessageInfo {
    /// A message with `label` and `length` registers and no capabilities.
    pub const fn new(label: u32, length: u8) -> MessageInfo {
        MessageInfo {
            label,
            length,
            extra_caps: 0,
        }
    }

    /// The register encoding.
    pub const fn to_word(self) -> u64 {
        ((self.label as u64) << 32)
            | ((self.extra_caps as u64 & 3) << 7)
            | (self.length as u64 & 0x7F)
    }

    /// Decodes a register; lengths and capability counts out of range are
    /// [`Error::InvalidMessage`], as are reserved bits set.
    pub const fn from_word(word: u64) -> Result<MessageInfo, Error> {
        let length = (word & 0x7F) as u8;
        let extra_caps = ((word >> 7) & 3) as u8;
        let reserved = (word >> 9) & 0x7F_FFFF;
        if reserved != 0
            || length as usize > registers::MAX_MESSAGE_REGISTERS
            || extra_caps as usize > registers::MAX_EXTRA_CAPS
        {
            return Err(Error::InvalidMessage);
        }
        Ok(MessageInfo {
            label: (word >> 32) as u32,
            length,
            extra_caps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_info_round_trips() {
        for (label, length, extra_caps) in [(0, 0, 0), (7, 4, 1), (u32::MAX, 64, 3)] {
            let info = MessageInfo {
                label,
                length,
                extra_caps,
            };
            assert_eq!(MessageInfo::from_word(info.to_word()), Ok(info));
        }
    }

    #[test]
    fn message_info_rejects_out_of_range() {
        assert_eq!(MessageInfo::from_word(65), Err(Error::InvalidMessage));
        assert_eq!(MessageInfo::from_word(1 << 20), Err(Error::InvalidMessage));
    }

    #[test]
    fn syscall_numbers_round_trip() {
        for call in [
            Syscall::Call,
            Syscall::Send,
            Syscall::Recv,
            Syscall::ReplyRecv,
            Syscall::Signal,
            Syscall::Wait,
            Syscall::Yield,
            Syscall::DebugPutChar,
            Syscall::DebugHalt,
            Syscall::DebugCapDump,
            Syscall::DebugNameThread,
            Syscall::DebugCheckAbstraction,
        ] {
            assert_eq!(Syscall::from_number(call as u64), Some(call));
        }
        assert_eq!(Syscall::from_number(0), None);
        assert_eq!(Syscall::from_number(8), None);
    }
}
