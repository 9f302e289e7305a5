//! Seeded bugs: deliberately broken variants of the real operations.
//!
//! Only compiled with the `seeded-bugs` feature, which the verification
//! suite turns on (the kernel never does). Each flag breaks exactly one rule
//! inside the real code paths of [`crate::Caps`]; the suite switches them on
//! one at a time and asserts that the model checker finds a counterexample.

/// Which rules to break. All off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flaws {
    /// `unmap_io` clears the stage-2 entry but queues no invalidation.
    pub skip_unmap_invalidation: bool,
    /// Destroying an IoSpace leaves its devices and PASIDs attached to it.
    pub keep_devices_on_space_delete: bool,
    /// `mint` grants the requested rights instead of intersecting them.
    pub mint_amplifies: bool,
    /// `mint_pasid` does not check that the (device, PASID) is unused.
    pub duplicate_pasid: bool,
    /// `retype` restarts at the bottom of the Untyped even while objects
    /// carved from it are live.
    pub retype_overlap: bool,
    /// Invalidations are queued but never waited for.
    pub skip_invalidation_wait: bool,
    /// `map_io` maps but does not enter the mapping in its IoSpace's index
    /// (so a later overlapping map is allowed, and teardown misses it).
    pub map_skips_index: bool,
    /// Unmapping leaves the mapping's entries in the IPA index (so the IPA
    /// stays taken for a later map).
    pub stale_ipa_index: bool,
    /// The IPA index's overlap check for a 4 KiB page ignores a 2 MiB
    /// mapping of its block.
    pub index_ignores_blocks: bool,
    /// Destroying an IoSpace unmaps its frames but leaves their entries in
    /// the IPA index (the slot-table scan that replaced the per-IoSpace
    /// list forgets the index).
    pub teardown_keeps_ipa_index: bool,
    /// Moving a capability that holds an IO mapping leaves the IPA index
    /// naming the old slot (not in [`Flaws::each`]: the model checker has
    /// no move; `tests/ipa_index.rs` and the property tests move).
    pub move_keeps_old_slot: bool,
    /// `dirty_access` (`IoSpace.ReadDirty` / `SetDirtyTracking`) accepts an
    /// IoSpace cap with only the read right.
    pub dirty_needs_read_only: bool,
    /// `respond_access` (`IoFaultQueue.Respond`) accepts an IoFaultQueue
    /// cap with only the read right.
    pub respond_needs_read_only: bool,
    /// `sva_bind_access` (`IoDevice.BindVSpace`) accepts a VSpace root
    /// PageTable cap with only the read right.
    pub sva_bind_read_only: bool,
    /// `pasid_bind_access` (`IoPasid.BindVSpace`) accepts an IoPasid cap
    /// with only the read right.
    pub pasid_bind_read_only: bool,
}

impl Flaws {
    /// Every seeded bug with its name, one flag set in each.
    pub fn each() -> [(&'static str, Flaws); 13] {
        let none = Flaws::default();
        [
            (
                "skip_unmap_invalidation",
                Flaws {
                    skip_unmap_invalidation: true,
                    ..none
                },
            ),
            (
                "keep_devices_on_space_delete",
                Flaws {
                    keep_devices_on_space_delete: true,
                    ..none
                },
            ),
            (
                "mint_amplifies",
                Flaws {
                    mint_amplifies: true,
                    ..none
                },
            ),
            (
                "duplicate_pasid",
                Flaws {
                    duplicate_pasid: true,
                    ..none
                },
            ),
            (
                "retype_overlap",
                Flaws {
                    retype_overlap: true,
                    ..none
                },
            ),
            (
                "skip_invalidation_wait",
                Flaws {
                    skip_invalidation_wait: true,
                    ..none
                },
            ),
            (
                "map_skips_index",
                Flaws {
                    map_skips_index: true,
                    ..none
                },
            ),
            (
                "stale_ipa_index",
                Flaws {
                    stale_ipa_index: true,
                    ..none
                },
            ),
            (
                "teardown_keeps_ipa_index",
                Flaws {
                    teardown_keeps_ipa_index: true,
                    ..none
                },
            ),
            (
                "dirty_needs_read_only",
                Flaws {
                    dirty_needs_read_only: true,
                    ..none
                },
            ),
            (
                "respond_needs_read_only",
                Flaws {
                    respond_needs_read_only: true,
                    ..none
                },
            ),
            (
                "sva_bind_read_only",
                Flaws {
                    sva_bind_read_only: true,
                    ..none
                },
            ),
            (
                "pasid_bind_read_only",
                Flaws {
                    pasid_bind_read_only: true,
                    ..none
                },
            ),
        ]
    }
}
