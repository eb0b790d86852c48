//! `plan` against a real CNCF registry (started by scripts/services.sh):
//! one manifest HEAD per image, presence read right, errors that say what to
//! do. A registry that is not running fails these tests; it is never skipped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use labforge_builder::{Layout, PlanError, RegistryError, RegistryOptions};
use labforge_core::Analyzed;
use labforge_core::catalog::Registry;
use labforge_core::plan::{Action, Presence};
use labforge_core::render::BuildEnv;

fn registry_addr() -> String {
    std::env::var("LABFORGE_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

/// A fresh repository prefix, so runs never see each other's images.
fn target() -> Registry {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Registry::parse(&format!(
        "{}/it-{}-{nanos}",
        registry_addr(),
        std::process::id()
    ))
    .expect("valid target")
}

fn shipped() -> Analyzed {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let layout = Layout {
        catalog: root.join("catalog"),
        dockerfiles: root.join("dockerfiles"),
    };
    labforge_builder::analyze(&layout, &BuildEnv::default()).expect("shipped catalog is valid")
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("skopeo is required (scripts/services.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn require_registry() {
    let addr = registry_addr();
    let ok = std::net::TcpStream::connect(&addr).is_ok();
    assert!(
        ok,
        "no registry answers at {addr}: run `bash scripts/services.sh` (the README's test command does)"
    );
}

/// Plan the shipped catalog against `target` (8 requests at a time); the plan
/// and how many manifest HEADs it sent.
async fn plan_at(analyzed: &Analyzed, target: &Registry) -> (labforge_core::plan::Plan, usize) {
    labforge_builder::plan(
        analyzed,
        Some(target),
        RegistryOptions::default(),
        &BTreeMap::new(),
        8,
    )
    .await
    .expect("plan against the registry")
}

#[tokio::test]
async fn plan_heads_each_image_once_and_sees_what_is_present() {
    require_registry();
    let analyzed = shipped();
    let target = target();
    let n = analyzed.catalog.images.len();

    let (plan, heads) = plan_at(&analyzed, &target).await;
    assert_eq!(heads, n, "one manifest HEAD per image");
    assert!(
        plan.images
            .iter()
            .all(|i| i.registry == Presence::Absent && i.action == Action::Build)
    );

    // Put a real image at the content tag of `grading`, as a push would.
    let grading = plan
        .images
        .iter()
        .find(|i| i.name == "grading")
        .expect("grading planned");
    let reference = grading
        .reference
        .clone()
        .expect("reference with a registry");
    assert_eq!(
        reference,
        format!("{}:{}", target.repository("grading"), grading.tag)
    );
    let source = format!("docker://{}/standin/busybox:latest", registry_addr());
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &source,
        &format!("docker://{reference}"),
    ]);
    let digest = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{reference}"),
    ]);

    let (plan, heads) = plan_at(&analyzed, &target).await;
    assert_eq!(heads, n);
    for image in &plan.images {
        if image.name == "grading" {
            assert_eq!(image.registry, Presence::Present(digest.clone()));
            assert_eq!(image.action, Action::Skip);
        } else {
            assert_eq!(image.registry, Presence::Absent, "{}", image.name);
        }
    }
}

#[tokio::test]
async fn unreachable_registry_is_a_clear_error() {
    let analyzed = shipped();
    let closed = Registry::parse("127.0.0.1:9/labforge").expect("valid");
    let err = labforge_builder::plan(
        &analyzed,
        Some(&closed),
        RegistryOptions::default(),
        &BTreeMap::new(),
        4,
    )
    .await
    .expect_err("nothing listens on port 9");
    match &err {
        PlanError::Registry {
            error: RegistryError::Unreachable { url, .. },
            ..
        } => {
            assert!(url.starts_with("http://127.0.0.1:9/v2/"), "{url}");
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(
        err.to_string()
            .contains("is it running, and is --registry right?"),
        "{err}"
    );
}

#[test]
fn plan_command_shows_presence() {
    require_registry();
    let target = target();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let t = format!("{}/{}", target.host, target.prefix);
    let out = Command::new(env!("CARGO_BIN_EXE_labforge"))
        .args(["plan", "--registry", &t])
        .current_dir(&root)
        .env_remove("LABFORGE_CONFIG")
        .env_remove("LABFORGE_CATALOG")
        .env_remove("LABFORGE_DOCKERFILES")
        .output()
        .expect("labforge runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("absent") && stdout.contains("new: no earlier build"),
        "{stdout}"
    );
    let n = shipped().catalog.images.len();
    assert!(
        stdout.contains(&format!("registry {t}, {n} manifest HEAD requests")),
        "{stdout}"
    );
}
