//! Pushing engine images to real registries: the local CNCF registry
//! (started by scripts/services.sh) and registries these tests start
//! themselves (one that is killed half-way through a push, one that wants a
//! login). Images are built on the busybox stand-in with random bytes, so
//! every run pushes new blobs. A missing engine or registry fails these
//! tests; they are never skipped.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use labforge_builder::engine::Engine;
use labforge_builder::push::{
    self, Compression, LayerSource, PushError, PushEvent, PushOptions, Pushed,
};
use labforge_builder::{ImageRef, RegistryClient, RegistryOptions};

const BUSYBOX: &str = "labforge-standin/busybox:latest";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn registry_addr() -> String {
    std::env::var("LABFORGE_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

fn require_registry(addr: &str) {
    assert!(
        TcpStream::connect(addr).is_ok(),
        "no registry at {addr}: run `bash scripts/services.sh` (the README's test command does)"
    );
}

async fn engine() -> Engine {
    match Engine::connect().await {
        Ok(e) => e,
        Err(e) => panic!(
            "{}\nThe push tests need the Docker Engine: run `bash scripts/services.sh`.",
            labforge_core::error_chain(&e)
        ),
    }
}

/// Something unique per test and run.
fn unique(what: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{what}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Pseudo-random bytes, different every call.
fn random_bytes(len: usize) -> Vec<u8> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ (u64::from(std::process::id()) << 32);
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is required (scripts/services.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Engine images removed when dropped (also after a failed assertion).
#[derive(Default)]
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in self.0.iter().rev() {
            let _ = Command::new("docker")
                .args(["rmi", "-f", image])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Build a small image on the busybox stand-in: a random layer of `random`
/// bytes (`/data/random.bin`) and a text layer (`/data/hello.txt` = `text`).
fn build_image(images: &mut Images, random: usize, text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("random.bin"), random_bytes(random)).expect("write");
    std::fs::write(dir.path().join("hello.txt"), text).expect("write");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {BUSYBOX}\nCOPY random.bin /data/random.bin\nCOPY hello.txt /data/hello.txt\n"
        ),
    )
    .expect("write");
    let tag = format!("labforge-it/push:{}", unique("img"));
    let out = Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(dir.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("the docker CLI is required (scripts/services.sh installs it)");
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    images.0.push(tag.clone());
    tag
}

fn client(addr: &str, user: Option<&str>, password: Option<&str>) -> RegistryClient {
    RegistryClient::new(
        RegistryOptions {
            username: user.map(String::from),
            password: password.map(String::from),
            ..Default::default()
        },
        &[addr],
    )
    .expect("client")
}

fn target(addr: &str, repository: &str) -> ImageRef {
    ImageRef {
        registry: addr.to_string(),
        repository: repository.to_string(),
        reference: "latest".into(),
    }
}

fn options(state: &Path, compression: Compression) -> PushOptions {
    PushOptions {
        compression,
        threads: 2,
        retries: 3,
        retry_delay: Duration::from_millis(200),
        spool_dir: state.join("spool"),
        cache_dir: Some(state.join("push-cache")),
    }
}

/// Every event, for assertions.
#[derive(Default)]
struct Events(Mutex<Vec<PushEvent>>);

impl Events {
    fn push(&self, e: PushEvent) {
        if let Ok(mut v) = self.0.lock() {
            v.push(e);
        }
    }
    fn retries(&self) -> usize {
        self.0
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|e| matches!(e, PushEvent::Retry { .. }))
                    .count()
            })
            .unwrap_or(0)
    }
}

fn skopeo_digest(reference: &str) -> String {
    let json = run(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).expect("skopeo JSON");
    v["Digest"].as_str().expect("a digest").to_string()
}

fn raw_manifest(reference: &str) -> serde_json::Value {
    let json = run(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{reference}"),
        ],
    );
    serde_json::from_str(&json).expect("manifest JSON")
}

fn spool_is_empty(state: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(state.join("spool"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "spool files left: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_push_pulls_runs_mounts_and_repushes() {
    let addr = registry_addr();
    require_registry(&addr);
    let engine = engine().await;
    let mut images = Images::default();
    let text = format!("hello from {}\n", unique("gzip"));
    let image = build_image(&mut images, 3 << 20, &text);
    let state = tempfile::tempdir().expect("tempdir");
    let registry = client(&addr, None, None);
    let repo = format!("it/{}", unique("push-gzip"));
    let events = Events::default();
    let progress = |e: PushEvent| events.push(e);
    let opts = options(state.path(), Compression::Gzip);

    // 1. A fresh push: everything but the busybox layers is uploaded.
    let tags = vec!["content-0123456789ab".to_string(), "latest".to_string()];
    let pushed = push::push_image(
        &engine,
        &registry,
        &image,
        &target(&addr, &repo),
        &tags,
        &opts,
        &progress,
    )
    .await
    .expect("push");
    assert!(pushed.exported);
    assert!(pushed.blobs_uploaded >= 3, "{pushed:?}"); // config + two new layers
    assert!(pushed.uploaded_bytes >= 3 << 20, "{pushed:?}");
    assert_eq!(pushed.tags, tags);
    let image_id = run(
        "docker",
        &["image", "inspect", "--format", "{{.Id}}", &image],
    );
    assert_eq!(pushed.config_digest, image_id);
    for tag in &tags {
        assert_eq!(
            skopeo_digest(&format!("{addr}/{repo}:{tag}")),
            pushed.digest
        );
    }
    let manifest = raw_manifest(&format!("{addr}/{repo}@{}", pushed.digest));
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(manifest["config"]["digest"], image_id.as_str());
    for layer in manifest["layers"].as_array().expect("layers") {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }
    spool_is_empty(state.path());

    // The engine pulls it back by digest (after forgetting the local image) and runs it.
    let pinned = format!("{addr}/{repo}@{}", pushed.digest);
    images.0.push(pinned.clone());
    run("docker", &["rmi", &image]);
    run("docker", &["pull", "-q", &pinned]);
    let out = run(
        "docker",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &pinned,
            "cat",
            "/data/hello.txt",
        ],
    );
    assert_eq!(format!("{out}\n"), text);

    // 2. Another repository of the same registry: all mounted, nothing read or sent.
    let repo2 = format!("it/{}", unique("push-gzip-second"));
    let t = Instant::now();
    let second = push::push_image(
        &engine,
        &registry,
        &pinned,
        &target(&addr, &repo2),
        &tags[..1],
        &opts,
        &progress,
    )
    .await
    .expect("second push");
    eprintln!("second-repository push: {:?}", t.elapsed());
    assert_eq!(second.digest, pushed.digest);
    assert_eq!(second.uploaded_bytes, 0, "{second:?}");
    assert_eq!(second.blobs_uploaded, 0, "{second:?}");
    assert!(!second.exported, "{second:?}");
    assert_eq!(
        second.blobs_mounted + second.blobs_present,
        manifest["layers"].as_array().map_or(0, Vec::len) + 1
    );
    assert!(second.blobs_mounted >= 3, "{second:?}");
    assert_eq!(
        skopeo_digest(&format!("{addr}/{repo2}:{}", tags[0])),
        pushed.digest
    );

    // 3. Unchanged: nothing uploaded, no export, a new moving tag appears.
    let more = vec![
        tags[0].clone(),
        "latest".to_string(),
        "20261126".to_string(),
    ];
    let t = Instant::now();
    let again = push::push_image(
        &engine,
        &registry,
        &pinned,
        &target(&addr, &repo),
        &more,
        &opts,
        &progress,
    )
    .await
    .expect("re-push");
    eprintln!("unchanged re-push: {:?}", t.elapsed());
    assert_eq!(again.digest, pushed.digest);
    assert_eq!(
        (
            again.uploaded_bytes,
            again.blobs_uploaded,
            again.blobs_mounted
        ),
        (0, 0, 0)
    );
    assert!(!again.exported);
    assert_eq!(again.tags, more);
    assert_eq!(
        skopeo_digest(&format!("{addr}/{repo}:20261126")),
        pushed.digest
    );
    assert_eq!(events.retries(), 0);

    // Without a cache the same push reads the engine again, through the
    // export API and from the layer store: the same blobs (compression is
    // deterministic and both give the engine's exact layer bytes), all
    // present already, nothing uploaded.
    let no_cache = PushOptions {
        cache_dir: None,
        ..opts.clone()
    };
    for source in [LayerSource::Export, LayerSource::LayerStore] {
        let plain = push::push_image_from(
            &engine,
            &registry,
            &pinned,
            &target(&addr, &repo),
            &tags[..1],
            &no_cache,
            &progress,
            source,
        )
        .await
        .unwrap_or_else(|e| panic!("push without cache from {source:?}: {e}"));
        assert!(plain.exported);
        assert_eq!(plain.digest, pushed.digest, "{source:?}");
        assert_eq!(plain.uploaded_bytes, 0, "{source:?}");
    }
    spool_is_empty(state.path());

    // The binary: same digest, JSON on stdout.
    let repo3 = format!("it/{}", unique("push-cli"));
    let out = Command::new(env!("CARGO_BIN_EXE_labforge"))
        .args([
            "push",
            &pinned,
            &format!("{addr}/{repo3}:cli"),
            "--tag",
            "latest",
            "--json",
            "--state",
        ])
        .arg(state.path())
        .output()
        .expect("run labforge");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(cli["digest"], pushed.digest.as_str());
    assert_eq!(cli["exported"], false);
    assert_eq!(cli["tags"], serde_json::json!(["cli", "latest"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mounted"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_push() {
    let addr = registry_addr();
    require_registry(&addr);
    let engine = engine().await;
    let mut images = Images::default();
    let text = format!("zstd {}\n", unique("zstd"));
    let image = build_image(&mut images, 2 << 20, &text);
    let state = tempfile::tempdir().expect("tempdir");
    let registry = client(&addr, None, None);
    let repo = format!("it/{}", unique("push-zstd"));
    let progress = |_: PushEvent| {};
    let pushed: Pushed = push::push_image(
        &engine,
        &registry,
        &image,
        &target(&addr, &repo),
        &["z".to_string()],
        &options(state.path(), Compression::Zstd),
        &progress,
    )
    .await
    .expect("push");
    let reference = format!("{addr}/{repo}:z");
    assert_eq!(skopeo_digest(&reference), pushed.digest);
    let manifest = raw_manifest(&reference);
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 5, "busybox's three layers and two more");
    for layer in layers {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }

    // Copy it out: skopeo checks every blob against its digest; then the
    // layers decompress to the image's diff_ids.
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().join("image");
    run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("dir:{}", dir.display()),
        ],
    );
    let diff_ids = run(
        "docker",
        &[
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            &image,
        ],
    );
    let diff_ids: Vec<String> = serde_json::from_str(&diff_ids).expect("diff_ids");
    for (layer, diff_id) in layers.iter().zip(&diff_ids) {
        let digest = layer["digest"].as_str().expect("digest");
        let hex = digest.trim_start_matches("sha256:");
        let path = dir.join(hex);
        assert_eq!(
            format!(
                "sha256:{}",
                run("sha256sum", &[path.to_str().expect("utf8")])
                    .split(' ')
                    .next()
                    .unwrap_or("")
            ),
            digest
        );
        let unpacked = run(
            "sh",
            &["-c", &format!("zstd -dc {} | sha256sum", path.display())],
        );
        assert_eq!(
            format!("sha256:{}", unpacked.split(' ').next().unwrap_or("")),
            *diff_id
        );
    }

    // Docker Engine 20.10 cannot unpack zstd layers (it reads them as plain
    // tar); engines from 23 on pull and run the image from the registry copy.
    let pinned = format!("{addr}/{repo}@{}", pushed.digest);
    images.0.push(pinned.clone());
    run("docker", &["rmi", &image]);
    let version = run("docker", &["version", "--format", "{{.Server.Version}}"]);
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let pull = Command::new("docker")
        .args(["pull", "-q", &pinned])
        .output()
        .expect("docker");
    let stderr = String::from_utf8_lossy(&pull.stderr);
    if major >= 23 {
        assert!(pull.status.success(), "docker pull of zstd: {stderr}");
        let got = run(
            "docker",
            &[
                "run",
                "--rm",
                "--network",
                "none",
                &pinned,
                "cat",
                "/data/hello.txt",
            ],
        );
        assert_eq!(format!("{got}\n"), text);
    } else {
        assert!(
            !pull.status.success(),
            "Docker {version} pulled a zstd image"
        );
        assert!(stderr.contains("tar"), "Docker {version}: {stderr}");
    }
    spool_is_empty(state.path());
}

/// A registry process of our own, on a port and storage that survive restarts.
struct OwnRegistry {
    child: Option<Child>,
    addr: String,
    storage: tempfile::TempDir,
    login: bool,
}

impl OwnRegistry {
    fn start(login: bool) -> OwnRegistry {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut r = OwnRegistry {
            child: None,
            addr: format!("127.0.0.1:{port}"),
            storage: tempfile::tempdir().expect("tempdir"),
            login,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut command = Command::new("docker-registry");
        command
            .args([
                "serve",
                root()
                    .join("registry-config/config.yml")
                    .to_str()
                    .expect("utf8"),
            ])
            .env("REGISTRY_HTTP_ADDR", &self.addr)
            .env(
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
                self.storage.path(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.login {
            command
                .env("REGISTRY_AUTH", "htpasswd")
                .env("REGISTRY_AUTH_HTPASSWD_REALM", "labforge-test")
                .env(
                    "REGISTRY_AUTH_HTPASSWD_PATH",
                    root().join("registry-config/htpasswd.example"),
                );
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("docker-registry is required (scripts/services.sh installs it): {e}")
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_dies_mid_push() {
    let engine = engine().await;
    let mut images = Images::default();
    let image = build_image(&mut images, 64 << 20, "big\n");
    let server = Arc::new(Mutex::new(OwnRegistry::start(false)));
    let addr = server.lock().expect("lock").addr.clone();
    let state = tempfile::tempdir().expect("tempdir");
    let registry = client(&addr, None, None);
    let killed = Arc::new(AtomicBool::new(false));
    let killed_while = Arc::new(Mutex::new(String::new()));
    let events = Events::default();
    let restarter: Mutex<Option<std::thread::JoinHandle<()>>> = Mutex::new(None);
    let progress = |e: PushEvent| {
        // Kill the registry the first time a big upload is under way (or, if
        // the upload was too quick to be seen, when the manifest is next);
        // start it again on the same port and storage 1.5 s later.
        let now = match &e {
            PushEvent::Uploading { bytes, total, .. } => *total > (32 << 20) && bytes < total,
            PushEvent::Manifest { .. } => true,
            _ => false,
        };
        if now && !killed.swap(true, Ordering::SeqCst) {
            if let Ok(mut w) = killed_while.lock() {
                *w = format!("{e}");
            }
            if let Ok(mut s) = server.lock() {
                s.kill();
            }
            let server = Arc::clone(&server);
            let handle = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1500));
                if let Ok(mut s) = server.lock() {
                    s.spawn();
                }
            });
            if let Ok(mut r) = restarter.lock() {
                *r = Some(handle);
            }
        }
        events.push(e);
    };
    let opts = PushOptions {
        retries: 8,
        retry_delay: Duration::from_millis(250),
        cache_dir: None,
        ..options(state.path(), Compression::Gzip)
    };
    let tag = "survivor".to_string();
    let result = push::push_image(
        &engine,
        &registry,
        &image,
        &target(&addr, "it/dies"),
        std::slice::from_ref(&tag),
        &opts,
        &progress,
    )
    .await;
    if let Some(h) = restarter.lock().ok().and_then(|mut r| r.take()) {
        let _ = h.join();
    }
    assert!(
        killed.load(Ordering::SeqCst),
        "the registry was never killed"
    );
    eprintln!(
        "killed during: {}",
        killed_while.lock().map(|s| s.clone()).unwrap_or_default()
    );
    assert!(events.retries() >= 1, "the lost registry caused no retry");
    let reference = format!("{addr}/it/dies:{tag}");
    match result {
        Ok(pushed) => {
            assert_eq!(skopeo_digest(&reference), pushed.digest);
            // Every blob arrived whole: skopeo verifies digests while copying.
            let out = tempfile::tempdir().expect("tempdir");
            run(
                "skopeo",
                &[
                    "copy",
                    "--src-tls-verify=false",
                    &format!("docker://{reference}"),
                    &format!("dir:{}", out.path().join("x").display()),
                ],
            );
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains(&addr) && message.contains("attempts"),
                "{message}"
            );
            let head = Command::new("skopeo")
                .args([
                    "inspect",
                    "--tls-verify=false",
                    &format!("docker://{reference}"),
                ])
                .output()
                .expect("skopeo");
            assert!(
                !head.status.success(),
                "a failed push left a manifest for {reference}"
            );
        }
    }
    spool_is_empty(state.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_fail_at_once() {
    let engine = engine().await;
    let server = OwnRegistry::start(true);
    let state = tempfile::tempdir().expect("tempdir");
    let events = Events::default();
    let progress = |e: PushEvent| events.push(e);
    let opts = PushOptions {
        retries: 5,
        retry_delay: Duration::from_millis(500),
        ..options(state.path(), Compression::Gzip)
    };
    for (user, password) in [(Some("labforge"), Some("wrong")), (None, None)] {
        let registry = client(&server.addr, user, password);
        let t = Instant::now();
        let err = push::push_image(
            &engine,
            &registry,
            BUSYBOX,
            &target(&server.addr, "it/denied"),
            &["x".to_string()],
            &opts,
            &progress,
        )
        .await
        .expect_err("refused");
        assert!(
            matches!(
                err,
                PushError::Denied {
                    status: 401 | 403,
                    ..
                } | PushError::Registry(_)
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(&server.addr), "{message}");
        assert!(message.contains("credentials"), "{message}");
        assert_eq!(events.retries(), 0, "401/403 must not be retried");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
    }
    // The right login works.
    let registry = client(&server.addr, Some("labforge"), Some("labforge-example"));
    let pushed = push::push_image(
        &engine,
        &registry,
        BUSYBOX,
        &target(&server.addr, "it/allowed"),
        &["x".to_string()],
        &opts,
        &progress,
    )
    .await
    .expect("push with the right login");
    assert_eq!(pushed.tags, ["x"]);
    spool_is_empty(state.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_says_so() {
    let addr = registry_addr();
    require_registry(&addr);
    let engine = engine().await;
    let state = tempfile::tempdir().expect("tempdir");
    let registry = client(&addr, None, None);
    let progress = |_: PushEvent| {};
    let err = push::push_image(
        &engine,
        &registry,
        "labforge-it/does-not-exist:nope",
        &target(&addr, "it/nothing"),
        &["x".to_string()],
        &options(state.path(), Compression::Gzip),
        &progress,
    )
    .await
    .expect_err("no such image");
    assert!(matches!(err, PushError::NoImage { .. }), "{err:?}");
}
