//! SMMUv3 translation tests.
