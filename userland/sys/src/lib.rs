//! `sys`: how a Portcullis user program talks to the kernel.
//!
//! - [`Cap<T>`](Cap): a capability pointer (a slot in the caller's CSpace)
//!   typed by object kind, with one method per kernel invocation of that
//!   kind ([`invocations`]), each documented with the kernel operation and
//!   its errors as `abi` describes them. [`Slot`]: a slot with no kind, the
//!   destination of invocations that create a capability, which return
//!   its `Cap` (`untyped.retype::<Endpoint>(slot)`).
//! - [`bootinfo`]: the root task's well-known capabilities as typed
//!   constants (`bootinfo::INIT_CNODE: Cap<CNode>`, ...).
//! - [`syscall`](mod@syscall): the raw system call, with the register table of
//!   `abi::registers`, and the plain calls [`yield_now`],
//!   [`debug_put_char`] and [`debug_halt`] (through the program's Console
//!   capability, [`console`]).
//! - [`messages`]: `call`, `send`, `recv`, `reply_recv` on
//!   [`Cap<Endpoint>`](Cap), `signal` and `wait` on
//!   [`Cap<Notification>`](Cap).
//! - [`ipc`]: the IPC buffer's layout and address, for message registers
//!   4.. and extra capabilities.
//! - [`names`]: the table from which a domain learns its capabilities by name.
//! - [`untypeds`]: the root task's initial Untypeds in the boot-info page:
//!   the largest RAM one, the device Untyped covering a physical address.
//!
//! Every call returns `Result<_, Error>`: status 0 is `Ok`, a known code is
//! its [`Error`], and an unknown one is [`syscall::UNKNOWN_STATUS`].
//!
//! # Trust
//!
//! Nothing here is authority: the kernel checks every slot, kind and right
//! on every call, so this crate is safe to get wrong (an error code, never a
//! broken kernel). Its only `unsafe` code is the `syscall`/`svc` instruction
//! and the volatile accesses to the IPC buffer, both under `target_os =
//! "none"` with a `// SAFETY:` argument; everything else is denied unsafe.
//!
//! # Host builds
//!
//! On the host (`cargo test`) there is no kernel: every system call answers
//! [`Error::NotSupported`] unless a test installed a stand-in with
//! `host::set_kernel` (a host-only module), and the IPC buffer is a per-thread variable.
#![no_std]
#![deny(unsafe_code)]

#[cfg(not(target_os = "none"))]
extern crate std;

pub mod bootinfo;
pub mod cap;
#[cfg(not(target_os = "none"))]
pub mod host;
pub mod invocations;
pub mod ipc;
pub mod messages;
pub mod names;
pub mod resources;
pub mod status;
pub mod syscall;
pub mod untypeds;

pub use abi::{Error, Invocation, MessageInfo, ObjectType, Syscall};
pub use cap::{
    CNode, Cap, CapType, Console, Endpoint, FixedSize, Frame, IoDevice, IoFaultQueue, IoPasid,
    IoSpace, IoUserTable, IommuControl, IrqControl, IrqHandler, Notification, PageTable, Retype,
    Slot, Tcb, Untyped,
};
pub use caps::{ObjectKind, Rights};
pub use invocations::{
    FaultRecord, FaultSource, IommuInfo, MapRights, PageResponse, PasidTarget, RetypeError,
    Retyped, UserTableFormat, Vendor,
};
pub use messages::Received;
pub use names::CapTable;
pub use syscall::{
    console, console_halt, console_put_char, debug_cap_dump, debug_check_abstraction, debug_halt,
    debug_put_char, debug_put_str, set_console, syscall, yield_now,
};

#[cfg(test)]
mod tests;
