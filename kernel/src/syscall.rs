//! System-call dispatch for user threads: raw registers in, a typed
//! [`Syscall`] decoded, an effect performed, a status out.
//!
//! `Call` on an object capability is an invocation, decoded and performed by
//! [`crate::objects`]. Endpoints and notifications (`Call` on an endpoint,
//! `Send`, `Recv`, `ReplyRecv`, `Signal`, `Wait`) arrive with the rest of the
//! kernel core; until then they answer [`Error::NotSupported`] so a program
//! can tell.

use crate::arch::UserContext;
use crate::mem::phys_to_virt;
use abi::{Error, MessageInfo, Syscall};

/// What the kernel knows about the calling thread.
pub struct Caller {
    /// Its CSpace root (a kernel-held slot holding a CNode capability).
    pub cspace: caps::SlotId,
    /// Physical address of its IPC buffer (layout: `abi::ipc`).
    pub ipc_buffer: u64,
}

impl Caller {
    fn buffer_word(&self, index: usize) -> u64 {
        // SAFETY: the IPC buffer is a frame the kernel allocated for this
        // thread, in the direct map; `index` < 64 words (512 bytes).
        unsafe {
            (phys_to_virt(self.ipc_buffer) as *const u64)
                .add(index % 64)
                .read_volatile()
        }
    }

    fn set_buffer_word(&self, index: usize, value: u64) {
        // SAFETY: as in `buffer_word`.
        unsafe {
            (phys_to_virt(self.ipc_buffer) as *mut u64)
                .add(index % 64)
                .write_volatile(value)
        }
    }

    fn extra_cap(&self, index: usize) -> u32 {
        let base = self.ipc_buffer + abi::ipc::CAPS_OFFSET as u64;
        // SAFETY: the capability pointers `[u32; 3]` start at CAPS_OFFSET of
        // the IPC buffer page; the index is reduced below 3.
        unsafe {
            (phys_to_virt(base) as *const u32)
                .add(index % 3)
                .read_volatile()
        }
    }
}

/// Performs `Call` on an object capability: an invocation.
fn invoke(context: &mut UserContext, caller: &Caller) {
    let info = match MessageInfo::from_word(context.syscall_arg(1)) {
        Ok(info) => info,
        Err(e) => {
            context.set_reply(u64::from(e.code()), 0, 0, [0; 4]);
            return;
        }
    };
    let mut mrs = [0u64; 8];
    for (i, mr) in mrs.iter_mut().enumerate() {
        *mr = if i < 4 {
            context.syscall_arg(2 + i)
        } else {
            caller.buffer_word(i)
        };
    }
    let message = crate::objects::Message {
        cap: context.syscall_arg(0),
        info,
        mrs,
        extra_caps: [
            caller.extra_cap(0),
            caller.extra_cap(1),
            caller.extra_cap(2),
        ],
    };
    match crate::objects::invoke(caller.cspace, &message) {
        Ok(reply) => {
            for i in 4..usize::from(reply.length).min(8) {
                caller.set_buffer_word(i, reply.mrs[i]);
            }
            let info = MessageInfo::new(0, reply.length).to_word();
            context.set_reply(
                0,
                0,
                info,
                [reply.mrs[0], reply.mrs[1], reply.mrs[2], reply.mrs[3]],
            );
        }
        Err(e) => context.set_reply(u64::from(e.code()), 0, 0, [0; 4]),
    }
}

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
pub fn handle(context: &mut UserContext, caller: Option<&Caller>) -> Next {
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
        Syscall::Call if caller.is_some() => {
            if let Some(caller) = caller {
                invoke(context, caller);
            }
            Next::Resume
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
