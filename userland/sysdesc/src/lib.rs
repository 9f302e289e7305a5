//! System descriptions: the system an image (`images/<NAME>.toml`) asks for,
//! after the host has validated it, in the form init will read at boot.
//!
//! The host tools (`tools/image`) parse the TOML, check it against the
//! platform, resolve every name to an index and produce a
//! [`SystemDescription`]; it travels in the boot image as one postcard-encoded
//! entry ([`SystemDescription::encode`], [`SystemDescription::decode`]) of the
//! archive laid out in [`archive`]. Init decodes it without an allocator:
//! every list is a `heapless::Vec` with a fixed capacity, and the host
//! validator rejects images that exceed one, so anything the host accepts
//! decodes here.
//!
//! The description is *resolved*: domains, regions and grants refer to each
//! other by index into the lists of this struct, never by name. Names stay
//! only for logging and for the capability table each domain receives.
//!
//! Vocabulary follows seL4 Microkit where it fits: protection domain, memory
//! region, map, channel, irq. IOMMU grants ([`DmaGrant`]) are Portcullis'
//! own: a PCI device handed to a domain as an IoDevice capability with an
//! IoSpace (stage 2) of a stated size.
#![no_std]
#![forbid(unsafe_code)]

pub mod archive;

/// The bounded collections the description is made of, for users that
/// build or inspect one.
pub use heapless;

use core::fmt;

use heapless::Vec;
use serde::{Deserialize, Serialize};

/// Longest name of a domain, region or program, in bytes of UTF-8.
pub const NAME_LEN: usize = 32;
/// Most protection domains in one system.
pub const MAX_DOMAINS: usize = 16;
/// Most memory regions in one system.
pub const MAX_REGIONS: usize = 32;
/// Most CPU mappings (region into a domain's address space) in one system.
pub const MAX_MAPS: usize = 64;
/// Most channels in one system.
pub const MAX_CHANNELS: usize = 32;
/// Most IRQs handed to domains in one system.
pub const MAX_IRQS: usize = 16;
/// Most IOMMU grants (devices given to domains) in one system.
pub const MAX_DMA_GRANTS: usize = 8;
/// Most IO mappings (region into a grant's IoSpace) in one system.
pub const MAX_IO_MAPS: usize = 32;
/// Most PASIDs one grant may name.
pub const MAX_PASIDS: usize = 8;
/// Channel and IRQ ids of one domain are below this: each id is one bit of
/// the domain's notification badge.
pub const MAX_CHANNEL_ID: u8 = 63;

/// Start of the part of every domain's address space that init lays out
/// itself (capability table, heap, stack, IPC buffer; `sys::names` has the
/// addresses), up to the top of user space: images may not map there.
pub const INIT_RESERVED_START: u64 = 0x7F_8000_0000;

/// Version of the encoded description; [`SystemDescription::decode`]
/// refuses any other.
pub const DESCRIPTION_VERSION: u32 = 5;

/// A short UTF-8 name.
pub type Name = heapless::String<NAME_LEN>;

/// Index into [`SystemDescription::domains`].
pub type DomainIndex = u8;
/// Index into [`SystemDescription::regions`].
pub type RegionIndex = u8;
/// Index into [`SystemDescription::dma_grants`].
pub type GrantIndex = u8;

/// The whole system init builds: every list, resolved to indices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemDescription {
    /// The protection domains, in the order of the image file.
    pub domains: Vec<ProtectionDomain, MAX_DOMAINS>,
    /// The memory regions, in the order of the image file.
    pub regions: Vec<MemoryRegion, MAX_REGIONS>,
    /// Regions mapped into domains' address spaces.
    pub maps: Vec<Mapping, MAX_MAPS>,
    /// Endpoints and notifications between two domains.
    pub channels: Vec<Channel, MAX_CHANNELS>,
    /// Hardware interrupts delivered to domains.
    pub irqs: Vec<Irq, MAX_IRQS>,
    /// PCI devices given to domains, each with its IoSpace.
    pub dma_grants: Vec<DmaGrant, MAX_DMA_GRANTS>,
    /// Regions mapped into the IoSpaces of grants.
    pub io_maps: Vec<IoMapping, MAX_IO_MAPS>,
}

/// One protection domain: a program running in its own address space and
/// capability space, with one thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectionDomain {
    /// Unique name of the domain.
    pub name: Name,
    /// Name of the program (the archive entry of kind
    /// [`archive::EntryKind::Program`]) the domain runs.
    pub program: Name,
    /// Scheduling priority, 0 (lowest) to 254.
    pub priority: u8,
    /// Bytes of stack for the domain's thread (a multiple of 4 KiB).
    pub stack_size: u64,
    /// Bytes of heap for the domain (a multiple of 4 KiB, may be 0).
    pub heap_size: u64,
    /// Bytes of the Untyped the domain receives to build objects from (a
    /// power of two of at least [`MIN_UNTYPED_SIZE`]), with its own CNode
    /// and VSpace capabilities; 0: none of the three.
    pub untyped_size: u64,
    /// The Console capability it receives (named `console` in its table).
    pub console: ConsoleGrant,
    /// How many times init restarts the domain after it faults (or its
    /// device's DMA faults in the IOMMU), at most [`MAX_RESTARTS`]; 0: a
    /// domain that faults stays stopped.
    pub restarts: u8,
    /// A failure the domain's program injects into its first run, for the
    /// restart tests (init tells the program through its capability table).
    pub inject: Inject,
}

/// The most restarts an image may give one domain.
pub const MAX_RESTARTS: u8 = 8;

/// A failure a driver injects into its first run (`inject` of its image
/// entry), so a test can watch init restart it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Inject {
    /// Nothing: the program runs as it is.
    None,
    /// The driver faults on purpose while a request of its device is in
    /// flight (`crash-mid-io`).
    CrashMidIo,
    /// The driver points its stage 1 at memory its IoSpace was not given
    /// and lets the device write there (`rogue-dma`).
    RogueDma,
    /// As `CrashMidIo`, in every run: the driver keeps crashing, and init
    /// gives it up once its restarts are used (`crash-every-run`).
    CrashEveryRun,
}

impl Inject {
    /// The code init writes into the domain's capability table
    /// (`sys::names::CapTable::inject`).
    pub const fn code(self) -> u64 {
        match self {
            Inject::None => 0,
            Inject::CrashMidIo => 1,
            Inject::RogueDma => 2,
            Inject::CrashEveryRun => 3,
        }
    }
}

/// What a domain may do with the kernel console (`console` of its image
/// entry): init gives it a Console capability with these rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsoleGrant {
    /// No Console: the domain prints nothing and cannot end the session.
    None,
    /// The write right: it prints.
    Write,
    /// The write and grant rights: it prints and may end the session
    /// (`DebugHalt`, which its program's return from `main` calls).
    Halt,
}

/// The smallest Untyped a domain may receive: one 4 KiB page.
pub const MIN_UNTYPED_SIZE: u64 = 4 << 10;
/// The largest Untyped a domain may receive (init carves it from its own
/// RAM Untypeds, which QEMU's 512 MiB machines share with everything else).
pub const MAX_UNTYPED_SIZE: u64 = 64 << 20;

/// The page size a memory region is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PageSize {
    /// 4 KiB frames.
    Small,
    /// 2 MiB frames.
    Large,
}

impl PageSize {
    /// The page size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Small => 4 << 10,
            PageSize::Large => 2 << 20,
        }
    }
}

/// One memory region: frames init allocates once and maps where the
/// description says (possibly into several domains and IoSpaces).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRegion {
    /// Unique name of the region.
    pub name: Name,
    /// Size in bytes, a multiple of `page_size`.
    pub size: u64,
    /// The frame size the region is made of.
    pub page_size: PageSize,
}

/// Access rights of a mapping (CPU or IO).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rights {
    /// Reads allowed.
    pub read: bool,
    /// Writes allowed.
    pub write: bool,
    /// Instruction fetches allowed (CPU mappings only).
    pub execute: bool,
}

impl fmt::Display for Rights {
    /// Writes the rights the way image files spell them: `r`, `rw`, `rx`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (on, letter) in [(self.read, "r"), (self.write, "w"), (self.execute, "x")] {
            if on {
                f.write_str(letter)?;
            }
        }
        Ok(())
    }
}

/// A memory region mapped into a domain's address space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    /// The domain whose address space receives the mapping.
    pub domain: DomainIndex,
    /// The region mapped.
    pub region: RegionIndex,
    /// Virtual address of the first byte, aligned to the region's page size.
    pub vaddr: u64,
    /// What the domain may do through the mapping.
    pub rights: Rights,
}

/// What kind of kernel object a channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelKind {
    /// An Endpoint: `ends[0]` calls, `ends[1]` receives and replies
    /// (Microkit's protected procedure call).
    Endpoint,
    /// A Notification each end can signal to the other.
    Notification,
}

/// One end of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelEnd {
    /// The domain at this end.
    pub domain: DomainIndex,
    /// The channel's id inside that domain (unique among the domain's
    /// channels and IRQs, at most [`MAX_CHANNEL_ID`]).
    pub id: u8,
    /// The badge this end sees when the other end signals or calls it.
    pub badge: u64,
}

/// A channel between two domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Endpoint or notification.
    pub kind: ChannelKind,
    /// The two ends; for an endpoint, the caller first.
    pub ends: [ChannelEnd; 2],
}

/// How an interrupt line signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// Level-triggered.
    Level,
    /// Edge-triggered.
    Edge,
}

/// A hardware interrupt delivered to a domain as a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Irq {
    /// The domain that handles it.
    pub domain: DomainIndex,
    /// The interrupt number (x86: IO-APIC input; Arm: GIC INTID).
    pub number: u32,
    /// Its id in the domain (the notification badge bit is `1 << id`).
    pub id: u8,
    /// Level or edge.
    pub trigger: Trigger,
}

/// A PCI function address: bus, device, function (segment 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PciAddress {
    /// Bus number.
    pub bus: u8,
    /// Device number, below 32.
    pub device: u8,
    /// Function number, below 8.
    pub function: u8,
}

impl PciAddress {
    /// Parses `BB:DD.F` in hexadecimal, e.g. `00:04.0`.
    pub fn parse(text: &str) -> Option<PciAddress> {
        let (bus, rest) = text.split_once(':')?;
        let (device, function) = rest.split_once('.')?;
        let hex = |part: &str, max: u8| {
            let ok = !part.is_empty() && part.len() <= 2;
            let value = u8::from_str_radix(part, 16).ok()?;
            (ok && value <= max).then_some(value)
        };
        Some(PciAddress {
            bus: hex(bus, 0xff)?,
            device: hex(device, 31)?,
            function: hex(function, 7)?,
        })
    }

    /// The requester ID (VT-d source-id, SMMU StreamID on QEMU virt):
    /// `bus << 8 | device << 3 | function`.
    pub const fn requester_id(self) -> u16 {
        (self.bus as u16) << 8 | (self.device as u16) << 3 | self.function as u16
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{:x}",
            self.bus, self.device, self.function
        )
    }
}

/// How a granted device's DMA is translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoMode {
    /// Stage 2 only: device addresses are IPAs of the kernel-owned IoSpace.
    Stage2,
    /// The driver builds its own stage-1 tables (an IoUserTable) nested
    /// under the IoSpace.
    Nested,
}

/// A PCI device given to a domain: an IoDevice capability and an IoSpace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmaGrant {
    /// The device, which must exist on the platform.
    pub device: PciAddress,
    /// The domain that drives it.
    pub domain: DomainIndex,
    /// Bytes of IPA space of the IoSpace; every IO mapping lies below it.
    pub iospace_size: u64,
    /// Stage 2 only or nested.
    pub mode: IoMode,
    /// PASIDs minted for the device (IoPasid capabilities), ascending.
    pub pasids: Vec<u32, MAX_PASIDS>,
    /// Whether the domain gets an IoFaultQueue bound to the device.
    pub fault_queue: bool,
    /// Built only when the domain asks init for it at run time
    /// (`sys::resources`); otherwise init builds it at boot.
    pub on_request: bool,
    /// The domain may ask init for an MSI line for the device
    /// (`sys::resources::MSI`, on-request grants): its driver then takes
    /// interrupts instead of polling.
    pub msi: bool,
}

/// A memory region mapped into a grant's IoSpace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoMapping {
    /// The grant whose IoSpace receives the mapping.
    pub grant: GrantIndex,
    /// The region mapped.
    pub region: RegionIndex,
    /// IPA of the first byte, aligned to the region's page size.
    pub ipa: u64,
    /// What the device may do (read, write; never execute).
    pub rights: Rights,
}

/// Why a description could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    /// The output buffer is too small.
    BufferTooSmall,
    /// The bytes are not a postcard-encoded description.
    Malformed,
    /// The description was written in another version of the format.
    WrongVersion(u32),
}

impl ktext::Text for CodecError {
    fn write(&self, out: &mut dyn ktext::Sink) {
        match self {
            CodecError::BufferTooSmall => out.str("the buffer is too small"),
            CodecError::Malformed => out.str("the bytes are not a system description"),
            CodecError::WrongVersion(found) => ktext::put!(
                out,
                "description version {}, this build reads version {}",
                found,
                DESCRIPTION_VERSION
            ),
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ktext::display(self, f)
    }
}

impl SystemDescription {
    /// Writes `DESCRIPTION_VERSION` and the description, postcard-encoded,
    /// into `buffer`; returns the bytes used.
    pub fn encode<'b>(&self, buffer: &'b mut [u8]) -> Result<&'b mut [u8], CodecError> {
        postcard::to_slice(&(DESCRIPTION_VERSION, self), buffer).map_err(|error| match error {
            postcard::Error::SerializeBufferFull => CodecError::BufferTooSmall,
            _ => CodecError::Malformed,
        })
    }

    /// Reads a description written by [`SystemDescription::encode`].
    pub fn decode(bytes: &[u8]) -> Result<SystemDescription, CodecError> {
        let (version, rest): (u32, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|_| CodecError::Malformed)?;
        if version != DESCRIPTION_VERSION {
            return Err(CodecError::WrongVersion(version));
        }
        let (description, rest) =
            postcard::take_from_bytes(rest).map_err(|_| CodecError::Malformed)?;
        if !rest.is_empty() {
            return Err(CodecError::Malformed);
        }
        Ok(description)
    }

    /// The index of the domain called `name`.
    pub fn domain_index(&self, name: &str) -> Option<DomainIndex> {
        let index = self.domains.iter().position(|domain| domain.name == name)?;
        DomainIndex::try_from(index).ok()
    }

    /// The index of the region called `name`.
    pub fn region_index(&self, name: &str) -> Option<RegionIndex> {
        let index = self.regions.iter().position(|region| region.name == name)?;
        RegionIndex::try_from(index).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::try_from(text).unwrap()
    }

    fn sample() -> SystemDescription {
        let mut description = SystemDescription::default();
        description
            .domains
            .push(ProtectionDomain {
                name: name("edu_driver"),
                program: name("edu"),
                priority: 100,
                stack_size: 16 << 10,
                heap_size: 64 << 10,
                untyped_size: 64 << 10,
                console: ConsoleGrant::Write,
                restarts: 2,
                inject: Inject::CrashMidIo,
            })
            .unwrap();
        description
            .regions
            .push(MemoryRegion {
                name: name("dma_buf"),
                size: 2 << 20,
                page_size: PageSize::Large,
            })
            .unwrap();
        let rw = Rights {
            read: true,
            write: true,
            execute: false,
        };
        description
            .maps
            .push(Mapping {
                domain: 0,
                region: 0,
                vaddr: 0x4000_0000,
                rights: rw,
            })
            .unwrap();
        let mut pasids = Vec::new();
        pasids.push(1).unwrap();
        description
            .dma_grants
            .push(DmaGrant {
                device: PciAddress::parse("00:04.0").unwrap(),
                domain: 0,
                iospace_size: 4 << 20,
                mode: IoMode::Nested,
                pasids,
                fault_queue: true,
                on_request: false,
                msi: false,
            })
            .unwrap();
        description
            .io_maps
            .push(IoMapping {
                grant: 0,
                region: 0,
                ipa: 0x20_0000,
                rights: rw,
            })
            .unwrap();
        description
    }

    #[test]
    fn encoding_round_trips() {
        let description = sample();
        let mut buffer = [0u8; 512];
        let used = description.encode(&mut buffer).unwrap().len();
        assert_eq!(
            SystemDescription::decode(&buffer[..used]).unwrap(),
            description
        );
    }

    #[test]
    fn decoding_refuses_other_versions_and_garbage() {
        let mut buffer = [0u8; 512];
        let used = sample().encode(&mut buffer).unwrap().len();
        // postcard writes the u32 version as a one-byte varint.
        assert_eq!(buffer[0], DESCRIPTION_VERSION as u8);
        buffer[0] = 7;
        assert_eq!(
            SystemDescription::decode(&buffer[..used]),
            Err(CodecError::WrongVersion(7))
        );
        buffer[0] = DESCRIPTION_VERSION as u8;
        assert_eq!(
            SystemDescription::decode(&buffer[..used - 1]),
            Err(CodecError::Malformed)
        );
        let mut trailing = [0u8; 513];
        trailing[..used].copy_from_slice(&buffer[..used]);
        assert_eq!(
            SystemDescription::decode(&trailing[..used + 1]),
            Err(CodecError::Malformed)
        );
    }

    #[test]
    fn a_small_buffer_is_reported() {
        let mut buffer = [0u8; 8];
        assert_eq!(
            sample().encode(&mut buffer),
            Err(CodecError::BufferTooSmall)
        );
    }

    #[test]
    fn pci_addresses() {
        let address = PciAddress::parse("00:04.0").unwrap();
        assert_eq!((address.bus, address.device, address.function), (0, 4, 0));
        assert_eq!(address.requester_id(), 0x20);
        let mut text = heapless::String::<16>::new();
        fmt::write(
            &mut text,
            format_args!("{}", PciAddress::parse("1f:1f.7").unwrap()),
        )
        .unwrap();
        assert_eq!(text, "1f:1f.7");
        for bad in [
            "", "00:04", "0:4.0.1", "00:20.0", "00:04.8", "100:00.0", "xx:00.0", "00:.0",
        ] {
            assert_eq!(PciAddress::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lookups_by_name() {
        let description = sample();
        assert_eq!(description.domain_index("edu_driver"), Some(0));
        assert_eq!(description.domain_index("nobody"), None);
        assert_eq!(description.region_index("dma_buf"), Some(0));
    }

    #[test]
    fn rights_print_like_image_files() {
        let mut text = heapless::String::<4>::new();
        let rx = Rights {
            read: true,
            write: false,
            execute: true,
        };
        fmt::write(&mut text, format_args!("{rx}")).unwrap();
        assert_eq!(text, "rx");
    }
}
