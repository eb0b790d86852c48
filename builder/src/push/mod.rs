//! Pushing an image from the Docker Engine to an OCI registry: read it from
//! the engine, compress its layers in parallel, upload each blob streaming
//! (skipping blobs the registry has, mounting blobs it has in another
//! repository), then put an OCI manifest under each tag.
//!
//! Order of work in [`push_image`]:
//!
//! 1. One engine inspect: the image ID (= config digest) and its layer
//!    `diff_id`s.
//! 2. The fast path, when the push cache knows the manifest for (image ID,
//!    compression): `HEAD` the manifest by digest in the target repository;
//!    if absent, `HEAD` each blob and mount missing ones from repositories
//!    where the cache saw them. Only when a blob is neither present nor
//!    mountable does the engine have to be read.
//! 3. Otherwise the image is read from the engine, by default straight
//!    from a local engine's layer store (`layerstore.rs`), else through the
//!    export API (`export.rs`: the `docker save` stream parsed on a blocking
//!    thread). Each layer is compressed (`compress.rs`) into a spool file as
//!    it streams by and uploaded (`upload.rs`) as soon as it is spooled,
//!    while the next layer is being compressed (at most [`MAX_UPLOADS`] at
//!    once). When every layer's blob is known from earlier pushes and is in
//!    the registry, layers are read past uncompressed and only the config is
//!    taken.
//! 4. The manifest: schema 2 OCI manifest, the config exactly as the engine
//!    saved it (so its digest is the engine's image ID), layers `+gzip` or
//!    `+zstd`; serialised deterministically, its sha256 computed here, and
//!    `PUT` under each tag whose current digest differs (content tag first).
//!    The registry's `Docker-Content-Digest` must equal the local digest.
//! 5. The cache records what was learnt (`cache.rs`).
//!
//! Deviation from the export-only design, and why: Docker Engine 20.10
//! answers `GET /images/{name}/get` only after it has copied the whole image
//! into a temporary folder, so on the reference machine (2 CPUs) the first
//! byte of a 1.5 GB image arrives after 17–19 s and the export alone takes
//! about 25 s, more than the whole push may take. So when the engine is
//! local (a `unix://` socket) with the overlay2 driver and its folders are
//! readable, the layers are rebuilt from its layer store the way the engine
//! rebuilds them itself (tar-split metadata plus the layer's files), every
//! layer checked against its `diff_id` and the config against the image
//! ID; anything unusual falls back to the export API ([`LayerSource`]
//! chooses; both give the same bytes, hence the same blobs and manifest).
//!
//! This module never changes the engine (no tag, no pull, no removal) and
//! never deletes anything in a registry; spool files are removed after the
//! push, also after an error.

pub mod cache;
pub mod compress;
pub mod export;
pub mod layerstore;
pub mod upload;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use tracing::Instrument;

pub use compress::Compression;

use crate::engine::{Engine, EngineError};
use crate::registry::{ImageRef, RegistryClient, RegistryError};
use cache::{BlobRecord, Cache, ImageRecord};
use export::{ExportError, Item};
use upload::{Remote, Source};

/// The OCI image config media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Blob uploads running at once while layers are still being compressed.
pub const MAX_UPLOADS: usize = 3;
/// Blob checks and mounts running at once.
const MAX_CHECKS: usize = 8;

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub compression: Compression,
    /// Compression threads (at least 1).
    pub threads: usize,
    /// Retries after the first attempt of each request (429, 5xx, lost connections).
    pub retries: u32,
    /// The first wait between attempts; doubled each time (capped).
    pub retry_delay: Duration,
    /// Where compressed layers are spooled during the push.
    pub spool_dir: PathBuf,
    /// The push cache folder; `None`: no cache (always export from the engine).
    pub cache_dir: Option<PathBuf>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            compression: Compression::Gzip,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            retries: 5,
            retry_delay: Duration::from_secs(1),
            spool_dir: std::env::temp_dir(),
            cache_dir: None,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pushed {
    /// The manifest digest, `sha256:…`.
    pub digest: String,
    /// The config digest (the engine's image ID).
    pub config_digest: String,
    /// Compressed size of all blobs (config and layers).
    pub size: u64,
    /// Bytes sent in blob uploads.
    pub uploaded_bytes: u64,
    pub blobs_uploaded: usize,
    pub blobs_mounted: usize,
    pub blobs_present: usize,
    /// Whether the image had to be read from the engine.
    pub exported: bool,
    /// The tags that point at the manifest now.
    pub tags: Vec<String>,
}

/// Progress, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// Reading the image from the engine starts.
    Exporting {
        image: String,
    },
    /// A layer starts streaming from the engine into the compressor.
    Compressing {
        layer: String,
        size: u64,
    },
    /// A layer is compressed and spooled.
    Compressed {
        layer: String,
        digest: String,
        size: u64,
        uncompressed: u64,
    },
    /// Upload progress of one blob.
    Uploading {
        digest: String,
        bytes: u64,
        total: u64,
    },
    Uploaded {
        digest: String,
        size: u64,
    },
    Mounted {
        digest: String,
        from: String,
    },
    /// The registry has the blob already.
    Present {
        digest: String,
    },
    /// An attempt failed and will be repeated.
    Retry {
        what: String,
        attempt: u32,
        error: String,
    },
    /// The manifest is ready to be tagged.
    Manifest {
        digest: String,
    },
    /// `tag` points at the manifest (`changed`: it was `PUT` now).
    Tagged {
        tag: String,
        changed: bool,
    },
}

/// `sha256:0123456789ab` (the first 12 hex digits) for progress lines.
fn short(digest: &str) -> &str {
    let end = digest.find(':').map_or(0, |i| i + 1) + 12;
    digest.get(..end).unwrap_or(digest)
}

/// Sizes for people: `512 B`, `1.5 MB`, `1.46 GB` (decimal units).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1000.0 {
            break;
        }
        value /= 1000.0;
        unit = u;
    }
    if value < 10.0 {
        format!("{value:.2} {unit}")
    } else if value < 100.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.0} {unit}")
    }
}

/// One progress line.
impl std::fmt::Display for PushEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushEvent::Exporting { image } => write!(f, "reading {image} from the engine"),
            PushEvent::Compressing { layer, size: 0 } => write!(f, "compressing layer {layer}"),
            PushEvent::Compressing { layer, size } => {
                write!(f, "compressing layer {layer} ({})", human_bytes(*size))
            }
            PushEvent::Compressed {
                layer,
                digest,
                size,
                uncompressed,
            } => write!(
                f,
                "compressed layer {layer}: {} → {} {}",
                human_bytes(*uncompressed),
                human_bytes(*size),
                short(digest)
            ),
            PushEvent::Uploading {
                digest,
                bytes,
                total,
            } => write!(
                f,
                "uploading {} {} / {}",
                short(digest),
                human_bytes(*bytes),
                human_bytes(*total)
            ),
            PushEvent::Uploaded { digest, size } => {
                write!(f, "uploaded {} ({})", short(digest), human_bytes(*size))
            }
            PushEvent::Mounted { digest, from } => {
                write!(f, "mounted {} from {from}", short(digest))
            }
            PushEvent::Present { digest } => write!(f, "already there: {}", short(digest)),
            PushEvent::Retry {
                what,
                attempt,
                error,
            } => write!(f, "attempt {attempt} at {what} failed, retrying: {error}"),
            PushEvent::Manifest { digest } => write!(f, "manifest {digest}"),
            PushEvent::Tagged { tag, changed: true } => write!(f, "tagged {tag}"),
            PushEvent::Tagged {
                tag,
                changed: false,
            } => write!(f, "tag {tag} is up to date"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("cannot inspect {image} in the Docker Engine")]
    Engine {
        image: String,
        #[source]
        source: EngineError,
    },
    #[error(
        "the Docker Engine has no image {image}: build it first, or give an image ID or reference from `docker images`"
    )]
    NoImage { image: String },
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("{image}: {message}")]
    Archive { image: String, message: String },
    #[error(
        "{reference} is a {media_type}, not one image manifest: labforge tags single-platform images (for a BuildKit build, leave attestations and multi-platform output off)"
    )]
    NotAnImage {
        reference: String,
        media_type: String,
    },
    #[error("cannot reach the registry at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error(
        "the registry at {registry} answered {status} for {url}: check the credentials for {registry} (LABFORGE_REGISTRY_USERNAME and LABFORGE_REGISTRY_PASSWORD, or `docker login {registry}`) and that they may push there"
    )]
    Denied {
        registry: String,
        url: String,
        status: u16,
    },
    #[error("the registry answered {status} for {url}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error(
        "the registry at {registry} rejected blob {digest} as not matching its digest: {message}; the spooled layer was damaged or changed, push again"
    )]
    DigestInvalid {
        registry: String,
        digest: String,
        message: String,
    },
    #[error(
        "the registry answered digest {got} for the manifest of {reference}, but it is {expected}; the registry changed the manifest, so the push is not trusted"
    )]
    DigestMismatch {
        reference: String,
        expected: String,
        got: String,
    },
    #[error(
        "gave up {what} at the registry {registry} after {attempts} attempts; the last error: {last}"
    )]
    GaveUp {
        what: String,
        registry: String,
        attempts: u32,
        last: Box<PushError>,
    },
    #[error(transparent)]
    Registry(RegistryError),
    #[error("{0}")]
    LayerStore(layerstore::LayerStoreError),
    #[error("{image}: the export stopped unexpectedly: {message}")]
    Internal { image: String, message: String },
}

/// How a blob got into the target repository.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Present,
    Mounted,
    Uploaded(u64),
    /// Not there, not mountable, and no bytes at hand.
    Missing,
}

#[derive(Debug, Default)]
struct Tally {
    uploaded_bytes: u64,
    uploaded: usize,
    mounted: usize,
    present: usize,
}

impl Tally {
    fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Present => self.present += 1,
            Outcome::Mounted => self.mounted += 1,
            Outcome::Uploaded(bytes) => {
                self.uploaded += 1;
                self.uploaded_bytes += bytes;
            }
            Outcome::Missing => {}
        }
    }
}

/// Where the layers are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerSource {
    /// The local engine's layer store when it is readable here (verified
    /// against the diff_ids), else the export API.
    #[default]
    Auto,
    /// Always the engine's export API (`docker save`).
    Export,
    /// Only the local layer store; an error when it is not readable.
    LayerStore,
}

/// Push the engine image `image` (a reference or ID) to `target`'s registry
/// and repository (its reference is ignored) under `tags`, in order (the
/// immutable content tag first, then moving tags). With no tags the manifest
/// is pushed by digest only.
pub async fn push_image(
    engine: &Engine,
    registry: &RegistryClient,
    image: &str,
    target: &ImageRef,
    tags: &[String],
    options: &PushOptions,
    progress: &(dyn Fn(PushEvent) + Send + Sync),
) -> Result<Pushed, PushError> {
    push_image_from(
        engine,
        registry,
        image,
        target,
        tags,
        options,
        progress,
        LayerSource::Auto,
    )
    .await
}

/// [`push_image`], choosing where the layers are read from.
#[allow(clippy::too_many_arguments)]
pub async fn push_image_from(
    engine: &Engine,
    registry: &RegistryClient,
    image: &str,
    target: &ImageRef,
    tags: &[String],
    options: &PushOptions,
    progress: &(dyn Fn(PushEvent) + Send + Sync),
    source: LayerSource,
) -> Result<Pushed, PushError> {
    let span = tracing::info_span!(
        "push",
        image.name = image,
        registry.repository = %format!("{}/{}", target.registry, target.repository),
        compression = %options.compression,
    );
    push_inner(
        engine, registry, image, target, tags, options, progress, source,
    )
    .instrument(span)
    .await
}

#[allow(clippy::too_many_arguments)]
async fn push_inner(
    engine: &Engine,
    registry: &RegistryClient,
    image: &str,
    target: &ImageRef,
    tags: &[String],
    options: &PushOptions,
    progress: &(dyn Fn(PushEvent) + Send + Sync),
    source: LayerSource,
) -> Result<Pushed, PushError> {
    let started = Instant::now();
    let (image_id, diff_ids) = inspect(engine, image).await?;
    tracing::debug!(image.id = %image_id, layers = diff_ids.len(), "inspected");
    let remote = Remote::new(registry, target.clone(), options, progress);
    let cache = options.cache_dir.as_deref().map(Cache::new);

    if let Some(cache) = &cache
        && let Some(record) = cache.image(&image_id, options.compression)
        && let Some(pushed) = from_record(&remote, cache, &record, tags).await?
    {
        tracing::info!(
            manifest.digest = %pushed.digest,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "pushed without reading the engine"
        );
        return Ok(pushed);
    }
    let pushed = export_and_push(
        engine,
        &remote,
        cache.as_ref(),
        image,
        &image_id,
        &diff_ids,
        tags,
        source,
    )
    .await?;
    tracing::info!(
        manifest.digest = %pushed.digest,
        uploaded_bytes = pushed.uploaded_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "pushed"
    );
    Ok(pushed)
}

/// The image ID and layer diff_ids.
async fn inspect(engine: &Engine, image: &str) -> Result<(String, Vec<String>), PushError> {
    match engine.docker().inspect_image(image).await {
        Ok(info) => {
            let id = info
                .id
                .filter(|i| i.starts_with("sha256:"))
                .ok_or_else(|| PushError::Archive {
                    image: image.to_string(),
                    message: "the engine reports no sha256 image ID".into(),
                })?;
            let layers = info.root_fs.and_then(|r| r.layers).unwrap_or_default();
            Ok((id, layers))
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Err(PushError::NoImage {
            image: image.to_string(),
        }),
        Err(source) => Err(PushError::Engine {
            image: image.to_string(),
            source: EngineError::Api {
                what: format!("inspect image {image}"),
                source,
            },
        }),
    }
}

/// Bring one blob into the target repository without the engine: present,
/// or mounted from a repository the cache knows, or uploaded from `source`.
async fn ensure_blob(
    remote: &Remote<'_>,
    cache: Option<&Cache>,
    digest: &str,
    size: u64,
    source: Option<Source<'_>>,
) -> Result<Outcome, PushError> {
    if remote.blob_exists(digest).await? {
        (remote.progress)(PushEvent::Present {
            digest: digest.to_string(),
        });
        return Ok(Outcome::Present);
    }
    if let Some(cache) = cache {
        for from in cache.repositories(&remote.image.registry, digest) {
            if from == remote.image.repository {
                continue;
            }
            if remote.mount(digest, &from).await? {
                (remote.progress)(PushEvent::Mounted {
                    digest: digest.to_string(),
                    from: from.clone(),
                });
                return Ok(Outcome::Mounted);
            }
            // The cache was wrong about it: forget it.
            if let Err(e) =
                cache.note_blobs(&remote.image.registry, &from, &[digest.to_string()], false)
            {
                tracing::warn!(error = %e, "push cache");
            }
        }
        // Not in this repository after all.
        if let Err(e) = cache.note_blobs(
            &remote.image.registry,
            &remote.image.repository,
            &[digest.to_string()],
            false,
        ) {
            tracing::warn!(error = %e, "push cache");
        }
    }
    match source {
        Some(source) => Ok(Outcome::Uploaded(
            remote.upload(digest, size, source).await?,
        )),
        None => Ok(Outcome::Missing),
    }
}

/// Check (and mount where needed) many blobs at once; the outcomes in order.
async fn ensure_known_blobs(
    remote: &Remote<'_>,
    cache: &Cache,
    blobs: &[BlobRecord],
) -> Result<Vec<Outcome>, PushError> {
    // Boxed futures in a plain loop (not stream combinators over borrowing
    // closures), so that the whole push stays `Send` for spawned tasks.
    let mut pending = blobs.iter();
    let mut running: futures::stream::FuturesOrdered<UploadFuture<'_>> =
        futures::stream::FuturesOrdered::new();
    let mut outcomes = Vec::with_capacity(blobs.len());
    loop {
        while running.len() < MAX_CHECKS {
            let Some(b) = pending.next() else { break };
            running.push_back(Box::pin(ensure_blob(
                remote,
                Some(cache),
                &b.digest,
                b.size,
                None,
            )));
        }
        match running.next().await {
            Some(result) => outcomes.push(result?),
            None => return Ok(outcomes),
        }
    }
}

/// The fast path from a cached record; `None` when the engine must be read.
async fn from_record(
    remote: &Remote<'_>,
    cache: &Cache,
    record: &ImageRecord,
    tags: &[String],
) -> Result<Option<Pushed>, PushError> {
    let mut blobs = vec![BlobRecord {
        digest: record.config_digest.clone(),
        size: record.config.len() as u64,
    }];
    blobs.extend(record.layers.iter().map(|(_, b)| b.clone()));
    let mut tally = Tally::default();
    let here = remote.manifest_digest(&record.manifest_digest).await?;
    if here.as_deref() == Some(record.manifest_digest.as_str()) {
        tally.present = blobs.len();
    } else {
        let outcomes = ensure_known_blobs(remote, cache, &blobs).await?;
        if outcomes.contains(&Outcome::Missing) {
            tracing::debug!("a cached blob is neither present nor mountable; reading the engine");
            return Ok(None);
        }
        for o in &outcomes {
            tally.add(o);
        }
    }
    let manifest = Bytes::from(record.manifest.clone().into_bytes());
    if compress::sha256_digest(&manifest) != record.manifest_digest {
        tracing::warn!("a push cache record does not match its digest; ignoring it");
        return Ok(None);
    }
    let tags = put_tags(
        remote,
        &manifest,
        upload::MANIFEST_MEDIA_TYPE,
        &record.manifest_digest,
        tags,
    )
    .await?;
    remember(remote, cache, record);
    Ok(Some(Pushed {
        digest: record.manifest_digest.clone(),
        config_digest: record.config_digest.clone(),
        size: blobs.iter().map(|b| b.size).sum(),
        uploaded_bytes: tally.uploaded_bytes,
        blobs_uploaded: tally.uploaded,
        blobs_mounted: tally.mounted,
        blobs_present: tally.present,
        exported: false,
        tags,
    }))
}

/// Record a pushed image in the cache (failures only warn: it is a cache).
fn remember(remote: &Remote<'_>, cache: &Cache, record: &ImageRecord) {
    let compression = remote.options.compression;
    let mut digests = vec![record.config_digest.clone()];
    digests.extend(record.layers.iter().map(|(_, b)| b.digest.clone()));
    let results = [
        cache.put_image(&record.config_digest, compression, record),
        cache.put_layers(compression, &record.layers),
        cache.note_blobs(
            &remote.image.registry,
            &remote.image.repository,
            &digests,
            true,
        ),
    ];
    for r in results {
        if let Err(e) = r {
            tracing::warn!(error = %e, "push cache");
        }
    }
}

/// Point `tags` at the manifest `digest` that is already in `target`'s
/// repository (read back and checked first). This is how an image that
/// passed the scan gate gets its moving tags after its content tag.
pub async fn tag(
    registry: &RegistryClient,
    target: &ImageRef,
    digest: &str,
    tags: &[String],
    options: &PushOptions,
    progress: &(dyn Fn(PushEvent) + Send + Sync),
) -> Result<Vec<String>, PushError> {
    let remote = Remote::new(registry, target.clone(), options, progress);
    let (manifest, media_type) = remote.get_manifest(digest).await?;
    put_tags(&remote, &manifest, &media_type, digest, tags).await
}

/// Make every tag point at the manifest: `PUT` only where it points elsewhere.
async fn put_tags(
    remote: &Remote<'_>,
    manifest: &Bytes,
    media_type: &str,
    digest: &str,
    tags: &[String],
) -> Result<Vec<String>, PushError> {
    (remote.progress)(PushEvent::Manifest {
        digest: digest.to_string(),
    });
    if tags.is_empty() {
        if remote.manifest_digest(digest).await?.as_deref() != Some(digest) {
            remote
                .put_manifest(digest, manifest, media_type, digest)
                .await?;
        }
        return Ok(Vec::new());
    }
    let mut done = Vec::with_capacity(tags.len());
    for tag in tags {
        let current = remote.manifest_digest(tag).await?;
        let changed = current.as_deref() != Some(digest);
        if changed {
            remote
                .put_manifest(tag, manifest, media_type, digest)
                .await?;
        }
        tracing::debug!(tag = %tag, changed, "tagged");
        (remote.progress)(PushEvent::Tagged {
            tag: tag.clone(),
            changed,
        });
        done.push(tag.clone());
    }
    Ok(done)
}

/// The OCI image manifest, serialised deterministically.
fn manifest_bytes(compression: Compression, config: &BlobRecord, layers: &[BlobRecord]) -> Bytes {
    #[derive(Serialize)]
    struct Descriptor<'a> {
        #[serde(rename = "mediaType")]
        media_type: &'a str,
        digest: &'a str,
        size: u64,
    }
    #[derive(Serialize)]
    struct Manifest<'a> {
        #[serde(rename = "schemaVersion")]
        schema_version: u32,
        #[serde(rename = "mediaType")]
        media_type: &'a str,
        config: Descriptor<'a>,
        layers: Vec<Descriptor<'a>>,
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: upload::MANIFEST_MEDIA_TYPE,
        config: Descriptor {
            media_type: CONFIG_MEDIA_TYPE,
            digest: &config.digest,
            size: config.size,
        },
        layers: layers
            .iter()
            .map(|l| Descriptor {
                media_type: compression.media_type(),
                digest: &l.digest,
                size: l.size,
            })
            .collect(),
    };
    // Serialising plain strings and numbers cannot fail.
    Bytes::from(serde_json::to_vec(&manifest).unwrap_or_default())
}

type UploadFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome, PushError>> + Send + 'a>>;

/// Read the image from the engine and push it.
#[allow(clippy::too_many_arguments)]
async fn export_and_push(
    engine: &Engine,
    remote: &Remote<'_>,
    cache: Option<&Cache>,
    image: &str,
    image_id: &str,
    diff_ids: &[String],
    tags: &[String],
    source: LayerSource,
) -> Result<Pushed, PushError> {
    // One request before the engine is read: a registry that refuses the
    // login or is down fails the push now, not after the export.
    remote.blob_exists(image_id).await?;
    let local = match source {
        LayerSource::Export => None,
        LayerSource::Auto | LayerSource::LayerStore => {
            match locate(engine, image_id, diff_ids).await {
                Ok(local) => Some(local),
                Err(e) if source == LayerSource::Auto => {
                    tracing::debug!(error = %e, "reading the image through the engine API");
                    None
                }
                Err(e) => return Err(PushError::LayerStore(e)),
            }
        }
    };
    if let Some(local) = local {
        match read_and_push(
            engine,
            remote,
            cache,
            image,
            image_id,
            diff_ids,
            tags,
            Some(local),
        )
        .await
        {
            Err(PushError::LayerStore(e)) if source == LayerSource::Auto => {
                tracing::warn!(error = %e, "the layer store failed; reading the image through the engine API");
            }
            other => return other,
        }
    }
    read_and_push(engine, remote, cache, image, image_id, diff_ids, tags, None).await
}

/// The image in the local engine's layer store, if it can be read there.
pub(crate) async fn locate(
    engine: &Engine,
    image_id: &str,
    diff_ids: &[String],
) -> Result<layerstore::LocalImage, layerstore::LayerStoreError> {
    use layerstore::LayerStoreError::Unavailable;
    if !engine.host().starts_with("unix://") {
        return Err(Unavailable(format!(
            "the engine at {} is not local",
            engine.host()
        )));
    }
    let info = engine
        .docker()
        .info()
        .await
        .map_err(|e| Unavailable(format!("engine info: {e}")))?;
    if info.driver.as_deref() != Some("overlay2") {
        return Err(Unavailable(format!(
            "the storage driver is {:?}, not overlay2",
            info.driver
        )));
    }
    let root = info
        .docker_root_dir
        .ok_or_else(|| Unavailable("the engine reports no root folder".into()))?;
    let (image_id, diff_ids) = (image_id.to_string(), diff_ids.to_vec());
    tokio::task::spawn_blocking(move || {
        layerstore::LocalImage::find(std::path::Path::new(&root), &image_id, &diff_ids)
    })
    .await
    .map_err(|e| Unavailable(e.to_string()))?
}

/// Read the image (from the layer store when `local` is given, else
/// through the export API) and push it.
#[allow(clippy::too_many_arguments)]
async fn read_and_push(
    engine: &Engine,
    remote: &Remote<'_>,
    cache: Option<&Cache>,
    image: &str,
    image_id: &str,
    diff_ids: &[String],
    tags: &[String],
    local: Option<layerstore::LocalImage>,
) -> Result<Pushed, PushError> {
    let options = remote.options;
    let compression = options.compression;
    let mut tally = Tally::default();

    // Every layer's blob known and in the registry: read past the layers.
    let mut known_layers: Option<Vec<BlobRecord>> = None;
    if let Some(cache) = cache {
        let known = cache.layers(compression);
        let blobs: Option<Vec<BlobRecord>> =
            diff_ids.iter().map(|d| known.get(d).cloned()).collect();
        if let Some(blobs) = blobs.filter(|b| !b.is_empty()) {
            let outcomes = ensure_known_blobs(remote, cache, &blobs).await?;
            if !outcomes.contains(&Outcome::Missing) {
                for o in &outcomes {
                    tally.add(o);
                }
                known_layers = Some(blobs);
            }
        }
    }
    let compress_layers = known_layers.is_none();
    (remote.progress)(PushEvent::Exporting {
        image: image.to_string(),
    });

    let (bytes_tx, bytes_rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(64);
    let (item_tx, mut item_rx) = tokio::sync::mpsc::channel::<Item>(1);
    let read_options = (
        image.to_string(),
        options.spool_dir.clone(),
        compression,
        options.threads.max(1),
    );
    let from_store = local.is_some();
    let reader = tokio::task::spawn_blocking(move || -> Result<(), PushError> {
        let (image, spool_dir, compression, threads) = read_options;
        let options = export::ReadOptions {
            image: &image,
            spool_dir: &spool_dir,
            compression,
            threads,
            compress_layers,
        };
        let mut send = |item| item_tx.blocking_send(item).is_ok();
        match local {
            Some(local) => {
                layerstore::read_image(&local, &options, &mut send).map_err(PushError::LayerStore)
            }
            None => export::read_archive(export::ChannelReader::new(bytes_rx), &options, &mut send)
                .map_err(PushError::Export),
        }
    });
    let docker = engine.docker().clone();
    let id = image_id.to_string();
    let pump = async move {
        if from_store {
            return Ok(());
        }
        let mut stream = docker.export_image(&id);
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    if bytes_tx.send(Ok(bytes)).await.is_err() {
                        return Ok(());
                    }
                }
                Err(e) => {
                    let message = labforge_core::error_chain(&e);
                    let _ = bytes_tx
                        .send(Err(std::io::Error::other(message.clone())))
                        .await;
                    return Err(message);
                }
            }
        }
        Ok(())
    };

    let collected = collect(remote, cache, image, pump, &mut item_rx, &mut tally).await;
    // Stop the reader (its input and output are gone) and wait for it, so
    // that its spool files are removed before this returns.
    drop(item_rx);
    let read = reader.await;
    let collected = collected?;
    match read {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => {
            return Err(PushError::Internal {
                image: image.to_string(),
                message: e.to_string(),
            });
        }
    }

    // Match the archive's layers to the image's diff_ids.
    let archive_error = |message: String| PushError::Archive {
        image: image.to_string(),
        message,
    };
    let Collected {
        mut files,
        layers,
        links,
        manifests,
    } = collected;
    let [entry] = manifests.as_slice() else {
        return Err(archive_error(format!(
            "the archive's manifest.json lists {} images, not one",
            manifests.len()
        )));
    };
    let config = files
        .remove(&entry.config)
        .ok_or_else(|| archive_error(format!("the archive has no config {}", entry.config)))?;
    let config_digest = compress::sha256_digest(&config);
    if config_digest != image_id {
        return Err(archive_error(format!(
            "the engine sent config {config_digest} instead of {image_id} (was the image replaced during the push?)"
        )));
    }
    if entry.layers.len() != diff_ids.len() {
        return Err(archive_error(format!(
            "the archive lists {} layers, the image has {}",
            entry.layers.len(),
            diff_ids.len()
        )));
    }
    let layer_blobs: Vec<BlobRecord> = match known_layers {
        Some(known) => known,
        None => entry
            .layers
            .iter()
            .map(|path| {
                let mut path = path.as_str();
                for _ in 0..8 {
                    match links.get(path) {
                        Some(target) => path = target,
                        None => break,
                    }
                }
                layers
                    .get(path)
                    .cloned()
                    .ok_or_else(|| archive_error(format!("the archive has no layer {path}")))
            })
            .collect::<Result<_, _>>()?,
    };

    let config = Bytes::from(config);
    let config_blob = BlobRecord {
        digest: config_digest.clone(),
        size: config.len() as u64,
    };
    let outcome = ensure_blob(
        remote,
        cache,
        &config_digest,
        config_blob.size,
        Some(Source::Memory(&config)),
    )
    .await?;
    tally.add(&outcome);

    let manifest = manifest_bytes(compression, &config_blob, &layer_blobs);
    let digest = compress::sha256_digest(&manifest);
    let tags = put_tags(
        remote,
        &manifest,
        upload::MANIFEST_MEDIA_TYPE,
        &digest,
        tags,
    )
    .await?;

    let record = ImageRecord {
        manifest: String::from_utf8_lossy(&manifest).into_owned(),
        manifest_digest: digest.clone(),
        config: String::from_utf8_lossy(&config).into_owned(),
        config_digest: config_digest.clone(),
        layers: diff_ids
            .iter()
            .cloned()
            .zip(layer_blobs.iter().cloned())
            .collect(),
    };
    if let Some(cache) = cache {
        // A config that is not UTF-8 cannot be cached as text; skip the image record then.
        if record.config.as_bytes() == &config[..] {
            remember(remote, cache, &record);
        } else if let Err(e) = cache.put_layers(compression, &record.layers) {
            tracing::warn!(error = %e, "push cache");
        }
    }
    Ok(Pushed {
        digest,
        config_digest,
        size: config_blob.size + layer_blobs.iter().map(|b| b.size).sum::<u64>(),
        uploaded_bytes: tally.uploaded_bytes,
        blobs_uploaded: tally.uploaded,
        blobs_mounted: tally.mounted,
        blobs_present: tally.present,
        exported: true,
        tags,
    })
}

/// What the export yielded, besides the uploads it started.
#[derive(Default)]
struct Collected {
    files: HashMap<String, Vec<u8>>,
    /// Archive path → compressed blob.
    layers: HashMap<String, BlobRecord>,
    links: HashMap<String, String>,
    manifests: Vec<export::SaveManifest>,
}

/// Drive the engine stream and the reader's items; upload each spooled
/// layer while later ones are compressed. Returns when the archive is read
/// and every upload is done.
async fn collect(
    remote: &Remote<'_>,
    cache: Option<&Cache>,
    image: &str,
    pump: impl Future<Output = Result<(), String>>,
    items: &mut tokio::sync::mpsc::Receiver<Item>,
    tally: &mut Tally,
) -> Result<Collected, PushError> {
    let mut out = Collected::default();
    let mut uploads: FuturesUnordered<UploadFuture<'_>> = FuturesUnordered::new();
    let mut started: HashSet<String> = HashSet::new();
    let mut items_done = false;
    let mut pump_done = false;
    tokio::pin!(pump);
    loop {
        tokio::select! {
            result = &mut pump, if !pump_done => {
                pump_done = true;
                if let Err(message) = result {
                    return Err(ExportError::Stream { image: image.to_string(), message }.into());
                }
            }
            item = items.recv(), if !items_done && uploads.len() < MAX_UPLOADS => {
                match item {
                    None => items_done = true,
                    Some(Item::LayerStarted { path, size }) => {
                        (remote.progress)(PushEvent::Compressing { layer: path, size });
                    }
                    Some(Item::Layer { path, blob }) => {
                        let c = blob.compressed.clone();
                        (remote.progress)(PushEvent::Compressed {
                            layer: path.clone(),
                            digest: c.digest.clone(),
                            size: c.size,
                            uncompressed: c.uncompressed,
                        });
                        out.layers.insert(path, BlobRecord { digest: c.digest.clone(), size: c.size });
                        if started.insert(c.digest.clone()) {
                            uploads.push(Box::pin(async move {
                                let outcome = ensure_blob(remote, cache, &c.digest, c.size, Some(Source::File(blob.file.path()))).await;
                                // The spool file goes when `blob` is dropped, here.
                                drop(blob);
                                outcome
                            }));
                        }
                    }
                    Some(Item::Skipped { .. }) => {}
                    Some(Item::Link { path, target }) => {
                        out.links.insert(path, target);
                    }
                    Some(Item::File { path, bytes }) => {
                        out.files.insert(path, bytes);
                    }
                    Some(Item::Manifest(m)) => out.manifests.extend(m),
                }
            }
            Some(result) = uploads.next(), if !uploads.is_empty() => {
                tally.add(&result?);
            }
            else => break,
        }
    }
    Ok(out)
}

/// A push can run in a spawned task (the build pipeline runs several).
#[allow(dead_code)]
fn spawnable(engine: Engine, registry: RegistryClient, target: ImageRef) {
    tokio::spawn(async move {
        let options = PushOptions::default();
        let progress = |_: PushEvent| {};
        let _ = push_image(&engine, &registry, "x", &target, &[], &options, &progress).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_is_deterministic_oci() {
        let config = BlobRecord {
            digest: "sha256:c".into(),
            size: 3,
        };
        let layers = vec![BlobRecord {
            digest: "sha256:l".into(),
            size: 9,
        }];
        let a = manifest_bytes(Compression::Zstd, &config, &layers);
        assert_eq!(a, manifest_bytes(Compression::Zstd, &config, &layers));
        assert_eq!(
            std::str::from_utf8(&a).expect("utf8"),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":3},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"sha256:l","size":9}]}"#
        );
    }

    #[test]
    fn progress_lines() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000_000), "1.50 GB");
        assert_eq!(human_bytes(52_428_800), "52.4 MB");
        let e = PushEvent::Uploading {
            digest: format!("sha256:{}", "a".repeat(64)),
            bytes: 1_000_000,
            total: 2_000_000,
        };
        assert_eq!(
            e.to_string(),
            "uploading sha256:aaaaaaaaaaaa 1.00 MB / 2.00 MB"
        );
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = PushError::Denied {
            registry: "r:5000".into(),
            url: "http://r:5000/v2/x/blobs/uploads/".into(),
            status: 403,
        };
        assert!(
            e.to_string().contains("check the credentials for r:5000"),
            "{e}"
        );
        let e = PushError::GaveUp {
            what: "uploading blob sha256:a".into(),
            registry: "r:5000".into(),
            attempts: 4,
            last: Box::new(PushError::Unreachable {
                url: "http://r:5000/v2/".into(),
                message: "connection refused".into(),
            }),
        };
        assert!(e.to_string().contains("after 4 attempts"), "{e}");
        assert!(e.to_string().contains("connection refused"), "{e}");
    }
}
