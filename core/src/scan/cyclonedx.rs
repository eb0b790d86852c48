//! The inventory as a CycloneDX 1.5 JSON SBOM, with a purl for every
//! package, and back: [`to_json`] writes deterministic bytes (the same
//! inventory and subject give the same document, serial number included),
//! [`from_json`] reads our documents exactly and Trivy's CycloneDX well
//! enough to compare packages (`labforge diff`).
//!
//! Pure: the caller gives the timestamp and the tool version, and stores or
//! pushes the bytes. Nothing here knows about registries or files.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::inventory::sort_packages;
use super::{Distro, Inventory, Package, PackageKind, SourcePackage};

/// The CycloneDX version [`to_json`] writes.
pub const SPEC_VERSION: &str = "1.5";
/// The media type of the documents [`to_json`] writes.
pub const MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";

const SCHEMA: &str = "http://cyclonedx.org/schema/bom-1.5.schema.json";

const PROP_KIND: &str = "labforge:package:kind";
const PROP_PATH: &str = "labforge:package:path";
const PROP_ARCH: &str = "labforge:package:arch";
const PROP_SOURCE: &str = "labforge:package:source";
const PROP_SOURCE_VERSION: &str = "labforge:package:source_version";
const PROP_DISTRO_ID: &str = "labforge:distro:id";
const PROP_DISTRO_VERSION_ID: &str = "labforge:distro:version_id";
const PROP_DISTRO_CODENAME: &str = "labforge:distro:codename";
const PROP_IMAGE_TAG: &str = "labforge:image:tag";

const TRIVY_PKG_TYPE: &str = "aquasecurity:trivy:PkgType";
const TRIVY_FILE_PATH: &str = "aquasecurity:trivy:FilePath";
const TRIVY_SRC_NAME: &str = "aquasecurity:trivy:SrcName";
const TRIVY_SRC_VERSION: &str = "aquasecurity:trivy:SrcVersion";
const TRIVY_SRC_RELEASE: &str = "aquasecurity:trivy:SrcRelease";
const TRIVY_SRC_EPOCH: &str = "aquasecurity:trivy:SrcEpoch";

/// The image an SBOM describes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// The repository, with its registry: `registry.example.org/labforge/notebook`.
    pub name: String,
    /// The manifest digest, `sha256:…`.
    pub digest: String,
    /// Tags the image had when the SBOM was made.
    pub tags: Vec<String>,
    /// RFC 3339, given by the caller (the core reads no clock).
    pub timestamp: String,
    /// The labforge version that made the document.
    pub tool_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CycloneDxError {
    #[error(
        "the SBOM is not valid CycloneDX JSON ({message}); pass the JSON document `labforge sbom` or `trivy image --format cyclonedx` writes"
    )]
    Json { message: String },
    #[error(
        "the document is not a CycloneDX SBOM (its bomFormat is {found:?}); pass a CycloneDX JSON document"
    )]
    NotCycloneDx { found: String },
    #[error("component {component:?} has no {field}; the SBOM is incomplete, generate it again")]
    MissingField {
        component: String,
        field: &'static str,
    },
    #[error(
        "component {component:?} has the unknown {PROP_KIND} {kind:?}; it was written by another labforge version"
    )]
    UnknownKind { component: String, kind: String },
}

// ---------------------------------------------------------------------------
// purls

/// Percent-encodes everything but the purl spec's unreserved characters
/// (`A-Z a-z 0-9 . - _ ~`): `+` becomes `%2B`, an epoch's `:` `%3A`, a
/// repository's `/` `%2F`.
fn pct(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// Decodes `%XX` sequences; anything malformed stays as written.
fn pct_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn push_qualifiers(out: &mut String, qualifiers: &[(&str, &str)]) {
    let mut sep = '?';
    for (key, value) in qualifiers {
        if value.is_empty() {
            continue;
        }
        out.push(sep);
        out.push_str(key);
        out.push('=');
        out.push_str(&pct(value));
        sep = '&';
    }
}

/// The purl of an installed package, per the purl spec's types:
/// `pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12`,
/// `pkg:pypi/flask-login@0.6.3` (lowercased, `_` → `-`),
/// `pkg:conda/openssl@3.0.13?subdir=linux-64`. A deb package's namespace is
/// the distribution's id (`debian` when unknown), its `distro` qualifier
/// `<id>-<VERSION_ID>` (or `<id>-<codename>` on testing and unstable).
/// Qualifiers are sorted by key, empty ones left out.
pub fn purl(package: &Package, distro: Option<&Distro>) -> String {
    let mut out = String::from("pkg:");
    let distro_qualifier;
    let mut qualifiers: Vec<(&str, &str)> = Vec::new();
    match package.kind {
        PackageKind::Deb => {
            let namespace = distro
                .map(|d| d.id.to_ascii_lowercase())
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| "debian".to_owned());
            out.push_str("deb/");
            out.push_str(&pct(&namespace));
            out.push('/');
            out.push_str(&pct(&package.name.to_ascii_lowercase()));
            distro_qualifier = distro
                .filter(|d| !d.id.is_empty())
                .map(|d| {
                    let release = if d.version_id.is_empty() {
                        &d.codename
                    } else {
                        &d.version_id
                    };
                    if release.is_empty() {
                        String::new()
                    } else {
                        format!("{namespace}-{release}")
                    }
                })
                .unwrap_or_default();
            qualifiers.push(("arch", &package.arch));
            qualifiers.push(("distro", &distro_qualifier));
        }
        PackageKind::Pypi => {
            out.push_str("pypi/");
            out.push_str(&pct(&package.name.to_lowercase().replace('_', "-")));
        }
        PackageKind::Conda => {
            out.push_str("conda/");
            out.push_str(&pct(&package.name));
            qualifiers.push(("subdir", &package.arch));
        }
        PackageKind::Other => {
            out.push_str("generic/");
            out.push_str(&pct(&package.name));
        }
    }
    if !package.version.is_empty() {
        out.push('@');
        out.push_str(&pct(&package.version));
    }
    push_qualifiers(&mut out, &qualifiers);
    out
}

/// The purl of an image: `pkg:oci/<last path segment of the repository,
/// lowercased>@<digest>?repository_url=<repository>`, both percent-encoded.
pub fn oci_purl(repository: &str, digest: &str) -> String {
    let name = repository
        .rsplit('/')
        .next()
        .unwrap_or(repository)
        .to_lowercase();
    let mut out = format!("pkg:oci/{}@{}", pct(&name), pct(digest));
    push_qualifiers(&mut out, &[("repository_url", repository)]);
    out
}

/// A qualifier's value in a purl, decoded.
fn purl_qualifier(purl: &str, key: &str) -> Option<String> {
    let purl = purl.split('#').next().unwrap_or(purl);
    let (_, query) = purl.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.eq_ignore_ascii_case(key).then(|| pct_decode(v))
    })
}

/// `urn:uuid:` and a UUID (version 5 layout) from the first 16 bytes of
/// sha256(digest): the same image always gets the same serial number.
fn serial_number(digest: &str) -> String {
    let hash = Sha256::digest(digest.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&hash[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

// ---------------------------------------------------------------------------
// Licenses

/// Whether `s` reads as an SPDX license expression (ids joined by `AND`,
/// `OR`, `WITH` and parentheses); free text such as `BSD License` does not,
/// and goes into `license.name` instead.
fn is_spdx_expression(s: &str) -> bool {
    let spaced = s.replace('(', " ( ").replace(')', " ) ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut pos = 0;
    expression(&tokens, &mut pos, 0) && pos == tokens.len()
}

fn is_license_id(token: &str) -> bool {
    !matches!(token, "AND" | "OR" | "WITH" | "(" | ")")
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b':'))
}

fn expression(tokens: &[&str], pos: &mut usize, depth: usize) -> bool {
    if depth > 16 {
        return false;
    }
    loop {
        match tokens.get(*pos) {
            Some(&"(") => {
                *pos += 1;
                if !expression(tokens, pos, depth + 1) || tokens.get(*pos) != Some(&")") {
                    return false;
                }
                *pos += 1;
            }
            Some(t) if is_license_id(t) => {
                *pos += 1;
                if tokens.get(*pos) == Some(&"WITH") {
                    *pos += 1;
                    match tokens.get(*pos) {
                        Some(t) if is_license_id(t) => *pos += 1,
                        _ => return false,
                    }
                }
            }
            _ => return false,
        }
        match tokens.get(*pos) {
            Some(&("AND" | "OR")) => *pos += 1,
            _ => return true,
        }
    }
}

// ---------------------------------------------------------------------------
// The document

#[derive(Debug, Default, Serialize, Deserialize)]
struct Bom {
    #[serde(rename = "$schema", default, skip_serializing_if = "String::is_empty")]
    schema: String,
    #[serde(rename = "bomFormat", default)]
    bom_format: String,
    #[serde(rename = "specVersion", default)]
    spec_version: String,
    #[serde(
        rename = "serialNumber",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    serial_number: String,
    #[serde(default)]
    version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata>,
    #[serde(default)]
    components: Vec<Component>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dependencies: Vec<Dependency>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Metadata {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    timestamp: String,
    /// Written only: CycloneDX before 1.5 had a list here, and nothing is
    /// read from it.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    tools: Option<Tools>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    component: Option<Component>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
}

#[derive(Debug, Default, Serialize)]
struct Tools {
    components: Vec<Component>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Component {
    #[serde(rename = "bom-ref", default, skip_serializing_if = "String::is_empty")]
    bom_ref: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    licenses: Vec<LicenseChoice>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    purl: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    components: Vec<Component>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LicenseChoice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    license: Option<License>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expression: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct License {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Property {
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Dependency {
    #[serde(rename = "ref", default)]
    reference: String,
    #[serde(rename = "dependsOn", default)]
    depends_on: Vec<String>,
}

fn property(name: &str, value: &str) -> Property {
    Property {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

impl Component {
    fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_str())
    }

    /// The licenses as one string: `A AND (B OR C)` for several.
    fn license(&self) -> Option<String> {
        let parts: Vec<&str> = self
            .licenses
            .iter()
            .filter_map(|l| {
                l.expression.as_deref().or_else(|| {
                    l.license
                        .as_ref()
                        .and_then(|x| x.id.as_deref().or(x.name.as_deref()))
                })
            })
            .filter(|s| !s.trim().is_empty())
            .collect();
        match parts.as_slice() {
            [] => None,
            [one] => Some((*one).to_owned()),
            many => Some(
                many.iter()
                    .map(|p| {
                        if p.contains(char::is_whitespace) {
                            format!("({p})")
                        } else {
                            (*p).to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" AND "),
            ),
        }
    }

    fn describe(&self) -> String {
        if self.bom_ref.is_empty() {
            self.name.clone()
        } else {
            self.bom_ref.clone()
        }
    }
}

fn license_choice(license: &str) -> LicenseChoice {
    if is_spdx_expression(license) {
        LicenseChoice {
            license: None,
            expression: Some(license.to_owned()),
        }
    } else {
        LicenseChoice {
            license: Some(License {
                id: None,
                name: Some(license.to_owned()),
            }),
            expression: None,
        }
    }
}

/// The SBOM of an image as CycloneDX 1.5 JSON: deterministic bytes
/// (2-space indentation, fields in a fixed order, components in inventory
/// order), a serial number derived from the digest, the container as
/// `metadata.component`, one `library` component per package with a
/// `bom-ref` unique in the document (the purl; with a `file_path`
/// qualifier when two packages share a purl, e.g. one pip package in two
/// environments), and the container depending on every component.
pub fn to_json(inventory: &Inventory, subject: &Subject) -> Vec<u8> {
    let distro = inventory.distro.as_ref();
    let container_ref = oci_purl(&subject.name, &subject.digest);
    let purls: Vec<String> = inventory.packages.iter().map(|p| purl(p, distro)).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for p in &purls {
        *counts.entry(p.as_str()).or_default() += 1;
    }
    let mut taken: HashSet<String> = HashSet::from([container_ref.clone()]);
    let mut components = Vec::with_capacity(purls.len());
    for (package, purl) in inventory.packages.iter().zip(&purls) {
        let mut bom_ref = purl.clone();
        if counts.get(purl.as_str()).copied().unwrap_or(0) > 1 {
            bom_ref.push(if bom_ref.contains('?') { '&' } else { '?' });
            bom_ref.push_str("file_path=");
            bom_ref.push_str(&pct(&package.path));
        }
        if taken.contains(&bom_ref) {
            let base = bom_ref.clone();
            let mut n = 2usize;
            while taken.contains(&bom_ref) {
                bom_ref = format!("{base}#{n}");
                n += 1;
            }
        }
        taken.insert(bom_ref.clone());
        let mut properties = vec![
            property(PROP_KIND, package.kind.as_str()),
            property(PROP_PATH, &package.path),
        ];
        if !package.arch.is_empty() {
            properties.push(property(PROP_ARCH, &package.arch));
        }
        if let Some(source) = &package.source {
            properties.push(property(PROP_SOURCE, &source.name));
            properties.push(property(PROP_SOURCE_VERSION, &source.version));
        }
        components.push(Component {
            bom_ref,
            kind: "library".to_owned(),
            name: package.name.clone(),
            version: package.version.clone(),
            licenses: package.license.iter().map(|l| license_choice(l)).collect(),
            purl: purl.clone(),
            properties,
            components: Vec::new(),
        });
    }

    let mut tags = subject.tags.clone();
    tags.sort();
    tags.dedup();
    let mut metadata_properties = Vec::new();
    if let Some(d) = distro {
        metadata_properties.push(property(PROP_DISTRO_ID, &d.id));
        if !d.version_id.is_empty() {
            metadata_properties.push(property(PROP_DISTRO_VERSION_ID, &d.version_id));
        }
        if !d.codename.is_empty() {
            metadata_properties.push(property(PROP_DISTRO_CODENAME, &d.codename));
        }
    }
    let dependencies = vec![Dependency {
        reference: container_ref.clone(),
        depends_on: components.iter().map(|c| c.bom_ref.clone()).collect(),
    }];
    let bom = Bom {
        schema: SCHEMA.to_owned(),
        bom_format: "CycloneDX".to_owned(),
        spec_version: SPEC_VERSION.to_owned(),
        serial_number: serial_number(&subject.digest),
        version: 1,
        metadata: Some(Metadata {
            timestamp: subject.timestamp.clone(),
            tools: Some(Tools {
                components: vec![Component {
                    kind: "application".to_owned(),
                    name: "labforge".to_owned(),
                    version: subject.tool_version.clone(),
                    ..Component::default()
                }],
            }),
            component: Some(Component {
                bom_ref: container_ref.clone(),
                kind: "container".to_owned(),
                name: subject.name.clone(),
                version: subject.digest.clone(),
                purl: container_ref,
                properties: tags.iter().map(|t| property(PROP_IMAGE_TAG, t)).collect(),
                ..Component::default()
            }),
            properties: metadata_properties,
        }),
        components,
        dependencies,
    };
    // Plain structs with string keys: serde_json cannot fail on them.
    let mut out = serde_json::to_vec_pretty(&bom).expect("a CycloneDX document always serializes");
    out.push(b'\n');
    out
}

/// Reads an SBOM back into an inventory: our own documents exactly
/// (`from_json(&to_json(inv, s)) == inv` for a sorted inventory), and
/// Trivy's CycloneDX: components whose `aquasecurity:trivy:PkgType` is
/// `debian`, `ubuntu` or `dpkg` (deb), `python-pkg` (pypi) or `conda-pkg`
/// (conda); other package types (lock files, jars, binaries) are skipped.
/// From Trivy's documents the path is `aquasecurity:trivy:FilePath` (empty
/// when absent), the source package `SrcName` and `[SrcEpoch:]SrcVersion[-SrcRelease]`,
/// the arch the purl's `arch` or `subdir` qualifier, and the distribution
/// the `operating-system` component.
pub fn from_json(bytes: &[u8]) -> Result<Inventory, CycloneDxError> {
    let bom: Bom = serde_json::from_slice(bytes).map_err(|e| CycloneDxError::Json {
        message: e.to_string(),
    })?;
    if bom.bom_format != "CycloneDX" {
        return Err(CycloneDxError::NotCycloneDx {
            found: bom.bom_format,
        });
    }
    let mut distro = bom.metadata.as_ref().and_then(|m| {
        let get = |name: &str| {
            m.properties
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.value.clone())
        };
        Some(Distro {
            id: get(PROP_DISTRO_ID)?,
            version_id: get(PROP_DISTRO_VERSION_ID).unwrap_or_default(),
            codename: get(PROP_DISTRO_CODENAME).unwrap_or_default(),
        })
    });
    let mut trivy_os = None;
    let mut packages = Vec::new();
    let mut stack: Vec<&Component> = bom.components.iter().rev().collect();
    while let Some(c) = stack.pop() {
        stack.extend(c.components.iter().rev());
        if let Some(kind) = c.property(PROP_KIND) {
            packages.push(ours(c, kind)?);
        } else if let Some(pkg_type) = c.property(TRIVY_PKG_TYPE) {
            if let Some(package) = trivy(c, pkg_type)? {
                packages.push(package);
            }
        } else if c.kind == "operating-system" && trivy_os.is_none() && !c.name.is_empty() {
            trivy_os = Some(Distro {
                id: c.name.to_ascii_lowercase(),
                version_id: c.version.clone(),
                codename: String::new(),
            });
        }
    }
    if distro.is_none() {
        distro = trivy_os;
    }
    sort_packages(&mut packages);
    Ok(Inventory { distro, packages })
}

fn required<'a>(
    c: &'a Component,
    value: &'a str,
    field: &'static str,
) -> Result<&'a str, CycloneDxError> {
    if value.is_empty() {
        Err(CycloneDxError::MissingField {
            component: c.describe(),
            field,
        })
    } else {
        Ok(value)
    }
}

fn ours(c: &Component, kind: &str) -> Result<Package, CycloneDxError> {
    let kind = match kind {
        "deb" => PackageKind::Deb,
        "pypi" => PackageKind::Pypi,
        "conda" => PackageKind::Conda,
        "other" => PackageKind::Other,
        _ => {
            return Err(CycloneDxError::UnknownKind {
                component: c.describe(),
                kind: kind.to_owned(),
            });
        }
    };
    let source = c.property(PROP_SOURCE).map(|name| SourcePackage {
        name: name.to_owned(),
        version: c
            .property(PROP_SOURCE_VERSION)
            .unwrap_or_default()
            .to_owned(),
    });
    Ok(Package {
        kind,
        name: required(c, &c.name, "name")?.to_owned(),
        version: required(c, &c.version, "version")?.to_owned(),
        source,
        arch: c.property(PROP_ARCH).unwrap_or_default().to_owned(),
        license: c.license(),
        path: c.property(PROP_PATH).unwrap_or_default().to_owned(),
    })
}

fn trivy(c: &Component, pkg_type: &str) -> Result<Option<Package>, CycloneDxError> {
    let kind = match pkg_type {
        "debian" | "ubuntu" | "dpkg" => PackageKind::Deb,
        "python-pkg" => PackageKind::Pypi,
        "conda-pkg" => PackageKind::Conda,
        _ => return Ok(None),
    };
    let name = required(c, &c.name, "name")?.to_owned();
    let version = required(c, &c.version, "version")?.to_owned();
    let (source, arch) = match kind {
        PackageKind::Deb => {
            let src_name = c
                .property(TRIVY_SRC_NAME)
                .filter(|s| !s.is_empty())
                .unwrap_or(&name);
            let src_version = match c.property(TRIVY_SRC_VERSION).filter(|s| !s.is_empty()) {
                None => version.clone(),
                Some(v) => {
                    let mut full = String::new();
                    if let Some(epoch) = c
                        .property(TRIVY_SRC_EPOCH)
                        .filter(|e| !e.is_empty() && *e != "0")
                    {
                        full.push_str(epoch);
                        full.push(':');
                    }
                    full.push_str(v);
                    if let Some(release) = c.property(TRIVY_SRC_RELEASE).filter(|r| !r.is_empty()) {
                        full.push('-');
                        full.push_str(release);
                    }
                    full
                }
            };
            let source = SourcePackage {
                name: src_name.to_owned(),
                version: src_version,
            };
            (Some(source), purl_qualifier(&c.purl, "arch"))
        }
        PackageKind::Conda => (None, purl_qualifier(&c.purl, "subdir")),
        _ => (None, None),
    };
    Ok(Some(Package {
        kind,
        name,
        version,
        source,
        arch: arch.unwrap_or_default(),
        license: c.license(),
        path: c.property(TRIVY_FILE_PATH).unwrap_or_default().to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn package(kind: PackageKind, name: &str, version: &str) -> Package {
        Package {
            kind,
            name: name.into(),
            version: version.into(),
            source: None,
            arch: String::new(),
            license: None,
            path: String::new(),
        }
    }

    fn distro(id: &str, version_id: &str, codename: &str) -> Distro {
        Distro {
            id: id.into(),
            version_id: version_id.into(),
            codename: codename.into(),
        }
    }

    fn deb(name: &str, version: &str, arch: &str) -> Package {
        Package {
            arch: arch.into(),
            ..package(PackageKind::Deb, name, version)
        }
    }

    #[test]
    fn purls_match_what_trivy_writes() {
        // From tests/fixtures/trivy/*.json (`PkgIdentifier.PURL`) and
        // conda-cyclonedx.json. Trivy names the Debian release from
        // /etc/debian_version (10.1), so the distro here says the same.
        let buster = distro("debian", "10.1", "buster");
        let stretch = distro("debian", "9.9", "stretch");
        let bionic = distro("ubuntu", "18.04", "bionic");
        let cases: &[(Package, Option<&Distro>, &str)] = &[
            (
                deb("bash", "5.0-4", "amd64"),
                Some(&buster),
                "pkg:deb/debian/bash@5.0-4?arch=amd64&distro=debian-10.1",
            ),
            (
                deb("libidn2-0", "2.0.5-1", "amd64"),
                Some(&buster),
                "pkg:deb/debian/libidn2-0@2.0.5-1?arch=amd64&distro=debian-10.1",
            ),
            (
                deb("libssl1.1", "1.1.0k-1~deb9u1", "amd64"),
                Some(&stretch),
                "pkg:deb/debian/libssl1.1@1.1.0k-1~deb9u1?arch=amd64&distro=debian-9.9",
            ),
            (
                deb("e2fsprogs", "1.44.1-1ubuntu1.1", "amd64"),
                Some(&bionic),
                "pkg:deb/ubuntu/e2fsprogs@1.44.1-1ubuntu1.1?arch=amd64&distro=ubuntu-18.04",
            ),
            (
                package(PackageKind::Pypi, "Flask", "2.0.0"),
                None,
                "pkg:pypi/flask@2.0.0",
            ),
            (
                package(PackageKind::Pypi, "Jinja2", "3.0.0"),
                Some(&buster),
                "pkg:pypi/jinja2@3.0.0",
            ),
            (
                package(PackageKind::Pypi, "oauth2-client", "4.0.0"),
                None,
                "pkg:pypi/oauth2-client@4.0.0",
            ),
            (
                package(PackageKind::Conda, "openssl", "1.1.1q"),
                None,
                "pkg:conda/openssl@1.1.1q",
            ),
        ];
        for (p, d, expected) in cases {
            assert_eq!(purl(p, *d), *expected, "{p:?}");
        }
    }

    #[test]
    fn purl_encoding_and_qualifiers() {
        let bookworm = distro("debian", "12", "bookworm");
        let cases: &[(Package, Option<Distro>, &str)] = &[
            (
                deb("libc6", "2.36-9+deb12u4", "amd64"),
                Some(bookworm.clone()),
                "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12",
            ),
            (
                deb("login", "1:4.13+dfsg1-1+b1", "amd64"),
                Some(bookworm.clone()),
                "pkg:deb/debian/login@1%3A4.13%2Bdfsg1-1%2Bb1?arch=amd64&distro=debian-12",
            ),
            (
                deb("tzdata", "2024a-0+deb12u1", "all"),
                Some(distro("debian", "", "trixie")),
                "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-trixie",
            ),
            (deb("Foo", "1", ""), None, "pkg:deb/debian/foo@1"),
            (
                deb("bash", "5.1-6ubuntu1", "amd64"),
                Some(distro("Ubuntu", "22.04", "jammy")),
                "pkg:deb/ubuntu/bash@5.1-6ubuntu1?arch=amd64&distro=ubuntu-22.04",
            ),
            (
                package(PackageKind::Pypi, "Flask_Login", "0.6.3"),
                None,
                "pkg:pypi/flask-login@0.6.3",
            ),
            (
                package(PackageKind::Pypi, "torch", "2.3.0+cu121"),
                None,
                "pkg:pypi/torch@2.3.0%2Bcu121",
            ),
            (
                Package {
                    arch: "linux-64".into(),
                    ..package(PackageKind::Conda, "_libgcc_mutex", "0.1")
                },
                None,
                "pkg:conda/_libgcc_mutex@0.1?subdir=linux-64",
            ),
            (
                package(PackageKind::Other, "left pad", "1.0"),
                None,
                "pkg:generic/left%20pad@1.0",
            ),
        ];
        for (p, d, expected) in cases {
            assert_eq!(purl(p, d.as_ref()), *expected, "{p:?}");
        }
        assert_eq!(
            oci_purl("registry.example.org:5000/LabForge/Notebook", "sha256:abc"),
            "pkg:oci/notebook@sha256%3Aabc?repository_url=registry.example.org%3A5000%2FLabForge%2FNotebook"
        );
        assert_eq!(
            oci_purl("busybox", "sha256:0"),
            "pkg:oci/busybox@sha256%3A0?repository_url=busybox"
        );
    }

    #[test]
    fn purl_qualifiers_read_back() {
        let p = "pkg:deb/debian/login@1%3A4.13?arch=amd64&distro=debian-12#sub";
        assert_eq!(purl_qualifier(p, "arch").as_deref(), Some("amd64"));
        assert_eq!(purl_qualifier(p, "distro").as_deref(), Some("debian-12"));
        assert_eq!(purl_qualifier(p, "subdir"), None);
        assert_eq!(purl_qualifier("pkg:pypi/a@1", "arch"), None);
        assert_eq!(pct_decode("a%2Bb%3a%zz%4"), "a+b:%zz%4");
    }

    #[test]
    fn serial_number_is_a_stable_version_5_uuid() {
        let a = serial_number("sha256:aaaa");
        assert_eq!(a, serial_number("sha256:aaaa"));
        assert_ne!(a, serial_number("sha256:aaab"));
        let uuid = a.strip_prefix("urn:uuid:").expect("a urn:uuid");
        let groups: Vec<&str> = uuid.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(
            uuid.bytes()
                .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert!(groups[2].starts_with('5'), "{uuid}");
        assert!(
            matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
            "{uuid}"
        );
    }

    #[test]
    fn spdx_expressions_are_told_from_free_text() {
        for (text, expected) in [
            ("MIT", true),
            ("Apache-2.0", true),
            ("GPL-2.0+", true),
            ("MIT OR Apache-2.0", true),
            ("(MIT OR Apache-2.0) AND BSD-3-Clause", true),
            ("GPL-2.0-only WITH Classpath-exception-2.0", true),
            ("LicenseRef-scancode-public-domain", true),
            ("BSD License", false),
            ("Apache 2.0", false),
            ("MIT AND", false),
            ("(MIT", false),
            ("MIT)", false),
            ("AND", false),
            ("", false),
            ("Copyright (c) 2005, NumPy Developers.", false),
            ("MIT WITH", false),
        ] {
            assert_eq!(is_spdx_expression(text), expected, "{text:?}");
        }
        let deep = format!("{}MIT{}", "(".repeat(40), ")".repeat(40));
        assert!(!is_spdx_expression(&deep));
    }

    fn sample_inventory() -> Inventory {
        let mut packages = vec![
            Package {
                source: Some(SourcePackage {
                    name: "glibc".into(),
                    version: "2.36-9+deb12u4".into(),
                }),
                path: "var/lib/dpkg/status".into(),
                ..deb("libc6", "2.36-9+deb12u4", "amd64")
            },
            Package {
                source: Some(SourcePackage {
                    name: "shadow".into(),
                    version: "1:4.13+dfsg1-1".into(),
                }),
                path: "var/lib/dpkg/status".into(),
                ..deb("login", "1:4.13+dfsg1-1+b1", "amd64")
            },
            Package {
                license: Some("Apache-2.0".into()),
                path: "opt/conda/lib/python3.11/site-packages/requests-2.32.3.dist-info/METADATA"
                    .into(),
                ..package(PackageKind::Pypi, "requests", "2.32.3")
            },
            Package {
                license: Some("Apache-2.0".into()),
                path: "usr/lib/python3/dist-packages/requests-2.32.3.dist-info/METADATA".into(),
                ..package(PackageKind::Pypi, "requests", "2.32.3")
            },
            Package {
                license: Some("BSD License".into()),
                path: "opt/conda/lib/python3.11/site-packages/Flask_Login-0.6.3.dist-info/METADATA"
                    .into(),
                ..package(PackageKind::Pypi, "Flask_Login", "0.6.3")
            },
            Package {
                arch: "linux-64".into(),
                license: Some("OpenSSL".into()),
                path: "opt/conda/conda-meta/openssl-1.1.1q-h7f8727e_0.json".into(),
                ..package(PackageKind::Conda, "openssl", "1.1.1q")
            },
        ];
        sort_packages(&mut packages);
        Inventory {
            distro: Some(distro("debian", "12", "bookworm")),
            packages,
        }
    }

    fn sample_subject() -> Subject {
        Subject {
            name: "registry.example.org:5000/labforge/notebook".into(),
            digest: "sha256:4a0f6e6bb0c16e7ac8b4fd5b8ae1bfa3b2e7c6a7b6e0cf1dc43c3f3d1a6c2b1e"
                .into(),
            tags: vec!["latest".into(), "2024.06".into(), "latest".into()],
            timestamp: "2024-06-01T12:00:00Z".into(),
            tool_version: "0.1.0".into(),
        }
    }

    #[test]
    fn sbom_snapshot() {
        let json = to_json(&sample_inventory(), &sample_subject());
        insta::assert_snapshot!(String::from_utf8(json).expect("UTF-8"));
    }

    #[test]
    fn same_input_same_bytes() {
        let a = to_json(&sample_inventory(), &sample_subject());
        let b = to_json(&sample_inventory(), &sample_subject());
        assert_eq!(a, b);
        let mut other = sample_subject();
        other.digest = "sha256:0000".into();
        let c: Value =
            serde_json::from_slice(&to_json(&sample_inventory(), &other)).expect("valid JSON");
        let a: Value = serde_json::from_slice(&a).expect("valid JSON");
        assert_ne!(a["serialNumber"], c["serialNumber"]);
    }

    /// What the CycloneDX 1.5 schema requires of the parts we write, and the
    /// document's internal references.
    fn check_structure(doc: &Value) {
        assert_eq!(doc["bomFormat"], "CycloneDX");
        assert_eq!(doc["specVersion"], "1.5");
        assert_eq!(doc["version"], 1);
        let serial = doc["serialNumber"].as_str().expect("a string");
        assert!(
            serial.starts_with("urn:uuid:") && serial.len() == 45,
            "{serial}"
        );
        let types = [
            "application",
            "framework",
            "library",
            "container",
            "platform",
            "operating-system",
            "device",
            "device-driver",
            "firmware",
            "file",
            "machine-learning-model",
            "data",
        ];
        let container = &doc["metadata"]["component"];
        assert_eq!(container["type"], "container");
        for tool in doc["metadata"]["tools"]["components"]
            .as_array()
            .expect("an array")
        {
            assert!(types.contains(&tool["type"].as_str().expect("a string")));
            assert!(tool["name"].is_string());
        }
        let mut refs = HashSet::new();
        assert!(refs.insert(container["bom-ref"].as_str().expect("a string").to_owned()));
        for c in doc["components"].as_array().expect("an array") {
            let r = c["bom-ref"]
                .as_str()
                .expect("every component has a bom-ref");
            assert!(refs.insert(r.to_owned()), "duplicate bom-ref {r}");
            assert!(
                types.contains(&c["type"].as_str().expect("a string")),
                "{c}"
            );
            assert!(c["name"].as_str().is_some_and(|n| !n.is_empty()));
            assert!(c["purl"].as_str().expect("a string").starts_with("pkg:"));
            for l in c["licenses"].as_array().into_iter().flatten() {
                let obj = l.as_object().expect("an object");
                assert_eq!(
                    obj.len(),
                    1,
                    "a license is either an expression or a license: {l}"
                );
                assert!(
                    l["expression"].is_string()
                        || l["license"]["name"].is_string()
                        || l["license"]["id"].is_string()
                );
            }
            for p in c["properties"].as_array().into_iter().flatten() {
                assert!(p["name"].is_string() && p["value"].is_string());
            }
        }
        let deps = doc["dependencies"].as_array().expect("an array");
        let mut seen = HashSet::new();
        for d in deps {
            let r = d["ref"].as_str().expect("a string");
            assert!(refs.contains(r), "dependency ref {r} names no component");
            assert!(seen.insert(r.to_owned()), "two dependency entries for {r}");
            for on in d["dependsOn"].as_array().expect("an array") {
                assert!(
                    refs.contains(on.as_str().expect("a string")),
                    "dependsOn {on} names no component"
                );
            }
        }
        // The container depends on every component.
        let top = deps
            .iter()
            .find(|d| d["ref"] == container["bom-ref"])
            .expect("the container has a dependency entry");
        assert_eq!(
            top["dependsOn"].as_array().expect("an array").len(),
            doc["components"].as_array().expect("an array").len()
        );
    }

    #[test]
    fn sbom_is_structurally_valid() {
        let doc: Value = serde_json::from_slice(&to_json(&sample_inventory(), &sample_subject()))
            .expect("valid JSON");
        check_structure(&doc);
        // The duplicate requests got distinct bom-refs naming their paths.
        let refs: Vec<&str> = doc["components"]
            .as_array()
            .expect("an array")
            .iter()
            .map(|c| c["bom-ref"].as_str().expect("a string"))
            .filter(|r| r.starts_with("pkg:pypi/requests@"))
            .collect();
        assert_eq!(refs.len(), 2);
        assert!(refs.iter().all(|r| r.contains("?file_path=")), "{refs:?}");
        let empty: Value =
            serde_json::from_slice(&to_json(&Inventory::default(), &sample_subject()))
                .expect("valid JSON");
        check_structure(&empty);
        assert!(empty["metadata"].get("properties").is_none());
    }

    #[test]
    fn same_purl_and_path_still_gets_unique_bom_refs() {
        let p = package(PackageKind::Pypi, "a", "1");
        let inv = Inventory {
            distro: None,
            packages: vec![p.clone(), p.clone(), p],
        };
        let doc: Value =
            serde_json::from_slice(&to_json(&inv, &sample_subject())).expect("valid JSON");
        check_structure(&doc);
    }

    #[test]
    fn round_trip() {
        let inv = sample_inventory();
        assert_eq!(from_json(&to_json(&inv, &sample_subject())), Ok(inv));
        let no_distro = Inventory {
            distro: None,
            packages: vec![package(PackageKind::Other, "x", "1")],
        };
        assert_eq!(
            from_json(&to_json(&no_distro, &sample_subject())),
            Ok(no_distro)
        );
    }

    #[test]
    fn reads_trivys_conda_sbom() {
        let inv = from_json(include_bytes!(
            "../../../tests/fixtures/trivy/conda-cyclonedx.json"
        ))
        .expect("Trivy's SBOM reads");
        assert_eq!(inv.distro, None);
        assert_eq!(
            inv.packages,
            [
                Package {
                    license: Some("OpenSSL".into()),
                    path: "miniconda3/envs/testenv/conda-meta/openssl-1.1.1q-h7f8727e_0.json"
                        .into(),
                    ..package(PackageKind::Conda, "openssl", "1.1.1q")
                },
                Package {
                    license: Some("MIT".into()),
                    path: "miniconda3/envs/testenv/conda-meta/pip-22.2.2-py38h06a4308_0.json"
                        .into(),
                    ..package(PackageKind::Conda, "pip", "22.2.2")
                },
            ]
        );
    }

    /// The shape of `trivy image --format cyclonedx` for a Debian image with
    /// a pip package: an operating-system component, deb packages with
    /// their source split into version, release and epoch, a lock-file
    /// package type that is not an installed package.
    const TRIVY_IMAGE: &str = r#"{
  "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
  "bomFormat": "CycloneDX",
  "specVersion": "1.6",
  "serialNumber": "urn:uuid:3ff14136-e09f-4df9-80ea-000000000001",
  "version": 1,
  "metadata": {
    "timestamp": "2021-08-25T12:20:30+00:00",
    "tools": [{"vendor": "aquasecurity", "name": "trivy", "version": "dev"}],
    "component": {
      "bom-ref": "pkg:oci/debian@sha256%3A4a0f?arch=amd64&repository_url=index.docker.io%2Flibrary%2Fdebian",
      "type": "container",
      "name": "debian:12",
      "purl": "pkg:oci/debian@sha256%3A4a0f?arch=amd64&repository_url=index.docker.io%2Flibrary%2Fdebian"
    }
  },
  "components": [
    {
      "bom-ref": "3ff14136-e09f-4df9-80ea-000000000003",
      "type": "operating-system",
      "name": "debian",
      "version": "12.5",
      "properties": [
        {"name": "aquasecurity:trivy:Class", "value": "os-pkgs"},
        {"name": "aquasecurity:trivy:Type", "value": "debian"}
      ]
    },
    {
      "bom-ref": "pkg:deb/debian/login@4.13%2Bdfsg1-1%2Bb1?arch=amd64&distro=debian-12.5&epoch=1",
      "type": "library",
      "name": "login",
      "version": "1:4.13+dfsg1-1+b1",
      "licenses": [{"license": {"name": "GPL-2.0-or-later"}}, {"license": {"name": "BSD-3-Clause"}}],
      "purl": "pkg:deb/debian/login@4.13%2Bdfsg1-1%2Bb1?arch=amd64&distro=debian-12.5&epoch=1",
      "properties": [
        {"name": "aquasecurity:trivy:LayerDiffID", "value": "sha256:1f"},
        {"name": "aquasecurity:trivy:PkgID", "value": "login@1:4.13+dfsg1-1+b1"},
        {"name": "aquasecurity:trivy:PkgType", "value": "debian"},
        {"name": "aquasecurity:trivy:SrcEpoch", "value": "1"},
        {"name": "aquasecurity:trivy:SrcName", "value": "shadow"},
        {"name": "aquasecurity:trivy:SrcRelease", "value": "1"},
        {"name": "aquasecurity:trivy:SrcVersion", "value": "4.13+dfsg1"}
      ]
    },
    {
      "bom-ref": "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12.5",
      "type": "library",
      "name": "libc6",
      "version": "2.36-9+deb12u4",
      "purl": "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12.5",
      "properties": [
        {"name": "aquasecurity:trivy:PkgType", "value": "debian"},
        {"name": "aquasecurity:trivy:SrcName", "value": "glibc"},
        {"name": "aquasecurity:trivy:SrcRelease", "value": "9+deb12u4"},
        {"name": "aquasecurity:trivy:SrcVersion", "value": "2.36"}
      ]
    },
    {
      "bom-ref": "pkg:pypi/requests@2.32.3?file_path=usr%2Flib%2Fpython3%2Fdist-packages%2Frequests-2.32.3.dist-info%2FMETADATA",
      "type": "library",
      "name": "requests",
      "version": "2.32.3",
      "licenses": [{"license": {"id": "Apache-2.0"}}],
      "purl": "pkg:pypi/requests@2.32.3",
      "properties": [
        {"name": "aquasecurity:trivy:FilePath", "value": "usr/lib/python3/dist-packages/requests-2.32.3.dist-info/METADATA"},
        {"name": "aquasecurity:trivy:PkgType", "value": "python-pkg"}
      ]
    },
    {
      "bom-ref": "pkg:pypi/flask@2.0.0",
      "type": "library",
      "name": "Flask",
      "version": "2.0.0",
      "purl": "pkg:pypi/flask@2.0.0",
      "properties": [{"name": "aquasecurity:trivy:PkgType", "value": "pip"}]
    },
    {
      "bom-ref": "app",
      "type": "application",
      "name": "app",
      "components": [
        {
          "bom-ref": "pkg:conda/numpy@1.26.4",
          "type": "library",
          "name": "numpy",
          "version": "1.26.4",
          "licenses": [{"expression": "BSD-3-Clause"}],
          "purl": "pkg:conda/numpy@1.26.4?subdir=linux-64",
          "properties": [
            {"name": "aquasecurity:trivy:FilePath", "value": "opt/conda/conda-meta/numpy-1.26.4-py311h64a7726_0.json"},
            {"name": "aquasecurity:trivy:PkgType", "value": "conda-pkg"}
          ]
        }
      ]
    }
  ]
}"#;

    #[test]
    fn reads_trivys_image_sbom() {
        let inv = from_json(TRIVY_IMAGE.as_bytes()).expect("Trivy's SBOM reads");
        assert_eq!(inv.distro, Some(distro("debian", "12.5", "")));
        let expected = vec![
            Package {
                source: Some(SourcePackage {
                    name: "glibc".into(),
                    version: "2.36-9+deb12u4".into(),
                }),
                ..deb("libc6", "2.36-9+deb12u4", "amd64")
            },
            Package {
                source: Some(SourcePackage {
                    name: "shadow".into(),
                    version: "1:4.13+dfsg1-1".into(),
                }),
                license: Some("GPL-2.0-or-later AND BSD-3-Clause".into()),
                ..deb("login", "1:4.13+dfsg1-1+b1", "amd64")
            },
            Package {
                license: Some("Apache-2.0".into()),
                path: "usr/lib/python3/dist-packages/requests-2.32.3.dist-info/METADATA".into(),
                ..package(PackageKind::Pypi, "requests", "2.32.3")
            },
            Package {
                arch: "linux-64".into(),
                license: Some("BSD-3-Clause".into()),
                path: "opt/conda/conda-meta/numpy-1.26.4-py311h64a7726_0.json".into(),
                ..package(PackageKind::Conda, "numpy", "1.26.4")
            },
        ];
        assert_eq!(inv.packages, expected);
    }

    #[test]
    fn from_json_errors() {
        let cases: &[(&str, &str)] = &[
            ("not json", "not valid CycloneDX JSON"),
            (r#"{"bomFormat": "SPDX"}"#, "bomFormat is \"SPDX\""),
            (r#"{"spdxVersion": "SPDX-2.3"}"#, "bomFormat is \"\""),
            (
                r#"{"bomFormat": "CycloneDX", "components": 3}"#,
                "not valid CycloneDX JSON",
            ),
            (
                r#"{"bomFormat": "CycloneDX", "components": [{"bom-ref": "r1", "name": "a", "properties": [{"name": "labforge:package:kind", "value": "pypi"}]}]}"#,
                "component \"r1\" has no version",
            ),
            (
                r#"{"bomFormat": "CycloneDX", "components": [{"name": "a", "version": "1", "properties": [{"name": "labforge:package:kind", "value": "npm"}]}]}"#,
                "unknown labforge:package:kind \"npm\"",
            ),
            (
                r#"{"bomFormat": "CycloneDX", "components": [{"bom-ref": "x", "version": "1", "properties": [{"name": "aquasecurity:trivy:PkgType", "value": "conda-pkg"}]}]}"#,
                "component \"x\" has no name",
            ),
        ];
        for (input, message) in cases {
            let err = from_json(input.as_bytes())
                .expect_err("the document is refused")
                .to_string();
            assert!(err.contains(message), "{input}: {err}");
        }
        // Trivy package types that are not installed packages are skipped, not errors.
        let skipped = r#"{"bomFormat": "CycloneDX", "components": [{"name": "a", "properties": [{"name": "aquasecurity:trivy:PkgType", "value": "jar"}]}]}"#;
        assert_eq!(from_json(skipped.as_bytes()), Ok(Inventory::default()));
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z0-9.+~:_-]{1,12}", "\\PC{1,12}"]
    }

    fn arb_package() -> impl Strategy<Value = Package> {
        (
            prop::sample::select(vec![
                PackageKind::Deb,
                PackageKind::Pypi,
                PackageKind::Conda,
                PackageKind::Other,
            ]),
            arb_text(),
            arb_text(),
            prop::option::of((arb_text(), "\\PC{0,8}")),
            "[a-z0-9-]{0,8}",
            prop::option::of(prop_oneof![
                Just("MIT".to_string()),
                Just("BSD License".to_string()),
                "\\PC{1,20}"
            ]),
            prop_oneof![Just("a/METADATA".to_string()), "\\PC{0,20}"],
        )
            .prop_map(
                |(kind, name, version, source, arch, license, path)| Package {
                    kind,
                    name,
                    version,
                    source: source.map(|(name, version)| SourcePackage { name, version }),
                    arch,
                    license,
                    path,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_inventory_round_trips_and_is_valid(
            packages in prop::collection::vec(arb_package(), 0..12),
            distro in prop::option::of(("[a-z]{0,6}", "[0-9.]{0,5}", "[a-z]{0,6}")),
        ) {
            let mut packages = packages;
            // Names and versions pass through `trim`-free JSON strings, but
            // licenses that are only whitespace are dropped on the way back.
            for p in &mut packages {
                if p.license.as_deref().is_some_and(|l| l.trim().is_empty()) {
                    p.license = None;
                }
            }
            sort_packages(&mut packages);
            let inv = Inventory {
                distro: distro.map(|(id, version_id, codename)| Distro { id, version_id, codename }),
                packages,
            };
            let bytes = to_json(&inv, &sample_subject());
            let doc: Value = serde_json::from_slice(&bytes).expect("valid JSON");
            check_structure(&doc);
            prop_assert_eq!(from_json(&bytes), Ok(inv));
        }

        #[test]
        fn from_json_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = from_json(&bytes);
        }
    }
}
