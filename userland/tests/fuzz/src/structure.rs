//! The fuzzer's stateful half: it builds real structure and tears it down
//! at random, so that random deletes, revokes and unmaps meet objects other
//! objects refer to (the "What refers to what" table of `kernel/README.md`).
//!
//! Every object has a fixed slot of the root CNode ([`Role`]); a step picks
//! one action (create an object, install a table, map a frame in a CPU
//! space or an IoSpace, attach a device, bind a fault queue or an IRQ
//! handler, configure a thread, or delete/revoke/unmap something) and
//! issues its invocations with whatever is in the slots at the time. Most
//! fail (an empty slot, a mapping already there): that is the point, the
//! kernel must answer every one with a defined status. Nothing is tracked
//! on this side, so random calls of the other half may delete or move
//! anything here without confusing it.
//!
//! ```text
//! Untyped (8 MiB, slot 700) ── PageTable roots, tables, Frames, Tcbs,
//!                              Notifications, IoSpaces, IoFaultQueue
//! arena Untyped (FIRST_UNTYPED) ── CNodes (each thread's CSpace)
//! IommuControl ── IoDevices (edu at 00:04.0 and a second requester id)
//!                 └─ IoPasids (VT-d)
//! IoSpace ── IoUserTable (a nest once a device attaches through it)
//! IrqControl ── IrqHandler (x86_64: an MSI line, bound to an IoDevice)
//! ```
//!
//! Never: a `Wait` or `Recv` (nothing would signal it), a thread of higher
//! priority than the fuzzer (threads are created at priority 1 and never
//! run while the fuzzer does), anything on the fuzzer's own TCB, CNode,
//! address-space root or IPC buffer.

use abi::bootinfo::{FIRST_UNTYPED, INIT_CNODE, INIT_VSPACE, IOMMU_CONTROL, IRQ_CONTROL};
use abi::{Invocation, MessageInfo, ObjectType, Syscall};

use crate::Random;

/// First slot of the structure; the random half mostly uses 64..128.
const BASE: u32 = 700;

/// What each fixed slot holds (offsets from [`BASE`]).
struct Role;

impl Role {
    /// The 8 MiB Untyped everything but the CNodes is carved from.
    const UNTYPED: u32 = BASE;
    /// Two address-space roots (PageTables).
    const ROOTS: u32 = BASE + 1;
    /// Three lower tables per root: `TABLES + 3 * root + level`.
    const TABLES: u32 = BASE + 3;
    /// Eight 4 KiB Frames, then one 2 MiB Frame.
    const FRAMES: u32 = BASE + 10;
    const FRAME_COUNT: u32 = 9;
    /// Copies of the Frames: each holds one mapping, CPU or IO.
    const COPIES: u32 = BASE + 20;
    const COPY_COUNT: u32 = 16;
    /// Two CNodes (16 slots each), the threads' CSpaces.
    const CNODES: u32 = BASE + 40;
    /// Two TCBs.
    const TCBS: u32 = BASE + 42;
    /// Two Notifications (fault queues and IRQ handlers signal them).
    const NOTIFICATIONS: u32 = BASE + 44;
    /// Two IoSpaces.
    const SPACES: u32 = BASE + 46;
    /// Two IoDevices ([`REQUESTERS`]).
    const DEVICES: u32 = BASE + 48;
    /// Two IoPasids.
    const PASIDS: u32 = BASE + 50;
    /// One IoUserTable per IoSpace.
    const USER_TABLES: u32 = BASE + 52;
    /// One IoFaultQueue.
    const QUEUE: u32 = BASE + 54;
    /// One IrqHandler.
    const HANDLER: u32 = BASE + 55;
    /// One past the last.
    const END: u32 = BASE + 56;
}

/// Requester ids: edu at 00:04.0 (on every machine) and 00:05.0.
const REQUESTERS: [u64; 2] = [0x20, 0x28];
/// Where the structure's CPU mappings go: one 1 GiB region per root; the
/// fuzzer's own space (INIT_VSPACE) gets a third, far from its code,
/// stack, boot info and IPC buffer.
const REGIONS: [u64; 3] = [0x40_0000_0000, 0x40_4000_0000, 0x60_0000_0000];
/// IPAs the structure maps frames at in its IoSpaces.
const IO_BASE: u64 = 0x10_0000;
/// The interrupt line the IrqHandler takes: an MSI line on x86_64, an SPI
/// on aarch64.
#[cfg(target_arch = "x86_64")]
const LINE: u64 = 16;
#[cfg(not(target_arch = "x86_64"))]
const LINE: u64 = 40;

/// One invocation: its status code.
fn invoke(cap: u32, label: Invocation, mrs: &[u64], caps: &[u32]) -> u64 {
    let mut registers = [0; 4];
    registers[..mrs.len()].copy_from_slice(mrs);
    for (index, slot) in caps.iter().enumerate() {
        sys::ipc::set_cap(index, sys::Slot::new(*slot));
    }
    let info = MessageInfo {
        label: label as u32,
        length: mrs.len() as u8,
        extra_caps: caps.len() as u8,
    };
    sys::syscall(
        Syscall::Call as u64,
        u64::from(cap),
        info.to_word(),
        registers,
    )
    .status
}

/// A thread the structure may start: spins, never touches memory.
extern "C" fn spinner(_: u64) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// The structure's state: only which RAM Untyped to carve from next.
pub struct Structure {
    untypeds: heapless::Vec<u32, 64>,
    next_untyped: usize,
}

impl Structure {
    /// The RAM Untypeds of the boot info (the structure's Untyped is
    /// carved from one of them, the next when one is exhausted).
    pub fn new() -> Structure {
        let mut untypeds = heapless::Vec::new();
        if let Some(info) = rt::boot::boot_info() {
            for untyped in sys::untypeds::initial_untypeds(info) {
                if !untyped.is_device() && untyped.size() >= 16 << 20 {
                    let _ = untypeds.push(untyped.slot.index());
                }
            }
        }
        Structure {
            untypeds,
            next_untyped: 0,
        }
    }

    /// One step: picks an action and issues its invocations; `record`
    /// gets each one's status. Returns how many invocations it made.
    pub fn step(&mut self, random: &mut Random, record: &mut impl FnMut(u64)) -> u64 {
        let mut made = 0;
        let mut call = |cap: u32, label: Invocation, mrs: &[u64], caps: &[u32]| {
            record(invoke(cap, label, mrs, caps));
            made += 1;
        };
        let pick = |random: &mut Random, first: u32, count: u32| {
            first + random.below(u64::from(count)) as u32
        };
        match random.below(40) {
            // Create: the Untyped, then objects from it.
            0 => {
                if let Some(&source) = self.untypeds.get(self.next_untyped) {
                    self.next_untyped = (self.next_untyped + 1) % self.untypeds.len();
                    let args = [ObjectType::Untyped as u64, 23, u64::from(Role::UNTYPED), 1];
                    call(source, Invocation::UntypedRetype, &args, &[]);
                }
            }
            1..=4 => {
                let (kind, bits, first, count) = match random.below(9) {
                    0 => (ObjectType::PageTable, 12, Role::ROOTS, 2),
                    1 | 2 => (ObjectType::PageTable, 12, Role::TABLES, 6),
                    3 => (ObjectType::Frame, 12, Role::FRAMES, Role::FRAME_COUNT - 1),
                    4 => (
                        ObjectType::Frame,
                        21,
                        Role::FRAMES + Role::FRAME_COUNT - 1,
                        1,
                    ),
                    5 => (ObjectType::Tcb, 11, Role::TCBS, 2),
                    6 => (ObjectType::Notification, 5, Role::NOTIFICATIONS, 2),
                    7 => (ObjectType::IoFaultQueue, 0, Role::QUEUE, 1),
                    _ => (ObjectType::Cnode, 4, Role::CNODES, 2),
                };
                let dest = pick(random, first, count);
                let source = if kind == ObjectType::Cnode {
                    FIRST_UNTYPED
                } else {
                    Role::UNTYPED
                };
                let args = [kind as u64, bits, u64::from(dest), 1];
                call(source, Invocation::UntypedRetype, &args, &[]);
            }
            5 => {
                let dest = pick(random, Role::SPACES, 2);
                let args = [ObjectType::IoSpace as u64, 0, u64::from(dest), 1];
                call(
                    Role::UNTYPED,
                    Invocation::UntypedRetype,
                    &args,
                    &[IOMMU_CONTROL],
                );
            }
            6 => {
                let i = random.below(2) as usize;
                let dest = u64::from(Role::DEVICES + i as u32);
                call(
                    IOMMU_CONTROL,
                    Invocation::IommuMintDevice,
                    &[REQUESTERS[i], dest],
                    &[],
                );
            }
            7 => {
                let device = pick(random, Role::DEVICES, 2);
                let dest = pick(random, Role::PASIDS, 2);
                let pasid = 1 + random.below(4);
                call(
                    device,
                    Invocation::IoDeviceMintPasid,
                    &[pasid, u64::from(dest)],
                    &[],
                );
            }
            8 => {
                let space = pick(random, Role::SPACES, 2);
                let dest = Role::USER_TABLES + (space - Role::SPACES);
                let format = if cfg!(target_arch = "x86_64") { 1 } else { 2 };
                let root_ipa = IO_BASE + 4096 * random.below(4);
                call(
                    space,
                    Invocation::IoSpaceBindUserTable,
                    &[root_ipa, format, u64::from(dest)],
                    &[],
                );
            }
            9 => {
                let args = [LINE, u64::from(Role::HANDLER)];
                call(IRQ_CONTROL, Invocation::IrqControlGet, &args, &[]);
            }
            10 | 11 => {
                let dest = pick(random, Role::COPIES, Role::COPY_COUNT);
                let source = pick(random, Role::FRAMES, Role::FRAME_COUNT);
                let rights = [1, 3, 3, 7][random.below(4) as usize];
                call(
                    INIT_CNODE,
                    Invocation::CnodeCopy,
                    &[u64::from(dest), u64::from(source), rights],
                    &[],
                );
            }
            // Install tables, map and unmap frames in CPU spaces.
            12..=15 => {
                let (root, region) = self.space(random);
                let table = pick(random, Role::TABLES, 6);
                let address = region + 4096 * random.below(8);
                call(table, Invocation::PageTableMap, &[address], &[root]);
            }
            16..=19 => {
                let (root, region) = self.space(random);
                let copy = pick(random, Role::COPIES, Role::COPY_COUNT);
                // 4 KiB pages in the region's first 2 MiB; a 2 MiB frame
                // beside them; sometimes misaligned.
                let address = match random.below(8) {
                    0 => region + (2 << 20),
                    1 => region + 4096 * random.below(8) + 0x800,
                    _ => region + 4096 * random.below(8),
                };
                let rights = [1, 3, 5, 2, 6][random.below(5) as usize];
                call(copy, Invocation::FrameMap, &[address, rights], &[root]);
            }
            20 | 21 => {
                let copy = pick(random, Role::COPIES, Role::COPY_COUNT);
                call(copy, Invocation::FrameUnmap, &[], &[]);
            }
            22 => {
                let table = pick(random, Role::TABLES, 6);
                call(table, Invocation::PageTableUnmap, &[], &[]);
            }
            // IoSpaces: map and unmap frames, attach and detach devices.
            23..=25 => {
                let space = pick(random, Role::SPACES, 2);
                let copy = pick(random, Role::COPIES, Role::COPY_COUNT);
                let ipa = IO_BASE + 4096 * random.below(16);
                let rights = [1, 2, 3, 3][random.below(4) as usize];
                call(space, Invocation::IoSpaceMap, &[ipa, rights], &[copy]);
            }
            26 => {
                let space = pick(random, Role::SPACES, 2);
                let copy = pick(random, Role::COPIES, Role::COPY_COUNT);
                call(space, Invocation::IoSpaceUnmap, &[], &[copy]);
            }
            27 | 28 => {
                let device = pick(random, Role::DEVICES, 2);
                if random.below(3) == 0 {
                    let table = pick(random, Role::USER_TABLES, 2);
                    call(device, Invocation::IoDeviceAttachNested, &[], &[table]);
                } else {
                    let space = pick(random, Role::SPACES, 2);
                    call(device, Invocation::IoDeviceAttach, &[], &[space]);
                }
            }
            29 => {
                let device = pick(random, Role::DEVICES, 2);
                call(device, Invocation::IoDeviceDetach, &[], &[]);
            }
            30 => {
                let pasid = pick(random, Role::PASIDS, 2);
                if random.below(2) == 0 {
                    let target = if random.below(3) == 0 {
                        pick(random, Role::USER_TABLES, 2)
                    } else {
                        pick(random, Role::SPACES, 2)
                    };
                    call(pasid, Invocation::IoPasidAttach, &[], &[target]);
                } else {
                    call(pasid, Invocation::IoPasidDetach, &[], &[]);
                }
            }
            // Bindings: fault queues, IRQ handlers.
            31 => {
                let notification = pick(random, Role::NOTIFICATIONS, 2);
                let source = if random.below(2) == 0 {
                    pick(random, Role::DEVICES, 2)
                } else {
                    pick(random, Role::SPACES, 2)
                };
                call(
                    Role::QUEUE,
                    Invocation::IoFaultQueueBind,
                    &[],
                    &[notification, source],
                );
            }
            32 => {
                if random.below(2) == 0 {
                    let device = pick(random, Role::DEVICES, 2);
                    call(
                        Role::HANDLER,
                        Invocation::IrqHandlerMsiMessage,
                        &[],
                        &[device],
                    );
                } else {
                    let notification = pick(random, Role::NOTIFICATIONS, 2);
                    call(
                        Role::HANDLER,
                        Invocation::IrqHandlerSetNotification,
                        &[],
                        &[notification],
                    );
                }
            }
            // Threads: configured in a space of their own (or the
            // fuzzer's), with a CNode of their own and an IPC buffer.
            33 | 34 => {
                let tcb = pick(random, Role::TCBS, 2);
                let cnode = pick(random, Role::CNODES, 2);
                let (root, region) = self.space(random);
                let buffer = pick(random, Role::COPIES, Role::COPY_COUNT);
                let address = region + 4096 * random.below(8);
                call(
                    tcb,
                    Invocation::TcbConfigure,
                    &[0, address],
                    &[cnode, root, buffer],
                );
                if random.below(2) == 0 {
                    call(tcb, Invocation::TcbSetPriority, &[1], &[]);
                    let pc = spinner as *const () as u64;
                    call(tcb, Invocation::TcbWriteRegisters, &[pc, 0, 0], &[]);
                    call(tcb, Invocation::TcbResume, &[], &[]);
                }
            }
            35 => {
                let tcb = pick(random, Role::TCBS, 2);
                call(tcb, Invocation::TcbSuspend, &[], &[]);
            }
            // Teardown: delete or revoke what others refer to.
            _ => {
                let target = match random.below(64) {
                    0 => Role::UNTYPED,
                    _ => pick(random, Role::ROOTS, Role::END - Role::ROOTS),
                };
                // The Untyped is revoked, never deleted: its children die
                // and its memory is reused (a deleted one's would be lost
                // to its parent while the random half's objects live).
                // CNodes likewise: the arena's memory never comes back, and
                // revoking one takes the CSpace of the thread it was given.
                let cnode = (Role::CNODES..Role::CNODES + 2).contains(&target);
                let label = if target == Role::UNTYPED || cnode || random.below(3) == 0 {
                    Invocation::CnodeRevoke
                } else {
                    Invocation::CnodeDelete
                };
                call(INIT_CNODE, label, &[u64::from(target)], &[]);
            }
        }
        made
    }

    /// An address space to build in: one of the two roots (most often) or
    /// the fuzzer's own, and its region.
    fn space(&self, random: &mut Random) -> (u32, u64) {
        match random.below(5) {
            0 => (INIT_VSPACE, REGIONS[2]),
            n => {
                let root = (n % 2) as usize;
                (Role::ROOTS + root as u32, REGIONS[root])
            }
        }
    }
}
