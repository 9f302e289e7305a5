//! Fuzz target `elf_load`: the ELF loader init uses for every domain's
//! program (`rt::space::load_elf`, over the `elf` crate's parser), against
//! the stand-in kernel of `portcullis_fuzz`.
//!
//! Asserts: no panic for any file; every page the loader maps is
//! page-aligned, below the top of user space (2^47), and read-only,
//! read-write or read-execute (never writable and executable); no more
//! pages are mapped than the stand-in kernel created objects.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_fuzz::{boot_info, install_stand_in_kernel};
use rt::space::{Objects, Scratch, load_elf};
use sys::{Cap, MapRights, PageTable, Slot};

/// Where the target's scratch page sits in the (stand-in) root task.
const SCRATCH: u64 = 0x10_0000_0000;
/// The slot the target pretends holds the domain's VSpace root.
const SPACE_SLOT: Slot = Slot::new(900);

fuzz_target!(|image: &[u8]| {
    let seen = install_stand_in_kernel();
    let mut objects = Objects::from_boot_info(&boot_info());
    let scratch = Scratch::for_root_task(&mut objects, SCRATCH).expect("stand-in answers Ok");
    let space = Cap::<PageTable>::from_slot(SPACE_SLOT);
    let before = seen.borrow().frame_maps.len();
    let loaded = load_elf(&mut objects, &scratch, space, image);
    let seen = seen.borrow();
    let allowed = [
        MapRights::READ.bits(),
        MapRights::READ_WRITE.bits(),
        MapRights::READ_EXECUTE.bits(),
    ];
    for mapping in &seen.frame_maps[before..] {
        if mapping.address == SCRATCH {
            continue;
        }
        assert!(
            mapping.address.is_multiple_of(4096),
            "{mapping:?} {loaded:?}"
        );
        assert!(mapping.address < 1 << 47, "{mapping:?} {loaded:?}");
        assert!(allowed.contains(&mapping.rights), "{mapping:?} {loaded:?}");
    }
    let program_pages = seen.frame_maps[before..]
        .iter()
        .filter(|mapping| mapping.address != SCRATCH)
        .count();
    assert!(program_pages as u32 <= seen.objects);
    drop(seen);
    sys::host::clear_kernel();
});
