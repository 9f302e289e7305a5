//! DESIGN invariants 1–5 as executable checks.
//!
//! Each check returns `Err(description)` on the first violation found. They
//! read the capability state through the public accessors only, so they
//! judge the real code from the outside.

use std::collections::{BTreeMap, BTreeSet};
use std::format;
use std::string::String;

use super::hardware::{AbstractIommu, Entry, Stage2Entry};
use crate::caps::Caps;
use crate::effect::FaultSource;
use crate::object::{Attachment, Object, ObjectState};
use crate::storage::{Cap, Storage};
use crate::types::{ObjectId, ObjectKind, SlotId};

/// Result of one invariant check.
pub type Check = Result<(), String>;

fn live<S: Storage>(caps: &Caps<S>, id: ObjectId) -> Option<&Object> {
    caps.object(id)
}

fn unit_id<S: Storage>(caps: &Caps<S>, iommu: ObjectId) -> Option<u8> {
    match live(caps, iommu)?.state() {
        ObjectState::IommuControl(u) => Some(u.id),
        _ => None,
    }
}

fn caps_iter<S: Storage>(caps: &Caps<S>) -> impl Iterator<Item = (SlotId, &Cap)> {
    caps.slots()
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.cap().map(|c| (SlotId(i as u32), c)))
}

fn live_objects<S: Storage>(caps: &Caps<S>) -> impl Iterator<Item = (ObjectId, &Object)> {
    caps.objects()
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.as_ref().map(|o| (ObjectId(i as u32), o)))
}

/// The space an attachment translates through, if it and its user table
/// are live and consistent.
fn attachment_space<S: Storage>(
    caps: &Caps<S>,
    a: &Attachment,
) -> Option<(ObjectId, u16, Option<u64>)> {
    let did = match live(caps, a.space)?.state() {
        ObjectState::IoSpace { did, .. } => *did,
        _ => return None,
    };
    let root = match a.user_table {
        None => None,
        Some(t) => match live(caps, t)?.state() {
            ObjectState::IoUserTable {
                space: Some(s),
                root_ipa,
            } if *s == a.space => Some(*root_ipa),
            _ => return None,
        },
    };
    Some((a.space, did, root))
}

/// The hardware state the capability state calls for.
pub struct Expected {
    /// Stage-2 leaves.
    pub stage2: BTreeMap<(ObjectId, u64), Stage2Entry>,
    /// Device entries.
    pub devices: BTreeMap<(u8, u32), Entry>,
    /// PASID entries.
    pub pasids: BTreeMap<(u8, u32, u32), Entry>,
    /// Fault routes.
    pub fault_routes: BTreeMap<(u8, FaultSource), ObjectId>,
}

/// Compute the hardware state the capabilities justify; `Err` if a
/// capability-level attachment or mapping depends on a dead object.
pub fn expected<S: Storage>(caps: &Caps<S>) -> Result<Expected, String> {
    let mut e = Expected {
        stage2: BTreeMap::new(),
        devices: BTreeMap::new(),
        pasids: BTreeMap::new(),
        fault_routes: BTreeMap::new(),
    };
    for (slot, cap) in caps_iter(caps) {
        if let Some(m) = cap.mapping() {
            let frame =
                live(caps, cap.object()).ok_or(format!("slot {}: mapped frame is dead", slot.0))?;
            let (paddr, size_bits) = frame.memory().ok_or("frame without memory")?;
            match live(caps, m.space).map(|o| o.state()) {
                Some(ObjectState::IoSpace { .. }) => {}
                _ => return Err(format!("slot {}: frame mapped in a dead IoSpace", slot.0)),
            }
            e.stage2.insert(
                (m.space, m.ipa),
                Stage2Entry {
                    paddr,
                    size_bits,
                    rights: m.rights,
                },
            );
        }
    }
    for (id, o) in live_objects(caps) {
        match *o.state() {
            ObjectState::IoDevice {
                unit,
                rid,
                attached,
                fault_queue,
            } => {
                let u = unit_id(caps, unit).ok_or("device on a dead unit")?;
                if let Some(a) = attached {
                    let (space, did, root) = attachment_space(caps, &a).ok_or(format!(
                        "device object {} attached to a dead IoSpace or user table",
                        id.0
                    ))?;
                    e.devices.insert(
                        (u, rid),
                        Entry {
                            did,
                            space,
                            stage1_root: root,
                        },
                    );
                }
                if let Some(q) = fault_queue {
                    e.fault_routes.insert((u, FaultSource::Device(rid)), q);
                }
            }
            ObjectState::IoPasid {
                device,
                pasid,
                attached: Some(a),
            } => {
                let Some(ObjectState::IoDevice {
                    unit,
                    rid,
                    attached: device_attached,
                    ..
                }) = device.and_then(|d| live(caps, d)).map(|o| *o.state())
                else {
                    return Err(format!(
                        "PASID object {} attached while its device is dead",
                        id.0
                    ));
                };
                // All PASIDs of a device share the device's IoSpace.
                if device_attached.map(|d| d.space) != Some(a.space) {
                    return Err(format!(
                        "PASID object {} uses another IoSpace than its device",
                        id.0
                    ));
                }
                let u = unit_id(caps, unit).ok_or("PASID on a dead unit")?;
                let (space, did, root) = attachment_space(caps, &a).ok_or(format!(
                    "PASID object {} attached to a dead IoSpace or user table",
                    id.0
                ))?;
                e.pasids.insert(
                    (u, rid, pasid),
                    Entry {
                        did,
                        space,
                        stage1_root: root,
                    },
                );
            }
            ObjectState::IoSpace {
                unit,
                did,
                fault_queue: Some(q),
            } => {
                let u = unit_id(caps, unit).ok_or("IoSpace on a dead unit")?;
                e.fault_routes.insert((u, FaultSource::Domain(did)), q);
            }
            _ => {}
        }
    }
    for (&key, &q) in &e.fault_routes {
        if live(caps, q).map(|o| o.kind()) != Some(ObjectKind::IoFaultQueue) {
            return Err(format!("faults of {key:?} routed to dead queue {}", q.0));
        }
    }
    Ok(e)
}

/// Invariant 1, confinement: every translation a device can complete (from
/// tables, whatever stage 1 holds, or from a stale cache entry) lands in a
/// Frame currently mapped in the stage 2 of the IoSpace that device (or
/// PASID) is attached to, with rights within that mapping.
pub fn confinement<S: Storage>(caps: &Caps<S>, hw: &AbstractIommu) -> Check {
    for t in hw.reachable() {
        // Find the device (and PASID) object and its current attachment.
        let device = live_objects(caps).find_map(|(id, o)| match *o.state() {
            ObjectState::IoDevice {
                unit,
                rid,
                attached,
                ..
            } if rid == t.rid && unit_id(caps, unit) == Some(t.unit) => Some((id, attached)),
            _ => None,
        });
        let Some((device_id, device_attached)) = device else {
            return Err(format!("{t:?}: no live IoDevice for this requester"));
        };
        let attached = match t.pasid {
            None => device_attached,
            Some(p) => live_objects(caps)
                .find_map(|(_, o)| match *o.state() {
                    ObjectState::IoPasid {
                        device: Some(d),
                        pasid,
                        attached,
                    } if d == device_id && pasid == p => Some(attached),
                    _ => None,
                })
                .flatten(),
        };
        let Some(a) = attached else {
            return Err(format!("{t:?}: requester is not attached, yet translates"));
        };
        let covered = caps_iter(caps).any(|(_, c)| match c.mapping() {
            Some(m) if m.space == a.space => {
                live(caps, c.object()).and_then(|f| f.memory()) == Some((t.paddr, t.size_bits))
                    && m.rights.contains(t.rights)
            }
            _ => false,
        });
        if !covered {
            return Err(format!(
                "{t:?}: no Frame mapped in IoSpace object {} grants this",
                a.space.0
            ));
        }
    }
    Ok(())
}

/// Invariant 2, strict revocation: after an operation returns, the tables
/// hold exactly what live capabilities justify, no invalidation is still
/// pending, and no cache holds a translation the tables no longer allow.
pub fn strict_revocation<S: Storage>(caps: &Caps<S>, hw: &AbstractIommu) -> Check {
    let e = expected(caps)?;
    if e.stage2 != hw.stage2 {
        return Err(format!(
            "stage-2 tables {:?} but capabilities justify {:?}",
            hw.stage2, e.stage2
        ));
    }
    if e.devices != hw.devices {
        return Err(format!(
            "device entries {:?} but capabilities justify {:?}",
            hw.devices, e.devices
        ));
    }
    if e.pasids != hw.pasids {
        return Err(format!(
            "PASID entries {:?} but capabilities justify {:?}",
            hw.pasids, e.pasids
        ));
    }
    if e.fault_routes != hw.fault_routes {
        return Err(format!(
            "fault routes {:?} but capabilities justify {:?}",
            hw.fault_routes, e.fault_routes
        ));
    }
    if !hw.pending.is_empty() {
        return Err(format!(
            "invalidations {:?} queued but not waited for",
            hw.pending
        ));
    }
    let valid = hw.valid_now();
    if let Some(stale) = hw.cache.iter().find(|t| !valid.contains(t)) {
        return Err(format!("stale cached translation {stale:?}"));
    }
    Ok(())
}

/// The derivation-tree parent of each slot (from the pre-order list).
pub fn parents<S: Storage>(caps: &Caps<S>) -> BTreeMap<SlotId, SlotId> {
    let slots = caps.slots();
    let mut out = BTreeMap::new();
    for (i, s) in slots.iter().enumerate() {
        if s.cap().is_none() || s.depth() == 0 {
            continue;
        }
        let mut cursor = s.prev();
        while let Some(c) = cursor {
            let cs = &slots[c.0 as usize];
            if cs.depth() + 1 == s.depth() {
                out.insert(SlotId(i as u32), c);
                break;
            }
            cursor = cs.prev();
        }
    }
    out
}

/// Invariant 3, no amplification: a capability derived from another one to
/// the same object holds no right (and no badge) its parent lacks, and an
/// IO mapping holds no right its Frame capability lacks.
pub fn no_amplification<S: Storage>(caps: &Caps<S>) -> Check {
    let parents = parents(caps);
    for (slot, cap) in caps_iter(caps) {
        if let Some(m) = cap.mapping()
            && !cap.rights().contains(m.rights)
        {
            return Err(format!(
                "slot {}: mapping rights {:?} exceed cap rights {:?}",
                slot.0,
                m.rights,
                cap.rights()
            ));
        }
        let Some(parent) = parents.get(&slot) else {
            continue;
        };
        let Some(pcap) = caps.slots()[parent.0 as usize].cap() else {
            return Err(format!(
                "slot {}: derivation parent {} is empty",
                slot.0, parent.0
            ));
        };
        if pcap.object() == cap.object() {
            if !pcap.rights().contains(cap.rights()) {
                return Err(format!(
                    "slot {} holds {:?}, more than its parent slot {} ({:?})",
                    slot.0,
                    cap.rights(),
                    parent.0,
                    pcap.rights()
                ));
            }
            if pcap.badge().0 != 0 && pcap.badge() != cap.badge() {
                return Err(format!("slot {}: badge changed from its parent's", slot.0));
            }
        }
    }
    Ok(())
}

/// Invariant 4, retype memory safety: the memory of two live objects never
/// overlaps unless one is an Untyped the other was carved from (directly or
/// not); every carved object lies below its Untyped's watermark; reference
/// counts and the derivation list are consistent.
pub fn retype_safety<S: Storage>(caps: &Caps<S>) -> Check {
    let objects: std::vec::Vec<(ObjectId, &Object)> = live_objects(caps).collect();
    let ancestor = |a: ObjectId, b: ObjectId| {
        let mut cur = live(caps, b).and_then(|o| o.parent());
        while let Some(p) = cur {
            if p == a {
                return true;
            }
            cur = live(caps, p).and_then(|o| o.parent());
        }
        false
    };
    for (i, &(a, oa)) in objects.iter().enumerate() {
        if let Some(p) = oa.parent() {
            let Some(po) = live(caps, p) else {
                return Err(format!("object {} carved from dead Untyped {}", a.0, p.0));
            };
            let (Some((pb, _)), Some((ab, asz)), ObjectState::Untyped { watermark, .. }) =
                (po.memory(), oa.memory(), po.state())
            else {
                return Err(format!(
                    "object {} has a parent that is not an Untyped",
                    a.0
                ));
            };
            if ab < pb || ab + (1u64 << asz) > pb + watermark {
                return Err(format!(
                    "object {} lies outside its Untyped's handed-out range",
                    a.0
                ));
            }
        }
        let Some((ab, asz)) = oa.memory() else {
            continue;
        };
        for &(b, ob) in &objects[i + 1..] {
            let Some((bb, bsz)) = ob.memory() else {
                continue;
            };
            let overlap = ab < bb + (1u64 << bsz) && bb < ab + (1u64 << asz);
            if overlap && !ancestor(a, b) && !ancestor(b, a) {
                return Err(format!(
                    "live {:?} object {} and {:?} object {} overlap at {:#x}/{:#x}",
                    oa.kind(),
                    a.0,
                    ob.kind(),
                    b.0,
                    ab,
                    bb
                ));
            }
        }
        let children = objects
            .iter()
            .filter(|(_, o)| o.parent() == Some(a))
            .count() as u32;
        if children != oa.live_children() {
            return Err(format!(
                "object {}: {} live children recorded, {} found",
                a.0,
                oa.live_children(),
                children
            ));
        }
    }
    for &(a, oa) in &objects {
        let count = caps_iter(caps).filter(|(_, c)| c.object() == a).count() as u32;
        if count != oa.cap_count() {
            return Err(format!(
                "object {}: cap_count {} but {} caps",
                a.0,
                oa.cap_count(),
                count
            ));
        }
        if count == 0 && oa.live_children() == 0 && !oa.is_permanent() {
            return Err(format!("object {} leaked (no caps, no children)", a.0));
        }
    }
    for (slot, cap) in caps_iter(caps) {
        if live(caps, cap.object()).map(|o| o.kind()) != Some(cap.kind()) {
            return Err(format!("slot {} names a dead or retyped object", slot.0));
        }
    }
    // Derivation list well-formed: links symmetric, depth grows by at most 1.
    let slots = caps.slots();
    for (i, s) in slots.iter().enumerate() {
        if s.cap().is_none() {
            if s.prev().is_some() || s.next().is_some() {
                return Err(format!("empty slot {i} is linked"));
            }
            continue;
        }
        if let Some(n) = s.next() {
            let ns = &slots[n.0 as usize];
            if ns.prev() != Some(SlotId(i as u32))
                || ns.depth() > s.depth() + 1
                || ns.cap().is_none()
            {
                return Err(format!("derivation list broken after slot {i}"));
            }
        } else if s.depth() > 0 && s.prev().is_none() {
            return Err(format!("slot {i} at depth {} has no parent", s.depth()));
        }
        if let Some(p) = s.prev()
            && slots[p.0 as usize].next() != Some(SlotId(i as u32))
        {
            return Err(format!("derivation list broken before slot {i}"));
        }
    }
    // The pre-order walk (what the kernel's capability dump prints) visits
    // every capability exactly once, each at most one level below the one
    // before it.
    let mut seen = std::vec![false; slots.len()];
    let mut previous_depth: Option<u32> = None;
    for (slot, depth, _) in caps.derivation_order() {
        let i = slot.0 as usize;
        if core::mem::replace(&mut seen[i], true) {
            return Err(format!("derivation order visits slot {i} twice"));
        }
        if depth > previous_depth.map_or(0, |d| d + 1) {
            return Err(format!(
                "derivation order: slot {i} at depth {depth} has no parent before it"
            ));
        }
        previous_depth = Some(depth);
    }
    if let Some((i, _)) = slots
        .iter()
        .enumerate()
        .find(|(i, s)| s.cap().is_some() && !seen[*i])
    {
        return Err(format!("derivation order misses slot {i}"));
    }
    Ok(())
}

/// Invariant 5, unique tags: no two live IoSpaces of a unit share a
/// DID/VMID; no two live IoPasid objects name the same (device, PASID); no
/// two live IoDevices name the same requester; all within the unit's limits.
pub fn unique_tags<S: Storage>(caps: &Caps<S>) -> Check {
    let mut dids = BTreeSet::new();
    let mut pasids = BTreeSet::new();
    let mut rids = BTreeSet::new();
    for (id, o) in live_objects(caps) {
        match *o.state() {
            ObjectState::IoSpace { unit, did, .. } => {
                let limit = match live(caps, unit).map(|u| *u.state()) {
                    Some(ObjectState::IommuControl(u)) => u.domain_ids,
                    _ => 0,
                };
                if did >= limit || !dids.insert((unit, did)) {
                    return Err(format!(
                        "IoSpace object {} reuses or exceeds DID {did}",
                        id.0
                    ));
                }
            }
            ObjectState::IoPasid {
                device: Some(d),
                pasid,
                ..
            } => {
                let bits = match live(caps, d).map(|o| *o.state()) {
                    Some(ObjectState::IoDevice { unit, .. }) => {
                        match live(caps, unit).map(|u| *u.state()) {
                            Some(ObjectState::IommuControl(u)) => u.pasid_bits,
                            _ => 0,
                        }
                    }
                    _ => 0,
                };
                if u64::from(pasid) >= (1u64 << bits) || !pasids.insert((d, pasid)) {
                    return Err(format!(
                        "two live IoPasid objects name (device object {}, PASID {pasid})",
                        d.0
                    ));
                }
            }
            ObjectState::IoDevice { unit, rid, .. } if !rids.insert((unit, rid)) => {
                return Err(format!("two live IoDevices name requester {rid}"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The IPA index agrees with a full scan: for each live IoSpace, the index
/// holds exactly one entry per mapping in it, naming the slot that holds
/// it, and one count per 2 MiB block with 4 KiB mappings, and answers the
/// overlap check as the walk of every mapping does
/// ([`ipa_index_of_space`]); no entry is left for anything else (the
/// index holds exactly as many entries as the mappings need), and every
/// mapping names a live IoSpace.
pub fn mapping_index<S: Storage>(caps: &Caps<S>) -> Check {
    let mut expected_entries = 0;
    for (id, o) in live_objects(caps) {
        if o.kind() != ObjectKind::IoSpace {
            continue;
        }
        let mapped: std::vec::Vec<SlotId> = caps_iter(caps)
            .filter(|(_, c)| c.mapping().is_some_and(|m| m.space == id))
            .map(|(s, _)| s)
            .collect();
        expected_entries += ipa_index_of_space(caps, id, &mapped)?;
    }
    if caps.ipa_index_used() != expected_entries {
        return Err(format!(
            "the IPA index holds {} entries, the mappings need {expected_entries}",
            caps.ipa_index_used()
        ));
    }
    for (slot, cap) in caps_iter(caps) {
        if let Some(m) = cap.mapping()
            && caps
                .object(m.space)
                .is_none_or(|o| o.kind() != ObjectKind::IoSpace)
        {
            return Err(format!(
                "slot {} holds an IO mapping in object {}, not a live IoSpace",
                slot.0, m.space.0
            ));
        }
    }
    Ok(())
}

/// The IPA index's part for IoSpace `space`, whose mappings are held in
/// `mapped`: each mapping's own entry names its slot, each 2 MiB block's
/// count is its number of 4 KiB mappings, and the index's overlap answer
/// equals the walk of the mapping list for every mapped page and block,
/// their neighbours and the blocks around them, at both sizes. Returns how
/// many entries the space needs.
fn ipa_index_of_space<S: Storage>(
    caps: &Caps<S>,
    space: crate::ObjectId,
    mapped: &[SlotId],
) -> Result<usize, String> {
    const LARGE: u64 = 1 << crate::LARGE_PAGE_BITS;
    const PAGE: u64 = 1 << crate::PAGE_BITS;
    let mut counts = std::collections::BTreeMap::new();
    let mut probes = BTreeSet::new();
    for &slot in mapped {
        let Some(cap) = caps.slots()[slot.0 as usize].cap() else {
            continue;
        };
        let Some(m) = cap.mapping() else { continue };
        let large = caps
            .object(cap.object())
            .is_some_and(|o| o.memory().is_some_and(|(_, bits)| bits > crate::PAGE_BITS));
        let (own, _) = caps.ipa_index_entry(space, m.ipa, large);
        if own != Some(slot.0) {
            return Err(format!(
                "IoSpace object {}: the IPA index has {own:?} for the mapping at {:#x}, held in slot {}",
                space.0, m.ipa, slot.0
            ));
        }
        let block = m.ipa & !(LARGE - 1);
        if !large {
            *counts.entry(block).or_insert(0u32) += 1;
        }
        for ipa in [
            m.ipa,
            m.ipa.wrapping_sub(PAGE),
            m.ipa + PAGE,
            block,
            block + LARGE,
        ] {
            probes.insert(ipa);
        }
        probes.insert(block.wrapping_sub(LARGE));
    }
    for (&block, &count) in &counts {
        let (_, held) = caps.ipa_index_entry(space, block, true);
        if held != count {
            return Err(format!(
                "IoSpace object {}: the IPA index counts {held} 4 KiB mappings in the block at {block:#x}, there are {count}",
                space.0
            ));
        }
    }
    for ipa in probes {
        for bits in [crate::PAGE_BITS, crate::LARGE_PAGE_BITS] {
            if ipa & ((1u64 << bits) - 1) != 0 || ipa.checked_add(1u64 << bits).is_none() {
                continue;
            }
            let (index, walk) = (
                caps.ipa_taken(space, ipa, bits),
                caps.ipa_taken_by_walk(space, ipa, bits),
            );
            if index != walk {
                return Err(format!(
                    "IoSpace object {}: the IPA index says {} for 2^{bits} bytes at {ipa:#x}, the walk of its mappings {}",
                    space.0,
                    if index { "taken" } else { "free" },
                    if walk { "taken" } else { "free" }
                ));
            }
        }
    }
    Ok(mapped.len() + counts.len())
}

/// All invariants, in order, with their names.
pub fn check_all<S: Storage>(
    caps: &Caps<S>,
    hw: &AbstractIommu,
) -> Result<(), (&'static str, String)> {
    confinement(caps, hw).map_err(|e| ("confinement", e))?;
    strict_revocation(caps, hw).map_err(|e| ("strict revocation", e))?;
    no_amplification(caps).map_err(|e| ("no amplification", e))?;
    retype_safety(caps).map_err(|e| ("retype memory safety", e))?;
    unique_tags(caps).map_err(|e| ("unique tags", e))?;
    mapping_index(caps).map_err(|e| ("mapping index", e))?;
    Ok(())
}
