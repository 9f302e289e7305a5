//! Capabilities by name: a protection domain learns which slot holds what
//! from a small table that init writes into the domain's memory.
//!
//! # Layout (init writes it, `rt` hands it to the program)
//!
//! One [`CapTable`], `#[repr(C)]`, little-endian, in a page of the domain's
//! VSpace mapped read-only; its address is the first argument register
//! (`rdi` / `x0`) of the domain's first thread at entry (init sets it with
//! `Tcb.WriteRegisters`); 0 means the domain has no table.
//!
//! | offset | field | meaning |
//! |---|---|---|
//! | 0 | `magic: u64` | [`CAP_TABLE_MAGIC`], "PCLSCAPS" |
//! | 8 | `version: u32` | [`CAP_TABLE_VERSION`] (3) |
//! | 12 | `count: u32` | entries in use, at most [`MAX_ENTRIES`] |
//! | 16 | `entries: [CapEntry; 64]` | the first `count` are valid |
//! | 2576 | `heap_size: u64` | bytes of zeroed memory mapped read-write at [`HEAP_ADDRESS`] (the image's `heap_size`; `rt` adds them to its allocator) |
//! | 2584 | `start: u64` | how many times init started the domain before this run (0, then 1 after its first restart, ...) |
//! | 2592 | `inject: u64` | the failure its image asks it to inject ([`INJECT_CRASH_MID_IO`], [`INJECT_ROGUE_DMA`] in run 0 only, [`INJECT_CRASH_EVERY_RUN`] in every run; 0: none) |
//!
//! Each [`CapEntry`] is 40 bytes:
//!
//! | offset | field | meaning |
//! |---|---|---|
//! | 0 | `name: [u8; 32]` | UTF-8, padded with zero bytes (no zero byte inside the name) |
//! | 32 | `slot: u32` | the slot in the domain's CSpace |
//! | 36 | `kind: u32` | the object kind, numbered as `caps::ObjectKind` |
//!
//! 2600 bytes in all ([`CAP_TABLE_SIZE`]). Version 1 had no `heap_size`,
//! version 2 no `start` and `inject`. Entries are not sorted and names
//! should be unique (lookup takes the first match).
//!
//! # The names init gives
//!
//! | name | kind | what |
//! |---|---|---|
//! | `channel<ID>` | Endpoint or Notification | the domain's end `ID` of a `[[channel]]`: for an endpoint, the caller (first end) may call, the receiver receives (and sees the badge of its end); for a notification, the first end may signal, the second waits (and sees its end's badge) |
//! | `irq<ID>` | IrqHandler | the `[[irq]]` with id `ID` (for `Ack`) |
//! | `irqs` | Notification | where every IRQ of the domain arrives, bit `1 << ID` |
//! | `device<N>` | IoDevice | the domain's `N`th `[[dma_grant]]` (in image order) |
//! | `iospace<N>` | IoSpace | its IoSpace, the grant's `io_map` regions mapped |
//! | `faults<N>`, `faults<N>.signal` | IoFaultQueue, Notification | the grant's fault queue (bound to the device) and what it signals |
//! | `init` | Endpoint | requests to init (`crate::resources`), for domains with `on_request` grants |
//! | `untyped` | Untyped | the domain's `untyped` bytes of memory to retype into objects of its own |
//! | `cnode`, `vspace` | CNode, PageTable | with `untyped`: its own CSpace root and VSpace root, to place, delete and map what it builds |
//! | `console` ([`CONSOLE`]) | Console | with `console = "write"` in its image entry: the write right (print); `"halt"`: write and grant (print and end the session). Without it the domain prints nothing |
//!
//! The registers (BAR 0) of the `N`th granted device are mapped at
//! [`DEVICE_REGISTERS_ADDRESS`]` + N * `[`DEVICE_REGISTERS_STRIDE`] (plus
//! the BAR's offset in its page), read-write, uncached; a BAR asked for
//! whole at [`DEVICE_BARS_ADDRESS`] (see there).
//! Slots [`DOMAIN_OWN_SLOTS`] of the domain's CNode stay empty for the
//! domain's own use.
//!
//! # Where init puts things in a domain's address space
//!
//! Besides the program (linked at `0x40_0000`) and the image's maps:
//! [`CAP_TABLE_ADDRESS`], [`HEAP_ADDRESS`] (the domain's `heap_size`),
//! the stack below [`STACK_TOP`] (a guard page above it), and the IPC
//! buffer at `ipc::IPC_BUFFER_ADDRESS`; all inside
//! [`DOMAIN_RESERVED_START`].. the top of user space, where images may not
//! map.

use crate::cap::{Cap, CapType, Slot};
use caps::ObjectKind;

/// The name of a domain's Console capability in its table.
pub const CONSOLE: &str = "console";

/// "PCLSCAPS" little-endian: the first word of a [`CapTable`].
pub const CAP_TABLE_MAGIC: u64 = u64::from_le_bytes(*b"PCLSCAPS");
/// The layout version this crate reads and writes.
pub const CAP_TABLE_VERSION: u32 = 3;

/// `inject` of a capability table: fault while a device request is in
/// flight (the image's `inject = "crash-mid-io"`).
pub const INJECT_CRASH_MID_IO: u64 = 1;
/// `inject` of a capability table: point stage 1 at memory the IoSpace
/// was not given and let the device write there (`inject = "rogue-dma"`).
pub const INJECT_ROGUE_DMA: u64 = 2;
/// `inject` of a capability table: as [`INJECT_CRASH_MID_IO`], in every
/// run (`inject = "crash-every-run"`).
pub const INJECT_CRASH_EVERY_RUN: u64 = 3;
/// How many entries a table holds.
pub const MAX_ENTRIES: usize = 64;
/// The longest name, in bytes.
pub const MAX_NAME_LENGTH: usize = 32;

/// Bytes of an encoded [`CapTable`] ([`CapTable::to_bytes`]).
pub const CAP_TABLE_SIZE: usize = 16 + MAX_ENTRIES * 40 + 24;
/// Start of the part of every domain's address space init lays out itself.
pub const DOMAIN_RESERVED_START: u64 = 0x7F_8000_0000;
/// Where init maps a domain's [`CapTable`] (read-only).
pub const CAP_TABLE_ADDRESS: u64 = 0x7F_8000_0000;
/// Where init maps a domain's heap (`heap_size` bytes, read-write).
pub const HEAP_ADDRESS: u64 = 0x7F_9000_0000;
/// Where init maps the registers (BAR 0) of a domain's `N`th granted
/// device: `DEVICE_REGISTERS_ADDRESS + N * DEVICE_REGISTERS_STRIDE`.
pub const DEVICE_REGISTERS_ADDRESS: u64 = 0x7F_A000_0000;
/// The distance between two devices' register windows.
pub const DEVICE_REGISTERS_STRIDE: u64 = 0x10_0000;
/// Where init maps BAR `B` of a domain's `N`th granted device when asked
/// (`crate::resources::BAR`): `DEVICE_BARS_ADDRESS + N *
/// DEVICE_BARS_STRIDE + B * DEVICE_BAR_SIZE` (plus the BAR's offset in
/// its page).
pub const DEVICE_BARS_ADDRESS: u64 = 0x7F_B000_0000;
/// The distance between two devices' BAR windows.
pub const DEVICE_BARS_STRIDE: u64 = 0x100_0000;
/// The largest BAR init maps, and the distance between two BARs' windows.
pub const DEVICE_BAR_SIZE: u64 = 0x20_0000;
/// Slots of a domain's CNode that init never fills: the domain's own
/// (for the capabilities it creates, such as an IoUserTable).
pub const DOMAIN_OWN_SLOTS: core::ops::Range<u32> = 96..128;
/// The top of a domain's stack (it grows down); the page above is left
/// unmapped as a guard below the IPC buffer.
pub const STACK_TOP: u64 = 0x7F_FFFF_E000;

/// One named capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct CapEntry {
    /// The name, UTF-8, zero-padded.
    pub name: [u8; MAX_NAME_LENGTH],
    /// The slot in the domain's CSpace.
    pub slot: u32,
    /// The object kind (`caps::ObjectKind` number).
    pub kind: u32,
}

impl CapEntry {
    /// An unused entry (all zero).
    pub const EMPTY: CapEntry = CapEntry {
        name: [0; MAX_NAME_LENGTH],
        slot: 0,
        kind: 0,
    };

    /// The name's bytes, without the padding.
    pub fn name_bytes(&self) -> &[u8] {
        let length = self
            .name
            .iter()
            .position(|&byte| byte == 0)
            .unwrap_or(MAX_NAME_LENGTH);
        &self.name[..length]
    }
}

/// Why [`CapTable::push`] refused an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// The table already holds [`MAX_ENTRIES`] entries.
    Full,
    /// The name is empty, longer than [`MAX_NAME_LENGTH`] bytes, or contains
    /// a zero byte.
    BadName,
    /// The name is already in the table.
    Duplicate,
}

/// The table of a domain's named capabilities. See the
/// [module documentation](self) for its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct CapTable {
    /// [`CAP_TABLE_MAGIC`].
    pub magic: u64,
    /// [`CAP_TABLE_VERSION`].
    pub version: u32,
    /// Entries in use.
    pub count: u32,
    /// The entries; the first `count` are valid.
    pub entries: [CapEntry; MAX_ENTRIES],
    /// Bytes of the domain's heap at [`HEAP_ADDRESS`] (0: none).
    pub heap_size: u64,
    /// How many times init started the domain before this run.
    pub start: u64,
    /// The failure to inject ([`INJECT_CRASH_MID_IO`], [`INJECT_ROGUE_DMA`];
    /// 0: none).
    pub inject: u64,
}

impl CapTable {
    /// An empty table with the right magic and version (what init starts from).
    pub const fn new() -> CapTable {
        CapTable {
            magic: CAP_TABLE_MAGIC,
            version: CAP_TABLE_VERSION,
            count: 0,
            entries: [CapEntry::EMPTY; MAX_ENTRIES],
            heap_size: 0,
            start: 0,
            inject: 0,
        }
    }

    /// Whether the header is one this crate reads: right magic and version,
    /// `count` within bounds.
    pub fn is_valid(&self) -> bool {
        self.magic == CAP_TABLE_MAGIC
            && self.version == CAP_TABLE_VERSION
            && self.count as usize <= MAX_ENTRIES
    }

    /// The valid entries (none if the header is not valid).
    pub fn entries(&self) -> &[CapEntry] {
        if self.is_valid() {
            &self.entries[..self.count as usize]
        } else {
            &[]
        }
    }

    /// Adds `name` for `slot` holding an object of `kind` (how init fills a
    /// table).
    pub fn push(&mut self, name: &str, slot: Slot, kind: ObjectKind) -> Result<(), TableError> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_NAME_LENGTH || bytes.contains(&0) {
            return Err(TableError::BadName);
        }
        if self.find(name).is_some() {
            return Err(TableError::Duplicate);
        }
        let index = self.count as usize;
        if index >= MAX_ENTRIES {
            return Err(TableError::Full);
        }
        let mut entry = CapEntry {
            name: [0; MAX_NAME_LENGTH],
            slot: slot.index(),
            kind: u32::from(kind as u8),
        };
        entry.name[..bytes.len()].copy_from_slice(bytes);
        self.entries[index] = entry;
        self.count += 1;
        Ok(())
    }

    /// The table's bytes in the layout above (what init writes into the
    /// domain's page).
    pub fn to_bytes(&self) -> [u8; CAP_TABLE_SIZE] {
        let mut bytes = [0u8; CAP_TABLE_SIZE];
        bytes[0..8].copy_from_slice(&self.magic.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.version.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.count.to_le_bytes());
        for (index, entry) in self.entries.iter().enumerate() {
            let at = 16 + index * 40;
            bytes[at..at + MAX_NAME_LENGTH].copy_from_slice(&entry.name);
            bytes[at + 32..at + 36].copy_from_slice(&entry.slot.to_le_bytes());
            bytes[at + 36..at + 40].copy_from_slice(&entry.kind.to_le_bytes());
        }
        let at = 16 + MAX_ENTRIES * 40;
        bytes[at..at + 8].copy_from_slice(&self.heap_size.to_le_bytes());
        bytes[at + 8..at + 16].copy_from_slice(&self.start.to_le_bytes());
        bytes[at + 16..at + 24].copy_from_slice(&self.inject.to_le_bytes());
        bytes
    }

    /// The entry named `name`, whatever its kind.
    pub fn find(&self, name: &str) -> Option<&CapEntry> {
        self.entries()
            .iter()
            .find(|entry| entry.name_bytes() == name.as_bytes())
    }

    /// The capability named `name`, if the table has one of kind `T`.
    /// An entry of another kind is `None`, like a missing one.
    pub fn lookup<T: CapType>(&self, name: &str) -> Option<Cap<T>> {
        let entry = self.find(name)?;
        (entry.kind == u32::from(T::KIND as u8)).then(|| Cap::from_slot(Slot::new(entry.slot)))
    }
}

impl Default for CapTable {
    fn default() -> CapTable {
        CapTable::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cap::{Endpoint, Frame, IoSpace};
    use core::mem::offset_of;

    #[test]
    fn layout_is_fixed() {
        assert_eq!(offset_of!(CapTable, magic), 0);
        assert_eq!(offset_of!(CapTable, version), 8);
        assert_eq!(offset_of!(CapTable, count), 12);
        assert_eq!(offset_of!(CapTable, entries), 16);
        assert_eq!(size_of::<CapEntry>(), 40);
        assert_eq!(offset_of!(CapEntry, slot), 32);
        assert_eq!(offset_of!(CapEntry, kind), 36);
        assert_eq!(offset_of!(CapTable, heap_size), 2576);
        assert_eq!(offset_of!(CapTable, start), 2584);
        assert_eq!(offset_of!(CapTable, inject), 2592);
        assert_eq!(size_of::<CapTable>(), CAP_TABLE_SIZE);
        assert_eq!(CAP_TABLE_SIZE, 2600);
        assert_eq!(&CAP_TABLE_MAGIC.to_le_bytes(), b"PCLSCAPS");
    }

    #[test]
    fn to_bytes_is_the_memory_layout() {
        let mut table = CapTable::new();
        table
            .push("channel0", Slot::new(7), ObjectKind::Endpoint)
            .unwrap();
        table
            .push("iospace0", Slot::new(9), ObjectKind::IoSpace)
            .unwrap();
        table.heap_size = 0x10_0000;
        table.start = 2;
        table.inject = INJECT_ROGUE_DMA;
        let bytes = table.to_bytes();
        assert_eq!(size_of::<CapTable>(), CAP_TABLE_SIZE);
        // SAFETY: CapTable is repr(C) plain data without padding (layout
        // test above), so its bytes are initialised.
        #[allow(unsafe_code)]
        let memory: [u8; CAP_TABLE_SIZE] = unsafe { core::mem::transmute(table) };
        assert_eq!(bytes, memory);
    }

    #[test]
    fn lookup_checks_the_kind() {
        let mut table = CapTable::new();
        table
            .push("edu.dma", Slot::new(20), ObjectKind::IoSpace)
            .unwrap();
        table
            .push("serial", Slot::new(21), ObjectKind::Endpoint)
            .unwrap();
        assert_eq!(
            table.lookup::<IoSpace>("edu.dma"),
            Some(Cap::from_slot(Slot::new(20)))
        );
        assert_eq!(
            table.lookup::<Endpoint>("serial"),
            Some(Cap::from_slot(Slot::new(21)))
        );
        assert_eq!(table.lookup::<Frame>("edu.dma"), None);
        assert_eq!(table.lookup::<IoSpace>("edu"), None);
        assert_eq!(table.lookup::<IoSpace>("edu.dma.x"), None);
    }

    #[test]
    fn names_fill_the_field_exactly() {
        let mut table = CapTable::new();
        let longest = "a".repeat(MAX_NAME_LENGTH);
        table
            .push(&longest, Slot::new(3), ObjectKind::Frame)
            .unwrap();
        assert_eq!(
            table.lookup::<Frame>(&longest),
            Some(Cap::from_slot(Slot::new(3)))
        );
        let too_long = "a".repeat(MAX_NAME_LENGTH + 1);
        assert_eq!(
            table.push(&too_long, Slot::new(4), ObjectKind::Frame),
            Err(TableError::BadName)
        );
        assert_eq!(
            table.push("", Slot::new(4), ObjectKind::Frame),
            Err(TableError::BadName)
        );
        assert_eq!(
            table.push("a\0b", Slot::new(4), ObjectKind::Frame),
            Err(TableError::BadName)
        );
        assert_eq!(
            table.push(&longest, Slot::new(4), ObjectKind::Frame),
            Err(TableError::Duplicate)
        );
    }

    #[test]
    fn a_full_or_invalid_table_is_refused() {
        let mut table = CapTable::new();
        for i in 0..MAX_ENTRIES {
            table
                .push(
                    &std::format!("frame{i}"),
                    Slot::new(i as u32),
                    ObjectKind::Frame,
                )
                .unwrap();
        }
        assert_eq!(
            table.push("one.more", Slot::new(99), ObjectKind::Frame),
            Err(TableError::Full)
        );
        assert_eq!(
            table.lookup::<Frame>("frame63"),
            Some(Cap::from_slot(Slot::new(63)))
        );

        let mut corrupt = table;
        corrupt.count = MAX_ENTRIES as u32 + 1;
        assert_eq!(corrupt.lookup::<Frame>("frame0"), None);
        let mut wrong_magic = table;
        wrong_magic.magic = 0;
        assert!(wrong_magic.entries().is_empty());
    }
}
