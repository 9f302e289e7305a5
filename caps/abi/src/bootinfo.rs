//! What the root task (init) receives: its initial capabilities at fixed
//! slots, and a boot-info page describing the rest.

/// Slot of init's own CNode (its CSpace root).
pub const INIT_CNODE: u32 = 1;
/// Slot of init's TCB.
pub const INIT_TCB: u32 = 2;
/// Slot of init's VSpace root.
pub const INIT_VSPACE: u32 = 3;
/// Slot of the IrqControl capability.
pub const IRQ_CONTROL: u32 = 4;
/// Slot of the IommuControl capability of the machine's IOMMU unit.
pub const IOMMU_CONTROL: u32 = 5;
/// Slot of the boot-info Frame.
pub const BOOT_INFO_FRAME: u32 = 6;
/// Slot of init's IPC buffer Frame (mapped at `ipc::IPC_BUFFER_ADDRESS`):
/// threads init starts in its own address space are configured with it,
/// since a thread runs with no authority it was not given.
pub const INIT_IPC_BUFFER: u32 = 7;
/// Slot of the Console capability (all rights): writing to the kernel
/// console and ending the session ([`crate::Syscall::DebugPutChar`],
/// [`crate::Syscall::DebugHalt`]); init hands reduced copies to the domains
/// whose image entry asks for the console.
pub const CONSOLE: u32 = 8;
/// First slot of the initial Untyped capabilities.
pub const FIRST_UNTYPED: u32 = 16;
/// The most initial Untyped capabilities.
pub const MAX_UNTYPEDS: usize = 64;
/// Where the boot-info page is mapped in init's address space.
pub const BOOT_INFO_ADDRESS: u64 = 0x7F_0000_0000;
/// Where the kernel maps the packed system image (the `PCLSIMG` archive the
/// root task was loaded from) read-only in the root task's address space,
/// page by page from its first byte; [`BootInfo::image_address`] says so and
/// [`BootInfo::image_length`] gives its length. 0 in both when the boot
/// module was a bare ELF.
pub const IMAGE_ADDRESS: u64 = 0x7E_0000_0000;
/// The largest image the kernel maps (the window up to [`BOOT_INFO_ADDRESS`]).
pub const MAX_IMAGE_LENGTH: u64 = BOOT_INFO_ADDRESS - IMAGE_ADDRESS;
/// "PCLSBOOT" little-endian: the first word of the page.
pub const BOOT_INFO_MAGIC: u64 = 0x544F_4F42_534C_4350;

/// One initial Untyped: where it is and what it may become.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct UntypedDescriptor {
    /// Physical address.
    pub physical_address: u64,
    /// Size as a power of two.
    pub size_bits: u8,
    /// Device memory (MMIO): only Frames and device Untypeds.
    pub is_device: u8,
    /// What device memory it is: one of [`device_kind`] (0 for RAM).
    pub device_kind: u8,
    /// Padding, zero.
    pub reserved: [u8; 5],
}

/// What a device Untyped covers ([`UntypedDescriptor::device_kind`]).
/// Device Untypeds never cover MMIO the kernel drives (interrupt
/// controllers, the IOMMU, the console UART).
pub mod device_kind {
    /// Not device memory, or nothing more is known.
    pub const UNKNOWN: u8 = 0;
    /// The PCI segment-0 ECAM window (PCIe 4.0, 7.2.2): the configuration
    /// space of every function, bus << 20 | device << 15 | function << 12
    /// from the window's first byte. The Untyped with the lowest address of
    /// this kind starts at bus 0.
    pub const PCI_ECAM: u8 = 1;
    /// A PCI memory window: where the kernel placed (or firmware left) the
    /// memory BARs of the functions on bus 0.
    pub const PCI_MEMORY: u8 = 2;
}

/// The boot-info page's layout (`#[repr(C)]`, all little-endian).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`].
    pub magic: u64,
    /// Layout version, 1.
    pub version: u64,
    /// How many Untyped capabilities start at [`FIRST_UNTYPED`].
    pub untyped_count: u64,
    /// First slot not used by the kernel's initial capabilities.
    pub first_free_slot: u64,
    /// Where the packed system image is mapped in init's address space (0 if none).
    pub image_address: u64,
    /// Its length in bytes.
    pub image_length: u64,
    /// The Untypeds, in slot order.
    pub untypeds: [UntypedDescriptor; MAX_UNTYPEDS],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_info_fits_one_page() {
        assert!(size_of::<BootInfo>() <= 4096);
        assert_eq!(size_of::<UntypedDescriptor>(), 16);
        assert_eq!(&BOOT_INFO_MAGIC.to_le_bytes(), b"PCLSBOOT");
    }

    #[test]
    fn initial_slots_are_distinct_and_below_the_untypeds() {
        let slots = [
            INIT_CNODE,
            INIT_TCB,
            INIT_VSPACE,
            IRQ_CONTROL,
            IOMMU_CONTROL,
            BOOT_INFO_FRAME,
        ];
        for (i, a) in slots.iter().enumerate() {
            assert!(*a < FIRST_UNTYPED);
            for b in &slots[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
