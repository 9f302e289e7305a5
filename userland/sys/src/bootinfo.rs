//! The root task's well-known capabilities as typed handles, and the rest
//! of `abi::bootinfo` (the boot-info page's layout and addresses).
//!
//! The kernel puts the root task's initial capabilities at fixed slots
//! (`abi::bootinfo` numbers them); here each is a [`Cap`] of its kind, so a
//! root task names `bootinfo::INIT_CNODE` rather than rebuilding a handle
//! from a number. The initial Untypeds follow from [`FIRST_UNTYPED`], one
//! per entry of [`BootInfo::untypeds`] (see [`crate::untypeds`]). In a
//! protection domain started by init these slots mean nothing: it learns
//! its capabilities by name ([`crate::names`]).

pub use abi::bootinfo::*;

use crate::cap::{
    CNode, Cap, Console, Frame, IommuControl, IrqControl, PageTable, Slot, Tcb, Untyped,
};

/// The root task's own CNode (its CSpace root).
pub const INIT_CNODE: Cap<CNode> = Cap::from_slot(Slot::new(abi::bootinfo::INIT_CNODE));
/// The root task's TCB.
pub const INIT_TCB: Cap<Tcb> = Cap::from_slot(Slot::new(abi::bootinfo::INIT_TCB));
/// The root task's VSpace root.
pub const INIT_VSPACE: Cap<PageTable> = Cap::from_slot(Slot::new(abi::bootinfo::INIT_VSPACE));
/// The IrqControl capability.
pub const IRQ_CONTROL: Cap<IrqControl> = Cap::from_slot(Slot::new(abi::bootinfo::IRQ_CONTROL));
/// The IommuControl capability of the machine's IOMMU unit.
pub const IOMMU_CONTROL: Cap<IommuControl> =
    Cap::from_slot(Slot::new(abi::bootinfo::IOMMU_CONTROL));
/// The boot-info Frame.
pub const BOOT_INFO_FRAME: Cap<Frame> = Cap::from_slot(Slot::new(abi::bootinfo::BOOT_INFO_FRAME));
/// The root task's IPC buffer Frame (mapped at `ipc::IPC_BUFFER_ADDRESS`),
/// which helper threads in its address space are configured with.
pub const INIT_IPC_BUFFER: Cap<Frame> = Cap::from_slot(Slot::new(abi::bootinfo::INIT_IPC_BUFFER));
/// The Console capability (all rights: print and halt).
pub const CONSOLE: Cap<Console> = Cap::from_slot(Slot::new(abi::bootinfo::CONSOLE));
/// The slot of the first initial Untyped; entry `i` of
/// [`BootInfo::untypeds`] is at `FIRST_UNTYPED + i`.
pub const FIRST_UNTYPED: Slot = Slot::new(abi::bootinfo::FIRST_UNTYPED);
/// The first initial Untyped: the CNode arena, the only Untyped the kernel
/// retypes CNodes from.
pub const ARENA: Cap<Untyped> = Cap::from_slot(FIRST_UNTYPED);

/// The slot of initial Untyped `index` (entry `index` of
/// [`BootInfo::untypeds`]).
pub const fn untyped_slot(index: u32) -> Slot {
    Slot::new(abi::bootinfo::FIRST_UNTYPED + index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_sit_at_the_abi_slots() {
        assert_eq!(INIT_CNODE.slot().index(), abi::bootinfo::INIT_CNODE);
        assert_eq!(INIT_TCB.slot().index(), abi::bootinfo::INIT_TCB);
        assert_eq!(INIT_VSPACE.slot().index(), abi::bootinfo::INIT_VSPACE);
        assert_eq!(IRQ_CONTROL.slot().index(), abi::bootinfo::IRQ_CONTROL);
        assert_eq!(IOMMU_CONTROL.slot().index(), abi::bootinfo::IOMMU_CONTROL);
        assert_eq!(
            BOOT_INFO_FRAME.slot().index(),
            abi::bootinfo::BOOT_INFO_FRAME
        );
        assert_eq!(
            INIT_IPC_BUFFER.slot().index(),
            abi::bootinfo::INIT_IPC_BUFFER
        );
        assert_eq!(ARENA.slot().index(), abi::bootinfo::FIRST_UNTYPED);
        assert_eq!(untyped_slot(3).index(), abi::bootinfo::FIRST_UNTYPED + 3);
        // The rest of abi::bootinfo comes through unchanged.
        assert_eq!(MAX_UNTYPEDS, abi::bootinfo::MAX_UNTYPEDS);
    }
}
