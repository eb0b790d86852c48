//! The Kubernetes API, through kube-rs: the one module that talks to a
//! cluster. Reads, server-side applies and deletes the objects the hub
//! keeps in sync (the profiles ConfigMap, the pre-puller DaemonSets), the
//! build Jobs and the smoke-test pods, with retries on transient errors.
//!
//! Must not decide what the objects look like: that is `labforge_core::cluster`
//! (pure). [`PERMISSIONS`] lists every call made here; the shipped Role in
//! `deploy/` grants exactly these and a test holds the two together.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams,
    PostParams, Preconditions, PropagationPolicy, ValidationDirective,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::{Client, Config};
use labforge_core::cluster::{FIELD_MANAGER, Kind};
use serde_json::Value;

/// One rule of the hub's namespaced Role: the verbs used on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// `""` for the core group.
    pub api_group: &'static str,
    /// Plural resource name, with a subresource after a `/` (`pods/log`).
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// Every verb on every resource this module uses, and nothing else.
/// Secrets are absent on purpose: the hub reads its own Secret through
/// the environment and volumes the kubelet mounts, never through the API.
pub const PERMISSIONS: &[Permission] = &[
    // The profiles ConfigMap and the pre-puller DaemonSets: listed by
    // label, server-side applied (`create` too: an apply that creates the
    // object is authorized as a create), deleted when stale.
    Permission {
        api_group: "",
        resource: "configmaps",
        verbs: &["list", "create", "patch", "delete"],
    },
    Permission {
        api_group: "apps",
        resource: "daemonsets",
        verbs: &["list", "create", "patch", "delete"],
    },
    // Build Jobs: created, watched by name, deleted when done.
    Permission {
        api_group: "batch",
        resource: "jobs",
        verbs: &["get", "create", "delete"],
    },
    // A build Job's pod (found by the Job's uid) and its log; smoke-test
    // pods: created, watched by name, deleted when done.
    Permission {
        api_group: "",
        resource: "pods",
        verbs: &["list", "get", "create", "delete"],
    },
    Permission {
        api_group: "",
        resource: "pods/log",
        verbs: &["get"],
    },
];

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "no Kubernetes configuration: {message} (set KUBECONFIG or `[kubernetes] context`, or run inside a pod with a service account)"
    )]
    Config { message: String },
    #[error("cannot set up the Kubernetes client for {url}: {message}")]
    Client { url: String, message: String },
    #[error(
        "{kind}/{name} in namespace {namespace}: another field manager owns fields labforge sets: {message} (undo the other change, or run `labforge k8s sync --force` to take the fields over)"
    )]
    Conflict {
        kind: String,
        name: String,
        namespace: String,
        message: String,
    },
    #[error(
        "{verb} {kind}/{name} in namespace {namespace} is forbidden: {message} (grant the hub's Role in deploy/hub/role.yaml; `labforge k8s permissions` lists what it needs)"
    )]
    Forbidden {
        verb: &'static str,
        kind: String,
        name: String,
        namespace: String,
        message: String,
    },
    #[error("{kind}/{name} in namespace {namespace} was refused as invalid: {message}")]
    Invalid {
        kind: String,
        name: String,
        namespace: String,
        message: String,
    },
    #[error(
        "{verb} {kind}/{name} in namespace {namespace}: {message} (HTTP {code}, after {attempts} attempt(s))"
    )]
    Api {
        verb: &'static str,
        kind: String,
        name: String,
        namespace: String,
        code: u16,
        message: String,
        attempts: u32,
    },
    #[error(
        "{verb} {kind}/{name}: cannot reach the Kubernetes API server {url}: {message} (after {attempts} attempt(s))"
    )]
    Unreachable {
        verb: &'static str,
        kind: String,
        name: String,
        url: String,
        message: String,
        attempts: u32,
    },
}

/// Transient failures (connection errors, 429, 5xx) are tried again with
/// doubling waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all, the first included.
    pub attempts: u32,
    pub first_wait: Duration,
    pub max_wait: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            attempts: 5,
            first_wait: Duration::from_millis(500),
            max_wait: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Namespace of every object; unset: the kubeconfig context's, or the
    /// pod's own when running in a cluster.
    pub namespace: Option<String>,
    /// kubeconfig context; unset: the current one (or in-cluster).
    pub context: Option<String>,
    /// A kubeconfig file to read instead of `KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<std::path::PathBuf>,
    pub retry: Retry,
}

/// What a delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// It was gone already.
    Absent,
}

/// A connection to one namespace of a cluster.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    namespace: String,
    url: String,
    retry: Retry,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &self.url)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connect with the kubeconfig (`KUBECONFIG` or `~/.kube/config`) or,
    /// inside a pod, its service account.
    pub async fn connect(options: &ClusterOptions) -> Result<Cluster, ClusterError> {
        // Both of rustls's providers are compiled in (other dependencies
        // ask for aws-lc-rs), so kube's TLS needs one chosen for the
        // process; a provider installed earlier stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config_error = |e: &dyn std::error::Error| ClusterError::Config {
            message: labforge_core::error_chain(e),
        };
        let kube_options = KubeConfigOptions {
            context: options.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match (&options.kubeconfig, &options.context) {
            (Some(path), _) => {
                let file = Kubeconfig::read_from(path).map_err(|e| ClusterError::Config {
                    message: format!("{}: {}", path.display(), labforge_core::error_chain(&e)),
                })?;
                Config::from_custom_kubeconfig(file, &kube_options)
                    .await
                    .map_err(|e| config_error(&e))?
            }
            (None, Some(_)) => Config::from_kubeconfig(&kube_options)
                .await
                .map_err(|e| config_error(&e))?,
            (None, None) => Config::infer().await.map_err(|e| config_error(&e))?,
        };
        // One retry policy, ours: kube's own would retry 429/503/504 up to
        // 15 times inside each of our attempts.
        let mut config = config;
        config.default_retry = false;
        let url = config.cluster_url.to_string();
        let namespace = options
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| ClusterError::Client {
            url: url.clone(),
            message: labforge_core::error_chain(&e),
        })?;
        Ok(Cluster {
            client,
            namespace,
            url,
            retry: options.retry,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn api(&self, kind: Kind) -> Api<DynamicObject> {
        self.dynamic(kind.group(), kind.version(), kind.name(), kind.plural())
    }

    fn dynamic(&self, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
        Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
    }

    /// Create one object from its JSON body (a Job or a Pod), with retries.
    async fn create(
        &self,
        api: Api<DynamicObject>,
        kind: &'static str,
        body: &Value,
    ) -> Result<Value, ClusterError> {
        let name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let object: DynamicObject =
            serde_json::from_value(body.clone()).map_err(|e| ClusterError::Invalid {
                kind: kind.into(),
                name: name.clone(),
                namespace: self.namespace.clone(),
                message: e.to_string(),
            })?;
        let params = PostParams::default();
        let created = self
            .retrying("create", kind, &name, || api.create(&params, &object))
            .await?;
        Ok(to_value(&created))
    }

    /// One object by name, or `None` when it is gone, with retries.
    async fn get(
        &self,
        api: Api<DynamicObject>,
        kind: &'static str,
        name: &str,
    ) -> Result<Option<Value>, ClusterError> {
        let found = self
            .retrying("get", kind, name, || api.get_opt(name))
            .await?;
        Ok(found.as_ref().map(to_value))
    }

    fn jobs(&self) -> Api<DynamicObject> {
        self.dynamic("batch", "v1", "Job", "jobs")
    }

    /// Create a Job (a build): its body as `labforge_core::cluster::job` makes it.
    pub async fn create_job(&self, body: &Value) -> Result<Value, ClusterError> {
        self.create(self.jobs(), "job", body).await
    }

    /// The Job, or `None` when it is gone.
    pub async fn job(&self, name: &str) -> Result<Option<Value>, ClusterError> {
        self.get(self.jobs(), "job", name).await
    }

    /// The pod a Job started, if it has one yet: selected by the Job's uid,
    /// so that a terminating pod of an earlier Job of the same name is
    /// never taken for it.
    pub async fn job_pod(&self, job: &str, uid: &str) -> Result<Option<Value>, ClusterError> {
        let api = self.pods();
        let params =
            ListParams::default().labels(&format!("batch.kubernetes.io/controller-uid={uid}"));
        let pods = self
            .retrying("list", "pod", job, || api.list(&params))
            .await?;
        Ok(pods
            .items
            .iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .next())
    }

    /// Follow a container's log until it ends, a line at a time.
    pub async fn follow_log(
        &self,
        pod: &str,
        container: &str,
        mut on_line: impl FnMut(&str),
    ) -> Result<(), ClusterError> {
        use futures::{AsyncBufReadExt, TryStreamExt};
        let api = self.pods();
        let params = LogParams {
            follow: true,
            container: Some(container.to_string()),
            ..LogParams::default()
        };
        let stream = self
            .retrying("log", "pod", pod, || api.log_stream(pod, &params))
            .await?;
        let mut lines = stream.lines();
        loop {
            match lines.try_next().await {
                Ok(Some(line)) => on_line(&line),
                Ok(None) => return Ok(()),
                Err(e) => {
                    return Err(ClusterError::Unreachable {
                        verb: "log",
                        kind: "pod".into(),
                        name: pod.to_string(),
                        url: self.url.clone(),
                        message: e.to_string(),
                        attempts: 1,
                    });
                }
            }
        }
    }

    /// Delete a Job and its pods.
    pub async fn delete_job(&self, name: &str) -> Result<Deleted, ClusterError> {
        let api = self.jobs();
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match self
            .retrying("delete", "job", name, || api.delete(name, &params))
            .await
        {
            Ok(_) => Ok(Deleted::Deleted),
            Err(ClusterError::Api { code: 404, .. }) => Ok(Deleted::Absent),
            Err(e) => Err(e),
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Pods as they are sent and answered, every field kept (the typed
    /// `Pod` drops fields it does not know).
    fn dynamic_pods(&self) -> Api<DynamicObject> {
        self.dynamic("", "v1", "Pod", "pods")
    }

    /// Create a Pod (a smoke test): its body as
    /// `labforge_core::cluster::testpod` makes it.
    pub async fn create_pod(&self, body: &Value) -> Result<Value, ClusterError> {
        self.create(self.dynamic_pods(), "pod", body).await
    }

    /// The Pod, or `None` when it is gone.
    pub async fn pod(&self, name: &str) -> Result<Option<Value>, ClusterError> {
        self.get(self.dynamic_pods(), "pod", name).await
    }

    /// Delete a Pod (its containers get their grace period).
    pub async fn delete_pod(&self, name: &str) -> Result<Deleted, ClusterError> {
        let api = self.dynamic_pods();
        let params = DeleteParams::default();
        match self
            .retrying("delete", "pod", name, || api.delete(name, &params))
            .await
        {
            Ok(_) => Ok(Deleted::Deleted),
            Err(ClusterError::Api { code: 404, .. }) => Ok(Deleted::Absent),
            Err(e) => Err(e),
        }
    }

    /// The objects of `kind` that match a label selector.
    pub async fn list(&self, kind: Kind, selector: &str) -> Result<Vec<Value>, ClusterError> {
        let api = self.api(kind);
        let params = ListParams::default().labels(selector);
        let list = self
            .retrying("list", kind, "", || api.list(&params))
            .await?;
        Ok(list.items.iter().map(to_value).collect())
    }

    /// Server-side apply `body` as labforge's field manager, with strict
    /// field validation. Without `force`, fields another manager owns are
    /// a [`ClusterError::Conflict`]; with `dry_run`, the server answers
    /// what it would store and stores nothing.
    pub async fn apply(
        &self,
        kind: Kind,
        name: &str,
        body: &Value,
        force: bool,
        dry_run: bool,
    ) -> Result<Value, ClusterError> {
        let api = self.api(kind);
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = force;
        params.dry_run = dry_run;
        params.field_validation = Some(ValidationDirective::Strict);
        let patch = Patch::Apply(body);
        let applied = self
            .retrying("apply", kind, name, || api.patch(name, &params, &patch))
            .await?;
        Ok(to_value(&applied))
    }

    /// Delete an object in the background (its pods go with it), only if
    /// it still is the one with `uid`.
    pub async fn delete(
        &self,
        kind: Kind,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Deleted, ClusterError> {
        let api = self.api(kind);
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: uid.map(|uid| Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self
            .retrying("delete", kind, name, || api.delete(name, &params))
            .await
        {
            Ok(_) => Ok(Deleted::Deleted),
            Err(ClusterError::Api { code: 404, .. }) => Ok(Deleted::Absent),
            Err(e) => Err(e),
        }
    }

    /// Run `call` until it succeeds, fails for good, or runs out of tries.
    async fn retrying<T, F, Fut>(
        &self,
        verb: &'static str,
        kind: impl std::fmt::Display,
        name: &str,
        mut call: F,
    ) -> Result<T, ClusterError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let mut wait = self.retry.first_wait;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match call().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let transient = match &error {
                kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
                kube::Error::HyperError(_) | kube::Error::Service(_) => true,
                _ => false,
            };
            if transient && attempt < self.retry.attempts.max(1) {
                tracing::warn!(
                    k8s.verb = verb,
                    k8s.kind = %kind,
                    k8s.name = name,
                    attempt,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    error = %labforge_core::error_chain(&error),
                    "Kubernetes API call failed; trying again"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(self.retry.max_wait);
                continue;
            }
            return Err(self.error(verb, kind, name, error, attempt));
        }
    }

    fn error(
        &self,
        verb: &'static str,
        kind: impl std::fmt::Display,
        name: &str,
        error: kube::Error,
        attempts: u32,
    ) -> ClusterError {
        let (kind, name, namespace) = (kind.to_string(), name.to_string(), self.namespace.clone());
        match error {
            kube::Error::Api(status) => {
                let message = status.message.clone();
                match (status.code, status.reason.as_str()) {
                    (409, "Conflict") if verb == "apply" => ClusterError::Conflict {
                        kind,
                        name,
                        namespace,
                        message,
                    },
                    (403, _) => ClusterError::Forbidden {
                        verb,
                        kind,
                        name,
                        namespace,
                        message,
                    },
                    (422, _) => ClusterError::Invalid {
                        kind,
                        name,
                        namespace,
                        message,
                    },
                    (code, _) => ClusterError::Api {
                        verb,
                        kind,
                        name,
                        namespace,
                        code,
                        message,
                        attempts,
                    },
                }
            }
            other => ClusterError::Unreachable {
                verb,
                kind,
                name,
                url: self.url.clone(),
                message: labforge_core::error_chain(&other),
                attempts,
            },
        }
    }
}

fn to_value(object: &DynamicObject) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}
