//! The table pool: free pages for stage-2 tables, shadows, CDs and the
//! unit's own tables, and the ledger that charges each page to an IoSpace
//! (or the unit).

use crate::{POOL_PAGES, POOL_RESERVE, SPACES};
use abi::Error;
use caps::ObjectId;
use iommu::budget::{Account, BudgetError, Ledger};
use iommu::{FrameAllocator, PhysMem};

/// Free table pages, zeroed through `mem` when handed out.
pub(crate) struct FreePages<M> {
    pub(crate) mem: M,
    pub(crate) pages: heapless::Vec<u64, POOL_PAGES>,
}

impl<M: PhysMem> FrameAllocator for FreePages<M> {
    fn alloc_zeroed_frame(&mut self) -> Option<u64> {
        let page = self.pages.pop()?;
        // Pool pages are referenced by no table any more (they were freed
        // after their entries were cleared and invalidated).
        self.mem.zero(page, 4096);
        Some(page)
    }
}

/// The table pool: its free pages and who may take them.
pub(crate) struct Pool<M> {
    pub(crate) free: FreePages<M>,
    pub(crate) ledger: Ledger<ObjectId, SPACES>,
}

/// The pool as one account sees it: every page taken is charged to it.
pub(crate) type Charged<'a, M> = iommu::budget::Charged<'a, FreePages<M>, ObjectId, SPACES>;

/// Why a page could not go back to the pool.
pub(crate) enum GiveBack {
    /// The free list is full: the page is leaked.
    Full,
    /// No account was charged for it.
    NotCharged(BudgetError),
}

impl<M: PhysMem> Pool<M> {
    /// The pool seen by `space`: pages for its stage 2, shadows and CDs.
    pub(crate) fn of_space(&mut self, space: ObjectId) -> Charged<'_, M> {
        Charged::new(&mut self.free, &mut self.ledger, Account::Space(space))
    }

    /// The pool seen by the unit: pages for its context, PASID and stream
    /// tables.
    pub(crate) fn of_unit(&mut self) -> Charged<'_, M> {
        Charged::new(&mut self.free, &mut self.ledger, Account::Unit)
    }

    /// Returns `page`, charged to `account`, to the pool.
    pub(crate) fn give_back(
        &mut self,
        account: Account<ObjectId>,
        page: u64,
    ) -> Result<(), GiveBack> {
        if self.free.pages.push(page).is_err() {
            return Err(GiveBack::Full);
        }
        self.ledger.refund(account).map_err(GiveBack::NotCharged)
    }

    /// `TableMemoryExhausted` unless `account` has [`POOL_RESERVE`] pages
    /// left.
    pub(crate) fn ensure(&self, account: Account<ObjectId>) -> Result<(), Error> {
        if self.ledger.available(account) >= POOL_RESERVE {
            Ok(())
        } else {
            Err(Error::TableMemoryExhausted)
        }
    }
}
