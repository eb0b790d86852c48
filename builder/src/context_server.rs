//! Serves rendered build contexts (tarballs) to build pods over plain
//! HTTP/1.1: the `kubernetes` build backend offers a tarball with
//! [`ContextServer::offer`] and puts the ticket's URL and token into the build
//! Job; the pod fetches `GET /contexts/<id>` with `Authorization: Bearer
//! <token>` once.
//!
//! Each ticket works exactly once: it is taken out of the table before the
//! body is sent, so a second request with the same token, even while the
//! first is still streaming, gets `410 Gone`, as does one after the ticket
//! expired. A wrong or missing token gets `401`, an unknown id `404`,
//! anything but `GET` `405`, and a request head over 8 KiB `431`. Tokens
//! are kept only as their SHA-256 and compared in constant time; ids and
//! tokens are 32 bytes from the operating system's random source
//! (`/dev/urandom`), in hex. Expired tickets are purged on every request.
//! Each request is logged (`tracing`) with its id and outcome, never the
//! token.
//!
//! What it must not do: serve anything but the offered files (a path is
//! never taken from a request), keep a token in the clear, or read a whole
//! tarball into memory (files are streamed). It does not build, create
//! tarballs or delete them; the caller owns the files and removes them
//! after the build. Plain HTTP is enough inside the cluster network because
//! the token is single-use and short-lived; TLS, where wanted, belongs to a
//! proxy or a service mesh in front.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;

/// The path prefix of context URLs.
pub const PATH_PREFIX: &str = "/contexts/";

/// The operating system's random source.
const RANDOM_SOURCE: &str = "/dev/urandom";

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write of the body may stall before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long used and expired ids are remembered (answered with `410`
/// rather than `404`).
const GONE_KEEP: Duration = Duration::from_secs(24 * 3600);

/// How long, and how many bytes, the rest of a refused request is read and
/// discarded before the socket is closed (so that the client reads the
/// answer instead of a connection reset).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
const DRAIN_MAX: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(
        "cannot serve build contexts on {addr}: {source} (is another labforge running? set the context server's listen address to a free port)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read random bytes from {path}: {source}")]
    Random {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot offer the build context {path}: {source}")]
    Tarball {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot offer the build context {path}: it is not a regular file")]
    NotAFile { path: PathBuf },
}

/// A bearer token: shown only through [`ContextToken::expose_secret`];
/// `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct ContextToken(String);

impl ContextToken {
    /// The token itself, for the build Job's environment.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ContextToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One offered tarball: where, with which token, until when.
#[derive(Debug, Clone)]
pub struct Ticket {
    /// `<public_url>/contexts/<id>`.
    pub url: String,
    pub token: ContextToken,
    /// Unix seconds after which the ticket no longer works.
    pub expires_at: i64,
}

/// The running server. It stops accepting connections on
/// [`ContextServer::shutdown`] or when dropped; transfers already under
/// way finish.
pub struct ContextServer {
    local_addr: SocketAddr,
    public_url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    tickets: Mutex<Tickets>,
    random: Mutex<std::fs::File>,
}

#[derive(Default)]
struct Tickets {
    open: HashMap<String, Open>,
    /// Ids used or expired, and since when.
    gone: HashMap<String, (Gone, Instant)>,
}

struct Open {
    token_sha256: [u8; 32],
    path: PathBuf,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    Used,
    Expired,
}

impl ContextServer {
    /// Listen on `listen` (port 0: any free one). `public_url` is how build
    /// pods reach this server (e.g. `http://labforge-hub:7520`); ticket URLs
    /// are `<public_url>/contexts/<id>`.
    pub async fn bind(
        listen: SocketAddr,
        public_url: String,
    ) -> Result<ContextServer, ContextError> {
        let random = std::fs::File::open(RANDOM_SOURCE).map_err(|source| ContextError::Random {
            path: RANDOM_SOURCE.into(),
            source,
        })?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ContextError::Bind {
                addr: listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| ContextError::Bind {
            addr: listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            tickets: Mutex::new(Tickets::default()),
            random: Mutex::new(random),
        });
        let public_url = public_url.trim_end_matches('/').to_string();
        tracing::info!(context.listen = %local_addr, context.public_url = %public_url, "serving build contexts");
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(ContextServer {
            local_addr,
            public_url,
            shared,
            task,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL given to [`ContextServer::bind`], without a trailing `/`.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Offer `tarball` for one download within `ttl`. The file must exist
    /// until it is fetched or the ticket expires; it is opened only then.
    pub fn offer(&self, tarball: PathBuf, ttl: Duration) -> Result<Ticket, ContextError> {
        let meta = std::fs::metadata(&tarball).map_err(|source| ContextError::Tarball {
            path: tarball.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(ContextError::NotAFile { path: tarball });
        }
        let mut bytes = [0u8; 64];
        lock(&self.shared.random)
            .read_exact(&mut bytes)
            .map_err(|source| ContextError::Random {
                path: RANDOM_SOURCE.into(),
                source,
            })?;
        let (id, token) = bytes.split_at(32);
        let id = hex(id);
        let token = hex(token);
        let deadline = Instant::now() + ttl;
        let expires_at = unix_seconds_after(ttl);
        lock(&self.shared.tickets).open.insert(
            id.clone(),
            Open {
                token_sha256: Sha256::digest(token.as_bytes()).into(),
                path: tarball,
                deadline,
            },
        );
        tracing::debug!(context.id = %id, context.expires_at = expires_at, "build context offered");
        Ok(Ticket {
            url: format!("{}{PATH_PREFIX}{id}", self.public_url),
            token: ContextToken(token),
            expires_at,
        })
    }

    /// Stop accepting connections; transfers under way finish.
    pub fn shutdown(self) {
        self.task.abort();
        tracing::info!(context.listen = %self.local_addr, "build context server stopped");
    }
}

impl Drop for ContextServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Lock, also after a panic elsewhere (the tables stay consistent: every
/// change is a single insert or remove).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Unix seconds at now + `ttl`, rounded up.
fn unix_seconds_after(ttl: Duration) -> i64 {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(ttl);
    let secs = at.as_secs() + u64::from(at.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Equal without an early exit (over two SHA-256 digests, so neither the
/// token's content nor its length shows in the time taken).
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // E.g. out of file descriptors: back off, never spin.
                tracing::warn!(error = %e, "build context server: accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        tokio::spawn(serve(Arc::clone(&shared), socket, peer));
    }
}

/// What to do with one request.
#[derive(Debug)]
enum Decision {
    Send(PathBuf),
    Refuse(Status),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    BadRequest,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    Gone,
    HeadTooLarge,
    Internal,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::BadRequest => "400 Bad Request",
            Status::Unauthorized => "401 Unauthorized",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::Gone => "410 Gone",
            Status::HeadTooLarge => "431 Request Header Fields Too Large",
            Status::Internal => "500 Internal Server Error",
        }
    }

    fn code(self) -> u16 {
        match self {
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::Gone => 410,
            Status::HeadTooLarge => 431,
            Status::Internal => 500,
        }
    }

    /// For the log and the body.
    fn outcome(self) -> &'static str {
        match self {
            Status::BadRequest => "malformed request",
            Status::Unauthorized => "missing or wrong token",
            Status::NotFound => "unknown context",
            Status::MethodNotAllowed => "method not allowed",
            Status::Gone => "already used or expired",
            Status::HeadTooLarge => "request head too large",
            Status::Internal => "cannot read the context",
        }
    }
}

/// Why the request head could not be read.
enum HeadError {
    TooLarge,
    /// Closed, timed out or failed before the head ended.
    Incomplete,
}

/// Read up to the blank line that ends the request head.
async fn read_head(socket: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut head: Vec<u8> = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let read = async {
        loop {
            if let Some(end) = head_end(&head) {
                if end > MAX_HEAD {
                    return Err(HeadError::TooLarge);
                }
                head.truncate(end);
                return Ok(());
            }
            if head.len() > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return Err(HeadError::Incomplete),
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    match tokio::time::timeout(HEAD_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(head),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HeadError::Incomplete),
    }
}

/// The length of the head including its final blank line, if complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A parsed request head: method, path (without the query) and the bearer
/// token, if any.
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    bearer: Option<&'a str>,
}

fn parse(head: &str) -> Option<Request<'_>> {
    let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
    let mut first = lines.next()?.split(' ');
    let method = first.next().filter(|m| !m.is_empty())?;
    let target = first.next()?;
    let version = first.next()?;
    if first.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    let mut bearer = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("authorization") && bearer.is_none() {
            let value = value.trim();
            if let Some((scheme, token)) = value.split_once(' ')
                && scheme.eq_ignore_ascii_case("bearer")
            {
                bearer = Some(token.trim());
            } else {
                // Another scheme: present but not a bearer token.
                bearer = Some("");
            }
        }
    }
    Some(Request {
        method,
        path,
        bearer,
    })
}

/// The id in a context path, if the path is one.
fn context_id(path: &str) -> Option<&str> {
    let id = path.strip_prefix(PATH_PREFIX)?;
    (id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(id)
}

impl Shared {
    /// Decide one request, taking the ticket out on success.
    fn decide(&self, req: &Request<'_>, now: Instant) -> Decision {
        let mut t = lock(&self.tickets);
        let expired: Vec<String> = t
            .open
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            t.open.remove(&id);
            t.gone.insert(id, (Gone::Expired, now));
        }
        t.gone
            .retain(|_, (_, since)| now.saturating_duration_since(*since) < GONE_KEEP);

        if req.method != "GET" {
            return Decision::Refuse(Status::MethodNotAllowed);
        }
        let Some(id) = context_id(req.path) else {
            return Decision::Refuse(Status::NotFound);
        };
        if t.gone.contains_key(id) {
            return Decision::Refuse(Status::Gone);
        }
        let Some(open) = t.open.get(id) else {
            return Decision::Refuse(Status::NotFound);
        };
        let offered: [u8; 32] = Sha256::digest(req.bearer.unwrap_or_default().as_bytes()).into();
        // Compared even without a token, so that the time says nothing.
        let matches = same(&open.token_sha256, &offered);
        if req.bearer.is_none_or(str::is_empty) || !matches {
            return Decision::Refuse(Status::Unauthorized);
        }
        match t.open.remove(id) {
            Some(open) => {
                t.gone.insert(id.to_string(), (Gone::Used, now));
                Decision::Send(open.path)
            }
            None => Decision::Refuse(Status::NotFound),
        }
    }
}

/// Answer one connection (one request; `Connection: close`).
async fn serve(shared: Arc<Shared>, mut socket: TcpStream, peer: SocketAddr) {
    let head = match read_head(&mut socket).await {
        Ok(head) => head,
        Err(HeadError::TooLarge) => {
            log(
                peer,
                None,
                Status::HeadTooLarge.code(),
                Status::HeadTooLarge.outcome(),
            );
            refuse(&mut socket, Status::HeadTooLarge).await;
            return;
        }
        Err(HeadError::Incomplete) => {
            tracing::debug!(peer = %peer, "build context request: no complete request head");
            return;
        }
    };
    let text = String::from_utf8_lossy(&head);
    let Some(req) = parse(&text) else {
        log(
            peer,
            None,
            Status::BadRequest.code(),
            Status::BadRequest.outcome(),
        );
        refuse(&mut socket, Status::BadRequest).await;
        return;
    };
    let id = context_id(req.path).map(str::to_string);
    let path = match shared.decide(&req, Instant::now()) {
        Decision::Refuse(status) => {
            log(peer, id.as_deref(), status.code(), status.outcome());
            refuse(&mut socket, status).await;
            return;
        }
        Decision::Send(path) => path,
    };
    match send(&mut socket, &path).await {
        Ok(bytes) => {
            tracing::info!(
                peer = %peer,
                context.id = id.as_deref().unwrap_or("-"),
                status = 200,
                bytes,
                outcome = "served",
                "build context request"
            );
        }
        Err(SendError::Open(e)) => {
            tracing::error!(
                peer = %peer,
                context.id = id.as_deref().unwrap_or("-"),
                status = 500,
                path = %path.display(),
                error = %e,
                outcome = Status::Internal.outcome(),
                "build context request"
            );
            refuse(&mut socket, Status::Internal).await;
        }
        Err(SendError::Transfer { sent, error }) => {
            tracing::warn!(
                peer = %peer,
                context.id = id.as_deref().unwrap_or("-"),
                status = 200,
                bytes = sent,
                error = %error,
                outcome = "transfer broken off",
                "build context request"
            );
        }
    }
}

fn log(peer: SocketAddr, id: Option<&str>, status: u16, outcome: &str) {
    tracing::info!(
        peer = %peer,
        context.id = id.unwrap_or("-"),
        status,
        outcome,
        "build context request"
    );
}

/// Answer with an error status, then read and drop what the client still
/// sends (bounded), so that closing does not reset the connection before
/// the client has read the answer.
async fn refuse(socket: &mut TcpStream, status: Status) {
    let body = format!("{}\n", status.outcome());
    let mut head = format!(
        "HTTP/1.1 {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        status.line(),
        body.len()
    );
    match status {
        Status::MethodNotAllowed => head.push_str("Allow: GET\r\n"),
        Status::Unauthorized => head.push_str("WWW-Authenticate: Bearer\r\n"),
        _ => {}
    }
    head.push_str("\r\n");
    head.push_str(&body);
    let write = async {
        socket.write_all(head.as_bytes()).await?;
        socket.shutdown().await
    };
    if tokio::time::timeout(WRITE_TIMEOUT, write).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain(socket)).await;
}

async fn drain(socket: &mut TcpStream) {
    let _ = tokio::io::copy(&mut socket.take(DRAIN_MAX), &mut tokio::io::sink()).await;
}

enum SendError {
    Open(std::io::Error),
    Transfer { sent: u64, error: std::io::Error },
}

/// Stream the file with a `200`; returns the bytes of the body sent.
async fn send(socket: &mut TcpStream, path: &Path) -> Result<u64, SendError> {
    let mut file = tokio::fs::File::open(path).await.map_err(SendError::Open)?;
    let len = file.metadata().await.map_err(SendError::Open)?.len();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nContent-Length: {len}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    );
    let transfer = |sent, error| SendError::Transfer { sent, error };
    write_timed(socket, head.as_bytes())
        .await
        .map_err(|e| transfer(0, e))?;
    let sent = copy_timed(&mut file, socket, len)
        .await
        .map_err(|(sent, e)| transfer(sent, e))?;
    let _ = socket.shutdown().await;
    Ok(sent)
}

async fn write_timed(socket: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, socket.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client stopped reading",
        )),
    }
}

/// Copy exactly `len` bytes (the announced `Content-Length`): a file that
/// changed size meanwhile is an error, not a silently different body.
async fn copy_timed<R: AsyncRead + Unpin>(
    file: &mut R,
    socket: &mut TcpStream,
    len: u64,
) -> Result<u64, (u64, std::io::Error)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent: u64 = 0;
    while sent < len {
        let want = usize::try_from(len - sent).map_or(buf.len(), |left| left.min(buf.len()));
        let n = file.read(&mut buf[..want]).await.map_err(|e| (sent, e))?;
        if n == 0 {
            return Err((
                sent,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file became shorter while it was sent",
                ),
            ));
        }
        write_timed(socket, &buf[..n])
            .await
            .map_err(|e| (sent, e))?;
        sent += n as u64;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Method, path and bearer token of a request head.
    type Head<'a> = (&'a str, &'a str, Option<&'a str>);

    #[test]
    fn request_heads() {
        let t = "a".repeat(64);
        let id = "0".repeat(64);
        let cases: &[(&str, Option<Head<'_>>)] = &[
            (
                "GET /contexts/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer abc\r\n",
                Some(("GET", "/contexts/x", Some("abc"))),
            ),
            (
                "GET /x?y=1 HTTP/1.0\r\nauthorization:   bearer   abc  \r\n",
                Some(("GET", "/x", Some("abc"))),
            ),
            (
                "GET /x HTTP/1.1\r\nAuthorization: Basic Zm9vOmJhcg==\r\n",
                Some(("GET", "/x", Some(""))),
            ),
            ("POST /x HTTP/1.1\r\n", Some(("POST", "/x", None))),
            ("GET /x\r\n", None),
            ("GET /x HTTP/1.1 extra\r\n", None),
            ("GET /x SPDY/3\r\n", None),
            ("", None),
        ];
        for (head, want) in cases {
            let got = parse(head).map(|r| (r.method, r.path, r.bearer));
            assert_eq!(got, *want, "{head:?}");
        }
        assert_eq!(context_id(&format!("/contexts/{id}")), Some(id.as_str()));
        for bad in [
            format!("/contexts/{}", &id[1..]),
            format!("/contexts/{id}/x"),
            format!("/contexts/{}", id.to_uppercase().replace('0', "A")),
            format!("/context/{id}"),
            "/contexts/../etc/passwd".to_string(),
        ] {
            assert_eq!(context_id(&bad), None, "{bad}");
        }
        assert!(same(&[7; 32], &[7; 32]));
        let mut other = [7; 32];
        other[31] = 8;
        assert!(!same(&[7; 32], &other));
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nbody"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(format!("{:?}", ContextToken(t)), "***");
    }
}
