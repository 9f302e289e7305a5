//! Failing closed on VT-d (kernel README, "Fail closed"): when the IOTLB
//! invalidation after an unmap is refused (FSTS.IQE) or never completes (a
//! wedged invalidation queue), the devices that may still translate
//! through the stale entry get not-present context or PASID entries;
//! devices of other IoSpaces keep translating. VT-d has no way to stop
//! all DMA short of turning translation off (which passes DMA through),
//! so with a wedged queue the cleared entries hold only once the unit
//! processes invalidations again: the tests show both sides.

use super::common::{MIB, map_space_pages};
use crate::PollLimit;
use crate::attachments::{Attachment, Attachments, Exposed, Share};
use crate::model::vtd::Request;
use crate::model::vtd_device::{QEMU_CAP, QEMU_ECAP, SimVtd};
use crate::model::{Access, SimFrames, SimMemory};
use crate::pagetable::PageTable;
use crate::vtd::qi::{Descriptor, IotlbScope};
use crate::vtd::regs::RootTableMode;
use crate::vtd::tables::{LegacyContext, PasidConfig, SecondStageFormat, SecondStageLevels};
use crate::vtd::{VtdError, VtdUnit};

/// QEMU `x-scalable-mode=on`: second stage only.
const SCALABLE_ECAP: u64 = QEMU_ECAP | 1 << 43 | 1 << 46 | 1 << 31;

/// Space 1 (DID 2) has devices 0x10 and 0x11, space 2 (DID 3) device
/// 0x18; each maps IPA 0..16 KiB. Every device has read page 0, so the
/// IOTLB holds it.
struct Setup<'m> {
    device: &'m SimVtd<'m>,
    unit: VtdUnit<&'m SimVtd<'m>>,
    frames: SimFrames<'m>,
    attachments: Attachments<u32, 8>,
    space1: PageTable<SecondStageFormat>,
}

const SPACE1_DEVICES: [u16; 2] = [0x10, 0x11];
const SPACE2_DEVICE: u16 = 0x18;
const SPACE1_DID: u16 = 2;

fn read(source_id: u16, address: u64) -> Request {
    Request {
        source_id,
        pasid: None,
        address,
        access: Access::Read,
    }
}

fn setup<'m>(memory: &'m SimMemory, device: &'m SimVtd<'m>, mode: RootTableMode) -> Setup<'m> {
    let mut frames = SimFrames::new(memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(device).with_poll_limit(PollLimit(1000));
    unit.block_all_dma(memory, &mut frames, mode).unwrap();
    let mut attachments = Attachments::new(Share {
        attachments: 4,
        nests: 2,
    });
    let levels = SecondStageLevels::Four;
    let format = SecondStageFormat::for_unit(unit.capability());
    let mut tables = [None; 2];
    for (space, devices) in [(1u32, &SPACE1_DEVICES[..]), (2, &[SPACE2_DEVICE][..])] {
        let table =
            PageTable::new(&mut frames, format, levels.height(), levels.input_bits()).unwrap();
        map_space_pages(&table, memory, &mut frames, space);
        let domain = space as u16 + 1;
        for &requester in devices {
            attachments.admit(space, false).unwrap();
            match mode {
                RootTableMode::Legacy => {
                    let context = LegacyContext::Translated {
                        domain,
                        table: table.root(),
                        levels,
                    };
                    unit.set_legacy_context(memory, &mut frames, requester, Some(context))
                }
                RootTableMode::Scalable => {
                    let config = PasidConfig::SecondStage {
                        domain,
                        table: table.root(),
                        levels,
                    };
                    unit.set_pasid_entry(memory, &mut frames, requester, 0, Some(config))
                }
            }
            .unwrap();
            attachments
                .insert(Attachment {
                    requester,
                    pasid: None,
                    space,
                    nest: None,
                    blocked: false,
                })
                .unwrap();
            assert!(device.dma(read(requester, 0x10)).is_ok());
        }
        tables[space as usize - 1] = Some(table);
    }
    assert!(device.cached_translations() > 0);
    Setup {
        device,
        unit,
        frames,
        attachments,
        space1: tables[0].unwrap(),
    }
}

/// Unmaps page 0 of space 1 and invalidates its DID the way the kernel
/// does (`io_space::State::invalidate_pending`: a domain-selective IOTLB
/// invalidation, then on failure `VtdUnit::fail_closed` for the
/// IoSpace). Returns the invalidation's error and whether the blocking
/// was confirmed.
fn unmap_and_invalidate(memory: &SimMemory, s: &mut Setup<'_>) -> (Result<(), VtdError>, bool) {
    s.space1.unmap(memory, 0).unwrap();
    let invalidated = s.unit.submit(
        memory,
        [Descriptor::iotlb(IotlbScope::Domain(SPACE1_DID), false)],
    );
    if invalidated.is_ok() {
        return (invalidated, true);
    }
    let confirmed = s.unit.fail_closed(
        memory,
        &mut s.frames,
        &mut s.attachments,
        Exposed::Spaces(&[1]),
    );
    (invalidated, confirmed)
}

fn blocked(s: &Setup<'_>) -> std::vec::Vec<u16> {
    s.attachments
        .iter()
        .filter(|a| a.blocked)
        .map(|a| a.requester)
        .collect()
}

#[test]
fn a_refused_invalidation_blocks_the_spaces_devices() {
    for (mode, ecap) in [
        (RootTableMode::Legacy, QEMU_ECAP),
        (RootTableMode::Scalable, SCALABLE_ECAP),
    ] {
        let memory = SimMemory::new(256 * MIB);
        let device = SimVtd::new(&memory, QEMU_CAP, ecap, true);
        let mut s = setup(&memory, &device, mode);
        s.device.reject_descriptors.set(1);
        let (result, confirmed) = unmap_and_invalidate(&memory, &mut s);
        assert!(
            matches!(result, Err(VtdError::InvalidationQueueError { .. })),
            "{mode:?}: {result:?}"
        );
        assert!(confirmed, "{mode:?}: the blocking entries were confirmed");
        for requester in SPACE1_DEVICES {
            let outcome = s.device.dma(read(requester, 0x10));
            assert!(
                outcome.is_err(),
                "{mode:?}: device {requester:#x} still reaches the unmapped page: {outcome:?}"
            );
        }
        // Space 2 was not covered by the failed invalidation: it still works.
        assert_eq!(
            s.device.dma(read(SPACE2_DEVICE, 0x10)),
            Ok(128 * MIB + 0x10),
            "{mode:?}"
        );
        assert_eq!(blocked(&s), SPACE1_DEVICES, "{mode:?}");
    }
}

#[test]
fn a_wedged_queue_leaves_entries_cleared_but_unconfirmed() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::qemu_default(&memory);
    let mut s = setup(&memory, &device, RootTableMode::Legacy);
    s.device.stall_queue.set(true);
    let (result, confirmed) = unmap_and_invalidate(&memory, &mut s);
    assert!(
        matches!(result, Err(VtdError::Timeout { .. })),
        "{result:?}"
    );
    assert!(!confirmed, "a wedged queue confirms nothing");
    assert_eq!(blocked(&s), SPACE1_DEVICES);
    // The entries in memory are not present: a walk faults.
    let model = s.device.model().unwrap();
    for requester in SPACE1_DEVICES {
        assert!(model.translate(&memory, read(requester, 0x10)).is_err());
    }
    // The documented limit: what the unit cached before it wedged may
    // still be used (VT-d offers no abort short of translation off).
    assert_eq!(
        s.device.dma(read(SPACE1_DEVICES[0], 0x10)),
        Ok(64 * MIB + 0x10)
    );
    // Once the unit processes its queue again, the queued clears take
    // effect with the next invalidation.
    s.device.stall_queue.set(false);
    s.unit.invalidate_all(&memory).unwrap();
    for requester in SPACE1_DEVICES {
        assert!(s.device.dma(read(requester, 0x10)).is_err());
    }
    assert_eq!(
        s.device.dma(read(SPACE2_DEVICE, 0x10)),
        Ok(128 * MIB + 0x10)
    );
}

#[test]
fn without_failing_closed_the_stale_entry_is_used() {
    // What the kernel would do without `fail_closed`: report and go on.
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::qemu_default(&memory);
    let mut s = setup(&memory, &device, RootTableMode::Legacy);
    s.device.reject_descriptors.set(1);
    s.space1.unmap(&memory, 0).unwrap();
    let invalidated = s.unit.submit(
        &memory,
        [Descriptor::iotlb(IotlbScope::Domain(SPACE1_DID), false)],
    );
    assert!(invalidated.is_err());
    assert_eq!(
        s.device.dma(read(SPACE1_DEVICES[0], 0x10)),
        Ok(64 * MIB + 0x10)
    );
}
