//! The live capability dumps on the host: from the serial transcript of a
//! kernel built with the `cap-dump` feature to
//! `target/images/<image>-<arch>-live.{dot,svg,txt}` (the `call` dump,
//! taken when init has built every domain and none has run) and its
//! differences from the image (`sysimage::live`), and, when the session
//! ended with DebugHalt, `<image>-<arch>-live-halt.{dot,svg,txt}` (the
//! final state, drawn but not checked: the image describes the start).
//! Used by `cargo xtask run --cap-dump` and by the `*-capdump` system tests.
//!
//! A `halt` dump the transcript cut short is a warning, not an error: the
//! `call` dump's drawing and check stand on their own, and a session that
//! ends mid-dump has died (a panic) or timed out, which the run's exit
//! status and the system tests' own lines already report as a failure. The
//! warning names the dump so that it is not silently missing.

use std::path::{Path, PathBuf};

use sysimage::live::{self, LiveDump, LiveError};

use crate::error::{Error, Result};
use crate::machines::Arch;

/// The moment of the dump taken when the session ends with DebugHalt.
const HALT: &str = "halt";

/// One dump, drawn and written.
#[derive(Debug)]
pub struct Drawn {
    /// The DOT source, the SVG Graphviz drew from it, the indented tree.
    pub files: [PathBuf; 3],
    /// Objects, capabilities and domains in the dump.
    pub summary: String,
}

/// What the dumps of a run became.
#[derive(Debug)]
pub struct Outcome {
    /// The `call` dump (the first): drawn and compared with the image.
    pub call: Drawn,
    /// The `halt` dump, when the session ended with DebugHalt: drawn only.
    pub halt: Option<Drawn>,
    /// Every difference of the `call` dump from the image (empty when they
    /// agree).
    pub mismatches: Vec<String>,
    /// What is wrong with the `halt` dump (truncated), each naming it; the
    /// `call` dump's drawing and check do not depend on it.
    pub warnings: Vec<String>,
}

/// One dump as it is to be written: file stem, DOT source, tree, summary.
#[derive(Debug)]
struct Picture {
    /// `<image>-<arch>-live` or `<image>-<arch>-live-halt`.
    stem: String,
    /// The DOT source.
    dot: String,
    /// The indented derivation tree.
    tree: String,
    /// Objects, capabilities and domains.
    summary: String,
}

/// Everything [`judge`] writes and reports, before it is written.
#[derive(Debug)]
struct Pictures {
    call: Picture,
    halt: Option<Picture>,
    mismatches: Vec<String>,
    warnings: Vec<String>,
}

fn picture(dump: &LiveDump, stem: String, title: String) -> Picture {
    let names: Vec<&str> = dump.domains.iter().map(|d| d.name.as_str()).collect();
    Picture {
        dot: live::dot(dump, &title),
        tree: live::tree_text(dump, &title.replace('\n', " ")),
        summary: format!(
            "{} objects, {} capabilities, domains {}",
            dump.objects.len(),
            dump.caps.len(),
            names.join(", ")
        ),
        stem,
    }
}

/// `<image>-<arch>-live`, the file name of the `call` dump's drawing
/// without extension; the `halt` dump's adds `-halt`.
fn stem(image: &sysimage::Image, arch: Arch) -> String {
    format!("{}-{}-live", image.name, arch.name())
}

/// Parses the dumps in `transcript`, draws the first (`call`) and a later
/// `halt` one, and compares the first with `image`.
fn pictures(image: &sysimage::Image, arch: Arch, transcript: &[String]) -> Result<Pictures> {
    let dumps = live::parse_all(transcript.iter().map(String::as_str))
        .map_err(|error| explain(&error, image, transcript))?;
    let Some(call) = dumps.complete.first() else {
        let error = dumps.truncated.unwrap_or(LiveError::NoDump);
        return Err(explain(&error, image, transcript));
    };
    let stem = stem(image, arch);
    let system = format!(
        "live capabilities of image {} on {} ({})",
        image.name,
        image.platform.name,
        arch.name()
    );
    let halt = dumps.complete[1..]
        .iter()
        .find(|dump| dump.moment == HALT)
        .map(|dump| {
            picture(
                dump,
                format!("{stem}-{HALT}"),
                format!(
                    "{system} at DebugHalt:\nthe final state, dumped when a thread ended the session (not compared with the image)"
                ),
            )
        });
    let warnings = dumps
        .truncated
        .iter()
        .map(|error| {
            let moment = match error {
                LiveError::Truncated { moment, .. } if !moment.is_empty() => moment.as_str(),
                _ => "last",
            };
            format!(
                "the `{moment}` dump was not drawn (the `call` dump was, and its check stands): {error}"
            )
        })
        .collect();
    Ok(Pictures {
        mismatches: live::check_against(call, image),
        call: picture(
            call,
            stem,
            format!(
                "{system}, as the kernel dumped them\nwhen init had built every protection domain, before any ran"
            ),
        ),
        halt,
        warnings,
    })
}

/// Writes `picture` under `dir` as `.dot`, `.txt` and (with Graphviz) `.svg`.
fn write(dir: &Path, picture: Picture) -> Result<Drawn> {
    let dot_path = dir.join(format!("{}.dot", picture.stem));
    let svg_path = dir.join(format!("{}.svg", picture.stem));
    let text_path = dir.join(format!("{}.txt", picture.stem));
    crate::write_file(&dot_path, picture.dot.as_bytes())?;
    crate::write_file(&text_path, picture.tree.as_bytes())?;
    sysimage::graph::render_svg(&picture.dot, &svg_path).map_err(|error| {
        Error::new(
            format!("Graphviz could not draw {}: {error}", dot_path.display()),
            format!(
                "install Graphviz (apt-get install graphviz) or run `dot -Tsvg {}` to see the problem",
                dot_path.display()
            ),
        )
    })?;
    Ok(Drawn {
        files: [dot_path, svg_path, text_path],
        summary: picture.summary,
    })
}

/// Parses the dumps in `transcript` (every serial line of a run of `image`
/// on `arch`), writes the graph and tree of the `call` dump, and of the
/// `halt` dump when there is one, under `target/images/`, and compares the
/// `call` dump with the image.
pub fn judge(
    root: &Path,
    image: &sysimage::Image,
    arch: Arch,
    transcript: &[String],
) -> Result<Outcome> {
    let pictures = pictures(image, arch, transcript)?;
    let dir = crate::image::output_dir(root)?;
    if pictures.halt.is_none() {
        // An earlier run's final state is not this run's.
        for extension in ["dot", "svg", "txt"] {
            let stale = dir.join(format!("{}-{HALT}.{extension}", stem(image, arch)));
            let _ = std::fs::remove_file(stale);
        }
    }
    Ok(Outcome {
        call: write(&dir, pictures.call)?,
        halt: pictures
            .halt
            .map(|picture| write(&dir, picture))
            .transpose()?,
        mismatches: pictures.mismatches,
        warnings: pictures.warnings,
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

    /// A small dump: init alone at `call`, init and `ping` at `halt`.
    fn dump(moment: &str) -> Vec<String> {
        let mut records = lines(&[
            "capdump: object 1 CNode paddr=0x10000 bits=12 parent=- slots=64+64",
            "capdump: object 2 Tcb paddr=0x20000 bits=10 parent=- cspace=1 vspace=0x30000 name=init",
            "capdump: cap 64 depth=0 object=1 rights=RWG badge=0x0",
        ]);
        if moment == "halt" {
            records.extend(lines(&[
                "capdump: object 3 CNode paddr=0x11000 bits=12 parent=- slots=128+64",
                "capdump: object 4 Tcb paddr=0x21000 bits=10 parent=- cspace=3 vspace=0x31000 name=ping",
                "capdump: cap 65 depth=0 object=3 rights=RWG badge=0x0",
            ]));
        }
        let objects = records.iter().filter(|l| l.contains(" object ")).count();
        let caps = records.len() - objects;
        records.insert(0, format!("capdump: begin {moment}"));
        records.push(format!("capdump: end objects={objects} caps={caps}"));
        records
    }

    fn session(parts: &[Vec<String>]) -> Vec<String> {
        let mut transcript = lines(&["Portcullis 0.1.0"]);
        for part in parts {
            transcript.extend(part.iter().cloned());
            transcript.push("[init] started 2 protection domain(s)".to_string());
        }
        transcript.push("portcullis: exit 0".to_string());
        transcript
    }

    #[test]
    fn the_call_and_the_halt_dump_are_both_drawn_and_only_call_is_checked() {
        let image = image();
        let both = pictures(
            &image,
            Arch::X86_64,
            &session(&[dump("call"), dump("halt")]),
        )
        .unwrap();
        assert_eq!(both.call.stem, "pingpong-x86_64-live");
        let call_title = both.call.tree.lines().next().unwrap();
        assert!(call_title.contains("before any ran"), "{call_title}");
        assert!(!both.call.dot.contains("DebugHalt"));
        assert!(
            both.call.summary.ends_with("domains init"),
            "{}",
            both.call.summary
        );
        let halt = both.halt.as_ref().expect("the halt dump is drawn");
        assert_eq!(halt.stem, "pingpong-x86_64-live-halt");
        let halt_title = halt.tree.lines().next().unwrap();
        assert!(
            halt_title
                .starts_with("# live capabilities of image pingpong on q35 (x86_64) at DebugHalt"),
            "{halt_title}"
        );
        assert!(halt.dot.contains("at DebugHalt"));
        assert!(
            halt.summary.ends_with("domains init, ping"),
            "{}",
            halt.summary
        );
        assert!(both.warnings.is_empty(), "{:?}", both.warnings);
        // The halt dump is not compared with the image: the differences are
        // those of the call dump alone.
        let alone = pictures(&image, Arch::X86_64, &session(&[dump("call")])).unwrap();
        assert!(alone.halt.is_none());
        assert!(!alone.mismatches.is_empty());
        assert_eq!(both.mismatches, alone.mismatches);
    }

    #[test]
    fn a_truncated_halt_dump_is_a_warning_naming_it_and_the_call_dump_stays() {
        let mut cut = dump("halt");
        cut.truncate(4);
        let pictures = pictures(&image(), Arch::X86_64, &session(&[dump("call"), cut])).unwrap();
        assert_eq!(pictures.call.stem, "pingpong-x86_64-live");
        assert!(pictures.halt.is_none());
        assert_eq!(pictures.warnings.len(), 1, "{:?}", pictures.warnings);
        let warning = &pictures.warnings[0];
        assert!(
            warning.starts_with("the `halt` dump was not drawn"),
            "{warning}"
        );
        assert!(
            warning.contains("dump truncated: `capdump: begin halt` at serial line 8"),
            "{warning}"
        );
    }

    #[test]
    fn a_truncated_call_dump_is_an_error() {
        let mut cut = dump("call");
        cut.truncate(2);
        let error = pictures(&image(), Arch::X86_64, &session(&[cut])).unwrap_err();
        assert!(
            error
                .problem
                .starts_with("dump truncated: `capdump: begin call`"),
            "{error}"
        );
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
