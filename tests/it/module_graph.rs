//! The dependency arrows between the top-level modules of `src/` point one way: no module
//! uses, directly or through others, a module that uses it. lib.rs's module map promises
//! this; this test reads every `crate::…` path outside `#[cfg(test)]` code and checks it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/sources/redis/query.rs` → `sources`.
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src()).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The top-level modules named by `crate::a`, `crate::a::b` and `crate::{a, b::c}` paths.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut token = String::new();
            let mut expecting_name = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if depth == 1 && (c.is_alphanumeric() || c == '_') {
                    token.push(c);
                    continue;
                }
                if expecting_name && !token.is_empty() {
                    found.insert(std::mem::take(&mut token));
                    expecting_name = false;
                }
                token.clear();
                if depth == 1 && c == ',' {
                    expecting_name = true;
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

fn graph() -> Graph {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph = Graph::new();
    for file in files {
        let Some(module) = module_of(&file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let uses = graph.entry(module.clone()).or_default();
        for used in crate_references(code) {
            // `Error` and `Result` are re-exported at the root from `error`.
            let used = match used.as_str() {
                "Error" | "Result" => "error".to_string(),
                _ => used,
            };
            if used != module {
                uses.insert(used);
            }
        }
    }
    graph
}

/// A cycle through `start`, if any (depth-first search).
fn cycle_from(graph: &Graph, start: &str) -> Option<Vec<String>> {
    fn visit(graph: &Graph, node: &str, path: &mut Vec<String>, start: &str) -> bool {
        for next in graph.get(node).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if path.contains(next) {
                continue;
            }
            path.push(next.clone());
            if visit(graph, next, path, start) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = vec![start.to_string()];
    visit(graph, start, &mut path, start).then_some(path)
}

#[test]
fn the_reference_reader_finds_every_form_of_path() {
    let code = "use crate::{\n    Error, Result,\n    config::{NamespaceFence, SourceConfig},\n    sources::{Query, redis::{RedisQuery}},\n};\nlet x = crate::naming::metric_name();";
    let found: Vec<String> = crate_references(code).into_iter().collect();
    assert_eq!(found, ["Error", "Result", "config", "naming", "sources"]);
}

#[test]
fn the_cycle_finder_finds_a_planted_cycle() {
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle_from(&graph, "a").unwrap(), ["a", "b", "c", "a"]);
    graph.get_mut("c").unwrap().clear();
    assert_eq!(cycle_from(&graph, "a"), None);
}

#[test]
fn module_dependencies_have_no_cycle() {
    let graph = graph();
    assert!(graph.len() >= 10, "read too few modules: {graph:?}");
    for module in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, module) {
            panic!("a dependency cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn leaves_and_backends_depend_only_downward() {
    let graph = graph();
    let allowed: &[(&str, &[&str])] = &[
        ("error", &[]),
        ("naming", &[]),
        ("metadata", &["error"]),
        ("credentials", &["error"]),
        ("sources", &["error", "metadata", "credentials", "naming"]),
        ("metrics", &[]),
        ("engine", &["error", "sources", "metrics"]),
    ];
    for (module, may_use) in allowed {
        let uses = graph.get(*module).cloned().unwrap_or_default();
        let extra: Vec<&String> = uses
            .iter()
            .filter(|u| !may_use.contains(&u.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "`{module}` uses {extra:?}; it may use only {may_use:?}"
        );
    }
}

#[test]
fn only_the_binary_uses_the_commands() {
    // `cli` sits at the top beside `server`: it may use every module, none may use it.
    let graph = graph();
    assert!(graph.contains_key("cli"), "read no `cli` module: {graph:?}");
    let users: Vec<&String> = graph
        .iter()
        .filter(|(_, uses)| uses.contains("cli"))
        .map(|(module, _)| module)
        .collect();
    assert!(users.is_empty(), "{users:?} use `cli`");
}
