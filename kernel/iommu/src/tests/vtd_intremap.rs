//! VT-d interrupt remapping: the driver's table and register sequence
//! against the simulated unit, and what a device can still raise.

use crate::model::vtd_device::{InterruptOutcome, SimVtd, interrupt_reason};
use crate::model::{SimFrames, SimMemory};
use crate::vtd::VtdUnit;
use crate::vtd::intremap::{self, EntryCacheScope, Irte, SourceCheck};
use crate::vtd::regs::{GlobalBits, RootTableMode};
use crate::{FrameAllocator, PhysAddr, PhysMem};

const MIB: u64 = 1 << 20;
/// The device the entry is for, and another one.
const OWNER: u16 = 0x0020;
const INTRUDER: u16 = 0x0018;

/// A unit blocking DMA with remapping on over a 256-entry table whose entry
/// 5 delivers vector 48 to APIC 0, for `OWNER` only.
fn remapping<'m>(
    memory: &'m SimMemory,
    device: &'m SimVtd<'m>,
) -> (VtdUnit<&'m SimVtd<'m>>, PhysAddr) {
    let mut frames = SimFrames::new(memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(device);
    unit.block_all_dma(memory, &mut frames, RootTableMode::Legacy)
        .unwrap();
    let table = frames.alloc_zeroed_frame().unwrap();
    write_entry(memory, table, 5, Some(entry(SourceCheck::Requester(OWNER))));
    unit.enable_interrupt_remapping(memory, table, intremap::ENTRIES_PER_PAGE)
        .unwrap();
    (unit, table)
}

fn entry(source: SourceCheck) -> Irte {
    Irte {
        vector: 48,
        destination: 0,
        level: false,
        source,
    }
}

fn write_entry(memory: &SimMemory, table: PhysAddr, index: u64, irte: Option<Irte>) {
    let words = irte.map_or([0, 0], |irte| irte.encode());
    memory.write_u64(table + index * 16, words[0]);
    memory.write_u64(table + index * 16 + 8, words[1]);
}

fn raise(device: &SimVtd, index: u16, source: u16) -> InterruptOutcome {
    let (address, data) = intremap::msi_message(index);
    device.interrupt(address, data, source)
}

#[test]
fn without_remapping_any_device_raises_any_vector() {
    // The hole: a DMA write of the kernel's fault vector to 0xFEE0_0000.
    let memory = SimMemory::new(64 * MIB);
    let device = SimVtd::qemu_default(&memory);
    assert_eq!(device.interrupt(0xFEE0_0000, 40, INTRUDER), Ok((40, 0)));
}

#[test]
fn remapping_delivers_only_what_an_entry_allows() {
    let memory = SimMemory::new(64 * MIB);
    let device = SimVtd::qemu_default(&memory);
    let (unit, _) = remapping(&memory, &device);
    let status = unit.global_status();
    assert!(status.contains(GlobalBits::INTERRUPT_REMAPPING));
    assert!(!status.contains(GlobalBits::COMPATIBILITY_FORMAT));
    assert_eq!(device.counts.get().interrupt_entry, 1);

    assert_eq!(raise(&device, 5, OWNER), Ok((48, 0)));
    // Another device naming the same entry fails the source-id check.
    assert_eq!(
        raise(&device, 5, INTRUDER),
        Err(interrupt_reason::SOURCE_ID)
    );
    // An entry nobody filled, and one beyond the table.
    assert_eq!(raise(&device, 6, OWNER), Err(interrupt_reason::NOT_PRESENT));
    assert_eq!(
        raise(&device, 256, OWNER),
        Err(interrupt_reason::INDEX_OVER)
    );
    // The old, compatibility format: refused outright.
    assert_eq!(
        device.interrupt(0xFEE0_0000, 40, OWNER),
        Err(interrupt_reason::COMPATIBILITY)
    );
}

#[test]
fn a_changed_entry_needs_its_cache_invalidation() {
    let memory = SimMemory::new(64 * MIB);
    let device = SimVtd::qemu_default(&memory);
    let (mut unit, table) = remapping(&memory, &device);
    assert_eq!(raise(&device, 5, OWNER), Ok((48, 0)));
    // Taken away in memory only: the unit still uses its cached copy.
    write_entry(&memory, table, 5, None);
    assert_eq!(raise(&device, 5, OWNER), Ok((48, 0)));
    unit.invalidate_interrupt_entries(&memory, EntryCacheScope::Entries { index: 5, order: 0 })
        .unwrap();
    assert_eq!(raise(&device, 5, OWNER), Err(interrupt_reason::NOT_PRESENT));
}

#[test]
fn remapping_needs_the_capability_and_an_aligned_table() {
    let memory = SimMemory::new(64 * MIB);
    let without_ir = SimVtd::new(&memory, crate::model::vtd_device::QEMU_CAP, 0x0f00f42, true);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(&without_ir);
    unit.block_all_dma(&memory, &mut frames, RootTableMode::Legacy)
        .unwrap();
    let table = frames.alloc_zeroed_frame().unwrap();
    assert!(
        unit.enable_interrupt_remapping(&memory, table, 256)
            .is_err()
    );
    let device = SimVtd::qemu_default(&memory);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut frames, RootTableMode::Legacy)
        .unwrap();
    assert!(
        unit.enable_interrupt_remapping(&memory, table + 8, 256)
            .is_err()
    );
    assert!(
        !unit
            .global_status()
            .contains(GlobalBits::INTERRUPT_REMAPPING)
    );
}
