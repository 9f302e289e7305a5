//! Running user threads on aarch64: EL0 entry by `eret` and the
//! run-until-trap primitive the scheduler is built on.
//!
//! The kernel never keeps a per-thread kernel stack. [`run_user`] saves the
//! kernel's stack pointer and its callee-saved registers but x27 and x28
//! (declared clobbered: the caller keeps in them only what is live), loads
//! the thread's registers from its saved-register frame, leaves SP_EL1 at
//! the *top of that frame* and `eret`s to EL0. Whatever brings the CPU back
//! — `svc`, an abort or an IRQ — enters a lower-EL vector, which stores the
//! registers straight into the frame and resumes the kernel right after the
//! `run_user` call with 0 for a system call, the vector index otherwise
//! (its stack pointer kept in TPIDR_EL1 meanwhile; the syndrome registers
//! of an exception are read after the return). A system call leaves
//! x10-x17 out of the frame: the system-call ABI does not preserve x9-x18
//! (kernel/README.md "The system-call ABI"), and the exit loads the
//! frame's, the thread's own values from its last full entry or zero,
//! so no kernel value reaches user mode in them:
//!
//! ```text
//!  kernel stack: ... run_user() ──eret──> EL0 code
//!                         ^                   │ svc / abort / IRQ
//!                         └── USER_ENTRY <──── frame (in the TCB) filled in
//! ```

use super::trap::TrapFrame;
use core::arch::{asm, global_asm};

/// A user thread's saved registers.
pub type UserContext = TrapFrame;

/// Why [`run_user`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The thread executed `svc`.
    Syscall,
    /// An interrupt arrived (the vector-table entry; the GIC says which).
    Interrupt(u8),
    /// A synchronous exception other than `svc`.
    Exception {
        /// The exception class (ESR_EL1.EC).
        vector: u8,
        /// The full syndrome (ESR_EL1).
        error: u64,
        /// FAR_EL1 for aborts, the faulting PC otherwise.
        address: u64,
    },
}

impl TrapFrame {
    /// A fresh EL0 context starting at `entry` with stack pointer `stack`.
    pub fn new_user(entry: u64, stack: u64) -> TrapFrame {
        TrapFrame {
            x: [0; 31],
            sp: stack,
            elr: entry,
            spsr: 0,
            esr: 0,
            far: 0,
        }
    }

    /// Where the thread resumes (`elr`).
    pub fn program_counter(&self) -> u64 {
        self.elr
    }

    /// The syscall number (`x8`).
    pub fn syscall_number(&self) -> u64 {
        self.x[8]
    }

    /// Syscall argument `index` (0..6): x0..x5.
    pub fn syscall_arg(&self, index: usize) -> u64 {
        self.x[index.min(5)]
    }

    /// Sets a reply: `x8` = status, `x0` = badge, `x1` = message info,
    /// `x2`..`x5` = message registers 0..4.
    pub fn set_reply(&mut self, status: u64, badge: u64, info: u64, registers: [u64; 4]) {
        self.x[8] = status;
        self.x[0] = badge;
        self.x[1] = info;
        self.x[2..6].copy_from_slice(&registers);
    }

    /// Sets the syscall return registers: `x8` = status, `x0` = value.
    pub fn set_syscall_result(&mut self, status: u64, value: u64) {
        self.x[8] = status;
        self.x[0] = value;
    }
}

global_asm!(
    r#"
    .section .text.user_entry, "ax"
    .global aarch64_run_user
aarch64_run_user:
    /* Saves x19-x26, x29, x30 and keeps the stack pointer in TPIDR_EL1
       (nothing else uses it; user mode cannot read it), where the vector
       entry (trap.rs, USER_ENTRY) finds it; x27 and x28 are declared
       clobbered by the inline assembly in run_user that calls in here, so
       the compiler keeps in them only what it would otherwise keep. (Rust
       inline assembly cannot clobber x19 or x29. Clobbering more of
       x20-x26 measured dearer: the scheduler loop then spills what it
       keeps live across the call; kernel/README.md "Measured".) */
    stp x19, x29, [sp, #-80]!
    stp x20, x21, [sp, #16]
    stp x22, x23, [sp, #32]
    stp x24, x25, [sp, #48]
    stp x26, x30, [sp, #64]
    mov x1, sp
    msr tpidr_el1, x1
    ldp x1, x2, [x0, #256]
    msr elr_el1, x1
    /* Only EL0t with interrupts unmasked may be entered: of the saved
       SPSR only the condition flags (N, Z, C, V) go back, never a mode
       or mask bit. The flags are the thread's own and are kept: an
       interrupt may fall between a compare and its branch. */
    and x2, x2, #{nzcv}
    msr spsr_el1, x2
    add sp, x0, #288
    ldp x2, x3, [sp, #-272]
    ldp x4, x5, [sp, #-256]
    ldp x6, x7, [sp, #-240]
    ldp x8, x9, [sp, #-224]
    ldp x10, x11, [sp, #-208]
    ldp x12, x13, [sp, #-192]
    ldp x14, x15, [sp, #-176]
    ldp x16, x17, [sp, #-160]
    ldp x18, x19, [sp, #-144]
    ldp x20, x21, [sp, #-128]
    ldp x22, x23, [sp, #-112]
    ldp x24, x25, [sp, #-96]
    ldp x26, x27, [sp, #-80]
    ldp x28, x29, [sp, #-64]
    /* x30 and SP_EL0 are neighbours in the frame: one load. */
    ldp x30, x1, [sp, #-48]
    msr sp_el0, x1
    ldp x0, x1, [sp, #-288]
    eret
    "#,
    nzcv = const SPSR_NZCV,
);

/// SPSR_EL1.{N,Z,C,V}, the one part of a saved SPSR a thread gets back
/// (`aarch64_run_user` masks the rest off on the way out).
const SPSR_NZCV: u64 = 0xF << 28;

/// Exception class of `svc` from AArch64 (ESR_EL1.EC); the synchronous
/// vector (trap.rs) tells a system call apart by it.
pub(super) const EC_SVC64: u64 = 0x15;

/// ESR_EL1 or FAR_EL1 (`$register`) of the exception that just brought the
/// CPU back from user mode: the vector entry does not save them, and
/// nothing in between takes another exception (the kernel runs with
/// interrupts masked).
macro_rules! syndrome {
    ($register:literal) => {{
        let value: u64;
        // SAFETY: reading a syndrome register has no side effect.
        unsafe {
            asm!(
                concat!("mrs {value}, ", $register),
                value = out(reg) value,
                options(nomem, nostack, preserves_flags),
            )
        };
        value
    }};
}

/// Runs the thread whose registers are `context` until it traps, and says why.
pub fn run_user(context: &mut UserContext) -> Exit {
    let entry: u64;
    // SAFETY: `context` is a valid, exclusively borrowed, 16-byte aligned
    // frame; its SPSR is masked to the flags on the way out, so `eret`
    // enters EL0t. The assembly saves and restores x19-x26, x29, x30 and the
    // stack pointer and returns here when the thread traps into a lower-EL
    // vector, which writes only the frame; every other register is
    // declared clobbered, so the compiler saves only what is live across
    // the call.
    unsafe {
        asm!(
            "bl aarch64_run_user",
            inout("x0") core::ptr::from_mut(context) as u64 => entry,
            out("x27") _, out("x28") _,
            clobber_abi("C"),
        )
    };
    // The synchronous vector answers 0 for `svc` (having checked ESR_EL1),
    // the vector index for everything else.
    if entry == 0 {
        return Exit::Syscall;
    }
    if let 9 | 10 = entry {
        return Exit::Interrupt(entry as u8);
    }
    // Built here from what the cold part leaves in the frame, so that the
    // `Exit` stays in registers: returned whole from an out-of-line
    // function it went through memory, one store more on every system
    // call.
    let vector = record_exception(context, entry);
    Exit::Exception {
        vector,
        error: context.esr,
        address: context.far,
    }
}

/// [`run_user`] for an exception (vector `entry`, not a system call):
/// keeps its syndrome in the frame (`esr`; `far`: FAR_EL1 for a
/// synchronous exception, the faulting PC otherwise) and answers the
/// exception class (0x2F, SError, for the other vectors).
#[cold]
#[inline(never)]
fn record_exception(context: &mut UserContext, entry: u64) -> u8 {
    let esr = syndrome!("esr_el1");
    context.esr = esr;
    if entry == 8 {
        context.far = syndrome!("far_el1");
        (esr >> 26) as u8
    } else {
        context.far = context.elr;
        0x2F
    }
}

/// Switches to the user address space rooted at physical address `root`.
pub fn set_address_space(root: u64) {
    // SAFETY: TTBR0 only covers the lower (user) half; the kernel runs from
    // TTBR1, so it stays mapped. Clearing TCR_EL1.EPD0 enables lower-half walks
    // and the TLB flush drops the previous space's entries.
    unsafe {
        asm!(
            "msr ttbr0_el1, {root}",
            "mrs {tcr}, tcr_el1",
            "bic {tcr}, {tcr}, #(1 << 7)",
            "msr tcr_el1, {tcr}",
            "isb",
            "tlbi vmalle1",
            "dsb ish",
            "isb",
            root = in(reg) root,
            tcr = out(reg) _,
            options(nostack),
        );
    }
}

#[cfg(feature = "self-tests")]
global_asm!(
    r#"
    .section .rodata.user_probe, "a"
    .global aarch64_user_probe_start, aarch64_user_probe_end
    .balign 4
aarch64_user_probe_start:
    mov x8, #42
    mov x0, #0x1234
    svc #0
    add x0, x0, #1
    mov x8, #43
    svc #0
    movz x1, #0x777, lsl #16
    movk x1, #0x7000
    str xzr, [x1]
    udf #0
aarch64_user_probe_end:
    "#
);

#[cfg(feature = "self-tests")]
/// A position-independent user program for the boot self-test of the user
/// boundary: `svc(42, 0x1234)`, then `svc(43, result + 1)`, then a write to
/// the unmapped address 0x7777000.
pub fn user_probe_program() -> &'static [u8] {
    unsafe extern "C" {
        static aarch64_user_probe_start: u8;
        static aarch64_user_probe_end: u8;
    }
    // SAFETY: the two symbols delimit the bytes assembled above, in .rodata.
    unsafe {
        let start = &raw const aarch64_user_probe_start;
        let end = &raw const aarch64_user_probe_end;
        core::slice::from_raw_parts(start, end as usize - start as usize)
    }
}

#[cfg(feature = "bench")]
global_asm!(
    r#"
    .section .rodata.user_bench, "a"
    .global aarch64_user_bench_start, aarch64_user_bench_end
    .balign 4
aarch64_user_bench_start:
    /* x0 = iterations, x1 = 1 to make the system call, 0 for the empty loop
       (the measurement overhead). Reports the summed counter deltas with
       DebugHalt. */
    mov x19, x0
    mov x20, x1
    mov x21, #0
1:  isb
    mrs x22, cntvct_el0
    cbz x20, 2f
    mov x8, #{yield_number}
    svc #0
2:  isb
    mrs x23, cntvct_el0
    sub x23, x23, x22
    add x21, x21, x23
    subs x19, x19, #1
    b.ne 1b
    mov x8, #{halt_number}
    mov x0, x21
    svc #0
    udf #0
aarch64_user_bench_end:
    "#,
    yield_number = const abi::Syscall::Yield as u64,
    halt_number = const abi::Syscall::DebugHalt as u64,
);

#[cfg(feature = "bench")]
/// A user program that times `x0` null system calls (`Yield`) with the
/// virtual counter, or the empty loop when `x1` is 0, and halts with the sum.
pub fn user_bench_program() -> &'static [u8] {
    unsafe extern "C" {
        static aarch64_user_bench_start: u8;
        static aarch64_user_bench_end: u8;
    }
    // SAFETY: the two symbols delimit the bytes assembled above, in .rodata.
    unsafe {
        let start = &raw const aarch64_user_bench_start;
        let end = &raw const aarch64_user_bench_end;
        core::slice::from_raw_parts(start, end as usize - start as usize)
    }
}

impl TrapFrame {
    /// Sets the first two arguments a program starts with (`x0`, `x1`).
    pub fn set_start_arguments(&mut self, first: u64, second: u64) {
        self.x[0] = first;
        self.x[1] = second;
    }
}
