//! `labforge build` with `[build] backend = "kubernetes"`, end to end: the
//! fake Kubernetes API server (which grants exactly the hub's Role), the
//! real registry, and a stand-in kubelet in this test that does what the
//! cluster would: for each build Job it fetches the context from labforge's
//! context server with the Job's one-time token, builds it with the Docker
//! Engine using the Job's own build arguments and labels, pushes it and
//! writes the digest into the pod's log as BuildKit's metadata line; for
//! each smoke-test Pod it runs the Pod's command in a container of the
//! pushed digest and reports its exit code. labforge never touches the
//! engine itself: the image reaches the registry only through the "Job",
//! and the tests and the scan see it only through the registry.

mod common;
#[path = "common/fake_kube.rs"]
mod fake_kube;
#[path = "common/kube_validate.rs"]
mod kube_validate;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::project::{Project, image, pairs, results, skopeo_digest};
use fake_kube::FakeKube;
use labforge_core::cluster::job::{ENV_CONTEXT_TOKEN, ENV_CONTEXT_URL, METADATA_MARKER};
use serde_json::{Value, json};

/// The engine CLI that still has the classic builder (Debian's; the newer
/// one on PATH wants buildx).
const DOCKER_CLASSIC: &str = "/usr/bin/docker";

/// What the stand-in kubelet saw of one build Job.
#[derive(Debug, Clone)]
struct BuiltJob {
    image: String,
    build_args: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    output: String,
    digest: String,
    /// A second fetch of the context, after the build's own.
    refetch_status: u16,
}

/// What it saw of one test Pod.
#[derive(Debug, Clone)]
struct RanPod {
    image: String,
    command: Vec<String>,
    exit_code: i64,
    gpu: bool,
}

#[derive(Default)]
struct Seen {
    jobs: Vec<BuiltJob>,
    pods: Vec<RanPod>,
    /// Problems found in what labforge asked of the cluster.
    errors: Vec<String>,
}

/// Runs beside `labforge build` until dropped.
struct Kubelet {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kubelet {
    fn start(fake: Arc<FakeKube>) -> Kubelet {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut done: BTreeSet<String> = BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    for job in fake.objects("jobs") {
                        let uid = str_at(&job, "/metadata/uid");
                        if done.insert(uid) {
                            run_job(&fake, &job, &seen);
                        }
                    }
                    for pod in fake.objects("pods") {
                        let uid = str_at(&pod, "/metadata/uid");
                        let component = str_at(&pod, "/metadata/labels/labforge.io~1component");
                        if component != "build" && done.insert(uid) {
                            run_pod(&fake, &pod, &seen);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Kubelet {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn take(&self) -> Seen {
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
            && !std::thread::panicking()
        {
            panic!("the stand-in kubelet panicked (see its message above)");
        }
    }
}

fn str_at(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn env(container: &Value, name: &str) -> String {
    container["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == name))
        .and_then(|v| v["value"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The build Job, as BuildKit's pod would run it.
fn run_job(fake: &FakeKube, job: &Value, seen: &Mutex<Seen>) {
    let name = str_at(job, "/metadata/name");
    let mut errors = Vec::new();
    if let Err(e) = kube_validate::validate_docs(std::slice::from_ref(job)) {
        errors.push(format!("{name} is not a valid Job: {e}"));
    }
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    // The flags the pod's script hands to buildctl.
    let argv: Vec<String> = container["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let (mut build_args, mut labels, mut output) = (BTreeMap::new(), BTreeMap::new(), None);
    for pair in argv.windows(2) {
        match (pair[0].as_str(), pair[1].as_str()) {
            ("--opt", opt) => {
                if let Some((k, v)) = opt
                    .strip_prefix("build-arg:")
                    .and_then(|o| o.split_once('='))
                {
                    build_args.insert(k.to_string(), v.to_string());
                } else if let Some((k, v)) =
                    opt.strip_prefix("label:").and_then(|o| o.split_once('='))
                {
                    labels.insert(k.to_string(), v.to_string());
                }
            }
            ("--output", o) => output = Some(o.to_string()),
            _ => {}
        }
    }
    let output = output.unwrap_or_default();
    let repository = output
        .split(',')
        .find_map(|f| f.strip_prefix("name="))
        .unwrap_or_default()
        .to_string();
    if !output.contains("push-by-digest=true") || repository.contains('@') {
        errors.push(format!("{name} does not push by digest: {output}"));
    }

    // The context, with the Job's token; a second fetch must be refused.
    let url = env(container, ENV_CONTEXT_URL);
    let token = env(container, ENV_CONTEXT_TOKEN);
    let http = reqwest::blocking::Client::new();
    let fetch = || {
        http.get(&url)
            .bearer_auth(&token)
            .send()
            .expect("the context server answers")
    };
    let first = fetch();
    if first.status().as_u16() != 200 {
        errors.push(format!("context fetch for {name}: {}", first.status()));
    }
    let tar = first.bytes().unwrap_or_default();
    let refetch_status = fetch().status().as_u16();

    let pod = fake.start_job(&name);
    let tag = format!("{repository}:kubelet-{name}");
    let mut build = Command::new(DOCKER_CLASSIC);
    build
        .env("DOCKER_BUILDKIT", "0")
        // No cache: a parallel build's intermediate images go when its
        // tag is removed.
        .args(["build", "--quiet", "--no-cache", "-t", &tag]);
    for (k, v) in &build_args {
        build.args(["--build-arg", &format!("{k}={v}")]);
    }
    for (k, v) in &labels {
        build.args(["--label", &format!("{k}={v}")]);
    }
    let mut child = build
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker build runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&tar).expect("send the context");
    }
    let built = child.wait_with_output().expect("docker build ends");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let mut lines: Vec<String> = log.lines().map(|l| format!("#1 {l}")).collect();
    let mut digest = String::new();
    if built.status.success() {
        let pushed = Command::new(DOCKER_CLASSIC)
            .args(["push", &tag])
            .output()
            .expect("docker push runs");
        let text = String::from_utf8_lossy(&pushed.stdout).to_string();
        digest = text
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .unwrap_or_default()
            .to_string();
        lines.push(format!("#2 pushing {repository}: {}", pushed.status));
        let _ = Command::new(DOCKER_CLASSIC).args(["rmi", &tag]).output();
    }
    if !digest.is_empty() {
        lines.push(format!(
            "{METADATA_MARKER}{}",
            json!({"containerimage.digest": digest, "image.name": repository})
        ));
    }
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    fake.append_log(&pod, &refs);
    fake.finish_job(&name, !digest.is_empty());
    let mut seen = seen.lock().expect("lock");
    seen.errors.extend(errors);
    seen.jobs.push(BuiltJob {
        image: str_at(job, "/metadata/labels/labforge.io~1image"),
        build_args,
        labels,
        output,
        digest,
        refetch_status,
    });
}

/// A smoke-test Pod: its command in a container of its image, without a
/// network, as the kubelet would run it.
fn run_pod(fake: &FakeKube, pod: &Value, seen: &Mutex<Seen>) {
    let name = str_at(pod, "/metadata/name");
    let mut errors = Vec::new();
    if let Err(e) = kube_validate::validate_docs(std::slice::from_ref(pod)) {
        errors.push(format!("{name} is not a valid Pod: {e}"));
    }
    let container = &pod["spec"]["containers"][0];
    let image = str_at(container, "/image");
    let command: Vec<String> = container["command"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !image.contains("@sha256:") {
        errors.push(format!("{name} runs {image}, not a digest"));
    }
    let gpu = container["resources"]["limits"]["nvidia.com/gpu"].is_string()
        || container["resources"]["limits"]["nvidia.com/gpu"].is_number();
    fake.start_pod(&name);
    let Some((entrypoint, rest)) = command.split_first() else {
        errors.push(format!("{name} has no command"));
        fake.finish_pod(&name, 127);
        seen.lock().expect("lock").errors.extend(errors);
        return;
    };
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            entrypoint,
        ])
        .arg(&image)
        .args(rest)
        .output()
        .expect("docker run runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    fake.append_log(&name, &lines);
    let exit_code = i64::from(out.status.code().unwrap_or(-1));
    fake.finish_pod(&name, exit_code);
    let _ = Command::new("docker").args(["rmi", &image]).output();
    let mut seen = seen.lock().expect("lock");
    seen.errors.extend(errors);
    seen.pods.push(RanPod {
        image,
        command,
        exit_code,
        gpu,
    });
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The chain sample, built in the (fake) cluster.
fn project(name: &str, fake: &FakeKube) -> Project {
    let port = free_port();
    let p = Project::of(
        "chain",
        name,
        &format!(
            "\n[build]\nbackend = \"kubernetes\"\n\n[kubernetes]\ninstance = \"it\"\n\n\
             [kubernetes.build]\nlisten = \"127.0.0.1:{port}\"\ncontext_url = \"http://127.0.0.1:{port}\"\n\n\
             [kubernetes.build.job]\ninsecure_registry = true\n"
        ),
    );
    fake.kubeconfig(p.path());
    p
}

fn kube_env(p: &Project) -> Vec<(String, String)> {
    vec![
        (
            "KUBECONFIG".into(),
            p.path().join("kubeconfig").display().to_string(),
        ),
        // labforge must not need the engine: make it unreachable.
        (
            "DOCKER_HOST".into(),
            "unix:///nonexistent/docker.sock".into(),
        ),
    ]
}

fn build(p: &Project, args: &[&str]) -> (std::process::Output, Value) {
    let env = kube_env(p);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    p.build(args, &env)
}

#[test]
fn the_kubernetes_backend_builds_in_jobs_tests_in_pods_and_records_like_the_engine() {
    let fake = Arc::new(FakeKube::start());
    let kubelet = Kubelet::start(Arc::clone(&fake));
    let p = project("backend", &fake);
    // A GPU test on a CUDA image: run on the cluster's GPU nodes (the
    // engine would skip it without `build.gpu`). The stand-in base says it
    // has CUDA; the test only echoes.
    let catalog = std::fs::read_to_string(p.path().join("catalog/catalog.yaml")).expect("catalog");
    p.write(
        "catalog/catalog.yaml",
        &format!(
            "{catalog}  tiny-cuda:\n    image: busybox:stable\n    description: busybox stand-in for a CUDA base\n    cuda: \"12.4\"\n    min_driver: \"550\"\n"
        ),
    );
    p.write(
        "catalog/images/sibling.yaml",
        concat!(
            "name: sibling\ndescription: Independent of the chain\ntemplate: tiny.Dockerfile.tera\n",
            "base: tiny-cuda\nserver_test: false\ntests:\n",
            "  - name: on-a-gpu\n    run: echo gpu\n    gpu: true\n",
        ),
    );

    let (out, summary) = build(&p, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let seen = kubelet.take();
    assert!(seen.errors.is_empty(), "{:#?}", seen.errors);
    assert!(out.status.success(), "{stderr}\n{summary:#}");
    assert_eq!(
        results(&summary),
        pairs(&[
            ("root", "built"),
            ("middle", "built"),
            ("leaf", "built"),
            ("sibling", "built")
        ]),
        "{stderr}"
    );
    assert_eq!(summary["engine_used"], false);

    // One Job per image; each context fetched once; the child built FROM
    // its parent's confirmed digest, with the image's labels.
    assert_eq!(seen.jobs.len(), 4, "{:#?}", seen.jobs);
    for job in &seen.jobs {
        assert_eq!(job.refetch_status, 410, "{job:#?}");
        let o = image(&summary, &job.image);
        assert_eq!(o["digest"].as_str(), Some(job.digest.as_str()), "{job:#?}");
        assert_eq!(
            job.labels.get("labforge.input-hash").map(String::as_str),
            o["hash"].as_str(),
            "{job:#?}"
        );
        assert!(
            job.output
                .contains(&format!("name={}", o["repository"].as_str().unwrap_or("?"))),
            "{job:#?}"
        );
    }
    let job_of = |name: &str| {
        seen.jobs
            .iter()
            .find(|j| j.image == name)
            .unwrap_or_else(|| panic!("no Job for {name}"))
    };
    let root = image(&summary, "root");
    assert_eq!(
        job_of("middle").build_args.get("BASE_IMAGE"),
        Some(&format!(
            "{}@{}",
            root["repository"].as_str().unwrap_or("?"),
            root["digest"].as_str().unwrap_or("?")
        ))
    );

    // The registry holds the recorded digests under the content and moving
    // tags (put by labforge after the tests passed).
    for name in ["root", "middle", "leaf", "sibling"] {
        let o = image(&summary, name);
        let repository = o["repository"].as_str().expect("repository");
        let digest = o["digest"].as_str().expect("digest");
        let tag = o["content_tag"].as_str().expect("tag");
        assert_eq!(
            skopeo_digest(&format!("{repository}:{tag}")),
            digest,
            "{name}"
        );
        assert_eq!(
            skopeo_digest(&format!("{repository}:latest")),
            digest,
            "{name}"
        );
    }

    // Smoke tests ran as Pods from the digests: the same records as the
    // engine backend gives (the VS Code one skipped with its reason).
    let leaf = image(&summary, "leaf");
    assert!(
        seen.pods.iter().any(|pod| pod.image
            == format!(
                "{}@{}",
                leaf["repository"].as_str().unwrap_or("?"),
                leaf["digest"].as_str().unwrap_or("?")
            )
            && pod.command.last().map(String::as_str)
                == Some("cat /etc/labforge/root /etc/labforge/middle /etc/labforge/leaf")
            && pod.exit_code == 0
            && !pod.gpu),
        "{:#?}",
        seen.pods
    );
    let middle = image(&summary, "middle");
    let tests = middle["tests"].as_array().expect("tests");
    let find = |n: &str| {
        tests
            .iter()
            .find(|t| t["name"] == n)
            .unwrap_or_else(|| panic!("no test {n}: {tests:#?}"))
    };
    assert_eq!(find("parent-stamp")["result"], "passed");
    assert_eq!(find("needs-vscode")["result"], "skipped");
    // 4 images: root 1 test, middle 1 run + 1 skipped, leaf 1, sibling 1.
    assert_eq!(seen.pods.len(), 4, "{:#?}", seen.pods);
    let gpu = seen
        .pods
        .iter()
        .find(|pod| pod.command.last().map(String::as_str) == Some("echo gpu"))
        .expect("the GPU test ran as a pod");
    assert!(gpu.gpu && gpu.exit_code == 0, "{gpu:#?}");
    let sibling_tests = image(&summary, "sibling")["tests"]
        .as_array()
        .expect("tests")
        .clone();
    assert!(
        sibling_tests
            .iter()
            .any(|t| t["name"] == "on-a-gpu" && t["result"] == "passed"),
        "{sibling_tests:#?}"
    );

    // The scan read the image from the registry and published it.
    assert_eq!(leaf["scan"]["published"], true, "{leaf:#}");
    let log = std::fs::read_to_string(leaf["log"].as_str().expect("log")).expect("log");
    assert!(log.contains("(registry)"), "{log}");
    assert!(log.contains("building in the cluster"), "{log}");

    // Nothing is left in the cluster.
    assert!(
        fake.objects("jobs").is_empty(),
        "{:#?}",
        fake.objects("jobs")
    );
    assert!(
        fake.objects("pods").is_empty(),
        "{:#?}",
        fake.objects("pods")
    );

    // A second run: everything present, no Job, no Pod.
    let (out, again) = build(&p, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        results(&again).iter().all(|(_, r)| r == "present"),
        "{again:#}"
    );
    let seen = kubelet.take();
    assert!(seen.jobs.is_empty() && seen.pods.is_empty());

    // The records are the engine backend's: `labforge history`.
    let history = p.labforge_with(
        &["history", "leaf", "--json"],
        &[("KUBECONFIG", "/nonexistent")],
    );
    assert!(history.status.success());
    let history: Value = serde_json::from_slice(&history.stdout).expect("history JSON");
    assert_eq!(history[0]["result"], "built", "{history:#}");
    assert_eq!(history[0]["digest"], leaf["digest"], "{history:#}");
}

#[test]
fn a_failing_smoke_test_in_a_pod_leaves_the_image_untagged_and_it_is_built_again() {
    let fake = Arc::new(FakeKube::start());
    let kubelet = Kubelet::start(Arc::clone(&fake));
    let p = project("failing", &fake);
    p.write(
        "catalog/images/sibling.yaml",
        "name: sibling\ndescription: Independent of the chain\ntemplate: tiny.Dockerfile.tera\n\
         base: tiny\nserver_test: false\ntests:\n  - name: fails\n    run: echo broken >&2; exit 3\n",
    );
    let (out, summary) = build(&p, &["sibling"]);
    let seen = kubelet.take();
    assert!(seen.errors.is_empty(), "{:#?}", seen.errors);
    assert!(!out.status.success());
    let sibling = image(&summary, "sibling");
    assert_eq!(sibling["result"], "failed", "{sibling:#}");
    let reason = sibling["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("smoke test fails") && reason.contains("exit code 3"),
        "{reason}"
    );
    assert!(
        sibling["tail"].to_string().contains("broken"),
        "{sibling:#}"
    );
    // The Job pushed it (the registry has the repository and the digest),
    // but neither the content tag nor a moving tag points at it.
    let repository = sibling["repository"].as_str().expect("repository");
    let tag = sibling["content_tag"].as_str().expect("tag");
    let built = seen.jobs.first().expect("the sibling's Job");
    assert_eq!(
        skopeo_digest(&format!("{repository}@{}", built.digest)),
        built.digest
    );
    let tags = Command::new("skopeo")
        .args([
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{repository}"),
        ])
        .output()
        .expect("skopeo runs");
    assert!(tags.status.success(), "{tags:?}");
    let tags: Value = serde_json::from_slice(&tags.stdout).expect("skopeo's JSON");
    let tags: Vec<&str> = tags["Tags"]
        .as_array()
        .expect("Tags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !tags
            .iter()
            .any(|t| *t == tag || *t == "latest" || *t == "main"),
        "{tags:?}"
    );
    assert!(
        fake.objects("pods").is_empty(),
        "{:#?}",
        fake.objects("pods")
    );

    // So the next run builds it again instead of calling it present.
    let (_, again) = build(&p, &["sibling"]);
    assert_eq!(image(&again, "sibling")["result"], "failed", "{again:#}");
    assert_eq!(kubelet.take().jobs.len(), 1);
}

#[test]
fn the_kubernetes_backend_needs_a_context_url() {
    let fake = FakeKube::start();
    let p = Project::of("chain", "no-url", "\n[build]\nbackend = \"kubernetes\"\n");
    fake.kubeconfig(p.path());
    let out = p.labforge_with(
        &["build"],
        &[(
            "KUBECONFIG",
            p.path().join("kubeconfig").to_str().unwrap_or_default(),
        )],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[kubernetes.build] context_url"),
        "{stderr}"
    );
    assert!(fake.calls().is_empty(), "{:#?}", fake.calls());

    let out = p.labforge(&["build", "--backend", "cloud"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("use engine or kubernetes"), "{stderr}");
}
