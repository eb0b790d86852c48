//! The HTTP routes: the API KubeSpawner and tools read, the admin
//! endpoints, health and metrics, and the web pages. Handlers only read the
//! current snapshot (or ask the hub to load, for admin calls); every body
//! they send was built with the snapshot.

// Handlers return `Result<_, Response>`: the error *is* the HTTP answer,
// made at most once per request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::body::{Body as HttpBody, Bytes};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use labforge_core::spawner::Viewer;

use crate::Hub;
use crate::auth::{Access, Denied};
use crate::metrics::Route;
use crate::snapshot::{Body, Snapshot};

/// Registry notification and rollback bodies are small; anything bigger is refused.
const BODY_LIMIT: usize = 1024 * 1024;

/// The router for `hub` (no socket: tests call it with `oneshot`).
pub fn app(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/api/v1/profiles", get(profiles))
        .route("/api/v1/catalog", get(catalog))
        .route("/api/v1/images/{name}", get(image))
        .route("/api/v1/images/{name}/rollback", post(rollback))
        .route("/api/v1/publish", post(publish))
        .route("/api/v1/registry/events", post(registry_events))
        .route(
            "/webhooks/github",
            post(crate::webhook::receive).layer(DefaultBodyLimit::max(crate::webhook::BODY_LIMIT)),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(index_page))
        .route("/images/{name}", get(image_page))
        .route("/static/style.css", get(style))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(hub)
}

const JSON: &str = "application/json";
const YAML: &str = "application/yaml";
const HTML: &str = "text/html; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Count the response under `route` and hand it back.
fn counted(hub: &Hub, route: Route, response: Response) -> Response {
    hub.metrics.request(route, response.status().as_u16());
    response
}

/// A JSON error body: `{"error": "..."}`.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let body = serde_json::json!({ "error": message.to_string() });
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"labforge\""),
        );
    }
    response
}

fn denied(d: Denied) -> Response {
    let status = match d {
        Denied::Missing | Denied::Wrong => StatusCode::UNAUTHORIZED,
        Denied::Disabled => StatusCode::FORBIDDEN,
    };
    error(status, d)
}

/// The snapshot, or the 503 that says why there is none.
fn current(hub: &Hub) -> Result<Arc<Snapshot>, Response> {
    hub.snapshot().ok_or_else(|| {
        let reason = hub
            .status()
            .reason
            .unwrap_or_else(|| "the first load has not finished".into());
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no catalog is loaded yet: {reason}"),
        )
    })
}

/// The snapshot, for a request allowed to read.
fn readable(hub: &Hub, headers: &HeaderMap) -> Result<Arc<Snapshot>, Response> {
    hub.settings
        .tokens
        .check(headers, Access::Read)
        .map_err(denied)?;
    current(hub)
}

/// Answer with `body`, or 304 when the client already has it.
fn cached(headers: &HeaderMap, body: &Body, content_type: &'static str) -> Response {
    let etag = HeaderValue::from_str(&body.etag).unwrap_or(HeaderValue::from_static("\"\""));
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == body.etag || t == "*");
    let mut builder = Response::builder()
        .header(header::ETAG, etag)
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::VARY, "Authorization");
    if fresh {
        builder = builder.status(StatusCode::NOT_MODIFIED);
        return builder
            .body(HttpBody::empty())
            .unwrap_or_else(|_| StatusCode::NOT_MODIFIED.into_response());
    }
    builder
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(HttpBody::from(body.bytes.clone()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `key=value` pairs of a query string, percent-decoded (`+` is a space).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /api/v1/profiles[?user=U&group=G…][&format=yaml]`
async fn profiles(
    State(hub): State<Arc<Hub>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let response = (|| {
        let snapshot = readable(&hub, &headers)?;
        let mut viewer = Viewer::default();
        let mut yaml = false;
        for (key, value) in query_pairs(query.as_deref()) {
            match key.as_str() {
                "user" => viewer.user = Some(value),
                "group" => {
                    viewer.groups.insert(value);
                }
                "format" if value == "yaml" => yaml = true,
                "format" if value == "json" => yaml = false,
                "format" => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        format!("format={value:?} is not served; use json (the default) or yaml"),
                    ));
                }
                _ => {}
            }
        }
        viewer.see_all = snapshot.is_staff(&viewer.groups);
        tracing::debug!(user = ?viewer.user, groups = ?viewer.groups, "profile list asked for");
        let bodies = snapshot.profiles(&viewer).map_err(|problems| {
            tracing::error!(problems = ?problems, "refusing to serve a profile list that breaks the contract");
            error(StatusCode::INTERNAL_SERVER_ERROR, problems.join("; "))
        })?;
        Ok(if yaml {
            cached(&headers, &bodies.yaml, YAML)
        } else {
            cached(&headers, &bodies.json, JSON)
        })
    })()
    .unwrap_or_else(|r| r);
    counted(&hub, Route::PROFILES, response)
}

/// `GET /api/v1/catalog`
async fn catalog(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    let response = (|| {
        let snapshot = readable(&hub, &headers)?;
        Ok::<_, Response>(cached(&headers, &snapshot.catalog_json, JSON))
    })()
    .unwrap_or_else(|r| r);
    counted(&hub, Route::CATALOG, response)
}

/// `GET /api/v1/images/{name}`
async fn image(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let response = (|| {
        let snapshot = readable(&hub, &headers)?;
        match snapshot.image(&name) {
            Some((_, body)) => Ok(cached(&headers, body, JSON)),
            None => Err(unknown_image(&snapshot, &name)),
        }
    })()
    .unwrap_or_else(|r| r);
    counted(&hub, Route::IMAGE, response)
}

fn unknown_image(snapshot: &Snapshot, name: &str) -> Response {
    match snapshot.catalog.unavailable.iter().find(|u| u.name == name) {
        Some(u) => error(
            StatusCode::NOT_FOUND,
            format!("{name} is in the catalog but not available: {}", u.reason),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no image {name:?} in the catalog; GET /api/v1/catalog lists them"),
        ),
    }
}

/// `POST /api/v1/publish`: load now (after `labforge build` published).
async fn publish(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    let response = match hub.settings.tokens.check(&headers, Access::Admin) {
        Err(d) => denied(d),
        Ok(()) => match hub.reload(true).await {
            Ok(snapshot) => axum::Json(serde_json::json!({
                "generation": snapshot.generation,
                "images": snapshot.catalog.images.len(),
                "unavailable": snapshot.catalog.unavailable,
            }))
            .into_response(),
            Err(reason) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the catalog did not load, the last good one is still served: {reason}"),
            ),
        },
    };
    counted(&hub, Route::PUBLISH, response)
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    /// A published digest; default: the one before the current.
    to: Option<String>,
    #[serde(default)]
    reason: String,
    /// Who asks (recorded); default `api`.
    actor: Option<String>,
}

/// `POST /api/v1/images/{name}/rollback` with an optional JSON body
/// `{"to": "sha256:…", "reason": "…", "actor": "…"}`.
async fn rollback(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = async {
        hub.settings
            .tokens
            .check(&headers, Access::Admin)
            .map_err(denied)?;
        let request: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
            RollbackRequest::default()
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("the body must be JSON like {{\"to\": \"sha256:…\", \"reason\": \"…\"}}: {e}"),
                )
            })?
        };
        let actor = format!("api:{}", request.actor.as_deref().unwrap_or("admin"));
        let done = crate::rollback::rollback(
            hub.store(),
            Some(hub.registry_options()),
            &name,
            request.to.as_deref(),
            &actor,
            &request.reason,
        )
        .await
        .map_err(|e| {
            let status = match e {
                crate::rollback::RollbackError::State(_) => StatusCode::INTERNAL_SERVER_ERROR,
                crate::rollback::RollbackError::NothingPublished { .. } => StatusCode::NOT_FOUND,
                crate::rollback::RollbackError::RegistryCheck { .. } => StatusCode::BAD_GATEWAY,
                _ => StatusCode::CONFLICT,
            };
            error(status, e)
        })?;
        let reloaded = hub.reload(false).await;
        Ok::<_, Response>(
            axum::Json(serde_json::json!({
                "rolled_back": done,
                "generation": reloaded.as_ref().ok().map(|s| s.generation),
                "reload_error": reloaded.err(),
            }))
            .into_response(),
        )
    }
    .await
    .unwrap_or_else(|r| r);
    counted(&hub, Route::ROLLBACK, response)
}

/// `POST /api/v1/registry/events`: the registry's notifications.
async fn registry_events(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> Response {
    let response = (|| {
        hub.settings
            .tokens
            .check(&headers, Access::Events)
            .map_err(denied)?;
        let events = crate::events::relevant(&body).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("not a registry notification envelope: {e}"),
            )
        })?;
        for e in &events {
            tracing::info!(action = %e.action, repository = %e.repository, digest = %e.digest, "registry event");
        }
        if !events.is_empty() {
            hub.wake();
        }
        Ok::<_, Response>(axum::Json(serde_json::json!({ "relevant": events.len() })).into_response())
    })()
    .unwrap_or_else(|r| r);
    counted(&hub, Route::EVENTS, response)
}

/// `GET /metrics`
async fn metrics(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    let response = match hub.settings.tokens.check(&headers, Access::Read) {
        Err(d) => denied(d),
        Ok(()) => {
            let text = hub
                .metrics
                .render(labforge_builder::state::unix_ms_now(), hub.status().ready);
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
        }
    };
    counted(&hub, Route::METRICS, response)
}

/// `GET /healthz`: the process answers.
async fn healthz(State(hub): State<Arc<Hub>>) -> Response {
    counted(
        &hub,
        Route::HEALTHZ,
        ([(header::CONTENT_TYPE, TEXT)], "ok\n").into_response(),
    )
}

/// `GET /readyz`: a snapshot is served and the last load succeeded.
async fn readyz(State(hub): State<Arc<Hub>>) -> Response {
    let status = hub.status();
    let snapshot = hub.snapshot();
    let ready = status.ready && snapshot.is_some();
    let body = serde_json::json!({
        "ready": ready,
        "reason": status.reason,
        "generation": snapshot.as_ref().map(|s| s.generation),
        "images": snapshot.as_ref().map(|s| s.catalog.images.len()),
        "snapshot_age_seconds": snapshot.as_ref().map(|s| {
            (labforge_builder::state::unix_ms_now() - s.loaded_at_ms).max(0) as f64 / 1000.0
        }),
        "missing": status.missing,
        "registry_errors": status.registry_errors,
        // The cluster sync does not decide readiness: profiles are served
        // whether or not the cluster is up to date.
        "kubernetes": hub.syncer().map(|s| s.status()),
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    counted(
        &hub,
        Route::READYZ,
        (code, axum::Json(body)).into_response(),
    )
}

fn html(status: StatusCode, page: Result<String, crate::web::WebError>) -> Response {
    match page {
        Ok(text) => (status, [(header::CONTENT_TYPE, HTML)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page did not render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, TEXT)],
                "internal error: the page did not render\n",
            )
                .into_response()
        }
    }
}

fn page_unavailable(hub: &Hub) -> Response {
    let reason = hub
        .status()
        .reason
        .unwrap_or_else(|| "the first load has not finished".into());
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        hub.web.error(
            503,
            &format!("The catalog is not loaded yet: {reason}"),
            &hub.settings.site,
        ),
    )
}

/// `GET /?q=&gpu=&cuda=&framework=&course=`
async fn index_page(State(hub): State<Arc<Hub>>, RawQuery(query): RawQuery) -> Response {
    let response = match hub.snapshot() {
        None => page_unavailable(&hub),
        Some(snapshot) => {
            let mut filters = crate::web::Filters::default();
            for (key, value) in query_pairs(query.as_deref()) {
                let slot = match key.as_str() {
                    "q" => &mut filters.q,
                    "gpu" => &mut filters.gpu,
                    "cuda" => &mut filters.cuda,
                    "framework" => &mut filters.framework,
                    "course" => &mut filters.course,
                    _ => continue,
                };
                *slot = Some(value);
            }
            html(
                StatusCode::OK,
                hub.web
                    .index(&snapshot.catalog, &filters, &hub.settings.site),
            )
        }
    };
    counted(&hub, Route::INDEX, response)
}

/// `GET /images/{name}`
async fn image_page(State(hub): State<Arc<Hub>>, Path(name): Path<String>) -> Response {
    let response = match hub.snapshot() {
        None => page_unavailable(&hub),
        Some(snapshot) => match snapshot.image(&name) {
            Some((doc, _)) => html(StatusCode::OK, hub.web.image(doc, &hub.settings.site)),
            None => {
                let message = match snapshot.catalog.unavailable.iter().find(|u| u.name == name) {
                    Some(u) => format!("{name} is not available: {}", u.reason),
                    None => format!("There is no environment called {name:?}."),
                };
                html(
                    StatusCode::NOT_FOUND,
                    hub.web.error(404, &message, &hub.settings.site),
                )
            }
        },
    };
    counted(&hub, Route::IMAGE_PAGE, response)
}

/// `GET /static/style.css`
async fn style(State(hub): State<Arc<Hub>>) -> Response {
    let response = (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        crate::web::STYLE_CSS,
    )
        .into_response();
    counted(&hub, Route::STYLE, response)
}

async fn not_found(State(hub): State<Arc<Hub>>) -> Response {
    counted(
        &hub,
        Route::OTHER,
        error(
            StatusCode::NOT_FOUND,
            "no such endpoint; the API is under /api/v1/",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_decode_and_repeat() {
        assert_eq!(
            query_pairs(Some(
                "user=al%20ice&group=course-ml&group=a+b&format=yaml&x"
            )),
            [
                ("user".to_string(), "al ice".to_string()),
                ("group".to_string(), "course-ml".to_string()),
                ("group".to_string(), "a b".to_string()),
                ("format".to_string(), "yaml".to_string()),
                ("x".to_string(), String::new()),
            ]
        );
        assert_eq!(
            query_pairs(Some("q=%zz%")),
            [("q".to_string(), "%zz%".to_string())]
        );
        assert_eq!(
            query_pairs(Some("q=%C3%BC")),
            [("q".to_string(), "ü".to_string())]
        );
        assert!(query_pairs(None).is_empty());
    }
}
