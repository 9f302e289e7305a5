//! Host builds only: a per-thread stand-in for the kernel, so that code
//! built on `sys` (this crate's wrappers, init's logic) can be tested with
//! plain `cargo test`.
//!
//! Without a stand-in every system call answers [`Error::NotSupported`]
//! and changes nothing. A test installs one with [`set_kernel`]: a function
//! that receives the call's registers and the calling thread's stand-in
//! [`IpcBuffer`], and returns the registers the kernel would write back.

use crate::Error;
use crate::ipc::IpcBuffer;
use crate::syscall::SyscallOut;
use std::boxed::Box;
use std::cell::RefCell;

/// The registers of one system call as the kernel receives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallIn {
    /// The system-call number (`rax` / `x8`).
    pub number: u64,
    /// The capability pointer (`rdi` / `x0`).
    pub cap: u64,
    /// The `MessageInfo` word (`rsi` / `x1`).
    pub info: u64,
    /// Message registers 0..4.
    pub mrs: [u64; 4],
}

type Kernel = Box<dyn FnMut(SyscallIn, &mut IpcBuffer) -> SyscallOut>;

std::thread_local! {
    static KERNEL: RefCell<Option<Kernel>> = const { RefCell::new(None) };
    static BUFFER: RefCell<IpcBuffer> = const { RefCell::new(IpcBuffer::new()) };
}

/// Answers this thread's system calls with `kernel` from now on.
pub fn set_kernel(kernel: impl FnMut(SyscallIn, &mut IpcBuffer) -> SyscallOut + 'static) {
    KERNEL.with(|slot| *slot.borrow_mut() = Some(Box::new(kernel)));
}

/// Removes this thread's stand-in: system calls answer `NotSupported` again.
pub fn clear_kernel() {
    KERNEL.with(|slot| *slot.borrow_mut() = None);
}

pub(crate) fn with_buffer<R>(f: impl FnOnce(&mut IpcBuffer) -> R) -> R {
    BUFFER.with(|buffer| f(&mut buffer.borrow_mut()))
}

pub(crate) fn syscall(number: u64, cap: u64, info: u64, mrs: [u64; 4]) -> SyscallOut {
    let call = SyscallIn {
        number,
        cap,
        info,
        mrs,
    };
    KERNEL.with(|slot| match slot.borrow_mut().as_mut() {
        Some(kernel) => with_buffer(|buffer| kernel(call, buffer)),
        None => SyscallOut {
            status: u64::from(Error::NotSupported.code()),
            ..SyscallOut::default()
        },
    })
}
