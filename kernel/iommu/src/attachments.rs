//! The kernel's record of which requesters it pointed at which domain:
//! bounded per IoSpace, and what must be blocked when an invalidation fails.
//!
//! Two rules live here, so that the host tests exercise the code the
//! kernel runs (`io_space.rs` keeps one [`Attachments`] per unit):
//!
//! - **Shares.** The unit's tables (attachment records, nests) are fixed in
//!   size. One IoSpace may hold at most [`Share::attachments`] attached
//!   requesters and [`Share::nests`] nests (distinct stage-1 tables in use),
//!   so the holder of one IoSpace cannot fill the unit for everyone.
//!   [`Attachments::admit`] is asked before an attach changes anything.
//! - **Fail closed.** When an invalidation fails or times out, a device
//!   of the domains it was meant for may still translate through stale
//!   entries. [`Attachments::block`] clears the entries of every such
//!   attachment (the way a detach does) and marks it blocked; the record
//!   stays, so that the capability's later detach still finds it. If even
//!   those clears cannot be confirmed, the caller stops all DMA through the
//!   unit (SMMUv3: [`crate::smmuv3::Smmu::abort_all_dma`]).

/// One requester (or one PASID of it) the kernel pointed at a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attachment<S> {
    /// PCI requester id / StreamID.
    pub requester: u16,
    /// The PASID, for a PASID entry.
    pub pasid: Option<u32>,
    /// The IoSpace it translates through (the kernel's object id).
    pub space: S,
    /// The nest (index in the kernel's nest table) it uses, if nested.
    pub nest: Option<usize>,
    /// Its entry was cleared after a failed invalidation: the device is
    /// blocked although its capability still says attached.
    pub blocked: bool,
}

/// What a failed invalidation was meant to cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposed<'a, S> {
    /// Everything on the unit (a global invalidation, or too many domains).
    Everything,
    /// These IoSpaces' stage 2 (and so every nest built on them).
    Spaces(&'a [S]),
    /// One nest's stage 1 (a driver's `Invalidate`, a reused ASID or DID).
    Nest(usize),
    /// One requester's (or PASID's) entry (an attach or detach).
    Requester(u16, Option<u32>),
}

impl<S: Copy + Eq> Exposed<'_, S> {
    /// Whether `attachment` may still translate through what the failed
    /// invalidation was meant to remove.
    pub fn covers(&self, attachment: &Attachment<S>) -> bool {
        match *self {
            Exposed::Everything => true,
            Exposed::Spaces(spaces) => spaces.contains(&attachment.space),
            Exposed::Nest(index) => attachment.nest == Some(index),
            Exposed::Requester(requester, pasid) => {
                attachment.requester == requester && attachment.pasid == pasid
            }
        }
    }
}

/// How much of the unit one IoSpace may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// Most attached requesters (and PASIDs) per IoSpace.
    pub attachments: usize,
    /// Most nests (stage-1 tables in use by a device) per IoSpace.
    pub nests: usize,
}

/// Why an attach was refused before anything changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareError {
    /// The unit's attachment table (or nest table) is full.
    UnitFull,
    /// This IoSpace already uses its [`Share`].
    SpaceShareUsed,
}

/// Up to `N` attachments of one unit, at most `share` per IoSpace.
#[derive(Clone, Debug)]
pub struct Attachments<S, const N: usize> {
    records: [Option<Attachment<S>>; N],
    share: Share,
}

impl<S: Copy + Eq, const N: usize> Attachments<S, N> {
    /// An empty table.
    pub const fn new(share: Share) -> Self {
        Self {
            records: [None; N],
            share,
        }
    }

    /// The per-IoSpace share.
    pub fn share(&self) -> Share {
        self.share
    }

    /// The live attachments.
    pub fn iter(&self) -> impl Iterator<Item = &Attachment<S>> {
        self.records.iter().flatten()
    }

    /// How many attachments use `space`.
    pub fn of_space(&self, space: S) -> usize {
        self.iter().filter(|a| a.space == space).count()
    }

    /// How many distinct nests `space`'s attachments use.
    pub fn nests_of_space(&self, space: S) -> usize {
        let mut count = 0;
        for (i, a) in self.iter().enumerate() {
            let Some(nest) = a.nest.filter(|_| a.space == space) else {
                continue;
            };
            let seen = self
                .iter()
                .take(i)
                .any(|b| b.space == space && b.nest == Some(nest));
            if !seen {
                count += 1;
            }
        }
        count
    }

    /// Whether one more requester may attach to `space`, through a nest
    /// that does not exist yet if `new_nest`. Changes nothing.
    pub fn admit(&self, space: S, new_nest: bool) -> Result<(), ShareError> {
        if self.records.iter().all(Option::is_some) {
            return Err(ShareError::UnitFull);
        }
        if self.of_space(space) >= self.share.attachments
            || (new_nest && self.nests_of_space(space) >= self.share.nests)
        {
            return Err(ShareError::SpaceShareUsed);
        }
        Ok(())
    }

    /// Records an attachment (replacing one of the same requester and
    /// PASID). The caller asked [`Self::admit`] first; a full table is
    /// still refused.
    pub fn insert(&mut self, attachment: Attachment<S>) -> Result<(), ShareError> {
        let _ = self.remove(attachment.requester, attachment.pasid);
        let free = self
            .records
            .iter_mut()
            .find(|r| r.is_none())
            .ok_or(ShareError::UnitFull)?;
        *free = Some(attachment);
        Ok(())
    }

    /// Forgets the attachment of (`requester`, `pasid`) and returns it.
    pub fn remove(&mut self, requester: u16, pasid: Option<u32>) -> Option<Attachment<S>> {
        self.records
            .iter_mut()
            .find(|r| r.is_some_and(|a| a.requester == requester && a.pasid == pasid))?
            .take()
    }

    /// Fail closed after a failed invalidation: calls `clear` for every
    /// attachment `exposed` covers that is not blocked yet (the caller
    /// writes its blocking entry, as a detach does, and tries to
    /// invalidate it) and marks it blocked. Returns how many were blocked,
    /// or `Err` with that count when some `clear` could not be confirmed:
    /// then the caller must stop all DMA through the unit.
    pub fn block<E>(
        &mut self,
        exposed: Exposed<'_, S>,
        mut clear: impl FnMut(&Attachment<S>) -> Result<(), E>,
    ) -> Result<usize, usize> {
        let mut blocked = 0;
        let mut unconfirmed = false;
        for attachment in self.records.iter_mut().flatten() {
            if attachment.blocked || !exposed.covers(attachment) {
                continue;
            }
            attachment.blocked = true;
            blocked += 1;
            if clear(attachment).is_err() {
                unconfirmed = true;
            }
        }
        if unconfirmed {
            Err(blocked)
        } else {
            Ok(blocked)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARE: Share = Share {
        attachments: 3,
        nests: 2,
    };

    fn attachment(requester: u16, space: u32, nest: Option<usize>) -> Attachment<u32> {
        Attachment {
            requester,
            pasid: None,
            space,
            nest,
            blocked: false,
        }
    }

    #[test]
    fn one_space_cannot_fill_the_unit() {
        let mut table: Attachments<u32, 8> = Attachments::new(SHARE);
        for requester in 0..3 {
            table.admit(1, false).unwrap();
            table.insert(attachment(requester, 1, None)).unwrap();
        }
        assert_eq!(table.admit(1, false), Err(ShareError::SpaceShareUsed));
        // Other spaces still attach.
        for requester in 10..13 {
            assert_eq!(table.admit(2, false), Ok(()));
            table.insert(attachment(requester, 2, None)).unwrap();
        }
        table.admit(3, false).unwrap();
        table.insert(attachment(20, 3, None)).unwrap();
        table.insert(attachment(21, 3, None)).unwrap();
        assert_eq!(table.admit(4, false), Err(ShareError::UnitFull));
        // A detach frees the space's share.
        assert!(table.remove(0, None).is_some());
        assert_eq!(table.admit(1, false), Ok(()));
    }

    #[test]
    fn nests_are_shared_per_space() {
        let mut table: Attachments<u32, 8> = Attachments::new(SHARE);
        table.insert(attachment(1, 1, Some(0))).unwrap();
        table.insert(attachment(2, 1, Some(0))).unwrap();
        assert_eq!(table.nests_of_space(1), 1);
        // A new nest is within the share; joining an existing one needs none.
        assert_eq!(table.admit(1, true), Ok(()));
        table.insert(attachment(3, 1, Some(5))).unwrap();
        assert_eq!(table.nests_of_space(1), 2);
        table.remove(3, None);
        table.remove(2, None);
        table.insert(attachment(3, 1, Some(5))).unwrap();
        assert_eq!(table.admit(1, true), Err(ShareError::SpaceShareUsed));
        assert_eq!(table.admit(1, false), Ok(()));
        assert_eq!(table.admit(2, true), Ok(()));
    }

    #[test]
    fn a_failed_invalidation_blocks_exactly_what_it_covered() {
        let mut table: Attachments<u32, 8> = Attachments::new(SHARE);
        table.insert(attachment(1, 1, None)).unwrap();
        table.insert(attachment(2, 1, Some(4))).unwrap();
        table.insert(attachment(3, 2, Some(6))).unwrap();
        let mut cleared = std::vec::Vec::new();
        let blocked = table.block(Exposed::Spaces(&[1]), |a| {
            cleared.push(a.requester);
            Ok::<(), ()>(())
        });
        assert_eq!(blocked, Ok(2));
        assert_eq!(cleared, [1, 2]);
        // Already blocked ones are not cleared twice; a nest covers its users.
        cleared.clear();
        let blocked = table.block(Exposed::Nest(6), |a| {
            cleared.push(a.requester);
            Ok::<(), ()>(())
        });
        assert_eq!((blocked, cleared.as_slice()), (Ok(1), &[3][..]));
        assert!(table.iter().all(|a| a.blocked));
        // The records stay for the detach that follows.
        assert_eq!(table.of_space(1), 2);
        // An unconfirmed clear asks the caller to stop the unit.
        let mut other: Attachments<u32, 8> = Attachments::new(SHARE);
        other.insert(attachment(7, 9, None)).unwrap();
        assert_eq!(other.block(Exposed::Everything, |_| Err(())), Err(1));
    }
}
