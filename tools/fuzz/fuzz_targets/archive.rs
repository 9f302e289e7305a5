//! Fuzz target `archive`: the boot-image archive reader
//! (`sysdesc::archive::Archive::parse`), which init runs on whatever image
//! the kernel was booted with.
//!
//! Asserts, for every archive the reader accepts: the table yields as many
//! entries as the header counts; each payload starts on a 4 KiB boundary
//! after the table and after the previous payload, ends inside the bytes,
//! and is exactly `size` bytes long; there is exactly one description
//! entry; the description and root-task accessors answer without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysdesc::archive::{self, Archive, EntryKind};

fuzz_target!(|bytes: &[u8]| {
    let Ok(parsed) = Archive::parse(bytes) else {
        return;
    };
    let count = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    assert_eq!(
        parsed.entries().count(),
        count,
        "an accepted row went missing"
    );
    let mut floor = (archive::HEADER_SIZE + count * archive::ENTRY_SIZE) as u64;
    let mut descriptions = 0;
    for entry in parsed.entries() {
        assert!(entry.offset.is_multiple_of(archive::ALIGN), "{entry:?}");
        assert!(
            entry.offset >= floor,
            "{entry:?} overlaps what comes before"
        );
        let end = entry.offset.checked_add(entry.size).expect("end overflows");
        assert!(end <= bytes.len() as u64, "{entry:?} ends past the bytes");
        assert_eq!(parsed.payload(&entry).len() as u64, entry.size, "{entry:?}");
        assert!(!entry.name.is_empty() && entry.name.len() <= archive::ENTRY_NAME_LEN);
        descriptions += usize::from(entry.kind == EntryKind::Description);
        floor = end;
    }
    assert_eq!(descriptions, 1);
    let _ = parsed.description();
    if let Some(root_task) = parsed.root_task() {
        assert!(root_task.len() <= bytes.len());
    }
});
