//! `iobench`: the IOMMU paths timed from user space (see `rt::bench`: under
//! `-icount shift=0,sleep=off` counter ticks are guest instructions).
//! Runs as the root task with an edu device; prints `bench NAME
//! instructions=N` and `bench NAME commands=N` lines for `cargo xtask bench`.
//!
//! - `io-map-stage1-batch-B`: one 4 KiB IOVA mapped through the driver's
//!   own stage-1 table (`iopt`), including its share of the one
//!   `IoUserTable.Invalidate` that makes a batch of B pages visible (VT-d:
//!   the kernel composes the shadow entries; SMMUv3: TLBI by ASID). A batch
//!   is one `map` of B contiguous pages of a 2 MiB Frame the IoSpace maps,
//!   as a driver maps a buffer, into tables that already exist (a pinned
//!   page keeps them; the 512-page batch fills and frees a whole table).
//! - `io-stage1-map-only-batch-64` / `io-invalidate-64-pages`: the two
//!   parts of the batch-64 figure: iopt's writes per page, and the one
//!   `Invalidate` call.
//! - `io-map-syscall` / `io-unmap-syscall`: `IoSpace.Map` / `IoSpace.Unmap`
//!   of one 4 KiB page (stage 2, kernel-mediated; unmap waits for its
//!   invalidation).
//! - `io-revoke-N`: `CNode.Revoke` of a Frame capability whose N copies are
//!   mapped in an IoSpace (every entry removed, invalidated, waited for).
//! - `io-map-with-N-mapped`: `IoSpace.Map` of one 4 KiB page into an
//!   IoSpace that already holds N 4 KiB mappings (N = 1, 64, 768, 4096),
//!   each held by its own copy of one Frame capability: the first 768 in
//!   the root task's CNode (1,024 slots), the rest in a CNode of 4,096
//!   slots that is a worker thread's CSpace, mapped by that thread. Before
//!   each row every one of the N IPAs must answer `AddressInUse`, so the N
//!   mappings are the kernel's, not the program's say-so. The timed copy
//!   sits in a slot above every mapping's (for N = 4096 the worker times
//!   it), and the overlap check does not walk the IoSpace's mappings, so
//!   the rows should be equal.
//! - `io-map-with-4096-mapped-low-slot`: the same from the root task, whose
//!   timed copy lies below the worker's 3,328 mapped copies: the model
//!   links a new mapping into the IoSpace's slot-ordered list searching
//!   down from the top, so this one walks those 3,328.
//! - `cnode-delete-empty` / `cnode-delete-frame-copy` /
//!   `cnode-delete-mapped-frame-copy`: `CNode.Delete` of an empty slot, of
//!   a copy of a Frame (the Frame lives on in its original), and of such a
//!   copy mapped in the IoSpace (unmapped and invalidated by the delete, as
//!   a zero-copy driver drops a client's Frame after the request).
//! - `io-unmap-stage1-64-commands`: invalidation commands the kernel issued
//!   for unmapping 64 pages from the stage-1 table (plus one completion
//!   wait per command batch).
//! - `msi-interrupt`: one device interrupt as a driver takes it, per I/O:
//!   edu raises its MSI (one register write; x86_64 through interrupt
//!   remapping, aarch64 through the driver's stage 1 to the GICv2m
//!   doorbell the kernel maps into the IoSpace), the kernel takes the
//!   interrupt and signals the handler's notification, the driver's
//!   `Wait` returns and it acknowledges the line (`IrqHandler.Ack`). The
//!   interrupt arrives while the driver runs, so no idle time is in the
//!   count (a driver that sleeps until it also pays the switch to and from
//!   the idle loop).
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use edu::device::Edu;
use edu::nested::Nested;
use rt::bench::counter;
use rt::space::Objects;
use sys::bootinfo;
use sys::{
    CNode, Cap, Endpoint, Error, Frame, IoSpace, IommuControl, MapRights, MessageInfo, PageTable,
    Rights, Slot, Tcb,
};

rt::entry!(main);

/// Batch sizes of the stage-1 benchmark.
const BATCHES: [u64; 4] = [1, 16, 64, 512];
/// Mapping counts of the revoke benchmark (bounded by the root CNode's
/// 1024 slots: each mapping is held by its own Frame capability copy).
const REVOKE_COUNTS: [u64; 4] = [1, 16, 256, 768];
/// IOVAs the stage-1 benchmark maps.
const IOVA_BASE: u64 = 0x40_0000;
/// The IPA of the 2 MiB Frame the stage-1 benchmark maps into.
const BIG_IPA: u64 = 0x6000_0000;
/// IPAs the syscall benchmarks map.
const IPA_BASE: u64 = 0x7000_0000;
/// Pages of the map-syscall benchmark.
const SYSCALL_PAGES: u64 = 64;
/// Mappings already in the IoSpace for the map-scaling benchmark.
const MAPPED_COUNTS: [u64; 4] = [1, 64, 768, 4096];
/// Of those, the copies the root task's CNode holds (in the revoke
/// benchmark's run of free slots); the worker's CSpace holds the rest.
const ROOT_COPIES: u64 = REVOKE_COUNTS[REVOKE_COUNTS.len() - 1];
/// The worker's CSpace: a CNode of `2^WORKER_CNODE_BITS` slots (from the
/// kernel's CNode arena, which has room for it beside the root CNode).
const WORKER_CNODE_BITS: u8 = 12;
/// Its slot holding the IoSpace.
const WORKER_SPACE: Slot = Slot::new(0);
/// Its slot holding the endpoint it reports on.
const WORKER_REPORT: Slot = Slot::new(1);
/// Its first slot of Frame copies to map (they follow one another).
const WORKER_FIRST_COPY: u32 = 2;
/// The worker's timed copy: its top slot, above every mapping's.
const WORKER_TIMED: Slot = Slot::new((1 << WORKER_CNODE_BITS) - 1);
const _: () = assert!(
    MAPPED_COUNTS[MAPPED_COUNTS.len() - 1] - ROOT_COPIES
        <= WORKER_TIMED.index() as u64 - WORKER_FIRST_COPY as u64
);
/// Repetitions of each measurement (the median is reported).
const REPEATS: usize = 5;

fn control() -> Cap<IommuControl> {
    bootinfo::IOMMU_CONTROL
}

fn own() -> Cap<PageTable> {
    bootinfo::INIT_VSPACE
}

fn median(mut samples: [u64; REPEATS]) -> u64 {
    samples.sort_unstable();
    samples[REPEATS / 2]
}

fn main(_startup: &rt::Startup) -> i32 {
    match run() {
        Ok(()) => 0,
        Err(why) => {
            rt::println!("bench iobench FAILED: {}", why.0);
            1
        }
    }
}

fn failure(what: &str, e: impl core::fmt::Debug) -> rt::testing::Failure {
    rt::testing::Failure(rt::__format!("{what}: {e:?}"))
}

fn run() -> Result<(), rt::testing::Failure> {
    let info = rt::boot::boot_info().ok_or_else(|| failure("boot info", "missing"))?;
    let mut objects = Objects::from_boot_info(info);
    let [edu, _] = Edu::find_all(&mut objects, own())?;
    let edu = edu.ok_or_else(|| failure("edu", "not found"))?;
    let slot = objects.slot().map_err(|e| failure("slot", e))?;
    let device = control()
        .mint_device(edu.requester(), slot)
        .map_err(|e| failure("MintDevice", e))?;
    let mut nested = Nested::new(&mut objects, own(), control(), 0)?;
    device
        .attach_nested(nested.table)
        .map_err(|e| failure("AttachNested", e))?;
    let big: Cap<Frame> = objects
        .make_sized::<Frame>(21)
        .map_err(|e| failure("retype a 2 MiB Frame", e))?;
    nested
        .space
        .map(big, BIG_IPA, MapRights::READ_WRITE)
        .map_err(|e| failure("IoSpace.Map of the 2 MiB Frame", e))?;
    stage1(&mut nested, BIG_IPA)?;
    syscalls(&mut objects, &nested)?;
    deletes(&mut objects, &nested)?;
    let first_copy = revoke(&mut objects, &nested)?;
    map_scaling(&mut objects, &nested, first_copy)?;
    msi(&mut objects, &mut nested, &edu, device)?;
    Ok(())
}

/// The MSI line the benchmark takes (x86_64 MSI lines 16..32, aarch64
/// GICv2m's SPIs).
const MSI_LINE: u64 = sys::resources::MSI_LINES.start;
/// The IOVA the stage 1 maps to the doorbell (aarch64).
const MSI_IOVA: u64 = 0xF0_0000;

fn msi(
    objects: &mut Objects,
    nested: &mut Nested,
    edu: &Edu,
    device: Cap<sys::IoDevice>,
) -> Result<(), rt::testing::Failure> {
    let control: Cap<sys::IrqControl> = bootinfo::IRQ_CONTROL;
    let slot = objects.slot().map_err(|e| failure("slot", e))?;
    let handler = control
        .get(MSI_LINE, slot)
        .map_err(|e| failure("IrqControl.Get", e))?;
    let notification: Cap<sys::Notification> = objects
        .make::<sys::Notification>()
        .map_err(|e| failure("retype a notification", e))?;
    handler
        .set_notification(notification)
        .map_err(|e| failure("IrqHandler.SetNotification", e))?;
    let (address, data) = handler
        .msi_message(device)
        .map_err(|e| failure("IrqHandler.MsiMessage", e))?;
    let written = if cfg!(target_arch = "x86_64") {
        address
    } else {
        nested.map(MSI_IOVA, address & !0xfff, iopt::Rights::READ_WRITE)?;
        MSI_IOVA + (address & 0xfff)
    };
    edu.enable_msi(written, data)?;
    let mut samples = [0; REPEATS];
    for sample in &mut samples {
        let start = counter();
        edu.raise_interrupt(1);
        let word = notification.wait().map_err(|e| failure("Wait", e))?;
        handler.ack().map_err(|e| failure("IrqHandler.Ack", e))?;
        *sample = counter() - start;
        if word == 0 {
            return Err(failure("the MSI", "the notification word is 0"));
        }
        edu.acknowledge_interrupt();
    }
    rt::println!("bench msi-interrupt instructions={}", median(samples));
    Ok(())
}

fn stage1(nested: &mut Nested, ipa: u64) -> Result<(), rt::testing::Failure> {
    for batch in BATCHES {
        // Keep the tables of the 2 MiB region live (iopt frees emptied
        // tables on flush), so each batch measures mapping, not zeroing
        // fresh tables: a page at the region's end, outside every batch
        // but the 512-page one (which fills the whole last-level table).
        let pin = IOVA_BASE + (2 << 20) - 4096;
        if batch < 512 {
            nested.map(pin, ipa, iopt::Rights::READ)?;
        }
        let mut samples = [0; REPEATS];
        let mut parts = [(0, 0); REPEATS];
        let mut commands = 0;
        for (sample, part) in samples.iter_mut().zip(&mut parts) {
            let start = counter();
            nested
                .stage1
                .map(IOVA_BASE, ipa, 4096 * batch, iopt::Rights::READ_WRITE)
                .map_err(|e| failure("stage 1 map", e))?;
            let mapped = counter();
            nested.flush()?;
            let end = counter();
            *sample = (end - start) / batch;
            *part = (mapped - start, end - mapped);
            nested
                .stage1
                .unmap(IOVA_BASE, 4096 * batch)
                .map_err(|e| failure("stage 1 unmap", e))?;
            // The unmap's invalidation, counted (iopt records one range).
            for range in nested.stage1.pending_invalidation().ranges() {
                let (_, issued) = nested
                    .table
                    .invalidate_counting(range.iova, range.len)
                    .map_err(|e| failure("Invalidate", e))?;
                commands += issued;
            }
            nested.flush()?;
        }
        if batch < 512 {
            nested
                .stage1
                .unmap(pin, 4096)
                .map_err(|e| failure("stage 1 unmap", e))?;
            nested.flush()?;
        }
        rt::println!(
            "bench io-map-stage1-batch-{batch} instructions={}",
            median(samples)
        );
        if batch == 64 {
            // Where the batch's instructions go: iopt writing the entries,
            // and the one Invalidate (system call, kernel, IOMMU commands).
            parts.sort_unstable();
            let (map, flush) = parts[REPEATS / 2];
            rt::println!(
                "bench io-stage1-map-only-batch-64 instructions={}",
                map / 64
            );
            rt::println!("bench io-invalidate-64-pages instructions={flush}");
            rt::println!(
                "bench io-unmap-stage1-64-commands commands={}",
                commands / REPEATS as u64
            );
        }
    }
    Ok(())
}

fn syscalls(objects: &mut Objects, nested: &Nested) -> Result<(), rt::testing::Failure> {
    let frame: Cap<Frame> = objects
        .make_sized::<Frame>(12)
        .map_err(|e| failure("retype", e))?;
    let mut copies = [frame; SYSCALL_PAGES as usize];
    for copy in &mut copies {
        *copy = objects
            .mint(frame, Rights::ALL, 0)
            .map_err(|e| failure("copy", e))?;
    }
    let mut map = [0; REPEATS];
    let mut unmap = [0; REPEATS];
    for (map, unmap) in map.iter_mut().zip(&mut unmap) {
        let start = counter();
        for (i, copy) in copies.iter().enumerate() {
            nested
                .space
                .map(*copy, IPA_BASE + 4096 * i as u64, MapRights::READ_WRITE)
                .map_err(|e| failure("IoSpace.Map", e))?;
        }
        *map = (counter() - start) / SYSCALL_PAGES;
        let start = counter();
        for copy in &copies {
            nested
                .space
                .unmap(*copy)
                .map_err(|e| failure("IoSpace.Unmap", e))?;
        }
        *unmap = (counter() - start) / SYSCALL_PAGES;
    }
    rt::println!("bench io-map-syscall instructions={}", median(map));
    rt::println!("bench io-unmap-syscall instructions={}", median(unmap));
    Ok(())
}

/// `CNode.Delete` of an empty slot, of a Frame copy and of an IO-mapped
/// Frame copy (no object dies in any of them).
fn deletes(objects: &mut Objects, nested: &Nested) -> Result<(), rt::testing::Failure> {
    let cnode = objects.cnode();
    let frame: Cap<Frame> = objects
        .make_sized::<Frame>(12)
        .map_err(|e| failure("retype", e))?;
    let slot = objects.slot().map_err(|e| failure("slot", e))?;
    let mut empty = [0; REPEATS];
    let mut copy = [0; REPEATS];
    let mut mapped = [0; REPEATS];
    for ((empty, copy), mapped) in empty.iter_mut().zip(&mut copy).zip(&mut mapped) {
        let start = counter();
        cnode.delete(slot).map_err(|e| failure("delete", e))?;
        *empty = counter() - start;
        cnode
            .copy(slot, frame, Rights::ALL)
            .map_err(|e| failure("copy", e))?;
        let start = counter();
        cnode.delete(slot).map_err(|e| failure("delete", e))?;
        *copy = counter() - start;
        let held = cnode
            .copy(slot, frame, Rights::ALL)
            .map_err(|e| failure("copy", e))?;
        nested
            .space
            .map(held, IPA_BASE, MapRights::READ_WRITE)
            .map_err(|e| failure("IoSpace.Map", e))?;
        let start = counter();
        cnode.delete(slot).map_err(|e| failure("delete", e))?;
        *mapped = counter() - start;
    }
    rt::println!("bench cnode-delete-empty instructions={}", median(empty));
    rt::println!(
        "bench cnode-delete-frame-copy instructions={}",
        median(copy)
    );
    rt::println!(
        "bench cnode-delete-mapped-frame-copy instructions={}",
        median(mapped)
    );
    cnode
        .delete(frame.slot())
        .map_err(|e| failure("delete", e))?;
    Ok(())
}

/// `IoSpace.Map` of one page with N pages already mapped. The copies
/// holding the first [`ROOT_COPIES`] mappings go in the free slots from
/// `first_copy` (the revoke benchmark's, empty again), the others in the
/// worker's CSpace ([`start_worker`]), the timed one in a slot above all
/// of them; revoking their Frame unmaps and deletes them all.
///
/// The timed copy's slot matters: the model keeps each IoSpace's mappings
/// on a list in slot order and links a new one searching down from the
/// highest (`caps/model/src/mapping_index.rs`), so a map from a slot below k
/// mapped slots walks those k. With the worker's mappings the root task
/// also times its own copy, which lies below them: the `-low-slot` row.
fn map_scaling(
    objects: &mut Objects,
    nested: &Nested,
    first_copy: Slot,
) -> Result<(), rt::testing::Failure> {
    let cnode = objects.cnode();
    let frame: Cap<Frame> = objects
        .make_sized::<Frame>(12)
        .map_err(|e| failure("retype", e))?;
    let timed = objects
        .mint(frame, Rights::ALL, 0)
        .map_err(|e| failure("copy", e))?;
    let mut mapped = 0;
    for count in MAPPED_COUNTS {
        let in_root = mapped.min(ROOT_COPIES)..count.min(ROOT_COPIES);
        map_copies(cnode, nested, frame, first_copy, in_root)?;
        let worker = if count > ROOT_COPIES {
            let copies = mapped.max(ROOT_COPIES)..count;
            Some(start_worker(objects, nested, frame, copies)?)
        } else {
            None
        };
        mapped = count;
        check_taken(nested.space, timed, count)?;
        let here = time_map(nested.space, timed).map_err(|e| failure("IoSpace.Map", e))?;
        let Some(report) = worker else {
            rt::println!("bench io-map-with-{count}-mapped instructions={here}");
            continue;
        };
        // Let the worker time its copy, in its top slot.
        let got = report
            .reply_recv(MessageInfo::new(0, 0), [0; 4])
            .map_err(|e| failure("ReplyRecv", e))?;
        match got.mrs {
            [top, 0, ..] => {
                rt::println!("bench io-map-with-{count}-mapped instructions={top}");
                rt::println!("bench io-map-with-{count}-mapped-low-slot instructions={here}");
            }
            [_, error, ..] => {
                let why = Error::from_code(error as u8);
                return Err(failure("the worker's timed IoSpace.Map", why));
            }
        }
    }
    cnode
        .revoke(frame.slot())
        .map_err(|e| failure("revoke", e))?;
    Ok(())
}

/// The IPA of the timed map: above every mapping of the benchmark.
const TIMED_IPA: u64 = IPA_BASE + 4096 * (1 + MAPPED_COUNTS[MAPPED_COUNTS.len() - 1]);

/// The median instructions of `IoSpace.Map` of `frame` at [`TIMED_IPA`]
/// (unmapped again after each). Not inlined: the root task and the worker
/// run the very same instructions around the system call (inlined, the
/// user-side code in the window differed by 11 between the two).
#[inline(never)]
fn time_map(space: Cap<IoSpace>, frame: Cap<Frame>) -> Result<u64, Error> {
    let mut samples = [0; REPEATS];
    for sample in &mut samples {
        let start = counter();
        space.map(frame, TIMED_IPA, MapRights::READ_WRITE)?;
        *sample = counter() - start;
        space.unmap(frame)?;
    }
    Ok(median(samples))
}

/// Checks that the kernel holds a mapping at each of the first `count`
/// IPAs from [`IPA_BASE`]: mapping `probe` there must answer
/// `AddressInUse`.
fn check_taken(
    space: Cap<IoSpace>,
    probe: Cap<Frame>,
    count: u64,
) -> Result<(), rt::testing::Failure> {
    for i in 0..count {
        let ipa = IPA_BASE + 4096 * i;
        match space.map(probe, ipa, MapRights::READ_WRITE) {
            Err(Error::AddressInUse) => {}
            other => {
                let why = rt::__format!("page {i} of {count} at {ipa:#x}: {other:?}");
                return Err(failure("a mapping should answer AddressInUse", why));
            }
        }
    }
    Ok(())
}

/// The worker thread's stack.
#[repr(C, align(16))]
struct Stack([u8; 8 * 1024]);
static mut WORKER_STACK: Stack = Stack([0; 8 * 1024]);

/// Starts a worker thread of the root task's address space whose CSpace
/// is a fresh CNode of `2^WORKER_CNODE_BITS` slots, filled with copies of
/// `frame` (more than the root task's CNode could hold), and waits until
/// it has mapped `copies` (copy `i` at IPA `IPA_BASE + 4096 * i`), which
/// must all succeed. Returns the endpoint the worker waits on: a reply
/// lets it time [`time_map`] of its copy in its top slot, above every
/// mapping's, and report that in a second `Call` (to which nobody
/// replies).
fn start_worker(
    objects: &mut Objects,
    nested: &Nested,
    frame: Cap<Frame>,
    copies: core::ops::Range<u64>,
) -> Result<Cap<Endpoint>, rt::testing::Failure> {
    let root_cnode = objects.cnode();
    let cspace: Cap<CNode> = objects
        .make_sized::<CNode>(WORKER_CNODE_BITS)
        .map_err(|e| failure("retype the worker's CNode", e))?;
    let report: Cap<Endpoint> = objects
        .make::<Endpoint>()
        .map_err(|e| failure("retype an endpoint", e))?;
    let copy_in = |dest: Slot, source: Slot| {
        cspace
            .copy_from(dest, root_cnode, source, Rights::ALL)
            .map_err(|e| failure("copy into the worker's CNode", e))
    };
    copy_in(WORKER_SPACE, nested.space.slot())?;
    copy_in(WORKER_REPORT, report.slot())?;
    copy_in(WORKER_TIMED, frame.slot())?;
    let wanted = copies.end - copies.start;
    for i in 0..wanted {
        copy_in(Slot::new(WORKER_FIRST_COPY + i as u32), frame.slot())?;
    }
    let tcb: Cap<Tcb> = objects
        .make::<Tcb>()
        .map_err(|e| failure("retype a Tcb", e))?;
    // Only the address is taken; the worker is the stack's only user.
    let stack = &raw const WORKER_STACK as u64 + 8 * 1024;
    // x86_64 enters a function as if a return address had been pushed.
    let stack = stack - if cfg!(target_arch = "x86_64") { 8 } else { 0 };
    let range = (copies.start << 32) | copies.end;
    tcb.configure(
        None,
        cspace,
        own(),
        bootinfo::INIT_IPC_BUFFER,
        abi::ipc::IPC_BUFFER_ADDRESS,
    )
    .and_then(|()| tcb.write_registers(worker as *const () as u64, stack, range))
    .and_then(|()| tcb.set_priority(100))
    .and_then(|()| tcb.resume())
    .map_err(|e| failure("start the worker", e))?;
    let got = report.recv().map_err(|e| failure("Recv", e))?;
    let [mapped, error, ..] = got.mrs;
    if mapped != wanted {
        let why = Error::from_code(error as u8);
        let why = rt::__format!("{mapped} of {wanted} mapped, then {why:?}");
        return Err(failure("the worker's IoSpace.Map", why));
    }
    Ok(report)
}

/// The worker: maps the Frame copy in its slot `WORKER_FIRST_COPY + j` at
/// IPA `IPA_BASE + 4096 * (first + j)` for the copies `first..end`
/// (`range` = `first << 32 | end`) in the IoSpace of its slot
/// [`WORKER_SPACE`], and reports how many maps succeeded and the error
/// code that stopped it (0: none) in a `Call` on [`WORKER_REPORT`]; once
/// answered, reports [`time_map`] of its copy in [`WORKER_TIMED`] (or
/// 0 and the error) in another.
extern "C" fn worker(range: u64) -> ! {
    let space: Cap<IoSpace> = Cap::from_slot(WORKER_SPACE);
    let report: Cap<Endpoint> = Cap::from_slot(WORKER_REPORT);
    let (first, end) = (range >> 32, range & 0xffff_ffff);
    let mut mapped = 0;
    let mut error = 0;
    for i in first..end {
        let copy: Cap<Frame> = Cap::from_slot(Slot::new(WORKER_FIRST_COPY + (i - first) as u32));
        match space.map(copy, IPA_BASE + 4096 * i, MapRights::READ_WRITE) {
            Ok(()) => mapped += 1,
            Err(e) => {
                error = u64::from(e.code());
                break;
            }
        }
    }
    let _ = report.call(MessageInfo::new(0, 2), [mapped, error, 0, 0]);
    let timed = match time_map(space, Cap::from_slot(WORKER_TIMED)) {
        Ok(median) => [median, 0, 0, 0],
        Err(e) => [0, u64::from(e.code()), 0, 0],
    };
    loop {
        let _ = report.call(MessageInfo::new(0, 2), timed);
    }
}

/// Copies `frame` into slots `first_copy + i` for each `i` of `copies`
/// and maps copy `i` at `IPA_BASE + 4096 * i`.
fn map_copies(
    cnode: Cap<CNode>,
    nested: &Nested,
    frame: Cap<Frame>,
    first_copy: Slot,
    copies: core::ops::Range<u64>,
) -> Result<(), rt::testing::Failure> {
    for i in copies {
        let slot = Slot::new(first_copy.index() + i as u32);
        let copy = cnode
            .copy(slot, frame, Rights::ALL)
            .map_err(|e| failure("copy", e))?;
        nested
            .space
            .map(copy, IPA_BASE + 4096 * i, MapRights::READ_WRITE)
            .map_err(|e| failure("IoSpace.Map", e))?;
    }
    Ok(())
}

fn revoke(objects: &mut Objects, nested: &Nested) -> Result<Slot, rt::testing::Failure> {
    let cnode = objects.cnode();
    let mut frames = [None; REVOKE_COUNTS.len()];
    for frame in &mut frames {
        let made: Cap<Frame> = objects
            .make_sized::<Frame>(12)
            .map_err(|e| failure("retype", e))?;
        *frame = Some(made);
    }
    // Consecutive free slots for the largest count of copies.
    let first_copy = objects.slot().map_err(|e| failure("slot", e))?;
    for _ in 1..REVOKE_COUNTS[REVOKE_COUNTS.len() - 1] {
        objects.slot().map_err(|e| failure("slot", e))?;
    }
    for (count, frame) in REVOKE_COUNTS.into_iter().zip(frames.into_iter().flatten()) {
        map_copies(cnode, nested, frame, first_copy, 0..count)?;
        let start = counter();
        cnode
            .revoke(frame.slot())
            .map_err(|e| failure("revoke", e))?;
        let spent = counter() - start;
        rt::println!("bench io-revoke-{count} instructions={spent}");
        cnode
            .delete(frame.slot())
            .map_err(|e| failure("delete", e))?;
    }
    Ok(first_copy)
}
