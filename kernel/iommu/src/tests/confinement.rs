//! Confinement property tests.
