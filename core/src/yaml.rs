//! A YAML tree that remembers where every node came from, and the reader that
//! turns it into typed values while collecting every problem at once.
//!
//! serde would stop at the first error and forget positions; the catalog's
//! users need `file:line:col: field.path: message` for every mistake in one
//! run. This module does no I/O: it takes the file's text and its display name.

use std::fmt;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deepest nesting accepted; the catalog needs about six levels.
const MAX_DEPTH: usize = 64;

/// A position in a file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    fn from_marker(m: &Marker) -> Pos {
        Pos {
            line: u32::try_from(m.line()).unwrap_or(u32::MAX),
            col: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
        }
    }
}

/// One problem found in the catalog, with everything needed to find and fix it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub col: u32,
    /// Dotted field path such as `packages.pip[3]`; empty for the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.col)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub pos: Pos,
    /// A scalar's text as written (empty for lists and mappings), so that
    /// `3.10` used as text stays `3.10`, not the number 3.1.
    pub text: String,
}

impl Node {
    /// What a user would call this kind of value, for messages.
    pub fn describe(&self) -> &'static str {
        match self.kind {
            Kind::Null => "nothing (null)",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// Resolve a plain scalar by the YAML 1.2 core schema; quoted scalars stay strings.
fn resolve(value: String, style: TScalarStyle) -> Kind {
    if style != TScalarStyle::Plain {
        return Kind::Str(value);
    }
    match value.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        _ => {}
    }
    let looks_numeric = value
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'-' || b == b'+' || b == b'.');
    if looks_numeric {
        if let Ok(i) = value.parse::<i64>() {
            return Kind::Int(i);
        }
        let is_float_syntax = value
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
        if is_float_syntax && let Ok(f) = value.parse::<f64>() {
            return Kind::Float(f);
        }
    }
    Kind::Str(value)
}

enum Frame {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<(Node, Node)>, Option<Node>),
}

/// Parse one YAML document into a positioned tree.
///
/// An empty file is `Null`. Several documents, aliases, tags and nesting
/// deeper than 64 levels are errors: catalog files are plain YAML.
pub fn parse(file: &str, text: &str) -> Result<Node, Diagnostic> {
    let err = |pos: Pos, message: String| Diagnostic {
        file: file.to_string(),
        line: pos.line,
        col: pos.col,
        path: String::new(),
        message,
    };
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    loop {
        let (event, marker) = parser.next_token().map_err(|e| {
            err(
                Pos::from_marker(e.marker()),
                format!("invalid YAML: {}", e.info()),
            )
        })?;
        let pos = Pos::from_marker(&marker);
        let node = match event {
            Event::StreamEnd => break,
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => continue,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(err(
                        pos,
                        "a catalog file holds exactly one YAML document; remove the second `---`"
                            .into(),
                    ));
                }
                continue;
            }
            Event::Alias(_) => {
                return Err(err(
                    pos,
                    "YAML aliases (*name) are not supported in catalog files; write the value out"
                        .into(),
                ));
            }
            Event::Scalar(value, style, _anchor, tag) => {
                if let Some(tag) = tag {
                    return Err(err(
                        pos,
                        format!(
                            "YAML tags ({}{}) are not supported in catalog files",
                            tag.handle, tag.suffix
                        ),
                    ));
                }
                Node {
                    kind: resolve(value.clone(), style),
                    pos,
                    text: value,
                }
            }
            Event::SequenceStart(_, tag) | Event::MappingStart(_, tag) if tag.is_some() => {
                return Err(err(
                    pos,
                    "YAML tags are not supported in catalog files".into(),
                ));
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(err(pos, format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                if matches!(event, Event::SequenceStart(..)) {
                    stack.push(Frame::Seq(pos, Vec::new()));
                } else {
                    stack.push(Frame::Map(pos, Vec::new(), None));
                }
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(p, items)) => Node {
                    kind: Kind::Seq(items),
                    pos: p,
                    text: String::new(),
                },
                Some(Frame::Map(p, entries, _)) => Node {
                    // A block mapping's start event is reported after its
                    // first key; the mapping starts where that key does.
                    pos: entries.first().map_or(p, |(k, _)| k.pos.min(p)),
                    kind: Kind::Map(entries),
                    text: String::new(),
                },
                None => return Err(err(pos, "invalid YAML: unbalanced collection".into())),
            },
        };
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
    }
    Ok(root.unwrap_or(Node {
        kind: Kind::Null,
        pos: Pos { line: 1, col: 1 },
        text: String::new(),
    }))
}

/// Collects diagnostics for one file while typed values are read from its tree.
pub struct Reader<'d> {
    pub file: String,
    pub diags: &'d mut Vec<Diagnostic>,
}

impl<'d> Reader<'d> {
    pub fn new(file: &str, diags: &'d mut Vec<Diagnostic>) -> Self {
        Reader {
            file: file.to_string(),
            diags,
        }
    }

    pub fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line: pos.line,
            col: pos.col,
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn expected(&mut self, node: &Node, path: &str, what: &str) {
        let message = format!("expected {what}, found {}", node.describe());
        self.error(node.pos, path, message);
    }

    /// Open a mapping; `None` (after reporting) if the node is something else.
    pub fn map<'n>(&mut self, node: &'n Node, path: &str) -> Option<MapReader<'n>> {
        match &node.kind {
            Kind::Map(entries) => {
                let mut seen: Vec<&str> = Vec::new();
                let mut keys = Vec::with_capacity(entries.len());
                for (k, _) in entries {
                    match &k.kind {
                        Kind::Str(s) => {
                            if seen.contains(&s.as_str()) {
                                self.error(k.pos, &join(path, s), "duplicate key");
                            }
                            seen.push(s);
                            keys.push(Some(s.as_str()));
                        }
                        Kind::Int(_) | Kind::Bool(_) | Kind::Float(_) | Kind::Null => {
                            keys.push(None);
                            self.error(
                                k.pos,
                                path,
                                format!("keys must be strings, found {}; quote it", k.describe()),
                            );
                        }
                        _ => {
                            keys.push(None);
                            self.error(k.pos, path, "keys must be plain strings");
                        }
                    }
                }
                Some(MapReader {
                    entries,
                    keys,
                    used: vec![false; entries.len()],
                    path: path.to_string(),
                    pos: node.pos,
                })
            }
            _ => {
                self.expected(node, path, "a mapping");
                None
            }
        }
    }

    pub fn seq<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            _ => {
                self.expected(node, path, "a list");
                None
            }
        }
    }

    /// Open a list of mappings: each item's path, position and reader.
    /// Items that are not mappings are reported and left out.
    pub fn map_list<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
    ) -> Vec<(String, Pos, MapReader<'n>)> {
        let Some(items) = self.seq(node, path) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let p = index(path, i);
                let m = self.map(item, &p)?;
                Some((p, item.pos, m))
            })
            .collect()
    }

    /// A string; an unquoted number or boolean is taken as the text written.
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.kind {
            Kind::Int(_) | Kind::Float(_) | Kind::Bool(_) => Some(node.text.clone()),
            Kind::Str(s) => {
                if let Some(c) = s.chars().find(|c| c.is_control() && *c != '\n') {
                    self.error(
                        node.pos,
                        path,
                        format!("control character {:?} is not allowed", c),
                    );
                    return None;
                }
                Some(s.clone())
            }
            _ => {
                self.expected(node, path, "a string");
                None
            }
        }
    }

    /// A single-line string: no newline, no control characters.
    pub fn line(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.string(node, path)?;
        if s.contains('\n') {
            self.error(node.pos, path, "must be a single line");
            return None;
        }
        Some(s)
    }

    /// A single-line string that must pass `check`; the message says what is allowed.
    pub fn token(
        &mut self,
        node: &Node,
        path: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        let s = self.line(node, path)?;
        self.checked(node, path, s, check)
    }

    /// A string that may span lines and must pass `check`.
    pub fn text(
        &mut self,
        node: &Node,
        path: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        let s = self.string(node, path)?;
        self.checked(node, path, s, check)
    }

    fn checked(
        &mut self,
        node: &Node,
        path: &str,
        s: String,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        match check(&s) {
            Ok(()) => Some(s),
            Err(why) => {
                self.error(node.pos, path, format!("{s:?} {why}"));
                None
            }
        }
    }

    pub fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        match node.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                self.expected(node, path, "true or false");
                None
            }
        }
    }

    pub fn int(&mut self, node: &Node, path: &str, min: i64, max: i64) -> Option<i64> {
        match node.kind {
            Kind::Int(i) if (min..=max).contains(&i) => Some(i),
            Kind::Int(i) => {
                self.error(
                    node.pos,
                    path,
                    format!("{i} is out of range (allowed: {min} to {max})"),
                );
                None
            }
            _ => {
                self.expected(node, path, "a whole number");
                None
            }
        }
    }

    /// A list of single-line tokens, each checked.
    pub fn token_list(
        &mut self,
        node: &Node,
        path: &str,
        max: usize,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Vec<Spanned<String>> {
        let Some(items) = self.seq(node, path) else {
            return Vec::new();
        };
        if items.len() > max {
            self.error(
                node.pos,
                path,
                format!("{} entries, at most {max} are allowed", items.len()),
            );
        }
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let p = index(path, i);
                self.token(item, &p, &check).map(|value| Spanned {
                    value,
                    pos: item.pos,
                })
            })
            .collect()
    }
}

/// A value with the place it was written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Spanned<T> {
    pub value: T,
    #[serde(skip)]
    pub pos: Pos,
}

/// Reads a mapping's keys; `finish` reports the keys nobody asked for.
pub struct MapReader<'n> {
    entries: &'n [(Node, Node)],
    keys: Vec<Option<&'n str>>,
    used: Vec<bool>,
    pub path: String,
    pub pos: Pos,
}

impl<'n> MapReader<'n> {
    pub fn get(&mut self, key: &str) -> Option<&'n Node> {
        let i = self.keys.iter().position(|k| *k == Some(key))?;
        self.used[i] = true;
        Some(&self.entries[i].1)
    }

    /// The child path for `key`.
    pub fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// All entries in file order, as (key, key node, value node); marks them used.
    pub fn entries(&mut self) -> Vec<(&'n str, &'n Node, &'n Node)> {
        let mut out = Vec::new();
        for (i, key) in self.keys.iter().enumerate() {
            if let Some(k) = key {
                self.used[i] = true;
                out.push((*k, &self.entries[i].0, &self.entries[i].1));
            }
        }
        out
    }

    /// Report the keys that were never read, naming what is allowed.
    pub fn finish(self, r: &mut Reader<'_>, allowed: &[&str]) {
        for (i, key) in self.keys.iter().enumerate() {
            if let (Some(k), false) = (key, self.used[i]) {
                let mut message = format!("unknown key {k:?} (allowed: {})", allowed.join(", "));
                if let Some(near) = allowed.iter().find(|a| similar(a, k)) {
                    message.push_str(&format!("; did you mean {near:?}?"));
                }
                r.error(self.entries[i].0.pos, &self.path, message);
            }
        }
    }

    /// Report a required key that is missing.
    pub fn require(&mut self, r: &mut Reader<'_>, key: &str) -> Option<&'n Node> {
        let node = self.get(key);
        if node.is_none() {
            r.error(
                self.pos,
                &self.path,
                format!("missing required key {key:?}"),
            );
        }
        node
    }
}

/// Two keys that differ by case, `-`/`_`, or one edit: a likely typo.
fn similar(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    if norm(a) == norm(b) {
        return true;
    }
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    // Levenshtein distance <= 1.
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()] <= 1
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let n = parse("f.yaml", "a:\n  b: [1, x]\n").expect("parses");
        let Kind::Map(entries) = &n.kind else {
            panic!("map")
        };
        let (_, v) = &entries[0];
        let Kind::Map(inner) = &v.kind else {
            panic!("map")
        };
        let (k, seq) = &inner[0];
        assert_eq!(k.pos, Pos { line: 2, col: 3 });
        let Kind::Seq(items) = &seq.kind else {
            panic!("seq")
        };
        assert_eq!(items[1].pos, Pos { line: 2, col: 10 });
        assert_eq!(items[0].kind, Kind::Int(1));
    }

    #[test]
    fn scalars_resolve_by_core_schema() {
        assert_eq!(resolve("2".into(), TScalarStyle::Plain), Kind::Int(2));
        assert_eq!(
            resolve("2".into(), TScalarStyle::DoubleQuoted),
            Kind::Str("2".into())
        );
        assert_eq!(resolve("2.5".into(), TScalarStyle::Plain), Kind::Float(2.5));
        assert_eq!(
            resolve("2G".into(), TScalarStyle::Plain),
            Kind::Str("2G".into())
        );
        assert_eq!(resolve("~".into(), TScalarStyle::Plain), Kind::Null);
        assert_eq!(
            resolve("no".into(), TScalarStyle::Plain),
            Kind::Str("no".into())
        );
        assert_eq!(
            resolve("1e3".into(), TScalarStyle::Plain),
            Kind::Float(1000.0)
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = "[".repeat(100_000);
        assert!(parse("f.yaml", &text).is_err());
    }

    #[test]
    fn aliases_and_multiple_documents_are_rejected() {
        let e = parse("f.yaml", "a: &x 1\nb: *x\n").expect_err("alias");
        assert!(e.message.contains("aliases"), "{e}");
        let e = parse("f.yaml", "---\na: 1\n---\nb: 2\n").expect_err("two docs");
        assert!(e.message.contains("one YAML document"), "{e}");
    }

    #[test]
    fn typo_suggestion() {
        assert!(similar("packages", "pakages"));
        assert!(similar("node_selector", "node-selector"));
        assert!(!similar("env", "labels"));
    }
}
