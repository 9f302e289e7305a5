//! Arm SMMUv3: ID registers, stream table and STEs, context descriptors,
//! stage-2 tables, command and event queues, and the boot path that blocks
//! all DMA.
//!
//! # Finding: an abort STE records no event (QEMU 10.0.2 and the architecture)
//!
//! An STE with V=1 and Config=0b000 (abort) terminates every transaction
//! **silently**: the SMMUv3 specification (5.2, STE.Config) says abort
//! records no event, and QEMU implements exactly that — `decode_ste` sets
//! `cfg->aborted`, and `smmuv3_translate` handles `SMMU_TRANS_ABORT` with
//! "no event is recorded on abort" (hw/arm/smmuv3.c). An STE with **V=0**
//! instead fails configuration decoding, and QEMU records a **C_BAD_STE**
//! event (type 0x04) carrying the StreamID (`SMMU_TRANS_ERROR` ->
//! `smmuv3_record_event`). StreamIDs whose level-1 descriptor is invalid
//! (SPAN=0) raise **C_BAD_STREAMID** (0x02), also recorded.
//!
//! So [`Smmu::block_all_dma`] defaults to [`BlockPolicy::RecordFault`]:
//! every STE is V=0, and a blocked device's DMA shows up in the event queue
//! as C_BAD_STE with its StreamID. [`BlockPolicy::SilentAbort`] writes
//! abort STEs instead (no events, e.g. for a device known to retry forever).
//!
//! # Boot usage
//! ```ignore
//! let mut smmu = Smmu::new(mmio);                   // reads IDR0/1/5
//! smmu.block_all_dma(&mem, &mut frames, BlockPolicy::RecordFault, 0..256)?;
//! // ... a device DMAs ...
//! for event in smmu.drain_events(&mem).events.iter() { /* C_BAD_STE, sid */ }
//! ```

pub mod cd;
pub mod device;
pub mod pagetable;
pub mod priq;
pub mod queue;
pub mod regs;
pub mod ste;

use crate::{FrameAllocator, Mmio, PhysAddr, PhysMem, PollLimit};
use core::fmt;
use queue::{Command, CommandQueue, EventDrain, EventQueue};
use regs::{Features, Idr0, Idr1, Idr3, Idr5, cr0, gbpa, gerror, irq_ctrl, offset};
use ste::{Ste, SteError, StreamTable, StreamTableLayout};

/// Errors of the SMMUv3 driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmmuError {
    /// A bounded poll expired: the named register field never reached the expected value.
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
    /// The SMMU lacks something the request needs.
    Unsupported {
        /// What is missing.
        what: &'static str,
    },
    /// A parameter was out of range.
    InvalidParameter {
        /// Which parameter and why.
        what: &'static str,
    },
    /// An STE was refused before being written.
    InvalidSte(SteError),
    /// A StreamID beyond the stream table (or its level-2 array is absent).
    StreamIdOutOfRange {
        /// The StreamID.
        stream_id: u32,
    },
    /// The SMMU rejected a command (GERROR.CMDQ_ERR, CMDQ_CONS.ERR).
    CommandError {
        /// CMDQ_CONS.ERR: 1 CERROR_ILL, 2 CERROR_ABT, 3 CERROR_ATC_INV_SYNC.
        code: u32,
        /// Opcode of the rejected command.
        opcode: u8,
    },
    /// The driver has not set up the stream table and queues yet.
    NotInitialised,
}

impl ktext::Text for SmmuError {
    fn write(&self, out: &mut dyn ktext::Sink) {
        use ktext::put;
        match self {
            Self::Timeout { register, bit } => {
                put!(out, "SMMUv3: timed out waiting for {} {}", register, bit)
            }
            Self::OutOfMemory { what } => put!(out, "SMMUv3: out of frames for {}", what),
            Self::Unsupported { what } => put!(out, "SMMUv3: not supported: {}", what),
            Self::InvalidParameter { what } => put!(out, "SMMUv3: invalid parameter: {}", what),
            Self::InvalidSte(e) => put!(out, "SMMUv3: refused STE: {}", e),
            Self::StreamIdOutOfRange { stream_id } => put!(
                out,
                "SMMUv3: StreamID {:#x} is outside the stream table",
                *stream_id
            ),
            Self::CommandError { code, opcode } => put!(
                out,
                "SMMUv3: command {:#04x} rejected, CMDQ_CONS.ERR={} ({})",
                *opcode,
                code,
                match code {
                    1 => "CERROR_ILL",
                    2 => "CERROR_ABT",
                    3 => "CERROR_ATC_INV_SYNC",
                    _ => "unknown",
                }
            ),
            Self::NotInitialised => put!(out, "SMMUv3: stream table and queues not set up"),
        }
    }
}

impl fmt::Display for SmmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ktext::display(self, f)
    }
}

/// What [`Smmu::block_all_dma`] writes into every STE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockPolicy {
    /// V=0: DMA is refused and recorded as C_BAD_STE (the default).
    RecordFault,
    /// V=1, Config=abort: DMA is refused silently.
    SilentAbort,
}

impl BlockPolicy {
    /// The STE this policy writes.
    pub fn ste(self) -> Ste {
        match self {
            Self::RecordFault => Ste::invalid(),
            Self::SilentAbort => Ste::abort(),
        }
    }
}

/// One SMMUv3.
pub struct Smmu<M: Mmio> {
    mmio: M,
    features: Features,
    poll_limit: PollLimit,
    stream_table: Option<StreamTable>,
    command_queue: Option<CommandQueue>,
    event_queue: Option<EventQueue>,
    pri_queue: Option<priq::PriQueue>,
    block_policy: BlockPolicy,
}

impl<M: Mmio> Smmu<M> {
    /// Wraps the register block (both 64 KiB pages) and reads IDR0/1/3/5.
    pub fn new(mmio: M) -> Self {
        let features = Features {
            idr0: Idr0(mmio.read32(offset::IDR0)),
            idr1: Idr1(mmio.read32(offset::IDR1)),
            idr3: Idr3(mmio.read32(offset::IDR3)),
            idr5: Idr5(mmio.read32(offset::IDR5)),
        };
        Self {
            mmio,
            features,
            poll_limit: PollLimit::DEFAULT,
            stream_table: None,
            command_queue: None,
            event_queue: None,
            pri_queue: None,
            block_policy: BlockPolicy::RecordFault,
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
    /// The decoded ID registers.
    pub fn features(&self) -> &Features {
        &self.features
    }
    /// Vendor-neutral capabilities (for IommuControl `Identify`).
    pub fn identity(&self) -> crate::identity::Identity {
        crate::identity::Identity::smmuv3(&self.features)
    }
    /// Page requests, stall, dirty tracking and SubstreamID width.
    pub fn extensions(&self) -> crate::identity::Extensions {
        crate::identity::Extensions::smmuv3(&self.features)
    }
    /// The stream table, once set up.
    pub fn stream_table(&self) -> Option<&StreamTable> {
        self.stream_table.as_ref()
    }
    /// The command queue, once set up (exposes the command counters).
    pub fn command_queue(&self) -> Option<&CommandQueue> {
        self.command_queue.as_ref()
    }

    fn write_cr0(&self, value: u32, what: &'static str) -> Result<(), SmmuError> {
        self.mmio.write32(offset::CR0, value);
        if self
            .poll_limit
            .wait(|| self.mmio.read32(offset::CR0ACK) == value)
        {
            Ok(())
        } else {
            Err(SmmuError::Timeout {
                register: "SMMU_CR0ACK",
                bit: what,
            })
        }
    }

    /// Blocks every DMA through this SMMU and turns on fault reporting:
    ///
    /// 1. disables the SMMU if firmware left it on, sets GBPA.ABORT (so traffic
    ///    aborts rather than bypasses whenever SMMUEN=0);
    /// 2. builds a stream table (2-level with 64-STE level-2 pages when
    ///    IDR0.ST_LEVEL allows, covering min(SIDSIZE, 15) StreamID bits; else
    ///    linear, min(SIDSIZE, 6) bits) and fills the STEs of `populate`
    ///    (e.g. `0..256` for PCI bus 0) per `policy`; other StreamIDs have no
    ///    level-2 array and raise C_BAD_STREAMID;
    /// 3. enables the command queue, issues CFGI_ALL + TLBI_NSNH_ALL + CMD_SYNC;
    /// 4. enables the event queue, then SMMUEN.
    ///
    /// Needs 3 frames plus one per 64 populated StreamIDs.
    pub fn block_all_dma(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        policy: BlockPolicy,
        populate: core::ops::Range<u32>,
    ) -> Result<(), SmmuError> {
        let idr0 = self.features.idr0;
        let idr1 = self.features.idr1;
        if !idr0.aarch64_tables() {
            return Err(SmmuError::Unsupported {
                what: "AArch64 translation tables (IDR0.TTF)",
            });
        }
        if idr1.tables_preset() || idr1.queues_preset() || idr1.rel() {
            return Err(SmmuError::Unsupported {
                what: "preset tables/queues (IDR1.TABLES_PRESET/QUEUES_PRESET/REL)",
            });
        }
        // 1. Quiesce.
        if self.mmio.read32(offset::CR0) != 0 || self.mmio.read32(offset::CR0ACK) != 0 {
            self.write_cr0(0, "all bits clear (disable)")?;
        }
        self.mmio.write32(offset::GBPA, gbpa::UPDATE | gbpa::ABORT);
        if !self
            .poll_limit
            .wait(|| self.mmio.read32(offset::GBPA) & gbpa::UPDATE == 0)
        {
            return Err(SmmuError::Timeout {
                register: "SMMU_GBPA",
                bit: "UPDATE",
            });
        }
        // 2. Stream table.
        let (layout, sid_bits) = if idr0.st_level() == 1 {
            (
                StreamTableLayout::TwoLevel,
                idr1.sidsize()
                    .clamp(ste::SPLIT, ste::MAX_TWO_LEVEL_SID_BITS),
            )
        } else {
            (
                StreamTableLayout::Linear,
                idr1.sidsize().min(ste::MAX_LINEAR_SID_BITS),
            )
        };
        let table = StreamTable::new(alloc, layout, sid_bits)?;
        table.populate(mem, alloc, populate, &policy.ste())?;
        // CR1: tables and queues inner-shareable, write-back cacheable (6.3.11).
        self.mmio
            .write32(offset::CR1, 3 << 10 | 1 << 8 | 1 << 6 | 3 << 4 | 1 << 2 | 1);
        // CR2: RECINVSID (record invalid StreamIDs), PTM (6.3.12).
        self.mmio.write32(offset::CR2, 1 << 1 | 1 << 2);
        self.mmio
            .write64(offset::STRTAB_BASE, table.base_register());
        self.mmio.write32(offset::STRTAB_BASE_CFG, table.base_cfg());
        // 3. Command queue.
        let mut commands = CommandQueue::new(alloc, idr1.cmdqs())?;
        self.mmio
            .write64(offset::CMDQ_BASE, commands.base_register());
        self.mmio.write32(offset::CMDQ_PROD, 0);
        self.mmio.write32(offset::CMDQ_CONS, 0);
        commands.reset();
        self.write_cr0(cr0::CMDQEN, "CMDQEN")?;
        commands.submit(
            &self.mmio,
            mem,
            [Command::CfgiAll, Command::TlbiNsnhAll],
            self.poll_limit,
        )?;
        // 4. Event queue, then translation.
        let mut events = EventQueue::new(alloc, idr1.eventqs())?;
        self.mmio
            .write64(offset::EVENTQ_BASE, events.base_register());
        self.mmio.write32(offset::EVENTQ_PROD, 0);
        self.mmio.write32(offset::EVENTQ_CONS, 0);
        events.reset();
        self.write_cr0(cr0::CMDQEN | cr0::EVENTQEN, "EVENTQEN")?;
        self.write_cr0(cr0::CMDQEN | cr0::EVENTQEN | cr0::SMMUEN, "SMMUEN")?;
        self.stream_table = Some(table);
        self.command_queue = Some(commands);
        self.event_queue = Some(events);
        self.block_policy = policy;
        Ok(())
    }

    /// Enables the wired GERROR and event-queue interrupts (IRQ_CTRL,
    /// 6.3.16), keeping the PRI queue's as it is.
    pub fn enable_interrupts(&self) -> Result<(), SmmuError> {
        let keep = self.mmio.read32(offset::IRQ_CTRL) & irq_ctrl::PRIQ;
        let value = irq_ctrl::GERROR | irq_ctrl::EVENTQ | keep;
        self.write_irq_ctrl(value, "GERROR_IRQEN/EVENTQ_IRQEN")
    }

    /// Writes IRQ_CTRL and waits, bounded, until IRQ_CTRLACK reads the same
    /// value; `bit` names what was being enabled in the timeout error.
    fn write_irq_ctrl(&self, value: u32, bit: &'static str) -> Result<(), SmmuError> {
        self.mmio.write32(offset::IRQ_CTRL, value);
        if self
            .poll_limit
            .wait(|| self.mmio.read32(offset::IRQ_CTRLACK) == value)
        {
            Ok(())
        } else {
            Err(SmmuError::Timeout {
                register: "SMMU_IRQ_CTRLACK",
                bit,
            })
        }
    }

    /// Active global errors (GERROR xor GERRORN, 6.3.18).
    pub fn global_errors(&self) -> u32 {
        (self.mmio.read32(offset::GERROR) ^ self.mmio.read32(offset::GERRORN)) & gerror::ALL
    }

    /// Acknowledges the given active global errors by toggling GERRORN.
    pub fn acknowledge_global_errors(&self, errors: u32) {
        let gerrorn = self.mmio.read32(offset::GERRORN);
        self.mmio
            .write32(offset::GERRORN, gerrorn ^ (errors & gerror::ALL));
    }

    /// Takes every event recorded since the last drain, notes a queue
    /// overflow (EVENTQ_PROD.OVFLG, or GERROR.EVENTQ_ABT_ERR which QEMU
    /// raises on a full queue) and acknowledges the event-queue global errors.
    pub fn drain_events(&mut self, mem: &impl PhysMem) -> EventDrain {
        let mut drain = EventDrain::default();
        let Some(queue) = self.event_queue.as_mut() else {
            return drain;
        };
        queue.drain(&self.mmio, mem, &mut drain);
        let errors =
            (self.mmio.read32(offset::GERROR) ^ self.mmio.read32(offset::GERRORN)) & gerror::ALL;
        let event_errors = errors & (gerror::EVENTQ_ABT_ERR | gerror::MSI_EVENTQ_ABT_ERR);
        if event_errors != 0 {
            drain.overflowed = true;
            self.acknowledge_global_errors(event_errors);
        }
        drain.global_errors = errors;
        drain
    }

    /// Submits `commands` followed by one CMD_SYNC and waits for completion.
    pub fn submit(
        &mut self,
        mem: &impl PhysMem,
        commands: impl IntoIterator<Item = Command>,
    ) -> Result<(), SmmuError> {
        let limit = self.poll_limit;
        let queue = self
            .command_queue
            .as_mut()
            .ok_or(SmmuError::NotInitialised)?;
        queue.submit(&self.mmio, mem, commands, limit)
    }

    /// CMD_TLBI_NH_ASID of (`vmid`, `asid`) and a CMD_SYNC, waited for:
    /// [`Smmu::submit`] of that one command without the iterator or
    /// `Command::encode`'s match (the invalidation of
    /// `IoUserTable.Invalidate`).
    #[inline(always)]
    pub fn invalidate_asid(
        &mut self,
        mem: &impl PhysMem,
        vmid: u16,
        asid: u16,
    ) -> Result<(), SmmuError> {
        self.submit_one(mem, Command::tlbi_nh_asid(vmid, asid))
    }

    /// CMD_TLBI_S12_VMALL of `vmid` and a CMD_SYNC, waited for: as
    /// [`Smmu::invalidate_asid`], the invalidation of one IoSpace's stage 2
    /// (`IoSpace.Unmap`).
    #[inline(always)]
    pub fn invalidate_vmid(&mut self, mem: &impl PhysMem, vmid: u16) -> Result<(), SmmuError> {
        self.submit_one(mem, Command::TlbiS12Vmall { vmid }.encode())
    }

    /// One encoded command (`words`) and a CMD_SYNC, waited for
    /// ([`CommandQueue::submit_one`]): the body of
    /// [`Smmu::invalidate_asid`] and [`Smmu::invalidate_vmid`].
    #[inline(always)]
    fn submit_one(&mut self, mem: &impl PhysMem, words: [u64; 2]) -> Result<(), SmmuError> {
        let limit = self.poll_limit;
        let queue = self
            .command_queue
            .as_mut()
            .ok_or(SmmuError::NotInitialised)?;
        queue.submit_one(&self.mmio, mem, words, limit)
    }

    /// Replaces the STE of `stream_id` (checked by [`Ste::check`]): first
    /// back to the blocking STE with CFGI_STE + CMD_SYNC (break), then the
    /// new STE, CFGI_STE + CMD_SYNC (make). Allocates the level-2 array if needed.
    pub fn install_ste(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        stream_id: u32,
        ste: &Ste,
    ) -> Result<(), SmmuError> {
        ste.check(&self.features).map_err(SmmuError::InvalidSte)?;
        let table = self.stream_table.ok_or(SmmuError::NotInitialised)?;
        let blocking = self.block_policy.ste();
        table.populate(mem, alloc, stream_id..stream_id + 1, &blocking)?;
        table.write_ste(mem, stream_id, &blocking, &self.features)?;
        self.submit(mem, [Command::CfgiSte { stream_id }])?;
        table.write_ste(mem, stream_id, ste, &self.features)?;
        self.submit(mem, [Command::CfgiSte { stream_id }])
    }

    /// Blocks one device again (its STE back to the blocking policy), with invalidation.
    pub fn block_stream(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        stream_id: u32,
    ) -> Result<(), SmmuError> {
        let ste = self.block_policy.ste();
        self.install_ste(mem, alloc, stream_id, &ste)
    }

    /// After `stream_id` was blocked: frees its level-2 stream table when
    /// every STE in it blocks and `owned` says the caller may free it —
    /// the level-1 descriptor is cleared, then CFGI_ALL + CMD_SYNC — and
    /// returns it. On an error nothing is returned: the array may still
    /// be cached and must not be reused.
    pub fn release_stream_table(
        &mut self,
        mem: &impl PhysMem,
        stream_id: u32,
        owned: impl Fn(PhysAddr) -> bool,
    ) -> Result<Option<PhysAddr>, SmmuError> {
        let table = self.stream_table.ok_or(SmmuError::NotInitialised)?;
        let blocking = self.block_policy.ste();
        let Some(l2) = table.unlink_if_blocking(mem, stream_id, &blocking, owned) else {
            return Ok(None);
        };
        self.submit(mem, [Command::CfgiAll])?;
        Ok(Some(l2))
    }

    /// Stops all DMA through the SMMU: SMMUEN off, so every transaction
    /// takes GBPA, which [`Self::block_all_dma`] set to abort. The queues
    /// stay on. For when invalidations cannot be confirmed any more
    /// ([`Self::invalidate_or_block`]).
    pub fn abort_all_dma(&self) -> Result<(), SmmuError> {
        self.write_cr0(cr0::CMDQEN | cr0::EVENTQEN, "SMMUEN clear (abort all DMA)")
    }

    /// Submits `commands` (with one CMD_SYNC); if that fails or times out,
    /// fails closed: blocks every attachment `exposed` covers (blocking
    /// STE, CFGI_STE, as a detach does; `attachments` marks them blocked)
    /// and, when even that is not confirmed, stops all DMA
    /// ([`Self::abort_all_dma`]). Returns the first error.
    pub fn invalidate_or_block<S: Copy + Eq, const N: usize>(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        commands: impl IntoIterator<Item = Command>,
        attachments: &mut crate::attachments::Attachments<S, N>,
        exposed: crate::attachments::Exposed<'_, S>,
    ) -> Result<(), SmmuError> {
        let error = match self.submit(mem, commands) {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        self.fail_closed(mem, alloc, attachments, exposed);
        Err(error)
    }

    /// After an invalidation failed or timed out: blocks every attachment
    /// `exposed` covers (blocking STE, CFGI_STE) and, when even that is not
    /// confirmed, stops all DMA. Returns whether DMA was stopped.
    pub fn fail_closed<S: Copy + Eq, const N: usize>(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl FrameAllocator,
        attachments: &mut crate::attachments::Attachments<S, N>,
        exposed: crate::attachments::Exposed<'_, S>,
    ) -> bool {
        let blocked = attachments.block(exposed, |a| {
            self.block_stream(mem, alloc, u32::from(a.requester))
        });
        // Best effort: a unit that does not even acknowledge CR0 is beyond
        // what software can stop.
        blocked.is_err() && self.abort_all_dma().is_ok()
    }

    /// Physical address of the STE of `stream_id`, if present.
    pub fn ste_address(&self, mem: &impl PhysMem, stream_id: u32) -> Option<PhysAddr> {
        self.stream_table?.ste_address(mem, stream_id)
    }
}
