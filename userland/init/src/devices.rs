//! Granted devices' registers: init maps the first 2 MiB of the PCI ECAM
//! window (bus 0) into itself once, finds a granted device's BAR 0 there,
//! turns on its memory decoding and bus mastering, and maps BAR 0's first
//! page into the driver's domain at the address `sys::names` gives.
//!
//! BAR Frames are carved from the device Untyped covering them, in the
//! order devices are granted: an Untyped hands out memory upward only, so
//! a device whose BAR lies below one granted earlier from the same window
//! is refused with a message saying so.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use rt::mmio::Window;
use rt::space::{Objects, map_frame};
use sys::bootinfo;
use sys::untypeds;
use sys::{Cap, MapRights, PageTable};
use sysdesc::PciAddress;

/// Where init maps the ECAM window's first 2 MiB in its own VSpace.
const ECAM_ADDRESS: u64 = 0x11_0000_0000;
const ECAM_MAPPED: u64 = 2 << 20;

/// The ECAM mapping and how far each device Untyped has been carved.
#[derive(Debug, Default)]
pub struct Devices {
    ecam: Option<Window>,
    /// (device Untyped slot, first byte not yet carved)
    carved: Vec<(sys::Slot, u64)>,
}

impl Devices {
    /// Maps BAR 0 of `device` at `address` in `vspace` (read-write,
    /// uncached: the kernel maps device memory so); returns where its
    /// registers start (`address` plus BAR 0's offset in its page).
    pub fn map_registers(
        &mut self,
        objects: &mut Objects,
        device: PciAddress,
        vspace: Cap<PageTable>,
        address: u64,
    ) -> Result<u64, String> {
        let info = rt::boot::boot_info().ok_or("no boot info")?;
        let ecam = match self.ecam {
            Some(window) => window,
            None => {
                let untyped =
                    untypeds::pci_ecam(info).ok_or("the boot info lists no PCI ECAM window")?;
                let frame =
                    untypeds::retype_frame_at(untyped, untyped.start(), 21, &mut || objects.slot())
                        .map_err(|e| format!("a Frame of the ECAM window: {e:?}"))?;
                let own = bootinfo::INIT_VSPACE;
                let window = Window::map(objects, frame, own, ECAM_ADDRESS, ECAM_MAPPED)
                    .map_err(|e| format!("mapping the ECAM window: {e:?}"))?;
                *self.ecam.insert(window)
            }
        };
        if device.bus != 0 {
            return Err(format!("device {device}: only bus 0 is reachable"));
        }
        // Bus 0's configuration space through init's mapping.
        let mut config = pci::Closures {
            read: |offset| ecam.read32(offset & !3),
            write: |offset, value| ecam.write32(offset & !3, value),
        };
        let bdf = pci::Bdf::new(device.bus, device.device, device.function);
        let mut function =
            pci::Function::open(&mut config, bdf).map_err(|e| format!("device {device}: {e}"))?;
        let bar = match function.bar(0) {
            Ok(pci::Bar::Memory { address, .. }) if address != 0 => address,
            other => return Err(format!("device {device}: BAR 0 is {other:?}")),
        };
        function.enable(pci::command::MEMORY_SPACE | pci::command::BUS_MASTER);
        let page = bar & !0xfff;
        let window = untypeds::device_untyped_covering(info, page, 4096).ok_or_else(|| {
            format!("device {device}: no device Untyped covers BAR 0 at {bar:#x}")
        })?;
        let watermark = self
            .carved
            .iter()
            .find(|(slot, _)| *slot == window.slot)
            .map_or(window.start(), |&(_, next)| next);
        let frame = untypeds::retype_frame_after(window, watermark, page, 12, &mut || objects.slot())
            .map_err(|e| {
                format!(
                    "device {device}: a Frame at BAR 0 ({bar:#x}; the window is carved up to {watermark:#x}): {e:?}"
                )
            })?;
        self.carved.retain(|(slot, _)| *slot != window.slot);
        self.carved.push((window.slot, page + 4096));
        map_frame(objects, frame, vspace, address, MapRights::READ_WRITE)
            .map_err(|e| format!("device {device}: mapping BAR 0 into the domain: {e:?}"))?;
        Ok(address + (bar & 0xfff))
    }
}
