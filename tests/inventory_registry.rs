//! The package inventory and Trivy read from the registry by digest, for
//! images that are not in the local engine (built by a cluster Job): the
//! inventory test image (`tests/projects/inventory/`) pushed with gzip and
//! with zstd, and the Debian stand-in as skopeo pushed it (a Docker schema 2
//! manifest), inventory exactly what the engine-side reader finds; a blob
//! damaged in the registry's storage, a config that does not describe its
//! layers, an unknown digest, a tag and an index are clear errors; a
//! registry with a login is read with it (the inventory and Trivy alike);
//! Trivy reads the image with `--image-src remote`; and the scan stage runs
//! end to end from the registry source.
//!
//! A missing engine, registry, `docker-registry` or Trivy fails these
//! tests; they are never skipped. Engine images built here are removed.

mod common;
use common::Images;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use labforge_builder::config::ScanConfig;
use labforge_builder::engine::Engine;
use labforge_builder::push::{self, Compression, LayerSource, PushOptions, Pushed};
use labforge_builder::scan::layers::{self, Inventoried, LayersError};
use labforge_builder::scan::referrers::{Referrers, SBOM_ARTIFACT_TYPE};
use labforge_builder::scan::stage::{self, Scanners, Source, StageError, Target};
use labforge_builder::scan::trivy::{RemoteImage, Trivy, TrivyImage};
use labforge_builder::scan::{self, inventory_from_registry};
use labforge_builder::{ImageRef, RegistryClient, RegistryError, RegistryOptions};
use labforge_core::identity::sha256_hex;
use labforge_core::scan::PackageKind;
use labforge_core::scan::policy::{Date, Policy};

const BUSYBOX: &str = "labforge-standin/busybox:latest";
const DEBIAN: &str = "labforge-standin/debian:bookworm";
const SETUP: &str = "run `bash scripts/services.sh` (it starts the Docker Engine and the registry, installs docker-registry, skopeo and trivy, and pushes the stand-ins), then `. /var/lib/labforge/env`";
/// The login in registry-config/htpasswd.example.
const LOGIN: (&str, &str) = ("labforge", "labforge-example");
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The registry services.sh started; these tests fail without it.
fn registry_addr() -> String {
    let addr = std::env::var("LABFORGE_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    assert!(
        TcpStream::connect(&addr).is_ok(),
        "no registry at {addr}: {SETUP}"
    );
    addr
}

async fn engine() -> Engine {
    match Engine::connect().await {
        Ok(e) => e,
        Err(e) => panic!("{}\n{SETUP}", labforge_core::error_chain(&e)),
    }
}

/// Something unique per test and run.
fn unique(what: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{what}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

fn client(addr: &str, login: Option<(&str, &str)>) -> RegistryClient {
    RegistryClient::new(
        RegistryOptions {
            username: login.map(|l| l.0.to_string()),
            password: login.map(|l| l.1.to_string()),
            ..Default::default()
        },
        &[addr],
    )
    .expect("a registry client")
}

fn image_ref(addr: &str, repository: &str, reference: &str) -> ImageRef {
    ImageRef {
        registry: addr.to_string(),
        repository: repository.to_string(),
        reference: reference.to_string(),
    }
}

/// The inventory test image, built on the busybox stand-in: package
/// metadata in several layers, some deleted, replaced or hidden later.
fn build_test_image(images: &mut Images) -> String {
    let tag = format!("labforge-it/inventory-registry:{}", unique("img"));
    images.add(&tag);
    let out = Command::new("docker")
        .args([
            "build",
            "-q",
            // No intermediate image of a parallel test's build as a parent:
            // that test removes its image (and those) when it ends.
            "--no-cache",
            "--build-arg",
            &format!("BASE_IMAGE={BUSYBOX}"),
            "-t",
            &tag,
        ])
        .arg(root().join("tests/projects/inventory"))
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap_or_else(|e| panic!("the docker CLI is required: {e}\n{SETUP}"));
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tag
}

/// Push an engine image to `repository` by digest only, reading it from the
/// engine every time (no push cache).
async fn push_to(
    engine: &Engine,
    registry: &RegistryClient,
    addr: &str,
    image: &str,
    repository: &str,
    compression: Compression,
) -> Pushed {
    let spool = tempfile::tempdir().expect("tempdir");
    let options = PushOptions {
        compression,
        threads: 2,
        retries: 2,
        retry_delay: Duration::from_millis(200),
        spool_dir: spool.path().to_path_buf(),
        cache_dir: None,
    };
    push::push_image(
        engine,
        registry,
        image,
        &image_ref(addr, repository, "latest"),
        &[],
        &options,
        &|_| {},
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "push {image} to {addr}/{repository}: {}",
            labforge_core::error_chain(&e)
        )
    })
}

async fn from_registry(registry: &RegistryClient, image: &ImageRef) -> Inventoried {
    let started = Instant::now();
    match inventory_from_registry(registry, image).await {
        Ok(i) => {
            eprintln!(
                "{}/{}@{} from the registry: {} layers, {} bytes, {} packages in {:?}",
                image.registry,
                image.repository,
                image.reference,
                i.layers,
                i.bytes_read,
                i.collected.inventory.packages.len(),
                started.elapsed()
            );
            i
        }
        Err(e) => panic!(
            "inventory of {image} from the registry: {}",
            labforge_core::error_chain(&e)
        ),
    }
}

async fn from_engine(engine: &Engine, image: &str) -> Inventoried {
    layers::inventory(engine, image, LayerSource::Auto)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "inventory of {image} from the engine: {}",
                labforge_core::error_chain(&e)
            )
        })
}

/// What the registry holds under `reference` (a manifest's raw bytes).
async fn raw_get(addr: &str, repository: &str, what: &str, reference: &str) -> Vec<u8> {
    let url = format!("http://{addr}/v2/{repository}/{what}/{reference}");
    let response = reqwest::Client::new()
        .get(&url)
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status().as_u16(), 200, "GET {url}");
    response.bytes().await.expect("the body").to_vec()
}

/// Upload a blob (one monolithic upload); returns its digest.
async fn raw_put_blob(addr: &str, repository: &str, bytes: &[u8]) -> String {
    let http = reqwest::Client::new();
    let digest = digest_of(bytes);
    let start = format!("http://{addr}/v2/{repository}/blobs/uploads/");
    let response = http
        .post(&start)
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {start}: {e}"));
    assert_eq!(response.status().as_u16(), 202, "POST {start}");
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a Location header")
        .to_string();
    let location = if location.starts_with('/') {
        format!("http://{addr}{location}")
    } else {
        location
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let url = format!("{location}{separator}digest={digest}");
    let response = http
        .put(&url)
        .header("Content-Type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    assert_eq!(response.status().as_u16(), 201, "PUT the blob {digest}");
    digest
}

/// Put a manifest under `reference`; returns its digest.
async fn raw_put_manifest(
    addr: &str,
    repository: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> String {
    let url = format!("http://{addr}/v2/{repository}/manifests/{reference}");
    let response = reqwest::Client::new()
        .put(&url)
        .header("Content-Type", media_type)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, 201, "PUT {url}: {body}");
    digest_of(bytes)
}

/// A registry process of our own (`docker-registry` on a free port) whose
/// storage folder the test can reach into.
struct OwnRegistry {
    child: Child,
    addr: String,
    storage: tempfile::TempDir,
}

impl OwnRegistry {
    fn start(login: bool) -> OwnRegistry {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let addr = format!("127.0.0.1:{port}");
        let storage = tempfile::tempdir().expect("tempdir");
        let mut command = Command::new("docker-registry");
        command
            .arg("serve")
            .arg(root().join("registry-config/config.yml"))
            .env("REGISTRY_HTTP_ADDR", &addr)
            .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", storage.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if login {
            command
                .env("REGISTRY_AUTH", "htpasswd")
                .env("REGISTRY_AUTH_HTPASSWD_REALM", "labforge-test")
                .env(
                    "REGISTRY_AUTH_HTPASSWD_PATH",
                    root().join("registry-config/htpasswd.example"),
                );
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("docker-registry is required: {e}\n{SETUP}"));
        let registry = OwnRegistry {
            child,
            addr,
            storage,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&registry.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start on {}",
                registry.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// Where the filesystem driver keeps a blob's bytes.
    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .path()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (kind, name, version) of every package.
fn packages(i: &Inventoried) -> BTreeSet<(PackageKind, String, String)> {
    i.collected
        .inventory
        .packages
        .iter()
        .map(|p| (p.kind, p.name.clone(), p.version.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_zstd_pushes_inventory_exactly_like_the_engine() {
    let addr = registry_addr();
    let engine = engine().await;
    let mut images = Images::default();
    let tag = build_test_image(&mut images);
    let local = from_engine(&engine, &tag).await;
    // What survives the deletions, replacements and hiding of later layers.
    let expected_some = [
        (PackageKind::Deb, "libssl3", "3.0.15-1~deb12u1"),
        (PackageKind::Pypi, "requests", "2.31.0"),
        (PackageKind::Pypi, "attrs", "23.2.0"),
        (PackageKind::Conda, "tk", "8.6.12"),
    ];
    let local_packages = packages(&local);
    for (kind, name, version) in expected_some {
        assert!(
            local_packages.contains(&(kind, name.to_string(), version.to_string())),
            "{local_packages:?}"
        );
    }
    let registry = client(&addr, None);
    for (compression, media_type) in [
        (
            Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
        (
            Compression::Zstd,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    ] {
        let repository = format!("labforge-it/{}", unique(compression.as_str()));
        let pushed = push_to(&engine, &registry, &addr, &tag, &repository, compression).await;
        let manifest: serde_json::Value =
            serde_json::from_slice(&raw_get(&addr, &repository, "manifests", &pushed.digest).await)
                .expect("manifest JSON");
        let layer_types: BTreeSet<&str> = manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .filter_map(|l| l["mediaType"].as_str())
            .collect();
        assert_eq!(layer_types, BTreeSet::from([media_type]));

        let image = image_ref(&addr, &repository, &pushed.digest);
        let remote = from_registry(&registry, &image).await;
        assert_eq!(remote.source_used, layers::SOURCE_REGISTRY);
        assert_eq!(remote.source_used, "registry");
        assert_eq!(remote.image_id, local.image_id, "the config digest");
        assert_eq!(remote.image_id, pushed.config_digest);
        assert_eq!(remote.layers, local.layers);
        assert_eq!(remote.bytes_read, local.bytes_read, "{compression:?}");
        assert_eq!(remote.collected, local.collected, "{compression:?}");
        assert!(remote.collected.warnings.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debian_stand_in_pushed_by_skopeo_inventories_like_the_engine() {
    let addr = registry_addr();
    let engine = engine().await;
    let registry = client(&addr, None);
    let tagged = image_ref(&addr, "standin/debian", "bookworm");
    let digest = registry
        .manifest_digest(&tagged)
        .await
        .unwrap_or_else(|e| panic!("{tagged}: {}", labforge_core::error_chain(&e)))
        .unwrap_or_else(|| panic!("the registry has no {tagged}: {SETUP}"));
    let image = image_ref(&addr, "standin/debian", &digest);
    // skopeo kept Docker's media types.
    let manifest: serde_json::Value =
        serde_json::from_slice(&raw_get(&addr, "standin/debian", "manifests", &digest).await)
            .expect("manifest JSON");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );

    let remote = from_registry(&registry, &image).await;
    let local = from_engine(&engine, DEBIAN).await;
    assert_eq!(remote.image_id, local.image_id);
    assert_eq!(remote.layers, local.layers);
    assert_eq!(remote.bytes_read, local.bytes_read);
    assert!(
        remote.collected.inventory.packages.len() > 50,
        "a Debian base has many packages"
    );
    assert_eq!(remote.collected, local.collected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_damaged_in_the_registry_is_a_digest_error_naming_the_layer() {
    let engine = engine().await;
    let mut images = Images::default();
    let tag = build_test_image(&mut images);
    let own = OwnRegistry::start(false);
    let registry = client(&own.addr, None);
    let repository = "labforge-it/damaged";
    let pushed = push_to(
        &engine,
        &registry,
        &own.addr,
        &tag,
        repository,
        Compression::Gzip,
    )
    .await;
    let image = image_ref(&own.addr, repository, &pushed.digest);
    from_registry(&registry, &image).await;

    let manifest: serde_json::Value =
        serde_json::from_slice(&raw_get(&own.addr, repository, "manifests", &pushed.digest).await)
            .expect("manifest JSON");
    let layers = manifest["layers"].as_array().expect("layers");
    let count = layers.len();
    // The layer with the dpkg status, the Python and conda metadata: flip
    // bytes in the middle of its compressed stream, keeping its size.
    let damaged = layers[1]["digest"].as_str().expect("digest").to_string();
    let path = own.blob_path(&damaged);
    let mut bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("the registry's copy {}: {e}", path.display()));
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).expect("damage the blob");

    let err = inventory_from_registry(&registry, &image)
        .await
        .expect_err("a damaged blob");
    let text = labforge_core::error_chain(&err);
    eprintln!("{text}");
    match &err {
        LayersError::RegistryDigest { expected, got, .. } => {
            assert_eq!(expected, &damaged);
            assert_eq!(got, &digest_of(&bytes));
        }
        other => panic!("expected RegistryDigest, got {other:?}"),
    }
    let pinned = format!("{}/{repository}@{}", own.addr, pushed.digest);
    assert!(text.contains(&pinned), "{text}");
    assert!(
        text.contains(&format!("layer {damaged} (2 of {count})")),
        "{text}"
    );
    assert!(text.contains("push the image again"), "{text}");

    // Cut short (a blob whose end is missing): the same error.
    std::fs::write(&path, &bytes[..middle]).expect("cut the blob");
    let err = inventory_from_registry(&registry, &image)
        .await
        .expect_err("a cut blob");
    assert!(
        matches!(err, LayersError::RegistryDigest { .. }),
        "{}",
        labforge_core::error_chain(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_does_not_describe_its_layers_is_a_diff_id_error() {
    let addr = registry_addr();
    let engine = engine().await;
    let mut images = Images::default();
    let tag = build_test_image(&mut images);
    let registry = client(&addr, None);
    let repository = format!("labforge-it/{}", unique("diff-id"));
    let pushed = push_to(
        &engine,
        &registry,
        &addr,
        &tag,
        &repository,
        Compression::Zstd,
    )
    .await;
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&raw_get(&addr, &repository, "manifests", &pushed.digest).await)
            .expect("manifest JSON");
    let mut config: serde_json::Value =
        serde_json::from_slice(&raw_get(&addr, &repository, "blobs", &pushed.config_digest).await)
            .expect("config JSON");
    // The config claims another uncompressed tar for the last layer.
    let last = config["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .len()
        - 1;
    let claimed = digest_of(b"some other layer");
    let actual = config["rootfs"]["diff_ids"][last]
        .as_str()
        .expect("a diff_id")
        .to_string();
    config["rootfs"]["diff_ids"][last] = claimed.clone().into();
    let config_bytes = serde_json::to_vec(&config).expect("JSON");
    let config_digest = raw_put_blob(&addr, &repository, &config_bytes).await;
    manifest["config"]["digest"] = config_digest.into();
    manifest["config"]["size"] = config_bytes.len().into();
    let layer = manifest["layers"][last]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let manifest_bytes = serde_json::to_vec(&manifest).expect("JSON");
    let digest = raw_put_manifest(
        &addr,
        &repository,
        "inconsistent",
        "application/vnd.oci.image.manifest.v1+json",
        &manifest_bytes,
    )
    .await;

    let image = image_ref(&addr, &repository, &digest);
    let err = inventory_from_registry(&registry, &image)
        .await
        .expect_err("a wrong diff_id");
    let text = labforge_core::error_chain(&err);
    eprintln!("{text}");
    match &err {
        LayersError::DiffId {
            expected,
            got,
            layer: named,
            ..
        } => {
            assert_eq!(expected, &claimed);
            assert_eq!(got, &actual);
            assert!(named.starts_with(&layer), "{named}");
        }
        other => panic!("expected DiffId, got {other:?}"),
    }
    assert!(text.contains(&layer), "{text}");
    assert!(text.contains(&format!("@{digest}")), "{text}");
}

#[tokio::test]
async fn unknown_digests_tags_and_indexes_are_clear_errors() {
    let addr = registry_addr();
    let registry = client(&addr, None);
    let repository = "standin/busybox";
    let tagged = image_ref(&addr, repository, "latest");
    let busybox = registry
        .manifest_digest(&tagged)
        .await
        .unwrap_or_else(|e| panic!("{tagged}: {}", labforge_core::error_chain(&e)))
        .unwrap_or_else(|| panic!("the registry has no {tagged}: {SETUP}"));

    // A digest the registry does not have.
    let unknown = digest_of(unique("nothing").as_bytes());
    let err = inventory_from_registry(&registry, &image_ref(&addr, repository, &unknown))
        .await
        .expect_err("unknown digest");
    let text = err.to_string();
    assert!(matches!(err, LayersError::NotInRegistry { .. }), "{text}");
    assert!(
        text.contains(&format!("{addr}/{repository}@{unknown}")),
        "{text}"
    );
    assert!(text.contains("has no manifest"), "{text}");
    assert!(text.contains("404"), "{text}");

    // A repository the registry does not have.
    let err = inventory_from_registry(
        &registry,
        &image_ref(&addr, "labforge-it/never-pushed", &busybox),
    )
    .await
    .expect_err("unknown repository");
    assert!(matches!(err, LayersError::NotInRegistry { .. }), "{err}");

    // A tag: only a digest pins the image that is scanned.
    let err = inventory_from_registry(&registry, &tagged)
        .await
        .expect_err("a tag");
    assert!(matches!(err, LayersError::NotADigest { .. }), "{err}");
    assert!(err.to_string().contains("\"latest\""), "{err}");

    // An index over the busybox manifest: one platform must be chosen.
    let size = raw_get(&addr, repository, "manifests", &busybox)
        .await
        .len();
    let media_type = serde_json::from_slice::<serde_json::Value>(
        &raw_get(&addr, repository, "manifests", &busybox).await,
    )
    .expect("JSON")["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_string();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": media_type,
            "digest": busybox,
            "size": size,
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    });
    let index_digest = raw_put_manifest(
        &addr,
        repository,
        &unique("index"),
        OCI_INDEX,
        &serde_json::to_vec(&index).expect("JSON"),
    )
    .await;
    let err = inventory_from_registry(&registry, &image_ref(&addr, repository, &index_digest))
        .await
        .expect_err("an index");
    let text = err.to_string();
    assert!(matches!(err, LayersError::Index { .. }), "{text}");
    assert!(
        text.contains(OCI_INDEX) && text.contains(&index_digest),
        "{text}"
    );

    // The busybox manifest itself reads.
    let busybox_inventory = from_registry(&registry, &image_ref(&addr, repository, &busybox)).await;
    assert!(busybox_inventory.collected.inventory.packages.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_a_login_is_read_with_it_by_the_inventory_and_trivy() {
    let engine = engine().await;
    let mut images = Images::default();
    let tag = build_test_image(&mut images);
    let own = OwnRegistry::start(true);
    let registry = client(&own.addr, Some(LOGIN));
    let repository = "labforge-it/private";
    let pushed = push_to(
        &engine,
        &registry,
        &own.addr,
        &tag,
        repository,
        Compression::Gzip,
    )
    .await;
    let image = image_ref(&own.addr, repository, &pushed.digest);
    let remote = from_registry(&registry, &image).await;
    let local = from_engine(&engine, &tag).await;
    assert_eq!(remote.collected, local.collected);

    // Without the login (or with a wrong one): refused, and said so.
    for login in [None, Some((LOGIN.0, "wrong"))] {
        let err = inventory_from_registry(&client(&own.addr, login), &image)
            .await
            .expect_err("refused");
        let text = labforge_core::error_chain(&err);
        assert!(
            matches!(
                &err,
                LayersError::Registry {
                    source: RegistryError::Auth { .. },
                    ..
                }
            ),
            "{text}"
        );
        assert!(text.contains(&own.addr), "{text}");
    }

    // Trivy gets the login through its environment.
    require_trivy().await;
    let cache = tempfile::tempdir().expect("tempdir");
    let trivy = real_trivy(cache.path());
    let remote_image = RemoteImage::new(&registry, &image);
    assert!(remote_image.has_login() && remote_image.insecure());
    assert!(
        !format!("{remote_image:?}").contains(LOGIN.1),
        "{remote_image:?}"
    );
    let bom = trivy
        .sbom_image(TrivyImage::Registry(&remote_image))
        .await
        .unwrap_or_else(|e| panic!("trivy with the login: {e}"));
    let bom: serde_json::Value = serde_json::from_slice(&bom).expect("JSON");
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(trivy_packages(&bom), deb_and_python(&remote));
    // And fails without it.
    let anonymous = RemoteImage::new(&client(&own.addr, None), &image);
    assert!(!anonymous.has_login());
    let err = trivy
        .sbom_image(TrivyImage::Registry(&anonymous))
        .await
        .expect_err("trivy without the login");
    assert!(err.to_string().contains("--image-src remote"), "{err}");
}

/// Fail (never skip) unless trivy runs.
async fn require_trivy() {
    if let Err(e) = Trivy::default().version().await {
        panic!("these tests need trivy: {e}\n{SETUP}");
    }
}

/// The real trivy with an empty cache of its own.
fn real_trivy(cache: &Path) -> Trivy {
    Trivy {
        cache_dir: Some(cache.to_path_buf()),
        timeout: Duration::from_secs(180),
        ..Trivy::default()
    }
}

/// (name, version) of the packages (`library` components) of a CycloneDX
/// SBOM from Trivy.
fn trivy_packages(bom: &serde_json::Value) -> BTreeSet<(String, String)> {
    bom["components"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|c| c["type"] == "library")
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_string(),
                c["version"].as_str().expect("version").to_string(),
            )
        })
        .collect()
}

/// (name, version) of the dpkg and Python packages of an inventory: what
/// Trivy lists of the test image too (it does not look at conda-meta).
fn deb_and_python(i: &Inventoried) -> BTreeSet<(String, String)> {
    i.collected
        .inventory
        .packages
        .iter()
        .filter(|p| matches!(p.kind, PackageKind::Deb | PackageKind::Pypi))
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trivy_reads_the_registry_image_by_digest() {
    let addr = registry_addr();
    require_trivy().await;
    let engine = engine().await;
    let mut images = Images::default();
    let tag = build_test_image(&mut images);
    let registry = client(&addr, None);
    let repository = format!("labforge-it/{}", unique("trivy"));
    let pushed = push_to(
        &engine,
        &registry,
        &addr,
        &tag,
        &repository,
        Compression::Gzip,
    )
    .await;
    let image = image_ref(&addr, &repository, &pushed.digest);
    let remote_image = RemoteImage::new(&registry, &image);
    let reference = format!("{addr}/{repository}@{}", pushed.digest);
    assert_eq!(remote_image.reference(), reference);
    assert!(remote_image.insecure(), "a loopback registry is plain HTTP");
    assert!(!remote_image.has_login());

    let cache = tempfile::tempdir().expect("tempdir");
    let trivy = real_trivy(cache.path());
    let bom = trivy
        .sbom_image(TrivyImage::Registry(&remote_image))
        .await
        .unwrap_or_else(|e| panic!("trivy's SBOM of {reference}: {e}"));
    let bom: serde_json::Value = serde_json::from_slice(&bom).expect("JSON");
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["metadata"]["component"]["name"], reference.as_str());
    let inventoried = from_registry(&registry, &image).await;
    let ours = deb_and_python(&inventoried);
    assert!(
        ours.contains(&("libssl3".to_string(), "3.0.15-1~deb12u1".to_string()))
            && ours.contains(&("requests".to_string(), "2.31.0".to_string())),
        "{ours:?}"
    );
    assert_eq!(trivy_packages(&bom), ours);
    // The engine has no image by that reference: Trivy read the registry.
    let out = Command::new("docker")
        .args(["image", "inspect", &reference])
        .output()
        .expect("the docker CLI");
    assert!(!out.status.success(), "{reference} is in the engine");

    // Its vulnerability scan goes the same way (and fails closed here: no
    // database can be downloaded).
    let offline = Trivy {
        db_repository: Some("127.0.0.1:1/aquasec/trivy-db:2".into()),
        ..real_trivy(cache.path())
    };
    let err = offline
        .scan_image(TrivyImage::Registry(&remote_image))
        .await
        .expect_err("no database");
    let text = err.to_string();
    assert!(text.contains("--image-src remote --insecure"), "{text}");
    assert!(text.contains(&format!("-- {reference}")), "{text}");
}

#[tokio::test]
async fn trivy_gets_the_registry_login_in_its_environment_never_its_arguments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("fake-trivy");
    let sbom = root().join("tests/fixtures/trivy/conda-cyclonedx.json");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             for a in \"$@\"; do printf '%s\\n' \"$a\"; done > '{dir}/args.txt'\n\
             printf '%s\\n%s\\n' \"$TRIVY_USERNAME\" \"$TRIVY_PASSWORD\" > '{dir}/env.txt'\n\
             OUT=''\n\
             while [ $# -gt 0 ]; do\n\
             \x20 case \"$1\" in --output) OUT=\"$2\"; shift ;; esac\n\
             \x20 shift\n\
             done\n\
             cp '{sbom}' \"$OUT\"\n",
            dir = dir.path().display(),
            sbom = sbom.display(),
        ),
    )
    .expect("write the fake scanner");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the fake scanner");
    let trivy = Trivy {
        binary: script,
        timeout: Duration::from_secs(30),
        ..Trivy::default()
    };
    let digest = digest_of(b"an image");
    let read = |name: &str| {
        std::fs::read_to_string(dir.path().join(name))
            .expect("the fake scanner's record")
            .lines()
            .map(str::to_string)
            .collect::<Vec<String>>()
    };

    // A registry reached over HTTPS, with a login.
    let registry = client("registry.example.edu", Some(("robot", "s3cret pass")));
    let image = image_ref("registry.example.edu", "lab/notebook", &digest);
    let remote = RemoteImage::new(&registry, &image);
    trivy
        .sbom_image(TrivyImage::Registry(&remote))
        .await
        .expect("the fake SBOM");
    let args = read("args.txt");
    let reference = format!("registry.example.edu/lab/notebook@{digest}");
    assert_eq!(
        &args[..7],
        [
            "image",
            "--format",
            "cyclonedx",
            "--quiet",
            "--image-src",
            "remote",
            "--skip-version-check"
        ]
    );
    assert_eq!(args.last(), Some(&reference));
    assert!(!args.iter().any(|a| a.contains("s3cret")), "{args:?}");
    assert!(!args.iter().any(|a| a == "--insecure"), "{args:?}");
    assert_eq!(read("env.txt"), ["robot", "s3cret pass"]);

    // A loopback registry without a login: --insecure, no login passed.
    let registry = client("127.0.0.1:5999", None);
    let remote = RemoteImage::new(&registry, &image_ref("127.0.0.1:5999", "lab/x", &digest));
    trivy
        .sbom_image(TrivyImage::Registry(&remote))
        .await
        .expect("the fake SBOM");
    let args = read("args.txt");
    assert_eq!(&args[4..7], ["--image-src", "remote", "--insecure"]);
    assert_eq!(read("env.txt"), ["", ""]);

    // The engine source is unchanged.
    trivy.sbom("img:1").await.expect("the fake SBOM");
    let args = read("args.txt");
    assert_eq!(
        &args[4..7],
        ["--image-src", "docker", "--skip-version-check"]
    );
}

/// An OSV database folder with one advisory for requests before 2.32.0.
fn osv_db(dir: &Path) -> PathBuf {
    let db = dir.join("osv/PyPI");
    std::fs::create_dir_all(&db).expect("mkdir");
    let record = serde_json::json!({
        "id": "PYSEC-9999-1",
        "modified": "2024-05-20T00:00:00Z",
        "summary": "a test advisory for requests",
        "affected": [{
            "package": {"ecosystem": "PyPI", "name": "requests"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.32.0"}]}],
        }],
        "database_specific": {"severity": "MODERATE"},
    });
    std::fs::write(
        db.join("PYSEC-9999-1.json"),
        serde_json::to_vec(&record).expect("JSON"),
    )
    .expect("write the record");
    dir.join("osv")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_stage_runs_from_the_registry_source() {
    let addr = registry_addr();
    require_trivy().await;
    let engine = engine().await;
    let mut images = Images::default();
    let tag = build_test_image(&mut images);
    let registry = client(&addr, None);
    let path = format!("labforge-it/{}", unique("stage"));
    let pushed = push_to(&engine, &registry, &addr, &tag, &path, Compression::Zstd).await;
    let repository = format!("{addr}/{path}");
    let image = ImageRef::in_repository(&repository, &pushed.digest);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ScanConfig {
        scanners: vec!["osv".into(), "trivy".into()],
        osv_db: Some(osv_db(dir.path())),
        timeout: Some(120),
        trivy: labforge_builder::config::TrivyConfig {
            cache_dir: Some(dir.path().join("trivy-cache")),
            db_repository: Some("127.0.0.1:1/aquasec/trivy-db:2".into()),
            ..Default::default()
        },
    };
    let scanners = Scanners::from_config(&config).expect("scanners");
    let referrers = Referrers::new(&addr, RegistryOptions::default()).expect("referrers");
    let policy = Policy::default();
    let today = Date::parse("2026-01-15").expect("a date");
    let target = |digest: &str| Target {
        image: "inventory-test",
        repository: &repository,
        digest: &pushed.digest,
        tags: vec![digest.to_string()],
        policy: &policy,
        created: "2026-01-15T10:00:00Z",
        today,
    };
    let lines = std::sync::Mutex::new(Vec::new());
    let progress = |line: String| {
        if let Ok(mut l) = lines.lock() {
            l.push(line);
        }
    };
    let digest = pushed.digest.as_str();

    // A source that is not the target is refused before anything is read.
    let other = ImageRef::in_repository(&repository, &digest_of(b"other"));
    let err = stage::scan_from(
        Source::Registry {
            client: &registry,
            image: &other,
        },
        &scanners,
        &referrers,
        target("main"),
        &progress,
    )
    .await
    .err()
    .expect("a mismatch");
    assert!(matches!(err, StageError::SourceMismatch { .. }), "{err}");

    let scanned = stage::scan_from(
        Source::Registry {
            client: &registry,
            image: &image,
        },
        &scanners,
        &referrers,
        target("main"),
        &progress,
    )
    .await
    .unwrap_or_else(|e| panic!("scan: {}", labforge_core::error_chain(&e)));
    let lines = lines.into_inner().expect("lines");
    eprintln!("{}", lines.join("\n"));
    let local = from_engine(&engine, &tag).await;
    assert_eq!(scanned.packages, local.collected.inventory.packages.len());
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("inventory:") && l.contains("(registry)")),
        "{lines:?}"
    );
    // The OSV scanner saw the inventory read from the registry.
    let found: Vec<(&str, &str)> = scanned
        .report
        .findings
        .iter()
        .map(|j| (j.finding.id.as_str(), j.finding.installed.as_str()))
        .collect();
    assert!(found.contains(&("PYSEC-9999-1", "2.31.0")), "{found:?}");
    // Trivy was pointed at the registry image (and failed closed: no database).
    let trivy_run = scanned
        .report
        .scanners
        .iter()
        .find(|s| s.name == "trivy")
        .expect("a trivy run");
    let error = trivy_run
        .error
        .as_deref()
        .expect("trivy has no database here");
    assert!(error.contains("--image-src remote --insecure"), "{error}");
    assert!(
        error.contains(&format!("-- {repository}@{digest}")),
        "{error}"
    );
    // The SBOM is attached to the digest in the registry.
    assert_eq!(scanned.attach_error, None);
    let fetched = referrers
        .fetch(&repository, digest, SBOM_ARTIFACT_TYPE)
        .await
        .expect("fetch the SBOM")
        .expect("an SBOM is attached");
    assert_eq!(fetched.payload.as_ref(), scanned.sbom.as_slice());
    let bom: serde_json::Value = serde_json::from_slice(&scanned.sbom).expect("JSON");
    let names: BTreeMap<&str, &str> = bom["components"]
        .as_array()
        .expect("components")
        .iter()
        .filter_map(|c| Some((c["name"].as_str()?, c["version"].as_str()?)))
        .collect();
    assert_eq!(names.get("requests"), Some(&"2.31.0"), "{names:?}");
    // The scan module's re-export is the same function.
    let again = scan::inventory_from_registry(&registry, &image)
        .await
        .expect("again");
    assert_eq!(again.collected, local.collected);
}

/// A registry stand-in that serves one image whose only layer breaks off
/// half-way: the `Content-Length` announces the whole blob, the connection
/// closes after half of it. Answers `connections` requests, then stops.
fn serve_a_layer_that_breaks_off(connections: usize) -> (String, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("usr")).expect("mkdir");
    std::fs::write(
        dir.path().join("usr/data.bin"),
        digest_of(b"seed").repeat(16 << 10),
    )
    .expect("write");
    let tar = dir.path().join("layer.tar");
    let out = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(dir.path())
        .arg("usr")
        .output()
        .expect("the tar program");
    assert!(out.status.success(), "tar: {out:?}");
    let layer = std::fs::read(&tar).expect("the layer tar");
    let layer_digest = digest_of(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .expect("JSON");
    let config_digest = digest_of(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .expect("JSON");
    let manifest_digest = digest_of(&manifest);
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = listener.local_addr().expect("its address").to_string();
    let paths = (
        format!("/v2/cut/manifests/{manifest_digest}"),
        format!("/v2/cut/blobs/{config_digest}"),
        format!("/v2/cut/blobs/{layer_digest}"),
    );
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).map_or(true, |n| n == 0) || line == "\r\n" {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let (status, content_type, body, send): (&str, &str, &[u8], usize) = if path == paths.0
            {
                let n = manifest.len();
                (
                    "200 OK",
                    "application/vnd.oci.image.manifest.v1+json",
                    &manifest,
                    n,
                )
            } else if path == paths.1 {
                let n = config.len();
                ("200 OK", "application/octet-stream", &config, n)
            } else if path == paths.2 {
                // Half the blob, then the connection closes.
                let n = layer.len() / 2;
                ("200 OK", "application/octet-stream", &layer, n)
            } else {
                ("404 Not Found", "text/plain", b"", 0)
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body[..send]);
            let _ = stream.flush();
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    });
    (addr, manifest_digest, layer_digest)
}

#[tokio::test]
async fn a_layer_that_breaks_off_mid_stream_is_an_error_naming_the_image_and_the_layer() {
    let (addr, digest, layer) = serve_a_layer_that_breaks_off(3);
    let image = image_ref(&addr, "cut", &digest);
    let err = inventory_from_registry(&client(&addr, None), &image)
        .await
        .expect_err("the layer breaks off");
    let text = labforge_core::error_chain(&err);
    eprintln!("{text}");
    assert!(
        matches!(err, LayersError::LayerStream { .. }),
        "{err:?}: {text}"
    );
    assert!(text.contains(&format!("{addr}/cut@{digest}")), "{text}");
    assert!(text.contains(&format!("layer {layer} (1 of 1)")), "{text}");
    assert!(
        text.contains(&format!("http://{addr}/v2/cut/blobs/{layer}")),
        "{text}"
    );
}
