//! `cargo xtask`: the front door for building, running and testing Portcullis.
fn main() {}
