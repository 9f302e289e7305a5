//! Running user threads on aarch64: EL0 entry by `eret` and the
//! run-until-trap primitive the scheduler is built on.
//!
//! The kernel never keeps a per-thread kernel stack. [`run_user`] saves the
//! kernel's stack pointer and its callee-saved registers but x27 and x28
//! (declared clobbered: the caller keeps in them only what is live), loads
//! the thread's registers from its saved-register frame, leaves SP_EL1 at
//! the *top of that frame* and `eret`s to EL0. Whatever brings the CPU back
//! — `svc`, an abort or an IRQ — enters a lower-EL vector, which pushes the
//! registers straight into the frame and resumes the kernel right after the
//! `run_user` call with the vector index:
//!
//! ```text
//!  kernel stack: ... run_user() ──eret──> EL0 code
//!                         ^                   │ svc / abort / IRQ
//!                         └── resume_kernel <── frame (in the TCB) filled in
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
    .section .bss.user_entry, "aw", @nobits
    .balign 8
kernel_sp_save: .quad 0

    .section .text.user_entry, "ax"
    .global aarch64_run_user
aarch64_run_user:
    /* Saves x19-x26, x29, x30 and the stack pointer; x27 and x28 are
       declared clobbered by the inline assembly in run_user that calls in
       here, so the compiler keeps in them only what it would otherwise
       keep. (Rust inline assembly cannot clobber x19 or x29. Clobbering
       more of x20-x26 measured dearer: the scheduler loop then spills
       what it keeps live across the call; kernel/README.md "Measured".) */
    stp x19, x29, [sp, #-80]!
    stp x20, x21, [sp, #16]
    stp x22, x23, [sp, #32]
    stp x24, x25, [sp, #48]
    stp x26, x30, [sp, #64]
    adrp x1, kernel_sp_save
    mov x2, sp
    str x2, [x1, :lo12:kernel_sp_save]
    ldr x1, [x0, #248]
    msr sp_el0, x1
    ldp x1, x2, [x0, #256]
    msr elr_el1, x1
    msr spsr_el1, x2
    mov sp, x0
    ldp x2, x3, [sp, #16]
    ldp x4, x5, [sp, #32]
    ldp x6, x7, [sp, #48]
    ldp x8, x9, [sp, #64]
    ldp x10, x11, [sp, #80]
    ldp x12, x13, [sp, #96]
    ldp x14, x15, [sp, #112]
    ldp x16, x17, [sp, #128]
    ldp x18, x19, [sp, #144]
    ldp x20, x21, [sp, #160]
    ldp x22, x23, [sp, #176]
    ldp x24, x25, [sp, #192]
    ldp x26, x27, [sp, #208]
    ldp x28, x29, [sp, #224]
    ldr x30, [sp, #240]
    ldp x0, x1, [sp, #0]
    add sp, sp, #288
    eret

    .global aarch64_resume_kernel
aarch64_resume_kernel:
    adrp x1, kernel_sp_save
    ldr x1, [x1, :lo12:kernel_sp_save]
    mov sp, x1
    ldp x20, x21, [sp, #16]
    ldp x22, x23, [sp, #32]
    ldp x24, x25, [sp, #48]
    ldp x26, x30, [sp, #64]
    ldp x19, x29, [sp], #80
    ret
    "#
);

/// SPSR_EL1.{N,Z,C,V}, the one part of a saved SPSR a thread gets back.
const SPSR_NZCV: u64 = 0xF << 28;

/// Exception class of `svc` from AArch64 (ESR_EL1.EC).
const EC_SVC64: u64 = 0x15;

/// Runs the thread whose registers are `context` until it traps, and says why.
pub fn run_user(context: &mut UserContext) -> Exit {
    // Only EL0t with interrupts unmasked may be entered: never let a saved
    // SPSR carry the thread into EL1. The condition flags are the thread's
    // own and are kept: an interrupt may fall between a compare and its
    // branch.
    context.spsr &= SPSR_NZCV;
    let entry: u64;
    // SAFETY: `context` is a valid, exclusively borrowed, 16-byte aligned
    // frame; SPSR selects EL0t, so `eret` enters user mode. The assembly saves
    // and restores x19-x26, x29, x30 and the stack pointer and returns here
    // when the thread traps into a lower-EL vector, which writes only the
    // frame; every other register is declared clobbered, so the compiler
    // saves only what is live across the call.
    unsafe {
        asm!(
            "bl aarch64_run_user",
            inout("x0") core::ptr::from_mut(context) as u64 => entry,
            out("x27") _, out("x28") _,
            clobber_abi("C"),
        )
    };
    match entry {
        8 if context.esr >> 26 == EC_SVC64 => Exit::Syscall,
        8 => Exit::Exception {
            vector: (context.esr >> 26) as u8,
            error: context.esr,
            address: context.far,
        },
        9 | 10 => Exit::Interrupt(entry as u8),
        _ => Exit::Exception {
            vector: 0x2F,
            error: context.esr,
            address: context.elr,
        },
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
