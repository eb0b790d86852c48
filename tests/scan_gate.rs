//! The scan gate of `labforge build`, against the real Docker Engine, the
//! local registry and real scanners, on the sample project in
//! tests/projects/gate: `webapp` carries the metadata of Jinja2 2.10, which
//! two real PyPA advisories (in tests/projects/gate/osv) affect.
//!
//! What must hold: a failing image keeps only its content tag (no moving
//! tags, so nobody gets it), its SBOM and report are attached to it all the
//! same, a waiver publishes it later without a rebuild or an engine call,
//! an expired waiver counts as none, its children are not built, and a
//! scanner that crashes, errors or times out fails the image (fail closed).

mod common;
use common::project::{Project, image, root};

use std::process::Command;

use serde_json::Value;

/// The gate sample, scanned by the OSV records next to it.
fn osv_project(name: &str) -> Project {
    let db = root().join("tests/projects/gate/osv");
    Project::of(
        "gate",
        name,
        &format!(
            "\n[scan]\nscanners = [\"osv\"]\nosv_db = \"{}\"\n",
            db.display()
        ),
    )
}

/// Whether `repository:tag` is in the registry (skopeo, an independent reader).
fn tag_exists(repository: &str, tag: &str) -> bool {
    Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{repository}:{tag}"),
        ])
        .output()
        .expect("skopeo runs")
        .status
        .success()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const WAIVERS: &str = "scan:
  waivers:
    - id: CVE-2020-28493
      reason: templates are never user input in this image
      expires: EXPIRES
      approved_by: alice
    - id: PYSEC-2019-217
      packages: [Jinja2]
      reason: the sandbox is not used
      expires: EXPIRES
      approved_by: alice
";

fn waivers(expires: &str) -> String {
    WAIVERS.replace("EXPIRES", expires)
}

#[test]
fn a_vulnerable_image_keeps_only_its_content_tag_until_a_waiver_publishes_it() {
    let p = osv_project("waiver");
    let (out, summary) = p.build(&[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let webapp = image(&summary, "webapp");
    assert_eq!(webapp["result"], "rejected", "{webapp:#}");
    let scan = &webapp["scan"];
    assert_eq!(scan["verdict"], "fail");
    assert_eq!(scan["published"], false);
    assert_eq!(scan["summary"]["blocking"], 2, "{scan:#}");
    let reasons: Vec<&str> = scan["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // Each finding names the advisory, the package, the installed and the
    // fixed version.
    assert!(
        reasons.contains(&"PYSEC-2021-66 (severity unknown, counted as high) in pypi Jinja2 2.10, fixed in 2.11.3"),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"PYSEC-2019-217 (severity unknown, counted as high) in pypi Jinja2 2.10, fixed in 2.10.1"),
        "{reasons:?}"
    );

    // Only the content tag is in the registry.
    let repository = webapp["repository"].as_str().expect("repository");
    let digest = webapp["digest"].as_str().expect("digest").to_string();
    let content_tag = webapp["content_tag"].as_str().expect("tag");
    assert!(tag_exists(repository, content_tag));
    assert!(
        !tag_exists(repository, "main"),
        "a rejected image got its <variant> tag"
    );
    assert!(
        !tag_exists(repository, "latest"),
        "a rejected image got latest"
    );

    // The report and the SBOM are attached all the same, and read back.
    let reference = format!("{repository}@{digest}");
    let out = p.labforge(&["scan-report", &reference, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("report json");
    assert_eq!(report["verdict"], "fail");
    assert_eq!(report["digest"], digest.as_str());
    let finding = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["id"] == "PYSEC-2021-66")
        .expect("the finding");
    assert_eq!(finding["package"], "Jinja2");
    assert_eq!(finding["installed"], "2.10");
    assert_eq!(finding["fixed"], "2.11.3");
    assert_eq!(finding["decision"], "blocking");
    let out = p.labforge(&["sbom", &reference]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sbom: Value = serde_json::from_slice(&out.stdout).expect("sbom json");
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    let purls: Vec<&str> = sbom["components"]
        .as_array()
        .expect("components")
        .iter()
        .filter_map(|c| c["purl"].as_str())
        .collect();
    assert_eq!(
        purls,
        ["pkg:pypi/jinja2@2.10"],
        "exactly what the image holds"
    );
    // The human table names them too.
    let out = p.labforge(&["scan-report", &reference]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("BLOCKING") && table.contains("2.11.3"),
        "{table}"
    );

    // A waiver that expired yesterday counts as no waiver.
    p.write(
        "catalog/images/webapp.yaml",
        &format!(
            "{}{}",
            std::fs::read_to_string(p.path().join("catalog/images/webapp.yaml")).expect("read"),
            waivers("2020-01-01")
        ),
    );
    let (out, expired) = p.build(&[], &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let webapp = image(&expired, "webapp");
    assert_eq!(webapp["result"], "rejected", "{webapp:#}");
    assert!(
        webapp["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("its waiver expired on 2020-01-01"),
        "{webapp:#}"
    );
    assert!(!tag_exists(repository, "main"));

    // Waivers that hold: the same digest is published without a rebuild,
    // and without the engine.
    let text = std::fs::read_to_string(p.path().join("catalog/images/webapp.yaml"))
        .expect("read")
        .replace("2020-01-01", "2099-12-31");
    p.write("catalog/images/webapp.yaml", &text);
    let (out, waived) = p.build(&[], &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(waived["engine_used"], false);
    let webapp = image(&waived, "webapp");
    assert_eq!(webapp["result"], "present", "{webapp:#}");
    assert_eq!(webapp["digest"], digest.as_str());
    assert_eq!(webapp["scan"]["published"], true);
    assert_eq!(webapp["scan"]["summary"]["waived"], 2);
    assert!(tag_exists(repository, "main"));
    assert!(tag_exists(repository, "latest"));
    // The newest report says why it passed.
    let out = p.labforge(&["scan-report", "webapp", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("report json");
    assert_eq!(report["verdict"], "pass");
    assert!(
        report["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .all(|f| f["decision"] == "waived" && f["approved_by"] == "alice"),
        "{report:#}"
    );
}

#[test]
fn the_children_of_a_rejected_image_are_not_built() {
    let p = osv_project("child");
    p.write(
        "catalog/images/child.yaml",
        "name: child\ntemplate: child.Dockerfile.tera\nparent: webapp\nserver_test: false\n",
    );
    let (out, summary) = p.build(&[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(image(&summary, "webapp")["result"], "rejected");
    let child = image(&summary, "child");
    assert_eq!(child["result"], "blocked", "{child:#}");
    assert_eq!(
        child["reason"],
        "not built: its parent webapp was rejected by the scan policy"
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("[child] == build"), "{text}");

    // Nor on the next run, when the parent is found in the registry.
    let (out, again) = p.build(&[], &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(again["engine_used"], false);
    assert_eq!(image(&again, "webapp")["result"], "rejected");
    assert_eq!(image(&again, "child")["result"], "blocked");

    // Without this machine's records (another machine, a fresh CI state),
    // the verdict comes from the report attached in the registry.
    std::fs::remove_dir_all(p.path().join("state")).expect("remove the state");
    let (out, fresh) = p.build(&[], &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let webapp = image(&fresh, "webapp");
    assert_eq!(webapp["result"], "rejected", "{webapp:#}");
    assert_eq!(webapp["scan"]["verdict"], "fail");
    assert_eq!(image(&fresh, "child")["result"], "blocked");
}

/// A Trivy stand-in script: what a crashing or hanging scanner does.
fn fake_trivy(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("trivy");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn rejected_by_trivy(name: &str, trivy: &str, timeout: u64, expect: &str) -> Project {
    let p = Project::of(
        "gate",
        name,
        &format!(
            "\n[scan]\nscanners = [\"trivy\"]\ntimeout = {timeout}\n\n[scan.trivy]\nbinary = \"{trivy}\"\n"
        ),
    );
    let (out, summary) = p.build(&[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let webapp = image(&summary, "webapp");
    assert_eq!(webapp["result"], "rejected", "{webapp:#}");
    let reason = webapp["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("the trivy scanner did not finish") && reason.contains(expect),
        "{reason}"
    );
    let repository = webapp["repository"].as_str().expect("repository");
    assert!(tag_exists(
        repository,
        webapp["content_tag"].as_str().expect("tag")
    ));
    assert!(!tag_exists(repository, "main"));
    assert!(!tag_exists(repository, "latest"));
    // The scan stage itself stopped at the scanner's timeout (plus the
    // inventory), whatever else the machine was doing.
    let scan_ms = webapp["stages"]["scan"].as_u64().expect("scan stage time");
    assert!(
        scan_ms < (timeout + 30) * 1000,
        "the scan took {scan_ms} ms with a {timeout} s timeout"
    );
    p
}

#[test]
fn a_scanner_that_crashes_fails_the_image_until_it_is_scanned_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = fake_trivy(dir.path(), "kill -SEGV $$");
    let p = rejected_by_trivy("crash", &script.display().to_string(), 60, "SIGSEGV");

    // An incomplete scan is not judged again by `build`, whatever the
    // policy: it says to scan again.
    let config = p.path().join("labforge.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        "scanners = [\"trivy\"]",
        &format!(
            "scanners = [\"osv\"]\nosv_db = \"{}\"",
            root().join("tests/projects/gate/osv").display()
        ),
    );
    std::fs::write(&config, text).expect("config");
    let (out, again) = p.build(&[], &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let webapp = image(&again, "webapp");
    assert_eq!(webapp["result"], "rejected");
    let reason = webapp["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("the trivy scanner did not finish")
            && reason.contains("`labforge scan webapp`"),
        "{reason}"
    );
    // `labforge scan` scans the same digest completely: now the real
    // findings decide.
    let out = p.labforge(&["scan", "--json", "webapp"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let rescanned: Value = serde_json::from_slice(&out.stdout).expect("scan json");
    let webapp = image(&rescanned, "webapp");
    assert_eq!(webapp["digest"], image(&again, "webapp")["digest"]);
    let reasons = webapp["scan"]["reasons"].to_string();
    assert!(
        reasons.contains("PYSEC-2021-66") && !reasons.contains("did not finish"),
        "{reasons}"
    );
}

#[test]
fn a_scanner_that_hangs_is_stopped_and_fails_the_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = fake_trivy(
        dir.path(),
        "case \"$1\" in --version) echo 'Version: 0.76.0'; exit 0;; esac\nsleep 600",
    );
    rejected_by_trivy(
        "hang",
        &script.display().to_string(),
        3,
        "did not finish within",
    );
}

#[test]
fn real_trivy_without_its_database_fails_the_image() {
    // Trivy's vulnerability database cannot be downloaded here, so the real
    // scanner errors: the image must not be published.
    let cache = tempfile::tempdir().expect("tempdir");
    let p = Project::of(
        "gate",
        "trivy-nodb",
        &format!(
            "\n[scan]\nscanners = [\"trivy\"]\ntimeout = 120\n\n[scan.trivy]\ncache_dir = \"{}\"\noffline = true\n",
            cache.path().display()
        ),
    );
    let (out, summary) = p.build(&[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let webapp = image(&summary, "webapp");
    assert_eq!(webapp["result"], "rejected", "{webapp:#}");
    let reason = webapp["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("the trivy scanner did not finish"),
        "{reason}"
    );
    assert!(reason.contains("database"), "{reason}");
}

#[test]
fn a_rescan_withdraws_a_published_image_and_diff_shows_the_fix() {
    // Published with the gate off (an image from before the scan gate).
    let p = Project::of("gate", "rescan", "\n[scan]\nscanners = []\n");
    let (out, summary) = p.build(&[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let webapp = image(&summary, "webapp");
    assert_eq!(webapp["result"], "built");
    assert_eq!(webapp["scan"]["published"], true);
    let old = webapp["digest"].as_str().expect("digest").to_string();
    let repository = webapp["repository"]
        .as_str()
        .expect("repository")
        .to_string();
    assert!(tag_exists(&repository, "main"));

    // Scanned again with the advisories: rejected, and it says it was published.
    let config = p.path().join("labforge.toml");
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "scanners = []",
        &format!(
            "scanners = [\"osv\"]\nosv_db = \"{}\"",
            root().join("tests/projects/gate/osv").display()
        ),
    );
    std::fs::write(&config, text).expect("config");
    let out = p.labforge(&["scan", "--json", "webapp"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let rescanned: Value = serde_json::from_slice(&out.stdout).expect("scan json");
    let webapp = image(&rescanned, "webapp");
    assert_eq!(webapp["result"], "rejected", "{webapp:#}");
    assert_eq!(webapp["digest"], old.as_str());
    assert_eq!(webapp["scan"]["published"], false);
    assert!(
        webapp["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("it was published: it is now recorded as not published"),
        "{webapp:#}"
    );
    let out = p.labforge(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(status[0]["result"], "rejected");

    // The fix: a version past both advisories is built, passes, is published.
    p.write(
        "dockerfiles/files/python/Jinja2-2.10.dist-info/METADATA",
        "Metadata-Version: 2.1\nName: Jinja2\nVersion: 2.11.3\nLicense: BSD-3-Clause\n",
    );
    let (out, fixed) = p.build(&[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let webapp = image(&fixed, "webapp");
    assert_eq!(webapp["result"], "built", "{webapp:#}");
    assert_eq!(webapp["scan"]["verdict"], "pass");
    let new = webapp["digest"].as_str().expect("digest").to_string();
    assert_ne!(new, old);

    // What changed between the two digests, from their attached SBOMs.
    let out = p.labforge(&["diff", "webapp", &old, &new, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let diff: Value = serde_json::from_slice(&out.stdout).expect("diff json");
    assert_eq!(diff["old"], old.as_str());
    assert_eq!(diff["new"], new.as_str());
    let upgraded = diff["diff"]["upgraded"].as_array().expect("upgraded");
    assert_eq!(upgraded.len(), 1, "{diff:#}");
    assert_eq!(upgraded[0]["name"], "Jinja2");
    assert_eq!(upgraded[0]["old"], "2.10");
    assert_eq!(upgraded[0]["new"], "2.11.3");
    for list in ["added", "removed", "downgraded"] {
        assert_eq!(diff["diff"][list], serde_json::json!([]), "{diff:#}");
    }
    // And by tag, as a table.
    let out = p.labforge(&["diff", "webapp", &old, "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("upgraded") && table.contains("2.11.3"),
        "{table}"
    );
}
