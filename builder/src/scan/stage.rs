//! The scan stage of one pushed image: inventory → SBOM → every configured
//! scanner → the catalog's policy → SBOM and report attached to the image
//! in the registry. Used by `labforge build` between the push of the
//! content tag and the moving tags.
//!
//! The image is read either from the local Docker Engine (an image built
//! there) or from the registry by its digest (an image built elsewhere, by
//! a BuildKit Job in a cluster): [`Source`] says which, for the inventory
//! and for Trivy alike. Both give the same inventory for the same image.
//!
//! Fail closed: a scanner that errors, crashes or times out gives no
//! findings and a failed run, and the policy then fails the image. This
//! module never moves tags itself; the caller does, only on a pass.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use labforge_core::scan::cyclonedx::{self, Subject};
use labforge_core::scan::osv::Database;
use labforge_core::scan::policy::{self, Date, Policy, Report, ScannerRun};
use labforge_core::scan::{Finding, Inventory};

use super::layers;
use super::osvdb;
use super::referrers::{self, Referrers};
use super::remote;
use super::trivy::{RemoteImage, Trivy, TrivyImage};
use crate::config::ScanConfig;
use crate::engine::Engine;
use crate::push::LayerSource;
use crate::registry::{ImageRef, RegistryClient};

/// How long a scanner may run unless the configuration says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(
        "unknown scanner {name:?} in [scan] scanners: use \"trivy\" and/or \"osv\" (an empty list turns the scan gate off)"
    )]
    UnknownScanner { name: String },
    #[error(
        "the osv scanner needs a database: set [scan] osv_db to a folder of OSV JSON records (OSV's per-ecosystem all.zip downloads, unzipped)"
    )]
    NoOsvDatabase,
    #[error(transparent)]
    OsvDb(#[from] osvdb::OsvDbError),
    #[error("cannot read the layers of {image}: {message}")]
    Inventory { image: String, message: String },
    #[error(
        "{image}: asked to scan {source_image} for {target}; the SBOM and report would describe another image"
    )]
    SourceMismatch {
        image: String,
        source_image: String,
        target: String,
    },
    #[error("loading the OSV database stopped: {0}")]
    OsvLoad(String),
    #[error("[scan] timeout must be at least 1 second")]
    ZeroTimeout,
    #[error("cannot attach the {what} to {repository}@{digest}: {message}")]
    Attach {
        what: &'static str,
        repository: String,
        digest: String,
        message: String,
    },
}

/// The scanners configured for this machine, ready to run.
pub struct Scanners {
    osv: Option<Arc<(Database, String)>>,
    trivy: Option<Trivy>,
    timeout: Duration,
}

/// Check `[scan]` without loading anything: known scanner names, an OSV
/// database for `osv`, a timeout of at least a second. Cheap, so every
/// command that may publish checks it first, even when nothing is built.
pub fn check(config: &ScanConfig) -> Result<(), StageError> {
    if config.timeout == Some(0) {
        return Err(StageError::ZeroTimeout);
    }
    for name in &config.scanners {
        match name.as_str() {
            "osv" if config.osv_db.is_none() => return Err(StageError::NoOsvDatabase),
            "osv" | "trivy" => {}
            other => {
                return Err(StageError::UnknownScanner {
                    name: other.to_string(),
                });
            }
        }
    }
    Ok(())
}

impl Scanners {
    /// Read `[scan]`: check the scanner names and load the OSV database
    /// (blocking; call it from `spawn_blocking` or before the runtime is busy).
    pub fn from_config(config: &ScanConfig) -> Result<Scanners, StageError> {
        check(config)?;
        let timeout = config.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        let mut osv = None;
        let mut trivy = None;
        for name in &config.scanners {
            match name.as_str() {
                "osv" => {
                    let dir = config.osv_db.as_ref().ok_or(StageError::NoOsvDatabase)?;
                    let (db, stats) = osvdb::load(dir)?;
                    let detail = format!(
                        "{} advisories from {} ({} withdrawn, ignored)",
                        stats.records,
                        dir.display(),
                        stats.withdrawn
                    );
                    tracing::info!(records = stats.records, path = %dir.display(), "OSV database loaded");
                    osv = Some(Arc::new((db, detail)));
                }
                "trivy" => {
                    let t = &config.trivy;
                    trivy = Some(Trivy {
                        binary: t.binary.clone().unwrap_or_else(|| PathBuf::from("trivy")),
                        cache_dir: t.cache_dir.clone(),
                        db_repository: t.db_repository.clone(),
                        java_db_repository: t.java_db_repository.clone(),
                        skip_db_update: t.offline,
                        timeout,
                        docker_host: std::env::var("DOCKER_HOST").ok(),
                    });
                }
                other => {
                    return Err(StageError::UnknownScanner {
                        name: other.to_string(),
                    });
                }
            }
        }
        Ok(Scanners {
            osv,
            trivy,
            timeout,
        })
    }

    /// No scanner configured: the gate is off.
    pub fn is_empty(&self) -> bool {
        self.osv.is_none() && self.trivy.is_none()
    }

    /// Run every scanner on `image` (Trivy reads it from the engine or the
    /// registry) whose inventory is `inventory`. Never fails: a scanner
    /// that did not finish is a run with an error, which the policy counts
    /// as a failure.
    pub async fn run(
        &self,
        image: TrivyImage<'_>,
        inventory: &Inventory,
    ) -> Vec<(ScannerRun, Vec<Finding>)> {
        let mut runs = Vec::new();
        if let Some(osv) = &self.osv {
            let started = Instant::now();
            let osv = Arc::clone(osv);
            let inventory = inventory.clone();
            let limit = self.timeout;
            let task = tokio::task::spawn_blocking(move || osv.0.scan(&inventory));
            let (error, findings) = match tokio::time::timeout(limit, task).await {
                Ok(Ok(scan)) => {
                    for (package, why) in &scan.unparsable {
                        tracing::warn!(package = %package.name, version = %package.version, why = %why, "the osv scanner cannot compare this version");
                    }
                    (None, scan.findings)
                }
                Ok(Err(e)) => (Some(format!("crashed: {e}")), Vec::new()),
                Err(_) => (
                    Some(format!("timed out after {} s", limit.as_secs())),
                    Vec::new(),
                ),
            };
            runs.push((
                ScannerRun {
                    name: "osv".into(),
                    detail: self.osv.as_ref().map(|o| o.1.clone()).unwrap_or_default(),
                    error,
                    findings: findings.len(),
                    duration_ms: millis(started.elapsed()),
                },
                findings,
            ));
        }
        if let Some(trivy) = &self.trivy {
            let started = Instant::now();
            let version = trivy.version().await.ok();
            let (error, findings) = match trivy.scan_image(image).await {
                Ok(report) => (None, report.findings),
                Err(e) => (Some(labforge_core::error_chain(&e)), Vec::new()),
            };
            runs.push((
                ScannerRun {
                    name: "trivy".into(),
                    detail: version.map_or_else(|| "trivy".into(), |v| format!("trivy {v}")),
                    error,
                    findings: findings.len(),
                    duration_ms: millis(started.elapsed()),
                },
                findings,
            ));
        }
        runs
    }
}

/// What is scanned, and where its results go.
pub struct Target<'a> {
    /// The catalog image (`notebook-scipy-cpu`).
    pub image: &'a str,
    /// `host/path` of its repository.
    pub repository: &'a str,
    /// The manifest digest the registry confirmed.
    pub digest: &'a str,
    pub tags: Vec<String>,
    pub policy: &'a Policy,
    /// RFC 3339, for the SBOM, the report and the artifacts' annotations.
    pub created: &'a str,
    pub today: Date,
}

/// The documents of one scan.
pub struct Scanned {
    pub report: Report,
    /// The report as attached (JSON).
    pub report_json: Vec<u8>,
    /// The CycloneDX SBOM as attached.
    pub sbom: Vec<u8>,
    pub packages: usize,
    /// Inventory warnings (files that could not be read).
    pub warnings: Vec<String>,
    /// Why the SBOM or the report could not be attached in the registry.
    /// The verdict stands, but an image whose documents are not next to it
    /// is not published.
    pub attach_error: Option<String>,
}

/// Where the scanned image is read from.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// An image in the local Docker Engine, by image ID (or reference): the
    /// layers come from the engine's layer store or export
    /// ([`LayerSource::Auto`]) and Trivy reads it with `--image-src docker`.
    Engine {
        engine: &'a Engine,
        image_id: &'a str,
    },
    /// An image in a registry, by manifest digest: `image` must be the
    /// target's repository at the target's digest, that is
    /// `ImageRef::in_repository(target.repository, target.digest)`. The
    /// layers are streamed from the registry and checked against their
    /// digests ([`remote::inventory_from_registry`]) and Trivy reads it with
    /// `--image-src remote`, reaching the registry as `client` does (plain
    /// HTTP, login). No engine is needed.
    Registry {
        client: &'a RegistryClient,
        image: &'a ImageRef,
    },
}

/// Inventory, SBOM, scanners and policy for one image, read from `source`;
/// then both documents attached to it (`target.repository` at
/// `target.digest`) in the registry. An error means no verdict (the caller
/// fails the image); an attach failure comes back with the verdict, in
/// [`Scanned::attach_error`], so that it is recorded.
///
/// An image built by a cluster Job is scanned with
/// ```ignore
/// let image = ImageRef::in_repository(repository, digest);
/// scan_from(Source::Registry { client: &registry, image: &image }, &scanners, &referrers, target, &progress).await
/// ```
pub async fn scan_from(
    source: Source<'_>,
    scanners: &Scanners,
    referrers: &Referrers,
    target: Target<'_>,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<Scanned, StageError> {
    let started = Instant::now();
    let inventory_error = |e: layers::LayersError| StageError::Inventory {
        image: target.image.to_string(),
        message: labforge_core::error_chain(&e),
    };
    let remote_image;
    let (inventoried, trivy_image) = match source {
        Source::Engine { engine, image_id } => (
            layers::inventory(engine, image_id, LayerSource::Auto)
                .await
                .map_err(inventory_error)?,
            TrivyImage::Engine(image_id),
        ),
        Source::Registry { client, image } => {
            let repository = format!("{}/{}", image.registry, image.repository);
            if repository != target.repository || image.reference != target.digest {
                return Err(StageError::SourceMismatch {
                    image: target.image.to_string(),
                    source_image: format!("{repository}@{}", image.reference),
                    target: format!("{}@{}", target.repository, target.digest),
                });
            }
            let inventoried = remote::inventory_from_registry(client, image)
                .await
                .map_err(inventory_error)?;
            remote_image = RemoteImage::new(client, image);
            (inventoried, TrivyImage::Registry(&remote_image))
        }
    };
    let collected = inventoried.collected;
    progress(format!(
        "inventory: {} package(s) from {} layer(s) ({}) in {} ms",
        collected.inventory.packages.len(),
        inventoried.layers,
        inventoried.source_used,
        started.elapsed().as_millis()
    ));
    for w in &collected.warnings {
        progress(format!("inventory warning: {w}"));
    }
    let sbom = cyclonedx::to_json(
        &collected.inventory,
        &Subject {
            name: target.repository.to_string(),
            digest: target.digest.to_string(),
            tags: target.tags.clone(),
            timestamp: target.created.to_string(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
        },
    );
    let runs = scanners.run(trivy_image, &collected.inventory).await;
    for (run, _) in &runs {
        match &run.error {
            None => progress(format!(
                "{}: {} finding(s) in {} ms ({})",
                run.name, run.findings, run.duration_ms, run.detail
            )),
            Some(e) => progress(format!("{}: did not finish: {e}", run.name)),
        }
    }
    let report = policy::evaluate(
        target.policy,
        policy::Input {
            image: target.image,
            repository: target.repository,
            digest: target.digest,
            created: target.created,
            packages: collected.inventory.packages.len(),
            runs,
        },
        target.today,
    );
    let mut report = report;
    if scanners.is_empty() {
        // The gate is off (`[scan] scanners = []`): the report says no
        // scanner ran, and nothing blocks. Said on every image.
        progress(
            "the scan gate is off ([scan] scanners = []): published without a vulnerability scan"
                .to_string(),
        );
        report.verdict = policy::Verdict::Pass;
        report.reasons.clear();
    }
    let report_json = report_bytes(&report);
    let attach_error = attach(referrers, &target, &sbom, &report_json)
        .await
        .err()
        .map(|e| labforge_core::error_chain(&e));
    Ok(Scanned {
        report,
        report_json,
        sbom,
        packages: collected.inventory.packages.len(),
        warnings: collected.warnings,
        attach_error,
    })
}

/// The report as stored and attached: pretty JSON.
pub fn report_bytes(report: &Report) -> Vec<u8> {
    // A struct of strings, numbers and lists: serialising it cannot fail.
    let mut bytes = serde_json::to_vec_pretty(report)
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}").into_bytes());
    bytes.push(b'\n');
    bytes
}

/// Whether a stored report can be judged again under today's policy: every
/// scanner finished, and the scanners are the ones configured now (a report
/// made by `osv` alone says nothing about what `trivy` would find).
pub fn rejudgeable(report: &Report, config: &ScanConfig) -> Result<(), String> {
    if let Some(failed) = report.scanners.iter().find(|s| s.error.is_some()) {
        return Err(format!(
            "its last scan is incomplete (the {} scanner did not finish)",
            failed.name
        ));
    }
    let mut ran: Vec<&str> = report.scanners.iter().map(|s| s.name.as_str()).collect();
    let mut now: Vec<&str> = config.scanners.iter().map(String::as_str).collect();
    ran.sort_unstable();
    now.sort_unstable();
    ran.dedup();
    now.dedup();
    if ran != now {
        return Err(format!(
            "its last scan used {} but [scan] scanners is now {}",
            if ran.is_empty() {
                "no scanner".to_string()
            } else {
                ran.join(", ")
            },
            if now.is_empty() {
                "empty".to_string()
            } else {
                now.join(", ")
            }
        ));
    }
    Ok(())
}

/// Attach the SBOM (when given) and the report to `target`'s digest.
pub async fn attach(
    referrers: &Referrers,
    target: &Target<'_>,
    sbom: &[u8],
    report: &[u8],
) -> Result<(), StageError> {
    let annotations: BTreeMap<String, String> = [
        (
            referrers::CREATED_ANNOTATION.to_string(),
            target.created.to_string(),
        ),
        (
            "org.opencontainers.image.title".to_string(),
            target.image.to_string(),
        ),
    ]
    .into_iter()
    .collect();
    let docs: [(&'static str, &str, &[u8]); 2] = [
        ("SBOM", referrers::SBOM_ARTIFACT_TYPE, sbom),
        ("scan report", referrers::REPORT_ARTIFACT_TYPE, report),
    ];
    for (what, artifact_type, payload) in docs {
        if payload.is_empty() {
            continue;
        }
        referrers
            .attach(
                target.repository,
                target.digest,
                artifact_type,
                payload.to_vec(),
                annotations.clone(),
            )
            .await
            .map_err(|e| StageError::Attach {
                what,
                repository: target.repository.to_string(),
                digest: target.digest.to_string(),
                message: labforge_core::error_chain(&e),
            })?;
    }
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use labforge_core::scan::policy::{Summary, Verdict};

    fn config(scanners: &[&str], osv_db: Option<&str>, timeout: Option<u64>) -> ScanConfig {
        ScanConfig {
            scanners: scanners.iter().map(|s| s.to_string()).collect(),
            osv_db: osv_db.map(PathBuf::from),
            timeout,
            trivy: Default::default(),
        }
    }

    fn report(runs: &[(&str, Option<&str>)]) -> Report {
        Report {
            schema: 1,
            image: "img".into(),
            repository: "r/img".into(),
            digest: "sha256:00".into(),
            created: "2026-11-26T00:00:00Z".into(),
            verdict: Verdict::Pass,
            reasons: Vec::new(),
            summary: Summary::default(),
            packages: 0,
            scanners: runs
                .iter()
                .map(|(name, error)| ScannerRun {
                    name: name.to_string(),
                    detail: String::new(),
                    error: error.map(str::to_string),
                    findings: 0,
                    duration_ms: 0,
                })
                .collect(),
            policy: Policy::default(),
            findings: Vec::new(),
        }
    }

    #[test]
    fn the_configuration_is_checked_before_anything_runs() {
        assert!(check(&config(&["trivy", "osv"], Some("db"), Some(60))).is_ok());
        assert!(
            check(&config(&[], None, None)).is_ok(),
            "the gate may be off"
        );
        assert!(matches!(
            check(&config(&["grype"], None, None)),
            Err(StageError::UnknownScanner { name }) if name == "grype"
        ));
        assert!(matches!(
            check(&config(&["osv"], None, None)),
            Err(StageError::NoOsvDatabase)
        ));
        assert!(matches!(
            check(&config(&["trivy"], None, Some(0))),
            Err(StageError::ZeroTimeout)
        ));
    }

    #[test]
    fn only_complete_reports_of_the_configured_scanners_are_judged_again() {
        let both = config(&["trivy", "osv"], Some("db"), None);
        assert!(rejudgeable(&report(&[("osv", None), ("trivy", None)]), &both).is_ok());
        let why = rejudgeable(&report(&[("osv", None), ("trivy", Some("crashed"))]), &both)
            .expect_err("incomplete");
        assert!(why.contains("the trivy scanner did not finish"), "{why}");
        let why = rejudgeable(&report(&[("osv", None)]), &both).expect_err("other scanners");
        assert!(
            why.contains("used osv but [scan] scanners is now osv, trivy"),
            "{why}"
        );
        let why =
            rejudgeable(&report(&[]), &config(&["osv"], Some("db"), None)).expect_err("unscanned");
        assert!(why.contains("used no scanner"), "{why}");
    }
}
