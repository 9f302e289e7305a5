//! Zero copy with capabilities: the client's own Frame travels with the
//! request and the device DMAs straight into it.
//!
//! The client retypes one 4 KiB Frame from its 4 KiB `untyped` (so any
//! Frame it makes later takes the same memory), keeps one capability
//! mapped at [`FRAME_VA`] and sends a second, unmapped copy with each
//! request (the copy the driver receives is a child of it, so the client
//! can revoke it; a Frame capability holds one mapping, CPU or IO).
//!
//! The revoke test (`revoked_mid_io`): a read the driver holds open
//! (`READ_FRAME_HELD`: the Frame mapped in its IoSpace, the device has
//! written the first time through it), then the client revokes its Frame,
//! unmaps and deletes it, makes a new Frame from the same Untyped (the
//! same memory) and fills it with [`CANARY`]; `FINISH_HELD` has the device
//! write through the same IOVA again. The revoke returned after the
//! IOMMU's invalidation, so that write must fault, be reported, and leave
//! every byte of the new Frame as it was. The same with the Untyped
//! revoked instead ([`Reclaim::RevokeUntyped`]): what reclaiming a dead
//! client's memory does. A kernel that skips the
//! invalidation (`seed=io-skip-invalidation`) lets the stale translation
//! carry the write into the reused memory: the test fails.

use rt::check;
use rt::testing::{Failure, Outcome};
use sys::names::{CapTable, DOMAIN_OWN_SLOTS};
use sys::{CNode, Cap, Endpoint, Frame, MapRights, MessageInfo, PageTable, Rights, Slot, Untyped};
use vblk_protocol::{
    BLOCK_SIZE, Cost, FINISH_HELD, Finished, NEW_SEED, OLD_SEED, READ_FRAME, READ_FRAME_HELD,
    Status, WRITE_FRAME, pattern_word,
};

use crate::{MsiCost, call, call_with, read_and_check, timed};

/// Where the client maps its Frame: next to `block_page`, under the
/// page table that already maps it.
const FRAME_VA: u64 = 0x6000_1000;
/// The byte the reused Frame is filled with.
const CANARY: u8 = 0xC3;
/// The block the revoke test reads.
const HELD_BLOCK: u64 = 7;

/// What zero copy needs from the capability table.
#[derive(Clone, Copy, Debug)]
pub struct Frames {
    untyped: Cap<Untyped>,
    cnode: Cap<CNode>,
    vspace: Cap<PageTable>,
}

/// The Frame capability kept mapped here, and the copy that is sent.
fn mapped_slot() -> Slot {
    Slot::new(DOMAIN_OWN_SLOTS.start)
}

fn sent_slot() -> Slot {
    Slot::new(DOMAIN_OWN_SLOTS.start + 1)
}

impl Frames {
    /// The `untyped`, `cnode` and `vspace` the image gives the client.
    pub fn from_table(table: &CapTable) -> Result<Frames, Failure> {
        match (
            table.lookup::<Untyped>("untyped"),
            table.lookup::<CNode>("cnode"),
            table.lookup::<PageTable>("vspace"),
        ) {
            (Some(untyped), Some(cnode), Some(vspace)) => Ok(Frames {
                untyped,
                cnode,
                vspace,
            }),
            found => Err(fail(
                "no `untyped`, `cnode` or `vspace` in my capability table (the image gives the client no untyped)",
                found,
            )),
        }
    }

    /// A new Frame from the Untyped, mapped at FRAME_VA, and the copy to
    /// send.
    fn make(self) -> Result<Cap<Frame>, Failure> {
        let frame = self
            .untyped
            .retype_sized::<Frame>(12, mapped_slot())
            .map_err(|e| fail("Untyped.Retype of a 4 KiB Frame", e))?;
        frame
            .map(self.vspace, FRAME_VA, MapRights::READ_WRITE)
            .map_err(|e| fail("Frame.Map at FRAME_VA", e))?;
        self.cnode
            .copy(sent_slot(), frame, Rights::ALL)
            .map_err(|e| fail("CNode.Copy of the Frame to send", e))
    }

    /// Revokes everything made from the Untyped (the Frame, unmapped, and
    /// every copy derived from it, the driver's too): what reclaiming a
    /// dead domain's memory does.
    fn reclaim(self) -> Result<(), Failure> {
        self.cnode
            .revoke(self.untyped.slot())
            .map_err(|e| fail("CNode.Revoke of the Untyped", e))
    }

    /// Revokes every copy derived from the Frame (the sent one and the
    /// driver's), then unmaps and deletes it: the Untyped is free again.
    fn destroy(self) -> Result<(), Failure> {
        self.cnode
            .revoke(mapped_slot())
            .map_err(|e| fail("CNode.Revoke of the Frame", e))?;
        Cap::<Frame>::from_slot(mapped_slot())
            .unmap()
            .map_err(|e| fail("Frame.Unmap", e))?;
        self.cnode
            .delete(mapped_slot())
            .map_err(|e| fail("CNode.Delete of the Frame", e))
    }
}

fn fail(what: &str, error: impl core::fmt::Debug) -> Failure {
    Failure(rt::__format!("{what}: {error:?}"))
}

/// The mapped Frame, as words.
fn page() -> rt::shared::SharedWords {
    #[allow(unsafe_code)]
    // SAFETY: `Frames::make` mapped a 4 KiB Frame read-write at FRAME_VA,
    // and callers use this only between `make` and `destroy`; no Rust
    // object lives there, and the device writes it only while the client
    // waits in its Call.
    unsafe {
        rt::shared::SharedWords::new(FRAME_VA, BLOCK_SIZE / 8)
    }
}

/// Words of one 4 KiB block.
const WORDS: usize = BLOCK_SIZE / 8;

/// Fills the mapped Frame with `byte` (word by word: no 4 KiB array on
/// the stack).
fn fill_page(byte: u8) {
    let page = page();
    for i in 0..WORDS {
        page.write(i, u64::from_ne_bytes([byte; 8]));
    }
}

/// Fills the mapped Frame with block `block` of pattern `seed`.
fn fill_page_with_pattern(seed: u64, block: u64) {
    let page = page();
    for i in 0..WORDS {
        page.write(i, pattern_word(seed, block * WORDS as u64 + i as u64));
    }
}

/// The byte offset of the first word of the mapped Frame that is not
/// `expected(word index)`, or `None`.
fn first_other_word(expected: impl Fn(usize) -> u64) -> Option<usize> {
    let page = page();
    (0..WORDS)
        .find(|&i| page.read(i) != Some(expected(i)))
        .map(|i| 8 * i)
}

/// The first word of the mapped Frame that differs from block `block` of
/// pattern `seed` (its byte offset), or `None`.
fn pattern_mismatch(seed: u64, block: u64) -> Option<usize> {
    first_other_word(|i| pattern_word(seed, block * WORDS as u64 + i as u64))
}

/// A request carrying the sent copy of the Frame.
fn with_frame(driver: Cap<Endpoint>, label: u32, block: u64) -> Result<[u64; 4], Status> {
    sys::ipc::set_cap(0, sent_slot());
    let info = MessageInfo {
        extra_caps: 1,
        ..MessageInfo::new(label, 1)
    };
    call_with(driver, info, block)
}

/// Reads into the Frame and writes from it, checked through the shared
/// page; a zero-copy request without a Frame is refused.
pub fn reads_and_writes(driver: Cap<Endpoint>, frames: Frames) -> Outcome {
    frames.make()?;
    let result = reads_and_writes_with(driver);
    frames.destroy()?;
    result
}

fn reads_and_writes_with(driver: Cap<Endpoint>) -> Outcome {
    for block in [0, 9, 63] {
        fill_page(0);
        let read = with_frame(driver, READ_FRAME, block);
        check!(read.is_ok(), "zero-copy read of block {block}: {read:?}");
        let mismatch = pattern_mismatch(NEW_SEED, block);
        check!(
            mismatch.is_none(),
            "zero-copy read of block {block}: the Frame differs from the pattern at byte {mismatch:?}"
        );
    }
    // Block 3 written from the Frame with the old pattern, read back
    // through the shared page, then written back with the new.
    for seed in [OLD_SEED, NEW_SEED] {
        fill_page_with_pattern(seed, 3);
        let written = with_frame(driver, WRITE_FRAME, 3);
        check!(written.is_ok(), "zero-copy write of block 3: {written:?}");
        read_and_check(driver, 3, seed)?;
    }
    let refused = call(driver, READ_FRAME, 0);
    check!(
        refused == Err(Status::NoFrame),
        "a zero-copy read without a Frame: {refused:?}"
    );
    rt::println!(
        "[blkclient] zero copy: blocks 0, 9 and 63 read and block 3 written straight through my own Frame, its capability sent with each request"
    );
    Ok(())
}

/// The cheapest of the timed zero-copy reads of block 0.
pub fn timed_read(driver: Cap<Endpoint>, frames: Frames) -> Result<(u64, Cost), Status> {
    with_made(frames, || timed(|| with_frame(driver, READ_FRAME, 0)))
}

/// The zero-copy reads of block 0 counted with the PMU, as
/// [`crate::timed_pmu_read`].
pub fn timed_pmu_read(
    name: &str,
    driver: Cap<Endpoint>,
    frames: Frames,
) -> Result<Option<(u64, MsiCost)>, Status> {
    with_made(frames, || {
        crate::timed_pmu_read(name, driver, &mut || with_frame(driver, READ_FRAME, 0))
    })
}

/// `timed` run between making the Frame and destroying it.
fn with_made<T>(frames: Frames, timed: impl FnOnce() -> Result<T, Status>) -> Result<T, Status> {
    frames.make().map_err(|why| {
        rt::println!("[blkclient] {}", why.0);
        Status::NoFrame
    })?;
    let timed = timed();
    if let Err(why) = frames.destroy() {
        rt::println!("[blkclient] {}", why.0);
    }
    timed
}

/// How the memory under a held I/O is taken back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reclaim {
    /// The client revokes its Frame, unmaps and deletes it.
    RevokeFrame,
    /// The Untyped it came from is revoked, as when a dead domain's memory
    /// is reclaimed: every object made from it goes, with every copy.
    RevokeUntyped,
}

/// The revoke test: see the module's documentation.
pub fn revoked_mid_io(driver: Cap<Endpoint>, frames: Frames, how: Reclaim) -> Outcome {
    frames.make()?;
    fill_page(0);
    let held = with_frame(driver, READ_FRAME_HELD, HELD_BLOCK);
    let Ok([iova, ..]) = held else {
        let _ = frames.destroy();
        rt::fail!("the held zero-copy read of block {HELD_BLOCK}: {held:?}")
    };
    let first = pattern_mismatch(NEW_SEED, HELD_BLOCK);
    if first.is_some() {
        let _ = frames.destroy();
        rt::fail!("the held read's first half did not land in the Frame: byte {first:?}");
    }
    // Mid-I/O: the driver holds the Frame, mapped at IOVA `iova`, and the
    // device has used that translation. Revoke, free, reuse.
    match how {
        Reclaim::RevokeFrame => frames.destroy()?,
        Reclaim::RevokeUntyped => frames.reclaim()?,
    }
    frames.make()?;
    fill_page(CANARY);
    let finished = call(driver, FINISH_HELD, HELD_BLOCK);
    let landed = first_other_word(|_| u64::from_ne_bytes([CANARY; 8]));
    frames.destroy()?;
    let Ok([a, b, c, _]) = finished else {
        rt::fail!("finishing the held read: {finished:?}")
    };
    let finished = Finished::from_mrs([a, b, c]);
    check!(
        landed.is_none(),
        "the device wrote the reused memory (the word at byte {landed:?} is not the canary): a translation outlived the revoke"
    );
    check!(
        finished.still_held == 0,
        "the driver still held the Frame after the client revoked it"
    );
    check!(
        finished.faults >= 1 && finished.first_fault & !0xfff == iova,
        "the device's write through IOVA {iova:#x} after the revoke was not reported: {finished:?}"
    );
    rt::println!(
        "[blkclient] {} mid-I/O and reused its memory: the device's next write through IOVA {iova:#x} faulted ({} record(s)) and never reached the new Frame",
        match how {
            Reclaim::RevokeFrame => "revoked my Frame",
            Reclaim::RevokeUntyped => "revoked the Untyped my Frame came from",
        },
        finished.faults
    );
    Ok(())
}
