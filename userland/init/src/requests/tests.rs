//! Host tests of the request server against the capability model
//! (`crate::model_kernel`): what a driver asking for an IoSpace and handing
//! it back costs init, cycle after cycle.

use std::cell::RefCell;
use std::format;
use std::rc::Rc;
use std::string::String;
use std::vec::Vec;

use rt::space::Objects;
use sys::bootinfo;
use sys::resources;
use sys::{CNode, Cap, Frame, ObjectKind, PageTable};
use sysdesc::{IoMapping, MemoryRegion, PageSize, PciAddress, Rights, SystemDescription};

use super::{DomainHandle, Server};
use crate::devices::Devices;
use crate::model_kernel::ModelKernel;
use crate::tests::{domain, edu_grant, name};

/// Pages of the region the grant's `io_map` puts in every IoSpace.
const PAGES: usize = 2;
const CYCLES: usize = 10_000;

/// The edu's requester id, as a driver names it in a request.
pub(super) fn edu() -> u64 {
    u64::from(PciAddress::parse("00:04.0").unwrap().requester_id())
}

/// One driver domain with an on-request grant of 00:04.0 whose IoSpace
/// maps a `PAGES`-page region at IPA 1 MiB.
fn driver_image() -> SystemDescription {
    let mut system = SystemDescription::default();
    system
        .domains
        .push(domain("driver", "granted", 100))
        .unwrap();
    system
        .regions
        .push(MemoryRegion {
            name: name("dma"),
            size: PAGES as u64 * 4096,
            page_size: PageSize::Small,
        })
        .unwrap();
    system.dma_grants.push(edu_grant(true)).unwrap();
    system
        .io_maps
        .push(IoMapping {
            grant: 0,
            region: 0,
            ipa: 1 << 20,
            rights: Rights {
                read: true,
                write: true,
                execute: false,
            },
        })
        .unwrap();
    system
}

/// What init has left to build with.
#[derive(Debug, PartialEq, Eq)]
struct Resources {
    /// Slots of init's CNode it can still hand out.
    free_slots: u32,
    /// Bytes the RAM Untyped can still hand out.
    untyped_bytes_left: u64,
    /// Frame capabilities in init's CNode (region Frames and their copies).
    frames_held: usize,
    /// Slots of the driver's CNode init can still fill.
    driver_slots_left: u32,
}

fn resources(kernel: &ModelKernel, objects: &Objects, server: &Server) -> Resources {
    Resources {
        free_slots: objects.free_slots(),
        untyped_bytes_left: kernel.ram_bytes_left(),
        frames_held: kernel.frames_held(),
        driver_slots_left: sys::names::DOMAIN_OWN_SLOTS.start - server.domains[0].next_slot,
    }
}

/// Asks for an IoSpace, checks the driver holds one with the region mapped,
/// hands it back and checks it is gone.
fn cycle(
    kernel: &RefCell<ModelKernel>,
    objects: &mut Objects,
    server: &mut Server,
) -> Result<(), String> {
    let pci = edu();
    let driver_cnode = server.domains[0].cnode.slot().index();
    let (label, mrs) = server.handle(objects, 1, resources::SPACE, [pci, 1 << 20, 0, 0]);
    if label != 0 {
        return Err(format!("SPACE refused: label {label:#x}, mr0 {}", mrs[0]));
    }
    let given = mrs[0] as u32;
    if kernel.borrow().kind_in(driver_cnode, given) != Some(ObjectKind::IoSpace) {
        return Err(format!("no IoSpace in the driver's slot {given}"));
    }
    if kernel.borrow().io_mappings() != PAGES {
        return Err(format!(
            "{} pages mapped, not {PAGES}",
            kernel.borrow().io_mappings()
        ));
    }
    let (label, mrs) = server.handle(objects, 1, resources::RETURN_SPACE, [pci, 0, 0, 0]);
    if label != 0 {
        return Err(format!(
            "RETURN_SPACE refused: label {label:#x}, mr0 {}",
            mrs[0]
        ));
    }
    if kernel.borrow().kind_in(driver_cnode, given).is_some() || kernel.borrow().io_mappings() != 0
    {
        return Err(String::from("the IoSpace outlived RETURN_SPACE"));
    }
    Ok(())
}

/// The stand-in kernel booted, init's objects, and a server for
/// [`driver_image`] whose device was given.
pub(super) fn driver_server() -> (Rc<RefCell<ModelKernel>>, Objects, Server) {
    let (kernel, info) = ModelKernel::boot();
    let mut objects = Objects::from_boot_info(&info);
    let description = driver_image();
    let frames: Vec<Cap<Frame>> = (0..PAGES)
        .map(|_| objects.make_sized::<Frame>(12).unwrap())
        .collect();
    let cnode: Cap<CNode> = objects.make_sized::<CNode>(7).unwrap();
    let vspace: Cap<PageTable> = objects.make::<PageTable>().unwrap();
    let driver = DomainHandle {
        name: String::from("driver"),
        cnode,
        vspace,
        next_slot: 1,
        devices: 0,
    };
    let mut server = Server::new(
        description,
        std::vec![frames],
        std::vec![driver],
        Devices::default(),
    );
    // DEVICE maps the device's BAR through the PCI ECAM window, which a
    // host has not; the IoSpace only needs the device given, so the test
    // mints it as DEVICE would.
    let control = bootinfo::IOMMU_CONTROL;
    let device = control
        .mint_device(edu() as u32, objects.slot().unwrap())
        .unwrap();
    server.given[0].device = Some((device, device));

    (kernel, objects, server)
}

#[test]
fn ten_thousand_space_cycles_leave_init_as_the_first_left_it() {
    let (kernel, mut objects, mut server) = driver_server();
    cycle(&kernel, &mut objects, &mut server).expect("the first cycle");
    let after_first = resources(&kernel.borrow(), &objects, &server);
    let mut refused = Vec::new();
    for number in 2..=CYCLES {
        if let Err(why) = cycle(&kernel, &mut objects, &mut server) {
            refused.push((number, why));
        }
    }
    let after_all = resources(&kernel.borrow(), &objects, &server);
    sys::host::clear_kernel();
    let failed = format!(
        "{} of {CYCLES} cycles failed, the first: {:?}",
        refused.len(),
        refused.first()
    );
    assert_eq!(
        after_all, after_first,
        "init's resources after {CYCLES} SPACE / RETURN_SPACE cycles (left) against after the first (right); {failed}"
    );
    assert!(refused.is_empty(), "{failed}");
}

#[test]
fn a_space_init_cannot_give_dies_and_leaves_the_stock_for_the_next() {
    let (kernel, mut objects, mut server) = driver_server();
    let pci = edu();
    // The driver's CNode has no slot left for init: the IoSpace is made
    // and mapped, then cannot be given.
    let full = sys::names::DOMAIN_OWN_SLOTS.start;
    server.domains[0].next_slot = full;
    let (label, _) = server.handle(&mut objects, 1, resources::SPACE, [pci, 1 << 20, 0, 0]);
    assert_eq!(
        label,
        resources::Refusal::KernelError(sys::Error::InvalidSlot).code()
    );
    assert_eq!(kernel.borrow().live_io_spaces(), 0);
    assert_eq!(kernel.borrow().io_mappings(), 0);
    assert!(server.given[0].space.is_none());
    // A second refusal costs nothing more than the first.
    let after_one = resources(&kernel.borrow(), &objects, &server);
    server.handle(&mut objects, 1, resources::SPACE, [pci, 1 << 20, 0, 0]);
    assert_eq!(resources(&kernel.borrow(), &objects, &server), after_one);
    // With a slot free again the same memory and copies make it.
    server.domains[0].next_slot = full - 1;
    cycle(&kernel, &mut objects, &mut server).unwrap();
    assert_eq!(resources(&kernel.borrow(), &objects, &server), after_one);
    sys::host::clear_kernel();
}

/// `BAR`, `CONFIG_READ` and `CONFIG_WRITE` are answered only for a device
/// the domain was given, and only for a BAR index or offset that names
/// something; each
/// refusal is decided before init touches the PCI bus (which a host has
/// not).
#[test]
fn bar_and_configuration_requests_are_checked_before_the_bus() {
    let (kernel, mut objects, mut server) = driver_server();
    let pci = edu();
    let other = u64::from(PciAddress::parse("00:03.0").unwrap().requester_id());
    for label in [
        resources::BAR,
        resources::CONFIG_READ,
        resources::CONFIG_WRITE,
    ] {
        let (refused, _) = server.handle(&mut objects, 1, label, [other, 0, 0, 0]);
        assert_eq!(refused, resources::Refusal::NotGranted.code(), "{label:#x}");
    }
    let (label, _) = server.handle(&mut objects, 1, resources::BAR, [pci, 6, 0, 0]);
    assert_eq!(label, resources::Refusal::BadArgument.code(), "BAR 6");
    for offset in [2, 0x1000, u64::MAX] {
        let (label, _) =
            server.handle(&mut objects, 1, resources::CONFIG_READ, [pci, offset, 0, 0]);
        assert_eq!(
            label,
            resources::Refusal::BadArgument.code(),
            "offset {offset:#x}"
        );
    }
    // A configuration write anywhere but an aligned register: refused by
    // name before the bus (which register is MSI's is `pci`'s test).
    for argument in [2, 0x1000, 0x1_0000, u64::MAX] {
        let (label, _) = server.handle(
            &mut objects,
            1,
            resources::CONFIG_WRITE,
            [pci, argument, 0, 0],
        );
        assert_eq!(
            label,
            resources::Refusal::NotMsiField.code(),
            "argument {argument:#x}"
        );
    }
    server.given[0].bars = 1 << 4;
    let (label, _) = server.handle(&mut objects, 1, resources::BAR, [pci, 4, 0, 0]);
    assert_eq!(
        label,
        resources::Refusal::AlreadyGiven.code(),
        "BAR 4 twice"
    );
    server.given[0].device = None;
    let (label, _) = server.handle(&mut objects, 1, resources::BAR, [pci, 4, 0, 0]);
    assert_eq!(label, resources::Refusal::DeviceFirst.code());
    let (label, _) = server.handle(&mut objects, 1, resources::CONFIG_READ, [pci, 0, 0, 0]);
    assert_eq!(label, resources::Refusal::DeviceFirst.code());
    let (label, _) = server.handle(&mut objects, 1, resources::CONFIG_WRITE, [pci, 0x50, 0, 0]);
    assert_eq!(label, resources::Refusal::DeviceFirst.code());
    drop(kernel);
    sys::host::clear_kernel();
}

/// `MSI` is answered only where the image's grant says `msi = true`, and
/// only once the domain holds the device and its fault queue (the model
/// has no fault queues); each refusal comes before init takes a line.
#[test]
fn msi_lines_only_where_the_grant_says_so() {
    let (kernel, mut objects, mut server) = driver_server();
    let pci = edu();
    server.description.dma_grants[0].msi = false;
    let (label, _) = server.handle(&mut objects, 1, resources::MSI, [pci, 0, 0, 0]);
    assert_eq!(label, resources::Refusal::NotGranted.code(), "msi = false");
    server.description.dma_grants[0].msi = true;
    let device = server.given[0].device.take();
    let (label, _) = server.handle(&mut objects, 1, resources::MSI, [pci, 0, 0, 0]);
    assert_eq!(label, resources::Refusal::DeviceFirst.code());
    server.given[0].device = device;
    let (label, _) = server.handle(&mut objects, 1, resources::MSI, [pci, 0, 0, 0]);
    assert_eq!(
        label,
        resources::Refusal::DeviceFirst.code(),
        "no fault queue"
    );
    server.given[0].msi = Some(sys::Cap::from_slot(sys::Slot::new(1)));
    let (label, _) = server.handle(&mut objects, 1, resources::MSI, [pci, 0, 0, 0]);
    assert_eq!(label, resources::Refusal::AlreadyGiven.code());
    drop(kernel);
    sys::host::clear_kernel();
}

/// `revoke_domain`, what a restart does first (the model has no fault
/// queues: `IoFaultQueue.Bind` answers `NotSupported` there; the QEMU
/// tests `*-restart-*` cover them).
#[test]
fn a_restart_takes_back_every_iommu_capability_first() {
    let (kernel, mut objects, mut server) = driver_server();
    let pci = edu();
    let driver_cnode = server.domains[0].cnode;
    // The device as DEVICE gives it: a badged copy, and that copy in the
    // driver's CNode.
    let (device, _) = server.given[0].device.unwrap();
    let badged = objects.mint(device, sys::Rights::ALL, 0xB1).unwrap();
    server.given[0].device = Some((device, badged));
    let device_slot = 90;
    driver_cnode
        .copy_from(
            sys::Slot::new(device_slot),
            objects.cnode(),
            badged.slot(),
            sys::Rights::ALL,
        )
        .unwrap();
    let (label, mrs) = server.handle(&mut objects, 1, resources::SPACE, [pci, 1 << 20, 0, 0]);
    assert_eq!(label, 0, "SPACE");
    let space_slot = mrs[0] as u32;
    let held = |kernel: &ModelKernel, slot: u32| kernel.kind_in(driver_cnode.slot().index(), slot);
    assert_eq!(
        held(&kernel.borrow(), space_slot),
        Some(ObjectKind::IoSpace)
    );
    assert_eq!(kernel.borrow().io_mappings(), PAGES);

    let taken = server.revoke_domain(&mut objects, 0).unwrap();
    assert_eq!(taken, ["IoSpace of 00:04.0", "IoDevice 00:04.0"]);
    {
        let kernel = kernel.borrow();
        assert_eq!(
            kernel.live_io_spaces(),
            0,
            "the IoSpace outlived the restart"
        );
        assert_eq!(
            kernel.io_mappings(),
            0,
            "an IO mapping outlived the restart"
        );
        for slot in [device_slot, space_slot] {
            assert_eq!(
                held(&kernel, slot),
                None,
                "the driver still holds slot {slot}"
            );
        }
    }
    // The next run asks again: nothing is left given, and its IoSpace goes
    // into its own CNode's next slot, not the old run's.
    assert!(server.given[0].device.is_none() && server.given[0].queue.is_none());
    let (label, _) = server.handle(&mut objects, 1, resources::SPACE, [pci, 1 << 20, 0, 0]);
    assert_eq!(label, resources::Refusal::DeviceFirst.code());
    let cnode: Cap<CNode> = objects.make_sized::<CNode>(7).unwrap();
    let vspace: Cap<PageTable> = objects.make::<PageTable>().unwrap();
    server.replace_domain(
        0,
        DomainHandle {
            name: String::from("driver"),
            cnode,
            vspace,
            next_slot: 1,
            devices: 0,
        },
    );
    let device = bootinfo::IOMMU_CONTROL
        .mint_device(pci as u32, objects.slot().unwrap())
        .unwrap();
    server.given[0].device = Some((device, device));
    let (label, mrs) = server.handle(&mut objects, 1, resources::SPACE, [pci, 1 << 20, 0, 0]);
    assert_eq!(label, 0, "SPACE of the next run");
    assert_eq!(
        kernel.borrow().kind_in(cnode.slot().index(), mrs[0] as u32),
        Some(ObjectKind::IoSpace)
    );
    assert_eq!(kernel.borrow().io_mappings(), PAGES);
    sys::host::clear_kernel();
}
