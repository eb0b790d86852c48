//! The SBOM and the scan report kept next to the image in its registry, as
//! OCI referrers (image-spec 1.1 artifacts whose `subject` is the image
//! manifest), and read back from there.
//!
//! Each artifact is an OCI image manifest with `artifactType` (CycloneDX
//! JSON for the SBOM, [`REPORT_ARTIFACT_TYPE`] for labforge's scan report),
//! the 2-byte empty config `{}` (`application/vnd.oci.empty.v1+json`), one
//! layer holding the payload (its media type is the artifact type), the
//! image as `subject`, and the caller's annotations (at least
//! `org.opencontainers.image.created`). It is pushed by digest, never tagged.
//!
//! Distribution-spec 1.1, "Pushing Manifests with Subject": a registry with
//! the referrers API answers the manifest `PUT` with an `OCI-Subject` header
//! and indexes the artifact itself. Without that header the client keeps the
//! list under the **referrers tag schema**: an OCI image index tagged
//! `sha256-<hex of the subject>`, started empty when the tag is missing, to
//! which the artifact's descriptor (media type, digest, size, artifactType,
//! the manifest's annotations) is added once. The CNCF distribution 2.8
//! registry (Debian's `docker-registry`, the local one) has no referrers API
//! (`GET /v2/<name>/referrers/<digest>` is a plain 404) and sends no
//! `OCI-Subject`, so there the tag schema is used. It accepts the 1.1 form
//! as it is: `artifactType`, `subject`, the empty config and a layer of any
//! media type are stored and served byte for byte, so no older form (ORAS
//! 1.0's config media type = artifact type) is needed; the withdrawn
//! `application/vnd.oci.artifact.manifest.v1+json` is refused (400
//! `MANIFEST_INVALID`). 2.8 checks that the referenced blobs exist
//! (`MANIFEST_BLOB_UNKNOWN`) but not the subject, so the subject is read
//! here first. Reading a manifest from 2.8 needs an `Accept` that names its
//! media type (it answers 404 otherwise), so every read here accepts
//! indexes and manifests.
//!
//! Listing asks the referrers API first and falls back to the tag schema on
//! a 404 (oci-client's `pull_referrers`, which also answers an empty list
//! when neither exists). The manifest `PUT` goes through
//! [`RegistryClient::send_for_push`], because oci-client does not show the
//! answer's headers and `OCI-Subject` is one of them; everything else
//! (blobs, manifests, the index) goes through oci-client.
//!
//! **The remaining race.** The tag-schema index is a read-modify-write on a
//! registry without conditional `PUT`s (2.8 ignores `If-Match`): two clients
//! attaching to the same subject at once can each put an index that lacks
//! the other's entry. Attaches through one [`Referrers`] are serialised per
//! subject. Across clients, a writer reads the index again right after its
//! `PUT` and once more 250 ms later (by then writers that read before
//! its `PUT` have put theirs), and adds its entry back whenever it is
//! missing (up to 5 times). What is left: a writer whose
//! read-then-put takes longer than that can still drop our entry after our
//! last check; our artifact then stays in the registry, unlisted, until it
//! is attached again (which re-adds it: attaching is idempotent).
//! Distribution 2.8 also answers 500 ("invalid checksum digest format") to
//! a read of the tag while another request rewrites it (its filesystem
//! storage rewrites the tag's link file in place), so reads and idempotent
//! writes are tried a few times on 5xx answers.
//!
//! This module only talks to the registry; it never touches the engine, the
//! state store or local files, and never deletes anything in the registry
//! (an index that was replaced is left untagged for the registry's garbage
//! collection).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use bytes::Bytes;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, ImageIndexEntry,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciDescriptor,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::{Deserialize, Serialize};

use crate::registry::{ImageRef, RegistryClient, RegistryError, RegistryOptions};

/// The artifact type of a CycloneDX JSON SBOM.
pub const SBOM_ARTIFACT_TYPE: &str = "application/vnd.cyclonedx+json";
/// The artifact type of labforge's scan report (JSON).
pub const REPORT_ARTIFACT_TYPE: &str = "application/vnd.labforge.scan-report.v1+json";
/// The annotation that orders referrers of one type (RFC 3339).
pub const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";

/// The empty config of an artifact: the 2 bytes `{}`.
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// What manifest reads accept (distribution 2.8 answers 404 to an `Accept`
/// that does not name the stored manifest's media type).
const MANIFEST_ACCEPT: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];
/// How often a call that failed in a way that may pass is tried in all.
const TRANSIENT_TRIES: u32 = 5;
/// How often a writer puts its entry back into a tag-schema index that lost it.
const INDEX_TRIES: usize = 5;
/// How long after its `PUT` a writer checks the tag-schema index a second
/// time (other writers' read-then-put takes a few milliseconds here).
const SETTLE: Duration = Duration::from_millis(250);
/// The largest payload read back into memory.
const MAX_PAYLOAD: u64 = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReferrersError {
    #[error("{repository:?} is not a repository on {host}: give it as {host}/<path>")]
    Repository { repository: String, host: String },
    #[error(
        "{digest:?} is not a manifest digest: give the image's sha256:<64 hex digits> (as `labforge push` prints it)"
    )]
    Digest { digest: String },
    #[error("the {what} to attach to {repository}@{digest} is empty: nothing to attach")]
    EmptyPayload {
        repository: String,
        digest: String,
        what: String,
    },
    #[error("cannot set up the registry client for {host}: {message}")]
    Client { host: String, message: String },
    #[error("{repository}@{digest} is not in the registry: push the image before attaching to it")]
    SubjectMissing { repository: String, digest: String },
    #[error(
        "the registry at {host} refused {login} to {action} for {repository}@{digest}: {message}; set LABFORGE_REGISTRY_USERNAME and LABFORGE_REGISTRY_PASSWORD or run `docker login {host}`",
        host = crate::registry::host_of(.repository)
    )]
    Auth {
        repository: String,
        digest: String,
        action: &'static str,
        login: String,
        message: String,
    },
    #[error(
        "cannot reach the registry at {host} to {action} for {repository}@{digest}: {message}; is it running?",
        host = crate::registry::host_of(.repository)
    )]
    Unreachable {
        repository: String,
        digest: String,
        action: &'static str,
        message: String,
    },
    #[error("cannot {action} for {repository}@{digest}: {message}")]
    Registry {
        repository: String,
        digest: String,
        action: &'static str,
        message: String,
    },
    #[error("{repository}@{digest}: the {what} is not valid: {message}")]
    Invalid {
        repository: String,
        digest: String,
        what: String,
        message: String,
    },
    #[error(
        "{repository}@{digest}: the {what} read back has digest {got}, not {expected}; the registry's copy is damaged, attach it again"
    )]
    DigestMismatch {
        repository: String,
        digest: String,
        what: String,
        expected: String,
        got: String,
    },
    #[error(
        "the referrers index {repository}:{tag} lost the entry for {digest} {tries} times in a row: another client keeps rewriting it; attach again when it is done"
    )]
    IndexRace {
        repository: String,
        tag: String,
        digest: String,
        tries: usize,
    },
}

/// One referrer of a subject, as the referrers list describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// The `org.opencontainers.image.created` annotation, if any.
    pub fn created(&self) -> Option<&str> {
        self.annotations.get(CREATED_ANNOTATION).map(String::as_str)
    }
}

/// What [`Referrers::attach`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The artifact manifest's digest.
    pub digest: String,
    /// The registry indexed it itself (referrers API); `false` when the
    /// referrers tag schema holds it.
    pub via_api: bool,
    /// The newest referrer of this type already held the same payload, so
    /// nothing was pushed and `digest` is that referrer.
    pub reused: bool,
}

/// A referrer read back by [`Referrers::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub manifest_digest: String,
    /// The payload, its sha256 checked against the artifact's layer descriptor.
    pub payload: Bytes,
    /// The artifact manifest's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Attaches and reads referrers in one registry.
pub struct Referrers {
    client: Client,
    auth: RegistryAuth,
    /// For the manifest `PUT` (whose `OCI-Subject` header oci-client hides)
    /// and the referrers API probe, with the same login.
    registry: RegistryClient,
    /// `host[:port]`
    host: String,
    scheme: &'static str,
    /// Who logs in, for error messages: never the secret.
    login: String,
    /// One lock per `path@subject`: attaches through this value never race
    /// each other on a tag-schema index.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Referrers {
    /// A client for the registry `host` (`host[:port]`). Plain HTTP for
    /// loopback hosts and `options.insecure` ones, as for
    /// [`RegistryClient`]; `options.username`/`password` is the login for
    /// this host (the caller chooses it, e.g. with
    /// [`crate::creds::login_for`]) and is sent nowhere else.
    pub fn new(host: &str, options: RegistryOptions) -> Result<Referrers, ReferrersError> {
        let login = match &options.username {
            Some(user) if options.password.is_some() => format!("user {user:?}"),
            _ => "anonymous access (no login)".to_string(),
        };
        let auth = match (&options.username, &options.password) {
            (Some(u), Some(p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            _ => RegistryAuth::Anonymous,
        };
        let timeout = options.timeout.unwrap_or(Duration::from_secs(60));
        let registry =
            RegistryClient::new(options, &[host]).map_err(|e| ReferrersError::Client {
                host: host.to_string(),
                message: labforge_core::error_chain(&e),
            })?;
        let scheme = registry.scheme_for(host);
        let protocol = if scheme == "http" {
            ClientProtocol::HttpsExcept(vec![host.to_string()])
        } else {
            ClientProtocol::Https
        };
        let client = Client::try_from(ClientConfig {
            protocol,
            use_monolithic_push: true,
            read_timeout: Some(timeout),
            connect_timeout: Some(Duration::from_secs(10)),
            user_agent: concat!("labforge/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        })
        .map_err(|e| ReferrersError::Client {
            host: host.to_string(),
            message: labforge_core::error_chain(&e),
        })?;
        Ok(Referrers {
            client,
            auth,
            registry,
            host: host.to_string(),
            scheme,
            login,
            locks: Mutex::new(HashMap::new()),
        })
    }

    /// Attach `payload` to the image `repository@subject_digest`
    /// (`repository` = `host/path`) as an artifact of `artifact_type`.
    ///
    /// The subject must be in the registry. Blobs already there are not sent
    /// again. Idempotent: the same payload and annotations give the same
    /// manifest, listed once; and when the newest referrer of this type
    /// already holds the same payload, nothing is pushed (`reused`).
    pub async fn attach(
        &self,
        repository: &str,
        subject_digest: &str,
        artifact_type: &str,
        payload: impl Into<Bytes>,
        annotations: BTreeMap<String, String>,
    ) -> Result<Attached, ReferrersError> {
        let path = self.path_of(repository)?;
        check_digest(subject_digest)?;
        let payload: Bytes = payload.into();
        if payload.is_empty() {
            return Err(ReferrersError::EmptyPayload {
                repository: repository.to_string(),
                digest: subject_digest.to_string(),
                what: artifact_type.to_string(),
            });
        }
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(format!("{path}@{subject_digest}")).or_default())
        };
        let _serialised = lock.lock().await;
        self.ready().await;

        let subject = self.subject(repository, path, subject_digest).await?;
        let payload_digest = format!("sha256:{}", labforge_core::identity::sha256_hex(&payload));

        let listed = self
            .list(repository, subject_digest, Some(artifact_type))
            .await?;
        if let Some(last) = newest(&listed) {
            let (_, layer) = self
                .artifact(repository, path, subject_digest, &last.digest)
                .await?;
            if layer.digest == payload_digest {
                let via_api = self.native_api(path, subject_digest).await?;
                return Ok(Attached {
                    digest: last.digest.clone(),
                    via_api,
                    reused: true,
                });
            }
        }

        let at = Reference::with_digest(
            self.host.clone(),
            path.to_string(),
            subject_digest.to_string(),
        );
        self.push_blob(
            repository,
            subject_digest,
            &at,
            EMPTY_DIGEST,
            Bytes::from_static(EMPTY_CONFIG),
            (
                "check the empty config blob",
                "upload the empty config blob",
            ),
        )
        .await?;
        self.push_blob(
            repository,
            subject_digest,
            &at,
            &payload_digest,
            payload.clone(),
            ("check the payload blob", "upload the payload blob"),
        )
        .await?;

        let manifest = artifact_manifest(
            artifact_type,
            &subject,
            &payload_digest,
            payload.len() as u64,
            &annotations,
        )
        .map_err(|message| ReferrersError::Invalid {
            repository: repository.to_string(),
            digest: subject_digest.to_string(),
            what: "artifact manifest".into(),
            message,
        })?;
        let digest = format!("sha256:{}", labforge_core::identity::sha256_hex(&manifest));
        let via_api = self
            .put_manifest(
                repository,
                path,
                subject_digest,
                &digest,
                Bytes::from(manifest.clone()),
            )
            .await?;
        if !via_api {
            let entry = IndexEntry {
                media_type: OCI_IMAGE_MEDIA_TYPE,
                digest: &digest,
                size: manifest.len() as u64,
                artifact_type,
                annotations: &annotations,
            };
            self.add_to_tag_index(repository, path, subject_digest, &entry)
                .await?;
        }
        Ok(Attached {
            digest,
            via_api,
            reused: false,
        })
    }

    /// The referrers of `repository@subject_digest`, of `artifact_type` if
    /// given, in the registry's order: the referrers API, else the referrers
    /// tag schema, else none.
    pub async fn list(
        &self,
        repository: &str,
        subject_digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, ReferrersError> {
        let path = self.path_of(repository)?;
        check_digest(subject_digest)?;
        self.ready().await;
        let at = Reference::with_digest(
            self.host.clone(),
            path.to_string(),
            subject_digest.to_string(),
        );
        let index = again(|| self.client.pull_referrers(&at, artifact_type))
            .await
            .map_err(|e| match e {
                // Something other than an index under the tag schema's tag.
                OciDistributionError::SpecViolationError(message) => ReferrersError::Invalid {
                    repository: repository.to_string(),
                    digest: subject_digest.to_string(),
                    what: format!("referrers index (tag {})", tag_for(subject_digest)),
                    message,
                },
                e => self.oci_error("list the referrers", repository, subject_digest, e),
            })?;
        index
            .manifests
            .into_iter()
            // The API may ignore the filter (no `OCI-Filters-Applied`).
            .filter(|e| artifact_type.is_none_or(|t| e.artifact_type.as_deref() == Some(t)))
            .map(|e| {
                descriptor(e).map_err(|message| ReferrersError::Invalid {
                    repository: repository.to_string(),
                    digest: subject_digest.to_string(),
                    what: "referrers list".into(),
                    message,
                })
            })
            .collect()
    }

    /// The newest referrer of `artifact_type` (see [`newest`]), with its
    /// payload read and checked; `None` when there is none.
    pub async fn fetch(
        &self,
        repository: &str,
        subject_digest: &str,
        artifact_type: &str,
    ) -> Result<Option<Fetched>, ReferrersError> {
        let path = self.path_of(repository)?;
        let listed = self
            .list(repository, subject_digest, Some(artifact_type))
            .await?;
        let Some(last) = newest(&listed) else {
            return Ok(None);
        };
        let (manifest, layer) = self
            .artifact(repository, path, subject_digest, &last.digest)
            .await?;
        let invalid = |message: String| ReferrersError::Invalid {
            repository: repository.to_string(),
            digest: last.digest.clone(),
            what: "artifact manifest".into(),
            message,
        };
        let size = u64::try_from(layer.size)
            .map_err(|_| invalid(format!("its layer has a negative size {}", layer.size)))?;
        if size > MAX_PAYLOAD {
            return Err(invalid(format!(
                "its payload is {size} bytes, more than the {MAX_PAYLOAD} read into memory"
            )));
        }
        let at = Reference::with_digest(self.host.clone(), path.to_string(), last.digest.clone());
        let out = again(|| async {
            let mut out: Vec<u8> = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            self.client
                .pull_blob(&at, &layer, &mut out)
                .await
                .map(|()| out)
        })
        .await
        .map_err(|e| self.oci_error("read the payload blob", repository, &last.digest, e))?;
        let got = format!("sha256:{}", labforge_core::identity::sha256_hex(&out));
        if got != layer.digest || out.len() as u64 != size {
            return Err(ReferrersError::DigestMismatch {
                repository: repository.to_string(),
                digest: last.digest.clone(),
                what: "payload".into(),
                expected: format!("{} ({size} bytes)", layer.digest),
                got: format!("{got} ({} bytes)", out.len()),
            });
        }
        Ok(Some(Fetched {
            manifest_digest: last.digest.clone(),
            payload: Bytes::from(out),
            annotations: manifest.annotations.unwrap_or_default(),
        }))
    }

    /// `repository` without this client's host.
    fn path_of<'r>(&self, repository: &'r str) -> Result<&'r str, ReferrersError> {
        match repository.split_once('/') {
            Some((host, path)) if host == self.host && !path.is_empty() && !path.ends_with('/') => {
                Ok(path)
            }
            _ => Err(ReferrersError::Repository {
                repository: repository.to_string(),
                host: self.host.clone(),
            }),
        }
    }

    /// Let oci-client's requests carry the login (it only keeps one once a
    /// call that takes it has run).
    async fn ready(&self) {
        self.client
            .store_auth_if_needed(&self.host, &self.auth)
            .await;
    }

    /// The subject's descriptor (media type and size), read by digest.
    async fn subject(
        &self,
        repository: &str,
        path: &str,
        digest: &str,
    ) -> Result<Subject, ReferrersError> {
        let at = Reference::with_digest(self.host.clone(), path.to_string(), digest.to_string());
        let (body, _) = again(|| {
            self.client
                .pull_manifest_raw(&at, &self.auth, MANIFEST_ACCEPT)
        })
        .await
        .map_err(|e| match kind(&e) {
            Kind::NotFound => ReferrersError::SubjectMissing {
                repository: repository.to_string(),
                digest: digest.to_string(),
            },
            _ => self.oci_error("read the image manifest", repository, digest, e),
        })?;
        let media_type = manifest_media_type(&body).map_err(|message| ReferrersError::Invalid {
            repository: repository.to_string(),
            digest: digest.to_string(),
            what: "image manifest".into(),
            message,
        })?;
        Ok(Subject {
            media_type,
            digest: digest.to_string(),
            size: body.len() as u64,
        })
    }

    /// An artifact manifest of `subject` and its single layer.
    async fn artifact(
        &self,
        repository: &str,
        path: &str,
        subject: &str,
        digest: &str,
    ) -> Result<(ArtifactIn, OciDescriptor), ReferrersError> {
        let at = Reference::with_digest(self.host.clone(), path.to_string(), digest.to_string());
        let (body, _) = again(|| {
            self.client
                .pull_manifest_raw(&at, &self.auth, MANIFEST_ACCEPT)
        })
        .await
        .map_err(|e| self.oci_error("read the artifact manifest", repository, digest, e))?;
        let invalid = |message: String| ReferrersError::Invalid {
            repository: repository.to_string(),
            digest: digest.to_string(),
            what: "artifact manifest".into(),
            message,
        };
        let mut manifest: ArtifactIn =
            serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
        match &manifest.subject {
            Some(s) if s.digest == subject => {}
            Some(s) => {
                return Err(invalid(format!(
                    "its subject is {}, not {subject}",
                    s.digest
                )));
            }
            None => return Err(invalid("it has no subject".into())),
        }
        if manifest.layers.len() != 1 {
            return Err(invalid(format!(
                "it has {} layers, not one",
                manifest.layers.len()
            )));
        }
        let layer = manifest.layers.remove(0);
        Ok((manifest, layer))
    }

    async fn push_blob(
        &self,
        repository: &str,
        subject: &str,
        at: &Reference,
        digest: &str,
        data: Bytes,
        (check, upload): (&'static str, &'static str),
    ) -> Result<(), ReferrersError> {
        let present = again(|| self.client.blob_exists(at, digest))
            .await
            .map_err(|e| self.oci_error(check, repository, subject, e))?;
        if !present {
            again(|| self.client.push_blob(at, data.clone(), digest))
                .await
                .map_err(|e| self.oci_error(upload, repository, subject, e))?;
        }
        Ok(())
    }

    /// `PUT` the artifact manifest by digest; `true` when the registry
    /// answered `OCI-Subject` for `subject` (it has the referrers API).
    async fn put_manifest(
        &self,
        repository: &str,
        path: &str,
        subject: &str,
        digest: &str,
        body: Bytes,
    ) -> Result<bool, ReferrersError> {
        let action = "push the artifact manifest";
        let url = format!(
            "{}://{}/v2/{path}/manifests/{digest}",
            self.scheme, self.host
        );
        let image = ImageRef {
            registry: self.host.clone(),
            repository: path.to_string(),
            reference: digest.to_string(),
        };
        let http = self.registry.http();
        let response = self
            .registry
            .send_for_push(&image, &|auth| {
                let request = http
                    .put(&url)
                    .header(CONTENT_TYPE, OCI_IMAGE_MEDIA_TYPE)
                    .body(body.clone());
                match auth {
                    Some(a) => request.header(AUTHORIZATION, a),
                    None => request,
                }
            })
            .await
            .map_err(|e| self.registry_error(action, repository, subject, e))?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if status.is_success() {
            if let Some(got) = header("docker-content-digest")
                && got != digest
            {
                return Err(ReferrersError::DigestMismatch {
                    repository: repository.to_string(),
                    digest: subject.to_string(),
                    what: "artifact manifest".into(),
                    expected: digest.to_string(),
                    got,
                });
            }
            return Ok(header("oci-subject").is_some_and(|s| s == subject));
        }
        let text = response.text().await.unwrap_or_default();
        let message = format!("{status} for {url}: {}", short(&text));
        if matches!(status.as_u16(), 401 | 403) {
            return Err(self.auth_error(action, repository, subject, message));
        }
        Err(ReferrersError::Registry {
            repository: repository.to_string(),
            digest: subject.to_string(),
            action,
            message,
        })
    }

    /// Does the registry answer the referrers API for `subject`?
    async fn native_api(&self, path: &str, subject: &str) -> Result<bool, ReferrersError> {
        let repository = format!("{}/{path}", self.host);
        let url = format!(
            "{}://{}/v2/{path}/referrers/{subject}",
            self.scheme, self.host
        );
        let image = ImageRef {
            registry: self.host.clone(),
            repository: path.to_string(),
            reference: subject.to_string(),
        };
        let http = self.registry.http();
        let response = self
            .registry
            .send_for_push(&image, &|auth| {
                let request = http.get(&url).header(ACCEPT, OCI_IMAGE_INDEX_MEDIA_TYPE);
                match auth {
                    Some(a) => request.header(AUTHORIZATION, a),
                    None => request,
                }
            })
            .await
            .map_err(|e| {
                self.registry_error("ask for the referrers API", &repository, subject, e)
            })?;
        match response.status().as_u16() {
            200 => Ok(true),
            401 | 403 => Err(self.auth_error(
                "ask for the referrers API",
                &repository,
                subject,
                format!("{} for {url}", response.status()),
            )),
            _ => Ok(false),
        }
    }

    /// Add `entry` to the referrers tag-schema index of `subject`, and make
    /// sure it is still there after the `PUT`.
    async fn add_to_tag_index(
        &self,
        repository: &str,
        path: &str,
        subject: &str,
        entry: &IndexEntry<'_>,
    ) -> Result<(), ReferrersError> {
        let tag = tag_for(subject);
        let at = Reference::with_tag(self.host.clone(), path.to_string(), tag.clone());
        let invalid = |message: String| ReferrersError::Invalid {
            repository: repository.to_string(),
            digest: subject.to_string(),
            what: format!("referrers index (tag {tag})"),
            message,
        };
        // `checked`: our entry was seen once after our last `PUT`; it must
        // still be there a moment later, when writers that read the index
        // before that `PUT` have put theirs.
        let mut puts = 0;
        let mut checked = false;
        loop {
            let current = match again(|| {
                self.client
                    .pull_manifest_raw(&at, &self.auth, MANIFEST_ACCEPT)
            })
            .await
            {
                Ok((body, _)) => Some(body),
                Err(e) if kind(&e) == Kind::NotFound => None,
                Err(e) => {
                    return Err(self.oci_error("read the referrers index", repository, subject, e));
                }
            };
            let Some(updated) = with_entry(current.as_deref(), entry).map_err(invalid)? else {
                if puts == 0 || checked {
                    return Ok(());
                }
                checked = true;
                tokio::time::sleep(SETTLE + jitter()).await;
                continue;
            };
            if puts > INDEX_TRIES {
                break;
            }
            if puts > 0 {
                // Lost to another writer: let it finish first.
                tokio::time::sleep(jitter()).await;
            }
            puts += 1;
            checked = false;
            let updated = Bytes::from(updated);
            again(|| {
                self.client.push_manifest_raw(
                    &at,
                    updated.clone(),
                    reqwest::header::HeaderValue::from_static(OCI_IMAGE_INDEX_MEDIA_TYPE),
                )
            })
            .await
            .map_err(|e| self.oci_error("push the referrers index", repository, subject, e))?;
        }
        Err(ReferrersError::IndexRace {
            repository: repository.to_string(),
            tag,
            digest: entry.digest.to_string(),
            tries: INDEX_TRIES,
        })
    }

    fn auth_error(
        &self,
        action: &'static str,
        repository: &str,
        digest: &str,
        message: String,
    ) -> ReferrersError {
        ReferrersError::Auth {
            repository: repository.to_string(),
            digest: digest.to_string(),
            action,
            login: self.login.clone(),
            message,
        }
    }

    fn oci_error(
        &self,
        action: &'static str,
        repository: &str,
        digest: &str,
        e: OciDistributionError,
    ) -> ReferrersError {
        let message = labforge_core::error_chain(&e);
        match kind(&e) {
            Kind::Auth => self.auth_error(action, repository, digest, message),
            Kind::Unreachable => ReferrersError::Unreachable {
                repository: repository.to_string(),
                digest: digest.to_string(),
                action,
                message,
            },
            Kind::NotFound | Kind::Other => ReferrersError::Registry {
                repository: repository.to_string(),
                digest: digest.to_string(),
                action,
                message,
            },
        }
    }

    fn registry_error(
        &self,
        action: &'static str,
        repository: &str,
        digest: &str,
        e: RegistryError,
    ) -> ReferrersError {
        match e {
            RegistryError::Auth { message, .. } => {
                self.auth_error(action, repository, digest, message)
            }
            RegistryError::Unreachable { message, url } => ReferrersError::Unreachable {
                repository: repository.to_string(),
                digest: digest.to_string(),
                action,
                message: format!("{url}: {message}"),
            },
            other => ReferrersError::Registry {
                repository: repository.to_string(),
                digest: digest.to_string(),
                action,
                message: other.to_string(),
            },
        }
    }
}

/// The newest of some referrers: the latest `org.opencontainers.image.created`
/// (RFC 3339; a missing or unreadable one is older than any), and among
/// equals the last in the list (the tag schema appends).
pub fn newest(descriptors: &[Descriptor]) -> Option<&Descriptor> {
    descriptors
        .iter()
        .enumerate()
        .max_by_key(|(i, d)| (d.created().and_then(parse_time), *i))
        .map(|(_, d)| d)
}

/// The referrers tag schema's tag for a digest: `<alg>-<hex>`.
pub fn tag_for(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// 0–100 ms, different from call to call, so that writers that collided do
/// not collide again in step.
fn jitter() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Duration::from_millis(u64::from(nanos % 100))
}

/// Referrers are kept for sha256 manifest digests (all that labforge pushes).
fn check_digest(digest: &str) -> Result<(), ReferrersError> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(ReferrersError::Digest {
            digest: digest.to_string(),
        })
    }
}

/// Run a registry call again (after 50, 100, 200, … ms) while it fails in
/// a way that may pass: a 5xx or 429 answer, or a dropped connection.
/// Distribution 2.8 (filesystem storage) rewrites a tag's link file in
/// place, so a read of the referrers tag while another request rewrites it
/// can get a 500 ("invalid checksum digest format"); every call retried here
/// is a read or an idempotent write.
async fn again<T, F, Fut>(mut call: F) -> Result<T, OciDistributionError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
{
    let mut delay = Duration::from_millis(50);
    for _ in 1..TRANSIENT_TRIES {
        match call().await {
            Err(e) if transient(&e) => {
                tracing::debug!(error = %e, "registry call failed, trying again");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            done => return done,
        }
    }
    call().await
}

fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Toomanyrequests)),
        OciDistributionError::RequestError(r) => {
            !r.is_connect() && (r.is_request() || r.is_body() || r.is_timeout())
        }
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NotFound,
    Auth,
    Unreachable,
    Other,
}

fn kind(e: &OciDistributionError) -> Kind {
    let by_status = |code: u16| match code {
        404 => Kind::NotFound,
        401 | 403 => Kind::Auth,
        _ => Kind::Other,
    };
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => Kind::NotFound,
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => Kind::Auth,
        OciDistributionError::ServerError { code, .. } => by_status(*code),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                Kind::Auth
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                Kind::NotFound
            } else {
                Kind::Other
            }
        }
        OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
            Kind::Unreachable
        }
        OciDistributionError::RequestError(r) => {
            r.status().map_or(Kind::Other, |s| by_status(s.as_u16()))
        }
        _ => Kind::Other,
    }
}

fn short(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// The media type of a manifest: its `mediaType`, else an index when it has
/// `manifests` and an OCI image manifest otherwise (the field is optional in
/// OCI manifests).
fn manifest_media_type(body: &[u8]) -> Result<String, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Versioned {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let v: Versioned = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(match (v.media_type, v.manifests) {
        (Some(m), _) if !m.is_empty() => m,
        (_, Some(_)) => OCI_IMAGE_INDEX_MEDIA_TYPE.to_string(),
        _ => OCI_IMAGE_MEDIA_TYPE.to_string(),
    })
}

fn descriptor(e: ImageIndexEntry) -> Result<Descriptor, String> {
    let size = u64::try_from(e.size)
        .map_err(|_| format!("the entry {} has a negative size {}", e.digest, e.size))?;
    Ok(Descriptor {
        media_type: e.media_type,
        digest: e.digest,
        size,
        artifact_type: e.artifact_type,
        annotations: e.annotations.unwrap_or_default(),
    })
}

struct Subject {
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Desc<'a> {
    media_type: &'a str,
    digest: &'a str,
    size: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactOut<'a> {
    schema_version: u8,
    media_type: &'a str,
    artifact_type: &'a str,
    config: Desc<'a>,
    layers: [Desc<'a>; 1],
    subject: Desc<'a>,
    #[serde(skip_serializing_if = "no_annotations")]
    annotations: &'a BTreeMap<String, String>,
}

fn no_annotations(a: &&BTreeMap<String, String>) -> bool {
    a.is_empty()
}

/// What is read of an artifact manifest.
#[derive(Deserialize)]
struct ArtifactIn {
    #[serde(default)]
    layers: Vec<OciDescriptor>,
    subject: Option<OciDescriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// The artifact manifest's bytes: the same for the same inputs.
fn artifact_manifest(
    artifact_type: &str,
    subject: &Subject,
    payload_digest: &str,
    payload_size: u64,
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    if artifact_type.is_empty() {
        return Err("the artifact type is empty".into());
    }
    serde_json::to_vec(&ArtifactOut {
        schema_version: 2,
        media_type: OCI_IMAGE_MEDIA_TYPE,
        artifact_type,
        config: Desc {
            media_type: EMPTY_MEDIA_TYPE,
            digest: EMPTY_DIGEST,
            size: EMPTY_CONFIG.len() as u64,
        },
        layers: [Desc {
            media_type: artifact_type,
            digest: payload_digest,
            size: payload_size,
        }],
        subject: Desc {
            media_type: &subject.media_type,
            digest: &subject.digest,
            size: subject.size,
        },
        annotations,
    })
    .map_err(|e| e.to_string())
}

/// A referrers-list entry for a pushed artifact manifest.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry<'a> {
    media_type: &'a str,
    digest: &'a str,
    size: u64,
    artifact_type: &'a str,
    #[serde(skip_serializing_if = "no_annotations")]
    annotations: &'a BTreeMap<String, String>,
}

/// The tag-schema index `current` (`None`: the tag is missing, start empty)
/// with `entry` added: `None` when it lists `entry`'s digest already.
/// Everything else in the index (other entries, their fields) is kept.
fn with_entry(current: Option<&[u8]>, entry: &IndexEntry<'_>) -> Result<Option<Vec<u8>>, String> {
    let mut index = match current {
        Some(body) => serde_json::from_slice::<serde_json::Value>(body)
            .map_err(|e| format!("it is not JSON: {e}"))?,
        None => serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_INDEX_MEDIA_TYPE,
            "manifests": [],
        }),
    };
    let Some(object) = index.as_object_mut() else {
        return Err("it is not a JSON object".into());
    };
    match object.get("mediaType").and_then(|m| m.as_str()) {
        Some(OCI_IMAGE_INDEX_MEDIA_TYPE) => {}
        other => {
            return Err(format!(
                "its media type is {}, not an OCI image index; another tool owns this tag",
                other.unwrap_or("(none)")
            ));
        }
    }
    let manifests = object
        .entry("manifests")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    let Some(list) = manifests.as_array_mut() else {
        return Err("its `manifests` is not a list".into());
    };
    if list
        .iter()
        .any(|m| m.get("digest").and_then(|d| d.as_str()) == Some(entry.digest))
    {
        return Ok(None);
    }
    list.push(serde_json::to_value(entry).map_err(|e| e.to_string())?);
    serde_json::to_vec(&index)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// An RFC 3339 time as seconds and nanoseconds since the Unix epoch.
fn parse_time(text: &str) -> Option<(i64, u32)> {
    let b = text.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = text.get(from..to)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &text[start..i.min(start + 9)];
        let value: u32 = digits.parse().ok()?;
        nanos = value * 10u32.pow(9 - digits.len() as u32);
    }
    let offset = match &text[i..] {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && sep(i + 3, b":") => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some((
        days * 86_400 + hour * 3600 + minute * 60 + second - offset,
        nanos,
    ))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_time(text: &str, expect: Option<(i64, u32)>) {
        assert_eq!(parse_time(text), expect, "{text}");
    }

    #[test]
    fn rfc3339_times() {
        check_time("1970-01-01T00:00:00Z", Some((0, 0)));
        check_time("2024-01-01T00:00:00Z", Some((1_704_067_200, 0)));
        check_time("2024-02-29T12:30:15Z", Some((1_709_209_815, 0)));
        check_time("2024-01-01T01:00:00+01:00", Some((1_704_067_200, 0)));
        check_time("2023-12-31T19:00:00-05:00", Some((1_704_067_200, 0)));
        check_time("2024-01-01t00:00:00.5z", Some((1_704_067_200, 500_000_000)));
        check_time(
            "2024-01-01T00:00:00.123456789123Z",
            Some((1_704_067_200, 123_456_789)),
        );
        check_time("1969-12-31T23:59:59Z", Some((-1, 0)));
        for bad in [
            "",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00+01:60",
            "2024-01-01T00:00:00Zjunk",
            "20x4-01-01T00:00:00Z",
            "2024-01-01T00:00:00 UTC",
        ] {
            check_time(bad, None);
        }
    }

    fn desc(digest: &str, created: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: OCI_IMAGE_MEDIA_TYPE.into(),
            digest: digest.into(),
            size: 1,
            artifact_type: Some(SBOM_ARTIFACT_TYPE.into()),
            annotations: created
                .map(|c| BTreeMap::from([(CREATED_ANNOTATION.to_string(), c.to_string())]))
                .unwrap_or_default(),
        }
    }

    #[test]
    fn newest_by_created_time_then_position() {
        let check = |list: &[Descriptor], expect: Option<&str>| {
            assert_eq!(newest(list).map(|d| d.digest.as_str()), expect, "{list:?}");
        };
        check(&[], None);
        check(
            &[
                desc("a", Some("2024-01-02T00:00:00Z")),
                desc("b", Some("2024-01-01T00:00:00Z")),
            ],
            Some("a"),
        );
        // Parsed, not compared as text: .5 seconds is later than none, and
        // an offset moves the instant.
        check(
            &[
                desc("a", Some("2024-01-01T00:00:00.5Z")),
                desc("b", Some("2024-01-01T00:00:00Z")),
            ],
            Some("a"),
        );
        check(
            &[
                desc("a", Some("2024-01-01T00:30:00Z")),
                desc("b", Some("2024-01-01T01:00:00+01:00")),
            ],
            Some("a"),
        );
        check(
            &[
                desc("a", Some("2024-01-01T00:00:00Z")),
                desc("b", Some("2024-01-01T00:00:00Z")),
            ],
            Some("b"),
        );
        check(&[desc("a", None), desc("b", None)], Some("b"));
        check(
            &[
                desc("a", Some("2024-01-01T00:00:00Z")),
                desc("b", None),
                desc("c", Some("yesterday")),
            ],
            Some("a"),
        );
    }

    #[test]
    fn tags_and_digests() {
        let hex = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        assert_eq!(tag_for(&format!("sha256:{hex}")), format!("sha256-{hex}"));
        assert!(check_digest(&format!("sha256:{hex}")).is_ok());
        for bad in [
            hex.to_string(),
            format!("sha512:{hex}"),
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{hex}0"),
            "sha256:".to_string(),
        ] {
            assert!(
                matches!(check_digest(&bad), Err(ReferrersError::Digest { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            format!(
                "sha256:{}",
                labforge_core::identity::sha256_hex(EMPTY_CONFIG)
            ),
            EMPTY_DIGEST
        );
    }

    #[test]
    fn subject_media_types() {
        let check = |body: &str, expect: Result<&str, ()>| {
            assert_eq!(
                manifest_media_type(body.as_bytes()).map_err(|_| ()),
                expect.map(String::from),
                "{body}"
            );
        };
        check(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#,
            Ok(IMAGE_MANIFEST_MEDIA_TYPE),
        );
        check(
            r#"{"schemaVersion":2,"config":{},"layers":[]}"#,
            Ok(OCI_IMAGE_MEDIA_TYPE),
        );
        check(
            r#"{"schemaVersion":2,"manifests":[]}"#,
            Ok(OCI_IMAGE_INDEX_MEDIA_TYPE),
        );
        check("not json", Err(()));
    }

    #[test]
    fn artifact_manifest_is_the_oci_1_1_form_and_deterministic() {
        let subject = Subject {
            media_type: OCI_IMAGE_MEDIA_TYPE.into(),
            digest: "sha256:aa".into(),
            size: 387,
        };
        let annotations = BTreeMap::from([(
            CREATED_ANNOTATION.to_string(),
            "2024-01-01T00:00:00Z".to_string(),
        )]);
        let a = artifact_manifest(SBOM_ARTIFACT_TYPE, &subject, "sha256:bb", 26, &annotations)
            .expect("serialises");
        let b = artifact_manifest(SBOM_ARTIFACT_TYPE, &subject, "sha256:bb", 26, &annotations)
            .expect("serialises");
        assert_eq!(a, b);
        let v: serde_json::Value = serde_json::from_slice(&a).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_IMAGE_MEDIA_TYPE,
                "artifactType": SBOM_ARTIFACT_TYPE,
                "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": EMPTY_DIGEST, "size": 2},
                "layers": [{"mediaType": SBOM_ARTIFACT_TYPE, "digest": "sha256:bb", "size": 26}],
                "subject": {"mediaType": OCI_IMAGE_MEDIA_TYPE, "digest": "sha256:aa", "size": 387},
                "annotations": {CREATED_ANNOTATION: "2024-01-01T00:00:00Z"},
            })
        );
        let bare = artifact_manifest(
            REPORT_ARTIFACT_TYPE,
            &subject,
            "sha256:bb",
            26,
            &BTreeMap::new(),
        )
        .expect("serialises");
        let v: serde_json::Value = serde_json::from_slice(&bare).expect("json");
        assert!(v.get("annotations").is_none());
        assert!(artifact_manifest("", &subject, "sha256:bb", 26, &BTreeMap::new()).is_err());
    }

    #[test]
    fn tag_index_updates() {
        let annotations = BTreeMap::from([(
            CREATED_ANNOTATION.to_string(),
            "2024-01-01T00:00:00Z".to_string(),
        )]);
        let entry = IndexEntry {
            media_type: OCI_IMAGE_MEDIA_TYPE,
            digest: "sha256:cc",
            size: 600,
            artifact_type: SBOM_ARTIFACT_TYPE,
            annotations: &annotations,
        };
        // A missing tag starts an empty index.
        let first = with_entry(None, &entry).expect("valid").expect("changed");
        let v: serde_json::Value = serde_json::from_slice(&first).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_IMAGE_INDEX_MEDIA_TYPE,
                "manifests": [{
                    "mediaType": OCI_IMAGE_MEDIA_TYPE,
                    "digest": "sha256:cc",
                    "size": 600,
                    "artifactType": SBOM_ARTIFACT_TYPE,
                    "annotations": {CREATED_ANNOTATION: "2024-01-01T00:00:00Z"},
                }],
            })
        );
        // Listed already: nothing to push.
        assert_eq!(with_entry(Some(&first), &entry).expect("valid"), None);
        // Other tools' entries and fields are kept, ours is appended.
        let theirs = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_INDEX_MEDIA_TYPE,
            "manifests": [{"mediaType": OCI_IMAGE_MEDIA_TYPE, "digest": "sha256:dd", "size": 5,
                           "artifactType": "application/vnd.dev.sigstore.bundle+json", "x-extra": true}],
            "annotations": {"kept": "yes"},
        });
        let both = with_entry(Some(theirs.to_string().as_bytes()), &entry)
            .expect("valid")
            .expect("changed");
        let v: serde_json::Value = serde_json::from_slice(&both).expect("json");
        assert_eq!(v["annotations"]["kept"], "yes");
        assert_eq!(v["manifests"][0]["x-extra"], true);
        assert_eq!(v["manifests"][0]["digest"], "sha256:dd");
        assert_eq!(v["manifests"][1]["digest"], "sha256:cc");
        // Something else under the tag is not overwritten.
        for bad in [
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#,
            r#"{"schemaVersion":2,"manifests":[]}"#,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":{}}"#,
            "[1,2]",
            "not json",
        ] {
            assert!(with_entry(Some(bad.as_bytes()), &entry).is_err(), "{bad}");
        }
    }
}
