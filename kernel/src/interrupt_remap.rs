//! VT-d interrupt remapping at work (x86_64): who may raise which vector.
//!
//! Without remapping a device's DMA write to `0xFEEx_xxxx` is an interrupt
//! with whatever vector it wrote, so a driver could forge another driver's
//! interrupt or the kernel's. With it, the unit consults the kernel's table
//! for every request:
//!
//! | IRTE | what | vector | who may raise it |
//! |---|---|---|---|
//! | 0..15 | I/O APIC line `n` | 33 + `n` | the I/O APIC (its requester id from the DMAR's device scope) |
//! | 16..32 | MSI line `n` | 48 + `n` - 16 | the one device `IrqHandler.MsiMessage` bound it to, until the handler or that IoDevice dies |
//!
//! Every other entry is not present, and compatibility-format requests
//! (those that name no entry) are refused: GSTS.CFIS stays clear. The I/O
//! APIC's redirection entries name their IRTE (remappable format). The
//! IOMMU's own fault event is not remapped (VT-d 5.1.1).
//!
//! QEMU 10.0.2 checks the entry and its source id for remappable requests
//! but lets compatibility-format requests through whatever CFIS says (its
//! `vtd_interrupt_remap_msi`); the host model (`iommu::model`) refuses them
//! as the specification does.

use core::sync::atomic::{AtomicU64, Ordering};

use iommu::vtd::intremap::{self, EntryCacheScope, Irte, SourceCheck};
use iommu::{FrameAllocator, PhysMem};

use crate::iommu_unit::{DirectMemory, DirectMmio};

/// The table's physical address; 0 while remapping is off.
static TABLE: AtomicU64 = AtomicU64::new(0);

/// IRTEs in the table (one page).
const ENTRIES: usize = intremap::ENTRIES_PER_PAGE;

/// Whether interrupt remapping is on.
pub fn enabled() -> bool {
    TABLE.load(Ordering::Relaxed) != 0
}

/// Writes IRTE `index` (`None`: not present). Present entries are written
/// high word first and cleared low word (present bit) first, so the unit
/// never reads a half-written present entry.
fn write_entry(table: u64, index: u16, entry: Option<Irte>) {
    let at = table + u64::from(index) * intremap::IRTE_SIZE as u64;
    match entry {
        Some(entry) => {
            let [low, high] = entry.encode();
            DirectMemory.write_u64(at + 8, high);
            DirectMemory.write_u64(at, low);
        }
        None => {
            DirectMemory.write_u64(at, 0);
            DirectMemory.write_u64(at + 8, 0);
        }
    }
}

/// Boot: builds the table (I/O APIC lines from `ioapic`, the I/O APIC's
/// requester id) and turns remapping on in `unit`, which already blocks
/// DMA. A unit without ECAP.IR leaves remapping off, and says so.
pub fn init(
    unit: &mut iommu::vtd::VtdUnit<DirectMmio>,
    frames: &mut impl FrameAllocator,
    ioapic: Option<u16>,
) -> Result<(), &'static str> {
    if crate::testing::seeds::planted(crate::testing::seeds::Seed::NoIntremap) {
        return Ok(());
    }
    if !unit.extended_capability().ir() {
        crate::say!(
            "[vtd] no interrupt remapping (ECAP.IR clear): any device can raise any vector"
        );
        return Ok(());
    }
    let source = match ioapic {
        Some(id) => SourceCheck::Requester(id),
        None => {
            crate::say!(
                "[vtd] the DMAR names no I/O APIC: its interrupts are remapped without a source-id check"
            );
            SourceCheck::Any
        }
    };
    let table = frames
        .alloc_zeroed_frame()
        .ok_or("no frame for the interrupt remapping table")?;
    for line in 0..crate::arch::IOAPIC_LINES {
        let entry = Irte {
            vector: crate::arch::irq_line_id(line) as u8,
            destination: 0,
            level: false,
            source,
        };
        write_entry(table, line, Some(entry));
    }
    unit.enable_interrupt_remapping(&DirectMemory, table, ENTRIES)
        .map_err(|e| {
            crate::say!("[vtd] enabling interrupt remapping failed: {}", e);
            "the VT-d unit did not enable interrupt remapping"
        })?;
    TABLE.store(table, Ordering::Relaxed);
    // The I/O APIC's entries now have to name their IRTEs.
    crate::arch::reroute_interrupt_lines(crate::arch::Remapping {
        ioapic_entry,
        bind_msi,
        release_msi,
    });
    crate::say!(
        "[vtd] interrupt remapping on: {} entries at {:#x}, compatibility format refused, I/O APIC as {:#06x}",
        ENTRIES,
        table,
        ioapic.unwrap_or(0xffff)
    );
    Ok(())
}

/// The I/O APIC redirection entry for `line` at `vector`, naming its IRTE,
/// if remapping is on.
pub fn ioapic_entry(line: u16, vector: u8, masked: bool) -> Option<u64> {
    enabled().then(|| intremap::ioapic_entry(line, vector, masked, false))
}

/// Lets only requester `requester` raise MSI line `line` (its IRTE:
/// `vector`, source-id checked) and returns the MSI address and data that
/// name the entry; `None` when remapping is off.
pub fn bind_msi(line: u16, vector: u8, requester: u16) -> Option<(u64, u32)> {
    let table = TABLE.load(Ordering::Relaxed);
    if table == 0 {
        return None;
    }
    let entry = Irte {
        vector,
        destination: 0,
        level: false,
        source: SourceCheck::Requester(requester),
    };
    write_entry(table, line, Some(entry));
    invalidate(line);
    Some(intremap::msi_message(line))
}

/// Takes MSI line `line`'s entry away (its handler died): from now on no
/// device can raise it until it is bound again.
pub fn release_msi(line: u16) {
    let table = TABLE.load(Ordering::Relaxed);
    if table != 0 {
        write_entry(table, line, None);
        invalidate(line);
    }
}

/// The two words of IRTE `index` as the unit reads them (`None` while
/// remapping is off), for the abstraction check.
#[cfg(feature = "fuzz-checks")]
pub fn entry_words(index: u16) -> Option<[u64; 2]> {
    let table = TABLE.load(Ordering::Relaxed);
    if table == 0 || usize::from(index) >= ENTRIES {
        return None;
    }
    let at = table + u64::from(index) * intremap::IRTE_SIZE as u64;
    Some([DirectMemory.read_u64(at), DirectMemory.read_u64(at + 8)])
}

/// Drops IRTE `index` from the unit's cache and waits for it.
fn invalidate(index: u16) {
    let scope = EntryCacheScope::Entries { index, order: 0 };
    let mut unit = crate::iommu_unit::UNIT.lock();
    if let Some(crate::iommu_unit::Unit::Vtd(vtd)) = unit.as_mut()
        && let Err(e) = vtd.invalidate_interrupt_entries(&DirectMemory, scope)
    {
        crate::say!("[vtd] interrupt entry {} invalidation failed: {}", index, e);
    }
}
