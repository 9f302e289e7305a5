//! The driver against the executable controller model: bring-up and its
//! failures, Identify, reads and writes of 1, 2, 3 and 64 pages (PRP1,
//! PRP2, PRP list), queue wrap-around, error statuses surfaced as errors,
//! and the checks the driver makes before it submits anything.

mod common;

use common::{
    addresses, assert_clean, bring_up, bring_up_on, bring_up_with, buffer, contents, fill, pattern,
    up,
};
use nvme::model::{FIRST_IOVA, Model, ModelConfig, ReadyBehaviour};
use nvme::{
    CommandSpecificStatus, Config, Error, GenericStatus, Iova, MAX_WAKES, MediaStatus, PAGE_SIZE,
    QueueKind, Status, StatusCodeType, WaitingFor,
};

const READ: u8 = 0x02;
const WRITE: u8 = 0x01;

#[test]
fn bring_up_identifies_controller_and_namespace() {
    let (model, controller) = up(ModelConfig::default(), 32);
    assert_eq!(controller.version().to_string(), "1.4.0");
    let identity = controller.identity();
    assert_eq!(identity.vendor_id, 0x1b36);
    assert_eq!(identity.serial_number(), "MODEL-0001");
    assert_eq!(identity.model_number(), "Portcullis NVMe model");
    assert_eq!(identity.namespaces, 1);
    let namespace = controller.namespace();
    assert_eq!(namespace.blocks, 2048);
    assert_eq!(namespace.block_size(), 512);
    assert_eq!(namespace.bytes(), 1024 * 1024);
    assert_eq!(controller.queue_depth(), 32);
    // MDTS 7: 2^7 pages of 4 KiB.
    assert_eq!(controller.max_transfer_pages(), 128);
    assert!(model.is_ready());
    assert_eq!(model.io_queues(), 2);
    let opcodes: Vec<u8> = model
        .commands()
        .iter()
        .map(|command| command.opcode)
        .collect();
    // Identify Controller, Identify Namespace, Create I/O CQ, Create I/O SQ.
    assert_eq!(opcodes, [0x06, 0x06, 0x05, 0x01]);
    assert!(model.commands().iter().all(|command| command.status == 0));
}

#[test]
fn every_address_handed_to_the_device_is_an_allocated_page() {
    let (model, mut controller) = up(ModelConfig::default(), 8);
    let pages = buffer(&model, 5);
    controller
        .write(0, 40, &addresses(&pages))
        .expect("write of 5 pages");
    for command in model.commands() {
        for prp in [command.prp1, command.prp2] {
            // The model hands out pages from FIRST_IOVA on, every third
            // page; 0 is "no PRP2".
            assert!(
                prp == 0
                    || (prp >= FIRST_IOVA
                        && (prp - FIRST_IOVA).is_multiple_of(3 * PAGE_SIZE as u64)),
                "PRP {prp:#x} of opcode {:#x} is not a page the driver was given",
                command.opcode
            );
        }
    }
    assert_clean(&model);
}

#[test]
fn bring_up_disables_a_controller_left_enabled() {
    let config = ModelConfig {
        start_enabled: true,
        ..ModelConfig::default()
    };
    let (model, _controller) = up(config, 16);
    assert!(model.is_ready());
    assert_eq!(model.io_queues(), 2);
}

#[test]
fn bring_up_waits_for_ready() {
    let config = ModelConfig {
        ready: ReadyBehaviour::AfterPolls(7),
        ..ModelConfig::default()
    };
    let (model, _controller) = up(config, 16);
    // Seven polls that saw RDY = 0, each followed by a 1 ms wait.
    assert_eq!(model.elapsed_microseconds(), 7_000);
}

#[test]
fn a_controller_that_never_sets_ready_times_out_after_cap_to() {
    let config = ModelConfig {
        ready: ReadyBehaviour::Never,
        timeout_units: 3,
        ..ModelConfig::default()
    };
    let (model, result) = bring_up(config, 16);
    assert_eq!(
        result.err(),
        Some(Error::Timeout {
            waiting_for: WaitingFor::Ready,
            milliseconds: 1500
        })
    );
    // It waited CAP.TO (3 x 500 ms) and not longer.
    assert_eq!(model.elapsed_microseconds(), 1_500_000);
}

#[test]
fn a_fatal_controller_status_ends_bring_up() {
    let model = Model::new(ModelConfig::default());
    model.fail_fatally();
    let result = bring_up_on(&model, 32);
    assert_eq!(result.err(), Some(Error::ControllerFatal { status: 0b11 }));
}

#[test]
fn a_fatal_status_while_polling_a_command_is_reported() {
    let (model, mut controller) = up(ModelConfig::default(), 16);
    model.fail_fatally();
    let pages = buffer(&model, 1);
    assert_eq!(
        controller.read(0, 8, &addresses(&pages)),
        Err(Error::ControllerFatal { status: 0b11 })
    );
}

#[test]
fn a_controller_without_the_nvm_command_set_is_refused() {
    let config = ModelConfig {
        nvm_command_set: false,
        ..ModelConfig::default()
    };
    let (model, result) = bring_up(config, 16);
    assert!(matches!(result.err(), Some(Error::NoNvmCommandSet { .. })));
    // Refused before touching anything.
    assert!(model.commands().is_empty());
    assert!(!model.is_ready());
}

#[test]
fn a_controller_without_namespace_1_is_refused() {
    for config in [
        ModelConfig {
            namespaces: 0,
            ..ModelConfig::default()
        },
        ModelConfig {
            namespace_blocks: 0,
            ..ModelConfig::default()
        },
    ] {
        let (_, result) = bring_up(config, 16);
        assert_eq!(result.err(), Some(Error::NoNamespace));
    }
}

#[test]
fn an_lba_format_with_metadata_is_refused_by_name() {
    let config = ModelConfig {
        format_index: 2,
        ..ModelConfig::default()
    };
    let (_, result) = bring_up(config, 16);
    let error = result.err().expect("bring-up must fail");
    assert_eq!(
        error,
        Error::LbaFormatUnsupported {
            index: 2,
            data_shift: 9,
            metadata_bytes: 8
        }
    );
    assert!(error.to_string().contains("8 metadata bytes"), "{error}");
}

/// Writes `pages` pages at `lba`, reads them back into other pages, and
/// checks the data, the namespace and the PRPs the driver used.
fn round_trip(pages: usize, lba: u64) {
    let (model, mut controller) = up(ModelConfig::default(), 16);
    let length = pages * PAGE_SIZE;
    let blocks = (length / 512) as u32;
    let data = pattern(pages as u64, length);
    let source = buffer(&model, pages);
    fill(&model, &source, &data);
    controller
        .write(lba, blocks, &addresses(&source))
        .unwrap_or_else(|error| panic!("write of {pages} pages: {error}"));
    let start = lba as usize * 512;
    assert_eq!(model.namespace()[start..start + length], data[..]);

    let destination = buffer(&model, pages);
    controller
        .read(lba, blocks, &addresses(&destination))
        .unwrap_or_else(|error| panic!("read of {pages} pages: {error}"));
    assert_eq!(contents(&model, &destination, length), data);

    let commands = model.commands();
    let read = commands.last().expect("the read");
    assert_eq!(read.opcode, READ);
    assert_eq!(read.prp1, destination[0].device_address.0);
    match pages {
        1 => assert_eq!(read.prp2, 0, "one page: no PRP2"),
        2 => assert_eq!(
            read.prp2, destination[1].device_address.0,
            "two pages: PRP2 is the second"
        ),
        _ => assert!(
            destination
                .iter()
                .all(|page| page.device_address.0 != read.prp2),
            "more than two pages: PRP2 is a list, not a data page"
        ),
    }
    assert_clean(&model);
}

#[test]
fn one_page_round_trip() {
    round_trip(1, 0);
}

#[test]
fn two_page_round_trip() {
    round_trip(2, 17);
}

#[test]
fn three_page_round_trip_uses_a_prp_list() {
    round_trip(3, 100);
}

#[test]
fn sixty_four_page_round_trip_uses_a_prp_list() {
    round_trip(64, 1000);
}

#[test]
fn a_single_block_moves_in_part_of_a_page() {
    let (model, mut controller) = up(ModelConfig::default(), 16);
    let disk = pattern(9, 2048 * 512);
    model.fill_namespace(&disk);
    let page = buffer(&model, 1);
    controller
        .read(2047, 1, &addresses(&page))
        .expect("read of the last block");
    assert_eq!(contents(&model, &page, 512), disk[2047 * 512..]);
    assert_clean(&model);
}

#[test]
fn four_kib_blocks_round_trip() {
    let config = ModelConfig {
        format_index: 1,
        namespace_blocks: 64,
        ..ModelConfig::default()
    };
    let (model, mut controller) = up(config, 16);
    assert_eq!(controller.namespace().block_size(), 4096);
    let data = pattern(4, 5 * PAGE_SIZE);
    let source = buffer(&model, 5);
    fill(&model, &source, &data);
    controller.write(59, 5, &addresses(&source)).expect("write");
    let destination = buffer(&model, 5);
    controller
        .read(59, 5, &addresses(&destination))
        .expect("read");
    assert_eq!(contents(&model, &destination, data.len()), data);
    assert_clean(&model);
}

#[test]
fn queues_wrap_around_many_times() {
    // Queues of 4 entries; bring-up alone wraps the admin queue once.
    let (model, mut controller) = up(ModelConfig::default(), 4);
    assert_eq!(controller.queue_depth(), 4);
    let page = buffer(&model, 1);
    for round in 0..50u64 {
        let data = pattern(round, PAGE_SIZE);
        fill(&model, &page, &data);
        let lba = round * 8 % 2048;
        controller.write(lba, 8, &addresses(&page)).expect("write");
        fill(&model, &page, &[0; PAGE_SIZE]);
        controller.read(lba, 8, &addresses(&page)).expect("read");
        assert_eq!(contents(&model, &page, PAGE_SIZE), data, "round {round}");
    }
    // 100 I/O commands through a 4-entry queue: the phase flipped 25 times.
    let io = model
        .commands()
        .iter()
        .filter(|command| command.queue == 1)
        .count();
    assert_eq!(io, 100);
    assert_clean(&model);
}

#[test]
fn the_doorbell_stride_from_cap_is_used() {
    for shift in [1, 3] {
        let config = ModelConfig {
            doorbell_stride_shift: shift,
            ..ModelConfig::default()
        };
        let (model, mut controller) = up(config, 8);
        assert_eq!(controller.capabilities().doorbell_stride(), 4 << shift);
        let page = buffer(&model, 1);
        controller.read(0, 8, &addresses(&page)).expect("read");
        assert_clean(&model);
    }
}

#[test]
fn error_statuses_come_back_decoded() {
    let (model, mut controller) = up(ModelConfig::default(), 4);
    let page = buffer(&model, 1);
    let cases = [
        (
            0x281,
            READ,
            Status::Media(MediaStatus::UnrecoveredReadError),
        ),
        (0x280, WRITE, Status::Media(MediaStatus::WriteFault)),
        (0x080, READ, Status::Generic(GenericStatus::LbaOutOfRange)),
        (0x006, WRITE, Status::Generic(GenericStatus::InternalError)),
        (
            0x782,
            READ,
            Status::Other {
                code_type: StatusCodeType::VendorSpecific,
                code: 0x82,
            },
        ),
    ];
    for (field, opcode, status) in cases {
        model.inject_status(1, opcode, field);
        let result = if opcode == READ {
            controller.read(8, 8, &addresses(&page))
        } else {
            controller.write(8, 8, &addresses(&page))
        };
        assert_eq!(
            result,
            Err(Error::Command {
                queue: QueueKind::Io,
                opcode,
                status
            })
        );
        // The queue pair is still in step: the next command works.
        controller
            .read(0, 8, &addresses(&page))
            .expect("read after an error");
    }
    assert_clean(&model);
}

#[test]
fn a_failed_admin_command_fails_bring_up_by_name() {
    let model = Model::new(ModelConfig::default());
    model.inject_status(0, 0x05, 0x102);
    let result = bring_up_on(&model, 32);
    let error = result.err().expect("bring-up must fail");
    assert_eq!(
        error,
        Error::Command {
            queue: QueueKind::Admin,
            opcode: 0x05,
            status: Status::CommandSpecific(CommandSpecificStatus::InvalidQueueSize)
        }
    );
    assert_eq!(
        error.to_string(),
        "opcode 0x05 on the admin queue failed: command specific status InvalidQueueSize"
    );
}

#[test]
fn a_dma_fault_is_a_data_transfer_error() {
    let (model, mut controller) = up(ModelConfig::default(), 8);
    let pages = buffer(&model, 3);
    model.revoke(pages[2].device_address);
    assert_eq!(
        controller.read(0, 24, &addresses(&pages)),
        Err(Error::Command {
            queue: QueueKind::Io,
            opcode: READ,
            status: Status::Generic(GenericStatus::DataTransferError)
        })
    );
    let faults = model.faults();
    assert_eq!(faults.len(), 1);
    assert_eq!(faults[0].address, pages[2].device_address.0);
    assert!(faults[0].write);
}

#[test]
fn transfers_are_checked_before_anything_is_submitted() {
    let config = ModelConfig {
        max_transfer_shift: 2,
        ..ModelConfig::default()
    };
    let (model, mut controller) = up(config, 8);
    let before = model.commands().len();
    let pages = buffer(&model, 5);
    let all = addresses(&pages);
    assert_eq!(
        controller.read(0, 0, &all[..1]),
        Err(Error::TransferBlocksInvalid { blocks: 0 })
    );
    assert_eq!(
        controller.read(2047, 2, &all[..1]),
        Err(Error::OutOfRange {
            lba: 2047,
            blocks: 2,
            namespace_blocks: 2048
        })
    );
    assert_eq!(
        controller.read(u64::MAX, 1, &all[..1]),
        Err(Error::OutOfRange {
            lba: u64::MAX,
            blocks: 1,
            namespace_blocks: 2048
        })
    );
    assert_eq!(
        controller.write(0, 16, &all[..1]),
        Err(Error::BufferSizeMismatch {
            pages_given: 1,
            pages_needed: 2
        })
    );
    // MDTS 2: four pages at most.
    assert_eq!(controller.max_transfer_pages(), 4);
    assert_eq!(
        controller.read(0, 40, &all),
        Err(Error::TransferTooLarge {
            pages: 5,
            max_pages: 4
        })
    );
    let crooked = [all[0], Iova(all[1].0 + 8)];
    assert_eq!(
        controller.read(0, 16, &crooked),
        Err(Error::BufferNotAligned {
            index: 1,
            device_address: Iova(all[1].0 + 8)
        })
    );
    assert_eq!(model.commands().len(), before, "nothing was submitted");
    assert_clean(&model);
}

#[test]
fn dma_allocation_failures_are_reported() {
    let model = Model::new(ModelConfig::default());
    model.limit_pages(3);
    let result = bring_up_on(&model, 32);
    assert!(matches!(result.err(), Some(Error::Dma(_))));

    let model = Model::new(ModelConfig::default());
    model.misalign_pages();
    let result = bring_up_on(&model, 32);
    assert_eq!(
        result.err(),
        Some(Error::DmaPageNotAligned {
            device_address: Iova(FIRST_IOVA + 0x800)
        })
    );
}

#[test]
fn shut_down_deletes_the_io_queues_and_disables() {
    let (model, controller) = up(ModelConfig::default(), 8);
    controller.shut_down().expect("shut down");
    assert_eq!(model.io_queues(), 0);
    assert!(!model.is_ready());
    let opcodes: Vec<u8> = model
        .commands()
        .iter()
        .map(|command| command.opcode)
        .collect();
    assert_eq!(opcodes[opcodes.len() - 2..], [0x00, 0x04]);
    assert_clean(&model);
}

#[test]
fn status_fields_decode() {
    assert_eq!(Status::from_field(0), Status::Success);
    // CRD, M and DNR (bits 14:11) do not change the meaning.
    assert_eq!(
        Status::from_field(0x4000 | 0x0004),
        Status::Generic(GenericStatus::DataTransferError)
    );
    assert_eq!(
        Status::from_field(0x0113),
        Status::Other {
            code_type: StatusCodeType::CommandSpecific,
            code: 0x13
        }
    );
    assert_eq!(
        Status::from_field(0x0100),
        Status::CommandSpecific(CommandSpecificStatus::CompletionQueueInvalid)
    );
    assert_eq!(
        Status::from_field(0x0287),
        Status::Media(MediaStatus::DeallocatedOrUnwrittenBlock)
    );
    assert_eq!(
        Status::from_field(0x0500),
        Status::Other {
            code_type: StatusCodeType::Reserved(5),
            code: 0
        }
    );
}

#[test]
fn a_completion_that_never_comes_times_out_after_cap_to() {
    let (model, mut controller) = up(ModelConfig::default(), 8);
    let page = buffer(&model, 1);
    let before = model.elapsed_microseconds();
    model.stall();
    assert_eq!(
        controller.read(0, 8, &addresses(&page)),
        Err(Error::Timeout {
            waiting_for: WaitingFor::Completion {
                queue: QueueKind::Io,
                opcode: READ
            },
            milliseconds: 1000
        })
    );
    // CAP.TO (2 x 500 ms) of 10 us polls, and not longer.
    assert_eq!(model.elapsed_microseconds() - before, 1_000_000);
}

#[test]
fn a_completion_for_another_command_is_refused() {
    let (model, mut controller) = up(ModelConfig::default(), 8);
    let page = buffer(&model, 1);
    model.corrupt_command_ids(1);
    let error = controller
        .read(0, 8, &addresses(&page))
        .expect_err("a completion for another command");
    let Error::UnexpectedCompletion {
        queue,
        expected_command_id,
        command_id,
        submission_queue,
    } = error
    else {
        panic!("{error}");
    };
    assert_eq!(queue, QueueKind::Io);
    assert_eq!(command_id, expected_command_id.wrapping_add(1));
    assert_eq!(submission_queue, 1);
    // The slot was consumed and the head doorbell moved: the queue pair
    // stays in step and the next command works.
    controller
        .read(0, 8, &addresses(&page))
        .expect("the next read");
    assert_clean(&model);
}

/// Interrupt mode: the I/O completion queue is created with IEN, so each
/// read raises an interrupt as the admin commands do; in polling mode only
/// the admin completion queue interrupts (the model completes at the
/// doorbell, so the driver never has to wait).
#[test]
fn interrupt_mode_enables_the_io_queues_interrupt() {
    let config = Config {
        queue_depth: 8,
        interrupts: true,
    };
    for interrupts in [false, true] {
        let model = Model::new(ModelConfig::default());
        let mut controller = bring_up_with(
            &model,
            Config {
                interrupts,
                ..config
            },
        )
        .unwrap_or_else(|error| panic!("bring-up failed: {error}"));
        let admin = model.interrupts_raised();
        let page = buffer(&model, 1);
        for lba in 0..4 {
            controller.read(lba * 8, 8, &addresses(&page)).unwrap();
        }
        let reads = model.interrupts_raised() - admin;
        assert_eq!(
            reads,
            if interrupts { 4 } else { 0 },
            "interrupts {interrupts}"
        );
        assert_eq!(model.interrupt_waits(), (0, 0));
        assert_clean(&model);
    }
}

/// Interrupt mode: a controller that never completes ends the command
/// after MAX_WAKES wakes with an error that says so.
#[test]
fn interrupt_mode_gives_up_after_bounded_wakes() {
    let model = Model::new(ModelConfig::default());
    let mut controller = bring_up_with(
        &model,
        Config {
            queue_depth: 8,
            interrupts: true,
        },
    )
    .unwrap();
    let page = buffer(&model, 1);
    model.stall();
    let error = controller.read(0, 8, &addresses(&page)).unwrap_err();
    assert_eq!(
        error,
        Error::NoCompletionAfterWakes {
            queue: QueueKind::Io,
            opcode: READ,
            wakes: MAX_WAKES
        }
    );
    assert!(
        error.to_string().contains("after 1000 interrupts"),
        "{error}"
    );
    // The first wait takes the interrupt the last admin completion left
    // pending; every other found none.
    let waits = u64::from(MAX_WAKES);
    assert_eq!(model.interrupt_waits(), (waits, waits - 1));
}
