//! `init`: the root task. The kernel starts it from the packed system image
//! (`cargo xtask pack`, `sysdesc::archive`) and maps that image into it;
//! init decodes the system description and builds every protection domain
//! it names, then starts them and waits.
//!
//! The order (`system::build`): memory regions (Frames), then per domain a
//! CSpace, a VSpace with its program, stack, heap and IPC buffer, and a TCB;
//! then the maps, channels, IRQs and IOMMU grants, each capability copied
//! into the domain's CNode and named in its capability table
//! (`sys::names`); last, every domain's TCB is configured, and only then
//! are they all resumed, so no domain runs before the whole system exists. Anything the kernel
//! refuses stops the build with a message naming the domain and the entry
//! of the image, and init halts with status 1: a half-built system is
//! never started. Afterwards init is every domain's fault handler: it
//! prints which domain faulted where and leaves it stopped, or, for a
//! domain whose image sets `restarts`, takes back its IOMMU capabilities
//! and starts it again from the image (`restart`, also when its device's
//! DMA faults in the IOMMU); and it answers requests for IOMMU
//! capabilities made on request (`requests`, `sys::resources`).
//!
//! Init runs at priority 255, above every domain (images allow 0..=254).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod devices;
#[cfg(test)]
mod model_kernel;
pub mod requests;
pub mod restart;
pub mod system;
#[cfg(test)]
mod tests;

use alloc::format;
use alloc::vec::Vec;

use sys::bootinfo;
use sysdesc::archive::Archive;

/// Init's priority: above every domain's.
const INIT_PRIORITY: u8 = 255;

/// Builds the system of the image the kernel booted and waits; returns a
/// status only when that fails.
pub fn run() -> i32 {
    let Some(info) = rt::boot::boot_info() else {
        rt::println!("[init] no boot-info page: init must be the root task");
        return 1;
    };
    let Some(image) = rt::boot::system_image() else {
        rt::println!(
            "[init] the kernel was booted without a system image: boot one with `cargo xtask run --image NAME`"
        );
        return 1;
    };
    let archive = match Archive::parse(image) {
        Ok(archive) => archive,
        Err(e) => {
            rt::println!("[init] the system image is damaged: {e}");
            return 1;
        }
    };
    let description = match archive.description() {
        Ok(description) => description,
        Err(e) => {
            rt::println!("[init] the system image's description: {e}");
            return 1;
        }
    };
    let own = bootinfo::INIT_TCB;
    if let Err(e) = own
        .set_priority(INIT_PRIORITY)
        .and_then(|()| own.set_debug_name("init"))
    {
        rt::println!("[init] cannot set up init's own thread: {e:?}");
        return 1;
    }
    rt::println!(
        "[init] system image of {} bytes: {} protection domain(s), {} memory region(s), {} channel(s), {} irq(s), {} dma grant(s)",
        image.len(),
        description.domains.len(),
        description.regions.len(),
        description.channels.len(),
        description.irqs.len(),
        description.dma_grants.len()
    );
    let mut objects = rt::space::Objects::from_boot_info(info);
    let mut system = match system::build(&archive, &description, &mut objects) {
        Ok(system) => system,
        Err(e) => {
            rt::println!("[init] cannot build the system: {e}");
            return 1;
        }
    };
    rt::println!(
        "[init] started {} protection domain(s)",
        system.domains.len()
    );
    // Every capability is in place and no domain has run yet (init runs at
    // the highest priority): the moment the image describes. A kernel built
    // with `cap-dump` prints its derivation tree now; others decline.
    match sys::debug_cap_dump() {
        Ok(()) | Err(sys::Error::NotSupported) => {}
        Err(e) => rt::println!("[init] the capability dump answered {e:?}"),
    }
    // Init now reports the domains' faults (a faulting domain is left
    // stopped) and answers their requests for IOMMU capabilities
    // (`requests`); the system ends when a domain halts it.
    let mut reply: Option<requests::Reply> = None;
    loop {
        let received = match reply.take() {
            Some((label, mrs)) => system
                .faults
                .reply_recv(sys::MessageInfo::new(label, 2), mrs),
            None => system.faults.recv(),
        };
        match received {
            Ok(fault) if fault.info.label == abi::FAULT_LABEL => {
                let [exception, address, pc, syndrome] = fault.mrs;
                let what = format!(
                    "faulted: exception {exception:#x} at address {address:#x}, pc {pc:#x}, syndrome {syndrome:#x}"
                );
                match domain_index(fault.badge).filter(|&d| system.restarts.restartable(d)) {
                    Some(domain) => restart(&archive, &mut objects, &mut system, domain, &what),
                    None => rt::println!(
                        "[init] protection domain \"{}\" {what}; it stays stopped",
                        system.domain_of(fault.badge).unwrap_or("?")
                    ),
                }
            }
            Ok(signal)
                if signal.badge == restart::WATCHER_BADGE
                    && signal.info.label == restart::IO_FAULTS =>
            {
                io_faults(&archive, &mut objects, &mut system);
            }
            Ok(request) => {
                reply = Some(system.requests.handle(
                    &mut objects,
                    request.badge,
                    request.info.label,
                    request.mrs,
                ));
            }
            Err(e) => {
                rt::println!("[init] waiting for faults answered {e:?}");
                return 1;
            }
        }
    }
}

/// The domain a fault or request badge names (its index + 1).
fn domain_index(badge: u64) -> Option<usize> {
    usize::try_from(badge.checked_sub(1)?).ok()
}

/// Restarts `domain`, which failed (`what`), and keeps its new table; a
/// restart that fails leaves it stopped, with a message.
fn restart(
    archive: &Archive<'_>,
    objects: &mut rt::space::Objects,
    system: &mut system::System,
    domain: usize,
    what: &str,
) {
    match system
        .restarts
        .restart(archive, objects, &mut system.requests, domain, what)
    {
        Ok(Some(table)) => system.domains[domain].1 = table,
        Ok(None) => {}
        Err(why) => rt::println!(
            "[init] restarting protection domain \"{}\": {why}; it stays stopped",
            system.domains[domain].0
        ),
    }
}

/// The fault watcher saw a device's DMA fault: every restartable domain
/// whose fault queues hold records is restarted, its records printed.
fn io_faults(archive: &Archive<'_>, objects: &mut rt::space::Objects, system: &mut system::System) {
    let domains: Vec<usize> = system.restarts.restartable_domains().collect();
    for domain in domains {
        let records = system.requests.take_faults(domain);
        let Some(first) = records.first() else {
            continue;
        };
        for record in &records {
            rt::println!(
                "[init] IOMMU fault of protection domain \"{}\"'s device: badge {:#x}, address {:#x}, {}, stage {}, reason {:#x}",
                system.domains[domain].0,
                record.badge,
                record.address,
                if record.write { "write" } else { "read" },
                record.stage,
                record.reason
            );
        }
        let what = format!(
            "let its device DMA where the IOMMU refused ({} fault record(s), the first a {} at {:#x})",
            records.len(),
            if first.write { "write" } else { "read" },
            first.address
        );
        restart(archive, objects, system, domain, &what);
    }
}
