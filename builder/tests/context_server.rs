//! The build context server over real TCP: each ticket works once, expires,
//! needs its own token, and the body is the offered file byte for byte.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use labforge_builder::context_server::{ContextServer, MAX_HEAD, Ticket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PUBLIC: &str = "http://labforge-hub.labforge.svc:7520";
const HOUR: Duration = Duration::from_secs(3600);

async fn server() -> ContextServer {
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("address");
    ContextServer::bind(listen, format!("{PUBLIC}/"))
        .await
        .expect("binds")
}

/// The ticket's URL on the test server (its public URL is a cluster name).
fn local_url(server: &ContextServer, ticket: &Ticket) -> String {
    let path = ticket
        .url
        .strip_prefix(PUBLIC)
        .expect("the ticket URL starts with the public URL");
    format!("http://{}{path}", server.local_addr())
}

/// A file of `len` bytes that are not all the same.
fn tarball(dir: &tempfile::TempDir, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = dir.path().join(name);
    std::fs::write(&path, &bytes).expect("write the tarball");
    (path, bytes)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = client().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request")
}

#[tokio::test]
async fn a_ticket_works_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, bytes) = tarball(&dir, "ctx.tar", 4096);
    let server = server().await;
    let ticket = server.offer(path, HOUR).expect("offer");
    assert!(
        ticket.url.starts_with(&format!("{PUBLIC}/contexts/")),
        "{}",
        ticket.url
    );
    let id = ticket.url.rsplit('/').next().expect("id");
    assert_eq!(id.len(), 64);
    assert_eq!(ticket.token.expose_secret().len(), 64);
    assert_ne!(id, ticket.token.expose_secret());
    let url = local_url(&server, &ticket);
    let token = ticket.token.expose_secret();

    let first = get(&url, Some(token)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        first
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some("4096")
    );
    assert_eq!(
        first.bytes().await.expect("body").as_ref(),
        bytes.as_slice()
    );

    for _ in 0..2 {
        let again = get(&url, Some(token)).await;
        assert_eq!(again.status(), 410);
    }
    // Used is gone for anyone, whatever they send.
    assert_eq!(get(&url, None).await.status(), 410);
    server.shutdown();
}

#[tokio::test]
async fn an_expired_ticket_is_gone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, _) = tarball(&dir, "ctx.tar", 100);
    let server = server().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let ticket = server.offer(path, Duration::from_secs(1)).expect("offer");
    assert!(
        (before + 1..=before + 2).contains(&ticket.expires_at),
        "expires_at {} for a 1 s ticket offered at {before}",
        ticket.expires_at
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let resp = get(
        &local_url(&server, &ticket),
        Some(ticket.token.expose_secret()),
    )
    .await;
    assert_eq!(resp.status(), 410);
}

#[tokio::test]
async fn wrong_or_missing_tokens_are_refused_and_do_not_use_the_ticket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, bytes) = tarball(&dir, "ctx.tar", 1000);
    let server = server().await;
    let ticket = server.offer(path, HOUR).expect("offer");
    let url = local_url(&server, &ticket);
    let token = ticket.token.expose_secret();

    let wrong = get(&url, Some(&"0".repeat(64))).await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_eq!(get(&url, Some(&token[..63])).await.status(), 401);
    assert_eq!(get(&url, Some(&format!("{token}0"))).await.status(), 401);
    assert_eq!(get(&url, Some(&token.to_uppercase())).await.status(), 401);
    assert_eq!(get(&url, None).await.status(), 401);
    let basic = client()
        .get(&url)
        .header("authorization", format!("Basic {token}"))
        .send()
        .await
        .expect("request");
    assert_eq!(basic.status(), 401);
    let empty = client()
        .get(&url)
        .header("authorization", "Bearer ")
        .send()
        .await
        .expect("request");
    assert_eq!(empty.status(), 401);

    // Still good for the right token.
    let ok = get(&url, Some(token)).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.bytes().await.expect("body").as_ref(), bytes.as_slice());
}

#[tokio::test]
async fn unknown_ids_and_other_paths_are_not_found() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, _) = tarball(&dir, "ctx.tar", 10);
    let server = server().await;
    let ticket = server.offer(path, HOUR).expect("offer");
    let token = ticket.token.expose_secret();
    let base = format!("http://{}", server.local_addr());
    for path in [
        format!("/contexts/{}", "ab".repeat(32)),
        "/contexts/".to_string(),
        "/".to_string(),
        format!("/contexts/{}", &ticket.url[ticket.url.len() - 63..]),
        "/contexts/../../etc/passwd".to_string(),
    ] {
        let resp = get(&format!("{base}{path}"), Some(token)).await;
        assert_eq!(resp.status(), 404, "{path}");
    }
    // The ticket was not touched.
    assert_eq!(
        get(&local_url(&server, &ticket), Some(token))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn only_get_is_allowed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, _) = tarball(&dir, "ctx.tar", 10);
    let server = server().await;
    let ticket = server.offer(path, HOUR).expect("offer");
    let url = local_url(&server, &ticket);
    let token = ticket.token.expose_secret();
    for method in ["POST", "PUT", "DELETE", "HEAD", "PATCH"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = client()
            .request(method.clone(), &url)
            .bearer_auth(token)
            .body(if method == "HEAD" { "" } else { "payload" })
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 405, "{method}");
        assert_eq!(
            resp.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some("GET"),
            "{method}"
        );
    }
    assert_eq!(get(&url, Some(token)).await.status(), 200);
}

#[tokio::test]
async fn a_huge_request_head_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, _) = tarball(&dir, "ctx.tar", 10);
    let server = server().await;
    let ticket = server.offer(path, HOUR).expect("offer");
    let url = local_url(&server, &ticket);
    let token = ticket.token.expose_secret();

    let header = client()
        .get(&url)
        .bearer_auth(token)
        .header("x-padding", "p".repeat(MAX_HEAD + 100))
        .send()
        .await
        .expect("request");
    assert_eq!(header.status(), 431);
    let many = (0..400).fold(client().get(&url).bearer_auth(token), |r, i| {
        r.header(format!("x-h{i}"), "0123456789012345678901234567890")
    });
    assert_eq!(many.send().await.expect("request").status(), 431);
    let line = get(&format!("{url}?{}", "q".repeat(MAX_HEAD)), Some(token)).await;
    assert_eq!(line.status(), 431);
    // Just under the limit is fine, and the ticket survived the refusals.
    let fits = client()
        .get(&url)
        .bearer_auth(token)
        .header("x-padding", "p".repeat(MAX_HEAD - 400))
        .send()
        .await
        .expect("request");
    assert_eq!(fits.status(), 200);
}

#[tokio::test]
async fn tickets_are_independent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path_a, bytes_a) = tarball(&dir, "a.tar", 3000);
    let (path_b, _) = tarball(&dir, "b.tar", 5000);
    let server = server().await;
    let a = server.offer(path_a.clone(), HOUR).expect("offer a");
    let b = server.offer(path_b, HOUR).expect("offer b");
    let c = server
        .offer(path_a, HOUR)
        .expect("offer the same file again");
    assert_ne!(a.url, b.url);
    assert_ne!(a.url, c.url);
    assert_ne!(a.token, b.token);
    assert_ne!(a.token, c.token);

    // One ticket's token does not open another.
    let url_b = local_url(&server, &b);
    assert_eq!(
        get(&url_b, Some(a.token.expose_secret())).await.status(),
        401
    );
    // Using a leaves b and c as they were.
    let got_a = get(&local_url(&server, &a), Some(a.token.expose_secret())).await;
    assert_eq!(got_a.status(), 200);
    assert_eq!(
        got_a.bytes().await.expect("body").as_ref(),
        bytes_a.as_slice()
    );
    let got_b = get(&url_b, Some(b.token.expose_secret())).await;
    assert_eq!(got_b.status(), 200);
    assert_eq!(got_b.bytes().await.expect("body").len(), 5000);
    let got_c = get(&local_url(&server, &c), Some(c.token.expose_secret())).await;
    assert_eq!(got_c.status(), 200);
    assert_eq!(
        got_c.bytes().await.expect("body").as_ref(),
        bytes_a.as_slice()
    );
}

#[tokio::test]
async fn the_body_is_the_file_byte_for_byte() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, bytes) = tarball(&dir, "big.tar", 5 * 1024 * 1024);
    let server = server().await;
    let ticket = server.offer(path, HOUR).expect("offer");
    let resp = get(
        &local_url(&server, &ticket),
        Some(ticket.token.expose_secret()),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-tar")
    );
    let body = resp.bytes().await.expect("body");
    assert_eq!(body.len(), bytes.len());
    assert!(
        body.as_ref() == bytes.as_slice(),
        "the body differs from the file"
    );
}

#[tokio::test]
async fn a_second_request_while_the_first_streams_is_gone() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Larger than what loopback socket buffers hold, so the first transfer
    // is still under way while the second request is answered.
    let (path, bytes) = tarball(&dir, "big.tar", 24 * 1024 * 1024);
    let server = server().await;
    let ticket = server.offer(path, HOUR).expect("offer");
    let token = ticket.token.expose_secret();
    let url = local_url(&server, &ticket);

    // The first request by hand: read the head and a little of the body.
    let mut first = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let path = url.splitn(4, '/').nth(3).expect("path");
    first
        .write_all(
            format!("GET /{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("send");
    let mut start = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < start.len() {
        let n = first.read(&mut start[got..]).await.expect("read");
        assert!(n > 0, "the first transfer ended early");
        got += n;
    }
    let text = String::from_utf8_lossy(&start);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{}", &text[..40]);

    let second = get(&url, Some(token)).await;
    assert_eq!(second.status(), 410);

    // The first still gets the whole file.
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).await.expect("read the rest");
    let mut all = start;
    all.extend_from_slice(&rest);
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head")
        + 4;
    assert_eq!(all.len() - split, bytes.len());
    assert!(all[split..] == bytes[..], "the body differs from the file");
}

#[tokio::test]
async fn offering_a_missing_file_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = server().await;
    let missing = dir.path().join("nope.tar");
    let err = server.offer(missing.clone(), HOUR).expect_err("missing");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    let err = server
        .offer(dir.path().to_path_buf(), HOUR)
        .expect_err("a directory");
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[tokio::test]
async fn a_busy_port_is_a_clear_error() {
    let first = server().await;
    let err = ContextServer::bind(first.local_addr(), PUBLIC.to_string())
        .await
        .err()
        .expect("the port is taken");
    assert!(
        err.to_string().contains(&first.local_addr().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn after_shutdown_nothing_is_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, _) = tarball(&dir, "ctx.tar", 10);
    let server = server().await;
    let addr = server.local_addr();
    let ticket = server.offer(path, HOUR).expect("offer");
    let url = local_url(&server, &ticket);
    server.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = client()
        .get(&url)
        .bearer_auth(ticket.token.expose_secret())
        .send()
        .await;
    assert!(refused.is_err(), "{addr} still answers: {refused:?}");
}

/// Collects every event's fields as text.
struct Capture(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = String::new();
        event.record(&mut Fields(&mut line));
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.push_str(&line);
        all.push('\n');
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// On one thread, so that the server's tasks log to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn requests_are_logged_with_the_id_and_never_the_token() {
    let logs = Arc::new(Mutex::new(String::new()));
    let _guard = tracing::subscriber::set_default(Capture(Arc::clone(&logs)));
    // Other tests of this binary run on other threads without a
    // subscriber: an event site they reached first may have its interest
    // cached as "never"; ask every site again, now that this one exists.
    tracing::callsite::rebuild_interest_cache();
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, _) = tarball(&dir, "ctx.tar", 10);
    let server = server().await;
    let ticket = server.offer(path, HOUR).expect("offer");
    let url = local_url(&server, &ticket);
    let token = ticket.token.expose_secret().to_string();
    assert_eq!(
        format!("{ticket:?}").matches(&token).count(),
        0,
        "{ticket:?}"
    );

    assert_eq!(get(&url, Some("wrong")).await.status(), 401);
    assert_eq!(get(&url, Some(&token)).await.status(), 200);
    assert_eq!(get(&url, Some(&token)).await.status(), 410);
    server.shutdown();

    let logs = logs.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let id = ticket.url.rsplit('/').next().expect("id");
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains(id)).collect();
    assert!(lines.iter().any(|l| l.contains("status=401")), "{logs}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("status=200") && l.contains("served")),
        "{logs}"
    );
    assert!(lines.iter().any(|l| l.contains("status=410")), "{logs}");
    assert!(!logs.contains(&token), "the token was logged:\n{logs}");
}
