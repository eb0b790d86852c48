//! The cluster objects built from the shipped catalog, and the sync plan
//! as a table of listed objects.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::prepull::{self, Prepull, PrepullSettings, PullImage, Rollout};
use super::profiles::{self, Profiles, ProfilesError};
use super::*;
use crate::catalog::{Catalog, SourceFile, Sources, Toleration, load};
use crate::spawner::SpawnerSettings;

fn shipped() -> Catalog {
    let image = |name: &str, text: &str| SourceFile {
        path: format!("catalog/images/{name}.yaml"),
        text: text.into(),
    };
    let sources = Sources {
        settings: SourceFile {
            path: "catalog/catalog.yaml".into(),
            text: include_str!("../../../catalog/catalog.yaml").into(),
        },
        images: vec![
            image(
                "compilers",
                include_str!("../../../catalog/images/compilers.yaml"),
            ),
            image(
                "deeplearning",
                include_str!("../../../catalog/images/deeplearning.yaml"),
            ),
            image(
                "grading",
                include_str!("../../../catalog/images/grading.yaml"),
            ),
            image("nlp", include_str!("../../../catalog/images/nlp.yaml")),
            image(
                "notebook",
                include_str!("../../../catalog/images/notebook.yaml"),
            ),
        ],
    };
    match load(&sources) {
        Ok(c) => c,
        Err(d) => panic!("the shipped catalog must load: {d:?}"),
    }
}

fn reference(image: &str, version: usize) -> String {
    let sum = Sha256::digest(format!("{image}-{version}").as_bytes());
    let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
    format!("registry.ki.example.edu/labforge/{image}@sha256:{hex}")
}

fn pulls(catalog: &Catalog) -> Vec<PullImage> {
    catalog
        .images
        .iter()
        .map(|i| PullImage::new(i, vec![reference(&i.name, 0), reference(&i.name, 1)]))
        .collect()
}

fn owner() -> Owner {
    Owner {
        kind: Kind::ConfigMap,
        name: "labforge-profiles".into(),
        uid: "0b4e2a57-5b0e-4d1c-9f6e-3a1f7c9d2e10".into(),
    }
}

fn daemonsets(images: &[PullImage], settings: &PrepullSettings) -> Vec<Object> {
    let base = SpawnerSettings::default().base_tolerations;
    let owner = owner();
    prepull::daemonsets(&Prepull {
        instance: "labforge",
        images,
        base_tolerations: &base,
        settings,
        owner: Some(&owner),
    })
}

fn init_images(ds: &Object) -> Vec<String> {
    ds.body["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["image"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn gpu_images_are_pulled_only_where_gpu_pods_can_run() {
    let catalog = shipped();
    let images = pulls(&catalog);
    let sets = daemonsets(&images, &PrepullSettings::default());
    let gpu: Vec<&Object> = sets.iter().filter(|d| d.name.contains("-gpu-")).collect();
    let cpu: Vec<&Object> = sets.iter().filter(|d| d.name.contains("-cpu-")).collect();
    assert_eq!((gpu.len(), cpu.len()), (1, 1), "{sets:#?}");

    for image in &catalog.images {
        let want = reference(&image.name, 0);
        let (home, other) = if image.profile.gpus.is_some() {
            (gpu[0], cpu[0])
        } else {
            (cpu[0], gpu[0])
        };
        assert!(
            init_images(home).contains(&want),
            "{} not in {}",
            image.name,
            home.name
        );
        assert!(
            !init_images(other).contains(&want),
            "{} also in {}",
            image.name,
            other.name
        );
    }
    let gpu_spec = &gpu[0].body["spec"]["template"]["spec"];
    assert_eq!(
        gpu_spec["nodeSelector"],
        json!({"nvidia.com/gpu.present": "true"})
    );
    let tolerations = gpu_spec["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        tolerations.contains(
            &json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})
        )
    );
    // The hub's own tolerations are repeated, as KubeSpawner gives them to user pods.
    assert!(tolerations.contains(&json!({"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"})));
    // CPU images: no selector, no GPU toleration: tainted GPU nodes stay free of them.
    let cpu_spec = &cpu[0].body["spec"]["template"]["spec"];
    assert!(cpu_spec.get("nodeSelector").is_none());
    assert!(
        !cpu_spec["tolerations"]
            .to_string()
            .contains("nvidia.com/gpu")
    );
}

#[test]
fn only_the_current_version_is_pulled_unless_asked() {
    let catalog = shipped();
    let images = pulls(&catalog);
    let all = |sets: &[Object]| sets.iter().flat_map(init_images).collect::<Vec<_>>();
    let current = all(&daemonsets(&images, &PrepullSettings::default()));
    assert_eq!(current.len(), catalog.images.len());
    assert!(
        current
            .iter()
            .all(|r| !catalog.images.iter().any(|i| *r == reference(&i.name, 1)))
    );
    let two = PrepullSettings {
        previous_versions: 1,
        ..PrepullSettings::default()
    };
    assert_eq!(
        all(&daemonsets(&images, &two)).len(),
        2 * catalog.images.len()
    );
    let off = PrepullSettings {
        enabled: false,
        ..PrepullSettings::default()
    };
    assert!(daemonsets(&images, &off).is_empty());
}

#[test]
fn a_daemonset_pulls_by_digest_with_nothing_to_run_and_no_privileges() {
    let catalog = shipped();
    let sets = daemonsets(&pulls(&catalog), &PrepullSettings::default());
    for ds in &sets {
        let spec = &ds.body["spec"]["template"]["spec"];
        assert_eq!(spec["automountServiceAccountToken"], json!(false));
        assert_eq!(spec["securityContext"]["runAsNonRoot"], json!(true));
        let inits = spec["initContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(!inits.is_empty());
        for c in inits
            .iter()
            .chain(spec["containers"].as_array().into_iter().flatten())
        {
            assert_eq!(
                c["securityContext"]["allowPrivilegeEscalation"],
                json!(false),
                "{c}"
            );
            assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
            assert!(c["resources"]["limits"]["memory"].is_string(), "{c}");
            let name = c["name"].as_str().unwrap_or("");
            assert!(name.len() <= 63 && dns_label(name, 63) == name, "{name}");
        }
        for c in &inits {
            let image = c["image"].as_str().unwrap_or("");
            assert!(image.contains("@sha256:"), "{image}");
            assert_eq!(c["command"], json!(["/bin/sh", "-c", "exit 0"]));
        }
        assert_eq!(
            spec["containers"][0]["image"],
            json!("registry.k8s.io/pause:3.10")
        );
        // The selector matches the pod labels, and only this class's pods.
        let selector = ds.body["spec"]["selector"]["matchLabels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let labels = &ds.body["spec"]["template"]["metadata"]["labels"];
        assert!(selector.iter().all(|(k, v)| labels[k] == *v));
        assert!(selector.contains_key(prepull::NODE_CLASS));
        assert_eq!(
            ds.body["metadata"]["ownerReferences"][0]["uid"],
            json!(owner().uid)
        );
        assert_eq!(ds.body["metadata"]["labels"][MANAGED_BY], json!("labforge"));
        assert!(ds.applied_hash().is_some_and(|h| h.len() == 64));
    }
}

#[test]
fn placement_decides_the_class_and_names_stay_stable() {
    let catalog = shipped();
    let mut images = pulls(&catalog);
    let before = daemonsets(&images, &PrepullSettings::default());
    // A new digest changes the body, not the name.
    images[0].references[0] = reference("other", 0);
    let after = daemonsets(&images, &PrepullSettings::default());
    let names = |s: &[Object]| s.iter().map(|d| d.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&before), names(&after));
    assert_ne!(before, after);
    // A new placement is a new class.
    images[0]
        .node_selector
        .insert("example.edu/pool".into(), "big-memory".into());
    images[0].tolerations.push(Toleration {
        key: Some("example.edu/pool".into()),
        operator: Some("Exists".into()),
        value: None,
        effect: Some("NoSchedule".into()),
        toleration_seconds: None,
    });
    let split = daemonsets(&images, &PrepullSettings::default());
    assert_eq!(split.len(), before.len() + 1);
    // Image names too long for a container name are cut, and stay unique.
    let long = "x".repeat(80);
    let twins: Vec<PullImage> = (0..2)
        .map(|i| PullImage {
            name: format!("{long}{i}"),
            gpu: false,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            references: vec![reference(&format!("twin{i}"), 0)],
            offered: None,
        })
        .collect();
    let sets = daemonsets(&twins, &PrepullSettings::default());
    let inits = &sets[0].body["spec"]["template"]["spec"]["initContainers"];
    assert_ne!(inits[0]["name"], inits[1]["name"]);
}

fn configmap(public: &str) -> Object {
    let groups = BTreeMap::from([("grading".to_string(), vec!["course-ml".to_string()])]);
    match profiles::configmap(&Profiles {
        instance: "labforge",
        public,
        all: "[]",
        groups: &groups,
    }) {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn the_profiles_configmap_holds_the_lists_and_refuses_to_outgrow_kubernetes() {
    let cm = configmap("[{\"slug\": \"notebook\"}]");
    assert_eq!(cm.name, "labforge-profiles");
    assert_eq!(
        cm.body["data"]["profile_list.json"],
        json!("[{\"slug\": \"notebook\"}]")
    );
    assert!(
        cm.body["data"]["groups.json"]
            .as_str()
            .is_some_and(|g| g.contains("course-ml"))
    );
    let big = "x".repeat(profiles::MAX_DATA_BYTES);
    let err = profiles::configmap(&Profiles {
        instance: "labforge",
        public: &big,
        all: "[]",
        groups: &BTreeMap::new(),
    });
    assert!(matches!(err, Err(ProfilesError::TooLarge { .. })));
}

/// A desired object as the API server returns it: server fields, defaults,
/// status around what was applied.
fn served(object: &Object, uid: &str) -> Value {
    let mut body = object.body.clone();
    // As an item of a list: no apiVersion and kind.
    if let Some(m) = body.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    body["metadata"]["uid"] = json!(uid);
    body["metadata"]["resourceVersion"] = json!("42");
    body["metadata"]["generation"] = json!(1);
    body["metadata"]["managedFields"] = json!([{"manager": FIELD_MANAGER, "operation": "Apply"}]);
    if object.kind == Kind::DaemonSet {
        body["spec"]["revisionHistoryLimit"] = json!(10);
        let spec = &mut body["spec"]["template"]["spec"];
        spec["dnsPolicy"] = json!("ClusterFirst");
        if let Some(inits) = spec["initContainers"].as_array_mut() {
            for c in inits {
                c["terminationMessagePath"] = json!("/dev/termination-log");
            }
        }
        body["status"] = json!({"desiredNumberScheduled": 3, "numberAvailable": 3, "updatedNumberScheduled": 3, "observedGeneration": 1});
    }
    body
}

fn desired() -> Vec<Object> {
    let catalog = shipped();
    let mut objects = vec![configmap("[]")];
    objects.extend(daemonsets(&pulls(&catalog), &PrepullSettings::default()));
    objects
}

fn actions(changes: &[Change]) -> Vec<(String, Action)> {
    changes
        .iter()
        .map(|c| (format!("{}/{}", c.kind, c.name), c.action.clone()))
        .collect()
}

#[test]
fn plan_first_sync_creates_everything() {
    let want = desired();
    let changes = plan("labforge", &want, &[]);
    assert_eq!(changes.len(), want.len());
    assert!(
        changes
            .iter()
            .all(|c| c.action == Action::Create && c.body.is_some())
    );
}

#[test]
fn plan_is_empty_when_the_cluster_holds_what_was_applied() {
    let want = desired();
    let current: Vec<(Kind, Value)> = want.iter().map(|o| (o.kind, served(o, "u1"))).collect();
    let changes = plan("labforge", &want, &current);
    assert!(
        changes
            .iter()
            .all(|c| c.action == Action::Unchanged && c.body.is_none()),
        "{:?}",
        actions(&changes)
    );
}

#[test]
fn plan_table() {
    let want = desired();
    let ds = want[1].clone();
    let served_all =
        || -> Vec<(Kind, Value)> { want.iter().map(|o| (o.kind, served(o, "u1"))).collect() };
    type Edit = fn(&mut Vec<(Kind, Value)>);
    let cases: &[(&str, Edit, &str, Action)] = &[
        (
            "someone changed an image by hand",
            |c| {
                c[1].1["spec"]["template"]["spec"]["initContainers"][0]["image"] =
                    json!("evil:latest")
            },
            "daemonset",
            Action::Update { fields: vec![] },
        ),
        (
            "a label labforge sets was removed",
            |c| {
                if let Some(l) = c[0].1["metadata"]["labels"].as_object_mut() {
                    l.remove(COMPONENT);
                }
            },
            "configmap",
            Action::Update {
                fields: vec![".metadata.labels.labforge.io/component".into()],
            },
        ),
        (
            "labforge stopped setting a field (only the hash differs)",
            |c| {
                c[1].1["metadata"]["annotations"][APPLIED_HASH] = json!("0".repeat(64));
                c[1].1["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
            },
            "daemonset",
            Action::Update {
                fields: vec![plan::REMOVED_FIELDS.into()],
            },
        ),
    ];
    for (what, edit, kind, expected) in cases {
        let mut current = served_all();
        edit(&mut current);
        let changes = plan("labforge", &want, &current);
        let changed: Vec<&Change> = changes
            .iter()
            .filter(|c| c.action != Action::Unchanged)
            .collect();
        assert_eq!(changed.len(), 1, "{what}: {:?}", actions(&changes));
        assert_eq!(changed[0].kind.to_string(), *kind, "{what}");
        match (&changed[0].action, expected) {
            (
                Action::Update { fields },
                Action::Update {
                    fields: want_fields,
                },
            ) => {
                assert!(!fields.is_empty(), "{what}");
                if !want_fields.is_empty() {
                    assert_eq!(fields, want_fields, "{what}");
                }
            }
            (got, want) => assert_eq!(got, want, "{what}"),
        }
        assert!(
            changed[0].body.is_some(),
            "{what}: an update carries the body"
        );
    }
    // The hand-changed image is named by container.
    let mut current = served_all();
    current[1].1["spec"]["template"]["spec"]["initContainers"][0]["image"] = json!("evil:latest");
    let first = ds.body["spec"]["template"]["spec"]["initContainers"][0]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let changes = plan("labforge", &want, &current);
    assert_eq!(
        changes[1].action,
        Action::Update {
            fields: vec![format!(
                ".spec.template.spec.initContainers[name={first:?}].image"
            )]
        }
    );
}

#[test]
fn plan_deletes_only_this_instances_own_stale_objects() {
    let want = desired();
    let mut current: Vec<(Kind, Value)> = want.iter().map(|o| (o.kind, served(o, "u1"))).collect();
    let mut stale = served(&want[1], "u-stale");
    stale["metadata"]["name"] = json!("labforge-prepull-gpu-00000000");
    let mut other_instance = stale.clone();
    other_instance["metadata"]["name"] = json!("lab2-prepull-gpu-00000000");
    other_instance["metadata"]["labels"][INSTANCE] = json!("lab2");
    let mut foreign = stale.clone();
    foreign["metadata"]["name"] = json!("someone-elses");
    foreign["metadata"]["labels"] = json!({"app": "x"});
    current.push((Kind::DaemonSet, stale));
    current.push((Kind::DaemonSet, other_instance));
    current.push((Kind::DaemonSet, foreign));
    let changes = plan("labforge", &want, &current);
    let deletes: Vec<&Change> = changes
        .iter()
        .filter(|c| c.action == Action::Delete)
        .collect();
    assert_eq!(deletes.len(), 1, "{:?}", actions(&changes));
    assert_eq!(deletes[0].name, "labforge-prepull-gpu-00000000");
    assert_eq!(deletes[0].uid.as_deref(), Some("u-stale"));
}

#[test]
fn rollout_counts_only_pods_of_the_current_template() {
    let ds = |status: Value, generation: u64| json!({"metadata": {"generation": generation}, "status": status});
    let done = Rollout::of(&ds(
        json!({"desiredNumberScheduled": 4, "updatedNumberScheduled": 4, "numberAvailable": 4, "observedGeneration": 2}),
        2,
    ));
    assert_eq!(done.share(), Some(1.0));
    let half = Rollout::of(&ds(
        json!({"desiredNumberScheduled": 4, "updatedNumberScheduled": 2, "numberAvailable": 4, "observedGeneration": 2}),
        2,
    ));
    assert_eq!(half.share(), Some(0.5));
    let unseen = Rollout::of(&ds(
        json!({"desiredNumberScheduled": 4, "updatedNumberScheduled": 4, "numberAvailable": 4, "observedGeneration": 1}),
        2,
    ));
    assert_eq!(unseen.share(), Some(0.0));
    assert!(!unseen.observed);
    let nowhere = Rollout::of(&ds(
        json!({"desiredNumberScheduled": 0, "observedGeneration": 2}),
        2,
    ));
    assert_eq!(nowhere.share(), None);
}

/// The listed DaemonSets of `desired`, each rolled out as `status` says.
fn listed_with(desired: &[Object], status: impl Fn(&str) -> Option<Value>) -> Vec<Value> {
    desired
        .iter()
        .filter(|o| o.kind == Kind::DaemonSet)
        .filter_map(|o| {
            let mut body = served(o, "u");
            body["status"] = status(&o.name)?;
            Some(body)
        })
        .collect()
}

fn rolled(desired: u64, pulled: u64) -> Value {
    json!({"desiredNumberScheduled": desired, "updatedNumberScheduled": pulled, "numberAvailable": pulled, "observedGeneration": 1})
}

#[test]
fn a_reference_is_ready_once_its_pre_puller_holds_it_on_enough_nodes() {
    let catalog = shipped();
    let wanted = daemonsets(&pulls(&catalog), &PrepullSettings::default());
    let gpu = wanted
        .iter()
        .find(|o| o.name.contains("-gpu-"))
        .expect("a GPU class")
        .name
        .clone();
    let deeplearning = catalog
        .images
        .iter()
        .find(|i| i.profile.gpus.is_some())
        .expect("a GPU image")
        .name
        .clone();
    let cpu_image = catalog
        .images
        .iter()
        .find(|i| i.profile.gpus.is_none() && i.profile.node_selector.is_empty())
        .expect("a CPU image")
        .name
        .clone();
    // GPU pre-puller on 9 of 10 nodes, CPU ones everywhere.
    let listed = listed_with(&wanted, |name| {
        Some(if name == gpu {
            rolled(10, 9)
        } else {
            rolled(4, 4)
        })
    });
    let at = |share: f64| prepull::pulling(&wanted, &listed, share);
    let gpu_ref = reference(&deeplearning, 0);
    let cpu_ref = reference(&cpu_image, 0);
    let p = at(0.9);
    assert_eq!(
        p[&gpu_ref],
        prepull::Pulling {
            pulled: 9,
            nodes: 10,
            ready: true,
            waiting: None
        }
    );
    assert!(p[&cpu_ref].ready);
    // Every reference the pre-pullers pull is judged, and nothing else.
    let all: Vec<String> = wanted.iter().flat_map(init_images).collect();
    assert_eq!(p.len(), all.len());
    assert!(!at(0.95)[&gpu_ref].ready);
    assert_eq!(at(0.95)[&gpu_ref].waiting, Some(prepull::Waiting::Pulling));
    assert!(at(1.0)[&cpu_ref].ready);

    // Not created yet, not observed, without the reference, on no node.
    let missing = prepull::pulling(&wanted, &[], 0.5);
    assert_eq!(missing[&gpu_ref].waiting, Some(prepull::Waiting::Missing));
    let mut unobserved = listed.clone();
    for ds in &mut unobserved {
        ds["metadata"]["generation"] = json!(2);
    }
    let p = prepull::pulling(&wanted, &unobserved, 0.5);
    assert_eq!(p[&gpu_ref].waiting, Some(prepull::Waiting::Unobserved));
    assert_eq!(p[&gpu_ref].pulled, 0);
    let mut outdated = listed.clone();
    for ds in &mut outdated {
        if let Some(inits) = ds["spec"]["template"]["spec"]["initContainers"].as_array_mut() {
            for c in inits {
                c["image"] = json!("registry.ki.example.edu/labforge/old@sha256:00");
            }
        }
    }
    let p = prepull::pulling(&wanted, &outdated, 0.5);
    assert_eq!(p[&gpu_ref].waiting, Some(prepull::Waiting::Outdated));
    assert_eq!((p[&gpu_ref].pulled, p[&gpu_ref].nodes), (0, 10));
    let nowhere = listed_with(&wanted, |name| (name == gpu).then(|| rolled(0, 0)));
    let p = prepull::pulling(&wanted, &nowhere, 0.5);
    // No node to pull onto (a GPU pool scaled to zero): nothing to wait for.
    assert!(p[&gpu_ref].ready, "{:?}", p[&gpu_ref]);
    assert_eq!(p[&gpu_ref].waiting, None);
    // The CPU DaemonSets were not listed in that one.
    assert_eq!(p[&cpu_ref].waiting, Some(prepull::Waiting::Missing));
}

#[test]
fn shares_are_whole_nodes() {
    assert!(prepull::reaches(3, 10, 0.3));
    assert!(!prepull::reaches(2, 10, 0.3));
    assert!(prepull::reaches(9, 10, 0.9));
    assert!(!prepull::reaches(9, 10, 0.95));
    assert!(prepull::reaches(1, 1, 1.0));
    assert!(!prepull::reaches(0, 0, 0.1));
    assert!(prepull::reaches(1, 3, 0.3));
    assert_eq!(prepull::needed(10, 0.3), 3);
    assert_eq!(prepull::needed(10, 1e-12), 1);
    assert_eq!(prepull::needed(7, 1.0), 7);
}

#[test]
fn offer_after_is_a_share_and_needs_the_pre_pullers() {
    let with = |share: f64, enabled: bool| PrepullSettings {
        offer_after: Some(share),
        enabled,
        ..PrepullSettings::default()
    };
    assert_eq!(PrepullSettings::default().check(), Ok(()));
    assert_eq!(PrepullSettings::default().gate(), None);
    assert_eq!(with(0.9, true).check(), Ok(()));
    assert_eq!(with(1.0, true).gate(), Some(1.0));
    for bad in [0.0, -0.5, 1.01, 90.0, f64::NAN, f64::INFINITY] {
        let err = with(bad, true).check().expect_err("out of range");
        assert!(err.to_string().contains("above 0 and at most 1"), "{err}");
    }
    let err = with(0.9, false).check().expect_err("without pre-pullers");
    assert!(err.to_string().contains("enabled = true"), "{err}");
    assert_eq!(with(0.9, false).gate(), None);
}

#[test]
fn the_profiles_configmap_says_which_references_were_offered() {
    let all = json!([
        {"slug": "a", "kubespawner_override": {"image": "r/a@sha256:1"}},
        {"slug": "b", "profile_options": {"version": {"choices": {
            "current": {"kubespawner_override": {"image": "r/b@sha256:2"}},
            "previous": {"kubespawner_override": {"image": "r/b@sha256:3"}},
        }}}},
        {"slug": "c", "kubespawner_override": {"image": "r/c:latest"}},
    ])
    .to_string();
    let cm = profiles::configmap(&Profiles {
        instance: "labforge",
        public: "[]",
        all: &all,
        groups: &BTreeMap::new(),
    })
    .expect("a ConfigMap");
    let offered: Vec<String> = profiles::offered(&cm.body).into_iter().collect();
    assert_eq!(offered, ["r/a@sha256:1", "r/b@sha256:2", "r/b@sha256:3"]);
    assert!(profiles::offered(&json!({"data": {"profile_list_all.json": "not json"}})).is_empty());
    assert!(profiles::offered(&json!({})).is_empty());
}

#[test]
fn dns_labels() {
    for (input, max, want) in [
        ("Notebook_CUDA 12", 63, "notebook-cuda-12"),
        ("--a--b--", 63, "a-b"),
        ("abcdef", 3, "abc"),
        ("ab-cdef", 3, "ab"),
    ] {
        assert_eq!(dns_label(input, max), want, "{input}");
    }
}

#[test]
fn snapshot_of_the_shipped_catalogs_objects() {
    let objects = desired();
    let bodies: Vec<&Value> = objects.iter().map(|o| &o.body).collect();
    let text = serde_json::to_string_pretty(&bodies).unwrap_or_default();
    insta::assert_snapshot!("shipped_cluster_objects", text);
}

#[test]
fn named_list_items_are_matched_by_name_not_position() {
    let want = json!({"spec": {"initContainers": [
        {"name": "pull-a", "image": "r/a@sha256:1"},
        {"name": "pull-b", "image": "r/b@sha256:2"},
    ]}});
    // The API server kept another order: nothing differs.
    let have = json!({"spec": {"initContainers": [
        {"name": "pull-b", "image": "r/b@sha256:2", "imagePullPolicy": "IfNotPresent"},
        {"name": "pull-a", "image": "r/a@sha256:1", "imagePullPolicy": "IfNotPresent"},
    ]}});
    let mut out = Vec::new();
    plan::differences(&want, &have, &mut String::new(), &mut out);
    assert!(out.is_empty(), "{out:?}");
    // A changed item is named; a missing one too.
    let have = json!({"spec": {"initContainers": [
        {"name": "pull-b", "image": "r/b@sha256:3"},
        {"name": "pull-c", "image": "r/a@sha256:1"},
    ]}});
    let mut out = Vec::new();
    plan::differences(&want, &have, &mut String::new(), &mut out);
    assert_eq!(
        out,
        vec![
            ".spec.initContainers[name=\"pull-a\"]".to_string(),
            ".spec.initContainers[name=\"pull-b\"].image".to_string(),
        ]
    );
    // Unnamed lists still compare by position.
    let mut out = Vec::new();
    plan::differences(
        &json!({"a": [1, 2]}),
        &json!({"a": [2, 1]}),
        &mut String::new(),
        &mut out,
    );
    assert_eq!(out, vec![".a[0]".to_string(), ".a[1]".to_string()]);
}
