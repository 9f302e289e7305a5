//! The edu program's test suite: booted as the root task (no capability
//! table), it drives the edu device with the library's driver parts
//! (`edu::device`, `edu::nested`) and runs the system tests of the IOMMU
//! claims, minting its own IOMMU capabilities from IommuControl:
//!
//! - Nested DMA works both ways and moves exactly the bytes asked for.
//! - DMA to an IOVA the stage-1 table does not map is blocked and its
//!   fault arrives in the fault queue with the device capability's badge
//!   and the address.
//! - A Frame mapped read-only into the IoSpace cannot be written by the
//!   device even when stage 1 says read-write; device memory (a Frame of
//!   the ECAM window) cannot be mapped into an IoSpace at all.
//! - Revoke during DMA: after `IoSpace.Unmap` returns, nothing lands in the
//!   frame.
//! - A malicious stage-1 table (entries to an IPA stage 2 does not map, to
//!   the kernel's reserved IPA window, a 1 GiB block over foreign IPAs) is
//!   blocked every time and changes no byte of the driver's memory.
//! - Two devices with separate IoSpaces cannot reach each other's memory.
//! - edu's MSI, programmed from `IrqHandler.MsiMessage`, signals the
//!   handler's notification when a DMA finishes (aarch64: through the
//!   GICv2m doorbell the kernel maps into the IoSpace, reached through
//!   the driver's stage 1); the MSI window cannot be mapped over, nor
//!   used as a stage-1 root (`MsiWindow`), and still delivers after the
//!   attempts.
//! - Deleting the IoUserTable a device is nested on blocks the device.
//! - With PASIDs (VT-d `x-pasid-mode`): attaching and detaching IoPasid 0,
//!   the RID_PASID entry edu's untagged DMA uses, is seen by the device.
//! - Revoking the IoSpace blocks the device; the fault reaches the queue.
//! - Deleting the IoDevice leaves the device blocked.
use edu::checks::failure;
use edu::device::Edu;
use edu::nested::{Buffer, IOVA_WINDOW, Nested, fault_queue};
use edu::{LENGTH, PATTERN};
use rt::check;
use rt::space::Objects;
use rt::testing::{Failure, Outcome, Suite};
use sys::bootinfo;
use sys::{Cap, IoDevice, IoFaultQueue, IommuControl, MapRights, Notification, PageTable, Rights};

/// The badge of the device capability the fault queue is bound with.
const BADGE: u64 = 0xED;
/// IOVAs of the source and destination buffers.
const SOURCE_IOVA: u64 = 0x10_0000;
const DESTINATION_IOVA: u64 = 0x10_1000;
/// An IOVA stage 1 never maps.
const UNMAPPED_IOVA: u64 = 0x20_0000;
/// Where the read-only buffer is mapped (read-write in stage 1).
const READ_ONLY_IOVA: u64 = 0x10_2000;
/// The IOVA the malicious tables translate.
const EVIL_IOVA: u64 = 0x30_0000;

fn control() -> Cap<IommuControl> {
    bootinfo::IOMMU_CONTROL
}

fn own() -> Cap<PageTable> {
    bootinfo::INIT_VSPACE
}

/// The driver's device and memory, built by the first test.
struct Driver {
    edu: Edu,
    /// A second edu, if the machine has one.
    other: Option<Edu>,
    /// The unbadged original (revoking it removes the badged copy too).
    device: Cap<IoDevice>,
    queue: Cap<IoFaultQueue>,
    notification: Cap<Notification>,
    nested: Nested,
    source: Buffer,
    destination: Buffer,
    /// The MSI line `msi_signals_dma_completion` set up.
    msi: Option<Msi>,
}

/// Runs every test; returns the exit status.
pub fn run() -> i32 {
    let Some(info) = rt::boot::boot_info() else {
        rt::println!("edu: no boot-info page");
        return 1;
    };
    let mut objects = Objects::from_boot_info(info);
    let mut suite = Suite::new();
    let mut driver = None;
    suite.run("nested_dma_both_directions", || {
        let built = driver.insert(set_up(&mut objects)?);
        nested_dma_both_directions(built)
    });
    let mut with = |name: &str, test: &mut dyn FnMut(&mut Driver, &mut Objects) -> Outcome| {
        suite.run(name, || match driver.as_mut() {
            Some(d) => test(d, &mut objects),
            None => rt::fail!("the driver was not set up"),
        });
    };
    with(
        "unmapped_iova_faults_with_badge_and_address",
        &mut |d, _| unmapped_iova_faults(d),
    );
    with("deleted_notification_is_never_signalled", &mut |d, o| {
        deleted_notification_is_never_signalled(d, o)
    });
    with("device_memory_stays_out_of_io_spaces", &mut |d, o| {
        device_memory_stays_out_of_io_spaces(d, o)
    });
    with("read_only_frame_cannot_be_written", &mut |d, o| {
        read_only_frame(d, o)
    });
    with("stage1_unmap_takes_effect_at_invalidate", &mut |d, _| {
        stage1_unmap_takes_effect(d)
    });
    with("nothing_lands_after_unmap_returns", &mut |d, _| {
        revoke_during_dma(d)
    });
    with("malicious_stage1_is_blocked", &mut |d, o| {
        malicious_stage1(d, o)
    });
    with("separate_spaces_cannot_reach_each_other", &mut |d, o| {
        separate_spaces(d, o)
    });
    with("msi_signals_dma_completion", &mut |d, o| msi(d, o));
    with("msi_window_cannot_be_mapped", &mut |d, o| msi_window(d, o));
    if cfg!(target_arch = "x86_64") {
        with("msi_cannot_be_forged_by_another_device", &mut |d, o| {
            msi_cannot_be_forged(d, o)
        });
    }
    with("deleting_the_user_table_blocks_the_device", &mut |d, o| {
        deleting_the_user_table(d, o)
    });
    if control().identify().is_ok_and(|info| info.pasid_bits > 0) {
        with("pasid_attach_and_detach_through_rid_pasid", &mut |d, o| {
            pasid_through_rid_pasid(d, o)
        });
    }
    with("revoking_the_space_blocks_and_reports", &mut |d, _| {
        revoking_the_space(d)
    });
    with("deleting_the_device_blocks_it", &mut |d, o| {
        deleting_the_device(d, o)
    });
    suite.finish()
}

fn set_up(objects: &mut Objects) -> Result<Driver, Failure> {
    let [first, other] = Edu::find_all(objects, own())?;
    let Some(edu) = first else {
        rt::fail!("no edu found")
    };
    rt::println!("[edu] edu at {}, requester {:#x}", edu.bdf, edu.requester());
    let slot = objects.slot().map_err(|e| failure("slot", e))?;
    let device = control()
        .mint_device(edu.requester(), slot)
        .map_err(|e| failure("MintDevice", e))?;
    let badged = objects
        .mint(device, Rights::ALL, BADGE)
        .map_err(|e| failure("badge the device capability", e))?;
    let (queue, notification) = fault_queue(objects, badged)?;
    let mut nested = Nested::new(objects, own(), control(), 0)?;
    badged
        .attach_nested(nested.table)
        .map_err(|e| failure("AttachNested", e))?;
    let source = nested.buffer(objects, own(), MapRights::READ_WRITE)?;
    let destination = nested.buffer(objects, own(), MapRights::READ_WRITE)?;
    nested.map(SOURCE_IOVA, source.ipa, iopt::Rights::READ)?;
    nested.map(DESTINATION_IOVA, destination.ipa, iopt::Rights::READ_WRITE)?;
    Ok(Driver {
        edu,
        other,
        device,
        queue,
        notification,
        nested,
        source,
        destination,
        msi: None,
    })
}

fn nested_dma_both_directions(d: &mut Driver) -> Outcome {
    edu::checks::round_trip(
        &d.edu,
        (&d.source, SOURCE_IOVA),
        (&d.destination, DESTINATION_IOVA),
        d.queue,
    )
}

/// Takes every fault record (the IOMMU recorded them while the DMA ran;
/// Pop collects them) and checks the first against [`BADGE`] and, if
/// given, the faulting page. Never blocks: a missing record is a failure.
fn expect_fault(d: &Driver, page: Option<u64>) -> Outcome {
    edu::checks::expect_fault(d.queue, BADGE, page)
}

fn unmapped_iova_faults(d: &mut Driver) -> Outcome {
    d.edu.write_memory(UNMAPPED_IOVA, LENGTH)?;
    // The unit's fault interrupt signals the queue's notification.
    let word = d.notification.wait();
    check!(word.is_ok(), "waiting for the fault notification: {word:?}");
    expect_fault(d, Some(UNMAPPED_IOVA))
}

/// Where `deleted_notification_is_never_signalled` reads the page that
/// held the deleted notification.
const REUSED_PAGE_VA: u64 = 0x31_0000_0000;

/// A fault queue bound to a notification that is then deleted must forget
/// it: the notification's memory goes back to its Untyped and becomes a
/// Frame here, and the next IO fault must not write into it (a kernel that
/// kept the reference ORs the badge into the page, and would follow its
/// waiter list: a kernel write wherever the page says).
fn deleted_notification_is_never_signalled(d: &mut Driver, objects: &mut Objects) -> Outcome {
    let cnode = objects.cnode();
    let small: Cap<sys::Untyped> = objects
        .make_sized::<sys::Untyped>(12)
        .map_err(|e| failure("a 4 KiB Untyped", e))?;
    let slot = objects.slot().map_err(|e| failure("slot", e))?;
    let doomed: Cap<Notification> = small
        .retype(slot)
        .map_err(|e| failure("retype the notification", e))?;
    let source = objects
        .mint(d.device, Rights::ALL, BADGE)
        .map_err(|e| failure("badge the device", e))?;
    d.queue
        .bind(doomed, source)
        .map_err(|e| failure("bind the queue to the doomed notification", e))?;
    cnode
        .delete(slot)
        .map_err(|e| failure("delete the notification", e))?;
    // The Untyped has no live child now: its memory starts over.
    let frame_slot = objects.slot().map_err(|e| failure("slot", e))?;
    let frame = small
        .retype_sized::<sys::Frame>(12, frame_slot)
        .map_err(|e| failure("retype a Frame where the notification was", e))?;
    rt::space::map_frame(objects, frame, own(), REUSED_PAGE_VA, MapRights::READ)
        .map_err(|e| failure("map the reused page", e))?;
    d.edu.write_memory(UNMAPPED_IOVA, LENGTH)?;
    let recorded = d.queue.pop();
    while let Ok(Some(_)) = d.queue.pop() {}
    let written = first_nonzero_word(REUSED_PAGE_VA);
    // Put the queue back as the other tests expect it.
    d.queue
        .bind(d.notification, source)
        .map_err(|e| failure("bind the queue back", e))?;
    let _ = frame.unmap();
    let _ = cnode.delete(frame_slot);
    check!(
        matches!(recorded, Ok(Some(_))),
        "the fault was not recorded: {recorded:?}"
    );
    check!(
        written.is_none(),
        "the IO fault signalled the deleted notification: the kernel wrote {:#x} at offset {:#x} of the page that replaced it",
        written.map_or(0, |(_, v)| v),
        written.map_or(0, |(o, _)| o)
    );
    Ok(())
}

/// The first non-zero word of the page mapped at `va`: (offset, value).
#[allow(unsafe_code)]
fn first_nonzero_word(va: u64) -> Option<(u64, u64)> {
    (0..512).find_map(|i| {
        // SAFETY: a 4 KiB Frame is mapped readable at `va`; `i` < 512.
        let value = unsafe { ((va + 8 * i) as *const u64).read_volatile() };
        (value != 0).then_some((8 * i, value))
    })
}

fn device_memory_stays_out_of_io_spaces(d: &mut Driver, objects: &mut Objects) -> Outcome {
    let Some(info) = rt::boot::boot_info() else {
        rt::fail!("no boot info")
    };
    let Some(ecam) = sys::untypeds::pci_ecam(info) else {
        rt::fail!("no ECAM device Untyped")
    };
    // The ECAM Untyped's first 2 MiB went to the driver's config Frame.
    let slot = objects.slot().map_err(|e| failure("slot", e))?;
    let made = ecam.cap().retype_sized::<sys::Frame>(12, slot);
    let Ok(frame) = made else {
        rt::fail!("a device Frame: {made:?}");
    };
    let mapped = d.nested.space.map(frame, 0x7000_0000, MapRights::READ);
    check!(
        mapped == Err(sys::Error::DeviceMemory),
        "a device Frame mapped into an IoSpace: {mapped:?}"
    );
    Ok(())
}

fn read_only_frame(d: &mut Driver, objects: &mut Objects) -> Outcome {
    let read_only = d.nested.buffer(objects, own(), MapRights::READ)?;
    // The driver's stage 1 claims read-write; stage 2 says read only.
    d.nested
        .map(READ_ONLY_IOVA, read_only.ipa, iopt::Rights::READ_WRITE)?;
    read_only.fill(0x11);
    d.edu.write_memory(READ_ONLY_IOVA, LENGTH)?;
    check!(
        (0..4096).all(|i| read_only.read(i) == 0x11),
        "the device wrote a read-only frame"
    );
    expect_fault(d, Some(READ_ONLY_IOVA))?;
    // Reading it is allowed.
    d.edu.read_memory(READ_ONLY_IOVA, LENGTH)?;
    let faults = d.queue.pop();
    check!(
        faults == Ok(None),
        "reading a read-only frame faulted: {faults:?}"
    );
    Ok(())
}

/// An IOVA the stage-1 unmap test maps and unmaps (no other test uses it).
const STAGE1_UNMAP_IOVA: u64 = 0x10_8000;

/// The driver's own stage-1 unmap takes effect at its `Invalidate`: a DMA
/// through a new stage-1 page warms the IOTLB with its translation, the
/// page is unmapped in stage 1 and the change invalidated, and the same
/// DMA must then fault and land nothing (SMMUv3: the TLBI by the nest's
/// ASID and the space's VMID must reach the cached entry; VT-d: the
/// shadow's entry is cleared and flushed).
fn stage1_unmap_takes_effect(d: &mut Driver) -> Outcome {
    let iova = STAGE1_UNMAP_IOVA;
    d.source.fill(PATTERN);
    d.edu.read_memory(SOURCE_IOVA, LENGTH)?;
    d.nested
        .map(iova, d.destination.ipa, iopt::Rights::READ_WRITE)?;
    d.destination.fill(0);
    d.edu.write_memory(iova, LENGTH)?;
    check!(
        d.destination.read(0) == PATTERN,
        "the warm-up DMA through the new stage-1 page did not land"
    );
    d.destination.fill(0);
    let unmapped = d.nested.stage1.unmap(iova, 4096);
    check!(unmapped.is_ok(), "stage 1 unmap: {unmapped:?}");
    d.nested.flush()?;
    d.edu.start_write_memory(iova, LENGTH);
    d.edu.wait()?;
    check!(
        (0..4096).all(|i| d.destination.read(i) == 0),
        "a byte landed through a stage-1 page unmapped and invalidated"
    );
    expect_fault(d, Some(iova))
}

fn revoke_during_dma(d: &mut Driver) -> Outcome {
    d.source.fill(PATTERN);
    d.edu.read_memory(SOURCE_IOVA, LENGTH)?;
    // A transfer first, so the IOTLB holds the destination's translation:
    // only the unmap's invalidation can remove it.
    d.edu.write_memory(DESTINATION_IOVA, LENGTH)?;
    check!(
        d.destination.read(0) == PATTERN,
        "the warm-up DMA did not land"
    );
    d.destination.fill(0);
    // The transfer lands 100 ms (virtual) after it starts; the unmap
    // returns long before, with the invalidation complete.
    d.edu.start_write_memory(DESTINATION_IOVA, LENGTH);
    let unmapped = d.nested.space.unmap(d.destination.io);
    check!(unmapped.is_ok(), "IoSpace.Unmap: {unmapped:?}");
    d.edu.wait()?;
    check!(
        (0..4096).all(|i| d.destination.read(i) == 0),
        "a byte landed in the frame after its unmap returned"
    );
    expect_fault(d, Some(DESTINATION_IOVA))?;
    // Map it back; stage-2 unmaps drop shadow entries, so invalidate again.
    let again = d
        .nested
        .space
        .map(d.destination.io, d.destination.ipa, MapRights::READ_WRITE);
    check!(again.is_ok(), "map the destination again: {again:?}");
    let refreshed = d.nested.table.invalidate_range(0, IOVA_WINDOW);
    check!(
        refreshed.is_ok(),
        "Invalidate after the remap: {refreshed:?}"
    );
    Ok(())
}

/// Raw stage-1 tables a malicious driver writes by hand.
mod evil {
    use super::*;

    /// Where the hand-written tables are, in the driver and as IPAs
    /// (four pages per set).
    const VA: u64 = 0x38_0000_0000;
    pub const IPA: u64 = 0x4800_0000;
    const SET: u64 = 4 * 4096;

    /// One set of tables: root, level 1, level 2, level 3.
    pub struct Tables {
        va: u64,
        ipa: u64,
    }

    impl Tables {
        /// Maps four fresh frames read-write here and read-only in `space`.
        pub fn new(objects: &mut Objects, space: Cap<sys::IoSpace>) -> Result<Tables, Failure> {
            Tables::new_at(objects, space, 0)
        }

        /// As `new`, the `set`th set (sets do not overlap).
        pub fn new_at(
            objects: &mut Objects,
            space: Cap<sys::IoSpace>,
            set: u64,
        ) -> Result<Tables, Failure> {
            let (va, ipa) = (VA + set * SET, IPA + set * SET);
            for i in 0..4u64 {
                let frame: Cap<sys::Frame> = objects
                    .make_sized::<sys::Frame>(12)
                    .map_err(|e| failure("retype", e))?;
                rt::space::map_frame(objects, frame, own(), va + 4096 * i, MapRights::READ_WRITE)
                    .map_err(|e| failure("map", e))?;
                let io = objects
                    .mint(frame, Rights::ALL, 0)
                    .map_err(|e| failure("copy", e))?;
                space
                    .map(io, ipa + 4096 * i, MapRights::READ)
                    .map_err(|e| failure("IoSpace.Map", e))?;
            }
            Ok(Tables { va, ipa })
        }

        /// The root table's IPA (what BindUserTable gets).
        pub fn root_ipa(&self) -> u64 {
            self.ipa
        }

        /// Sets entry `index` of table `level` (0 = root).
        #[allow(unsafe_code)]
        pub fn set(&self, level: u64, index: u64, value: u64) {
            // SAFETY: `new_at` mapped four 4 KiB frames read-write at `va`; no
            // Rust object lives in them.
            unsafe {
                ((self.va + 4096 * level + 8 * (index & 511)) as *mut u64).write_volatile(value)
            }
        }

        /// Links root -> L1 -> L2 -> L3 for `iova` and clears the L3 entry.
        pub fn link(&self, format: iopt::Format, iova: u64) {
            for level in 0..3 {
                let shift = 39 - 9 * level;
                self.set(
                    level,
                    iova >> shift,
                    format.table_entry(self.ipa + 4096 * (level + 1)),
                );
            }
            self.set(3, iova >> 12, 0);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod arch {
    pub const FORMAT: iopt::Format = iopt::Format::VtdFirstStage;
    pub const IPA_BITS: u32 = 48;
    /// RAM the driver holds no capability for (PA = this IPA).
    pub const FOREIGN_IPA: u64 = 0x1000_0000;
    /// A 1 GiB leaf at level 1 (PS).
    pub fn block(format: iopt::Format, ipa: u64) -> u64 {
        format.page_entry(ipa, iopt::Rights::READ_WRITE) | 1 << 7
    }
}

#[cfg(target_arch = "aarch64")]
mod arch {
    pub const FORMAT: iopt::Format = iopt::Format::ArmStage1;
    pub const IPA_BITS: u32 = 44;
    /// RAM the driver holds no capability for (PA = this IPA).
    pub const FOREIGN_IPA: u64 = 0x5800_0000;
    /// A 1 GiB block at level 1 (descriptor type 0b01).
    pub fn block(format: iopt::Format, ipa: u64) -> u64 {
        format.page_entry(ipa, iopt::Rights::READ_WRITE) & !0b10
    }
}

fn malicious_stage1(d: &mut Driver, objects: &mut Objects) -> Outcome {
    let tables = evil::Tables::new(objects, d.nested.space)?;
    let slot = objects.slot().map_err(|e| failure("slot", e))?;
    let table = d
        .nested
        .space
        .bind_user_table(tables.root_ipa(), nested_format(), slot)
        .map_err(|e| failure("BindUserTable", e))?;
    let detached = d.device.detach();
    check!(detached.is_ok(), "detach: {detached:?}");
    let attached = d.device.attach_nested(table);
    check!(
        attached.is_ok(),
        "AttachNested the malicious table: {attached:?}"
    );
    let reserved = (1u64 << arch::IPA_BITS) - (2 << 20);
    let format = arch::FORMAT;
    let cases = [
        (
            "an IPA stage 2 does not map",
            format.page_entry(arch::FOREIGN_IPA, iopt::Rights::READ_WRITE),
            3,
        ),
        (
            "the kernel's reserved IPA window",
            format.page_entry(reserved, iopt::Rights::READ_WRITE),
            3,
        ),
        ("a 1 GiB block over foreign IPAs", arch::block(format, 0), 1),
    ];
    let buffers = [d.source, d.destination];
    for (what, entry, level) in cases {
        tables.link(format, EVIL_IOVA);
        tables.set(level, EVIL_IOVA >> (39 - 9 * level), entry);
        let refreshed = table.invalidate_range(EVIL_IOVA & !0x3f_ffff, 4 << 20);
        check!(refreshed.is_ok(), "{what}: Invalidate: {refreshed:?}");
        let before = buffers.map(|b| b.checksum());
        d.edu.write_memory(EVIL_IOVA, LENGTH)?;
        let after = buffers.map(|b| b.checksum());
        check!(
            before == after,
            "{what}: the DMA changed the driver's memory"
        );
        expect_fault(d, None)?;
    }
    // Back to the driver's own table.
    let detached = d.device.detach();
    check!(detached.is_ok(), "detach: {detached:?}");
    reattach_own_table(d)?;
    nested_dma_both_directions(d)
}

fn nested_format() -> sys::UserTableFormat {
    #[cfg(target_arch = "x86_64")]
    return sys::UserTableFormat::X86FirstStage4Level;
    #[cfg(target_arch = "aarch64")]
    return sys::UserTableFormat::ArmStage1Granule4k48Bit;
}

fn separate_spaces(d: &mut Driver, objects: &mut Objects) -> Outcome {
    let Some(other) = d.other.take() else {
        rt::fail!("needs a second edu (-device edu twice)")
    };
    let slot = objects.slot().map_err(|e| failure("slot", e))?;
    let device = control()
        .mint_device(other.requester(), slot)
        .map_err(|e| failure("MintDevice", e))?;
    let mut nested = Nested::new(objects, own(), control(), 1)?;
    let attached = device.attach_nested(nested.table);
    check!(attached.is_ok(), "AttachNested: {attached:?}");
    let own_buffer = nested.buffer(objects, own(), MapRights::READ_WRITE)?;
    nested.map(SOURCE_IOVA, own_buffer.ipa, iopt::Rights::READ_WRITE)?;
    // The first driver's destination IPA: not mapped in this space.
    nested.map(
        DESTINATION_IOVA,
        d.destination.ipa,
        iopt::Rights::READ_WRITE,
    )?;
    own_buffer.fill(0);
    d.destination.fill(0x22);
    other.read_memory(SOURCE_IOVA, LENGTH)?;
    other.write_memory(DESTINATION_IOVA, LENGTH)?;
    check!(
        (0..4096).all(|i| d.destination.read(i) == 0x22),
        "the second device wrote the first driver's buffer"
    );
    // Its own memory works.
    other.write_memory(SOURCE_IOVA, LENGTH)?;
    let deleted = objects.cnode().delete(device.slot());
    check!(deleted.is_ok(), "delete the second device: {deleted:?}");
    d.other = Some(other);
    Ok(())
}

/// The MSI line: x86_64 lines 16..32 are message-signalled; on aarch64
/// the GICv2m frame's SPIs (INTIDs 80..144 on `virt`).
#[cfg(target_arch = "x86_64")]
const MSI_LINE: u64 = 16;
#[cfg(target_arch = "aarch64")]
const MSI_LINE: u64 = 80;
/// The IOVA the driver's stage 1 maps to the doorbell page (aarch64).
const MSI_IOVA: u64 = 0xF0_0000;

/// What the MSI test leaves for the window test: the handler, the
/// notification its line signals with [`IRQ_BIT`], a marker copy, and the
/// address `MsiMessage` answered.
#[derive(Clone, Copy)]
struct Msi {
    handler: Cap<sys::IrqHandler>,
    notification: Cap<Notification>,
    marker: Cap<Notification>,
    address: u64,
}

impl Msi {
    /// Whether the line has fired since the last look: a marker signal
    /// makes the wait return either way.
    fn heard(&self) -> Result<bool, Failure> {
        sys::yield_now();
        self.marker.signal().map_err(|e| failure("Signal", e))?;
        let word = self.notification.wait().map_err(|e| failure("Wait", e))?;
        if word & IRQ_BIT != 0 {
            self.handler
                .ack()
                .map_err(|e| failure("IrqHandler.Ack", e))?;
        }
        Ok(word & IRQ_BIT != 0)
    }
}

/// The address the device writes for the message at `address`: x86_64 the
/// address itself (the VT-d unit takes it as an interrupt request before
/// any translation); aarch64 an IOVA the driver's stage 1 maps to the
/// doorbell page's IPA, since the device is nested.
fn device_msi_address(d: &mut Driver, address: u64) -> Result<u64, Failure> {
    let target = pci::msi::target(address, cfg!(target_arch = "aarch64").then_some(MSI_IOVA));
    if let Some((iova, doorbell)) = target.doorbell {
        d.nested.map(iova, doorbell, iopt::Rights::READ_WRITE)?;
    }
    Ok(target.written)
}

/// edu's MSI, programmed with what `IrqHandler.MsiMessage` gives, arrives
/// at the handler's notification when a DMA finishes. x86_64: the write
/// names the line's interrupt remapping entry. aarch64: the kernel mapped
/// the GICv2m doorbell into the IoSpace at its reserved IPA and the
/// driver's stage 1 maps [`MSI_IOVA`] there; with `seed=no-msi-doorbell`
/// the write faults in stage 2 and the test fails.
fn msi(d: &mut Driver, objects: &mut Objects) -> Outcome {
    let control: Cap<sys::IrqControl> = bootinfo::IRQ_CONTROL;
    let slot = objects.slot().map_err(|e| failure("slot", e))?;
    let handler = control
        .get(MSI_LINE, slot)
        .map_err(|e| failure("IrqControl.Get of an MSI line", e))?;
    let notification: Cap<Notification> = objects
        .make::<Notification>()
        .map_err(|e| failure("retype a notification", e))?;
    let irq_copy = badged(objects, notification, IRQ_BIT)?;
    let marker = badged(objects, notification, MARKER_BIT)?;
    handler
        .set_notification(irq_copy)
        .map_err(|e| failure("IrqHandler.SetNotification", e))?;
    let (address, data) = handler
        .msi_message(d.device)
        .map_err(|e| failure("IrqHandler.MsiMessage", e))?;
    rt::println!("[edu] MSI line {MSI_LINE}: address {address:#x}, data {data:#x}");
    let msi = Msi {
        handler,
        notification,
        marker,
        address,
    };
    let written = device_msi_address(d, address)?;
    d.edu.enable_msi(written, data)?;
    while let Ok(Some(_)) = d.queue.pop() {}
    d.destination.fill(0);
    d.edu.start_write_memory_raising(DESTINATION_IOVA, LENGTH);
    // The DMA takes 100 ms of virtual time; edu raises its MSI as it ends.
    d.edu.wait()?;
    let heard = msi.heard()?;
    let fault = d.queue.pop();
    check!(
        heard,
        "the DMA-completion MSI did not arrive (fault queue: {fault:?})"
    );
    check!(
        (0..LENGTH).all(|i| d.destination.read(i) == PATTERN),
        "the DMA the MSI announced did not land"
    );
    let status = d.edu.acknowledge_interrupt();
    check!(
        status & 0x100 != 0,
        "edu's interrupt status {status:#x} has no DMA bit"
    );
    d.msi = Some(msi);
    let not_msi = control.get(
        NOT_MSI_LINE,
        objects.slot().map_err(|e| failure("slot", e))?,
    );
    if let Ok(line) = not_msi {
        let message = line.msi_message(d.device);
        check!(
            message == Err(sys::Error::InvalidArgument),
            "MsiMessage of a wired line ({NOT_MSI_LINE}): {message:?}"
        );
    }
    Ok(())
}

/// A line that is not message-signalled: an I/O APIC line (x86_64), an
/// SPI below GICv2m's (aarch64).
#[cfg(target_arch = "x86_64")]
const NOT_MSI_LINE: u64 = 3;
#[cfg(target_arch = "aarch64")]
const NOT_MSI_LINE: u64 = 40;

/// The MSI window belongs to the kernel: `IoSpace.Map` of a Frame over
/// the page `MsiMessage` answered (x86_64: the interrupt address range,
/// aarch64: the doorbell IPA) and `BindUserTable` with its root there are
/// refused with `MsiWindow`; `IoSpace.Unmap` names a Frame, and no Frame
/// capability names the doorbell, so nothing can unmap it. After the
/// attempts edu's MSI still arrives. With `seed=msi-window-open` the
/// refusals are not `MsiWindow` and the test fails.
fn msi_window(d: &mut Driver, objects: &mut Objects) -> Outcome {
    let Some(msi) = d.msi else {
        rt::fail!("needs the MSI of msi_signals_dma_completion")
    };
    let page = msi.address & !0xfff;
    let frame: Cap<sys::Frame> = objects
        .make_sized::<sys::Frame>(12)
        .map_err(|e| failure("retype a frame", e))?;
    let mapped = d.nested.space.map(frame, page, MapRights::READ_WRITE);
    check!(
        mapped == Err(sys::Error::MsiWindow),
        "IoSpace.Map of a Frame at the MSI window page {page:#x}: {mapped:?}"
    );
    let slot = objects.slot().map_err(|e| failure("slot", e))?;
    let bound = d.nested.space.bind_user_table(page, nested_format(), slot);
    check!(
        bound.as_ref().err() == Some(&sys::Error::MsiWindow),
        "BindUserTable rooted at the MSI window page {page:#x}: {bound:?}"
    );
    let unmapped = d.nested.space.unmap(frame);
    check!(
        unmapped == Err(sys::Error::NotMapped),
        "IoSpace.Unmap of the refused Frame: {unmapped:?}"
    );
    // The window still delivers.
    d.edu.raise_interrupt(1);
    d.edu.acknowledge_interrupt();
    check!(
        msi.heard()?,
        "edu's MSI no longer arrives after the attempts"
    );
    Ok(())
}

/// The MSI line the forging test binds to the first edu.
const VICTIM_LINE: u64 = MSI_LINE + 1;
/// The badge its notification is signalled with, and the test's own marker.
const IRQ_BIT: u64 = 1;
const MARKER_BIT: u64 = 2;
/// Interrupt remapping fault reasons (VT-d 7.1.3): not present, bad source id.
const IR_NOT_PRESENT: u64 = 0x22;
const IR_SOURCE_ID: u64 = 0x26;

/// x86_64 interrupt remapping. The second edu is given an MSI line; the
/// first edu's driver (this test, which can program the first edu's MSI
/// capability) copies the very message `MsiMessage` returned into the
/// first edu and raises its interrupt: the IOMMU refuses it (wrong source
/// id, reported in the first edu's fault queue) and the handler hears
/// nothing, while the second edu's own MSI arrives. Once the second edu's
/// IoDevice is deleted, or the handler, its MSI is refused too (the
/// line's remapping entry is gone). With `seed=no-intremap` the copied message is an interrupt like
/// any other and the test fails.
///
/// Not tested here: a device's plain DMA write to 0xFEEx_xxxx. QEMU 10.0.2
/// gives DMA writes no requester id, so its remapping cannot check their
/// source, and it passes compatibility-format requests whatever GSTS.CFIS
/// says; the VT-d model in `kernel/iommu` refuses both as the
/// specification does (`tests/vtd_intremap.rs`).
fn msi_cannot_be_forged(d: &mut Driver, objects: &mut Objects) -> Outcome {
    let Some(owner) = d.other.take() else {
        rt::fail!("needs a second edu (-device edu twice)")
    };
    // The line's owner: the second edu.
    let owner_device = control()
        .mint_device(
            owner.requester(),
            objects.slot().map_err(|e| failure("slot", e))?,
        )
        .map_err(|e| failure("MintDevice", e))?;
    let control_irq: Cap<sys::IrqControl> = bootinfo::IRQ_CONTROL;
    let handler = control_irq
        .get(VICTIM_LINE, objects.slot().map_err(|e| failure("slot", e))?)
        .map_err(|e| failure("IrqControl.Get", e))?;
    let notification: Cap<Notification> = objects
        .make::<Notification>()
        .map_err(|e| failure("retype a notification", e))?;
    let irq_copy = badged(objects, notification, IRQ_BIT)?;
    let marker = badged(objects, notification, MARKER_BIT)?;
    handler
        .set_notification(irq_copy)
        .map_err(|e| failure("IrqHandler.SetNotification", e))?;
    let (address, data) = handler
        .msi_message(owner_device)
        .map_err(|e| failure("IrqHandler.MsiMessage", e))?;
    rt::println!(
        "[edu] MSI line {VICTIM_LINE} for the edu at {}: address {address:#x}, data {data:#x}",
        owner.bdf
    );
    owner.enable_msi(address, data)?;
    // What the line has heard: the marker makes the wait return either way.
    let heard = || -> Result<u64, Failure> {
        sys::yield_now();
        marker.signal().map_err(|e| failure("Signal", e))?;
        notification.wait().map_err(|e| failure("Wait", e))
    };

    // The forgery: the first edu sends the owner's message.
    while let Ok(Some(_)) = d.queue.pop() {}
    d.edu.enable_msi(address, data)?;
    d.edu.raise_interrupt(1);
    d.edu.acknowledge_interrupt();
    let word = heard()?;
    check!(
        word & IRQ_BIT == 0,
        "the first edu raised the second edu's MSI line (notification word {word:#x})"
    );
    let record = d.queue.pop();
    check!(
        matches!(record, Ok(Some(ref r)) if r.reason == IR_SOURCE_ID),
        "the forger's fault queue: {record:?}, not an invalid-source-id record ({IR_SOURCE_ID:#x})"
    );
    while let Ok(Some(_)) = d.queue.pop() {}

    // The owner's own MSI arrives.
    owner.raise_interrupt(1);
    owner.acknowledge_interrupt();
    let word = heard()?;
    check!(
        word & IRQ_BIT != 0,
        "the owner's MSI did not arrive (notification word {word:#x})"
    );
    check!(handler.ack().is_ok(), "IrqHandler.Ack");

    // Deleting the owner's IoDevice takes the line's entry away.
    let deleted = objects.cnode().delete(owner_device.slot());
    check!(deleted.is_ok(), "delete the owner's device: {deleted:?}");
    owner.raise_interrupt(1);
    owner.acknowledge_interrupt();
    let word = heard()?;
    check!(
        word & IRQ_BIT == 0,
        "the owner's MSI still arrives after its IoDevice was deleted (notification word {word:#x})"
    );

    // Bound again, to a new IoDevice: heard again, until the handler goes.
    let owner_device = control()
        .mint_device(
            owner.requester(),
            objects.slot().map_err(|e| failure("slot", e))?,
        )
        .map_err(|e| failure("MintDevice", e))?;
    let (owner_queue, _) = fault_queue(objects, owner_device)?;
    let again = handler.msi_message(owner_device);
    check!(
        again == Ok((address, data)),
        "MsiMessage for the new device: {again:?}"
    );
    owner.raise_interrupt(1);
    owner.acknowledge_interrupt();
    let word = heard()?;
    check!(
        word & IRQ_BIT != 0,
        "the owner's MSI did not arrive once bound again (notification word {word:#x})"
    );
    let deleted = objects.cnode().delete(handler.slot());
    check!(deleted.is_ok(), "delete the handler: {deleted:?}");
    owner.raise_interrupt(1);
    owner.acknowledge_interrupt();
    let record = owner_queue.pop();
    check!(
        matches!(record, Ok(Some(ref r)) if r.reason == IR_NOT_PRESENT),
        "after the handler's deletion the owner's MSI gave {record:?}, not an entry-not-present record ({IR_NOT_PRESENT:#x})"
    );
    let deleted = objects.cnode().delete(owner_device.slot());
    check!(deleted.is_ok(), "delete the owner's device: {deleted:?}");
    Ok(())
}

/// A copy of `notification` that signals with `badge`.
fn badged(
    objects: &mut Objects,
    notification: Cap<Notification>,
    badge: u64,
) -> Result<Cap<Notification>, Failure> {
    objects
        .mint(notification, Rights::ALL, badge)
        .map_err(|e| failure("badge a notification", e))
}

/// Attaches the (detached) device to the driver's own table again and
/// rebuilds what the hardware sees of it.
fn reattach_own_table(d: &Driver) -> Outcome {
    check!(
        d.device.attach_nested(d.nested.table).is_ok(),
        "AttachNested"
    );
    let refreshed = d.nested.table.invalidate_range(0, IOVA_WINDOW);
    check!(refreshed.is_ok(), "Invalidate: {refreshed:?}");
    Ok(())
}

/// DMA to the destination page through `iova`; whether it landed.
fn lands(d: &Driver, iova: u64) -> Result<bool, Failure> {
    d.destination.fill(0);
    d.edu.write_memory(iova, LENGTH)?;
    let landed = (0..LENGTH).all(|i| d.destination.read(i) == PATTERN);
    while let Ok(Some(_)) = d.queue.pop() {}
    Ok(landed)
}

fn deleting_the_user_table(d: &mut Driver, objects: &mut Objects) -> Outcome {
    // A second table in the same space, the device attached to it.
    let tables = evil::Tables::new_at(objects, d.nested.space, 1)?;
    tables.link(arch::FORMAT, DESTINATION_IOVA);
    tables.set(
        3,
        DESTINATION_IOVA >> 12,
        arch::FORMAT.page_entry(d.destination.ipa, iopt::Rights::READ_WRITE),
    );
    let slot = objects.slot().map_err(|e| failure("slot", e))?;
    let table = d
        .nested
        .space
        .bind_user_table(tables.root_ipa(), nested_format(), slot)
        .map_err(|e| failure("BindUserTable", e))?;
    check!(d.device.detach().is_ok(), "detach");
    check!(d.device.attach_nested(table).is_ok(), "AttachNested");
    let refreshed = table.invalidate_range(DESTINATION_IOVA, 4096);
    check!(refreshed.is_ok(), "Invalidate: {refreshed:?}");
    check!(lands(d, DESTINATION_IOVA)?, "DMA through the second table");
    let deleted = objects.cnode().delete(table.slot());
    check!(deleted.is_ok(), "delete the IoUserTable: {deleted:?}");
    check!(
        !lands(d, DESTINATION_IOVA)?,
        "DMA landed after the IoUserTable was deleted"
    );
    let detach = d.device.detach();
    check!(
        detach == Err(sys::Error::NotAttached),
        "the device is still attached: {detach:?}"
    );
    // Back to the driver's own table.
    reattach_own_table(d)?;
    Ok(())
}

/// VT-d with PASIDs: requests without a PASID use the RID_PASID entry
/// (PASID 0), so attaching and detaching IoPasid 0 is visible to edu
/// (QEMU has no PASID-tagged DMA).
fn pasid_through_rid_pasid(d: &mut Driver, objects: &mut Objects) -> Outcome {
    let space = objects
        .make_io_space(control())
        .map_err(|e| failure("retype an IoSpace", e))?;
    let frame = objects
        .mint(d.destination.io, Rights::ALL, 0)
        .map_err(|e| failure("copy", e))?;
    check!(
        space
            .map(frame, DESTINATION_IOVA, MapRights::READ_WRITE)
            .is_ok(),
        "IoSpace.Map"
    );
    check!(d.device.detach().is_ok(), "detach");
    check!(d.device.attach(space).is_ok(), "Attach");
    check!(lands(d, DESTINATION_IOVA)?, "DMA through the device entry");
    let slot = objects.slot().map_err(|e| failure("slot", e))?;
    let pasid = d
        .device
        .mint_pasid(0, slot)
        .map_err(|e| failure("MintPasid 0", e))?;
    check!(pasid.attach(space).is_ok(), "IoPasid.Attach");
    check!(lands(d, DESTINATION_IOVA)?, "DMA with PASID 0 attached");
    check!(pasid.detach().is_ok(), "IoPasid.Detach");
    check!(
        !lands(d, DESTINATION_IOVA)?,
        "DMA landed after the RID_PASID entry was detached"
    );
    check!(pasid.attach(space).is_ok(), "IoPasid.Attach again");
    check!(
        lands(d, DESTINATION_IOVA)?,
        "DMA after attaching PASID 0 again"
    );
    let cnode = objects.cnode();
    check!(cnode.delete(pasid.slot()).is_ok(), "delete the IoPasid");
    check!(d.device.detach().is_ok(), "detach");
    check!(cnode.delete(space.slot()).is_ok(), "delete the IoSpace");
    reattach_own_table(d)?;
    Ok(())
}

fn revoking_the_space(d: &mut Driver) -> Outcome {
    d.destination.fill(0);
    let cnode = bootinfo::INIT_CNODE;
    let deleted = cnode.revoke(d.nested.space.slot());
    check!(deleted.is_ok(), "revoke the IoSpace: {deleted:?}");
    let deleted = cnode.delete(d.nested.space.slot());
    check!(deleted.is_ok(), "delete the IoSpace: {deleted:?}");
    d.edu.write_memory(DESTINATION_IOVA, LENGTH)?;
    check!(
        (0..4096).all(|i| d.destination.read(i) == 0),
        "DMA landed after the IoSpace was revoked"
    );
    expect_fault(d, None)?;
    let detach = d.device.detach();
    check!(
        detach == Err(sys::Error::NotAttached),
        "the device is still attached: {detach:?}"
    );
    Ok(())
}

fn deleting_the_device(d: &mut Driver, objects: &mut Objects) -> Outcome {
    // Attach it directly to a fresh IoSpace that maps the destination.
    let space = objects
        .make_io_space(control())
        .map_err(|e| failure("retype an IoSpace", e))?;
    let frame = objects
        .mint(d.destination.io, Rights::ALL, 0)
        .map_err(|e| failure("copy", e))?;
    let mapped = space.map(frame, DESTINATION_IOVA, MapRights::READ_WRITE);
    check!(mapped.is_ok(), "IoSpace.Map: {mapped:?}");
    let attached = d.device.attach(space);
    check!(attached.is_ok(), "Attach: {attached:?}");
    d.destination.fill(0);
    d.edu.write_memory(DESTINATION_IOVA, LENGTH)?;
    check!(
        d.destination.read(0) == PATTERN,
        "stage-2-only DMA did not land ({:#x})",
        d.destination.read(0)
    );
    let cnode = objects.cnode();
    check!(cnode.revoke(d.device.slot()).is_ok(), "revoke the device");
    check!(cnode.delete(d.device.slot()).is_ok(), "delete the device");
    d.destination.fill(0);
    d.edu.write_memory(DESTINATION_IOVA, LENGTH)?;
    check!(
        (0..4096).all(|i| d.destination.read(i) == 0),
        "DMA landed after the IoDevice was deleted"
    );
    Ok(())
}
