//! `devmem`: device memory from user space, as a user-level driver reaches
//! its device. Runs as the root task on a machine with QEMU's `edu` device.
//!
//! - The boot info lists device Untypeds for the PCI ECAM window and the
//!   BAR windows, apart from every RAM Untyped.
//! - A device Untyped becomes Frames and Untypeds only: a TCB, CNode,
//!   Endpoint or PageTable from it is `DeviceMemory`.
//! - A Frame of the ECAM window, mapped, is bus 0's configuration space:
//!   `drivers/pci` finds edu (1234:11e8) and decodes its BAR 0, which boot
//!   placed inside a device Untyped.
//! - A Frame of that BAR, mapped, reaches edu's registers: identification
//!   (0x010000ed), liveness (reads back the complement) and factorial
//!   (5! = 120, polled with a bounded wait).
//! - A device Frame cannot be mapped executable, nor be a thread's IPC
//!   buffer (`DeviceMemory`): the kernel never touches device memory for a
//!   thread. Nor does it go into an IoSpace (`DeviceMemory`: no
//!   peer-to-peer DMA).
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use pci::{Bar, Function, command};
use rt::check;
use rt::space::Objects;
use rt::testing::{Failure, Outcome, Suite};
use sys::bootinfo::{self, BootInfo, device_kind};
use sys::untypeds::{self, InitialUntyped};
use sys::{
    CNode, Cap, Endpoint, Error, Frame, MapRights, Notification, ObjectType, PageTable, Retype,
    Tcb, Untyped,
};

rt::entry!(main);

/// Where bus 0 and 1 of the ECAM window are mapped (one 2 MiB Frame).
const ECAM_ADDRESS: u64 = 0x20_0000_0000;
/// The bytes of the window that mapping covers.
const ECAM_MAPPED: u64 = 1 << 21;
/// Where edu's BAR 0 page is mapped.
const BAR_ADDRESS: u64 = 0x20_0040_0000;
/// Where a device Frame is offered for an executable mapping.
const EXEC_ADDRESS: u64 = 0x20_0040_1000;
/// QEMU's edu device.
const EDU: (u16, u16) = (0x1234, 0x11e8);

/// edu's registers (QEMU docs/specs/edu.rst).
mod edu {
    /// Identification: 0xRRrr00edu, major 1 minor 0.
    pub const IDENTIFICATION: u64 = 0x00;
    /// What it reads back is the complement of what was written.
    pub const LIVENESS: u64 = 0x04;
    /// Write n, read n! once the computation is done.
    pub const FACTORIAL: u64 = 0x08;
    /// Bit 0: the factorial unit is busy.
    pub const STATUS: u64 = 0x20;
    /// What the identification register holds on QEMU 10.
    pub const ID_VALUE: u32 = 0x0100_00ed;
}

/// Volatile 32-bit accesses to device Frames this program mapped.
#[allow(unsafe_code)]
mod mmio {
    /// Reads the register at `address`.
    ///
    /// `address` must be 4-byte aligned inside a device Frame mapped
    /// readable at that address (the callers use only the constant windows
    /// above, mapped before any access).
    pub fn read32(address: u64) -> u32 {
        // SAFETY: per the contract above the address is mapped device
        // memory; a volatile read neither aliases Rust objects nor is
        // elided.
        unsafe { (address as *const u32).read_volatile() }
    }

    /// Writes the register at `address` (as for [`read32`], mapped writable).
    pub fn write32(address: u64, value: u32) {
        // SAFETY: as for `read32`; the page is a device Frame, not memory
        // any Rust object lives in.
        unsafe { (address as *mut u32).write_volatile(value) }
    }
}

/// Bus 0's configuration space through the mapped ECAM Frame; accesses
/// beyond the mapping read as an absent function and are not written.
struct MappedEcam;

impl pci::ConfigAccess for MappedEcam {
    fn read32(&mut self, offset: u64) -> u32 {
        if offset >= ECAM_MAPPED {
            return u32::MAX;
        }
        mmio::read32(ECAM_ADDRESS + (offset & !3))
    }

    fn write32(&mut self, offset: u64, value: u32) {
        if offset < ECAM_MAPPED {
            mmio::write32(ECAM_ADDRESS + (offset & !3), value)
        }
    }
}

/// The boot-info page (the kernel maps one for every root task).
fn boot_info() -> Result<&'static BootInfo, Failure> {
    match rt::boot::boot_info() {
        Some(info) => Ok(info),
        None => rt::fail!("no boot-info page at {:#x}", bootinfo::BOOT_INFO_ADDRESS),
    }
}

/// Maps `frame` at `address` of our own address space (PageTables from RAM).
fn map(
    objects: &mut Objects,
    frame: Cap<Frame>,
    address: u64,
    rights: MapRights,
) -> Result<(), Error> {
    let own: Cap<PageTable> = bootinfo::INIT_VSPACE;
    rt::space::map_frame(objects, frame, own, address, rights)
}

fn main(_startup: &rt::Startup) -> i32 {
    let Some(info) = rt::boot::boot_info() else {
        rt::println!("[devmem] no boot-info page");
        return 1;
    };
    let mut objects = Objects::from_boot_info(info);
    let mut suite = Suite::new();
    suite.run(
        "device_untypeds_are_listed_apart_from_ram",
        device_untypeds_are_listed,
    );
    suite.run("device_memory_becomes_frames_only", || {
        device_memory_becomes_frames_only(&mut objects)
    });
    let mut bar = None;
    suite.run("edu_config_space_through_ecam", || {
        bar = Some(edu_config_space_through_ecam(&mut objects)?);
        Ok(())
    });
    suite.run("edu_registers_through_bar0", || {
        let Some(bar) = bar else {
            rt::fail!("no BAR 0 address from the previous test")
        };
        edu_registers_through_bar0(&mut objects, bar)
    });
    suite.run("device_frames_are_never_executable", || {
        device_frames_are_never_executable(&mut objects)
    });
    suite.run("device_frames_stay_out_of_io_spaces", || {
        device_frames_stay_out_of_io_spaces(&mut objects)
    });
    suite.run("device_frames_are_not_ipc_buffers", || {
        device_frames_are_not_ipc_buffers(&mut objects)
    });
    suite.finish()
}

fn ecam() -> Result<InitialUntyped, Failure> {
    match untypeds::pci_ecam(boot_info()?) {
        Some(ecam) => Ok(ecam),
        None => rt::fail!("no device Untyped of kind PCI_ECAM in the boot info"),
    }
}

fn device_untypeds_are_listed() -> Outcome {
    let info = boot_info()?;
    let all = || untypeds::initial_untypeds(info);
    let ecam = ecam()?;
    check!(
        ecam.size() >= 1 << 21,
        "the ECAM Untyped at {:#x} is only {:#x} bytes",
        ecam.start(),
        ecam.size()
    );
    let windows = all()
        .filter(|u| u.is_device() && u.descriptor.device_kind == device_kind::PCI_MEMORY)
        .count();
    check!(windows > 0, "no device Untyped of kind PCI_MEMORY");
    for device in all().filter(InitialUntyped::is_device) {
        for ram in all().filter(|u| !u.is_device()) {
            let overlap = device.start() < ram.start() + ram.size()
                && ram.start() < device.start() + device.size();
            check!(
                !overlap,
                "device Untyped {:#x}+{:#x} overlaps RAM Untyped {:#x}+{:#x}",
                device.start(),
                device.size(),
                ram.start(),
                ram.size()
            );
        }
    }
    Ok(())
}

fn device_memory_becomes_frames_only(objects: &mut Objects) -> Outcome {
    let ecam = ecam()?.cap();
    for (kind, got) in [
        try_retype::<Tcb>(objects, ecam, 0),
        try_retype::<CNode>(objects, ecam, 4),
        try_retype::<Endpoint>(objects, ecam, 0),
        try_retype::<Notification>(objects, ecam, 0),
        try_retype::<PageTable>(objects, ecam, 12),
    ] {
        check!(
            got == Err(Error::DeviceMemory),
            "{kind:?} from the ECAM device Untyped: {got:?}"
        );
    }
    Ok(())
}

/// One object of kind `T` retyped from `untyped` into a free slot: the
/// kind asked for and what the kernel answered.
fn try_retype<T: Retype>(
    objects: &mut Objects,
    untyped: Cap<Untyped>,
    size_bits: u8,
) -> (ObjectType, Result<(), Error>) {
    let made = objects
        .slot()
        .and_then(|slot| untyped.retype_sized::<T>(size_bits, slot));
    (T::OBJECT_TYPE, made.map(|_| ()))
}

/// Finds edu on bus 0 through a mapped ECAM Frame; returns BAR 0's address.
fn edu_config_space_through_ecam(objects: &mut Objects) -> Result<u64, Failure> {
    let ecam = ecam()?;
    let frame = untypeds::retype_frame_at(ecam, ecam.start(), 21, &mut || objects.slot());
    let Ok(frame) = frame else {
        rt::fail!(
            "a 2 MiB Frame at the ECAM base {:#x}: {frame:?}",
            ecam.start()
        )
    };
    let mapped = map(objects, frame, ECAM_ADDRESS, MapRights::READ_WRITE);
    check!(mapped.is_ok(), "map the ECAM Frame: {mapped:?}");
    let mut access = MappedEcam;
    let Some(bdf) = pci::find(&mut access, 0, EDU.0, EDU.1) else {
        rt::fail!("no {:04x}:{:04x} on bus 0", EDU.0, EDU.1)
    };
    let mut edu = match Function::open(&mut access, bdf) {
        Ok(f) => f,
        Err(e) => rt::fail!("{e}"),
    };
    let bar = match edu.bar(0) {
        Ok(Bar::Memory { address, .. }) => address,
        other => rt::fail!("edu at {bdf}: BAR 0 is {other:?}, not memory"),
    };
    check!(bar != 0, "edu at {bdf}: BAR 0 is unassigned");
    check!(
        edu.command() & command::MEMORY_SPACE != 0,
        "edu at {bdf}: memory decoding is off (command {:#x})",
        edu.command()
    );
    rt::println!("[devmem] edu at {bdf}, BAR 0 at {bar:#x}");
    Ok(bar)
}

fn edu_registers_through_bar0(objects: &mut Objects, bar: u64) -> Outcome {
    let Some(window) = untypeds::device_untyped_covering(boot_info()?, bar, 4096) else {
        rt::fail!("no device Untyped covers BAR 0 at {bar:#x}")
    };
    let frame = untypeds::retype_frame_at(window, bar & !0xFFF, 12, &mut || objects.slot());
    let Ok(frame) = frame else {
        rt::fail!(
            "a Frame at BAR 0 ({bar:#x}) from the Untyped at {:#x}: {frame:?}",
            window.start()
        )
    };
    let mapped = map(objects, frame, BAR_ADDRESS, MapRights::READ_WRITE);
    check!(mapped.is_ok(), "map the BAR 0 Frame: {mapped:?}");
    let registers = BAR_ADDRESS + (bar & 0xFFF);
    let id = mmio::read32(registers + edu::IDENTIFICATION);
    check!(
        id == edu::ID_VALUE,
        "identification reads {id:#x}, not {:#x}",
        edu::ID_VALUE
    );
    for value in [0x1234_5678u32, 0, u32::MAX] {
        mmio::write32(registers + edu::LIVENESS, value);
        let back = mmio::read32(registers + edu::LIVENESS);
        check!(back == !value, "liveness: wrote {value:#x}, read {back:#x}");
    }
    mmio::write32(registers + edu::FACTORIAL, 5);
    let mut polls = 0u32;
    while mmio::read32(registers + edu::STATUS) & 1 != 0 {
        polls += 1;
        check!(
            polls < 100_000,
            "the factorial unit stays busy after {polls} polls"
        );
        sys::yield_now();
    }
    let result = mmio::read32(registers + edu::FACTORIAL);
    check!(result == 120, "5! reads {result}");
    Ok(())
}

/// The next 4 KiB page of the ECAM Untyped (after the 2 MiB Frame) as a Frame.
fn device_page(objects: &mut Objects) -> Result<Cap<Frame>, Failure> {
    let ecam = ecam()?;
    let slot = match objects.slot() {
        Ok(slot) => slot,
        Err(e) => rt::fail!("no free slot: {e:?}"),
    };
    let made = ecam.cap().retype_sized::<Frame>(12, slot);
    match made {
        Ok(frame) => Ok(frame),
        Err(_) => rt::fail!("a 4 KiB Frame from the ECAM Untyped: {made:?}"),
    }
}

fn device_frames_are_not_ipc_buffers(objects: &mut Objects) -> Outcome {
    let frame = device_page(objects)?;
    let tcb: Cap<Tcb> = match objects.make::<Tcb>() {
        Ok(tcb) => tcb,
        Err(e) => rt::fail!("a TCB from RAM: {e:?}"),
    };
    let configured = tcb.configure(
        None,
        bootinfo::INIT_CNODE,
        bootinfo::INIT_VSPACE,
        frame,
        abi::ipc::IPC_BUFFER_ADDRESS,
    );
    check!(
        configured == Err(Error::DeviceMemory),
        "a device Frame as IPC buffer: {configured:?}"
    );
    Ok(())
}

fn device_frames_stay_out_of_io_spaces(objects: &mut Objects) -> Outcome {
    let frame = device_page(objects)?;
    let space = match objects.make_io_space(bootinfo::IOMMU_CONTROL) {
        Ok(space) => space,
        Err(e) => rt::fail!("an IoSpace: {e:?}"),
    };
    let mapped = space.map(frame, 0x10_0000, MapRights::READ_WRITE);
    check!(
        mapped == Err(Error::DeviceMemory),
        "IoSpace.Map of a device Frame: {mapped:?}"
    );
    let unmapped = space.unmap(frame);
    check!(
        unmapped == Err(Error::NotMapped),
        "IoSpace.Unmap of the refused Frame: {unmapped:?}"
    );
    Ok(())
}

fn device_frames_are_never_executable(objects: &mut Objects) -> Outcome {
    let frame = device_page(objects)?;
    let exec = map(objects, frame, EXEC_ADDRESS, MapRights::READ_EXECUTE);
    check!(
        exec == Err(Error::DeviceMemory),
        "mapping a device Frame executable: {exec:?}"
    );
    let read = map(objects, frame, EXEC_ADDRESS, MapRights::READ);
    check!(read.is_ok(), "the same Frame read-only: {read:?}");
    check!(frame.unmap().is_ok(), "unmap");
    Ok(())
}
