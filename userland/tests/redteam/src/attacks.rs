//! The attacker: every attack a domain can try with what an image can give
//! it, each a test that passes only when the attack is refused or has no
//! effect. What it holds (`images/redteam.toml`): a 64 KiB Untyped, copies
//! of its own CNode and VSpace root, the endpoint `init` (send right only,
//! badged with its domain) through which it asks for the edu at 00:04.0
//! (a `stage2` grant made on request, with a fault queue), its DMA buffer
//! `attacker_dma` (8 KiB at [`BUFFER_VA`], IPA [`BUFFER_IPA`]) and the
//! calling end of an endpoint to the honest domain.
//!
//! The attacks, in order (the test names):
//!
//! - `page_table_unmap_of_a_used_table_is_refused`: a last-level table of
//!   its own that maps a Frame cannot leave its address space
//!   (`TableNotEmpty`); its own root cannot be installed inside itself.
//! - `read_only_page_table_cannot_map`: `InsufficientRights`.
//! - `unconfigured_thread_does_not_run`: a TCB retyped from its Untyped and
//!   resumed without `Tcb.Configure` answers `NotConfigured`.
//! - `read_only_cnode_changes_nothing`: a read-only copy of its CNode
//!   capability neither deletes, copies nor revokes (its `init` endpoint
//!   is the victim, and still works afterwards).
//! - `init_badge_cannot_be_forged`: re-badging its `init` capability as
//!   another domain's answers `AlreadyBadged`.
//! - `fault_label_cannot_be_sent_to_init`: `InvalidMessage`.
//! - `capability_sent_to_init_does_not_arrive`: a Call to init carrying a
//!   Notification (through a copy of `init` asked with all rights) moves
//!   nothing: once the attacker deletes its own capability, the
//!   Notification's memory is free again, which a copy in init would
//!   prevent.
//! - `space_cycles_do_not_exhaust_init`: 300 `SPACE` / `RETURN_SPACE`
//!   cycles, then the 301st `SPACE` is still granted.
//! - `requests_outside_the_grant_are_refused`: another device's requester
//!   id (00:03.0) for every request, a second device, a larger IoSpace,
//!   and an IoPasid the image never granted.
//! - `own_dma_works`: the grant is real (its device copies its buffer).
//! - `dma_to_an_unmapped_iova_is_blocked`: blocked and recorded.
//! - `dma_outside_its_space_reaches_no_other_memory`: reads and writes at
//!   guessed physical addresses of RAM, where the honest domain's memory
//!   could be, are blocked and recorded; nothing honest comes back.
//! - `deleted_fault_notification_is_never_signalled`: its fault queue is
//!   bound to a Notification it then deletes and retypes as a Frame; the
//!   next IO fault writes nothing into that Frame.
//! - `honest_domain_unaffected`: the honest domain finds every word of its
//!   memory as written and its answer to a fresh nonce is right.

use crate::work;
use edu::device::Edu;
use rt::check;
use rt::mmio::Window;
use rt::testing::{Failure, Outcome, Suite};
use sys::names::{CapTable, DOMAIN_OWN_SLOTS};
use sys::resources::{self, Refusal, RequestError};
use sys::{
    CNode, Cap, Endpoint, Error, FixedSize, Frame, IoDevice, IoFaultQueue, IoSpace, MapRights,
    MessageInfo, Notification, PageTable, Retype, Rights, Slot, Tcb, Untyped,
};

/// The image's `attacker_dma` (8 KiB): here and in the IoSpace.
const BUFFER_VA: u64 = 0x4000_0000;
const BUFFER_IPA: u64 = 0x10_0000;
/// An IPA of its 2 MiB IoSpace that nothing maps.
const UNMAPPED_IPA: u64 = 0x18_0000;
/// Where the attacker installs page tables of its own (384 GiB: a 1 GiB
/// slot no table covers yet) and maps pages through them.
const WORK: u64 = 0x60_0000_0000;
/// The device the image grants on request, and one it does not.
const EDU: (u8, u8, u8) = (0, 4, 0);
const OTHER_DEVICE: (u8, u8, u8) = (0, 3, 0);
/// The badge it asks for on its IoDevice.
const BADGE: u64 = 0xBAD;
/// The IoSpace size the grant allows.
const SPACE_SIZE: u64 = 2 << 20;
/// `SPACE` / `RETURN_SPACE` cycles before the last `SPACE`.
const CYCLES: u32 = 300;
/// Physical addresses of RAM where another domain's memory may lie (q35's
/// RAM starts at 0 and edu's DMA mask is 28 bits; virt's starts at 1 GiB):
/// with stage 2 only, an IOVA is an IPA of the attacker's IoSpace, and
/// none of these is mapped there.
#[cfg(target_arch = "x86_64")]
const GUESSES: [u64; 3] = [0x100_0000, 0x800_0000, 0xF00_0000];
#[cfg(target_arch = "aarch64")]
const GUESSES: [u64; 3] = [0x4100_0000, 0x4800_0000, 0x5000_0000];

fn failure(what: &str, e: impl core::fmt::Debug) -> Failure {
    Failure(rt::__format!("{what}: {e:?}"))
}

fn pci((bus, device, function): (u8, u8, u8)) -> u64 {
    resources::pci_address(bus, device, function)
}

/// The attacker's own slots (`sys::names::DOMAIN_OWN_SLOTS`), handed out
/// once each.
struct Slots {
    next: u32,
}

impl Slots {
    fn take(&mut self) -> Result<Slot, Failure> {
        if self.next >= DOMAIN_OWN_SLOTS.end {
            rt::fail!("the attacker's own slots are used up");
        }
        self.next += 1;
        Ok(Slot::new(self.next - 1))
    }
}

/// What the attacks share.
struct Attacker {
    untyped: Cap<Untyped>,
    cnode: Cap<CNode>,
    vspace: Cap<PageTable>,
    init: Cap<Endpoint>,
    honest: Cap<Endpoint>,
    slots: Slots,
    /// The last-level table under [`WORK`], once installed.
    last_level: Option<Cap<PageTable>>,
    edu: Option<Edu>,
    device: Option<Cap<IoDevice>>,
    queue: Option<(Cap<IoFaultQueue>, Cap<Notification>)>,
}

impl Attacker {
    /// One object of the fixed-size kind `T` retyped from its Untyped
    /// into a slot of its own.
    fn make<T: FixedSize>(&mut self) -> Result<Cap<T>, Failure> {
        self.make_sized(0)
    }

    /// One object of kind `T` and `2^size_bits` bytes retyped from its
    /// Untyped into a slot of its own.
    fn make_sized<T: Retype>(&mut self, size_bits: u8) -> Result<Cap<T>, Failure> {
        let slot = self.slots.take()?;
        self.untyped
            .retype_sized(size_bits, slot)
            .map_err(|e| failure("Untyped.Retype", e))
    }

    fn edu(&self) -> Result<&Edu, Failure> {
        self.edu
            .as_ref()
            .ok_or_else(|| failure("the edu", "init gave no device"))
    }

    fn queue(&self) -> Result<(Cap<IoFaultQueue>, Cap<Notification>), Failure> {
        self.queue
            .ok_or_else(|| failure("the fault queue", "init gave none"))
    }
}

/// Runs every attack; returns the exit status (which ends the run).
pub fn run(table: &CapTable) -> i32 {
    let mut suite = Suite::new();
    let found = (
        table.lookup::<Untyped>("untyped"),
        table.lookup::<CNode>("cnode"),
        table.lookup::<PageTable>("vspace"),
        table.lookup::<Endpoint>("init"),
        table.lookup::<Endpoint>("channel0"),
    );
    let (Some(untyped), Some(cnode), Some(vspace), Some(init), Some(honest)) = found else {
        suite.run("attacker_capabilities_found_by_name", || {
            rt::fail!("untyped, cnode, vspace, init or channel0 missing: {found:?}")
        });
        return suite.finish();
    };
    let mut a = Attacker {
        untyped,
        cnode,
        vspace,
        init,
        honest,
        slots: Slots {
            next: DOMAIN_OWN_SLOTS.start,
        },
        last_level: None,
        edu: None,
        device: None,
        queue: None,
    };
    rt::println!("[attacker] started; every attack below must fail");
    suite.run("page_table_unmap_of_a_used_table_is_refused", || {
        used_table(&mut a)
    });
    suite.run("read_only_page_table_cannot_map", || {
        read_only_table(&mut a)
    });
    suite.run("unconfigured_thread_does_not_run", || {
        unconfigured_thread(&mut a)
    });
    suite.run("read_only_cnode_changes_nothing", || {
        read_only_cnode(&mut a)
    });
    suite.run("init_badge_cannot_be_forged", || forged_badge(&mut a));
    suite.run("fault_label_cannot_be_sent_to_init", || fault_label(&a));
    suite.run("capability_sent_to_init_does_not_arrive", || {
        capability_to_init(&mut a)
    });
    suite.run("space_cycles_do_not_exhaust_init", || space_cycles(&mut a));
    suite.run("requests_outside_the_grant_are_refused", || {
        outside_the_grant(&mut a)
    });
    suite.run("own_dma_works", || own_dma(&a));
    suite.run("dma_to_an_unmapped_iova_is_blocked", || unmapped_iova(&a));
    suite.run("dma_outside_its_space_reaches_no_other_memory", || {
        guessed_addresses(&a)
    });
    suite.run("deleted_fault_notification_is_never_signalled", || {
        deleted_notification(&mut a)
    });
    suite.run("honest_domain_unaffected", || honest_unaffected(&a));
    rt::println!("[attacker] done");
    suite.finish()
}

/// Installs its own tables down to the last level under [`WORK`], maps a
/// Frame through them and tries to take the last-level table out.
fn used_table(a: &mut Attacker) -> Outcome {
    for _ in 0..3 {
        let table: Cap<PageTable> = a.make::<PageTable>()?;
        match table.map(a.vspace, WORK) {
            Ok(()) => a.last_level = Some(table),
            Err(Error::AddressInUse) => {
                // Every level is there: this one is not needed.
                let _ = a.cnode.delete(table.slot());
                break;
            }
            Err(e) => return Err(failure("PageTable.Map", e)),
        }
    }
    let Some(last_level) = a.last_level else {
        rt::fail!("no table of its own was installed under {WORK:#x}")
    };
    let frame: Cap<Frame> = a.make_sized::<Frame>(12)?;
    frame
        .map(a.vspace, WORK, MapRights::READ_WRITE)
        .map_err(|e| failure("mapping a Frame through its tables", e))?;
    let unmapped = last_level.unmap();
    check!(
        unmapped == Err(Error::TableNotEmpty),
        "PageTable.Unmap of its table that still maps a Frame answered {unmapped:?}"
    );
    let root_inside = a.vspace.map(a.vspace, WORK + (1 << 30));
    check!(
        root_inside == Err(Error::AlreadyMapped),
        "installing its own VSpace root inside itself answered {root_inside:?}"
    );
    frame.unmap().map_err(|e| failure("Frame.Unmap", e))?;
    Ok(())
}

fn read_only_table(a: &mut Attacker) -> Outcome {
    let table: Cap<PageTable> = a.make::<PageTable>()?;
    let read_only = a
        .cnode
        .copy(a.slots.take()?, table, Rights::READ)
        .map_err(|e| failure("read-only copy", e))?;
    let mapped = read_only.map(a.vspace, WORK + (1 << 30));
    check!(
        mapped == Err(Error::InsufficientRights),
        "PageTable.Map through a read-only capability answered {mapped:?}"
    );
    Ok(())
}

fn unconfigured_thread(a: &mut Attacker) -> Outcome {
    let tcb: Cap<Tcb> = a.make::<Tcb>()?;
    tcb.write_registers(0x40_0000, 0, 0)
        .map_err(|e| failure("Tcb.WriteRegisters", e))?;
    let resumed = tcb.resume();
    let _ = tcb.suspend();
    let _ = a.cnode.delete(tcb.slot());
    check!(
        resumed == Err(Error::NotConfigured),
        "Resume of a thread it never configured answered {resumed:?}"
    );
    Ok(())
}

fn read_only_cnode(a: &mut Attacker) -> Outcome {
    let read_only = a
        .cnode
        .copy(a.slots.take()?, a.cnode, Rights::READ)
        .map_err(|e| failure("read-only copy of its CNode", e))?;
    let victim = a.init;
    let deleted = read_only.delete(victim.slot());
    check!(
        deleted == Err(Error::InsufficientRights),
        "CNode.Delete through a read-only CNode answered {deleted:?}"
    );
    let dest = a.slots.take()?;
    let copied = read_only.copy(dest, victim, Rights::ALL);
    check!(
        copied == Err(Error::InsufficientRights),
        "CNode.Copy through a read-only CNode answered {copied:?}"
    );
    let revoked = read_only.revoke(victim.slot());
    check!(
        revoked == Err(Error::InsufficientRights),
        "CNode.Revoke through a read-only CNode answered {revoked:?}"
    );
    // The victim still works: init answers an unknown request.
    let asked = a.init.call(MessageInfo::new(0x7E57, 2), [0; 4]);
    check!(
        matches!(asked, Ok(reply) if reply.info.label == Refusal::UnknownRequest.code()),
        "its init endpoint after the attacks: {asked:?}"
    );
    Ok(())
}

/// Init tells domains apart by the badge of their `init` capability; a
/// copy badged as domain 1 (the honest one) would let it pose as that.
fn forged_badge(a: &mut Attacker) -> Outcome {
    let dest = a.slots.take()?;
    let minted = a.cnode.mint(dest, a.init, Rights::ALL, 1);
    check!(
        minted == Err(Error::AlreadyBadged),
        "minting its badged init capability with another badge answered {minted:?}"
    );
    Ok(())
}

fn fault_label(a: &Attacker) -> Outcome {
    let sent = a.init.call(
        MessageInfo::new(abi::FAULT_LABEL, 4),
        [0xE, 0xDEAD, 0xBEEF, 0],
    );
    check!(
        sent.is_err_and(|e| e == Error::InvalidMessage),
        "a Call to init with the fault label answered {sent:?}"
    );
    Ok(())
}

fn capability_to_init(a: &mut Attacker) -> Outcome {
    // A copy asked with every right still has only the send right.
    let all_rights = a
        .cnode
        .copy(a.slots.take()?, a.init, Rights::ALL)
        .map_err(|e| failure("copy of init with all rights", e))?;
    // A Notification alone in 4 KiB of Untyped: once it dies, a Frame
    // fits there again.
    let small: Cap<Untyped> = a.make_sized::<Untyped>(12)?;
    let notification: Cap<Notification> = small
        .retype(a.slots.take()?)
        .map_err(|e| failure("retype the Notification", e))?;
    sys::ipc::set_cap(0, notification.slot());
    let info = MessageInfo {
        extra_caps: 1,
        ..MessageInfo::new(0x7E57, 2)
    };
    let reply = all_rights
        .call(info, [0; 4])
        .map_err(|e| failure("the Call carrying a capability", e))?;
    a.cnode
        .delete(notification.slot())
        .map_err(|e| failure("deleting its Notification", e))?;
    let reused = small.retype_sized::<Frame>(12, a.slots.take()?);
    check!(
        reused.is_ok(),
        "after the sender deleted its Notification, a Frame in its 4 KiB answered {reused:?}: a copy sent to init keeps it alive"
    );
    check!(
        reply.info.extra_caps == 0,
        "init's reply carried {} capabilities",
        reply.info.extra_caps
    );
    if let Ok(frame) = reused {
        let _ = a.cnode.delete(frame.slot());
    }
    let _ = a.cnode.delete(small.slot());
    Ok(())
}

fn space_cycles(a: &mut Attacker) -> Outcome {
    let (device, registers) = resources::request_device(a.init, pci(EDU), BADGE)
        .map_err(|e| failure("asking for the edu", e))?;
    let page = Window::granted(registers & !0xfff, 4096);
    let edu = Edu::at(pci::Bdf::new(EDU.0, EDU.1, EDU.2), page, registers & 0xfff)?;
    a.edu = Some(edu);
    a.device = Some(device);
    a.queue = Some(
        resources::request_fault_queue(a.init, pci(EDU))
            .map_err(|e| failure("asking for a fault queue", e))?,
    );
    for cycle in 0..CYCLES {
        resources::request_space(a.init, pci(EDU), SPACE_SIZE)
            .map_err(|e| failure(&rt::__format!("SPACE of cycle {cycle}"), e))?;
        resources::return_space(a.init, pci(EDU))
            .map_err(|e| failure(&rt::__format!("RETURN_SPACE of cycle {cycle}"), e))?;
    }
    let space: Cap<IoSpace> = resources::request_space(a.init, pci(EDU), SPACE_SIZE)
        .map_err(|e| failure(&rt::__format!("SPACE after {CYCLES} cycles"), e))?;
    device
        .attach(space)
        .map_err(|e| failure("IoDevice.Attach to the last IoSpace", e))?;
    Ok(())
}

fn refused(result: Result<impl core::fmt::Debug, RequestError>, expected: Refusal) -> bool {
    matches!(result, Err(RequestError::Refused(refusal)) if refusal == expected)
}

fn outside_the_grant(a: &mut Attacker) -> Outcome {
    let other = pci(OTHER_DEVICE);
    let device = resources::request_device(a.init, other, 1);
    check!(
        refused(device, Refusal::NotGranted),
        "DEVICE for 00:03.0: {device:?}"
    );
    let space = resources::request_space(a.init, other, 4096);
    check!(
        refused(space, Refusal::NotGranted),
        "SPACE for 00:03.0: {space:?}"
    );
    let queue = resources::request_fault_queue(a.init, other);
    check!(
        refused(queue, Refusal::NotGranted),
        "FAULT_QUEUE for 00:03.0: {queue:?}"
    );
    let returned = resources::return_space(a.init, other);
    check!(
        refused(returned, Refusal::NotGranted),
        "RETURN_SPACE for 00:03.0: {returned:?}"
    );
    let again = resources::request_device(a.init, pci(EDU), BADGE);
    check!(
        refused(again, Refusal::AlreadyGiven),
        "DEVICE for the edu a second time: {again:?}"
    );
    let larger = resources::request_space(a.init, pci(EDU), 2 * SPACE_SIZE);
    check!(
        refused(larger, Refusal::TooLarge),
        "SPACE of 4 MiB: {larger:?}"
    );
    let Some(device) = a.device else {
        rt::fail!("no device from init")
    };
    let slot = a.slots.take()?;
    let pasid = device.mint_pasid(1, slot);
    check!(
        pasid.is_err(),
        "IoDevice.MintPasid of PASID 1, which the image never granted, answered {pasid:?}"
    );
    Ok(())
}

#[allow(unsafe_code)]
fn buffer() -> rt::shared::SharedWords {
    // SAFETY: the image maps `attacker_dma` (8 KiB) read-write at
    // BUFFER_VA in this domain for its whole life; its device writes it.
    unsafe { rt::shared::SharedWords::new(BUFFER_VA, 1024) }
}

/// Fills page `page` (0 or 1) of its buffer with `value` in every word.
fn fill(page: usize, value: u64) {
    let buffer = buffer();
    for index in 512 * page..512 * (page + 1) {
        buffer.write(index, value);
    }
}

/// Takes every fault record; returns how many and the first.
fn drain(queue: Cap<IoFaultQueue>) -> (usize, Option<sys::FaultRecord>) {
    let mut count = 0;
    let mut first = None;
    while let Ok(Some(record)) = queue.pop() {
        first.get_or_insert(record);
        count += 1;
    }
    (count, first)
}

fn own_dma(a: &Attacker) -> Outcome {
    let edu = a.edu()?;
    let (queue, _) = a.queue()?;
    fill(0, 0xA5A5_A5A5_A5A5_A5A5);
    fill(1, 0);
    edu.read_memory(BUFFER_IPA, 64)?;
    edu.write_memory(BUFFER_IPA + 4096, 64)?;
    let landed = buffer().read(512);
    check!(
        landed == Some(0xA5A5_A5A5_A5A5_A5A5),
        "its own DMA did not land: {landed:?}"
    );
    let (faults, _) = drain(queue);
    check!(faults == 0, "{faults} fault records after good DMA");
    Ok(())
}

fn unmapped_iova(a: &Attacker) -> Outcome {
    let edu = a.edu()?;
    let (queue, _) = a.queue()?;
    edu.write_memory(UNMAPPED_IPA, 64)?;
    let (faults, first) = drain(queue);
    let Some(record) = first else {
        rt::fail!("a DMA write to unmapped IPA {UNMAPPED_IPA:#x} left no fault record")
    };
    check!(
        record.badge == BADGE && record.address & !0xfff == UNMAPPED_IPA,
        "{faults} records, the first badge {:#x} address {:#x}",
        record.badge,
        record.address
    );
    Ok(())
}

fn guessed_addresses(a: &Attacker) -> Outcome {
    let edu = a.edu()?;
    let (queue, _) = a.queue()?;
    for guess in GUESSES {
        // Read from the guess into the device, write the device's buffer
        // back into its own page 1: nothing honest may show up.
        fill(1, 0);
        edu.read_memory(guess, 4096)?;
        edu.write_memory(BUFFER_IPA + 4096, 4096)?;
        let honest = (512..1024).find(|&index| buffer().read(index).is_some_and(work::is_honest));
        check!(
            honest.is_none(),
            "the device read honest words from {guess:#x}"
        );
        // And write its own pattern there.
        fill(0, 0xEEEE_EEEE_EEEE_EEEE);
        edu.read_memory(BUFFER_IPA, 4096)?;
        edu.write_memory(guess, 4096)?;
        let (faults, _) = drain(queue);
        check!(
            faults >= 2,
            "only {faults} fault records for the read from and write to {guess:#x}"
        );
    }
    Ok(())
}

fn deleted_notification(a: &mut Attacker) -> Outcome {
    let (queue, signal) = a.queue()?;
    let Some(device) = a.device else {
        rt::fail!("no device from init")
    };
    let small: Cap<Untyped> = a.make_sized::<Untyped>(12)?;
    let doomed: Cap<Notification> = small
        .retype(a.slots.take()?)
        .map_err(|e| failure("retype the Notification", e))?;
    queue
        .bind(doomed, device)
        .map_err(|e| failure("IoFaultQueue.Bind to its own Notification", e))?;
    a.cnode
        .delete(doomed.slot())
        .map_err(|e| failure("deleting the Notification", e))?;
    let frame = small
        .retype_sized::<Frame>(12, a.slots.take()?)
        .map_err(|e| failure("a Frame where the Notification was", e))?;
    let page = WORK + 0x1000;
    frame
        .map(a.vspace, page, MapRights::READ)
        .map_err(|e| failure("mapping the reused page", e))?;
    a.edu()?.write_memory(UNMAPPED_IPA, 64)?;
    let (faults, _) = drain(queue);
    #[allow(unsafe_code)]
    // SAFETY: the Frame is mapped readable at `page` until the unmap
    // below; `index` < 512.
    let written = (0..512u64)
        .map(|index| unsafe { ((page + 8 * index) as *const u64).read_volatile() })
        .enumerate()
        .find(|&(_, value)| value != 0);
    let _ = frame.unmap();
    queue
        .bind(signal, device)
        .map_err(|e| failure("binding the queue back", e))?;
    check!(faults > 0, "the fault was not recorded");
    check!(
        written.is_none(),
        "the IO fault signalled the deleted Notification: {written:?} (word index, value) in the page that replaced it"
    );
    Ok(())
}

fn honest_unaffected(a: &Attacker) -> Outcome {
    let nonce = 0x5EED_0000_0000_0001;
    let reply = a
        .honest
        .call(MessageInfo::new(work::CHECK, 1), [nonce, 0, 0, 0])
        .map_err(|e| failure("calling the honest domain", e))?;
    let [intact, wrong, answer, _] = reply.mrs;
    check!(
        reply.info.label == 0 && intact == 1,
        "the honest domain found its memory changed (label {}, first wrong word {wrong})",
        reply.info.label
    );
    let expected = work::answer(nonce, (0..work::WORDS).map(work::word));
    check!(
        answer == expected,
        "the honest domain answered {answer:#x}, not {expected:#x}"
    );
    Ok(())
}
