//! `dirty`: the system tests of live dirty tracking (`IoSpace.SetDirtyTracking`,
//! `IoSpace.ReadDirty`), booted as the root task with QEMU's edu device on
//! a VT-d unit with first-stage translation only (`x-flts=on`). There the
//! kernel holds IoSpaces as first-stage tables, whose D bits QEMU sets on
//! every DMA write, so the driver reads what the device wrote:
//!
//! - The device writes a known set of pages while the driver loops
//!   read-and-clear: every written page is reported at least once, and no
//!   page that was not written is.
//! - A page written, reported and cleared, then written again through its
//!   cached translation, is reported in the next round (the clear is
//!   followed by an invalidation; seeded `dirty-skip-flush` removes it).
//! - Both calls need the write right (the IoSpace's, and the bitmap
//!   Frame's for `ReadDirty`).
//! - Deleting the IoSpace while tracking, with a transfer in flight, is
//!   safe: the transfer faults, nothing lands, the calls answer an error.
//!
//! It also prints the `bench` line `io-read-dirty-512` for `cargo xtask
//! bench`: one `ReadDirty` with clear over 512 mapped pages, one of them
//! dirty (so the invalidation and its wait are in it).
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use edu::checks::failure;
use edu::device::Edu;
use edu::nested::Buffer;
use edu::{LENGTH, PATTERN};
use rt::bench::counter;
use rt::check;
use rt::space::{Objects, map_frame};
use rt::testing::{Failure, Outcome, Suite};
use sys::bootinfo;
use sys::{Cap, Frame, IoFaultQueue, IoSpace, IommuControl, MapRights, PageTable, Rights};

rt::entry!(main);

/// The edu QEMU was given a 64-bit DMA mask (`tools/xtask/system-tests.toml`).
const EDU_SLOT: u8 = 0x10;
/// The badge of the device capability the fault queue is bound with.
const BADGE: u64 = 0xD1D;
/// Where the tracked pages sit in the IoSpace, and how many there are.
const DATA_IPA: u64 = 0x100_0000;
const PAGES: u64 = 16;
/// The pages the device writes while the driver reads and clears.
const WRITTEN: [u64; 5] = [0, 2, 3, 7, 12];
/// `ReadDirty` calls the driver makes while one transfer is in flight.
const READS_PER_TRANSFER: usize = 8;
/// Samples of the benchmark (the median is printed): each needs a
/// transfer, about 7 s of host time under icount, so fewer than the
/// usual `rt::bench::BATCHES`; the counts are deterministic anyway.
const BENCH_SAMPLES: usize = 3;
/// The benchmark's 512 pages (one 2 MiB region of the IoSpace).
const BENCH_IPA: u64 = 0x400_0000;
const BENCH_PAGES: u64 = 512;
/// Guest instructions a transfer takes to land: edu completes it 100 ms
/// of virtual time after it starts, which under `-icount shift=0` (`cargo
/// xtask bench`) is 1e8 instructions. Spent polling edu's register (one
/// exit to QEMU per poll) they take about half a minute of host time; in
/// a plain loop, about a second. Without icount the loop is only a delay.
const TRANSFER_INSTRUCTIONS: u64 = 100_000_000;

/// The driver's view of the bitmap Frame and of data page 0.
const BITMAP_VA: u64 = 0x60_0000_0000;
const ALIAS_VA: u64 = 0x60_0010_0000;

const CONTROL: Cap<IommuControl> = bootinfo::IOMMU_CONTROL;
const OWN: Cap<PageTable> = bootinfo::INIT_VSPACE;

/// The driver: its device attached to a tracked IoSpace.
struct Driver {
    edu: Edu,
    queue: Cap<IoFaultQueue>,
    space: Cap<IoSpace>,
    /// The bitmap Frame, mapped at [`BITMAP_VA`] (`io` is the capability
    /// `ReadDirty` writes through).
    bitmap: Buffer,
    /// Data page 0 as the driver sees it.
    alias: Buffer,
}

fn main(_startup: &rt::Startup) -> i32 {
    let Some(info) = rt::boot::boot_info() else {
        rt::println!("dirty: no boot-info page");
        return 1;
    };
    let mut objects = Objects::from_boot_info(info);
    let mut suite = Suite::new();
    let mut driver = None;
    suite.run("tracking_starts_clean", || {
        driver = Some(set_up(&mut objects)?);
        Ok(())
    });
    let mut with = |name: &str, test: &mut dyn FnMut(&mut Driver, &mut Objects) -> Outcome| {
        suite.run(name, || match driver.as_mut() {
            Some(d) => test(d, &mut objects),
            None => rt::fail!("the driver was not set up"),
        });
    };
    // First, so `cargo xtask bench` (which stops a boot after two minutes)
    // sees its line: every transfer is 1e8 guest instructions under icount.
    with("read_dirty_512_pages_bench", &mut |d, o| bench(d, o));
    with("every_written_page_is_reported", &mut |d, _| {
        every_written_page_is_reported(d)
    });
    with(
        "written_after_a_clear_is_reported_next_round",
        &mut |d, _| written_after_a_clear(d),
    );
    with("dirty_access_needs_write", &mut |d, o| needs_write(d, o));
    with("deleting_the_space_mid_tracking_is_safe", &mut |d, o| {
        delete_mid_tracking(d, o)
    });
    suite.finish()
}

/// A fresh 4 KiB Frame.
fn frame(objects: &mut Objects) -> Result<Cap<Frame>, Failure> {
    objects
        .make_sized::<Frame>(12)
        .map_err(|e| failure("retype a Frame", e))
}

fn set_up(objects: &mut Objects) -> Result<Driver, Failure> {
    let info = CONTROL
        .identify()
        .map_err(|e| failure("IommuIdentify", e))?;
    if !(info.dirty_tracking && info.first_stage_spaces && !info.stage2) {
        rt::fail!(
            "IommuIdentify: dirty tracking {}, first-stage IoSpaces {}, stage 2 {}; boot with intel-iommu,x-scalable-mode=on,x-flts=on,aw-bits=48",
            info.dirty_tracking,
            info.first_stage_spaces,
            info.stage2
        );
    }
    let edu::checks::SlotDevice {
        edu, device, queue, ..
    } = edu::checks::device_in_slot(objects, CONTROL, OWN, EDU_SLOT, BADGE)?;
    let space = objects
        .make_io_space(CONTROL)
        .map_err(|e| failure("an IoSpace", e))?;
    let mut first = None;
    for page in 0..PAGES {
        let f = frame(objects)?;
        space
            .map(f, DATA_IPA + page * 4096, MapRights::READ_WRITE)
            .map_err(|e| failure("IoSpace.Map", e))?;
        first.get_or_insert(f);
    }
    let Some(first) = first else {
        rt::fail!("no data page")
    };
    let copy = objects
        .mint(first, Rights::ALL, 0)
        .map_err(|e| failure("copy data page 0's Frame", e))?;
    map_frame(objects, copy, OWN, ALIAS_VA, MapRights::READ_WRITE)
        .map_err(|e| failure("map data page 0 in the driver", e))?;
    let alias = Buffer {
        cpu: ALIAS_VA,
        ipa: DATA_IPA,
        io: copy,
    };
    // x86 paging cannot refuse a read: no write-only IO mapping here.
    let write_only = frame(objects)?;
    let refused = space.map(write_only, DATA_IPA + PAGES * 4096, MapRights::WRITE);
    check!(
        refused == Err(sys::Error::NotSupported),
        "a write-only mapping in a first-stage IoSpace: {refused:?}"
    );
    // A plain attach works without a second stage.
    device
        .attach(space)
        .map_err(|e| failure("IoDevice.Attach", e))?;
    edu::checks::abstraction_holds("with a first-stage IoSpace attached")?;
    let bitmap_frame = frame(objects)?;
    map_frame(objects, bitmap_frame, OWN, BITMAP_VA, MapRights::READ_WRITE)
        .map_err(|e| failure("map the bitmap", e))?;
    let bitmap = Buffer {
        cpu: BITMAP_VA,
        ipa: 0,
        io: bitmap_frame,
    };
    let driver = Driver {
        edu,
        queue,
        space,
        bitmap,
        alias,
    };
    // DMA both ways through the first-stage IoSpace, before tracking (a
    // read by the device would let QEMU's IOTLB skip a later D update;
    // the flush when tracking starts drops it).
    driver.alias.fill(PATTERN);
    driver.edu.start_read_memory(DATA_IPA, LENGTH);
    settle(&driver.edu)?;
    driver.alias.fill(0);
    write(&driver, 0)?;
    check!(
        (0..LENGTH).all(|i| driver.alias.read(i) == PATTERN),
        "DMA through the first-stage IoSpace did not land"
    );
    let off = driver
        .space
        .read_dirty(DATA_IPA, PAGES, driver.bitmap.io, false);
    check!(
        off == Err(sys::Error::NotSupported),
        "ReadDirty with tracking off: {off:?}"
    );
    driver
        .space
        .set_dirty_tracking(true)
        .map_err(|e| failure("SetDirtyTracking(on)", e))?;
    // Pages written before tracking started are not reported.
    let start = read(&driver, true)?;
    check!(start == 0, "pages {start:#x} dirty when tracking started");
    Ok(driver)
}

/// `ReadDirty` over the data pages: the dirty set as a bit mask (bit `p`:
/// page `p`), checked against the call's count and the rest of the
/// bitmap.
fn read(d: &Driver, clear: bool) -> Result<u64, Failure> {
    d.bitmap.fill(0xFF);
    let (next, count) = d
        .space
        .read_dirty(DATA_IPA, PAGES, d.bitmap.io, clear)
        .map_err(|e| failure("ReadDirty", e))?;
    check!(
        next == DATA_IPA + PAGES * 4096,
        "ReadDirty stopped at {next:#x}"
    );
    let mask = (0..PAGES / 8).fold(0u64, |m, i| m | u64::from(d.bitmap.read(i)) << (8 * i));
    check!(
        u64::from(mask.count_ones()) == count,
        "ReadDirty counted {count}, its bitmap {mask:#x}"
    );
    // The bitmap holds 512 bits; those past the range are cleared.
    check!(
        (PAGES / 8..64).all(|i| d.bitmap.read(i) == 0),
        "bits past the range are set"
    );
    Ok(mask)
}

fn mask_of(pages: &[u64]) -> u64 {
    pages.iter().fold(0, |m, p| m | 1 << p)
}

/// Waits for edu's transfer: [`TRANSFER_INSTRUCTIONS`] in a loop, then
/// its (bounded) status poll.
fn settle(edu: &Edu) -> Outcome {
    let mut spun = 0u64;
    // About four instructions per round.
    for _ in 0..TRANSFER_INSTRUCTIONS / 4 {
        spun = core::hint::black_box(spun + 1);
    }
    edu.wait()
}

/// The device writes [`LENGTH`] bytes at the start of data page `page`.
fn write(d: &Driver, page: u64) -> Outcome {
    write_at(d, DATA_IPA + page * 4096)
}

fn write_at(d: &Driver, ipa: u64) -> Outcome {
    d.edu.start_write_memory(ipa, LENGTH);
    settle(&d.edu)
}

fn no_faults(d: &Driver) -> Outcome {
    let popped = d.queue.pop();
    check!(popped == Ok(None), "a fault: {popped:?}");
    Ok(())
}

fn every_written_page_is_reported(d: &mut Driver) -> Outcome {
    let mut seen = 0;
    for &page in &WRITTEN {
        // The transfer lands 100 ms (virtual) after it starts; the driver
        // reads and clears meanwhile, then once more after it landed.
        d.edu.start_write_memory(DATA_IPA + page * 4096, LENGTH);
        for _ in 0..READS_PER_TRANSFER {
            seen |= read(d, true)?;
        }
        settle(&d.edu)?;
        seen |= read(d, true)?;
    }
    let written = mask_of(&WRITTEN);
    check!(
        seen & written == written,
        "written pages {:#x} never reported",
        written & !seen
    );
    check!(
        seen & !written == 0,
        "pages {:#x} reported but never written",
        seen & !written
    );
    no_faults(d)
}

fn written_after_a_clear(d: &mut Driver) -> Outcome {
    write(d, 5)?;
    let first = read(d, true)?;
    check!(first == mask_of(&[5]), "round 1 reported {first:#x}");
    // The device's IOTLB holds page 5's translation from the first write;
    // only the clear's invalidation makes this write set D again.
    write(d, 5)?;
    write(d, 9)?;
    let second = read(d, true)?;
    check!(
        second == mask_of(&[5, 9]),
        "round 2 reported {second:#x}, not pages 5 and 9"
    );
    let third = read(d, true)?;
    check!(third == 0, "round 3 (nothing written) reported {third:#x}");
    no_faults(d)
}

fn needs_write(d: &mut Driver, objects: &mut Objects) -> Outcome {
    let space = objects
        .mint(d.space, Rights::READ, 0)
        .map_err(|e| failure("a read-only IoSpace capability", e))?;
    let bitmap = objects
        .mint(d.bitmap.io, Rights::READ, 0)
        .map_err(|e| failure("a read-only bitmap capability", e))?;
    let on = space.set_dirty_tracking(true);
    let read_only_space = space.read_dirty(DATA_IPA, PAGES, d.bitmap.io, true);
    let read_only_bitmap = d.space.read_dirty(DATA_IPA, PAGES, bitmap, true);
    for slot in [space.slot(), bitmap.slot()] {
        objects
            .delete(slot)
            .map_err(|e| failure("delete a copy", e))?;
    }
    check!(
        on == Err(sys::Error::InsufficientRights),
        "SetDirtyTracking through a read-only IoSpace capability: {on:?}"
    );
    check!(
        read_only_space == Err(sys::Error::InsufficientRights),
        "ReadDirty through a read-only IoSpace capability: {read_only_space:?}"
    );
    check!(
        read_only_bitmap == Err(sys::Error::InsufficientRights),
        "ReadDirty into a read-only bitmap: {read_only_bitmap:?}"
    );
    Ok(())
}

/// The median counter ticks of `ReadDirty` with clear over 512 mapped
/// pages, one of which the device wrote just before (untimed).
fn bench(d: &mut Driver, objects: &mut Objects) -> Outcome {
    for page in 0..BENCH_PAGES {
        let f = frame(objects)?;
        d.space
            .map(f, BENCH_IPA + page * 4096, MapRights::READ_WRITE)
            .map_err(|e| failure("map a benchmark page", e))?;
    }
    let mut samples = [0u64; BENCH_SAMPLES];
    for (i, sample) in samples.iter_mut().enumerate() {
        let page = (i as u64 * 73) % BENCH_PAGES;
        write_at(d, BENCH_IPA + page * 4096)?;
        let start = counter();
        let answered = d
            .space
            .read_dirty(BENCH_IPA, BENCH_PAGES, d.bitmap.io, true);
        *sample = counter() - start;
        check!(
            answered == Ok((BENCH_IPA + BENCH_PAGES * 4096, 1)),
            "ReadDirty over the benchmark's pages: {answered:?}"
        );
        check!(
            d.bitmap.read(page / 8) == 1 << (page % 8),
            "the bitmap does not name page {page}"
        );
    }
    samples.sort_unstable();
    // Instruction counts under `cargo xtask bench` (-icount); plain counter
    // ticks otherwise.
    rt::println!(
        "bench io-read-dirty-512 instructions={}",
        samples[BENCH_SAMPLES / 2]
    );
    no_faults(d)
}

fn delete_mid_tracking(d: &mut Driver, objects: &mut Objects) -> Outcome {
    d.alias.fill(0);
    let _ = read(d, true)?;
    // The transfer lands 100 ms (virtual) after it starts; the IoSpace
    // dies long before.
    d.edu.start_write_memory(DATA_IPA, LENGTH);
    let _ = read(d, true)?;
    let space = d.space;
    objects
        .delete(space.slot())
        .map_err(|e| failure("delete the IoSpace", e))?;
    settle(&d.edu)?;
    check!(
        (0..4096).all(|i| d.alias.read(i) == 0),
        "a byte landed after the IoSpace was deleted"
    );
    edu::checks::expect_fault(d.queue, BADGE, Some(DATA_IPA))?;
    let after = space.read_dirty(DATA_IPA, PAGES, d.bitmap.io, true);
    check!(after.is_err(), "ReadDirty of a deleted IoSpace: {after:?}");
    let off = space.set_dirty_tracking(false);
    check!(
        off.is_err(),
        "SetDirtyTracking of a deleted IoSpace: {off:?}"
    );
    Ok(())
}
