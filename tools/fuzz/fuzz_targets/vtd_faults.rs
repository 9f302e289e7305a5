//! Fuzz target `vtd_faults`: VT-d fault recording (VT-d 11.4.14): the
//! decode of one fault recording register (`FaultRecord::decode`) and its
//! rendering, and `VtdUnit::read_faults` over a register block whose CAP
//! (how many recording registers, where), FSTS (where to start) and
//! recording registers all come from the input.
//!
//! Asserts: decoding is stable (a record encodes to quadwords that decode
//! to the same record) and every record renders; `read_faults` touches no
//! register outside the unit's 4 KiB register block (all the kernel maps),
//! reports each recording register at most once with an index below
//! CAP.NFR, and clears (writes F to) every register it reports.
#![no_main]

use iommu::Mmio;
use iommu::vtd::regs::{FaultRecord, offset};
use iommu::vtd::{REGISTER_BLOCK_BYTES as BLOCK, VtdUnit};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// A register block with the input's values; every write is recorded.
struct Registers {
    values: BTreeMap<usize, u32>,
    writes: RefCell<Vec<(usize, u32)>>,
}

impl Mmio for Registers {
    fn read32(&self, at: usize) -> u32 {
        assert!(
            at + 4 <= BLOCK,
            "read at {at:#x}, outside the register block"
        );
        self.values.get(&at).copied().unwrap_or(0)
    }
    fn write32(&self, at: usize, value: u32) {
        assert!(
            at + 4 <= BLOCK,
            "write at {at:#x}, outside the register block"
        );
        self.writes.borrow_mut().push((at, value));
    }
}

fuzz_target!(|input: (u32, u64, u64, u64, u32, Vec<(u16, u32)>)| {
    let (index, low, high, capability, status, registers) = input;
    if let Some(record) = FaultRecord::decode(index, low, high) {
        let _ = record.to_string();
        let (low, high) = record.encode();
        assert_eq!(FaultRecord::decode(index, low, high), Some(record));
    }

    let mut values: BTreeMap<usize, u32> = registers
        .into_iter()
        .map(|(at, value)| ((usize::from(at) % BLOCK) & !3, value))
        .collect();
    values.insert(offset::CAP, capability as u32);
    values.insert(offset::CAP + 4, (capability >> 32) as u32);
    values.insert(offset::FSTS, status);
    let block = Registers {
        values,
        writes: RefCell::new(Vec::new()),
    };
    let mut unit = VtdUnit::new(&block);
    let nfr = unit.capability().nfr();
    let records = unit.read_faults();
    let mut seen = Vec::new();
    let base = unit.capability().fault_recording_offset();
    for record in records.iter() {
        let _ = record.to_string();
        assert!(record.index < nfr, "{record:?}, NFR {nfr}");
        assert!(!seen.contains(&record.index), "{record:?} twice");
        seen.push(record.index);
        let register = base + 16 * record.index as usize;
        assert!(
            block.writes.borrow().contains(&(register + 12, 1 << 31)),
            "{record:?} not cleared"
        );
    }
});
