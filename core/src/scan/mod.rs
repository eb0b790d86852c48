//! What is inside an image and what is wrong with it: the package inventory
//! (and its CycloneDX SBOM), vulnerability findings, the built-in OSV
//! matcher with each ecosystem's version ordering, the scan policy and the
//! package diff between two versions of an image.
//!
//! Like the rest of the core this does no I/O: the builder reads layers,
//! advisory files and scanner output and hands their bytes in.

pub mod cvss;
pub mod cyclonedx;
pub mod debversion;
pub mod diff;
pub mod inventory;
pub mod osv;
pub mod pep440;
pub mod policy;

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kinds of package the inventory knows, named by their purl type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    /// A dpkg package (`pkg:deb/<distro>/<name>@<version>?arch=…`).
    Deb,
    /// A Python distribution in some site-packages (`pkg:pypi/<name>@<version>`).
    Pypi,
    /// A conda package from a `conda-meta/*.json` (`pkg:conda/<name>@<version>`).
    Conda,
    /// A package type labforge does not inventory (npm, jar, Go binaries, …)
    /// that an outside scanner reported a finding in.
    Other,
}

impl PackageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PackageKind::Deb => "deb",
            PackageKind::Pypi => "pypi",
            PackageKind::Conda => "conda",
            PackageKind::Other => "other",
        }
    }
}

impl fmt::Display for PackageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operating system an image says it is (`/etc/os-release`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distro {
    /// `ID`: `debian`, `ubuntu`, …
    pub id: String,
    /// `VERSION_ID`: `12`, `22.04`, … (empty for testing/unstable).
    pub version_id: String,
    /// `VERSION_CODENAME`: `bookworm`, `jammy`, …
    pub codename: String,
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Package {
    pub kind: PackageKind,
    /// As installed: the dpkg package name, the distribution's `Name:` as
    /// written in its metadata, the conda package name.
    pub name: String,
    pub version: String,
    /// dpkg only: the source package and its version (advisories for Debian
    /// and Ubuntu are keyed by source package).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourcePackage>,
    /// dpkg: `Architecture:`; conda: `subdir`; otherwise empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arch: String,
    /// SPDX expression or license text as the metadata states it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Path inside the image of the file that declared it, without leading `/`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourcePackage {
    pub name: String,
    pub version: String,
}

/// Everything the inventory found in one image, sorted by kind, name, version, path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub distro: Option<Distro>,
    pub packages: Vec<Package>,
}

/// How bad a finding is. Ordered: `Unknown` < `Low` < … < `Critical`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// `low`, `MEDIUM`, `Negligible` (Trivy/Ubuntu: counted as low), …
    pub fn parse(s: &str) -> Option<Severity> {
        match s.trim().to_ascii_lowercase().as_str() {
            "unknown" | "none" => Some(Severity::Unknown),
            "negligible" | "low" => Some(Severity::Low),
            "medium" | "moderate" => Some(Severity::Medium),
            "high" | "important" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One vulnerability in one installed package, as a scanner reported it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Finding {
    /// The advisory id (`PYSEC-2021-66`, `CVE-2019-18276`, `GHSA-…`).
    pub id: String,
    /// Other ids of the same advisory (CVE, GHSA, …); waivers match any of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    pub kind: PackageKind,
    /// The installed package's name (binary package for dpkg).
    pub package: String,
    pub installed: String,
    /// The first version that fixes it, if the advisory names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}
