//! Building the system a description asks for, out of init's Untypeds.
//!
//! Every capability a domain receives is first made (or copied) in init's
//! own CNode, then copied into the domain's CNode at the next free slot and
//! named in the domain's capability table; the names are listed in
//! `sys::names`. Region Frames stay in init's CNode; each mapping (CPU or
//! IO) uses its own copy, since a Frame capability copy holds one mapping.
//!
//! Errors are strings that name the image entry (`protection_domain
//! "server"`, `channel 2`, `dma_grant 0 (00:04.0)`) and what the kernel
//! answered.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use rt::space::{self, Objects, Scratch};
use sys::bootinfo;
use sys::names::{self, CapTable};
use sys::{
    CNode, Cap, CapType, Console, Endpoint, FixedSize, Frame, IommuControl, IrqControl, MapRights,
    Notification, ObjectKind, PageTable, Rights, Slot, Tcb, Untyped,
};
use sysdesc::archive::{Archive, EntryKind};
use sysdesc::{ChannelKind, ConsoleGrant, IoMode, PageSize, SystemDescription};

/// A page of init's own address space for filling Frames.
const SCRATCH: u64 = 0x10_0000_0000;
/// Each domain's CNode: `2^DOMAIN_CNODE_BITS` slots (CNodes come from the
/// 256 KiB arena, 32 bytes a slot; init's own takes 1024 of its 8192).
const DOMAIN_CNODE_BITS: u8 = 7;
const _: () = assert!(sys::names::DOMAIN_OWN_SLOTS.end == 1 << DOMAIN_CNODE_BITS);

// The window the host validator keeps images out of is where init puts
// the capability table, heap and stack.
const _: () = assert!(sys::names::DOMAIN_RESERVED_START == sysdesc::INIT_RESERVED_START);
const _: () = assert!(sys::names::CAP_TABLE_ADDRESS >= sysdesc::INIT_RESERVED_START);
const _: () = assert!(sys::names::HEAP_ADDRESS >= sysdesc::INIT_RESERVED_START);

/// A capability given to a domain: its name, init's slot holding it,
/// its kind.
pub(crate) type Gift = (String, Slot, ObjectKind);

/// A protection domain under construction.
pub(crate) struct Domain {
    /// Its name in the image, for messages.
    pub(crate) name: String,
    pub(crate) cnode: Cap<CNode>,
    pub(crate) vspace: Cap<PageTable>,
    pub(crate) tcb: Cap<Tcb>,
    ipc_buffer: Cap<Frame>,
    entry: u64,
    priority: u8,
    pub(crate) table: CapTable,
    /// The next free slot of its CNode (slot 0 stays empty).
    pub(crate) next_slot: u32,
    /// Where its IRQs arrive (made with its first IRQ), in init's CNode.
    irqs: Option<Cap<Notification>>,
    /// How many DMA grants it has received so far.
    grants: usize,
    /// Everything given to it, in order; the first `own_gifts` by
    /// `make_domain`, which a restart makes afresh; the rest (channels,
    /// IRQs, the request endpoint) a restart gives again.
    pub(crate) gifts: Vec<Gift>,
    pub(crate) own_gifts: usize,
    /// The slots of init's CNode holding what was made for it alone (its
    /// objects, Frame copies, page tables, capability table, badged fault
    /// endpoint): what a restart deletes (`Objects::record`).
    pub(crate) slots: Vec<Slot>,
}

impl Domain {
    /// Copies `source` (a capability in init's CNode) into the domain's
    /// CNode and names it `name` in its table.
    fn give<T: CapType>(
        &mut self,
        objects: &Objects,
        name: &str,
        source: Cap<T>,
    ) -> Result<(), String> {
        self.give_kind(objects, name, source.slot(), T::KIND)
    }

    /// [`Domain::give`] of the capability of kind `kind` in init's `source`.
    pub(crate) fn give_kind(
        &mut self,
        objects: &Objects,
        name: &str,
        source: Slot,
        kind: ObjectKind,
    ) -> Result<(), String> {
        let slot = self.next_slot;
        if slot >= names::DOMAIN_OWN_SLOTS.start {
            return Err(format!(
                "protection_domain \"{}\": the {} slots init fills in its CNode are used up (giving `{name}`)",
                self.name,
                names::DOMAIN_OWN_SLOTS.start
            ));
        }
        self.cnode
            .copy_from(Slot::new(slot), objects.cnode(), source, Rights::ALL)
            .map_err(|e| {
                format!(
                    "protection_domain \"{}\": copying `{name}` into its CNode: CNode.Copy answered {e:?}",
                    self.name
                )
            })?;
        self.table.push(name, Slot::new(slot), kind).map_err(|e| {
            format!(
                "protection_domain \"{}\": capability table: `{name}`: {e:?}",
                self.name
            )
        })?;
        self.next_slot += 1;
        self.gifts.push((String::from(name), source, kind));
        Ok(())
    }
}

/// What a started domain received: its name and capability table.
pub type Started = (String, CapTable);

/// The system once it runs.
#[derive(Debug)]
pub struct System {
    /// Each domain's name and capability table, in image order.
    pub domains: Vec<Started>,
    /// Where every domain's CPU faults arrive (in init's CNode), as
    /// `abi::FAULT_LABEL` messages badged with the domain's index + 1; also
    /// where domains send `sys::resources` requests (same badge).
    pub faults: Cap<Endpoint>,
    /// What answers those requests.
    pub requests: crate::requests::Server,
    /// What init needs to restart domains (`crate::restart`).
    pub restarts: crate::restart::Restarts,
}

impl System {
    /// The name of the domain whose fault came with `badge`.
    pub fn domain_of(&self, badge: u64) -> Option<&str> {
        let index = usize::try_from(badge.checked_sub(1)?).ok()?;
        Some(self.domains.get(index)?.0.as_str())
    }
}

/// Builds and starts every protection domain of `description`, with the
/// programs of `archive`.
pub fn build(
    archive: &Archive<'_>,
    description: &SystemDescription,
    objects: &mut Objects,
) -> Result<System, String> {
    check(description)?;
    let scratch = Scratch::for_root_task(objects, SCRATCH)
        .map_err(|e| format!("init's scratch page at {SCRATCH:#x}: {e:?}"))?;
    let faults: Cap<Endpoint> = objects
        .make::<Endpoint>()
        .map_err(|e| format!("init's fault endpoint: the kernel answered {e:?}"))?;
    let regions = make_regions(description, objects)?;
    let mut domains = Vec::new();
    for index in 0..description.domains.len() {
        domains.push(make_domain(
            archive,
            description,
            index,
            objects,
            &scratch,
            0,
        )?);
    }
    map_regions(description, &regions, &mut domains, objects)?;
    make_channels(description, &mut domains, objects)?;
    make_irqs(description, &mut domains, objects)?;
    let mut devices = crate::devices::Devices::default();
    make_dma_grants(
        description,
        &regions,
        &mut domains,
        objects,
        &mut devices,
        faults,
    )?;
    for (index, domain) in domains.iter_mut().enumerate() {
        prepare(domain, objects, &scratch)?;
        // The domain's faults come to init, badged with its index + 1.
        handle_faults(domain, index, objects, faults)?;
    }
    // Only now, with every capability in place, does any domain run.
    for domain in &domains {
        run(domain)?;
    }
    let handles = domains.iter().map(Domain::handle).collect();
    let mut requests =
        crate::requests::Server::new(description.clone(), regions.clone(), handles, devices);
    let restarts =
        crate::restart::Restarts::new(description, &domains, regions, scratch, objects, faults)?;
    if let Some(watched) = restarts.watched() {
        requests.watch_faults(watched);
    }
    Ok(System {
        domains: domains
            .into_iter()
            .map(|domain| (domain.name, domain.table))
            .collect(),
        faults,
        requests,
        restarts,
    })
}

impl Domain {
    /// What the request server keeps of it.
    pub(crate) fn handle(&self) -> crate::requests::DomainHandle {
        crate::requests::DomainHandle {
            name: self.name.clone(),
            cnode: self.cnode,
            vspace: self.vspace,
            next_slot: self.next_slot,
            devices: self.grants as u64,
        }
    }
}

/// Makes init the fault handler of `domain` (number `index`): its faults
/// come to `faults` badged with `index + 1`.
pub(crate) fn handle_faults(
    domain: &mut Domain,
    index: usize,
    objects: &mut Objects,
    faults: Cap<Endpoint>,
) -> Result<(), String> {
    let badged = objects
        .mint(faults, Rights::WRITE, index as u64 + 1)
        .map_err(|e| {
            format!(
                "protection_domain \"{}\": its fault endpoint: the kernel answered {e:?}",
                domain.name
            )
        })?;
    domain.slots.push(badged.slot());
    domain.tcb.set_fault_handler(badged).map_err(|e| {
        format!(
            "protection_domain \"{}\": its fault handler: the kernel answered {e:?}",
            domain.name
        )
    })
}

/// Names `domain`'s thread (for the kernel's console and capability dump)
/// and resumes it.
pub(crate) fn run(domain: &Domain) -> Result<(), String> {
    domain.tcb.set_debug_name(&domain.name).map_err(|e| {
        format!(
            "protection_domain \"{}\": DebugNameThread: the kernel answered {e:?}",
            domain.name
        )
    })?;
    domain.tcb.resume().map_err(|e| {
        format!(
            "protection_domain \"{}\": Tcb.Resume: the kernel answered {e:?}",
            domain.name
        )
    })
}

/// Checks what the host validator guarantees and init relies on, so that a
/// damaged or hand-made description is refused with the entry named rather
/// than panicking: every index points into its list, ids fit a badge bit,
/// regions are whole pages.
fn check(description: &SystemDescription) -> Result<(), String> {
    let domains = description.domains.len();
    let regions = description.regions.len();
    let domain_ok = |index: u8| usize::from(index) < domains;
    let region_ok = |index: u8| usize::from(index) < regions;
    let id_ok = |id: u8| id <= sysdesc::MAX_CHANNEL_ID;
    for (index, region) in description.regions.iter().enumerate() {
        let page = region.page_size.bytes();
        if region.size == 0 || !region.size.is_multiple_of(page) {
            return Err(format!(
                "memory_region {index} (\"{}\"): {} bytes is not a whole number of {page}-byte pages",
                region.name, region.size
            ));
        }
    }
    for (index, domain) in description.domains.iter().enumerate() {
        let size = domain.untyped_size;
        if size != 0
            && (!size.is_power_of_two()
                || !(sysdesc::MIN_UNTYPED_SIZE..=sysdesc::MAX_UNTYPED_SIZE).contains(&size))
        {
            return Err(format!(
                "protection_domain {index} (\"{}\"): an untyped of {size} bytes is not a power of two from {} to {}",
                domain.name,
                sysdesc::MIN_UNTYPED_SIZE,
                sysdesc::MAX_UNTYPED_SIZE
            ));
        }
    }
    for (index, map) in description.maps.iter().enumerate() {
        if !domain_ok(map.domain) || !region_ok(map.region) {
            return Err(format!(
                "map {index}: domain {} or region {} does not exist",
                map.domain, map.region
            ));
        }
    }
    for (index, channel) in description.channels.iter().enumerate() {
        if channel
            .ends
            .iter()
            .any(|end| !domain_ok(end.domain) || !id_ok(end.id))
        {
            return Err(format!(
                "channel {index}: an end names a domain that does not exist or an id above {}",
                sysdesc::MAX_CHANNEL_ID
            ));
        }
    }
    for (index, irq) in description.irqs.iter().enumerate() {
        if !domain_ok(irq.domain) || !id_ok(irq.id) {
            return Err(format!(
                "irq {index} (line {}): domain {} does not exist or id {} is above {}",
                irq.number,
                irq.domain,
                irq.id,
                sysdesc::MAX_CHANNEL_ID
            ));
        }
    }
    for (index, grant) in description.dma_grants.iter().enumerate() {
        if grant.on_request && !grant.pasids.is_empty() {
            return Err(format!(
                "dma_grant {index} (device {}): PASIDs of a grant made on request are not supported; drop `pasids` or `on_request`",
                grant.device
            ));
        }
        if !domain_ok(grant.domain) {
            return Err(format!(
                "dma_grant {index} (device {}): domain {} does not exist",
                grant.device, grant.domain
            ));
        }
    }
    for (index, io_map) in description.io_maps.iter().enumerate() {
        if usize::from(io_map.grant) >= description.dma_grants.len() || !region_ok(io_map.region) {
            return Err(format!(
                "io_map {index}: dma_grant {} or region {} does not exist",
                io_map.grant, io_map.region
            ));
        }
    }
    Ok(())
}

/// The Frames of every memory region, in init's CNode.
fn make_regions(
    description: &SystemDescription,
    objects: &mut Objects,
) -> Result<Vec<Vec<Cap<Frame>>>, String> {
    let mut regions = Vec::new();
    for region in &description.regions {
        let (bits, page) = match region.page_size {
            PageSize::Small => (12, 4 << 10),
            PageSize::Large => (21, 2 << 20),
        };
        let count = region.size / page;
        let mut frames = Vec::new();
        for index in 0..count {
            let frame = objects.make_sized::<Frame>(bits).map_err(|e| {
                format!(
                    "memory_region \"{}\": Frame {index} of {count}: Untyped.Retype answered {e:?}",
                    region.name
                )
            })?;
            frames.push(frame);
        }
        regions.push(frames);
    }
    Ok(regions)
}

/// One domain's CSpace, VSpace (program, stack, heap, IPC buffer) and TCB;
/// `start`: how many times init started it before (its table says so).
pub(crate) fn make_domain(
    archive: &Archive<'_>,
    description: &SystemDescription,
    index: usize,
    objects: &mut Objects,
    scratch: &Scratch,
    start: u64,
) -> Result<Domain, String> {
    objects.record();
    let pd = &description.domains[index];
    let what = |step: &str, e: sys::Error| {
        format!(
            "protection_domain \"{}\": {step}: the kernel answered {e:?}",
            pd.name
        )
    };
    let program = archive
        .find(EntryKind::Program, &pd.program)
        .map(|entry| archive.payload(&entry))
        .ok_or_else(|| {
            format!(
                "protection_domain \"{}\": program `{}` is not in the image (pack it with `cargo xtask pack`)",
                pd.name, pd.program
            )
        })?;
    let cnode: Cap<CNode> = objects
        .make_sized::<CNode>(DOMAIN_CNODE_BITS)
        .map_err(|e| what("its CNode", e))?;
    let vspace: Cap<PageTable> = objects
        .make::<PageTable>()
        .map_err(|e| what("its VSpace root", e))?;
    let entry = space::load_elf(objects, scratch, vspace, program).map_err(|e| {
        format!(
            "protection_domain \"{}\": program `{}`: {e}",
            pd.name, pd.program
        )
    })?;
    let pages = |bytes: u64| bytes.div_ceil(4096);
    for page in 1..=pages(pd.stack_size) {
        let address = names::STACK_TOP - page * 4096;
        fresh_page(objects, vspace, address, MapRights::READ_WRITE)
            .map_err(|e| what(&format!("stack page at {address:#x}"), e))?;
    }
    for page in 0..pages(pd.heap_size) {
        let address = names::HEAP_ADDRESS + page * 4096;
        fresh_page(objects, vspace, address, MapRights::READ_WRITE)
            .map_err(|e| what(&format!("heap page at {address:#x}"), e))?;
    }
    let ipc_buffer = fresh_page(
        objects,
        vspace,
        sys::ipc::IPC_BUFFER_ADDRESS,
        MapRights::READ_WRITE,
    )
    .map_err(|e| what("IPC buffer", e))?;
    let tcb: Cap<Tcb> = objects.make::<Tcb>().map_err(|e| what("its TCB", e))?;
    let mut domain = Domain {
        name: String::from(pd.name.as_str()),
        cnode,
        vspace,
        tcb,
        ipc_buffer,
        entry,
        priority: pd.priority,
        table: CapTable {
            heap_size: pd.heap_size,
            start,
            inject: pd.inject.code(),
            ..CapTable::new()
        },
        next_slot: 1,
        irqs: None,
        grants: 0,
        gifts: Vec::new(),
        own_gifts: 0,
        slots: Vec::new(),
    };
    if pd.untyped_size > 0 {
        // Memory of its own to build objects from, its CNode to place and
        // delete them and its VSpace to map them: the first names it gets.
        let bits = pd.untyped_size.trailing_zeros() as u8;
        let untyped: Cap<Untyped> = objects
            .make_sized::<Untyped>(bits)
            .map_err(|e| what(&format!("its {}-byte Untyped", pd.untyped_size), e))?;
        domain.give(objects, "untyped", untyped)?;
        domain.give(objects, "cnode", cnode)?;
        domain.give(objects, "vspace", vspace)?;
    }
    let console_rights = match pd.console {
        ConsoleGrant::None => None,
        ConsoleGrant::Write => Some(Rights::WRITE),
        ConsoleGrant::Halt => Some(Rights::WRITE | Rights::GRANT),
    };
    if let Some(rights) = console_rights {
        // A copy with only these rights in init's CNode, then given: the
        // domain's copy can never hold more.
        let slot = objects
            .slot()
            .map_err(|e| what("a slot for its Console", e))?;
        objects
            .cnode()
            .copy_from(slot, objects.cnode(), bootinfo::CONSOLE.slot(), rights)
            .map_err(|e| what("its Console (CNode.Copy)", e))?;
        let console: Cap<Console> = Cap::from_slot(slot);
        domain.give(objects, names::CONSOLE, console)?;
    }
    domain.own_gifts = domain.gifts.len();
    domain.slots = objects.recorded();
    Ok(domain)
}

/// A zeroed 4 KiB Frame mapped at `address` of `space`.
fn fresh_page(
    objects: &mut Objects,
    space: Cap<PageTable>,
    address: u64,
    rights: MapRights,
) -> Result<Cap<Frame>, sys::Error> {
    let frame: Cap<Frame> = objects.make_sized::<Frame>(12)?;
    space::map_frame(objects, frame, space, address, rights)?;
    Ok(frame)
}

/// The CPU rights of an image's perms.
fn cpu_rights(rights: sysdesc::Rights) -> MapRights {
    MapRights::from_bits(
        u64::from(rights.read) | u64::from(rights.write) << 1 | u64::from(rights.execute) << 2,
    )
}

/// Every `[[protection_domain.map]]`: a copy of each of the region's
/// Frames mapped at consecutive pages from `vaddr`.
fn map_regions(
    description: &SystemDescription,
    regions: &[Vec<Cap<Frame>>],
    domains: &mut [Domain],
    objects: &mut Objects,
) -> Result<(), String> {
    for (index, map) in description.maps.iter().enumerate() {
        map_region(
            description,
            regions,
            index,
            &mut domains[usize::from(map.domain)],
            objects,
        )?;
    }
    Ok(())
}

/// `[[protection_domain.map]]` number `index`, into `domain`.
pub(crate) fn map_region(
    description: &SystemDescription,
    regions: &[Vec<Cap<Frame>>],
    index: usize,
    domain: &mut Domain,
    objects: &mut Objects,
) -> Result<(), String> {
    objects.record();
    let map = &description.maps[index];
    let region = &description.regions[usize::from(map.region)];
    let page = region.page_size.bytes();
    for (k, &frame) in regions[usize::from(map.region)].iter().enumerate() {
        let address = map.vaddr + k as u64 * page;
        let result = objects.mint(frame, Rights::ALL, 0).and_then(|copy| {
            space::map_frame(
                objects,
                copy,
                domain.vspace,
                address,
                cpu_rights(map.rights),
            )
        });
        result.map_err(|e| {
            format!(
                "protection_domain \"{}\" map {index}: `{}` page {k} at {address:#x} ({}): the kernel answered {e:?}",
                domain.name, region.name, map.rights
            )
        })?;
    }
    domain.slots.extend(objects.recorded());
    Ok(())
}

/// Every `[[channel]]`: an Endpoint the first end calls and the second
/// receives on, or a Notification the first end signals and the second
/// waits on; the first end's copy carries the second end's badge.
fn make_channels(
    description: &SystemDescription,
    domains: &mut [Domain],
    objects: &mut Objects,
) -> Result<(), String> {
    for (index, channel) in description.channels.iter().enumerate() {
        let [first, second] = &channel.ends;
        let kind = match channel.kind {
            ChannelKind::Endpoint => "endpoint",
            ChannelKind::Notification => "notification",
        };
        let what = format!(
            "channel {index} ({kind} \"{}\" id {} -> \"{}\" id {})",
            domains[usize::from(first.domain)].name,
            first.id,
            domains[usize::from(second.domain)].name,
            second.id
        );
        let fail = |step: &str, e: sys::Error| format!("{what}: {step}: the kernel answered {e:?}");
        match channel.kind {
            ChannelKind::Endpoint => make_channel::<Endpoint>(domains, objects, channel, &fail)?,
            ChannelKind::Notification => {
                make_channel::<Notification>(domains, objects, channel, &fail)?
            }
        }
    }
    Ok(())
}

/// One channel's object of kind `T` (an Endpoint or a Notification): the
/// first end gets a copy carrying the second end's badge, the second end
/// the object itself.
fn make_channel<T: FixedSize>(
    domains: &mut [Domain],
    objects: &mut Objects,
    channel: &sysdesc::Channel,
    fail: &dyn Fn(&str, sys::Error) -> String,
) -> Result<(), String> {
    let retype = match channel.kind {
        ChannelKind::Endpoint => "retype the endpoint",
        ChannelKind::Notification => "retype the notification",
    };
    let object = objects.make::<T>().map_err(|e| fail(retype, e))?;
    let [first, second] = &channel.ends;
    let badged = objects
        .mint(object, Rights::ALL, second.badge)
        .map_err(|e| fail("mint the first end's badged copy", e))?;
    for (end, cap) in [(first, badged), (second, object)] {
        let name = format!("channel{}", end.id);
        domains[usize::from(end.domain)].give(objects, &name, cap)?;
    }
    Ok(())
}

/// Every `[[irq]]`: an IrqHandler for the line, signalling the domain's
/// `irqs` notification with bit `1 << id`.
fn make_irqs(
    description: &SystemDescription,
    domains: &mut [Domain],
    objects: &mut Objects,
) -> Result<(), String> {
    let control: Cap<IrqControl> = bootinfo::IRQ_CONTROL;
    for (index, irq) in description.irqs.iter().enumerate() {
        let domain = &mut domains[usize::from(irq.domain)];
        let name = domain.name.clone();
        let fail = |step: &str, e: sys::Error| {
            format!(
                "irq {index} (line {} for protection_domain \"{name}\", id {}): {step}: the kernel answered {e:?}",
                irq.number, irq.id
            )
        };
        let notification = match domain.irqs {
            Some(notification) => notification,
            None => {
                let made: Cap<Notification> = objects
                    .make::<Notification>()
                    .map_err(|e| fail("retype the domain's irq notification", e))?;
                domain.give(objects, "irqs", made)?;
                domain.irqs = Some(made);
                made
            }
        };
        let slot = objects.slot().map_err(|e| fail("a slot", e))?;
        let handler = control
            .get(u64::from(irq.number), slot)
            .map_err(|e| fail("IrqControl.Get", e))?;
        let badged = objects
            .mint(notification, Rights::ALL, 1 << irq.id)
            .map_err(|e| fail("mint the badged notification", e))?;
        handler
            .set_notification(badged)
            .map_err(|e| fail("IrqHandler.SetNotification", e))?;
        domain.give(objects, &format!("irq{}", irq.id), handler)?;
    }
    Ok(())
}

/// Every `[[dma_grant]]`: the device's IoDevice (`IommuControl.MintDevice`),
/// an IoSpace (`Untyped.Retype` with the IommuControl) with the grant's
/// `io_map` regions mapped, the device attached to it in `stage2` mode (in
/// `nested` mode the driver attaches its own stage-1 table), its PASIDs and
/// fault queue.
fn make_dma_grants(
    description: &SystemDescription,
    regions: &[Vec<Cap<Frame>>],
    domains: &mut [Domain],
    objects: &mut Objects,
    devices: &mut crate::devices::Devices,
    requests: Cap<Endpoint>,
) -> Result<(), String> {
    let control: Cap<IommuControl> = bootinfo::IOMMU_CONTROL;
    for (index, grant) in description.dma_grants.iter().enumerate() {
        let domain = &mut domains[usize::from(grant.domain)];
        if grant.on_request {
            // Built when the domain asks (`requests`); it gets the
            // endpoint to ask through, once.
            if domain.table.find("init").is_none() {
                // Send only: no grant right, so a request can never drop a
                // capability into init's CNode (the kernel alone sends the
                // fault label, so a request cannot pose as a fault either).
                let badged = objects
                    .mint(requests, Rights::WRITE, u64::from(grant.domain) + 1)
                    .map_err(|e| {
                        format!(
                            "dma_grant {index} (device {}): the request endpoint for protection_domain \"{}\": the kernel answered {e:?}",
                            grant.device, domain.name
                        )
                    })?;
                domain.give(objects, "init", badged)?;
            }
            continue;
        }
        let number = domain.grants;
        let name = domain.name.clone();
        let fail = |step: &str, e: sys::Error| {
            format!(
                "dma_grant {index} (device {} for protection_domain \"{name}\"): {step}: the kernel answered {e:?}",
                grant.device
            )
        };
        let slot = objects.slot().map_err(|e| fail("a slot", e))?;
        let device = control
            .mint_device(u32::from(grant.device.requester_id()), slot)
            .map_err(|e| fail("IommuControl.MintDevice", e))?;
        let io_space = objects
            .make_io_space(control)
            .map_err(|e| fail("Untyped.Retype of the IoSpace", e))?;
        // This IoSpace lives as long as the system: its copies are not
        // kept for another.
        map_io_regions(
            description,
            regions,
            index,
            io_space,
            &mut Vec::new(),
            objects,
        )
        .map_err(|(step, e)| fail(&step, e))?;
        let registers =
            names::DEVICE_REGISTERS_ADDRESS + number as u64 * names::DEVICE_REGISTERS_STRIDE;
        devices
            .map_registers(objects, grant.device, domain.vspace, registers)
            .map_err(|e| format!("dma_grant {index} (for protection_domain \"{name}\"): {e}"))?;
        if grant.mode == IoMode::Stage2 {
            device
                .attach(io_space)
                .map_err(|e| fail("IoDevice.Attach", e))?;
        }
        for &pasid in &grant.pasids {
            let slot = objects.slot().map_err(|e| fail("a slot", e))?;
            let cap = device
                .mint_pasid(pasid, slot)
                .map_err(|e| fail(&format!("IoDevice.MintPasid {pasid}"), e))?;
            domain.give(objects, &format!("device{number}.pasid{pasid}"), cap)?;
        }
        if grant.fault_queue {
            let queue: Cap<sys::IoFaultQueue> = objects
                .make::<sys::IoFaultQueue>()
                .map_err(|e| fail("Untyped.Retype of the IoFaultQueue", e))?;
            let signal: Cap<Notification> = objects
                .make::<Notification>()
                .map_err(|e| fail("Untyped.Retype of the fault notification", e))?;
            queue
                .bind(signal, device)
                .map_err(|e| fail("IoFaultQueue.Bind", e))?;
            domain.give(objects, &format!("faults{number}"), queue)?;
            domain.give(objects, &format!("faults{number}.signal"), signal)?;
        }
        domain.give(objects, &format!("device{number}"), device)?;
        domain.give(objects, &format!("iospace{number}"), io_space)?;
        domain.grants += 1;
    }
    Ok(())
}

/// Maps every `io_map` region of grant `grant` into `io_space` at its IPA,
/// one Frame copy per page: the n-th page through `copies[n]`, minted and
/// pushed when `copies` has none yet. A copy holds one mapping, so the
/// copies passed must hold none (the teardown of the IoSpace they were
/// mapped in took theirs away). An error names the step.
pub(crate) fn map_io_regions(
    description: &SystemDescription,
    regions: &[Vec<Cap<Frame>>],
    grant: usize,
    io_space: Cap<sys::IoSpace>,
    copies: &mut Vec<Cap<Frame>>,
    objects: &mut Objects,
) -> Result<(), (String, sys::Error)> {
    let mut page = 0;
    for io_map in description
        .io_maps
        .iter()
        .filter(|io_map| usize::from(io_map.grant) == grant)
    {
        let region = &description.regions[usize::from(io_map.region)];
        let page_size = region.page_size.bytes();
        for (k, &frame) in regions[usize::from(io_map.region)].iter().enumerate() {
            let ipa = io_map.ipa + k as u64 * page_size;
            let rights = cpu_rights(sysdesc::Rights {
                execute: false,
                ..io_map.rights
            });
            let step = || format!("IoSpace.Map of `{}` page {k} at IPA {ipa:#x}", region.name);
            let copy = match copies.get(page) {
                Some(&copy) => copy,
                None => {
                    let copy = objects
                        .mint(frame, Rights::ALL, 0)
                        .map_err(|e| (format!("{}: a copy of the Frame", step()), e))?;
                    copies.push(copy);
                    copy
                }
            };
            io_space.map(copy, ipa, rights).map_err(|e| (step(), e))?;
            page += 1;
        }
    }
    Ok(())
}

/// Writes the domain's capability table into a read-only page and
/// configures its TCB (registers, priority); resuming it is left to the end.
pub(crate) fn prepare(
    domain: &mut Domain,
    objects: &mut Objects,
    scratch: &Scratch,
) -> Result<(), String> {
    let name = domain.name.clone();
    let fail = |step: &str, e: sys::Error| {
        format!("protection_domain \"{name}\": {step}: the kernel answered {e:?}")
    };
    objects.record();
    let table = scratch
        .filled_frame(objects, &domain.table.to_bytes())
        .and_then(|table| {
            space::map_frame(
                objects,
                table,
                domain.vspace,
                names::CAP_TABLE_ADDRESS,
                MapRights::READ,
            )
        });
    domain.slots.extend(objects.recorded());
    table.map_err(|e| fail("the capability table page", e))?;
    domain
        .tcb
        .configure(
            None,
            domain.cnode,
            domain.vspace,
            domain.ipc_buffer,
            sys::ipc::IPC_BUFFER_ADDRESS,
        )
        .map_err(|e| fail("Tcb.Configure", e))?;
    domain
        .tcb
        .write_registers(domain.entry, names::STACK_TOP, names::CAP_TABLE_ADDRESS)
        .map_err(|e| fail("Tcb.WriteRegisters", e))?;
    domain
        .tcb
        .set_priority(domain.priority)
        .map_err(|e| fail("Tcb.SetPriority", e))?;
    rt::println!(
        "[init] protection domain \"{}\": entry {:#x}, priority {}, {} named capabilities",
        domain.name,
        domain.entry,
        domain.priority,
        domain.table.count
    );
    Ok(())
}
