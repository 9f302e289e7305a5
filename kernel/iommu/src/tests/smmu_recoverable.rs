//! SMMUv3 SubstreamID-tagged DMA, page requests (PRI queue, CMD_PRI_RESP),
//! stalls (CMD_RESUME) and stage-2 dirty tracking (HTTU, DBM), driver
//! against the model "per spec"; and the QEMU configuration, where every
//! one of them is refused.

use super::common::MIB;
use crate::model::smmu::SmmuRequest;
use crate::model::smmu_device::SimSmmu;
use crate::model::{Access, DeviceError, DeviceOutcome, SimFrames, SimMemory};
use crate::pagetable::{PageSize, PageTable, Perms};
use crate::smmuv3::cd::{Cd, CdError, CdParams, DEFAULT_MAIR};
use crate::smmuv3::pagetable::{Stage1Format, Stage2Format, levels_4k};
use crate::smmuv3::queue::{Command, EventKind, PriResponse, ResumeAction};
use crate::smmuv3::regs::Features;
use crate::smmuv3::ste::{Stage2Config, Ste, SteError};
use crate::smmuv3::{BlockPolicy, Smmu, SmmuError};
use crate::{FrameAllocator, PhysMem};

const SID: u32 = 0x10;
const VMID: u16 = 3;

fn request(substream_id: Option<u32>, address: u64, access: Access) -> SmmuRequest {
    SmmuRequest {
        stream_id: SID,
        substream_id,
        address,
        access,
    }
}

fn stage1_table(frames: &mut SimFrames) -> PageTable<Stage1Format> {
    PageTable::new(frames, Stage1Format, levels_4k(48), 48).unwrap()
}

fn map(
    table: &PageTable<Stage1Format>,
    memory: &SimMemory,
    frames: &mut SimFrames,
    iova: u64,
    pa: u64,
) {
    table
        .map(
            memory,
            frames,
            iova,
            pa,
            PageSize::Size4K,
            Perms::READ_WRITE,
        )
        .unwrap();
}

fn cd(asid: u16, root: u64, features: &Features) -> Cd {
    let params = CdParams {
        asid,
        ttb0: root,
        va_bits: 48,
        output_bits: 44,
        mair: DEFAULT_MAIR,
    };
    Cd::new(&params, features).unwrap()
}

/// The per-spec SMMU with PRI on; SID's stage-1-only STE has 4 CDs:
/// CD 0 (ASID 10, page 0x1000 -> 0x300_0000) for transactions without a
/// SubstreamID (S1DSS=`dss`), SSID 1 (ASID 11, 0x1000 -> 0x100_0000),
/// SSID 2 (ASID 12, empty; with CD.S when `stall`).
struct Setup<'m> {
    smmu: Smmu<&'m SimSmmu<'m>>,
    frames: SimFrames<'m>,
    empty: PageTable<Stage1Format>,
}

fn setup<'m>(memory: &'m SimMemory, device: &'m SimSmmu<'m>, dss: u64, stall: bool) -> Setup<'m> {
    let mut frames = SimFrames::new(memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(device);
    smmu.block_all_dma(memory, &mut frames, BlockPolicy::RecordFault, 0..64)
        .unwrap();
    smmu.enable_page_requests(memory, &mut frames).unwrap();
    let features = *smmu.features();
    let cd_table = frames.alloc_zeroed_frame().unwrap();
    let zero = stage1_table(&mut frames);
    map(&zero, memory, &mut frames, 0x1000, 0x300_0000);
    let first = stage1_table(&mut frames);
    map(&first, memory, &mut frames, 0x1000, 0x100_0000);
    let empty = stage1_table(&mut frames);
    let mut second = cd(12, empty.root(), &features);
    if stall {
        second = second.with_stall(&features).unwrap();
    }
    let cds = [
        cd(10, zero.root(), &features),
        cd(11, first.root(), &features),
        second,
    ];
    for (ssid, cd) in cds.iter().enumerate() {
        for (i, word) in cd.0.iter().enumerate() {
            memory.write_u64(cd_table + 64 * ssid as u64 + 8 * i as u64, *word);
        }
    }
    let ste = Ste::stage1_with_substreams(cd_table, 2, dss, VMID, &features).unwrap();
    smmu.install_ste(memory, &mut frames, SID, &ste).unwrap();
    Setup {
        smmu,
        frames,
        empty,
    }
}

#[test]
fn two_substreams_one_lands_the_other_raises_a_pri_request_answered_success() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::per_spec(&memory);
    let Setup {
        mut smmu,
        mut frames,
        empty,
    } = setup(&memory, &device, 0b10, false);
    device.enable_device_page_requests(SID, true);
    assert_eq!(
        device.device_dma(request(Some(1), 0x1040, Access::Write)),
        DeviceOutcome::Completed(0x100_0040)
    );
    // No SubstreamID: CD 0 (S1DSS=0b10).
    assert_eq!(
        device.device_dma(request(None, 0x1040, Access::Read)),
        DeviceOutcome::Completed(0x300_0040)
    );
    let DeviceOutcome::Waiting(id) = device.device_dma(request(Some(2), 0x2040, Access::Write))
    else {
        panic!("SSID 2's missing page must wait for a PRI response");
    };
    assert!(smmu.drain_events(&memory).events.is_empty());
    let drain = smmu.read_page_requests(&memory);
    assert_eq!(drain.requests.len(), 1);
    let pri = drain.requests.get(0).unwrap();
    assert_eq!(
        (pri.stream_id, pri.substream_id, pri.address),
        (SID, Some(2), 0x2000)
    );
    assert!(pri.write && !pri.read && pri.last);
    assert_eq!(device.transaction(id), DeviceOutcome::Waiting(id));
    map(&empty, &memory, &mut frames, 0x2000, 0x200_0000);
    smmu.submit(
        &memory,
        [Command::TlbiNhAsid {
            vmid: VMID,
            asid: 12,
        }],
    )
    .unwrap();
    let issued = |smmu: &Smmu<&SimSmmu>| smmu.command_queue().unwrap().commands_issued;
    let before = issued(&smmu);
    smmu.respond_page_request(&memory, &pri, PriResponse::Success)
        .unwrap();
    assert_eq!(device.transaction(id), DeviceOutcome::Completed(0x200_0040));
    // The response costs two commands: CMD_PRI_RESP + CMD_SYNC.
    assert_eq!(issued(&smmu) - before, 2);
}

#[test]
fn a_page_request_raises_the_priq_interrupt_once_it_is_on() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::per_spec(&memory);
    let Setup { mut smmu, .. } = setup(&memory, &device, 0b10, false);
    device.enable_device_page_requests(SID, true);
    smmu.enable_interrupts().unwrap();
    // Off (only GERROR and the event queue's): the request is queued but
    // raises nothing; it waits for the next poll.
    assert!(matches!(
        device.device_dma(request(Some(2), 0x2000, Access::Read)),
        DeviceOutcome::Waiting(_)
    ));
    assert_eq!(device.page_request_interrupts(), 0);
    assert_eq!(smmu.read_page_requests(&memory).requests.len(), 1);
    smmu.enable_page_request_interrupt().unwrap();
    // Turning the event queue's on again keeps it.
    smmu.enable_interrupts().unwrap();
    assert!(matches!(
        device.device_dma(request(Some(2), 0x3000, Access::Read)),
        DeviceOutcome::Waiting(_)
    ));
    assert_eq!(device.page_request_interrupts(), 1, "one edge per request");
    assert_eq!(device.event_interrupts(), 0, "a page request is no event");
    let drain = smmu.read_page_requests(&memory);
    assert_eq!(drain.requests.get(0).unwrap().address, 0x3000);
    // A stall is an event: the event queue's line.
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::per_spec(&memory);
    let Setup { smmu, .. } = setup(&memory, &device, 0b10, true);
    smmu.enable_interrupts().unwrap();
    smmu.enable_page_request_interrupt().unwrap();
    assert!(matches!(
        device.device_dma(request(Some(2), 0x2000, Access::Read)),
        DeviceOutcome::Waiting(_)
    ));
    assert_eq!(
        (device.event_interrupts(), device.page_request_interrupts()),
        (1, 0)
    );
}

#[test]
fn pri_deny_and_fail_are_errors_and_fail_turns_pri_off() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::per_spec(&memory);
    let Setup { mut smmu, .. } = setup(&memory, &device, 0b10, false);
    device.enable_device_page_requests(SID, true);
    let DeviceOutcome::Waiting(id) = device.device_dma(request(Some(2), 0x3000, Access::Read))
    else {
        panic!("expected a PRI request");
    };
    let first = smmu.read_page_requests(&memory).requests.get(0).unwrap();
    // Success with the page still absent: retried, asks again.
    smmu.respond_page_request(&memory, &first, PriResponse::Success)
        .unwrap();
    assert_eq!(device.transaction(id), DeviceOutcome::Waiting(id));
    let again = smmu.read_page_requests(&memory).requests.get(0).unwrap();
    assert_ne!(again.group_index, first.group_index);
    smmu.respond_page_request(&memory, &again, PriResponse::Deny)
        .unwrap();
    assert_eq!(
        device.transaction(id),
        DeviceOutcome::Failed(DeviceError::Response(0))
    );
    let DeviceOutcome::Waiting(id) = device.device_dma(request(Some(2), 0x4000, Access::Write))
    else {
        panic!("expected a PRI request");
    };
    let third = smmu.read_page_requests(&memory).requests.get(0).unwrap();
    smmu.respond_page_request(&memory, &third, PriResponse::Fail)
        .unwrap();
    assert_eq!(
        device.transaction(id),
        DeviceOutcome::Failed(DeviceError::Response(1))
    );
    // PRI is off now: the same miss is an ordinary recorded event.
    assert_eq!(
        device.device_dma(request(Some(2), 0x4000, Access::Write)),
        DeviceOutcome::Failed(DeviceError::Fault(u32::from(EventKind::Translation.code())))
    );
    let events = smmu.drain_events(&memory).events;
    assert_eq!(events.len(), 1);
    assert_eq!(events.get(0).unwrap().stall_tag, None);
}

#[test]
fn substream_rules_ssid_zero_and_s1dss() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::per_spec(&memory);
    let Setup { mut smmu, .. } = setup(&memory, &device, 0b00, false);
    let bad_substream = DeviceOutcome::Failed(DeviceError::Fault(u32::from(
        EventKind::BadSubstreamId.code(),
    )));
    // S1DSS=0b00: a transaction without a SubstreamID is terminated.
    assert_eq!(
        device.device_dma(request(None, 0x1000, Access::Read)),
        bad_substream
    );
    // SubstreamIDs beyond S1CDMax (4 CDs) too.
    assert_eq!(
        device.device_dma(request(Some(4), 0x1000, Access::Read)),
        bad_substream
    );
    assert_eq!(smmu.drain_events(&memory).events.len(), 2);
    // S1DSS=0b01: without a SubstreamID, stage 1 is bypassed.
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::per_spec(&memory);
    let _setup = setup(&memory, &device, 0b01, false);
    assert_eq!(
        device.device_dma(request(None, 0x5008, Access::Read)),
        DeviceOutcome::Completed(0x5008)
    );
}

#[test]
fn stall_then_resume_retry_completes_and_abort_is_an_error() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::per_spec(&memory);
    let Setup {
        mut smmu,
        mut frames,
        empty,
    } = setup(&memory, &device, 0b10, true);
    let DeviceOutcome::Waiting(id) = device.device_dma(request(Some(2), 0x2040, Access::Write))
    else {
        panic!("CD.S=1: the fault must stall");
    };
    let event = smmu.drain_events(&memory).events.get(0).unwrap();
    assert_eq!(
        (event.kind, event.substream_id),
        (EventKind::Translation, Some(2))
    );
    let tag = event.stall_tag.expect("a stall event carries its STAG");
    // Retry with the page still absent: stalls again under a new tag.
    smmu.resume_stalled(&memory, SID, tag, ResumeAction::Retry)
        .unwrap();
    let again = smmu.drain_events(&memory).events.get(0).unwrap();
    let new_tag = again.stall_tag.unwrap();
    assert_ne!(new_tag, tag);
    assert_eq!(device.transaction(id), DeviceOutcome::Waiting(id));
    map(&empty, &memory, &mut frames, 0x2000, 0x200_0000);
    smmu.submit(
        &memory,
        [Command::TlbiNhAsid {
            vmid: VMID,
            asid: 12,
        }],
    )
    .unwrap();
    // Resuming an old tag changes nothing.
    smmu.resume_stalled(&memory, SID, tag, ResumeAction::Abort)
        .unwrap();
    assert_eq!(device.transaction(id), DeviceOutcome::Waiting(id));
    smmu.resume_stalled(&memory, SID, new_tag, ResumeAction::Retry)
        .unwrap();
    assert_eq!(device.transaction(id), DeviceOutcome::Completed(0x200_0040));
    // Abort: the device sees an error.
    let DeviceOutcome::Waiting(id) = device.device_dma(request(Some(2), 0x6000, Access::Read))
    else {
        panic!("expected a stall");
    };
    let tag = smmu
        .drain_events(&memory)
        .events
        .get(0)
        .unwrap()
        .stall_tag
        .unwrap();
    smmu.resume_stalled(&memory, SID, tag, ResumeAction::Abort)
        .unwrap();
    assert_eq!(
        device.transaction(id),
        DeviceOutcome::Failed(DeviceError::Terminated)
    );
    // SSID 1's CD does not stall: its miss is a plain fault.
    assert_eq!(
        device.device_dma(request(Some(1), 0x6000, Access::Read)),
        DeviceOutcome::Failed(DeviceError::Fault(u32::from(EventKind::Translation.code())))
    );
}

#[test]
fn qemu_smmu_refuses_substreams_pri_stall_and_httu() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::qemu(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..64)
        .unwrap();
    let features = *smmu.features();
    assert!(matches!(
        smmu.enable_page_requests(&memory, &mut frames),
        Err(SmmuError::Unsupported { .. })
    ));
    assert!(matches!(
        smmu.resume_stalled(&memory, SID, 0, ResumeAction::Retry),
        Err(SmmuError::Unsupported { .. })
    ));
    assert!(matches!(
        smmu.enable_page_request_interrupt(),
        Err(SmmuError::Unsupported { .. })
    ));
    assert_eq!(
        cd(1, 0x10_0000, &features).with_stall(&features),
        Err(CdError::StallNotSupported)
    );
    assert_eq!(
        Ste::stage1_with_substreams(0x10_0000, 2, 0b10, VMID, &features),
        Err(SteError::TooManyContextDescriptors(2))
    );
    let stage2 = Stage2Config {
        vmid: VMID,
        table: 0x10_0000,
        ipa_bits: 40,
        output_bits: 44,
    };
    let mut ste = Ste::stage2(&stage2, &features).unwrap();
    assert_eq!(
        ste.set_stage2_dirty_tracking(true, &features),
        Err(SteError::Stage2HardwareUpdate)
    );
    let table = PageTable::new(&mut frames, Stage2Format::default(), levels_4k(40), 40).unwrap();
    let stage2 = Stage2Config {
        table: table.root(),
        ..stage2
    };
    smmu.attach_stage2(&memory, &mut frames, SID, &stage2)
        .unwrap();
    assert_eq!(
        smmu.set_stage2_dirty_tracking(&memory, SID, true),
        Err(SmmuError::InvalidSte(SteError::Stage2HardwareUpdate))
    );
    // The identity says so too.
    let extensions = smmu.extensions();
    assert!(!extensions.page_requests && !extensions.stall && !extensions.dirty_tracking);
    assert_eq!(extensions.pasid_bits, 0);
    let spec = crate::identity::Extensions::smmuv3(&Features::PER_SPEC);
    assert!(spec.page_requests && spec.stall && spec.dirty_tracking && spec.pasid_bits == 8);
}

const PAGES: u64 = 16;

fn dirty_pages(
    table: &PageTable<Stage2Format>,
    memory: &SimMemory,
    clear: bool,
) -> std::vec::Vec<u64> {
    let mut pages = std::vec::Vec::new();
    table
        .read_dirty(memory, 0, PAGES * 4096, clear, |input, _| {
            pages.push(input / 4096)
        })
        .unwrap();
    pages
}

#[test]
fn stage2_dirty_tracking_with_httu() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::per_spec(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..64)
        .unwrap();
    let features = *smmu.features();
    let table = PageTable::new(
        &mut frames,
        Stage2Format::for_unit(&features),
        levels_4k(40),
        40,
    )
    .unwrap();
    for page in 0..PAGES {
        let perms = if page == PAGES - 1 {
            Perms::READ
        } else {
            Perms::READ_WRITE
        };
        table
            .map(
                &memory,
                &mut frames,
                page * 4096,
                64 * MIB + page * 4096,
                PageSize::Size4K,
                perms,
            )
            .unwrap();
    }
    let stage2 = Stage2Config {
        vmid: VMID,
        table: table.root(),
        ipa_bits: 40,
        output_bits: 44,
    };
    let ste = Ste::stage2(&stage2, &features).unwrap();
    smmu.install_ste(&memory, &mut frames, SID, &ste).unwrap();
    let invalidate = |smmu: &mut Smmu<&SimSmmu>| {
        smmu.submit(&memory, [Command::TlbiS12Vmall { vmid: VMID }])
            .unwrap();
    };
    let dma = |page: u64, access| device.dma(request(None, page * 4096 + 8, access));
    // A write before tracking starts caches a writable TLB entry.
    assert!(matches!(
        dma(1, Access::Write),
        crate::model::smmu::Outcome::Translated(_)
    ));
    // Start: every writable leaf writable-clean (DBM=1, S2AP[1]=0), S2HD on.
    let start = table
        .set_dirty_state(&memory, 0, PAGES * 4096, true)
        .unwrap();
    assert_eq!((start.leaves, start.cleaned), (PAGES, PAGES - 1));
    // In place on the live STE (CFGI_STE + TLBI_S12_VMALL).
    smmu.set_stage2_dirty_tracking(&memory, SID, true).unwrap();
    assert!(device.model().dirty_tracking(&memory, SID));
    for page in [1, 3, 5] {
        assert!(matches!(
            dma(page, Access::Write),
            crate::model::smmu::Outcome::Translated(_)
        ));
    }
    for page in [2, 4, PAGES - 1] {
        assert!(matches!(
            dma(page, Access::Read),
            crate::model::smmu::Outcome::Translated(_)
        ));
    }
    // The read-only page stays read-only.
    assert!(!matches!(
        dma(PAGES - 1, Access::Write),
        crate::model::smmu::Outcome::Translated(_)
    ));
    assert_eq!(dirty_pages(&table, &memory, true), [1, 3, 5]);
    // Without the invalidation a write hits the cached dirty entry and is lost.
    dma(3, Access::Write);
    assert!(dirty_pages(&table, &memory, false).is_empty());
    invalidate(&mut smmu);
    dma(3, Access::Write);
    // Read first (cached writable-clean), then written: the write walks and marks.
    dma(8, Access::Read);
    dma(8, Access::Write);
    assert_eq!(dirty_pages(&table, &memory, false), [3, 8]);
    // Tracking off without marking the leaves dirty: a clean leaf now
    // write-faults (DBM without S2HD is read-only) ...
    dirty_pages(&table, &memory, true);
    smmu.set_stage2_dirty_tracking(&memory, SID, false).unwrap();
    assert!(!device.model().dirty_tracking(&memory, SID));
    assert!(!matches!(
        dma(6, Access::Write),
        crate::model::smmu::Outcome::Translated(_)
    ));
    // ... so stopping marks them dirty (writable) first.
    table
        .set_dirty_state(&memory, 0, PAGES * 4096, false)
        .unwrap();
    invalidate(&mut smmu);
    assert!(matches!(
        dma(6, Access::Write),
        crate::model::smmu::Outcome::Translated(_)
    ));
    smmu.drain_events(&memory);
}

#[test]
fn two_level_cd_tables_by_substream() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimSmmu::per_spec(&memory);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut smmu = Smmu::new(&device);
    smmu.block_all_dma(&memory, &mut frames, BlockPolicy::RecordFault, 0..64)
        .unwrap();
    let features = *smmu.features();
    let l1 = frames.alloc_zeroed_frame().unwrap();
    // SubstreamIDs 3 and 200 (leaves 0 and 3), each with its own stage 1.
    for (ssid, output) in [(3u32, 0x400_0000u64), (200, 0x500_0000)] {
        let table = stage1_table(&mut frames);
        map(&table, &memory, &mut frames, 0x1000, output);
        let descriptor = cd(20 + ssid as u16, table.root(), &features);
        crate::smmuv3::cd::write_two_level(&memory, &mut frames, l1, ssid, &descriptor).unwrap();
    }
    let ste = Ste::stage1_two_level_cds(l1, 8, 0b00, VMID, &features).unwrap();
    smmu.install_ste(&memory, &mut frames, SID, &ste).unwrap();
    assert_eq!(
        device.device_dma(request(Some(3), 0x1010, Access::Read)),
        DeviceOutcome::Completed(0x400_0010)
    );
    assert_eq!(
        device.device_dma(request(Some(200), 0x1010, Access::Write)),
        DeviceOutcome::Completed(0x500_0010)
    );
    // A SubstreamID whose leaf is absent (L1CD invalid), and one whose CD
    // in a present leaf is invalid.
    assert_eq!(
        device.device_dma(request(Some(100), 0x1010, Access::Read)),
        DeviceOutcome::Failed(DeviceError::Fault(u32::from(
            EventKind::BadSubstreamId.code()
        )))
    );
    assert_eq!(
        device.device_dma(request(Some(4), 0x1010, Access::Read)),
        DeviceOutcome::Failed(DeviceError::Fault(u32::from(EventKind::BadCd.code())))
    );
    // QEMU has no CD2L (and no SubstreamIDs).
    assert!(Ste::stage1_two_level_cds(l1, 8, 0b00, VMID, &Features::QEMU).is_err());
    assert!(Ste::stage1_two_level_cds(l1, 6, 0b00, VMID, &features).is_err());
}
