//! The boot-image archive: the kernel, the user programs and the encoded
//! [`SystemDescription`](crate::SystemDescription) in one file.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! offset 0   header, HEADER_SIZE = 32 bytes
//!              magic       [u8; 8]  "PCLSIMG\0"
//!              version     u32      VERSION (1)
//!              entry_count u32
//!              arch        u32      1 = x86_64, 2 = aarch64
//!              reserved    u32      0
//!              image_size  u64      bytes of the whole archive
//! offset 32  entry table, entry_count × ENTRY_SIZE = 64 bytes
//!              name        [u8; 40] UTF-8, zero-padded, not empty
//!              kind        u32      1 = description, 2 = kernel, 3 = program,
//!                                   4 = root task (init)
//!              reserved    u32      0
//!              offset      u64      from the start of the archive, a multiple of ALIGN
//!              size        u64      bytes of payload
//! then       payloads, each starting on a 4 KiB (ALIGN) boundary, zero
//!            padding between them, in the order of the table
//! ```
//!
//! The table is sorted by (kind, name) and holds exactly one description
//! entry (named [`DESCRIPTION_NAME`]) and at most one root-task entry
//! (named [`ROOT_TASK_NAME`]: the program the kernel starts first, init,
//! which builds the system from the description); names are unique. Page-aligned
//! payloads let init map a program's pages straight from the archive.
//! Nothing in the layout depends on time or on the host, so the same inputs
//! give the same bytes.
//!
//! [`encode_header`] and [`encode_entry`] are the only writers of these
//! layouts (the host packer uses them); [`Archive::parse`] is the reader
//! (init, and the host's tests), and checks every bound before handing out
//! a payload.

use core::fmt;

use crate::{CodecError, SystemDescription};

/// The first eight bytes of every archive.
pub const MAGIC: [u8; 8] = *b"PCLSIMG\0";
/// The archive layout version this crate reads and writes.
pub const VERSION: u32 = 1;
/// Bytes of the header.
pub const HEADER_SIZE: usize = 32;
/// Bytes of one entry-table row.
pub const ENTRY_SIZE: usize = 64;
/// Bytes of an entry name field.
pub const ENTRY_NAME_LEN: usize = 40;
/// Every payload starts at a multiple of this.
pub const ALIGN: u64 = 4096;
/// Name of the description entry.
pub const DESCRIPTION_NAME: &str = "system";
/// Name of the root-task entry (init).
pub const ROOT_TASK_NAME: &str = "init";
/// Most entries an archive may hold (description, kernel, root task and one
/// program per domain at most).
pub const MAX_ENTRIES: usize = crate::MAX_DOMAINS + 3;

/// What an entry's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    /// The postcard-encoded [`SystemDescription`].
    Description = 1,
    /// The kernel ELF (byte for byte the file QEMU boots with `-kernel`).
    Kernel = 2,
    /// A user program ELF; domains name it by the entry name.
    Program = 3,
    /// The root task's ELF ([`ROOT_TASK_NAME`]): the kernel loads it as the
    /// first user program and maps the whole archive into it.
    RootTask = 4,
}

impl EntryKind {
    /// The kind numbered `number` in an entry.
    pub const fn from_number(number: u32) -> Option<EntryKind> {
        match number {
            1 => Some(EntryKind::Description),
            2 => Some(EntryKind::Kernel),
            3 => Some(EntryKind::Program),
            4 => Some(EntryKind::RootTask),
            _ => None,
        }
    }
}

/// The architecture an archive is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86_64.
    X86_64 = 1,
    /// AArch64.
    Aarch64 = 2,
}

impl Arch {
    /// The architecture numbered `number` in the header.
    pub const fn from_number(number: u32) -> Option<Arch> {
        match number {
            1 => Some(Arch::X86_64),
            2 => Some(Arch::Aarch64),
            _ => None,
        }
    }

    /// The architecture's name, as `Debug` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "X86_64",
            Arch::Aarch64 => "Aarch64",
        }
    }
}

/// Why bytes are not a valid archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveError {
    /// Shorter than its header or its stated size.
    Truncated,
    /// The magic is not [`MAGIC`].
    BadMagic,
    /// Another layout version.
    WrongVersion(u32),
    /// An unknown architecture number.
    UnknownArch(u32),
    /// More than [`MAX_ENTRIES`] entries.
    TooManyEntries(u32),
    /// Entry `index` is malformed: bad name, unknown kind, non-zero
    /// reserved field, unaligned or out of bounds, or out of order.
    BadEntry(usize),
    /// No description entry, or more than one.
    Description,
    /// The description entry does not decode.
    Codec(CodecError),
}

impl ktext::Text for ArchiveError {
    fn write(&self, out: &mut dyn ktext::Sink) {
        use ktext::put;
        match self {
            ArchiveError::Truncated => out.str("the archive is truncated"),
            ArchiveError::BadMagic => out.str("not a Portcullis boot image (bad magic)"),
            ArchiveError::WrongVersion(found) => {
                put!(out, "archive version {}, expected {}", found, VERSION)
            }
            ArchiveError::UnknownArch(found) => put!(out, "unknown architecture number {}", found),
            ArchiveError::TooManyEntries(found) => {
                put!(out, "{} entries, at most {}", found, MAX_ENTRIES)
            }
            ArchiveError::BadEntry(index) => put!(out, "entry {} is malformed", index),
            ArchiveError::Description => out.str("not exactly one description entry"),
            ArchiveError::Codec(error) => put!(out, "description entry: {}", error),
        }
    }
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ktext::display(self, f)
    }
}

/// One row of the entry table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The entry's name.
    pub name: &'a str,
    /// What the payload is.
    pub kind: EntryKind,
    /// Offset of the payload from the start of the archive.
    pub offset: u64,
    /// Bytes of payload.
    pub size: u64,
}

/// Writes the header for `entry_count` entries and `image_size` bytes.
pub fn encode_header(arch: Arch, entry_count: u32, image_size: u64) -> [u8; HEADER_SIZE] {
    let mut header = [0u8; HEADER_SIZE];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&entry_count.to_le_bytes());
    header[16..20].copy_from_slice(&(arch as u32).to_le_bytes());
    header[24..32].copy_from_slice(&image_size.to_le_bytes());
    header
}

/// Writes one entry-table row; `None` if the name is empty or longer than
/// [`ENTRY_NAME_LEN`] bytes or contains a zero byte.
pub fn encode_entry(entry: &Entry<'_>) -> Option<[u8; ENTRY_SIZE]> {
    let name = entry.name.as_bytes();
    if name.is_empty() || name.len() > ENTRY_NAME_LEN || name.contains(&0) {
        return None;
    }
    let mut row = [0u8; ENTRY_SIZE];
    row[..name.len()].copy_from_slice(name);
    row[40..44].copy_from_slice(&(entry.kind as u32).to_le_bytes());
    row[48..56].copy_from_slice(&entry.offset.to_le_bytes());
    row[56..64].copy_from_slice(&entry.size.to_le_bytes());
    Some(row)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// A checked archive over its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Archive<'a> {
    bytes: &'a [u8],
    arch: Arch,
    count: usize,
}

impl<'a> Archive<'a> {
    /// Checks the header and every entry of `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Archive<'a>, ArchiveError> {
        if bytes.len() < HEADER_SIZE {
            return Err(ArchiveError::Truncated);
        }
        if bytes[0..8] != MAGIC {
            return Err(ArchiveError::BadMagic);
        }
        let version = u32_at(bytes, 8);
        if version != VERSION {
            return Err(ArchiveError::WrongVersion(version));
        }
        let count = u32_at(bytes, 12);
        let arch_number = u32_at(bytes, 16);
        let arch = Arch::from_number(arch_number).ok_or(ArchiveError::UnknownArch(arch_number))?;
        if u32_at(bytes, 20) != 0 {
            return Err(ArchiveError::BadMagic);
        }
        if count as usize > MAX_ENTRIES {
            return Err(ArchiveError::TooManyEntries(count));
        }
        let image_size = u64_at(bytes, 24);
        if (bytes.len() as u64) < image_size {
            return Err(ArchiveError::Truncated);
        }
        let bytes = &bytes[..image_size as usize];
        let table_end = HEADER_SIZE + count as usize * ENTRY_SIZE;
        if bytes.len() < table_end {
            return Err(ArchiveError::Truncated);
        }
        let archive = Archive {
            bytes,
            arch,
            count: count as usize,
        };
        let mut descriptions = 0;
        let mut previous: Option<Entry<'a>> = None;
        let mut payload_floor = table_end as u64;
        for index in 0..archive.count {
            let entry = archive.row(index).ok_or(ArchiveError::BadEntry(index))?;
            let end = entry.offset.checked_add(entry.size);
            let in_bounds = entry.offset.is_multiple_of(ALIGN)
                && entry.offset >= payload_floor
                && end.is_some_and(|end| end <= image_size);
            let ordered = previous
                .is_none_or(|previous| (previous.kind, previous.name) < (entry.kind, entry.name));
            let named = entry.kind != EntryKind::RootTask || entry.name == ROOT_TASK_NAME;
            if !in_bounds || !ordered || !named {
                return Err(ArchiveError::BadEntry(index));
            }
            if entry.kind == EntryKind::Description {
                descriptions += 1;
            }
            payload_floor = end.unwrap_or(u64::MAX);
            previous = Some(entry);
        }
        if descriptions != 1 {
            return Err(ArchiveError::Description);
        }
        Ok(archive)
    }

    /// Decodes row `index` of the table (bounds of the payload unchecked).
    fn row(&self, index: usize) -> Option<Entry<'a>> {
        let at = HEADER_SIZE + index * ENTRY_SIZE;
        let row = self.bytes.get(at..at + ENTRY_SIZE)?;
        let name_len = row[..ENTRY_NAME_LEN]
            .iter()
            .position(|&byte| byte == 0)
            .unwrap_or(ENTRY_NAME_LEN);
        if name_len == 0 || row[name_len..ENTRY_NAME_LEN].iter().any(|&byte| byte != 0) {
            return None;
        }
        let name = core::str::from_utf8(&row[..name_len]).ok()?;
        let kind = EntryKind::from_number(u32_at(row, 40))?;
        if u32_at(row, 44) != 0 {
            return None;
        }
        Some(Entry {
            name,
            kind,
            offset: u64_at(row, 48),
            size: u64_at(row, 56),
        })
    }

    /// The architecture the archive was built for.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The entries, in table order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + '_ {
        // `parse` checked every row.
        (0..self.count).filter_map(|index| self.row(index))
    }

    /// The entry of `kind` called `name`.
    pub fn find(&self, kind: EntryKind, name: &str) -> Option<Entry<'a>> {
        self.entries()
            .find(|entry| entry.kind == kind && entry.name == name)
    }

    /// The payload of `entry` (an entry of this archive).
    pub fn payload(&self, entry: &Entry<'_>) -> &'a [u8] {
        let start = entry.offset as usize;
        self.bytes
            .get(start..start + entry.size as usize)
            .unwrap_or(&[])
    }

    /// The root task's ELF (the [`EntryKind::RootTask`] entry), if the
    /// archive has one.
    pub fn root_task(&self) -> Option<&'a [u8]> {
        let entry = self.find(EntryKind::RootTask, ROOT_TASK_NAME)?;
        Some(self.payload(&entry))
    }

    /// Decodes the description entry.
    pub fn description(&self) -> Result<SystemDescription, ArchiveError> {
        let entry = self
            .find(EntryKind::Description, DESCRIPTION_NAME)
            .ok_or(ArchiveError::Description)?;
        SystemDescription::decode(self.payload(&entry)).map_err(ArchiveError::Codec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3-entry archive built by hand with the encoders.
    fn build(buffer: &mut [u8; 4 * 4096]) -> usize {
        let mut description = [0u8; 256];
        let used = SystemDescription::default()
            .encode(&mut description)
            .unwrap()
            .len();
        let entries = [
            Entry {
                name: DESCRIPTION_NAME,
                kind: EntryKind::Description,
                offset: 4096,
                size: used as u64,
            },
            Entry {
                name: "kernel",
                kind: EntryKind::Kernel,
                offset: 8192,
                size: 5,
            },
            Entry {
                name: "hello",
                kind: EntryKind::Program,
                offset: 12288,
                size: 3,
            },
        ];
        let size = 12288 + 3;
        buffer[..HEADER_SIZE].copy_from_slice(&encode_header(Arch::Aarch64, 3, size as u64));
        for (index, entry) in entries.iter().enumerate() {
            let at = HEADER_SIZE + index * ENTRY_SIZE;
            buffer[at..at + ENTRY_SIZE].copy_from_slice(&encode_entry(entry).unwrap());
        }
        buffer[4096..4096 + used].copy_from_slice(&description[..used]);
        buffer[8192..8197].copy_from_slice(b"\x7fELF!");
        buffer[12288..12291].copy_from_slice(b"abc");
        size
    }

    #[test]
    fn a_built_archive_parses() {
        let mut buffer = [0u8; 4 * 4096];
        let size = build(&mut buffer);
        let archive = Archive::parse(&buffer[..size]).unwrap();
        assert_eq!(archive.arch(), Arch::Aarch64);
        assert_eq!(archive.entries().count(), 3);
        let hello = archive.find(EntryKind::Program, "hello").unwrap();
        assert_eq!(archive.payload(&hello), b"abc");
        let kernel = archive.find(EntryKind::Kernel, "kernel").unwrap();
        assert_eq!(archive.payload(&kernel), b"\x7fELF!");
        assert_eq!(archive.description().unwrap(), SystemDescription::default());
        assert_eq!(archive.root_task(), None);
    }

    #[test]
    fn the_root_task_entry_is_found_and_must_be_called_init() {
        let mut buffer = [0u8; 5 * 4096];
        let mut description = [0u8; 256];
        let used = SystemDescription::default()
            .encode(&mut description)
            .unwrap()
            .len();
        let build = |buffer: &mut [u8; 5 * 4096], root_name: &str| {
            let entries = [
                Entry {
                    name: DESCRIPTION_NAME,
                    kind: EntryKind::Description,
                    offset: 4096,
                    size: used as u64,
                },
                Entry {
                    name: root_name,
                    kind: EntryKind::RootTask,
                    offset: 8192,
                    size: 4,
                },
            ];
            buffer[..HEADER_SIZE].copy_from_slice(&encode_header(Arch::X86_64, 2, 8196));
            for (index, entry) in entries.iter().enumerate() {
                let at = HEADER_SIZE + index * ENTRY_SIZE;
                buffer[at..at + ENTRY_SIZE].copy_from_slice(&encode_entry(entry).unwrap());
            }
            buffer[4096..4096 + used].copy_from_slice(&description[..used]);
            buffer[8192..8196].copy_from_slice(b"\x7fELF");
        };
        build(&mut buffer, ROOT_TASK_NAME);
        let archive = Archive::parse(&buffer[..8196]).unwrap();
        assert_eq!(archive.root_task(), Some(&b"\x7fELF"[..]));
        build(&mut buffer, "other");
        assert_eq!(
            Archive::parse(&buffer[..8196]).map(|_| ()),
            Err(ArchiveError::BadEntry(1))
        );
    }

    #[test]
    fn damaged_archives_are_refused() {
        let mut buffer = [0u8; 4 * 4096];
        let size = build(&mut buffer);
        let damaged = |at: usize, value: u8| {
            let mut copy = buffer;
            copy[at] = value;
            Archive::parse(&copy[..size]).map(|_| ())
        };
        assert_eq!(damaged(0, b'X'), Err(ArchiveError::BadMagic));
        assert_eq!(damaged(8, 2), Err(ArchiveError::WrongVersion(2)));
        assert_eq!(damaged(16, 9), Err(ArchiveError::UnknownArch(9)));
        assert_eq!(damaged(12, 99), Err(ArchiveError::TooManyEntries(99)));
        // Unknown kind in entry 1.
        assert_eq!(
            damaged(HEADER_SIZE + ENTRY_SIZE + 40, 9),
            Err(ArchiveError::BadEntry(1))
        );
        // Entry 2's offset no longer aligned.
        assert_eq!(
            damaged(HEADER_SIZE + 2 * ENTRY_SIZE + 48, 1),
            Err(ArchiveError::BadEntry(2))
        );
        // Entry 2's size past the end.
        assert_eq!(
            damaged(HEADER_SIZE + 2 * ENTRY_SIZE + 56, 200),
            Err(ArchiveError::BadEntry(2))
        );
        // Description entry turned into a second kernel: out of order.
        assert_eq!(damaged(HEADER_SIZE + 40, 2), Err(ArchiveError::BadEntry(1)));
        assert_eq!(
            Archive::parse(&buffer[..size - 1]).map(|_| ()),
            Err(ArchiveError::Truncated)
        );
    }

    #[test]
    fn entry_names_are_checked_when_written() {
        let entry = |name| Entry {
            name,
            kind: EntryKind::Program,
            offset: 0,
            size: 0,
        };
        assert!(encode_entry(&entry("")).is_none());
        assert!(encode_entry(&entry("a\0b")).is_none());
        assert!(encode_entry(&entry("0123456789012345678901234567890123456789x")).is_none());
        assert!(encode_entry(&entry("0123456789012345678901234567890123456789")).is_some());
    }
}
