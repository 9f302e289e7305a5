//! Init's answers to `sys::status` requests: its table of the IOMMU
//! capabilities it placed in domains' CNodes, each entry checked live.
//!
//! The table is not stored apart: it is read from what [`Server`] already
//! keeps per grant (the IoDevice and fault-queue slots below, the
//! IoSpace's slot in its stock while it is given), in grant order, and
//! each entry is checked when it is asked for: init copies the domain's
//! slot into a scratch slot of its own (`CNode.Copy`, which fails with
//! `EmptySlot` once the domain deleted the capability or a revoke took
//! it) and deletes the copy, so the answer is what the domain's CNode
//! holds now.

use sys::resources::Refusal;
use sys::status::{DOMAIN_NAME, Entry, Kind, STATUS, name_to_mrs};
use sys::{Rights, Slot};

use super::{Objects, Reply, Server, refused};

/// The domain's slots of what init gave for one grant (the IoSpace's is
/// in the grant's `SpaceStock`).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Slots {
    /// The IoDevice's slot.
    pub device: Option<u32>,
    /// The fault queue's and its Notification's slots.
    pub queue: Option<(u32, u32)>,
}

impl Server {
    /// The answer to a `sys::status` request, or `None` for another label.
    pub(super) fn status(&self, objects: &mut Objects, label: u32, index: u64) -> Option<Reply> {
        match label {
            STATUS => Some(match self.entry(index) {
                Some(mut entry) => {
                    entry.live = self.check(objects, entry.domain as usize, entry.slot);
                    (0, entry.to_mrs())
                }
                None => refused(Refusal::BadArgument),
            }),
            DOMAIN_NAME => Some(
                match usize::try_from(index)
                    .ok()
                    .and_then(|i| self.domains.get(i))
                {
                    Some(domain) => {
                        let [a, b, c] = name_to_mrs(&domain.name);
                        (0, [a, b, c, self.domains.len() as u64])
                    }
                    None => refused(Refusal::BadArgument),
                },
            ),
            _ => None,
        }
    }

    /// Entry `index` of the table (unchecked: `live` is `Ok`).
    fn entry(&self, index: u64) -> Option<Entry> {
        let mut entries = self.given.iter().enumerate().flat_map(|(grant, given)| {
            let grant = &self.description.dma_grants[grant];
            let (domain, pci) = (
                u64::from(grant.domain),
                u64::from(grant.device.requester_id()),
            );
            let space = given
                .space
                .and(given.stock.as_ref().and_then(|s| s.domain_slot));
            let queue = given.slots.queue;
            [
                given.slots.device.map(|s| (Kind::IoDevice, s)),
                space.map(|s| (Kind::IoSpace, s)),
                queue.map(|(q, _)| (Kind::IoFaultQueue, q)),
                queue.map(|(_, n)| (Kind::Notification, n)),
            ]
            .into_iter()
            .flatten()
            .map(move |(kind, slot)| Entry {
                domain,
                kind,
                pci,
                slot,
                live: Ok(()),
            })
        });
        entries.nth(usize::try_from(index).ok()?)
    }

    /// Whether `domain`'s slot `slot` holds a capability now: copied into
    /// a scratch slot of init's and deleted again.
    fn check(&self, objects: &mut Objects, domain: usize, slot: u32) -> Result<(), sys::Error> {
        let scratch = objects.slot()?;
        let copied = objects.cnode().copy_from(
            scratch,
            self.domains[domain].cnode,
            Slot::new(slot),
            Rights::ALL,
        );
        if copied.is_err() {
            // The scratch slot stayed empty; `Objects` takes a slot back
            // only through `delete`, so it gets a copy of init's own TCB
            // capability to delete.
            objects
                .cnode()
                .copy(scratch, sys::bootinfo::INIT_TCB, Rights::ALL)?;
        }
        objects.delete(scratch)?;
        copied
    }
}
