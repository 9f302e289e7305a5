//! `hardening`: the kernel-core findings of the code audit (issue 12), each
//! as the attack a holder of ordinary capabilities would try. Every test
//! passes only when the kernel refuses the attack:
//!
//! - a PageTable leaves an address space only empty (else a Frame mapped
//!   through it stays reachable after the Frame dies, or a leaf is read as
//!   a table pointer when the table is installed one level higher), and
//!   the table capability needs the write right;
//! - a thread runs only with the authority it was configured with: an
//!   unconfigured thread does not run in the root task's space, and one
//!   whose IPC buffer or address space died does not fall back to the root
//!   task's;
//! - revoking a thread's CNode capability leaves the thread with no CSpace,
//!   never with the next configured thread's;
//! - rights are checked: a read-only Frame is no IPC buffer, a read-only
//!   CNode capability changes nothing, a rightless IrqHandler capability
//!   does nothing;
//! - a message with the fault label cannot be sent by a thread, so a fault
//!   handler can tell a real fault from a forged one;
//! - one IoSpace holds at most its share of the IOMMU unit's attachment
//!   records and nests, so another IoSpace can always attach;
//! - a kernel reference to an object dies with it: a thread's fault
//!   endpoint and an interrupt line's notification, once deleted and their
//!   memory retyped as a Frame, are never written through; a caller whose
//!   server dies is woken with `DeadObject`, and a server's reply to a
//!   caller that died goes nowhere.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use rt::check;
use rt::space::{Objects, Scratch};
use rt::testing::{Outcome, Suite};
use sys::bootinfo;
use sys::{
    CNode, Cap, Endpoint, Error, Frame, IrqControl, MapRights, MessageInfo, Notification,
    PageTable, Rights, Slot, Tcb,
};

rt::entry!(main);

/// Where the root task maps frames into itself to fill them.
const SCRATCH: u64 = 0x10_0000_0000;
/// A 2 MiB region of the root task's space whose last-level table the
/// page-table test installs itself.
const TABLE_REGION: u64 = 0x11_0000_0000;
/// Where a child's code runs, in its own address space.
const CHILD_CODE: u64 = 0x40_0000;
/// The slot of a child's CNode its program uses (endpoint or notification).
const CHILD_SLOT: u64 = 1;
/// The slot a child's second program signals.
const CHILD_SIGNAL_SLOT: u32 = 5;

// The children's programs: data here, copied into Frames of their spaces.
#[allow(unsafe_code)]
mod programs {
    core::arch::global_asm!(
        ".section .rodata.programs, \"a\"",
        // `signaller`: Signal slot 1, then spin.
        ".global signaller_start, signaller_end",
        ".balign 16",
        "signaller_start:",
        #[cfg(target_arch = "x86_64")]
        "mov eax, 5
         mov edi, 1
         syscall
      2: pause
         jmp 2b",
        #[cfg(target_arch = "aarch64")]
        "mov x8, #5
         mov x0, #1
         svc #0
      2: b 2b",
        "signaller_end:",
        // `receiver`: Recv on slot 1, then Signal slot 5, then spin.
        ".global receiver_start, receiver_end",
        ".balign 16",
        "receiver_start:",
        #[cfg(target_arch = "x86_64")]
        "mov eax, 3
         mov edi, 1
         syscall
         mov eax, 5
         mov edi, 5
         syscall
      3: pause
         jmp 3b",
        #[cfg(target_arch = "aarch64")]
        "mov x8, #3
         mov x0, #1
         svc #0
         mov x8, #5
         mov x0, #5
         svc #0
      3: b 3b",
        "receiver_end:",
        // `faulter`: load from address 0, then spin.
        ".global faulter_start, faulter_end",
        ".balign 16",
        "faulter_start:",
        #[cfg(target_arch = "x86_64")]
        "xor eax, eax
         mov rax, [rax]
      4: pause
         jmp 4b",
        #[cfg(target_arch = "aarch64")]
        "mov x1, #0
         ldr x0, [x1]
      4: b 4b",
        "faulter_end:",
    );
}

/// The bytes between two symbols of `programs`.
macro_rules! program {
    ($start:ident, $end:ident) => {{
        #[allow(unsafe_code)]
        {
            unsafe extern "C" {
                static $start: u8;
                static $end: u8;
            }
            let start = &raw const $start;
            let end = &raw const $end;
            // SAFETY: the symbols delimit bytes assembled in `programs`,
            // in .rodata, never written.
            unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) }
        }
    }};
}

fn signaller() -> &'static [u8] {
    program!(signaller_start, signaller_end)
}

fn receiver() -> &'static [u8] {
    program!(receiver_start, receiver_end)
}

fn faulter() -> &'static [u8] {
    program!(faulter_start, faulter_end)
}

/// The root task's CNode, address space and objects.
struct World {
    objects: Objects,
    scratch: Scratch,
}

fn cnode() -> Cap<CNode> {
    bootinfo::INIT_CNODE
}

fn own_space() -> Cap<PageTable> {
    bootinfo::INIT_VSPACE
}

/// Turns a failed step into the test's failure, naming the step.
fn step<T>(what: &str, result: Result<T, Error>) -> Result<T, rt::testing::Failure> {
    result.map_err(|e| rt::testing::Failure(rt::__format!("{what}: {e:?}")))
}

/// A thread in an address space of its own with `program` at
/// [`CHILD_CODE`], a 16-slot CNode and an IPC buffer: everything
/// `Tcb.Configure` takes, made but not yet configured.
struct Child {
    tcb: Cap<Tcb>,
    cnode: Cap<CNode>,
    root: Cap<PageTable>,
    buffer: Cap<Frame>,
}

impl Child {
    fn new(world: &mut World, program: &[u8]) -> Result<Child, rt::testing::Failure> {
        let cnode: Cap<CNode> = step("retype a CNode", world.objects.make_sized::<CNode>(4))?;
        let root: Cap<PageTable> = step("retype a root", world.objects.make::<PageTable>())?;
        let code = step(
            "the code frame",
            world.scratch.filled_frame(&mut world.objects, program),
        )?;
        step(
            "map the code",
            rt::space::map_frame(
                &mut world.objects,
                code,
                root,
                CHILD_CODE,
                MapRights::READ_EXECUTE,
            ),
        )?;
        let buffer: Cap<Frame> = step(
            "retype the IPC buffer",
            world.objects.make_sized::<Frame>(12),
        )?;
        step(
            "map the IPC buffer",
            rt::space::map_frame(
                &mut world.objects,
                buffer,
                root,
                abi::ipc::IPC_BUFFER_ADDRESS,
                MapRights::READ_WRITE,
            ),
        )?;
        let tcb: Cap<Tcb> = step("retype a TCB", world.objects.make::<Tcb>())?;
        step("registers", tcb.write_registers(CHILD_CODE, 0, CHILD_SLOT))?;
        step("priority", tcb.set_priority(100))?;
        Ok(Child {
            tcb,
            cnode,
            root,
            buffer,
        })
    }

    fn configure(&self) -> Result<(), Error> {
        self.tcb.configure(
            None,
            self.cnode,
            self.root,
            self.buffer,
            abi::ipc::IPC_BUFFER_ADDRESS,
        )
    }

    /// Deletes the thread and its address space (it may be spinning).
    fn delete(&self) -> Outcome {
        step("delete the child", cnode().delete(self.tcb.slot()))?;
        step("delete the child's root", cnode().delete(self.root.slot()))?;
        Ok(())
    }
}

fn main(_startup: &rt::Startup) -> i32 {
    let Some(info) = rt::boot::boot_info() else {
        rt::println!("[hardening] no boot-info page");
        return 1;
    };
    let mut objects = Objects::from_boot_info(info);
    let scratch = match Scratch::for_root_task(&mut objects, SCRATCH) {
        Ok(scratch) => scratch,
        Err(e) => {
            rt::println!("[hardening] tables for the scratch page: {e:?}");
            return 1;
        }
    };
    let mut world = World { objects, scratch };
    let mut suite = Suite::new();
    suite.run("page_table_leaves_a_space_only_empty", || {
        page_table_leaves_only_empty(&mut world)
    });
    suite.run("page_table_needs_the_write_right", || {
        page_table_needs_write(&mut world)
    });
    suite.run("unconfigured_thread_does_not_run", || {
        unconfigured_thread(&mut world)
    });
    suite.run("dead_ipc_buffer_or_space_stops_the_thread", || {
        dead_buffer_or_space(&mut world)
    });
    suite.run("revoked_cspace_is_never_another_threads", || {
        revoked_cspace(&mut world)
    });
    suite.run("ipc_buffer_needs_read_and_write_rights", || {
        ipc_buffer_rights(&mut world)
    });
    suite.run("cnode_rights_are_checked", || cnode_rights(&mut world));
    suite.run("irq_handler_rights_are_checked", || {
        irq_handler_rights(&mut world)
    });
    suite.run("fault_label_cannot_be_forged", || {
        fault_label_cannot_be_forged(&mut world)
    });
    suite.run("deleted_fault_endpoint_is_never_written", || {
        deleted_fault_endpoint(&mut world)
    });
    suite.run("deleted_irq_notification_is_never_signalled", || {
        deleted_irq_notification(&mut world)
    });
    suite.run("one_io_space_cannot_fill_the_units_tables", || {
        io_space_shares(&mut world)
    });
    suite.run("dead_server_wakes_its_caller", || {
        dead_server_wakes_its_caller(&mut world)
    });
    suite.run("reply_to_a_dead_caller_writes_nothing", || {
        reply_to_a_dead_caller(&mut world)
    });
    suite.finish()
}

/// Finding 1: `PageTable.Unmap` of a table that still maps a Frame is
/// refused. A kernel that let it go would leave the Frame's leaf inside a
/// table nobody can see: delete the Frame, retype kernel objects there and
/// map the table back, and the old leaf shows kernel memory; or install the
/// table one level higher and the leaf is read as a table pointer to a
/// page the user can write, which then maps any physical page.
fn page_table_leaves_only_empty(world: &mut World) -> Outcome {
    // Every level above the last for TABLE_REGION (the tables of the next
    // 2 MiB region share them), then our own last-level table.
    step(
        "upper tables",
        rt::space::tables_for(&mut world.objects, own_space(), TABLE_REGION + (2 << 20)),
    )?;
    let table: Cap<PageTable> = step("retype the table", world.objects.make::<PageTable>())?;
    step(
        "install it as the last level",
        table.map(own_space(), TABLE_REGION),
    )?;
    let frame: Cap<Frame> = step("retype a frame", world.objects.make_sized::<Frame>(12))?;
    step(
        "map the frame through the table",
        frame.map(own_space(), TABLE_REGION, MapRights::READ_WRITE),
    )?;
    let unmapped = table.unmap();
    check!(
        unmapped == Err(Error::TableNotEmpty),
        "PageTable.Unmap of a table that still maps a frame answered {unmapped:?}: the table left the space with the frame's leaf in it"
    );
    // Emptied, it may leave, and come back at another level.
    step("unmap the frame", frame.unmap())?;
    step("unmap the empty table", table.unmap())?;
    let far = 0x12_0000_0000u64 << 4;
    let again = table.map(own_space(), far);
    check!(
        again.is_ok(),
        "the empty table could not be installed elsewhere: {again:?}"
    );
    let back = frame.map(own_space(), far, MapRights::READ);
    check!(
        back == Err(Error::MissingPageTable),
        "a frame mapped through the re-installed (higher) table answered {back:?}"
    );
    step("unmap the table again", table.unmap())?;
    step("delete the frame", cnode().delete(frame.slot()))?;
    step("delete the table", cnode().delete(table.slot()))?;
    Ok(())
}

/// Finding 1 (rights): a read-only PageTable capability installs and
/// removes nothing.
fn page_table_needs_write(world: &mut World) -> Outcome {
    let table: Cap<PageTable> = step("retype the table", world.objects.make::<PageTable>())?;
    let read_only = step("read-only copy", world.objects.mint(table, Rights::READ, 0))?;
    let mapped = read_only.map(own_space(), 0x13_0000_0000);
    check!(
        mapped == Err(Error::InsufficientRights),
        "PageTable.Map through a read-only capability answered {mapped:?}"
    );
    if mapped.is_ok() {
        let _ = table.unmap();
    }
    step("delete the copy", cnode().delete(read_only.slot()))?;
    step("delete the table", cnode().delete(table.slot()))?;
    Ok(())
}

/// Finding 5: a thread nobody configured does not run (it used to run in
/// the root task's address space with the root task's CSpace and IPC
/// buffer).
fn unconfigured_thread(world: &mut World) -> Outcome {
    let tcb: Cap<Tcb> = step("retype a TCB", world.objects.make::<Tcb>())?;
    step("registers", tcb.write_registers(CHILD_CODE, 0, 0))?;
    let resumed = tcb.resume();
    let _ = tcb.suspend();
    step("delete the TCB", cnode().delete(tcb.slot()))?;
    check!(
        resumed == Err(Error::NotConfigured),
        "Resume of an unconfigured thread answered {resumed:?}: it would run with the root task's authority"
    );
    Ok(())
}

/// Finding 5: a thread whose IPC buffer died, or whose address space died,
/// does not run on the root task's.
fn dead_buffer_or_space(world: &mut World) -> Outcome {
    let child = Child::new(world, signaller())?;
    step("configure", child.configure())?;
    step("delete the IPC buffer", cnode().delete(child.buffer.slot()))?;
    let resumed = child.tcb.resume();
    let _ = child.tcb.suspend();
    check!(
        resumed == Err(Error::NotConfigured),
        "Resume after the IPC buffer died answered {resumed:?}: the thread would use the root task's buffer"
    );
    let other = Child::new(world, signaller())?;
    step("configure the second", other.configure())?;
    step(
        "delete the second's address space",
        cnode().delete(other.root.slot()),
    )?;
    let resumed = other.tcb.resume();
    let _ = other.tcb.suspend();
    check!(
        resumed == Err(Error::NotConfigured),
        "Resume after the address space died answered {resumed:?}"
    );
    child.delete()?;
    step("delete the second", cnode().delete(other.tcb.slot()))?;
    Ok(())
}

/// Finding 6: revoking the CNode capability a thread was configured with
/// takes its CSpace away; configuring another thread afterwards must not
/// hand the first one the second one's CSpace.
fn revoked_cspace(world: &mut World) -> Outcome {
    let first = Child::new(world, signaller())?;
    step("configure the first", first.configure())?;
    // The kernel's copy of the first CNode capability is a child of ours.
    step(
        "revoke the first's CNode",
        cnode().revoke(first.cnode.slot()),
    )?;
    // The second thread's CSpace holds a notification at the slot the
    // first one's program signals.
    let second = Child::new(world, signaller())?;
    let probe: Cap<Notification> = step(
        "retype a notification",
        world.objects.make::<Notification>(),
    )?;
    step(
        "the notification into the second's CNode",
        second.cnode.copy_from(
            Slot::new(CHILD_SLOT as u32),
            cnode(),
            probe.slot(),
            Rights::ALL,
        ),
    )?;
    step("configure the second", second.configure())?;
    let resumed = first.tcb.resume();
    // Give the first thread (higher priority) its chance to signal.
    for _ in 0..4 {
        sys::yield_now();
    }
    let _ = first.tcb.suspend();
    // Our own signal with badge 2 makes Wait return at once; a 1 in the
    // word is the first thread's signal through the second's CSpace.
    let ours = step("badge 2", world.objects.mint(probe, Rights::ALL, 2))?;
    step("signal", ours.signal())?;
    let word = step("wait", probe.wait())?;
    first.delete()?;
    second.delete()?;
    check!(
        word & 1 == 0,
        "the first thread signalled the second's notification (word {word:#x}): it resolved capabilities in another thread's CSpace"
    );
    check!(
        resumed == Err(Error::NotConfigured),
        "Resume of a thread whose CSpace was revoked answered {resumed:?}"
    );
    Ok(())
}

/// Finding 7: the kernel writes message registers into the IPC buffer, so
/// a Frame capability without the write right is no IPC buffer.
fn ipc_buffer_rights(world: &mut World) -> Outcome {
    let child = Child::new(world, signaller())?;
    let read_only = step(
        "read-only buffer copy",
        world.objects.mint(child.buffer, Rights::READ, 0),
    )?;
    let configured = child.tcb.configure(
        None,
        child.cnode,
        child.root,
        read_only,
        abi::ipc::IPC_BUFFER_ADDRESS,
    );
    check!(
        configured == Err(Error::InsufficientRights),
        "Tcb.Configure with a read-only IPC buffer answered {configured:?}"
    );
    child.delete()?;
    Ok(())
}

/// Finding 7: a CNode capability without the write right changes no slot.
fn cnode_rights(world: &mut World) -> Outcome {
    let read_only = step(
        "read-only CNode copy",
        world.objects.mint(cnode(), Rights::READ, 0),
    )?;
    let victim: Cap<Notification> = step(
        "retype a notification",
        world.objects.make::<Notification>(),
    )?;
    let deleted = read_only.delete(victim.slot());
    check!(
        deleted == Err(Error::InsufficientRights),
        "CNode.Delete through a read-only CNode capability answered {deleted:?}"
    );
    let dest = step("a free slot", world.objects.slot())?;
    let copied = read_only.copy(dest, victim, Rights::ALL);
    check!(
        copied == Err(Error::InsufficientRights),
        "CNode.Copy into a read-only CNode capability answered {copied:?}"
    );
    let revoked = read_only.revoke(victim.slot());
    check!(
        revoked == Err(Error::InsufficientRights),
        "CNode.Revoke through a read-only CNode capability answered {revoked:?}"
    );
    let _ = cnode().delete(dest);
    let _ = cnode().delete(victim.slot());
    step("delete the copy", cnode().delete(read_only.slot()))?;
    Ok(())
}

/// The line `irq_handler_rights_are_checked` takes (ISA 3 on x86_64 is a
/// serial port nobody uses here; PPI 30 is the EL0 physical timer).
#[cfg(target_arch = "x86_64")]
const FREE_LINE: u64 = 3;
#[cfg(target_arch = "aarch64")]
const FREE_LINE: u64 = 30;

/// Finding 7: an IrqHandler capability without rights neither routes the
/// line nor acknowledges it.
fn irq_handler_rights(world: &mut World) -> Outcome {
    let control: Cap<IrqControl> = bootinfo::IRQ_CONTROL;
    let slot = step("a free slot", world.objects.slot())?;
    let handler = step("IrqControl.Get", control.get(FREE_LINE, slot))?;
    let rightless = step(
        "rightless copy",
        world.objects.mint(handler, Rights::NONE, 0),
    )?;
    let notification: Cap<Notification> = step(
        "retype a notification",
        world.objects.make::<Notification>(),
    )?;
    let routed = rightless.set_notification(notification);
    let acked = rightless.ack();
    step("delete the copy", cnode().delete(rightless.slot()))?;
    step("delete the handler", cnode().delete(handler.slot()))?;
    check!(
        routed == Err(Error::InsufficientRights),
        "IrqHandler.SetNotification through a rightless capability answered {routed:?}"
    );
    check!(
        acked == Err(Error::InsufficientRights),
        "IrqHandler.Ack through a rightless capability answered {acked:?}"
    );
    Ok(())
}

/// Finding 8: a thread cannot send a message labelled as a fault, so a
/// fault handler (init) never reports a fault that did not happen.
fn fault_label_cannot_be_forged(world: &mut World) -> Outcome {
    let endpoint: Cap<Endpoint> = step("retype an endpoint", world.objects.make::<Endpoint>())?;
    let heard: Cap<Notification> = step(
        "retype a notification",
        world.objects.make::<Notification>(),
    )?;
    // A receiver in its own space: Recv on its slot 1, then Signal slot 5.
    let child = Child::new(world, receiver())?;
    step(
        "endpoint into the child's CNode",
        child.cnode.copy_from(
            Slot::new(CHILD_SLOT as u32),
            cnode(),
            endpoint.slot(),
            Rights::ALL,
        ),
    )?;
    step(
        "notification into the child's CNode",
        child.cnode.copy_from(
            Slot::new(CHILD_SIGNAL_SLOT),
            cnode(),
            heard.slot(),
            Rights::ALL,
        ),
    )?;
    step("configure", child.configure())?;
    step("resume", child.tcb.resume())?;
    // The child (priority 100) now waits in Recv.
    let sent = endpoint.send(MessageInfo::new(abi::FAULT_LABEL, 4), [0xE, 0, 0, 0]);
    if sent.is_ok() {
        // It was delivered: the child signals when it has it.
        let _ = heard.wait();
    }
    child.delete()?;
    check!(
        sent == Err(Error::InvalidMessage),
        "Send with the fault label answered {sent:?}: a handler would take it for a real fault"
    );
    Ok(())
}

/// Where the dangling-reference tests map the page that replaced a deleted
/// object.
const REUSED_PAGE: u64 = 0x14_0000_0000;

/// A 4 KiB Untyped holding one object of `kind`, in a fresh slot: delete
/// the object and the Untyped's memory starts over, so the next Frame
/// retyped from it is exactly the dead object's memory.
fn lone_object<T: sys::FixedSize>(
    world: &mut World,
) -> Result<(Cap<sys::Untyped>, Cap<T>), rt::testing::Failure> {
    let small: Cap<sys::Untyped> = step(
        "a 4 KiB Untyped",
        world.objects.make_sized::<sys::Untyped>(12),
    )?;
    let slot = step("a free slot", world.objects.slot())?;
    let object = step("retype the object", small.retype(slot))?;
    Ok((small, object))
}

/// The dead object's memory as a Frame mapped read-only at
/// [`REUSED_PAGE`].
fn reuse_as_frame(
    world: &mut World,
    small: Cap<sys::Untyped>,
) -> Result<Cap<Frame>, rt::testing::Failure> {
    reuse_as_frame_with(world, small, MapRights::READ)
}

/// [`reuse_as_frame`] with the mapping's `rights`.
fn reuse_as_frame_with(
    world: &mut World,
    small: Cap<sys::Untyped>,
    rights: MapRights,
) -> Result<Cap<Frame>, rt::testing::Failure> {
    let slot = step("a free slot", world.objects.slot())?;
    let frame = step(
        "retype a Frame where the object was",
        small.retype_sized::<Frame>(12, slot),
    )?;
    step(
        "map the reused page",
        rt::space::map_frame(&mut world.objects, frame, own_space(), REUSED_PAGE, rights),
    )?;
    Ok(frame)
}

/// The first non-zero word of the page at [`REUSED_PAGE`]: (offset, value).
fn first_nonzero_word() -> Option<(u64, u64)> {
    first_word_other_than(0)
}

/// The first word of the page at [`REUSED_PAGE`] that is not `expected`:
/// (offset, value).
#[allow(unsafe_code)]
fn first_word_other_than(expected: u64) -> Option<(u64, u64)> {
    (0..512u64).find_map(|i| {
        // SAFETY: a 4 KiB Frame is mapped readable at REUSED_PAGE while the
        // tests that call this run; `i` < 512.
        let value = unsafe { ((REUSED_PAGE + 8 * i) as *const u64).read_volatile() };
        (value != expected).then_some((8 * i, value))
    })
}

/// Fills the page at [`REUSED_PAGE`] (mapped writable) with `byte`.
#[allow(unsafe_code)]
fn fill_reused_page(byte: u8) {
    // SAFETY: a 4 KiB Frame is mapped read-write at REUSED_PAGE by the
    // caller; nothing else in this program refers to that memory.
    unsafe { core::ptr::write_bytes(REUSED_PAGE as *mut u8, byte, 4096) }
}

/// Unmaps and deletes the reused Frame and its Untyped.
fn release(frame: Cap<Frame>, small: Cap<sys::Untyped>) -> Outcome {
    step("unmap the reused page", frame.unmap())?;
    step("delete the reused page", cnode().delete(frame.slot()))?;
    step("delete the Untyped", cnode().delete(small.slot()))?;
    Ok(())
}

/// Finding 2 (sweep): a thread's fault endpoint dies before the thread
/// faults. The kernel must forget it: a kernel that kept it would queue
/// the faulting thread in the endpoint's memory, by then a Frame.
fn deleted_fault_endpoint(world: &mut World) -> Outcome {
    let (small, endpoint) = lone_object::<Endpoint>(world)?;
    let child = Child::new(world, faulter())?;
    step(
        "configure with the fault endpoint",
        child.tcb.configure(
            Some(endpoint),
            child.cnode,
            child.root,
            child.buffer,
            abi::ipc::IPC_BUFFER_ADDRESS,
        ),
    )?;
    step("delete the endpoint", cnode().delete(endpoint.slot()))?;
    let frame = reuse_as_frame(world, small)?;
    step("resume", child.tcb.resume())?;
    // It runs (same priority, we yield) and faults at once.
    for _ in 0..4 {
        sys::yield_now();
    }
    let written = first_nonzero_word();
    child.delete()?;
    release(frame, small)?;
    check!(
        written.is_none(),
        "the fault went to the deleted endpoint: the kernel wrote {:#x} at offset {:#x} of the page that replaced it",
        written.map_or(0, |(_, v)| v),
        written.map_or(0, |(o, _)| o)
    );
    Ok(())
}

/// The line `deleted_irq_notification_is_never_signalled` takes and how
/// it is made to fire: x86_64 the PIT's line 0 (100 Hz by itself);
/// aarch64 the EL1 physical timer (PPI 30), armed to fire in ~1 ms.
#[cfg(target_arch = "x86_64")]
mod timer_line {
    pub const LINE: u64 = 0;
    pub fn arm() {}
}
#[cfg(target_arch = "aarch64")]
mod timer_line {
    pub const LINE: u64 = 30;
    #[allow(unsafe_code)]
    pub fn arm() {
        // SAFETY: the kernel lets EL0 program the physical timer
        // (CNTKCTL_EL1.EL0PTEN); only timer registers are written.
        unsafe {
            core::arch::asm!(
                "msr cntp_tval_el0, {t}",
                "msr cntp_ctl_el0, {one}",
                "isb",
                t = in(reg) 62_500u64,
                one = in(reg) 1u64,
                options(nostack)
            );
        }
    }
}

/// Finding 2 (sweep): an interrupt line's notification dies while the
/// line is live. The kernel must stop signalling it: a kernel that kept it
/// would OR the badge into its memory, by then a Frame, at the next
/// interrupt. Afterwards a live notification on the same line hears the
/// interrupt, so the line did fire.
fn deleted_irq_notification(world: &mut World) -> Outcome {
    let (small, doomed) = lone_object::<Notification>(world)?;
    let control: Cap<IrqControl> = bootinfo::IRQ_CONTROL;
    let slot = step("a free slot", world.objects.slot())?;
    let handler = step("IrqControl.Get", control.get(timer_line::LINE, slot))?;
    step("route the line", handler.set_notification(doomed))?;
    step("delete the notification", cnode().delete(doomed.slot()))?;
    let frame = reuse_as_frame(world, small)?;
    timer_line::arm();
    // Tens of milliseconds: several interrupts of either timer.
    for _ in 0..50_000 {
        sys::yield_now();
    }
    let written = first_nonzero_word();
    let live: Cap<Notification> = step(
        "retype a live notification",
        world.objects.make::<Notification>(),
    )?;
    step("route the line to it", handler.set_notification(live))?;
    step("acknowledge", handler.ack())?;
    timer_line::arm();
    let heard = live.wait();
    step("delete the handler", cnode().delete(handler.slot()))?;
    release(frame, small)?;
    check!(
        written.is_none(),
        "the interrupt signalled the deleted notification: the kernel wrote {:#x} at offset {:#x} of the page that replaced it",
        written.map_or(0, |(_, v)| v),
        written.map_or(0, |(o, _)| o)
    );
    check!(heard.is_ok(), "the line never fired: {heard:?}");
    Ok(())
}

/// The share of the unit's 64 attachment records and 32 nests one IoSpace
/// may hold (`iospace::SHARE`).
const ATTACHMENT_SHARE: u32 = 16;
const NEST_SHARE: u32 = 8;
/// Requester ids no device on either machine uses (bus 2): attached
/// without DMA.
const SPARE_REQUESTERS: u32 = 0x200;

/// Finding 9: the unit-wide limits (64 attachments, 32 nests) cannot be
/// filled by one IoSpace's holder: it gets `IoShareExhausted` at its share
/// and another IoSpace still attaches.
fn io_space_shares(world: &mut World) -> Outcome {
    let control: Cap<sys::IommuControl> = bootinfo::IOMMU_CONTROL;
    let greedy = step("an IoSpace", world.objects.make_io_space(control))?;
    let other = step("another IoSpace", world.objects.make_io_space(control))?;
    let mut devices = [None; (ATTACHMENT_SHARE + 1) as usize];
    for (i, device) in devices.iter_mut().enumerate() {
        let slot = step("a free slot", world.objects.slot())?;
        *device = Some(step(
            "MintDevice",
            control.mint_device(SPARE_REQUESTERS + i as u32, slot),
        )?);
    }
    let devices = devices.map(|d| d.expect("minted above"));
    let (within, beyond) = devices.split_at(ATTACHMENT_SHARE as usize);
    for device in within {
        step("attach within the share", device.attach(greedy))?;
    }
    let refused = beyond[0].attach(greedy);
    let elsewhere = beyond[0].attach(other);
    for device in within {
        step("detach", device.detach())?;
    }
    let _ = beyond[0].detach();
    // Nests: each user table a device is nested on is one.
    let mut nested = 0;
    let mut nest_refused = Ok(());
    for (i, device) in devices.iter().enumerate().take(NEST_SHARE as usize + 1) {
        let slot = step("a free slot", world.objects.slot())?;
        let root = 0x40_0000 + 0x1000 * i as u64;
        let table = step(
            "BindUserTable",
            greedy.bind_user_table(root, user_table_format(), slot),
        )?;
        match device.attach_nested(table) {
            Ok(()) => nested += 1,
            Err(e) => {
                nest_refused = Err(e);
                break;
            }
        }
    }
    for device in &devices {
        let _ = device.detach();
        step("delete a device", cnode().delete(device.slot()))?;
    }
    step("delete the IoSpace", cnode().delete(greedy.slot()))?;
    step("delete the other IoSpace", cnode().delete(other.slot()))?;
    check!(
        refused == Err(Error::IoShareExhausted),
        "attachment {} to one IoSpace answered {refused:?}",
        ATTACHMENT_SHARE + 1
    );
    check!(
        elsewhere.is_ok(),
        "another IoSpace could not attach: {elsewhere:?}"
    );
    check!(
        nested == NEST_SHARE && nest_refused == Err(Error::IoShareExhausted),
        "{nested} nests in one IoSpace, then {nest_refused:?} (share {NEST_SHARE})"
    );
    Ok(())
}

/// The stage-1 format of this machine's IOMMU.
fn user_table_format() -> sys::UserTableFormat {
    if cfg!(target_arch = "x86_64") {
        sys::UserTableFormat::X86FirstStage4Level
    } else {
        sys::UserTableFormat::ArmStage1Granule4k48Bit
    }
}

// ----- threads of the root task's own space (the reply tests) -----

/// One helper thread's stack.
#[repr(C, align(16))]
struct Stack([u8; 8 * 1024]);

static mut STACKS: [Stack; 4] = [const { Stack([0; 8 * 1024]) }; 4];

/// The top of stack `index`, as the architecture expects it at a
/// function's first instruction (x86_64: as if a return address had been
/// pushed).
#[allow(unsafe_code)]
fn stack_top(index: usize) -> u64 {
    // SAFETY: only the address is taken; each test gives each stack to one
    // thread, which is deleted before the stack is handed out again.
    let top = unsafe { core::ptr::addr_of!(STACKS[index]) as u64 } + 8 * 1024;
    if cfg!(target_arch = "x86_64") {
        top - 8
    } else {
        top
    }
}

use core::sync::atomic::{AtomicU64, Ordering};

/// The slots the helper threads use (set before they start).
static ENDPOINT: AtomicU64 = AtomicU64::new(0);
static GO: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicU64 = AtomicU64::new(0);
static NEVER: AtomicU64 = AtomicU64::new(0);
/// What the caller's `Call` answered: 0 for success, else the error code.
static CALL_RESULT: AtomicU64 = AtomicU64::new(u64::MAX);

fn slot_of(cell: &AtomicU64) -> Slot {
    Slot::new(cell.load(Ordering::Relaxed) as u32)
}

/// Blocks for good (on a notification nobody signals).
fn block_forever() -> ! {
    let never: Cap<Notification> = Cap::from_slot(slot_of(&NEVER));
    loop {
        let _ = never.wait();
    }
}

/// Receives one call and never answers it.
extern "C" fn silent_server(_: u64) -> ! {
    let endpoint: Cap<Endpoint> = Cap::from_slot(slot_of(&ENDPOINT));
    let _ = endpoint.recv();
    block_forever()
}

/// Receives one call, waits for `GO`, then replies (and receives again).
extern "C" fn late_server(_: u64) -> ! {
    let endpoint: Cap<Endpoint> = Cap::from_slot(slot_of(&ENDPOINT));
    let go: Cap<Notification> = Cap::from_slot(slot_of(&GO));
    let _ = endpoint.recv();
    let _ = go.wait();
    let _ = endpoint.reply_recv(MessageInfo::new(7, 4), [u64::MAX; 4]);
    block_forever()
}

/// Calls, records the answer, signals `DONE`.
extern "C" fn caller(_: u64) -> ! {
    let endpoint: Cap<Endpoint> = Cap::from_slot(slot_of(&ENDPOINT));
    let answer = endpoint.call(MessageInfo::new(1, 0), [0; 4]);
    let code = match answer {
        Ok(_) => 0,
        Err(e) => u64::from(e.code()),
    };
    CALL_RESULT.store(code, Ordering::Relaxed);
    let done: Cap<Notification> = Cap::from_slot(slot_of(&DONE));
    let _ = done.signal();
    block_forever()
}

/// Starts `entry` on stack `stack` as `tcb`, a helper thread of the root
/// task at `priority`.
fn start(tcb: Cap<Tcb>, entry: extern "C" fn(u64) -> !, stack: usize, priority: u8) -> Outcome {
    step("configure", tcb.configure_in_root_task(None))?;
    step(
        "registers",
        tcb.write_registers(entry as usize as u64, stack_top(stack), 0),
    )?;
    step("priority", tcb.set_priority(priority))?;
    step("resume", tcb.resume())?;
    Ok(())
}

/// The endpoint and notifications the reply tests share.
fn reply_objects(world: &mut World) -> Result<[Slot; 4], rt::testing::Failure> {
    let endpoint: Cap<Endpoint> = step("retype", world.objects.make())?;
    let mut slots = [endpoint.slot(); 4];
    for slot in &mut slots[1..] {
        let made: Cap<Notification> = step("retype", world.objects.make())?;
        *slot = made.slot();
    }
    for (cell, slot) in [&ENDPOINT, &GO, &DONE, &NEVER].into_iter().zip(slots) {
        cell.store(u64::from(slot), Ordering::Relaxed);
    }
    Ok(slots)
}

fn delete_all(slots: &[Slot]) -> Outcome {
    for &slot in slots {
        step("delete", cnode().delete(slot))?;
    }
    Ok(())
}

/// Finding 2 (sweep): a caller waiting for the reply of a server that dies
/// is woken with `DeadObject` (it would otherwise wait for ever, or be
/// answered later through the dead server's memory).
fn dead_server_wakes_its_caller(world: &mut World) -> Outcome {
    let objects = reply_objects(world)?;
    CALL_RESULT.store(u64::MAX, Ordering::Relaxed);
    let server: Cap<Tcb> = step("retype a TCB", world.objects.make::<Tcb>())?;
    let client: Cap<Tcb> = step("retype a TCB", world.objects.make::<Tcb>())?;
    // Both run ahead of us: the server waits in Recv, the client calls it.
    start(server, silent_server, 0, 150)?;
    start(client, caller, 1, 120)?;
    step("delete the server", cnode().delete(server.slot()))?;
    let done: Cap<Notification> = Cap::from_slot(slot_of(&DONE));
    step("wait for the caller", done.wait())?;
    let result = CALL_RESULT.load(Ordering::Relaxed);
    step("delete the client", cnode().delete(client.slot()))?;
    delete_all(&objects)?;
    check!(
        result == u64::from(Error::DeadObject.code()),
        "the caller of a dead server was answered {result:#x}, not DeadObject"
    );
    Ok(())
}

/// Finding 2 (sweep): a server holds a reply for a caller that then dies,
/// and the caller's memory becomes a Frame. The server's late reply must
/// go nowhere (a kernel that kept the reference writes the reply into the
/// Frame).
fn reply_to_a_dead_caller(world: &mut World) -> Outcome {
    let objects = reply_objects(world)?;
    let server: Cap<Tcb> = step("retype a TCB", world.objects.make::<Tcb>())?;
    start(server, late_server, 2, 150)?;
    let (small, client) = lone_object::<Tcb>(world)?;
    // The client calls at once; the server takes the call and waits for GO.
    start(client, caller, 3, 120)?;
    step("delete the caller", cnode().delete(client.slot()))?;
    let frame = reuse_as_frame_with(world, small, MapRights::READ_WRITE)?;
    // Every byte 4, the kernel's BLOCKED_REPLY state: whatever offset the
    // state of a TCB here would be read from, it says "waiting for a
    // reply", so a kernel that kept the reference would write the reply.
    fill_reused_page(4);
    let go: Cap<Notification> = Cap::from_slot(slot_of(&GO));
    step("let the server reply", go.signal())?;
    let written = first_word_other_than(0x0404_0404_0404_0404);
    step("delete the server", cnode().delete(server.slot()))?;
    release(frame, small)?;
    delete_all(&objects)?;
    check!(
        written.is_none(),
        "the reply went to the dead caller: the kernel wrote {:#x} at offset {:#x} of the page that replaced it",
        written.map_or(0, |(_, v)| v),
        written.map_or(0, |(o, _)| o)
    );
    Ok(())
}
