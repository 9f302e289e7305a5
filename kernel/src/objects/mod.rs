//! Kernel objects: the capability model (`caps`) over the kernel's storage,
//! and capability lookup.
//!
//! All capability logic is the `caps` crate's, the very code the host
//! model-checks; this module only stores its state, looks capabilities up,
//! and applies the effects the model's operations return (`effects`). What
//! an invocation does is `crate::invocation`'s: it decodes a message
//! against these capabilities, then performs it on them.
//!
//! # Storage
//! Slots and object records live in one static [`caps::ArrayStorage`]:
//!
//! ```text
//! slots 0 .. ROOT_SLOTS          kernel-held: the root task's CNode cap
//! slots ROOT_SLOTS .. +ARENA     the CNode arena: CNode memory retyped from
//!                                the arena Untyped maps 1:1 onto these slots
//!                                (32 bytes of memory per slot)
//! ```
//!
//! CNodes can therefore only be retyped from the arena Untyped (the root
//! task's first Untyped); anywhere else `Retype` answers `NoSlotMemory`.
//!
//! # Files
//! `initial.rs` builds the capability system and the root task's initial
//! CSpace at boot; `effects.rs` applies the model's effects (CPU leaves,
//! cleared memory, IOMMU effects through the unit); `page_tables.rs` keeps
//! the records of the CPU page tables linked into address spaces;
//! `reconcile.rs` drops the kernel state of objects a delete or revoke
//! killed.

mod effects;
mod initial;
mod page_tables;
mod reconcile;

pub use effects::{SINK, apply_elsewhere};
pub use initial::init;
#[cfg(feature = "fuzz-checks")]
pub use page_tables::address_space_roots;
pub use page_tables::{
    Root, check_table_install, forget_table, installed_table, record_table, register_root, root_of,
};
pub use reconcile::reconcile;

use abi::Error;
use caps::{ArrayStorage, Caps, ObjectKind, Rights, SlotId};
use core::sync::atomic::{AtomicU64, Ordering};

/// Kernel-held slots before the arena.
pub const ROOT_SLOTS: u32 = 64;
/// log2 of the arena's size in bytes: 256 KiB, 8,192 slots. The root
/// task's CNode takes the first 1,024; the rest holds, for instance, a
/// CNode of 4,096 slots beside smaller ones, enough Frame capability copies
/// for 4,096 IO mappings in one IoSpace (`iobench`'s
/// `io-map-with-4096-mapped`). Each slot costs the kernel 32 bytes of the
/// arena and 160 bytes of [`Storage`] (the slot and its IPA-index
/// entries), and the one scan of every slot (`page_tables::reconcile`
/// after a PageTable dies, 6-7 instructions a slot) grows with the count.
const ARENA_BITS: u8 = 18;
/// Slots backed by the arena.
const ARENA_SLOTS: usize = (1 << ARENA_BITS) >> caps::SLOT_SIZE_BITS;
/// Every slot of [`Storage`]: the kernel-held ones, then the arena's.
pub const SLOTS: usize = ROOT_SLOTS as usize + ARENA_SLOTS;
/// Object records.
pub const OBJECTS: usize = crate::mem::OBJECTS;
/// The root task's CNode: `2^ROOT_CNODE_BITS` slots.
const ROOT_CNODE_BITS: u8 = 10;
/// The kernel-held slot of the root task's CNode capability.
pub const ROOT_CNODE_SLOT: SlotId = SlotId(1);
/// The kernel-held slot of the arena Untyped before it is moved to the root task.
const ARENA_SLOT: SlotId = SlotId(0);

pub(crate) type Storage = ArrayStorage<SLOTS, OBJECTS>;

/// The capability system as the kernel holds it.
pub type CapSystem = Caps<Storage>;

/// The capability system. Lock it through [`caps_to_change`] for anything
/// that may change a capability (that invalidates every thread's lookup
/// cache); only lookups and the read-only capability dump lock it directly.
pub static CAPS: crate::mem::ZeroedOnce<spin::Mutex<CapSystem>> = crate::mem::ZeroedOnce::new();

/// Resolves a capability pointer for a message-passing system call: the
/// object it names must be of `kind` (else `WrongKind`) and the capability
/// must hold `rights`.
pub fn lookup(
    cspace: SlotId,
    cap: u64,
    kind: ObjectKind,
    rights: Rights,
) -> Result<crate::sched::Target, Error> {
    let caps = CAPS.get().ok_or(Error::NotSupported)?.lock();
    lookup_in(&caps, cspace, cap, kind, rights)
}

/// [`lookup`] for the calling thread's message-passing system calls,
/// answered from the thread's [`crate::sched::LookupCache`] while no
/// capability has changed since it was filled: the capability system's
/// generation is bumped whenever the capability lock is taken for anything
/// but a lookup ([`caps_to_change`]), so a cached answer is exactly what a
/// fresh lookup would give. (The cache is used in place: copying it would
/// cost more than the lookup saves.)
///
/// The hit is inlined into the system-call path and the refill kept out
/// of line ([`refill_lookup_cache`]): when the refill was inlined here,
/// this function grew past the inliner's budget and every IPC paid a call
/// (x86_64 round trip 725 -> 800 instructions after an unrelated change to
/// `resolve_into`'s callers).
#[inline(always)]
pub fn lookup_cached(
    threads: &mut crate::sched::Threads,
    thread: u64,
    cspace: SlotId,
    cap: u64,
    kind: ObjectKind,
    rights: Rights,
) -> Result<crate::sched::Target, Error> {
    let generation = GENERATION.load(Ordering::Relaxed);
    let cache = &mut threads.tcb(thread).lookup_cache;
    if cache.generation != generation || cache.cptr != cap || cache.cspace != u64::from(cspace.0) {
        refill_lookup_cache(cache, generation, cspace, cap)?;
    }
    check_lookup(cache, kind, rights)
}

/// [`lookup_cached`] for `IoUserTable.Invalidate`'s fast path: the IoSpace
/// and root IPA of the IoUserTable `cap` names, when the capability is of
/// that kind, holds `Rights::WRITE` and the table's IoSpace lives; `None`
/// otherwise (the caller then takes the general path, which gives the
/// error). Answered from the cache without the capability lock: an
/// IoUserTable's state is fixed when it is made and changes only when its
/// IoSpace is destroyed, which changes a capability and so makes the
/// cache stale (the `iocaps` test `invalidate_after_the_space_died`
/// fails when a stale state is used).
#[inline(always)]
pub fn cached_user_table(
    threads: &mut crate::sched::Threads,
    thread: u64,
    cspace: SlotId,
    cap: u64,
) -> Option<(caps::ObjectId, u64)> {
    let generation = GENERATION.load(Ordering::Relaxed);
    let cache = &mut threads.tcb(thread).lookup_cache;
    if cache.generation != generation || cache.cptr != cap || cache.cspace != u64::from(cspace.0) {
        refill_lookup_cache(cache, generation, cspace, cap).ok()?;
    }
    let [space, root_ipa] = cache.table;
    (cache.kind == ObjectKind::IoUserTable as u64
        && Rights::from_bits_truncate(cache.rights as u8).contains(Rights::WRITE)
        && space != 0)
        .then_some((caps::ObjectId((space - 1) as u32), root_ipa))
}

/// The slot `cap` names in `cspace`, from `thread`'s lookup cache, when
/// the cache answers for that pointer, no capability has changed since it
/// was filled and the capability is of `kind`; `None` otherwise (the
/// caller then takes the general path). For an invocation's fast path:
/// `caps` is the held capability lock, so the answer stays true while it
/// is held (a change bumps the generation before it changes anything,
/// [`caps_to_change`], `crate::invocation::invoke`).
#[inline(always)]
pub fn cached_slot(
    _caps: &Caps<Storage>,
    threads: &mut crate::sched::Threads,
    thread: u64,
    cspace: SlotId,
    cap: u64,
    kind: ObjectKind,
) -> Option<SlotId> {
    let cache = &threads.tcb(thread).lookup_cache;
    (cache.generation == GENERATION.load(Ordering::Relaxed)
        && cache.cptr == cap
        && cache.cspace == u64::from(cspace.0)
        && cache.kind == kind as u64)
        .then_some(SlotId(cache.slot as u32))
}

/// [`lookup_cached`]'s miss: resolves `cap` afresh into `cache`, current
/// at `generation` once filled.
#[cold]
#[inline(never)]
fn refill_lookup_cache(
    cache: &mut crate::sched::LookupCache,
    generation: u64,
    cspace: SlotId,
    cap: u64,
) -> Result<(), Error> {
    cache.generation = 0;
    resolve_into(cspace, cap, cache)?;
    cache.generation = generation;
    Ok(())
}

/// [`lookup`] under a capability lock the caller already holds, so that
/// an invocation resolves all its capabilities in one critical section.
#[inline]
pub fn lookup_in(
    caps: &Caps<Storage>,
    cspace: SlotId,
    cap: u64,
    kind: ObjectKind,
    rights: Rights,
) -> Result<crate::sched::Target, Error> {
    let mut found = crate::sched::LookupCache::EMPTY;
    resolve_locked(caps, cspace, cap, &mut found)?;
    check_lookup(&found, kind, rights)
}

/// Fills `found` with what `cap` in `cspace` names (its generation is the
/// caller's to set).
fn resolve_into(
    cspace: SlotId,
    cap: u64,
    found: &mut crate::sched::LookupCache,
) -> Result<(), Error> {
    let caps = CAPS.get().ok_or(Error::NotSupported)?.lock();
    resolve_locked(&caps, cspace, cap, found)
}

/// [`resolve_into`] under a held capability lock.
fn resolve_locked(
    caps: &Caps<Storage>,
    cspace: SlotId,
    cap: u64,
    found: &mut crate::sched::LookupCache,
) -> Result<(), Error> {
    let index = slot_index(cap).map_err(|_| Error::LookupFailed)?;
    let slot = caps
        .resolve(cspace, index)
        .map_err(|_| Error::LookupFailed)?;
    let held = caps.lookup(slot)?;
    let object = caps.object(held.object());
    let memory = object.and_then(|o| o.memory());
    found.cptr = cap;
    found.cspace = u64::from(cspace.0);
    found.kind = held.kind() as u64;
    found.rights = u64::from(held.rights().bits());
    found.paddr = memory.map_or(u64::MAX, |(paddr, _)| paddr);
    found.object = u64::from(held.object().0);
    found.badge = held.badge().0;
    found.registered = 0;
    found.slot = u64::from(slot.0);
    // Written for that kind only, and read only for it
    // (`cached_user_table` tests the kind first): other refills pay one
    // test.
    if held.kind() == ObjectKind::IoUserTable {
        found.table = match object.map(|o| o.state()) {
            Some(&caps::ObjectState::IoUserTable {
                space: Some(space),
                root_ipa,
            }) => [u64::from(space.0) + 1, root_ipa],
            _ => [0; 2],
        };
    }
    Ok(())
}

/// The checks of [`lookup`], in its order: kind, rights, a live object.
#[inline(always)]
fn check_lookup(
    found: &crate::sched::LookupCache,
    kind: ObjectKind,
    rights: Rights,
) -> Result<crate::sched::Target, Error> {
    if found.kind != kind as u64 {
        return Err(Error::WrongKind);
    }
    let held = Rights::from_bits_truncate(found.rights as u8);
    if !held.contains(rights) {
        return Err(Error::InsufficientRights);
    }
    if found.paddr == u64::MAX {
        return Err(Error::DeadObject);
    }
    Ok(crate::sched::Target {
        object: caps::ObjectId(found.object as u32),
        paddr: found.paddr,
        badge: found.badge,
        grant: held.contains(Rights::GRANT),
    })
}

/// The capability system's generation: bumped each time the capability
/// lock is taken to change something ([`caps_to_change`]), never by a
/// lookup. Starts at 1, so an all-zero [`crate::sched::LookupCache`] is
/// never current.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// The capability system, locked to change it: every cached lookup is
/// invalidated first. Every path but [`lookup`]'s and
/// [`caps_to_invoke`]'s takes the lock this way.
#[inline]
pub fn caps_to_change() -> Option<spin::MutexGuard<'static, Caps<Storage>>> {
    let caps = CAPS.get()?;
    invalidate_lookups();
    Some(caps.lock())
}

/// The capability system, locked for an invocation that has not yet said
/// what it changes: it calls [`invalidate_lookups`] before it changes
/// anything a cached lookup holds (`crate::invocation::invoke`).
#[inline]
pub fn caps_to_invoke() -> Option<spin::MutexGuard<'static, Caps<Storage>>> {
    Some(CAPS.get()?.lock())
}

/// Makes every cached lookup stale (bumps the generation).
#[inline]
pub fn invalidate_lookups() {
    if !crate::testing::seeds::planted(crate::testing::seeds::Seed::StaleLookupCache) {
        GENERATION.fetch_add(1, Ordering::Relaxed);
    }
}

/// A slot index from a capability pointer or message register. Errors:
/// `InvalidSlot`.
#[inline]
pub fn slot_index(value: u64) -> Result<u32, Error> {
    u32::try_from(value).map_err(|_| Error::InvalidSlot)
}

/// The memory (physical address, log2 size) of the object the capability
/// in `slot` names. Errors: `EmptySlot`, `DeadObject`.
#[inline(always)]
pub fn memory_of(caps: &Caps<Storage>, slot: SlotId) -> Result<(u64, u8), Error> {
    let cap = *caps.lookup(slot)?;
    caps.object(cap.object())
        .and_then(|o| o.memory())
        .ok_or(Error::DeadObject)
}

/// The CSpace root slot and IPC buffer of the thread `t`: `None` unless it
/// has both (there is no default: a thread has only the authority it was
/// configured with, and one without both never runs, `sched`).
pub fn thread_context(t: &crate::sched::Tcb) -> Option<(SlotId, u64)> {
    (t.cspace_slot != 0 && t.ipc_buffer != 0).then_some((SlotId(t.cspace_slot), t.ipc_buffer))
}

/// Moves the capability a sender names in its IPC buffer (`caps[0]`, in its
/// CSpace) into the receiver's receive slot (in its CSpace) as a copy: a
/// child of the sender's, so the sender can revoke it. Returns whether one
/// moved (the slot must resolve and be empty).
pub fn transfer_capability(sender: &crate::sched::Tcb, receiver: &crate::sched::Tcb) -> bool {
    let Some(mut caps) = caps_to_change() else {
        return false;
    };
    let (Some((sender_cspace, sender_buffer)), Some((receiver_cspace, receiver_buffer))) =
        (thread_context(sender), thread_context(receiver))
    else {
        return false;
    };
    // IPC buffers are kernel-known 4 KiB frames; the offsets are inside the
    // first 536 bytes.
    let read_u32 = |buffer: u64, offset: usize| crate::mem::read_u32(buffer + offset as u64);
    let source_index = read_u32(sender_buffer, abi::ipc::CAPS_OFFSET);
    let dest_index = read_u32(receiver_buffer, abi::ipc::RECEIVE_SLOT_OFFSET);
    let (Ok(source), Ok(dest)) = (
        caps.resolve(sender_cspace, source_index),
        caps.resolve(receiver_cspace, dest_index),
    ) else {
        return false;
    };
    caps.copy(source, dest).is_ok()
}
