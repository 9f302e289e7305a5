//! Seeded bugs: each deliberately broken variant of the real code must be
//! caught by the model checker, with a readable counterexample.
//!
//! The bounds are those of the "everything" scenario, which
//! `tests/model_check.rs` checks without flaws: the counterexamples are the
//! flaws' doing, not the model's.

use std::collections::BTreeSet;

use caps::Flaws;
use caps::checker::invariants::check_all;
use caps::checker::model::{Bounds, SystemModel, replay};
use caps::checker::ops::format_trace;
use stateright::{Checker, HasDiscoveries, Model};

/// The invariant each seeded bug must break.
fn expected_violation(bug: &str) -> &'static str {
    match bug {
        "skip_unmap_invalidation" => "strict revocation",
        "keep_devices_on_space_delete" => "strict revocation",
        "mint_amplifies" => "no amplification",
        "duplicate_pasid" => "unique tags",
        "retype_overlap" => "retype memory safety",
        "skip_invalidation_wait" => "strict revocation",
        "map_skips_index" => "mapping index",
        "stale_ipa_index" => "mapping index",
        "teardown_keeps_ipa_index" => "mapping index",
        "dirty_needs_read_only" => "dirty access needs write",
        "respond_needs_read_only" => "respond needs write",
        "sva_bind_read_only" => "sva bind needs write",
        "pasid_bind_read_only" => "sva bind needs write",
        other => panic!("unknown seeded bug {other}"),
    }
}

#[test]
fn checker_catches_every_seeded_bug() {
    let mut caught = Vec::new();
    for (bug, flaws) in Flaws::each() {
        // The dirty-tracking and `Respond` calls (and read-only IoSpace and
        // IoFaultQueue caps) are offered in their own scenario only.
        let bounds = if bug == "dirty_needs_read_only" || bug == "respond_needs_read_only" {
            Bounds::dirty()
        } else if bug == "sva_bind_read_only" || bug == "pasid_bind_read_only" {
            Bounds::sva()
        } else {
            Bounds {
                depth: 6,
                ..Bounds::default()
            }
        };
        let model = SystemModel {
            bounds,
            flaws,
            ..SystemModel::default()
        };
        let checker = model
            .checker()
            .threads(1)
            .target_max_depth(8)
            .finish_when(HasDiscoveries::AnyFailures)
            .spawn_bfs()
            .join();
        let discoveries = checker.discoveries();
        let failures: BTreeSet<&str> = discoveries
            .keys()
            .copied()
            .filter(|name| !name.starts_with("a "))
            .collect();
        let expected = expected_violation(bug);
        let Some(path) = discoveries.get(expected) else {
            panic!("seeded bug {bug}: no counterexample for '{expected}' (found {failures:?})");
        };
        let (last, steps) = replay(checker.model(), &path.clone().into_actions());
        let (property, why) = if last.dirty_without_write {
            (
                "dirty access needs write",
                "a dirty call succeeded without WRITE".into(),
            )
        } else if last.respond_without_write {
            (
                "respond needs write",
                "a Respond succeeded without WRITE".into(),
            )
        } else if last.sva_without_write {
            (
                "sva bind needs write",
                "a BindVSpace succeeded without WRITE".into(),
            )
        } else {
            check_all(&last.caps, &last.hw).expect_err("the trace must end in a violation")
        };
        println!(
            "seeded bug {bug}: caught after {} states; violates {failures:?}\n  counterexample (from boot):\n{}  first violated: {property}: {why}\n",
            checker.unique_state_count(),
            format_trace(&steps)
        );
        caught.push(bug);
    }
    println!(
        "seeded bugs caught: {} of {}: {caught:?}",
        caught.len(),
        Flaws::each().len()
    );
    assert_eq!(caught.len(), Flaws::each().len());
}
