//! `labforge serve` against what `labforge build` really published: the
//! sample in tests/projects/hub built on the real engine, pushed to the
//! real registry and scanned, then served. The profile list is checked
//! against KubeSpawner's contract and its digests against the build's;
//! versions, rollback (CLI and API), a digest deleted from the registry, a
//! broken catalog, tokens, ETags, YAML and metrics. The real KubeSpawner
//! and headless Chromium run against the same server
//! (`hub/jupyterhub/test_kubespawner.py`, `hub/tests/browser/check_pages.py`).

mod common;
use common::project::{Project, image, root};
use common::server::{ADMIN, EVENTS, Server};

use std::process::Command;

use serde_json::Value;

fn built(name: &str, extra_config: &str) -> Project {
    let project = Project::of("hub", name, extra_config);
    let (out, summary) = project.build(&[], &[]);
    assert!(
        out.status.success(),
        "build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["root", "middle", "leaf", "sibling"] {
        let img = image(&summary, name);
        assert_eq!(img["result"], "built", "{name}: {img}");
        assert_eq!(img["scan"]["published"], true, "{name}: {img}");
    }
    project
}

fn slug_image<'a>(list: &'a [Value], slug: &str) -> Option<&'a str> {
    list.iter()
        .find(|p| p["slug"] == slug)
        .and_then(|p| p["kubespawner_override"]["image"].as_str())
}

fn digest_of(summary: &Value, name: &str) -> String {
    image(summary, name)["digest"]
        .as_str()
        .expect("a digest")
        .to_string()
}

#[test]
fn hub_serves_what_the_build_published_with_versions_and_rollback() {
    let project = built("serve", "");
    let (_, first) = project.build(&[], &[]);
    // No polling in this test: every change must reach the hub because the
    // command that made it told the hub.
    let server = Server::start(&project, 3600);

    // Everyone sees the three open profiles (in catalog order: image files
    // by name); course-ml also sees the leaf.
    let (list, etag) = server.profiles("");
    let slugs: Vec<&str> = list.iter().filter_map(|p| p["slug"].as_str()).collect();
    assert_eq!(slugs, ["middle", "root", "sibling"]);
    let (course, _) = server.profiles("?user=alice&group=course-ml");
    assert_eq!(course.len(), 4);
    let registry = common::project::registry();
    for name in ["root", "sibling", "middle", "leaf"] {
        let expected = format!(
            "{registry}/{}/{name}@{}",
            project.prefix,
            digest_of(&first, name)
        );
        assert_eq!(slug_image(&course, name), Some(expected.as_str()), "{name}");
    }
    // The catalog's default, HTML-escaped names, GPUs as limits with the
    // hub's tolerations first, and the GPU choice with the catalog default.
    let root_profile = &list[1];
    assert_eq!(root_profile["default"], true);
    assert_eq!(
        root_profile["display_name"],
        "Root &amp; &quot;more&quot; tools"
    );
    let middle = &list[0];
    let ks = &middle["kubespawner_override"];
    assert_eq!(ks["extra_resource_limits"]["nvidia.com/gpu"], "2");
    assert!(ks.get("extra_resource_guarantees").is_none());
    assert_eq!(ks["tolerations"][0]["key"], "hub.jupyter.org/dedicated");
    assert_eq!(ks["node_selector"]["nvidia.com/gpu.present"], "true");
    assert_eq!(ks["cpu_limit"], 8.0);
    assert_eq!(ks["mem_limit"], "32G");
    let gpus = &middle["profile_options"]["gpus"]["choices"];
    assert_eq!(gpus["2"]["default"], true);
    assert_eq!(
        gpus["4"]["kubespawner_override"]["extra_resource_limits"]["nvidia.com/gpu"],
        "4"
    );
    // Staff see everything (none configured here): an unknown group sees the open three.
    assert_eq!(server.profiles("?group=nobody").0.len(), 3);

    // ETag: the same document is a 304.
    let again = server
        .http
        .get(format!("{}/api/v1/profiles", server.url))
        .header("If-None-Match", &etag)
        .send()
        .expect("GET");
    assert_eq!(again.status().as_u16(), 304);

    // The YAML fragment for zero-to-jupyterhub holds the same images.
    let yaml = server.get("/api/v1/profiles?format=yaml");
    assert_eq!(yaml.status().as_u16(), 200);
    assert_eq!(
        yaml.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/yaml")
    );
    let yaml = yaml.text().expect("text");
    assert!(yaml.starts_with("singleuser:\n  profileList:\n"), "{yaml}");
    assert!(yaml.contains(&digest_of(&first, "root")));
    assert_eq!(
        server.get("/api/v1/profiles?format=xml").status().as_u16(),
        400
    );

    // Catalog and image documents; the image page's facts come from the build.
    let catalog = server.json("/api/v1/catalog");
    assert_eq!(catalog["images"].as_array().map(Vec::len), Some(4));
    let root_doc = server.json("/api/v1/images/root");
    assert_eq!(root_doc["versions"][0]["digest"], digest_of(&first, "root"));
    assert!(root_doc["versions"][0]["size_bytes"].as_u64().unwrap_or(0) > 0);
    assert_eq!(root_doc["versions"][0]["scan"]["verdict"], "pass");
    assert_eq!(root_doc["cuda"], "12.4.1");
    // The default profile is marked on its document, and only there.
    assert_eq!(root_doc["default"], true);
    assert_eq!(server.json("/api/v1/images/middle")["default"], false);
    assert_eq!(root_doc["launch_url"], "/hub/spawn?profile=root");
    assert_eq!(
        root_doc["issue_url"],
        "https://github.com/example-university/labforge-catalog/issues/42"
    );
    assert_eq!(
        root_doc["request_change_url"],
        "https://github.com/example-university/labforge-catalog/issues/new?template=image-request.yml&title=Change%20root&based-on=root"
    );
    // Installed packages from the SBOM; frameworks recognised in them.
    let packages = root_doc["packages"].as_array().expect("packages");
    assert!(
        packages
            .iter()
            .any(|p| p["name"] == "torch" && p["version"] == "2.5.1"),
        "{root_doc}"
    );
    assert_eq!(root_doc["frameworks"], serde_json::json!(["pytorch"]));
    assert_eq!(server.get("/api/v1/images/nope").status().as_u16(), 404);

    // A change to root rebuilds the chain; after a publish the hub offers
    // the new digest as current and the old one as "previous".
    let file = project.path().join("catalog/images/root.yaml");
    let text = std::fs::read_to_string(&file).expect("read");
    std::fs::write(
        &file,
        text.replace(
            "base: tiny\n",
            "base: tiny\nbuild_args:\n  ROOT_RELEASE: \"2\"\n",
        ),
    )
    .expect("write");
    let (status, body) = server.post("/api/v1/publish", None, "");
    assert_eq!(status, 401, "{body}");
    let (status, body) = server.post("/api/v1/publish", Some("wrong"), "");
    assert_eq!(status, 401, "{body}");
    let (status, body) = server.post("/api/v1/publish", Some(ADMIN), "");
    assert_eq!(status, 200, "{body}");
    // With `[hub] url`, the build itself tells the hub (with the admin token).
    let config = project.path().join("labforge.toml");
    let mut text = std::fs::read_to_string(&config).expect("read");
    text.push_str(&format!("\n[hub]\nurl = \"{}\"\n", server.url));
    std::fs::write(&config, text).expect("write");
    let (out, second) = project.build(&[], &[("LABFORGE_HUB_ADMIN_TOKEN", ADMIN)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(image(&second, "root")["result"], "built");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reloaded (generation"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (list, _) = server.profiles("");
    let new_root = digest_of(&second, "root");
    let old_root = digest_of(&first, "root");
    assert!(slug_image(&list, "root").is_some_and(|i| i.ends_with(&new_root)));
    let versions = &list[1]["profile_options"]["version"]["choices"];
    assert!(
        versions["current"]["kubespawner_override"]["image"]
            .as_str()
            .is_some_and(|i| i.ends_with(&new_root))
    );
    assert!(
        versions["previous"]["kubespawner_override"]["image"]
            .as_str()
            .is_some_and(|i| i.ends_with(&old_root)),
        "{versions}"
    );
    let doc = server.json("/api/v1/images/root");
    assert_eq!(doc["versions"].as_array().map(Vec::len), Some(2));
    // The package diff between the versions, from their SBOMs.
    let upgraded = &doc["versions"][0]["changes"]["upgraded"];
    assert_eq!(
        upgraded,
        &serde_json::json!([{"kind": "pypi", "name": "labforge-sample", "old": "1", "new": "2"}]),
        "{doc}"
    );
    assert_eq!(doc["versions"][0]["changes"]["against"], old_root.as_str());

    // `labforge rollback root` points users back at the old digest.
    let out = project.labforge_with(
        &["rollback", "root", "--reason", "broken release", "--json"],
        &[("LABFORGE_HUB_ADMIN_TOKEN", ADMIN)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(done["to"], old_root.as_str());
    let (list, _) = server.profiles("");
    assert!(slug_image(&list, "root").is_some_and(|i| i.ends_with(&old_root)));
    // The rolled-back release is no longer offered as a version.
    assert!(
        !list[1]["profile_options"]["version"]
            .to_string()
            .contains(&new_root),
        "{}",
        list[1]
    );
    // A no-op build does not undo the rollback.
    let (out, third) = project.build(&[], &[("LABFORGE_HUB_ADMIN_TOKEN", ADMIN)]);
    assert!(out.status.success());
    assert_eq!(image(&third, "root")["result"], "present");
    let (list, _) = server.profiles("");
    assert!(slug_image(&list, "root").is_some_and(|i| i.ends_with(&old_root)));
    let doc = server.json("/api/v1/images/root");
    assert_eq!(doc["rollback"]["reason"], "broken release");
    // Nothing older to go to; a digest that is not published is refused.
    let out = project.labforge(&["rollback", "root"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no earlier published digest"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = server.post(
        "/api/v1/images/root/rollback",
        Some(ADMIN),
        &format!("{{\"to\": \"sha256:{}\"}}", "0".repeat(64)),
    );
    assert_eq!(status, 409, "{body}");
    // Forward again through the API.
    let (status, body) = server.post(
        "/api/v1/images/root/rollback",
        Some(ADMIN),
        &format!("{{\"to\": \"{new_root}\", \"reason\": \"fixed\"}}"),
    );
    assert_eq!(status, 200, "{body}");
    let (list, _) = server.profiles("");
    assert!(slug_image(&list, "root").is_some_and(|i| i.ends_with(&new_root)));

    // Metrics count what happened.
    let metrics = server.get("/metrics").text().expect("text");
    assert!(
        metrics.contains("labforge_hub_requests_total{route=\"/api/v1/profiles\",code=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("labforge_builds_total{result=\"built\"}"));
    assert!(metrics.contains("labforge_hub_snapshot_age_seconds "));
    assert!(metrics.contains("labforge_publishes_total "));
}

#[test]
fn hub_drops_a_deleted_digest_and_keeps_the_last_good_catalog() {
    let project = built("failures", "");
    let server = Server::start(&project, 1);
    let (before, etag) = server.profiles("");
    assert_eq!(before.len(), 3);

    // Registry events need the events (or admin) token and a real envelope.
    let envelope = |repo: &str, digest: &str| {
        format!(
            r#"{{"events":[{{"id":"e1","action":"delete","target":{{"digest":"{digest}","repository":"{repo}"}},"request":{{"method":"DELETE"}},"actor":{{}},"source":{{}}}}]}}"#
        )
    };
    let (status, _) = server.post("/api/v1/registry/events", None, "{}");
    assert_eq!(status, 401);
    let (status, _) = server.post("/api/v1/registry/events", Some(EVENTS), "not json");
    assert_eq!(status, 400);

    // Delete sibling's manifest from the registry, as an operator's
    // garbage collection might; the registry's event makes the hub check.
    let sibling = slug_image(&before, "sibling").expect("sibling").to_string();
    let (repository, digest) = sibling.split_once('@').expect("pinned");
    let (host, path) = repository.split_once('/').expect("host/path");
    let deleted = server
        .http
        .delete(format!("http://{host}/v2/{path}/manifests/{digest}"))
        .send()
        .expect("DELETE");
    assert_eq!(deleted.status().as_u16(), 202);
    let (status, body) = server.post(
        "/api/v1/registry/events",
        Some(EVENTS),
        &envelope(path, digest),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["relevant"], 1);
    server.wait_for(
        |s| slug_image(&s.profiles("").0, "sibling").is_none(),
        "the deleted digest to leave the profiles",
    );
    let ready = server.json("/readyz");
    assert!(
        ready["missing"].to_string().contains(digest),
        "flagged: {ready}"
    );
    let catalog = server.json("/api/v1/catalog");
    assert!(
        catalog["unavailable"]
            .to_string()
            .contains("missing from the registry"),
        "{catalog}"
    );
    let (after_delete, etag_after_delete) = server.profiles("");
    assert_eq!(after_delete.len(), 2);
    assert_ne!(etag, etag_after_delete);

    // A broken catalog: /readyz turns red with the file and line, and the
    // last good list is still served, byte for byte.
    let file = project.path().join("catalog/images/root.yaml");
    let good = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, good.replace("template:", "templat:")).expect("write");
    server.wait_for(
        |s| s.get("/readyz").status().as_u16() == 503,
        "readyz to turn red",
    );
    let ready = server.get("/readyz").json::<Value>().expect("JSON");
    let reason = ready["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("root.yaml"), "{reason}");
    assert!(
        reason.contains("still serving the last good catalog"),
        "{reason}"
    );
    let (kept, kept_etag) = server.profiles("");
    assert_eq!(kept_etag, etag_after_delete);
    assert_eq!(kept.len(), 2);
    let metrics = server.get("/metrics").text().expect("text");
    assert!(metrics.contains("labforge_hub_ready 0"), "{metrics}");
    // Fixed: ready again.
    std::fs::write(&file, good).expect("write");
    server.wait_for(
        |s| s.get("/readyz").status().as_u16() == 200,
        "readyz to turn green again",
    );
}

/// Run a Python check against the server; its output is shown on failure.
fn python(script: &str, args: &[&str]) {
    let out = Command::new("python3")
        .arg(root().join(script))
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hub_profiles_spawn_with_the_real_kubespawner_and_pages_pass_in_chromium() {
    // A shared folder every profile mounts, as an operator would add it:
    // KubeSpawner must keep the home volume beside it.
    let project = built(
        "spawner",
        "\n[hub.spawner.volumes.datasets.persistentVolumeClaim]\nclaimName = \"datasets\"\n\
         [hub.spawner.volume_mounts.datasets]\nmountPath = \"/home/shared/datasets\"\nreadOnly = true\n",
    );
    let server = Server::start(&project, 3600);
    // KubeSpawner asks as the CI user; the expected image of every slug it sees.
    let (list, _) = server.profiles("?user=labforge-ci&group=labforge-ci");
    assert!(list.iter().all(|p| {
        p["kubespawner_override"]["volumes"]["datasets"]["persistentVolumeClaim"]["claimName"]
            == "datasets"
    }));
    let expected: serde_json::Map<String, Value> = list
        .iter()
        .map(|p| {
            (
                p["slug"].as_str().unwrap_or_default().to_string(),
                p["kubespawner_override"]["image"].clone(),
            )
        })
        .collect();
    let expect_file = project.path().join("expect-images.json");
    std::fs::write(&expect_file, Value::Object(expected).to_string()).expect("write");
    python(
        "hub/jupyterhub/test_kubespawner.py",
        &[
            "--hub-url",
            &server.url,
            "--expect-images",
            &expect_file.display().to_string(),
        ],
    );
    let shots = root().join("target/screenshots");
    std::fs::create_dir_all(&shots).expect("mkdir");
    python(
        "hub/tests/browser/check_pages.py",
        &[
            "--base-url",
            &server.url,
            "--out",
            &shots.display().to_string(),
            "--image",
            "root",
        ],
    );
}
