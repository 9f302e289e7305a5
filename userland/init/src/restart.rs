//! Restarting protection domains that fail: a domain whose image sets
//! `restarts` is started again from the image when it faults, or when its
//! device's DMA faults in the IOMMU, at most that many times.
//!
//! Init is every domain's fault handler, so a CPU fault arrives on its
//! endpoint. A device's DMA fault arrives through a thread of init's, the
//! fault watcher ([`start_watcher`]): the fault queues of restartable
//! domains signal its notification (`requests::Server::watch_faults`),
//! and it tells init's loop with an [`IO_FAULTS`] message; init then takes
//! the records from the domain's queues and restarts the domain when it
//! finds any.
//!
//! A restart ([`Restarts::restart`]), in this order:
//! 1. every IOMMU capability the domain asked for is taken back
//!    (`requests::Server::revoke_domain`): fault queues deleted, IoSpaces
//!    revoked and deleted, IoDevices revoked and deleted, so the device is
//!    blocked and no DMA of the old run can land from here on;
//! 2. the old run is stopped: its TCB is deleted (a client waiting for its
//!    reply is woken with `DeadObject` and may send again), its Untyped
//!    revoked (what it built from it dies) and deleted, its Console copy,
//!    every slot of its CNode, then the CNode and the VSpace root;
//! 3. the regions only this domain maps are zeroed (after 1, so nothing
//!    the device still had in flight lands in the new run's memory);
//! 4. it is built again as at boot (`system::make_domain`: program, stack,
//!    heap, IPC buffer, TCB, Console), its maps made again, and the
//!    capabilities of its channels, IRQs and request endpoint given again
//!    (the same objects: its clients' copies stay valid). Its capability
//!    table says which run this is (`start`); it asks init for its IOMMU
//!    capabilities again through the normal request path.
//!
//! A domain that fails once more after its last restart is given up: its
//! capabilities are taken back and its run stopped as above, the
//! capabilities of its channels, IRQs and request endpoint init holds are
//! revoked and deleted (a client blocked on its endpoint is woken with
//! `DeadObject`; its next call finds no capability), and it stays stopped.
//!
//! A restart gives init's slots back: what was made for the old run alone
//! was recorded (`rt::space::Objects::record`, `system::Domain::slots`)
//! and is deleted. Not its memory: the Untypeds hand memory out upward
//! only, so each restart carves a new domain's worth, which the image's
//! bound on restarts bounds.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use rt::space::{Objects, Scratch};
use sys::names::{self, CapTable};
use sys::{
    CNode, Cap, Endpoint, Frame, MessageInfo, Notification, ObjectKind, PageTable, Rights, Slot,
    Tcb,
};
use sysdesc::archive::Archive;
use sysdesc::{PageSize, SystemDescription};

use crate::requests::Server;
use crate::system::{self, Domain, Gift};

/// The badge of the fault watcher's endpoint capability: above every
/// domain's (index + 1).
pub const WATCHER_BADGE: u64 = 1 << 32;
/// The label of the fault watcher's message (MR0: the notification word).
pub const IO_FAULTS: u32 = 0x10_0009;
const _: () = assert!(sysdesc::MAX_DOMAINS < 64);

/// Bytes of the fault watcher's stack.
const WATCHER_STACK: usize = 8 << 10;
/// The fault watcher runs at init's priority.
const WATCHER_PRIORITY: u8 = 255;

/// A page of zeros, for zeroing a region's Frames.
const ZEROS: [u8; 4096] = [0; 4096];

/// The run of one domain init may have to stop.
struct Run {
    tcb: Cap<Tcb>,
    cnode: Cap<CNode>,
    vspace: Cap<PageTable>,
    /// Restarts so far.
    restarts: u8,
    /// What `system::make_domain` gave it (Untyped, its own CNode and
    /// VSpace, Console): made afresh for a new run, this run's deleted.
    own: Vec<Gift>,
    /// What a new run is given again (channels, IRQs, request endpoint).
    replay: Vec<Gift>,
    /// The slots of init's holding what was made for this run alone
    /// (`system::Domain::slots`).
    slots: Vec<Slot>,
    /// Given up: it stays stopped.
    given_up: bool,
}

/// What init needs to restart domains.
pub struct Restarts {
    description: SystemDescription,
    regions: Vec<Vec<Cap<Frame>>>,
    scratch: Scratch,
    faults: Cap<Endpoint>,
    runs: Vec<Run>,
    watched: Option<Cap<Notification>>,
}

impl core::fmt::Debug for Restarts {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Restarts")
            .field(
                "restarts",
                &self.runs.iter().map(|r| r.restarts).collect::<Vec<_>>(),
            )
            .field("watched", &self.watched)
            .finish()
    }
}

impl Restarts {
    /// What restarting `domains` (as built) takes; starts the fault
    /// watcher when some domain of `description` may be restarted.
    pub(crate) fn new(
        description: &SystemDescription,
        domains: &[Domain],
        regions: Vec<Vec<Cap<Frame>>>,
        scratch: Scratch,
        objects: &mut Objects,
        faults: Cap<Endpoint>,
    ) -> Result<Restarts, String> {
        let runs = domains
            .iter()
            .map(|domain| Run {
                tcb: domain.tcb,
                cnode: domain.cnode,
                vspace: domain.vspace,
                restarts: 0,
                own: domain.gifts[..domain.own_gifts].to_vec(),
                replay: domain.gifts[domain.own_gifts..].to_vec(),
                slots: domain.slots.clone(),
                given_up: false,
            })
            .collect();
        let watched = if description.domains.iter().any(|pd| pd.restarts > 0) {
            Some(start_watcher(objects, faults)?)
        } else {
            None
        };
        Ok(Restarts {
            description: description.clone(),
            regions,
            scratch,
            faults,
            runs,
            watched,
        })
    }

    /// The notification the fault watcher waits on, if it runs.
    pub fn watched(&self) -> Option<Cap<Notification>> {
        self.watched
    }

    /// Whether init restarts `domain` when it fails (and has not given it
    /// up).
    pub fn restartable(&self, domain: usize) -> bool {
        self.description
            .domains
            .get(domain)
            .is_some_and(|pd| pd.restarts > 0)
            && self.runs.get(domain).is_some_and(|run| !run.given_up)
    }

    /// The domains init may restart.
    pub fn restartable_domains(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.runs.len()).filter(|&domain| self.restartable(domain))
    }

    /// Restarts `domain`, which failed (`what` says how), or gives it up
    /// when it has used its restarts; returns the new run's capability
    /// table. See the module's documentation for the order.
    pub fn restart(
        &mut self,
        archive: &Archive<'_>,
        objects: &mut Objects,
        requests: &mut Server,
        domain: usize,
        what: &str,
    ) -> Result<Option<CapTable>, String> {
        let pd = &self.description.domains[domain];
        let name = pd.name.as_str();
        let free = objects.free_slots();
        let taken = requests.revoke_domain(objects, domain)?;
        rt::println!(
            "[init] protection domain \"{name}\" {what}; init took back {}: its device is blocked, no DMA of this run can land",
            if taken.is_empty() {
                String::from("nothing (it held no IOMMU capability)")
            } else {
                taken.join(", ")
            }
        );
        let run = &mut self.runs[domain];
        // The kernel deletes only an empty CNode: every slot first (an
        // empty one answers an error, which changes nothing). Its TCB goes
        // first, so no thread of it runs meanwhile.
        objects
            .delete(run.tcb.slot())
            .map_err(|e| format!("\"{name}\": deleting its TCB: {e:?}"))?;
        // What it built from its Untyped dies with the revoke; the Untyped
        // and its Console copy go (its own CNode and VSpace below).
        for (gift, slot, kind) in &run.own {
            let gone = match kind {
                ObjectKind::Untyped => objects
                    .cnode()
                    .revoke(*slot)
                    .and_then(|()| objects.delete(*slot)),
                ObjectKind::Console => objects.delete(*slot),
                _ => Ok(()),
            };
            gone.map_err(|e| format!("\"{name}\": deleting its `{gift}`: {e:?}"))?;
        }
        for slot in 1..names::DOMAIN_OWN_SLOTS.end {
            let _ = run.cnode.delete(Slot::new(slot));
        }
        for (slot, object) in [
            (run.cnode.slot(), "CNode"),
            (run.vspace.slot(), "VSpace root"),
        ] {
            objects
                .delete(slot)
                .map_err(|e| format!("\"{name}\": deleting its {object}: {e:?}"))?;
        }
        // The rest made for this run alone: program, stack, heap and IPC
        // buffer Frames, page tables, region copies, the capability table,
        // the badged fault endpoint. Their slots are free again; their
        // memory stays carved (the Untypeds hand memory out upward only).
        let done: Vec<Slot> = [run.tcb.slot(), run.cnode.slot(), run.vspace.slot()]
            .into_iter()
            .chain(run.own.iter().map(|(_, slot, _)| *slot))
            .collect();
        let mut stuck = 0;
        for &slot in run.slots.iter().filter(|slot| !done.contains(slot)) {
            if objects.delete(slot).is_err() {
                stuck += 1;
            }
        }
        if stuck > 0 {
            rt::println!(
                "[init] \"{name}\": {stuck} of the old run's capabilities could not be deleted; their slots stay used"
            );
        }
        if run.restarts >= pd.restarts {
            run.given_up = true;
            // What it was given goes too: its channels' objects die with
            // the capabilities init holds, so a client blocked on its
            // endpoint is woken (DeadObject) instead of waiting for good.
            for (gift, slot, _) in &run.replay {
                objects
                    .cnode()
                    .revoke(*slot)
                    .and_then(|()| objects.delete(*slot))
                    .map_err(|e| format!("\"{name}\": closing its `{gift}`: {e:?}"))?;
            }
            rt::println!(
                "[init] protection domain \"{name}\" failed after {} restart(s), the most its image allows: init gives up on it; it stays stopped, its channels closed",
                run.restarts
            );
            return Ok(None);
        }
        run.restarts += 1;
        let restarts = run.restarts;
        zero_own_regions(&self.description, &self.regions, &self.scratch, domain)?;
        let mut fresh = system::make_domain(
            archive,
            &self.description,
            domain,
            objects,
            &self.scratch,
            u64::from(restarts),
        )?;
        for (index, _) in self
            .description
            .maps
            .iter()
            .enumerate()
            .filter(|(_, map)| usize::from(map.domain) == domain)
        {
            system::map_region(&self.description, &self.regions, index, &mut fresh, objects)?;
        }
        let run = &mut self.runs[domain];
        for (gift, slot, kind) in &run.replay {
            fresh.give_kind(objects, gift, *slot, *kind)?;
        }
        system::prepare(&mut fresh, objects, &self.scratch)?;
        system::handle_faults(&mut fresh, domain, objects, self.faults)?;
        requests.replace_domain(domain, fresh.handle());
        run.own = fresh.gifts[..fresh.own_gifts].to_vec();
        run.slots = fresh.slots.clone();
        run.tcb = fresh.tcb;
        run.cnode = fresh.cnode;
        run.vspace = fresh.vspace;
        system::run(&fresh)?;
        rt::println!(
            "[init] restart {restarts} of protection domain \"{name}\" (at most {}): run {} started from the image with fresh memory; it asks init for its IOMMU capabilities again (init's free slots: {free} before, {} after)",
            pd.restarts,
            restarts + 1,
            objects.free_slots()
        );
        Ok(Some(fresh.table))
    }
}

/// Zeroes every 4 KiB region `domain` maps that no other domain maps (its
/// DMA memory and table frames), through init's scratch page. A region of
/// 2 MiB pages is left as it is, and said so.
fn zero_own_regions(
    description: &SystemDescription,
    regions: &[Vec<Cap<Frame>>],
    scratch: &Scratch,
    domain: usize,
) -> Result<(), String> {
    let maps = |region: usize| {
        description
            .maps
            .iter()
            .filter(move |map| usize::from(map.region) == region)
    };
    for (index, region) in description.regions.iter().enumerate() {
        let own =
            maps(index).count() > 0 && maps(index).all(|map| usize::from(map.domain) == domain);
        if !own {
            continue;
        }
        if region.page_size == PageSize::Large {
            rt::println!(
                "[init] region \"{}\" (2 MiB pages) is not zeroed for the new run",
                region.name
            );
            continue;
        }
        for &frame in &regions[index] {
            scratch
                .fill(frame, 0, &ZEROS)
                .map_err(|e| format!("zeroing region \"{}\": {e:?}", region.name))?;
        }
    }
    Ok(())
}

/// Starts the fault watcher: a thread of init's that waits on a new
/// notification and sends each word it takes to init's endpoint `faults`
/// as an [`IO_FAULTS`] message (badge [`WATCHER_BADGE`]). Returns the
/// notification.
fn start_watcher(
    objects: &mut Objects,
    faults: Cap<Endpoint>,
) -> Result<Cap<Notification>, String> {
    let fail = |step: &str, e: sys::Error| {
        format!("init's fault watcher: {step}: the kernel answered {e:?}")
    };
    let watched: Cap<Notification> = objects
        .make::<Notification>()
        .map_err(|e| fail("its notification", e))?;
    let endpoint = objects
        .mint(faults, Rights::WRITE, WATCHER_BADGE)
        .map_err(|e| fail("its endpoint capability", e))?;
    let tcb: Cap<Tcb> = objects.make::<Tcb>().map_err(|e| fail("its TCB", e))?;
    // The stack lives as long as init: a leaked heap block.
    let stack: &'static mut [u64] = Box::leak(vec![0u64; WATCHER_STACK / 8].into_boxed_slice());
    let top = (stack.as_ptr() as u64 + WATCHER_STACK as u64) & !15;
    // x86_64 enters a function as if a return address had been pushed.
    let top = if cfg!(target_arch = "x86_64") {
        top - 8
    } else {
        top
    };
    let argument = u64::from(watched.slot().index())
        | u64::from(endpoint.slot().index()) << SLOT_BITS
        | u64::from(tcb.slot().index()) << (2 * SLOT_BITS);
    let entry: extern "C" fn(u64) -> ! = watch;
    tcb.configure_in_root_task(None)
        .map_err(|e| fail("Tcb.Configure", e))?;
    tcb.write_registers(entry as usize as u64, top, argument)
        .map_err(|e| fail("Tcb.WriteRegisters", e))?;
    tcb.set_priority(WATCHER_PRIORITY)
        .map_err(|e| fail("Tcb.SetPriority", e))?;
    tcb.set_debug_name("init-faults")
        .map_err(|e| fail("DebugNameThread", e))?;
    tcb.resume().map_err(|e| fail("Tcb.Resume", e))?;
    Ok(watched)
}

/// Bits of one slot number in the watcher's argument (init's CNode has
/// 1024 slots).
const SLOT_BITS: u32 = 20;
const _: () = assert!(rt::space::ROOT_CNODE_SLOTS <= 1 << SLOT_BITS);

/// The fault watcher's thread: `argument` holds the slots of its
/// notification, its endpoint capability and its own TCB, [`SLOT_BITS`]
/// each from bit 0. It uses registers only, never the IPC buffer it
/// shares with init.
extern "C" fn watch(argument: u64) -> ! {
    let slot = |n: u32| Slot::new(((argument >> (n * SLOT_BITS)) & ((1 << SLOT_BITS) - 1)) as u32);
    let watched: Cap<Notification> = Cap::from_slot(slot(0));
    let init: Cap<Endpoint> = Cap::from_slot(slot(1));
    let own: Cap<Tcb> = Cap::from_slot(slot(2));
    loop {
        match watched.wait() {
            Ok(word) => {
                let _ = init.send(MessageInfo::new(IO_FAULTS, 1), [word, 0, 0, 0]);
            }
            // Its notification is gone (init never deletes it): it stops
            // itself rather than spin at init's priority.
            Err(_) => {
                let _ = own.suspend();
            }
        }
    }
}
