//! The IPC buffer: where message registers 4 and up, and the extra
//! capabilities of a message, travel.
//!
//! # Contract (kernel, init and this crate follow it)
//!
//! - Every thread has one IPC buffer: a page of its own VSpace, mapped
//!   read-write, holding an [`IpcBuffer`] at offset 0. The kernel learns the
//!   frame and its address from `Tcb.Configure` (cap 2 and `MR1`).
//! - Its address is [`IPC_BUFFER_ADDRESS`] in every protection domain: the
//!   kernel maps the root task's (init's) buffer there, init configures
//!   each thread it starts with that address, and this crate reads and
//!   writes the buffer there. (One thread per domain today; a
//!   second thread in the same VSpace will need its own address, passed at
//!   its start.)
//! - Message register `n` is `mrs[n]` for every `n`. Registers 0..4 travel
//!   in CPU registers, so the kernel neither reads nor writes `mrs[0..4]`;
//!   for `n` in `4..length` it reads `mrs[n]` of the sender and writes
//!   `mrs[n]` of the receiver.
//! - `caps[i]` is the slot, in the sender's CSpace, of extra capability `i`
//!   ("cap i" in the invocation docs), for `i < MessageInfo.extra_caps`.
//! - `badge` is written by the kernel whenever this thread receives a
//!   message (`Recv`, `ReplyRecv`, the reply of a `Call`): the badge of the
//!   capability the message came through, the same value as the badge
//!   register, kept here for code that only holds the buffer.
//! - Little-endian, `#[repr(C)]`; offsets are checked by this crate's tests:
//!   `mrs` at 0 (512 bytes), `caps` at 512, `reserved` at 524, `badge` at
//!   528; 536 bytes in all.
//!
//! An IPC buffer that is not mapped is a protocol violation: the kernel
//! faults the thread, and so does this crate's access to it.

use crate::cap::Slot;
use abi::registers::{MAX_EXTRA_CAPS, MAX_MESSAGE_REGISTERS};

/// The IPC buffer's address in every protection domain's VSpace (the last
/// page below 512 GiB).
pub const IPC_BUFFER_ADDRESS: u64 = abi::ipc::IPC_BUFFER_ADDRESS;

/// The IPC buffer's layout. See the [module documentation](self) for who
/// writes what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct IpcBuffer {
    /// Message register `n` at index `n`; only `4..` are used in memory.
    pub mrs: [u64; MAX_MESSAGE_REGISTERS],
    /// Extra capabilities of an outgoing message: slots in the sender's CSpace.
    pub caps: [u32; MAX_EXTRA_CAPS],
    /// The receive slot of capability transfer (`abi::ipc::
    /// RECEIVE_SLOT_OFFSET`, [`set_receive_slot`]); the name stays for
    /// the code that already writes it.
    pub reserved: u32,
    /// The badge of the last received message (written by the kernel).
    pub badge: u64,
}

impl IpcBuffer {
    /// An all-zero buffer.
    pub const fn new() -> IpcBuffer {
        IpcBuffer {
            mrs: [0; MAX_MESSAGE_REGISTERS],
            caps: [0; MAX_EXTRA_CAPS],
            reserved: 0,
            badge: 0,
        }
    }
}

impl Default for IpcBuffer {
    fn default() -> IpcBuffer {
        IpcBuffer::new()
    }
}

/// Message register `index` as the last received message left it.
///
/// # Panics
/// If `index` is not below `abi::registers::MAX_MESSAGE_REGISTERS`.
pub fn mr(index: usize) -> u64 {
    assert!(index < MAX_MESSAGE_REGISTERS, "message register {index}");
    storage::read_mr(index)
}

/// Sets message register `index` of the next message. Registers 0..4 are
/// passed in CPU registers by the sending call itself; setting them here
/// has no effect on a message.
///
/// # Panics
/// If `index` is not below `abi::registers::MAX_MESSAGE_REGISTERS`.
pub fn set_mr(index: usize, value: u64) {
    assert!(index < MAX_MESSAGE_REGISTERS, "message register {index}");
    storage::write_mr(index, value);
}

/// Sets extra capability `index` of the next message to `slot`.
///
/// # Panics
/// If `index` is not below `abi::registers::MAX_EXTRA_CAPS`.
pub fn set_cap(index: usize, slot: Slot) {
    assert!(index < MAX_EXTRA_CAPS, "extra capability {index}");
    storage::write_cap(index, slot.index());
}

/// Extra capability `index` as last set.
///
/// # Panics
/// If `index` is not below `abi::registers::MAX_EXTRA_CAPS`.
pub fn cap(index: usize) -> Slot {
    assert!(index < MAX_EXTRA_CAPS, "extra capability {index}");
    Slot::new(storage::read_cap(index))
}

/// Sets the receive slot: where, in this thread's CSpace, the capability
/// a message carries lands when this thread receives it (the slot must be
/// empty then, and the sender's endpoint capability must have the grant
/// right; the received `MessageInfo.extra_caps` says whether one came).
/// It stays set for every later receive.
pub fn set_receive_slot(slot: Slot) {
    storage::write_receive_slot(slot.index());
}

/// The badge of the last received message, as the kernel left it.
pub fn badge() -> u64 {
    storage::read_badge()
}

/// The buffer in this thread's VSpace at [`IPC_BUFFER_ADDRESS`].
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod storage {
    use super::{IPC_BUFFER_ADDRESS, IpcBuffer};
    use core::mem::offset_of;
    use core::ptr;

    fn field<T>(offset: usize) -> *mut T {
        ptr::with_exposed_provenance_mut(IPC_BUFFER_ADDRESS as usize + offset)
    }

    // SAFETY (for every access below):
    // 1. By the contract in the module documentation, a page holding an
    //    `IpcBuffer` is mapped read-write at `IPC_BUFFER_ADDRESS` for the
    //    life of the thread, and nothing else of the program lives there.
    // 2. Callers check the index, so the address lies inside that struct
    //    and is aligned for the field's type (the page is page aligned and
    //    the offsets come from `offset_of!`).
    // 3. Accesses are volatile and never form references: the kernel
    //    writes the buffer during system calls, outside the compiler's view.
    // 4. One thread per IPC buffer, so no other thread races these accesses.

    pub fn read_mr(index: usize) -> u64 {
        // SAFETY: see above; `index < 64`.
        unsafe { ptr::read_volatile(field(offset_of!(IpcBuffer, mrs) + 8 * index)) }
    }

    pub fn write_mr(index: usize, value: u64) {
        // SAFETY: see above; `index < 64`.
        unsafe { ptr::write_volatile(field(offset_of!(IpcBuffer, mrs) + 8 * index), value) }
    }

    pub fn read_cap(index: usize) -> u32 {
        // SAFETY: see above; `index < 3`.
        unsafe { ptr::read_volatile(field(offset_of!(IpcBuffer, caps) + 4 * index)) }
    }

    pub fn write_cap(index: usize, slot: u32) {
        // SAFETY: see above; `index < 3`.
        unsafe { ptr::write_volatile(field(offset_of!(IpcBuffer, caps) + 4 * index), slot) }
    }

    pub fn write_receive_slot(slot: u32) {
        // SAFETY: see above.
        unsafe { ptr::write_volatile(field(offset_of!(IpcBuffer, reserved)), slot) }
    }

    pub fn read_badge() -> u64 {
        // SAFETY: see above.
        unsafe { ptr::read_volatile(field(offset_of!(IpcBuffer, badge))) }
    }
}

/// On the host: the calling thread's stand-in buffer in [`crate::host`].
#[cfg(not(target_os = "none"))]
mod storage {
    use crate::host::with_buffer;

    pub fn read_mr(index: usize) -> u64 {
        with_buffer(|buffer| buffer.mrs[index])
    }

    pub fn write_mr(index: usize, value: u64) {
        with_buffer(|buffer| buffer.mrs[index] = value);
    }

    pub fn read_cap(index: usize) -> u32 {
        with_buffer(|buffer| buffer.caps[index])
    }

    pub fn write_cap(index: usize, slot: u32) {
        with_buffer(|buffer| buffer.caps[index] = slot);
    }

    pub fn write_receive_slot(slot: u32) {
        with_buffer(|buffer| buffer.reserved = slot);
    }

    pub fn read_badge() -> u64 {
        with_buffer(|buffer| buffer.badge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    /// The layout the kernel and init rely on.
    #[test]
    fn layout_is_fixed() {
        assert_eq!(offset_of!(IpcBuffer, mrs), 0);
        assert_eq!(offset_of!(IpcBuffer, caps), 512);
        assert_eq!(offset_of!(IpcBuffer, reserved), 524);
        assert_eq!(offset_of!(IpcBuffer, badge), 528);
        // The kernel reads and writes by abi's numbers.
        assert_eq!(offset_of!(IpcBuffer, caps), abi::ipc::CAPS_OFFSET);
        assert_eq!(offset_of!(IpcBuffer, badge), abi::ipc::BADGE_OFFSET);
        assert_eq!(size_of::<IpcBuffer>(), 536);
        assert!(size_of::<IpcBuffer>() <= 4096);
        assert_eq!(IPC_BUFFER_ADDRESS % 4096, 0);
    }

    #[test]
    fn registers_and_caps_round_trip() {
        set_mr(63, 7);
        set_cap(2, crate::Slot::new(9));
        assert_eq!(mr(63), 7);
        assert_eq!(cap(2), crate::Slot::new(9));
        assert_eq!(badge(), 0);
    }

    #[test]
    #[should_panic(expected = "message register 64")]
    fn register_index_is_checked() {
        set_mr(64, 0);
    }
}
