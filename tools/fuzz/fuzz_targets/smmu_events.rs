//! Fuzz target `smmu_events`: SMMUv3 event records (SMMUv3 7.3), written
//! by the SMMU into memory: `Event::decode` and its rendering, and the
//! event queue's consumer (`EventQueue::drain`) with any EVENTQ_PROD value
//! and any queue contents.
//!
//! Asserts: decoding is stable (an event encodes to words that decode to
//! the same event) and every event renders; a drain reads at most the
//! queue's capacity whatever PROD says, publishes a CONS inside the
//! queue's index range (wrap bit included) and keeps the overflow flag it
//! acknowledged.
#![no_main]

use iommu::Mmio;
use iommu::model::{SimFrames, SimMemory};
use iommu::smmuv3::queue::{Event, EventDrain, EventQueue};
use iommu::smmuv3::regs::offset;
use libfuzzer_sys::fuzz_target;
use std::cell::{Cell, RefCell};

/// The SMMU's registers as the queue sees them: PROD from the input, CONS
/// recorded.
struct Registers {
    producer: Cell<u32>,
    consumer_writes: RefCell<Vec<u32>>,
}

impl Mmio for Registers {
    fn read32(&self, at: usize) -> u32 {
        assert_eq!(at, offset::EVENTQ_PROD, "the drain reads only EVENTQ_PROD");
        self.producer.get()
    }
    fn write32(&self, at: usize, value: u32) {
        assert_eq!(at, offset::EVENTQ_CONS, "the drain writes only EVENTQ_CONS");
        self.consumer_writes.borrow_mut().push(value);
    }
}

/// One record's words, EVENTQS, successive PROD values, and queue slots
/// with their records.
type Input = ([u64; 4], u8, Vec<u32>, Vec<(u8, [u64; 4])>);

fuzz_target!(|input: Input| {
    let (words, eventqs, producers, records) = input;
    let event = Event::decode(words);
    let _ = event.to_string();
    assert_eq!(Event::decode(event.encode()), event);

    let memory = SimMemory::new(1 << 20);
    let mut frames = SimFrames::new(&memory, 0, 1 << 20);
    let mut queue = EventQueue::new(&mut frames, u32::from(eventqs % 32)).expect("one frame");
    let base = queue.base_register() & 0x000f_ffff_ffff_ffe0;
    for (slot, record) in records {
        let at = base + 32 * u64::from(slot % 128);
        for (i, word) in record.iter().enumerate() {
            iommu::PhysMem::write_u64(&memory, at + 8 * i as u64, *word);
        }
    }
    let capacity = queue.capacity();
    let registers = Registers {
        producer: Cell::new(0),
        consumer_writes: RefCell::new(Vec::new()),
    };
    for producer in producers.into_iter().take(16) {
        registers.producer.set(producer);
        let mut drain = EventDrain::default();
        queue.drain(&registers, &memory, &mut drain);
        assert!(drain.events.len() + drain.events.dropped <= capacity as usize);
        let written = *registers
            .consumer_writes
            .borrow()
            .last()
            .expect("every drain publishes CONS");
        assert!(written & 0x7fff_ffff < 2 * capacity, "CONS {written:#x}");
        assert_eq!(
            written & 1 << 31,
            producer & 1 << 31,
            "overflow acknowledged"
        );
        for event in drain.events.iter() {
            let _ = event.to_string();
        }
    }
});
