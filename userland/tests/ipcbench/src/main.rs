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
    let count = info.untyped_count as usize;
    let index = (1..count)
        .max_by_key(|&i| info.untypeds[i].size_bits)
        .unwrap_or(0);
    let untyped: Cap<Untyped> = Cap::from_slot(bootinfo::FIRST_UNTYPED + index as u32);
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
    let frame_map = match frame_map_unmap(untyped, first + 3) {
        Ok(n) => n,
        Err(e) => {
            rt::println!("bench setup FAILED: frame mapping {e:?}");
            return 1;
        }
    };
    rt::println!("bench user-yield instructions={null}");
    rt::println!("bench ipc-round-trip instructions={round_trip}");
    rt::println!("bench notification-signal instructions={signal}");
    rt::println!("bench frame-map-unmap instructions={frame_map}");
    0
}

/// An unused address in the root task's own address space.
const SCRATCH: u64 = 0x10_0000_0000;

/// `Frame.Map` + `Frame.Unmap` of a 4 KiB page in our own VSpace (the page
/// tables are installed first; slots from `first` on are free).
fn frame_map_unmap(untyped: Cap<Untyped>, first: u32) -> Result<u64, sys::Error> {
    let space: Cap<PageTable> = Cap::from_slot(bootinfo::INIT_VSPACE);
    let mut slot = first;
    for _ in 0..3 {
        untyped.retype(ObjectType::PageTable, 12, slot, 1)?;
        match Cap::<PageTable>::from_slot(slot).map(space, SCRATCH) {
            Ok(()) => slot += 1,
            Err(sys::Error::AddressInUse) => {
                Cap::<CNode>::from_slot(bootinfo::INIT_CNODE).delete(slot)?;
            }
            Err(e) => return Err(e),
        }
    }
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
