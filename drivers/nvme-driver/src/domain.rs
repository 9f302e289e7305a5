//! The driver as a protection domain of `images/nvme.toml`: it starts with
//! no IOMMU capability, asks init (`sys::resources`) for the NVMe
//! controller at 00:06.0 (init maps its 16 KiB BAR 0 whole: registers and
//! doorbells), a 2 MiB IoSpace and a fault queue, builds its own stage-1
//! table with `iopt` in the image's `nvme_tables` region, maps the pages
//! of `nvme_dma` at IOVAs that are not their IPAs, attaches the device
//! nested under the IoSpace, and serves the block protocol
//! (`vblk_protocol`, the same as `drivers/vblk`) on its endpoint
//! `channel0` to the image's client (`userland/blkclient`), which reads,
//! checks and rewrites every block of the disk xtask made; after QEMU exits
//! xtask checks the file holds the new pattern. Where the grant says
//! `msi = true` (`images/nvme-irq.toml`) it takes the controller's
//! interrupts instead of polling: an MSI line from init, MSI-X vector 0
//! programmed in BAR 0's table (`driverkit::msix`; on aarch64 through
//! [`MSI_IOVA`], which its stage 1 maps to the GICv2m doorbell), and the
//! `nvme` crate in interrupt mode (the I/O completion queue created with
//! interrupts on vector 0), sleeping on the line between looks.
//!
//! ```text
//!   nvme_dma     VA 0x4000_0000 + 4K*n   IPA 0x10_0000 + 4K*n   IOVA 0x80_0000 + 8K*n
//!   nvme_tables  VA 0x5000_0000          IPA 0x4000 (read-only to the IOMMU)
//!   block_page   VA 0x6000_0000          (shared with the client; the device never sees it)
//!   client Frame (zero copy)             IPA FRAME_IPA while a request holds it   IOVA 0x90_0000
//!   MSI doorbell (aarch64, interrupts)   IPA the IoSpace's last page (the kernel's)   IOVA 0x98_0000
//! ```
//!
//! `READ` and `WRITE` go through a data page of the pre-mapped pool and a
//! copy to or from `block_page`. The zero-copy requests (`READ_FRAME`,
//! `WRITE_FRAME`) carry the client's Frame capability: the driver maps it
//! into its IoSpace at `FRAME_IPA` (the stage 1 maps [`FRAME_IOVA`] there
//! for good, so while no Frame is mapped the IOVA leads nowhere), has the
//! controller DMA straight into it, and deletes its copy, which unmaps it
//! and waits for the IOMMU's invalidation before the reply. A client that
//! revokes its Frame in the middle of an I/O (`READ_FRAME_HELD`, then
//! `FINISH_HELD`) takes the IoSpace mapping with it: the controller's next
//! write through the IOVA faults (the kernel's revoke returned after the
//! invalidation), and `FINISH_HELD` reports the fault records.

use core::cell::Cell;
use core::sync::atomic::{Ordering, fence};

use crate::platform::{Bar, Region, Spin, StageOneDma, Timeline, pool_iova};
use driverkit::msix::{Interrupt, Woken};
use edu::nested::{FORMAT, Invalidate, stage1_in};
use nvme::{Config, Controller, Delay, Dma, DmaPage, Iova};
use rt::mmio::Window;
use rt::testing::Failure;
use sys::names::CapTable;
use sys::{
    CNode, Cap, Endpoint, Frame, IoFaultQueue, IoSpace, IoUserTable, MapRights, MessageInfo, Slot,
};
use vblk_protocol::{
    BLOCK_SIZE, COMPLETIONS, Cost, DISK_BLOCKS, Driver as DriverKind, FINISH_HELD, FRAME_IPA,
    Finished, INFO, INTERRUPTS, POLLING, READ, READ_FRAME, READ_FRAME_HELD, STATS, Status,
    WAIT_FIRST, WRITE, WRITE_FRAME,
};

/// The controller the image grants (on request).
const DEVICE: (u8, u8, u8) = (0, 6, 0);
/// The badge the driver asks for on its device capability.
const BADGE: u64 = 0x4e;
/// The IoSpace size the grant allows.
const SPACE_SIZE: u64 = 2 << 20;
/// The image's `nvme_dma` (16 pages): here and in the IoSpace; and the
/// IOVA of its first page in the driver's stage 1.
const DMA_VA: u64 = 0x4000_0000;
const DMA_IPA: u64 = 0x10_0000;
const DMA_PAGES: u64 = 16;
const DMA_IOVA: u64 = 0x80_0000;
/// The image's `nvme_tables` (four table frames): here and in the IoSpace.
const TABLES_VA: u64 = 0x5000_0000;
const TABLES_IPA: u64 = 0x4000;
const TABLE_FRAMES: usize = 4;
/// The page shared with the client (the image's `block_page`).
const SHARED_VA: u64 = 0x6000_0000;
/// The IOVA the stage 1 maps to [`FRAME_IPA`]: what the controller is
/// given for a client's Frame.
pub const FRAME_IOVA: u64 = 0x90_0000;
/// BAR 0 of QEMU's NVMe controller (registers, doorbells, and the MSI-X
/// table and pending bits).
const REGISTERS_SIZE: u64 = 16 << 10;
/// The IOVA the stage 1 maps to the MSI doorbell (aarch64, interrupt
/// mode): in the same 2 MiB as the pool and [`FRAME_IOVA`], so the four
/// table frames still suffice.
const MSI_IOVA: u64 = 0x98_0000;
/// The block whose first read an injected failure strikes (as `vblk`'s).
const INJECT_BLOCK: u64 = 7;
/// A `rogue-dma` run reads [`INJECT_BLOCK`] into this IOVA, which its
/// stage 1 maps to [`FOREIGN_IPA`], RAM its IoSpace was never given (the
/// IPA the kernel's `io-stage2-identity` seed maps), in the same 2 MiB as
/// the pool.
const ROGUE_IOVA: u64 = 0x9C_0000;
/// Yields a rogue run makes after the controller reported its blocked
/// write, before it answers.
const ROGUE_GRACE_YIELDS: u32 = 10_000;
#[cfg(target_arch = "x86_64")]
const FOREIGN_IPA: u64 = 0x1000_0000;
#[cfg(target_arch = "aarch64")]
const FOREIGN_IPA: u64 = 0x5800_0000;
/// `WAIT_FIRST`: microseconds of spinning per look while polling to the
/// completion (at most `nvme::MAX_WAKES` looks).
const WAIT_FIRST_SPIN_MICROSECONDS: u32 = 1000;
/// Slots of the domain's own (`sys::names::DOMAIN_OWN_SLOTS`): the
/// IoUserTable, and where a client's Frame arrives.
const USER_TABLE_SLOT: Slot = Slot::new(100);
const FRAME_SLOT: Slot = Slot::new(101);
/// Blocks of 512 bytes in one 4 KiB block of the disk.
const SECTORS: u32 = (BLOCK_SIZE / 512) as u32;

fn failure(what: &str, error: impl core::fmt::Debug) -> Failure {
    Failure(rt::__format!("{what}: {error:?}"))
}

type Driver<'a> = Controller<Bar<'a>, StageOneDma<'a, Region>, Waker<'a>>;

/// What the driver asked init for and built.
struct Granted {
    registers: Window,
    faults: Cap<IoFaultQueue>,
    space: Cap<IoSpace>,
    table: Cap<IoUserTable>,
    /// The MSI line, in interrupt mode (`msi = true` on the grant).
    interrupt: Option<Interrupt>,
}

/// What the waits between looks at a completion queue share with the
/// request handler.
#[derive(Default)]
struct Wakes {
    /// Interrupts taken so far (`COMPLETIONS`).
    interrupts: Cell<u64>,
    /// Poll to the completion, then take its MSI (`WAIT_FIRST`).
    wait_first: Cell<bool>,
    /// Waits for an interrupt so far.
    waits: Cell<u64>,
    /// The last command found its completion without waiting, so its MSI
    /// is still to be taken (before the next doorbell).
    owed: Cell<bool>,
    /// Commands whose completion the driver slept for (`COMPLETIONS`).
    slept: Cell<u64>,
}

impl Wakes {
    /// Counts a wake of `line`'s.
    fn woken(&self, woken: Result<Woken, Failure>) -> bool {
        match woken {
            Ok(woken) => {
                self.interrupts
                    .set(self.interrupts.get() + u64::from(woken.line));
                woken.line
            }
            Err(why) => {
                rt::println!("[nvme] {}", why.0);
                false
            }
        }
    }
}

/// The crate's waiting: in interrupt mode, sleeping on the MSI line's
/// notification (which the fault queue shares); else, or while
/// `WAIT_FIRST`, spinning.
struct Waker<'a> {
    interrupt: Option<Interrupt>,
    wakes: &'a Wakes,
}

impl Delay for Waker<'_> {
    fn delay_microseconds(&mut self, microseconds: u32) {
        Spin.delay_microseconds(microseconds);
    }

    fn wait_for_interrupt(&mut self) {
        match self.interrupt {
            Some(line) if !self.wakes.wait_first.get() => {
                self.wakes.waits.set(self.wakes.waits.get() + 1);
                self.wakes.woken(line.wait());
            }
            _ => Spin.delay_microseconds(WAIT_FIRST_SPIN_MICROSECONDS),
        }
    }
}

/// The controller, its data page and what zero copy needs.
struct Disk<'a> {
    controller: Driver<'a>,
    timeline: &'a Timeline,
    wakes: &'a Wakes,
    /// The MSI line, in interrupt mode.
    interrupt: Option<Interrupt>,
    /// Ticks the last request spent taking its MSI after polling
    /// (`WAIT_FIRST`).
    msi_ticks: u64,
    data: DmaPage<crate::platform::Mapped>,
    granted: Granted,
    cnode: Cap<CNode>,
    /// FRAME_SLOT holds a client's Frame (deleting an empty slot is not
    /// free: the kernel still reconciles).
    frame: bool,
    /// A client's Frame is mapped at FRAME_IPA and kept after the reply
    /// (`READ_FRAME_HELD`).
    held: bool,
    /// `IoUserTable.Invalidate` calls since the start.
    invalidations: u64,
    /// Ticks of IoSpace map, delete and invalidation of the request.
    iommu: u64,
    /// Runs init started before this one (the capability table's `start`).
    start: u64,
    /// What its image injects (the capability table's `inject`), whether
    /// or not this run does.
    injects: u64,
    /// The failure this run still has to inject (`sys::names::INJECT_*`;
    /// 0: none).
    inject: u64,
}

/// Runs the domain; returns the exit status.
pub fn run(table: &CapTable) -> i32 {
    let (Some(init), Some(clients), Some(cnode)) = (
        table.lookup::<Endpoint>("init"),
        table.lookup::<Endpoint>("channel0"),
        table.lookup::<CNode>("cnode"),
    ) else {
        rt::println!(
            "[nvme] no `init` or `channel0` endpoint or `cnode` in my capability table: run me as a domain of images/nvme.toml"
        );
        return 1;
    };
    rt::println!(
        "[nvme] started with no IOMMU capability; asking init for the NVMe controller at 00:06.0"
    );
    let inject = match table.inject {
        sys::names::INJECT_CRASH_EVERY_RUN => sys::names::INJECT_CRASH_MID_IO,
        inject if table.start == 0 => inject,
        _ => 0,
    };
    rt::println!(
        "[nvme] run {} (init started it {} time(s) before){}",
        table.start + 1,
        table.start,
        match inject {
            sys::names::INJECT_CRASH_MID_IO => "; this run crashes with a request in flight",
            sys::names::INJECT_ROGUE_DMA => {
                "; this run goes rogue: its stage 1 will point at memory it was not given"
            }
            _ => "",
        }
    );
    let granted = match ask(init, inject == sys::names::INJECT_ROGUE_DMA) {
        Ok(granted) => granted,
        Err(why) => {
            rt::println!("[nvme] cannot drive the controller: {}", why.0);
            return serve(clients, None);
        }
    };
    let timeline = Timeline::default();
    let wakes = Wakes::default();
    let interrupt = granted.interrupt;
    let bar = Bar {
        registers: granted.registers,
        timeline: &timeline,
    };
    #[allow(unsafe_code)]
    // SAFETY: the image maps `nvme_dma` (DMA_PAGES pages) read-write at
    // DMA_VA for the domain's life; only the pool touches it.
    let region = unsafe { Region::new(DMA_VA, DMA_IOVA, DMA_PAGES) };
    let dma = StageOneDma {
        source: region,
        timeline: &timeline,
    };
    let waker = Waker {
        interrupt,
        wakes: &wakes,
    };
    let config = Config {
        interrupts: interrupt.is_some(),
        ..Config::default()
    };
    let mut controller = match Controller::bring_up(bar, dma, waker, config) {
        Ok(up) => up,
        Err(e) => {
            rt::println!("[nvme] bring-up: {e}");
            return serve(clients, None);
        }
    };
    rt::println!(
        "[nvme] NVMe {} up: {}",
        controller.version(),
        controller.identity()
    );
    rt::println!("[nvme] {}", controller.namespace());
    let blocks = controller.namespace().blocks / u64::from(SECTORS);
    if blocks != DISK_BLOCKS {
        rt::println!(
            "[nvme] namespace 1 has {blocks} blocks of 4 KiB; the disk xtask made has {DISK_BLOCKS}"
        );
    }
    let data = match controller.dma().allocate_page() {
        Ok(page) => page,
        Err(e) => {
            rt::println!("[nvme] a data page: {e:?}");
            return serve(clients, None);
        }
    };
    sys::ipc::set_receive_slot(FRAME_SLOT);
    let mut disk = Disk {
        controller,
        timeline: &timeline,
        wakes: &wakes,
        interrupt,
        msi_ticks: 0,
        data,
        granted,
        cnode,
        frame: false,
        held: false,
        invalidations: 0,
        iommu: 0,
        start: table.start,
        injects: table.inject,
        inject,
    };
    rt::println!("[nvme] serving {blocks} blocks of 4 KiB on channel0");
    serve(clients, Some(&mut disk))
}

/// Asks init for the device, its IoSpace and a fault queue; builds and
/// binds the stage 1 (the pool, and [`FRAME_IOVA`] to [`FRAME_IPA`]) and
/// attaches the device nested under the IoSpace. A `rogue` run also maps
/// [`ROGUE_IOVA`] to [`FOREIGN_IPA`].
fn ask(init: Cap<Endpoint>, rogue: bool) -> Result<Granted, Failure> {
    let granted = driverkit::start::request(init, DEVICE, BADGE, SPACE_SIZE)?;
    let driverkit::start::Granted {
        device,
        registers,
        space,
        faults,
    } = granted;
    #[allow(unsafe_code)]
    // SAFETY: the image maps `nvme_tables` (TABLE_FRAMES frames) read-write
    // at TABLES_VA for the domain's life, and `ask`, called once, makes
    // this the only Rust view of it.
    let frames = unsafe { driverkit::start::table_frames(TABLES_VA, TABLE_FRAMES) };
    let mut stage1 = stage1_in(TABLES_IPA, frames)?;
    // Bind the (empty) table and attach the device first, then map and
    // invalidate: the invalidation is what makes the kernel compose the
    // entries for an attached device (VT-d shadow nesting).
    let table = space
        .bind_user_table(stage1.root().ipa(), FORMAT.1, USER_TABLE_SLOT)
        .map_err(|e| failure("IoSpace.BindUserTable", e))?;
    granted.attach(table)?;
    for page in 0..DMA_PAGES {
        stage1
            .map(
                pool_iova(DMA_IOVA, page),
                DMA_IPA + 4096 * page,
                4096,
                iopt::Rights::READ_WRITE,
            )
            .map_err(|e| failure("stage-1 map", e))?;
    }
    // The client Frames' IOVA, for good: it reaches memory only while a
    // request has a Frame mapped at FRAME_IPA in the IoSpace.
    stage1
        .map(FRAME_IOVA, FRAME_IPA, 4096, iopt::Rights::READ_WRITE)
        .map_err(|e| failure("stage-1 map of the client Frames' IOVA", e))?;
    if rogue {
        stage1
            .map(ROGUE_IOVA, FOREIGN_IPA, 4096, iopt::Rights::READ_WRITE)
            .map_err(|e| failure("the rogue stage-1 map", e))?;
    }
    stage1
        .flush(&mut Invalidate(table))
        .map_err(|e| failure("IoUserTable.Invalidate", e))?;
    rt::println!(
        "[nvme] init gave the device, a 2 MiB IoSpace and a fault queue; its own stage-1 table maps the {DMA_PAGES} DMA pages at IOVAs {DMA_IOVA:#x}.. (every other page) and IOVA {FRAME_IOVA:#x} to IPA {FRAME_IPA:#x}, where a client's Frame is mapped during a zero-copy request; the device is attached nested under the IoSpace"
    );
    let registers = Window::granted(registers, REGISTERS_SIZE);
    // Interrupt mode where the grant says so: MSI-X vector 0 (the admin
    // completion queue's, and the I/O queue's the crate creates) in the
    // table in BAR 0, enabled before bring-up.
    let requested = driverkit::msix::request(
        init,
        DEVICE,
        device,
        |doorbell| {
            stage1
                .map(MSI_IOVA, doorbell, 4096, iopt::Rights::READ_WRITE)
                .map_err(|e| failure("stage-1 map of the MSI doorbell", e))?;
            stage1
                .flush(&mut Invalidate(table))
                .map_err(|e| failure("IoUserTable.Invalidate", e))?;
            Ok(MSI_IOVA)
        },
        |bar, offset, value| {
            if bar != 0 || offset + 4 > REGISTERS_SIZE {
                return Err(Failure(rt::__format!(
                    "the MSI-X table is at {offset:#x} of BAR {bar}, outside the {REGISTERS_SIZE:#x} bytes of BAR 0 init mapped"
                )));
            }
            registers.write32(offset, value);
            Ok(())
        },
    )?;
    let interrupt = match requested {
        Some((line, msix)) => {
            msix.enable()?;
            rt::println!(
                "[nvme] interrupt mode: init gave an MSI line; {}",
                line.describe()
            );
            Some(line)
        }
        None => {
            rt::println!("[nvme] polling mode: the image gives no MSI line");
            None
        }
    };
    Ok(Granted {
        registers,
        faults,
        space,
        table,
        interrupt,
    })
}

fn serve(clients: Cap<Endpoint>, mut disk: Option<&mut Disk<'_>>) -> i32 {
    let mut message = clients.recv();
    loop {
        let call = match message {
            Ok(call) => call,
            Err(e) => {
                rt::println!("[nvme] receiving answered {e:?}");
                return 1;
            }
        };
        let answer = match disk.as_deref_mut() {
            None => Err(Status::DeviceError),
            Some(disk) => disk.handle(call.info, call.mrs[0]),
        };
        let (label, mrs) = match answer {
            Ok(mrs) => (0, mrs),
            Err(status) => (status.code(), [0; 4]),
        };
        message = clients.reply_recv(MessageInfo::new(label, 4), mrs);
    }
}

impl Disk<'_> {
    /// Answers one request: the reply's MR0..MR3.
    fn handle(&mut self, info: MessageInfo, block: u64) -> Result<[u64; 4], Status> {
        let carries_frame = info.extra_caps == 1;
        self.frame |= carries_frame;
        let answer = self.answer(info.label, block, carries_frame);
        // A Frame that came with a request the driver did not keep (a
        // refused request, or a label that takes none) is dropped.
        if self.frame && !self.held {
            let _ = self.cnode.delete(FRAME_SLOT);
            self.frame = false;
        }
        answer
    }

    fn answer(&mut self, label: u32, block: u64, frame: bool) -> Result<[u64; 4], Status> {
        let blocks = DISK_BLOCKS;
        match label {
            INFO => Ok([blocks, DriverKind::Nvme.code(), self.start, self.injects]),
            WAIT_FIRST if self.interrupt.is_some() => {
                self.wakes.wait_first.set(block != 0);
                // As `vblk`: never wait for an MSI that may not come.
                self.wakes.owed.set(false);
                Ok([0; 4])
            }
            COMPLETIONS => Ok([
                if self.interrupt.is_some() {
                    INTERRUPTS
                } else {
                    POLLING
                },
                self.wakes.interrupts.get(),
                self.msi_ticks,
                self.wakes.slept.get(),
            ]),
            STATS => Ok([self.invalidations, 0, 0, 0]),
            READ | WRITE | READ_FRAME | WRITE_FRAME | READ_FRAME_HELD | FINISH_HELD
                if block >= blocks =>
            {
                Err(Status::OutOfRange)
            }
            READ if block == INJECT_BLOCK && self.inject == sys::names::INJECT_ROGUE_DMA => {
                self.inject = 0;
                rt::println!(
                    "[nvme] injected failure: block {INJECT_BLOCK} is read into IOVA {ROGUE_IOVA:#x}, which my stage 1 maps to IPA {FOREIGN_IPA:#x}, memory this IoSpace was not given; the controller's write must fault in the IOMMU"
                );
                let done = self.transfer(block, Iova(ROGUE_IOVA), false);
                if done.is_err() {
                    // The write faulted and the controller answered with an
                    // error: init's fault watcher (higher priority) stops
                    // this run once the IOMMU's fault interrupt reaches it;
                    // give it time before answering, so the client sees the
                    // restart rather than this error.
                    for _ in 0..ROGUE_GRACE_YIELDS {
                        sys::yield_now();
                    }
                }
                done.map(|()| [0; 4])
            }
            READ => self.timed(|disk| {
                if block == INJECT_BLOCK && disk.inject == sys::names::INJECT_CRASH_MID_IO {
                    disk.timeline.crash_after_submission.set(Some(block));
                }
                disk.transfer(block, disk.data.device_address, false)?;
                // What the controller wrote before the completion the
                // driver saw is seen too.
                fence(Ordering::SeqCst);
                copy_page(disk.data.cpu.address(), SHARED_VA);
                Ok(0)
            }),
            WRITE => self.timed(|disk| {
                // The doorbell write fences before it rings.
                copy_page(SHARED_VA, disk.data.cpu.address());
                disk.transfer(block, disk.data.device_address, true)
                    .map(|()| 0)
            }),
            READ_FRAME | WRITE_FRAME | READ_FRAME_HELD if self.held => Err(Status::HeldState),
            READ_FRAME | WRITE_FRAME | READ_FRAME_HELD if !frame => Err(Status::NoFrame),
            READ_FRAME | WRITE_FRAME => self.timed(|disk| {
                let write = label == WRITE_FRAME;
                disk.map_frame(write)?;
                let done = disk.transfer(block, Iova(FRAME_IOVA), write);
                disk.drop_frame();
                done.map(|()| 0)
            }),
            READ_FRAME_HELD => {
                self.map_frame(false)?;
                match self.transfer(block, Iova(FRAME_IOVA), false) {
                    Ok(()) => {
                        self.held = true;
                        Ok([FRAME_IOVA, 0, 0, 0])
                    }
                    Err(status) => {
                        self.drop_frame();
                        Err(status)
                    }
                }
            }
            FINISH_HELD if !self.held => Err(Status::HeldState),
            FINISH_HELD => Ok(self.finish_held(block)),
            _ => Err(Status::UnknownRequest),
        }
    }

    /// Runs a read or write, timing it: the reply's MR0 and its
    /// [`Cost`] in MR1..MR3.
    fn timed(
        &mut self,
        request: impl FnOnce(&mut Self) -> Result<u64, Status>,
    ) -> Result<[u64; 4], Status> {
        let start = rt::bench::io_counter();
        let doorbell = self.timeline.doorbell_ticks.get();
        self.iommu = 0;
        let mr0 = request(self)?;
        let wait = self
            .timeline
            .completion_seen
            .get()
            .saturating_sub(self.timeline.submitted.get());
        let cost = Cost {
            wait,
            driver: (rt::bench::io_counter() - start).saturating_sub(wait),
            iommu: self.iommu,
            doorbell: self.timeline.doorbell_ticks.get() - doorbell,
        }
        .to_mrs();
        Ok([mr0, cost[0], cost[1], cost[2]])
    }

    /// One command of the block at `address`, polled (bounded) to
    /// completion, or in interrupt mode waited for by MSI (or, with
    /// `WAIT_FIRST`, polled to completion and then its MSI taken). A
    /// stage-2 unmap (VT-d shadow nesting) dropped only the shadow entries
    /// composed through the unmapped IPA: the pool needs no new
    /// `Invalidate`.
    fn transfer(&mut self, block: u64, address: Iova, write: bool) -> Result<(), Status> {
        let lba = block * u64::from(SECTORS);
        // Interrupt mode: the last command's MSI first, if it found its
        // completion without waiting, so this command's wait is for its own.
        let sleeping = self.interrupt.filter(|_| !self.wakes.wait_first.get());
        if let Some(line) = sleeping.filter(|_| self.wakes.owed.get()) {
            let taken = self.wakes.woken(line.wait());
            self.wakes.owed.set(!taken);
        }
        let waits = self.wakes.waits.get();
        let done = if write {
            self.controller.write(lba, SECTORS, &[address])
        } else {
            self.controller.read(lba, SECTORS, &[address])
        };
        if sleeping.is_some() && done.is_ok() {
            let waited = self.wakes.waits.get() - waits;
            self.wakes.owed.set(waited == 0);
            self.wakes
                .slept
                .set(self.wakes.slept.get() + u64::from(waited > 0));
        }
        // `WAIT_FIRST`: polled to the completion; now its MSI.
        self.msi_ticks = 0;
        if let Some(line) = self.interrupt.filter(|_| self.wakes.wait_first.get()) {
            let taking = rt::bench::io_counter();
            self.wakes.woken(line.wait());
            self.msi_ticks = rt::bench::io_counter() - taking;
        }
        done.map_err(|e| {
            rt::println!("[nvme] block {block}: {e}");
            Status::DeviceError
        })
    }

    /// `IoUserTable.Invalidate` of `[iova, iova + length)`, counted.
    fn invalidate(&mut self, iova: u64, length: u64) -> Result<(), Status> {
        let start = rt::bench::io_counter();
        let done = self.granted.table.invalidate_range(iova, length);
        self.iommu += rt::bench::io_counter() - start;
        self.invalidations += 1;
        done.map_err(|e| {
            rt::println!("[nvme] IoUserTable.Invalidate: {e:?}");
            Status::DeviceError
        })
    }

    /// Maps the client's Frame (in FRAME_SLOT) into the IoSpace at
    /// FRAME_IPA: read-write when the device writes it (a read), read-only
    /// when it reads it. On VT-d the stage 1 is invalidated at FRAME_IOVA,
    /// which composes the new entry into the kernel's shadow; SMMUv3 walks
    /// both stages itself and caches no missing translation.
    fn map_frame(&mut self, device_reads: bool) -> Result<(), Status> {
        let rights = if device_reads {
            MapRights::READ
        } else {
            MapRights::READ_WRITE
        };
        let start = rt::bench::io_counter();
        let mapped = self
            .granted
            .space
            .map(Cap::<Frame>::from_slot(FRAME_SLOT), FRAME_IPA, rights);
        self.iommu += rt::bench::io_counter() - start;
        if let Err(e) = mapped {
            rt::println!("[nvme] IoSpace.Map of the client's Frame at {FRAME_IPA:#x}: {e:?}");
            return Err(Status::NoFrame);
        }
        if cfg!(target_arch = "x86_64") {
            self.invalidate(FRAME_IOVA, 4096)?;
        }
        Ok(())
    }

    /// Deletes the driver's copy of the client's Frame: the kernel unmaps
    /// it from the IoSpace and waits for the IOMMU's invalidation before
    /// the delete returns.
    fn drop_frame(&mut self) {
        let start = rt::bench::io_counter();
        if let Err(e) = self.cnode.delete(FRAME_SLOT) {
            rt::println!("[nvme] deleting the client's Frame: {e:?}");
        }
        self.iommu += rt::bench::io_counter() - start;
        self.frame = false;
        self.held = false;
    }

    /// The second half of a held I/O: the controller writes `block` through
    /// FRAME_IOVA again. The client may have revoked its Frame since; then
    /// the IoSpace no longer maps FRAME_IPA and the write must fault.
    fn finish_held(&mut self, block: u64) -> [u64; 4] {
        let outcome = self.transfer(block, Iova(FRAME_IOVA), false);
        // Whether the driver's copy of the Frame was still mapped: the
        // client did not revoke it.
        let still_held = self
            .granted
            .space
            .unmap(Cap::<Frame>::from_slot(FRAME_SLOT))
            .is_ok();
        rt::println!(
            "[nvme] the held I/O's second read of block {block} through IOVA {FRAME_IOVA:#x} (the client's Frame {}): the controller answered {outcome:?}",
            if still_held {
                "still mapped"
            } else {
                "revoked by the client"
            }
        );
        let mut finished = Finished {
            still_held: u64::from(still_held),
            ..Finished::default()
        };
        while let Ok(Some(record)) = self.granted.faults.pop() {
            if finished.faults == 0 {
                finished.first_fault = record.address;
                rt::println!(
                    "[nvme] IOMMU fault: badge {:#x}, address {:#x}, {}, stage {}",
                    record.badge,
                    record.address,
                    if record.write { "write" } else { "read" },
                    record.stage
                );
            }
            finished.faults += 1;
        }
        self.drop_frame();
        let [faults, first, held] = finished.to_mrs();
        [faults, first, held, 0]
    }
}

/// Copies one page between the driver's data page and the page shared
/// with the client.
#[allow(unsafe_code)]
fn copy_page(from: u64, to: u64) {
    // SAFETY: both are 4 KiB pages mapped read-write for the domain's
    // life, where no Rust object lives: the data page of `nvme_dma`
    // (`Region` handed it out once; the controller touches it only while a
    // command is out, not during this copy) and `block_page` at SHARED_VA
    // (the client reads or writes it only before its Call or after the
    // reply, and bytes have no invalid values, so a client that breaks the
    // protocol can only spoil its own block). They do not overlap.
    unsafe { core::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, BLOCK_SIZE) }
}
