//! The controller registers in BAR 0 (NVMe base spec 2.0, 3.1.3): their
//! offsets and the fields the driver reads or writes, each decoded or
//! encoded in one place.

use core::fmt;

/// Controller Capabilities (CAP, 64-bit, read-only).
pub const CAP: usize = 0x00;
/// Version (VS).
pub const VS: usize = 0x08;
/// Controller Configuration (CC).
pub const CC: usize = 0x14;
/// Controller Status (CSTS, read-only).
pub const CSTS: usize = 0x1c;
/// Admin Queue Attributes (AQA): the admin queues' sizes.
pub const AQA: usize = 0x24;
/// Admin Submission Queue Base Address (ASQ, 64-bit).
pub const ASQ: usize = 0x28;
/// Admin Completion Queue Base Address (ACQ, 64-bit).
pub const ACQ: usize = 0x30;
/// The first doorbell (SQ 0 tail); the others follow every
/// [`Capabilities::doorbell_stride`] bytes (base spec 3.1.3.23-24).
pub const DOORBELLS: usize = 0x1000;

/// CC.EN: enable.
pub const CC_ENABLE: u32 = 1 << 0;
/// CSTS.RDY: the controller is ready to process commands.
pub const CSTS_READY: u32 = 1 << 0;
/// CSTS.CFS: the controller has had a fatal error.
pub const CSTS_FATAL: u32 = 1 << 1;

/// The byte offset of queue `queue`'s submission tail doorbell
/// (`completion == false`) or completion head doorbell: doorbell number
/// `2 * queue + completion`, each `stride` bytes apart.
pub fn doorbell(queue: u16, completion: bool, stride: usize) -> usize {
    DOORBELLS + (2 * queue as usize + completion as usize) * stride
}

/// CC as the driver writes it to enable the controller (3.1.3.5): EN,
/// CSS = 000b (NVM command set), MPS = 0 (4 KiB pages), AMS = 000b (round
/// robin), SHN = 00b, IOSQES = 6 (64-byte submission entries), IOCQES = 4
/// (16-byte completion entries).
pub fn controller_configuration_enabled() -> u32 {
    CC_ENABLE | 6 << 16 | 4 << 20
}

/// AQA for admin queues of `depth` entries each (3.1.3.8: ASQS bits 11:0
/// and ACQS bits 27:16, both 0-based).
pub fn admin_queue_attributes(depth: u16) -> u32 {
    let size = (depth - 1) as u32 & 0xfff;
    size | size << 16
}

/// CAP decoded (3.1.3.1): what the driver must respect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The raw register.
    pub raw: u64,
}

impl Capabilities {
    /// MQES + 1: the most entries an I/O queue may have (bits 15:0 hold
    /// it 0-based).
    pub fn max_queue_entries(self) -> u32 {
        (self.raw & 0xffff) as u32 + 1
    }

    /// CQR: queues must be physically (here: IOVA-) contiguous.
    pub fn contiguous_queues_required(self) -> bool {
        self.raw & 1 << 16 != 0
    }

    /// TO (bits 31:24) in milliseconds: the worst-case time to wait for
    /// CSTS.RDY to change, in 500 ms units.
    pub fn ready_timeout_milliseconds(self) -> u32 {
        ((self.raw >> 24) & 0xff) as u32 * 500
    }

    /// The doorbell stride in bytes: 4 << DSTRD (bits 35:32).
    pub fn doorbell_stride(self) -> usize {
        4 << ((self.raw >> 32) & 0xf)
    }

    /// CSS bit 37: the NVM command set is supported.
    pub fn nvm_command_set(self) -> bool {
        self.raw & 1 << 37 != 0
    }

    /// MPSMIN (bits 51:48): the smallest memory page size is
    /// 2 ^ (12 + MPSMIN).
    pub fn min_page_shift(self) -> u32 {
        12 + ((self.raw >> 48) & 0xf) as u32
    }

    /// MPSMAX (bits 55:52): the largest memory page size is
    /// 2 ^ (12 + MPSMAX).
    pub fn max_page_shift(self) -> u32 {
        12 + ((self.raw >> 52) & 0xf) as u32
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CAP {:#018x}: MQES+1={} CQR={} TO={} ms DSTRD stride={} NVM={} MPS 2^{}..2^{}",
            self.raw,
            self.max_queue_entries(),
            self.contiguous_queues_required() as u8,
            self.ready_timeout_milliseconds(),
            self.doorbell_stride(),
            self.nvm_command_set() as u8,
            self.min_page_shift(),
            self.max_page_shift(),
        )
    }
}

/// VS decoded (3.1.3.2): major.minor.tertiary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    /// The raw register.
    pub raw: u32,
}

impl Version {
    /// MJR (bits 31:16).
    pub fn major(self) -> u16 {
        (self.raw >> 16) as u16
    }

    /// MNR (bits 15:8).
    pub fn minor(self) -> u8 {
        (self.raw >> 8) as u8
    }

    /// TER (bits 7:0).
    pub fn tertiary(self) -> u8 {
        self.raw as u8
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major(), self.minor(), self.tertiary())
    }
}
