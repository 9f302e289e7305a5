//! `iopt`: builds a user-level driver's own stage-1 IO page tables.
//!
//! A Portcullis driver owns the stage-1 tables of its device; the kernel
//! installs them nested under a kernel-owned stage 2 (an `IoSpace`). The
//! driver writes the tables through its own CPU mapping of the table frames,
//! and the IOMMU walks them through stage 2. So **every address this crate
//! writes into a table is an IPA** (an address in the driver's `IoSpace`):
//! next-level table pointers and leaf output addresses alike. The crate never
//! sees a physical address.
//!
//! What the crate does, and where:
//! - [`format`]: the two entry encodings ([`Format::VtdFirstStage`] and
//!   [`Format::ArmStage1`]), each bit named after its spec section.
//! - [`memory`]: the two traits the driver implements, [`FramePool`] (which
//!   table frames it may use) and [`TableMemory`] (how to read and write a
//!   64-bit word of a table frame), plus safe ready-made implementations over
//!   a slice of frames and a bitmap of IPAs.
//! - [`table`]: [`IoPageTable`], the 4-level table with `map` (and
//!   `map_pages` for scattered IPAs: one walk per level-3 table, not per
//!   page), `unmap`, `translate` and `flush`.
//! - [`invalidation`]: the bounded, coalescing batch of IOVA ranges that
//!   `map`/`unmap` touched, and the [`Invalidator`] trait `flush` drives
//!   (in a driver: the `IoUserTable.Invalidate` invocation).
//!
//! Invariants:
//! - Each table frame is 512 little-endian 64-bit words at a 4 KiB-aligned
//!   IPA; a frame is linked into the tree only after all 512 words are zero.
//! - A table frame that `unmap` empties is unlinked at once but returned to
//!   the [`FramePool`] only by [`IoPageTable::flush`], after the invalidation
//!   that covers it has completed, so the IOMMU can never walk a reused frame
//!   through a stale cached pointer.
//! - `map`, `map_pages` and `unmap` are all-or-nothing: on any error the mappings are as
//!   they were before the call (some invalidation ranges may still be
//!   recorded, which is harmless).
//! - Nothing here panics on bad input; every refusal is an [`Error`].
//!
//! # Example
//!
//! ```
//! use iopt::{
//!     BitmapPool, Config, Format, InvalidationRange, Invalidator, IoPageTable, Rights,
//!     SliceMemory, Translation,
//! };
//!
//! /// In a driver: the `IoUserTable.Invalidate` invocation.
//! struct Invalidate;
//! impl Invalidator for Invalidate {
//!     type Error = ();
//!     fn invalidate_range(&mut self, _range: InvalidationRange) -> Result<(), ()> {
//!         Ok(())
//!     }
//!     fn invalidate_all(&mut self) -> Result<(), ()> {
//!         Ok(())
//!     }
//! }
//!
//! // Eight table frames at IPA 0x8000_0000 (in a driver: its own mapping of
//! // frames it also mapped into its IoSpace at that IPA).
//! let mut frames = [[0u64; 512]; 8];
//! let memory = SliceMemory::new(0x8000_0000, &mut frames).unwrap();
//! let pool = BitmapPool::<1>::new(0x8000_0000, 8).unwrap();
//! let mut table = IoPageTable::new(Config::new(Format::ArmStage1), pool, memory)?;
//! assert_eq!(table.root().ipa(), 0x8000_0000); // what BindUserTable gets
//!
//! table.map(0x10_0000, 0x4000_0000, 0x4000, Rights::READ_WRITE)?;
//! table.flush(&mut Invalidate).unwrap();
//! assert_eq!(
//!     table.translate(0x10_2345)?,
//!     Some(Translation { ipa: 0x4000_2345, rights: Rights::READ_WRITE })
//! );
//! assert_eq!(table.stats().invalidation_calls, 1);
//!
//! table.unmap(0x10_0000, 0x4000)?;
//! table.flush(&mut Invalidate).unwrap(); // now the emptied tables are free
//! assert_eq!(table.stats().tables_live, 1);
//! # Ok::<(), iopt::Error>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]

pub mod error;
pub mod format;
pub mod invalidation;
pub mod memory;
pub mod table;

pub use error::Error;
pub use format::{Entry, Format, Rights};
pub use invalidation::{
    BATCH_CAPACITY, FlushError, InvalidationBatch, InvalidationRange, Invalidator,
};
pub use memory::{BitmapPool, FrameNotBacked, FramePool, SliceMemory, TableFrame, TableMemory};
pub use table::{Config, IoPageTable, Stats, Translation};

/// Size of a page and of a table frame: 4 KiB.
pub const PAGE_SIZE: u64 = 4096;

/// Number of 64-bit entries in one table frame.
pub const ENTRIES_PER_TABLE: usize = 512;

/// Number of table levels (level 0 is the root, level 3 holds the pages).
pub const LEVELS: usize = 4;

/// The widest IPA either format can hold in an entry: 48 bits.
pub const MAX_IPA_BITS: u32 = 48;
