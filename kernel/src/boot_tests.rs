//! Boot self-tests (`tests=boot` on the command line): what the kernel decodes
//! of the IOMMU matches the machine, and DMA is blocked until a capability
//! allows it.

use crate::arch::{self, Exit, UserContext};
use crate::boot::{BootInfo, Discovered};
use crate::frames::BootFrames;
use crate::vspace::{self, Rights};
use crate::cmdline::Cmdline;
use crate::dma_page::DmaPage;
use crate::edu::Edu;
use crate::pci::Ecam;
use crate::selftest::{Outcome, Suite};
use crate::{check, fail};

static TARGET: DmaPage = DmaPage::new();

/// Runs the boot tests and returns the exit status.
pub fn run(_cmdline: &Cmdline<'_>, info: &BootInfo, found: &Discovered) -> u32 {
    let mut suite = Suite::default();
    let Some(mut frames) = BootFrames::new(&info.memory) else {
        crate::println!("[test] no free RAM above the kernel for test frames");
        return crate::EXIT_BOOT_FAILED;
    };
    suite.run("user_mode_syscall_and_fault", || user_mode_syscall_and_fault(&mut frames));
    suite.run("edu_dma_reaches_memory", || edu_dma_reaches_memory(found));
    suite.finish()
}

fn edu_dma_reaches_memory(found: &Discovered) -> Outcome {
    let Some(ecam) = found.ecam else { fail!("no PCI ECAM window found") };
    let edu = match Edu::probe(&Ecam::new(ecam), found.mmio32) {
        Ok(edu) => edu,
        Err(e) => fail!("{e}"),
    };
    TARGET.fill(0x11);
    if let Err(e) = edu.dma_from_memory(TARGET.phys(), 64) {
        fail!("{e}");
    }
    TARGET.fill(0x5A);
    if let Err(e) = edu.dma_to_memory(TARGET.phys(), 64) {
        fail!("{e}");
    }
    check!(TARGET.read(0) == 0x11, "byte 0 is {:#x}, expected 0x11 copied back by the device", TARGET.read(0));
    Ok(())
}

/// Enters user mode with a small probe program and checks that system calls
/// carry arguments and results across the boundary and that a user page
/// fault comes back to the kernel with the faulting address.
fn user_mode_syscall_and_fault(frames: &mut BootFrames) -> Outcome {
    const CODE: u64 = 0x40_0000;
    const STACK: u64 = 0x80_0000;
    let program = arch::user_probe_program();
    let (Some(root), Some(code), Some(stack)) = (frames.alloc(), frames.alloc(), frames.alloc()) else {
        fail!("out of boot frames");
    };
    check!(program.len() <= 4096, "probe program is {} bytes", program.len());
    // SAFETY: `code` is a fresh frame in the direct map, the program fits.
    unsafe { core::ptr::copy_nonoverlapping(program.as_ptr(), crate::mem::phys_to_virt(code) as *mut u8, program.len()) };
    vspace::init_root(root);
    let mut alloc = || frames.alloc();
    let mapped = vspace::map_page(root, CODE, code, Rights { write: false, execute: true }, &mut alloc)
        .and_then(|()| vspace::map_page(root, STACK, stack, Rights { write: true, execute: false }, &mut alloc));
    if let Err(e) = mapped {
        fail!("mapping the probe: {e:?}");
    }
    arch::set_address_space(root);
    let mut context = UserContext::new_user(CODE, STACK + 4096);

    let exit = arch::run_user(&mut context);
    check!(exit == Exit::Syscall, "first exit is {exit:?}, expected a system call");
    check!(
        context.syscall_number() == 42 && context.syscall_arg(0) == 0x1234,
        "first call carried ({}, {:#x}), expected (42, 0x1234)",
        context.syscall_number(),
        context.syscall_arg(0)
    );
    context.set_syscall_result(0, 0x5000);
    let exit = arch::run_user(&mut context);
    check!(exit == Exit::Syscall, "second exit is {exit:?}, expected a system call");
    check!(
        context.syscall_number() == 43 && context.syscall_arg(0) == 0x5001,
        "second call carried ({}, {:#x}), expected (43, 0x5001)",
        context.syscall_number(),
        context.syscall_arg(0)
    );
    let exit = arch::run_user(&mut context);
    match exit {
        Exit::Exception { address: 0x777_7000, .. } => Ok(()),
        other => fail!("third exit is {other:?}, expected a page fault at 0x7777000"),
    }
}
