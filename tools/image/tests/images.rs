//! The images of the repository: every one validates on every platform it
//! lists (all when it lists none) with the workspace's real programs, and
//! draws as a graph.

use std::path::{Path, PathBuf};

use sysdesc::archive::Arch;
use sysimage::{graph, platform};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load_all(arch: Arch) -> Vec<sysimage::Image> {
    let root = workspace();
    let platform =
        platform::load(&root.join("images/platforms"), platform::for_arch(arch)).unwrap();
    let programs = sysimage::workspace_programs(&root).unwrap();
    let names = sysimage::available(&root.join("images"));
    assert!(names.iter().any(|name| name == "default"), "{names:?}");
    names
        .iter()
        .filter_map(
            |name| match sysimage::load(&root.join("images"), name, &platform, &programs) {
                Ok(image) => Some(image),
                // An image limited to other platforms (`platforms = [...]`).
                Err(error) if error.entry == "platforms" => None,
                Err(error) => panic!("{error}"),
            },
        )
        .collect()
}

#[test]
fn every_image_validates_on_its_platforms() {
    let mut validated = std::collections::BTreeSet::new();
    for arch in [Arch::X86_64, Arch::Aarch64] {
        for image in load_all(arch) {
            assert!(!image.description.trim().is_empty(), "{}", image.name);
            validated.insert(image.name);
        }
    }
    let names = sysimage::available(&workspace().join("images"));
    assert_eq!(validated.len(), names.len(), "some image has no platform");
}

#[test]
fn the_workspace_programs_include_the_test_programs() {
    let programs = sysimage::workspace_programs(&workspace()).unwrap();
    assert!(programs.iter().any(|p| p == "hello"), "{programs:?}");
    // Libraries are not programs.
    assert!(
        !programs
            .iter()
            .any(|p| p == "rt" || p == "sys" || p == "sysdesc"),
        "{programs:?}"
    );
}

#[test]
fn unknown_and_invalid_image_names_are_refused() {
    let root = workspace();
    let platform = platform::load(&root.join("images/platforms"), "q35").unwrap();
    let error = sysimage::load(&root.join("images"), "no-such-image", &platform, &[]).unwrap_err();
    assert!(
        error.problem.contains("unknown image `no-such-image`"),
        "{error}"
    );
    assert!(error.fix.contains("default"), "{error}");
    for bad in ["", "../default", "a/b", "Default", "x y", "a.toml"] {
        let error = sysimage::load(&root.join("images"), bad, &platform, &[]).unwrap_err();
        assert!(
            error.problem.contains("invalid image name"),
            "{bad:?}: {error}"
        );
    }
}

#[test]
fn graphs_show_domains_objects_rights_and_dma_paths() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let platform = platform::load(&workspace().join("images/platforms"), "q35").unwrap();
    let text = std::fs::read_to_string(root.join("tests/fixtures/valid.toml")).unwrap();
    let programs = ["client", "edu", "server"].map(String::from);
    let image = sysimage::validate::validate(
        Path::new("valid.toml"),
        "valid",
        &text,
        &platform,
        &programs,
    )
    .unwrap();
    let built = graph::build(&image);
    let count = |kind| {
        built
            .node_weights()
            .filter(|node| node.kind == kind)
            .count()
    };
    assert_eq!(count(graph::NodeKind::Domain), 3);
    assert_eq!(count(graph::NodeKind::Region), 3);
    assert_eq!(count(graph::NodeKind::Endpoint), 1);
    assert_eq!(count(graph::NodeKind::Notification), 1);
    assert_eq!(count(graph::NodeKind::Irq), 1);
    assert_eq!(count(graph::NodeKind::IoDevice), 1);
    assert_eq!(count(graph::NodeKind::IoSpace), 1);
    assert_eq!(count(graph::NodeKind::IoFaultQueue), 1);
    let dma: Vec<&str> = built
        .edge_weights()
        .filter(|edge| edge.kind == graph::EdgeKind::Dma)
        .map(|edge| edge.label.as_str())
        .collect();
    assert_eq!(dma, ["DMA rw @ IPA 0x200000", "DMA r @ IPA 0x10000"]);

    let dot = graph::dot(&image);
    assert!(dot.starts_with("digraph capabilities {"), "{dot}");
    assert!(dot.contains("IoDevice 00:04.0 (edu)"), "{dot}");
    assert!(dot.contains("label = \"map rw @ 0x10000000\""), "{dot}");
    assert!(dot.contains("id 1: signal, wait\\nbadge 0x2"), "{dot}");
    assert!(dot.trim_end().ends_with('}'), "{dot}");
}
