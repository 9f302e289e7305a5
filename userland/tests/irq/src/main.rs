//! `irq`: an interrupt line owned by a user-level handler. Runs as the root
//! task. The line is the PIT (ISA IRQ 0, via the I/O APIC) on x86_64 and the
//! EL1 physical timer (PPI 30, programmed from EL0) on aarch64.
//!
//! - Delivery: `IrqControl.Get` + `IrqHandler.SetNotification`; each
//!   interrupt signals the notification and masks the line until `Ack`.
//! - One handler per line: a second `Get` for the same line is `DeviceInUse`.
//! - Lines the kernel keeps (its timer, the IOMMU's fault interrupt) and
//!   lines beyond the controller are `OutOfScope`.
//! - Deleting the handler masks and frees the line: it can be had again.
//! - aarch64 (enough SPIs to fill them): once the kernel's line records are
//!   full, `Get` answers `ObjectTableFull` and changes nothing: the slot
//!   stays empty and the line free, so it can be had once a record is.
//!
//! While the root task waits, no thread is ready: the kernel's idle loop
//! must take the interrupts.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use rt::check;
use rt::testing::{Failure, Outcome, Suite};
use sys::bootinfo::{self, BootInfo};
use sys::{CNode, Cap, Error, IrqControl, IrqHandler, Notification, Slot, Untyped};

rt::entry!(main);

#[allow(unsafe_code)]
fn boot_info() -> &'static BootInfo {
    // SAFETY: the kernel maps a BootInfo read-only at BOOT_INFO_ADDRESS for
    // the root task's whole life.
    unsafe { &*(bootinfo::BOOT_INFO_ADDRESS as *const BootInfo) }
}

fn cnode() -> Cap<CNode> {
    bootinfo::INIT_CNODE
}

fn irq_control() -> Cap<IrqControl> {
    bootinfo::IRQ_CONTROL
}

/// Hands out free slots of the root CNode, in order.
struct Slots(u32);

impl Slots {
    fn take(&mut self) -> Slot {
        self.0 += 1;
        Slot::new(self.0 - 1)
    }
}

/// The largest RAM Untyped.
fn untyped() -> Cap<Untyped> {
    let info = boot_info();
    sys::untypeds::largest_ram_untyped(info).map_or(bootinfo::ARENA, |u| u.cap())
}

fn make<T: sys::FixedSize>(slots: &mut Slots) -> Result<Cap<T>, Error> {
    untyped().retype(slots.take())
}

/// The line this test owns, and lines it must not get.
#[cfg(target_arch = "x86_64")]
mod line {
    /// ISA IRQ 0: the PIT, 100 Hz.
    pub const DEVICE: u64 = 0;
    /// Line 7 arrives on the IOMMU fault vector (40); 15 is past the lines.
    pub const RESERVED: [u64; 3] = [7, 15, 5000];

    /// The PIT runs by itself.
    pub fn arm() {}
}

#[cfg(target_arch = "aarch64")]
mod line {
    /// PPI 30: the EL1 physical timer, which EL0 may program.
    pub const DEVICE: u64 = 30;
    /// 27: the kernel's preemption timer; 106: the SMMU's event interrupt;
    /// 5000: beyond the interrupt controller.
    pub const RESERVED: [u64; 3] = [27, 106, 5000];

    /// Fires the physical timer once, ~1 ms from now (this also clears its
    /// level-triggered condition).
    #[allow(unsafe_code)]
    pub fn arm() {
        // SAFETY: the kernel lets EL0 program the physical timer
        // (CNTKCTL_EL1.EL0PTEN); only timer registers are written.
        unsafe {
            core::arch::asm!(
                "msr cntp_tval_el0, {t}",
                "msr cntp_ctl_el0, {one}",
                "isb",
                t = in(reg) 62_500u64,
                one = in(reg) 1u64,
                options(nostack)
            );
        }
    }
}

fn main(_startup: &rt::Startup) -> i32 {
    let mut slots = Slots(boot_info().first_free_slot as u32);
    let mut suite = Suite::new();
    let mut handler = None;
    suite.run("interrupts_reach_the_handler", || {
        handler = Some(interrupts_reach_the_handler(&mut slots)?);
        Ok(())
    });
    suite.run("one_handler_per_line", || one_handler_per_line(&mut slots));
    suite.run("kernel_lines_are_out_of_scope", || {
        kernel_lines_are_out_of_scope(&mut slots)
    });
    suite.run("deleting_the_handler_frees_the_line", || {
        deleting_the_handler_frees_the_line(&mut slots, handler)
    });
    #[cfg(target_arch = "aarch64")]
    suite.run("full_line_records_refuse_and_change_nothing", || {
        full_line_records_refuse_and_change_nothing(&mut slots)
    });
    suite.finish()
}

/// Takes `count` interrupts through `handler` into `notification`.
fn take_interrupts(
    handler: Cap<IrqHandler>,
    notification: Cap<Notification>,
    count: u32,
) -> Outcome {
    line::arm();
    for i in 0..count {
        let word = notification.wait();
        check!(
            word.is_ok_and(|w| w != 0),
            "interrupt {i}: wait gave {word:?}"
        );
        line::arm();
        let ack = handler.ack();
        check!(ack.is_ok(), "interrupt {i}: ack: {ack:?}");
    }
    Ok(())
}

fn interrupts_reach_the_handler(slots: &mut Slots) -> Result<Cap<IrqHandler>, Failure> {
    let failure = |what: &str, e: Error| Failure(rt::__format!("{what}: {e:?}"));
    let notification: Cap<Notification> =
        make::<Notification>(slots).map_err(|e| failure("retype notification", e))?;
    let handler = irq_control()
        .get(line::DEVICE, slots.take())
        .map_err(|e| failure("IrqControl.Get", e))?;
    handler
        .set_notification(notification)
        .map_err(|e| failure("SetNotification", e))?;
    take_interrupts(handler, notification, 10)?;
    Ok(handler)
}

fn one_handler_per_line(slots: &mut Slots) -> Outcome {
    let again = irq_control().get(line::DEVICE, slots.take());
    check!(
        again.err() == Some(Error::DeviceInUse),
        "a second handler for the line: {:?}",
        again.map(|c| c.slot())
    );
    Ok(())
}

fn kernel_lines_are_out_of_scope(slots: &mut Slots) -> Outcome {
    for reserved in line::RESERVED {
        let got = irq_control().get(reserved, slots.take());
        check!(
            got.err() == Some(Error::OutOfScope),
            "line {reserved}: {:?}",
            got.map(|c| c.slot())
        );
    }
    Ok(())
}

fn deleting_the_handler_frees_the_line(
    slots: &mut Slots,
    handler: Option<Cap<IrqHandler>>,
) -> Outcome {
    let Some(handler) = handler else {
        rt::fail!("no handler from the first test")
    };
    let deleted = cnode().delete(handler.slot());
    check!(deleted.is_ok(), "delete the handler: {deleted:?}");
    let ack = handler.ack();
    check!(ack.is_err(), "ack through a deleted handler: {ack:?}");
    let notification: Cap<Notification> = match make::<Notification>(slots) {
        Ok(n) => n,
        Err(e) => rt::fail!("retype notification: {e:?}"),
    };
    let again = irq_control().get(line::DEVICE, slots.take());
    let Ok(again) = again else {
        rt::fail!("the freed line cannot be had again: {again:?}")
    };
    check!(
        again.set_notification(notification).is_ok(),
        "set notification"
    );
    take_interrupts(again, notification, 3)
}

/// Takes handlers for SPIs until the kernel's line records are full: the
/// next `Get` answers `ObjectTableFull` and leaves its slot empty and its
/// line free (decode refuses before the model issues the handler), so after
/// one handler is deleted the same line goes into the same slot.
#[cfg(target_arch = "aarch64")]
fn full_line_records_refuse_and_change_nothing(slots: &mut Slots) -> Outcome {
    let mut held: [Option<Cap<IrqHandler>>; 40] = [None; 40];
    let mut count = 0;
    let mut refused = None;
    for spi in 32..300u64 {
        let slot = slots.take();
        match irq_control().get(spi, slot) {
            Ok(handler) if count < held.len() => {
                held[count] = Some(handler);
                count += 1;
            }
            Ok(_) => rt::fail!("{count} handlers and line {spi} still granted"),
            Err(Error::ObjectTableFull) => {
                refused = Some((spi, slot));
                break;
            }
            // The kernel's own lines and lines already owned.
            Err(Error::OutOfScope | Error::DeviceInUse) => {}
            Err(e) => rt::fail!("IrqControl.Get of line {spi}: {e:?}"),
        }
    }
    let Some((spi, slot)) = refused else {
        rt::fail!("{count} handlers taken and never ObjectTableFull")
    };
    let Some(first) = held[0] else {
        rt::fail!("ObjectTableFull before any handler")
    };
    check!(cnode().delete(first.slot()).is_ok(), "delete a handler");
    let again = irq_control().get(spi, slot);
    check!(
        again.is_ok(),
        "line {spi} into the refused slot after a record was freed: {:?}",
        again.map(|c| c.slot())
    );
    for handler in held.iter().skip(1).take(count.saturating_sub(1)).flatten() {
        check!(
            cnode().delete(handler.slot()).is_ok(),
            "delete handler {:?}",
            handler.slot()
        );
    }
    Ok(())
}
