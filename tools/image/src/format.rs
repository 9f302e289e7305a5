//! The TOML files as written: `images/<NAME>.toml` ([`ImageFile`]) and
//! `images/platforms/<NAME>.toml` ([`PlatformFile`]).
//!
//! Every table denies unknown keys, so a misspelt key is an error with its
//! line, never a silently ignored setting. Names are kept as written here;
//! [`crate::validate`] resolves them and checks everything that needs more
//! than one entry to judge. Entries are [`Spanned`] so that semantic errors
//! can name the line of the entry too.
//!
//! The keys are documented, with an example, in `images/README.md`.

use serde::Deserialize;
use toml::Spanned;

use crate::size::Size;

/// An image file: the system init is to build.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFile {
    /// What the image does when booted, in a sentence or two.
    pub description: String,
    /// Platforms (file names in `images/platforms/`) the image supports;
    /// every platform when absent.
    pub platforms: Option<Vec<Spanned<String>>>,
    /// The protection domains.
    #[serde(default)]
    pub protection_domain: Vec<Spanned<DomainEntry>>,
    /// The memory regions.
    #[serde(default)]
    pub memory_region: Vec<Spanned<RegionEntry>>,
    /// The channels.
    #[serde(default)]
    pub channel: Vec<Spanned<ChannelEntry>>,
    /// The interrupts handed to domains.
    #[serde(default)]
    pub irq: Vec<Spanned<IrqEntry>>,
    /// The IOMMU grants.
    #[serde(default)]
    pub dma_grant: Vec<Spanned<GrantEntry>>,
}

/// `[[protection_domain]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainEntry {
    /// Unique name.
    pub name: String,
    /// The program it runs (a user program package of the workspace).
    pub program: String,
    /// Scheduling priority 0..=254; 100 when absent.
    pub priority: Option<u32>,
    /// Stack bytes; 16 KiB when absent.
    pub stack_size: Option<Size>,
    /// Heap bytes; 0 when absent.
    pub heap_size: Option<Size>,
    /// Bytes of an Untyped the domain builds objects from (a power of
    /// two), given with its own CNode and VSpace; none when absent.
    pub untyped: Option<Size>,
    /// `"write"`: a Console capability to print with; `"halt"`: also to
    /// end the session; none when absent (the domain prints nothing).
    pub console: Option<ConsoleEntry>,
    /// How many times init restarts the domain after a fault (0..=8); 0
    /// when absent: a faulting domain stays stopped.
    pub restarts: Option<u32>,
    /// A failure the program injects into its first run, for the restart
    /// tests: `"crash-mid-io"`, `"rogue-dma"` or `"crash-every-run"`;
    /// none when absent.
    pub inject: Option<InjectEntry>,
    /// Regions mapped into the domain (`[[protection_domain.map]]`).
    #[serde(default)]
    pub map: Vec<Spanned<MapEntry>>,
}

/// A domain's `console`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleEntry {
    /// Print.
    Write,
    /// Print and end the session.
    Halt,
}

/// A domain's `inject` (any other word is refused).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InjectEntry {
    /// Fault while a request of the device is in flight.
    CrashMidIo,
    /// Point stage 1 at memory the IoSpace was not given, let the device
    /// write there.
    RogueDma,
    /// Fault while a request is in flight, in every run.
    CrashEveryRun,
}

/// `[[protection_domain.map]]`: a region in the domain's address space.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapEntry {
    /// The region's name.
    pub region: String,
    /// Virtual address of its first byte.
    pub vaddr: u64,
    /// `"r"`, `"rw"`, `"rx"` or `"rwx"`.
    pub perms: String,
}

/// `[[memory_region]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionEntry {
    /// Unique name.
    pub name: String,
    /// Bytes, a multiple of the page size.
    pub size: Size,
    /// `"4 KiB"` (when absent) or `"2 MiB"`.
    pub page_size: Option<Size>,
}

/// `[[channel]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelEntry {
    /// `"notification"` (when absent) or `"endpoint"`.
    pub kind: Option<ChannelKindEntry>,
    /// The two ends; for an endpoint the caller first.
    pub ends: Vec<EndEntry>,
}

/// The `kind` of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKindEntry {
    /// A Notification.
    Notification,
    /// An Endpoint.
    Endpoint,
}

/// One end of a channel: `{ domain = "client", id = 0 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndEntry {
    /// The domain at this end.
    pub domain: String,
    /// The channel's id in that domain, 0..=63.
    pub id: u32,
    /// The badge this end sees; `1 << id` when absent.
    pub badge: Option<u64>,
}

/// `[[irq]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrqEntry {
    /// The domain that handles it.
    pub domain: String,
    /// The interrupt number.
    pub irq: u32,
    /// Its id in the domain, 0..=63 (shared with channel ids).
    pub id: u32,
    /// `"level"` (when absent) or `"edge"`.
    pub trigger: Option<TriggerEntry>,
}

/// The `trigger` of an IRQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerEntry {
    /// Level-triggered.
    Level,
    /// Edge-triggered.
    Edge,
}

/// `[[dma_grant]]`: a PCI device given to a domain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantEntry {
    /// PCI address `BB:DD.F`, e.g. `"00:04.0"`.
    pub device: String,
    /// The domain that drives it.
    pub domain: String,
    /// Bytes of IPA space of the device's IoSpace.
    pub iospace_size: Size,
    /// `"stage2"` or `"nested"`.
    pub mode: ModeEntry,
    /// PASIDs minted for the device (IoPasid capabilities).
    #[serde(default)]
    pub pasids: Vec<u32>,
    /// Whether the domain receives an IoFaultQueue for the device.
    #[serde(default)]
    pub fault_queue: bool,
    /// Regions mapped into the IoSpace.
    #[serde(default)]
    pub io_map: Vec<IoMapEntry>,
    /// Init builds nothing at boot; the domain asks for the device, its
    /// IoSpace and fault queue at run time (`sys::resources`), and init
    /// checks each request against this grant.
    #[serde(default)]
    pub on_request: bool,
    /// With `on_request`: the domain may ask init for an MSI line for the
    /// device (`sys::resources::MSI`), so its driver takes interrupts
    /// instead of polling.
    #[serde(default)]
    pub msi: bool,
}

/// The `mode` of a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeEntry {
    /// Stage 2 only.
    Stage2,
    /// Driver-owned stage 1 nested under the IoSpace.
    Nested,
}

/// One `io_map` item: `{ region = "dma_buf", ipa = 0x10000, perms = "rw" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoMapEntry {
    /// The region's name.
    pub region: String,
    /// IPA of its first byte in the IoSpace.
    pub ipa: u64,
    /// `"r"` or `"rw"`.
    pub perms: String,
}

/// A platform file: one QEMU machine.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformFile {
    /// What the machine is, in a sentence.
    pub description: String,
    /// `"x86_64"` or `"aarch64"`.
    pub arch: String,
    /// `"vtd"` or `"smmuv3"`.
    pub iommu: String,
    /// Bits of PASID the platform can deliver on DMA; 0 means none, and
    /// then no grant may name a PASID.
    pub pasid_bits: u32,
    /// The interrupt numbers domains may be given, `[first, last]`.
    pub irqs: [u32; 2],
    /// The PCI devices that exist on the machine.
    #[serde(default)]
    pub device: Vec<Spanned<DeviceEntry>>,
}

/// `[[device]]` of a platform.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    /// A short name, e.g. `"edu"`.
    pub name: String,
    /// PCI address `BB:DD.F`.
    pub pci: String,
    /// The QEMU device model, e.g. `"edu"`.
    pub model: String,
    /// Arguments that create it, appended by `cargo xtask run --image`;
    /// empty for devices xtask's machine table always creates.
    #[serde(default)]
    pub qemu: Vec<String>,
}
