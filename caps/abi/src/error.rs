//! Error codes, with fixed numbers.
//!
//! Codes 1..=63 are the capability model's (`caps::Error`): same names, same
//! numbers, checked by a test. Codes 64 and up are returned by the kernel's
//! system-call layer before the model is consulted (except `IommuTimeout`,
//! which reports what the hardware did after it). 0 is success and is not
//! an error.

/// Why a system call or invocation failed. Nothing changed when one is
/// returned, except after [`Error::IommuTimeout`].
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
    /// Requested rights are not allowed here.
    InvalidRights = 6,
    /// A size argument is outside the range the object kind allows.
    InvalidSize = 7,
    /// The Untyped has no room left for an object of that size and alignment.
    UntypedExhausted = 8,
    /// Device memory can only become Frames or smaller device Untypeds.
    DeviceMemory = 9,
    /// The kernel's object table has no free record.
    ObjectTableFull = 10,
    /// No slot memory for a CNode at that address.
    NoSlotMemory = 11,
    /// Deleting this capability would destroy a CNode that still holds capabilities.
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
    /// The object this capability depends on was destroyed.
    DeadObject = 29,

    /// The system-call number is not one of [`crate::Syscall`].
    InvalidSyscall = 64,
    /// The capability pointer does not resolve to a slot in the caller's CSpace.
    LookupFailed = 65,
    /// The label is not an invocation of this capability's object kind.
    InvalidInvocation = 66,
    /// An argument is out of range for the invocation (the invocation's
    /// documentation says which).
    InvalidArgument = 67,
    /// The message is shorter than the invocation's arguments, or carries
    /// fewer capabilities than it needs.
    TruncatedMessage = 68,
    /// The [`crate::MessageInfo`] word is malformed (length or capability
    /// count out of range, reserved bits set).
    InvalidMessage = 69,
    /// This kernel does not implement the operation yet (or a debug call in
    /// a kernel built without debug support).
    NotSupported = 70,
    /// A mapping needs a page table the address space does not have: map a
    /// PageTable object there first.
    MissingPageTable = 71,
    /// IO table memory is used up — the IoSpace's own, never another's.
    /// Each IoSpace reserves a fixed budget of the kernel's IOMMU table
    /// pages when it is created (64; kernel/README.md, "IOMMU capabilities
    /// at work"), and its stage-2 intermediate tables, VT-d shadow tables
    /// and SMMUv3 context descriptors are charged to it: a `Map`,
    /// `AttachNested` or `Invalidate` that could need more than it has left
    /// answers this, and no other IoSpace notices. Stage-2 tables go back
    /// with the IoSpace, a shadow or CD when its last device detaches:
    /// delete the IoSpace or detach first. On `UntypedRetype` of an
    /// IoSpace: the pool cannot reserve another budget (the most IoSpaces
    /// are live); delete one first. On an attach: the unit's own table
    /// pages (context and PASID tables) are used up.
    TableMemoryExhausted = 72,
    /// `PageTable.Unmap` of a table that still holds entries (mapped
    /// Frames or lower tables): unmap those first, so no table ever leaves
    /// an address space with contents.
    TableNotEmpty = 73,
    /// The thread lacks an address space, a CSpace or an IPC buffer: it was
    /// never `Tcb.Configure`d, or one of them died. It does not run until
    /// it is configured again.
    NotConfigured = 74,
    /// The IOMMU did not complete an invalidation (its wait timed out or it
    /// refused a command). Fail closed: the invocation's capability changes
    /// stand, but every device that could still have used a stale
    /// translation is blocked (its entry cleared as by a detach; on
    /// SMMUv3, all DMA stops if even that is not confirmed). Detach and
    /// attach it again once the unit works.
    IommuTimeout = 75,
    /// The IoSpace already uses its share of the IOMMU unit: a quarter of
    /// its attachment records (16) or of its nests (8; stage-1 tables in
    /// use by a device). Detach a device first; other IoSpaces are not
    /// affected.
    IoShareExhausted = 76,
    /// `DebugCheckAbstraction` (kernels built with `fuzz-checks`): the
    /// kernel's page tables, IOMMU entries or interrupt remapping entries
    /// disagree with what the capability model says is mapped, attached or
    /// bound. The first disagreement is printed on the console.
    AbstractionBroken = 77,
    /// `IoFaultQueueRespond`: the queue never issued that page request id
    /// (0, an id above the last it issued, or a queue that never took a
    /// page request). Ids come from `IoFaultQueuePop` records with MR4 = 0.
    UnknownRequest = 80,
    /// `IoFaultQueueRespond`: the page request was answered already, by an
    /// earlier `Respond` (of it or of another request of its group) or by
    /// the kernel (`Failure` when its device or PASID was detached or its
    /// IoSpace deleted, or after the response deadline; `Invalid` is never
    /// late: it is answered before the record is queued).
    RequestAnswered = 81,
    /// `IoSpace.Map` or `IoSpace.BindUserTable` at an IPA of the MSI
    /// window: x86_64 `0xFEE0_0000..0xFEF0_0000` (the VT-d unit takes
    /// writes there as interrupt requests, never as DMA), aarch64 the last
    /// page of the IoSpace's IPA range, where the kernel maps the
    /// interrupt controller's doorbell for `IrqHandler.MsiMessage`. Pick
    /// another IPA; the window belongs to the kernel.
    MsiWindow = 83,
    /// The invocation belongs to a kernel feature this kernel was built
    /// without (kernel/Cargo.toml: `sva` for `BindVSpace`, `dirty` for
    /// `SetDirtyTracking` / `ReadDirty`, `page-requests` for
    /// `IoFaultQueueRespond`); the unit may well support it. Unlike
    /// `NotSupported` (the hardware or this kernel version cannot), booting
    /// a kernel built with the feature makes it work. The kernel names the
    /// feature on its console, once per boot.
    NotBuilt = 85,
}

impl Error {
    /// The fixed error number.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Every error, in code order.
    pub const ALL: [Error; 47] = [
        Error::InvalidSlot,
        Error::EmptySlot,
        Error::SlotOccupied,
        Error::WrongKind,
        Error::InsufficientRights,
        Error::InvalidRights,
        Error::InvalidSize,
        Error::UntypedExhausted,
        Error::DeviceMemory,
        Error::ObjectTableFull,
        Error::NoSlotMemory,
        Error::CnodeNotEmpty,
        Error::NotBadgeable,
        Error::AlreadyBadged,
        Error::InvalidAddress,
        Error::AddressInUse,
        Error::AlreadyMapped,
        Error::NotMapped,
        Error::AlreadyAttached,
        Error::NotAttached,
        Error::WrongUnit,
        Error::NoDomainIds,
        Error::OutOfScope,
        Error::DeviceInUse,
        Error::PasidOutOfRange,
        Error::PasidInUse,
        Error::DeviceNotAttached,
        Error::SpaceMismatch,
        Error::DeadObject,
        Error::InvalidSyscall,
        Error::LookupFailed,
        Error::InvalidInvocation,
        Error::InvalidArgument,
        Error::TruncatedMessage,
        Error::InvalidMessage,
        Error::NotSupported,
        Error::MissingPageTable,
        Error::TableMemoryExhausted,
        Error::TableNotEmpty,
        Error::NotConfigured,
        Error::IommuTimeout,
        Error::IoShareExhausted,
        Error::AbstractionBroken,
        Error::UnknownRequest,
        Error::RequestAnswered,
        Error::MsiWindow,
        Error::NotBuilt,
    ];

    /// The error with this number, if any.
    pub fn from_code(code: u8) -> Option<Error> {
        Error::ALL.iter().copied().find(|e| e.code() == code)
    }
}

/// The model's error with the same name and number. The match is
/// exhaustive: a new model error does not compile until the ABI names it.
impl From<caps::Error> for Error {
    fn from(error: caps::Error) -> Error {
        use caps::Error as M;
        match error {
            M::InvalidSlot => Error::InvalidSlot,
            M::EmptySlot => Error::EmptySlot,
            M::SlotOccupied => Error::SlotOccupied,
            M::WrongKind => Error::WrongKind,
            M::InsufficientRights => Error::InsufficientRights,
            M::InvalidRights => Error::InvalidRights,
            M::InvalidSize => Error::InvalidSize,
            M::UntypedExhausted => Error::UntypedExhausted,
            M::DeviceMemory => Error::DeviceMemory,
            M::ObjectTableFull => Error::ObjectTableFull,
            M::NoSlotMemory => Error::NoSlotMemory,
            M::CnodeNotEmpty => Error::CnodeNotEmpty,
            M::NotBadgeable => Error::NotBadgeable,
            M::AlreadyBadged => Error::AlreadyBadged,
            M::InvalidAddress => Error::InvalidAddress,
            M::AddressInUse => Error::AddressInUse,
            M::AlreadyMapped => Error::AlreadyMapped,
            M::NotMapped => Error::NotMapped,
            M::AlreadyAttached => Error::AlreadyAttached,
            M::NotAttached => Error::NotAttached,
            M::WrongUnit => Error::WrongUnit,
            M::NoDomainIds => Error::NoDomainIds,
            M::OutOfScope => Error::OutOfScope,
            M::DeviceInUse => Error::DeviceInUse,
            M::PasidOutOfRange => Error::PasidOutOfRange,
            M::PasidInUse => Error::PasidInUse,
            M::DeviceNotAttached => Error::DeviceNotAttached,
            M::SpaceMismatch => Error::SpaceMismatch,
            M::DeadObject => Error::DeadObject,
        }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{self:?} ({})", self.code())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::Error;
    use std::format;

    #[test]
    fn codes_are_unique_and_sorted() {
        for pair in Error::ALL.windows(2) {
            assert!(
                pair[0].code() < pair[1].code(),
                "{:?} / {:?}",
                pair[0],
                pair[1]
            );
        }
        for error in Error::ALL {
            assert_eq!(Error::from_code(error.code()), Some(error));
        }
        assert_eq!(Error::from_code(0), None);
    }

    /// The model's errors keep their names and numbers through the ABI.
    #[test]
    fn mirrors_the_capability_model() {
        let mut mirrored = 0;
        for abi in Error::ALL.iter().filter(|e| e.code() < 64) {
            let found = MODEL_ERRORS.iter().find(|m| m.code() == abi.code());
            let Some(&model) = found else {
                panic!("{abi:?} has no model error")
            };
            assert_eq!(Error::from(model), *abi);
            assert_eq!(format!("{model:?}"), format!("{abi:?}"));
            mirrored += 1;
        }
        assert_eq!(mirrored, MODEL_ERRORS.len());
    }

    const MODEL_ERRORS: [caps::Error; 29] = [
        caps::Error::InvalidSlot,
        caps::Error::EmptySlot,
        caps::Error::SlotOccupied,
        caps::Error::WrongKind,
        caps::Error::InsufficientRights,
        caps::Error::InvalidRights,
        caps::Error::InvalidSize,
        caps::Error::UntypedExhausted,
        caps::Error::DeviceMemory,
        caps::Error::ObjectTableFull,
        caps::Error::NoSlotMemory,
        caps::Error::CnodeNotEmpty,
        caps::Error::NotBadgeable,
        caps::Error::AlreadyBadged,
        caps::Error::InvalidAddress,
        caps::Error::AddressInUse,
        caps::Error::AlreadyMapped,
        caps::Error::NotMapped,
        caps::Error::AlreadyAttached,
        caps::Error::NotAttached,
        caps::Error::WrongUnit,
        caps::Error::NoDomainIds,
        caps::Error::OutOfScope,
        caps::Error::DeviceInUse,
        caps::Error::PasidOutOfRange,
        caps::Error::PasidInUse,
        caps::Error::DeviceNotAttached,
        caps::Error::SpaceMismatch,
        caps::Error::DeadObject,
    ];
}
