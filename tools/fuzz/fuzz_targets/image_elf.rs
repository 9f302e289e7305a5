//! Fuzz target `image_elf`: the packer's ELF checks
//! (`sysimage::pack::check_elf`, then `load_segments` on a file it
//! accepts), which decide whether an image's maps overlap a program.
//!
//! Asserts: no panic; every segment it reports is page aligned and not
//! empty (start below end).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysimage::pack::{check_elf, load_segments};
use sysimage::sysdesc::archive::Arch;

fuzz_target!(|bytes: &[u8]| {
    for arch in [Arch::X86_64, Arch::Aarch64] {
        if check_elf(bytes, arch).is_err() {
            continue;
        }
        if let Ok(segments) = load_segments(bytes) {
            for (start, end) in segments {
                assert!(start.is_multiple_of(4096) && end.is_multiple_of(4096));
                assert!(start < end, "{start:#x}..{end:#x}");
            }
        }
    }
});
