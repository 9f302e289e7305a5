//! Boot self-tests (`tests=boot` on the command line, and `tests=trap`): what the kernel decodes
//! of the IOMMU matches the machine, and DMA is blocked until a capability
//! allows it.

use crate::arch::{self, Exit, UserContext};
use crate::boot_types::Discovered;
use crate::frames::BootFrames;
use crate::iommu_unit::UNIT;
use crate::pci::Ecam;
use crate::testing::dma_page::DmaPage;
use crate::testing::edu::Edu;
use crate::testing::selftest::{Outcome, Suite};
use crate::vspace::{self, Rights};
use crate::{check, fail};
use firmware::cmdline::Cmdline;

static TARGET: DmaPage = DmaPage::new();

/// Runs the boot tests and returns the exit status.
pub fn run(cmdline: &Cmdline<'_>, found: &Discovered, frames: &mut BootFrames) -> u32 {
    let mut suite = Suite::default();
    suite.run("user_mode_syscall_and_fault", || {
        user_mode_syscall_and_fault(frames)
    });
    suite.run("timer_preempts_spinning_user", || {
        timer_preempts_spinning_user(frames)
    });
    suite.run("iommu_facts_match_machine", || {
        iommu_facts_match_machine(cmdline)
    });
    suite.run("dma_blocked_by_default", || dma_blocked_by_default(found));
    suite.run("dma_fault_raises_the_fault_interrupt", || {
        dma_fault_raises_the_fault_interrupt(found)
    });
    suite.finish()
}

/// `tests=trap`: a deliberate kernel bug. The exception report and the
/// failure exit status are what the runner checks.
pub fn trap() -> ! {
    crate::println!("[boot] touching an unmapped kernel address on purpose (tests=trap)");
    let value = crate::arch::read_unmapped_kernel_address();
    crate::println!("[boot] the read returned {value:#x}: no exception");
    crate::exit(crate::EXIT_SUCCESS)
}

/// Compares the IOMMU's identification registers and named capability bits
/// with the `vtd.*` / `smmu.*` facts the runner put on the command line
/// (measured values of the configured QEMU machine).
fn iommu_facts_match_machine(cmdline: &Cmdline<'_>) -> Outcome {
    let guard = UNIT.lock();
    let Some(unit) = guard.as_ref() else {
        fail!("no IOMMU unit was brought up")
    };
    let mut checked = 0;
    for word in cmdline.words() {
        let Some((key, expected)) = word.split_once('=') else {
            continue;
        };
        if !(key.starts_with("vtd.") || key.starts_with("smmu.")) {
            continue;
        }
        let Some(Ok(expected)) = cmdline.get_u64(key) else {
            fail!("fact {key}={expected} is not a number")
        };
        let actual = match unit.id_registers().iter().find(|(name, _)| *name == key) {
            Some(&(_, value)) => value,
            None => match unit.feature(key) {
                Some(bit) => u64::from(bit),
                None => fail!("unknown fact {key} for this IOMMU"),
            },
        };
        check!(
            actual == expected,
            "{key} reads {actual:#x}, the machine should give {expected:#x}"
        );
        checked += 1;
    }
    check!(
        checked > 0,
        "the command line names no vtd.* or smmu.* facts to check"
    );
    crate::println!("    {checked} facts checked");
    Ok(())
}

/// Programs the edu device to DMA into a RAM page and checks that the page
/// is unchanged and that the IOMMU recorded a fault naming the device and
/// the page: no capability allows DMA yet, so every DMA must be refused.
/// The edu device, ready for DMA.
fn edu(found: &Discovered) -> Result<Edu, crate::testing::selftest::Failure> {
    let Some(ecam) = found.ecam else {
        fail!("no PCI ECAM window found")
    };
    match Edu::probe(&Ecam::new(ecam)) {
        Ok(edu) => Ok(edu),
        Err(e) => fail!("{e}"),
    }
}

fn dma_blocked_by_default(found: &Discovered) -> Outcome {
    let edu = edu(found)?;
    let mut guard = UNIT.lock();
    let stale = guard
        .as_mut()
        .map(|unit| unit.drain_faults().len())
        .unwrap_or(0);
    check!(stale == 0, "{stale} faults were recorded before the test");
    TARGET.fill(0x5A);
    let before = TARGET.checksum();
    if let Err(e) = edu.dma_to_memory(TARGET.phys(), 64) {
        fail!("{e}");
    }
    check!(
        TARGET.checksum() == before,
        "the page at {:#x} changed: DMA was not blocked",
        TARGET.phys()
    );
    let Some(unit) = guard.as_mut() else {
        fail!("no IOMMU unit was brought up")
    };
    let requester = edu.bdf.requester_id();
    let faults = unit.drain_faults();
    // A fault names the page, unless it is a configuration fault (SMMU
    // C_BAD_STE: the device has no valid stream-table entry), which names
    // only the device.
    let recorded = faults.iter().any(|f| {
        f.requester == requester
            && f.address
                .is_none_or(|address| address & !0xFFF == TARGET.phys())
    });
    if !recorded {
        for fault in &faults {
            crate::println!(
                "    recorded: requester {:#06x} address {:x?} reason {:#x}",
                fault.requester,
                fault.address,
                fault.reason
            );
        }
        fail!(
            "no fault recorded for edu ({}, requester {requester:#06x}) at {:#x}",
            edu.bdf,
            TARGET.phys()
        );
    }
    Ok(())
}

/// Enters user mode with a small probe program and checks that system calls
/// carry arguments and results across the boundary and that a user page
/// fault comes back to the kernel with the faulting address.
fn user_mode_syscall_and_fault(frames: &mut BootFrames) -> Outcome {
    const STACK: u64 = 0x80_0000;
    let root = match vspace::space_with_program(arch::user_probe_program(), frames) {
        Ok(root) => root,
        Err(e) => fail!("building the probe's address space: {e:?}"),
    };
    let Some(stack) = frames.alloc() else {
        fail!("out of boot frames")
    };
    let stack_rights = Rights {
        write: true,
        execute: false,
    };
    if let Err(e) = vspace::map_page(root, STACK, stack, stack_rights, &mut || frames.alloc()) {
        fail!("mapping the probe's stack: {e:?}");
    }
    arch::set_address_space(root);
    let mut context = UserContext::new_user(vspace::PROGRAM_ADDRESS, STACK + 4096);

    let exit = arch::run_user(&mut context);
    check!(
        exit == Exit::Syscall,
        "first exit is {exit:?}, expected a system call"
    );
    check!(
        context.syscall_number() == 42 && context.syscall_arg(0) == 0x1234,
        "first call carried ({}, {:#x}), expected (42, 0x1234)",
        context.syscall_number(),
        context.syscall_arg(0)
    );
    context.set_syscall_result(0, 0x5000);
    let exit = arch::run_user(&mut context);
    check!(
        exit == Exit::Syscall,
        "second exit is {exit:?}, expected a system call"
    );
    check!(
        context.syscall_number() == 43 && context.syscall_arg(0) == 0x5001,
        "second call carried ({}, {:#x}), expected (43, 0x5001)",
        context.syscall_number(),
        context.syscall_arg(0)
    );
    let exit = arch::run_user(&mut context);
    match exit {
        Exit::Exception {
            address: 0x777_7000,
            ..
        } => Ok(()),
        other => fail!("third exit is {other:?}, expected a page fault at 0x7777000"),
    }
}

/// Runs a user thread that spins forever with the preemption timer armed and
/// checks that the timer interrupt takes the CPU back.
fn timer_preempts_spinning_user(frames: &mut BootFrames) -> Outcome {
    let root = match vspace::space_with_program(arch::SPIN_PROGRAM, frames) {
        Ok(root) => root,
        Err(e) => fail!("building the spinner's address space: {e:?}"),
    };
    arch::set_address_space(root);
    let mut context = UserContext::new_user(vspace::PROGRAM_ADDRESS, 0);
    for round in 0..3 {
        arch::timer_start(100_000);
        let exit = arch::run_user(&mut context);
        // Acknowledge before silencing the source: the Arm timer's line is
        // level-sensitive, and stopping it first withdraws the interrupt.
        let id = match exit {
            Exit::Interrupt(vector) => arch::acknowledge_interrupt(vector),
            _ => None,
        };
        arch::timer_stop();
        let Exit::Interrupt(_) = exit else {
            fail!("round {round}: exit is {exit:?}, expected the timer interrupt")
        };
        let Some(id) = id else {
            fail!("round {round}: no interrupt pending at the controller")
        };
        arch::end_interrupt(id);
        check!(
            id == arch::TIMER_IRQ,
            "round {round}: interrupt {id}, expected the timer ({})",
            arch::TIMER_IRQ
        );
    }
    Ok(())
}

/// Turns on the IOMMU's fault interrupt (VT-d fault event MSI, SMMUv3
/// event-queue SPI), makes the edu device fault, and checks the interrupt
/// arrived at the interrupt controller. Runs last: the x86 vector stays
/// requested until a user thread runs with interrupts on.
fn dma_fault_raises_the_fault_interrupt(found: &Discovered) -> Outcome {
    let edu = edu(found)?;
    let mut guard = UNIT.lock();
    let Some(unit) = guard.as_mut() else {
        fail!("no IOMMU unit was brought up")
    };
    unit.drain_faults();
    let irq = arch::IOMMU_FAULT_IRQ;
    check!(
        !arch::interrupt_pending(irq),
        "interrupt {irq} is pending before any fault"
    );
    if let Err(why) = unit.enable_fault_interrupt() {
        fail!("{why}");
    }
    if let Err(e) = edu.dma_to_memory(TARGET.phys(), 64) {
        fail!("{e}");
    }
    let faults = unit.drain_faults();
    check!(!faults.is_empty(), "the DMA recorded no fault");
    check!(
        arch::interrupt_pending(irq),
        "{} faults recorded but interrupt {irq} never arrived",
        faults.len()
    );
    #[cfg(target_arch = "aarch64")]
    arch::clear_interrupt(irq);
    Ok(())
}
