//! Table memory charged to the IoSpace it serves: one pool of pages, a
//! fixed reservation per IoSpace, so that no IoSpace's use of IO tables
//! can make another's fail.
//!
//! The kernel keeps one pool of table pages per unit (`io_space.rs`).
//! Every page it takes for an IoSpace — stage-2 intermediate tables, VT-d
//! shadow tables of its nests, SMMUv3 CD pages — is charged to that
//! IoSpace's [`Account::Space`]; so are the unit's own structures
//! (context and PASID tables, level-2 stream tables) an attach needs,
//! recorded with their payer in [`UnitTables`] and refunded when their
//! last entry goes. Such a table still shared when its payer dies passes
//! to [`Account::Unit`].
//!
//! ```text
//!  pool (total pages) = unreserved  +  per_space × live IoSpaces
//!                       │                 │
//!                       │                 └─ each: used (tables it holds) + left
//!                       └─ the unit draws here; reservations leave it unit_floor
//!                          pages, counting those it already holds
//! ```
//!
//! - [`Ledger::reserve`] sets aside [`Budget::per_space`] pages when an
//!   IoSpace is created, and refuses (the IoSpace is not created) unless
//!   the unit keeps [`Budget::unit_floor`] pages (unreserved ones and
//!   those it already holds).
//! - [`Ledger::charge`] takes one page of an account's reservation and
//!   refuses when it is used up: the IoSpace that wants more tables runs
//!   out itself, and no other account changes.
//! - [`Ledger::refund`] gives a freed page back to its account.
//! - [`Ledger::retire`] ends a dead IoSpace's reservation: what is left of
//!   it returns to the unreserved pages (pages still charged were not
//!   freed: they stay out of the pool and are reported).
//!
//! The ledger counts; it holds no pages. [`Charged`] puts it in front of
//! a [`FrameAllocator`], so that the page-table and shadow code allocate
//! through it unchanged. Invariant (checked by the tests): the pages the
//! allocator holds equal [`Ledger::free_pages`].

use crate::{FrameAllocator, PhysAddr};

/// Who pays for a table page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Account<S> {
    /// An IoSpace (the kernel's object id): its stage 2, its shadows, its
    /// CDs.
    Space(S),
    /// The unit itself: structures shared by all IoSpaces.
    Unit,
}

/// How the pool is divided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Pages reserved for each IoSpace when it is created: the most its
    /// tables may ever hold.
    pub per_space: usize,
    /// Pages no reservation may take from the unit, counting those it
    /// already holds: the unit's own structures draw from the unreserved
    /// pages.
    pub unit_floor: usize,
}

/// Why a reservation or a charge was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetError {
    /// The pool cannot set aside another IoSpace's reservation (too many
    /// IoSpaces live).
    PoolReserved,
    /// The ledger has no record left for another IoSpace.
    LedgerFull,
    /// The account has no page left: an IoSpace used its whole
    /// reservation, or the unit its unreserved pages.
    Exhausted,
    /// The IoSpace holds no reservation.
    UnknownSpace,
}

/// The variant's name, as `Debug` prints it (the kernel's console prints
/// it without `core::fmt`).
impl ktext::Text for BudgetError {
    fn write(&self, out: &mut dyn ktext::Sink) {
        out.str(match self {
            BudgetError::PoolReserved => "PoolReserved",
            BudgetError::LedgerFull => "LedgerFull",
            BudgetError::Exhausted => "Exhausted",
            BudgetError::UnknownSpace => "UnknownSpace",
        });
    }
}

/// One IoSpace's reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reservation<S> {
    space: S,
    /// Pages of the reservation its tables hold now.
    used: usize,
    /// The most they ever held.
    peak: usize,
}

/// The accounts of one pool: up to `N` IoSpaces' reservations and the
/// unreserved rest.
#[derive(Clone, Debug)]
pub struct Ledger<S, const N: usize> {
    reservations: [Option<Reservation<S>>; N],
    /// Pool pages no IoSpace reserved.
    unreserved: usize,
    /// Pages the unit's own structures hold (they count towards its floor).
    unit_used: usize,
    budget: Budget,
}

impl<S: Copy + Eq, const N: usize> Ledger<S, N> {
    /// A ledger of an empty pool.
    pub const fn new(budget: Budget) -> Self {
        Self {
            reservations: [None; N],
            unreserved: 0,
            unit_used: 0,
            budget,
        }
    }

    /// The division this ledger enforces.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// `pages` new pages went into the pool (at boot): unreserved.
    pub fn add_pages(&mut self, pages: usize) {
        self.unreserved += pages;
    }

    /// How many IoSpaces a pool of `pool_pages` pages can hold at once.
    pub fn spaces_for(budget: Budget, pool_pages: usize) -> usize {
        (pool_pages.saturating_sub(budget.unit_floor) / budget.per_space.max(1)).min(N)
    }

    fn reservation(&self, space: S) -> Option<&Reservation<S>> {
        self.reservations
            .iter()
            .flatten()
            .find(|r| r.space == space)
    }

    fn reservation_mut(&mut self, space: S) -> Option<&mut Reservation<S>> {
        self.reservations
            .iter_mut()
            .flatten()
            .find(|r| r.space == space)
    }

    /// Sets aside [`Budget::per_space`] pages for a new IoSpace (nothing
    /// more if it already holds a reservation). Refused, changing
    /// nothing, when the unreserved pages and those the unit already holds
    /// would fall below [`Budget::unit_floor`], or the ledger is full.
    pub fn reserve(&mut self, space: S) -> Result<(), BudgetError> {
        if self.reservation(space).is_some() {
            return Ok(());
        }
        let left = self.unreserved.checked_sub(self.budget.per_space);
        if left.is_none_or(|left| left + self.unit_used < self.budget.unit_floor) {
            return Err(BudgetError::PoolReserved);
        }
        let free = self
            .reservations
            .iter_mut()
            .find(|r| r.is_none())
            .ok_or(BudgetError::LedgerFull)?;
        *free = Some(Reservation {
            space,
            used: 0,
            peak: 0,
        });
        self.unreserved -= self.budget.per_space;
        Ok(())
    }

    /// Whether `count` [`reserve`](Ledger::reserve)s for new IoSpaces (none
    /// holding a reservation yet) would all succeed, changing nothing: the
    /// error the first failing one would return.
    pub fn can_reserve(&self, count: usize) -> Result<(), BudgetError> {
        let free = self.reservations.iter().filter(|r| r.is_none()).count();
        for made in 1..=count {
            let taken = self.budget.per_space.checked_mul(made);
            let left = taken.and_then(|taken| self.unreserved.checked_sub(taken));
            if left.is_none_or(|left| left + self.unit_used < self.budget.unit_floor) {
                return Err(BudgetError::PoolReserved);
            }
            if made > free {
                return Err(BudgetError::LedgerFull);
            }
        }
        Ok(())
    }

    /// Pages `account` may still take (0 for an IoSpace without a
    /// reservation).
    pub fn available(&self, account: Account<S>) -> usize {
        match account {
            Account::Unit => self.unreserved,
            Account::Space(space) => self
                .reservation(space)
                .map_or(0, |r| self.budget.per_space - r.used),
        }
    }

    /// Pages an IoSpace's tables hold now, and the most they ever held.
    pub fn usage(&self, space: S) -> Option<(usize, usize)> {
        self.reservation(space).map(|r| (r.used, r.peak))
    }

    /// Charges one page to `account`. Refused, changing nothing, when the
    /// account has none left: no other account is ever charged instead.
    pub fn charge(&mut self, account: Account<S>) -> Result<(), BudgetError> {
        let per_space = self.budget.per_space;
        match account {
            Account::Unit => {
                self.unreserved = self
                    .unreserved
                    .checked_sub(1)
                    .ok_or(BudgetError::Exhausted)?;
                self.unit_used += 1;
            }
            Account::Space(space) => {
                let r = self
                    .reservation_mut(space)
                    .ok_or(BudgetError::UnknownSpace)?;
                if r.used >= per_space {
                    return Err(BudgetError::Exhausted);
                }
                r.used += 1;
                r.peak = r.peak.max(r.used);
            }
        }
        Ok(())
    }

    /// One page charged to `account` went back to the pool.
    /// `UnknownSpace` for an IoSpace without a reservation (the page is
    /// then counted as unreserved, so the pool's count stays right);
    /// `Exhausted` if the account had no page charged (a double free: the
    /// page is counted as unreserved too).
    pub fn refund(&mut self, account: Account<S>) -> Result<(), BudgetError> {
        let refunded = match account {
            Account::Unit if self.unit_used > 0 => {
                self.unit_used -= 1;
                Ok(())
            }
            Account::Unit => Err(BudgetError::Exhausted),
            Account::Space(space) => match self.reservation_mut(space) {
                None => Err(BudgetError::UnknownSpace),
                Some(r) if r.used == 0 => Err(BudgetError::Exhausted),
                Some(r) => {
                    r.used -= 1;
                    return Ok(());
                }
            },
        };
        self.unreserved += 1;
        refunded
    }

    /// Ends a dead IoSpace's reservation (after its tables were freed and
    /// refunded): the unused part returns to the unreserved pages.
    /// Returns how many pages were still charged to it — pages the caller
    /// did not give back, which stay out of the pool. `UnknownSpace` if it
    /// held no reservation.
    pub fn retire(&mut self, space: S) -> Result<usize, BudgetError> {
        let slot = self
            .reservations
            .iter_mut()
            .find(|r| r.is_some_and(|r| r.space == space))
            .ok_or(BudgetError::UnknownSpace)?;
        let used = slot.take().map_or(0, |r| r.used);
        self.unreserved += self.budget.per_space - used;
        Ok(used)
    }

    /// Pages the pool must hold free: the unreserved ones and what each
    /// reservation has left.
    pub fn free_pages(&self) -> usize {
        self.unreserved
            + self
                .reservations
                .iter()
                .flatten()
                .map(|r| self.budget.per_space - r.used)
                .sum::<usize>()
    }

    /// Live reservations.
    pub fn spaces(&self) -> usize {
        self.reservations.iter().flatten().count()
    }
}

/// A [`FrameAllocator`] whose every page is charged to one account: what
/// the page-table, shadow and device-entry code allocate through.
pub struct Charged<'a, A, S, const N: usize> {
    frames: &'a mut A,
    ledger: &'a mut Ledger<S, N>,
    account: Account<S>,
}

impl<'a, A: FrameAllocator, S: Copy + Eq, const N: usize> Charged<'a, A, S, N> {
    /// `frames` seen by `account` of `ledger`.
    pub fn new(frames: &'a mut A, ledger: &'a mut Ledger<S, N>, account: Account<S>) -> Self {
        Self {
            frames,
            ledger,
            account,
        }
    }
}

impl<A: FrameAllocator, S: Copy + Eq, const N: usize> FrameAllocator for Charged<'_, A, S, N> {
    /// A page charged to the account, or `None` when the account has none
    /// left (or the pool, against the ledger, is empty: the charge is then
    /// taken back).
    fn alloc_zeroed_frame(&mut self) -> Option<PhysAddr> {
        self.ledger.charge(self.account).ok()?;
        let page = self.frames.alloc_zeroed_frame();
        if page.is_none() {
            let _ = self.ledger.refund(self.account);
        }
        page
    }
}

/// Most pages one attach or detach of the unit's own tables allocates
/// or frees: VT-d scalable mode, a context table, a PASID directory and
/// a PASID table.
pub const UNIT_TABLES_PER_ENTRY: usize = 3;

/// A [`FrameAllocator`] that remembers the pages it handed out (at most
/// [`UNIT_TABLES_PER_ENTRY`]; more are refused), so that the caller can
/// record who paid for the unit's tables one attach created.
pub struct Recording<'a, A> {
    frames: &'a mut A,
    taken: [Option<PhysAddr>; UNIT_TABLES_PER_ENTRY],
}

impl<'a, A: FrameAllocator> Recording<'a, A> {
    /// `frames`, remembering what it hands out.
    pub fn new(frames: &'a mut A) -> Self {
        Self {
            frames,
            taken: [None; UNIT_TABLES_PER_ENTRY],
        }
    }

    /// The pages handed out so far.
    pub fn taken(&self) -> impl Iterator<Item = PhysAddr> + '_ {
        self.taken.iter().flatten().copied()
    }
}

impl<A: FrameAllocator> FrameAllocator for Recording<'_, A> {
    fn alloc_zeroed_frame(&mut self) -> Option<PhysAddr> {
        let free = self.taken.iter_mut().find(|t| t.is_none())?;
        let page = self.frames.alloc_zeroed_frame()?;
        *free = Some(page);
        Some(page)
    }
}

/// The unit's own table pages (context tables, PASID directories and
/// tables, level-2 stream tables) taken from the pool after boot, each
/// with the account that paid for it: the IoSpace whose attach needed
/// it. A page is given back, and refunded to that account, when its last
/// entry goes; a page still used by other IoSpaces' devices when its
/// payer dies passes to [`Account::Unit`] (each such page holds a live
/// entry of another IoSpace, so there are never more of them than
/// attachments).
#[derive(Clone, Debug)]
pub struct UnitTables<S, const N: usize> {
    pages: [Option<(PhysAddr, Account<S>)>; N],
}

impl<S: Copy + Eq, const N: usize> UnitTables<S, N> {
    /// No pages.
    pub const fn new() -> Self {
        Self { pages: [None; N] }
    }

    /// Records `page`, paid by `payer`. `Err` when the record is full
    /// (the page is then never freed).
    pub fn record(&mut self, page: PhysAddr, payer: Account<S>) -> Result<(), PhysAddr> {
        match self.pages.iter_mut().find(|p| p.is_none()) {
            Some(free) => {
                *free = Some((page, payer));
                Ok(())
            }
            None => Err(page),
        }
    }

    /// Whether `page` is a recorded pool page (others, e.g. boot-time
    /// tables, are never freed).
    pub fn owns(&self, page: PhysAddr) -> bool {
        self.pages.iter().flatten().any(|&(p, _)| p == page)
    }

    /// Forgets `page` and returns who paid for it.
    pub fn take(&mut self, page: PhysAddr) -> Option<Account<S>> {
        let slot = self
            .pages
            .iter_mut()
            .find(|p| p.is_some_and(|(p, _)| p == page))?;
        slot.take().map(|(_, payer)| payer)
    }

    /// Pages `payer` paid for that are still in use.
    pub fn paid_by(&self, payer: Account<S>) -> usize {
        self.pages
            .iter()
            .flatten()
            .filter(|&&(_, p)| p == payer)
            .count()
    }

    /// `space` died: its pages still in use pass to the unit, refunded
    /// to `space` and charged to [`Account::Unit`] in `ledger` before and
    /// after [`Ledger::retire`] — call it, with `retire` in between as
    /// `between`. Returns how many passed.
    pub fn hand_to_unit<const M: usize>(
        &mut self,
        ledger: &mut Ledger<S, M>,
        space: S,
        between: impl FnOnce(&mut Ledger<S, M>),
    ) -> usize {
        let mut moved = 0;
        for (_, payer) in self.pages.iter_mut().flatten() {
            if *payer == Account::Space(space) {
                let _ = ledger.refund(Account::Space(space));
                *payer = Account::Unit;
                moved += 1;
            }
        }
        // The refunds counted the pages free; once the reservation is
        // retired, the unit takes them from the unreserved pages.
        between(ledger);
        for _ in 0..moved {
            let _ = ledger.charge(Account::Unit);
        }
        moved
    }
}

impl<S: Copy + Eq, const N: usize> Default for UnitTables<S, N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SimFrames, SimMemory};
    use crate::pagetable::{PageSize, PageTable, Perms};
    use crate::smmuv3::pagetable::{Stage2Format, levels_4k};
    use proptest::prelude::*;

    const BUDGET: Budget = Budget {
        per_space: 8,
        unit_floor: 4,
    };

    #[test]
    fn reservations_stop_at_the_unit_floor() {
        let mut ledger: Ledger<u32, 8> = Ledger::new(BUDGET);
        ledger.add_pages(8 * 3 + 4 + 7);
        assert_eq!(Ledger::<u32, 8>::spaces_for(BUDGET, 8 * 3 + 4 + 7), 3);
        for space in 1..=3 {
            assert_eq!(ledger.reserve(space), Ok(()));
        }
        assert_eq!(ledger.reserve(4), Err(BudgetError::PoolReserved));
        assert_eq!(ledger.available(Account::Unit), 4 + 7);
        // Asking again for a live IoSpace reserves nothing more.
        assert_eq!(ledger.reserve(2), Ok(()));
        assert_eq!(ledger.available(Account::Unit), 11);
        // A dead IoSpace's reservation lets the next one in.
        assert_eq!(ledger.retire(2), Ok(0));
        assert_eq!(ledger.reserve(4), Ok(()));
        assert_eq!(ledger.retire(2), Err(BudgetError::UnknownSpace));
    }

    #[test]
    fn pages_the_unit_holds_count_towards_its_floor() {
        let mut ledger: Ledger<u32, 8> = Ledger::new(BUDGET);
        ledger.add_pages(8 * 2 + 4);
        // The unit took three pages before the IoSpaces came: both still fit.
        for _ in 0..3 {
            ledger.charge(Account::Unit).unwrap();
        }
        assert_eq!(ledger.reserve(1), Ok(()));
        assert_eq!(ledger.reserve(2), Ok(()));
        assert_eq!(ledger.available(Account::Unit), 1);
        // Beyond its floor the unit takes nothing reserved.
        ledger.charge(Account::Unit).unwrap();
        assert_eq!(ledger.charge(Account::Unit), Err(BudgetError::Exhausted));
        assert_eq!(ledger.available(Account::Space(1)), 8);
        // A page the unit frees is unreserved again.
        ledger.refund(Account::Unit).unwrap();
        assert_eq!(ledger.available(Account::Unit), 1);
        assert_eq!(ledger.free_pages(), 8 * 2 + 1);
    }

    #[test]
    fn a_full_ledger_refuses_and_changes_nothing() {
        let mut ledger: Ledger<u32, 2> = Ledger::new(BUDGET);
        ledger.add_pages(100);
        ledger.reserve(1).unwrap();
        ledger.reserve(2).unwrap();
        assert_eq!(ledger.reserve(3), Err(BudgetError::LedgerFull));
        assert_eq!(ledger.available(Account::Unit), 100 - 16);
        assert_eq!(ledger.free_pages(), 100);
    }

    proptest! {
        /// `can_reserve(n)` answers what `n` reserves for new IoSpaces
        /// would: all `Ok`, or the first one's error.
        #[test]
        fn can_reserve_agrees_with_reserving(
            pages in 0usize..80,
            unit_pages in 0usize..6,
            live in 0u32..4,
            count in 0usize..8,
        ) {
            let mut ledger: Ledger<u32, 4> = Ledger::new(BUDGET);
            ledger.add_pages(pages);
            for _ in 0..unit_pages {
                let _ = ledger.charge(Account::Unit);
            }
            for space in 0..live {
                let _ = ledger.reserve(space);
            }
            let before = ledger.free_pages();
            let answer = ledger.can_reserve(count);
            prop_assert_eq!(ledger.free_pages(), before);
            let mut reserved = Ok(());
            for space in 100..100 + count as u32 {
                if let Err(e) = ledger.reserve(space) {
                    reserved = Err(e);
                    break;
                }
            }
            prop_assert_eq!(answer, reserved);
        }
    }

    #[test]
    fn one_space_runs_out_alone() {
        let mut ledger: Ledger<u32, 8> = Ledger::new(BUDGET);
        ledger.add_pages(8 * 2 + 4);
        ledger.reserve(1).unwrap();
        ledger.reserve(2).unwrap();
        for _ in 0..8 {
            ledger.charge(Account::Space(1)).unwrap();
        }
        assert_eq!(
            ledger.charge(Account::Space(1)),
            Err(BudgetError::Exhausted)
        );
        assert_eq!(ledger.available(Account::Space(2)), 8);
        assert_eq!(ledger.available(Account::Unit), 4);
        assert_eq!(ledger.charge(Account::Space(2)), Ok(()));
        assert_eq!(ledger.charge(Account::Unit), Ok(()));
        assert_eq!(ledger.usage(1), Some((8, 8)));
        // Freed pages come back to the IoSpace that paid for them.
        ledger.refund(Account::Space(1)).unwrap();
        assert_eq!(ledger.usage(1), Some((7, 8)));
        assert_eq!(ledger.charge(Account::Space(1)), Ok(()));
        // No reservation, no pages.
        assert_eq!(
            ledger.charge(Account::Space(9)),
            Err(BudgetError::UnknownSpace)
        );
        assert_eq!(ledger.available(Account::Space(9)), 0);
    }

    #[test]
    fn retiring_returns_what_was_not_leaked() {
        let mut ledger: Ledger<u32, 4> = Ledger::new(BUDGET);
        ledger.add_pages(20);
        ledger.reserve(1).unwrap();
        for _ in 0..3 {
            ledger.charge(Account::Space(1)).unwrap();
        }
        ledger.refund(Account::Space(1)).unwrap();
        // Two pages were never given back: they stay out of the pool.
        assert_eq!(ledger.retire(1), Ok(2));
        assert_eq!(ledger.free_pages(), 18);
        assert_eq!(ledger.available(Account::Unit), 18);
        // A page refunded to no reservation still counts as free.
        assert_eq!(
            ledger.refund(Account::Space(1)),
            Err(BudgetError::UnknownSpace)
        );
        assert_eq!(ledger.free_pages(), 19);
    }

    /// The attack of issue 12 item 3 against the real stage-2 code: one
    /// IoSpace maps in a fresh 1 GiB region again and again (each map
    /// needs new intermediate tables); it runs out of its own
    /// reservation, and another IoSpace still maps.
    #[test]
    fn stage2_tables_of_one_space_cannot_starve_another() {
        let mem = SimMemory::new(1 << 30);
        let mut frames = SimFrames::new(&mem, 0x10_0000, 0x20_0000);
        let mut pool = PoolOf(&mem, std::vec::Vec::new());
        for _ in 0..(BUDGET.per_space * 2 + BUDGET.unit_floor) {
            pool.1.push(frames.alloc_zeroed_frame().unwrap());
        }
        let mut ledger: Ledger<u32, 4> = Ledger::new(BUDGET);
        ledger.add_pages(pool.1.len());
        ledger.reserve(1).unwrap();
        ledger.reserve(2).unwrap();
        let format = Stage2Format::default();
        let table = |root| PageTable::at(root, format, levels_4k(44), 44).unwrap();
        let drainer = table(frames.alloc_zeroed_frame().unwrap());
        let victim = table(frames.alloc_zeroed_frame().unwrap());
        let mut regions = 0u64;
        loop {
            let mut charged = Charged::new(&mut pool, &mut ledger, Account::Space(1));
            let ipa = (regions + 1) << 30;
            let mapped = drainer.map(
                &mem,
                &mut charged,
                ipa,
                0x4000_0000,
                PageSize::Size4K,
                Perms::READ_WRITE,
            );
            if mapped.is_err() {
                break;
            }
            drainer.unmap(&mem, ipa).unwrap();
            regions += 1;
        }
        // Two new tables per region (one more for the first): four fit in 8.
        assert_eq!(regions, 3);
        assert_eq!(ledger.usage(1), Some((8, 8)));
        assert_eq!(ledger.available(Account::Unit), BUDGET.unit_floor);
        let mut charged = Charged::new(&mut pool, &mut ledger, Account::Space(2));
        victim
            .map(
                &mem,
                &mut charged,
                0x4000_0000,
                0x5000_0000,
                PageSize::Size4K,
                Perms::READ_WRITE,
            )
            .unwrap();
        assert_eq!(ledger.usage(2), Some((3, 3)));
        assert_eq!(pool.1.len(), ledger.free_pages());
        // The drainer dies: its tables return, and so does its reservation.
        let mut freed = 0;
        drainer.for_each_table(&mem, |page| {
            if page != drainer.root() {
                pool.1.push(page);
                ledger.refund(Account::Space(1)).unwrap();
                freed += 1;
            }
        });
        assert_eq!(freed, 8);
        assert_eq!(ledger.retire(1), Ok(0));
        assert_eq!(pool.1.len(), ledger.free_pages());
        assert_eq!(ledger.reserve(3), Ok(()));
    }

    /// Pages handed out from a list and zeroed, like the kernel's pool.
    struct PoolOf<'a>(&'a SimMemory, std::vec::Vec<PhysAddr>);

    impl FrameAllocator for PoolOf<'_> {
        fn alloc_zeroed_frame(&mut self) -> Option<PhysAddr> {
            let page = self.1.pop()?;
            crate::PhysMem::zero(self.0, page, crate::PAGE_SIZE);
            Some(page)
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Step {
        Reserve(u8),
        Charge(Option<u8>),
        Refund(Option<u8>),
        Retire(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        let space = 0u8..6;
        prop_oneof![
            space.clone().prop_map(Step::Reserve),
            proptest::option::of(space.clone()).prop_map(Step::Charge),
            proptest::option::of(space.clone()).prop_map(Step::Refund),
            space.prop_map(Step::Retire),
        ]
    }

    proptest! {
        /// Whatever the order of reservations, charges, refunds and
        /// retirements: no account goes above its budget, a refused step
        /// changes nothing, one IoSpace's steps never change another's
        /// available pages, and the pages counted free match the pages
        /// a real pool holds.
        #[test]
        fn accounts_stay_apart(steps in proptest::collection::vec(step(), 0..200)) {
            let mut ledger: Ledger<u8, 4> = Ledger::new(BUDGET);
            let total = 8 * 3 + 4 + 2;
            ledger.add_pages(total);
            // Pages in the pool, and pages held per account (unit: 255).
            let mut free = total;
            let mut held = [0usize; 256];
            let account = |s: Option<u8>| s.map_or(Account::Unit, Account::Space);
            let key = |s: Option<u8>| s.map_or(255, usize::from);
            for step in steps {
                let before = ledger.clone();
                let others = |l: &Ledger<u8, 4>, me: Option<u8>| {
                    (0u8..6)
                        .filter(|&s| Some(s) != me)
                        .map(|s| l.available(Account::Space(s)))
                        .collect::<std::vec::Vec<_>>()
                };
                let result = match step {
                    Step::Reserve(s) => ledger.reserve(s).map(|_| ()),
                    Step::Charge(s) => {
                        let charged = ledger.charge(account(s));
                        if charged.is_ok() {
                            prop_assert!(free > 0, "a charge the pool cannot serve");
                            free -= 1;
                            held[key(s)] += 1;
                        }
                        charged
                    }
                    Step::Refund(s) => {
                        if held[key(s)] == 0 {
                            continue;
                        }
                        held[key(s)] -= 1;
                        free += 1;
                        ledger.refund(account(s)).map(|_| ())
                    }
                    Step::Retire(s) => {
                        // The kernel frees a dead IoSpace's tables first.
                        while held[usize::from(s)] > 0 {
                            held[usize::from(s)] -= 1;
                            free += 1;
                            let _ = ledger.refund(Account::Space(s));
                        }
                        let retired = ledger.retire(s);
                        prop_assert!(matches!(retired, Ok(0) | Err(BudgetError::UnknownSpace)));
                        retired.map(|_| ())
                    }
                };
                match (step, result) {
                    (Step::Charge(_) | Step::Reserve(_), Err(_)) => {
                        prop_assert_eq!(ledger.free_pages(), before.free_pages());
                        prop_assert_eq!(ledger.spaces(), before.spaces());
                        for s in 0u8..6 {
                            prop_assert_eq!(
                                ledger.available(Account::Space(s)),
                                before.available(Account::Space(s))
                            );
                        }
                    }
                    (Step::Charge(me) | Step::Refund(me), _) => {
                        prop_assert_eq!(others(&ledger, me), others(&before, me));
                    }
                    _ => {}
                }
                prop_assert_eq!(ledger.free_pages(), free);
                prop_assert!(ledger.available(Account::Unit) <= total);
                for s in 0u8..6 {
                    if let Some((used, peak)) = ledger.usage(s) {
                        prop_assert!(used <= BUDGET.per_space && used <= peak);
                        prop_assert_eq!(used, held[usize::from(s)]);
                    }
                }
                if ledger.spaces() > 0 {
                    prop_assert!(ledger.available(Account::Unit) + held[255] >= BUDGET.unit_floor);
                }
            }
        }
    }
}
