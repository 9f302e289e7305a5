//! The IOMMU cross-check (`tests=xcheck`): for each case the kernel programs
//! real IOMMU structures, runs edu DMA through them in QEMU and reports the
//! structures and the outcome on the console; `cargo xtask test` replays the
//! structures in the executable model of the same IOMMU and fails the case
//! when QEMU and the model disagree (see tools/xtask/src/xcheck.rs for the
//! line protocol).

use crate::boot::Discovered;
use crate::edu::Edu;
use crate::frames::BootFrames;
use crate::iommu_unit::{UNIT, Unit};
use crate::mem::phys_to_virt;
use crate::pci::Ecam;

/// Bytes each DMA moves.
const LENGTH: u64 = 64;
/// The pattern the source page holds.
const PATTERN: u8 = 0xA5;

/// Two pages a case copies between: the device reads `source_iova` and
/// writes what it read to `destination_iova`.
struct Transfer {
    source_iova: u64,
    source_pa: u64,
    destination_iova: u64,
    destination_pa: u64,
}

/// Runs every case for this machine's IOMMU; returns the exit status.
pub fn run(found: &Discovered, frames: &mut BootFrames) -> u32 {
    let Some(ecam) = found.ecam else {
        crate::println!("[xcheck] no PCI ECAM window");
        return crate::EXIT_TESTS_FAILED;
    };
    let edu = match Edu::probe(&Ecam::new(ecam), found.mmio32) {
        Ok(edu) => edu,
        Err(e) => {
            crate::println!("[xcheck] {e}");
            return crate::EXIT_TESTS_FAILED;
        }
    };
    let (Some(source), Some(destination)) = (frames.alloc(), frames.alloc()) else {
        return crate::EXIT_BOOT_FAILED;
    };
    fill(source, PATTERN);
    // Nothing is mapped: the DMA goes to the pages' own addresses and must
    // be refused exactly as the model says.
    let blocked = Transfer { source_iova: source, source_pa: source, destination_iova: destination, destination_pa: destination };
    run_case("boot_blocked", &edu, &blocked, frames);
    crate::println!("0 passed, 0 failed");
    crate::EXIT_SUCCESS
}

fn fill(pa: u64, value: u8) {
    // SAFETY: `pa` is a boot frame in the direct map owned by this module.
    unsafe { core::ptr::write_bytes(phys_to_virt(pa) as *mut u8, value, 4096) };
}

fn landed(pa: u64) -> bool {
    (0..LENGTH).all(|i| {
        // SAFETY: `pa` is a boot frame in the direct map; the device may
        // have written it, hence the volatile read.
        unsafe { (phys_to_virt(pa + i) as *const u8).read_volatile() == PATTERN }
    })
}

/// Reports the unit's registers and every non-zero word of the boot frames,
/// runs the transfer and reports what happened.
fn run_case(name: &str, edu: &Edu, transfer: &Transfer, frames: &BootFrames) {
    let mut guard = UNIT.lock();
    let Some(unit) = guard.as_mut() else {
        crate::println!("[xcheck] no IOMMU unit");
        return;
    };
    unit.drain_faults();
    fill(transfer.destination_pa, 0);
    crate::println!("xcheck begin {name} vendor={}", vendor(unit));
    report_registers(unit);
    let data_pages = [transfer.source_pa, transfer.destination_pa];
    for pa in frames.allocated().step_by(8).filter(|pa| !data_pages.contains(&(pa & !0xFFF))) {
        // SAFETY: every allocated boot frame is in the direct map.
        let value = unsafe { (phys_to_virt(pa) as *const u64).read_volatile() };
        if value != 0 {
            crate::println!("xcheck mem {pa:#x} {value:#x}");
        }
    }
    let requester = edu.bdf.requester_id();
    crate::println!("xcheck dma rid={requester:#x} iova={:#x} access=read pa={:#x}", transfer.source_iova, transfer.source_pa);
    crate::println!(
        "xcheck dma rid={requester:#x} iova={:#x} access=write pa={:#x}",
        transfer.destination_iova,
        transfer.destination_pa
    );
    let moved = edu
        .dma_from_memory(transfer.source_iova, LENGTH)
        .and_then(|()| edu.dma_to_memory(transfer.destination_iova, LENGTH));
    if let Err(e) = moved {
        crate::println!("[xcheck] {name}: {e}");
    }
    let faults = unit.drain_faults();
    let mut codes: heapless::Vec<u32, 16> = heapless::Vec::new();
    for fault in faults.iter().filter(|f| f.requester == requester) {
        if !codes.contains(&fault.reason) {
            let _ = codes.push(fault.reason);
        }
    }
    let verdict = if landed(transfer.destination_pa) { "landed" } else { "blocked" };
    crate::print!("xcheck observed {verdict} faults=");
    for (i, code) in codes.iter().enumerate() {
        crate::print!("{}{code:#x}", if i == 0 { "" } else { "," });
    }
    crate::println!();
    crate::println!("xcheck end {name}");
}

fn vendor(unit: &Unit) -> &'static str {
    match unit {
        #[cfg(target_arch = "x86_64")]
        Unit::Vtd(_) => "vtd",
        #[cfg(target_arch = "aarch64")]
        Unit::Smmu(_) => "smmu",
    }
}

fn report_registers(unit: &Unit) {
    match unit {
        #[cfg(target_arch = "x86_64")]
        Unit::Vtd(vtd) => {
            let (root, mode) = vtd.root_table().unwrap_or((0, iommu::vtd::regs::RootTableMode::Legacy));
            let mode = match mode {
                iommu::vtd::regs::RootTableMode::Legacy => "legacy",
                iommu::vtd::regs::RootTableMode::Scalable => "scalable",
            };
            let nest = u8::from(vtd.extended_capability().nest());
            crate::println!("xcheck reg root={root:#x} mode={mode} nest={nest}");
        }
        #[cfg(target_arch = "aarch64")]
        Unit::Smmu(smmu) => {
            let features = smmu.features();
            let (base, cfg) = smmu.stream_table().map(|t| (t.base(), t.base_cfg())).unwrap_or((0, 0));
            crate::println!(
                "xcheck reg strtab_base={base:#x} strtab_cfg={cfg:#x} idr0={:#x} idr1={:#x} idr5={:#x}",
                features.idr0.0,
                features.idr1.0,
                features.idr5.0
            );
        }
    }
}
