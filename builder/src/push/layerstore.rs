//! Reading an image's layers straight from a local engine's layer store,
//! byte for byte as `docker save` would send them, without `docker save`.
//!
//! Why: Docker Engine 20.10 answers `GET /images/{name}/get` only after it
//! has copied the whole image into a temporary folder (and hashed it), so
//! for a 1.5 GB image the first byte arrives after about 17–19 s and the
//! export alone takes 25–28 s on the reference machine — longer than the
//! whole push may take. When the engine is local (a `unix://` socket), uses
//! the `overlay2` driver and its root folder is readable (labforge runs as
//! root next to it), each layer is rebuilt here the way the engine itself
//! rebuilds it for `docker push` and `docker save`: the layer's
//! `tar-split.json.gz` holds every tar header and padding byte, and the file
//! contents come from the layer's `diff` folder. The config comes from the
//! image database, byte for byte.
//!
//! Nothing is trusted: the sha256 of each rebuilt layer must equal its
//! `diff_id`, and the config's sha256 must equal the image ID; on any
//! mismatch or missing file the push falls back to the export API. This
//! module only reads the engine's folders, never writes or locks them.
//! It yields the same [`Item`]s as `export.rs`, so everything after it is shared.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::compress;
use super::export::{Item, ReadOptions, SaveManifest, SpoolFile, Spooled};

#[derive(Debug, thiserror::Error)]
pub enum LayerStoreError {
    #[error("the engine's layer store is not readable here: {0}")]
    Unavailable(String),
    #[error("layer {diff_id}: {message}")]
    Layer { diff_id: String, message: String },
    #[error("cannot write the spool file {path}: {source}")]
    Spool {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the push stopped before the layers were read")]
    Cancelled,
}

/// Where one image's pieces are in a local engine's root folder.
#[derive(Debug, Clone)]
pub struct LocalImage {
    config: PathBuf,
    /// (diff_id, the layer's `diff` folder, its `tar-split.json.gz`).
    layers: Vec<(String, PathBuf, PathBuf)>,
}

impl LocalImage {
    /// Find `image_id` and its layers under `root` (the engine's
    /// `DockerRootDir`, overlay2 driver). Every file is checked to exist.
    pub fn find(
        root: &Path,
        image_id: &str,
        diff_ids: &[String],
    ) -> Result<LocalImage, LayerStoreError> {
        let unavailable = |m: String| LayerStoreError::Unavailable(m);
        let hex = |d: &str| -> Result<String, LayerStoreError> {
            let h = d.strip_prefix("sha256:").unwrap_or("");
            if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(h.to_string())
            } else {
                Err(unavailable(format!("{d} is not a sha256 digest")))
            }
        };
        let store = root.join("image/overlay2");
        let config = store.join("imagedb/content/sha256").join(hex(image_id)?);
        if !config.is_file() {
            return Err(unavailable(format!("no {}", config.display())));
        }
        let mut layers = Vec::with_capacity(diff_ids.len());
        let mut chain = String::new();
        for diff_id in diff_ids {
            hex(diff_id)?;
            // The chain ID: sha256("<parent chain ID> <diff_id>"), the first one the diff_id.
            chain = if chain.is_empty() {
                diff_id.clone()
            } else {
                compress::sha256_digest(format!("{chain} {diff_id}").as_bytes())
            };
            let meta = store.join("layerdb/sha256").join(hex(&chain)?);
            let cache_id = std::fs::read_to_string(meta.join("cache-id"))
                .map_err(|e| unavailable(format!("{}: {e}", meta.join("cache-id").display())))?;
            let cache_id = cache_id.trim();
            if cache_id.is_empty() || cache_id.contains('/') || cache_id.contains("..") {
                return Err(unavailable(format!(
                    "odd cache-id {cache_id:?} in {}",
                    meta.display()
                )));
            }
            let split = meta.join("tar-split.json.gz");
            let diff = root.join("overlay2").join(cache_id).join("diff");
            if !split.is_file() || !diff.is_dir() {
                return Err(unavailable(format!(
                    "no {} or {}",
                    split.display(),
                    diff.display()
                )));
            }
            layers.push((diff_id.clone(), diff, split));
        }
        Ok(LocalImage { config, layers })
    }

    /// Each layer in image order: (diff_id, its `diff` folder, its `tar-split.json.gz`).
    pub(crate) fn layers(&self) -> &[(String, PathBuf, PathBuf)] {
        &self.layers
    }
}

/// Read the config and every layer, compressing each into a spool file, and
/// hand them to `send` as [`Item`]s (a `manifest.json` equivalent last).
pub fn read_image(
    image: &LocalImage,
    options: &ReadOptions<'_>,
    send: &mut dyn FnMut(Item) -> bool,
) -> Result<(), LayerStoreError> {
    let config = std::fs::read(&image.config)
        .map_err(|e| LayerStoreError::Unavailable(format!("{}: {e}", image.config.display())))?;
    if !send(Item::File {
        path: "config".into(),
        bytes: config,
    }) {
        return Err(LayerStoreError::Cancelled);
    }
    let mut seen = std::collections::HashSet::new();
    for (diff_id, diff, split) in &image.layers {
        if !seen.insert(diff_id.clone()) {
            continue;
        }
        let layer_error = |message: String| LayerStoreError::Layer {
            diff_id: diff_id.clone(),
            message,
        };
        if !options.compress_layers {
            if !send(Item::Skipped {
                path: diff_id.clone(),
            }) {
                return Err(LayerStoreError::Cancelled);
            }
            continue;
        }
        let mut reader = Assembler::open(split, diff).map_err(|e| layer_error(e.to_string()))?;
        if !send(Item::LayerStarted {
            path: diff_id.clone(),
            size: 0,
        }) {
            return Err(LayerStoreError::Cancelled);
        }
        let file = SpoolFile::new(options.spool_dir).map_err(|source| LayerStoreError::Spool {
            path: options.spool_dir.to_path_buf(),
            source,
        })?;
        let out = File::create(file.path()).map_err(|source| LayerStoreError::Spool {
            path: file.path().to_path_buf(),
            source,
        })?;
        let mut out = io::BufWriter::with_capacity(1 << 20, out);
        let mut hashing = HashingReader {
            inner: &mut reader,
            hasher: Sha256::new(),
        };
        let compressed =
            compress::compress(&mut hashing, &mut out, options.compression, options.threads)
                .map_err(|e| layer_error(e.to_string()))?;
        let got = compress::digest_string(&hashing.hasher.finalize());
        if &got != diff_id {
            return Err(layer_error(format!("the rebuilt layer hashes to {got}")));
        }
        if !send(Item::Layer {
            path: diff_id.clone(),
            blob: Spooled { file, compressed },
        }) {
            return Err(LayerStoreError::Cancelled);
        }
    }
    let manifest = SaveManifest {
        config: "config".into(),
        layers: image.layers.iter().map(|(d, _, _)| d.clone()).collect(),
    };
    if !send(Item::Manifest(vec![manifest])) {
        return Err(LayerStoreError::Cancelled);
    }
    Ok(())
}

struct HashingReader<'a> {
    inner: &'a mut dyn Read,
    hasher: Sha256,
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// One tar-split entry: a raw segment (type 2: headers, padding) or a file
/// whose `size` bytes come from the `diff` folder (type 1).
#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    name_raw: Option<String>,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    payload: Option<String>,
}

/// The layer tar, rebuilt as a stream.
pub(crate) struct Assembler {
    entries: io::Lines<BufReader<flate2::read::GzDecoder<File>>>,
    diff: PathBuf,
    current: Box<dyn Read + Send>,
}

impl Assembler {
    pub(crate) fn open(split: &Path, diff: &Path) -> io::Result<Assembler> {
        let file = File::open(split)?;
        Ok(Assembler {
            entries: BufReader::with_capacity(256 << 10, flate2::read::GzDecoder::new(file))
                .lines(),
            diff: diff.to_path_buf(),
            current: Box::new(io::empty()),
        })
    }

    /// The next piece of the stream; `false` at the end.
    fn advance(&mut self) -> io::Result<bool> {
        loop {
            let Some(line) = self.entries.next() else {
                return Ok(false);
            };
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let entry: Entry = serde_json::from_str(&line).map_err(io::Error::other)?;
            match entry.kind {
                2 => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(entry.payload.unwrap_or_default())
                        .map_err(io::Error::other)?;
                    self.current = Box::new(io::Cursor::new(bytes));
                    return Ok(true);
                }
                1 if entry.size == 0 => {}
                1 => {
                    let name = match (entry.name_raw, entry.name) {
                        (Some(raw), _) => {
                            let bytes = base64::engine::general_purpose::STANDARD
                                .decode(raw)
                                .map_err(io::Error::other)?;
                            String::from_utf8(bytes).map_err(io::Error::other)?
                        }
                        (None, Some(n)) => n,
                        (None, None) => {
                            return Err(io::Error::other("a file entry without a name"));
                        }
                    };
                    let relative = Path::new(name.trim_start_matches('/'));
                    if relative.components().any(|c| {
                        !matches!(
                            c,
                            std::path::Component::Normal(_) | std::path::Component::CurDir
                        )
                    }) {
                        return Err(io::Error::other(format!("odd path {name:?}")));
                    }
                    let file = File::open(self.diff.join(relative))?;
                    let size = entry.size;
                    self.current = Box::new(ExactReader {
                        inner: file.take(size),
                        left: size,
                        name,
                    });
                    return Ok(true);
                }
                other => {
                    return Err(io::Error::other(format!(
                        "unknown tar-split entry type {other}"
                    )));
                }
            }
        }
    }
}

impl Read for Assembler {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            if !self.advance()? {
                return Ok(0);
            }
        }
    }
}

/// A file that must yield exactly `left` more bytes (a shorter file means
/// the layer changed; the digest check would catch it, this says where).
struct ExactReader {
    inner: io::Take<File>,
    left: u64,
    name: String,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::other(format!(
                "{} is shorter than recorded",
                self.name
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn rebuilds_a_layer_from_tar_split() {
        let dir = tempfile::tempdir().expect("tempdir");
        let diff = dir.path().join("diff");
        std::fs::create_dir_all(diff.join("etc")).expect("mkdir");
        std::fs::write(diff.join("etc/hello"), b"hello world").expect("write");
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let lines = [
            format!(
                r#"{{"type":2,"payload":"{}","position":0}}"#,
                b64(b"HEADER1")
            ),
            r#"{"type":1,"name":"etc/hello","size":11,"payload":"x","position":1}"#.to_string(),
            r#"{"type":1,"name":"etc/","size":0,"position":2}"#.to_string(),
            format!(r#"{{"type":2,"payload":"{}","position":3}}"#, b64(b"PAD")),
            format!(
                r#"{{"type":1,"name_raw":"{}","size":5,"position":4}}"#,
                b64(b"etc/hello")
            ),
        ];
        let split = dir.path().join("tar-split.json.gz");
        let mut gz = flate2::write::GzEncoder::new(
            File::create(&split).expect("create"),
            flate2::Compression::fast(),
        );
        gz.write_all(lines.join("\n").as_bytes()).expect("write");
        gz.finish().expect("finish");
        let mut out = Vec::new();
        Assembler::open(&split, &diff)
            .expect("open")
            .read_to_end(&mut out)
            .expect("read");
        assert_eq!(out, b"HEADER1hello worldPADhello");

        // A file that shrank is an error, not a short layer.
        std::fs::write(diff.join("etc/hello"), b"hi").expect("write");
        let err = Assembler::open(&split, &diff)
            .expect("open")
            .read_to_end(&mut Vec::new())
            .expect_err("short");
        assert!(err.to_string().contains("shorter"), "{err}");
    }

    #[test]
    fn missing_store_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = format!("sha256:{}", "a".repeat(64));
        let err = LocalImage::find(dir.path(), &id, std::slice::from_ref(&id))
            .expect_err("nothing there");
        assert!(matches!(err, LayerStoreError::Unavailable(_)), "{err}");
        let err = LocalImage::find(dir.path(), "sha256:../x", &[]).expect_err("bad id");
        assert!(matches!(err, LayerStoreError::Unavailable(_)), "{err}");
    }
}
