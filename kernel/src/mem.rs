//! Physical memory through the direct map: the one module that turns a
//! physical address into a memory access or a reference.
//!
//! Every other module but `arch` and the MMIO wrapper (`mmio`) is built
//! with `deny(unsafe_code)` (`main.rs`); what they read and write of
//! physical memory (kernel objects, page tables, IPC buffers, frames being
//! filled, firmware tables) goes through the functions here, whose `unsafe`
//! rests on the obligations below, written once.
//!
//! # Obligations
//!
//! The functions are safe to call because the kernel keeps these
//! invariants; the compiler does not check them, so a change that could
//! break one must be argued here:
//!
//! 1. **Owned memory only.** Every address handed to this module names
//!    memory the kernel treats as data outside any Rust allocation: RAM the
//!    capability model handed out as an object (retyped from an Untyped,
//!    which boot made from free RAM only: never the kernel image, its
//!    statics or its stack, see [`kernel_image_end`]), a boot frame
//!    (`frames`), a page-table or IOMMU table page, an IPC buffer frame,
//!    or a firmware table. Each function checks that the range lies in
//!    the direct map where the check is not on a hot path
//!    (`debug_assert!` otherwise).
//! 2. **Words are accessed, not borrowed.** [`read_u64`], [`write_u64`],
//!    [`read_u32`], `read_u8`, [`Word`], [`zero`], [`fill`], [`copy`],
//!    [`copy_in`] and [`write`] are (volatile) accesses through raw
//!    pointers: they create no reference, so they cannot alias one. Memory
//!    a device or a user thread may write at the same time (IPC buffers,
//!    DMA pages, IOMMU tables) is therefore read and written only with
//!    them.
//! 3. **A kernel object is borrowed only while it is live and only once.**
//!    [`Objects::get`] borrows the state of a live object of the kind that
//!    stores a `T` (a TCB's `sched::Tcb`, an endpoint's queue, a
//!    notification's word): callers pass only an address they took from a
//!    capability of that kind or from kernel state stored from one, which
//!    `objects::reconcile` clears before the model can hand the memory out
//!    again (the model hands out memory once while it is live: invariant
//!    4, model-checked), and the memory of objects of different kinds never
//!    overlaps. "Only once" is a type rule, not a convention: the borrow is
//!    tied to `&mut` of the kind's one owner ([`Objects`], claimed once per
//!    kind at boot, [`Objects::claim`]), so a second borrow of any object
//!    of that kind while the first is live does not compile. What stays
//!    written, not checked: the address is live and of that kind (above),
//!    and [`Object::claimed`] names one flag per kind. `T: FromBytes`
//!    makes every bit pattern a valid `T`, so a fresh object (all zeroes,
//!    what `ClearMemory` leaves) or stale bytes are never an invalid value.
//!    A page-table page the caller owns is lent the same way for the length
//!    of one closure ([`with_table`]).
//! 4. **Firmware tables are read-only.** [`phys_bytes`] lends memory nothing
//!    writes after boot (ACPI, device tree, the boot module, PVH start
//!    info).
//!
//! Besides physical memory, one kernel static lives here: [`ZeroedOnce`],
//! a value too large to build anywhere but in place (the capability
//! storage), which starts as zero bytes in `.bss`.

use crate::arch;
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, Ordering};
use zerocopy::FromBytes;

/// Returns the kernel virtual address of physical address `pa`. Address
/// arithmetic only: for the MMIO wrappers, which access device registers
/// through it.
#[inline(always)]
pub fn phys_to_virt(pa: u64) -> u64 {
    arch::PHYS_MAP_BASE + pa
}

/// Borrows `len` bytes of physical memory at `pa` for reading, or `None` if
/// the range is outside the direct map.
///
/// Used for firmware tables (ACPI, device tree, PVH start info) that nothing
/// writes after boot (obligation 4).
pub fn phys_bytes(pa: u64, len: usize) -> Option<&'static [u8]> {
    if !arch::phys_map_covers(pa, len as u64) {
        return None;
    }
    // SAFETY: the range is inside the direct map (checked above), which maps
    // it for the kernel's whole life; firmware tables are not written after
    // boot, so no mutable alias exists (obligation 4).
    Some(unsafe { core::slice::from_raw_parts(phys_to_virt(pa) as *const u8, len) })
}

/// A kind of kernel object whose state `mem` lends ([`Objects`]): a `T`
/// at the start of each object's memory, any bit pattern valid.
pub trait Object: FromBytes {
    /// The kind's one claim flag, set when its owner is claimed
    /// ([`Objects::claim`]); a `static` of the implementing module.
    fn claimed() -> &'static AtomicBool;
}

/// How many kernel objects (object ids) there can be: the capability
/// storage's object records (`objects::Storage`) and the scheduler's
/// registry hints are sized by it. Here, beneath both, so the scheduler
/// need not name `objects` (kernel/README.md "Layers").
pub const OBJECTS: usize = 1024;

/// The one owner of every live kernel object of kind `T` (obligation 3):
/// each borrow of an object's state goes through `&mut` of it, so the
/// compiler refuses a second borrow while one is live. Zero-sized: passing
/// it costs nothing once inlined, and LTO drops it as an argument where it
/// is not.
///
/// ```text
/// let a = tcbs.get(pa);
/// let b = tcbs.get(pa); // error[E0499]: cannot borrow `*tcbs` as mutable
/// a.next = b.next;      // more than once at a time
/// ```
pub struct Objects<T: Object> {
    /// Not `Send`: the owner stays on the CPU that claimed it.
    _owner: PhantomData<*mut T>,
}

impl<T: Object> Objects<T> {
    /// The owner of every `T`, once: `None` if it was claimed before (a
    /// second owner would allow a second borrow).
    pub fn claim() -> Option<Objects<T>> {
        (!T::claimed().swap(true, Ordering::Relaxed)).then_some(Objects {
            _owner: PhantomData,
        })
    }

    /// The state of the live `T` object at `pa`, borrowed while `self` is
    /// (obligation 3).
    #[inline(always)]
    pub fn get(&mut self, pa: u64) -> &mut T {
        debug_assert!(pa.is_multiple_of(align_of::<T>() as u64));
        debug_assert!(arch::phys_map_covers(pa, size_of::<T>() as u64));
        // SAFETY: obligation 3: `pa` is a live object's memory (owned RAM
        // in the direct map, obligation 1, aligned: objects are at least
        // 16-byte aligned) of the kind that stores a `T`; the only other
        // way to it is another borrow through this kind's one owner, which
        // `&mut self` excludes for the returned lifetime; any bytes are a
        // valid `T` (`FromBytes`).
        unsafe { &mut *(phys_to_virt(pa) as *mut T) }
    }

    /// The states of the two live `T` objects at `a` and `b`, both borrowed
    /// while `self` is; `None` when `a == b` (one object is never borrowed
    /// twice). For the one place that needs two at once: a capability
    /// moving from a sender's CSpace to a receiver's.
    #[inline(always)]
    pub fn pair(&mut self, a: u64, b: u64) -> Option<(&mut T, &mut T)> {
        if a == b {
            return None;
        }
        debug_assert!(a.abs_diff(b) >= size_of::<T>() as u64);
        debug_assert!(a.is_multiple_of(align_of::<T>() as u64));
        debug_assert!(b.is_multiple_of(align_of::<T>() as u64));
        debug_assert!(arch::phys_map_covers(a, size_of::<T>() as u64));
        debug_assert!(arch::phys_map_covers(b, size_of::<T>() as u64));
        // SAFETY: as in `get`, for each; two different live objects' memory
        // never overlaps (the model hands memory out once while it is
        // live, obligation 3), so the two borrows are disjoint.
        unsafe {
            Some((
                &mut *(phys_to_virt(a) as *mut T),
                &mut *(phys_to_virt(b) as *mut T),
            ))
        }
    }
}

/// Calls `f` with the 4 KiB page-table page at `pa`, a page the caller owns
/// and nothing else borrows (a fresh root being filled): the borrow cannot
/// outlive the call (obligations 1 and 3).
#[inline]
pub fn with_table<R>(pa: u64, f: impl FnOnce(&mut [u64; 512]) -> R) -> R {
    debug_assert!(pa.is_multiple_of(4096) && arch::phys_map_covers(pa, 4096));
    // SAFETY: owned memory in the direct map (obligation 1), aligned; the
    // caller's page, borrowed by nothing else, and only for `f`'s call.
    f(unsafe { &mut *(phys_to_virt(pa) as *mut [u64; 512]) })
}

/// The integers [`Word`] reads and writes.
pub trait Int: Copy + private::Sealed {}
impl Int for u32 {}
impl Int for u64 {}
mod private {
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

/// A `T` (`u32` or `u64`) in owned physical memory (obligations 1 and 2),
/// located once: a page-table walk finds an entry, then reads and writes
/// it; the IPC buffer's words are reached from the buffer's start. Its
/// direct-map address is a pointer, so the words of one page are reached
/// from one converted address (an offset in the load or store on aarch64,
/// not a new 64-bit constant each time).
#[derive(Clone, Copy)]
pub struct Word<T: Int> {
    at: *mut T,
}

impl<T: Int> Word<T> {
    /// The `T` at `pa` (aligned for it).
    #[inline(always)]
    pub fn at(pa: u64) -> Word<T> {
        debug_assert!(pa.is_multiple_of(size_of::<T>() as u64));
        debug_assert!(arch::phys_map_covers(pa, size_of::<T>() as u64));
        Word {
            at: phys_to_virt(pa) as *mut T,
        }
    }

    /// The `T` `index` places after this one, in the same owned page (a
    /// table entry: `index` < 512 from the table's first word).
    #[inline(always)]
    pub fn add(self, index: usize) -> Word<T> {
        Word {
            at: self.at.wrapping_add(index),
        }
    }

    /// Its physical address.
    #[inline(always)]
    pub fn phys(self) -> u64 {
        self.at as u64 - arch::PHYS_MAP_BASE
    }

    /// Reads it (volatile).
    #[inline(always)]
    pub fn read(self) -> T {
        // SAFETY: owned memory in the direct map (obligation 1: where it
        // was located, and the callers' offsets stay in that page), aligned;
        // a volatile read creates no reference (obligation 2).
        unsafe { self.at.read_volatile() }
    }

    /// Writes it (volatile).
    #[inline(always)]
    pub fn write(self, value: T) {
        // SAFETY: as in `read`.
        unsafe { self.at.write_volatile(value) }
    }
}

/// Reads the 64-bit word at `pa` (8-byte aligned; obligations 1 and 2).
#[inline(always)]
pub fn read_u64(pa: u64) -> u64 {
    debug_assert!(pa.is_multiple_of(8) && arch::phys_map_covers(pa, 8));
    // SAFETY: owned memory in the direct map (obligation 1), aligned; a
    // volatile read creates no reference (obligation 2).
    unsafe { (phys_to_virt(pa) as *const u64).read_volatile() }
}

/// Writes the 64-bit word at `pa` (8-byte aligned; obligations 1 and 2).
#[inline(always)]
pub fn write_u64(pa: u64, value: u64) {
    debug_assert!(pa.is_multiple_of(8) && arch::phys_map_covers(pa, 8));
    // SAFETY: as in `read_u64`.
    unsafe { (phys_to_virt(pa) as *mut u64).write_volatile(value) }
}

/// Reads the 32-bit word at `pa` (4-byte aligned; obligations 1 and 2).
#[inline(always)]
pub fn read_u32(pa: u64) -> u32 {
    debug_assert!(pa.is_multiple_of(4) && arch::phys_map_covers(pa, 4));
    // SAFETY: as in `read_u64`.
    unsafe { (phys_to_virt(pa) as *const u32).read_volatile() }
}

/// Reads the byte at `pa` (obligations 1 and 2).
#[cfg(feature = "self-tests")]
pub fn read_u8(pa: u64) -> u8 {
    debug_assert!(arch::phys_map_covers(pa, 1));
    // SAFETY: as in `read_u64`.
    unsafe { (phys_to_virt(pa) as *const u8).read_volatile() }
}

/// Sets the `len` bytes at `pa` to `value` (obligations 1 and 2).
#[inline]
pub fn fill(pa: u64, value: u8, len: u64) {
    debug_assert!(arch::phys_map_covers(pa, len));
    // SAFETY: owned memory in the direct map (obligation 1); no reference
    // is created (obligation 2).
    unsafe { core::ptr::write_bytes(phys_to_virt(pa) as *mut u8, value, len as usize) }
}

/// Zeroes the `len` bytes at `pa` (obligations 1 and 2).
#[inline]
pub fn zero(pa: u64, len: u64) {
    fill(pa, 0, len);
}

/// Copies `len` bytes from `from` to `to`, two ranges that do not overlap
/// (obligations 1 and 2).
pub fn copy(from: u64, to: u64, len: u64) {
    assert!(from.abs_diff(to) >= len, "overlapping physical copy");
    debug_assert!(arch::phys_map_covers(from, len) && arch::phys_map_covers(to, len));
    // SAFETY: owned memory in the direct map (obligation 1), the ranges do
    // not overlap (checked above); no reference is created (obligation 2).
    unsafe {
        core::ptr::copy_nonoverlapping(
            phys_to_virt(from) as *const u8,
            phys_to_virt(to) as *mut u8,
            len as usize,
        )
    }
}

/// Copies `source` (kernel memory: the boot module, a program image) to
/// physical memory at `to` (obligations 1 and 2).
pub fn copy_in(to: u64, source: &[u8]) {
    debug_assert!(arch::phys_map_covers(to, source.len() as u64));
    // SAFETY: owned memory in the direct map (obligation 1), which no Rust
    // allocation overlaps, so it cannot overlap `source` (a borrowed kernel
    // slice or a firmware table: the boot module is never handed out as an
    // object); no reference is created (obligation 2).
    unsafe {
        core::ptr::copy_nonoverlapping(source.as_ptr(), phys_to_virt(to) as *mut u8, source.len())
    }
}

/// Writes `value` at `pa`, which may be unaligned for `T` (obligations 1
/// and 2).
pub fn write<T>(pa: u64, value: T) {
    debug_assert!(arch::phys_map_covers(pa, size_of::<T>() as u64));
    // SAFETY: owned memory in the direct map (obligation 1); an unaligned
    // write creates no reference (obligation 2).
    unsafe { (phys_to_virt(pa) as *mut T).write_unaligned(value) }
}

unsafe extern "C" {
    /// The first byte after the kernel image (linker script).
    static __kernel_end: u8;
}

/// The physical address of the first byte after the kernel image: RAM
/// below it is never handed out (obligation 1).
pub fn kernel_image_end() -> u64 {
    arch::kernel_virt_to_phys(&raw const __kernel_end as u64)
}

/// A static `T` that starts as zero bytes (`.bss`: nothing in the image,
/// nothing copied) and is made ready in place, once, by [`ZeroedOnce::init`];
/// then shared. For values too large to build on the stack and move (the
/// capability storage is megabytes; `spin::Once::call_once` moved it
/// through the stack four times). All-zero must be a valid `T`: the
/// constant [`ZeroedOnce::ZERO`] is evaluated for each `T` this is built
/// for, and const evaluation rejects an invalid value (an enum without a
/// zero discriminant, a reference), so the build fails instead.
pub struct ZeroedOnce<T> {
    /// Set (once) by the one [`ZeroedOnce::init`] call that may write.
    claimed: AtomicBool,
    /// Set (Release) once `init` has finished; readers load it (Acquire).
    ready: AtomicBool,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: `T` is written only by the one `init` call that claims it, before
// `ready` is published; from then on only shared references exist, so
// sharing needs what sharing a `&T` needs.
unsafe impl<T: Sync> Sync for ZeroedOnce<T> {}

impl<T> ZeroedOnce<T> {
    /// All-zero `T`: a compile-time check that zero bytes are a valid `T`
    /// (never used as a value).
    const ZERO: T = {
        // SAFETY: const evaluation checks the value is valid; that is the
        // point (the build fails if it is not).
        unsafe { core::mem::zeroed() }
    };

    /// The static's zero bytes.
    pub const fn new() -> Self {
        // Evaluates the check for this `T`.
        core::mem::forget(Self::ZERO);
        ZeroedOnce {
            claimed: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            value: UnsafeCell::new(MaybeUninit::zeroed()),
        }
    }

    /// The value, once [`ZeroedOnce::init`] has made it ready.
    #[inline]
    pub fn get(&self) -> Option<&T> {
        if self.ready.load(Ordering::Acquire) {
            // SAFETY: `ready` is set only after `init` finished writing;
            // nothing writes the value outside a shared reference again.
            Some(unsafe { (*self.value.get()).assume_init_ref() })
        } else {
            None
        }
    }

    /// Makes the value ready: `fill` gets it as zero bytes, in place, and
    /// must write whatever the value needs. `None` if it was claimed before
    /// (there is one `init`).
    pub fn init(&self, fill: impl FnOnce(&mut T)) -> Option<&T> {
        if self.claimed.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: the `claimed` swap makes this the only writer ever, and
        // no reader gets a reference before `ready`. The bytes are still
        // those of `MaybeUninit::zeroed` (a static's, in `.bss`), a valid
        // `T` (`ZERO` checks it at compile time).
        fill(unsafe { (*self.value.get()).assume_init_mut() });
        self.ready.store(true, Ordering::Release);
        self.get()
    }
}
