//! aarch64 exception vectors.
//!
//! VBAR_EL1 points at a 2 KiB table of 16 entries (current EL with SP0,
//! current EL with SPx, lower EL AArch64, lower EL AArch32; each sync, IRQ,
//! FIQ, SError). An entry from EL1 saves a uniform [`TrapFrame`] and calls
//! [`aarch64_trap`]: every exception in the kernel is unexpected, the
//! handler prints the entry, ESR, FAR, ELR and registers, then exits QEMU
//! with a failure status. An entry from EL0 stores the thread's registers
//! into its frame and returns to the kernel (`USER_ENTRY`, user.rs); a
//! system call stores all but x10-x17, which the system-call ABI does not
//! preserve (`USER_SYNC_ENTRY`; kernel/README.md "The system-call ABI").

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

    /* An exception taken from EL0: SP_EL1 is the top of the thread's
       saved-register frame (see user.rs), so the registers go straight into
       it, below SP_EL1, which is left as it was. ESR and FAR stay in their
       registers (run_user reads them for an exception). Then the kernel resumes after
       run_user's call (its stack pointer in TPIDR_EL1), returning the
       vector index. USER_ENTRY stores x0 and x1 and is followed by
       USER_SAVE_REST, which stores the rest: 29 instructions, and one
       vector slot holds 32. */
    .macro USER_ENTRY index
    .balign 0x80
    stp x0, x1, [sp, #-288]
    USER_SAVE_REST \index
    .endm

    .macro USER_SAVE_REST index
    USER_SAVE_ARGUMENTS
    stp x10, x11, [sp, #-208]
    stp x12, x13, [sp, #-192]
    stp x14, x15, [sp, #-176]
    stp x16, x17, [sp, #-160]
    USER_SAVE_KEPT
    mov x0, #\index
    USER_RESUME_KERNEL
    .endm

    /* The registers every entry from EL0 saves: x2-x9 (the system call's
       arguments and number, x9 as x8's pair) ... */
    .macro USER_SAVE_ARGUMENTS
    stp x2, x3, [sp, #-272]
    stp x4, x5, [sp, #-256]
    stp x6, x7, [sp, #-240]
    stp x8, x9, [sp, #-224]
    .endm

    /* ... and x18-x29, x30 with SP_EL0, ELR and SPSR (x18 as x19's pair),
       x2 and x3 the scratch. */
    .macro USER_SAVE_KEPT
    stp x18, x19, [sp, #-144]
    stp x20, x21, [sp, #-128]
    stp x22, x23, [sp, #-112]
    stp x24, x25, [sp, #-96]
    stp x26, x27, [sp, #-80]
    stp x28, x29, [sp, #-64]
    mrs x2, sp_el0
    stp x30, x2, [sp, #-48]
    mrs x2, elr_el1
    mrs x3, spsr_el1
    stp x2, x3, [sp, #-32]
    .endm

    /* Back to the kernel after run_user's call: its stack pointer from
       TPIDR_EL1, its callee-saved registers from that stack, x0 (the
       answer) left alone. */
    .macro USER_RESUME_KERNEL
    mrs x1, tpidr_el1
    mov sp, x1
    ldp x20, x21, [sp, #16]
    ldp x22, x23, [sp, #32]
    ldp x24, x25, [sp, #48]
    ldp x26, x30, [sp, #64]
    ldp x19, x29, [sp], #80
    ret
    .endm

    /* A synchronous exception from EL0 (vector 8). A system call (`svc`
       from AArch64, ESR_EL1.EC 0x15) keeps the system-call ABI
       (kernel/README.md "The system-call ABI"): x10-x17 are not saved
       (nothing in the kernel reads them; the exit loads the frame's,
       which hold the thread's own values from its last full entry, or
       zero), and the answer is 0 (the `subs` leaves it), so run_user
       needs neither ESR_EL1 nor a comparison with the index. Every other
       exception saves everything and answers 8. 28 instructions for a
       system call. */
    .macro USER_SYNC_ENTRY
    .balign 0x80
    stp x0, x1, [sp, #-288]
    mrs x0, esr_el1
    lsr x0, x0, #26
    subs x0, x0, #{ec_svc64}
    b.ne user_exception
    USER_SAVE_ARGUMENTS
    USER_SAVE_KEPT
    USER_RESUME_KERNEL
    .endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global exception_vectors
exception_vectors:
    /* Each `.org` fails the build if the entry before it outgrew its
       0x80-byte slot (which would move every later entry). */
    .irp n, 0,1,2,3,4,5,6,7
    VECTOR_ENTRY \n, kernel_trap
    .org exception_vectors + 0x80 * (\n + 1)
    .endr
    USER_SYNC_ENTRY
    .org exception_vectors + 0x80 * 9
    .irp n, 9,10,11,12,13,14,15
    USER_ENTRY \n
    .org exception_vectors + 0x80 * (\n + 1)
    .endr

    /* Vector 8's exceptions other than `svc`: everything saved. */
user_exception:
    USER_SAVE_REST 8

    /* An exception taken from EL1: unexpected, reported. */
kernel_trap:
    SAVE_REGISTERS
    add x2, sp, #288
    str x2, [sp, #248]
    mov x1, x0
    mov x0, sp
    bl aarch64_trap
    b .
    "#,
    ec_svc64 = const super::user::EC_SVC64,
);
