//! `notbuilt`: the release kernel, built without its cold IOMMU features
//! (kernel/Cargo.toml: `sva`, `dirty`, `page-requests`), refuses their
//! invocations with `NotBuilt` and does not offer them in `Identify`.
//! Runs as the root task on both machines, on a unit that has what the
//! features would use where QEMU has it (x86_64: VT-d `x-flts`, whose
//! first stage a full kernel offers for SVA and dirty tracking; aarch64:
//! the SMMUv3's stage 1).
//!
//! - `Identify` clears MR1 bit 0 (SVA), MR5 bit 0 (dirty tracking) and
//!   bits 2 and 3 (page requests, stalls).
//! - `IoDevice.BindVSpace` and `IoPasid.BindVSpace` answer `NotBuilt`.
//! - `IoSpace.SetDirtyTracking` and `ReadDirty` answer `NotBuilt`.
//! - `IoFaultQueue.Respond` answers `NotBuilt`.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use rt::check;
use rt::space::Objects;
use rt::testing::{Failure, Outcome, Suite};
use sys::bootinfo;
use sys::{
    Cap, Error, Frame, IoDevice, IoFaultQueue, IommuControl, Notification, PageResponse, PageTable,
    Retype,
};

rt::entry!(main);

fn control() -> Cap<IommuControl> {
    bootinfo::IOMMU_CONTROL
}

/// A requester no device on either machine uses: nothing DMAs.
const REQUESTER: u32 = 0x50;

fn failure(what: &str, e: Error) -> Failure {
    Failure(rt::__format!("{what}: {e:?}"))
}

/// One object of the kind the caller names, 4 KiB where it has a size.
fn make<T: Retype>(objects: &mut Objects) -> Result<Cap<T>, Failure> {
    objects.make_sized(12).map_err(|e| failure("retype", e))
}

/// The IoDevice of [`REQUESTER`], minted once.
fn device(objects: &mut Objects) -> Result<Cap<IoDevice>, Failure> {
    let slot = objects.slot().map_err(|e| failure("a free slot", e))?;
    control()
        .mint_device(REQUESTER, slot)
        .map_err(|e| failure("MintDevice", e))
}

fn main(_startup: &rt::Startup) -> i32 {
    let Some(info) = rt::boot::boot_info() else {
        rt::println!("notbuilt: no boot-info page");
        return 1;
    };
    let mut objects = Objects::from_boot_info(info);
    let mut suite = Suite::new();
    suite.run(
        "identify_offers_nothing_not_built",
        identify_offers_nothing_not_built,
    );
    let device = device(&mut objects);
    suite.run("bind_vspace_is_not_built", || {
        bind_vspace_is_not_built(&mut objects, device.clone())
    });
    suite.run("dirty_tracking_is_not_built", || {
        dirty_tracking_is_not_built(&mut objects)
    });
    suite.run("respond_is_not_built", || {
        respond_is_not_built(&mut objects, device.clone())
    });
    suite.finish()
}

fn identify_offers_nothing_not_built() -> Outcome {
    let identified = control().identify();
    let Ok(info) = identified else {
        rt::fail!("Identify: {identified:?}");
    };
    check!(!info.stage1, "SVA (MR1 bit 0) offered: {info:?}");
    check!(
        !info.dirty_tracking,
        "dirty tracking (MR5 bit 0) offered: {info:?}"
    );
    check!(
        !info.page_requests && !info.stall,
        "page requests or stalls (MR5 bits 2, 3) offered: {info:?}"
    );
    Ok(())
}

fn bind_vspace_is_not_built(
    objects: &mut Objects,
    device: Result<Cap<IoDevice>, Failure>,
) -> Outcome {
    let device = device?;
    let root: Cap<PageTable> = make(objects)?;
    let bound = device.bind_vspace(root);
    check!(
        bound == Err(Error::NotBuilt),
        "IoDevice.BindVSpace: {bound:?}"
    );
    let slot = objects.slot().map_err(|e| failure("a free slot", e))?;
    let minted = device.mint_pasid(0, slot);
    let Ok(pasid) = minted else {
        rt::fail!("MintPasid 0: {minted:?}");
    };
    let bound = pasid.bind_vspace(root);
    check!(
        bound == Err(Error::NotBuilt),
        "IoPasid.BindVSpace: {bound:?}"
    );
    Ok(())
}

fn dirty_tracking_is_not_built(objects: &mut Objects) -> Outcome {
    let space = objects
        .make_io_space(control())
        .map_err(|e| failure("retype an IoSpace", e))?;
    let bitmap: Cap<Frame> = make(objects)?;
    let set = space.set_dirty_tracking(true);
    check!(set == Err(Error::NotBuilt), "SetDirtyTracking: {set:?}");
    let read = space.read_dirty(0, 1, bitmap, true);
    check!(read == Err(Error::NotBuilt), "ReadDirty: {read:?}");
    Ok(())
}

fn respond_is_not_built(objects: &mut Objects, device: Result<Cap<IoDevice>, Failure>) -> Outcome {
    let device = device?;
    let queue: Cap<IoFaultQueue> = make(objects)?;
    let notification: Cap<Notification> = make(objects)?;
    let bound = queue.bind(notification, device);
    check!(bound.is_ok(), "Bind: {bound:?}");
    let answered = queue.respond(1, PageResponse::Success);
    check!(answered == Err(Error::NotBuilt), "Respond: {answered:?}");
    Ok(())
}
