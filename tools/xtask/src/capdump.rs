//! The live capability dump on the host: from the serial transcript of a
//! kernel built with the `cap-dump` feature to
//! `target/images/<image>-<arch>-live.{dot,svg,txt}` and the list of
//! differences from the image (`sysimage::live`). Used by
//! `cargo xtask run --cap-dump` and by the `*-capdump` system tests.

use std::path::{Path, PathBuf};

use sysimage::live::{self, LiveError};

use crate::error::{Error, Result};
use crate::machines::Arch;

/// What a dump became.
#[derive(Debug)]
pub struct Outcome {
    /// The DOT source, the SVG Graphviz drew from it, the indented tree.
    pub files: [PathBuf; 3],
    /// Objects, capabilities and domains in the dump.
    pub summary: String,
    /// Every difference from the image (empty when they agree).
    pub mismatches: Vec<String>,
}

/// Parses the dump in `transcript` (every serial line of a run of `image`
/// on `arch`), writes the graph and tree under `target/images/`, and
/// compares the dump with the image.
pub fn judge(
    root: &Path,
    image: &sysimage::Image,
    arch: Arch,
    transcript: &[String],
) -> Result<Outcome> {
    let dump = live::parse_lines(transcript.iter().map(String::as_str))
        .map_err(|error| explain(&error, image, transcript))?;
    let dir = crate::image::output_dir(root)?;
    let stem = format!("{}-{}-live", image.name, arch.name());
    let title = format!(
        "live capabilities of image {} on {} ({}), as the kernel dumped them",
        image.name,
        image.platform.name,
        arch.name()
    );
    let dot_path = dir.join(format!("{stem}.dot"));
    let svg_path = dir.join(format!("{stem}.svg"));
    let text_path = dir.join(format!("{stem}.txt"));
    let source = live::dot(&dump, &title);
    crate::write_file(&dot_path, source.as_bytes())?;
    crate::write_file(
        &text_path,
        live::tree_text(&dump, &title.replace('\n', " ")).as_bytes(),
    )?;
    sysimage::graph::render_svg(&source, &svg_path).map_err(|error| {
        Error::new(
            format!("Graphviz could not draw {}: {error}", dot_path.display()),
            format!(
                "install Graphviz (apt-get install graphviz) or run `dot -Tsvg {}` to see the problem",
                dot_path.display()
            ),
        )
    })?;
    let names: Vec<&str> = dump.domains.iter().map(|d| d.name.as_str()).collect();
    Ok(Outcome {
        files: [dot_path, svg_path, text_path],
        summary: format!(
            "{} objects, {} capabilities, domains {}",
            dump.objects.len(),
            dump.caps.len(),
            names.join(", ")
        ),
        mismatches: live::check_against(&dump, image),
    })
}

/// A parse error as an xtask error; with no dump at all, says which of the
/// two usual causes it is, from how far init got.
fn explain(error: &LiveError, image: &sysimage::Image, transcript: &[String]) -> Error {
    match error {
        LiveError::NoDump => {
            let expected = image.system.domains.len();
            let started = transcript
                .iter()
                .filter(|line| line.starts_with("[init] protection domain \""))
                .count();
            if started >= expected {
                Error::new(
                    format!(
                        "no capability dump on the serial console, though init prepared all {expected} protection domains"
                    ),
                    "the kernel was built without cap-dump: build it with `cargo build --profile cap-dump --features cap-dump -p kernel` (cargo xtask run --cap-dump does) and check that init makes the dump call",
                )
            } else {
                Error::new(
                    format!(
                        "no capability dump on the serial console: init did not reach the dump (it prepared {started} of {expected} protection domains)"
                    ),
                    "see init's messages in the serial output above for what stopped it",
                )
            }
        }
        other => Error::new(
            other.to_string(),
            "the serial output above holds the whole dump",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> sysimage::Image {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        crate::image::load(&root, Arch::X86_64, "pingpong").unwrap()
    }

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|line| line.to_string()).collect()
    }

    #[test]
    fn no_dump_after_every_domain_means_a_kernel_without_cap_dump() {
        let image = image();
        let mut transcript = lines(&["Portcullis 0.1.0"]);
        for domain in &image.system.domains {
            transcript.push(format!(
                "[init] protection domain \"{}\": entry 0x400000, priority 100, 3 named capabilities",
                domain.name
            ));
        }
        let error = explain(&LiveError::NoDump, &image, &transcript);
        assert!(error.fix.contains("built without cap-dump"), "{error}");
    }

    #[test]
    fn no_dump_before_every_domain_means_init_stopped_early() {
        let error = explain(
            &LiveError::NoDump,
            &image(),
            &lines(&[
                "Portcullis 0.1.0",
                "[init] memory_region \"page\": no memory",
            ]),
        );
        assert!(
            error.problem.contains("init did not reach the dump"),
            "{error}"
        );
        assert!(error.problem.contains("prepared 0 of 2"), "{error}");
    }

    /// A run without a dump fails `judge` (and so the system test) before
    /// anything is written.
    #[test]
    fn judging_a_run_without_a_dump_is_an_error() {
        let transcript = lines(&[
            "Portcullis 0.1.0",
            "4 passed, 0 failed",
            "portcullis: exit 0",
        ]);
        let error = judge(
            Path::new("/nonexistent"),
            &image(),
            Arch::X86_64,
            &transcript,
        )
        .unwrap_err();
        assert!(error.problem.starts_with("no capability dump"), "{error}");
    }

    #[test]
    fn a_truncated_dump_is_reported_as_such() {
        let error = live::parse_lines(["capdump: begin"]).unwrap_err();
        let explained = explain(&error, &image(), &[]);
        assert!(
            explained.problem.starts_with("dump truncated"),
            "{explained}"
        );
    }
}
