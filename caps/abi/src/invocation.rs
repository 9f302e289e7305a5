//! Invocation labels: the one description of every capability invocation.
//!
//! An invocation is a `Call` on a capability with this label in its
//! [`MessageInfo`](crate::MessageInfo). "MRn" is message register n; "cap n"
//! is the n-th extra capability of the message. Slots are indices into the
//! caller's CSpace. Unless said otherwise an invocation needs the `Write`
//! right on the invoked capability and replies with no message registers.
//! Every invocation may also fail with [`LookupFailed`](crate::Error::LookupFailed)
//! (a slot argument that does not resolve), [`TruncatedMessage`](crate::Error::TruncatedMessage)
//! (too few MRs or caps), [`InvalidInvocation`](crate::Error::InvalidInvocation)
//! (label not valid for the object), [`InsufficientRights`](crate::Error::InsufficientRights)
//! and [`IommuTimeout`](crate::Error::IommuTimeout) (an IOMMU invalidation
//! the invocation needed failed or timed out; the devices it was for are
//! blocked).

/// Every invocation label, grouped by the object kind it applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Invocation {
    /// Untyped: create `MR3` objects of type `MR0` ([`ObjectType`]) and size
    /// `2^MR1` bytes (Untyped, CNode slots, Frame: 12 or 21; ignored for
    /// fixed-size kinds) into slots `MR2..MR2+MR3`. An IoSpace needs the
    /// unit's IommuControl as cap 0. Errors: `InvalidArgument` (type),
    /// `InvalidSize`, `UntypedExhausted`, `DeviceMemory`, `SlotOccupied`,
    /// `ObjectTableFull`, `NoDomainIds`.
    UntypedRetype = 1,

    /// CNode: copy slot `MR1` into empty slot `MR0` with rights `MR2 & source rights`.
    /// With an extra capability (cap 0, a CNode), `MR1` is a slot of that
    /// CNode instead (copy, mint and move between CNodes).
    /// Errors: `EmptySlot`, `SlotOccupied`.
    CnodeCopy = 10,
    /// CNode: like copy, and set badge `MR3` (Endpoint, Notification only).
    /// Errors: `NotBadgeable`, `AlreadyBadged`, as copy.
    CnodeMint = 11,
    /// CNode: move slot `MR1` to empty slot `MR0`. Errors: as copy.
    CnodeMove = 12,
    /// CNode: delete the capability in slot `MR0`; the last capability to an
    /// object destroys it and everything that depended on it (IO mappings,
    /// attachments, PASID bindings) before the call returns.
    /// Errors: `CnodeNotEmpty`.
    CnodeDelete = 13,
    /// CNode: delete every capability derived from slot `MR0`, with the same
    /// strictness as delete.
    CnodeRevoke = 14,

    /// Tcb: set the CSpace (cap 0, a CNode: the thread's capability pointers
    /// index it), the VSpace (cap 1: a PageTable, which becomes an address
    /// space's root), the IPC buffer (cap 2, a 4 KiB Frame the thread maps
    /// at `abi::ipc::IPC_BUFFER_ADDRESS`; `MR1` is reserved, 0) and the
    /// fault endpoint slot `MR0` of the caller's CSpace (0: none). Errors:
    /// `AlreadyMapped` (cap 1 is installed as a lower-level table),
    /// `InvalidSize` (cap 2 is not 4 KiB), `DeviceMemory` (cap 2 is a Frame
    /// of device memory), `ObjectTableFull` (the kernel holds no more
    /// thread CSpaces).
    TcbConfigure = 20,
    /// Tcb: set priority `MR0` (0..=255). Errors: `InvalidArgument`.
    TcbSetPriority = 21,
    /// Tcb: set program counter `MR0`, stack pointer `MR1`, first argument `MR2`.
    /// Errors: `InvalidArgument` (the program counter or stack pointer is
    /// outside user space).
    TcbWriteRegisters = 22,
    /// Tcb: make the thread runnable. Errors: `NotConfigured` (it has no
    /// address space, CSpace or IPC buffer: `TcbConfigure` first),
    /// `ObjectTableFull` (the kernel's thread records are full).
    TcbResume = 23,
    /// Tcb: stop the thread.
    TcbSuspend = 24,
    /// Tcb: send this thread's faults to the endpoint in slot `MR0` (of the
    /// caller's CSpace) as [`FAULT_LABEL`] messages; the handler's reply
    /// resumes the thread (MR0 = 0) or stops it (MR0 != 0). Errors:
    /// `WrongKind` (not an endpoint), `InsufficientRights` (no write right).
    TcbSetFaultHandler = 25,

    /// Frame: map into the VSpace cap 0 (a PageTable used as an address
    /// space's root) at address `MR0` with rights `MR1`
    /// (bit 0 read, 1 write, 2 execute; read and write at most the cap's;
    /// execute only without write). Every page-table level above the page
    /// must be present. A Frame of device memory (from a device Untyped)
    /// maps uncached / Device-nGnRE and never executable. Errors:
    /// `AlreadyMapped` (this copy holds a mapping), `InvalidAddress`
    /// (misaligned, outside user space), `AddressInUse`, `InvalidRights`,
    /// `InsufficientRights`, `MissingPageTable`, `DeviceMemory` (execute
    /// asked of device memory), `ObjectTableFull` (cap 0 is not an address
    /// space's root yet and the kernel's page-table records are full).
    FrameMap = 30,
    /// Frame: remove this capability's mapping (CPU or IO). Errors: `NotMapped`.
    FrameUnmap = 31,
    /// PageTable: install as the highest missing table level of the VSpace
    /// cap 0 on the way to address `MR0`. Errors: `AddressInUse` (every level
    /// is present), `InvalidAddress`, `AlreadyMapped` (this table is already
    /// installed, or is an address space's root), `ObjectTableFull` (the
    /// kernel's page-table records are full).
    PageTableMap = 32,
    /// PageTable: remove from its VSpace; only an empty table leaves.
    /// Devices bound to a VSpace (`IoDeviceBindVSpace`) forget their
    /// cached translations before it returns. Errors: `NotMapped`,
    /// `TableNotEmpty` (it still holds an entry), `IommuTimeout` (a bound
    /// device's invalidation was not confirmed: the device is blocked).
    PageTableUnmap = 33,

    /// IrqControl: create a handler for line `MR0` in slot `MR1`.
    /// Errors: `OutOfScope` (no such line, or not one a user may own),
    /// `ObjectTableFull` (the kernel's line records are full), `DeviceInUse`.
    IrqControlGet = 40,
    /// IrqHandler: acknowledge, so the line can fire again.
    IrqHandlerAck = 41,
    /// IrqHandler: deliver the line to the notification cap 0 (write
    /// right), and unmask it. Errors: the lookup errors of cap 0.
    IrqHandlerSetNotification = 42,
    /// IrqHandler of an MSI line, for the IoDevice cap 0 (write right):
    /// reply MR0 the message address, MR1 the message data that device must
    /// write to raise it (program them into its MSI or MSI-X capability).
    /// x86_64 (lines 16..32): with interrupt remapping the line's remapping
    /// entry then accepts that device's requester id only, until the
    /// handler or the IoDevice is deleted. aarch64 (the GICv2m frame's
    /// SPIs): the kernel maps the GICv2m doorbell write-only into the
    /// IoSpace the device is attached to, at the last page of its IPA range
    /// (once; it stays for the IoSpace's life), and answers that IPA plus
    /// the doorbell's offset and the line's INTID; a nested device reaches
    /// it through an IOVA its driver maps there in stage 1. Errors:
    /// `InvalidArgument` (not an MSI line), `DeviceNotAttached` (aarch64:
    /// the device is not attached), `TableMemoryExhausted` (aarch64: the
    /// IoSpace's table reservation cannot hold the doorbell's walk),
    /// `TruncatedMessage` (no cap 0), the lookup errors of cap 0.
    IrqHandlerMsiMessage = 43,

    /// IommuControl (read right): reply MR0 vendor (1 VT-d, 2 SMMUv3), MR1
    /// translation bits (0 stage 1: `IoDeviceBindVSpace` can work; 1 stage
    /// 2; 2 hardware nesting, 3 shadow nesting; 4 IoSpaces are
    /// first-stage tables: VT-d with FLTS and no SLTS, QEMU `x-flts=on`;
    /// devices attach to IoSpaces where bit 1 or bit 4 is set), MR2 PASID width in bits, MR3 supported page sizes as a bit
    /// set of log2 sizes, MR4 number of domain ids, MR5 dirty tracking
    /// (bit 0: `IoSpaceSetDirtyTracking` / `IoSpaceReadDirty` work, the
    /// unit updates dirty state in IoSpace tables: VT-d ECAP.SLADS in
    /// scalable mode, or first-stage IoSpaces (MR1 bit 4), SMMUv3
    /// IDR0.HTTU = 2; bit 1: the unit sets accessed / dirty
    /// bits in first-stage (driver) tables, VT-d ECAP.FLTS; bit 2: page
    /// requests reach `IoFaultQueue`s as recoverable records, answered with
    /// `IoFaultQueueRespond`: VT-d ECAP.PRS in scalable mode, SMMUv3
    /// IDR0.PRI; clear on QEMU, where no device raises them; bit 3:
    /// faulting transactions stall and reach the queues as the same
    /// records, answered the same way: SMMUv3 IDR0.STALL_MODEL 0b00 or
    /// 0b10; clear on QEMU and VT-d).
    IommuIdentify = 50,
    /// IommuControl: create the IoDevice for requester (PCI RID / StreamID)
    /// `MR0` in slot `MR1`. Errors: `OutOfScope` (not in the unit's device
    /// scope), `DeviceInUse`.
    IommuMintDevice = 51,

    /// IoDevice: translate the device's DMA with the IoSpace cap 0 (its
    /// stage 2; on a VT-d unit with first-stage translation only, QEMU
    /// `x-flts=on`, a first-stage table entered through the RID_PASID
    /// entry). Errors: `WrongKind` (cap 0 is not an IoSpace),
    /// `AlreadyAttached` (attached, or bound to a VSpace), `NotSupported`
    /// (the unit can translate through neither), `WrongUnit`, `TableMemoryExhausted` (the IoSpace's table reservation
    /// cannot serve the unit's tables), `ObjectTableFull` (the unit's
    /// attachment or nest records are full), `IoShareExhausted` (the
    /// IoSpace already holds its share of them).
    IoDeviceAttach = 60,
    /// IoDevice: translate the device's DMA with the IoUserTable cap 0 as
    /// stage 1, nested under its IoSpace. Errors: as attach, `DeadObject`,
    /// `NotSupported` also where the unit has no stage 2 (VT-d first stage
    /// only, QEMU `x-flts=on`: nesting composes through a stage 2).
    IoDeviceAttachNested = 61,
    /// IoDevice: block the device's DMA again (ending an IoSpace attachment
    /// or a VSpace binding). Errors: `NotAttached`.
    IoDeviceDetach = 62,
    /// IoDevice: create the IoPasid for PASID `MR0` in slot `MR1`.
    /// Errors: `PasidOutOfRange`, `PasidInUse`.
    IoDeviceMintPasid = 63,
    /// IoDevice (write right): SVA. Translate the device's DMA with the
    /// CPU address space whose root is the PageTable cap 0 (write right,
    /// as `FrameMap` asks of it), first stage only: the device names
    /// memory by the virtual addresses the driver's threads use, with the
    /// rights of their leaves. VT-d: the RID_PASID entry with PGTT = first
    /// stage (x86 paging format), requests without supervisor privilege,
    /// so the kernel half (supervisor-only entries) faults; SMMUv3: a
    /// stage-1-only STE and a CD with TTB0 = the root (no TTB1: the
    /// kernel half does not exist for the device). Every CPU leaf cleared
    /// in the VSpace afterwards (`FrameUnmap`, a delete or revoke) is
    /// invalidated in the device's IOTLB and waited for before that call
    /// returns. Device memory the VSpace maps (the driver's own register
    /// windows) is reachable by the device too, with the leaf's rights and
    /// the CPU's memory type: peer-to-peer access the driver's threads
    /// already have through the same Frames (kernel/README.md, "SVA").
    /// `IoDeviceDetach` ends the binding (so does
    /// deleting the IoDevice or the root). Errors: `NotBuilt` (a kernel
    /// built without its `sva` feature: the release kernel; checked
    /// first), `TruncatedMessage` (no
    /// cap 0), `WrongKind` (cap 0 is not a PageTable),
    /// `InsufficientRights` (no write right on either cap), `AlreadyMapped`
    /// (cap 0 is installed below another table, not a root),
    /// `AlreadyAttached` (the device is attached to an IoSpace or bound
    /// already), `NotSupported` (the unit has no first stage it can be
    /// given: VT-d without ECAP.FLTS in scalable mode, e.g. QEMU without
    /// `x-flts=on`; SMMUv3 without IDR0.S1P), `ObjectTableFull` (the kernel's binding or
    /// page-table records are full), `TableMemoryExhausted` (the unit's
    /// table pages), `IommuTimeout` (the unit did not confirm; the device
    /// stays blocked), `DeadObject`.
    IoDeviceBindVSpace = 64,

    /// IoSpace: map the Frame cap 0 at IPA `MR0` with rights `MR1` (bit 0
    /// read, 1 write; at most the Frame cap's). Errors: `InvalidAddress`
    /// (misaligned, out of range, or in the reserved kernel window),
    /// `MsiWindow` (overlaps the MSI window: x86_64 `0xFEE0_0000..
    /// 0xFEF0_0000`, aarch64 the MSI doorbell page, the last of the IPA
    /// range), `AddressInUse`, `AlreadyMapped`, `InvalidRights`,
    /// `DeviceMemory` (cap 0 is device memory), `TableMemoryExhausted` (the
    /// IoSpace's table reservation is used up), `NotSupported` (write
    /// without read on a unit whose IoSpaces are first-stage tables,
    /// `IommuIdentify` MR1 bit 4: x86 paging cannot refuse reads).
    IoSpaceMap = 70,
    /// IoSpace: unmap the Frame cap 0 from this space; caches are invalidated
    /// and the invalidation has completed when the call returns.
    IoSpaceUnmap = 71,
    /// IoSpace: create in slot `MR2` an IoUserTable rooted at IPA `MR0` in
    /// format `MR1` (1 x86 first-stage 4-level, 2 Arm VMSAv8-64 stage 1 4 KiB
    /// granule 48-bit). Errors: `InvalidAddress`, `MsiWindow` (the root in
    /// the MSI window), `InvalidArgument` (format not supported by the
    /// unit).
    IoSpaceBindUserTable = 72,
    /// IoSpace: turn dirty tracking of its stage 2 on (`MR0` = 1) or off
    /// (`MR0` = 0) for every device using it, now and later. Turning it on
    /// marks every mapped page clean and flushes the unit's caches, so the
    /// first `ReadDirty` reports what was written since; turning it off
    /// marks them dirty (SMMUv3 write-protects clean pages while tracking).
    /// Needs the write right. Errors: `NotBuilt` (a kernel built without
    /// its `dirty` feature: the release kernel; checked first),
    /// `InvalidArgument` (`MR0` > 1),
    /// `NotSupported` (the unit cannot track: `IommuIdentify` MR5 bit 0
    /// clear; QEMU's SMMUv3, and its VT-d without `x-flts=on`, where
    /// IoSpaces are second-stage tables QEMU never marks),
    /// `InsufficientRights` (no write right), `DeadObject`, `IommuTimeout`
    /// (the unit did not confirm a flush; the IoSpace's devices are then
    /// blocked).
    IoSpaceSetDirtyTracking = 73,
    /// IoSpace: report which of the pages `MR0`, `MR0` + 4 KiB, ... (`MR1`
    /// pages) were written by DMA since tracking started or their last
    /// clear, as a bitmap in the Frame cap 0 (write right; bit `i` of the
    /// little-endian 64-bit words from its first byte is page `i`; bits of
    /// pages not processed are 0), and with `MR2` bit 0 mark them clean
    /// again. Clearing is followed by the invalidation of the IoSpace's
    /// caches before the call returns, so a later write sets the bit again
    /// and no write is lost. A 2 MiB mapping is reported as all its pages.
    /// At most [`READ_DIRTY_PAGES`] pages per call: replies MR0 = the first
    /// IPA not processed (`MR0` + 4 KiB x `MR1` when done; call again from
    /// there), MR1 = dirty pages reported. Errors: `NotBuilt` (as
    /// `IoSpaceSetDirtyTracking`), `InvalidAddress`
    /// (`MR0` not page aligned, the range wraps or leaves the IPA range),
    /// `InvalidArgument` (`MR2` has bits other than bit 0 set),
    /// `NotSupported` (as `IoSpaceSetDirtyTracking`, or tracking is off),
    /// `WrongKind` (cap 0 is not a Frame), `InsufficientRights` (no write
    /// right on the IoSpace or on cap 0), `DeviceMemory` (cap 0 is device
    /// memory), `IommuTimeout`.
    IoSpaceReadDirty = 74,

    /// IoUserTable: the driver changed its stage-1 entries for IOVAs
    /// `MR0..MR0+MR1` (`MR1` = 0: everything); make the hardware see them.
    /// Replies MR0 = the first IOVA not yet processed (equal to the end when
    /// done; shadow nesting bounds the work per call, so call again from
    /// there), MR1 = the invalidation commands issued. Errors:
    /// `InvalidAddress` (`MR0` or `MR1` not page aligned, or the range
    /// wraps), `DeadObject` (its IoSpace died), `TableMemoryExhausted`
    /// (shadow nesting: the IoSpace's table reservation), `IommuTimeout`.
    IoUserTableInvalidate = 80,

    /// IoPasid: attach to the IoUserTable or IoSpace cap 0 (which must use the
    /// device's IoSpace). Errors: `NotSupported` (the unit has no PASIDs,
    /// or, for an IoUserTable, no stage 2: VT-d first stage only, QEMU
    /// `x-flts=on`),
    /// `DeviceNotAttached`, `SpaceMismatch`, `AlreadyAttached`, and the
    /// unit's room errors of `IoDeviceAttach`.
    IoPasidAttach = 90,
    /// IoPasid: detach; a PASID bound to a VSpace (`IoPasidBindVSpace`) is
    /// unbound (its entry blocks). Errors: `NotAttached`.
    IoPasidDetach = 91,
    /// IoPasid: SVA for one PASID: the device's DMA tagged with this
    /// PASID translates through the CPU address space whose root
    /// PageTable is cap 0, as `IoDeviceBindVSpace` does for its untagged
    /// DMA (first stage only, user requests: the kernel half faults;
    /// every CPU unmap in the VSpace invalidates the PASID's IOTLB entries
    /// before it returns). Both caps need the write right (the `caps`
    /// rule `pasid_bind_access`). Errors: `NotBuilt` (as
    /// `IoDeviceBindVSpace`), `InsufficientRights`,
    /// `AlreadyMapped` (cap 0 is not a root), `AlreadyAttached` (the
    /// IoPasid is attached or bound, or its PASID's entry is in use: on
    /// VT-d PASID 0 is the device's own), `NotSupported` (VT-d without
    /// ECAP.FLTS and ECAP.PASID in scalable mode; SMMUv3 always: a
    /// substream's CD is fetched through the stream's stage 2),
    /// `ObjectTableFull`, `TableMemoryExhausted`, `IommuTimeout`,
    /// `DeadObject` (its IoDevice is gone).
    IoPasidBindVSpace = 92,

    /// IoFaultQueue: signal the notification cap 0 (write right) when a
    /// record arrives, and deliver faults of the IoDevice or IoSpace cap 1
    /// here. Errors: `TruncatedMessage` (fewer than two caps), the lookup
    /// errors of cap 0, `ObjectTableFull` (the kernel's queue records are
    /// full).
    IoFaultQueueBind = 100,
    /// IoFaultQueue (read right): take the oldest record; length 0 when
    /// empty. Two kinds share one layout of six words:
    ///
    /// | MR | unrecoverable fault | page request (recoverable) |
    /// |---|---|---|
    /// | 0 | badge of the bound device / IoSpace cap | same |
    /// | 1 | PASID, `u64::MAX` for none | same |
    /// | 2 | faulting address (VT-d: page aligned) | the page (4 KiB aligned) |
    /// | 3 | access: bit 0 read, bit 1 write | bit 0 read, 1 write, 2 execute, 3 privileged |
    /// | 4 | stage that faulted: 1 or 2 | 0 |
    /// | 5 | vendor reason (VT-d fault reason, SMMUv3 event code) | request id for `IoFaultQueueRespond` (from 1, per queue, never reused) |
    ///
    /// A page request's device waits until it is answered: by
    /// `IoFaultQueueRespond`, or by the kernel (`Failure` when this queue
    /// dies, when the requester's device or PASID is detached, its
    /// capability deleted or its IoSpace deleted, and after the response
    /// deadline, about a second; `Invalid` at once, with no record, when
    /// no queue takes the request or the queue's records or its 16
    /// unanswered requests are full). kernel/README.md, "Recoverable IO
    /// page faults".
    IoFaultQueuePop = 101,
    /// IoFaultQueue (write right): answer page request `MR0` (an id from a
    /// `Pop` record with MR4 = 0) with `MR1`: 0 Success (the page is
    /// mapped and, for a stage 1, invalidated: the device retries), 1
    /// Invalid (the device reports an error for this request), 2 Failure
    /// (the device reports an error and stops making page requests). The
    /// answer covers the other requests of the same page request group
    /// in this queue. A stalled transaction's record (SMMUv3) is answered
    /// by CMD_RESUME: Success retries it, Invalid and Failure abort it.
    /// Errors: `NotBuilt` (a kernel built without its `page-requests`
    /// feature: the release kernel; checked first), `NotSupported` (the
    /// unit takes no page requests and does
    /// not stall: `IommuIdentify` MR5 bits 2 and 3 clear, as on QEMU, so
    /// no id was ever issued), `InvalidArgument` (`MR1` > 2),
    /// `TruncatedMessage` (fewer than 2 words), `InsufficientRights` (no
    /// write right), `UnknownRequest` (this queue never issued `MR0`),
    /// `RequestAnswered` (answered already, by a `Respond` or by the
    /// kernel), `IommuTimeout` (the unit did not complete the answer; it
    /// counts as answered).
    IoFaultQueueRespond = 102,
}

impl Invocation {
    /// Every label.
    pub const ALL: [Invocation; 39] = [
        Invocation::UntypedRetype,
        Invocation::CnodeCopy,
        Invocation::CnodeMint,
        Invocation::CnodeMove,
        Invocation::CnodeDelete,
        Invocation::CnodeRevoke,
        Invocation::TcbConfigure,
        Invocation::TcbSetPriority,
        Invocation::TcbWriteRegisters,
        Invocation::TcbResume,
        Invocation::TcbSuspend,
        Invocation::TcbSetFaultHandler,
        Invocation::FrameMap,
        Invocation::FrameUnmap,
        Invocation::PageTableMap,
        Invocation::PageTableUnmap,
        Invocation::IrqControlGet,
        Invocation::IrqHandlerAck,
        Invocation::IrqHandlerSetNotification,
        Invocation::IrqHandlerMsiMessage,
        Invocation::IommuIdentify,
        Invocation::IommuMintDevice,
        Invocation::IoDeviceAttach,
        Invocation::IoDeviceAttachNested,
        Invocation::IoDeviceDetach,
        Invocation::IoDeviceMintPasid,
        Invocation::IoDeviceBindVSpace,
        Invocation::IoSpaceMap,
        Invocation::IoSpaceUnmap,
        Invocation::IoSpaceBindUserTable,
        Invocation::IoSpaceSetDirtyTracking,
        Invocation::IoSpaceReadDirty,
        Invocation::IoUserTableInvalidate,
        Invocation::IoPasidAttach,
        Invocation::IoPasidDetach,
        Invocation::IoPasidBindVSpace,
        Invocation::IoFaultQueueBind,
        Invocation::IoFaultQueuePop,
        Invocation::IoFaultQueueRespond,
    ];

    /// The label with this number, if any.
    pub fn from_label(label: u32) -> Option<Invocation> {
        Invocation::ALL.iter().copied().find(|i| *i as u32 == label)
    }
}

/// Most pages one `IoSpaceReadDirty` processes (a 64-byte bitmap); a
/// larger request answers where it stopped.
pub const READ_DIRTY_PAGES: u64 = 512;

/// The label of a fault message: a thread's CPU exception, delivered to its
/// fault handler as if the thread had called it. MR0 = exception (x86_64
/// vector; aarch64 ESR exception class), MR1 = faulting address (CR2 / FAR),
/// MR2 = program counter, MR3 = error code / syndrome; the badge is the
/// fault endpoint capability's.
pub const FAULT_LABEL: u32 = 0xFA17;

/// The kinds `UntypedRetype` creates (numbers as `caps::ObjectKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum ObjectType {
    /// A smaller Untyped.
    Untyped = 0,
    /// A CNode of `2^size` slots.
    Cnode = 1,
    /// A thread.
    Tcb = 2,
    /// An IPC endpoint.
    Endpoint = 3,
    /// A notification.
    Notification = 4,
    /// A 4 KiB or 2 MiB frame.
    Frame = 5,
    /// A CPU page-table page.
    PageTable = 6,
    /// A stage-2 IO domain (needs the IommuControl as cap 0).
    IoSpace = 11,
    /// An IO fault queue.
    IoFaultQueue = 14,
}

impl ObjectType {
    /// The type with this number, if `Retype` can create it.
    pub fn from_number(number: u64) -> Option<ObjectType> {
        Some(match number {
            0 => ObjectType::Untyped,
            1 => ObjectType::Cnode,
            2 => ObjectType::Tcb,
            3 => ObjectType::Endpoint,
            4 => ObjectType::Notification,
            5 => ObjectType::Frame,
            6 => ObjectType::PageTable,
            11 => ObjectType::IoSpace,
            14 => ObjectType::IoFaultQueue,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        for invocation in Invocation::ALL {
            assert_eq!(Invocation::from_label(invocation as u32), Some(invocation));
        }
        assert_eq!(Invocation::from_label(0), None);
        assert_eq!(Invocation::from_label(9999), None);
    }

    #[test]
    fn object_types_match_the_model() {
        use caps::ObjectKind as K;
        for (abi, model) in [
            (ObjectType::Untyped, K::Untyped),
            (ObjectType::Cnode, K::CNode),
            (ObjectType::Tcb, K::Tcb),
            (ObjectType::Endpoint, K::Endpoint),
            (ObjectType::Notification, K::Notification),
            (ObjectType::Frame, K::Frame),
            (ObjectType::PageTable, K::PageTable),
            (ObjectType::IoSpace, K::IoSpace),
            (ObjectType::IoFaultQueue, K::IoFaultQueue),
        ] {
            assert_eq!(abi as u64, model as u64, "{abi:?}");
            assert_eq!(ObjectType::from_number(abi as u64), Some(abi));
        }
    }
}
