//! `labforge build` against the real Docker Engine and the local registry
//! (both started by scripts/services.sh), on the sample project in
//! tests/projects/chain: a three-level chain and a sibling on the busybox
//! stand-in. A missing engine or registry fails these tests.
//!
//! Every test pushes under its own registry prefix, so runs never see each
//! other's images, and removes the engine images it built.

mod common;
use common::docker;
use common::project::{Project, image, pairs, registry, results, skopeo_digest};

use std::process::Command;

use serde_json::Value;

#[test]
fn a_chain_builds_pushes_by_digest_and_a_second_run_does_nothing() {
    let p = Project::new("chain");
    let (out, summary) = p.build(&[], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        results(&summary),
        pairs(&[
            ("root", "built"),
            ("middle", "built"),
            ("leaf", "built"),
            ("sibling", "built")
        ]),
        "{stderr}"
    );
    assert_eq!(summary["engine_used"], true);

    // The registry has exactly the recorded digest under the content tag and
    // the moving tags, and the image runs from that digest.
    let leaf = image(&summary, "leaf");
    let digest = leaf["digest"].as_str().expect("leaf digest");
    let repository = leaf["repository"].as_str().expect("repository");
    let tag = leaf["content_tag"].as_str().expect("tag");
    assert!(
        tag.starts_with("main-") && tag.len() == "main-".len() + 12,
        "{tag}"
    );
    assert_eq!(skopeo_digest(&format!("{repository}:{tag}")), digest);
    assert_eq!(skopeo_digest(&format!("{repository}:latest")), digest);
    let tags: Vec<&str> = leaf["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tags.contains(&tag) && tags.contains(&"main") && tags.contains(&"latest"),
        "{tags:?}"
    );
    let by_digest = format!("{repository}@{digest}");
    docker(&["pull", "--quiet", &by_digest]);
    let run = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &by_digest,
        "cat",
        "/etc/labforge/root",
        "/etc/labforge/middle",
        "/etc/labforge/leaf",
    ]);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "root\nmiddle\nleaf\n");
    let _ = Command::new("docker").args(["rmi", &by_digest]).output();

    // Smoke tests ran; the one that needs VS Code was skipped with its
    // reason, since this configuration leaves VS Code out.
    let middle = image(&summary, "middle");
    let tests = middle["tests"].as_array().expect("tests");
    let vscode = tests
        .iter()
        .find(|t| t["name"] == "needs-vscode")
        .expect("vscode test");
    assert_eq!(vscode["result"], "skipped");
    assert!(
        vscode["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("CODE_SERVER_URL=none")
    );
    let parent = tests
        .iter()
        .find(|t| t["name"] == "parent-stamp")
        .expect("test");
    assert_eq!(parent["result"], "passed");

    // The child was built FROM its parent's digest: the build log says so.
    let log = std::fs::read_to_string(middle["log"].as_str().expect("log path")).expect("log");
    let root_digest = image(&summary, "root")["digest"]
        .as_str()
        .expect("root digest")
        .to_string();
    assert!(
        log.contains(&root_digest),
        "the middle build log does not name {root_digest}:\n{log}"
    );

    // Nothing changed: no build and not a single engine call (the engine
    // address is made unusable to prove it).
    let (out, again) = p.build(&[], &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(again["engine_used"], false);
    assert_eq!(
        results(&again),
        pairs(&[
            ("root", "present"),
            ("middle", "present"),
            ("leaf", "present"),
            ("sibling", "present")
        ])
    );
    assert_eq!(image(&again, "leaf")["digest"], leaf["digest"]);

    // status and history read the records.
    let out = p.labforge(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).expect("status json");
    let status = status.as_array().expect("records");
    assert_eq!(status.len(), 4);
    let leaf_status = status.iter().find(|r| r["image"] == "leaf").expect("leaf");
    assert_eq!(leaf_status["digest"], leaf["digest"]);
    let out = p.labforge(&["history", "leaf"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(tag));

    // Touching the partial only `middle` uses rebuilds middle and leaf.
    p.write(
        "dockerfiles/partials/middle.tera",
        "RUN echo middle-partial-v2 > /etc/labforge/middle-partial\n",
    );
    let (out, touched) = p.build(&[], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        results(&touched),
        pairs(&[
            ("root", "present"),
            ("middle", "built"),
            ("leaf", "built"),
            ("sibling", "present")
        ])
    );
    let why = image(&touched, "middle")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(why.contains("partials/middle.tera"), "{why}");
    assert_ne!(image(&touched, "leaf")["digest"], leaf["digest"]);
}

#[test]
fn a_broken_dockerfile_fails_clearly_while_its_siblings_finish_with_buildkit() {
    broken_dockerfile("buildkit");
}

#[test]
fn a_broken_dockerfile_fails_clearly_while_its_siblings_finish_with_the_classic_builder() {
    broken_dockerfile("classic");
}

fn broken_dockerfile(builder: &str) {
    let p = Project::new(&format!("broken-{builder}"));
    p.write(
        "catalog/images/broken.yaml",
        "name: broken\ndescription: Fails at its RUN\ntemplate: broken.Dockerfile.tera\nparent: root\nserver_test: false\n",
    );
    p.write(
        "catalog/images/below-broken.yaml",
        "name: below-broken\ndescription: Below the broken one\ntemplate: tiny.Dockerfile.tera\nparent: broken\nserver_test: false\n",
    );
    p.write(
        "dockerfiles/broken.Dockerfile.tera",
        "{% include \"partials/from.tera\" %}\nRUN echo about to fail && exit 3\n",
    );
    let (out, summary) = p.build(&["--builder", builder], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = if builder == "buildkit" {
        "building with BuildKit"
    } else {
        "building with the classic builder"
    };
    assert!(stderr.contains(expected), "{stderr}");
    assert_eq!(
        results(&summary),
        pairs(&[
            ("root", "built"),
            ("middle", "built"),
            ("leaf", "built"),
            ("sibling", "built"),
            ("broken", "failed"),
            ("below-broken", "blocked"),
        ]),
        "{stderr}"
    );
    let broken = image(&summary, "broken");
    let reason = broken["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("build failed") && reason.contains("RUN echo about to fail"),
        "{reason}"
    );
    let tail: Vec<&str> = broken["tail"]
        .as_array()
        .expect("tail")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(tail.iter().any(|l| l.contains("about to fail")), "{tail:?}");
    assert!(broken["digest"].is_null());
    let blocked = image(&summary, "below-broken")["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(blocked.contains("broken"), "{blocked}");

    // The human summary names the failure, its step and the log.
    let out = p.labforge(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("broken") && text.contains("failed") && text.contains("blocked"),
        "{text}"
    );
}

#[test]
fn selecting_an_image_builds_it_and_what_it_needs_only() {
    let p = Project::new("select");
    let (out, summary) = p.build(&["middle"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        results(&summary),
        pairs(&[("root", "built"), ("middle", "built")])
    );
    let out = p.labforge(&["build", "no-such-image"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-image"));

    // A base that cannot be resolved stops only a build that needs it.
    let catalog = std::fs::read_to_string(p.path().join("catalog/catalog.yaml")).expect("catalog");
    p.write(
        "catalog/catalog.yaml",
        &format!(
            "{catalog}  ghost:\n    image: {}/standin/no-such-base:latest\n",
            registry()
        ),
    );
    p.write(
        "catalog/images/orphan.yaml",
        "name: orphan\ndescription: On a base nobody has\ntemplate: tiny.Dockerfile.tera\nbase: ghost\nserver_test: false\n",
    );
    let (out, summary) = p.build(&["leaf"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        results(&summary),
        pairs(&[
            ("root", "present"),
            ("middle", "present"),
            ("leaf", "built")
        ])
    );
    let out = p.labforge(&["build", "orphan"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("base ghost") && stderr.contains("no-such-base"),
        "{stderr}"
    );
}

#[test]
fn a_registry_that_refuses_the_push_fails_the_image_and_records_no_digest() {
    // A second registry in read-only mode: it answers HEADs (so planning
    // works) but refuses every upload.
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    readonly:\n      enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.path().join("data").display()
    );
    std::fs::write(dir.path().join("config.yml"), config).expect("config");
    let mut child = Command::new("docker-registry")
        .args([
            "serve",
            &dir.path().join("config.yml").display().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry runs (scripts/services.sh installs it)");
    wait_for_port(port);
    let p = Project::new("readonly");
    // The base stays on the main registry; the images go to the read-only one.
    let (out, summary) = p.build(
        &["root", "--registry", &format!("127.0.0.1:{port}/it")],
        &[],
    );
    let _ = child.kill();
    let _ = child.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let root = image(&summary, "root");
    assert_eq!(root["result"], "failed", "{stderr}");
    assert!(root["digest"].is_null());
    let reason = root["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("push failed") && reason.contains(&format!("127.0.0.1:{port}")),
        "{reason}"
    );
    let out = p.labforge(&["history", "root", "--json"]);
    let history: Value = serde_json::from_slice(&out.stdout).expect("history json");
    let records = history.as_array().expect("records");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["result"], "failed");
    assert!(records[0]["digest"].is_null());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the registry on port {port} did not start");
}
