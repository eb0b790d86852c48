//! The push cache: what earlier pushes learnt, so that pushing an image
//! again (to the same or another repository) needs no engine export.
//!
//! Three kinds of records, each a small JSON file in the cache folder,
//! written atomically (a temporary file, then a rename):
//!
//! - `images/<image-id-hex>.<format>.json`: for an engine image ID and a
//!   compression format, the manifest bytes, its digest, the config bytes and
//!   the layer descriptors;
//! - `layers.<format>.json`: uncompressed layer `diff_id` → compressed blob
//!   digest and size;
//! - `blobs.json`: per registry, blob digest → repositories it is known to be in
//!   (for cross-repository mounts).
//!
//! It is only a cache: every record is checked against the registry before
//! it is relied on (a `HEAD`, or a mount that must answer 201), and records
//! found wrong are dropped. Pushes in one process are serialised on a mutex;
//! between processes the last writer wins, which can only lose knowledge.
//! Unreadable or corrupt files are treated as empty. It never touches
//! anything outside its folder.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::compress::Compression;

/// Bump when the record layout changes: old files are then ignored.
const VERSION: &str = "v1";
/// At most this many repositories are remembered per blob and registry.
const MAX_REPOSITORIES: usize = 16;

#[derive(Debug, thiserror::Error)]
#[error("cannot write the push cache file {path}: {source}")]
pub struct CacheError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// A blob in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub digest: String,
    pub size: u64,
}

/// What a pushed image came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The manifest bytes exactly as pushed.
    pub manifest: String,
    pub manifest_digest: String,
    /// The config bytes exactly as the engine saved them.
    pub config: String,
    pub config_digest: String,
    /// Layers in manifest order, with their uncompressed `diff_id`s.
    pub layers: Vec<(String, BlobRecord)>,
}

pub struct Cache {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl Cache {
    /// A cache in `dir` (created on the first write).
    pub fn new(dir: &Path) -> Cache {
        Cache {
            dir: dir.to_path_buf(),
            lock: Mutex::new(()),
        }
    }

    fn image_path(&self, image_id: &str, compression: Compression) -> PathBuf {
        let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
        self.dir.join(VERSION).join("images").join(format!(
            "{}.{}.json",
            sanitize(hex),
            compression.format_id()
        ))
    }

    fn layers_path(&self, compression: Compression) -> PathBuf {
        self.dir
            .join(VERSION)
            .join(format!("layers.{}.json", compression.format_id()))
    }

    fn blobs_path(&self) -> PathBuf {
        self.dir.join(VERSION).join("blobs.json")
    }

    /// The record of an image pushed before with this compression.
    pub fn image(&self, image_id: &str, compression: Compression) -> Option<ImageRecord> {
        read_json(&self.image_path(image_id, compression))
    }

    pub fn put_image(
        &self,
        image_id: &str,
        compression: Compression,
        record: &ImageRecord,
    ) -> Result<(), CacheError> {
        let _guard = self.lock.lock();
        let path = self.image_path(image_id, compression);
        if read_json::<ImageRecord>(&path).as_ref() == Some(record) {
            return Ok(());
        }
        write_json(&path, record)
    }

    /// Forget an image record (its manifest turned out unusable).
    pub fn drop_image(&self, image_id: &str, compression: Compression) {
        let _guard = self.lock.lock();
        let _ = std::fs::remove_file(self.image_path(image_id, compression));
    }

    /// The compressed blob of each uncompressed layer, where known.
    pub fn layers(&self, compression: Compression) -> BTreeMap<String, BlobRecord> {
        read_json(&self.layers_path(compression)).unwrap_or_default()
    }

    /// Remember compressed blobs of uncompressed layers.
    pub fn put_layers(
        &self,
        compression: Compression,
        layers: &[(String, BlobRecord)],
    ) -> Result<(), CacheError> {
        let _guard = self.lock.lock();
        let path = self.layers_path(compression);
        let mut known: BTreeMap<String, BlobRecord> = read_json(&path).unwrap_or_default();
        let before = known.clone();
        for (diff_id, blob) in layers {
            known.insert(diff_id.clone(), blob.clone());
        }
        if known == before {
            return Ok(());
        }
        write_json(&path, &known)
    }

    /// Repositories of `registry` that `digest` is known to be in.
    pub fn repositories(&self, registry: &str, digest: &str) -> Vec<String> {
        let all: Blobs = read_json(&self.blobs_path()).unwrap_or_default();
        all.get(registry)
            .and_then(|r| r.get(digest))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Record that `digests` are in `repository` of `registry` (`present`),
    /// or that they turned out not to be there.
    pub fn note_blobs(
        &self,
        registry: &str,
        repository: &str,
        digests: &[String],
        present: bool,
    ) -> Result<(), CacheError> {
        if digests.is_empty() {
            return Ok(());
        }
        let _guard = self.lock.lock();
        let path = self.blobs_path();
        let mut all: Blobs = read_json(&path).unwrap_or_default();
        let before = all.clone();
        let repos = all.entry(registry.to_string()).or_default();
        for digest in digests {
            let set = repos.entry(digest.clone()).or_default();
            if present {
                if !set.contains(repository) && set.len() >= MAX_REPOSITORIES {
                    // Keep the list short: forget the first (alphabetically).
                    if let Some(first) = set.iter().next().cloned() {
                        set.remove(&first);
                    }
                }
                set.insert(repository.to_string());
            } else {
                set.remove(repository);
            }
            if set.is_empty() {
                repos.remove(digest);
            }
        }
        if all == before {
            return Ok(());
        }
        write_json(&path, &all)
    }
}

type Blobs = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable push cache file");
            None
        }
    }
}

/// Write `value` to `path` atomically: a unique temporary file beside it, then a rename.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), CacheError> {
    let fail = |source: std::io::Error| CacheError {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let bytes = serde_json::to_vec(value).map_err(|e| fail(std::io::Error::other(e)))?;
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let result = (|| {
        // No fsync: after a crash a file may be empty or stale, which reads
        // as "unknown" (it is checked against the registry anyway).
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ImageRecord {
        ImageRecord {
            manifest: "{}".into(),
            manifest_digest: "sha256:m".into(),
            config: "{\"a\":1}".into(),
            config_digest: "sha256:c".into(),
            layers: vec![(
                "sha256:d1".into(),
                BlobRecord {
                    digest: "sha256:b1".into(),
                    size: 10,
                },
            )],
        }
    }

    #[test]
    fn images_layers_and_blobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path());
        assert_eq!(cache.image("sha256:abc", Compression::Gzip), None);
        cache
            .put_image("sha256:abc", Compression::Gzip, &record())
            .expect("write");
        assert_eq!(cache.image("sha256:abc", Compression::Gzip), Some(record()));
        assert_eq!(cache.image("sha256:abc", Compression::Zstd), None);
        cache.drop_image("sha256:abc", Compression::Gzip);
        assert_eq!(cache.image("sha256:abc", Compression::Gzip), None);

        cache
            .put_layers(Compression::Zstd, &record().layers)
            .expect("write");
        assert_eq!(cache.layers(Compression::Zstd).len(), 1);
        assert!(cache.layers(Compression::Gzip).is_empty());

        let digests = vec!["sha256:b1".to_string(), "sha256:b2".to_string()];
        cache
            .note_blobs("r:5000", "one", &digests, true)
            .expect("write");
        cache
            .note_blobs("r:5000", "two", &digests[..1], true)
            .expect("write");
        assert_eq!(cache.repositories("r:5000", "sha256:b1"), ["one", "two"]);
        assert_eq!(
            cache.repositories("other", "sha256:b1"),
            Vec::<String>::new()
        );
        cache
            .note_blobs("r:5000", "one", &digests, false)
            .expect("write");
        assert_eq!(cache.repositories("r:5000", "sha256:b1"), ["two"]);
        assert!(cache.repositories("r:5000", "sha256:b2").is_empty());
        // No temporary files are left behind.
        let leftovers = std::fs::read_dir(dir.path().join(VERSION))
            .expect("ls")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn corrupt_files_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path());
        std::fs::create_dir_all(dir.path().join(VERSION)).expect("mkdir");
        std::fs::write(cache.blobs_path(), b"{broken").expect("write");
        assert!(cache.repositories("r", "d").is_empty());
        cache
            .note_blobs("r", "repo", &["d".to_string()], true)
            .expect("rewritten");
        assert_eq!(cache.repositories("r", "d"), ["repo"]);
    }

    #[test]
    fn many_repositories_stay_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path());
        for i in 0..40 {
            cache
                .note_blobs("r", &format!("repo{i:02}"), &["d".to_string()], true)
                .expect("write");
        }
        let repos = cache.repositories("r", "d");
        assert_eq!(repos.len(), MAX_REPOSITORIES);
        assert!(repos.contains(&"repo39".to_string()));
    }
}
