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
//! Boot walks bus 0 and gives every unassigned memory BAR an address in the
//! 32-bit window (64-bit BARs in the 64-bit window when there is one), after
//! every address firmware already used there, naturally aligned; then it
//! turns memory decoding on for the functions it placed. On aarch64 virt
//! nothing runs before the kernel, so it places them all; on x86_64 SeaBIOS
//! (which runs before the PVH entry) has assigned them and the kernel only
//! checks and reports. I/O BARs are left alone (no driver needs port I/O).

use crate::boot::{Discovered, MemoryRegion};
use crate::pci::Ecam;
use abi::bootinfo::device_kind;
use pci_config::{Bar, BusScan, Function, command};

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

/// Whether the physical page at `paddr` is device memory (inside a window).
pub fn is_device_memory(paddr: u64) -> bool {
    windows().iter().any(|w| (w.start..w.end).contains(&paddr))
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

/// Finds the device windows, places bus 0's BARs in them and records them
/// for [`windows`] and [`is_device_memory`].
pub fn init(found: &Discovered, memory: &[MemoryRegion]) {
    let mut excluded: heapless::Vec<(u64, u64), { crate::boot::MAX_MEMORY_REGIONS + 2 }> = memory
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
    let mut bar_windows: heapless::Vec<(u64, u64, &'static str), 3> = heapless::Vec::new();
    if let Some((_, cpu, size)) = found.mmio32 {
        let _ = bar_windows.push((cpu, cpu + size, "PCI MMIO (32-bit)"));
    }
    if let Some((_, cpu, size)) = found.mmio64 {
        let _ = bar_windows.push((cpu, cpu + size, "PCI MMIO (64-bit)"));
    }
    #[cfg(target_arch = "x86_64")]
    {
        let ram_top = memory
            .iter()
            .filter(|r| r.kind == crate::boot::MemoryKind::Ram)
            .map(|r| r.start.saturating_add(r.size))
            .filter(|&end| end <= PCI_HOLE_END)
            .max()
            .unwrap_or(0);
        let _ = bar_windows.push((ram_top, PCI_HOLE_END, "PCI hole"));
    }
    for &(start, end, what) in &bar_windows {
        outside(start, end, &excluded, &mut |s, e| {
            add(&mut windows, s, e, what, device_kind::PCI_MEMORY)
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
        place_bars(Ecam::new(base), found, &windows);
    }
    WINDOWS.call_once(|| windows);
}

/// Where unassigned BARs go: the 32-bit window (and the 64-bit one for
/// 64-bit BARs), each a bump pointer above every BAR already placed in it.
struct Allocator {
    /// (PCI base, CPU base, size, next free CPU address) per window.
    windows: [Option<(u64, u64, u64, u64)>; 2],
}

impl Allocator {
    fn new(found: &Discovered) -> Allocator {
        let window = |w: Option<(u64, u64, u64)>| w.map(|(pci, cpu, size)| (pci, cpu, size, cpu));
        Allocator {
            windows: [window(found.mmio32), window(found.mmio64)],
        }
    }

    /// Notes a BAR firmware placed, so nothing is placed over it.
    fn reserve(&mut self, cpu: u64, size: u64) {
        for (_, base, window_size, next) in self.windows.iter_mut().flatten() {
            if (*base..*base + *window_size).contains(&cpu) {
                *next = (*next).max(cpu + size);
            }
        }
    }

    /// A naturally aligned range of `size` bytes: (PCI address, CPU address).
    fn take(&mut self, size: u64, is_64bit: bool) -> Option<(u64, u64)> {
        let order: [usize; 2] = if is_64bit { [1, 0] } else { [0, 1] };
        for index in order {
            if index == 1 && !is_64bit {
                continue;
            }
            let Some((pci, cpu, window_size, next)) = self.windows[index].as_mut() else {
                continue;
            };
            let start = next.next_multiple_of(size);
            if start + size <= *cpu + *window_size {
                *next = start + size;
                return Some((start - *cpu + *pci, start));
            }
        }
        None
    }
}

/// One pass over bus 0's memory BARs: `each(function, index, bar, size)`.
fn for_each_memory_bar(
    ecam: &mut Ecam,
    mut each: impl FnMut(&mut Ecam, pci_config::Bdf, u8, Bar, u64),
) {
    let mut scan = BusScan::new(0);
    while let Some(bdf) = scan.next(ecam) {
        let mut index = 0;
        while index < pci_config::BAR_COUNT {
            let Ok(mut function) = Function::open(ecam, bdf) else {
                break;
            };
            let Ok((bar, size)) = function.bar_with_size(index) else {
                break;
            };
            if size > 0 && matches!(bar, Bar::Memory { .. }) {
                each(ecam, bdf, index, bar, size);
            }
            index += bar.registers();
        }
    }
}

/// Gives every unassigned memory BAR on bus 0 an address and reports each.
fn place_bars(mut ecam: Ecam, found: &Discovered, windows: &[Window]) {
    let mut allocator = Allocator::new(found);
    for_each_memory_bar(&mut ecam, |_, _, _, bar, size| {
        if let Bar::Memory { address, .. } = bar
            && address != 0
        {
            allocator.reserve(address, size);
        }
    });
    for_each_memory_bar(&mut ecam, |ecam, bdf, index, bar, size| {
        let Bar::Memory {
            address, is_64bit, ..
        } = bar
        else {
            return;
        };
        let kind = if is_64bit { "mem64" } else { "mem32" };
        let mut cpu = address;
        let mut how = "firmware";
        if address == 0 {
            let Some((pci, at)) = allocator.take(size, is_64bit) else {
                crate::println!(
                    "[pci] {bdf} BAR{index} {kind} of {size:#x} bytes: unassigned and no window has room"
                );
                return;
            };
            let Ok(mut function) = Function::open(ecam, bdf) else {
                return;
            };
            if function.set_bar_address(index, pci).is_err() {
                return;
            }
            function.enable(command::MEMORY_SPACE);
            cpu = at;
            how = "assigned";
        }
        let inside = windows
            .iter()
            .any(|w| w.start <= cpu && cpu + size <= w.end);
        crate::println!(
            "[pci] {bdf} BAR{index} {kind} {cpu:#x} ({size:#x} bytes, {how}){}",
            if inside {
                ""
            } else {
                ": outside every device window"
            }
        );
    });
}
