//! System-call dispatch for user threads: raw registers in, a typed
//! [`Syscall`] decoded, an effect performed, a status out.
//!
//! Capability invocations (`Call` on an object) arrive with the kernel
//! objects; until then `Call`, `Send`, `Recv`, `ReplyRecv`, `Signal` and
//! `Wait` answer [`Error::NotSupported`] so a program can tell.

use crate::arch::UserContext;
use abi::{Error, Syscall};

/// What the scheduler does after a system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Resume the caller.
    Resume,
    /// The caller gave up its time slice.
    Yield,
    /// The caller asked to end the session with this status (debug builds).
    Halt(u32),
}

/// Decodes and performs the system call in `context`, writing its result
/// registers. Never panics: every input gets a status code.
pub fn handle(context: &mut UserContext) -> Next {
    let Some(call) = Syscall::from_number(context.syscall_number()) else {
        context.set_syscall_result(u64::from(Error::InvalidSyscall.code()), 0);
        return Next::Resume;
    };
    match call {
        Syscall::DebugPutChar => {
            let byte = context.syscall_arg(0) as u8;
            crate::arch::console_write(&[byte]);
            context.set_syscall_result(0, 0);
            Next::Resume
        }
        Syscall::DebugHalt => Next::Halt(context.syscall_arg(0) as u32),
        Syscall::Yield => {
            context.set_syscall_result(0, 0);
            Next::Yield
        }
        Syscall::Call
        | Syscall::Send
        | Syscall::Recv
        | Syscall::ReplyRecv
        | Syscall::Signal
        | Syscall::Wait => {
            context.set_syscall_result(u64::from(Error::NotSupported.code()), 0);
            Next::Resume
        }
    }
}
