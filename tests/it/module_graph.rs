//! The dependency arrows of `src/` point one way, file by file: no file uses, directly or
//! through others, a file that uses it; and the top-level modules keep the layers of lib.rs's
//! module map. Every `.rs` file under `src/` is found (nothing is listed by hand but the layer
//! of each top-level module, and a new top-level module fails until it has one) and read
//! whole: every path it names (`use` trees, `crate::`/`super::`/`self::` paths, paths through
//! a child module) is an arrow to the file that defines what it names, re-exports followed.
//!
//! Two things are not arrows, on purpose:
//! - `#[cfg(test)]` code (inline test modules, `tests.rs` files, test-only `use`s): a unit
//!   test may name a sibling or a module above to build its fixture, which the library never
//!   does. Code after a test module is read like any other.
//! - an arrow from a file into its own subtree (lib.rs or a folder's `mod.rs` declaring,
//!   re-exporting or assembling its children, like the list of backends): a child may use
//!   what its folder's `mod.rs` defines, and a circle made only of that is the shape of a
//!   Rust module tree, not a tangle.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// File module (`sources::redis::query`; `""` is lib.rs, `"(main)"` the binary) → the file
/// modules it uses.
type Graph = BTreeMap<String, BTreeSet<String>>;

const ROOT: &str = "";
const BINARY: &str = "(main)";

/// The top-level modules of lib.rs's map, top to bottom: a module may use only modules of a
/// later layer. `cli` may use every module; `eval` none; the leaves only `error`.
const LAYERS: &[&[&str]] = &[
    &[BINARY],
    &["cli"],
    &["server"],
    &["service"],
    &["trigger"],
    &["engine"],
    &["config"],
    &["sources"],
    &[
        "eval",
        "metadata",
        "credentials",
        "metrics",
        "naming",
        "proto",
    ],
    &["error"],
];

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

// ---- the files ------------------------------------------------------------------------------

/// Every `.rs` file under `dir`, by its module path.
fn modules(dir: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    files
        .into_iter()
        .map(|file| (module_of(file.strip_prefix(dir).unwrap()), file))
        .collect()
}

/// `lib.rs` → `""`, `main.rs` → `"(main)"`, `a/mod.rs` and `a.rs` → `a`, `a/b.rs` → `a::b`.
fn module_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_str().unwrap().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    match parts.join("::").as_str() {
        "lib" => ROOT.to_string(),
        "main" => BINARY.to_string(),
        path => path.to_string(),
    }
}

// ---- reading a file -------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

/// The identifiers, `::` and punctuation of Rust source; comments, strings, chars and
/// lifetimes left out.
fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            i = skip_while(&chars, i, |c| c != '\n');
        } else if c == '/' && next == Some('*') {
            i = skip_block_comment(&chars, i);
        } else if c == '"' || (matches!(c, 'r' | 'b') && starts_raw_or_byte_string(&chars, i)) {
            i = skip_string(&chars, i);
        } else if c == '\'' {
            i = skip_char_or_lifetime(&chars, i);
        } else if c == 'r'
            && next == Some('#')
            && chars.get(i + 2).is_some_and(|c| c.is_alphabetic())
        {
            i += 2; // a raw identifier, `r#type`: the identifier follows
        } else if c.is_alphabetic() || c == '_' {
            let end = skip_while(&chars, i, |c| c.is_alphanumeric() || c == '_');
            out.push(Token::Ident(chars[i..end].iter().collect()));
            i = end;
        } else if c == ':' && next == Some(':') {
            out.push(Token::PathSep);
            i += 2;
        } else if c.is_ascii_digit() {
            i = skip_while(&chars, i, |c| c.is_alphanumeric() || c == '_' || c == '.');
        } else {
            if !c.is_whitespace() {
                out.push(Token::Punct(c));
            }
            i += 1;
        }
    }
    out
}

fn skip_while(chars: &[char], mut i: usize, keep: impl Fn(char) -> bool) -> usize {
    while i < chars.len() && keep(chars[i]) {
        i += 1;
    }
    i
}

fn skip_block_comment(chars: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        match (chars[i], chars.get(i + 1)) {
            ('/', Some('*')) => {
                depth += 1;
                i += 2;
            }
            ('*', Some('/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    i
}

/// `r"…"`, `r#"…"#`, `b"…"`, `br#"…"#` start at `i` (not `r#type`, a raw identifier).
fn starts_raw_or_byte_string(chars: &[char], i: usize) -> bool {
    let previous_is_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    let after_prefix = skip_while(chars, i, |c| c == 'r' || c == 'b');
    let quote = skip_while(chars, after_prefix, |c| c == '#');
    !previous_is_ident && after_prefix - i <= 2 && chars.get(quote) == Some(&'"')
}

fn skip_string(chars: &[char], mut i: usize) -> usize {
    while chars[i] != '"' && chars[i] != '#' {
        i += 1; // the `r` / `b` prefix
    }
    let raw = i > 0 && (chars[i - 1] == 'r' || chars[i] == '#');
    let hashes = skip_while(chars, i, |c| c == '#') - i;
    i += hashes + 1; // past the opening quote
    while i < chars.len() {
        if chars[i] == '\\' && !raw {
            i += 2;
        } else if chars[i] == '"' && chars[i + 1..].iter().take(hashes).all(|c| *c == '#') {
            return i + 1 + hashes;
        } else {
            i += 1;
        }
    }
    i
}

/// `'a'`, `'\n'`, `'\u{1F600}'` are chars; `'a` is a lifetime (skipped with its name).
fn skip_char_or_lifetime(chars: &[char], i: usize) -> usize {
    if chars.get(i + 1) == Some(&'\\') {
        return skip_while(chars, i + 2, |c| c != '\'') + 1;
    }
    if chars.get(i + 2) == Some(&'\'') {
        return i + 3;
    }
    skip_while(chars, i + 1, |c| c.is_alphanumeric() || c == '_')
}

/// A use tree from `tokens[i]` (just after `use`) to its `;`, expanded into its paths:
/// `crate::{a, b::{c, d as e}, f::*}` → `crate::a`, `crate::b::c`, `crate::b::d`,
/// `crate::f`. Returns the paths and the index after the `;`.
fn use_tree(tokens: &[Token], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut paths = Vec::new();
    // The prefixes of the open groups, innermost last, and the path being read.
    let mut prefixes: Vec<Vec<String>> = vec![Vec::new()];
    let mut current: Vec<String> = Vec::new();
    let finish = |current: &mut Vec<String>, prefixes: &[Vec<String>], paths: &mut Vec<_>| {
        if !current.is_empty() {
            let mut path = prefixes.last().unwrap().clone();
            path.extend(current.drain(..).filter(|s| s != "self"));
            paths.push(path);
        }
    };
    while i < tokens.len() {
        match &tokens[i] {
            Token::Ident(word) if word == "as" => i += 1, // the alias that follows
            Token::Ident(word) => current.push(word.clone()),
            Token::Punct('{') => {
                let mut prefix = prefixes.last().unwrap().clone();
                prefix.append(&mut current);
                prefixes.push(prefix);
            }
            Token::Punct(',') => finish(&mut current, &prefixes, &mut paths),
            Token::Punct('}') => {
                finish(&mut current, &prefixes, &mut paths);
                prefixes.pop();
            }
            Token::Punct(';') => {
                finish(&mut current, &prefixes, &mut paths);
                return (paths, i + 1);
            }
            _ => {} // `::`, `*`
        }
        i += 1;
    }
    (paths, i)
}

/// A path the file names, in the (inline) module it is written in.
#[derive(Clone, Debug)]
struct Reference {
    /// The module the path is written in: the file's module plus inline `mod x { … }`s.
    scope: Vec<String>,
    path: Vec<String>,
    /// Written inside `#[cfg(test)]` code.
    test: bool,
    /// A `pub use` (any visibility): a re-export others may name through this file.
    public: bool,
}

/// Every path of the file whose module is `module`: use trees whole, and outside them every
/// `a::b` sequence (its first segment is resolved, or dropped, by [`resolve`]).
fn references(module: &str, code: &str) -> Vec<Reference> {
    let tokens = tokens(code);
    let mut reader = Reader {
        base: segments(module),
        inline: Vec::new(),
        depth: 0,
        cfg_test: false,
        out: Vec::new(),
    };
    let mut i = 0;
    while i < tokens.len() {
        i = reader.step(&tokens, i);
    }
    reader.out
}

/// Where [`references`] is in a file.
struct Reader {
    /// The file's module path.
    base: Vec<String>,
    /// The inline modules around: (name, brace depth inside it, under `#[cfg(test)]`).
    inline: Vec<(String, usize, bool)>,
    depth: usize,
    /// A `#[cfg(test)]` was read and the item it applies to not yet.
    cfg_test: bool,
    out: Vec<Reference>,
}

impl Reader {
    fn in_test(&self) -> bool {
        self.inline.iter().any(|(_, _, test)| *test)
    }

    fn push(&mut self, path: Vec<String>, test: bool, public: bool) {
        let mut scope = self.base.clone();
        scope.extend(self.inline.iter().map(|(name, _, _)| name.clone()));
        self.out.push(Reference {
            scope,
            path,
            test,
            public,
        });
    }

    /// Reads what starts at `tokens[i]`; returns where to go on.
    fn step(&mut self, tokens: &[Token], i: usize) -> usize {
        match &tokens[i] {
            Token::Punct('#') if is_cfg_test(&tokens[i..]) => {
                self.cfg_test = true;
                return i + 6; // # [ cfg ( test )
            }
            Token::Punct('#') if matches!(tokens.get(i + 1), Some(Token::Punct('[' | '!'))) => {
                return after_attribute(tokens, i); // other attributes keep a pending cfg(test)
            }
            Token::Punct('{') => self.depth += 1,
            Token::Punct('}') => {
                if self.inline.last().is_some_and(|(_, d, _)| *d == self.depth) {
                    self.inline.pop();
                }
                self.depth = self.depth.saturating_sub(1);
            }
            Token::Ident(word) if word == "use" => {
                let (paths, next) = use_tree(tokens, i + 1);
                let public = tokens[i.saturating_sub(5)..i].contains(&Token::Ident("pub".into()));
                let test = self.in_test() || self.cfg_test;
                for path in paths {
                    self.push(path, test, public);
                }
                self.cfg_test = false;
                return next;
            }
            Token::Ident(word) if word == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Punct('{'))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    let test = self.in_test() || self.cfg_test;
                    self.inline.push((name.clone(), self.depth + 1, test));
                }
                self.cfg_test = false;
            }
            Token::Ident(_) if tokens.get(i + 1) == Some(&Token::PathSep) => {
                let (path, next) = plain_path(tokens, i);
                self.push(path, self.in_test(), false);
                return next;
            }
            Token::Ident(word) if !matches!(word.as_str(), "pub" | "crate" | "super") => {
                self.cfg_test = false // the attribute was on some other item
            }
            _ => {}
        }
        i + 1
    }
}

fn segments(module: &str) -> Vec<String> {
    module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// `# [ cfg ( test ) ]` starts at the first token.
fn is_cfg_test(tokens: &[Token]) -> bool {
    let expected = ["#", "[", "cfg", "(", "test", ")"];
    tokens.len() >= expected.len()
        && tokens
            .iter()
            .zip(expected)
            .all(|(token, want)| match token {
                Token::Ident(word) => word == want,
                Token::Punct(c) => want.len() == 1 && want.starts_with(*c),
                Token::PathSep => false,
            })
}

/// The index after the attribute (`#[…]` or `#![…]`) at `tokens[i]`.
fn after_attribute(tokens: &[Token], mut i: usize) -> usize {
    let mut depth = 0;
    while i < tokens.len() {
        match tokens[i] {
            Token::Punct('[') => depth += 1,
            Token::Punct(']') => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// `a::b::c` from `tokens[i]`; returns it and the index after it.
fn plain_path(tokens: &[Token], mut i: usize) -> (Vec<String>, usize) {
    let mut path = Vec::new();
    while let Some(Token::Ident(word)) = tokens.get(i) {
        path.push(word.clone());
        if tokens.get(i + 1) != Some(&Token::PathSep) {
            return (path, i + 1);
        }
        i += 2;
    }
    (path, i)
}

// ---- the graph ------------------------------------------------------------------------------

/// The file module a path names, if it is one of ours, and the segments after it: `crate::`
/// from the root, `super::` and `self::` from the scope it is written in, a first segment
/// naming a child module of that scope; the longest prefix that is a file wins
/// (`crate::sources::redis::RedisRead` → `sources::redis`, `["RedisRead"]`). In the binary,
/// `backlog_scaler::` is the library's root.
fn resolve(
    file_module: &str,
    reference: &Reference,
    known: &BTreeMap<String, PathBuf>,
) -> Option<(String, Vec<String>)> {
    let mut scope = reference.scope.clone();
    let mut path = reference.path.iter().peekable();
    match path.peek()?.as_str() {
        "crate" => {
            scope.clear();
            path.next();
        }
        "backlog_scaler" if file_module == BINARY => {
            scope.clear();
            path.next();
        }
        "self" => {
            path.next();
        }
        "super" => {
            while path.peek().is_some_and(|s| *s == "super") {
                scope.pop()?;
                path.next();
            }
        }
        first => {
            let mut child = scope.clone();
            child.push(first.to_string());
            if file_module == BINARY || !known.contains_key(&child.join("::")) {
                return None; // an extern crate, a type, a local name
            }
        }
    }
    let mut found = longest_file(&scope, known)?;
    let mut rest = Vec::new();
    for segment in path {
        scope.push(segment.clone());
        rest.push(segment.clone());
        if known.contains_key(&scope.join("::")) {
            found = scope.join("::");
            rest.clear();
        }
    }
    Some((found, rest))
}

/// What `pub use` lines of each file re-export: file → name → the re-exporting reference.
type Exports = BTreeMap<String, BTreeMap<String, Reference>>;

/// [`resolve`], then through re-exports: `crate::Error` is lib.rs's `pub use error::Error`,
/// so it names `error`; `super::RedisRead` names the file that defines it.
fn resolve_through(
    file_module: &str,
    reference: &Reference,
    known: &BTreeMap<String, PathBuf>,
    exports: &Exports,
) -> Option<String> {
    let (mut module, mut rest) = resolve(file_module, reference, known)?;
    for _ in 0..8 {
        let Some(export) = rest
            .first()
            .and_then(|name| exports.get(&module)?.get(name))
        else {
            break;
        };
        let Some((next, mut more)) = resolve(&module, export, known) else {
            break;
        };
        more.extend(rest.drain(1..));
        (module, rest) = (next, more);
    }
    Some(module)
}

/// The innermost file module containing `scope` (inline modules live in their file).
fn longest_file(scope: &[String], known: &BTreeMap<String, PathBuf>) -> Option<String> {
    (0..=scope.len())
        .rev()
        .map(|n| scope[..n].join("::"))
        .find(|module| known.contains_key(module))
}

/// The file graph of the crate at `dir`, `#[cfg(test)]` code included or not; no arrow from a
/// file into its own subtree (see the top of this file), re-exports followed to the file that
/// defines the name.
fn graph_of(dir: &Path, with_tests: bool) -> Graph {
    let known = modules(dir);
    let mut all = BTreeMap::new();
    let mut exports = Exports::new();
    for (module, file) in &known {
        let code = std::fs::read_to_string(file).unwrap();
        let test_file = is_test_file(module, &known);
        let references: Vec<Reference> = references(module, &code)
            .into_iter()
            .filter(|r| with_tests || !(r.test || test_file))
            .collect();
        for reference in references.iter().filter(|r| r.public && !r.test) {
            if let Some(name) = reference.path.last() {
                let names = exports.entry(module.clone()).or_default();
                names.insert(name.clone(), reference.clone());
            }
        }
        all.insert(module.clone(), references);
    }
    let mut graph = Graph::new();
    for (module, references) in &all {
        let uses = graph.entry(module.clone()).or_default();
        for reference in references {
            let Some(used) = resolve_through(module, reference, &known, &exports) else {
                continue;
            };
            let descendant = module == ROOT || used.starts_with(&format!("{module}::"));
            if used != *module && !descendant {
                uses.insert(used);
            }
        }
    }
    graph
}

/// A file module declared `#[cfg(test)] mod NAME;` by its parent (`eval/formula/tests.rs`).
fn is_test_file(module: &str, known: &BTreeMap<String, PathBuf>) -> bool {
    let (parent, name) = module.rsplit_once("::").unwrap_or((ROOT, module));
    let Some(parent_file) = known.get(parent) else {
        return false;
    };
    let code = std::fs::read_to_string(parent_file).unwrap();
    let tokens = tokens(&code);
    (0..tokens.len()).any(|i| {
        is_cfg_test(&tokens[i..])
            && tokens[i + 6..].starts_with(&[
                Token::Punct(']'),
                Token::Ident("mod".into()),
                Token::Ident(name.into()),
                Token::Punct(';'),
            ])
    })
}

fn top_level(module: &str) -> &str {
    module.split("::").next().unwrap()
}

/// A circle through `start`, if any (depth-first search; a file explored once without
/// finding `start` cannot lead to it later).
fn cycle_from(graph: &Graph, start: &str) -> Option<Vec<String>> {
    fn visit(
        graph: &Graph,
        node: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(node).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if visit(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    visit(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

/// Every circle, one per file that is on one.
fn cycles(graph: &Graph) -> Vec<String> {
    graph
        .keys()
        .filter_map(|module| cycle_from(graph, module))
        .map(|cycle| cycle.join(" → "))
        .collect()
}

/// The arrows between top-level modules that go up or sideways in [`LAYERS`], and the
/// top-level modules missing from it.
fn layer_violations(graph: &Graph) -> Vec<String> {
    let layer = |module: &str| LAYERS.iter().position(|layer| layer.contains(&module));
    let mut found = Vec::new();
    for (file, uses) in graph {
        let from = top_level(file);
        if from == ROOT {
            continue; // lib.rs declares every module and re-exports what it names
        }
        let Some(from_layer) = layer(from) else {
            found.push(format!("`{from}` is in no layer of LAYERS"));
            continue;
        };
        for used in uses {
            let to = top_level(used);
            if to != from && layer(to).is_none_or(|l| l <= from_layer) {
                found.push(format!("`{file}` uses `{used}`"));
            }
        }
    }
    found
}

// ---- the tests of the source ----------------------------------------------------------------

#[test]
fn every_file_of_src_is_read() {
    let known = modules(&src());
    let graph = graph_of(&src(), true);
    assert_eq!(
        graph.keys().collect::<Vec<_>>(),
        known.keys().collect::<Vec<_>>()
    );
    for expected in [
        ROOT,
        BINARY,
        "cli",
        "sources::redis",
        "sources::pgbouncer::console",
    ] {
        assert!(
            known.contains_key(expected),
            "{expected} not found: {known:?}"
        );
    }
    // Paths past a file's first `#[cfg(test)]` are read: pgbouncer/console.rs has code after
    // its first one.
    let console = &graph["sources::pgbouncer::console"];
    assert!(!console.is_empty(), "console.rs uses nothing? {console:?}");
}

#[test]
fn no_file_is_on_a_circle() {
    // Without `#[cfg(test)]` code (query.rs's tests take the metric table from metrics.rs).
    let graph = graph_of(&src(), false);
    let found = cycles(&graph);
    assert!(found.is_empty(), "file circles:\n{}", found.join("\n"));
}

#[test]
fn top_level_modules_keep_the_layers_of_the_module_map() {
    let graph = graph_of(&src(), false);
    let found = layer_violations(&graph);
    assert!(found.is_empty(), "against LAYERS:\n{}", found.join("\n"));
}

#[test]
fn only_the_binary_uses_the_commands() {
    let graph = graph_of(&src(), true);
    let users: Vec<&String> = graph
        .iter()
        .filter(|(module, uses)| {
            top_level(module) != "cli" && uses.iter().any(|u| top_level(u) == "cli")
        })
        .map(|(module, _)| module)
        .collect();
    assert_eq!(users, [BINARY], "only the binary may use `cli`");
}

// ---- the tests of the test ------------------------------------------------------------------

#[test]
fn use_trees_expand_into_every_path() {
    let code = "use crate::{\n    Error, Result,\n    config::{NamespaceFence, SourceConfig as Config},\n    \
                sources::{self, redis::{RedisQuery}},\n};\nuse super::*;";
    let (paths, _) = use_tree(&tokens(code), 1);
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        joined,
        [
            "crate::Error",
            "crate::Result",
            "crate::config::NamespaceFence",
            "crate::config::SourceConfig",
            "crate::sources",
            "crate::sources::redis::RedisQuery",
        ]
    );
}

#[test]
fn comments_strings_and_lifetimes_name_nothing() {
    let code = r##"
        // use crate::cli;
        /* crate::server::run /* nested */ crate::server */
        let a = "crate::engine"; let b = r#"crate::service "quoted""#; let c = b"crate::x";
        fn f<'a>(x: &'a str) -> char { let r#type = 1; '"' }
        let d = crate::naming::metric_name();
    "##;
    let paths: Vec<Vec<String>> = references("m", code).into_iter().map(|r| r.path).collect();
    assert_eq!(paths, [["crate", "naming", "metric_name"]]);
}

#[test]
fn paths_resolve_from_the_module_they_are_written_in() {
    let known: BTreeMap<String, PathBuf> = [ROOT, "a", "a::b", "a::c", "d"]
        .iter()
        .map(|m| (m.to_string(), PathBuf::new()))
        .collect();
    let code = "use super::c::Thing;\nfn f() { crate::d::g(); self::inner::h(); c::k(); }\n\
                mod inner { pub fn h() {} }\n#[cfg(test)]\n#[allow(unused)]\nmod tests { use super::*; use super::super::c; }";
    let resolved: Vec<(Option<String>, bool)> = references("a::b", code)
        .iter()
        .map(|r| (resolve("a::b", r, &known).map(|(m, _)| m), r.test))
        .collect();
    let some = |m: &str| Some(m.to_string());
    assert_eq!(
        resolved,
        [
            (some("a::c"), false),
            (some("d"), false),
            (some("a::b"), false), // self::inner is in this file
            (None, false),         // `c` is no child of a::b: a crate, a type or a local
            (some("a::b"), true),  // tests' `super` is the file itself
            (some("a::c"), true),
        ]
    );
}

#[test]
fn the_circle_finder_finds_a_planted_circle() {
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle_from(&graph, "a").unwrap(), ["a", "b", "c", "a"]);
    graph.get_mut("c").unwrap().clear();
    assert_eq!(cycle_from(&graph, "a"), None);
}

/// A copy of `src/` in a temp dir, with `plants` (file, text appended) applied.
fn planted(plants: &[(&str, &str)]) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap().flatten() {
            let target = to.join(entry.file_name());
            if entry.path().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&src(), dir.path());
    for (file, text) in plants {
        let path = dir.path().join(file);
        let mut code = std::fs::read_to_string(&path).unwrap_or_default();
        code.push_str(text);
        std::fs::write(path, code).unwrap();
    }
    dir
}

/// A planted circle: what it is, the lines appended to which files, two files on it.
type Plant<'a> = (&'a str, &'a [(&'a str, &'a str)], [&'a str; 2]);

#[test]
fn planted_circles_fail_the_check() {
    let cases: [Plant; 3] = [
        (
            // Between two leaves, written after a file's tests (the end of the file).
            "top level",
            &[
                (
                    "error.rs",
                    "\npub fn planted() -> usize { crate::naming::PLANTED }\n",
                ),
                ("naming.rs", "\nuse crate::error::planted as _;\n"),
            ],
            ["error", "naming"],
        ),
        (
            // Between two files of one backend.
            "inside a backend",
            &[
                (
                    "sources/pgbouncer/stats.rs",
                    "\nuse super::pools::Planted;\n",
                ),
                (
                    "sources/pgbouncer/pools.rs",
                    "\nfn planted() { super::stats::x(); }\n",
                ),
            ],
            ["sources::pgbouncer::stats", "sources::pgbouncer::pools"],
        ),
        (
            // A new file that no list names.
            "a new file",
            &[
                ("sources/redis/planted.rs", "use super::check::Planted;\n"),
                ("sources/redis/check.rs", "\nuse super::planted::Planted;\n"),
            ],
            ["sources::redis::planted", "sources::redis::check"],
        ),
    ];
    let before: BTreeSet<String> = cycles(&graph_of(&src(), false)).into_iter().collect();
    for (case, plants, on_the_circle) in cases {
        let dir = planted(plants);
        let found: Vec<String> = cycles(&graph_of(dir.path(), false))
            .into_iter()
            .filter(|cycle| !before.contains(cycle))
            .collect();
        assert!(
            found.iter().any(|cycle| on_the_circle
                .iter()
                .all(|m| { cycle.split(" → ").any(|step| step == *m) })),
            "{case}: the planted circle through {on_the_circle:?} was not found: {found:?}"
        );
    }
}

#[test]
fn a_planted_upward_arrow_breaks_the_layers() {
    let dir = planted(&[("metadata.rs", "\nfn planted() { crate::engine::x(); }\n")]);
    let found = layer_violations(&graph_of(dir.path(), false));
    assert!(
        found.iter().any(|v| v.contains("`metadata` uses `engine`")),
        "{found:?}"
    );
}
