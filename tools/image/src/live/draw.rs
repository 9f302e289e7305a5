//! A live dump drawn the way [`crate::graph`] draws an image: the same
//! petgraph graph of [`Node`]s and [`Edge`]s, styled by kind and written by
//! [`write_dot`].
//!
//! What is drawn, so that a system of a few domains stays readable though
//! the kernel holds hundreds of capabilities:
//!
//! - every named TCB with its CSpace is a domain box (init, the root task,
//!   included);
//! - an object a domain other than init holds is a node by its kind, with
//!   one edge from the domain per (domain, object): several capabilities
//!   become one edge labelled with their rights, badges and count;
//! - Frames a domain maps (`cpu=`), holds, or an IoSpace maps (`io=`) are
//!   grouped: consecutive Frames (in object order) of one size, used by the
//!   same domains and IoSpaces with the same rights at adjacent addresses,
//!   are one node (`16 Frames, 64 KiB`); a domain's mapping is an edge
//!   labelled with rights and address range, an IoSpace's a red DMA edge;
//!   Frames retyped from a device Untyped (a device's registers) are never
//!   grouped with RAM and say `device memory`;
//! - the IOMMU state: IoDevice -> IoSpace / IoUserTable `attached`,
//!   IoDevice or IoSpace -> IoFaultQueue `faults`, IoPasid -> IoDevice,
//!   IoUserTable -> IoSpace; an IoDevice attached to nothing says so (in a
//!   `halt` dump, after its IoSpace was revoked, the IOMMU blocks its DMA);
//! - init's capabilities to drawn objects are dashed, unlabelled edges;
//!   the rest of init's capabilities (Untypeds, page tables, the domains'
//!   private Frames nobody else maps, ...) are one note counting them by
//!   kind; the kernel's own slots are a count in the title.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use petgraph::graph::{Graph, NodeIndex};

use super::{Capability, Details, Holder, Kind, LiveDump, ROOT_TASK, Rights};
use crate::graph::{Edge, EdgeKind, Node, NodeKind, write_dot};
use crate::size::human;

/// A use of a Frame by someone other than init and the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Use {
    /// A capability in this holder's CSpace.
    Held(Holder, Rights),
    /// Mapped in the VSpace with this root, at an address.
    Cpu(u64, Rights),
    /// Mapped in this IoSpace, at an IPA.
    Io(u64, Rights),
}

/// A run of Frames drawn as one node.
#[derive(Debug)]
struct Group {
    bits: u32,
    /// Retyped from a device Untyped: registers, not RAM.
    device: bool,
    /// The uses, sorted, with the address range each covers (`Held`: 0..0).
    uses: Vec<(Use, u64, u64)>,
    frames: Vec<u64>,
    paddr_low: u64,
    paddr_high: u64,
}

/// What a node stands for, to find it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    Domain(usize),
    Group(usize),
    Object(u64),
    VSpace(u64),
}

struct Drawing<'a> {
    dump: &'a LiveDump,
    graph: Graph<Node, Edge>,
    nodes: HashMap<Target, NodeIndex>,
    /// Frame object id -> group index.
    group_of: HashMap<u64, usize>,
    groups: Vec<Group>,
    /// Capability edges, merged: (from, to) -> labels and count.
    holds: BTreeMap<(NodeIndex, NodeIndex), (usize, BTreeSet<String>)>,
    /// Objects whose IOMMU state still has to be drawn.
    pending: Vec<u64>,
}

/// The uses of the Frame capabilities `caps` that are not init's or the
/// kernel's, each with its address (0 for a held capability).
fn frame_uses(dump: &LiveDump, init: Option<usize>, caps: &[&Capability]) -> Vec<(Use, u64)> {
    let mut uses = Vec::new();
    for cap in caps {
        let by_domain = match cap.holder {
            Holder::Domain(index) => Some(index) != init,
            Holder::CNode(_) | Holder::Nowhere => true,
            Holder::Kernel => false,
        };
        if by_domain {
            uses.push((Use::Held(cap.holder, cap.rights), 0));
        }
        if let Some(cpu) = cap.cpu
            && dump.domain_of_vspace(cpu.vspace) != init
        {
            uses.push((Use::Cpu(cpu.vspace, cpu.rights), cpu.vaddr));
        }
        if let Some(io) = cap.io {
            uses.push((Use::Io(io.space, io.rights), io.ipa));
        }
    }
    uses.sort_unstable();
    uses
}

/// Groups the Frames others than init use into runs (see the module doc).
fn group_frames(dump: &LiveDump) -> Vec<Group> {
    let init = dump.domain(ROOT_TASK);
    let mut caps_of: HashMap<u64, Vec<&Capability>> = HashMap::new();
    for cap in &dump.caps {
        caps_of.entry(cap.object).or_default().push(cap);
    }
    let mut groups: Vec<Group> = Vec::new();
    for object in dump.objects.iter().filter(|o| o.kind == Kind::Frame) {
        let caps = caps_of.get(&object.id).map_or(&[][..], Vec::as_slice);
        let uses = frame_uses(dump, init, caps);
        if uses.is_empty() {
            continue;
        }
        let size = object.size();
        let device = dump
            .object(object.parent.unwrap_or(u64::MAX))
            .is_some_and(|parent| {
                matches!(
                    parent.details,
                    Details::Untyped {
                        device: Some(true),
                        ..
                    }
                )
            });
        let joins = groups.last().is_some_and(|group| {
            group.bits == object.bits
                && group.device == device
                && group.uses.len() == uses.len()
                && group
                    .uses
                    .iter()
                    .zip(&uses)
                    .all(|(&(kind, low, high), &(new, address))| {
                        kind == new
                            && (matches!(kind, Use::Held(..))
                                || address == high
                                || address.checked_add(size) == Some(low))
                    })
        });
        let end = object.paddr.saturating_add(size);
        match groups.last_mut() {
            Some(group) if joins => {
                for (range, &(_, address)) in group.uses.iter_mut().zip(&uses) {
                    range.1 = range.1.min(address);
                    range.2 = range.2.max(address.saturating_add(size));
                }
                group.frames.push(object.id);
                group.paddr_low = group.paddr_low.min(object.paddr);
                group.paddr_high = group.paddr_high.max(end);
            }
            _ => groups.push(Group {
                bits: object.bits,
                device,
                uses: uses
                    .iter()
                    .map(|&(kind, address)| match kind {
                        Use::Held(..) => (kind, 0, 0),
                        _ => (kind, address, address.saturating_add(size)),
                    })
                    .collect(),
                frames: vec![object.id],
                paddr_low: object.paddr,
                paddr_high: end,
            }),
        }
    }
    groups
}

/// `low–high` of a half-open range, the last byte included.
fn range(low: u64, high: u64) -> String {
    format!("{low:#x}–{:#x}", high.saturating_sub(1))
}

/// A capability's edge label: rights, and the badge when it has one.
fn cap_label(cap: &Capability) -> String {
    if cap.badge == 0 {
        cap.rights.to_string()
    } else {
        format!("{} badge {:#x}", cap.rights, cap.badge)
    }
}

impl<'a> Drawing<'a> {
    fn node(&mut self, target: Target) -> NodeIndex {
        if let Some(&index) = self.nodes.get(&target) {
            return index;
        }
        let (kind, label) = self.describe(target);
        let index = self.graph.add_node(Node { kind, label });
        self.nodes.insert(target, index);
        if let Target::Object(id) = target {
            self.pending.push(id);
        }
        index
    }

    fn describe(&self, target: Target) -> (NodeKind, String) {
        let dump = self.dump;
        match target {
            Target::Domain(index) => {
                let domain = &dump.domains[index];
                let held = dump.held_by(Holder::Domain(index)).count();
                let cnode = domain
                    .cnode
                    .map_or_else(|| "no CSpace".to_string(), |id| format!("CNode #{id}"));
                let vspace = domain.vspace.map_or_else(
                    || "no VSpace".to_string(),
                    |root| format!("VSpace {root:#x}"),
                );
                let role = if domain.name == ROOT_TASK {
                    " (root task)"
                } else {
                    ""
                };
                (
                    NodeKind::Domain,
                    format!(
                        "{}{role}\nTcb #{}, {cnode}, {vspace}\nholds {held} {}",
                        domain.name,
                        domain.tcb,
                        if held == 1 {
                            "capability"
                        } else {
                            "capabilities"
                        }
                    ),
                )
            }
            Target::Group(index) => {
                let group = &self.groups[index];
                let page = 1u64.checked_shl(group.bits).unwrap_or(u64::MAX);
                let count = group.frames.len() as u64;
                let mut head = if count == 1 {
                    format!("Frame #{}, {}", group.frames[0], human(page))
                } else {
                    format!("{count} Frames, {}", human(page.saturating_mul(count)))
                };
                if group.device {
                    head.push_str(" of device memory");
                }
                (
                    NodeKind::Region,
                    format!("{head}\npaddr {}", range(group.paddr_low, group.paddr_high)),
                )
            }
            Target::VSpace(root) => (
                NodeKind::Object,
                format!("VSpace {root:#x}\n(no named Tcb uses it)"),
            ),
            Target::Object(id) => {
                let Some(object) = dump.object(id) else {
                    return (NodeKind::Object, format!("object #{id}\n(no object line)"));
                };
                let head = format!("{:?} #{id}", object.kind);
                let (kind, detail) = match &object.details {
                    Details::IrqHandler { line } => {
                        (NodeKind::Irq, line.map(|line| format!("IRQ {line}")))
                    }
                    Details::IoDevice {
                        rid, space, table, ..
                    } => {
                        let rid = rid.map(|rid| format!("requester id {rid:#06x}"));
                        let detached = (space.is_none() && table.is_none())
                            .then(|| self.detached(id).to_string());
                        let lines: Vec<String> = rid.into_iter().chain(detached).collect();
                        (
                            NodeKind::IoDevice,
                            (!lines.is_empty()).then(|| lines.join("\n")),
                        )
                    }
                    Details::IoSpace { did, .. } => {
                        (NodeKind::IoSpace, did.map(|did| format!("domain id {did}")))
                    }
                    Details::IoPasid { pasid, .. } => {
                        (NodeKind::IoPasid, pasid.map(|p| format!("PASID {p}")))
                    }
                    Details::IoUserTable { ipa, .. } => (
                        NodeKind::Object,
                        ipa.map(|ipa| format!("stage-1 table at IPA {ipa:#x}")),
                    ),
                    Details::Untyped { .. } | Details::CNode { .. } | Details::Tcb { .. } => (
                        NodeKind::Object,
                        Some(format!("{} at {:#x}", human(object.size()), object.paddr)),
                    ),
                    Details::None => (
                        match object.kind {
                            Kind::Endpoint => NodeKind::Endpoint,
                            Kind::Notification => NodeKind::Notification,
                            Kind::IoFaultQueue => NodeKind::IoFaultQueue,
                            _ => NodeKind::Object,
                        },
                        None,
                    ),
                };
                let label = match detail {
                    Some(detail) => format!("{head}\n{detail}"),
                    None => head,
                };
                (kind, label)
            }
        }
    }

    /// What an IoDevice attached to no IoSpace or IoUserTable does with
    /// DMA: without an attached PASID either, nothing translates it and
    /// the IOMMU blocks it.
    fn detached(&self, device: u64) -> &'static str {
        let pasid_attached = self.dump.objects.iter().any(|object| {
            matches!(
                object.details,
                Details::IoPasid {
                    device: Some(of),
                    space,
                    table,
                    ..
                } if of == device && (space.is_some() || table.is_some())
            )
        });
        if pasid_attached {
            "not attached (only its PASIDs are)"
        } else {
            "not attached: its DMA is blocked"
        }
    }

    /// The node standing for object `id`: its domain when it is a domain's
    /// TCB or CSpace, its group when it is a grouped Frame.
    fn target_of(&self, id: u64) -> Target {
        let dump = self.dump;
        if let Some(index) = dump
            .domains
            .iter()
            .position(|domain| domain.tcb == id || domain.cnode == Some(id))
        {
            return Target::Domain(index);
        }
        match self.group_of.get(&id) {
            Some(&group) => Target::Group(group),
            None => Target::Object(id),
        }
    }

    fn hold(&mut self, from: NodeIndex, to: NodeIndex, label: String) {
        let entry = self.holds.entry((from, to)).or_default();
        entry.0 += 1;
        entry.1.insert(label);
    }

    fn edge(&mut self, from: NodeIndex, to: NodeIndex, kind: EdgeKind, label: String) {
        self.graph.add_edge(from, to, Edge { kind, label });
    }

    /// Draws the IOMMU state of the objects drawn so far (and of those it
    /// brings in).
    fn iommu_state(&mut self) {
        while let Some(id) = self.pending.pop() {
            let Some(object) = self.dump.object(id) else {
                continue;
            };
            let from = self.node(Target::Object(id));
            let mut links: Vec<(Option<u64>, EdgeKind, &str)> = Vec::new();
            match &object.details {
                Details::IoDevice {
                    space,
                    table,
                    faults,
                    ..
                } => {
                    links.push((*space, EdgeKind::Attached, "attached"));
                    links.push((*table, EdgeKind::Attached, "attached (stage 1)"));
                    links.push((*faults, EdgeKind::Faults, "IO page faults"));
                }
                Details::IoSpace { faults, .. } => {
                    links.push((*faults, EdgeKind::Faults, "IO page faults"));
                }
                Details::IoUserTable { space, .. } => {
                    links.push((*space, EdgeKind::Attached, "inside"));
                }
                Details::IoPasid {
                    device,
                    space,
                    table,
                    ..
                } => {
                    links.push((*device, EdgeKind::Attached, "PASID of"));
                    links.push((*space, EdgeKind::Attached, "attached"));
                    links.push((*table, EdgeKind::Attached, "attached (stage 1)"));
                }
                _ => {}
            }
            for (target, kind, label) in links {
                if let Some(target) = target {
                    let to = self.node(self.target_of(target));
                    self.edge(from, to, kind, label.to_string());
                }
            }
        }
    }
}

/// The graph of `dump` (see the module documentation for what is drawn).
pub fn graph(dump: &LiveDump) -> Graph<Node, Edge> {
    let groups = group_frames(dump);
    let group_of = groups
        .iter()
        .enumerate()
        .flat_map(|(index, group)| group.frames.iter().map(move |&id| (id, index)))
        .collect();
    let mut drawing = Drawing {
        dump,
        graph: Graph::new(),
        nodes: HashMap::new(),
        group_of,
        groups,
        holds: BTreeMap::new(),
        pending: Vec::new(),
    };
    let init = dump.domain(ROOT_TASK);
    for index in 0..dump.domains.len() {
        drawing.node(Target::Domain(index));
    }
    // What the domains (not init) hold, except Frames: the groups carry those.
    for cap in &dump.caps {
        let Holder::Domain(index) = cap.holder else {
            continue;
        };
        if Some(index) == init {
            continue;
        }
        let from = drawing.node(Target::Domain(index));
        let target = drawing.target_of(cap.object);
        if matches!(target, Target::Group(_)) || target == Target::Domain(index) {
            continue;
        }
        let to = drawing.node(target);
        drawing.hold(from, to, cap_label(cap));
    }
    // The Frame groups: held, mapped, DMA-mapped.
    for group_index in 0..drawing.groups.len() {
        let to = drawing.node(Target::Group(group_index));
        let uses = drawing.groups[group_index].uses.clone();
        for (kind, low, high) in uses {
            match kind {
                Use::Held(Holder::Domain(index), rights) => {
                    let from = drawing.node(Target::Domain(index));
                    drawing.hold(from, to, format!("{rights}"));
                }
                Use::Held(..) => {}
                Use::Cpu(vspace, rights) => {
                    let from = match dump.domain_of_vspace(vspace) {
                        Some(index) => drawing.node(Target::Domain(index)),
                        None => drawing.node(Target::VSpace(vspace)),
                    };
                    drawing.hold(from, to, format!("map {rights} {}", range(low, high)));
                }
                Use::Io(space, rights) => {
                    let from = drawing.node(drawing.target_of(space));
                    drawing.edge(
                        from,
                        to,
                        EdgeKind::Dma,
                        format!("DMA {rights} IPA {}", range(low, high)),
                    );
                }
            }
        }
    }
    drawing.iommu_state();
    // Init: dashed edges to what is drawn, a note for the rest.
    if let Some(init) = init {
        let from = drawing.node(Target::Domain(init));
        let mut also: BTreeSet<NodeIndex> = BTreeSet::new();
        let mut rest: BTreeMap<Kind, usize> = BTreeMap::new();
        for (cap, object) in dump.held_by(Holder::Domain(init)) {
            let target = drawing.target_of(cap.object);
            match drawing.nodes.get(&target) {
                Some(&to) if to != from => {
                    also.insert(to);
                }
                Some(_) => {}
                None => *rest.entry(object.kind).or_default() += 1,
            }
        }
        for to in also {
            drawing.edge(from, to, EdgeKind::AlsoHeld, String::new());
        }
        if !rest.is_empty() {
            let total: usize = rest.values().sum();
            let kinds: Vec<String> = rest
                .iter()
                .map(|(kind, count)| format!("{count} {kind:?}"))
                .collect();
            let label = format!(
                "init also holds {total} capabilities\nto objects no domain uses:\n{}",
                crate::graph::wrap(&kinds.join(", "), 40)
            );
            let note = drawing.graph.add_node(Node {
                kind: NodeKind::Summary,
                label,
            });
            drawing.edge(from, note, EdgeKind::AlsoHeld, String::new());
        }
    }
    let holds = std::mem::take(&mut drawing.holds);
    for ((from, to), (count, labels)) in holds {
        let mut label = labels.into_iter().collect::<Vec<_>>().join(", ");
        if count > 1 {
            label = format!("{count} caps: {label}");
        }
        drawing.edge(from, to, EdgeKind::Holds, label);
    }
    drawing.graph
}

/// The graph of `dump` as DOT source, titled `title` and the counts.
pub fn dot(dump: &LiveDump, title: &str) -> String {
    let title = format!(
        "{title}\n{} objects, {} capabilities; the kernel holds {} (slots below {})",
        dump.objects.len(),
        dump.caps.len(),
        dump.kernel_caps(),
        super::KERNEL_SLOTS
    );
    write_dot(&graph(dump), &title)
}
