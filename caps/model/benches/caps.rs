//! Criterion benchmarks of the capability operations the kernel runs on
//! every invocation: lookup, mint, delete, and revoke of a subtree of N
//! descendants (N = 1, 100, 10,000), which must scale linearly.
// criterion_group!/criterion_main! generate undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;

use caps::{ArrayStorage, Badge, Caps, DiscardEffects, NewObject, ObjectKind, Rights, SlotId};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const BIG: usize = 10_016;
type Big = Caps<ArrayStorage<BIG, 8>>;
type Small = Caps<ArrayStorage<64, 8>>;

/// Untyped in slot 0, an Endpoint in slot 1.
fn endpoint<const S: usize>() -> Caps<ArrayStorage<S, 8>> {
    let mut caps = Caps::new(ArrayStorage::new());
    caps.boot_untyped(SlotId(0), 0x10_0000, 20, false).unwrap();
    caps.retype(
        SlotId(0),
        NewObject::Endpoint,
        SlotId(1),
        &mut DiscardEffects,
    )
    .unwrap();
    caps
}

/// Slot 1 with `n` descendants: a chain of copies (each the child of the
/// previous one, the deepest tree) or a flat fan-out.
fn with_descendants(n: usize, chain: bool) -> Box<Big> {
    let mut caps = Box::new(endpoint::<BIG>());
    for i in 0..n {
        let src = if chain && i > 0 { i as u32 + 1 } else { 1 };
        caps.mint(SlotId(src), SlotId(i as u32 + 2), Rights::ALL, Badge(0))
            .unwrap();
    }
    caps
}

fn lookup(c: &mut Criterion) {
    let caps = endpoint::<64>();
    c.bench_function("lookup", |b| {
        b.iter(|| {
            black_box(&caps)
                .lookup_as(black_box(SlotId(1)), ObjectKind::Endpoint, Rights::WRITE)
                .map(|cap| cap.object())
        })
    });
}

fn mint(c: &mut Criterion) {
    let caps: Small = endpoint::<64>();
    c.bench_function("mint", |b| {
        b.iter_batched_ref(
            || caps.clone(),
            |caps| caps.mint(SlotId(1), SlotId(2), Rights::READ, Badge(7)),
            BatchSize::SmallInput,
        )
    });
}

fn delete(c: &mut Criterion) {
    let mut caps: Small = endpoint::<64>();
    caps.mint(SlotId(1), SlotId(2), Rights::READ, Badge(7))
        .unwrap();
    c.bench_function("delete (leaf)", |b| {
        b.iter_batched_ref(
            || caps.clone(),
            |caps| caps.delete(SlotId(2), &mut DiscardEffects),
            BatchSize::SmallInput,
        )
    });
}

fn revoke(c: &mut Criterion) {
    let mut group = c.benchmark_group("revoke");
    for n in [1usize, 100, 10_000] {
        for chain in [false, true] {
            let shape = if chain { "chain" } else { "fan-out" };
            let prepared = with_descendants(n, chain);
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new(shape, n), &n, |b, _| {
                b.iter_batched_ref(
                    || prepared.clone(),
                    |caps| caps.revoke(SlotId(1), &mut DiscardEffects),
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, lookup, mint, delete, revoke);
criterion_main!(benches);
