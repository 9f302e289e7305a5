//! aarch64 entry: `_start` at EL1 with the MMU off, boot page tables, the jump high.
//!
//! QEMU's virt machine starts the ELF entry at EL1 with the MMU off; the DTB
//! sits at the start of RAM. `_start` runs at its physical address and builds
//! one translation table shared by TTBR0 and TTBR1 (4 KiB granule, 48-bit):
//!
//! ```text
//!  L0[0] -> L1:  [0]   0 .. 1 GiB     device   (UART, GIC, SMMU, PCIe MMIO)
//!                [1-3] 1 .. 4 GiB     normal   (RAM from 0x4000_0000)
//!                [256] 256 .. 257 GiB device   (PCIe ECAM at 0x40_1000_0000)
//! ```
//!
//! Through TTBR1 that table is the direct map `0xFFFF_0000_0000_0000 + pa`,
//! which is also where the kernel image is linked. Through TTBR0 it is the
//! identity map needed while the PC is still physical; `arch::init` turns
//! TTBR0 walks off once the kernel runs high.
//!
//! FP/SIMD: CPACR_EL1.FPEN = 0b01 lets EL1 use the vector registers (the
//! kernel is built hard-float) and traps every FP/SIMD instruction at EL0
//! (ESR EC 0x07), which reaches the thread's fault handler like any other
//! fault. User programs are built soft-float, so no user state lives in
//! those registers and the kernel saves none (kernel/README.md "FP/SIMD
//! state").

core::arch::global_asm!(
    r#"
    .section .boot.bss, "aw", @nobits
    .balign 4096
boot_l0: .skip 4096
boot_l1: .skip 4096

    .section .boot.text, "ax"
    .global _start
_start:
    mrs x1, mpidr_el1
    and x1, x1, #0xff
    cbnz x1, 9f                 /* secondary CPUs park */

    mov x19, x0                 /* keep whatever the loader passed in x0 */
    mov x1, #(1 << 20)          /* CPACR_EL1.FPEN = 0b01: EL0 FP/SIMD traps (EC 0x07), EL1's runs; ZEN = SMEN = 0: SVE/SME trap too */
    msr cpacr_el1, x1
    isb

    adrp x2, boot_l1
    ldr x3, =0x0060000000000401 /* device block: UXN PXN AF, AttrIndx 0 */
    str x3, [x2, #0]
    ldr x3, =0x0040000040000705 /* 1 GiB normal block: UXN AF inner-shareable AttrIndx 1 */
    str x3, [x2, #8]
    ldr x3, =0x0040000080000705
    str x3, [x2, #16]
    ldr x3, =0x00400000C0000705
    str x3, [x2, #24]
    ldr x3, =0x0060004000000401 /* 256 GiB: PCIe ECAM window, device */
    str x3, [x2, #(256 * 8)]
    adrp x4, boot_l0
    orr x3, x2, #3              /* table descriptor */
    str x3, [x4]

    ldr x1, =0x04FF00           /* MAIR: Attr0 device-nGnRnE, Attr1 normal WB, Attr2 device-nGnRE (user MMIO) */
    msr mair_el1, x1
    ldr x1, =0x5B5103510        /* TCR: T0SZ=T1SZ=16, 4K granules, WB, inner shareable, IPS 48-bit */
    msr tcr_el1, x1
    msr ttbr0_el1, x4
    msr ttbr1_el1, x4
    isb
    tlbi vmalle1
    dsb ish
    isb
    ldr x1, =0x30D01805         /* SCTLR: RES1 | I | C | M */
    msr sctlr_el1, x1
    isb

    ldr x1, =boot_high
    br x1
9:  wfe
    b 9b
    .ltorg

    .section .text.boot_high, "ax"
boot_high:
    ldr x1, =boot_stack_top
    mov sp, x1
    ldr x1, =exception_vectors
    msr vbar_el1, x1
    isb
    mov x0, x19
    bl kernel_entry
10: wfe
    b 10b

    .section .bss.boot_stack, "aw", @nobits
    .balign 16
    .global boot_stack_bottom
boot_stack_bottom:
    /* The kernel's one stack (boot, then every system call and trap):
       kernel/README.md, "The kernel stack", for its size. */
    .skip 128 * 1024
    .global boot_stack_top
boot_stack_top:
    "#
);
