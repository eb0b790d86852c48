//! The Docker Engine API (bollard): build images, run smoke tests in
//! containers, inspect and remove images. The one module that talks to the
//! engine.
//!
//! Builds use the classic builder (`version=1`), which every engine speaks
//! through the plain API; the build context is a tar made in memory from the
//! rendered Dockerfile and context files, never read from disk here. This
//! module does not decide what to build and does not push to registries (the
//! pusher reads images through [`Engine::docker`]); it pulls only when asked
//! to ([`Engine::pull`], for a parent pinned by digest), removes only the
//! containers it created for smoke tests, and images only when asked to.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, BuilderVersion, CreateContainerOptionsBuilder,
    CreateImageOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures::StreamExt;

/// The label every smoke-test container carries; its value is the image
/// reference the test ran. Leftovers (a run cancelled half-way) are found by it.
pub const SMOKE_TEST_LABEL: &str = "labforge.smoke-test";

/// How many of the last build output lines a `BuildFailed` carries.
pub const TAIL_LINES: usize = 20;

/// How long `connect` waits for the engine to answer a ping.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the engine listens when DOCKER_HOST is not set.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// The name of the Dockerfile inside the context tar.
const DOCKERFILE: &str = "Dockerfile";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "cannot reach the Docker Engine at {host}: {message}; is dockerd running and DOCKER_HOST right? (locally, `bash scripts/services.sh` starts one)"
    )]
    Connect { host: String, message: String },
    #[error("{image}: the build failed at {}: {message}", instruction.as_deref().unwrap_or("its start"))]
    BuildFailed {
        image: String,
        /// The failing step as the engine printed it, e.g. `Step 3/4 : RUN exit 3`.
        instruction: Option<String>,
        message: String,
        /// The last output lines (at most `TAIL_LINES`), the error included.
        tail: Vec<String>,
    },
    #[error("{image}: the build of {tag} finished without an error but no image has that tag")]
    NoImage { image: String, tag: String },
    #[error("cannot pull {reference}: {message}")]
    Pull { reference: String, message: String },
    #[error("build context path {path:?}: {message}")]
    Context { path: String, message: String },
    /// The bollard error is the cause (`source()`), printed after `what` by
    /// `{:#}` and `error_chain`, so it is not repeated in the message.
    #[error("{what}")]
    Api {
        what: String,
        #[source]
        source: BollardError,
    },
}

fn api(what: impl Into<String>) -> impl FnOnce(BollardError) -> EngineError {
    let what = what.into();
    move |source| EngineError::Api { what, source }
}

/// Is this the engine saying "no such object"?
fn is_status(e: &BollardError, status: u16) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

/// One image build.
#[derive(Debug, Clone, Copy)]
pub struct BuildRequest<'a> {
    /// Catalog image name, for messages and log prefixes.
    pub image: &'a str,
    /// Rendered Dockerfile text.
    pub dockerfile: &'a str,
    /// Context files: relative path (`requirements.txt`, `files/vscode/x`) to bytes.
    pub context: &'a BTreeMap<String, Vec<u8>>,
    /// The tag the result gets, e.g. `labforge/grading:main-0123456789ab`.
    pub tag: &'a str,
    pub build_args: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
}

impl BuildRequest<'_> {
    /// Build arguments and labels as the build options take them (shared by
    /// the classic builder and BuildKit).
    pub(crate) fn option_maps(&self) -> (HashMap<&str, &str>, HashMap<&str, &str>) {
        fn map(m: &BTreeMap<String, String>) -> HashMap<&str, &str> {
            m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
        }
        (map(self.build_args), map(self.labels))
    }
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct Built {
    /// `sha256:…` of the image config.
    pub image_id: String,
    /// Every output line, in order.
    pub log: Vec<String>,
}

/// A finished smoke test.
#[derive(Debug, Clone)]
pub struct TestRun {
    /// The command's exit code; `None` when it timed out.
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    /// stdout and stderr, interleaved as the engine logged them.
    pub output: String,
}

/// What `inspect_image` reports.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub id: String,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// The `USER` the image runs as (empty: root).
    pub user: String,
    pub size: Option<i64>,
}

/// Limits of a smoke-test container.
const SMOKE_TEST_MEMORY: i64 = 8 * 1024 * 1024 * 1024;
const SMOKE_TEST_PIDS: i64 = 1024;
/// How many of a smoke test's last output lines are kept.
const SMOKE_TEST_LOG_LINES: &str = "2000";

/// A connection to one Docker Engine.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    host: String,
}

impl Engine {
    /// Connect to `DOCKER_HOST` if set (`unix://` or `tcp://`), else the
    /// default socket; check that the engine answers a ping, and speak the
    /// highest API version both sides know.
    pub async fn connect() -> Result<Engine, EngineError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        Engine::connect_to(&host).await
    }

    /// Connect to `host` (`unix:///path` or `tcp://host:port`).
    pub async fn connect_to(host: &str) -> Result<Engine, EngineError> {
        let fail = |message: String| EngineError::Connect {
            host: host.to_string(),
            message,
        };
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            if !std::path::Path::new(path).exists() {
                return Err(fail(format!("there is no socket at {path}")));
            }
            Docker::connect_with_host(host)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_host(host)
        } else {
            return Err(fail(
                "only unix:// and tcp:// addresses are supported".to_string(),
            ));
        }
        .map_err(|e| fail(labforge_core::error_chain(&e)))?;
        match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
            Err(_) => {
                return Err(fail(format!(
                    "no answer to a ping within {} s",
                    PING_TIMEOUT.as_secs()
                )));
            }
            Ok(Err(e)) => return Err(fail(labforge_core::error_chain(&e))),
            Ok(Ok(_)) => {}
        }
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| fail(format!("API version negotiation: {e}")))?;
        tracing::debug!(host, api = %docker.client_version(), "connected to the Docker Engine");
        Ok(Engine {
            docker,
            host: host.to_string(),
        })
    }

    /// The bollard client, for modules that speak to the engine on their own
    /// (the pusher reads images with it).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The address connected to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The API version this client speaks (after negotiation), e.g. `1.41`.
    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }

    /// The engine's version and the highest API version it speaks.
    pub async fn version(&self) -> Result<(String, String), EngineError> {
        let v = self
            .docker
            .version()
            .await
            .map_err(api("ask the engine for its version"))?;
        Ok((
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default(),
        ))
    }

    /// Build with the classic builder, streaming the context made by
    /// [`context_tar`]. Every output line goes to `on_line` as it arrives;
    /// the whole stream is read. A failure inside the stream becomes
    /// `BuildFailed` with the failing step, the message and the last lines.
    pub async fn build(
        &self,
        req: &BuildRequest<'_>,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Built, EngineError> {
        let tar = context_tar(req.dockerfile, req.context)?;
        let (build_args, labels) = req.option_maps();
        let options = BuildImageOptionsBuilder::new()
            .dockerfile(DOCKERFILE)
            .t(req.tag)
            .version(BuilderVersion::BuilderV1)
            .rm(true)
            .forcerm(true)
            .buildargs(&build_args)
            .labels(&labels)
            .build();
        tracing::debug!(
            image = req.image,
            tag = req.tag,
            context_bytes = tar.len(),
            "build"
        );
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(tar.into())));

        let mut out = Output::new(on_line);
        let mut image_id = None;
        let mut failure: Option<String> = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = &info.stream {
                        out.text(text);
                    }
                    if let Some(status) = &info.status {
                        // Pull progress repeats once per chunk; keep the phases.
                        let progress = info
                            .progress_detail
                            .as_ref()
                            .is_some_and(|p| p.current.is_some());
                        if !progress {
                            match &info.id {
                                Some(id) => out.line(&format!("{id}: {status}")),
                                None => out.line(status),
                            }
                        }
                    }
                    // With bollard's `buildkit_providerless` feature `aux` is
                    // an enum; the classic builder only sends the image id.
                    if let Some(bollard::models::BuildInfoAux::Default(aux)) = info.aux
                        && let Some(id) = aux.id
                    {
                        image_id = Some(id);
                    }
                }
                // An error line in the stream (a failed RUN, a missing base).
                Err(BollardError::DockerStreamError { error }) => {
                    out.flush();
                    out.line(&format!("ERROR: {error}"));
                    failure.get_or_insert(error);
                }
                // The engine refused the build before it started (a Dockerfile
                // it cannot parse, a bad option): a build failure too.
                Err(BollardError::DockerResponseServerError {
                    status_code,
                    message,
                }) if (400..500).contains(&status_code) || status_code == 500 => {
                    out.line(&format!("ERROR: {message}"));
                    failure.get_or_insert(message);
                }
                Err(e) => {
                    return Err(EngineError::Api {
                        what: format!("{}: build {}", req.image, req.tag),
                        source: e,
                    });
                }
            }
        }
        out.flush();
        let Output { log, last_step, .. } = out;
        if let Some(message) = failure {
            let tail = log[log.len().saturating_sub(TAIL_LINES)..].to_vec();
            return Err(EngineError::BuildFailed {
                image: req.image.to_string(),
                instruction: last_step,
                message,
                tail,
            });
        }
        let image_id = match image_id {
            Some(id) => id,
            // Engines that do not send the id as `aux` still tagged the result.
            None => self
                .image_id(req.tag)
                .await?
                .ok_or_else(|| EngineError::NoImage {
                    image: req.image.to_string(),
                    tag: req.tag.to_string(),
                })?,
        };
        Ok(Built { image_id, log })
    }

    /// Pull `reference` (`repo@sha256:…` or `repo:tag`) into the engine,
    /// with `credentials` for its registry. Progress lines go to `on_line`
    /// (phases only, not every chunk). An error inside the pull stream (an
    /// unknown digest, a refused login) is an error here.
    pub async fn pull(
        &self,
        reference: &str,
        credentials: Option<(String, String)>,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), EngineError> {
        let options = CreateImageOptionsBuilder::new()
            .from_image(reference)
            .build();
        let credentials = credentials.map(|(username, password)| DockerCredentials {
            username: Some(username),
            password: Some(password),
            ..Default::default()
        });
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        while let Some(item) = stream.next().await {
            let info = item.map_err(api(format!("pull {reference}")))?;
            if let Some(message) = info.error_detail.and_then(|d| d.message) {
                return Err(EngineError::Pull {
                    reference: reference.to_string(),
                    message,
                });
            }
            let progress = info
                .progress_detail
                .as_ref()
                .is_some_and(|p| p.current.is_some());
            if let (Some(status), false) = (&info.status, progress) {
                match &info.id {
                    Some(id) => on_line(&format!("{id}: {status}")),
                    None => on_line(status),
                }
            }
        }
        Ok(())
    }

    /// The gateway address of the engine's default bridge network: the host
    /// as seen from build and test containers (e.g. `172.17.0.1`).
    pub async fn bridge_gateway(&self) -> Result<Option<String>, EngineError> {
        let network = self
            .docker
            .inspect_network(
                "bridge",
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .map_err(api("inspect the bridge network"))?;
        Ok(network
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .find_map(|c| c.gateway))
    }

    /// The id (`sha256:…`) of a local image, or `None` if the engine has none by that reference.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>, EngineError> {
        Ok(self.inspect_image(reference).await?.map(|i| i.id))
    }

    /// Id, tags, labels, user and size of a local image, or `None` if absent.
    pub async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, EngineError> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => {
                let config = i.config.unwrap_or_default();
                Ok(Some(ImageInfo {
                    id: i.id.unwrap_or_default(),
                    tags: i.repo_tags.unwrap_or_default(),
                    labels: config.labels.unwrap_or_default().into_iter().collect(),
                    user: config.user.unwrap_or_default(),
                    size: i.size,
                }))
            }
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(EngineError::Api {
                what: format!("inspect image {reference}"),
                source: e,
            }),
        }
    }

    /// Remove a local image (by tag: untag it, and delete it once no tag is
    /// left). `false` if there was none.
    pub async fn remove_image(&self, reference: &str) -> Result<bool, EngineError> {
        let options = RemoveImageOptionsBuilder::new().build();
        match self
            .docker
            .remove_image(reference, Some(options), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) => Err(EngineError::Api {
                what: format!("remove image {reference}"),
                source: e,
            }),
        }
    }

    /// Smoke test: run `/bin/sh -c <command>` in a new container of `image`
    /// (no TTY, no network, as the image's user), wait at most `timeout`, and
    /// collect stdout and stderr. The container is always removed, also after
    /// a timeout (killed first) or a failure.
    pub async fn run_test(
        &self,
        image: &str,
        command: &str,
        timeout: Duration,
    ) -> Result<TestRun, EngineError> {
        self.run_test_with(image, command, timeout, false).await
    }

    /// [`Engine::run_test`], with every NVIDIA GPU of the host when `gpus`
    /// (for tests marked `gpu: true`, on hosts configured to have them).
    pub async fn run_test_with(
        &self,
        image: &str,
        command: &str,
        timeout: Duration,
        gpus: bool,
    ) -> Result<TestRun, EngineError> {
        let device_requests = gpus.then(|| {
            vec![DeviceRequest {
                driver: Some("nvidia".into()),
                count: Some(-1),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]
        });
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            cmd: Some(vec![command.to_string()]),
            tty: Some(false),
            attach_stdin: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(false),
            network_disabled: Some(true),
            labels: Some(HashMap::from([(
                SMOKE_TEST_LABEL.to_string(),
                image.to_string(),
            )])),
            // Catalog commands run here: no network, no extra privileges,
            // and bounded memory and processes, so a runaway test cannot
            // take the build host down.
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                memory: Some(SMOKE_TEST_MEMORY),
                pids_limit: Some(SMOKE_TEST_PIDS),
                device_requests,
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(CreateContainerOptionsBuilder::new().build()), body)
            .await
            .map_err(api(format!("create a smoke-test container from {image}")))?;
        let id = created.id;
        tracing::debug!(image, container = %id, "smoke test");
        let result = self.run_container(image, &id, timeout).await;
        let removed = self
            .docker
            .remove_container(
                &id,
                Some(
                    RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            )
            .await;
        match (result, removed) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) if !is_status(&e, 404) => Err(EngineError::Api {
                what: format!("remove smoke-test container {id} of {image}"),
                source: e,
            }),
            (Ok(run), _) => Ok(run),
        }
    }

    async fn run_container(
        &self,
        image: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<TestRun, EngineError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(api(format!("start smoke-test container {id} of {image}")))?;
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let mut wait = self.docker.wait_container(id, Some(options));
        let waited = tokio::time::timeout(timeout, wait.next()).await;
        drop(wait);
        let (exit_code, timed_out) = match waited {
            Ok(Some(Ok(r))) => (Some(r.status_code), false),
            // bollard reports a non-zero exit as an error carrying the code.
            Ok(Some(Err(BollardError::DockerContainerWaitError { code, .. }))) => {
                (Some(code), false)
            }
            Ok(Some(Err(e))) => {
                return Err(EngineError::Api {
                    what: format!("wait for smoke-test container {id} of {image}"),
                    source: e,
                });
            }
            Ok(None) => (self.exit_code(id).await?, false),
            Err(_) => {
                let kill = self
                    .docker
                    .kill_container(id, Some(KillContainerOptionsBuilder::new().build()))
                    .await;
                match kill {
                    // 409: it stopped on its own meanwhile.
                    Err(e) if !is_status(&e, 409) && !is_status(&e, 404) => {
                        return Err(EngineError::Api {
                            what: format!("kill timed-out smoke-test container {id} of {image}"),
                            source: e,
                        });
                    }
                    _ => (None, true),
                }
            }
        };
        let output = self.logs(id).await?;
        Ok(TestRun {
            exit_code,
            timed_out,
            output,
        })
    }

    async fn exit_code(&self, id: &str) -> Result<Option<i64>, EngineError> {
        let c = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(api(format!("inspect container {id}")))?;
        Ok(c.state.and_then(|s| s.exit_code))
    }

    async fn logs(&self, id: &str) -> Result<String, EngineError> {
        // The last lines are what a report needs; a test that prints without
        // end must not fill the host's memory.
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(SMOKE_TEST_LOG_LINES)
            .build();
        let mut logs = self.docker.logs(id, Some(options));
        let mut bytes = Vec::new();
        while let Some(item) = logs.next().await {
            match item.map_err(api(format!("read the logs of container {id}")))? {
                LogOutput::StdOut { message }
                | LogOutput::StdErr { message }
                | LogOutput::Console { message } => bytes.extend_from_slice(&message),
                LogOutput::StdIn { .. } => {}
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Ids of smoke-test containers still present (running or not), all or
    /// those of one image reference. `run_test` leaves none unless cancelled.
    pub async fn smoke_test_containers(
        &self,
        image: Option<&str>,
    ) -> Result<Vec<String>, EngineError> {
        let filter = match image {
            Some(i) => format!("{SMOKE_TEST_LABEL}={i}"),
            None => SMOKE_TEST_LABEL.to_string(),
        };
        let filters = HashMap::from([("label", vec![filter])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(api("list smoke-test containers"))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }
}

/// Build output cut into lines, handed on as they complete and kept.
struct Output<'f> {
    on_line: &'f mut (dyn FnMut(&str) + Send),
    partial: String,
    log: Vec<String>,
    /// The last `Step N/M : …` line.
    last_step: Option<String>,
}

impl<'f> Output<'f> {
    fn new(on_line: &'f mut (dyn FnMut(&str) + Send)) -> Self {
        Output {
            on_line,
            partial: String::new(),
            log: Vec::new(),
            last_step: None,
        }
    }

    /// A piece of `stream` text: may hold several lines or part of one.
    fn text(&mut self, text: &str) {
        self.partial.push_str(text);
        while let Some(pos) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=pos).collect();
            self.line(line.trim_end_matches(['\n', '\r']));
        }
    }

    fn flush(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(line.trim_end_matches('\r'));
        }
    }

    fn line(&mut self, line: &str) {
        if line.starts_with("Step ") && line.contains(" : ") {
            self.last_step = Some(line.to_string());
        }
        (self.on_line)(line);
        self.log.push(line.to_string());
    }
}

/// Check a context path: relative, `/`-separated, no empty, `.` or `..` parts.
fn check_path(path: &str) -> Result<(), EngineError> {
    let bad = |message: &str| EngineError::Context {
        path: path.to_string(),
        message: message.to_string(),
    };
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    if path.starts_with('/') {
        return Err(bad("absolute path; context paths are relative"));
    }
    if path.contains('\0') {
        return Err(bad("NUL byte in the path"));
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad("empty, `.` or `..` path component"));
    }
    Ok(())
}

/// The deterministic tar of `Dockerfile` plus the context: paths sorted,
/// mtime 0, uid/gid 0, no user or group names, mode 0644 (0755 for files whose
/// bytes start with `#!`). Directories are derived from the paths (one 0755
/// entry for each, before its contents); callers never list them. Pure.
pub fn context_tar(
    dockerfile: &str,
    context: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<u8>, EngineError> {
    // Path -> contents; None is a directory.
    let mut entries: BTreeMap<&str, Option<&[u8]>> = BTreeMap::new();
    entries.insert(DOCKERFILE, Some(dockerfile.as_bytes()));
    for (path, bytes) in context {
        check_path(path)?;
        if path == DOCKERFILE {
            return Err(EngineError::Context {
                path: path.clone(),
                message: "the Dockerfile is passed on its own, not as a context file".into(),
            });
        }
        for (i, _) in path.match_indices('/') {
            let dir = &path[..i];
            if let Some(Some(_)) = entries.insert(dir, None) {
                return Err(EngineError::Context {
                    path: path.clone(),
                    message: format!("{dir} is a file and would also have to be a directory"),
                });
            }
        }
        if let Some(None) = entries.insert(path, Some(bytes)) {
            return Err(EngineError::Context {
                path: path.clone(),
                message: "also a directory of other context files".into(),
            });
        }
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let result = match contents {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, path, std::io::empty())
            }
            Some(bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if bytes.starts_with(b"#!") {
                    0o755
                } else {
                    0o644
                });
                header.set_size(bytes.len() as u64);
                builder.append_data(&mut header, path, bytes)
            }
        };
        result.map_err(|e| EngineError::Context {
            path: path.to_string(),
            message: e.to_string(),
        })?;
    }
    builder.into_inner().map_err(|e| EngineError::Context {
        path: String::new(),
        message: format!("finishing the tar: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(files: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        files
            .iter()
            .map(|(p, b)| (p.to_string(), b.to_vec()))
            .collect()
    }

    /// One tar entry as read back.
    #[derive(Debug)]
    struct Entry {
        path: String,
        dir: bool,
        mode: u32,
        owner: (u64, u64, u64), // mtime, uid, gid
        data: Vec<u8>,
    }

    fn entries(tar_bytes: &[u8]) -> Vec<Entry> {
        let mut archive = tar::Archive::new(tar_bytes);
        let mut out = Vec::new();
        for entry in archive.entries().expect("a tar") {
            let mut entry = entry.expect("an entry");
            let h = entry.header().clone();
            let path = entry.path().expect("a path").to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).expect("entry data");
            out.push(Entry {
                path: path.trim_end_matches('/').to_string(),
                dir: h.entry_type().is_dir(),
                mode: h.mode().expect("mode"),
                owner: (
                    h.mtime().expect("mtime"),
                    h.uid().expect("uid"),
                    h.gid().expect("gid"),
                ),
                data,
            });
        }
        out
    }

    #[test]
    fn tar_is_sorted_deterministic_and_keeps_scripts_executable() {
        let context = ctx(&[
            ("requirements.txt", b"numpy\n"),
            ("files/vscode/settings.json", b"{}"),
            ("files/start.sh", b"#!/bin/sh\necho hi\n"),
            ("apt-packages.txt", b"git\n"),
        ]);
        let a = context_tar("FROM scratch\n", &context).expect("tar");
        let b = context_tar("FROM scratch\n", &context).expect("tar");
        assert_eq!(a, b);
        let got = entries(&a);
        let summary: Vec<(&str, char, u32)> = got
            .iter()
            .map(|e| (e.path.as_str(), if e.dir { 'd' } else { 'f' }, e.mode))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("Dockerfile", 'f', 0o644),
                ("apt-packages.txt", 'f', 0o644),
                ("files", 'd', 0o755),
                ("files/start.sh", 'f', 0o755),
                ("files/vscode", 'd', 0o755),
                ("files/vscode/settings.json", 'f', 0o644),
                ("requirements.txt", 'f', 0o644),
            ]
        );
        for e in &got {
            assert_eq!(e.owner, (0, 0, 0), "{}", e.path);
        }
        assert_eq!(got[0].data, b"FROM scratch\n");
        assert_eq!(got[3].data, b"#!/bin/sh\necho hi\n");
    }

    #[test]
    fn tar_handles_long_paths() {
        let long = format!("files/{}/x.txt", "d".repeat(150));
        let context = ctx(&[(long.as_str(), b"x")]);
        let got = entries(&context_tar("FROM scratch\n", &context).expect("tar"));
        assert!(got.iter().any(|e| e.path == long), "{got:?}");
    }

    #[test]
    fn tar_rejects_bad_paths() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "./a",
            "a//b",
            "a/",
            "Dockerfile",
        ] {
            let context = ctx(&[(bad, b"x")]);
            assert!(
                matches!(
                    context_tar("FROM scratch\n", &context),
                    Err(EngineError::Context { .. })
                ),
                "{bad:?} was accepted"
            );
        }
        let clash = ctx(&[("a", b"x"), ("a/b", b"y")]);
        assert!(matches!(
            context_tar("FROM scratch\n", &clash),
            Err(EngineError::Context { .. })
        ));
        let clash = ctx(&[("Dockerfile/x", b"y")]);
        assert!(matches!(
            context_tar("FROM scratch\n", &clash),
            Err(EngineError::Context { .. })
        ));
    }

    #[test]
    fn output_splits_lines_and_remembers_the_step() {
        let mut seen = Vec::new();
        let mut on_line = |l: &str| seen.push(l.to_string());
        let mut out = Output::new(&mut on_line);
        out.text("Step 1/2 : FROM x\n ---> ab");
        out.text("c\nStep 2/2 : RUN exit 3\n");
        out.text(" ---> Running in 123\r\npartial");
        out.flush();
        let Output { log, last_step, .. } = out;
        assert_eq!(
            log,
            vec![
                "Step 1/2 : FROM x",
                " ---> abc",
                "Step 2/2 : RUN exit 3",
                " ---> Running in 123",
                "partial"
            ]
        );
        assert_eq!(last_step.as_deref(), Some("Step 2/2 : RUN exit 3"));
        assert_eq!(seen, log);
    }
}
