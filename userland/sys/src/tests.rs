//! Host tests of the wrappers' encoding against a recording stand-in kernel:
//! every `abi::Invocation` label is produced by exactly the method that
//! documents it, with the registers and extra capabilities `abi` describes.

use crate::host::{SyscallIn, clear_kernel, set_kernel};
use crate::ipc::{self, IpcBuffer};
use crate::syscall::{SyscallOut, UNKNOWN_STATUS};
use crate::*;
use std::cell::RefCell;
use std::rc::Rc;
use std::vec::Vec;

/// One call as the kernel saw it: registers and the extra-capability slots.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    number: u64,
    cap: u64,
    label: u32,
    mrs: Vec<u64>,
    caps: Vec<u32>,
}

/// Installs a kernel that records every call and answers `reply` (writing
/// `buffer_mrs` to MR4.. of the IPC buffer); a successful `UntypedRetype`
/// is answered as the kernel does, with MR0 = every object asked for.
fn recording(reply: SyscallOut, buffer_mrs: &'static [u64]) -> Rc<RefCell<Vec<Seen>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let log = Rc::clone(&seen);
    set_kernel(move |call: SyscallIn, buffer: &mut IpcBuffer| {
        let info = MessageInfo::from_word(call.info).expect("well-formed MessageInfo");
        let length = usize::from(info.length);
        let mut mrs = call.mrs[..length.min(4)].to_vec();
        mrs.extend_from_slice(&buffer.mrs[4..length.max(4)]);
        log.borrow_mut().push(Seen {
            number: call.number,
            cap: call.cap,
            label: info.label,
            mrs,
            caps: buffer.caps[..usize::from(info.extra_caps)].to_vec(),
        });
        for (index, value) in buffer_mrs.iter().enumerate() {
            buffer.mrs[4 + index] = *value;
        }
        if info.label == Invocation::UntypedRetype as u32 && reply.status == 0 {
            return made(call.mrs[3]);
        }
        reply
    });
    seen
}

fn ok() -> SyscallOut {
    SyscallOut::default()
}

/// A successful `UntypedRetype` reply: `count` objects made (MR0).
fn made(count: u64) -> SyscallOut {
    SyscallOut {
        info: MessageInfo::new(0, 1).to_word(),
        mrs: [count, 0, 0, 0],
        ..ok()
    }
}

/// Slot `index`.
fn slot(index: u32) -> Slot {
    Slot::new(index)
}

/// A handle for slot `index`, as a test names one.
fn cap<T: CapType>(index: u32) -> Cap<T> {
    Cap::from_slot(slot(index))
}

fn seen_one(seen: &Rc<RefCell<Vec<Seen>>>) -> Seen {
    let calls = seen.borrow();
    assert_eq!(calls.len(), 1, "{calls:?}");
    calls[0].clone()
}

fn expect(seen: &Rc<RefCell<Vec<Seen>>>, cap: u32, label: Invocation, mrs: &[u64], caps: &[u32]) {
    let call = seen_one(seen);
    assert_eq!(
        call,
        Seen {
            number: Syscall::Call as u64,
            cap: u64::from(cap),
            label: label as u32,
            mrs: mrs.to_vec(),
            caps: caps.to_vec(),
        }
    );
    seen.borrow_mut().clear();
}

/// Every label, each produced by its method with `abi`'s argument order.
#[test]
fn every_invocation_is_encoded_as_abi_describes() {
    use Invocation as I;
    let seen = recording(ok(), &[]);
    let mut covered = Vec::new();
    let mut check = |label: I, cap: u32, mrs: &[u64], caps: &[u32]| {
        expect(&seen, cap, label, mrs, caps);
        covered.push(label);
    };

    let untyped: Cap<Untyped> = cap(16);
    let frames = untyped.retype_many::<Frame>(12, slot(40), 3).unwrap();
    assert_eq!(
        frames.iter().collect::<Vec<_>>(),
        [cap::<Frame>(40), cap(41), cap(42)]
    );
    check(I::UntypedRetype, 16, &[5, 12, 40, 3], &[]);
    let endpoint: Cap<Endpoint> = untyped.retype(slot(43)).unwrap();
    assert_eq!(endpoint, cap(43));
    expect(&seen, 16, I::UntypedRetype, &[3, 0, 43, 1], &[]);
    let cnode: Cap<CNode> = untyped.retype_sized(4, slot(44)).unwrap();
    assert_eq!(cnode, cap(44));
    expect(&seen, 16, I::UntypedRetype, &[1, 4, 44, 1], &[]);
    let space = untyped.retype_io_space(cap(5), slot(41)).unwrap();
    assert_eq!(space, cap(41));
    expect(&seen, 16, I::UntypedRetype, &[11, 0, 41, 1], &[5]);

    let cnode: Cap<CNode> = cap(1);
    let source: Cap<Endpoint> = cap(31);
    assert_eq!(cnode.copy(slot(30), source, Rights::READ), Ok(cap(30)));
    check(I::CnodeCopy, 1, &[30, 31, 1], &[]);
    cnode
        .copy_from(slot(30), cap(9), slot(31), Rights::READ)
        .unwrap();
    expect(&seen, 1, I::CnodeCopy, &[30, 31, 1], &[9]);
    let minted = cnode.mint(slot(30), source, Rights::ALL, 0xBEEF).unwrap();
    assert_eq!(minted, cap::<Endpoint>(30));
    check(I::CnodeMint, 1, &[30, 31, 7, 0xBEEF], &[]);
    assert_eq!(cnode.move_(slot(32), cap::<Frame>(33)), Ok(cap(32)));
    check(I::CnodeMove, 1, &[32, 33], &[]);
    cnode.delete(slot(34)).unwrap();
    check(I::CnodeDelete, 1, &[34], &[]);
    cnode.revoke(slot(35)).unwrap();
    check(I::CnodeRevoke, 1, &[35], &[]);

    let tcb: Cap<Tcb> = cap(2);
    tcb.configure(
        Some(cap(9)),
        cap(1),
        cap(3),
        cap(50),
        ipc::IPC_BUFFER_ADDRESS,
    )
    .unwrap();
    check(
        I::TcbConfigure,
        2,
        &[9, ipc::IPC_BUFFER_ADDRESS],
        &[1, 3, 50],
    );
    tcb.set_priority(200).unwrap();
    check(I::TcbSetPriority, 2, &[200], &[]);
    tcb.write_registers(0x40_0000, 0x80_0000, 0x1000).unwrap();
    check(
        I::TcbWriteRegisters,
        2,
        &[0x40_0000, 0x80_0000, 0x1000],
        &[],
    );
    tcb.resume().unwrap();
    check(I::TcbResume, 2, &[], &[]);
    tcb.suspend().unwrap();
    check(I::TcbSuspend, 2, &[], &[]);
    tcb.set_fault_handler(cap(9)).unwrap();
    check(I::TcbSetFaultHandler, 2, &[9], &[]);

    let frame: Cap<Frame> = cap(50);
    frame
        .map(cap(3), 0x1000_0000, MapRights::READ_WRITE)
        .unwrap();
    check(I::FrameMap, 50, &[0x1000_0000, 3], &[3]);
    frame.unmap().unwrap();
    check(I::FrameUnmap, 50, &[], &[]);
    let table: Cap<PageTable> = cap(51);
    table.map(cap(3), 0x2000_0000).unwrap();
    check(I::PageTableMap, 51, &[0x2000_0000], &[3]);
    table.unmap().unwrap();
    check(I::PageTableUnmap, 51, &[], &[]);

    let irq_control: Cap<IrqControl> = cap(4);
    let handler = irq_control.get(33, slot(60)).unwrap();
    assert_eq!(handler, cap(60));
    check(I::IrqControlGet, 4, &[33, 60], &[]);
    handler.ack().unwrap();
    check(I::IrqHandlerAck, 60, &[], &[]);
    handler.set_notification(cap(61)).unwrap();
    check(I::IrqHandlerSetNotification, 60, &[], &[61]);

    let control: Cap<IommuControl> = cap(5);
    let device = control.mint_device(0x0010, slot(70)).unwrap();
    assert_eq!(device, cap(70));
    check(I::IommuMintDevice, 5, &[0x10, 70], &[]);

    let space: Cap<IoSpace> = cap(71);
    let user_table: Cap<IoUserTable> = cap(72);
    device.attach(space).unwrap();
    check(I::IoDeviceAttach, 70, &[], &[71]);
    device.attach_nested(user_table).unwrap();
    check(I::IoDeviceAttachNested, 70, &[], &[72]);
    device.detach().unwrap();
    check(I::IoDeviceDetach, 70, &[], &[]);
    device.bind_vspace(table).unwrap();
    check(I::IoDeviceBindVSpace, 70, &[], &[51]);
    let pasid = device.mint_pasid(1, slot(73)).unwrap();
    assert_eq!(pasid, cap(73));
    check(I::IoDeviceMintPasid, 70, &[1, 73], &[]);

    space.map(frame, 0x10_0000, MapRights::READ).unwrap();
    check(I::IoSpaceMap, 71, &[0x10_0000, 1], &[50]);
    space.unmap(frame).unwrap();
    check(I::IoSpaceUnmap, 71, &[], &[50]);
    let bound = space
        .bind_user_table(
            0x20_0000,
            UserTableFormat::ArmStage1Granule4k48Bit,
            slot(72),
        )
        .unwrap();
    assert_eq!(bound, user_table);
    check(I::IoSpaceBindUserTable, 71, &[0x20_0000, 2, 72], &[]);

    pasid.attach(user_table).unwrap();
    check(I::IoPasidAttach, 73, &[], &[72]);
    pasid.attach(space).unwrap();
    expect(&seen, 73, I::IoPasidAttach, &[], &[71]);
    pasid.detach().unwrap();
    check(I::IoPasidDetach, 73, &[], &[]);
    pasid.bind_vspace(table).unwrap();
    check(I::IoPasidBindVSpace, 73, &[], &[51]);

    let queue: Cap<IoFaultQueue> = cap(80);
    queue.bind(cap(81), device).unwrap();
    check(I::IoFaultQueueBind, 80, &[], &[81, 70]);
    queue.bind(cap(81), space).unwrap();
    expect(&seen, 80, I::IoFaultQueueBind, &[], &[81, 71]);
    queue.respond(7, PageResponse::Failure).unwrap();
    check(I::IoFaultQueueRespond, 80, &[7, 2], &[]);

    // Replies with registers: answered by their own kernels below; the
    // empty reply here is what a kernel that skipped them would send.
    assert_eq!(control.identify(), Err(UNKNOWN_STATUS));
    check(I::IommuIdentify, 5, &[], &[]);
    space.set_dirty_tracking(true).unwrap();
    check(I::IoSpaceSetDirtyTracking, 71, &[1], &[]);
    assert_eq!(
        space.read_dirty(0x10_0000, 512, frame, true),
        Err(UNKNOWN_STATUS)
    );
    check(I::IoSpaceReadDirty, 71, &[0x10_0000, 512, 1], &[50]);
    assert_eq!(user_table.invalidate(0, 0), Err(UNKNOWN_STATUS));
    check(I::IoUserTableInvalidate, 72, &[0, 0], &[]);
    assert_eq!(queue.pop(), Ok(None));
    check(I::IoFaultQueuePop, 80, &[], &[]);
    assert_eq!(handler.msi_message(cap(70)), Err(UNKNOWN_STATUS));
    check(I::IrqHandlerMsiMessage, 60, &[], &[70]);

    clear_kernel();
    for label in Invocation::ALL {
        assert!(covered.contains(&label), "{label:?} has no wrapper test");
    }
}

#[test]
fn identify_decodes_six_registers() {
    let reply = SyscallOut {
        info: MessageInfo::new(0, 6).to_word(),
        mrs: [1, 0b1010, 20, (1 << 12) | (1 << 21) | (1 << 30)],
        ..ok()
    };
    let _seen = recording(reply, &[65536, 0b1110]);
    let info = cap::<IommuControl>(5).identify().unwrap();
    clear_kernel();
    assert_eq!(
        info,
        IommuInfo {
            vendor: Vendor::VtD,
            stage1: false,
            stage2: true,
            hardware_nesting: false,
            shadow_nesting: true,
            first_stage_spaces: false,
            pasid_bits: 20,
            page_sizes: (1 << 12) | (1 << 21) | (1 << 30),
            domain_ids: 65536,
            dirty_tracking: false,
            first_stage_dirty: true,
            page_requests: true,
            stall: true,
        }
    );
    assert!(info.supports_page_size(21));
    assert!(!info.supports_page_size(13));
    assert!(!info.supports_page_size(200));
}

#[test]
fn pop_decodes_six_registers() {
    let reply = SyscallOut {
        info: MessageInfo::new(0, 6).to_word(),
        mrs: [0x77, u64::MAX, 0xDEAD_0000, 2],
        ..ok()
    };
    let _seen = recording(reply, &[2, 0x5]);
    let record = cap::<IoFaultQueue>(80).pop().unwrap();
    clear_kernel();
    assert_eq!(
        record,
        Some(FaultRecord {
            badge: 0x77,
            pasid: None,
            address: 0xDEAD_0000,
            read: false,
            write: true,
            stage: 2,
            reason: 5,
        })
    );
    assert_eq!(
        FaultRecord::from_registers([0, 3, 0, 1, 1, 0]).pasid,
        Some(3)
    );
    assert_eq!(record.unwrap().page_request(), None);
    // Stage 0: a page request, MR5 its id.
    let request = FaultRecord::from_registers([0x77, 1, 0x2000, 2, 0, 9]);
    assert_eq!(request.page_request(), Some(9));
}

#[test]
fn a_short_pop_reply_is_not_guessed_at() {
    let reply = SyscallOut {
        info: MessageInfo::new(0, 3).to_word(),
        ..ok()
    };
    let _seen = recording(reply, &[]);
    assert_eq!(cap::<IoFaultQueue>(80).pop(), Err(UNKNOWN_STATUS));
    clear_kernel();
}

#[test]
fn invalidate_range_follows_the_kernels_progress() {
    let progress = Rc::new(RefCell::new(Vec::new()));
    let log = Rc::clone(&progress);
    set_kernel(move |call: SyscallIn, _: &mut IpcBuffer| {
        let [start, length, ..] = call.mrs;
        log.borrow_mut().push((start, length));
        // Process at most 0x1000 per call, like a bounded shadow walk,
        // with one invalidation command each.
        SyscallOut {
            info: MessageInfo::new(0, 2).to_word(),
            mrs: [start + length.min(0x1000), 1, 0, 0],
            ..SyscallOut::default()
        }
    });
    let table: Cap<IoUserTable> = cap(72);
    table.invalidate_range(0x1_0000, 0x2800).unwrap();
    assert_eq!(
        *progress.borrow(),
        [(0x1_0000, 0x2800), (0x1_1000, 0x1800), (0x1_2000, 0x800)]
    );
    assert_eq!(table.invalidate_range(0, 0), Err(Error::InvalidArgument));
    assert_eq!(
        table.invalidate_counting(0x1_0000, 0x800),
        Ok((0x1_0800, 1))
    );

    // A kernel that makes no progress is reported, not looped on.
    set_kernel(|call: SyscallIn, _: &mut IpcBuffer| SyscallOut {
        info: MessageInfo::new(0, 2).to_word(),
        mrs: [call.mrs[0], 0, 0, 0],
        ..SyscallOut::default()
    });
    assert_eq!(table.invalidate_range(0, 0x1000), Err(UNKNOWN_STATUS));
    clear_kernel();
}

#[test]
fn errors_come_back_by_number() {
    let reply = SyscallOut {
        status: u64::from(Error::AlreadyMapped.code()),
        ..ok()
    };
    let _seen = recording(reply, &[]);
    let space: Cap<IoSpace> = cap(71);
    assert_eq!(
        space.map(cap(50), 0, MapRights::READ),
        Err(Error::AlreadyMapped)
    );
    let unknown = SyscallOut {
        status: 1000,
        ..ok()
    };
    let _seen = recording(unknown, &[]);
    assert_eq!(space.unmap(cap(50)), Err(UNKNOWN_STATUS));
    let malformed = SyscallOut {
        info: u64::MAX,
        ..ok()
    };
    let _seen = recording(malformed, &[]);
    assert_eq!(space.unmap(cap(50)), Err(UNKNOWN_STATUS));
    clear_kernel();
}

#[test]
fn plain_ipc_uses_the_register_table() {
    let reply = SyscallOut {
        badge: 0x42,
        info: MessageInfo::new(9, 5).to_word(),
        mrs: [1, 2, 3, 4],
        ..ok()
    };
    let seen = recording(reply, &[5]);
    let endpoint: Cap<Endpoint> = cap(12);
    ipc::set_mr(4, 99);
    let received = endpoint
        .call(MessageInfo::new(7, 5), [10, 11, 12, 13])
        .unwrap();
    assert_eq!(
        received,
        Received {
            badge: 0x42,
            info: MessageInfo::new(9, 5),
            mrs: [1, 2, 3, 4],
        }
    );
    assert_eq!(ipc::mr(4), 5);
    let call = seen_one(&seen);
    assert_eq!(call.number, Syscall::Call as u64);
    assert_eq!((call.cap, call.label), (12, 7));
    assert_eq!(call.mrs, [10, 11, 12, 13, 99]);
    seen.borrow_mut().clear();

    endpoint.send(MessageInfo::new(1, 0), [0; 4]).unwrap();
    assert_eq!(seen_one(&seen).number, Syscall::Send as u64);
    seen.borrow_mut().clear();
    endpoint.recv().unwrap();
    assert_eq!(seen_one(&seen).number, Syscall::Recv as u64);
    seen.borrow_mut().clear();
    endpoint
        .reply_recv(MessageInfo::new(0, 1), [1, 0, 0, 0])
        .unwrap();
    assert_eq!(seen_one(&seen).number, Syscall::ReplyRecv as u64);
    seen.borrow_mut().clear();

    let notification: Cap<Notification> = cap(13);
    notification.signal().unwrap();
    assert_eq!(seen_one(&seen).number, Syscall::Signal as u64);
    seen.borrow_mut().clear();
    assert_eq!(notification.wait(), Ok(0x42));
    assert_eq!(seen_one(&seen).number, Syscall::Wait as u64);
    clear_kernel();
}

#[test]
fn debug_calls_pass_their_argument_in_the_capability_register() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let log = Rc::clone(&seen);
    set_kernel(move |call: SyscallIn, _: &mut IpcBuffer| {
        log.borrow_mut().push((call.number, call.cap, call.mrs[0]));
        SyscallOut::default()
    });
    debug_put_str("hi").unwrap();
    yield_now();
    clear_kernel();
    assert_eq!(
        *seen.borrow(),
        [
            (Syscall::DebugPutChar as u64, 8, u64::from(b'h')),
            (Syscall::DebugPutChar as u64, 8, u64::from(b'i')),
            (Syscall::Yield as u64, 0, 0),
        ]
    );
}

#[test]
fn thread_names_travel_in_the_message_registers_and_are_never_cut_short() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let log = Rc::clone(&seen);
    set_kernel(move |call: SyscallIn, _: &mut IpcBuffer| {
        log.borrow_mut().push((call.number, call.cap, call.mrs));
        SyscallOut::default()
    });
    let tcb = cap::<Tcb>(9);
    tcb.set_debug_name("edu_driver").unwrap();
    let longest = "x".repeat(32);
    tcb.set_debug_name(&longest).unwrap();
    let too_long = "y".repeat(33);
    assert_eq!(tcb.set_debug_name(&too_long), Err(Error::InvalidArgument));
    assert_eq!(debug_cap_dump(), Ok(()));
    clear_kernel();
    let seen = seen.borrow();
    assert_eq!(seen.len(), 3, "the over-long name reached the kernel");
    let word = |text: &[u8]| {
        let mut bytes = [0u8; 8];
        bytes[..text.len()].copy_from_slice(text);
        u64::from_le_bytes(bytes)
    };
    assert_eq!(
        seen[0],
        (
            Syscall::DebugNameThread as u64,
            9,
            [word(b"edu_driv"), word(b"er"), 0, 0]
        )
    );
    assert_eq!(seen[1].2, [word(b"xxxxxxxx"); 4]);
    assert_eq!(seen[2].0, Syscall::DebugCapDump as u64);
}

/// The marker types carry the model's kind numbers.
#[test]
fn marker_kinds_match_the_model() {
    assert_eq!(Untyped::KIND, ObjectKind::Untyped);
    assert_eq!(IoFaultQueue::KIND, ObjectKind::IoFaultQueue);
    assert_eq!(IoFaultQueue::KIND as u8, 14);
    assert_eq!(PageTable::KIND as u8, 6);
}

/// `retype_many` turns the kernel's "made fewer" reply into an error that
/// says how many, and a single retype never reports a count it did not ask
/// for as success.
#[test]
fn a_partial_retype_is_an_error_naming_what_was_made() {
    let untyped: Cap<Untyped> = cap(16);
    set_kernel(|_: SyscallIn, _: &mut IpcBuffer| made(2));
    assert_eq!(
        untyped.retype_many::<Notification>(0, slot(40), 5),
        Err(RetypeError::Partial {
            first: slot(40),
            made: 2,
            requested: 5,
        })
    );
    let all = untyped.retype_many::<Notification>(0, slot(40), 2).unwrap();
    assert_eq!((all.first(), all.count()), (cap(40), 2));
    assert_eq!(all.get(1), Some(cap(41)));
    assert_eq!(all.get(2), None);
    // More than asked for, none, or no count at all: not the ABI.
    assert_eq!(
        untyped.retype_many::<Notification>(0, slot(40), 1),
        Err(RetypeError::Refused(UNKNOWN_STATUS))
    );
    assert_eq!(untyped.retype::<Endpoint>(slot(40)), Err(UNKNOWN_STATUS));
    set_kernel(|_: SyscallIn, _: &mut IpcBuffer| made(0));
    assert_eq!(untyped.retype::<Endpoint>(slot(40)), Err(UNKNOWN_STATUS));
    set_kernel(|_: SyscallIn, _: &mut IpcBuffer| ok());
    assert_eq!(
        untyped.retype_io_space(cap(5), slot(40)),
        Err(UNKNOWN_STATUS)
    );
    // A refusal made nothing.
    set_kernel(|_: SyscallIn, _: &mut IpcBuffer| SyscallOut {
        status: u64::from(Error::UntypedExhausted.code()),
        ..ok()
    });
    assert_eq!(
        untyped.retype_many::<Frame>(12, slot(40), 3),
        Err(RetypeError::Refused(Error::UntypedExhausted))
    );
    assert_eq!(
        untyped.retype_sized::<Frame>(12, slot(40)),
        Err(Error::UntypedExhausted)
    );
    clear_kernel();
}
