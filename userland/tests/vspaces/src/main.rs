//! `vspaces`: address spaces from user space. The root task builds a second
//! address space out of a PageTable root, intermediate PageTables and
//! Frames, copies a tiny program into it, and starts a thread there whose
//! fault handler is the root task:
//!
//! - the child's first load touches an unmapped page: the fault reaches the
//!   root task, which maps a Frame there and resumes the child;
//! - the child then sends what it read over an endpoint: IPC between two
//!   address spaces;
//! - the mapping rules answer with their errors (missing page table, address
//!   in use, write+execute, rights beyond the capability's);
//! - deleting the child's root stops it;
//! - a dead root made again as a lower-level table is no root.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use rt::check;
use rt::space::{Objects, Scratch};
use rt::testing::{Outcome, Suite};
use sys::bootinfo;
use sys::{
    CNode, Cap, Endpoint, Error, Frame, MapRights, MessageInfo, PageTable, Retype, Rights, Slot,
    Tcb, Untyped,
};

rt::entry!(main);

/// Where the child's code runs, in its address space.
const CHILD_CODE: u64 = 0x40_0000;
/// The page the child reads; not mapped until its fault is handled.
const CHILD_DATA: u64 = 0x50_0000;
/// Where the root task maps frames into itself to fill them.
const SCRATCH: u64 = 0x10_0000_0000;
/// What the root task writes into the child's data page.
const SECRET: u64 = 0x4242_4242;

// The child program: data, never executed here (it is copied into a Frame
// that the child's address space maps read-execute).
#[allow(unsafe_code)]
mod child {
    core::arch::global_asm!(
        ".section .rodata.child, \"a\"",
        ".global child_start, child_end",
        ".balign 16",
        "child_start:",
        #[cfg(target_arch = "x86_64")]
        "mov r12, rdi
     mov rbx, 0x500000
     mov rax, [rbx]
     mov rdx, rax
     mov rdi, r12
     movabs rsi, 0x500000001
     mov eax, 2
     syscall
  2: pause
     jmp 2b",
        #[cfg(target_arch = "aarch64")]
        "mov x19, x0
     movz x1, #0x50, lsl #16
     ldr x2, [x1]
     mov x0, x19
     movz x1, #5, lsl #32
     orr x1, x1, #1
     mov x8, #2
     svc #0
  2: b 2b",
        "child_end:",
        ".global receiver_start, receiver_end",
        ".balign 16",
        "receiver_start:",
        #[cfg(target_arch = "x86_64")]
        "mov r12, rdi
         mov eax, 3
         mov rdi, r12
         syscall
         mov eax, 5
         mov edi, 5
         syscall
      3: pause
         jmp 3b",
        #[cfg(target_arch = "aarch64")]
        "mov x19, x0
         mov x8, #3
         mov x0, x19
         svc #0
         mov x8, #5
         mov x0, #5
         svc #0
      3: b 3b",
        "receiver_end:",
    );
}

/// The receiving child's bytes: `Recv` on its slot `rdi`/`x0`, then
/// `Signal` whatever capability arrived in its slot 5.
#[allow(unsafe_code)]
fn receiver_program() -> &'static [u8] {
    unsafe extern "C" {
        static receiver_start: u8;
        static receiver_end: u8;
    }
    let start = &raw const receiver_start;
    let end = &raw const receiver_end;
    // SAFETY: the symbols delimit the bytes assembled above, in .rodata.
    unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) }
}

/// The child program's bytes (position independent, a few dozen bytes).
#[allow(unsafe_code)]
fn child_program() -> &'static [u8] {
    unsafe extern "C" {
        static child_start: u8;
        static child_end: u8;
    }
    let start = &raw const child_start;
    let end = &raw const child_end;
    // SAFETY: the symbols delimit the bytes assembled above, in .rodata.
    unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) }
}

/// The test's objects (free slots and Untypeds, `rt::space`) and the
/// scratch page through which it fills Frames.
struct Slots {
    objects: Objects,
    scratch: Scratch,
}

impl Slots {
    /// A free slot (`u32::MAX`, which the kernel refuses, when none is left).
    fn take(&mut self) -> Slot {
        self.objects.slot().unwrap_or(Slot::new(u32::MAX))
    }
}

fn make<T: Retype>(slots: &mut Slots, size_bits: u8) -> Result<Cap<T>, Error> {
    slots.objects.make_sized(size_bits)
}

fn own_space() -> Cap<PageTable> {
    bootinfo::INIT_VSPACE
}

/// Installs page tables in `space` until a 4 KiB page at `address` can be mapped.
fn tables_for(slots: &mut Slots, space: Cap<PageTable>, address: u64) -> Result<(), Error> {
    rt::space::tables_for(&mut slots.objects, space, address)
}

/// A new Frame holding `bytes`, filled through the scratch page.
fn filled_frame(slots: &mut Slots, bytes: &[u8]) -> Result<Cap<Frame>, Error> {
    slots.scratch.filled_frame(&mut slots.objects, bytes)
}

fn main(_startup: &rt::Startup) -> i32 {
    let Some(info) = rt::boot::boot_info() else {
        rt::println!("[vspaces] no boot-info page");
        return 1;
    };
    let mut objects = Objects::from_boot_info(info);
    let scratch = match Scratch::for_root_task(&mut objects, SCRATCH) {
        Ok(scratch) => scratch,
        Err(e) => {
            rt::println!("[vspaces] tables for the scratch page: {e:?}");
            return 1;
        }
    };
    let mut slots = Slots { objects, scratch };
    let mut suite = Suite::new();
    suite.run("mapping_rules", || mapping_rules(&mut slots));
    suite.run("capability_transfer_to_another_cspace", || {
        capability_transfer_to_another_cspace(&mut slots)
    });
    suite.run("child_space_fault_mapped_and_ipc", || {
        child_space_fault_mapped_and_ipc(&mut slots)
    });
    suite.run("a_dead_root_made_again_as_a_table_is_no_root", || {
        a_dead_root_made_again_as_a_table_is_no_root(&mut slots)
    });
    suite.finish()
}

/// An address space's root that died, made again at the same address
/// (its own 4 KiB Untyped, emptied) and installed as a lower-level table
/// of another space, is no root: `Frame.Map` into it answers
/// `AlreadyMapped`. The kernel remembers the root it found last
/// (`objects::page_tables`, `KNOWN_ROOT`); the dead root's record must
/// take that with it. The new space is a root not yet recorded, so
/// installing the table there leaves the remembered root alone.
fn a_dead_root_made_again_as_a_table_is_no_root(slots: &mut Slots) -> Outcome {
    let cnode = bootinfo::INIT_CNODE;
    let untyped: Cap<Untyped> = match make::<Untyped>(slots, 12) {
        Ok(untyped) => untyped,
        Err(e) => rt::fail!("a 4 KiB Untyped: {e:?}"),
    };
    let slot = slots.take();
    let root = match untyped.retype::<PageTable>(slot) {
        Ok(root) => root,
        Err(e) => rt::fail!("the first root: {e:?}"),
    };
    // Installing tables records the root; the later ones find it.
    if let Err(e) = tables_for(slots, root, CHILD_DATA) {
        rt::fail!("tables for the first root: {e:?}");
    }
    let frame: Cap<Frame> = match make::<Frame>(slots, 12) {
        Ok(frame) => frame,
        Err(e) => rt::fail!("retype frame: {e:?}"),
    };
    check!(
        frame.map(root, CHILD_DATA, MapRights::READ).is_ok(),
        "map into the first root"
    );
    check!(frame.unmap().is_ok(), "unmap from the first root");
    check!(cnode.delete(root.slot()).is_ok(), "delete the first root");
    let again = match untyped.retype::<PageTable>(slot) {
        Ok(again) => again,
        Err(e) => rt::fail!("the table at the root's address: {e:?}"),
    };
    let space: Cap<PageTable> = match make::<PageTable>(slots, 12) {
        Ok(space) => space,
        Err(e) => rt::fail!("another root: {e:?}"),
    };
    check!(
        again.map(space, CHILD_DATA).is_ok(),
        "install the table in the other space"
    );
    let answer = frame.map(again, CHILD_DATA, MapRights::READ);
    check!(
        answer == Err(Error::AlreadyMapped),
        "Frame.Map into a table installed where a dead root was answered {answer:?}"
    );
    check!(cnode.delete(space.slot()).is_ok(), "delete the other root");
    check!(cnode.delete(again.slot()).is_ok(), "delete the table");
    Ok(())
}

fn mapping_rules(slots: &mut Slots) -> Outcome {
    let frame: Cap<Frame> = match make::<Frame>(slots, 12) {
        Ok(f) => f,
        Err(e) => rt::fail!("retype frame: {e:?}"),
    };
    let far = frame.map(own_space(), 0x7000_0000_0000, MapRights::READ);
    check!(
        far == Err(Error::MissingPageTable),
        "mapping without page tables answered {far:?}"
    );
    let wx = frame.map(own_space(), SCRATCH, MapRights::from_bits(7));
    check!(
        wx == Err(Error::InvalidRights),
        "write+execute answered {wx:?}"
    );
    check!(
        frame.map(own_space(), SCRATCH, MapRights::READ).is_ok(),
        "map read-only"
    );
    let twice = frame.map(own_space(), SCRATCH + 0x1000, MapRights::READ);
    check!(
        twice == Err(Error::AlreadyMapped),
        "a second mapping of one copy answered {twice:?}"
    );
    let copy = match bootinfo::INIT_CNODE.mint(slots.take(), frame, Rights::READ, 0) {
        Ok(copy) => copy,
        Err(e) => rt::fail!("read-only copy: {e:?}"),
    };
    let in_use = copy.map(own_space(), SCRATCH, MapRights::READ);
    check!(
        in_use == Err(Error::AddressInUse),
        "mapping over a mapping answered {in_use:?}"
    );
    let amplify = copy.map(own_space(), SCRATCH + 0x1000, MapRights::READ_WRITE);
    check!(
        amplify == Err(Error::InsufficientRights),
        "writing through a read-only copy answered {amplify:?}"
    );
    // A Frame label on another kind's capability, where the mapping
    // itself would fit (the kernel's Frame fast path must refuse it as
    // the general path does).
    // A PageTable's memory is one page, like the frame's.
    let table: Cap<PageTable> = match make::<PageTable>(slots, 12) {
        Ok(table) => table,
        Err(e) => rt::fail!("retype a table: {e:?}"),
    };
    let on_table: Cap<Frame> = table.cast();
    let wrong = on_table.map(own_space(), SCRATCH + 0x2000, MapRights::READ);
    check!(
        wrong == Err(Error::InvalidInvocation),
        "Frame.Map on a PageTable answered {wrong:?}"
    );
    let on_untyped: Cap<Frame> = bootinfo::ARENA.cast();
    let wrong = on_untyped.map(own_space(), SCRATCH + 0x2000, MapRights::READ);
    check!(
        wrong == Err(Error::InvalidInvocation),
        "Frame.Map on an Untyped answered {wrong:?}"
    );
    check!(frame.unmap().is_ok(), "unmap");
    check!(frame.unmap() == Err(Error::NotMapped), "unmap twice");
    Ok(())
}

fn child_space_fault_mapped_and_ipc(slots: &mut Slots) -> Outcome {
    let step = |what: &str, result: Result<(), Error>| -> Outcome {
        match result {
            Ok(()) => Ok(()),
            Err(e) => rt::fail!("{what}: {e:?}"),
        }
    };
    let root: Cap<PageTable> = match make::<PageTable>(slots, 12) {
        Ok(r) => r,
        Err(e) => rt::fail!("retype the child's root: {e:?}"),
    };
    step(
        "page tables for the child's code",
        tables_for(slots, root, CHILD_CODE),
    )?;
    let code = match filled_frame(slots, child_program()) {
        Ok(f) => f,
        Err(e) => rt::fail!("the child's code frame: {e:?}"),
    };
    step(
        "map the code",
        code.map(root, CHILD_CODE, MapRights::READ_EXECUTE),
    )?;
    let data = match filled_frame(slots, &SECRET.to_le_bytes()) {
        Ok(f) => f,
        Err(e) => rt::fail!("the child's data frame: {e:?}"),
    };
    let endpoint: Cap<Endpoint> = match make::<Endpoint>(slots, 0) {
        Ok(e) => e,
        Err(e) => rt::fail!("retype endpoint: {e:?}"),
    };
    let child: Cap<Tcb> = match make::<Tcb>(slots, 0) {
        Ok(t) => t,
        Err(e) => rt::fail!("retype TCB: {e:?}"),
    };
    let cnode = bootinfo::INIT_CNODE;
    step(
        "configure",
        child.configure(Some(endpoint), cnode, root, data, 0),
    )?;
    step(
        "registers",
        child.write_registers(CHILD_CODE, 0, u64::from(endpoint.slot())),
    )?;
    step("priority", child.set_priority(50))?;
    step("resume", child.resume())?;

    // The child runs (we wait) and faults on its data page.
    let fault = endpoint.recv();
    let Ok(fault) = fault else {
        rt::fail!("Recv answered {fault:?}")
    };
    check!(
        fault.info.label == abi::FAULT_LABEL,
        "first message label {:#x}, expected a fault",
        fault.info.label
    );
    check!(
        fault.mrs[1] == CHILD_DATA,
        "fault address {:#x}, expected {CHILD_DATA:#x}",
        fault.mrs[1]
    );
    let pc = fault.mrs[2];
    check!(
        (CHILD_CODE..CHILD_CODE + 64).contains(&pc),
        "fault pc {pc:#x}"
    );
    // Handle it: map the page the child wanted, then resume it.
    step(
        "map the data page",
        data.map(root, CHILD_DATA, MapRights::READ),
    )?;
    let message = endpoint.reply_recv(MessageInfo::new(0, 1), [0, 0, 0, 0]);
    let Ok(message) = message else {
        rt::fail!("ReplyRecv answered {message:?}")
    };
    check!(
        message.info.label == 5,
        "the child's message has label {}",
        message.info.label
    );
    check!(
        message.mrs[0] == SECRET,
        "the child read {:#x} from its data page, expected {SECRET:#x}",
        message.mrs[0]
    );
    // Deleting its address space stops it (it would spin forever otherwise).
    step("delete the child's root", cnode.delete(root.slot()))?;
    step("delete the child", cnode.delete(child.slot()))?;
    Ok(())
}

/// Where a received capability lands in the receiving child's CNode.
const RECEIVE_SLOT: u32 = 5;

fn capability_transfer_to_another_cspace(slots: &mut Slots) -> Outcome {
    let step = |what: &str, result: Result<(), Error>| -> Outcome {
        match result {
            Ok(()) => Ok(()),
            Err(e) => rt::fail!("{what}: {e:?}"),
        }
    };
    let cnode = bootinfo::INIT_CNODE;
    // The child's own CSpace: a 16-slot CNode (CNodes come from the arena
    // Untyped, the first one), holding only the endpoint, at slot 1.
    let arena: Cap<Untyped> = bootinfo::ARENA;
    let child_cnode: Cap<CNode> = match arena.retype_sized(4, slots.take()) {
        Ok(child_cnode) => child_cnode,
        Err(e) => rt::fail!("retype the child's CNode: {e:?}"),
    };
    let endpoint: Cap<Endpoint> = match make::<Endpoint>(slots, 0) {
        Ok(e) => e,
        Err(e) => rt::fail!("retype endpoint: {e:?}"),
    };
    step(
        "endpoint into the child's CNode",
        child_cnode.copy_from(Slot::new(1), cnode, endpoint.slot(), Rights::ALL),
    )?;
    let notification: Cap<sys::Notification> = match make::<sys::Notification>(slots, 0) {
        Ok(n) => n,
        Err(e) => rt::fail!("retype notification: {e:?}"),
    };
    // Its address space: code, and an IPC buffer naming the receive slot.
    let root: Cap<PageTable> = match make::<PageTable>(slots, 12) {
        Ok(r) => r,
        Err(e) => rt::fail!("retype the child's root: {e:?}"),
    };
    step("tables for the code", tables_for(slots, root, CHILD_CODE))?;
    let code = match filled_frame(slots, receiver_program()) {
        Ok(f) => f,
        Err(e) => rt::fail!("code frame: {e:?}"),
    };
    step(
        "map the code",
        code.map(root, CHILD_CODE, MapRights::READ_EXECUTE),
    )?;
    let mut buffer = [0u8; 528];
    buffer[abi::ipc::RECEIVE_SLOT_OFFSET..abi::ipc::RECEIVE_SLOT_OFFSET + 4]
        .copy_from_slice(&RECEIVE_SLOT.to_le_bytes());
    let ipc = match filled_frame(slots, &buffer) {
        Ok(f) => f,
        Err(e) => rt::fail!("IPC buffer frame: {e:?}"),
    };
    step(
        "tables for the IPC buffer",
        tables_for(slots, root, abi::ipc::IPC_BUFFER_ADDRESS),
    )?;
    step(
        "map the IPC buffer",
        ipc.map(root, abi::ipc::IPC_BUFFER_ADDRESS, MapRights::READ_WRITE),
    )?;
    let child: Cap<Tcb> = match make::<Tcb>(slots, 0) {
        Ok(t) => t,
        Err(e) => rt::fail!("retype TCB: {e:?}"),
    };
    step(
        "configure",
        child.configure(None, child_cnode, root, ipc, 0),
    )?;
    step("registers", child.write_registers(CHILD_CODE, 0, 1))?;
    step("priority", child.set_priority(50))?;
    step("resume", child.resume())?;
    // Send it the notification capability: the child can only signal us if
    // it arrived in its own CSpace.
    sys::ipc::set_cap(0, notification.slot());
    let info = MessageInfo {
        label: 9,
        length: 0,
        extra_caps: 1,
    };
    step("send the capability", endpoint.send(info, [0; 4]))?;
    let word = notification.wait();
    check!(
        word == Ok(1),
        "Wait returned {word:?}: the child could not signal"
    );
    // The child's copy is derived from ours: revoking ours removes it.
    let probe = slots.take();
    step(
        "the capability is in the child's CNode",
        cnode.copy_from(probe, child_cnode, Slot::new(RECEIVE_SLOT), Rights::ALL),
    )?;
    step("clean the probe", cnode.delete(probe))?;
    step("revoke", cnode.revoke(notification.slot()))?;
    let gone = cnode.copy_from(probe, child_cnode, Slot::new(RECEIVE_SLOT), Rights::ALL);
    check!(
        gone == Err(Error::EmptySlot),
        "after revoke the child's copy answered {gone:?}"
    );
    step("delete the child's root", cnode.delete(root.slot()))?;
    Ok(())
}
