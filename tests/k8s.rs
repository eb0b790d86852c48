//! `labforge k8s` and the hub's background sync against a fake Kubernetes
//! API server (`common/fake_kube.rs`: real `metav1.Status` errors, server
//! defaulting, server-side apply with field managers and conflicts), on
//! the sample in tests/projects/hub built, pushed and published for real.
//! Every request is journaled, and the tests assert the exact objects
//! created, patched and deleted: first sync, a no-op sync, a catalog
//! change, a conflict, images removed, transient errors, a dead API
//! server. Every object written is validated offline against the
//! Kubernetes schemas (kubernetes-validate). With `offer_after`, a new
//! version reaches the profile list only once its pre-puller's status says
//! it is on its nodes.

mod common;
#[path = "common/fake_kube.rs"]
mod fake_kube;
#[path = "common/kube_validate.rs"]
mod kube_validate;

use common::project::{Project, image};
use common::server::Server;
use fake_kube::FakeKube;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

const APPLY: &str = "application/apply-patch+yaml";

fn run(project: &Project, kubeconfig: &Path, args: &[&str]) -> Output {
    let mut all = vec!["k8s"];
    all.extend_from_slice(args);
    project.labforge_with(
        &all,
        &[("KUBECONFIG", kubeconfig.to_str().expect("utf-8 path"))],
    )
}

/// The fake's kubeconfig pointing at a port nothing listens on.
fn dead_kubeconfig(fake: &FakeKube, kubeconfig: &Path) -> std::path::PathBuf {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    let dead = kubeconfig.with_file_name("kubeconfig-dead");
    std::fs::write(
        &dead,
        text.replace(&fake.url(), &format!("http://127.0.0.1:{port}")),
    )
    .expect("write");
    dead
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(out)
}

fn reference(summary: &Value, project: &Project, name: &str) -> String {
    let digest = image(summary, name)["digest"].as_str().expect("a digest");
    format!(
        "{}/{}/{name}@{digest}",
        common::project::registry(),
        project.prefix
    )
}

fn init_images(ds: &Value) -> BTreeSet<String> {
    ds["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["image"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn daemonset(fake: &FakeKube, class: &str) -> Value {
    let all = fake.objects("daemonsets");
    let found: Vec<Value> = all
        .into_iter()
        .filter(|d| {
            d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("labforge-prepull-{class}-")))
        })
        .collect();
    assert_eq!(found.len(), 1, "one {class} DaemonSet: {found:#?}");
    found.into_iter().next().expect("one")
}

/// The writes in the journal since it was last taken, as
/// (method, kind/name) pairs, and the journal itself.
fn writes(fake: &FakeKube) -> (Vec<(String, String)>, Vec<fake_kube::Call>) {
    let calls = fake.take_calls();
    let writes = calls
        .iter()
        .filter(|c| c.method != "GET")
        .map(|c| {
            let mut parts = c.path.rsplit('/');
            let name = parts.next().unwrap_or("").to_string();
            let kind = parts.next().unwrap_or("").to_string();
            (c.method.clone(), format!("{kind}/{name}"))
        })
        .collect();
    (writes, calls)
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}):\n{}\n{}",
            stdout(out),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn actions(report: &Value) -> Vec<(String, String)> {
    report["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["action"].as_str().unwrap_or("").to_string(),
                format!(
                    "{}/{}",
                    c["kind"].as_str().unwrap_or(""),
                    c["name"].as_str().unwrap_or("")
                ),
            )
        })
        .collect()
}

#[test]
fn k8s_sync_applies_what_is_published_and_then_only_what_changed() {
    let project = Project::of("hub", "k8s", "");
    let (out, first) = project.build(&[], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fake = FakeKube::start();
    let kubeconfig = fake.kubeconfig(project.path());

    // Without a cluster: the objects a sync applies.
    let manifests: Value = serde_json::from_str(&ok(
        &run(&project, &kubeconfig, &["manifests"]),
        "manifests",
    ))
    .expect("a List");
    assert_eq!(manifests["kind"], "List");
    let items = manifests["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 3, "{items:#?}");
    kube_validate::validate_docs(&items).expect("the generated objects are valid Kubernetes");
    fake.take_calls();

    // A dry run stores nothing and says what it would do.
    let text = ok(
        &run(&project, &kubeconfig, &["sync", "--dry-run"]),
        "dry run",
    );
    assert!(
        text.contains("create    configmap/labforge-profiles"),
        "{text}"
    );
    assert_eq!(
        text.matches("create    daemonset/labforge-prepull-")
            .count(),
        2,
        "{text}"
    );
    assert!(text.contains("3 change(s) would be made"), "{text}");
    // The server checked every apply (`dryRun=All`) and stored nothing.
    let (w, calls) = writes(&fake);
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(
        calls.iter().filter(|c| c.method != "GET").all(|c| c
            .query
            .get("dryRun")
            .map(String::as_str)
            == Some("All")),
        "{calls:?}"
    );
    assert!(
        fake.objects("configmaps").is_empty() && fake.objects("daemonsets").is_empty(),
        "a dry run stored something"
    );

    // First sync: the ConfigMap first (the DaemonSets name it as owner),
    // then one DaemonSet per node class, all by server-side apply.
    let first_sync = report(&run(&project, &kubeconfig, &["sync", "--json"]));
    let (w, calls) = writes(&fake);
    assert_eq!(w.len(), 3, "{w:?}");
    assert_eq!(
        w[0],
        ("PATCH".into(), "configmaps/labforge-profiles".into())
    );
    assert!(
        w[1..]
            .iter()
            .all(|(m, o)| m == "PATCH" && o.starts_with("daemonsets/labforge-prepull-"))
    );
    for call in calls.iter().filter(|c| c.method == "PATCH") {
        assert_eq!(call.content_type.as_deref(), Some(APPLY));
        assert_eq!(
            call.query.get("fieldManager").map(String::as_str),
            Some("labforge")
        );
        assert_eq!(
            call.query.get("fieldValidation").map(String::as_str),
            Some("Strict")
        );
        assert!(
            call.query.get("force").is_none_or(|f| f == "false"),
            "{call:?}"
        );
    }
    assert!(
        first_sync["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .all(|c| c["action"] == "create" && c["ok"] == true),
        "{first_sync:#}"
    );

    // Exactly the objects of `manifests`, the DaemonSets owned by the ConfigMap.
    let cm = fake
        .object("configmaps", "labforge-profiles")
        .expect("the ConfigMap");
    let applied: Vec<Value> = calls.iter().filter_map(|c| c.body.clone()).collect();
    assert_eq!(applied[0], items[0]);
    let uid = cm["metadata"]["uid"].as_str().expect("a uid").to_string();
    for (body, item) in applied[1..].iter().zip(&items[1..]) {
        let mut expected = item.clone();
        expected["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "labforge-profiles", "uid": uid}]);
        // The hash covers the owner too, so it differs from the manifest's.
        expected["metadata"]["annotations"]["labforge.io/applied-hash"] =
            body["metadata"]["annotations"]["labforge.io/applied-hash"].clone();
        assert_eq!(*body, expected);
    }
    kube_validate::validate_docs(&applied).expect("the applied objects are valid Kubernetes");

    // GPU images only on GPU nodes, by digest.
    let gpu = daemonset(&fake, "gpu");
    let cpu = daemonset(&fake, "cpu");
    let refs = |names: &[&str]| -> BTreeSet<String> {
        names
            .iter()
            .map(|n| reference(&first, &project, n))
            .collect()
    };
    assert_eq!(init_images(&gpu), refs(&["middle", "leaf"]));
    assert_eq!(init_images(&cpu), refs(&["root", "sibling"]));
    assert_eq!(
        gpu["spec"]["template"]["spec"]["nodeSelector"],
        json!({"nvidia.com/gpu.present": "true"})
    );
    assert!(
        cpu["spec"]["template"]["spec"]
            .get("nodeSelector")
            .is_none()
    );

    // The profile lists: what a user in no group sees has no `leaf`
    // (course-ml only); the full list and the groups have it.
    let public: Value =
        serde_json::from_str(cm["data"]["profile_list.json"].as_str().expect("text"))
            .expect("JSON");
    let all: Value =
        serde_json::from_str(cm["data"]["profile_list_all.json"].as_str().expect("text"))
            .expect("JSON");
    let slugs = |l: &Value| {
        l.as_array()
            .expect("a list")
            .iter()
            .map(|p| p["slug"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        !slugs(&public).iter().any(|s| s == "leaf"),
        "{:?}",
        slugs(&public)
    );
    assert!(slugs(&all).iter().any(|s| s == "leaf"));
    let groups: Value =
        serde_json::from_str(cm["data"]["groups.json"].as_str().expect("text")).expect("JSON");
    assert_eq!(groups, json!({"leaf": ["course-ml"]}));

    // Again: nothing to change, and not a single write.
    let text = ok(&run(&project, &kubeconfig, &["sync"]), "no-op sync");
    assert!(text.contains("nothing to change"), "{text}");
    let (w, calls) = writes(&fake);
    assert!(w.is_empty(), "a no-op sync wrote {w:?}");
    assert!(!calls.is_empty(), "it did look");

    // A catalog change: `sibling` rebuilt with a new digest. Only the CPU
    // DaemonSet's init container and the profile lists change.
    project.write(
        "catalog/images/sibling.yaml",
        &std::fs::read_to_string(project.path().join("catalog/images/sibling.yaml"))
            .expect("sibling")
            .replace(
                "base: tiny\n",
                "base: tiny\nbuild_args:\n  SIBLING_RELEASE: \"2\"\n",
            ),
    );
    let (out, second) = project.build(&[], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(image(&second, "sibling")["result"], "built");
    let changed = report(&run(&project, &kubeconfig, &["sync", "--json"]));
    let (w, _) = writes(&fake);
    let cpu_name = cpu["metadata"]["name"].as_str().expect("name").to_string();
    assert_eq!(
        w,
        vec![
            (
                "PATCH".to_string(),
                "configmaps/labforge-profiles".to_string()
            ),
            ("PATCH".to_string(), format!("daemonsets/{cpu_name}")),
        ]
    );
    let cpu_change = changed["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["name"] == cpu_name.as_str())
        .expect("the CPU change")
        .clone();
    assert_eq!(cpu_change["action"], "update");
    assert_eq!(
        cpu_change["fields"],
        json!([".spec.template.spec.initContainers[name=\"pull-sibling\"].image"])
    );
    assert_eq!(
        init_images(&daemonset(&fake, "cpu")),
        [
            reference(&first, &project, "root"),
            reference(&second, &project, "sibling")
        ]
        .into_iter()
        .collect()
    );

    // Someone edits the CPU DaemonSet's pause image with kubectl: the
    // field is theirs. A new pause image in the configuration conflicts
    // there, is reported with what to do, and the GPU one still goes through.
    fake.own_field(
        "daemonsets",
        &cpu_name,
        "kubectl-edit",
        ".spec.template.spec.containers[name=\"pause\"].image",
    );
    let config = std::fs::read_to_string(project.path().join("labforge.toml")).expect("config");
    project.write(
        "labforge.toml",
        &format!("{config}\n[kubernetes.prepull]\npause_image = \"registry.k8s.io/pause:3.9\"\n"),
    );
    let out = run(&project, &kubeconfig, &["sync"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("FAILED    daemonset/{cpu_name}")),
        "{text}"
    );
    assert!(
        text.contains("kubectl-edit") && text.contains("--force"),
        "{text}"
    );
    assert!(
        text.contains("updated   daemonset/labforge-prepull-gpu-"),
        "{text}"
    );
    assert_eq!(
        daemonset(&fake, "gpu")["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.k8s.io/pause:3.9"
    );
    let (_, _) = writes(&fake);
    let text = ok(
        &run(&project, &kubeconfig, &["sync", "--force"]),
        "forced sync",
    );
    assert!(
        text.contains(&format!("updated   daemonset/{cpu_name}")),
        "{text}"
    );
    let (w, calls) = writes(&fake);
    assert_eq!(
        w,
        vec![("PATCH".to_string(), format!("daemonsets/{cpu_name}"))]
    );
    assert!(
        calls.iter().any(
            |c| c.method == "PATCH" && c.query.get("force").map(String::as_str) == Some("true")
        )
    );

    // Images removed from the catalog: no GPU image is left, so the GPU
    // DaemonSet is deleted (in the background, only if it is still the
    // one listed); someone else's DaemonSet and another instance's stay.
    let gpu_now = daemonset(&fake, "gpu");
    let gpu_name = gpu_now["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let mut foreign = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "node-exporter", "labels": {"app": "node-exporter"}},
        "spec": {"selector": {"matchLabels": {"app": "node-exporter"}}, "template": {"metadata": {"labels": {"app": "node-exporter"}}, "spec": {"containers": [{"name": "e", "image": "prom/node-exporter:v1.8.2"}]}}}});
    fake.put("daemonsets", foreign.clone());
    foreign["metadata"]["name"] = json!("lab2-prepull-cpu-00000000");
    foreign["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "labforge", "labforge.io/instance": "lab2", "app": "node-exporter"});
    fake.put("daemonsets", foreign);
    fake.take_calls();
    std::fs::remove_file(project.path().join("catalog/images/leaf.yaml")).expect("rm leaf");
    std::fs::remove_file(project.path().join("catalog/images/middle.yaml")).expect("rm middle");
    let removed = report(&run(&project, &kubeconfig, &["sync", "--json"]));
    let (w, calls) = writes(&fake);
    assert_eq!(
        w,
        vec![
            (
                "PATCH".to_string(),
                "configmaps/labforge-profiles".to_string()
            ),
            ("DELETE".to_string(), format!("daemonsets/{gpu_name}")),
        ],
        "{:?}",
        actions(&removed)
    );
    let delete = calls
        .iter()
        .find(|c| c.method == "DELETE")
        .expect("the delete");
    let body = delete.body.clone().unwrap_or_default();
    assert_eq!(body["propagationPolicy"], "Background");
    assert_eq!(body["preconditions"]["uid"], gpu_now["metadata"]["uid"]);
    assert!(fake.object("daemonsets", &gpu_name).is_none());
    assert!(fake.object("daemonsets", "node-exporter").is_some());
    assert!(
        fake.object("daemonsets", "lab2-prepull-cpu-00000000")
            .is_some()
    );

    // Transient errors are tried again: two 503s, then the apply lands.
    fake.fail_next("PATCH", "/api/v1/namespaces/labforge/configmaps", 503, 2);
    std::fs::remove_file(project.path().join("catalog/images/sibling.yaml")).expect("rm sibling");
    let text = ok(&run(&project, &kubeconfig, &["sync"]), "sync through 503s");
    assert!(
        text.contains("updated   configmap/labforge-profiles"),
        "{text}"
    );
    let (_, calls) = writes(&fake);
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.method == "PATCH" && c.path.ends_with("/labforge-profiles"))
            .count(),
        3
    );

    // The hub keeps the cluster in sync by itself: it syncs its first
    // snapshot, and a DaemonSet deleted by hand comes back on the next
    // resync without anyone running `k8s sync`.
    let cpu_name_now = daemonset(&fake, "cpu")["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let config = std::fs::read_to_string(project.path().join("labforge.toml")).expect("config");
    project.write(
        "labforge.toml",
        &format!("{config}\n[kubernetes]\nsync = true\nresync_seconds = 10\n"),
    );
    let server = Server::start_in(
        project.path(),
        1,
        &[("KUBECONFIG", kubeconfig.to_str().expect("path"))],
    );
    server.wait_for(
        |s| s.json("/readyz")["kubernetes"]["last_success_ms"].is_i64(),
        "the sync status in /readyz",
    );
    fake.remove("daemonsets", &cpu_name_now);
    server.wait_for(
        |_| fake.object("daemonsets", &cpu_name_now).is_some(),
        "the hub to recreate the DaemonSet",
    );
    drop(server);

    // A dead API server: a clear error naming it, after the retries.
    let dead = dead_kubeconfig(&fake, &kubeconfig);
    let out = run(&project, &dead, &["sync"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the Kubernetes API server http://127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("after 5 attempt(s)"), "{err}");
}

/// Set a DaemonSet's status as its controller would once its current
/// template runs on `pulled` of `nodes` nodes.
fn roll_out(fake: &FakeKube, class: &str, nodes: u64, pulled: u64) {
    let ds = daemonset(fake, class);
    let name = ds["metadata"]["name"].as_str().expect("name").to_string();
    fake.set_status(
        "daemonsets",
        &name,
        json!({
            "currentNumberScheduled": nodes,
            "desiredNumberScheduled": nodes,
            "numberMisscheduled": 0,
            "numberReady": pulled,
            "numberAvailable": pulled,
            "updatedNumberScheduled": pulled,
            "observedGeneration": ds["metadata"]["generation"],
        }),
    );
}

/// The image a profile of the public list starts, by slug.
fn offered(server: &Server, slug: &str) -> Option<String> {
    let (list, _) = server.profiles("");
    list.iter()
        .find(|p| p["slug"] == slug)
        .and_then(|p| p["kubespawner_override"]["image"].as_str())
        .map(str::to_string)
}

/// The images of the profiles ConfigMap's public list.
fn configmap_images(fake: &FakeKube) -> BTreeSet<String> {
    let cm = fake
        .object("configmaps", "labforge-profiles")
        .expect("the ConfigMap");
    let list: Value = serde_json::from_str(cm["data"]["profile_list.json"].as_str().expect("text"))
        .expect("JSON");
    list.as_array()
        .expect("a list")
        .iter()
        .filter_map(|p| p["kubespawner_override"]["image"].as_str())
        .map(str::to_string)
        .collect()
}

/// What `/readyz` says is held back, by image.
fn held(server: &Server) -> Vec<Value> {
    server.json("/readyz")["kubernetes"]["gate"]["held"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn held_image(server: &Server, image: &str) -> Option<Value> {
    held(server).into_iter().find(|h| h["image"] == image)
}

#[test]
fn the_hub_offers_a_new_version_once_the_pre_pullers_have_it_on_their_nodes() {
    let project = Project::of("hub", "k8s-gate", "");
    let (out, first) = project.build(&[], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fake = FakeKube::start();
    let kubeconfig = fake.kubeconfig(project.path());
    let base = std::fs::read_to_string(project.path().join("labforge.toml")).expect("config");

    // A share outside (0, 1] is refused when the configuration is loaded.
    project.write(
        "labforge.toml",
        &format!("{base}\n[kubernetes.prepull]\noffer_after = 1.5\n"),
    );
    let out = run(&project, &kubeconfig, &["manifests"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("offer_after = 1.5") && err.contains("above 0 and at most 1"),
        "{err}"
    );

    // An installation without the gate: everything offered and pulled,
    // the pre-pullers rolled out on two nodes each.
    let synced = format!("{base}\n[kubernetes]\nsync = true\nresync_seconds = 10\n");
    project.write("labforge.toml", &synced);
    ok(
        &run(&project, &kubeconfig, &["sync"]),
        "sync without the gate",
    );
    roll_out(&fake, "cpu", 2, 2);
    roll_out(&fake, "gpu", 2, 2);

    // The gate turned on: what users had stays offered.
    project.write(
        "labforge.toml",
        &format!("{synced}\n[kubernetes.prepull]\noffer_after = 1.0\n"),
    );
    let server = Server::start_in(
        project.path(),
        1,
        &[("KUBECONFIG", kubeconfig.to_str().expect("path"))],
    );
    let sibling_1 = reference(&first, &project, "sibling");
    assert_eq!(offered(&server, "sibling"), Some(sibling_1.clone()));
    assert_eq!(
        offered(&server, "root"),
        Some(reference(&first, &project, "root"))
    );
    let readyz = server.json("/readyz");
    assert_eq!(
        readyz["kubernetes"]["gate"]["offer_after"], 1.0,
        "{readyz:#}"
    );
    assert_eq!(held(&server), Vec::<Value>::new(), "{readyz:#}");

    // A new version of `sibling` and a brand-new image `extra`, both on
    // the CPU nodes.
    project.write(
        "catalog/images/sibling.yaml",
        &std::fs::read_to_string(project.path().join("catalog/images/sibling.yaml"))
            .expect("sibling")
            .replace(
                "base: tiny\n",
                "base: tiny\nbuild_args:\n  SIBLING_RELEASE: \"2\"\n",
            ),
    );
    project.write(
        "catalog/images/extra.yaml",
        "name: extra\ndescription: Published while the gate is on\ntemplate: tiny.Dockerfile.tera\nbase: tiny\nserver_test: false\nprofile:\n  display_name: Extra (CPU)\n",
    );
    let (out, second) = project.build(&[], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sibling_2 = reference(&second, &project, "sibling");
    let extra = reference(&second, &project, "extra");
    assert_ne!(sibling_1, sibling_2);

    // The hub pulls both at once, and offers neither yet: the CPU
    // pre-puller has a new template its controller has not rolled out.
    server.wait_for(
        |_| {
            let images = init_images(&daemonset(&fake, "cpu"));
            images.contains(&sibling_2) && images.contains(&extra)
        },
        "the CPU pre-puller to pull the new versions",
    );
    // (The build publishes one image after the other: the hub may have
    // looked in between, so wait for the look after the last sync.)
    server.wait_for(
        |s| {
            let waits = |image: &str| {
                held_image(s, image).is_some_and(|h| {
                    h["waiting"]
                        .as_str()
                        .is_some_and(|w| w.contains("new template"))
                })
            };
            waits("sibling") && waits("extra")
        },
        "/readyz to say both new versions wait for the controller",
    );
    let h = held_image(&server, "sibling").expect("sibling held back");
    assert_eq!(h["reference"], sibling_2.as_str(), "{h:#}");
    assert_eq!(
        (h["pulled"].as_u64(), h["nodes"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(h["needed"], 2);
    assert_eq!(
        held_image(&server, "extra").expect("extra held back")["reference"],
        extra.as_str()
    );
    assert_eq!(offered(&server, "sibling"), Some(sibling_1.clone()));
    assert_eq!(offered(&server, "extra"), None);
    let cm = configmap_images(&fake);
    assert!(
        cm.contains(&sibling_1) && !cm.contains(&sibling_2) && !cm.contains(&extra),
        "{cm:?}"
    );
    // The catalog says why: a pending version, an image not offered yet.
    let sibling = server.json("/api/v1/images/sibling");
    assert_eq!(sibling["versions"][0]["reference"], sibling_1.as_str());
    assert_eq!(sibling["pending"]["reference"], sibling_2.as_str());
    let page = server.get("/images/sibling").text().expect("the page");
    assert!(page.contains("id=\"pending-notice\""), "{page}");
    let catalog = server.json("/api/v1/catalog");
    let unavailable = catalog["unavailable"]
        .as_array()
        .expect("unavailable")
        .iter()
        .find(|u| u["name"] == "extra")
        .cloned()
        .expect("extra is not offered yet");
    assert!(
        unavailable["reason"]
            .as_str()
            .is_some_and(|r| r.contains("being pulled onto the nodes")),
        "{unavailable:#}"
    );

    // `labforge k8s sync` judges the same way: the profile list it would
    // write is the hub's.
    let out = run(&project, &kubeconfig, &["sync"]);
    let text = ok(&out, "a gated sync by hand");
    assert!(
        text.contains("unchanged configmap/labforge-profiles"),
        "{text}"
    );
    // The hub's sync wrote the pre-pullers already: the same by hand
    // changes nothing (their init containers are matched by name, in
    // whatever order the API server keeps them).
    assert!(text.contains("nothing to change"), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "held back: sibling {sibling_2} is on 0 of 2 node(s)"
        )),
        "{err}"
    );

    // On one node of two: still held, and /readyz says how far it is.
    roll_out(&fake, "cpu", 2, 1);
    server.wait_for(
        |s| {
            held_image(s, "sibling").is_some_and(|h| {
                h["pulled"] == 1
                    && h["waiting"]
                        .as_str()
                        .is_some_and(|w| w.contains("still being pulled"))
            })
        },
        "/readyz to say the new version is on 1 of 2 nodes",
    );

    // Rolled out on every node: both are offered, the ConfigMap follows.
    roll_out(&fake, "cpu", 2, 2);
    server.wait_for(
        |s| {
            offered(s, "sibling").as_deref() == Some(sibling_2.as_str())
                && offered(s, "extra").as_deref() == Some(extra.as_str())
        },
        "the new versions to be offered",
    );
    assert_eq!(held(&server), Vec::<Value>::new());
    assert!(
        server
            .json("/api/v1/images/sibling")
            .get("pending")
            .is_none(),
        "nothing pending any more"
    );
    server.wait_for(
        |_| {
            let cm = configmap_images(&fake);
            cm.contains(&sibling_2) && cm.contains(&extra) && !cm.contains(&sibling_1)
        },
        "the ConfigMap to offer the new versions",
    );
}
