//! Small value types shared by every part of the model: slot and object
//! names, rights, badges and object kinds.

use core::fmt;

/// Index of a capability slot in the caller's slot table.
///
/// The kernel maps CNode memory to slot ids (see [`crate::Storage`]); the
/// host uses plain array indices. A `SlotId` is an allegation until
/// [`crate::Caps::lookup`] or an operation has checked it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SlotId(pub u32);

/// Index of an object record in the caller's object table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectId(pub u32);

/// Access rights carried by a capability (a small bit set).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rights(u8);

impl Rights {
    /// No rights at all.
    pub const NONE: Rights = Rights(0);
    /// Read the object (for a Frame: DMA or CPU reads of its memory).
    pub const READ: Rights = Rights(1);
    /// Write or configure the object (for a Frame: writes to its memory; for
    /// IOMMU objects and Untyped: every invocation that changes them).
    pub const WRITE: Rights = Rights(2);
    /// Pass capabilities through IPC with this capability.
    pub const GRANT: Rights = Rights(4);
    /// Read and write.
    pub const READ_WRITE: Rights = Rights(3);
    /// Every right; what a freshly created object's first capability holds.
    pub const ALL: Rights = Rights(7);

    /// Rights from raw bits; bits outside [`Rights::ALL`] are dropped.
    pub const fn from_bits_truncate(bits: u8) -> Rights {
        Rights(bits & Rights::ALL.0)
    }
    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// True when every right in `other` is also in `self`.
    pub const fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }
    /// Rights held by both.
    pub const fn intersect(self, other: Rights) -> Rights {
        Rights(self.0 & other.0)
    }
    /// True when no right is held.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl core::ops::BitOr for Rights {
    type Output = Rights;
    /// Rights held by either.
    fn bitor(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = if self.contains(Rights::READ) {
            "R"
        } else {
            "-"
        };
        let w = if self.contains(Rights::WRITE) {
            "W"
        } else {
            "-"
        };
        let g = if self.contains(Rights::GRANT) {
            "G"
        } else {
            "-"
        };
        write!(f, "{r}{w}{g}")
    }
}

/// A badge set by mint on Endpoint and Notification capabilities; 0 means
/// "unbadged".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Badge(pub u64);

/// Every kind of kernel object a capability can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ObjectKind {
    /// A power-of-two region of physical memory that can be retyped.
    Untyped = 0,
    /// A table of capability slots.
    CNode = 1,
    /// A thread control block.
    Tcb = 2,
    /// An IPC endpoint.
    Endpoint = 3,
    /// A notification word.
    Notification = 4,
    /// A page of memory (4 KiB or 2 MiB) that can be mapped for CPU or DMA.
    Frame = 5,
    /// A page-table page of a CPU VSpace.
    PageTable = 6,
    /// Authority to hand out IRQ handlers.
    IrqControl = 7,
    /// Authority over one interrupt line.
    IrqHandler = 8,
    /// Authority over one IOMMU unit (a VT-d DRHD or an SMMU).
    IommuControl = 9,
    /// Authority over one requester (PCI RID or SMMU StreamID) of a unit.
    IoDevice = 10,
    /// A kernel-owned stage-2 IO domain with its own DID/VMID.
    IoSpace = 11,
    /// A driver-owned stage-1 table rooted at an IPA inside one IoSpace.
    IoUserTable = 12,
    /// One PASID of one device.
    IoPasid = 13,
    /// A destination for IO page-fault records.
    IoFaultQueue = 14,
    /// The kernel console: writing to it (write right) and ending the
    /// session (the grant right, which on a Console means "may halt").
    Console = 15,
}

impl ObjectKind {
    /// Every kind, in number order (`ALL[n] as u8 == n`).
    pub const ALL: [ObjectKind; 16] = [
        ObjectKind::Untyped,
        ObjectKind::CNode,
        ObjectKind::Tcb,
        ObjectKind::Endpoint,
        ObjectKind::Notification,
        ObjectKind::Frame,
        ObjectKind::PageTable,
        ObjectKind::IrqControl,
        ObjectKind::IrqHandler,
        ObjectKind::IommuControl,
        ObjectKind::IoDevice,
        ObjectKind::IoSpace,
        ObjectKind::IoUserTable,
        ObjectKind::IoPasid,
        ObjectKind::IoFaultQueue,
        ObjectKind::Console,
    ];

    /// The kind numbered `number`, if any.
    pub fn from_number(number: u8) -> Option<ObjectKind> {
        ObjectKind::ALL.get(usize::from(number)).copied()
    }
}

/// Size in bytes of one capability slot in CNode memory, as a power of two.
pub const SLOT_SIZE_BITS: u8 = 5;
/// Size of a small frame and of every IOMMU table page.
pub const PAGE_BITS: u8 = 12;
/// Size of a large frame.
pub const LARGE_PAGE_BITS: u8 = 21;

#[cfg(test)]
mod tests {
    use super::ObjectKind;

    #[test]
    fn all_kinds_are_listed_in_number_order() {
        for (number, kind) in ObjectKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, number);
            assert_eq!(ObjectKind::from_number(number as u8), Some(*kind));
        }
        assert_eq!(ObjectKind::from_number(ObjectKind::ALL.len() as u8), None);
    }
}
