//! The OCI registry: the one module that talks to it (oci-client for
//! authentication, and a manifest `HEAD` per image for presence).
//!
//! Loopback registries (127.0.0.0/8, localhost, [::1]) and hosts listed as
//! insecure are spoken to over plain HTTP, as the Docker Engine does; all
//! others over HTTPS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

/// Manifest media types a presence check accepts (OCI and Docker, single and multi-platform).
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{reference:?} is not a valid image reference: {message}")]
    BadReference { reference: String, message: String },
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

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Hosts (`host[:port]`) spoken to over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub timeout: Option<Duration>,
}

/// Is this `host[:port]` on the loopback interface?
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost" || name == "::1" || name.starts_with("127.")
}

pub struct RegistryClient {
    oci: Client,
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
        let oci = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure.clone()),
            read_timeout: Some(timeout),
            connect_timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        });
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
            oci,
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

    /// The digest of `reference`'s manifest, or `None` if the registry does
    /// not have it. One `HEAD`; a second one only after a 401 challenge.
    pub async fn manifest_digest(&self, reference: &str) -> Result<Option<String>, RegistryError> {
        let parsed: Reference =
            reference
                .parse()
                .map_err(|e: oci_client::ParseError| RegistryError::BadReference {
                    reference: reference.to_string(),
                    message: e.to_string(),
                })?;
        let registry = parsed.resolve_registry().to_string();
        let target = parsed
            .digest()
            .or_else(|| parsed.tag())
            .unwrap_or("latest")
            .to_string();
        let url = format!(
            "{}://{registry}/v2/{}/manifests/{target}",
            self.scheme(&registry),
            parsed.repository()
        );
        let scope = format!("{registry}/{}", parsed.repository());
        let known = self
            .authorization
            .lock()
            .ok()
            .and_then(|m| m.get(&scope).cloned());
        let mut response = self.head(&url, known.clone()).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED && known.is_none() {
            let token = self
                .oci
                .auth(&parsed, &self.auth, RegistryOperation::Pull)
                .await
                .map_err(|e| RegistryError::Auth {
                    registry: registry.clone(),
                    message: labforge_core::error_chain(&e),
                })?;
            let header = match (token, &self.auth) {
                (Some(t), _) => Some(format!("Bearer {t}")),
                (None, RegistryAuth::Basic(u, p)) => Some(basic(u, p)),
                _ => None,
            };
            if let (Some(h), Ok(mut m)) = (&header, self.authorization.lock()) {
                m.insert(scope, h.clone());
            }
            response = self.head(&url, header).await?;
        }
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

    /// Check many references concurrently (at most `concurrency` at once);
    /// answers come back in the order asked.
    pub async fn presence(
        self: &Arc<Self>,
        references: &[String],
        concurrency: usize,
    ) -> Vec<Result<Option<String>, RegistryError>> {
        stream::iter(references.iter().cloned().map(|r| {
            let client = Arc::clone(self);
            async move { client.manifest_digest(&r).await }
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
    }

    #[test]
    fn basic_auth_header() {
        assert_eq!(basic("labforge", "secret"), "Basic bGFiZm9yZ2U6c2VjcmV0");
        assert_eq!(basic("a", "b"), "Basic YTpi");
    }
}
