//! The unit's own tables charged to the IoSpace whose attach needed them
//! (kernel README, "Table memory"): VT-d context tables, PASID
//! directories and tables, SMMUv3 level-2 stream tables are taken from
//! the attaching IoSpace's reservation, recorded in
//! [`UnitTables`], and freed and refunded when their last entry goes —
//! the way `io_space.rs` does it. So an attach-detach cycle leaves every
//! budget as it was, and one IoSpace's draining never changes another's.

use super::common::MIB;
use crate::budget::{Account, Budget, BudgetError, Charged, Ledger, Recording, UnitTables};
use crate::model::smmu::{Outcome, SmmuRequest};
use crate::model::smmu_device::SimSmmu;
use crate::model::vtd::Request;
use crate::model::vtd_device::{QEMU_CAP, QEMU_ECAP, SimVtd};
use crate::model::{Access, SimFrames, SimMemory};
use crate::smmuv3::ste::Stage2Config;
use crate::smmuv3::{BlockPolicy, Smmu};
use crate::vtd::VtdUnit;
use crate::vtd::regs::RootTableMode;
use crate::vtd::tables::{PasidConfig, SecondStageLevels};
use crate::{FrameAllocator, PhysAddr, PhysMem};

/// QEMU `x-scalable-mode=on,x-pasid-mode=on` with 20 PASID bits (PSS=19).
const PASID_ECAP: u64 = QEMU_ECAP | 1 << 43 | 1 << 46 | 1 << 31 | 1 << 40 | 19 << 35;
const BUDGET: Budget = Budget {
    per_space: 16,
    unit_floor: 4,
};

/// The kernel's pool: free pages, the ledger, the unit-table record.
struct Pool<'m> {
    memory: &'m SimMemory,
    free: std::vec::Vec<PhysAddr>,
    ledger: Ledger<u32, 4>,
    tables: UnitTables<u32, 32>,
}

struct FreeList<'a>(&'a SimMemory, &'a mut std::vec::Vec<PhysAddr>);

impl FrameAllocator for FreeList<'_> {
    fn alloc_zeroed_frame(&mut self) -> Option<PhysAddr> {
        let page = self.1.pop()?;
        self.0.zero(page, 4096);
        Some(page)
    }
}

impl<'m> Pool<'m> {
    fn new(memory: &'m SimMemory) -> Self {
        let free: std::vec::Vec<PhysAddr> = (0..40).map(|i| 64 * MIB + 4096 * i).collect();
        let mut ledger = Ledger::new(BUDGET);
        ledger.add_pages(free.len());
        ledger.reserve(1).unwrap();
        ledger.reserve(2).unwrap();
        Self {
            memory,
            free,
            ledger,
            tables: UnitTables::new(),
        }
    }

    /// Runs an attach with pages charged to `space` and records them.
    fn attach<T>(
        &mut self,
        space: u32,
        write: impl FnOnce(&mut Recording<'_, Charged<'_, FreeList<'_>, u32, 4>>) -> T,
    ) -> T {
        let mut list = FreeList(self.memory, &mut self.free);
        let mut charged = Charged::new(&mut list, &mut self.ledger, Account::Space(space));
        let mut frames = Recording::new(&mut charged);
        let result = write(&mut frames);
        let taken: std::vec::Vec<PhysAddr> = frames.taken().collect();
        for page in taken {
            self.tables.record(page, Account::Space(space)).unwrap();
        }
        result
    }

    fn give_back(&mut self, pages: impl IntoIterator<Item = PhysAddr>) {
        for page in pages {
            let payer = self.tables.take(page).unwrap();
            self.ledger.refund(payer).unwrap();
            self.free.push(page);
        }
    }

    fn available(&self) -> [usize; 2] {
        [1, 2].map(|s| self.ledger.available(Account::Space(s)))
    }

    fn check_invariant(&self) {
        assert_eq!(self.ledger.free_pages(), self.free.len());
    }
}

fn vtd_config(domain: u16) -> PasidConfig {
    PasidConfig::SecondStage {
        domain,
        table: 0x100_0000,
        levels: SecondStageLevels::Four,
    }
}

/// Attaches (`requester`, `pasid`) to space 1's domain and detaches it.
fn vtd_cycle(
    pool: &mut Pool<'_>,
    unit: &mut VtdUnit<&SimVtd<'_>>,
    memory: &SimMemory,
    requester: u16,
    pasids: &[u32],
) -> Result<(), ()> {
    for &pasid in pasids {
        pool.attach(1, |frames| {
            unit.set_pasid_entry(memory, frames, requester, pasid, Some(vtd_config(2)))
        })
        .map_err(|_| ())?;
    }
    for &pasid in pasids {
        let mut none = SimFrames::new(memory, 0, 0);
        unit.set_pasid_entry(memory, &mut none, requester, pasid, None)
            .unwrap();
        let tables = &pool.tables;
        let released = unit
            .release_tables(memory, requester, pasid, |p| tables.owns(p))
            .unwrap();
        let pages: std::vec::Vec<PhysAddr> = released.pages().collect();
        pool.give_back(pages);
    }
    Ok(())
}

#[test]
fn vtd_attach_detach_cycles_leave_the_budgets_as_they_were() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, PASID_ECAP, true);
    let mut boot = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut boot, RootTableMode::Scalable)
        .unwrap();
    let mut pool = Pool::new(&memory);
    let before = pool.available();
    // PASIDs 64 apart need a PASID table each; requesters on other buses
    // and bus halves need context tables and directories.
    for (i, requester) in [0x100u16, 0x180, 0x200, 0x281].into_iter().enumerate() {
        let pasids = [0, 64, 128 + i as u32];
        vtd_cycle(&mut pool, &mut unit, &memory, requester, &pasids).unwrap();
        assert_eq!(pool.available(), before, "after requester {requester:#x}");
        pool.check_invariant();
    }
    assert_eq!(pool.tables.paid_by(Account::Space(1)), 0);
    // Hundreds of cycles: space 1 never runs out, space 2 never changes.
    for requester in 0x300..0x500u16 {
        vtd_cycle(&mut pool, &mut unit, &memory, requester, &[0, 64]).unwrap();
        assert_eq!(pool.available()[1], before[1]);
    }
    assert_eq!(pool.available(), before);
    // The freed path is gone: the device is blocked at the root entry.
    let request = Request {
        source_id: 0x100,
        pasid: None,
        address: 0x1000,
        access: Access::Read,
    };
    assert!(device.dma(request).is_err());
}

#[test]
fn vtd_a_space_that_keeps_its_tables_runs_out_alone() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, PASID_ECAP, true);
    let mut boot = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut boot, RootTableMode::Scalable)
        .unwrap();
    let mut pool = Pool::new(&memory);
    let before = pool.available();
    // Space 1 attaches PASIDs 64 apart and never detaches.
    let mut attached = 0;
    let stopped = loop {
        let pasid = 64 * attached;
        let result = pool.attach(1, |frames| {
            unit.set_pasid_entry(&memory, frames, 0x100, pasid, Some(vtd_config(2)))
        });
        match result {
            Ok(()) => attached += 1,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(stopped, crate::vtd::VtdError::OutOfMemory { .. }),
        "{stopped:?}"
    );
    assert_eq!(pool.available()[0], 0);
    assert_eq!(pool.available()[1], before[1]);
    assert_eq!(
        pool.ledger.charge(Account::Space(1)),
        Err(BudgetError::Exhausted)
    );
    // Space 2 still attaches.
    pool.attach(2, |frames| {
        unit.set_pasid_entry(&memory, frames, 0x200, 0, Some(vtd_config(3)))
    })
    .unwrap();
    pool.check_invariant();
}

#[test]
fn smmu_level2_stream_tables_are_freed_and_refunded() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut boot = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut boot, BlockPolicy::RecordFault, 0..256)
        .unwrap();
    let mut pool = Pool::new(&memory);
    let before = pool.available();
    let config = Stage2Config {
        vmid: 2,
        table: 0x100_0000,
        ipa_bits: 40,
        output_bits: 44,
    };
    for group in 4..300u32 {
        let sid = group << 6;
        pool.attach(1, |frames| {
            smmu.attach_stage2(&memory, frames, sid, &config)
        })
        .unwrap();
        assert_eq!(pool.available()[0], before[0] - 1);
        let mut none = SimFrames::new(&memory, 0, 0);
        smmu.block_stream(&memory, &mut none, sid).unwrap();
        let tables = &pool.tables;
        let released = smmu
            .release_stream_table(&memory, sid, |p| tables.owns(p))
            .unwrap();
        pool.give_back(released);
        assert_eq!(pool.available(), before);
        let request = SmmuRequest {
            stream_id: sid,
            substream_id: None,
            address: 0x1000,
            access: Access::Read,
        };
        assert!(!matches!(device.dma(request), Outcome::Translated(_)));
    }
    // Boot-time level-2 arrays are not the pool's: never unlinked.
    let mut none = SimFrames::new(&memory, 0, 0);
    smmu.block_stream(&memory, &mut none, 0x10).unwrap();
    let tables = &pool.tables;
    assert_eq!(
        smmu.release_stream_table(&memory, 0x10, |p| tables.owns(p)),
        Ok(None)
    );
    pool.check_invariant();
}

#[test]
fn a_shared_table_outliving_its_payer_passes_to_the_unit() {
    let mut ledger: Ledger<u32, 4> = Ledger::new(BUDGET);
    ledger.add_pages(40);
    ledger.reserve(1).unwrap();
    ledger.reserve(2).unwrap();
    let mut tables: UnitTables<u32, 8> = UnitTables::new();
    // Space 1 created a context table that space 2's device uses too.
    ledger.charge(Account::Space(1)).unwrap();
    tables.record(0x5000, Account::Space(1)).unwrap();
    let free_before = ledger.free_pages();
    let mut retired = Ok(0);
    let moved = tables.hand_to_unit(&mut ledger, 1, |ledger| retired = ledger.retire(1));
    assert_eq!((moved, retired), (1, Ok(0)));
    // The page is still in use (now the unit's); the rest of space 1's
    // reservation is unreserved again.
    assert_eq!(ledger.free_pages(), free_before);
    assert_eq!(
        ledger.available(Account::Unit),
        40 - 2 * BUDGET.per_space + BUDGET.per_space - 1
    );
    assert_eq!(ledger.available(Account::Space(2)), BUDGET.per_space);
    // Freed later, it is refunded to the unit.
    assert_eq!(tables.take(0x5000), Some(Account::Unit));
    ledger.refund(Account::Unit).unwrap();
    assert_eq!(ledger.free_pages(), free_before + 1);
}
