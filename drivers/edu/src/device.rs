//! The edu device from user space: found on bus 0 through a mapped ECAM
//! Frame, its registers reached through a mapped Frame of BAR 0.
//!
//! edu (QEMU docs/specs/edu.rst) has a 4 KiB buffer at device address
//! 0x40000 and a DMA engine: source 0x80, destination 0x88, count 0x90,
//! command 0x98 (bit 0 start/busy, bit 1 edu -> RAM). A transfer completes
//! 100 ms of virtual time after it starts; the device never reports an
//! error: the IOMMU records it.

use rt::mmio::Window;
use rt::space::Objects;
use sys::untypeds;
use sys::{Cap, PageTable};

/// Where the first 2 MiB of the ECAM window (buses 0 and 1) are mapped.
const ECAM_ADDRESS: u64 = 0x20_0000_0000;
const ECAM_MAPPED: u64 = 1 << 21;
/// Where BAR 0's first page is mapped.
const BAR_ADDRESS: u64 = 0x20_0040_0000;
/// QEMU's edu device.
const VENDOR: u16 = 0x1234;
const DEVICE: u16 = 0x11e8;
/// The device buffer's address in edu's own DMA address space.
pub const BUFFER: u64 = 0x4_0000;
/// The largest transfer: the device buffer.
pub const MAX_TRANSFER: u64 = 4096;

const IDENTIFICATION: u64 = 0x00;
const DMA_SOURCE: u64 = 0x80;
const DMA_DESTINATION: u64 = 0x88;
const DMA_COUNT: u64 = 0x90;
const DMA_COMMAND: u64 = 0x98;
const COMMAND_START: u64 = 1 << 0;
const COMMAND_TO_RAM: u64 = 1 << 1;
const COMMAND_RAISE_INTERRUPT: u64 = 1 << 2;
/// Interrupt status (bit 8: a DMA finished) and acknowledge registers.
const INTERRUPT_STATUS: u64 = 0x24;
const INTERRUPT_ACKNOWLEDGE: u64 = 0x64;
/// Writing here sets interrupt status bits and raises edu's interrupt.
const INTERRUPT_RAISE: u64 = 0x60;
/// Status reads before a transfer counts as stuck (one 100 ms transfer
/// takes about a million on QEMU without icount).
const POLL_LIMIT: u64 = 500_000_000;

/// Bus 0's configuration space through the mapped ECAM window.
fn config(window: Window) -> impl pci::ConfigAccess {
    pci::Closures {
        read: move |offset| window.read32(offset & !3),
        write: move |offset, value| window.write32(offset & !3, value),
    }
}

/// Why the device could not be reached or did not finish.
pub type Why = rt::testing::Failure;

fn why(args: core::fmt::Arguments<'_>) -> Why {
    rt::testing::Failure(rt::__format!("{args}"))
}

/// One edu function.
pub struct Edu {
    /// Where it sits on bus 0; its requester id is the IOMMU's name for it.
    pub bdf: pci::Bdf,
    /// The page holding its registers, which start at `offset`.
    registers: Window,
    offset: u64,
    /// Bus 0's configuration space, when the driver mapped it.
    config: Option<Window>,
}

/// The most edu functions the driver handles.
pub const MAX_DEVICES: usize = 2;

impl Edu {
    /// Finds up to [`MAX_DEVICES`] edu functions on bus 0, turns on their
    /// memory decoding and bus mastering and maps their registers (BAR 0's
    /// first page). Needs the boot info's device Untypeds for the ECAM
    /// window and the BARs, untouched: BAR Frames are carved in address
    /// order, padding from each window's watermark.
    pub fn find_all(
        objects: &mut Objects,
        own: Cap<PageTable>,
    ) -> Result<[Option<Edu>; MAX_DEVICES], Why> {
        let info = rt::boot::boot_info().ok_or_else(|| why(format_args!("no boot info")))?;
        let ecam = untypeds::pci_ecam(info)
            .ok_or_else(|| why(format_args!("no PCI ECAM device Untyped")))?;
        let frame = untypeds::retype_frame_at(ecam, ecam.start(), 21, &mut || objects.slot())
            .map_err(|e| why(format_args!("a Frame at the ECAM base: {e:?}")))?;
        let ecam_window = Window::map(objects, frame, own, ECAM_ADDRESS, ECAM_MAPPED)
            .map_err(|e| why(format_args!("mapping the ECAM Frame: {e:?}")))?;
        let mut access = config(ecam_window);
        let mut found = [(pci::Bdf::new(0, 0, 0), 0u64); MAX_DEVICES];
        let mut count = 0;
        let mut scan = pci::BusScan::new(0);
        while let Some(bdf) = scan.next(&mut access) {
            let Ok(mut function) = pci::Function::open(&mut access, bdf) else {
                continue;
            };
            if function.vendor_id() != VENDOR || function.device_id() != DEVICE {
                continue;
            }
            let bar = match function.bar(0) {
                Ok(pci::Bar::Memory { address, .. }) if address != 0 => address,
                other => return Err(why(format_args!("edu at {bdf}: BAR 0 is {other:?}"))),
            };
            function.enable(pci::command::MEMORY_SPACE | pci::command::BUS_MASTER);
            if count < MAX_DEVICES {
                found[count] = (bdf, bar);
                count += 1;
            }
        }
        if count == 0 {
            return Err(why(format_args!(
                "no edu ({VENDOR:04x}:{DEVICE:04x}) on bus 0; add -device edu"
            )));
        }
        found[..count].sort_unstable_by_key(|&(_, bar)| bar);
        let mut devices = [const { None }; MAX_DEVICES];
        // (window slot, first byte not yet carved)
        let mut carved: Option<(sys::Slot, u64)> = None;
        for (i, &(bdf, bar)) in found[..count].iter().enumerate() {
            let page = bar & !0xfff;
            let window = untypeds::device_untyped_covering(info, page, 4096)
                .ok_or_else(|| why(format_args!("no device Untyped covers BAR 0 at {bar:#x}")))?;
            let watermark = match carved {
                Some((slot, next)) if slot == window.slot => next,
                _ => window.start(),
            };
            let frame =
                untypeds::retype_frame_after(window, watermark, page, 12, &mut || objects.slot())
                    .map_err(|e| why(format_args!("a Frame at BAR 0 {bar:#x}: {e:?}")))?;
            carved = Some((window.slot, page + 4096));
            let address = BAR_ADDRESS + 4096 * i as u64;
            let page = Window::map(objects, frame, own, address, 4096)
                .map_err(|e| why(format_args!("mapping BAR 0 of {bdf}: {e:?}")))?;
            let mut edu = Edu::at(bdf, page, bar & 0xfff)?;
            edu.config = Some(ecam_window);
            devices[i] = Some(edu);
        }
        Ok(devices)
    }

    /// The edu at `bdf` whose registers start at `offset` of `page` (a
    /// mapped window of BAR 0); checks the identification register.
    pub fn at(bdf: pci::Bdf, page: Window, offset: u64) -> Result<Edu, Why> {
        let edu = Edu {
            bdf,
            registers: page,
            offset,
            config: None,
        };
        let id = edu.registers.read32(offset + IDENTIFICATION);
        if id != 0x0100_00ed {
            return Err(why(format_args!("edu at {bdf}: identification {id:#x}")));
        }
        Ok(edu)
    }

    /// The requester id (PCI bus/device/function) the IOMMU knows it by.
    pub fn requester(&self) -> u32 {
        u32::from(self.bdf.requester_id())
    }

    /// Starts copying `len` bytes from the device buffer to `iova`.
    pub fn start_write_memory(&self, iova: u64, len: u64) {
        self.start(BUFFER, iova, len, COMMAND_TO_RAM);
    }

    /// Starts copying `len` bytes from `iova` into the device buffer.
    pub fn start_read_memory(&self, iova: u64, len: u64) {
        self.start(iova, BUFFER, len, 0);
    }

    /// Programs and enables edu's MSI capability with `address` / `data`
    /// (from `IrqHandler.MsiMessage`); needs the configuration space.
    pub fn enable_msi(&self, address: u64, data: u32) -> Result<(), Why> {
        let Some(window) = self.config else {
            return Err(why(format_args!(
                "edu at {}: no configuration space mapped",
                self.bdf
            )));
        };
        let data = u16::try_from(data)
            .map_err(|_| why(format_args!("MSI data {data:#x} does not fit 16 bits")))?;
        let mut access = config(window);
        let mut function = pci::Function::open(&mut access, self.bdf)
            .map_err(|e| why(format_args!("edu at {}: {e}", self.bdf)))?;
        function
            .enable_msi(address, data)
            .map_err(|e| why(format_args!("{e}")))
    }

    /// Starts copying `len` bytes from the device buffer to `iova`; edu
    /// raises its interrupt when the copy is done.
    pub fn start_write_memory_raising(&self, iova: u64, len: u64) {
        self.start(BUFFER, iova, len, COMMAND_TO_RAM | COMMAND_RAISE_INTERRUPT);
    }

    /// Sets `status` bits and raises edu's interrupt (its MSI, when enabled)
    /// without any DMA.
    pub fn raise_interrupt(&self, status: u32) {
        self.registers
            .write32(self.offset + INTERRUPT_RAISE, status);
    }

    /// Reads and clears edu's interrupt status; returns what was set.
    pub fn acknowledge_interrupt(&self) -> u32 {
        let status = self.registers.read32(self.offset + INTERRUPT_STATUS);
        self.registers
            .write32(self.offset + INTERRUPT_ACKNOWLEDGE, status);
        status
    }

    /// Copies `len` bytes from the device buffer to `iova` and waits.
    pub fn write_memory(&self, iova: u64, len: u64) -> Result<(), Why> {
        self.start_write_memory(iova, len);
        self.wait()
    }

    /// Copies `len` bytes from `iova` into the device buffer and waits.
    pub fn read_memory(&self, iova: u64, len: u64) -> Result<(), Why> {
        self.start_read_memory(iova, len);
        self.wait()
    }

    fn start(&self, source: u64, destination: u64, len: u64, direction: u64) {
        let registers = self.registers;
        registers.write64(self.offset + DMA_SOURCE, source);
        registers.write64(self.offset + DMA_DESTINATION, destination);
        registers.write64(self.offset + DMA_COUNT, len.min(MAX_TRANSFER));
        registers.write64(self.offset + DMA_COMMAND, COMMAND_START | direction);
    }

    /// Waits (bounded) until the engine is idle.
    pub fn wait(&self) -> Result<(), Why> {
        for _ in 0..POLL_LIMIT {
            if self.registers.read64(self.offset + DMA_COMMAND) & COMMAND_START == 0 {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(why(format_args!(
            "edu at {}: DMA still busy after {POLL_LIMIT} status reads",
            self.bdf
        )))
    }
}
