//! CPU mappings of Frames: rights within the capability's, one mapping (CPU
//! or IO) per capability copy, and delete/revoke emit the unmap.

use caps::{ArrayStorage, Caps, Effect, Error, IommuUnit, NewObject, Rights, SlotId};

fn s(i: u32) -> SlotId {
    SlotId(i)
}

const VSPACE: u64 = 0x9000;

/// An Untyped in slot 0 and a read-write 4 KiB Frame in slot 1.
fn with_frame() -> Caps<ArrayStorage<16, 8>> {
    let mut caps = Caps::new(ArrayStorage::new());
    caps.boot_untyped(s(0), 0x10_0000, 16, false).unwrap();
    caps.retype(
        s(0),
        NewObject::Frame { size_bits: 12 },
        s(1),
        &mut caps::DiscardEffects,
    )
    .unwrap();
    caps
}

fn effects(
    f: impl FnOnce(&mut dyn FnMut(Effect)) -> Result<(), Error>,
) -> (Result<(), Error>, Vec<Effect>) {
    let mut out = Vec::new();
    let result = f(&mut |e| out.push(e));
    (result, out)
}

#[test]
fn map_emits_the_mapping_and_delete_the_unmap() {
    let mut caps = with_frame();
    let (result, mapped) =
        effects(|sink| caps.map_frame(s(1), VSPACE, 0x40_0000, Rights::READ_WRITE, sink));
    assert_eq!(result, Ok(()));
    assert_eq!(
        mapped,
        vec![Effect::MapCpuPage {
            vspace: VSPACE,
            vaddr: 0x40_0000,
            paddr: 0x10_0000,
            size_bits: 12,
            rights: Rights::READ_WRITE
        }]
    );
    let (result, deleted) = effects(|sink| caps.delete(s(1), sink));
    assert_eq!(result, Ok(()));
    assert!(
        deleted.contains(&Effect::UnmapCpuPage {
            vspace: VSPACE,
            vaddr: 0x40_0000,
            size_bits: 12
        }),
        "{deleted:?}"
    );
}

#[test]
fn revoking_the_untyped_unmaps_every_frame_in_it() {
    let mut caps = with_frame();
    caps.map_frame(
        s(1),
        VSPACE,
        0x40_0000,
        Rights::READ,
        &mut caps::DiscardEffects,
    )
    .unwrap();
    let (result, revoked) = effects(|sink| caps.revoke(s(0), sink));
    assert_eq!(result, Ok(()));
    assert!(
        revoked.iter().any(|e| matches!(
            e,
            Effect::UnmapCpuPage {
                vaddr: 0x40_0000,
                ..
            }
        )),
        "{revoked:?}"
    );
}

#[test]
fn rights_cannot_grow_and_write_only_is_refused() {
    let mut caps = with_frame();
    caps.mint(s(1), s(2), Rights::READ, caps::Badge(0)).unwrap();
    let mut none = caps::DiscardEffects;
    assert_eq!(
        caps.map_frame(s(2), VSPACE, 0x40_0000, Rights::READ_WRITE, &mut none),
        Err(Error::InsufficientRights)
    );
    assert_eq!(
        caps.map_frame(s(1), VSPACE, 0x40_0000, Rights::WRITE, &mut none),
        Err(Error::InvalidRights)
    );
    assert_eq!(
        caps.map_frame(s(1), VSPACE, 0x40_0800, Rights::READ, &mut none),
        Err(Error::InvalidAddress)
    );
    assert_eq!(caps.unmap_frame(s(1), &mut none), Err(Error::NotMapped));
}

#[test]
fn one_mapping_per_copy_cpu_or_io() {
    let mut caps: Caps<ArrayStorage<16, 8>> = Caps::new(ArrayStorage::new());
    let mut none = caps::DiscardEffects;
    caps.boot_untyped(s(0), 0x10_0000, 16, false).unwrap();
    let unit = IommuUnit {
        id: 0,
        pasid_bits: 0,
        domain_ids: 4,
        ipa_bits: 32,
        rid_limit: 8,
        reserved_ipa_base: 0xffff_0000,
        reserved_ipa_size: 0x1_0000,
    };
    caps.boot_iommu_control(s(5), unit).unwrap();
    caps.retype(s(0), NewObject::Frame { size_bits: 12 }, s(1), &mut none)
        .unwrap();
    caps.retype(s(0), NewObject::IoSpace { iommu: s(5) }, s(6), &mut none)
        .unwrap();
    caps.map_frame(s(1), VSPACE, 0x40_0000, Rights::READ, &mut none)
        .unwrap();
    assert_eq!(
        caps.map_frame(s(1), VSPACE, 0x50_0000, Rights::READ, &mut none),
        Err(Error::AlreadyMapped)
    );
    assert_eq!(
        caps.map_io(s(1), s(6), 0x1000, Rights::READ, &mut none),
        Err(Error::AlreadyMapped)
    );
    // A copy may hold the IO mapping while the original holds the CPU one.
    caps.copy(s(1), s(2)).unwrap();
    assert_eq!(
        caps.map_io(s(2), s(6), 0x1000, Rights::READ, &mut none),
        Ok(())
    );
    assert_eq!(caps.unmap_frame(s(1), &mut none), Ok(()));
    assert_eq!(caps.unmap_frame(s(1), &mut none), Err(Error::NotMapped));
}
