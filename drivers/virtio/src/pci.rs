//! A virtio-pci function as a driver domain reaches it: its configuration
//! space read through init (`sys::resources::CONFIG_READ`; a driver never
//! writes it), its memory BARs mapped whole by init
//! (`sys::resources::BAR`), and the crate's `PciTransport` on top.
//!
//! `virtio-drivers` sizes each BAR it uses the usual way, writing all ones
//! to the register and reading what sticks. [`InitConfig`] answers those
//! reads from the sizes init reported and drops every write, so the
//! crate's view is the device's while the device itself is never
//! reprogrammed by the driver (init turned on memory decoding and bus
//! mastering when it gave the device).

use sys::resources;
use sys::{Cap, Endpoint};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};

use crate::dma::StageOneHal;
use crate::{Failure, failure};

/// The first BAR register and how many there are (PCI 3.0, 6.2.5.1).
const BAR0: u8 = 0x10;
const BARS: usize = 6;

/// One BAR init mapped: its bus address, size and address here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedBar {
    /// The PCI (and, on both machines, physical) address it decodes.
    pub physical: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Where init mapped it in this domain.
    pub address: u64,
    /// A 64-bit BAR (it also uses the next register).
    pub is_64bit: bool,
}

/// The BARs the Hal's `mmio_phys_to_virt` translates.
static BARS_MAPPED: spin::Mutex<[Option<MappedBar>; BARS]> = spin::Mutex::new([None; BARS]);

/// Where the `size` bytes of device memory at `physical` are mapped here,
/// when inside a BAR init mapped.
pub fn bar_address(physical: u64, size: u64) -> Option<u64> {
    BARS_MAPPED.lock().iter().flatten().find_map(|bar| {
        let offset = physical.checked_sub(bar.physical)?;
        (offset.checked_add(size)? <= bar.size).then_some(bar.address + offset)
    })
}

/// Configuration space of one function, read through init.
#[derive(Debug)]
pub struct InitConfig {
    init: Cap<Endpoint>,
    function: DeviceFunction,
    /// BAR registers written with all ones (sizing), bit per register.
    sizing: u8,
    bars: [Option<MappedBar>; BARS],
}

impl InitConfig {
    fn pci(&self) -> u64 {
        resources::pci_address(
            self.function.bus,
            self.function.device,
            self.function.function,
        )
    }

    fn read(&self, offset: u8) -> Result<u32, Failure> {
        resources::config_read(self.init, self.pci(), u16::from(offset)).map_err(|e| {
            failure(format_args!(
                "reading configuration offset {offset:#x} through init: {e:?}"
            ))
        })
    }

    /// What a sizing read of BAR register `register` returns.
    fn size_mask(&self, register: usize) -> u32 {
        if let Some(bar) = self.bars[register] {
            let mask = !(bar.size - 1);
            let flags = self.read(BAR0 + 4 * register as u8).unwrap_or(0) & 0xF;
            return (mask as u32 & !0xF) | flags;
        }
        match register.checked_sub(1).and_then(|low| self.bars[low]) {
            Some(bar) if bar.is_64bit => (!(bar.size - 1) >> 32) as u32,
            _ => 0,
        }
    }
}

impl ConfigurationAccess for InitConfig {
    fn read_word(&self, function: DeviceFunction, offset: u8) -> u32 {
        if function != self.function {
            // Nothing else on the bus is this driver's.
            return u32::MAX;
        }
        let register = offset.wrapping_sub(BAR0) / 4;
        if (BAR0..BAR0 + 4 * BARS as u8).contains(&offset) && self.sizing & (1 << register) != 0 {
            return self.size_mask(usize::from(register));
        }
        self.read(offset).unwrap_or(u32::MAX)
    }

    fn write_word(&mut self, _function: DeviceFunction, offset: u8, data: u32) {
        if (BAR0..BAR0 + 4 * BARS as u8).contains(&offset) {
            let bit = 1 << ((offset - BAR0) / 4);
            if data == u32::MAX {
                self.sizing |= bit;
            } else {
                self.sizing &= !bit;
            }
        }
        // Every write is dropped: the configuration space is init's.
    }

    #[allow(unsafe_code)]
    unsafe fn unsafe_clone(&self) -> Self {
        InitConfig {
            init: self.init,
            function: self.function,
            sizing: self.sizing,
            bars: self.bars,
        }
    }
}

/// A virtio-pci function given by init: its transport, and the BARs init
/// mapped for it.
pub struct Function {
    /// The crate's transport over the mapped BARs.
    pub transport: PciTransport,
    /// The memory BARs, by index.
    pub bars: [Option<MappedBar>; BARS],
}

/// Opens the virtio function at `bus:device.function`, whose IoDevice the
/// domain already holds: asks init for each memory BAR its configuration
/// space lists, then builds the crate's transport through [`InitConfig`].
pub fn open(
    init: Cap<Endpoint>,
    (bus, device, function): (u8, u8, u8),
) -> Result<Function, Failure> {
    let function = DeviceFunction {
        bus,
        device,
        function,
    };
    let mut config = InitConfig {
        init,
        function,
        sizing: 0,
        bars: [None; BARS],
    };
    // The memory BARs, asked for in address order: init carves their
    // Frames from its device Untypeds upward only.
    let mut found: [Option<(u64, usize, bool)>; BARS] = [None; BARS];
    let mut index = 0;
    while index < BARS {
        let low = config.read(BAR0 + 4 * index as u8)?;
        let is_memory = low & 1 == 0;
        let is_64bit = is_memory && (low >> 1) & 3 == 2;
        let high = if is_64bit {
            config.read(BAR0 + 4 * (index as u8 + 1))?
        } else {
            0
        };
        let physical = (u64::from(high) << 32) | u64::from(low & !0xF);
        if is_memory && physical != 0 {
            found[index] = Some((physical, index, is_64bit));
        }
        index += if is_64bit { 2 } else { 1 };
    }
    found.sort_unstable_by_key(|bar| bar.map_or(u64::MAX, |(physical, ..)| physical));
    for &(physical, index, is_64bit) in found.iter().flatten() {
        let (address, size) =
            resources::request_bar(init, config.pci(), index as u8).map_err(|e| {
                failure(format_args!(
                    "asking init for BAR {index} at {physical:#x}: {e:?}"
                ))
            })?;
        config.bars[index] = Some(MappedBar {
            physical,
            size,
            address,
            is_64bit,
        });
    }
    *BARS_MAPPED.lock() = config.bars;
    let bars = config.bars;
    let mut root = PciRoot::new(config);
    let transport = PciTransport::new::<StageOneHal, _>(&mut root, function)
        .map_err(|e| failure(format_args!("virtio-pci transport: {e}")))?;
    Ok(Function { transport, bars })
}
