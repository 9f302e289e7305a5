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
//! - Deleting an endpoint wakes the thread blocked on it with `DeadObject`,
//!   also one that went to wait there with `ReplyRecv`.
//! - aarch64: the condition flags survive a timer interrupt, and so do
//!   the general-purpose registers.
//! - aarch64: after a system call (Yield, Signal, Wait, an IPC `Call`, an
//!   invocation), x9..x18, which the system-call ABI does not preserve,
//!   hold zero or the thread's own values, never a kernel value.
//! - Every FP/SIMD instruction faults in user mode (aarch64: CPACR_EL1.FPEN
//!   traps EL0, EC 0x07; x86_64: CR0.EM and no CR4.OSFXSR make x87 raise
//!   #NM, MMX and SSE #UD) and reaches the thread's fault handler: the
//!   kernel saves no FP/SIMD state, so none may exist in user mode.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};
use rt::check;
use rt::testing::{Outcome, Suite};
use sys::bootinfo::{self, BootInfo};
use sys::{CNode, Cap, Endpoint, Error, MessageInfo, Notification, Rights, Slot, Tcb, Untyped};

rt::entry!(main);

#[allow(unsafe_code)]
fn boot_info() -> &'static BootInfo {
    // SAFETY: the kernel maps a BootInfo read-only at BOOT_INFO_ADDRESS for
    // the root task's whole life.
    unsafe { &*(bootinfo::BOOT_INFO_ADDRESS as *const BootInfo) }
}

fn cnode() -> Cap<CNode> {
    bootinfo::INIT_CNODE
}

/// Hands out free slots of the root CNode, in order.
struct Slots(u32);

impl Slots {
    fn take(&mut self) -> Slot {
        self.0 += 1;
        Slot::new(self.0 - 1)
    }
}

/// The largest RAM Untyped.
fn untyped() -> Cap<Untyped> {
    let info = boot_info();
    sys::untypeds::largest_ram_untyped(info).map_or(bootinfo::ARENA, |u| u.cap())
}

fn make<T: sys::FixedSize>(slots: &mut Slots) -> Result<Cap<T>, Error> {
    untyped().retype(slots.take())
}

/// One thread's stack.
#[repr(C, align(16))]
struct Stack([u8; 16 * 1024]);

static mut STACKS: [Stack; 12] = [const { Stack([0; 16 * 1024]) }; 12];
static NEXT_STACK: AtomicU64 = AtomicU64::new(0);

/// The top of a fresh stack, as the architecture expects it at a function's
/// first instruction (x86_64: as if a return address had been pushed).
#[allow(unsafe_code)]
fn stack_top() -> u64 {
    let index = NEXT_STACK.fetch_add(1, Ordering::Relaxed) as usize;
    // SAFETY: each index is handed out once (atomic counter) and only its
    // address is taken; the thread that gets it is the only user.
    let top = unsafe { core::ptr::addr_of!(STACKS[index % 12]) as u64 } + 16 * 1024;
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
    let tcb: Cap<Tcb> = make::<Tcb>(slots)?;
    tcb.configure_in_root_task(None)?;
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
    suite.run("deleted_endpoint_wakes_a_reply_recv_waiter", || {
        deleted_endpoint_wakes_a_reply_recv_waiter(&mut slots)
    });
    suite.run("fault_handler_resumes_a_thread", || {
        fault_handler_resumes_a_thread(&mut slots)
    });
    suite.run("fault_handler_stops_a_thread", || {
        fault_handler_stops_a_thread(&mut slots)
    });
    suite.run("fp_simd_instructions_fault_in_user_mode", || {
        fp_simd_instructions_fault_in_user_mode(&mut slots)
    });
    #[cfg(target_arch = "aarch64")]
    suite.run(
        "condition_flags_survive_preemption",
        condition_flags_survive_preemption,
    );
    #[cfg(target_arch = "aarch64")]
    suite.run("registers_survive_preemption", registers_survive_preemption);
    #[cfg(target_arch = "aarch64")]
    suite.run("system_calls_leave_no_kernel_value_in_x9_to_x18", || {
        system_calls_leave_no_kernel_value_in_x9_to_x18(&mut slots)
    });
    suite.run("a_deleted_capability_stops_working_at_once", || {
        a_deleted_capability_stops_working_at_once(&mut slots)
    });
    suite.run(
        "a_thread_an_invocation_readies_runs_before_its_caller",
        || a_thread_an_invocation_readies_runs_before_its_caller(&mut slots),
    );
    suite.run(
        "configure_refused_for_a_full_registry_changes_nothing",
        || configure_refused_for_a_full_registry_changes_nothing(&mut slots),
    );
    suite.finish()
}

/// The scheduler's registry of objects with kernel state is filled (each
/// `SetFaultHandler` of a fresh thread registers it) until it answers
/// `ObjectTableFull`. `Tcb.Configure` of one more thread then answers
/// `ObjectTableFull` too, and changes nothing: the PageTable it named as
/// the thread's address space is not recorded as a root (which would make
/// installing it as a table answer `AlreadyMapped`). Everything made is
/// deleted again, which empties the registry.
fn configure_refused_for_a_full_registry_changes_nothing(slots: &mut Slots) -> Outcome {
    /// More threads than the registry holds (256 entries).
    const MOST: u32 = 320;
    let first = slots.0;
    let endpoint: Cap<Endpoint> = match make(slots) {
        Ok(e) => e,
        Err(e) => rt::fail!("retype endpoint: {e:?}"),
    };
    let mut full = false;
    for _ in 0..MOST {
        let tcb: Cap<Tcb> = match make(slots) {
            Ok(t) => t,
            Err(e) => rt::fail!("retype TCB: {e:?}"),
        };
        match tcb.set_fault_handler(endpoint) {
            Ok(()) => {}
            Err(Error::ObjectTableFull) => {
                full = true;
                break;
            }
            Err(e) => rt::fail!("SetFaultHandler answered {e:?}"),
        }
    }
    check!(full, "the registry took {MOST} threads without filling");
    let (tcb, table, buffer) = match (
        make::<Tcb>(slots),
        make::<sys::PageTable>(slots),
        untyped().retype_sized::<sys::Frame>(12, slots.take()),
    ) {
        (Ok(t), Ok(p), Ok(f)) => (t, p, f),
        other => rt::fail!("retype TCB, PageTable, Frame: {:?}", other.0.err()),
    };
    let refused = tcb.configure(None, cnode(), table, buffer, sys::ipc::IPC_BUFFER_ADDRESS);
    check!(
        refused == Err(Error::ObjectTableFull),
        "Configure with a full registry answered {refused:?}"
    );
    // Far above everything the root task maps: the table goes in as a
    // new table of the root task's own space.
    let installed = table.map(bootinfo::INIT_VSPACE, 0x6000_0000_0000);
    check!(
        installed.is_ok(),
        "the refused Configure left its PageTable recorded as a root: installing it answered {installed:?}"
    );
    check!(table.unmap().is_ok(), "uninstall the table");
    for index in first..slots.0 {
        if let Err(e) = cnode().delete(Slot::new(index)) {
            rt::fail!("delete slot {index}: {e:?}");
        }
    }
    Ok(())
}

/// Slot numbers the threads find their capabilities at (set before spawning).
static SERVER_ENDPOINT: AtomicU64 = AtomicU64::new(0);
static SIGNAL_A: AtomicU64 = AtomicU64::new(0);
static SIGNAL_B: AtomicU64 = AtomicU64::new(0);
static PARK: AtomicU64 = AtomicU64::new(0);
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Set by [`mark_and_park`] once it runs.
static MARKED: AtomicU64 = AtomicU64::new(0);

extern "C" fn mark_and_park(_: u64) -> ! {
    MARKED.store(1, Ordering::Relaxed);
    park()
}

/// `Tcb.Resume` of a thread above our priority (the root task's 100) makes
/// it the one the scheduler must run: it runs before `Resume` returns to
/// us. The kernel lets a caller run again without picking only after the
/// invocation fast paths, which change no thread's state (`Frame.Map` and
/// `Unmap`, `IoSpace.Map` and `Unmap`, `IoUserTable.Invalidate`:
/// `syscall::Next::Continue`); answering another invocation that way
/// (seeded: `continue-after-invocation`) returns to us first.
fn a_thread_an_invocation_readies_runs_before_its_caller(slots: &mut Slots) -> Outcome {
    MARKED.store(0, Ordering::Relaxed);
    let tcb: Cap<Tcb> = match make::<Tcb>(slots) {
        Ok(tcb) => tcb,
        Err(e) => rt::fail!("retype TCB: {e:?}"),
    };
    let configured = tcb
        .configure_in_root_task(None)
        .and_then(|()| tcb.write_registers(mark_and_park as *const () as u64, stack_top(), 0))
        .and_then(|()| tcb.set_priority(150));
    check!(configured.is_ok(), "configure the thread: {configured:?}");
    let resumed = tcb.resume();
    let marked = MARKED.load(Ordering::Relaxed);
    check!(resumed.is_ok(), "Resume answered {resumed:?}");
    check!(
        marked == 1,
        "the priority-150 thread had not run when Resume returned to its priority-100 caller"
    );
    check!(tcb.suspend().is_ok(), "suspend the thread");
    Ok(())
}

/// Blocks this thread for good (on a notification nobody signals).
fn park() -> ! {
    let parking: Cap<Notification> = Cap::from_slot(Slot::new(PARK.load(Ordering::Relaxed) as u32));
    loop {
        let _ = parking.wait();
        sys::yield_now();
    }
}

extern "C" fn server(_: u64) -> ! {
    let endpoint: Cap<Endpoint> =
        Cap::from_slot(Slot::new(SERVER_ENDPOINT.load(Ordering::Relaxed) as u32));
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
    let parking: Cap<Notification> = match make::<Notification>(slots) {
        Ok(n) => n,
        Err(e) => rt::fail!("retype notification: {e:?}"),
    };
    PARK.store(u64::from(parking.slot()), Ordering::Relaxed);
    let endpoint: Cap<Endpoint> = match make::<Endpoint>(slots) {
        Ok(e) => e,
        Err(e) => rt::fail!("retype endpoint: {e:?}"),
    };
    SERVER_ENDPOINT.store(u64::from(endpoint.slot()), Ordering::Relaxed);
    let client: Cap<Endpoint> = match cnode().mint(slots.take(), endpoint, Rights::ALL, 7) {
        Ok(client) => client,
        Err(e) => rt::fail!("mint badge 7: {e:?}"),
    };
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
        let _ = Cap::<Notification>::from_slot(Slot::new(slot as u32)).signal();
    }
    park()
}

fn badged_notification(slots: &mut Slots) -> Outcome {
    let notification: Cap<Notification> = match make::<Notification>(slots) {
        Ok(n) => n,
        Err(e) => rt::fail!("retype notification: {e:?}"),
    };
    let (a, b) = (slots.take(), slots.take());
    check!(
        cnode().mint(a, notification, Rights::ALL, 0b01).is_ok(),
        "mint badge 1"
    );
    check!(
        cnode().mint(b, notification, Rights::ALL, 0b10).is_ok(),
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
    let _ = Cap::<Notification>::from_slot(Slot::new(done as u32)).signal();
    park()
}

fn spinning_thread_is_preempted(slots: &mut Slots) -> Outcome {
    let done: Cap<Notification> = match make::<Notification>(slots) {
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
    report_wait(Cap::<Endpoint>::from_slot(Slot::new(endpoint as u32)).recv())
}

/// Records how a waiter's wait ended in [`WAITER_SAW`] (1: a message, else
/// the error code), signals [`WAITER_DONE`] and parks.
fn report_wait<T>(result: Result<T, Error>) -> ! {
    let code = match result {
        Ok(_) => 1,
        Err(e) => u64::from(e.code()),
    };
    WAITER_SAW.store(code, Ordering::Relaxed);
    let _ = Cap::<Notification>::from_slot(Slot::new(WAITER_DONE.load(Ordering::Relaxed) as u32))
        .signal();
    park()
}

fn deleted_endpoint_wakes_its_waiter(slots: &mut Slots) -> Outcome {
    let endpoint: Cap<Endpoint> = match make::<Endpoint>(slots) {
        Ok(e) => e,
        Err(e) => rt::fail!("retype endpoint: {e:?}"),
    };
    let done: Cap<Notification> = match make::<Notification>(slots) {
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

/// The endpoint nobody used before that [`replying_waiter`] waits on.
static FRESH_ENDPOINT: AtomicU64 = AtomicU64::new(0);

/// Answers one `Call` on `endpoint` with `ReplyRecv` on [`FRESH_ENDPOINT`],
/// then reports how that wait ended, as [`waiter`] does.
extern "C" fn replying_waiter(endpoint: u64) -> ! {
    let calls = Cap::<Endpoint>::from_slot(Slot::new(endpoint as u32));
    let fresh =
        Cap::<Endpoint>::from_slot(Slot::new(FRESH_ENDPOINT.load(Ordering::Relaxed) as u32));
    let _ = calls.recv();
    report_wait(fresh.reply_recv(MessageInfo::new(0, 1), [0; 4]))
}

/// A thread that answers with `ReplyRecv` on an endpoint nobody used
/// before waits there as a `Recv` would: deleting that endpoint wakes it
/// with `DeadObject`. (The round trip's fast path blocks a thread only on
/// an endpoint the scheduler has registered, and remembers the answer in
/// the thread's lookup cache; a cache that said "registered" without
/// asking leaves the waiter asleep for good.)
fn deleted_endpoint_wakes_a_reply_recv_waiter(slots: &mut Slots) -> Outcome {
    let made = make::<Endpoint>(slots).and_then(|calls| {
        let fresh = make::<Endpoint>(slots)?;
        Ok((calls, fresh, make::<Notification>(slots)?))
    });
    let (calls, fresh, done) = match made {
        Ok(made) => made,
        Err(e) => rt::fail!("retype endpoints and notification: {e:?}"),
    };
    WAITER_SAW.store(0, Ordering::Relaxed);
    WAITER_DONE.store(u64::from(done.slot()), Ordering::Relaxed);
    FRESH_ENDPOINT.store(u64::from(fresh.slot()), Ordering::Relaxed);
    // Higher priority: it blocks in Recv before we continue.
    check!(
        spawn(slots, replying_waiter, u64::from(calls.slot()), 200).is_ok(),
        "spawn the waiter"
    );
    let reply = calls.call(MessageInfo::new(0, 1), [0; 4]);
    check!(reply.is_ok(), "Call answered {reply:?}");
    check!(cnode().delete(fresh.slot()).is_ok(), "delete the endpoint");
    let word = done.wait();
    check!(word.is_ok(), "Wait returned {word:?}");
    let saw = WAITER_SAW.load(Ordering::Relaxed);
    check!(
        saw == u64::from(Error::DeadObject.code()),
        "the waiter's ReplyRecv ended with {saw}, expected DeadObject"
    );
    Ok(())
}

/// Executes an undefined instruction.
#[allow(unsafe_code)]
extern "C" fn faulter(_: u64) -> ! {
    // SAFETY: the undefined instruction only raises an exception, which the
    // kernel turns into a fault message; no memory is touched.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("ud2");
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("udf #0");
    }
    // Not reached unless resumed past the instruction; park either way.
    park()
}

static RECOVERED: AtomicU64 = AtomicU64::new(0);
static FAULT_ENDPOINT: AtomicU64 = AtomicU64::new(0);

/// Where the handler sends a faulted thread: says so on the fault endpoint.
extern "C" fn recovered(_: u64) -> ! {
    RECOVERED.fetch_add(1, Ordering::Relaxed);
    let endpoint: Cap<Endpoint> =
        Cap::from_slot(Slot::new(FAULT_ENDPOINT.load(Ordering::Relaxed) as u32));
    let _ = endpoint.send(MessageInfo::new(1, 1), [0xC0DE, 0, 0, 0]);
    park()
}

/// Low priority: runs only when everything else is blocked, then wakes the
/// handler with an ordinary message.
extern "C" fn waker(_: u64) -> ! {
    let endpoint: Cap<Endpoint> =
        Cap::from_slot(Slot::new(FAULT_ENDPOINT.load(Ordering::Relaxed) as u32));
    let _ = endpoint.send(MessageInfo::new(2, 1), [0xAAAA, 0, 0, 0]);
    park()
}

/// Starts `faulter` at priority 200 with `endpoint` as its fault handler.
fn faulting_thread(slots: &mut Slots, endpoint: Cap<Endpoint>) -> Result<Cap<Tcb>, Error> {
    let tcb: Cap<Tcb> = make::<Tcb>(slots)?;
    tcb.configure_in_root_task(None)?;
    tcb.write_registers(faulter as *const () as u64, stack_top(), 0)?;
    tcb.set_priority(200)?;
    tcb.set_fault_handler(endpoint)?;
    tcb.resume()?;
    Ok(tcb)
}

fn fault_handler_resumes_a_thread(slots: &mut Slots) -> Outcome {
    let endpoint: Cap<Endpoint> = match make::<Endpoint>(slots) {
        Ok(e) => e,
        Err(e) => rt::fail!("retype endpoint: {e:?}"),
    };
    FAULT_ENDPOINT.store(u64::from(endpoint.slot()), Ordering::Relaxed);
    let thread = match faulting_thread(slots, endpoint) {
        Ok(t) => t,
        Err(e) => rt::fail!("starting the faulting thread: {e:?}"),
    };
    let fault = endpoint.recv();
    let Ok(fault) = fault else {
        rt::fail!("Recv of the fault answered {fault:?}")
    };
    check!(
        fault.info.label == abi::FAULT_LABEL,
        "label {:#x}, expected the fault label",
        fault.info.label
    );
    let pc = fault.mrs[2];
    let entry = faulter as *const () as u64;
    check!(
        pc >= entry && pc < entry + 64,
        "fault at pc {pc:#x}, outside faulter ({entry:#x})"
    );
    // Fix: restart the thread elsewhere, then resume it.
    check!(
        thread
            .write_registers(recovered as *const () as u64, stack_top(), 0)
            .is_ok(),
        "rewrite its registers"
    );
    let next = endpoint.reply_recv(MessageInfo::new(0, 1), [0, 0, 0, 0]);
    let Ok(next) = next else {
        rt::fail!("ReplyRecv answered {next:?}")
    };
    check!(
        next.mrs[0] == 0xC0DE && next.info.label == 1,
        "the resumed thread sent {:#x} label {}",
        next.mrs[0],
        next.info.label
    );
    check!(
        RECOVERED.load(Ordering::Relaxed) == 1,
        "recovered ran {} times",
        RECOVERED.load(Ordering::Relaxed)
    );
    Ok(())
}

fn fault_handler_stops_a_thread(slots: &mut Slots) -> Outcome {
    let endpoint: Cap<Endpoint> = match make::<Endpoint>(slots) {
        Ok(e) => e,
        Err(e) => rt::fail!("retype endpoint: {e:?}"),
    };
    FAULT_ENDPOINT.store(u64::from(endpoint.slot()), Ordering::Relaxed);
    let before = RECOVERED.load(Ordering::Relaxed);
    let thread = match faulting_thread(slots, endpoint) {
        Ok(t) => t,
        Err(e) => rt::fail!("starting the faulting thread: {e:?}"),
    };
    check!(spawn(slots, waker, 0, 5).is_ok(), "spawn the waker");
    let fault = endpoint.recv();
    check!(
        fault
            .as_ref()
            .is_ok_and(|f| f.info.label == abi::FAULT_LABEL),
        "first message {fault:?}"
    );
    // Point it at `recovered` but answer "stop": it must never run again.
    check!(
        thread
            .write_registers(recovered as *const () as u64, stack_top(), 0)
            .is_ok(),
        "rewrite its registers"
    );
    let next = endpoint.reply_recv(MessageInfo::new(0, 1), [1, 0, 0, 0]);
    let Ok(next) = next else {
        rt::fail!("ReplyRecv answered {next:?}")
    };
    check!(
        next.info.label == 2 && next.mrs[0] == 0xAAAA,
        "expected the waker's message, got label {} {:#x}",
        next.info.label,
        next.mrs[0]
    );
    check!(
        RECOVERED.load(Ordering::Relaxed) == before,
        "the stopped thread ran"
    );
    Ok(())
}

/// One FP/SIMD instruction per entry, with the exception the kernel must
/// report for it (the fault message's first word: ESR_EL1.EC on aarch64,
/// the vector on x86_64). Encoded as data: user programs are built
/// soft-float, so the assembler would refuse the mnemonics.
#[cfg(target_arch = "aarch64")]
const FP_SIMD_INSTRUCTIONS: [(&str, u64); 2] = [
    ("fmov d0, xzr (FP)", 0x07),
    ("movi v0.2d, #0 (Advanced SIMD)", 0x07),
];
#[cfg(target_arch = "x86_64")]
const FP_SIMD_INSTRUCTIONS: [(&str, u64); 3] = [
    ("pxor xmm0, xmm0 (SSE2)", 6),
    ("fld1 (x87)", 7),
    ("movq mm0, rax (MMX)", 6),
];

/// Label of the message an FP/SIMD thread sends if its instruction ran.
const FP_SIMD_RAN: u32 = 3;

/// Executes `FP_SIMD_INSTRUCTIONS[which]`; were it to run, says so on the
/// fault endpoint.
#[allow(unsafe_code)]
extern "C" fn fp_simd_user(which: u64) -> ! {
    // SAFETY: each instruction only writes one FP/SIMD register (or raises
    // the exception the test expects); no memory and no general-purpose
    // register is touched, and nothing in this program keeps a value in
    // an FP/SIMD register.
    unsafe {
        #[cfg(target_arch = "aarch64")]
        match which {
            0 => core::arch::asm!(".inst 0x9e6703e0", options(nomem, nostack)),
            _ => core::arch::asm!(".inst 0x6f00e400", options(nomem, nostack)),
        }
        #[cfg(target_arch = "x86_64")]
        match which {
            0 => core::arch::asm!(".byte 0x66, 0x0f, 0xef, 0xc0", options(nomem, nostack)),
            1 => core::arch::asm!(".byte 0xd9, 0xe8", options(nomem, nostack)),
            _ => core::arch::asm!(".byte 0x48, 0x0f, 0x6e, 0xc0", options(nomem, nostack)),
        }
    }
    let endpoint: Cap<Endpoint> =
        Cap::from_slot(Slot::new(FAULT_ENDPOINT.load(Ordering::Relaxed) as u32));
    let _ = endpoint.send(MessageInfo::new(FP_SIMD_RAN, 1), [which, 0, 0, 0]);
    park()
}

/// Each instruction of [`FP_SIMD_INSTRUCTIONS`], run by a thread of its
/// own, must reach that thread's fault handler with the expected
/// exception and a pc inside [`fp_simd_user`], never run. The handler
/// then deletes the thread.
fn fp_simd_instructions_fault_in_user_mode(slots: &mut Slots) -> Outcome {
    let endpoint: Cap<Endpoint> = match make::<Endpoint>(slots) {
        Ok(e) => e,
        Err(e) => rt::fail!("retype endpoint: {e:?}"),
    };
    FAULT_ENDPOINT.store(u64::from(endpoint.slot()), Ordering::Relaxed);
    for (which, (name, expected)) in FP_SIMD_INSTRUCTIONS.iter().enumerate() {
        let tcb: Cap<Tcb> = match make::<Tcb>(slots) {
            Ok(t) => t,
            Err(e) => rt::fail!("retype a thread for {name}: {e:?}"),
        };
        let started = tcb.configure_in_root_task(None).and_then(|()| {
            tcb.write_registers(fp_simd_user as *const () as u64, stack_top(), which as u64)?;
            tcb.set_priority(200)?;
            tcb.set_fault_handler(endpoint)?;
            tcb.resume()
        });
        check!(
            started.is_ok(),
            "starting the thread for {name}: {started:?}"
        );
        let message = endpoint.recv();
        let Ok(message) = message else {
            rt::fail!("Recv for {name} answered {message:?}")
        };
        check!(
            message.info.label != FP_SIMD_RAN,
            "{name} ran in user mode instead of faulting"
        );
        check!(
            message.info.label == abi::FAULT_LABEL,
            "{name}: label {:#x}, expected the fault label",
            message.info.label
        );
        let [vector, _, pc, syndrome] = message.mrs;
        check!(
            vector == *expected,
            "{name} faulted with exception {vector:#x} (syndrome {syndrome:#x}), expected {expected:#x}"
        );
        let entry = fp_simd_user as *const () as u64;
        check!(
            pc >= entry && pc < entry + 256,
            "{name} faulted at pc {pc:#x}, outside fp_simd_user ({entry:#x})"
        );
        // Not answered: deleting the faulted thread also ends the reply
        // the kernel keeps for it.
        let deleted = cnode().delete(tcb.slot());
        check!(
            deleted.is_ok(),
            "deleting the thread for {name}: {deleted:?}"
        );
    }
    Ok(())
}

/// Sets Z, then spins on the virtual counter (with instructions that leave
/// the flags alone) for longer than two time slices (the kernel's 5,000,000
/// ticks), so at least one timer interrupt preempts it, and reads Z back.
/// aarch64 only: x86_64's RFLAGS travel in the interrupt frame untouched.
#[cfg(target_arch = "aarch64")]
#[allow(unsafe_code)]
fn condition_flags_survive_preemption() -> Outcome {
    const SPAN: u64 = 12_000_000;
    let z: u64;
    // SAFETY: reads the virtual counter (EL0 access is enabled, as the
    // benchmarks use it) and general-purpose registers only.
    unsafe {
        core::arch::asm!(
            "cmp xzr, xzr",
            "mrs {end}, cntvct_el0",
            "add {end}, {end}, {span}",
            "2: mrs {left}, cntvct_el0",
            "sub {left}, {end}, {left}",
            "tbz {left}, #63, 2b",
            "cset {z}, eq",
            end = out(reg) _,
            left = out(reg) _,
            span = in(reg) SPAN,
            z = lateout(reg) z,
            options(nomem, nostack),
        );
    }
    check!(
        z == 1,
        "Z was clear after {SPAN} counter ticks: an interrupt lost the flags"
    );
    Ok(())
}

/// Fills x0..x17 (but x6, x7, which count) with distinct values, spins on
/// the virtual counter for longer than two time slices (so at least one
/// timer interrupt preempts it, as in [`condition_flags_survive_preemption`])
/// and checks every value is still there: an interrupt entry saves and
/// restores all of them, including x9..x18, which a system call need not
/// preserve. (x18 is not an operand Rust allows everywhere; x19 and up are
/// callee-saved and restored by every entry alike.)
#[cfg(target_arch = "aarch64")]
#[allow(unsafe_code)]
fn registers_survive_preemption() -> Outcome {
    const SPAN: u64 = 12_000_000;
    const BASE: u64 = 0x7265_6700_0000_0000;
    let mut values = [0u64; 16];
    for (i, value) in values.iter_mut().enumerate() {
        *value = BASE + i as u64;
    }
    let mut after = values;
    // SAFETY: reads the virtual counter (EL0 access is enabled) and moves
    // values between general-purpose registers only.
    unsafe {
        core::arch::asm!(
            "mrs x6, cntvct_el0",
            "add x6, x6, {span}",
            "2: mrs x7, cntvct_el0",
            "sub x7, x6, x7",
            "tbz x7, #63, 2b",
            span = in(reg) SPAN,
            out("x6") _, out("x7") _,
            inout("x0") after[0], inout("x1") after[1], inout("x2") after[2],
            inout("x3") after[3], inout("x4") after[4], inout("x5") after[5],
            inout("x8") after[6], inout("x9") after[7], inout("x10") after[8],
            inout("x11") after[9], inout("x12") after[10], inout("x13") after[11],
            inout("x14") after[12], inout("x15") after[13], inout("x16") after[14],
            inout("x17") after[15],
            options(nomem, nostack),
        );
    }
    for (i, (before, now)) in values.iter().zip(after).enumerate() {
        check!(
            *before == now,
            "value {i} was {before:#x} before {SPAN} counter ticks and {now:#x} after: an interrupt lost it"
        );
    }
    Ok(())
}

/// What [`system_calls_leave_no_kernel_value_in_x9_to_x18`]'s probe thread
/// is given and reports: the notification's slot, the endpoint's slot,
/// (reported) how many registers held a foreign value, the first such
/// value, where (call number << 8 | register number), and the slot of the
/// notification it signals when done.
#[cfg(target_arch = "aarch64")]
static PROBE: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

/// The probe thread, in assembly so that nothing but the system calls
/// touches x9..x18: before each of five system calls (Yield, Signal,
/// Wait on the signalled notification, `Call` to the echo server, `Call`
/// on the notification, an invocation it refuses) it puts 0x5a5a << 48 +
/// n in each xn, and after it counts every xn that holds neither that nor
/// zero (the ABI's two allowed answers; kernel/README.md "The system-call
/// ABI").
#[cfg(target_arch = "aarch64")]
#[allow(unsafe_code)]
mod abi_probe {
    core::arch::global_asm!(
        r#"
        .macro PROBE_FILL
        .irp n, 9,10,11,12,13,14,15,16,17,18
        add x\n, x20, #\n
        .endr
        .endm

        .macro PROBE_CHECK n
        cbz x\n, 5f
        add x25, x20, #\n
        cmp x\n, x25
        b.eq 5f
        cbnz x21, 4f
        mov x22, x\n
        lsl x23, x24, #8
        add x23, x23, #\n
    4:  add x21, x21, #1
    5:
        .endm

        .macro PROBE_CHECK_ALL
        add x24, x24, #1
        .irp n, 9,10,11,12,13,14,15,16,17,18
        PROBE_CHECK \n
        .endr
        .endm

        .section .text.threads_abi_probe, "ax"
        .global threads_abi_probe
        .balign 4
    threads_abi_probe:
        mov x19, x0
        movz x20, #0x5a5a, lsl #48
        mov x21, #0
        mov x22, #0
        mov x23, #0
        mov x24, #0
        PROBE_FILL
        mov x8, #{yield_}
        svc #0
        PROBE_CHECK_ALL
        PROBE_FILL
        ldr x0, [x19]
        mov x8, #{signal}
        svc #0
        PROBE_CHECK_ALL
        PROBE_FILL
        ldr x0, [x19]
        mov x8, #{wait}
        svc #0
        PROBE_CHECK_ALL
        PROBE_FILL
        ldr x0, [x19, #8]
        mov x1, #1
        mov x2, #7
        mov x8, #{call}
        svc #0
        PROBE_CHECK_ALL
        PROBE_FILL
        ldr x0, [x19]
        mov x1, #0
        mov x8, #{call}
        svc #0
        PROBE_CHECK_ALL
        stp x21, x22, [x19, #16]
        str x23, [x19, #32]
        ldr x0, [x19, #40]
        mov x8, #{signal}
        svc #0
    6:  mov x8, #{yield_}
        svc #0
        b 6b
        "#,
        yield_ = const abi::Syscall::Yield as u64,
        signal = const abi::Syscall::Signal as u64,
        wait = const abi::Syscall::Wait as u64,
        call = const abi::Syscall::Call as u64,
    );

    unsafe extern "C" {
        /// The probe; `block` is the address of [`super::PROBE`].
        pub safe fn threads_abi_probe(block: u64) -> !;
    }
}

/// Runs the probe thread against a notification and an echo server (the
/// IPC fast path) and checks what it saw. A kernel whose system-call exit
/// left a kernel value in one of x9..x18 (seeded by hand: the svc entry
/// writing the kernel's stack pointer into the frame's x10 and x11) fails
/// here with that value.
#[cfg(target_arch = "aarch64")]
fn system_calls_leave_no_kernel_value_in_x9_to_x18(slots: &mut Slots) -> Outcome {
    let notification: Cap<Notification> = match make::<Notification>(slots) {
        Ok(n) => n,
        Err(e) => rt::fail!("retype notification: {e:?}"),
    };
    let done: Cap<Notification> = match make::<Notification>(slots) {
        Ok(n) => n,
        Err(e) => rt::fail!("retype notification: {e:?}"),
    };
    let endpoint: Cap<Endpoint> = match make::<Endpoint>(slots) {
        Ok(e) => e,
        Err(e) => rt::fail!("retype endpoint: {e:?}"),
    };
    SERVER_ENDPOINT.store(u64::from(endpoint.slot()), Ordering::Relaxed);
    check!(spawn(slots, server, 0, 60).is_ok(), "spawn the echo server");
    for (word, value) in PROBE.iter().zip([
        u64::from(notification.slot()),
        u64::from(endpoint.slot()),
        0,
        0,
        0,
        u64::from(done.slot()),
    ]) {
        word.store(value, Ordering::Relaxed);
    }
    let probe = spawn(
        slots,
        abi_probe::threads_abi_probe,
        PROBE.as_ptr() as u64,
        50,
    );
    let Ok(probe) = probe else {
        rt::fail!("spawn the probe: {probe:?}")
    };
    let word = done.wait();
    check!(word.is_ok(), "Wait for the probe answered {word:?}");
    check!(probe.suspend().is_ok(), "suspend the probe");
    let foreign = PROBE[2].load(Ordering::Relaxed);
    let value = PROBE[3].load(Ordering::Relaxed);
    let place = PROBE[4].load(Ordering::Relaxed);
    check!(
        foreign == 0,
        "{foreign} registers held neither zero nor the thread's own value after a system call; the first, x{} after call {} (1 Yield, 2 Signal, 3 Wait, 4 IPC Call, 5 invocation), held {value:#x}",
        place & 0xFF,
        place >> 8
    );
    Ok(())
}

/// The slot the repeater signals through, its last answer (0: ok, else the
/// error code + 1) and how many times it has signalled.
static REPEATED: AtomicU64 = AtomicU64::new(0);
static REPEATED_ANSWER: AtomicU64 = AtomicU64::new(0);
static REPEATS: AtomicU64 = AtomicU64::new(0);

/// Signals through [`REPEATED`] and yields, forever; between two Signals
/// it makes no other lookup, so the kernel's per-thread lookup cache would
/// answer the second one if nothing invalidated it.
extern "C" fn repeater(_: u64) -> ! {
    let through: Cap<Notification> =
        Cap::from_slot(Slot::new(REPEATED.load(Ordering::Relaxed) as u32));
    loop {
        let answer = match through.signal() {
            Ok(()) => 0,
            Err(e) => u64::from(e.code()) + 1,
        };
        REPEATED_ANSWER.store(answer, Ordering::Relaxed);
        REPEATS.fetch_add(1, Ordering::Relaxed);
        sys::yield_now();
    }
}

/// Lets the repeater (same priority) signal once more; its answer.
fn repeat_once() -> Result<Result<(), u64>, &'static str> {
    let before = REPEATS.load(Ordering::Relaxed);
    for _ in 0..100 {
        sys::yield_now();
        if REPEATS.load(Ordering::Relaxed) != before {
            return Ok(match REPEATED_ANSWER.load(Ordering::Relaxed) {
                0 => Ok(()),
                code => Err(code - 1),
            });
        }
    }
    Err("the repeater did not run")
}

/// One thread signals through a copy; another deletes the copy between two
/// of its Signals: the second must fail at once. The kernel remembers each
/// thread's last message-passing lookup, so this holds only because every
/// capability change invalidates what was remembered (with
/// `seed=stale-lookup-cache` the deleted copy keeps working).
fn a_deleted_capability_stops_working_at_once(slots: &mut Slots) -> Outcome {
    let notification: Cap<Notification> = match make::<Notification>(slots) {
        Ok(n) => n,
        Err(e) => rt::fail!("retype notification: {e:?}"),
    };
    let copy = slots.take();
    check!(
        cnode().copy(copy, notification, Rights::ALL).is_ok(),
        "copy"
    );
    REPEATED.store(u64::from(copy), Ordering::Relaxed);
    let own: Cap<Tcb> = bootinfo::INIT_TCB;
    check!(
        own.set_priority(100).is_ok(),
        "set the root task's priority"
    );
    let repeater = spawn(slots, repeater, 0, 100);
    let Ok(repeater) = repeater else {
        rt::fail!("spawn the repeater: {repeater:?}")
    };
    let first = repeat_once();
    check!(first == Ok(Ok(())), "Signal through the copy: {first:?}");
    check!(cnode().delete(copy).is_ok(), "delete the copy");
    let deleted = repeat_once();
    let empty = u64::from(Error::EmptySlot.code());
    let lookup = u64::from(Error::LookupFailed.code());
    check!(
        deleted == Ok(Err(empty)) || deleted == Ok(Err(lookup)),
        "Signal through the deleted copy answered {deleted:?} (Err(code) expected: EmptySlot {empty} or LookupFailed {lookup})"
    );
    check!(
        cnode().copy(copy, notification, Rights::READ).is_ok(),
        "a read-only copy in the same slot"
    );
    let read_only = repeat_once();
    let rights = u64::from(Error::InsufficientRights.code());
    check!(
        read_only == Ok(Err(rights)),
        "Signal through the read-only copy answered {read_only:?} (InsufficientRights is {rights})"
    );
    check!(repeater.suspend().is_ok(), "suspend the repeater");
    Ok(())
}
