//! x86_64 descriptor tables and CPU exceptions.
//!
//! The boot GDT lives in low memory, which disappears with the identity map,
//! so [`init`] loads an upper-half GDT first. The 32 exception vectors enter
//! through small assembly stubs that push a uniform [`TrapFrame`] and call
//! [`x86_64_trap`]. Every exception is unexpected at this stage: the handler
//! prints the vector, error code, faulting address and registers, then exits
//! QEMU with a failure status.

use core::arch::{asm, global_asm};
use ktext::{Sink, Text};

/// Kernel code selector in the GDT.
pub const KERNEL_CODE: u16 = 0x08;
/// Kernel data selector in the GDT.
pub const KERNEL_DATA: u16 = 0x10;
/// User data selector (RPL 3); `sysret` derives it from STAR as base + 8.
pub const USER_DATA: u16 = 0x20 | 3;
/// User 64-bit code selector (RPL 3); `sysret` derives it as base + 16.
pub const USER_CODE: u16 = 0x28 | 3;
/// Task-state segment selector.
const TSS_SELECTOR: u16 = 0x30;

/// GDT layout: null, kernel code, kernel data, (unused 32-bit user code, the
/// STAR base), user data, user code, TSS (two slots).
static GDT: spin::Once<[u64; 8]> = spin::Once::new();

fn build_gdt() -> [u64; 8] {
    let tss = super::user::tss_address();
    let limit = 103u64;
    let low = (limit & 0xFFFF)
        | ((tss & 0xFF_FFFF) << 16)
        | (0x89 << 40) // present, 64-bit available TSS
        | (((tss >> 24) & 0xFF) << 56);
    let high = tss >> 32;
    [
        0,
        0x00AF_9A00_0000_FFFF,
        0x00CF_9200_0000_FFFF,
        0,
        0x00CF_F200_0000_FFFF,
        0x00AF_FA00_0000_FFFF,
        low,
        high,
    ]
}

/// One interrupt gate (Intel SDM vol. 3, 6.14.1).
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const EMPTY: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_middle: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn interrupt(handler: u64) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: KERNEL_CODE,
            ist: 0,
            attributes: 0x8E, // present, DPL 0, 64-bit interrupt gate
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: spin::Once<Idt> = spin::Once::new();

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

unsafe extern "C" {
    /// Entry stubs for vectors 0..64, built by the assembly below.
    static trap_vectors: [u64; 64];
}

/// Loads the upper-half GDT and the IDT.
pub fn init() {
    let gdt = GDT.call_once(build_gdt);
    let gdt_pointer = DescriptorPointer {
        limit: (size_of_val(gdt) - 1) as u16,
        base: gdt.as_ptr() as u64,
    };
    // SAFETY: GDT is a static with valid 64-bit code and data descriptors at
    // the selectors the kernel uses; reloading CS through a far return and the
    // data segments keeps the current privilege level and flat addressing.
    unsafe {
        asm!(
            "lgdt [{pointer}]",
            "push {code}",
            "lea {scratch}, [rip + 2f]",
            "push {scratch}",
            "retfq",
            "2:",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "mov ss, {data:x}",
            "ltr {tss:x}",
            pointer = in(reg) &gdt_pointer,
            tss = in(reg) u64::from(TSS_SELECTOR),
            code = in(reg) u64::from(KERNEL_CODE),
            data = in(reg) u64::from(KERNEL_DATA),
            scratch = out(reg) _,
        );
    }

    let idt = IDT.call_once(|| {
        let mut gates = [Gate::EMPTY; 256];
        // SAFETY: `trap_vectors` is an initialised read-only table defined in
        // the assembly below.
        let stubs = unsafe { &trap_vectors };
        // Vectors 0..32 are exceptions, 32..48 device and timer interrupts,
        // 48..64 MSIs of user-owned devices.
        for (gate, &stub) in gates.iter_mut().zip(stubs.iter()) {
            *gate = Gate::interrupt(stub);
        }
        Idt(gates)
    });
    let idt_pointer = DescriptorPointer {
        limit: (size_of::<Idt>() - 1) as u16,
        base: idt as *const Idt as u64,
    };
    // SAFETY: the IDT is a 'static table of valid gates pointing at the stubs.
    unsafe { asm!("lidt [{}]", in(reg) &idt_pointer, options(readonly, nostack)) };
}

/// Registers saved by the exception stubs, lowest address first. For a user
/// thread this is also its saved context: 16-byte aligned because the CPU
/// aligns RSP0 before pushing into it.
#[repr(C, align(16))]
#[derive(Clone, zerocopy::FromBytes)]
#[allow(missing_docs)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// The frame as raw words for the `[trap]` line, in the order `cargo xtask`
/// names them when it decodes the console (tools/xtask/src/console.rs):
/// rip cs rflags rsp ss rax rbx rcx rdx rsi rdi rbp r8 .. r15.
impl Text for TrapFrame {
    fn write(&self, out: &mut dyn Sink) {
        ktext::words(
            out,
            &[
                self.rip,
                self.cs,
                self.rflags,
                self.rsp,
                self.ss,
                self.rax,
                self.rbx,
                self.rcx,
                self.rdx,
                self.rsi,
                self.rdi,
                self.rbp,
                self.r8,
                self.r9,
                self.r10,
                self.r11,
                self.r12,
                self.r13,
                self.r14,
                self.r15,
            ],
        );
    }
}

/// Called by the exception stubs with the saved registers.
#[unsafe(no_mangle)]
extern "C" fn x86_64_trap(frame: &TrapFrame) -> ! {
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    // Raw on one line: `cargo xtask` names the vector and the registers.
    super::super::unexpected_trap(&ktext::text!(
        "[trap] unexpected exception {} error {:#x} cr2 {:#x} frame{}",
        frame.vector,
        frame.error_code,
        cr2,
        frame
    ))
}

global_asm!(
    r#"
    .macro TRAP_STUB vector, has_error
    .balign 16
trap_stub_\vector:
    .if \has_error == 0
    push $0
    .endif
    push $\vector
    jmp trap_common
    .endm

    .section .text.trap, "ax"
    TRAP_STUB 0, 0
    TRAP_STUB 1, 0
    TRAP_STUB 2, 0
    TRAP_STUB 3, 0
    TRAP_STUB 4, 0
    TRAP_STUB 5, 0
    TRAP_STUB 6, 0
    TRAP_STUB 7, 0
    TRAP_STUB 8, 1
    TRAP_STUB 9, 0
    TRAP_STUB 10, 1
    TRAP_STUB 11, 1
    TRAP_STUB 12, 1
    TRAP_STUB 13, 1
    TRAP_STUB 14, 1
    TRAP_STUB 15, 0
    TRAP_STUB 16, 0
    TRAP_STUB 17, 1
    TRAP_STUB 18, 0
    TRAP_STUB 19, 0
    TRAP_STUB 20, 0
    TRAP_STUB 21, 1
    TRAP_STUB 22, 0
    TRAP_STUB 23, 0
    TRAP_STUB 24, 0
    TRAP_STUB 25, 0
    TRAP_STUB 26, 0
    TRAP_STUB 27, 0
    TRAP_STUB 28, 0
    TRAP_STUB 29, 1
    TRAP_STUB 30, 1
    TRAP_STUB 31, 0
    .irp n, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63
    TRAP_STUB \n, 0
    .endr

    /* Traps from user mode (CS.RPL = 3) were pushed by the CPU into the
       thread's saved-register frame (TSS.RSP0 points at its top); they
       complete the frame and resume the kernel after `x86_64_run_user`.
       An interrupt (vector 32 or above) that woke the idle's `hlt` (its
       return address is x86_64_idle_woken, user.rs) resumes the kernel
       after `x86_64_idle` with the vector in rax. Any other trap from the
       kernel itself is unexpected and reported. */
trap_common:
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
    testb $3, 144(%rsp)
    jnz x86_64_resume_kernel
    cmpq $32, 120(%rsp)
    jb 1f
    lea x86_64_idle_woken(%rip), %rax
    cmp %rax, 136(%rsp)
    jne 1f
    mov 120(%rsp), %rax
    jmp x86_64_resume_kernel
1:  mov %rsp, %rdi
    and $-16, %rsp
    call x86_64_trap
    ud2

    .section .rodata.trap_vectors, "a"
    .balign 8
    .global trap_vectors
trap_vectors:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63
    .quad trap_stub_\n
    .endr
    "#,
    options(att_syntax)
);
