//! The start-up every driver domain of an image with `on_request = true`
//! makes, whatever its device: it holds no IOMMU capability, only the
//! endpoint `init`, and asks (`sys::resources`) for
//!
//! 1. its device (`request_device`: an IoDevice badged as the driver
//!    likes, for its fault records, and BAR 0 mapped where init maps it);
//! 2. an IoSpace (`request_space`: the image's `io_map` already in it: the
//!    stage-1 table frames read-only, the DMA pool read-write);
//! 3. a fault queue bound to the device (`request_fault_queue`);
//!
//! then builds its own stage-1 table in the table frames ([`table_frames`]
//! gives them to `iopt`), binds it in the IoSpace and attaches the device
//! nested under it ([`Granted::attach`]). Until then the device reaches
//! nothing; from then on only what that table maps, inside the IoSpace.
//! How the stage 1 is built is the driver's (`virtio::dma::install` for
//! the virtio drivers, `iopt` directly in the NVMe domain).

use sys::resources;
use sys::{Cap, Endpoint, IoDevice, IoFaultQueue, IoSpace, IoUserTable};

use crate::{Failure, failure};

/// What init gave a driver domain that asked for its device.
#[derive(Clone, Copy, Debug)]
pub struct Granted {
    /// The device, badged as asked.
    pub device: Cap<IoDevice>,
    /// Where init mapped BAR 0 (`sys::names::DEVICE_REGISTERS_ADDRESS`),
    /// or 0 for a device without a memory BAR 0.
    pub registers: u64,
    /// The IoSpace: the kernel-owned stage 2 the driver's stage 1 nests in.
    pub space: Cap<IoSpace>,
    /// The device's fault queue.
    pub faults: Cap<IoFaultQueue>,
}

/// Asks init for the device at `function` with badge `badge`, an IoSpace
/// of `space_size` bytes and a fault queue; each refusal names what was
/// asked.
pub fn request(
    init: Cap<Endpoint>,
    function: (u8, u8, u8),
    badge: u64,
    space_size: u64,
) -> Result<Granted, Failure> {
    let (bus, dev, fun) = function;
    let pci = resources::pci_address(bus, dev, fun);
    let (device, registers) = resources::request_device(init, pci, badge).map_err(|e| {
        failure(format_args!(
            "asking init for the device at {bus:02x}:{dev:02x}.{fun}: {e:?}"
        ))
    })?;
    let space = resources::request_space(init, pci, space_size).map_err(|e| {
        failure(format_args!(
            "asking init for an IoSpace of {space_size:#x} bytes: {e:?}"
        ))
    })?;
    let (faults, _signal) = resources::request_fault_queue(init, pci)
        .map_err(|e| failure(format_args!("asking init for a fault queue: {e:?}")))?;
    Ok(Granted {
        device,
        registers,
        space,
        faults,
    })
}

impl Granted {
    /// Attaches the device nested under `table` (the driver's stage 1,
    /// bound in [`Granted::space`]).
    pub fn attach(&self, table: Cap<IoUserTable>) -> Result<(), Failure> {
        self.device
            .attach_nested(table)
            .map_err(|e| failure(format_args!("IoDevice.AttachNested: {e:?}")))
    }
}

/// The image's stage-1 table frames, `frames` pages at `va`, as `iopt`'s
/// memory.
///
/// # Safety
///
/// The domain maps `frames` 4 KiB frames read-write at `va` for its life
/// (its image's table region), and the caller makes this the only Rust
/// view of them (it calls this once).
#[allow(unsafe_code)]
pub unsafe fn table_frames(va: u64, frames: usize) -> &'static mut [[u64; 512]] {
    // SAFETY: the caller's contract above.
    unsafe { core::slice::from_raw_parts_mut(va as *mut [u64; 512], frames) }
}
