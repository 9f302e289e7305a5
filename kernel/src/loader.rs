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
