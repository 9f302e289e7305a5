//! The IOMMU object layer: applies the capability model's IOMMU effects
//! to a VT-d or SMMUv3 unit (stage-2 tables, device and PASID entries,
//! VT-d shadow tables, SMMUv3 context descriptors, hardware tags, table
//! budgets, batched invalidation, failing closed, fault routes) and keeps
//! the IO fault queues.
//!
//! `no_std`, no unsafe code, generic over what it touches, so the kernel
//! and the host tests run the same code:
//!
//! ```text
//!  caps model ── Effect ──> State<U, M, E>::apply(&mut unit, effect)
//!                             │         │            │
//!              U: IoUnit ─────┘         │            └── E: Env (log lines, the
//!   VtdUnit<R> / Smmu<R> over R: Mmio   │                notification type, the
//!   (kernel: DirectMmio; host: the      │                test kernels' flaws)
//!    iommu crate's SimVtd / SimSmmu)    │
//!                                       └── M: PhysMem (kernel: the direct map;
//!                                           host: SimMemory); table pages from
//!                                           the pool the caller fills
//!
//!  IoSpace object page ── stage-2 root (IPA -> PA), intermediate tables
//!        │                 from the IoSpace's reservation in the pool
//!        ├── device attached directly: context/PASID entry or STE -> root
//!        ├── IoUserTable (driver's stage 1 at root_ipa) = a "nest":
//!              SMMUv3: CD page from the pool, mapped read-only at an IPA in
//!                      the reserved window; STE nested (stage 1 + stage 2)
//!              VT-d:   shadow table from the pool (IOVA -> PA composed by
//!                      `Invalidate`); context/PASID entry -> shadow
//!  CPU VSpace root ── SVA binding (`sva.rs`): VT-d RID_PASID entry, first
//!                     stage only; SMMUv3 stage-1-only STE + CD (TTB0 = root);
//!                     a CPU unmap in it invalidates the device's IOTLB
//! ```
//!
//! The caller owns the one [`State`] and the unit, and serialises calls
//! (the kernel: its unit lock, then its state lock). The layer never calls
//! up: fault delivery returns the notifications to signal
//! ([`State::queue_faults`]).
//!
//! Hardware tags: an IoSpace with model DID `d` uses tag `d + 1` (VT-d
//! reserves DID 0 under caching mode); nest `i` uses DID `0x8001 + i` for
//! its shadow (VT-d) or ASID `i + 1` (SMMUv3), so no two tables share a tag.
//!
//! Table memory is charged to the IoSpace it serves (`iommu::budget`):
//! each IoSpace reserves [`SPACE_BUDGET`] pages of the pool when it is
//! created (`TableMemoryExhausted` if the pool cannot set them aside), and
//! every page of its stage 2, its shadows and its CDs comes out of that
//! reservation and goes back to it. So do the unit's own tables (context,
//! PASID, level-2 stream tables) an attach needs: charged to the attaching
//! IoSpace, freed and refunded when their last entry goes; one still
//! shared when its payer dies passes to the [`UNIT_FLOOR`] pages no
//! IoSpace may reserve. So one IoSpace that fills its tables runs out
//! alone. Invocations check beforehand that the account they charge has
//! enough pages left ([`State::ensure_pool`], [`State::ensure_attach_room`]),
//! so an effect never fails for lack of memory.
//!
//! Recoverable faults (`requests.rs`): page requests, and SMMUv3 stalled
//! transactions where stalls are on, go to the fault queues as records a
//! driver answers (`IoFaultQueue.Respond`); the layer answers `Failure`
//! itself when the queue, the requester's entry or
//! [`Env::RESPONSE_DEADLINE`] runs out, so a device never waits forever.
//!
//! Fail closed: an invalidation that fails or times out blocks every
//! device that may still translate through what it was meant to remove
//! (`iommu::attachments`; on SMMUv3, DMA stops altogether when even that
//! cannot be confirmed) and fails the invocation with `IommuTimeout`
//! ([`State::take_failure`]). Shares: one IoSpace holds at most [`SHARE`]
//! of the unit's attachments and nests (`IoShareExhausted`).
#![no_std]
#![forbid(unsafe_code)]

// Host only (`model-bench`): the host tests' world over the executable
// models, which names this crate `iospace` and uses `std`.
#[cfg(feature = "model-bench")]
#[macro_use]
extern crate std;
#[cfg(feature = "model-bench")]
extern crate self as iospace;

mod dirty;
mod env;
mod faults;
mod index;
#[cfg(feature = "model-bench")]
pub mod model_bench;
mod msi;
mod pool;
mod requests;
mod smmu;
mod state;
mod sva;
mod unit;
mod vtd;

pub use env::{Env, Flaw};
pub use faults::{DmaFault, Drained, MAX_FAULTS, Record};
pub use msi::msi_doorbell_ipa;
pub use requests::{KernelAnswers, PENDING_REQUESTS, PageRequest, Response};
pub use state::{SpaceAt, State};
pub use sva::{Binding, SVA_BINDINGS};
pub use unit::IoUnit;
pub use vtd::SHADOW_PAGES_PER_CALL;

use iommu::attachments::Share;
use iommu::budget::UNIT_TABLES_PER_ENTRY;

/// Most live IoSpaces, nests, attached requesters, routes and queues.
pub const SPACES: usize = 64;
/// Table pages each IoSpace reserves when it is created: the most its
/// stage 2, shadows and CDs may hold. The `edu` tests' IoSpaces peak at 9
/// (kernel/README.md); 64 leaves room for a driver spread over about 50
/// 2 MiB regions.
pub const SPACE_BUDGET: usize = 64;
/// Pool pages no IoSpace may reserve: the unit's context and PASID tables
/// (VT-d) and level-2 stream tables (SMMUv3) still shared by other
/// IoSpaces when the IoSpace that paid for them died (at most one per
/// attachment) pass to them.
pub const UNIT_FLOOR: usize = 64;
/// Pages the pool holds at most: a reservation for every one of the
/// [`SPACES`] IoSpaces plus the unit's floor (4,160 pages, 16.25 MiB).
pub const POOL_PAGES: usize = SPACES * SPACE_BUDGET + UNIT_FLOOR;
/// Pages an invocation needs left in the IoSpace's account before it may
/// change IO tables: a stage-2 walk (3), a shadow or CD (1), or a VT-d
/// shadow update over two 2 MiB regions (6); for an attach, the unit's
/// context / PASID / level-2 stream tables it may need (3), which are
/// charged to the attaching IoSpace too. With margin.
pub const POOL_RESERVE: usize = 8;
/// Most nests (driver stage-1 tables in use by devices) at once.
pub const NESTS: usize = 32;
/// Most attached requesters (or PASIDs) at once.
pub const ATTACHED: usize = 64;
/// The unit's table pages from the pool in use at once: each holds a
/// live entry, and one attachment's entry needs at most
/// [`UNIT_TABLES_PER_ENTRY`].
const UNIT_TABLES: usize = ATTACHED * UNIT_TABLES_PER_ENTRY;
/// Most SMMUv3 streams with substreams (a CD table each) at once.
pub const SUBSTREAM_TABLES: usize = 32;
/// Most fault queues bound at once.
pub const QUEUES: usize = 32;
/// What one IoSpace may use of the unit's [`ATTACHED`] attachment records
/// and [`NESTS`] nests: a quarter, so one IoSpace's holder cannot fill
/// them for everyone.
pub const SHARE: Share = Share {
    attachments: ATTACHED / 4,
    nests: NESTS / 4,
};
/// Records one fault queue holds; later faults are counted as lost.
pub const QUEUE_DEPTH: usize = 32;
/// Most tags one batch of invalidations names (more: everything).
const PENDING_TAGS: usize = 16;
/// Size of the reserved IPA window at the top of every IoSpace, where the
/// kernel keeps structures the hardware fetches through stage 2.
pub const RESERVED_IPA_WINDOW: u64 = 2 << 20;

/// Where the reserved IPA window starts for an `ipa_bits`-bit IoSpace.
pub fn reserved_base(ipa_bits: u32) -> u64 {
    (1u64 << ipa_bits) - RESERVED_IPA_WINDOW
}

/// The hardware tag of an IoSpace's stage 2 (model DID `did`).
pub fn space_tag(did: u16) -> u16 {
    did + 1
}
