//! Fuzz target `image_live`: the capability-dump parser
//! (`sysimage::live::parse_all`) on a serial transcript, which holds
//! whatever the guest's programs print between the kernel's `capdump:`
//! lines, then everything `cargo xtask run --cap-dump` does with a dump:
//! the indented tree, the Graphviz drawing, and the comparison with
//! `images/default.toml` validated for q35.
//!
//! Asserts: no panic, and every error renders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_fuzz::{image_context, repository_root};
use std::sync::OnceLock;

fn default_image() -> &'static sysimage::Image {
    static IMAGE: OnceLock<sysimage::Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let context = image_context();
        sysimage::load(
            &repository_root().join("images"),
            "default",
            &context.platforms[0],
            &context.programs,
        )
        .expect("images/default.toml validates for q35")
    })
}

fuzz_target!(|transcript: &str| {
    let image = default_image();
    match sysimage::live::parse_all(transcript.lines()) {
        Ok(dumps) => {
            for dump in &dumps.complete {
                let _ = sysimage::live::tree_text(dump, "fuzz");
                let _ = sysimage::live::dot(dump, "fuzz");
                let _ = sysimage::live::check_against(dump, image);
            }
            if let Some(error) = dumps.truncated {
                let _ = error.to_string();
            }
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
