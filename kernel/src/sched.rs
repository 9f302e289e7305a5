//! Threads, the scheduler, endpoints and notifications.
//!
//! A thread's kernel state ([`Tcb`]) lives in the memory of its TCB object
//! (2 KiB, retyped from an Untyped by the capability model), an endpoint's
//! queue in the endpoint object's 16 bytes, a notification's word and queue
//! in its 32 bytes — the kernel allocates nothing for them. Everything is
//! named by its physical address; all zeroes (what `ClearMemory` leaves) is
//! a valid initial state for each. Each is borrowed through [`Threads`],
//! their one owner, so two live borrows do not compile (`mem`'s
//! obligation 3).
//!
//! Scheduling: 256 priorities, round robin within a priority. The running
//! thread stays at the head of its priority's queue; the timer (a time
//! slice per run) and `Yield` rotate the queue, blocking removes a thread,
//! waking appends it. The highest non-empty priority runs.
//!
//! IPC: `Send`/`Call` meet a `Recv`/`ReplyRecv` on an endpoint and move the
//! message info, four message registers and the sender's badge; a `Call`
//! then waits for the receiver's reply. `Signal` ORs the badge into a
//! notification word; `Wait` takes a non-zero word or blocks.
//!
//! For now every thread runs in the root task's address space and CSpace
//! (`Tcb.Configure` waits for address-space objects), and messages carry no
//! capabilities and at most four registers.
//!
//! Deleting the last capability to a TCB, endpoint or notification: the
//! capability model frees the object; right after every CNode delete or
//! revoke the kernel checks its [`REGISTRY`] of objects with kernel state
//! and tears down what died (a dying thread leaves its queue; a dying
//! endpoint's waiters get `DeadObject`) before the memory can be retyped.

use crate::arch::{self, UserContext};
use crate::mem;
use abi::{Error, MessageInfo};
use caps::ObjectId;
use core::sync::atomic::AtomicBool;
use zerocopy::FromBytes;

/// Thread states (`Tcb::state`); 0 is what a fresh TCB holds.
mod state {
    pub const INACTIVE: u8 = 0;
    pub const READY: u8 = 1;
    pub const BLOCKED_SEND: u8 = 2;
    pub const BLOCKED_RECV: u8 = 3;
    pub const BLOCKED_REPLY: u8 = 4;
    pub const BLOCKED_WAIT: u8 = 5;
}

/// A thread's kernel state, at the start of its TCB object's memory.
#[derive(FromBytes)]
#[repr(C, align(16))]
pub struct Tcb {
    /// Saved user registers.
    pub context: UserContext,
    state: u8,
    priority: u8,
    /// Sending with `Call` (waits for a reply).
    calling: u8,
    /// Next thread in the queue this one is on (0: none).
    next: u64,
    /// The endpoint or notification this thread waits on (0: none).
    waiting_on: u64,
    /// The thread waiting for this thread's reply (0: none).
    reply_to: u64,
    /// Badge of the capability this thread sends with.
    send_badge: u64,
    /// The endpoint this thread's faults go to (0: none) and its badge.
    fault_endpoint: u64,
    fault_badge: u64,
    /// Non-zero while this thread waits for its fault handler; `fault`
    /// then holds the message the handler receives.
    faulted: u8,
    fault: [u64; 4],
    /// The root table of the address space it runs in (0: none; it does not
    /// run).
    vspace: u64,
    /// The kernel-held slot with its CSpace's CNode capability (0: none; the
    /// thread does not run).
    pub cspace_slot: u32,
    /// Physical address of its IPC buffer frame (0: none; it does not run).
    pub ipc_buffer: u64,
    /// The endpoint capability it sends with holds the grant right.
    send_grant: u8,
    /// Its name for the console (`DebugNameThread`), NUL-padded UTF-8.
    name: [u8; 32],
    /// The last capability its message-passing calls looked up
    /// (`objects::lookup_cached`).
    pub lookup_cache: LookupCache,
}

/// One remembered capability lookup: what `cptr` in the CSpace root slot
/// `cspace` resolved to while the capability system was at `generation`.
/// Valid only while that generation is current (all zeroes, what a fresh
/// TCB holds, is never valid: generations start at 1). Every field is a
/// word, so reading it never needs a byte-wise copy (aarch64 builds with
/// strict alignment, where an odd-sized copy becomes a call to `memcpy`).
#[derive(Clone, Copy, FromBytes)]
#[repr(C)]
pub struct LookupCache {
    /// `objects`' capability generation when it was filled.
    pub generation: u64,
    /// The capability pointer it answers for.
    pub cptr: u64,
    /// The CSpace root slot it answers for.
    pub cspace: u64,
    /// The capability's kind (`caps::ObjectKind` number).
    pub kind: u64,
    /// The capability's rights bits.
    pub rights: u64,
    /// The object's physical address; `u64::MAX` if it has no memory.
    pub paddr: u64,
    /// The object.
    pub object: u64,
    /// The capability's badge.
    pub badge: u64,
    /// Non-zero once [`reply_recv_fast`] found the object registered with
    /// the scheduler. It stays registered while this entry is current: only
    /// a dead object is unregistered (`reconcile`), and a death changes a
    /// capability, which invalidates the entry.
    pub registered: u64,
    /// The slot the capability is in (`caps::SlotId` number), for an
    /// invocation's fast path (`objects::cached_slot`).
    pub slot: u64,
    /// An IoUserTable's state, for `IoUserTable.Invalidate`'s fast path
    /// (`objects::cached_user_table`): its IoSpace's object number + 1 (0
    /// once that IoSpace is destroyed) and its root IPA. Meaningless for
    /// every other kind.
    pub table: [u64; 2],
}

impl LookupCache {
    /// Never current (generation 0).
    pub const EMPTY: LookupCache = LookupCache {
        generation: 0,
        cptr: 0,
        cspace: 0,
        kind: 0,
        rights: 0,
        paddr: u64::MAX,
        object: 0,
        badge: 0,
        registered: 0,
        slot: 0,
        table: [0; 2],
    };
}

const _: () = assert!(size_of::<Tcb>() <= 2048);

/// A queue of threads linked through `Tcb::next`: an endpoint's 16 bytes.
#[derive(FromBytes)]
#[repr(C)]
struct Queue {
    head: u64,
    tail: u64,
}

/// A notification's 32 bytes.
#[derive(FromBytes)]
#[repr(C)]
struct NotificationState {
    word: u64,
    waiters: Queue,
}

impl mem::Object for Tcb {
    fn claimed() -> &'static AtomicBool {
        static CLAIMED: AtomicBool = AtomicBool::new(false);
        &CLAIMED
    }
}

impl mem::Object for Queue {
    fn claimed() -> &'static AtomicBool {
        static CLAIMED: AtomicBool = AtomicBool::new(false);
        &CLAIMED
    }
}

impl mem::Object for NotificationState {
    fn claimed() -> &'static AtomicBool {
        static CLAIMED: AtomicBool = AtomicBool::new(false);
        &CLAIMED
    }
}

/// The owner of every TCB's state ([`Tcb`]).
type Tcbs = mem::Objects<Tcb>;

/// The one owner of every thread's, endpoint's and notification's kernel
/// state (`mem`'s obligation 3 as a type rule): boot claims it once
/// ([`Threads::claim`]) and hands it to [`run`], which lends it to each
/// system call. Every borrow of a [`Tcb`] is tied to `&mut` of it
/// ([`Threads::tcb`]), so two live borrows of TCBs (of one thread or of
/// two) do not compile: IPC between two threads copies the message out of
/// one borrow before it takes the next, and a capability transfer borrows
/// the sender and the receiver together through `mem::Objects::pair`
/// (two different TCBs). Endpoint queues and notification words have
/// owners of their own beside it, so an endpoint's queue stays borrowed
/// while the threads on it are visited (`Queue::push` and `pop` take the
/// TCB owner). Zero-sized.
pub struct Threads {
    tcbs: Tcbs,
    endpoints: mem::Objects<Queue>,
    notifications: mem::Objects<NotificationState>,
}

impl Threads {
    /// The owner, once (boot); `None` when it was claimed before.
    pub fn claim() -> Option<Threads> {
        Some(Threads {
            tcbs: mem::Objects::claim()?,
            endpoints: mem::Objects::claim()?,
            notifications: mem::Objects::claim()?,
        })
    }

    /// The TCB at physical address `pa`, a live TCB object, borrowed while
    /// `self` is.
    #[inline(always)]
    pub fn tcb(&mut self, pa: u64) -> &mut Tcb {
        self.tcbs.get(pa)
    }
}

impl Queue {
    fn push(&mut self, tcbs: &mut Tcbs, thread: u64) {
        tcbs.get(thread).next = 0;
        if self.tail == 0 {
            self.head = thread;
        } else {
            tcbs.get(self.tail).next = thread;
        }
        self.tail = thread;
    }

    fn pop(&mut self, tcbs: &mut Tcbs) -> Option<u64> {
        let head = self.head;
        if head == 0 {
            return None;
        }
        self.head = tcbs.get(head).next;
        if self.head == 0 {
            self.tail = 0;
        }
        tcbs.get(head).next = 0;
        Some(head)
    }

    fn remove(&mut self, tcbs: &mut Tcbs, thread: u64) {
        let mut previous = 0;
        let mut current = self.head;
        while current != 0 {
            let next = tcbs.get(current).next;
            if current == thread {
                if previous == 0 {
                    self.head = next;
                } else {
                    tcbs.get(previous).next = next;
                }
                if self.tail == thread {
                    self.tail = previous;
                }
                tcbs.get(thread).next = 0;
                return;
            }
            previous = current;
            current = next;
        }
    }
}

/// Kernel objects that hold kernel state, checked after deletes.
struct Registered {
    object: ObjectId,
    kind: caps::ObjectKind,
    paddr: u64,
}

/// Most objects with kernel state at once.
const MAX_REGISTERED: usize = 256;

/// The scheduler's state.
pub struct Scheduler {
    ready: [Queue; 256],
    /// Bit `p` set: priority `p` has a ready thread.
    bitmap: [u64; 4],
    registry: heapless::Vec<Registered, MAX_REGISTERED>,
    /// Per object id, where it may be in `registry` (index + 1; 0: not
    /// known). A hint, checked before use, that spares `register` — called
    /// by every IPC — a scan of the registry.
    registry_hint: [u16; mem::OBJECTS],
}

/// The one scheduler.
pub static SCHEDULER: spin::Mutex<Scheduler> = spin::Mutex::new(Scheduler {
    ready: [const { Queue { head: 0, tail: 0 } }; 256],
    bitmap: [0; 4],
    registry: heapless::Vec::new(),
    registry_hint: [0; mem::OBJECTS],
});

/// Time slice of a thread, in timer ticks.
const TIME_SLICE: u32 = 5_000_000;

impl Scheduler {
    fn make_ready(&mut self, tcbs: &mut Tcbs, thread: u64) {
        let t = tcbs.get(thread);
        t.state = state::READY;
        t.waiting_on = 0;
        let priority = usize::from(t.priority);
        self.ready[priority].push(tcbs, thread);
        self.bitmap[priority / 64] |= 1 << (priority % 64);
    }

    fn unready(&mut self, tcbs: &mut Tcbs, thread: u64) {
        let priority = usize::from(tcbs.get(thread).priority);
        // The running thread stays at the head of its queue, and it is the
        // one the IPC paths take off: no walk for it.
        if self.ready[priority].head == thread {
            self.ready[priority].pop(tcbs);
        } else {
            self.ready[priority].remove(tcbs, thread);
        }
        if self.ready[priority].head == 0 {
            self.bitmap[priority / 64] &= !(1 << (priority % 64));
        }
    }

    /// The thread to run: the head of the highest non-empty priority.
    fn pick(&self) -> Option<u64> {
        (0..4).rev().find_map(|word| {
            let bits = self.bitmap[word];
            (bits != 0).then(|| {
                let priority = word * 64 + 63 - bits.leading_zeros() as usize;
                self.ready[priority].head
            })
        })
    }

    /// Moves the running thread to the back of its priority.
    fn rotate(&mut self, tcbs: &mut Tcbs, thread: u64) {
        if tcbs.get(thread).state == state::READY {
            self.unready(tcbs, thread);
            self.make_ready(tcbs, thread);
        }
    }

    /// [`Self::register`] out of line, for the callers off the IPC and
    /// notification paths (thread setup, `Resume`, fault handlers, IRQ
    /// notifications): the registry scan was inlined into 12 callers
    /// (~200 bytes each; kernel/README.md, "Size"), and `send`,
    /// `receive`, `signal` and `wait` keep it inline (out of line there,
    /// the call made them save registers: `Signal` +5 instructions).
    #[inline(never)]
    fn register_cold(
        &mut self,
        object: ObjectId,
        kind: caps::ObjectKind,
        paddr: u64,
    ) -> Result<(), Error> {
        self.register(object, kind, paddr)
    }

    fn register(
        &mut self,
        object: ObjectId,
        kind: caps::ObjectKind,
        paddr: u64,
    ) -> Result<(), Error> {
        if self.is_registered(object, paddr) {
            return Ok(());
        }
        if let Some(index) = self.registry.iter().position(|r| r.paddr == paddr) {
            self.set_hint(index);
            return Ok(());
        }
        self.registry
            .push(Registered {
                object,
                kind,
                paddr,
            })
            .map_err(|_| Error::ObjectTableFull)?;
        self.set_hint(self.registry.len() - 1);
        Ok(())
    }

    /// Whether `object` (at `paddr`) is registered, by its hint alone (a
    /// `false` may be wrong; callers then take the general path).
    fn is_registered(&self, object: ObjectId, paddr: u64) -> bool {
        self.registry_hint
            .get(object.0 as usize)
            .and_then(|&hint| usize::from(hint).checked_sub(1))
            .and_then(|index| self.registry.get(index))
            .is_some_and(|r| r.object == object && r.paddr == paddr)
    }

    /// Records that `registry[index]` is where its object is.
    fn set_hint(&mut self, index: usize) {
        let object = self.registry[index].object.0 as usize;
        if let (Some(hint), Ok(value)) =
            (self.registry_hint.get_mut(object), u16::try_from(index + 1))
        {
            *hint = value;
        }
    }

    /// Drops `registry[index]`, keeping the hints right.
    fn unregister(&mut self, index: usize) {
        let removed = self.registry.swap_remove(index);
        if let Some(hint) = self.registry_hint.get_mut(removed.object.0 as usize) {
            *hint = 0;
        }
        if index < self.registry.len() {
            self.set_hint(index);
        }
    }

    /// Every registered thread (TCB physical addresses).
    fn threads(&self) -> heapless::Vec<u64, MAX_REGISTERED> {
        // Pushed, not `collect()`ed: heapless's `from_iter` `expect`s, which
        // keeps `core::fmt` code in the kernel (README, "Size"); the registry
        // holds at most MAX_REGISTERED.
        let mut threads = heapless::Vec::new();
        for r in self
            .registry
            .iter()
            .filter(|r| r.kind == caps::ObjectKind::Tcb)
        {
            let _ = threads.push(r.paddr);
        }
        threads
    }

    /// Takes `thread` off whatever it is queued on.
    fn detach(&mut self, threads: &mut Threads, thread: u64) {
        let Threads {
            tcbs,
            endpoints,
            notifications,
        } = threads;
        let t = tcbs.get(thread);
        let (state, waiting_on) = (t.state, t.waiting_on);
        match state {
            state::READY => self.unready(tcbs, thread),
            state::BLOCKED_SEND | state::BLOCKED_RECV => {
                endpoints.get(waiting_on).remove(tcbs, thread)
            }
            state::BLOCKED_WAIT => notifications.get(waiting_on).waiters.remove(tcbs, thread),
            _ => {}
        }
        let t = tcbs.get(thread);
        t.state = state::INACTIVE;
        t.waiting_on = 0;
    }
}

/// Registers the root task's TCB (`tcb`: object, physical address) and
/// makes it ready, configured like any thread: its address space `vspace`,
/// `cspace` (the kernel slot of its CNode capability) and its IPC buffer
/// (Frame object, physical address).
pub fn start_root_thread(
    threads: &mut Threads,
    (object, paddr): (ObjectId, u64),
    vspace: u64,
    (cspace, buffer): (u32, (ObjectId, u64)),
    context: UserContext,
    priority: u8,
) -> Result<(), Error> {
    let mut scheduler = SCHEDULER.lock();
    scheduler.register_cold(object, caps::ObjectKind::Tcb, paddr)?;
    scheduler.register_cold(buffer.0, caps::ObjectKind::Frame, buffer.1)?;
    let t = threads.tcb(paddr);
    t.context = context;
    t.priority = priority;
    t.vspace = vspace;
    t.cspace_slot = cspace;
    t.ipc_buffer = buffer.1;
    scheduler.make_ready(&mut threads.tcbs, paddr);
    Ok(())
}

/// Whether the thread at `paddr` has everything it runs with: an address
/// space, a CSpace and an IPC buffer. No thread runs without all three
/// (there is no default to fall back on).
pub fn configured(threads: &mut Threads, paddr: u64) -> bool {
    let t = threads.tcb(paddr);
    t.vspace != 0 && t.cspace_slot != 0 && t.ipc_buffer != 0
}

/// `Tcb.WriteRegisters` on the TCB at `paddr`: it starts at `pc` with stack
/// `sp` and first argument `first` (checked to be user addresses).
pub fn write_registers(threads: &mut Threads, paddr: u64, pc: u64, sp: u64, first: u64) {
    let mut context = UserContext::new_user(pc, sp);
    context.set_start_arguments(first, 0);
    threads.tcb(paddr).context = context;
}

/// `Tcb.SetPriority` on the TCB at `paddr`.
pub fn set_priority(threads: &mut Threads, paddr: u64, priority: u8) {
    let tcbs = &mut threads.tcbs;
    let mut scheduler = SCHEDULER.lock();
    let ready = tcbs.get(paddr).state == state::READY;
    if ready {
        scheduler.unready(tcbs, paddr);
    }
    tcbs.get(paddr).priority = priority;
    if ready {
        scheduler.make_ready(tcbs, paddr);
    }
}

/// `Tcb.Resume` on the TCB `object` at `paddr`, [`configured`]: it is
/// registered and made ready unless it is already running or blocked.
/// Errors: `ObjectTableFull` (the registry is full).
pub fn resume(threads: &mut Threads, object: ObjectId, paddr: u64) -> Result<(), Error> {
    let tcbs = &mut threads.tcbs;
    let mut scheduler = SCHEDULER.lock();
    scheduler.register_cold(object, caps::ObjectKind::Tcb, paddr)?;
    if tcbs.get(paddr).state == state::INACTIVE {
        scheduler.make_ready(tcbs, paddr);
    }
    Ok(())
}

/// Whether the registry has room for every object of `objects` (object,
/// physical address) it does not hold yet: `Tcb.Configure`, `Resume`,
/// `SetFaultHandler` and `IrqHandler.SetNotification` check it in decode,
/// so their perform's registrations
/// find room (decode and perform run under one hold of the capability
/// lock, and nothing else registers in between). Errors: `ObjectTableFull`.
pub fn registry_room(objects: &[(ObjectId, u64)]) -> Result<(), Error> {
    let scheduler = SCHEDULER.lock();
    let missing = objects
        .iter()
        .enumerate()
        .filter(|&(i, &(object, paddr))| {
            !scheduler.is_registered(object, paddr)
                && !scheduler.registry.iter().any(|r| r.paddr == paddr)
                && !objects[..i].iter().any(|&(_, earlier)| earlier == paddr)
        })
        .count();
    if scheduler.registry.len() + missing > scheduler.registry.capacity() {
        return Err(Error::ObjectTableFull);
    }
    Ok(())
}

/// `Tcb.Suspend` on the TCB at `paddr`: it stops, taken off any queue.
pub fn suspend(threads: &mut Threads, paddr: u64) {
    SCHEDULER.lock().detach(threads, paddr);
}

/// `Tcb.Configure`: the TCB at `paddr` runs in the address space rooted at `root`.
pub fn set_address_space(threads: &mut Threads, paddr: u64, root: u64) {
    threads.tcb(paddr).vspace = root;
}

/// An address space's root died: its threads stop.
pub fn forget_address_space(threads: &mut Threads, root: u64) {
    let mut scheduler = SCHEDULER.lock();
    for thread in scheduler.threads() {
        if threads.tcb(thread).vspace == root {
            scheduler.detach(threads, thread);
            threads.tcb(thread).vspace = 0;
        }
    }
}

/// After a delete or revoke: every thread whose kernel-held CSpace slot no
/// longer holds a CNode capability (`holds_cnode(slot)` is false: its CNode
/// capability was revoked) loses its CSpace and stops, so a later
/// `Tcb.Configure` reusing the slot never hands it another thread's.
pub fn drop_lost_cspaces(threads: &mut Threads, holds_cnode: impl Fn(u32) -> bool) {
    let mut scheduler = SCHEDULER.lock();
    for thread in scheduler.threads() {
        let slot = threads.tcb(thread).cspace_slot;
        if slot != 0 && !holds_cnode(slot) {
            scheduler.detach(threads, thread);
            threads.tcb(thread).cspace_slot = 0;
        }
    }
}

/// `Tcb.SetFaultHandler`: the TCB `thread` (object, physical address)
/// sends its faults to `endpoint`. Both are registered, so the endpoint's
/// death reaches the thread even before it ever runs.
pub fn set_fault_handler(
    threads: &mut Threads,
    (object, paddr): (ObjectId, u64),
    endpoint: &Target,
) -> Result<(), Error> {
    let mut scheduler = SCHEDULER.lock();
    scheduler.register_cold(object, caps::ObjectKind::Tcb, paddr)?;
    scheduler.register_cold(endpoint.object, caps::ObjectKind::Endpoint, endpoint.paddr)?;
    let t = threads.tcb(paddr);
    t.fault_endpoint = endpoint.paddr;
    t.fault_badge = endpoint.badge;
    Ok(())
}

/// Turns a CPU exception of `thread` into a message to its fault handler, as
/// if the thread had called it. Returns false if it has no handler.
fn deliver_fault(
    scheduler: &mut Scheduler,
    threads: &mut Threads,
    thread: u64,
    mrs: [u64; 4],
) -> bool {
    let (tcbs, endpoints) = (&mut threads.tcbs, &mut threads.endpoints);
    let endpoint = tcbs.get(thread).fault_endpoint;
    if endpoint == 0 {
        return false;
    }
    let t = tcbs.get(thread);
    t.faulted = 1;
    t.fault = mrs;
    t.send_badge = t.fault_badge;
    let queue = endpoints.get(endpoint);
    let receiver = (queue.head != 0 && tcbs.get(queue.head).state == state::BLOCKED_RECV)
        .then(|| queue.pop(tcbs))
        .flatten();
    scheduler.unready(tcbs, thread);
    match receiver {
        Some(receiver) => {
            transfer(tcbs, thread, receiver);
            scheduler.make_ready(tcbs, receiver);
            tcbs.get(receiver).reply_to = thread;
            tcbs.get(thread).state = state::BLOCKED_REPLY;
        }
        None => {
            let t = tcbs.get(thread);
            t.state = state::BLOCKED_SEND;
            t.calling = 1;
            t.waiting_on = endpoint;
            queue.push(tcbs, thread);
        }
    }
    true
}

/// After a delete or revoke: tears down the kernel state of every
/// registered object the capability model no longer has. Returns the
/// kernel-held CSpace slots of the threads that died, for the caller to free.
pub fn reconcile(
    threads: &mut Threads,
    is_live: impl Fn(ObjectId, caps::ObjectKind, u64) -> bool,
) -> heapless::Vec<u32, 16> {
    let mut freed = heapless::Vec::new();
    let mut scheduler = SCHEDULER.lock();
    let mut index = 0;
    while index < scheduler.registry.len() {
        let entry = &scheduler.registry[index];
        let (object, kind, paddr) = (entry.object, entry.kind, entry.paddr);
        if is_live(object, kind, paddr) {
            index += 1;
            continue;
        }
        match kind {
            caps::ObjectKind::Tcb => {
                scheduler.detach(threads, paddr);
                let slot = core::mem::take(&mut threads.tcb(paddr).cspace_slot);
                if slot != 0 {
                    let _ = freed.push(slot);
                }
                // No server may later reply into this memory.
                for other in scheduler
                    .registry
                    .iter()
                    .filter(|r| r.kind == caps::ObjectKind::Tcb && r.paddr != paddr)
                {
                    if threads.tcb(other.paddr).reply_to == paddr && !keeps_dangling_references() {
                        threads.tcb(other.paddr).reply_to = 0;
                    }
                }
                // A thread waiting for this one's reply will never get it.
                let caller = core::mem::take(&mut threads.tcb(paddr).reply_to);
                if caller != 0
                    && caller != paddr
                    && threads.tcb(caller).state == state::BLOCKED_REPLY
                {
                    reply_error(&mut threads.tcbs, caller, Error::DeadObject);
                    scheduler.make_ready(&mut threads.tcbs, caller);
                }
            }
            caps::ObjectKind::Endpoint => {
                for other in scheduler
                    .registry
                    .iter()
                    .filter(|r| r.kind == caps::ObjectKind::Tcb)
                {
                    if threads.tcb(other.paddr).fault_endpoint == paddr
                        && !keeps_dangling_references()
                    {
                        threads.tcb(other.paddr).fault_endpoint = 0;
                    }
                }
                while let Some(thread) = threads.endpoints.get(paddr).pop(&mut threads.tcbs) {
                    threads.tcb(thread).context.set_reply(
                        u64::from(Error::DeadObject.code()),
                        0,
                        0,
                        [0; 4],
                    );
                    scheduler.make_ready(&mut threads.tcbs, thread);
                }
            }
            caps::ObjectKind::Notification => {
                while let Some(thread) = threads
                    .notifications
                    .get(paddr)
                    .waiters
                    .pop(&mut threads.tcbs)
                {
                    threads.tcb(thread).context.set_reply(
                        u64::from(Error::DeadObject.code()),
                        0,
                        0,
                        [0; 4],
                    );
                    scheduler.make_ready(&mut threads.tcbs, thread);
                }
            }
            caps::ObjectKind::Frame => {
                // A dead IPC buffer: its threads stop until configured again.
                for thread in scheduler.threads() {
                    if threads.tcb(thread).ipc_buffer != paddr {
                        continue;
                    }
                    scheduler.detach(threads, thread);
                    threads.tcb(thread).ipc_buffer = 0;
                }
            }
            _ => {}
        }
        scheduler.unregister(index);
    }
    freed
}

/// `seed=dangling-references` (test kernels only): the clean-ups of
/// references to dead objects are skipped.
fn keeps_dangling_references() -> bool {
    crate::testing::seeds::planted(crate::testing::seeds::Seed::DanglingReferences)
}

/// Names the thread at `paddr` (`DebugNameThread`).
pub fn set_name(threads: &mut Threads, paddr: u64, name: [u8; 32]) {
    threads.tcb(paddr).name = name;
}

/// What the console and the capability dump call the thread at `paddr`:
/// its name (up to the first NUL) when it is UTF-8, else `None`.
pub fn name(threads: &mut Threads, paddr: u64) -> Option<heapless::String<32>> {
    let bytes = threads.tcb(paddr).name;
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = core::str::from_utf8(&bytes[..end]).ok()?;
    (!text.is_empty()).then(|| heapless::String::try_from(text).ok())?
}

/// The root table of the address space the thread at `paddr` runs in (0:
/// none yet).
#[cfg(feature = "cap-dump")]
pub fn vspace_of(threads: &mut Threads, paddr: u64) -> u64 {
    threads.tcb(paddr).vspace
}

/// `Tcb.Configure`'s thread-side part for the TCB `thread` (object,
/// physical address): CSpace slot and IPC buffer frame. The thread and its
/// buffer are registered, so every death they depend on reaches the
/// thread even before it ever runs (`reconcile`).
pub fn set_cspace_and_buffer(
    threads: &mut Threads,
    (object, paddr): (ObjectId, u64),
    cspace_slot: u32,
    buffer: (ObjectId, u64),
) -> Result<u32, Error> {
    let mut scheduler = SCHEDULER.lock();
    scheduler.register_cold(object, caps::ObjectKind::Tcb, paddr)?;
    scheduler.register_cold(buffer.0, caps::ObjectKind::Frame, buffer.1)?;
    let t = threads.tcb(paddr);
    t.ipc_buffer = buffer.1;
    Ok(core::mem::replace(&mut t.cspace_slot, cspace_slot))
}

/// What a message-passing system call found for its capability.
#[derive(Clone, Copy)]
pub struct Target {
    /// The object.
    pub object: ObjectId,
    /// Its physical address.
    pub paddr: u64,
    /// The capability's badge.
    pub badge: u64,
    /// The capability holds the grant right (may send capabilities).
    pub grant: bool,
}

fn reply_error(tcbs: &mut Tcbs, thread: u64, error: Error) {
    tcbs.get(thread)
        .context
        .set_reply(u64::from(error.code()), 0, 0, [0; 4]);
}

/// Delivers the message in `sender`'s registers (or its fault message) to
/// `receiver`.
fn transfer(tcbs: &mut Tcbs, sender: u64, receiver: u64) {
    if tcbs.get(sender).faulted != 0 {
        let (badge, mrs) = (tcbs.get(sender).send_badge, tcbs.get(sender).fault);
        let info = MessageInfo::new(abi::FAULT_LABEL, 4).to_word();
        tcbs.get(receiver).context.set_reply(0, badge, info, mrs);
        return;
    }
    let context = &tcbs.get(sender).context;
    let info = MessageInfo::from_word(context.syscall_arg(1)).unwrap_or_default();
    let info = MessageInfo::new(info.label, info.length.min(4));
    let mrs = [
        context.syscall_arg(2),
        context.syscall_arg(3),
        context.syscall_arg(4),
        context.syscall_arg(5),
    ];
    let wanted = MessageInfo::from_word(context.syscall_arg(1)).map_or(0, |i| i.extra_caps);
    let badge = tcbs.get(sender).send_badge;
    // At most one capability per message, into the receiver's receive slot,
    // and only through an endpoint capability with the grant right.
    let moved = if wanted > 0 && tcbs.get(sender).send_grant != 0 {
        let moved = tcbs
            .pair(sender, receiver)
            .zip(ABOVE.get())
            .is_some_and(|((from, to), above)| (above.transfer_capability)(from, to));
        u8::from(moved)
    } else {
        0
    };
    let info = MessageInfo {
        extra_caps: moved,
        ..info
    };
    tcbs.get(receiver)
        .context
        .set_reply(0, badge, info.to_word(), mrs);
}

/// `Send` (`call` false) or `Call` on an endpoint, by the running `thread`.
pub fn send(
    threads: &mut Threads,
    thread: u64,
    endpoint: &Target,
    call: bool,
) -> Result<(), Error> {
    let (tcbs, endpoints) = (&mut threads.tcbs, &mut threads.endpoints);
    let mut scheduler = SCHEDULER.lock();
    scheduler.register(endpoint.object, caps::ObjectKind::Endpoint, endpoint.paddr)?;
    if MessageInfo::from_word(tcbs.get(thread).context.syscall_arg(1)).is_err() {
        return Err(Error::InvalidMessage);
    }
    tcbs.get(thread).send_badge = endpoint.badge;
    tcbs.get(thread).send_grant = u8::from(endpoint.grant);
    let queue = endpoints.get(endpoint.paddr);
    let receiver = (queue.head != 0 && tcbs.get(queue.head).state == state::BLOCKED_RECV)
        .then(|| queue.pop(tcbs))
        .flatten();
    match receiver {
        Some(receiver) => {
            transfer(tcbs, thread, receiver);
            scheduler.make_ready(tcbs, receiver);
            if call {
                tcbs.get(receiver).reply_to = thread;
                scheduler.unready(tcbs, thread);
                tcbs.get(thread).state = state::BLOCKED_REPLY;
            } else {
                tcbs.get(thread).context.set_reply(0, 0, 0, [0; 4]);
            }
        }
        None => {
            scheduler.unready(tcbs, thread);
            let t = tcbs.get(thread);
            t.state = state::BLOCKED_SEND;
            t.calling = u8::from(call);
            t.waiting_on = endpoint.paddr;
            queue.push(tcbs, thread);
        }
    }
    Ok(())
}

/// The two halves of every client/server round trip, when nothing unusual
/// is going on: `Call` on an endpoint a receiver already waits on, and
/// `ReplyRecv` that answers a caller (not a fault) and finds no sender
/// queued. The effect is exactly [`send`]'s and [`receive`]'s for these
/// cases, in fewer steps: one parse of the message word, no registry
/// lookup for `Call` (the waiting receiver registered the endpoint), the
/// registers copied once. Returns `false`, having changed nothing, when
/// the general path must run (a message with capabilities, no partner
/// waiting, a fault reply, a sender queued, an unregistered endpoint).
pub fn call_fast(threads: &mut Threads, thread: u64, endpoint: &Target) -> bool {
    let (tcbs, endpoints) = (&mut threads.tcbs, &mut threads.endpoints);
    let mut scheduler = SCHEDULER.lock();
    // Read under the lock, just before it is written (measured: read
    // before it, the registers took a detour through the stack).
    let Some((info, mrs)) = plain_message(tcbs, thread) else {
        return false;
    };
    let queue = endpoints.get(endpoint.paddr);
    let receiver = queue.head;
    if receiver == 0 || tcbs.get(receiver).state != state::BLOCKED_RECV {
        return false;
    }
    queue.pop(tcbs);
    tcbs.get(receiver)
        .context
        .set_reply(0, endpoint.badge, info, mrs);
    tcbs.get(receiver).reply_to = thread;
    scheduler.make_ready(tcbs, receiver);
    let t = tcbs.get(thread);
    t.send_badge = endpoint.badge;
    t.send_grant = u8::from(endpoint.grant);
    scheduler.unready(tcbs, thread);
    tcbs.get(thread).state = state::BLOCKED_REPLY;
    true
}

/// The message `thread` sends, if the fast path can carry it: a valid
/// message word without capabilities, as the receiver gets it (label and at
/// most four registers), and the four message registers.
fn plain_message(tcbs: &mut Tcbs, thread: u64) -> Option<(u64, [u64; 4])> {
    let context = &tcbs.get(thread).context;
    let info = MessageInfo::from_word(context.syscall_arg(1)).ok()?;
    if info.extra_caps != 0 {
        return None;
    }
    let word = MessageInfo::new(info.label, info.length.min(4)).to_word();
    Some((word, [2, 3, 4, 5].map(|i| context.syscall_arg(i))))
}

/// `ReplyRecv`'s fast path; see [`call_fast`].
pub fn reply_recv_fast(threads: &mut Threads, thread: u64, endpoint: &Target) -> bool {
    let (tcbs, endpoints) = (&mut threads.tcbs, &mut threads.endpoints);
    let caller = tcbs.get(thread).reply_to;
    if caller == 0
        || tcbs.get(caller).state != state::BLOCKED_REPLY
        || tcbs.get(caller).faulted != 0
    {
        return false;
    }
    let mut scheduler = SCHEDULER.lock();
    // The registry is asked once per cached lookup of the endpoint: the
    // caller (`syscall`) just looked it up through `thread`'s cache.
    let cache = &tcbs.get(thread).lookup_cache;
    let known = cache.registered != 0 && cache.paddr == endpoint.paddr;
    if !known {
        if !scheduler.is_registered(endpoint.object, endpoint.paddr) {
            return false;
        }
        tcbs.get(thread).lookup_cache.registered = 1;
    }
    let queue = endpoints.get(endpoint.paddr);
    if queue.head != 0 && tcbs.get(queue.head).state == state::BLOCKED_SEND {
        return false;
    }
    let Some((info, mrs)) = plain_message(tcbs, thread) else {
        return false;
    };
    let t = tcbs.get(thread);
    t.reply_to = 0;
    let badge = t.send_badge;
    tcbs.get(caller).context.set_reply(0, badge, info, mrs);
    scheduler.make_ready(tcbs, caller);
    scheduler.unready(tcbs, thread);
    let t = tcbs.get(thread);
    t.state = state::BLOCKED_RECV;
    t.waiting_on = endpoint.paddr;
    queue.push(tcbs, thread);
    true
}

/// `Recv` on an endpoint by the running `thread` (after replying, for `ReplyRecv`).
pub fn receive(
    threads: &mut Threads,
    thread: u64,
    endpoint: &Target,
    reply_first: bool,
) -> Result<(), Error> {
    let (tcbs, endpoints) = (&mut threads.tcbs, &mut threads.endpoints);
    let mut scheduler = SCHEDULER.lock();
    scheduler.register(endpoint.object, caps::ObjectKind::Endpoint, endpoint.paddr)?;
    if reply_first {
        let caller = core::mem::take(&mut tcbs.get(thread).reply_to);
        if caller != 0 && tcbs.get(caller).state == state::BLOCKED_REPLY {
            if tcbs.get(caller).faulted != 0 {
                // A fault reply: MR0 = 0 resumes the thread with whatever
                // registers it now has; anything else stops it.
                tcbs.get(caller).faulted = 0;
                if tcbs.get(thread).context.syscall_arg(2) == 0 {
                    scheduler.make_ready(tcbs, caller);
                } else {
                    tcbs.get(caller).state = state::INACTIVE;
                }
            } else {
                transfer(tcbs, thread, caller);
                scheduler.make_ready(tcbs, caller);
            }
        }
    }
    let queue = endpoints.get(endpoint.paddr);
    let sender = (queue.head != 0 && tcbs.get(queue.head).state == state::BLOCKED_SEND)
        .then(|| queue.pop(tcbs))
        .flatten();
    match sender {
        Some(sender) => {
            transfer(tcbs, sender, thread);
            if tcbs.get(sender).calling != 0 {
                tcbs.get(sender).state = state::BLOCKED_REPLY;
                tcbs.get(sender).waiting_on = 0;
                tcbs.get(thread).reply_to = sender;
            } else {
                tcbs.get(sender).context.set_reply(0, 0, 0, [0; 4]);
                scheduler.make_ready(tcbs, sender);
            }
        }
        None => {
            scheduler.unready(tcbs, thread);
            let t = tcbs.get(thread);
            t.state = state::BLOCKED_RECV;
            t.waiting_on = endpoint.paddr;
            queue.push(tcbs, thread);
        }
    }
    Ok(())
}

/// `Signal` a notification.
pub fn signal(threads: &mut Threads, notification_target: &Target) -> Result<(), Error> {
    let (tcbs, notifications) = (&mut threads.tcbs, &mut threads.notifications);
    let mut scheduler = SCHEDULER.lock();
    scheduler.register(
        notification_target.object,
        caps::ObjectKind::Notification,
        notification_target.paddr,
    )?;
    let n = notifications.get(notification_target.paddr);
    n.word |= notification_target.badge.max(1);
    if let Some(waiter) = n.waiters.pop(tcbs) {
        let word = core::mem::take(&mut n.word);
        tcbs.get(waiter).context.set_reply(0, word, 0, [0; 4]);
        scheduler.make_ready(tcbs, waiter);
    }
    Ok(())
}

/// `Wait` on a notification by the running `thread`.
pub fn wait(threads: &mut Threads, thread: u64, notification_target: &Target) -> Result<(), Error> {
    let (tcbs, notifications) = (&mut threads.tcbs, &mut threads.notifications);
    let mut scheduler = SCHEDULER.lock();
    scheduler.register(
        notification_target.object,
        caps::ObjectKind::Notification,
        notification_target.paddr,
    )?;
    let n = notifications.get(notification_target.paddr);
    if n.word != 0 {
        let word = core::mem::take(&mut n.word);
        tcbs.get(thread).context.set_reply(0, word, 0, [0; 4]);
        return Ok(());
    }
    scheduler.unready(tcbs, thread);
    let t = tcbs.get(thread);
    t.state = state::BLOCKED_WAIT;
    t.waiting_on = notification_target.paddr;
    n.waiters.push(tcbs, thread);
    Ok(())
}

/// An interrupt line a user handler owns.
struct IrqBinding {
    /// The IrqHandler object.
    handler: ObjectId,
    /// The line (architecture's numbering) and the id it arrives as.
    line: u16,
    id: u32,
    /// Where it is delivered (set by `IrqHandler.SetNotification`).
    notification: Option<Target>,
    /// The IoDevice (object, requester id) an MSI line was bound to by
    /// `IrqHandler.MsiMessage`: when it dies, so does the line's
    /// interrupt remapping entry.
    msi_device: Option<(ObjectId, u32)>,
}

/// Lines owned by user handlers.
static IRQS: spin::Mutex<heapless::Vec<IrqBinding, 32>> = spin::Mutex::new(heapless::Vec::new());

/// Calls `visit(handler, line, msi_device)` for every line a user handler
/// owns (the abstraction check's view of the IRQ bindings).
#[cfg(feature = "fuzz-checks")]
pub fn irq_bindings(mut visit: impl FnMut(ObjectId, u16, Option<(ObjectId, u32)>)) {
    for b in IRQS.lock().iter() {
        visit(b.handler, b.line, b.msi_device);
    }
}

/// Whether [`bind_irq`] has room for one more line, changing nothing.
/// Errors: `ObjectTableFull`.
pub fn irq_binding_room() -> Result<(), Error> {
    if IRQS.lock().is_full() {
        return Err(Error::ObjectTableFull);
    }
    Ok(())
}

/// `IrqControl.Get` made `handler` for `line`: the line stays masked until
/// it has a notification. The room was checked by [`irq_binding_room`]
/// under the capability lock held since (bindings are added and dropped
/// only under it: here and in [`reconcile_irqs`]).
pub fn bind_irq(handler: ObjectId, line: u16) {
    arch::irq_line_enable(line, false);
    let _ = IRQS.lock().push(IrqBinding {
        handler,
        line,
        id: arch::irq_line_id(line),
        notification: None,
        msi_device: None,
    });
}

/// `IrqHandler.MsiMessage` bound `handler`'s MSI line to the IoDevice
/// `device` (requester id `rid`).
pub fn set_msi_device(handler: ObjectId, device: ObjectId, rid: u32) -> Result<(), Error> {
    let mut irqs = IRQS.lock();
    let binding = irqs
        .iter_mut()
        .find(|b| b.handler == handler)
        .ok_or(Error::DeadObject)?;
    binding.msi_device = Some((device, rid));
    Ok(())
}

/// `IrqHandler.SetNotification`: deliver the line to `notification`, and unmask it.
pub fn set_irq_notification(handler: ObjectId, notification: Target) -> Result<(), Error> {
    SCHEDULER.lock().register_cold(
        notification.object,
        caps::ObjectKind::Notification,
        notification.paddr,
    )?;
    let mut irqs = IRQS.lock();
    let binding = irqs
        .iter_mut()
        .find(|b| b.handler == handler)
        .ok_or(Error::DeadObject)?;
    binding.notification = Some(notification);
    arch::irq_line_enable(binding.line, true);
    Ok(())
}

/// `IrqHandler.Ack`: the handler is done with the last interrupt; unmask.
pub fn ack_irq(handler: ObjectId) -> Result<(), Error> {
    let irqs = IRQS.lock();
    let binding = irqs
        .iter()
        .find(|b| b.handler == handler)
        .ok_or(Error::DeadObject)?;
    if binding.notification.is_some() {
        arch::irq_line_enable(binding.line, true);
    }
    Ok(())
}

/// After a delete or revoke: lines whose handler died are masked and freed;
/// a dead notification stops receiving.
pub fn reconcile_irqs(
    handler_alive: impl Fn(ObjectId) -> bool,
    notification_alive: impl Fn(&Target) -> bool,
    device_alive: impl Fn(ObjectId, u32) -> bool,
) {
    if crate::testing::seeds::planted(crate::testing::seeds::Seed::IrqStaysBound) {
        return;
    }
    let mut irqs = IRQS.lock();
    irqs.retain_mut(|b| {
        if b.msi_device
            .is_some_and(|(device, rid)| !device_alive(device, rid))
        {
            // The device the line was bound to is gone: nothing may raise it.
            b.msi_device = None;
            arch::irq_line_release(b.line);
        }
        if b.notification
            .as_ref()
            .is_some_and(|n| !notification_alive(n))
            && !keeps_dangling_references()
        {
            b.notification = None;
            arch::irq_line_enable(b.line, false);
        }
        let alive = handler_alive(b.handler);
        if !alive {
            arch::irq_line_enable(b.line, false);
            arch::irq_line_release(b.line);
        }
        alive
    });
}

/// Handles interrupt `id` after it was taken: one a user handler owns masks
/// its line until the handler acknowledges and signals the handler's
/// notification (the preemption timer is the caller's); then the interrupt
/// controller may deliver the next.
fn end_interrupt(threads: &mut Threads, id: u32) {
    if id == arch::IOMMU_FAULT_IRQ || id == arch::IOMMU_PAGE_REQUEST_IRQ {
        if let Some(above) = ABOVE.get() {
            (above.deliver_faults)(threads);
        }
    } else if id == arch::TIMER_IRQ {
        // No page request waits past its deadline (`io_space`).
        if let Some(above) = ABOVE.get()
            && (above.requests_pending)()
        {
            (above.expire_requests)();
        }
    } else {
        let irqs = IRQS.lock();
        if let Some(binding) = irqs.iter().find(|b| b.id == id) {
            arch::irq_line_enable(binding.line, false);
            if let Some(target) = &binding.notification {
                let _ = signal(threads, target);
            }
        }
    }
    arch::end_interrupt(id);
}

/// Nothing is ready: if an interrupt a user handler waits for can still
/// arrive, sleeps until one does (`arch::wait_for_interrupt`: `sti; hlt` on
/// x86_64, a masked `wfi` on aarch64) and returns its id. `None`: nothing
/// can ever wake a thread again.
fn idle() -> Option<u32> {
    let above = ABOVE.get();
    let waiting = IRQS.lock().iter().any(|b| b.notification.is_some())
        || above.is_some_and(|a| (a.faults_awaited)());
    if !waiting {
        return None;
    }
    // No thread owns a time slice; a pending Arm timer level is cleared.
    // While a page request waits for its answer the timer keeps running,
    // so its deadline is checked.
    if above.is_some_and(|a| (a.requests_pending)()) {
        arch::timer_start(TIME_SLICE);
    } else {
        arch::timer_stop();
    }
    Some(arch::wait_for_interrupt())
}

/// Where [`run`] sends a thread whose system call was answered
/// `Next::Continue` (it skips the pick either way): back through the
/// loop's top, which tests a variable before picking (`true`), or to a
/// second `arch::run_user` call site inside the system-call loop
/// (`false`). The same work; the two shapes compile to different register
/// use in the loop, measured per machine (kernel/README.md "Measured": a
/// fast-path invocation returns straight to its caller): the second is
/// the cheaper on x86_64, the first on aarch64.
const CONTINUE_AT_TOP: bool = cfg!(target_arch = "aarch64");

/// What the scheduler does after a system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Resume the caller (or whoever is now the highest-priority ready thread).
    Resume,
    /// The caller gave up its time slice.
    Yield,
    /// The caller asked to end the session with this status (debug builds).
    Halt(u32),
    /// Resume the caller at once: the call changed no thread's state (no
    /// thread became ready or blocked, no priority, address space or
    /// CSpace changed), so the caller is still the thread the scheduler
    /// would pick, and `sched::run` does not pick again. Only the
    /// invocation fast paths answer it (`syscall::invoke_fast_first`,
    /// `invocation::invalidate_fast` in `syscall::handle_general`): they take
    /// `Threads` only to read and answer the caller's registers and its
    /// lookup cache.
    Continue,
}

/// What the scheduler needs of the layers above it, lent once by boot
/// ([`lend_above`]) so that `sched` names none of them (kernel/README.md
/// "Layers"): the capability move of an IPC with the grant right
/// (`objects`), and the IOMMU fault records and page requests its
/// interrupt handling and idle look after (`io_space`). Until lent,
/// nothing moves and nothing is pending.
#[derive(Clone, Copy)]
pub struct Above {
    /// Moves the capability the sender offers into the receiver's receive
    /// slot; whether one moved (`objects::transfer_capability`).
    pub transfer_capability: fn(&Tcb, &Tcb) -> bool,
    /// An IOMMU fault or page-request interrupt: delivers the records to
    /// their queues (`io_space::deliver_faults`).
    pub deliver_faults: fn(&mut Threads),
    /// Whether a page request waits for its answer (`io_space`).
    pub requests_pending: fn() -> bool,
    /// Answers the page requests past their deadline (`io_space`).
    pub expire_requests: fn(),
    /// Whether a thread waits on an IOMMU fault queue (`io_space`).
    pub faults_awaited: fn() -> bool,
}

static ABOVE: spin::Once<Above> = spin::Once::new();

/// Lends the scheduler what it calls above it (boot, once; a second call
/// changes nothing).
pub fn lend_above(above: Above) {
    ABOVE.call_once(|| above);
}

/// Why the scheduler loop ended.
pub enum Stop {
    /// A thread asked to end the session with this status.
    Halt(u32),
    /// No thread can run any more.
    Deadlock,
    /// The root task faulted.
    RootFault,
}

/// Runs threads until one halts the session or none can run, owning
/// `threads` and lending it to each system call (`on_syscall`). The borrow
/// of the running thread's registers ends when `run_user` returns, so
/// system calls reach any TCB (its own included) afresh through
/// [`Threads::tcb`].
pub fn run(
    mut threads: Threads,
    root: u64,
    mut on_syscall: impl FnMut(&mut Threads, u64) -> Next,
) -> Stop {
    // The thread whose time slice the timer is counting (0: none). A thread
    // gets a fresh slice when it is dispatched after another one, or after
    // its slice expired; system calls do not touch the timer.
    let mut slice_owner = 0u64;
    let mut loaded_space = 0u64;
    // The thread whose system call was answered `Next::Continue`, when
    // [`CONTINUE_AT_TOP`] (0: none).
    let mut again = 0u64;
    'pick: loop {
        let current = if CONTINUE_AT_TOP && again != 0 {
            again
        } else {
            let Some(current) = SCHEDULER.lock().pick() else {
                let Some(id) = idle() else {
                    return Stop::Deadlock;
                };
                end_interrupt(&mut threads, id);
                slice_owner = 0;
                continue;
            };
            let space = threads.tcb(current).vspace;
            if space != loaded_space {
                arch::set_address_space(space);
                loaded_space = space;
            }
            if current != slice_owner {
                arch::timer_start(TIME_SLICE);
                slice_owner = current;
            }
            current
        };
        again = 0;
        let mut exit = arch::run_user(&mut threads.tcb(current).context);
        while exit == arch::Exit::Syscall {
            match on_syscall(&mut threads, current) {
                // The call changed no thread's state (`syscall::Next`):
                // `current` is still the thread `pick` would choose, in the
                // address space loaded and with its slice counted, so it
                // runs again at once, without the pick and the checks above.
                Next::Continue if CONTINUE_AT_TOP => {
                    again = current;
                    continue 'pick;
                }
                Next::Continue => {
                    exit = arch::run_user(&mut threads.tcb(current).context);
                }
                Next::Resume => continue 'pick,
                // The handler may block `current` or wake others; a yield rotates.
                Next::Yield => {
                    SCHEDULER.lock().rotate(&mut threads.tcbs, current);
                    continue 'pick;
                }
                Next::Halt(status) => return Stop::Halt(status),
            }
        }
        let interrupt = match exit {
            arch::Exit::Interrupt(vector) => arch::acknowledge_interrupt(vector),
            _ => None,
        };
        if interrupt == Some(arch::TIMER_IRQ) {
            // The slice is over: the next dispatch re-arms the timer (which
            // also clears the Arm timer's level-triggered condition).
            slice_owner = 0;
        }
        match exit {
            // Answered above.
            arch::Exit::Syscall => {}
            arch::Exit::Interrupt(_) => {
                if let Some(id) = interrupt {
                    end_interrupt(&mut threads, id);
                    if id == arch::TIMER_IRQ
                        && !crate::testing::seeds::planted(
                            crate::testing::seeds::Seed::NoPreemption,
                        )
                    {
                        SCHEDULER.lock().rotate(&mut threads.tcbs, current);
                    }
                }
            }
            arch::Exit::Exception {
                vector,
                error,
                address,
            } => {
                let pc = threads.tcb(current).context.program_counter();
                let mut scheduler = SCHEDULER.lock();
                if deliver_fault(
                    &mut scheduler,
                    &mut threads,
                    current,
                    [u64::from(vector), address, pc, error],
                ) {
                    continue;
                }
                let name = name(&mut threads, current);
                crate::say!(
                    "[sched] thread {:#x} ({}) faulted with no handler: exception {:#x}, syndrome {:#x}, address {:#x}, pc {:#x}",
                    current,
                    name.as_deref().unwrap_or("unnamed"),
                    vector,
                    error,
                    address,
                    pc
                );
                if current == root {
                    return Stop::RootFault;
                }
                scheduler.detach(&mut threads, current);
            }
        }
    }
}

/// Answers `thread`'s system call with `error`.
pub fn fail(threads: &mut Threads, thread: u64, error: Error) {
    reply_error(&mut threads.tcbs, thread, error);
}
