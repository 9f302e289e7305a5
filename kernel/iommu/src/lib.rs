//! Intel VT-d and Arm SMMUv3 drivers, generic over MMIO and physical-memory access.
#![no_std]
