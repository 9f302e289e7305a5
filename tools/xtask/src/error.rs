//! The one error type of `cargo xtask`.
//!
//! Every failure the user can cause or fix (an unknown architecture or image,
//! a missing QEMU, a kernel that does not build, a QEMU that does not start)
//! becomes an [`Error`] that names the problem and the fix; `main` prints it
//! as `error: <problem>; <fix>` and exits non-zero. Nothing here panics.

use std::fmt;

/// A failure that stops the command: what went wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What went wrong, e.g. "unknown image `foo`".
    pub problem: String,
    /// How to fix it, e.g. "use one of: default".
    pub fix: String,
}

impl Error {
    /// An error with a problem and its fix.
    pub fn new(problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Error {
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fix.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}; {}", self.problem, self.fix)
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for results whose error is [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
