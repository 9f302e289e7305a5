//! Hand-written dumps: the parser's strictness, the drawing, the tree text,
//! and the checker catching seeded mistakes (each mutation of the clean
//! dump must be reported, and the clean dump must not be).

use std::path::{Path, PathBuf};

use super::*;
use crate::graph::{EdgeKind, NodeKind};
use crate::{platform, validate};

/// The image the dump below was "booted" from: a client and a driver
/// sharing a region, an endpoint between them, an IRQ, and the edu device
/// granted to the driver in stage2 mode with a DMA buffer and a fault queue.
const IMAGE: &str = r#"
description = "live-dump test image"

[[memory_region]]
name = "shared"
size = "8 KiB"

[[memory_region]]
name = "dma_buffer"
size = "8 KiB"

[[protection_domain]]
name = "client"
program = "hello"

[[protection_domain.map]]
region = "shared"
vaddr = 0x4000_0000
perms = "rw"

[[protection_domain]]
name = "driver"
program = "hello"

[[protection_domain.map]]
region = "shared"
vaddr = 0x5000_0000
perms = "r"

[[protection_domain.map]]
region = "dma_buffer"
vaddr = 0x6000_0000
perms = "rw"

[[channel]]
kind = "endpoint"
ends = [{ domain = "client", id = 0 }, { domain = "driver", id = 0 }]

[[irq]]
domain = "driver"
irq = 11
id = 1

[[dma_grant]]
device = "00:04.0"
domain = "driver"
iospace_size = "2 MiB"
mode = "stage2"
fault_queue = true
io_map = [{ region = "dma_buffer", ipa = 0x10_0000, perms = "rw" }]
"#;

/// What init and the kernel would have made of [`IMAGE`], between `begin`
/// and `end` (the end line is added by [`dump`], counting).
/// init's CNode owns slots 64..320, the client's 320..448, the driver's
/// 448..576.
const BODY: &str = "\
capdump: object 1 Untyped paddr=0x100000 bits=24 parent=- used=0x40000 device=0
capdump: object 2 CNode paddr=0x180000 bits=13 parent=1 slots=64+256
capdump: object 3 Tcb paddr=0x182000 bits=10 parent=1 cspace=2 vspace=0x200000 name=init
capdump: object 4 PageTable paddr=0x200000 bits=12 parent=1
capdump: object 10 Frame paddr=0x300000 bits=12 parent=1
capdump: object 11 Frame paddr=0x301000 bits=12 parent=1
capdump: object 12 Frame paddr=0x302000 bits=12 parent=1
capdump: object 13 Frame paddr=0x303000 bits=12 parent=1
capdump: object 20 CNode paddr=0x190000 bits=12 parent=1 slots=320+128
capdump: object 21 PageTable paddr=0x210000 bits=12 parent=1
capdump: object 22 Frame paddr=0x310000 bits=12 parent=1
capdump: object 23 Tcb paddr=0x191000 bits=10 parent=1 cspace=20 vspace=0x210000 name=client
capdump: object 30 CNode paddr=0x192000 bits=12 parent=1 slots=448+128
capdump: object 31 PageTable paddr=0x220000 bits=12 parent=1
capdump: object 32 Frame paddr=0x320000 bits=12 parent=1
capdump: object 33 Tcb paddr=0x193000 bits=10 parent=1 cspace=30 vspace=0x220000 name=driver
capdump: object 40 Endpoint paddr=0x194000 bits=4 parent=1
capdump: object 41 Notification paddr=0x194010 bits=4 parent=1
capdump: object 42 IrqHandler paddr=0x0 bits=0 parent=- line=11
capdump: object 43 IoDevice paddr=0x0 bits=0 parent=- rid=0x20 space=44 table=- faults=45
capdump: object 44 IoSpace paddr=0x195000 bits=12 parent=1 did=1 faults=-
capdump: object 45 IoFaultQueue paddr=0x196000 bits=12 parent=1
capdump: object 46 Notification paddr=0x194020 bits=4 parent=1
capdump: object 47 IrqControl paddr=0x0 bits=0 parent=-
capdump: object 48 IommuControl paddr=0x0 bits=0 parent=-
capdump: cap 1 depth=0 object=2 rights=RWG badge=0x0
capdump: cap 64 depth=0 object=1 rights=RWG badge=0x0
capdump: cap 65 depth=1 object=10 rights=RWG badge=0x0
capdump: cap 66 depth=2 object=10 rights=RWG badge=0x0 cpu=0x210000@0x40000000:RW-
capdump: cap 67 depth=2 object=10 rights=RWG badge=0x0 cpu=0x220000@0x50000000:R--
capdump: cap 68 depth=1 object=11 rights=RWG badge=0x0
capdump: cap 69 depth=2 object=11 rights=RWG badge=0x0 cpu=0x210000@0x40001000:RW-
capdump: cap 70 depth=2 object=11 rights=RWG badge=0x0 cpu=0x220000@0x50001000:R--
capdump: cap 71 depth=1 object=12 rights=RWG badge=0x0
capdump: cap 72 depth=2 object=12 rights=RWG badge=0x0 cpu=0x220000@0x60000000:RW-
capdump: cap 73 depth=2 object=12 rights=RWG badge=0x0 io=44@0x100000:RW-
capdump: cap 74 depth=1 object=13 rights=RWG badge=0x0
capdump: cap 75 depth=2 object=13 rights=RWG badge=0x0 cpu=0x220000@0x60001000:RW-
capdump: cap 76 depth=2 object=13 rights=RWG badge=0x0 io=44@0x101000:RW-
capdump: cap 77 depth=1 object=20 rights=RWG badge=0x0
capdump: cap 2 depth=2 object=20 rights=RWG badge=0x0
capdump: cap 78 depth=1 object=21 rights=RWG badge=0x0
capdump: cap 79 depth=1 object=22 rights=RWG badge=0x0
capdump: cap 80 depth=2 object=22 rights=RWG badge=0x0 cpu=0x210000@0x400000:R--
capdump: cap 81 depth=1 object=23 rights=RWG badge=0x0
capdump: cap 82 depth=1 object=30 rights=RWG badge=0x0
capdump: cap 3 depth=2 object=30 rights=RWG badge=0x0
capdump: cap 83 depth=1 object=31 rights=RWG badge=0x0
capdump: cap 84 depth=1 object=32 rights=RWG badge=0x0
capdump: cap 85 depth=2 object=32 rights=RWG badge=0x0 cpu=0x220000@0x400000:R--
capdump: cap 86 depth=1 object=33 rights=RWG badge=0x0
capdump: cap 87 depth=1 object=40 rights=RWG badge=0x0
capdump: cap 88 depth=2 object=40 rights=RWG badge=0x1
capdump: cap 321 depth=3 object=40 rights=RWG badge=0x1
capdump: cap 449 depth=2 object=40 rights=RWG badge=0x0
capdump: cap 89 depth=1 object=41 rights=RWG badge=0x0
capdump: cap 450 depth=2 object=41 rights=RWG badge=0x0
capdump: cap 90 depth=2 object=41 rights=RWG badge=0x2
capdump: cap 91 depth=1 object=44 rights=RWG badge=0x0
capdump: cap 451 depth=2 object=44 rights=RWG badge=0x0
capdump: cap 92 depth=1 object=45 rights=RWG badge=0x0
capdump: cap 452 depth=2 object=45 rights=RWG badge=0x0
capdump: cap 93 depth=1 object=46 rights=RWG badge=0x0
capdump: cap 453 depth=2 object=46 rights=RWG badge=0x0
capdump: cap 94 depth=0 object=42 rights=RWG badge=0x0
capdump: cap 454 depth=1 object=42 rights=RWG badge=0x0
capdump: cap 95 depth=0 object=43 rights=RWG badge=0x0
capdump: cap 455 depth=1 object=43 rights=RWG badge=0x0
capdump: cap 96 depth=0 object=47 rights=RWG badge=0x0
capdump: cap 97 depth=0 object=48 rights=RWG badge=0x0
";

/// A serial transcript: boot noise, `begin`, `body`, an end line with
/// `body`'s counts, more noise.
pub(crate) fn transcript(body: &str) -> String {
    let objects = body
        .lines()
        .filter(|l| l.starts_with("capdump: object"))
        .count();
    let caps = body
        .lines()
        .filter(|l| l.starts_with("capdump: cap"))
        .count();
    format!(
        "Portcullis 0.1.0\r\n[init] protection domain \"client\": entry 0x400000\ncapdump: begin\n{body}[driver] hello\ncapdump: end objects={objects} caps={caps}\nportcullis: exit 0\n"
    )
}

/// `BODY` with `from` replaced by `to` (which must occur).
fn mutated(from: &str, to: &str) -> String {
    assert!(BODY.contains(from), "the fixture has no `{from}`");
    BODY.replacen(from, to, 1)
}

fn dump(body: &str) -> LiveDump {
    parse(&transcript(body)).unwrap_or_else(|error| panic!("{error}"))
}

fn image() -> validate::Image {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let q35 = platform::load(&root.join("../../images/platforms"), "q35").unwrap();
    validate::validate(
        &PathBuf::from("live-test.toml"),
        "live-test",
        IMAGE,
        &q35,
        &["hello".to_string()],
    )
    .unwrap()
}

/// The mismatches of `body` against [`IMAGE`].
fn mismatches(body: &str) -> Vec<String> {
    check_against(&dump(body), &image())
}

/// Asserts that exactly one mismatch contains every one of `words`.
fn reported(body: &str, words: &[&str]) {
    let found = mismatches(body);
    let matching = found
        .iter()
        .filter(|m| words.iter().all(|word| m.contains(word)))
        .count();
    assert_eq!(
        matching, 1,
        "expected one mismatch with {words:?}, got {found:#?}"
    );
}

#[test]
fn the_fixture_parses_with_parents_and_holders() {
    let dump = dump(BODY);
    assert_eq!(dump.objects.len(), 25);
    assert_eq!(dump.caps.len(), 45);
    assert_eq!(dump.begin_line, 3);
    let names: Vec<&str> = dump.domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["init", "client", "driver"]);
    let slot = |slot: u64| dump.caps.iter().position(|c| c.slot == slot).unwrap();
    let client = dump.domain("client").unwrap();
    // The client's badged endpoint copy: minted by init (slot 88) from the original (87).
    let copy = &dump.caps[slot(321)];
    assert_eq!(copy.holder, Holder::Domain(client));
    assert_eq!(copy.parent, Some(slot(88)));
    assert_eq!(dump.caps[slot(88)].parent, Some(slot(87)));
    assert_eq!(dump.caps[slot(87)].parent, Some(slot(64)));
    assert_eq!(copy.badge, 1);
    // The driver's unbadged one is a sibling of init's badged copy.
    assert_eq!(dump.caps[slot(449)].parent, Some(slot(87)));
    assert_eq!(dump.caps[slot(64)].parent, None);
    // Kernel slots, and init's CNode.
    assert_eq!(dump.caps[slot(2)].holder, Holder::Kernel);
    assert_eq!(dump.kernel_caps(), 3);
    assert_eq!(
        dump.caps[slot(66)].holder,
        Holder::Domain(dump.domain("init").unwrap())
    );
    assert_eq!(
        dump.caps[slot(66)].cpu,
        Some(CpuMapping {
            vspace: 0x21_0000,
            vaddr: 0x4000_0000,
            rights: Rights {
                read: true,
                write: true,
                grant: false
            }
        })
    );
    assert_eq!(dump.domain_of_vspace(0x22_0000), dump.domain("driver"));
    assert_eq!(
        dump.object(43).unwrap().details,
        Details::IoDevice {
            rid: Some(0x20),
            space: Some(44),
            table: None,
            faults: Some(45)
        }
    );
}

#[test]
fn unknown_keys_are_ignored_and_other_lines_skipped() {
    let body = mutated("did=1 faults=-", "did=1 faults=- colour=red future=0x1");
    assert_eq!(dump(&body), dump(BODY));
}

#[test]
fn the_first_of_two_dumps_counts_and_moments_are_kept() {
    let first = transcript(BODY).replace("capdump: begin", "capdump: begin call");
    let second = transcript(&mutated("name=client", "name=late"))
        .replace("capdump: begin", "capdump: begin halt");
    let both = format!("{first}{second}");
    let parsed = parse(&both).unwrap();
    assert_eq!(parsed.moment, "call");
    assert!(parsed.domain("client").is_some());
    let all = parse_all(both.lines()).unwrap();
    assert_eq!(all.truncated, None);
    let all = all.complete;
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].moment, "halt");
    assert!(all[1].domain("late").is_some());
    assert_eq!(all[1].begin_line, first.lines().count() + 3);
}

/// A run that dies during its `halt` dump keeps its `call` dump; the cut
/// dump is reported apart, naming its moment.
#[test]
fn a_truncated_halt_dump_leaves_the_call_dump() {
    let first = transcript(BODY).replace("capdump: begin", "capdump: begin call");
    let cut: String = transcript(BODY)
        .replace("capdump: begin", "capdump: begin halt")
        .lines()
        .take(20)
        .map(|line| format!("{line}\n"))
        .collect();
    let text = format!("{first}{cut}");
    let all = parse_all(text.lines()).unwrap();
    assert_eq!(all.complete.len(), 1);
    assert_eq!(all.complete[0].moment, "call");
    let error = all.truncated.unwrap();
    assert_eq!(
        error,
        LiveError::Truncated {
            moment: "halt".to_string(),
            begin_line: first.lines().count() + 3,
            objects: 17,
            caps: 0
        }
    );
    assert!(
        error
            .to_string()
            .contains("`capdump: begin halt` at serial line"),
        "{error}"
    );
    assert_eq!(parse(&text).unwrap().moment, "call");
}

#[test]
fn no_dump_and_a_truncated_dump_are_errors_with_the_fix() {
    let error = parse("Portcullis 0.1.0\nportcullis: exit 0\n").unwrap_err();
    assert_eq!(error, LiveError::NoDump);
    assert!(error.to_string().contains("cap-dump feature"), "{error}");
    let cut: String = transcript(BODY)
        .lines()
        .take(20)
        .map(|line| format!("{line}\n"))
        .collect();
    let error = parse(&cut).unwrap_err();
    assert_eq!(
        error,
        LiveError::Truncated {
            moment: String::new(),
            begin_line: 3,
            objects: 17,
            caps: 0
        }
    );
    assert!(error.to_string().starts_with("dump truncated"), "{error}");
}

/// The error for `body`, which must be malformed at the line holding `needle`.
fn malformed_at(body: &str, needle: &str, problem: &str) {
    let text = transcript(body);
    let line = text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    match parse(&text) {
        Err(LiveError::Malformed {
            line: at,
            text: shown,
            problem: why,
        }) => {
            assert_eq!(at, line, "{why}");
            assert!(shown.contains(needle), "{shown}");
            assert!(why.contains(problem), "{why}");
            let message = parse(&text).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("serial line {line}: `capdump: ")),
                "{message}"
            );
            assert!(message.contains("fix: "), "{message}");
        }
        other => panic!("expected a malformed line {line}, got {other:?}"),
    }
}

#[test]
fn malformed_lines_are_named_by_line_and_text() {
    malformed_at(
        &mutated("rights=RWG badge=0x1", "rights=RXG badge=0x1"),
        "rights=RXG",
        "rights=RXG",
    );
    malformed_at(
        &mutated("object 47 IrqControl", "object 47 IrqKontrol"),
        "IrqKontrol",
        "unknown kind `IrqKontrol`",
    );
    malformed_at(
        &mutated("cap 97 depth=0", "cap 97 depth=2"),
        "cap 97",
        "more than one below",
    );
    malformed_at(
        &mutated("cap 97 depth=0 object=48", "cap 97 depth=0 object=99"),
        "object=99",
        "object 99, which has no object line",
    );
    malformed_at(
        &mutated("paddr=0x303000 bits=12", "paddr=0x30z000 bits=12"),
        "0x30z000",
        "paddr=0x30z000 is not a number",
    );
    malformed_at(
        &mutated(
            "cap 96 depth=0 object=47 rights=RWG badge=0x0",
            "cap 96 depth=0 object=47 rights=RWG",
        ),
        "cap 96",
        "`badge=` is missing",
    );
    malformed_at(
        &mutated("slots=320+128", "slots=300+128"),
        "slots=300+128",
        "overlap",
    );
    malformed_at(
        &mutated("io=44@0x101000:RW-", "io=44:0x101000"),
        "io=44:0x101000",
        "not <target>@0x<address>:<RWG>",
    );
    malformed_at(
        &mutated("capdump: object 48", "capdump: thing 48"),
        "thing 48",
        "unknown record",
    );
    // The end line's counts must match what came.
    let text = transcript(BODY).replace("caps=45", "caps=46");
    let error = parse(&text).unwrap_err();
    assert!(
        error.to_string().contains("counts 25 objects and 46 caps"),
        "{error}"
    );
}

#[test]
fn the_clean_dump_matches_its_image() {
    assert_eq!(mismatches(BODY), Vec::<String>::new());
}

#[test]
fn a_device_held_by_a_second_domain_is_reported() {
    let body = mutated(
        "capdump: cap 455 depth=1 object=43",
        "capdump: cap 322 depth=1 object=43 rights=RWG badge=0x0\ncapdump: cap 455 depth=1 object=43",
    );
    reported(
        &body,
        &[
            "IoDevice #43 is also held by `client` (slot 322)",
            "dma_grant 0",
        ],
    );
}

#[test]
fn an_iospace_held_by_a_second_domain_is_reported() {
    let body = mutated(
        "capdump: cap 451 depth=2 object=44",
        "capdump: cap 323 depth=2 object=44 rights=RWG badge=0x0\ncapdump: cap 451 depth=2 object=44",
    );
    reported(&body, &["IoSpace #44 is also held by `client`"]);
}

#[test]
fn a_missing_domain_is_reported() {
    let body = mutated("name=client", "name=clint");
    let found = mismatches(&body);
    assert!(
        found
            .iter()
            .any(|m| m.starts_with("protection_domain \"client\": no Tcb named `client`")),
        "{found:#?}"
    );
}

#[test]
fn a_missing_init_is_reported() {
    reported(&mutated("name=init", "name=-"), &["no Tcb named `init`"]);
}

#[test]
fn a_missing_mapping_is_reported() {
    let body = mutated(
        "capdump: cap 75 depth=2 object=13 rights=RWG badge=0x0 cpu=0x220000@0x60001000:RW-\n",
        "",
    );
    reported(
        &body,
        &[
            "protection_domain \"driver\" map of `dma_buffer` at 0x60000000",
            "1 of 2 pages",
            "first at 0x60001000",
        ],
    );
}

#[test]
fn a_missing_dma_mapping_is_reported() {
    let body = mutated(
        "capdump: cap 76 depth=2 object=13 rights=RWG badge=0x0 io=44@0x101000:RW-\n",
        "",
    );
    reported(
        &body,
        &[
            "io_map of `dma_buffer` at IPA 0x100000 in IoSpace #44",
            "first at 0x101000",
        ],
    );
}

#[test]
fn a_writable_read_only_map_is_reported() {
    let body = mutated("cpu=0x220000@0x50001000:R--", "cpu=0x220000@0x50001000:RW-");
    reported(
        &body,
        &[
            "map of `shared` at 0x50000000",
            "at 0x50001000 is mapped RW-",
            "perms = \"r\"",
        ],
    );
}

#[test]
fn frames_that_are_not_shared_are_reported() {
    // The device's second page is a different Frame than the driver maps.
    let body = mutated(
        "capdump: cap 76 depth=2 object=13 rights=RWG badge=0x0 io=44@0x101000:RW-",
        "capdump: cap 76 depth=2 object=22 rights=RWG badge=0x0 io=44@0x101000:RW-",
    );
    reported(
        &body,
        &[
            "memory_region \"dma_buffer\": page 1 is Frame #13 for `driver` but Frame #22 for IoSpace #44",
        ],
    );
}

#[test]
fn a_channel_without_the_badge_is_reported() {
    let body = mutated(
        "cap 321 depth=3 object=40 rights=RWG badge=0x1",
        "cap 321 depth=3 object=40 rights=RWG badge=0x4",
    );
    reported(
        &body,
        &[
            "channel 0 (endpoint \"client\" id 0 -> \"driver\" id 0)",
            "badge 0x1",
        ],
    );
}

#[test]
fn an_irq_on_another_line_is_reported() {
    reported(
        &mutated("line=11", "line=12"),
        &["irq 11", "no IrqHandler for line 11"],
    );
}

#[test]
fn a_detached_stage2_device_and_a_missing_fault_queue_are_reported() {
    let body = mutated(
        "rid=0x20 space=44 table=- faults=45",
        "rid=0x20 space=- table=- faults=-",
    );
    let found = mismatches(&body);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].contains("IoDevice #43 is not attached (space=-)"),
        "{found:#?}"
    );
    assert!(found[1].contains("fault_queue = true"), "{found:#?}");
}

#[test]
fn a_device_the_domain_does_not_hold_is_reported() {
    let body = mutated(
        "capdump: cap 455 depth=1 object=43 rights=RWG badge=0x0\n",
        "",
    );
    reported(
        &body,
        &["\"driver\" holds no IoDevice with requester id 0x0020"],
    );
}

#[test]
fn the_graph_draws_domains_frame_runs_and_the_iommu_state() {
    let dump = dump(BODY);
    let graph = graph(&dump);
    let node = |label: &str| {
        graph
            .node_indices()
            .find(|&n| graph[n].label.starts_with(label))
            .unwrap_or_else(|| panic!("no node `{label}`"))
    };
    let edge = |from: petgraph::graph::NodeIndex, to: petgraph::graph::NodeIndex| {
        let found = graph
            .find_edge(from, to)
            .unwrap_or_else(|| panic!("no edge {} -> {}", graph[from].label, graph[to].label));
        graph[found].clone()
    };
    for name in ["init (root task)", "client", "driver"] {
        assert_eq!(graph[node(name)].kind, NodeKind::Domain);
    }
    // `shared` and `dma_buffer` are one node each; each domain's code page one more.
    let frames: Vec<&str> = graph
        .node_indices()
        .filter(|&n| graph[n].kind == NodeKind::Region)
        .map(|n| graph[n].label.as_str())
        .collect();
    assert_eq!(frames.len(), 4, "{frames:?}");
    let shared = node("2 Frames, 8 KiB\npaddr 0x300000–0x301fff");
    let dma = node("2 Frames, 8 KiB\npaddr 0x302000–0x303fff");
    let client = node("client");
    let driver = node("driver");
    let map = edge(client, shared);
    assert_eq!(
        (map.kind, map.label.as_str()),
        (EdgeKind::Holds, "map RW- 0x40000000–0x40001fff")
    );
    assert_eq!(edge(driver, shared).label, "map R-- 0x50000000–0x50001fff");
    let space = node("IoSpace #44");
    let device = node("IoDevice #43\nrequester id 0x0020");
    let dma_edge = edge(space, dma);
    assert_eq!(
        (dma_edge.kind, dma_edge.label.as_str()),
        (EdgeKind::Dma, "DMA RW- IPA 0x100000–0x101fff")
    );
    assert_eq!(edge(device, space).kind, EdgeKind::Attached);
    assert_eq!(
        edge(device, node("IoFaultQueue #45")).kind,
        EdgeKind::Faults
    );
    assert_eq!(edge(driver, device).label, "RWG");
    let endpoint = node("Endpoint #40");
    assert_eq!(edge(client, endpoint).label, "RWG badge 0x1");
    assert_eq!(edge(driver, node("IrqHandler #42\nIRQ 11")).label, "RWG");
    // init: dashed, unlabelled edges to what domains use, a note for the rest.
    let init = node("init");
    let also = edge(init, endpoint);
    assert_eq!((also.kind, also.label.as_str()), (EdgeKind::AlsoHeld, ""));
    assert_eq!(edge(init, client).kind, EdgeKind::AlsoHeld);
    let note = node("init also holds");
    assert_eq!(graph[note].kind, NodeKind::Summary);
    assert!(
        graph[note].label.contains("1 Untyped"),
        "{}",
        graph[note].label
    );
    assert!(
        graph[note].label.contains("2 PageTable"),
        "{}",
        graph[note].label
    );
    let init_edges = graph.edges(init).count();
    assert!(
        graph.edges(init).all(|e| e.weight().label.is_empty()),
        "{init_edges}"
    );
}

/// What a `halt` dump can show: a device whose IoSpace was revoked, and a
/// Frame of device registers (from a device Untyped), which is never
/// grouped with the RAM next to it.
#[test]
fn the_graph_marks_a_detached_device_and_device_memory() {
    let body = mutated("space=44 table=- faults=45", "space=- table=- faults=45").replace(
        "capdump: object 13 Frame paddr=0x303000 bits=12 parent=1",
        "capdump: object 5 Untyped paddr=0x303000 bits=12 parent=- used=0x1000 device=1\n\
             capdump: object 13 Frame paddr=0x303000 bits=12 parent=5",
    );
    let drawn = graph(&dump(&body));
    let labels: Vec<&str> = drawn
        .node_indices()
        .map(|n| drawn[n].label.as_str())
        .collect();
    assert!(
        labels.contains(&"IoDevice #43\nrequester id 0x0020\nnot attached: its DMA is blocked"),
        "{labels:#?}"
    );
    assert!(
        labels.contains(&"Frame #12, 4 KiB\npaddr 0x302000–0x302fff"),
        "{labels:#?}"
    );
    assert!(
        labels.contains(&"Frame #13, 4 KiB of device memory\npaddr 0x303000–0x303fff"),
        "{labels:#?}"
    );
    // A PASID still attached: the device is not wholly blocked.
    let body = format!(
        "{body}capdump: object 49 IoPasid paddr=0x0 bits=0 parent=- device=43 pasid=1 space=44 table=-\n"
    );
    let drawn = graph(&dump(&body));
    assert!(drawn.node_indices().any(|n| {
        drawn[n]
            .label
            .ends_with("not attached (only its PASIDs are)")
    }),);
}

#[test]
fn several_caps_from_one_holder_to_one_object_are_one_edge() {
    let body = mutated(
        "capdump: cap 454 depth=1 object=42",
        "capdump: cap 456 depth=1 object=42 rights=R-- badge=0x0\ncapdump: cap 454 depth=1 object=42",
    );
    let dump = dump(&body);
    let graph = graph(&dump);
    let driver = graph
        .node_indices()
        .find(|&n| graph[n].label.starts_with("driver"))
        .unwrap();
    let irq = graph
        .node_indices()
        .find(|&n| graph[n].label.starts_with("IrqHandler"))
        .unwrap();
    let edges: Vec<_> = graph.edges_connecting(driver, irq).collect();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].weight().label, "2 caps: R--, RWG");
}

#[test]
fn dot_output_has_the_title_counts_and_styles() {
    let text = dot(&dump(BODY), "live capabilities of live-test on x86_64");
    assert!(text.starts_with("digraph capabilities {"), "{text}");
    assert!(
        text.contains("live capabilities of live-test on x86_64\\n25 objects, 45 capabilities; the kernel holds 3 (slots below 64)"),
        "{text}"
    );
    assert!(text.contains("shape=note"), "{text}");
    assert!(text.contains("arrowhead=empty"), "{text}");
}

#[test]
fn the_tree_text_indents_by_depth_and_names_holders() {
    let text = tree_text(&dump(BODY), "live-test on x86_64");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "# live-test on x86_64");
    assert_eq!(lines.len(), 3 + 45);
    assert!(lines.contains(&"kernel: CNode #2 RWG (slot 1)"), "{text}");
    assert!(
        lines.contains(&"init: Untyped #1 RWG 16 MiB at 0x100000 (slot 64)"),
        "{text}"
    );
    assert!(
        lines.contains(
            &"    init: Frame #10 RWG cpu client@0x40000000 RW- 4 KiB at 0x300000 (slot 66)"
        ),
        "{text}"
    );
    assert!(
        lines.contains(&"      client: Endpoint #40 RWG badge 0x1 (slot 321)"),
        "{text}"
    );
    assert!(
        lines.contains(
            &"    init: Frame #12 RWG io IoSpace #44@0x100000 RW- 4 KiB at 0x302000 (slot 73)"
        ),
        "{text}"
    );
}
