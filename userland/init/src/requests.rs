//! Init's answers to `sys::resources` requests: IOMMU capabilities handed
//! out at run time, each checked against the image's `[[dma_grant]]`s with
//! `on_request = true` (which domain may have which device, how large an
//! IoSpace), each answer or refusal printed as a sentence.
//!
//! Every capability is made in init's CNode and copied into the asking
//! domain's CNode at its next free slot, which the reply names; init keeps
//! the originals, so handing an IoSpace back (`RETURN_SPACE`) lets init
//! revoke it and delete its own copy: the IoSpace dies, its device is
//! blocked and every IO mapping is gone before init replies.
//!
//! A domain may ask for an IoSpace and hand it back without end, so what a
//! grant's IoSpace needs is made at its first `SPACE` and reused by every
//! later one ([`SpaceStock`]): its memory, its Frame copies, the domain's
//! slot; init's slot comes back through `Objects::delete`. After the first
//! cycle a `SPACE` / `RETURN_SPACE` pair costs init nothing (the host test
//! `requests::tests` runs 10,000 of them against the capability model).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use rt::space::Objects;
use sys::bootinfo;
use sys::resources::{self, Refusal};
use sys::{
    CNode, Cap, CapType, Frame, IoDevice, IoFaultQueue, IoSpace, IommuControl, IrqControl,
    IrqHandler, Notification, PageTable, Rights, Slot, Untyped,
};
use sysdesc::SystemDescription;

use crate::devices::Devices;

/// What init keeps of a domain to hand it capabilities later.
#[derive(Debug)]
pub struct DomainHandle {
    /// Its name in the image.
    pub name: String,
    /// Its CSpace root.
    pub cnode: Cap<CNode>,
    /// Its VSpace root.
    pub vspace: Cap<PageTable>,
    /// The next slot of its CNode init may fill.
    pub next_slot: u32,
    /// How many devices it holds (its next register window).
    pub devices: u64,
}

/// An IoSpace is one 4 KiB page (`caps`: `NewObject::IoSpace`).
const IO_SPACE_BITS: u8 = 12;

/// What init gave for one grant (its own copies).
#[derive(Debug, Default, Clone)]
struct Given {
    /// The device capability as minted, and the badged copy queues bind to.
    device: Option<(Cap<IoDevice>, Cap<IoDevice>)>,
    space: Option<Cap<IoSpace>>,
    /// What the grant's IoSpaces are made of, from its first `SPACE` on.
    stock: Option<SpaceStock>,
    /// The fault queue and the notification it signals, from
    /// `FAULT_QUEUE` on (an MSI line signals that notification too).
    queue: Option<(Cap<IoFaultQueue>, Cap<Notification>)>,
    /// The MSI line's handler, from `MSI` on.
    msi: Option<Cap<IrqHandler>>,
    /// The device's number among the domain's (its register and BAR
    /// windows), from `DEVICE` on.
    number: u64,
    /// The BARs mapped with `BAR`, bit per index.
    bars: u8,
    /// The domain's slots of the IoDevice and of the fault queue and its
    /// Notification, for `sys::status` (`status.rs`).
    slots: status::Slots,
}

/// What init keeps of a grant's IoSpace from one `SPACE` to the next, so
/// that asking for an IoSpace and handing it back costs init nothing after
/// the first time (each cycle once cost a slot of init's, 4 KiB of Untyped,
/// a Frame copy per `io_map` page and a slot of the domain's, for good).
#[derive(Debug, Clone)]
struct SpaceStock {
    /// 4 KiB of Untyped that only ever holds this grant's IoSpace. With the
    /// IoSpace deleted nothing carved from it is alive, so the kernel
    /// carves the next one from its first byte again (an Untyped's
    /// watermark restarts when none of its objects lives: `caps`,
    /// `Caps::retype`). Carved from init's RAM Untypeds instead, IoSpaces
    /// would push their watermark up for good, since init's other objects
    /// there never die.
    memory: Cap<Untyped>,
    /// One Frame copy per page of the grant's `io_map`s, in order. A copy
    /// holds one IO mapping; the IoSpace's teardown takes it away, so the
    /// same copy maps into the next IoSpace.
    frames: Vec<Cap<Frame>>,
    /// The domain's slot its IoSpace goes into, once it has one (the revoke
    /// of `RETURN_SPACE` empties it again).
    domain_slot: Option<u32>,
}

/// The request server's state.
#[derive(Debug)]
pub struct Server {
    description: SystemDescription,
    regions: Vec<Vec<Cap<Frame>>>,
    domains: Vec<DomainHandle>,
    given: Vec<Given>,
    devices: Devices,
    /// The notification init's fault watcher waits on (`crate::restart`):
    /// the fault queues of domains init restarts signal it, badged with
    /// `1 << domain`, instead of a notification of their own.
    io_faults: Option<Cap<Notification>>,
}

/// A reply: label (0 or a refusal code) and registers.
pub type Reply = (u32, [u64; 4]);

fn ok(mr0: u64, mr1: u64) -> Reply {
    (0, [mr0, mr1, 0, 0])
}

fn refused(refusal: Refusal) -> Reply {
    let mr0 = match refusal {
        Refusal::KernelError(e) => u64::from(e.code()),
        _ => 0,
    };
    (refusal.code(), [mr0, 0, 0, 0])
}

impl Server {
    /// A server for `description`'s grants, with the region Frames and
    /// domains init built.
    pub fn new(
        description: SystemDescription,
        regions: Vec<Vec<Cap<Frame>>>,
        domains: Vec<DomainHandle>,
        devices: Devices,
    ) -> Server {
        let given = alloc::vec![Given::default(); description.dma_grants.len()];
        Server {
            description,
            regions,
            domains,
            given,
            devices,
            io_faults: None,
        }
    }

    /// Has the fault queues of domains init restarts signal `watched`
    /// (badged per domain), the notification init's fault watcher waits on.
    pub fn watch_faults(&mut self, watched: Cap<Notification>) {
        self.io_faults = Some(watched);
    }

    /// The grants `domain` asks for on request, by index.
    fn grants_of(&self, domain: usize) -> impl Iterator<Item = usize> + '_ {
        self.description
            .dma_grants
            .iter()
            .enumerate()
            .filter(move |(_, g)| g.on_request && usize::from(g.domain) == domain)
            .map(|(index, _)| index)
    }

    /// Takes every record from the fault queues `domain` holds (init's
    /// own copies), oldest first.
    pub fn take_faults(&mut self, domain: usize) -> Vec<sys::FaultRecord> {
        let mut records = Vec::new();
        for grant in self.grants_of(domain).collect::<Vec<_>>() {
            if let Some((queue, _)) = self.given[grant].queue {
                while let Ok(Some(record)) = queue.pop() {
                    records.push(record);
                }
            }
        }
        records
    }

    /// Takes back every IOMMU capability `domain` received on request, in
    /// this order: fault queues, IoSpaces (revoked and deleted: the
    /// device is blocked, its mappings gone, before this returns), device
    /// capabilities (revoked and deleted: every copy the domain holds goes,
    /// and the device's context or stream entry is cleared). What init
    /// keeps to make the next IoSpace cheap stays, but the domain slot it
    /// went into is forgotten (the next run has a new CNode). Returns what
    /// was taken, for init's message.
    pub fn revoke_domain(
        &mut self,
        objects: &mut Objects,
        domain: usize,
    ) -> Result<Vec<String>, String> {
        let mut taken = Vec::new();
        for grant in self.grants_of(domain).collect::<Vec<_>>() {
            let address = self.description.dma_grants[grant].device;
            let given = core::mem::take(&mut self.given[grant]);
            if let Some((queue, signal)) = given.queue {
                let cnode = objects.cnode();
                cnode
                    .revoke(queue.slot())
                    .and_then(|()| cnode.revoke(signal.slot()))
                    .and_then(|()| objects.delete(queue.slot()))
                    .and_then(|()| objects.delete(signal.slot()))
                    .map_err(|e| format!("deleting the fault queue of {address}: {e:?}"))?;
                taken.push(format!("fault queue of {address}"));
            }
            if let Some(handler) = given.msi {
                // Its line is free again once the handler is deleted.
                objects
                    .cnode()
                    .revoke(handler.slot())
                    .and_then(|()| objects.delete(handler.slot()))
                    .map_err(|e| format!("deleting the MSI line of {address}: {e:?}"))?;
                taken.push(format!("MSI line of {address}"));
            }
            if let Some(space) = given.space {
                destroy_space(objects, space).map_err(|(_, why)| why)?;
                taken.push(format!("IoSpace of {address}"));
            }
            if let Some((device, badged)) = given.device {
                objects
                    .delete(badged.slot())
                    .and_then(|()| objects.cnode().revoke(device.slot()))
                    .and_then(|()| objects.delete(device.slot()))
                    .map_err(|e| format!("revoking the IoDevice of {address}: {e:?}"))?;
                taken.push(format!("IoDevice {address}"));
            }
            self.given[grant].stock = given.stock.map(|stock| SpaceStock {
                domain_slot: None,
                ..stock
            });
        }
        Ok(taken)
    }

    /// The handle of `domain`'s next run: requests from now on go there.
    pub fn replace_domain(&mut self, domain: usize, handle: DomainHandle) {
        self.domains[domain] = handle;
    }

    /// Answers request `label` with registers `mrs` from the domain whose
    /// endpoint capability carries `badge` (its index + 1).
    pub fn handle(
        &mut self,
        objects: &mut Objects,
        badge: u64,
        label: u32,
        mrs: [u64; 4],
    ) -> Reply {
        let Some(domain) = badge
            .checked_sub(1)
            .and_then(|d| usize::try_from(d).ok())
            .filter(|&d| d < self.domains.len())
        else {
            rt::println!("[init] a request with badge {badge:#x}, which names no domain: refused");
            return refused(Refusal::NotGranted);
        };
        if let Some(reply) = self.status(objects, label, mrs[0]) {
            return reply;
        }
        let who = self.domains[domain].name.clone();
        let pci = mrs[0];
        let grant = self.description.dma_grants.iter().position(|g| {
            g.on_request
                && usize::from(g.domain) == domain
                && u64::from(g.device.requester_id()) == pci
        });
        let device_name = format!("{:02x}:{:02x}.{}", pci >> 8, (pci >> 3) & 0x1f, pci & 7);
        let Some(grant) = grant else {
            if matches!(
                label,
                resources::DEVICE
                    | resources::SPACE
                    | resources::FAULT_QUEUE
                    | resources::RETURN_SPACE
                    | resources::BAR
                    | resources::CONFIG_READ
                    | resources::CONFIG_WRITE
                    | resources::MSI
            ) {
                rt::println!(
                    "[init] \"{who}\" asks for device {device_name}: no dma_grant of the image gives it that device: refused"
                );
                return refused(Refusal::NotGranted);
            }
            rt::println!(
                "[init] \"{who}\" sent request {label:#x}, which init does not know: refused"
            );
            return refused(Refusal::UnknownRequest);
        };
        let answer = match label {
            resources::DEVICE => self.device(objects, domain, grant, mrs[1]),
            resources::SPACE => self.space(objects, domain, grant, mrs[1]),
            resources::FAULT_QUEUE => self.fault_queue(objects, domain, grant),
            resources::RETURN_SPACE => self.return_space(objects, grant),
            resources::BAR => self.bar(objects, domain, grant, mrs[1]),
            resources::CONFIG_READ => {
                // Quietly: a driver reads a few dozen words while it starts.
                return self.config_read(objects, grant, mrs[1]).unwrap_or_else(
                    |(refusal, why)| {
                        rt::println!(
                            "[init] \"{who}\" asks for device {device_name}: {why}: refused ({refusal:?})"
                        );
                        refused(refusal)
                    },
                );
            }
            resources::CONFIG_WRITE => self.config_write(objects, grant, mrs[1]),
            resources::MSI => self.msi(objects, domain, grant),
            _ => Err((
                Refusal::UnknownRequest,
                String::from("not a request init knows"),
            )),
        };
        match answer {
            Ok((reply, what)) => {
                rt::println!("[init] \"{who}\" asks {what}");
                reply
            }
            Err((refusal, why)) => {
                rt::println!(
                    "[init] \"{who}\" asks for device {device_name}: {why}: refused ({refusal:?})"
                );
                refused(refusal)
            }
        }
    }

    /// Copies `source` (in init's CNode) into `domain`'s slot `slot`, or
    /// its next free slot when `None`; returns the slot.
    fn give<T: CapType>(
        &mut self,
        objects: &Objects,
        domain: usize,
        source: Cap<T>,
        slot: Option<u32>,
    ) -> Result<u32, (Refusal, String)> {
        self.give_with(objects, domain, source, slot, Rights::ALL)
    }

    /// [`Server::give`] of a copy with only `rights`.
    fn give_with<T: CapType>(
        &mut self,
        objects: &Objects,
        domain: usize,
        source: Cap<T>,
        slot: Option<u32>,
        rights: Rights,
    ) -> Result<u32, (Refusal, String)> {
        let handle = &mut self.domains[domain];
        let fresh = slot.is_none();
        let slot = slot.unwrap_or(handle.next_slot);
        if slot >= sys::names::DOMAIN_OWN_SLOTS.start {
            return Err((
                Refusal::KernelError(sys::Error::InvalidSlot),
                String::from("its CNode has no slot left for init"),
            ));
        }
        handle
            .cnode
            .copy_from(Slot::new(slot), objects.cnode(), source.slot(), rights)
            .map_err(kernel("CNode.Copy into its CNode"))?;
        if fresh {
            handle.next_slot += 1;
        }
        Ok(slot)
    }

    fn device(
        &mut self,
        objects: &mut Objects,
        domain: usize,
        grant: usize,
        badge: u64,
    ) -> Result<(Reply, String), (Refusal, String)> {
        if self.given[grant].device.is_some() {
            return Err((Refusal::AlreadyGiven, String::from("init already gave it")));
        }
        let address = self.description.dma_grants[grant].device;
        let control: Cap<IommuControl> = bootinfo::IOMMU_CONTROL;
        let slot = objects.slot().map_err(kernel("a slot of init's"))?;
        let device = control
            .mint_device(u32::from(address.requester_id()), slot)
            .map_err(kernel("IommuControl.MintDevice"))?;
        let badged = objects
            .mint(device, Rights::ALL, badge)
            .map_err(kernel("badging the IoDevice"))?;
        let handle = &self.domains[domain];
        let window = sys::names::DEVICE_REGISTERS_ADDRESS
            + handle.devices * sys::names::DEVICE_REGISTERS_STRIDE;
        let registers = self
            .devices
            .map_registers(objects, address, handle.vspace, window)
            .map_err(|e| (Refusal::KernelError(sys::Error::InvalidArgument), e))?;
        let given = self.give(objects, domain, badged, None)?;
        self.given[grant].number = self.domains[domain].devices;
        self.domains[domain].devices += 1;
        self.given[grant].device = Some((device, badged));
        self.given[grant].slots.device = Some(given);
        Ok((
            ok(u64::from(given), registers),
            format!(
                "for device {address}: granted by dma_grant {grant}; IoDevice (badge {badge:#x}) in its slot {given}, registers at {registers:#x}"
            ),
        ))
    }

    fn bar(
        &mut self,
        objects: &mut Objects,
        domain: usize,
        grant: usize,
        index: u64,
    ) -> Result<(Reply, String), (Refusal, String)> {
        if self.given[grant].device.is_none() {
            return Err((
                Refusal::DeviceFirst,
                String::from("a BAR before the device"),
            ));
        }
        let index = u8::try_from(index)
            .ok()
            .filter(|&i| i < pci::BAR_COUNT)
            .ok_or_else(|| {
                (
                    Refusal::BadArgument,
                    format!("BAR {index}, which is not 0..=5"),
                )
            })?;
        if self.given[grant].bars & (1 << index) != 0 {
            return Err((Refusal::AlreadyGiven, format!("BAR {index} a second time")));
        }
        let address = self.description.dma_grants[grant].device;
        let window = sys::names::DEVICE_BARS_ADDRESS
            + self.given[grant].number * sys::names::DEVICE_BARS_STRIDE
            + u64::from(index) * sys::names::DEVICE_BAR_SIZE;
        let vspace = self.domains[domain].vspace;
        let (start, size) = self
            .devices
            .map_bar(
                objects,
                address,
                index,
                vspace,
                (window, sys::names::DEVICE_BAR_SIZE),
            )
            .map_err(|e| (Refusal::BadArgument, e))?;
        self.given[grant].bars |= 1 << index;
        Ok((
            ok(start, size),
            format!("for BAR {index} of device {address}: {size:#x} bytes mapped at {start:#x}"),
        ))
    }

    fn config_read(
        &mut self,
        objects: &mut Objects,
        grant: usize,
        offset: u64,
    ) -> Result<Reply, (Refusal, String)> {
        if self.given[grant].device.is_none() {
            return Err((
                Refusal::DeviceFirst,
                String::from("its configuration space before the device"),
            ));
        }
        let address = self.description.dma_grants[grant].device;
        let word = self
            .devices
            .config_read(objects, address, offset)
            .map_err(|e| (Refusal::BadArgument, e))?;
        Ok(ok(u64::from(word), 0))
    }

    /// `CONFIG_WRITE`: MR1 = offset | value << 32, checked by
    /// `pci::Function::write_msi_field` (the device's own MSI / MSI-X
    /// fields only).
    fn config_write(
        &mut self,
        objects: &mut Objects,
        grant: usize,
        argument: u64,
    ) -> Result<(Reply, String), (Refusal, String)> {
        if self.given[grant].device.is_none() {
            return Err((
                Refusal::DeviceFirst,
                String::from("to write its configuration space before the device"),
            ));
        }
        let (offset, value) = (argument as u16, (argument >> 32) as u32);
        if (argument >> 16) & 0xFFFF != 0 || !offset.is_multiple_of(4) || offset >= 4096 {
            return Err((
                Refusal::NotMsiField,
                format!(
                    "to write at offset {:#x}: not a 4-byte aligned offset below 0x1000",
                    argument & 0xFFFF_FFFF
                ),
            ));
        }
        let address = self.description.dma_grants[grant].device;
        let word = self
            .devices
            .config_write_msi(objects, address, offset, value)?;
        Ok((
            ok(u64::from(word), 0),
            format!(
                "to write {value:#010x} at {offset:#x} of device {address}'s MSI fields: written"
            ),
        ))
    }

    fn space(
        &mut self,
        objects: &mut Objects,
        domain: usize,
        grant: usize,
        size: u64,
    ) -> Result<(Reply, String), (Refusal, String)> {
        let limit = self.description.dma_grants[grant].iospace_size;
        if self.given[grant].device.is_none() {
            return Err((
                Refusal::DeviceFirst,
                String::from("an IoSpace before the device"),
            ));
        }
        if size > limit {
            return Err((
                Refusal::TooLarge,
                format!("an IoSpace of {size:#x} bytes, above the grant's {limit:#x}"),
            ));
        }
        if self.given[grant].space.is_some() {
            return Err((Refusal::AlreadyGiven, String::from("a second IoSpace")));
        }
        let mut stock = match self.given[grant].stock.take() {
            Some(stock) => stock,
            None => SpaceStock {
                memory: objects
                    .make_sized::<Untyped>(IO_SPACE_BITS)
                    .map_err(kernel("Untyped.Retype of the IoSpace's memory"))?,
                frames: Vec::new(),
                domain_slot: None,
            },
        };
        let made = self.make_space(objects, domain, grant, &mut stock);
        self.given[grant].stock = Some(stock);
        let (space, given) = made?;
        self.given[grant].space = Some(space);
        Ok((
            ok(u64::from(given), 0),
            format!(
                "for an IoSpace of {size:#x} bytes (the grant allows {limit:#x}): granted, its io_map regions mapped, in its slot {given}"
            ),
        ))
    }

    /// The grant's IoSpace, made of `stock` (whose Frame copies and domain
    /// slot it completes), mapped and copied into the domain; returns it
    /// and the domain's slot. A failure deletes it again.
    fn make_space(
        &mut self,
        objects: &mut Objects,
        domain: usize,
        grant: usize,
        stock: &mut SpaceStock,
    ) -> Result<(Cap<IoSpace>, u32), (Refusal, String)> {
        let control: Cap<IommuControl> = bootinfo::IOMMU_CONTROL;
        let space = objects
            .make_io_space_from(stock.memory, control)
            .map_err(kernel("Untyped.Retype of the IoSpace"))?;
        let placed = crate::system::map_io_regions(
            &self.description,
            &self.regions,
            grant,
            space,
            &mut stock.frames,
            objects,
        )
        .map_err(|(step, e)| (Refusal::KernelError(e), step))
        .and_then(|()| self.give(objects, domain, space, stock.domain_slot));
        match placed {
            Ok(slot) => {
                stock.domain_slot = Some(slot);
                Ok((space, slot))
            }
            Err(refusal) => {
                // Its mappings go with it; the memory, the copies and the
                // slots are there for the next request.
                if let Err((_, why)) = destroy_space(objects, space) {
                    rt::println!("[init] removing an IoSpace init could not give: {why}");
                }
                Err(refusal)
            }
        }
    }

    fn fault_queue(
        &mut self,
        objects: &mut Objects,
        domain: usize,
        grant: usize,
    ) -> Result<(Reply, String), (Refusal, String)> {
        let Some((_, badged)) = self.given[grant].device else {
            return Err((
                Refusal::DeviceFirst,
                String::from("a fault queue before the device"),
            ));
        };
        if self.given[grant].queue.is_some() {
            return Err((Refusal::AlreadyGiven, String::from("a second fault queue")));
        }
        let queue: Cap<IoFaultQueue> = objects
            .make::<IoFaultQueue>()
            .map_err(kernel("Untyped.Retype of the IoFaultQueue"))?;
        // A domain init restarts binds init's watched notification (its
        // own badge), so init learns of its device's faults, and its copies
        // carry no right: the records are init's (a driver that popped them
        // or waited on the notification could keep init from seeing a DMA
        // fault of its device; one that rebound the queue, likewise).
        let watched = self
            .io_faults
            .filter(|_| self.description.domains[domain].restarts > 0);
        let (signal, rights): (Cap<Notification>, _) = match watched {
            Some(watched) => (
                objects
                    .mint(watched, Rights::ALL, 1 << domain)
                    .map_err(kernel("badging init's fault notification"))?,
                Rights::NONE,
            ),
            None => (
                objects
                    .make::<Notification>()
                    .map_err(kernel("Untyped.Retype of the Notification"))?,
                Rights::ALL,
            ),
        };
        queue
            .bind(signal, badged)
            .map_err(kernel("IoFaultQueue.Bind"))?;
        let queue_slot = self.give_with(objects, domain, queue, None, rights)?;
        let signal_slot = self.give_with(objects, domain, signal, None, rights)?;
        self.given[grant].queue = Some((queue, signal));
        self.given[grant].slots.queue = Some((queue_slot, signal_slot));
        Ok((
            ok(u64::from(queue_slot), u64::from(signal_slot)),
            format!(
                "for a fault queue: granted, bound to its device, in its slots {queue_slot} (queue) and {signal_slot} (notification)"
            ),
        ))
    }

    /// `MSI`: the first free line of `resources::MSI_LINES`, bound to a
    /// copy badged `resources::MSI_BADGE` of the fault queue's
    /// Notification; the handler and that copy go to the domain.
    fn msi(
        &mut self,
        objects: &mut Objects,
        domain: usize,
        grant: usize,
    ) -> Result<(Reply, String), (Refusal, String)> {
        if !self.description.dma_grants[grant].msi {
            return Err((
                Refusal::NotGranted,
                String::from("an MSI line, which its dma_grant does not give (msi = true)"),
            ));
        }
        if self.given[grant].device.is_none() {
            return Err((
                Refusal::DeviceFirst,
                String::from("an MSI line before the device"),
            ));
        }
        if self.given[grant].msi.is_some() {
            return Err((Refusal::AlreadyGiven, String::from("a second MSI line")));
        }
        let Some((_, shared)) = self.given[grant].queue else {
            return Err((
                Refusal::DeviceFirst,
                String::from("an MSI line before the fault queue, whose notification it signals"),
            ));
        };
        let control: Cap<IrqControl> = bootinfo::IRQ_CONTROL;
        let slot = objects.slot().map_err(kernel("a slot of init's"))?;
        let mut taken = Err(sys::Error::DeviceInUse);
        let mut line = resources::MSI_LINES.start;
        for candidate in resources::MSI_LINES {
            line = candidate;
            taken = control.get(candidate, slot);
            if taken != Err(sys::Error::DeviceInUse) {
                break;
            }
        }
        let handler = taken.map_err(kernel("IrqControl.Get of an MSI line"))?;
        let signal = objects
            .mint(shared, Rights::ALL, resources::MSI_BADGE)
            .map_err(kernel("badging the Notification"))?;
        handler
            .set_notification(signal)
            .map_err(kernel("IrqHandler.SetNotification"))?;
        let handler_slot = self.give(objects, domain, handler, None)?;
        let signal_slot = self.give(objects, domain, signal, None)?;
        self.given[grant].msi = Some(handler);
        Ok((
            ok(u64::from(handler_slot), u64::from(signal_slot)),
            format!(
                "for an MSI line: line {line}, in its slots {handler_slot} (handler) and {signal_slot} (notification)"
            ),
        ))
    }

    fn return_space(
        &mut self,
        objects: &mut Objects,
        grant: usize,
    ) -> Result<(Reply, String), (Refusal, String)> {
        let Some(space) = self.given[grant].space else {
            return Err((
                Refusal::DeviceFirst,
                String::from("to return an IoSpace it does not hold"),
            ));
        };
        destroy_space(objects, space)?;
        self.given[grant].space = None;
        Ok((
            ok(0, 0),
            String::from(
                "init to take its IoSpace back: revoked and deleted; the device is blocked and every IO mapping of that space is gone (the kernel waited for the IOMMU's invalidation)",
            ),
        ))
    }
}

/// Revokes init's IoSpace capability `space` (the domain's copy goes) and
/// deletes it: the IoSpace dies with its mappings and attachments, its
/// memory is free to be retyped again and init's slot to be reused.
fn destroy_space(objects: &mut Objects, space: Cap<IoSpace>) -> Result<(), (Refusal, String)> {
    objects
        .cnode()
        .revoke(space.slot())
        .map_err(kernel("CNode.Revoke of the IoSpace"))?;
    objects
        .delete(space.slot())
        .map_err(kernel("CNode.Delete of the IoSpace"))
}

mod status;
#[cfg(test)]
mod tests;

/// Maps a kernel error of `step` to a refusal.
fn kernel(step: &'static str) -> impl Fn(sys::Error) -> (Refusal, String) {
    move |e| {
        (
            Refusal::KernelError(e),
            format!("{step}: the kernel answered {e:?}"),
        )
    }
}
