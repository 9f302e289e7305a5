//! Failing closed on SMMUv3 (kernel README, "Fail closed"): when the
//! invalidation after an unmap fails (CERROR_ILL) or times out (a wedged
//! command queue), the devices that may still translate through the stale
//! entry are blocked, devices of other IoSpaces keep working where the
//! unit still answers, and a unit that answers nothing stops all DMA.

use super::common::{MIB, map_space_pages};
use crate::PollLimit;
use crate::attachments::{Attachment, Attachments, Exposed, Share};
use crate::model::smmu::{Outcome, SmmuRequest};
use crate::model::smmu_device::SimSmmu;
use crate::model::{Access, SimFrames, SimMemory};
use crate::pagetable::PageTable;
use crate::smmuv3::pagetable::{Stage2Format, levels_4k};
use crate::smmuv3::queue::{Command, opcode};
use crate::smmuv3::ste::Stage2Config;
use crate::smmuv3::{BlockPolicy, Smmu, SmmuError};

/// Space 1 (VMID 2) has devices 0x10 and 0x11, space 2 (VMID 3) device
/// 0x18; each maps IPA 0..16 KiB. Every device has read page 0, so the
/// TLB holds it.
struct Setup<'m> {
    device: &'m SimSmmu<'m>,
    smmu: Smmu<&'m SimSmmu<'m>>,
    frames: SimFrames<'m>,
    attachments: Attachments<u32, 8>,
    space1: PageTable<Stage2Format>,
}

const SPACE1_DEVICES: [u16; 2] = [0x10, 0x11];
const SPACE2_DEVICE: u16 = 0x18;

fn read(stream_id: u16, address: u64) -> SmmuRequest {
    SmmuRequest {
        stream_id: u32::from(stream_id),
        substream_id: None,
        address,
        access: Access::Read,
    }
}

fn setup<'m>(memory: &'m SimMemory, device: &'m SimSmmu<'m>) -> Setup<'m> {
    let mut frames = SimFrames::new(memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(device).with_poll_limit(PollLimit(1000));
    smmu.block_all_dma(memory, &mut frames, BlockPolicy::RecordFault, 0..256)
        .unwrap();
    let mut attachments = Attachments::new(Share {
        attachments: 4,
        nests: 2,
    });
    let mut tables = [None; 2];
    for (space, devices) in [(1u32, &SPACE1_DEVICES[..]), (2, &[SPACE2_DEVICE][..])] {
        let format = Stage2Format::for_unit(smmu.features());
        let table = PageTable::new(&mut frames, format, levels_4k(40), 40).unwrap();
        map_space_pages(&table, memory, &mut frames, space);
        let config = Stage2Config {
            vmid: space as u16 + 1,
            table: table.root(),
            ipa_bits: 40,
            output_bits: 44,
        };
        for &requester in devices {
            attachments.admit(space, false).unwrap();
            smmu.attach_stage2(memory, &mut frames, u32::from(requester), &config)
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
            assert!(matches!(
                device.dma(read(requester, 0x10)),
                Outcome::Translated(_)
            ));
        }
        tables[space as usize - 1] = Some(table);
    }
    Setup {
        device,
        smmu,
        frames,
        attachments,
        space1: tables[0].unwrap(),
    }
}

/// Unmaps page 0 of space 1 and invalidates VMID 2 the way the kernel
/// does (`invalidate_or_block`).
fn unmap_and_invalidate(memory: &SimMemory, s: &mut Setup<'_>) -> Result<(), SmmuError> {
    s.space1.unmap(memory, 0).unwrap();
    s.smmu.invalidate_or_block(
        memory,
        &mut s.frames,
        [Command::TlbiS12Vmall { vmid: 2 }],
        &mut s.attachments,
        Exposed::Spaces(&[1]),
    )
}

#[test]
fn a_failed_invalidation_blocks_the_spaces_devices() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut s = setup(&memory, &device);
    s.device.reject_opcode.set(Some(opcode::TLBI_S12_VMALL));
    let result = unmap_and_invalidate(&memory, &mut s);
    assert!(
        matches!(result, Err(SmmuError::CommandError { opcode: o, .. }) if o == opcode::TLBI_S12_VMALL),
        "{result:?}"
    );
    for requester in SPACE1_DEVICES {
        let outcome = s.device.dma(read(requester, 0x10));
        assert!(
            !matches!(outcome, Outcome::Translated(_)),
            "device {requester:#x} still reaches the unmapped page: {outcome:?}"
        );
    }
    // Space 2 was not covered by the failed command: it still works.
    assert_eq!(
        s.device.dma(read(SPACE2_DEVICE, 0x10)),
        Outcome::Translated(128 * MIB + 0x10)
    );
    let blocked: std::vec::Vec<u16> = s
        .attachments
        .iter()
        .filter(|a| a.blocked)
        .map(|a| a.requester)
        .collect();
    assert_eq!(blocked, SPACE1_DEVICES);
}

#[test]
fn a_timed_out_invalidation_stops_all_dma() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut s = setup(&memory, &device);
    s.device.stall_commands.set(true);
    let result = unmap_and_invalidate(&memory, &mut s);
    assert!(
        matches!(result, Err(SmmuError::Timeout { .. })),
        "{result:?}"
    );
    // The blocking STEs could not be invalidated either: nothing passes.
    for requester in SPACE1_DEVICES.into_iter().chain([SPACE2_DEVICE]) {
        let outcome = s.device.dma(read(requester, 0x10));
        assert_eq!(outcome, Outcome::Aborted, "device {requester:#x}");
    }
}

#[test]
fn without_failing_closed_the_stale_entry_is_used() {
    // What the kernel did before: print the error and go on.
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut s = setup(&memory, &device);
    s.device.reject_opcode.set(Some(opcode::TLBI_S12_VMALL));
    s.space1.unmap(&memory, 0).unwrap();
    assert!(
        s.smmu
            .submit(&memory, [Command::TlbiS12Vmall { vmid: 2 }])
            .is_err()
    );
    assert_eq!(
        s.device.dma(read(SPACE1_DEVICES[0], 0x10)),
        Outcome::Translated(64 * MIB + 0x10)
    );
}
