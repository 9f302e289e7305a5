//! The kernel's side of the `iommu` crate: register and memory access over
//! the direct map, and the IOMMU unit this machine has, brought up at boot
//! with every DMA blocked.

use crate::frames::BootFrames;
pub use crate::mmio::DirectMmio;
use iommu::{FrameAllocator, PhysAddr, PhysMem};

/// Physical memory the IOMMU walks, reached through the direct map.
#[derive(Clone, Copy)]
pub struct DirectMemory;

impl PhysMem for DirectMemory {
    // The crate only reads and writes structures it placed in frames the
    // kernel gave it (or the kernel's own DMA pages), and zeroes only table
    // pages of its pool, referenced by no table any more (freed after their
    // entries were cleared and invalidated).
    fn read_u64(&self, addr: PhysAddr) -> u64 {
        crate::mem::read_u64(addr)
    }

    fn write_u64(&self, addr: PhysAddr, value: u64) {
        crate::mem::write_u64(addr, value)
    }

    fn zero(&self, addr: PhysAddr, len: u64) {
        crate::mem::zero(addr, len)
    }
}

impl FrameAllocator for BootFrames {
    fn alloc_zeroed_frame(&mut self) -> Option<PhysAddr> {
        self.alloc()
    }
}

/// The machine's IOMMU.
pub enum Unit {
    /// An Intel VT-d remapping unit.
    #[cfg(target_arch = "x86_64")]
    Vtd(iommu::vtd::VtdUnit<DirectMmio>),
    /// An Arm SMMUv3.
    #[cfg(target_arch = "aarch64")]
    Smmu(iommu::smmuv3::Smmu<DirectMmio>),
}

pub use iospace::{DmaFault, MAX_FAULTS};

impl Unit {
    /// The identification registers, named as the test command line names them.
    #[cfg(feature = "self-tests")]
    pub fn id_registers(&self) -> [(&'static str, u64); 3] {
        match self {
            #[cfg(target_arch = "x86_64")]
            Unit::Vtd(unit) => [
                ("vtd.ver", u64::from(unit.version().0)),
                ("vtd.cap", unit.capability().0),
                ("vtd.ecap", unit.extended_capability().0),
            ],
            #[cfg(target_arch = "aarch64")]
            Unit::Smmu(smmu) => {
                let features = smmu.features();
                [
                    ("smmu.idr0", u64::from(features.idr0.0)),
                    ("smmu.idr1", u64::from(features.idr1.0)),
                    ("smmu.idr5", u64::from(features.idr5.0)),
                ]
            }
        }
    }

    /// A named capability bit (`vtd.ecap.smts`, ...), if the name is known.
    #[cfg(feature = "self-tests")]
    pub fn feature(&self, name: &str) -> Option<bool> {
        match self {
            #[cfg(target_arch = "x86_64")]
            Unit::Vtd(unit) => {
                let ecap = unit.extended_capability();
                let value = match name.strip_prefix("vtd.ecap.")? {
                    "qi" => ecap.qi(),
                    "ir" => ecap.ir(),
                    "pt" => ecap.pt(),
                    "nest" => ecap.nest(),
                    "pasid" => ecap.pasid(),
                    "smts" => ecap.smts(),
                    "slts" => ecap.slts(),
                    "flts" => ecap.flts(),
                    "srs" => ecap.srs(),
                    _ => return None,
                };
                Some(value)
            }
            #[cfg(target_arch = "aarch64")]
            Unit::Smmu(smmu) => {
                let features = smmu.features();
                let value = match name.strip_prefix("smmu.")? {
                    "s1p" => features.idr0.s1p(),
                    "s2p" => features.idr0.s2p(),
                    _ => return None,
                };
                Some(value)
            }
        }
    }

    /// Takes every fault the unit recorded since the last drain.
    pub fn drain_faults(&mut self) -> heapless::Vec<DmaFault, MAX_FAULTS> {
        let mut faults = heapless::Vec::new();
        match self {
            #[cfg(target_arch = "x86_64")]
            Unit::Vtd(unit) => {
                let records = unit.read_faults();
                // One line per burst: records that differ only in the page
                // address and the recording register they came from.
                crate::console::bursts(
                    records.iter(),
                    |a, b| {
                        let key = |r: &iommu::vtd::regs::FaultRecord| {
                            (
                                r.source_id,
                                r.reason,
                                r.access,
                                r.pasid,
                                r.privileged,
                                r.execute,
                                r.address_type,
                            )
                        };
                        key(a) == key(b)
                    },
                    |first, last, count| {
                        // Raw, as the recording register holds it (F set):
                        // `cargo xtask` decodes it for the reader.
                        let (low, high) = first.encode();
                        crate::println!(
                            "[vtd] fault FRCD {low:#x} {high:#x}{}",
                            BurstNote(count, first.address, last.address)
                        );
                    },
                );
                for record in records.iter() {
                    let _ = faults.push(DmaFault::from(&record));
                }
            }
            #[cfg(target_arch = "aarch64")]
            Unit::Smmu(smmu) => {
                let drain = smmu.drain_events(&DirectMemory);
                if drain.overflowed {
                    crate::println!("[smmu] the event queue overflowed: events were lost");
                }
                // One line per burst: events that differ only in the input
                // address (a device faulting on each word of one DMA).
                crate::console::bursts(
                    drain.events.iter(),
                    |a, b| {
                        let key = |e: &iommu::smmuv3::queue::Event| iommu::smmuv3::queue::Event {
                            input_address: 0,
                            ..*e
                        };
                        key(a) == key(b)
                    },
                    |first, last, count| {
                        // Raw, the record's four words: `cargo xtask`
                        // decodes it for the reader.
                        let [w0, w1, w2, w3] = first.encode();
                        crate::println!(
                            "[smmu] event {w0:#x} {w1:#x} {w2:#x} {w3:#x}{}",
                            BurstNote(count, first.input_address, last.input_address)
                        );
                    },
                );
                for event in drain.events.iter() {
                    let _ = faults.push(DmaFault::from(&event));
                }
            }
        }
        faults
    }
}

/// What follows a burst's line: ` (xN)`, and the last address when the
/// burst spans more than one (count, first address, last address).
struct BurstNote(usize, u64, u64);

impl core::fmt::Display for BurstNote {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let BurstNote(count, first, last) = *self;
        if first == last {
            return write!(f, "{}", crate::console::Times(count));
        }
        write!(f, " (x{count}, the last at addr {last:#x})")
    }
}

impl Unit {
    /// Turns on the unit's fault interrupt, delivered as
    /// `arch::IOMMU_FAULT_IRQ`: VT-d's fault event MSI, the SMMUv3
    /// event-queue SPI.
    pub fn enable_fault_interrupt(&mut self) -> Result<(), &'static str> {
        match self {
            #[cfg(target_arch = "x86_64")]
            Unit::Vtd(unit) => {
                let (address, data) = crate::arch::msi_message(crate::arch::IOMMU_FAULT_IRQ);
                unit.set_fault_interrupt(address, data);
                Ok(())
            }
            #[cfg(target_arch = "aarch64")]
            Unit::Smmu(smmu) => {
                crate::arch::enable_interrupt(crate::arch::IOMMU_FAULT_IRQ);
                smmu.enable_interrupts()
                    .map_err(|_| "the SMMU did not acknowledge IRQ_CTRL")
            }
        }
    }
}

/// Size of the reserved IPA window at the top of every IoSpace, where the
/// kernel keeps structures the hardware fetches through stage 2.
pub use iospace::RESERVED_IPA_WINDOW;

impl Unit {
    /// What the capability model needs to know about this unit.
    pub fn model_unit(&self) -> caps::IommuUnit {
        let (pasid_bits, domain_ids, ipa_bits) = match self {
            #[cfg(target_arch = "x86_64")]
            Unit::Vtd(unit) => {
                let ecap = unit.extended_capability();
                let pasid_bits = if ecap.pasid() { ecap.pasid_bits() } else { 0 };
                // DID 0 is reserved when caching mode is on; never hand it out.
                let dids = (1u32 << unit.capability().domain_id_bits()).saturating_sub(1);
                // First-stage IoSpaces (no second stage): canonical, 47 bits.
                let ipa_bits = iospace::IoUnit::space_ipa_bits(unit)
                    .unwrap_or(unit.capability().mgaw())
                    .min(unit.capability().mgaw());
                (pasid_bits, dids, ipa_bits)
            }
            #[cfg(target_arch = "aarch64")]
            Unit::Smmu(smmu) => {
                let features = smmu.features();
                let vmids = if features.idr0.vmid16() {
                    1u32 << 16
                } else {
                    1 << 8
                };
                (
                    // One CD table page per stream: SubstreamIDs below 64
                    // (kernel/iospace/src/smmu.rs); QEMU: 0, no PASIDs.
                    features.idr1.ssidsize().min(6),
                    vmids - 1,
                    features.idr5.oas_bits().min(48),
                )
            }
        };
        caps::IommuUnit {
            id: 0,
            pasid_bits: pasid_bits.min(20) as u8,
            // Tags: IoSpace d uses d + 1, nests 0x8001.. (the iospace crate).
            domain_ids: domain_ids.min(0x7FFE) as u16,
            ipa_bits: ipa_bits as u8,
            rid_limit: 1 << 16,
            reserved_ipa_base: (1u64 << ipa_bits) - RESERVED_IPA_WINDOW,
            reserved_ipa_size: RESERVED_IPA_WINDOW,
        }
    }

    /// `IommuIdentify`'s reply: vendor (1 VT-d, 2 SMMUv3), translation bits
    /// (0 stage 1, 1 stage 2, 2 hardware nesting, 3 shadow nesting, 4
    /// IoSpaces are first-stage tables: VT-d without a stage 2), PASID
    /// width, page sizes (bit set of log2 sizes), domain ids, dirty
    /// tracking (0 stage 2: `IoSpace.SetDirtyTracking` works; 1 first-stage
    /// A/D bits).
    pub fn identify(&self) -> [u64; 6] {
        let unit = self.model_unit();
        let (vendor, stages, pages) = match self {
            #[cfg(target_arch = "x86_64")]
            Unit::Vtd(vtd) => {
                let ecap = vtd.extended_capability();
                let cap = vtd.capability();
                let mut stages = 0u64;
                if ecap.flts() {
                    stages |= 1;
                }
                let stage2 = ecap.slts() || !ecap.smts();
                if stage2 {
                    stages |= 2;
                }
                // Nesting is the hardware's where ECAP.NEST, else the
                // shadow, which needs a stage 2 (none with QEMU's x-flts).
                stages |= if ecap.nest() {
                    4
                } else if stage2 {
                    8
                } else {
                    0
                };
                let mut pages = 1u64 << 12;
                if iospace::IoUnit::space_ipa_bits(vtd).is_some() {
                    // First-stage IoSpaces: 2 MiB always, 1 GiB with FL1GP.
                    stages |= 16;
                    pages |= 1 << 21;
                    if cap.fl1gp() {
                        pages |= 1 << 30;
                    }
                } else {
                    if cap.second_stage_2m() {
                        pages |= 1 << 21;
                    }
                    if cap.second_stage_1g() {
                        pages |= 1 << 30;
                    }
                }
                (1, stages, pages)
            }
            #[cfg(target_arch = "aarch64")]
            Unit::Smmu(smmu) => {
                let idr0 = smmu.features().idr0;
                let mut stages = 0u64;
                if idr0.s1p() {
                    stages |= 1;
                }
                if idr0.s2p() {
                    stages |= 2;
                }
                if idr0.s1p() && idr0.s2p() {
                    stages |= 4;
                }
                (2, stages, (1 << 12) | (1 << 21) | (1 << 30))
            }
        };
        let dirty = match self {
            #[cfg(target_arch = "x86_64")]
            Unit::Vtd(hw) => dirty_bits(hw),
            #[cfg(target_arch = "aarch64")]
            Unit::Smmu(hw) => dirty_bits(hw),
        };
        // What this kernel was built without is not offered: SVA (MR1
        // bit 0), dirty tracking (MR5 bit 0), page requests and stalls
        // (MR5 bits 2 and 3); kernel/README.md "Kernel features".
        let stages = stages & !u64::from(!Feature::Sva.built());
        let dirty = dirty
            & !u64::from(!Feature::Dirty.built())
            & !(u64::from(!Feature::PageRequests.built()) * 0b1100);
        [
            vendor,
            stages,
            u64::from(unit.pasid_bits),
            pages,
            u64::from(unit.domain_ids),
            dirty,
        ]
    }
}

/// `IommuIdentify` MR5: bit 0 the unit tracks stage-2 dirty state
/// (`IoSpace.SetDirtyTracking`, `ReadDirty`), bit 1 it sets first-stage
/// A/D bits, bit 2 it takes page requests (recoverable faults,
/// `IoFaultQueue.Respond`), bit 3 it stalls faulting transactions for
/// the same answers (SMMUv3 stall model). Asked of the driver through the object
/// layer's unit trait, not of `io_space`: the hardware side does not call up.
fn dirty_bits(hw: &impl iospace::IoUnit) -> u64 {
    u64::from(hw.dirty_tracking())
        | u64::from(hw.first_stage_dirty()) << 1
        | u64::from(hw.page_requests_supported()) << 2
        | u64::from(hw.stalls_supported()) << 3
}

/// A cold IOMMU feature a kernel may be built without (kernel/Cargo.toml,
/// kernel/README.md "Kernel features").
#[derive(Clone, Copy)]
pub enum Feature {
    /// `sva`: `IoDevice.BindVSpace`, `IoPasid.BindVSpace`.
    Sva,
    /// `page-requests`: page requests and stalls, `IoFaultQueue.Respond`.
    PageRequests,
    /// `dirty`: `IoSpace.SetDirtyTracking`, `ReadDirty`.
    Dirty,
}

impl Feature {
    /// Whether this kernel was built with it (a constant: where it is
    /// not, the code it guards is dead and left out).
    #[inline(always)]
    pub const fn built(self) -> bool {
        match self {
            Feature::Sva => cfg!(feature = "sva"),
            Feature::PageRequests => cfg!(feature = "page-requests"),
            Feature::Dirty => cfg!(feature = "dirty"),
        }
    }

    /// Its cargo feature's name.
    pub const fn name(self) -> &'static str {
        match self {
            Feature::Sva => "sva",
            Feature::PageRequests => "page-requests",
            Feature::Dirty => "dirty",
        }
    }
}

/// The unit brought up at boot.
pub static UNIT: spin::Mutex<Option<Unit>> = spin::Mutex::new(None);

/// Finds the IOMMU, prints what it can do and blocks all DMA through it.
#[cfg(target_arch = "x86_64")]
pub fn init(
    found: &crate::boot_types::Discovered,
    frames: &mut BootFrames,
) -> Result<(), &'static str> {
    use iommu::vtd::{VtdUnit, dmar::Dmar, regs::RootTableMode};
    let bytes = found
        .dmar
        .ok_or("no ACPI DMAR table: add -device intel-iommu")?;
    let dmar = match Dmar::parse(bytes) {
        Ok(dmar) => dmar,
        Err(e) => {
            crate::println!("[vtd] DMAR rejected: {e}");
            return Err("the DMAR table is malformed");
        }
    };
    crate::println!(
        "[vtd] DMAR: host address width {} bits, flags {:#x}",
        dmar.host_address_width(),
        dmar.flags()
    );
    let drhd = dmar
        .remapping_units()
        .next()
        .ok_or("the DMAR table lists no remapping unit")?;
    crate::println!(
        "[vtd] DRHD: registers at {:#x}, segment {}, {}",
        drhd.register_base,
        drhd.segment,
        if drhd.includes_all_pci() {
            "all PCI devices"
        } else {
            "listed devices"
        }
    );
    if !crate::arch::phys_map_covers(drhd.register_base, 4096) {
        return Err("the VT-d registers are outside the direct map");
    }
    // The DRHD names this unit's register block; nothing else drives it.
    let mut unit = VtdUnit::new(DirectMmio::new(drhd.register_base));
    // Raw values on one line: `cargo xtask` decodes them for the reader.
    crate::println!(
        "[vtd] VER {:#x} CAP {:#018x} ECAP {:#018x}",
        unit.version().0,
        unit.capability().0,
        unit.extended_capability().0
    );
    let mode = if unit.extended_capability().smts() {
        RootTableMode::Scalable
    } else {
        RootTableMode::Legacy
    };
    match unit.block_all_dma(&DirectMemory, frames, mode) {
        Ok(root) => crate::println!(
            "[vtd] translation enabled, {mode:?} root table at {root:#x} all not-present: all DMA blocked"
        ),
        Err(e) => {
            crate::println!("[vtd] blocking DMA failed: {e}");
            return Err("the VT-d unit did not accept the blocking configuration");
        }
    }
    // Interrupts next: the I/O APIC's requester id comes from the DRHD's
    // device scope.
    let ioapic = drhd
        .scopes
        .clone()
        .find(|scope| scope.kind == iommu::vtd::dmar::ScopeKind::IoApic)
        .and_then(|scope| scope.requester_id());
    crate::interrupt_remap::init(&mut unit, frames, ioapic)?;
    *UNIT.lock() = Some(Unit::Vtd(unit));
    Ok(())
}

/// StreamIDs given a stream-table entry at boot: PCI bus 0 (RID = StreamID
/// on virt). Other StreamIDs have no entry and raise C_BAD_STREAMID.
#[cfg(target_arch = "aarch64")]
const POPULATED_STREAM_IDS: core::ops::Range<u32> = 0..256;

/// Finds the SMMUv3, prints what it can do and blocks all DMA through it.
#[cfg(target_arch = "aarch64")]
pub fn init(
    found: &crate::boot_types::Discovered,
    frames: &mut BootFrames,
) -> Result<(), &'static str> {
    use iommu::smmuv3::{BlockPolicy, Smmu};
    let (base, size) = found
        .smmu
        .ok_or("no arm,smmu-v3 node in the device tree: boot -M virt,iommu=smmuv3")?;
    if !crate::arch::phys_map_covers(base, size) {
        return Err("the SMMU registers are outside the direct map");
    }
    // The device tree names this SMMU's register block; nothing else drives it.
    let mut smmu = Smmu::new(DirectMmio::new(base));
    let features = *smmu.features();
    // Raw values on one line: `cargo xtask` decodes them for the reader.
    crate::println!(
        "[smmu] IDR0 {:#010x} IDR1 {:#010x} IDR3 {:#010x} IDR5 {:#010x}",
        features.idr0.0,
        features.idr1.0,
        features.idr3.0,
        features.idr5.0
    );
    match smmu.block_all_dma(
        &DirectMemory,
        frames,
        BlockPolicy::RecordFault,
        POPULATED_STREAM_IDS,
    ) {
        Ok(()) => crate::println!(
            "[smmu] enabled; StreamIDs {}..{} have invalid STEs (C_BAD_STE), others no entry: all DMA blocked",
            POPULATED_STREAM_IDS.start,
            POPULATED_STREAM_IDS.end
        ),
        Err(e) => {
            crate::println!("[smmu] blocking DMA failed: {e}");
            return Err("the SMMU did not accept the blocking configuration");
        }
    }
    *UNIT.lock() = Some(Unit::Smmu(smmu));
    Ok(())
}
