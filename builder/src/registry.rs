//! The OCI registry: the one module that talks to it (oci-client for
//! authentication, and a manifest `HEAD` per image for presence). The pusher
//! (`push::upload`) sends its requests through [`RegistryClient::send_for_push`],
//! so that every login goes through the same oci-client flow and the same
//! per-repository `Authorization` cache.
//!
//! Loopback registries (127.0.0.0/8, localhost, [::1]) and hosts listed as
//! insecure are spoken to over plain HTTP, as the Docker Engine does; all
//! others over HTTPS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

/// Manifest media types a presence check accepts (OCI and Docker, single and multi-platform).
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "cannot reach the registry at {url}: {message}; is it running, and is --registry right?"
    )]
    Unreachable { url: String, message: String },
    #[error("the registry answered {status} for {url}")]
    Status { url: String, status: u16 },
    #[error(
        "the registry at {registry} refused the credentials: {message}; set LABFORGE_REGISTRY_USERNAME and LABFORGE_REGISTRY_PASSWORD"
    )]
    Auth { registry: String, message: String },
    #[error("the registry answered 200 for {url} without a Docker-Content-Digest header")]
    NoDigest { url: String },
}

/// An image in a registry: `<registry>/<repository>:<reference>`, where the
/// reference is a tag (or a digest). Built by labforge itself, so it needs no
/// parsing (oci-client's reference parser compiles a large regex on first use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]`
    pub registry: String,
    pub repository: String,
    pub reference: String,
}

impl ImageRef {
    /// `reference` in a full repository name `host[:port]/path`.
    pub fn in_repository(repository: &str, reference: &str) -> ImageRef {
        let (registry, path) = repository.split_once('/').unwrap_or((repository, ""));
        ImageRef {
            registry: registry.to_string(),
            repository: path.to_string(),
            reference: reference.to_string(),
        }
    }

    /// Where credentials apply: the registry and repository.
    fn scope(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}:{}",
            self.registry, self.repository, self.reference
        )
    }
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Hosts (`host[:port]`) spoken to over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub timeout: Option<Duration>,
}

/// The `host[:port]` of a full repository name `host[:port]/path`.
pub fn host_of(repository: &str) -> &str {
    repository
        .split_once('/')
        .map_or(repository, |(host, _)| host)
}

/// Is this `host[:port]` on the loopback interface?
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub struct RegistryClient {
    /// Made on first use: only a registry that asks for a login needs it.
    oci: OnceLock<Client>,
    timeout: Duration,
    http: reqwest::Client,
    auth: RegistryAuth,
    insecure: Vec<String>,
    heads: AtomicUsize,
    /// `Authorization` header per `registry/repository`, learnt from the
    /// first 401 there, so later requests to it are sent with it at once.
    authorization: Mutex<HashMap<String, String>>,
}

impl RegistryClient {
    pub fn new(options: RegistryOptions, hosts: &[&str]) -> Result<RegistryClient, RegistryError> {
        let mut insecure = options.insecure.clone();
        insecure.extend(
            hosts
                .iter()
                .filter(|h| is_loopback(h))
                .map(|h| h.to_string()),
        );
        let timeout = options.timeout.unwrap_or(Duration::from_secs(30));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("labforge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RegistryError::Unreachable {
                url: "(client setup)".into(),
                message: e.to_string(),
            })?;
        let auth = match (options.username, options.password) {
            (Some(u), Some(p)) => RegistryAuth::Basic(u, p),
            _ => RegistryAuth::Anonymous,
        };
        Ok(RegistryClient {
            oci: OnceLock::new(),
            timeout,
            http,
            auth,
            insecure,
            heads: AtomicUsize::new(0),
            authorization: Mutex::new(HashMap::new()),
        })
    }

    /// How many manifest HEAD requests this client has sent.
    pub fn head_requests(&self) -> usize {
        self.heads.load(Ordering::Relaxed)
    }

    fn scheme(&self, registry: &str) -> &'static str {
        if self.insecure.iter().any(|h| h == registry) {
            "http"
        } else {
            "https"
        }
    }

    fn oci(&self) -> &Client {
        self.oci.get_or_init(|| {
            Client::new(ClientConfig {
                protocol: ClientProtocol::HttpsExcept(self.insecure.clone()),
                read_timeout: Some(self.timeout),
                connect_timeout: Some(Duration::from_secs(10)),
                ..Default::default()
            })
        })
    }

    /// The `Authorization` header for `image`'s repository, from oci-client's
    /// login (a bearer token, or basic credentials), remembered for the repository.
    async fn authenticate(&self, image: &ImageRef) -> Result<Option<String>, RegistryError> {
        self.authenticate_for(image, RegistryOperation::Pull).await
    }

    /// The cache key of the `Authorization` header for an operation on a
    /// repository: pull tokens and push (pull,push) tokens are kept apart.
    fn auth_key(image: &ImageRef, operation: RegistryOperation) -> String {
        match operation {
            RegistryOperation::Pull => image.scope(),
            RegistryOperation::Push => format!("{} push", image.scope()),
        }
    }

    /// Log in for `operation` on `image`'s repository (oci-client's token
    /// flow), and remember the `Authorization` header for it.
    async fn authenticate_for(
        &self,
        image: &ImageRef,
        operation: RegistryOperation,
    ) -> Result<Option<String>, RegistryError> {
        let reference = Reference::with_tag(
            image.registry.clone(),
            image.repository.clone(),
            image.reference.clone(),
        );
        let token = self
            .oci()
            .auth(&reference, &self.auth, operation)
            .await
            .map_err(|e| RegistryError::Auth {
                registry: image.registry.clone(),
                message: labforge_core::error_chain(&e),
            })?;
        let header = match (token, &self.auth) {
            (Some(t), _) => Some(format!("Bearer {t}")),
            (None, RegistryAuth::Basic(u, p)) => Some(basic(u, p)),
            _ => None,
        };
        if let (Some(h), Ok(mut known)) = (&header, self.authorization.lock()) {
            known.insert(Self::auth_key(image, operation), h.clone());
        }
        Ok(header)
    }

    /// `http` or `https` for a `host[:port]`: plain HTTP for loopback and
    /// configured insecure registries.
    pub fn scheme_for(&self, registry: &str) -> &'static str {
        self.scheme(registry)
    }

    /// The HTTP client (its default timeout is the registry timeout; long
    /// uploads set their own per request).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The remembered `Authorization` header for pushing to `image`'s
    /// repository, if a login happened already.
    pub fn push_authorization(&self, image: &ImageRef) -> Option<String> {
        self.authorization.lock().ok().and_then(|m| {
            m.get(&Self::auth_key(image, RegistryOperation::Push))
                .cloned()
        })
    }

    /// Log in for pushing to `image`'s repository (after a 401), and return
    /// the `Authorization` header to send from now on.
    pub async fn login_for_push(&self, image: &ImageRef) -> Result<Option<String>, RegistryError> {
        self.authenticate_for(image, RegistryOperation::Push).await
    }

    /// Send a request for pushing to `image`'s repository: with the
    /// remembered push authorization, and once more after a login when the
    /// registry answers 401. `make` builds the request (again, for the
    /// second try) with the `Authorization` header to use, if any.
    pub async fn send_for_push(
        &self,
        image: &ImageRef,
        make: &(dyn Fn(Option<&str>) -> reqwest::RequestBuilder + Send + Sync),
    ) -> Result<reqwest::Response, RegistryError> {
        let known = self.push_authorization(image);
        let url_of = |e: &reqwest::Error| {
            e.url()
                .map(|u| u.to_string())
                .unwrap_or_else(|| image.scope())
        };
        let response =
            make(known.as_deref())
                .send()
                .await
                .map_err(|e| RegistryError::Unreachable {
                    url: url_of(&e),
                    message: labforge_core::error_chain(&e),
                })?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let header = self.login_for_push(image).await?;
        make(header.as_deref())
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable {
                url: url_of(&e),
                message: labforge_core::error_chain(&e),
            })
    }

    /// `scheme://host/v2/<repository>` of `image`'s repository.
    pub(crate) fn repository_url(&self, image: &ImageRef) -> String {
        format!(
            "{}://{}/v2/{}",
            self.scheme(&image.registry),
            image.registry,
            image.repository
        )
    }

    /// The login the client was made with (`RegistryOptions` username and
    /// password), for a tool that must reach the same registry itself.
    pub(crate) fn basic_login(&self) -> Option<(&str, &str)> {
        match &self.auth {
            RegistryAuth::Basic(user, password) => Some((user.as_str(), password.as_str())),
            _ => None,
        }
    }

    /// `GET url` (a manifest or blob of `image`'s repository) for pulling:
    /// with the remembered pull authorization, and once more after a login
    /// when the registry answers 401, like [`Self::manifest_digest`]. `accept`
    /// is the `Accept` header; `timeout`, when given, replaces the client's
    /// whole-request timeout (a large blob takes longer to stream). The answer
    /// comes back whatever its status; only a failed connection is an error.
    pub(crate) async fn get_for_pull(
        &self,
        image: &ImageRef,
        url: &str,
        accept: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, RegistryError> {
        let send = |authorization: Option<String>| {
            let mut request = self.http.get(url);
            if let Some(a) = accept {
                request = request.header("Accept", a);
            }
            if let Some(t) = timeout {
                request = request.timeout(t);
            }
            if let Some(a) = authorization {
                request = request.header("Authorization", a);
            }
            request.send()
        };
        let unreachable = |e: reqwest::Error| RegistryError::Unreachable {
            url: url.to_string(),
            message: labforge_core::error_chain(&e),
        };
        let known = self.remembered(image);
        let response = send(known).await.map_err(unreachable)?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let header = self.authenticate(image).await?;
        send(header).await.map_err(unreachable)
    }

    fn manifest_url(&self, image: &ImageRef) -> String {
        format!(
            "{}://{}/v2/{}/manifests/{}",
            self.scheme(&image.registry),
            image.registry,
            image.repository,
            image.reference
        )
    }

    /// The `Authorization` header learnt for `image`'s repository, if any.
    fn remembered(&self, image: &ImageRef) -> Option<String> {
        self.authorization
            .lock()
            .ok()
            .and_then(|m| m.get(&image.scope()).cloned())
    }

    /// The digest of `image`'s manifest, or `None` if the registry does not
    /// have it. One `HEAD`; a second one only after a 401 (the first request
    /// to a repository that needs a login, or a remembered token that expired).
    pub async fn manifest_digest(&self, image: &ImageRef) -> Result<Option<String>, RegistryError> {
        let url = self.manifest_url(image);
        let known = self.remembered(image);
        let mut response = self.head(&url, known).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            let header = self.authenticate(image).await?;
            response = self.head(&url, header).await?;
        }
        let registry = image.registry.clone();
        match response.status().as_u16() {
            200 => match response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
            {
                Some(d) => Ok(Some(d.to_string())),
                None => Err(RegistryError::NoDigest { url }),
            },
            404 => Ok(None),
            401 | 403 => Err(RegistryError::Auth {
                registry,
                message: format!("{} for {url}", response.status()),
            }),
            status => Err(RegistryError::Status { url, status }),
        }
    }

    /// `GET` the manifest of `image`: its digest and compressed size
    /// (config and layers, from the manifest), or `None` if the registry
    /// does not have it. Logs in once after a 401, like [`Self::manifest_digest`].
    pub async fn manifest_size(
        &self,
        image: &ImageRef,
    ) -> Result<Option<(String, Option<u64>)>, RegistryError> {
        let url = self.manifest_url(image);
        let send = |authorization: Option<String>| {
            let mut request = self.http.get(&url).header("Accept", MANIFEST_ACCEPT);
            if let Some(a) = authorization {
                request = request.header("Authorization", a);
            }
            request.send()
        };
        let unreachable = |e: reqwest::Error| RegistryError::Unreachable {
            url: url.clone(),
            message: labforge_core::error_chain(&e),
        };
        let known = self.remembered(image);
        let mut response = send(known).await.map_err(unreachable)?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            let header = self.authenticate(image).await?;
            response = send(header).await.map_err(unreachable)?;
        }
        match response.status().as_u16() {
            200 => {
                let digest = response
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = response.bytes().await.map_err(unreachable)?;
                let digest = match digest {
                    Some(d) => d,
                    None => crate::push::compress::digest_string(
                        &<sha2::Sha256 as sha2::Digest>::digest(&body),
                    ),
                };
                Ok(Some((digest, manifest_bytes(&body))))
            }
            404 => Ok(None),
            401 | 403 => Err(RegistryError::Auth {
                registry: image.registry.clone(),
                message: format!("{} for {url}", response.status()),
            }),
            status => Err(RegistryError::Status { url, status }),
        }
    }

    async fn head(
        &self,
        url: &str,
        authorization: Option<String>,
    ) -> Result<reqwest::Response, RegistryError> {
        self.heads.fetch_add(1, Ordering::Relaxed);
        let mut request = self.http.head(url).header("Accept", MANIFEST_ACCEPT);
        if let Some(a) = authorization {
            request = request.header("Authorization", a);
        }
        request
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable {
                url: url.to_string(),
                message: labforge_core::error_chain(&e),
            })
    }

    /// [`Self::manifest_size`] for many images concurrently (at most
    /// `concurrency` at once); answers come back in the order asked.
    pub async fn manifest_sizes(
        self: &Arc<Self>,
        images: &[ImageRef],
        concurrency: usize,
    ) -> Vec<Result<Option<(String, Option<u64>)>, RegistryError>> {
        stream::iter(images.iter().cloned().map(|image| {
            let client = Arc::clone(self);
            async move { client.manifest_size(&image).await }
        }))
        .buffered(concurrency.max(1))
        .collect()
        .await
    }

    /// Check many images concurrently (at most `concurrency` at once);
    /// answers come back in the order asked.
    pub async fn presence(
        self: &Arc<Self>,
        images: &[ImageRef],
        concurrency: usize,
    ) -> Vec<Result<Option<String>, RegistryError>> {
        stream::iter(images.iter().cloned().map(|image| {
            let client = Arc::clone(self);
            async move { client.manifest_digest(&image).await }
        }))
        .buffered(concurrency.max(1))
        .collect()
        .await
    }
}

fn basic(user: &str, password: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let bytes = input.as_bytes();
    let mut out = String::from("Basic ");
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The compressed size an image manifest describes: its config and layers.
/// `None` for an index (or anything that is not an image manifest).
fn manifest_bytes(body: &[u8]) -> Option<u64> {
    let manifest: serde_json::Value = serde_json::from_slice(body).ok()?;
    let config = manifest.get("config")?.get("size")?.as_u64()?;
    let layers = manifest.get("layers")?.as_array()?;
    layers
        .iter()
        .map(|l| l.get("size").and_then(serde_json::Value::as_u64))
        .sum::<Option<u64>>()
        .map(|sum| sum + config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.edu"));
        assert!(!is_loopback("10.0.0.1:5000"));
        assert!(!is_loopback("127.example.org:5000"));
        assert!(is_loopback("127.1.2.3"));
    }

    #[test]
    fn basic_auth_header() {
        assert_eq!(basic("labforge", "secret"), "Basic bGFiZm9yZ2U6c2VjcmV0");
        assert_eq!(basic("a", "b"), "Basic YTpi");
    }
}
