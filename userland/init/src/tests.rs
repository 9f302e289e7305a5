//! Host tests of `system::build` against a stand-in kernel (`sys::host`)
//! that records every invocation: what each domain receives and under which
//! name, the badges of channel ends, that domains start last, and that a
//! refusal names the image entry.

use crate::system;
use abi::Invocation;
use std::cell::RefCell;
use std::rc::Rc;
use std::string::String;
use std::vec::Vec;
use sys::bootinfo::{self, BootInfo};
use sys::host::{SyscallIn, clear_kernel, set_kernel};
use sys::ipc::IpcBuffer;
use sys::syscall::SyscallOut;
use sys::{Endpoint, Error, MessageInfo, Notification};
use sysdesc::archive::{self, Arch, Entry, EntryKind};
use sysdesc::{
    Channel, ChannelEnd, ChannelKind, DmaGrant, IoMode, Mapping, MemoryRegion, Name, PageSize,
    PciAddress, ProtectionDomain, Rights, SystemDescription,
};

/// One invocation as the stand-in kernel saw it.
#[derive(Clone, Debug)]
struct Call {
    label: u32,
    mrs: [u64; 4],
}

/// Installs a kernel that records every call and answers `Ok`, except
/// `refuse`'s label, answered with its error.
fn recording(refuse: Option<(Invocation, Error)>) -> Rc<RefCell<Vec<Call>>> {
    let calls = Rc::new(RefCell::new(Vec::new()));
    let log = Rc::clone(&calls);
    set_kernel(move |call: SyscallIn, _buffer: &mut IpcBuffer| {
        let info = MessageInfo::from_word(call.info).expect("MessageInfo");
        log.borrow_mut().push(Call {
            label: info.label,
            mrs: call.mrs,
        });
        match refuse {
            Some((label, error)) if label as u32 == info.label => SyscallOut {
                status: u64::from(error.code()),
                ..SyscallOut::default()
            },
            // A retype made every object asked for (MR3), as MR0 says.
            _ if info.label == Invocation::UntypedRetype as u32 => SyscallOut {
                info: MessageInfo::new(0, 1).to_word(),
                mrs: [call.mrs[3], 0, 0, 0],
                ..SyscallOut::default()
            },
            _ => SyscallOut::default(),
        }
    });
    calls
}

pub(crate) fn name(text: &str) -> Name {
    Name::try_from(text).unwrap()
}

pub(crate) fn domain(pd: &str, program: &str, priority: u8) -> ProtectionDomain {
    ProtectionDomain {
        name: name(pd),
        program: name(program),
        priority,
        stack_size: 16 << 10,
        heap_size: 0,
        untyped_size: 0,
        console: sysdesc::ConsoleGrant::None,
        restarts: 0,
        inject: sysdesc::Inject::None,
    }
}

/// `images/pingpong.toml`, resolved.
fn pingpong() -> SystemDescription {
    let mut system = SystemDescription::default();
    system.domains.push(domain("server", "pong", 150)).unwrap();
    system.domains.push(domain("client", "ping", 100)).unwrap();
    system
        .regions
        .push(MemoryRegion {
            name: name("shared"),
            size: 4096,
            page_size: PageSize::Small,
        })
        .unwrap();
    let rw = Rights {
        read: true,
        write: true,
        execute: false,
    };
    for (domain, vaddr) in [(0, 0x1000_0000), (1, 0x2000_0000)] {
        system
            .maps
            .push(Mapping {
                domain,
                region: 0,
                vaddr,
                rights: rw,
            })
            .unwrap();
    }
    let end = |domain, id| ChannelEnd {
        domain,
        id,
        badge: 1 << id,
    };
    system
        .channels
        .push(Channel {
            kind: ChannelKind::Endpoint,
            ends: [end(1, 0), end(0, 0)],
        })
        .unwrap();
    system
        .channels
        .push(Channel {
            kind: ChannelKind::Notification,
            ends: [end(0, 1), end(1, 1)],
        })
        .unwrap();
    system
}

#[cfg(target_arch = "x86_64")]
const MACHINE: u16 = 62;
#[cfg(not(target_arch = "x86_64"))]
const MACHINE: u16 = 183;

/// An ELF64 executable for this host with no segments, entry 0x40_0000.
fn empty_elf() -> Vec<u8> {
    let mut elf = std::vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[6] = 1;
    elf[16..18].copy_from_slice(&2u16.to_le_bytes());
    elf[18..20].copy_from_slice(&MACHINE.to_le_bytes());
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[24..32].copy_from_slice(&0x40_0000u64.to_le_bytes());
    elf[52..54].copy_from_slice(&64u16.to_le_bytes());
    elf[54..56].copy_from_slice(&56u16.to_le_bytes());
    elf
}

/// An archive of `system` with an empty program for each of `programs`
/// (sorted by name).
fn archive_of(system: &SystemDescription, programs: &[&str]) -> Vec<u8> {
    let mut description = std::vec![0u8; 8192];
    let used = system.encode(&mut description).unwrap().len();
    let program = empty_elf();
    let mut entries = std::vec![Entry {
        name: archive::DESCRIPTION_NAME,
        kind: EntryKind::Description,
        offset: 4096,
        size: used as u64,
    }];
    for (index, name) in programs.iter().enumerate() {
        entries.push(Entry {
            name,
            kind: EntryKind::Program,
            offset: 4096 * (3 + index as u64),
            size: program.len() as u64,
        });
    }
    let size = entries.last().map_or(0, |last| last.offset + last.size);
    let mut bytes = std::vec![0u8; size as usize];
    bytes[..archive::HEADER_SIZE].copy_from_slice(&archive::encode_header(
        Arch::X86_64,
        entries.len() as u32,
        size,
    ));
    for (index, entry) in entries.iter().enumerate() {
        let at = archive::HEADER_SIZE + index * archive::ENTRY_SIZE;
        bytes[at..at + archive::ENTRY_SIZE].copy_from_slice(&archive::encode_entry(entry).unwrap());
    }
    bytes[4096..4096 + used].copy_from_slice(&description[..used]);
    for entry in &entries[1..] {
        let start = entry.offset as usize;
        bytes[start..start + program.len()].copy_from_slice(&program);
    }
    bytes
}

fn boot_info() -> BootInfo {
    let mut info = BootInfo {
        magic: bootinfo::BOOT_INFO_MAGIC,
        version: 1,
        untyped_count: 2,
        first_free_slot: 18,
        image_address: 0,
        image_length: 0,
        untypeds: [Default::default(); bootinfo::MAX_UNTYPEDS],
    };
    info.untypeds[0].size_bits = 17;
    info.untypeds[1].size_bits = 28;
    info
}

fn build(system: &SystemDescription, programs: &[&str]) -> Result<system::System, String> {
    let bytes = archive_of(system, programs);
    let archive = archive::Archive::parse(&bytes).unwrap();
    let mut objects = rt::space::Objects::from_boot_info(&boot_info());
    system::build(&archive, system, &mut objects)
}

fn labelled(calls: &[Call], label: Invocation) -> Vec<Call> {
    calls
        .iter()
        .filter(|call| call.label == label as u32)
        .cloned()
        .collect()
}

#[test]
fn pingpong_domains_get_their_channels_by_name_and_start_last() {
    let calls = recording(None);
    let built = build(&pingpong(), &["ping", "pong"]).unwrap();
    clear_kernel();
    let names: Vec<&str> = built
        .domains
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(names, ["server", "client"]);
    assert_eq!(built.domain_of(1), Some("server"));
    assert_eq!(built.domain_of(2), Some("client"));
    assert_eq!(built.domain_of(0), None);
    assert_eq!(built.domain_of(3), None);
    for (name, table) in &built.domains {
        assert!(table.lookup::<Endpoint>("channel0").is_some(), "{name}");
        assert!(table.lookup::<Notification>("channel1").is_some(), "{name}");
        assert_eq!(table.count, 2, "{name}");
    }
    let calls = calls.borrow();
    // The first end of each channel holds a copy badged with the second
    // end's badge: 1 << 0 for the endpoint, 1 << 1 for the notification;
    // then each domain's fault handler, badged with its index + 1.
    let badges: Vec<u64> = labelled(&calls, Invocation::CnodeMint)
        .iter()
        .map(|call| call.mrs[3])
        .filter(|&badge| badge != 0)
        .collect();
    assert_eq!(badges, [1, 2, 1, 2]);
    assert_eq!(labelled(&calls, Invocation::TcbSetFaultHandler).len(), 2);
    let registers = labelled(&calls, Invocation::TcbWriteRegisters);
    assert_eq!(registers.len(), 2);
    for call in &registers {
        assert_eq!(
            call.mrs[..3],
            [
                0x40_0000,
                sys::names::STACK_TOP,
                sys::names::CAP_TABLE_ADDRESS
            ]
        );
    }
    let priorities: Vec<u64> = labelled(&calls, Invocation::TcbSetPriority)
        .iter()
        .map(|call| call.mrs[0])
        .collect();
    assert_eq!(priorities, [150, 100]);
    // Nothing is resumed before every capability is in place.
    let first_resume = calls
        .iter()
        .position(|call| call.label == Invocation::TcbResume as u32)
        .unwrap();
    assert!(
        calls[first_resume..]
            .iter()
            .all(|call| call.label != Invocation::CnodeCopy as u32
                && call.label != Invocation::UntypedRetype as u32),
        "a domain started before the system was built"
    );
    assert_eq!(labelled(&calls, Invocation::TcbResume).len(), 2);
}

/// A grant of the edu at 00:04.0 to domain 0: a 2 MiB stage-2 IoSpace,
/// no PASIDs, no fault queue.
pub(crate) fn edu_grant(on_request: bool) -> DmaGrant {
    DmaGrant {
        device: PciAddress::parse("00:04.0").unwrap(),
        domain: 0,
        iospace_size: 2 << 20,
        mode: IoMode::Stage2,
        pasids: Default::default(),
        fault_queue: false,
        on_request,
        msi: on_request,
    }
}

#[test]
fn a_refused_grant_names_the_domain_and_the_device_and_starts_nothing() {
    let mut system = SystemDescription::default();
    system.domains.push(domain("driver", "hello", 200)).unwrap();
    system.dma_grants.push(edu_grant(false)).unwrap();
    let calls = recording(Some((Invocation::IommuMintDevice, Error::NotSupported)));
    let error = build(&system, &["hello"]).unwrap_err();
    clear_kernel();
    assert_eq!(
        error,
        "dma_grant 0 (device 00:04.0 for protection_domain \"driver\"): IommuControl.MintDevice: the kernel answered NotSupported"
    );
    assert!(labelled(&calls.borrow(), Invocation::TcbResume).is_empty());
}

#[test]
fn a_domain_with_an_untyped_gets_it_with_its_own_cnode_and_vspace() {
    let calls = recording(None);
    let mut system = pingpong();
    system.domains[1].untyped_size = 64 << 10;
    let built = build(&system, &["ping", "pong"]).unwrap();
    clear_kernel();
    let (_, server) = &built.domains[0];
    let (_, client) = &built.domains[1];
    assert!(server.lookup::<sys::Untyped>("untyped").is_none());
    assert!(server.lookup::<sys::CNode>("cnode").is_none());
    assert_eq!(server.count, 2);
    let untyped = client.lookup::<sys::Untyped>("untyped").unwrap();
    let cnode = client.lookup::<sys::CNode>("cnode").unwrap();
    let vspace = client.lookup::<sys::PageTable>("vspace").unwrap();
    assert_eq!(
        [untyped.slot(), cnode.slot(), vspace.slot()].map(sys::Slot::index),
        [1, 2, 3],
        "the three come first, before the channels"
    );
    assert_eq!(client.count, 5);
    // One 64 KiB Untyped (2^16) was retyped for it.
    let untypeds = labelled(&calls.borrow(), Invocation::UntypedRetype)
        .into_iter()
        .filter(|call| call.mrs[0] == sys::ObjectType::Untyped as u64)
        .map(|call| call.mrs[1])
        .collect::<Vec<_>>();
    assert_eq!(untypeds, [16]);
}

#[test]
fn a_damaged_description_is_refused_naming_the_entry() {
    let _calls = recording(None);
    let mut system = pingpong();
    system.maps[1].region = 9;
    let error = build(&system, &["ping", "pong"]).unwrap_err();
    assert_eq!(error, "map 1: domain 1 or region 9 does not exist");
    let mut system = pingpong();
    system.channels[0].ends[1].id = 64;
    let error = build(&system, &["ping", "pong"]).unwrap_err();
    assert!(error.starts_with("channel 0: "), "{error}");
    let mut system = pingpong();
    system.domains[0].untyped_size = 48 << 10;
    let error = build(&system, &["ping", "pong"]).unwrap_err();
    assert!(
        error.starts_with("protection_domain 0 (\"server\"): an untyped of 49152 bytes"),
        "{error}"
    );
    let mut system = pingpong();
    system.regions[0].size = 100;
    let error = build(&system, &["ping", "pong"]).unwrap_err();
    assert!(
        error.starts_with("memory_region 0 (\"shared\"): 100 bytes"),
        "{error}"
    );
    clear_kernel();
}

#[test]
fn a_program_missing_from_the_image_names_the_domain() {
    let _calls = recording(None);
    let error = build(&pingpong(), &["pong"]).unwrap_err();
    clear_kernel();
    assert!(
        error.starts_with("protection_domain \"client\": program `ping` is not in the image"),
        "{error}"
    );
}

#[test]
fn a_domain_gets_the_console_it_asks_for_and_no_more_rights() {
    let calls = recording(None);
    let mut system = pingpong();
    system.domains[0].console = sysdesc::ConsoleGrant::Write;
    system.domains[1].console = sysdesc::ConsoleGrant::Halt;
    let built = build(&system, &["ping", "pong"]).unwrap();
    clear_kernel();
    for (name, table) in &built.domains {
        assert!(table.lookup::<sys::Console>("console").is_some(), "{name}");
    }
    // Each domain's Console is a copy of init's (`bootinfo::CONSOLE`, MR1)
    // with the rights the image asked for (MR2): write; write and grant.
    let rights: Vec<u64> = labelled(&calls.borrow(), Invocation::CnodeCopy)
        .iter()
        .filter(|call| call.mrs[1] == u64::from(sys::bootinfo::CONSOLE.slot().index()))
        .map(|call| call.mrs[2])
        .collect();
    let write = u64::from(sys::Rights::WRITE.bits());
    let halt = u64::from((sys::Rights::WRITE | sys::Rights::GRANT).bits());
    assert_eq!(rights, [write, halt]);
    // Without `console` a domain gets none (the other tests' domains).
    let calls = recording(None);
    let built = build(&pingpong(), &["ping", "pong"]).unwrap();
    clear_kernel();
    assert!(
        built
            .domains
            .iter()
            .all(|(_, table)| table.lookup::<sys::Console>("console").is_none())
    );
    drop(calls);
}
