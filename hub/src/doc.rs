//! The documents the hub serves, built once per snapshot: the JSON of
//! `/api/v1/catalog` and `/api/v1/images/{name}`, and the view model of the
//! web catalog's pages. Plain data, no I/O.

use serde::Serialize;

/// `/api/v1/catalog`: every published image (summaries: no package lists).
#[derive(Debug, Clone, Serialize)]
pub struct CatalogDoc {
    /// Increases by one with every snapshot this process loads.
    pub generation: u64,
    /// RFC 3339, when the snapshot was loaded.
    pub generated_at: String,
    pub images: Vec<ImageDoc>,
    /// Images of the catalog that have no published digest, or whose
    /// digests are missing from the registry, and why.
    pub unavailable: Vec<Unavailable>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Unavailable {
    pub name: String,
    pub reason: String,
}

/// One concrete image with what is published for it.
#[derive(Debug, Clone, Serialize)]
pub struct ImageDoc {
    /// Concrete name, e.g. `deeplearning-cuda`; the page is `/images/{name}`.
    pub name: String,
    /// The image file's name (and repository name), e.g. `deeplearning`.
    pub family: String,
    pub variant: String,
    /// The variant's axis values, e.g. `[["accelerator", "cuda"]]`.
    pub axes: Vec<(String, String)>,
    /// The spawner profile's slug (`/hub/spawn?profile=<slug>`).
    pub slug: String,
    /// As written in the catalog (not escaped: templates escape).
    pub display_name: String,
    pub description: String,
    /// Catalog parent: a base name or another image's name.
    pub parent: String,
    pub gpu: bool,
    /// GPU counts offered (one entry when fixed); empty for CPU images.
    pub gpu_choices: Vec<u32>,
    pub gpu_default: Option<u32>,
    /// From the root base.
    pub cuda: Option<String>,
    pub cudnn: Option<String>,
    pub min_driver: Option<String>,
    pub os: Option<String>,
    /// Frameworks recognised in its packages (`pytorch`, `tensorflow`, `jax`,
    /// `transformers`, `spacy`, `scikit-learn`, …), sorted.
    pub frameworks: Vec<String>,
    /// Groups (courses) it is shown to; empty: everyone.
    pub groups: Vec<String>,
    pub cpu_limit: Option<f64>,
    pub cpu_guarantee: Option<f64>,
    /// As KubeSpawner takes it (`16G`, or bytes).
    pub mem_limit: Option<String>,
    pub mem_guarantee: Option<String>,
    pub owners: Vec<String>,
    /// The request issue it came from, and its URL when the catalog's
    /// `source` is a GitHub repository.
    pub issue: Option<u64>,
    pub issue_url: Option<String>,
    /// What the catalog asks to install (names and specifiers as written).
    pub declared: Declared,
    /// `/hub/spawn?profile=<slug>`, absolute when the hub's JupyterHub URL
    /// is configured.
    pub launch_url: String,
    /// The GitHub issue form, pre-filled, when the catalog's `source` is a
    /// GitHub repository.
    pub request_change_url: Option<String>,
    /// The default profile of the list.
    pub default: bool,
    /// `versions[0]` is what users get; then earlier published digests,
    /// newest first.
    pub versions: Vec<VersionDoc>,
    /// Set when `labforge rollback` holds the image at `versions[0]`.
    pub rollback: Option<RollbackDoc>,
    /// A newer version that users are not offered yet: it is still being
    /// pulled onto the nodes (`[kubernetes.prepull] offer_after`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingDoc>,
    /// Installed packages of the current version, from its SBOM (sorted by
    /// kind, then name). `None` in `/api/v1/catalog` (summaries only) and
    /// when no SBOM is on record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<PackageDoc>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Declared {
    pub apt: Vec<String>,
    pub pip: Vec<String>,
    pub conda: Vec<String>,
    pub vscode_extensions: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackDoc {
    pub from_digest: Option<String>,
    pub actor: String,
    pub reason: String,
    /// RFC 3339.
    pub at: String,
}

/// A published digest held back until the pre-pullers have it on enough
/// of its nodes; `/readyz` says how far they are.
#[derive(Debug, Clone, Serialize)]
pub struct PendingDoc {
    /// `sha256:…`
    pub digest: String,
    /// `host/path/repo@sha256:…`
    pub reference: String,
    /// RFC 3339: when it was first published.
    pub published_at: String,
}

/// One published digest.
#[derive(Debug, Clone, Serialize)]
pub struct VersionDoc {
    /// `sha256:…`
    pub digest: String,
    /// `host/path/repo@sha256:…`
    pub reference: String,
    /// RFC 3339: when it was first published.
    pub published_at: String,
    /// RFC 3339: when its build finished, if this state store built it.
    pub built_at: Option<String>,
    /// The content tag it was pushed under, if known.
    pub content_tag: Option<String>,
    /// Compressed size in the registry (config + layers), if known.
    pub size_bytes: Option<u64>,
    /// The scan that published it.
    pub scan: Option<ScanDoc>,
    /// What changed against the next older version (`None` for the oldest
    /// shown, or when an SBOM is missing). Omitted in `/api/v1/catalog`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<ChangesDoc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanDoc {
    pub verdict: String,
    /// Findings by severity, blocking and waived (the report's summary),
    /// serialized inline: `critical`, `high`, … `waived`.
    #[serde(flatten)]
    pub summary: labforge_core::scan::policy::Summary,
    /// RFC 3339.
    pub scanned_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PackageDoc {
    /// `deb`, `pypi`, `conda`, `other`.
    pub kind: String,
    pub name: String,
    pub version: String,
}

/// The package diff between two versions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChangesDoc {
    /// The older digest this is compared with.
    pub against: String,
    pub added: Vec<PackageDoc>,
    pub removed: Vec<PackageDoc>,
    /// `old` → `new` versions.
    pub upgraded: Vec<ChangeDoc>,
    pub downgraded: Vec<ChangeDoc>,
    pub changed: Vec<ChangeDoc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeDoc {
    pub kind: String,
    pub name: String,
    pub old: String,
    pub new: String,
}
