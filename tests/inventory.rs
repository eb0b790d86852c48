//! The package inventory against the real Docker Engine (started by
//! scripts/services.sh): a test image whose later layers delete, replace and
//! hide package metadata (`tests/projects/inventory/`) lists exactly what
//! survives, read from the layer store and from the export alike; the
//! Debian stand-in's dpkg packages equal what dpkg itself and Trivy report.
//! A missing engine or Trivy fails these tests; they are never skipped.
//! Every image built here is tagged uniquely and removed, also on failure.

mod common;
use common::Images;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use labforge_builder::engine::Engine;
use labforge_builder::push::LayerSource;
use labforge_builder::scan::layers::{self, Inventoried, LayersError};
use labforge_core::scan::{Distro, PackageKind};

const BUSYBOX: &str = "labforge-standin/busybox:latest";
const DEBIAN: &str = "labforge-standin/debian:bookworm";

async fn engine() -> Engine {
    match Engine::connect().await {
        Ok(e) => e,
        Err(e) => panic!(
            "{}\nThe inventory tests need the Docker Engine: run `bash scripts/services.sh` (the README's test command does).",
            labforge_core::error_chain(&e)
        ),
    }
}

fn project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/projects/inventory")
}

/// A tag no other test or run uses.
fn unique_tag(what: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "labforge-it/inventory-{what}:{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Run a program, insist that it succeeds, and return its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} is required (`bash scripts/services.sh` installs it): {e}")
        });
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The entry names of each layer tar of an engine image, in image order,
/// from `docker save` (to show that the test image really has the
/// whiteouts and opaque folders it is meant to have).
fn layer_listings(image: &str) -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("image.tar");
    run(
        "docker",
        &["save", "-o", archive.to_str().expect("utf-8 path"), image],
    );
    let root = dir.path().join("x");
    std::fs::create_dir(&root).expect("mkdir");
    run(
        "tar",
        &[
            "-xf",
            archive.to_str().expect("utf-8 path"),
            "-C",
            root.to_str().expect("utf-8 path"),
        ],
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("manifest.json")).expect("manifest"))
            .expect("manifest.json");
    manifest[0]["Layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            let path = root.join(l.as_str().expect("layer path"));
            run("tar", &["-tf", path.to_str().expect("utf-8 path")])
                .lines()
                .map(|s| s.trim_start_matches("./").to_string())
                .collect()
        })
        .collect()
}

async fn inventory(engine: &Engine, image: &str, source: LayerSource) -> Inventoried {
    let started = Instant::now();
    match layers::inventory(engine, image, source).await {
        Ok(i) => {
            eprintln!(
                "{image} via {}: {} layers, {} bytes, {} packages in {:?}",
                i.source_used,
                i.layers,
                i.bytes_read,
                i.collected.inventory.packages.len(),
                started.elapsed()
            );
            i
        }
        Err(e) => panic!(
            "inventory of {image} ({source:?}): {}",
            labforge_core::error_chain(&e)
        ),
    }
}

/// (kind, name, version, path) of every package, in inventory order.
fn rows(i: &Inventoried) -> Vec<(PackageKind, String, String, String)> {
    i.collected
        .inventory
        .packages
        .iter()
        .map(|p| (p.kind, p.name.clone(), p.version.clone(), p.path.clone()))
        .collect()
}

fn debian_12() -> Distro {
    Distro {
        id: "debian".into(),
        version_id: "12".into(),
        codename: "bookworm".into(),
    }
}

#[tokio::test]
async fn deleted_replaced_and_hidden_metadata_is_left_out_by_both_sources() {
    let engine = engine().await;
    let mut images = Images::default();
    let tag = unique_tag("layered");
    images.add(&tag);
    run(
        "docker",
        &[
            "build",
            "-q",
            "--build-arg",
            &format!("BASE_IMAGE={BUSYBOX}"),
            "-t",
            &tag,
            project().to_str().expect("utf-8 path"),
        ],
    );

    // The image really deletes, replaces and hides: its layers say so.
    let listings = layer_listings(&tag);
    let has = |name: &str| listings.iter().position(|l| l.iter().any(|e| e == name));
    let whiteouts = [
        "usr/lib/python3/dist-packages/.wh.six-1.16.0.dist-info",
        "opt/conda/conda-meta/.wh.zlib-1.2.13-h5eee18b_0.json",
        "usr/lib/python3/dist-packages/.wh.requests-2.28.1.dist-info",
        "opt/conda/lib/python3.11/site-packages/.wh..wh..opq",
    ];
    for w in whiteouts {
        assert!(has(w).is_some(), "no layer has {w}: {listings:#?}");
    }
    let status_layers = listings
        .iter()
        .filter(|l| l.iter().any(|e| e == "var/lib/dpkg/status"))
        .count();
    assert_eq!(status_layers, 2, "the dpkg status is written twice");

    let expected: Vec<(PackageKind, String, String, String)> = {
        let mut v: Vec<_> = [
            (
                PackageKind::Deb,
                "base-files",
                "12.4+deb12u5",
                "var/lib/dpkg/status",
            ),
            (
                PackageKind::Deb,
                "bash",
                "5.2.15-2+b2",
                "var/lib/dpkg/status",
            ),
            (
                PackageKind::Deb,
                "libssl3",
                "3.0.15-1~deb12u1",
                "var/lib/dpkg/status",
            ),
            (
                PackageKind::Deb,
                "zlib1g",
                "1:1.2.13.dfsg-1",
                "var/lib/dpkg/status",
            ),
            (
                PackageKind::Pypi,
                "attrs",
                "23.2.0",
                "opt/conda/lib/python3.11/site-packages/attrs-23.2.0.dist-info/METADATA",
            ),
            (
                PackageKind::Pypi,
                "chardet",
                "5.1.0",
                "usr/lib/python3/dist-packages/chardet-5.1.0.egg-info/PKG-INFO",
            ),
            (
                PackageKind::Pypi,
                "pyxdg",
                "0.28",
                "usr/lib/python3/dist-packages/pyxdg-0.28.egg-info",
            ),
            (
                PackageKind::Pypi,
                "requests",
                "2.31.0",
                "usr/lib/python3/dist-packages/requests-2.31.0.dist-info/METADATA",
            ),
            (
                PackageKind::Conda,
                "python",
                "3.11.8",
                "opt/conda/conda-meta/python-3.11.8-h955ad1f_0.json",
            ),
            (
                PackageKind::Conda,
                "tk",
                "8.6.12",
                "opt/conda/conda-meta/tk-8.6.12-h1ccaba5_0.json",
            ),
        ]
        .into_iter()
        .map(|(k, n, v, p)| (k, n.to_string(), v.to_string(), p.to_string()))
        .collect();
        v.sort();
        v
    };

    let mut results = Vec::new();
    for (source, name) in [
        (LayerSource::LayerStore, "layer store"),
        (LayerSource::Export, "export"),
    ] {
        let got = inventory(&engine, &tag, source).await;
        assert_eq!(got.source_used, name);
        assert_eq!(got.layers, listings.len(), "{name}");
        assert!(got.bytes_read > 1_900_000, "busybox alone is ~2 MB: {name}");
        assert_eq!(got.collected.inventory.distro, Some(debian_12()), "{name}");
        let mut actual = rows(&got);
        actual.sort();
        assert_eq!(actual, expected, "{name}");
        assert!(
            got.collected.warnings.is_empty(),
            "{name}: {:?}",
            got.collected.warnings
        );
        // dpkg details survive the merge: the source package and the architecture.
        let deb = |n: &str| {
            got.collected
                .inventory
                .packages
                .iter()
                .find(|p| p.kind == PackageKind::Deb && p.name == n)
                .unwrap_or_else(|| panic!("{name}: no deb {n}"))
                .clone()
        };
        let libssl = deb("libssl3");
        assert_eq!(libssl.arch, "amd64");
        let source = libssl.source.expect("libssl3 has a source package");
        assert_eq!(
            (source.name.as_str(), source.version.as_str()),
            ("openssl", "3.0.15-1~deb12u1")
        );
        let bash = deb("bash").source.expect("bash names its source");
        assert_eq!(
            (bash.name.as_str(), bash.version.as_str()),
            ("bash", "5.2.15-2")
        );
        results.push(got);
    }
    let (store, export) = (&results[0], &results[1]);
    assert_eq!(store.image_id, export.image_id);
    assert_eq!(store.bytes_read, export.bytes_read);
    assert_eq!(store.collected.inventory, export.collected.inventory);
    assert_eq!(store.collected.warnings, export.collected.warnings);
}

/// (name, version, arch) of every installed package, as dpkg itself says.
fn dpkg_query(image: &str) -> BTreeSet<(String, String, String)> {
    let format = "${db:Status-Status} ${Package} ${Version} ${Architecture}\\n";
    run(
        "docker",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            image,
            "dpkg-query",
            "-W",
            "-f",
            format,
        ],
    )
    .lines()
    .filter_map(|l| {
        let mut f = l.split_whitespace();
        let (status, name, version, arch) = (f.next()?, f.next()?, f.next()?, f.next()?);
        (status == "installed").then(|| (name.to_string(), version.to_string(), arch.to_string()))
    })
    .collect()
}

/// (name, version) of every Python distribution, as pip itself says.
fn pip_list(image: &str) -> BTreeSet<(String, String)> {
    let out = run(
        "docker",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            image,
            "python3",
            "-m",
            "pip",
            "list",
            "--format=json",
            "--disable-pip-version-check",
        ],
    );
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).expect("pip's JSON");
    list.iter()
        .map(|p| {
            (
                p["name"].as_str().expect("name").to_string(),
                p["version"].as_str().expect("version").to_string(),
            )
        })
        .collect()
}

fn of_kind(i: &Inventoried, kind: PackageKind) -> Vec<&labforge_core::scan::Package> {
    i.collected
        .inventory
        .packages
        .iter()
        .filter(|p| p.kind == kind)
        .collect()
}

#[tokio::test]
async fn debian_standin_matches_dpkg_query_and_pip() {
    let engine = engine().await;
    let dpkg = dpkg_query(DEBIAN);
    assert!(dpkg.len() > 50, "a Debian base has many packages: {dpkg:?}");
    let pip = pip_list(DEBIAN);

    let auto = inventory(&engine, DEBIAN, LayerSource::Auto).await;
    assert_eq!(
        auto.source_used, "layer store",
        "a local overlay2 engine is read from its layer store"
    );
    assert_eq!(auto.collected.inventory.distro, Some(debian_12()));
    assert!(
        auto.collected.warnings.is_empty(),
        "{:?}",
        auto.collected.warnings
    );
    let debs = of_kind(&auto, PackageKind::Deb);
    let ours: BTreeSet<(String, String, String)> = debs
        .iter()
        .map(|p| (p.name.clone(), p.version.clone(), p.arch.clone()))
        .collect();
    let missing: Vec<_> = dpkg.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&dpkg).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "dpkg-query lists but the inventory lacks: {missing:?}\nthe inventory lists but dpkg-query lacks: {extra:?}"
    );
    assert_eq!(debs.len(), dpkg.len(), "each dpkg package once");

    // Debian's own python3-pip, -setuptools and -wheel: Python metadata too.
    let ours: BTreeSet<(String, String)> = of_kind(&auto, PackageKind::Pypi)
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    assert_eq!(ours, pip, "pip list");
    assert!(of_kind(&auto, PackageKind::Conda).is_empty());
    assert_eq!(
        auto.collected.inventory.packages.len(),
        dpkg.len() + pip.len()
    );

    let export = inventory(&engine, DEBIAN, LayerSource::Export).await;
    assert_eq!(export.source_used, "export");
    assert_eq!(export.image_id, auto.image_id);
    assert_eq!(export.collected, auto.collected);
}

#[tokio::test]
async fn debian_standin_matches_trivy() {
    let engine = engine().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("sbom.json");
    run(
        "trivy",
        &[
            "image",
            "--format",
            "cyclonedx",
            "--quiet",
            "--output",
            report.to_str().expect("utf-8 path"),
            DEBIAN,
        ],
    );
    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("trivy's SBOM")).expect("json");
    let trivy: BTreeSet<(String, String)> = sbom["components"]
        .as_array()
        .expect("components")
        .iter()
        .filter(|c| {
            c["purl"]
                .as_str()
                .is_some_and(|p| p.starts_with("pkg:deb/"))
        })
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_string(),
                c["version"].as_str().expect("version").to_string(),
            )
        })
        .collect();
    assert!(trivy.len() > 50, "{trivy:?}");

    let inventoried = inventory(&engine, DEBIAN, LayerSource::Auto).await;
    let ours: BTreeSet<(String, String)> = of_kind(&inventoried, PackageKind::Deb)
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    let only_trivy: Vec<_> = trivy.difference(&ours).collect();
    let only_ours: Vec<_> = ours.difference(&trivy).collect();
    assert!(
        only_trivy.is_empty() && only_ours.is_empty(),
        "only Trivy lists: {only_trivy:?}\nonly the inventory lists: {only_ours:?}"
    );

    // Trivy leaves out Python packages that a Debian package installed (it
    // skips files dpkg owns); the inventory lists them. Every Python
    // package Trivy lacks must be such a one: dpkg names its owner.
    let trivy_python: BTreeSet<(String, String)> = sbom["components"]
        .as_array()
        .expect("components")
        .iter()
        .filter(|c| {
            c["purl"]
                .as_str()
                .is_some_and(|p| p.starts_with("pkg:pypi/"))
        })
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_lowercase(),
                c["version"].as_str().expect("version").to_string(),
            )
        })
        .collect();
    let python_only_ours: Vec<String> = of_kind(&inventoried, PackageKind::Pypi)
        .iter()
        .filter(|p| !trivy_python.contains(&(p.name.to_lowercase(), p.version.clone())))
        .map(|p| format!("/{}", p.path))
        .collect();
    assert!(!python_only_ours.is_empty(), "the stand-in has python3-pip");
    let mut args = vec!["run", "--rm", "--network", "none", DEBIAN, "dpkg", "-S"];
    args.extend(python_only_ours.iter().map(String::as_str));
    let owners = run("docker", &args);
    assert_eq!(
        owners.lines().count(),
        python_only_ours.len(),
        "each Python package only the inventory lists belongs to a Debian package: {owners}"
    );
    // Trivy names the distribution too (with the point release: 12.x).
    let os: BTreeMap<&str, &str> = sbom["components"]
        .as_array()
        .expect("components")
        .iter()
        .filter(|c| c["type"] == "operating-system")
        .filter_map(|c| Some((c["name"].as_str()?, c["version"].as_str()?)))
        .collect();
    assert!(
        os.get("debian").is_some_and(|v| v.starts_with("12")),
        "{os:?}"
    );
}

#[tokio::test]
async fn missing_image_says_so() {
    let engine = engine().await;
    let image = "labforge-it/inventory-nothing-here:never";
    for source in [
        LayerSource::Auto,
        LayerSource::Export,
        LayerSource::LayerStore,
    ] {
        let err = layers::inventory(&engine, image, source)
            .await
            .expect_err("no such image");
        assert!(matches!(err, LayersError::NoImage { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(image), "{text}");
        assert!(text.contains("docker images"), "{text}");
    }
}
