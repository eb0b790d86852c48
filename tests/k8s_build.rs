//! The `kubernetes` build backend's runner (`labforge_builder::kube_build`)
//! against the fake Kubernetes API server, which enforces the hub's Role,
//! with a real context server: the Job created (and valid Kubernetes), its
//! context fetched once with its token, its log streamed back line by line,
//! the digest read from BuildKit's metadata line, and the Job deleted
//! whatever happened; a failed build reported with the end of its log; a
//! build without a digest refused; at most `concurrency` Jobs at once.

#[path = "common/fake_kube.rs"]
mod fake_kube;
#[path = "common/kube_validate.rs"]
mod kube_validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_kube::FakeKube;
use labforge_builder::cluster::{Cluster, ClusterOptions, Retry};
use labforge_builder::context_server::ContextServer;
use labforge_builder::kube_build::{BuildRequest, KubeBuildError, KubeBuilder};
use labforge_core::cluster::job::{BuildJobSettings, METADATA_MARKER};
use serde_json::Value;

const DIGEST: &str = "sha256:5f2b8c1c9d6e4a3b2f1e0d9c8b7a69584736251403f2e1d0c9b8a7f6e5d4c3b2";

fn context_tar(dir: &Path) -> PathBuf {
    let src = dir.join("context");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(
        src.join("Dockerfile"),
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n",
    )
    .expect("write");
    let tar = dir.join("context.tar");
    let out = std::process::Command::new("tar")
        .args(["-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .output()
        .expect("tar runs");
    assert!(out.status.success());
    tar
}

async fn builder(fake: &FakeKube, dir: &Path, concurrency: usize) -> KubeBuilder {
    let cluster = Cluster::connect(&ClusterOptions {
        namespace: None,
        context: None,
        kubeconfig: Some(fake.kubeconfig(dir)),
        retry: Retry {
            attempts: 3,
            first_wait: Duration::from_millis(50),
            max_wait: Duration::from_millis(200),
        },
    })
    .await
    .expect("connect to the fake");
    assert_eq!(cluster.namespace(), "labforge");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let contexts = ContextServer::bind(
        format!("127.0.0.1:{port}").parse().expect("addr"),
        format!("http://127.0.0.1:{port}"),
    )
    .await
    .expect("the context server binds");
    let mut b = KubeBuilder::new(
        cluster,
        contexts,
        BuildJobSettings::default(),
        "labforge",
        concurrency,
    );
    b.poll = Duration::from_millis(50);
    b
}

fn args() -> BTreeMap<String, String> {
    BTreeMap::from([(
        "BASE_IMAGE".to_string(),
        format!("127.0.0.1:5000/standin/busybox@{DIGEST}"),
    )])
}

/// Start a build of `image` in the background.
fn spawn_build(
    builder: &Arc<KubeBuilder>,
    tar: &Path,
    image: &'static str,
    identity: String,
) -> tokio::task::JoinHandle<Result<labforge_core::cluster::job::Pushed, KubeBuildError>> {
    let (builder, tar) = (builder.clone(), tar.to_path_buf());
    tokio::spawn(async move {
        let build_args = args();
        let request = BuildRequest {
            image,
            identity: &identity,
            target: "127.0.0.1:5000/labforge/x",
            labels: &BTreeMap::new(),
            build_args: &build_args,
            platform: "linux/amd64",
            context_tar: &tar,
        };
        builder.build(&request, |_| {}).await
    })
}

/// Wait until the fake holds a Job whose name contains `part`.
async fn job_named(fake: &FakeKube, part: &str) -> Value {
    for _ in 0..200 {
        if let Some(job) = fake.objects("jobs").into_iter().find(|j| {
            j["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.contains(part))
        }) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "no Job named *{part}* was created: {:#?}",
        fake.objects("jobs")
    );
}

fn env(job: &Value, name: &str) -> String {
    job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == name))
        .and_then(|v| v["value"].as_str())
        .unwrap_or_else(|| panic!("no {name} in {job:#}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_job_fetches_its_context_once_streams_its_log_and_is_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeKube::start();
    let builder = Arc::new(builder(&fake, dir.path(), 1).await);
    let tar = context_tar(dir.path());
    let identity = "a1b2c3d4e5f6".repeat(5) + "abcd";

    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let run = {
        let (builder, lines, tar, identity) = (
            builder.clone(),
            lines.clone(),
            tar.clone(),
            identity.clone(),
        );
        tokio::spawn(async move {
            let build_args = args();
            let request = BuildRequest {
                image: "notebook-minimal-cpu",
                identity: &identity,
                target: "127.0.0.1:5000/labforge/notebook",
                labels: &BTreeMap::new(),
                build_args: &build_args,
                platform: "linux/amd64",
                context_tar: &tar,
            };
            builder
                .build(&request, |l| {
                    lines.lock().expect("lock").push(l.to_string())
                })
                .await
        })
    };
    let job = job_named(&fake, "notebook-minimal-cpu").await;
    let name = job["metadata"]["name"].as_str().expect("name").to_string();
    assert!(name.ends_with("-a1b2c3d4e5f6"), "{name}");
    kube_validate::validate_docs(&[fake
        .writes()
        .iter()
        .find(|c| c.method == "POST")
        .and_then(|c| c.body.clone())
        .expect("the POSTed Job")])
    .expect("the Job is valid Kubernetes");

    // What the pod does first: fetch the context with its token, once.
    let url = env(&job, "LABFORGE_CONTEXT_URL");
    let token = env(&job, "LABFORGE_CONTEXT_TOKEN");
    let http = reqwest::Client::new();
    let first = http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    assert_eq!(first.status().as_u16(), 200);
    let body = first.bytes().await.expect("body");
    assert_eq!(body.as_ref(), std::fs::read(&tar).expect("tar").as_slice());
    let again = http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    assert_eq!(again.status().as_u16(), 410, "a token works once");

    let metadata = format!(
        "{METADATA_MARKER}{{\"containerimage.digest\":\"{DIGEST}\",\"image.name\":\"127.0.0.1:5000/labforge/notebook\"}}"
    );
    fake.run_job(
        &name,
        &[
            "#1 [internal] load build definition",
            "#9 pushing layers done",
            &metadata,
        ],
        true,
    );
    let pushed = run.await.expect("joined").expect("the build succeeds");
    assert_eq!(pushed.digest, DIGEST);
    let seen = lines.lock().expect("lock").clone();
    assert_eq!(seen[0], "#1 [internal] load build definition");
    assert_eq!(seen.len(), 3, "{seen:?}");
    // Deleted in the background, with its pod.
    assert!(fake.object("jobs", &name).is_none());
    assert!(fake.job_pods(&name).is_empty());
    let delete = fake
        .writes()
        .into_iter()
        .find(|c| c.method == "DELETE")
        .expect("a DELETE");
    assert_eq!(
        delete.body.unwrap_or_default()["propagationPolicy"],
        "Background"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_is_reported_with_its_log_and_a_silent_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeKube::start();
    let builder = Arc::new(builder(&fake, dir.path(), 2).await);
    let tar = context_tar(dir.path());

    let failing = spawn_build(&builder, &tar, "failing", "f".repeat(64));
    let silent = spawn_build(&builder, &tar, "silent", "5".repeat(64));
    let failing_job = job_named(&fake, "failing").await;
    let silent_job = job_named(&fake, "silent").await;
    let name = |j: &Value| j["metadata"]["name"].as_str().expect("name").to_string();
    fake.run_job(
        &name(&failing_job),
        &[
            "#5 RUN pip install nope",
            "ERROR: No matching distribution found for nope",
        ],
        false,
    );
    fake.run_job(&name(&silent_job), &["#1 done"], true);

    let err = failing
        .await
        .expect("joined")
        .expect_err("a failed Job fails the build");
    assert!(matches!(err, KubeBuildError::Failed { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("ERROR: No matching distribution found for nope"),
        "{text}"
    );
    assert!(
        text.starts_with("failing: the build Job labforge-build-failing-ffffffffffff failed"),
        "{text}"
    );
    let err = silent
        .await
        .expect("joined")
        .expect_err("no digest, no success");
    assert!(matches!(err, KubeBuildError::NoDigest { .. }), "{err}");
    for j in [&failing_job, &silent_job] {
        assert!(
            fake.object("jobs", &name(j)).is_none(),
            "deleted after a failure too"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_jobs_run_at_once_than_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeKube::start();
    let builder = Arc::new(builder(&fake, dir.path(), 1).await);
    let tar = context_tar(dir.path());
    let metadata = format!("{METADATA_MARKER}{{\"containerimage.digest\":\"{DIGEST}\"}}");
    let one = spawn_build(&builder, &tar, "one", "1".repeat(64));
    let three = spawn_build(&builder, &tar, "three", "3".repeat(64));
    let first = job_named(&fake, "-build-").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.objects("jobs").len(),
        1,
        "the second waits for the first"
    );
    fake.run_job(
        first["metadata"]["name"].as_str().expect("name"),
        &[&metadata],
        true,
    );
    let other = if first["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n.contains("-one-"))
    {
        "three"
    } else {
        "one"
    };
    let second = job_named(&fake, &format!("-build-{other}-")).await;
    fake.run_job(
        second["metadata"]["name"].as_str().expect("name"),
        &[&metadata],
        true,
    );
    assert_eq!(one.await.expect("joined").expect("built").digest, DIGEST);
    assert_eq!(three.await.expect("joined").expect("built").digest, DIGEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_never_starts_fails_the_build_when_its_token_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeKube::start();
    let mut builder = builder(&fake, dir.path(), 1).await;
    builder.token_ttl = Duration::from_secs(1);
    let tar = context_tar(dir.path());
    let build_args = args();
    let identity = "7".repeat(64);
    let request = BuildRequest {
        image: "stuck",
        identity: &identity,
        target: "127.0.0.1:5000/labforge/x",
        labels: &BTreeMap::new(),
        build_args: &build_args,
        platform: "linux/amd64",
        context_tar: &tar,
    };
    // Nobody runs the Job: its pod stays Pending.
    let err = builder
        .build(&request, |_| {})
        .await
        .expect_err("a pod that never starts never builds");
    let text = err.to_string();
    assert!(
        text.contains("did not start before the context token expired"),
        "{text}"
    );
    assert!(text.contains("Pending"), "{text}");
    assert!(fake.objects("jobs").is_empty(), "the Job is deleted");
}
