//! The labforge hub, `labforge serve`: the catalog API that JupyterHub's
//! KubeSpawner reads its `profile_list` from, the JSON catalog for tools,
//! the web catalog for users, metrics and health.
//!
//! - [`Hub`] holds the current [`snapshot::Snapshot`] behind an atomic
//!   pointer: a load builds a whole new snapshot and swaps it in, so every
//!   request reads one complete, validated catalog. A load that fails
//!   (a broken catalog, a list that breaks KubeSpawner's contract, the state
//!   store unreachable) keeps the last good snapshot and turns `/readyz` red
//!   with the reason.
//! - Loads happen at start, when the state store changes (polled), when the
//!   catalog files change, when an admin posts `/api/v1/publish`, when the
//!   registry reports a push or delete, and every registry-check interval
//!   (which asks the registry about every digest again).
//! - [`app`] builds the router without a socket (tests call it with
//!   `oneshot`); [`serve`] runs it on a bound listener with the background
//!   refresher until the shutdown future resolves.

pub mod api;
pub mod auth;
pub mod bot;
pub mod cluster;
pub mod doc;
pub mod events;
pub mod git;
pub mod github;
pub mod load;
pub mod metrics;
pub mod pipeline;
pub mod rollback;
pub mod snapshot;
pub mod web;
pub mod webhook;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;

pub use api::app;
use load::{LoadReport, Loader};
use snapshot::Snapshot;

/// How often a failed load is retried when nothing changed.
const FAILED_RETRY: Duration = Duration::from_secs(30);

/// How long the hub waits for its first look at the pre-pullers
/// (`offer_after`) before it serves anyway.
const FIRST_LOOK: Duration = Duration::from_secs(15);

/// How the hub behaves, apart from where it loads from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Between polls of the state store and the catalog files.
    pub refresh: Duration,
    /// Between checks of every digest against the registry.
    pub registry_check: Duration,
    pub tokens: auth::Tokens,
    pub site: web::Site,
}

/// What `/readyz` reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    /// The last load succeeded and a snapshot is served.
    pub ready: bool,
    /// Why not ready (the last load's error), or `None`.
    pub reason: Option<String>,
    /// Published digests missing from the registry (dropped from the profiles).
    pub missing: Vec<String>,
    pub registry_errors: Vec<String>,
    /// Unix ms of the last load attempt and of the last good one.
    pub last_attempt_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
}

pub struct Hub {
    snapshot: ArcSwapOption<Snapshot>,
    status: Mutex<Status>,
    loader: Loader,
    generation: AtomicU64,
    /// Serialises loads: one at a time, in order.
    loading: tokio::sync::Mutex<()>,
    /// Wakes the refresher for an immediate load.
    wake: tokio::sync::Notify,
    pub metrics: metrics::Metrics,
    pub web: web::Web,
    pub settings: Settings,
    /// The GitHub bot, when configured.
    bot: Option<Arc<bot::Bot>>,
    /// The Kubernetes sync, when configured.
    syncer: Option<Arc<cluster::Syncer>>,
    /// Woken after every snapshot that was swapped in.
    pub(crate) loaded: tokio::sync::Notify,
}

impl Hub {
    pub fn new(loader: Loader, settings: Settings) -> Result<Hub, web::WebError> {
        Ok(Hub {
            snapshot: ArcSwapOption::empty(),
            status: Mutex::new(Status::default()),
            loader,
            generation: AtomicU64::new(0),
            loading: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            metrics: metrics::Metrics::default(),
            web: web::Web::new()?,
            settings,
            bot: None,
            syncer: None,
            loaded: tokio::sync::Notify::new(),
        })
    }

    /// Serve the GitHub bot too (`POST /webhooks/github` and its workers).
    pub fn with_bot(mut self, bot: bot::Bot) -> Hub {
        self.bot = Some(Arc::new(bot));
        self
    }

    pub fn bot(&self) -> Option<&Arc<bot::Bot>> {
        self.bot.as_ref()
    }

    /// Keep a cluster in sync with every snapshot (`[kubernetes] sync`).
    pub fn with_syncer(mut self, syncer: cluster::Syncer) -> Hub {
        self.syncer = Some(Arc::new(syncer));
        self
    }

    pub fn syncer(&self) -> Option<&Arc<cluster::Syncer>> {
        self.syncer.as_ref()
    }

    pub fn layout(&self) -> &labforge_builder::Layout {
        self.loader.layout()
    }

    /// The snapshot being served, if one was ever loaded.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.load_full()
    }

    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn store(&self) -> &labforge_builder::state::StateStore {
        self.loader.store()
    }

    pub fn registry_options(&self) -> &labforge_builder::registry::RegistryOptions {
        self.loader.registry_options()
    }

    /// Load now and swap the new snapshot in; on failure keep the old one
    /// and record why. Returns the snapshot served afterwards.
    pub async fn reload(&self, recheck: bool) -> Result<Arc<Snapshot>, String> {
        let _one_at_a_time = self.loading.lock().await;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let started = std::time::Instant::now();
        let now = labforge_builder::state::unix_ms_now();
        // With `offer_after`, what the pre-pullers hold decides what is offered.
        let ready = self.syncer.as_ref().and_then(|s| s.ready());
        let result = self.loader.load(generation, recheck, ready.as_ref()).await;
        let elapsed = started.elapsed();
        let mut status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        status.last_attempt_ms = Some(now);
        let outcome = match result {
            Ok((snapshot, report)) => {
                let snapshot = Arc::new(snapshot);
                self.snapshot.store(Some(Arc::clone(&snapshot)));
                self.metrics.loaded(&snapshot, &report, elapsed);
                log_report(&snapshot, &report, elapsed);
                status.ready = true;
                status.reason = None;
                status.missing = report
                    .missing
                    .iter()
                    .map(|(image, reference)| format!("{image}: {reference}"))
                    .collect();
                status.registry_errors = report.registry_errors.clone();
                status.last_success_ms = Some(now);
                self.loaded.notify_waiters();
                Ok(snapshot)
            }
            Err(e) => {
                let reason = e.to_string();
                self.metrics.load_failed();
                status.ready = false;
                status.reason = Some(match self.snapshot() {
                    Some(kept) => format!(
                        "{reason} (still serving the last good catalog, generation {})",
                        kept.generation
                    ),
                    None => reason.clone(),
                });
                tracing::error!(generation, error = %reason, "catalog load failed; the last good snapshot stays");
                Err(reason)
            }
        };
        if let Ok(mut s) = self.status.lock() {
            *s = status;
        }
        outcome
    }

    /// Ask the refresher for a load soon (registry events).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Poll the state store and the catalog files; load on a change, on a
    /// wake-up and every registry-check interval. Runs until dropped.
    async fn refresh_loop(self: Arc<Self>) {
        let mut last_marker = self.loader.marker().await.ok();
        let mut last_sources = self.loader.sources_hash().await;
        let mut last_recheck = tokio::time::Instant::now();
        let mut last_attempt = tokio::time::Instant::now();
        loop {
            let woken = tokio::select! {
                () = tokio::time::sleep(self.settings.refresh) => false,
                () = self.wake.notified() => true,
            };
            if woken {
                // Registry events come in bursts (one per blob and tag):
                // let the burst finish, then load once.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let marker = self.loader.marker().await.ok();
            let sources = self.loader.sources_hash().await;
            let recheck = last_recheck.elapsed() >= self.settings.registry_check;
            let changed = marker != last_marker || sources != last_sources;
            // A failed load is retried when something changed, and at
            // least every 30 s (a state store that was down may be back).
            let retry = !self.status().ready && last_attempt.elapsed() >= FAILED_RETRY;
            if woken || changed || recheck || retry {
                last_attempt = tokio::time::Instant::now();
                // What was attempted, not what succeeded: restoring the
                // last good catalog after a broken edit is a change too.
                let _ = self.reload(recheck || woken).await;
                last_marker = marker;
                last_sources = sources;
                if recheck {
                    last_recheck = tokio::time::Instant::now();
                }
            }
        }
    }
}

fn log_report(snapshot: &Snapshot, report: &LoadReport, elapsed: Duration) {
    tracing::info!(
        generation = snapshot.generation,
        images = snapshot.catalog.images.len(),
        unavailable = snapshot.catalog.unavailable.len(),
        profiles = snapshot.profile_count(),
        registry.checked = report.checked,
        registry.missing = report.missing.len(),
        load.duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        "catalog snapshot loaded"
    );
    for (image, reference) in &report.missing {
        tracing::warn!(image = %image, reference = %reference, "published digest missing from the registry");
    }
}

/// Load the first snapshot (a failure is served as not ready, and retried
/// by the refresher), then serve `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    hub: Arc<Hub>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Err(e) = hub.reload(true).await {
        tracing::warn!(error = %e, "no catalog to serve yet; /readyz says why, and the hub retries");
    }
    // With `offer_after`, nothing counts as pulled before a look at the
    // pre-pullers: look once before serving, so that a restart does not
    // take new versions back from users for the moment until the first sync.
    if let Some(syncer) = hub.syncer().filter(|s| s.gated())
        && let Some(snapshot) = hub.snapshot()
    {
        match tokio::time::timeout(FIRST_LOOK, syncer.look(&snapshot)).await {
            Ok(Ok(true)) => {
                let _ = hub.reload(false).await;
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the pre-pullers' status yet; versions not known to be pulled are held back")
            }
            Err(_) => {
                tracing::warn!(
                    "the pre-pullers' status did not arrive in time; versions not known to be pulled are held back"
                )
            }
        }
    }
    let refresher = tokio::spawn(Arc::clone(&hub).refresh_loop());
    let mut workers = bot::start(&hub).await;
    if let Some(syncer) = hub.syncer() {
        workers.push(tokio::spawn(Arc::clone(syncer).run(Arc::clone(&hub))));
    }
    let result = axum::serve(listener, app(hub))
        .with_graceful_shutdown(shutdown)
        .await;
    refresher.abort();
    // A job cut short is queued again at the next start.
    for worker in workers {
        worker.abort();
    }
    result
}

/// Ask a running hub at `url` to load now (`POST /api/v1/publish` with the
/// admin token); returns the generation it serves afterwards.
pub async fn notify(url: &str, token: Option<&str>) -> Result<u64, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = client.post(format!("{}/api/v1/publish", url.trim_end_matches('/')));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request
        .send()
        .await
        .map_err(|e| labforge_core::error_chain(&e))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        return Err(format!(
            "{status}: {}",
            body.get("error").and_then(|e| e.as_str()).unwrap_or("")
        ));
    }
    Ok(body
        .get("generation")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0))
}
