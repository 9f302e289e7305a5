//! Architecture-neutral boot: memory map, command line, platform discovery.

use crate::boot_types::{BootInfo, Discovered, Platform};
#[cfg(target_arch = "aarch64")]
use crate::boot_types::{MemoryKind, MemoryRegion};

fn fail(what: core::fmt::Arguments<'_>) -> ! {
    crate::println!("[boot] cannot continue: {what}");
    crate::exit(crate::EXIT_BOOT_FAILED)
}

#[cfg(target_arch = "x86_64")]
fn discover(info: &mut BootInfo) -> Discovered {
    let Platform::Acpi { rsdp } = info.platform;
    // The firmware crate walks RSDP -> RSDT/XSDT and checks every table;
    // the kernel lends it the direct map to read them through.
    let tables = firmware::acpi::discover(&crate::mem::phys_bytes, rsdp)
        .unwrap_or_else(|e| fail(format_args!("ACPI: {e}")));
    let ecam = tables.mcfg.and_then(firmware::acpi::ecam_from_mcfg);
    if let Some(ecam) = ecam {
        crate::println!(
            "[acpi] MCFG: PCI segment 0 ECAM at {:#x}, buses {}..={}",
            ecam.base,
            ecam.first_bus,
            ecam.last_bus
        );
    }
    if let Some(dmar) = tables.dmar {
        crate::println!("[acpi] DMAR: {} bytes", dmar.len());
    }
    Discovered {
        dmar: tables.dmar,
        ecam: ecam.map(|e| e.base),
        ecam_size: ecam.map_or(0, |e| e.size()),
        // Firmware (SeaBIOS, which runs before the PVH entry) assigns the
        // BARs; the PCI hole is found from the memory map (`devmem`).
        mmio32: None,
        mmio64: None,
    }
}

#[cfg(target_arch = "aarch64")]
fn discover(info: &mut BootInfo) -> Discovered {
    let Platform::DeviceTree { dtb } = info.platform;
    let mut ram = |range: firmware::devicetree::MemoryRange| {
        info.add_memory(MemoryRegion {
            start: range.start,
            size: range.size,
            kind: MemoryKind::Ram,
        })
    };
    let tree = firmware::devicetree::discover(&crate::mem::phys_bytes, dtb, &mut ram)
        .unwrap_or_else(|e| fail(format_args!("device tree at {dtb:#x}: {e}")));
    info.cmdline = tree.bootargs;
    info.initrd = tree.initrd;
    if let Some((base, size)) = tree.smmu {
        crate::println!("[fdt] SMMUv3 at {base:#x} ({} KiB)", size / 1024);
    }
    if let Some(pcie) = tree.pcie {
        crate::println!(
            "[fdt] PCIe ECAM at {:#x} ({} MiB)",
            pcie.ecam_base,
            pcie.ecam_size >> 20
        );
    }
    Discovered {
        smmu: tree.smmu,
        ecam: tree.pcie.map(|p| p.ecam_base),
        ecam_size: tree.pcie.map_or(0, |p| p.ecam_size),
        mmio32: tree.pcie.and_then(|p| p.mmio32),
        mmio64: tree.pcie.and_then(|p| p.mmio64),
    }
}

crate::arch::entry!(&UPCALLS, start);

/// What `arch` may call above it, lent at entry.
static UPCALLS: crate::arch::Upcalls = crate::arch::Upcalls {
    phys_bytes: crate::mem::phys_bytes,
    unexpected_trap,
};

/// After the architecture's entry: boot, or say why the boot loader's
/// information cannot be used.
fn start(info: Result<BootInfo, &'static str>) -> ! {
    match info {
        Ok(info) => main(info),
        Err(what) => {
            crate::println!("[boot] bad boot information: {what}");
            crate::exit(crate::EXIT_BOOT_FAILED)
        }
    }
}

/// An unexpected CPU exception: `arch`'s one-line report, then exit.
fn unexpected_trap(report: core::fmt::Arguments<'_>) -> ! {
    crate::println!("{report}");
    crate::exit(crate::EXIT_UNEXPECTED_TRAP)
}

/// The architecture-neutral boot path.
pub fn main(mut info: BootInfo) -> ! {
    crate::println!(
        "Portcullis {} ({})",
        env!("CARGO_PKG_VERSION"),
        crate::arch::NAME
    );
    let found = discover(&mut info);
    crate::println!("[boot] command line: \"{}\"", info.cmdline);
    crate::println!("[boot] memory map ({} entries):", info.memory.len());
    for region in &info.memory {
        crate::println!("[boot]   {region}");
    }
    if info.memory_dropped > 0 {
        crate::println!("[boot]   ... {} more entries not kept", info.memory_dropped);
    }
    // Every BAR on bus 0 gets an address before anything uses a device, and
    // the windows left to devices become the root task's device Untypeds.
    crate::devmem::init(&found, &info.memory);
    let cmdline = firmware::cmdline::Cmdline::new(info.cmdline);
    // A boot module the loader did not announce (the aarch64 virt machine
    // loads none for an ELF kernel; the runner uses QEMU's generic loader
    // and says where): `module=ADDRESS,LENGTH`.
    if info.initrd.is_none() {
        info.initrd = cmdline.module();
    }
    if let Some((start, len)) = info.initrd {
        crate::println!("[boot] boot module at {start:#x}, {len} bytes");
    }
    let reserved: heapless::Vec<(u64, u64), 1> = info.initrd.into_iter().collect();
    let Some(mut frames) = crate::frames::BootFrames::new(&info.memory, &reserved) else {
        fail(format_args!("no free RAM above the kernel image"));
    };
    // A kernel built with `seeded-bugs` plants the seeded bugs `seed=`
    // names (the test suite's deliberately broken kernels); any other
    // kernel has none, and `planted` is false.
    #[cfg(feature = "seeded-bugs")]
    crate::testing::seeds::plant(&cmdline);
    // Seed `iommu-off` leaves the IOMMU untouched: the DMA tests must fail.
    if !crate::testing::seeds::planted(crate::testing::seeds::Seed::IommuOff) {
        if let Err(why) = crate::iommu_unit::init(&found, &mut frames) {
            fail(format_args!("IOMMU: {why}"));
        }
        // The IOMMU table pool, for the tables IoSpaces need later.
        crate::io_space::reserve_pool(&mut frames);
        crate::io_space::enable_page_requests(&mut frames);
    }
    // Test kernels run the self-test, cross-check or benchmarks the command
    // line asks for instead of a boot module; the release kernel has none
    // (`testing/`).
    crate::testing::run_requested(&cmdline, &found, &mut frames);
    if let Some((start, len)) = info.initrd {
        let status = run_boot_module(start, len, &mut frames);
        crate::exit(crate::testing::root_task_status(&cmdline, status));
    }
    crate::exit(crate::EXIT_SUCCESS)
}

/// Where the root task's stack ends (it grows down from here).
const ROOT_STACK_TOP: u64 = 0x7FFF_F000;
/// The root task's priority (threads it creates start at 0).
const ROOT_PRIORITY: u8 = 100;
/// Root-task stack size: 256 KiB, nothing mapped below it, so an overflow
/// faults. init keeps its system description and request server on its
/// stack (`init::run`'s frame alone is 44 KiB on x86_64); the 64 KiB this
/// used to be overflowed once the release profile went to one codegen unit
/// with fat LTO, which inlines more into that frame.
const ROOT_STACK_PAGES: u64 = 64;

/// Runs the boot module as the first user program until it halts; returns
/// its status.
fn run_boot_module(start: u64, len: u64, frames: &mut crate::frames::BootFrames) -> u32 {
    use crate::arch;
    use crate::syscall;
    let Some(image) = crate::mem::phys_bytes(start, len as usize) else {
        crate::println!("[boot] the boot module at {start:#x} is outside the direct map");
        return crate::EXIT_BOOT_FAILED;
    };
    // A packed system image (`cargo xtask run --image`) brings its root
    // task, init, as an entry; any other module is the root task's ELF.
    let (program, packed) = match crate::loader::classify(image) {
        Ok(crate::loader::BootModule::Program(program)) => (program, false),
        Ok(crate::loader::BootModule::Image { root_task }) if start.is_multiple_of(4096) => {
            crate::println!("[boot] the boot module is a system image: starting its init");
            (root_task, true)
        }
        Ok(crate::loader::BootModule::Image { .. }) => {
            let e = crate::loader::ImageError::Unaligned(start);
            crate::println!("[boot] cannot use the system image: {e}");
            return crate::EXIT_BOOT_FAILED;
        }
        Err(e) => {
            crate::println!("[boot] cannot use the system image: {e}");
            return crate::EXIT_BOOT_FAILED;
        }
    };
    let Some(root) = frames.alloc() else {
        return crate::EXIT_BOOT_FAILED;
    };
    crate::vspace::init_root(root);
    let entry = match crate::loader::load(program, root, frames) {
        Ok(entry) => entry,
        Err(e) => {
            crate::println!("[boot] cannot load the root task: {e}");
            return crate::EXIT_BOOT_FAILED;
        }
    };
    if packed && let Err(e) = crate::loader::map_image(root, start, len, frames) {
        crate::println!("[boot] cannot map the system image into init: {e}");
        return crate::EXIT_BOOT_FAILED;
    }
    for page in 1..=ROOT_STACK_PAGES {
        let mapped = frames.alloc().map(|frame| {
            let rights = crate::vspace::Rights {
                write: true,
                execute: false,
            };
            crate::vspace::map_page(
                root,
                ROOT_STACK_TOP - page * 4096,
                frame,
                rights,
                &mut || frames.alloc(),
            )
        });
        if !matches!(mapped, Some(Ok(()))) {
            crate::println!("[boot] cannot map the root task's stack");
            return crate::EXIT_BOOT_FAILED;
        }
    }
    let task = match crate::objects::init(frames, root) {
        Ok(task) => task,
        Err(why) => {
            crate::println!("[boot] cannot build the root task's capabilities: {why}");
            return crate::EXIT_BOOT_FAILED;
        }
    };
    if packed {
        if let Err(e) = crate::loader::record_image(task.vspace, len) {
            crate::println!("[boot] cannot tell init where the image is: {e}");
            return crate::EXIT_BOOT_FAILED;
        }
        crate::println!(
            "[boot] system image of {len} bytes mapped read-only at {:#x}",
            abi::bootinfo::IMAGE_ADDRESS
        );
    }
    crate::println!("[boot] starting the root task at {entry:#x}");
    arch::set_address_space(root);
    let (tcb_object, tcb) = task.tcb;
    let context = arch::UserContext::new_user(entry, ROOT_STACK_TOP);
    // The one owner of every thread's state (`mem`'s obligation 3), claimed
    // here and lent by the scheduler to each system call.
    let Some(mut threads) = crate::sched::Threads::claim() else {
        crate::println!("[boot] the threads' owner was claimed before");
        return crate::EXIT_BOOT_FAILED;
    };
    if let Err(e) = crate::sched::start_root_thread(
        &mut threads,
        (tcb_object, tcb),
        task.vspace,
        (crate::objects::ROOT_CNODE_SLOT.0, task.ipc_buffer),
        context,
        ROOT_PRIORITY,
    ) {
        crate::println!("[boot] cannot start the root task: {e}");
        return crate::EXIT_BOOT_FAILED;
    }
    let stop = crate::sched::run(threads, tcb, |threads, thread| {
        // A thread runs only configured (`sched`), so this always finds both;
        // a thread without them would get no service at all.
        let Some((cspace, ipc_buffer)) = crate::objects::thread_context(threads.tcb(thread)) else {
            crate::sched::fail(threads, thread, abi::Error::NotConfigured);
            return syscall::Next::Resume;
        };
        syscall::handle_thread(
            threads,
            &syscall::Caller {
                thread,
                cspace,
                ipc_buffer,
            },
        )
    });
    match stop {
        crate::sched::Stop::Halt(status) => {
            crate::println!("[boot] halted with status {status}");
            status
        }
        crate::sched::Stop::Deadlock => {
            crate::println!("[boot] no thread can run: every thread is blocked or stopped");
            crate::EXIT_TESTS_FAILED
        }
        crate::sched::Stop::RootFault => crate::EXIT_TESTS_FAILED,
    }
}
