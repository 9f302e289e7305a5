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
            // only through `delete`, so it gets a copy of init's own CNode
            // capability to delete.
            let cnode = objects.cnode();
            cnode.copy(scratch, cnode, Rights::ALL)?;
        }
        objects.delete(scratch)?;
        copied
    }
}

#[cfg(test)]
mod tests {
    use sys::resources;
    use sys::status::{DOMAIN_NAME, Entry, Kind, STATUS, name_from_mrs};

    use super::super::tests::{driver_server, edu};

    /// An entry is live while the domain's slot holds the capability and
    /// gone once the domain deleted it; asking costs init no slot; past
    /// the end is refused.
    #[test]
    fn status_entries_follow_the_domains_slots() {
        let (_kernel, mut objects, mut server) = driver_server();
        let pci = edu();
        let (label, mrs) = server.handle(&mut objects, 1, resources::SPACE, [pci, 1 << 20, 0, 0]);
        assert_eq!(label, 0);
        let slot = mrs[0] as u32;
        let free = objects.free_slots();
        let (label, mrs) = server.handle(&mut objects, 1, STATUS, [0, 0, 0, 0]);
        assert_eq!(label, 0);
        let entry = Entry::from_mrs(mrs).unwrap();
        assert_eq!(
            (entry.domain, entry.kind, entry.pci, entry.slot, entry.live),
            (0, Kind::IoSpace, pci, slot, Ok(()))
        );
        server.domains[0]
            .cnode
            .delete(sys::Slot::new(slot))
            .unwrap();
        for _ in 0..3 {
            let (label, mrs) = server.handle(&mut objects, 1, STATUS, [0, 0, 0, 0]);
            assert_eq!(label, 0);
            let live = Entry::from_mrs(mrs).unwrap().live;
            assert_eq!(live, Err(sys::Error::EmptySlot));
        }
        assert_eq!(objects.free_slots(), free, "the checks kept a slot");
        let (label, _) = server.handle(&mut objects, 1, STATUS, [1, 0, 0, 0]);
        assert_eq!(label, resources::Refusal::BadArgument.code());
        let (label, mrs) = server.handle(&mut objects, 1, DOMAIN_NAME, [0, 0, 0, 0]);
        assert_eq!((label, mrs[3]), (0, 1));
        let mut name = [0u8; 24];
        let len = name_from_mrs([mrs[0], mrs[1], mrs[2]], &mut name);
        assert_eq!(&name[..len], b"driver");
        let (label, _) = server.handle(&mut objects, 1, DOMAIN_NAME, [1, 0, 0, 0]);
        assert_eq!(label, resources::Refusal::BadArgument.code());
        sys::host::clear_kernel();
    }
}
