//! `granted`: the only domain of `images/dma-grant.toml`, and its system
//! test. Init gave it the edu device at 00:04.0 in `stage2` mode; the test
//! checks, through the capabilities it finds by name, that the grant is
//! what the image asked for: an IoDevice already attached to its IoSpace
//! (init attached it), which it can detach and attach again; an empty
//! fault queue with its notification; and the DMA buffer mapped read-write
//! at the stated address. Its image also gives it a 256 KiB heap, which
//! `rt`'s allocator must serve beyond its own 64 KiB.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

use rt::check;
use rt::testing::{Outcome, Suite};
use sys::names::CapTable;
use sys::{Error, IoDevice, IoFaultQueue, IoSpace, Notification};

rt::entry!(main);

/// Where the image maps the DMA buffer in this domain.
const DMA_BUFFER: u64 = 0x4000_0000;

fn main(startup: &rt::Startup) -> i32 {
    let mut suite = Suite::new();
    let Some(table) = startup.caps() else {
        suite.run("grant_capabilities_found_by_name", || {
            rt::fail!("init gave no capability table")
        });
        return suite.finish();
    };
    suite.run("grant_capabilities_found_by_name", || found(table));
    suite.run("device_attached_to_its_io_space", || attached(table));
    suite.run("fault_queue_empty_and_bound", || fault_queue(table));
    suite.run("dma_buffer_mapped_read_write", dma_buffer);
    suite.run("image_heap_serves_the_allocator", || image_heap(table));
    suite.finish()
}

fn found(table: &CapTable) -> Outcome {
    check!(
        table.lookup::<IoDevice>("device0").is_some(),
        "no IoDevice named device0"
    );
    check!(
        table.lookup::<IoSpace>("iospace0").is_some(),
        "no IoSpace named iospace0"
    );
    check!(
        table.lookup::<IoFaultQueue>("faults0").is_some(),
        "no IoFaultQueue named faults0"
    );
    check!(
        table.lookup::<Notification>("faults0.signal").is_some(),
        "no Notification named faults0.signal"
    );
    Ok(())
}

fn attached(table: &CapTable) -> Outcome {
    let (Some(device), Some(space)) = (
        table.lookup::<IoDevice>("device0"),
        table.lookup::<IoSpace>("iospace0"),
    ) else {
        rt::fail!("device0 or iospace0 missing");
    };
    let again = device.attach(space);
    check!(
        again == Err(Error::AlreadyAttached),
        "attaching the device init attached answered {again:?}"
    );
    let detached = device.detach();
    check!(detached.is_ok(), "detach answered {detached:?}");
    let reattached = device.attach(space);
    check!(
        reattached.is_ok(),
        "attach after detach answered {reattached:?}"
    );
    Ok(())
}

fn fault_queue(table: &CapTable) -> Outcome {
    let Some(queue) = table.lookup::<IoFaultQueue>("faults0") else {
        rt::fail!("faults0 missing");
    };
    let popped = queue.pop();
    check!(
        matches!(popped, Ok(None)),
        "a fresh fault queue popped {popped:?}"
    );
    Ok(())
}

fn dma_buffer() -> Outcome {
    #[allow(unsafe_code)]
    // SAFETY: init maps the image's 8 KiB `dma_buffer` read-write at
    // DMA_BUFFER before this domain starts; only this type touches it here.
    let buffer = unsafe { rt::shared::SharedWords::new(DMA_BUFFER, 1024) };
    check!(buffer.read(0) == Some(0), "the fresh buffer is not zeroed");
    check!(buffer.write(1023, 0x5a5a), "write past the end?");
    check!(
        buffer.read(1023) == Some(0x5a5a),
        "the last word of the second page did not keep its value"
    );
    Ok(())
}

/// The image's `heap_size` (256 KiB) reaches the allocator: a 128 KiB
/// block, twice `rt`'s static heap, is served from `HEAP_ADDRESS`.
fn image_heap(table: &CapTable) -> Outcome {
    check!(
        table.heap_size == 256 * 1024,
        "the capability table says heap_size = {:#x}",
        table.heap_size
    );
    let block = alloc::vec![0x5au8; 128 * 1024];
    let start = block.as_ptr().addr() as u64;
    let heap = sys::names::HEAP_ADDRESS..sys::names::HEAP_ADDRESS + table.heap_size;
    check!(
        heap.contains(&start) && heap.contains(&(start + block.len() as u64 - 1)),
        "the 128 KiB block at {start:#x} is not inside the image heap {heap:#x?}"
    );
    check!(
        block.iter().all(|&byte| byte == 0x5a),
        "the block did not keep its bytes"
    );
    Ok(())
}
