//! End to end: a shipped notebook image, built by `labforge build` from the
//! shipped catalog and templates on the debootstrapped Debian stand-in (in
//! the local registry, pinned by digest like a real base), smoke-tested,
//! pushed, pulled by digest and started, with the Jupyter server's `/api`
//! answering. Needs the engine, the registry and the stand-in that
//! scripts/services.sh provides, and PyPI; slow (a few minutes from a cold
//! build cache). It fails, never skips, when something is missing.

mod common;
use common::docker;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_shipped_notebook_image_builds_pushes_and_serves_api_from_its_digest() {
    let registry = std::env::var("LABFORGE_TEST_REGISTRY").unwrap_or_else(|_| {
        panic!("LABFORGE_TEST_REGISTRY is not set: run `bash scripts/services.sh` and `. /var/lib/labforge/env`")
    });
    let ca = std::env::var("LABFORGE_HOST_CA_BUNDLE")
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    let dir = tempfile::tempdir().expect("tempdir");
    // A prefix of its own: the image is really built and pushed, not found.
    let prefix = format!(
        "it-e2e/{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let config = format!(
        r#"catalog = "{catalog}"
dockerfiles = "{dockerfiles}"
state = "{state}"
registry = "{registry}/{prefix}"

[base_map]
"nvidia/cuda:*" = "{registry}/standin/debian:bookworm"
"ubuntu:22.04" = "{registry}/standin/debian:bookworm"

[build_args]
CODE_SERVER_URL = "none"

[build]
ca_bundle = "{ca}"

[scan]
scanners = ["osv"]
osv_db = "{osv}"
"#,
        osv = root().join("tests/fixtures/osv").display(),
        catalog = root().join("catalog").display(),
        dockerfiles = root().join("dockerfiles").display(),
        state = dir.path().join("state").display(),
    );
    let config_path = dir.path().join("labforge.toml");
    std::fs::write(&config_path, config).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_labforge"))
        .args([
            "--config",
            &config_path.display().to_string(),
            "build",
            "--json",
            "notebook-minimal-cpu",
        ])
        .env_remove("LABFORGE_REGISTRY")
        .env_remove("LABFORGE_STATE")
        .output()
        .expect("labforge runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "build failed:\n{stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary json");
    let image = summary["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|i| i["image"] == "notebook-minimal-cpu")
        .expect("the image is in the summary");
    assert_eq!(image["result"], "built", "{stderr}");
    // The build's own smoke tests: the catalog's, and the server test.
    let tests = image["tests"].as_array().expect("tests");
    let result = |name: &str| {
        tests
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["result"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("no test {name}: {tests:?}"))
    };
    assert_eq!(result("jupyterlab"), "passed");
    assert_eq!(result("singleuser"), "passed");
    assert_eq!(result("jupyter-server-api"), "passed");
    assert_eq!(result("code-server"), "skipped");
    // The base was pinned by digest and recorded.
    let bases = image["base_digests"].as_object().expect("base digests");
    assert!(!bases.is_empty(), "no base digest recorded");
    assert!(
        bases
            .values()
            .all(|d| d.as_str().is_some_and(|d| d.starts_with("sha256:"))),
        "{bases:?}"
    );

    // Pull by digest and start it the way the hub would: /api answers.
    let digest = image["digest"].as_str().expect("digest");
    let reference = format!(
        "{}@{digest}",
        image["repository"].as_str().expect("repository")
    );
    docker(&["pull", "--quiet", &reference]);
    let script = "jupyter server --no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port=8888 \
        --IdentityProvider.token= >/tmp/server.log 2>&1 & \
        for i in $(seq 90); do python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:8888/api\").read().decode())' 2>/dev/null && exit 0; sleep 1; done; \
        cat /tmp/server.log; exit 1";
    let run = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &reference,
        "sh",
        "-c",
        script,
    ]);
    let body = String::from_utf8_lossy(&run.stdout);
    let api: Value =
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("/api said {body:?}: {e}"));
    assert!(api["version"].is_string(), "{api}");
    // It runs as the notebook user, and the build CA is nowhere in it.
    let who = docker(&["run", "--rm", "--network", "none", &reference, "id", "-u"]);
    assert_eq!(String::from_utf8_lossy(&who.stdout).trim(), "1000");
    let history = docker(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        &reference,
    ]);
    assert!(!String::from_utf8_lossy(&history.stdout).contains("BEGIN CERTIFICATE"));
    let inspect = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        &reference,
    ]);
    let env = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        !env.contains("ca.pem") && !env.contains("LABFORGE_BUILD_CA"),
        "{env}"
    );
    // It passed the scan gate, and its SBOM, attached in the registry,
    // lists what dpkg and pip inside the image say is installed.
    assert_eq!(image["scan"]["verdict"], "pass", "{image:#}");
    assert_eq!(image["scan"]["published"], true);
    let out = Command::new(env!("CARGO_BIN_EXE_labforge"))
        .args([
            "--config",
            &config_path.display().to_string(),
            "sbom",
            &format!("notebook-minimal-cpu@{digest}"),
        ])
        .output()
        .expect("labforge runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sbom: Value = serde_json::from_slice(&out.stdout).expect("sbom json");
    let components = sbom["components"].as_array().expect("components");
    let kind_of = |c: &Value| {
        c["properties"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "labforge:package:kind"))
            .and_then(|p| p["value"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let mut debs: Vec<String> = components
        .iter()
        .filter(|c| kind_of(c) == "deb")
        .map(|c| {
            format!(
                "{} {}",
                c["name"].as_str().unwrap_or_default(),
                c["version"].as_str().unwrap_or_default()
            )
        })
        .collect();
    debs.sort();
    debs.dedup();
    let dpkg = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &reference,
        "dpkg-query",
        "-W",
        "-f",
        "${db:Status-Abbrev} ${Package} ${Version}\n",
    ]);
    let mut installed: Vec<String> = String::from_utf8_lossy(&dpkg.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("ii  "))
        .map(str::to_string)
        .collect();
    installed.sort();
    installed.dedup();
    assert_eq!(
        debs, installed,
        "the SBOM's dpkg packages differ from dpkg-query's"
    );
    let lab = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &reference,
        "python3",
        "-c",
        "import importlib.metadata as m; print(m.version('jupyterlab'))",
    ]);
    let lab_version = String::from_utf8_lossy(&lab.stdout).trim().to_string();
    assert!(
        components
            .iter()
            .any(|c| c["purl"] == format!("pkg:pypi/jupyterlab@{lab_version}")),
        "the SBOM has no pkg:pypi/jupyterlab@{lab_version}"
    );

    let tagged = format!(
        "{}:{}",
        image["repository"].as_str().unwrap_or_default(),
        image["content_tag"].as_str().unwrap_or_default()
    );
    let _ = Command::new("docker")
        .args(["rmi", &reference, &tagged])
        .output();
}
