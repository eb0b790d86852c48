//! The built-in vulnerability matcher: OSV records (the schema of
//! <https://ossf.github.io/osv-schema/>) matched against a package inventory
//! with each ecosystem's own version ordering.
//!
//! - `PyPI` advisories match Python distributions by PEP 503 name, PEP 440
//!   ordering.
//! - `Debian:<VERSION_ID>` and `Ubuntu:<VERSION_ID>[:LTS]` advisories match
//!   dpkg packages of that release by *source* package name and version,
//!   Debian ordering (`Ubuntu:Pro:…` advisories are for ESM and ignored).
//! - conda packages have no OSV ecosystem and never match.
//!
//! A version is affected when it is listed in `versions` or lies in an
//! `ECOSYSTEM` (or `SEMVER`, read with the ecosystem's ordering) range, by
//! the schema's evaluation algorithm; `GIT` ranges are ignored. Withdrawn
//! records are ignored. Versions that do not parse are reported, never
//! dropped silently.
//!
//! Pure: no I/O. The builder reads the database folder
//! (`labforge_builder::scan::osvdb`) and hands each file's bytes in.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use super::debversion::DebVersion;
use super::{Finding, Inventory, Package, PackageKind, Severity, cvss, pep440};

/// The longest title a finding gets, in characters.
const TITLE_MAX: usize = 200;

#[derive(Debug, Error)]
pub enum OsvError {
    #[error(
        "{origin} is not a valid OSV record: {source}; the database folder may be damaged: download it again"
    )]
    Json {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
}

// ---------------------------------------------------------------------------
// The schema (lenient: unknown fields are ignored, `null` reads as empty).

/// One OSV record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    /// Set when the record was withdrawn: it then affects nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub severity: Vec<SeverityScore>,
    #[serde(default, deserialize_with = "nullable")]
    pub affected: Vec<Affected>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_specific: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub references: Vec<Reference>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeverityScore {
    /// `CVSS_V2`, `CVSS_V3`, `CVSS_V4`, `Ubuntu`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub score: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Affected {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<OsvPackage>,
    /// Per-package severity (then the record's must not be set).
    #[serde(default, deserialize_with = "nullable")]
    pub severity: Vec<SeverityScore>,
    #[serde(default, deserialize_with = "nullable")]
    pub ranges: Vec<Range>,
    #[serde(default, deserialize_with = "nullable")]
    pub versions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecosystem_specific: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OsvPackage {
    pub ecosystem: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Range {
    /// `ECOSYSTEM`, `SEMVER` or `GIT`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub events: Vec<Event>,
}

/// One event of a range: exactly one of the fields is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Event {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introduced: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_affected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reference {
    /// `ADVISORY`, `WEB`, `REPORT`, `FIX`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
}

/// `null` reads as the type's default (an empty list).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

// ---------------------------------------------------------------------------
// The compiled database.

/// The version ordering of an ecosystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Pep440,
    Debian,
}

/// A parsed version (always of the scheme of the index entry it is in).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ver {
    Pep(pep440::Version),
    Deb(DebVersion),
}

impl Scheme {
    fn parse(self, s: &str) -> Result<Ver, String> {
        match self {
            Scheme::Pep440 => pep440::Version::parse(s)
                .map(Ver::Pep)
                .map_err(|e| e.to_string()),
            Scheme::Debian => DebVersion::parse(s)
                .map(Ver::Deb)
                .map_err(|e| e.to_string()),
        }
    }
}

/// The key an advisory's ecosystem is indexed under, and its ordering.
fn ecosystem_key(ecosystem: &str) -> Option<(String, Scheme)> {
    if ecosystem == "PyPI" {
        return Some((ecosystem.to_string(), Scheme::Pep440));
    }
    if let Some(release) = ecosystem.strip_prefix("Debian:") {
        return (!release.is_empty()).then(|| (ecosystem.to_string(), Scheme::Debian));
    }
    if let Some(release) = ecosystem.strip_prefix("Ubuntu:") {
        if release.starts_with("Pro:") {
            return None;
        }
        let release = release.strip_suffix(":LTS").unwrap_or(release);
        return (!release.is_empty()).then(|| (format!("Ubuntu:{release}"), Scheme::Debian));
    }
    None
}

/// The key an inventory's dpkg packages are looked up under.
fn distro_key(distro: &super::Distro) -> Option<String> {
    let release = distro.version_id.trim();
    if release.is_empty() {
        return None;
    }
    match distro.id.trim() {
        "debian" => Some(format!("Debian:{release}")),
        "ubuntu" => Some(format!("Ubuntu:{release}")),
        _ => None,
    }
}

fn name_key(scheme: Scheme, name: &str) -> String {
    match scheme {
        Scheme::Pep440 => pep440::normalize_name(name),
        Scheme::Debian => name.trim().to_string(),
    }
}

/// A version named by an event, as written and parsed.
#[derive(Debug, Clone)]
struct Bound {
    text: String,
    version: Ver,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EventKind {
    // The order breaks ties between events at the same version.
    Introduced,
    Fixed,
    LastAffected,
}

/// One `ECOSYSTEM`/`SEMVER` range with its events sorted.
#[derive(Debug, Clone)]
struct CompiledRange {
    /// `None` is the introduced `"0"`, before every version.
    events: Vec<(EventKind, Option<Bound>)>,
    /// `None` is a `"*"` limit (infinity); no limits at all means no bound.
    limits: Vec<Option<Ver>>,
}

impl CompiledRange {
    fn compile(scheme: Scheme, range: &Range) -> Result<CompiledRange, String> {
        let bound = |kind: &str, text: &str| {
            scheme
                .parse(text)
                .map(|version| Bound {
                    text: text.to_string(),
                    version,
                })
                .map_err(|e| format!("its {kind} event {e}"))
        };
        let mut events = Vec::new();
        let mut limits = Vec::new();
        for event in &range.events {
            let set = [
                &event.introduced,
                &event.fixed,
                &event.last_affected,
                &event.limit,
            ]
            .iter()
            .filter(|f| f.is_some())
            .count();
            if set != 1 {
                return Err(format!(
                    "an event of its {} range has {set} versions instead of one",
                    range.kind
                ));
            }
            match event {
                Event {
                    introduced: Some(v),
                    ..
                } if v.trim() == "0" => events.push((EventKind::Introduced, None)),
                Event {
                    introduced: Some(v),
                    ..
                } => events.push((EventKind::Introduced, Some(bound("introduced", v)?))),
                Event { fixed: Some(v), .. } => {
                    events.push((EventKind::Fixed, Some(bound("fixed", v)?)))
                }
                Event {
                    last_affected: Some(v),
                    ..
                } => {
                    events.push((EventKind::LastAffected, Some(bound("last_affected", v)?)));
                }
                Event { limit: Some(v), .. } if v.contains('*') => limits.push(None),
                Event { limit: Some(v), .. } => limits.push(Some(bound("limit", v)?.version)),
                _ => {}
            }
        }
        if !events
            .iter()
            .any(|(kind, _)| *kind == EventKind::Introduced)
        {
            return Err(format!("its {} range has no introduced event", range.kind));
        }
        events.sort_by(|(ka, a), (kb, b)| {
            let (a, b) = (
                a.as_ref().map(|b| &b.version),
                b.as_ref().map(|b| &b.version),
            );
            a.cmp(&b).then(ka.cmp(kb))
        });
        Ok(CompiledRange { events, limits })
    }

    /// The schema's `BeforeLimits` and `IncludedInRanges` for this range:
    /// `Some(first fixed version above v)` when `v` is affected.
    fn evaluate(&self, v: &Ver) -> Option<Option<&Bound>> {
        if !self.limits.is_empty()
            && !self
                .limits
                .iter()
                .any(|limit| limit.as_ref().is_none_or(|l| v < l))
        {
            return None;
        }
        let mut vulnerable = false;
        for (kind, bound) in &self.events {
            let at = bound.as_ref().map(|b| &b.version);
            match kind {
                EventKind::Introduced if at.is_none_or(|at| v >= at) => vulnerable = true,
                EventKind::Fixed if at.is_some_and(|at| v >= at) => vulnerable = false,
                EventKind::LastAffected if at.is_some_and(|at| v > at) => vulnerable = false,
                _ => {}
            }
        }
        vulnerable.then(|| self.first_fix_above(v))
    }

    fn first_fix_above(&self, v: &Ver) -> Option<&Bound> {
        self.events
            .iter()
            .find_map(|(kind, bound)| match (kind, bound) {
                (EventKind::Fixed, Some(b)) if b.version > *v => Some(b),
                _ => None,
            })
    }
}

/// What a finding shows of its record.
#[derive(Debug, Clone)]
struct RecordInfo {
    id: String,
    aliases: Vec<String>,
    title: String,
    url: Option<String>,
}

/// One `affected` entry of one record, ready to match.
#[derive(Debug, Clone)]
struct Entry {
    record: usize,
    scheme: Scheme,
    /// `versions` as written; parsed the first time a scan needs them (most
    /// entries are never looked at, and a database holds many versions).
    versions: Vec<String>,
    parsed_versions: OnceLock<Vec<Option<Ver>>>,
    ranges: Vec<CompiledRange>,
    /// Why the ranges could not be read (they are then not evaluated).
    broken: Option<String>,
    severity: Severity,
}

impl Entry {
    fn parsed_versions(&self) -> &[Option<Ver>] {
        self.parsed_versions.get_or_init(|| {
            self.versions
                .iter()
                .map(|v| self.scheme.parse(v).ok())
                .collect()
        })
    }

    /// `Some(fixed)` when the installed version (`raw`, parsed as `v`) is
    /// affected.
    fn evaluate(&self, raw: &str, v: Option<&Ver>) -> Option<Option<&Bound>> {
        let ranges = if self.broken.is_none() {
            &self.ranges[..]
        } else {
            &[]
        };
        let mut hit = None;
        if let Some(v) = v {
            for range in ranges {
                if let Some(fixed) = range.evaluate(v) {
                    hit = Some(earliest(hit.flatten(), fixed));
                }
            }
        }
        if hit.is_none() {
            let listed = self.versions.iter().any(|text| text == raw)
                || v.is_some_and(|v| self.parsed_versions().iter().flatten().any(|p| p == v));
            if listed {
                let fixed = v.and_then(|v| {
                    ranges
                        .iter()
                        .filter_map(|r| r.first_fix_above(v))
                        .min_by(|a, b| a.version.cmp(&b.version))
                });
                hit = Some(fixed);
            }
        }
        hit
    }
}

fn earliest<'a>(a: Option<&'a Bound>, b: Option<&'a Bound>) -> Option<&'a Bound> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.version < a.version { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The result of matching one inventory.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Scan {
    /// Sorted by kind, package, installed version, advisory id; one per
    /// advisory and installed package version.
    pub findings: Vec<Finding>,
    /// Packages that could not be fully checked, and why: an installed
    /// version that does not parse in its ecosystem, or an advisory for the
    /// package whose ranges do not parse.
    pub unparsable: Vec<(Package, String)>,
}

/// Reads one OSV file: a record, or a JSON array of records. `origin` (the
/// file it came from) names it in the error. Lets a caller parse files in
/// parallel and [`Database::add`] them in order.
pub fn parse_json(bytes: &[u8], origin: &str) -> Result<Vec<Record>, OsvError> {
    let json_error = |source| OsvError::Json {
        origin: origin.to_string(),
        source,
    };
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        serde_json::from_slice(bytes).map_err(json_error)
    } else {
        Ok(vec![serde_json::from_slice(bytes).map_err(json_error)?])
    }
}

/// OSV records indexed by ecosystem and package name.
#[derive(Debug, Clone, Default)]
pub struct Database {
    records: Vec<RecordInfo>,
    /// ecosystem key → package name key → entries.
    index: HashMap<String, HashMap<String, Vec<Entry>>>,
    withdrawn: usize,
}

impl Database {
    pub fn new() -> Database {
        Database::default()
    }

    /// Adds the record (or JSON array of records) in `bytes`; `origin` (the
    /// file it came from) names it in errors. Withdrawn records are counted
    /// and otherwise ignored; affected packages of ecosystems the matcher
    /// does not know are not indexed.
    pub fn add_json(&mut self, bytes: &[u8], origin: &str) -> Result<(), OsvError> {
        for record in parse_json(bytes, origin)? {
            self.add(record);
        }
        Ok(())
    }

    /// Adds one record.
    pub fn add(&mut self, record: Record) {
        if record
            .withdrawn
            .as_deref()
            .is_some_and(|w| !w.trim().is_empty())
        {
            self.withdrawn += 1;
            return;
        }
        let index = self.records.len();
        for affected in &record.affected {
            let Some(package) = &affected.package else {
                continue;
            };
            let Some((ecosystem, scheme)) = ecosystem_key(package.ecosystem.trim()) else {
                continue;
            };
            let entry = compile_entry(index, scheme, &record, affected);
            self.index
                .entry(ecosystem)
                .or_default()
                .entry(name_key(scheme, &package.name))
                .or_default()
                .push(entry);
        }
        self.records.push(RecordInfo {
            title: title(&record),
            url: url(&record),
            id: record.id,
            aliases: record.aliases,
        });
    }

    /// The records kept (withdrawn ones are not).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The withdrawn records that were added and ignored.
    pub fn withdrawn(&self) -> usize {
        self.withdrawn
    }

    /// Matches every package of the inventory.
    pub fn scan(&self, inventory: &Inventory) -> Scan {
        let deb_key = inventory.distro.as_ref().and_then(distro_key);
        let mut findings = Vec::new();
        let mut unparsable = Vec::new();
        for package in &inventory.packages {
            let (ecosystem, scheme, name, version) = match package.kind {
                PackageKind::Pypi => ("PyPI", Scheme::Pep440, &package.name, &package.version),
                PackageKind::Deb => {
                    let Some(key) = deb_key.as_deref() else {
                        continue;
                    };
                    match &package.source {
                        Some(source) => (key, Scheme::Debian, &source.name, &source.version),
                        None => (key, Scheme::Debian, &package.name, &package.version),
                    }
                }
                PackageKind::Conda | PackageKind::Other => continue,
            };
            let Some(entries) = self
                .index
                .get(ecosystem)
                .and_then(|names| names.get(&name_key(scheme, name)))
            else {
                continue;
            };
            let parsed = match scheme.parse(version.trim()) {
                Ok(v) => Some(v),
                Err(why) => {
                    let advisories = entries.len();
                    unparsable.push((
                        package.clone(),
                        format!(
                            "{why}: its {advisories} advisories were checked by exact version only"
                        ),
                    ));
                    None
                }
            };
            // One hit per record: the earliest fix, the highest severity.
            let mut hits: Vec<(usize, Option<&Bound>, Severity)> = Vec::new();
            for entry in entries {
                if let Some(why) = &entry.broken {
                    let id = &self.records[entry.record].id;
                    unparsable.push((
                        package.clone(),
                        format!("advisory {id}: {why}; its ranges were not checked"),
                    ));
                }
                let Some(fixed) = entry.evaluate(version.trim(), parsed.as_ref()) else {
                    continue;
                };
                match hits
                    .iter_mut()
                    .find(|(record, _, _)| *record == entry.record)
                {
                    Some(hit) => {
                        hit.1 = earliest(hit.1, fixed);
                        hit.2 = hit.2.max(entry.severity);
                    }
                    None => hits.push((entry.record, fixed, entry.severity)),
                }
            }
            for (record, fixed, severity) in hits {
                let info = &self.records[record];
                findings.push(Finding {
                    id: info.id.clone(),
                    aliases: info.aliases.clone(),
                    kind: package.kind,
                    package: package.name.clone(),
                    installed: package.version.clone(),
                    fixed: fixed.map(|b| b.text.clone()),
                    severity,
                    title: info.title.clone(),
                    url: info.url.clone(),
                });
            }
        }
        findings.sort_by(|a, b| {
            finding_key(a)
                .cmp(&finding_key(b))
                .then_with(|| b.severity.cmp(&a.severity))
                .then_with(|| a.cmp(b))
        });
        findings.dedup_by(|a, b| finding_key(a) == finding_key(b));
        unparsable.sort();
        unparsable.dedup();
        Scan {
            findings,
            unparsable,
        }
    }
}

fn compile_entry(
    record_index: usize,
    scheme: Scheme,
    record: &Record,
    affected: &Affected,
) -> Entry {
    let mut ranges = Vec::new();
    let mut broken = None;
    for range in &affected.ranges {
        if !matches!(range.kind.as_str(), "ECOSYSTEM" | "SEMVER") {
            continue;
        }
        match CompiledRange::compile(scheme, range) {
            Ok(r) => ranges.push(r),
            Err(why) => {
                broken = Some(why);
                break;
            }
        }
    }
    Entry {
        record: record_index,
        scheme,
        versions: affected
            .versions
            .iter()
            .map(|v| v.trim().to_string())
            .collect(),
        parsed_versions: OnceLock::new(),
        ranges,
        broken,
        severity: severity(record, affected),
    }
}

/// CVSS v3, then v2 (and Ubuntu's priority) of the package or the record,
/// then the `severity` word of the record's `database_specific`, of the
/// package's `ecosystem_specific` and `database_specific`; else unknown.
fn severity(record: &Record, affected: &Affected) -> Severity {
    let scores = || affected.severity.iter().chain(&record.severity);
    let of_kind = |kind: &str| {
        scores()
            .filter(|s| s.kind == kind)
            .find_map(|s| match kind {
                "Ubuntu" => Severity::parse(&s.score),
                _ => cvss::severity(&s.score),
            })
            .filter(|s| *s != Severity::Unknown)
    };
    let word = |value: &Option<serde_json::Value>| {
        value
            .as_ref()
            .and_then(|v| v.get("severity"))
            .and_then(|s| s.as_str())
            .and_then(Severity::parse)
            .filter(|s| *s != Severity::Unknown)
    };
    of_kind("CVSS_V3")
        .or_else(|| of_kind("CVSS_V2"))
        .or_else(|| of_kind("Ubuntu"))
        .or_else(|| word(&record.database_specific))
        .or_else(|| word(&affected.ecosystem_specific))
        .or_else(|| word(&affected.database_specific))
        .unwrap_or(Severity::Unknown)
}

/// The summary, else the first non-empty line of the details, at most
/// [`TITLE_MAX`] characters.
fn title(record: &Record) -> String {
    let summary = record
        .summary
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let text = summary.or_else(|| {
        record
            .details
            .as_deref()
            .and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()))
    });
    let text = text.unwrap_or("");
    match text.char_indices().nth(TITLE_MAX) {
        Some((cut, _)) => text[..cut].trim_end().to_string(),
        None => text.to_string(),
    }
}

/// The first `ADVISORY` reference, else the first `WEB` one.
fn url(record: &Record) -> Option<String> {
    let first = |kind: &str| {
        record
            .references
            .iter()
            .find(|r| r.kind == kind)
            .map(|r| r.url.clone())
    };
    first("ADVISORY").or_else(|| first("WEB"))
}

/// The identity of a finding: one per advisory and installed package version.
fn finding_key(f: &Finding) -> (PackageKind, &str, &str, &str) {
    (f.kind, &f.package, &f.installed, &f.id)
}

#[cfg(test)]
mod tests {
    use super::super::{Distro, SourcePackage};
    use super::*;

    /// Real PyPA records (see tests/fixtures/osv/README.md).
    const FIXTURES: &[(&str, &str)] = &[
        (
            "PYSEC-2008-3",
            include_str!("../../../tests/fixtures/osv/PyPI/PYSEC-2008-3.json"),
        ),
        (
            "PYSEC-2014-82",
            include_str!("../../../tests/fixtures/osv/PyPI/PYSEC-2014-82.json"),
        ),
        (
            "PYSEC-2017-105",
            include_str!("../../../tests/fixtures/osv/PyPI/PYSEC-2017-105.json"),
        ),
        (
            "PYSEC-2019-125",
            include_str!("../../../tests/fixtures/osv/PyPI/PYSEC-2019-125.json"),
        ),
        (
            "PYSEC-2019-144",
            include_str!("../../../tests/fixtures/osv/PyPI/PYSEC-2019-144.json"),
        ),
        (
            "PYSEC-2019-217",
            include_str!("../../../tests/fixtures/osv/PyPI/PYSEC-2019-217.json"),
        ),
        (
            "PYSEC-2020-341",
            include_str!("../../../tests/fixtures/osv/PyPI/PYSEC-2020-341.json"),
        ),
        (
            "PYSEC-2021-66",
            include_str!("../../../tests/fixtures/osv/PyPI/PYSEC-2021-66.json"),
        ),
        (
            "PYSEC-2022-42969",
            include_str!("../../../tests/fixtures/osv/PyPI/PYSEC-2022-42969.json"),
        ),
        (
            "PYSEC-2024-1",
            include_str!("../../../tests/fixtures/osv/PyPI/PYSEC-2024-1.json"),
        ),
        (
            "PYSEC-2024-11",
            include_str!("../../../tests/fixtures/osv/PyPI/PYSEC-2024-11.json"),
        ),
        (
            "PYSEC-2024-103",
            include_str!("../../../tests/fixtures/osv/PyPI/PYSEC-2024-103.json"),
        ),
    ];

    fn fixtures() -> Database {
        let mut db = Database::new();
        for (id, json) in FIXTURES {
            db.add_json(json.as_bytes(), &format!("PyPI/{id}.json"))
                .expect("test input");
        }
        db
    }

    fn pypi(name: &str, version: &str) -> Package {
        Package {
            kind: PackageKind::Pypi,
            name: name.to_string(),
            version: version.to_string(),
            source: None,
            arch: String::new(),
            license: None,
            path: format!("usr/lib/python3/dist-packages/{name}-{version}.dist-info/METADATA"),
        }
    }

    fn deb(name: &str, version: &str, source: Option<(&str, &str)>) -> Package {
        Package {
            kind: PackageKind::Deb,
            name: name.to_string(),
            version: version.to_string(),
            source: source.map(|(name, version)| SourcePackage {
                name: name.to_string(),
                version: version.to_string(),
            }),
            arch: "amd64".to_string(),
            license: None,
            path: "var/lib/dpkg/status".to_string(),
        }
    }

    fn inventory(distro: Option<(&str, &str)>, packages: Vec<Package>) -> Inventory {
        Inventory {
            distro: distro.map(|(id, version_id)| Distro {
                id: id.to_string(),
                version_id: version_id.to_string(),
                codename: String::new(),
            }),
            packages,
        }
    }

    /// The (id, fixed) of every finding for one Python package.
    fn check_pypi(db: &Database, name: &str, version: &str) -> Vec<(String, Option<String>)> {
        let scan = db.scan(&inventory(None, vec![pypi(name, version)]));
        assert!(
            scan.unparsable.is_empty(),
            "{name} {version}: {:?}",
            scan.unparsable
        );
        scan.findings.into_iter().map(|f| (f.id, f.fixed)).collect()
    }

    fn hit(id: &str, fixed: Option<&str>) -> (String, Option<String>) {
        (id.to_string(), fixed.map(str::to_string))
    }

    #[test]
    fn vulnerable_versions_are_flagged_with_the_fix_of_their_range() {
        let db = fixtures();
        type Hits = &'static [(&'static str, Option<&'static str>)];
        let table: &[(&str, &str, Hits)] = &[
            // PYSEC-2021-66: introduced 0, fixed 2.11.3 (plus 2019-217: fixed 2.10.1,
            // 2014-82: fixed 2.7.3 beside a GIT range).
            ("jinja2", "2.11.2", &[("PYSEC-2021-66", Some("2.11.3"))]),
            (
                "jinja2",
                "2.10",
                &[
                    ("PYSEC-2019-217", Some("2.10.1")),
                    ("PYSEC-2021-66", Some("2.11.3")),
                ],
            ),
            (
                "jinja2",
                "2.7.2",
                &[
                    ("PYSEC-2014-82", Some("2.7.3")),
                    ("PYSEC-2019-217", Some("2.10.1")),
                    ("PYSEC-2021-66", Some("2.11.3")),
                ],
            ),
            ("jinja2", "2.11.3rc1", &[("PYSEC-2021-66", Some("2.11.3"))]),
            (
                "jinja2",
                "2.11.3.dev0",
                &[("PYSEC-2021-66", Some("2.11.3"))],
            ),
            (
                "jinja2",
                "0.1",
                &[
                    ("PYSEC-2014-82", Some("2.7.3")),
                    ("PYSEC-2019-217", Some("2.10.1")),
                    ("PYSEC-2021-66", Some("2.11.3")),
                ],
            ),
            // PYSEC-2008-3: [0, 2.1.1) and [3.0, 3.0.2).
            ("cherrypy", "2.1.0", &[("PYSEC-2008-3", Some("2.1.1"))]),
            ("cherrypy", "3.0", &[("PYSEC-2008-3", Some("3.0.2"))]),
            ("cherrypy", "3.0.1", &[("PYSEC-2008-3", Some("3.0.2"))]),
            // PYSEC-2024-11: [1.0.0, 1.3.0), CVSS 9.8.
            ("apache-iotdb", "1.0.0", &[("PYSEC-2024-11", Some("1.3.0"))]),
            ("apache-iotdb", "1.2.2", &[("PYSEC-2024-11", Some("1.3.0"))]),
            // PYSEC-2022-42969: introduced 0, last_affected 1.11.0 (no fix).
            ("py", "1.11.0", &[("PYSEC-2022-42969", None)]),
            ("py", "1.10.5", &[("PYSEC-2022-42969", None)]),
            ("py", "0.0.1", &[("PYSEC-2022-42969", None)]),
            // PYSEC-2024-1: only a versions list.
            ("gratient", "0.5", &[("PYSEC-2024-1", None)]),
            ("gratient", "0.5.0", &[("PYSEC-2024-1", None)]),
            // PYSEC-2017-105: introduced 0, never fixed.
            ("apache-atlas", "0.0.15", &[("PYSEC-2017-105", None)]),
            ("apache-atlas", "99.0", &[("PYSEC-2017-105", None)]),
            // PYSEC-2024-103: fixed in a pre-release.
            ("vyper", "0.3.10", &[("PYSEC-2024-103", Some("0.4.0b1"))]),
            ("vyper", "0.4.0a1", &[("PYSEC-2024-103", Some("0.4.0b1"))]),
        ];
        for (name, version, expect) in table {
            let expect: Vec<_> = expect.iter().map(|(id, fixed)| hit(id, *fixed)).collect();
            assert_eq!(check_pypi(&db, name, version), expect, "{name} {version}");
        }
    }

    #[test]
    fn fixed_and_out_of_range_versions_are_not_flagged() {
        let db = fixtures();
        let table = [
            ("jinja2", "2.11.3"),
            ("jinja2", "2.11.3.post1"),
            ("jinja2", "3.1.4"),
            ("cherrypy", "2.1.1"),
            ("cherrypy", "2.2"),
            ("cherrypy", "3.0.2"),
            ("cherrypy", "18.10.0"),
            ("apache-iotdb", "0.13.0"),
            ("apache-iotdb", "1.0.0rc1"),
            ("apache-iotdb", "1.3.0"),
            ("py", "1.11.1"),
            ("py", "1.11.0.post1"),
            ("gratient", "0.4"),
            ("gratient", "0.6"),
            ("vyper", "0.4.0b1"),
            ("vyper", "0.4.0"),
            ("requests", "2.0.0"),
        ];
        for (name, version) in table {
            assert_eq!(check_pypi(&db, name, version), vec![], "{name} {version}");
        }
    }

    #[test]
    fn withdrawn_advisories_are_ignored() {
        let db = fixtures();
        assert_eq!(db.withdrawn(), 1);
        assert_eq!(db.len(), FIXTURES.len() - 1);
        // PYSEC-2019-144 lists arrayfire 3.5.20170718 and the range [0, 3.6.0).
        assert_eq!(check_pypi(&db, "arrayfire", "3.5.20170718"), vec![]);
        assert_eq!(check_pypi(&db, "arrayfire", "3.0.20150914"), vec![]);
    }

    #[test]
    fn names_are_compared_normalised() {
        let db = fixtures();
        for name in ["jinja2", "Jinja2", "JINJA2"] {
            assert_eq!(
                check_pypi(&db, name, "2.11.2"),
                vec![hit("PYSEC-2021-66", Some("2.11.3"))],
                "{name}"
            );
        }
        // The record says "jw.util"; the installed metadata may say any spelling.
        for name in ["jw.util", "jw-util", "jw_util", "JW.Util", "jw__util"] {
            assert_eq!(
                check_pypi(&db, name, "2.2"),
                vec![hit("PYSEC-2020-341", Some("2.3"))],
                "{name}"
            );
        }
        for name in ["apache_atlas", "Apache.Atlas"] {
            assert_eq!(
                check_pypi(&db, name, "0.0.1"),
                vec![hit("PYSEC-2017-105", None)],
                "{name}"
            );
        }
    }

    #[test]
    fn findings_carry_the_record() {
        let db = fixtures();
        let scan = db.scan(&inventory(
            None,
            vec![
                pypi("Jinja2", "2.11.2"),
                pypi("apache-iotdb", "1.2.1"),
                pypi("apache-atlas", "0.0.1"),
            ],
        ));
        let f: Vec<&Finding> = scan.findings.iter().collect();
        assert_eq!(f.len(), 3);

        assert_eq!(f[0].id, "PYSEC-2021-66");
        assert_eq!(
            f[0].aliases,
            [
                "CVE-2020-28493",
                "SNYK-PYTHON-JINJA2-1012994",
                "GHSA-g3rq-g295-4j3m"
            ]
        );
        assert_eq!(
            (f[0].kind, f[0].package.as_str(), f[0].installed.as_str()),
            (PackageKind::Pypi, "Jinja2", "2.11.2")
        );
        assert_eq!(f[0].severity, Severity::Unknown);
        assert_eq!(
            f[0].url.as_deref(),
            Some("https://snyk.io/vuln/SNYK-PYTHON-JINJA2-1012994")
        );
        // No summary: the details, cut at 200 characters.
        let record: serde_json::Value = serde_json::from_str(FIXTURES[7].1).expect("test input");
        let details: String = record["details"]
            .as_str()
            .expect("test input")
            .chars()
            .take(200)
            .collect();
        assert_eq!(f[0].title, details.trim_end());
        assert!(
            f[0].title
                .starts_with("This affects the package jinja2 from 0.0.0 and before 2.11.3.")
        );

        // Sorted by package name: apache-atlas, apache-iotdb after Jinja2 ('J' < 'a').
        assert_eq!(
            (f[1].id.as_str(), f[1].severity),
            ("PYSEC-2017-105", Severity::High)
        );
        assert_eq!(
            (f[2].id.as_str(), f[2].severity),
            ("PYSEC-2024-11", Severity::Critical)
        );
        assert_eq!(f[2].fixed.as_deref(), Some("1.3.0"));
        // No ADVISORY reference: the first WEB one.
        assert_eq!(
            f[2].url.as_deref(),
            Some("http://www.openwall.com/lists/oss-security/2024/01/15/1")
        );
        assert_eq!(
            f[2].title,
            "Remote Code Execution vulnerability in Apache IoTDB.This issue affects Apache IoTDB: from 1.0.0 through 1.2.2."
        );
    }

    #[test]
    fn unparsable_installed_versions_are_reported() {
        let db = fixtures();
        let bad = pypi("jinja2", "2.10-custom-build");
        let scan = db.scan(&inventory(
            None,
            vec![bad.clone(), pypi("no-advisories", "not a version")],
        ));
        assert_eq!(scan.findings, vec![]);
        assert_eq!(scan.unparsable.len(), 1, "{:?}", scan.unparsable);
        assert_eq!(scan.unparsable[0].0, bad);
        assert!(
            scan.unparsable[0]
                .1
                .contains("'2.10-custom-build' is not a PEP 440 version"),
            "{}",
            scan.unparsable[0].1
        );

        // An unparsable version listed verbatim in `versions` still matches.
        let odd = pypi("jw.util", "-class.-jw.util.version.Version-");
        let scan = db.scan(&inventory(None, vec![odd.clone()]));
        assert_eq!(scan.findings.len(), 1);
        assert_eq!(
            (
                scan.findings[0].id.as_str(),
                scan.findings[0].fixed.as_deref()
            ),
            ("PYSEC-2020-341", None)
        );
        assert_eq!(scan.unparsable.len(), 1);
        assert_eq!(scan.unparsable[0].0, odd);
    }

    #[test]
    fn unparsable_range_events_are_reported() {
        // PYSEC-2019-125: steam, fixed "2019-09-12".
        let db = fixtures();
        let steam = pypi("steam", "0.9.1");
        let scan = db.scan(&inventory(None, vec![steam.clone()]));
        assert_eq!(scan.findings, vec![]);
        assert_eq!(scan.unparsable.len(), 1);
        assert_eq!(scan.unparsable[0].0, steam);
        let why = &scan.unparsable[0].1;
        assert!(
            why.starts_with(
                "advisory PYSEC-2019-125: its fixed event '2019-09-12' is not a PEP 440 version"
            ),
            "{why}"
        );
    }

    #[test]
    fn conda_packages_never_match() {
        let db = fixtures();
        let mut conda = pypi("jinja2", "2.10");
        conda.kind = PackageKind::Conda;
        let scan = db.scan(&inventory(None, vec![conda]));
        assert_eq!(scan, Scan::default());
    }

    #[test]
    fn the_same_package_twice_gives_one_finding_per_advisory() {
        let mut db = fixtures();
        // The same record loaded twice, the package in two environments.
        db.add_json(FIXTURES[7].1.as_bytes(), "again.json")
            .expect("test input");
        let mut other = pypi("jinja2", "2.11.2");
        other.path =
            "opt/conda/lib/python3.12/site-packages/jinja2-2.11.2.dist-info/METADATA".to_string();
        let scan = db.scan(&inventory(None, vec![pypi("jinja2", "2.11.2"), other]));
        let ids: Vec<&str> = scan.findings.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["PYSEC-2021-66"]);
    }

    const DEBIAN_GLIBC: &str = r#"{
        "id": "DSA-5678-1",
        "modified": "2024-05-06T00:00:00Z",
        "summary": "glibc - security update",
        "aliases": ["CVE-2024-2961"],
        "affected": [
            {
                "package": {"ecosystem": "Debian:12", "name": "glibc", "purl": "pkg:deb/debian/glibc?arch=source"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.36-9+deb12u4"}]}],
                "versions": ["2.36-9+deb12u1", "2.36-9+deb12u3"]
            },
            {
                "package": {"ecosystem": "Debian:11", "name": "glibc"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.31-13+deb11u9"}]}]
            }
        ],
        "references": [{"type": "ADVISORY", "url": "https://www.debian.org/security/2024/dsa-5678"}],
        "future_field": {"ignored": true}
    }"#;

    #[test]
    fn debian_advisories_match_by_source_package() {
        let mut db = Database::new();
        db.add_json(DEBIAN_GLIBC.as_bytes(), "Debian/DSA-5678-1.json")
            .expect("test input");
        let packages = vec![
            deb("libc6", "2.36-9+deb12u3", Some(("glibc", "2.36-9+deb12u3"))),
            deb(
                "libc-bin",
                "2.36-9+deb12u3",
                Some(("glibc", "2.36-9+deb12u3")),
            ),
            deb(
                "locales",
                "2.36-9+deb12u4",
                Some(("glibc", "2.36-9+deb12u4")),
            ),
            deb(
                "glibc-doc",
                "2.36-9+deb12u10",
                Some(("glibc", "2.36-9+deb12u10")),
            ),
            // Named like the source package: matched by binary name and version.
            deb("glibc", "2.36-9", None),
            // Same name as a source package, but a Python distribution.
            pypi("glibc", "2.36"),
        ];
        let scan = db.scan(&inventory(Some(("debian", "12")), packages.clone()));
        assert_eq!(scan.unparsable, vec![]);
        let got: Vec<(&str, &str, Option<&str>)> = scan
            .findings
            .iter()
            .map(|f| (f.package.as_str(), f.installed.as_str(), f.fixed.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("glibc", "2.36-9", Some("2.36-9+deb12u4")),
                ("libc-bin", "2.36-9+deb12u3", Some("2.36-9+deb12u4")),
                ("libc6", "2.36-9+deb12u3", Some("2.36-9+deb12u4")),
            ]
        );
        assert!(
            scan.findings
                .iter()
                .all(|f| f.kind == PackageKind::Deb && f.id == "DSA-5678-1")
        );
        assert_eq!(scan.findings[0].title, "glibc - security update");

        // Another release, another distribution, or no distribution: no match.
        for distro in [
            Some(("debian", "13")),
            Some(("ubuntu", "12")),
            None,
            Some(("debian", "")),
        ] {
            let scan = db.scan(&inventory(distro, packages.clone()));
            assert_eq!(scan.findings, vec![], "{distro:?}");
        }
        // Debian 11's own range applies on Debian 11.
        let scan = db.scan(&inventory(
            Some(("debian", "11")),
            vec![deb(
                "libc6",
                "2.31-13+deb11u8",
                Some(("glibc", "2.31-13+deb11u8")),
            )],
        ));
        assert_eq!(scan.findings.len(), 1);
        assert_eq!(scan.findings[0].fixed.as_deref(), Some("2.31-13+deb11u9"));
    }

    #[test]
    fn binary_rebuilds_are_matched_by_source_version() {
        let mut db = Database::new();
        db.add_json(
            br#"{"id": "DEBIAN-CVE-2023-0001", "affected": [{"package": {"ecosystem": "Debian:12", "name": "zlib"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:1.2.13.dfsg-1+b1"}]}]}]}"#,
            "x.json",
        )
        .expect("test input");
        // Binary 1:1.2.13.dfsg-1+b1 is a rebuild of source 1:1.2.13.dfsg-1, which is affected.
        let zlib = deb(
            "zlib1g",
            "1:1.2.13.dfsg-1+b1",
            Some(("zlib", "1:1.2.13.dfsg-1")),
        );
        let scan = db.scan(&inventory(Some(("debian", "12")), vec![zlib]));
        assert_eq!(scan.findings.len(), 1);
        assert_eq!(scan.findings[0].installed, "1:1.2.13.dfsg-1+b1");
        assert_eq!(
            scan.findings[0].fixed.as_deref(),
            Some("1:1.2.13.dfsg-1+b1")
        );
    }

    #[test]
    fn ubuntu_ecosystems_with_and_without_lts() {
        let mut db = Database::new();
        for (id, ecosystem) in [
            ("USN-1", "Ubuntu:22.04:LTS"),
            ("USN-2", "Ubuntu:23.10"),
            ("USN-3", "Ubuntu:Pro:22.04:LTS"),
        ] {
            let json = format!(
                r#"{{"id": "{id}", "severity": [{{"type": "Ubuntu", "score": "medium"}}],
                "affected": [{{"package": {{"ecosystem": "{ecosystem}", "name": "openssl"}},
                "ranges": [{{"type": "ECOSYSTEM", "events": [{{"introduced": "0"}}, {{"fixed": "3.0.2-0ubuntu1.15"}}]}}]}}]}}"#
            );
            db.add_json(json.as_bytes(), id).expect("test input");
        }
        let openssl = deb(
            "libssl3",
            "3.0.2-0ubuntu1.14",
            Some(("openssl", "3.0.2-0ubuntu1.14")),
        );
        let scan = db.scan(&inventory(Some(("ubuntu", "22.04")), vec![openssl.clone()]));
        let ids: Vec<(&str, Severity)> = scan
            .findings
            .iter()
            .map(|f| (f.id.as_str(), f.severity))
            .collect();
        assert_eq!(ids, [("USN-1", Severity::Medium)]);
        let scan = db.scan(&inventory(Some(("ubuntu", "23.10")), vec![openssl]));
        let ids: Vec<&str> = scan.findings.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["USN-2"]);
    }

    #[test]
    fn unparsable_debian_versions_are_reported() {
        let mut db = Database::new();
        db.add_json(DEBIAN_GLIBC.as_bytes(), "x")
            .expect("test input");
        let bad = deb("libc6", "2.36-9+deb12u3", Some(("glibc", "glibc_2.36")));
        let scan = db.scan(&inventory(Some(("debian", "12")), vec![bad.clone()]));
        assert_eq!(scan.findings, vec![]);
        assert_eq!(scan.unparsable.len(), 1);
        assert_eq!(scan.unparsable[0].0, bad);
        assert!(
            scan.unparsable[0].1.contains("does not start with a digit"),
            "{}",
            scan.unparsable[0].1
        );
    }

    /// A PyPI record built from its severity and database-specific parts.
    fn record_with(extra: &str) -> String {
        format!(
            r#"{{"id": "GHSA-test", {extra} "affected": [{{"package": {{"ecosystem": "PyPI", "name": "pkg"}},
                "ranges": [{{"type": "ECOSYSTEM", "events": [{{"introduced": "0"}}, {{"fixed": "2.0"}}]}}]}}]}}"#
        )
    }

    #[test]
    fn severity_sources_in_order() {
        let v3 = r#""severity": [{"type": "CVSS_V2", "score": "AV:N/AC:L/Au:N/C:P/I:N/A:N"}, {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],"#;
        let v2 = r#""severity": [{"type": "CVSS_V2", "score": "AV:N/AC:L/Au:N/C:P/I:P/A:P"}],"#;
        let v4 = r#""severity": [{"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}],"#;
        let table = [
            (v3.to_string(), Severity::Critical),
            (v2.to_string(), Severity::High),
            (v4.to_string(), Severity::Unknown),
            (
                format!(r#"{v4} "database_specific": {{"severity": "MODERATE"}},"#),
                Severity::Medium,
            ),
            (
                r#""database_specific": {"severity": "LOW"},"#.to_string(),
                Severity::Low,
            ),
            (
                r#""database_specific": {"severity": "whatever"},"#.to_string(),
                Severity::Unknown,
            ),
            (
                r#""severity": [{"type": "CVSS_V3", "score": "not a vector"}],"#.to_string(),
                Severity::Unknown,
            ),
            (String::new(), Severity::Unknown),
        ];
        for (extra, expect) in table {
            let mut db = Database::new();
            db.add_json(record_with(&extra).as_bytes(), "x")
                .expect("test input");
            let scan = db.scan(&inventory(None, vec![pypi("pkg", "1.0")]));
            assert_eq!(scan.findings.len(), 1, "{extra}");
            assert_eq!(scan.findings[0].severity, expect, "{extra}");
        }
        // Per-package severity words.
        for (field, expect) in [
            ("ecosystem_specific", Severity::High),
            ("database_specific", Severity::Critical),
        ] {
            let word = if expect == Severity::High {
                "HIGH"
            } else {
                "critical"
            };
            let json = format!(
                r#"{{"id": "X-1", "affected": [{{"package": {{"ecosystem": "PyPI", "name": "pkg"}}, "{field}": {{"severity": "{word}"}},
                "ranges": [{{"type": "ECOSYSTEM", "events": [{{"introduced": "0"}}]}}]}}]}}"#
            );
            let mut db = Database::new();
            db.add_json(json.as_bytes(), "x").expect("test input");
            let scan = db.scan(&inventory(None, vec![pypi("pkg", "1.0")]));
            assert_eq!(scan.findings[0].severity, expect, "{field}");
        }
    }

    #[test]
    fn limit_events_bound_the_range() {
        let json = r#"{"id": "X-2", "affected": [{"package": {"ecosystem": "PyPI", "name": "pkg"},
            "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.0"}, {"limit": "2.0"}]},
                       {"type": "ECOSYSTEM", "events": [{"introduced": "5.0"}, {"limit": "*"}]},
                       {"type": "GIT", "repo": "https://example.org/pkg", "events": [{"introduced": "0"}, {"fixed": "abc123"}]}]}]}"#;
        let mut db = Database::new();
        db.add_json(json.as_bytes(), "x").expect("test input");
        for (version, affected) in [
            ("0.9", false),
            ("1.0", true),
            ("1.9", true),
            ("2.0", false),
            ("4.0", false),
            ("5.0", true),
            ("99", true),
        ] {
            let scan = db.scan(&inventory(None, vec![pypi("pkg", version)]));
            assert_eq!(scan.findings.len(), usize::from(affected), "{version}");
            assert_eq!(scan.unparsable, vec![], "{version}");
        }
    }

    #[test]
    fn events_are_sorted_before_evaluation() {
        // Out of order on purpose: [1.0, 1.5) and [3.0, 4.0).
        let json = r#"{"id": "X-3", "affected": [{"package": {"ecosystem": "PyPI", "name": "pkg"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"fixed": "4.0"}, {"introduced": "3.0"}, {"fixed": "1.5"}, {"introduced": "1.0"}]}]}]}"#;
        let mut db = Database::new();
        db.add_json(json.as_bytes(), "x").expect("test input");
        for (version, fixed) in [
            ("0.5", None),
            ("1.2", Some("1.5")),
            ("2.0", None),
            ("3.5", Some("4.0")),
            ("4.0", None),
        ] {
            let scan = db.scan(&inventory(None, vec![pypi("pkg", version)]));
            let got: Vec<Option<&str>> = scan.findings.iter().map(|f| f.fixed.as_deref()).collect();
            let expect: Vec<Option<&str>> = fixed.map(Some).into_iter().collect();
            assert_eq!(got, expect, "{version}");
        }
    }

    #[test]
    fn malformed_ranges_are_reported_not_guessed() {
        let json = r#"{"id": "X-4", "affected": [{"package": {"ecosystem": "PyPI", "name": "pkg"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"fixed": "2.0"}]}]},
            {"package": {"ecosystem": "PyPI", "name": "other"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0", "fixed": "2.0"}]}]}]}"#;
        let mut db = Database::new();
        db.add_json(json.as_bytes(), "x").expect("test input");
        let scan = db.scan(&inventory(
            None,
            vec![pypi("pkg", "1.0"), pypi("other", "1.0")],
        ));
        assert_eq!(scan.findings, vec![]);
        let why: Vec<&str> = scan
            .unparsable
            .iter()
            .map(|(_, why)| why.as_str())
            .collect();
        assert_eq!(
            why,
            [
                "advisory X-4: an event of its ECOSYSTEM range has 2 versions instead of one; its ranges were not checked",
                "advisory X-4: its ECOSYSTEM range has no introduced event; its ranges were not checked",
            ]
        );
    }

    #[test]
    fn add_json_errors_name_the_file() {
        let mut db = Database::new();
        let err = db
            .add_json(b"{\"id\": ", "PyPI/broken.json")
            .expect_err("must fail");
        assert!(
            err.to_string()
                .starts_with("PyPI/broken.json is not a valid OSV record: "),
            "{err}"
        );
        let err = db
            .add_json(br#"{"summary": "no id"}"#, "PyPI/no-id.json")
            .expect_err("must fail");
        assert!(err.to_string().contains("missing field `id`"), "{err}");
        let err = db
            .add_json(br#"{"id": "X", "affected": "nope"}"#, "PyPI/x.json")
            .expect_err("must fail");
        assert!(err.to_string().starts_with("PyPI/x.json"), "{err}");
        assert!(db.is_empty());
        // A list of records, and nulls where lists belong.
        db.add_json(br#" [{"id": "A", "aliases": null, "affected": null}, {"id": "B", "withdrawn": "2024-01-01T00:00:00Z"}]"#, "all.json")
            .expect("test input");
        assert_eq!((db.len(), db.withdrawn()), (1, 1));
    }

    #[test]
    fn long_titles_are_cut_on_a_character_boundary() {
        let details = format!("{}\nsecond line", "é".repeat(300));
        let json = serde_json::json!({"id": "X-5", "details": details, "summary": "  ",
            "affected": [{"package": {"ecosystem": "PyPI", "name": "pkg"}, "versions": ["1.0"]}]});
        let mut db = Database::new();
        db.add_json(json.to_string().as_bytes(), "x")
            .expect("test input");
        let scan = db.scan(&inventory(None, vec![pypi("pkg", "1.0")]));
        assert_eq!(scan.findings[0].title, "é".repeat(200));
    }
}
