//! Reading an engine image's layers for the package inventory: every layer
//! tar is walked once, in image order, and only the files the inventory
//! needs (`labforge_core::scan::inventory::wanted`: os-release, the dpkg
//! status, Python and conda metadata) are kept, with the whiteouts, opaque
//! folders and symlinks that decide which of them survive in the image.
//! Everything else streams past without being buffered, so memory stays at
//! a few read buffers plus the metadata files, whatever the image's size.
//!
//! The bytes are the ones the push reads ([`crate::push`]): by default
//! straight from a local overlay2 engine's layer store (each layer rebuilt
//! from its tar-split metadata and `diff` folder, several layers at once),
//! else from the engine's export API (`docker save`, one stream, whose layer
//! tars may come in any order: `manifest.json` says which is which). Either
//! way every layer's sha256 must equal its `diff_id`, and for the export the
//! config's sha256 must equal the image ID, so the inventory is provably of
//! the image that was inspected. Merging the layers and parsing the files
//! is the core's pure work ([`inventory::Merger`], [`inventory::collect`]).
//!
//! The registry source ([`super::remote`]) feeds its blobs, decompressed,
//! through the same tar reader and merge.
//!
//! This module only reads: one inspect, one export or the engine's folders;
//! it never changes the engine or writes any file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, BufReader, Read};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use labforge_core::scan::inventory::{self, Collected, Layer, Merger};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::engine::{Engine, EngineError};
use crate::push::export::{ChannelReader, SaveManifest, resolve_link};
use crate::push::layerstore::{Assembler, LayerStoreError, LocalImage};
use crate::push::{LayerSource, locate};

/// A file the inventory reads may be at most this big (a dpkg status of a
/// large image is a few MB).
pub const MAX_FILE: u64 = 64 << 20;
/// JSON kept from the export archive (the config, OCI index and manifests),
/// and the most a manifest or config read from a registry may be.
pub(super) const MAX_JSON: u64 = 16 << 20;
/// A file that is not wanted itself but may be the target of a hard link
/// that is (pip and conda metadata linked from a package cache) is kept
/// while its layer is read when it is at most this big.
const MAX_LINK_TARGET: u64 = 1 << 20;
/// Read buffer per layer being read.
pub(super) const READ_BUFFER: usize = 256 << 10;

/// What [`inventory`] found, and how.
#[derive(Debug, Clone)]
pub struct Inventoried {
    pub collected: Collected,
    /// The image ID (`sha256:…`) the layers belong to.
    pub image_id: String,
    /// Layers in the image (a repeated layer counts each time).
    pub layers: usize,
    /// Uncompressed layer bytes read (each distinct layer once).
    pub bytes_read: u64,
    /// [`SOURCE_LAYER_STORE`], [`SOURCE_EXPORT`] or [`SOURCE_REGISTRY`].
    pub source_used: &'static str,
}

pub const SOURCE_LAYER_STORE: &str = "layer store";
pub const SOURCE_EXPORT: &str = "export";
/// The layers were streamed from a registry ([`super::remote`]).
pub const SOURCE_REGISTRY: &str = "registry";

#[derive(Debug, thiserror::Error)]
pub enum LayersError {
    #[error(
        "the Docker Engine has no image {image}: build or pull it first, or give an image ID or reference from `docker images`"
    )]
    NoImage { image: String },
    #[error("cannot inspect {image} in the Docker Engine")]
    Engine {
        image: String,
        #[source]
        source: EngineError,
    },
    #[error("{image}: the engine reports {message}")]
    Inspect { image: String, message: String },
    #[error(
        "{image}: cannot read the engine's layer store; read it through the export API instead"
    )]
    LayerStore {
        image: String,
        #[source]
        source: LayerStoreError,
    },
    #[error("{image}: layer {layer}: {message}")]
    Layer {
        image: String,
        layer: String,
        message: String,
    },
    #[error(
        "{image}: layer {layer}: {path} is {size} bytes, more than the {MAX_FILE} bytes a package metadata file may have"
    )]
    TooBig {
        image: String,
        layer: String,
        path: String,
        size: u64,
    },
    #[error(
        "{image}: layer {layer} hashes to {got}, not to its diff_id {expected}; the image changed while it was read or its storage is damaged: read it again, or through the other source"
    )]
    Digest {
        image: String,
        layer: String,
        expected: String,
        got: String,
    },
    #[error("{image}: reading the image from the engine failed: {message}")]
    Stream { image: String, message: String },
    #[error("{image}: the engine's image archive is not what `docker save` writes: {message}")]
    Archive { image: String, message: String },
    #[error("{image}: the layer reader stopped unexpectedly: {message}")]
    Internal { image: String, message: String },
    #[error(
        "{image}: an image is read from the registry by its manifest digest (sha256:<64 hex digits>), not by {reference:?}"
    )]
    NotADigest { image: String, reference: String },
    #[error("cannot read {image} from the registry")]
    Registry {
        image: String,
        #[source]
        source: crate::registry::RegistryError,
    },
    #[error(
        "{image}: the registry has no {what} (GET {url} answered 404): was the image pushed to this repository, and is the digest right?"
    )]
    NotInRegistry {
        image: String,
        what: String,
        url: String,
    },
    #[error(
        "{image}: GET {url} ({what}) answered {status}{}",
        detail_text(message)
    )]
    Http {
        image: String,
        what: String,
        url: String,
        status: u16,
        message: String,
    },
    #[error(
        "{image} is a multi-platform index ({media_type}), not one image: scan the digest of one platform's manifest"
    )]
    Index { image: String, media_type: String },
    #[error("{image}: not an image manifest labforge can read: {message}")]
    Manifest { image: String, message: String },
    #[error(
        "{image}: layer {layer} has the media type {media_type:?}; the inventory reads only tar layers, plain, gzip or zstd"
    )]
    MediaType {
        image: String,
        layer: String,
        media_type: String,
    },
    #[error(
        "{image}: {what} from the registry hashes to {got}, not to {expected}; the registry's copy is damaged (or something on the way changed it): push the image again"
    )]
    RegistryDigest {
        image: String,
        what: String,
        expected: String,
        got: String,
    },
    #[error(
        "{image}: layer {layer} decompresses to {got}, not to its diff_id {expected} in the image config; the image is inconsistent: build and push it again"
    )]
    DiffId {
        image: String,
        layer: String,
        expected: String,
        got: String,
    },
    #[error("{image}: layer {layer}: reading {url} failed: {message}")]
    LayerStream {
        image: String,
        layer: String,
        url: String,
        message: String,
    },
}

/// `: message`, or nothing for an empty one.
fn detail_text(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// The package inventory of the engine image `image` (a reference or ID),
/// read from its layers.
pub async fn inventory(
    engine: &Engine,
    image: &str,
    source: LayerSource,
) -> Result<Inventoried, LayersError> {
    let span = tracing::info_span!("inventory", image.name = image);
    inventory_inner(engine, image, source)
        .instrument(span)
        .await
}

async fn inventory_inner(
    engine: &Engine,
    image: &str,
    source: LayerSource,
) -> Result<Inventoried, LayersError> {
    let started = Instant::now();
    let (image_id, diff_ids) = inspect(engine, image).await?;
    let read = match source {
        LayerSource::Export => from_export(engine, image, &image_id, &diff_ids).await?,
        LayerSource::LayerStore => from_store(engine, image, &image_id, &diff_ids).await?,
        LayerSource::Auto => match from_store(engine, image, &image_id, &diff_ids).await {
            Ok(read) => read,
            Err(e @ LayersError::TooBig { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(
                    error = %labforge_core::error_chain(&e),
                    "the layer store failed; reading the image through the engine's export API"
                );
                from_export(engine, image, &image_id, &diff_ids).await?
            }
        },
    };
    let bytes_read = read.bytes_read;
    let source_used = read.source_used;
    let collected = collect(read, image).await?;
    tracing::info!(
        image.id = %image_id,
        layers = diff_ids.len(),
        bytes_read,
        source = source_used,
        packages = collected.inventory.packages.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "inventoried"
    );
    Ok(Inventoried {
        collected,
        image_id,
        layers: diff_ids.len(),
        bytes_read,
        source_used,
    })
}

/// Every layer of an image, in image order, and how it was read.
#[derive(Debug)]
pub(super) struct Stack {
    layers: Vec<Part>,
    pub(super) bytes_read: u64,
    pub(super) source_used: &'static str,
}

/// Merge the layers of `stack` and parse the surviving metadata files (on
/// a blocking thread: the parsers are CPU work).
pub(super) async fn collect(stack: Stack, image: &str) -> Result<Collected, LayersError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _enter = span.enter();
        inventory::collect(&merge(stack.layers))
    })
    .await
    .map_err(|e| LayersError::Internal {
        image: image.to_string(),
        message: e.to_string(),
    })
}

/// The image ID and its layers' diff_ids.
async fn inspect(engine: &Engine, image: &str) -> Result<(String, Vec<String>), LayersError> {
    let info = match engine.docker().inspect_image(image).await {
        Ok(info) => info,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            return Err(LayersError::NoImage {
                image: image.to_string(),
            });
        }
        Err(source) => {
            return Err(LayersError::Engine {
                image: image.to_string(),
                source: EngineError::Api {
                    what: format!("inspect image {image}"),
                    source,
                },
            });
        }
    };
    let id = info
        .id
        .filter(|i| i.starts_with("sha256:"))
        .ok_or_else(|| LayersError::Inspect {
            image: image.to_string(),
            message: "no sha256 image ID".into(),
        })?;
    let diff_ids = info.root_fs.and_then(|r| r.layers).unwrap_or_default();
    Ok((id, diff_ids))
}

/// Read the layers from the local engine's layer store, several at once.
async fn from_store(
    engine: &Engine,
    image: &str,
    image_id: &str,
    diff_ids: &[String],
) -> Result<Stack, LayersError> {
    let local =
        locate(engine, image_id, diff_ids)
            .await
            .map_err(|source| LayersError::LayerStore {
                image: image.to_string(),
                source,
            })?;
    let span = tracing::Span::current();
    let name = image.to_string();
    tokio::task::spawn_blocking(move || {
        let _enter = span.enter();
        read_store(&local, &name)
    })
    .await
    .map_err(|e| LayersError::Internal {
        image: image.to_string(),
        message: e.to_string(),
    })?
}

fn read_store(local: &LocalImage, image: &str) -> Result<Stack, LayersError> {
    let all = local.layers();
    // Each distinct layer is read once; a repeated one is applied again.
    let mut seen: HashSet<&str> = HashSet::new();
    let distinct: Vec<usize> = (0..all.len())
        .filter(|&i| seen.insert(all[i].0.as_str()))
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(distinct.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<HashMap<usize, Result<LayerRead, LayersError>>> = Mutex::new(HashMap::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = distinct.get(k) else { break };
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let (diff_id, diff, split) = &all[i];
                    let result = Assembler::open(split, diff)
                        .map_err(|e| LayersError::Layer {
                            image: image.to_string(),
                            layer: diff_id.clone(),
                            message: format!("{}: {e}", split.display()),
                        })
                        .and_then(|input| read_layer(input, image, diff_id))
                        .and_then(|read| check_digest(read, image, diff_id, diff_id));
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut map) = results.lock() {
                        map.insert(i, result);
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().map_err(|e| LayersError::Internal {
        image: image.to_string(),
        message: e.to_string(),
    })?;
    // The first failing layer in image order is the one reported.
    let mut reads: HashMap<String, LayerRead> = HashMap::new();
    for &i in &distinct {
        match results.remove(&i) {
            Some(Ok(read)) => {
                reads.insert(all[i].0.clone(), read);
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    let diff_ids: Vec<String> = all.iter().map(|(d, _, _)| d.clone()).collect();
    in_order(&diff_ids, reads, image, SOURCE_LAYER_STORE)
}

/// Arrange the layers read (keyed by diff_id, archive path or blob digest)
/// in image order.
pub(super) fn in_order(
    order: &[String],
    mut reads: HashMap<String, LayerRead>,
    image: &str,
    source_used: &'static str,
) -> Result<Stack, LayersError> {
    let bytes_read = reads.values().map(|r| r.bytes).sum();
    let mut left: HashMap<&str, usize> = HashMap::new();
    for key in order {
        *left.entry(key.as_str()).or_default() += 1;
    }
    let mut layers = Vec::with_capacity(order.len());
    for key in order {
        let count = left.entry(key.as_str()).or_default();
        *count = count.saturating_sub(1);
        let layer = if *count == 0 {
            reads.remove(key).map(|r| r.part)
        } else {
            reads.get(key).map(|r| r.part.clone())
        };
        layers.push(layer.ok_or_else(|| LayersError::Internal {
            image: image.to_string(),
            message: format!("layer {key} was not read"),
        })?);
    }
    Ok(Stack {
        layers,
        bytes_read,
        source_used,
    })
}

/// Read the layers from the engine's export API (`docker save`).
async fn from_export(
    engine: &Engine,
    image: &str,
    image_id: &str,
    diff_ids: &[String],
) -> Result<Stack, LayersError> {
    let (bytes_tx, bytes_rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(64);
    let span = tracing::Span::current();
    let (name, id, ids) = (image.to_string(), image_id.to_string(), diff_ids.to_vec());
    let reader = tokio::task::spawn_blocking(move || {
        let _enter = span.enter();
        read_archive(ChannelReader::new(bytes_rx), &name, &id, &ids)
    });
    let mut stream = engine.docker().export_image(image_id);
    let mut stream_error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                if bytes_tx.send(Ok(bytes)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                let message = labforge_core::error_chain(&e);
                let _ = bytes_tx.send(Err(io::Error::other(message.clone()))).await;
                stream_error = Some(message);
                break;
            }
        }
    }
    drop(bytes_tx);
    let read = reader.await;
    if let Some(message) = stream_error {
        return Err(LayersError::Stream {
            image: image.to_string(),
            message,
        });
    }
    read.map_err(|e| LayersError::Internal {
        image: image.to_string(),
        message: e.to_string(),
    })?
}

/// Parse a `docker save` archive: each layer tar as it streams by, then
/// `manifest.json` for the order; the config and every layer are checked
/// against the image ID and the diff_ids.
fn read_archive(
    reader: impl io::Read,
    image: &str,
    image_id: &str,
    diff_ids: &[String],
) -> Result<Stack, LayersError> {
    let archive_error = |message: String| LayersError::Archive {
        image: image.to_string(),
        message,
    };
    let stream_error = |e: io::Error| LayersError::Stream {
        image: image.to_string(),
        message: e.to_string(),
    };
    let mut archive = tar::Archive::new(reader);
    let mut manifests: Option<Vec<SaveManifest>> = None;
    let mut json: HashMap<String, Vec<u8>> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let mut layers: HashMap<String, LayerRead> = HashMap::new();
    for entry in archive.entries().map_err(stream_error)? {
        let mut entry = entry.map_err(stream_error)?;
        let path = entry
            .path()
            .map_err(|e| archive_error(format!("an entry name: {e}")))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let kind = entry.header().entry_type();
        let size = entry.size();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry
                .link_name()
                .map_err(|e| archive_error(format!("the link {path}: {e}")))?
            {
                let target = resolve_link(&path, &target.to_string_lossy(), kind.is_hard_link());
                links.insert(path, target);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        if path == "manifest.json" {
            let bytes = read_json(&mut entry, size, &path).map_err(archive_error)?;
            manifests = Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| archive_error(format!("manifest.json: {e}")))?,
            );
        } else if path.ends_with("/layer.tar") && !path.starts_with("blobs/") {
            let read = read_layer(&mut entry, image, &path)?;
            layers.insert(path, read);
        } else if path.starts_with("blobs/") {
            // JSON (a config, index or manifest) or a layer: look at the start.
            let mut head = Vec::with_capacity(512);
            (&mut entry)
                .take(512)
                .read_to_end(&mut head)
                .map_err(stream_error)?;
            if head.first() == Some(&b'{') && size <= MAX_JSON {
                let mut bytes = head;
                entry.read_to_end(&mut bytes).map_err(stream_error)?;
                json.insert(path, bytes);
            } else {
                let read = read_layer(io::Cursor::new(head).chain(&mut entry), image, &path)?;
                layers.insert(path, read);
            }
        } else if !path.contains('/') && path.ends_with(".json") {
            let bytes = read_json(&mut entry, size, &path).map_err(archive_error)?;
            json.insert(path, bytes);
        }
    }
    let manifests = manifests.ok_or_else(|| {
        archive_error("it has no manifest.json (did the engine stop half-way?)".into())
    })?;
    let [entry] = manifests.as_slice() else {
        return Err(archive_error(format!(
            "its manifest.json lists {} images, not one",
            manifests.len()
        )));
    };
    let config = json
        .get(&entry.config)
        .ok_or_else(|| archive_error(format!("it has no config {}", entry.config)))?;
    let config_digest = digest_string(&Sha256::digest(config));
    if config_digest != image_id {
        return Err(archive_error(format!(
            "the engine sent config {config_digest} instead of {image_id} (was the image replaced while it was read?)"
        )));
    }
    if entry.layers.len() != diff_ids.len() {
        return Err(archive_error(format!(
            "it lists {} layers, the image has {}",
            entry.layers.len(),
            diff_ids.len()
        )));
    }
    // Follow links (a repeated layer links to the first copy) to the tar read.
    let mut order = Vec::with_capacity(entry.layers.len());
    for (path, diff_id) in entry.layers.iter().zip(diff_ids) {
        let mut path = path.as_str();
        for _ in 0..8 {
            match links.get(path) {
                Some(target) => path = target,
                None => break,
            }
        }
        let read = layers
            .get(path)
            .ok_or_else(|| archive_error(format!("it has no layer {path}")))?;
        if &read.digest != diff_id {
            return Err(LayersError::Digest {
                image: image.to_string(),
                layer: path.to_string(),
                expected: diff_id.clone(),
                got: read.digest.clone(),
            });
        }
        order.push(path.to_string());
    }
    in_order(&order, layers, image, SOURCE_EXPORT)
}

fn read_json(entry: &mut dyn io::Read, size: u64, path: &str) -> Result<Vec<u8>, String> {
    if size > MAX_JSON {
        return Err(format!("{path} is {size} bytes, too big"));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{path}: {e}"))?;
    Ok(bytes)
}

/// What one layer contributes to the inventory.
#[derive(Debug, Clone, Default)]
pub(super) struct Part {
    layer: Layer,
    /// Hashes ([`path_hash`]) of the paths where this layer puts something
    /// other than a folder or a wanted file: such an entry hides what lower
    /// layers had under that path when it was a folder. Which folders matter
    /// is known only once the lower layers are merged, and layers are read
    /// in parallel, so every such path is remembered, as 8 bytes.
    replaced: HashSet<u64>,
}

/// What one layer tar yields.
#[derive(Debug)]
pub(super) struct LayerRead {
    part: Part,
    /// Uncompressed tar bytes.
    pub(super) bytes: u64,
    /// `sha256:…` of the uncompressed tar (its diff_id when it is intact).
    pub(super) digest: String,
}

fn path_hash(path: &str) -> u64 {
    let mut h = DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

/// Stack the layers bottom-up into the image's wanted files.
fn merge(parts: Vec<Part>) -> BTreeMap<String, Vec<u8>> {
    let mut merger = Merger::new();
    // Every folder that held a wanted file or symlink in a lower layer.
    let mut dirs: HashSet<String> = HashSet::new();
    for Part {
        mut layer,
        replaced,
    } in parts
    {
        if !replaced.is_empty() {
            for dir in &dirs {
                if replaced.contains(&path_hash(dir)) && merger.has_files_under(dir) {
                    layer.whiteouts.push(dir.clone());
                }
            }
        }
        let paths = layer
            .files
            .iter()
            .map(|(p, _)| p)
            .chain(layer.symlinks.iter().map(|(p, _)| p));
        for path in paths {
            let mut rest = path.as_str();
            while let Some(i) = rest.rfind('/') {
                rest = &rest[..i];
                if !dirs.insert(rest.to_string()) {
                    break;
                }
            }
        }
        merger.apply(layer);
    }
    merger.finish()
}

pub(super) fn check_digest(
    read: LayerRead,
    image: &str,
    layer: &str,
    diff_id: &str,
) -> Result<LayerRead, LayersError> {
    if read.digest == diff_id {
        Ok(read)
    } else {
        Err(LayersError::Digest {
            image: image.to_string(),
            layer: layer.to_string(),
            expected: diff_id.to_string(),
            got: read.digest,
        })
    }
}

pub(super) fn digest_string(hash: &[u8]) -> String {
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Counts and hashes what passes through.
pub(super) struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R> Hashing<R> {
    pub(super) fn new(inner: R) -> Hashing<R> {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes read so far.
    pub(super) fn byte_count(&self) -> u64 {
        self.bytes
    }

    /// `sha256:…` of what was read.
    pub(super) fn digest(self) -> String {
        digest_string(&self.hasher.finalize())
    }
}

impl<R: io::Read> io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Walk one layer tar (plain, gzip or zstd: told apart by their first
/// bytes), keeping only what the inventory needs; the whole stream is read
/// (and hashed, uncompressed) to its end.
fn read_layer(input: impl io::Read, image: &str, layer: &str) -> Result<LayerRead, LayersError> {
    let layer_error = |message: String| LayersError::Layer {
        image: image.to_string(),
        layer: layer.to_string(),
        message,
    };
    let mut input = BufReader::with_capacity(READ_BUFFER, input);
    let head = io::BufRead::fill_buf(&mut input)
        .map_err(|e| layer_error(e.to_string()))?
        .get(..4)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let tar: Box<dyn io::Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| layer_error(format!("zstd: {e}")))?,
        )
    } else {
        Box::new(input)
    };
    read_tar(tar, image, layer)
}

/// Walk one uncompressed layer tar, keeping only what the inventory needs;
/// the whole stream is read (and hashed) to its end.
pub(super) fn read_tar(
    tar: impl io::Read,
    image: &str,
    layer: &str,
) -> Result<LayerRead, LayersError> {
    let layer_error = |message: String| LayersError::Layer {
        image: image.to_string(),
        layer: layer.to_string(),
        message,
    };
    let hashing = BufReader::with_capacity(
        READ_BUFFER,
        Hashing {
            inner: tar,
            hasher: Sha256::new(),
            bytes: 0,
        },
    );
    let mut archive = tar::Archive::new(hashing);
    let mut part = Part::default();
    // Hard links to wanted paths, resolved at the end of the layer (their
    // targets come earlier in the same tar): to a wanted file, or to a
    // likely metadata file kept for that purpose (a package cache's copy).
    let mut hard_links: Vec<(String, String)> = Vec::new();
    let mut link_targets: HashMap<String, Vec<u8>> = HashMap::new();
    for entry in archive.entries().map_err(|e| layer_error(e.to_string()))? {
        let mut entry = entry.map_err(|e| layer_error(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| layer_error(format!("an entry name: {e}")))?;
        let name = name.to_string_lossy();
        let path = inventory::normalize(&name);
        if path.is_empty() || part.layer.record_whiteout(path) {
            continue;
        }
        let path = path.to_string();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        let wanted = inventory::wanted(&path).is_some();
        if !wanted {
            part.replaced.insert(path_hash(&path));
        }
        let size = entry.size();
        if kind.is_file() {
            let file_name = path.rsplit('/').next().unwrap_or_default();
            let link_target = size <= MAX_LINK_TARGET && maybe_link_target(file_name);
            if !wanted && !link_target {
                continue;
            }
            if size > MAX_FILE {
                return Err(LayersError::TooBig {
                    image: image.to_string(),
                    layer: layer.to_string(),
                    path,
                    size,
                });
            }
            let mut bytes = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| layer_error(format!("{path}: {e}")))?;
            if wanted {
                part.layer.add_file(&path, bytes);
            } else {
                link_targets.insert(path, bytes);
            }
        } else if wanted && (kind.is_hard_link() || kind.is_symlink()) {
            let Some(target) = entry
                .link_name()
                .map_err(|e| layer_error(format!("the link {path}: {e}")))?
            else {
                continue;
            };
            let target = target.to_string_lossy();
            if kind.is_hard_link() {
                hard_links.push((path, inventory::normalize(&target).to_string()));
            } else {
                part.layer.symlinks.push((path, target.into_owned()));
            }
        }
    }
    for (path, target) in hard_links {
        if let Some((_, bytes)) = part.layer.files.iter().find(|(p, _)| *p == target) {
            let bytes = bytes.clone();
            part.layer.files.push((path, bytes));
        } else if let Some(bytes) = link_targets.get(&target) {
            part.layer.add_file(&path, bytes.clone());
        } else {
            tracing::warn!(
                layer = layer,
                path = %path,
                target = %target,
                "a package metadata file is a hard link to a file that was not kept; it is left out"
            );
            // Whatever lower layers had there is gone all the same.
            part.layer.whiteouts.push(path);
        }
    }
    // The rest of the stream (the end-of-archive blocks) belongs to the digest.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| layer_error(e.to_string()))?;
    let hashing = rest.into_inner();
    Ok(LayerRead {
        part,
        bytes: hashing.bytes,
        digest: digest_string(&hashing.hasher.finalize()),
    })
}

/// A file name that pip or conda metadata may carry when it is the first
/// of several hard links (in a package cache) to a wanted file.
fn maybe_link_target(name: &str) -> bool {
    matches!(name, "METADATA" | "PKG-INFO") || name.ends_with(".egg-info")
}

#[cfg(test)]
mod tests {
    use super::*;

    enum E<'a> {
        File(&'a str, &'a [u8]),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
        Dir(&'a str),
    }

    fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            match e {
                E::File(path, data) => {
                    h.set_size(data.len() as u64);
                    h.set_entry_type(tar::EntryType::Regular);
                    b.append_data(&mut h, path, *data).expect("file");
                }
                E::Symlink(path, target) | E::HardLink(path, target) => {
                    h.set_size(0);
                    h.set_entry_type(if matches!(e, E::Symlink(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    b.append_link(&mut h, path, target).expect("link");
                }
                E::Dir(path) => {
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Directory);
                    b.append_data(&mut h, path, io::empty()).expect("dir");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    fn sha(bytes: &[u8]) -> String {
        digest_string(&Sha256::digest(bytes))
    }

    const STATUS: &[u8] = b"Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13.dfsg-1\nArchitecture: amd64\n";
    const METADATA: &[u8] = b"Metadata-Version: 2.1\nName: attrs\nVersion: 23.2.0\n";

    #[test]
    fn keeps_only_what_the_inventory_needs() {
        let big = vec![7u8; 3 << 20];
        let tar = tar_of(&[
            E::Dir("./etc/"),
            E::Symlink("./etc/os-release", "../usr/lib/os-release"),
            E::File("./usr/lib/os-release", b"ID=debian\nVERSION_ID=\"12\"\n"),
            E::File("./usr/bin/big-binary", &big),
            E::File("./var/lib/dpkg/status", STATUS),
            E::File(
                "./usr/lib/python3/dist-packages/.wh.six-1.16.0.dist-info",
                b"",
            ),
            E::File("./opt/conda/conda-meta/.wh..wh..opq", b""),
            E::File("./.wh..wh.plnk", b""),
            // conda's package cache holds the first copy, the environment a hard link.
            E::File(
                "./opt/conda/pkgs/attrs-23.2.0-py311_0/info/METADATA",
                METADATA,
            ),
            E::HardLink(
                "./opt/conda/lib/python3.11/site-packages/attrs-23.2.0.dist-info/METADATA",
                "./opt/conda/pkgs/attrs-23.2.0-py311_0/info/METADATA",
            ),
            E::HardLink("./usr/bin/other", "./usr/bin/big-binary"),
            // A link to a file that was not kept: it cannot be read, but
            // what lower layers had at that path is gone all the same.
            E::HardLink(
                "./usr/lib/python3/dist-packages/x-1.0.dist-info/METADATA",
                "./usr/share/doc/x/README",
            ),
        ]);
        let read = read_layer(&tar[..], "img", "layer-1").expect("read");
        assert_eq!(read.bytes, tar.len() as u64);
        assert_eq!(read.digest, sha(&tar));
        let files: Vec<(&str, &[u8])> = read
            .part
            .layer
            .files
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect();
        assert_eq!(
            files,
            [
                ("usr/lib/os-release", &b"ID=debian\nVERSION_ID=\"12\"\n"[..]),
                ("var/lib/dpkg/status", STATUS),
                (
                    "opt/conda/lib/python3.11/site-packages/attrs-23.2.0.dist-info/METADATA",
                    METADATA
                ),
            ]
        );
        assert_eq!(
            read.part.layer.whiteouts,
            [
                "usr/lib/python3/dist-packages/six-1.16.0.dist-info",
                "usr/lib/python3/dist-packages/x-1.0.dist-info/METADATA"
            ]
        );
        assert_eq!(read.part.layer.opaque_dirs, ["opt/conda/conda-meta"]);
        assert_eq!(
            read.part.layer.symlinks,
            [(
                "etc/os-release".to_string(),
                "../usr/lib/os-release".to_string()
            )]
        );

        // The same layer compressed: the same result, hashed uncompressed.
        for compressed in [
            gzip(&tar),
            zstd::stream::encode_all(&tar[..], 3).expect("zstd"),
        ] {
            let again = read_layer(&compressed[..], "img", "layer-1").expect("compressed");
            assert_eq!(again.digest, read.digest);
            assert_eq!(again.bytes, read.bytes);
            assert_eq!(again.part.layer.files, read.part.layer.files);
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).expect("gzip");
        gz.finish().expect("gzip")
    }

    #[test]
    fn oversized_and_broken_layers_are_errors_naming_the_file() {
        // A header that announces a dpkg status bigger than the limit.
        let mut h = tar::Header::new_gnu();
        h.set_path("var/lib/dpkg/status").expect("path");
        h.set_size(MAX_FILE + 1);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let err = read_layer(&h.as_bytes()[..], "img", "layer-9").expect_err("too big");
        assert!(matches!(err, LayersError::TooBig { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("var/lib/dpkg/status") && text.contains("layer-9"),
            "{text}"
        );

        // A stream that ends inside a wanted file.
        let tar = tar_of(&[E::File("var/lib/dpkg/status", STATUS)]);
        let err = read_layer(&tar[..600], "img", "layer-2").expect_err("cut");
        assert!(matches!(err, LayersError::Layer { .. }), "{err}");
        assert!(err.to_string().contains("layer-2"), "{err}");
    }

    /// A `docker save` archive: layers in any order, a repeated layer as a
    /// link, `manifest.json` last.
    fn save_archive(
        config: &[u8],
        entries: &[(&str, &[u8])],
        links: &[(&str, &str)],
        layers: &[&str],
    ) -> Vec<u8> {
        let id = sha(config);
        let hex = id.trim_start_matches("sha256:");
        let manifest = serde_json::json!([{
            "Config": format!("{hex}.json"),
            "RepoTags": null,
            "Layers": layers,
        }])
        .to_string();
        let config_path = format!("{hex}.json");
        let mut all: Vec<E<'_>> = entries.iter().map(|(p, b)| E::File(p, b)).collect();
        all.extend(links.iter().map(|(p, t)| E::Symlink(p, t)));
        all.push(E::File(&config_path, config));
        all.push(E::File("manifest.json", manifest.as_bytes()));
        tar_of(&all)
    }

    #[test]
    fn export_layers_are_applied_in_manifest_order() {
        let adds = tar_of(&[E::File("var/lib/dpkg/status", STATUS)]);
        let deletes = tar_of(&[E::File("var/lib/dpkg/.wh.status", b"")]);
        let config = br#"{"rootfs":{"type":"layers"}}"#;
        let id = sha(config);
        // The archive has the deleting layer first; the manifest says it is
        // the second, and the first layer comes back as the third.
        let archive = save_archive(
            config,
            &[("b/layer.tar", &deletes), ("a/layer.tar", &adds)],
            &[("c/layer.tar", "../a/layer.tar")],
            &["a/layer.tar", "b/layer.tar", "c/layer.tar"],
        );
        let diff_ids = [sha(&adds), sha(&deletes), sha(&adds)];
        let read = read_archive(&archive[..], "img", &id, &diff_ids).expect("read");
        assert_eq!(read.source_used, SOURCE_EXPORT);
        assert_eq!(read.bytes_read, (adds.len() + deletes.len()) as u64);
        let shape: Vec<(usize, usize)> = read
            .layers
            .iter()
            .map(|p| (p.layer.files.len(), p.layer.whiteouts.len()))
            .collect();
        assert_eq!(shape, [(1, 0), (0, 1), (1, 0)]);

        // A layer that is not what the image says.
        let wrong = [sha(&adds), sha(&adds), sha(&adds)];
        let err = read_archive(&archive[..], "img", &id, &wrong).expect_err("digest");
        assert!(matches!(err, LayersError::Digest { .. }), "{err}");
        assert!(err.to_string().contains("b/layer.tar"), "{err}");

        // Another image's config.
        let other = format!("sha256:{}", "0".repeat(64));
        let err = read_archive(&archive[..], "img", &other, &diff_ids).expect_err("config");
        assert!(matches!(err, LayersError::Archive { .. }), "{err}");

        // Layers missing from the image's list.
        let err = read_archive(&archive[..], "img", &id, &diff_ids[..2]).expect_err("count");
        assert!(err.to_string().contains("3 layers"), "{err}");

        // No manifest.json: the engine stopped half-way.
        let cut = tar_of(&[E::File("a/layer.tar", &adds)]);
        let err = read_archive(&cut[..], "img", &id, &diff_ids).expect_err("no manifest");
        assert!(err.to_string().contains("manifest.json"), "{err}");
    }

    #[test]
    fn archive_links() {
        assert_eq!(
            resolve_link("2/layer.tar", "../1/layer.tar", false),
            "1/layer.tar"
        );
        assert_eq!(
            resolve_link("2/layer.tar", "1/layer.tar", true),
            "1/layer.tar"
        );
    }

    fn part(entries: &[E<'_>]) -> Part {
        let tar = tar_of(entries);
        read_layer(&tar[..], "img", "layer").expect("read").part
    }

    #[test]
    fn a_link_or_file_in_place_of_a_folder_hides_what_was_in_it() {
        let meta = "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA";
        let six = b"Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\n";
        let lower = part(&[E::File(meta, six), E::File("var/lib/dpkg/status", STATUS)]);
        // A later layer turns dist-packages into a symlink: six is gone.
        let upper = part(&[E::Symlink(
            "usr/lib/python3/dist-packages",
            "/opt/elsewhere",
        )]);
        let files = merge(vec![lower.clone(), upper]);
        assert_eq!(files.keys().collect::<Vec<_>>(), ["var/lib/dpkg/status"]);
        // An unrelated file of the same layer hides nothing.
        let upper = part(&[E::File("usr/lib/python3/other.py", b"x")]);
        let files = merge(vec![lower.clone(), upper]);
        assert_eq!(files.len(), 2);
        // A repeated lower layer brings six back.
        let upper = part(&[E::File("usr/lib/python3/dist-packages", b"not a folder")]);
        let files = merge(vec![lower.clone(), upper, lower]);
        assert!(files.contains_key(meta), "{:?}", files.keys());
    }
}
