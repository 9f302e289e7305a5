//! Criterion benchmarks of the capability operations (filled in below).
fn main() {}
