//! The Portcullis capability model, shared by the kernel and the host checker.
//!
//! What is verified is what runs: the kernel calls these operations for all
//! of its capability logic, and the host model-checks the very same code.
//!
//! - [`Caps`] holds the capability system over caller-provided [`Storage`]
//!   (CNode memory and an object table in the kernel, arrays on the host);
//!   the core operations never allocate.
//! - Operations follow decode/perform: every check happens before any change,
//!   errors are the fixed [`Error`] enum, and nothing panics on bad input.
//! - Operations do not touch hardware; they emit [`Effect`]s (unmap this IO
//!   page, clear this device entry, invalidate this domain and wait) into an
//!   [`EffectSink`] that the kernel applies to the IOMMU and the host applies
//!   to an abstract IOMMU (`checker` feature).
//! - The derivation tree is seL4's mapping-database ordering: see
//!   [`storage`]. A hash table keyed by (IoSpace, IPA) indexes the IO
//!   mappings: it answers `IoSpace.Map`'s overlap check in O(1).
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "checker")]
extern crate std;

/// `flawed!(caps, name)`: whether seeded bug `name` is switched on; always
/// `false` (and free) without the `seeded-bugs` feature.
macro_rules! flawed {
    ($caps:expr, $flaw:ident) => {{
        #[cfg(feature = "seeded-bugs")]
        let on = $caps.flaws.$flaw;
        #[cfg(not(feature = "seeded-bugs"))]
        let on = false;
        on
    }};
}

mod caps;
mod cpu;
pub mod effect;
pub mod error;
#[cfg(feature = "seeded-bugs")]
pub mod flaws;
mod iommu;
mod mapping_index;
pub mod object;
pub mod storage;
pub mod types;

#[cfg(feature = "checker")]
pub mod checker;

pub use caps::Caps;
pub use effect::{DiscardEffects, Effect, EffectSink, FaultSource};
pub use error::Error;
#[cfg(feature = "seeded-bugs")]
pub use flaws::Flaws;
pub use object::{Attachment, IommuUnit, NewObject, Object, ObjectState};
pub use storage::{ArrayStorage, Cap, CpuMapping, DerivationOrder, IoMapping, Slot, Storage};
pub use types::{
    Badge, LARGE_PAGE_BITS, ObjectId, ObjectKind, PAGE_BITS, Rights, SLOT_SIZE_BITS, SlotId,
};
