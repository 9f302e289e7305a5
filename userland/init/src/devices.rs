//! Granted devices' registers: init maps the first 2 MiB of the PCI ECAM
//! window (bus 0) into itself once, finds a granted device's BAR 0 there,
//! turns on its memory decoding and bus mastering, and maps BAR 0 into the
//! driver's domain at the address `sys::names` gives: whole when it is at
//! most 16 KiB (an NVMe controller's, doorbells included), else its first
//! page. On
//! request it maps a whole memory BAR, and reads a word of the device's
//! configuration space for its driver (which never writes it).
//!
//! BAR Frames are carved from the device Untyped covering them, in the
//! order devices are granted: an Untyped hands out memory upward only, so
//! a device whose BAR lies below one granted earlier from the same window
//! is refused with a message saying so. Init keeps each Frame it carved:
//! a restarted driver (`crate::restart`) asks for the same BAR again, and
//! its page is mapped with the same Frame (whose mapping in the old run's
//! VSpace went with that VSpace).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use rt::mmio::Window;
use rt::space::{Objects, map_frame};
use sys::bootinfo;
use sys::resources::Refusal;
use sys::untypeds;
use sys::{Cap, Frame, MapRights, PageTable};
use sysdesc::PciAddress;

/// Where init maps the ECAM window's first 2 MiB in its own VSpace.
const ECAM_ADDRESS: u64 = 0x11_0000_0000;
const ECAM_MAPPED: u64 = 2 << 20;

/// BAR 0 up to this size is mapped whole at the device request; a larger
/// one only its first page.
const WHOLE_REGISTERS: u64 = 16 << 10;

/// The ECAM mapping and how far each device Untyped has been carved.
#[derive(Debug, Default)]
pub struct Devices {
    ecam: Option<Window>,
    /// (device Untyped slot, first byte not yet carved)
    carved: Vec<(sys::Slot, u64)>,
    /// Every Frame carved, by its physical address.
    frames: Vec<(u64, Cap<Frame>)>,
}

impl Devices {
    /// Init's mapping of bus 0's configuration space, made at first use.
    fn ecam(&mut self, objects: &mut Objects) -> Result<Window, String> {
        if let Some(window) = self.ecam {
            return Ok(window);
        }
        let info = rt::boot::boot_info().ok_or("no boot info")?;
        let untyped = untypeds::pci_ecam(info).ok_or("the boot info lists no PCI ECAM window")?;
        let frame = untypeds::retype_frame_at(untyped, untyped.start(), 21, &mut || objects.slot())
            .map_err(|e| format!("a Frame of the ECAM window: {e:?}"))?;
        let own = bootinfo::INIT_VSPACE;
        let window = Window::map(objects, frame, own, ECAM_ADDRESS, ECAM_MAPPED)
            .map_err(|e| format!("mapping the ECAM window: {e:?}"))?;
        Ok(*self.ecam.insert(window))
    }

    /// Maps BAR 0 of `device` at `address` in `vspace` (read-write,
    /// uncached: the kernel maps device memory so); returns where its
    /// registers start (`address` plus BAR 0's offset in its page), or 0
    /// when BAR 0 is no memory BAR (a virtio-pci function's registers are
    /// in the BAR its capabilities name: [`Devices::map_bar`]). Turns on
    /// the device's memory decoding and bus mastering.
    pub fn map_registers(
        &mut self,
        objects: &mut Objects,
        device: PciAddress,
        vspace: Cap<PageTable>,
        address: u64,
    ) -> Result<u64, String> {
        let ecam = self.ecam(objects)?;
        let mut config = config_of(ecam);
        let mut function = open(&mut config, device)?;
        function.enable(pci::command::MEMORY_SPACE | pci::command::BUS_MASTER);
        let (bar, size) = match function.bar_with_size(0) {
            Ok((pci::Bar::Memory { address, .. }, size)) if address != 0 && size != 0 => {
                (address, size)
            }
            Ok((pci::Bar::Memory { .. }, size)) if size != 0 => {
                return Err(format!("device {device}: BAR 0 is unassigned"));
            }
            // Not implemented (reads as zero whatever is written), or I/O.
            Ok(_) | Err(_) => return Ok(0),
        };
        // A small BAR 0 whole (an NVMe controller's doorbells start at
        // 0x1000), a large one's first page.
        let length = if size <= WHOLE_REGISTERS { size } else { 4096 };
        self.map_pages(objects, device, bar, length, vspace, address)?;
        Ok(address + (bar & 0xfff))
    }

    /// Maps memory BAR `index` of `device` whole at `address` in `vspace`
    /// (read-write, uncached); returns where it starts and its size. A BAR
    /// larger than `limit` bytes is refused.
    pub fn map_bar(
        &mut self,
        objects: &mut Objects,
        device: PciAddress,
        index: u8,
        vspace: Cap<PageTable>,
        (address, limit): (u64, u64),
    ) -> Result<(u64, u64), String> {
        let ecam = self.ecam(objects)?;
        let mut config = config_of(ecam);
        let mut function = open(&mut config, device)?;
        let (bar, size) = function
            .bar_with_size(index)
            .map_err(|e| format!("device {device}: BAR {index}: {e}"))?;
        let base = match bar {
            pci::Bar::Memory { address, .. } if address != 0 && size != 0 => address,
            other => {
                return Err(format!(
                    "device {device}: BAR {index} is {other:?} of {size:#x} bytes, no assigned memory BAR"
                ));
            }
        };
        let pages = (base & 0xfff) + size;
        if pages > limit {
            return Err(format!(
                "device {device}: BAR {index} is {size:#x} bytes, above the {limit:#x} init maps"
            ));
        }
        self.map_pages(objects, device, base, pages, vspace, address)?;
        Ok((address + (base & 0xfff), size))
    }

    /// The 32-bit word at `offset` (4-byte aligned, below 4096) of
    /// `device`'s configuration space.
    pub fn config_read(
        &mut self,
        objects: &mut Objects,
        device: PciAddress,
        offset: u64,
    ) -> Result<u32, String> {
        if !offset.is_multiple_of(4) || offset >= 4096 {
            return Err(format!(
                "offset {offset:#x} of the configuration space: not a 4-byte aligned offset below 0x1000"
            ));
        }
        let ecam = self.ecam(objects)?;
        let mut config = config_of(ecam);
        let mut function = open(&mut config, device)?;
        Ok(function.read(offset as u16))
    }

    /// The checked MSI write of a driver's `CONFIG_WRITE`: `value` to the
    /// register at `offset` of `device`'s MSI or MSI-X capability
    /// (`pci::Function::write_msi_field`); the word read back.
    pub fn config_write_msi(
        &mut self,
        objects: &mut Objects,
        device: PciAddress,
        offset: u16,
        value: u32,
    ) -> Result<u32, (Refusal, String)> {
        let ecam = self.ecam(objects).map_err(|e| (Refusal::BadArgument, e))?;
        let mut config = config_of(ecam);
        let mut function = open(&mut config, device).map_err(|e| (Refusal::BadArgument, e))?;
        function
            .write_msi_field(offset, value)
            .map_err(|e| (Refusal::NotMsiField, e.to_string()))
    }

    /// Carves Frames for `length` bytes of device memory from `bar`'s page
    /// on and maps them at `address` in `vspace`.
    fn map_pages(
        &mut self,
        objects: &mut Objects,
        device: PciAddress,
        bar: u64,
        length: u64,
        vspace: Cap<PageTable>,
        address: u64,
    ) -> Result<(), String> {
        let info = rt::boot::boot_info().ok_or("no boot info")?;
        let first = bar & !0xfff;
        let length = length.next_multiple_of(4096);
        let window = untypeds::device_untyped_covering(info, first, length).ok_or_else(|| {
            format!("device {device}: no device Untyped covers {first:#x}+{length:#x}")
        })?;
        for page in (first..first + length).step_by(4096) {
            let kept = self.frames.iter().find(|(at, _)| *at == page);
            let frame = match kept {
                Some(&(_, frame)) => frame,
                None => {
                    let watermark = self
                        .carved
                        .iter()
                        .find(|(slot, _)| *slot == window.slot)
                        .map_or(window.start(), |&(_, next)| next);
                    let frame = untypeds::retype_frame_after(
                        window,
                        watermark,
                        page,
                        12,
                        &mut || objects.slot(),
                    )
                    .map_err(|e| {
                        format!(
                            "device {device}: a Frame at {page:#x} (the window is carved up to {watermark:#x}): {e:?}"
                        )
                    })?;
                    self.carved.retain(|(slot, _)| *slot != window.slot);
                    self.carved.push((window.slot, page + 4096));
                    self.frames.push((page, frame));
                    frame
                }
            };
            // A kept Frame's mapping went with the VSpace of the run it
            // was mapped for.
            map_frame(
                objects,
                frame,
                vspace,
                address + (page - first),
                MapRights::READ_WRITE,
            )
            .map_err(|e| format!("device {device}: mapping {page:#x} into the domain: {e:?}"))?;
        }
        Ok(())
    }
}

/// Bus 0's configuration space through init's mapping.
fn config_of(ecam: Window) -> impl pci::ConfigAccess {
    pci::Closures {
        read: move |offset| ecam.read32(offset & !3),
        write: move |offset, value| ecam.write32(offset & !3, value),
    }
}

/// The function at `device` (bus 0 only: init maps bus 0's window).
fn open<A: pci::ConfigAccess>(
    config: &mut A,
    device: PciAddress,
) -> Result<pci::Function<'_, A>, String> {
    if device.bus != 0 {
        return Err(format!("device {device}: only bus 0 is reachable"));
    }
    let bdf = pci::Bdf::new(device.bus, device.device, device.function);
    pci::Function::open(config, bdf).map_err(|e| format!("device {device}: {e}"))
}
