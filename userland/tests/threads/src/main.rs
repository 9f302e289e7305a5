//! `threads`: threads, the scheduler, IPC and notifications from user space.
//! Runs as the root task (priority 100). The threads it creates share its
//! address space and CSpace; their stacks are static arrays here.
//!
//! - IPC ping-pong: a server thread answers 1,000 `Call`s with `ReplyRecv`,
//!   seeing the client's badge and label.
//! - Badged notification: two badged capabilities to one notification are
//!   signalled; one `Wait` returns both badges ORed.
//! - Preemption: a low-priority thread that spins forever does not keep a
//!   thread of the same priority from running (the timer takes the CPU back),
//!   so that thread's signal reaches the waiting root task.
//! - Deleting an endpoint wakes the thread blocked on it with `DeadObject`.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use abi::bootinfo::{self, BootInfo};
use core::sync::atomic::{AtomicU64, Ordering};
use rt::check;
use rt::testing::{Outcome, Suite};
use sys::{
    CNode, Cap, Endpoint, Error, MessageInfo, Notification, ObjectType, Rights, Tcb, Untyped,
};

rt::entry!(main);

#[allow(unsafe_code)]
fn boot_info() -> &'static BootInfo {
    // SAFETY: the kernel maps a BootInfo read-only at BOOT_INFO_ADDRESS for
    // the root task's whole life.
    unsafe { &*(bootinfo::BOOT_INFO_ADDRESS as *const BootInfo) }
}

fn cnode() -> Cap<CNode> {
    Cap::from_slot(bootinfo::INIT_CNODE)
}

/// Hands out free slots of the root CNode, in order.
struct Slots(u32);

impl Slots {
    fn take(&mut self) -> u32 {
        self.0 += 1;
        self.0 - 1
    }
}

/// The largest RAM Untyped.
fn untyped() -> Cap<Untyped> {
    let info = boot_info();
    let count = info.untyped_count as usize;
    let index = (1..count)
        .max_by_key(|&i| info.untypeds[i].size_bits)
        .unwrap_or(0);
    Cap::from_slot(bootinfo::FIRST_UNTYPED + index as u32)
}

fn make<T: sys::CapType>(slots: &mut Slots, kind: ObjectType) -> Result<Cap<T>, Error> {
    let slot = slots.take();
    untyped().retype(kind, 0, slot, 1)?;
    Ok(Cap::from_slot(slot))
}

/// One thread's stack.
#[repr(C, align(16))]
struct Stack([u8; 16 * 1024]);

static mut STACKS: [Stack; 6] = [const { Stack([0; 16 * 1024]) }; 6];
static NEXT_STACK: AtomicU64 = AtomicU64::new(0);

/// The top of a fresh stack, as the architecture expects it at a function's
/// first instruction (x86_64: as if a return address had been pushed).
#[allow(unsafe_code)]
fn stack_top() -> u64 {
    let index = NEXT_STACK.fetch_add(1, Ordering::Relaxed) as usize;
    // SAFETY: each index is handed out once (atomic counter) and only its
    // address is taken; the thread that gets it is the only user.
    let top = unsafe { core::ptr::addr_of!(STACKS[index % 6]) as u64 } + 16 * 1024;
    if cfg!(target_arch = "x86_64") {
        top - 8
    } else {
        top
    }
}

/// Starts `entry(argument)` as a new thread at `priority`.
fn spawn(
    slots: &mut Slots,
    entry: extern "C" fn(u64) -> !,
    argument: u64,
    priority: u8,
) -> Result<Cap<Tcb>, Error> {
    let tcb: Cap<Tcb> = make(slots, ObjectType::Tcb)?;
    tcb.write_registers(entry as usize as u64, stack_top(), argument)?;
    tcb.set_priority(priority)?;
    tcb.resume()?;
    Ok(tcb)
}

fn main(_startup: &rt::Startup) -> i32 {
    let mut slots = Slots(boot_info().first_free_slot as u32);
    let mut suite = Suite::new();
    suite.run("ipc_ping_pong_with_badge", || {
        ipc_ping_pong_with_badge(&mut slots)
    });
    suite.run("badged_notification", || badged_notification(&mut slots));
    suite.run("spinning_thread_is_preempted", || {
        spinning_thread_is_preempted(&mut slots)
    });
    suite.run("deleted_endpoint_wakes_its_waiter", || {
        deleted_endpoint_wakes_its_waiter(&mut slots)
    });
    suite.finish()
}

/// Slot numbers the threads find their capabilities at (set before spawning).
static SERVER_ENDPOINT: AtomicU64 = AtomicU64::new(0);
static SIGNAL_A: AtomicU64 = AtomicU64::new(0);
static SIGNAL_B: AtomicU64 = AtomicU64::new(0);
static PARK: AtomicU64 = AtomicU64::new(0);
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Blocks this thread for good (on a notification nobody signals).
fn park() -> ! {
    let parking: Cap<Notification> = Cap::from_slot(PARK.load(Ordering::Relaxed) as u32);
    loop {
        let _ = parking.wait();
        sys::yield_now();
    }
}

extern "C" fn server(_: u64) -> ! {
    let endpoint: Cap<Endpoint> = Cap::from_slot(SERVER_ENDPOINT.load(Ordering::Relaxed) as u32);
    let mut message = endpoint.recv();
    loop {
        let reply = match message {
            Ok(m) => [m.mrs[0] + 1, m.badge, u64::from(m.info.label), 0],
            Err(_) => [0; 4],
        };
        message = endpoint.reply_recv(MessageInfo::new(0, 3), reply);
    }
}

fn ipc_ping_pong_with_badge(slots: &mut Slots) -> Outcome {
    let parking: Cap<Notification> = match make(slots, ObjectType::Notification) {
        Ok(n) => n,
        Err(e) => rt::fail!("retype notification: {e:?}"),
    };
    PARK.store(u64::from(parking.slot()), Ordering::Relaxed);
    let endpoint: Cap<Endpoint> = match make(slots, ObjectType::Endpoint) {
        Ok(e) => e,
        Err(e) => rt::fail!("retype endpoint: {e:?}"),
    };
    SERVER_ENDPOINT.store(u64::from(endpoint.slot()), Ordering::Relaxed);
    let badged = slots.take();
    check!(
        cnode()
            .mint(badged, endpoint.slot(), Rights::ALL, 7)
            .is_ok(),
        "mint badge 7"
    );
    let client: Cap<Endpoint> = Cap::from_slot(badged);
    check!(spawn(slots, server, 0, 50).is_ok(), "spawn the server");
    for i in 0..1000u64 {
        let reply = client.call(MessageInfo::new(42, 1), [i, 0, 0, 0]);
        let Ok(reply) = reply else {
            rt::fail!("call {i}: {reply:?}")
        };
        check!(reply.mrs[0] == i + 1, "call {i}: answer {}", reply.mrs[0]);
        check!(
            reply.mrs[1] == 7,
            "call {i}: the server saw badge {}",
            reply.mrs[1]
        );
        check!(
            reply.mrs[2] == 42,
            "call {i}: the server saw label {}",
            reply.mrs[2]
        );
    }
    Ok(())
}

extern "C" fn signaller(_: u64) -> ! {
    for slot in [
        SIGNAL_A.load(Ordering::Relaxed),
        SIGNAL_B.load(Ordering::Relaxed),
    ] {
        let _ = Cap::<Notification>::from_slot(slot as u32).signal();
    }
    park()
}

fn badged_notification(slots: &mut Slots) -> Outcome {
    let notification: Cap<Notification> = match make(slots, ObjectType::Notification) {
        Ok(n) => n,
        Err(e) => rt::fail!("retype notification: {e:?}"),
    };
    let (a, b) = (slots.take(), slots.take());
    check!(
        cnode()
            .mint(a, notification.slot(), Rights::ALL, 0b01)
            .is_ok(),
        "mint badge 1"
    );
    check!(
        cnode()
            .mint(b, notification.slot(), Rights::ALL, 0b10)
            .is_ok(),
        "mint badge 2"
    );
    SIGNAL_A.store(u64::from(a), Ordering::Relaxed);
    SIGNAL_B.store(u64::from(b), Ordering::Relaxed);
    // Higher priority than the root task: it signals both before we wait.
    check!(
        spawn(slots, signaller, 0, 200).is_ok(),
        "spawn the signaller"
    );
    let word = notification.wait();
    check!(
        word == Ok(0b11),
        "Wait returned {word:?}, expected both badges (0b11)"
    );
    Ok(())
}

extern "C" fn spinner(_: u64) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

extern "C" fn counter(done: u64) -> ! {
    for _ in 0..1000 {
        COUNTER.fetch_add(1, Ordering::Relaxed);
    }
    let _ = Cap::<Notification>::from_slot(done as u32).signal();
    park()
}

fn spinning_thread_is_preempted(slots: &mut Slots) -> Outcome {
    let done: Cap<Notification> = match make(slots, ObjectType::Notification) {
        Ok(n) => n,
        Err(e) => rt::fail!("retype notification: {e:?}"),
    };
    // The spinner is first in line at priority 10; only the timer can let
    // the counter (same priority) run.
    let spin = spawn(slots, spinner, 0, 10);
    check!(spin.is_ok(), "spawn the spinner");
    check!(
        spawn(slots, counter, u64::from(done.slot()), 10).is_ok(),
        "spawn the counter"
    );
    let word = done.wait();
    check!(word.is_ok(), "Wait returned {word:?}");
    check!(
        COUNTER.load(Ordering::Relaxed) == 1000,
        "the counter counted {}",
        COUNTER.load(Ordering::Relaxed)
    );
    if let Ok(spin) = spin {
        check!(spin.suspend().is_ok(), "suspend the spinner");
    }
    Ok(())
}

static WAITER_SAW: AtomicU64 = AtomicU64::new(0);
static WAITER_DONE: AtomicU64 = AtomicU64::new(0);

extern "C" fn waiter(endpoint: u64) -> ! {
    let result = Cap::<Endpoint>::from_slot(endpoint as u32).recv();
    let code = match result {
        Ok(_) => 1,
        Err(e) => u64::from(e.code()),
    };
    WAITER_SAW.store(code, Ordering::Relaxed);
    let _ = Cap::<Notification>::from_slot(WAITER_DONE.load(Ordering::Relaxed) as u32).signal();
    park()
}

fn deleted_endpoint_wakes_its_waiter(slots: &mut Slots) -> Outcome {
    let endpoint: Cap<Endpoint> = match make(slots, ObjectType::Endpoint) {
        Ok(e) => e,
        Err(e) => rt::fail!("retype endpoint: {e:?}"),
    };
    let done: Cap<Notification> = match make(slots, ObjectType::Notification) {
        Ok(n) => n,
        Err(e) => rt::fail!("retype notification: {e:?}"),
    };
    WAITER_DONE.store(u64::from(done.slot()), Ordering::Relaxed);
    // Higher priority: it blocks in Recv before we continue.
    check!(
        spawn(slots, waiter, u64::from(endpoint.slot()), 200).is_ok(),
        "spawn the waiter"
    );
    check!(
        cnode().delete(endpoint.slot()).is_ok(),
        "delete the endpoint"
    );
    let word = done.wait();
    check!(word.is_ok(), "Wait returned {word:?}");
    let saw = WAITER_SAW.load(Ordering::Relaxed);
    check!(
        saw == u64::from(Error::DeadObject.code()),
        "the waiter's Recv ended with {saw}, expected DeadObject"
    );
    Ok(())
}
