//! Placing the memory BARs nobody assigned: what boot firmware does on a
//! PC and nothing does on a bare Arm machine, so that every function on a
//! bus decodes its registers at an address its driver can read from config
//! space.
//!
//! A BAR of `size` bytes (a power of two) is placed naturally aligned in a
//! [`MemoryWindow`] of the host bridge: 32-bit BARs only below 4 GiB,
//! 64-bit BARs preferably above. Each window is filled from the bottom,
//! above every BAR already decoding inside it (firmware's), so a placed BAR
//! never overlaps another; a window is not searched for gaps.

use crate::{Bar, Bdf, BusScan, ConfigAccess, Function, command};

/// Most windows an allocator keeps.
pub const MAX_WINDOWS: usize = 8;

/// A range of bus (PCI) memory addresses the host bridge forwards, and
/// where the CPU sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryWindow {
    /// First PCI bus address.
    pub pci: u64,
    /// The CPU physical address of `pci`.
    pub cpu: u64,
    /// Size in bytes.
    pub size: u64,
}

impl MemoryWindow {
    fn pci_end(&self) -> u64 {
        self.pci.saturating_add(self.size)
    }
}

/// Hands out naturally aligned ranges of the windows.
#[derive(Clone, Debug)]
pub struct BarAllocator {
    /// Each window and the next free PCI address in it.
    windows: [Option<(MemoryWindow, u64)>; MAX_WINDOWS],
}

const FOUR_GIB: u64 = 1 << 32;

impl BarAllocator {
    /// An allocator over the first [`MAX_WINDOWS`] of `windows`.
    pub fn new(windows: &[MemoryWindow]) -> BarAllocator {
        let mut slots = [None; MAX_WINDOWS];
        for (slot, window) in slots.iter_mut().zip(windows) {
            *slot = Some((*window, window.pci));
        }
        BarAllocator { windows: slots }
    }

    /// Notes a BAR already decoding at bus address `pci`: nothing is placed
    /// below its end in the window holding it.
    pub fn reserve(&mut self, pci: u64, size: u64) {
        for (window, next) in self.windows.iter_mut().flatten() {
            if (window.pci..window.pci_end()).contains(&pci) {
                *next = (*next).max(pci.saturating_add(size));
            }
        }
    }

    /// A naturally aligned range of `size` bytes (a power of two) for a BAR:
    /// its (PCI, CPU) addresses, or `None` when no window has room (or the
    /// size is not a power of two).
    pub fn take(&mut self, size: u64, is_64bit: bool) -> Option<(u64, u64)> {
        if !size.is_power_of_two() {
            return None;
        }
        // 64-bit BARs try the windows above 4 GiB first, keeping the scarce
        // low space for the BARs that can only live there.
        let passes: &[bool] = if is_64bit { &[true, false] } else { &[false] };
        for &high in passes {
            for (window, next) in self.windows.iter_mut().flatten() {
                if (window.pci >= FOUR_GIB) != high {
                    continue;
                }
                let limit = if is_64bit {
                    window.pci_end()
                } else {
                    window.pci_end().min(FOUR_GIB)
                };
                let Some(start) = next.checked_next_multiple_of(size) else {
                    continue;
                };
                if start.checked_add(size).is_some_and(|end| end <= limit) {
                    *next = start + size;
                    return Some((start, start - window.pci + window.cpu));
                }
            }
        }
        None
    }
}

/// How a memory BAR got its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    /// It already decoded an address (firmware's).
    Found,
    /// It had none; [`assign_bus`] gave it one.
    Assigned,
    /// It had none and no window had room: it stays unassigned.
    NoRoom,
}

/// One memory BAR after [`assign_bus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The function.
    pub bdf: Bdf,
    /// The BAR index (the lower one of a 64-bit BAR).
    pub index: u8,
    /// The BAR as it decodes now (address 0 when [`Placed::NoRoom`]).
    pub bar: Bar,
    /// Its CPU physical address (0 when [`Placed::NoRoom`]).
    pub cpu: u64,
    /// Its size in bytes.
    pub size: u64,
    /// How it got its address.
    pub placed: Placed,
}

/// Every implemented memory BAR on `bus`: `each(bdf, index, bar, size)`.
fn memory_bars<A: ConfigAccess + ?Sized>(
    access: &mut A,
    bus: u8,
    each: &mut dyn FnMut(&mut A, Bdf, u8, Bar, u64),
) {
    let mut scan = BusScan::new(bus);
    while let Some(bdf) = scan.next(access) {
        let mut index = 0;
        while index < crate::BAR_COUNT {
            let Ok(mut function) = Function::open(access, bdf) else {
                break;
            };
            // Not a type 0 header, or a malformed BAR: the rest of this
            // function's BARs cannot be decoded.
            let Ok((bar, size)) = function.bar_with_size(index) else {
                break;
            };
            if size > 0 && matches!(bar, Bar::Memory { .. }) {
                each(access, bdf, index, bar, size);
            }
            index += bar.registers();
        }
    }
}

/// Gives every unassigned memory BAR on `bus` an address from `windows`
/// (after reserving every BAR that already has one), turns memory decoding
/// on for each function it placed a BAR of, and reports every memory BAR
/// through `report`. I/O BARs are left alone. For code that owns the bus
/// (boot), since sizing rewrites the BARs.
pub fn assign_bus<A: ConfigAccess + ?Sized>(
    access: &mut A,
    bus: u8,
    windows: &[MemoryWindow],
    report: &mut dyn FnMut(Placement),
) {
    let mut allocator = BarAllocator::new(windows);
    memory_bars(access, bus, &mut |_, _, _, bar, size| {
        if let Bar::Memory { address, .. } = bar
            && address != 0
        {
            allocator.reserve(address, size);
        }
    });
    let to_cpu = |pci: u64| {
        windows
            .iter()
            .find(|w| (w.pci..w.pci_end()).contains(&pci))
            .map_or(pci, |w| pci - w.pci + w.cpu)
    };
    memory_bars(access, bus, &mut |access, bdf, index, bar, size| {
        let Bar::Memory {
            address, is_64bit, ..
        } = bar
        else {
            return;
        };
        let mut placement = Placement {
            bdf,
            index,
            bar,
            cpu: to_cpu(address),
            size,
            placed: Placed::Found,
        };
        if address == 0 {
            placement.cpu = 0;
            placement.placed = Placed::NoRoom;
            if let Some((pci, cpu)) = allocator.take(size, is_64bit)
                && let Ok(mut function) = Function::open(access, bdf)
                && function.set_bar_address(index, pci).is_ok()
            {
                function.enable(command::MEMORY_SPACE);
                placement.bar = function.bar(index).unwrap_or(bar);
                placement.cpu = cpu;
                placement.placed = Placed::Assigned;
            }
        }
        report(placement);
    });
}
