//! Reference specification (filled below).
