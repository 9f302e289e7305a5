//! The IPC buffer: where message registers beyond the CPU registers and the
//! extra capabilities of a message live, shared by kernel and userland.
//!
//! One page per thread at [`IPC_BUFFER_ADDRESS`] (`#[repr(C)]`,
//! little-endian): message register `n` at byte `8 * n` (registers 0..4
//! travel in CPU registers and are not read here), the extra capability
//! pointers (`u32` each) at [`CAPS_OFFSET`], the badge of the last received
//! message at [`BADGE_OFFSET`]. `userland/sys`'s `IpcBuffer` type follows
//! these numbers, checked by its tests.

/// Where each thread's IPC buffer is mapped.
pub const IPC_BUFFER_ADDRESS: u64 = 0x7F_FFFF_F000;
/// Byte offset of the extra capability pointers (`[u32; MAX_EXTRA_CAPS]`).
pub const CAPS_OFFSET: usize = 8 * crate::registers::MAX_MESSAGE_REGISTERS;
/// Byte offset of the receive slot (`u32`): where, in the receiver's CSpace,
/// a capability sent with the message lands (it must be empty). A sender's
/// endpoint capability needs the grant right to send capabilities.
pub const RECEIVE_SLOT_OFFSET: usize = CAPS_OFFSET + 4 * crate::registers::MAX_EXTRA_CAPS;
/// Byte offset of the badge (`u64`), written by the kernel on every receive.
pub const BADGE_OFFSET: usize = CAPS_OFFSET + 4 * crate::registers::MAX_EXTRA_CAPS + 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_numbers() {
        assert_eq!(CAPS_OFFSET, 512);
        assert_eq!(BADGE_OFFSET, 528);
        assert_eq!(RECEIVE_SLOT_OFFSET, 524);
        assert_eq!(IPC_BUFFER_ADDRESS % 4096, 0);
    }
}
