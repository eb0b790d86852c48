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
//!
//! With `[kubernetes.prepull] offer_after`, the hub also looks at the
//! pre-pullers' status after every sync ([`look`]): a current version
//! that is not yet on enough of its nodes is held back from users (the
//! loader offers the version before it), and the hub looks again every
//! [`GATE_POLL`] until it is. A reference once seen ready stays ready
//! while it is pulled: a DaemonSet's status counts the pods of its newest
//! template only, so a sibling image added to it says nothing about the
//! images already on its nodes. What the profiles ConfigMap offers counts
//! as ready too, so that a restarted hub does not take back what users had.

use std::collections::{BTreeMap, BTreeSet};
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

/// While a new version waits for the pre-pullers, how often the hub looks
/// at their status (instead of every `resync`).
pub const GATE_POLL: Duration = Duration::from_secs(10);

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
    // What the pre-pullers pull is not gated: a new version has to reach
    // the nodes before it can be offered.
    let images: Vec<PullImage> = snapshot
        .pulls()
        .iter()
        .map(|pull| PullImage {
            offered: pull.offered.as_ref().map(|v| v.reference.clone()),
            ..PullImage::new(
                &pull.image,
                pull.versions.iter().map(|v| v.reference.clone()).collect(),
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
    /// New versions waiting for the pre-pullers (`offer_after` set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateStatus>,
}

/// What `/readyz` says about the versions held back.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GateStatus {
    /// `[kubernetes.prepull] offer_after`.
    pub offer_after: f64,
    /// Unix ms of the last look at the pre-pullers.
    pub last_look_ms: Option<i64>,
    /// Why the last look failed (what is held back stays held back).
    pub error: Option<String>,
    /// Current versions users are not offered yet.
    pub held: Vec<Held>,
}

/// A current version that users are not offered yet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Held {
    pub image: String,
    /// `repo@sha256:…`
    pub reference: String,
    /// On how many of its pre-pullers' nodes it is, of how many, and how
    /// many it needs.
    pub pulled: u64,
    pub nodes: u64,
    pub needed: u64,
    /// What it waits for.
    pub waiting: String,
}

/// What one look at the pre-pullers found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Look {
    /// References (`repo@sha256:…`) on enough of their nodes, remembered
    /// ones included; only versions the pre-pullers pull.
    pub ready: BTreeSet<String>,
    /// Current versions not among them (a rollback pin's are never held).
    pub held: Vec<Held>,
}

/// Judge the pre-pullers of `snapshot` against the objects `listed` in the
/// cluster, at `share` of their nodes. `remembered` references stay ready,
/// and so do those the listed profiles ConfigMap offers.
pub fn judge(
    snapshot: &Snapshot,
    settings: &SyncSettings,
    share: f64,
    listed: &[(Kind, Value)],
    remembered: &BTreeSet<String>,
) -> Look {
    let want = daemonsets(snapshot, settings, None);
    let daemonsets: Vec<Value> = listed
        .iter()
        .filter(|(k, _)| *k == Kind::DaemonSet)
        .map(|(_, o)| o.clone())
        .collect();
    let pulling = prepull::pulling(&want, &daemonsets, share);
    let cm_name = profiles::name(&settings.instance);
    let offered: BTreeSet<String> = listed
        .iter()
        .filter(|(k, o)| *k == Kind::ConfigMap && plan::name(o) == Some(cm_name.as_str()))
        .flat_map(|(_, o)| profiles::offered(o))
        .collect();
    // Readiness is kept for every version still pulled, the one users are
    // offered while a newer one is held included: a version offered stays
    // offered however many newer ones arrive meanwhile.
    let pulled: BTreeSet<&str> = snapshot
        .pulls()
        .iter()
        .flat_map(|p| {
            p.versions
                .iter()
                .chain(&p.offered)
                .map(|v| v.reference.as_str())
        })
        .collect();
    let ready: BTreeSet<String> = remembered
        .iter()
        .chain(&offered)
        .cloned()
        .chain(
            pulling
                .iter()
                .filter(|(_, p)| p.ready)
                .map(|(r, _)| r.clone()),
        )
        .filter(|r| pulled.contains(r.as_str()))
        .collect();
    let held = snapshot
        .pulls()
        .iter()
        .filter(|p| !p.pinned)
        .filter_map(|p| {
            let current = p.versions.first()?;
            if ready.contains(&current.reference) {
                return None;
            }
            let state = pulling.get(&current.reference);
            let nodes = state.map_or(0, |s| s.nodes);
            Some(Held {
                image: p.image.name.clone(),
                reference: current.reference.clone(),
                pulled: state.map_or(0, |s| s.pulled),
                nodes,
                needed: prepull::needed(nodes, share),
                waiting: match state.and_then(|s| s.waiting) {
                    Some(w) => w.to_string(),
                    None => "no pre-puller pulls it".into(),
                },
            })
        })
        .collect();
    Look { ready, held }
}

/// List the pre-pullers (and the profiles ConfigMap) of this instance and
/// judge them: see [`judge`].
pub async fn look(
    cluster: &Cluster,
    snapshot: &Snapshot,
    settings: &SyncSettings,
    share: f64,
    remembered: &BTreeSet<String>,
) -> Result<Look, SyncError> {
    let labels = selector(&settings.instance);
    let mut listed: Vec<(Kind, Value)> = Vec::new();
    for kind in Kind::ALL {
        if kind == Kind::ConfigMap && !settings.profiles_configmap {
            continue;
        }
        for object in cluster.list(kind, &labels).await? {
            listed.push((kind, object));
        }
    }
    Ok(judge(snapshot, settings, share, &listed, remembered))
}

/// The hub's background sync.
pub struct Syncer {
    pub cluster: Cluster,
    pub settings: SyncSettings,
    status: Mutex<SyncStatus>,
    /// References on enough of their nodes (`offer_after`), as of the last
    /// look.
    ready: Mutex<BTreeSet<String>>,
}

impl Syncer {
    pub fn new(cluster: Cluster, settings: SyncSettings) -> Syncer {
        let status = SyncStatus {
            gate: settings.prepull.gate().map(|share| GateStatus {
                offer_after: share,
                ..GateStatus::default()
            }),
            ..SyncStatus::default()
        };
        Syncer {
            cluster,
            settings,
            status: Mutex::new(status),
            ready: Mutex::new(BTreeSet::new()),
        }
    }

    /// New versions wait for the pre-pullers (`offer_after` is set).
    pub fn gated(&self) -> bool {
        self.settings.prepull.gate().is_some()
    }

    /// The references users may be offered, when new versions wait for
    /// the pre-pullers: before the first look, none.
    pub fn ready(&self) -> Option<BTreeSet<String>> {
        self.gated()
            .then(|| self.ready.lock().map(|r| r.clone()).unwrap_or_default())
    }

    /// Some current version is held back as of the last look, or that
    /// look failed: look again soon.
    fn holding(&self) -> bool {
        self.status
            .lock()
            .ok()
            .and_then(|s| {
                s.gate
                    .as_ref()
                    .map(|g| !g.held.is_empty() || g.error.is_some())
            })
            .unwrap_or(false)
    }

    /// Look at the pre-pullers of `snapshot` and remember what is ready.
    /// Returns whether that changed (the hub then loads a new snapshot).
    /// Does nothing without `offer_after`.
    pub async fn look(&self, snapshot: &Snapshot) -> Result<bool, SyncError> {
        let Some(share) = self.settings.prepull.gate() else {
            return Ok(false);
        };
        let remembered = self.ready.lock().map(|r| r.clone()).unwrap_or_default();
        let now = labforge_builder::state::unix_ms_now();
        let result = look(&self.cluster, snapshot, &self.settings, share, &remembered).await;
        let before = self
            .status
            .lock()
            .ok()
            .and_then(|s| s.gate.as_ref().map(|g| g.held.clone()))
            .unwrap_or_default();
        if let Ok(mut status) = self.status.lock()
            && let Some(gate) = status.gate.as_mut()
        {
            gate.last_look_ms = Some(now);
            match &result {
                Ok(look) => {
                    gate.error = None;
                    gate.held = look.held.clone();
                }
                Err(e) => gate.error = Some(e.to_string()),
            }
        }
        let look = result?;
        for held in &look.held {
            if !before.iter().any(|b| b.reference == held.reference) {
                tracing::info!(
                    image = %held.image,
                    reference = %held.reference,
                    k8s.pulled = held.pulled,
                    k8s.nodes = held.nodes,
                    waiting = %held.waiting,
                    "a new version is held back until the pre-pullers have it on enough of its nodes"
                );
            }
        }
        for was in &before {
            if look.ready.contains(&was.reference) {
                tracing::info!(image = %was.image, reference = %was.reference, "a new version is on enough of its nodes: offered now");
            }
        }
        let changed = look.ready != remembered;
        if let Ok(mut ready) = self.ready.lock() {
            *ready = look.ready;
        }
        Ok(changed)
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
    /// sooner: 10 s, doubling up to `resync`. With `offer_after`, look at
    /// the pre-pullers after every sync and every [`GATE_POLL`] while a
    /// version is held back, and load a new snapshot when what is ready
    /// changed.
    pub async fn run(self: Arc<Self>, hub: Arc<crate::Hub>) {
        let mut synced: Option<u64> = None;
        let mut last = tokio::time::Instant::now();
        let mut retry = Duration::from_secs(10);
        let mut failing = false;
        let mut looked: Option<tokio::time::Instant> = None;
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
                looked = None;
            }
            let look =
                self.gated() && looked.is_none_or(|at| self.holding() && at.elapsed() >= GATE_POLL);
            if look {
                looked = Some(tokio::time::Instant::now());
                match self.look(&snapshot).await {
                    // The new snapshot is synced at once (its profile list).
                    Ok(true) => {
                        if hub.reload(false).await.is_ok() {
                            continue;
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the pre-pullers' status; what is held back stays held back");
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {},
                () = hub.loaded.notified() => {},
            }
        }
    }
}
