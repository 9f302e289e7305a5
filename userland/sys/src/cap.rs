//! Typed capability handles: [`Cap<T>`] is a slot index in the caller's
//! CSpace together with the kind of object the program believes is there;
//! [`Slot`] is a slot index with no such belief, the type of every
//! destination (where `Untyped.Retype`, `CNode.Copy`/`Mint`/`Move` and the
//! minting invocations put a new capability) and of slots named as data.
//!
//! Methods that create a capability take the destination [`Slot`] and
//! return the [`Cap<T>`] for it, its kind taken from the call
//! (`untyped.retype::<Endpoint>(slot)`, `cnode.mint(slot, endpoint, ..)`
//! gives a `Cap<Endpoint>`), so a program never rebuilds a handle from a
//! number. [`Cap::from_slot`] remains for slots learnt as data (the
//! well-known boot-info slots are typed constants in [`crate::bootinfo`];
//! init's capability table, replies of `sys::resources`, a slot handed to
//! another thread).
//!
//! The type parameter only selects which methods are available (one per
//! invocation of that kind, see [`crate::invocations`]); it is a hint, not
//! authority. The kernel looks every slot up again on every system call and
//! answers [`Error::LookupFailed`](crate::Error::LookupFailed),
//! [`Error::InvalidInvocation`](crate::Error::InvalidInvocation) or
//! [`Error::WrongKind`](crate::Error::WrongKind) when the belief is wrong.
//! That is why [`Cap`] is `Copy` and [`Cap::from_slot`] is safe here, while
//! the kernel's own capability references are neither.

use abi::ObjectType;
use caps::ObjectKind;
use core::fmt;
use core::marker::PhantomData;

/// A kind of kernel object that a [`Cap`] can name. Implemented by the marker
/// types of this module only.
pub trait CapType: sealed::Sealed {
    /// The object kind, numbered as `caps::ObjectKind` (and the `kind` field of
    /// a [`CapEntry`](crate::names::CapEntry)).
    const KIND: ObjectKind;
}

/// A kind of object `Untyped.Retype` creates: [`Untyped`], [`CNode`],
/// [`Tcb`], [`Endpoint`], [`Notification`], [`Frame`], [`PageTable`],
/// [`IoFaultQueue`] (an [`IoSpace`] also needs the unit's IommuControl:
/// `Cap<Untyped>::retype_io_space`).
pub trait Retype: CapType {
    /// The `abi::ObjectType` that `Untyped.Retype` is asked for.
    const OBJECT_TYPE: ObjectType;
}

/// A kind whose objects have one size: `Untyped.Retype` ignores the size
/// argument ([`Tcb`], [`Endpoint`], [`Notification`], [`PageTable`],
/// [`IoFaultQueue`]).
pub trait FixedSize: Retype {}

mod sealed {
    pub trait Sealed {}
}

/// A slot index: in the caller's CSpace, or in the CNode a `CNode`
/// invocation names. No belief about what the slot holds, if anything:
/// the destination of every invocation that creates a capability, and a
/// slot learnt as data. A [`Cap<T>`] gives its own with [`Cap::slot`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(u32);

impl Slot {
    /// Slot `index`.
    pub const fn new(index: u32) -> Slot {
        Slot(index)
    }

    /// The index (the number passed to the kernel).
    pub const fn index(self) -> u32 {
        self.0
    }

    /// The slot `count` places further on (`None` past the last index).
    pub const fn checked_add(self, count: u32) -> Option<Slot> {
        match self.0.checked_add(count) {
            Some(index) => Some(Slot(index)),
            None => None,
        }
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slot({})", self.0)
    }
}

/// A slot number as data (a thread's argument, a message register).
impl From<Slot> for u64 {
    fn from(slot: Slot) -> u64 {
        u64::from(slot.0)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A capability: slot `slot` of the caller's CSpace, believed to name an
/// object of kind `T`.
pub struct Cap<T: CapType> {
    slot: Slot,
    kind: PhantomData<fn() -> T>,
}

impl<T: CapType> Cap<T> {
    /// The capability in `slot` of the caller's CSpace, for a slot learnt as
    /// data (a capability table, a reply, a number another thread stored).
    /// Invocations that create a capability return its handle: there is no
    /// need to rebuild one.
    ///
    /// Safe because a slot number grants nothing: every invocation is checked
    /// by the kernel against the caller's own CSpace, so a wrong slot or kind
    /// costs an error code, never memory safety or authority.
    pub const fn from_slot(slot: Slot) -> Cap<T> {
        Cap {
            slot,
            kind: PhantomData,
        }
    }

    /// The slot (the capability pointer passed to the kernel).
    pub const fn slot(self) -> Slot {
        self.slot
    }

    /// The same slot, believed to hold an object of kind `U` instead (for
    /// example after a `CNode` move, or a slot learnt as raw data).
    pub const fn cast<U: CapType>(self) -> Cap<U> {
        Cap::from_slot(self.slot)
    }

    /// The object kind this handle expects.
    pub const fn kind(self) -> ObjectKind {
        T::KIND
    }
}

impl<T: CapType> Clone for Cap<T> {
    fn clone(&self) -> Cap<T> {
        *self
    }
}

impl<T: CapType> Copy for Cap<T> {}

impl<T: CapType> PartialEq for Cap<T> {
    fn eq(&self, other: &Cap<T>) -> bool {
        self.slot == other.slot
    }
}

impl<T: CapType> Eq for Cap<T> {}

impl<T: CapType> fmt::Debug for Cap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cap<{:?}>({})", T::KIND, self.slot.0)
    }
}

impl<T: CapType> From<Cap<T>> for Slot {
    fn from(cap: Cap<T>) -> Slot {
        cap.slot
    }
}

macro_rules! kinds {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub enum $name {}
            impl sealed::Sealed for $name {}
            impl CapType for $name {
                const KIND: ObjectKind = ObjectKind::$name;
            }
        )*
    };
}

kinds! {
    /// A power-of-two region of physical memory that can be retyped.
    Untyped,
    /// A table of capability slots.
    CNode,
    /// A thread control block.
    Tcb,
    /// An IPC endpoint.
    Endpoint,
    /// A notification word.
    Notification,
    /// A page of memory (4 KiB or 2 MiB), mappable for the CPU or for DMA.
    Frame,
    /// A page-table page of a CPU VSpace (a VSpace root is one too).
    PageTable,
    /// Authority to hand out IRQ handlers.
    IrqControl,
    /// Authority over one interrupt line.
    IrqHandler,
    /// Authority over one IOMMU unit (a VT-d DRHD or an SMMU).
    IommuControl,
    /// Authority over one requester (PCI RID or SMMU StreamID) of a unit.
    IoDevice,
    /// A kernel-owned stage-2 IO domain (VT-d DID / SMMU VMID).
    IoSpace,
    /// A driver-owned stage-1 table rooted at an IPA inside one IoSpace.
    IoUserTable,
    /// One PASID of one device.
    IoPasid,
    /// A destination for IO page-fault records.
    IoFaultQueue,
    /// The kernel console: printing (write right) and ending the session
    /// (grant right).
    Console,
}

macro_rules! retyped {
    ($($name:ident = $object:ident $(, $fixed:ident)?;)*) => {
        $(
            impl Retype for $name {
                const OBJECT_TYPE: ObjectType = ObjectType::$object;
            }
            $(impl $fixed for $name {})?
        )*
    };
}

retyped! {
    Untyped = Untyped;
    CNode = Cnode;
    Frame = Frame;
    Tcb = Tcb, FixedSize;
    Endpoint = Endpoint, FixedSize;
    Notification = Notification, FixedSize;
    PageTable = PageTable, FixedSize;
    IoFaultQueue = IoFaultQueue, FixedSize;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_slots_with_a_kind() {
        let frame: Cap<Frame> = Cap::from_slot(Slot::new(42));
        assert_eq!(frame.slot(), Slot::new(42));
        assert_eq!(frame.kind(), ObjectKind::Frame);
        let copy = frame;
        assert_eq!(copy, frame);
        assert_eq!(frame.cast::<Untyped>().kind(), ObjectKind::Untyped);
        assert_eq!(std::format!("{frame:?}"), "Cap<Frame>(42)");
        assert_eq!(size_of::<Cap<IoSpace>>(), 4);
    }

    #[test]
    fn slots_are_indices_without_a_kind() {
        let slot = Slot::new(7);
        assert_eq!(slot.index(), 7);
        assert_eq!(slot.checked_add(2), Some(Slot::new(9)));
        assert_eq!(Slot::new(u32::MAX).checked_add(1), None);
        assert_eq!(std::format!("{slot:?} {slot}"), "Slot(7) 7");
        let endpoint: Cap<Endpoint> = Cap::from_slot(slot);
        assert_eq!(endpoint.slot(), slot);
        assert_eq!(Slot::from(endpoint), slot);
        assert_eq!(u64::from(slot), 7);
    }

    #[test]
    fn retyped_kinds_name_their_object_type() {
        assert_eq!(Endpoint::OBJECT_TYPE, ObjectType::Endpoint);
        assert_eq!(CNode::OBJECT_TYPE, ObjectType::Cnode);
        assert_eq!(Frame::OBJECT_TYPE, ObjectType::Frame);
        assert_eq!(IoFaultQueue::OBJECT_TYPE, ObjectType::IoFaultQueue);
        fn fixed<T: FixedSize>() -> ObjectType {
            T::OBJECT_TYPE
        }
        assert_eq!(fixed::<Tcb>(), ObjectType::Tcb);
        assert_eq!(fixed::<PageTable>(), ObjectType::PageTable);
    }
}
