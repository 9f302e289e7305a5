//! The driver as a protection domain of `images/nvme.toml`: it starts with
//! no IOMMU capability, asks init (`sys::resources`) for the NVMe
//! controller at 00:06.0 (init maps its 16 KiB BAR 0 whole: registers and
//! doorbells), a 2 MiB IoSpace and a fault queue, builds its own stage-1
//! table with `iopt` in the image's `nvme_tables` region, maps the pages
//! of `nvme_dma` at IOVAs that are not their IPAs, attaches the device
//! nested under the IoSpace, and drives the disk xtask made
//! (`vblk_protocol`'s seeded pattern, `tools/xtask/src/disk.rs`): it reads
//! every block and checks the old pattern, writes the new one and reads it
//! back; after QEMU exits xtask checks the file holds the new pattern.
//!
//! ```text
//!   nvme_dma     VA 0x4000_0000 + 4K*n   IPA 0x10_0000 + 4K*n   IOVA 0x80_0000 + 8K*n
//!   nvme_tables  VA 0x5000_0000          IPA 0x4000 (read-only to the IOMMU)
//! ```

use crate::platform::{Bar, Region, Spin, StageOneDma, Timeline, pool_iova};
use edu::nested::{FORMAT, Invalidate, stage1_in};
use nvme::{Config, Controller, Dma};
use rt::check;
use rt::mmio::Window;
use rt::testing::{Failure, Outcome, Suite};
use sys::names::CapTable;
use sys::resources;
use sys::{Cap, Endpoint, IoFaultQueue, Slot};
use vblk_protocol::{BLOCK_SIZE, DISK_BLOCKS, NEW_SEED, OLD_SEED, fill_block, first_mismatch};

/// The controller the image grants (on request).
const DEVICE: (u8, u8, u8) = (0, 6, 0);
/// The badge the driver asks for on its device capability.
const BADGE: u64 = 0x4e;
/// The IoSpace size the grant allows.
const SPACE_SIZE: u64 = 2 << 20;
/// The image's `nvme_dma` (16 pages): here and in the IoSpace; and the
/// IOVA of its first page in the driver's stage 1.
const DMA_VA: u64 = 0x4000_0000;
const DMA_IPA: u64 = 0x10_0000;
const DMA_PAGES: u64 = 16;
const DMA_IOVA: u64 = 0x80_0000;
/// The image's `nvme_tables` (four table frames): here and in the IoSpace.
const TABLES_VA: u64 = 0x5000_0000;
const TABLES_IPA: u64 = 0x4000;
const TABLE_FRAMES: usize = 4;
/// BAR 0 of QEMU's NVMe controller.
const REGISTERS_SIZE: u64 = 16 << 10;
/// A slot of the domain's own (`sys::names::DOMAIN_OWN_SLOTS`).
const USER_TABLE_SLOT: Slot = Slot::new(100);
/// Blocks of 512 bytes in one 4 KiB block of the disk.
const SECTORS: u32 = (BLOCK_SIZE / 512) as u32;

fn failure(what: &str, error: impl core::fmt::Debug) -> Failure {
    Failure(rt::__format!("{what}: {error:?}"))
}

fn driver_failure(what: &str, error: nvme::Error) -> Failure {
    Failure(rt::__format!("{what}: {error}"))
}

/// The image's table frames, as iopt's memory.
#[allow(unsafe_code)]
fn table_frames() -> &'static mut [[u64; 512]] {
    // SAFETY: the image maps `nvme_tables` (16 KiB) read-write at
    // TABLES_VA for the domain's life, and this is the only Rust view of
    // it (called once, by `ask`).
    unsafe { core::slice::from_raw_parts_mut(TABLES_VA as *mut [u64; 512], TABLE_FRAMES) }
}

type Driver<'a> = Controller<Bar<'a>, StageOneDma<'a, Region>, Spin>;

/// Runs the domain; returns the exit status.
pub fn run(table: &CapTable) -> i32 {
    let mut suite = Suite::new();
    let Some(init) = table.lookup::<Endpoint>("init") else {
        suite.run("capabilities_from_init", || {
            rt::fail!("no endpoint named `init`: the image grants nothing on request")
        });
        return suite.finish();
    };
    rt::println!(
        "[nvme] started with no IOMMU capability; asking init for the NVMe controller at 00:06.0"
    );
    let mut granted = None;
    suite.run("capabilities_from_init", || {
        granted = Some(ask(init)?);
        Ok(())
    });
    let Some((registers, queue)) = granted else {
        return suite.finish();
    };
    let timeline = Timeline::default();
    let bar = Bar {
        registers,
        timeline: &timeline,
    };
    #[allow(unsafe_code)]
    // SAFETY: the image maps `nvme_dma` (DMA_PAGES pages) read-write at
    // DMA_VA for the domain's life; only the pool touches it.
    let region = unsafe { Region::new(DMA_VA, DMA_IOVA, DMA_PAGES) };
    let dma = StageOneDma {
        source: region,
        timeline: &timeline,
    };
    let mut controller = None;
    suite.run("controller_comes_up_through_its_own_stage1", || {
        let up = Controller::bring_up(bar, dma, Spin, Config::default())
            .map_err(|e| driver_failure("bring-up", e))?;
        rt::println!("[nvme] NVMe {} up: {}", up.version(), up.identity());
        rt::println!("[nvme] {}", up.namespace());
        let blocks = up.namespace().blocks;
        check!(
            blocks == DISK_BLOCKS * u64::from(SECTORS),
            "namespace 1 has {blocks} blocks; the disk xtask made has {}",
            DISK_BLOCKS * u64::from(SECTORS)
        );
        controller = Some(up);
        Ok(())
    });
    let Some(mut controller) = controller else {
        return suite.finish();
    };
    suite.run("every_block_holds_the_seeded_pattern", || {
        every_block(&mut controller)
    });
    suite.run("new_pattern_written_and_read_back", || {
        rewrite(&mut controller)
    });
    suite.run("no_dma_fault", || {
        let record = queue.pop();
        check!(record == Ok(None), "a fault record: {record:?}");
        Ok(())
    });
    suite.run("controller_shuts_down", || {
        controller
            .shut_down()
            .map_err(|e| driver_failure("shut down", e))?;
        Ok(())
    });
    rt::println!("[nvme] done");
    suite.finish()
}

/// Asks init for the device, its IoSpace and a fault queue; builds and
/// binds the stage 1 and attaches the device nested under the IoSpace.
fn ask(init: Cap<Endpoint>) -> Result<(Window, Cap<IoFaultQueue>), Failure> {
    let pci = resources::pci_address(DEVICE.0, DEVICE.1, DEVICE.2);
    let (device, registers) = resources::request_device(init, pci, BADGE)
        .map_err(|e| failure("asking for the NVMe controller at 00:06.0", e))?;
    let space = resources::request_space(init, pci, SPACE_SIZE)
        .map_err(|e| failure("asking for a 2 MiB IoSpace", e))?;
    let (queue, _signal) = resources::request_fault_queue(init, pci)
        .map_err(|e| failure("asking for a fault queue", e))?;
    let mut stage1 = stage1_in(TABLES_IPA, table_frames())?;
    // Bind the (empty) table and attach the device first, then map and
    // invalidate: the invalidation is what makes the kernel compose the
    // entries for an attached device (VT-d shadow nesting).
    let table = space
        .bind_user_table(stage1.root().ipa(), FORMAT.1, USER_TABLE_SLOT)
        .map_err(|e| failure("IoSpace.BindUserTable", e))?;
    device
        .attach_nested(table)
        .map_err(|e| failure("IoDevice.AttachNested", e))?;
    for page in 0..DMA_PAGES {
        stage1
            .map(
                pool_iova(DMA_IOVA, page),
                DMA_IPA + 4096 * page,
                4096,
                iopt::Rights::READ_WRITE,
            )
            .map_err(|e| failure("stage-1 map", e))?;
    }
    stage1
        .flush(&mut Invalidate(table))
        .map_err(|e| failure("IoUserTable.Invalidate", e))?;
    rt::println!(
        "[nvme] init gave the device, a 2 MiB IoSpace and a fault queue; its own stage-1 table maps the {DMA_PAGES} DMA pages at IOVAs {DMA_IOVA:#x}.. (every other page) and the device is attached nested under the IoSpace"
    );
    Ok((Window::granted(registers, REGISTERS_SIZE), queue))
}

fn every_block(controller: &mut Driver<'_>) -> Outcome {
    let page = controller
        .dma()
        .allocate_page()
        .map_err(|e| failure("a DMA page", e))?;
    let mut bytes = [0u8; BLOCK_SIZE];
    for block in 0..DISK_BLOCKS {
        controller
            .read(block * u64::from(SECTORS), SECTORS, &[page.device_address])
            .map_err(|e| driver_failure("read", e))?;
        controller.dma().read(&page.cpu, 0, &mut bytes);
        if let Some(at) = first_mismatch(OLD_SEED, block, &bytes) {
            rt::fail!("block {block} differs from the seeded pattern at byte {at}");
        }
    }
    rt::println!("[nvme] read all {DISK_BLOCKS} blocks of 4 KiB: every byte is the seeded pattern");
    Ok(())
}

fn rewrite(controller: &mut Driver<'_>) -> Outcome {
    let source = controller
        .dma()
        .allocate_page()
        .map_err(|e| failure("a DMA page", e))?;
    let destination = controller
        .dma()
        .allocate_page()
        .map_err(|e| failure("a DMA page", e))?;
    let mut bytes = [0u8; BLOCK_SIZE];
    for block in 0..DISK_BLOCKS {
        let lba = block * u64::from(SECTORS);
        fill_block(NEW_SEED, block, &mut bytes);
        controller.dma().write(&source.cpu, 0, &bytes);
        controller
            .write(lba, SECTORS, &[source.device_address])
            .map_err(|e| driver_failure("write", e))?;
        controller
            .read(lba, SECTORS, &[destination.device_address])
            .map_err(|e| driver_failure("read back", e))?;
        controller.dma().read(&destination.cpu, 0, &mut bytes);
        if let Some(at) = first_mismatch(NEW_SEED, block, &bytes) {
            rt::fail!("block {block} read back differs from the new pattern at byte {at}");
        }
    }
    rt::println!("[nvme] wrote the new pattern to all {DISK_BLOCKS} blocks and read each back");
    Ok(())
}
