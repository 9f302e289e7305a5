//! Does the live system match the image it was booted from?
//! [`check_against`] compares a [`LiveDump`] with a validated [`Image`] and
//! lists every difference, each naming the image entry, what the dump
//! shows and what to look at.
//!
//! What is checked (and only this; the dump is taken once init has started
//! every domain and before any of them ran):
//!
//! 1. **Domains**: every protection domain is a TCB of that name with a
//!    CSpace and a VSpace, and the root task (`init`) is one too.
//! 2. **Maps**: every page of every `[[protection_domain.map]]` is a Frame
//!    of the region's page size mapped (`cpu=`) in that domain's VSpace at
//!    `vaddr + k * page`, readable, and writable exactly when the map says
//!    `w`.
//! 3. **Sharing**: every map and IO map of one region shows the same Frame
//!    objects page by page (the domains and devices really share memory).
//! 4. **Channels**: for each channel an object of its kind (Endpoint or
//!    Notification) that the first end holds badged with the second end's
//!    badge and the second end holds unbadged; each channel its own object.
//! 5. **IRQs**: the domain holds an IrqHandler for the line.
//! 6. **DMA grants**, the IoDevice found by requester id:
//!    - no domain but the granted one holds it (init may), nor the IoSpace;
//!    - built at boot (not `on_request`): the domain holds the IoDevice; in
//!      `stage2` mode it is attached to an IoSpace the domain holds; every
//!      page of every `io_map` is a Frame mapped (`io=`) in one IoSpace the
//!      domain holds at `ipa + k * page`, readable, writable exactly when
//!      the io_map says `w`; with `fault_queue` the device reports to an
//!      IoFaultQueue the domain holds; each PASID is an IoPasid of the
//!      device the domain holds;
//!    - `on_request`: only the exclusivity above (init builds the rest
//!      when the domain asks, after the dump).

use std::collections::HashMap;

use sysdesc::{ChannelKind, IoMode, Rights as ImageRights};

use super::{Details, Holder, Kind, LiveDump, ROOT_TASK, Rights};
use crate::size::human;
use crate::validate::Image;

/// Whether mapping rights `live` are what image perms `image` ask for:
/// readable, and writable exactly when the image says `w`.
fn rights_match(live: Rights, image: ImageRights) -> bool {
    live.read && live.write == image.write
}

/// Who used which Frames for a region, page by page.
type Pages = Vec<Option<u64>>;

struct Checker<'a> {
    dump: &'a LiveDump,
    image: &'a Image,
    found: Vec<String>,
    /// Region index -> (who, the Frame of each page).
    region_pages: HashMap<usize, Vec<(String, Pages)>>,
}

/// Every difference between `dump` and `image` (empty when they agree);
/// the module documentation lists what is compared.
pub fn check_against(dump: &LiveDump, image: &Image) -> Vec<String> {
    let mut checker = Checker {
        dump,
        image,
        found: Vec::new(),
        region_pages: HashMap::new(),
    };
    checker.domains();
    checker.maps();
    checker.channels();
    checker.irqs();
    checker.grants();
    checker.sharing();
    checker.found
}

impl Checker<'_> {
    fn report(&mut self, message: String) {
        self.found.push(message);
    }

    /// The dump's domain for image domain `index`, if it exists.
    fn domain(&self, index: u8) -> Option<usize> {
        let name = self
            .image
            .system
            .domains
            .get(usize::from(index))?
            .name
            .as_str();
        self.dump.domain(name)
    }

    fn domain_name(&self, index: u8) -> &str {
        self.image
            .system
            .domains
            .get(usize::from(index))
            .map_or("?", |domain| domain.name.as_str())
    }

    fn domains(&mut self) {
        if self.dump.domain(ROOT_TASK).is_none() {
            self.report(format!(
                "init: no Tcb named `{ROOT_TASK}` in the dump; the kernel must name the root task's TCB `{ROOT_TASK}`"
            ));
        }
        for index in 0..self.image.system.domains.len() {
            let name = self.image.system.domains[index].name.as_str().to_string();
            match self.dump.domain(&name) {
                None => self.report(format!(
                    "protection_domain \"{name}\": no Tcb named `{name}` in the dump (init did not create it, or the kernel names its TCB otherwise)"
                )),
                Some(found) => {
                    let domain = &self.dump.domains[found];
                    if domain.cnode.is_none() || domain.vspace.is_none() {
                        self.report(format!(
                            "protection_domain \"{name}\": Tcb #{} has {} (init configures both before starting it)",
                            domain.tcb,
                            match (domain.cnode, domain.vspace) {
                                (None, None) => "no CSpace and no VSpace",
                                (None, Some(_)) => "no CSpace",
                                _ => "no VSpace",
                            }
                        ));
                    }
                }
            }
        }
    }

    /// The Frames mapped at `count` pages of `page` bytes from `start`,
    /// found by `mapped(cap) -> Option<(address, rights)>`; reports
    /// missing pages, other sizes and other rights for `what`.
    fn pages(
        &mut self,
        what: &str,
        start: u64,
        count: u64,
        page: u64,
        perms: ImageRights,
        mapped: impl Fn(&super::Capability) -> Option<(u64, Rights)>,
    ) -> Pages {
        let mut at: HashMap<u64, (u64, Rights)> = HashMap::new();
        for cap in &self.dump.caps {
            if let Some((address, rights)) = mapped(cap) {
                at.insert(address, (cap.object, rights));
            }
        }
        let mut pages = Vec::new();
        let mut missing = Vec::new();
        for k in 0..count {
            let address = start + k * page;
            let Some(&(object, rights)) = at.get(&address) else {
                missing.push(address);
                pages.push(None);
                continue;
            };
            pages.push(Some(object));
            let size = self.dump.object(object).map(|o| (o.kind, o.size()));
            if size != Some((Kind::Frame, page)) {
                self.report(format!(
                    "{what}: at {address:#x} is object #{object} ({}), not a {} Frame",
                    size.map_or_else(
                        || "unknown".to_string(),
                        |(kind, bytes)| format!("{kind:?} of {}", human(bytes))
                    ),
                    human(page)
                ));
            }
            if !rights_match(rights, perms) {
                self.report(format!(
                    "{what}: the page at {address:#x} is mapped {rights}, but the image says perms = \"{perms}\""
                ));
            }
        }
        if let Some(first) = missing.first() {
            self.report(format!(
                "{what}: {} of {count} pages ({} each) are not mapped, the first at {first:#x}",
                missing.len(),
                human(page)
            ));
        }
        pages
    }

    fn maps(&mut self) {
        let system = &self.image.system;
        for map in &system.maps {
            let region = &system.regions[usize::from(map.region)];
            let name = self.domain_name(map.domain).to_string();
            let Some(vspace) = self
                .domain(map.domain)
                .and_then(|index| self.dump.domains[index].vspace)
            else {
                continue; // reported by `domains`
            };
            let page = region.page_size.bytes();
            let what = format!(
                "protection_domain \"{name}\" map of `{}` at {:#x} ({}, perms \"{}\")",
                region.name,
                map.vaddr,
                human(region.size),
                map.rights
            );
            let pages = self.pages(
                &what,
                map.vaddr,
                region.size / page,
                page,
                map.rights,
                |cap| {
                    let cpu = cap.cpu?;
                    (cpu.vspace == vspace).then_some((cpu.vaddr, cpu.rights))
                },
            );
            self.region_pages
                .entry(usize::from(map.region))
                .or_default()
                .push((format!("`{name}`"), pages));
        }
    }

    /// The objects `holder` holds capabilities to, with each capability's badge.
    fn held(&self, holder: Holder, kind: Kind) -> Vec<(u64, u64)> {
        self.dump
            .held_by(holder)
            .filter(|(_, object)| object.kind == kind)
            .map(|(cap, object)| (object.id, cap.badge))
            .collect()
    }

    fn channels(&mut self) {
        let mut used: Vec<u64> = Vec::new();
        for (index, channel) in self.image.system.channels.iter().enumerate() {
            let [first, second] = &channel.ends;
            let (kind, word) = match channel.kind {
                ChannelKind::Endpoint => (Kind::Endpoint, "endpoint"),
                ChannelKind::Notification => (Kind::Notification, "notification"),
            };
            let what = format!(
                "channel {index} ({word} \"{}\" id {} -> \"{}\" id {})",
                self.domain_name(first.domain),
                first.id,
                self.domain_name(second.domain),
                second.id
            );
            let (Some(a), Some(b)) = (self.domain(first.domain), self.domain(second.domain)) else {
                continue;
            };
            let callers = self.held(Holder::Domain(a), kind);
            let receivers = self.held(Holder::Domain(b), kind);
            let shared = callers.iter().find(|&&(object, badge)| {
                badge == second.badge && !used.contains(&object) && receivers.contains(&(object, 0))
            });
            match shared {
                Some(&(object, _)) => used.push(object),
                None => self.report(format!(
                    "{what}: no {kind:?} that \"{}\" holds with badge {:#x} and \"{}\" holds unbadged ({} holds {} {kind:?} caps, {} holds {})",
                    self.domain_name(first.domain),
                    second.badge,
                    self.domain_name(second.domain),
                    self.domain_name(first.domain),
                    callers.len(),
                    self.domain_name(second.domain),
                    receivers.len()
                )),
            }
        }
    }

    fn irqs(&mut self) {
        for irq in &self.image.system.irqs {
            let Some(domain) = self.domain(irq.domain) else {
                continue;
            };
            let held = self.dump.held_by(Holder::Domain(domain)).any(|(_, object)| {
                matches!(object.details, Details::IrqHandler { line: Some(line) } if line == u64::from(irq.number))
            });
            if !held {
                self.report(format!(
                    "irq {} (protection_domain \"{}\", id {}): the domain holds no IrqHandler for line {}",
                    irq.number,
                    self.domain_name(irq.domain),
                    irq.id,
                    irq.number
                ));
            }
        }
    }

    /// Domains other than `allowed` and init that hold a capability to `object`.
    fn other_holders(&self, object: u64, allowed: usize) -> Vec<String> {
        let init = self.dump.domain(ROOT_TASK);
        let mut others: Vec<String> = self
            .dump
            .caps
            .iter()
            .filter(|cap| cap.object == object)
            .filter(|cap| match cap.holder {
                Holder::Domain(index) => index != allowed && Some(index) != init,
                Holder::CNode(_) | Holder::Nowhere => true,
                Holder::Kernel => false,
            })
            .map(|cap| {
                format!(
                    "`{}` (slot {})",
                    self.dump.holder_name(cap.holder),
                    cap.slot
                )
            })
            .collect();
        others.dedup();
        others
    }

    fn grants(&mut self) {
        let system = &self.image.system;
        for (grant_index, grant) in system.dma_grants.iter().enumerate() {
            let name = self.domain_name(grant.domain).to_string();
            let rid = u64::from(grant.device.requester_id());
            let what = format!(
                "dma_grant {grant_index} (device {}, requester id {rid:#06x}, to \"{name}\")",
                grant.device
            );
            let Some(domain) = self.domain(grant.domain) else {
                continue;
            };
            let holder = Holder::Domain(domain);
            let devices: Vec<u64> = self
                .dump
                .objects
                .iter()
                .filter(|o| matches!(o.details, Details::IoDevice { rid: Some(r), .. } if r == rid))
                .map(|o| o.id)
                .collect();
            for &device in &devices {
                let others = self.other_holders(device, domain);
                if !others.is_empty() {
                    self.report(format!(
                        "{what}: IoDevice #{device} is also held by {}; the image gives the device to \"{name}\" alone",
                        others.join(", ")
                    ));
                }
            }
            let held: Vec<u64> = self
                .held(holder, Kind::IoDevice)
                .into_iter()
                .map(|(object, _)| object)
                .filter(|object| devices.contains(object))
                .collect();
            let spaces: Vec<u64> = self
                .held(holder, Kind::IoSpace)
                .into_iter()
                .map(|(object, _)| object)
                .collect();
            if grant.on_request {
                for &space in &spaces {
                    let others = self.other_holders(space, domain);
                    if !others.is_empty() {
                        self.report(format!(
                            "{what}: IoSpace #{space} is also held by {}",
                            others.join(", ")
                        ));
                    }
                }
                continue;
            }
            let Some(&device) = held.first() else {
                self.report(format!(
                    "{what}: \"{name}\" holds no IoDevice with requester id {rid:#06x} ({} in the dump); init mints it at boot unless on_request = true",
                    devices.len()
                ));
                continue;
            };
            let Some(Details::IoDevice {
                space: attached,
                faults,
                ..
            }) = self.dump.object(device).map(|o| o.details.clone())
            else {
                continue;
            };
            if grant.mode == IoMode::Stage2 {
                match attached {
                    Some(space) if spaces.contains(&space) => {}
                    Some(space) => self.report(format!(
                        "{what}: IoDevice #{device} is attached to IoSpace #{space}, which \"{name}\" does not hold"
                    )),
                    None => self.report(format!(
                        "{what}: IoDevice #{device} is not attached (space=-), but in stage2 mode init attaches it to the grant's IoSpace"
                    )),
                }
            }
            // The grant's IoSpace: the attached one, else the domain's.
            let candidates: Vec<u64> = match attached {
                Some(space) if spaces.contains(&space) => vec![space],
                _ => spaces.clone(),
            };
            self.io_maps(&what, grant_index, &candidates);
            for &space in &candidates {
                let others = self.other_holders(space, domain);
                if !others.is_empty() {
                    self.report(format!(
                        "{what}: IoSpace #{space} is also held by {}; only \"{name}\" may program the device's translation",
                        others.join(", ")
                    ));
                }
            }
            if grant.fault_queue {
                let queues: Vec<u64> = self
                    .held(holder, Kind::IoFaultQueue)
                    .into_iter()
                    .map(|(object, _)| object)
                    .collect();
                match faults {
                    Some(queue) if queues.contains(&queue) => {}
                    Some(queue) => self.report(format!(
                        "{what}: IoDevice #{device} reports faults to IoFaultQueue #{queue}, which \"{name}\" does not hold"
                    )),
                    None => self.report(format!(
                        "{what}: fault_queue = true, but IoDevice #{device} reports faults to no queue (faults=-)"
                    )),
                }
            }
            for &pasid in &grant.pasids {
                let held = self.dump.held_by(holder).any(|(_, object)| {
                    matches!(object.details, Details::IoPasid { device: Some(d), pasid: Some(p), .. } if d == device && p == u64::from(pasid))
                });
                if !held {
                    self.report(format!(
                        "{what}: \"{name}\" holds no IoPasid {pasid} of IoDevice #{device}"
                    ));
                }
            }
        }
    }

    /// The io_maps of grant `grant_index`, in whichever of `candidates`
    /// (IoSpaces the domain holds) maps most of their pages.
    fn io_maps(&mut self, what: &str, grant_index: usize, candidates: &[u64]) {
        let system = &self.image.system;
        let io_maps: Vec<_> = system
            .io_maps
            .iter()
            .filter(|m| usize::from(m.grant) == grant_index)
            .cloned()
            .collect();
        if io_maps.is_empty() {
            return;
        }
        let Some(&space) = candidates.iter().max_by_key(|&&space| {
            self.dump
                .caps
                .iter()
                .filter(|cap| cap.io.is_some_and(|io| io.space == space))
                .count()
        }) else {
            self.report(format!(
                "{what}: the domain holds no IoSpace, but the image maps {} region(s) for DMA",
                io_maps.len()
            ));
            return;
        };
        for io_map in io_maps {
            let region = &system.regions[usize::from(io_map.region)];
            let page = region.page_size.bytes();
            let detail = format!(
                "{what} io_map of `{}` at IPA {:#x} in IoSpace #{space} (perms \"{}\")",
                region.name, io_map.ipa, io_map.rights
            );
            let pages = self.pages(
                &detail,
                io_map.ipa,
                region.size / page,
                page,
                io_map.rights,
                |cap| {
                    let io = cap.io?;
                    (io.space == space).then_some((io.ipa, io.rights))
                },
            );
            self.region_pages
                .entry(usize::from(io_map.region))
                .or_default()
                .push((format!("IoSpace #{space}"), pages));
        }
    }

    fn sharing(&mut self) {
        let mut regions: Vec<_> = std::mem::take(&mut self.region_pages).into_iter().collect();
        regions.sort_by_key(|(region, _)| *region);
        for (region, users) in regions {
            let name = self.image.system.regions[region].name.as_str().to_string();
            let Some((first_user, first_pages)) = users.first() else {
                continue;
            };
            for (user, pages) in &users[1..] {
                let differs = first_pages
                    .iter()
                    .zip(pages)
                    .enumerate()
                    .find(|(_, (a, b))| matches!((a, b), (Some(a), Some(b)) if a != b));
                if let Some((page, (Some(a), Some(b)))) = differs {
                    self.report(format!(
                        "memory_region \"{name}\": page {page} is Frame #{a} for {first_user} but Frame #{b} for {user}; they must share the region's Frames"
                    ));
                }
            }
        }
    }
}
