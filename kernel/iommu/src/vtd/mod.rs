//! Intel VT-d: DMAR parsing, the register block, translation structures,
//! queued invalidation, fault recording, and the boot path that blocks all DMA.
//!
//! Boot usage (the kernel):
//! 1. parse the ACPI DMAR table with [`dmar::Dmar::parse`];
//! 2. for each DRHD, map its register page and wrap it in the kernel's
//!    [`Mmio`] implementation, then [`VtdUnit::new`];
//! 3. [`VtdUnit::block_all_dma`]: installs an all-not-present root table,
//!    invalidates every cache, enables translation. Every DMA is then blocked
//!    and recorded as a fault (reason 0x1 legacy, 0x39 scalable);
//! 4. [`VtdUnit::read_faults`] returns and clears the recorded faults.

pub mod device;
pub mod dmar;
pub mod intremap;
pub mod prq;
pub mod qi;
pub mod regs;
pub mod shadow;
pub mod tables;

use crate::list::RecordList;
use crate::{FrameAllocator, Mmio, PhysAddr, PhysMem, PollLimit};
use core::fmt;
use qi::{ContextScope, Descriptor, InvalidationQueue, IotlbScope, PasidCacheScope};
use regs::{
    Capability, ExtendedCapability, FaultRecord, FaultStatus, GlobalBits, RootTableMode, Version,
    ccmd, fectl, iotlb_reg, offset,
};

/// Errors of the VT-d driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VtdError {
    /// A bounded poll expired: the named register bit never reached the expected value.
    Timeout {
        /// Register polled.
        register: &'static str,
        /// Bit or field that did not change.
        bit: &'static str,
    },
    /// The frame allocator ran out while allocating the named structure.
    OutOfMemory {
        /// What was being allocated.
        what: &'static str,
    },
    /// The unit lacks a capability the request needs.
    Unsupported {
        /// The missing capability.
        what: &'static str,
    },
    /// The hardware reported an invalidation queue error (FSTS.IQE/ICE/ITE).
    InvalidationQueueError {
        /// The error bits that were set.
        status: FaultStatus,
    },
    /// A parameter was out of range.
    InvalidParameter {
        /// Which parameter and why.
        what: &'static str,
    },
}

impl ktext::Text for VtdError {
    fn write(&self, out: &mut dyn ktext::Sink) {
        match self {
            Self::Timeout { register, bit } => {
                ktext::put!(out, "VT-d: timed out waiting for {} {}", register, bit)
            }
            Self::OutOfMemory { what } => ktext::put!(out, "VT-d: out of frames for {}", what),
            Self::Unsupported { what } => ktext::put!(out, "VT-d: unit does not support {}", what),
            Self::InvalidationQueueError { status } => ktext::put!(
                out,
                "VT-d: invalidation queue error, FSTS bits {:#x}",
                status.bits()
            ),
            Self::InvalidParameter { what } => {
                ktext::put!(out, "VT-d: invalid parameter: {}", what)
            }
        }
    }
}

impl fmt::Display for VtdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ktext::display(self, f)
    }
}

/// Bytes of a unit's register block: the kernel maps this much from the
/// DRHD's register base, so the driver never touches a register beyond it,
/// whatever CAP and ECAP claim (a CAP.FRO or CAP.NFR that puts fault
/// recording registers past it leaves those registers unread).
pub const REGISTER_BLOCK_BYTES: usize = 4096;

/// Up to 16 decoded fault records.
pub type FaultRecords = RecordList<FaultRecord, 16>;

/// One DMA remapping hardware unit (one DRHD).
pub struct VtdUnit<M: Mmio> {
    mmio: M,
    version: Version,
    capability: Capability,
    extended: ExtendedCapability,
    poll_limit: PollLimit,
    root_table: Option<(PhysAddr, RootTableMode)>,
    queue: Option<InvalidationQueue>,
    page_requests: Option<prq::PageRequestQueue>,
}

impl<M: Mmio> VtdUnit<M> {
    /// Wraps a unit's register block and reads VER, CAP and ECAP. Touches no other register.
    pub fn new(mmio: M) -> Self {
        let version = Version(mmio.read32(offset::VER));
        let capability = Capability(mmio.read64(offset::CAP));
        let extended = ExtendedCapability(mmio.read64(offset::ECAP));
        Self {
            mmio,
            version,
            capability,
            extended,
            poll_limit: PollLimit::DEFAULT,
            root_table: None,
            queue: None,
            page_requests: None,
        }
    }

    /// Replaces the bound used for every hardware poll.
    pub fn with_poll_limit(mut self, limit: PollLimit) -> Self {
        self.poll_limit = limit;
        self
    }

    /// The register block.
    pub fn mmio(&self) -> &M {
        &self.mmio
    }
    /// VER.
    pub fn version(&self) -> Version {
        self.version
    }
    /// CAP.
    pub fn capability(&self) -> Capability {
        self.capability
    }
    /// ECAP.
    pub fn extended_capability(&self) -> ExtendedCapability {
        self.extended
    }
    /// Vendor-neutral capabilities (for IommuControl `Identify`).
    pub fn identity(&self) -> crate::identity::Identity {
        crate::identity::Identity::vtd(self.capability, self.extended)
    }
    /// Page requests, dirty tracking and PASID width.
    pub fn extensions(&self) -> crate::identity::Extensions {
        crate::identity::Extensions::vtd(self.extended)
    }
    /// The installed root table and its mode, if any.
    pub fn root_table(&self) -> Option<(PhysAddr, RootTableMode)> {
        self.root_table
    }
    /// The invalidation queue, once enabled (exposes the command counters).
    pub fn queue(&self) -> Option<&InvalidationQueue> {
        self.queue.as_ref()
    }

    /// GSTS.
    pub fn global_status(&self) -> GlobalBits {
        GlobalBits::from_bits_retain(self.mmio.read32(offset::GSTS))
    }

    /// Sets (`enable`) or clears one GCMD bit and waits for GSTS to follow
    /// (VT-d 11.4.4.1: write back the persistent status bits with only the
    /// one bit changed). One-shot commands (SRTP, WBF, ...) wait for their
    /// status bit to be set.
    pub fn global_command(&self, command: GlobalBits, enable: bool) -> Result<(), VtdError> {
        let current = self.global_status() & GlobalBits::PERSISTENT;
        let value = if enable {
            current | command
        } else {
            current - command
        };
        self.mmio.write32(offset::GCMD, value.bits());
        let done = self
            .poll_limit
            .wait(|| self.global_status().contains(command) == enable);
        if done {
            Ok(())
        } else {
            Err(VtdError::Timeout {
                register: "GSTS",
                bit: command.status_name(),
            })
        }
    }

    /// Enables queued invalidation (VT-d 6.5.2): allocates the queue, IQT=0,
    /// IQA, GCMD.QIE. A queue already enabled by firmware is disabled first.
    pub fn enable_queued_invalidation(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        wide: bool,
    ) -> Result<(), VtdError> {
        if !self.extended.qi() {
            return Err(VtdError::Unsupported {
                what: "queued invalidation (ECAP.QI)",
            });
        }
        if self
            .global_status()
            .contains(GlobalBits::QUEUED_INVALIDATION)
        {
            self.global_command(GlobalBits::QUEUED_INVALIDATION, false)?;
        }
        let mut queue = match self.queue.take() {
            Some(queue) => queue,
            None => InvalidationQueue::new(mem, alloc, wide)?,
        };
        queue.reset();
        self.mmio.write64(offset::IQT, 0);
        self.mmio.write64(offset::IQA, queue.iqa_value());
        self.queue = Some(queue);
        self.global_command(GlobalBits::QUEUED_INVALIDATION, true)
    }

    /// Submits `descriptors` as one batch and waits (bounded) for completion.
    pub fn submit(
        &mut self,
        mem: &impl PhysMem,
        descriptors: impl IntoIterator<Item = Descriptor>,
    ) -> Result<(), VtdError> {
        let limit = self.poll_limit;
        let queue = self.queue.as_mut().ok_or(VtdError::Unsupported {
            what: "queued invalidation not enabled",
        })?;
        queue.submit_and_wait(&self.mmio, mem, descriptors, limit)
    }

    /// Writes RTADDR (address + TTM) and issues SRTP (VT-d 11.4.5, 11.4.4.1).
    /// The caller must invalidate the context cache and IOTLB afterwards.
    pub fn set_root_table(&mut self, root: PhysAddr, mode: RootTableMode) -> Result<(), VtdError> {
        if root & 0xfff != 0 {
            return Err(VtdError::InvalidParameter {
                what: "root table address not 4 KiB aligned",
            });
        }
        if mode == RootTableMode::Scalable && !self.extended.smts() {
            return Err(VtdError::Unsupported {
                what: "scalable mode (ECAP.SMTS)",
            });
        }
        self.mmio.write64(offset::RTADDR, root | mode.ttm() << 10);
        self.global_command(GlobalBits::ROOT_TABLE_POINTER, true)?;
        self.root_table = Some((root, mode));
        Ok(())
    }

    /// Invalidates the context cache, PASID cache (scalable mode) and IOTLB
    /// globally, through the queue when enabled, else through CCMD and the
    /// IOTLB register (legacy mode only).
    pub fn invalidate_all(&mut self, mem: &impl PhysMem) -> Result<(), VtdError> {
        let scalable = matches!(self.root_table, Some((_, RootTableMode::Scalable)));
        let drain = self.capability.drd() || self.capability.dwd();
        if self.queue.is_some() {
            let context = Descriptor::context_cache(ContextScope::Global);
            let pasid = Descriptor::pasid_cache(PasidCacheScope::Global);
            let iotlb = Descriptor::iotlb(IotlbScope::Global, drain);
            if scalable {
                self.submit(mem, [context, pasid, iotlb])
            } else {
                self.submit(mem, [context, iotlb])
            }
        } else if scalable {
            Err(VtdError::Unsupported {
                what: "register-based invalidation in scalable mode",
            })
        } else {
            self.register_invalidate(
                offset::CCMD,
                ccmd::ICC | ccmd::GLOBAL,
                ccmd::ICC,
                "CCMD",
                "ICC",
            )?;
            let iotlb = self.extended.iotlb_register_offset() + 8;
            let mut command = iotlb_reg::IVT | iotlb_reg::GLOBAL;
            if self.capability.drd() {
                command |= iotlb_reg::DRAIN_READS;
            }
            if self.capability.dwd() {
                command |= iotlb_reg::DRAIN_WRITES;
            }
            self.register_invalidate(iotlb, command, iotlb_reg::IVT, "IOTLB", "IVT")
        }
    }

    fn register_invalidate(
        &self,
        register: usize,
        command: u64,
        busy: u64,
        name: &'static str,
        bit: &'static str,
    ) -> Result<(), VtdError> {
        self.mmio.write64(register, command);
        if self
            .poll_limit
            .wait(|| self.mmio.read64(register) & busy == 0)
        {
            Ok(())
        } else {
            Err(VtdError::Timeout {
                register: name,
                bit,
            })
        }
    }

    /// Sets GCMD.TE and waits for GSTS.TES.
    pub fn enable_translation(&self) -> Result<(), VtdError> {
        self.global_command(GlobalBits::TRANSLATION_ENABLE, true)
    }

    /// Clears GCMD.TE and waits for GSTS.TES to clear (DMA then bypasses the unit!).
    pub fn disable_translation(&self) -> Result<(), VtdError> {
        self.global_command(GlobalBits::TRANSLATION_ENABLE, false)
    }

    /// Blocks every DMA through this unit: enables queued invalidation (when
    /// ECAP.QI), installs a zeroed (all-not-present) root table in `mode`,
    /// invalidates all caches, discards stale fault records and enables
    /// translation. If firmware left translation on it stays on throughout,
    /// so there is no window of untranslated DMA.
    ///
    /// Needs 3 frames from `alloc` (root table, queue, wait status). Returns
    /// the root table's address. Afterwards each DMA is recorded as a fault:
    /// reason 0x01 (legacy) or 0x39 (scalable) "root entry not present".
    pub fn block_all_dma(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        mode: RootTableMode,
    ) -> Result<PhysAddr, VtdError> {
        if mode == RootTableMode::Scalable && !self.extended.smts() {
            return Err(VtdError::Unsupported {
                what: "scalable mode (ECAP.SMTS)",
            });
        }
        if self.extended.qi() {
            self.enable_queued_invalidation(mem, alloc, mode == RootTableMode::Scalable)?;
        } else if mode == RootTableMode::Scalable {
            return Err(VtdError::Unsupported {
                what: "queued invalidation (ECAP.QI), needed in scalable mode",
            });
        }
        let root = alloc
            .alloc_zeroed_frame()
            .ok_or(VtdError::OutOfMemory { what: "root table" })?;
        self.set_root_table(root, mode)?;
        self.invalidate_all(mem)?;
        self.clear_faults();
        self.enable_translation()?;
        Ok(root)
    }

    /// FSTS.
    pub fn fault_status(&self) -> FaultStatus {
        FaultStatus::from_bits_retain(self.mmio.read32(offset::FSTS))
    }

    /// Reads every fault recording register that holds a fault (starting at
    /// FSTS.FRI, wrapping over CAP.NFR registers), clears each (F is RW1C),
    /// then clears FSTS.PFO. Overflowed faults are counted in `dropped`.
    /// Registers outside the [`REGISTER_BLOCK_BYTES`] the kernel maps are
    /// skipped.
    pub fn read_faults(&mut self) -> FaultRecords {
        let mut records = FaultRecords::new();
        let status = self.fault_status();
        let count = self.capability.nfr();
        let base = self.capability.fault_recording_offset();
        let start = status.fault_record_index() % count;
        for step in 0..count {
            let index = (start + step) % count;
            let register = base + 16 * index as usize;
            if register + 16 > REGISTER_BLOCK_BYTES {
                continue;
            }
            let high = self.mmio.read64(register + 8);
            let low = self.mmio.read64(register);
            if let Some(record) = FaultRecord::decode(index, low, high) {
                records.push(record);
                self.mmio.write32(register + 12, 1 << 31);
            }
        }
        if status.contains(FaultStatus::PFO) {
            records.dropped += 1;
            self.mmio.write32(offset::FSTS, FaultStatus::PFO.bits());
        }
        records
    }

    /// Discards every recorded fault and clears all FSTS status bits.
    pub fn clear_faults(&mut self) {
        let _ = self.read_faults();
        let status = self.fault_status().clearable();
        if !status.is_empty() {
            self.mmio.write32(offset::FSTS, status.bits());
        }
    }

    /// Turns interrupt remapping on (VT-d 5.1, 11.4.4.1): IRTA for the table
    /// of `entries` IRTEs at `table` (already filled by the caller), SIRTP,
    /// a global interrupt entry cache invalidation, compatibility format
    /// interrupts off (CFIS clear: a request that names no IRTE is
    /// dropped), then IRE. Needs ECAP.IR and queued invalidation.
    pub fn enable_interrupt_remapping(
        &mut self,
        mem: &impl PhysMem,
        table: PhysAddr,
        entries: usize,
    ) -> Result<(), VtdError> {
        if !self.extended.ir() {
            return Err(VtdError::Unsupported {
                what: "interrupt remapping (ECAP.IR)",
            });
        }
        let irta = intremap::irta_value(table, entries)?;
        self.mmio.write64(offset::IRTA, irta);
        self.global_command(GlobalBits::INTERRUPT_TABLE_POINTER, true)?;
        self.invalidate_interrupt_entries(mem, intremap::EntryCacheScope::Global)?;
        if self
            .global_status()
            .contains(GlobalBits::COMPATIBILITY_FORMAT)
        {
            self.global_command(GlobalBits::COMPATIBILITY_FORMAT, false)?;
        }
        self.global_command(GlobalBits::INTERRUPT_REMAPPING, true)
    }

    /// Drops IRTEs from the unit's interrupt entry cache after the caller
    /// changed them, and waits until the unit has done so.
    pub fn invalidate_interrupt_entries(
        &mut self,
        mem: &impl PhysMem,
        scope: intremap::EntryCacheScope,
    ) -> Result<(), VtdError> {
        self.submit(mem, [Descriptor::interrupt_entry_cache(scope)])
    }

    /// Programs the fault event MSI (FEADDR/FEUADDR/FEDATA, VT-d 11.4.7.3-5)
    /// and unmasks it (FECTL.IM=0). On x86 `address` is 0xFEEx_xxxx.
    pub fn set_fault_interrupt(&self, address: u64, data: u32) {
        self.mmio.write32(offset::FEDATA, data);
        self.mmio.write32(offset::FEADDR, address as u32);
        self.mmio.write32(offset::FEUADDR, (address >> 32) as u32);
        self.mmio.write32(offset::FECTL, 0);
    }

    /// Masks the fault event interrupt (FECTL.IM=1).
    pub fn mask_fault_interrupt(&self) {
        self.mmio.write32(offset::FECTL, fectl::IM);
    }
}
