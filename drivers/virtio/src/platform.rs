//! [`AccessPlatform`]: a transport wrapper that accepts
//! `VIRTIO_F_ACCESS_PLATFORM` (feature bit 33, virtio 1.2 section 6).
//!
//! `virtio-drivers` 0.13 negotiates, for each device, the intersection of
//! what the device offers and a fixed list in that device's driver
//! (`VirtIOBlk`: RO, FLUSH, INDIRECT_DESC, EVENT_IDX, VERSION_1); no list
//! holds ACCESS_PLATFORM. A device offering it (QEMU with
//! `iommu_platform=on`) requires it: QEMU refuses `FEATURES_OK` when the
//! driver leaves it out (`virtio_validate_features`), and only with it
//! does the device's DMA go through the IOMMU. The crate's feature
//! negotiation (`Transport::begin_init`) goes through the transport's
//! `read_device_features` / `write_driver_features`, so this wrapper adds
//! the bit to what the driver writes when the device offered it, and
//! checks, as the specification asks, that the device kept `FEATURES_OK`.
//!
//! Accepting it is what the driver means: every address it gives the
//! device is an IOVA of its own stage-1 table (`crate::dma`), which the
//! platform (the IOMMU) translates.

use core::sync::atomic::{AtomicU64, Ordering};

use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{PhysAddr, Result};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// `VIRTIO_F_ACCESS_PLATFORM`.
pub const ACCESS_PLATFORM: u64 = 1 << 33;

/// What the last feature negotiation wrote (bit 63 is never a feature
/// the crate accepts: it marks "negotiated"), and whether the device kept
/// `FEATURES_OK` (1) or not (2); 0 before any. Kept here because the
/// crate's device drivers own their transport and do not hand it back.
static WRITTEN: AtomicU64 = AtomicU64::new(0);
static KEPT: AtomicU64 = AtomicU64::new(0);
const NEGOTIATED: u64 = 1 << 63;
/// Counter ticks spent in `notify` (the doorbell write) so far.
static DOORBELL: AtomicU64 = AtomicU64::new(0);

/// Counter ticks (`rt::bench::io_counter`) spent ringing doorbells so far.
pub fn doorbell_ticks() -> u64 {
    DOORBELL.load(Ordering::Relaxed)
}

/// The result of the last feature negotiation through an
/// [`AccessPlatform`]: the features the driver wrote, and whether the
/// device accepted them (kept `FEATURES_OK`). `None` before any.
pub fn last_negotiation() -> Option<(u64, bool)> {
    let written = WRITTEN.load(Ordering::Relaxed);
    let kept = KEPT.load(Ordering::Relaxed);
    (written & NEGOTIATED != 0 && kept != 0).then_some((written & !NEGOTIATED, kept == 1))
}

/// A transport whose driver accepts `VIRTIO_F_ACCESS_PLATFORM`.
#[derive(Debug)]
pub struct AccessPlatform<T> {
    inner: T,
    offered: u64,
    /// Whether the device kept `FEATURES_OK` when the driver set it.
    features_accepted: Option<bool>,
}

impl<T: Transport> AccessPlatform<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        AccessPlatform {
            inner,
            offered: 0,
            features_accepted: None,
        }
    }

    /// Whether the device offered `VIRTIO_F_ACCESS_PLATFORM` (and so the
    /// driver accepted it).
    pub fn access_platform(&self) -> bool {
        self.offered & ACCESS_PLATFORM != 0
    }

    /// Whether the device accepted the features the driver wrote (`None`
    /// before feature negotiation).
    pub fn features_accepted(&self) -> Option<bool> {
        self.features_accepted
    }
}

impl<T: Transport> Transport for AccessPlatform<T> {
    fn device_type(&self) -> DeviceType {
        self.inner.device_type()
    }

    fn read_device_features(&mut self) -> u64 {
        self.offered = self.inner.read_device_features();
        self.offered
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        let features = driver_features | (self.offered & ACCESS_PLATFORM);
        WRITTEN.store(features | NEGOTIATED, Ordering::Relaxed);
        KEPT.store(0, Ordering::Relaxed);
        self.features_accepted = None;
        self.inner.write_driver_features(features);
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.inner.max_queue_size(queue)
    }

    fn notify(&mut self, queue: u16) {
        // A `Batched` pool's maps become the IOMMU's before the device
        // looks (a failure is kept for `dma::take_error`; the device's
        // access then faults).
        let _ = crate::dma::flush();
        let start = rt::bench::io_counter();
        self.inner.notify(queue);
        DOORBELL.fetch_add(rt::bench::io_counter() - start, Ordering::Relaxed);
    }

    fn get_status(&self) -> DeviceStatus {
        self.inner.get_status()
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.inner.set_status(status);
        if status.contains(DeviceStatus::FEATURES_OK) && self.features_accepted.is_none() {
            let kept = self.inner.get_status().contains(DeviceStatus::FEATURES_OK);
            self.features_accepted = Some(kept);
            KEPT.store(if kept { 1 } else { 2 }, Ordering::Relaxed);
        }
    }

    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.inner.set_guest_page_size(guest_page_size)
    }

    fn requires_legacy_layout(&self) -> bool {
        self.inner.requires_legacy_layout()
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        self.inner
            .queue_set(queue, size, descriptors, driver_area, device_area)
    }

    fn queue_unset(&mut self, queue: u16) {
        self.inner.queue_unset(queue)
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.inner.queue_used(queue)
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.inner.ack_interrupt()
    }

    fn read_config_generation(&self) -> u32 {
        self.inner.read_config_generation()
    }

    fn read_config_space<V: FromBytes + IntoBytes>(&self, offset: usize) -> Result<V> {
        self.inner.read_config_space(offset)
    }

    fn write_config_space<V: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: V,
    ) -> Result<()> {
        self.inner.write_config_space(offset, value)
    }
}
