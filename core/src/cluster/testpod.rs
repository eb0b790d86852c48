//! The Pod that runs one smoke test of a built image in the cluster (the
//! `kubernetes` build backend's counterpart of the engine's smoke-test
//! container): one container from the pushed image, by digest, that runs
//! the catalog's test command with `/bin/sh -c`, and ends.
//!
//! Pure: [`test_pod`] returns the Pod as JSON. This module must not talk to
//! the API server, read a clock or touch files
//! (`labforge_builder::kube_test` creates the Pod, follows its log, reads
//! its exit code and deletes it).
//!
//! The test command is catalog text: it is the one argument after `-c`,
//! never part of another string, so nothing but that shell parses it. The
//! container runs as the image's own user (as the engine's smoke tests do),
//! with every capability dropped, no privilege escalation, the runtime's
//! default seccomp profile, no service account token and bounded resources.
//!
//! Time: `activeDeadlineSeconds` counts from the moment the kubelet accepts
//! the pod, *before* it pulls the image (the Pod API reference:
//! `status.startTime` is "before the Kubelet pulled the container image(s)
//! for the pod"), so it is [`TestPodSettings::start_seconds`] plus the
//! test's own timeout: a backstop that ends the pod even if labforge is gone.
//! The test's timeout itself is kept by the caller from the moment the
//! container runs, so that pulling a large CUDA image does not eat it.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::job::{dns_part, label_value, object_name};
use super::{labels, string_map};
use crate::catalog::Toleration;
use crate::spawner::toleration;

/// The one container of the pod.
pub const CONTAINER: &str = "test";

/// The `labforge.io/component` of test pods.
pub const COMPONENT: &str = "smoke-test";

/// The test's name as the catalog spells it (the label is shortened).
pub const TEST_ANNOTATION: &str = "labforge.io/test";

/// The label with the test's name (as a label value).
pub const TEST_LABEL: &str = "labforge.io/test";

/// Seconds between the kubelet's stop signal and its kill (a test that
/// ran out of time has nothing to clean up).
pub const TERMINATION_GRACE_SECONDS: u32 = 5;

/// How smoke-test pods run: `[kubernetes.test]`-style settings.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestPodSettings {
    pub cpu_request: String,
    pub cpu_limit: String,
    pub memory_request: String,
    pub memory_limit: String,
    /// Without a request of its own, Kubernetes requests this much too.
    pub ephemeral_storage_limit: String,
    /// Name of a `kubernetes.io/dockerconfigjson` Secret with the pull login.
    pub image_pull_secret: Option<String>,
    /// Where tests without a GPU run.
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    /// Where tests marked `gpu: true` run (the GPU pool).
    pub gpu_node_selector: BTreeMap<String, String>,
    pub gpu_tolerations: Vec<Toleration>,
    /// The extended resource a GPU test asks one of.
    pub gpu_resource: String,
    pub service_account: Option<String>,
    /// How long a pod may stay Pending (scheduling, pulling the image)
    /// before the test fails; CUDA images are large (at least 1).
    pub start_seconds: u32,
    /// Run the smoke tests marked `gpu: true`, on the GPU nodes [default:
    /// true]; off, they are recorded as skipped (a cluster without GPUs).
    pub gpu: bool,
}

impl Default for TestPodSettings {
    fn default() -> Self {
        TestPodSettings {
            cpu_request: "500m".into(),
            cpu_limit: "2".into(),
            memory_request: "1Gi".into(),
            memory_limit: "4Gi".into(),
            ephemeral_storage_limit: "10Gi".into(),
            image_pull_secret: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            gpu_node_selector: BTreeMap::new(),
            gpu_tolerations: Vec::new(),
            gpu_resource: "nvidia.com/gpu".into(),
            service_account: None,
            start_seconds: 900,
            gpu: true,
        }
    }
}

/// One smoke test of one image, as a Pod.
#[derive(Debug, Clone, Copy)]
pub struct TestPod<'a> {
    /// The `labforge.io/instance` label and the name prefix.
    pub instance: &'a str,
    /// Catalog image name, e.g. `notebook-cuda`.
    pub image: &'a str,
    /// The 64-hex content identity.
    pub identity: &'a str,
    /// The test's name in the catalog.
    pub test: &'a str,
    /// `<registry>/<repo>@sha256:…`, the pushed image.
    pub reference: &'a str,
    /// Shell text, run with `/bin/sh -c`.
    pub run: &'a str,
    /// How long the test may run once its container has started.
    pub timeout_seconds: u64,
    /// Runs on the GPU pool with one GPU.
    pub gpu: bool,
    pub settings: &'a TestPodSettings,
}

impl TestPod<'_> {
    /// `activeDeadlineSeconds`: the time to start and the test's own (see
    /// the module docs), at least 1.
    pub fn active_deadline_seconds(&self) -> u64 {
        u64::from(self.settings.start_seconds)
            .saturating_add(self.timeout_seconds)
            .clamp(1, i64::MAX as u64)
    }
}

/// The Pod name: `<instance>-test-<image>-<identity[..12]>-<hash8>`, where
/// `hash8` is the start of the sha256 of the test's name: a DNS-1123 label
/// of at most 63 characters, different for every test of one image build.
/// A long image name is shortened, never the identity or the hash.
pub fn test_pod_name(instance: &str, image: &str, identity: &str, test: &str) -> String {
    let id = dns_part(identity.get(..12).unwrap_or(identity));
    let hash = test_hash(test);
    let suffix = if id.is_empty() {
        hash
    } else {
        format!("{id}-{hash}")
    };
    object_name(instance, "test", image, &suffix)
}

/// The first 8 hex digits of the sha256 of a test's name.
fn test_hash(test: &str) -> String {
    Sha256::digest(test.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The labels of a test pod: labforge's own, the image, its identity and
/// the test.
fn pod_labels(t: &TestPod) -> Map<String, Value> {
    let mut l = labels(&label_value(t.instance), COMPONENT);
    l.insert("labforge.io/image".into(), json!(label_value(t.image)));
    l.insert(
        "labforge.io/identity".into(),
        json!(label_value(t.identity.get(..12).unwrap_or(t.identity))),
    );
    l.insert(TEST_LABEL.into(), json!(label_value(t.test)));
    l
}

/// The `v1` Pod that runs one smoke test. No namespace: the caller creates
/// it in its own.
pub fn test_pod(t: &TestPod) -> Value {
    let s = t.settings;
    let mut limits = Map::new();
    limits.insert("cpu".into(), json!(s.cpu_limit));
    limits.insert("memory".into(), json!(s.memory_limit));
    limits.insert("ephemeral-storage".into(), json!(s.ephemeral_storage_limit));
    if t.gpu {
        // Kubernetes wants whole numbers for extended resources; a limit
        // alone makes the request the same.
        limits.insert(s.gpu_resource.clone(), json!("1"));
    }
    let container = json!({
        "name": CONTAINER,
        "image": t.reference,
        "imagePullPolicy": "IfNotPresent",
        // The catalog's text is this one argument and nothing else.
        "command": ["/bin/sh", "-c", t.run],
        "resources": {
            "requests": {
                "cpu": s.cpu_request,
                "memory": s.memory_request,
            },
            "limits": Value::Object(limits),
        },
        "securityContext": {
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        // A failed test's last lines appear in the pod status too.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });

    let (node_selector, tolerations) = if t.gpu {
        (&s.gpu_node_selector, &s.gpu_tolerations)
    } else {
        (&s.node_selector, &s.tolerations)
    };
    let mut pod = Map::new();
    pod.insert("restartPolicy".into(), json!("Never"));
    pod.insert(
        "activeDeadlineSeconds".into(),
        json!(t.active_deadline_seconds()),
    );
    pod.insert(
        "terminationGracePeriodSeconds".into(),
        json!(TERMINATION_GRACE_SECONDS),
    );
    pod.insert("automountServiceAccountToken".into(), json!(false));
    pod.insert("enableServiceLinks".into(), json!(false));
    if let Some(sa) = &s.service_account {
        pod.insert("serviceAccountName".into(), json!(sa));
    }
    pod.insert(
        "securityContext".into(),
        json!({ "seccompProfile": { "type": "RuntimeDefault" } }),
    );
    if !node_selector.is_empty() {
        pod.insert("nodeSelector".into(), string_map(node_selector));
    }
    if !tolerations.is_empty() {
        pod.insert(
            "tolerations".into(),
            Value::Array(tolerations.iter().map(toleration).collect()),
        );
    }
    if let Some(secret) = &s.image_pull_secret {
        pod.insert("imagePullSecrets".into(), json!([{ "name": secret }]));
    }
    pod.insert("containers".into(), json!([container]));

    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": test_pod_name(t.instance, t.image, t.identity, t.test),
            "labels": Value::Object(pod_labels(t)),
            "annotations": {
                TEST_ANNOTATION: t.test,
            },
        },
        "spec": Value::Object(pod),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const REFERENCE: &str = "registry.example.edu/labforge/notebook-cuda@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn pod<'a>(settings: &'a TestPodSettings, run: &'a str, gpu: bool) -> TestPod<'a> {
        TestPod {
            instance: "labforge",
            image: "notebook-cuda",
            identity: IDENTITY,
            test: "torch-sees-the-gpu",
            reference: REFERENCE,
            run,
            timeout_seconds: 120,
            gpu,
            settings,
        }
    }

    fn container(pod: &Value) -> &Value {
        &pod["spec"]["containers"][0]
    }

    fn gpu_settings() -> TestPodSettings {
        TestPodSettings {
            node_selector: BTreeMap::from([("labforge.io/pool".to_string(), "cpu".to_string())]),
            tolerations: vec![Toleration {
                key: Some("labforge.io/tests".into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Toleration::default()
            }],
            gpu_node_selector: BTreeMap::from([(
                "nvidia.com/gpu.present".to_string(),
                "true".to_string(),
            )]),
            gpu_tolerations: vec![Toleration {
                key: Some("nvidia.com/gpu".into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Toleration::default()
            }],
            ..TestPodSettings::default()
        }
    }

    #[test]
    fn the_command_is_one_argument_and_runs_from_the_digest() {
        let s = TestPodSettings::default();
        let hostile = "python -c 'print(1)'; echo \"$HOME\" `id` $(touch x)\nexit 3";
        let p = test_pod(&pod(&s, hostile, false));
        let c = container(&p);
        assert_eq!(c["command"], json!(["/bin/sh", "-c", hostile]));
        assert!(c.get("args").is_none());
        assert!(c.get("env").is_none());
        assert_eq!(c["image"], json!(REFERENCE));
        assert_eq!(c["imagePullPolicy"], json!("IfNotPresent"));
        assert_eq!(c["name"], json!(CONTAINER));
        // The text appears nowhere else in the pod.
        let text = serde_json::to_string(&p).expect("serializes");
        let quoted = serde_json::to_string(hostile).expect("serializes");
        assert_eq!(text.matches(&quoted).count(), 1, "{text}");
    }

    #[test]
    fn locked_down_and_bounded() {
        let s = TestPodSettings::default();
        let p = test_pod(&pod(&s, "true", false));
        let spec = &p["spec"];
        let c = container(&p);
        let cases: &[(&str, &Value, Value)] = &[
            ("restartPolicy", &spec["restartPolicy"], json!("Never")),
            (
                "automountServiceAccountToken",
                &spec["automountServiceAccountToken"],
                json!(false),
            ),
            (
                "enableServiceLinks",
                &spec["enableServiceLinks"],
                json!(false),
            ),
            (
                "terminationGracePeriodSeconds",
                &spec["terminationGracePeriodSeconds"],
                json!(5),
            ),
            (
                "activeDeadlineSeconds",
                &spec["activeDeadlineSeconds"],
                json!(900 + 120),
            ),
            (
                "pod seccomp",
                &spec["securityContext"]["seccompProfile"],
                json!({"type": "RuntimeDefault"}),
            ),
            (
                "container seccomp",
                &c["securityContext"]["seccompProfile"],
                json!({"type": "RuntimeDefault"}),
            ),
            (
                "allowPrivilegeEscalation",
                &c["securityContext"]["allowPrivilegeEscalation"],
                json!(false),
            ),
            (
                "privileged",
                &c["securityContext"]["privileged"],
                json!(false),
            ),
            (
                "capabilities",
                &c["securityContext"]["capabilities"],
                json!({"drop": ["ALL"]}),
            ),
            (
                "requests",
                &c["resources"]["requests"],
                json!({"cpu": "500m", "memory": "1Gi"}),
            ),
            (
                "limits",
                &c["resources"]["limits"],
                json!({"cpu": "2", "memory": "4Gi", "ephemeral-storage": "10Gi"}),
            ),
        ];
        for (what, got, want) in cases {
            assert_eq!(*got, want, "{what}");
        }
        for absent in [
            "serviceAccountName",
            "imagePullSecrets",
            "nodeSelector",
            "tolerations",
            "hostNetwork",
            "hostPID",
            "hostIPC",
            "volumes",
        ] {
            assert!(spec.get(absent).is_none(), "{absent}");
        }
        assert!(p["metadata"].get("namespace").is_none());

        // A deadline is never 0, and never overflows.
        let zero = TestPodSettings {
            start_seconds: 0,
            ..TestPodSettings::default()
        };
        let mut t = pod(&zero, "true", false);
        t.timeout_seconds = 0;
        assert_eq!(test_pod(&t)["spec"]["activeDeadlineSeconds"], json!(1));
        t.timeout_seconds = u64::MAX;
        assert_eq!(
            test_pod(&t)["spec"]["activeDeadlineSeconds"],
            json!(i64::MAX)
        );
    }

    #[test]
    fn gpu_tests_ask_for_one_gpu_on_gpu_nodes() {
        let s = gpu_settings();
        let gpu = test_pod(&pod(&s, "nvidia-smi", true));
        assert_eq!(
            container(&gpu)["resources"]["limits"]["nvidia.com/gpu"],
            json!("1")
        );
        assert_eq!(
            gpu["spec"]["nodeSelector"],
            json!({"nvidia.com/gpu.present": "true"})
        );
        assert_eq!(
            gpu["spec"]["tolerations"],
            json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
        );

        let cpu = test_pod(&pod(&s, "true", false));
        let limits = container(&cpu)["resources"]["limits"]
            .as_object()
            .expect("limits");
        assert!(!limits.contains_key("nvidia.com/gpu"), "{limits:?}");
        assert_eq!(
            cpu["spec"]["nodeSelector"],
            json!({"labforge.io/pool": "cpu"})
        );
        assert_eq!(
            cpu["spec"]["tolerations"],
            json!([{"key": "labforge.io/tests", "operator": "Exists", "effect": "NoSchedule"}])
        );

        let other = TestPodSettings {
            gpu_resource: "amd.com/gpu".into(),
            ..TestPodSettings::default()
        };
        let amd = test_pod(&pod(&other, "true", true));
        let limits = container(&amd)["resources"]["limits"]
            .as_object()
            .expect("limits");
        assert_eq!(limits.get("amd.com/gpu"), Some(&json!("1")));
        assert!(!limits.contains_key("nvidia.com/gpu"));
        // No GPU pool configured: no selector, no tolerations.
        assert!(amd["spec"].get("nodeSelector").is_none());
        assert!(amd["spec"].get("tolerations").is_none());
    }

    #[test]
    fn pull_secret_and_service_account() {
        let s = TestPodSettings {
            image_pull_secret: Some("registry-pull".into()),
            service_account: Some("labforge-test".into()),
            ..TestPodSettings::default()
        };
        let p = test_pod(&pod(&s, "true", false));
        assert_eq!(
            p["spec"]["imagePullSecrets"],
            json!([{"name": "registry-pull"}])
        );
        assert_eq!(p["spec"]["serviceAccountName"], json!("labforge-test"));
        // A service account does not bring its token.
        assert_eq!(p["spec"]["automountServiceAccountToken"], json!(false));
    }

    #[test]
    fn labels_and_annotations() {
        let s = TestPodSettings::default();
        let p = test_pod(&pod(&s, "true", false));
        assert_eq!(
            p["metadata"]["labels"],
            json!({
                "app.kubernetes.io/managed-by": "labforge",
                "app.kubernetes.io/part-of": "labforge",
                "labforge.io/instance": "labforge",
                "labforge.io/component": "smoke-test",
                "labforge.io/image": "notebook-cuda",
                "labforge.io/identity": "0123456789ab",
                "labforge.io/test": "torch-sees-the-gpu",
            })
        );
        assert_eq!(
            p["metadata"]["annotations"],
            json!({"labforge.io/test": "torch-sees-the-gpu"})
        );

        // Label values stay valid whatever the names.
        let long = format!("{}_", "Ab.".repeat(70));
        let mut odd = pod(&s, "true", false);
        odd.image = &long;
        odd.test = "imports numpy & scipy (fast)";
        odd.instance = "Lab Forge!";
        let p = test_pod(&odd);
        for (k, v) in p["metadata"]["labels"].as_object().expect("labels") {
            let v = v.as_str().expect("a string");
            assert!(crate::formats::k8s_label_value(v).is_ok(), "{k}={v:?}");
        }
        assert_eq!(
            p["metadata"]["annotations"][TEST_ANNOTATION],
            json!("imports numpy & scipy (fast)")
        );
    }

    #[test]
    fn pod_names() {
        let hash = test_hash("imports");
        assert_eq!(hash.len(), 8);
        let long = "a".repeat(200);
        let cases: &[(&str, &str, &str, String)] = &[
            (
                "labforge",
                "notebook-cuda",
                IDENTITY,
                format!("labforge-test-notebook-cuda-0123456789ab-{hash}"),
            ),
            (
                "lab",
                "Notebook_CUDA.x",
                IDENTITY,
                format!("lab-test-notebook-cuda-x-0123456789ab-{hash}"),
            ),
            (
                "labforge",
                &long,
                IDENTITY,
                format!("labforge-test-aaaaaaaaaaaaaaaaaaaaaaaaaaa-0123456789ab-{hash}"),
            ),
            (
                "labforge",
                "",
                IDENTITY,
                format!("labforge-test-0123456789ab-{hash}"),
            ),
            ("labforge", "img", "", format!("labforge-test-img-{hash}")),
            (
                "",
                "img",
                IDENTITY,
                format!("labforge-test-img-0123456789ab-{hash}"),
            ),
        ];
        for (instance, image, identity, want) in cases {
            assert_eq!(
                test_pod_name(instance, image, identity, "imports"),
                *want,
                "{image:?}"
            );
        }

        let dns = regex::Regex::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("regex");
        let huge = "i".repeat(80);
        let dashes = "x-".repeat(100);
        let mut seen = std::collections::BTreeSet::new();
        for (instance, image) in [
            ("labforge", long.as_str()),
            ("labforge", dashes.as_str()),
            ("labforge", "é-ü-ß"),
            (huge.as_str(), long.as_str()),
            (
                "labforge-staging",
                "notebook-cuda-12-4-with-a-much-longer-name",
            ),
        ] {
            for test in ["imports", "imports ", "Imports", "jupyter-server-api", ""] {
                let name = test_pod_name(instance, image, IDENTITY, test);
                assert!(name.len() <= 63, "{name} has {} characters", name.len());
                assert!(dns.is_match(&name), "{name}");
                assert!(
                    name.ends_with(&format!("-0123456789ab-{}", test_hash(test))),
                    "{name}"
                );
                assert!(seen.insert(name.clone()), "{name} twice");
            }
        }
        // The pod carries its name.
        let s = TestPodSettings::default();
        let p = test_pod(&pod(&s, "true", false));
        assert_eq!(
            p["metadata"]["name"],
            json!(test_pod_name(
                "labforge",
                "notebook-cuda",
                IDENTITY,
                "torch-sees-the-gpu"
            ))
        );
    }

    #[test]
    fn settings_defaults_and_unknown_fields() {
        let parsed: TestPodSettings = serde_json::from_str("{}").expect("empty settings");
        assert_eq!(parsed, TestPodSettings::default());
        assert_eq!(parsed.gpu_resource, "nvidia.com/gpu");
        assert_eq!(parsed.start_seconds, 900);
        let some: TestPodSettings = serde_json::from_str(
            r#"{"memory_limit": "8Gi", "gpu_tolerations": [{"key": "gpu", "operator": "Exists"}],
                "gpu_node_selector": {"pool": "gpu"}, "image_pull_secret": "pull"}"#,
        )
        .expect("settings");
        assert_eq!(some.memory_limit, "8Gi");
        assert_eq!(some.cpu_limit, "2");
        assert_eq!(some.gpu_tolerations[0].key.as_deref(), Some("gpu"));
        assert_eq!(some.gpu_node_selector["pool"], "gpu");
        assert_eq!(some.image_pull_secret.as_deref(), Some("pull"));
        let err = serde_json::from_str::<TestPodSettings>(r#"{"privileged": true}"#)
            .expect_err("unknown field");
        assert!(err.to_string().contains("privileged"), "{err}");
    }

    #[test]
    fn full_test_pod_snapshot() {
        let s = TestPodSettings {
            image_pull_secret: Some("labforge-registry-pull".into()),
            service_account: Some("labforge-test".into()),
            ..gpu_settings()
        };
        let run = "python -c 'import torch; assert torch.cuda.is_available()'";
        let p = test_pod(&pod(&s, run, true));
        let text = serde_json::to_string_pretty(&p).expect("serializes");
        insta::assert_snapshot!(text);
    }
}
