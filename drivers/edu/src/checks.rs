//! Checks the IOMMU system tests share (the `edu` suite, `userland/tests/sva`):
//! a failure built from an error, a DMA round trip, and the fault record a
//! blocked DMA must leave in a fault queue.

use crate::device::Edu;
use crate::nested::Buffer;
use crate::{LENGTH, PATTERN};
use rt::check;
use rt::testing::{Failure, Outcome};
use sys::{Cap, IoFaultQueue};

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
