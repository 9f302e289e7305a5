//! System images: `images/<NAME>.toml`, checked before anything is built.
//!
//! Today an image holds only a description; the full format (protection
//! domains, memory regions, IOMMU grants) comes later. Unknown keys are
//! rejected now so that a typo never passes silently.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The image `cargo xtask run` boots when `--image` is not given.
pub const DEFAULT_IMAGE: &str = "default";

/// The contents of `images/<NAME>.toml`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// What the image does when booted, in a sentence or two.
    pub description: String,
}

/// A validated image: its name and contents.
#[derive(Debug)]
pub struct LoadedImage {
    /// The name given to `--image` (the file name without `.toml`).
    pub name: String,
    /// What the file says.
    pub image: Image,
}

/// Checks that `name` can be an image name: lowercase letters, digits, `-`
/// and `_`, so it is a file name and safe on the kernel command line.
pub fn validate_name(name: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if name.is_empty() || !name.chars().all(allowed) {
        return Err(Error::new(
            format!("invalid image name `{name}`"),
            "image names use lowercase letters, digits, `-` and `_` (the file images/<NAME>.toml)",
        ));
    }
    Ok(())
}

/// The names of the images in `dir`, sorted.
pub fn available(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            (path.extension()? == "toml").then_some(())?;
            Some(path.file_stem()?.to_str()?.to_string())
        })
        .collect();
    names.sort();
    names
}

/// Parses the text of an image file; `path` names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<Image> {
    toml::from_str(text).map_err(|error| {
        let location = match error.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("{}:{line}", path.display())
            }
            None => path.display().to_string(),
        };
        Error::new(
            format!("{location}: {}", error.message().trim_end()),
            "an image has one key today: description = \"...\"",
        )
    })
}

/// Loads and checks `images/<name>.toml` under `images_dir`.
pub fn load(images_dir: &Path, name: &str) -> Result<LoadedImage> {
    validate_name(name)?;
    let file = format!("{name}.toml");
    let path: PathBuf = images_dir.join(&file);
    // Errors name the file as the user knows it: `images/<name>.toml`.
    let shown = images_dir
        .file_name()
        .map_or_else(|| path.clone(), |dir| Path::new(dir).join(&file));
    let text = fs::read_to_string(&path).map_err(|_| {
        let names = available(images_dir);
        let choices = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        };
        Error::new(
            format!("unknown image `{name}` (no {})", shown.display()),
            format!("use --image with one of: {choices}"),
        )
    })?;
    Ok(LoadedImage {
        name: name.to_string(),
        image: parse(&shown, &text)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images")
    }

    #[test]
    fn names() {
        assert!(validate_name("default").is_ok());
        assert!(validate_name("edu-nested_2").is_ok());
        for bad in ["", "../default", "a/b", "Default", "x y", "a.toml", "é"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let error = parse(
            Path::new("images/x.toml"),
            "description = \"d\"\nregions = 3\n",
        )
        .unwrap_err();
        assert!(error.problem.starts_with("images/x.toml:2:"), "{error}");
        assert!(error.problem.contains("regions"), "{error}");
    }

    #[test]
    fn missing_description_is_an_error() {
        let error = parse(Path::new("images/x.toml"), "").unwrap_err();
        assert!(error.problem.contains("description"), "{error}");
    }

    #[test]
    fn unknown_image_lists_the_available_ones() {
        let error = load(&images_dir(), "no-such-image").unwrap_err();
        assert!(
            error.problem.contains("(no images/no-such-image.toml)"),
            "{error}"
        );
        assert!(error.fix.contains("default"), "{error}");
    }

    #[test]
    fn every_image_in_the_repository_parses() {
        let names = available(&images_dir());
        assert!(names.iter().any(|name| name == DEFAULT_IMAGE), "{names:?}");
        for name in names {
            let loaded = load(&images_dir(), &name).unwrap_or_else(|error| panic!("{error}"));
            assert!(!loaded.image.description.trim().is_empty(), "{name}");
        }
    }
}
