//! The fake Kubernetes API server (tests/common/fake_kube.rs), driven by the
//! real kube-rs client: what it answers is what the cluster sync and the
//! build Jobs will be tested against, so it must behave like a cluster.
//! These tests do not exercise labforge itself.

#[path = "common/fake_kube.rs"]
mod fake_kube;

use std::path::Path;

use fake_kube::FakeKube;
use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, Preconditions,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Status;
use kube::{Client, Config};
use serde_json::{Value, json};

const CM: &str = "/api/v1/namespaces/labforge/configmaps";

async fn client_for(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read the kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube-rs accepts the kubeconfig");
    // Both rustls providers are compiled into the workspace: choose one,
    // as labforge_builder::cluster does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_from(config).expect("a client")
}

async fn client(fake: &FakeKube, dir: &Path) -> Client {
    client_for(&fake.kubeconfig(dir)).await
}

/// The Status of an API error, or a panic naming what came instead.
fn status<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Status {
    match result {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn profiles(data: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "labforge-profiles",
            "labels": {"app.kubernetes.io/managed-by": "labforge", "labforge.io/component": "profiles"}
        },
        "data": {"profiles.json": data}
    })
}

fn prepull(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "labforge", "labforge.io/component": "prepull"}
        },
        "spec": {
            "selector": {"matchLabels": {"labforge.io/prepull": name}},
            "template": {
                "metadata": {"labels": {"labforge.io/prepull": name}},
                "spec": {
                    "initContainers": [{"name": "pull", "image": image, "command": ["true"]}],
                    "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]
                }
            }
        }
    })
}

fn build_job(name: &str) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"labforge.io/component": "build"}},
        "spec": {
            "template": {
                "metadata": {"labels": {"labforge.io/component": "build"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "build", "image": "moby/buildkit:v0.23.2"}]
                }
            }
        }
    }))
    .expect("a Job")
}

#[tokio::test]
async fn apply_creates_and_reapplying_the_same_body_changes_nothing() {
    let fake = FakeKube::start_with_reads();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let client = client(&fake, dir.path()).await;
    assert_eq!(client.default_namespace(), "labforge");
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PatchParams::apply("labforge");

    let created = cms
        .patch("labforge-profiles", &pp, &Patch::Apply(&profiles("{}")))
        .await
        .expect("the request succeeds");
    let uid = created.metadata.uid.clone().expect("a uid");
    let rv = created
        .metadata
        .resource_version
        .clone()
        .expect("a resourceVersion");
    assert_eq!(created.metadata.namespace.as_deref(), Some("labforge"));
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(
        created.metadata.generation, None,
        "ConfigMaps have no generation"
    );
    let managed = created
        .metadata
        .managed_fields
        .clone()
        .expect("metadata.managed_fields");
    assert_eq!(managed.len(), 1);
    assert_eq!(managed[0].manager.as_deref(), Some("labforge"));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));

    let again = cms
        .patch("labforge-profiles", &pp, &Patch::Apply(&profiles("{}")))
        .await
        .expect("the request succeeds");
    assert_eq!(again.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        again.metadata.resource_version.as_deref(),
        Some(rv.as_str()),
        "a no-op apply writes nothing"
    );

    let changed = cms
        .patch(
            "labforge-profiles",
            &pp,
            &Patch::Apply(&profiles("{\"a\":1}")),
        )
        .await
        .expect("the request succeeds");
    assert_eq!(changed.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_ne!(
        changed.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    assert_eq!(
        changed.data.expect("data")["profiles.json"],
        "{\"a\":1}",
        "the applied data is stored"
    );

    // DaemonSets carry a generation, bumped only when the spec changes.
    let dss: Api<DaemonSet> = Api::default_namespaced(client);
    let ds = dss
        .patch(
            "labforge-prepull-gpu",
            &pp,
            &Patch::Apply(&prepull("labforge-prepull-gpu", "ghcr.io/x/gpu:1")),
        )
        .await
        .expect("the request succeeds");
    assert_eq!(ds.metadata.generation, Some(1));
    let ds_uid = ds.metadata.uid.clone();
    let same = dss
        .patch(
            "labforge-prepull-gpu",
            &pp,
            &Patch::Apply(&prepull("labforge-prepull-gpu", "ghcr.io/x/gpu:1")),
        )
        .await
        .expect("the request succeeds");
    assert_eq!(same.metadata.generation, Some(1));
    assert_eq!(same.metadata.uid, ds_uid);
    let mut relabelled = prepull("labforge-prepull-gpu", "ghcr.io/x/gpu:1");
    relabelled["metadata"]["labels"]["extra"] = json!("yes");
    let relabelled = dss
        .patch("labforge-prepull-gpu", &pp, &Patch::Apply(&relabelled))
        .await
        .expect("the request succeeds");
    assert_eq!(
        relabelled.metadata.generation,
        Some(1),
        "labels are not spec"
    );
    let bumped = dss
        .patch(
            "labforge-prepull-gpu",
            &pp,
            &Patch::Apply(&prepull("labforge-prepull-gpu", "ghcr.io/x/gpu:2")),
        )
        .await
        .expect("the request succeeds");
    assert_eq!(bumped.metadata.generation, Some(2));
    assert_eq!(bumped.metadata.uid, ds_uid);
    assert!(
        !bumped
            .metadata
            .labels
            .expect("metadata.labels")
            .contains_key("extra"),
        "a label the manager stopped applying is removed"
    );
}

#[tokio::test]
async fn defaults_are_visible_and_break_naive_comparisons() {
    let fake = FakeKube::start_with_reads();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dss: Api<DaemonSet> = Api::default_namespaced(client(&fake, dir.path()).await);
    let applied = prepull("labforge-prepull-cpu", "ghcr.io/x/cpu:latest");
    dss.patch(
        "labforge-prepull-cpu",
        &PatchParams::apply("labforge"),
        &Patch::Apply(&applied),
    )
    .await
    .expect("the request succeeds");

    let got = dss
        .get("labforge-prepull-cpu")
        .await
        .expect("the request succeeds");
    let got = serde_json::to_value(&got).expect("valid JSON");
    let spec = &got["spec"];
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["schedulerName"], "default-scheduler");
    assert_eq!(pod["securityContext"], json!({}));
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(
        pod["initContainers"][0]["imagePullPolicy"], "Always",
        ":latest"
    );
    assert_eq!(
        pod["containers"][0]["imagePullPolicy"], "IfNotPresent",
        "a tag"
    );
    assert_eq!(
        pod["containers"][0]["terminationMessagePath"],
        "/dev/termination-log"
    );
    assert_eq!(pod["containers"][0]["terminationMessagePolicy"], "File");
    assert_ne!(
        *spec, applied["spec"],
        "the stored spec differs from the applied one"
    );
    assert_eq!(got["status"]["numberReady"], 0);

    // What the fake stores is what the API answers.
    let stored = fake
        .object("daemonsets", "labforge-prepull-cpu")
        .expect("the object is stored");
    assert_eq!(stored["spec"], *spec);

    fake.set_status(
        "daemonsets",
        "labforge-prepull-cpu",
        json!({"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberMisscheduled": 0,
               "updatedNumberScheduled": 3, "numberReady": 3, "numberAvailable": 3,
               "observedGeneration": 1}),
    );
    let status = dss
        .get("labforge-prepull-cpu")
        .await
        .expect("the request succeeds")
        .status
        .expect("a status");
    assert_eq!(status.number_ready, 3);
    assert_eq!(status.observed_generation, Some(1));
}

#[tokio::test]
async fn jobs_are_defaulted_and_get_a_selector_and_a_pod() {
    let fake = FakeKube::start_with_reads();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let client = client(&fake, dir.path()).await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let job = jobs
        .create(
            &PostParams::default(),
            &build_job("labforge-build-py-0123456789ab"),
        )
        .await
        .expect("the request succeeds");
    let uid = job.metadata.uid.clone().expect("metadata.uid");
    let spec = job.spec.clone().expect("a spec");
    assert_eq!(spec.backoff_limit, Some(6));
    assert_eq!(spec.completions, Some(1));
    assert_eq!(spec.parallelism, Some(1));
    let selector = spec
        .selector
        .expect("a selector")
        .match_labels
        .expect("matchLabels");
    assert_eq!(selector["batch.kubernetes.io/controller-uid"], uid);
    let template_labels = spec
        .template
        .metadata
        .expect("template metadata")
        .labels
        .expect("labels");
    assert_eq!(
        template_labels["job-name"],
        "labforge-build-py-0123456789ab"
    );
    assert_eq!(template_labels["controller-uid"], uid);

    let pods: Api<Pod> = Api::default_namespaced(client);
    let listed = pods
        .list(&ListParams::default().labels("job-name=labforge-build-py-0123456789ab"))
        .await
        .expect("the request succeeds");
    assert_eq!(listed.items.len(), 1);
    let pod = &listed.items[0];
    let name = pod.metadata.name.clone().expect("metadata.name");
    assert!(
        name.starts_with("labforge-build-py-0123456789ab-"),
        "{name}"
    );
    assert_eq!(name.len(), "labforge-build-py-0123456789ab-".len() + 5);
    let owner = &pod
        .metadata
        .owner_references
        .as_ref()
        .expect("metadata.owner_references")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Job", uid.as_str())
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(
        pod.status.as_ref().expect("a status").phase.as_deref(),
        Some("Pending")
    );
    assert_eq!(fake.job_pods("labforge-build-py-0123456789ab"), vec![name]);

    // A Job without a restartPolicy gets Always, which a Job may not have.
    let mut bad = build_job("labforge-build-bad");
    bad.spec
        .as_mut()
        .expect("a spec")
        .template
        .spec
        .as_mut()
        .expect("a pod spec")
        .restart_policy = None;
    let s = status(jobs.create(&PostParams::default(), &bad).await);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    let causes = s.details.expect("details").causes;
    assert_eq!(causes[0].field, "spec.template.spec.restartPolicy");
    assert_eq!(causes[0].reason, "FieldValueNotSupported");
    assert!(fake.object("jobs", "labforge-build-bad").is_none());

    // A Job name longer than a label value is refused (the pod label).
    let long = format!("labforge-build-{}", "x".repeat(60));
    let s = status(jobs.create(&PostParams::default(), &build_job(&long)).await);
    assert_eq!(s.code, 422);
    assert!(
        s.message.contains("must be no more than 63 characters"),
        "{}",
        s.message
    );
}

#[tokio::test]
async fn label_selectors_select_like_the_api_server() {
    let fake = FakeKube::start_with_reads();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cms: Api<ConfigMap> = Api::default_namespaced(client(&fake, dir.path()).await);
    let pp = PatchParams::apply("labforge");
    for (name, labels) in [
        (
            "a",
            json!({"tier": "gpu", "labforge.io/instance": "labforge"}),
        ),
        (
            "b",
            json!({"tier": "cpu", "labforge.io/instance": "labforge"}),
        ),
        ("c", json!({"tier": "cpu"})),
        ("d", json!({})),
    ] {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": name, "labels": labels}});
        cms.patch(name, &pp, &Patch::Apply(&body))
            .await
            .expect("the request succeeds");
    }
    let names = |list: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        list.items
            .into_iter()
            .map(|c| c.metadata.name.expect("metadata.name"))
            .collect()
    };
    let select = |s: &'static str| {
        let cms = cms.clone();
        async move { cms.list(&ListParams::default().labels(s)).await }
    };
    assert_eq!(
        names(select("tier=cpu").await.expect("the request succeeds")),
        ["b", "c"]
    );
    assert_eq!(
        names(select("tier==cpu").await.expect("the request succeeds")),
        ["b", "c"]
    );
    assert_eq!(
        names(select("tier!=cpu").await.expect("the request succeeds")),
        ["a", "d"]
    );
    assert_eq!(
        names(select("tier").await.expect("the request succeeds")),
        ["a", "b", "c"]
    );
    assert_eq!(
        names(select("!tier").await.expect("the request succeeds")),
        ["d"]
    );
    assert_eq!(
        names(
            select("tier=cpu,labforge.io/instance=labforge")
                .await
                .expect("the request succeeds")
        ),
        ["b"]
    );
    assert_eq!(
        names(
            select("tier in (gpu, cpu),!labforge.io/instance")
                .await
                .expect("the request succeeds")
        ),
        ["c"]
    );
    assert_eq!(
        names(
            select("tier notin (cpu)")
                .await
                .expect("the request succeeds")
        ),
        ["a", "d"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default())
                .await
                .expect("the request succeeds")
        )
        .len(),
        4
    );

    for bad in ["tier=a b", "tier~cpu", "=x", "tier in (a"] {
        let s = status(select(bad).await);
        assert_eq!(
            (s.code, s.reason.as_str()),
            (400, "BadRequest"),
            "{bad}: {}",
            s.message
        );
    }
    let list = fake.calls();
    let last = list.last().expect("a call");
    assert_eq!(last.query["labelSelector"], "tier in (a");
}

#[tokio::test]
async fn errors_are_statuses_with_reason_code_and_details() {
    let fake = FakeKube::start_with_reads();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let client = client(&fake, dir.path()).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let dss: Api<DaemonSet> = Api::default_namespaced(client.clone());
    let pp = PatchParams::apply("labforge");

    let s = status(cms.get("missing").await);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "configmaps \"missing\" not found");
    let d = s.details.expect("details");
    assert_eq!(
        (d.name.as_str(), d.kind.as_str()),
        ("missing", "configmaps")
    );

    let s = status(dss.get("missing").await);
    assert_eq!(s.message, "daemonsets.apps \"missing\" not found");
    assert_eq!(s.details.expect("details").group, "apps");

    let cm: ConfigMap = serde_json::from_value(profiles("{}")).expect("valid JSON");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("the request succeeds");
    let s = status(cms.create(&PostParams::default(), &cm).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
    assert!(s.is_already_exists());

    // The name must be a DNS-1123 subdomain.
    let mut bad = profiles("{}");
    bad["metadata"]["name"] = json!("Labforge_Profiles");
    let s = status(
        cms.patch("Labforge_Profiles", &pp, &Patch::Apply(&bad))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message.starts_with("ConfigMap \"Labforge_Profiles\" is invalid: metadata.name: Invalid value: \"Labforge_Profiles\": a lowercase RFC 1123 subdomain"),
        "{}",
        s.message
    );
    let d = s.details.expect("details");
    assert_eq!(d.kind, "ConfigMap");
    assert_eq!(d.causes[0].field, "metadata.name");
    assert_eq!(d.causes[0].reason, "FieldValueInvalid");

    // Label keys and values are checked.
    let mut bad = profiles("{}");
    bad["metadata"]["labels"]["bad key"] = json!("x");
    let s = status(
        cms.patch("labforge-profiles", &pp, &Patch::Apply(&bad))
            .await,
    );
    assert_eq!(s.code, 422, "{}", s.message);
    assert_eq!(
        s.details.expect("details").causes[0].field,
        "metadata.labels"
    );

    // The selector of a DaemonSet must match its template.
    let mut ds = prepull("labforge-prepull-gpu", "ghcr.io/x/gpu:1");
    ds["spec"]["template"]["metadata"]["labels"] = json!({"other": "x"});
    let s = status(
        dss.patch("labforge-prepull-gpu", &pp, &Patch::Apply(&ds))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message
            .starts_with("DaemonSet.apps \"labforge-prepull-gpu\" is invalid"),
        "{}",
        s.message
    );
    let fields: Vec<String> = s
        .details
        .expect("details")
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    assert_eq!(fields, ["spec.template.metadata.labels"]);

    // Every container needs a name and an image; names are unique.
    let mut ds = prepull("labforge-prepull-gpu", "ghcr.io/x/gpu:1");
    ds["spec"]["template"]["spec"]["containers"][0]["name"] = json!("pull");
    ds["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({"name": "noimage"}));
    let s = status(
        dss.patch("labforge-prepull-gpu", &pp, &Patch::Apply(&ds))
            .await,
    );
    let causes = s.details.expect("details").causes;
    let fields: Vec<(&str, &str)> = causes
        .iter()
        .map(|c| (c.field.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            (
                "spec.template.spec.containers[0].name",
                "FieldValueDuplicate"
            ),
            (
                "spec.template.spec.containers[1].image",
                "FieldValueRequired"
            ),
        ]
    );
    assert!(
        s.message.contains("is invalid: ["),
        "several causes are listed: {}",
        s.message
    );

    // ConfigMaps hold at most 1 MiB. (The ConfigMap was made by a POST, so
    // changing its data takes force; conflicts are checked first.)
    let big = profiles(&"x".repeat(1024 * 1024 + 1));
    let s = status(
        cms.patch("labforge-profiles", &pp, &Patch::Apply(&big))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("conflict with \"\" using v1"),
        "{}",
        s.message
    );
    let mut force = pp.clone();
    force.force = true;
    let s = status(
        cms.patch("labforge-profiles", &force, &Patch::Apply(&big))
            .await,
    );
    assert_eq!(s.code, 422);
    assert!(
        s.message
            .ends_with("[]: Too long: may not be more than 1048576 bytes"),
        "{}",
        s.message
    );

    // Server-side apply needs a field manager.
    let s = status(
        cms.patch(
            "labforge-profiles",
            &PatchParams::default(),
            &Patch::Apply(&profiles("{}")),
        )
        .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(s.details.expect("details").causes[0].field, "fieldManager");

    // Unknown fields are rejected, at the top, in metadata and in containers.
    let mut bad = profiles("{}");
    bad["spec"] = json!({});
    let s = status(
        cms.patch("labforge-profiles", &pp, &Patch::Apply(&bad))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        s.message,
        "failed to create typed patch object (/v1, Kind=ConfigMap): .spec: field not declared in schema"
    );
    let mut bad = prepull("labforge-prepull-gpu", "ghcr.io/x/gpu:1");
    bad["spec"]["template"]["spec"]["containers"][0]["imagePolicy"] = json!("Always");
    let s = status(
        dss.patch("labforge-prepull-gpu", &pp, &Patch::Apply(&bad))
            .await,
    );
    assert!(
        s.message.ends_with(".spec.template.spec.containers[name=\"pause\"].imagePolicy: field not declared in schema"),
        "{}",
        s.message
    );

    // The name and kind must be those of the URL.
    let s = status(
        cms.patch("another-name", &pp, &Patch::Apply(&profiles("{}")))
            .await,
    );
    assert_eq!(s.code, 400);
    assert_eq!(
        s.message,
        "the name of the object (labforge-profiles) does not match the name on the URL (another-name)"
    );
    let mut wrong = profiles("{}");
    wrong["kind"] = json!("Secret");
    let s = status(
        cms.patch("labforge-profiles", &pp, &Patch::Apply(&wrong))
            .await,
    );
    assert_eq!(s.code, 400);

    // Other patch types are not served.
    let s = status(
        cms.patch(
            "labforge-profiles",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"x": "y"}})),
        )
        .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (415, "UnsupportedMediaType"));
    assert_eq!(
        fake.object("configmaps", "labforge-profiles")
            .expect("the object is stored")["data"],
        json!({"profiles.json": "{}"}),
        "no failed write changed the object"
    );
}

#[tokio::test]
async fn conflicts_need_force_and_force_takes_the_field_over() {
    let fake = FakeKube::start_with_reads();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dss: Api<DaemonSet> = Api::default_namespaced(client(&fake, dir.path()).await);
    let name = "labforge-prepull-gpu";
    let pp = PatchParams::apply("labforge");
    dss.patch(name, &pp, &Patch::Apply(&prepull(name, "ghcr.io/x/gpu:1")))
        .await
        .expect("the request succeeds");
    let image = ".spec.template.spec.containers[name=\"pause\"].image";
    fake.own_field("daemonsets", name, "kubectl-edit", image);

    // Applying the same value shares the field: no conflict.
    dss.patch(name, &pp, &Patch::Apply(&prepull(name, "ghcr.io/x/gpu:1")))
        .await
        .expect("the request succeeds");

    let mut changed = prepull(name, "ghcr.io/x/gpu:1");
    changed["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("registry.k8s.io/pause:3.11");
    let s = status(dss.patch(name, &pp, &Patch::Apply(&changed)).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        s.message,
        format!("Apply failed with 1 conflict: conflict with \"kubectl-edit\": {image}")
    );
    let cause = &s.details.expect("details").causes[0];
    assert_eq!(cause.reason, "FieldManagerConflict");
    assert_eq!(cause.message, "conflict with \"kubectl-edit\"");
    assert_eq!(cause.field, image);
    let stored = fake
        .object("daemonsets", name)
        .expect("the object is stored");
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.k8s.io/pause:3.10"
    );

    let mut force = pp.clone();
    force.force = true;
    let forced = dss
        .patch(name, &force, &Patch::Apply(&changed))
        .await
        .expect("the request succeeds");
    let containers = forced
        .spec
        .expect("a spec")
        .template
        .spec
        .expect("a spec")
        .containers;
    assert_eq!(
        containers[0].image.as_deref(),
        Some("registry.k8s.io/pause:3.11")
    );
    let call = fake.writes().pop().expect("at least one");
    assert_eq!(call.query["force"], "true");
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );

    // The field moved to labforge: applying again without force works, and
    // kubectl-edit no longer owns it.
    let mut again = changed.clone();
    again["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("registry.k8s.io/pause:3.12");
    dss.patch(name, &pp, &Patch::Apply(&again))
        .await
        .expect("the request succeeds");
    let managers = fake
        .object("daemonsets", name)
        .expect("the object is stored")["metadata"]["managedFields"]
        .clone();
    let names: Vec<&str> = managers
        .as_array()
        .expect("managedFields")
        .iter()
        .map(|m| m["manager"].as_str().expect("a string"))
        .collect();
    assert_eq!(names, ["labforge"], "kubectl-edit owned nothing else");

    // An object someone else created is theirs: changing what they set
    // conflicts ("using" names the Update's API version).
    fake.put("daemonsets", prepull("other", "ghcr.io/x/other:1"));
    let s = status(
        dss.patch(
            "other",
            &pp,
            &Patch::Apply(&prepull("other", "ghcr.io/x/other:2")),
        )
        .await,
    );
    assert_eq!(s.code, 409);
    assert!(
        s.message.starts_with("Apply failed with 1 conflict: conflict with \"kubectl-create\" using apps/v1: .spec.template.spec.initContainers[name=\"pull\"].image"),
        "{}",
        s.message
    );
}

#[tokio::test]
async fn labels_of_other_managers_survive_an_apply() {
    let fake = FakeKube::start_with_reads();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cms: Api<ConfigMap> = Api::default_namespaced(client(&fake, dir.path()).await);
    let mut seeded = profiles("{}");
    seeded["metadata"]["labels"] = json!({"team": "ml"});
    seeded["metadata"]["annotations"] = json!({"note": "hand-made"});
    fake.put_as("configmaps", "kubectl-label", seeded);
    let mut applied = profiles("{}");
    applied["metadata"]["annotations"] = json!({"labforge.io/hash": "abc"});
    let mut force = PatchParams::apply("labforge");
    force.force = true;
    let got = cms
        .patch("labforge-profiles", &force, &Patch::Apply(&applied))
        .await
        .expect("the request succeeds");
    let labels = got.metadata.labels.expect("metadata.labels");
    assert_eq!(labels["team"], "ml");
    assert_eq!(labels["labforge.io/component"], "profiles");
    let annotations = got.metadata.annotations.expect("metadata.annotations");
    assert_eq!(annotations["note"], "hand-made");
    assert_eq!(annotations["labforge.io/hash"], "abc");

    // Owner references are stored as applied.
    let mut owned = profiles("{}");
    owned["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "labforge-hub",
        "uid": "6b1c2f0e-0000-4000-8000-000000000001"
    }]);
    let got = cms
        .patch("labforge-profiles", &force, &Patch::Apply(&owned))
        .await
        .expect("the request succeeds");
    let refs = got.metadata.owner_references.expect("ownerReferences");
    assert_eq!(refs[0].name, "labforge-hub");

    // Dropping what labforge alone owned removes it.
    let got = cms
        .patch("labforge-profiles", &force, &Patch::Apply(&profiles("{}")))
        .await
        .expect("the request succeeds");
    assert!(got.metadata.owner_references.is_none());
    let annotations = got.metadata.annotations.expect("metadata.annotations");
    assert!(!annotations.contains_key("labforge.io/hash"));
    assert_eq!(annotations["note"], "hand-made");
}

#[tokio::test]
async fn delete_checks_preconditions_and_answers_not_found() {
    let fake = FakeKube::start_with_reads();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cms: Api<ConfigMap> = Api::default_namespaced(client(&fake, dir.path()).await);
    let cm = cms
        .patch(
            "labforge-profiles",
            &PatchParams::apply("labforge"),
            &Patch::Apply(&profiles("{}")),
        )
        .await
        .expect("the request succeeds");
    let uid = cm.metadata.uid.expect("metadata.uid");

    let wrong = DeleteParams::default().preconditions(Preconditions {
        uid: Some("00000000-0000-0000-0000-000000000000".into()),
        resource_version: None,
    });
    let s = status(cms.delete("labforge-profiles", &wrong).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        s.message,
        format!(
            "Operation cannot be fulfilled on configmaps \"labforge-profiles\": Precondition failed: \
             UID in precondition: 00000000-0000-0000-0000-000000000000, UID in object meta: {uid}"
        )
    );
    assert!(fake.object("configmaps", "labforge-profiles").is_some());

    let right = DeleteParams::background().preconditions(Preconditions {
        uid: Some(uid.clone()),
        resource_version: None,
    });
    let done = cms
        .delete("labforge-profiles", &right)
        .await
        .expect("the request succeeds");
    let status_ok = done.right().expect("a Status for an immediate delete");
    assert!(status_ok.is_success());
    assert_eq!(status_ok.details.expect("details").uid, uid);
    assert!(fake.object("configmaps", "labforge-profiles").is_none());
    let call = fake.writes().pop().expect("at least one");
    assert_eq!(call.method, "DELETE");
    assert_eq!(
        call.body.expect("a body")["propagationPolicy"],
        "Background"
    );

    let s = status(
        cms.delete("labforge-profiles", &DeleteParams::default())
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn dry_run_validates_and_stores_nothing() {
    let fake = FakeKube::start_with_reads();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dss: Api<DaemonSet> = Api::default_namespaced(client(&fake, dir.path()).await);
    let name = "labforge-prepull-gpu";
    let mut pp = PatchParams::apply("labforge");
    pp.dry_run = true;
    let answer = dss
        .patch(name, &pp, &Patch::Apply(&prepull(name, "ghcr.io/x/gpu:1")))
        .await
        .expect("the request succeeds");
    assert_eq!(answer.metadata.generation, Some(1));
    assert_eq!(
        answer.spec.expect("a spec").revision_history_limit,
        Some(10),
        "the answer is defaulted"
    );
    assert!(fake.object("daemonsets", name).is_none(), "nothing stored");
    assert_eq!(fake.writes()[0].query["dryRun"], "All");

    let mut bad = prepull(name, "ghcr.io/x/gpu:1");
    bad["spec"]["selector"] = json!({"matchLabels": {}});
    let s = status(dss.patch(name, &pp, &Patch::Apply(&bad)).await);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(s.details.expect("details").causes[0].field, "spec.selector");

    let jobs: Api<Job> = Api::default_namespaced(dss.clone().into_client());
    jobs.create(
        &PostParams {
            dry_run: true,
            field_manager: None,
        },
        &build_job("labforge-build-x"),
    )
    .await
    .expect("the request succeeds");
    assert!(fake.objects("jobs").is_empty());
    assert!(fake.objects("pods").is_empty());
}

#[tokio::test]
async fn injected_failures_are_retried_or_reported() {
    let fake = FakeKube::start_with_reads();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cms: Api<ConfigMap> = Api::default_namespaced(client(&fake, dir.path()).await);
    let pp = PatchParams::apply("labforge");

    // kube-rs retries a 503 by itself; the journal shows both attempts.
    fake.fail_next("PATCH", CM, 503, 1);
    cms.patch("labforge-profiles", &pp, &Patch::Apply(&profiles("{}")))
        .await
        .expect("the request succeeds");
    let patches: Vec<u16> = fake
        .take_calls()
        .into_iter()
        .filter(|c| c.method == "PATCH")
        .map(|c| c.status)
        .collect();
    assert_eq!(patches, [503, 201]);

    // A 500 is not retried.
    fake.fail_next("GET", CM, 500, 1);
    let s = status(cms.get("labforge-profiles").await);
    assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"));
    cms.get("labforge-profiles")
        .await
        .expect("the request succeeds");

    // A 429 says when to come back.
    fake.fail_next("*", "/api/", 429, 1);
    let started = std::time::Instant::now();
    cms.get("labforge-profiles")
        .await
        .expect("the request succeeds");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    let calls = fake.take_calls();
    assert_eq!(calls.iter().filter(|c| c.status == 429).count(), 1);
    assert!(calls.iter().all(|c| c.method == "GET"));
    assert!(fake.writes().is_empty(), "take_calls cleared the journal");
}

#[tokio::test]
async fn job_pod_logs_stream_until_the_pod_ends() {
    let fake = FakeKube::start_with_reads();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let client = client(&fake, dir.path()).await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let job = "labforge-build-py-0123456789ab";
    jobs.create(&PostParams::default(), &build_job(job))
        .await
        .expect("the request succeeds");
    let pod = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .expect("the request succeeds")
        .items[0]
        .metadata
        .name
        .clone()
        .expect("a pod name");

    // A pending pod has no log yet.
    let s = status(pods.logs(&pod, &LogParams::default()).await);
    assert_eq!(s.code, 400);
    assert_eq!(
        s.message,
        format!("container \"build\" in pod \"{pod}\" is waiting to start: ContainerCreating")
    );

    assert_eq!(fake.start_job(job), pod);
    fake.append_log(&pod, &["step 1/3"]);
    let follow = LogParams {
        follow: true,
        container: Some("build".into()),
        ..LogParams::default()
    };
    let mut lines = pods
        .log_stream(&pod, &follow)
        .await
        .expect("the request succeeds")
        .lines();
    assert_eq!(
        lines
            .try_next()
            .await
            .expect("the request succeeds")
            .as_deref(),
        Some("step 1/3")
    );
    fake.append_log(&pod, &["step 2/3", "step 3/3"]);
    assert_eq!(
        lines
            .try_next()
            .await
            .expect("the request succeeds")
            .as_deref(),
        Some("step 2/3")
    );
    assert_eq!(
        lines
            .try_next()
            .await
            .expect("the request succeeds")
            .as_deref(),
        Some("step 3/3")
    );
    let reader = tokio::spawn(async move { lines.try_collect::<Vec<String>>().await });
    fake.finish_job(job, true);
    let rest = tokio::time::timeout(std::time::Duration::from_secs(10), reader)
        .await
        .expect("the stream ends with the pod")
        .expect("the reader finishes")
        .expect("the stream reads");
    assert!(rest.is_empty(), "{rest:?}");

    let done = jobs
        .get(job)
        .await
        .expect("the request succeeds")
        .status
        .expect("a status");
    assert_eq!(done.succeeded, Some(1));
    let conditions = done.conditions.expect("conditions");
    let complete = conditions
        .iter()
        .find(|c| c.type_ == "Complete")
        .expect("a Complete condition");
    assert_eq!(complete.status, "True");
    let phase = pods
        .get(&pod)
        .await
        .expect("the request succeeds")
        .status
        .expect("a status")
        .phase;
    assert_eq!(phase.as_deref(), Some("Succeeded"));

    // Without follow the log is what is there; tailLines cuts it.
    let all = pods
        .logs(&pod, &LogParams::default())
        .await
        .expect("the request succeeds");
    assert_eq!(all, "step 1/3\nstep 2/3\nstep 3/3\n");
    let tail = LogParams {
        tail_lines: Some(1),
        ..LogParams::default()
    };
    assert_eq!(
        pods.logs(&pod, &tail).await.expect("the request succeeds"),
        "step 3/3\n"
    );

    // A failed run.
    let failing = "labforge-build-py-fedcba987654";
    jobs.create(&PostParams::default(), &build_job(failing))
        .await
        .expect("the request succeeds");
    fake.run_job(failing, &["boom"], false);
    let status = jobs
        .get(failing)
        .await
        .expect("the request succeeds")
        .status
        .expect("a status");
    assert_eq!(status.failed, Some(1));
    let failed = status.conditions.expect("conditions");
    assert!(
        failed
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True")
    );
    let failed_pod = fake.job_pods(failing).pop().expect("at least one");
    assert_eq!(
        pods.logs(&failed_pod, &LogParams::default())
            .await
            .expect("the request succeeds"),
        "boom\n"
    );
}

fn test_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"labforge.io/component": "smoke-test"}},
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": 60,
            "terminationGracePeriodSeconds": 5,
            "enableServiceLinks": false,
            "containers": [{
                "name": "test",
                "image": format!("127.0.0.1:5000/labforge/x@sha256:{}", "a".repeat(64)),
                "command": ["/bin/sh", "-c", "echo hi"],
                "resources": {
                    "requests": {"cpu": "500m", "memory": "1Gi"},
                    "limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}
                }
            }]
        }
    })
}

#[tokio::test]
async fn standalone_pods_are_admitted_validated_and_driven_by_the_kubelet_hooks() {
    let fake = FakeKube::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let client = client(&fake, dir.path()).await;
    let pods: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        fake_kube::NAMESPACE,
        &kube::api::ApiResource::erase::<Pod>(&()),
    );
    let typed: Api<Pod> = Api::default_namespaced(client.clone());
    let create = |body: Value| {
        let pods = pods.clone();
        async move {
            let object: kube::api::DynamicObject =
                serde_json::from_value(body).expect("a pod body");
            pods.create(&PostParams::default(), &object).await
        }
    };

    // Created: defaulted, admitted, scheduled, Pending.
    let created = create(test_pod("t1")).await.expect("the request succeeds");
    let created = serde_json::to_value(&created).expect("JSON");
    let spec = &created["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["nodeName"], "fake-node");
    assert_eq!(spec["enableServiceLinks"], false, "kept as sent");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(spec["tolerations"].as_array().map(Vec::len), Some(2));
    assert_eq!(created["status"]["phase"], "Pending");
    assert_eq!(created["status"]["qosClass"], "Burstable");
    assert_eq!(
        created["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ContainerCreating"
    );

    // The kubelet: running, a log, an exit code.
    fake.start_pod("t1");
    fake.append_log("t1", &["hi"]);
    fake.finish_pod("t1", 3);
    let pod = typed.get("t1").await.expect("the request succeeds");
    let pod_status = pod.status.expect("a status");
    assert_eq!(pod_status.phase.as_deref(), Some("Failed"));
    let terminated = pod_status.container_statuses.expect("container statuses")[0]
        .state
        .clone()
        .expect("a state")
        .terminated
        .expect("terminated");
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (3, Some("Error"))
    );
    assert_eq!(
        typed
            .logs("t1", &LogParams::default())
            .await
            .expect("the request succeeds"),
        "hi\n"
    );
    create(test_pod("t0")).await.expect("the request succeeds");
    fake.finish_pod("t0", 0);
    assert_eq!(
        fake.object("pods", "t0").expect("t0")["status"]["phase"],
        "Succeeded"
    );

    // Past its deadline; an image that cannot be pulled; no node for it.
    create(test_pod("t2")).await.expect("the request succeeds");
    fake.start_pod("t2");
    fake.deadline_pod("t2");
    let t2 = fake.object("pods", "t2").expect("t2");
    assert_eq!(
        (
            &t2["status"]["phase"],
            &t2["status"]["reason"],
            &t2["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
        ),
        (&json!("Failed"), &json!("DeadlineExceeded"), &json!(137))
    );
    create(test_pod("t3")).await.expect("the request succeeds");
    fake.set_waiting("t3", "ErrImagePull", "401 Unauthorized");
    let s = status(typed.logs("t3", &LogParams::default()).await);
    assert_eq!(
        s.message,
        "container \"test\" in pod \"t3\" is waiting to start: ErrImagePull"
    );
    create(test_pod("t4")).await.expect("the request succeeds");
    fake.set_unschedulable(
        "t4",
        "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    );
    let t4 = fake.object("pods", "t4").expect("t4");
    assert!(t4["spec"].get("nodeName").is_none());
    assert_eq!(t4["status"]["conditions"][0]["reason"], "Unschedulable");

    // Deleted at once; the answer is the terminating pod.
    let deleted = pods
        .delete("t3", &DeleteParams::default())
        .await
        .expect("the request succeeds");
    let terminating = deleted.left().expect("the pod, not a Status");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert!(fake.object("pods", "t3").is_none());
    let s = status(pods.delete("t3", &DeleteParams::default()).await);
    assert_eq!(s.code, 404);

    // Validated like any pod, and its own fields.
    let mut bad = test_pod("bad");
    bad["spec"]["restartPolicy"] = json!("Sometimes");
    bad["spec"]["activeDeadlineSeconds"] = json!(0);
    bad["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = json!("0.5");
    let s = status(create(bad).await);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    for field in [
        "spec.restartPolicy",
        "spec.activeDeadlineSeconds",
        "spec.containers[0].resources.limits[nvidia.com/gpu]",
    ] {
        assert!(s.message.contains(field), "{field}: {}", s.message);
    }
    let mut unknown = test_pod("unknown");
    unknown["spec"]["containers"][0]["commandd"] = json!(["true"]);
    let s = status(create(unknown).await);
    assert_eq!(s.code, 400);
    assert!(
        s.message
            .contains("unknown field \"spec.containers[0].commandd\""),
        "{}",
        s.message
    );
    // Pods are created and deleted, never patched.
    let s = status(
        typed
            .patch(
                "t1",
                &PatchParams::apply("labforge"),
                &Patch::Apply(json!({})),
            )
            .await,
    );
    assert_eq!(s.code, 403);
}

#[tokio::test]
async fn deleting_a_job_collects_its_pods_unless_orphaned() {
    let fake = FakeKube::start_with_reads();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let client = client(&fake, dir.path()).await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client);

    jobs.create(&PostParams::default(), &build_job("bg"))
        .await
        .expect("the request succeeds");
    fake.run_job("bg", &["ok"], true);
    assert_eq!(fake.job_pods("bg").len(), 1);
    jobs.delete("bg", &DeleteParams::background())
        .await
        .expect("the request succeeds");
    assert!(fake.object("jobs", "bg").is_none());
    assert!(
        fake.objects("pods").is_empty(),
        "Background deletes the pods"
    );

    jobs.create(&PostParams::default(), &build_job("fg"))
        .await
        .expect("the request succeeds");
    let answer = jobs
        .delete("fg", &DeleteParams::foreground())
        .await
        .expect("the request succeeds");
    let job = answer.left().expect("the Job being deleted");
    assert!(job.metadata.deletion_timestamp.is_some());
    assert!(
        fake.objects("pods").is_empty(),
        "Foreground deletes the pods"
    );

    jobs.create(&PostParams::default(), &build_job("orphan"))
        .await
        .expect("the request succeeds");
    let pod = fake.job_pods("orphan").pop().expect("at least one");
    jobs.delete("orphan", &DeleteParams::orphan())
        .await
        .expect("the request succeeds");
    let kept = pods.get(&pod).await.expect("the request succeeds");
    assert!(
        kept.metadata.owner_references.is_none(),
        "the pod is orphaned"
    );

    // Without a policy, batch/v1 Jobs orphan their pods (with a warning).
    jobs.create(&PostParams::default(), &build_job("default"))
        .await
        .expect("the request succeeds");
    let pod = fake.job_pods("default").pop().expect("at least one");
    jobs.delete("default", &DeleteParams::default())
        .await
        .expect("the request succeeds");
    assert!(fake.object("pods", &pod).is_some());
}

#[tokio::test]
async fn credentials_and_the_role_are_enforced() {
    let fake = FakeKube::start_with_reads();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let wrong = client_for(&fake.kubeconfig_with_token(dir.path(), "not-the-token")).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(wrong);
    let s = status(cms.list(&ListParams::default()).await);
    assert_eq!((s.code, s.reason.as_str()), (401, "Unauthorized"));
    assert_eq!(fake.calls()[0].status, 401);

    let client = client(&fake, dir.path()).await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let s = status(
        pods.patch(
            "x",
            &PatchParams::apply("labforge"),
            &Patch::Apply(json!({})),
        )
        .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        s.message,
        "pods \"x\" is forbidden: User \"system:serviceaccount:labforge:labforge-hub\" cannot \
         patch resource \"pods\" in API group \"\" in the namespace \"labforge\""
    );
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::default_namespaced(client.clone());
    assert_eq!(status(secrets.list(&ListParams::default()).await).code, 403);
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        status(elsewhere.list(&ListParams::default()).await).code,
        403
    );
    let everywhere: Api<ConfigMap> = Api::all(client.clone());
    let s = status(everywhere.list(&ListParams::default()).await);
    assert!(s.message.ends_with("at the cluster scope"), "{}", s.message);
    // Jobs are created and deleted, never patched.
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let s = status(
        jobs.patch(
            "x",
            &PatchParams::apply("labforge"),
            &Patch::Apply(json!({})),
        )
        .await,
    );
    assert_eq!(s.code, 403);

    // What kube-rs may ask besides resources.
    let version = client
        .apiserver_version()
        .await
        .expect("the request succeeds");
    assert_eq!(version.git_version, "v1.33.0");
    assert!(
        fake.writes().iter().all(|c| c.status >= 400),
        "nothing was written"
    );
    assert_eq!(fake.calls().last().expect("a call").path, "/version");
}
