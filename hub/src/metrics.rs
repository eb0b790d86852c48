//! Prometheus metrics (`GET /metrics`, text format 0.0.4): requests by
//! route and status, load outcomes, the snapshot's age and size, and the
//! state store's build and publish counters as of the last load.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::load::LoadReport;
use crate::snapshot::Snapshot;

/// The routes requests are counted under.
pub const ROUTES: [&str; 14] = [
    "/api/v1/profiles",
    "/api/v1/catalog",
    "/api/v1/images/{name}",
    "/api/v1/publish",
    "/api/v1/images/{name}/rollback",
    "/api/v1/registry/events",
    "/metrics",
    "/healthz",
    "/readyz",
    "/",
    "/images/{name}",
    "/static/style.css",
    "other",
    "/webhooks/github",
];

/// Index of a route in [`ROUTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route(pub usize);

impl Route {
    pub const PROFILES: Route = Route(0);
    pub const CATALOG: Route = Route(1);
    pub const IMAGE: Route = Route(2);
    pub const PUBLISH: Route = Route(3);
    pub const ROLLBACK: Route = Route(4);
    pub const EVENTS: Route = Route(5);
    pub const METRICS: Route = Route(6);
    pub const HEALTHZ: Route = Route(7);
    pub const READYZ: Route = Route(8);
    pub const INDEX: Route = Route(9);
    pub const IMAGE_PAGE: Route = Route(10);
    pub const STYLE: Route = Route(11);
    pub const OTHER: Route = Route(12);
    pub const WEBHOOK: Route = Route(13);
}

/// Status codes counted separately; anything else is counted by class.
const CODES: [u16; 10] = [200, 202, 304, 400, 401, 403, 404, 413, 500, 503];

#[derive(Default)]
struct LastLoad {
    counts: labforge_builder::state::Counts,
    images: usize,
    unavailable: usize,
    missing: usize,
    duration: Duration,
}

pub struct Metrics {
    /// `ROUTES.len() × (CODES.len() + 1)` counters; the last column is "other".
    requests: Vec<AtomicU64>,
    loads_ok: AtomicU64,
    loads_failed: AtomicU64,
    generation: AtomicU64,
    loaded_at_ms: AtomicU64,
    last: Mutex<LastLoad>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            requests: (0..ROUTES.len() * (CODES.len() + 1))
                .map(|_| AtomicU64::new(0))
                .collect(),
            loads_ok: AtomicU64::new(0),
            loads_failed: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            loaded_at_ms: AtomicU64::new(0),
            last: Mutex::new(LastLoad::default()),
        }
    }
}

impl Metrics {
    /// Count one answered request.
    pub fn request(&self, route: Route, status: u16) {
        let column = CODES
            .iter()
            .position(|&c| c == status)
            .unwrap_or(CODES.len());
        if let Some(counter) = self.requests.get(route.0 * (CODES.len() + 1) + column) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn loaded(&self, snapshot: &Snapshot, report: &LoadReport, duration: Duration) {
        self.loads_ok.fetch_add(1, Ordering::Relaxed);
        self.generation
            .store(snapshot.generation, Ordering::Relaxed);
        self.loaded_at_ms.store(
            u64::try_from(snapshot.loaded_at_ms).unwrap_or(0),
            Ordering::Relaxed,
        );
        if let Ok(mut last) = self.last.lock() {
            *last = LastLoad {
                counts: report.counts.clone(),
                images: snapshot.catalog.images.len(),
                unavailable: snapshot.catalog.unavailable.len(),
                missing: report.missing.len(),
                duration,
            };
        }
    }

    pub fn load_failed(&self) {
        self.loads_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; `now_ms` for the snapshot's age, `ready` for
    /// the readiness gauge.
    pub fn render(&self, now_ms: i64, ready: bool) -> String {
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "labforge_hub_requests_total",
            "counter",
            "HTTP requests answered, by route and status code.",
        );
        let mut lines = String::new();
        for (r, route) in ROUTES.iter().enumerate() {
            for (c, counter) in self.requests[r * (CODES.len() + 1)..(r + 1) * (CODES.len() + 1)]
                .iter()
                .enumerate()
            {
                let n = counter.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let code = CODES
                    .get(c)
                    .map_or_else(|| "other".to_string(), u16::to_string);
                let _ = writeln!(
                    lines,
                    "labforge_hub_requests_total{{route=\"{route}\",code=\"{code}\"}} {n}"
                );
            }
        }
        out.push_str(&lines);
        let gauge = |out: &mut String, name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "labforge_hub_loads_total",
            "counter",
            "Successful catalog loads.",
            self.loads_ok.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "labforge_hub_load_failures_total",
            "counter",
            "Catalog loads that failed (the last good snapshot stayed).",
            self.loads_failed.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "labforge_hub_ready",
            "gauge",
            "1 when the last load succeeded.",
            u8::from(ready).to_string(),
        );
        gauge(
            &mut out,
            "labforge_hub_snapshot_generation",
            "gauge",
            "Generation of the snapshot being served.",
            self.generation.load(Ordering::Relaxed).to_string(),
        );
        let loaded = self.loaded_at_ms.load(Ordering::Relaxed);
        let age = if loaded == 0 {
            "NaN".to_string()
        } else {
            format!("{:.3}", (now_ms as f64 - loaded as f64).max(0.0) / 1000.0)
        };
        gauge(
            &mut out,
            "labforge_hub_snapshot_age_seconds",
            "gauge",
            "Seconds since the snapshot being served was loaded.",
            age,
        );
        let Ok(last) = self.last.lock() else {
            return out;
        };
        gauge(
            &mut out,
            "labforge_hub_snapshot_images",
            "gauge",
            "Published images in the snapshot.",
            last.images.to_string(),
        );
        gauge(
            &mut out,
            "labforge_hub_snapshot_unavailable_images",
            "gauge",
            "Catalog images with nothing published or their digest missing.",
            last.unavailable.to_string(),
        );
        gauge(
            &mut out,
            "labforge_hub_missing_digests",
            "gauge",
            "Published digests the registry did not have at the last check.",
            last.missing.to_string(),
        );
        gauge(
            &mut out,
            "labforge_hub_load_duration_seconds",
            "gauge",
            "How long the last successful load took.",
            format!("{:.3}", last.duration.as_secs_f64()),
        );
        family(
            &mut out,
            "labforge_builds_total",
            "counter",
            "Build records in the state store, by result.",
        );
        for (result, n) in &last.counts.builds {
            let _ = writeln!(out, "labforge_builds_total{{result=\"{result}\"}} {n}");
        }
        gauge(
            &mut out,
            "labforge_publishes_total",
            "counter",
            "Scans in the state store that published their digest.",
            last.counts.publishes.to_string(),
        );
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}
