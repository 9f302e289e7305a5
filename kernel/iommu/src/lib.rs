//! Intel VT-d and Arm SMMUv3 drivers, generic over MMIO and physical-memory access.
//!
//! The crate never touches hardware directly: register blocks are reached
//! through [`Mmio`], the tables the IOMMU walks through [`PhysMem`], and new
//! table pages come from a [`FrameAllocator`]. The kernel implements the three
//! traits over its direct map; the host tests implement them over the
//! simulated memory and simulated register blocks in `model`, which also
//! contains executable translation models of both IOMMUs.
//!
//! Every hardware poll is bounded ([`poll::PollLimit`]) and fails with an error
//! naming the register and bit that did not change.
//!
//! Layout:
//! - [`hw`]: the access traits.
//! - [`poll`]: bounded polling.
//! - [`vtd`]: Intel VT-d (DMAR parsing, registers, tables, queued invalidation,
//!   fault recording, page requests, the boot path).
//! - [`smmuv3`]: Arm SMMUv3 (ID registers, stream table, STE/CD encoders,
//!   stage-2 tables, command and event queues, PRI queue and stalls, the
//!   boot path).
//! - [`pagetable`]: the radix page-table builder of all four formats,
//!   with dirty-bit read-and-clear for dirty tracking.
//! - [`invalidation`]: the batching invalidation API shared by both vendors.
//! - [`attachments`]: which requesters use which domain, per-IoSpace shares,
//!   and what to block when an invalidation fails.
//! - [`budget`]: table memory charged to the IoSpace it serves (a fixed
//!   reservation each), so no IoSpace can use up another's.
//! - `model` (host only, `cfg(test)` or feature `model`): simulated memory,
//!   simulated register blocks and translation models.
//!
//! # Boot: block all DMA
//!
//! ```ignore
//! // x86_64: one VT-d unit per DRHD of the ACPI DMAR table.
//! let dmar = iommu::vtd::dmar::Dmar::parse(dmar_bytes)?;
//! let drhd = dmar.remapping_units().next().unwrap();
//! let mut vtd = iommu::vtd::VtdUnit::new(mmio_at(drhd.register_base)); // 4 KiB of registers
//! let mode = if vtd.extended_capability().smts() { RootTableMode::Scalable } else { RootTableMode::Legacy };
//! vtd.block_all_dma(&phys_mem, &mut frames, mode)?;                   // 3 frames
//! for fault in vtd.read_faults().iter() { /* source_id, reason, address */ }
//!
//! // aarch64: the SMMU from the device tree ("arm,smmu-v3"), 128 KiB of registers.
//! let mut smmu = iommu::smmuv3::Smmu::new(mmio_at(0x0905_0000));
//! smmu.block_all_dma(&phys_mem, &mut frames, BlockPolicy::RecordFault, 0..256)?;
//! for event in smmu.drain_events(&phys_mem).events.iter() { /* C_BAD_STE, stream_id */ }
//! ```
#![no_std]
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "model"))]
extern crate std;

pub mod attachments;
pub mod budget;
pub mod hw;
pub mod identity;
pub mod invalidation;
pub mod list;
pub mod pagetable;
pub mod poll;
pub mod smmuv3;
pub mod vtd;

#[cfg(any(test, feature = "model"))]
pub mod model;

#[cfg(test)]
mod tests;

pub use hw::{FrameAllocator, Mmio, PAGE_SIZE, PhysAddr, PhysMem};
pub use poll::PollLimit;

/// Extracts bits `hi..=lo` of `value`.
#[inline]
pub(crate) const fn bits(value: u64, hi: u32, lo: u32) -> u64 {
    (value >> lo) & (u64::MAX >> (63 - (hi - lo)))
}

/// Returns bit `bit` of `value`.
#[inline]
pub(crate) const fn bit(value: u64, bit: u32) -> bool {
    (value >> bit) & 1 == 1
}
