//! Fuzz target `boot_module`: the kernel's reading of its boot module
//! (`firmware::boot_module`): `classify` (packed image or bare ELF), then
//! `Program::parse` of the root task for each architecture and every
//! segment and page the kernel would load. Seeds: the `elf_load` ELFs and
//! the packed `hello` image.
//!
//! Asserts: no panic; every error renders; only input with the archive's
//! magic is an image (or an image error), anything else the program
//! itself; the root task lies within the input and the image fits its
//! window; every segment's file bytes lie within the ELF and are no more
//! than its memory size, its address is page aligned and its last byte
//! fits in 64 bits; its pages (the first 64 checked) ascend a page at a
//! time and carry its file bytes in order.
#![no_main]

use firmware::boot_module::{self, BootModule, PAGE_SIZE, Program};
use firmware::lies_within;
use libfuzzer_sys::fuzz_target;
use sysdesc::archive::{Arch, MAGIC};

/// Pages per segment whose contents are checked.
const CHECKED_PAGES: u64 = 64;

fuzz_target!(|bytes: &[u8]| {
    for arch in [Arch::X86_64, Arch::Aarch64] {
        match boot_module::classify(bytes, arch) {
            Ok(BootModule::Program(program)) => {
                assert!(!bytes.starts_with(&MAGIC));
                assert_eq!(program.as_ptr_range(), bytes.as_ptr_range());
                plan(program, arch);
            }
            Ok(BootModule::Image { root_task }) => {
                assert!(bytes.starts_with(&MAGIC));
                assert!(lies_within(root_task, bytes));
                assert!(bytes.len() as u64 <= abi::bootinfo::MAX_IMAGE_LENGTH);
                plan(root_task, arch);
            }
            Err(error) => {
                assert!(bytes.starts_with(&MAGIC));
                let _ = error.to_string();
            }
        }
    }
});

/// Checks every segment and page the kernel would load from `image`.
fn plan(image: &[u8], arch: Arch) {
    let program = match Program::parse(image, arch) {
        Ok(program) => program,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    let _ = program.entry();
    let mut count = 0usize;
    for segment in program.segments() {
        count += 1;
        assert!(
            count <= usize::from(u16::MAX),
            "more segments than e_phnum allows"
        );
        let segment = match segment {
            Ok(segment) => segment,
            Err(error) => {
                let _ = error.to_string();
                continue;
            }
        };
        assert!(lies_within(segment.file_bytes, image));
        assert!(segment.file_bytes.len() as u64 <= segment.memory_size);
        assert!(segment.vaddr.is_multiple_of(PAGE_SIZE));
        assert!(
            segment.memory_size == 0
                || segment.vaddr.checked_add(segment.memory_size - 1).is_some()
        );
        assert_eq!(
            segment.page_count(),
            segment.memory_size.div_ceil(PAGE_SIZE)
        );
        let mut loaded = Vec::new();
        let mut pages = 0;
        for (n, page) in segment.pages().take(CHECKED_PAGES as usize).enumerate() {
            pages += 1;
            assert_eq!(page.vaddr, segment.vaddr + n as u64 * PAGE_SIZE);
            assert!(page.bytes.len() as u64 <= PAGE_SIZE);
            assert!(page.bytes.is_empty() || lies_within(page.bytes, segment.file_bytes));
            loaded.extend_from_slice(page.bytes);
        }
        assert_eq!(pages, segment.page_count().min(CHECKED_PAGES));
        let shown = segment
            .file_bytes
            .len()
            .min((CHECKED_PAGES * PAGE_SIZE) as usize);
        assert_eq!(loaded, segment.file_bytes[..shown]);
    }
}
