//! MSI and MSI-X message setup that every driver does the same way (PCI
//! Local Bus 3.0, 6.8): where the device must write the message the kernel
//! gave (`IrqHandler.MsiMessage`), and the MSI-X capability's table
//! location, table entry and enable bits. Pure arithmetic: the caller does
//! the writes (configuration space through init, the table in a BAR it
//! mapped).

/// The MSI capability's ID.
pub const MSI_CAPABILITY: u8 = 0x05;
/// The MSI-X capability's ID.
pub const MSIX_CAPABILITY: u8 = 0x11;
/// MSI-X Enable (Message Control bit 15), as a bit of the capability's
/// first register.
pub const MSIX_ENABLE: u32 = 1 << 31;
/// MSI-X Function Mask (Message Control bit 14), likewise.
pub const MSIX_FUNCTION_MASK: u32 = 1 << 30;
/// Bytes of one MSI-X table entry.
pub const MSIX_ENTRY_BYTES: u64 = 16;

/// Where a device writes its message, and what the driver's stage 1 must
/// map for that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The address programmed into the device.
    pub written: u64,
    /// `(iova, ipa)`: the page the driver's stage 1 must map (writable)
    /// before the device may write; `None` when the write needs no
    /// translation.
    pub doorbell: Option<(u64, u64)>,
}

/// Where a device writes the message at `address`. `iova` is `None` when
/// the IOMMU takes the write as an interrupt request before any
/// translation (x86_64: VT-d interrupt remapping). Otherwise the write is
/// translated like any DMA (aarch64: the GICv2m doorbell the kernel keeps
/// at an IPA of the IoSpace, reached by a nested device only through its
/// driver's stage 1): the device writes page-aligned `iova` plus the
/// address's offset in its page, and the stage 1 maps `iova` to the page.
pub fn target(address: u64, iova: Option<u64>) -> Target {
    match iova {
        None => Target {
            written: address,
            doorbell: None,
        },
        Some(iova) => {
            let page = iova & !0xFFF;
            Target {
                written: page | (address & 0xFFF),
                doorbell: Some((page, address & !0xFFF)),
            }
        }
    }
}

/// The BAR index and offset the MSI-X capability's Table Offset/BIR (or
/// PBA Offset/BIR) register names: BIR in bits 0..3, the offset the rest.
pub fn location(register: u32) -> (usize, u64) {
    ((register & 0x7) as usize, u64::from(register & !0x7))
}

/// MSI-X table entry `entry` at `table` (offset in its BAR): the offsets
/// and values of its four registers (address, upper address, data, vector
/// control), unmasked.
pub fn table_entry(table: u64, entry: u16, address: u64, data: u32) -> [(u64, u32); 4] {
    let at = table + u64::from(entry) * MSIX_ENTRY_BYTES;
    [
        (at, address as u32),
        (at + 4, (address >> 32) as u32),
        (at + 8, data),
        (at + 12, 0),
    ]
}

/// The capability's first register with MSI-X enabled and the function
/// unmasked, the rest as `register` (what `Function::write_msi_field`
/// accepts).
pub fn msix_enabled(register: u32) -> u32 {
    (register | MSIX_ENABLE) & !MSIX_FUNCTION_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remapped_messages_are_written_as_given() {
        assert_eq!(
            target(0xFEE0_0010, None),
            Target {
                written: 0xFEE0_0010,
                doorbell: None
            }
        );
    }

    #[test]
    fn translated_messages_go_through_the_iova_of_their_page() {
        // GICv2m's MSI_SETSPI at 0x40 of the doorbell page.
        let t = target(0x1F_F040, Some(0x20_0000));
        assert_eq!(t.written, 0x20_0040);
        assert_eq!(t.doorbell, Some((0x20_0000, 0x1F_F000)));
        // An IOVA with an offset is taken page-aligned.
        assert_eq!(target(0x1F_F040, Some(0x20_0123)).written, 0x20_0040);
    }

    #[test]
    fn table_registers() {
        assert_eq!(location(0x2000), (0, 0x2000));
        assert_eq!(location(0x3004), (4, 0x3000));
        assert_eq!(
            table_entry(0x2000, 1, 0x1_2345_6780, 0x41),
            [
                (0x2010, 0x2345_6780),
                (0x2014, 1),
                (0x2018, 0x41),
                (0x201C, 0)
            ]
        );
        assert_eq!(msix_enabled(0x4000_0011), 0x8000_0011);
    }
}
