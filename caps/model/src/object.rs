//! Object records: what the kernel knows about each live object.
//!
//! Objects live in a caller-provided table indexed by [`ObjectId`]. A record
//! is live while a capability names it (`cap_count > 0`) or, for an Untyped,
//! while any object carved from it is live (`live_children > 0`); only then
//! is its memory free for the parent Untyped to hand out again. Boot objects
//! without memory (IommuControl, IrqControl, Console) are permanent.

use crate::types::{LARGE_PAGE_BITS, ObjectId, ObjectKind, PAGE_BITS, SLOT_SIZE_BITS, SlotId};

/// Fixed description of one IOMMU unit, given at boot from ACPI DMAR / the
/// device tree and the unit's capability registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IommuUnit {
    /// Unit number (index of the DRHD / SMMU).
    pub id: u8,
    /// Number of supported PASID bits (0: no PASID support).
    pub pasid_bits: u8,
    /// Number of DIDs/VMIDs usable by IoSpaces.
    pub domain_ids: u16,
    /// Size of the stage-2 input (IPA) space, as a power of two.
    pub ipa_bits: u8,
    /// Requester ids `0..rid_limit` are in the unit's device scope.
    pub rid_limit: u32,
    /// Base of the reserved IPA window for kernel structures.
    pub reserved_ipa_base: u64,
    /// Size in bytes of the reserved IPA window (0: none).
    pub reserved_ipa_size: u64,
}

/// Where a device or PASID currently translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attachment {
    /// The IoSpace providing stage 2.
    pub space: ObjectId,
    /// The IoUserTable providing stage 1, if nested.
    pub user_table: Option<ObjectId>,
}

/// Kind-specific state of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectState {
    /// Objects with no state beyond their memory.
    Plain,
    /// An Untyped region.
    Untyped {
        /// Bytes from the region start already handed out (reset to 0 when
        /// no object carved from the region is live).
        watermark: u64,
        /// Device memory: only Frames and device Untypeds may be carved.
        device: bool,
    },
    /// A CNode whose slots are `first_slot .. first_slot + 2^size_bits`.
    CNode {
        /// First slot of the CNode in the slot table.
        first_slot: SlotId,
        /// log2 of the number of slots.
        size_bits: u8,
    },
    /// An IOMMU unit.
    IommuControl(IommuUnit),
    /// Authority over the IRQ lines `0..irq_limit`.
    IrqControl {
        /// Number of lines.
        irq_limit: u16,
    },
    /// One IRQ line.
    IrqHandler {
        /// The line.
        irq: u16,
    },
    /// One requester of a unit.
    IoDevice {
        /// The IommuControl object of the unit.
        unit: ObjectId,
        /// Requester id (PCI RID or StreamID).
        rid: u32,
        /// Current translation, `None` when blocked.
        attached: Option<Attachment>,
        /// Fault queue for this requester's faults.
        fault_queue: Option<ObjectId>,
    },
    /// A stage-2 domain.
    IoSpace {
        /// The IommuControl object of the unit.
        unit: ObjectId,
        /// DID (VT-d) / VMID (SMMUv3), unique among live IoSpaces of the unit.
        did: u16,
        /// Fault queue for this domain's faults.
        fault_queue: Option<ObjectId>,
    },
    /// A user stage-1 table.
    IoUserTable {
        /// The IoSpace it is rooted in; `None` once that IoSpace is destroyed.
        space: Option<ObjectId>,
        /// IPA of the root table page.
        root_ipa: u64,
    },
    /// One PASID of one device.
    IoPasid {
        /// The device; `None` once that IoDevice is destroyed.
        device: Option<ObjectId>,
        /// The PASID.
        pasid: u32,
        /// Current translation, `None` when blocked.
        attached: Option<Attachment>,
    },
}

/// One live object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Object {
    pub(crate) kind: ObjectKind,
    pub(crate) paddr: u64,
    pub(crate) size_bits: u8,
    pub(crate) has_memory: bool,
    pub(crate) permanent: bool,
    pub(crate) cap_count: u32,
    pub(crate) parent: Option<ObjectId>,
    pub(crate) live_children: u32,
    pub(crate) state: ObjectState,
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> ObjectKind {
        self.kind
    }
    /// Physical memory `[paddr, paddr + 2^size_bits)` if the object has memory.
    pub fn memory(&self) -> Option<(u64, u8)> {
        self.has_memory.then_some((self.paddr, self.size_bits))
    }
    /// How many capabilities name this object.
    pub fn cap_count(&self) -> u32 {
        self.cap_count
    }
    /// The Untyped object this one was carved from.
    pub fn parent(&self) -> Option<ObjectId> {
        self.parent
    }
    /// For an Untyped: how many objects carved from it are live.
    pub fn live_children(&self) -> u32 {
        self.live_children
    }
    /// Kind-specific state.
    pub fn state(&self) -> &ObjectState {
        &self.state
    }
    /// True for boot objects that outlive their capabilities.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

/// What to carve out of an Untyped with [`crate::Caps::retype`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NewObject {
    /// A smaller Untyped of `2^size_bits` bytes (4..=47).
    Untyped {
        /// log2 of the size in bytes.
        size_bits: u8,
    },
    /// A CNode with `2^size_bits` slots (1..=16).
    CNode {
        /// log2 of the number of slots.
        size_bits: u8,
    },
    /// A thread control block.
    Tcb,
    /// An endpoint.
    Endpoint,
    /// A notification.
    Notification,
    /// A frame of `2^size_bits` bytes (12 or 21).
    Frame {
        /// log2 of the size in bytes.
        size_bits: u8,
    },
    /// A CPU page-table page.
    PageTable,
    /// An IoSpace on the unit named by the IommuControl cap in `iommu`.
    IoSpace {
        /// Slot holding an IommuControl capability.
        iommu: SlotId,
    },
    /// A fault queue ring page.
    IoFaultQueue,
}

impl NewObject {
    /// The kind of the created object.
    pub fn kind(self) -> ObjectKind {
        match self {
            NewObject::Untyped { .. } => ObjectKind::Untyped,
            NewObject::CNode { .. } => ObjectKind::CNode,
            NewObject::Tcb => ObjectKind::Tcb,
            NewObject::Endpoint => ObjectKind::Endpoint,
            NewObject::Notification => ObjectKind::Notification,
            NewObject::Frame { .. } => ObjectKind::Frame,
            NewObject::PageTable => ObjectKind::PageTable,
            NewObject::IoSpace { .. } => ObjectKind::IoSpace,
            NewObject::IoFaultQueue => ObjectKind::IoFaultQueue,
        }
    }

    /// Memory size as a power of two, or `None` for an invalid size argument.
    pub fn size_bits(self) -> Option<u8> {
        match self {
            NewObject::Untyped { size_bits } => (4..=47).contains(&size_bits).then_some(size_bits),
            NewObject::CNode { size_bits } => (1..=16)
                .contains(&size_bits)
                .then(|| size_bits + SLOT_SIZE_BITS),
            NewObject::Tcb => Some(11),
            NewObject::Endpoint => Some(4),
            NewObject::Notification => Some(5),
            NewObject::Frame { size_bits } => {
                (size_bits == PAGE_BITS || size_bits == LARGE_PAGE_BITS).then_some(size_bits)
            }
            NewObject::PageTable | NewObject::IoSpace { .. } | NewObject::IoFaultQueue => {
                Some(PAGE_BITS)
            }
        }
    }
}
