//! Fuzz target `image_toml`: the system-image TOML (`images/<NAME>.toml`)
//! through `sysimage::validate::validate` against both platforms of
//! `images/platforms/`, with the workspace's programs, as `cargo xtask`
//! runs it on `--image`.
//!
//! Asserts: no panic, and every error renders (it names a line of the
//! text). An image the host accepts must be one init can read: its
//! description encodes into the 64 KiB the packer allows and decodes to
//! the same value; drawing its capability graph does not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_fuzz::image_context;
use std::path::Path;
use sysimage::sysdesc::SystemDescription;

fuzz_target!(|text: &str| {
    let context = image_context();
    for platform in &context.platforms {
        match sysimage::validate::validate(
            Path::new("images/fuzz.toml"),
            "fuzz",
            text,
            platform,
            &context.programs,
        ) {
            Ok(image) => {
                let mut buffer = vec![0u8; 64 << 10];
                let encoded = image
                    .system
                    .encode(&mut buffer)
                    .expect("an accepted image encodes");
                assert_eq!(
                    SystemDescription::decode(encoded).as_ref(),
                    Ok(&image.system)
                );
                let _ = sysimage::graph::dot(&image);
            }
            Err(error) => {
                let _ = error.to_string();
            }
        }
    }
});
