//! `vblk`: a virtio-blk driver as a protection domain (`images/blk.toml`).
//!
//! It starts with no IOMMU capability and asks init (`sys::resources`) for
//! the virtio-blk function at [`DEVICE`], an IoSpace that maps its table
//! frames read-only and its DMA pool read-write, and a fault queue. It
//! builds its own stage-1 table in the table frames (`virtio::dma`),
//! attaches the device nested under the IoSpace, reads the function's
//! configuration space through init and has init map the BARs it names
//! (`virtio::pci`), and drives the device with `virtio-drivers`'
//! `VirtIOBlk`, accepting `VIRTIO_F_ACCESS_PLATFORM`
//! (`virtio::platform`): by interrupts when the image's grant says
//! `msi = true` (init gives an MSI line, `virtio::msix` routes the queue's
//! MSI-X vector to it), else by polling. Every address the device gets is an IOVA of the
//! driver's stage 1, by default mapped for one request (`SHARING` picks
//! another way, `virtio::dma::Sharing`).
//!
//! Then it serves the block protocol (`vblk_protocol`) on its endpoint
//! `channel0`: a 4 KiB block travels through the page it shares with the
//! client; the device reads or writes the driver's own data page (shared
//! in place, mapped in stage 1 for the request), and the driver copies
//! between that page and the client's. `STATS` answers its IOMMU counters,
//! and a read's or write's reply its cost (`vblk_protocol::Cost`), for the
//! client's checks and `cargo xtask bench`; `INFO` also says how many
//! times init started the driver before and what its image injects.
//!
//! Init restarts the driver when it fails (`restarts` of its image). For
//! the restart tests its capability table may ask it to inject a failure
//! into its first run, at the read of [`INJECT_BLOCK`]: `crash-mid-io`
//! faults with the request in flight; `rogue-dma` points the data page's
//! IOVA at [`FOREIGN_IPA`], memory its IoSpace was not given, so the
//! device's write faults in the IOMMU; `crash-every-run` crashes as
//! `crash-mid-io` in every run (`images/restart-*.toml`).
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use sys::{CNode, Cap, Endpoint, Frame, IoFaultQueue, IoSpace, MapRights, MessageInfo, Slot};
use vblk_protocol::{
    BLOCK_SIZE, COMPLETIONS, Cost, Driver, FINISH_HELD, FRAME_IPA, Finished, INFO, INTERRUPTS,
    POLLING, READ, READ_FRAME, READ_FRAME_HELD, SECTORS_PER_BLOCK, SHARING, STATS, Sharing, Stats,
    Status, WAIT_FIRST, WRITE, WRITE_FRAME,
};
use virtio::Failure;
use virtio::dma::{Setup, StageOneHal};
use virtio::platform::{ACCESS_PLATFORM, AccessPlatform};
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};
use virtio_drivers::transport::pci::PciTransport;

rt::entry!(main);

/// The virtio-blk function the image grants (on request).
const DEVICE: (u8, u8, u8) = (0, 5, 0);
/// The badge the driver asks for on its device capability.
const BADGE: u64 = 0xB1;
/// The IoSpace size it asks for (the grant's).
const SPACE_SIZE: u64 = 2 << 20;
/// The image's `vblk_tables` (eight table frames): here and in the IoSpace.
const TABLES_VA: u64 = 0x5000_0000;
const TABLES_IPA: u64 = 0x4000;
const TABLE_FRAMES: usize = 8;
/// The image's `vblk_dma` (the Hal's pool, 16 pages): here and in the
/// IoSpace.
const DMA_VA: u64 = 0x4000_0000;
const DMA_IPA: u64 = 0x10_0000;
const DMA_PAGES: usize = 16;
/// The IOVAs the pool's pages get in stage 1: not their IPAs, so a device
/// handed an IPA would fault.
const POOL_IOVA: u64 = 0x1000_0000;
/// The page shared with the client (the image's `block_page`).
const SHARED_VA: u64 = 0x6000_0000;
/// Slots of the driver's own (`sys::names::DOMAIN_OWN_SLOTS`): the
/// IoUserTable, and where a client's Frame arrives.
const USER_TABLE_SLOT: Slot = Slot::new(100);
const FRAME_SLOT: Slot = Slot::new(101);
/// The IOVA the stage 1 maps to `FRAME_IPA` for good: what the device is
/// given for a client's Frame (zero copy), outside the pool's window.
const FRAME_IOVA: u64 = 0x1800_0000;
/// Polls between two looks at the fault queue while a request is out.
const POLLS_PER_FAULT_CHECK: u64 = 1024;
/// `peek_used` polls before a request counts as lost.
const POLL_LIMIT: u64 = 200_000_000;
/// Wakes (MSIs or faults) for one request before it counts as lost.
const WAKE_LIMIT: u64 = 1_000;
/// The IOVA the stage 1 maps to the MSI doorbell (aarch64): after the
/// pool, in the same 2 MiB.
const MSI_IOVA: u64 = POOL_IOVA + 0x10_0000;
/// The block whose first read an injected failure strikes.
const INJECT_BLOCK: u64 = 7;
/// RAM the driver was never given, where a `rogue-dma` run points its
/// data page: inside RAM, the IPA the kernel's `io-stage2-identity` seed
/// maps (so with that seed the write lands, and the test sees it).
#[cfg(target_arch = "x86_64")]
const FOREIGN_IPA: u64 = 0x1000_0000;
#[cfg(target_arch = "aarch64")]
const FOREIGN_IPA: u64 = 0x5800_0000;

type Blk = VirtIOBlk<StageOneHal, AccessPlatform<PciTransport>>;

fn fail(args: core::fmt::Arguments<'_>) -> Failure {
    Failure(rt::__format!("{args}"))
}

/// The device and the driver's data page.
struct Disk {
    blk: Blk,
    data: &'static mut [u8; BLOCK_SIZE],
    /// The data page's IOVA (mapped only while a request shares it).
    data_iova: u64,
    /// Ticks the current request spent polling for the device.
    wait: u64,
    blocks: u64,
    faults: Cap<IoFaultQueue>,
    space: Cap<IoSpace>,
    /// The driver's CSpace, to delete a client's Frame.
    cnode: Option<Cap<CNode>>,
    /// FRAME_SLOT holds a client's Frame (deleting an empty slot is not
    /// free: the kernel still reconciles).
    frame: bool,
    /// A client's Frame is mapped at FRAME_IPA past the reply
    /// (`READ_FRAME_HELD`).
    held: bool,
    /// The device faulted on a request: virtio devices stop (QEMU marks
    /// the device broken until a reset), so no request goes to it again.
    broken: bool,
    /// Fault records seen while polling: how many, the first's address.
    seen_faults: (u64, u64),
    /// Ticks of the request's IoSpace map and Frame delete (zero copy).
    frame_ticks: u64,
    /// The MSI line, in interrupt mode.
    interrupt: Option<virtio::msix::Interrupt>,
    /// Interrupts taken (`INFO`).
    interrupts: u64,
    /// Poll to the completion, then take its MSI (`WAIT_FIRST`, for the
    /// bench).
    wait_first: bool,
    /// Ticks the last request spent taking its MSI after polling.
    msi_ticks: u64,
    /// Interrupt mode: the last request found its completion without
    /// waiting, so its MSI is still to be taken (before the next doorbell).
    owed: bool,
    /// Requests whose completion the driver slept for (`COMPLETIONS`).
    slept: u64,
    /// Runs init started before this one (the capability table's `start`).
    start: u64,
    /// What its image injects (the capability table's `inject`), whether
    /// or not this run does.
    injects: u64,
    /// The failure this run still has to inject (`sys::names::INJECT_*`;
    /// 0: none).
    inject: u64,
}

fn main(startup: &rt::Startup) -> i32 {
    let Some(table) = startup.caps() else {
        rt::println!("[vblk] no capability table: run me as a domain of images/blk.toml");
        return 1;
    };
    let (Some(init), Some(clients)) = (
        table.lookup::<Endpoint>("init"),
        table.lookup::<Endpoint>("channel0"),
    ) else {
        rt::println!("[vblk] no `init` or `channel0` endpoint in my capability table");
        return 1;
    };
    rt::println!(
        "[vblk] started with no IOMMU capability; asking init for the virtio-blk at 00:05.0"
    );
    rt::println!(
        "[vblk] run {} (init started it {} time(s) before){}",
        table.start + 1,
        table.start,
        match table.inject {
            sys::names::INJECT_CRASH_MID_IO if table.start == 0 => {
                "; this run crashes with a request in flight"
            }
            sys::names::INJECT_ROGUE_DMA if table.start == 0 => {
                "; this run goes rogue: its stage 1 will point at memory it was not given"
            }
            sys::names::INJECT_CRASH_EVERY_RUN => {
                "; every run crashes with a request in flight"
            }
            _ => "",
        }
    );
    let cnode = startup
        .caps()
        .and_then(|table| table.lookup::<CNode>("cnode"));
    let mut disk = match start(init, cnode) {
        Ok(mut disk) => {
            disk.start = table.start;
            disk.injects = table.inject;
            disk.inject = match table.inject {
                sys::names::INJECT_CRASH_EVERY_RUN => sys::names::INJECT_CRASH_MID_IO,
                inject if table.start == 0 => inject,
                _ => 0,
            };
            Some(disk)
        }
        Err(why) => {
            rt::println!("[vblk] cannot drive the disk: {}", why.0);
            None
        }
    };
    // A zero-copy request's Frame lands here.
    sys::ipc::set_receive_slot(FRAME_SLOT);
    serve(clients, &mut disk)
}

/// Asks init for everything, builds the stage 1 and starts the device.
fn start(init: Cap<Endpoint>, cnode: Option<Cap<CNode>>) -> Result<Disk, Failure> {
    let granted = driverkit::start::request(init, DEVICE, BADGE, SPACE_SIZE)?;
    let (device, space, faults) = (granted.device, granted.space, granted.faults);
    let table = virtio::dma::install(Setup {
        space,
        table_slot: USER_TABLE_SLOT,
        memory: (DMA_VA, DMA_IPA, DMA_PAGES),
        tables: (TABLES_VA, TABLES_IPA, TABLE_FRAMES),
        iova: POOL_IOVA,
    })?;
    granted.attach(table)?;
    virtio::dma::map_fixed(FRAME_IOVA, FRAME_IPA)?;
    rt::println!(
        "[vblk] init gave the device (slot {}), a 2 MiB IoSpace (slot {}) and a fault queue; its own stage-1 table is bound and the device attached nested under the IoSpace",
        device.slot(),
        space.slot()
    );
    let function = virtio::pci::open(init, DEVICE)?;
    for (index, bar) in function.bars.iter().enumerate() {
        if let Some(bar) = bar {
            rt::println!(
                "[vblk] init mapped BAR {index} ({:#x} bytes at {:#x}) at {:#x}",
                bar.size,
                bar.physical,
                bar.address
            );
        }
    }
    let bars = function.bars;
    let transport = AccessPlatform::new(function.transport);
    let blk = Blk::new(transport).map_err(|e| {
        let why = virtio::dma::take_error();
        fail(format_args!("VirtIOBlk::new: {e:?} ({why:?})"))
    })?;
    match virtio::platform::last_negotiation() {
        Some((features, true)) if features & ACCESS_PLATFORM != 0 => {}
        other => {
            return Err(fail(format_args!(
                "feature negotiation (features written, device kept FEATURES_OK): {other:x?}; the driver needs VIRTIO_F_ACCESS_PLATFORM (QEMU: iommu_platform=on)"
            )));
        }
    }
    let queue_ipa = virtio::dma::translate(POOL_IOVA).unwrap_or(0);
    rt::println!(
        "[vblk] virtio-blk ready: {} sectors; the device kept FEATURES_OK with VIRTIO_F_ACCESS_PLATFORM; its virtqueue is at IOVA {POOL_IOVA:#x}, which its stage 1 maps to IPA {queue_ipa:#x}",
        blk.capacity(),
    );
    let interrupt = virtio::msix::enable(init, DEVICE, device, &bars, 0, MSI_IOVA)?;
    match interrupt {
        Some(line) => rt::println!(
            "[vblk] interrupt mode: init gave an MSI line; {}",
            line.describe()
        ),
        None => rt::println!("[vblk] polling mode: the image gives no MSI line"),
    }
    let data_va = virtio::dma::reserve(1)?;
    let blocks = blk.capacity() / SECTORS_PER_BLOCK;
    Ok(Disk {
        blk,
        data: data_page(data_va),
        data_iova: POOL_IOVA + (data_va - DMA_VA),
        wait: 0,
        blocks,
        faults,
        space,
        cnode,
        frame: false,
        held: false,
        broken: false,
        seen_faults: (0, 0),
        frame_ticks: 0,
        interrupt,
        interrupts: 0,
        wait_first: false,
        msi_ticks: 0,
        owed: false,
        slept: 0,
        start: 0,
        injects: 0,
        inject: 0,
    })
}

/// The reserved pool page at `va`.
#[allow(unsafe_code)]
fn data_page(va: u64) -> &'static mut [u8; BLOCK_SIZE] {
    // SAFETY: `virtio::dma::reserve` handed this page of the pool (mapped
    // read-write for the domain's life) to the driver alone, once; the
    // device reaches it only while a request shares it.
    unsafe { &mut *(va as *mut [u8; BLOCK_SIZE]) }
}

/// Copies the data page to the page shared with the client.
#[allow(unsafe_code)]
fn to_client(data: &[u8; BLOCK_SIZE]) {
    // SAFETY: init maps the 4 KiB `block_page` read-write at SHARED_VA
    // before this domain starts, for its whole life, and nothing in this
    // program refers to it but these two copies; the client reads it only
    // after the reply (it is blocked in its Call meanwhile), and bytes
    // have no invalid values, so a client that breaks the protocol can
    // only spoil its own block.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), SHARED_VA as *mut u8, BLOCK_SIZE) }
}

/// Copies the page shared with the client to the data page.
#[allow(unsafe_code)]
fn from_client(data: &mut [u8; BLOCK_SIZE]) {
    // SAFETY: as in `to_client`; the client wrote it before its Call.
    unsafe { core::ptr::copy_nonoverlapping(SHARED_VA as *const u8, data.as_mut_ptr(), BLOCK_SIZE) }
}

fn serve(clients: Cap<Endpoint>, disk: &mut Option<Disk>) -> i32 {
    let mut message = clients.recv();
    loop {
        let call = match message {
            Ok(call) => call,
            Err(e) => {
                rt::println!("[vblk] receiving answered {e:?}");
                return 1;
            }
        };
        let start = rt::bench::io_counter();
        let (iommu, doorbell) = (
            virtio::dma::counters().iommu_ticks,
            virtio::platform::doorbell_ticks(),
        );
        let answer = match disk.as_mut() {
            None => Err(Status::DeviceError),
            Some(disk) => {
                disk.wait = 0;
                disk.frame_ticks = 0;
                handle(disk, call.info, call.mrs[0]).map(|mrs| match call.info.label {
                    READ | WRITE | READ_FRAME | WRITE_FRAME => {
                        let cost = Cost {
                            wait: disk.wait,
                            driver: (rt::bench::io_counter() - start).saturating_sub(disk.wait),
                            iommu: virtio::dma::counters().iommu_ticks - iommu + disk.frame_ticks,
                            doorbell: virtio::platform::doorbell_ticks() - doorbell,
                        }
                        .to_mrs();
                        [mrs[0], cost[0], cost[1], cost[2]]
                    }
                    _ => mrs,
                })
            }
        };
        let (label, mrs) = match answer {
            Ok(mrs) => (0, mrs),
            Err(status) => (status.code(), [0; 4]),
        };
        message = clients.reply_recv(MessageInfo::new(label, 4), mrs);
    }
}

/// Answers one request: the reply's MR0..MR3. A Frame that came with a
/// request the driver does not keep is dropped.
fn handle(disk: &mut Disk, info: MessageInfo, block: u64) -> Result<[u64; 4], Status> {
    let carries_frame = info.extra_caps == 1;
    disk.frame |= carries_frame;
    let answer = answer(disk, info.label, block, carries_frame);
    if disk.frame
        && !disk.held
        && let Some(cnode) = disk.cnode
    {
        let _ = cnode.delete(FRAME_SLOT);
        disk.frame = false;
    }
    answer
}

fn answer(disk: &mut Disk, label: u32, block: u64, frame: bool) -> Result<[u64; 4], Status> {
    match label {
        INFO => Ok([
            disk.blocks,
            Driver::VirtioBlk.code(),
            disk.start,
            disk.injects,
        ]),
        WAIT_FIRST if disk.interrupt.is_some() => {
            disk.wait_first = block != 0;
            // Whatever was owed, a `WAIT_FIRST` read's wait may take it
            // instead: never wait for an MSI that may not come (a signal
            // left pending costs the next request one more wake).
            disk.owed = false;
            Ok([0; 4])
        }
        COMPLETIONS => Ok([
            if disk.interrupt.is_some() {
                INTERRUPTS
            } else {
                POLLING
            },
            disk.interrupts,
            disk.msi_ticks,
            disk.slept,
        ]),
        STATS => {
            let counters = virtio::dma::counters();
            let stats = Stats {
                invalidations: counters.invalidations,
                in_place: counters.in_place,
                bounced: counters.bounced,
                data_mapped: u64::from(virtio::dma::translate(disk.data_iova).is_some()),
            };
            Ok([
                stats.invalidations,
                stats.in_place,
                stats.bounced,
                stats.data_mapped,
            ])
        }
        SHARING => {
            let sharing = match Sharing::from_code(block) {
                Some(Sharing::PerRequest) => virtio::dma::Sharing::PerRequest,
                Some(Sharing::StagedBounces) => virtio::dma::Sharing::StagedBounces,
                Some(Sharing::Premapped) => virtio::dma::Sharing::Premapped,
                Some(Sharing::Batched) => virtio::dma::Sharing::Batched,
                None => return Err(Status::UnknownRequest),
            };
            virtio::dma::set_sharing(sharing).map_err(|why| {
                rt::println!("[vblk] changing how buffers are shared: {}", why.0);
                Status::DeviceError
            })?;
            Ok([0; 4])
        }
        READ | WRITE | READ_FRAME | WRITE_FRAME | READ_FRAME_HELD | FINISH_HELD
            if block >= disk.blocks =>
        {
            Err(Status::OutOfRange)
        }
        _ if disk.broken => Err(Status::DeviceError),
        READ_FRAME | WRITE_FRAME | READ_FRAME_HELD if disk.held => Err(Status::HeldState),
        READ_FRAME | WRITE_FRAME | READ_FRAME_HELD if !frame || disk.cnode.is_none() => {
            Err(Status::NoFrame)
        }
        READ_FRAME | WRITE_FRAME => {
            let write = label == WRITE_FRAME;
            map_frame(disk, write)?;
            let done = transfer_redirected(disk, block, write);
            drop_frame(disk);
            done.map(|()| [0; 4])
        }
        READ_FRAME_HELD => {
            map_frame(disk, false)?;
            match transfer_redirected(disk, block, false) {
                Ok(()) => {
                    disk.held = true;
                    Ok([FRAME_IOVA, 0, 0, 0])
                }
                Err(status) => {
                    drop_frame(disk);
                    Err(status)
                }
            }
        }
        FINISH_HELD if !disk.held => Err(Status::HeldState),
        FINISH_HELD => Ok(finish_held(disk, block)),
        READ => {
            if block == INJECT_BLOCK && disk.inject == sys::names::INJECT_ROGUE_DMA {
                go_rogue(disk)?;
            }
            transfer(disk, block, false)?;
            to_client(disk.data);
            Ok([0; 4])
        }
        WRITE => {
            if disk.blk.readonly() {
                return Err(Status::ReadOnly);
            }
            from_client(disk.data);
            transfer(disk, block, true)?;
            Ok([0; 4])
        }
        _ => Err(Status::UnknownRequest),
    }
}

/// One request for `block` between the device and the data page, polled
/// (bounded) to completion.
fn transfer(disk: &mut Disk, block: u64, write: bool) -> Result<(), Status> {
    let sector = (block * SECTORS_PER_BLOCK) as usize;
    take_owed_interrupt(disk, block);
    let mut request = BlkReq::default();
    let mut response = BlkResp::default();
    let data: &mut [u8] = &mut disk.data[..];
    #[allow(unsafe_code)]
    // SAFETY: `request`, `data` and `response` are not touched again until
    // the `complete_*` call below, with the same buffers; a request the
    // device never returns ends the domain (`lost`), so they are never
    // reused while the device holds them.
    let token = unsafe {
        if write {
            disk.blk
                .write_blocks_nb(sector, &mut request, data, &mut response)
        } else {
            disk.blk
                .read_blocks_nb(sector, &mut request, data, &mut response)
        }
    };
    let token = token.map_err(|e| {
        rt::println!(
            "[vblk] queueing block {block}: {e:?} ({:?})",
            virtio::dma::take_error()
        );
        Status::DeviceError
    })?;
    if !write && block == INJECT_BLOCK && disk.inject == sys::names::INJECT_CRASH_MID_IO {
        crash(block);
    }
    let mut polls = 0;
    let waiting = rt::bench::io_counter();
    while disk.blk.peek_used() != Some(token) {
        polls += 1;
        let look = match disk.interrupt.filter(|_| !disk.wait_first) {
            // Interrupt mode: sleep until the MSI or a fault record (init
            // bound the line to the fault queue's notification), a bounded
            // number of times; look at the fault queue after each wake the
            // queue signalled (the notification word says who did).
            Some(line) => {
                if polls == WAKE_LIMIT {
                    lost(disk, block);
                }
                match line.wait() {
                    Ok(woken) => {
                        disk.interrupts += u64::from(woken.line);
                        woken.other
                    }
                    Err(_) => lost(disk, block),
                }
            }
            None => {
                if polls == POLL_LIMIT {
                    lost(disk, block);
                }
                polls % POLLS_PER_FAULT_CHECK == 0
            }
        };
        if look && faulted(disk.faults, &mut disk.seen_faults) {
            // The device could not reach a buffer: a virtio device stops
            // there and never returns the request.
            disk.wait += rt::bench::io_counter() - waiting;
            disk.broken = true;
            rt::println!(
                "[vblk] block {block}: the device's access faulted (first at {:#x}); the device stops, and so does this driver's I/O",
                disk.seen_faults.1
            );
            return Err(Status::DeviceError);
        }
        core::hint::spin_loop();
    }
    disk.wait += rt::bench::io_counter() - waiting;
    // In interrupt mode: slept for its MSI, or it is still to come.
    if disk.interrupt.is_some() && !disk.wait_first {
        disk.owed = polls == 0;
        disk.slept += u64::from(polls > 0);
    }
    disk.msi_ticks = 0;
    if let Some(line) = disk.interrupt.filter(|_| disk.wait_first) {
        let taking = rt::bench::io_counter();
        match line.wait() {
            Ok(woken) => disk.interrupts += u64::from(woken.line),
            Err(_) => lost(disk, block),
        }
        disk.msi_ticks = rt::bench::io_counter() - taking;
    }
    #[allow(unsafe_code)]
    // SAFETY: the same buffers `*_nb` took, and the device returned them.
    let done = unsafe {
        if write {
            disk.blk
                .complete_write_blocks(token, &request, data, &mut response)
        } else {
            disk.blk
                .complete_read_blocks(token, &request, data, &mut response)
        }
    };
    // A `Batched` pool's unmaps reach the IOMMU now, before the driver
    // reads what the device wrote.
    virtio::dma::flush().map_err(|why| {
        rt::println!("[vblk] block {block}: unmapping its buffers: {}", why.0);
        Status::DeviceError
    })?;
    done.map_err(|e| {
        rt::println!(
            "[vblk] block {block}: the device answered {e:?} ({:?})",
            virtio::dma::take_error()
        );
        Status::DeviceError
    })
}

/// Interrupt mode: takes the MSI of the last request, which found its
/// completion without waiting, so that the next wait is for the next
/// request's own (a wake that brings only a fault record leaves it owed).
fn take_owed_interrupt(disk: &mut Disk, block: u64) {
    if let Some(line) = disk.interrupt.filter(|_| disk.owed && !disk.wait_first) {
        match line.wait() {
            Ok(woken) => {
                disk.interrupts += u64::from(woken.line);
                disk.owed = !woken.line;
            }
            Err(_) => lost(disk, block),
        }
    }
}

/// The injected `rogue-dma`: the next in-place share (this read's data
/// page) maps to [`FOREIGN_IPA`] in the driver's stage 1.
fn go_rogue(disk: &mut Disk) -> Result<(), Status> {
    disk.inject = 0;
    rt::println!(
        "[vblk] injected failure: block {INJECT_BLOCK}'s data page goes to IPA {FOREIGN_IPA:#x}, memory this IoSpace was not given; the device's write must fault in the IOMMU"
    );
    virtio::dma::misdirect(FOREIGN_IPA).map_err(|why| {
        rt::println!("[vblk] misdirecting the data page: {}", why.0);
        Status::DeviceError
    })
}

/// The injected `crash-mid-io`: a load from the guard page above the
/// stack, with `block`'s request queued and the doorbell rung.
fn crash(block: u64) -> ! {
    virtio::crash("vblk", format_args!("block {block}'s read in flight"))
}

/// A request the device never returned: its buffers stay the device's, so
/// the driver stops here, saying what the IOMMU saw.
fn lost(disk: &mut Disk, block: u64) -> ! {
    rt::println!(
        "[vblk] block {block}: no answer after {POLL_LIMIT} polls or {WAKE_LIMIT} wakes ({:?})",
        virtio::dma::take_error()
    );
    while faulted(disk.faults, &mut disk.seen_faults) {}
    rt::exit(1)
}

/// Takes the fault queue's records, printing them and noting them in
/// `seen` (how many, the first's address); whether there were any.
fn faulted(queue: Cap<IoFaultQueue>, seen: &mut (u64, u64)) -> bool {
    let mut any = false;
    while let Ok(Some(record)) = queue.pop() {
        any = true;
        if seen.0 == 0 {
            seen.1 = record.address;
        }
        seen.0 += 1;
        rt::println!(
            "[vblk] IOMMU fault: badge {:#x}, address {:#x}, {}, reason {:#x}",
            record.badge,
            record.address,
            if record.write { "write" } else { "read" },
            record.reason
        );
    }
    any
}

/// Maps the client's Frame (in FRAME_SLOT) into the IoSpace at FRAME_IPA:
/// read-only when the device reads it (a write), read-write when it writes
/// it. On VT-d the stage 1 is invalidated at FRAME_IOVA, which composes
/// the new entry into the kernel's shadow; SMMUv3 walks both stages itself
/// and caches no missing translation.
fn map_frame(disk: &mut Disk, device_reads: bool) -> Result<(), Status> {
    let rights = if device_reads {
        MapRights::READ
    } else {
        MapRights::READ_WRITE
    };
    let start = rt::bench::io_counter();
    let mapped = disk
        .space
        .map(Cap::<Frame>::from_slot(FRAME_SLOT), FRAME_IPA, rights);
    disk.frame_ticks += rt::bench::io_counter() - start;
    if let Err(e) = mapped {
        rt::println!("[vblk] IoSpace.Map of the client's Frame at {FRAME_IPA:#x}: {e:?}");
        return Err(Status::NoFrame);
    }
    if cfg!(target_arch = "x86_64") {
        let start = rt::bench::io_counter();
        let composed = virtio::dma::invalidate(FRAME_IOVA, BLOCK_SIZE as u64);
        disk.frame_ticks += rt::bench::io_counter() - start;
        composed.map_err(|why| {
            rt::println!("[vblk] {}", why.0);
            Status::DeviceError
        })?;
    }
    Ok(())
}

/// Deletes the driver's copy of the client's Frame: the kernel unmaps it
/// from the IoSpace and waits for the IOMMU's invalidation before the
/// delete returns. On VT-d that unmap dropped only the kernel's shadow
/// entry for FRAME_IOVA (the one composed through FRAME_IPA): the pool's
/// entries keep translating.
fn drop_frame(disk: &mut Disk) {
    let start = rt::bench::io_counter();
    if let Some(cnode) = disk.cnode
        && let Err(e) = cnode.delete(FRAME_SLOT)
    {
        rt::println!("[vblk] deleting the client's Frame: {e:?}");
    }
    disk.frame_ticks += rt::bench::io_counter() - start;
    disk.frame = false;
    disk.held = false;
}

/// One request between the device and the client's Frame: the crate is
/// given the data page, which the Hal redirects to FRAME_IOVA.
fn transfer_redirected(disk: &mut Disk, block: u64, write: bool) -> Result<(), Status> {
    let proxy = disk.data.as_ptr() as u64;
    virtio::dma::redirect(Some((proxy, FRAME_IOVA)));
    let done = transfer(disk, block, write);
    virtio::dma::redirect(None);
    done
}

/// The second half of a held I/O: the device writes `block` through
/// FRAME_IOVA again. The client may have revoked its Frame since: then the
/// IoSpace no longer maps FRAME_IPA and the access must fault.
fn finish_held(disk: &mut Disk, block: u64) -> [u64; 4] {
    // A revoke the driver did not see dropped (VT-d) only the shadow entry
    // composed through FRAME_IPA: the pool needs no new Invalidate.
    disk.seen_faults = (0, 0);
    let outcome = transfer_redirected(disk, block, false);
    let still_held = disk
        .space
        .unmap(Cap::<Frame>::from_slot(FRAME_SLOT))
        .is_ok();
    faulted(disk.faults, &mut disk.seen_faults);
    rt::println!(
        "[vblk] the held I/O's second read of block {block} through IOVA {FRAME_IOVA:#x} (the client's Frame {}): {outcome:?}",
        if still_held {
            "still mapped"
        } else {
            "revoked by the client"
        }
    );
    let finished = Finished {
        faults: disk.seen_faults.0,
        first_fault: disk.seen_faults.1,
        still_held: u64::from(still_held),
    };
    drop_frame(disk);
    let [faults, first, held] = finished.to_mrs();
    [faults, first, held, 0]
}
