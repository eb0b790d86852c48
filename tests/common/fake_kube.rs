//! A fake Kubernetes API server for the tests of the cluster sync (server-side
//! apply of the profiles ConfigMap and the pre-puller DaemonSets, deletes of
//! stale ones), of the build Jobs and of the smoke-test pods.
//!
//! It answers the namespaced resources labforge uses (core/v1 `configmaps`,
//! apps/v1 `daemonsets`, batch/v1 `jobs`, core/v1 `pods` and `pods/log`) the
//! way a real API server does, so that the real kube-rs client can talk to
//! it:
//! - a bearer token is required (401 otherwise) and the RBAC Role of the hub
//!   is enforced (403 Forbidden for anything it does not grant, e.g. writing
//!   pods, reading secrets or watching);
//! - every error is a `metav1.Status` with the real reason, message shape,
//!   details and code;
//! - writes set uid, resourceVersion, generation, creationTimestamp,
//!   namespace and managedFields, and default the fields the real API server
//!   defaults (pod template, DaemonSet, Job), so naive comparisons of what was
//!   applied against what is stored break as they would on a cluster;
//! - validation answers 422 Invalid with `details.causes` naming the field,
//!   unknown fields are rejected (as `fieldValidation=Strict` does; that is
//!   also the default here, unlike a real server whose default is `Warn`);
//! - server-side apply keeps one field set per manager: fields a manager stops
//!   applying are removed unless someone else owns them, and changing a field
//!   owned by another manager is a 409 conflict unless `force=true`;
//! - a Job gets one pod at once (as the Job controller would create it); test
//!   hooks move the pod through Running to Succeeded or Failed and write its
//!   log, which `pods/{name}/log?follow=true` streams until the pod ends;
//! - a pod created through the API (`POST pods`) is validated like the pod
//!   template of a Job (and its own fields: restart policy, deadline,
//!   extended resources), gets what admission and the scheduler would give
//!   it (service account, default tolerations, QoS class, a node) and waits
//!   Pending with its container `ContainerCreating`; the "kubelet" is test
//!   hooks: [`FakeKube::start_pod`], [`FakeKube::append_log`],
//!   [`FakeKube::finish_pod`] (an exit code), [`FakeKube::deadline_pod`]
//!   (`activeDeadlineSeconds` passed), [`FakeKube::set_waiting`] (e.g.
//!   `ErrImagePull`) and [`FakeKube::set_unschedulable`]. A pod is deleted at
//!   once (the answer is the pod with its deletion timestamp, as for a
//!   graceful delete; this kubelet needs no grace period).
//!
//! It does not implement watches, PUT, other patch types than apply, other
//! namespaces than [`NAMESPACE`], YAML request bodies (JSON only), updates
//! of a pod, or any controller but the single-pod Job controller above (a DaemonSet's status
//! only changes through [`FakeKube::set_status`]; a failed pod fails its Job
//! at once, as if the backoff limit were reached).
//!
//! The server runs on a thread of its own with its own tokio runtime, so
//! blocking and async tests can both use it. It stops when the [`FakeKube`]
//! is dropped.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// The only namespace the fake serves (the hub's Role is bound there).
pub const NAMESPACE: &str = "labforge";

/// The bearer token of the kubeconfig [`FakeKube::kubeconfig`] writes.
pub const TOKEN: &str = "labforge-fake-kube-token";

/// The user the token authenticates as (named in 403 messages).
pub const USER: &str = "system:serviceaccount:labforge:labforge-hub";

/// The manager [`FakeKube::put`] writes as (an Update, like `kubectl create`).
pub const SEED_MANAGER: &str = "kubectl-create";

/// Verbs the fake's own self-test reads with beyond the hub's Role
/// (`FakeKube::start_with_reads`); labforge's tests get the Role alone.
const READS: &[(&str, &str, &[&str])] = &[
    ("", "configmaps", &["get"]),
    ("apps", "daemonsets", &["get"]),
    ("batch", "jobs", &["list"]),
];

/// One rule: API group, resource, verbs.
type Rule = (String, String, Vec<String>);

/// The hub's Role, `labforge_builder::cluster::PERMISSIONS` (what
/// deploy/hub/role.yaml grants), and `extra`. Anything else is forbidden.
fn role(extra: &[(&str, &str, &[&str])]) -> Vec<Rule> {
    labforge_builder::cluster::PERMISSIONS
        .iter()
        .map(|p| (p.api_group, p.resource, p.verbs))
        .chain(extra.iter().copied())
        .map(|(g, r, v)| {
            (
                g.to_string(),
                r.to_string(),
                v.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect()
}

/// The largest ConfigMap payload the API server stores.
const MAX_CONFIGMAP_BYTES: usize = 1024 * 1024;
/// The largest total size of an object's annotations.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// One request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    /// The path as sent (still percent-encoded), without the query.
    pub path: String,
    /// The decoded query parameters (empty pairs, as in `?&a=b`, dropped).
    pub query: BTreeMap<String, String>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body as JSON; `None` when empty, a JSON string holding the text
    /// when it is not JSON.
    pub body: Option<Value>,
    /// The status the fake answered.
    pub status: u16,
}

impl Call {
    /// `"PATCH /api/v1/namespaces/labforge/configmaps/x"`, for messages.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The fake server. Dropping it stops the server.
pub struct FakeKube {
    url: String,
    inner: Arc<Inner>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKube {
    /// Start a fake API server on 127.0.0.1, a free port.
    /// A server that grants exactly the hub's Role.
    pub fn start() -> FakeKube {
        FakeKube::start_with_role(role(&[]))
    }

    /// The hub's Role plus reads the fake's own self-test uses.
    pub fn start_with_reads() -> FakeKube {
        FakeKube::start_with_role(role(READS))
    }

    fn start_with_role(role: Vec<Rule>) -> FakeKube {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake API server");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("the fake's address")
        );
        let (changed, _) = tokio::sync::watch::channel(0u64);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new(role)),
            changed,
        });
        let shared = Arc::clone(&inner);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-kube".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the fake's runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let app = axum::Router::new().fallback(handle).with_state(shared);
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                });
            })
            .expect("spawn the fake API server thread");
        FakeKube {
            url,
            inner,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The server URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The bearer token the fake accepts.
    pub fn token(&self) -> String {
        TOKEN.to_string()
    }

    /// Write `dir/kubeconfig`: one cluster at [`Self::url`], the bearer token
    /// and namespace [`NAMESPACE`] in the current context.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        self.kubeconfig_with_token(dir, TOKEN)
    }

    /// Like [`Self::kubeconfig`] with another token (to test a 401); the file
    /// is `dir/kubeconfig` for the right token, `dir/kubeconfig-other`
    /// otherwise.
    pub fn kubeconfig_with_token(&self, dir: &Path, token: &str) -> PathBuf {
        let file = if token == TOKEN {
            "kubeconfig"
        } else {
            "kubeconfig-other"
        };
        let path = dir.join(file);
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: fake\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: labforge-hub\n  user:\n    token: {token}\n\
             contexts:\n\
             - name: fake\n  context:\n    cluster: fake\n    user: labforge-hub\n    namespace: {NAMESPACE}\n\
             current-context: fake\n",
            url = self.url,
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }

    /// Every request received, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Every request received, in order, and forget them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The requests that write: POST, PUT, PATCH and DELETE.
    pub fn writes(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| matches!(c.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
            .collect()
    }

    /// The stored object (`kind`: `configmaps`, `daemonsets`, `jobs`, `pods`).
    pub fn object(&self, kind: &str, name: &str) -> Option<Value> {
        let res = resource(kind);
        self.lock().objects.get(&(res, name.to_string())).cloned()
    }

    /// The stored objects of a kind, by name.
    pub fn objects(&self, kind: &str) -> Vec<Value> {
        let res = resource(kind);
        self.lock()
            .objects
            .iter()
            .filter(|((r, _), _)| *r == res)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Store an object as if [`SEED_MANAGER`] had created (or replaced) it:
    /// defaulted, validated (panics when invalid), with server-set fields,
    /// owned by that manager. A Job gets its pod. Returns the stored object.
    pub fn put(&self, kind: &str, obj: Value) -> Value {
        self.put_as(kind, SEED_MANAGER, obj)
    }

    /// [`Self::put`] as another manager (operation Update).
    pub fn put_as(&self, kind: &str, manager: &str, obj: Value) -> Value {
        let res = resource(kind);
        let stored = self.lock().seed(res, manager, obj);
        self.inner.bump();
        stored
    }

    /// Remove an object behind labforge's back (no garbage collection).
    pub fn remove(&self, kind: &str, name: &str) -> Option<Value> {
        let res = resource(kind);
        let removed = {
            let mut s = self.lock();
            s.managers.remove(&(res, name.to_string()));
            if res == Res::Pods {
                s.logs.remove(name);
            }
            s.objects.remove(&(res, name.to_string()))
        };
        self.inner.bump();
        removed
    }

    /// Mark `path` (in server-side apply notation, e.g.
    /// `.spec.template.spec.containers[name="pause"].image`) as owned by
    /// `manager` through an Apply: an apply by another manager that sets it
    /// to a different value conflicts unless forced.
    pub fn own_field(&self, kind: &str, name: &str, manager: &str, path: &str) {
        self.own(kind, name, manager, path, Op::Apply);
    }

    /// [`Self::own_field`] through an Update (the conflict message then says
    /// `"manager" using <apiVersion>`, as for `kubectl edit`).
    pub fn own_field_update(&self, kind: &str, name: &str, manager: &str, path: &str) {
        self.own(kind, name, manager, path, Op::Update);
    }

    fn own(&self, kind: &str, name: &str, manager: &str, path: &str, op: Op) {
        let res = resource(kind);
        let fpath = parse_fpath(path).unwrap_or_else(|e| panic!("own_field: {e}"));
        let mut s = self.lock();
        let key = (res, name.to_string());
        assert!(
            s.objects.contains_key(&key),
            "own_field: no {kind} named {name}"
        );
        let time = now_iso();
        let managers = s.managers.entry(key.clone()).or_default();
        match managers
            .iter_mut()
            .find(|m| m.name == manager && m.operation == op)
        {
            Some(m) => {
                m.fields.insert(fpath);
            }
            None => managers.push(Manager {
                name: manager.to_string(),
                operation: op,
                api_version: res.api_version().to_string(),
                time,
                fields: BTreeSet::from([fpath]),
            }),
        }
        s.refresh_managed_fields(res, name, true);
    }

    /// Set `.status` of an object (as its controller would), bumping its
    /// resourceVersion.
    pub fn set_status(&self, kind: &str, name: &str, status: Value) {
        let res = resource(kind);
        {
            let mut s = self.lock();
            let rv = s.next_rv();
            let obj = s
                .objects
                .get_mut(&(res, name.to_string()))
                .unwrap_or_else(|| panic!("set_status: no {kind} named {name}"));
            obj["status"] = status;
            obj["metadata"]["resourceVersion"] = json!(rv);
        }
        self.inner.bump();
    }

    /// Answer the next `count` requests with this method (`"*"` for any)
    /// whose path starts with `path_prefix` with `status` (500, 503, 504, 429
    /// with `Retry-After: 1`, ...) as a Status. Checked after authentication.
    pub fn fail_next(&self, method: &str, path_prefix: &str, status: u16, count: usize) {
        self.lock().faults.push(Fault {
            method: method.to_uppercase(),
            prefix: path_prefix.to_string(),
            status,
            remaining: count,
        });
    }

    /// The names of the pods of a Job, oldest first.
    pub fn job_pods(&self, job: &str) -> Vec<String> {
        self.lock().job_pods(job)
    }

    /// Start the Job's pod: phase Running, container running and ready.
    /// Returns the pod's name.
    pub fn start_job(&self, job: &str) -> String {
        let pod = self.lock().start_job(job);
        self.inner.bump();
        pod
    }

    /// Append lines to the log of a pod's first container (each gets a
    /// newline); followers see them at once.
    pub fn append_log(&self, pod: &str, lines: &[&str]) {
        self.lock().append_log(pod, lines);
        self.inner.bump();
    }

    /// End the Job's pod (Succeeded or Failed) and set the Job's status:
    /// `succeeded: 1` with conditions SuccessCriteriaMet and Complete, or
    /// `failed: 1` with FailureTarget and Failed (reason
    /// BackoffLimitExceeded). Log followers see the end of the stream.
    pub fn finish_job(&self, job: &str, succeed: bool) {
        self.lock().finish_job(job, succeed);
        self.inner.bump();
    }

    /// Start a pod (a Job's or one created through the API): phase
    /// Running, container running and ready. A Job's ready count follows.
    pub fn start_pod(&self, pod: &str) {
        self.lock().start_pod(pod);
        self.inner.bump();
    }

    /// End a pod's container with `exit_code`: phase Succeeded for 0,
    /// Failed otherwise, the container terminated (`Completed` or `Error`).
    /// A pending pod is started first. Log followers see the end.
    pub fn finish_pod(&self, pod: &str, exit_code: i64) {
        let mut s = self.lock();
        s.start_pod(pod);
        let reason = if exit_code == 0 { "Completed" } else { "Error" };
        s.end_pod(pod, exit_code == 0, Some((exit_code, reason)), None);
        drop(s);
        self.inner.bump();
    }

    /// What the kubelet does when a pod's `activeDeadlineSeconds` has
    /// passed: phase Failed with reason DeadlineExceeded, a running
    /// container killed (exit code 137), a waiting one left waiting.
    pub fn deadline_pod(&self, pod: &str) {
        let mut s = self.lock();
        let running = s
            .get(Res::Pods, pod)
            .is_some_and(|p| str_at(p, "/status/phase") == "Running");
        s.end_pod(
            pod,
            false,
            running.then_some((137, "Error")),
            Some((
                "DeadlineExceeded",
                "Pod was active on the node longer than the specified deadline",
            )),
        );
        drop(s);
        self.inner.bump();
    }

    /// A pending pod's container waits for `reason` (`ErrImagePull`,
    /// `ImagePullBackOff`, `CreateContainerConfigError`, …) with `message`.
    pub fn set_waiting(&self, pod: &str, reason: &str, message: &str) {
        self.lock().set_waiting(pod, reason, message);
        self.inner.bump();
    }

    /// A pending pod that no node can take: unbound, its PodScheduled
    /// condition False with reason Unschedulable and `message` (e.g.
    /// `0/3 nodes are available: 3 Insufficient nvidia.com/gpu.`).
    pub fn set_unschedulable(&self, pod: &str, message: &str) {
        self.lock().set_unschedulable(pod, message);
        self.inner.bump();
    }

    /// Run a Job to its end: start its pod if pending, write `logs`, then
    /// [`Self::finish_job`].
    pub fn run_job(&self, job: &str, logs: &[&str], succeed: bool) {
        let pod = self.start_job(job);
        self.append_log(&pod, logs);
        self.finish_job(job, succeed);
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.lock().closing = true;
        self.inner.bump();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `configmaps`, `daemonsets`, `jobs` or `pods`; anything else is a mistake
/// in the test.
fn resource(kind: &str) -> Res {
    Res::from_plural(kind).unwrap_or_else(|| {
        panic!("unknown kind {kind:?}: use configmaps, daemonsets, jobs or pods")
    })
}

// ---------------------------------------------------------------------------
// Resources

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Res {
    ConfigMaps,
    DaemonSets,
    Jobs,
    Pods,
}

impl Res {
    fn from_plural(s: &str) -> Option<Res> {
        match s {
            "configmaps" => Some(Res::ConfigMaps),
            "daemonsets" => Some(Res::DaemonSets),
            "jobs" => Some(Res::Jobs),
            "pods" => Some(Res::Pods),
            _ => None,
        }
    }

    fn from_url(group: &str, version: &str, resource: &str) -> Option<Res> {
        let res = Res::from_plural(resource)?;
        (res.group() == group && version == "v1").then_some(res)
    }

    fn plural(self) -> &'static str {
        match self {
            Res::ConfigMaps => "configmaps",
            Res::DaemonSets => "daemonsets",
            Res::Jobs => "jobs",
            Res::Pods => "pods",
        }
    }

    fn group(self) -> &'static str {
        match self {
            Res::ConfigMaps | Res::Pods => "",
            Res::DaemonSets => "apps",
            Res::Jobs => "batch",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Res::ConfigMaps | Res::Pods => "v1",
            Res::DaemonSets => "apps/v1",
            Res::Jobs => "batch/v1",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Res::ConfigMaps => "ConfigMap",
            Res::DaemonSets => "DaemonSet",
            Res::Jobs => "Job",
            Res::Pods => "Pod",
        }
    }

    /// `configmaps`, `daemonsets.apps` (a GroupResource as Go prints it).
    fn qualified(self) -> String {
        qualify(self.plural(), self.group())
    }

    /// `ConfigMap`, `DaemonSet.apps` (a GroupKind as Go prints it).
    fn qualified_kind(self) -> String {
        qualify(self.kind(), self.group())
    }

    /// `/v1, Kind=ConfigMap`, `apps/v1, Kind=DaemonSet`.
    fn gvk(self) -> String {
        let gv = if self.group().is_empty() {
            "/v1".to_string()
        } else {
            self.api_version().to_string()
        };
        format!("{gv}, Kind={}", self.kind())
    }

    /// The parts of an object its managers own (besides metadata).
    fn sections(self) -> &'static [&'static str] {
        match self {
            Res::ConfigMaps => &["data", "binaryData", "immutable"],
            _ => &["spec"],
        }
    }

    fn top_keys(self) -> &'static [&'static str] {
        match self {
            Res::ConfigMaps => &[
                "apiVersion",
                "kind",
                "metadata",
                "data",
                "binaryData",
                "immutable",
            ],
            _ => &["apiVersion", "kind", "metadata", "spec", "status"],
        }
    }

    /// Whether the object carries `metadata.generation`.
    fn has_generation(self) -> bool {
        matches!(self, Res::DaemonSets | Res::Jobs)
    }
}

fn qualify(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_string()
    } else {
        format!("{name}.{group}")
    }
}

const META_KEYS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

const DAEMONSET_SPEC_KEYS: &[&str] = &[
    "selector",
    "template",
    "updateStrategy",
    "minReadySeconds",
    "revisionHistoryLimit",
];

const JOB_SPEC_KEYS: &[&str] = &[
    "parallelism",
    "completions",
    "activeDeadlineSeconds",
    "podFailurePolicy",
    "successPolicy",
    "backoffLimit",
    "backoffLimitPerIndex",
    "maxFailedIndexes",
    "selector",
    "manualSelector",
    "template",
    "ttlSecondsAfterFinished",
    "completionMode",
    "suspend",
    "podReplacementPolicy",
    "managedBy",
];

const TEMPLATE_KEYS: &[&str] = &["metadata", "spec"];

const POD_SPEC_KEYS: &[&str] = &[
    "volumes",
    "initContainers",
    "containers",
    "ephemeralContainers",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "dnsPolicy",
    "nodeSelector",
    "serviceAccountName",
    "serviceAccount",
    "automountServiceAccountToken",
    "nodeName",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "shareProcessNamespace",
    "securityContext",
    "imagePullSecrets",
    "hostname",
    "subdomain",
    "affinity",
    "schedulerName",
    "tolerations",
    "hostAliases",
    "priorityClassName",
    "priority",
    "dnsConfig",
    "readinessGates",
    "runtimeClassName",
    "enableServiceLinks",
    "preemptionPolicy",
    "overhead",
    "topologySpreadConstraints",
    "setHostnameAsFQDN",
    "os",
    "hostUsers",
    "schedulingGates",
    "resourceClaims",
    "resources",
];

const CONTAINER_KEYS: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "ports",
    "envFrom",
    "env",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "volumeMounts",
    "volumeDevices",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "securityContext",
    "stdin",
    "stdinOnce",
    "tty",
];

// ---------------------------------------------------------------------------
// State

struct Inner {
    state: Mutex<State>,
    /// Bumped on every change log followers may care about.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Apply,
    Update,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Apply => "Apply",
            Op::Update => "Update",
        }
    }
}

/// One entry of managedFields: the fields a manager owns.
#[derive(Debug, Clone, PartialEq)]
struct Manager {
    name: String,
    operation: Op,
    api_version: String,
    time: String,
    fields: BTreeSet<FPath>,
}

impl Manager {
    /// How the real API server names a manager in conflict messages.
    fn display(&self) -> String {
        match self.operation {
            Op::Apply => format!("{:?}", self.name),
            Op::Update => format!("{:?} using {}", self.name, self.api_version),
        }
    }
}

struct Fault {
    method: String,
    prefix: String,
    status: u16,
    remaining: usize,
}

struct LogLine {
    time: String,
    text: String,
}

struct State {
    /// What the token may do.
    role: Vec<Rule>,
    objects: BTreeMap<(Res, String), Value>,
    managers: BTreeMap<(Res, String), Vec<Manager>>,
    /// pod → container → lines.
    logs: BTreeMap<String, BTreeMap<String, Vec<LogLine>>>,
    faults: Vec<Fault>,
    calls: Vec<Call>,
    rv: u64,
    rng: u64,
    closing: bool,
}

impl State {
    fn new(role: Vec<Rule>) -> State {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed)
            | 1;
        State {
            role,
            objects: BTreeMap::new(),
            managers: BTreeMap::new(),
            logs: BTreeMap::new(),
            faults: Vec::new(),
            calls: Vec::new(),
            rv: 1000,
            rng: seed,
            closing: false,
        }
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn uid(&mut self) -> String {
        let a = self.rand();
        let b = self.rand();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    /// Five characters from the alphabet of the API server's name generator.
    fn suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..5)
            .map(|_| ALPHABET[(self.rand() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }

    /// `generateName` + 5 characters, the base cut to 58 characters.
    fn generate_name(&mut self, base: &str) -> String {
        let base: String = base.chars().take(58).collect();
        format!("{base}{}", self.suffix())
    }

    fn get(&self, res: Res, name: &str) -> Option<&Value> {
        self.objects.get(&(res, name.to_string()))
    }

    /// Recompute `metadata.managedFields` from the manager entries.
    fn refresh_managed_fields(&mut self, res: Res, name: &str, bump_rv: bool) {
        let key = (res, name.to_string());
        let entries = managed_fields_json(self.managers.get(&key).map(Vec::as_slice));
        let rv = if bump_rv { Some(self.next_rv()) } else { None };
        if let Some(obj) = self.objects.get_mut(&key) {
            obj["metadata"]["managedFields"] = entries;
            if let Some(rv) = rv {
                obj["metadata"]["resourceVersion"] = json!(rv);
            }
        }
    }

    // -- test hooks -------------------------------------------------------

    fn seed(&mut self, res: Res, manager: &str, obj: Value) -> Value {
        let Value::Object(mut body) = obj else {
            panic!("put: the object must be a JSON object");
        };
        body.entry("apiVersion")
            .or_insert_with(|| json!(res.api_version()));
        body.entry("kind").or_insert_with(|| json!(res.kind()));
        let name = body
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("put: metadata.name is required"))
            .to_string();
        let current = self.get(res, &name).cloned();
        let mut obj = normalize(res, &body);
        let given_uid = body
            .get("metadata")
            .and_then(|m| m.get("uid"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let uid = given_uid
            .or_else(|| current.as_ref().map(|c| str_at(c, "/metadata/uid")))
            .unwrap_or_else(|| self.uid());
        if res == Res::Jobs && current.is_none() {
            prepare_job(&mut obj, &uid);
        }
        default_object(res, &mut obj);
        let errors = validate(res, &obj, current.as_ref());
        assert!(
            errors.is_empty(),
            "put: the {} is invalid: {}",
            res.kind(),
            join_errors(&errors)
        );
        if let Some(status) = body.get("status") {
            obj["status"] = status.clone();
        } else if let Some(status) = current.as_ref().and_then(|c| c.get("status")) {
            obj["status"] = status.clone();
        }
        let fields = owned_leaf_paths(res, &obj);
        let key = (res, name.clone());
        let managers = self.managers.entry(key.clone()).or_default();
        match managers
            .iter_mut()
            .find(|m| m.name == manager && m.operation == Op::Update)
        {
            Some(m) => {
                m.fields = fields;
                m.time = now_iso();
            }
            None => managers.push(Manager {
                name: manager.to_string(),
                operation: Op::Update,
                api_version: res.api_version().to_string(),
                time: now_iso(),
                fields,
            }),
        }
        let generation = match &current {
            Some(c) if c.get("spec") != obj.get("spec") => {
                c["metadata"]["generation"].as_i64().unwrap_or(1) + 1
            }
            Some(c) => c["metadata"]["generation"].as_i64().unwrap_or(1),
            None => 1,
        };
        let created = current
            .as_ref()
            .map(|c| str_at(c, "/metadata/creationTimestamp"))
            .unwrap_or_else(now_iso);
        let rv = self.next_rv();
        let meta = &mut obj["metadata"];
        meta["uid"] = json!(uid);
        meta["resourceVersion"] = json!(rv);
        meta["creationTimestamp"] = json!(created);
        meta["namespace"] = json!(NAMESPACE);
        if res.has_generation() {
            meta["generation"] = json!(generation);
        }
        if current.is_none() && obj.get("status").is_none() {
            initial_status(res, &mut obj);
        }
        self.objects.insert(key, obj);
        self.refresh_managed_fields(res, &name, false);
        if res == Res::Jobs && self.job_pods(&name).is_empty() {
            self.spawn_job_pod(&name);
        }
        self.get(res, &name).cloned().unwrap_or(Value::Null)
    }

    fn job(&self, job: &str) -> &Value {
        self.get(Res::Jobs, job)
            .unwrap_or_else(|| panic!("no job named {job}"))
    }

    fn job_pods(&self, job: &str) -> Vec<String> {
        let Some(uid) = self.get(Res::Jobs, job).map(|j| str_at(j, "/metadata/uid")) else {
            return Vec::new();
        };
        let mut pods: Vec<(String, String)> = self
            .objects
            .iter()
            .filter(|((r, _), p)| *r == Res::Pods && owned_by(p, &uid))
            .map(|((_, n), p)| (str_at(p, "/metadata/resourceVersion"), n.clone()))
            .collect();
        pods.sort_by_key(|(rv, _)| rv.parse::<u64>().unwrap_or(0));
        pods.into_iter().map(|(_, n)| n).collect()
    }

    /// The Job's newest pod.
    fn job_pod(&self, job: &str) -> String {
        let _ = self.job(job);
        self.job_pods(job)
            .pop()
            .unwrap_or_else(|| panic!("job {job} has no pod"))
    }

    /// Create the Job's pod, Pending (scheduled, containers being created),
    /// and count it active in the Job's status.
    fn spawn_job_pod(&mut self, job: &str) -> String {
        let job_obj = self.job(job).clone();
        let name = self.generate_name(&format!("{job}-"));
        let uid = self.uid();
        let rv = self.next_rv();
        let now = now_iso();
        let template = &job_obj["spec"]["template"];
        let mut spec = template["spec"].clone();
        admit_pod_spec(&mut spec);
        let containers: Vec<String> = containers_of(&spec);
        let mut meta = json!({
            "name": name,
            "generateName": format!("{job}-"),
            "namespace": NAMESPACE,
            "uid": uid,
            "resourceVersion": rv,
            "creationTimestamp": now,
            "labels": template["metadata"]["labels"].clone(),
            "ownerReferences": [{
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job,
                "uid": str_at(&job_obj, "/metadata/uid"),
                "controller": true,
                "blockOwnerDeletion": true
            }],
            "finalizers": ["batch.kubernetes.io/job-tracking"]
        });
        if let Some(a) = template["metadata"].get("annotations") {
            meta["annotations"] = a.clone();
        }
        let status = pending_status(&spec, &now);
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": spec,
            "status": status
        });
        let key = (Res::Pods, name.clone());
        self.objects.insert(key.clone(), pod);
        self.managers.insert(
            key,
            vec![Manager {
                name: "kube-controller-manager".into(),
                operation: Op::Update,
                api_version: "v1".into(),
                time: now.clone(),
                fields: owned_leaf_paths(
                    Res::Pods,
                    self.get(Res::Pods, &name).unwrap_or(&Value::Null),
                ),
            }],
        );
        self.refresh_managed_fields(Res::Pods, &name, false);
        self.logs.insert(
            name.clone(),
            containers.iter().map(|c| (c.clone(), Vec::new())).collect(),
        );
        let rv = self.next_rv();
        if let Some(j) = self.objects.get_mut(&(Res::Jobs, job.to_string())) {
            j["status"] = json!({
                "active": 1,
                "ready": 0,
                "terminating": 0,
                "startTime": now,
                "uncountedTerminatedPods": {}
            });
            j["metadata"]["resourceVersion"] = json!(rv);
        }
        name
    }

    fn start_job(&mut self, job: &str) -> String {
        let pod = self.job_pod(job);
        self.start_pod(&pod);
        pod
    }

    /// Pending → Running (a Running pod stays as it is); the ready count of
    /// the Job that owns it follows.
    fn start_pod(&mut self, pod: &str) {
        let Some(current) = self.get(Res::Pods, pod) else {
            panic!("start_pod: no pod named {pod}");
        };
        let phase = str_at(current, "/status/phase");
        match phase.as_str() {
            "Running" => return,
            "Pending" => {}
            other => panic!("start_pod: the pod {pod} is already {other}"),
        }
        assert!(
            current["spec"]["nodeName"].is_string(),
            "start_pod: the pod {pod} is not scheduled"
        );
        let owner = current["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|refs| refs.iter().find(|r| r["kind"] == "Job"))
            .map(|r| str_at(r, "/name"));
        let now = now_iso();
        let rv = self.next_rv();
        if let Some(p) = self.objects.get_mut(&(Res::Pods, pod.to_string())) {
            p["status"]["phase"] = json!("Running");
            p["status"]["podIP"] = json!("10.244.0.17");
            p["status"]["podIPs"] = json!([{"ip": "10.244.0.17"}]);
            if let Some(conds) = p["status"]["conditions"].as_array_mut() {
                for c in conds.iter_mut() {
                    c["status"] = json!("True");
                    c["lastTransitionTime"] = json!(now);
                    if let Some(m) = c.as_object_mut() {
                        m.remove("reason");
                        m.remove("message");
                    }
                }
            }
            if let Some(statuses) = p["status"]["containerStatuses"].as_array_mut() {
                for s in statuses.iter_mut() {
                    s["ready"] = json!(true);
                    s["started"] = json!(true);
                    s["state"] = json!({"running": {"startedAt": now}});
                    s["containerID"] = json!(format!("containerd://{}", "0".repeat(64)));
                    s["imageID"] =
                        json!(format!("{}@sha256:{}", str_at(s, "/image"), "1".repeat(64)));
                }
            }
            p["metadata"]["resourceVersion"] = json!(rv);
        }
        if let Some(job) = owner {
            let rv = self.next_rv();
            if let Some(j) = self.objects.get_mut(&(Res::Jobs, job)) {
                j["status"]["ready"] = json!(1);
                j["metadata"]["resourceVersion"] = json!(rv);
            }
        }
    }

    /// End a pending or running pod: phase Succeeded or Failed, its
    /// containers terminated with `exit` (exit code, reason) or, without
    /// one, left as they are; `pod_reason` is the pod's own reason and
    /// message.
    fn end_pod(
        &mut self,
        pod: &str,
        succeeded: bool,
        exit: Option<(i64, &str)>,
        pod_reason: Option<(&str, &str)>,
    ) {
        let phase = str_at(
            self.get(Res::Pods, pod)
                .unwrap_or_else(|| panic!("no pod named {pod}")),
            "/status/phase",
        );
        assert!(
            phase == "Pending" || phase == "Running",
            "the pod {pod} is already {phase}"
        );
        let now = now_iso();
        let rv = self.next_rv();
        if let Some(p) = self.objects.get_mut(&(Res::Pods, pod.to_string())) {
            p["status"]["phase"] = json!(if succeeded { "Succeeded" } else { "Failed" });
            if let Some((reason, message)) = pod_reason {
                p["status"]["reason"] = json!(reason);
                p["status"]["message"] = json!(message);
            }
            if let Some(conds) = p["status"]["conditions"].as_array_mut() {
                for c in conds.iter_mut() {
                    let t = str_at(c, "/type");
                    if t == "Ready" || t == "ContainersReady" {
                        c["status"] = json!("False");
                        c["reason"] = json!(if succeeded {
                            "PodCompleted"
                        } else {
                            "PodFailed"
                        });
                        c["lastTransitionTime"] = json!(now);
                    }
                }
            }
            if let Some(statuses) = p["status"]["containerStatuses"].as_array_mut() {
                for s in statuses.iter_mut() {
                    s["ready"] = json!(false);
                    s["started"] = json!(false);
                    let Some((code, reason)) = exit else {
                        continue;
                    };
                    let started = s["state"]["running"]["startedAt"].clone();
                    let started = if started.is_null() {
                        json!(now)
                    } else {
                        started
                    };
                    s["state"] = json!({"terminated": {
                        "exitCode": code,
                        "reason": reason,
                        "startedAt": started,
                        "finishedAt": now,
                        "containerID": format!("containerd://{}", "0".repeat(64))
                    }});
                }
            }
            if let Some(m) = p["metadata"].as_object_mut() {
                m.remove("finalizers");
            }
            p["metadata"]["resourceVersion"] = json!(rv);
        }
    }

    fn pending_pod_mut(&mut self, pod: &str, hook: &str) -> &mut Value {
        let p = self
            .objects
            .get_mut(&(Res::Pods, pod.to_string()))
            .unwrap_or_else(|| panic!("{hook}: no pod named {pod}"));
        let phase = str_at(p, "/status/phase");
        assert_eq!(phase, "Pending", "{hook}: the pod {pod} is {phase}");
        p
    }

    fn set_waiting(&mut self, pod: &str, reason: &str, message: &str) {
        let rv = self.next_rv();
        let p = self.pending_pod_mut(pod, "set_waiting");
        let statuses = p["status"]["containerStatuses"]
            .as_array_mut()
            .unwrap_or_else(|| panic!("set_waiting: the pod {pod} is not scheduled"));
        for s in statuses.iter_mut() {
            s["state"] = json!({"waiting": {"reason": reason, "message": message}});
        }
        p["metadata"]["resourceVersion"] = json!(rv);
    }

    fn set_unschedulable(&mut self, pod: &str, message: &str) {
        let rv = self.next_rv();
        let now = now_iso();
        let p = self.pending_pod_mut(pod, "set_unschedulable");
        if let Some(spec) = p["spec"].as_object_mut() {
            spec.remove("nodeName");
        }
        if let Some(status) = p["status"].as_object_mut() {
            for k in ["hostIP", "startTime", "containerStatuses"] {
                status.remove(k);
            }
            status.insert(
                "conditions".into(),
                json!([{"type": "PodScheduled", "status": "False", "lastProbeTime": null,
                        "lastTransitionTime": now, "reason": "Unschedulable",
                        "message": message}]),
            );
        }
        p["metadata"]["resourceVersion"] = json!(rv);
    }

    fn append_log(&mut self, pod: &str, lines: &[&str]) {
        let container = self
            .get(Res::Pods, pod)
            .map(|p| containers_of(&p["spec"]))
            .and_then(|c| c.into_iter().next())
            .unwrap_or_else(|| panic!("append_log: no pod named {pod}"));
        let log = self
            .logs
            .entry(pod.to_string())
            .or_default()
            .entry(container)
            .or_default();
        for line in lines {
            log.push(LogLine {
                time: now_iso_nanos(),
                text: format!("{line}\n"),
            });
        }
    }

    fn finish_job(&mut self, job: &str, succeed: bool) {
        let pod = self.job_pod(job);
        let now = now_iso();
        let exit = if succeed {
            (0, "Completed")
        } else {
            (1, "Error")
        };
        self.end_pod(&pod, succeed, Some(exit), None);
        let rv = self.next_rv();
        if let Some(j) = self.objects.get_mut(&(Res::Jobs, job.to_string())) {
            let start = j["status"]["startTime"].clone();
            let mut status = json!({
                "ready": 0,
                "terminating": 0,
                "startTime": if start.is_null() { json!(now) } else { start },
                "uncountedTerminatedPods": {}
            });
            if succeed {
                status["succeeded"] = json!(1);
                status["completionTime"] = json!(now);
                status["conditions"] = json!([
                    {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods",
                     "lastProbeTime": now, "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods",
                     "lastProbeTime": now, "lastTransitionTime": now}
                ]);
            } else {
                status["failed"] = json!(1);
                status["conditions"] = json!([
                    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit",
                     "lastProbeTime": now, "lastTransitionTime": now},
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit",
                     "lastProbeTime": now, "lastTransitionTime": now}
                ]);
            }
            j["status"] = status;
            j["metadata"]["resourceVersion"] = json!(rv);
        }
    }
}

/// What admission and the scheduler add to a new pod's spec: the API
/// server's defaults, the namespace's default service account, the
/// DefaultTolerationSeconds tolerations, priority, and a node.
fn admit_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default_pod_spec(spec);
    set_default(spec, "serviceAccountName", json!("default"));
    spec["serviceAccount"] = spec["serviceAccountName"].clone();
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    set_default(spec, "priority", json!(0));
    let mut tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if !tolerations.iter().any(|t| t["key"] == key) {
            tolerations.push(json!({"key": key, "operator": "Exists",
                                    "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
    spec["tolerations"] = json!(tolerations);
    spec["nodeName"] = json!("fake-node");
}

/// The status of a pod bound to a node whose containers are being created.
fn pending_status(spec: &Value, now: &str) -> Value {
    let containers = containers_of(spec);
    let statuses: Vec<Value> = containers
        .iter()
        .zip(spec["containers"].as_array().cloned().unwrap_or_default())
        .map(|(c, spec)| {
            json!({
                "name": c,
                "image": spec["image"].clone(),
                "imageID": "",
                "ready": false,
                "restartCount": 0,
                "started": false,
                "state": {"waiting": {"reason": "ContainerCreating"}}
            })
        })
        .collect();
    let unready = format!("containers with unready status: [{}]", containers.join(" "));
    json!({
        "phase": "Pending",
        "qosClass": qos_class(spec),
        "hostIP": "10.0.0.10",
        "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastProbeTime": null,
             "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastProbeTime": null,
             "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "lastProbeTime": null,
             "lastTransitionTime": now, "reason": "ContainersNotReady",
             "message": unready},
            {"type": "ContainersReady", "status": "False", "lastProbeTime": null,
             "lastTransitionTime": now, "reason": "ContainersNotReady",
             "message": unready}
        ],
        "containerStatuses": statuses
    })
}

/// Guaranteed when every container's CPU and memory limits are set and its
/// requests (if given) equal them, BestEffort without any, Burstable
/// otherwise.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .collect();
    let set = |c: &Value, kind: &str, r: &str| !c["resources"][kind][r].is_null();
    let none = containers.iter().all(|c| {
        ["requests", "limits"]
            .iter()
            .all(|k| c["resources"][*k].as_object().is_none_or(Map::is_empty))
    });
    if none {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            set(c, "limits", r)
                && (!set(c, "requests", r)
                    || c["resources"]["requests"][*r] == c["resources"]["limits"][*r])
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn containers_of(pod_spec: &Value) -> Vec<String> {
    pod_spec["containers"]
        .as_array()
        .map(|cs| cs.iter().map(|c| str_at(c, "/name")).collect())
        .unwrap_or_default()
}

fn owned_by(obj: &Value, uid: &str) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
}

fn str_at(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

// ---------------------------------------------------------------------------
// Answers

/// What one request is answered with.
enum Reply {
    Json {
        status: u16,
        headers: Vec<(String, String)>,
        body: Value,
    },
    /// A log read without `follow`.
    Text(String),
    /// A followed log: what is there now, then lines as they come until the
    /// pod ends.
    Follow {
        pod: String,
        container: String,
        sent: usize,
        initial: String,
        timestamps: bool,
    },
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply::Json {
            status,
            headers: Vec::new(),
            body,
        }
    }

    fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Json { headers, .. } = &mut self {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }

    fn warning(self, text: &str) -> Reply {
        let value = format!("299 - {}", serde_json::to_string(text).unwrap_or_default());
        self.header("Warning", &value)
    }

    fn status(&self) -> u16 {
        match self {
            Reply::Json { status, .. } => *status,
            _ => 200,
        }
    }
}

fn failure(code: u16, reason: &str, message: &str, details: Option<Value>) -> Reply {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code
    });
    if let Some(d) = details {
        body["details"] = d;
    }
    Reply::json(code, body)
}

fn success(res: Res, name: &str, uid: &str) -> Reply {
    let mut details = resource_details(res, name);
    details["uid"] = json!(uid);
    Reply::json(
        200,
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details
        }),
    )
}

fn resource_details(res: Res, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": res.plural()});
    if !res.group().is_empty() {
        d["group"] = json!(res.group());
    }
    d
}

fn not_found(res: Res, name: &str) -> Reply {
    failure(
        404,
        "NotFound",
        &format!("{} {name:?} not found", res.qualified()),
        Some(resource_details(res, name)),
    )
}

fn no_route() -> Reply {
    failure(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

fn already_exists(res: Res, name: &str) -> Reply {
    failure(
        409,
        "AlreadyExists",
        &format!("{} {name:?} already exists", res.qualified()),
        Some(resource_details(res, name)),
    )
}

fn conflict(res: Res, name: &str, why: &str) -> Reply {
    failure(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} {name:?}: {why}",
            res.qualified()
        ),
        Some(resource_details(res, name)),
    )
}

fn bad_request(message: &str) -> Reply {
    failure(400, "BadRequest", message, None)
}

/// One validation error, as `field.Error` renders it.
#[derive(Debug, Clone)]
struct FieldError {
    field: String,
    reason: &'static str,
    body: String,
}

impl FieldError {
    fn required(field: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueRequired",
            body: with_detail("Required value".into(), detail),
        }
    }

    fn invalid(field: &str, value: &Value, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueInvalid",
            body: with_detail(format!("Invalid value: {}", go_repr(value)), detail),
        }
    }

    fn duplicate(field: &str, value: &Value) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueDuplicate",
            body: format!("Duplicate value: {}", go_repr(value)),
        }
    }

    fn not_supported(field: &str, value: &Value, supported: &[&str]) -> FieldError {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        FieldError {
            field: field.to_string(),
            reason: "FieldValueNotSupported",
            body: format!(
                "Unsupported value: {}: supported values: {}",
                go_repr(value),
                list.join(", ")
            ),
        }
    }

    fn too_long(field: &str, max: usize) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueTooLong",
            body: format!("Too long: may not be more than {max} bytes"),
        }
    }

    fn not_found(field: &str, value: &Value) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueNotFound",
            body: format!("Not found: {}", go_repr(value)),
        }
    }

    fn forbidden(field: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueForbidden",
            body: with_detail("Forbidden".into(), detail),
        }
    }
}

fn with_detail(head: String, detail: &str) -> String {
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {detail}")
    }
}

fn join_errors(errors: &[FieldError]) -> String {
    let list: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.body))
        .collect();
    if list.len() == 1 {
        list[0].clone()
    } else {
        format!("[{}]", list.join(", "))
    }
}

/// 422 Invalid, `Kind.group "name" is invalid: field: ...`.
fn invalid(
    qualified_kind: &str,
    kind: &str,
    group: &str,
    name: &str,
    errors: &[FieldError],
) -> Reply {
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({"reason": e.reason, "message": e.body, "field": e.field}))
        .collect();
    let mut details = json!({"name": name, "kind": kind, "causes": causes});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    failure(
        422,
        "Invalid",
        &format!(
            "{qualified_kind} {name:?} is invalid: {}",
            join_errors(errors)
        ),
        Some(details),
    )
}

fn invalid_object(res: Res, name: &str, errors: &[FieldError]) -> Reply {
    invalid(&res.qualified_kind(), res.kind(), res.group(), name, errors)
}

/// How Go's `%#v`/`%q` show a value in validation messages.
fn go_repr(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(m) if m.values().all(Value::is_string) => {
            let pairs: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or_default()))
                .collect();
            format!("map[string]string{{{}}}", pairs.join(", "))
        }
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// The HTTP side

/// The parts of a request the fake looks at.
struct Req {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    content_type: Option<String>,
    auth: Option<String>,
    user_agent: Option<String>,
    body: Bytes,
}

impl Req {
    /// The body as JSON, `None` when empty.
    fn json(&self) -> Option<Result<Value, String>> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        Some(serde_json::from_slice(&self.body).map_err(|e| e.to_string()))
    }

    /// The media type without parameters.
    fn media_type(&self) -> String {
        self.content_type
            .as_deref()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    fn call(&self, status: u16) -> Call {
        Call {
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            content_type: self.content_type.clone(),
            body: self.json().map(|r| {
                r.unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&self.body).into_owned())
                })
            }),
            status,
        }
    }
}

async fn handle(
    axum::extract::State(inner): axum::extract::State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let req = Req {
        method: method.as_str().to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(parse_query).unwrap_or_default(),
        content_type: header("content-type"),
        auth: header("authorization"),
        user_agent: header("user-agent"),
        body,
    };
    let reply = {
        let mut s = inner.lock();
        let reply = s.serve(&req);
        let call = req.call(reply.status());
        s.calls.push(call);
        reply
    };
    if req.method != "GET" {
        inner.bump();
    }
    match reply {
        Reply::Json {
            status,
            headers,
            body,
        } => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (
                code,
                [("content-type", "application/json")],
                body.to_string(),
            )
                .into_response();
            for (name, value) in headers {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    response.headers_mut().append(n, v);
                }
            }
            response
        }
        Reply::Text(text) => {
            (StatusCode::OK, [("content-type", "text/plain")], text).into_response()
        }
        Reply::Follow {
            pod,
            container,
            sent,
            initial,
            timestamps,
        } => {
            let follow = Follow {
                rx: inner.changed.subscribe(),
                inner: Arc::clone(&inner),
                pod,
                container,
                sent,
                pending: Some(initial),
                timestamps,
                done: false,
            };
            let stream = futures::stream::unfold(follow, Follow::next);
            (
                StatusCode::OK,
                [("content-type", "text/plain")],
                Body::from_stream(stream),
            )
                .into_response()
        }
    }
}

/// The state of one followed log stream.
struct Follow {
    inner: Arc<Inner>,
    rx: tokio::sync::watch::Receiver<u64>,
    pod: String,
    container: String,
    /// Lines already sent.
    sent: usize,
    pending: Option<String>,
    timestamps: bool,
    done: bool,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Follow)> {
        if let Some(initial) = self.pending.take()
            && !initial.is_empty()
        {
            return Some((Ok(Bytes::from(initial)), self));
        }
        loop {
            if self.done {
                return None;
            }
            self.rx.borrow_and_update();
            let (chunk, ended) = {
                let s = self.inner.lock();
                let lines = s.logs.get(&self.pod).and_then(|c| c.get(&self.container));
                let chunk: String = lines
                    .map(|l| {
                        l.iter()
                            .skip(self.sent)
                            .map(|l| render_line(l, self.timestamps))
                            .collect()
                    })
                    .unwrap_or_default();
                self.sent = lines.map(Vec::len).unwrap_or(0);
                let phase = s
                    .get(Res::Pods, &self.pod)
                    .map(|p| str_at(p, "/status/phase"));
                let ended =
                    s.closing || !matches!(phase.as_deref(), Some("Running") | Some("Pending"));
                (chunk, ended)
            };
            self.done = ended;
            if !chunk.is_empty() {
                return Some((Ok(Bytes::from(chunk)), self));
            }
            if ended {
                return None;
            }
            if self.rx.changed().await.is_err() {
                return None;
            }
        }
    }
}

fn render_line(line: &LogLine, timestamps: bool) -> String {
    if timestamps {
        format!("{} {}", line.time, line.text)
    } else {
        line.text.clone()
    }
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi * 16 + lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a resource URL names, as the API server's RequestInfo does.
struct Target {
    group: String,
    version: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    if rest.is_empty() || rest.iter().any(|s| s.is_empty()) {
        return None;
    }
    let (namespace, rest) = if rest[0] == "namespaces" && rest.len() >= 3 {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.len() > 3 {
        return None;
    }
    Some(Target {
        group: group.to_string(),
        version: version.to_string(),
        namespace,
        resource: rest[0].to_string(),
        name: rest.get(1).map(|s| percent_decode(s)),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true") | Some("1"))
}

impl State {
    fn serve(&mut self, req: &Req) -> Reply {
        if req.auth.as_deref() != Some(format!("Bearer {TOKEN}").as_str()) {
            return failure(401, "Unauthorized", "Unauthorized", None);
        }
        if let Some(i) = self.faults.iter().position(|f| {
            f.remaining > 0
                && (f.method == "*" || f.method == req.method)
                && req.path.starts_with(&f.prefix)
        }) {
            let status = self.faults[i].status;
            self.faults[i].remaining -= 1;
            if self.faults[i].remaining == 0 {
                self.faults.remove(i);
            }
            return injected(status);
        }
        if let Some(reply) = discovery(&req.method, &req.path) {
            return reply;
        }
        let Some(target) = parse_target(&req.path) else {
            return no_route();
        };
        let verb = match (req.method.as_str(), target.name.is_some()) {
            ("GET", true) => "get",
            ("GET", false) if is_true(req.query.get("watch")) => "watch",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => {
                return failure(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                    Some(json!({})),
                );
            }
        };
        if let Some(reply) = authorize(&self.role, &target, verb) {
            return reply;
        }
        let Some(res) = Res::from_url(&target.group, &target.version, &target.resource) else {
            return no_route();
        };
        let name = target.name.clone().unwrap_or_default();
        match (verb, target.subresource.as_deref()) {
            ("get", Some("log")) if res == Res::Pods => self.logs_of(&name, &req.query),
            (_, Some(_)) => no_route(),
            ("get", None) => match self.get(res, &name) {
                Some(obj) => Reply::json(200, obj.clone()),
                None => not_found(res, &name),
            },
            ("list", None) => self.list(res, &req.query),
            ("create", None) if target.name.is_none() => self.create(res, req),
            ("patch", None) => self.patch(res, &name, req),
            ("delete", None) => self.delete(res, &name, req),
            _ => failure(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                Some(json!({})),
            ),
        }
    }
}

/// The Status of an injected failure.
fn injected(status: u16) -> Reply {
    match status {
        429 => failure(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
            Some(json!({"retryAfterSeconds": 1})),
        )
        .header("Retry-After", "1"),
        500 => failure(
            500,
            "InternalError",
            "Internal error occurred: injected failure",
            Some(json!({"causes": [{"message": "injected failure"}]})),
        ),
        503 => failure(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            None,
        ),
        504 => failure(
            504,
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request",
            None,
        ),
        other => {
            let reason = match other {
                400 => "BadRequest",
                401 => "Unauthorized",
                403 => "Forbidden",
                404 => "NotFound",
                409 => "Conflict",
                410 => "Expired",
                422 => "Invalid",
                _ => "InternalError",
            };
            failure(other, reason, &format!("injected failure ({other})"), None)
        }
    }
}

/// The hub's Role, as the RBAC authorizer applies it.
fn authorize(role: &[Rule], target: &Target, verb: &str) -> Option<Reply> {
    let resource = match &target.subresource {
        Some(sub) => format!("{}/{sub}", target.resource),
        None => target.resource.clone(),
    };
    let allowed = target.namespace.as_deref() == Some(NAMESPACE)
        && role.iter().any(|(g, r, verbs)| {
            *g == target.group && *r == resource && verbs.iter().any(|v| v == verb)
        });
    if allowed {
        return None;
    }
    let gr = qualify(&target.resource, &target.group);
    let subject = match &target.name {
        Some(n) => format!("{gr} {n:?}"),
        None => gr,
    };
    let scope = match &target.namespace {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_string(),
    };
    let mut details = json!({"kind": target.resource});
    if let Some(n) = &target.name {
        details["name"] = json!(n);
    }
    if !target.group.is_empty() {
        details["group"] = json!(target.group);
    }
    Some(failure(
        403,
        "Forbidden",
        &format!(
            "{subject} is forbidden: User {USER:?} cannot {verb} resource {resource:?} in API group {:?} {scope}",
            target.group
        ),
        Some(details),
    ))
}

/// `/version`, `/api`, `/apis` and the group versions' resource lists.
fn discovery(method: &str, path: &str) -> Option<Reply> {
    if method != "GET" {
        return None;
    }
    let resources = |gv: &str, list: &[(&str, &str, &str, &[&str])]| {
        let resources: Vec<Value> = list
            .iter()
            .map(|(name, singular, kind, verbs)| {
                json!({"name": name, "singularName": singular, "namespaced": true,
                       "kind": kind, "verbs": verbs})
            })
            .collect();
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
               "resources": resources})
    };
    let all: &[&str] = &[
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    let body = match path.trim_end_matches('/') {
        "/version" => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2", "compiler": "gc",
            "platform": "linux/amd64"
        }),
        "/api" => json!({"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": []}),
        "/apis" => json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
             "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}},
            {"name": "batch", "versions": [{"groupVersion": "batch/v1", "version": "v1"}],
             "preferredVersion": {"groupVersion": "batch/v1", "version": "v1"}}
        ]}),
        "/api/v1" => resources(
            "v1",
            &[
                ("configmaps", "configmap", "ConfigMap", all),
                ("pods", "pod", "Pod", all),
                ("pods/log", "", "Pod", &["get"]),
            ],
        ),
        "/apis/apps/v1" => resources("apps/v1", &[("daemonsets", "daemonset", "DaemonSet", all)]),
        "/apis/batch/v1" => resources("batch/v1", &[("jobs", "job", "Job", all)]),
        _ => return None,
    };
    Some(Reply::json(200, body))
}

// ---------------------------------------------------------------------------
// Verbs

impl State {
    fn list(&self, res: Res, query: &BTreeMap<String, String>) -> Reply {
        let selector = match query.get("labelSelector").map(|s| parse_selector(s)) {
            Some(Ok(s)) => s,
            Some(Err(e)) => return bad_request(&format!("unable to parse requirement: {e}")),
            None => Vec::new(),
        };
        let fields = match query
            .get("fieldSelector")
            .map(|s| parse_field_selector(res, s))
        {
            Some(Ok(f)) => f,
            Some(Err(e)) => return bad_request(&e),
            None => Vec::new(),
        };
        let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
            Some(Ok(l)) if l > 0 => Some(l),
            Some(Ok(_)) | None => None,
            Some(Err(_)) => return bad_request("limit: invalid value"),
        };
        let after = query.get("continue").cloned().unwrap_or_default();
        let mut items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((r, n), _)| *r == res && (after.is_empty() || n.as_str() > after.as_str()))
            .map(|(_, v)| v)
            .filter(|v| selector.iter().all(|r| r.matches(&v["metadata"]["labels"])))
            .filter(|v| fields.iter().all(|f| f.matches(v)))
            .map(|v| {
                // List items carry no apiVersion and kind, as on a real server.
                let mut v = v.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("apiVersion");
                    m.remove("kind");
                }
                v
            })
            .collect();
        let mut metadata = json!({"resourceVersion": self.rv.to_string()});
        if let Some(limit) = limit
            && items.len() > limit
        {
            let remaining = items.len() - limit;
            items.truncate(limit);
            let last = items
                .last()
                .map(|v| str_at(v, "/metadata/name"))
                .unwrap_or_default();
            metadata["continue"] = json!(last);
            metadata["remainingItemCount"] = json!(remaining);
        }
        Reply::json(
            200,
            json!({
                "kind": format!("{}List", res.kind()),
                "apiVersion": res.api_version(),
                "metadata": metadata,
                "items": items
            }),
        )
    }

    fn create(&mut self, res: Res, req: &Req) -> Reply {
        if req.media_type() != "application/json" {
            return unsupported_media(&req.media_type());
        }
        let body = match req.json() {
            Some(Ok(Value::Object(m))) => m,
            Some(Ok(_)) | None => {
                return bad_request("the body of the request must be a JSON object");
            }
            Some(Err(e)) => return bad_request(&format!("error decoding the body: {e}")),
        };
        let options = match WriteOptions::parse(&req.query) {
            Ok(o) => o,
            Err(r) => return r,
        };
        if let Err(r) = check_type(res, &body, false) {
            return r;
        }
        let unknown = unknown_fields(res, &body);
        let (body, warnings) = match handle_unknown(res, body, unknown, options.validation, false) {
            Ok(x) => x,
            Err(r) => return r,
        };
        if let Some(ns) = body
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            && ns != NAMESPACE
        {
            return bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            );
        }
        let given = body
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let generate = body
            .get("metadata")
            .and_then(|m| m.get("generateName"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = if !given.is_empty() {
            given
        } else if !generate.is_empty() {
            self.generate_name(&generate)
        } else {
            return invalid_object(
                res,
                "",
                &[FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            );
        };
        if self.get(res, &name).is_some() {
            return already_exists(res, &name);
        }
        let mut obj = normalize(res, &body);
        obj["metadata"]["name"] = json!(name);
        let uid = self.uid();
        if res == Res::Jobs {
            if let Some(errors) = job_selector_errors(&obj) {
                return invalid_object(res, &name, &errors);
            }
            prepare_job(&mut obj, &uid);
        }
        default_object(res, &mut obj);
        let errors = validate(res, &obj, None);
        if !errors.is_empty() {
            return invalid_object(res, &name, &errors);
        }
        let manager = options
            .manager
            .clone()
            .unwrap_or_else(|| default_manager(req.user_agent.as_deref()));
        let managers = vec![Manager {
            name: manager,
            operation: Op::Update,
            api_version: res.api_version().to_string(),
            time: now_iso(),
            fields: owned_leaf_paths(res, &obj),
        }];
        let meta = &mut obj["metadata"];
        meta["namespace"] = json!(NAMESPACE);
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] = json!(now_iso());
        if res.has_generation() {
            meta["generation"] = json!(1);
        }
        meta["managedFields"] = managed_fields_json(Some(&managers));
        initial_status(res, &mut obj);
        if res == Res::Pods {
            // Admission, then the scheduler: the pod waits on its node.
            admit_pod_spec(&mut obj["spec"]);
            obj["status"] = pending_status(&obj["spec"], &now_iso());
        }
        let mut reply_obj = obj.clone();
        if !options.dry_run {
            let rv = self.next_rv();
            obj["metadata"]["resourceVersion"] = json!(rv);
            let key = (res, name.clone());
            self.objects.insert(key.clone(), obj);
            self.managers.insert(key, managers);
            if res == Res::Jobs {
                self.spawn_job_pod(&name);
            }
            if res == Res::Pods {
                let containers = self
                    .get(res, &name)
                    .map(|p| containers_of(&p["spec"]))
                    .unwrap_or_default();
                self.logs.insert(
                    name.clone(),
                    containers.into_iter().map(|c| (c, Vec::new())).collect(),
                );
            }
            reply_obj = self.get(res, &name).cloned().unwrap_or(Value::Null);
        }
        let mut reply = Reply::json(201, reply_obj);
        for w in warnings {
            reply = reply.warning(&w);
        }
        reply
    }

    fn patch(&mut self, res: Res, name: &str, req: &Req) -> Reply {
        match req.media_type().as_str() {
            "application/apply-patch+yaml" => {}
            t @ ("application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/json-patch+json") => {
                return failure(
                    415,
                    "UnsupportedMediaType",
                    &format!(
                        "the fake API server implements only server-side apply \
                         (application/apply-patch+yaml), not {t}"
                    ),
                    None,
                );
            }
            other => return unsupported_media(other),
        }
        let body = match req.json() {
            Some(Ok(Value::Object(m))) => m,
            Some(Ok(_)) | None => {
                return bad_request("the apply patch must be an object");
            }
            Some(Err(e)) => {
                return bad_request(&format!(
                    "error decoding YAML: the fake API server accepts JSON apply bodies only: {e}"
                ));
            }
        };
        let options = match WriteOptions::parse(&req.query) {
            Ok(o) => o,
            Err(r) => return r,
        };
        let Some(manager) = options.manager.clone() else {
            return invalid(
                "PatchOptions.meta.k8s.io",
                "PatchOptions",
                "meta.k8s.io",
                "",
                &[FieldError::required(
                    "fieldManager",
                    "is required for apply patch",
                )],
            );
        };
        if let Err(r) = check_type(res, &body, true) {
            return r;
        }
        let unknown = unknown_fields(res, &body);
        let (body, warnings) = match handle_unknown(res, body, unknown, options.validation, true) {
            Ok(x) => x,
            Err(r) => return r,
        };
        let meta = body.get("metadata").cloned().unwrap_or(json!({}));
        let body_name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
        if body_name != name {
            return bad_request(&format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            ));
        }
        if let Some(ns) = meta.get("namespace").and_then(Value::as_str)
            && ns != NAMESPACE
        {
            return bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            );
        }
        if meta.get("managedFields").is_some_and(|m| !m.is_null()) {
            return bad_request("metadata.managedFields must be nil");
        }
        let current = self.get(res, name).cloned();
        if let Some(uid) = meta.get("uid").and_then(Value::as_str) {
            let stored = current
                .as_ref()
                .map(|c| str_at(c, "/metadata/uid"))
                .unwrap_or_default();
            if uid != stored {
                return conflict(
                    res,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {stored}"
                    ),
                );
            }
        }
        if let Some(rv) = meta.get("resourceVersion").and_then(Value::as_str) {
            let stored = current
                .as_ref()
                .map(|c| str_at(c, "/metadata/resourceVersion"));
            if stored.as_deref() != Some(rv) {
                return conflict(
                    res,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                );
            }
        }

        let key = (res, name.to_string());
        let old_managers = self.managers.get(&key).cloned().unwrap_or_default();
        let mut managers = old_managers.clone();
        let view = managed_view(res, &body);
        let mut leaves = Vec::new();
        flatten(&view, &mut Vec::new(), &mut leaves);
        let applied: BTreeSet<FPath> = leaves.iter().map(|(p, _)| p.clone()).collect();
        let base = current.clone().unwrap_or_else(|| {
            json!({"apiVersion": res.api_version(), "kind": res.kind(),
                   "metadata": {"name": name}})
        });

        // Conflicts with the fields other managers own.
        let mut conflicts: Vec<(usize, FPath)> = Vec::new();
        for (i, m) in managers.iter().enumerate() {
            if m.name == manager && m.operation == Op::Apply {
                continue;
            }
            for q in m.fields.iter().filter(|q| !is_marker(q)) {
                let hit = leaves
                    .iter()
                    .filter(|(p, _)| !is_marker(p))
                    .any(|(p, v)| conflicts_with(q, p, v, &base));
                if hit && !conflicts.iter().any(|(j, c)| *j == i && c == q) {
                    conflicts.push((i, q.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !options.force {
            return apply_conflict(&managers, &conflicts);
        }
        for (i, q) in &conflicts {
            managers[*i].fields.remove(q);
        }

        // Fields this manager stops applying go, unless someone else owns
        // them (or something below them).
        let mine = managers
            .iter()
            .position(|m| m.name == manager && m.operation == Op::Apply);
        let previous: BTreeSet<FPath> =
            mine.map(|i| managers[i].fields.clone()).unwrap_or_default();
        let others: BTreeSet<FPath> = managers
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != mine)
            .flat_map(|(_, m)| m.fields.iter().cloned())
            .collect();
        let owned = |p: &FPath| {
            applied.iter().any(|a| a.starts_with(p)) || others.iter().any(|o| o.starts_with(p))
        };
        let mut obj = base.clone();
        let mut removals: Vec<&FPath> = previous.iter().filter(|q| !owned(q)).collect();
        removals.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for q in removals {
            remove_path(&mut obj, q);
            let mut parent = q.clone();
            while parent.len() > 1 {
                parent.pop();
                let empty = match get_path(&obj, &parent) {
                    Some(Value::Object(m)) => m.is_empty(),
                    Some(Value::Array(a)) => a.is_empty(),
                    _ => false,
                };
                // An item of an associative list that nobody owns any more
                // goes whole, defaulted fields and all (as the real server
                // removes a container an applier stopped applying).
                if (empty || is_marker(&parent)) && !owned(&parent) {
                    remove_path(&mut obj, &parent);
                } else {
                    break;
                }
            }
        }
        for (p, v) in &leaves {
            set_path(&mut obj, p, v.clone());
        }
        let new_uid = if current.is_none() {
            self.uid()
        } else {
            String::new()
        };
        if res == Res::Jobs && current.is_none() {
            if let Some(errors) = job_selector_errors(&obj) {
                return invalid_object(res, name, &errors);
            }
            prepare_job(&mut obj, &new_uid);
        }
        if let Some(m) = obj["metadata"].as_object_mut() {
            for k in ["labels", "annotations"] {
                if m.get(k)
                    .is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
                    && !owned(&vec![Seg::Field("metadata".into()), Seg::Field(k.into())])
                {
                    m.remove(k);
                }
            }
        }
        default_object(res, &mut obj);
        let errors = validate(res, &obj, current.as_ref());
        if !errors.is_empty() {
            return invalid_object(res, name, &errors);
        }

        let now = now_iso();
        match mine {
            Some(i) => {
                managers[i].fields = applied;
            }
            None => managers.push(Manager {
                name: manager.clone(),
                operation: Op::Apply,
                api_version: res.api_version().to_string(),
                time: now.clone(),
                fields: applied,
            }),
        }
        managers.retain(|m| !m.fields.is_empty());
        if let Some(cur) = &current {
            let same_fields = managers.len() == old_managers.len()
                && managers.iter().zip(&old_managers).all(|(a, b)| {
                    a.name == b.name && a.operation == b.operation && a.fields == b.fields
                });
            if same_fields && without_volatile(cur) == without_volatile(&obj) {
                // A no-op apply writes nothing: same resourceVersion.
                let mut reply = Reply::json(200, cur.clone());
                for w in &warnings {
                    reply = reply.warning(w);
                }
                return reply;
            }
        }
        for m in managers.iter_mut() {
            if m.name == manager && m.operation == Op::Apply {
                m.time = now.clone();
            }
        }
        let generation = match &current {
            Some(c) => {
                let g = c["metadata"]["generation"].as_i64().unwrap_or(1);
                if c.get("spec") != obj.get("spec") {
                    g + 1
                } else {
                    g
                }
            }
            None => 1,
        };
        let meta = &mut obj["metadata"];
        meta["name"] = json!(name);
        meta["namespace"] = json!(NAMESPACE);
        if res.has_generation() {
            meta["generation"] = json!(generation);
        }
        meta["managedFields"] = managed_fields_json(Some(&managers));
        if current.is_none() {
            obj["metadata"]["uid"] = json!(new_uid);
            obj["metadata"]["creationTimestamp"] = json!(now);
            initial_status(res, &mut obj);
        }
        if !options.dry_run {
            let rv = self.next_rv();
            obj["metadata"]["resourceVersion"] = json!(rv);
            self.objects.insert(key.clone(), obj.clone());
            self.managers.insert(key, managers);
            if res == Res::Jobs && current.is_none() {
                self.spawn_job_pod(name);
                obj = self.get(res, name).cloned().unwrap_or(obj);
            }
        }
        let mut reply = Reply::json(if current.is_some() { 200 } else { 201 }, obj);
        for w in &warnings {
            reply = reply.warning(w);
        }
        reply
    }

    fn delete(&mut self, res: Res, name: &str, req: &Req) -> Reply {
        let body = match req.json() {
            Some(Ok(Value::Object(m))) => m,
            Some(Ok(_)) => return bad_request("the body of the request must be DeleteOptions"),
            Some(Err(e)) => return bad_request(&format!("error decoding DeleteOptions: {e}")),
            None => Map::new(),
        };
        if let Some(kind) = body.get("kind").and_then(Value::as_str)
            && kind != "DeleteOptions"
        {
            return bad_request(&format!(
                "the kind in the data ({kind}) does not match the expected kind (DeleteOptions)"
            ));
        }
        let mut policy = req.query.get("propagationPolicy").cloned().or_else(|| {
            body.get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        let orphan = req
            .query
            .get("orphanDependents")
            .map(|v| v == "true")
            .or_else(|| body.get("orphanDependents").and_then(Value::as_bool));
        if policy.is_none()
            && let Some(o) = orphan
        {
            policy = Some(if o { "Orphan" } else { "Background" }.to_string());
        }
        if let Some(p) = &policy
            && !["Foreground", "Background", "Orphan"].contains(&p.as_str())
        {
            return invalid(
                "DeleteOptions.meta.k8s.io",
                "DeleteOptions",
                "meta.k8s.io",
                "",
                &[FieldError::not_supported(
                    "propagationPolicy",
                    &json!(p),
                    &["Foreground", "Background", "Orphan", "nil"],
                )],
            );
        }
        let dry_run = req.query.get("dryRun").is_some_and(|v| v == "All")
            || body
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v == "All"));
        let Some(current) = self.get(res, name).cloned() else {
            return not_found(res, name);
        };
        let uid = str_at(&current, "/metadata/uid");
        let preconditions = body.get("preconditions").cloned().unwrap_or(Value::Null);
        if let Some(want) = preconditions.get("uid").and_then(Value::as_str)
            && want != uid
        {
            return conflict(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                ),
            );
        }
        let rv = str_at(&current, "/metadata/resourceVersion");
        if let Some(want) = preconditions.get("resourceVersion").and_then(Value::as_str)
            && want != rv
        {
            return conflict(
                res,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"
                ),
            );
        }
        let mut warning = None;
        let policy = match policy {
            Some(p) => p,
            // batch/v1 Jobs orphan their pods unless told otherwise.
            None if res == Res::Jobs => {
                warning = Some(
                    "child pods are preserved by default when jobs are deleted; set \
                     propagationPolicy=Background to remove them or set \
                     propagationPolicy=Orphan to suppress this warning",
                );
                "Orphan".to_string()
            }
            None => "Background".to_string(),
        };
        let mut reply = match policy.as_str() {
            // A pod's delete is graceful: the answer is the pod, terminating.
            "Background" if res == Res::Pods => {
                let mut obj = current.clone();
                let grace = body
                    .get("gracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
                    .unwrap_or(30);
                obj["metadata"]["deletionTimestamp"] = json!(now_iso());
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                Reply::json(200, obj)
            }
            "Background" => success(res, name, &uid),
            finalizer => {
                // Foreground and Orphan put a finalizer on the object; the
                // garbage collector here finishes at once, so the answer is
                // the object as it was while being deleted.
                let mut obj = current.clone();
                obj["metadata"]["deletionTimestamp"] = json!(now_iso());
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                let f = if finalizer == "Orphan" {
                    "orphan"
                } else {
                    "foregroundDeletion"
                };
                let mut finalizers = obj["metadata"]["finalizers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                finalizers.push(json!(f));
                obj["metadata"]["finalizers"] = json!(finalizers);
                Reply::json(200, obj)
            }
        };
        if let Some(w) = warning {
            reply = reply.warning(w);
        }
        if dry_run {
            return reply;
        }
        self.objects.remove(&(res, name.to_string()));
        self.managers.remove(&(res, name.to_string()));
        if res == Res::Pods {
            self.logs.remove(name);
        }
        self.collect_dependents(&uid, policy == "Orphan");
        reply
    }

    /// The garbage collector: delete (or orphan) what `uid` owns.
    fn collect_dependents(&mut self, uid: &str, orphan: bool) {
        let dependents: Vec<(Res, String)> = self
            .objects
            .iter()
            .filter(|(_, v)| owned_by(v, uid))
            .map(|(k, _)| k.clone())
            .collect();
        for (res, name) in dependents {
            if orphan {
                let rv = self.next_rv();
                if let Some(obj) = self.objects.get_mut(&(res, name.clone())) {
                    if let Some(refs) = obj["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| r["uid"] != uid);
                    }
                    if obj["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(Vec::is_empty)
                        && let Some(m) = obj["metadata"].as_object_mut()
                    {
                        m.remove("ownerReferences");
                    }
                    obj["metadata"]["resourceVersion"] = json!(rv);
                }
            } else if let Some(obj) = self.objects.remove(&(res, name.clone())) {
                self.managers.remove(&(res, name.clone()));
                if res == Res::Pods {
                    self.logs.remove(&name);
                }
                let child = str_at(&obj, "/metadata/uid");
                self.collect_dependents(&child, false);
            }
        }
    }

    fn logs_of(&self, pod: &str, query: &BTreeMap<String, String>) -> Reply {
        let Some(obj) = self.get(Res::Pods, pod) else {
            return not_found(Res::Pods, pod);
        };
        let containers = containers_of(&obj["spec"]);
        let container = match query.get("container") {
            Some(c) if !c.is_empty() => {
                if !containers.contains(c) {
                    return bad_request(&format!("container {c} is not valid for pod {pod}"));
                }
                c.clone()
            }
            _ if containers.len() == 1 => containers[0].clone(),
            _ => {
                return bad_request(&format!(
                    "a container name must be specified for pod {pod}, choose one of: [{}]",
                    containers.join(" ")
                ));
            }
        };
        if is_true(query.get("previous")) {
            return bad_request(&format!(
                "previous terminated container {container:?} in pod {pod:?} not found"
            ));
        }
        if str_at(obj, "/status/phase") == "Pending" {
            let reason = obj["status"]["containerStatuses"]
                .as_array()
                .and_then(|all| all.iter().find(|c| c["name"] == container.as_str()))
                .map(|c| str_at(c, "/state/waiting/reason"))
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "ContainerCreating".into());
            return bad_request(&format!(
                "container {container:?} in pod {pod:?} is waiting to start: {reason}"
            ));
        }
        let timestamps = is_true(query.get("timestamps"));
        let lines = self
            .logs
            .get(pod)
            .and_then(|c| c.get(&container))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let skip = match query.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
            Some(t) => lines.len().saturating_sub(t),
            None => 0,
        };
        let mut text: String = lines[skip..]
            .iter()
            .map(|l| render_line(l, timestamps))
            .collect();
        if let Some(limit) = query
            .get("limitBytes")
            .and_then(|l| l.parse::<usize>().ok())
            && text.len() > limit
        {
            let mut cut = limit;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        if is_true(query.get("follow")) {
            Reply::Follow {
                pod: pod.to_string(),
                container,
                sent: lines.len(),
                initial: text,
                timestamps,
            }
        } else {
            Reply::Text(text)
        }
    }
}

fn unsupported_media(media: &str) -> Reply {
    failure(
        415,
        "UnsupportedMediaType",
        &format!(
            "the body of the request was in an unknown format ({media}) - accepted media types \
             include: application/json-patch+json, application/merge-patch+json, \
             application/apply-patch+yaml"
        ),
        None,
    )
}

/// The manager of a write without `fieldManager`: what comes before the
/// first `/` of the User-Agent, as the API server derives it (kube-rs sends
/// no User-Agent, so that is the empty string).
fn default_manager(user_agent: Option<&str>) -> String {
    let ua = user_agent.unwrap_or_default();
    ua.split('/')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Validation {
    Strict,
    Warn,
    Ignore,
}

/// The query parameters of create and patch.
struct WriteOptions {
    manager: Option<String>,
    force: bool,
    dry_run: bool,
    validation: Validation,
}

impl WriteOptions {
    fn parse(query: &BTreeMap<String, String>) -> Result<WriteOptions, Reply> {
        let manager = query.get("fieldManager").filter(|m| !m.is_empty()).cloned();
        if let Some(m) = &manager
            && m.chars().count() > 128
        {
            return Err(invalid(
                "PatchOptions.meta.k8s.io",
                "PatchOptions",
                "meta.k8s.io",
                "",
                &[FieldError::too_long("fieldManager", 128)],
            ));
        }
        let force = match query.get("force").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(bad_request(&format!(
                    "force: invalid boolean value {other:?}"
                )));
            }
        };
        let dry_run = match query.get("dryRun").map(String::as_str) {
            None => false,
            Some("All") => true,
            Some(other) => {
                return Err(invalid(
                    "PatchOptions.meta.k8s.io",
                    "PatchOptions",
                    "meta.k8s.io",
                    "",
                    &[FieldError::not_supported("dryRun", &json!(other), &["All"])],
                ));
            }
        };
        let validation = match query.get("fieldValidation").map(String::as_str) {
            None | Some("Strict") => Validation::Strict,
            Some("Warn") => Validation::Warn,
            Some("Ignore") => Validation::Ignore,
            Some(other) => {
                return Err(bad_request(&format!(
                    "fieldValidation: invalid directive {other:?}: supported values: \"Ignore\", \"Warn\", \"Strict\""
                )));
            }
        };
        Ok(WriteOptions {
            manager,
            force,
            dry_run,
            validation,
        })
    }
}

/// apiVersion and kind must be present and those of the URL.
fn check_type(res: Res, body: &Map<String, Value>, apply: bool) -> Result<(), Reply> {
    let api_version = body
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind.is_empty() || api_version.is_empty() {
        let missing = if kind.is_empty() {
            "Kind"
        } else {
            "apiVersion"
        };
        let text = Value::Object(body.clone()).to_string();
        return Err(bad_request(&if apply {
            format!(
                "invalid object type: {api_version}, Kind={kind}: Object '{missing}' is missing"
            )
        } else {
            format!("Object '{missing}' is missing in '{text}'")
        }));
    }
    if api_version != res.api_version() && apply {
        return Err(bad_request(&format!(
            "Incorrect version specified in apply patch. Specified patch version: {api_version}, expected: {}",
            res.api_version()
        )));
    }
    if api_version != res.api_version() {
        return Err(bad_request(&format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            res.api_version()
        )));
    }
    if kind != res.kind() {
        return Err(bad_request(&format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            res.kind()
        )));
    }
    if body
        .get("metadata")
        .is_some_and(|m| !m.is_object() && !m.is_null())
    {
        return Err(bad_request("metadata: expected an object"));
    }
    Ok(())
}

/// One unknown field: how a create error names it
/// (`spec.template.spec.containers[0].imagee`), how an apply error names it
/// (`.spec.template.spec.containers[name="x"].imagee`), and where it is.
struct Unknown {
    dotted: String,
    apply: String,
    at: Vec<Step>,
}

#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn unknown_fields(res: Res, body: &Map<String, Value>) -> Vec<Unknown> {
    let mut out = Vec::new();
    let mut check = |obj: &Value, allowed: &[&str], dotted: &str, apply: &str, at: &[Step]| {
        let Some(m) = obj.as_object() else { return };
        for k in m.keys() {
            if !allowed.contains(&k.as_str()) {
                let mut at = at.to_vec();
                at.push(Step::Key(k.clone()));
                out.push(Unknown {
                    dotted: if dotted.is_empty() {
                        k.clone()
                    } else {
                        format!("{dotted}.{k}")
                    },
                    apply: format!("{apply}.{k}"),
                    at,
                });
            }
        }
    };
    let top = Value::Object(body.clone());
    check(&top, res.top_keys(), "", "", &[]);
    check(
        &top["metadata"],
        META_KEYS,
        "metadata",
        ".metadata",
        &[Step::Key("metadata".into())],
    );
    let k = |s: &str| Step::Key(s.to_string());
    if res == Res::Pods {
        check(&top["spec"], POD_SPEC_KEYS, "spec", ".spec", &[k("spec")]);
        for list in ["initContainers", "containers"] {
            let Some(items) = top["spec"][list].as_array() else {
                continue;
            };
            for (i, c) in items.iter().enumerate() {
                let apply = match c.get("name").and_then(Value::as_str) {
                    Some(n) => format!(".spec.{list}[name={n:?}]"),
                    None => format!(".spec.{list}[{i}]"),
                };
                check(
                    c,
                    CONTAINER_KEYS,
                    &format!("spec.{list}[{i}]"),
                    &apply,
                    &[k("spec"), k(list), Step::Index(i)],
                );
            }
        }
        return out;
    }
    let spec_keys = match res {
        Res::DaemonSets => DAEMONSET_SPEC_KEYS,
        Res::Jobs => JOB_SPEC_KEYS,
        _ => return out,
    };
    check(&top["spec"], spec_keys, "spec", ".spec", &[k("spec")]);
    let template = &top["spec"]["template"];
    check(
        template,
        TEMPLATE_KEYS,
        "spec.template",
        ".spec.template",
        &[k("spec"), k("template")],
    );
    check(
        &template["metadata"],
        META_KEYS,
        "spec.template.metadata",
        ".spec.template.metadata",
        &[k("spec"), k("template"), k("metadata")],
    );
    let pod = [k("spec"), k("template"), k("spec")];
    check(
        &template["spec"],
        POD_SPEC_KEYS,
        "spec.template.spec",
        ".spec.template.spec",
        &pod,
    );
    for list in ["initContainers", "containers"] {
        let Some(items) = template["spec"][list].as_array() else {
            continue;
        };
        for (i, c) in items.iter().enumerate() {
            let mut at = pod.to_vec();
            at.push(k(list));
            at.push(Step::Index(i));
            let apply = match c.get("name").and_then(Value::as_str) {
                Some(n) => format!(".spec.template.spec.{list}[name={n:?}]"),
                None => format!(".spec.template.spec.{list}[{i}]"),
            };
            check(
                c,
                CONTAINER_KEYS,
                &format!("spec.template.spec.{list}[{i}]"),
                &apply,
                &at,
            );
        }
    }
    out
}

/// Reject unknown fields (Strict), or drop them with a warning (Warn) or
/// silently (Ignore).
fn handle_unknown(
    res: Res,
    mut body: Map<String, Value>,
    unknown: Vec<Unknown>,
    validation: Validation,
    apply: bool,
) -> Result<(Map<String, Value>, Vec<String>), Reply> {
    if unknown.is_empty() {
        return Ok((body, Vec::new()));
    }
    if validation == Validation::Strict {
        let message = if apply {
            if unknown.len() == 1 {
                format!(
                    "failed to create typed patch object ({}): {}: field not declared in schema",
                    res.gvk(),
                    unknown[0].apply
                )
            } else {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|u| format!("  {}: field not declared in schema", u.apply))
                    .collect();
                format!(
                    "failed to create typed patch object ({}): errors:\n{}",
                    res.gvk(),
                    list.join("\n")
                )
            }
        } else {
            let list: Vec<String> = unknown
                .iter()
                .map(|u| format!("unknown field {:?}", u.dotted))
                .collect();
            format!(
                "{kind} in version \"v1\" cannot be handled as a {kind}: strict decoding error: {}",
                list.join(", "),
                kind = res.kind()
            )
        };
        return Err(bad_request(&message));
    }
    let mut warnings = Vec::new();
    for u in &unknown {
        let mut root = Value::Object(std::mem::take(&mut body));
        remove_step_path(&mut root, &u.at);
        if let Value::Object(m) = root {
            body = m;
        }
        if validation == Validation::Warn {
            warnings.push(format!("unknown field {:?}", u.dotted));
        }
    }
    Ok((body, warnings))
}

fn remove_step_path(v: &mut Value, at: &[Step]) {
    let Some((last, parents)) = at.split_last() else {
        return;
    };
    let mut cur = v;
    for step in parents {
        cur = match step {
            Step::Key(k) => match cur.get_mut(k) {
                Some(c) => c,
                None => return,
            },
            Step::Index(i) => match cur.get_mut(*i) {
                Some(c) => c,
                None => return,
            },
        };
    }
    if let (Step::Key(k), Some(m)) = (last, cur.as_object_mut()) {
        m.remove(k);
    }
}

/// A 409 for an apply that would change fields other managers own.
fn apply_conflict(managers: &[Manager], conflicts: &[(usize, FPath)]) -> Reply {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(i, p)| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {}", managers[*i].display()),
                "field": display_fpath(p)
            })
        })
        .collect();
    let message = if conflicts.len() == 1 {
        let (i, p) = &conflicts[0];
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            managers[*i].display(),
            display_fpath(p)
        )
    } else {
        let mut by_manager: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, p) in conflicts {
            by_manager
                .entry(managers[*i].display())
                .or_default()
                .push(display_fpath(p));
        }
        let mut lines = Vec::new();
        for (m, paths) in by_manager {
            lines.push(format!("conflicts with {m}:"));
            for p in paths {
                lines.push(format!("- {p}"));
            }
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    failure(409, "Conflict", &message, Some(json!({"causes": causes})))
}

/// Whether applying `v` at `p` changes a field `q` someone else owns.
fn conflicts_with(q: &FPath, p: &FPath, v: &Value, base: &Value) -> bool {
    if q == p {
        let current = get_path(base, p);
        if v.as_object().is_some_and(Map::is_empty) {
            // Owning an empty struct does not touch what is inside it.
            return !current.is_some_and(Value::is_object);
        }
        current != Some(v)
    } else if p.starts_with(q) {
        // The other manager owns an atomic value above the applied field.
        get_path(base, q).is_some_and(|c| !c.is_object())
    } else if q.starts_with(p) {
        // The applied atomic value replaces what the other manager owns.
        !v.is_object() && get_path(base, q).is_some()
    } else {
        false
    }
}

/// The object without what changes on every write.
fn without_volatile(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    v
}

// ---------------------------------------------------------------------------
// Field paths and field sets (server-side apply)

/// A field path: `.spec.template.spec.containers[name="x"].image` is
/// `[spec, template, spec, containers, {"name":"x"}, image]`.
type FPath = Vec<Seg>;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Field(String),
    /// An item of an associative list, by its keys as canonical JSON
    /// (`{"name":"x"}`), as in `k:{...}` of managedFields.
    Key(String),
}

/// A path ending at a list item stands for the item itself.
fn is_marker(p: &FPath) -> bool {
    matches!(p.last(), Some(Seg::Key(_)))
}

/// The key fields of the associative lists of the objects served here.
fn list_keys(field: &str) -> Option<&'static [&'static str]> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => Some(&["name"]),
        "volumeMounts" => Some(&["mountPath"]),
        "volumeDevices" => Some(&["devicePath"]),
        "ports" => Some(&["containerPort", "protocol"]),
        _ => None,
    }
}

fn item_key(keys: &[&str], item: &Value) -> Option<String> {
    let mut key = BTreeMap::new();
    for k in keys {
        let v = match item.get(*k) {
            Some(v) => v.clone(),
            None if *k == "protocol" => json!("TCP"),
            None => return None,
        };
        key.insert(k.to_string(), v);
    }
    serde_json::to_string(&key).ok()
}

fn item_matches(item: &Value, key: &str) -> bool {
    let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key) else {
        return false;
    };
    key.iter().all(|(k, v)| match item.get(k) {
        Some(have) => have == v,
        None => k == "protocol" && v == "TCP",
    })
}

/// Every leaf of `v` with its path; list items of associative lists also
/// yield their own path (value null) so that whole items can be owned.
fn flatten(v: &Value, path: &mut FPath, out: &mut Vec<(FPath, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                path.push(Seg::Field(k.clone()));
                flatten(c, path, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let keys = match path.last() {
                Some(Seg::Field(f)) => list_keys(f),
                _ => None,
            };
            let item_keys: Option<Vec<String>> =
                keys.and_then(|k| items.iter().map(|i| item_key(k, i)).collect());
            match item_keys {
                Some(item_keys) => {
                    for (item, key) in items.iter().zip(item_keys) {
                        path.push(Seg::Key(key));
                        out.push((path.clone(), Value::Null));
                        if let Value::Object(m) = item {
                            for (k, c) in m {
                                path.push(Seg::Field(k.clone()));
                                flatten(c, path, out);
                                path.pop();
                            }
                        }
                        path.pop();
                    }
                }
                None => out.push((path.clone(), v.clone())),
            }
        }
        _ => out.push((path.clone(), v.clone())),
    }
}

/// What of an object its managers own: labels, annotations, owner
/// references, finalizers and the resource's sections (spec or data).
fn managed_view(res: Res, obj: &Map<String, Value>) -> Value {
    let mut view = Map::new();
    let mut meta = Map::new();
    if let Some(m) = obj.get("metadata").and_then(Value::as_object) {
        for k in ["labels", "annotations", "ownerReferences", "finalizers"] {
            if let Some(v) = m.get(k).filter(|v| !v.is_null()) {
                meta.insert(k.to_string(), v.clone());
            }
        }
    }
    if !meta.is_empty() {
        view.insert("metadata".into(), Value::Object(meta));
    }
    for s in res.sections() {
        if let Some(v) = obj.get(*s).filter(|v| !v.is_null()) {
            view.insert(s.to_string(), v.clone());
        }
    }
    Value::Object(view)
}

fn owned_leaf_paths(res: Res, obj: &Value) -> BTreeSet<FPath> {
    let view = match obj.as_object() {
        Some(m) => managed_view(res, m),
        None => json!({}),
    };
    let mut leaves = Vec::new();
    flatten(&view, &mut Vec::new(), &mut leaves);
    leaves.into_iter().map(|(p, _)| p).collect()
}

fn get_path<'a>(v: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        cur = match seg {
            Seg::Field(f) => cur.as_object()?.get(f)?,
            Seg::Key(k) => cur.as_array()?.iter().find(|i| item_matches(i, k))?,
        };
    }
    Some(cur)
}

/// Set a leaf (or make sure a list item exists, for a null item marker).
/// An empty object never replaces an object that is there.
fn set_path(v: &mut Value, path: &[Seg], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        let keep =
            value.is_null() || (value.as_object().is_some_and(Map::is_empty) && v.is_object());
        if !keep {
            *v = value;
        }
        return;
    };
    match first {
        Seg::Field(f) => {
            if !v.is_object() {
                *v = json!({});
            }
            if let Some(m) = v.as_object_mut() {
                let child = m.entry(f.clone()).or_insert(Value::Null);
                if rest.is_empty() && child.is_null() && value.is_null() {
                    return;
                }
                set_path(child, rest, value);
            }
        }
        Seg::Key(k) => {
            if !v.is_array() {
                *v = json!([]);
            }
            if let Some(items) = v.as_array_mut() {
                let index = match items.iter().position(|i| item_matches(i, k)) {
                    Some(i) => i,
                    None => {
                        let item = serde_json::from_str::<Value>(k).unwrap_or(json!({}));
                        items.push(item);
                        items.len() - 1
                    }
                };
                set_path(&mut items[index], rest, value);
            }
        }
    }
}

fn remove_path(v: &mut Value, path: &[Seg]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        let next = match seg {
            Seg::Field(f) => cur.as_object_mut().and_then(|m| m.get_mut(f)),
            Seg::Key(k) => cur
                .as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| item_matches(i, k))),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        Seg::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        Seg::Key(k) => {
            if let Some(a) = cur.as_array_mut() {
                a.retain(|i| !item_matches(i, k));
            }
        }
    }
}

/// `.spec.template.spec.containers[name="x"].image`.
fn display_fpath(p: &FPath) -> String {
    let mut out = String::new();
    for seg in p {
        match seg {
            Seg::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Seg::Key(k) => {
                let parts: Vec<String> = match serde_json::from_str::<Value>(k) {
                    Ok(Value::Object(m)) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                    _ => vec![k.clone()],
                };
                out.push('[');
                out.push_str(&parts.join(","));
                out.push(']');
            }
        }
    }
    out
}

/// Parse the notation of [`display_fpath`].
fn parse_fpath(text: &str) -> Result<FPath, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let start = i + 1;
                i = start;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let field: String = chars[start..i].iter().collect();
                if field.is_empty() {
                    return Err(format!("empty field name in {text:?}"));
                }
                out.push(Seg::Field(field));
            }
            '[' => {
                let start = i + 1;
                let mut quoted = false;
                i = start;
                while i < chars.len() && (quoted || chars[i] != ']') {
                    if chars[i] == '"' && (i == 0 || chars[i - 1] != '\\') {
                        quoted = !quoted;
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(format!("unclosed [ in {text:?}"));
                }
                let inner: String = chars[start..i].iter().collect();
                i += 1;
                let mut key = BTreeMap::new();
                for pair in split_unquoted(&inner, ',') {
                    let (k, v) = pair
                        .split_once('=')
                        .ok_or_else(|| format!("expected key=value in [{inner}]"))?;
                    let v: Value = serde_json::from_str(v.trim())
                        .map_err(|e| format!("bad key value {v:?} in {text:?}: {e}"))?;
                    key.insert(k.trim().to_string(), v);
                }
                out.push(Seg::Key(
                    serde_json::to_string(&key).map_err(|e| e.to_string())?,
                ));
            }
            c => {
                return Err(format!(
                    "unexpected {c:?} in {text:?} (paths start with '.')"
                ));
            }
        }
    }
    if out.is_empty() {
        return Err("empty path".into());
    }
    Ok(out)
}

fn split_unquoted(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut prev = '\0';
    for c in s.chars() {
        if c == '"' && prev != '\\' {
            quoted = !quoted;
        }
        if c == sep && !quoted {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
        prev = c;
    }
    parts.push(cur);
    parts
}

/// Add a path to a FieldsV1 tree (`f:name`, `k:{...}`, `.` for an item).
fn insert_field(node: &mut Map<String, Value>, path: &[Seg], marker: bool) {
    let Some((first, rest)) = path.split_first() else {
        if marker {
            node.insert(".".into(), json!({}));
        }
        return;
    };
    let key = match first {
        Seg::Field(f) => format!("f:{f}"),
        Seg::Key(k) => format!("k:{k}"),
    };
    let child = node.entry(key).or_insert_with(|| json!({}));
    if !child.is_object() {
        *child = json!({});
    }
    if let Some(c) = child.as_object_mut() {
        insert_field(c, rest, marker);
    }
}

/// managedFields as the API server shows them (FieldsV1).
fn managed_fields_json(managers: Option<&[Manager]>) -> Value {
    let entries: Vec<Value> = managers
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let mut root = Map::new();
            for p in &m.fields {
                insert_field(&mut root, p, is_marker(p));
            }
            json!({
                "manager": m.name,
                "operation": m.operation.as_str(),
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": root
            })
        })
        .collect();
    Value::Array(entries)
}

// ---------------------------------------------------------------------------
// Objects: normalizing, defaulting, validation

/// The object a write stores: type, the writable metadata, the sections.
fn normalize(res: Res, body: &Map<String, Value>) -> Value {
    let mut meta = Map::new();
    if let Some(m) = body.get("metadata").and_then(Value::as_object) {
        for k in [
            "name",
            "generateName",
            "labels",
            "annotations",
            "ownerReferences",
            "finalizers",
        ] {
            if let Some(v) = m.get(k).filter(|v| !v.is_null()) {
                meta.insert(k.to_string(), v.clone());
            }
        }
    }
    let mut obj = json!({
        "apiVersion": res.api_version(),
        "kind": res.kind(),
        "metadata": meta
    });
    for s in res.sections() {
        if let Some(v) = body.get(*s).filter(|v| !v.is_null()) {
            obj[*s] = v.clone();
        }
    }
    obj
}

/// A user-set Job selector needs `manualSelector: true`.
fn job_selector_errors(obj: &Value) -> Option<Vec<FieldError>> {
    let spec = &obj["spec"];
    if spec.get("selector").is_some_and(|s| !s.is_null()) && spec["manualSelector"] != json!(true) {
        return Some(vec![FieldError::invalid(
            "spec.selector",
            &spec["selector"],
            "`selector` not auto-generated",
        )]);
    }
    None
}

/// What the Job strategy does on create: labels from the template when the
/// Job has none, a generated selector and the matching template labels.
fn prepare_job(obj: &mut Value, uid: &str) {
    let name = str_at(obj, "/metadata/name");
    let template_labels = obj["spec"]["template"]["metadata"]["labels"].clone();
    if template_labels.as_object().is_some_and(|m| !m.is_empty())
        && obj["metadata"]["labels"]
            .as_object()
            .is_none_or(Map::is_empty)
    {
        obj["metadata"]["labels"] = template_labels;
    }
    if obj["spec"]["manualSelector"] == json!(true) {
        return;
    }
    obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    labels["batch.kubernetes.io/controller-uid"] = json!(uid);
    labels["batch.kubernetes.io/job-name"] = json!(name);
    labels["controller-uid"] = json!(uid);
    labels["job-name"] = json!(name);
}

fn set_default(obj: &mut Value, key: &str, value: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.entry(key.to_string())
            .and_modify(|v| {
                if v.is_null() {
                    *v = value.clone();
                }
            })
            .or_insert(value);
    }
}

/// The API server's defaulting for the kinds served here.
fn default_object(res: Res, obj: &mut Value) {
    match res {
        Res::ConfigMaps => {}
        Res::DaemonSets => {
            let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
                return;
            };
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
            let strategy = &mut spec["updateStrategy"];
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                set_default(strategy, "rollingUpdate", json!({}));
                let rolling = &mut strategy["rollingUpdate"];
                set_default(rolling, "maxUnavailable", json!(1));
                set_default(rolling, "maxSurge", json!(0));
            }
            if let Some(t) = spec.get_mut("template") {
                default_template(t);
            }
        }
        Res::Jobs => {
            let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
                return;
            };
            if spec.get("completions").is_none_or(Value::is_null)
                && spec.get("parallelism").is_none_or(Value::is_null)
            {
                spec["completions"] = json!(1);
                spec["parallelism"] = json!(1);
            }
            set_default(spec, "parallelism", json!(1));
            if spec.get("backoffLimitPerIndex").is_none_or(Value::is_null) {
                set_default(spec, "backoffLimit", json!(6));
            }
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            if spec.get("podFailurePolicy").is_none_or(Value::is_null) {
                set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            }
            set_default(spec, "manualSelector", Value::Null);
            if let Some(m) = spec.as_object_mut()
                && m.get("manualSelector").is_some_and(Value::is_null)
            {
                m.remove("manualSelector");
            }
            if let Some(t) = spec.get_mut("template") {
                default_template(t);
            }
        }
        Res::Pods => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec);
            }
        }
    }
}

fn default_template(template: &mut Value) {
    if let Some(spec) = template.get_mut("spec") {
        default_pod_spec(spec);
    }
}

fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    for list in ["initContainers", "containers"] {
        if let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in items.iter_mut().filter(|c| c.is_object()) {
                let image = str_at(c, "/image");
                set_default(c, "imagePullPolicy", json!(default_pull_policy(&image)));
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter(|p| p.is_object()) {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// `Always` for `:latest` or no tag, `IfNotPresent` otherwise (a digest
/// counts as pinned).
fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// What the controllers of a freshly created object have written at once.
fn initial_status(res: Res, obj: &mut Value) {
    if res == Res::DaemonSets {
        obj["status"] = json!({
            "currentNumberScheduled": 0,
            "desiredNumberScheduled": 0,
            "numberMisscheduled": 0,
            "numberReady": 0
        });
    } else if res == Res::Jobs {
        obj["status"] = json!({});
    }
}

fn validate(res: Res, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let meta = &obj["metadata"];
    let name = str_at(obj, "/metadata/name");
    if name.is_empty() {
        errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for msg in dns_subdomain_errors(&name) {
            errors.push(FieldError::invalid("metadata.name", &json!(name), &msg));
        }
    }
    validate_labels(&meta["labels"], "metadata.labels", &mut errors);
    validate_annotations(&meta["annotations"], "metadata.annotations", &mut errors);
    match res {
        Res::ConfigMaps => validate_configmap(obj, old, &mut errors),
        Res::DaemonSets => validate_daemonset(obj, old, &mut errors),
        Res::Jobs => validate_job(obj, &mut errors),
        Res::Pods => validate_pod(obj, &mut errors),
    }
    errors
}

fn validate_configmap(obj: &Value, old: Option<&Value>, errors: &mut Vec<FieldError>) {
    let mut total = 0usize;
    let data = obj["data"].as_object();
    let binary = obj["binaryData"].as_object();
    for (k, v) in data.into_iter().flatten() {
        for msg in config_key_errors(k) {
            errors.push(FieldError::invalid(&format!("data[{k}]"), &json!(k), &msg));
        }
        match v.as_str() {
            Some(s) => total += s.len(),
            None => errors.push(FieldError::invalid(
                &format!("data[{k}]"),
                v,
                "must be a string",
            )),
        }
    }
    for (k, v) in binary.into_iter().flatten() {
        for msg in config_key_errors(k) {
            errors.push(FieldError::invalid(
                &format!("binaryData[{k}]"),
                &json!(k),
                &msg,
            ));
        }
        if data.is_some_and(|d| d.contains_key(k)) {
            errors.push(FieldError::invalid(
                &format!("binaryData[{k}]"),
                &json!(k),
                "duplicate of key present in data",
            ));
        }
        let encoded = v.as_str().unwrap_or_default();
        let padding = encoded.chars().rev().take_while(|c| *c == '=').count();
        total += (encoded.len() / 4) * 3 - padding.min((encoded.len() / 4) * 3);
    }
    if total > MAX_CONFIGMAP_BYTES {
        errors.push(FieldError::too_long("[]", MAX_CONFIGMAP_BYTES));
    }
    if let Some(old) = old
        && old["immutable"] == json!(true)
    {
        if old.get("data") != obj.get("data") {
            errors.push(FieldError::forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
        if old.get("binaryData") != obj.get("binaryData") {
            errors.push(FieldError::forbidden(
                "binaryData",
                "field is immutable when `immutable` is set",
            ));
        }
        if obj["immutable"] != json!(true) {
            errors.push(FieldError::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

fn validate_daemonset(obj: &Value, old: Option<&Value>, errors: &mut Vec<FieldError>) {
    let spec = &obj["spec"];
    let selector = &spec["selector"];
    let template = &spec["template"];
    let template_labels = &template["metadata"]["labels"];
    if selector.is_null() {
        errors.push(FieldError::required("spec.selector", ""));
    } else {
        let match_labels = selector["matchLabels"].as_object();
        let expressions = selector["matchExpressions"].as_array();
        if match_labels.is_none_or(Map::is_empty) && expressions.is_none_or(Vec::is_empty) {
            errors.push(FieldError::invalid(
                "spec.selector",
                selector,
                "empty selector is invalid for daemonset",
            ));
        } else {
            validate_labels(
                &selector["matchLabels"],
                "spec.selector.matchLabels",
                errors,
            );
            let matches = match_labels
                .into_iter()
                .flatten()
                .all(|(k, v)| template_labels.get(k) == Some(v))
                && expressions.is_none_or(Vec::is_empty);
            if !matches {
                errors.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    template_labels,
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    if let Some(old) = old
        && old["spec"]["selector"] != *selector
    {
        errors.push(FieldError::invalid(
            "spec.selector",
            selector,
            "field is immutable",
        ));
    }
    validate_labels(template_labels, "spec.template.labels", errors);
    let strategy = &spec["updateStrategy"]["type"];
    if !strategy.is_null() && strategy != "RollingUpdate" && strategy != "OnDelete" {
        errors.push(FieldError::not_supported(
            "spec.updateStrategy.type",
            strategy,
            &["OnDelete", "RollingUpdate"],
        ));
    }
    if template["spec"].is_object() {
        validate_pod_spec(&template["spec"], "spec.template.spec", errors);
        let restart = &template["spec"]["restartPolicy"];
        if restart != "Always" {
            errors.push(FieldError::not_supported(
                "spec.template.spec.restartPolicy",
                restart,
                &["Always"],
            ));
        }
    } else {
        errors.push(FieldError::required("spec.template.spec.containers", ""));
    }
}

fn validate_job(obj: &Value, errors: &mut Vec<FieldError>) {
    let spec = &obj["spec"];
    let template = &spec["template"];
    validate_labels(
        &template["metadata"]["labels"],
        "spec.template.labels",
        errors,
    );
    for key in ["parallelism", "completions", "backoffLimit"] {
        if spec[key].as_i64().is_some_and(|n| n < 0) {
            errors.push(FieldError::invalid(
                &format!("spec.{key}"),
                &spec[key],
                "must be greater than or equal to 0",
            ));
        }
    }
    if template["spec"].is_object() {
        validate_pod_spec(&template["spec"], "spec.template.spec", errors);
        let restart = &template["spec"]["restartPolicy"];
        if restart != "OnFailure" && restart != "Never" {
            errors.push(FieldError::not_supported(
                "spec.template.spec.restartPolicy",
                restart,
                &["OnFailure", "Never"],
            ));
        }
    } else {
        errors.push(FieldError::required("spec.template.spec.containers", ""));
    }
}

/// A pod of its own: its spec, and the fields only a pod (not a template)
/// is checked for here.
fn validate_pod(obj: &Value, errors: &mut Vec<FieldError>) {
    let spec = &obj["spec"];
    if !spec.is_object() {
        errors.push(FieldError::required("spec.containers", ""));
        return;
    }
    validate_pod_spec(spec, "spec", errors);
    let restart = &spec["restartPolicy"];
    if !["Always", "OnFailure", "Never"].contains(&restart.as_str().unwrap_or("")) {
        errors.push(FieldError::not_supported(
            "spec.restartPolicy",
            restart,
            &["Always", "OnFailure", "Never"],
        ));
    }
    let deadline = &spec["activeDeadlineSeconds"];
    if !deadline.is_null() && deadline.as_i64().is_none_or(|d| d < 1) {
        errors.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            deadline,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    let grace = &spec["terminationGracePeriodSeconds"];
    if !grace.is_null() && grace.as_i64().is_none_or(|g| g < 0) {
        errors.push(FieldError::invalid(
            "spec.terminationGracePeriodSeconds",
            grace,
            "must be greater than or equal to 0",
        ));
    }
    for (i, c) in spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("spec.containers[{i}]");
        if let Some(command) = c.get("command")
            && !command
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string))
        {
            errors.push(FieldError::invalid(
                &format!("{at}.command"),
                command,
                "must be a list of strings",
            ));
        }
        // Extended resources (a domain that is not kubernetes.io): whole
        // numbers, and a request equal to the limit.
        let resources = &c["resources"];
        for kind in ["requests", "limits"] {
            for (name, q) in resources[kind].as_object().into_iter().flatten() {
                let extended = name.contains('/') && !name.contains("kubernetes.io/");
                let whole = q.as_u64().is_some()
                    || q.as_str()
                        .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
                if extended && !whole {
                    errors.push(FieldError::invalid(
                        &format!("{at}.resources.{kind}[{name}]"),
                        q,
                        "must be an integer",
                    ));
                }
                if extended
                    && kind == "requests"
                    && !resources["limits"][name].is_null()
                    && resources["limits"][name] != *q
                {
                    errors.push(FieldError::invalid(
                        &format!("{at}.resources.requests"),
                        q,
                        &format!("must be equal to {name} limit"),
                    ));
                }
            }
        }
    }
}

fn validate_pod_spec(spec: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let mut volumes = BTreeSet::new();
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        let name = str_at(v, "/name");
        let field = format!("{path}.volumes[{i}].name");
        if name.is_empty() {
            errors.push(FieldError::required(&field, ""));
        } else if !volumes.insert(name.clone()) {
            errors.push(FieldError::duplicate(&field, &json!(name)));
        }
    }
    if spec["containers"].as_array().is_none_or(Vec::is_empty) {
        errors.push(FieldError::required(&format!("{path}.containers"), ""));
    }
    let mut names = BTreeSet::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let at = format!("{path}.{list}[{i}]");
            let name = str_at(c, "/name");
            if name.is_empty() {
                errors.push(FieldError::required(&format!("{at}.name"), ""));
            } else {
                for msg in dns_label_errors(&name) {
                    errors.push(FieldError::invalid(
                        &format!("{at}.name"),
                        &json!(name),
                        &msg,
                    ));
                }
                if !names.insert(name.clone()) {
                    errors.push(FieldError::duplicate(&format!("{at}.name"), &json!(name)));
                }
            }
            if str_at(c, "/image").trim().is_empty() {
                errors.push(FieldError::required(&format!("{at}.image"), ""));
            }
            let policy = &c["imagePullPolicy"];
            if !policy.is_null()
                && !["Always", "IfNotPresent", "Never"].contains(&policy.as_str().unwrap_or(""))
            {
                errors.push(FieldError::not_supported(
                    &format!("{at}.imagePullPolicy"),
                    policy,
                    &["Always", "IfNotPresent", "Never"],
                ));
            }
            for (j, m) in c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let vol = str_at(m, "/name");
                if !volumes.contains(&vol) {
                    errors.push(FieldError::not_found(
                        &format!("{at}.volumeMounts[{j}].name"),
                        &json!(vol),
                    ));
                }
                if str_at(m, "/mountPath").is_empty() {
                    errors.push(FieldError::required(
                        &format!("{at}.volumeMounts[{j}].mountPath"),
                        "",
                    ));
                }
            }
            for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
                let port = p["containerPort"].as_i64().unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    errors.push(FieldError::invalid(
                        &format!("{at}.ports[{j}].containerPort"),
                        &p["containerPort"],
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
    }
}

fn validate_labels(labels: &Value, field: &str, errors: &mut Vec<FieldError>) {
    let Some(m) = labels.as_object() else {
        return;
    };
    for (k, v) in m {
        for msg in qualified_name_errors(k) {
            errors.push(FieldError::invalid(field, &json!(k), &msg));
        }
        match v.as_str() {
            Some(s) => {
                for msg in label_value_errors(s) {
                    errors.push(FieldError::invalid(field, v, &msg));
                }
            }
            None => errors.push(FieldError::invalid(field, v, "must be a string")),
        }
    }
}

fn validate_annotations(annotations: &Value, field: &str, errors: &mut Vec<FieldError>) {
    let Some(m) = annotations.as_object() else {
        return;
    };
    let mut total = 0;
    for (k, v) in m {
        for msg in qualified_name_errors(&k.to_lowercase()) {
            errors.push(FieldError::invalid(field, &json!(k), &msg));
        }
        total += k.len() + v.as_str().map(str::len).unwrap_or(0);
    }
    if total > MAX_ANNOTATIONS_BYTES {
        errors.push(FieldError::too_long(field, MAX_ANNOTATIONS_BYTES));
    }
}

// -- the apimachinery validation messages -----------------------------------

fn regex_error(msg: &str, regex: &str, examples: &[&str]) -> String {
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{e}', "));
    }
    out.push_str(&format!("regex used for validation is '{regex}')"));
    out
}

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower)
}

fn dns_label_errors(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push("must be no more than 63 characters".to_string());
    }
    if !is_dns_label(s) {
        out.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?",
            &["my-name", "123-abc"],
        ));
    }
    out
}

fn dns_subdomain_errors(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 253 {
        out.push("must be no more than 253 characters".to_string());
    }
    if !s.split('.').all(is_dns_label) {
        out.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
            &["example.com"],
        ));
    }
    out
}

fn is_label_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_RE: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

fn qualified_name_errors(key: &str) -> Vec<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                return vec!["prefix part must be non-empty".into()];
            }
            let errs = dns_subdomain_errors(prefix);
            if !errs.is_empty() {
                return errs
                    .into_iter()
                    .map(|e| format!("prefix part {e}"))
                    .collect();
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_MSG,
                    QUALIFIED_NAME_RE,
                    &["MyName", "my.name", "123-abc"]
                )
            )];
        }
    };
    let mut out = Vec::new();
    if name.is_empty() {
        out.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        out.push("name part must be no more than 63 characters".to_string());
    }
    if !is_label_name(name) {
        out.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_RE,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    out
}

fn label_value_errors(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    if v.len() > 63 {
        out.push("must be no more than 63 characters".to_string());
    }
    if !v.is_empty() && !is_label_name(v) {
        out.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    out
}

fn config_key_errors(k: &str) -> Vec<String> {
    let mut out = Vec::new();
    if k.len() > 253 {
        out.push("must be no more than 253 characters".to_string());
    }
    if k.is_empty()
        || !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        out.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            "[-._a-zA-Z0-9]+",
            &["key.name", "KEY_NAME", "key-name"],
        ));
    } else if k == "." || k == ".." || k.starts_with("..") {
        out.push("must not be '.' or '..' or start with '..'".to_string());
    }
    out
}

// ---------------------------------------------------------------------------
// Selectors

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Greater(String, i64),
    Less(String, i64),
}

impl Requirement {
    fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
            Requirement::Greater(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Requirement::Less(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

/// The label selector grammar of `labels.Parse`: `k=v`, `k==v`, `k!=v`,
/// `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, `k>1`, `k<1`, comma-separated.
fn parse_selector(text: &str) -> Result<Vec<Requirement>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let word = |i: &mut usize| -> String {
        let start = *i;
        while *i < chars.len() && !" \t=!,()<>".contains(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect()
    };
    if text.trim().is_empty() {
        return Ok(out);
    }
    loop {
        skip_ws(&mut i);
        let negated = i < chars.len() && chars[i] == '!';
        if negated {
            i += 1;
            skip_ws(&mut i);
        }
        let key = word(&mut i);
        if key.is_empty() {
            return Err(format!("found '{}', expected: identifier", rest(&chars, i)));
        }
        let key_errors = qualified_name_errors(&key);
        if !key_errors.is_empty() {
            return Err(format!(
                "key: Invalid value: {key:?}: {}",
                key_errors.join("; ")
            ));
        }
        skip_ws(&mut i);
        let requirement = if negated {
            Requirement::NotExists(key)
        } else if i >= chars.len() || chars[i] == ',' {
            Requirement::Exists(key)
        } else if chars[i] == '=' || chars[i] == '!' {
            let not = chars[i] == '!';
            i += 1;
            if i < chars.len() && chars[i] == '=' {
                i += 1;
            } else if not {
                return Err(format!("found '{}', expected: '='", rest(&chars, i)));
            }
            skip_ws(&mut i);
            let value = word(&mut i);
            check_value(&value)?;
            if not {
                Requirement::NotEquals(key, value)
            } else {
                Requirement::Equals(key, value)
            }
        } else if chars[i] == '>' || chars[i] == '<' {
            let greater = chars[i] == '>';
            i += 1;
            skip_ws(&mut i);
            let value = word(&mut i);
            let n: i64 = value.parse().map_err(|_| {
                format!("for 'Gt', 'Lt' operators, the value must be an integer: {value:?}")
            })?;
            if greater {
                Requirement::Greater(key, n)
            } else {
                Requirement::Less(key, n)
            }
        } else {
            let op = word(&mut i);
            if op != "in" && op != "notin" {
                return Err(format!(
                    "found '{op}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
            skip_ws(&mut i);
            if i >= chars.len() || chars[i] != '(' {
                return Err(format!("found '{}', expected: '('", rest(&chars, i)));
            }
            i += 1;
            let mut values = Vec::new();
            loop {
                skip_ws(&mut i);
                let v = word(&mut i);
                check_value(&v)?;
                values.push(v);
                skip_ws(&mut i);
                match chars.get(i) {
                    Some(',') => i += 1,
                    Some(')') => {
                        i += 1;
                        break;
                    }
                    _ => return Err(format!("found '{}', expected: ',' or ')'", rest(&chars, i))),
                }
            }
            if op == "in" {
                Requirement::In(key, values)
            } else {
                Requirement::NotIn(key, values)
            }
        };
        out.push(requirement);
        skip_ws(&mut i);
        match chars.get(i) {
            None => return Ok(out),
            Some(',') => i += 1,
            Some(_) => {
                return Err(format!(
                    "found '{}', expected: ',' or 'end of string'",
                    rest(&chars, i)
                ));
            }
        }
    }
}

fn rest(chars: &[char], i: usize) -> String {
    chars
        .get(i..)
        .map(|c| c.iter().collect())
        .unwrap_or_default()
}

fn check_value(value: &str) -> Result<(), String> {
    let errors = label_value_errors(value);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "values[0]: Invalid value: {value:?}: {}",
            errors.join("; ")
        ))
    }
}

struct FieldRequirement {
    path: &'static str,
    value: String,
    equal: bool,
}

impl FieldRequirement {
    fn matches(&self, obj: &Value) -> bool {
        (str_at(obj, self.path) == self.value) == self.equal
    }
}

fn parse_field_selector(res: Res, text: &str) -> Result<Vec<FieldRequirement>, String> {
    let mut out = Vec::new();
    for term in text.split(',').filter(|t| !t.trim().is_empty()) {
        let (key, value, equal) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = term.split_once("==") {
            (k, v, true)
        } else if let Some((k, v)) = term.split_once('=') {
            (k, v, true)
        } else {
            return Err(format!(
                "invalid selector: '{text}'; can't understand '{term}'"
            ));
        };
        let path = match (res, key.trim()) {
            (_, "metadata.name") => "/metadata/name",
            (_, "metadata.namespace") => "/metadata/namespace",
            (Res::Pods, "status.phase") => "/status/phase",
            (Res::Pods, "spec.nodeName") => "/spec/nodeName",
            (Res::Pods, "spec.serviceAccountName") => "/spec/serviceAccountName",
            (_, other) => return Err(format!("field label not supported: {other}")),
        };
        out.push(FieldRequirement {
            path,
            value: value.trim().to_string(),
            equal,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Time

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now_iso() -> String {
    iso(now_secs())
}

/// RFC 3339 with nanoseconds, as the kubelet stamps log lines.
fn now_iso_nanos() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = iso(now.as_secs());
    format!("{}.{:09}Z", secs.trim_end_matches('Z'), now.subsec_nanos())
}

/// `2024-05-01T12:00:00Z` from Unix seconds.
fn iso(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}
