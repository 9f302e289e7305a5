//! The boot module: a packed system image or a bare ELF, and the root
//! task's ELF checked and cut into the pages the kernel maps.
//!
//! The kernel allocates frames, copies and maps; this module decides what:
//! [`classify`] tells a packed image (`PCLSIMG`, `sysdesc::archive`) from
//! a bare ELF and finds the root task, [`Program::parse`] checks the ELF's
//! header and [`Program::segments`] yields each `PT_LOAD` segment, checked,
//! with [`Segment::pages`] saying which bytes of the file go to which page.
//! Segments are checked one at a time, as the kernel loads them, so a
//! malformed later segment is reported after the earlier ones are mapped,
//! as before this module existed.

use core::fmt;
use elf::ElfBytes;
use elf::abi::{PF_W, PF_X, PT_LOAD};
use elf::endian::LittleEndian;
use elf::segment::SegmentTable;
use sysdesc::archive::{Arch, Archive, ArchiveError, MAGIC};

/// Page size of the user address spaces the root task is loaded into.
pub const PAGE_SIZE: u64 = 4096;

/// What the boot module holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootModule<'a> {
    /// A bare ELF: the root task itself (how the system tests boot their
    /// programs).
    Program(&'a [u8]),
    /// A packed system image (`PCLSIMG`, `sysdesc::archive`): the root task
    /// is its `init` entry, and the whole archive is mapped into the root
    /// task read-only at `abi::bootinfo::IMAGE_ADDRESS` for it to read.
    Image {
        /// The root task's ELF, inside the archive.
        root_task: &'a [u8],
    },
}

/// Why a packed system image cannot start the root task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// The archive's header or entry table is malformed.
    Archive(ArchiveError),
    /// Packed for the other architecture.
    WrongArchitecture(Arch),
    /// The archive has no `init` entry (packed without `userland/init`).
    NoRootTask,
    /// Larger than the window it is mapped into.
    TooLarge(u64),
    /// The module does not start on a page boundary, so it cannot be mapped
    /// (the kernel's check: only it knows where the module lies).
    Unaligned(u64),
}

impl ktext::Text for ImageError {
    fn write(&self, out: &mut dyn ktext::Sink) {
        use ktext::put;
        match self {
            ImageError::Archive(e) => put!(out, "{}", e),
            ImageError::WrongArchitecture(arch) => {
                put!(out, "packed for {}, not this architecture", arch.name())
            }
            ImageError::NoRootTask => out.str(
                "it has no root-task entry `init` (pack it with `cargo xtask pack`, which adds userland/init)",
            ),
            ImageError::TooLarge(len) => put!(out, "{} bytes, more than the {} bytes mapped for it", len, abi::bootinfo::MAX_IMAGE_LENGTH),
            ImageError::Unaligned(at) => {
                put!(out, "it is loaded at {:#x}, not page aligned", *at)
            }
        }
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ktext::display(self, f)
    }
}

/// Tells a packed system image for `arch` from a bare ELF and finds the
/// root task. Anything without the archive's magic is a bare ELF.
pub fn classify(module: &[u8], arch: Arch) -> Result<BootModule<'_>, ImageError> {
    if !module.starts_with(&MAGIC) {
        return Ok(BootModule::Program(module));
    }
    let archive = Archive::parse(module).map_err(ImageError::Archive)?;
    if archive.arch() != arch {
        return Err(ImageError::WrongArchitecture(archive.arch()));
    }
    if module.len() as u64 > abi::bootinfo::MAX_IMAGE_LENGTH {
        return Err(ImageError::TooLarge(module.len() as u64));
    }
    let root_task = archive.root_task().ok_or(ImageError::NoRootTask)?;
    Ok(BootModule::Image { root_task })
}

/// Why the root task's ELF cannot be loaded; each names the offending part.
#[derive(Debug)]
pub enum ProgramError {
    /// Not a little-endian ELF64 file, or its headers are malformed.
    BadElf(elf::ParseError),
    /// Built for another architecture (the ELF machine number).
    WrongMachine(u16),
    /// A segment's file bytes lie outside the file, or it has more file
    /// bytes than memory bytes.
    SegmentOutsideFile {
        /// Segment index.
        index: usize,
    },
    /// A segment is not page aligned, or two segments share a page (the
    /// kernel finds the second when it maps).
    SegmentLayout {
        /// Segment index.
        index: usize,
        /// Its virtual address (or that of the page already mapped).
        vaddr: u64,
    },
    /// A segment's end lies past the top of the 64-bit address space.
    SegmentWraps {
        /// Segment index.
        index: usize,
        /// Its virtual address.
        vaddr: u64,
    },
}

impl ktext::Text for ProgramError {
    fn write(&self, out: &mut dyn ktext::Sink) {
        use ktext::put;
        match self {
            ProgramError::BadElf(e) => {
                put!(out, "not a valid ELF64 executable: ");
                parse_error(e, out);
            }
            ProgramError::WrongMachine(m) => {
                put!(out, "ELF machine {} is not this architecture", m)
            }
            ProgramError::SegmentOutsideFile { index } => {
                put!(out, "segment {} extends past the end of the file", index)
            }
            ProgramError::SegmentLayout { index, vaddr } => put!(
                out,
                "segment {} at {:#x} is not page aligned or shares a page with another",
                index,
                *vaddr
            ),
            ProgramError::SegmentWraps { index, vaddr } => put!(
                out,
                "segment {} at {:#x} runs past the end of the address space",
                index,
                *vaddr
            ),
        }
    }
}

/// What the `elf` crate found wrong, in our words and raw numbers: its own
/// `Display` is `core::fmt`'s, which the kernel leaves out.
fn parse_error(error: &elf::ParseError, out: &mut dyn ktext::Sink) {
    use elf::ParseError as E;
    use ktext::put;
    match error {
        E::BadMagic(magic) => put!(out, "bad magic {:#x}", u32::from_be_bytes(*magic)),
        E::UnsupportedElfClass(class) => put!(out, "unsupported class {}", class),
        E::UnsupportedElfEndianness(order) => put!(out, "unsupported byte order {}", order),
        E::UnsupportedVersion((found, expected)) => {
            put!(out, "version {}, expected {}", found, expected)
        }
        E::BadOffset(offset) => put!(out, "bad offset {:#x}", *offset),
        E::StringTableMissingNul(offset) => {
            put!(out, "a string from {:#x} has no NUL", *offset)
        }
        E::BadEntsize((found, expected)) => {
            put!(out, "entry size {:#x}, expected {:#x}", *found, *expected)
        }
        E::UnexpectedSectionType((found, expected)) => {
            put!(out, "section type {:#x}, expected {:#x}", *found, *expected)
        }
        E::UnexpectedSegmentType((found, expected)) => {
            put!(out, "segment type {:#x}, expected {:#x}", *found, *expected)
        }
        E::UnexpectedAlignment(align) => put!(out, "misaligned data (alignment {})", align),
        E::SliceReadError((start, end)) => {
            put!(
                out,
                "bytes {:#x}..{:#x} past the end",
                *start as u64,
                *end as u64
            )
        }
        E::IntegerOverflow => out.str("an offset overflows"),
        E::Utf8Error(_) => out.str("a name is not UTF-8"),
        E::TryFromSliceError(_) => out.str("a field has the wrong length"),
        E::TryFromIntError(_) => out.str("a field is out of range"),
        // `elf`'s `std` feature adds I/O errors; the kernel never reads files.
        #[allow(unreachable_patterns)]
        _ => out.str("an I/O error"),
    }
}

impl fmt::Display for ProgramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ktext::display(self, f)
    }
}

/// The ELF machine number of `arch`'s programs.
pub fn elf_machine(arch: Arch) -> u16 {
    match arch {
        Arch::X86_64 => elf::abi::EM_X86_64,
        Arch::Aarch64 => elf::abi::EM_AARCH64,
    }
}

/// A root-task ELF whose header has been checked.
#[derive(Debug)]
pub struct Program<'a> {
    image: &'a [u8],
    entry: u64,
    segments: Option<SegmentTable<'a, LittleEndian>>,
}

/// One `PT_LOAD` segment, checked: `file_bytes` lie in the file and are no
/// more than `memory_size`, `vaddr` is page aligned and its last byte,
/// `vaddr + memory_size - 1`, fits in 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Its index in the program header table.
    pub index: usize,
    /// Where it starts (page aligned).
    pub vaddr: u64,
    /// Its bytes in the file (the rest of its memory is zero).
    pub file_bytes: &'a [u8],
    /// Bytes of memory it takes.
    pub memory_size: u64,
    /// Mapped writable (`PF_W`).
    pub writable: bool,
    /// Mapped executable (`PF_X`).
    pub executable: bool,
}

/// One page of a segment: where it goes and the file bytes at its start
/// (at most a page; the rest of the page is zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page<'a> {
    /// Its virtual address.
    pub vaddr: u64,
    /// The file bytes it starts with.
    pub bytes: &'a [u8],
}

impl<'a> Program<'a> {
    /// Checks that `image` is a little-endian ELF64 file for `arch`.
    pub fn parse(image: &'a [u8], arch: Arch) -> Result<Program<'a>, ProgramError> {
        let file = ElfBytes::<LittleEndian>::minimal_parse(image).map_err(ProgramError::BadElf)?;
        if file.ehdr.e_machine != elf_machine(arch) {
            return Err(ProgramError::WrongMachine(file.ehdr.e_machine));
        }
        Ok(Program {
            image,
            entry: file.ehdr.e_entry,
            segments: file.segments(),
        })
    }

    /// The entry point.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// Each `PT_LOAD` segment in table order, checked when reached.
    pub fn segments(&self) -> impl Iterator<Item = Result<Segment<'a>, ProgramError>> + use<'a> {
        let image = self.image;
        self.segments
            .into_iter()
            .flat_map(|table| table.iter())
            .enumerate()
            .filter(|(_, header)| header.p_type == PT_LOAD)
            .map(move |(index, header)| {
                let file_end = header.p_offset.checked_add(header.p_filesz);
                if file_end.is_none_or(|end| end > image.len() as u64)
                    || header.p_filesz > header.p_memsz
                {
                    return Err(ProgramError::SegmentOutsideFile { index });
                }
                let vaddr = header.p_vaddr;
                if !vaddr.is_multiple_of(PAGE_SIZE) {
                    return Err(ProgramError::SegmentLayout { index, vaddr });
                }
                // Its last byte, vaddr + memsz - 1, must fit.
                if header.p_memsz > 0 && vaddr.checked_add(header.p_memsz - 1).is_none() {
                    return Err(ProgramError::SegmentWraps { index, vaddr });
                }
                // In range: the offset and its end are at most the image's
                // length, a usize.
                let file_bytes =
                    &image[header.p_offset as usize..(header.p_offset + header.p_filesz) as usize];
                Ok(Segment {
                    index,
                    vaddr,
                    file_bytes,
                    memory_size: header.p_memsz,
                    writable: header.p_flags & PF_W != 0,
                    executable: header.p_flags & PF_X != 0,
                })
            })
    }
}

impl<'a> Segment<'a> {
    /// Pages it takes: its memory size rounded up to whole pages.
    pub fn page_count(&self) -> u64 {
        self.memory_size.div_ceil(PAGE_SIZE)
    }

    /// Its pages in ascending order, each with the file bytes it starts
    /// with (empty past the file bytes).
    pub fn pages(&self) -> impl Iterator<Item = Page<'a>> + use<'a> {
        let Segment {
            vaddr, file_bytes, ..
        } = *self;
        (0..self.page_count()).map(move |page| {
            // No overflow: offset <= memory_size - 1 and vaddr +
            // memory_size - 1 fits in 64 bits (checked).
            let offset = page * PAGE_SIZE;
            let start = usize::try_from(offset)
                .map_or(file_bytes.len(), |start| start.min(file_bytes.len()));
            let end = file_bytes
                .len()
                .min(start.saturating_add(PAGE_SIZE as usize));
            Page {
                vaddr: vaddr + offset,
                bytes: &file_bytes[start..end],
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::vec::Vec;

    /// An ELF64 header and `segments` program headers (type, flags,
    /// offset, vaddr, filesz, memsz), then `payload` bytes.
    fn elf(machine: u16, segments: &[(u32, u32, u64, u64, u64, u64)], payload: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        bytes.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        bytes.extend_from_slice(&machine.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&0x40_1000u64.to_le_bytes()); // entry
        bytes.extend_from_slice(&64u64.to_le_bytes()); // phoff
        bytes.extend_from_slice(&0u64.to_le_bytes()); // shoff
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&64u16.to_le_bytes());
        bytes.extend_from_slice(&56u16.to_le_bytes());
        bytes.extend_from_slice(&(segments.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&64u16.to_le_bytes());
        bytes.extend_from_slice(&0u16.to_le_bytes());
        bytes.extend_from_slice(&0u16.to_le_bytes());
        for &(kind, flags, offset, vaddr, filesz, memsz) in segments {
            bytes.extend_from_slice(&kind.to_le_bytes());
            bytes.extend_from_slice(&flags.to_le_bytes());
            for word in [offset, vaddr, vaddr, filesz, memsz, 4096] {
                bytes.extend_from_slice(&word.to_le_bytes());
            }
        }
        bytes.extend((0..payload).map(|i| i as u8));
        bytes
    }

    fn plan(image: &[u8]) -> Result<Vec<Segment<'_>>, ProgramError> {
        Program::parse(image, Arch::X86_64)?.segments().collect()
    }

    #[test]
    fn a_program_is_cut_into_pages_of_its_file_bytes() {
        // Code: 0x1800 file bytes in 2 pages; data: 16 file bytes, 3 pages.
        let image = elf(
            elf::abi::EM_X86_64,
            &[
                (PT_LOAD, 5, 0, 0x40_0000, 0x1800, 0x1800),
                (4, 4, 0, 0, 0, 0), // PT_NOTE: skipped
                (PT_LOAD, 6, 0x100, 0x60_0000, 16, 0x2001),
            ],
            0x1800,
        );
        let program = Program::parse(&image, Arch::X86_64).unwrap();
        assert_eq!(program.entry(), 0x40_1000);
        let segments = plan(&image).unwrap();
        assert_eq!(segments.len(), 2);
        let (code, data) = (segments[0], segments[1]);
        assert_eq!(
            (code.index, code.writable, code.executable),
            (0, false, true)
        );
        assert_eq!(
            (data.index, data.writable, data.executable),
            (2, true, false)
        );
        let pages: Vec<_> = code.pages().collect();
        assert_eq!(pages.len(), 2);
        assert_eq!(
            (pages[0].vaddr, pages[0].bytes),
            (0x40_0000, &image[..4096])
        );
        assert_eq!(
            (pages[1].vaddr, pages[1].bytes),
            (0x40_1000, &image[4096..0x1800])
        );
        let pages: Vec<_> = data.pages().collect();
        assert_eq!(pages.len(), 3);
        assert_eq!(pages[0].bytes, &image[0x100..0x110]);
        assert!(pages[1].bytes.is_empty() && pages[2].bytes.is_empty());
        assert_eq!(pages[2].vaddr, 0x60_2000);
    }

    #[test]
    fn each_bad_segment_has_its_own_error() {
        let one = |segment| elf(elf::abi::EM_X86_64, &[segment], 64);
        let image = one((PT_LOAD, 5, 0x100, 0x1000, 0x80, 0x80));
        assert!(matches!(
            plan(&image),
            Err(ProgramError::SegmentOutsideFile { index: 0 })
        ));
        let image = one((PT_LOAD, 5, u64::MAX, 0x1000, 2, 2));
        assert!(matches!(
            plan(&image),
            Err(ProgramError::SegmentOutsideFile { .. })
        ));
        let image = one((PT_LOAD, 5, 0, 0x1000, 0x20, 0x10));
        assert!(matches!(
            plan(&image),
            Err(ProgramError::SegmentOutsideFile { .. })
        ));
        let image = one((PT_LOAD, 5, 0, 0x1010, 0x20, 0x20));
        assert!(matches!(
            plan(&image),
            Err(ProgramError::SegmentLayout {
                index: 0,
                vaddr: 0x1010
            })
        ));
        let image = one((PT_LOAD, 5, 0, !0xFFF_u64, 0x20, 0x1001));
        assert!(matches!(
            plan(&image),
            Err(ProgramError::SegmentWraps { .. })
        ));
        // The last page of the address space is a page like any other.
        let image = one((PT_LOAD, 5, 0, !0xFFF_u64, 0x20, 0x1000));
        let segments = plan(&image).unwrap();
        let pages: Vec<_> = segments[0].pages().collect();
        assert_eq!(pages.len(), 1);
        assert_eq!(pages[0].vaddr, !0xFFF_u64);
        let image = one((PT_LOAD, 5, 0, 0, 0, u64::MAX));
        assert_eq!(plan(&image).unwrap()[0].page_count(), 1 << 52);
    }

    #[test]
    fn the_header_is_checked_first() {
        let image = elf(elf::abi::EM_AARCH64, &[], 0);
        assert!(matches!(
            Program::parse(&image, Arch::X86_64),
            Err(ProgramError::WrongMachine(183))
        ));
        assert!(Program::parse(&image, Arch::Aarch64).is_ok());
        assert!(matches!(
            Program::parse(&image[..40], Arch::Aarch64),
            Err(ProgramError::BadElf(_))
        ));
        assert_eq!(
            std::format!("{}", ProgramError::WrongMachine(3)),
            "ELF machine 3 is not this architecture"
        );
        // `elf`'s own `Display` names what is wrong (its `Debug` cost the
        // kernel 2 KB; kernel/README.md, "Size").
        assert_eq!(
            std::format!("{}", ProgramError::BadElf(elf::ParseError::BadOffset(0x40))),
            "not a valid ELF64 executable: bad offset 0x40"
        );
    }

    #[test]
    fn only_the_archive_magic_makes_an_image() {
        let image = elf(elf::abi::EM_X86_64, &[], 0);
        assert_eq!(
            classify(&image, Arch::X86_64),
            Ok(BootModule::Program(&image))
        );
        assert_eq!(classify(&[], Arch::X86_64), Ok(BootModule::Program(&[])));
        let mut broken = MAGIC.to_vec();
        broken.extend_from_slice(&[0; 8]);
        assert_eq!(
            classify(&broken, Arch::X86_64),
            Err(ImageError::Archive(ArchiveError::Truncated))
        );
    }

    /// A packed image (`tools/fuzz/corpus/boot_module/hello-x86_64`,
    /// `cargo xtask pack --image hello`): its init entry, for x86_64 only.
    #[test]
    fn a_packed_image_gives_its_init() {
        let image: &[u8] = include_bytes!("../../../tools/fuzz/corpus/boot_module/hello-x86_64");
        let Ok(BootModule::Image { root_task }) = classify(image, Arch::X86_64) else {
            panic!("the packed image classifies");
        };
        assert!(crate::lies_within(root_task, image));
        assert!(Program::parse(root_task, Arch::X86_64).is_ok());
        assert_eq!(
            classify(image, Arch::Aarch64),
            Err(ImageError::WrongArchitecture(Arch::X86_64))
        );
    }
}
