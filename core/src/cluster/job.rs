//! The Kubernetes Job that builds one catalog image: one rootless BuildKit
//! container that fetches the rendered build context from labforge over
//! HTTP, builds it with `buildctl-daemonless.sh`, pushes the result by
//! digest only (no tag: the caller tags it once its smoke tests pass, so an
//! untested image never looks built) and prints BuildKit's metadata (the
//! pushed digest) as one marked log line, which [`parse_metadata`] reads back.
//!
//! Pure: [`build_job`] returns the Job as JSON and times are passed in. This
//! module must not talk to the API server, read a clock or touch files
//! (`labforge_builder::cluster` creates the Job, follows its log and deletes
//! it; `labforge_builder::context_server` serves the context).
//!
//! No catalog value is ever parsed by a shell: the container runs the
//! constant [`SCRIPT`] with `sh -c`, and every value that comes from the
//! catalog or the plan (build arguments, labels, platform, target) is a separate
//! argument that the script hands to `buildctl` unchanged through `"$@"`.
//!
//! The context token reaches the pod as a plain environment value, not
//! through a Secret: it works once (the context server forgets it when the
//! tarball is fetched) and expires ([`BuildJob::token_expires_at`], shown as
//! an annotation), so someone who can read the Job can at most fetch the
//! context first, which makes the build fail (`410 Gone`) instead of leaking
//! anything that lasts. A Secret would be one more object to create and
//! delete, and the hub's Role grants nothing on Secrets on purpose.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::catalog::Toleration;
use crate::spawner::toleration;

/// What [`SCRIPT`] prints before the metadata JSON, at the start of a line
/// of the build pod's log.
pub const METADATA_MARKER: &str = "LABFORGE-BUILDKIT-METADATA ";

/// The rootless user and group of the `moby/buildkit:*-rootless` images
/// (their Dockerfile: `USER 1000:1000`); changing it needs another image.
pub const BUILDKIT_UID: i64 = 1000;

/// The one container of the pod.
pub const CONTAINER: &str = "buildkit";

/// The `emptyDir` for the context: `context/` (the unpacked tarball),
/// `context.tar` while it is unpacked, and `metadata.json`.
pub const WORK_DIR: &str = "/labforge";

/// BuildKit's state in the rootless image. An `emptyDir`, as in BuildKit's
/// own Kubernetes examples: the image's `VOLUME` may be mounted `nosuid`.
pub const STATE_DIR: &str = "/home/user/.local/share/buildkit";

/// Where the registry Secret is mounted, as `config.json`.
pub const DOCKER_CONFIG_DIR: &str = "/home/user/.docker";

/// Where `buildctl` writes its metadata (must match [`SCRIPT`]).
pub const METADATA_FILE: &str = "/labforge/metadata.json";

/// When the context token stops working, in unix seconds.
pub const EXPIRES_ANNOTATION: &str = "labforge.io/context-token-expires-at";

/// The reference the Job pushes.
pub const TARGET_ANNOTATION: &str = "labforge.io/target";

/// Environment of the container that [`SCRIPT`] reads.
pub const ENV_CONTEXT_URL: &str = "LABFORGE_CONTEXT_URL";
pub const ENV_CONTEXT_TOKEN: &str = "LABFORGE_CONTEXT_TOKEN";
pub const ENV_WORK_DIR: &str = "LABFORGE_WORK_DIR";

/// `$0` of the script, shown by `ps` and in shell error messages.
pub const SCRIPT_NAME: &str = "labforge-build";

/// The container's shell script. Constant: it reads the context URL, the
/// token and the work directory from the environment and passes its
/// arguments (`buildctl build` flags, see [`buildctl_args`]) through
/// `"$@"`, so nothing it is given is ever parsed as shell.
///
/// `wget`, `tar` and `tr` are BusyBox's in the Alpine-based rootless image
/// (Alpine builds BusyBox with `FEATURE_WGET_LONG_OPTIONS`, which `--header`
/// needs). The tarball is an uncompressed tar, as
/// `labforge_builder::engine::context_tar` writes it: BusyBox unpacks gzip
/// without `-z` only when built with `FEATURE_TAR_AUTODETECT`.
/// `wget` exits non-zero on any HTTP error (`401`, `410`), which ends the
/// script (`set -e`). No `-T`: BusyBox builds without
/// `FEATURE_WGET_TIMEOUT` crash on it (Debian's 1.35 does), and the Job's
/// `activeDeadlineSeconds` bounds a stalled fetch anyway. The token is unset before BuildKit starts, so no build
/// step inherits it. `buildctl` writes the metadata indented; JSON strings
/// hold no raw newline, so deleting newlines keeps it valid on one line.
pub const SCRIPT: &str = r#"set -eu
work="$LABFORGE_WORK_DIR"
mkdir -p "$work/context"
wget -q -O "$work/context.tar" --header "Authorization: Bearer $LABFORGE_CONTEXT_TOKEN" "$LABFORGE_CONTEXT_URL"
unset LABFORGE_CONTEXT_TOKEN
tar -x -o -f "$work/context.tar" -C "$work/context"
rm -f "$work/context.tar"
buildctl-daemonless.sh build --frontend dockerfile.v0 --local "context=$work/context" --local "dockerfile=$work/context" "$@"
printf '\n%s' 'LABFORGE-BUILDKIT-METADATA '
tr -d '\r\n' < "$work/metadata.json"
echo
"#;

/// One image build, as a Job.
#[derive(Debug, Clone, Copy)]
pub struct BuildJob<'a> {
    /// The `labforge.io/instance` label and the name prefix.
    pub instance: &'a str,
    /// Catalog image name, e.g. `notebook-cuda`.
    pub image: &'a str,
    /// The 64-hex content identity.
    pub identity: &'a str,
    /// `<registry>/<repo>`, the repository pushed to (by digest).
    pub target: &'a str,
    /// Includes `BASE_IMAGE=repo@sha256:…`.
    pub build_args: &'a BTreeMap<String, String>,
    /// Image labels (`org.opencontainers.image.*`, `labforge.input-hash`),
    /// as the engine backend sets them.
    pub labels: &'a BTreeMap<String, String>,
    /// E.g. `linux/amd64`.
    pub platform: &'a str,
    /// `http(s)` URL of the context tarball; holds no token.
    pub context_url: &'a str,
    /// One-time bearer token for `context_url` (see the module docs for why
    /// it is an environment value).
    pub context_token: &'a str,
    /// Unix seconds; shown as the [`EXPIRES_ANNOTATION`].
    pub token_expires_at: i64,
    pub settings: &'a BuildJobSettings,
}

/// How build Jobs run: `[kubernetes.build]`-style settings.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildJobSettings {
    /// A rootless BuildKit image (runs as uid 1000, has `buildctl-daemonless.sh`).
    pub buildkit_image: String,
    pub cpu_request: String,
    pub cpu_limit: String,
    pub memory_request: String,
    pub memory_limit: String,
    /// Without a request of its own, Kubernetes requests this much too.
    pub ephemeral_storage_limit: String,
    /// The whole build, from pod start to push (at least 1).
    pub active_deadline_seconds: u32,
    /// How long a finished Job stays for its log to be read.
    pub ttl_seconds_after_finished: u32,
    /// Name of a `kubernetes.io/dockerconfigjson` Secret with the push login.
    pub registry_secret: Option<String>,
    /// Push over plain HTTP (`registry.insecure=true`), e.g. to an
    /// in-cluster registry without TLS.
    pub insecure_registry: bool,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub service_account: Option<String>,
}

impl Default for BuildJobSettings {
    fn default() -> Self {
        BuildJobSettings {
            buildkit_image: "moby/buildkit:v0.23.2-rootless".into(),
            cpu_request: "1".into(),
            cpu_limit: "4".into(),
            memory_request: "4Gi".into(),
            memory_limit: "16Gi".into(),
            ephemeral_storage_limit: "50Gi".into(),
            active_deadline_seconds: 7200,
            ttl_seconds_after_finished: 600,
            registry_secret: None,
            insecure_registry: false,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            service_account: None,
        }
    }
}

/// What a build pushed, from BuildKit's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `sha256:` and 64 lowercase hex digits: the manifest digest.
    pub digest: String,
    /// BuildKit's `image.name` (the pushed reference(s), comma-separated).
    pub name: Option<String>,
}

/// The Job name: `<instance>-build-<image>-<identity[..12]>`, a DNS-1123
/// label of at most 63 characters. A long image name is shortened, never
/// the identity, so two builds of one image never share a name.
pub fn job_name(instance: &str, image: &str, identity: &str) -> String {
    let id = dns_part(identity.get(..12).unwrap_or(identity));
    object_name(instance, "build", image, &id)
}

/// `<instance>-<word>-<image>-<suffix>`, a DNS-1123 label of at most 63
/// characters: the instance is shortened only if it alone leaves no room,
/// then the image; `suffix` (already a DNS part) is kept whole, so that it
/// keeps names apart. Empty parts are left out.
pub(super) fn object_name(instance: &str, word: &str, image: &str, suffix: &str) -> String {
    const MAX: usize = 63;
    let middle = format!("-{word}-");
    let mut instance = dns_part(instance);
    if instance.is_empty() {
        instance = "labforge".into();
    }
    let fixed = middle.len() + suffix.len();
    if instance.len() + fixed > MAX {
        instance = shorten(&instance, MAX.saturating_sub(fixed));
    }
    let room = MAX.saturating_sub(instance.len() + fixed + 1);
    let image = shorten(&dns_part(image), room);
    let name = match (image.is_empty(), suffix.is_empty()) {
        (true, true) => format!("{instance}-{word}"),
        (true, false) => format!("{instance}{middle}{suffix}"),
        (false, true) => format!("{instance}{middle}{image}"),
        (false, false) => format!("{instance}{middle}{image}-{suffix}"),
    };
    shorten(&name, MAX)
}

/// Lowercase, every character outside `[a-z0-9-]` replaced by `-`, no `-`
/// at either end.
pub(super) fn dns_part(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    mapped.trim_matches('-').to_string()
}

/// At most `max` characters (ASCII input), no `-` at the end.
fn shorten(s: &str, max: usize) -> String {
    let cut = s.get(..max).unwrap_or(s);
    cut.trim_end_matches('-').to_string()
}

/// A valid label value: at most 63 of `[A-Za-z0-9-_.]`, alphanumeric at
/// both ends (others replaced by `-` and trimmed).
pub(super) fn label_value(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The labels of the Job and its pod.
fn labels(job: &BuildJob) -> Value {
    json!({
        "app.kubernetes.io/managed-by": "labforge",
        "app.kubernetes.io/part-of": "labforge",
        "labforge.io/instance": label_value(job.instance),
        "labforge.io/component": "build",
        "labforge.io/image": label_value(job.image),
        "labforge.io/identity": label_value(job.identity.get(..12).unwrap_or(job.identity)),
    })
}

/// The `buildctl build` flags after the script's own: plain progress (so
/// every line a build step prints is prefixed with `#<step>`, and cannot
/// pass for the metadata line), one `--opt build-arg:K=V` per build
/// argument, one `--opt label:K=V` per label, the platform, the push
/// output (by digest) and the metadata file.
pub fn buildctl_args(job: &BuildJob) -> Vec<String> {
    let mut args = vec!["--progress=plain".to_string()];
    for (k, v) in job.build_args {
        args.push("--opt".into());
        args.push(format!("build-arg:{k}={v}"));
    }
    for (k, v) in job.labels {
        args.push("--opt".into());
        args.push(format!("label:{k}={v}"));
    }
    args.push("--opt".into());
    args.push(format!("platform={}", job.platform));
    let mut output = format!(
        "type=image,{},push=true,push-by-digest=true",
        csv_field(&format!("name={}", job.target))
    );
    if job.settings.insecure_registry {
        output.push_str(",registry.insecure=true");
    }
    args.push("--output".into());
    args.push(output);
    args.push("--metadata-file".into());
    args.push(METADATA_FILE.into());
    args
}

/// One field of BuildKit's comma-separated `--output` value, quoted CSV-style
/// if it holds a comma or a quote (a valid reference has neither; this keeps
/// an invalid one from adding output attributes).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The `batch/v1` Job that builds and pushes one image. No namespace: the
/// caller creates it in its own.
pub fn build_job(job: &BuildJob) -> Value {
    let s = job.settings;
    let labels = labels(job);

    let mut env = vec![
        json!({"name": ENV_CONTEXT_URL, "value": job.context_url}),
        json!({"name": ENV_CONTEXT_TOKEN, "value": job.context_token}),
        json!({"name": ENV_WORK_DIR, "value": WORK_DIR}),
        // BuildKit's docs/rootless.md ("About --oci-worker-no-process-sandbox"):
        // with this flag rootless BuildKit runs in a container that is not
        // privileged, and /proc can stay masked (no `procMount: Unmasked`,
        // which would also need a user-namespaced pod). The cost, from the
        // same doc: a build step can signal (and, under an unconfined
        // seccomp profile, ptrace) other processes of this container, which
        // holds nothing but this one build.
        json!({"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"}),
    ];
    let mut mounts = vec![
        json!({"name": "work", "mountPath": WORK_DIR}),
        json!({"name": "buildkit-state", "mountPath": STATE_DIR}),
    ];
    let mut volumes = vec![
        json!({"name": "work", "emptyDir": {}}),
        json!({"name": "buildkit-state", "emptyDir": {}}),
    ];
    if let Some(secret) = &s.registry_secret {
        env.push(json!({"name": "DOCKER_CONFIG", "value": DOCKER_CONFIG_DIR}));
        mounts.push(json!({
            "name": "registry-auth",
            "mountPath": DOCKER_CONFIG_DIR,
            "readOnly": true,
        }));
        volumes.push(json!({
            "name": "registry-auth",
            "secret": {
                "secretName": secret,
                "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                // Owner root, group fsGroup (1000): readable by BuildKit only.
                "defaultMode": 0o440,
            },
        }));
    }

    let container = json!({
        "name": CONTAINER,
        "image": s.buildkit_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", SCRIPT, SCRIPT_NAME],
        "args": buildctl_args(job),
        "env": env,
        "resources": {
            "requests": {
                "cpu": s.cpu_request,
                "memory": s.memory_request,
            },
            "limits": {
                "cpu": s.cpu_limit,
                "memory": s.memory_limit,
                "ephemeral-storage": s.ephemeral_storage_limit,
            },
        },
        "securityContext": {
            "privileged": false,
            // Rootless BuildKit maps its user namespace with newuidmap and
            // newgidmap, which are setuid root in the image (BuildKit's
            // docs/rootless.md: "newuidmap and newgidmap need to be
            // installed"). With allowPrivilegeEscalation false the kernel's
            // no_new_privs would ignore their setuid bit and RootlessKit
            // could not start, so it stays true; it grants only what the
            // capability bounding set below allows.
            "allowPrivilegeEscalation": true,
            // Everything dropped but what newuidmap/newgidmap use to write a
            // multi-ID map (CAP_SETUID for uid_map, CAP_SETGID for gid_map;
            // shadow drops to exactly that one before writing). Docker's
            // default set, which BuildKit's docs run with, includes both;
            // inside the new user namespace BuildKit has every capability
            // regardless (a new user namespace starts with a full bounding
            // set), over IDs mapped to its own subordinate range only.
            "capabilities": {
                "drop": ["ALL"],
                "add": ["SETGID", "SETUID"],
            },
            "runAsNonRoot": true,
            "runAsUser": BUILDKIT_UID,
            "runAsGroup": BUILDKIT_UID,
        },
        "volumeMounts": mounts,
        // A failed build's last lines appear in the pod status too.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });

    let mut pod = Map::new();
    pod.insert("restartPolicy".into(), json!("Never"));
    pod.insert("automountServiceAccountToken".into(), json!(false));
    pod.insert("enableServiceLinks".into(), json!(false));
    if let Some(sa) = &s.service_account {
        pod.insert("serviceAccountName".into(), json!(sa));
    }
    pod.insert(
        "securityContext".into(),
        json!({
            "runAsNonRoot": true,
            "runAsUser": BUILDKIT_UID,
            "runAsGroup": BUILDKIT_UID,
            "fsGroup": BUILDKIT_UID,
            // BuildKit's docs/rootless.md: --oci-worker-no-process-sandbox
            // removes the need for a privileged container, "however, you
            // still need to pass --security-opt seccomp=unconfined
            // --security-opt apparmor=unconfined" — the runtime's default
            // seccomp profile refuses unshare(CLONE_NEWUSER) and mount to a
            // process without CAP_SYS_ADMIN, and the default AppArmor profile
            // refuses mount. examples/kubernetes/job.rootless.yaml sets these
            // two fields for the same reason. So these are Unconfined while
            // the container is not privileged: the namespace needs the
            // `privileged` Pod Security level (even `baseline` refuses
            // Unconfined profiles).
            "seccompProfile": {"type": "Unconfined"},
            "appArmorProfile": {"type": "Unconfined"},
        }),
    );
    if !s.node_selector.is_empty() {
        pod.insert("nodeSelector".into(), json!(s.node_selector));
    }
    if !s.tolerations.is_empty() {
        pod.insert(
            "tolerations".into(),
            Value::Array(s.tolerations.iter().map(toleration).collect()),
        );
    }
    pod.insert("containers".into(), json!([container]));
    pod.insert("volumes".into(), Value::Array(volumes));

    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(job.instance, job.image, job.identity),
            "labels": labels,
            "annotations": {
                EXPIRES_ANNOTATION: job.token_expires_at.to_string(),
                TARGET_ANNOTATION: job.target,
            },
        },
        "spec": {
            // A failed build is reported, not retried blindly (and its
            // context token is spent anyway).
            "backoffLimit": 0,
            "activeDeadlineSeconds": s.active_deadline_seconds.max(1),
            "ttlSecondsAfterFinished": s.ttl_seconds_after_finished,
            "template": {
                "metadata": {"labels": labels},
                "spec": Value::Object(pod),
            },
        },
    })
}

/// The pushed digest from one line of the build pod's log: a line that
/// starts with [`METADATA_MARKER`] followed by BuildKit's metadata JSON
/// (`{"containerimage.digest": "sha256:…", "image.name": "…", …}`).
/// `None` for any other line, invalid JSON, or a digest that is not
/// `sha256:` and 64 lowercase hex digits. Output of build steps never
/// starts a line (plain progress prefixes it with `#<step>`).
pub fn parse_metadata(log_line: &str) -> Option<Pushed> {
    let text = log_line
        .trim_end_matches(['\r', '\n'])
        .strip_prefix(METADATA_MARKER)?;
    let doc: Value = serde_json::from_str(text).ok()?;
    let digest = doc.get("containerimage.digest")?.as_str()?;
    let hex = digest.strip_prefix("sha256:")?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let name = doc
        .get("image.name")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some(Pushed {
        digest: digest.to_string(),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const TOKEN: &str = "f00dfacecafe0000111122223333444455556666777788889999aaaabbbbcccc";
    const DIGEST: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn args() -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "BASE_IMAGE".to_string(),
                format!("registry.example.edu/labforge/base@{DIGEST}"),
            ),
            ("PYTHON_VERSION".to_string(), "3.12".to_string()),
        ])
    }

    static LABELS: std::sync::LazyLock<BTreeMap<String, String>> = std::sync::LazyLock::new(|| {
        BTreeMap::from([
            (
                "org.opencontainers.image.description".to_string(),
                "CUDA & PyTorch, with $HOME".to_string(),
            ),
            ("labforge.input-hash".to_string(), IDENTITY.to_string()),
        ])
    });

    fn job<'a>(
        build_args: &'a BTreeMap<String, String>,
        settings: &'a BuildJobSettings,
    ) -> BuildJob<'a> {
        BuildJob {
            instance: "labforge",
            image: "notebook-cuda",
            identity: IDENTITY,
            target: "registry.example.edu/labforge/notebook-cuda",
            build_args,
            labels: &LABELS,
            platform: "linux/amd64",
            context_url: "http://labforge-hub.labforge.svc:7520/contexts/5d41402abc4b2a76",
            context_token: TOKEN,
            token_expires_at: 1_767_225_600,
            settings,
        }
    }

    fn container(job: &Value) -> &Value {
        &job["spec"]["template"]["spec"]["containers"][0]
    }

    fn strings(v: &Value) -> Vec<&str> {
        v.as_array()
            .expect("an array")
            .iter()
            .map(|s| s.as_str().expect("a string"))
            .collect()
    }

    /// Every `(path, value)` in a JSON tree, paths like `spec.template.…`.
    fn walk<'v>(v: &'v Value, path: String, out: &mut Vec<(String, &'v Value)>) {
        out.push((path.clone(), v));
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    walk(child, format!("{path}.{k}"), out);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    walk(child, format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }

    fn all_paths(v: &Value) -> Vec<(String, &Value)> {
        let mut out = Vec::new();
        walk(v, String::new(), &mut out);
        out
    }

    /// Every container of the pod, init containers included.
    fn all_containers(job: &Value) -> Vec<&Value> {
        let pod = &job["spec"]["template"]["spec"];
        ["initContainers", "containers", "ephemeralContainers"]
            .iter()
            .filter_map(|k| pod.get(*k).and_then(Value::as_array))
            .flatten()
            .collect()
    }

    #[test]
    fn runs_rootless_as_buildkits_user() {
        let (a, s) = (args(), BuildJobSettings::default());
        let j = build_job(&job(&a, &s));
        let pod = &j["spec"]["template"]["spec"];
        let cases: &[(&str, &Value, Value)] = &[
            (
                "pod runAsNonRoot",
                &pod["securityContext"]["runAsNonRoot"],
                json!(true),
            ),
            (
                "pod runAsUser",
                &pod["securityContext"]["runAsUser"],
                json!(1000),
            ),
            (
                "pod runAsGroup",
                &pod["securityContext"]["runAsGroup"],
                json!(1000),
            ),
            (
                "pod fsGroup",
                &pod["securityContext"]["fsGroup"],
                json!(1000),
            ),
            (
                "container runAsNonRoot",
                &container(&j)["securityContext"]["runAsNonRoot"],
                json!(true),
            ),
            (
                "container runAsUser",
                &container(&j)["securityContext"]["runAsUser"],
                json!(1000),
            ),
            (
                "seccomp",
                &pod["securityContext"]["seccompProfile"]["type"],
                json!("Unconfined"),
            ),
            (
                "apparmor",
                &pod["securityContext"]["appArmorProfile"]["type"],
                json!("Unconfined"),
            ),
            (
                "capabilities dropped",
                &container(&j)["securityContext"]["capabilities"]["drop"],
                json!(["ALL"]),
            ),
            (
                "capabilities kept",
                &container(&j)["securityContext"]["capabilities"]["add"],
                json!(["SETGID", "SETUID"]),
            ),
            ("restartPolicy", &pod["restartPolicy"], json!("Never")),
            (
                "no service account token",
                &pod["automountServiceAccountToken"],
                json!(false),
            ),
            ("backoffLimit", &j["spec"]["backoffLimit"], json!(0)),
            ("deadline", &j["spec"]["activeDeadlineSeconds"], json!(7200)),
            ("ttl", &j["spec"]["ttlSecondsAfterFinished"], json!(600)),
            (
                "sandbox flag",
                &container(&j)["env"][3],
                json!({"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"}),
            ),
        ];
        for (what, got, want) in cases {
            assert_eq!(*got, want, "{what}");
        }
    }

    #[test]
    fn nothing_is_privileged_or_shares_the_host() {
        let secret = BuildJobSettings {
            registry_secret: Some("push-login".into()),
            service_account: Some("builder".into()),
            ..BuildJobSettings::default()
        };
        let a = args();
        for s in [BuildJobSettings::default(), secret] {
            let j = build_job(&job(&a, &s));
            let mut privileged = 0;
            for (path, v) in all_paths(&j) {
                let key = path.rsplit('.').next().unwrap_or_default();
                match key {
                    "privileged" => {
                        assert_eq!(*v, json!(false), "{path}");
                        privileged += 1;
                    }
                    "hostPath" | "hostNetwork" | "hostPID" | "hostIPC" | "hostUsers"
                    | "procMount" | "hostPort" => panic!("{path} is set: {v}"),
                    _ => {}
                }
                if let Some(text) = v.as_str() {
                    assert!(!text.contains("SYS_ADMIN"), "{path}: {text}");
                }
            }
            // Said explicitly on the one container, not left to defaults.
            assert_eq!(privileged, all_containers(&j).len());
            for c in all_containers(&j) {
                let caps = &c["securityContext"]["capabilities"];
                assert_eq!(caps["drop"], json!(["ALL"]), "{}", c["name"]);
            }
        }
    }

    #[test]
    fn every_container_has_requests_and_limits() {
        let s = BuildJobSettings {
            cpu_request: "2".into(),
            cpu_limit: "8".into(),
            memory_request: "8Gi".into(),
            memory_limit: "32Gi".into(),
            ephemeral_storage_limit: "100Gi".into(),
            ..BuildJobSettings::default()
        };
        let a = args();
        let j = build_job(&job(&a, &s));
        let containers = all_containers(&j);
        assert_eq!(containers.len(), 1);
        let cases = [
            ("requests", "cpu", "2"),
            ("requests", "memory", "8Gi"),
            ("limits", "cpu", "8"),
            ("limits", "memory", "32Gi"),
            ("limits", "ephemeral-storage", "100Gi"),
        ];
        for c in containers {
            for (kind, resource, want) in cases {
                assert_eq!(
                    c["resources"][kind][resource],
                    json!(want),
                    "{} {kind}.{resource}",
                    c["name"]
                );
            }
        }
    }

    #[test]
    fn the_token_is_only_in_the_environment() {
        let s = BuildJobSettings {
            registry_secret: Some("push-login".into()),
            ..BuildJobSettings::default()
        };
        let a = args();
        let j = build_job(&job(&a, &s));
        let places: Vec<String> = all_paths(&j)
            .into_iter()
            .filter(|(_, v)| v.as_str().is_some_and(|t| t.contains(TOKEN)))
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            places,
            vec![".spec.template.spec.containers[0].env[1].value".to_string()]
        );
        let c = container(&j);
        assert_eq!(c["env"][1]["name"], json!(ENV_CONTEXT_TOKEN));
        for part in strings(&c["command"])
            .into_iter()
            .chain(strings(&c["args"]))
        {
            assert!(!part.contains(TOKEN), "{part}");
        }
        // Nor in the URL, the annotations or the labels.
        assert!(!j["metadata"].to_string().contains(TOKEN));
    }

    #[test]
    fn hostile_build_args_stay_separate_arguments() {
        let hostile = [
            ("SUBST", "$(reboot)"),
            ("BACKTICK", "`reboot`"),
            ("SEMI", "x; rm -rf /"),
            ("QUOTE", "it's \"quoted\""),
            ("NEWLINE", "line one\nline two\nreboot"),
            ("GLOB", "* ?"),
            ("DASH", "--output=type=local,dest=/"),
            ("COMMA", "a,b,push=false"),
        ];
        let a: BTreeMap<String, String> = hostile
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let s = BuildJobSettings::default();
        let j = build_job(&job(&a, &s));
        let c = container(&j);
        assert_eq!(
            strings(&c["command"]),
            vec!["/bin/sh", "-c", SCRIPT, SCRIPT_NAME]
        );
        let argv = strings(&c["args"]);
        for (k, v) in hostile {
            let want = format!("build-arg:{k}={v}");
            let at: Vec<usize> = argv
                .iter()
                .enumerate()
                .filter(|(_, a)| a.contains(v))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(at.len(), 1, "{k}: {argv:?}");
            assert_eq!(argv[at[0]], want, "{k}");
            assert_eq!(argv[at[0] - 1], "--opt", "{k}");
            assert!(!SCRIPT.contains(v), "{k}");
        }
        // The one --output is labforge's own.
        let outputs: Vec<&&str> = argv.iter().filter(|a| a.starts_with("--output")).collect();
        assert_eq!(outputs, vec![&"--output"]);
    }

    #[test]
    fn buildctl_arguments() {
        let s = BuildJobSettings {
            insecure_registry: true,
            ..BuildJobSettings::default()
        };
        let a = args();
        let mut j = job(&a, &s);
        j.target = "registry.example.edu/x";
        assert_eq!(
            buildctl_args(&j),
            vec![
                "--progress=plain".to_string(),
                "--opt".into(),
                format!("build-arg:BASE_IMAGE=registry.example.edu/labforge/base@{DIGEST}"),
                "--opt".into(),
                "build-arg:PYTHON_VERSION=3.12".into(),
                "--opt".into(),
                format!("label:labforge.input-hash={IDENTITY}"),
                "--opt".into(),
                "label:org.opencontainers.image.description=CUDA & PyTorch, with $HOME".into(),
                "--opt".into(),
                "platform=linux/amd64".into(),
                "--output".into(),
                "type=image,name=registry.example.edu/x,push=true,push-by-digest=true,registry.insecure=true".into(),
                "--metadata-file".into(),
                "/labforge/metadata.json".into(),
            ]
        );
        // A target that would add attributes is quoted into one field.
        j.target = "r/x:t,push=false,\"a";
        let args = buildctl_args(&j);
        assert!(
            args.contains(
                &"type=image,\"name=r/x:t,push=false,\"\"a\",push=true,push-by-digest=true,registry.insecure=true"
                    .to_string()
            ),
            "{args:?}"
        );
        assert!(SCRIPT.contains("\"$work/metadata.json\""));
        assert_eq!(METADATA_FILE, format!("{WORK_DIR}/metadata.json"));
        assert!(SCRIPT.contains(&format!("'{METADATA_MARKER}'")));
    }

    #[test]
    fn registry_secret_is_mounted_as_the_docker_config() {
        let a = args();
        let without = BuildJobSettings::default();
        let j = build_job(&job(&a, &without));
        assert!(!j.to_string().contains("DOCKER_CONFIG"));
        assert_eq!(
            j["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );

        let with = BuildJobSettings {
            registry_secret: Some("push-login".into()),
            ..BuildJobSettings::default()
        };
        let j = build_job(&job(&a, &with));
        let c = container(&j);
        let env = c["env"].as_array().expect("env");
        assert!(env.contains(&json!({"name": "DOCKER_CONFIG", "value": "/home/user/.docker"})));
        assert!(c["volumeMounts"].as_array().expect("mounts").contains(
            &json!({"name": "registry-auth", "mountPath": "/home/user/.docker", "readOnly": true})
        ));
        let volumes = j["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .expect("volumes");
        let secret = volumes
            .iter()
            .find(|v| v["name"] == "registry-auth")
            .expect("the secret volume");
        assert_eq!(secret["secret"]["secretName"], json!("push-login"));
        assert_eq!(
            secret["secret"]["items"],
            json!([{"key": ".dockerconfigjson", "path": "config.json"}])
        );
        // The state and the context are emptyDirs.
        for (name, path) in [("work", WORK_DIR), ("buildkit-state", STATE_DIR)] {
            assert!(
                volumes.contains(&json!({"name": name, "emptyDir": {}})),
                "{name}"
            );
            assert!(
                c["volumeMounts"]
                    .as_array()
                    .expect("mounts")
                    .contains(&json!({"name": name, "mountPath": path})),
                "{name}"
            );
        }
    }

    #[test]
    fn labels_and_annotations() {
        let a = args();
        let s = BuildJobSettings::default();
        let j = build_job(&job(&a, &s));
        let want = json!({
            "app.kubernetes.io/managed-by": "labforge",
            "app.kubernetes.io/part-of": "labforge",
            "labforge.io/instance": "labforge",
            "labforge.io/component": "build",
            "labforge.io/image": "notebook-cuda",
            "labforge.io/identity": "0123456789ab",
        });
        assert_eq!(j["metadata"]["labels"], want);
        assert_eq!(j["spec"]["template"]["metadata"]["labels"], want);
        assert_eq!(
            j["metadata"]["annotations"][EXPIRES_ANNOTATION],
            json!("1767225600")
        );
        assert!(j["metadata"].get("namespace").is_none());

        // Label values stay valid whatever the image name.
        let long = format!("{}_", "Ab.".repeat(70));
        let mut odd = job(&a, &s);
        odd.image = &long;
        let j = build_job(&odd);
        for (k, v) in j["metadata"]["labels"].as_object().expect("labels") {
            let v = v.as_str().expect("a string");
            assert!(crate::formats::k8s_label_value(v).is_ok(), "{k}={v:?}");
        }
    }

    #[test]
    fn job_names() {
        let long = "a".repeat(200);
        let dashes = "x-".repeat(100);
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "labforge",
                "notebook-cuda",
                IDENTITY,
                "labforge-build-notebook-cuda-0123456789ab",
            ),
            (
                "lab",
                "Notebook_CUDA.x",
                IDENTITY,
                "lab-build-notebook-cuda-x-0123456789ab",
            ),
            (
                "labforge",
                &long,
                IDENTITY,
                "labforge-build-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-0123456789ab",
            ),
            (
                "labforge",
                &dashes,
                IDENTITY,
                "labforge-build-x-x-x-x-x-x-x-x-x-x-x-x-x-x-x-x-x-x-0123456789ab",
            ),
            ("labforge", "", IDENTITY, "labforge-build-0123456789ab"),
            ("labforge", "img", "ABC", "labforge-build-img-abc"),
            ("", "img", IDENTITY, "labforge-build-img-0123456789ab"),
        ];
        for (instance, image, identity, want) in cases {
            assert_eq!(job_name(instance, image, identity), *want, "{image:?}");
        }
        let dns = regex::Regex::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("regex");
        let huge_instance = "i".repeat(80);
        for (instance, image) in [
            ("labforge", long.as_str()),
            ("labforge", dashes.as_str()),
            ("labforge", "é-ü-ß"),
            (huge_instance.as_str(), long.as_str()),
            (
                "labforge-staging",
                "notebook-cuda-12-4-with-a-much-longer-name",
            ),
        ] {
            let name = job_name(instance, image, IDENTITY);
            assert!(name.len() <= 63, "{name} has {} characters", name.len());
            assert!(dns.is_match(&name), "{name}");
            assert!(name.ends_with("-0123456789ab"), "{name}");
        }
    }

    #[test]
    fn metadata_lines() {
        // What buildctl --metadata-file writes (indented), as SCRIPT prints
        // it: newlines deleted, the indentation kept.
        let written = format!(
            r#"{{
  "containerimage.config.digest": "sha256:3f1a5c0d4b2e8f7a9c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b",
  "containerimage.descriptor": {{
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "{DIGEST}",
    "size": 1981,
    "platform": {{
      "architecture": "amd64",
      "os": "linux"
    }}
  }},
  "containerimage.digest": "{DIGEST}",
  "image.name": "registry.example.edu/labforge/notebook-cuda:cuda12-0123456789ab"
}}"#
        );
        let line = format!("{METADATA_MARKER}{}", written.replace('\n', ""));
        let pushed = Pushed {
            digest: DIGEST.to_string(),
            name: Some("registry.example.edu/labforge/notebook-cuda:cuda12-0123456789ab".into()),
        };
        assert_eq!(parse_metadata(&line), Some(pushed.clone()));
        assert_eq!(parse_metadata(&format!("{line}\r\n")), Some(pushed));
        let short = format!("{METADATA_MARKER}{{\"containerimage.digest\":\"{DIGEST}\"}}");
        assert_eq!(
            parse_metadata(&short),
            Some(Pushed {
                digest: DIGEST.into(),
                name: None
            })
        );

        let bad_hex = DIGEST.replace("9f86", "9F86");
        let cases = [
            (
                "no marker",
                format!("{{\"containerimage.digest\":\"{DIGEST}\"}}"),
            ),
            (
                "build step output",
                format!("#7 0.312 {METADATA_MARKER}{{\"containerimage.digest\":\"{DIGEST}\"}}"),
            ),
            (
                "leading space",
                format!(" {METADATA_MARKER}{{\"containerimage.digest\":\"{DIGEST}\"}}"),
            ),
            ("empty", METADATA_MARKER.to_string()),
            (
                "not JSON",
                format!("{METADATA_MARKER}sha256:{}", "a".repeat(64)),
            ),
            (
                "truncated",
                format!("{METADATA_MARKER}{{\"containerimage.digest\":\"{DIGEST}\""),
            ),
            (
                "no digest",
                format!("{METADATA_MARKER}{{\"image.name\":\"r/x:t\"}}"),
            ),
            (
                "digest not a string",
                format!("{METADATA_MARKER}{{\"containerimage.digest\":7}}"),
            ),
            (
                "short digest",
                format!("{METADATA_MARKER}{{\"containerimage.digest\":\"sha256:abc\"}}"),
            ),
            (
                "uppercase hex",
                format!("{METADATA_MARKER}{{\"containerimage.digest\":\"{bad_hex}\"}}"),
            ),
            (
                "other algorithm",
                format!(
                    "{METADATA_MARKER}{{\"containerimage.digest\":\"sha512:{}\"}}",
                    "a".repeat(64)
                ),
            ),
            (
                "shell in the digest",
                format!(
                    "{METADATA_MARKER}{{\"containerimage.digest\":\"sha256:{}$(x)\"}}",
                    "a".repeat(58)
                ),
            ),
            ("array", format!("{METADATA_MARKER}[\"{DIGEST}\"]")),
            ("binary", format!("{METADATA_MARKER}\u{0}\u{1}\u{fffd}")),
        ];
        for (what, line) in cases {
            assert_eq!(parse_metadata(&line), None, "{what}");
        }
    }

    #[test]
    fn settings_defaults_and_unknown_fields() {
        let parsed: BuildJobSettings = serde_json::from_str("{}").expect("empty settings");
        assert_eq!(parsed, BuildJobSettings::default());
        assert_eq!(parsed.buildkit_image, "moby/buildkit:v0.23.2-rootless");
        assert_eq!(
            (
                parsed.active_deadline_seconds,
                parsed.ttl_seconds_after_finished
            ),
            (7200, 600)
        );
        let some: BuildJobSettings = serde_json::from_str(
            r#"{"cpu_limit": "2", "tolerations": [{"key": "gpu", "operator": "Exists"}]}"#,
        )
        .expect("settings");
        assert_eq!(some.cpu_limit, "2");
        assert_eq!(some.memory_limit, "16Gi");
        assert_eq!(some.tolerations[0].key.as_deref(), Some("gpu"));
        let err = serde_json::from_str::<BuildJobSettings>(r#"{"privileged": true}"#)
            .expect_err("unknown field");
        assert!(err.to_string().contains("privileged"), "{err}");
    }

    /// Runs the Job's own command and arguments with `/bin/sh`, with stand-ins
    /// for `wget`, `tar` and `buildctl-daemonless.sh` that record what they
    /// get: arguments must reach `buildctl` byte for byte, nothing in them
    /// may run, and the last line must be the metadata line.
    #[test]
    fn the_script_passes_arguments_through_untouched() {
        use std::os::unix::fs::PermissionsExt;

        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "labforge-job-script-{}-{nanos}",
            std::process::id()
        ));
        let bin = dir.join("bin");
        let work = dir.join("work");
        let log = dir.join("log");
        for d in [&bin, &work, &log] {
            std::fs::create_dir_all(d).expect("temp dir");
        }
        let stubs = [
            (
                "wget",
                r#"printf '%s\n' "$@" > "$STUB_LOG/wget"
while [ $# -gt 0 ]; do [ "$1" = -O ] && : > "$2"; shift; done"#
                    .to_string(),
            ),
            ("tar", r#"printf '%s\n' "$@" > "$STUB_LOG/tar""#.to_string()),
            (
                "buildctl-daemonless.sh",
                format!(
                    r#"printf '%s\0' "$@" > "$STUB_LOG/buildctl"
printf '%s' "${{LABFORGE_CONTEXT_TOKEN-unset}}" > "$STUB_LOG/token"
echo 'progress on stdout'
printf '{{\n  "containerimage.digest": "{DIGEST}",\n  "image.name": "r/x:t"\n}}\n' > "$LABFORGE_WORK_DIR/metadata.json""#
                ),
            ),
        ];
        for (name, body) in stubs {
            let path = bin.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("stub");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }

        let hostile = BTreeMap::from([
            ("A".to_string(), "$(touch pwned-subst)".to_string()),
            ("B".to_string(), "`touch pwned-tick`".to_string()),
            ("C".to_string(), "x; touch pwned-semi".to_string()),
            ("D".to_string(), "it's\nline two \"$HOME\" *".to_string()),
        ]);
        let s = BuildJobSettings::default();
        let j = build_job(&job(&hostile, &s));
        let c = container(&j);
        let command = strings(&c["command"]);
        let args = strings(&c["args"]);
        let mut cmd = std::process::Command::new(command[0]);
        cmd.args(&command[1..])
            .args(&args)
            .current_dir(&dir)
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
            )
            .env("STUB_LOG", &log);
        for e in c["env"].as_array().expect("env") {
            let name = e["name"].as_str().expect("name");
            let value = e["value"].as_str().expect("value");
            if name == ENV_WORK_DIR {
                cmd.env(name, &work);
            } else {
                cmd.env(name, value);
            }
        }
        let out = cmd
            .output()
            .expect("/bin/sh runs (the build container runs the script with it)");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );

        let read = |name: &str| std::fs::read_to_string(log.join(name)).expect(name);
        let work_s = work.display().to_string();
        let mut want = vec![
            "build".to_string(),
            "--frontend".into(),
            "dockerfile.v0".into(),
            "--local".into(),
            format!("context={work_s}/context"),
            "--local".into(),
            format!("dockerfile={work_s}/context"),
        ];
        want.extend(args.iter().map(|a| a.to_string()));
        let got: Vec<String> = read("buildctl")
            .split_terminator('\0')
            .map(str::to_string)
            .collect();
        assert_eq!(got, want);
        assert_eq!(read("token"), "unset", "the token reached buildctl");
        let wget = read("wget");
        assert!(
            wget.contains(&format!("\nAuthorization: Bearer {TOKEN}\n")),
            "{wget}"
        );
        assert!(
            wget.ends_with(&format!("{}\n", job(&hostile, &s).context_url)),
            "{wget}"
        );
        assert!(read("tar").contains(&format!("{work_s}/context.tar")));
        for f in ["pwned-subst", "pwned-tick", "pwned-semi"] {
            assert!(!dir.join(f).exists(), "{f} was created");
        }
        let last = stdout.lines().last().unwrap_or_default();
        assert_eq!(
            parse_metadata(last),
            Some(Pushed {
                digest: DIGEST.into(),
                name: Some("r/x:t".into())
            }),
            "{stdout}"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn full_job_snapshot() {
        let s = BuildJobSettings {
            registry_secret: Some("labforge-registry-push".into()),
            node_selector: BTreeMap::from([("labforge.io/builds".to_string(), "true".to_string())]),
            tolerations: vec![Toleration {
                key: Some("labforge.io/builds".into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Toleration::default()
            }],
            service_account: Some("labforge-build".into()),
            ..BuildJobSettings::default()
        };
        let a = args();
        let j = build_job(&job(&a, &s));
        let text = serde_json::to_string_pretty(&j).expect("serializes");
        insta::assert_snapshot!(text);
    }
}
