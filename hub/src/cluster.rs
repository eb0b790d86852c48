//! The Kubernetes sync: the profiles ConfigMap and the pre-puller
//! DaemonSets of the served snapshot, kept in a cluster like a controller
//! does. `labforge k8s sync` runs it once; `labforge serve` with
//! `[kubernetes] sync = true` runs it after every new snapshot and on an
//! interval.
//!
//! One sync: list labforge's own objects (by label), build the desired
//! ones from the snapshot (pure: `labforge_core::cluster`), plan, then
//! server-side apply what differs and delete what is stale. A second sync
//! with nothing published in between sends no write at all. A conflict
//! with another field manager, a refused object or an API error is
//! reported on its object and the others go on; transient errors are
//! retried inside `labforge_builder::cluster`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use labforge_builder::cluster::{Cluster, ClusterError};
use labforge_core::catalog::Toleration;
use labforge_core::cluster::prepull::{self, PrepullSettings, PullImage, Rollout};
use labforge_core::cluster::profiles::{self, Profiles, ProfilesError};
use labforge_core::cluster::{Action, Change, Kind, Object, Owner, plan, selector};
use labforge_core::spawner::Viewer;
use serde::Serialize;
use serde_json::Value;

use crate::snapshot::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Profiles(#[from] ProfilesError),
    #[error("no catalog snapshot to sync yet: {0}")]
    NoSnapshot(String),
}

/// What is synced, from `[kubernetes]`.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub instance: String,
    pub profiles_configmap: bool,
    pub prepull: PrepullSettings,
    /// The tolerations every user pod gets (`[hub.spawner] base_tolerations`).
    pub base_tolerations: Vec<Toleration>,
    /// Between syncs when nothing changes (the hub's background task).
    pub resync: Duration,
}

/// How one sync runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncMode {
    /// Plan and report, write nothing.
    pub dry_run: bool,
    /// Take over fields another field manager owns.
    pub force: bool,
}

/// One object's change and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    #[serde(flatten)]
    pub change: Change,
    /// Done (or, in a dry run, would be done) without an error.
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For DaemonSets: on how many of their nodes every image is pulled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub namespace: String,
    /// The snapshot that was synced.
    pub generation: u64,
    pub dry_run: bool,
    pub changes: Vec<Outcome>,
}

impl SyncReport {
    pub fn failed(&self) -> usize {
        self.changes.iter().filter(|c| !c.ok).count()
    }

    /// Writes made (or planned, in a dry run).
    pub fn writes(&self) -> usize {
        self.changes
            .iter()
            .filter(|c| c.change.action != Action::Unchanged)
            .count()
    }
}

/// The objects the snapshot asks for. `owner` is the profiles ConfigMap
/// once it exists (the DaemonSets belong to it).
pub fn desired(
    snapshot: &Snapshot,
    settings: &SyncSettings,
    owner: Option<&Owner>,
) -> Result<Vec<Object>, SyncError> {
    let mut objects = Vec::new();
    if settings.profiles_configmap {
        objects.push(profiles_configmap(snapshot, &settings.instance)?);
    }
    objects.extend(daemonsets(snapshot, settings, owner));
    Ok(objects)
}

fn daemonsets(snapshot: &Snapshot, settings: &SyncSettings, owner: Option<&Owner>) -> Vec<Object> {
    let images: Vec<PullImage> = snapshot
        .published()
        .map(|(image, versions)| {
            PullImage::new(
                image,
                versions.iter().map(|v| v.reference.clone()).collect(),
            )
        })
        .collect();
    prepull::daemonsets(&prepull::Prepull {
        instance: &settings.instance,
        images: &images,
        base_tolerations: &settings.base_tolerations,
        settings: &settings.prepull,
        owner,
    })
}

fn profiles_configmap(snapshot: &Snapshot, instance: &str) -> Result<Object, SyncError> {
    let text = |viewer: &Viewer| {
        snapshot
            .profiles(viewer)
            .map(|b| String::from_utf8_lossy(&b.json.bytes).into_owned())
            .map_err(|e| SyncError::NoSnapshot(e.join("; ")))
    };
    let public = text(&Viewer::default())?;
    let all = text(&Viewer {
        see_all: true,
        ..Viewer::default()
    })?;
    let groups: BTreeMap<String, Vec<String>> = snapshot
        .catalog
        .images
        .iter()
        .filter(|d| !d.groups.is_empty())
        .map(|d| (d.slug.clone(), d.groups.clone()))
        .collect();
    Ok(profiles::configmap(&Profiles {
        instance,
        public: &public,
        all: &all,
        groups: &groups,
    })?)
}

/// Bring the cluster in line with `snapshot` (or, in a dry run, say what
/// that would take: every apply sent with `dryRun=All`, deletes only
/// listed). Fails only when the cluster cannot be listed or the
/// objects cannot be built; a failure on one object is on its outcome.
pub async fn sync(
    cluster: &Cluster,
    snapshot: &Snapshot,
    settings: &SyncSettings,
    mode: SyncMode,
) -> Result<SyncReport, SyncError> {
    let instance = &settings.instance;
    let labels = selector(instance);
    let mut current: Vec<(Kind, Value)> = Vec::new();
    for kind in Kind::ALL {
        for object in cluster.list(kind, &labels).await? {
            current.push((kind, object));
        }
    }

    // The DaemonSets name the ConfigMap as their owner, so it has to
    // exist (and have a uid) first. A ConfigMap that cannot be built (a
    // list over 1 MiB) fails on its own: the one in the cluster stays, and
    // the pre-pullers are still synced.
    let cm_name = profiles::name(instance);
    let cm = settings
        .profiles_configmap
        .then(|| profiles_configmap(snapshot, instance));
    let mut early: Option<Outcome> = None;
    let mut owner = None;
    if let Some(built) = &cm {
        let existing = current
            .iter()
            .find(|(k, o)| *k == Kind::ConfigMap && plan::name(o) == Some(cm_name.as_str()));
        if let Err(e) = built {
            early = Some(Outcome {
                change: Change {
                    kind: Kind::ConfigMap,
                    name: cm_name.clone(),
                    action: if existing.is_some() {
                        Action::Update {
                            fields: vec![".data".into()],
                        }
                    } else {
                        Action::Create
                    },
                    body: None,
                    uid: existing.and_then(|(_, o)| plan::uid(o)),
                },
                ok: false,
                error: Some(e.to_string()),
                rollout: None,
            });
        }
        let uid = match (existing, built) {
            (Some((_, o)), _) => plan::uid(o),
            (None, Ok(cm)) if !mode.dry_run => {
                let change = Change {
                    kind: Kind::ConfigMap,
                    name: cm.name.clone(),
                    action: Action::Create,
                    body: None,
                    uid: None,
                };
                match cluster
                    .apply(Kind::ConfigMap, &cm.name, &cm.body, mode.force, false)
                    .await
                {
                    Ok(applied) => {
                        tracing::info!(k8s.kind = "configmap", k8s.name = %cm.name, "created");
                        let uid = plan::uid(&applied);
                        current.push((Kind::ConfigMap, applied));
                        early = Some(Outcome {
                            change,
                            ok: true,
                            error: None,
                            rollout: None,
                        });
                        uid
                    }
                    Err(e) => {
                        early = Some(failed(change, &e));
                        None
                    }
                }
            }
            (None, _) => None,
        };
        owner = uid.map(|uid| Owner {
            kind: Kind::ConfigMap,
            name: cm_name.clone(),
            uid,
        });
    }

    let mut want: Vec<Object> = Vec::new();
    if let Some(Ok(cm)) = cm {
        want.push(cm);
    }
    want.extend(daemonsets(snapshot, settings, owner.as_ref()));
    let mut outcomes = Vec::new();
    let mut changes = plan(instance, &want, &current);
    if let Some(done) = early.take() {
        // In the ConfigMap's place (first), instead of a create, or of a
        // delete when it could not be built.
        changes.retain(|c| !(c.kind == Kind::ConfigMap && c.name == cm_name));
        outcomes.push(done);
    }
    for change in changes {
        let listed = current
            .iter()
            .find(|(k, o)| *k == change.kind && plan::name(o) == Some(change.name.as_str()))
            .map(|(_, o)| o);
        let outcome = match (&change.action, &change.body) {
            (Action::Unchanged, _) => Outcome {
                rollout: rollout(change.kind, listed),
                change,
                ok: true,
                error: None,
            },
            // A dry run still asks the server (`dryRun=All`): an object it
            // would refuse, or a conflict, shows now, and nothing is stored.
            (Action::Create | Action::Update { .. }, Some(body)) => {
                match cluster
                    .apply(change.kind, &change.name, body, mode.force, mode.dry_run)
                    .await
                {
                    Ok(applied) => {
                        if !mode.dry_run {
                            log_change(&change);
                        }
                        Outcome {
                            rollout: rollout(
                                change.kind,
                                if mode.dry_run { listed } else { Some(&applied) },
                            ),
                            change,
                            ok: true,
                            error: None,
                        }
                    }
                    Err(e) => failed(change, &e),
                }
            }
            (Action::Delete, _) if mode.dry_run => Outcome {
                rollout: rollout(change.kind, listed),
                change,
                ok: true,
                error: None,
            },
            (Action::Delete, _) => {
                match cluster
                    .delete(change.kind, &change.name, change.uid.as_deref())
                    .await
                {
                    Ok(_) => {
                        log_change(&change);
                        Outcome {
                            change,
                            ok: true,
                            error: None,
                            rollout: None,
                        }
                    }
                    Err(e) => failed(change, &e),
                }
            }
            (Action::Create | Action::Update { .. }, None) => Outcome {
                change,
                ok: false,
                error: Some("internal error: a change without a body".into()),
                rollout: None,
            },
        };
        outcomes.push(outcome);
    }
    Ok(SyncReport {
        namespace: cluster.namespace().to_string(),
        generation: snapshot.generation,
        dry_run: mode.dry_run,
        changes: outcomes,
    })
}

fn log_change(change: &Change) {
    let what = match &change.action {
        Action::Create => "created",
        Action::Update { .. } => "updated",
        Action::Delete => "deleted",
        Action::Unchanged => "unchanged",
    };
    match &change.action {
        Action::Update { fields } => tracing::info!(
            k8s.kind = %change.kind,
            k8s.name = %change.name,
            k8s.fields = %fields.join(", "),
            "{what}"
        ),
        _ => tracing::info!(k8s.kind = %change.kind, k8s.name = %change.name, "{what}"),
    }
}

fn failed(change: Change, error: &ClusterError) -> Outcome {
    tracing::error!(k8s.kind = %change.kind, k8s.name = %change.name, error = %error, "sync of this object failed");
    Outcome {
        change,
        ok: false,
        error: Some(error.to_string()),
        rollout: None,
    }
}

fn rollout(kind: Kind, object: Option<&Value>) -> Option<Rollout> {
    (kind == Kind::DaemonSet)
        .then_some(object)
        .flatten()
        .map(Rollout::of)
}

/// What `/readyz` says about the sync.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncStatus {
    /// Unix ms of the last sync attempt and of the last one without errors.
    pub last_attempt_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    /// The generation last synced without errors.
    pub generation: Option<u64>,
    /// Why the last sync failed, object by object.
    pub errors: Vec<String>,
}

/// The hub's background sync.
pub struct Syncer {
    pub cluster: Cluster,
    pub settings: SyncSettings,
    status: Mutex<SyncStatus>,
}

impl Syncer {
    pub fn new(cluster: Cluster, settings: SyncSettings) -> Syncer {
        Syncer {
            cluster,
            settings,
            status: Mutex::new(SyncStatus::default()),
        }
    }

    pub fn status(&self) -> SyncStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Sync `snapshot` once and record how it went.
    pub async fn run_once(&self, snapshot: &Snapshot) -> Result<SyncReport, SyncError> {
        let now = labforge_builder::state::unix_ms_now();
        // A controller owns its objects: fields someone changed by hand
        // are taken back (`labforge k8s sync` reports such conflicts
        // instead, unless --force).
        let mode = SyncMode {
            dry_run: false,
            force: true,
        };
        let result = sync(&self.cluster, snapshot, &self.settings, mode).await;
        if let Ok(mut status) = self.status.lock() {
            status.last_attempt_ms = Some(now);
            match &result {
                Ok(report) if report.failed() == 0 => {
                    status.last_success_ms = Some(now);
                    status.generation = Some(report.generation);
                    status.errors.clear();
                }
                Ok(report) => {
                    status.errors = report
                        .changes
                        .iter()
                        .filter_map(|c| c.error.clone())
                        .collect();
                }
                Err(e) => status.errors = vec![e.to_string()],
            }
        }
        result
    }

    /// Sync every new snapshot at once, and every `resync` anyway (someone
    /// may have changed or deleted an object). After a failure, try again
    /// sooner: 10 s, doubling up to `resync`.
    pub async fn run(self: Arc<Self>, hub: Arc<crate::Hub>) {
        let mut synced: Option<u64> = None;
        let mut last = tokio::time::Instant::now();
        let mut retry = Duration::from_secs(10);
        let mut failing = false;
        loop {
            let Some(snapshot) = hub.snapshot() else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let due = last.elapsed() >= if failing { retry } else { self.settings.resync };
            if synced != Some(snapshot.generation) || due {
                last = tokio::time::Instant::now();
                match self.run_once(&snapshot).await {
                    Ok(report) if report.failed() == 0 => {
                        if report.writes() > 0 {
                            tracing::info!(
                                generation = report.generation,
                                k8s.writes = report.writes(),
                                k8s.namespace = %report.namespace,
                                "cluster synced"
                            );
                        }
                        failing = false;
                        retry = Duration::from_secs(10);
                    }
                    Ok(report) => {
                        tracing::warn!(
                            generation = report.generation,
                            k8s.failed = report.failed(),
                            retry_seconds = retry.as_secs(),
                            "cluster sync left objects out of date; trying again"
                        );
                        if failing {
                            retry = (retry * 2).min(self.settings.resync);
                        }
                        failing = true;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, retry_seconds = retry.as_secs(), "cluster sync failed; trying again");
                        if failing {
                            retry = (retry * 2).min(self.settings.resync);
                        }
                        failing = true;
                    }
                }
                synced = Some(snapshot.generation);
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {},
                () = hub.loaded.notified() => {},
            }
        }
    }
}
