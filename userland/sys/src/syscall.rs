//! The raw system-call layer: one `syscall`/`svc` with the registers of
//! `abi::registers`, and the status-to-[`Error`] rule every wrapper uses.
//!
//! | role | x86_64 | aarch64 |
//! |---|---|---|
//! | syscall number in, status out | `rax` | `x8` |
//! | capability pointer in, badge out | `rdi` | `x0` |
//! | `MessageInfo` in and out | `rsi` | `x1` |
//! | message registers 0..4 in and out | `rdx`, `r10`, `r8`, `r9` | `x2`..`x5` |
//!
//! `rcx` and `r11` are clobbered by `syscall` on x86_64; the kernel restores
//! every other register from the thread's saved frame. On aarch64, `svc`
//! does not preserve x9..x18 (caller-saved in AAPCS64): after a system call
//! each holds either the value it had or zero, never a kernel value (the
//! kernel skips saving some of them on its system-call path; kernel/README.md
//! "The system-call ABI"), so the assembly declares them clobbered. Every
//! other register but the outputs keeps its value. Message registers 4
//! and up, and extra capabilities, travel in the IPC buffer ([`crate::ipc`]);
//! the kernel may read and write it during any system call, so the assembly
//! is not marked `nomem`.
//!
//! On the host (any target whose `target_os` is not `none`) there is no
//! kernel: [`syscall`] asks the per-thread stand-in of `crate::host`, which
//! answers [`Error::NotSupported`] unless a test installed one.

use crate::Error;
use crate::cap::{Cap, Console, Slot};
use abi::Syscall;
use core::sync::atomic::{AtomicU32, Ordering};

/// The registers a system call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SyscallOut {
    /// 0 for success, otherwise an [`Error`] code.
    pub status: u64,
    /// The badge (or, for `Wait`, the notification word); for `DebugHalt`
    /// and the debug calls, unspecified.
    pub badge: u64,
    /// The reply's [`MessageInfo`](crate::MessageInfo) word.
    pub info: u64,
    /// Message registers 0..4 of the reply.
    pub mrs: [u64; 4],
}

/// The error reported when the kernel answers a status this crate does not
/// know (a kernel newer than the SDK), or a reply it cannot decode (a
/// malformed `MessageInfo`, fewer registers than the invocation's reply
/// has): the reply could not be understood, so [`Error::InvalidMessage`].
pub const UNKNOWN_STATUS: Error = Error::InvalidMessage;

/// Maps a status register to a result: 0 is `Ok`, a known code its
/// [`Error`], anything else [`UNKNOWN_STATUS`].
pub fn status_to_result(status: u64) -> Result<(), Error> {
    if status == 0 {
        return Ok(());
    }
    let code = u8::try_from(status).ok().and_then(Error::from_code);
    Err(code.unwrap_or(UNKNOWN_STATUS))
}

/// Performs system call `number` with capability pointer `cap`, message
/// word `info` and message registers `mrs`, and returns the registers the
/// kernel wrote back. Nothing is interpreted: see [`status_to_result`].
///
/// Numbers are [`Syscall`] values; any other number is passed through
/// (the kernel answers [`Error::InvalidSyscall`]), which is what a syscall
/// fuzzer needs.
#[inline]
pub fn syscall(number: u64, cap: u64, info: u64, mrs: [u64; 4]) -> SyscallOut {
    arch::syscall(number, cap, info, mrs)
}

/// Gives up the rest of the time slice (`Yield`).
pub fn yield_now() {
    // Yield cannot fail; its status carries nothing to act on.
    let _ = syscall(Syscall::Yield as u64, 0, 0, [0; 4]);
}

/// The program's Console capability: the root task's
/// [`bootinfo::CONSOLE`](crate::bootinfo::CONSOLE) unless [`set_console`]
/// named another (`rt` does, from a domain's capability table).
static CONSOLE: AtomicU32 = AtomicU32::new(abi::bootinfo::CONSOLE);

/// Makes `console` the Console capability [`debug_put_char`] and
/// [`debug_halt`] use; `None`: the program has none (slot 0, which stays
/// empty), so they fail and print nothing.
pub fn set_console(console: Option<Cap<Console>>) {
    let slot = console.map_or(0, |c| c.slot().index());
    CONSOLE.store(slot, Ordering::Relaxed);
}

/// The Console capability [`debug_put_char`] and [`debug_halt`] use.
pub fn console() -> Cap<Console> {
    Cap::from_slot(Slot::new(CONSOLE.load(Ordering::Relaxed)))
}

/// Writes one byte to the kernel console (`DebugPutChar`) through the
/// program's Console capability ([`console`]). Errors: the lookup's
/// ([`Error::EmptySlot`], [`Error::WrongKind`],
/// [`Error::InsufficientRights`]: no Console with the write right), and
/// then nothing is printed.
pub fn debug_put_char(byte: u8) -> Result<(), Error> {
    console_put_char(console(), byte)
}

/// [`debug_put_char`] through the Console capability `console`.
pub fn console_put_char(console: Cap<Console>, byte: u8) -> Result<(), Error> {
    let cap = u64::from(console.slot().index());
    status_to_result(
        syscall(
            Syscall::DebugPutChar as u64,
            cap,
            0,
            [u64::from(byte), 0, 0, 0],
        )
        .status,
    )
}

/// Writes every byte of `text` with [`debug_put_char`], stopping at the
/// first error.
pub fn debug_put_str(text: &str) -> Result<(), Error> {
    text.bytes().try_for_each(debug_put_char)
}

/// Asks the kernel to print every live object and the capability
/// derivation tree on its console (`DebugCapDump`; `cargo xtask run
/// --cap-dump` draws it). Errors: [`Error::NotSupported`] in a kernel built
/// without the `cap-dump` feature.
pub fn debug_cap_dump() -> Result<(), Error> {
    status_to_result(syscall(Syscall::DebugCapDump as u64, 0, 0, [0; 4]).status)
}

/// Asks the kernel to compare its real tables with the capability model
/// (`DebugCheckAbstraction`; the fuzzer calls it after every batch).
/// Errors: [`Error::AbstractionBroken`] on a disagreement (the kernel
/// prints the first on its console), [`Error::NotSupported`] in a kernel
/// built without the `fuzz-checks` feature.
pub fn debug_check_abstraction() -> Result<(), Error> {
    status_to_result(syscall(Syscall::DebugCheckAbstraction as u64, 0, 0, [0; 4]).status)
}

/// Ends the QEMU session with `status` (`DebugHalt`) through the
/// program's Console capability ([`console`]), which must hold the write
/// and the grant (halt) right. Never returns: when the kernel refuses
/// (no such Console), the thread yields forever.
pub fn debug_halt(status: u32) -> ! {
    let _ = console_halt(console(), status);
    loop {
        yield_now();
    }
}

/// `DebugHalt` through the Console capability `console`: returns only
/// when the kernel refuses, with its error (the lookup's, e.g.
/// [`Error::InsufficientRights`] for a Console without the grant right).
pub fn console_halt(console: Cap<Console>, status: u32) -> Error {
    let cap = u64::from(console.slot().index());
    let out = syscall(
        Syscall::DebugHalt as u64,
        cap,
        0,
        [u64::from(status), 0, 0, 0],
    );
    status_to_result(out.status)
        .err()
        .unwrap_or(crate::syscall::UNKNOWN_STATUS)
}

#[cfg(all(target_os = "none", target_arch = "x86_64"))]
#[allow(unsafe_code)]
mod arch {
    use super::SyscallOut;

    #[inline(always)]
    pub fn syscall(number: u64, cap: u64, info: u64, mrs: [u64; 4]) -> SyscallOut {
        let mut out = SyscallOut::default();
        // SAFETY:
        // 1. `syscall` enters the kernel at the entry it configured; the
        //    kernel saves every user register in the thread's frame and
        //    restores them all on return except the outputs declared here
        //    (rax, rdi, rsi, rdx, r10, r8, r9) and rcx/r11, which the
        //    instruction itself overwrites and which are declared clobbered.
        // 2. The kernel runs on its own stack and never touches ours, so
        //    `nostack` holds (the x86_64-unknown-none target has no red zone
        //    either way).
        // 3. The kernel may read and write this thread's IPC buffer, which
        //    is why `nomem` is absent: the compiler treats the call as
        //    touching memory.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") number => out.status,
                inlateout("rdi") cap => out.badge,
                inlateout("rsi") info => out.info,
                inlateout("rdx") mrs[0] => out.mrs[0],
                inlateout("r10") mrs[1] => out.mrs[1],
                inlateout("r8") mrs[2] => out.mrs[2],
                inlateout("r9") mrs[3] => out.mrs[3],
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        out
    }
}

#[cfg(all(target_os = "none", target_arch = "aarch64"))]
#[allow(unsafe_code)]
mod arch {
    use super::SyscallOut;

    #[inline(always)]
    pub fn syscall(number: u64, cap: u64, info: u64, mrs: [u64; 4]) -> SyscallOut {
        let mut out = SyscallOut::default();
        // SAFETY:
        // 1. `svc #0` traps to EL1; the kernel saves the thread's registers
        //    in its frame and restores them on `eret`, except the outputs
        //    declared here (x8, x0..x5) and x9..x18, which the system-call
        //    ABI does not preserve and which are declared clobbered.
        // 2. The kernel runs on SP_EL1 and never touches the user stack, so
        //    `nostack` holds.
        // 3. The kernel may read and write this thread's IPC buffer, which
        //    is why `nomem` is absent.
        // 4. No FP/SIMD register holds user state: user programs are built
        //    for aarch64-unknown-none-softfloat and the kernel traps any
        //    FP/SIMD instruction at EL0 (kernel/README.md "FP/SIMD state"),
        //    so the kernel's own use of those registers (it is built
        //    hard-float and saves none of them) cannot change this
        //    program's values, and nothing beyond the outputs is clobbered.
        unsafe {
            core::arch::asm!(
                "svc #0",
                inlateout("x8") number => out.status,
                inlateout("x0") cap => out.badge,
                inlateout("x1") info => out.info,
                inlateout("x2") mrs[0] => out.mrs[0],
                inlateout("x3") mrs[1] => out.mrs[1],
                inlateout("x4") mrs[2] => out.mrs[2],
                inlateout("x5") mrs[3] => out.mrs[3],
                out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
                out("x14") _, out("x15") _, out("x16") _, out("x17") _, out("x18") _,
                options(nostack),
            );
        }
        out
    }
}

#[cfg(all(
    target_os = "none",
    not(any(target_arch = "x86_64", target_arch = "aarch64"))
))]
compile_error!("sys supports x86_64 and aarch64 only");

#[cfg(not(target_os = "none"))]
mod arch {
    pub(crate) use crate::host::syscall;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_zero_is_ok_and_codes_are_errors() {
        assert_eq!(status_to_result(0), Ok(()));
        for error in Error::ALL {
            assert_eq!(status_to_result(u64::from(error.code())), Err(error));
        }
    }

    #[test]
    fn unknown_statuses_have_one_fallback() {
        for status in [30, 63, 78, 255, 256, u64::MAX] {
            assert_eq!(status_to_result(status), Err(UNKNOWN_STATUS));
        }
    }

    #[test]
    fn without_a_kernel_everything_is_not_supported() {
        assert_eq!(debug_put_char(b'x'), Err(Error::NotSupported));
        assert_eq!(
            syscall(Syscall::Call as u64, 1, 0, [0; 4]).status,
            u64::from(Error::NotSupported.code())
        );
    }
}
