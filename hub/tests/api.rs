//! The router without a socket (`oneshot`): tokens, limits, bad input,
//! readiness before and after loads, and a registry that cannot be reached.
//! The state store is a real SQLite file; where a published row is needed,
//! it points at a registry on a closed port, so its digest is unconfirmed. (The path
//! through a real registry and a real build is in the root's tests/hub.rs.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use labforge_builder::Layout;
use labforge_builder::registry::RegistryOptions;
use labforge_builder::state::{ScanRecord, StateStore};
use labforge_hub::auth::{Secret, Tokens};
use labforge_hub::load::Loader;
use labforge_hub::{Hub, Settings, app};
use tower::ServiceExt;

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/projects/hub")
}

/// A hub over the sample catalog and a fresh state store; with
/// `unreachable`, root has a published digest in a registry nobody listens on.
async fn hub(catalog: PathBuf, tokens: Tokens, unreachable: bool) -> (Arc<Hub>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::open_dir(dir.path()).await.expect("state");
    if unreachable {
        record_unreachable(&store).await;
    }
    let loader = Loader::new(
        Layout {
            catalog,
            dockerfiles: sample().join("dockerfiles"),
        },
        store,
        RegistryOptions {
            timeout: Some(Duration::from_secs(2)),
            ..RegistryOptions::default()
        },
        labforge_hub::snapshot::Options::default(),
        Duration::from_secs(300),
    );
    let settings = Settings {
        refresh: Duration::from_secs(3600),
        registry_check: Duration::from_secs(300),
        tokens,
        site: labforge_hub::web::Site {
            title: "Test".into(),
            source: None,
        },
    };
    (Arc::new(Hub::new(loader, settings).expect("hub")), dir)
}

async fn record_unreachable(store: &StateStore) {
    store
        .record_scan(&ScanRecord {
            image: "root".into(),
            repository: "127.0.0.1:1/labforge/root".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            hash: "b".repeat(64),
            verdict: "pass".into(),
            published: true,
            summary: serde_json::json!({}),
            report: "{}".into(),
            sbom: "{}".into(),
            created_at: 1_764_000_000_000,
        })
        .await
        .expect("record");
}

async fn call(
    hub: &Arc<Hub>,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let response = app(Arc::clone(hub))
        .oneshot(request.body(Body::from(body)).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, headers, bytes)
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("JSON")
}

#[tokio::test]
async fn before_the_first_load_everything_says_not_ready() {
    let (hub, _dir) = hub(sample().join("catalog"), Tokens::default(), false).await;
    let (status, _, body) = call(&hub, "GET", "/readyz", None, vec![]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&body)["ready"], false);
    let (status, _, body) = call(&hub, "GET", "/api/v1/profiles", None, vec![]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        json(&body)["error"]
            .as_str()
            .is_some_and(|e| e.contains("no catalog is loaded yet"))
    );
    let (status, _, body) = call(&hub, "GET", "/", None, vec![]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("not loaded yet"));
    let (status, _, _) = call(&hub, "GET", "/healthz", None, vec![]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn an_unreachable_registry_is_not_taken_for_deleted_digests() {
    let (hub, _dir) = hub(sample().join("catalog"), Tokens::default(), true).await;
    // The published digest was never confirmed and the registry does not
    // answer: the load fails (nothing is served as if it were deleted).
    let error = hub.reload(true).await.expect_err("the registry is down");
    assert!(error.contains("registry did not answer"), "{error}");
    assert!(
        error.contains("127.0.0.1:1/labforge/root@sha256:"),
        "{error}"
    );
    let (status, _, body) = call(&hub, "GET", "/readyz", None, vec![]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        json(&body)["reason"]
            .as_str()
            .is_some_and(|r| r.contains("is it running?"))
    );
    let (status, _, _) = call(&hub, "GET", "/api/v1/profiles", None, vec![]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn images_with_nothing_published_are_listed_as_unavailable() {
    let (hub, _dir) = hub(sample().join("catalog"), Tokens::default(), false).await;
    hub.reload(true).await.expect("loads");
    let (status, _, body) = call(&hub, "GET", "/api/v1/profiles", None, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body), serde_json::json!([]));
    let (_, _, body) = call(&hub, "GET", "/api/v1/catalog", None, vec![]).await;
    let catalog = json(&body);
    let unavailable = catalog["unavailable"].as_array().expect("a list");
    assert_eq!(unavailable.len(), 4);
    assert!(unavailable.iter().all(|u| {
        u["reason"]
            .as_str()
            .is_some_and(|r| r.contains("nothing published yet"))
    }));
    let (status, _, body) = call(&hub, "GET", "/images/root", None, vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("nothing published yet"));
    let (status, _, body) = call(&hub, "GET", "/api/v1/images/root", None, vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        json(&body)["error"]
            .as_str()
            .is_some_and(|e| e.contains("not available"))
    );
}

#[tokio::test]
async fn a_catalog_that_does_not_load_is_not_ready_with_the_reason() {
    let empty = tempfile::tempdir().expect("tempdir");
    let (hub, _dir) = hub(empty.path().to_path_buf(), Tokens::default(), false).await;
    let error = hub.reload(true).await.expect_err("no catalog.yaml");
    assert!(error.contains("catalog.yaml"), "{error}");
    let (status, _, body) = call(&hub, "GET", "/readyz", None, vec![]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        json(&body)["reason"]
            .as_str()
            .is_some_and(|r| r.contains("catalog.yaml"))
    );
    let (status, _, body) = call(&hub, "GET", "/metrics", None, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("labforge_hub_load_failures_total 1"),
        "{text}"
    );
    assert!(text.contains("labforge_hub_ready 0"), "{text}");
}

#[tokio::test]
async fn tokens_guard_reads_when_protected_and_admin_always() {
    let tokens = Tokens {
        admin: Secret::new("adm1n"),
        read: Secret::new("r3ad"),
        events: Secret::new("ev3nts"),
        protect_reads: true,
    };
    let (hub, _dir) = hub(sample().join("catalog"), tokens, false).await;
    hub.reload(true).await.expect("loads");
    for uri in ["/api/v1/profiles", "/api/v1/catalog", "/metrics"] {
        let (status, headers, _) = call(&hub, "GET", uri, None, vec![]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        let (status, _, _) = call(&hub, "GET", uri, Some("r3ad"), vec![]).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
    // Health stays open for the kubelet.
    let (status, _, _) = call(&hub, "GET", "/healthz", None, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&hub, "POST", "/api/v1/publish", Some("r3ad"), vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = call(&hub, "POST", "/api/v1/publish", Some("adm1n"), vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = call(
        &hub,
        "POST",
        "/api/v1/images/root/rollback",
        Some("adm1n"),
        b"{\"too\": 1}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("unknown field"));
    let (status, _, body) = call(
        &hub,
        "POST",
        "/api/v1/images/nope/rollback",
        Some("adm1n"),
        vec![],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, _) = call(
        &hub,
        "POST",
        "/api/v1/registry/events",
        Some("ev3nts"),
        br#"{"events":[]}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(
        &hub,
        "POST",
        "/api/v1/registry/events",
        Some("r3ad"),
        br#"{"events":[]}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Bodies over 1 MiB are refused before they are read whole.
    let (status, _, _) = call(
        &hub,
        "POST",
        "/api/v1/registry/events",
        Some("ev3nts"),
        vec![b' '; 2 * 1024 * 1024],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn admin_endpoints_are_off_without_an_admin_token() {
    let (hub, _dir) = hub(sample().join("catalog"), Tokens::default(), false).await;
    hub.reload(true).await.expect("loads");
    let (status, _, body) = call(&hub, "POST", "/api/v1/publish", Some("x"), vec![]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body).contains("LABFORGE_HUB_ADMIN_TOKEN"));
    let (status, _, body) = call(&hub, "GET", "/no/such/thing", None, vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(json(&body)["error"].is_string());
}
