//! The registry side of a push, over the OCI distribution API: blob `HEAD`,
//! cross-repository mount, upload session (`POST`) and one streaming `PUT`
//! of a spooled blob with its `Content-Length`, manifest `PUT` per tag, and
//! the retries around them.
//!
//! Requests go through [`RegistryClient::send_for_push`], so the login is
//! oci-client's and the `Authorization` header is the one cached per
//! repository. The uploads themselves are plain reqwest: oci-client's
//! `push_blob` takes the blob as bytes in memory, and its streaming variants
//! cannot start a fresh upload session and send the file again after a lost
//! connection, which is what a retry needs here.
//!
//! Retries (with backoff, `Retry-After` honoured, a fresh upload session
//! each time): 429, 5xx, lost connections and timeouts, and a `PUT` whose
//! upload session the registry no longer knows (404). Never retried: 401
//! (after the one re-login `send_for_push` does), 403, 400 (`DIGEST_INVALID`,
//! `MANIFEST_INVALID`, …) and a manifest digest that differs from the one
//! computed here. This module reads spool files; it writes nothing.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use sha2::Digest as _;

use super::{PushError, PushEvent, PushOptions};
use crate::registry::{ImageRef, RegistryClient, RegistryError};

/// The OCI image manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker's image manifest (schema 2), which `docker push` and BuildKit
/// without `oci-mediatypes` write.
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// An upload may take this long plus one second per MiB before it is called hung.
const UPLOAD_BASE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often upload progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Why one attempt failed, and whether another may succeed.
#[derive(Debug)]
pub struct Failure {
    pub error: PushError,
    pub retry: bool,
    pub retry_after: Option<Duration>,
}

impl Failure {
    fn fatal(error: PushError) -> Failure {
        Failure {
            error,
            retry: false,
            retry_after: None,
        }
    }
}

/// Where blob bytes come from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    File(&'a Path),
    Memory(&'a Bytes),
}

/// One target repository, and everything needed to push to it.
pub struct Remote<'a> {
    pub client: &'a RegistryClient,
    /// The registry and repository (the reference is not used).
    pub image: ImageRef,
    pub options: &'a PushOptions,
    pub progress: &'a (dyn Fn(PushEvent) + Send + Sync),
    /// `scheme://host/v2/<repository>`
    base: String,
    origin: String,
}

impl<'a> Remote<'a> {
    pub fn new(
        client: &'a RegistryClient,
        image: ImageRef,
        options: &'a PushOptions,
        progress: &'a (dyn Fn(PushEvent) + Send + Sync),
    ) -> Remote<'a> {
        let origin = format!(
            "{}://{}",
            client.scheme_for(&image.registry),
            image.registry
        );
        let base = format!("{origin}/v2/{}", image.repository);
        Remote {
            client,
            image,
            options,
            progress,
            base,
            origin,
        }
    }

    /// This repository as `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.image.registry, self.image.repository)
    }

    /// Run `attempt` until it succeeds, fails for good, or the retries are spent.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, PushError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut n: u32 = 0;
        loop {
            n += 1;
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(f) if f.retry && n <= self.options.retries => {
                    let delay = backoff(self.options.retry_delay, n, f.retry_after);
                    tracing::info!(what, attempt = n, error = %f.error, delay_ms = delay.as_millis() as u64, "retrying");
                    (self.progress)(PushEvent::Retry {
                        what: what.to_string(),
                        attempt: n,
                        error: f.error.to_string(),
                    });
                    tokio::time::sleep(delay).await;
                }
                Err(f) if f.retry => {
                    return Err(PushError::GaveUp {
                        what: what.to_string(),
                        registry: self.image.registry.clone(),
                        attempts: n,
                        last: Box::new(f.error),
                    });
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    async fn send(
        &self,
        make: &(dyn Fn(Option<&str>) -> reqwest::RequestBuilder + Send + Sync),
    ) -> Result<reqwest::Response, Failure> {
        self.client
            .send_for_push(&self.image, make)
            .await
            .map_err(|e| self.registry_failure(e))
    }

    fn registry_failure(&self, e: RegistryError) -> Failure {
        match e {
            RegistryError::Unreachable { url, message } => Failure {
                error: PushError::Unreachable { url, message },
                retry: true,
                retry_after: None,
            },
            RegistryError::Status { url, status } => {
                self.status_failure(url, status, None, String::new())
            }
            other => Failure::fatal(PushError::Registry(other)),
        }
    }

    /// A failure for an unexpected answer.
    fn status_failure(
        &self,
        url: String,
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    ) -> Failure {
        let registry = self.image.registry.clone();
        match status {
            401 | 403 => Failure::fatal(PushError::Denied {
                registry,
                url,
                status,
            }),
            429 | 500..=599 => Failure {
                error: PushError::Status {
                    url,
                    status,
                    message: body,
                },
                retry: true,
                retry_after,
            },
            _ => Failure::fatal(PushError::Status {
                url,
                status,
                message: body,
            }),
        }
    }

    async fn unexpected(&self, url: &str, response: reqwest::Response) -> Failure {
        let status = response.status().as_u16();
        let retry_after = retry_after(&response);
        let body = short_body(response).await;
        self.status_failure(url.to_string(), status, retry_after, body)
    }

    fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        auth: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut r = self.client.http().request(method, url);
        if let Some(a) = auth {
            r = r.header(AUTHORIZATION, a);
        }
        r
    }

    /// Is the blob in this repository?
    pub async fn blob_exists(&self, digest: &str) -> Result<bool, PushError> {
        let url = format!("{}/blobs/{digest}", self.base);
        self.retry(&format!("checking blob {digest}"), || async {
            let response = self
                .send(&|auth| self.request(reqwest::Method::HEAD, &url, auth))
                .await?;
            match response.status() {
                StatusCode::OK => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => Err(self.unexpected(&url, response).await),
            }
        })
        .await
    }

    /// Mount `digest` from another repository of the same registry. `false`
    /// when the registry did not (a 202 starts an upload instead, which is
    /// cancelled; a 404 or similar means it cannot).
    pub async fn mount(&self, digest: &str, from: &str) -> Result<bool, PushError> {
        let url = format!(
            "{}/blobs/uploads/?mount={}&from={}",
            self.base,
            query_escape(digest),
            query_escape(from)
        );
        self.retry(&format!("mounting blob {digest} from {from}"), || async {
            let response = self
                .send(&|auth| {
                    self.request(reqwest::Method::POST, &url, auth)
                        .header(CONTENT_LENGTH, 0)
                })
                .await?;
            match response.status() {
                StatusCode::CREATED => Ok(true),
                StatusCode::ACCEPTED => {
                    // An upload session we do not want: cancel it, best effort.
                    if let Some(location) = self.location(&response) {
                        let _ = self
                            .send(&|auth| self.request(reqwest::Method::DELETE, &location, auth))
                            .await;
                    }
                    Ok(false)
                }
                s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                    Err(self.unexpected(&url, response).await)
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    Err(self.unexpected(&url, response).await)
                }
                other => {
                    tracing::debug!(
                        blob.digest = digest,
                        from,
                        status = other.as_u16(),
                        "mount refused"
                    );
                    Ok(false)
                }
            }
        })
        .await
    }

    /// Upload a blob: a fresh session and the whole blob on each attempt.
    /// Returns the bytes sent by the attempt that succeeded.
    pub async fn upload(
        &self,
        digest: &str,
        size: u64,
        source: Source<'_>,
    ) -> Result<u64, PushError> {
        self.retry(&format!("uploading blob {digest}"), || {
            self.upload_once(digest, size, source)
        })
        .await?;
        (self.progress)(PushEvent::Uploaded {
            digest: digest.to_string(),
            size,
        });
        Ok(size)
    }

    async fn upload_once(
        &self,
        digest: &str,
        size: u64,
        source: Source<'_>,
    ) -> Result<(), Failure> {
        let start_url = format!("{}/blobs/uploads/", self.base);
        let response = self
            .send(&|auth| {
                self.request(reqwest::Method::POST, &start_url, auth)
                    .header(CONTENT_LENGTH, 0)
            })
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.unexpected(&start_url, response).await);
        }
        let Some(location) = self.location(&response) else {
            return Err(Failure::fatal(PushError::Status {
                url: start_url,
                status: 202,
                message: "the upload session has no Location header".into(),
            }));
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={}", query_escape(digest));
        let sent = Arc::new(AtomicU64::new(0));
        let timeout = UPLOAD_BASE_TIMEOUT + Duration::from_secs(size >> 20);
        let make = |auth: Option<&str>| {
            sent.store(0, Ordering::Relaxed);
            let body = match source {
                Source::Memory(bytes) => {
                    sent.store(bytes.len() as u64, Ordering::Relaxed);
                    reqwest::Body::from(bytes.clone())
                }
                Source::File(path) => file_body(path, Arc::clone(&sent)),
            };
            self.request(reqwest::Method::PUT, &url, auth)
                .header(CONTENT_LENGTH, size)
                .header(CONTENT_TYPE, "application/octet-stream")
                .timeout(timeout)
                .body(body)
        };
        let send = self.send(&make);
        tokio::pin!(send);
        let mut ticker = tokio::time::interval(PROGRESS_EVERY);
        ticker.tick().await;
        let mut reported = 0;
        let response = loop {
            tokio::select! {
                r = &mut send => break r?,
                _ = ticker.tick() => {
                    let bytes = sent.load(Ordering::Relaxed);
                    if bytes != reported {
                        reported = bytes;
                        (self.progress)(PushEvent::Uploading { digest: digest.to_string(), bytes, total: size });
                    }
                }
            }
        };
        match response.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => {
                let answered = header(&response, "docker-content-digest");
                match answered {
                    Some(d) if d != digest => Err(Failure::fatal(PushError::DigestInvalid {
                        registry: self.image.registry.clone(),
                        digest: digest.to_string(),
                        message: format!("the registry stored it as {d}"),
                    })),
                    _ => Ok(()),
                }
            }
            // The session is gone (a registry restarted in between): start over.
            StatusCode::NOT_FOUND => Err(Failure {
                error: PushError::Status {
                    url: strip_query(&url),
                    status: 404,
                    message: short_body(response).await,
                },
                retry: true,
                retry_after: None,
            }),
            StatusCode::BAD_REQUEST => {
                let body = short_body(response).await;
                if body.contains("DIGEST_INVALID") {
                    Err(Failure::fatal(PushError::DigestInvalid {
                        registry: self.image.registry.clone(),
                        digest: digest.to_string(),
                        message: body,
                    }))
                } else {
                    Err(Failure::fatal(PushError::Status {
                        url: strip_query(&url),
                        status: 400,
                        message: body,
                    }))
                }
            }
            _ => Err(self.unexpected(&strip_query(&url), response).await),
        }
    }

    /// The digest the registry has for `reference` (a tag or digest) here.
    pub async fn manifest_digest(&self, reference: &str) -> Result<Option<String>, PushError> {
        let image = ImageRef {
            registry: self.image.registry.clone(),
            repository: self.image.repository.clone(),
            reference: reference.to_string(),
        };
        self.retry(&format!("checking manifest {reference}"), || async {
            self.client
                .manifest_digest(&image)
                .await
                .map_err(|e| self.registry_failure(e))
        })
        .await
    }

    /// The manifest stored under `digest`, its bytes checked against it,
    /// and its media type (an OCI or a Docker image manifest: a tag must be
    /// put with the type the manifest was pushed with).
    pub async fn get_manifest(&self, digest: &str) -> Result<(Bytes, String), PushError> {
        let url = format!("{}/manifests/{digest}", self.base);
        self.retry(&format!("reading the manifest {digest}"), || async {
            let response = self
                .send(&|auth| {
                    self.request(reqwest::Method::GET, &url, auth).header(
                        reqwest::header::ACCEPT,
                        format!("{MANIFEST_MEDIA_TYPE}, {DOCKER_MANIFEST_MEDIA_TYPE}"),
                    )
                })
                .await?;
            if response.status() != StatusCode::OK {
                return Err(self.unexpected(&url, response).await);
            }
            let answered = header(&response, "content-type")
                .map(|t| t.split(';').next().unwrap_or_default().trim().to_string());
            let media_type = answered
                .clone()
                .filter(|t| t == MANIFEST_MEDIA_TYPE || t == DOCKER_MANIFEST_MEDIA_TYPE);
            let bytes = response.bytes().await.map_err(|e| Failure {
                error: PushError::Unreachable {
                    url: url.clone(),
                    message: e.to_string(),
                },
                retry: true,
                retry_after: None,
            })?;
            let got = super::compress::digest_string(&sha2::Sha256::digest(&bytes));
            if got != digest {
                return Err(Failure::fatal(PushError::DigestMismatch {
                    reference: format!("{}@{digest}", self.name()),
                    expected: digest.to_string(),
                    got,
                }));
            }
            // An index (several platforms, or attestations) is not tagged
            // as if it were an image.
            let parsed = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
            if parsed
                .as_ref()
                .is_some_and(|m| m.get("manifests").is_some())
            {
                return Err(Failure::fatal(PushError::NotAnImage {
                    reference: format!("{}@{digest}", self.name()),
                    media_type: answered.unwrap_or_else(|| "manifest index".into()),
                }));
            }
            // Without a usable Content-Type, the manifest's own `mediaType`
            // (OCI's is optional and means OCI).
            let media_type = media_type.unwrap_or_else(|| {
                parsed
                    .and_then(|m| m["mediaType"].as_str().map(str::to_string))
                    .filter(|t| t == DOCKER_MANIFEST_MEDIA_TYPE)
                    .unwrap_or_else(|| MANIFEST_MEDIA_TYPE.to_string())
            });
            Ok((bytes, media_type))
        })
        .await
    }

    /// `PUT` the manifest under `reference` as `media_type`; the registry's
    /// digest must be `digest`.
    pub async fn put_manifest(
        &self,
        reference: &str,
        manifest: &Bytes,
        media_type: &str,
        digest: &str,
    ) -> Result<(), PushError> {
        let url = format!("{}/manifests/{reference}", self.base);
        self.retry(&format!("pushing the manifest as {reference}"), || async {
            let response = self
                .send(&|auth| {
                    self.request(reqwest::Method::PUT, &url, auth)
                        .header(CONTENT_TYPE, media_type)
                        .body(manifest.clone())
                })
                .await?;
            match response.status() {
                StatusCode::CREATED | StatusCode::OK | StatusCode::ACCEPTED => {
                    match header(&response, "docker-content-digest") {
                        Some(d) if d == digest => Ok(()),
                        answered => Err(Failure::fatal(PushError::DigestMismatch {
                            reference: format!("{}:{reference}", self.name()),
                            expected: digest.to_string(),
                            got: answered
                                .unwrap_or_else(|| "(no Docker-Content-Digest header)".into()),
                        })),
                    }
                }
                _ => Err(self.unexpected(&url, response).await),
            }
        })
        .await
    }

    /// The `Location` of an answer, made absolute.
    fn location(&self, response: &reqwest::Response) -> Option<String> {
        let location = response.headers().get(LOCATION)?.to_str().ok()?;
        Some(
            if location.starts_with("http://") || location.starts_with("https://") {
                location.to_string()
            } else if location.starts_with('/') {
                format!("{}{location}", self.origin)
            } else {
                format!("{}/blobs/uploads/{location}", self.base)
            },
        )
    }
}

/// A streaming request body over a spool file, counting the bytes read.
fn file_body(path: &Path, sent: Arc<AtomicU64>) -> reqwest::Body {
    match std::fs::File::open(path) {
        Ok(file) => {
            let file = tokio::fs::File::from_std(file);
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).inspect_ok(
                move |chunk| {
                    sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                },
            );
            reqwest::Body::wrap_stream(stream)
        }
        Err(e) => {
            let message = format!("cannot read the spool file {}: {e}", path.display());
            reqwest::Body::wrap_stream(futures::stream::once(async move {
                Err::<Bytes, std::io::Error>(std::io::Error::other(message))
            }))
        }
    }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    header(response, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The first bytes of an error answer, for the message.
async fn short_body(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// Percent-encode what may not stand in a query value (digests and
/// repository names only hold `[a-z0-9:._/-]`, so this is rarely needed).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The wait before attempt `n + 1`: `base × 2^(n-1)`, at most [`MAX_BACKOFF`],
/// and at least what the registry asked for (up to [`MAX_RETRY_AFTER`]).
pub fn backoff(base: Duration, n: u32, retry_after: Option<Duration>) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(16);
    let wait = base.saturating_mul(factor).min(MAX_BACKOFF);
    match retry_after {
        Some(asked) => wait.max(asked.min(MAX_RETRY_AFTER)),
        None => wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_honours_retry_after() {
        let base = Duration::from_millis(500);
        assert_eq!(backoff(base, 1, None), Duration::from_millis(500));
        assert_eq!(backoff(base, 2, None), Duration::from_secs(1));
        assert_eq!(backoff(base, 4, None), Duration::from_secs(4));
        assert_eq!(backoff(base, 30, None), MAX_BACKOFF);
        assert_eq!(
            backoff(base, 1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            backoff(base, 1, Some(Duration::from_secs(9999))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(query_escape("sha256:abc"), "sha256:abc");
        assert_eq!(query_escape("team/repo"), "team/repo");
        assert_eq!(query_escape("a b&c"), "a%20b%26c");
        assert_eq!(strip_query("http://h/v2/x?digest=1"), "http://h/v2/x");
    }
}
