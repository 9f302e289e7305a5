//! The plain message system calls: `Call`, `Send`, `Recv`, `ReplyRecv`
//! on an [`Endpoint`], `Signal` and `Wait` on a [`Notification`].
//!
//! A message is a [`MessageInfo`] (label, length, extra-capability count)
//! and registers 0..4 passed here. Registers `4..length` and the extra
//! capabilities go through the IPC buffer: set them with
//! [`set_mr`](crate::ipc::set_mr) and [`set_cap`](crate::ipc::set_cap)
//! before the call; read a received message's registers 4.. with
//! [`mr`](crate::ipc::mr).

use crate::cap::{Cap, Endpoint, Notification};
use crate::syscall::{SyscallOut, UNKNOWN_STATUS, status_to_result, syscall};
use crate::{Error, MessageInfo};
use abi::Syscall;

/// A received message: the badge of the capability it came through, its
/// message word, and registers 0..4 (registers 4.. are in the IPC buffer,
/// [`ipc::mr`](crate::ipc::mr)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// The badge of the sender's capability (0 if unbadged).
    pub badge: u64,
    /// Label, length and extra-capability count.
    pub info: MessageInfo,
    /// Message registers 0..4.
    pub mrs: [u64; 4],
}

fn received(out: SyscallOut) -> Result<Received, Error> {
    status_to_result(out.status)?;
    let info = MessageInfo::from_word(out.info).map_err(|_| UNKNOWN_STATUS)?;
    Ok(Received {
        badge: out.badge,
        info,
        mrs: out.mrs,
    })
}

impl Cap<Endpoint> {
    /// `Call`: sends `info` with registers `mrs` (registers `4..length` and
    /// extra capabilities from the IPC buffer) and waits for the reply.
    pub fn call(self, info: MessageInfo, mrs: [u64; 4]) -> Result<Received, Error> {
        received(syscall(
            Syscall::Call as u64,
            u64::from(self.slot().index()),
            info.to_word(),
            mrs,
        ))
    }

    /// `Send`: sends a message, blocking until a receiver takes it.
    pub fn send(self, info: MessageInfo, mrs: [u64; 4]) -> Result<(), Error> {
        let out = syscall(
            Syscall::Send as u64,
            u64::from(self.slot().index()),
            info.to_word(),
            mrs,
        );
        status_to_result(out.status)
    }

    /// `Recv`: waits for a message on this endpoint (or a signal on a bound
    /// notification).
    pub fn recv(self) -> Result<Received, Error> {
        received(syscall(
            Syscall::Recv as u64,
            u64::from(self.slot().index()),
            0,
            [0; 4],
        ))
    }

    /// `ReplyRecv`: replies `info`/`mrs` to the last caller, then waits for
    /// the next message on this endpoint.
    pub fn reply_recv(self, info: MessageInfo, mrs: [u64; 4]) -> Result<Received, Error> {
        received(syscall(
            Syscall::ReplyRecv as u64,
            u64::from(self.slot().index()),
            info.to_word(),
            mrs,
        ))
    }
}

impl Cap<Notification> {
    /// `Signal`: ORs this capability's badge into the notification's word.
    pub fn signal(self) -> Result<(), Error> {
        let out = syscall(
            Syscall::Signal as u64,
            u64::from(self.slot().index()),
            0,
            [0; 4],
        );
        status_to_result(out.status)
    }

    /// `Wait`: waits for the notification's word to become non-zero, takes
    /// it (the word is cleared) and returns it (in the badge register).
    pub fn wait(self) -> Result<u64, Error> {
        let out = syscall(
            Syscall::Wait as u64,
            u64::from(self.slot().index()),
            0,
            [0; 4],
        );
        status_to_result(out.status)?;
        Ok(out.badge)
    }
}
