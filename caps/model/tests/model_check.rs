//! Exhaustive model checking of the real capability code (stateright BFS).
//!
//! Three bounded scenarios are explored exhaustively by default: the whole
//! reachable state space of the IOMMU scenario, every state within 8
//! operations of the derivation scenario and within 4 of "everything";
//! `CAPS_CHECK_DEPTH`, `CAPS_CHECK_FREE_SLOTS`, `CAPS_CHECK_IPAS` and
//! `CAPS_CHECK_FRAMES` enlarge the bounds (see caps/README.md).

use std::time::Instant;

use caps::checker::model::{Bounds, SystemModel, replay};
use caps::checker::ops::format_trace;
use stateright::{Checker, Model};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Explore `bounds` exhaustively, print the counts, and assert every
/// invariant held; returns the number of distinct states.
fn check(name: &str, mut bounds: Bounds) -> usize {
    bounds.depth = env_or("CAPS_CHECK_DEPTH", bounds.depth);
    bounds.free_slots = env_or("CAPS_CHECK_FREE_SLOTS", bounds.free_slots as usize) as u32;
    bounds.frames = env_or("CAPS_CHECK_FRAMES", bounds.frames as usize) as u32;
    let ipas = env_or("CAPS_CHECK_IPAS", bounds.ipas.len());
    bounds.ipas = (0..ipas as u64).map(|i| i * 0x1000).collect();
    let depth = bounds.depth;
    let model = SystemModel {
        bounds: bounds.clone(),
        ..SystemModel::default()
    };
    let start = Instant::now();
    let mut builder = model.checker().threads(1);
    if depth > 0 {
        // stateright counts the initial state as depth 1 and neither checks
        // nor expands states at the target depth: `depth + 2` checks every
        // state reachable in `depth` operations.
        builder = builder.target_max_depth(depth + 2);
    }
    let checker = builder.spawn_bfs().join();
    let elapsed = start.elapsed();
    let states = checker
        .model()
        .checked
        .load(std::sync::atomic::Ordering::Relaxed);
    let deepest = checker.max_depth().saturating_sub(1);
    if depth == 0 {
        println!(
            "model check [{name}]: {states} distinct states checked = the whole reachable state space (longest shortest path: {deepest} operations), {elapsed:.1?}\n  bounds: {bounds:?}"
        );
    } else {
        println!(
            "model check [{name}]: {states} distinct states checked (every state within {depth} operations), {} more generated at depth {}, {elapsed:.1?}\n  bounds: {bounds:?}",
            checker.unique_state_count() - states,
            depth + 1,
        );
    }
    for (property, path) in checker.discoveries() {
        let (_, steps) = replay(checker.model(), &path.into_actions());
        println!("  discovery '{property}':\n{}", format_trace(&steps));
    }
    checker.assert_properties();
    assert!(
        depth == 0 || checker.max_depth() > depth,
        "explored fewer than {depth} operations deep"
    );
    states
}

#[test]
fn bfs_iommu_scenario_holds_invariants() {
    let states = check("iommu", Bounds::iommu());
    assert!(states >= 100_000, "explored only {states} states");
}

#[test]
fn bfs_derivation_scenario_holds_invariants() {
    let states = check("derivation", Bounds::derivation());
    assert!(states >= 100_000, "explored only {states} states");
}

#[test]
fn bfs_everything_scenario_holds_invariants() {
    // Every action family together, shallower: cross-family interactions.
    let states = check("everything", Bounds::everything());
    assert!(states >= 50_000, "explored only {states} states");
}

#[test]
fn bfs_dirty_scenario_holds_invariants() {
    // Who may read and clear dirty bits (and switch tracking), next to
    // mint, map, unmap, delete and revoke of the caps involved.
    let states = check("dirty", Bounds::dirty());
    assert!(states >= 10_000, "explored only {states} states");
}

#[test]
fn bfs_sva_scenario_holds_invariants() {
    // Who may bind a device to a CPU address space, next to mint, map,
    // attach, detach, delete and revoke of the caps involved.
    let states = check("sva", Bounds::sva());
    assert!(states >= 10_000, "explored only {states} states");
}
