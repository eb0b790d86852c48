//! One smoke test as a Kubernetes Pod: the `kubernetes` build backend's
//! counterpart of the engine's smoke-test container.
//!
//! The Pod (`labforge_core::cluster::testpod`) runs the test's command in a
//! container from the pushed image, by digest. Here: delete a pod of the
//! same name left by an interrupted run, create the pod, wait for it to
//! start (an image that cannot be pulled or a container that cannot be
//! created fails at once, naming the kubelet's reason; anything else that
//! keeps it Pending, such as no node with room or a GPU yet, fails after
//! [`TestPodSettings::start_seconds`], so that a cluster autoscaler has
//! time to add a node), follow its log line by line (every line to the
//! caller, the last ones kept as the output), and read the container's
//! exit code when it ends. The pod is deleted whatever happened. At most
//! `concurrency` tests run at once.
//!
//! The test's timeout counts from the moment its container runs, not from
//! the pod's creation (pulling a CUDA image must not eat it): when it has
//! passed, the pod is deleted and the test has timed out. The pod's own
//! `activeDeadlineSeconds` (time to start plus the timeout) is the
//! backstop that ends it should labforge be gone; a pod that the kubelet
//! failed with `DeadlineExceeded` has timed out too.
//!
//! Must not decide what the Pod looks like (that is the pure core), and
//! must not record anything: the caller records the test as it does for
//! the engine's.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use labforge_core::cluster::testpod::{self, TestPod, TestPodSettings};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::cluster::{Cluster, ClusterError};
use crate::engine::TestRun;
use crate::kube_build::{LOG_CHECK, tail_text, waiting};

/// Lines of a test's output kept in [`TestRun::output`] (the engine keeps
/// as many).
const OUTPUT_LINES: usize = 2000;

/// Lines of the log in the error of a pod that failed without an exit code.
const TAIL: usize = 40;

/// Waiting reasons after which a container never starts without someone
/// changing something (the image, its registry's login, the pod's
/// configuration): the test fails at once.
const FATAL_WAITING: &[&str] = &[
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
];

/// Pull failures the kubelet retries: fatal only when the registry said
/// the image or the login is wrong ([`PERMANENT_PULL`]); a timeout or a
/// 5xx right after the push is waited out until `start_seconds`.
const PULL_WAITING: &[&str] = &["ErrImagePull", "ImagePullBackOff"];

/// What a registry says when a pull can never work (matched in the
/// kubelet's message, lowercased, with every `sha256:` digest taken out:
/// a digest's hex may hold "401" or "404").
const PERMANENT_PULL: &[&str] = &[
    "not found",
    "notfound",
    "manifest unknown",
    "unauthorized",
    "denied",
    "forbidden",
];

#[derive(Debug, thiserror::Error)]
pub enum KubeTestError {
    /// Boxed: with the image and test names beside it, a `ClusterError`
    /// would make every result of this module large.
    #[error("{image}: smoke test {test}: {source}")]
    Cluster {
        image: String,
        test: String,
        source: Box<ClusterError>,
    },
    #[error("{image}: smoke test {test}: its pod {pod} cannot start: {reason}")]
    NotStarted {
        image: String,
        test: String,
        pod: String,
        reason: String,
    },
    #[error(
        "{image}: smoke test {test}: its pod {pod} did not start within {seconds} s ({reason}); raise start_seconds if scheduling or pulling the image takes longer"
    )]
    StartTimeout {
        image: String,
        test: String,
        pod: String,
        seconds: u32,
        reason: String,
    },
    #[error(
        "{image}: smoke test {test}: its pod {pod} failed without an exit code: {reason}{}",
        tail_text(.tail)
    )]
    Failed {
        image: String,
        test: String,
        pod: String,
        reason: String,
        tail: Vec<String>,
    },
    #[error(
        "{image}: smoke test {test}: its pod {pod} vanished before it ended (deleted by someone else?)"
    )]
    Vanished {
        image: String,
        test: String,
        pod: String,
    },
    #[error(
        "{image}: smoke test {test}: the pod {pod} left by an earlier run is still there {seconds} s after it was deleted"
    )]
    Leftover {
        image: String,
        test: String,
        pod: String,
        seconds: u32,
    },
}

/// One smoke test to run.
#[derive(Debug, Clone, Copy)]
pub struct TestRequest<'a> {
    /// Catalog image name.
    pub image: &'a str,
    /// The 64-hex content identity.
    pub identity: &'a str,
    /// The test's name (the catalog's, or the server test's).
    pub test: &'a str,
    /// `<registry>/<repo>@sha256:…`: the pushed image.
    pub reference: &'a str,
    /// Shell text, run with `/bin/sh -c`.
    pub run: &'a str,
    /// How long it may run once its container has started.
    pub timeout: Duration,
    /// Needs one GPU (runs on the GPU nodes).
    pub gpu: bool,
}

pub struct KubeTester {
    cluster: Cluster,
    settings: TestPodSettings,
    instance: String,
    limit: Arc<Semaphore>,
    /// Between looks at a pod's status.
    pub poll: Duration,
}

/// What errors are about.
struct Names<'a> {
    image: &'a str,
    test: &'a str,
    pod: &'a str,
}

impl Names<'_> {
    fn cluster(&self, source: ClusterError) -> KubeTestError {
        KubeTestError::Cluster {
            image: self.image.into(),
            test: self.test.into(),
            source: Box::new(source),
        }
    }

    fn vanished(&self) -> KubeTestError {
        KubeTestError::Vanished {
            image: self.image.into(),
            test: self.test.into(),
            pod: self.pod.into(),
        }
    }
}

/// The last lines of a test's output.
struct Output {
    lines: VecDeque<String>,
    max: usize,
}

impl Output {
    fn new(max: usize) -> Output {
        Output {
            lines: VecDeque::new(),
            max,
        }
    }

    fn push(&mut self, line: &str) {
        if self.lines.len() == self.max {
            self.lines.pop_front();
        }
        self.lines.push_back(line.to_string());
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    fn tail(&self, n: usize) -> Vec<String> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect()
    }
}

impl KubeTester {
    pub fn new(
        cluster: Cluster,
        settings: TestPodSettings,
        instance: &str,
        concurrency: usize,
    ) -> KubeTester {
        KubeTester {
            cluster,
            settings,
            instance: instance.to_string(),
            limit: Arc::new(Semaphore::new(concurrency.max(1))),
            poll: Duration::from_secs(2),
        }
    }

    /// Run one smoke test; `on_line` gets every line of the pod's log.
    /// A test that ran gives its exit code (`None` when it timed out),
    /// whatever the code; an error means it could not run to its end.
    pub async fn run(
        &self,
        request: &TestRequest<'_>,
        mut on_line: impl FnMut(&str),
    ) -> Result<TestRun, KubeTestError> {
        let _permit = self.limit.acquire().await;
        // Whole seconds, rounded up: the pod's deadline is in seconds.
        let timeout_seconds = request
            .timeout
            .as_secs()
            .saturating_add(u64::from(request.timeout.subsec_nanos() > 0));
        let body = testpod::test_pod(&TestPod {
            instance: &self.instance,
            image: request.image,
            identity: request.identity,
            test: request.test,
            reference: request.reference,
            run: request.run,
            timeout_seconds,
            gpu: request.gpu,
            settings: &self.settings,
        });
        let name = testpod::test_pod_name(
            &self.instance,
            request.image,
            request.identity,
            request.test,
        );
        let names = Names {
            image: request.image,
            test: request.test,
            pod: &name,
        };
        let start_seconds = self.settings.start_seconds.max(1);
        let start_deadline = Instant::now() + Duration::from_secs(u64::from(start_seconds));
        self.clear_leftover(&names, start_deadline).await?;
        let created = match self.cluster.create_pod(&body).await {
            Ok(created) => created,
            Err(e) => {
                // A create that landed before its answer was lost (and was
                // retried) leaves a pod that would run unwatched.
                if let Err(d) = self.cluster.delete_pod(&name).await {
                    tracing::warn!(image = request.image, test = request.test, k8s.pod = %name, error = %d, "cannot delete a test pod whose creation failed; its deadline ends it");
                }
                return Err(names.cluster(e));
            }
        };
        let uid = created
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        tracing::info!(
            image = request.image,
            test = request.test,
            k8s.pod = %name,
            gpu = request.gpu,
            "smoke-test pod created"
        );
        let result = self
            .watch(&names, &uid, request.timeout, start_deadline, &mut on_line)
            .await;
        match self.cluster.delete_pod(&name).await {
            Ok(_) => tracing::info!(
                image = request.image,
                test = request.test,
                k8s.pod = %name,
                "smoke-test pod deleted"
            ),
            Err(e) => tracing::warn!(
                image = request.image,
                test = request.test,
                k8s.pod = %name,
                error = %e,
                "the smoke-test pod could not be deleted; its activeDeadlineSeconds ends it, but it stays until deleted"
            ),
        }
        result
    }

    /// Delete a pod of the same name left by an interrupted run of the same
    /// test, and wait until it is gone (a new one cannot be created before).
    async fn clear_leftover(
        &self,
        names: &Names<'_>,
        deadline: Instant,
    ) -> Result<(), KubeTestError> {
        let pod = names.pod;
        if self
            .cluster
            .pod(pod)
            .await
            .map_err(|e| names.cluster(e))?
            .is_none()
        {
            return Ok(());
        }
        tracing::warn!(
            image = names.image,
            test = names.test,
            k8s.pod = %pod,
            "deleting a leftover smoke-test pod"
        );
        let since = Instant::now();
        self.cluster
            .delete_pod(pod)
            .await
            .map_err(|e| names.cluster(e))?;
        while self
            .cluster
            .pod(pod)
            .await
            .map_err(|e| names.cluster(e))?
            .is_some()
        {
            if Instant::now() >= deadline {
                return Err(KubeTestError::Leftover {
                    image: names.image.into(),
                    test: names.test.into(),
                    pod: pod.into(),
                    seconds: u32::try_from(since.elapsed().as_secs()).unwrap_or(u32::MAX),
                });
            }
            tokio::time::sleep(self.poll).await;
        }
        Ok(())
    }

    /// The pod, if it still is the one created (`uid`).
    async fn current(&self, names: &Names<'_>, uid: &str) -> Result<Value, KubeTestError> {
        let pod = self
            .cluster
            .pod(names.pod)
            .await
            .map_err(|e| names.cluster(e))?;
        match pod {
            Some(p) if uid.is_empty() || str_at(&p, "/metadata/uid") == uid => Ok(p),
            _ => Err(names.vanished()),
        }
    }

    async fn watch(
        &self,
        names: &Names<'_>,
        uid: &str,
        timeout: Duration,
        start_deadline: Instant,
        on_line: &mut impl FnMut(&str),
    ) -> Result<TestRun, KubeTestError> {
        // Until its container runs (or the pod has ended already).
        loop {
            let pod = self.current(names, uid).await?;
            if phase(&pod) == "Running" {
                break;
            }
            if matches!(phase(&pod), "Succeeded" | "Failed") {
                // Ran between two looks: its log is read all the same. Or
                // failed before its container ran (evicted, refused by the
                // node, its deadline passed while it waited).
                if terminated(&pod).is_some() {
                    break;
                }
                return Err(KubeTestError::NotStarted {
                    image: names.image.into(),
                    test: names.test.into(),
                    pod: names.pod.into(),
                    reason: pod_reason(&pod),
                });
            }
            if fatal_waiting(&pod) {
                return Err(KubeTestError::NotStarted {
                    image: names.image.into(),
                    test: names.test.into(),
                    pod: names.pod.into(),
                    reason: waiting(&pod),
                });
            }
            if Instant::now() >= start_deadline {
                return Err(KubeTestError::StartTimeout {
                    image: names.image.into(),
                    test: names.test.into(),
                    pod: names.pod.into(),
                    seconds: self.settings.start_seconds.max(1),
                    reason: waiting(&pod),
                });
            }
            tokio::time::sleep(self.poll).await;
        }
        let run_deadline = Instant::now() + timeout;

        let mut output = Output::new(OUTPUT_LINES);
        let mut timed_out = false;
        {
            let follow = self
                .cluster
                .follow_log(names.pod, testpod::CONTAINER, |line| {
                    on_line(line);
                    output.push(line);
                });
            tokio::pin!(follow);
            let out_of_time = tokio::time::sleep_until(run_deadline);
            tokio::pin!(out_of_time);
            // The log ends with the container. Should the stream hang (a
            // half-open connection), the pod's end ends the wait.
            let mut ended_at: Option<Instant> = None;
            loop {
                tokio::select! {
                    followed = &mut follow => {
                        followed.map_err(|e| names.cluster(e))?;
                        break;
                    }
                    () = &mut out_of_time, if !timed_out => {
                        timed_out = true;
                        tracing::info!(
                            image = names.image,
                            test = names.test,
                            k8s.pod = %names.pod,
                            timeout_s = timeout.as_secs(),
                            "smoke test timed out; deleting its pod"
                        );
                        self.cluster
                            .delete_pod(names.pod)
                            .await
                            .map_err(|e| names.cluster(e))?;
                    }
                    () = tokio::time::sleep(LOG_CHECK) => {
                        let pod = self.cluster.pod(names.pod).await.map_err(|e| names.cluster(e))?;
                        let ended = pod.as_ref().is_none_or(|p| {
                            matches!(phase(p), "Succeeded" | "Failed")
                                || p.pointer("/metadata/deletionTimestamp").is_some()
                        });
                        match (ended, ended_at) {
                            (true, Some(t)) if t.elapsed() >= LOG_CHECK => break,
                            (true, None) => ended_at = Some(Instant::now()),
                            _ => {}
                        }
                    }
                }
            }
        }
        if timed_out {
            return Ok(TestRun {
                exit_code: None,
                timed_out: true,
                output: output.text(),
            });
        }

        // The log ends with the container; the pod's status follows.
        loop {
            let pod = self.current(names, uid).await?;
            if matches!(phase(&pod), "Succeeded" | "Failed") {
                return ended(names, &pod, output, on_line);
            }
            if Instant::now() >= run_deadline {
                // Its log stream ended early, and the test ran out of time.
                self.cluster
                    .delete_pod(names.pod)
                    .await
                    .map_err(|e| names.cluster(e))?;
                return Ok(TestRun {
                    exit_code: None,
                    timed_out: true,
                    output: output.text(),
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

/// The result of a pod that ended.
fn ended(
    names: &Names<'_>,
    pod: &Value,
    mut output: Output,
    on_line: &mut impl FnMut(&str),
) -> Result<TestRun, KubeTestError> {
    if str_at(pod, "/status/reason") == "DeadlineExceeded" {
        return Ok(TestRun {
            exit_code: None,
            timed_out: true,
            output: output.text(),
        });
    }
    let state = terminated(pod);
    let exit_code = state
        .and_then(|t| t.get("exitCode"))
        .and_then(Value::as_i64)
        .or_else(|| (phase(pod) == "Succeeded").then_some(0));
    let Some(exit_code) = exit_code else {
        return Err(KubeTestError::Failed {
            image: names.image.into(),
            test: names.test.into(),
            pod: names.pod.into(),
            reason: pod_reason(pod),
            tail: output.tail(TAIL),
        });
    };
    // Why the kubelet ended it, when the container did not simply exit
    // (e.g. OOMKilled): the output would not say.
    let reason = state
        .and_then(|t| t.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !reason.is_empty() && !matches!(reason, "Completed" | "Error") {
        let line = format!("[kubelet] the container was terminated: {reason}");
        on_line(&line);
        output.push(&line);
    }
    Ok(TestRun {
        exit_code: Some(exit_code),
        timed_out: false,
        output: output.text(),
    })
}

fn str_at(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The test container's status (the only container; by name all the same).
fn container_status(pod: &Value) -> Option<&Value> {
    let statuses = pod.pointer("/status/containerStatuses")?.as_array()?;
    statuses
        .iter()
        .find(|c| c["name"] == testpod::CONTAINER)
        .or_else(|| statuses.first())
}

/// The container's `state.terminated`, once it ran and ended.
fn terminated(pod: &Value) -> Option<&Value> {
    container_status(pod).and_then(|c| c.pointer("/state/terminated"))
}

/// Why a pod ended (or is not running): its reason and message, else its
/// containers' waiting reasons.
fn pod_reason(pod: &Value) -> String {
    match (
        str_at(pod, "/status/reason"),
        str_at(pod, "/status/message"),
    ) {
        (r, m) if r.is_empty() && m.is_empty() => waiting(pod),
        (r, m) if m.is_empty() => r,
        (r, m) if r.is_empty() => m,
        (r, m) => format!("{r}: {m}"),
    }
}

/// `text` with each `sha256:<hex>` replaced by `sha256:…`.
fn without_digests(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("sha256:") {
        out.push_str(&rest[..at + "sha256:".len()]);
        out.push('…');
        rest = rest[at + "sha256:".len()..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
    }
    out.push_str(rest);
    out
}

/// Whether the container waits for something that will not come by itself.
fn fatal_waiting(pod: &Value) -> bool {
    let Some(waiting) = container_status(pod).and_then(|c| c.pointer("/state/waiting")) else {
        return false;
    };
    let reason = waiting["reason"].as_str().unwrap_or_default();
    let message = without_digests(
        &waiting["message"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase(),
    );
    FATAL_WAITING.contains(&reason)
        || PULL_WAITING.contains(&reason) && PERMANENT_PULL.iter().any(|p| message.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fatal_waiting_reasons() {
        let pod = |reason: &str| {
            json!({"status": {"phase": "Pending", "containerStatuses": [
                {"name": "test", "state": {"waiting": {"reason": reason}}}
            ]}})
        };
        for r in FATAL_WAITING {
            assert!(fatal_waiting(&pod(r)), "{r}");
        }
        // A pull failure is fatal only when the registry refused for good.
        let pull = |reason: &str, message: &str| {
            json!({"status": {"phase": "Pending", "containerStatuses": [
                {"name": "test", "state": {"waiting": {"reason": reason, "message": message}}}
            ]}})
        };
        for r in PULL_WAITING {
            assert!(
                fatal_waiting(&pull(
                    r,
                    "failed to resolve reference \"r/x@sha256:1\": r/x@sha256:1: not found"
                )),
                "{r}"
            );
            assert!(
                fatal_waiting(&pull(r, "pulling from host r: 401 Unauthorized")),
                "{r}"
            );
            assert!(
                !fatal_waiting(&pull(r, "dial tcp 10.0.0.5:5000: i/o timeout")),
                "{r}"
            );
            assert!(
                !fatal_waiting(&pull(
                    r,
                    "received unexpected HTTP status: 503 Service Unavailable"
                )),
                "{r}"
            );
            // A digest whose hex holds "401" or "404" is not a refusal.
            let digest = "sha256:4014040000000000000000000000000000000000000000000000000000000000";
            assert!(
                !fatal_waiting(&pull(
                    r,
                    &format!("pulling r/x@{digest}: dial tcp: i/o timeout")
                )),
                "{r}"
            );
        }
        for r in ["ContainerCreating", "PodInitializing", ""] {
            assert!(!fatal_waiting(&pod(r)), "{r}");
        }
        let unschedulable = json!({"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}
        ]}});
        assert!(!fatal_waiting(&unschedulable), "waits for an autoscaler");
        assert!(
            waiting(&unschedulable).contains("Insufficient nvidia.com/gpu"),
            "{}",
            waiting(&unschedulable)
        );
    }

    #[test]
    fn output_keeps_the_last_lines() {
        let mut o = Output::new(3);
        for l in ["a", "b", "c", "d"] {
            o.push(l);
        }
        assert_eq!(o.text(), "b\nc\nd\n");
        assert_eq!(o.tail(2), vec!["c".to_string(), "d".to_string()]);
        assert_eq!(Output::new(3).text(), "");
    }
}
