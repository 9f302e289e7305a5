//! The virtio-net device as smoltcp sees it ([`Nic`], a
//! `smoltcp::phy::Device`), on `virtio-drivers`' `VirtIONetRaw` and the
//! driver's own stage 1 (`virtio::dma`).
//!
//! Receive buffers are pages reserved from the DMA pool, [`RX_BUFFERS`] of
//! them posted to the device at all times: each is mapped in stage 1
//! (device-writable) from the moment it is posted until the device returns
//! it, then unmapped before the driver reads it (`virtio::dma`'s
//! `PerRequest` sharing). A received frame is copied out of its page into
//! smoltcp's staging buffer and the page is posted again at once. A frame
//! to send is written into one reserved transmit page, mapped read-only
//! for the device while it is in the queue; the driver waits (bounded)
//! until the device returns it.

use core::sync::atomic::{AtomicU64, Ordering};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use sys::{Cap, IoFaultQueue};
use virtio::Failure;
use virtio::dma::StageOneHal;
use virtio::platform::AccessPlatform;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::pci::PciTransport;

/// Descriptors per virtqueue.
pub const QUEUE_SIZE: usize = 16;
/// Receive pages posted to the device.
pub const RX_BUFFERS: usize = 8;
/// A page of the DMA pool.
pub const PAGE: usize = 4096;
/// The largest Ethernet frame (without FCS) with a 1500-byte MTU.
const FRAME: usize = 1514;
/// `poll_transmit` polls before a transmission counts as lost.
const TX_POLLS: u64 = 50_000_000;

/// The crate's raw net driver over our Hal and transport.
pub type Net = VirtIONetRaw<StageOneHal, AccessPlatform<PciTransport>, QUEUE_SIZE>;

/// What the data path has done, for the console and the bench.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Frames received.
    pub received: u64,
    /// Frames sent.
    pub sent: u64,
    /// Counter ticks spent waiting for the device to return a sent frame.
    pub tx_wait: u64,
}

/// The device and its buffers.
pub struct Queues {
    net: Net,
    rx: [&'static mut [u8; PAGE]; RX_BUFFERS],
    /// The token each posted receive page has in the receive queue.
    tokens: [Option<u16>; RX_BUFFERS],
    tx: &'static mut [u8; PAGE],
    /// The device's fault queue, read when the device misbehaves.
    faults: Cap<IoFaultQueue>,
    /// Counts.
    pub counters: Counters,
}

/// smoltcp's device: the queues and the buffer a received frame is copied
/// into.
pub struct Nic {
    /// The device and its pages.
    pub queues: Queues,
    staging: alloc::boxed::Box<[u8; PAGE]>,
}

fn fail(args: core::fmt::Arguments<'_>) -> Failure {
    Failure(rt::__format!("{args}"))
}

impl Nic {
    /// Takes the device and its pages and posts every receive page.
    pub fn new(
        net: Net,
        rx: [&'static mut [u8; PAGE]; RX_BUFFERS],
        tx: &'static mut [u8; PAGE],
        faults: Cap<IoFaultQueue>,
    ) -> Result<Nic, Failure> {
        let mut queues = Queues {
            net,
            rx,
            tokens: [None; RX_BUFFERS],
            tx,
            faults,
            counters: Counters::default(),
        };
        for index in 0..RX_BUFFERS {
            queues.post(index)?;
        }
        Ok(Nic {
            queues,
            staging: alloc::boxed::Box::new([0; PAGE]),
        })
    }

    /// The device's fault queue.
    pub fn faults(&self) -> Cap<IoFaultQueue> {
        self.queues.faults
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.queues.net.mac_address()
    }
}

impl Queues {
    /// Gives receive page `index` to the device.
    fn post(&mut self, index: usize) -> Result<(), Failure> {
        #[allow(unsafe_code)]
        // SAFETY: the page is the driver's (reserved from the pool) and is
        // not touched again until `receive_complete` returned it.
        let token = unsafe { self.net.receive_begin(&mut self.rx[index][..]) };
        let token = token.map_err(|e| {
            fail(format_args!(
                "posting receive page {index}: {e:?} ({:?})",
                virtio::dma::take_error()
            ))
        })?;
        self.tokens[index] = Some(token);
        Ok(())
    }

    /// The next received frame, copied into `out`: its length.
    fn receive(&mut self, out: &mut [u8; PAGE]) -> Result<Option<usize>, Failure> {
        let Some(token) = self.net.poll_receive() else {
            return Ok(None);
        };
        let index = self
            .tokens
            .iter()
            .position(|t| *t == Some(token))
            .ok_or_else(|| fail(format_args!("the device returned unknown token {token}")))?;
        self.tokens[index] = None;
        #[allow(unsafe_code)]
        // SAFETY: the page posted with this token, returned by the device.
        let done = unsafe { self.net.receive_complete(token, &mut self.rx[index][..]) };
        let (header, len) = done.map_err(|e| {
            fail(format_args!(
                "receiving into page {index}: {e:?} ({:?})",
                virtio::dma::take_error()
            ))
        })?;
        let len = len.min(PAGE - header);
        out[..len].copy_from_slice(&self.rx[index][header..header + len]);
        self.post(index)?;
        self.counters.received += 1;
        Ok(Some(len))
    }

    /// Room for a `len`-byte frame in the transmit page, after the
    /// virtio-net header: the frame's start and end.
    fn frame(&mut self, len: usize) -> Result<(usize, usize), Failure> {
        let header = self
            .net
            .fill_buffer_header(&mut self.tx[..])
            .map_err(|e| fail(format_args!("virtio-net header: {e:?}")))?;
        Ok((header, header + len.min(PAGE - header)))
    }

    /// Sends the first `total` bytes of the transmit page (header and
    /// frame), waiting (bounded) until the device returned them.
    fn send(&mut self, total: usize) -> Result<(), Failure> {
        #[allow(unsafe_code)]
        // SAFETY: the transmit page is not touched again until
        // `transmit_complete` below returned it.
        let token = unsafe { self.net.transmit_begin(&self.tx[..total]) };
        let token = token.map_err(|e| {
            fail(format_args!(
                "queueing a {total}-byte buffer: {e:?} ({:?})",
                virtio::dma::take_error()
            ))
        })?;
        let start = rt::bench::counter();
        let mut polls = 0;
        while self.net.poll_transmit() != Some(token) {
            polls += 1;
            if polls == TX_POLLS {
                return Err(fail(format_args!(
                    "the device did not return a sent frame after {TX_POLLS} polls ({:?})",
                    virtio::dma::take_error()
                )));
            }
            core::hint::spin_loop();
        }
        self.counters.tx_wait += rt::bench::counter() - start;
        #[allow(unsafe_code)]
        // SAFETY: the buffer `transmit_begin` took, returned by the device.
        unsafe { self.net.transmit_complete(token, &self.tx[..total]) }
            .map_err(|e| fail(format_args!("completing a send: {e:?}")))?;
        self.counters.sent += 1;
        Ok(())
    }
}

/// IOMMU fault records read from the device's fault queue so far.
static FAULTS: AtomicU64 = AtomicU64::new(0);

/// Reads and prints the IOMMU faults the device's DMA caused since the
/// last look (at most 64 records a call); the total so far, or the
/// kernel's answer when the queue cannot be read (a restartable domain's
/// copy carries no right: its records are init's).
pub fn report_faults(queue: Cap<IoFaultQueue>) -> Result<u64, sys::Error> {
    for _ in 0..64 {
        match queue.pop() {
            Ok(Some(record)) => {
                FAULTS.fetch_add(1, Ordering::Relaxed);
                rt::println!(
                    "[vnet] IOMMU fault: address {:#x}, {}, stage {}, reason {:#x}",
                    record.address,
                    if record.write { "write" } else { "read" },
                    record.stage,
                    record.reason
                );
            }
            Ok(None) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(FAULTS.load(Ordering::Relaxed))
}

/// A frame received, borrowed from the staging buffer.
pub struct RxToken<'a>(&'a mut [u8]);

/// Room to send one frame.
pub struct TxToken<'a>(&'a mut Queues);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let (start, end) = match self.0.frame(len) {
            Ok(frame) => frame,
            Err(why) => {
                // Never with a page; the frame is built in scratch so
                // smoltcp's state moves on, and dropped as a lost frame.
                rt::println!("[vnet] sending a frame: {}", why.0);
                return f(&mut [0u8; FRAME][..len.min(FRAME)]);
            }
        };
        let result = f(&mut self.0.tx[start..end]);
        if let Err(why) = self.0.send(end) {
            rt::println!("[vnet] sending a frame: {}", why.0);
            if let Err(e) = report_faults(self.0.faults) {
                rt::println!("[vnet] reading the fault queue: {e:?}");
            }
        }
        result
    }
}

impl Device for Nic {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        match self.queues.receive(&mut self.staging) {
            Ok(Some(len)) => Some((RxToken(&mut self.staging[..len]), TxToken(&mut self.queues))),
            Ok(None) => None,
            Err(why) => {
                rt::println!("[vnet] receiving: {}", why.0);
                if let Err(e) = report_faults(self.queues.faults) {
                    rt::println!("[vnet] reading the fault queue: {e:?}");
                }
                None
            }
        }
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.queues))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME;
        caps.max_burst_size = Some(1);
        caps
    }
}
