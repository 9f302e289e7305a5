//! The capability distribution of a validated image as a Graphviz graph:
//! which domain holds which object with which rights, and which devices
//! can DMA where.
//!
//! Nodes are the objects init creates — protection domains (blue boxes),
//! memory regions (yellow), channels (endpoints as ellipses, notifications
//! as diamonds), IRQ handlers, and per DMA grant the IoDevice, its IoSpace,
//! IoPasids and IoFaultQueue (red). An edge from a domain is a capability it
//! holds, labelled with its rights or badge; an edge from an IoSpace to a
//! region (red, bold) is a path a device's DMA can take, labelled with the
//! IPA and rights. The graph is a [`petgraph`] graph, written as DOT with
//! petgraph's writer; [`render_svg`] runs Graphviz `dot`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use petgraph::dot::{Config, Dot};
use petgraph::graph::{Graph, NodeIndex};
use sysdesc::{ChannelKind, IoMode};

use crate::size::human;
use crate::validate::Image;

/// What a node stands for; decides its shape and colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A protection domain.
    Domain,
    /// A memory region.
    Region,
    /// An Endpoint.
    Endpoint,
    /// A Notification.
    Notification,
    /// An IrqHandler.
    Irq,
    /// An IoDevice (a PCI function).
    IoDevice,
    /// An IoSpace (stage-2 domain).
    IoSpace,
    /// An IoPasid.
    IoPasid,
    /// An IoFaultQueue.
    IoFaultQueue,
    /// Any other kernel object (an IoUserTable, a CNode or TCB outside a
    /// domain, an Untyped, a PageTable, a control capability's object); the
    /// live graph draws these when a domain holds them.
    Object,
    /// A note summarising what is not drawn (the live graph's capabilities
    /// of init and of the kernel).
    Summary,
}

/// A node: its kind and its (multi-line) label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// What it is.
    pub kind: NodeKind,
    /// Its label, lines separated by `\n`.
    pub label: String,
}

/// What an edge stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    /// A domain holds a capability to the target.
    Holds,
    /// A device or PASID is attached to a translation.
    Attached,
    /// A device's DMA can reach the target region.
    Dma,
    /// Faults of a device are reported to the target queue.
    Faults,
    /// Init (the root task) also holds a capability to the target, which a
    /// domain holds or maps; dashed and unlabelled so the domains' own
    /// edges stay readable.
    AlsoHeld,
}

/// An edge: its kind and label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// What it is.
    pub kind: EdgeKind,
    /// Its label.
    pub label: String,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

impl std::fmt::Display for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

/// The capability graph of `image`.
pub fn build(image: &Image) -> Graph<Node, Edge> {
    let system = &image.system;
    let mut graph = Graph::new();
    let node =
        |graph: &mut Graph<Node, Edge>, kind, label: String| graph.add_node(Node { kind, label });
    let edge = |graph: &mut Graph<Node, Edge>, from, to, kind, label: String| {
        graph.add_edge(from, to, Edge { kind, label });
    };
    let domains: Vec<NodeIndex> = system
        .domains
        .iter()
        .map(|domain| {
            let mut label = format!(
                "{}\nprogram {}, priority {}\nstack {}, heap {}",
                domain.name,
                domain.program,
                domain.priority,
                human(domain.stack_size),
                human(domain.heap_size)
            );
            if domain.untyped_size > 0 {
                label.push_str(&format!(
                    "\nuntyped {}, own cnode and vspace",
                    human(domain.untyped_size)
                ));
            }
            node(&mut graph, NodeKind::Domain, label)
        })
        .collect();
    let regions: Vec<NodeIndex> = system
        .regions
        .iter()
        .map(|region| {
            let label = format!(
                "{}\n{} in {} pages",
                region.name,
                human(region.size),
                human(region.page_size.bytes())
            );
            node(&mut graph, NodeKind::Region, label)
        })
        .collect();
    for map in &system.maps {
        let label = format!("map {} @ {:#x}", map.rights, map.vaddr);
        edge(
            &mut graph,
            domains[usize::from(map.domain)],
            regions[usize::from(map.region)],
            EdgeKind::Holds,
            label,
        );
    }
    for (index, channel) in system.channels.iter().enumerate() {
        let (kind, word) = match channel.kind {
            ChannelKind::Endpoint => (NodeKind::Endpoint, "Endpoint"),
            ChannelKind::Notification => (NodeKind::Notification, "Notification"),
        };
        let object = node(&mut graph, kind, format!("channel {index}\n{word}"));
        for (end_index, end) in channel.ends.iter().enumerate() {
            let role = match (channel.kind, end_index) {
                (ChannelKind::Endpoint, 0) => "call",
                (ChannelKind::Endpoint, _) => "receive, reply",
                (ChannelKind::Notification, _) => "signal, wait",
            };
            let label = format!("id {}: {role}\nbadge {:#x}", end.id, end.badge);
            edge(
                &mut graph,
                domains[usize::from(end.domain)],
                object,
                EdgeKind::Holds,
                label,
            );
        }
    }
    for irq in &system.irqs {
        let trigger = match irq.trigger {
            sysdesc::Trigger::Level => "level",
            sysdesc::Trigger::Edge => "edge",
        };
        let object = node(
            &mut graph,
            NodeKind::Irq,
            format!("IRQ {}\n{trigger}", irq.number),
        );
        edge(
            &mut graph,
            domains[usize::from(irq.domain)],
            object,
            EdgeKind::Holds,
            format!("IrqHandler, id {}", irq.id),
        );
    }
    for (grant_index, grant) in system.dma_grants.iter().enumerate() {
        let holder = domains[usize::from(grant.domain)];
        let model = image
            .platform
            .device(grant.device)
            .map_or_else(String::new, |device| format!(" ({})", device.name));
        let device = node(
            &mut graph,
            NodeKind::IoDevice,
            format!(
                "IoDevice {}{model}\nrequester id {:#06x}",
                grant.device,
                grant.device.requester_id()
            ),
        );
        let mode = match grant.mode {
            IoMode::Stage2 => "stage 2 only",
            IoMode::Nested => "nested: driver stage 1\nover kernel stage 2",
        };
        let space = node(
            &mut graph,
            NodeKind::IoSpace,
            format!(
                "IoSpace of {}\n{} IPA space\n{mode}",
                grant.device,
                human(grant.iospace_size)
            ),
        );
        edge(
            &mut graph,
            holder,
            device,
            EdgeKind::Holds,
            "Attach, Detach, MintPasid".to_string(),
        );
        let space_rights = match grant.mode {
            IoMode::Stage2 => "Map, Unmap",
            IoMode::Nested => "Map, Unmap, BindUserTable",
        };
        edge(
            &mut graph,
            holder,
            space,
            EdgeKind::Holds,
            space_rights.to_string(),
        );
        edge(
            &mut graph,
            device,
            space,
            EdgeKind::Attached,
            "attached".to_string(),
        );
        for pasid in &grant.pasids {
            let object = node(
                &mut graph,
                NodeKind::IoPasid,
                format!("IoPasid {pasid}\nof {}", grant.device),
            );
            edge(
                &mut graph,
                holder,
                object,
                EdgeKind::Holds,
                "Attach, Detach".to_string(),
            );
            edge(
                &mut graph,
                object,
                device,
                EdgeKind::Attached,
                "PASID of".to_string(),
            );
        }
        if grant.fault_queue {
            let queue = node(
                &mut graph,
                NodeKind::IoFaultQueue,
                format!("IoFaultQueue\nfor {}", grant.device),
            );
            edge(
                &mut graph,
                holder,
                queue,
                EdgeKind::Holds,
                "Pop".to_string(),
            );
            edge(
                &mut graph,
                device,
                queue,
                EdgeKind::Faults,
                "IO page faults".to_string(),
            );
        }
        for io_map in system
            .io_maps
            .iter()
            .filter(|m| usize::from(m.grant) == grant_index)
        {
            let label = format!("DMA {} @ IPA {:#x}", io_map.rights, io_map.ipa);
            edge(
                &mut graph,
                space,
                regions[usize::from(io_map.region)],
                EdgeKind::Dma,
                label,
            );
        }
    }
    graph
}

/// Escapes `text` for a double-quoted DOT string; newlines become centred
/// line breaks.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn node_style(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Domain => "shape=box, style=\"rounded,filled,bold\", fillcolor=\"#cfe2ff\"",
        NodeKind::Region => "shape=folder, style=filled, fillcolor=\"#fff3c4\"",
        NodeKind::Endpoint => "shape=ellipse, style=filled, fillcolor=\"#d8f3dc\"",
        NodeKind::Notification => "shape=diamond, style=filled, fillcolor=\"#d8f3dc\"",
        NodeKind::Irq => "shape=hexagon, style=filled, fillcolor=\"#e9ecef\"",
        NodeKind::IoDevice => "shape=component, style=filled, fillcolor=\"#ffd6d6\"",
        NodeKind::IoSpace => "shape=box3d, style=filled, fillcolor=\"#ffe5e5\"",
        NodeKind::IoPasid => "shape=box, style=\"filled,dashed\", fillcolor=\"#ffe5e5\"",
        NodeKind::IoFaultQueue => "shape=cds, style=filled, fillcolor=\"#f8d7da\"",
        NodeKind::Object => "shape=box, style=filled, fillcolor=\"#e9ecef\"",
        NodeKind::Summary => "shape=note, style=filled, fillcolor=\"#f8f9fa\", fontsize=10",
    }
}

fn edge_style(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::Holds => "color=\"#1d3557\"",
        EdgeKind::Attached => "style=dashed, color=\"#6c757d\"",
        EdgeKind::Dma => "color=\"#c1121f\", fontcolor=\"#c1121f\", penwidth=2",
        EdgeKind::Faults => "style=dotted, color=\"#c1121f\"",
        EdgeKind::AlsoHeld => "style=dashed, color=\"#adb5bd\", arrowhead=empty",
    }
}

/// `text` with newlines between words so no line is much longer than `width`.
pub(crate) fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        if line > 0 && line + 1 + word.len() > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}

/// The graph of `image` as DOT source.
pub fn dot(image: &Image) -> String {
    let title = format!(
        "image {} on {} ({})\n{}",
        image.name,
        image.platform.name,
        crate::platform::arch_name(image.platform.arch),
        wrap(&image.description, 90)
    );
    write_dot(&build(image), &title)
}

/// `graph` as DOT source titled `title`, every node and edge styled by its
/// kind; the one writer of the static and the live graph ([`crate::live`]).
pub fn write_dot(graph: &Graph<Node, Edge>, title: &str) -> String {
    let node_attributes = |_, (_, node): (NodeIndex, &Node)| {
        format!("label = {}, {}", quoted(&node.label), node_style(node.kind))
    };
    let edge_attributes = |_, edge: petgraph::graph::EdgeReference<'_, Edge>| {
        let weight = edge.weight();
        format!(
            "label = {}, {}",
            quoted(&weight.label),
            edge_style(weight.kind)
        )
    };
    let body = Dot::with_attr_getters(
        graph,
        &[
            Config::GraphContentOnly,
            Config::NodeNoLabel,
            Config::EdgeNoLabel,
        ],
        &edge_attributes,
        &node_attributes,
    );
    let mut out = String::new();
    let _ = writeln!(out, "digraph capabilities {{");
    let _ = writeln!(
        out,
        "    graph [rankdir=LR, fontname=\"Helvetica\", labelloc=t, fontsize=16, label={}]",
        quoted(title)
    );
    let _ = writeln!(out, "    node [fontname=\"Helvetica\", fontsize=11]");
    let _ = writeln!(out, "    edge [fontname=\"Helvetica\", fontsize=9]");
    let _ = write!(out, "{body}");
    let _ = writeln!(out, "}}");
    out
}

/// Runs Graphviz `dot -Tsvg` on `source`, writing `output`; the error says
/// what failed (`dot` missing shows as a spawn error of kind NotFound).
pub fn render_svg(source: &str, output: &Path) -> std::io::Result<()> {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .arg("-o")
        .arg(output)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(source.as_bytes())?;
    }
    let result = child.wait_with_output()?;
    if result.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "dot failed ({}): {}",
            result.status,
            String::from_utf8_lossy(&result.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_wrap_between_words() {
        assert_eq!(wrap("aaa bbb ccc", 7), "aaa bbb\nccc");
        assert_eq!(wrap("a  b", 80), "a b");
        assert_eq!(wrap("longerthanwidth x", 4), "longerthanwidth\nx");
    }

    #[test]
    fn labels_are_escaped_for_dot() {
        assert_eq!(quoted("a \"b\"\\\nc"), "\"a \\\"b\\\"\\\\\\nc\"");
    }
}
