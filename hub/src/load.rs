//! Loading a snapshot from the outside world: the catalog files, the state
//! store (what is published, scan summaries, SBOMs, build records, rollback
//! pins) and the registry (is every published digest still there, and how
//! big is it).
//!
//! With `[kubernetes.prepull] offer_after`, the caller also says which
//! references the pre-pullers hold on enough of their nodes, and a current
//! digest that is not among them is held back (`publish::offer`).
//!
//! What never changes for a digest (its SBOM, size, scan, build record) is
//! cached across loads; presence is asked again for new digests at every
//! load and for all of them every `registry_check` interval.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labforge_builder::project::Layout;
use labforge_builder::registry::{ImageRef, RegistryClient, RegistryOptions, host_of};
use labforge_builder::state::{Pin, ScanRow, StateError, StateStore};
use labforge_core::publish::{self, Offer, Publication};
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
    #[error(
        "the registry did not answer for {} published digest(s) never checked before: {}{}; is it running?",
        .unknown.len(),
        .unknown.join(", "),
        .errors.first().map(|e| format!(" ({e})")).unwrap_or_default()
    )]
    Registry {
        unknown: Vec<String>,
        errors: Vec<String>,
    },
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
    /// Digest → the scan row its scan summary and SBOM were read from.
    scan_row: HashMap<String, i64>,
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

    /// Where the catalog and templates are read from.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    pub fn registry_options(&self) -> &RegistryOptions {
        &self.registry_options
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
    /// again about every digest, not only new or stale ones. `ready`, when
    /// new digests wait for the pre-pullers, holds the references
    /// (`repo@sha256:…`) that are on enough of their nodes; a current
    /// digest outside it is not offered yet.
    ///
    /// A current digest whose presence the registry has never answered
    /// (it cannot be reached, and there is no earlier answer) fails the
    /// load: the last good snapshot stays and `/readyz` says why, rather
    /// than an empty catalog being served as if everything were deleted.
    pub async fn load(
        &self,
        generation: u64,
        recheck: bool,
        ready: Option<&BTreeSet<String>>,
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
        // The newest scan row of each digest: a rescan changes its summary.
        let newest_row: HashMap<(&str, &str), i64> = rows
            .iter()
            .map(|r| ((r.image.as_str(), r.digest.as_str()), r.id))
            .collect();
        let offers: Option<BTreeMap<String, Offer>> = ready.map(|ready| {
            publications
                .iter()
                .map(|(image, p)| {
                    let offer = publish::offer(p, |c| {
                        ready.contains(&format!("{}@{}", c.repository, c.digest))
                    });
                    (image.clone(), offer)
                })
                .collect()
        });
        // What is pulled (the current digests) and what is offered (the
        // same, or older ones while a new one is held back).
        let previous = self.options.spawner.previous_versions;
        let mut wanted: Vec<Wanted> = Vec::new();
        for (image, p) in &publications {
            let offered = offers
                .as_ref()
                .and_then(|o| o.get(image))
                .map(|o| o.offered.versions(previous))
                .unwrap_or_default();
            for list in [p.versions(previous), offered] {
                for (i, c) in list.into_iter().enumerate() {
                    if let Some(seen) = wanted
                        .iter_mut()
                        .find(|w| w.image == *image && w.digest == c.digest)
                    {
                        seen.current |= i == 0;
                        continue;
                    }
                    wanted.push(Wanted {
                        image: image.clone(),
                        repository: c.repository.clone(),
                        digest: c.digest.clone(),
                        current: i == 0,
                        scan_row: newest_row
                            .get(&(image.as_str(), c.digest.as_str()))
                            .copied()
                            .unwrap_or(0),
                    });
                }
            }
        }
        let mut report = LoadReport {
            counts,
            marker,
            ..LoadReport::default()
        };
        self.refresh_facts(&wanted, recheck, &mut report).await?;
        let (facts, answered) = {
            let cache = self.cache.lock().map_err(|_| poisoned())?;
            (
                cache.facts.clone(),
                cache.checked_at.keys().cloned().collect::<BTreeSet<_>>(),
            )
        };
        let unknown: Vec<String> = wanted
            .iter()
            .filter(|w| w.current && !answered.contains(&w.digest))
            .map(|w| format!("{} ({}@{})", w.image, w.repository, w.digest))
            .collect();
        if !unknown.is_empty() {
            return Err(LoadError::Registry {
                unknown,
                errors: report.registry_errors.clone(),
            });
        }
        for w in &wanted {
            if !facts.get(&w.digest).is_some_and(|f| f.present) {
                report
                    .missing
                    .push((w.image.clone(), format!("{}@{}", w.repository, w.digest)));
            }
        }
        let snapshot = Snapshot::build(Inputs {
            generation,
            loaded_at_ms: labforge_builder::state::unix_ms_now(),
            catalog: &catalog,
            publications: &publications,
            facts: &facts,
            options: &self.options,
            offers: offers.as_ref(),
        })
        .map_err(LoadError::Snapshot)?;
        Ok((snapshot, report))
    }

    /// Fill the cache for every wanted digest: scan summary and SBOM (again
    /// when a newer scan row exists), build record (once), size and
    /// presence (new, stale or `recheck`); forget digests no longer wanted.
    async fn refresh_facts(
        &self,
        wanted: &[Wanted],
        recheck: bool,
        report: &mut LoadReport,
    ) -> Result<(), StateError> {
        let now = Instant::now();
        let (documented, stale): (HashMap<String, i64>, BTreeSet<String>) = {
            let mut cache = self.cache.lock().map_err(|_| poisoned())?;
            let keep: BTreeSet<&str> = wanted.iter().map(|w| w.digest.as_str()).collect();
            cache.facts.retain(|d, _| keep.contains(d.as_str()));
            cache.checked_at.retain(|d, _| keep.contains(d.as_str()));
            cache.scan_row.retain(|d, _| keep.contains(d.as_str()));
            let stale = wanted
                .iter()
                .filter(|w| {
                    recheck
                        || cache
                            .checked_at
                            .get(&w.digest)
                            .is_none_or(|at| now.duration_since(*at) >= self.registry_check)
                })
                .map(|w| w.digest.clone())
                .collect();
            (cache.scan_row.clone(), stale)
        };
        // Documents of new or rescanned digests, from the state store.
        for w in wanted {
            if documented.get(&w.digest) == Some(&w.scan_row) {
                continue;
            }
            let scan = self.store.latest_scan(&w.image, Some(&w.digest)).await?;
            let record = if documented.contains_key(&w.digest) {
                None
            } else {
                self.store.record_of_digest(&w.image, &w.digest).await?
            };
            let mut cache = self.cache.lock().map_err(|_| poisoned())?;
            let facts = cache.facts.entry(w.digest.clone()).or_default();
            if let Some(scan) = scan {
                facts.scan = scan_doc(&scan);
                facts.inventory = labforge_core::scan::cyclonedx::from_json(scan.sbom.as_bytes())
                    .map_err(|e| {
                        tracing::warn!(image = %w.image, digest = %w.digest, error = %e, "cannot read the SBOM on record");
                    })
                    .ok()
                    .map(Arc::new);
            }
            if let Some(record) = record {
                facts.built_at = Some(record.finished_at);
                facts.content_tag = Some(record.content_tag);
            }
            cache.scan_row.insert(w.digest.clone(), w.scan_row);
        }
        // Presence and size, from the registry.
        let targets: Vec<(&str, &str)> = wanted
            .iter()
            .filter(|w| stale.contains(&w.digest))
            .map(|w| (w.repository.as_str(), w.digest.as_str()))
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
        let images: Vec<ImageRef> = targets
            .iter()
            .map(|(repository, digest)| ImageRef::in_repository(repository, digest))
            .collect();
        let answers = client.manifest_sizes(&images, 8).await;
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
                    // The last answer (if any) stands; without one the
                    // digest is unknown, which fails the load if it is current.
                    tracing::warn!(repository = %repository, digest = %digest, error = %e, "cannot check a published digest in the registry");
                    report.registry_errors.push(e.to_string());
                }
            }
        }
        Ok(())
    }
}

/// A digest the snapshot needs facts about.
struct Wanted {
    image: String,
    repository: String,
    digest: String,
    /// The digest users get, or the one the pre-pullers pull first (not
    /// an earlier version).
    current: bool,
    /// Its newest scan row id.
    scan_row: i64,
}

fn poisoned() -> StateError {
    StateError::Encode {
        image: String::new(),
        message: "the hub's digest cache lock is poisoned".into(),
    }
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
    Some(ScanDoc {
        verdict: scan.verdict.clone(),
        summary: report.summary,
        scanned_at: labforge_builder::state::format_rfc3339(scan.created_at),
    })
}
