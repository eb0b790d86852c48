//! Loading a snapshot from the outside world: the catalog files, the state
//! store (what is published, scan summaries, SBOMs, build records, rollback
//! pins) and the registry (is every published digest still there, and how
//! big is it).
//!
//! What never changes for a digest (its SBOM, size, scan, build record) is
//! cached across loads; presence is asked again for new digests at every
//! load and for all of them every `registry_check` interval.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labforge_builder::project::Layout;
use labforge_builder::registry::{ImageRef, RegistryClient, RegistryOptions};
use labforge_builder::state::{Pin, ScanRow, StateError, StateStore};
use labforge_core::publish::{self, Publication};
use labforge_core::scan::policy::Report;

use crate::doc::ScanDoc;
use crate::snapshot::{DigestFacts, Inputs, Options, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Read(#[from] labforge_builder::project::LoadError),
    #[error("the catalog has {} problem(s); fix them and the hub reloads: {}", .0.len(), .0.join("; "))]
    Catalog(Vec<String>),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{}", .0.join("; "))]
    Snapshot(Vec<String>),
}

/// What a load found besides the snapshot: for logs, `/readyz` and metrics.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Published digests the registry does not have (image, reference).
    pub missing: Vec<(String, String)>,
    /// Registry errors (the digest's presence is taken from the last
    /// successful check, or counted missing without one).
    pub registry_errors: Vec<String>,
    /// How many presence checks this load sent.
    pub checked: usize,
    pub counts: labforge_builder::state::Counts,
    pub marker: labforge_builder::state::Marker,
}

#[derive(Default)]
struct Cache {
    facts: HashMap<String, DigestFacts>,
    /// Digest → when presence was last confirmed or denied.
    checked_at: HashMap<String, Instant>,
}

pub struct Loader {
    layout: Layout,
    store: StateStore,
    registry_options: RegistryOptions,
    options: Options,
    registry_check: Duration,
    cache: Mutex<Cache>,
}

impl Loader {
    pub fn new(
        layout: Layout,
        store: StateStore,
        registry_options: RegistryOptions,
        options: Options,
        registry_check: Duration,
    ) -> Loader {
        Loader {
            layout,
            store,
            registry_options,
            options,
            registry_check,
            cache: Mutex::new(Cache::default()),
        }
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// The state store's change marker (cheap: polled between loads).
    pub async fn marker(&self) -> Result<labforge_builder::state::Marker, StateError> {
        self.store.marker().await
    }

    /// A hash of the catalog files' text (`None` when they cannot be read),
    /// to notice an edited catalog between loads.
    pub async fn sources_hash(&self) -> Option<String> {
        let layout = self.layout.clone();
        let sources = tokio::task::spawn_blocking(move || layout.read_catalog())
            .await
            .ok()?
            .ok()?;
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        for file in std::iter::once(&sources.settings).chain(&sources.images) {
            for part in [file.path.as_bytes(), b"\0", file.text.as_bytes(), b"\0"] {
                sha2::Digest::update(&mut hasher, part);
            }
        }
        Some(hex::encode(sha2::Digest::finalize(hasher)))
    }

    /// Read everything and build a snapshot. `recheck` asks the registry
    /// again about every digest, not only new or stale ones.
    pub async fn load(
        &self,
        generation: u64,
        recheck: bool,
    ) -> Result<(Snapshot, LoadReport), LoadError> {
        let layout = self.layout.clone();
        let sources = tokio::task::spawn_blocking(move || layout.read_catalog())
            .await
            .map_err(|e| LoadError::Catalog(vec![format!("reading the catalog: {e}")]))??;
        let catalog = labforge_core::catalog::load(&sources)
            .map_err(|d| LoadError::Catalog(d.iter().map(ToString::to_string).collect()))?;
        let marker = self.store.marker().await?;
        let rows = self.store.scan_rows().await?;
        let pins = self.store.latest_pins().await?;
        let counts = self.store.counts().await?;
        let publications = publications(&catalog, &rows, &pins);
        let wanted: Vec<(String, String, String)> = publications
            .iter()
            .flat_map(|(image, p)| {
                p.versions(self.options.spawner.previous_versions)
                    .into_iter()
                    .map(move |c| (image.clone(), c.repository.clone(), c.digest.clone()))
            })
            .collect();
        let mut report = LoadReport {
            counts,
            marker,
            ..LoadReport::default()
        };
        self.refresh_facts(&wanted, recheck, &mut report).await?;
        let facts = self
            .cache
            .lock()
            .map(|c| c.facts.clone())
            .unwrap_or_default();
        for (image, repository, digest) in &wanted {
            if !facts.get(digest).is_some_and(|f| f.present) {
                report
                    .missing
                    .push((image.clone(), format!("{repository}@{digest}")));
            }
        }
        let snapshot = Snapshot::build(Inputs {
            generation,
            loaded_at_ms: labforge_builder::state::unix_ms_now(),
            catalog: &catalog,
            publications: &publications,
            facts: &facts,
            options: &self.options,
        })
        .map_err(LoadError::Snapshot)?;
        Ok((snapshot, report))
    }

    /// Fill the cache for every wanted digest: scan summary and SBOM, build
    /// record (once per digest), size and presence (new, stale or `recheck`).
    async fn refresh_facts(
        &self,
        wanted: &[(String, String, String)],
        recheck: bool,
        report: &mut LoadReport,
    ) -> Result<(), StateError> {
        let now = Instant::now();
        let (known, stale): (BTreeSet<String>, BTreeSet<String>) = {
            let cache = self.cache.lock().map_err(|_| poisoned())?;
            let known = cache.facts.keys().cloned().collect();
            let stale = wanted
                .iter()
                .filter(|(_, _, d)| {
                    recheck
                        || cache
                            .checked_at
                            .get(d)
                            .is_none_or(|at| now.duration_since(*at) >= self.registry_check)
                })
                .map(|(_, _, d)| d.clone())
                .collect();
            (known, stale)
        };
        // Documents of new digests, from the state store.
        for (image, _, digest) in wanted {
            if known.contains(digest) {
                continue;
            }
            let mut facts = DigestFacts::default();
            if let Some(scan) = self.store.latest_scan(image, Some(digest)).await? {
                facts.scan = scan_doc(&scan);
                facts.inventory = labforge_core::scan::cyclonedx::from_json(scan.sbom.as_bytes())
                    .map_err(|e| {
                        tracing::warn!(image = %image, digest = %digest, error = %e, "cannot read the SBOM on record");
                    })
                    .ok()
                    .map(Arc::new);
            }
            if let Some(record) = self.store.record_of_digest(image, digest).await? {
                facts.built_at = Some(record.finished_at);
                facts.content_tag = Some(record.content_tag);
            }
            if let Ok(mut cache) = self.cache.lock() {
                cache.facts.insert(digest.clone(), facts);
            }
        }
        // Presence and size, from the registry.
        let targets: Vec<(&str, &str)> = wanted
            .iter()
            .filter(|(_, _, d)| stale.contains(d))
            .map(|(_, r, d)| (r.as_str(), d.as_str()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let hosts: BTreeSet<&str> = targets.iter().map(|(r, _)| host_of(r)).collect();
        let hosts: Vec<&str> = hosts.into_iter().collect();
        let client = match RegistryClient::new(self.registry_options.clone(), &hosts) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                report.registry_errors.push(e.to_string());
                return Ok(());
            }
        };
        let answers = check_presence(&client, &targets).await;
        report.checked += targets.len();
        let mut cache = self.cache.lock().map_err(|_| poisoned())?;
        for ((repository, digest), answer) in targets.iter().zip(answers) {
            match answer {
                Ok(found) => {
                    let facts = cache.facts.entry(digest.to_string()).or_default();
                    facts.present = found.is_some();
                    if let Some((_, size)) = found {
                        facts.size = size.or(facts.size);
                    } else {
                        tracing::warn!(repository = %repository, digest = %digest, "a published digest is missing from the registry: dropped from the profiles");
                    }
                    cache.checked_at.insert(digest.to_string(), now);
                }
                Err(e) => {
                    tracing::warn!(repository = %repository, digest = %digest, error = %e, "cannot check a published digest in the registry");
                    report.registry_errors.push(e.to_string());
                }
            }
        }
        Ok(())
    }
}

fn poisoned() -> StateError {
    StateError::Encode {
        image: String::new(),
        message: "the hub's digest cache lock is poisoned".into(),
    }
}

/// Ask the registry about each `(repository, digest)`, 8 at a time, answers
/// in the order asked.
async fn check_presence(
    client: &Arc<RegistryClient>,
    targets: &[(&str, &str)],
) -> Vec<Result<Option<(String, Option<u64>)>, labforge_builder::registry::RegistryError>> {
    let mut set = tokio::task::JoinSet::new();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(8));
    for (i, (repository, digest)) in targets.iter().enumerate() {
        let client = Arc::clone(client);
        let semaphore = Arc::clone(&semaphore);
        let image = ImageRef {
            registry: host_of(repository).to_string(),
            repository: repository
                .split_once('/')
                .map_or(String::new(), |(_, p)| p.to_string()),
            reference: digest.to_string(),
        };
        set.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            (i, client.manifest_size(&image).await)
        });
    }
    let mut answers: Vec<Option<_>> = (0..targets.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, answer)) = joined
            && let Some(slot) = answers.get_mut(i)
        {
            *slot = Some(answer);
        }
    }
    answers
        .into_iter()
        .map(|a| {
            a.unwrap_or_else(|| {
                Err(labforge_builder::registry::RegistryError::Unreachable {
                    url: "(presence check)".into(),
                    message: "the check did not finish".into(),
                })
            })
        })
        .collect()
}

/// `host[:port]` of `host[:port]/path`.
fn host_of(repository: &str) -> &str {
    repository.split_once('/').map_or(repository, |(h, _)| h)
}

/// What is published for each catalog image, from the scan rows and pins.
pub fn publications(
    catalog: &labforge_core::catalog::Catalog,
    rows: &[ScanRow],
    pins: &[Pin],
) -> BTreeMap<String, Publication> {
    let mut by_image: HashMap<&str, Vec<ScanRow>> = HashMap::new();
    for row in rows {
        by_image
            .entry(row.image.as_str())
            .or_default()
            .push(row.clone());
    }
    catalog
        .images
        .iter()
        .filter_map(|image| {
            let rows = by_image.get(image.name.as_str())?;
            let pin = pins.iter().find(|p| p.image == image.name);
            Some((image.name.clone(), publish::select(rows, pin)))
        })
        .collect()
}

fn scan_doc(scan: &labforge_builder::state::ScanRecord) -> Option<ScanDoc> {
    let report: Report = serde_json::from_str(&scan.report).ok()?;
    let s = &report.summary;
    Some(ScanDoc {
        verdict: scan.verdict.clone(),
        critical: s.critical,
        high: s.high,
        medium: s.medium,
        low: s.low,
        unknown: s.unknown,
        blocking: s.blocking,
        waived: s.waived,
        scanned_at: labforge_builder::state::format_rfc3339(scan.created_at),
    })
}
