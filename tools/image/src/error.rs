//! The one error type of the image tools: which file, where in it, which
//! entry, what is wrong and how to fix it.

use std::fmt;
use std::path::{Path, PathBuf};

/// A rejected image, platform or packing request.
///
/// Displayed as
/// `images/x.toml:12:1: protection_domain "edu_driver": <problem>; fix: <fix>`
/// (the position and the entry are left out when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    /// The file as the user knows it, e.g. `images/hello.toml`.
    pub file: PathBuf,
    /// Line and column (both from 1) of the entry or key, when known.
    pub position: Option<(usize, usize)>,
    /// The entry at fault, e.g. `protection_domain "edu_driver"` or
    /// `channel 3`; empty for the file as a whole.
    pub entry: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl ImageError {
    /// An error about `entry` of `file`.
    pub fn new(
        file: &Path,
        entry: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> ImageError {
        ImageError {
            file: file.to_path_buf(),
            position: None,
            entry: entry.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// The same error, placed at byte `offset` of `text` (the file's contents).
    pub fn at(mut self, text: &str, offset: usize) -> ImageError {
        self.position = Some(line_column(text, offset));
        self
    }
}

/// Line and column (both from 1, column in characters) of byte `offset`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    (line, before[line_start..].chars().count() + 1)
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if !self.entry.is_empty() {
            write!(f, ": {}", self.entry)?;
        }
        write!(f, ": {}", self.problem)?;
        if !self.fix.is_empty() {
            write!(f, "; fix: {}", self.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for ImageError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // After the two-byte `é`.
        assert_eq!(line_column(text, 9), (2, 3));
        assert_eq!(line_column(text, 1000), (3, 1));
    }

    #[test]
    fn display_names_file_position_entry_and_fix() {
        let error = ImageError::new(
            Path::new("images/x.toml"),
            "channel 2",
            "unknown domain `srv`",
            "name a protection_domain",
        )
        .at("\n\nchannel", 2);
        assert_eq!(
            error.to_string(),
            "images/x.toml:3:1: channel 2: unknown domain `srv`; fix: name a protection_domain"
        );
    }
}
