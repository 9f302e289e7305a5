//! The driver as a protection domain of the default image: it asks init for
//! its IOMMU capabilities at run time, builds its own stage-1 table, DMAs
//! through it, hands its IoSpace back, and watches the next DMA be blocked
//! and reported. Every step prints a sentence; the checks are test lines
//! (`cargo xtask test` runs the default image on both machines).
//!
//! The image (`images/default.toml`) maps `dma_buffer` (8 KiB) at
//! [`BUFFER_VA`] and `edu_tables` (16 KiB) at [`TABLES_VA`] here, and at
//! [`BUFFER_IPA`] / [`TABLES_IPA`] in the IoSpace init gives.

use crate::device::Edu;
use crate::{LENGTH, PATTERN};
use iopt::{BitmapPool, Config, InvalidationRange, IoPageTable, SliceMemory};
use rt::check;
use rt::mmio::Window;
use rt::testing::{Failure, Outcome, Suite};
use sys::names::CapTable;
use sys::resources::{self, Refusal, RequestError};
use sys::{Cap, Endpoint, IoFaultQueue, IoSpace, IoUserTable, Notification, Slot};

/// The image's `dma_buffer`: here and in the IoSpace.
const BUFFER_VA: u64 = 0x4000_0000;
const BUFFER_IPA: u64 = 0x10_0000;
/// The image's `edu_tables` (four table frames): here and in the IoSpace.
const TABLES_VA: u64 = 0x5000_0000;
const TABLES_IPA: u64 = 0x4000;
const TABLE_FRAMES: usize = 4;
/// The IOVAs the driver gives the buffer's two pages.
const SOURCE_IOVA: u64 = 0x20_0000;
const DESTINATION_IOVA: u64 = 0x20_1000;
/// The device the image grants (on request), and one it does not.
const EDU: (u8, u8, u8) = (0, 4, 0);
const NOT_GRANTED: (u8, u8, u8) = (0, 3, 0);
/// The badge the driver asks for on its device capability.
const BADGE: u64 = 0xED;
/// The IoSpace size the grant allows.
const SPACE_SIZE: u64 = 2 << 20;
/// A slot of the driver's own (`sys::names::DOMAIN_OWN_SLOTS`).
const USER_TABLE_SLOT: Slot = Slot::new(100);

#[cfg(target_arch = "x86_64")]
const FORMAT: (iopt::Format, sys::UserTableFormat, u32) = (
    iopt::Format::VtdFirstStage,
    sys::UserTableFormat::X86FirstStage4Level,
    48,
);
#[cfg(target_arch = "aarch64")]
const FORMAT: (iopt::Format, sys::UserTableFormat, u32) = (
    iopt::Format::ArmStage1,
    sys::UserTableFormat::ArmStage1Granule4k48Bit,
    44,
);

fn failure(what: &str, e: impl core::fmt::Debug) -> Failure {
    Failure(rt::__format!("{what}: {e:?}"))
}

/// Byte `i` of the buffer (volatile: the device writes it).
#[allow(unsafe_code)]
fn buffer(i: u64) -> u8 {
    // SAFETY: the image maps `dma_buffer` (8 KiB) read-write at BUFFER_VA
    // for the domain's life; `i` is masked into it.
    unsafe { ((BUFFER_VA + (i & 0x1fff)) as *const u8).read_volatile() }
}

/// Fills buffer page `page` with `value`.
#[allow(unsafe_code)]
fn fill(page: u64, value: u8) {
    // SAFETY: as in `buffer`; page 0 or 1 of the 8 KiB region.
    unsafe { core::ptr::write_bytes((BUFFER_VA + 4096 * (page & 1)) as *mut u8, value, 4096) }
}

/// The table frames, as iopt's memory.
#[allow(unsafe_code)]
fn table_frames() -> &'static mut [[u64; 512]] {
    // SAFETY: the image maps `edu_tables` (16 KiB) read-write at TABLES_VA
    // for the domain's life, and this is the only Rust view of it (called
    // once).
    unsafe { core::slice::from_raw_parts_mut(TABLES_VA as *mut [u64; 512], TABLE_FRAMES) }
}

struct Invalidate(Cap<IoUserTable>);

impl iopt::Invalidator for Invalidate {
    type Error = sys::Error;
    fn invalidate_range(&mut self, range: InvalidationRange) -> Result<(), sys::Error> {
        self.0.invalidate_range(range.iova, range.len)
    }
    fn invalidate_all(&mut self) -> Result<(), sys::Error> {
        self.0.invalidate_range(0, 4 << 20)
    }
}

/// What the steps share.
struct Driver {
    init: Cap<Endpoint>,
    edu: Option<Edu>,
    space: Option<Cap<IoSpace>>,
    /// The driver's stage-1 table once bound.
    table: Option<Cap<IoUserTable>>,
    queue: Option<(Cap<IoFaultQueue>, Cap<Notification>)>,
}

/// Runs the story; returns the exit status.
pub fn run(table: &CapTable) -> i32 {
    let mut suite = Suite::new();
    let Some(init) = table.lookup::<Endpoint>("init") else {
        suite.run("capabilities_from_init", || {
            rt::fail!("no endpoint named `init`: the image grants nothing on request")
        });
        return suite.finish();
    };
    let mut driver = Driver {
        init,
        edu: None,
        space: None,
        table: None,
        queue: None,
    };
    rt::println!("[edu_driver] started with no IOMMU capability; asking init for them");
    suite.run("capabilities_from_init", || ask(&mut driver));
    suite.run("nested_dma_through_its_own_stage1", || dma(&mut driver));
    suite.run("returned_space_blocks_the_next_dma", || {
        returned(&mut driver)
    });
    suite.run("requests_outside_the_grant_are_refused", || {
        refusals(&driver)
    });
    rt::println!("[edu_driver] done");
    suite.finish()
}

fn pci((bus, device, function): (u8, u8, u8)) -> u64 {
    resources::pci_address(bus, device, function)
}

fn ask(d: &mut Driver) -> Outcome {
    let (device, registers) = resources::request_device(d.init, pci(EDU), BADGE)
        .map_err(|e| failure("asking for the edu at 00:04.0", e))?;
    rt::println!(
        "[edu_driver] init gave the edu at 00:04.0: IoDevice in slot {}, registers at {registers:#x}",
        device.slot()
    );
    let page = Window::granted(registers & !0xfff, 4096);
    let bdf = pci::Bdf::new(EDU.0, EDU.1, EDU.2);
    let edu = Edu::at(bdf, page, registers & 0xfff)?;
    let space = resources::request_space(d.init, pci(EDU), SPACE_SIZE)
        .map_err(|e| failure("asking for a 2 MiB IoSpace", e))?;
    rt::println!(
        "[edu_driver] init gave a 2 MiB IoSpace (slot {}) holding its buffer and table frames",
        space.slot()
    );
    let (queue, signal) = resources::request_fault_queue(d.init, pci(EDU))
        .map_err(|e| failure("asking for a fault queue", e))?;
    rt::println!(
        "[edu_driver] init gave a fault queue (slot {}) that signals slot {}",
        queue.slot(),
        signal.slot()
    );
    // Attach the device to its own stage-1 table, nested under the IoSpace.
    let table = space
        .bind_user_table(TABLES_IPA, FORMAT.1, USER_TABLE_SLOT)
        .map_err(|e| failure("IoSpace.BindUserTable", e))?;
    device
        .attach_nested(table)
        .map_err(|e| failure("IoDevice.AttachNested", e))?;
    d.edu = Some(edu);
    d.space = Some(space);
    d.queue = Some((queue, signal));
    d.table = Some(table);
    Ok(())
}

fn dma(d: &mut Driver) -> Outcome {
    let Some(edu) = &d.edu else {
        rt::fail!("no device from init")
    };
    let Some(table) = d.table else {
        rt::fail!("no stage-1 table bound")
    };
    let memory = SliceMemory::new(TABLES_IPA, table_frames())
        .ok_or_else(|| failure("table memory", "misaligned"))?;
    let pool = BitmapPool::<1>::new(TABLES_IPA, TABLE_FRAMES)
        .ok_or_else(|| failure("table pool", "does not fit"))?;
    let config = Config::new(FORMAT.0)
        .with_ipa_bits(FORMAT.2)
        .map_err(|e| failure("iopt config", e))?;
    let mut stage1 = IoPageTable::new(config, pool, memory).map_err(|e| failure("iopt", e))?;
    stage1
        .map(SOURCE_IOVA, BUFFER_IPA, 4096, iopt::Rights::READ)
        .and_then(|()| {
            stage1.map(
                DESTINATION_IOVA,
                BUFFER_IPA + 4096,
                4096,
                iopt::Rights::READ_WRITE,
            )
        })
        .map_err(|e| failure("stage-1 map", e))?;
    stage1
        .flush(&mut Invalidate(table))
        .map_err(|e| failure("IoUserTable.Invalidate", e))?;
    rt::println!(
        "[edu_driver] built its own stage-1 table ({} table pages) and invalidated it: IOVA {SOURCE_IOVA:#x} -> its buffer, read-only; {DESTINATION_IOVA:#x} -> the next page, read-write",
        stage1.stats().tables_live
    );
    fill(0, PATTERN);
    fill(1, 0);
    edu.read_memory(SOURCE_IOVA, LENGTH)?;
    edu.write_memory(DESTINATION_IOVA, LENGTH)?;
    let landed = (0..LENGTH).all(|i| buffer(4096 + i) == PATTERN);
    check!(
        landed,
        "the destination holds {:#x}, not the pattern",
        buffer(4096)
    );
    rt::println!(
        "[edu_driver] DMA worked: the edu read {LENGTH} bytes of {PATTERN:#x} through IOVA {SOURCE_IOVA:#x} and wrote them back through {DESTINATION_IOVA:#x}"
    );
    Ok(())
}

fn returned(d: &mut Driver) -> Outcome {
    let (Some(edu), Some((queue, signal))) = (&d.edu, d.queue) else {
        rt::fail!("no device or fault queue from init")
    };
    rt::println!("[edu_driver] hands its IoSpace back to init");
    resources::return_space(d.init, pci(EDU)).map_err(|e| failure("returning the IoSpace", e))?;
    d.space = None;
    fill(1, 0);
    edu.write_memory(DESTINATION_IOVA, LENGTH)?;
    check!(
        (0..4096).all(|i| buffer(4096 + i) == 0),
        "DMA landed after init revoked the IoSpace"
    );
    let word = signal.wait();
    check!(word.is_ok(), "waiting for the fault notification: {word:?}");
    let record = queue.pop();
    let Ok(Some(record)) = record else {
        rt::fail!("no fault record: {record:?}")
    };
    while let Ok(Some(_)) = queue.pop() {}
    check!(
        record.badge == BADGE,
        "the fault record's badge is {:#x}, not {BADGE:#x}",
        record.badge
    );
    rt::println!(
        "[edu_driver] the next DMA was blocked: nothing landed, and the fault queue reports device badge {:#x}, address {:#x}, {}, reason {:#x}",
        record.badge,
        record.address,
        if record.write { "a write" } else { "a read" },
        record.reason
    );
    Ok(())
}

fn refusals(d: &Driver) -> Outcome {
    let other = resources::request_device(d.init, pci(NOT_GRANTED), 1);
    check!(
        matches!(other, Err(RequestError::Refused(Refusal::NotGranted))),
        "asking for 00:03.0, which the image does not grant: {other:?}"
    );
    rt::println!("[edu_driver] asked for 00:03.0, which the image does not give it: init refused");
    let again = resources::request_device(d.init, pci(EDU), BADGE);
    check!(
        matches!(again, Err(RequestError::Refused(Refusal::AlreadyGiven))),
        "asking for the edu twice: {again:?}"
    );
    let larger = resources::request_space(d.init, pci(EDU), 2 * SPACE_SIZE);
    check!(
        matches!(larger, Err(RequestError::Refused(Refusal::TooLarge))),
        "asking for a 4 MiB IoSpace: {larger:?}"
    );
    rt::println!(
        "[edu_driver] asked for the edu again and for a 4 MiB IoSpace: init refused both (already given; above the grant's 2 MiB)"
    );
    Ok(())
}
