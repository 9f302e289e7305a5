//! `ipcbench`: kernel paths timed from user space with the cycle counter
//! (x86_64 `rdtsc`, aarch64 `cntvct_el0`). Under QEMU's
//! `-icount shift=0,sleep=off` the counter advances one tick per guest
//! instruction, so the numbers are instruction counts; each is the median of
//! several batches, minus the same loop without the operation.
//!
//! Prints `bench NAME instructions=N` lines for `cargo xtask bench`, then halts.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};
use rt::space::{self, Objects, Scratch};
use sys::bootinfo;
use sys::{
    CNode, Cap, Endpoint, Frame, MapRights, MessageInfo, Notification, PageTable, Slot, Tcb,
};

rt::entry!(main);

/// Operations per batch.
const OPERATIONS: u64 = 200;

/// Per-operation instructions of `operation` (see `rt::bench::measure`).
fn measure(operation: impl FnMut()) -> u64 {
    rt::bench::measure(OPERATIONS, operation)
}

static SERVER_ENDPOINT: AtomicU64 = AtomicU64::new(0);

extern "C" fn server(_: u64) -> ! {
    let endpoint: Cap<Endpoint> =
        Cap::from_slot(Slot::new(SERVER_ENDPOINT.load(Ordering::Relaxed) as u32));
    let _ = endpoint.recv();
    loop {
        let _ = endpoint.reply_recv(MessageInfo::new(0, 1), [1, 0, 0, 0]);
    }
}

#[repr(C, align(16))]
struct Stack([u8; 16 * 1024]);
static mut STACK: Stack = Stack([0; 16 * 1024]);

fn stack_top() -> u64 {
    // Only the address is taken; the server thread is the stack's only user.
    let top = core::ptr::addr_of!(STACK) as u64 + 16 * 1024;
    if cfg!(target_arch = "x86_64") {
        top - 8
    } else {
        top
    }
}

fn main(_startup: &rt::Startup) -> i32 {
    let Some(info) = rt::boot::boot_info() else {
        rt::println!("bench setup FAILED: no boot-info page");
        return 1;
    };
    let mut objects = Objects::from_boot_info(info);
    let mut make = || -> Result<_, sys::Error> {
        let endpoint: Cap<Endpoint> = objects.make::<Endpoint>()?;
        let notification: Cap<Notification> = objects.make::<Notification>()?;
        let tcb: Cap<Tcb> = objects.make::<Tcb>()?;
        Ok((endpoint, notification, tcb))
    };
    let (endpoint, notification, server_tcb) = match make() {
        Ok(made) => made,
        Err(e) => {
            rt::println!("bench setup FAILED: retype {e:?}");
            return 1;
        }
    };
    SERVER_ENDPOINT.store(u64::from(endpoint.slot()), Ordering::Relaxed);
    let started = server_tcb
        .configure_in_root_task(None)
        .and_then(|()| server_tcb.write_registers(server as *const () as u64, stack_top(), 0))
        .and_then(|()| server_tcb.set_priority(100))
        .and_then(|()| server_tcb.resume());
    if let Err(e) = started {
        rt::println!("bench setup FAILED: server thread {e:?}");
        return 1;
    }
    // Let the server reach its first Recv.
    let _ = endpoint.call(MessageInfo::new(0, 1), [0; 4]);

    let null = measure(sys::yield_now);
    let round_trip = measure(|| {
        let _ = endpoint.call(MessageInfo::new(0, 1), [7, 0, 0, 0]);
    });
    let signal = measure(|| {
        let _ = notification.signal();
    });
    let scratch = match Scratch::for_root_task(&mut objects, SCRATCH) {
        Ok(scratch) => scratch,
        Err(e) => {
            rt::println!("bench setup FAILED: scratch page {e:?}");
            return 1;
        }
    };
    let frame_map = match frame_map_unmap(&mut objects) {
        Ok(n) => n,
        Err(e) => {
            rt::println!("bench setup FAILED: frame mapping {e:?}");
            return 1;
        }
    };
    // A second endpoint, served from another address space.
    let remote = objects
        .make::<Endpoint>()
        .and_then(|remote| remote_round_trip(&mut objects, &scratch, remote));
    let remote = match remote {
        Ok(n) => n,
        Err(e) => {
            rt::println!("bench setup FAILED: server in another address space {e:?}");
            return 1;
        }
    };
    rt::println!("bench user-yield instructions={null}");
    rt::println!("bench ipc-round-trip instructions={round_trip}");
    rt::println!("bench ipc-round-trip-spaces instructions={remote}");
    rt::println!("bench notification-signal instructions={signal}");
    rt::println!("bench frame-map-unmap instructions={frame_map}");
    0
}

/// An unused address in the root task's own address space.
const SCRATCH: u64 = 0x10_0000_0000;
/// Where the other address space's server code is mapped.
const SERVER_CODE: u64 = 0x40_0000;

/// `Frame.Map` + `Frame.Unmap` of a 4 KiB page in our own VSpace (the page
/// tables are installed first, with the scratch page's).
fn frame_map_unmap(objects: &mut Objects) -> Result<u64, sys::Error> {
    let space: Cap<PageTable> = bootinfo::INIT_VSPACE;
    let frame: Cap<Frame> = objects.make_sized::<Frame>(12)?;
    // Check once that the pair works, so the loop measures success paths.
    frame.map(space, SCRATCH, MapRights::READ_WRITE)?;
    frame.unmap()?;
    Ok(measure(|| {
        let _ = frame.map(space, SCRATCH, MapRights::READ_WRITE);
        let _ = frame.unmap();
    }))
}

// The other address space's server: `Recv` on the endpoint in its slot
// (the start argument), then `ReplyRecv` with one message register forever.
// Data here; it runs from a Frame mapped read-execute in its own VSpace.
#[allow(unsafe_code)]
mod remote {
    core::arch::global_asm!(
        ".section .rodata.remote_server, \"a\"",
        ".global remote_server_start, remote_server_end",
        ".balign 16",
        "remote_server_start:",
        #[cfg(target_arch = "x86_64")]
        "mov r12, rdi
         mov eax, 3
         syscall
      1: mov rdi, r12
         mov esi, 1
         mov eax, 4
         syscall
         jmp 1b",
        #[cfg(target_arch = "aarch64")]
        "mov x19, x0
         mov x8, #3
         svc #0
      1: mov x0, x19
         mov x1, #1
         mov x8, #4
         svc #0
         b 1b",
        "remote_server_end:",
    );
}

/// The remote server's bytes.
#[allow(unsafe_code)]
fn remote_server() -> &'static [u8] {
    unsafe extern "C" {
        static remote_server_start: u8;
        static remote_server_end: u8;
    }
    let start = &raw const remote_server_start;
    let end = &raw const remote_server_end;
    // SAFETY: the symbols delimit the bytes assembled above, in .rodata.
    unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) }
}

/// `Call` + reply round trip to a server in another address space with its
/// own CSpace (the endpoint at its slot 1).
fn remote_round_trip(
    objects: &mut Objects,
    scratch: &Scratch,
    endpoint: Cap<Endpoint>,
) -> Result<u64, sys::Error> {
    let cnode: Cap<CNode> = objects.make_sized::<CNode>(4)?;
    let own: Cap<CNode> = bootinfo::INIT_CNODE;
    cnode.copy_from(Slot::new(1), own, endpoint.slot(), sys::Rights::ALL)?;
    let root: Cap<PageTable> = objects.make::<PageTable>()?;
    let code = scratch.filled_frame(objects, remote_server())?;
    space::map_frame(objects, code, root, SERVER_CODE, MapRights::READ_EXECUTE)?;
    let buffer: Cap<Frame> = objects.make_sized::<Frame>(12)?;
    let ipc = abi::ipc::IPC_BUFFER_ADDRESS;
    space::map_frame(objects, buffer, root, ipc, MapRights::READ_WRITE)?;
    let tcb: Cap<Tcb> = objects.make::<Tcb>()?;
    tcb.configure(None, cnode, root, buffer, 0)?;
    tcb.write_registers(SERVER_CODE, 0, 1)?;
    tcb.set_priority(100)?;
    tcb.resume()?;
    // Let the server reach its first Recv.
    endpoint.call(MessageInfo::new(0, 1), [0; 4])?;
    Ok(measure(|| {
        let _ = endpoint.call(MessageInfo::new(0, 1), [7, 0, 0, 0]);
    }))
}
