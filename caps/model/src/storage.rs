//! Capability slots and the caller-provided storage they live in.
//!
//! # The derivation tree
//! Every derived capability (copy, mint, retype, minted IOMMU objects) is a
//! child of the capability it came from. The tree is stored the way seL4's
//! mapping database stores it: one doubly linked list through the slots in
//! **pre-order** (every node is followed by all its descendants), each slot
//! holding its depth. The descendants of a node are therefore exactly the run
//! of slots that follows it with a greater depth, so
//! - inserting a child (right after its parent) is O(1),
//! - moving a capability relinks its node in O(1),
//! - revoke walks only the descendants: O(descendants),
//! - deleting a leaf is O(1); deleting an inner node lifts its descendants
//!   one level (O(descendants)), keeping them alive under its parent.
//!
//! # The IPA index
//! The one index of IO mappings: a hash table ([`Storage::ipa_index`],
//! entries [`IpaEntry`]) keyed by (IoSpace, IPA) that answers
//! `IoSpace.Map`'s overlap check in a constant number of probes, whatever
//! the number of mappings, and names the slot holding each mapping (see
//! [`crate::Caps`]'s `mapping_index` module). It is derived data, a
//! function of the mappings the slots hold (checked after every step of
//! the model checker and the property tests).
//! [`ArrayStorage`]'s equality and hash take it as a set of entries: two
//! states with the same capabilities and entries are one state whatever
//! order the table's collisions were resolved in, and a state whose index
//! went wrong is a new state, which the model checker checks.

use crate::object::Object;
use crate::types::{Badge, ObjectId, ObjectKind, Rights, SlotId};

/// The one IO mapping a Frame capability may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IoMapping {
    /// The IoSpace the frame is mapped in.
    pub space: ObjectId,
    /// IPA of the mapping.
    pub ipa: u64,
    /// Access granted to devices (within the Frame capability's rights).
    pub rights: Rights,
}

/// The one CPU mapping a Frame capability may hold (instead of an IO one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CpuMapping {
    /// The address space, named by the kernel (its root table's address).
    pub vspace: u64,
    /// Virtual address of the mapping.
    pub vaddr: u64,
    /// Access granted (within the Frame capability's rights).
    pub rights: Rights,
}

/// A capability: a name for an object plus rights, badge and, for a Frame,
/// the mapping this copy holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cap {
    pub(crate) object: ObjectId,
    pub(crate) kind: ObjectKind,
    pub(crate) rights: Rights,
    pub(crate) badge: Badge,
    pub(crate) mapping: Option<IoMapping>,
    pub(crate) cpu: Option<CpuMapping>,
}

impl Cap {
    /// The object named.
    pub fn object(&self) -> ObjectId {
        self.object
    }
    /// The object's kind.
    pub fn kind(&self) -> ObjectKind {
        self.kind
    }
    /// Rights held.
    pub fn rights(&self) -> Rights {
        self.rights
    }
    /// Badge (0: none).
    pub fn badge(&self) -> Badge {
        self.badge
    }
    /// The IO mapping held by this Frame capability copy.
    pub fn mapping(&self) -> Option<IoMapping> {
        self.mapping
    }
    /// The CPU mapping held by this Frame capability copy.
    pub fn cpu_mapping(&self) -> Option<CpuMapping> {
        self.cpu
    }
}

/// One capability slot with its derivation-tree links.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Slot {
    pub(crate) cap: Option<Cap>,
    pub(crate) prev: Option<SlotId>,
    pub(crate) next: Option<SlotId>,
    pub(crate) depth: u32,
    /// Always 0: makes a slot 104 bytes on x86_64, not 96. LLVM indexes
    /// an array of 96-byte elements with two instructions there (`lea`,
    /// `shl`) and of 104-byte ones with one (`imul`), and the slot table
    /// is indexed on every system call (the cached lookups, `resolve`):
    /// without it `Frame.Map` + `Unmap` and `CNode.Delete` cost 6 guest
    /// instructions more. On aarch64 the padding costs instead (a delete
    /// +4), so it is x86_64's only. Not part of any state (always 0).
    #[cfg(target_arch = "x86_64")]
    pub(crate) pad: u64,
}

impl Slot {
    /// An empty slot.
    pub const EMPTY: Slot = Slot {
        cap: None,
        prev: None,
        next: None,
        depth: 0,
        #[cfg(target_arch = "x86_64")]
        pad: 0,
    };
    /// A slot holding `cap` at `depth` in the derivation tree, between
    /// `prev` and `next` in its pre-order.
    pub(crate) const fn holding(
        cap: Cap,
        prev: Option<SlotId>,
        next: Option<SlotId>,
        depth: u32,
    ) -> Slot {
        Slot {
            cap: Some(cap),
            prev,
            next,
            depth,
            #[cfg(target_arch = "x86_64")]
            pad: 0,
        }
    }
    /// The capability held, if any.
    pub fn cap(&self) -> Option<&Cap> {
        self.cap.as_ref()
    }
    /// Previous slot in derivation-tree pre-order.
    pub fn prev(&self) -> Option<SlotId> {
        self.prev
    }
    /// Next slot in derivation-tree pre-order.
    pub fn next(&self) -> Option<SlotId> {
        self.next
    }
    /// Depth in the derivation tree (roots are 0).
    pub fn depth(&self) -> u32 {
        self.depth
    }
}

/// Every capability of a slot table in derivation-tree pre-order; see
/// [`crate::Caps::derivation_order`].
#[derive(Clone, Debug)]
pub struct DerivationOrder<'a> {
    slots: &'a [Slot],
    /// Next slot to look at for the start of a list (a slot with no `prev`).
    scan: usize,
    /// Next slot of the list being walked.
    cursor: Option<SlotId>,
    /// Slots yielded so far: a walk never yields more than the table holds,
    /// even over a corrupted (cyclic) list.
    yielded: usize,
}

impl<'a> DerivationOrder<'a> {
    pub(crate) fn new(slots: &'a [Slot]) -> Self {
        DerivationOrder {
            slots,
            scan: 0,
            cursor: None,
            yielded: 0,
        }
    }
}

impl<'a> Iterator for DerivationOrder<'a> {
    /// The slot, its depth (roots are 0) and its capability.
    type Item = (SlotId, u32, &'a Cap);

    fn next(&mut self) -> Option<Self::Item> {
        if self.yielded >= self.slots.len() {
            return None;
        }
        let id = match self.cursor.take() {
            Some(id) => id,
            None => {
                let start = self
                    .slots
                    .get(self.scan..)?
                    .iter()
                    .position(|slot| slot.cap.is_some() && slot.prev.is_none())?;
                self.scan += start + 1;
                SlotId((self.scan - 1) as u32)
            }
        };
        let slot = self.slots.get(id.0 as usize)?;
        let cap = slot.cap.as_ref()?;
        self.cursor = slot.next;
        self.yielded += 1;
        Some((id, slot.depth, cap))
    }
}

/// One entry of the IPA index (see the module documentation): what is
/// mapped at one 4 KiB page or one 2 MiB block of one IoSpace. `key` 0 is a
/// free entry; otherwise its top two bits say what the entry records
/// (`mapping_index`'s `PAGE`, `LARGE`, `COUNT`) and the rest is the page or
/// block number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IpaEntry {
    pub(crate) key: u64,
    pub(crate) space: u32,
    /// The slot holding the mapping (`PAGE`, `LARGE`), or how many 4 KiB
    /// mappings lie in the block (`COUNT`).
    pub(crate) value: u32,
}

impl IpaEntry {
    /// A free entry.
    pub const EMPTY: IpaEntry = IpaEntry {
        key: 0,
        space: 0,
        value: 0,
    };
}

/// Entries of the IPA index per slot: each slot's capability holds at most
/// one mapping, which needs at most two entries (its page, and its share
/// of its block's count), so the table is never more than two-thirds full.
pub const IPA_INDEX_PER_SLOT: usize = 3;

/// Storage for slots and object records, provided by the caller.
///
/// The kernel implements it over CNode memory and a fixed object table; the
/// host uses [`ArrayStorage`]. The model never allocates.
pub trait Storage {
    /// The slot table.
    fn slots(&self) -> &[Slot];
    /// The slot table, mutably.
    fn slots_mut(&mut self) -> &mut [Slot];
    /// The object table (`None`: free record).
    fn objects(&self) -> &[Option<Object>];
    /// The object table, mutably.
    fn objects_mut(&mut self) -> &mut [Option<Object>];
    /// The first slot id of a CNode with `2^size_bits` slots whose memory is
    /// `paddr`, or `None` if that memory cannot hold slots. Slots of live
    /// CNodes must not overlap; since retype never overlaps live objects, a
    /// function of `paddr` alone suffices (the kernel uses the address).
    fn cnode_slots(&self, paddr: u64, size_bits: u8) -> Option<SlotId>;
    /// The IPA index: [`IPA_INDEX_PER_SLOT`] entries per slot, all
    /// [`IpaEntry::EMPTY`] at first.
    fn ipa_index(&self) -> &[IpaEntry];
    /// The IPA index, mutably.
    fn ipa_index_mut(&mut self) -> &mut [IpaEntry];
}

/// Borrowed storage: the kernel can keep its tables where they live and lend
/// them to a `Caps` for the duration of one invocation.
impl<T: Storage + ?Sized> Storage for &mut T {
    fn slots(&self) -> &[Slot] {
        (**self).slots()
    }
    fn slots_mut(&mut self) -> &mut [Slot] {
        (**self).slots_mut()
    }
    fn objects(&self) -> &[Option<Object>] {
        (**self).objects()
    }
    fn objects_mut(&mut self) -> &mut [Option<Object>] {
        (**self).objects_mut()
    }
    fn cnode_slots(&self, paddr: u64, size_bits: u8) -> Option<SlotId> {
        (**self).cnode_slots(paddr, size_bits)
    }
    fn ipa_index(&self) -> &[IpaEntry] {
        (**self).ipa_index()
    }
    fn ipa_index_mut(&mut self) -> &mut [IpaEntry] {
        (**self).ipa_index_mut()
    }
}

/// Fixed-size host storage: `SLOTS` slots and `OBJECTS` object records.
///
/// Slots `0..root_slots` form the root CSpace; CNode memory at `paddr` maps
/// to slots starting at `root_slots + (paddr - cnode_memory_base) / 32` when
/// that fits in the table.
///
/// Equality and hashing take the IPA index as a set of entries (see the
/// module documentation).
#[derive(Clone, Debug)]
pub struct ArrayStorage<const SLOTS: usize, const OBJECTS: usize> {
    slots: [Slot; SLOTS],
    objects: [Option<Object>; OBJECTS],
    root_slots: u32,
    cnode_memory_base: u64,
    ipa_index: [[IpaEntry; SLOTS]; IPA_INDEX_PER_SLOT],
}

impl<const SLOTS: usize, const OBJECTS: usize> ArrayStorage<SLOTS, OBJECTS> {
    /// The IPA index's entries in use, in table order.
    fn ipa_entries(&self) -> impl Iterator<Item = &IpaEntry> {
        self.ipa_index.as_flattened().iter().filter(|e| e.key != 0)
    }

    /// Whether the two IPA indexes hold the same entries, wherever their
    /// collisions put them.
    fn same_ipa_entries(&self, other: &Self) -> bool {
        let table = other.ipa_index.as_flattened();
        self.ipa_entries().count() == other.ipa_entries().count()
            && self.ipa_entries().all(|e| {
                crate::mapping_index::find_ipa_entry(table, e.space, e.key)
                    .is_some_and(|found| found == *e)
            })
    }
}

/// Equality compares the IPA index as a set of entries: two states with the
/// same capabilities and the same index entries are one state, whatever
/// order the table's collisions were resolved in; an index that differs
/// (a stale entry, say) makes a different state, which the model checker
/// then checks.
impl<const SLOTS: usize, const OBJECTS: usize> PartialEq for ArrayStorage<SLOTS, OBJECTS> {
    fn eq(&self, other: &Self) -> bool {
        self.slots == other.slots
            && self.objects == other.objects
            && self.root_slots == other.root_slots
            && self.cnode_memory_base == other.cnode_memory_base
            && self.same_ipa_entries(other)
    }
}

impl<const SLOTS: usize, const OBJECTS: usize> Eq for ArrayStorage<SLOTS, OBJECTS> {}

/// Hashes the IPA index as a set (an order-independent sum over its
/// entries), consistent with the equality above.
impl<const SLOTS: usize, const OBJECTS: usize> core::hash::Hash for ArrayStorage<SLOTS, OBJECTS> {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.slots.hash(state);
        self.objects.hash(state);
        self.root_slots.hash(state);
        self.cnode_memory_base.hash(state);
        let entries = self.ipa_entries().fold(0u64, |sum, e| {
            let mixed = (e.key ^ (u64::from(e.space) << 40) ^ (u64::from(e.value) << 20))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            sum.wrapping_add(mixed ^ (mixed >> 29))
        });
        entries.hash(state);
    }
}

impl<const SLOTS: usize, const OBJECTS: usize> ArrayStorage<SLOTS, OBJECTS> {
    /// Empty storage; every slot is a root slot (no CNode memory).
    pub fn new() -> Self {
        Self::with_cnode_memory(SLOTS as u32, 0)
    }

    /// Empty storage with `root_slots` root slots; the remaining slots back
    /// CNodes carved from physical memory starting at `cnode_memory_base`.
    pub fn with_cnode_memory(root_slots: u32, cnode_memory_base: u64) -> Self {
        ArrayStorage {
            slots: [Slot::EMPTY; SLOTS],
            objects: [None; OBJECTS],
            root_slots,
            cnode_memory_base,
            ipa_index: [[IpaEntry::EMPTY; SLOTS]; IPA_INDEX_PER_SLOT],
        }
    }
}

impl<const SLOTS: usize, const OBJECTS: usize> Default for ArrayStorage<SLOTS, OBJECTS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const SLOTS: usize, const OBJECTS: usize> Storage for ArrayStorage<SLOTS, OBJECTS> {
    fn slots(&self) -> &[Slot] {
        &self.slots
    }
    fn slots_mut(&mut self) -> &mut [Slot] {
        &mut self.slots
    }
    fn objects(&self) -> &[Option<Object>] {
        &self.objects
    }
    fn objects_mut(&mut self) -> &mut [Option<Object>] {
        &mut self.objects
    }
    fn cnode_slots(&self, paddr: u64, size_bits: u8) -> Option<SlotId> {
        let offset = paddr.checked_sub(self.cnode_memory_base)?;
        let first = u64::from(self.root_slots).checked_add(offset >> crate::SLOT_SIZE_BITS)?;
        let end = first.checked_add(1u64.checked_shl(u32::from(size_bits))?)?;
        (end <= SLOTS as u64).then_some(SlotId(u32::try_from(first).ok()?))
    }
    fn ipa_index(&self) -> &[IpaEntry] {
        self.ipa_index.as_flattened()
    }
    fn ipa_index_mut(&mut self) -> &mut [IpaEntry] {
        self.ipa_index.as_flattened_mut()
    }
}
