//! The abstraction check (feature `fuzz-checks`): `DebugCheckAbstraction`
//! compares what the hardware would do with what the capability model says
//! is mapped, attached and bound, and reports the first disagreement.
//!
//! The `caps` model is what the host model-checks; the kernel's tables are
//! what the CPU and the IOMMU read. The fuzzer (`userland/tests/fuzz`)
//! calls this after every batch of calls, so a kernel path that leaves a
//! table out of step with the model (a leaf not cleared, an entry left
//! behind, a binding that outlived its object) fails the run at the batch
//! that made it, with the slot, address and values on the console:
//!
//! - (a) CPU: every user leaf of every address-space root the kernel knows
//!   (`objects::address_space_roots`) is the CPU mapping of exactly one
//!   Frame capability at that (root, address), with that physical address
//!   and size, writable exactly when the mapping has the write right; and
//!   every Frame capability's CPU mapping has its leaf. Leaves of memory
//!   no Untyped covers (the root task's code, stack and boot-info page,
//!   mapped by the loader from boot frames no capability can name) are
//!   outside the model and only counted.
//! - (b) IO: every leaf of every IoSpace's stage 2 is the IO mapping of
//!   exactly one Frame capability (space, IPA) with that address, size
//!   and rights, or (SMMUv3) the read-only CD page of one of the space's
//!   nests at its reserved IPA; every IO mapping has its leaf. Every live
//!   IoSpace has its stage 2 (rooted in its own page, with its DID) and
//!   no dead one does.
//! - (c) Devices: the VT-d context / PASID entries or SMMUv3 STEs that
//!   translate are exactly those of the IoDevices and IoPasids the model
//!   says are attached (less those the kernel blocked after a failed
//!   invalidation), each naming its IoSpace's stage-2 root and tag, or the
//!   nest (VT-d shadow, nested entry, SMMUv3 CD) of its IoUserTable; and
//!   those of the SVA bindings (first stage only, through a live VSpace
//!   root, of a live IoDevice the model has not attached).
//! - (d) x86_64: the present MSI remapping entries are exactly those of
//!   live IrqHandlers bound (`IrqHandler.MsiMessage`) to live IoDevices,
//!   each accepting only that device's requester id; every IRQ binding
//!   belongs to a live IrqHandler.
//!
//! Everything runs under the capability lock, so the model cannot change
//! under it. It reads the tables through the direct map and changes
//! nothing.

use abi::Error;
use caps::{Attachment, ObjectId, ObjectKind, ObjectState};
#[cfg(target_arch = "x86_64")]
use iommu::PhysMem;

use crate::iommu_unit::{DirectMemory, UNIT, Unit};
use crate::objects::CAPS;

/// One mapping: the model's claim or the hardware's leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Leaf {
    /// The address space root (CPU) or IoSpace object id (IO).
    space: u64,
    /// Virtual address or IPA.
    address: u64,
    paddr: u64,
    bits: u8,
    read: bool,
    write: bool,
    /// The capability's slot ([`KERNEL`] for the kernel's own, 0 for a
    /// leaf read from the tables).
    slot: u32,
}

/// The slot of a mapping the kernel made for itself (a CD page).
const KERNEL: u32 = u32::MAX;
/// Most mappings one side of a comparison holds: one per slot.
const CAPACITY: usize = crate::objects::SLOTS;

/// The two sides being compared; static (too large for the stack), and
/// only in kernels with this feature.
struct Sides {
    model: heapless::Vec<Leaf, CAPACITY>,
    tables: heapless::Vec<Leaf, CAPACITY>,
}

static SIDES: spin::Mutex<Sides> = spin::Mutex::new(Sides {
    model: heapless::Vec::new(),
    tables: heapless::Vec::new(),
});

/// A disagreement: already printed.
struct Broken;

/// Prints the disagreement and returns it.
macro_rules! broken {
    ($($arg:tt)*) => {{
        crate::println!("[abstraction] {}", format_args!($($arg)*));
        Broken
    }};
}

type Caps = caps::Caps<crate::objects::Storage>;

/// `DebugCheckAbstraction`: `AbstractionBroken` on the first disagreement
/// (printed on the console, `[abstraction] ...`).
pub fn check() -> Result<(), Error> {
    let Some(caps) = CAPS.get() else {
        return Ok(());
    };
    let caps = caps.lock();
    let mut sides = SIDES.lock();
    let result = cpu(&caps, &mut sides)
        .and_then(|()| io(&caps, &mut sides))
        .and_then(|()| devices(&caps))
        .and_then(|()| msi(&caps));
    result.map_err(|Broken| Error::AbstractionBroken)
}

/// Pushes `leaf` or reports that a side overflowed.
fn push(side: &mut heapless::Vec<Leaf, CAPACITY>, leaf: Leaf, what: &str) -> Result<(), Broken> {
    side.push(leaf)
        .map_err(|_| broken!("more than {CAPACITY} {what}: cannot compare"))
}

/// The memory of the Frame a capability names.
fn frame_memory(caps: &Caps, object: ObjectId) -> Option<(u64, u8)> {
    caps.object(object).and_then(|o| o.memory())
}

/// (a): CPU leaves against Frame capabilities' CPU mappings.
fn cpu(caps: &Caps, sides: &mut Sides) -> Result<(), Broken> {
    let roots = crate::objects::address_space_roots();
    sides.model.clear();
    sides.tables.clear();
    for (index, slot) in caps.slots().iter().enumerate() {
        let Some(cap) = slot.cap() else { continue };
        let Some(mapping) = cap.cpu_mapping() else {
            continue;
        };
        let Some((paddr, bits)) = frame_memory(caps, cap.object()) else {
            return Err(broken!(
                "slot {index}: a CPU mapping at {:#x} in {:#x} of a dead Frame (object {})",
                mapping.vaddr,
                mapping.vspace,
                cap.object().0
            ));
        };
        if !roots.contains(&mapping.vspace) {
            return Err(broken!(
                "slot {index}: Frame {paddr:#x} mapped at {:#x} in {:#x}, which is no live address space",
                mapping.vaddr,
                mapping.vspace
            ));
        }
        let leaf = Leaf {
            space: mapping.vspace,
            address: mapping.vaddr,
            paddr,
            bits,
            read: true,
            write: mapping.rights.contains(caps::Rights::WRITE),
            slot: index as u32,
        };
        push(&mut sides.model, leaf, "CPU mappings")?;
    }
    // Memory a capability can name: the boot Untypeds (RAM and device).
    let mut untyped: heapless::Vec<(u64, u64), 64> = heapless::Vec::new();
    for object in caps.objects().iter().flatten() {
        if object.kind() == ObjectKind::Untyped
            && object.parent().is_none()
            && let Some((start, bits)) = object.memory()
        {
            let _ = untyped.push((start, start + (1u64 << bits)));
        }
    }
    let mut overflow = false;
    for &root in &roots {
        crate::vspace::for_each_user_leaf(root, &mut |va, entry, bits| {
            let paddr = crate::arch::paging::entry_address(entry);
            if !untyped.iter().any(|&(s, e)| paddr >= s && paddr < e) {
                return;
            }
            let leaf = Leaf {
                space: root,
                address: va,
                paddr,
                bits,
                read: true,
                write: crate::arch::paging::entry_writable(entry),
                slot: 0,
            };
            overflow |= sides.tables.push(leaf).is_err();
        });
    }
    if overflow {
        return Err(broken!("more than {CAPACITY} CPU leaves: cannot compare"));
    }
    compare("CPU", "address space", sides)
}

/// (b): stage-2 leaves against Frame capabilities' IO mappings, and the
/// IoSpaces against their stage-2 tables.
fn io(caps: &Caps, sides: &mut Sides) -> Result<(), Broken> {
    let mut problem = None;
    let mut registered = 0usize;
    crate::io_space::view::spaces(|object, root, did, _| {
        registered += 1;
        let state = caps.object(object).map(|o| (*o.state(), o.memory()));
        let fine = matches!(
            state,
            Some((ObjectState::IoSpace { did: d, .. }, Some((paddr, _)))) if d == did && paddr == root
        );
        if !fine && problem.is_none() {
            problem = Some((object, root, did));
        }
    });
    if let Some((object, root, did)) = problem {
        return Err(broken!(
            "the kernel keeps a stage 2 at {root:#x} (DID {did}) for object {}, which is no live IoSpace with that page and DID",
            object.0
        ));
    }
    let live = caps
        .objects()
        .iter()
        .flatten()
        .filter(|o| o.kind() == ObjectKind::IoSpace)
        .count();
    if live != registered {
        return Err(broken!(
            "{live} live IoSpaces in the model, {registered} stage-2 tables in the kernel"
        ));
    }
    sides.model.clear();
    sides.tables.clear();
    for (index, slot) in caps.slots().iter().enumerate() {
        let Some(cap) = slot.cap() else { continue };
        let Some(mapping) = cap.mapping() else {
            continue;
        };
        let Some((paddr, bits)) = frame_memory(caps, cap.object()) else {
            return Err(broken!(
                "slot {index}: an IO mapping at {:#x} in IoSpace {} of a dead Frame",
                mapping.ipa,
                mapping.space.0
            ));
        };
        let leaf = Leaf {
            space: u64::from(mapping.space.0),
            address: mapping.ipa,
            paddr,
            bits,
            read: mapping.rights.contains(caps::Rights::READ),
            write: mapping.rights.contains(caps::Rights::WRITE),
            slot: index as u32,
        };
        push(&mut sides.model, leaf, "IO mappings")?;
    }
    // The kernel's own: SMMUv3 CD pages, read-only at their reserved IPA.
    let mut full = false;
    crate::io_space::view::nests(|_, space, _, page, _, cd_ipa| {
        if let Some(ipa) = cd_ipa {
            let leaf = Leaf {
                space: u64::from(space.0),
                address: ipa,
                paddr: page,
                bits: 12,
                read: true,
                write: false,
                slot: KERNEL,
            };
            full |= sides.model.push(leaf).is_err();
        }
    });
    // And the MSI doorbells, write-only (aarch64, `IrqHandler.MsiMessage`).
    crate::io_space::view::msi_doorbells(|space, ipa, paddr| {
        let leaf = Leaf {
            space: u64::from(space.0),
            address: ipa,
            paddr,
            bits: 12,
            read: false,
            write: true,
            slot: KERNEL,
        };
        full |= sides.model.push(leaf).is_err();
    });
    crate::io_space::view::stage2_leaves(|space, ipa, paddr, bits, perms| {
        let leaf = Leaf {
            space: u64::from(space.0),
            address: ipa,
            paddr,
            bits: bits as u8,
            read: perms.read,
            write: perms.write,
            slot: 0,
        };
        full |= sides.tables.push(leaf).is_err();
    });
    if full {
        return Err(broken!("more than {CAPACITY} IO mappings: cannot compare"));
    }
    compare("IO", "IoSpace", sides)
}

/// Sorts both sides and compares them one to one; names the first
/// mapping without its leaf, leaf without its mapping, or pair that
/// differs.
fn compare(what: &str, space: &str, sides: &mut Sides) -> Result<(), Broken> {
    let key = |l: &Leaf| (l.space, l.address);
    sides.model.sort_unstable_by_key(key);
    sides.tables.sort_unstable_by_key(key);
    if let Some(pair) = sides.model.windows(2).find(|p| key(&p[0]) == key(&p[1])) {
        return Err(broken!(
            "{what}: slots {} and {} both claim {:#x} in {space} {:#x}",
            pair[0].slot,
            pair[1].slot,
            pair[0].address,
            pair[0].space
        ));
    }
    let (mut m, mut t) = (0, 0);
    loop {
        match (sides.model.get(m), sides.tables.get(t)) {
            (None, None) => return Ok(()),
            (Some(claim), leaf) if leaf.is_none_or(|l| key(claim) < key(l)) => {
                return Err(broken!(
                    "{what}: {} maps {:#x} ({} bits) at {:#x} in {space} {:#x}, but no leaf does",
                    holder(claim.slot),
                    claim.paddr,
                    claim.bits,
                    claim.address,
                    claim.space
                ));
            }
            (claim, Some(leaf)) if claim.is_none_or(|c| key(leaf) < key(c)) => {
                return Err(broken!(
                    "{what}: a leaf maps {:#x} ({} bits, {}) at {:#x} in {space} {:#x}, but no capability does",
                    leaf.paddr,
                    leaf.bits,
                    rights(leaf),
                    leaf.address,
                    leaf.space
                ));
            }
            (Some(claim), Some(leaf)) => {
                let same = (claim.paddr, claim.bits, claim.read, claim.write)
                    == (leaf.paddr, leaf.bits, leaf.read, leaf.write);
                if !same {
                    return Err(broken!(
                        "{what}: at {:#x} in {space} {:#x} {} maps {:#x} ({} bits, {}) but the leaf maps {:#x} ({} bits, {})",
                        claim.address,
                        claim.space,
                        holder(claim.slot),
                        claim.paddr,
                        claim.bits,
                        rights(claim),
                        leaf.paddr,
                        leaf.bits,
                        rights(leaf)
                    ));
                }
                m += 1;
                t += 1;
            }
            // Unreachable: the guards above cover every order of keys.
            _ => return Ok(()),
        }
    }
}

/// Who holds a mapping, for a message.
fn holder(slot: u32) -> heapless::String<32> {
    use core::fmt::Write as _;
    let mut text = heapless::String::new();
    if slot == KERNEL {
        let _ = text.push_str("the kernel (a CD page)");
    } else {
        let _ = write!(text, "the capability in slot {slot}");
    }
    text
}

fn rights(leaf: &Leaf) -> &'static str {
    match (leaf.read, leaf.write) {
        (true, true) => "RW",
        (true, false) => "R",
        (false, true) => "W",
        (false, false) => "-",
    }
}

/// One translating device or PASID entry: the model's expectation or what
/// the unit holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    requester: u16,
    pasid: u32,
    /// The table the entry points at: stage-2 root, VT-d shadow root, or
    /// (nested) the stage-2 root.
    table: u64,
    /// DID (VT-d) or VMID (SMMUv3).
    tag: u16,
    /// Nested: the stage-1 root IPA (VT-d) or CD IPA (SMMUv3); SVA on
    /// SMMUv3: the CD page.
    stage1: Option<u64>,
    /// SVA: first stage only, `table` a CPU VSpace root (VT-d PGTT =
    /// first stage; SMMUv3 Config = stage 1 only, TTB0 of its CD); or an
    /// IoSpace held as a first-stage table (VT-d without a stage 2).
    first_stage: bool,
}

/// Most entries either side holds.
const ENTRIES: usize = 128;

/// (c): the unit's translating entries against the model's attachments.
fn devices(caps: &Caps) -> Result<(), Broken> {
    let mut expected: heapless::Vec<Entry, ENTRIES> = heapless::Vec::new();
    let mut spaces: heapless::Vec<(ObjectId, u64, u16), 64> = heapless::Vec::new();
    crate::io_space::view::spaces(|object, root, _, tag| {
        let _ = spaces.push((object, root, tag));
    });
    let mut nests: heapless::Vec<(ObjectId, u64, u64, u16, Option<u64>), 32> = heapless::Vec::new();
    crate::io_space::view::nests(|_, space, root_ipa, page, tag, cd_ipa| {
        let _ = nests.push((space, root_ipa, page, tag, cd_ipa));
    });
    let mut records: heapless::Vec<(u16, Option<u32>, bool), 64> = heapless::Vec::new();
    crate::io_space::view::attachments(|requester, pasid, _, _, blocked| {
        let _ = records.push((requester, pasid, blocked));
    });
    let hardware_nesting = hardware_nesting();
    for (id, object) in caps.objects().iter().enumerate() {
        let Some(object) = object else { continue };
        let (requester, pasid, attached) = match *object.state() {
            ObjectState::IoDevice { rid, attached, .. } => (rid, None, attached),
            ObjectState::IoPasid {
                device: Some(device),
                pasid,
                attached,
            } => match caps.object(device).map(|d| *d.state()) {
                Some(ObjectState::IoDevice { rid, .. }) => (rid, Some(pasid), attached),
                _ => continue,
            },
            _ => continue,
        };
        let Some(attachment) = attached else { continue };
        let requester = requester as u16;
        let record = records
            .iter()
            .find(|r| r.0 == requester && r.1 == pasid)
            .copied();
        match record {
            None => {
                return Err(broken!(
                    "object {id}: the model attaches requester {requester:#x} PASID {pasid:?} to IoSpace {}, the kernel has no record of it",
                    attachment.space.0
                ));
            }
            // Blocked after a failed invalidation: no entry expected.
            Some((_, _, true)) => continue,
            Some(_) => {}
        }
        let entry = expected_entry(caps, attachment, &spaces, &nests, hardware_nesting)
            .ok_or_else(|| {
                broken!(
                    "object {id}: requester {requester:#x} is attached to IoSpace {} (user table {:?}), which has no stage 2 or nest in the kernel",
                    attachment.space.0,
                    attachment.user_table.map(|t| t.0)
                )
            })?;
        let entry = Entry {
            requester,
            pasid: pasid.unwrap_or(0),
            ..entry
        };
        if expected.push(entry).is_err() {
            return Err(broken!("more than {ENTRIES} attachments: cannot compare"));
        }
    }
    sva_entries(caps, &mut expected)?;
    let mut found: heapless::Vec<Entry, ENTRIES> = heapless::Vec::new();
    read_entries(&mut found)?;
    for entry in &found {
        match expected
            .iter()
            .find(|e| e.requester == entry.requester && e.pasid == entry.pasid)
        {
            None => {
                return Err(broken!(
                    "the unit translates requester {:#x} PASID {} through {:#x} (tag {}), but nothing attached is there in the model",
                    entry.requester,
                    entry.pasid,
                    entry.table,
                    entry.tag
                ));
            }
            Some(e) if e != entry => {
                return Err(broken!(
                    "requester {:#x} PASID {}: the model expects {e:x?}, the unit holds {entry:x?}",
                    entry.requester,
                    entry.pasid
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(missing) = expected.iter().find(|e| {
        !found
            .iter()
            .any(|f| f.requester == e.requester && f.pasid == e.pasid)
    }) {
        return Err(broken!(
            "requester {:#x} PASID {} is attached in the model ({missing:x?}), but the unit has no translating entry for it",
            missing.requester,
            missing.pasid
        ));
    }
    Ok(())
}

/// The entries of the SVA bindings (`IoDevice.BindVSpace`,
/// `IoPasid.BindVSpace`): each of a live IoDevice (or IoPasid of it) the
/// model has not attached, through a live address-space root.
fn sva_entries(caps: &Caps, expected: &mut heapless::Vec<Entry, ENTRIES>) -> Result<(), Broken> {
    let mut result = Ok(());
    crate::io_space::view::sva_bindings(
        |requester, pasid, device, root_object, root, tag, page| {
            let rid_of = |object: ObjectId| match caps.object(object).map(|o| *o.state()) {
                Some(ObjectState::IoDevice { rid, .. }) => Some(rid),
                _ => None,
            };
            let device_ok = match (caps.object(device).map(|o| *o.state()), pasid) {
                (
                    Some(ObjectState::IoDevice {
                        rid,
                        attached: None,
                        ..
                    }),
                    None,
                ) => rid == u32::from(requester),
                (
                    Some(ObjectState::IoPasid {
                        device: Some(owner),
                        pasid: number,
                        attached: None,
                    }),
                    Some(bound),
                ) => number == bound && rid_of(owner) == Some(u32::from(requester)),
                _ => false,
            };
            let root_ok = caps.object(root_object).is_some_and(|o| {
                o.kind() == ObjectKind::PageTable && o.memory().map(|(p, _)| p) == Some(root)
            });
            if result.is_ok() && !(device_ok && root_ok) {
                result = Err(broken!(
                    "requester {requester:#x} is bound to the VSpace at {root:#x}, but the model has no such unattached IoDevice ({}) or live root ({})",
                    device.0,
                    root_object.0
                ));
            }
            let entry = Entry {
                requester,
                pasid: pasid.unwrap_or(0),
                table: root,
                tag,
                stage1: page,
                first_stage: true,
            };
            if result.is_ok() && expected.push(entry).is_err() {
                result = Err(broken!("more than {ENTRIES} attachments: cannot compare"));
            }
        },
    );
    result
}

/// The entry an attachment needs: its space's stage 2, or the nest of its
/// user table.
fn expected_entry(
    caps: &Caps,
    attachment: Attachment,
    spaces: &[(ObjectId, u64, u16)],
    nests: &[(ObjectId, u64, u64, u16, Option<u64>)],
    hardware_nesting: bool,
) -> Option<Entry> {
    let &(_, root, tag) = spaces.iter().find(|s| s.0 == attachment.space)?;
    let plain = Entry {
        requester: 0,
        pasid: 0,
        table: root,
        tag,
        stage1: None,
        // A unit without a second stage holds IoSpaces as first-stage
        // tables (VT-d x-flts): PGTT = first stage at the IoSpace's root.
        first_stage: crate::io_space::first_stage_spaces(),
    };
    let Some(table) = attachment.user_table else {
        return Some(plain);
    };
    let Some(ObjectState::IoUserTable { root_ipa, .. }) = caps.object(table).map(|o| *o.state())
    else {
        return None;
    };
    let &(_, _, page, nest_tag, cd_ipa) = nests
        .iter()
        .find(|n| n.0 == attachment.space && n.1 == root_ipa)?;
    Some(match cd_ipa {
        // SMMUv3: stage 2 of the space, the nest's CD by IPA.
        Some(cd) => Entry {
            stage1: Some(cd),
            ..plain
        },
        // VT-d with ECAP.NEST: the driver's table by IPA over stage 2.
        None if hardware_nesting => Entry {
            tag: nest_tag,
            stage1: Some(root_ipa),
            ..plain
        },
        // VT-d shadow: a second-stage entry at the shadow.
        None => Entry {
            table: page,
            tag: nest_tag,
            ..plain
        },
    })
}

#[cfg(target_arch = "x86_64")]
fn hardware_nesting() -> bool {
    use iommu::vtd::regs::RootTableMode;
    match UNIT.lock().as_ref() {
        Some(Unit::Vtd(vtd)) => {
            vtd.extended_capability().nest()
                && matches!(vtd.root_table(), Some((_, RootTableMode::Scalable)))
        }
        _ => false,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn hardware_nesting() -> bool {
    false
}

/// Address bits of VT-d root, context and PASID entries.
#[cfg(target_arch = "x86_64")]
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;

/// The VT-d entries that translate: legacy context entries, or scalable
/// PASID entries (through every present context entry's PASID directory).
#[cfg(target_arch = "x86_64")]
fn read_entries(found: &mut heapless::Vec<Entry, ENTRIES>) -> Result<(), Broken> {
    use iommu::vtd::regs::RootTableMode;
    let guard = UNIT.lock();
    let Some(Unit::Vtd(vtd)) = guard.as_ref() else {
        return Ok(());
    };
    let Some((root, mode)) = vtd.root_table() else {
        return Ok(());
    };
    let memory = DirectMemory;
    let mut add = |entry: Entry| {
        found
            .push(entry)
            .map_err(|_| broken!("more than {ENTRIES} translating entries: cannot compare"))
    };
    for bus in 0..256u64 {
        match mode {
            RootTableMode::Legacy => {
                let root_entry = memory.read_u64(root + 16 * bus);
                if root_entry & 1 == 0 {
                    continue;
                }
                let table = root_entry & ADDRESS;
                for devfn in 0..256u64 {
                    let low = memory.read_u64(table + 16 * devfn);
                    if low & 1 == 0 {
                        continue;
                    }
                    let high = memory.read_u64(table + 16 * devfn + 8);
                    add(Entry {
                        requester: (bus << 8 | devfn) as u16,
                        pasid: 0,
                        table: low & ADDRESS,
                        tag: (high >> 8) as u16,
                        stage1: None,
                        first_stage: false,
                    })?;
                }
            }
            RootTableMode::Scalable => {
                for half in 0..2u64 {
                    let root_entry = memory.read_u64(root + 16 * bus + 8 * half);
                    if root_entry & 1 == 0 {
                        continue;
                    }
                    let contexts = root_entry & ADDRESS;
                    for index in 0..128u64 {
                        let context = memory.read_u64(contexts + 32 * index);
                        if context & 1 == 0 {
                            continue;
                        }
                        let requester = (bus << 8 | (half * 128 + index)) as u16;
                        pasid_entries(context & ADDRESS, requester, &mut add)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The present entries of one PASID directory (512 entries of 64 PASIDs).
#[cfg(target_arch = "x86_64")]
fn pasid_entries(
    directory: u64,
    requester: u16,
    add: &mut impl FnMut(Entry) -> Result<(), Broken>,
) -> Result<(), Broken> {
    let memory = DirectMemory;
    for slot in 0..512u64 {
        let directory_entry = memory.read_u64(directory + 8 * slot);
        if directory_entry & 1 == 0 {
            continue;
        }
        let table = directory_entry & ADDRESS;
        for index in 0..64u64 {
            let at = table + 64 * index;
            let word0 = memory.read_u64(at);
            if word0 & 1 == 0 {
                continue;
            }
            let pasid = (slot * 64 + index) as u32;
            let pgtt = (word0 >> 6) & 7;
            if pgtt == 0b001 {
                // First stage only (SVA): the CPU VSpace root.
                add(Entry {
                    requester,
                    pasid,
                    table: memory.read_u64(at + 16) & ADDRESS,
                    tag: memory.read_u64(at + 8) as u16,
                    stage1: None,
                    first_stage: true,
                })?;
                continue;
            }
            let stage1 = match pgtt {
                // Second stage only.
                0b010 => None,
                // Nested: the first-stage root is an IPA.
                0b011 => Some(memory.read_u64(at + 16) & ADDRESS),
                other => {
                    return Err(broken!(
                        "requester {requester:#x} PASID {pasid}: a PASID entry with PGTT {other:#05b}, which the kernel never writes"
                    ));
                }
            };
            add(Entry {
                requester,
                pasid,
                table: word0 & ADDRESS,
                tag: memory.read_u64(at + 8) as u16,
                stage1,
                first_stage: false,
            })?;
        }
    }
    Ok(())
}

/// The SMMUv3 STEs that translate (V=1, Config 0b1xx), over every present
/// level-2 array of the stream table.
#[cfg(target_arch = "aarch64")]
fn read_entries(found: &mut heapless::Vec<Entry, ENTRIES>) -> Result<(), Broken> {
    use iommu::smmuv3::ste::SPLIT;
    let guard = UNIT.lock();
    let Some(Unit::Smmu(smmu)) = guard.as_ref() else {
        return Ok(());
    };
    let Some(table) = smmu.stream_table() else {
        return Ok(());
    };
    let memory = DirectMemory;
    let mut sid = 0u32;
    let end = 1u32 << table.sid_bits().min(20);
    while sid < end {
        let Some(ste) = table.read_ste(&memory, sid) else {
            // No level-2 array: the whole group blocks.
            sid = ((sid >> SPLIT) + 1) << SPLIT;
            continue;
        };
        if ste.valid() && ste.config() & 0b100 != 0 {
            let (table, stage1, first_stage) = match ste.config() {
                0b110 => (ste.s2_table(), None, false),
                0b111 => (ste.s2_table(), Some(ste.context_pointer()), false),
                // Stage 1 only (SVA): TTB0 of its one CD is a VSpace root.
                0b101 => {
                    let cd = ste.context_pointer();
                    let ttb0 = iommu::PhysMem::read_u64(&memory, cd + 8) & 0x000f_ffff_ffff_f000;
                    (ttb0, Some(cd), true)
                }
                other => {
                    return Err(broken!(
                        "stream {sid:#x}: an STE with Config {other:#05b} (bypass), which the kernel never writes"
                    ));
                }
            };
            let entry = Entry {
                requester: sid as u16,
                pasid: 0,
                table,
                tag: ste.vmid(),
                stage1,
                first_stage,
            };
            found
                .push(entry)
                .map_err(|_| broken!("more than {ENTRIES} translating STEs: cannot compare"))?;
        }
        sid += 1;
    }
    Ok(())
}

/// (d), x86_64: the MSI remapping entries against the IRQ bindings and
/// the model.
#[cfg(target_arch = "x86_64")]
fn msi(caps: &Caps) -> Result<(), Broken> {
    use iommu::vtd::intremap::{Irte, SourceCheck};
    let mut problem: Option<(ObjectId, u16)> = None;
    let mut expected: [Option<u16>; 256] = [None; 256];
    crate::sched::irq_bindings(|handler, line, device| {
        let handler_alive = matches!(
            caps.object(handler).map(|o| *o.state()),
            Some(ObjectState::IrqHandler { irq }) if irq == line
        );
        if !handler_alive {
            problem.get_or_insert((handler, line));
            return;
        }
        if let Some((device, rid)) = device {
            let device_alive = matches!(
                caps.object(device).map(|o| *o.state()),
                Some(ObjectState::IoDevice { rid: r, .. }) if r == rid
            );
            if !device_alive {
                problem.get_or_insert((device, line));
            } else if let Some(slot) = expected.get_mut(usize::from(line)) {
                *slot = Some(rid as u16);
            }
        }
    });
    if let Some((object, line)) = problem {
        return Err(broken!(
            "the kernel binds line {line} to object {}, which is no live IrqHandler for it or no live IoDevice",
            object.0
        ));
    }
    for line in crate::arch::IOAPIC_LINES..256 {
        let Some(words) = crate::interrupt_remap::entry_words(line) else {
            // Remapping is off (a seeded kernel): nothing to compare.
            return Ok(());
        };
        let present = words[0] & 1 != 0;
        let want = expected[usize::from(line)];
        match (present, want) {
            (false, None) => {}
            (false, Some(rid)) => {
                return Err(broken!(
                    "MSI line {line} is bound to requester {rid:#x}, but its remapping entry is not present"
                ));
            }
            (true, None) => {
                return Err(broken!(
                    "MSI remapping entry {line} is present ({words:#x?}), but no live IrqHandler is bound to a live IoDevice for it"
                ));
            }
            (true, Some(rid)) => {
                let vector = crate::arch::irq_line_id(line) as u8;
                let entry = Irte::decode(words);
                let right = entry
                    .is_some_and(|e| e.vector == vector && e.source == SourceCheck::Requester(rid));
                if !right {
                    return Err(broken!(
                        "MSI remapping entry {line} should accept only requester {rid:#x} at vector {vector}, it holds {entry:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// (d) on aarch64: no MSI remapping; the IRQ bindings must belong to live
/// handlers.
#[cfg(not(target_arch = "x86_64"))]
fn msi(caps: &Caps) -> Result<(), Broken> {
    let mut problem = None;
    crate::sched::irq_bindings(|handler, line, _| {
        let alive = matches!(
            caps.object(handler).map(|o| *o.state()),
            Some(ObjectState::IrqHandler { irq }) if irq == line
        );
        if !alive {
            problem.get_or_insert((handler, line));
        }
    });
    match problem {
        Some((handler, line)) => Err(broken!(
            "the kernel binds line {line} to object {}, which is no live IrqHandler for it",
            handler.0
        )),
        None => Ok(()),
    }
}
