//! Validation: an image file plus the platform it is built for becomes a
//! [`SystemDescription`], or an [`ImageError`] naming the file, the line,
//! the entry, the problem and the fix.
//!
//! The checks, in the order they run (each has a test in
//! `tests/rejections.rs` with a fixture in `tests/fixtures/`):
//!
//! - TOML syntax and unknown keys (toml's own line and column);
//! - the image supports the platform (`platforms = [...]`);
//! - names: unique, non-empty, at most [`sysdesc::NAME_LEN`] bytes;
//! - programs exist (the caller passes the workspace's user programs);
//! - sizes: stack, heap and regions are whole pages; region page sizes are
//!   4 KiB or 2 MiB;
//! - CPU maps: the region exists, perms are `r`/`rw`/`rx`/`rwx`, the address
//!   is page-aligned, below the top of user space, clear of the IPC buffer
//!   page, and no two maps of one domain overlap;
//! - channels and IRQs: both ends name existing, distinct domains; ids are
//!   0..=63 and unique per domain; an IRQ is in the platform's range and
//!   given only once;
//! - DMA grants: the device exists on the platform and is granted once; the
//!   IoSpace is whole pages and holds every region mapped into it; IO maps
//!   are `r` or `rw`, aligned, and do not overlap; PASIDs only where the
//!   platform delivers them, each within its bits, non-zero and unique;
//! - every list fits the capacity init decodes ([`sysdesc`]'s `MAX_*`).

use std::ops::Range;
use std::path::Path;

use sysdesc::{
    Channel, ChannelEnd, ChannelKind, DmaGrant, IoMapping, IoMode, Irq, Mapping, MemoryRegion,
    Name, PageSize, PciAddress, ProtectionDomain, Rights, SystemDescription, Trigger,
};

use crate::error::ImageError;
use crate::format::{
    ChannelKindEntry, DomainEntry, GrantEntry, ImageFile, ModeEntry, TriggerEntry,
};
use crate::platform::Platform;
use crate::size::human;
use crate::toml_error;

/// Priority of a domain that does not state one.
pub const DEFAULT_PRIORITY: u8 = 100;
/// Stack of a domain that does not state one.
pub const DEFAULT_STACK_SIZE: u64 = 16 << 10;
/// The highest priority a domain may have (255 is init's).
pub const MAX_PRIORITY: u32 = 254;
/// First address above user space (47-bit user half on both architectures).
pub const USER_TOP: u64 = 1 << 47;
/// The page every domain's IPC buffer occupies (`sys::ipc::IPC_BUFFER_ADDRESS`).
pub const IPC_BUFFER_PAGE: u64 = 0x7F_FFFF_F000;

const SMALL: u64 = 4 << 10;

/// A validated image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The image's name (its file name without `.toml`).
    pub name: String,
    /// Its description sentence.
    pub description: String,
    /// The platform it was checked against.
    pub platform: Platform,
    /// The system, resolved.
    pub system: SystemDescription,
    /// The programs its domains run, sorted, each once.
    pub programs: Vec<String>,
}

/// Checks the text of image `name` (shown as `file`) against `platform`,
/// with `programs` the user programs that exist.
pub fn validate(
    file: &Path,
    name: &str,
    text: &str,
    platform: &Platform,
    programs: &[String],
) -> Result<Image, ImageError> {
    let raw: ImageFile = toml::from_str(text).map_err(|error| {
        toml_error(
            file,
            text,
            &error,
            "correct the TOML at that position; every key is listed in images/README.md",
        )
    })?;
    let checker = Checker { file, text };
    checker.check(name, raw, platform, programs)
}

struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
}

/// The parts of a validated map or IO map needed to find overlaps.
struct Placed {
    start: u64,
    end: u64,
    region: String,
}

impl Checker<'_> {
    fn error(
        &self,
        span: Range<usize>,
        entry: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> ImageError {
        ImageError::new(self.file, entry, problem, fix).at(self.text, span.start)
    }

    fn name(&self, span: Range<usize>, entry: &str, text: &str) -> Result<Name, ImageError> {
        if text.is_empty() {
            return Err(self.error(span, entry, "the name is empty", "give it a name"));
        }
        Name::try_from(text).map_err(|_| {
            self.error(
                span,
                entry,
                format!(
                    "`{text}` is {} bytes long, names have at most {}",
                    text.len(),
                    sysdesc::NAME_LEN
                ),
                "shorten the name",
            )
        })
    }

    fn rights(
        &self,
        span: Range<usize>,
        entry: &str,
        perms: &str,
        allowed: &[&str],
    ) -> Result<Rights, ImageError> {
        if !allowed.contains(&perms) {
            return Err(self.error(
                span,
                entry,
                format!("perms = \"{perms}\" is not one of {}", allowed.join(", ")),
                format!("write perms as one of {}", allowed.join(", ")),
            ));
        }
        Ok(Rights {
            read: perms.contains('r'),
            write: perms.contains('w'),
            execute: perms.contains('x'),
        })
    }

    fn check(
        &self,
        name: &str,
        raw: ImageFile,
        platform: &Platform,
        programs: &[String],
    ) -> Result<Image, ImageError> {
        if let Some(platforms) = &raw.platforms
            && !platforms.iter().any(|p| p.get_ref() == &platform.name)
        {
            let listed: Vec<&str> = platforms.iter().map(|p| p.get_ref().as_str()).collect();
            let span = platforms.first().map_or(0..0, |p| p.span());
            return Err(self.error(
                span,
                "platforms",
                format!(
                    "the image supports {} but the {} platform was chosen",
                    listed.join(", "),
                    platform.name
                ),
                format!(
                    "choose the architecture of a listed platform with --arch, or add \"{}\" to platforms",
                    platform.name
                ),
            ));
        }
        self.capacity(&raw)?;
        let mut system = SystemDescription::default();
        self.regions(&raw, &mut system)?;
        self.domains(&raw, &mut system, programs)?;
        self.maps(&raw, &mut system)?;
        let mut ids = IdTable::default();
        self.channels(&raw, &mut system, &mut ids)?;
        self.irqs(&raw, &mut system, &mut ids, platform)?;
        self.grants(&raw, &mut system, platform)?;
        let mut used: Vec<String> = system
            .domains
            .iter()
            .map(|domain| domain.program.to_string())
            .collect();
        used.sort();
        used.dedup();
        Ok(Image {
            name: name.to_string(),
            description: raw.description,
            platform: platform.clone(),
            system,
            programs: used,
        })
    }

    /// Every list fits what init decodes.
    fn capacity(&self, raw: &ImageFile) -> Result<(), ImageError> {
        let maps: usize = raw
            .protection_domain
            .iter()
            .map(|d| d.get_ref().map.len())
            .sum();
        let io_maps: usize = raw.dma_grant.iter().map(|g| g.get_ref().io_map.len()).sum();
        let lists = [
            (
                "protection_domain",
                raw.protection_domain.len(),
                sysdesc::MAX_DOMAINS,
                raw.protection_domain
                    .get(sysdesc::MAX_DOMAINS)
                    .map(|e| e.span()),
            ),
            (
                "memory_region",
                raw.memory_region.len(),
                sysdesc::MAX_REGIONS,
                raw.memory_region
                    .get(sysdesc::MAX_REGIONS)
                    .map(|e| e.span()),
            ),
            ("protection_domain.map", maps, sysdesc::MAX_MAPS, None),
            (
                "channel",
                raw.channel.len(),
                sysdesc::MAX_CHANNELS,
                raw.channel.get(sysdesc::MAX_CHANNELS).map(|e| e.span()),
            ),
            (
                "irq",
                raw.irq.len(),
                sysdesc::MAX_IRQS,
                raw.irq.get(sysdesc::MAX_IRQS).map(|e| e.span()),
            ),
            (
                "dma_grant",
                raw.dma_grant.len(),
                sysdesc::MAX_DMA_GRANTS,
                raw.dma_grant.get(sysdesc::MAX_DMA_GRANTS).map(|e| e.span()),
            ),
            ("dma_grant.io_map", io_maps, sysdesc::MAX_IO_MAPS, None),
        ];
        for (list, count, max, span) in lists {
            if count > max {
                return Err(self.error(
                    span.unwrap_or(0..0),
                    list,
                    format!("{count} entries, but init holds at most {max}"),
                    format!("describe at most {max} (or raise sysdesc::MAX_* and rebuild)"),
                ));
            }
        }
        Ok(())
    }

    fn regions(&self, raw: &ImageFile, system: &mut SystemDescription) -> Result<(), ImageError> {
        for spanned in &raw.memory_region {
            let (span, entry) = (spanned.span(), spanned.get_ref());
            let label = format!("memory_region \"{}\"", entry.name);
            let name = self.name(span.clone(), &label, &entry.name)?;
            if system.region_index(&entry.name).is_some() {
                return Err(self.error(
                    span,
                    &label,
                    "a memory_region of this name already exists",
                    "give each memory_region its own name",
                ));
            }
            let page_size = match entry.page_size.map_or(SMALL, |size| size.0) {
                SMALL => PageSize::Small,
                bytes if bytes == PageSize::Large.bytes() => PageSize::Large,
                other => {
                    return Err(self.error(
                        span,
                        &label,
                        format!("page_size {} is not a page size", human(other)),
                        "write page_size = \"4 KiB\" or \"2 MiB\"",
                    ));
                }
            };
            let size = entry.size.0;
            if size == 0 || !size.is_multiple_of(page_size.bytes()) {
                return Err(self.error(
                    span,
                    &label,
                    format!(
                        "size {} is not a whole number of {} pages",
                        human(size),
                        human(page_size.bytes())
                    ),
                    format!(
                        "round size up to {}",
                        human(round_up(size, page_size.bytes()))
                    ),
                ));
            }
            push(
                &mut system.regions,
                MemoryRegion {
                    name,
                    size,
                    page_size,
                },
            );
        }
        Ok(())
    }

    fn domains(
        &self,
        raw: &ImageFile,
        system: &mut SystemDescription,
        programs: &[String],
    ) -> Result<(), ImageError> {
        for spanned in &raw.protection_domain {
            let (span, entry): (_, &DomainEntry) = (spanned.span(), spanned.get_ref());
            let label = format!("protection_domain \"{}\"", entry.name);
            let name = self.name(span.clone(), &label, &entry.name)?;
            if system.domain_index(&entry.name).is_some() {
                return Err(self.error(
                    span,
                    &label,
                    "a protection_domain of this name already exists",
                    "give each protection_domain its own name",
                ));
            }
            if !programs.iter().any(|program| program == &entry.program) {
                return Err(self.error(
                    span,
                    &label,
                    format!("unknown program `{}`", entry.program),
                    format!(
                        "use one of the workspace's user programs: {}",
                        if programs.is_empty() {
                            "none exist yet".to_string()
                        } else {
                            programs.join(", ")
                        }
                    ),
                ));
            }
            let program = self.name(span.clone(), &label, &entry.program)?;
            let priority = entry.priority.map_or(Ok(DEFAULT_PRIORITY), |priority| {
                u8::try_from(priority)
                    .ok()
                    .filter(|&p| u32::from(p) <= MAX_PRIORITY)
                    .ok_or_else(|| {
                        self.error(
                            span.clone(),
                            &label,
                            format!("priority {priority} is above {MAX_PRIORITY}"),
                            format!("use a priority from 0 to {MAX_PRIORITY} (255 is init's)"),
                        )
                    })
            })?;
            let stack_size = entry.stack_size.map_or(DEFAULT_STACK_SIZE, |size| size.0);
            let heap_size = entry.heap_size.map_or(0, |size| size.0);
            for (key, size) in [("stack_size", stack_size), ("heap_size", heap_size)] {
                if !size.is_multiple_of(SMALL) || (key == "stack_size" && size == 0) {
                    return Err(self.error(
                        span,
                        &label,
                        format!("{key} {} is not a whole number of 4 KiB pages", human(size)),
                        format!("round {key} up to {}", human(round_up(size, SMALL))),
                    ));
                }
            }
            let untyped_size = entry.untyped.map_or(0, |size| size.0);
            if entry.untyped.is_some()
                && (!untyped_size.is_power_of_two()
                    || !(sysdesc::MIN_UNTYPED_SIZE..=sysdesc::MAX_UNTYPED_SIZE)
                        .contains(&untyped_size))
            {
                let nearest = untyped_size
                    .checked_next_power_of_two()
                    .unwrap_or(sysdesc::MAX_UNTYPED_SIZE)
                    .clamp(sysdesc::MIN_UNTYPED_SIZE, sysdesc::MAX_UNTYPED_SIZE);
                return Err(self.error(
                    span,
                    &label,
                    format!(
                        "untyped {} is not a power of two from {} to {}",
                        human(untyped_size),
                        human(sysdesc::MIN_UNTYPED_SIZE),
                        human(sysdesc::MAX_UNTYPED_SIZE)
                    ),
                    format!("use untyped = \"{}\"", human(nearest)),
                ));
            }
            push(
                &mut system.domains,
                ProtectionDomain {
                    name,
                    program,
                    priority,
                    stack_size,
                    heap_size,
                    untyped_size,
                    console: match entry.console {
                        None => sysdesc::ConsoleGrant::None,
                        Some(crate::format::ConsoleEntry::Write) => sysdesc::ConsoleGrant::Write,
                        Some(crate::format::ConsoleEntry::Halt) => sysdesc::ConsoleGrant::Halt,
                    },
                    restarts: self.restarts(span.clone(), &label, entry)?,
                    inject: match entry.inject {
                        None => sysdesc::Inject::None,
                        Some(crate::format::InjectEntry::CrashMidIo) => sysdesc::Inject::CrashMidIo,
                        Some(crate::format::InjectEntry::RogueDma) => sysdesc::Inject::RogueDma,
                        Some(crate::format::InjectEntry::CrashEveryRun) => {
                            sysdesc::Inject::CrashEveryRun
                        }
                    },
                },
            );
        }
        Ok(())
    }

    /// A domain's `restarts`: at most `sysdesc::MAX_RESTARTS`.
    fn restarts(
        &self,
        span: Range<usize>,
        label: &str,
        entry: &DomainEntry,
    ) -> Result<u8, ImageError> {
        let Some(restarts) = entry.restarts else {
            return Ok(0);
        };
        let max = sysdesc::MAX_RESTARTS;
        let restarts = u8::try_from(restarts)
            .ok()
            .filter(|&r| r <= max)
            .ok_or_else(|| {
                self.error(
                    span,
                    label,
                    format!("restarts = {restarts} is above the {max} init allows"),
                    format!("use restarts = 0..={max}"),
                )
            })?;
        Ok(restarts)
    }

    fn maps(&self, raw: &ImageFile, system: &mut SystemDescription) -> Result<(), ImageError> {
        for (domain_index, domain) in raw.protection_domain.iter().enumerate() {
            let domain_name = &domain.get_ref().name;
            let mut placed: Vec<Placed> = Vec::new();
            for (map_index, spanned) in domain.get_ref().map.iter().enumerate() {
                let (span, entry) = (spanned.span(), spanned.get_ref());
                let label = format!("protection_domain \"{domain_name}\" map {map_index}");
                let region_index = system.region_index(&entry.region).ok_or_else(|| {
                    self.error(
                        span.clone(),
                        &label,
                        format!("unknown memory_region `{}`", entry.region),
                        "declare it with [[memory_region]] or correct the name",
                    )
                })?;
                let region = &system.regions[usize::from(region_index)];
                let rights = self.rights(
                    span.clone(),
                    &label,
                    &entry.perms,
                    &["r", "rw", "rx", "rwx"],
                )?;
                let page = region.page_size.bytes();
                if !entry.vaddr.is_multiple_of(page) {
                    return Err(self.error(
                        span,
                        &label,
                        format!(
                            "vaddr {:#x} is not aligned to the region's {} pages",
                            entry.vaddr,
                            human(page)
                        ),
                        format!(
                            "use a multiple of {page:#x}, e.g. {:#x}",
                            round_up(entry.vaddr, page)
                        ),
                    ));
                }
                let end = entry
                    .vaddr
                    .checked_add(region.size)
                    .filter(|&end| end <= USER_TOP);
                let Some(end) = end else {
                    return Err(self.error(
                        span,
                        &label,
                        format!(
                            "vaddr {:#x} + {} ends above user space ({USER_TOP:#x})",
                            entry.vaddr,
                            human(region.size)
                        ),
                        "map the region lower",
                    ));
                };
                if entry.vaddr < IPC_BUFFER_PAGE + SMALL && IPC_BUFFER_PAGE < end {
                    return Err(self.error(
                        span,
                        &label,
                        format!("the mapping {:#x}..{end:#x} covers the IPC buffer page {IPC_BUFFER_PAGE:#x}", entry.vaddr),
                        "map the region elsewhere",
                    ));
                }
                let reserved = sysdesc::INIT_RESERVED_START;
                if end > reserved {
                    return Err(self.error(
                        span,
                        &label,
                        format!(
                            "the mapping {:#x}..{end:#x} reaches into {reserved:#x}.., where init puts the domain's capability table, heap and stack",
                            entry.vaddr
                        ),
                        format!("map the region below {reserved:#x}"),
                    ));
                }
                if let Some(other) = placed.iter().find(|p| p.start < end && entry.vaddr < p.end) {
                    return Err(self.error(
                        span,
                        &label,
                        format!(
                            "`{}` at {:#x}..{end:#x} overlaps `{}` at {:#x}..{:#x} in the same address space",
                            entry.region, entry.vaddr, other.region, other.start, other.end
                        ),
                        format!("move one of them; {:#x} is free after `{}`", round_up(other.end, page), other.region),
                    ));
                }
                placed.push(Placed {
                    start: entry.vaddr,
                    end,
                    region: entry.region.clone(),
                });
                push(
                    &mut system.maps,
                    Mapping {
                        domain: index_u8(domain_index),
                        region: region_index,
                        vaddr: entry.vaddr,
                        rights,
                    },
                );
            }
        }
        Ok(())
    }

    fn domain_named(
        &self,
        system: &SystemDescription,
        span: &Range<usize>,
        label: &str,
        name: &str,
    ) -> Result<u8, ImageError> {
        system.domain_index(name).ok_or_else(|| {
            let known: Vec<&str> = system.domains.iter().map(|d| d.name.as_str()).collect();
            self.error(
                span.clone(),
                label,
                format!("unknown protection_domain `{name}`"),
                format!(
                    "use one of: {}",
                    if known.is_empty() {
                        "(none declared)".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })
    }

    fn channels(
        &self,
        raw: &ImageFile,
        system: &mut SystemDescription,
        ids: &mut IdTable,
    ) -> Result<(), ImageError> {
        for (index, spanned) in raw.channel.iter().enumerate() {
            let (span, entry) = (spanned.span(), spanned.get_ref());
            let label = format!("channel {index}");
            let [a, b] = entry.ends.as_slice() else {
                return Err(self.error(
                    span,
                    &label,
                    format!("{} ends, a channel has two", entry.ends.len()),
                    "write ends = [{ domain = \"a\", id = 0 }, { domain = \"b\", id = 0 }]",
                ));
            };
            let mut ends = Vec::new();
            for end in [a, b] {
                let domain = self.domain_named(system, &span, &label, &end.domain)?;
                let id = ids.claim(
                    self,
                    &span,
                    &label,
                    &end.domain,
                    end.id,
                    format!("channel {index}"),
                )?;
                ends.push(ChannelEnd {
                    domain,
                    id,
                    badge: end.badge.unwrap_or(1 << id),
                });
            }
            if ends[0].domain == ends[1].domain {
                return Err(self.error(
                    span,
                    &label,
                    format!("both ends are in `{}`", a.domain),
                    "connect two different protection domains",
                ));
            }
            let kind = match entry.kind.unwrap_or(ChannelKindEntry::Notification) {
                ChannelKindEntry::Notification => ChannelKind::Notification,
                ChannelKindEntry::Endpoint => ChannelKind::Endpoint,
            };
            let [first, second]: [ChannelEnd; 2] = ends
                .try_into()
                .unwrap_or_else(|_| unreachable!("two ends were pushed"));
            push(
                &mut system.channels,
                Channel {
                    kind,
                    ends: [first, second],
                },
            );
        }
        Ok(())
    }

    fn irqs(
        &self,
        raw: &ImageFile,
        system: &mut SystemDescription,
        ids: &mut IdTable,
        platform: &Platform,
    ) -> Result<(), ImageError> {
        for (index, spanned) in raw.irq.iter().enumerate() {
            let (span, entry) = (spanned.span(), spanned.get_ref());
            let label = format!("irq {}", entry.irq);
            let domain = self.domain_named(system, &span, &label, &entry.domain)?;
            let (first, last) = platform.irqs;
            if !(first..=last).contains(&entry.irq) {
                return Err(self.error(
                    span,
                    &label,
                    format!(
                        "the {} platform gives domains interrupts {first}..={last} only",
                        platform.name
                    ),
                    format!("use an interrupt from {first} to {last}"),
                ));
            }
            if let Some(other) = raw.irq[..index]
                .iter()
                .find(|other| other.get_ref().irq == entry.irq)
            {
                return Err(self.error(
                    span,
                    &label,
                    format!(
                        "interrupt {} is already given to `{}`",
                        entry.irq,
                        other.get_ref().domain
                    ),
                    "give each interrupt to one domain",
                ));
            }
            let id = ids.claim(self, &span, &label, &entry.domain, entry.id, label.clone())?;
            // The kernel programs every user-owned line edge-triggered (the
            // I/O APIC on x86_64, GICD_ICFGR on aarch64); a level-triggered
            // line would be misconfigured, so it is refused, not ignored.
            let trigger = match entry.trigger.unwrap_or(TriggerEntry::Edge) {
                TriggerEntry::Level => {
                    return Err(self.error(
                        span,
                        &label,
                        format!(
                            "interrupt {} is asked for level-triggered, but the kernel delivers user-owned lines edge-triggered only",
                            entry.irq
                        ),
                        "say trigger = \"edge\" (or leave it out) and have the device raise edges",
                    ));
                }
                TriggerEntry::Edge => Trigger::Edge,
            };
            push(
                &mut system.irqs,
                Irq {
                    domain,
                    number: entry.irq,
                    id,
                    trigger,
                },
            );
        }
        Ok(())
    }

    fn grants(
        &self,
        raw: &ImageFile,
        system: &mut SystemDescription,
        platform: &Platform,
    ) -> Result<(), ImageError> {
        let mut granted: Vec<(PciAddress, String)> = Vec::new();
        for (grant_index, spanned) in raw.dma_grant.iter().enumerate() {
            let (span, entry): (_, &GrantEntry) = (spanned.span(), spanned.get_ref());
            let label = format!("dma_grant \"{}\"", entry.device);
            let device = PciAddress::parse(&entry.device).ok_or_else(|| {
                self.error(
                    span.clone(),
                    &label,
                    format!("`{}` is not a PCI address", entry.device),
                    "write device = \"BB:DD.F\" in hexadecimal, e.g. \"00:04.0\"",
                )
            })?;
            if platform.device(device).is_none() {
                let known: Vec<String> = platform
                    .devices
                    .iter()
                    .map(|d| format!("{} ({})", d.pci, d.name))
                    .collect();
                return Err(self.error(
                    span,
                    &label,
                    format!("the {} platform has no device at {device}", platform.name),
                    format!(
                        "grant one of: {} (images/platforms/{}.toml)",
                        known.join(", "),
                        platform.name
                    ),
                ));
            }
            if let Some((_, holder)) = granted.iter().find(|(pci, _)| *pci == device) {
                return Err(self.error(
                    span,
                    &label,
                    format!("device {device} is already granted to `{holder}`"),
                    "grant each device to one domain; share memory regions instead",
                ));
            }
            let domain = self.domain_named(system, &span, &label, &entry.domain)?;
            if entry.msi && !entry.on_request {
                return Err(self.error(
                    span,
                    &label,
                    format!("msi = true for device {device} without on_request"),
                    "set on_request = true: the driver asks init for its MSI line at run time",
                ));
            }
            granted.push((device, entry.domain.clone()));
            let iospace_size = entry.iospace_size.0;
            if iospace_size == 0 || !iospace_size.is_multiple_of(SMALL) {
                return Err(self.error(
                    span,
                    &label,
                    format!(
                        "iospace_size {} is not a whole number of 4 KiB pages",
                        human(iospace_size)
                    ),
                    format!(
                        "round iospace_size up to {}",
                        human(round_up(iospace_size, SMALL))
                    ),
                ));
            }
            let mut placed: Vec<Placed> = Vec::new();
            for (io_index, io_map) in entry.io_map.iter().enumerate() {
                let io_label = format!("{label} io_map {io_index}");
                let region_index = system.region_index(&io_map.region).ok_or_else(|| {
                    self.error(
                        span.clone(),
                        &io_label,
                        format!("unknown memory_region `{}`", io_map.region),
                        "declare it with [[memory_region]] or correct the name",
                    )
                })?;
                let region = &system.regions[usize::from(region_index)];
                let rights = self.rights(span.clone(), &io_label, &io_map.perms, &["r", "rw"])?;
                let page = region.page_size.bytes();
                if !io_map.ipa.is_multiple_of(page) {
                    return Err(self.error(
                        span,
                        &io_label,
                        format!(
                            "ipa {:#x} is not aligned to the region's {} pages",
                            io_map.ipa,
                            human(page)
                        ),
                        format!(
                            "use a multiple of {page:#x}, e.g. {:#x}",
                            round_up(io_map.ipa, page)
                        ),
                    ));
                }
                let end = io_map.ipa.saturating_add(region.size);
                if end > iospace_size {
                    return Err(self.error(
                        span,
                        &io_label,
                        format!(
                            "`{}` at ipa {:#x}..{end:#x} does not fit the {} IoSpace",
                            io_map.region,
                            io_map.ipa,
                            human(iospace_size)
                        ),
                        format!(
                            "raise iospace_size to at least {} or map the region lower",
                            human(round_up(end, SMALL))
                        ),
                    ));
                }
                if let Some(other) = placed.iter().find(|p| p.start < end && io_map.ipa < p.end) {
                    return Err(self.error(
                        span,
                        &io_label,
                        format!(
                            "`{}` at ipa {:#x}..{end:#x} overlaps `{}` at {:#x}..{:#x} in the same IoSpace",
                            io_map.region, io_map.ipa, other.region, other.start, other.end
                        ),
                        format!("move one of them; {:#x} is free after `{}`", round_up(other.end, page), other.region),
                    ));
                }
                placed.push(Placed {
                    start: io_map.ipa,
                    end,
                    region: io_map.region.clone(),
                });
                push(
                    &mut system.io_maps,
                    IoMapping {
                        grant: index_u8(grant_index),
                        region: region_index,
                        ipa: io_map.ipa,
                        rights,
                    },
                );
            }
            if !entry.on_request && system.domains[usize::from(domain)].restarts > 0 {
                return Err(self.error(
                    span,
                    &label,
                    format!(
                        "domain \"{}\" has restarts, but this grant is made at boot: a restarted driver asks init for its devices again",
                        entry.domain
                    ),
                    "set on_request = true (the driver asks with sys::resources), or drop `restarts`",
                ));
            }
            let pasids = self.pasids(&span, &label, entry, platform)?;
            let mode = match entry.mode {
                ModeEntry::Stage2 => IoMode::Stage2,
                ModeEntry::Nested => IoMode::Nested,
            };
            push(
                &mut system.dma_grants,
                DmaGrant {
                    device,
                    domain,
                    iospace_size,
                    mode,
                    pasids,
                    fault_queue: entry.fault_queue,
                    on_request: entry.on_request,
                    msi: entry.msi,
                },
            );
        }
        Ok(())
    }

    fn pasids(
        &self,
        span: &Range<usize>,
        label: &str,
        entry: &GrantEntry,
        platform: &Platform,
    ) -> Result<sysdesc::heapless::Vec<u32, { sysdesc::MAX_PASIDS }>, ImageError> {
        let mut pasids = sysdesc::heapless::Vec::new();
        if entry.pasids.is_empty() {
            return Ok(pasids);
        }
        if platform.pasid_bits == 0 {
            return Err(self.error(
                span.clone(),
                label,
                format!("pasids {:?} but the {} platform delivers no PASID-tagged DMA", entry.pasids, platform.name),
                "remove pasids (QEMU's VT-d uses only RID_PASID and its SMMUv3 has no substreams), or list only platforms with pasid_bits > 0",
            ));
        }
        let limit = 1u64 << platform.pasid_bits;
        let mut sorted = entry.pasids.clone();
        sorted.sort_unstable();
        for (index, &pasid) in sorted.iter().enumerate() {
            if pasid == 0 || u64::from(pasid) >= limit {
                return Err(self.error(
                    span.clone(),
                    label,
                    format!("PASID {pasid} is outside 1..{limit} ({} bits; 0 is the requests without a PASID)", platform.pasid_bits),
                    format!("use PASIDs from 1 to {}", limit - 1),
                ));
            }
            if index > 0 && sorted[index - 1] == pasid {
                return Err(self.error(
                    span.clone(),
                    label,
                    format!("PASID {pasid} is listed twice"),
                    "list each PASID once",
                ));
            }
            if pasids.push(pasid).is_err() {
                return Err(self.error(
                    span.clone(),
                    label,
                    format!(
                        "{} PASIDs, init holds at most {}",
                        sorted.len(),
                        sysdesc::MAX_PASIDS
                    ),
                    format!("list at most {} PASIDs", sysdesc::MAX_PASIDS),
                ));
            }
        }
        Ok(pasids)
    }
}

/// Channel and IRQ ids claimed per domain, with what claimed them.
#[derive(Default)]
struct IdTable {
    claimed: Vec<(String, u8, String)>,
}

impl IdTable {
    fn claim(
        &mut self,
        checker: &Checker<'_>,
        span: &Range<usize>,
        label: &str,
        domain: &str,
        id: u32,
        owner: String,
    ) -> Result<u8, ImageError> {
        let Some(id) = u8::try_from(id)
            .ok()
            .filter(|&id| id <= sysdesc::MAX_CHANNEL_ID)
        else {
            return Err(checker.error(
                span.clone(),
                label,
                format!("id {id} in `{domain}` is above {}", sysdesc::MAX_CHANNEL_ID),
                format!(
                    "use ids 0..={} (one notification bit each)",
                    sysdesc::MAX_CHANNEL_ID
                ),
            ));
        };
        if let Some((_, _, other)) = self
            .claimed
            .iter()
            .find(|(d, i, _)| d == domain && *i == id)
        {
            let free = (0..=sysdesc::MAX_CHANNEL_ID).find(|candidate| {
                !self
                    .claimed
                    .iter()
                    .any(|(d, i, _)| d == domain && i == candidate)
            });
            return Err(checker.error(
                span.clone(),
                label,
                format!("id {id} in `{domain}` is already used by {other}"),
                match free {
                    Some(free) => format!("give it another id, e.g. {free}"),
                    None => "the domain has no id left".to_string(),
                },
            ));
        }
        self.claimed.push((domain.to_string(), id, owner));
        Ok(id)
    }
}

/// `value` rounded up to a whole number of `page`s (at least one), for fix
/// messages; the largest multiple of `page` when that would overflow.
fn round_up(value: u64, page: u64) -> u64 {
    value
        .max(1)
        .checked_next_multiple_of(page)
        .unwrap_or(u64::MAX - u64::MAX % page)
}

/// Pushes onto a list whose capacity `capacity` already checked.
fn push<T, const N: usize>(list: &mut sysdesc::heapless::Vec<T, N>, item: T) {
    if list.push(item).is_err() {
        unreachable!("Checker::capacity bounds every list");
    }
}

/// An index below a `MAX_*` capacity (all at most 64) as a `u8`.
fn index_u8(index: usize) -> u8 {
    u8::try_from(index).unwrap_or_else(|_| unreachable!("capacities are below 256"))
}
