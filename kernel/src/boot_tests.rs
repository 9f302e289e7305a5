//! Boot self-tests (`tests=boot` on the command line): what the kernel decodes
//! of the IOMMU matches the machine, and DMA is blocked until a capability
//! allows it.

use crate::boot::Discovered;
use crate::cmdline::Cmdline;
use crate::dma_page::DmaPage;
use crate::edu::Edu;
use crate::pci::Ecam;
use crate::selftest::{Outcome, Suite};
use crate::{check, fail};

static TARGET: DmaPage = DmaPage::new();

/// Runs the boot tests and returns the exit status.
pub fn run(_cmdline: &Cmdline<'_>, found: &Discovered) -> u32 {
    let mut suite = Suite::default();
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
