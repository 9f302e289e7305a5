//! Architecture-neutral boot: memory map, command line, platform discovery.

use crate::boot_types::{BootInfo, Discovered, Platform};
#[cfg(target_arch = "aarch64")]
use crate::boot_types::{MemoryKind, MemoryRegion};
use ktext::Text;

fn fail(what: &dyn Text) -> ! {
    crate::say!("[boot] cannot continue: {}", what);
    crate::exit(crate::EXIT_BOOT_FAILED)
}

#[cfg(target_arch = "x86_64")]
fn discover(info: &mut BootInfo) -> Discovered {
    let Platform::Acpi { rsdp } = info.platform;
    // The firmware crate walks RSDP -> RSDT/XSDT and checks every table;
    // the kernel lends it the direct map to read them through.
    let tables = firmware::acpi::discover(&crate::mem::phys_bytes, rsdp)
        .unwrap_or_else(|e| fail(&ktext::text!("ACPI: {}", e)));
    let ecam = tables.mcfg.and_then(firmware::acpi::ecam_from_mcfg);
    if let Some(ecam) = ecam {
        crate::say!(
            "[acpi] MCFG: PCI segment 0 ECAM at {:#x}, buses {}..={}",
            ecam.base,
            ecam.first_bus,
            ecam.last_bus
        );
    }
    if let Some(dmar) = tables.dmar {
        crate::say!("[acpi] DMAR: {} bytes", dmar.len());
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
        .unwrap_or_else(|e| fail(&ktext::text!("device tree at {:#x}: {}", dtb, e)));
    info.cmdline = tree.bootargs;
    info.initrd = tree.initrd;
    if let Some((base, size)) = tree.smmu {
        crate::say!("[fdt] SMMUv3 at {:#x} ({} KiB)", base, size / 1024);
    }
    if let Some(pcie) = tree.pcie {
        crate::say!(
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
            crate::say!("[boot] bad boot information: {}", what);
            crate::exit(crate::EXIT_BOOT_FAILED)
        }
    }
}

/// An unexpected CPU exception: `arch`'s one-line report, then exit.
fn unexpected_trap(report: &dyn Text) -> ! {
    crate::say!("{}", report);
    crate::exit(crate::EXIT_UNEXPECTED_TRAP)
}

/// The architecture-neutral boot path.
pub fn main(mut info: BootInfo) -> ! {
    // A test kernel reports the kernel stack's high-water mark when the
    // session ends and fails it if the stack overflowed (`arch::stack`).
    #[cfg(feature = "test-kernel")]
    crate::arch::stack::paint();
    crate::say!(
        "Portcullis {} ({})",
        env!("CARGO_PKG_VERSION"),
        crate::arch::NAME
    );
    let found = discover(&mut info);
    crate::say!("[boot] command line: \"{}\"", info.cmdline);
    crate::say!("[boot] memory map ({} entries):", info.memory.len());
    for region in &info.memory {
        crate::say!("[boot]   {}", region);
    }
    if info.memory_dropped > 0 {
        crate::say!("[boot]   ... {} more entries not kept", info.memory_dropped);
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
        crate::say!("[boot] boot module at {:#x}, {} bytes", start, len);
    }
    // Pushed, not `collect()`ed: heapless's `from_iter` `expect`s, and an
    // `expect` keeps `core::fmt`'s `&str` printer (README, "Size").
    let mut reserved: heapless::Vec<(u64, u64), 1> = heapless::Vec::new();
    if let Some(module) = info.initrd {
        let _ = reserved.push(module);
    }
    let Some(mut frames) = crate::frames::BootFrames::new(&info.memory, &reserved) else {
        fail(&ktext::text!("no free RAM above the kernel image"));
    };
    // A kernel built with `seeded-bugs` plants the seeded bugs `seed=`
    // names (the test suite's deliberately broken kernels); any other
    // kernel has none, and `planted` is false.
    #[cfg(feature = "seeded-bugs")]
    crate::testing::seeds::plant(&cmdline);
    // Seed `iommu-off` leaves the IOMMU untouched: the DMA tests must fail.
    if !crate::testing::seeds::planted(crate::testing::seeds::Seed::IommuOff) {
        if let Err(why) = crate::iommu_unit::init(&found, &mut frames) {
            fail(&ktext::text!("IOMMU: {}", why));
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
        crate::say!(
            "[boot] the boot module at {:#x} is outside the direct map",
            start
        );
        return crate::EXIT_BOOT_FAILED;
    };
    // A packed system image (`cargo xtask run --image`) brings its root
    // task, init, as an entry; any other module is the root task's ELF.
    let (program, packed) = match crate::loader::classify(image) {
        Ok(crate::loader::BootModule::Program(program)) => (program, false),
        Ok(crate::loader::BootModule::Image { root_task }) if start.is_multiple_of(4096) => {
            crate::say!("[boot] the boot module is a system image: starting its init");
            (root_task, true)
        }
        Ok(crate::loader::BootModule::Image { .. }) => {
            let e = crate::loader::ImageError::Unaligned(start);
            crate::say!("[boot] cannot use the system image: {}", e);
            return crate::EXIT_BOOT_FAILED;
        }
        Err(e) => {
            crate::say!("[boot] cannot use the system image: {}", e);
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
            crate::say!("[boot] cannot load the root task: {}", e);
            return crate::EXIT_BOOT_FAILED;
        }
    };
    if packed && let Err(e) = crate::loader::map_image(root, start, len, frames) {
        crate::say!("[boot] cannot map the system image into init: {}", e);
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
            crate::say!("[boot] cannot map the root task's stack");
            return crate::EXIT_BOOT_FAILED;
        }
    }
    let task = match crate::objects::init(frames, root) {
        Ok(task) => task,
        Err(why) => {
            crate::say!("[boot] cannot build the root task's capabilities: {}", why);
            return crate::EXIT_BOOT_FAILED;
        }
    };
    if packed {
        if let Err(e) = crate::loader::record_image(task.vspace, len) {
            crate::say!("[boot] cannot tell init where the image is: {}", e);
            return crate::EXIT_BOOT_FAILED;
        }
        crate::say!(
            "[boot] system image of {} bytes mapped read-only at {:#x}",
            len,
            abi::bootinfo::IMAGE_ADDRESS
        );
    }
    crate::say!("[boot] starting the root task at {:#x}", entry);
    arch::set_address_space(root);
    let (tcb_object, tcb) = task.tcb;
    let context = arch::UserContext::new_user(entry, ROOT_STACK_TOP);
    // The one owner of every thread's state (`mem`'s obligation 3), claimed
    // here and lent by the scheduler to each system call.
    let Some(mut threads) = crate::sched::Threads::claim() else {
        crate::say!("[boot] the threads' owner was claimed before");
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
        crate::say!("[boot] cannot start the root task: {}", e);
        return crate::EXIT_BOOT_FAILED;
    }
    crate::sched::lend_above(crate::sched::Above {
        transfer_capability: crate::objects::transfer_capability,
        deliver_faults: crate::io_space::deliver_faults,
        requests_pending: crate::io_space::requests_pending,
        expire_requests: crate::io_space::expire_requests,
        faults_awaited: crate::io_space::faults_awaited,
    });
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
            crate::say!("[boot] halted with status {}", status);
            status
        }
        crate::sched::Stop::Deadlock => {
            crate::say!("[boot] no thread can run: every thread is blocked or stopped");
            crate::EXIT_TESTS_FAILED
        }
        crate::sched::Stop::RootFault => crate::EXIT_TESTS_FAILED,
    }
}
