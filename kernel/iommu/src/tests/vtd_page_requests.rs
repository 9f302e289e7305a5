//! VT-d PASID-tagged DMA and page requests, driver against the model: many
//! PASIDs each with its own translation type, two PASIDs of one device
//! where one lands and the other's missing page raises a page request,
//! answered Success (the retried DMA completes), Invalid or Failure (the
//! device sees an error); and the QEMU configuration, where the unit has
//! no page requests and the same miss is a recorded fault.

use super::common::MIB;
use crate::model::vtd::{Request, reason};
use crate::model::vtd_device::{NESTING_ECAP, QEMU_CAP, QEMU_FLTS_ECAP, SimVtd};
use crate::model::{Access, DeviceError, DeviceOutcome, SimFrames, SimMemory};
use crate::pagetable::{PageSize, PageTable, Perms};
use crate::vtd::prq::ResponseCode;
use crate::vtd::qi::{Descriptor, PasidIotlbScope};
use crate::vtd::regs::{Capability, RootTableMode};
use crate::vtd::tables::{FirstStageFormat, PasidConfig, SecondStageFormat, SecondStageLevels};
use crate::vtd::{VtdError, VtdUnit};

const EDU: u16 = 0x0010;
/// A unit per the specification: NEST, FLTS, SLTS, PASID (PSS=19), PRS, SLADS.
pub(super) const SPEC_ECAP: u64 = NESTING_ECAP | 1 << 29 | 1 << 45;

fn request(pasid: u32, address: u64, access: Access) -> Request {
    Request {
        source_id: EDU,
        pasid: Some(pasid),
        address,
        access,
    }
}

fn first_stage(frames: &mut SimFrames) -> PageTable<FirstStageFormat> {
    PageTable::new(
        frames,
        FirstStageFormat::for_unit(Capability(QEMU_CAP)),
        4,
        48,
    )
    .unwrap()
}

fn map(
    table: &PageTable<FirstStageFormat>,
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

/// An empty second-stage table of the deepest depth QEMU's CAP allows.
pub(super) fn second_stage(
    frames: &mut SimFrames,
) -> (PageTable<SecondStageFormat>, SecondStageLevels) {
    let cap = Capability(QEMU_CAP);
    let levels = SecondStageLevels::best(cap).unwrap();
    let format = SecondStageFormat::for_unit(cap);
    let table = PageTable::new(frames, format, levels.height(), levels.input_bits()).unwrap();
    (table, levels)
}

/// A spec unit in scalable mode with page requests on, and the device's
/// PASIDs 1 (page 0x1000 mapped) and 2 (nothing mapped) on their own
/// first-stage tables, domains 5 and 6.
struct Setup<'m> {
    device: &'m SimVtd<'m>,
    unit: VtdUnit<&'m SimVtd<'m>>,
    frames: SimFrames<'m>,
    second: PageTable<FirstStageFormat>,
}

fn setup<'m>(memory: &'m SimMemory, device: &'m SimVtd<'m>) -> Setup<'m> {
    let mut frames = SimFrames::new(memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(device);
    unit.block_all_dma(memory, &mut frames, RootTableMode::Scalable)
        .unwrap();
    unit.enable_page_requests(memory, &mut frames).unwrap();
    unit.set_page_request_interrupt(0xfee0_0000, 0x41);
    let first = first_stage(&mut frames);
    map(&first, memory, &mut frames, 0x1000, 0x100_0000);
    let second = first_stage(&mut frames);
    for (pasid, domain, table) in [(1, 5, first.root()), (2, 6, second.root())] {
        let config = PasidConfig::FirstStage { domain, table };
        unit.set_pasid_entry(memory, &mut frames, EDU, pasid, Some(config))
            .unwrap();
    }
    unit.set_page_requests(memory, EDU, true).unwrap();
    device.enable_device_page_requests(EDU, true);
    Setup {
        device,
        unit,
        frames,
        second,
    }
}

#[test]
fn two_pasids_one_lands_the_other_raises_a_page_request_answered_success() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, SPEC_ECAP, false);
    let Setup {
        device,
        mut unit,
        mut frames,
        second,
    } = setup(&memory, &device);
    assert_eq!(
        device.device_dma(request(1, 0x1040, Access::Write)),
        DeviceOutcome::Completed(0x100_0040)
    );
    let DeviceOutcome::Waiting(id) = device.device_dma(request(2, 0x2040, Access::Write)) else {
        panic!("PASID 2's missing page must wait for a page request");
    };
    // A page request, not a fault: no fault record, one page request event.
    assert!(unit.read_faults().is_empty());
    assert_eq!(device.page_request_msis(), [(0xfee0_0000, 0x41)]);
    let drain = unit.read_page_requests(&memory);
    assert_eq!(drain.requests.len(), 1);
    let page_request = drain.requests.get(0).unwrap();
    assert_eq!(
        (
            page_request.source_id,
            page_request.pasid,
            page_request.address
        ),
        (EDU, Some(2), 0x2000)
    );
    assert!(page_request.write && !page_request.read && page_request.last_in_group);
    assert!(unit.read_page_requests(&memory).requests.is_empty());
    // Still waiting until the response.
    assert_eq!(device.transaction(id), DeviceOutcome::Waiting(id));
    // The driver maps the page, invalidates, answers Success; the retry lands.
    map(&second, &memory, &mut frames, 0x2000, 0x200_0000);
    unit.submit(
        &memory,
        [Descriptor::pasid_iotlb(PasidIotlbScope::Pasid {
            domain: 6,
            pasid: 2,
        })],
    )
    .unwrap();
    let issued = |unit: &VtdUnit<&SimVtd>| unit.queue().unwrap().descriptors_issued;
    let before = issued(&unit);
    unit.respond_page_request(&memory, &page_request, ResponseCode::Success)
        .unwrap();
    assert_eq!(device.transaction(id), DeviceOutcome::Completed(0x200_0040));
    assert_eq!(device.page_responses.get(), 1);
    // The response costs two descriptors: page group response + wait.
    assert_eq!(issued(&unit) - before, 2);
}

#[test]
fn success_without_the_page_asks_again_invalid_and_failure_are_errors() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, SPEC_ECAP, false);
    let Setup {
        device, mut unit, ..
    } = setup(&memory, &device);
    let DeviceOutcome::Waiting(id) = device.device_dma(request(2, 0x3000, Access::Read)) else {
        panic!("expected a page request");
    };
    let first = unit.read_page_requests(&memory).requests.get(0).unwrap();
    assert!(first.read && !first.write);
    // Success while the page is still missing: the device retries, misses
    // and sends a new request in a new group; it keeps waiting.
    unit.respond_page_request(&memory, &first, ResponseCode::Success)
        .unwrap();
    assert_eq!(device.transaction(id), DeviceOutcome::Waiting(id));
    let again = unit.read_page_requests(&memory).requests.get(0).unwrap();
    assert_ne!(again.group_index, first.group_index);
    // Answering an old group changes nothing.
    unit.respond_page_request(&memory, &first, ResponseCode::Invalid)
        .unwrap();
    assert_eq!(device.transaction(id), DeviceOutcome::Waiting(id));
    // Invalid: the device sees an error for this request.
    unit.respond_page_request(&memory, &again, ResponseCode::Invalid)
        .unwrap();
    assert_eq!(
        device.transaction(id),
        DeviceOutcome::Failed(DeviceError::Response(0x1))
    );
    // Failure: an error, and the device's PRI is off from then on, so the
    // next miss is an ordinary recorded fault.
    let DeviceOutcome::Waiting(id) = device.device_dma(request(2, 0x4000, Access::Write)) else {
        panic!("expected a page request");
    };
    let third = unit.read_page_requests(&memory).requests.get(0).unwrap();
    unit.respond_page_request(&memory, &third, ResponseCode::Failure)
        .unwrap();
    assert_eq!(
        device.transaction(id),
        DeviceOutcome::Failed(DeviceError::Response(0xf))
    );
    assert_eq!(
        device.device_dma(request(2, 0x4000, Access::Write)),
        DeviceOutcome::Failed(DeviceError::Fault(u32::from(reason::FS_NOT_PRESENT)))
    );
    let faults = unit.read_faults();
    assert_eq!(faults.len(), 1);
    assert_eq!(faults.get(0).unwrap().pasid, Some(2));
}

#[test]
fn without_pre_or_device_pri_a_miss_is_a_fault() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, SPEC_ECAP, false);
    let Setup {
        device, mut unit, ..
    } = setup(&memory, &device);
    unit.set_page_requests(&memory, EDU, false).unwrap();
    assert_eq!(
        device.device_dma(request(2, 0x5000, Access::Write)),
        DeviceOutcome::Failed(DeviceError::Fault(u32::from(reason::FS_NOT_PRESENT)))
    );
    assert_eq!(unit.read_faults().len(), 1);
    unit.clear_faults();
    unit.set_page_requests(&memory, EDU, true).unwrap();
    device.enable_device_page_requests(EDU, false);
    assert_eq!(
        device.device_dma(request(2, 0x6000, Access::Write)),
        DeviceOutcome::Failed(DeviceError::Fault(u32::from(reason::FS_NOT_PRESENT)))
    );
    assert!(unit.read_page_requests(&memory).requests.is_empty());
    assert_eq!(unit.read_faults().len(), 1);
}

#[test]
fn a_full_queue_drops_the_request_and_sets_pro_until_drained() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, SPEC_ECAP, false);
    let Setup {
        device, mut unit, ..
    } = setup(&memory, &device);
    // 128 slots hold 127 requests (one stays free to tell full from empty).
    for page in 0..127u64 {
        let outcome = device.device_dma(request(2, 0x10_0000 + page * 4096, Access::Read));
        assert!(matches!(outcome, DeviceOutcome::Waiting(_)), "{page}");
    }
    assert_eq!(
        device.device_dma(request(2, 0x20_0000, Access::Read)),
        DeviceOutcome::Failed(DeviceError::Overflow)
    );
    // Bounded reads: 16 at a time, `more` until the queue is empty; PRO
    // is reported and cleared once the queue is empty.
    let mut total = 0;
    let mut rounds = 0;
    let mut overflow_seen = false;
    loop {
        let drain = unit.read_page_requests(&memory);
        total += drain.requests.len();
        overflow_seen |= drain.overflowed;
        rounds += 1;
        if !drain.more {
            break;
        }
    }
    assert_eq!((total, rounds), (127, 8));
    assert!(overflow_seen);
    assert!(!unit.read_page_requests(&memory).overflowed);
}

#[test]
fn qemu_unit_has_no_page_requests_and_the_miss_is_a_fault() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, QEMU_FLTS_ECAP, true);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 32 * MIB);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut frames, RootTableMode::Scalable)
        .unwrap();
    assert!(matches!(
        unit.enable_page_requests(&memory, &mut frames),
        Err(VtdError::Unsupported { .. })
    ));
    let table = first_stage(&mut frames);
    let config = PasidConfig::FirstStage {
        domain: 5,
        table: table.root(),
    };
    unit.set_pasid_entry(&memory, &mut frames, EDU, 0, Some(config))
        .unwrap();
    assert!(matches!(
        unit.set_page_requests(&memory, EDU, true),
        Err(VtdError::Unsupported { .. })
    ));
    device.enable_device_page_requests(EDU, true);
    let miss = Request {
        pasid: None,
        ..request(0, 0x2000, Access::Read)
    };
    assert_eq!(
        device.device_dma(miss),
        DeviceOutcome::Failed(DeviceError::Fault(u32::from(reason::FS_NOT_PRESENT)))
    );
    // QEMU's PASID width is 1 bit: only RID_PASID.
    assert!(
        unit.set_pasid_entry(&memory, &mut frames, EDU, 5, Some(config))
            .is_err()
    );
}

#[test]
fn many_pasids_each_translate_by_their_own_entry() {
    let memory = SimMemory::new(512 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, SPEC_ECAP, false);
    let mut frames = SimFrames::new(&memory, 16 * MIB, 64 * MIB);
    let mut unit = VtdUnit::new(&device);
    unit.block_all_dma(&memory, &mut frames, RootTableMode::Scalable)
        .unwrap();
    let levels = SecondStageLevels::best(Capability(QEMU_CAP)).unwrap();
    // One shared second stage: IPA 0..16 MiB -> PA 256 MiB.. for nested PASIDs.
    let ss = PageTable::new(
        &mut frames,
        SecondStageFormat::for_unit(Capability(QEMU_CAP)),
        levels.height(),
        levels.input_bits(),
    )
    .unwrap();
    let pasids: std::vec::Vec<u32> = (1..200).step_by(7).chain([4095, 32767]).collect();
    for (i, &pasid) in pasids.iter().enumerate() {
        let output = 128 * MIB + i as u64 * 0x1000;
        let domain = 10 + (i % 3) as u16;
        let config = match i % 3 {
            0 => {
                let table = first_stage(&mut frames);
                map(&table, &memory, &mut frames, 0x7000, output);
                PasidConfig::FirstStage {
                    domain,
                    table: table.root(),
                }
            }
            1 => {
                let (table, _) = second_stage(&mut frames);
                table
                    .map(
                        &memory,
                        &mut frames,
                        0x7000,
                        output,
                        PageSize::Size4K,
                        Perms::READ_WRITE,
                    )
                    .unwrap();
                PasidConfig::SecondStage {
                    domain,
                    table: table.root(),
                    levels,
                }
            }
            _ => {
                // Nested: the first-stage table lives at IPA == PA here
                // (the second stage maps its frames one to one), output IPA
                // 0x40_0000 + i pages -> PA `output` through the second stage.
                let table = first_stage(&mut frames);
                let ipa = 0x40_0000 + i as u64 * 0x1000;
                map(&table, &memory, &mut frames, 0x7000, ipa);
                let mut identity = std::vec::Vec::new();
                table.for_each_table(&memory, |frame| identity.push(frame));
                for frame in identity {
                    let _ = ss.map(
                        &memory,
                        &mut frames,
                        frame,
                        frame,
                        PageSize::Size4K,
                        Perms::READ,
                    );
                }
                ss.map(
                    &memory,
                    &mut frames,
                    ipa,
                    output,
                    PageSize::Size4K,
                    Perms::READ_WRITE,
                )
                .unwrap();
                PasidConfig::Nested {
                    domain,
                    first_stage_table: table.root(),
                    second_stage_table: ss.root(),
                    levels,
                }
            }
        };
        unit.set_pasid_entry(&memory, &mut frames, EDU, pasid, Some(config))
            .unwrap();
    }
    for (i, &pasid) in pasids.iter().enumerate() {
        let output = 128 * MIB + i as u64 * 0x1000;
        assert_eq!(
            device.dma(request(pasid, 0x7008, Access::Write)),
            Ok(output + 8),
            "PASID {pasid}"
        );
        assert!(device.dma(request(pasid, 0x8000, Access::Read)).is_err());
    }
    // An unused PASID in a populated table, one in an absent table, one
    // beyond the directory (PDTS covers 32768).
    assert_eq!(
        device.dma(request(2, 0x7000, Access::Read)),
        Err(reason::SM_PASID_NOT_PRESENT)
    );
    assert_eq!(
        device.dma(request(20000, 0x7000, Access::Read)),
        Err(reason::SM_PASID_DIR_NOT_PRESENT)
    );
    assert_eq!(
        device.dma(request(40000, 0x7000, Access::Read)),
        Err(reason::SM_PASID_TOO_LARGE)
    );
}

#[test]
fn a_second_stage_pasid_miss_also_raises_a_page_request() {
    let memory = SimMemory::new(256 * MIB);
    let device = SimVtd::new(&memory, QEMU_CAP, SPEC_ECAP, false);
    let mut set = setup(&memory, &device);
    let (unit, frames) = (&mut set.unit, &mut set.frames);
    let (table, levels) = second_stage(frames);
    table
        .map(
            &memory,
            frames,
            0x9000,
            0x300_0000,
            PageSize::Size4K,
            Perms::READ,
        )
        .unwrap();
    let config = PasidConfig::SecondStage {
        domain: 8,
        table: table.root(),
        levels,
    };
    unit.set_pasid_entry(&memory, frames, EDU, 3, Some(config))
        .unwrap();
    // A write to a read-only second-stage page: a page request for write.
    let DeviceOutcome::Waiting(id) = set.device.device_dma(request(3, 0x9000, Access::Write))
    else {
        panic!("expected a page request");
    };
    let page_request = unit.read_page_requests(&memory).requests.get(0).unwrap();
    assert_eq!((page_request.pasid, page_request.write), (Some(3), true));
    // The driver grants write, invalidates the domain, answers Success.
    table
        .set_4k(
            &memory,
            frames,
            0x9000,
            Some((0x300_0000, Perms::READ_WRITE)),
        )
        .unwrap();
    unit.submit(
        &memory,
        [Descriptor::iotlb(
            crate::vtd::qi::IotlbScope::Domain(8),
            false,
        )],
    )
    .unwrap();
    unit.respond_page_request(&memory, &page_request, ResponseCode::Success)
        .unwrap();
    assert_eq!(
        set.device.transaction(id),
        DeviceOutcome::Completed(0x300_0000)
    );
}
