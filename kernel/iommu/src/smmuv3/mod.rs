//! Arm SMMUv3.
