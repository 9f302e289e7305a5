//! Fuzz target `init_image`: everything init does with the packed image
//! before any domain runs: `Archive::parse`, the description's decode, and
//! `init::system::build` (its own checks of the description, every domain's
//! program loaded by `rt::space::load_elf`), against the stand-in kernel of
//! `portcullis_fuzz` (every call `Ok`, a budget of objects).
//!
//! Asserts: no panic for any image; a build that succeeds started every
//! domain the description names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_fuzz::{boot_info, install_stand_in_kernel};
use sysdesc::archive::Archive;

fuzz_target!(|bytes: &[u8]| {
    let Ok(archive) = Archive::parse(bytes) else {
        return;
    };
    let Ok(description) = archive.description() else {
        return;
    };
    let _seen = install_stand_in_kernel();
    let mut objects = rt::space::Objects::from_boot_info(&boot_info());
    if let Ok(system) = init::system::build(&archive, &description, &mut objects) {
        assert_eq!(system.domains.len(), description.domains.len());
    }
    sys::host::clear_kernel();
});
