//! Host tests against a simulated ECAM window: functions with type 0
//! headers whose BARs keep only their writable address bits, as hardware
//! does (PCI Local Bus 3.0, 6.2.5.1).

use super::*;
use std::collections::BTreeMap;
use std::vec::Vec;

/// One simulated function: its 16 header registers, and per BAR register
/// the bits that stick when written (the rest read back as the type flags).
#[derive(Clone)]
struct Simulated {
    registers: [u32; 16],
    bar_masks: [u32; 6],
}

#[derive(Default)]
struct Ecam {
    functions: BTreeMap<u64, Simulated>,
    writes: Vec<(u64, u32)>,
}

impl Ecam {
    fn add(&mut self, bdf: Bdf, vendor: u16, device: u16, header: u32, bars: [(u32, u32); 6]) {
        let mut registers = [0u32; 16];
        registers[0] = (u32::from(device) << 16) | u32::from(vendor);
        registers[3] = header << 16;
        let mut bar_masks = [0u32; 6];
        for (index, (flags, mask)) in bars.iter().enumerate() {
            registers[4 + index] = *flags;
            bar_masks[index] = *mask;
        }
        self.functions.insert(
            bdf.ecam_offset(),
            Simulated {
                registers,
                bar_masks,
            },
        );
    }
}

impl ConfigAccess for Ecam {
    fn read32(&mut self, offset: u64) -> u32 {
        assert_eq!(offset % 4, 0, "unaligned config read at {offset:#x}");
        match self.functions.get(&(offset & !0xFFF)) {
            Some(f) => f
                .registers
                .get((offset & 0xFFF) as usize / 4)
                .copied()
                .unwrap_or(0),
            None => u32::MAX,
        }
    }

    fn write32(&mut self, offset: u64, value: u32) {
        self.writes.push((offset, value));
        let Some(f) = self.functions.get_mut(&(offset & !0xFFF)) else {
            return;
        };
        let index = (offset & 0xFFF) as usize / 4;
        match index {
            1 => f.registers[1] = value & 0xFFFF,
            4..=9 => {
                let mask = f.bar_masks[index - 4];
                let flags =
                    f.registers[index] & !mask & if f.registers[index] & 1 != 0 { 3 } else { 0xF };
                f.registers[index] = (value & mask) | flags;
            }
            _ => {}
        }
    }
}

const EDU: (u16, u16) = (0x1234, 0x11e8);
/// A 1 MiB 32-bit memory BAR.
const MEM32_1M: (u32, u32) = (0, 0xFFF0_0000);
/// A 16 KiB 64-bit prefetchable memory BAR (lower half, upper half).
const MEM64_16K: [(u32, u32); 2] = [(0b1100, 0xFFFF_C000), (0, u32::MAX)];
/// A 32-byte I/O BAR.
const IO_32: (u32, u32) = (1, 0xFFFF_FFE0);
const NONE: (u32, u32) = (0, 0);

fn machine() -> Ecam {
    let mut ecam = Ecam::default();
    // 00:00.0 a host bridge, 00:01.0 a multi-function device with .0 and .2,
    // 00:04.0 edu, 00:05.0 a single-function device whose .1 must be ignored.
    ecam.add(Bdf::new(0, 0, 0), 0x1b36, 0x0008, 0, [NONE; 6]);
    ecam.add(
        Bdf::new(0, 1, 0),
        0x1af4,
        0x1000,
        0x80,
        [IO_32, MEM32_1M, NONE, NONE, MEM64_16K[0], MEM64_16K[1]],
    );
    ecam.add(Bdf::new(0, 1, 2), 0x1af4, 0x1001, 0, [NONE; 6]);
    ecam.add(
        Bdf::new(0, 4, 0),
        EDU.0,
        EDU.1,
        0,
        [MEM32_1M, NONE, NONE, NONE, NONE, NONE],
    );
    ecam.add(Bdf::new(0, 5, 0), 0x8086, 0x10d3, 0, [NONE; 6]);
    ecam.add(Bdf::new(0, 5, 1), 0xdead, 0xbeef, 0, [NONE; 6]);
    ecam.add(Bdf::new(0, 6, 0), 0x1b36, 0x0001, 1, [NONE; 6]);
    ecam
}

#[test]
fn ecam_offsets_and_requester_ids() {
    let bdf = Bdf::new(1, 4, 2);
    assert_eq!(bdf.ecam_offset(), 0x12_2000);
    assert_eq!(bdf.requester_id(), 0x0122);
    assert_eq!(Bdf::new(0, 33, 9), Bdf::new(0, 1, 1));
    assert_eq!(std::format!("{}", Bdf::new(0, 4, 0)), "00:04.0");
}

#[test]
fn scan_follows_the_multi_function_bit() {
    let mut ecam = machine();
    let mut scan = BusScan::new(0);
    let mut seen = Vec::new();
    while let Some(bdf) = scan.next(&mut ecam) {
        seen.push(bdf);
    }
    assert_eq!(
        seen,
        [
            Bdf::new(0, 0, 0),
            Bdf::new(0, 1, 0),
            Bdf::new(0, 1, 2),
            Bdf::new(0, 4, 0),
            Bdf::new(0, 5, 0),
            Bdf::new(0, 6, 0),
        ]
    );
    assert_eq!(find(&mut ecam, 0, EDU.0, EDU.1), Some(Bdf::new(0, 4, 0)));
    assert_eq!(
        find(&mut ecam, 0, 0xdead, 0xbeef),
        None,
        "behind a single-function device"
    );
    assert_eq!(find(&mut ecam, 1, EDU.0, EDU.1), None);
}

#[test]
fn decodes_and_sizes_every_bar_kind() {
    let mut ecam = machine();
    let mut f = Function::open(&mut ecam, Bdf::new(0, 1, 0)).unwrap();
    assert_eq!((f.vendor_id(), f.device_id()), (0x1af4, 0x1000));
    assert_eq!(f.bar_with_size(0), Ok((Bar::Io { port: 0 }, 32)));
    assert_eq!(
        f.bar_with_size(1),
        Ok((
            Bar::Memory {
                address: 0,
                is_64bit: false,
                prefetchable: false
            },
            1 << 20
        ))
    );
    assert_eq!(
        f.bar_with_size(2),
        Ok((
            Bar::Memory {
                address: 0,
                is_64bit: false,
                prefetchable: false
            },
            0
        )),
        "an unimplemented BAR has size 0"
    );
    let (bar, size) = f.bar_with_size(4).unwrap();
    assert_eq!(
        bar,
        Bar::Memory {
            address: 0,
            is_64bit: true,
            prefetchable: true
        }
    );
    assert_eq!((size, bar.registers()), (16 << 10, 2));
    f.set_bar_address(4, 0x80_0000_4000).unwrap();
    f.set_bar_address(1, 0x1010_0000).unwrap();
    f.set_bar_address(0, 0x1000).unwrap();
    assert_eq!(
        f.bar(4),
        Ok(Bar::Memory {
            address: 0x80_0000_4000,
            is_64bit: true,
            prefetchable: true
        })
    );
    assert_eq!(
        f.bar(1),
        Ok(Bar::Memory {
            address: 0x1010_0000,
            is_64bit: false,
            prefetchable: false
        })
    );
    assert_eq!(f.bar(0), Ok(Bar::Io { port: 0x1000 }));
    // Sizing restored the address it found.
    assert_eq!(f.bar_with_size(4).map(|(b, _)| b), f.bar(4));
}

#[test]
fn sizing_turns_decoding_off_and_restores_the_command() {
    let mut ecam = machine();
    let bdf = Bdf::new(0, 4, 0);
    let mut f = Function::open(&mut ecam, bdf).unwrap();
    f.enable(command::MEMORY_SPACE | command::BUS_MASTER);
    assert_eq!(f.command(), 6);
    f.bar_with_size(0).unwrap();
    assert_eq!(f.command(), 6);
    let command = bdf.ecam_offset() + 4;
    let bar0 = bdf.ecam_offset() + 0x10;
    let writes: Vec<_> = ecam
        .writes
        .iter()
        .filter(|(o, _)| *o == command || *o == bar0)
        .copied()
        .collect();
    assert_eq!(
        writes,
        [
            (command, 6),
            (command, 4),
            (bar0, u32::MAX),
            (bar0, 0),
            (command, 6)
        ]
    );
}

#[test]
fn errors_name_what_was_wrong() {
    let mut ecam = machine();
    assert_eq!(
        Function::open(&mut ecam, Bdf::new(0, 9, 0)).err(),
        Some(PciError::NoFunction(Bdf::new(0, 9, 0)))
    );
    let mut bridge = Function::open(&mut ecam, Bdf::new(0, 6, 0)).unwrap();
    assert_eq!(
        bridge.bar(0),
        Err(PciError::NotAType0Header {
            bdf: Bdf::new(0, 6, 0),
            header_type: 1
        })
    );
    let mut edu = Function::open(&mut ecam, Bdf::new(0, 4, 0)).unwrap();
    assert_eq!(edu.bar(6), Err(PciError::BarIndexOutOfRange(6)));
    let mut ecam = machine();
    let bdf = Bdf::new(0, 4, 0);
    ecam.functions
        .get_mut(&bdf.ecam_offset())
        .unwrap()
        .registers[9] = 0b100;
    ecam.functions
        .get_mut(&bdf.ecam_offset())
        .unwrap()
        .registers[8] = 0b010;
    let mut edu = Function::open(&mut ecam, bdf).unwrap();
    assert_eq!(edu.bar(5), Err(PciError::SixtyFourBitBarAtTheEnd(bdf)));
    assert_eq!(edu.bar(4), Err(PciError::ReservedBarType { bdf, index: 4 }));
    assert_eq!(
        std::format!("{}", PciError::SixtyFourBitBarAtTheEnd(bdf)),
        "00:04.0: BAR 5 claims 64 bits with no register after it"
    );
}

#[test]
fn closures_are_an_access() {
    let mut ecam = machine();
    let cell = std::cell::RefCell::new(&mut ecam);
    let mut access = Closures {
        read: |offset| cell.borrow_mut().read32(offset),
        write: |offset, value| cell.borrow_mut().write32(offset, value),
    };
    assert_eq!(find(&mut access, 0, EDU.0, EDU.1), Some(Bdf::new(0, 4, 0)));
}

mod placing {
    use super::*;
    use crate::assign::{BarAllocator, MemoryWindow, Placed, Placement, assign_bus};

    const LOW: MemoryWindow = MemoryWindow {
        pci: 0x1000_0000,
        cpu: 0x1000_0000,
        size: 0x2EFF_0000,
    };
    const HIGH: MemoryWindow = MemoryWindow {
        pci: 0x80_0000_0000,
        cpu: 0x80_0000_0000,
        size: 0x80_0000_0000,
    };

    #[test]
    fn the_allocator_aligns_and_keeps_32_bit_bars_low() {
        let mut a = BarAllocator::new(&[HIGH, LOW]);
        assert_eq!(a.take(0x1000, false), Some((0x1000_0000, 0x1000_0000)));
        assert_eq!(
            a.take(1 << 20, false),
            Some((0x1010_0000, 0x1010_0000)),
            "aligned up"
        );
        assert_eq!(
            a.take(0x4000, true),
            Some((0x80_0000_0000, 0x80_0000_0000)),
            "64-bit goes high"
        );
        assert_eq!(a.take(0x1800, false), None, "not a power of two");
        assert_eq!(a.take(1 << 30, false), None, "no room below 4 GiB");
        let mut low_only = BarAllocator::new(&[LOW]);
        assert_eq!(
            low_only.take(0x4000, true),
            Some((0x1000_0000, 0x1000_0000)),
            "64-bit falls back low"
        );
        // A window straddling 4 GiB gives 32-bit BARs only its low part.
        let mut straddle = BarAllocator::new(&[MemoryWindow {
            pci: 0xF000_0000,
            cpu: 0x4_F000_0000,
            size: 0x2000_0000,
        }]);
        assert_eq!(
            straddle.take(0x1000_0000, false),
            Some((0xF000_0000, 0x4_F000_0000))
        );
        assert_eq!(straddle.take(0x1000_0000, false), None);
        assert_eq!(
            straddle.take(0x1000_0000, true),
            Some((0x1_0000_0000, 0x5_0000_0000))
        );
    }

    #[test]
    fn firmware_bars_are_kept_and_nothing_lands_below_them() {
        let mut a = BarAllocator::new(&[LOW]);
        a.reserve(0x1020_0000, 0x1000);
        a.reserve(0x7000_0000, 0x1000); // outside every window: ignored
        assert_eq!(a.take(0x1000, false), Some((0x1020_1000, 0x1020_1000)));
    }

    fn placements(ecam: &mut Ecam, windows: &[MemoryWindow]) -> Vec<Placement> {
        let mut seen = Vec::new();
        assign_bus(ecam, 0, windows, &mut |p| seen.push(p));
        seen
    }

    #[test]
    fn every_memory_bar_on_the_bus_gets_an_address() {
        let mut ecam = machine();
        let seen = placements(&mut ecam, &[LOW, HIGH]);
        let summary: Vec<_> = seen
            .iter()
            .map(|p| (p.bdf, p.index, p.cpu, p.size, p.placed))
            .collect();
        assert_eq!(
            summary,
            [
                (Bdf::new(0, 1, 0), 1, 0x1000_0000, 1 << 20, Placed::Assigned),
                (
                    Bdf::new(0, 1, 0),
                    4,
                    0x80_0000_0000,
                    0x4000,
                    Placed::Assigned
                ),
                (Bdf::new(0, 4, 0), 0, 0x1010_0000, 1 << 20, Placed::Assigned),
            ]
        );
        // The registers say so, and memory decoding is on.
        let mut edu = Function::open(&mut ecam, Bdf::new(0, 4, 0)).unwrap();
        assert_eq!(
            edu.bar(0),
            Ok(Bar::Memory {
                address: 0x1010_0000,
                is_64bit: false,
                prefetchable: false
            })
        );
        assert_ne!(edu.command() & command::MEMORY_SPACE, 0);
        let mut nic = Function::open(&mut ecam, Bdf::new(0, 1, 0)).unwrap();
        assert_eq!(
            nic.bar(0),
            Ok(Bar::Io { port: 0 }),
            "I/O BARs are left alone"
        );
        // A second walk finds everything in place and changes nothing.
        let again = placements(&mut ecam, &[LOW, HIGH]);
        assert!(again.iter().all(|p| p.placed == Placed::Found));
        assert_eq!(
            again.iter().map(|p| p.cpu).collect::<Vec<_>>(),
            [0x1000_0000, 0x80_0000_0000, 0x1010_0000]
        );
    }

    #[test]
    fn assigned_bars_go_above_firmware_ones_and_report_no_room() {
        let mut ecam = machine();
        let edu = Bdf::new(0, 4, 0);
        Function::open(&mut ecam, edu)
            .unwrap()
            .set_bar_address(0, 0x1000_0000)
            .unwrap();
        let seen = placements(&mut ecam, &[LOW]);
        let summary: Vec<_> = seen
            .iter()
            .map(|p| (p.bdf, p.index, p.cpu, p.placed))
            .collect();
        assert_eq!(
            summary,
            [
                (Bdf::new(0, 1, 0), 1, 0x1010_0000, Placed::Assigned),
                (Bdf::new(0, 1, 0), 4, 0x1020_0000, Placed::Assigned),
                (edu, 0, 0x1000_0000, Placed::Found),
            ]
        );
        let mut ecam = machine();
        let tiny = MemoryWindow {
            pci: 0x1000_0000,
            cpu: 0x1000_0000,
            size: 0x1000,
        };
        let seen = placements(&mut ecam, &[tiny]);
        assert!(
            seen.iter()
                .all(|p| p.placed == Placed::NoRoom && p.cpu == 0)
        );
        let mut edu = Function::open(&mut ecam, edu).unwrap();
        assert_eq!(
            edu.command() & command::MEMORY_SPACE,
            0,
            "nothing placed, decoding stays off"
        );
    }
}

/// A whole 4 KiB configuration space for one function at 00:03.0.
struct Page([u32; 1024]);

impl ConfigAccess for Page {
    fn read32(&mut self, offset: u64) -> u32 {
        if offset & !0xFFF == Bdf::new(0, 3, 0).ecam_offset() {
            self.0[(offset & 0xFFF) as usize / 4]
        } else {
            u32::MAX
        }
    }

    fn write32(&mut self, offset: u64, value: u32) {
        if offset & !0xFFF == Bdf::new(0, 3, 0).ecam_offset() {
            self.0[(offset & 0xFFF) as usize / 4] = value;
        }
    }
}

/// edu's list: status says capabilities, 0x34 -> PM-like cap at 0x40 ->
/// MSI (64-bit capable) at 0x50.
fn with_msi(control: u32) -> Page {
    let mut page = Page([0; 1024]);
    page.0[0] = 0x11e8_1234;
    page.0[1] = 1 << 20;
    page.0[0x34 / 4] = 0x40;
    page.0[0x40 / 4] = 0x5001; // id 1, next 0x50
    page.0[0x50 / 4] = control << 16 | 0x0005; // id 5 (MSI), next 0
    page
}

#[test]
fn msi_is_found_programmed_and_enabled() {
    let mut page = with_msi(1 << 7);
    let mut function = Function::open(&mut page, Bdf::new(0, 3, 0)).unwrap();
    assert_eq!(function.capability(0x05), Some(0x50));
    assert_eq!(function.capability(0x11), None);
    function.enable_msi(0xFEE0_0000, 0x30).unwrap();
    assert_eq!(page.0[0x54 / 4], 0xFEE0_0000);
    assert_eq!(page.0[0x58 / 4], 0);
    assert_eq!(page.0[0x5C / 4] & 0xFFFF, 0x30);
    assert_eq!(page.0[0x50 / 4] >> 16, (1 << 7) | 1, "enabled, one vector");
}

#[test]
fn msi_refusals_name_the_function() {
    let bdf = Bdf::new(0, 3, 0);
    let mut narrow = with_msi(0);
    let mut function = Function::open(&mut narrow, bdf).unwrap();
    assert_eq!(
        function.enable_msi(1 << 32, 1),
        Err(PciError::MsiAddressTooHigh {
            bdf,
            address: 1 << 32
        })
    );
    function.enable_msi(0xFEE0_0000, 0x31).unwrap();
    assert_eq!(
        narrow.0[0x58 / 4] & 0xFFFF,
        0x31,
        "32-bit layout: data at +8"
    );
    let mut none = with_msi(0);
    none.0[1] = 0;
    let mut function = Function::open(&mut none, bdf).unwrap();
    assert_eq!(
        function.enable_msi(0xFEE0_0000, 1),
        Err(PciError::NoMsiCapability(bdf))
    );
    // A list that loops ends the walk.
    let mut looping = with_msi(0);
    looping.0[0x50 / 4] = 0x4003;
    let mut function = Function::open(&mut looping, bdf).unwrap();
    assert_eq!(function.capability(0x05), None);
}

/// A virtio-like list: MSI-X at 0x40 (table in BAR 1), then a vendor cap.
fn with_msix() -> Page {
    let mut page = Page([0; 1024]);
    page.0[0] = 0x1042_1af4;
    page.0[1] = 1 << 20;
    page.0[0x34 / 4] = 0x40;
    page.0[0x40 / 4] = 0x0002_5011; // MSI-X, next 0x50, table size 3
    page.0[0x44 / 4] = 0x0000_0001; // table at offset 0 of BAR 1
    page.0[0x50 / 4] = 0x0000_0009; // vendor-specific, next 0
    page
}

#[test]
fn only_msi_fields_take_the_checked_write() {
    let bdf = Bdf::new(0, 3, 0);
    let mut page = with_msi(1 << 7);
    let mut function = Function::open(&mut page, bdf).unwrap();
    // Address, upper address, data, then enable: what enable_msi writes.
    assert_eq!(function.write_msi_field(0x54, 0xFEE0_0010), Ok(0xFEE0_0010));
    assert_eq!(function.write_msi_field(0x58, 0), Ok(0));
    assert_eq!(function.write_msi_field(0x5C, 0x31), Ok(0x31));
    let enabled = ((1 << 7) | 1) << 16 | 0x0005;
    assert_eq!(function.write_msi_field(0x50, enabled), Ok(enabled));
    // The capability id, the command register, a BAR, the PM cap, past
    // the data (no per-vector masking): refused.
    assert_eq!(
        function.write_msi_field(0x50, enabled | 0x7),
        Err(PciError::MsiReadOnlyBits {
            bdf,
            offset: 0x50,
            bits: 0x2
        })
    );
    for offset in [0x04, 0x10, 0x40, 0x60] {
        assert_eq!(
            function.write_msi_field(offset, 0),
            Err(PciError::NotMsiField { bdf, offset }),
            "{offset:#x}"
        );
    }
    assert_eq!(page.0[1], 1 << 20, "the command register was not written");
}

#[test]
fn msix_takes_enable_and_mask_only() {
    let bdf = Bdf::new(0, 3, 0);
    let mut page = with_msix();
    let mut function = Function::open(&mut page, bdf).unwrap();
    let enable = 0x8002_5011;
    assert_eq!(function.write_msi_field(0x40, enable), Ok(enable));
    assert_eq!(
        function.write_msi_field(0x40, 0x8003_5011),
        Err(PciError::MsiReadOnlyBits {
            bdf,
            offset: 0x40,
            bits: 0x1_0000
        }),
        "the table size is read-only"
    );
    assert_eq!(
        function.write_msi_field(0x44, 0x1000),
        Err(PciError::NotMsiField { bdf, offset: 0x44 }),
        "the table offset is not the driver's"
    );
    assert_eq!(page.0[0x44 / 4], 1);
}
