//! `ticks`: the only domain of `images/ticks.toml` (q35), and its system
//! test of the interrupts init hands out. The image gives it ISA line 0
//! (the PIT, 100 Hz) with id 5: init made an IrqHandler for the line
//! (`irq5`) and bound it to the domain's `irqs` notification with badge
//! bit `1 << 5`. The domain waits for the line, checks the bit, acks, and
//! does so again: the line is masked until each ack.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use rt::check;
use rt::testing::{Outcome, Suite};
use sys::{IrqHandler, Notification};

rt::entry!(main);

/// The irq's id in `ticks.toml`.
const ID: u32 = 5;
/// How many interrupts to take.
const TICKS: usize = 3;

fn main(startup: &rt::Startup) -> i32 {
    let mut suite = Suite::new();
    let table = startup.caps();
    let handler = table.and_then(|t| t.lookup::<IrqHandler>("irq5"));
    let irqs = table.and_then(|t| t.lookup::<Notification>("irqs"));
    suite.run("irq_capabilities_found_by_name", || {
        check!(handler.is_some(), "no IrqHandler named irq5");
        check!(irqs.is_some(), "no Notification named irqs");
        Ok(())
    });
    if let (Some(handler), Some(irqs)) = (handler, irqs) {
        suite.run("timer_line_arrives_with_its_id_bit", || take(handler, irqs));
    }
    suite.finish()
}

fn take(handler: sys::Cap<IrqHandler>, irqs: sys::Cap<Notification>) -> Outcome {
    for tick in 0..TICKS {
        let word = irqs.wait();
        check!(
            word == Ok(1 << ID),
            "interrupt {tick}: the notification brought {word:?}, expected Ok({:#x})",
            1u64 << ID
        );
        let acked = handler.ack();
        check!(acked.is_ok(), "interrupt {tick}: Ack answered {acked:?}");
    }
    Ok(())
}
