//! One method per capability invocation (`abi::Invocation`), on the
//! [`Cap`] of the kind it applies to.
//!
//! Each method's documentation names the label, says what the kernel does
//! and which errors it names, following `abi`'s interface description
//! (which stays the reference). Besides the errors listed, every invocation
//! may fail with [`Error::LookupFailed`] (a slot that does not resolve),
//! [`Error::TruncatedMessage`], [`Error::InvalidInvocation`] (the slot holds
//! another kind of object) and [`Error::InsufficientRights`]; unless said
//! otherwise it needs the `Write` right on the invoked capability. An error
//! means nothing changed.
//!
//! Slot arguments are [`Slot`]s of the caller's CSpace (of the invoked
//! CNode for `CNode` invocations). Methods that create a capability take
//! the destination slot and return the [`Cap`] for it, its kind given by
//! the method (`retype::<T>`, the source's kind for copy, mint and move).

use crate::cap::{
    CNode, Cap, CapType, Endpoint, FixedSize, Frame, IoDevice, IoFaultQueue, IoPasid, IoSpace,
    IoUserTable, IommuControl, IrqControl, IrqHandler, Notification, PageTable, Retype, Slot, Tcb,
    Untyped,
};
use crate::syscall::{UNKNOWN_STATUS, status_to_result, syscall};
use crate::{Error, Invocation, MessageInfo, ObjectType, Rights, bootinfo, ipc};
use abi::Syscall;

/// What an invocation's reply carried: its message word and registers 0..4
/// (registers 4.. are in the IPC buffer, [`ipc::mr`]).
#[derive(Clone, Copy, Debug)]
struct Reply {
    info: MessageInfo,
    mrs: [u64; 4],
}

/// Invokes `cap` with `label`, message registers `mrs` (at most 4) and the
/// extra capabilities `caps`, which go to the IPC buffer.
fn invoke<T: CapType>(
    cap: Cap<T>,
    label: Invocation,
    mrs: &[u64],
    caps: &[Slot],
) -> Result<Reply, Error> {
    let mut registers = [0; 4];
    registers[..mrs.len()].copy_from_slice(mrs);
    for (index, slot) in caps.iter().enumerate() {
        ipc::set_cap(index, *slot);
    }
    let info = MessageInfo {
        label: label as u32,
        length: mrs.len() as u8,
        extra_caps: caps.len() as u8,
    };
    let out = syscall(
        Syscall::Call as u64,
        u64::from(cap.slot().index()),
        info.to_word(),
        registers,
    );
    status_to_result(out.status)?;
    let info = MessageInfo::from_word(out.info).map_err(|_| UNKNOWN_STATUS)?;
    Ok(Reply { info, mrs: out.mrs })
}

/// Invokes and expects nothing back but the status.
fn invoke_status<T: CapType>(
    cap: Cap<T>,
    label: Invocation,
    mrs: &[u64],
    caps: &[Slot],
) -> Result<(), Error> {
    invoke(cap, label, mrs, caps).map(|_| ())
}

/// Rights of a CPU or IO mapping: bit 0 read, 1 write, 2 execute (CPU
/// mappings only). Never more than the Frame capability's rights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapRights(u64);

impl MapRights {
    /// Read only.
    pub const READ: MapRights = MapRights(1);
    /// Read and write.
    pub const READ_WRITE: MapRights = MapRights(3);
    /// Read and execute (CPU mappings).
    pub const READ_EXECUTE: MapRights = MapRights(5);
    /// Write only (a device that only writes).
    pub const WRITE: MapRights = MapRights(2);

    /// From raw bits (bit 0 read, 1 write, 2 execute); other bits are passed
    /// to the kernel as they are, which answers `InvalidRights`.
    pub const fn from_bits(bits: u64) -> MapRights {
        MapRights(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }
}

impl Cap<Untyped> {
    /// `UntypedRetype` of one object of a fixed-size kind `T` ([`Tcb`],
    /// [`Endpoint`](crate::Endpoint), [`Notification`], [`PageTable`],
    /// [`IoFaultQueue`]) into the empty slot `dest`; the kind is named once,
    /// by `T`: `untyped.retype::<Endpoint>(slot)`.
    ///
    /// Errors: `UntypedExhausted`, `DeviceMemory`, `SlotOccupied`,
    /// `ObjectTableFull`; a reply that does not say one object was made is
    /// [`UNKNOWN_STATUS`].
    pub fn retype<T: FixedSize>(self, dest: Slot) -> Result<Cap<T>, Error> {
        self.retype_sized::<T>(0, dest)
    }

    /// `UntypedRetype` of one object of kind `T` and `2^size_bits` bytes
    /// (Untyped any size the kernel allows, CNode `2^size_bits` slots'
    /// worth, Frame 12 or 21; ignored for fixed-size kinds) into the empty
    /// slot `dest`.
    ///
    /// Errors: as [`retype`](Cap::retype), and `InvalidSize`.
    pub fn retype_sized<T: Retype>(self, size_bits: u8, dest: Slot) -> Result<Cap<T>, Error> {
        match self.retype_many::<T>(size_bits, dest, 1) {
            Ok(made) => Ok(made.first()),
            Err(RetypeError::Refused(error)) => Err(error),
            // One object asked for: a count other than 1 is not the ABI.
            Err(RetypeError::Partial { .. }) => Err(UNKNOWN_STATUS),
        }
    }

    /// `UntypedRetype` of `count` objects of kind `T` and `2^size_bits`
    /// bytes into the empty slots `first..first + count`.
    ///
    /// All or nothing: the kernel checks every destination and that all
    /// `count` objects fit (room in the Untyped, object records, DIDs)
    /// before it makes any, and replies with `count` (MR0). A reply with
    /// another count (no kernel sends one now) is [`RetypeError::Partial`],
    /// never `Ok`.
    ///
    /// Errors: [`RetypeError::Refused`] with `InvalidArgument` (count 0 or
    /// above the kernel's maximum), `InvalidSize`, `UntypedExhausted`,
    /// `DeviceMemory`, `SlotOccupied`, `ObjectTableFull`, `InvalidSlot`
    /// when nothing was made; [`RetypeError::Partial`] otherwise.
    pub fn retype_many<T: Retype>(
        self,
        size_bits: u8,
        first: Slot,
        count: u32,
    ) -> Result<Retyped<T>, RetypeError> {
        let reply = invoke(
            self,
            Invocation::UntypedRetype,
            &[
                T::OBJECT_TYPE as u64,
                u64::from(size_bits),
                u64::from(first.index()),
                u64::from(count),
            ],
            &[],
        )
        .map_err(RetypeError::Refused)?;
        made(reply, first, count)
    }

    /// `UntypedRetype` of one IoSpace, a stage-2 IO domain of the unit
    /// `control` (cap 0), into the empty slot `dest`.
    ///
    /// Errors: as [`retype`](Cap::retype), `NoDomainIds` (every DID/VMID
    /// of the unit is in use), and `TableMemoryExhausted` (the kernel cannot
    /// reserve the new IoSpace's table pages: too many IoSpaces live).
    pub fn retype_io_space(
        self,
        control: Cap<IommuControl>,
        dest: Slot,
    ) -> Result<Cap<IoSpace>, Error> {
        let reply = invoke(
            self,
            Invocation::UntypedRetype,
            &[ObjectType::IoSpace as u64, 0, u64::from(dest.index()), 1],
            &[control.slot()],
        )?;
        match made::<IoSpace>(reply, dest, 1) {
            Ok(made) => Ok(made.first()),
            Err(RetypeError::Refused(error)) => Err(error),
            Err(RetypeError::Partial { .. }) => Err(UNKNOWN_STATUS),
        }
    }
}

/// Reads MR0 of a successful `UntypedRetype` reply: how many objects the
/// kernel made from `first`, of the `count` asked for.
fn made<T: CapType>(reply: Reply, first: Slot, count: u32) -> Result<Retyped<T>, RetypeError> {
    if reply.info.length < 1 {
        return Err(RetypeError::Refused(UNKNOWN_STATUS));
    }
    match u32::try_from(reply.mrs[0]) {
        Ok(made) if made == count => Ok(Retyped {
            first: Cap::from_slot(first),
            count,
        }),
        Ok(made) if made > 0 && made < count => Err(RetypeError::Partial {
            first,
            made,
            requested: count,
        }),
        _ => Err(RetypeError::Refused(UNKNOWN_STATUS)),
    }
}

/// The objects one `UntypedRetype` made: `count` capabilities of kind `T`
/// in consecutive slots from `first`.
pub struct Retyped<T: CapType> {
    first: Cap<T>,
    count: u32,
}

impl<T: CapType> Clone for Retyped<T> {
    fn clone(&self) -> Retyped<T> {
        *self
    }
}

impl<T: CapType> Copy for Retyped<T> {}

impl<T: CapType> PartialEq for Retyped<T> {
    fn eq(&self, other: &Retyped<T>) -> bool {
        (self.first, self.count) == (other.first, other.count)
    }
}

impl<T: CapType> Eq for Retyped<T> {}

impl<T: CapType> core::fmt::Debug for Retyped<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?} x{}", self.first, self.count)
    }
}

impl<T: CapType> Retyped<T> {
    /// The first object's capability.
    pub fn first(&self) -> Cap<T> {
        self.first
    }

    /// How many were made (all that were asked for).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The capability of object `index` (`None` from `count` on).
    pub fn get(&self, index: u32) -> Option<Cap<T>> {
        (index < self.count)
            .then(|| self.first.slot().checked_add(index))
            .flatten()
            .map(Cap::from_slot)
    }

    /// Every capability, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = Cap<T>> + '_ {
        (0..self.count).filter_map(|index| self.get(index))
    }
}

/// Why [`Cap::retype_many`] did not make everything it was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetypeError {
    /// The kernel refused: nothing was made.
    Refused(Error),
    /// The kernel replied that it made `made` objects (in
    /// `first..first + made`) of the `requested`. Retype is all or nothing
    /// in the kernel, so this means a reply the ABI does not allow.
    Partial {
        /// The first destination slot.
        first: Slot,
        /// How many objects were made.
        made: u32,
        /// How many were asked for.
        requested: u32,
    },
}

impl Cap<CNode> {
    /// `CnodeCopy`: copies `source` into the empty slot `dest` with rights
    /// `rights` & the source's rights, and returns the copy. Both slots are
    /// of this CNode, and the returned handle names `dest` as a capability
    /// pointer: that is, this CNode is the caller's CSpace (for another
    /// CNode use [`copy_from`](Cap::copy_from)).
    ///
    /// Errors: `EmptySlot`, `SlotOccupied`.
    pub fn copy<T: CapType>(
        self,
        dest: Slot,
        source: Cap<T>,
        rights: Rights,
    ) -> Result<Cap<T>, Error> {
        invoke_status(
            self,
            Invocation::CnodeCopy,
            &[
                u64::from(dest.index()),
                u64::from(source.slot().index()),
                u64::from(rights.bits()),
            ],
            &[],
        )?;
        Ok(Cap::from_slot(dest))
    }

    /// `CnodeCopy` between CNodes: copies slot `source` of `source_cnode`
    /// into the empty slot `dest` of this CNode, with `rights & source
    /// rights`. Either slot may be outside the caller's CSpace, so no
    /// handle comes back.
    ///
    /// Errors: `EmptySlot`, `SlotOccupied`, `InvalidSlot`.
    pub fn copy_from(
        self,
        dest: Slot,
        source_cnode: Cap<CNode>,
        source: Slot,
        rights: Rights,
    ) -> Result<(), Error> {
        invoke_status(
            self,
            Invocation::CnodeCopy,
            &[
                u64::from(dest.index()),
                u64::from(source.index()),
                u64::from(rights.bits()),
            ],
            &[source_cnode.slot()],
        )
    }

    /// `CnodeMint`: like [`copy`](Cap::copy), and sets `badge` (Endpoint
    /// and Notification capabilities only).
    ///
    /// Errors: `NotBadgeable`, `AlreadyBadged`, `EmptySlot`, `SlotOccupied`.
    pub fn mint<T: CapType>(
        self,
        dest: Slot,
        source: Cap<T>,
        rights: Rights,
        badge: u64,
    ) -> Result<Cap<T>, Error> {
        invoke_status(
            self,
            Invocation::CnodeMint,
            &[
                u64::from(dest.index()),
                u64::from(source.slot().index()),
                u64::from(rights.bits()),
                badge,
            ],
            &[],
        )?;
        Ok(Cap::from_slot(dest))
    }

    /// `CnodeMove`: moves `source` to the empty slot `dest` of this CNode
    /// (the caller's CSpace, as for [`copy`](Cap::copy)) and returns the
    /// capability there; `source` is empty afterwards.
    ///
    /// Errors: `EmptySlot`, `SlotOccupied`.
    pub fn move_<T: CapType>(self, dest: Slot, source: Cap<T>) -> Result<Cap<T>, Error> {
        invoke_status(
            self,
            Invocation::CnodeMove,
            &[u64::from(dest.index()), u64::from(source.slot().index())],
            &[],
        )?;
        Ok(Cap::from_slot(dest))
    }

    /// `CnodeDelete`: deletes the capability in `slot`; the last capability
    /// to an object destroys it and everything that depended on it (IO
    /// mappings, attachments, PASID bindings) before the call returns.
    ///
    /// Errors: `CnodeNotEmpty`, `InsufficientRights` (this CNode
    /// capability lacks the write right), `IommuTimeout` (the IOMMU did not
    /// confirm the invalidation: the delete stands, the devices that could
    /// still use a stale translation are blocked).
    pub fn delete(self, slot: Slot) -> Result<(), Error> {
        invoke_status(
            self,
            Invocation::CnodeDelete,
            &[u64::from(slot.index())],
            &[],
        )
    }

    /// `CnodeRevoke`: deletes every capability derived from `slot`, with the
    /// same strictness as [`delete`](Cap::delete).
    ///
    /// Errors: as [`delete`](Cap::delete).
    pub fn revoke(self, slot: Slot) -> Result<(), Error> {
        invoke_status(
            self,
            Invocation::CnodeRevoke,
            &[u64::from(slot.index())],
            &[],
        )
    }
}

impl Cap<Tcb> {
    /// `TcbConfigure`: sets the thread's CSpace (cap 0), VSpace (cap 1), IPC
    /// buffer frame (cap 2) at `ipc_buffer_address`, and its fault endpoint
    /// `fault_endpoint` (a slot of the caller's CSpace; `None`: no fault
    /// endpoint, slot 0). Threads that use `sys` expect their buffer at
    /// [`ipc::IPC_BUFFER_ADDRESS`].
    pub fn configure(
        self,
        fault_endpoint: Option<Cap<Endpoint>>,
        cspace: Cap<CNode>,
        vspace: Cap<PageTable>,
        ipc_buffer: Cap<Frame>,
        ipc_buffer_address: u64,
    ) -> Result<(), Error> {
        invoke_status(
            self,
            Invocation::TcbConfigure,
            &[fault_slot(fault_endpoint), ipc_buffer_address],
            &[cspace.slot(), vspace.slot(), ipc_buffer.slot()],
        )
    }

    /// `TcbConfigure` for a helper thread of the root task: it shares the
    /// root task's CSpace ([`bootinfo::INIT_CNODE`]), address space
    /// ([`bootinfo::INIT_VSPACE`]) and IPC buffer
    /// ([`bootinfo::INIT_IPC_BUFFER`]), with its faults going to
    /// `fault_endpoint` (`None`: none). A thread has only what it is
    /// configured with: without this (or [`Self::configure`]) `resume`
    /// answers `NotConfigured`.
    pub fn configure_in_root_task(
        self,
        fault_endpoint: Option<Cap<Endpoint>>,
    ) -> Result<(), Error> {
        self.configure(
            fault_endpoint,
            bootinfo::INIT_CNODE,
            bootinfo::INIT_VSPACE,
            bootinfo::INIT_IPC_BUFFER,
            ipc::IPC_BUFFER_ADDRESS,
        )
    }

    /// `TcbSetPriority`: sets the priority (0..=255, so the kernel's
    /// `InvalidArgument` cannot arise from this wrapper).
    pub fn set_priority(self, priority: u8) -> Result<(), Error> {
        invoke_status(
            self,
            Invocation::TcbSetPriority,
            &[u64::from(priority)],
            &[],
        )
    }

    /// `TcbWriteRegisters`: sets the program counter, stack pointer and
    /// first argument register (`rdi` / `x0`; `rt` passes it to the program
    /// as the address of its capability table).
    pub fn write_registers(self, pc: u64, sp: u64, argument: u64) -> Result<(), Error> {
        invoke_status(
            self,
            Invocation::TcbWriteRegisters,
            &[pc, sp, argument],
            &[],
        )
    }

    /// `DebugNameThread`: names this thread for the kernel console and the
    /// capability dump. Errors: [`Error::InvalidArgument`] for a name over
    /// 32 bytes (nothing is cut short), the kernel's lookup errors for a
    /// capability that is not a Tcb with the write right.
    pub fn set_debug_name(self, name: &str) -> Result<(), Error> {
        let mut bytes = [0u8; 32];
        bytes
            .get_mut(..name.len())
            .ok_or(Error::InvalidArgument)?
            .copy_from_slice(name.as_bytes());
        let mut mrs = [0u64; 4];
        for (mr, chunk) in mrs.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *mr = u64::from_le_bytes(word);
        }
        let out = crate::syscall::syscall(
            abi::Syscall::DebugNameThread as u64,
            u64::from(self.slot().index()),
            0,
            mrs,
        );
        crate::syscall::status_to_result(out.status)
    }

    /// `TcbResume`: makes the thread runnable.
    ///
    /// Errors: `NotConfigured` (no address space, CSpace or IPC buffer: it
    /// was never configured, or one of them died), `InsufficientRights`.
    pub fn resume(self) -> Result<(), Error> {
        invoke_status(self, Invocation::TcbResume, &[], &[])
    }

    /// `TcbSuspend`: stops the thread.
    pub fn suspend(self) -> Result<(), Error> {
        invoke_status(self, Invocation::TcbSuspend, &[], &[])
    }

    /// `TcbSetFaultHandler`: this thread's CPU exceptions go to `endpoint`
    /// as `abi::FAULT_LABEL` messages; the handler's reply resumes the
    /// thread (MR0 = 0) or stops it (MR0 != 0).
    ///
    /// Errors: `WrongKind` (not an endpoint), `InsufficientRights`.
    pub fn set_fault_handler(self, endpoint: Cap<Endpoint>) -> Result<(), Error> {
        invoke_status(
            self,
            Invocation::TcbSetFaultHandler,
            &[u64::from(endpoint.slot().index())],
            &[],
        )
    }
}

/// MR0 of `TcbConfigure`: the fault endpoint's slot, 0 for none.
fn fault_slot(endpoint: Option<Cap<Endpoint>>) -> u64 {
    endpoint.map_or(0, |endpoint| u64::from(endpoint.slot().index()))
}

impl Cap<Frame> {
    /// `FrameMap`: maps the frame into the VSpace `vspace` (cap 0) at
    /// `address` with `rights` (at most the capability's). A Frame of device
    /// memory maps uncached and never executable: the kernel decides.
    ///
    /// Errors: `AlreadyMapped`, `InvalidAddress`, `AddressInUse`,
    /// `InvalidRights`, `DeviceMemory` (execute asked of device memory).
    pub fn map(self, vspace: Cap<PageTable>, address: u64, rights: MapRights) -> Result<(), Error> {
        invoke_status(
            self,
            Invocation::FrameMap,
            &[address, rights.bits()],
            &[vspace.slot()],
        )
    }

    /// `FrameUnmap`: removes this capability's mapping (CPU or IO).
    ///
    /// Errors: `NotMapped`.
    pub fn unmap(self) -> Result<(), Error> {
        invoke_status(self, Invocation::FrameUnmap, &[], &[])
    }
}

impl Cap<PageTable> {
    /// `PageTableMap`: installs this page table in the VSpace `vspace`
    /// (cap 0) to cover `address`, as the highest level missing there.
    ///
    /// Errors: `InsufficientRights` (this capability or the VSpace's lacks
    /// the write right), `AlreadyMapped`, `AddressInUse` (every level is
    /// present), `InvalidAddress`.
    pub fn map(self, vspace: Cap<PageTable>, address: u64) -> Result<(), Error> {
        invoke_status(self, Invocation::PageTableMap, &[address], &[vspace.slot()])
    }

    /// `PageTableUnmap`: removes this page table from its VSpace. Only an
    /// empty table leaves: unmap its frames and lower tables first.
    ///
    /// Errors: `TableNotEmpty`, `NotMapped`, `InsufficientRights`.
    pub fn unmap(self) -> Result<(), Error> {
        invoke_status(self, Invocation::PageTableUnmap, &[], &[])
    }
}

impl Cap<IrqControl> {
    /// `IrqControlGet`: creates the handler for interrupt line `line` in
    /// the empty slot `dest`.
    ///
    /// Errors: `OutOfScope`, `DeviceInUse`.
    pub fn get(self, line: u64, dest: Slot) -> Result<Cap<IrqHandler>, Error> {
        invoke_status(
            self,
            Invocation::IrqControlGet,
            &[line, u64::from(dest.index())],
            &[],
        )?;
        Ok(Cap::from_slot(dest))
    }
}

impl Cap<IrqHandler> {
    /// `IrqHandlerAck`: acknowledges the interrupt, so the line can fire again.
    pub fn ack(self) -> Result<(), Error> {
        invoke_status(self, Invocation::IrqHandlerAck, &[], &[])
    }

    /// `IrqHandlerMsiMessage`: for an MSI line, the message address and
    /// data `device` must write to raise it; program them into the
    /// device's MSI or MSI-X capability.
    ///
    /// - x86_64 (lines 16..32): the address names the line's interrupt
    ///   remapping entry; only `device` can then raise the line.
    /// - aarch64 (the GICv2m frame's SPIs, INTIDs 80..144 on `virt`): the
    ///   kernel maps the GICv2m doorbell write-only into the IoSpace
    ///   `device` is attached to, at the last page of its IPA range (the
    ///   MSI window), and answers that IPA plus the
    ///   doorbell's offset, with the line's INTID as data. A device
    ///   attached directly writes that address; a device nested under a
    ///   stage-1 table needs an IOVA its stage 1 maps to the doorbell
    ///   page's IPA (write permission), and writes that IOVA plus the
    ///   offset. GICv2m cannot tell devices apart: any device of that
    ///   IoSpace can raise any GICv2m SPI.
    ///
    /// Errors: `InvalidArgument` (not an MSI line), `DeviceNotAttached`
    /// (aarch64: attach the device first), `TableMemoryExhausted`
    /// (aarch64: the IoSpace's table reservation is used up), lookup
    /// errors for `device`.
    pub fn msi_message(self, device: Cap<IoDevice>) -> Result<(u64, u32), Error> {
        let reply = invoke(
            self,
            Invocation::IrqHandlerMsiMessage,
            &[],
            &[device.slot()],
        )?;
        if reply.info.length < 2 {
            return Err(UNKNOWN_STATUS);
        }
        let data = u32::try_from(reply.mrs[1]).map_err(|_| UNKNOWN_STATUS)?;
        Ok((reply.mrs[0], data))
    }

    /// `IrqHandlerSetNotification`: delivers the line to `notification` (cap 0).
    pub fn set_notification(self, notification: Cap<Notification>) -> Result<(), Error> {
        invoke_status(
            self,
            Invocation::IrqHandlerSetNotification,
            &[],
            &[notification.slot()],
        )
    }
}

/// Which IOMMU architecture a unit implements (`Identify` MR0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// Intel VT-d (1).
    VtD,
    /// Arm SMMUv3 (2).
    SmmuV3,
    /// A number this SDK does not know.
    Other(u64),
}

/// What `IommuIdentify` reports about a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IommuInfo {
    /// MR0: the architecture.
    pub vendor: Vendor,
    /// MR1 bit 0: stage-1 (driver-owned) translation; `IoDeviceBindVSpace`
    /// (SVA) can work.
    pub stage1: bool,
    /// MR1 bit 1: stage-2 (kernel-owned) translation: devices can attach
    /// to IoSpaces.
    pub stage2: bool,
    /// MR1 bit 2: hardware nesting of stage 1 under stage 2.
    pub hardware_nesting: bool,
    /// MR1 bit 3: nesting served by a kernel shadow table.
    pub shadow_nesting: bool,
    /// MR1 bit 4: IoSpaces are first-stage tables (VT-d with no stage 2,
    /// QEMU `x-flts=on`): devices attach to them, nesting does not work,
    /// write-only mappings are refused, and dirty tracking reads the
    /// first-stage D bits.
    pub first_stage_spaces: bool,
    /// MR2: PASID width in bits.
    pub pasid_bits: u64,
    /// MR3: supported page sizes as a bit set of log2 sizes (bit 12: 4 KiB).
    pub page_sizes: u64,
    /// MR4: number of domain ids (DIDs / VMIDs).
    pub domain_ids: u64,
    /// MR5 bit 0: `IoSpace` dirty tracking (stage-2 dirty state).
    pub dirty_tracking: bool,
    /// MR5 bit 1: the unit sets accessed / dirty bits in first-stage tables.
    pub first_stage_dirty: bool,
    /// MR5 bit 2: page requests arrive as recoverable fault records,
    /// answered with [`Cap::<IoFaultQueue>::respond`].
    pub page_requests: bool,
    /// MR5 bit 3: faulting transactions stall (SMMUv3 stall model) and
    /// arrive as the same recoverable records, answered the same way.
    pub stall: bool,
}

impl IommuInfo {
    /// Decodes the six reply registers of `IommuIdentify`.
    pub const fn from_registers(mrs: [u64; 6]) -> IommuInfo {
        IommuInfo {
            vendor: match mrs[0] {
                1 => Vendor::VtD,
                2 => Vendor::SmmuV3,
                other => Vendor::Other(other),
            },
            stage1: mrs[1] & 1 != 0,
            stage2: mrs[1] & 2 != 0,
            hardware_nesting: mrs[1] & 4 != 0,
            shadow_nesting: mrs[1] & 8 != 0,
            first_stage_spaces: mrs[1] & 16 != 0,
            pasid_bits: mrs[2],
            page_sizes: mrs[3],
            domain_ids: mrs[4],
            dirty_tracking: mrs[5] & 1 != 0,
            first_stage_dirty: mrs[5] & 2 != 0,
            page_requests: mrs[5] & 4 != 0,
            stall: mrs[5] & 8 != 0,
        }
    }

    /// Whether pages of `2^log2_size` bytes are supported.
    pub const fn supports_page_size(&self, log2_size: u8) -> bool {
        log2_size < 64 && self.page_sizes & (1 << log2_size) != 0
    }
}

impl Cap<IommuControl> {
    /// `IommuIdentify` (read right): describes the unit.
    ///
    /// A reply with fewer than 6 registers is reported as
    /// [`UNKNOWN_STATUS`].
    pub fn identify(self) -> Result<IommuInfo, Error> {
        let reply = invoke(self, Invocation::IommuIdentify, &[], &[])?;
        if reply.info.length < 6 {
            return Err(UNKNOWN_STATUS);
        }
        let [a, b, c, d] = reply.mrs;
        Ok(IommuInfo::from_registers([
            a,
            b,
            c,
            d,
            ipc::mr(4),
            ipc::mr(5),
        ]))
    }

    /// `IommuMintDevice`: creates the IoDevice for requester `requester`
    /// (PCI RID or StreamID) in the empty slot `dest`.
    ///
    /// Errors: `OutOfScope` (not in the unit's device scope), `DeviceInUse`.
    pub fn mint_device(self, requester: u32, dest: Slot) -> Result<Cap<IoDevice>, Error> {
        invoke_status(
            self,
            Invocation::IommuMintDevice,
            &[u64::from(requester), u64::from(dest.index())],
            &[],
        )?;
        Ok(Cap::from_slot(dest))
    }
}

impl Cap<IoDevice> {
    /// `IoDeviceAttach`: translates the device's DMA with the stage-2 `space`
    /// (cap 0).
    ///
    /// Errors: `AlreadyAttached`, `WrongUnit`, `IoShareExhausted` (the
    /// space holds its share of the unit's attachments), `IommuTimeout`.
    pub fn attach(self, space: Cap<IoSpace>) -> Result<(), Error> {
        invoke_status(self, Invocation::IoDeviceAttach, &[], &[space.slot()])
    }

    /// `IoDeviceAttachNested`: translates the device's DMA with `table`
    /// (cap 0) as stage 1, nested under its IoSpace.
    ///
    /// Errors: `AlreadyAttached`, `WrongUnit`, `DeadObject`,
    /// `IoShareExhausted` (the space holds its share of the unit's
    /// attachments or nests), `IommuTimeout`, `TableMemoryExhausted` (a
    /// new nest does not fit the IoSpace's table reservation, or the
    /// unit's own table pages are used up).
    pub fn attach_nested(self, table: Cap<IoUserTable>) -> Result<(), Error> {
        invoke_status(self, Invocation::IoDeviceAttachNested, &[], &[table.slot()])
    }

    /// `IoDeviceBindVSpace` (SVA): the device translates its DMA through
    /// the CPU address space whose root is `vspace` (cap 0, write right),
    /// first stage only, so it names memory by the virtual addresses the
    /// driver's threads use. A later CPU unmap in `vspace` is invalidated
    /// in the device's IOTLB before it returns. [`Cap::detach`] ends it.
    ///
    /// Errors: `AlreadyAttached`, `NotSupported` (no first stage for
    /// devices: VT-d without `x-flts`), `InsufficientRights`,
    /// `AlreadyMapped` (not a root),
    /// `ObjectTableFull`, `TableMemoryExhausted`, `IommuTimeout`.
    pub fn bind_vspace(self, vspace: Cap<PageTable>) -> Result<(), Error> {
        invoke_status(self, Invocation::IoDeviceBindVSpace, &[], &[vspace.slot()])
    }

    /// `IoDeviceDetach`: blocks the device's DMA again (an IoSpace
    /// attachment or a VSpace binding).
    ///
    /// Errors: `NotAttached`.
    pub fn detach(self) -> Result<(), Error> {
        invoke_status(self, Invocation::IoDeviceDetach, &[], &[])
    }

    /// `IoDeviceMintPasid`: creates the IoPasid for `pasid` in the empty
    /// slot `dest`.
    ///
    /// Errors: `PasidOutOfRange`, `PasidInUse`.
    pub fn mint_pasid(self, pasid: u32, dest: Slot) -> Result<Cap<IoPasid>, Error> {
        invoke_status(
            self,
            Invocation::IoDeviceMintPasid,
            &[u64::from(pasid), u64::from(dest.index())],
            &[],
        )?;
        Ok(Cap::from_slot(dest))
    }
}

/// The format of a driver's stage-1 tables (`IoSpaceBindUserTable` MR1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum UserTableFormat {
    /// x86 first-stage, 4-level (1).
    X86FirstStage4Level = 1,
    /// Arm VMSAv8-64 stage 1, 4 KiB granule, 48-bit (2).
    ArmStage1Granule4k48Bit = 2,
}

impl Cap<IoSpace> {
    /// `IoSpaceMap`: maps `frame` (cap 0) at `ipa` with `rights` (read and
    /// write only; at most the Frame capability's).
    ///
    /// Errors: `InvalidAddress` (misaligned, out of range, or in the
    /// reserved kernel window), `MsiWindow` (overlaps the MSI window:
    /// x86_64 `0xFEE0_0000..0xFEF0_0000`, aarch64 the doorbell page at the
    /// top of the IPA range, see [`Cap::<IrqHandler>::msi_message`]),
    /// `AddressInUse`, `AlreadyMapped`, `InvalidRights`, `DeviceMemory` (a Frame of device memory: no
    /// peer-to-peer DMA), `TableMemoryExhausted` (this IoSpace's table
    /// reservation is used up; stage-2 tables go back only with the
    /// IoSpace).
    pub fn map(self, frame: Cap<Frame>, ipa: u64, rights: MapRights) -> Result<(), Error> {
        invoke_status(
            self,
            Invocation::IoSpaceMap,
            &[ipa, rights.bits()],
            &[frame.slot()],
        )
    }

    /// `IoSpaceUnmap`: unmaps `frame` (cap 0) from this space; caches are
    /// invalidated and the invalidation has completed when the call returns.
    ///
    /// Errors: `NotMapped`, `IommuTimeout` (the unit did not confirm the
    /// invalidation: the mapping is gone and the space's devices are
    /// blocked). The MSI doorbell is no Frame of anyone's: it cannot be
    /// named here, so it stays mapped for the IoSpace's life.
    pub fn unmap(self, frame: Cap<Frame>) -> Result<(), Error> {
        invoke_status(self, Invocation::IoSpaceUnmap, &[], &[frame.slot()])
    }

    /// `IoSpaceBindUserTable`: creates in the empty slot `dest` an IoUserTable rooted
    /// at IPA `root_ipa` in `format`.
    ///
    /// Errors: `InvalidAddress`, `MsiWindow` (the root in the MSI window),
    /// `InvalidArgument` (format not supported by the unit).
    pub fn bind_user_table(
        self,
        root_ipa: u64,
        format: UserTableFormat,
        dest: Slot,
    ) -> Result<Cap<IoUserTable>, Error> {
        invoke_status(
            self,
            Invocation::IoSpaceBindUserTable,
            &[root_ipa, format as u64, u64::from(dest.index())],
            &[],
        )?;
        Ok(Cap::from_slot(dest))
    }

    /// `IoSpaceSetDirtyTracking`: turns dirty tracking of this space's
    /// stage 2 on or off (write right).
    ///
    /// Errors: `NotSupported` (the unit cannot track:
    /// [`IommuInfo::dirty_tracking`] is false), `IommuTimeout`.
    pub fn set_dirty_tracking(self, on: bool) -> Result<(), Error> {
        invoke_status(
            self,
            Invocation::IoSpaceSetDirtyTracking,
            &[u64::from(on)],
            &[],
        )
    }

    /// `IoSpaceReadDirty`: writes into `bitmap` (cap 0, write right) which
    /// of the `pages` pages from IPA `first` were written since the last
    /// clear (bit `i` of the little-endian words: page `i`), and with
    /// `clear` marks them clean. At most [`abi::READ_DIRTY_PAGES`] per call:
    /// returns the first IPA not processed and the dirty pages reported.
    ///
    /// Errors: `InvalidAddress`, `NotSupported` (the unit cannot track, or
    /// tracking is off), `InsufficientRights`, `DeviceMemory`,
    /// `IommuTimeout`.
    pub fn read_dirty(
        self,
        first: u64,
        pages: u64,
        bitmap: Cap<Frame>,
        clear: bool,
    ) -> Result<(u64, u64), Error> {
        let reply = invoke(
            self,
            Invocation::IoSpaceReadDirty,
            &[first, pages, u64::from(clear)],
            &[bitmap.slot()],
        )?;
        if reply.info.length < 2 {
            return Err(UNKNOWN_STATUS);
        }
        Ok((reply.mrs[0], reply.mrs[1]))
    }
}

impl Cap<IoUserTable> {
    /// `IoUserTableInvalidate`: the driver changed its stage-1 entries for
    /// IOVAs `start..start + length` (`length` 0: everything); makes the
    /// hardware see them. Returns the first IOVA not yet processed (the end
    /// when done; shadow nesting bounds the work per call, so call again
    /// from there, or use [`invalidate_range`](Cap::invalidate_range)).
    ///
    /// `length` 0 means everything on SMMUv3 (reply `u64::MAX`); a VT-d
    /// shadow is composed per range, so there it is `InvalidArgument`.
    /// On shadow-nesting units, entries of a table take effect only through
    /// `Invalidate`: attach first, then build and invalidate.
    ///
    /// Errors: `InvalidAddress` (range not page aligned), `DeadObject`
    /// (the IoSpace was destroyed), `TableMemoryExhausted` (the IoSpace's
    /// table reservation cannot hold more of the shadow).
    pub fn invalidate(self, start: u64, length: u64) -> Result<u64, Error> {
        self.invalidate_counting(start, length)
            .map(|(next, _)| next)
    }

    /// [`invalidate`](Cap::invalidate), also answering (MR1) how many
    /// invalidation commands the kernel issued (each batch is followed by
    /// one completion wait, not counted): for measurements.
    ///
    /// The driver's one call after writing its stage-1 entries, so made
    /// without [`invoke`]'s general message handling: the two registers
    /// go straight in, and of the reply only the status and the length
    /// the two answers need are read.
    pub fn invalidate_counting(self, start: u64, length: u64) -> Result<(u64, u64), Error> {
        let info = MessageInfo {
            label: Invocation::IoUserTableInvalidate as u32,
            length: 2,
            extra_caps: 0,
        };
        let out = syscall(
            Syscall::Call as u64,
            u64::from(self.slot().index()),
            info.to_word(),
            [start, length, 0, 0],
        );
        status_to_result(out.status)?;
        if out.info & 0x7f < 2 {
            return Err(UNKNOWN_STATUS);
        }
        Ok((out.mrs[0], out.mrs[1]))
    }

    /// Calls [`invalidate`](Cap::invalidate) until all of
    /// `start..start + length` is processed (`length` > 0). A reply that
    /// does not advance is reported as
    /// [`UNKNOWN_STATUS`] rather than
    /// looping forever; `length` 0 is `Error::InvalidArgument`.
    pub fn invalidate_range(self, start: u64, length: u64) -> Result<(), Error> {
        if length == 0 {
            return Err(Error::InvalidArgument);
        }
        let end = start.saturating_add(length);
        let mut next = start;
        while next < end {
            let reached = self.invalidate(next, end - next)?;
            if reached <= next {
                return Err(UNKNOWN_STATUS);
            }
            next = reached;
        }
        Ok(())
    }
}

/// What an IoPasid can attach to: an [`IoUserTable`] or an [`IoSpace`].
pub trait PasidTarget: CapType {}
impl PasidTarget for IoUserTable {}
impl PasidTarget for IoSpace {}

impl Cap<IoPasid> {
    /// `IoPasidAttach`: attaches to `target` (cap 0), an IoUserTable or an
    /// IoSpace, which must use the device's IoSpace.
    ///
    /// Errors: `DeviceNotAttached`, `SpaceMismatch`, `AlreadyAttached`.
    pub fn attach<T: PasidTarget>(self, target: Cap<T>) -> Result<(), Error> {
        invoke_status(self, Invocation::IoPasidAttach, &[], &[target.slot()])
    }

    /// `IoPasidDetach`: detaches, or ends a [`Cap::<IoPasid>::bind_vspace`].
    ///
    /// Errors: `NotAttached`.
    pub fn detach(self) -> Result<(), Error> {
        invoke_status(self, Invocation::IoPasidDetach, &[], &[])
    }

    /// `IoPasidBindVSpace` (SVA for one PASID): the device's DMA tagged
    /// with this PASID translates through the CPU address space whose root
    /// is `vspace` (cap 0, write right), as [`Cap::<IoDevice>::bind_vspace`]
    /// does for its untagged DMA. [`Cap::<IoPasid>::detach`] ends it.
    ///
    /// Errors: `AlreadyAttached` (attached, bound, or the PASID's entry in
    /// use), `NotSupported` (VT-d without first stage and PASIDs; SMMUv3),
    /// `InsufficientRights`, `AlreadyMapped` (not a root),
    /// `ObjectTableFull`, `TableMemoryExhausted`, `IommuTimeout`,
    /// `DeadObject`.
    pub fn bind_vspace(self, vspace: Cap<PageTable>) -> Result<(), Error> {
        invoke_status(self, Invocation::IoPasidBindVSpace, &[], &[vspace.slot()])
    }
}

/// Whose faults an IoFaultQueue can receive: an [`IoDevice`] or an [`IoSpace`].
pub trait FaultSource: CapType {}
impl FaultSource for IoDevice {}
impl FaultSource for IoSpace {}

/// One IO fault record, as `IoFaultQueuePop` reports it: an unrecoverable
/// fault (`stage` 1 or 2) or a page request (`stage` 0, answered with
/// [`Cap::<IoFaultQueue>::respond`] and the id [`FaultRecord::page_request`]
/// returns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// MR0: the badge of the device capability.
    pub badge: u64,
    /// MR1: the PASID, `None` for DMA without one (`u64::MAX`).
    pub pasid: Option<u64>,
    /// MR2: the faulting address.
    pub address: u64,
    /// MR3 bit 0: a read.
    pub read: bool,
    /// MR3 bit 1: a write.
    pub write: bool,
    /// MR4: the stage that faulted (1 or 2); 0 for a page request.
    pub stage: u64,
    /// MR5: the vendor's reason code; a page request's id.
    pub reason: u64,
}

impl FaultRecord {
    /// Decodes the six reply registers of `IoFaultQueuePop`.
    pub const fn from_registers(mrs: [u64; 6]) -> FaultRecord {
        FaultRecord {
            badge: mrs[0],
            pasid: if mrs[1] == u64::MAX {
                None
            } else {
                Some(mrs[1])
            },
            address: mrs[2],
            read: mrs[3] & 1 != 0,
            write: mrs[3] & 2 != 0,
            stage: mrs[4],
            reason: mrs[5],
        }
    }

    /// The id to answer with [`Cap::<IoFaultQueue>::respond`] if this is a
    /// page request (a device waits for the answer), else `None`.
    pub const fn page_request(&self) -> Option<u64> {
        if self.stage == 0 {
            Some(self.reason)
        } else {
            None
        }
    }
}

/// How a page request is answered (`IoFaultQueueRespond` MR1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum PageResponse {
    /// The page is mapped (and its stage 1 invalidated): the device retries.
    Success = 0,
    /// The device reports an error for this request.
    Invalid = 1,
    /// The device reports an error and stops making page requests.
    Failure = 2,
}

impl Cap<IoFaultQueue> {
    /// `IoFaultQueueBind`: signals `notification` (cap 0) when a record
    /// arrives, and delivers the faults of `source` (cap 1, an IoDevice or
    /// an IoSpace) here.
    pub fn bind<S: FaultSource>(
        self,
        notification: Cap<Notification>,
        source: Cap<S>,
    ) -> Result<(), Error> {
        invoke_status(
            self,
            Invocation::IoFaultQueueBind,
            &[],
            &[notification.slot(), source.slot()],
        )
    }

    /// `IoFaultQueueRespond` (write right): answers page request `id` (from
    /// [`FaultRecord::page_request`]) with `response`; the answer covers
    /// the rest of its page request group.
    ///
    /// Errors: `NotSupported` (the unit takes no page requests:
    /// [`IommuInfo::page_requests`] is false), `UnknownRequest` (this
    /// queue never issued `id`),
    /// `RequestAnswered` (answered already, by a `respond` or by the
    /// kernel's `Failure` after a detach, a delete or the deadline),
    /// `InsufficientRights`, `IommuTimeout`.
    pub fn respond(self, id: u64, response: PageResponse) -> Result<(), Error> {
        invoke_status(
            self,
            Invocation::IoFaultQueueRespond,
            &[id, response as u64],
            &[],
        )
    }

    /// `IoFaultQueuePop` (read right): takes the oldest record; `None` when
    /// the queue is empty (a reply of length 0). A reply with 1..5
    /// registers is reported as
    /// [`UNKNOWN_STATUS`].
    pub fn pop(self) -> Result<Option<FaultRecord>, Error> {
        let reply = invoke(self, Invocation::IoFaultQueuePop, &[], &[])?;
        match reply.info.length {
            0 => Ok(None),
            1..=5 => Err(UNKNOWN_STATUS),
            _ => {
                let [a, b, c, d] = reply.mrs;
                Ok(Some(FaultRecord::from_registers([
                    a,
                    b,
                    c,
                    d,
                    ipc::mr(4),
                    ipc::mr(5),
                ])))
            }
        }
    }
}
