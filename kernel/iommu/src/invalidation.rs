//! Batching invalidation API shared by VT-d and SMMUv3.
