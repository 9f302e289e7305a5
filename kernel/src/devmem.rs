//! Device memory: the physical windows of MMIO the kernel does not drive,
//! which the root task receives as device Untypeds, and the BARs of bus 0
//! placed inside them at boot so that a user-level driver finds its
//! device's registers at the address config space gives.
//!
//! # The windows
//! - the PCI ECAM window (the config space of every function), from the
//!   MCFG table (x86_64) or the `pci-host-ecam-generic` node (aarch64);
//! - the PCI memory windows where BARs live: on aarch64 the 32-bit and
//!   64-bit memory ranges of the host bridge's `ranges`; on x86_64 (q35,
//!   no description the kernel parses) the PCI hole, from the top of RAM
//!   below 4 GiB up to [`PCI_HOLE_END`], minus the ECAM window.
//!
//! Every memory-map entry (RAM, firmware-reserved, ACPI) is cut out of a
//! window, and so is MMIO the kernel drives: on x86_64 the local APIC, the
//! I/O APIC, the HPET and the VT-d registers all sit at or above
//! [`PCI_HOLE_END`]; on aarch64 the GIC, the PL011 and the SMMUv3 sit below
//! the PCI windows and the SMMU's range is cut out anyway. The windows never
//! overlap RAM, so memory from a device Untyped is recognisable by its
//! address: [`is_device_memory`] is how `Frame.Map` picks device attributes
//! (uncached, never executable) without the user asking.
//!
//! # BARs
//! Boot walks bus 0 (`pci::assign::assign_bus`, host-tested) and gives
//! every unassigned memory BAR an address in a BAR window (32-bit BARs
//! below 4 GiB, 64-bit ones above when a window is there), naturally
//! aligned above whatever firmware placed in that window; then it turns
//! memory decoding on for the functions it placed. On aarch64 virt
//! nothing runs before the kernel, so it places them all; on x86_64 SeaBIOS
//! (which runs before the PVH entry) has assigned them and the kernel only
//! checks and reports. I/O BARs are left alone (no driver needs port I/O).

use crate::boot_types::{Discovered, MemoryRegion};
use crate::pci::Ecam;
use abi::bootinfo::device_kind;
use core::sync::atomic::{AtomicU64, Ordering};
use pci_config::Bar;
use pci_config::assign::{MemoryWindow, Placed, assign_bus};

/// One window of device memory.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// First byte (4 KiB aligned).
    pub start: u64,
    /// One past the last byte (4 KiB aligned).
    pub end: u64,
    /// What it is, for the boot log.
    pub what: &'static str,
    /// What it is, for the root task: an `abi::bootinfo::device_kind`.
    pub kind: u8,
}

/// Where the x86 PC's PCI hole ends: the I/O APIC's architectural base.
/// From here to 4 GiB sit the I/O APIC, HPET, VT-d units, local APIC and
/// the firmware flash: chipset and CPU registers, never device memory.
#[cfg(target_arch = "x86_64")]
pub const PCI_HOLE_END: u64 = 0xFEC0_0000;

/// The most windows kept (the rest are reported and left out).
const MAX_WINDOWS: usize = 8;

static WINDOWS: spin::Once<heapless::Vec<Window, MAX_WINDOWS>> = spin::Once::new();

/// The device-memory windows found at boot (empty before [`init`]).
pub fn windows() -> &'static [Window] {
    WINDOWS.get().map_or(&[], |w| w.as_slice())
}

/// A range `[RAM_GAP_START, RAM_GAP_END)` that overlaps no window and holds
/// the start of the largest RAM region, set at boot (empty before): a page
/// inside it is normal memory without a scan of the windows (`Frame.Map`
/// asks for every page it maps; the scan cost its fast path about 35
/// instructions). Written once by [`init`], before any user code runs.
static RAM_GAP_START: AtomicU64 = AtomicU64::new(0);
static RAM_GAP_END: AtomicU64 = AtomicU64::new(0);

/// Whether the physical page at `paddr` is device memory (inside a window).
#[inline(always)]
pub fn is_device_memory(paddr: u64) -> bool {
    let in_gap = RAM_GAP_START.load(Ordering::Relaxed) <= paddr
        && paddr < RAM_GAP_END.load(Ordering::Relaxed);
    !in_gap && in_a_window(paddr)
}

/// Whether a window holds `paddr`.
#[inline(never)]
fn in_a_window(paddr: u64) -> bool {
    windows().iter().any(|w| (w.start..w.end).contains(&paddr))
}

/// The memory type a user page at `paddr` maps with: device memory inside
/// a window, normal memory elsewhere.
#[inline]
pub fn memory_type(paddr: u64) -> crate::arch::Memory {
    if is_device_memory(paddr) {
        crate::arch::Memory::Device
    } else {
        crate::arch::Memory::Normal
    }
}

/// The widest range around `at` that overlaps none of `windows`; empty when
/// a window holds `at`.
fn gap_around(windows: &[Window], at: u64) -> (u64, u64) {
    if windows.iter().any(|w| (w.start..w.end).contains(&at)) {
        return (0, 0);
    }
    let below = windows.iter().map(|w| w.end).filter(|&e| e <= at).max();
    let above = windows.iter().map(|w| w.start).filter(|&s| s > at).min();
    (below.unwrap_or(0), above.unwrap_or(u64::MAX))
}

/// Calls `each(start, end)` for every 4 KiB-aligned part of `[start, end)`
/// that overlaps none of `excluded` (each a `[start, end)` range).
fn outside(start: u64, end: u64, excluded: &[(u64, u64)], each: &mut impl FnMut(u64, u64)) {
    let mut cursor = start.next_multiple_of(4096);
    let end = end & !0xFFF;
    while cursor < end {
        // The first excluded range that covers or follows the cursor.
        let next = excluded
            .iter()
            .filter(|&&(s, e)| e > cursor && s < end)
            .min_by_key(|&&(s, _)| s);
        match next {
            Some(&(s, e)) if s <= cursor => cursor = e.next_multiple_of(4096),
            Some(&(s, e)) => {
                each(cursor, s & !0xFFF);
                cursor = e.next_multiple_of(4096);
            }
            None => {
                each(cursor, end);
                cursor = end;
            }
        }
    }
}

/// Finds the device windows, places bus 0's BARs in them (the kernel's
/// side of `pci::assign`) and records them
/// for [`windows`] and [`is_device_memory`].
pub fn init(found: &Discovered, memory: &[MemoryRegion]) {
    let mut excluded: heapless::Vec<(u64, u64), { crate::boot_types::MAX_MEMORY_REGIONS + 2 }> =
        memory
            .iter()
            .map(|r| (r.start, r.start.saturating_add(r.size)))
            .collect();
    let mut windows: heapless::Vec<Window, MAX_WINDOWS> = heapless::Vec::new();
    let add = |windows: &mut heapless::Vec<Window, MAX_WINDOWS>, start, end, what, kind| {
        if windows
            .push(Window {
                start,
                end,
                what,
                kind,
            })
            .is_err()
        {
            crate::println!("[devmem] too many windows: {what} {start:#x}..{end:#x} left out");
        }
    };
    let ecam = found.ecam.filter(|_| found.ecam_size > 0);
    if let Some(base) = ecam {
        let _ = excluded.push((base, base + found.ecam_size));
        add(
            &mut windows,
            base,
            base + found.ecam_size,
            "PCI ECAM",
            device_kind::PCI_ECAM,
        );
    }
    #[cfg(target_arch = "aarch64")]
    if let Some((base, size)) = found.smmu {
        let _ = excluded.push((base, base + size));
    }
    // (PCI address, CPU address, size, name) of each window BARs live in.
    let mut bar_windows: heapless::Vec<(u64, u64, u64, &'static str), 3> = heapless::Vec::new();
    if let Some((pci, cpu, size)) = found.mmio32 {
        let _ = bar_windows.push((pci, cpu, size, "PCI MMIO (32-bit)"));
    }
    if let Some((pci, cpu, size)) = found.mmio64 {
        let _ = bar_windows.push((pci, cpu, size, "PCI MMIO (64-bit)"));
    }
    #[cfg(target_arch = "x86_64")]
    {
        let ram_top = memory
            .iter()
            .filter(|r| r.kind == crate::boot_types::MemoryKind::Ram)
            .map(|r| r.start.saturating_add(r.size))
            .filter(|&end| end <= PCI_HOLE_END)
            .max()
            .unwrap_or(0);
        let _ = bar_windows.push((ram_top, ram_top, PCI_HOLE_END - ram_top, "PCI hole"));
    }
    // The same pieces as the bus sees them, for placing BARs.
    let mut bus_windows: heapless::Vec<MemoryWindow, MAX_WINDOWS> = heapless::Vec::new();
    for &(pci, cpu, size, what) in &bar_windows {
        outside(cpu, cpu.saturating_add(size), &excluded, &mut |s, e| {
            add(&mut windows, s, e, what, device_kind::PCI_MEMORY);
            let _ = bus_windows.push(MemoryWindow {
                pci: s - cpu + pci,
                cpu: s,
                size: e - s,
            });
        });
    }
    for w in &windows {
        crate::println!(
            "[devmem] {:#012x}..{:#012x} {} (device Untypeds)",
            w.start,
            w.end,
            w.what
        );
    }
    if let Some(base) = ecam {
        place_bars(Ecam::new(base), &bus_windows, &windows);
    }
    let ram = memory
        .iter()
        .filter(|r| r.kind == crate::boot_types::MemoryKind::Ram)
        .max_by_key(|r| r.size);
    if let Some(ram) = ram {
        let (start, end) = gap_around(&windows, ram.start);
        RAM_GAP_START.store(start, Ordering::Relaxed);
        RAM_GAP_END.store(end, Ordering::Relaxed);
    }
    WINDOWS.call_once(|| windows);
}

/// Gives every unassigned memory BAR on bus 0 an address and reports each.
fn place_bars(mut ecam: Ecam, bus_windows: &[MemoryWindow], windows: &[Window]) {
    assign_bus(&mut ecam, 0, bus_windows, &mut |p| {
        let Bar::Memory { is_64bit, .. } = p.bar else {
            return;
        };
        let (bdf, index, size) = (p.bdf, p.index, p.size);
        let kind = if is_64bit { "mem64" } else { "mem32" };
        let how = match p.placed {
            Placed::Found => "firmware",
            Placed::Assigned => "assigned",
            Placed::NoRoom => {
                crate::println!(
                    "[pci] {bdf} BAR{index} {kind} of {size:#x} bytes: unassigned, no window has room"
                );
                return;
            }
        };
        let inside = windows
            .iter()
            .any(|w| w.start <= p.cpu && p.cpu + size <= w.end);
        crate::println!(
            "[pci] {bdf} BAR{index} {kind} {:#x} ({size:#x} bytes, {how}){}",
            p.cpu,
            if inside {
                ""
            } else {
                ": outside every device window"
            }
        );
    });
}
