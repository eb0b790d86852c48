//! The package inventory of an image, from the bytes of a few files in its
//! layers: which files matter ([`wanted`]), how the layers stack up
//! ([`Layer`], [`Merger`]: OCI whiteouts, opaque directories, files that
//! replace directories) and what the surviving files say ([`collect`]: dpkg
//! status, Python core metadata, conda-meta records, os-release).
//!
//! The files and the rules follow Trivy's analyzers, so that both find the
//! same deb, Python and conda packages: `var/lib/dpkg/status` and the files
//! of `var/lib/dpkg/status.d/` (distroless); `*.dist-info/METADATA`,
//! `*.egg-info/PKG-INFO`, `EGG-INFO/PKG-INFO` and `*.egg-info` files anywhere
//! in the tree; `conda-meta/*.json` anywhere. Zipped `.egg` files are not
//! read.
//!
//! This module does no I/O and must not: the builder reads the layer tars,
//! hands in the wanted files' bytes (hardlinks resolved to their bytes), the
//! whiteouts and the symlinks, and gets an [`Inventory`] back. A file that
//! cannot be understood becomes a warning naming its path, never a panic.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{Distro, Inventory, Package, PackageKind, SourcePackage};

/// The dpkg database of a Debian or Ubuntu image.
pub const DPKG_STATUS: &str = "var/lib/dpkg/status";
/// One control stanza per file: how distroless images record their packages.
pub const DPKG_STATUS_D: &str = "var/lib/dpkg/status.d";
/// os-release, in the order they are read: the first one that parses wins.
pub const OS_RELEASE: [&str; 2] = ["etc/os-release", "usr/lib/os-release"];

/// What a wanted file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// `etc/os-release` or `usr/lib/os-release`.
    OsRelease,
    /// `var/lib/dpkg/status` or a file in `var/lib/dpkg/status.d/`.
    DpkgStatus,
    /// Python core metadata: `METADATA`, `PKG-INFO` or an `.egg-info` file.
    PythonMetadata,
    /// A conda-meta record (`conda-meta/<name>-<version>-<build>.json`).
    CondaMeta,
}

/// A problem with one file; [`collect`] turns these into its warnings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error(
        "{path}: {count} line(s) are neither `Field: value` lines nor continuations (the first in stanza {stanza}); the dpkg database may be damaged, its other packages are listed"
    )]
    DpkgMalformedLines {
        path: String,
        count: usize,
        stanza: usize,
    },
    #[error(
        "{path}: stanza {stanza} has no Package field and is left out; the dpkg database may be damaged"
    )]
    DpkgNoPackage { path: String, stanza: usize },
    #[error("{path}: package {package} (stanza {stanza}) has no {field} field and is left out")]
    DpkgMissingField {
        path: String,
        stanza: usize,
        package: String,
        field: &'static str,
    },
    #[error(
        "{path}: package {package} (stanza {stanza}) has the status {status:?}, not `want flag state`; it is left out"
    )]
    DpkgBadStatus {
        path: String,
        stanza: usize,
        package: String,
        status: String,
    },
    #[error(
        "{path}: package {package} (stanza {stanza}) has the Source field {source_field:?}, not `name` or `name (version)`; the binary package's name and version are used"
    )]
    DpkgBadSource {
        path: String,
        stanza: usize,
        package: String,
        source_field: String,
    },
    #[error(
        "{path}: the metadata header has no {field} field; the distribution is left out of the inventory"
    )]
    PythonMissingField { path: String, field: &'static str },
    #[error(
        "{path}: not a conda-meta record ({message}); the package is left out of the inventory"
    )]
    CondaRecord { path: String, message: String },
    #[error("{path}: no ID= line, so the distribution is unknown")]
    OsReleaseNoId { path: String },
}

/// Strips what tar writers put in front of member names (`./`, `/`) and a
/// trailing `/`, so that paths can be given to [`wanted`] and [`Merger`].
pub fn normalize(path: &str) -> &str {
    let mut p = path;
    loop {
        if let Some(rest) = p.strip_prefix("./") {
            p = rest;
        } else if let Some(rest) = p.strip_prefix('/') {
            p = rest;
        } else {
            break;
        }
    }
    let p = p.trim_end_matches('/');
    if p == "." { "" } else { p }
}

fn split_dir(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Whether a regular file at `path` (normalized: no leading `/` or `./`)
/// belongs in the inventory, and as what. Called for every tar entry of an
/// image: it looks at the file name first and allocates nothing.
pub fn wanted(path: &str) -> Option<FileKind> {
    let (dir, name) = split_dir(path);
    if name.is_empty() {
        return None;
    }
    if name.ends_with(".json") {
        return (split_dir(dir).1 == "conda-meta").then_some(FileKind::CondaMeta);
    }
    if name.ends_with(".egg-info") {
        return Some(FileKind::PythonMetadata);
    }
    match name {
        "METADATA" if dir.ends_with(".dist-info") => return Some(FileKind::PythonMetadata),
        "PKG-INFO" if dir.ends_with(".egg-info") || split_dir(dir).1 == "EGG-INFO" => {
            return Some(FileKind::PythonMetadata);
        }
        "os-release" if OS_RELEASE.contains(&path) => return Some(FileKind::OsRelease),
        "status" if path == DPKG_STATUS => return Some(FileKind::DpkgStatus),
        _ => {}
    }
    if dir == DPKG_STATUS_D && !name.ends_with(".md5sums") {
        return Some(FileKind::DpkgStatus);
    }
    None
}

/// Drops the parts of a wanted file that no parser reads (a dist-info's
/// long description, a conda record's file list, the dpkg fields besides
/// the five it needs), so that the [`Merger`] holds little. [`collect`]
/// gives the same result for the compacted bytes as for the original ones,
/// warnings included.
pub fn compact(kind: FileKind, mut bytes: Vec<u8>) -> Vec<u8> {
    match kind {
        FileKind::OsRelease => bytes,
        FileKind::PythonMetadata => {
            let end = python_header(&bytes).len();
            bytes.truncate(end);
            bytes.shrink_to_fit();
            bytes
        }
        FileKind::CondaMeta => match serde_json::from_slice::<CondaRecord>(&bytes) {
            Ok(record) => serde_json::to_vec(&record).unwrap_or(bytes),
            Err(_) => bytes,
        },
        FileKind::DpkgStatus => compact_dpkg(&bytes),
    }
}

// ---------------------------------------------------------------------------
// Layers

/// What the caller collected from one layer tar.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer {
    /// Wanted regular files (see [`wanted`]) and their bytes, preferably
    /// passed through [`compact`] (as [`Layer::add_file`] does).
    pub files: Vec<(String, Vec<u8>)>,
    /// Paths deleted by `.wh.<name>` entries (`a/.wh.b` deletes `a/b`), and
    /// paths where this layer puts a non-directory that is not wanted over a
    /// directory of lower layers (see [`Merger::has_files_under`]).
    pub whiteouts: Vec<String>,
    /// Directories made opaque by a `.wh..wh..opq` entry in them.
    pub opaque_dirs: Vec<String>,
    /// Symlinks to resolve at the end (`etc/os-release` is usually one), as
    /// (link path, target as written).
    pub symlinks: Vec<(String, String)>,
}

impl Layer {
    /// Adds a regular file if it is wanted, compacted; returns whether it was.
    pub fn add_file(&mut self, path: &str, bytes: Vec<u8>) -> bool {
        match wanted(path) {
            Some(kind) => {
                self.files.push((path.to_owned(), compact(kind, bytes)));
                true
            }
            None => false,
        }
    }

    /// Records `path` if it is a whiteout entry (`a/.wh.b`, `a/.wh..wh..opq`;
    /// other `.wh..wh.` entries are aufs bookkeeping and are skipped) and
    /// returns whether it was one, in which case the entry itself is not a file
    /// of the image. Allocates only for whiteout entries.
    pub fn record_whiteout(&mut self, path: &str) -> bool {
        let (dir, name) = split_dir(path);
        let Some(rest) = name.strip_prefix(".wh.") else {
            return false;
        };
        if rest == ".wh..opq" {
            self.opaque_dirs.push(dir.to_owned());
        } else if !rest.starts_with(".wh.") && !rest.is_empty() {
            self.whiteouts.push(join(dir, rest));
        }
        true
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File(Vec<u8>),
    Symlink(String),
}

/// Stacks layers bottom-up with the OCI image-spec's rules (layer.md): a
/// whiteout deletes a path and everything under it from lower layers; an
/// opaque directory hides everything lower layers put under it (this
/// layer's own entries stay); a file replaces a lower one; within one layer
/// whiteouts apply before the layer's own files. A file or symlink where
/// lower layers had a directory deletes what was under it, and a file under
/// a path that was a file makes that path a directory.
#[derive(Debug, Clone, Default)]
pub struct Merger {
    entries: BTreeMap<String, Entry>,
    /// Every directory that ever held an entry; may keep directories whose
    /// entries were deleted since, which only costs a no-op whiteout.
    dirs: HashSet<String>,
}

impl Merger {
    pub fn new() -> Merger {
        Merger::default()
    }

    /// Whether the layers applied so far put entries under `path`. When the
    /// next layer has a non-directory entry at such a path that is not
    /// wanted, the caller adds `path` to that layer's whiteouts: a file or a
    /// symlink in place of a directory hides what was in it. A lookup, no
    /// allocation.
    pub fn has_files_under(&self, path: &str) -> bool {
        self.dirs.contains(path)
    }

    pub fn apply(&mut self, layer: Layer) {
        for dir in &layer.opaque_dirs {
            self.remove_ancestors(dir);
            self.remove(dir);
            self.remove_under(dir);
        }
        for path in &layer.whiteouts {
            self.remove_ancestors(path);
            self.remove(path);
            self.remove_under(path);
        }
        for (path, bytes) in layer.files {
            self.insert(path, Entry::File(bytes));
        }
        for (path, target) in layer.symlinks {
            self.insert(path, Entry::Symlink(target));
        }
    }

    /// The files of the image, with each symlink replaced by the bytes of
    /// the file it points to (followed through other recorded symlinks);
    /// symlinks that point nowhere known are dropped. Symlinked directories
    /// along a target's path are not followed.
    pub fn finish(self) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        let mut links = BTreeMap::new();
        for (path, entry) in self.entries {
            match entry {
                Entry::File(bytes) => {
                    files.insert(path, bytes);
                }
                Entry::Symlink(target) => {
                    links.insert(path, target);
                }
            }
        }
        let mut resolved = Vec::new();
        for (link, target) in &links {
            if let Some(found) = resolve_link(link, target, &links, &files)
                && let Some(bytes) = files.get(&found)
            {
                resolved.push((link.clone(), bytes.clone()));
            }
        }
        files.extend(resolved);
        files
    }

    fn insert(&mut self, path: String, entry: Entry) {
        if path.is_empty() {
            return;
        }
        self.remove_under(&path);
        self.remove_ancestors(&path);
        let mut rest = path.as_str();
        while let Some(i) = rest.rfind('/') {
            rest = &rest[..i];
            if self.dirs.contains(rest) {
                break;
            }
            self.dirs.insert(rest.to_owned());
        }
        self.entries.insert(path, entry);
    }

    fn remove(&mut self, path: &str) {
        self.entries.remove(path);
    }

    /// An entry at a proper prefix of `path` was a file or a symlink; now it
    /// is a directory.
    fn remove_ancestors(&mut self, path: &str) {
        let mut rest = path;
        while let Some(i) = rest.rfind('/') {
            rest = &rest[..i];
            self.entries.remove(rest);
        }
    }

    /// Removes every entry strictly under `dir` (everything for the root).
    fn remove_under(&mut self, dir: &str) {
        if dir.is_empty() {
            self.entries.clear();
            return;
        }
        // Keys under `dir/` sort between `dir/` and `dir0` ('0' follows '/').
        let low = format!("{dir}/");
        let high = format!("{dir}0");
        let doomed: Vec<String> = self
            .entries
            .range(low..high)
            .map(|(k, _)| k.clone())
            .collect();
        for key in doomed {
            self.entries.remove(&key);
        }
    }
}

/// Resolves a symlink target against the link's directory (or the root for
/// absolute targets) into a normalized path, following recorded symlinks
/// up to a bound.
fn resolve_link(
    link: &str,
    target: &str,
    links: &BTreeMap<String, String>,
    files: &BTreeMap<String, Vec<u8>>,
) -> Option<String> {
    let mut link = link.to_owned();
    let mut target = target.to_owned();
    for _ in 0..16 {
        let base = if target.starts_with('/') {
            ""
        } else {
            split_dir(&link).0
        };
        let mut parts: Vec<&str> = Vec::new();
        for part in base.split('/').chain(target.split('/')) {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        let path = parts.join("/");
        if files.contains_key(&path) {
            return Some(path);
        }
        let next = links.get(&path)?.clone();
        link = path;
        target = next;
    }
    None
}

// ---------------------------------------------------------------------------
// Collecting

/// The inventory and every file that could not be read, as a warning that
/// names its path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    pub inventory: Inventory,
    pub warnings: Vec<String>,
}

/// Reads the image's final files (from [`Merger::finish`]; paths that are
/// not [`wanted`] are ignored) into an inventory: packages sorted, exact
/// duplicates removed, the distribution from `etc/os-release`, else
/// `usr/lib/os-release`. If `etc/os-release` is a symlink, its target's
/// bytes must be under `etc/os-release` ([`Merger::finish`] does that when
/// the symlink was recorded). Linear in the size of the files.
pub fn collect(files: &BTreeMap<String, Vec<u8>>) -> Collected {
    let mut packages = Vec::new();
    let mut problems = Vec::new();
    for (path, bytes) in files {
        match wanted(path) {
            None | Some(FileKind::OsRelease) => {}
            Some(FileKind::DpkgStatus) => {
                let (found, errors) = parse_dpkg_status(path, bytes);
                packages.extend(found);
                problems.extend(errors);
            }
            Some(FileKind::PythonMetadata) => match parse_python_metadata(path, bytes) {
                Ok(package) => packages.push(package),
                Err(e) => problems.push(e),
            },
            Some(FileKind::CondaMeta) => match parse_conda_meta(path, bytes) {
                Ok(package) => packages.push(package),
                Err(e) => problems.push(e),
            },
        }
    }
    let mut distro = None;
    for path in OS_RELEASE {
        let Some(bytes) = files.get(path) else {
            continue;
        };
        match parse_os_release(path, bytes) {
            Ok(found) => {
                distro = Some(found);
                break;
            }
            Err(e) => problems.push(e),
        }
    }
    sort_packages(&mut packages);
    Collected {
        inventory: Inventory { distro, packages },
        warnings: problems.iter().map(ToString::to_string).collect(),
    }
}

/// Sorts packages the way an [`Inventory`] keeps them (kind, name, version,
/// path, then the other fields) and removes exact duplicates.
pub fn sort_packages(packages: &mut Vec<Package>) {
    packages.sort_by(|a, b| {
        (a.kind, &a.name, &a.version, &a.path)
            .cmp(&(b.kind, &b.name, &b.version, &b.path))
            .then_with(|| a.cmp(b))
    });
    packages.dedup();
}

// ---------------------------------------------------------------------------
// dpkg

/// One line of a deb822 file, without its line ending.
enum Line<'a> {
    Blank,
    Comment,
    Field { name: &'a [u8], value: &'a [u8] },
    Continuation,
    Malformed,
}

fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let empty = bytes.is_empty();
    body.split(|b| *b == b'\n')
        .filter(move |_| !empty)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

fn classify(line: &[u8]) -> Line<'_> {
    if line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
        return Line::Blank;
    }
    match line[0] {
        b' ' | b'\t' => return Line::Continuation,
        b'#' => return Line::Comment,
        _ => {}
    }
    let Some(colon) = line.iter().position(|b| *b == b':') else {
        return Line::Malformed;
    };
    let name = &line[..colon];
    if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
        return Line::Malformed;
    }
    Line::Field {
        name,
        value: line[colon + 1..].trim_ascii(),
    }
}

const DPKG_FIELDS: [&[u8]; 5] = [
    b"Package",
    b"Status",
    b"Version",
    b"Architecture",
    b"Source",
];

fn compact_dpkg(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() / 8);
    // The same states as the parser's: whether the stanza has had a field,
    // whether a field is open for continuation lines, and whether it is kept.
    let mut seen_field = false;
    let mut field_open = false;
    let mut keep_current = false;
    for line in lines(bytes) {
        let keep = match classify(line) {
            Line::Blank => {
                seen_field = false;
                field_open = false;
                keep_current = false;
                if !out.is_empty() && !out.ends_with(b"\n\n") {
                    out.push(b'\n');
                }
                continue;
            }
            Line::Comment => false,
            Line::Malformed => {
                field_open = false;
                true
            }
            // Without an open field a continuation line is malformed: kept.
            Line::Continuation => !field_open || keep_current,
            Line::Field { name, .. } => {
                field_open = true;
                // The first field of a stanza always stays, so that a stanza
                // without a Package field is still reported.
                keep_current =
                    !seen_field || DPKG_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name));
                seen_field = true;
                keep_current
            }
        };
        if keep {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    out.shrink_to_fit();
    out
}

#[derive(Default)]
struct Stanza<'a> {
    /// Whether the stanza has any field line (not only malformed lines).
    fields: bool,
    package: Option<&'a [u8]>,
    status: Option<&'a [u8]>,
    version: Option<&'a [u8]>,
    architecture: Option<&'a [u8]>,
    source: Option<&'a [u8]>,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// dpkg package states whose files are on disk and configured: `installed`,
/// and the trigger states dpkg counts as installed. `config-files`,
/// `half-installed`, `unpacked` and `half-configured` packages are left out.
const INSTALLED_STATES: [&str; 3] = ["installed", "triggers-pending", "triggers-awaited"];

/// Parses a dpkg status file (or one file of `status.d/`): RFC 822-style
/// stanzas separated by blank lines. Lists the packages whose `Status:`
/// state (third word) is installed; a stanza without `Status:` (distroless
/// `status.d/` files are control files) counts as installed. Problems with
/// single stanzas are returned next to the packages that did parse.
pub fn parse_dpkg_status(path: &str, bytes: &[u8]) -> (Vec<Package>, Vec<InventoryError>) {
    let mut packages = Vec::new();
    let mut errors = Vec::new();
    let mut stanza = Stanza::default();
    // Counted stanzas (with at least one field or malformed line) so far.
    let mut number = 0usize;
    let mut in_stanza = false;
    let mut has_field = false;
    let mut malformed = 0usize;
    let mut first_malformed = 0usize;
    for line in lines(bytes).chain(std::iter::once(&b""[..])) {
        match classify(line) {
            Line::Blank => {
                if in_stanza {
                    finish_stanza(path, number, &stanza, &mut packages, &mut errors);
                }
                stanza = Stanza::default();
                in_stanza = false;
                has_field = false;
            }
            Line::Comment => {}
            Line::Continuation if has_field => {}
            Line::Continuation | Line::Malformed => {
                if !in_stanza {
                    in_stanza = true;
                    number += 1;
                }
                has_field = false;
                malformed += 1;
                if malformed == 1 {
                    first_malformed = number;
                }
            }
            Line::Field { name, value } => {
                if !in_stanza {
                    in_stanza = true;
                    number += 1;
                }
                has_field = true;
                stanza.fields = true;
                let slot = if name.eq_ignore_ascii_case(b"Package") {
                    &mut stanza.package
                } else if name.eq_ignore_ascii_case(b"Status") {
                    &mut stanza.status
                } else if name.eq_ignore_ascii_case(b"Version") {
                    &mut stanza.version
                } else if name.eq_ignore_ascii_case(b"Architecture") {
                    &mut stanza.architecture
                } else if name.eq_ignore_ascii_case(b"Source") {
                    &mut stanza.source
                } else {
                    continue;
                };
                if slot.is_none() {
                    *slot = Some(value);
                }
            }
        }
    }
    if malformed > 0 {
        errors.insert(
            0,
            InventoryError::DpkgMalformedLines {
                path: path.to_owned(),
                count: malformed,
                stanza: first_malformed,
            },
        );
    }
    (packages, errors)
}

fn finish_stanza(
    path: &str,
    number: usize,
    stanza: &Stanza<'_>,
    packages: &mut Vec<Package>,
    errors: &mut Vec<InventoryError>,
) {
    if !stanza.fields {
        // Only malformed lines: already reported as such.
        return;
    }
    let Some(name) = stanza.package.filter(|p| !p.is_empty()) else {
        errors.push(InventoryError::DpkgNoPackage {
            path: path.to_owned(),
            stanza: number,
        });
        return;
    };
    let name = lossy(name);
    if let Some(status) = stanza.status {
        let status = lossy(status);
        let words: Vec<&str> = status.split_ascii_whitespace().collect();
        match words.as_slice() {
            [_want, _flag, state] => {
                if !INSTALLED_STATES.contains(state) {
                    return;
                }
            }
            _ => {
                errors.push(InventoryError::DpkgBadStatus {
                    path: path.to_owned(),
                    stanza: number,
                    package: name,
                    status,
                });
                return;
            }
        }
    }
    let Some(version) = stanza.version.filter(|v| !v.is_empty()) else {
        errors.push(InventoryError::DpkgMissingField {
            path: path.to_owned(),
            stanza: number,
            package: name,
            field: "Version",
        });
        return;
    };
    let version = lossy(version);
    let source = match stanza.source.map(lossy) {
        None => SourcePackage {
            name: name.clone(),
            version: version.clone(),
        },
        Some(field) => match parse_source(&field) {
            Some((src, Some(src_version))) => SourcePackage {
                name: src.to_owned(),
                version: src_version.to_owned(),
            },
            Some((src, None)) => SourcePackage {
                name: src.to_owned(),
                version: version.clone(),
            },
            None => {
                errors.push(InventoryError::DpkgBadSource {
                    path: path.to_owned(),
                    stanza: number,
                    package: name.clone(),
                    source_field: field.clone(),
                });
                SourcePackage {
                    name: name.clone(),
                    version: version.clone(),
                }
            }
        },
    };
    packages.push(Package {
        kind: PackageKind::Deb,
        name,
        version,
        source: Some(source),
        arch: stanza.architecture.map(lossy).unwrap_or_default(),
        license: None,
        path: path.to_owned(),
    });
}

/// `glibc` or `glibc (2.36-9+deb12u4)`.
fn parse_source(field: &str) -> Option<(&str, Option<&str>)> {
    let field = field.trim();
    let (name, rest) = match field.find(char::is_whitespace) {
        Some(i) => (&field[..i], field[i..].trim()),
        None => (field, ""),
    };
    if name.is_empty() || name.contains(['(', ')']) {
        return None;
    }
    if rest.is_empty() {
        return Some((name, None));
    }
    let version = rest.strip_prefix('(')?.strip_suffix(')')?.trim();
    if version.is_empty() || version.contains(char::is_whitespace) {
        return None;
    }
    Some((name, Some(version)))
}

// ---------------------------------------------------------------------------
// Python

/// The header section of core metadata: everything before the first blank
/// line (the body is the long description).
fn python_header(bytes: &[u8]) -> &[u8] {
    let mut start = 0;
    while start < bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| start + i);
        let line = &bytes[start..end];
        if line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            return &bytes[..start];
        }
        start = end + 1;
    }
    bytes
}

/// Parses Python core metadata (`METADATA`, `PKG-INFO`, an `.egg-info`
/// file): email-style headers up to the first blank line, CRLF and non-UTF-8
/// bytes tolerated. `Name` and `Version` are required; the license is
/// `License-Expression`, else the first line of `License` unless it is
/// `UNKNOWN`.
pub fn parse_python_metadata(path: &str, bytes: &[u8]) -> Result<Package, InventoryError> {
    let header = python_header(bytes);
    let header = header.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(header);
    let text = String::from_utf8_lossy(header);
    let mut name = None;
    let mut version = None;
    let mut expression = None;
    let mut license: Option<String> = None;
    // The License field's value may start on a continuation line.
    let mut license_open = false;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if license_open {
                let l = line.trim();
                if !l.is_empty() {
                    license = Some(l.to_owned());
                    license_open = false;
                }
            }
            continue;
        }
        license_open = false;
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        let value = value.trim();
        if key.eq_ignore_ascii_case("Name") {
            name.get_or_insert(value);
        } else if key.eq_ignore_ascii_case("Version") {
            version.get_or_insert(value);
        } else if key.eq_ignore_ascii_case("License-Expression") {
            expression.get_or_insert(value);
        } else if key.eq_ignore_ascii_case("License") && license.is_none() {
            if value.is_empty() {
                license_open = true;
            } else {
                license = Some(value.to_owned());
            }
        }
    }
    let missing = |field| InventoryError::PythonMissingField {
        path: path.to_owned(),
        field,
    };
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| missing("Name"))?;
    let version = version
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing("Version"))?;
    let license = expression
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .or(license)
        .filter(|l| !l.eq_ignore_ascii_case("UNKNOWN"));
    Ok(Package {
        kind: PackageKind::Pypi,
        name: name.to_owned(),
        version: version.to_owned(),
        source: None,
        arch: String::new(),
        license,
        path: path.to_owned(),
    })
}

// ---------------------------------------------------------------------------
// conda

/// The fields of a conda-meta record the inventory reads (conda writes many
/// more: files, paths_data, depends, …).
#[derive(Debug, Serialize, Deserialize)]
struct CondaRecord {
    name: String,
    version: String,
    #[serde(default)]
    subdir: Option<String>,
    #[serde(default)]
    license: Option<String>,
}

/// Parses a conda-meta record: `name` and `version` (required), `subdir`
/// (the package's platform, as its arch) and `license`.
pub fn parse_conda_meta(path: &str, bytes: &[u8]) -> Result<Package, InventoryError> {
    let record: CondaRecord =
        serde_json::from_slice(bytes).map_err(|e| InventoryError::CondaRecord {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    let empty = |field: &str| InventoryError::CondaRecord {
        path: path.to_owned(),
        message: format!("`{field}` is empty"),
    };
    if record.name.is_empty() {
        return Err(empty("name"));
    }
    if record.version.is_empty() {
        return Err(empty("version"));
    }
    Ok(Package {
        kind: PackageKind::Conda,
        name: record.name,
        version: record.version,
        source: None,
        arch: record.subdir.unwrap_or_default(),
        license: record.license.filter(|l| !l.trim().is_empty()),
        path: path.to_owned(),
    })
}

// ---------------------------------------------------------------------------
// os-release

/// Parses os-release (`KEY=value` lines, values quoted or not, with shell
/// escapes): `ID`, `VERSION_ID` and `VERSION_CODENAME` (else
/// `UBUNTU_CODENAME`). `ID` is required.
pub fn parse_os_release(path: &str, bytes: &[u8]) -> Result<Distro, InventoryError> {
    let text = String::from_utf8_lossy(bytes);
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if matches!(
            key,
            "ID" | "VERSION_ID" | "VERSION_CODENAME" | "UBUNTU_CODENAME"
        ) {
            vars.insert(key, shell_word(value));
        }
    }
    let id = vars
        .remove("ID")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| InventoryError::OsReleaseNoId {
            path: path.to_owned(),
        })?;
    let codename = vars
        .remove("VERSION_CODENAME")
        .filter(|c| !c.is_empty())
        .or_else(|| vars.remove("UBUNTU_CODENAME"))
        .unwrap_or_default();
    Ok(Distro {
        id: id.to_ascii_lowercase(),
        version_id: vars.remove("VERSION_ID").unwrap_or_default(),
        codename,
    })
}

/// The first shell word of `value`: double quotes (with `\"`, `\\`, `\$`,
/// `` \` `` escapes), single quotes, backslash escapes outside quotes.
fn shell_word(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.trim_start().chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                            Some('\n') | None => {}
                            Some(e) => {
                                out.push('\\');
                                out.push(e);
                            }
                        },
                        c => out.push(c),
                    }
                }
            }
            '\'' => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    out.push(c);
                }
            }
            '\\' => {
                if let Some(e) = chars.next() {
                    out.push(e);
                }
            }
            c if c.is_whitespace() => break,
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // -- wanted ----------------------------------------------------------

    #[test]
    fn wanted_table() {
        use FileKind::*;
        let table: &[(&str, Option<FileKind>)] = &[
            ("etc/os-release", Some(OsRelease)),
            ("usr/lib/os-release", Some(OsRelease)),
            ("opt/etc/os-release", None),
            ("etc/os-release.d", None),
            ("var/lib/dpkg/status", Some(DpkgStatus)),
            ("var/lib/dpkg/status-old", None),
            ("var/lib/dpkg/status.d/libc6", Some(DpkgStatus)),
            ("var/lib/dpkg/status.d/base", Some(DpkgStatus)),
            ("var/lib/dpkg/status.d/libc6.md5sums", None),
            ("var/lib/dpkg/status.d/nested/x", None),
            ("var/lib/dpkg/info/libc6.list", None),
            ("srv/var/lib/dpkg/status", None),
            (
                "usr/lib/python3/dist-packages/requests-2.32.3.dist-info/METADATA",
                Some(PythonMetadata),
            ),
            (
                "opt/conda/pkgs/x/site-packages/a.dist-info/METADATA",
                Some(PythonMetadata),
            ),
            ("a.dist-info/METADATA", Some(PythonMetadata)),
            ("usr/lib/x.dist-info/RECORD", None),
            ("usr/lib/x/METADATA", None),
            ("METADATA", None),
            (
                "usr/lib/python3/dist-packages/six-1.16.0.egg-info",
                Some(PythonMetadata),
            ),
            (
                "usr/lib/python3/dist-packages/six-1.16.0.egg-info/PKG-INFO",
                Some(PythonMetadata),
            ),
            (
                "site/foo-1.0-py3.egg/EGG-INFO/PKG-INFO",
                Some(PythonMetadata),
            ),
            ("site/foo-1.0.tar/PKG-INFO", None),
            ("site/foo.egg", None),
            (
                "opt/conda/conda-meta/openssl-3.0.13-h7f8727e_0.json",
                Some(CondaMeta),
            ),
            (
                "opt/conda/envs/a/conda-meta/pip-24.0-py_0.json",
                Some(CondaMeta),
            ),
            ("conda-meta/x.json", Some(CondaMeta)),
            ("opt/conda/conda-meta/history", None),
            ("opt/conda/conda-meta/sub/x.json", None),
            ("opt/conda/pkgs/x/info/index.json", None),
            ("", None),
            ("etc/", None),
        ];
        for (path, expected) in table {
            assert_eq!(wanted(path), *expected, "{path}");
        }
    }

    #[test]
    fn normalize_strips_tar_prefixes() {
        for (input, expected) in [
            ("./etc/os-release", "etc/os-release"),
            ("/etc/os-release", "etc/os-release"),
            ("././/usr/lib/", "usr/lib"),
            ("usr", "usr"),
            ("./", ""),
            (".", ""),
        ] {
            assert_eq!(normalize(input), expected, "{input}");
        }
    }

    #[test]
    fn whiteout_entries_are_recognized() {
        let mut layer = Layer::default();
        assert!(layer.record_whiteout("usr/lib/.wh.python3"));
        assert!(layer.record_whiteout(".wh.opt"));
        assert!(layer.record_whiteout("opt/conda/.wh..wh..opq"));
        assert!(layer.record_whiteout(".wh..wh..opq"));
        assert!(layer.record_whiteout("x/.wh..wh.plnk"));
        assert!(!layer.record_whiteout("usr/lib/python3"));
        assert!(!layer.record_whiteout("usr/.whatever"));
        assert_eq!(layer.whiteouts, ["usr/lib/python3", "opt"]);
        assert_eq!(layer.opaque_dirs, ["opt/conda", ""]);
    }

    // -- merger ----------------------------------------------------------

    fn layer(files: &[&str], whiteouts: &[&str], opaque: &[&str]) -> Layer {
        Layer {
            files: files
                .iter()
                .map(|f| (f.to_string(), format!("{f} v{}", files.len()).into_bytes()))
                .collect(),
            whiteouts: whiteouts.iter().map(ToString::to_string).collect(),
            opaque_dirs: opaque.iter().map(ToString::to_string).collect(),
            symlinks: vec![],
        }
    }

    fn merged(layers: Vec<Layer>) -> Vec<String> {
        let mut m = Merger::new();
        for l in layers {
            m.apply(l);
        }
        m.finish().into_keys().collect()
    }

    #[test]
    fn merger_table() {
        struct Case {
            name: &'static str,
            layers: Vec<Layer>,
            expect: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "whiteout of a file",
                layers: vec![
                    layer(
                        &["a/x.dist-info/METADATA", "a/y.dist-info/METADATA"],
                        &[],
                        &[],
                    ),
                    layer(&[], &["a/x.dist-info/METADATA"], &[]),
                ],
                expect: &["a/y.dist-info/METADATA"],
            },
            Case {
                name: "whiteout of a directory",
                layers: vec![
                    layer(
                        &[
                            "a/x.dist-info/METADATA",
                            "a/x.dist-info2/METADATA",
                            "a/x.dist-info.json",
                        ],
                        &[],
                        &[],
                    ),
                    layer(&[], &["a/x.dist-info"], &[]),
                ],
                expect: &["a/x.dist-info.json", "a/x.dist-info2/METADATA"],
            },
            Case {
                name: "opaque directory hides lower entries",
                layers: vec![
                    layer(
                        &[
                            "opt/conda/conda-meta/a.json",
                            "opt/condax/b.json",
                            "opt/c.json",
                        ],
                        &[],
                        &[],
                    ),
                    layer(&[], &[], &["opt/conda"]),
                ],
                expect: &["opt/c.json", "opt/condax/b.json"],
            },
            Case {
                name: "re-adding a file after its whiteout",
                layers: vec![
                    layer(&["var/lib/dpkg/status"], &[], &[]),
                    layer(&[], &["var/lib/dpkg/status"], &[]),
                    layer(&["var/lib/dpkg/status"], &[], &[]),
                ],
                expect: &["var/lib/dpkg/status"],
            },
            Case {
                name: "same-layer opaque directory and new file",
                layers: vec![
                    layer(&["opt/conda/conda-meta/old.json"], &[], &[]),
                    layer(&["opt/conda/conda-meta/new.json"], &[], &["opt/conda"]),
                ],
                expect: &["opt/conda/conda-meta/new.json"],
            },
            Case {
                name: "same-layer whiteout and file of the same path",
                layers: vec![
                    layer(&["a.egg-info"], &[], &[]),
                    layer(&["a.egg-info"], &["a.egg-info"], &[]),
                ],
                expect: &["a.egg-info"],
            },
            Case {
                name: "whiteout in a later layer hides a file re-added earlier",
                layers: vec![
                    layer(&["a.egg-info"], &[], &[]),
                    layer(&["a.egg-info"], &[], &[]),
                    layer(&[], &["a.egg-info"], &[]),
                ],
                expect: &[],
            },
            Case {
                name: "a file replaces a directory",
                layers: vec![
                    layer(&["site/x.egg-info/PKG-INFO", "site/y.egg-info"], &[], &[]),
                    layer(&["site/x.egg-info"], &[], &[]),
                ],
                expect: &["site/x.egg-info", "site/y.egg-info"],
            },
            Case {
                name: "a directory replaces a file",
                layers: vec![
                    layer(&["site/x.egg-info"], &[], &[]),
                    layer(&["site/x.egg-info/PKG-INFO"], &[], &[]),
                ],
                expect: &["site/x.egg-info/PKG-INFO"],
            },
            Case {
                name: "root opaque directory",
                layers: vec![
                    layer(&["etc/os-release", "var/lib/dpkg/status"], &[], &[]),
                    layer(&["etc/os-release"], &[], &[""]),
                ],
                expect: &["etc/os-release"],
            },
            Case {
                name: "whiteout of a parent directory",
                layers: vec![
                    layer(
                        &["opt/conda/conda-meta/a.json", "opt/other/conda-meta/b.json"],
                        &[],
                        &[],
                    ),
                    layer(&[], &["opt/conda"], &[]),
                ],
                expect: &["opt/other/conda-meta/b.json"],
            },
        ];
        for case in cases {
            let got = merged(case.layers);
            assert_eq!(got, case.expect, "{}", case.name);
        }
    }

    #[test]
    fn later_layer_replaces_bytes() {
        let mut m = Merger::new();
        m.apply(Layer {
            files: vec![("etc/os-release".into(), b"ID=debian\n".to_vec())],
            ..Layer::default()
        });
        m.apply(Layer {
            files: vec![("etc/os-release".into(), b"ID=ubuntu\n".to_vec())],
            ..Layer::default()
        });
        assert_eq!(m.finish()["etc/os-release"], b"ID=ubuntu\n");
    }

    #[test]
    fn unwanted_file_over_a_directory_is_recorded_as_a_whiteout() {
        let mut m = Merger::new();
        let mut lower = Layer::default();
        assert!(lower.add_file(
            "opt/env/lib/x.dist-info/METADATA",
            b"Name: x\nVersion: 1\n".to_vec()
        ));
        m.apply(lower);
        assert!(m.has_files_under("opt/env"));
        assert!(m.has_files_under("opt"));
        assert!(!m.has_files_under("opt/env/lib/x.dist-info/METADATA"));
        assert!(!m.has_files_under("srv"));
        // The next layer replaces opt/env with a symlink the caller does not keep.
        let mut upper = Layer::default();
        if m.has_files_under("opt/env") {
            upper.whiteouts.push("opt/env".into());
        }
        m.apply(upper);
        assert!(m.finish().is_empty());
    }

    #[test]
    fn symlinked_os_release_is_resolved() {
        let mut m = Merger::new();
        m.apply(Layer {
            files: vec![(
                "usr/lib/os-release".into(),
                b"ID=debian\nVERSION_ID=\"12\"\n".to_vec(),
            )],
            symlinks: vec![("etc/os-release".into(), "../usr/lib/os-release".into())],
            ..Layer::default()
        });
        let files = m.finish();
        assert_eq!(files["etc/os-release"], files["usr/lib/os-release"]);

        // Absolute targets, chains, and links that point nowhere.
        let mut m = Merger::new();
        m.apply(Layer {
            files: vec![("usr/lib/os-release".into(), b"ID=ubuntu\n".to_vec())],
            symlinks: vec![
                ("etc/os-release".into(), "/etc/alt/os-release".into()),
                (
                    "etc/alt/os-release".into(),
                    "./../../usr/lib/./os-release".into(),
                ),
                ("etc/dangling".into(), "/nowhere".into()),
                ("etc/loop-a".into(), "loop-b".into()),
                ("etc/loop-b".into(), "loop-a".into()),
            ],
            ..Layer::default()
        });
        let files = m.finish();
        assert_eq!(files["etc/os-release"], b"ID=ubuntu\n");
        assert!(!files.contains_key("etc/dangling"));
        assert!(!files.contains_key("etc/loop-a"));

        // A later layer's whiteout of the link leaves the real file.
        let mut m = Merger::new();
        m.apply(Layer {
            files: vec![("usr/lib/os-release".into(), b"ID=debian\n".to_vec())],
            symlinks: vec![("etc/os-release".into(), "../usr/lib/os-release".into())],
            ..Layer::default()
        });
        m.apply(Layer {
            whiteouts: vec!["etc/os-release".into()],
            ..Layer::default()
        });
        assert_eq!(
            m.finish().into_keys().collect::<Vec<_>>(),
            ["usr/lib/os-release"]
        );
    }

    // -- dpkg ------------------------------------------------------------

    const DPKG: &str = "\
Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 12986
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Replaces: libc6-amd64
Depends: libgcc-s1
Recommends: libidn2-0 (>= 2.0.5~)
Conffiles:
 /etc/ld.so.conf.d/x86_64-linux-gnu.conf d4e7a7b88a71b5ffd9e2644e71a0cfab
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.
Homepage: https://www.gnu.org/software/libc/libc.html

Package: login
Status: install ok installed
Priority: required
Essential: yes
Architecture: amd64
Source: shadow (1:4.13+dfsg1-1)
Version: 1:4.13+dfsg1-1+b1
Description: system login tools

Package: vim-tiny
Status: deinstall ok config-files
Priority: important
Architecture: amd64
Source: vim
Version: 2:9.0.1378-2
Config-Version: 2:9.0.1378-2
Description: Vi IMproved - enhanced vi editor - compact version

Package: tzdata
Status: install ok half-configured
Architecture: all
Version: 2024a-0+deb12u1

Package: gcc-12-base
Status: install ok triggers-pending
Architecture: amd64
Source: gcc-12
Version: 12.2.0-14
";

    fn deb(name: &str, version: &str, src: (&str, &str), arch: &str) -> Package {
        Package {
            kind: PackageKind::Deb,
            name: name.into(),
            version: version.into(),
            source: Some(SourcePackage {
                name: src.0.into(),
                version: src.1.into(),
            }),
            arch: arch.into(),
            license: None,
            path: DPKG_STATUS.into(),
        }
    }

    #[test]
    fn dpkg_status_lists_installed_packages() {
        let (packages, errors) = parse_dpkg_status(DPKG_STATUS, DPKG.as_bytes());
        assert_eq!(errors, []);
        assert_eq!(
            packages,
            [
                deb(
                    "libc6",
                    "2.36-9+deb12u4",
                    ("glibc", "2.36-9+deb12u4"),
                    "amd64"
                ),
                deb(
                    "login",
                    "1:4.13+dfsg1-1+b1",
                    ("shadow", "1:4.13+dfsg1-1"),
                    "amd64"
                ),
                deb("gcc-12-base", "12.2.0-14", ("gcc-12", "12.2.0-14"), "amd64"),
            ]
        );
    }

    #[test]
    fn dpkg_half_installed_and_removed_packages_are_left_out() {
        for status in [
            "deinstall ok config-files",
            "purge ok not-installed",
            "install ok half-installed",
            "install ok unpacked",
            "install ok half-configured",
        ] {
            let text = format!("Package: a\nStatus: {status}\nVersion: 1\n");
            let (packages, errors) = parse_dpkg_status(DPKG_STATUS, text.as_bytes());
            assert_eq!((packages.len(), errors.len()), (0, 0), "{status}");
        }
        for status in [
            "install ok installed",
            "hold ok installed",
            "install ok triggers-awaited",
        ] {
            let text = format!("Package: a\nStatus: {status}\nVersion: 1\n");
            let (packages, _) = parse_dpkg_status(DPKG_STATUS, text.as_bytes());
            assert_eq!(packages.len(), 1, "{status}");
        }
    }

    #[test]
    fn dpkg_status_d_without_status_field_counts_as_installed() {
        // As distroless writes them: one control stanza per file, no Status.
        let text = "Package: libssl1.1\nSource: openssl\nVersion: 1.1.0k-1~deb9u1\nArchitecture: amd64\nMaintainer: Debian OpenSSL Team\n";
        let path = "var/lib/dpkg/status.d/libssl1.1";
        let (packages, errors) = parse_dpkg_status(path, text.as_bytes());
        assert_eq!(errors, []);
        let mut expected = deb(
            "libssl1.1",
            "1.1.0k-1~deb9u1",
            ("openssl", "1.1.0k-1~deb9u1"),
            "amd64",
        );
        expected.path = path.into();
        assert_eq!(packages, [expected]);
    }

    #[test]
    fn dpkg_crlf_and_field_case_and_continuations() {
        let text = "package: a\r\nstatus: install ok installed\r\nversion: 1.0-1\r\nDescription: x\r\n y\r\n .\r\n\r\n\r\nPackage: b\r\nVersion: 2\r\n";
        let (packages, errors) = parse_dpkg_status(DPKG_STATUS, text.as_bytes());
        assert_eq!(errors, []);
        let names: Vec<_> = packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.arch.as_str()))
            .collect();
        assert_eq!(names, [("a", "1.0-1", ""), ("b", "2", "")]);
    }

    #[test]
    fn dpkg_problems_are_reported_per_stanza() {
        let text = "\
Package: ok
Version: 1

Status: install ok installed
Version: 2

Package: noversion
Status: install ok installed

Package: badstatus
Status: installed
Version: 3

Package: badsource
Source: (oops
Version: 4
this line is garbage
 and so is this continuation
";
        let (packages, errors) = parse_dpkg_status(DPKG_STATUS, text.as_bytes());
        let names: Vec<_> = packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ok", "badsource"]);
        assert_eq!(
            packages[1].source,
            Some(SourcePackage {
                name: "badsource".into(),
                version: "4".into()
            })
        );
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 5, "{messages:#?}");
        assert!(messages[0].contains("2 line(s)") && messages[0].contains("stanza 5"));
        assert!(messages[1].contains("stanza 2 has no Package field"));
        assert!(messages[2].contains("package noversion (stanza 3) has no Version"));
        assert!(messages[3].contains("package badstatus") && messages[3].contains("\"installed\""));
        assert!(messages[4].contains("Source field \"(oops\""));
        for m in &messages {
            assert!(m.starts_with("var/lib/dpkg/status: "), "{m}");
        }
    }

    #[test]
    fn dpkg_source_field_forms() {
        for (field, expected) in [
            ("glibc", Some(("glibc", None))),
            ("glibc (2.36-9)", Some(("glibc", Some("2.36-9")))),
            ("  shadow   ( 1:4.13 )  ", Some(("shadow", Some("1:4.13")))),
            ("glibc (2.36", None),
            ("glibc 2.36", None),
            ("(2.36)", None),
            ("", None),
        ] {
            assert_eq!(parse_source(field), expected, "{field:?}");
        }
    }

    // -- Python ----------------------------------------------------------

    const REQUESTS_METADATA: &str = "Metadata-Version: 2.1\r\n\
Name: requests\r\n\
Version: 2.32.3\r\n\
Summary: Python HTTP for Humans.\r\n\
Home-page: https://requests.readthedocs.io\r\n\
Author: Kenneth Reitz\r\n\
Author-email: me@kennethreitz.org\r\n\
License: Apache-2.0\r\n\
Project-URL: Source, https://github.com/psf/requests\r\n\
Classifier: License :: OSI Approved :: Apache Software License\r\n\
Requires-Python: >=3.8\r\n\
Description-Content-Type: text/markdown\r\n\
License-File: LICENSE\r\n\
Requires-Dist: charset-normalizer <4,>=2\r\n\
Requires-Dist: idna <4,>=2.5\r\n\
Provides-Extra: socks\r\n\
\r\n\
# Requests\r\n\
\r\n\
Version: 9.9.9 is not a header here\r\n";

    fn pypi(name: &str, version: &str, license: Option<&str>, path: &str) -> Package {
        Package {
            kind: PackageKind::Pypi,
            name: name.into(),
            version: version.into(),
            source: None,
            arch: String::new(),
            license: license.map(Into::into),
            path: path.into(),
        }
    }

    #[test]
    fn python_metadata_table() {
        let p = "x.dist-info/METADATA";
        /// Input, then (name, version, license) or the missing field.
        type Case<'a> = (
            &'a [u8],
            Result<(&'a str, &'a str, Option<&'a str>), &'a str>,
        );
        let cases: &[Case] = &[
            (
                REQUESTS_METADATA.as_bytes(),
                Ok(("requests", "2.32.3", Some("Apache-2.0"))),
            ),
            (
                b"Metadata-Version: 2.4\nName: Flask_Login\nVersion: 0.6.3\nLicense-Expression: MIT\nLicense: something else\n",
                Ok(("Flask_Login", "0.6.3", Some("MIT"))),
            ),
            (
                b"Name: six\nVersion: 1.16.0\nLicense: UNKNOWN\n",
                Ok(("six", "1.16.0", None)),
            ),
            (
                b"Name: numpy\nVersion: 1.26.4\nLicense: Copyright (c) 2005-2023, NumPy Developers.\n        All rights reserved.\n",
                Ok(("numpy", "1.26.4", Some("Copyright (c) 2005-2023, NumPy Developers."))),
            ),
            (
                b"Name: x\nVersion: 1\nLicense:\n        BSD 3-Clause\n",
                Ok(("x", "1", Some("BSD 3-Clause"))),
            ),
            (
                b"\xEF\xBB\xBFName: caf\xE9\nVersion: 1.0\n",
                Ok(("caf\u{FFFD}", "1.0", None)),
            ),
            (b"Name: nover\nSummary: x\n\nVersion: 1\n", Err("Version")),
            (b"Version: 1\n", Err("Name")),
            (b"Name: \nVersion: 1\n", Err("Name")),
            (b"\x00\x01\x02garbage", Err("Name")),
            (b"", Err("Name")),
        ];
        for (input, expected) in cases {
            let got = parse_python_metadata(p, input);
            match expected {
                Ok((name, version, license)) => {
                    assert_eq!(got, Ok(pypi(name, version, *license, p)), "{input:?}")
                }
                Err(field) => assert_eq!(
                    got,
                    Err(InventoryError::PythonMissingField {
                        path: p.into(),
                        field
                    }),
                    "{input:?}"
                ),
            }
        }
    }

    #[test]
    fn compacted_python_metadata_keeps_only_the_header() {
        let bytes = REQUESTS_METADATA.as_bytes().to_vec();
        let compacted = compact(FileKind::PythonMetadata, bytes.clone());
        assert!(compacted.len() < bytes.len());
        assert!(!String::from_utf8_lossy(&compacted).contains("# Requests"));
        assert_eq!(
            parse_python_metadata("a", &compacted),
            parse_python_metadata("a", &bytes)
        );
    }

    // -- conda -----------------------------------------------------------

    /// Trimmed from a record conda 24 wrote (`files` and `paths_data` cut short).
    const CONDA_OPENSSL: &str = r#"{
  "build": "h7f8727e_0",
  "build_number": 0,
  "channel": "https://repo.anaconda.com/pkgs/main/linux-64",
  "constrains": [],
  "depends": ["ca-certificates", "libgcc-ng >=7.5.0"],
  "extracted_package_dir": "/opt/conda/pkgs/openssl-1.1.1q-h7f8727e_0",
  "features": "",
  "files": ["bin/c_rehash", "bin/openssl", "include/openssl/aes.h"],
  "fn": "openssl-1.1.1q-h7f8727e_0.conda",
  "license": "OpenSSL",
  "link": {"source": "/opt/conda/pkgs/openssl-1.1.1q-h7f8727e_0", "type": 1},
  "md5": "2ac47797afee2ece8d339c18b095b8d8",
  "name": "openssl",
  "package_tarball_full_path": "/opt/conda/pkgs/openssl-1.1.1q-h7f8727e_0.conda",
  "paths_data": {"paths": [{"_path": "bin/c_rehash", "path_type": "hardlink", "sha256": "x", "size_in_bytes": 6646}], "paths_version": 1},
  "requested_spec": "None",
  "sha256": "6c4b1b8e5b1ad8c4e4e6e8b3b8e6f1ed1d4e4d3b2ff7b4b6d83ad7c8b3b0d57c",
  "size": 2635306,
  "subdir": "linux-64",
  "timestamp": 1657024533519,
  "track_features": "",
  "url": "https://repo.anaconda.com/pkgs/main/linux-64/openssl-1.1.1q-h7f8727e_0.conda",
  "version": "1.1.1q"
}"#;

    #[test]
    fn conda_meta_table() {
        let path = "opt/conda/conda-meta/openssl-1.1.1q-h7f8727e_0.json";
        assert_eq!(
            parse_conda_meta(path, CONDA_OPENSSL.as_bytes()),
            Ok(Package {
                kind: PackageKind::Conda,
                name: "openssl".into(),
                version: "1.1.1q".into(),
                source: None,
                arch: "linux-64".into(),
                license: Some("OpenSSL".into()),
                path: path.into(),
            })
        );
        let ok = parse_conda_meta(
            path,
            br#"{"name":"_libgcc_mutex","version":"0.1","license":null}"#,
        );
        assert_eq!(ok.map(|p| (p.arch, p.license)), Ok((String::new(), None)));
        for (input, message) in [
            (&br#"{"version":"1"}"#[..], "missing field `name`"),
            (br#"{"name":"a","version":""}"#, "`version` is empty"),
            (br#"{"name":"a","version":1}"#, "invalid type"),
            (br#"{"name":"a""#, "EOF"),
            (b"\xff\xfe", "expected value"),
        ] {
            match parse_conda_meta(path, input) {
                Err(InventoryError::CondaRecord {
                    path: p,
                    message: m,
                }) => {
                    assert_eq!(p, path);
                    assert!(m.contains(message), "{m} should mention {message}");
                }
                other => panic!("{input:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn compacted_conda_record_is_small_and_equivalent() {
        let bytes = CONDA_OPENSSL.as_bytes().to_vec();
        let compacted = compact(FileKind::CondaMeta, bytes.clone());
        assert!(
            compacted.len() < 120,
            "{}",
            String::from_utf8_lossy(&compacted)
        );
        assert_eq!(
            parse_conda_meta("p", &compacted),
            parse_conda_meta("p", &bytes)
        );
        // Unreadable records stay as they are, so the warning is the same.
        let broken = b"{\"name\": 1}".to_vec();
        assert_eq!(compact(FileKind::CondaMeta, broken.clone()), broken);
    }

    // -- os-release ------------------------------------------------------

    #[test]
    fn os_release_table() {
        /// Text, then (id, version_id, codename) or none for a missing ID.
        type Case<'a> = (&'a str, Option<(&'a str, &'a str, &'a str)>);
        let cases: &[Case] = &[
            (
                "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\nHOME_URL=\"https://www.debian.org/\"\n",
                Some(("debian", "12", "bookworm")),
            ),
            (
                "NAME=\"Ubuntu\"\nVERSION=\"22.04.4 LTS (Jammy Jellyfish)\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"22.04\"\nUBUNTU_CODENAME=jammy\n",
                Some(("ubuntu", "22.04", "jammy")),
            ),
            (
                "PRETTY_NAME=\"Debian GNU/Linux trixie/sid\"\nID=debian\nVERSION_CODENAME=trixie\n",
                Some(("debian", "", "trixie")),
            ),
            (
                "# comment\n  ID='my distro'  \nVERSION_ID=\"1\\\"2\\\\3\\$\"\nVERSION_CODENAME=a\\ b # trailing\n",
                Some(("my distro", "1\"2\\3$", "a b")),
            ),
            (
                "ID=\"Fedora\"\r\nVERSION_ID=40\r\n",
                Some(("fedora", "40", "")),
            ),
            ("NAME=nothing\n", None),
            ("ID=\n", None),
            ("\u{0}\u{1}", None),
        ];
        for (text, expected) in cases {
            let got = parse_os_release("etc/os-release", text.as_bytes());
            let expected = expected.map(|(id, v, c)| Distro {
                id: id.into(),
                version_id: v.into(),
                codename: c.into(),
            });
            match expected {
                Some(d) => assert_eq!(got, Ok(d), "{text:?}"),
                None => assert_eq!(
                    got,
                    Err(InventoryError::OsReleaseNoId {
                        path: "etc/os-release".into()
                    }),
                    "{text:?}"
                ),
            }
        }
    }

    // -- collect ---------------------------------------------------------

    fn files(entries: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        entries
            .iter()
            .map(|(p, b)| (p.to_string(), b.to_vec()))
            .collect()
    }

    #[test]
    fn collect_reads_every_kind_and_sorts() {
        let got = collect(&files(&[
            (
                "etc/os-release",
                b"ID=ubuntu\nVERSION_ID=\"22.04\"\nVERSION_CODENAME=jammy\n",
            ),
            ("usr/lib/os-release", b"ID=debian\n"),
            (DPKG_STATUS, DPKG.as_bytes()),
            (
                "opt/conda/conda-meta/openssl-1.1.1q-h7f8727e_0.json",
                CONDA_OPENSSL.as_bytes(),
            ),
            (
                "opt/conda/lib/python3.11/site-packages/requests-2.32.3.dist-info/METADATA",
                REQUESTS_METADATA.as_bytes(),
            ),
            (
                "usr/lib/python3/dist-packages/requests-2.32.3.egg-info",
                b"Name: requests\nVersion: 2.32.3\n",
            ),
            ("srv/ignored.txt", b"not wanted"),
        ]));
        assert_eq!(got.warnings, Vec::<String>::new());
        assert_eq!(
            got.inventory.distro,
            Some(Distro {
                id: "ubuntu".into(),
                version_id: "22.04".into(),
                codename: "jammy".into()
            })
        );
        let summary: Vec<_> = got
            .inventory
            .packages
            .iter()
            .map(|p| format!("{} {} {} {}", p.kind, p.name, p.version, p.path))
            .collect();
        assert_eq!(
            summary,
            [
                "deb gcc-12-base 12.2.0-14 var/lib/dpkg/status",
                "deb libc6 2.36-9+deb12u4 var/lib/dpkg/status",
                "deb login 1:4.13+dfsg1-1+b1 var/lib/dpkg/status",
                "pypi requests 2.32.3 opt/conda/lib/python3.11/site-packages/requests-2.32.3.dist-info/METADATA",
                "pypi requests 2.32.3 usr/lib/python3/dist-packages/requests-2.32.3.egg-info",
                "conda openssl 1.1.1q opt/conda/conda-meta/openssl-1.1.1q-h7f8727e_0.json",
            ]
        );
    }

    #[test]
    fn collect_removes_exact_duplicates() {
        let text = "Package: a\nVersion: 1\n\nPackage: a\nVersion: 1\n\nPackage: a\nVersion: 1\nArchitecture: i386\n";
        let got = collect(&files(&[(DPKG_STATUS, text.as_bytes())]));
        let archs: Vec<_> = got
            .inventory
            .packages
            .iter()
            .map(|p| p.arch.as_str())
            .collect();
        assert_eq!(archs, ["", "i386"]);
    }

    #[test]
    fn collect_warns_for_unreadable_files_by_path() {
        let got = collect(&files(&[
            ("etc/os-release", b"NAME=x\n"),
            ("usr/lib/os-release", b"ID=debian\nVERSION_ID=\"12\"\n"),
            (
                "a/b.dist-info/METADATA",
                b"Metadata-Version: 2.1\nName: b\n",
            ),
            ("opt/conda/conda-meta/c.json", b"{"),
            ("a/ok.dist-info/METADATA", b"Name: ok\nVersion: 1\n"),
        ]));
        assert_eq!(
            got.inventory.distro.map(|d| d.version_id),
            Some("12".into())
        );
        assert_eq!(got.inventory.packages.len(), 1);
        assert_eq!(got.warnings.len(), 3, "{:#?}", got.warnings);
        assert!(
            got.warnings[0].starts_with("a/b.dist-info/METADATA: ")
                && got.warnings[0].contains("Version")
        );
        assert!(got.warnings[1].starts_with("opt/conda/conda-meta/c.json: "));
        assert!(got.warnings[2].starts_with("etc/os-release: "));
    }

    #[test]
    fn layers_to_inventory_end_to_end() {
        // Base: Debian with two pip packages; then the second pip package is
        // uninstalled (its dist-info whited out) and the dpkg database changes.
        let mut m = Merger::new();
        let mut base = Layer::default();
        base.add_file(
            "usr/lib/os-release",
            b"ID=debian\nVERSION_ID=\"12\"\n".to_vec(),
        );
        base.symlinks
            .push(("etc/os-release".into(), "../usr/lib/os-release".into()));
        base.add_file(
            DPKG_STATUS,
            b"Package: a\nStatus: install ok installed\nVersion: 1\nDescription: long\n text\n"
                .to_vec(),
        );
        base.add_file(
            "usr/lib/python3/dist-packages/x-1.dist-info/METADATA",
            b"Name: x\nVersion: 1\n\nbody".to_vec(),
        );
        base.add_file(
            "usr/lib/python3/dist-packages/y-2.dist-info/METADATA",
            b"Name: y\nVersion: 2\n".to_vec(),
        );
        assert!(!base.add_file(
            "usr/lib/python3/dist-packages/y-2.dist-info/RECORD",
            vec![1, 2]
        ));
        m.apply(base);
        let mut upper = Layer::default();
        assert!(upper.record_whiteout("usr/lib/python3/dist-packages/.wh.y-2.dist-info"));
        upper.add_file(DPKG_STATUS, b"Package: a\nStatus: install ok installed\nVersion: 2\n\nPackage: b\nStatus: install ok installed\nVersion: 3\n".to_vec());
        m.apply(upper);
        let got = collect(&m.finish());
        assert_eq!(got.warnings, Vec::<String>::new());
        assert_eq!(got.inventory.distro.map(|d| d.id), Some("debian".into()));
        let summary: Vec<_> = got
            .inventory
            .packages
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect();
        assert_eq!(summary, ["a 2", "b 3", "x 1"]);
    }

    #[test]
    fn compacted_dpkg_status_parses_the_same() {
        let compacted = compact(FileKind::DpkgStatus, DPKG.as_bytes().to_vec());
        assert!(
            compacted.len() * 2 < DPKG.len(),
            "{}",
            String::from_utf8_lossy(&compacted)
        );
        assert_eq!(
            parse_dpkg_status(DPKG_STATUS, &compacted),
            parse_dpkg_status(DPKG_STATUS, DPKG.as_bytes())
        );
    }

    // -- properties ------------------------------------------------------

    const PATHS: &[&str] = &[
        "etc/os-release",
        "usr/lib/os-release",
        DPKG_STATUS,
        "var/lib/dpkg/status.d/x",
        "a.dist-info/METADATA",
        "b.egg-info",
        "c.egg-info/PKG-INFO",
        "conda-meta/d.json",
        "not/wanted",
    ];

    /// Text made of the pieces the parsers look for, so that arbitrary
    /// combinations reach past the first checks.
    fn shaped() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                Just("Package: p".to_string()),
                Just("Status: install ok installed".to_string()),
                Just("Status: deinstall ok config-files".to_string()),
                Just("Version: 1.0".to_string()),
                Just("Source: s (2)".to_string()),
                Just("Source: (".to_string()),
                Just("Architecture: amd64".to_string()),
                Just("Description: d".to_string()),
                Just("Name: n".to_string()),
                Just("License:".to_string()),
                Just("ID=\"debian".to_string()),
                Just("VERSION_ID='12".to_string()),
                Just("{\"name\":\"n\",\"version\":\"1\",\"subdir\":\"linux-64\"}".to_string()),
                Just("\n".to_string()),
                Just("\r\n".to_string()),
                Just(" ".to_string()),
                Just("# c".to_string()),
                Just("\\".to_string()),
                "\\PC{0,12}",
            ],
            0..40,
        )
        .prop_map(|parts| parts.join("\n").into_bytes())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn collect_never_panics(
            entries in prop::collection::vec(
                (prop::sample::select(PATHS), prop_oneof![prop::collection::vec(any::<u8>(), 0..300), shaped()]),
                0..8,
            )
        ) {
            let files: BTreeMap<String, Vec<u8>> =
                entries.into_iter().map(|(p, b)| (p.to_string(), b)).collect();
            let got = collect(&files);
            let mut sorted = got.inventory.packages.clone();
            sort_packages(&mut sorted);
            prop_assert_eq!(&sorted, &got.inventory.packages);
            // Every package names a wanted file it came from.
            for p in &got.inventory.packages {
                prop_assert!(files.contains_key(&p.path), "{}", p.path);
            }
        }

        #[test]
        fn compact_changes_nothing_collect_sees(
            entries in prop::collection::vec(
                (prop::sample::select(PATHS), prop_oneof![prop::collection::vec(any::<u8>(), 0..300), shaped()]),
                0..8,
            )
        ) {
            let files: BTreeMap<String, Vec<u8>> =
                entries.into_iter().map(|(p, b)| (p.to_string(), b)).collect();
            let compacted: BTreeMap<String, Vec<u8>> = files
                .iter()
                .map(|(p, b)| (p.clone(), match wanted(p) { Some(k) => compact(k, b.clone()), None => b.clone() }))
                .collect();
            prop_assert_eq!(collect(&compacted), collect(&files));
        }

        #[test]
        fn wanted_is_about_the_normalized_path(
            path in "(etc|usr/lib|var/lib/dpkg|var/lib/dpkg/status\\.d|[a-z]{1,3}\\.(dist|egg)-info|conda-meta|EGG-INFO)/(METADATA|PKG-INFO|status|os-release|x\\.json|a\\.egg-info|libc6)",
            dir in "[a-z]{1,4}",
        ) {
            let kind = wanted(&path);
            // Whatever prefix a tar writer used, the normalized path decides.
            prop_assert_eq!(wanted(normalize(&format!("./{path}"))), kind);
            prop_assert_eq!(wanted(normalize(&format!("/{path}"))), kind);
            // Python and conda files count anywhere in the tree; the dpkg
            // database and os-release only at their own place.
            let nested = wanted(&format!("{dir}/{path}"));
            match kind {
                Some(FileKind::PythonMetadata | FileKind::CondaMeta) => prop_assert_eq!(nested, kind),
                Some(FileKind::DpkgStatus | FileKind::OsRelease) => prop_assert_eq!(nested, None),
                None => {}
            }
        }
    }
}
