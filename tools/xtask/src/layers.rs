//! The kernel's one-way layers: a test that fails when a new edge closes a
//! cycle among the kernel's top-level modules.
//!
//! It reads `kernel/src/**/*.rs`, takes every `crate::X` path (including
//! `use crate::{X, Y::..}` groups and the crate-level macros `println!`,
//! `check!`, ... which resolve to the module that defines them) as an edge
//! from the file's top-level module to `X` (a file or folder directly under
//! `kernel/src`; items of `main.rs` itself, like `crate::exit`, belong to
//! `main`), and finds the strongly connected components with petgraph.
//! An edge inside a component lies on a cycle; `kernel/layers.toml` lists
//! exactly the cycle edges that exist today. The test fails on a cycle edge
//! the file does not list (a new arrow the wrong way: the message names the
//! edge, a cycle through it and where in the source it is) and on a listed
//! edge that no longer lies on a cycle (delete its line, so the list only
//! shrinks). The goal is an empty list: modules that only import downward,
//! as Hubris's kernel passes state down instead of reaching up.
//!
//! Comments and string literals are skipped; `super::` paths never leave a
//! top-level module in this kernel, so they are not followed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

/// The module graph: for each edge `from -> to`, the first place it occurs
/// (`path:line`).
type Edges = BTreeMap<(String, String), String>;

/// The checked-in baseline, `kernel/layers.toml`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Baseline {
    /// The edges that lie on a cycle today, `"from -> to"`.
    cycle_edges: Vec<String>,
}

/// The top-level module a file under `kernel/src` belongs to.
fn module_of(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .expect("a path under kernel/src");
    let first = first.as_os_str().to_string_lossy();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// `source` with comments and the contents of string and character
/// literals replaced by spaces (newlines kept, so line numbers stay right).
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&chars, i) {
            // A raw string r"..." or r#"..."#.
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push_str(&" ".repeat(j + 1 - i));
            i = j + 1;
            while i < chars.len() {
                if chars[i] == '"' && (0..hashes).all(|k| chars.get(i + 1 + k) == Some(&'#')) {
                    out.push_str(&" ".repeat(1 + hashes));
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal: '\n', '\'', '\u{..}'.
            out.push(' ');
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                out.push(' ');
                i += 1;
            }
            out.push_str("  ");
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            // A one-character literal ('"', 'a'); anything else is a lifetime.
            out.push_str("   ");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether an identifier character comes right before `chars[i]`.
fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// The identifier starting at `text[at..]`, if any.
fn ident_at(text: &str, at: usize) -> Option<&str> {
    let rest = &text[at..];
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// The first path segment of each item of the `use` group whose `{` is at
/// `text[open]`: `{a, b::c, d::{e, f}}` gives `a`, `b`, `d`.
fn group_heads(text: &str, open: usize) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    for (offset, c) in text[open..].char_indices() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    expect_head = true;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expect_head = true,
            c if expect_head && depth == 1 && (c.is_alphanumeric() || c == '_') => {
                heads.extend(ident_at(text, open + offset).map(str::to_string));
                expect_head = false;
            }
            _ => {}
        }
    }
    heads
}

/// The module graph of the kernel sources under `src` (`main.rs` is the
/// module `main`).
fn module_graph(src: &Path) -> (BTreeSet<String>, Edges) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|file| module_of(file.strip_prefix(src).expect("under src")))
        .collect();
    let sources: Vec<(PathBuf, String, String)> = files
        .iter()
        .map(|file| {
            let text = fs::read_to_string(file)
                .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
            let module = module_of(file.strip_prefix(src).expect("under src"));
            (file.clone(), module, code_only(&text))
        })
        .collect();
    // Exported macros live at the crate root but belong to their module.
    let mut macros = BTreeMap::new();
    for (_, module, code) in &sources {
        let mut rest = code.as_str();
        while let Some(at) = rest.find("#[macro_export]") {
            rest = &rest[at..];
            let defined = rest
                .find("macro_rules!")
                .expect("macro_export before macro_rules!");
            let name_at = defined + "macro_rules!".len();
            let name_at = name_at + rest[name_at..].len() - rest[name_at..].trim_start().len();
            let name = ident_at(rest, name_at).expect("a macro name");
            macros.insert(name.to_string(), module.clone());
            rest = &rest[name_at..];
        }
    }
    let resolve = |head: &str| -> Option<String> {
        if modules.contains(head) {
            Some(head.to_string())
        } else if let Some(module) = macros.get(head) {
            Some(module.clone())
        } else if head == "self" || head == "super" {
            None
        } else {
            Some("main".to_string())
        }
    };
    let mut edges = Edges::new();
    for (file, from, code) in &sources {
        let place = |at: usize| {
            let line = code[..at].matches('\n').count() + 1;
            let shown = file.strip_prefix(src.parent().unwrap()).unwrap_or(file);
            format!("kernel/{}:{line}", shown.display())
        };
        let mut add = |to: String, at: usize| {
            if *from != to {
                edges.entry((from.clone(), to)).or_insert_with(|| place(at));
            }
        };
        for (at, _) in code.match_indices("crate::") {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let after = at + "crate::".len();
            if code[after..].starts_with('{') {
                for head in group_heads(code, after) {
                    if let Some(to) = resolve(&head) {
                        add(to, at);
                    }
                }
            } else if let Some(head) = ident_at(code, after)
                && let Some(to) = resolve(head)
            {
                add(to, at);
            }
        }
        // The crate root names its modules without `crate::`.
        if from == "main" {
            for module in &modules {
                for (at, _) in code.match_indices(&format!("{module}::")) {
                    let before = code[..at].chars().next_back();
                    if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                        add(module.clone(), at);
                    }
                }
            }
            for (name, module) in &macros {
                for (at, _) in code.match_indices(&format!("{name}!")) {
                    let before = code[..at].chars().next_back();
                    if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                        add(module.clone(), at);
                    }
                }
            }
        }
    }
    (modules, edges)
}

/// The edges that lie on a cycle: both ends in one strongly connected
/// component.
fn cycle_edges(modules: &BTreeSet<String>, edges: &Edges) -> BTreeSet<(String, String)> {
    let mut graph = DiGraph::<&str, ()>::new();
    let index: BTreeMap<&str, NodeIndex> = modules
        .iter()
        .map(|m| (m.as_str(), graph.add_node(m.as_str())))
        .collect();
    for (from, to) in edges.keys() {
        graph.add_edge(index[from.as_str()], index[to.as_str()], ());
    }
    let mut component = BTreeMap::new();
    for (number, scc) in tarjan_scc(&graph).iter().enumerate() {
        for node in scc {
            component.insert(graph[*node], number);
        }
    }
    edges
        .keys()
        .filter(|(from, to)| component[from.as_str()] == component[to.as_str()])
        .cloned()
        .collect()
}

/// A shortest path `from -> ... -> to` over `edges`, as module names.
fn shortest_path(edges: &Edges, from: &str, to: &str) -> Option<Vec<String>> {
    let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(at) = queue.pop_front() {
        if at == to {
            let mut path = vec![to.to_string()];
            let mut step = to;
            while step != from {
                step = previous[step];
                path.push(step.to_string());
            }
            path.reverse();
            return Some(path);
        }
        for (a, b) in edges.keys() {
            if a == at && b != from && !previous.contains_key(b.as_str()) {
                previous.insert(b, a);
                queue.push_back(b);
            }
        }
    }
    None
}

/// Checks the kernel's module graph against `kernel/layers.toml`; the
/// error lists every difference and what to do about it.
fn check(kernel: &Path) -> Result<String, String> {
    let (modules, edges) = module_graph(&kernel.join("src"));
    let on_cycles = cycle_edges(&modules, &edges);
    let baseline_path = kernel.join("layers.toml");
    let text = fs::read_to_string(&baseline_path)
        .map_err(|e| format!("reading {}: {e}", baseline_path.display()))?;
    let baseline: Baseline =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", baseline_path.display()))?;
    let mut allowed = BTreeSet::new();
    let mut problems = Vec::new();
    for entry in &baseline.cycle_edges {
        match entry.split_once(" -> ") {
            Some((from, to)) => {
                allowed.insert((from.to_string(), to.to_string()));
            }
            None => problems.push(format!(
                "kernel/layers.toml: `{entry}` is not an edge; write it `from -> to`"
            )),
        }
    }
    for (from, to) in on_cycles.difference(&allowed) {
        let back = shortest_path(&edges, to, from).unwrap_or_default();
        let cycle = std::iter::once(from.clone())
            .chain(back)
            .collect::<Vec<_>>()
            .join(" -> ");
        problems.push(format!(
            "new cycle edge `{from} -> {to}` ({}): it closes the cycle {cycle}; \
             import downward instead (pass the value in, or move the shared type to a \
             lower module)",
            edges[&(from.clone(), to.clone())]
        ));
    }
    for (from, to) in allowed.difference(&on_cycles) {
        let state = if edges.contains_key(&(from.clone(), to.clone())) {
            "no longer on a cycle"
        } else {
            "gone"
        };
        problems.push(format!(
            "kernel/layers.toml lists `{from} -> {to}`, which is {state}: delete its line \
             (the list only shrinks)"
        ));
    }
    let summary = format!(
        "{} module edges, {} of them on cycles (goal: 0)",
        edges.len(),
        on_cycles.len()
    );
    if problems.is_empty() {
        Ok(summary)
    } else {
        problems.push(summary);
        Err(problems.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_modules_add_no_cycle_edges() {
        let kernel = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernel");
        match check(&kernel) {
            Ok(summary) => println!("kernel layers: {summary}"),
            Err(problems) => panic!("kernel layers:\n{problems}"),
        }
    }

    #[test]
    fn code_only_skips_comments_and_literals() {
        let code = code_only("a // crate::x\n\"crate::y\" '\"' r#\"crate::z\"# 'a crate::w");
        assert!(!code.contains("crate::x") && !code.contains("crate::y"));
        assert!(!code.contains("crate::z") && code.contains("crate::w"));
        assert_eq!(code.matches('\n').count(), 1);
    }

    #[test]
    fn use_groups_give_each_head() {
        let text = "{a, b::c, d::{e, f}, self}";
        assert_eq!(group_heads(text, 0), ["a", "b", "d", "self"]);
    }

    #[test]
    fn a_cycle_is_found_and_named() {
        let mut edges = Edges::new();
        for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
            edges.insert((from.into(), to.into()), String::new());
        }
        let modules = ["a", "b", "c", "d"].map(String::from).into();
        let on_cycles = cycle_edges(&modules, &edges);
        assert_eq!(on_cycles.len(), 3);
        assert!(!on_cycles.contains(&("c".into(), "d".into())));
        assert_eq!(shortest_path(&edges, "a", "c").unwrap(), ["a", "b", "c"]);
    }
}
