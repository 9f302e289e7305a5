//! System images on the host: `images/<NAME>.toml` parsed, validated
//! against a platform (`images/platforms/<NAME>.toml`), packed into one boot
//! image per architecture, and drawn as a capability graph.
//!
//! - [`format`]: the TOML files as written (serde, `deny_unknown_fields`);
//! - [`platform`]: the QEMU machines and the devices they have;
//! - [`validate`]: image + platform -> [`sysdesc::SystemDescription`], or an
//!   [`ImageError`] naming file, line, entry, problem and fix;
//! - [`pack`]: kernel + programs + description -> the archive of
//!   [`sysdesc::archive`], byte for byte reproducible;
//! - [`graph`]: the capability distribution as Graphviz DOT.
//!
//! Everything here runs before anything is built: `cargo xtask` calls
//! [`load`] for `--image`, so a bad image stops the command with its message.
#![forbid(unsafe_code)]

pub mod error;
pub mod format;
pub mod graph;
pub mod live;
pub mod pack;
pub mod platform;
pub mod size;
pub mod validate;

use std::fs;
use std::path::{Path, PathBuf};

pub use error::ImageError;
pub use platform::Platform;
/// The description types and archive layout, for users of this crate.
pub use sysdesc;
pub use validate::Image;

/// Turns a toml error into an [`ImageError`] at toml's line and column.
pub(crate) fn toml_error(
    file: &Path,
    text: &str,
    error: &toml::de::Error,
    fix: &str,
) -> ImageError {
    let problem = error.message().trim_end().to_string();
    let located = ImageError::new(file, "", problem, fix);
    match error.span() {
        Some(span) => located.at(text, span.start),
        None => located,
    }
}

/// Checks that `name` can be an image name: lowercase letters, digits, `-`
/// and `_` (a file name, and safe on the kernel command line).
pub fn valid_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    !name.is_empty() && name.chars().all(allowed)
}

/// The image names in `images_dir` (its `*.toml` files), sorted.
pub fn available(images_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(images_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            (path.extension()? == "toml" && path.is_file()).then_some(())?;
            Some(path.file_stem()?.to_str()?.to_string())
        })
        .collect();
    names.sort();
    names
}

/// The user programs of the workspace at `root`: every workspace member
/// under `userland/` or `drivers/` with a `src/main.rs`, by package name,
/// sorted. Images may name only these.
pub fn workspace_programs(root: &Path) -> Result<Vec<String>, ImageError> {
    #[derive(serde::Deserialize)]
    struct Workspace {
        workspace: Members,
    }
    #[derive(serde::Deserialize)]
    struct Members {
        members: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct Manifest {
        package: Package,
    }
    #[derive(serde::Deserialize)]
    struct Package {
        name: String,
    }
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|error| {
            ImageError::new(
                path,
                "",
                format!("cannot read it: {error}"),
                "run inside a Portcullis checkout",
            )
        })
    };
    let manifest = root.join("Cargo.toml");
    let text = read(&manifest)?;
    let workspace: Workspace = toml::from_str(&text)
        .map_err(|error| toml_error(&manifest, &text, &error, "fix the workspace manifest"))?;
    let mut programs = Vec::new();
    for member in workspace.workspace.members {
        let dir = root.join(&member);
        let user = member.starts_with("userland/") || member.starts_with("drivers/");
        if !user || !dir.join("src/main.rs").is_file() {
            continue;
        }
        let path = dir.join("Cargo.toml");
        let text = read(&path)?;
        let package: Manifest = toml::from_str(&text)
            .map_err(|error| toml_error(&path, &text, &error, "fix the package manifest"))?;
        programs.push(package.package.name);
    }
    programs.sort();
    Ok(programs)
}

/// Loads `images/<name>.toml` under `images_dir` and validates it against
/// `platform`, with `programs` the user programs that exist.
pub fn load(
    images_dir: &Path,
    name: &str,
    platform: &Platform,
    programs: &[String],
) -> Result<Image, ImageError> {
    let shown = PathBuf::from("images").join(format!("{name}.toml"));
    if !valid_name(name) {
        return Err(ImageError::new(
            &shown,
            "",
            format!("invalid image name `{name}`"),
            "image names use lowercase letters, digits, `-` and `_` (the file images/<NAME>.toml)",
        ));
    }
    let text = fs::read_to_string(images_dir.join(format!("{name}.toml"))).map_err(|_| {
        let names = available(images_dir);
        ImageError::new(
            &shown,
            "",
            format!("unknown image `{name}`"),
            format!(
                "use --image with one of: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        )
    })?;
    validate::validate(&shown, name, &text, platform, programs)
}
