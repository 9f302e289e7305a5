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

use abi::bootinfo::{self, BootInfo};
use core::sync::atomic::{AtomicU64, Ordering};
use sys::{
    CNode, Cap, Endpoint, Frame, MapRights, MessageInfo, Notification, ObjectType, PageTable, Tcb,
    Untyped,
};

rt::entry!(main);

/// Operations per batch.
const OPERATIONS: u64 = 200;
/// Batches (the median is reported).
const BATCHES: usize = 7;

#[allow(unsafe_code)]
fn counter() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc reads the time-stamp counter; user mode may (CR4.TSD = 0).
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(target_arch = "aarch64")]
    {
        let value: u64;
        // SAFETY: the kernel lets EL0 read the virtual counter (CNTKCTL_EL1.EL0VCTEN).
        unsafe {
            core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) value, options(nomem, nostack))
        };
        value
    }
}

/// Median over batches of (cycles of `OPERATIONS` x `operation`) minus the
/// empty loop, per operation.
fn measure(mut operation: impl FnMut()) -> u64 {
    let mut samples = [0u64; BATCHES];
    for sample in &mut samples {
        let start = counter();
        for _ in 0..OPERATIONS {
            operation();
        }
        let with = counter() - start;
        let start = counter();
        for _ in 0..OPERATIONS {
            core::hint::black_box(());
        }
        let without = counter() - start;
        *sample = with.saturating_sub(without) / OPERATIONS;
    }
    samples.sort_unstable();
    samples[BATCHES / 2]
}

#[allow(unsafe_code)]
fn boot_info() -> &'static BootInfo {
    // SAFETY: the kernel maps a BootInfo read-only at BOOT_INFO_ADDRESS.
    unsafe { &*(bootinfo::BOOT_INFO_ADDRESS as *const BootInfo) }
}

static SERVER_ENDPOINT: AtomicU64 = AtomicU64::new(0);

extern "C" fn server(_: u64) -> ! {
    let endpoint: Cap<Endpoint> = Cap::from_slot(SERVER_ENDPOINT.load(Ordering::Relaxed) as u32);
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
    let info = boot_info();
    let slot = sys::untypeds::largest_ram_untyped(info).map_or(bootinfo::FIRST_UNTYPED, |u| u.slot);
    let untyped: Cap<Untyped> = Cap::from_slot(slot);
    let first = info.first_free_slot as u32;
    let (endpoint_slot, notification_slot, tcb_slot) = (first, first + 1, first + 2);
    let made = untyped
        .retype(ObjectType::Endpoint, 0, endpoint_slot, 1)
        .and_then(|()| untyped.retype(ObjectType::Notification, 0, notification_slot, 1))
        .and_then(|()| untyped.retype(ObjectType::Tcb, 0, tcb_slot, 1));
    if let Err(e) = made {
        rt::println!("bench setup FAILED: retype {e:?}");
        return 1;
    }
    SERVER_ENDPOINT.store(u64::from(endpoint_slot), Ordering::Relaxed);
    let server_tcb: Cap<Tcb> = Cap::from_slot(tcb_slot);
    let started = server_tcb
        .write_registers(server as *const () as u64, stack_top(), 0)
        .and_then(|()| server_tcb.set_priority(100))
        .and_then(|()| server_tcb.resume());
    if let Err(e) = started {
        rt::println!("bench setup FAILED: server thread {e:?}");
        return 1;
    }
    let endpoint: Cap<Endpoint> = Cap::from_slot(endpoint_slot);
    let notification: Cap<Notification> = Cap::from_slot(notification_slot);
    // Let the server reach its first Recv.
    let _ = endpoint.call(MessageInfo::new(0, 1), [0; 4]);

    let null = measure(sys::yield_now);
    let round_trip = measure(|| {
        let _ = endpoint.call(MessageInfo::new(0, 1), [7, 0, 0, 0]);
    });
    let signal = measure(|| {
        let _ = notification.signal();
    });
    let mut slots = Slots(first + 3);
    let frame_map = match frame_map_unmap(untyped, &mut slots) {
        Ok(n) => n,
        Err(e) => {
            rt::println!("bench setup FAILED: frame mapping {e:?}");
            return 1;
        }
    };
    // A second endpoint, served from another address space.
    let remote_slot = slots.take();
    let remote = untyped
        .retype(ObjectType::Endpoint, 0, remote_slot, 1)
        .and_then(|()| remote_round_trip(untyped, &mut slots, Cap::from_slot(remote_slot)));
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

/// Free slots of the root CNode, handed out in order.
struct Slots(u32);

impl Slots {
    fn take(&mut self) -> u32 {
        self.0 += 1;
        self.0 - 1
    }
}

/// Installs page tables in `space` until a 4 KiB page at `address` can be
/// mapped (a table the space already has is given back).
fn tables_for(
    untyped: Cap<Untyped>,
    slots: &mut Slots,
    space: Cap<PageTable>,
    address: u64,
) -> Result<(), sys::Error> {
    for _ in 0..3 {
        let slot = slots.take();
        untyped.retype(ObjectType::PageTable, 12, slot, 1)?;
        match Cap::<PageTable>::from_slot(slot).map(space, address) {
            Ok(()) => {}
            Err(sys::Error::AddressInUse) => {
                return Cap::<CNode>::from_slot(bootinfo::INIT_CNODE).delete(slot);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `Frame.Map` + `Frame.Unmap` of a 4 KiB page in our own VSpace (the page
/// tables are installed first).
fn frame_map_unmap(untyped: Cap<Untyped>, slots: &mut Slots) -> Result<u64, sys::Error> {
    let space: Cap<PageTable> = Cap::from_slot(bootinfo::INIT_VSPACE);
    tables_for(untyped, slots, space, SCRATCH)?;
    let slot = slots.take();
    untyped.retype(ObjectType::Frame, 12, slot, 1)?;
    let frame: Cap<Frame> = Cap::from_slot(slot);
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

/// Copies `bytes` into `frame` through the scratch mapping (whose tables
/// `frame_map_unmap` installed).
#[allow(unsafe_code)]
fn fill(frame: Cap<Frame>, bytes: &[u8]) -> Result<(), sys::Error> {
    frame.map(
        Cap::from_slot(bootinfo::INIT_VSPACE),
        SCRATCH,
        MapRights::READ_WRITE,
    )?;
    // SAFETY: a writable 4 KiB frame is mapped at SCRATCH and nothing else
    // uses it; the copy stays within the page.
    unsafe {
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), SCRATCH as *mut u8, bytes.len().min(4096))
    };
    frame.unmap()
}

/// `Call` + reply round trip to a server in another address space with its
/// own CSpace (the endpoint at its slot 1).
fn remote_round_trip(
    untyped: Cap<Untyped>,
    slots: &mut Slots,
    endpoint: Cap<Endpoint>,
) -> Result<u64, sys::Error> {
    let frame = |slots: &mut Slots| -> Result<Cap<Frame>, sys::Error> {
        let slot = slots.take();
        untyped.retype(ObjectType::Frame, 12, slot, 1)?;
        Ok(Cap::from_slot(slot))
    };
    let cnode_slot = slots.take();
    Cap::<Untyped>::from_slot(bootinfo::FIRST_UNTYPED).retype(
        ObjectType::Cnode,
        4,
        cnode_slot,
        1,
    )?;
    let cnode: Cap<CNode> = Cap::from_slot(cnode_slot);
    let own: Cap<CNode> = Cap::from_slot(bootinfo::INIT_CNODE);
    cnode.copy_from(1, own, endpoint.slot(), sys::Rights::ALL)?;
    let root_slot = slots.take();
    untyped.retype(ObjectType::PageTable, 12, root_slot, 1)?;
    let root: Cap<PageTable> = Cap::from_slot(root_slot);
    tables_for(untyped, slots, root, SERVER_CODE)?;
    let code = frame(slots)?;
    fill(code, remote_server())?;
    code.map(root, SERVER_CODE, MapRights::READ_EXECUTE)?;
    tables_for(untyped, slots, root, abi::ipc::IPC_BUFFER_ADDRESS)?;
    let buffer = frame(slots)?;
    buffer.map(root, abi::ipc::IPC_BUFFER_ADDRESS, MapRights::READ_WRITE)?;
    let tcb_slot = slots.take();
    untyped.retype(ObjectType::Tcb, 0, tcb_slot, 1)?;
    let tcb: Cap<Tcb> = Cap::from_slot(tcb_slot);
    tcb.configure(0, cnode, root, buffer, 0)?;
    tcb.write_registers(SERVER_CODE, 0, 1)?;
    tcb.set_priority(100)?;
    tcb.resume()?;
    // Let the server reach its first Recv.
    endpoint.call(MessageInfo::new(0, 1), [0; 4])?;
    Ok(measure(|| {
        let _ = endpoint.call(MessageInfo::new(0, 1), [7, 0, 0, 0]);
    }))
}
