//! One image build as a Kubernetes Job: the `kubernetes` build backend's
//! I/O half.
//!
//! The rendered context tarball is offered by the [`ContextServer`] under a
//! one-time token; the Job (`labforge_core::cluster::job`, a rootless
//! BuildKit pod) fetches it, builds, pushes by digest and prints
//! BuildKit's metadata. Here: create the Job, wait for its pod, follow its
//! log line by line (every line to the caller, for the build record), read
//! the pushed digest from the marked metadata line, wait for the Job to
//! end, and delete it (its pod goes with it) whatever happened. At most
//! `concurrency` Jobs run at once.
//!
//! Must not decide what the Job looks like (that is the pure core), and
//! must not record anything: the caller confirms the digest in the
//! registry and records the build, as it does for the engine.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use labforge_core::cluster::job::{self, BuildJob, BuildJobSettings, Pushed};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::cluster::{Cluster, ClusterError};
use crate::context_server::{ContextError, ContextServer};

/// Lines of the pod's log kept for the error of a failed build.
const TAIL: usize = 40;

/// How often a followed log checks that its Job (or, in `kube_test`, its
/// pod) still runs.
pub(crate) const LOG_CHECK: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum KubeBuildError {
    #[error("{image}: {source}")]
    Cluster { image: String, source: ClusterError },
    #[error("{image}: cannot offer the build context: {source}")]
    Context { image: String, source: ContextError },
    #[error(
        "{image}: the build Job {job} failed: {reason}{}",
        tail_text(.tail)
    )]
    Failed {
        image: String,
        job: String,
        reason: String,
        tail: Vec<String>,
    },
    #[error(
        "{image}: the build Job {job} ended without BuildKit's metadata line, so the pushed digest is unknown{}",
        tail_text(.tail)
    )]
    NoDigest {
        image: String,
        job: String,
        tail: Vec<String>,
    },
    #[error("{image}: the build Job {job} vanished before it ended (deleted by someone else?)")]
    Vanished { image: String, job: String },
    #[error(
        "{image}: another labforge run is building this image now (the build Job {job} has not ended); wait for that run, or, if it was killed, delete the Job (`kubectl delete job {job}`) and build again"
    )]
    Busy { image: String, job: String },
    #[error(
        "{image}: the leftover build Job {job} was deleted but is still there (held by a finalizer?); remove it by hand and build again"
    )]
    Leftover { image: String, job: String },
}

/// Whether the Job's build container was given `token` (so it is the one
/// this call created).
fn carries_token(job: &Value, token: &str) -> bool {
    job.pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["env"].as_array())
        .flatten()
        .any(|e| e["name"] == job::ENV_CONTEXT_TOKEN && e["value"] == token)
}

pub(crate) fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last lines of its log:\n{}", tail.join("\n"))
    }
}

/// One build to run.
pub struct BuildRequest<'a> {
    pub image: &'a str,
    pub identity: &'a str,
    /// `<registry>/<repo>`: the Job pushes by digest, untagged.
    pub target: &'a str,
    pub build_args: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
    pub platform: &'a str,
    /// The uncompressed context tar, as `engine::context_tar` writes it.
    pub context_tar: &'a Path,
}

pub struct KubeBuilder {
    cluster: Cluster,
    contexts: ContextServer,
    settings: BuildJobSettings,
    instance: String,
    limit: Arc<Semaphore>,
    /// How long a context token works.
    pub token_ttl: Duration,
    /// Between looks at a Job's pod and status.
    pub poll: Duration,
}

impl KubeBuilder {
    pub fn new(
        cluster: Cluster,
        contexts: ContextServer,
        settings: BuildJobSettings,
        instance: &str,
        concurrency: usize,
    ) -> KubeBuilder {
        KubeBuilder {
            cluster,
            contexts,
            settings,
            instance: instance.to_string(),
            limit: Arc::new(Semaphore::new(concurrency.max(1))),
            token_ttl: Duration::from_secs(600),
            poll: Duration::from_secs(2),
        }
    }

    /// Run one build; `on_line` gets every line of the pod's log.
    pub async fn build(
        &self,
        request: &BuildRequest<'_>,
        mut on_line: impl FnMut(&str),
    ) -> Result<Pushed, KubeBuildError> {
        let image = request.image.to_string();
        let cluster_error = |source| KubeBuildError::Cluster {
            image: image.clone(),
            source,
        };
        let _permit = self.limit.acquire().await;
        let ticket = self
            .contexts
            .offer(request.context_tar.to_path_buf(), self.token_ttl)
            .map_err(|source| KubeBuildError::Context {
                image: image.clone(),
                source,
            })?;
        let body = job::build_job(&BuildJob {
            instance: &self.instance,
            image: request.image,
            identity: request.identity,
            target: request.target,
            build_args: request.build_args,
            labels: request.labels,
            platform: request.platform,
            context_url: &ticket.url,
            context_token: ticket.token.expose_secret(),
            token_expires_at: ticket.expires_at,
            settings: &self.settings,
        });
        let name = job::job_name(&self.instance, request.image, request.identity);
        // A Job of the same name is from another run of the same build.
        // One that has not ended may be building for a run going on now
        // (its token only bounds its start): it is left alone. One that
        // ended, or never started before its token expired, is left from
        // an interrupted run and has no future.
        if let Some(existing) = self.cluster.job(&name).await.map_err(cluster_error)? {
            let expires = existing
                .pointer(&format!(
                    "/metadata/annotations/{}",
                    job::EXPIRES_ANNOTATION.replace('/', "~1")
                ))
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<i64>().ok())
                .unwrap_or(0);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let ended = condition(&existing, "Complete").is_some() || failure(&existing).is_some();
            let started = existing
                .pointer("/status/active")
                .and_then(Value::as_u64)
                .is_some_and(|n| n > 0);
            if !ended && (expires > now || started) {
                return Err(KubeBuildError::Busy {
                    image: image.clone(),
                    job: name,
                });
            }
            tracing::warn!(image = %image, k8s.job = %name, "deleting a leftover build Job");
            self.cluster
                .delete_job(&name)
                .await
                .map_err(cluster_error)?;
            let until = tokio::time::Instant::now() + self.token_ttl;
            while self
                .cluster
                .job(&name)
                .await
                .map_err(cluster_error)?
                .is_some()
            {
                if tokio::time::Instant::now() >= until {
                    return Err(KubeBuildError::Leftover {
                        image: image.clone(),
                        job: name,
                    });
                }
                tokio::time::sleep(self.poll).await;
            }
        }
        let created = match self.cluster.create_job(&body).await {
            Ok(created) => created,
            // It exists: our own create that landed before a retry (it
            // carries our one-time token), or another run's, created
            // between our look and our create.
            Err(ClusterError::Api { code: 409, .. }) => {
                let token = ticket.token.expose_secret();
                match self.cluster.job(&name).await.map_err(cluster_error)? {
                    Some(existing) if carries_token(&existing, token) => existing,
                    _ => {
                        return Err(KubeBuildError::Busy {
                            image: image.clone(),
                            job: name,
                        });
                    }
                }
            }
            Err(e) => {
                // A create that landed before its answer was lost (and was
                // retried) leaves a Job with a live token: take it down.
                if let Err(d) = self.cluster.delete_job(&name).await {
                    tracing::warn!(image = %image, k8s.job = %name, error = %d, "cannot delete a build Job whose creation failed; its deadline ends it");
                }
                return Err(cluster_error(e));
            }
        };
        let uid = created
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        tracing::info!(image = %image, k8s.job = %name, "build Job created");
        let deadline = tokio::time::Instant::now() + self.token_ttl;
        let result = self
            .follow(&image, &name, &uid, deadline, &mut on_line)
            .await;
        match self.cluster.delete_job(&name).await {
            Ok(_) => tracing::info!(image = %image, k8s.job = %name, "build Job deleted"),
            Err(e) => tracing::warn!(
                image = %image,
                k8s.job = %name,
                error = %e,
                "the build Job could not be deleted; its ttlSecondsAfterFinished removes it"
            ),
        }
        result
    }

    async fn follow(
        &self,
        image: &str,
        name: &str,
        uid: &str,
        deadline: tokio::time::Instant,
        on_line: &mut impl FnMut(&str),
    ) -> Result<Pushed, KubeBuildError> {
        let cluster_error = |source| KubeBuildError::Cluster {
            image: image.to_string(),
            source,
        };
        // The pod, once it runs (or already ended).
        let pod = loop {
            let started = self.started_pod(name, uid).await.map_err(cluster_error)?;
            if let (Some(pod_name), _) = &started {
                break pod_name.clone();
            }
            // Failed before its pod ran. It may have run in between the two
            // looks: then its log is read all the same.
            if let Some(reason) = self.failed(image, name).await? {
                if let (Some(pod_name), _) =
                    self.started_pod(name, uid).await.map_err(cluster_error)?
                {
                    break pod_name;
                }
                return Err(KubeBuildError::Failed {
                    image: image.into(),
                    job: name.into(),
                    reason,
                    tail: Vec::new(),
                });
            }
            let pod = started.1;
            // Its context token dies now: a pod that has not started by
            // then (unschedulable, an image or Secret it cannot get) never
            // builds.
            if tokio::time::Instant::now() >= deadline {
                return Err(KubeBuildError::Failed {
                    image: image.into(),
                    job: name.into(),
                    reason: format!(
                        "its pod did not start before the context token expired ({})",
                        pod.as_ref()
                            .map(waiting)
                            .unwrap_or_else(|| "no pod was created".into())
                    ),
                    tail: Vec::new(),
                });
            }
            tokio::time::sleep(self.poll).await;
        };
        let mut pushed = None;
        let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL);
        {
            let follow = self.cluster.follow_log(&pod, job::CONTAINER, |line| {
                on_line(line);
                if let Some(p) = job::parse_metadata(line) {
                    pushed = Some(p);
                }
                if tail.len() == TAIL {
                    tail.pop_front();
                }
                tail.push_back(line.to_string());
            });
            tokio::pin!(follow);
            // The log ends with the container. Should the stream hang (a
            // half-open connection), the Job's end ends the wait.
            let mut ended_at: Option<tokio::time::Instant> = None;
            loop {
                tokio::select! {
                    followed = &mut follow => {
                        followed.map_err(cluster_error)?;
                        break;
                    }
                    () = tokio::time::sleep(LOG_CHECK) => {
                        let job = self.cluster.job(name).await.map_err(cluster_error)?;
                        let ended = job.as_ref().is_none_or(|j| {
                            failure(j).is_some() || condition(j, "Complete").is_some()
                        });
                        match (ended, ended_at) {
                            (true, Some(t)) if t.elapsed() >= LOG_CHECK => break,
                            (true, None) => ended_at = Some(tokio::time::Instant::now()),
                            _ => {}
                        }
                    }
                }
            }
        }
        let tail: Vec<String> = tail.into_iter().collect();
        // The log ends with the container; the Job's status follows.
        loop {
            let Some(job) = self.cluster.job(name).await.map_err(cluster_error)? else {
                return Err(KubeBuildError::Vanished {
                    image: image.into(),
                    job: name.into(),
                });
            };
            if let Some(reason) = failure(&job) {
                return Err(KubeBuildError::Failed {
                    image: image.into(),
                    job: name.into(),
                    reason,
                    tail,
                });
            }
            if condition(&job, "Complete").is_some() {
                return pushed.ok_or(KubeBuildError::NoDigest {
                    image: image.into(),
                    job: name.into(),
                    tail,
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// The Job's pod: its name once it has started (running or ended),
    /// and the pod as listed.
    async fn started_pod(
        &self,
        name: &str,
        uid: &str,
    ) -> Result<(Option<String>, Option<Value>), ClusterError> {
        let pod = self.cluster.job_pod(name, uid).await?;
        let started = pod
            .as_ref()
            .filter(|p| {
                matches!(
                    p.pointer("/status/phase").and_then(Value::as_str),
                    Some("Running" | "Succeeded" | "Failed")
                )
            })
            .and_then(|p| p.pointer("/metadata/name").and_then(Value::as_str))
            .map(str::to_string);
        Ok((started, pod))
    }

    async fn failed(&self, image: &str, name: &str) -> Result<Option<String>, KubeBuildError> {
        match self.cluster.job(name).await {
            Ok(Some(job)) => Ok(failure(&job)),
            Ok(None) => Err(KubeBuildError::Vanished {
                image: image.into(),
                job: name.into(),
            }),
            Err(source) => Err(KubeBuildError::Cluster {
                image: image.into(),
                source,
            }),
        }
    }
}

/// Why a pod is not running: its containers' waiting reasons, or why it
/// cannot be scheduled.
pub(crate) fn waiting(pod: &Value) -> String {
    let mut reasons: Vec<String> = Vec::new();
    for c in pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(w) = c.pointer("/state/waiting") {
            let reason = w.get("reason").and_then(Value::as_str).unwrap_or("Waiting");
            let message = w.get("message").and_then(Value::as_str).unwrap_or("");
            reasons.push(format!("{reason} {message}").trim().to_string());
        }
    }
    for c in pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if c["type"] == "PodScheduled" && c["status"] == "False" {
            let message = c.get("message").and_then(Value::as_str).unwrap_or("");
            reasons.push(format!("unschedulable: {message}"));
        }
    }
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    if reasons.is_empty() {
        format!("pod phase {phase}")
    } else {
        format!("pod phase {phase}: {}", reasons.join("; "))
    }
}

/// The reason of a Job's `Failed` condition.
fn failure(job: &Value) -> Option<String> {
    condition(job, "Failed").map(|c| {
        let reason = c.get("reason").and_then(Value::as_str).unwrap_or("Failed");
        match c.get("message").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => format!("{reason}: {m}"),
            _ => reason.to_string(),
        }
    })
}

fn condition<'a>(job: &'a Value, kind: &str) -> Option<&'a Value> {
    job.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
}
