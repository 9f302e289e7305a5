//! `sva`: the system tests of SVA (`IoDevice.BindVSpace`), booted as the
//! root task with QEMU's edu device. The driver binds edu to its own CPU
//! address space and names every buffer by its virtual address:
//!
//! - DMA works both ways through the driver's own page tables.
//! - After `Frame.Unmap` returns, a DMA to the same address faults and
//!   nothing lands (a transfer first warms the device's IOTLB, so only
//!   the unmap's invalidation can stop it).
//! - The kernel half of the address space is unreachable: a DMA naming a
//!   kernel address faults.
//! - A bound device cannot also attach to an IoSpace; `Detach` blocks it.
//!   Unbound it may attach to an IoSpace (on QEMU's x-flts VT-d, which
//!   has no stage 2, one held as a first-stage table).
//!
//! It also prints `bench` lines for `cargo xtask bench`: `BindVSpace`, and
//! a CPU `Frame.Unmap` in the VSpace before and after the device is bound.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use edu::checks::failure;
use edu::device::Edu;
use edu::nested::Buffer;
use edu::{LENGTH, PATTERN};
use rt::bench::{BATCHES, counter};
use rt::check;
use rt::space::{Objects, map_frame};
use rt::testing::{Failure, Outcome, Suite};
use sys::bootinfo;
use sys::{Cap, Frame, IoDevice, IoFaultQueue, IommuControl, MapRights, PageTable, Rights};

rt::entry!(main);

/// The PCI slot of the edu this test drives: the one QEMU was given a
/// 64-bit DMA mask (`tools/xtask/system-tests.toml`), so the addresses it
/// is handed reach the IOMMU unmasked (the machine's own edu masks them
/// to 28 or 40 bits).
const EDU_SLOT: u8 = 0x10;
/// The badge of the device capability the fault queue is bound with.
const BADGE: u64 = 0x5FA;
/// The driver's buffers: source and destination, and a second mapping of
/// the destination's Frame through which the test reads it after the
/// first is unmapped.
const SOURCE_VA: u64 = 0x50_0000_0000;
const DESTINATION_VA: u64 = 0x50_0000_1000;
const ALIAS_VA: u64 = 0x50_0010_0000;
/// The page whose unmap the benchmark times.
const BENCH_VA: u64 = 0x50_0020_0000;
/// A kernel address: the direct map of physical 1 MiB (x86_64), the
/// kernel image (aarch64).
#[cfg(target_arch = "x86_64")]
const KERNEL_VA: u64 = 0xFFFF_8000_0010_0000;
#[cfg(target_arch = "aarch64")]
const KERNEL_VA: u64 = 0xFFFF_0000_4020_0000;

/// The fault a kernel address raises. VT-d: 0x81, a first-stage entry
/// with U/S clear met by a user request (the kernel's PML4 entries are
/// supervisor-only, and the device's requests carry no supervisor
/// privilege). SMMUv3: F_TRANSLATION (0x10), the CD's EPD1 leaving the
/// TTB1 half untranslatable.
#[cfg(target_arch = "x86_64")]
const KERNEL_FAULT_REASON: u64 = 0x81;
#[cfg(target_arch = "aarch64")]
const KERNEL_FAULT_REASON: u64 = 0x10;

/// The IOMMU unit and the driver's own address space (the root task's).
const CONTROL: Cap<IommuControl> = bootinfo::IOMMU_CONTROL;
const OWN: Cap<PageTable> = bootinfo::INIT_VSPACE;

/// The driver: its device bound to its own address space, its buffers.
struct Driver {
    edu: Edu,
    device: Cap<IoDevice>,
    queue: Cap<IoFaultQueue>,
    source: Buffer,
    destination: Buffer,
    /// The destination Frame read through [`ALIAS_VA`].
    alias: Buffer,
}

fn main(_startup: &rt::Startup) -> i32 {
    let Some(info) = rt::boot::boot_info() else {
        rt::println!("sva: no boot-info page");
        return 1;
    };
    let mut objects = Objects::from_boot_info(info);
    let mut suite = Suite::new();
    let mut driver = None;
    suite.run("sva_dma_both_directions", || {
        let built = driver.insert(set_up(&mut objects)?);
        dma_both_directions(built)
    });
    let mut with = |name: &str, test: &mut dyn FnMut(&mut Driver, &mut Objects) -> Outcome| {
        suite.run(name, || match driver.as_mut() {
            Some(d) => test(d, &mut objects),
            None => rt::fail!("the driver was not set up"),
        });
    };
    with("nothing_lands_after_frame_unmap", &mut |d, o| {
        nothing_lands_after_frame_unmap(d, o)
    });
    with("kernel_addresses_fault", &mut |d, _| {
        kernel_addresses_fault(d)
    });
    with("bound_device_cannot_attach", &mut |d, o| {
        bound_device_cannot_attach(d, o)
    });
    with("pasid_binding_installs_and_ends", &mut |d, o| {
        pasid_binding(d, o)
    });
    with("detach_blocks_the_device", &mut |d, _| detach_blocks(d));
    with("attach_after_unbind", &mut |d, o| attach_after_unbind(d, o));
    suite.finish()
}

/// A fresh 4 KiB Frame mapped read-write at `va` of the driver's space.
fn buffer(objects: &mut Objects, va: u64) -> Result<Buffer, Failure> {
    let frame: Cap<Frame> = objects
        .make_sized::<Frame>(12)
        .map_err(|e| failure("retype a Frame", e))?;
    map_frame(objects, frame, OWN, va, MapRights::READ_WRITE)
        .map_err(|e| failure("map a buffer", e))?;
    Ok(Buffer {
        cpu: va,
        ipa: va,
        io: frame,
    })
}

fn set_up(objects: &mut Objects) -> Result<Driver, Failure> {
    let edu::checks::SlotDevice {
        edu,
        device,
        badged,
        queue,
    } = edu::checks::device_in_slot(objects, CONTROL, OWN, EDU_SLOT, BADGE)?;
    rt::println!("[sva] edu at {}, requester {:#x}", edu.bdf, edu.requester());
    let info = CONTROL
        .identify()
        .map_err(|e| failure("IommuIdentify", e))?;
    // x86_64: QEMU's x-flts unit has a first stage and no second.
    let expected = (true, cfg!(target_arch = "aarch64"));
    if (info.stage1, info.stage2) != expected {
        rt::fail!(
            "IommuIdentify: stage 1 {}, stage 2 {}",
            info.stage1,
            info.stage2
        );
    }
    let source = buffer(objects, SOURCE_VA)?;
    let destination = buffer(objects, DESTINATION_VA)?;
    let copy = objects
        .mint(destination.io, Rights::ALL, 0)
        .map_err(|e| failure("copy the destination Frame", e))?;
    map_frame(objects, copy, OWN, ALIAS_VA, MapRights::READ)
        .map_err(|e| failure("map the destination's alias", e))?;
    let alias = Buffer {
        cpu: ALIAS_VA,
        ipa: ALIAS_VA,
        io: copy,
    };
    // Read-only on the root: the bind needs write.
    let read_only = objects
        .mint(OWN, Rights::READ, 0)
        .map_err(|e| failure("a read-only VSpace capability", e))?;
    let refused = badged.bind_vspace(read_only);
    if refused != Err(sys::Error::InsufficientRights) {
        rt::fail!("BindVSpace with a read-only VSpace capability: {refused:?}");
    }
    let bench = objects
        .make_sized::<Frame>(12)
        .map_err(|e| failure("retype the benchmark's Frame", e))?;
    let unbound = unmap_cost(objects, bench)?;
    badged
        .bind_vspace(OWN)
        .map_err(|e| failure("BindVSpace", e))?;
    let bind = bind_cost(badged)?;
    abstraction_holds()?;
    let bound = unmap_cost(objects, bench)?;
    // Instruction counts under `cargo xtask bench` (-icount); plain
    // counter ticks otherwise.
    rt::println!("bench sva-bind instructions={bind}");
    rt::println!("bench sva-cpu-unmap-unbound instructions={unbound}");
    rt::println!("bench sva-cpu-unmap-bound instructions={bound}");
    Ok(Driver {
        edu,
        device,
        queue,
        source,
        destination,
        alias,
    })
}

/// The median counter ticks of one `Frame.Unmap` of `frame` at
/// [`BENCH_VA`] (mapped again, untimed, before each sample).
fn unmap_cost(objects: &mut Objects, frame: Cap<Frame>) -> Result<u64, Failure> {
    let mut samples = [0u64; BATCHES];
    for sample in &mut samples {
        map_frame(objects, frame, OWN, BENCH_VA, MapRights::READ_WRITE)
            .map_err(|e| failure("map the benchmark's page", e))?;
        let start = counter();
        let unmapped = frame.unmap();
        *sample = counter() - start;
        unmapped.map_err(|e| failure("Frame.Unmap", e))?;
    }
    samples.sort_unstable();
    Ok(samples[BATCHES / 2])
}

/// The median counter ticks of one `IoDevice.BindVSpace` of the driver's
/// VSpace by the bound `device` (detached, untimed, before each sample);
/// leaves it bound.
fn bind_cost(device: Cap<IoDevice>) -> Result<u64, Failure> {
    let mut samples = [0u64; BATCHES];
    for sample in &mut samples {
        device.detach().map_err(|e| failure("Detach", e))?;
        let start = counter();
        let bound = device.bind_vspace(OWN);
        *sample = counter() - start;
        bound.map_err(|e| failure("BindVSpace", e))?;
    }
    samples.sort_unstable();
    Ok(samples[BATCHES / 2])
}

fn abstraction_holds() -> Outcome {
    edu::checks::abstraction_holds("with a device bound")
}

/// The first fault record names the device capability and `page`.
fn expect_fault(d: &Driver, page: u64) -> Outcome {
    edu::checks::expect_fault(d.queue, BADGE, Some(page))
}

fn drain(d: &Driver) {
    while let Ok(Some(_)) = d.queue.pop() {}
}

fn dma_both_directions(d: &mut Driver) -> Outcome {
    // The device is handed the driver's own virtual addresses.
    edu::checks::round_trip(
        &d.edu,
        (&d.source, SOURCE_VA),
        (&d.destination, DESTINATION_VA),
        d.queue,
    )
}

fn nothing_lands_after_frame_unmap(d: &mut Driver, objects: &mut Objects) -> Outcome {
    d.source.fill(PATTERN);
    d.edu.read_memory(SOURCE_VA, LENGTH)?;
    // A transfer first, so the device's IOTLB holds the destination's
    // translation: only the unmap's invalidation can remove it.
    d.destination.fill(0);
    d.edu.write_memory(DESTINATION_VA, LENGTH)?;
    check!(d.alias.read(0) == PATTERN, "the warm-up DMA did not land");
    d.destination.fill(0);
    drain(d);
    // The transfer lands 100 ms (virtual) after it starts; the unmap
    // returns long before, with the device's IOTLB invalidated.
    d.edu.start_write_memory(DESTINATION_VA, LENGTH);
    let unmapped = d.destination.io.unmap();
    check!(unmapped.is_ok(), "Frame.Unmap: {unmapped:?}");
    d.edu.wait()?;
    let untouched = (0..4096).all(|i| d.alias.read(i) == 0);
    let faulted = expect_fault(d, DESTINATION_VA);
    // Map it back first, so the tests that follow find it whatever this
    // one found.
    map_frame(
        objects,
        d.destination.io,
        OWN,
        DESTINATION_VA,
        MapRights::READ_WRITE,
    )
    .map_err(|e| failure("map the destination again", e))?;
    check!(
        untouched,
        "a byte landed in the frame after its Frame.Unmap returned"
    );
    faulted?;
    d.edu.write_memory(DESTINATION_VA, LENGTH)?;
    check!(
        d.alias.read(0) == PATTERN,
        "DMA after the remap did not land"
    );
    Ok(())
}

fn kernel_addresses_fault(d: &mut Driver) -> Outcome {
    drain(d);
    // The device reads the kernel's memory into its buffer, if it can.
    d.edu.read_memory(KERNEL_VA, LENGTH)?;
    let first = d.queue.pop();
    let Ok(Some(record)) = first else {
        rt::fail!("no fault record: {first:?}")
    };
    drain(d);
    check!(
        record.badge == BADGE && record.address & !0xfff == KERNEL_VA & !0xfff,
        "the fault names badge {:#x}, address {:#x}",
        record.badge,
        record.address
    );
    // Not merely unmapped: the kernel half is refused for what it is.
    check!(
        record.reason == KERNEL_FAULT_REASON,
        "fault reason {:#x}, not {KERNEL_FAULT_REASON:#x}",
        record.reason
    );
    Ok(())
}

fn bound_device_cannot_attach(d: &mut Driver, objects: &mut Objects) -> Outcome {
    let space = objects
        .make_io_space(CONTROL)
        .map_err(|e| failure("an IoSpace", e))?;
    let attached = d.device.attach(space);
    check!(
        attached == Err(sys::Error::AlreadyAttached),
        "Attach of a bound device: {attached:?}"
    );
    let again = d.device.bind_vspace(OWN);
    check!(
        again == Err(sys::Error::AlreadyAttached),
        "a second BindVSpace: {again:?}"
    );
    objects
        .delete(space.slot())
        .map_err(|e| failure("delete the IoSpace", e))?;
    Ok(())
}

/// `IoPasid.BindVSpace` through the kernel. Where the unit has PASIDs
/// and a first stage (VT-d `x-flts` with `x-pasid-mode`: the seeded
/// row) PASID 1's first-stage entry is written beside the device's own
/// binding, the abstraction check of the seeded row's kernel explains it
/// by the IoPasid, and `IoPasid.Detach` ends it; QEMU sends no DMA tagged
/// with a PASID, so what reaches through the entry is tested against the
/// VT-d model (`iospace` `sva::vtd_pasid_*`). Without PASIDs (`x-flts`
/// alone) and on the SMMUv3: `NotSupported`.
fn pasid_binding(d: &mut Driver, objects: &mut Objects) -> Outcome {
    let info = CONTROL
        .identify()
        .map_err(|e| failure("IommuIdentify", e))?;
    let pasids = info.pasid_bits > 0 && cfg!(target_arch = "x86_64");
    let slot = objects.slot().map_err(|e| failure("slot", e))?;
    let pasid = d
        .device
        .mint_pasid(u32::from(pasids), slot)
        .map_err(|e| failure("MintPasid", e))?;
    let bound = pasid.bind_vspace(OWN);
    if !pasids {
        check!(
            bound == Err(sys::Error::NotSupported),
            "IoPasid.BindVSpace without PASIDs or on the SMMUv3: {bound:?}"
        );
    } else {
        check!(bound.is_ok(), "IoPasid.BindVSpace: {bound:?}");
        rt::println!("[sva] PASID 1 bound to the driver's VSpace");
        abstraction_holds()?;
        let again = pasid.bind_vspace(OWN);
        check!(
            again == Err(sys::Error::AlreadyAttached),
            "a second IoPasid.BindVSpace: {again:?}"
        );
        let detached = pasid.detach();
        check!(
            detached.is_ok(),
            "IoPasid.Detach of the binding: {detached:?}"
        );
        let twice = pasid.detach();
        check!(
            twice == Err(sys::Error::NotAttached),
            "a second IoPasid.Detach: {twice:?}"
        );
        // PASID 0 is the device's own entry, bound already.
        let slot = objects.slot().map_err(|e| failure("slot", e))?;
        let own = d
            .device
            .mint_pasid(0, slot)
            .map_err(|e| failure("MintPasid 0", e))?;
        let clash = own.bind_vspace(OWN);
        check!(
            clash == Err(sys::Error::AlreadyAttached),
            "IoPasid.BindVSpace of PASID 0 beside the device's binding: {clash:?}"
        );
        objects
            .delete(own.slot())
            .map_err(|e| failure("delete IoPasid 0", e))?;
    }
    objects
        .delete(pasid.slot())
        .map_err(|e| failure("delete the IoPasid", e))?;
    abstraction_holds()
}

fn detach_blocks(d: &mut Driver) -> Outcome {
    let detached = d.device.detach();
    check!(detached.is_ok(), "Detach: {detached:?}");
    d.source.fill(PATTERN);
    d.destination.fill(0);
    d.edu.read_memory(SOURCE_VA, LENGTH)?;
    d.edu.write_memory(DESTINATION_VA, LENGTH)?;
    check!(
        (0..4096).all(|i| d.destination.read(i) == 0),
        "a byte landed after Detach"
    );
    let again = d.device.detach();
    check!(
        again == Err(sys::Error::NotAttached),
        "a second Detach: {again:?}"
    );
    drain(d);
    abstraction_holds()
}

/// Unbound, the device may attach to an IoSpace: through a stage 2 (the
/// SMMUv3), or on QEMU's x-flts VT-d, which has none, to an IoSpace the
/// kernel holds as a first-stage table (`IommuIdentify` MR1 bit 4).
fn attach_after_unbind(d: &mut Driver, objects: &mut Objects) -> Outcome {
    let space = objects
        .make_io_space(CONTROL)
        .map_err(|e| failure("an IoSpace", e))?;
    let attached = d.device.attach(space);
    check!(
        attached.is_ok(),
        "Attach after the binding ended: {attached:?}"
    );
    d.device
        .detach()
        .map_err(|e| failure("Detach from the IoSpace", e))?;
    objects
        .delete(space.slot())
        .map_err(|e| failure("delete the IoSpace", e))?;
    Ok(())
}
