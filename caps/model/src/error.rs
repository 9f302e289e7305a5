//! The one error enum of the capability model.
//!
//! The numbers are fixed: the `abi` crate mirrors them as syscall error codes.
//! Every operation checks everything before it changes anything, so an error
//! always means "nothing happened and no effect was emitted".

/// Why an operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Error {
    /// A slot id lies outside the slot table, or a CNode index outside the CNode.
    InvalidSlot = 1,
    /// A source slot that must hold a capability is empty.
    EmptySlot = 2,
    /// A destination slot that must be empty holds a capability.
    SlotOccupied = 3,
    /// A capability names an object of the wrong kind for this operation.
    WrongKind = 4,
    /// A capability lacks a right the operation needs (for IO mappings: the
    /// requested mapping rights exceed the Frame capability's rights).
    InsufficientRights = 5,
    /// Requested rights are not allowed here (an IO mapping must ask for a
    /// non-empty subset of read and write).
    InvalidRights = 6,
    /// A size argument is outside the range the object kind allows.
    InvalidSize = 7,
    /// The Untyped has no room left for an object of that size and alignment.
    UntypedExhausted = 8,
    /// Device memory can only become Frames or smaller device Untypeds.
    DeviceMemory = 9,
    /// The caller's object table has no free record.
    ObjectTableFull = 10,
    /// The caller's storage cannot provide slots for a CNode at that address.
    NoSlotMemory = 11,
    /// Deleting this capability would destroy a CNode that still holds
    /// capabilities; empty it first.
    CnodeNotEmpty = 12,
    /// Only Endpoint, Notification and IoDevice capabilities carry badges
    /// (an IoDevice's badge names it in IO fault records).
    NotBadgeable = 13,
    /// The source capability already carries a badge.
    AlreadyBadged = 14,
    /// An address is misaligned, outside the unit's IPA range, or inside the
    /// reserved kernel window.
    InvalidAddress = 15,
    /// Another mapping in the same IoSpace overlaps the requested range.
    AddressInUse = 16,
    /// This Frame capability already holds its one mapping.
    AlreadyMapped = 17,
    /// This Frame capability holds no mapping.
    NotMapped = 18,
    /// The device or PASID is already attached; detach it first.
    AlreadyAttached = 19,
    /// The device or PASID is not attached.
    NotAttached = 20,
    /// The objects belong to different IOMMU units.
    WrongUnit = 21,
    /// Every DID/VMID of the unit is in use by a live IoSpace.
    NoDomainIds = 22,
    /// The requester id or IRQ number is outside what the control cap covers.
    OutOfScope = 23,
    /// A live IoDevice (or IrqHandler) for that requester (or line) exists.
    DeviceInUse = 24,
    /// The PASID is at or above the unit's PASID limit.
    PasidOutOfRange = 25,
    /// A live IoPasid for that (device, PASID) exists.
    PasidInUse = 26,
    /// A PASID can only attach while its device is attached.
    DeviceNotAttached = 27,
    /// A PASID must use the same IoSpace as its device.
    SpaceMismatch = 28,
    /// The object this capability depends on was destroyed (an IoUserTable
    /// whose IoSpace, or an IoPasid whose IoDevice, is gone).
    DeadObject = 29,
}

impl Error {
    /// The fixed error number, as the ABI reports it.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

impl Error {
    /// The variant's name, as `Debug` prints it (the kernel's console
    /// prints it without `core::fmt`).
    pub const fn name(self) -> &'static str {
        match self {
            Error::InvalidSlot => "InvalidSlot",
            Error::EmptySlot => "EmptySlot",
            Error::SlotOccupied => "SlotOccupied",
            Error::WrongKind => "WrongKind",
            Error::InsufficientRights => "InsufficientRights",
            Error::InvalidRights => "InvalidRights",
            Error::InvalidSize => "InvalidSize",
            Error::UntypedExhausted => "UntypedExhausted",
            Error::DeviceMemory => "DeviceMemory",
            Error::ObjectTableFull => "ObjectTableFull",
            Error::NoSlotMemory => "NoSlotMemory",
            Error::CnodeNotEmpty => "CnodeNotEmpty",
            Error::NotBadgeable => "NotBadgeable",
            Error::AlreadyBadged => "AlreadyBadged",
            Error::InvalidAddress => "InvalidAddress",
            Error::AddressInUse => "AddressInUse",
            Error::AlreadyMapped => "AlreadyMapped",
            Error::NotMapped => "NotMapped",
            Error::AlreadyAttached => "AlreadyAttached",
            Error::NotAttached => "NotAttached",
            Error::WrongUnit => "WrongUnit",
            Error::NoDomainIds => "NoDomainIds",
            Error::OutOfScope => "OutOfScope",
            Error::DeviceInUse => "DeviceInUse",
            Error::PasidOutOfRange => "PasidOutOfRange",
            Error::PasidInUse => "PasidInUse",
            Error::DeviceNotAttached => "DeviceNotAttached",
            Error::SpaceMismatch => "SpaceMismatch",
            Error::DeadObject => "DeadObject",
        }
    }
}

impl ktext::Text for Error {
    fn write(&self, out: &mut dyn ktext::Sink) {
        out.str(self.name());
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}
