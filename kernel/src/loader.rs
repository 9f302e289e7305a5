//! Loading the boot module: the root task's ELF segments become pages of a
//! fresh address space, and a packed system image is mapped into it.
//!
//! What to load is the `firmware` crate's decision (`boot_module`: which
//! kind of module, which segments, which file bytes on which page; host
//! tested and fuzzed); this module allocates the frames, copies the bytes
//! and maps them.

use crate::frames::BootFrames;
use crate::vspace::{self, MapError, Rights};
use firmware::boot_module::{Program, ProgramError};
use sysdesc::archive::Arch;

pub use firmware::boot_module::{BootModule, ImageError};

/// Why a program could not be loaded; each names the offending part.
#[derive(Debug)]
pub enum LoadError {
    /// The ELF file or one of its segments is malformed (or two segments
    /// share a page: `ProgramError::SegmentLayout`, found when mapping).
    Program(ProgramError),
    /// Mapping failed.
    Map(MapError),
    /// No frames left.
    OutOfMemory,
}

impl From<ProgramError> for LoadError {
    fn from(error: ProgramError) -> LoadError {
        LoadError::Program(error)
    }
}

impl ktext::Text for LoadError {
    fn write(&self, out: &mut dyn ktext::Sink) {
        match self {
            LoadError::Program(e) => e.write(out),
            LoadError::Map(e) => ktext::put!(out, "mapping failed: {}", e),
            LoadError::OutOfMemory => out.str("out of frames"),
        }
    }
}

/// The architecture this kernel runs (of ELF files and packed images).
#[cfg(target_arch = "x86_64")]
const ARCH: Arch = Arch::X86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: Arch = Arch::Aarch64;

/// Loads `image` into the address space rooted at `root`, taking frames
/// from `frames`; returns the entry point. Each segment is checked as it
/// is reached, so one found malformed stops the load after the earlier
/// ones are mapped.
pub fn load(image: &[u8], root: u64, frames: &mut BootFrames) -> Result<u64, LoadError> {
    let program = Program::parse(image, ARCH)?;
    for segment in program.segments() {
        let segment = segment?;
        let rights = Rights {
            write: segment.writable,
            execute: segment.executable,
        };
        for page in segment.pages() {
            let frame = frames.alloc().ok_or(LoadError::OutOfMemory)?;
            if !page.bytes.is_empty() {
                // A fresh 4 KiB frame; the page's bytes are at most 4 KiB
                // (`Segment::pages`).
                crate::mem::copy_in(frame, page.bytes);
            }
            match vspace::map_page(root, page.vaddr, frame, rights, &mut || frames.alloc()) {
                Ok(()) => {}
                Err(MapError::AlreadyMapped(_)) => {
                    return Err(ProgramError::SegmentLayout {
                        index: segment.index,
                        vaddr: page.vaddr,
                    }
                    .into());
                }
                Err(e) => return Err(LoadError::Map(e)),
            }
        }
    }
    Ok(program.entry())
}

/// Tells a packed system image from a bare ELF and finds the root task.
pub fn classify(module: &[u8]) -> Result<BootModule<'_>, ImageError> {
    firmware::boot_module::classify(module, ARCH)
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
    // The boot-info frame `objects::init` filled; both fields are aligned
    // u64s inside the BootInfo at its start.
    crate::mem::write_u64(
        page + core::mem::offset_of!(BootInfo, image_address) as u64,
        abi::bootinfo::IMAGE_ADDRESS,
    );
    crate::mem::write_u64(
        page + core::mem::offset_of!(BootInfo, image_length) as u64,
        len,
    );
    Ok(())
}
