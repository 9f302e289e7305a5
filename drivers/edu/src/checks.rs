//! Checks the IOMMU system tests share (the `edu` suite, `userland/tests/sva`):
//! a failure built from an error, a DMA round trip, and the fault record a
//! blocked DMA must leave in a fault queue.

use crate::device::Edu;
use crate::nested::{Buffer, fault_queue};
use crate::{LENGTH, PATTERN};
use rt::check;
use rt::space::Objects;
use rt::testing::{Failure, Outcome};
use sys::{Cap, IoDevice, IoFaultQueue, IommuControl, PageTable, Rights};

/// A test failure: `what` went wrong with `e`.
pub fn failure(what: &str, e: impl core::fmt::Debug) -> Failure {
    Failure(rt::__format!("{what}: {e:?}"))
}

/// Takes every fault record of `queue` (the IOMMU recorded them while the
/// DMA ran; Pop collects them) and checks the first against `badge` and,
/// if given, the faulting `page`. Never blocks: a missing record is a
/// failure.
pub fn expect_fault(queue: Cap<IoFaultQueue>, badge: u64, page: Option<u64>) -> Outcome {
    let first = queue.pop();
    let Ok(Some(record)) = first else {
        rt::fail!("no fault record: {first:?}")
    };
    while let Ok(Some(_)) = queue.pop() {}
    check!(
        record.badge == badge,
        "fault record badge {:#x}, not the device capability's {badge:#x}",
        record.badge
    );
    if let Some(page) = page {
        check!(
            record.address & !0xfff == page,
            "fault record address {:#x}, not in page {page:#x}",
            record.address
        );
    }
    Ok(())
}

/// A DMA round trip: `edu` reads [`LENGTH`] bytes of [`PATTERN`] from
/// `source` (at device address `from`) and writes them to `destination`
/// (at `to`); exactly those bytes land, and `queue` holds no fault.
pub fn round_trip(
    edu: &Edu,
    (source, from): (&Buffer, u64),
    (destination, to): (&Buffer, u64),
    queue: Cap<IoFaultQueue>,
) -> Outcome {
    source.fill(PATTERN);
    destination.fill(0);
    edu.read_memory(from, LENGTH)?;
    edu.write_memory(to, LENGTH)?;
    let landed = (0..LENGTH).all(|i| destination.read(i) == PATTERN);
    check!(
        landed,
        "the destination holds {:#x}.. after the round trip",
        destination.read(0)
    );
    let beyond = (LENGTH..4096).all(|i| destination.read(i) == 0);
    check!(beyond, "bytes beyond the {LENGTH} moved changed");
    let faults = queue.pop();
    check!(
        faults == Ok(None),
        "a fault record after good DMA: {faults:?}"
    );
    Ok(())
}

/// The edu a system test drives in PCI slot `slot` (QEMU gave it a 64-bit
/// DMA mask), its IoDevice capability, a copy badged `badge` and a fault
/// queue bound to that copy (the records carry the badge).
pub struct SlotDevice {
    /// The device's registers.
    pub edu: Edu,
    /// Its IoDevice capability, unbadged.
    pub device: Cap<IoDevice>,
    /// The copy badged with the caller's badge.
    pub badged: Cap<IoDevice>,
    /// The fault queue bound to `badged`.
    pub queue: Cap<IoFaultQueue>,
}

/// Finds the edu in `slot` of bus 0 (mapping its registers in `vspace`)
/// and makes its capabilities from `control`: [`SlotDevice`].
pub fn device_in_slot(
    objects: &mut Objects,
    control: Cap<IommuControl>,
    vspace: Cap<PageTable>,
    slot: u8,
    badge: u64,
) -> Result<SlotDevice, Failure> {
    let found = Edu::find_all(objects, vspace)?;
    let Some(edu) = found.into_iter().flatten().find(|e| e.bdf.device == slot) else {
        rt::fail!(
            "no edu in slot {slot:#x}; add -device edu,dma_mask=0xffffffffffffffff,addr={slot:#x}"
        )
    };
    let free = objects.slot().map_err(|e| failure("slot", e))?;
    let device = control
        .mint_device(edu.requester(), free)
        .map_err(|e| failure("MintDevice", e))?;
    let badged = objects
        .mint(device, Rights::ALL, badge)
        .map_err(|e| failure("badge the device capability", e))?;
    let (queue, _) = fault_queue(objects, badged)?;
    Ok(SlotDevice {
        edu,
        device,
        badged,
        queue,
    })
}

/// A kernel with the abstraction check (`fuzz-checks`: the seeded rows')
/// finds every device entry explained by the capability state (`when`
/// names the moment); other kernels answer `NotSupported`, and there is
/// nothing to check.
pub fn abstraction_holds(when: &str) -> Outcome {
    match sys::debug_check_abstraction() {
        Ok(()) | Err(sys::Error::NotSupported) => Ok(()),
        Err(e) => rt::fail!("the kernel's abstraction check {when}: {e:?}"),
    }
}
