//! Fuzz target `description`: the postcard decoder of the system
//! description (`sysdesc::SystemDescription::decode`), the one entry of
//! the archive init interprets.
//!
//! Asserts: a description that decodes encodes again (into the 64 KiB the
//! host packer allows) and decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysdesc::SystemDescription;

fuzz_target!(|bytes: &[u8]| {
    let Ok(description) = SystemDescription::decode(bytes) else {
        return;
    };
    let mut buffer = vec![0u8; 64 << 10];
    let encoded = description
        .encode(&mut buffer)
        .expect("a decoded description encodes");
    assert_eq!(SystemDescription::decode(encoded), Ok(description));
});
