//! aarch64 exception vectors.
//!
//! VBAR_EL1 points at a 2 KiB table of 16 entries (current EL with SP0,
//! current EL with SPx, lower EL AArch64, lower EL AArch32; each sync, IRQ,
//! FIQ, SError). Every entry saves a uniform [`TrapFrame`] and calls
//! [`aarch64_trap`]. Every exception is unexpected at this stage: the handler
//! prints the entry, ESR, FAR, ELR and registers, then exits QEMU with a
//! failure status.

use core::fmt;

/// Registers saved by the vector entries; for a user thread, its saved context.
#[repr(C, align(16))]
#[derive(Clone, zerocopy::FromBytes)]
pub struct TrapFrame {
    /// x0..x30.
    pub x: [u64; 31],
    /// The interrupted stack pointer (SP_EL0 for user threads).
    pub sp: u64,
    /// Exception link register: where the thread resumes.
    pub elr: u64,
    /// Saved program status.
    pub spsr: u64,
    /// Exception syndrome of the last exception.
    pub esr: u64,
    /// Fault address of the last exception.
    pub far: u64,
}

/// The frame as raw words for the `[trap]` line, in the order `cargo xtask`
/// names them when it decodes the console (tools/xtask/src/console.rs):
/// elr spsr sp x0 .. x30.
impl fmt::Display for TrapFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for word in [self.elr, self.spsr, self.sp].iter().chain(&self.x) {
            write!(f, " {word:#x}")?;
        }
        Ok(())
    }
}

/// Called by the vector entries with the saved registers and the entry index.
#[unsafe(no_mangle)]
extern "C" fn aarch64_trap(frame: &TrapFrame, entry: u64) -> ! {
    // Raw on one line: `cargo xtask` names the entry, the exception class
    // and the registers.
    super::super::unexpected_trap(format_args!(
        "[trap] unexpected exception entry {entry} ESR {:#x} FAR {:#x} frame{frame}",
        frame.esr, frame.far
    ))
}

core::arch::global_asm!(
    r#"
    .macro VECTOR_ENTRY index, handler
    .balign 0x80
    sub sp, sp, #288
    stp x0, x1, [sp, #0]
    mov x0, #\index
    b \handler
    .endm

    .macro SAVE_REGISTERS
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x9, [sp, #64]
    stp x10, x11, [sp, #80]
    stp x12, x13, [sp, #96]
    stp x14, x15, [sp, #112]
    stp x16, x17, [sp, #128]
    stp x18, x19, [sp, #144]
    stp x20, x21, [sp, #160]
    stp x22, x23, [sp, #176]
    stp x24, x25, [sp, #192]
    stp x26, x27, [sp, #208]
    stp x28, x29, [sp, #224]
    str x30, [sp, #240]
    mrs x2, elr_el1
    mrs x3, spsr_el1
    stp x2, x3, [sp, #256]
    mrs x2, esr_el1
    mrs x3, far_el1
    stp x2, x3, [sp, #272]
    .endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global exception_vectors
exception_vectors:
    .irp n, 0,1,2,3,4,5,6,7
    VECTOR_ENTRY \n, kernel_trap
    .endr
    .irp n, 8,9,10,11,12,13,14,15
    VECTOR_ENTRY \n, user_trap
    .endr

    /* An exception taken from EL1: unexpected, reported. */
kernel_trap:
    SAVE_REGISTERS
    add x2, sp, #288
    str x2, [sp, #248]
    mov x1, x0
    mov x0, sp
    bl aarch64_trap
    b .

    /* An exception taken from EL0: SP_EL1 was the top of the thread's
       saved-register frame (see user.rs), so the entry above already wrote
       into it. Finish the frame and resume the kernel after run_user,
       returning the vector index. */
user_trap:
    SAVE_REGISTERS
    mrs x2, sp_el0
    str x2, [sp, #248]
    b aarch64_resume_kernel
    "#
);
