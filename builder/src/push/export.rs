//! Reading an image out of the engine: the `docker save` tar stream
//! (bollard's `export_image`), parsed as it arrives on a blocking thread,
//! each layer compressed into a spool file while it streams by.
//!
//! Docker 20.10 writes the legacy layout: `<v1-id>/layer.tar` (or a symlink
//! to another layer's `layer.tar` when a layer repeats), `<v1-id>/json`,
//! `<image-id>.json` (the config, byte for byte as the engine stored it) and
//! `manifest.json` (which config and which layers in which order), usually
//! last. Newer engines add an OCI layout (`blobs/sha256/<hex>`); those blobs
//! are handled too: a blob that starts like JSON and is small is kept in
//! memory (a config or manifest), any other is treated as a layer.
//!
//! Layers are compressed in the order they arrive, before `manifest.json`
//! says what they are; the caller matches them up at the end. A layer is
//! never held in memory: the stream goes through the chunked compressor
//! into a file in the spool folder, which is removed when its [`SpoolFile`]
//! is dropped (after the upload, or on any error).
//!
//! This module only reads from the engine (one `GET /images/{name}/get`); it
//! writes nothing but spool files, and does not talk to registries.

use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use serde::Deserialize;

use super::compress::{self, Compressed, Compression};

/// Files kept in memory (configs, manifests) may be at most this big.
const MAX_SMALL_FILE: u64 = 16 << 20;
/// A blob under `blobs/` this small that starts with `{` is JSON, not a layer.
const MAX_JSON_BLOB: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{image}: reading the image from the engine failed: {message}")]
    Stream { image: String, message: String },
    #[error("{image}: the engine's image archive is not what `docker save` writes: {message}")]
    Format { image: String, message: String },
    #[error(
        "{image}: cannot write the spool file {path}: {source}; is there room in the spool folder?"
    )]
    Spool {
        image: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{image}: the push stopped before the image was read")]
    Cancelled { image: String },
}

/// A spool file: removed from disk when dropped.
#[derive(Debug)]
pub struct SpoolFile {
    path: PathBuf,
}

impl SpoolFile {
    /// A new, unique file name in `dir` (created if missing); the file itself
    /// is created by the writer.
    pub fn new(dir: &Path) -> io::Result<SpoolFile> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        std::fs::create_dir_all(dir)?;
        let name = format!(
            "labforge-push-{}-{}.blob",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        Ok(SpoolFile {
            path: dir.join(name),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a spool file")
            }
        }
    }
}

/// A compressed layer in a spool file.
#[derive(Debug)]
pub struct Spooled {
    pub file: SpoolFile,
    pub compressed: Compressed,
}

/// One `manifest.json` entry of the archive.
#[derive(Debug, Clone, Deserialize)]
pub struct SaveManifest {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "Layers", default)]
    pub layers: Vec<String>,
}

/// What the reader finds, in archive order.
#[derive(Debug)]
pub enum Item {
    /// A layer that starts streaming (for progress output).
    LayerStarted { path: String, size: u64 },
    /// A layer, compressed and spooled.
    Layer { path: String, blob: Spooled },
    /// A layer read past without compressing it (its blob is known already).
    Skipped { path: String },
    /// `path` is a link to the layer `target` (archive paths).
    Link { path: String, target: String },
    /// A small file kept whole (the config is one of these).
    File { path: String, bytes: Vec<u8> },
    /// `manifest.json`.
    Manifest(Vec<SaveManifest>),
}

/// How to read the archive.
pub struct ReadOptions<'a> {
    /// The image, for messages.
    pub image: &'a str,
    pub spool_dir: &'a Path,
    pub compression: Compression,
    pub threads: usize,
    /// `false`: read layers past without compressing them (every layer's
    /// blob is known already; only the config is needed).
    pub compress_layers: bool,
}

/// Read a `docker save` archive from `reader`, handing each [`Item`] to
/// `send` as soon as it is complete. `send` answers `false` when nobody
/// listens any more; reading stops then.
pub fn read_archive(
    reader: impl Read,
    options: &ReadOptions<'_>,
    send: &mut dyn FnMut(Item) -> bool,
) -> Result<(), ExportError> {
    let image = options.image;
    let format = |message: String| ExportError::Format {
        image: image.to_string(),
        message,
    };
    let stream = |e: io::Error| ExportError::Stream {
        image: image.to_string(),
        message: e.to_string(),
    };
    let cancelled = || ExportError::Cancelled {
        image: image.to_string(),
    };
    let mut archive = tar::Archive::new(reader);
    let mut saw_manifest = false;
    for entry in archive.entries().map_err(stream)? {
        let mut entry = entry.map_err(stream)?;
        let path = entry
            .path()
            .map_err(|e| format(format!("an entry name: {e}")))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let kind = entry.header().entry_type();
        let size = entry.size();
        if kind.is_symlink() || kind.is_hard_link() {
            let Some(target) = entry
                .link_name()
                .map_err(|e| format(format!("the link {path}: {e}")))?
            else {
                continue;
            };
            let target = resolve_link(&path, &target.to_string_lossy(), kind.is_hard_link());
            if !send(Item::Link { path, target }) {
                return Err(cancelled());
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let item = if path == "manifest.json" {
            saw_manifest = true;
            let bytes = read_small(&mut entry, size, &path).map_err(|e| format(e.to_string()))?;
            let manifests: Vec<SaveManifest> = serde_json::from_slice(&bytes)
                .map_err(|e| format(format!("manifest.json: {e}")))?;
            Item::Manifest(manifests)
        } else if path.ends_with("/layer.tar") && !path.starts_with("blobs/") {
            layer(&mut entry, &path, size, None, options, send)?
        } else if path.starts_with("blobs/") {
            // JSON (a config or manifest) or a layer: look at the start.
            let mut head = Vec::with_capacity(512);
            (&mut entry)
                .take(512)
                .read_to_end(&mut head)
                .map_err(stream)?;
            if head.first() == Some(&b'{') && size <= MAX_JSON_BLOB {
                let mut bytes = head;
                entry.read_to_end(&mut bytes).map_err(stream)?;
                Item::File { path, bytes }
            } else {
                layer(&mut entry, &path, size, Some(head), options, send)?
            }
        } else if !path.contains('/') && path.ends_with(".json") && size <= MAX_SMALL_FILE {
            let bytes = read_small(&mut entry, size, &path).map_err(|e| format(e.to_string()))?;
            Item::File { path, bytes }
        } else {
            continue;
        };
        if !send(item) {
            return Err(cancelled());
        }
    }
    if !saw_manifest {
        return Err(format(
            "it has no manifest.json (did the engine stop half-way?)".to_string(),
        ));
    }
    Ok(())
}

/// Read one layer entry: compress it into a spool file, or read past it.
fn layer(
    entry: &mut dyn Read,
    path: &str,
    size: u64,
    head: Option<Vec<u8>>,
    options: &ReadOptions<'_>,
    send: &mut dyn FnMut(Item) -> bool,
) -> Result<Item, ExportError> {
    let image = options.image;
    let head = head.unwrap_or_default();
    let mut input = io::Cursor::new(head).chain(entry);
    if !options.compress_layers {
        let read = io::copy(&mut input, &mut io::sink()).map_err(|e| ExportError::Stream {
            image: image.to_string(),
            message: e.to_string(),
        })?;
        check_complete(image, path, read, size)?;
        return Ok(Item::Skipped {
            path: path.to_string(),
        });
    }
    if !send(Item::LayerStarted {
        path: path.to_string(),
        size,
    }) {
        return Err(ExportError::Cancelled {
            image: image.to_string(),
        });
    }
    let spool_error = |path: &Path, source: io::Error| ExportError::Spool {
        image: image.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let file = SpoolFile::new(options.spool_dir).map_err(|e| spool_error(options.spool_dir, e))?;
    let out = std::fs::File::create(file.path()).map_err(|e| spool_error(file.path(), e))?;
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let span = tracing::debug_span!(
        "compress",
        image.name = image,
        layer.path = path,
        layer.size = size
    );
    let _enter = span.enter();
    let compressed = compress::compress(&mut input, &mut out, options.compression, options.threads)
        .map_err(|e| {
            // Reading and writing errors look alike here; the spool path says which.
            if e.kind() == io::ErrorKind::StorageFull || e.raw_os_error().is_some() {
                spool_error(file.path(), e)
            } else {
                ExportError::Stream {
                    image: image.to_string(),
                    message: format!("{path}: {e}"),
                }
            }
        })?;
    check_complete(image, path, compressed.uncompressed, size)?;
    tracing::debug!(blob.digest = %compressed.digest, blob.size = compressed.size, "layer compressed");
    Ok(Item::Layer {
        path: path.to_string(),
        blob: Spooled { file, compressed },
    })
}

/// A stream that ended inside an entry yields fewer bytes than the header
/// said: that layer must never be pushed.
fn check_complete(image: &str, path: &str, read: u64, size: u64) -> Result<(), ExportError> {
    if read == size {
        Ok(())
    } else {
        Err(ExportError::Stream {
            image: image.to_string(),
            message: format!("the stream ended inside {path} ({read} of {size} bytes)"),
        })
    }
}

fn read_small(entry: &mut dyn Read, size: u64, path: &str) -> io::Result<Vec<u8>> {
    if size > MAX_SMALL_FILE {
        return Err(io::Error::other(format!("{path} is {size} bytes, too big")));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The archive path a link points at: symlink targets are relative to the
/// link's folder (`../<id>/layer.tar`), hard-link targets to the archive root.
pub(crate) fn resolve_link(path: &str, target: &str, hard: bool) -> String {
    let mut parts: Vec<&str> = if hard || target.starts_with('/') {
        Vec::new()
    } else {
        let mut p: Vec<&str> = path.split('/').collect();
        p.pop();
        p
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// A blocking reader over the byte chunks the async side receives from the
/// engine: the bridge between bollard's stream and the sync tar parser.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(chunk) => self.current = chunk?,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *data).expect("append");
        }
        for (path, target) in links {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, path, target).expect("link");
        }
        b.into_inner().expect("tar")
    }

    fn read_all(
        archive: &[u8],
        compress_layers: bool,
        spool: &Path,
    ) -> Result<Vec<Item>, ExportError> {
        let mut items = Vec::new();
        let options = ReadOptions {
            image: "test",
            spool_dir: spool,
            compression: Compression::Gzip,
            threads: 2,
            compress_layers,
        };
        read_archive(archive, &options, &mut |i| {
            items.push(i);
            true
        })?;
        Ok(items)
    }

    #[test]
    fn legacy_layout() {
        let spool = tempfile::tempdir().expect("tempdir");
        let layer_a = tar_of(&[("etc/a", b"aaaa")], &[]);
        let manifest =
            br#"[{"Config":"abc.json","RepoTags":null,"Layers":["1/layer.tar","2/layer.tar"]}]"#;
        let archive = tar_of(
            &[
                ("1/VERSION", b"1.0"),
                ("1/json", b"{}"),
                ("1/layer.tar", &layer_a),
                ("abc.json", b"{\"config\":{}}"),
                ("manifest.json", manifest),
                ("repositories", b"{}"),
            ],
            &[("2/layer.tar", "../1/layer.tar")],
        );
        let items = read_all(&archive, true, spool.path()).expect("read");
        let mut spooled = None;
        let mut saw = Vec::new();
        for item in &items {
            match item {
                Item::LayerStarted { path, size } => {
                    assert_eq!(
                        (path.as_str(), *size),
                        ("1/layer.tar", layer_a.len() as u64)
                    )
                }
                Item::Layer { path, blob } => {
                    assert_eq!(path, "1/layer.tar");
                    assert!(blob.file.path().exists());
                    let bytes = std::fs::read(blob.file.path()).expect("spooled");
                    assert_eq!(compress::sha256_digest(&bytes), blob.compressed.digest);
                    let mut back = Vec::new();
                    flate2::read::MultiGzDecoder::new(&bytes[..])
                        .read_to_end(&mut back)
                        .expect("gzip");
                    assert_eq!(back, layer_a);
                    spooled = Some(blob.file.path().to_path_buf());
                }
                Item::Link { path, target } => {
                    assert_eq!(
                        (path.as_str(), target.as_str()),
                        ("2/layer.tar", "1/layer.tar")
                    )
                }
                Item::File { path, .. } => saw.push(path.clone()),
                Item::Manifest(m) => {
                    assert_eq!(m.len(), 1);
                    assert_eq!(m[0].config, "abc.json");
                    assert_eq!(m[0].layers, ["1/layer.tar", "2/layer.tar"]);
                }
                Item::Skipped { .. } => panic!("nothing is skipped"),
            }
        }
        assert_eq!(saw, ["abc.json"]);
        let spooled = spooled.expect("a layer");
        drop(items);
        assert!(!spooled.exists(), "spool files go away with their items");

        let items = read_all(&archive, false, spool.path()).expect("read");
        assert!(items.iter().any(|i| matches!(i, Item::Skipped { .. })));
        assert!(!items.iter().any(|i| matches!(i, Item::Layer { .. })));
        assert_eq!(std::fs::read_dir(spool.path()).expect("ls").count(), 0);
    }

    #[test]
    fn oci_blobs_and_broken_archives() {
        let spool = tempfile::tempdir().expect("tempdir");
        let layer = tar_of(&[("x", b"y")], &[]);
        let archive = tar_of(
            &[
                ("blobs/sha256/aa", b"{\"architecture\":\"amd64\"}"),
                ("blobs/sha256/bb", &layer),
                (
                    "manifest.json",
                    br#"[{"Config":"blobs/sha256/aa","Layers":["blobs/sha256/bb"]}]"#,
                ),
            ],
            &[],
        );
        let items = read_all(&archive, true, spool.path()).expect("read");
        assert!(
            items
                .iter()
                .any(|i| matches!(i, Item::File { path, .. } if path == "blobs/sha256/aa"))
        );
        assert!(
            items
                .iter()
                .any(|i| matches!(i, Item::Layer { path, .. } if path == "blobs/sha256/bb"))
        );
        drop(items);

        // No manifest.json: an error that says so.
        let archive = tar_of(&[("1/layer.tar", &layer)], &[]);
        let err = read_all(&archive, true, spool.path()).expect_err("no manifest");
        assert!(err.to_string().contains("manifest.json"), "{err}");

        // Cut inside a layer: never a blob.
        let big = tar_of(&[("x", &vec![7u8; 100_000])], &[]);
        let archive = tar_of(&[("1/layer.tar", &big)], &[]);
        let cut = &archive[..60_000];
        let err = read_all(cut, true, spool.path()).expect_err("truncated");
        assert!(matches!(err, ExportError::Stream { .. }), "{err}");
        assert_eq!(std::fs::read_dir(spool.path()).expect("ls").count(), 0);

        // Nobody listening: it stops.
        let archive = tar_of(&[("1/layer.tar", &layer), ("manifest.json", b"[]")], &[]);
        let options = ReadOptions {
            image: "test",
            spool_dir: spool.path(),
            compression: Compression::Zstd,
            threads: 1,
            compress_layers: true,
        };
        let err = read_archive(&archive[..], &options, &mut |_| false).expect_err("cancelled");
        assert!(matches!(err, ExportError::Cancelled { .. }));
    }

    #[test]
    fn links() {
        assert_eq!(
            resolve_link("2/layer.tar", "../1/layer.tar", false),
            "1/layer.tar"
        );
        assert_eq!(
            resolve_link("2/layer.tar", "1/layer.tar", true),
            "1/layer.tar"
        );
        assert_eq!(resolve_link("a/b/c", "./d", false), "a/b/d");
    }

    #[test]
    fn channel_reader() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"hello ")))
            .expect("send");
        tx.try_send(Ok(Bytes::from_static(b"world"))).expect("send");
        drop(tx);
        let mut s = String::new();
        ChannelReader::new(rx).read_to_string(&mut s).expect("read");
        assert_eq!(s, "hello world");
    }
}
