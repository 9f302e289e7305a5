//! `blkclient`: the block client of `images/blk.toml` (virtio-blk,
//! `drivers/vblk`) and `images/nvme.toml` (NVMe, `drivers/nvme-driver`):
//! the same program against either driver domain, which serve the same
//! protocol (`vblk_protocol`). Over the driver's endpoint `channel0` and
//! the page both map, it reads every block of the disk and checks the
//! pattern xtask wrote before boot ([`OLD_SEED`]), writes a new one
//! ([`NEW_SEED`]) and reads it back; xtask checks the file after QEMU
//! exits. Then zero copy (`zero_copy`): reads and writes through a Frame
//! of its own `untyped` whose capability travels with the request, and a
//! Frame revoked and its memory reused in the middle of an I/O, which the
//! device must never write. Each step is a test line; the `bench` lines
//! are `cargo xtask bench`'s.
//!
//! When the driver dies with a request of the client's in flight, the
//! kernel ends the client's `Call` with `DeadObject`; init restarts the
//! driver on the same endpoint, and the client sends the request again
//! (at most [`RETRIES`] times in a row; reads and writes of whole blocks
//! can be repeated). `driver_restarted_once_per_injected_failure` checks
//! that a driver whose image injects a failure (`images/restart-*.toml`)
//! was restarted once and cost exactly one retry; with a failure injected
//! the revoked-Frame test is left out, since init restarts such a driver
//! on any fault of its device, the one that test provokes included.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

mod zero_copy;

use core::sync::atomic::{AtomicU64, Ordering};

use rt::check;
use rt::testing::{Outcome, Suite};
use sys::{Cap, Endpoint, MessageInfo};
use vblk_protocol::{
    BLOCK_SIZE, COMPLETIONS, Cost, DISK_BLOCKS, Driver, INFO, INTERRUPTS, NEW_SEED, OLD_SEED,
    POLLING, READ, SHARING, STATS, Sharing, Stats, Status, WAIT_FIRST, WRITE, fill_block,
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

/// Reads timed for the benchmark (the least is reported).
const TIMED_READS: usize = 16;

/// One request to the driver: its reply's MR0..MR3, or why it failed.
fn call(driver: Cap<Endpoint>, label: u32, block: u64) -> Result<[u64; 4], Status> {
    call_with(driver, MessageInfo::new(label, 1), block)
}

/// Times in a row a request is sent again after the driver died with it.
const RETRIES: u64 = 3;
/// Requests sent again so far because the driver died with them.
static RETRIED: AtomicU64 = AtomicU64::new(0);

/// One request with message word `info` (a capability, when it says so,
/// set with `sys::ipc::set_cap` before). A request the driver died with
/// (`DeadObject`: init restarts it) is sent again, to the driver's next
/// run.
fn call_with(driver: Cap<Endpoint>, info: MessageInfo, block: u64) -> Result<[u64; 4], Status> {
    let mut tries = 0;
    loop {
        match driver.call(info, [block, 0, 0, 0]) {
            Ok(reply) => {
                return match Status::from_code(reply.info.label) {
                    None => Ok(reply.mrs),
                    Some(status) => Err(status),
                };
            }
            // A Frame sent with the request went with the dead run: not
            // sent again.
            Err(sys::Error::DeadObject) if tries < RETRIES && info.extra_caps == 0 => {
                tries += 1;
                RETRIED.fetch_add(1, Ordering::Relaxed);
                rt::println!(
                    "[blkclient] the driver died with request {:#x} for block {block}: sending it again (try {tries} of {RETRIES})",
                    info.label
                );
            }
            Err(e) => {
                rt::println!("[blkclient] calling the driver: {e:?}");
                return Err(Status::DeviceError);
            }
        }
    }
}

/// One request to the driver: its reply's MR0, or why it failed.
fn ask(driver: Cap<Endpoint>, label: u32, block: u64) -> Result<u64, Status> {
    call(driver, label, block).map(|mrs| mrs[0])
}

/// The driver's IOMMU counters.
fn stats(driver: Cap<Endpoint>) -> Result<Stats, Status> {
    let [invalidations, in_place, bounced, data_mapped] = call(driver, STATS, 0)?;
    Ok(Stats {
        invalidations,
        in_place,
        bounced,
        data_mapped,
    })
}

/// The cheapest of [`TIMED_READS`] reads of block 0, the device's time
/// left out: client total (call to reply) minus the driver's polling,
/// and the driver's share of it. Counter ticks: guest instructions under
/// `-icount shift=0,sleep=off`. The least, not the median, so a timer
/// interrupt that lands in some reads (where depends on how long the
/// device took) does not move the result.
fn timed_read(driver: Cap<Endpoint>) -> Result<(u64, Cost), Status> {
    timed(|| call(driver, READ, 0))
}

/// The cheapest of [`TIMED_READS`] runs of `read`, as [`timed_read`].
fn timed(mut read: impl FnMut() -> Result<[u64; 4], Status>) -> Result<(u64, Cost), Status> {
    let mut best: Option<(u64, Cost)> = None;
    for _ in 0..TIMED_READS {
        let start = rt::bench::io_counter();
        let mrs = read()?;
        let total = rt::bench::io_counter() - start;
        let cost = Cost::from_mrs([mrs[1], mrs[2], mrs[3]]);
        let without_device = total.saturating_sub(cost.wait);
        if best.is_none_or(|(least, _)| without_device < least) {
            best = Some((without_device, cost));
        }
    }
    best.ok_or(Status::DeviceError)
}

/// Writes the [`NEW_SEED`] pattern to every block through the shared page.
fn write_new_pattern(driver: Cap<Endpoint>) -> Outcome {
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
    Ok(())
}

/// `images/restart-giveup.toml`: a driver that crashes at block 7's read
/// in every run and may be restarted once. The new pattern is written
/// first (xtask checks the disk); then the read is lost with both runs
/// (one resend each), init gives the driver up and closes its endpoint,
/// so the read fails rather than waiting for good, and so does the next
/// request.
fn given_up(driver: Cap<Endpoint>) -> Outcome {
    write_new_pattern(driver)?;
    let read = ask(driver, READ, 7);
    let retried = RETRIED.load(Ordering::Relaxed);
    check!(
        read == Err(Status::DeviceError) && retried == 2,
        "reading block 7 from a driver that crashes in every run: {read:?} after {retried} resend(s); expected DeviceError after 2 (one per run)"
    );
    let after = ask(driver, INFO, 0);
    check!(
        after == Err(Status::DeviceError),
        "a request after init gave the driver up answered {after:?}, not DeviceError"
    );
    rt::println!(
        "[blkclient] the driver crashed in both its runs; init gave it up and closed its endpoint, and requests fail instead of waiting"
    );
    Ok(())
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

/// Prints the `bench` lines of one way of reading: the total (client
/// call to reply, the device's time left out) and its parts: `-ipc` the
/// total minus the driver domain's share (Call, ReplyRecv, the address
/// space switches, a capability transfer where one travels), `-driver`
/// the driver from the request's arrival to its reply (its IOMMU and
/// doorbell shares included), `-iommu` its stage-1 / IoSpace map, unmap
/// and invalidation calls, `-doorbell` its doorbell writes (the driver
/// polls: no interrupt is taken).
/// Only the total when `split` is false.
fn print_bench(name: &str, timed: Result<(u64, Cost), Status>, split: bool) {
    match timed {
        Ok((total, _)) if !split => rt::println!("bench {name} instructions={total}"),
        Ok((total, cost)) => {
            rt::println!("bench {name} instructions={total}");
            rt::println!(
                "bench {name}-ipc instructions={}",
                total.saturating_sub(cost.driver)
            );
            rt::println!("bench {name}-driver instructions={}", cost.driver);
            rt::println!("bench {name}-iommu instructions={}", cost.iommu);
            rt::println!("bench {name}-doorbell instructions={}", cost.doorbell);
        }
        Err(status) => rt::println!("bench {name} FAILED: the read answered {status:?}"),
    }
}

/// The device interrupts the driver has taken so far and the ticks the
/// last request spent taking its MSI (`COMPLETIONS`' MR1 and MR2).
fn interrupts(driver: Cap<Endpoint>) -> Result<(u64, u64), Status> {
    call(driver, COMPLETIONS, 0).map(|mrs| (mrs[1], mrs[2]))
}

/// The requests the driver slept for so far (`COMPLETIONS`' MR3).
fn slept(driver: Cap<Endpoint>) -> Result<u64, Status> {
    call(driver, COMPLETIONS, 0).map(|mrs| mrs[3])
}

/// A read's cost in interrupt mode: [`Cost`] and, of its `driver` share,
/// the ticks spent taking the MSI.
type MsiCost = (Cost, u64);

/// In interrupt mode, with the driver polling to the completion and then
/// taking its MSI (`WAIT_FIRST`), the cheapest of [`TIMED_READS`] reads
/// of block 0 in which it took exactly one interrupt, as [`timed_read`]:
/// the polling left out, and the doorbell write too: QEMU completes some
/// reads inside it (by the host's timing), and the kernel's entry for
/// the MSI then lands there instead of in the polling. `None` when no
/// read took exactly one.
fn timed_msi_read(driver: Cap<Endpoint>) -> Result<Option<(u64, MsiCost)>, Status> {
    timed_with_interrupts(
        driver,
        &mut || call(driver, READ, 0),
        |count, _| count == 1,
        |cost| cost.wait + cost.doorbell,
    )
}

/// The cheapest of [`TIMED_READS`] runs of `read` (a read of block 0)
/// whose interrupts and sleeps (`COMPLETIONS`' MR1 and MR3 during the
/// read) `counts` accepts: the client's total minus `left_out` of the
/// read's cost.
fn timed_with_interrupts(
    driver: Cap<Endpoint>,
    read: &mut dyn FnMut() -> Result<[u64; 4], Status>,
    counts: impl Fn(u64, u64) -> bool,
    left_out: impl Fn(&Cost) -> u64,
) -> Result<Option<(u64, MsiCost)>, Status> {
    let mut best: Option<(u64, MsiCost)> = None;
    // Reads by the interrupts taken in them: none, one, more; and those
    // the driver slept for.
    let mut taken = [0; 3];
    let mut slept_in = 0;
    for _ in 0..TIMED_READS {
        let (before, _) = interrupts(driver)?;
        let slept_before = slept(driver)?;
        let start = rt::bench::io_counter();
        let mrs = read()?;
        let total = rt::bench::io_counter() - start;
        let cost = Cost::from_mrs([mrs[1], mrs[2], mrs[3]]);
        let (after, msi) = interrupts(driver)?;
        let count = after.saturating_sub(before);
        let sleeps = slept(driver)?.saturating_sub(slept_before);
        taken[count.min(2) as usize] += 1;
        slept_in += u64::from(sleeps > 0);
        let without_device = total.saturating_sub(left_out(&cost));
        if counts(count, sleeps) && best.is_none_or(|(least, _)| without_device < least) {
            best = Some((without_device, (cost, msi)));
        }
    }
    rt::println!(
        "[blkclient] of {TIMED_READS} timed reads the driver took no interrupt in {}, one in {}, more in {}; it slept for the completion in {slept_in}",
        taken[0],
        taken[1],
        taken[2]
    );
    Ok(best)
}

/// With the PMU counting instructions (`rt::bench::pmu_counting`: the
/// benchmark kernel on aarch64, `cargo xtask bench` boots it under
/// `-icount shift=0,sleep=on`), the cheapest of [`TIMED_READS`] reads of
/// block 0 in which the driver slept for the completion and took exactly
/// one interrupt (no `WAIT_FIRST`), nothing left out: INST_RETIRED counts
/// every instruction the CPU runs, kernel, idle thread and both domains,
/// and nothing while it sleeps. A read whose completion was there before
/// the driver looked did not sleep (the driver takes its MSI before the
/// next doorbell): left out, so the idle switch is in the count. When the
/// device completes every read before the driver looks (QEMU's NVMe
/// controller does), so the driver never sleeps, 16 more reads and the
/// cheapest that took exactly one interrupt: its MSI entry and the
/// driver's Wait and Ack, and no idle switch, since the CPU never idled.
/// `read` is one read of block 0: a plain `READ`, or a zero-copy one
/// with the client's Frame (`zero_copy::timed_pmu_read`).
fn timed_pmu_read(
    name: &str,
    driver: Cap<Endpoint>,
    read: &mut dyn FnMut() -> Result<[u64; 4], Status>,
) -> Result<Option<(u64, MsiCost)>, Status> {
    let slept = timed_with_interrupts(
        driver,
        read,
        |count, sleeps| count == 1 && sleeps == 1,
        |_| 0,
    )?;
    if slept.is_some() {
        return Ok(slept);
    }
    rt::println!(
        "[blkclient] {name}: the driver never slept for a completion (the device was always done before it looked): the reads that took one interrupt instead, with no idle switch"
    );
    timed_with_interrupts(driver, read, |count, _| count == 1, |_| 0)
}

/// Prints the `bench` lines of a [`timed_pmu_read`]: the total and its
/// parts: `-interrupt` the driver's wait for the completion (from the
/// doorbell to the look that found it: Notification.Wait, the switch to
/// the idle thread, the kernel's MSI entry and signal, the switch back,
/// IrqHandler.Ack), `-doorbell` its doorbell writes, `-iommu` its IOMMU
/// calls, `-driver` the rest of the driver domain from the request's
/// arrival to its reply (IOMMU and doorbell included), `-ipc` the rest.
fn print_pmu_bench(name: &str, timed: Result<Option<(u64, MsiCost)>, Status>) {
    match timed {
        Ok(Some((total, (cost, _)))) => {
            rt::println!("bench {name} instructions={total}");
            rt::println!(
                "bench {name}-ipc instructions={}",
                total.saturating_sub(cost.driver + cost.wait)
            );
            rt::println!("bench {name}-driver instructions={}", cost.driver);
            rt::println!("bench {name}-iommu instructions={}", cost.iommu);
            rt::println!("bench {name}-doorbell instructions={}", cost.doorbell);
            rt::println!("bench {name}-interrupt instructions={}", cost.wait);
        }
        Ok(None) => {
            rt::println!("bench {name} FAILED: no read of {TIMED_READS} took exactly one interrupt")
        }
        Err(status) => rt::println!("bench {name} FAILED: the read answered {status:?}"),
    }
}

/// Prints the `bench` lines of an interrupt-mode read: the total and its
/// parts as [`print_bench`]'s without the doorbell ([`timed_msi_read`]),
/// and `-driver` without `-interrupt`: the
/// driver taking the completion's MSI (`Notification.Wait`, which finds
/// the signal, and `IrqHandler.Ack`). The kernel's entry for the MSI and
/// its signal happen while the driver polls, and are left out with it.
fn print_msi_bench(name: &str, timed: Result<Option<(u64, MsiCost)>, Status>) {
    match timed {
        Ok(Some((total, (cost, msi)))) => {
            rt::println!("bench {name} instructions={total}");
            rt::println!(
                "bench {name}-ipc instructions={}",
                total.saturating_sub(cost.driver.saturating_sub(cost.doorbell))
            );
            rt::println!(
                "bench {name}-driver instructions={}",
                cost.driver.saturating_sub(msi + cost.doorbell)
            );
            rt::println!("bench {name}-iommu instructions={}", cost.iommu);
            rt::println!("bench {name}-interrupt instructions={msi}");
        }
        Ok(None) => {
            rt::println!("bench {name} FAILED: no read of {TIMED_READS} took exactly one interrupt")
        }
        Err(status) => rt::println!("bench {name} FAILED: the read answered {status:?}"),
    }
}

fn main(startup: &rt::Startup) -> i32 {
    let mut suite = Suite::new();
    let Some(table) = startup.caps() else {
        suite.run("driver_endpoint", || {
            rt::fail!("no capability table: run me as a domain of images/blk.toml or nvme.toml")
        });
        return suite.finish();
    };
    let Some(driver) = table.lookup::<Endpoint>("channel0") else {
        suite.run("driver_endpoint", || {
            rt::fail!("no endpoint `channel0` to the driver in my capability table")
        });
        return suite.finish();
    };
    let mut kind = None;
    let mut injected = 0;
    suite.run("disk_size_from_the_driver", || {
        let info = call(driver, INFO, 0);
        let Ok([blocks, code, _, inject]) = info else {
            rt::fail!("asking the driver for the disk's size: {info:?}")
        };
        check!(
            blocks == DISK_BLOCKS,
            "the driver says {blocks} blocks; xtask made {DISK_BLOCKS}"
        );
        kind = Driver::from_code(code);
        injected = inject;
        check!(
            kind.is_some(),
            "the driver names itself {code}, no driver this client knows"
        );
        rt::println!(
            "[blkclient] the driver is {:?}",
            kind.unwrap_or(Driver::VirtioBlk)
        );
        Ok(())
    });
    let Some(kind) = kind else {
        return suite.finish();
    };
    if injected == sys::names::INJECT_CRASH_EVERY_RUN {
        suite.run("driver_given_up_after_its_restarts", || given_up(driver));
        return suite.finish();
    }
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
        write_new_pattern(driver)?;
        for block in 0..DISK_BLOCKS {
            read_and_check(driver, block, NEW_SEED)?;
        }
        rt::println!(
            "[blkclient] wrote a new pattern to all {DISK_BLOCKS} blocks and read it back; xtask checks the disk file after QEMU exits"
        );
        Ok(())
    });
    if kind == Driver::VirtioBlk {
        sharing_tests(&mut suite, driver);
    }
    completion_test(&mut suite, driver);
    suite.run("driver_restarted_once_per_injected_failure", || {
        // INFO's MR2: runs init started before the driver's current one;
        // MR3: the failure its image injects into its first run.
        let info = call(driver, INFO, 0);
        let Ok([_, _, start, inject]) = info else {
            rt::fail!("asking the driver: {info:?}")
        };
        let retried = RETRIED.load(Ordering::Relaxed);
        let expected = u64::from(inject != 0);
        check!(
            start == expected && retried == expected,
            "the image injects failure {inject}: the driver is in run {} and {retried} request(s) were sent again; expected run {} and {expected}",
            start + 1,
            expected + 1
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
    let frames = zero_copy::Frames::from_table(table);
    suite.run("zero_copy_reads_and_writes_use_the_clients_frame", || {
        zero_copy::reads_and_writes(driver, frames.clone()?)
    });
    rt::println!(
        "[blkclient] one 4 KiB read, client -> driver -> device -> client, the device's time left out, per way of sharing buffers (instructions under cargo xtask bench's -icount; CPU counter ticks otherwise):"
    );
    let prefix = match kind {
        Driver::VirtioBlk => "blk-read-4k",
        Driver::Nvme => "nvme-read-4k",
    };
    let by_msi = matches!(call(driver, COMPLETIONS, 0), Ok([INTERRUPTS, ..]));
    if by_msi && rt::bench::pmu_counting() {
        // The benchmark kernel's PMU (aarch64): the driver sleeps for each
        // interrupt; only these rows, so they do not overwrite the
        // release kernel's. Pre-mapped last: (c)'s virtio-blk header and
        // status go through it, as in polling mode, and so does the
        // revoke test below.
        let rows: &[(Sharing, &str)] = match kind {
            Driver::VirtioBlk => &[
                (Sharing::PerRequest, "blk-read-4k-pmu"),
                (Sharing::Batched, "blk-read-4k-batched-pmu"),
                (Sharing::Premapped, "blk-read-4k-premapped-pmu"),
            ],
            Driver::Nvme => &[(Sharing::Premapped, "nvme-read-4k-pmu")],
        };
        for &(sharing, name) in rows {
            let shared = match kind {
                Driver::VirtioBlk => ask(driver, SHARING, sharing.code()).map(|_| ()),
                Driver::Nvme => Ok(()),
            };
            print_pmu_bench(
                name,
                shared.and_then(|()| timed_pmu_read(name, driver, &mut || call(driver, READ, 0))),
            );
        }
        // (c) counted the same way: the data straight into the client's
        // Frame, the capability with each request.
        let name = rt::__format!("{prefix}-zerocopy-pmu");
        match frames.clone() {
            Ok(frames) => print_pmu_bench(&name, zero_copy::timed_pmu_read(&name, driver, frames)),
            Err(why) => rt::println!("bench {name} FAILED: {}", why.0),
        }
    } else if kind == Driver::Nvme && by_msi {
        // Interrupt mode (images/nvme-irq.toml): its own row, through the
        // pre-mapped pool.
        print_msi_bench(
            "nvme-read-4k-msi",
            ask(driver, WAIT_FIRST, 1).and_then(|_| timed_msi_read(driver)),
        );
        if let Err(status) = ask(driver, WAIT_FIRST, 0) {
            rt::println!("[blkclient] WAIT_FIRST 0 (look first again): {status:?}");
        }
    } else if kind == Driver::VirtioBlk && by_msi {
        // Interrupt mode (images/blk-irq.toml): only its own rows, so
        // they do not overwrite the polling image's.
        for (sharing, name) in [
            (Sharing::PerRequest, "blk-read-4k-msi"),
            (Sharing::Premapped, "blk-read-4k-msi-premapped"),
        ] {
            print_msi_bench(
                name,
                ask(driver, SHARING, sharing.code())
                    .and_then(|_| ask(driver, WAIT_FIRST, 1))
                    .and_then(|_| timed_msi_read(driver)),
            );
        }
        if let Err(status) = ask(driver, WAIT_FIRST, 0) {
            rt::println!("[blkclient] WAIT_FIRST 0 (look first again): {status:?}");
        }
    } else if kind == Driver::VirtioBlk {
        for (sharing, name) in [
            (Sharing::PerRequest, "blk-read-4k"),
            (Sharing::StagedBounces, "blk-read-4k-staged"),
            (Sharing::Batched, "blk-read-4k-batched"),
            (Sharing::Premapped, "blk-read-4k-premapped"),
        ] {
            print_bench(
                name,
                ask(driver, SHARING, sharing.code()).and_then(|_| timed_read(driver)),
                matches!(sharing, Sharing::PerRequest | Sharing::Premapped),
            );
        }
    } else {
        print_bench(prefix, timed_read(driver), true);
    }
    // (c): the data straight into the client's Frame; virtio-blk's request
    // header and status still go through pages kept mapped, as in (b).
    match frames.clone() {
        _ if by_msi => {}
        Ok(frames) => print_bench(
            &rt::__format!("{prefix}-zerocopy"),
            zero_copy::timed_read(driver, frames),
            true,
        ),
        Err(why) => rt::println!("bench {prefix}-zerocopy FAILED: {}", why.0),
    }
    // Last: the device may be left unusable by the blocked access (a
    // virtio device that cannot map a buffer stops; NVMe goes on). The
    // virtio-blk driver stays pre-mapped (b) for it: a per-request bounce's
    // own stage-1 invalidation in the middle would also flush the stale
    // translation this test must catch on a kernel that skips the revoke's.
    if injected == 0 {
        suite.run("revoked_frame_mid_io_is_never_written", || {
            zero_copy::revoked_mid_io(driver, frames.clone()?, zero_copy::Reclaim::RevokeFrame)
        });
        // The controller goes on after a blocked access, so the NVMe driver
        // takes the second way too: a dead client's memory reclaimed.
        if kind == Driver::Nvme {
            suite.run("reclaimed_memory_mid_io_is_never_written", || {
                zero_copy::revoked_mid_io(
                    driver,
                    frames.clone()?,
                    zero_copy::Reclaim::RevokeUntyped,
                )
            });
        }
    }
    suite.finish()
}

/// How the driver learnt of completions, after the reads and writes above
/// (at least three per block): `COMPLETIONS`, which a driver that only
/// polls may not know (then no test runs). The mode is the image's (`msi`
/// on the grant); each has its own test name, so a row can demand the one
/// it expects (`must_pass` in tools/xtask/system-tests.toml).
fn completion_test(suite: &mut Suite, driver: Cap<Endpoint>) {
    let answer = call(driver, COMPLETIONS, 0);
    if answer == Err(Status::UnknownRequest) {
        return;
    }
    let by_msi = matches!(answer, Ok([INTERRUPTS, ..]));
    let name = if by_msi {
        "every_request_completes_by_msi"
    } else {
        "every_request_completes_by_polling"
    };
    suite.run(name, || {
        let Ok([mode, interrupts, _, _]) = answer else {
            rt::fail!("COMPLETIONS: {answer:?}")
        };
        match mode {
            // Whether a request takes a wake depends on the host's timing:
            // one whose completion is there before the driver looks takes
            // none. So each of a few reads polls to its completion and then
            // takes its MSI (`WAIT_FIRST`): each must count one, and an MSI
            // that never arrives leaves the driver waiting (the row's
            // timeout fails it).
            INTERRUPTS => each_read_takes_its_msi(driver)?,
            POLLING => check!(interrupts == 0, "{interrupts} interrupts while polling"),
            other => rt::fail!("unknown completion mode {other}"),
        }
        rt::println!(
            "[blkclient] the driver completes requests by {}: {interrupts} interrupts taken before this test",
            if by_msi { "MSI" } else { "polling" }
        );
        Ok(())
    });
}

/// Reads with `WAIT_FIRST` on, [`MSI_READS`] of them; each must take at
/// least one interrupt. `WAIT_FIRST` is turned off again either way.
fn each_read_takes_its_msi(driver: Cap<Endpoint>) -> Outcome {
    if let Err(status) = ask(driver, WAIT_FIRST, 1) {
        rt::fail!("WAIT_FIRST 1: {status:?}");
    }
    let taken: Result<u64, Status> = (0..MSI_READS).try_fold(0, |taken, block| {
        let (before, _) = interrupts(driver)?;
        call(driver, READ, block)?;
        let (after, _) = interrupts(driver)?;
        Ok(taken + u64::from(after > before))
    });
    let restored = ask(driver, WAIT_FIRST, 0);
    check!(
        taken == Ok(MSI_READS),
        "reads that took their MSI: {taken:?} of {MSI_READS}"
    );
    check!(restored.is_ok(), "WAIT_FIRST 0: {restored:?}");
    Ok(())
}

/// Reads [`each_read_takes_its_msi`] makes.
const MSI_READS: u64 = 8;

/// The virtio-blk driver's ways of sharing buffers, checked by their
/// invalidation counts.
fn sharing_tests(suite: &mut Suite, driver: Cap<Endpoint>) {
    suite.run("each_read_maps_and_unmaps_its_buffers_in_stage1", || {
        let before = stats(driver);
        let read = ask(driver, READ, 1);
        let after = stats(driver);
        let (Ok(before), Ok(()), Ok(after)) = (before, read.map(|_| ()), after) else {
            rt::fail!("asking the driver: {before:?} / {read:?} / {after:?}")
        };
        // Three buffers (request header, data page, status), each mapped
        // when shared and unmapped when the device returns it, each with
        // its own invalidation.
        check!(
            after.invalidations - before.invalidations == 6,
            "one read cost {} IoUserTable.Invalidate calls, not 6 (3 buffers x map + unmap)",
            after.invalidations - before.invalidations
        );
        check!(
            after.in_place - before.in_place == 1 && after.bounced - before.bounced == 2,
            "one read shared {} buffer(s) in place and bounced {}, not 1 and 2",
            after.in_place - before.in_place,
            after.bounced - before.bounced
        );
        check!(
            after.data_mapped == 0,
            "the data page's IOVA still translates after the read: the device could still reach it"
        );
        Ok(())
    });
    suite.run("each_sharing_reads_right_with_its_invalidations", || {
        // Invalidations per read: (a) 6; staged headers: the data page's
        // map and unmap, 2; (b) pre-mapped: none; batched: the three maps
        // at once, then the three unmaps, 2.
        for (sharing, expected) in [
            (Sharing::StagedBounces, 2),
            (Sharing::Premapped, 0),
            (Sharing::Batched, 2),
            (Sharing::PerRequest, 6),
        ] {
            let set = ask(driver, SHARING, sharing.code());
            check!(set.is_ok(), "switching to {sharing:?}: {set:?}");
            let before = stats(driver);
            read_and_check(driver, 5, NEW_SEED)?;
            let after = stats(driver);
            let (Ok(before), Ok(after)) = (before, after) else {
                rt::fail!("asking for the driver's counters: {before:?} / {after:?}")
            };
            let invalidations = after.invalidations - before.invalidations;
            check!(
                invalidations == expected,
                "{sharing:?}: one read cost {invalidations} invalidations, not {expected}"
            );
        }
        Ok(())
    });
}
