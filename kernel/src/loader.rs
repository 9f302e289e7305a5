//! Loading a user program: an ELF executable's PT_LOAD segments become
//! pages of a fresh address space.

use crate::frames::BootFrames;
use crate::vspace::{self, MapError, Rights};
use elf::ElfBytes;
use elf::abi::{PF_W, PF_X, PT_LOAD};
use elf::endian::LittleEndian;

/// Why a program could not be loaded; each names the offending part.
#[derive(Debug)]
pub enum LoadError {
    /// Not a little-endian ELF64 file, or its headers are malformed.
    BadElf(elf::ParseError),
    /// Built for another architecture (the ELF machine number).
    WrongMachine(u16),
    /// A segment's file bytes lie outside the file.
    SegmentOutsideFile {
        /// Segment index.
        index: usize,
    },
    /// A segment is not page aligned, or two segments share a page.
    SegmentLayout {
        /// Segment index.
        index: usize,
        /// Its virtual address.
        vaddr: u64,
    },
    /// Mapping failed.
    Map(MapError),
    /// No frames left.
    OutOfMemory,
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LoadError::BadElf(e) => write!(f, "not a valid ELF64 executable: {e:?}"),
            LoadError::WrongMachine(m) => write!(f, "ELF machine {m} is not this architecture"),
            LoadError::SegmentOutsideFile { index } => {
                write!(f, "segment {index} extends past the end of the file")
            }
            LoadError::SegmentLayout { index, vaddr } => {
                write!(
                    f,
                    "segment {index} at {vaddr:#x} is not page aligned or shares a page with another"
                )
            }
            LoadError::Map(e) => write!(f, "mapping failed: {e:?}"),
            LoadError::OutOfMemory => write!(f, "out of frames"),
        }
    }
}

#[cfg(target_arch = "x86_64")]
const MACHINE: u16 = elf::abi::EM_X86_64;
#[cfg(target_arch = "aarch64")]
const MACHINE: u16 = elf::abi::EM_AARCH64;

/// Loads `image` into the address space rooted at `root`, taking frames
/// from `frames`; returns the entry point.
pub fn load(image: &[u8], root: u64, frames: &mut BootFrames) -> Result<u64, LoadError> {
    let file = ElfBytes::<LittleEndian>::minimal_parse(image).map_err(LoadError::BadElf)?;
    if file.ehdr.e_machine != MACHINE {
        return Err(LoadError::WrongMachine(file.ehdr.e_machine));
    }
    let Some(segments) = file.segments() else {
        return Ok(file.ehdr.e_entry);
    };
    for (index, segment) in segments
        .iter()
        .enumerate()
        .filter(|(_, s)| s.p_type == PT_LOAD)
    {
        let file_end = segment.p_offset.checked_add(segment.p_filesz);
        if file_end.is_none_or(|end| end > image.len() as u64) || segment.p_filesz > segment.p_memsz
        {
            return Err(LoadError::SegmentOutsideFile { index });
        }
        if segment.p_vaddr % 4096 != 0 {
            return Err(LoadError::SegmentLayout {
                index,
                vaddr: segment.p_vaddr,
            });
        }
        let rights = Rights {
            write: segment.p_flags & PF_W != 0,
            execute: segment.p_flags & PF_X != 0,
        };
        let bytes =
            &image[segment.p_offset as usize..(segment.p_offset + segment.p_filesz) as usize];
        let pages = segment.p_memsz.div_ceil(4096);
        for page in 0..pages {
            let frame = frames.alloc().ok_or(LoadError::OutOfMemory)?;
            let start = (page * 4096) as usize;
            if start < bytes.len() {
                let chunk = &bytes[start..bytes.len().min(start + 4096)];
                // SAFETY: `frame` is a fresh 4 KiB frame in the direct map and
                // the chunk is at most 4 KiB.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        chunk.as_ptr(),
                        crate::mem::phys_to_virt(frame) as *mut u8,
                        chunk.len(),
                    )
                };
            }
            let vaddr = segment.p_vaddr + page * 4096;
            match vspace::map_page(root, vaddr, frame, rights, &mut || frames.alloc()) {
                Ok(()) => {}
                Err(MapError::AlreadyMapped(_)) => {
                    return Err(LoadError::SegmentLayout { index, vaddr });
                }
                Err(e) => return Err(LoadError::Map(e)),
            }
        }
    }
    Ok(file.ehdr.e_entry)
}

/// What the boot module holds.
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
#[derive(Debug)]
pub enum ImageError {
    /// The archive's header or entry table is malformed.
    Archive(sysdesc::archive::ArchiveError),
    /// Packed for the other architecture.
    WrongArchitecture(sysdesc::archive::Arch),
    /// The archive has no `init` entry (packed without `userland/init`).
    NoRootTask,
    /// Larger than the window it is mapped into.
    TooLarge(u64),
    /// The module does not start on a page boundary, so it cannot be mapped.
    Unaligned(u64),
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ImageError::Archive(e) => write!(f, "{e}"),
            ImageError::WrongArchitecture(arch) => {
                write!(f, "packed for {arch:?}, not this architecture")
            }
            ImageError::NoRootTask => f.write_str(
                "it has no root-task entry `init` (pack it with `cargo xtask pack`, which adds userland/init)",
            ),
            ImageError::TooLarge(len) => write!(
                f,
                "{len} bytes, more than the {} bytes mapped for it",
                abi::bootinfo::MAX_IMAGE_LENGTH
            ),
            ImageError::Unaligned(at) => write!(f, "it is loaded at {at:#x}, not page aligned"),
        }
    }
}

#[cfg(target_arch = "x86_64")]
const IMAGE_ARCH: sysdesc::archive::Arch = sysdesc::archive::Arch::X86_64;
#[cfg(target_arch = "aarch64")]
const IMAGE_ARCH: sysdesc::archive::Arch = sysdesc::archive::Arch::Aarch64;

/// Tells a packed system image from a bare ELF and finds the root task.
pub fn classify(module: &[u8]) -> Result<BootModule<'_>, ImageError> {
    if !module.starts_with(&sysdesc::archive::MAGIC) {
        return Ok(BootModule::Program(module));
    }
    let archive = sysdesc::archive::Archive::parse(module).map_err(ImageError::Archive)?;
    if archive.arch() != IMAGE_ARCH {
        return Err(ImageError::WrongArchitecture(archive.arch()));
    }
    if module.len() as u64 > abi::bootinfo::MAX_IMAGE_LENGTH {
        return Err(ImageError::TooLarge(module.len() as u64));
    }
    let root_task = archive.root_task().ok_or(ImageError::NoRootTask)?;
    Ok(BootModule::Image { root_task })
}

/// Maps the image at physical `start` (`len` bytes) read-only into the
/// space rooted at `root`, at `abi::bootinfo::IMAGE_ADDRESS` onwards.
pub fn map_image(
    root: u64,
    start: u64,
    len: u64,
    frames: &mut BootFrames,
) -> Result<(), LoadError> {
    let read_only = Rights {
        write: false,
        execute: false,
    };
    for page in 0..len.div_ceil(4096) {
        let vaddr = abi::bootinfo::IMAGE_ADDRESS + page * 4096;
        vspace::map_page(root, vaddr, start + page * 4096, read_only, &mut || {
            frames.alloc()
        })
        .map_err(LoadError::Map)?;
    }
    Ok(())
}

/// Writes where the image is into the root task's boot-info page (mapped
/// at `abi::bootinfo::BOOT_INFO_ADDRESS` in the space rooted at `root`).
pub fn record_image(root: u64, len: u64) -> Result<(), &'static str> {
    use abi::bootinfo::BootInfo;
    let page =
        vspace::page_address(root, abi::bootinfo::BOOT_INFO_ADDRESS).ok_or("no boot-info page")?;
    let info = crate::mem::phys_to_virt(page);
    // SAFETY: `page` is the boot-info frame `objects::init` filled, in the
    // direct map; both fields are aligned u64s inside the BootInfo at its start.
    unsafe {
        ((info + core::mem::offset_of!(BootInfo, image_address) as u64) as *mut u64)
            .write(abi::bootinfo::IMAGE_ADDRESS);
        ((info + core::mem::offset_of!(BootInfo, image_length) as u64) as *mut u64).write(len);
    }
    Ok(())
}
