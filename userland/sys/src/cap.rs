//! Typed capability handles: [`Cap<T>`] is a slot index in the caller's
//! CSpace together with the kind of object the program believes is there.
//!
//! The type parameter only selects which methods are available (one per
//! invocation of that kind, see [`crate::invocations`]); it is a hint, not
//! authority. The kernel looks every slot up again on every system call and
//! answers [`Error::LookupFailed`](crate::Error::LookupFailed),
//! [`Error::InvalidInvocation`](crate::Error::InvalidInvocation) or
//! [`Error::WrongKind`](crate::Error::WrongKind) when the belief is wrong.
//! That is why [`Cap`] is `Copy` and [`Cap::from_slot`] is safe here, while
//! the kernel's own capability references are neither.

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

mod sealed {
    pub trait Sealed {}
}

/// A capability: slot `slot` of the caller's CSpace, believed to name an
/// object of kind `T`.
pub struct Cap<T: CapType> {
    slot: u32,
    kind: PhantomData<fn() -> T>,
}

impl<T: CapType> Cap<T> {
    /// The capability in `slot` of the caller's CSpace.
    ///
    /// Safe because a slot number grants nothing: every invocation is checked
    /// by the kernel against the caller's own CSpace, so a wrong slot or kind
    /// costs an error code, never memory safety or authority.
    pub const fn from_slot(slot: u32) -> Cap<T> {
        Cap {
            slot,
            kind: PhantomData,
        }
    }

    /// The slot index (the capability pointer passed to the kernel).
    pub const fn slot(self) -> u32 {
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
        write!(f, "Cap<{:?}>({})", T::KIND, self.slot)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_slots_with_a_kind() {
        let frame: Cap<Frame> = Cap::from_slot(42);
        assert_eq!(frame.slot(), 42);
        assert_eq!(frame.kind(), ObjectKind::Frame);
        let copy = frame;
        assert_eq!(copy, frame);
        assert_eq!(frame.cast::<Untyped>().kind(), ObjectKind::Untyped);
        assert_eq!(std::format!("{frame:?}"), "Cap<Frame>(42)");
        assert_eq!(size_of::<Cap<IoSpace>>(), 4);
    }
}
