//! The Kubernetes manifests in `deploy/` and the JupyterHub values that
//! point at them: every object passes the API schemas of Kubernetes 1.32
//! (strict: unknown fields are errors), the kustomization lists exactly the
//! manifests, the Role grants exactly what the hub's code uses
//! (`labforge_builder::cluster::PERMISSIONS`) and nothing cluster-wide, the
//! pods are locked down, secrets come from the Secret `labforge-hub` only,
//! the hub's `labforge.toml` loads with labforge's own configuration
//! parser, the names and ports agree across objects and with the hub's
//! routes, and a real CNCF registry started with the shipped configuration
//! sends its notifications to the hub's events route with a token the hub
//! accepts.
//!
//! Needs `kubernetes-validate` and `docker-registry` (both installed by
//! `bash scripts/services.sh`); talks to no cluster.

#[path = "common/kube_validate.rs"]
mod kube_validate;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use yaml_rust2::{Yaml, YamlLoader};

/// The keys of the Secret `labforge-hub` (issue 7's plan) and whether the
/// hub may start without each.
const SECRET: &str = "labforge-hub";
const SECRET_KEYS: [(&str, bool); 6] = [
    ("admin-token", false),
    ("read-token", true),
    ("events-token", true),
    ("database-url", true),
    ("github-token", true),
    ("github-webhook-secret", true),
];

/// Which environment variable each Secret key must become, and the source
/// file that reads that variable (so a renamed variable fails here).
const SECRET_ENV: [(&str, &str, &str); 6] = [
    (
        "admin-token",
        "LABFORGE_HUB_ADMIN_TOKEN",
        "src/serve_cmd.rs",
    ),
    ("read-token", "LABFORGE_HUB_READ_TOKEN", "src/serve_cmd.rs"),
    (
        "events-token",
        "LABFORGE_REGISTRY_EVENTS_TOKEN",
        "src/serve_cmd.rs",
    ),
    ("database-url", "LABFORGE_STATE", "src/serve_cmd.rs"),
    ("github-token", "LABFORGE_GITHUB_TOKEN", "src/bot_cmd.rs"),
    (
        "github-webhook-secret",
        "LABFORGE_GITHUB_WEBHOOK_SECRET",
        "src/bot_cmd.rs",
    ),
];

/// A probe's manifest content for the registry test: the OCI empty config
/// `{}` has a well-known digest, so no hashing is needed.
const EMPTY_CONFIG: &str = "{}";
const EMPTY_CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy_dir() -> PathBuf {
    root().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every YAML file under deploy/ except the kustomization, sorted.
fn manifest_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && path.file_name().is_some_and(|n| n != "kustomization.yaml")
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&deploy_dir(), &mut out);
    out.sort();
    assert!(!out.is_empty(), "no manifests under deploy/");
    out
}

fn yaml_to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => json!(i),
        Yaml::Real(r) => json!(r.parse::<f64>().expect("a YAML float")),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        other => panic!("unexpected YAML key {other:?}"),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Yaml::Alias(_) | Yaml::BadValue => panic!("unexpected YAML node {y:?}"),
    }
}

/// Every document of a YAML text, as JSON.
fn parse_yaml(text: &str, what: &str) -> Vec<Value> {
    YamlLoader::load_from_str(text)
        .unwrap_or_else(|e| panic!("{what} is not YAML: {e}"))
        .iter()
        .filter(|d| !matches!(d, Yaml::Null))
        .map(yaml_to_json)
        .collect()
}

/// Every object of every manifest, with its file.
fn objects() -> Vec<(PathBuf, Value)> {
    manifest_files()
        .into_iter()
        .flat_map(|path| {
            let docs = parse_yaml(&read(&path), &path.display().to_string());
            docs.into_iter().map(move |d| (path.clone(), d))
        })
        .collect()
}

fn object(kind: &str, name: &str) -> Value {
    let found: Vec<Value> = objects()
        .into_iter()
        .map(|(_, o)| o)
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind} {name} in deploy/");
    found.into_iter().next().expect("one object")
}

fn kustomization() -> Value {
    let path = deploy_dir().join("kustomization.yaml");
    parse_yaml(&read(&path), "deploy/kustomization.yaml")
        .into_iter()
        .next()
        .expect("one document")
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

fn array_of<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is not a list: {v}"))
}

/// Every container of a pod spec, init containers included.
fn containers(pod: &Value) -> Vec<&Value> {
    let mut out: Vec<&Value> = array_of(&pod["containers"], "containers").iter().collect();
    if let Some(init) = pod["initContainers"].as_array() {
        out.extend(init);
    }
    out
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    containers(pod)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env_value<'a>(container: &'a Value, name: &str) -> &'a Value {
    array_of(&container["env"], "env")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{} has no variable {name}", container["name"]))
}

/// The mount path of the pod's volume that is `claim`'s PVC, in `container`.
fn claim_mount(pod: &Value, container: &Value, claim: &str) -> String {
    let volume = array_of(&pod["volumes"], "volumes")
        .iter()
        .find(|v| v["persistentVolumeClaim"]["claimName"] == claim)
        .unwrap_or_else(|| panic!("no volume of the claim {claim}"));
    let mount = array_of(&container["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap_or_else(|| panic!("{} does not mount {claim}", container["name"]));
    assert!(
        mount["subPath"].is_null(),
        "the claim {claim} is mounted whole"
    );
    str_of(&mount["mountPath"], "mountPath").to_string()
}

/// `--flag=value` from a container's args.
fn arg<'a>(container: &'a Value, flag: &str) -> &'a str {
    let prefix = format!("{flag}=");
    array_of(&container["args"], "args")
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{} has no {flag}=", container["name"]))
}

/// The number of a container port named `name`.
fn port_named(pod: &Value, name: &str) -> Option<i64> {
    containers(pod)
        .into_iter()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_i64())
}

fn source(path: &str) -> String {
    read(&root().join(path))
}

/// A path the hub's router serves (`.route("PATH", …)` in hub/src/api.rs).
fn assert_real_route(path: &str) {
    let api = source("hub/src/api.rs");
    assert!(
        api.contains(&format!(".route(\"{path}\"")),
        "hub/src/api.rs has no route {path}"
    );
}

// --- schemas ----------------------------------------------------------------

#[test]
fn every_manifest_passes_the_kubernetes_schemas_strictly() {
    let files = manifest_files();
    kube_validate::validate(&files).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_validator_rejects_unknown_fields_and_unknown_kinds() {
    let all: Vec<Value> = objects().into_iter().map(|(_, o)| o).collect();
    // The unchanged objects pass through the same path.
    kube_validate::validate_docs(&all).unwrap_or_else(|e| panic!("{e}"));

    // Broken copies, checked in one run (each object goes to a file named
    // NNN-Kind-name after its position): one unknown top-level field in a
    // copy of each object, and a misspelt security setting deep in the
    // hub's pod template.
    let mut broken: Vec<Value> = all
        .iter()
        .map(|o| {
            let mut o = o.clone();
            o["labforgeUnknownField"] = json!(true);
            o
        })
        .collect();
    let mut hub = object("Deployment", "labforge-hub");
    hub["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] =
        json!(true);
    broken.push(hub);
    let err = kube_validate::validate_docs(&broken).expect_err("broken objects are rejected");
    let reported = |i: usize, level: &str, needle: &str| {
        err.lines()
            .any(|l| l.starts_with(level) && l.contains(&format!("/{i:03}-")) && l.contains(needle))
    };
    for i in 0..all.len() {
        assert!(
            reported(i, "ERROR ", "'labforgeUnknownField' was unexpected"),
            "the copy of object {i} with an unknown field fails: {err}"
        );
    }
    assert!(
        reported(
            all.len(),
            "ERROR ",
            "'readOnlyRootFileSystem' was unexpected"
        ),
        "a misspelt field fails: {err}"
    );

    // Files on disk: a broken copy of a manifest fails like its object, and
    // a file whose only object has a kind without a schema (the tool merely
    // warns about it) counts as failed, not as passed.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("service.yaml");
    let text = read(&deploy_dir().join("hub/service.yaml")).replace(
        "  type: ClusterIP\n",
        "  type: ClusterIP\n  sessionAfinity: None\n",
    );
    assert!(text.contains("sessionAfinity"), "the copy was changed");
    std::fs::write(&copy, &text).expect("write the copy");
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        read(&deploy_dir().join("hub/service.yaml")).replace("kind: Service\n", "kind: Servise\n"),
    )
    .expect("write the typo");
    let err = kube_validate::validate(&[copy, typo.clone()]).expect_err("both files are rejected");
    assert!(err.contains("'sessionAfinity' was unexpected"), "{err}");
    assert!(
        err.contains(&format!("no object of {} passed", typo.display())),
        "an unknown kind is not a pass: {err}"
    );
    assert!(err.contains("Servise"), "{err}");
}

// --- kustomization ----------------------------------------------------------

#[test]
fn the_kustomization_lists_every_manifest_and_names_the_namespace() {
    let k = kustomization();
    assert_eq!(k["kind"], "Kustomization");
    assert_eq!(k["namespace"], "labforge");
    let listed: Vec<String> = array_of(&k["resources"], "resources")
        .iter()
        .map(|r| str_of(r, "a resource").to_string())
        .collect();
    let listed_set: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(
        listed.len(),
        listed_set.len(),
        "no resource is listed twice"
    );
    let on_disk: BTreeSet<String> = manifest_files()
        .iter()
        .map(|p| {
            p.strip_prefix(deploy_dir())
                .expect("under deploy/")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        listed_set, on_disk,
        "deploy/kustomization.yaml resources = the manifests under deploy/"
    );

    // The common label, on every object and pod template, not on selectors.
    let labels = array_of(&k["labels"], "labels");
    assert!(
        labels
            .iter()
            .any(|l| l["pairs"]["app.kubernetes.io/part-of"] == "labforge"
                && l["includeTemplates"] == true
                && l["includeSelectors"] == false),
        "labels: app.kubernetes.io/part-of: labforge: {labels:?}"
    );

    // The release image: the kustomization's override and the Deployment agree.
    let images = array_of(&k["images"], "images");
    assert_eq!(images.len(), 1);
    let name = str_of(&images[0]["name"], "images[0].name");
    let tag = str_of(&images[0]["newTag"], "images[0].newTag");
    let hub = object("Deployment", "labforge-hub");
    let pod = &hub["spec"]["template"]["spec"];
    assert_eq!(
        container(pod, "hub")["image"],
        format!("{name}:{tag}"),
        "the hub's image is the one `images:` overrides"
    );
    assert_eq!(format!("{name}:{tag}"), "ghcr.io/labforge/labforge:0.1.0");
}

#[test]
fn manifests_are_namespace_agnostic_and_use_the_planned_names() {
    let mut names: BTreeSet<(String, String)> = BTreeSet::new();
    for (path, o) in objects() {
        let what = format!("{} in {}", o["kind"], path.display());
        assert!(
            o["metadata"]["namespace"].is_null(),
            "{what}: no namespace (the kustomization sets it)"
        );
        // The hub's sync owns (and may prune) objects labelled as managed
        // by labforge: what the operator applies must never look like them.
        assert!(
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"].is_null(),
            "{what}: no managed-by label"
        );
        names.insert((
            str_of(&o["kind"], "kind").to_string(),
            str_of(&o["metadata"]["name"], "name").to_string(),
        ));
    }
    let expected: BTreeSet<(String, String)> = [
        ("ServiceAccount", "labforge-hub"),
        ("Role", "labforge-hub"),
        ("RoleBinding", "labforge-hub"),
        ("ConfigMap", "labforge-config"),
        ("PersistentVolumeClaim", "labforge-state"),
        ("Deployment", "labforge-hub"),
        ("Service", "labforge-hub"),
        ("NetworkPolicy", "labforge-smoke-tests"),
        ("ConfigMap", "labforge-registry-config"),
        ("PersistentVolumeClaim", "labforge-registry"),
        ("Deployment", "labforge-registry"),
        ("Service", "labforge-registry"),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    assert_eq!(names, expected);
}

// --- RBAC -------------------------------------------------------------------

#[test]
fn the_role_grants_exactly_what_the_hub_uses() {
    for (path, o) in objects() {
        let kind = str_of(&o["kind"], "kind");
        assert!(
            kind != "ClusterRole" && kind != "ClusterRoleBinding",
            "{}: no cluster-wide RBAC ({kind})",
            path.display()
        );
    }
    let role = object("Role", "labforge-hub");
    let mut granted: BTreeSet<(String, String, String)> = BTreeSet::new();
    for rule in array_of(&role["rules"], "rules") {
        assert!(rule["nonResourceURLs"].is_null(), "no non-resource URLs");
        let fields: BTreeMap<&str, Vec<&str>> =
            ["apiGroups", "resources", "verbs", "resourceNames"]
                .into_iter()
                .map(|f| {
                    let values = rule[f]
                        .as_array()
                        .map(|a| a.iter().map(|v| str_of(v, f)).collect())
                        .unwrap_or_default();
                    (f, values)
                })
                .collect();
        for (field, values) in &fields {
            assert!(
                values.iter().all(|v| !v.contains('*')),
                "no wildcard in {field}: {rule}"
            );
        }
        assert!(
            !fields["resources"]
                .iter()
                .any(|r| *r == "secrets" || r.starts_with("secrets/")),
            "the hub gets no access to Secrets: {rule}"
        );
        for group in &fields["apiGroups"] {
            for resource in &fields["resources"] {
                for verb in &fields["verbs"] {
                    granted.insert((group.to_string(), resource.to_string(), verb.to_string()));
                }
            }
        }
    }
    let used: BTreeSet<(String, String, String)> = labforge_builder::cluster::PERMISSIONS
        .iter()
        .flat_map(|p| {
            p.verbs.iter().map(|v| {
                (
                    p.api_group.to_string(),
                    p.resource.to_string(),
                    v.to_string(),
                )
            })
        })
        .collect();
    assert!(!used.is_empty());
    assert_eq!(
        granted, used,
        "the Role labforge-hub grants exactly labforge_builder::cluster::PERMISSIONS"
    );
}

#[test]
fn the_role_binding_binds_the_role_to_the_hub_service_account() {
    let binding = object("RoleBinding", "labforge-hub");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "labforge-hub"})
    );
    let subjects = array_of(&binding["subjects"], "subjects");
    assert_eq!(subjects.len(), 1, "one subject: {subjects:?}");
    assert_eq!(subjects[0]["kind"], "ServiceAccount");
    assert_eq!(subjects[0]["name"], "labforge-hub");
    assert!(
        subjects[0]["namespace"].is_null(),
        "the subject's namespace comes from the kustomization"
    );
    object("ServiceAccount", "labforge-hub");
    let hub = object("Deployment", "labforge-hub");
    assert_eq!(
        hub["spec"]["template"]["spec"]["serviceAccountName"],
        "labforge-hub"
    );
}

// --- pods -------------------------------------------------------------------

fn deployments() -> Vec<Value> {
    let found: Vec<Value> = objects()
        .into_iter()
        .map(|(_, o)| o)
        .filter(|o| o["kind"] == "Deployment")
        .collect();
    assert_eq!(found.len(), 2, "the hub and the registry");
    found
}

#[test]
fn pods_run_unprivileged_with_read_only_roots_and_resource_limits() {
    for d in deployments() {
        let name = d["metadata"]["name"].clone();
        assert_eq!(d["spec"]["replicas"], 1, "{name}: one replica");
        assert_eq!(
            d["spec"]["strategy"]["type"], "Recreate",
            "{name}: Recreate (ReadWriteOnce volume)"
        );
        let pod = &d["spec"]["template"]["spec"];
        let sc = &pod["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{name}: pod runAsNonRoot");
        for id in ["runAsUser", "runAsGroup", "fsGroup"] {
            assert!(
                sc[id].as_i64().is_some_and(|n| n > 0),
                "{name}: pod {id} is a fixed non-root id: {sc}"
            );
        }
        assert_eq!(
            sc["seccompProfile"]["type"], "RuntimeDefault",
            "{name}: pod seccomp"
        );
        for host in ["hostNetwork", "hostPID", "hostIPC"] {
            assert!(
                pod[host].is_null() || pod[host] == false,
                "{name}: no {host}"
            );
        }
        assert_eq!(
            pod["enableServiceLinks"], false,
            "{name}: no Service variables that look like LABFORGE_* or REGISTRY_* settings"
        );
        for v in array_of(&pod["volumes"], "volumes") {
            assert!(v["hostPath"].is_null(), "{name}: no hostPath volume: {v}");
        }
        for c in containers(pod) {
            let what = format!("{name}/{}", c["name"]);
            let sc = &c["securityContext"];
            assert_eq!(sc["runAsNonRoot"], true, "{what}: runAsNonRoot");
            for id in ["runAsUser", "runAsGroup"] {
                assert!(
                    sc[id].as_i64().is_some_and(|n| n > 0),
                    "{what}: {id} is a fixed non-root id"
                );
            }
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}: read-only root");
            assert_eq!(
                sc["allowPrivilegeEscalation"], false,
                "{what}: no privilege escalation"
            );
            assert!(
                sc["privileged"].is_null() || sc["privileged"] == false,
                "{what}: not privileged"
            );
            assert_eq!(
                sc["capabilities"]["drop"],
                json!(["ALL"]),
                "{what}: drop ALL"
            );
            assert!(sc["capabilities"]["add"].is_null(), "{what}: adds nothing");
            assert_eq!(
                sc["seccompProfile"]["type"], "RuntimeDefault",
                "{what}: seccomp"
            );
            for kind in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        !c["resources"][kind][resource].is_null(),
                        "{what}: resources.{kind}.{resource}"
                    );
                }
            }
            // A read-only root needs somewhere to write temporary files.
            let tmp = array_of(&c["volumeMounts"], "volumeMounts")
                .iter()
                .find(|m| m["mountPath"] == "/tmp")
                .unwrap_or_else(|| panic!("{what}: a writable /tmp"));
            let volume = array_of(&pod["volumes"], "volumes")
                .iter()
                .find(|v| v["name"] == tmp["name"])
                .expect("the /tmp volume");
            assert!(
                volume["emptyDir"].is_object(),
                "{what}: /tmp is an emptyDir"
            );
        }
    }
}

#[test]
fn the_hub_probes_its_real_health_routes() {
    let hub = object("Deployment", "labforge-hub");
    let pod = &hub["spec"]["template"]["spec"];
    let c = container(pod, "hub");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_real_route(path);
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        let port = &c[probe]["httpGet"]["port"];
        let number = match port {
            Value::String(name) => port_named(pod, name),
            other => other.as_i64(),
        };
        assert_eq!(number, Some(8080), "{probe} goes to the hub's port 8080");
    }
    assert_eq!(port_named(pod, "http"), Some(8080));
    assert_eq!(port_named(pod, "context"), Some(7520));
    assert_eq!(
        hub["spec"]["template"]["spec"]["automountServiceAccountToken"],
        true
    );
}

/// Every reference to a Secret anywhere under `v`: (JSON path, secret name,
/// key or "", optional).
fn secret_refs(v: &Value, path: &str, out: &mut Vec<(String, String, String, bool)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let here = format!("{path}.{k}");
                match k.as_str() {
                    "secretKeyRef" => out.push((
                        here.clone(),
                        str_of(&child["name"], "secretKeyRef.name").to_string(),
                        str_of(&child["key"], "secretKeyRef.key").to_string(),
                        child["optional"] == true,
                    )),
                    "secretRef" => out.push((
                        here.clone(),
                        str_of(&child["name"], "secretRef.name").to_string(),
                        String::new(),
                        child["optional"] == true,
                    )),
                    "secret" => out.push((
                        here.clone(),
                        str_of(&child["secretName"], "secret.secretName").to_string(),
                        String::new(),
                        child["optional"] == true,
                    )),
                    _ => {}
                }
                secret_refs(child, &here, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                secret_refs(child, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn secrets_come_from_the_labforge_hub_secret_only() {
    let keys: BTreeMap<&str, bool> = SECRET_KEYS.into_iter().collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for d in deployments() {
        let mut refs = Vec::new();
        secret_refs(&d, "", &mut refs);
        for (path, name, key, optional) in refs {
            let what = format!("{}{path}", d["metadata"]["name"]);
            assert_eq!(name, SECRET, "{what}: only the Secret {SECRET}");
            assert!(!key.is_empty(), "{what}: single keys, not the whole Secret");
            let may_be_absent = *keys
                .get(key.as_str())
                .unwrap_or_else(|| panic!("{what}: {key} is not a key of {SECRET}"));
            if d["metadata"]["name"] == "labforge-hub" {
                assert_eq!(
                    optional,
                    may_be_absent,
                    "{what}: {key} is {}",
                    if may_be_absent {
                        "optional"
                    } else {
                        "required"
                    }
                );
                seen.insert(key);
            } else {
                // The registry must not start without the events token: it
                // would queue every event the hub refuses.
                assert_eq!(key, "events-token", "{what}");
                assert!(!optional, "{what}: the registry needs the events token");
            }
        }
    }
    assert_eq!(
        seen,
        keys.keys().map(|k| k.to_string()).collect(),
        "the hub gets every key of {SECRET}"
    );

    // Each key becomes the variable labforge reads.
    let hub = object("Deployment", "labforge-hub");
    let c = container(&hub["spec"]["template"]["spec"], "hub");
    for (key, var, file) in SECRET_ENV {
        assert!(
            source(file).contains(&format!("\"{var}\"")),
            "{file} reads {var}"
        );
        assert_eq!(
            env_value(c, var)["valueFrom"]["secretKeyRef"]["key"],
            key,
            "{var} comes from the key {key}"
        );
    }
}

#[test]
fn services_select_their_pods_and_reach_named_ports() {
    let deployments = deployments();
    let mut services = 0;
    for (_, s) in objects() {
        if s["kind"] != "Service" {
            continue;
        }
        services += 1;
        let name = &s["metadata"]["name"];
        let selector = s["spec"]["selector"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: a selector"));
        assert!(!selector.is_empty(), "{name}: a selector");
        let matching: Vec<&Value> = deployments
            .iter()
            .filter(|d| {
                let labels = &d["spec"]["template"]["metadata"]["labels"];
                selector.iter().all(|(k, v)| &labels[k] == v)
            })
            .collect();
        assert_eq!(matching.len(), 1, "{name} selects exactly one Deployment");
        let d = matching[0];
        // The Deployment's own selector picks its pods too.
        let match_labels = d["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels");
        for (k, v) in match_labels {
            assert_eq!(&d["spec"]["template"]["metadata"]["labels"][k], v);
        }
        let pod = &d["spec"]["template"]["spec"];
        for port in array_of(&s["spec"]["ports"], "ports") {
            let target = str_of(&port["targetPort"], "targetPort (by name)");
            let number = port_named(pod, target)
                .unwrap_or_else(|| panic!("{name}: no container port named {target}"));
            assert_eq!(
                port["port"].as_i64(),
                Some(number),
                "{name}: port {target} is the container's"
            );
        }
    }
    assert_eq!(services, 2);
    let hub = object("Service", "labforge-hub");
    let ports: BTreeSet<(String, i64)> = array_of(&hub["spec"]["ports"], "ports")
        .iter()
        .map(|p| {
            (
                str_of(&p["name"], "port name").to_string(),
                p["port"].as_i64().expect("a port number"),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [("http".to_string(), 8080), ("context".to_string(), 7520)]
            .into_iter()
            .collect()
    );
    let registry = object("Service", "labforge-registry");
    assert_eq!(registry["spec"]["ports"][0]["port"], 5000);
}

// --- the hub's configuration --------------------------------------------------

#[test]
fn the_hub_config_is_a_labforge_toml_that_fits_the_pod() {
    let config_map = object("ConfigMap", "labforge-config");
    let text = str_of(&config_map["data"]["labforge.toml"], "labforge.toml");
    let hub = object("Deployment", "labforge-hub");
    let pod = &hub["spec"]["template"]["spec"];
    let c = container(pod, "hub");

    // The file the hub is told to read is where the ConfigMap is mounted.
    let args: Vec<&str> = array_of(&c["args"], "args")
        .iter()
        .map(|a| str_of(a, "an arg"))
        .collect();
    assert_eq!(args[0], "serve");
    let config_arg = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .expect("serve --config FILE");
    let config_path = Path::new(config_arg);
    let mount = array_of(&c["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["name"] == "config")
        .expect("the config volume is mounted");
    assert_eq!(mount["readOnly"], true);
    assert_eq!(
        config_path.parent(),
        Some(Path::new(str_of(&mount["mountPath"], "mountPath")))
    );
    let config_volume = array_of(&pod["volumes"], "volumes")
        .iter()
        .find(|v| v["name"] == "config")
        .expect("the config volume");
    assert_eq!(config_volume["configMap"]["name"], "labforge-config");
    assert_eq!(
        config_volume["configMap"]["items"],
        json!([{"key": "labforge.toml", "path": config_path.file_name().expect("a file name").to_string_lossy()}])
    );

    // labforge's own parser (unknown keys are errors) accepts it.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("labforge.toml");
    std::fs::write(&file, text).expect("write labforge.toml");
    let config = labforge_builder::config::Config::load(&file, true)
        .unwrap_or_else(|e| panic!("deploy's labforge.toml does not load: {e}"));

    // Listens on every interface, on the container's port.
    let listen = config.hub.listen.as_deref().expect("[hub] listen");
    assert_eq!(listen, "0.0.0.0:8080");
    assert_eq!(
        listen.rsplit_once(':').map(|(_, p)| p.parse::<i64>().ok()),
        Some(port_named(pod, "http"))
    );

    // The state is on the labforge-state volume.
    let state_mount = claim_mount(pod, c, "labforge-state");
    let state = config.state.as_ref().expect("state").clone();
    assert!(
        state.is_absolute() && state.starts_with(&state_mount),
        "state {} is on the labforge-state volume ({state_mount})",
        state.display()
    );
    // Relative defaults land on the volume too.
    assert_eq!(c["workingDir"], state_mount);

    // The catalog and templates are git-sync's checkout on the same volume.
    let sync = container(pod, "git-sync");
    assert_eq!(sync["image"], "registry.k8s.io/git-sync/git-sync:v4.4.0");
    let sync_root = PathBuf::from(arg(sync, "--root"));
    let link = arg(sync, "--link");
    assert!(!link.starts_with('/'), "--link is relative to --root");
    let checkout = sync_root.join(link);
    assert!(
        sync_root.starts_with(claim_mount(pod, sync, "labforge-state")),
        "git-sync writes on the labforge-state volume"
    );
    assert_eq!(
        claim_mount(pod, sync, "labforge-state"),
        state_mount,
        "both containers see the volume at the same path"
    );
    for (what, path) in [
        ("catalog", config.catalog.as_ref()),
        ("dockerfiles", config.dockerfiles.as_ref()),
    ] {
        let path = path.unwrap_or_else(|| panic!("{what} is set"));
        assert_eq!(
            path,
            &checkout.join(what),
            "{what} is the {what}/ folder of git-sync's checkout"
        );
    }
    assert!(
        arg(sync, "--period").ends_with('s'),
        "--period is a duration"
    );
    // --repo and --ref come from the ConfigMap, through variables.
    for (flag, key) in [("--repo", "catalog-repo"), ("--ref", "catalog-ref")] {
        let value = arg(sync, flag);
        let var = value
            .strip_prefix("$(")
            .and_then(|v| v.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{flag} is $(VARIABLE): {value}"));
        let from = &env_value(sync, var)["valueFrom"]["configMapKeyRef"];
        assert_eq!(from["name"], "labforge-config", "{flag}");
        assert_eq!(from["key"], key, "{flag}");
        assert!(
            config_map["data"][key]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "labforge-config has {key}"
        );
    }

    // The Kubernetes sync is on, in the hub's own namespace (the Role's).
    assert!(config.kubernetes.sync, "[kubernetes] sync = true");
    assert_eq!(config.kubernetes.namespace, None, "the pod's own namespace");
}

// --- the registry -----------------------------------------------------------

/// The registry's endpoint list as the Deployment gives it (the variable
/// REGISTRY_NOTIFICATIONS_ENDPOINTS), parsed.
fn registry_endpoints() -> Vec<Value> {
    let registry = object("Deployment", "labforge-registry");
    let c = container(&registry["spec"]["template"]["spec"], "registry");
    let text = str_of(
        &env_value(c, "REGISTRY_NOTIFICATIONS_ENDPOINTS")["value"],
        "REGISTRY_NOTIFICATIONS_ENDPOINTS",
    );
    let docs = parse_yaml(text, "REGISTRY_NOTIFICATIONS_ENDPOINTS");
    assert_eq!(docs.len(), 1);
    array_of(&docs[0], "the endpoint list").clone()
}

#[test]
fn the_registry_config_parses_and_notifies_the_hub_events_route() {
    let config_map = object("ConfigMap", "labforge-registry-config");
    let text = str_of(&config_map["data"]["config.yml"], "config.yml");
    let docs = parse_yaml(text, "config.yml");
    assert_eq!(docs.len(), 1);
    let config = &docs[0];
    assert_eq!(config["version"], 0.1);
    let registry = object("Deployment", "labforge-registry");
    let pod = &registry["spec"]["template"]["spec"];
    let c = container(pod, "registry");
    assert_eq!(c["image"], "registry:2.8.3");
    assert_eq!(
        str_of(&config["http"]["addr"], "http.addr")
            .rsplit_once(':')
            .map(|(_, p)| p),
        Some("5000")
    );
    assert_eq!(port_named(pod, "http"), Some(5000));
    assert_eq!(
        config["storage"]["filesystem"]["rootdirectory"],
        claim_mount(pod, c, "labforge-registry"),
        "the registry stores on its volume"
    );
    assert!(
        config["notifications"]["endpoints"].is_null(),
        "the endpoints come from the Deployment only"
    );
    let args: Vec<&str> = array_of(&c["args"], "args")
        .iter()
        .map(|a| str_of(a, "an arg"))
        .collect();
    let config_file = Path::new(args.last().expect("the config file"));
    let mount = array_of(&c["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["name"] == "config")
        .expect("the config volume is mounted");
    assert_eq!(
        config_file.parent(),
        Some(Path::new(str_of(&mount["mountPath"], "mountPath")))
    );

    // The one endpoint: the hub's Service and events route.
    let endpoints = registry_endpoints();
    assert_eq!(endpoints.len(), 1);
    let endpoint = &endpoints[0];
    let url = str_of(&endpoint["url"], "url");
    let hub_service = object("Service", "labforge-hub");
    let http_port = array_of(&hub_service["spec"]["ports"], "ports")
        .iter()
        .find(|p| p["name"] == "http")
        .and_then(|p| p["port"].as_i64())
        .expect("the hub's http port");
    let rest = url
        .strip_prefix("http://")
        .expect("plain http in the cluster");
    let (authority, path) = rest.split_once('/').expect("a path");
    let path = format!("/{path}");
    let (host, port) = authority.rsplit_once(':').expect("host:port");
    assert_eq!(
        host.split('.').next(),
        hub_service["metadata"]["name"].as_str(),
        "the url names the hub's Service"
    );
    assert_eq!(port.parse::<i64>().ok(), Some(http_port));
    assert_eq!(path, "/api/v1/registry/events");
    assert_real_route(&path);

    // The token header, expanded by the kubelet from a variable set before.
    assert_eq!(
        endpoint["headers"]["Authorization"],
        json!(["Bearer $(LABFORGE_REGISTRY_EVENTS_TOKEN)"])
    );
    let env = array_of(&c["env"], "env");
    let token_at = env
        .iter()
        .position(|e| e["name"] == "LABFORGE_REGISTRY_EVENTS_TOKEN")
        .expect("the token variable");
    let list_at = env
        .iter()
        .position(|e| e["name"] == "REGISTRY_NOTIFICATIONS_ENDPOINTS")
        .expect("the endpoints variable");
    assert!(
        token_at < list_at,
        "the kubelet expands only earlier variables"
    );
}

/// One request the fake hub received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A plain HTTP listener standing in for the hub: records each request and
/// answers 200.
fn fake_hub() -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake hub");
    let addr = listener.local_addr().expect("address").to_string();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if let Some(request) = read_request(stream) {
                log.lock().expect("lock").push(request);
            }
        }
    });
    (addr, received)
}

fn read_request(stream: TcpStream) -> Option<Received> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = stream;
    let _ = stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    Some(Received {
        method,
        path,
        headers,
        body,
    })
}

struct Registry {
    child: Child,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Debian's docker-registry (distribution 2.8) with deploy's config.yml and
/// the endpoint list the Deployment gives, expanded the way the kubelet
/// expands it, with the hub's address replaced by `hub`.
fn start_registry(token: &str, hub: &str) -> Registry {
    let config_map = object("ConfigMap", "labforge-registry-config");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        str_of(&config_map["data"]["config.yml"], "config.yml"),
    )
    .expect("write config.yml");
    let endpoint = &registry_endpoints()[0];
    let url = str_of(&endpoint["url"], "url");
    let authority = url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .expect("the hub's address");
    let registry = object("Deployment", "labforge-registry");
    let c = container(&registry["spec"]["template"]["spec"], "registry");
    let endpoints = str_of(
        &env_value(c, "REGISTRY_NOTIFICATIONS_ENDPOINTS")["value"],
        "REGISTRY_NOTIFICATIONS_ENDPOINTS",
    )
    .replace("$(LABFORGE_REGISTRY_EVENTS_TOKEN)", token)
    .replace(&format!("http://{authority}/"), &format!("http://{hub}/"));
    assert!(
        endpoints.contains(hub),
        "the endpoint now names the fake hub"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let addr = format!("127.0.0.1:{port}");
    let log = dir.path().join("registry.log");
    let log_file = std::fs::File::create(&log).expect("create the log");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .env("REGISTRY_HTTP_ADDR", &addr)
        .env(
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
            dir.path().join("storage"),
        )
        .env("REGISTRY_NOTIFICATIONS_ENDPOINTS", &endpoints)
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "docker-registry (distribution 2.8) is needed: install it with `bash scripts/services.sh` ({e})"
            )
        });
    let registry = Registry {
        child,
        addr,
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&registry.addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the registry did not start: {}",
            registry.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    registry
}

#[test]
fn the_registry_sends_manifest_events_to_the_hub_with_the_events_token() {
    let token = "3f2a9c1d0b8e7f6a5d4c3b2a19087f6e5d4c3b2a1908f7e6d5c4b3a291807f6e";
    let (hub, received) = fake_hub();
    let registry = start_registry(token, &hub);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client");
    let base = format!("http://{}/v2/labforge/probe", registry.addr);

    // A config blob (its push is a blob event the endpoint ignores).
    let started = http
        .post(format!("{base}/blobs/uploads/"))
        .send()
        .expect("start an upload");
    assert_eq!(started.status().as_u16(), 202, "{}", registry.log());
    let location = started
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("an upload location")
        .to_string();
    let location = if location.starts_with('/') {
        format!("http://{}{location}", registry.addr)
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = http
        .put(format!("{location}{sep}digest={EMPTY_CONFIG_DIGEST}"))
        .header("content-type", "application/octet-stream")
        .body(EMPTY_CONFIG)
        .send()
        .expect("upload the blob");
    assert_eq!(put.status().as_u16(), 201, "{}", registry.log());

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": EMPTY_CONFIG_DIGEST,
            "size": EMPTY_CONFIG.len(),
        },
        "layers": [],
    })
    .to_string();
    let push = |tag: &str| {
        let r = http
            .put(format!("{base}/manifests/{tag}"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .expect("push the manifest");
        assert_eq!(r.status().as_u16(), 201, "{}", registry.log());
        r.headers()
            .get("docker-content-digest")
            .and_then(|d| d.to_str().ok())
            .expect("the manifest's digest")
            .to_string()
    };
    let digest = push("first");
    // A pull (ignored by the endpoint), then a second push: events reach an
    // endpoint in order, so once the second push is in, a pull event would
    // have arrived before it.
    let pulled = http
        .get(format!("{base}/manifests/first"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .expect("pull the manifest");
    assert_eq!(pulled.status().as_u16(), 200);
    assert_eq!(push("second"), digest);

    let deadline = Instant::now() + Duration::from_secs(30);
    let tags_seen = |requests: &[Received]| -> BTreeSet<String> {
        requests
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["target"]["tag"].as_str().map(str::to_string))
            .collect()
    };
    let requests = loop {
        let requests = received.lock().expect("lock").clone();
        if tags_seen(&requests).contains("second") {
            break requests;
        }
        assert!(
            Instant::now() < deadline,
            "the hub got no event for the second push; received {requests:?}; registry log:\n{}",
            registry.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    let tokens = labforge_hub::auth::Tokens {
        events: labforge_hub::auth::Secret::new(token),
        ..Default::default()
    };
    let mut relevant = Vec::new();
    for r in &requests {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/api/v1/registry/events");
        let mut headers = axum::http::HeaderMap::new();
        for (k, v) in &r.headers {
            headers.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("a header name"),
                v.parse().expect("a header value"),
            );
        }
        assert_eq!(
            tokens.check(&headers, labforge_hub::auth::Access::Events),
            Ok(()),
            "the hub accepts the registry's token: {:?}",
            r.headers
        );
        let body: Value = serde_json::from_slice(&r.body).expect("a JSON envelope");
        for e in body["events"].as_array().expect("events") {
            assert_eq!(e["action"], "push", "only pushes are sent: {e}");
            assert_ne!(
                e["target"]["mediaType"], "application/octet-stream",
                "blob events are not sent: {e}"
            );
        }
        relevant.extend(labforge_hub::events::relevant(&r.body).expect("the hub parses it"));
    }
    assert!(
        relevant
            .iter()
            .any(|e| e.action == "push" && e.repository == "labforge/probe" && e.digest == digest),
        "the hub sees the manifest push: {relevant:?}"
    );
}

// --- JupyterHub ---------------------------------------------------------------

#[test]
fn the_jupyterhub_values_point_at_the_hub_service() {
    let path = root().join("hub/jupyterhub/values.yaml");
    let text = read(&path);
    let values = parse_yaml(&text, "hub/jupyterhub/values.yaml")
        .into_iter()
        .next()
        .expect("one document");
    let service = object("Service", "labforge-hub");
    let port = array_of(&service["spec"]["ports"], "ports")
        .iter()
        .find(|p| p["name"] == "http")
        .and_then(|p| p["port"].as_i64())
        .expect("the hub's http port");
    let namespace = kustomization()["namespace"].clone();
    let expected = format!(
        "http://{}.{}.svc.cluster.local:{port}",
        str_of(&service["metadata"]["name"], "name"),
        str_of(&namespace, "namespace")
    );
    assert_eq!(values["hub"]["extraEnv"]["LABFORGE_HUB_URL"], expected);
    assert_eq!(
        expected,
        "http://labforge-hub.labforge.svc.cluster.local:8080"
    );
    // The pre-pulling note names the sync and z2jh's real switches.
    for needle in [
        "[kubernetes] sync = true",
        "labforge k8s sync",
        "hook:",
        "continuous:",
    ] {
        assert!(text.contains(needle), "values.yaml mentions {needle:?}");
    }
    assert!(
        values["prePuller"].is_null(),
        "z2jh's pullers stay as the operator set them (the note only explains)"
    );
}

#[test]
fn smoke_test_pods_get_no_network() {
    let policy = object("NetworkPolicy", "labforge-smoke-tests");
    // It selects every pod labforge makes for a smoke test...
    let settings = labforge_core::cluster::testpod::TestPodSettings::default();
    let pod = labforge_core::cluster::testpod::test_pod(
        &labforge_core::cluster::testpod::TestPod {
            instance: "labforge",
            image: "notebook",
            identity: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            test: "imports",
            reference: "registry.example.edu/labforge/notebook@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            run: "python -c 'import numpy'",
            timeout_seconds: 60,
            gpu: false,
            settings: &settings,
        },
    );
    let selector = policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(&pod["metadata"]["labels"][k], v, "{k}");
    }
    // ...and no build Job's pod (which must fetch its context and push).
    assert_ne!(
        selector.get("labforge.io/component"),
        Some(&json!("build")),
        "{policy:#}"
    );
    // No rule at all in either direction: nothing in, nothing out.
    let types: Vec<&str> = array_of(&policy["spec"]["policyTypes"], "policyTypes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(types, vec!["Ingress", "Egress"]);
    assert!(policy["spec"].get("ingress").is_none(), "{policy:#}");
    assert!(policy["spec"].get("egress").is_none(), "{policy:#}");
}
