//! Running user threads on x86_64: the TSS, `syscall` entry, and the
//! run-until-trap primitive the scheduler is built on.
//!
//! The kernel never keeps a per-thread kernel stack. [`run_user`] saves the
//! kernel's stack pointer (and rbx and rbp; the other callee-saved registers
//! are declared clobbered, so the caller keeps only what is live in them),
//! points TSS.RSP0 (and the `syscall` entry) at the *top of the thread's
//! saved-register frame*, and `iretq`s into the thread. Whatever brings the CPU back — `syscall`,
//! an exception or an interrupt — pushes the user registers straight into
//! that frame and then resumes the kernel right after the `run_user` call,
//! which returns why the thread stopped:
//!
//! ```text
//!  kernel stack: ... run_user() ──iretq──> user code
//!                         ^                     │ syscall / trap / IRQ
//!                         └── resume_kernel <── frame (in the TCB) filled in
//! ```

use super::trap::{KERNEL_CODE, TrapFrame, USER_CODE, USER_DATA};
use core::arch::{asm, global_asm};

/// The vector number recorded for a `syscall` instruction (above all IDT vectors).
pub const SYSCALL_VECTOR: u64 = 0x100;

/// A user thread's saved registers.
pub type UserContext = TrapFrame;

/// Why [`run_user`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The thread executed `syscall`.
    Syscall,
    /// A device or timer interrupt arrived (vector).
    Interrupt(u8),
    /// A CPU exception: vector, error code, faulting address (CR2 for page faults).
    Exception {
        /// Exception vector.
        vector: u8,
        /// Error code pushed by the CPU (0 if none).
        error: u64,
        /// CR2 for page faults, the instruction pointer otherwise.
        address: u64,
    },
}

impl TrapFrame {
    /// A fresh user context starting at `entry` with stack pointer `stack`.
    pub fn new_user(entry: u64, stack: u64) -> TrapFrame {
        TrapFrame {
            r15: 0,
            r14: 0,
            r13: 0,
            r12: 0,
            r11: 0,
            r10: 0,
            r9: 0,
            r8: 0,
            rbp: 0,
            rdi: 0,
            rsi: 0,
            rdx: 0,
            rcx: 0,
            rbx: 0,
            rax: 0,
            vector: 0,
            error_code: 0,
            rip: entry,
            cs: u64::from(USER_CODE),
            rflags: 0x202, // IF set, reserved bit 1
            rsp: stack,
            ss: u64::from(USER_DATA),
        }
    }

    /// Where the thread resumes (`rip`).
    pub fn program_counter(&self) -> u64 {
        self.rip
    }

    /// The syscall number (`rax`).
    pub fn syscall_number(&self) -> u64 {
        self.rax
    }

    /// Syscall argument `index` (0..6): rdi, rsi, rdx, r10, r8, r9.
    pub fn syscall_arg(&self, index: usize) -> u64 {
        match index {
            0 => self.rdi,
            1 => self.rsi,
            2 => self.rdx,
            3 => self.r10,
            4 => self.r8,
            _ => self.r9,
        }
    }

    /// Sets a reply: `rax` = status, `rdi` = badge, `rsi` = message info,
    /// `rdx`, `r10`, `r8`, `r9` = message registers 0..4.
    pub fn set_reply(&mut self, status: u64, badge: u64, info: u64, registers: [u64; 4]) {
        self.rax = status;
        self.rdi = badge;
        self.rsi = info;
        [self.rdx, self.r10, self.r8, self.r9] = registers;
    }

    /// Sets the syscall return registers: `rax` = status, `rdi` = value.
    pub fn set_syscall_result(&mut self, status: u64, value: u64) {
        self.rax = status;
        self.rdi = value;
    }
}

global_asm!(
    r#"
    .section .data.tss, "aw"
    .balign 16
    .global x86_64_tss
x86_64_tss:
    .long 0
    .quad 0                 /* RSP0: set by run_user */
    .quad 0, 0, 0           /* RSP1, RSP2, reserved */
    .quad 0, 0, 0, 0, 0, 0, 0, 0  /* IST1..7, reserved */
    .word 0
    .word 104               /* I/O bitmap base: none */

    .section .bss.user_entry, "aw", @nobits
    .balign 8
kernel_rsp_save:    .quad 0
syscall_frame_top:  .quad 0
user_rsp_scratch:   .quad 0

    /* Saves rbx, rbp and the stack pointer; x86_64_resume_kernel restores
       them and returns to the caller. r12-r15 are not saved: the callers
       (run_user, halt_until_interrupt) call in from inline assembly that
       declares them clobbered, so the compiler keeps in them only what it
       would otherwise keep, once per function rather than per entry. Rust
       inline assembly cannot clobber rbx or rbp, so those two stay here. */
    .macro SAVE_KERNEL_CONTEXT
    push %rbx
    push %rbp
    mov %rsp, kernel_rsp_save(%rip)
    .endm

    .section .text.user_entry, "ax"
    .global x86_64_run_user
x86_64_run_user:
    SAVE_KERNEL_CONTEXT
    lea 176(%rdi), %rax
    mov %rax, x86_64_tss+4(%rip)
    mov %rax, syscall_frame_top(%rip)
    mov %rdi, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq

    .global x86_64_resume_kernel
x86_64_resume_kernel:
    mov kernel_rsp_save(%rip), %rsp
    pop %rbp
    pop %rbx
    ret

    /* The idle: halts with interrupts on until one arrives. `sti` takes
       effect after the next instruction, so an interrupt already pending
       when the kernel (interrupts off) decided to idle wakes the `hlt`
       rather than slipping in before it. The interrupt enters trap_common
       from ring 0 with its return address at x86_64_idle_woken; trap_common
       drops that frame and resumes the kernel after the x86_64_idle call
       with the vector in rax, interrupts off again (interrupt gate). */
    .global x86_64_idle
x86_64_idle:
    SAVE_KERNEL_CONTEXT
1:  sti
    hlt
    .global x86_64_idle_woken
x86_64_idle_woken:
    cli
    jmp 1b

    .global x86_64_syscall_entry
x86_64_syscall_entry:
    mov %rsp, user_rsp_scratch(%rip)
    mov syscall_frame_top(%rip), %rsp
    push ${user_data}
    push user_rsp_scratch(%rip)
    push %r11
    push ${user_code}
    push %rcx
    push $0
    push ${syscall_vector}
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    jmp x86_64_resume_kernel
    "#,
    user_data = const USER_DATA,
    user_code = const USER_CODE,
    syscall_vector = const SYSCALL_VECTOR,
    options(att_syntax)
);

unsafe extern "C" {
    static x86_64_tss: u8;
    fn x86_64_syscall_entry();
}

/// Address of the TSS, for its GDT descriptor.
pub fn tss_address() -> u64 {
    &raw const x86_64_tss as u64
}

const MSR_EFER: u32 = 0xC000_0080;
const MSR_STAR: u32 = 0xC000_0081;
const MSR_LSTAR: u32 = 0xC000_0082;
const MSR_FMASK: u32 = 0xC000_0084;

/// Writes a model-specific register.
///
/// # Safety
/// The MSR and value must be valid; MSRs reconfigure the CPU.
unsafe fn write_msr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR and value are valid.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags));
    }
}

/// Reads a model-specific register.
///
/// # Safety
/// The MSR must exist.
unsafe fn read_msr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    };
    (u64::from(high) << 32) | u64::from(low)
}

/// Enables `syscall`/`sysret` and points them at the entry above.
pub fn init() {
    // STAR: kernel CS = 0x08 (SS 0x10); sysret base 0x18 -> SS 0x20|3, CS 0x28|3.
    let star = (u64::from(KERNEL_CODE) << 32) | (0x18u64 << 48);
    // SAFETY: EFER.SCE, STAR, LSTAR and FMASK are architectural MSRs; the
    // entry point and selectors are valid; FMASK clears IF, TF, DF and AC so
    // the kernel runs with interrupts off.
    unsafe {
        write_msr(MSR_EFER, read_msr(MSR_EFER) | 1);
        write_msr(MSR_STAR, star);
        write_msr(MSR_LSTAR, x86_64_syscall_entry as *const () as u64);
        write_msr(MSR_FMASK, 0x4_7700);
    }
}

/// Runs the thread whose registers are `context` until it traps, and says why.
///
/// The address space must already be loaded (see [`set_address_space`]).
#[inline]
pub fn run_user(context: &mut UserContext) -> Exit {
    // SAFETY: `context` is a valid, exclusively borrowed register frame whose
    // CS/SS are user selectors and RFLAGS has IOPL 0, so `iretq` enters ring 3
    // with no more privilege than any thread may have. The assembly saves and
    // restores rbx, rbp and the stack pointer and returns here when the
    // thread traps; every other register is declared clobbered, so the
    // compiler saves only what is live across the call. The frame is written
    // only through the pointer we pass.
    unsafe {
        asm!(
            "call x86_64_run_user",
            in("rdi") core::ptr::from_mut(context),
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            clobber_abi("C"),
        )
    };
    match context.vector {
        SYSCALL_VECTOR => Exit::Syscall,
        vector @ 32..=255 => Exit::Interrupt(vector as u8),
        vector => {
            let address = if vector == 14 {
                let cr2: u64;
                // SAFETY: reading CR2 has no side effects.
                unsafe {
                    asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags))
                };
                cr2
            } else {
                context.rip
            };
            Exit::Exception {
                vector: vector as u8,
                error: context.error_code,
                address,
            }
        }
    }
}

/// Halts the CPU with interrupts enabled until an interrupt arrives, and
/// returns its vector (interrupts are off again). The only point where the
/// kernel takes an interrupt itself; see `x86_64_idle` above.
pub fn halt_until_interrupt() -> u8 {
    loop {
        let vector: u64;
        // SAFETY: `x86_64_idle` saves rbx, rbp and the stack pointer like
        // `x86_64_run_user` (the other registers are declared clobbered),
        // and only an interrupt gate (vector 32..64) taken at
        // `x86_64_idle_woken` brings it back through `x86_64_resume_kernel`,
        // which restores them; the frame the CPU pushed below the saved stack
        // pointer is dropped. Any other trap in ring 0 stays fatal
        // (`x86_64_trap`).
        unsafe {
            asm!(
                "call x86_64_idle",
                out("rax") vector,
                out("r12") _, out("r13") _, out("r14") _, out("r15") _,
                clobber_abi("C"),
            )
        };
        if let Ok(vector @ 32..) = u8::try_from(vector) {
            return vector;
        }
    }
}

/// Switches to the address space rooted at physical address `root`.
pub fn set_address_space(root: u64) {
    // SAFETY: the caller hands a page-table root whose upper half is the
    // kernel's (built by `vspace`), so the kernel stays mapped.
    unsafe { asm!("mov cr3, {}", in(reg) root, options(nostack, preserves_flags)) };
}

#[cfg(feature = "self-tests")]
global_asm!(
    r#"
    .section .rodata.user_probe, "a"
    .global x86_64_user_probe_start, x86_64_user_probe_end
x86_64_user_probe_start:
    mov $42, %eax
    mov $0x1234, %edi
    syscall
    add $1, %rdi
    mov $43, %eax
    syscall
    movabs $0x7777000, %rbx
    movq $0, (%rbx)
    ud2
x86_64_user_probe_end:
    "#,
    options(att_syntax)
);

#[cfg(feature = "self-tests")]
/// A position-independent user program for the boot self-test of the user
/// boundary: `syscall(42, 0x1234)`, then `syscall(43, result + 1)`, then a
/// write to the unmapped address 0x7777000.
pub fn user_probe_program() -> &'static [u8] {
    unsafe extern "C" {
        static x86_64_user_probe_start: u8;
        static x86_64_user_probe_end: u8;
    }
    // SAFETY: the two symbols delimit the bytes assembled above, in .rodata.
    unsafe {
        let start = &raw const x86_64_user_probe_start;
        let end = &raw const x86_64_user_probe_end;
        core::slice::from_raw_parts(start, end as usize - start as usize)
    }
}

#[cfg(feature = "bench")]
global_asm!(
    r#"
    .section .rodata.user_bench, "a"
    .global x86_64_user_bench_start, x86_64_user_bench_end
x86_64_user_bench_start:
    /* rdi = iterations, rsi = 1 to make the system call, 0 for the empty
       loop (the measurement overhead). Reports the summed rdtsc deltas with
       DebugHalt. */
    mov %rdi, %r12
    mov %rsi, %rbx
    xor %r13, %r13
1:  rdtsc
    shl $32, %rdx
    or %rax, %rdx
    mov %rdx, %r14
    test %rbx, %rbx
    jz 2f
    mov ${yield_number}, %eax
    syscall
2:  rdtsc
    shl $32, %rdx
    or %rax, %rdx
    sub %r14, %rdx
    add %rdx, %r13
    dec %r12
    jnz 1b
    mov ${halt_number}, %eax
    mov %r13, %rdi
    syscall
    ud2
x86_64_user_bench_end:
    "#,
    yield_number = const abi::Syscall::Yield as u64,
    halt_number = const abi::Syscall::DebugHalt as u64,
    options(att_syntax)
);

#[cfg(feature = "bench")]
/// A user program that times `rdi` null system calls (`Yield`) with the
/// cycle counter, or the empty loop when `rsi` is 0, and halts with the sum.
pub fn user_bench_program() -> &'static [u8] {
    unsafe extern "C" {
        static x86_64_user_bench_start: u8;
        static x86_64_user_bench_end: u8;
    }
    // SAFETY: the two symbols delimit the bytes assembled above, in .rodata.
    unsafe {
        let start = &raw const x86_64_user_bench_start;
        let end = &raw const x86_64_user_bench_end;
        core::slice::from_raw_parts(start, end as usize - start as usize)
    }
}

impl TrapFrame {
    /// Sets the first two arguments a program starts with (`rdi`, `rsi`).
    pub fn set_start_arguments(&mut self, first: u64, second: u64) {
        self.rdi = first;
        self.rsi = second;
    }
}
