//! `blkclient`: the client of `images/blk.toml`. Through the virtio-blk
//! driver domain (`drivers/vblk`), over its endpoint `channel0` and the
//! page both map, it reads every block of the disk and checks the pattern
//! xtask wrote before boot ([`OLD_SEED`]), writes a new one
//! ([`NEW_SEED`]) and reads it back; xtask checks the file after QEMU
//! exits. Each step is a test line.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use rt::check;
use rt::testing::{Outcome, Suite};
use sys::{Cap, Endpoint, MessageInfo};
use vblk_protocol::{
    BLOCK_SIZE, DISK_BLOCKS, INFO, NEW_SEED, OLD_SEED, READ, Status, WRITE, fill_block,
    first_mismatch,
};

rt::entry!(main);

/// Where the image maps the page shared with the driver (`block_page`).
const SHARED_VA: u64 = 0x6000_0000;

fn shared() -> rt::shared::SharedWords {
    #[allow(unsafe_code)]
    // SAFETY: init maps the 4 KiB `block_page` read-write at SHARED_VA
    // before this domain starts, for its whole life; only this type
    // touches it here.
    unsafe {
        rt::shared::SharedWords::new(SHARED_VA, BLOCK_SIZE / 8)
    }
}

/// One request to the driver: its reply's MR0, or why it failed.
fn ask(driver: Cap<Endpoint>, label: u32, block: u64) -> Result<u64, Status> {
    match driver.call(MessageInfo::new(label, 1), [block, 0, 0, 0]) {
        Ok(reply) => match Status::from_code(reply.info.label) {
            None => Ok(reply.mrs[0]),
            Some(status) => Err(status),
        },
        Err(e) => {
            rt::println!("[blkclient] calling the driver: {e:?}");
            Err(Status::DeviceError)
        }
    }
}

/// Reads `block` through the driver and checks it against `seed`.
fn read_and_check(driver: Cap<Endpoint>, block: u64, seed: u64) -> Outcome {
    let read = ask(driver, READ, block);
    check!(read.is_ok(), "reading block {block}: {read:?}");
    let mut data = [0u8; BLOCK_SIZE];
    let page = shared();
    for (i, word) in data.chunks_exact_mut(8).enumerate() {
        word.copy_from_slice(&page.read(i).unwrap_or(0).to_le_bytes());
    }
    let mismatch = first_mismatch(seed, block, &data);
    check!(
        mismatch.is_none(),
        "block {block} differs from pattern {seed:#x} at byte {mismatch:?}"
    );
    Ok(())
}

fn main(startup: &rt::Startup) -> i32 {
    let mut suite = Suite::new();
    let Some(driver) = startup
        .caps()
        .and_then(|table| table.lookup::<Endpoint>("channel0"))
    else {
        suite.run("driver_endpoint", || {
            rt::fail!("no endpoint `channel0` to the driver in my capability table")
        });
        return suite.finish();
    };
    suite.run("disk_size_from_the_driver", || {
        let blocks = ask(driver, INFO, 0);
        check!(
            blocks == Ok(DISK_BLOCKS),
            "the driver says {blocks:?} blocks; xtask made {DISK_BLOCKS}"
        );
        Ok(())
    });
    suite.run("every_block_holds_the_seeded_pattern", || {
        for block in 0..DISK_BLOCKS {
            read_and_check(driver, block, OLD_SEED)?;
        }
        rt::println!(
            "[blkclient] read all {DISK_BLOCKS} blocks ({} KiB) through the driver: every byte is the pattern xtask wrote",
            DISK_BLOCKS * BLOCK_SIZE as u64 / 1024
        );
        Ok(())
    });
    suite.run("new_pattern_written_and_read_back", || {
        let page = shared();
        let mut data = [0u8; BLOCK_SIZE];
        for block in 0..DISK_BLOCKS {
            fill_block(NEW_SEED, block, &mut data);
            for (i, word) in data.chunks_exact(8).enumerate() {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(word);
                page.write(i, u64::from_le_bytes(bytes));
            }
            let written = ask(driver, WRITE, block);
            check!(written.is_ok(), "writing block {block}: {written:?}");
        }
        for block in 0..DISK_BLOCKS {
            read_and_check(driver, block, NEW_SEED)?;
        }
        rt::println!(
            "[blkclient] wrote a new pattern to all {DISK_BLOCKS} blocks and read it back; xtask checks the disk file after QEMU exits"
        );
        Ok(())
    });
    suite.run("block_past_the_end_is_refused", || {
        let past = ask(driver, READ, DISK_BLOCKS);
        check!(
            past == Err(Status::OutOfRange),
            "reading block {DISK_BLOCKS} of {DISK_BLOCKS}: {past:?}"
        );
        Ok(())
    });
    suite.finish()
}
