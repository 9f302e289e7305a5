//! x86_64 entry: the PVH note, the 32-bit trampoline and the switch to long mode.
//!
//! QEMU's `-kernel` finds the PVH note (XEN_ELFNOTE_PHYS32_ENTRY) and enters
//! `pvh_start` in 32-bit protected mode with paging off and `ebx` pointing at
//! the `hvm_start_info` structure. The trampoline builds the boot page tables:
//!
//! ```text
//!  PML4[0]   -> PDPT_ID  : identity map of 0..4 GiB (2 MiB pages)  boot only
//!  PML4[256] -> PDPT_ID  : direct map, 0xFFFF_8000_0000_0000 + pa
//!  PML4[511] -> PDPT_HI  : [510] -> first GiB, 0xFFFF_FFFF_8000_0000 + pa (kernel image)
//! ```
//!
//! then enables PAE, long mode and paging, and jumps to `kernel_entry` in the
//! upper half with `rdi` = the physical address of the start info. The
//! identity map is removed by `arch::init` once the kernel runs high.
//!
//! FP/SIMD: CR4 is set to PAE alone (no OSFXSR, OSXSAVE) and CR0.EM is set,
//! so every x87, MMX, SSE and AVX instruction faults (#NM or #UD) at any
//! privilege level: no register state outside the general-purpose ones
//! exists to leak between threads, and the kernel saves none
//! (kernel/README.md "FP/SIMD state"). The kernel itself is soft-float.

core::arch::global_asm!(
    r#"
    .section .note.pvh, "a", @note
    .balign 4
    .long 4             /* name size */
    .long 4             /* descriptor size */
    .long 18            /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start
    .balign 4

    .section .boot.bss, "aw", @nobits
    .balign 4096
boot_pml4:      .skip 4096
boot_pdpt:      .skip 4096
boot_pdpt_high: .skip 4096
boot_pd:        .skip 4 * 4096

    .section .boot.data, "aw"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF    /* 0x08: 64-bit kernel code */
    .quad 0x00CF92000000FFFF    /* 0x10: kernel data */
boot_gdt_end:
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .boot.text, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    mov %ebx, %esi

    /* 2048 2 MiB pages: the first 4 GiB. */
    mov $boot_pd, %edi
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax              /* present | writable | 2 MiB page */
    mov %eax, (%edi,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jb 1b

    mov $boot_pdpt, %edi
    mov $(boot_pd + 3), %eax
    mov %eax, 0(%edi)
    add $4096, %eax
    mov %eax, 8(%edi)
    add $4096, %eax
    mov %eax, 16(%edi)
    add $4096, %eax
    mov %eax, 24(%edi)

    mov $boot_pdpt_high, %edi
    movl $(boot_pd + 3), (510 * 8)(%edi)

    mov $boot_pml4, %edi
    movl $(boot_pdpt + 3), 0(%edi)
    movl $(boot_pdpt + 3), (256 * 8)(%edi)
    movl $(boot_pdpt_high + 3), (511 * 8)(%edi)
    mov %edi, %cr3

    mov $0x20, %eax             /* PAE; OSFXSR, OSXMMEXCPT, OSXSAVE clear: SSE/AVX raise #UD */
    mov %eax, %cr4
    mov $0xC0000080, %ecx       /* EFER */
    rdmsr
    or $0x900, %eax             /* LME | NXE */
    wrmsr
    mov %cr0, %eax
    and $~0x2, %eax             /* MP clear */
    or $0x80010005, %eax        /* PG | WP | EM | PE: EM makes x87 raise #NM, MMX and SSE #UD */
    mov %eax, %cr0

    lgdt boot_gdt_pointer
    ljmp $0x08, $boot_long_mode

    .code64
boot_long_mode:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    movabs $boot_stack_top, %rsp
    mov %esi, %edi
    movabs $kernel_entry, %rax
    call *%rax
2:  hlt
    jmp 2b

    .section .bss.boot_stack, "aw", @nobits
    .balign 16
    .global boot_stack_bottom
boot_stack_bottom:
    /* The kernel's one stack (boot, then every system call and trap):
       kernel/README.md, "The kernel stack", for its size. */
    .skip 128 * 1024
    .global boot_stack_top
boot_stack_top:
    "#,
    options(att_syntax)
);
