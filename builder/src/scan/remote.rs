//! Reading an image's layers for the package inventory straight from a
//! registry, by manifest digest: the way to scan an image that was built
//! and pushed somewhere else (a BuildKit Job in a cluster) and so is not in
//! the local engine.
//!
//! One `GET` of the manifest (an OCI image manifest or a Docker schema 2
//! manifest; an index is an error), one of the config, then one per
//! distinct layer blob, several at once. Every byte is checked: the manifest
//! against the digest asked for, the config against its descriptor, each
//! layer blob as it arrives against its descriptor (digest and size) and,
//! decompressed by its media type, against its `diff_id` in the config. So
//! the inventory is provably of the image the digest names. A layer is
//! never held in memory: its bytes flow through a small channel into a
//! blocking thread that hashes them, decompresses them and walks the tar
//! with the same reader as the engine sources ([`super::layers`]), keeping
//! only the metadata files the inventory needs; the layers then merge
//! exactly as they do for the engine.
//!
//! Requests go through [`RegistryClient`]: its scheme rule (plain HTTP for
//! loopback and configured insecure registries) and its login (oci-client's
//! token flow after a 401, the same cached `Authorization` header per
//! repository). This module only reads; it never writes to the registry.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufReader, Read};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use labforge_core::identity::sha256_hex;
use serde::Deserialize;
use tracing::Instrument;

use super::layers::{
    self, Hashing, Inventoried, LayerRead, LayersError, MAX_JSON, READ_BUFFER, SOURCE_REGISTRY,
};
use crate::push::export::ChannelReader;
use crate::registry::{ImageRef, RegistryClient, RegistryError};

/// The OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The OCI image index (several platforms).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The Docker manifest list (several platforms).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// What the manifest `GET` accepts: the index types too, so that an index
/// is answered as one and reported as such, not as a missing manifest.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";
/// Image config media types (OCI and Docker).
const CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
/// Layer blobs read at once.
const MAX_PARALLEL: usize = 4;
/// Chunks of one blob in flight between the download and its reader.
const CHANNEL_CHUNKS: usize = 16;
/// A blob `GET` may take this long plus one second per MiB before it is
/// called hung (the client's own timeout is meant for small requests).
const BLOB_BASE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most of an error answer's body kept for the message.
const ERROR_BODY_MAX: usize = 300;

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression of a layer media type: `…tar`, `…tar+gzip` /
/// `…tar.gzip` (Docker's), `…tar+zstd`; anything else (encrypted layers,
/// artifacts) is not a layer the inventory can read.
fn compression_of(media_type: &str) -> Option<Compression> {
    let known = media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.");
    if !known {
        return None;
    }
    if media_type.ends_with(".tar") {
        Some(Compression::None)
    } else if media_type.ends_with(".tar+gzip") || media_type.ends_with(".tar.gzip") {
        Some(Compression::Gzip)
    } else if media_type.ends_with(".tar+zstd") {
        Some(Compression::Zstd)
    } else {
        None
    }
}

/// `sha256:` and 64 lowercase hex digits.
fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Debug, Deserialize)]
struct Config {
    rootfs: Option<RootFs>,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// The package inventory of the registry image `image`, whose `reference`
/// is a manifest digest (`sha256:…`), read from its layers in the registry.
/// [`Inventoried::image_id`] is the config digest (what an engine would
/// call the image ID) and [`Inventoried::source_used`] is
/// [`SOURCE_REGISTRY`]. Every blob is checked against its digest; a
/// mismatch, a missing blob or a layer that fails mid-stream is an error
/// naming the image (`registry/repository@digest`) and the layer.
pub async fn inventory_from_registry(
    client: &RegistryClient,
    image: &ImageRef,
) -> Result<Inventoried, LayersError> {
    let name = pinned(image);
    let span = tracing::info_span!("inventory", image.name = %name);
    inventory_inner(client, image, &name).instrument(span).await
}

/// `registry/repository@digest`.
fn pinned(image: &ImageRef) -> String {
    format!(
        "{}/{}@{}",
        image.registry, image.repository, image.reference
    )
}

async fn inventory_inner(
    client: &RegistryClient,
    image: &ImageRef,
    name: &str,
) -> Result<Inventoried, LayersError> {
    let started = Instant::now();
    if !is_sha256_digest(&image.reference) {
        return Err(LayersError::NotADigest {
            image: name.to_string(),
            reference: image.reference.clone(),
        });
    }
    let base = client.repository_url(image);
    let (config, layer_descriptors) = read_manifest(client, image, name, &base).await?;
    let diff_ids = read_config(client, image, name, &base, &config).await?;
    if diff_ids.len() != layer_descriptors.len() {
        return Err(LayersError::Manifest {
            image: name.to_string(),
            message: format!(
                "the manifest lists {} layers, its config {} diff_ids",
                layer_descriptors.len(),
                diff_ids.len()
            ),
        });
    }
    let count = layer_descriptors.len();
    // Each distinct blob is read once; a repeated layer is applied again.
    let mut seen: HashSet<&str> = HashSet::new();
    let mut jobs = Vec::new();
    for (i, descriptor) in layer_descriptors.iter().enumerate() {
        if !seen.insert(descriptor.digest.as_str()) {
            continue;
        }
        let label = format!("{} ({} of {count})", descriptor.digest, i + 1);
        let compression =
            compression_of(&descriptor.media_type).ok_or_else(|| LayersError::MediaType {
                image: name.to_string(),
                layer: label.clone(),
                media_type: descriptor.media_type.clone(),
            })?;
        jobs.push((label, descriptor.clone(), compression, diff_ids[i].clone()));
    }
    let parallel = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_PARALLEL);
    // In image order: the first failing layer is the one reported.
    let base = base.as_str();
    let reads: Vec<(String, String, LayerRead, u64)> = futures::stream::iter(jobs)
        .map(|(label, descriptor, compression, diff_id)| async move {
            let (read, compressed) =
                read_blob_layer(client, image, name, base, &label, &descriptor, compression)
                    .await?;
            // Checked at once, so that a wrong layer stops the reading.
            if read.digest != diff_id {
                return Err(LayersError::DiffId {
                    image: name.to_string(),
                    layer: label,
                    expected: diff_id,
                    got: read.digest,
                });
            }
            Ok((descriptor.digest, label, read, compressed))
        })
        .buffered(parallel)
        .try_collect()
        .await?;
    let downloaded: u64 = reads.iter().map(|(_, _, _, c)| c).sum();
    let mut by_blob: HashMap<String, LayerRead> = HashMap::new();
    let mut labels: HashMap<String, String> = HashMap::new();
    for (digest, label, read, _) in reads {
        labels.insert(digest.clone(), label);
        by_blob.insert(digest, read);
    }
    // A repeated layer's uncompressed bytes must be what the config says
    // at each place too.
    for (descriptor, diff_id) in layer_descriptors.iter().zip(&diff_ids) {
        let Some(read) = by_blob.get(&descriptor.digest) else {
            continue;
        };
        if &read.digest != diff_id {
            return Err(LayersError::DiffId {
                image: name.to_string(),
                layer: labels
                    .get(&descriptor.digest)
                    .cloned()
                    .unwrap_or_else(|| descriptor.digest.clone()),
                expected: diff_id.clone(),
                got: read.digest.clone(),
            });
        }
    }
    let order: Vec<String> = layer_descriptors.iter().map(|d| d.digest.clone()).collect();
    let stack = layers::in_order(&order, by_blob, name, SOURCE_REGISTRY)?;
    let bytes_read = stack.bytes_read;
    let collected = layers::collect(stack, name).await?;
    tracing::info!(
        image.id = %config.digest,
        layers = count,
        bytes_read,
        bytes_downloaded = downloaded,
        source = SOURCE_REGISTRY,
        packages = collected.inventory.packages.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "inventoried"
    );
    Ok(Inventoried {
        collected,
        image_id: config.digest,
        layers: count,
        bytes_read,
        source_used: SOURCE_REGISTRY,
    })
}

/// `GET` the manifest by digest, check it, and return its config and layer
/// descriptors.
async fn read_manifest(
    client: &RegistryClient,
    image: &ImageRef,
    name: &str,
    base: &str,
) -> Result<(Descriptor, Vec<Descriptor>), LayersError> {
    let url = format!("{base}/manifests/{}", image.reference);
    let what = "manifest";
    let response = get(client, image, name, what, &url, Some(MANIFEST_ACCEPT), None).await?;
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
    let bytes = small_body(response, name, what, &url).await?;
    check_blob(&bytes, name, "the manifest", &image.reference)?;
    let bad = |message: String| LayersError::Manifest {
        image: name.to_string(),
        message,
    };
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON of a manifest: {e}")))?;
    let media_type = manifest.media_type.clone().or(content_type);
    match media_type.as_deref() {
        Some(t @ (OCI_INDEX | DOCKER_MANIFEST_LIST)) => {
            return Err(LayersError::Index {
                image: name.to_string(),
                media_type: t.to_string(),
            });
        }
        None if manifest.manifests.is_some() => {
            return Err(LayersError::Index {
                image: name.to_string(),
                media_type: "an index without a media type".to_string(),
            });
        }
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => {}
        // OCI lets a manifest leave its media type out (and the registry's
        // Content-Type may be generic): its shape says what it is.
        None | Some("application/json" | "application/octet-stream") => {}
        Some(other) => {
            return Err(bad(format!(
                "its media type is {other}; labforge reads {OCI_MANIFEST} and {DOCKER_MANIFEST}"
            )));
        }
    }
    if manifest.schema_version != Some(2) {
        return Err(bad(format!(
            "schemaVersion is {}, not 2",
            manifest
                .schema_version
                .map_or_else(|| "missing".to_string(), |v| v.to_string())
        )));
    }
    let config = manifest
        .config
        .ok_or_else(|| bad("it has no config descriptor".to_string()))?;
    if !CONFIG_TYPES.contains(&config.media_type.as_str()) {
        return Err(bad(format!(
            "its config is {}, not an image config (is it an artifact, such as an SBOM?)",
            config.media_type
        )));
    }
    let layers = manifest
        .layers
        .ok_or_else(|| bad("it has no layers".to_string()))?;
    for d in std::iter::once(&config).chain(&layers) {
        if !is_sha256_digest(&d.digest) {
            return Err(bad(format!(
                "the descriptor digest {:?} is not sha256:<64 hex digits>",
                d.digest
            )));
        }
    }
    Ok((config, layers))
}

/// `GET` the config blob, check it, and return its `rootfs.diff_ids`.
async fn read_config(
    client: &RegistryClient,
    image: &ImageRef,
    name: &str,
    base: &str,
    config: &Descriptor,
) -> Result<Vec<String>, LayersError> {
    let url = format!("{base}/blobs/{}", config.digest);
    let what = format!("config {}", config.digest);
    if config.size > MAX_JSON {
        return Err(LayersError::Manifest {
            image: name.to_string(),
            message: format!(
                "its config is {} bytes, more than the {MAX_JSON} a config may have",
                config.size
            ),
        });
    }
    let response = get(client, image, name, &what, &url, None, None).await?;
    let bytes = small_body(response, name, &what, &url).await?;
    check_blob(&bytes, name, &format!("the {what}"), &config.digest)?;
    let parsed: Config = serde_json::from_slice(&bytes).map_err(|e| LayersError::Manifest {
        image: name.to_string(),
        message: format!("its config {} is not an image config: {e}", config.digest),
    })?;
    let diff_ids = parsed.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if let Some(bad) = diff_ids.iter().find(|d| !is_sha256_digest(d)) {
        return Err(LayersError::Manifest {
            image: name.to_string(),
            message: format!(
                "its config {} has the diff_id {bad:?}, not sha256:<64 hex digits>",
                config.digest
            ),
        });
    }
    Ok(diff_ids)
}

/// The sha256 of a manifest or config must be the digest it was asked by.
fn check_blob(bytes: &[u8], name: &str, what: &str, expected: &str) -> Result<(), LayersError> {
    let got = format!("sha256:{}", sha256_hex(bytes));
    if got == expected {
        Ok(())
    } else {
        Err(LayersError::RegistryDigest {
            image: name.to_string(),
            what: what.to_string(),
            expected: expected.to_string(),
            got,
        })
    }
}

/// An authorized `GET`; anything but 200 is an error naming `what` and the URL.
async fn get(
    client: &RegistryClient,
    image: &ImageRef,
    name: &str,
    what: &str,
    url: &str,
    accept: Option<&str>,
    timeout: Option<Duration>,
) -> Result<reqwest::Response, LayersError> {
    let response = client
        .get_for_pull(image, url, accept, timeout)
        .await
        .map_err(|source| LayersError::Registry {
            image: name.to_string(),
            source,
        })?;
    let status = response.status().as_u16();
    match status {
        200 => Ok(response),
        404 => Err(LayersError::NotInRegistry {
            image: name.to_string(),
            what: what.to_string(),
            url: url.to_string(),
        }),
        401 | 403 => Err(LayersError::Registry {
            image: name.to_string(),
            source: RegistryError::Auth {
                registry: image.registry.clone(),
                message: format!("{status} for {url}"),
            },
        }),
        _ => Err(LayersError::Http {
            image: name.to_string(),
            what: what.to_string(),
            url: url.to_string(),
            status,
            message: short_body(response).await,
        }),
    }
}

/// The body of a manifest or config answer, at most [`MAX_JSON`] bytes.
async fn small_body(
    mut response: reqwest::Response,
    name: &str,
    what: &str,
    url: &str,
) -> Result<Vec<u8>, LayersError> {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if (bytes.len() + chunk.len()) as u64 > MAX_JSON {
                    return Err(LayersError::Manifest {
                        image: name.to_string(),
                        message: format!("its {what} ({url}) is more than {MAX_JSON} bytes"),
                    });
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(bytes),
            Err(e) => {
                return Err(LayersError::Registry {
                    image: name.to_string(),
                    source: RegistryError::Unreachable {
                        url: url.to_string(),
                        message: labforge_core::error_chain(&e),
                    },
                });
            }
        }
    }
}

/// The first bytes of an error answer, for the message.
async fn short_body(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    let text = text.trim();
    match text.char_indices().nth(ERROR_BODY_MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Stream one layer blob into a blocking reader: hashed as it arrives,
/// decompressed, walked. Returns what the layer holds and the compressed
/// bytes received.
async fn read_blob_layer(
    client: &RegistryClient,
    image: &ImageRef,
    name: &str,
    base: &str,
    label: &str,
    descriptor: &Descriptor,
    compression: Compression,
) -> Result<(LayerRead, u64), LayersError> {
    let url = format!("{base}/blobs/{}", descriptor.digest);
    let timeout = BLOB_BASE_TIMEOUT + Duration::from_secs(descriptor.size >> 20);
    let what = format!("layer {label}");
    let response = get(client, image, name, &what, &url, None, Some(timeout)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(CHANNEL_CHUNKS);
    let span = tracing::Span::current();
    let reader = {
        let (name, label, digest) = (
            name.to_string(),
            label.to_string(),
            descriptor.digest.clone(),
        );
        let size = descriptor.size;
        tokio::task::spawn_blocking(move || {
            let _enter = span.enter();
            read_blob(
                ChannelReader::new(rx),
                compression,
                size,
                &digest,
                &name,
                &label,
            )
        })
    };
    let mut stream = response.bytes_stream();
    let mut stream_error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                // The reader stopped (it failed or has all it may take).
                if tx.send(Ok(bytes)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                let message = labforge_core::error_chain(&e);
                let _ = tx.send(Err(io::Error::other(message.clone()))).await;
                stream_error = Some(message);
                break;
            }
        }
    }
    drop(tx);
    let read = reader.await;
    if let Some(message) = stream_error {
        return Err(LayersError::LayerStream {
            image: name.to_string(),
            layer: label.to_string(),
            url,
            message,
        });
    }
    read.map_err(|e| LayersError::Internal {
        image: name.to_string(),
        message: e.to_string(),
    })?
}

/// Read one layer blob from `input` (blocking): the compressed bytes are
/// hashed and counted, then decompressed and walked by [`layers::read_tar`].
/// The blob's digest and size must be its descriptor's; when they are not,
/// that is the error, even if the damaged bytes also failed to decompress.
fn read_blob(
    input: impl Read,
    compression: Compression,
    size: u64,
    digest: &str,
    name: &str,
    label: &str,
) -> Result<(LayerRead, u64), LayersError> {
    // One byte more than the descriptor says is enough to know it is wrong.
    let mut compressed = Hashing::new(input.take(size.saturating_add(1)));
    let read = {
        let buffered = BufReader::with_capacity(READ_BUFFER, &mut compressed);
        match compression {
            Compression::None => layers::read_tar(buffered, name, label),
            Compression::Gzip => {
                layers::read_tar(flate2::bufread::MultiGzDecoder::new(buffered), name, label)
            }
            Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(buffered) {
                Ok(decoder) => layers::read_tar(decoder, name, label),
                Err(e) => Err(LayersError::Layer {
                    image: name.to_string(),
                    layer: label.to_string(),
                    message: format!("zstd: {e}"),
                }),
            },
        }
    };
    // Whatever the decompressor left (nothing, for an intact blob) belongs
    // to the digest too.
    let drained = io::copy(&mut compressed, &mut io::sink());
    let received = compressed.byte_count();
    let got = compressed.digest();
    let read = match (read, drained) {
        (Ok(read), Ok(_)) => Ok(read),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(LayersError::Layer {
            image: name.to_string(),
            layer: label.to_string(),
            message: e.to_string(),
        }),
    };
    match read {
        Ok(read) if got == digest => {
            if received == size {
                Ok((read, received))
            } else {
                Err(LayersError::Manifest {
                    image: name.to_string(),
                    message: format!(
                        "layer {label} is {received} bytes, its descriptor says {size}"
                    ),
                })
            }
        }
        Err(e) if got == digest => Err(e),
        // A damaged blob is reported as one, whatever its bytes did to the
        // decompressor or the tar reader. (A download that broke off is
        // reported as that by the caller.)
        _ => Err(LayersError::RegistryDigest {
            image: name.to_string(),
            what: format!("layer {label}"),
            expected: digest.to_string(),
            got,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &[u8] = b"Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13.dfsg-1\nArchitecture: amd64\n";

    fn layer_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(STATUS.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "var/lib/dpkg/status", STATUS)
            .expect("file");
        let big = vec![3u8; 300 << 10];
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(big.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "usr/bin/big", &big[..])
            .expect("file");
        b.into_inner().expect("tar")
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).expect("gzip");
        gz.finish().expect("gzip")
    }

    fn digest(bytes: &[u8]) -> String {
        format!("sha256:{}", sha256_hex(bytes))
    }

    fn read(
        blob: &[u8],
        compression: Compression,
        digest: &str,
    ) -> Result<(LayerRead, u64), LayersError> {
        read_blob(
            blob,
            compression,
            blob.len() as u64,
            digest,
            "r/img@sha256:00",
            "sha256:ab (1 of 1)",
        )
    }

    #[test]
    fn media_types() {
        for (media_type, expected) in [
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar",
                Some(Compression::None),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
                None,
            ),
            ("application/vnd.cyclonedx+json", None),
            ("application/octet-stream", None),
        ] {
            assert_eq!(compression_of(media_type), expected, "{media_type}");
        }
    }

    #[test]
    fn digests() {
        assert!(is_sha256_digest(&digest(b"x")));
        assert!(!is_sha256_digest("latest"));
        assert!(!is_sha256_digest(&digest(b"x").to_uppercase()));
        assert!(!is_sha256_digest(&format!("{}0", digest(b"x"))));
        assert!(!is_sha256_digest("sha512:abcd"));
        assert!(!is_sha256_digest("sha256:../../etc"));
    }

    #[test]
    fn every_compression_reads_the_same_layer() {
        let tar = layer_tar();
        let zstd = zstd::stream::encode_all(&tar[..], 3).expect("zstd");
        // Two gzip members and two zstd frames, as labforge's chunked
        // compressor writes them.
        let half = tar.len() / 2;
        let mut gzip_members = gzip(&tar[..half]);
        gzip_members.extend(gzip(&tar[half..]));
        let mut zstd_frames = zstd::stream::encode_all(&tar[..half], 1).expect("zstd");
        zstd_frames.extend(zstd::stream::encode_all(&tar[half..], 1).expect("zstd"));
        for (blob, compression) in [
            (tar.clone(), Compression::None),
            (gzip(&tar), Compression::Gzip),
            (gzip_members, Compression::Gzip),
            (zstd, Compression::Zstd),
            (zstd_frames, Compression::Zstd),
        ] {
            let (read, received) =
                read(&blob, compression, &digest(&blob)).expect("an intact layer");
            assert_eq!(received, blob.len() as u64);
            assert_eq!(read.digest, digest(&tar), "{compression:?}");
            assert_eq!(read.bytes, tar.len() as u64);
        }
    }

    #[test]
    fn damaged_blobs_are_digest_errors_whatever_they_do_to_the_decoder() {
        let tar = layer_tar();
        let blob = gzip(&tar);
        let expected = digest(&blob);
        // Bytes flipped in the middle: the inflater or the CRC fails first,
        // but the error is the digest.
        let mut damaged = blob.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0xff;
        // A blob cut short, and one with bytes after its end.
        let cut = blob[..blob.len() - 10].to_vec();
        let mut longer = blob.clone();
        longer.extend_from_slice(b"trailing");
        for bad in [damaged, cut, longer] {
            let err = read_blob(
                &bad[..],
                Compression::Gzip,
                blob.len() as u64,
                &expected,
                "r/img@sha256:00",
                "sha256:ab (1 of 1)",
            )
            .expect_err("damaged");
            match &err {
                LayersError::RegistryDigest {
                    expected: e, what, ..
                } => {
                    assert_eq!(e, &expected);
                    assert_eq!(what, "layer sha256:ab (1 of 1)");
                }
                other => panic!("expected RegistryDigest, got {other:?}"),
            }
            let text = err.to_string();
            assert!(
                text.starts_with("r/img@sha256:00: layer sha256:ab"),
                "{text}"
            );
        }
        // Intact bytes under the wrong media type: what the decoder says,
        // naming the layer.
        let err = read(&blob, Compression::Zstd, &expected).expect_err("not zstd");
        assert!(matches!(err, LayersError::Layer { .. }), "{err}");
        assert!(err.to_string().contains("sha256:ab (1 of 1)"), "{err}");
    }

    #[test]
    fn a_blob_of_the_right_digest_but_another_size_is_refused() {
        let blob = gzip(&layer_tar());
        let err = read_blob(
            &blob[..],
            Compression::Gzip,
            blob.len() as u64 + 5,
            &digest(&blob),
            "r/img@sha256:00",
            "sha256:ab (1 of 1)",
        )
        .expect_err("size");
        assert!(err.to_string().contains("its descriptor says"), "{err}");
    }
}
