//! `nvme-driver`: the `nvme` crate's driver on QEMU's NVMe controller
//! (`-device nvme`). With a capability table it is a protection domain of
//! `images/nvme.toml` (`domain`: it asks init for its IOMMU capabilities);
//! without one, the root task of the `*-user-nvme` system tests, below.
//! As the root task it finds the controller on bus 0, maps BAR 0, mints its
//! IoDevice, builds an IoSpace and its own stage-1 table (`edu::nested`,
//! built with `iopt`) and attaches the device nested under it, so that
//! every address the controller is given (queues, Identify, PRPs, PRP
//! lists) is an IOVA of that table. Then it brings the controller up and
//! reads and writes the disk QEMU was given, `test-disk.txt` (24 blocks,
//! each a line naming its number; QEMU's `snapshot=on` keeps the file
//! unchanged), checking each byte against the copy compiled in here.
//!
//! Tests, in order (each needs the ones before):
//! - `controller_comes_up_through_its_own_stage1`
//! - `block_0_holds_the_disk_pattern` (one page: PRP1 only)
//! - `whole_disk_through_a_prp_list` (three pages: PRP1 + a PRP list)
//! - `written_blocks_read_back` (two pages each way: PRP1 + PRP2)
//! - `repeated_4k_reads_and_their_cost` (nine 4 KiB reads, each checked;
//!   prints the instructions the driver runs per read, device time left
//!   out: the rows run under `-icount shift=0,sleep=off`)
//! - `no_dma_fault_during_good_io` (the fault queue is empty)
//! - `unmapped_iova_is_blocked_and_reported` (a read into a page stage 1
//!   does not map: the IOMMU blocks the controller's write and reports the
//!   address with the device's badge; QEMU's controller itself completes
//!   the command with success, so the status is printed, not checked; the
//!   controller still works afterwards)
//! - `controller_shuts_down`
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

mod domain;
mod platform;

use alloc::vec;
use alloc::vec::Vec;

use edu::nested::{Nested, fault_queue};
use nvme::{Config, Controller, Dma, Iova, PAGE_SIZE};
use platform::{Bar, Frames, Spin, StageOneDma, Timeline};
use rt::check;
use rt::mmio::Window;
use rt::space::{Objects, map_frame};
use rt::testing::{Failure, Outcome, Suite};
use sys::untypeds;
use sys::{Cap, IoDevice, IoFaultQueue, IommuControl, MapRights, PageTable, Rights};

/// The disk QEMU is given (`-drive file=drivers/nvme-driver/test-disk.txt`).
const DISK: &[u8] = include_bytes!("../test-disk.txt");
/// Bytes per block of the disk (QEMU's default logical block size).
const BLOCK: usize = 512;
/// QEMU's NVMe controller (PCI vendor Red Hat, device 0x0010).
const VENDOR: u16 = 0x1b36;
const DEVICE: u16 = 0x0010;
/// Where bus 0's configuration space and BAR 0's first two pages (the
/// registers, and the doorbells from 0x1000) are mapped.
const ECAM_ADDRESS: u64 = 0x20_0000_0000;
const ECAM_MAPPED: u64 = 1 << 21;
const BAR_ADDRESS: u64 = 0x20_0040_0000;
const BAR_MAPPED: u64 = 2 * PAGE_SIZE as u64;
/// The badge of the device capability the fault queue reports.
const BADGE: u64 = 0x4e;
/// A page-aligned IOVA the driver's stage 1 never maps.
const UNMAPPED_IOVA: u64 = 0x100_0000;

fn control() -> Cap<IommuControl> {
    sys::bootinfo::IOMMU_CONTROL
}

fn own() -> Cap<PageTable> {
    sys::bootinfo::INIT_VSPACE
}

fn failure(what: &str, error: impl core::fmt::Debug) -> Failure {
    Failure(rt::__format!("{what}: {error:?}"))
}

fn driver_failure(what: &str, error: nvme::Error) -> Failure {
    Failure(rt::__format!("{what}: {error}"))
}

rt::entry!(main);

fn main(startup: &rt::Startup) -> i32 {
    if let Some(table) = startup.caps() {
        return domain::run(table);
    }
    let Some(info) = rt::boot::boot_info() else {
        rt::println!("[nvme] no boot-info page");
        return 1;
    };
    let mut objects = Objects::from_boot_info(info);
    let mut suite = Suite::new();
    let mut iommu = None;
    suite.run("iommu_set_up_for_the_controller", || {
        iommu = Some(set_up(&mut objects)?);
        Ok(())
    });
    let Some((registers, mut nested, queue)) = iommu else {
        return suite.finish();
    };
    let timeline = Timeline::default();
    let bar = Bar {
        registers,
        timeline: &timeline,
    };
    let dma = StageOneDma {
        source: Frames {
            objects: &mut objects,
            nested: &mut nested,
            own: own(),
            pages: 0,
        },
        timeline: &timeline,
    };
    let mut controller = None;
    suite.run("controller_comes_up_through_its_own_stage1", || {
        controller = Some(bring_up(bar, dma)?);
        Ok(())
    });
    let Some(mut controller) = controller else {
        return suite.finish();
    };
    suite.run("block_0_holds_the_disk_pattern", || {
        block_0(&mut controller)
    });
    suite.run("whole_disk_through_a_prp_list", || {
        whole_disk(&mut controller)
    });
    suite.run("written_blocks_read_back", || write_back(&mut controller));
    suite.run("repeated_4k_reads_and_their_cost", || {
        read_cost(&mut controller, &timeline)
    });
    suite.run("no_dma_fault_during_good_io", || {
        let record = queue.pop();
        check!(
            record == Ok(None),
            "a fault record after good I/O: {record:?}"
        );
        Ok(())
    });
    suite.run("unmapped_iova_is_blocked_and_reported", || {
        unmapped(&mut controller, queue)
    });
    suite.run("controller_shuts_down", || {
        controller
            .shut_down()
            .map_err(|e| driver_failure("shut down", e))?;
        rt::println!("[nvme] I/O queues deleted, controller disabled (CSTS.RDY = 0)");
        Ok(())
    });
    suite.finish()
}

/// Finds the controller, maps its registers, and gives it an IoSpace with
/// the driver's own stage-1 table and a fault queue.
fn set_up(objects: &mut Objects) -> Result<(Window, Nested, Cap<IoFaultQueue>), Failure> {
    let info = rt::boot::boot_info().ok_or_else(|| failure("boot info", "none"))?;
    let ecam = untypeds::pci_ecam(info).ok_or_else(|| failure("PCI ECAM", "none listed"))?;
    let frame = untypeds::retype_frame_at(ecam, ecam.start(), 21, &mut || objects.slot())
        .map_err(|e| failure("a Frame at the ECAM base", e))?;
    let config = Window::map(objects, frame, own(), ECAM_ADDRESS, ECAM_MAPPED)
        .map_err(|e| failure("mapping the ECAM Frame", e))?;
    let mut access = pci::Closures {
        read: move |offset| config.read32(offset & !3),
        write: move |offset, value| config.write32(offset & !3, value),
    };
    let Some(bdf) = pci::find(&mut access, 0, VENDOR, DEVICE) else {
        rt::fail!("no NVMe controller ({VENDOR:04x}:{DEVICE:04x}) on bus 0; add -device nvme")
    };
    let mut function = pci::Function::open(&mut access, bdf)
        .map_err(|e| failure("opening the NVMe function", e))?;
    let bar = match function.bar(0) {
        Ok(pci::Bar::Memory { address, .. }) if address != 0 => address,
        other => rt::fail!("NVMe at {bdf}: BAR 0 is {other:?}"),
    };
    check!(
        bar.is_multiple_of(PAGE_SIZE as u64),
        "BAR 0 at {bar:#x} is not page-aligned"
    );
    function.enable(pci::command::MEMORY_SPACE | pci::command::BUS_MASTER);

    let window = untypeds::device_untyped_covering(info, bar, BAR_MAPPED)
        .ok_or_else(|| failure("a device Untyped covering BAR 0", bar))?;
    let watermark = if window.slot == ecam.slot {
        ecam.start() + ECAM_MAPPED
    } else {
        window.start()
    };
    let first = untypeds::retype_frame_after(window, watermark, bar, 12, &mut || objects.slot())
        .map_err(|e| failure("a Frame at BAR 0", e))?;
    let second =
        untypeds::retype_frame_after(window, bar + 4096, bar + 4096, 12, &mut || objects.slot())
            .map_err(|e| failure("a Frame at BAR 0 + 4 KiB (the doorbells)", e))?;
    map_frame(
        objects,
        second,
        own(),
        BAR_ADDRESS + 4096,
        MapRights::READ_WRITE,
    )
    .map_err(|e| failure("mapping the doorbell page", e))?;
    let registers = Window::map(objects, first, own(), BAR_ADDRESS, BAR_MAPPED)
        .map_err(|e| failure("mapping BAR 0", e))?;
    rt::println!("[nvme] NVMe controller at {bdf}, BAR 0 at {bar:#x}");

    let slot = objects.slot().map_err(|e| failure("slot", e))?;
    let device: Cap<IoDevice> = control()
        .mint_device(u32::from(bdf.requester_id()), slot)
        .map_err(|e| failure("IommuControl.MintDevice", e))?;
    let badged = objects
        .mint(device, Rights::ALL, BADGE)
        .map_err(|e| failure("badging the device capability", e))?;
    let (queue, _notification) = fault_queue(objects, badged)?;
    let nested = Nested::new(objects, own(), control(), 0)?;
    badged
        .attach_nested(nested.table)
        .map_err(|e| failure("IoDevice.AttachNested", e))?;
    rt::println!(
        "[nvme] device attached to its own stage-1 table, nested under its IoSpace; fault queue bound (badge {BADGE:#x})"
    );
    Ok((registers, nested, queue))
}

type Driver<'a> = Controller<Bar<'a>, StageOneDma<'a, Frames<'a>>, Spin>;

fn bring_up<'a>(bar: Bar<'a>, dma: StageOneDma<'a, Frames<'a>>) -> Result<Driver<'a>, Failure> {
    let controller = Controller::bring_up(bar, dma, Spin, Config::default())
        .map_err(|e| driver_failure("bring-up", e))?;
    let capabilities = controller.capabilities();
    rt::println!("[nvme] NVMe {} up: {}", controller.version(), capabilities);
    rt::println!("[nvme] {}", controller.identity());
    rt::println!(
        "[nvme] {}; queues of {} entries; at most {} pages per command",
        controller.namespace(),
        controller.queue_depth(),
        controller.max_transfer_pages()
    );
    let expected = (DISK.len() / BLOCK) as u64;
    check!(
        controller.namespace().blocks == expected && controller.namespace().block_size() == BLOCK,
        "namespace 1 has {} blocks of {} bytes; the test disk is {expected} of {BLOCK}",
        controller.namespace().blocks,
        controller.namespace().block_size()
    );
    Ok(controller)
}

/// `pages` fresh DMA pages from the driver's allocator.
fn pages(
    controller: &mut Driver<'_>,
    count: usize,
) -> Result<Vec<nvme::DmaPage<platform::Mapped>>, Failure> {
    (0..count)
        .map(|_| {
            controller
                .dma()
                .allocate_page()
                .map_err(|e| failure("a DMA page", e))
        })
        .collect()
}

/// The first `length` bytes of `pages`.
fn contents(
    controller: &mut Driver<'_>,
    pages: &[nvme::DmaPage<platform::Mapped>],
    length: usize,
) -> Vec<u8> {
    let mut bytes = vec![0u8; length];
    for (page, chunk) in pages.iter().zip(bytes.chunks_mut(PAGE_SIZE)) {
        controller.dma().read(&page.cpu, 0, chunk);
    }
    bytes
}

fn addresses(pages: &[nvme::DmaPage<platform::Mapped>]) -> Vec<Iova> {
    pages.iter().map(|page| page.device_address).collect()
}

fn block_0(controller: &mut Driver<'_>) -> Outcome {
    let page = pages(controller, 1)?;
    controller
        .read(0, 1, &addresses(&page))
        .map_err(|e| driver_failure("read of block 0", e))?;
    let block = contents(controller, &page, BLOCK);
    let line = core::str::from_utf8(&block[..48]).unwrap_or("(not text)");
    rt::println!(
        "[nvme] block 0 read through IOVA {:#x}: \"{line}...\"",
        page[0].device_address.0
    );
    check!(block == DISK[..BLOCK], "block 0 differs from the test disk");
    Ok(())
}

fn whole_disk(controller: &mut Driver<'_>) -> Outcome {
    let buffer = pages(controller, DISK.len() / PAGE_SIZE)?;
    let blocks = (DISK.len() / BLOCK) as u32;
    controller
        .read(0, blocks, &addresses(&buffer))
        .map_err(|e| driver_failure("read of the whole disk", e))?;
    let bytes = contents(controller, &buffer, DISK.len());
    if let Some(at) = bytes.iter().zip(DISK).position(|(a, b)| a != b) {
        rt::fail!(
            "byte {at} (block {}) is {:#04x}, the disk has {:#04x}",
            at / BLOCK,
            bytes[at],
            DISK[at]
        );
    }
    rt::println!(
        "[nvme] all {blocks} blocks read in one command through {} pages (PRP1 and a PRP list): every byte matches",
        buffer.len()
    );
    Ok(())
}

fn write_back(controller: &mut Driver<'_>) -> Outcome {
    const FIRST: u64 = 8;
    let source = pages(controller, 2)?;
    let pattern: Vec<u8> = (0..2 * PAGE_SIZE)
        .map(|i| (i as u8) ^ ((i / BLOCK) as u8).wrapping_mul(0x3b))
        .collect();
    for (page, chunk) in source.iter().zip(pattern.chunks(PAGE_SIZE)) {
        controller.dma().write(&page.cpu, 0, chunk);
    }
    let blocks = (2 * PAGE_SIZE / BLOCK) as u32;
    controller
        .write(FIRST, blocks, &addresses(&source))
        .map_err(|e| driver_failure("write of blocks 8..24", e))?;
    let destination = pages(controller, 2)?;
    controller
        .read(FIRST, blocks, &addresses(&destination))
        .map_err(|e| driver_failure("read back of blocks 8..24", e))?;
    check!(
        contents(controller, &destination, 2 * PAGE_SIZE) == pattern,
        "blocks 8..24 read back differ from what was written"
    );
    let head = pages(controller, 2)?;
    controller
        .read(0, blocks, &addresses(&head))
        .map_err(|e| driver_failure("read of blocks 0..16", e))?;
    let bytes = contents(controller, &head, 2 * PAGE_SIZE);
    check!(
        bytes[..PAGE_SIZE] == DISK[..PAGE_SIZE] && bytes[PAGE_SIZE..] == pattern[..PAGE_SIZE],
        "blocks 0..8 changed, or 8..16 are not the new pattern"
    );
    rt::println!(
        "[nvme] wrote blocks 8..24 (two pages: PRP1 and PRP2) and read them back; blocks 0..8 unchanged"
    );
    Ok(())
}

/// Reads of one 4 KiB page (blocks 0..8, PRP1 only), each checked, and
/// the counter ticks the driver itself spends on each (guest instructions
/// under `-icount shift=0`): from the call to just after the submission
/// doorbell, and from the start of the look at the completion queue that
/// found the completion to the return. The polls in between, waiting for
/// the device, are left out. The median of [`COST_SAMPLES`] is printed.
fn read_cost(controller: &mut Driver<'_>, timeline: &Timeline) -> Outcome {
    const COST_SAMPLES: usize = 9;
    let page = pages(controller, 1)?;
    let buffer = addresses(&page);
    let mut samples = [(0u64, 0u64); COST_SAMPLES];
    for sample in &mut samples {
        controller.dma().write(&page[0].cpu, 0, &[0u8; PAGE_SIZE]);
        let start = rt::bench::io_counter();
        controller
            .read(0, 8, &buffer)
            .map_err(|e| driver_failure("a 4 KiB read", e))?;
        let end = rt::bench::io_counter();
        *sample = (
            timeline.submitted.get().wrapping_sub(start),
            end.wrapping_sub(timeline.completion_seen.get()),
        );
        check!(
            contents(controller, &page, PAGE_SIZE) == DISK[..PAGE_SIZE],
            "a repeated read of blocks 0..8 differs from the disk"
        );
    }
    samples.sort_unstable_by_key(|&(submit, complete)| submit + complete);
    let (submit, complete) = samples[COST_SAMPLES / 2];
    rt::println!(
        "[nvme] a 4 KiB read costs the driver {} counter ticks (guest instructions under -icount shift=0): {submit} to submit and ring the doorbell, {complete} from the completion seen to the return; the device's time left out (median of {COST_SAMPLES})",
        submit + complete
    );
    Ok(())
}

fn unmapped(controller: &mut Driver<'_>, queue: Cap<IoFaultQueue>) -> Outcome {
    let result = controller.read(0, 8, &[Iova(UNMAPPED_IOVA)]);
    match result {
        Ok(()) => rt::println!(
            "[nvme] a read into unmapped IOVA {UNMAPPED_IOVA:#x}: the controller reports success"
        ),
        Err(error) => {
            rt::println!("[nvme] a read into unmapped IOVA {UNMAPPED_IOVA:#x} failed: {error}")
        }
    }
    let first = queue.pop();
    let Ok(Some(record)) = first else {
        rt::fail!("no fault record for IOVA {UNMAPPED_IOVA:#x}: {first:?}")
    };
    while let Ok(Some(_)) = queue.pop() {}
    check!(
        record.badge == BADGE && record.address & !0xfff == UNMAPPED_IOVA,
        "the fault record says badge {:#x} address {:#x}",
        record.badge,
        record.address
    );
    rt::println!(
        "[nvme] the IOMMU blocked it and reported badge {:#x}, address {:#x}, {}",
        record.badge,
        record.address,
        if record.read { "a read" } else { "a write" }
    );
    // The controller still works.
    let page = pages(controller, 1)?;
    controller
        .read(0, 1, &addresses(&page))
        .map_err(|e| driver_failure("a read after the fault", e))?;
    Ok(())
}
