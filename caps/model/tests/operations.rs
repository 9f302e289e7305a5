//! Targeted tests of paths the bounded model and the random sequences reach
//! rarely or never: CNodes, several units, large frames, device memory,
//! effect ordering and batching, and the abstract IOMMU's reach query.

use caps::checker::hardware::AbstractIommu;
use caps::checker::invariants::check_all;
use caps::{
    ArrayStorage, Badge, Caps, Effect, Error, IommuUnit, NewObject, ObjectKind, Rights, SlotId,
};

fn unit(id: u8) -> IommuUnit {
    IommuUnit {
        id,
        pasid_bits: 4,
        domain_ids: 16,
        ipa_bits: 32,
        rid_limit: 8,
        reserved_ipa_base: 0xffff_0000,
        reserved_ipa_size: 0x1_0000,
    }
}

fn s(i: u32) -> SlotId {
    SlotId(i)
}

/// Run `f` with a sink that applies effects to `hw` and records them.
fn collect<T>(
    hw: &mut AbstractIommu,
    f: impl FnOnce(&mut dyn FnMut(Effect)) -> T,
) -> (T, Vec<Effect>) {
    let mut effects = Vec::new();
    let out = f(&mut |e| {
        effects.push(e);
        hw.apply(e);
    });
    (out, effects)
}

/// Boot an Untyped (slot 0) and unit 0 (slot 1), then retype a 4 KiB Frame
/// into slot 2 and `spaces` IoSpaces into slots 3, 4, ...
fn frame_and_spaces<const SLOTS: usize, const OBJECTS: usize>(
    spaces: u32,
) -> (Caps<ArrayStorage<SLOTS, OBJECTS>>, AbstractIommu) {
    let mut caps = Caps::new(ArrayStorage::new());
    let mut hw = AbstractIommu::default();
    caps.boot_untyped(s(0), 0x10000, 16, false).unwrap();
    caps.boot_iommu_control(s(1), unit(0)).unwrap();
    collect(&mut hw, |sink| {
        caps.retype(s(0), NewObject::Frame { size_bits: 12 }, s(2), sink)
            .unwrap();
        for space in 0..spaces {
            caps.retype(s(0), NewObject::IoSpace { iommu: s(1) }, s(3 + space), sink)
                .unwrap();
        }
    });
    (caps, hw)
}

#[test]
fn cnode_slots_resolve_and_a_full_cnode_cannot_die() {
    // 8 root slots; CNode memory from physical 0x20000 maps to slots 8...
    let mut caps: Caps<ArrayStorage<24, 8>> =
        Caps::new(ArrayStorage::with_cnode_memory(8, 0x20000));
    let mut sink = caps::DiscardEffects;
    caps.boot_untyped(s(0), 0x20000, 9, false).unwrap();
    caps.retype(s(0), NewObject::CNode { size_bits: 2 }, s(1), &mut sink)
        .unwrap();
    assert_eq!(caps.resolve(s(1), 0), Ok(s(8)));
    assert_eq!(caps.resolve(s(1), 3), Ok(s(11)));
    assert_eq!(caps.resolve(s(1), 4), Err(Error::InvalidSlot));
    assert_eq!(caps.resolve(s(0), 0), Err(Error::WrongKind));
    // Put a capability into the CNode.
    let inside = caps.resolve(s(1), 2).unwrap();
    caps.retype(s(0), NewObject::Endpoint, inside, &mut sink)
        .unwrap();
    let before = caps.clone();
    assert_eq!(caps.delete(s(1), &mut sink), Err(Error::CnodeNotEmpty));
    assert_eq!(caps.revoke(s(0), &mut sink), Err(Error::CnodeNotEmpty));
    assert_eq!(caps, before, "refused delete/revoke changed nothing");
    // A second copy keeps the CNode alive: deleting one copy is fine.
    caps.copy(s(1), s(2)).unwrap();
    assert_eq!(caps.delete(s(2), &mut sink), Ok(()));
    // Empty it, then it can go, and its memory is reused.
    caps.delete(inside, &mut sink).unwrap();
    caps.delete(s(1), &mut sink).unwrap();
    assert!(caps.objects()[1].is_none());
    let id = caps
        .retype(s(0), NewObject::Notification, s(1), &mut sink)
        .unwrap();
    assert_eq!(caps.object(id).unwrap().memory(), Some((0x20000, 5)));
    // CNode memory outside the window has no slots.
    let mut other: Caps<ArrayStorage<24, 8>> =
        Caps::new(ArrayStorage::with_cnode_memory(8, 0x20000));
    other.boot_untyped(s(0), 0x40000, 12, false).unwrap();
    assert_eq!(
        other.retype(s(0), NewObject::CNode { size_bits: 2 }, s(1), &mut sink),
        Err(Error::NoSlotMemory)
    );
    check_all(&caps, &AbstractIommu::default()).unwrap();
}

#[test]
fn objects_of_different_units_do_not_mix() {
    let mut caps: Caps<ArrayStorage<16, 16>> = Caps::new(ArrayStorage::new());
    let mut hw = AbstractIommu::default();
    caps.boot_untyped(s(0), 0x10000, 16, false).unwrap();
    caps.boot_iommu_control(s(1), unit(0)).unwrap();
    caps.boot_iommu_control(s(2), unit(1)).unwrap();
    let ((), _) = collect(&mut hw, |sink| {
        caps.retype(s(0), NewObject::IoSpace { iommu: s(1) }, s(3), sink)
            .unwrap();
        caps.retype(s(0), NewObject::IoSpace { iommu: s(2) }, s(4), sink)
            .unwrap();
    });
    caps.mint_device(s(2), 3, s(5)).unwrap();
    assert_eq!(caps.mint_device(s(2), 3, s(6)), Err(Error::DeviceInUse));
    assert_eq!(caps.mint_device(s(2), 8, s(6)), Err(Error::OutOfScope));
    // The same requester id on another unit is another device.
    caps.mint_device(s(1), 3, s(6)).unwrap();
    let (r, effects) = collect(&mut hw, |sink| caps.attach_device(s(5), s(3), sink));
    assert_eq!((r, effects.len()), (Err(Error::WrongUnit), 0));
    let (r, _) = collect(&mut hw, |sink| caps.attach_device(s(5), s(4), sink));
    assert_eq!(r, Ok(()));
    // Both units may use DID 0: tags are unique per unit.
    check_all(&caps, &hw).unwrap();
}

#[test]
fn unmap_clears_then_invalidates_then_waits() {
    let (mut caps, mut hw) = frame_and_spaces::<16, 16>(1);
    caps.mint_device(s(1), 1, s(4)).unwrap();
    let paddr = caps
        .object(caps.lookup(s(2)).unwrap().object())
        .unwrap()
        .memory()
        .unwrap()
        .0;
    collect(&mut hw, |sink| {
        caps.map_io(s(2), s(3), 0x4000, Rights::READ, sink).unwrap();
        caps.attach_device(s(4), s(3), sink).unwrap();
    });
    assert!(hw.can_reach(0, 1, None, paddr + 8, Rights::READ));
    assert!(!hw.can_reach(0, 1, None, paddr + 8, Rights::WRITE));
    assert!(!hw.can_reach(0, 2, None, paddr + 8, Rights::READ));
    let ((), effects) = collect(&mut hw, |sink| caps.unmap_io(s(2), sink).unwrap());
    let space = caps.lookup(s(3)).unwrap().object();
    assert_eq!(
        effects,
        vec![
            Effect::UnmapIoPage {
                unit: 0,
                did: 0,
                space,
                ipa: 0x4000,
                size_bits: 12
            },
            Effect::InvalidateDomain { unit: 0, did: 0 },
            Effect::WaitForInvalidation { unit: 0 },
        ]
    );
    assert!(!hw.can_reach(0, 1, None, paddr + 8, Rights::READ));
    check_all(&caps, &hw).unwrap();
}

#[test]
fn revoke_of_many_domains_batches_invalidations_and_always_waits() {
    // Ten IoSpaces, each with a mapped frame and an attached device: revoking
    // the Untyped tears down ten domains (more than one batch of eight).
    let mut caps: Caps<ArrayStorage<40, 40>> = Caps::new(ArrayStorage::new());
    let mut hw = AbstractIommu::default();
    caps.boot_untyped(s(0), 0x100000, 20, false).unwrap();
    caps.boot_iommu_control(s(1), unit(0)).unwrap();
    for i in 0..10u32 {
        collect(&mut hw, |sink| {
            caps.retype(s(0), NewObject::IoSpace { iommu: s(1) }, s(2 + i), sink)
                .unwrap();
            caps.retype(s(0), NewObject::Frame { size_bits: 12 }, s(12 + i), sink)
                .unwrap();
            caps.map_io(s(12 + i), s(2 + i), 0x1000, Rights::READ_WRITE, sink)
                .unwrap();
        });
        caps.mint_device(s(1), i % 8, s(22 + i)).ok();
    }
    for i in 0..8u32 {
        collect(&mut hw, |sink| {
            caps.attach_device(s(22 + i), s(2 + i), sink).unwrap()
        });
    }
    assert_eq!(hw.valid_now().len(), 8);
    let ((), effects) = collect(&mut hw, |sink| caps.revoke(s(0), sink).unwrap());
    let invalidations = effects
        .iter()
        .filter(|e| matches!(e, Effect::InvalidateDomain { .. }))
        .count();
    assert_eq!(invalidations, 10, "one invalidation per domain");
    let last_invalidate = effects
        .iter()
        .rposition(|e| matches!(e, Effect::InvalidateDomain { .. }));
    let last_wait = effects
        .iter()
        .rposition(|e| matches!(e, Effect::WaitForInvalidation { .. }));
    assert!(
        last_wait > last_invalidate,
        "the last invalidation is waited for"
    );
    assert!(hw.valid_now().is_empty() && hw.cache.is_empty());
    // Devices survive (they are children of the IommuControl) but are blocked.
    assert!(hw.devices.is_empty());
    check_all(&caps, &hw).unwrap();
    // The Untyped is whole again.
    let id = caps
        .retype(
            s(0),
            NewObject::Untyped { size_bits: 20 },
            s(2),
            &mut caps::DiscardEffects,
        )
        .unwrap();
    assert_eq!(caps.object(id).unwrap().memory(), Some((0x100000, 20)));
}

#[test]
fn large_frames_need_large_alignment() {
    let mut caps: Caps<ArrayStorage<8, 8>> = Caps::new(ArrayStorage::new());
    let mut hw = AbstractIommu::default();
    caps.boot_untyped(s(0), 0x40_0000, 22, false).unwrap();
    caps.boot_iommu_control(s(1), unit(0)).unwrap();
    collect(&mut hw, |sink| {
        caps.retype(s(0), NewObject::IoSpace { iommu: s(1) }, s(2), sink)
            .unwrap();
        // The 2 MiB frame skips the rest of the first 2 MiB.
        let id = caps
            .retype(s(0), NewObject::Frame { size_bits: 21 }, s(3), sink)
            .unwrap();
        assert_eq!(caps.object(id).unwrap().memory(), Some((0x60_0000, 21)));
        assert_eq!(
            caps.retype(s(0), NewObject::Frame { size_bits: 12 }, s(4), sink),
            Err(Error::UntypedExhausted)
        );
        assert_eq!(
            caps.map_io(s(3), s(2), 0x1000, Rights::READ, sink),
            Err(Error::InvalidAddress)
        );
        assert_eq!(
            caps.map_io(s(3), s(2), 0xffe0_0000, Rights::READ, sink),
            Err(Error::InvalidAddress),
            "overlaps the reserved window"
        );
        caps.map_io(s(3), s(2), 0x20_0000, Rights::READ, sink)
            .unwrap();
    });
    check_all(&caps, &hw).unwrap();
}

#[test]
fn device_memory_only_becomes_frames_and_is_not_cleared() {
    let mut caps: Caps<ArrayStorage<8, 8>> = Caps::new(ArrayStorage::new());
    caps.boot_untyped(s(0), 0xfe00_0000, 16, true).unwrap();
    let mut effects = Vec::new();
    assert_eq!(
        caps.retype(s(0), NewObject::Endpoint, s(1), &mut |e| effects.push(e)),
        Err(Error::DeviceMemory)
    );
    caps.retype(s(0), NewObject::Frame { size_bits: 12 }, s(1), &mut |e| {
        effects.push(e)
    })
    .unwrap();
    caps.retype(s(0), NewObject::Untyped { size_bits: 12 }, s(2), &mut |e| {
        effects.push(e)
    })
    .unwrap();
    assert_eq!(
        caps.retype(s(2), NewObject::Tcb, s(3), &mut |e| effects.push(e)),
        Err(Error::DeviceMemory)
    );
    assert!(effects.is_empty(), "device memory is never zeroed");
    // Boot rejects misaligned or wrapping regions.
    assert_eq!(
        caps.boot_untyped(s(4), 0x1000, 16, false),
        Err(Error::InvalidAddress)
    );
    assert_eq!(
        caps.boot_untyped(s(4), u64::MAX - 0xfff, 12, false),
        Err(Error::InvalidAddress)
    );
    assert_eq!(
        caps.boot_untyped(s(4), 0, 3, false),
        Err(Error::InvalidSize)
    );
}

#[test]
fn badges_and_rights_on_mint() {
    let mut caps: Caps<ArrayStorage<8, 8>> = Caps::new(ArrayStorage::new());
    caps.boot_untyped(s(0), 0x10000, 12, false).unwrap();
    caps.retype(s(0), NewObject::Endpoint, s(1), &mut caps::DiscardEffects)
        .unwrap();
    caps.mint(s(1), s(2), Rights::READ | Rights::GRANT, Badge(9))
        .unwrap();
    let minted = *caps.lookup(s(2)).unwrap();
    assert_eq!(
        (minted.rights(), minted.badge()),
        (Rights::READ | Rights::GRANT, Badge(9))
    );
    assert_eq!(
        caps.mint(s(2), s(3), Rights::ALL, Badge(4)),
        Err(Error::AlreadyBadged)
    );
    caps.mint(s(2), s(3), Rights::ALL, Badge(0)).unwrap();
    let again = *caps.lookup(s(3)).unwrap();
    assert_eq!(
        (again.rights(), again.badge()),
        (Rights::READ | Rights::GRANT, Badge(9))
    );
    assert_eq!(
        caps.mint(s(0), s(4), Rights::ALL, Badge(1)),
        Err(Error::NotBadgeable)
    );
    assert_eq!(
        caps.lookup_as(s(3), ObjectKind::Endpoint, Rights::WRITE)
            .map(|c| c.object()),
        Err(Error::InsufficientRights)
    );
    // Move keeps the place in the tree: revoking the original removes both.
    caps.move_cap(s(3), s(5)).unwrap();
    caps.revoke(s(1), &mut caps::DiscardEffects).unwrap();
    assert!(caps.lookup(s(2)).is_err() && caps.lookup(s(5)).is_err());
    assert_eq!(
        caps.lookup(s(8)).map(|c| c.object()),
        Err(Error::InvalidSlot)
    );
}

#[test]
fn borrowed_storage_works_like_owned() {
    // The kernel lends its tables for one invocation at a time.
    let mut tables: ArrayStorage<8, 8> = ArrayStorage::new();
    {
        let mut caps = Caps::new(&mut tables);
        caps.boot_untyped(s(0), 0x10000, 12, false).unwrap();
        caps.retype(s(0), NewObject::Endpoint, s(1), &mut caps::DiscardEffects)
            .unwrap();
    }
    let mut caps = Caps::new(&mut tables);
    caps.copy(s(1), s(2)).unwrap();
    assert_eq!(caps.revoke(s(1), &mut caps::DiscardEffects), Ok(()));
    assert_eq!(caps.lookup(s(2)).map(|c| c.kind()), Err(Error::EmptySlot));
    assert_eq!(
        caps.lookup(s(1)).map(|c| c.kind()),
        Ok(ObjectKind::Endpoint)
    );
}

type Small = Caps<ArrayStorage<24, 16>>;
/// One step of a test: an operation on the capabilities, given a sink.
type Operation<'a> = dyn Fn(&mut Small, &mut dyn FnMut(Effect)) + 'a;

#[test]
fn io_mapping_index_follows_map_move_unmap_and_teardown() {
    // Copies of one frame mapped in two IoSpaces, in no particular slot
    // order, one moved after mapping: the overlap check still sees every
    // mapping of its space (and only those), and deleting a space unmaps its
    // frames in slot order, as a scan of the slot table would.
    let (mut caps, mut hw): (Small, _) = frame_and_spaces(2);
    for copy in [5, 8, 10, 12, 15] {
        caps.mint(s(2), s(copy), Rights::ALL, Badge(0)).unwrap();
    }
    let mut step = |caps: &mut Small, op: &Operation<'_>| {
        let ((), effects) = collect(&mut hw, |sink| op(caps, sink));
        check_all(caps, &hw).unwrap();
        effects
    };
    for (frame, space, ipa) in [
        (10, 3, 0x3000),
        (15, 4, 0x1000),
        (5, 3, 0x1000),
        (12, 3, 0x2000),
    ] {
        step(&mut caps, &|c, sink| {
            c.map_io(s(frame), s(space), ipa, Rights::READ, sink)
                .unwrap()
        });
    }
    // Move the mapping held in slot 12 below the others, and the one in
    // slot 5 above them.
    step(&mut caps, &|c, _| c.move_cap(s(12), s(6)).unwrap());
    step(&mut caps, &|c, _| c.move_cap(s(5), s(20)).unwrap());
    let before = caps.clone();
    for (ipa, result) in [
        (0x1000, Err(Error::AddressInUse)),
        (0x2000, Err(Error::AddressInUse)),
        (0x3000, Err(Error::AddressInUse)),
    ] {
        let mut effects = 0;
        assert_eq!(
            caps.map_io(s(8), s(3), ipa, Rights::READ, &mut |_| effects += 1),
            result
        );
        assert_eq!((effects, &caps), (0, &before));
    }
    // 0x2000 is free in the other space.
    step(&mut caps, &|c, sink| {
        c.map_io(s(8), s(4), 0x2000, Rights::READ, sink).unwrap()
    });
    // Unmap the middle one of space 3 (slot 10), map it again elsewhere.
    step(&mut caps, &|c, sink| c.unmap_io(s(10), sink).unwrap());
    step(&mut caps, &|c, sink| {
        c.map_io(s(10), s(3), 0x4000, Rights::READ, sink).unwrap()
    });
    let space = caps.lookup(s(3)).unwrap().object();
    let effects = step(&mut caps, &|c, sink| c.delete(s(3), sink).unwrap());
    let unmapped: Vec<u64> = effects
        .iter()
        .filter_map(|e| match *e {
            Effect::UnmapIoPage { space: sp, ipa, .. } if sp == space => Some(ipa),
            _ => None,
        })
        .collect();
    // Slot order: 6 (0x2000), 10 (0x4000), 20 (0x1000).
    assert_eq!(unmapped, vec![0x2000, 0x4000, 0x1000]);
    for slot in [6, 10, 20] {
        assert_eq!(caps.lookup(s(slot)).unwrap().mapping(), None);
    }
    assert!(caps.lookup(s(15)).unwrap().mapping().is_some());
    assert!(caps.lookup(s(8)).unwrap().mapping().is_some());
}

#[test]
fn derivation_order_is_pre_order_and_survives_deleting_an_inner_node() {
    let (mut caps, mut hw) = frame_and_spaces::<16, 8>(0);
    // Tree: 0 Untyped -> 2 Frame -> {5 copy -> 7 copy, 6 copy}; 1 IommuControl.
    caps.copy(s(2), s(5)).unwrap();
    caps.copy(s(2), s(6)).unwrap();
    caps.copy(s(5), s(7)).unwrap();
    let order = |caps: &Caps<ArrayStorage<16, 8>>| -> Vec<(u32, u32)> {
        caps.derivation_order()
            .map(|(slot, depth, _)| (slot.0, depth))
            .collect()
    };
    // A child is inserted right after its parent, so 6 (copied last from 2)
    // comes before 5's subtree.
    assert_eq!(
        order(&caps),
        vec![(0, 0), (2, 1), (6, 2), (5, 2), (7, 3), (1, 0)]
    );
    // Deleting the inner node 5 lifts 7 to depth 2, under 2; then the leaf 6.
    collect(&mut hw, |sink| caps.delete(s(5), sink).unwrap());
    collect(&mut hw, |sink| caps.delete(s(6), sink).unwrap());
    assert_eq!(order(&caps), vec![(0, 0), (2, 1), (7, 2), (1, 0)]);
    check_all(&caps, &hw).unwrap();
}

#[test]
fn the_console_is_permanent_and_its_rights_only_shrink() {
    let mut caps = Caps::new(ArrayStorage::<8, 8>::new());
    let console = caps.boot_console(s(0)).unwrap();
    assert_eq!(caps.lookup(s(0)).unwrap().kind(), ObjectKind::Console);
    assert_eq!(caps.lookup(s(0)).unwrap().rights(), Rights::ALL);
    // A domain's copy: write (print) only, no grant (halt) right, no badge.
    caps.mint(s(0), s(1), Rights::WRITE, Badge(0)).unwrap();
    let write_only = *caps.lookup(s(1)).unwrap();
    assert_eq!(write_only.rights(), Rights::WRITE);
    assert_eq!(
        caps.lookup_as(s(1), ObjectKind::Console, Rights::WRITE | Rights::GRANT)
            .map(|c| c.object()),
        Err(Error::InsufficientRights)
    );
    // Rights never grow back through a copy of the reduced one.
    caps.mint(s(1), s(2), Rights::ALL, Badge(0)).unwrap();
    assert_eq!(caps.lookup(s(2)).unwrap().rights(), Rights::WRITE);
    assert_eq!(
        caps.mint(s(0), s(3), Rights::ALL, Badge(7)),
        Err(Error::NotBadgeable)
    );
    // Deleting every capability leaves the object (permanent, like the
    // IrqControl): nothing to tear down, nothing to reuse.
    let mut effects = Vec::new();
    caps.revoke(s(0), &mut |e| effects.push(e)).unwrap();
    caps.delete(s(0), &mut |e| effects.push(e)).unwrap();
    assert!(effects.is_empty());
    assert!(caps.object(console).is_some());
    check_all(&caps, &AbstractIommu::default()).unwrap();
}

/// One reported removal: the capability's kind, whether its object died.
type Removal = (ObjectKind, bool);

/// Records what a delete or revoke reports removing.
#[derive(Default)]
struct Removals(Vec<Removal>);

impl caps::EffectSink for Removals {
    fn push(&mut self, _effect: Effect) {}
    fn capability_removed(&mut self, kind: ObjectKind, destroyed: bool) {
        self.0.push((kind, destroyed));
    }
}

#[test]
fn delete_and_revoke_report_each_removal_and_each_death() {
    let (mut caps, _) = frame_and_spaces::<16, 8>(1);
    let frame = caps.lookup(s(2)).unwrap().object();
    caps.mint(s(2), s(5), Rights::ALL, Badge(0)).unwrap();
    caps.mint(s(2), s(6), Rights::ALL, Badge(0)).unwrap();
    let (frame_copy, frame_dies, space_dies) = (
        (ObjectKind::Frame, false),
        (ObjectKind::Frame, true),
        (ObjectKind::IoSpace, true),
    );
    // (revoke?, slot, what is reported): an empty slot reports nothing; a
    // copy goes, the Frame lives on; a revoke reports each copy; the last
    // capability's Frame dies; revoking the Untyped destroys the IoSpace.
    let steps: [(bool, u32, &[Removal]); 5] = [
        (false, 9, &[]),
        (false, 5, &[frame_copy]),
        (true, 2, &[frame_copy]),
        (false, 2, &[frame_dies]),
        (true, 0, &[space_dies]),
    ];
    for (step, (revoke, slot, expected)) in steps.into_iter().enumerate() {
        let mut sink = Removals::default();
        if revoke {
            caps.revoke(s(slot), &mut sink).unwrap();
        } else {
            caps.delete(s(slot), &mut sink).unwrap();
        }
        assert_eq!(sink.0, expected, "slot {slot}, revoke {revoke}");
        assert_eq!(
            caps.object(frame).is_some(),
            step < 3,
            "the Frame lives until its last capability goes"
        );
    }
}
