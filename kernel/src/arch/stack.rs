//! The kernel stack's paint, high-water mark and overflow check (test
//! kernels).
//!
//! The kernel has one stack (`boot_stack_bottom` .. `boot_stack_top` in each architecture's `boot.rs`,
//! in `.bss`): boot runs on it, and so does every system call, trap and
//! interrupt afterwards (`user.rs`: no per-thread kernel stacks). Nothing
//! below it faults, so an overflow would silently overwrite the `.bss`
//! beneath it. A test kernel paints the stack below the boot path's frame
//! at boot ([`paint`]) and, when the session ends, finds the lowest word
//! that is no longer paint ([`check`]): the high-water mark, printed on
//! every run, and an overflow if the bottom [`GUARD`] bytes were reached.

/// What every unused word of the stack holds after [`paint`].
const PAINT: u64 = 0x57AC_CA11_57AC_CA11;
/// The bottom of the stack that must stay paint: a frame that reached it
/// may have gone further, past the stack.
pub const GUARD: usize = 4096;
/// Bytes below the painting function's stack pointer left unpainted (its
/// own frame and what it calls).
const SLACK: usize = 1024;

unsafe extern "C" {
    /// The lowest byte of the kernel stack (`boot.rs`).
    static boot_stack_bottom: u8;
    /// One past the highest byte of the kernel stack (`boot.rs`).
    static boot_stack_top: u8;
}

/// The stack as addresses: `(bottom, top)`.
fn bounds() -> (usize, usize) {
    (
        (&raw const boot_stack_bottom) as usize,
        (&raw const boot_stack_top) as usize,
    )
}

/// The current stack pointer.
#[inline(always)]
fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads the stack pointer; no memory is touched.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}

/// Paints the stack from its bottom up to [`SLACK`] bytes below the
/// current stack pointer. Called once, early in boot, on the kernel stack.
#[inline(never)]
pub fn paint() {
    let (bottom, top) = bounds();
    let sp = stack_pointer();
    if !(bottom..=top).contains(&sp) {
        return;
    }
    let end = sp.saturating_sub(SLACK) & !7;
    let mut at = bottom;
    while at < end {
        // SAFETY: `bottom..end` is the kernel stack (a `.bss` area the boot
        // code reserves, mapped writable) below the live frames, which
        // nothing uses yet (interrupts are off at boot); the words are
        // 8-aligned (`.balign 16`).
        unsafe { core::ptr::write_volatile(at as *mut u64, PAINT) };
        at += 8;
    }
}

/// The stack's high-water mark: bytes from its top to the lowest word that
/// is no longer paint, and the stack's size. An `Err` if that word lies in
/// the bottom [`GUARD`] bytes: the stack (probably) overflowed.
pub fn check() -> Result<(usize, usize), (usize, usize)> {
    let (bottom, top) = bounds();
    let mut at = bottom;
    // SAFETY: reads words of the kernel stack below the current frame (the
    // scan stops at the first word that is not paint, at the latest at
    // the live frames).
    while at < top && unsafe { core::ptr::read_volatile(at as *const u64) } == PAINT {
        at += 8;
    }
    let used = (top - at, top - bottom);
    if at < bottom + GUARD {
        Err(used)
    } else {
        Ok(used)
    }
}
