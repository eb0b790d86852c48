//! `labforge build`: build, smoke-test and push every image that the registry
//! lacks, parents before children, independent images concurrently.
//!
//! The plan decides: an image whose content tag is in the registry is done
//! without a single engine call (a whole run of such images never connects to
//! the engine). Everything else is built through [`crate::engine`] from its
//! rendered Dockerfile, with `BASE_IMAGE` pinned by digest (a base resolved
//! in its registry, or the parent's digest from this run or the registry),
//! tested in throwaway containers, and pushed by [`crate::push`]; only a
//! digest the registry confirmed is recorded. A failure stops that image's
//! descendants only; they are reported as blocked with the reason.
//!
//! This module schedules and records. It does not speak HTTP to registries
//! or the Engine API itself, and it writes only below the state directory
//! (build logs) and to the state store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labforge_core::Analyzed;
use labforge_core::catalog::{ParentRef, Registry, SmokeTest};
use labforge_core::cluster::job::BuildJobSettings;
use labforge_core::cluster::testpod::TestPodSettings;
use labforge_core::identity::Inputs;
use labforge_core::plan::{Action, Presence};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::cluster::{Cluster, ClusterError, ClusterOptions};
use crate::config::ScanConfig;
use crate::context_server::{ContextError, ContextServer};
use crate::engine::{BuildRequest, Engine, EngineError, TestRun};
use crate::kube_build::{KubeBuildError, KubeBuilder};
use crate::kube_test::{KubeTester, TestRequest};
use crate::push::{self, Compression, PushEvent, PushOptions};
use crate::registry::{ImageRef, RegistryClient, RegistryError, RegistryOptions};
use crate::scan::stage::{Scanners, StageError};
use crate::scan::{self, referrers::Referrers, referrers::ReferrersError};
use crate::state::{
    BuildRecord, BuildResult, ScanRecord, StateError, StateStore, TestRecord, TestResult,
};
use crate::{PlanError, ca};
use labforge_core::scan::policy::{self, Date, Policy, Report, Summary as ScanSummary, Verdict};

/// The build argument that carries the URL of the build-time CA bundle.
pub const CA_URL_ARG: &str = "LABFORGE_BUILD_CA_URL";
/// The build argument that says where code-server comes from (`none`: no VS Code).
pub const CODE_SERVER_ARG: &str = "CODE_SERVER_URL";
/// The name the default server test is reported under.
pub const SERVER_TEST: &str = "jupyter-server-api";

/// Start a Jupyter server on loopback inside the test container (which has
/// no network) and wait until `/api` answers with its version.
const SERVER_TEST_COMMAND: &str = r#"set -u
py=$(command -v python || command -v python3) || { echo "no python on PATH" >&2; exit 127; }
command -v jupyter >/dev/null 2>&1 || { echo "jupyter is not on PATH" >&2; exit 127; }
port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') || exit 1
log="${TMPDIR:-/tmp}/labforge-server-test.log"
start=$(date +%s)
timeout 100 jupyter server --no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port="$port" \
  --ServerApp.port_retries=0 --IdentityProvider.token= >"$log" 2>&1 &
pid=$!
while [ $(( $(date +%s) - start )) -lt 90 ]; do
  if "$py" -c 'import json, sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:%s/api" % sys.argv[1], timeout=2).read().decode()
json.loads(body)["version"]
print("GET /api:", body)' "$port" 2>/dev/null; then
    echo "answered after $(( $(date +%s) - start )) s"
    kill "$pid" 2>/dev/null; exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "jupyter server exited; its log:" >&2; cat "$log" >&2; exit 1; fi
  sleep 1
done
echo "no answer from /api within 90 s; server log:" >&2; cat "$log" >&2
kill "$pid" 2>/dev/null; exit 1"#;

/// How `labforge build` runs.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// Where images are checked and pushed.
    pub registry: Registry,
    pub registry_options: RegistryOptions,
    /// Images built at once (and registry requests in flight).
    pub jobs: usize,
    /// Build these and what they need (empty: the whole catalog).
    pub selection: Vec<String>,
    /// Build logs go to `<state_dir>/logs/<run>/`, push spool and cache too.
    pub state_dir: PathBuf,
    /// PEM bundle served to builds for HTTPS behind an intercepting proxy.
    pub ca_bundle: Option<PathBuf>,
    pub ca_port: u16,
    /// Run `gpu: true` smoke tests (with the host's GPUs).
    pub gpu: bool,
    pub builder: Builder,
    pub compression: Compression,
    pub push_retries: u32,
    /// For the moving date tag `<variant>-<date>`, e.g. `20261126`.
    pub date: String,
    pub run_id: String,
    /// What the machine adds to every build (configuration `build_args`).
    pub build_args: BTreeMap<String, String>,
    /// Catalog base references that the base map replaced with a stand-in.
    pub stand_ins: BTreeSet<String>,
    /// Which scanners judge each image before it gets its moving tags.
    pub scan: ScanConfig,
    /// Where images are built and tested.
    pub backend: Backend,
}

/// Where images are built and smoke-tested. Either way the plan, the
/// records, the tests and the scan gate are the same; only who runs the
/// build and the test commands differs.
#[derive(Debug, Clone, Default)]
pub enum Backend {
    /// The local Docker Engine: pull, build, test in containers, push.
    #[default]
    Engine,
    /// A cluster: a BuildKit Job builds and pushes by digest, each smoke
    /// test runs as a Pod from that digest, the scan reads the layers from
    /// the registry. This machine never holds the image.
    Kubernetes(Box<KubeBackend>),
}

/// How the `kubernetes` backend reaches its cluster and runs there.
#[derive(Debug, Clone)]
pub struct KubeBackend {
    pub cluster: ClusterOptions,
    /// Label value and name prefix of the Jobs and Pods.
    pub instance: String,
    /// Build Jobs at once.
    pub concurrency: usize,
    /// Where the build contexts are served from this process.
    pub listen: SocketAddr,
    /// How build pods reach [`KubeBackend::listen`].
    pub context_url: String,
    /// How long a context download token works.
    pub token_ttl: Duration,
    pub job: BuildJobSettings,
    pub tests: TestPodSettings,
}

impl BuildSettings {
    /// How pushes and tag moves of this run talk to the registry: the
    /// spool and push cache in the state folder, every CPU for compression.
    pub fn push_options(&self) -> PushOptions {
        PushOptions {
            compression: self.compression,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            retries: self.push_retries,
            retry_delay: Duration::from_millis(500),
            spool_dir: self.state_dir.join("spool"),
            cache_dir: Some(self.state_dir.join("push-cache")),
        }
    }
}

/// Which of the engine's builders builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Builder {
    /// BuildKit where the engine offers it, else the classic builder.
    #[default]
    Auto,
    Buildkit,
    Classic,
}

impl std::str::FromStr for Builder {
    type Err = String;
    fn from_str(s: &str) -> Result<Builder, String> {
        match s {
            "auto" => Ok(Builder::Auto),
            "buildkit" => Ok(Builder::Buildkit),
            "classic" => Ok(Builder::Classic),
            other => Err(format!(
                "unknown builder {other:?}: use auto, buildkit or classic"
            )),
        }
    }
}

/// What happened to one image.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub image: String,
    /// `host[:port]/path` of the image's repository.
    pub repository: String,
    pub variant: String,
    pub hash: String,
    pub content_tag: String,
    pub result: BuildResult,
    /// The manifest digest the registry confirmed.
    pub digest: Option<String>,
    pub tags: Vec<String>,
    /// Why it was built, or why it failed or was blocked.
    pub reason: String,
    /// For a failure: the last lines of output.
    pub tail: Vec<String>,
    /// Milliseconds per stage (`pull`, `build`, `test`, `push`).
    pub stages: BTreeMap<String, u64>,
    pub tests: Vec<TestRecord>,
    pub log: Option<PathBuf>,
    /// Base reference → the digest it was built on.
    pub base_digests: BTreeMap<String, String>,
    /// The scan gate's verdict on `digest` (none when it was not scanned).
    pub scan: Option<ScanBrief>,
    /// The documents to record with the scan.
    #[serde(skip)]
    pub scan_docs: Option<Arc<ScanDocs>>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        matches!(self.result, BuildResult::Built | BuildResult::Present)
    }
}

/// The scan gate's verdict in short, for tables and `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct ScanBrief {
    pub verdict: Verdict,
    pub summary: ScanSummary,
    pub packages: usize,
    /// Why it failed (blocking findings, scanners that did not finish).
    pub reasons: Vec<String>,
    /// The moving tags point at this digest.
    pub published: bool,
}

/// The report and SBOM of a scan, as attached to the image.
#[derive(Debug)]
pub struct ScanDocs {
    pub report: Vec<u8>,
    pub sbom: Vec<u8>,
}

impl ScanBrief {
    pub(crate) fn of(report: &Report, published: bool) -> ScanBrief {
        ScanBrief {
            verdict: report.verdict,
            summary: report.summary.clone(),
            packages: report.packages,
            reasons: report.reasons.clone(),
            published,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub run_id: String,
    pub registry: String,
    /// In build order.
    pub images: Vec<Outcome>,
    /// Whether the Docker Engine was contacted at all.
    pub engine_used: bool,
    pub registry_requests: usize,
    pub duration_ms: u64,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.images.iter().all(Outcome::ok)
    }
}

/// Progress, as it happens, for the command line (or a log).
#[derive(Debug, Clone)]
pub enum Event {
    /// The plan: what will be built, and how many images are up to date.
    Planned {
        build: Vec<String>,
        present: usize,
    },
    Stage {
        image: String,
        stage: &'static str,
    },
    /// A line of build, pull or push output.
    Line {
        image: String,
        line: String,
    },
    Test {
        image: String,
        test: TestRecord,
    },
    Done(Box<Outcome>),
}

pub trait Reporter: Send + Sync {
    fn event(&self, event: Event);
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(
        "there is no image {name:?} in the catalog{hint}; `labforge validate --list` lists them"
    )]
    UnknownImage { name: String, hint: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error("cannot record the build of {image}: {source}")]
    Record { image: String, source: StateError },
    #[error("cannot make the log folder {path}: {source}")]
    Logs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up the registry client: {0}")]
    Client(RegistryError),
    #[error("the scan gate cannot start: {0}")]
    Scan(Box<StageError>),
    #[error("cannot set up the referrers client: {0}")]
    Referrers(Box<ReferrersError>),
    #[error("the kubernetes build backend cannot reach its cluster: {0}")]
    Cluster(#[from] ClusterError),
    #[error("the kubernetes build backend cannot serve build contexts: {0}")]
    Contexts(#[from] ContextError),
    #[error(
        "build.ca_bundle works with the engine backend only: a Job in the cluster cannot reach this machine's engine network; leave it out, or trust the proxy's CA in the BuildKit image"
    )]
    CaInCluster,
}

impl From<StageError> for BuildError {
    fn from(e: StageError) -> BuildError {
        BuildError::Scan(Box::new(e))
    }
}

impl From<ReferrersError> for BuildError {
    fn from(e: ReferrersError) -> BuildError {
        BuildError::Referrers(Box::new(e))
    }
}

/// One image to build, with everything its task needs.
struct Job {
    index: usize,
    name: String,
    repository: ImageRef,
    variant: String,
    hash: String,
    content_tag: String,
    dockerfile: String,
    context: BTreeMap<String, Vec<u8>>,
    build_args: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    tests: Vec<SmokeTest>,
    server_test: bool,
    /// Built on a stand-in instead of its real base.
    stand_in: bool,
    moving_tags: Vec<String>,
    policy: Policy,
    /// A base's pinned reference (for a catalog parent the scheduler passes the digest).
    base: Option<(String, String)>,
    reason: String,
}

/// Who builds and tests.
enum Runner {
    Engine {
        engine: Engine,
        buildkit: bool,
        ca_url: Option<String>,
    },
    Kube(Box<KubeRunner>),
}

/// The `kubernetes` backend, started for one run.
struct KubeRunner {
    builder: KubeBuilder,
    tester: KubeTester,
    /// `<state>/contexts/<run>/`: one context tarball per build in flight.
    contexts: PathBuf,
    platform: String,
    /// Run `gpu: true` tests (on the GPU nodes).
    gpu_tests: bool,
}

/// What a build produced, and where its tests run: an image in the
/// engine, or a manifest the build Job pushed by digest (untagged until its
/// tests pass).
enum Built<'a> {
    Engine {
        engine: &'a Engine,
        image_id: String,
    },
    Pushed {
        tester: &'a KubeTester,
        digest: String,
    },
}

/// Shared by every build task.
struct Shared {
    runner: Runner,
    registry: Arc<RegistryClient>,
    reporter: Arc<dyn Reporter>,
    settings: BuildSettings,
    log_dir: PathBuf,
    vscode: bool,
    scanners: Scanners,
    referrers: Referrers,
    today: Date,
}

/// Run the build. `analyzed` must have been made with the settings' pinned
/// bases (see [`crate::resolve_bases`]), so that identities name digests.
pub async fn build(
    analyzed: &Analyzed,
    settings: BuildSettings,
    store: &StateStore,
    reporter: Arc<dyn Reporter>,
) -> Result<Summary, BuildError> {
    let started = Instant::now();
    scan::stage::check(&settings.scan)?;
    let catalog = &analyzed.catalog;
    let needed = needed(analyzed, &settings.selection)?;
    let registry = &settings.registry;
    let inputs_dir = settings.state_dir.join("inputs");
    let baseline = read_baseline(&inputs_dir);
    let (plan, heads) = crate::plan(
        analyzed,
        Some(registry),
        settings.registry_options.clone(),
        &baseline,
        settings.jobs,
    )
    .await?;
    let planned: HashMap<&str, &labforge_core::plan::PlannedImage> =
        plan.images.iter().map(|p| (p.name.as_str(), p)).collect();

    let mut outcomes: Vec<Option<Outcome>> = vec![None; catalog.images.len()];
    let mut digests: HashMap<usize, String> = HashMap::new();
    let mut jobs: BTreeMap<usize, Job> = BTreeMap::new();
    for &i in &needed {
        let image = &catalog.images[i];
        let prepared = &analyzed.prepared[i];
        let Some(p) = planned.get(image.name.as_str()) else {
            continue;
        };
        let repository = ImageRef {
            registry: registry.host.clone(),
            repository: registry.path(&image.repository),
            reference: p.tag.clone(),
        };
        let base = match &image.parent {
            ParentRef::Base(_) => prepared
                .rendered
                .base_reference
                .as_ref()
                .map(|r| (r.clone(), base_digest(r))),
            ParentRef::Image(_) => None,
        };
        match (&p.action, &p.registry) {
            (Action::Skip, Presence::Present(digest)) => {
                digests.insert(i, digest.clone());
                outcomes[i] = Some(Outcome {
                    image: image.name.clone(),
                    repository: format!("{}/{}", repository.registry, repository.repository),
                    variant: image.variant.clone(),
                    hash: p.identity.clone(),
                    content_tag: p.tag.clone(),
                    result: BuildResult::Present,
                    digest: Some(digest.clone()),
                    tags: vec![p.tag.clone()],
                    reason: "already in the registry".into(),
                    tail: Vec::new(),
                    stages: BTreeMap::new(),
                    tests: Vec::new(),
                    log: None,
                    base_digests: base.into_iter().collect(),
                    scan: None,
                    scan_docs: None,
                });
            }
            _ => {
                let mut build_args = image.build_args.clone();
                build_args.extend(settings.build_args.clone());
                let moving_tags = moving_tags(image, &settings.date);
                jobs.insert(
                    i,
                    Job {
                        index: i,
                        name: image.name.clone(),
                        repository,
                        variant: image.variant.clone(),
                        hash: p.identity.clone(),
                        content_tag: p.tag.clone(),
                        dockerfile: prepared.rendered.dockerfile.clone(),
                        context: prepared.rendered.context.clone(),
                        build_args,
                        labels: labforge_core::render::build_labels(
                            catalog,
                            image,
                            &prepared.inputs.identity,
                        ),
                        tests: image.tests.clone(),
                        server_test: image.server_test,
                        stand_in: catalog
                            .root_base(image)
                            .is_some_and(|b| settings.stand_ins.contains(&b.image)),
                        moving_tags,
                        policy: image.scan.clone(),
                        base,
                        reason: if p.reasons.is_empty() {
                            "not in the registry".into()
                        } else {
                            p.reasons.join("; ")
                        },
                    },
                );
            }
        }
    }
    // Judge present images first, so that the children of one that is
    // rejected now are not built.
    let judged: Vec<usize> = (0..outcomes.len())
        .filter(|&i| {
            outcomes[i]
                .as_ref()
                .is_some_and(|o| o.result == BuildResult::Present)
        })
        .collect();
    regate(analyzed, &settings, store, &mut outcomes).await?;
    // Images below one that is rejected (or failed) now are blocked before
    // anything starts: a run that can build nothing needs no engine.
    for i in analyzed.graph.order() {
        let Some(parent) = analyzed.graph.parent[i] else {
            continue;
        };
        if !jobs.contains_key(&i) {
            continue;
        }
        let parent_outcome = match &outcomes[parent] {
            Some(o) if !o.ok() => o.clone(),
            _ => continue,
        };
        if let Some(job) = jobs.remove(&i) {
            let o = blocked(&job, &parent_outcome);
            record(store, &settings, &o).await?;
            outcomes[i] = Some(o);
        }
    }
    reporter.event(Event::Planned {
        build: jobs.values().map(|j| j.name.clone()).collect(),
        present: outcomes
            .iter()
            .flatten()
            .filter(|o| o.result == BuildResult::Present)
            .count(),
    });

    let mut engine_used = false;
    if !jobs.is_empty() {
        let client = Arc::new(
            RegistryClient::new(
                settings.registry_options.clone(),
                &[settings.registry.host.as_str()],
            )
            .map_err(BuildError::Client)?,
        );
        let log_dir = settings.state_dir.join("logs").join(&settings.run_id);
        std::fs::create_dir_all(&log_dir).map_err(|source| BuildError::Logs {
            path: log_dir.clone(),
            source,
        })?;
        // Held until every build is done: the CA bundle's server (engine)
        // or the context tarballs' folder (cluster).
        let mut ca_server = None;
        let runner = match &settings.backend {
            Backend::Engine => {
                engine_used = true;
                let engine = Engine::connect().await?;
                ca_server = match &settings.ca_bundle {
                    Some(path) => Some(ca::CaServer::start(&engine, path, settings.ca_port).await?),
                    None => None,
                };
                let buildkit = match settings.builder {
                    Builder::Auto => crate::buildkit::available(&engine).await,
                    Builder::Buildkit => true,
                    Builder::Classic => false,
                };
                tracing::info!(buildkit, "builder chosen");
                Runner::Engine {
                    engine,
                    buildkit,
                    ca_url: ca_server.as_ref().map(|s| s.url().to_string()),
                }
            }
            Backend::Kubernetes(k) => {
                if settings.ca_bundle.is_some() {
                    return Err(BuildError::CaInCluster);
                }
                let contexts = settings.state_dir.join("contexts").join(&settings.run_id);
                std::fs::create_dir_all(&contexts).map_err(|source| BuildError::Logs {
                    path: contexts.clone(),
                    source,
                })?;
                let cluster = Cluster::connect(&k.cluster).await?;
                let namespace = cluster.namespace().to_string();
                let server = ContextServer::bind(k.listen, k.context_url.clone()).await?;
                let mut builder = KubeBuilder::new(
                    cluster.clone(),
                    server,
                    k.job.clone(),
                    &k.instance,
                    k.concurrency,
                );
                builder.token_ttl = k.token_ttl;
                // GPU tests go where the catalog's GPU images go, unless
                // the configuration places them itself.
                let mut tests = k.tests.clone();
                if tests.gpu_node_selector.is_empty() && tests.gpu_tolerations.is_empty() {
                    tests.gpu_node_selector = catalog.settings.gpu_pool.node_selector.clone();
                    tests.gpu_tolerations = catalog.settings.gpu_pool.tolerations.clone();
                }
                let tester = KubeTester::new(cluster, tests, &k.instance, k.concurrency);
                tracing::info!(
                    k8s.namespace = %namespace,
                    concurrency = k.concurrency,
                    "building in the cluster"
                );
                Runner::Kube(Box::new(KubeRunner {
                    builder,
                    tester,
                    contexts,
                    // The platform the identities were computed for.
                    platform: catalog.settings.platform.clone(),
                    gpu_tests: k.tests.gpu,
                }))
            }
        };
        let scan_config = settings.scan.clone();
        let scanners = tokio::task::spawn_blocking(move || Scanners::from_config(&scan_config))
            .await
            .map_err(|e| BuildError::from(StageError::OsvLoad(e.to_string())))??;
        let referrers = Referrers::new(&settings.registry.host, settings.registry_options.clone())?;
        let vscode = settings
            .build_args
            .get(CODE_SERVER_ARG)
            .is_none_or(|v| v != "none");
        let shared = Arc::new(Shared {
            runner,
            registry: client,
            reporter: Arc::clone(&reporter),
            settings: settings.clone(),
            log_dir,
            vscode,
            scanners,
            referrers,
            today: today(),
        });
        let scheduled = schedule(analyzed, &shared, jobs, &mut outcomes, &mut digests, store).await;
        if let Runner::Kube(k) = &shared.runner {
            // Each tarball is removed once fetched; what is left belongs
            // to builds that never started.
            let _ = std::fs::remove_dir_all(&k.contexts);
        }
        drop(ca_server);
        scheduled?;
    }

    // Images that were present are recorded only when that is news (a
    // no-op run does not grow the history).
    let settled = |r: BuildResult| matches!(r, BuildResult::Built | BuildResult::Present);
    for o in judged.iter().filter_map(|&i| outcomes[i].as_ref()) {
        let known = store
            .history(&o.image, 1)
            .await
            .map(|mut h| h.pop())
            .map_err(|source| BuildError::Record {
                image: o.image.clone(),
                source,
            })?;
        let news = known.is_none_or(|k| {
            k.digest != o.digest
                || k.hash != o.hash
                || !(k.result == o.result || settled(k.result) && settled(o.result))
        });
        if news || o.scan_docs.is_some() {
            record(store, &settings, o).await?;
        }
    }
    let images: Vec<Outcome> = analyzed
        .graph
        .order()
        .filter_map(|i| outcomes[i].take())
        .collect();
    Ok(Summary {
        run_id: settings.run_id.clone(),
        registry: plan.registry.clone().unwrap_or_default(),
        images,
        engine_used,
        registry_requests: heads,
        duration_ms: millis(started.elapsed()),
    })
}

/// The images to consider: the selection and every ancestor of it (a
/// parent's digest is needed even when it is up to date), or all.
pub fn needed(analyzed: &Analyzed, selection: &[String]) -> Result<Vec<usize>, BuildError> {
    let catalog = &analyzed.catalog;
    if selection.is_empty() {
        return Ok((0..catalog.images.len()).collect());
    }
    let mut set = BTreeSet::new();
    for name in selection {
        let Some(&i) = catalog.index.get(name.as_str()) else {
            // A file name (`notebook`) selects all of its variants.
            let variants: Vec<usize> = catalog
                .images
                .iter()
                .enumerate()
                .filter(|(_, im)| &im.repository == name)
                .map(|(i, _)| i)
                .collect();
            if variants.is_empty() {
                let hint = catalog
                    .images
                    .iter()
                    .map(|im| im.name.as_str())
                    .find(|n| n.starts_with(name.as_str()) || name.starts_with(n))
                    .map(|n| format!(" (did you mean {n:?}?)"))
                    .unwrap_or_default();
                return Err(BuildError::UnknownImage {
                    name: name.clone(),
                    hint,
                });
            }
            for v in variants {
                add_with_ancestors(analyzed, v, &mut set);
            }
            continue;
        };
        add_with_ancestors(analyzed, i, &mut set);
    }
    Ok(set.into_iter().collect())
}

fn add_with_ancestors(analyzed: &Analyzed, mut i: usize, set: &mut BTreeSet<usize>) {
    loop {
        set.insert(i);
        match analyzed.graph.parent[i] {
            Some(p) => i = p,
            None => return,
        }
    }
}

/// Run the jobs, each as soon as its parent is done and a slot is free.
async fn schedule(
    analyzed: &Analyzed,
    shared: &Arc<Shared>,
    mut jobs: BTreeMap<usize, Job>,
    outcomes: &mut [Option<Outcome>],
    digests: &mut HashMap<usize, String>,
    store: &StateStore,
) -> Result<(), BuildError> {
    // Images in flight: each holds at most one Job or test Pod at a time
    // in the cluster, so there the cluster's concurrency limits them too.
    // The scans (and context tarballs) still run here: `jobs` bounds them.
    let limit = match &shared.settings.backend {
        Backend::Kubernetes(k) => k.concurrency.min(shared.settings.jobs),
        Backend::Engine => shared.settings.jobs,
    }
    .max(1);
    let mut running: JoinSet<(usize, Outcome)> = JoinSet::new();
    // A record that cannot be written does not stop builds in flight: the
    // first such error is returned once everything has finished.
    let mut record_error: Option<BuildError> = None;
    let mut keep = |e: Result<(), BuildError>| {
        if let Err(e) = e {
            tracing::error!(error = %e, "cannot record a build result");
            record_error.get_or_insert(e);
        }
    };
    loop {
        // Start what can start, block what cannot ever start.
        let waiting: Vec<usize> = jobs.keys().copied().collect();
        for i in waiting {
            let parent = analyzed.graph.parent[i];
            let parent_state = parent.map(|p| (p, outcomes[p].as_ref()));
            let parent_ref = match parent_state {
                None => None,
                Some((p, Some(o))) if o.ok() => match digests.get(&p) {
                    Some(d) => Some(format!("{}@{}", o.repository, d)),
                    None => continue,
                },
                Some((_, Some(o))) => {
                    let Some(job) = jobs.remove(&i) else { continue };
                    let blocked = blocked(&job, o);
                    shared
                        .reporter
                        .event(Event::Done(Box::new(blocked.clone())));
                    keep(record(store, &shared.settings, &blocked).await);
                    outcomes[i] = Some(blocked);
                    continue;
                }
                // The parent is still to be built, or building.
                Some((_, None)) => continue,
            };
            if running.len() >= limit {
                break;
            }
            let Some(job) = jobs.remove(&i) else { continue };
            let shared = Arc::clone(shared);
            running.spawn(async move {
                let index = job.index;
                let mut crashed = unstarted(&job, BuildResult::Failed);
                let run = std::panic::AssertUnwindSafe(build_one(&shared, job, parent_ref));
                match futures::FutureExt::catch_unwind(run).await {
                    Ok(outcome) => (index, outcome),
                    Err(_) => {
                        crashed.reason = "internal error: the build task panicked (see the log above); please report it".into();
                        (index, crashed)
                    }
                }
            });
        }
        let Some(done) = running.join_next().await else {
            // Nothing runs and nothing could start: only images whose
            // parent never finished remain (impossible with an acyclic
            // graph, but never wait for them).
            for (i, job) in std::mem::take(&mut jobs) {
                let mut o = unstarted(&job, BuildResult::Blocked);
                o.reason = "not built: its parent never finished".into();
                keep(record(store, &shared.settings, &o).await);
                outcomes[i] = Some(o);
            }
            return match record_error {
                Some(e) => Err(e),
                None => Ok(()),
            };
        };
        let (i, outcome) = match done {
            Ok(x) => x,
            // Only a cancelled task ends here (panics are caught above).
            Err(e) => {
                tracing::error!(error = %e, "a build task was cancelled");
                continue;
            }
        };
        if let Some(d) = &outcome.digest {
            digests.insert(i, d.clone());
            write_inputs(
                &shared.settings.state_dir.join("inputs"),
                &outcome.image,
                &analyzed.prepared[i].inputs,
            );
        }
        keep(record(store, &shared.settings, &outcome).await);
        shared
            .reporter
            .event(Event::Done(Box::new(outcome.clone())));
        outcomes[i] = Some(outcome);
    }
}

/// The inputs of each image's last successful build, kept as
/// `<state>/inputs/<image>.json`, so that reasons can say what changed
/// ("template partials/x.tera changed") and not only that the tag is new.
fn read_baseline(dir: &Path) -> BTreeMap<String, Inputs> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let name = path.file_stem()?.to_str()?.to_string();
            let text = std::fs::read_to_string(&path).ok()?;
            // A damaged file only costs the detailed reason.
            let inputs: Inputs = serde_json::from_str(&text).ok()?;
            Some((name, inputs))
        })
        .collect()
}

fn write_inputs(dir: &Path, image: &str, inputs: &Inputs) {
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{image}.json.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(inputs).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, dir.join(format!("{image}.json")))
    };
    if let Err(e) = write() {
        tracing::warn!(image, error = %e, "cannot keep the build inputs; the next plan will give less detailed reasons");
    }
}

fn blocked(job: &Job, parent: &Outcome) -> Outcome {
    let mut o = unstarted(job, BuildResult::Blocked);
    o.reason = format!(
        "not built: its parent {} {}",
        parent.image,
        match parent.result {
            BuildResult::Blocked => "was not built",
            BuildResult::Rejected => "was rejected by the scan policy",
            _ => "failed",
        }
    );
    o
}

/// The outcome of a job that did not run (or did not finish), without a reason.
fn unstarted(job: &Job, result: BuildResult) -> Outcome {
    Outcome {
        image: job.name.clone(),
        repository: format!("{}/{}", job.repository.registry, job.repository.repository),
        variant: job.variant.clone(),
        hash: job.hash.clone(),
        content_tag: job.content_tag.clone(),
        result,
        digest: None,
        tags: Vec::new(),
        reason: String::new(),
        tail: Vec::new(),
        stages: BTreeMap::new(),
        tests: Vec::new(),
        log: None,
        base_digests: BTreeMap::new(),
        scan: None,
        scan_docs: None,
    }
}

pub(crate) async fn record(
    store: &StateStore,
    settings: &BuildSettings,
    o: &Outcome,
) -> Result<(), BuildError> {
    let now = now_ms();
    let total: u64 = o.stages.values().sum();
    let rec = BuildRecord {
        run_id: settings.run_id.clone(),
        image: o.image.clone(),
        variant: o.variant.clone(),
        hash: o.hash.clone(),
        content_tag: o.content_tag.clone(),
        repository: o.repository.clone(),
        digest: o.digest.clone(),
        tags: o.tags.clone(),
        base_digests: o.base_digests.clone(),
        result: o.result,
        reason: o.reason.clone(),
        stages: o.stages.clone(),
        tests: o.tests.clone(),
        log_path: o.log.as_ref().map(|p| p.display().to_string()),
        started_at: now - i64::try_from(total).unwrap_or(0),
        finished_at: now,
    };
    store
        .record(&rec)
        .await
        .map_err(|source| BuildError::Record {
            image: o.image.clone(),
            source,
        })?;
    if let (Some(docs), Some(brief), Some(digest)) = (&o.scan_docs, &o.scan, &o.digest) {
        let scan = ScanRecord {
            image: o.image.clone(),
            repository: o.repository.clone(),
            digest: digest.clone(),
            hash: o.hash.clone(),
            verdict: match brief.verdict {
                Verdict::Pass => "pass".into(),
                Verdict::Fail => "fail".into(),
            },
            published: brief.published,
            summary: serde_json::to_value(&brief.summary).unwrap_or_default(),
            report: String::from_utf8_lossy(&docs.report).into_owned(),
            sbom: String::from_utf8_lossy(&docs.sbom).into_owned(),
            created_at: now,
        };
        store
            .record_scan(&scan)
            .await
            .map_err(|source| BuildError::Record {
                image: o.image.clone(),
                source,
            })?;
    }
    Ok(())
}

/// The log of one image's build, written as it goes.
struct Log {
    path: PathBuf,
    file: Option<std::fs::File>,
    reporter: Arc<dyn Reporter>,
    image: String,
}

impl Log {
    fn new(dir: &Path, image: &str, reporter: Arc<dyn Reporter>) -> Log {
        let path = dir.join(format!("{image}.log"));
        let file = std::fs::File::create(&path)
            .map_err(|e| tracing::warn!(path = %path.display(), error = %e, "cannot write the build log"))
            .ok();
        Log {
            path,
            file,
            reporter,
            image: image.to_string(),
        }
    }

    fn line(&mut self, line: &str) {
        if let Some(f) = &mut self.file
            && writeln!(f, "{line}").is_err()
        {
            self.file = None;
        }
        self.reporter.event(Event::Line {
            image: self.image.clone(),
            line: line.to_string(),
        });
    }

    fn stage(&mut self, stage: &'static str) {
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "=== {stage}");
        }
        self.reporter.event(Event::Stage {
            image: self.image.clone(),
            stage,
        });
    }
}

/// Pull, build, test and push one image. Never fails as a function: every
/// failure is an outcome that names the stage and keeps the last lines.
async fn build_one(shared: &Shared, job: Job, parent_ref: Option<String>) -> Outcome {
    let log = Arc::new(Mutex::new(Log::new(
        &shared.log_dir,
        &job.name,
        Arc::clone(&shared.reporter),
    )));
    let mut outcome = Outcome {
        image: job.name.clone(),
        repository: format!("{}/{}", job.repository.registry, job.repository.repository),
        variant: job.variant.clone(),
        hash: job.hash.clone(),
        content_tag: job.content_tag.clone(),
        result: BuildResult::Failed,
        digest: None,
        tags: Vec::new(),
        reason: job.reason.clone(),
        tail: Vec::new(),
        stages: BTreeMap::new(),
        tests: Vec::new(),
        log: Some(log_path(&log)),
        base_digests: job.base.iter().cloned().collect(),
        scan: None,
        scan_docs: None,
    };
    let line = {
        let log = Arc::clone(&log);
        move |l: &str| {
            if let Ok(mut log) = log.lock() {
                log.line(l);
            }
        }
    };
    let stage = |s: &'static str| {
        if let Ok(mut log) = log.lock() {
            log.stage(s);
        }
    };

    // The parent: pinned by digest.
    let from = match (&parent_ref, &job.base) {
        (Some(p), _) => p.clone(),
        (None, Some((pinned, _))) => pinned.clone(),
        (None, None) => {
            fail(
                &mut outcome,
                "pull",
                "the image has neither a base nor a parent digest".into(),
                Vec::new(),
            );
            return outcome;
        }
    };
    let built = match &shared.runner {
        Runner::Engine {
            engine,
            buildkit,
            ca_url,
        } => {
            let how = EngineBuild {
                engine,
                buildkit: *buildkit,
                ca_url: ca_url.as_deref(),
            };
            engine_build(shared, &how, &job, &from, &mut outcome, &line, &stage).await
        }
        Runner::Kube(k) => kube_build(shared, k, &job, &from, &mut outcome, &line, &stage).await,
    };
    let Some(built) = built else {
        return outcome;
    };

    // Smoke tests.
    stage("test");
    let t = Instant::now();
    let mut tests: Vec<(String, String, Duration, bool, Option<String>)> = Vec::new();
    // Where GPU tests can run: the engine's GPUs (`build.gpu`), or the
    // cluster's GPU nodes (`[kubernetes.build.tests] gpu`).
    let no_gpu = match &shared.runner {
        Runner::Engine { .. } => (!shared.settings.gpu)
            .then_some("needs a GPU; this host has none configured (build.gpu = false)"),
        Runner::Kube(k) => (!k.gpu_tests)
            .then_some("needs a GPU; GPU tests are off ([kubernetes.build.tests] gpu = false)"),
    };
    for test in &job.tests {
        let skip = if let Some(why) = no_gpu.filter(|_| test.gpu) {
            Some(why.to_string())
        } else if test.real_base && job.stand_in {
            Some("checks the real base, and this build maps it to a stand-in".to_string())
        } else if test.vscode && !shared.vscode {
            Some(format!(
                "needs VS Code, which this build leaves out ({CODE_SERVER_ARG}=none)"
            ))
        } else {
            None
        };
        tests.push((
            test.name.clone(),
            test.run.clone(),
            Duration::from_secs(u64::from(test.timeout_seconds)),
            test.gpu,
            skip,
        ));
    }
    if job.server_test {
        tests.push((
            SERVER_TEST.into(),
            SERVER_TEST_COMMAND.into(),
            Duration::from_secs(150),
            false,
            None,
        ));
    }
    let mut failed_test = None;
    for (name, run, timeout, gpu, skip) in tests {
        let started = Instant::now();
        let record = match skip {
            Some(why) => TestRecord {
                name: name.clone(),
                result: TestResult::Skipped,
                duration_ms: 0,
                detail: why,
            },
            None => match run_test(&built, &job, &name, &run, timeout, gpu).await {
                Ok(r) => {
                    let passed = r.exit_code == Some(0) && !r.timed_out;
                    for l in r.output.lines() {
                        line(&format!("[{name}] {l}"));
                    }
                    let detail = if r.timed_out {
                        format!("timed out after {} s", timeout.as_secs())
                    } else if passed {
                        last_lines(&r.output, 1).join("")
                    } else {
                        format!(
                            "exit code {}: {}",
                            r.exit_code.unwrap_or(-1),
                            last_lines(&r.output, 5).join(" | ")
                        )
                    };
                    if !passed && failed_test.is_none() {
                        failed_test =
                            Some((name.clone(), detail.clone(), last_lines(&r.output, 20)));
                    }
                    TestRecord {
                        name: name.clone(),
                        result: if passed {
                            TestResult::Passed
                        } else {
                            TestResult::Failed
                        },
                        duration_ms: millis(started.elapsed()),
                        detail,
                    }
                }
                Err(detail) => {
                    failed_test.get_or_insert((name.clone(), detail.clone(), Vec::new()));
                    TestRecord {
                        name: name.clone(),
                        result: TestResult::Failed,
                        duration_ms: millis(started.elapsed()),
                        detail,
                    }
                }
            },
        };
        shared.reporter.event(Event::Test {
            image: job.name.clone(),
            test: record.clone(),
        });
        outcome.tests.push(record);
    }
    outcome.stages.insert("test".into(), millis(t.elapsed()));
    if let Some((name, detail, tail)) = failed_test {
        fail(
            &mut outcome,
            "test",
            format!("smoke test {name}: {detail}"),
            tail,
        );
        return outcome;
    }

    // Push the content tag (the cluster's build pushed the image already:
    // only the tag is new); the moving tags wait for the scan gate.
    stage("push");
    let t = Instant::now();
    let tags = vec![job.content_tag.clone()];
    let options = shared.settings.push_options();
    let progress = {
        let line = line.clone();
        move |event: PushEvent| line(&format!("push: {event}"))
    };
    let pushed = match &built {
        Built::Engine { engine, image_id } => push::push_image(
            engine,
            &shared.registry,
            image_id,
            &job.repository,
            &tags,
            &options,
            &progress,
        )
        .await
        .map(|p| (p.digest, p.tags)),
        Built::Pushed { digest, .. } => push::tag(
            &shared.registry,
            &job.repository,
            digest,
            &tags,
            &options,
            &progress,
        )
        .await
        .map(|tags| (digest.clone(), tags)),
    };
    outcome.stages.insert("push".into(), millis(t.elapsed()));
    let digest = match pushed {
        Ok((digest, tags)) => {
            outcome.digest = Some(digest.clone());
            outcome.tags = tags;
            digest
        }
        Err(e) => {
            fail(
                &mut outcome,
                "push",
                labforge_core::error_chain(&e),
                Vec::new(),
            );
            return outcome;
        }
    };

    // Scan: inventory, SBOM, scanners, policy; both documents attached.
    stage("scan");
    let t = Instant::now();
    let created = crate::state::format_rfc3339(now_ms());
    let repository = format!("{}/{}", job.repository.registry, job.repository.repository);
    let say = {
        let line = line.clone();
        move |l: String| line(&format!("scan: {l}"))
    };
    let pinned = ImageRef {
        reference: digest.clone(),
        ..job.repository.clone()
    };
    let source = match &built {
        Built::Engine { engine, image_id } => scan::stage::Source::Engine { engine, image_id },
        Built::Pushed { .. } => scan::stage::Source::Registry {
            client: &shared.registry,
            image: &pinned,
        },
    };
    let scanned = scan::stage::scan_from(
        source,
        &shared.scanners,
        &shared.referrers,
        scan::stage::Target {
            image: &job.name,
            repository: &repository,
            digest: &digest,
            tags: tags.clone(),
            policy: &job.policy,
            created: &created,
            today: shared.today,
        },
        &say,
    )
    .await;
    outcome.stages.insert("scan".into(), millis(t.elapsed()));
    let scanned = match scanned {
        Ok(s) => s,
        Err(e) => {
            fail(
                &mut outcome,
                "scan",
                format!(
                    "{}; the image keeps only its content tag {}",
                    labforge_core::error_chain(&e),
                    job.content_tag
                ),
                Vec::new(),
            );
            return outcome;
        }
    };
    let docs = Arc::new(ScanDocs {
        report: scanned.report_json,
        sbom: scanned.sbom,
    });
    outcome.scan_docs = Some(docs);
    if let Some(e) = &scanned.attach_error {
        // The verdict is recorded, but an image whose SBOM and report are
        // not next to it in the registry is not published.
        outcome.scan = Some(ScanBrief::of(&scanned.report, false));
        fail(
            &mut outcome,
            "scan",
            format!(
                "{e}; the image keeps only its content tag {}",
                job.content_tag
            ),
            Vec::new(),
        );
        return outcome;
    }
    if scanned.report.verdict == Verdict::Fail {
        for r in &scanned.report.reasons {
            line(&format!("scan: blocking: {r}"));
        }
        outcome.result = BuildResult::Rejected;
        outcome.reason = format!(
            "rejected by the scan policy ({}): {}; it keeps only its content tag {}",
            scanned.report.summary,
            first_reasons(&scanned.report.reasons),
            job.content_tag
        );
        outcome.scan = Some(ScanBrief::of(&scanned.report, false));
        return outcome;
    }

    // Publish: the moving tags.
    let t = Instant::now();
    let tagged = push::tag(
        &shared.registry,
        &job.repository,
        &digest,
        &job.moving_tags,
        &options,
        &progress,
    )
    .await;
    outcome.stages.insert("tag".into(), millis(t.elapsed()));
    match tagged {
        Ok(moved) => {
            outcome.tags.extend(moved);
            outcome.result = BuildResult::Built;
            outcome.scan = Some(ScanBrief::of(&scanned.report, true));
        }
        Err(e) => {
            outcome.scan = Some(ScanBrief::of(&scanned.report, false));
            fail(
                &mut outcome,
                "tag",
                labforge_core::error_chain(&e),
                Vec::new(),
            );
        }
    }
    outcome
}

/// Mark the outcome failed at `stage`.
fn fail(outcome: &mut Outcome, stage: &str, message: String, tail: Vec<String>) {
    outcome.result = BuildResult::Failed;
    outcome.reason = format!("{stage} failed: {message}");
    outcome.tail = tail;
}

/// The engine backend's builder, for one build.
struct EngineBuild<'a> {
    engine: &'a Engine,
    buildkit: bool,
    ca_url: Option<&'a str>,
}

/// Pull the parent if the engine lacks it, then build. `None`: failed (the
/// outcome says why).
async fn engine_build<'a>(
    shared: &Shared,
    how: &EngineBuild<'a>,
    job: &Job,
    from: &str,
    outcome: &mut Outcome,
    line: &(dyn Fn(&str) + Send + Sync),
    stage: &(dyn Fn(&'static str) + Send + Sync),
) -> Option<Built<'a>> {
    let engine = how.engine;
    stage("pull");
    let t = Instant::now();
    let present = engine.image_id(from).await;
    let pulled = match present {
        Ok(Some(id)) => {
            line(&format!("FROM {from}: in the engine as {id}"));
            Ok(())
        }
        Ok(None) => {
            line(&format!("FROM {from}: pulling"));
            let mut on_line = |l: &str| line(l);
            // Only that registry's own login goes with the pull.
            let host = labforge_core::formats::split_reference(from)
                .map(|p| p.registry)
                .unwrap_or_default();
            let credentials = if host == shared.settings.registry.host {
                shared
                    .settings
                    .registry_options
                    .username
                    .clone()
                    .zip(shared.settings.registry_options.password.clone())
            } else {
                crate::creds::login_for(&host, &shared.settings.registry.host)
                    .unwrap_or_else(|e| {
                        tracing::warn!(registry = %host, error = %e, "no login for the parent's registry");
                        None
                    })
            };
            engine.pull(from, credentials, &mut on_line).await
        }
        Err(e) => Err(e),
    };
    outcome.stages.insert("pull".into(), millis(t.elapsed()));
    if let Err(e) = pulled {
        fail(outcome, "pull", labforge_core::error_chain(&e), Vec::new());
        return None;
    }

    stage("build");
    let t = Instant::now();
    let local_tag = job.repository.to_string();
    let mut build_args = job.build_args.clone();
    build_args.insert("BASE_IMAGE".into(), from.to_string());
    if let Some(url) = how.ca_url {
        build_args.insert(CA_URL_ARG.into(), url.to_string());
    }
    let request = BuildRequest {
        image: &job.name,
        dockerfile: &job.dockerfile,
        context: &job.context,
        tag: &local_tag,
        build_args: &build_args,
        labels: &job.labels,
    };
    let mut on_line = |l: &str| line(l);
    line(&format!(
        "building with {}",
        if how.buildkit {
            "BuildKit"
        } else {
            "the classic builder"
        }
    ));
    let built = if how.buildkit {
        crate::buildkit::build(engine, &request, &mut on_line).await
    } else {
        engine.build(&request, &mut on_line).await
    };
    outcome.stages.insert("build".into(), millis(t.elapsed()));
    match built {
        Ok(b) => Some(Built::Engine {
            engine,
            image_id: b.image_id,
        }),
        Err(EngineError::BuildFailed {
            instruction,
            message,
            tail,
            ..
        }) => {
            let at = instruction.unwrap_or_else(|| "its start".into());
            fail(outcome, "build", format!("at {at}: {message}"), tail);
            None
        }
        Err(e) => {
            fail(outcome, "build", labforge_core::error_chain(&e), Vec::new());
            None
        }
    }
}

/// Build in the cluster: the context tarball offered to a BuildKit Job,
/// which pushes by digest; the digest confirmed in the registry. `None`:
/// failed (the outcome says why).
async fn kube_build<'a>(
    shared: &Shared,
    k: &'a KubeRunner,
    job: &Job,
    from: &str,
    outcome: &mut Outcome,
    line: &(dyn Fn(&str) + Send + Sync),
    stage: &(dyn Fn(&'static str) + Send + Sync),
) -> Option<Built<'a>> {
    stage("build");
    let t = Instant::now();
    let tar = k.contexts.join(format!("{}.tar", job.name));
    let (dockerfile, context, path) = (job.dockerfile.clone(), job.context.clone(), tar.clone());
    let written = tokio::task::spawn_blocking(move || {
        crate::engine::context_tar(&dockerfile, &context)
            .map_err(|e| labforge_core::error_chain(&e))
            .and_then(|bytes| {
                std::fs::write(&path, bytes)
                    .map_err(|e| format!("cannot write the context {}: {e}", path.display()))
            })
    })
    .await
    .unwrap_or_else(|e| Err(format!("the context writer stopped: {e}")));
    if let Err(message) = written {
        fail(outcome, "build", message, Vec::new());
        return None;
    }
    let mut build_args = job.build_args.clone();
    build_args.insert("BASE_IMAGE".into(), from.to_string());
    let target = format!("{}/{}", job.repository.registry, job.repository.repository);
    line(&format!(
        "building in the cluster: a BuildKit Job pushes {target} by digest"
    ));
    let request = crate::kube_build::BuildRequest {
        image: &job.name,
        identity: &job.hash,
        target: &target,
        build_args: &build_args,
        labels: &job.labels,
        platform: &k.platform,
        context_tar: &tar,
    };
    let pushed = k.builder.build(&request, |l| line(l)).await;
    // Gone already when the Job fetched it; not when it never did.
    let _ = tokio::fs::remove_file(&tar).await;
    outcome.stages.insert("build".into(), millis(t.elapsed()));
    let pushed = match pushed {
        Ok(p) => p,
        Err(KubeBuildError::Failed {
            job: name,
            reason,
            tail,
            ..
        }) => {
            fail(
                outcome,
                "build",
                format!("the build Job {name}: {reason}"),
                tail,
            );
            return None;
        }
        Err(e) => {
            fail(outcome, "build", labforge_core::error_chain(&e), Vec::new());
            return None;
        }
    };
    // Only a digest the registry confirms counts.
    let pinned = ImageRef {
        reference: pushed.digest.clone(),
        ..job.repository.clone()
    };
    match shared.registry.manifest_digest(&pinned).await {
        Ok(Some(d)) if d == pushed.digest => {
            line(&format!("the registry holds {target}@{d}"));
            Some(Built::Pushed {
                tester: &k.tester,
                digest: d,
            })
        }
        Ok(_) => {
            fail(
                outcome,
                "build",
                format!(
                    "the build Job reported {}, but the registry has no such manifest in {target}",
                    pushed.digest
                ),
                Vec::new(),
            );
            None
        }
        Err(e) => {
            fail(
                outcome,
                "build",
                format!(
                    "cannot confirm {} in the registry: {}",
                    pushed.digest,
                    labforge_core::error_chain(&e)
                ),
                Vec::new(),
            );
            None
        }
    }
}

/// Run one smoke test where the image is: a container of the engine, or
/// a Pod from the pushed digest. An error is the test's failure detail.
async fn run_test(
    built: &Built<'_>,
    job: &Job,
    name: &str,
    run: &str,
    timeout: Duration,
    gpu: bool,
) -> Result<TestRun, String> {
    match built {
        Built::Engine { engine, image_id } => engine
            .run_test_with(image_id, run, timeout, gpu)
            .await
            .map_err(|e| labforge_core::error_chain(&e)),
        Built::Pushed { tester, digest } => {
            let reference = format!(
                "{}/{}@{digest}",
                job.repository.registry, job.repository.repository
            );
            let request = TestRequest {
                image: &job.name,
                identity: &job.hash,
                test: name,
                reference: &reference,
                run,
                timeout,
                gpu,
            };
            tester
                .run(&request, |_| {})
                .await
                .map_err(|e| labforge_core::error_chain(&e))
        }
    }
}

/// The tags for humans that point at an image's published digest:
/// `<variant>`, `<variant>-<date>`, and `latest` for the default variant.
pub(crate) fn moving_tags(image: &labforge_core::catalog::Image, date: &str) -> Vec<String> {
    let mut tags = vec![image.variant.clone(), format!("{}-{date}", image.variant)];
    if image.default_variant {
        tags.push("latest".into());
    }
    tags
}

/// At most three reasons, and how many more.
fn first_reasons(reasons: &[String]) -> String {
    let mut s = reasons
        .iter()
        .take(3)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if reasons.len() > 3 {
        s.push_str(&format!("; and {} more", reasons.len() - 3));
    }
    s
}

/// Today's UTC date, for waiver expiry.
pub(crate) fn today() -> Date {
    Date::from_unix(now_ms() / 1000)
}

/// Present images are judged again before anything is built, from their
/// stored scan, without the engine: under today's policy (a waiver added or
/// expired, a threshold changed), with no engine call. One that passes now
/// and was not published gets its moving tags and a new report; one that
/// fails now is rejected (and its children are not built). A present image
/// with no scan on record here is judged from the report attached to it in
/// the registry; with none there either, or one that cannot be judged again
/// (a scanner did not finish, other scanners), it is rejected until
/// `labforge scan` scans it: fail closed.
async fn regate(
    analyzed: &Analyzed,
    settings: &BuildSettings,
    store: &StateStore,
    outcomes: &mut [Option<Outcome>],
) -> Result<(), BuildError> {
    let mut clients: Option<(RegistryClient, Referrers)> = None;
    for (i, slot) in outcomes.iter_mut().enumerate() {
        let Some(o) = slot else { continue };
        let (BuildResult::Present, Some(digest)) = (o.result, o.digest.clone()) else {
            continue;
        };
        if clients.is_none() {
            let client = RegistryClient::new(
                settings.registry_options.clone(),
                &[settings.registry.host.as_str()],
            )
            .map_err(BuildError::Client)?;
            let referrers =
                Referrers::new(&settings.registry.host, settings.registry_options.clone())?;
            clients = Some((client, referrers));
        }
        let Some((client, referrers)) = &clients else {
            continue;
        };
        let image = &analyzed.catalog.images[i];
        let last = store
            .latest_scan(&o.image, Some(&digest))
            .await
            .map_err(|source| BuildError::Record {
                image: o.image.clone(),
                source,
            })?;
        let (stored, published, sbom) = match last {
            Some(last) => (
                serde_json::from_slice::<Report>(last.report.as_bytes()).ok(),
                last.published,
                last.sbom.into_bytes(),
            ),
            None => {
                // Scanned elsewhere (another machine's state)? The report
                // is attached to the image in the registry.
                let fetched = referrers
                    .fetch(
                        &o.repository,
                        &digest,
                        crate::scan::referrers::REPORT_ARTIFACT_TYPE,
                    )
                    .await;
                let report = match fetched {
                    Ok(Some(f)) => serde_json::from_slice::<Report>(&f.payload).ok(),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(image = %o.image, error = %labforge_core::error_chain(&e), "cannot read the attached scan report");
                        None
                    }
                };
                let published = client
                    .manifest_digest(&ImageRef {
                        registry: settings.registry.host.clone(),
                        repository: settings.registry.path(&image.repository),
                        reference: image.variant.clone(),
                    })
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|d| d == digest);
                (report, published, Vec::new())
            }
        };
        let unjudged = |o: &mut Outcome, why: String| {
            o.result = BuildResult::Rejected;
            o.reason = format!(
                "{why}: not published until `labforge scan {}` scans it; it keeps only its content tag {}",
                o.image, o.content_tag
            );
        };
        let Some(report) = stored else {
            unjudged(o, "no readable scan report for this digest".to_string());
            continue;
        };
        if let Err(why) = crate::scan::stage::rejudgeable(&report, &settings.scan) {
            unjudged(o, why);
            o.scan = Some(ScanBrief::of(&report, false));
            continue;
        }
        let created = crate::state::format_rfc3339(now_ms());
        let mut again = policy::reevaluate(&image.scan, &report, today());
        again.created = created.clone();
        let unchanged = again.verdict == report.verdict && again.summary == report.summary;
        if again.verdict == Verdict::Fail {
            o.result = BuildResult::Rejected;
            o.reason = format!(
                "rejected by the scan policy ({}): {}; it keeps only its content tag {}",
                again.summary,
                first_reasons(&again.reasons),
                o.content_tag
            );
            o.scan = Some(ScanBrief::of(&again, false));
            if !unchanged || published {
                // News: it passed before (or was published). Recorded as not
                // published; the moving tags stay for humans.
                o.scan_docs = Some(Arc::new(ScanDocs {
                    report: scan::stage::report_bytes(&again),
                    sbom,
                }));
            }
            continue;
        }
        if published {
            o.scan = Some(ScanBrief::of(&again, true));
            continue;
        }
        let target = ImageRef {
            registry: settings.registry.host.clone(),
            repository: settings.registry.path(&image.repository),
            reference: o.content_tag.clone(),
        };
        let report_json = scan::stage::report_bytes(&again);
        let attached = scan::stage::attach(
            referrers,
            &scan::stage::Target {
                image: &o.image,
                repository: &o.repository,
                digest: &digest,
                tags: vec![o.content_tag.clone()],
                policy: &image.scan,
                created: &created,
                today: today(),
            },
            &[],
            &report_json,
        )
        .await;
        let options = settings.push_options();
        let tagged = match attached {
            Ok(()) => push::tag(
                client,
                &target,
                &digest,
                &moving_tags(image, &settings.date),
                &options,
                &|_| {},
            )
            .await
            .map_err(|e| labforge_core::error_chain(&e)),
            Err(e) => Err(labforge_core::error_chain(&e)),
        };
        o.scan_docs = Some(Arc::new(ScanDocs {
            report: report_json,
            sbom,
        }));
        match tagged {
            Ok(moved) => {
                o.tags.extend(moved);
                o.reason = format!(
                    "published: its scan passes under today's policy ({})",
                    again.summary
                );
                o.scan = Some(ScanBrief::of(&again, true));
            }
            Err(e) => {
                o.result = BuildResult::Failed;
                o.reason = format!("publishing after the scan passed failed: {e}");
                o.scan = Some(ScanBrief::of(&again, false));
            }
        }
    }
    Ok(())
}

fn log_path(log: &Arc<Mutex<Log>>) -> PathBuf {
    log.lock().map(|l| l.path.clone()).unwrap_or_default()
}

/// The digest part of a pinned reference (`repo@sha256:…`).
fn base_digest(reference: &str) -> String {
    reference
        .rsplit_once('@')
        .map_or(reference, |(_, d)| d)
        .to_string()
}

fn last_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
