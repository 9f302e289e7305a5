//! Fuzz target `image_platform`: the platform files
//! (`images/platforms/<NAME>.toml`) through `sysimage::platform::parse`.
//!
//! Asserts: no panic, and every error renders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|text: &str| {
    if let Err(error) =
        sysimage::platform::parse(Path::new("images/platforms/fuzz.toml"), "fuzz", text)
    {
        let _ = error.to_string();
    }
});
