//! `vnet`: a virtio-net driver and TCP/IP stack as one protection domain
//! (`images/net.toml`).
//!
//! It starts with no IOMMU capability and asks init (`sys::resources`) for
//! the virtio-net function at [`DEVICE`], an IoSpace that maps its table
//! frames read-only and its DMA pool read-write, and a fault queue. It
//! builds its own stage-1 table in the table frames (`virtio::dma`),
//! attaches the device nested under the IoSpace, has init map the BARs the
//! configuration space names (`virtio::pci`) and drives the device with
//! `virtio-drivers`' `VirtIONetRaw` in polling mode, accepting
//! `VIRTIO_F_ACCESS_PLATFORM` (`virtio::platform`). Every address the
//! device gets is an IOVA of the driver's stage 1, mapped only while the
//! device holds that buffer (`nic`).
//!
//! On top runs `smoltcp` (static address 10.0.2.15/24, gateway 10.0.2.2:
//! QEMU's user networking) with an HTTP status page on port 80 and an echo
//! service on port 7 (`services`).
//!
//! Init restarts the driver when it fails and its image sets `restarts`
//! (`images/net-restart.toml`). For that test its capability table may ask
//! it to inject `crash-mid-io` into its first run (`crash-every-run`: into
//! every run): it faults on the first whole HTTP request of the run, after
//! receiving it and before answering ([`crash`]). The status page says
//! which run serves it (the table's `start`).
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

mod nic;
mod services;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};
use sys::{Cap, Endpoint, Slot};
use virtio::Failure;
use virtio::dma::Setup;
use virtio::platform::{ACCESS_PLATFORM, AccessPlatform};

use crate::nic::{Net, Nic, PAGE, RX_BUFFERS};
use crate::services::{ECHO_PORT, HTTP_PORT, Services};

rt::entry!(main);

/// The virtio-net function the image grants (on request).
const DEVICE: (u8, u8, u8) = (0, 7, 0);
/// The badge the driver asks for on its device capability.
const BADGE: u64 = 0x4E;
/// The IoSpace size it asks for (the grant's).
const SPACE_SIZE: u64 = 2 << 20;
/// The image's `vnet_tables` (eight table frames): here and in the IoSpace.
const TABLES_VA: u64 = 0x5000_0000;
const TABLES_IPA: u64 = 0x4000;
const TABLE_FRAMES: usize = 8;
/// The image's `vnet_dma` (the Hal's pool, 32 pages): here and in the
/// IoSpace.
const DMA_VA: u64 = 0x4000_0000;
const DMA_IPA: u64 = 0x10_0000;
const DMA_PAGES: usize = 32;
/// The IOVAs the pool's pages get in stage 1: not their IPAs, so a device
/// handed an IPA would fault.
const POOL_IOVA: u64 = 0x1000_0000;
/// A slot of the driver's own (`sys::names::DOMAIN_OWN_SLOTS`).
const USER_TABLE_SLOT: Slot = Slot::new(100);
/// QEMU user networking's guest address, prefix and gateway.
const ADDRESS: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
const PREFIX: u8 = 24;
const GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);

fn fail(args: core::fmt::Arguments<'_>) -> Failure {
    Failure(rt::__format!("{args}"))
}

fn main(startup: &rt::Startup) -> i32 {
    let Some((init, table)) = startup
        .caps()
        .and_then(|table| Some((table.lookup::<Endpoint>("init")?, table)))
    else {
        rt::println!("[vnet] no `init` endpoint in my capability table: run me in images/net.toml");
        return 1;
    };
    let crashes = match table.inject {
        sys::names::INJECT_CRASH_EVERY_RUN => true,
        sys::names::INJECT_CRASH_MID_IO => table.start == 0,
        _ => false,
    };
    rt::println!(
        "[vnet] run {} (init started it {} time(s) before){}; started with no IOMMU capability; asking init for the virtio-net at 00:07.0",
        table.start + 1,
        table.start,
        if crashes {
            "; this run crashes on its first HTTP request, before answering"
        } else {
            ""
        }
    );
    let run = Run {
        number: table.start + 1,
        crashes,
    };
    let nic = match start(init) {
        Ok(nic) => nic,
        Err(why) => {
            rt::println!("[vnet] cannot drive the network device: {}", why.0);
            return 1;
        }
    };
    serve(init, nic, run)
}

/// Which run of the driver this is, and whether it crashes on purpose.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// 1 for the first run, 2 after init's first restart, ...
    pub number: u64,
    /// The run faults on its first whole HTTP request (injected
    /// `crash-mid-io`).
    pub crashes: bool,
}

/// The injected `crash-mid-io`: a load from the guard page above the
/// stack, with `what` received and not answered.
pub fn crash(what: &str) -> ! {
    virtio::crash("vnet", format_args!("{what} received and not answered"))
}

/// Asks init for everything, builds the stage 1 and starts the device.
fn start(init: Cap<Endpoint>) -> Result<Nic, Failure> {
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
    rt::println!(
        "[vnet] init gave the device (slot {}), a 2 MiB IoSpace (slot {}) and a fault queue; its own stage-1 table is bound (IoUserTable in slot {}) and the device attached nested under the IoSpace",
        device.slot(),
        space.slot(),
        USER_TABLE_SLOT.index()
    );
    let function = virtio::pci::open(init, DEVICE)?;
    let net = Net::new(AccessPlatform::new(function.transport)).map_err(|e| {
        let why = virtio::dma::take_error();
        fail(format_args!("VirtIONetRaw::new: {e:?} ({why:?})"))
    })?;
    match virtio::platform::last_negotiation() {
        Some((features, true)) if features & ACCESS_PLATFORM != 0 => {}
        other => {
            return Err(fail(format_args!(
                "feature negotiation (features written, device kept FEATURES_OK): {other:x?}; the driver needs VIRTIO_F_ACCESS_PLATFORM (QEMU: iommu_platform=on)"
            )));
        }
    }
    let mut rx = [0u64; RX_BUFFERS];
    for page in &mut rx {
        *page = virtio::dma::reserve(1)?;
    }
    let tx = virtio::dma::reserve(1)?;
    let nic = Nic::new(net, rx.map(page), page(tx), faults)?;
    let mac = nic.mac();
    rt::println!(
        "[vnet] virtio-net ready: MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}; the device kept FEATURES_OK with VIRTIO_F_ACCESS_PLATFORM; {RX_BUFFERS} receive pages posted, each mapped in stage 1 only while the device holds it",
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5]
    );
    Ok(nic)
}

/// A reserved pool page.
#[allow(unsafe_code)]
fn page(va: u64) -> &'static mut [u8; PAGE] {
    // SAFETY: `virtio::dma::reserve` handed this page of the pool (mapped
    // read-write in this domain for its life) to the driver alone, once;
    // the device reaches it only while a request shares it.
    unsafe { &mut *(va as *mut [u8; PAGE]) }
}

/// Counter ticks per microsecond: aarch64's generic timer says
/// (`CNTFRQ_EL0`); x86_64's TSC under QEMU runs near the host's, taken as
/// 1 GHz (smoltcp's timers only need a clock that moves forward).
fn ticks_per_micro() -> u64 {
    #[cfg(target_arch = "aarch64")]
    {
        let frequency: u64;
        #[allow(unsafe_code)]
        // SAFETY: reading CNTFRQ_EL0 has no side effect; EL0 may read it
        // while the kernel lets it read the virtual counter.
        unsafe {
            core::arch::asm!("mrs {}, cntfrq_el0", out(reg) frequency, options(nomem, nostack))
        };
        (frequency / 1_000_000).max(1)
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        1000
    }
}

/// The driver's main loop: polls the device and the stack for ever.
fn serve(init: Cap<Endpoint>, mut nic: Nic, run: Run) -> i32 {
    let per_micro = ticks_per_micro();
    let start = rt::bench::counter();
    let now = || Instant::from_micros(((rt::bench::counter() - start) / per_micro) as i64);
    let mac = EthernetAddress(nic.mac());
    let mut iface = Interface::new(Config::new(HardwareAddress::Ethernet(mac)), &mut nic, now());
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(ADDRESS.into(), PREFIX));
    });
    if let Err(e) = iface.routes_mut().add_default_ipv4_route(GATEWAY) {
        rt::println!("[vnet] adding the default route: {e:?}");
    }
    let mut sockets = SocketSet::new(alloc::vec::Vec::new());
    let mut services = Services::new(&mut sockets, init, nic.faults(), run);
    services.serve(&mut sockets);
    rt::println!(
        "[vnet] serving HTTP on {ADDRESS}:{HTTP_PORT} and TCP echo on {ADDRESS}:{ECHO_PORT}"
    );
    let mut bench = Bench::default();
    loop {
        let start = rt::bench::counter();
        let before = nic.queues.counters;
        iface.poll(now(), &mut nic, &mut sockets);
        let served = services.serve(&mut sockets);
        if served {
            iface.poll(now(), &mut nic, &mut sockets);
        }
        let after = nic.queues.counters;
        let moved = after.received != before.received || after.sent != before.sent;
        if served || moved || services.finished.is_some() {
            let work =
                (rt::bench::counter() - start).saturating_sub(after.tx_wait - before.tx_wait);
            bench.add(work, &services);
        }
        core::hint::spin_loop();
    }
}

/// The `net-echo-1500` benchmark: guest instructions per 1,500-byte TCP
/// echo round trip, as the host's bench client drives it (`cargo xtask
/// bench`: [`BENCH_ROUNDS`] round trips on one connection, each sending
/// 1,500 bytes and waiting for all of them back).
///
/// What is counted: every pass of the main loop that did something (the
/// device gave a frame, a frame was sent, or a socket moved data), whole:
/// virtio-net receive and transmit with their stage-1 map, unmap and
/// invalidation, smoltcp's processing, the echo copy; less the time spent
/// polling for the device to return a sent frame. Passes that found
/// nothing (waiting for the host) are left out. A round trip is the work
/// from the end of the previous one (so the ACKs of the previous echo
/// count) to the pass in which the connection's echoed bytes reach the
/// next multiple of 1,500. The least of the rounds after the first is
/// printed when the connection ends.
#[derive(Default)]
struct Bench {
    /// Work since the last round ended.
    pending: u64,
    /// Each round's work on the current connection.
    rounds: alloc::vec::Vec<u64>,
}

/// Round trips the host's bench client makes.
const BENCH_ROUNDS: usize = 16;

impl Bench {
    fn add(&mut self, work: u64, services: &Services) {
        self.pending += work;
        if services.round_done {
            self.rounds.push(self.pending);
            self.pending = 0;
        }
        if let Some(total) = services.finished {
            if total == services::ROUND * BENCH_ROUNDS as u64 && self.rounds.len() == BENCH_ROUNDS {
                let least = self.rounds[1..].iter().min().copied().unwrap_or(0);
                rt::println!("bench net-echo-1500 instructions={least}");
                rt::println!("[vnet] each round trip's instructions: {:?}", self.rounds);
            }
            self.rounds.clear();
            self.pending = 0;
        }
    }
}
