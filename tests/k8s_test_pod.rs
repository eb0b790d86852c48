//! Smoke tests as pods (`labforge_builder::kube_test`) against the fake
//! Kubernetes API server, which enforces the hub's Role: the pod created
//! (and valid Kubernetes) from the pushed image by digest with the test's
//! command as one `sh -c` argument, its log streamed back line by line, the
//! exit code read from the container's status, a deadline reported as a
//! timeout, an image that cannot be pulled or a pod that is never scheduled
//! reported with the kubelet's reason, the pod deleted whatever happened,
//! GPU tests on GPU nodes with one GPU, and at most `concurrency` pods at
//! once.

#[path = "common/fake_kube.rs"]
mod fake_kube;
#[path = "common/kube_validate.rs"]
mod kube_validate;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_kube::FakeKube;
use labforge_builder::cluster::{Cluster, ClusterOptions, Retry};
use labforge_builder::engine::TestRun;
use labforge_builder::kube_test::{KubeTestError, KubeTester, TestRequest};
use labforge_core::catalog::Toleration;
use labforge_core::cluster::testpod::TestPodSettings;
use serde_json::{Value, json};

const REFERENCE: &str = "127.0.0.1:5000/labforge/notebook@sha256:5f2b8c1c9d6e4a3b2f1e0d9c8b7a69584736251403f2e1d0c9b8a7f6e5d4c3b2";

async fn tester(
    fake: &FakeKube,
    dir: &Path,
    settings: TestPodSettings,
    concurrency: usize,
) -> KubeTester {
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
    let mut t = KubeTester::new(cluster, settings, "labforge", concurrency);
    t.poll = Duration::from_millis(50);
    t
}

fn gpu_settings() -> TestPodSettings {
    TestPodSettings {
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
        node_selector: BTreeMap::from([("labforge.io/pool".to_string(), "cpu".to_string())]),
        ..TestPodSettings::default()
    }
}

/// One test's request, owned, for a spawned task.
#[derive(Clone)]
struct Test {
    image: &'static str,
    identity: String,
    test: &'static str,
    run: &'static str,
    timeout: Duration,
    gpu: bool,
}

impl Test {
    fn new(image: &'static str, test: &'static str, run: &'static str) -> Test {
        Test {
            image,
            identity: "a1b2c3d4e5f6".repeat(5) + "abcd",
            test,
            run,
            timeout: Duration::from_secs(60),
            gpu: false,
        }
    }
}

type Lines = Arc<Mutex<Vec<String>>>;

/// Run a test in the background; every log line lands in the returned list.
fn spawn_test(
    tester: &Arc<KubeTester>,
    test: Test,
) -> (
    tokio::task::JoinHandle<Result<TestRun, KubeTestError>>,
    Lines,
) {
    let lines: Lines = Arc::new(Mutex::new(Vec::new()));
    let (tester, seen) = (tester.clone(), lines.clone());
    let handle = tokio::spawn(async move {
        let request = TestRequest {
            image: test.image,
            identity: &test.identity,
            test: test.test,
            reference: REFERENCE,
            run: test.run,
            timeout: test.timeout,
            gpu: test.gpu,
        };
        tester
            .run(&request, |l| seen.lock().expect("lock").push(l.to_string()))
            .await
    });
    (handle, lines)
}

/// Wait until the fake holds a pod whose name contains `part`; its name.
async fn pod_named(fake: &FakeKube, part: &str) -> String {
    for _ in 0..200 {
        if let Some(name) = fake
            .objects("pods")
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str())
            .find(|n| n.contains(part))
        {
            return name.to_string();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "no pod named *{part}* was created: {:#?}",
        fake.objects("pods")
    );
}

/// Wait until the fake holds the pod of the test named `test`; its name.
async fn pod_for_test(fake: &FakeKube, test: &str) -> String {
    for _ in 0..200 {
        if let Some(name) = fake
            .objects("pods")
            .iter()
            .find(|p| p["metadata"]["annotations"]["labforge.io/test"] == test)
            .and_then(|p| p["metadata"]["name"].as_str())
        {
            return name.to_string();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no pod of test {test}: {:#?}", fake.objects("pods"));
}

/// The bodies labforge POSTed to `pods`.
fn posted_pods(fake: &FakeKube) -> Vec<Value> {
    fake.writes()
        .into_iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/pods"))
        .filter_map(|c| c.body)
        .collect()
}

async fn joined<T>(handle: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("the test run ends")
        .expect("joined")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_test_streams_its_log_and_its_pod_is_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeKube::start();
    let tester = Arc::new(tester(&fake, dir.path(), TestPodSettings::default(), 1).await);
    let run = "python -c 'import numpy; print(numpy.__version__)' && echo \"$HOME\" `id -u`";
    let (handle, lines) = spawn_test(&tester, Test::new("notebook", "imports", run));
    let name = pod_named(&fake, "-test-notebook-").await;
    assert!(
        name.starts_with("labforge-test-notebook-a1b2c3d4e5f6-"),
        "{name}"
    );

    let posted = posted_pods(&fake);
    assert_eq!(posted.len(), 1);
    kube_validate::validate_docs(&posted).expect("the pod is valid Kubernetes");
    let body = &posted[0];
    let container = &body["spec"]["containers"][0];
    assert_eq!(container["image"], REFERENCE, "runs from the digest");
    assert_eq!(container["command"], json!(["/bin/sh", "-c", run]));
    assert_eq!(body["spec"]["restartPolicy"], "Never");
    assert_eq!(body["spec"]["automountServiceAccountToken"], false);
    assert_eq!(
        body["metadata"]["labels"]["labforge.io/component"],
        "smoke-test"
    );
    assert_eq!(
        body["spec"]["nodeSelector"],
        json!(null),
        "no CPU pool configured"
    );

    fake.start_pod(&name);
    fake.append_log(&name, &["2.1.3"]);
    // Lines arrive while the test runs.
    for _ in 0..200 {
        if !lines.lock().expect("lock").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(lines.lock().expect("lock").clone(), ["2.1.3"]);
    assert!(!handle.is_finished());
    fake.append_log(&name, &["/home/jovyan 1000"]);
    fake.finish_pod(&name, 0);

    let result = joined(handle).await.expect("the test ran");
    assert_eq!(result.exit_code, Some(0));
    assert!(!result.timed_out);
    assert_eq!(result.output, "2.1.3\n/home/jovyan 1000\n");
    assert_eq!(
        lines.lock().expect("lock").clone(),
        ["2.1.3", "/home/jovyan 1000"]
    );
    assert!(fake.objects("pods").is_empty(), "the pod is deleted");
    let deletes: Vec<String> = fake
        .writes()
        .into_iter()
        .filter(|c| c.method == "DELETE")
        .map(|c| c.path)
        .collect();
    assert_eq!(
        deletes,
        [format!("/api/v1/namespaces/labforge/pods/{name}")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_gives_its_exit_code_and_output_and_a_deadline_a_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeKube::start();
    let tester = Arc::new(tester(&fake, dir.path(), TestPodSettings::default(), 2).await);
    let (failing, _) = spawn_test(
        &tester,
        Test::new("notebook", "imports", "python -c 'import nope'"),
    );
    let (slow, _) = spawn_test(&tester, Test::new("notebook", "slow", "sleep 1000"));
    // Two tests of one image: a pod each.
    let failing_pod = pod_for_test(&fake, "imports").await;
    let slow_pod = pod_for_test(&fake, "slow").await;
    assert_ne!(failing_pod, slow_pod);

    fake.start_pod(&failing_pod);
    fake.append_log(
        &failing_pod,
        &[
            "Traceback (most recent call last):",
            "ModuleNotFoundError: No module named 'nope'",
        ],
    );
    fake.finish_pod(&failing_pod, 1);
    fake.start_pod(&slow_pod);
    fake.append_log(&slow_pod, &["still sleeping"]);
    fake.deadline_pod(&slow_pod);

    let failed = joined(failing).await.expect("the test ran");
    assert_eq!(failed.exit_code, Some(1));
    assert!(!failed.timed_out);
    assert!(
        failed
            .output
            .ends_with("ModuleNotFoundError: No module named 'nope'\n"),
        "{}",
        failed.output
    );
    let timed_out = joined(slow).await.expect("the test ran");
    assert!(timed_out.timed_out);
    assert_eq!(timed_out.exit_code, None);
    assert_eq!(timed_out.output, "still sleeping\n");
    assert!(fake.objects("pods").is_empty(), "both pods are deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_past_its_timeout_is_stopped_and_counts_from_its_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeKube::start();
    let tester = Arc::new(tester(&fake, dir.path(), TestPodSettings::default(), 1).await);
    let mut test = Test::new("notebook", "hangs", "sleep infinity");
    test.timeout = Duration::from_secs(1);
    let (handle, _) = spawn_test(&tester, test);
    let name = pod_named(&fake, "-test-notebook-").await;
    let body = &posted_pods(&fake)[0];
    assert_eq!(
        body["spec"]["activeDeadlineSeconds"],
        900 + 1,
        "the kubelet's backstop leaves time to pull the image"
    );
    // Pulling takes longer than the test's timeout: that is no timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!handle.is_finished(), "a pending pod has not timed out");
    fake.start_pod(&name);
    fake.append_log(&name, &["started"]);
    let started = std::time::Instant::now();
    let result = joined(handle).await.expect("the test ran");
    assert!(result.timed_out);
    assert_eq!(result.exit_code, None);
    assert_eq!(result.output, "started\n");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(fake.objects("pods").is_empty(), "the pod is deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_fails_with_the_kubelets_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeKube::start();
    let tester = Arc::new(tester(&fake, dir.path(), TestPodSettings::default(), 1).await);
    let (handle, lines) = spawn_test(&tester, Test::new("notebook", "imports", "true"));
    let name = pod_named(&fake, "-test-notebook-").await;
    fake.set_waiting(
        &name,
        "ErrImagePull",
        &format!("failed to pull and unpack image \"{REFERENCE}\": 401 Unauthorized"),
    );
    let err = joined(handle).await.expect_err("the test cannot run");
    assert!(matches!(err, KubeTestError::NotStarted { .. }), "{err}");
    let text = err.to_string();
    for part in [
        "notebook: smoke test imports: ",
        name.as_str(),
        "ErrImagePull",
        "401 Unauthorized",
    ] {
        assert!(text.contains(part), "{part} in {text}");
    }
    assert!(lines.lock().expect("lock").is_empty());
    assert!(fake.objects("pods").is_empty(), "the pod is deleted");

    // Failed before its container ran: not a test that timed out.
    let (handle, _) = spawn_test(&tester, Test::new("notebook", "imports", "true"));
    let name = pod_named(&fake, "-test-notebook-").await;
    fake.deadline_pod(&name);
    let err = joined(handle).await.expect_err("the test never ran");
    assert!(matches!(err, KubeTestError::NotStarted { .. }), "{err}");
    assert!(
        err.to_string().contains(
            "DeadlineExceeded: Pod was active on the node longer than the specified deadline"
        ),
        "{err}"
    );
    assert!(fake.objects("pods").is_empty(), "the pod is deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_test_asks_for_one_gpu_on_gpu_nodes_and_waits_for_one_until_start_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeKube::start();
    let settings = TestPodSettings {
        start_seconds: 2,
        ..gpu_settings()
    };
    let tester = Arc::new(tester(&fake, dir.path(), settings, 1).await);
    let mut test = Test::new("deeplearning", "cuda", "nvidia-smi");
    test.gpu = true;
    let (handle, _) = spawn_test(&tester, test);
    let name = pod_named(&fake, "-test-deeplearning-").await;
    // No GPU node has room (an autoscaler may add one: no failure at once).
    fake.set_unschedulable(
        &name,
        "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    );
    let err = joined(handle).await.expect_err("never scheduled");
    assert!(matches!(err, KubeTestError::StartTimeout { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("did not start within 2 s")
            && text
                .contains("unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
        "{text}"
    );
    assert!(fake.objects("pods").is_empty(), "the pod is deleted");

    let posted = posted_pods(&fake);
    kube_validate::validate_docs(&posted).expect("the GPU pod is valid Kubernetes");
    let spec = &posted[0]["spec"];
    assert_eq!(
        spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
        "1"
    );
    assert_eq!(
        spec["nodeSelector"],
        json!({"nvidia.com/gpu.present": "true"})
    );
    assert_eq!(
        spec["tolerations"],
        json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    );

    // A CPU test of the same tester: the CPU pool, no GPU.
    let (cpu, _) = spawn_test(&tester, Test::new("deeplearning", "imports", "true"));
    let name = pod_named(&fake, "-test-deeplearning-").await;
    fake.finish_pod(&name, 0);
    assert_eq!(joined(cpu).await.expect("ran").exit_code, Some(0));
    let posted = posted_pods(&fake);
    assert_eq!(posted.len(), 2);
    let spec = &posted[1]["spec"];
    assert_eq!(spec["nodeSelector"], json!({"labforge.io/pool": "cpu"}));
    assert!(
        spec["containers"][0]["resources"]["limits"]
            .get("nvidia.com/gpu")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_pods_run_at_once_than_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeKube::start();
    let tester = Arc::new(tester(&fake, dir.path(), TestPodSettings::default(), 1).await);
    let (one, _) = spawn_test(&tester, Test::new("one", "imports", "true"));
    let (two, _) = spawn_test(&tester, Test::new("two", "imports", "true"));
    let first = pod_named(&fake, "-test-").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.objects("pods").len(),
        1,
        "the second waits for the first"
    );
    fake.finish_pod(&first, 0);
    let other = if first.contains("-test-one-") {
        "-test-two-"
    } else {
        "-test-one-"
    };
    let second = pod_named(&fake, other).await;
    fake.finish_pod(&second, 0);
    assert_eq!(joined(one).await.expect("ran").exit_code, Some(0));
    assert_eq!(joined(two).await.expect("ran").exit_code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_pod_is_replaced_and_a_vanished_one_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeKube::start();
    let tester = Arc::new(tester(&fake, dir.path(), TestPodSettings::default(), 1).await);
    let test = Test::new("notebook", "imports", "true");
    let name = labforge_core::cluster::testpod::test_pod_name(
        "labforge",
        test.image,
        &test.identity,
        test.test,
    );
    // Left by an interrupted run.
    let old = fake.put(
        "pods",
        json!({
            "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "test", "image": REFERENCE}]}
        }),
    );
    let (handle, _) = spawn_test(&tester, test.clone());
    let new_uid = loop {
        if let Some(p) = fake.object("pods", &name)
            && p["metadata"]["uid"] != old["metadata"]["uid"]
        {
            break p["metadata"]["uid"].clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(new_uid.is_string());
    fake.finish_pod(&name, 0);
    assert_eq!(joined(handle).await.expect("ran").exit_code, Some(0));

    // Deleted behind its back while it runs.
    let (handle, _) = spawn_test(&tester, test);
    let name = pod_named(&fake, "-test-notebook-").await;
    fake.start_pod(&name);
    fake.remove("pods", &name);
    let err = joined(handle).await.expect_err("it vanished");
    assert!(matches!(err, KubeTestError::Vanished { .. }), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
}
