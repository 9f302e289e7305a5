//! Host-only verification support (feature `checker`, uses `std`).
//!
//! - [`hardware`]: the abstract IOMMU that applies [`crate::Effect`]s and
//!   answers "can device D (PASID P) reach physical page X with access A?";
//! - [`invariants`]: DESIGN invariants 1–5 as checks over the capability
//!   state and the abstract IOMMU;
//! - [`ops`]: operations as data, with readable traces;
//! - [`model`]: the bounded system explored exhaustively with `stateright`;
//! - [`reference`](mod@reference): a deliberately simple reference specification used by
//!   the property tests for refinement.

pub mod hardware;
pub mod invariants;
pub mod model;
pub mod ops;
pub mod reference;
