//! Kernel objects: the capability model (`caps`) over the kernel's storage,
//! the root task's initial capabilities, and capability invocations.
//!
//! All capability logic is the `caps` crate's, the very code the host
//! model-checks; this module only stores its state, turns registers into
//! operations, and applies the hardware effects the operations return.
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
//! # What is dispatched
//! Every invocation in `abi::Invocation`; the IOMMU ones change hardware
//! through `io_space` (which applies the model's effects).

use crate::frames::BootFrames;
use crate::iommu_unit::UNIT;
use abi::bootinfo::{self, BootInfo, UntypedDescriptor};
use abi::{Error, Invocation, MessageInfo, ObjectType};
use caps::{ArrayStorage, Badge, Caps, Effect, NewObject, ObjectKind, Rights, SlotId};
use core::sync::atomic::{AtomicU64, Ordering};

/// Kernel-held slots before the arena.
const ROOT_SLOTS: u32 = 64;
/// log2 of the arena's size in bytes.
const ARENA_BITS: u8 = 17;
/// Slots backed by the arena.
const ARENA_SLOTS: usize = (1 << ARENA_BITS) >> caps::SLOT_SIZE_BITS;
/// Object records.
pub const OBJECTS: usize = 1024;
/// The root task's CNode: `2^ROOT_CNODE_BITS` slots.
const ROOT_CNODE_BITS: u8 = 10;
/// The kernel-held slot of the root task's CNode capability.
pub const ROOT_CNODE_SLOT: SlotId = SlotId(1);
/// The kernel-held slot of the arena Untyped before it is moved to the root task.
const ARENA_SLOT: SlotId = SlotId(0);

pub(crate) type Storage = ArrayStorage<{ ROOT_SLOTS as usize + ARENA_SLOTS }, OBJECTS>;

/// The capability system. Lock it through [`caps_to_change`] for anything
/// that may change a capability (that invalidates every thread's lookup
/// cache); only lookups and the read-only capability dump lock it directly.
pub static CAPS: spin::Once<spin::Mutex<Caps<Storage>>> = spin::Once::new();

/// Most objects one `Retype` creates.
const MAX_RETYPE_COUNT: u64 = 256;

/// What the root task starts with.
pub struct RootTask {
    /// Its address space's root table (the INIT_VSPACE PageTable object).
    pub vspace: u64,
    /// Its TCB object and the TCB's physical address.
    pub tcb: (caps::ObjectId, u64),
    /// Its IPC buffer: a Frame object (slot `INIT_IPC_BUFFER`) and its
    /// physical address.
    pub ipc_buffer: (caps::ObjectId, u64),
}

/// Why boot could not build the capability system.
pub type BootError = &'static str;

/// Splits `[start, end)` into naturally aligned power-of-two pieces, largest
/// first where alignment allows.
fn aligned_pieces(mut start: u64, end: u64, mut each: impl FnMut(u64, u8)) {
    while start < end {
        let align = if start == 0 {
            63
        } else {
            start.trailing_zeros()
        };
        let fit = 63 - (end - start).leading_zeros();
        let bits = align.min(fit).min(47) as u8;
        each(start, bits);
        start += 1 << bits;
    }
}

/// Builds the capability system: the root task's CNode, IOMMU and IRQ
/// control caps, every byte of free RAM as Untyped capabilities and every
/// device window (`devmem`: PCI ECAM and BAR windows) as device Untyped
/// capabilities after them; maps
/// the boot-info page and the IPC buffer into the root task's address space
/// rooted at `vspace`.
pub fn init(frames: &mut BootFrames, vspace: u64) -> Result<RootTask, BootError> {
    // Only builds the tables down to the IPC buffer's page (the buffer
    // itself becomes a Frame object below).
    let table_builder = frames.alloc().ok_or("no frame for the IPC buffer")?;
    let info_frame = frames.alloc().ok_or("no frame for the boot-info page")?;
    let rw = crate::vspace::Rights {
        write: true,
        execute: false,
    };
    let ro = crate::vspace::Rights {
        write: false,
        execute: false,
    };
    crate::vspace::map_page(vspace, IPC_BUFFER_ADDRESS, table_builder, rw, &mut || {
        frames.alloc()
    })
    .map_err(|_| "cannot map the IPC buffer")?;
    crate::vspace::map_page(
        vspace,
        bootinfo::BOOT_INFO_ADDRESS,
        info_frame,
        ro,
        &mut || frames.alloc(),
    )
    .map_err(|_| "cannot map the boot-info page")?;

    // Everything the boot allocator has not handed out becomes Untyped.
    let free = frames.take_rest();
    let arena = free.start.next_multiple_of(1 << ARENA_BITS);
    if arena + (1 << ARENA_BITS) > free.end {
        return Err("not enough free RAM for the CNode arena");
    }
    let caps = CAPS
        .call_once(|| spin::Mutex::new(Caps::new(Storage::with_cnode_memory(ROOT_SLOTS, arena))));
    let mut caps = caps.lock();
    let mut clear = SINK;
    caps.boot_untyped(ARENA_SLOT, arena, ARENA_BITS, false)
        .map_err(|_| "arena untyped")?;
    caps.retype(
        ARENA_SLOT,
        NewObject::CNode {
            size_bits: ROOT_CNODE_BITS,
        },
        ROOT_CNODE_SLOT,
        &mut clear,
    )
    .map_err(|_| "root CNode")?;
    let slot = |caps: &Caps<Storage>, index: u32| caps.resolve(ROOT_CNODE_SLOT, index);

    let cnode_copy = slot(&caps, bootinfo::INIT_CNODE).map_err(|_| "INIT_CNODE slot")?;
    caps.mint(ROOT_CNODE_SLOT, cnode_copy, Rights::ALL, Badge(0))
        .map_err(|_| "INIT_CNODE copy")?;
    let irq = slot(&caps, bootinfo::IRQ_CONTROL).map_err(|_| "IRQ_CONTROL slot")?;
    caps.boot_irq_control(irq, 1024).map_err(|_| "IrqControl")?;
    if let Some(unit) = UNIT.lock().as_ref() {
        let dest = slot(&caps, bootinfo::IOMMU_CONTROL).map_err(|_| "IOMMU_CONTROL slot")?;
        caps.boot_iommu_control(dest, unit.model_unit())
            .map_err(|_| "IommuControl")?;
    }

    let mut untypeds = [UntypedDescriptor::default(); bootinfo::MAX_UNTYPEDS];
    let mut count = 0usize;
    // The arena Untyped first: the only one CNodes can come from.
    let first = slot(&caps, bootinfo::FIRST_UNTYPED).map_err(|_| "FIRST_UNTYPED slot")?;
    caps.move_cap(ARENA_SLOT, first).map_err(|_| "arena move")?;
    untypeds[0] = UntypedDescriptor {
        physical_address: arena,
        size_bits: ARENA_BITS,
        ..Default::default()
    };
    count += 1;
    let mut failure = None;
    let mut left_out = 0u64;
    // `device`: None for RAM, else the device window's kind (abi `device_kind`).
    let mut add = |start: u64, bits: u8, device: Option<u8>| {
        if bits < 12 || failure.is_some() {
            return;
        }
        if count >= bootinfo::MAX_UNTYPEDS {
            left_out += 1 << bits;
            return;
        }
        let result = slot(&caps, bootinfo::FIRST_UNTYPED + count as u32)
            .and_then(|dest| caps.boot_untyped(dest, start, bits, device.is_some()));
        match result {
            Ok(_) => {
                untypeds[count] = UntypedDescriptor {
                    physical_address: start,
                    size_bits: bits,
                    is_device: u8::from(device.is_some()),
                    device_kind: device.unwrap_or(bootinfo::device_kind::UNKNOWN),
                    ..Default::default()
                };
                count += 1;
            }
            Err(_) => failure = Some("an initial Untyped"),
        }
    };
    aligned_pieces(free.start, arena, &mut |s, b| add(s, b, None));
    aligned_pieces(arena + (1 << ARENA_BITS), free.end, &mut |s, b| {
        add(s, b, None)
    });
    for window in crate::devmem::windows() {
        aligned_pieces(window.start, window.end, &mut |s, b| {
            add(s, b, Some(window.kind))
        });
    }
    if let Some(what) = failure {
        return Err(what);
    }
    if left_out > 0 {
        crate::println!(
            "[caps] {left_out:#x} bytes of RAM or device memory left out: more than {} Untypeds",
            bootinfo::MAX_UNTYPEDS
        );
    }
    // The root task's own thread, carved from the largest RAM Untyped.
    let largest = (1..count)
        .filter(|&i| untypeds[i].is_device == 0)
        .max_by_key(|&i| untypeds[i].size_bits)
        .ok_or("no RAM Untyped")?;
    let largest_slot =
        slot(&caps, bootinfo::FIRST_UNTYPED + largest as u32).map_err(|_| "untyped slot")?;
    let tcb_slot = slot(&caps, bootinfo::INIT_TCB).map_err(|_| "INIT_TCB slot")?;
    let tcb = caps
        .retype(largest_slot, NewObject::Tcb, tcb_slot, &mut clear)
        .map_err(|_| "root TCB")?;
    let tcb_paddr = caps
        .object(tcb)
        .and_then(|o| o.memory())
        .map(|(paddr, _)| paddr)
        .ok_or("root TCB memory")?;
    // The root task's address space becomes a PageTable object (INIT_VSPACE)
    // so that it can map frames into itself: a copy of the boot root table.
    let vspace_slot = slot(&caps, bootinfo::INIT_VSPACE).map_err(|_| "INIT_VSPACE slot")?;
    let vspace_object = caps
        .retype(largest_slot, NewObject::PageTable, vspace_slot, &mut clear)
        .map_err(|_| "root VSpace")?;
    let new_root = caps
        .object(vspace_object)
        .and_then(|o| o.memory())
        .map(|(paddr, _)| paddr)
        .ok_or("root VSpace memory")?;
    // SAFETY: both are 4 KiB page-table pages in the direct map: the boot
    // root (kernel-owned) and the fresh PageTable object.
    unsafe {
        core::ptr::copy_nonoverlapping(
            crate::mem::phys_to_virt(vspace) as *const u8,
            crate::mem::phys_to_virt(new_root) as *mut u8,
            4096,
        )
    };
    let _ = PAGE_TABLES.lock().push(TableRecord {
        object: vspace_object,
        paddr: new_root,
        installed_at: None,
    });
    // The IPC buffer is a Frame object the root task holds (and may give to
    // threads it starts in its own space), mapped through the model so that
    // its deletion unmaps it. The boot frame mapped above only built the
    // tables on the way.
    let buffer_slot = slot(&caps, bootinfo::INIT_IPC_BUFFER).map_err(|_| "INIT_IPC_BUFFER slot")?;
    let buffer_object = caps
        .retype(
            largest_slot,
            NewObject::Frame { size_bits: 12 },
            buffer_slot,
            &mut clear,
        )
        .map_err(|_| "root IPC buffer")?;
    let buffer_paddr = caps
        .object(buffer_object)
        .and_then(|o| o.memory())
        .map(|(paddr, _)| paddr)
        .ok_or("root IPC buffer memory")?;
    crate::vspace::unmap_leaf(new_root, IPC_BUFFER_ADDRESS, 12);
    caps.map_frame(
        buffer_slot,
        new_root,
        IPC_BUFFER_ADDRESS,
        Rights::READ | Rights::WRITE,
        &mut clear,
    )
    .map_err(|_| "map the root IPC buffer")?;

    let info = BootInfo {
        magic: bootinfo::BOOT_INFO_MAGIC,
        version: 1,
        untyped_count: count as u64,
        first_free_slot: u64::from(bootinfo::FIRST_UNTYPED) + count as u64,
        image_address: 0,
        image_length: 0,
        untypeds,
    };
    // SAFETY: `info_frame` is a fresh 4 KiB frame in the direct map and
    // BootInfo fits in a page (checked by abi's tests).
    unsafe { (crate::mem::phys_to_virt(info_frame) as *mut BootInfo).write(info) };
    let ram = untypeds[..count].iter().filter(|u| u.is_device == 0);
    crate::println!(
        "[caps] root task: CNode of {} slots, {count} Untypeds ({} KiB of RAM, {} device), IPC buffer at {IPC_BUFFER_ADDRESS:#x}",
        1u32 << ROOT_CNODE_BITS,
        ram.clone()
            .map(|u| (1u64 << u.size_bits) >> 10)
            .sum::<u64>(),
        count - ram.count()
    );
    Ok(RootTask {
        vspace: new_root,
        tcb: (tcb, tcb_paddr),
        ipc_buffer: (buffer_object, buffer_paddr),
    })
}

use abi::ipc::IPC_BUFFER_ADDRESS;

/// Applies `ClearMemory` itself and hands IOMMU effects to the unit.
struct ClearMemory {
    /// A `Frame.Map` asked for execute permission (read-only frames only).
    execute: bool,
}

const SINK: ClearMemory = ClearMemory { execute: false };

impl caps::EffectSink for ClearMemory {
    fn push(&mut self, effect: Effect) {
        match effect {
            Effect::MapCpuPage {
                vspace,
                vaddr,
                paddr,
                size_bits,
                rights,
            } => {
                // Memory from a device Untyped maps as device memory, never
                // executable (`Frame.Map` refuses to be asked).
                let memory = if crate::devmem::is_device_memory(paddr) {
                    crate::vspace::Memory::Device
                } else {
                    crate::vspace::Memory::Normal
                };
                let rights = crate::vspace::Rights {
                    write: rights.contains(Rights::WRITE),
                    execute: self.execute
                        && !rights.contains(Rights::WRITE)
                        && memory == crate::vspace::Memory::Normal,
                };
                // Checked by `can_map` before the model was asked.
                if let Err(e) =
                    crate::vspace::map_leaf(vspace, vaddr, paddr, size_bits, rights, memory)
                {
                    crate::println!("[caps] a checked mapping failed: {e:?}");
                }
            }
            Effect::UnmapCpuPage { .. }
                if crate::testing::seeds::planted(crate::testing::seeds::Seed::LeakCpuLeaf) => {}
            Effect::UnmapCpuPage {
                vspace,
                vaddr,
                size_bits,
            } => crate::vspace::unmap_leaf(vspace, vaddr, size_bits),
            Effect::ClearMemory { paddr, size_bits } => {
                if crate::arch::phys_map_covers(paddr, 1 << size_bits) {
                    // SAFETY: the model hands out memory of an Untyped the
                    // kernel created from free RAM, never twice while live
                    // (invariant 4, model-checked), in the direct map.
                    unsafe {
                        core::ptr::write_bytes(
                            crate::mem::phys_to_virt(paddr) as *mut u8,
                            0,
                            1 << size_bits,
                        )
                    };
                }
            }
            other => {
                if let Some(unit) = UNIT.lock().as_mut() {
                    unit.apply(&other);
                }
            }
        }
    }
}

/// An invocation's message as the caller sent it.
pub struct Message {
    /// The invoked capability pointer (index in the caller's CSpace).
    pub cap: u64,
    /// Label, length, extra caps.
    pub info: MessageInfo,
    /// Message registers 0..8 (4..8 from the IPC buffer).
    pub mrs: [u64; 8],
    /// Extra capability pointers (from the IPC buffer).
    pub extra_caps: [u32; 3],
}

/// What an invocation answers: message registers 0..8 and how many are set.
pub struct Reply {
    /// Message registers.
    pub mrs: [u64; 8],
    /// How many are meaningful.
    pub length: u8,
}

impl Reply {
    const EMPTY: Reply = Reply {
        mrs: [0; 8],
        length: 0,
    };
}

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
    thread: u64,
    cspace: SlotId,
    cap: u64,
    kind: ObjectKind,
    rights: Rights,
) -> Result<crate::sched::Target, Error> {
    let generation = GENERATION.load(Ordering::Relaxed);
    let cache = &mut crate::sched::tcb(thread).lookup_cache;
    if cache.generation != generation || cache.cptr != cap || cache.cspace != u64::from(cspace.0) {
        refill_lookup_cache(cache, generation, cspace, cap)?;
    }
    check_lookup(cache, kind, rights)
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
fn lookup_in(
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
    let memory = caps.object(held.object()).and_then(|o| o.memory());
    found.cptr = cap;
    found.cspace = u64::from(cspace.0);
    found.kind = held.kind() as u64;
    found.rights = u64::from(held.rights().bits());
    found.paddr = memory.map_or(u64::MAX, |(paddr, _)| paddr);
    found.object = u64::from(held.object().0);
    found.badge = held.badge().0;
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
/// invalidated first. Every path but [`lookup`]'s takes the lock this way.
fn caps_to_change() -> Option<spin::MutexGuard<'static, Caps<Storage>>> {
    let caps = CAPS.get()?;
    if !crate::testing::seeds::planted(crate::testing::seeds::Seed::StaleLookupCache) {
        GENERATION.fetch_add(1, Ordering::Relaxed);
    }
    Some(caps.lock())
}

/// After a delete or revoke: drop the kernel state of objects that died.
fn reconcile(caps: &mut Caps<Storage>) {
    fn alive(caps: &Caps<Storage>, object: caps::ObjectId, kind: ObjectKind, paddr: u64) -> bool {
        caps.object(object)
            .is_some_and(|o| o.kind() == kind && o.memory().map(|(p, _)| p) == Some(paddr))
    }
    let freed = crate::sched::reconcile(|object, kind, paddr| alive(caps, object, kind, paddr));
    crate::sched::reconcile_irqs(
        |handler| {
            caps.object(handler)
                .is_some_and(|o| o.kind() == ObjectKind::IrqHandler)
        },
        |n| alive(caps, n.object, ObjectKind::Notification, n.paddr),
        |device, rid| {
            caps.object(device).is_some_and(
                |o| matches!(o.state(), caps::ObjectState::IoDevice { rid: r, .. } if *r == rid),
            )
        },
    );
    crate::io_space::reconcile(
        |object, kind| caps.object(object).is_some_and(|o| o.kind() == kind),
        |n| alive(caps, n.object, ObjectKind::Notification, n.paddr),
    );
    // Threads whose kernel-held CSpace capability went (their CNode
    // capability was revoked): they keep no CSpace, and the slot they named
    // may now hold another thread's.
    crate::sched::drop_lost_cspaces(|slot| {
        caps.lookup(SlotId(slot))
            .is_ok_and(|c| c.kind() == ObjectKind::CNode)
    });
    // Kernel-held CSpace capabilities of threads that died (the root task's
    // is its CNode's original, never freed here).
    for slot in freed.into_iter().filter(|&s| s != ROOT_CNODE_SLOT.0) {
        let mut sink = SINK;
        if let Err(e) = caps.delete(SlotId(slot), &mut sink) {
            crate::println!(
                "[caps] a dead thread's CSpace capability stays in kernel slot {slot}: {e}"
            );
        }
    }
    let alive =
        |object: caps::ObjectId, kind: ObjectKind, paddr: u64| alive(caps, object, kind, paddr);
    let mut tables = PAGE_TABLES.lock();
    let dead: heapless::Vec<u64, MAX_PAGE_TABLES> = tables
        .iter()
        .filter(|t| !alive(t.object, ObjectKind::PageTable, t.paddr))
        .map(|t| t.paddr)
        .collect();
    if dead.is_empty() {
        return;
    }
    let inside_dead = |entry: u64| dead.iter().any(|&d| entry >= d && entry < d + 4096);
    for table in tables.iter().filter(|t| dead.contains(&t.paddr)) {
        match table.installed_at {
            // A dead table still linked from a live one: unlink it.
            Some(entry) if !inside_dead(entry) => crate::vspace::clear_entry(entry),
            Some(_) => {}
            // A dead address-space root: no thread may run on it any more.
            None => crate::sched::forget_address_space(table.paddr),
        }
    }
    // Live tables linked from a dead one, and those linked from them, lose
    // their place (their entry lives in memory that may be retyped): they
    // are emptied, so that installed again they bring no leaf or lower
    // table along, and their records go.
    let mut orphans: heapless::Vec<u64, MAX_PAGE_TABLES> = heapless::Vec::new();
    loop {
        let inside = |entry: u64| {
            inside_dead(entry) || orphans.iter().any(|&o| entry >= o && entry < o + 4096)
        };
        let next = tables.iter().find(|t| {
            !dead.contains(&t.paddr)
                && !orphans.contains(&t.paddr)
                && t.installed_at.is_some_and(inside)
        });
        match next.map(|t| t.paddr) {
            Some(paddr) if orphans.push(paddr).is_ok() => {}
            _ => break,
        }
    }
    for &table in &orphans {
        crate::vspace::clear_table(table);
    }
    tables.retain(|t| !dead.contains(&t.paddr) && !orphans.contains(&t.paddr));
    // Frame capabilities whose CPU leaf went with a table (or whose address
    // space died) no longer map anything: the model forgets the mapping, so
    // that a later unmap never clears a leaf another Frame holds there.
    for index in 0..caps.slots().len() {
        let Some(cap) = caps.slots()[index].cap().copied() else {
            continue;
        };
        let Some(cpu) = cap.cpu_mapping() else {
            continue;
        };
        let root_alive = tables
            .iter()
            .any(|t| t.paddr == cpu.vspace && t.installed_at.is_none());
        let memory = caps.object(cap.object()).and_then(|o| o.memory());
        let mapped = root_alive
            && memory.is_some_and(|(paddr, bits)| {
                crate::vspace::mapped_at(cpu.vspace, cpu.vaddr, bits) == Some(paddr)
            });
        if !mapped {
            let _ = caps.unmap_frame(SlotId(index as u32), &mut caps::DiscardEffects);
        }
    }
}

/// A PageTable object the kernel linked into an address space: installed
/// under a table entry, or (`installed_at: None`) an address space's root.
struct TableRecord {
    object: caps::ObjectId,
    paddr: u64,
    installed_at: Option<u64>,
}

const MAX_PAGE_TABLES: usize = 512;

static PAGE_TABLES: spin::Mutex<heapless::Vec<TableRecord, MAX_PAGE_TABLES>> =
    spin::Mutex::new(heapless::Vec::new());

/// The roots of every address space the kernel knows (PageTable records
/// not installed under another table), for the abstraction check.
#[cfg(feature = "fuzz-checks")]
pub fn address_space_roots() -> heapless::Vec<u64, MAX_PAGE_TABLES> {
    let tables = PAGE_TABLES.lock();
    let roots = tables.iter().filter(|t| t.installed_at.is_none());
    roots.map(|t| t.paddr).collect()
}

/// The physical address of the PageTable in `slot`, which must be an
/// address space's root or become one. Errors: `AlreadyMapped` if it is
/// installed as a lower-level table.
fn as_root(caps: &Caps<Storage>, slot: SlotId) -> Result<u64, Error> {
    let cap = *caps.lookup_as(slot, ObjectKind::PageTable, Rights::WRITE)?;
    let paddr = caps
        .object(cap.object())
        .and_then(|o| o.memory())
        .map(|(p, _)| p)
        .ok_or(Error::DeadObject)?;
    let mut tables = PAGE_TABLES.lock();
    match tables.iter().find(|t| t.paddr == paddr) {
        Some(t) if t.installed_at.is_some() => Err(Error::AlreadyMapped),
        Some(_) => Ok(paddr),
        None => {
            tables
                .push(TableRecord {
                    object: cap.object(),
                    paddr,
                    installed_at: None,
                })
                .map_err(|_| Error::ObjectTableFull)?;
            // A new root gets the kernel's half of every address space.
            crate::vspace::init_root(paddr);
            Ok(paddr)
        }
    }
}

/// Extra capability `index` of the message, resolved in `cspace`.
fn extra_cap(
    caps: &Caps<Storage>,
    cspace: SlotId,
    message: &Message,
    index: usize,
) -> Result<SlotId, Error> {
    if usize::from(message.info.extra_caps) <= index {
        return Err(Error::TruncatedMessage);
    }
    caps.resolve(cspace, message.extra_caps[index])
        .map_err(|_| Error::LookupFailed)
}

/// Gives a fresh IoSpace (cap in `dest`) its stage-2 table; deletes it
/// again if the kernel cannot.
fn register_io_space(
    caps: &mut Caps<Storage>,
    id: caps::ObjectId,
    dest: SlotId,
) -> Result<(), Error> {
    let object = caps.object(id).ok_or(Error::DeadObject)?;
    let root = object.memory().map(|(p, _)| p).ok_or(Error::DeadObject)?;
    let caps::ObjectState::IoSpace { did, .. } = *object.state() else {
        return Err(Error::WrongKind);
    };
    let registered = crate::io_space::register_space(id, root, did);
    if registered.is_err() {
        let mut sink = SINK;
        let _ = caps.delete(dest, &mut sink);
    }
    registered
}

fn memory_of(caps: &Caps<Storage>, slot: SlotId) -> Result<(u64, u8), Error> {
    let cap = *caps.lookup(slot)?;
    caps.object(cap.object())
        .and_then(|o| o.memory())
        .ok_or(Error::DeadObject)
}

/// The IoSpace an attach to `target` (an IoSpace or an IoUserTable) uses,
/// and the stage-1 root of an IoUserTable.
fn attach_target(
    caps: &Caps<Storage>,
    target: SlotId,
) -> Result<(caps::ObjectId, Option<u64>), Error> {
    let object = caps.lookup(target)?.object();
    match caps.object(object).map(|o| *o.state()) {
        Some(caps::ObjectState::IoUserTable {
            space: Some(space),
            root_ipa,
        }) => Ok((space, Some(root_ipa))),
        _ => Ok((object, None)),
    }
}

fn argument(message: &Message, index: usize) -> Result<u64, Error> {
    if index >= usize::from(message.info.length) {
        return Err(Error::TruncatedMessage);
    }
    Ok(message.mrs[index])
}

fn slot_index(value: u64) -> Result<u32, Error> {
    u32::try_from(value).map_err(|_| Error::InvalidSlot)
}

/// Decodes and performs one capability invocation for a thread whose
/// CSpace root is `cspace`. Never panics on user input. An IOMMU
/// invalidation that failed or timed out on the way fails it with
/// `IommuTimeout` (its devices were left blocked, `io_space`).
pub fn invoke(cspace: SlotId, message: &Message) -> Result<Reply, Error> {
    crate::io_space::forget_failure();
    let result = decode_and_perform(cspace, message);
    crate::io_space::take_failure().map_or(result, Err)
}

fn decode_and_perform(cspace: SlotId, message: &Message) -> Result<Reply, Error> {
    let Some(mut caps) = caps_to_change() else {
        return Err(Error::NotSupported);
    };
    let index = slot_index(message.cap).map_err(|_| Error::LookupFailed)?;
    let slot = caps
        .resolve(cspace, index)
        .map_err(|_| Error::LookupFailed)?;
    let kind = caps.lookup(slot)?.kind();
    let invocation = Invocation::from_label(message.info.label).ok_or(Error::InvalidInvocation)?;
    let mut sink = SINK;
    match (kind, invocation) {
        (ObjectKind::Untyped, Invocation::UntypedRetype) => {
            let object_type =
                ObjectType::from_number(argument(message, 0)?).ok_or(Error::InvalidArgument)?;
            let size_bits = u8::try_from(argument(message, 1)?).map_err(|_| Error::InvalidSize)?;
            let first = slot_index(argument(message, 2)?)?;
            let count = argument(message, 3)?;
            if count == 0 || count > MAX_RETYPE_COUNT {
                return Err(Error::InvalidArgument);
            }
            let new = match object_type {
                ObjectType::Untyped => NewObject::Untyped { size_bits },
                ObjectType::Cnode => NewObject::CNode { size_bits },
                ObjectType::Tcb => NewObject::Tcb,
                ObjectType::Endpoint => NewObject::Endpoint,
                ObjectType::Notification => NewObject::Notification,
                ObjectType::Frame => NewObject::Frame { size_bits },
                ObjectType::PageTable => NewObject::PageTable,
                ObjectType::IoSpace => {
                    if message.info.extra_caps == 0 {
                        return Err(Error::TruncatedMessage);
                    }
                    let iommu = caps
                        .resolve(cspace, message.extra_caps[0])
                        .map_err(|_| Error::LookupFailed)?;
                    NewObject::IoSpace { iommu }
                }
                ObjectType::IoFaultQueue => NewObject::IoFaultQueue,
            };
            // Decode everything before changing anything: every destination
            // must resolve and be empty, and all `count` objects must fit
            // (room at the watermark, records, DIDs, slot memory; for
            // IoSpaces the kernel's records and table-page reservations).
            for i in 0..count as u32 {
                let dest = caps.resolve(cspace, first.checked_add(i).ok_or(Error::InvalidSlot)?)?;
                if caps.lookup(dest).is_ok() {
                    return Err(Error::SlotOccupied);
                }
            }
            caps.check_retype(slot, new, count as usize)?;
            if let NewObject::IoSpace { .. } = new {
                crate::io_space::can_register(count as usize)?;
            }
            // Perform: every step was checked above.
            for i in 0..count as u32 {
                let dest = caps.resolve(cspace, first + i)?;
                let made = caps.retype(slot, new, dest, &mut sink).map_err(Error::from);
                let made = made.and_then(|id| match new {
                    NewObject::IoSpace { .. } => register_io_space(&mut caps, id, dest),
                    _ => Ok(()),
                });
                if let Err(e) = made {
                    // A kernel bug (decode let through what perform
                    // refuses): take back what was made, all or nothing.
                    crate::println!("[caps] retype {i} of {count} failed after decode: {e}");
                    for j in 0..i {
                        let made = caps.resolve(cspace, first + j)?;
                        let _ = caps.delete(made, &mut sink);
                    }
                    reconcile(&mut caps);
                    return Err(e);
                }
            }
            // MR0 is the count made, as before retype was all or nothing.
            Ok(Reply {
                mrs: [count, 0, 0, 0, 0, 0, 0, 0],
                length: 1,
            })
        }
        (
            ObjectKind::CNode,
            Invocation::CnodeCopy | Invocation::CnodeMint | Invocation::CnodeMove,
        ) => {
            // Writing a slot takes the write right on its CNode capability;
            // copying out of one the read right (moving out: write).
            caps.lookup_as(slot, ObjectKind::CNode, Rights::WRITE)?;
            let dest = caps.resolve(slot, slot_index(argument(message, 0)?)?)?;
            // Cap 0, if given, is the CNode the source slot is in.
            let source_cnode = if message.info.extra_caps > 0 {
                caps.resolve(cspace, message.extra_caps[0])
                    .map_err(|_| Error::LookupFailed)?
            } else {
                slot
            };
            let source_right = if invocation == Invocation::CnodeMove {
                Rights::WRITE
            } else {
                Rights::READ
            };
            caps.lookup_as(source_cnode, ObjectKind::CNode, source_right)?;
            let source = caps.resolve(source_cnode, slot_index(argument(message, 1)?)?)?;
            match invocation {
                Invocation::CnodeMove => caps.move_cap(source, dest)?,
                Invocation::CnodeCopy => {
                    let rights = Rights::from_bits_truncate(argument(message, 2)? as u8);
                    caps.mint(source, dest, rights, Badge(0))?
                }
                _ => {
                    let rights = Rights::from_bits_truncate(argument(message, 2)? as u8);
                    caps.mint(source, dest, rights, Badge(argument(message, 3)?))?
                }
            }
            Ok(Reply::EMPTY)
        }
        (ObjectKind::CNode, Invocation::CnodeDelete | Invocation::CnodeRevoke) => {
            caps.lookup_as(slot, ObjectKind::CNode, Rights::WRITE)?;
            let target = caps.resolve(slot, slot_index(argument(message, 0)?)?)?;
            let result = if invocation == Invocation::CnodeDelete {
                caps.delete(target, &mut sink)
            } else {
                caps.revoke(target, &mut sink)
            };
            reconcile(&mut caps);
            result?;
            Ok(Reply::EMPTY)
        }
        (
            ObjectKind::Tcb,
            Invocation::TcbWriteRegisters
            | Invocation::TcbSetPriority
            | Invocation::TcbResume
            | Invocation::TcbSuspend
            | Invocation::TcbSetFaultHandler,
        ) => {
            let cap = *caps.lookup(slot)?;
            if !cap.rights().contains(Rights::WRITE) {
                return Err(Error::InsufficientRights);
            }
            let paddr = caps
                .object(cap.object())
                .and_then(|o| o.memory())
                .map(|(p, _)| p)
                .ok_or(Error::DeadObject)?;
            let length = usize::from(message.info.length).min(8);
            if invocation == Invocation::TcbSetFaultHandler {
                // Both capabilities resolved under the one lock held since
                // the TCB's lookup.
                let endpoint_slot = argument(message, 0)?;
                let endpoint = lookup_in(
                    &caps,
                    cspace,
                    endpoint_slot,
                    ObjectKind::Endpoint,
                    Rights::WRITE,
                )?;
                crate::sched::set_fault_handler((cap.object(), paddr), &endpoint)?;
                return Ok(Reply::EMPTY);
            }
            crate::sched::invoke_tcb(cap.object(), paddr, invocation, &message.mrs[..length])?;
            Ok(Reply::EMPTY)
        }
        (ObjectKind::Frame, Invocation::FrameMap) => {
            if message.info.extra_caps == 0 {
                return Err(Error::TruncatedMessage);
            }
            let vspace_slot = caps
                .resolve(cspace, message.extra_caps[0])
                .map_err(|_| Error::LookupFailed)?;
            let vaddr = argument(message, 0)?;
            let bits = argument(message, 1)?;
            let rights = Rights::from_bits_truncate((bits & 3) as u8);
            let execute = bits & 4 != 0;
            if execute && rights.contains(Rights::WRITE) {
                return Err(Error::InvalidRights);
            }
            let root = as_root(&caps, vspace_slot)?;
            let (paddr, size_bits) = memory_of(&caps, slot)?;
            if execute && crate::devmem::is_device_memory(paddr) {
                return Err(Error::DeviceMemory);
            }
            crate::vspace::can_map(root, vaddr, size_bits).map_err(|e| match e {
                crate::vspace::MapError::MissingTable(_) => Error::MissingPageTable,
                crate::vspace::MapError::BadAddress(_) => Error::InvalidAddress,
                _ => Error::AddressInUse,
            })?;
            let mut sink = ClearMemory { execute };
            caps.map_frame(slot, root, vaddr, rights, &mut sink)?;
            Ok(Reply::EMPTY)
        }
        (ObjectKind::Frame, Invocation::FrameUnmap) => {
            if caps.lookup(slot)?.cpu_mapping().is_some() {
                caps.unmap_frame(slot, &mut sink)?;
            } else {
                caps.unmap_io(slot, &mut sink)?;
            }
            Ok(Reply::EMPTY)
        }
        (ObjectKind::PageTable, Invocation::PageTableMap) => {
            if message.info.extra_caps == 0 {
                return Err(Error::TruncatedMessage);
            }
            let vspace_slot = caps
                .resolve(cspace, message.extra_caps[0])
                .map_err(|_| Error::LookupFailed)?;
            let root = as_root(&caps, vspace_slot)?;
            let object = caps
                .lookup_as(slot, ObjectKind::PageTable, Rights::WRITE)?
                .object();
            let (paddr, _) = memory_of(&caps, slot)?;
            let mut tables = PAGE_TABLES.lock();
            if tables.iter().any(|t| t.paddr == paddr) {
                return Err(Error::AlreadyMapped);
            }
            if tables.is_full() {
                return Err(Error::ObjectTableFull);
            }
            let entry =
                crate::vspace::install_table(root, argument(message, 0)?, paddr).map_err(|e| {
                    match e {
                        crate::vspace::MapError::BadAddress(_) => Error::InvalidAddress,
                        _ => Error::AddressInUse,
                    }
                })?;
            let _ = tables.push(TableRecord {
                object,
                paddr,
                installed_at: Some(entry),
            });
            Ok(Reply::EMPTY)
        }
        (ObjectKind::PageTable, Invocation::PageTableUnmap) => {
            caps.lookup_as(slot, ObjectKind::PageTable, Rights::WRITE)?;
            let (paddr, _) = memory_of(&caps, slot)?;
            let mut tables = PAGE_TABLES.lock();
            let index = tables
                .iter()
                .position(|t| t.paddr == paddr && t.installed_at.is_some())
                .ok_or(Error::NotMapped)?;
            // A table leaves only empty: its leaves and lower tables would
            // otherwise outlive what the capability model knows of them
            // (a Frame deleted behind it, or a leaf read as a table pointer
            // when the table comes back one level higher).
            if !crate::vspace::table_is_empty(paddr) {
                return Err(Error::TableNotEmpty);
            }
            if let Some(entry) = tables[index].installed_at {
                crate::vspace::clear_entry(entry);
            }
            tables.swap_remove(index);
            Ok(Reply::EMPTY)
        }
        (ObjectKind::Tcb, Invocation::TcbConfigure) => {
            if !caps.lookup(slot)?.rights().contains(Rights::WRITE) {
                return Err(Error::InsufficientRights);
            }
            if message.info.extra_caps < 2 {
                return Err(Error::TruncatedMessage);
            }
            let (tcb, _) = memory_of(&caps, slot)?;
            let tcb_object = caps.lookup(slot)?.object();
            let vspace_slot = caps
                .resolve(cspace, message.extra_caps[1])
                .map_err(|_| Error::LookupFailed)?;
            let root = as_root(&caps, vspace_slot)?;
            // The fault endpoint (0: none), resolved under this lock.
            let fault_endpoint = match argument(message, 0)? {
                0 => None,
                cptr => Some(lookup_in(
                    &caps,
                    cspace,
                    cptr,
                    ObjectKind::Endpoint,
                    Rights::WRITE,
                )?),
            };
            // The thread's CSpace: a copy of the CNode capability in a
            // kernel-held slot (revoking the user's capability revokes it).
            let cnode_slot = caps
                .resolve(cspace, message.extra_caps[0])
                .map_err(|_| Error::LookupFailed)?;
            caps.lookup_as(cnode_slot, ObjectKind::CNode, Rights::NONE)?;
            if message.info.extra_caps < 3 {
                return Err(Error::TruncatedMessage);
            }
            let buffer_slot = caps
                .resolve(cspace, message.extra_caps[2])
                .map_err(|_| Error::LookupFailed)?;
            // The kernel reads and writes message registers there.
            let buffer_object = caps
                .lookup_as(buffer_slot, ObjectKind::Frame, Rights::READ | Rights::WRITE)?
                .object();
            let (buffer, buffer_bits) = memory_of(&caps, buffer_slot)?;
            if buffer_bits != 12 {
                return Err(Error::InvalidSize);
            }
            // The kernel reads and writes the buffer through its direct map,
            // which need not cover device memory (nor should a message land
            // in device registers).
            if crate::devmem::is_device_memory(buffer) {
                return Err(Error::DeviceMemory);
            }
            let kernel_slot = (2..ROOT_SLOTS)
                .map(SlotId)
                .find(|&s| caps.lookup(s).is_err())
                .ok_or(Error::ObjectTableFull)?;
            caps.mint(cnode_slot, kernel_slot, Rights::ALL, Badge(0))?;
            match crate::sched::set_cspace_and_buffer(
                (tcb_object, tcb),
                kernel_slot.0,
                (buffer_object, buffer),
            ) {
                Ok(0) => {}
                // The root task's CSpace is its CNode's original capability,
                // not a kernel-held copy: it stays.
                Ok(old) if old == ROOT_CNODE_SLOT.0 => {}
                Ok(old) => {
                    let _ = caps.delete(SlotId(old), &mut sink);
                }
                Err(e) => {
                    let _ = caps.delete(kernel_slot, &mut sink);
                    return Err(e);
                }
            }
            if let Some(endpoint) = fault_endpoint {
                crate::sched::set_fault_handler((tcb_object, tcb), &endpoint)?;
            }
            drop(caps);
            crate::sched::set_address_space(tcb, root);
            Ok(Reply::EMPTY)
        }
        (ObjectKind::IrqControl, Invocation::IrqControlGet) => {
            let line = u16::try_from(argument(message, 0)?).map_err(|_| Error::OutOfScope)?;
            if !crate::arch::irq_line_available(line) {
                return Err(Error::OutOfScope);
            }
            let dest = caps.resolve(cspace, slot_index(argument(message, 1)?)?)?;
            let handler = caps.issue_irq_handler(slot, line, dest)?;
            if let Err(e) = crate::sched::bind_irq(handler, line) {
                let _ = caps.delete(dest, &mut sink);
                return Err(e);
            }
            Ok(Reply::EMPTY)
        }
        (ObjectKind::IrqHandler, Invocation::IrqHandlerSetNotification) => {
            if message.info.extra_caps == 0 {
                return Err(Error::TruncatedMessage);
            }
            let handler = caps
                .lookup_as(slot, ObjectKind::IrqHandler, Rights::WRITE)?
                .object();
            drop(caps);
            let notification = lookup(
                cspace,
                u64::from(message.extra_caps[0]),
                ObjectKind::Notification,
                Rights::WRITE,
            )?;
            crate::sched::set_irq_notification(handler, notification)?;
            Ok(Reply::EMPTY)
        }
        (ObjectKind::IrqHandler, Invocation::IrqHandlerMsiMessage) => {
            let handler = caps
                .lookup_as(slot, ObjectKind::IrqHandler, Rights::WRITE)?
                .object();
            let Some(caps::ObjectState::IrqHandler { irq }) =
                caps.object(handler).map(|o| *o.state())
            else {
                return Err(Error::DeadObject);
            };
            if !cfg!(target_arch = "x86_64") {
                return Err(Error::NotSupported);
            }
            // The device that will raise it: only its requester id passes
            // the line's interrupt remapping entry.
            let device = extra_cap(&caps, cspace, message, 0)?;
            let device = caps.lookup_as(device, ObjectKind::IoDevice, Rights::WRITE)?;
            let Some(caps::ObjectState::IoDevice { rid, .. }) =
                caps.object(device.object()).map(|o| *o.state())
            else {
                return Err(Error::DeadObject);
            };
            let requester = u16::try_from(rid).map_err(|_| Error::InvalidArgument)?;
            let (address, data) =
                crate::arch::bind_msi_line(irq, requester).ok_or(Error::InvalidArgument)?;
            crate::sched::set_msi_device(handler, device.object(), rid)?;
            Ok(Reply {
                mrs: [address, u64::from(data), 0, 0, 0, 0, 0, 0],
                length: 2,
            })
        }
        (ObjectKind::IrqHandler, Invocation::IrqHandlerAck) => {
            crate::sched::ack_irq(
                caps.lookup_as(slot, ObjectKind::IrqHandler, Rights::WRITE)?
                    .object(),
            )?;
            Ok(Reply::EMPTY)
        }
        (ObjectKind::IommuControl, Invocation::IommuMintDevice) => {
            let requester = u32::try_from(argument(message, 0)?).map_err(|_| Error::OutOfScope)?;
            let dest = caps.resolve(cspace, slot_index(argument(message, 1)?)?)?;
            caps.mint_device(slot, requester, dest)?;
            Ok(Reply::EMPTY)
        }
        (ObjectKind::IoDevice, Invocation::IoDeviceAttach | Invocation::IoDeviceAttachNested) => {
            let target = extra_cap(&caps, cspace, message, 0)?;
            let wanted = if invocation == Invocation::IoDeviceAttach {
                ObjectKind::IoSpace
            } else {
                ObjectKind::IoUserTable
            };
            if caps.lookup(target)?.kind() != wanted {
                return Err(Error::WrongKind);
            }
            let (space, root_ipa) = attach_target(&caps, target)?;
            crate::io_space::ensure_attach_room(space, root_ipa)?;
            caps.attach_device(slot, target, &mut sink)?;
            Ok(Reply::EMPTY)
        }
        (ObjectKind::IoDevice, Invocation::IoDeviceDetach) => {
            caps.detach_device(slot, &mut sink)?;
            Ok(Reply::EMPTY)
        }
        (ObjectKind::IoDevice, Invocation::IoDeviceMintPasid) => {
            let pasid = u32::try_from(argument(message, 0)?).map_err(|_| Error::PasidOutOfRange)?;
            let dest = caps.resolve(cspace, slot_index(argument(message, 1)?)?)?;
            caps.mint_pasid(slot, pasid, dest)?;
            Ok(Reply::EMPTY)
        }
        (ObjectKind::IoPasid, Invocation::IoPasidAttach) => {
            if !crate::io_space::pasids_supported() {
                return Err(Error::NotSupported);
            }
            let target = extra_cap(&caps, cspace, message, 0)?;
            let (space, root_ipa) = attach_target(&caps, target)?;
            crate::io_space::ensure_attach_room(space, root_ipa)?;
            caps.attach_pasid(slot, target, &mut sink)?;
            Ok(Reply::EMPTY)
        }
        (ObjectKind::IoPasid, Invocation::IoPasidDetach) => {
            caps.detach_pasid(slot, &mut sink)?;
            Ok(Reply::EMPTY)
        }
        (ObjectKind::IoSpace, Invocation::IoSpaceMap) => {
            let frame = extra_cap(&caps, cspace, message, 0)?;
            let ipa = argument(message, 0)?;
            let rights = argument(message, 1)?;
            if rights > 3 {
                return Err(Error::InvalidRights);
            }
            // Device memory never goes into an IoSpace: no peer-to-peer
            // DMA, and the VT-d shadow walk reads only RAM as tables.
            let (paddr, _) = memory_of(&caps, frame)?;
            if crate::devmem::is_device_memory(paddr) {
                return Err(Error::DeviceMemory);
            }
            crate::io_space::ensure_pool(caps.lookup(slot)?.object())?;
            caps.map_io(
                frame,
                slot,
                ipa,
                Rights::from_bits_truncate(rights as u8),
                &mut sink,
            )?;
            Ok(Reply::EMPTY)
        }
        (ObjectKind::IoSpace, Invocation::IoSpaceUnmap) => {
            let frame = extra_cap(&caps, cspace, message, 0)?;
            let space = caps
                .lookup_as(slot, ObjectKind::IoSpace, Rights::WRITE)?
                .object();
            let mapping = caps.lookup(frame)?.mapping().ok_or(Error::NotMapped)?;
            if mapping.space != space {
                return Err(Error::NotMapped);
            }
            caps.unmap_io(frame, &mut sink)?;
            Ok(Reply::EMPTY)
        }
        (ObjectKind::IoSpace, Invocation::IoSpaceBindUserTable) => {
            let root_ipa = argument(message, 0)?;
            if argument(message, 1)? != crate::io_space::USER_TABLE_FORMAT {
                return Err(Error::InvalidArgument);
            }
            let dest = caps.resolve(cspace, slot_index(argument(message, 2)?)?)?;
            caps.bind_user_table(slot, root_ipa, dest)?;
            Ok(Reply::EMPTY)
        }
        (ObjectKind::IoUserTable, Invocation::IoUserTableInvalidate) => {
            let cap = *caps.lookup_as(slot, ObjectKind::IoUserTable, Rights::WRITE)?;
            let state = caps.object(cap.object()).map(|o| *o.state());
            let Some(caps::ObjectState::IoUserTable {
                space: Some(space),
                root_ipa,
            }) = state
            else {
                return Err(Error::DeadObject);
            };
            let (next, commands) = crate::io_space::invalidate_user_table(
                space,
                root_ipa,
                argument(message, 0)?,
                argument(message, 1)?,
            )?;
            Ok(Reply {
                mrs: [next, commands, 0, 0, 0, 0, 0, 0],
                length: 2,
            })
        }
        (ObjectKind::IoFaultQueue, Invocation::IoFaultQueueBind) => {
            if message.info.extra_caps < 2 {
                return Err(Error::TruncatedMessage);
            }
            let queue = caps
                .lookup_as(slot, ObjectKind::IoFaultQueue, Rights::WRITE)?
                .object();
            let source = extra_cap(&caps, cspace, message, 1)?;
            let badge = caps.lookup(source)?.badge().0;
            // Release the capability lock: `lookup` takes it again.
            drop(caps);
            let notification = lookup(
                cspace,
                u64::from(message.extra_caps[0]),
                ObjectKind::Notification,
                Rights::WRITE,
            )?;
            let mut caps = caps_to_change().ok_or(Error::NotSupported)?;
            let slot = caps.resolve(cspace, index)?;
            let source = extra_cap(&caps, cspace, message, 1)?;
            caps.bind_fault_queue(source, slot, &mut sink)?;
            crate::io_space::bind_queue(queue, notification, badge)?;
            Ok(Reply::EMPTY)
        }
        (ObjectKind::IoFaultQueue, Invocation::IoFaultQueuePop) => {
            let queue = caps
                .lookup_as(slot, ObjectKind::IoFaultQueue, Rights::READ)?
                .object();
            drop(caps);
            match crate::io_space::pop(queue) {
                (Some([a, b, c, d, e, f]), _) => Ok(Reply {
                    mrs: [a, b, c, d, e, f, 0, 0],
                    length: 6,
                }),
                (None, _) => Ok(Reply::EMPTY),
            }
        }
        (ObjectKind::IommuControl, Invocation::IommuIdentify) => {
            let guard = UNIT.lock();
            let unit = guard.as_ref().ok_or(Error::NotSupported)?;
            let [a, b, c, d, e] = unit.identify();
            Ok(Reply {
                mrs: [a, b, c, d, e, 0, 0, 0],
                length: 5,
            })
        }
        (_, invocation) if invocation_kind(invocation) == kind => Err(Error::NotSupported),
        _ => Err(Error::InvalidInvocation),
    }
}

/// The object kind an invocation applies to.
fn invocation_kind(invocation: Invocation) -> ObjectKind {
    use Invocation as I;
    match invocation {
        I::UntypedRetype => ObjectKind::Untyped,
        I::CnodeCopy | I::CnodeMint | I::CnodeMove | I::CnodeDelete | I::CnodeRevoke => {
            ObjectKind::CNode
        }
        I::TcbConfigure
        | I::TcbSetPriority
        | I::TcbWriteRegisters
        | I::TcbResume
        | I::TcbSuspend
        | I::TcbSetFaultHandler => ObjectKind::Tcb,
        I::FrameMap | I::FrameUnmap => ObjectKind::Frame,
        I::PageTableMap | I::PageTableUnmap => ObjectKind::PageTable,
        I::IrqControlGet => ObjectKind::IrqControl,
        I::IrqHandlerAck | I::IrqHandlerSetNotification | I::IrqHandlerMsiMessage => {
            ObjectKind::IrqHandler
        }
        I::IommuIdentify | I::IommuMintDevice => ObjectKind::IommuControl,
        I::IoDeviceAttach | I::IoDeviceAttachNested | I::IoDeviceDetach | I::IoDeviceMintPasid => {
            ObjectKind::IoDevice
        }
        I::IoSpaceMap | I::IoSpaceUnmap | I::IoSpaceBindUserTable => ObjectKind::IoSpace,
        I::IoUserTableInvalidate => ObjectKind::IoUserTable,
        I::IoPasidAttach | I::IoPasidDetach => ObjectKind::IoPasid,
        I::IoFaultQueueBind | I::IoFaultQueuePop => ObjectKind::IoFaultQueue,
    }
}

/// The CSpace root slot and IPC buffer of `thread`: `None` unless it has
/// both (there is no default: a thread has only the authority it was
/// configured with, and one without both never runs, `sched`).
pub fn thread_context(thread: u64) -> Option<(SlotId, u64)> {
    let t = crate::sched::tcb(thread);
    (t.cspace_slot != 0 && t.ipc_buffer != 0).then_some((SlotId(t.cspace_slot), t.ipc_buffer))
}

/// Moves the capability a sender names in its IPC buffer (`caps[0]`, in its
/// CSpace) into the receiver's receive slot (in its CSpace) as a copy: a
/// child of the sender's, so the sender can revoke it. Returns whether one
/// moved (the slot must resolve and be empty).
pub fn transfer_capability(sender: u64, receiver: u64) -> bool {
    let Some(mut caps) = caps_to_change() else {
        return false;
    };
    let (Some((sender_cspace, sender_buffer)), Some((receiver_cspace, receiver_buffer))) =
        (thread_context(sender), thread_context(receiver))
    else {
        return false;
    };
    let read_u32 = |buffer: u64, offset: usize| {
        // SAFETY: IPC buffers are kernel-known 4 KiB frames in the direct
        // map; the offsets are inside the first 536 bytes.
        unsafe { (crate::mem::phys_to_virt(buffer + offset as u64) as *const u32).read_volatile() }
    };
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
