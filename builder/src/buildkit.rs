//! Builds with BuildKit through the Docker Engine API, for engines that offer
//! it; [`crate::engine`] keeps the classic builder for the others.
//!
//! What it does: [`available`] tells whether the engine can build with
//! BuildKit; [`build`] sends the same deterministic context tar
//! ([`crate::engine::context_tar`]), build arguments, labels and tag as
//! [`Engine::build`] to `POST /build?version=2&session=…`. bollard (feature
//! `buildkit_providerless`) opens the BuildKit session on the engine itself
//! (`POST /session`, upgraded to HTTP/2 gRPC: the Moby driver), and the
//! engine answers with JSON lines whose `aux` is either a BuildKit
//! `StatusResponse` (`moby.buildkit.trace`: vertexes, statuses, logs,
//! warnings) or the image id (`moby.image.id`). The trace is turned into the
//! lines `docker build --progress=plain` prints:
//!
//! ```text
//! #5 [2/3] RUN echo hi
//! #5 hi
//! #5 DONE 0.3s
//! ```
//!
//! and a failure into [`EngineError::BuildFailed`] whose `instruction` is the
//! failing vertex (`[3/3] RUN exit 3`).
//!
//! How [`available`] decides: the `/_ping` answer's `Builder-Version` header
//! only says which builder the engine uses *by default* (`2` from Docker 23 on
//! Linux; absent on 20.10 unless `features.buildkit` is set in daemon.json, as
//! on the engine of the tests), bollard's `ping` does not expose headers, and
//! every Linux engine since 18.09 (API 1.39) builds with BuildKit when a
//! request asks for `version=2`, whatever its default. So the check is
//! `GET /version`: the engine runs on Linux, speaks API ≥ 1.39, and is
//! Docker's engine, not Podman's Docker-compatible API (which builds with
//! Buildah and serves no BuildKit session).
//!
//! `FROM` under BuildKit (measured on Docker 20.10, tests/buildkit.rs): a
//! tag or digest reference the engine's store has is used from the store,
//! also with its registry down, as is `name:tag@digest`; any other reference
//! is fetched by the engine from its registry (plain HTTP only for the
//! engine's insecure registries, 127.0.0.0/8 by default), so labforge's
//! pinned `registry/repo[:tag]@sha256:…` parents work. An image ID
//! (`sha256:…`), which the classic builder accepts, does not: BuildKit reads
//! it as a tag of `docker.io/library/sha256`
//! (<https://github.com/moby/buildkit/issues/2204>,
//! <https://github.com/moby/moby/issues/39769>).
//!
//! What it must not touch: it decides nothing about what to build, never
//! pushes, and never pulls on its own (BuildKit inside the engine fetches a
//! `FROM` that is not in the store), removes nothing and does not read the
//! disk. It leaves entries in the engine's BuildKit cache, as any build does.
//!
//! Upstream limitations, and what this module does about them:
//! - bollard 0.21.1 serves the session with a gRPC server it `tokio::spawn`s
//!   on the current runtime and keeps no handle to (`grpc_handle` in its
//!   `src/grpc/driver/moby.rs`); the engine never closes the upgraded
//!   `/session` connection, so each build would leave one socket here and
//!   one session in the engine until the process ends. [`build`] therefore
//!   runs the request on a runtime of its own, in a thread of its own, with
//!   a connection of its own (about 20 ms), and drops that runtime when the
//!   stream ends, which closes the session. bollard also starts the session
//!   concurrently with `/build`; sessions racing the build are the subject of
//!   <https://github.com/fussybeaver/bollard/issues/280>.
//! - With BuildKit the engine ignores the `X-Registry-Config` credentials of
//!   `/build` and asks the session for them instead
//!   (<https://github.com/moby/moby/issues/48112>); bollard's session serves
//!   the credentials passed to `build_image`, which this module passes none
//!   of, so a base in a registry that needs a login must be in the engine's
//!   store (pulled by [`Engine::pull`]) before the build.
//! - bollard's `buildkit_providerless` feature needs its `chrono` (or `time`)
//!   feature as well (a `compile_error!` in bollard's `grpc` module), which
//!   makes bollard's timestamps typed instead of strings, and turns
//!   `BuildInfo::aux` into the enum `BuildInfoAux` for every caller.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use bollard::errors::Error as BollardError;
use bollard::moby::buildkit::v1::StatusResponse;
use bollard::models::{BuildInfo, BuildInfoAux};
use bollard::query_parameters::{BuildImageOptions, BuildImageOptionsBuilder, BuilderVersion};
use futures::StreamExt;

use crate::engine::{BuildRequest, Built, Engine, EngineError, TAIL_LINES, context_tar};

/// The name of the Dockerfile inside the context tar (as in `engine`).
const DOCKERFILE: &str = "Dockerfile";

/// The first API version with BuildKit (Docker 18.09).
const MIN_API: (u32, u32) = (1, 39);

/// Can this engine build with BuildKit (see the module docs for why this
/// asks `/version` rather than reading the ping's `Builder-Version`)? An
/// engine that does not answer is taken as one without BuildKit.
pub async fn available(engine: &Engine) -> bool {
    match engine.docker().version().await {
        Ok(v) => offers_buildkit(&v),
        Err(e) => {
            tracing::debug!(error = %e, "no version answer: no BuildKit");
            false
        }
    }
}

/// The decision of [`available`], on the engine's `/version` answer. Pure.
fn offers_buildkit(v: &bollard::models::SystemVersion) -> bool {
    let components = v.components.as_deref().unwrap_or_default();
    let podman = components
        .iter()
        .any(|c| c.name.to_ascii_lowercase().contains("podman"));
    let engine_details = components
        .iter()
        .find(|c| c.name == "Engine")
        .and_then(|c| c.details.as_ref());
    let os =
        v.os.clone()
            .or_else(|| engine_details.and_then(|d| d.get("Os").cloned()))
            .unwrap_or_default();
    let api = v
        .api_version
        .as_deref()
        .or_else(|| {
            engine_details
                .and_then(|d| d.get("ApiVersion"))
                .map(String::as_str)
        })
        .and_then(parse_api);
    !podman && os == "linux" && api.is_some_and(|a| a >= MIN_API)
}

/// `1.41` → `(1, 41)`.
fn parse_api(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// A session id no other build of this process or of another uses at the
/// same time (the engine keys sessions by it).
fn session_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "labforge-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Build `req` with BuildKit: the contract of [`Engine::build`]. Every
/// output line goes to `on_line` as it completes; the whole stream is read.
/// A failure becomes `BuildFailed` with the failing vertex (e.g.
/// `[2/2] RUN exit 3`), the engine's message and the last lines.
pub async fn build(
    engine: &Engine,
    req: &BuildRequest<'_>,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<Built, EngineError> {
    let tar = context_tar(req.dockerfile, req.context)?;
    let (build_args, labels) = req.option_maps();
    let session = session_id();
    let options = BuildImageOptionsBuilder::new()
        .dockerfile(DOCKERFILE)
        .t(req.tag)
        .version(BuilderVersion::BuilderBuildKit)
        .session(&session)
        .buildargs(&build_args)
        .labels(&labels)
        .build();
    tracing::debug!(
        image = req.image,
        tag = req.tag,
        session,
        context_bytes = tar.len(),
        "build with BuildKit"
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    spawn_build(engine.host().to_string(), options, tar, tx)?;

    let mut progress = Progress::new(on_line);
    let mut image_id = None;
    let mut failure: Option<String> = None;
    while let Some(event) = rx.recv().await {
        let item = match event {
            Event::Item(item) => item,
            Event::Failed(e) => return Err(e),
        };
        match item {
            Ok(info) => {
                match info.aux {
                    Some(BuildInfoAux::BuildKit(status)) => progress.status(&status),
                    Some(BuildInfoAux::Default(aux)) => {
                        if let Some(id) = aux.id {
                            image_id = Some(id);
                        }
                    }
                    None => {}
                }
                if let Some(text) = &info.stream {
                    progress.text(text);
                }
            }
            // The build's error, sent at the end of the stream.
            Err(BollardError::DockerStreamError { error }) => {
                progress.finish();
                progress.line(&format!("ERROR: {error}"));
                failure.get_or_insert(error);
            }
            // Refused before it started (a bad option, a Dockerfile the
            // engine cannot parse): a build failure too.
            Err(BollardError::DockerResponseServerError {
                status_code,
                message,
            }) if (400..=500).contains(&status_code) => {
                progress.finish();
                progress.line(&format!("ERROR: {message}"));
                failure.get_or_insert(message);
            }
            Err(e) => {
                return Err(EngineError::Api {
                    what: format!("{}: build {} with BuildKit", req.image, req.tag),
                    source: e,
                });
            }
        }
    }
    progress.finish();
    let Progress {
        log, vertex_error, ..
    } = progress;
    // A vertex error without an error at the end of the stream should not
    // happen; when no image came out either, it is the failure.
    let failure = match (failure, &image_id) {
        (Some(message), _) => Some(message),
        (None, None) => vertex_error.as_ref().map(|(_, error)| error.clone()),
        (None, Some(_)) => None,
    };
    if let Some(message) = failure {
        let tail = log[log.len().saturating_sub(TAIL_LINES)..].to_vec();
        return Err(EngineError::BuildFailed {
            image: req.image.to_string(),
            instruction: vertex_error.map(|(name, _)| name),
            message,
            tail,
        });
    }
    let image_id = match image_id {
        Some(id) => id,
        None => engine
            .image_id(req.tag)
            .await?
            .ok_or_else(|| EngineError::NoImage {
                image: req.image.to_string(),
                tag: req.tag.to_string(),
            })?,
    };
    Ok(Built { image_id, log })
}

/// What the build's own thread hands over.
enum Event {
    /// One answer of the `/build` stream.
    Item(Result<BuildInfo, BollardError>),
    /// The thread could not connect or start.
    Failed(EngineError),
}

/// Run the `/build` request and its BuildKit session on a runtime of their
/// own, in a thread of their own, handing every answer to `tx`. bollard
/// spawns the session's gRPC server on the current runtime and keeps no
/// handle to it, so it would serve the upgraded `/session` connection (one
/// socket here, one session in the engine) until the process ends: dropping
/// this runtime at the end of the build is what closes it. The thread stops
/// early, cancelling the build, when the receiver is gone.
fn spawn_build(
    host: String,
    options: BuildImageOptions,
    tar: Vec<u8>,
    tx: tokio::sync::mpsc::UnboundedSender<Event>,
) -> Result<(), EngineError> {
    let failed = |host: &str, what: &str, e: std::io::Error| EngineError::Connect {
        host: host.to_string(),
        message: format!("cannot start the BuildKit build's {what}: {e}"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(&host, "runtime", e))?;
    let thread_host = host.clone();
    std::thread::Builder::new()
        .name("labforge-buildkit".into())
        .spawn(move || {
            runtime.block_on(async move {
                let engine = match Engine::connect_to(&thread_host).await {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = tx.send(Event::Failed(e));
                        return;
                    }
                };
                let mut stream = engine.docker().build_image(
                    options,
                    None,
                    Some(bollard::body_full(tar.into())),
                );
                while let Some(item) = stream.next().await {
                    if tx.send(Event::Item(item)).is_err() {
                        break;
                    }
                }
            });
            // The runtime, and with it the session's server and its
            // connection, ends here.
            drop(runtime);
        })
        .map_err(|e| failed(&host, "thread", e))?;
    Ok(())
}

/// What is known of one vertex (one step of the build graph).
#[derive(Default)]
struct Vertex {
    /// `#N`, in the order vertexes first appear.
    number: usize,
    name: String,
    /// Its name line was printed.
    announced: bool,
    cached: bool,
    done: bool,
    errored: bool,
    /// Log bytes after the last newline.
    partial: Vec<u8>,
}

/// The BuildKit trace turned into plain-progress lines, handed on as they
/// complete and kept.
struct Progress<'f> {
    on_line: &'f mut (dyn FnMut(&str) + Send),
    log: Vec<String>,
    vertexes: HashMap<String, Vertex>,
    /// Vertex digests in the order they appeared (for `finish`).
    order: Vec<String>,
    /// Statuses (vertex, id) already reported done.
    statuses_done: HashSet<(String, String)>,
    /// Text of `stream` messages after the last newline.
    partial: String,
    /// The first failing vertex: its name and error. A vertex cancelled
    /// because another failed only counts when no other did.
    vertex_error: Option<(String, String)>,
    vertex_error_is_cancel: bool,
}

/// Is this vertex error only the echo of another vertex's failure?
fn is_cancel(error: &str) -> bool {
    error.contains("context canceled")
}

impl<'f> Progress<'f> {
    fn new(on_line: &'f mut (dyn FnMut(&str) + Send)) -> Self {
        Progress {
            on_line,
            log: Vec::new(),
            vertexes: HashMap::new(),
            order: Vec::new(),
            statuses_done: HashSet::new(),
            partial: String::new(),
            vertex_error: None,
            vertex_error_is_cancel: false,
        }
    }

    fn line(&mut self, line: &str) {
        (self.on_line)(line);
        self.log.push(line.to_string());
    }

    /// The vertex with this digest, numbered on first sight.
    fn vertex(&mut self, digest: &str) -> &mut Vertex {
        if !self.vertexes.contains_key(digest) {
            self.order.push(digest.to_string());
            let number = self.order.len();
            self.vertexes.insert(
                digest.to_string(),
                Vertex {
                    number,
                    ..Vertex::default()
                },
            );
        }
        self.vertexes.entry(digest.to_string()).or_default()
    }

    /// Print the vertex's name line once, before anything else of it.
    fn announce(&mut self, digest: &str) {
        let v = self.vertex(digest);
        // Nameless: announced once its name is known.
        if v.announced || v.name.is_empty() {
            return;
        }
        v.announced = true;
        let line = format!("#{} {}", v.number, v.name);
        self.line(line.trim_end());
    }

    /// Hand on the complete lines of a vertex's log (all of it when `all`).
    fn vertex_lines(&mut self, digest: &str, all: bool) {
        let v = self.vertex(digest);
        let number = v.number;
        let mut lines = Vec::new();
        while let Some(pos) = v.partial.iter().position(|&b| b == b'\n') {
            let chunk: Vec<u8> = v.partial.drain(..=pos).collect();
            lines.push(String::from_utf8_lossy(&chunk).into_owned());
        }
        if all && !v.partial.is_empty() {
            let chunk = std::mem::take(&mut v.partial);
            lines.push(String::from_utf8_lossy(&chunk).into_owned());
        }
        for l in lines {
            self.line(&format!("#{number} {}", l.trim_end_matches(['\n', '\r'])));
        }
    }

    /// One `moby.buildkit.trace` message.
    fn status(&mut self, status: &StatusResponse) {
        // Starts first, then the output and statuses, then what ended: one
        // message may carry a vertex's last log and its completion.
        for v in &status.vertexes {
            let known = self.vertex(&v.digest);
            if !v.name.is_empty() {
                known.name.clone_from(&v.name);
            }
            if v.started.is_some() || v.cached || v.completed.is_some() {
                self.announce(&v.digest);
            }
            let known = self.vertex(&v.digest);
            // A vertex reported done, then cached, was not run: say so
            // once, unless its DONE line is out already.
            if v.cached && !known.cached && !known.done {
                known.cached = true;
                let number = known.number;
                self.line(&format!("#{number} CACHED"));
            }
        }
        for s in &status.statuses {
            if s.completed.is_none() || s.id.is_empty() {
                continue;
            }
            if !self.statuses_done.insert((s.vertex.clone(), s.id.clone())) {
                continue;
            }
            self.announce(&s.vertex);
            let number = self.vertex(&s.vertex).number;
            self.line(&format!("#{number} {} done", s.id));
        }
        for l in &status.logs {
            self.announce(&l.vertex);
            self.vertex(&l.vertex).partial.extend_from_slice(&l.msg);
            self.vertex_lines(&l.vertex, false);
        }
        for w in &status.warnings {
            self.announce(&w.vertex);
            let number = self.vertex(&w.vertex).number;
            let short = String::from_utf8_lossy(&w.short).into_owned();
            self.line(&format!("#{number} WARNING: {}", short.trim_end()));
        }
        for v in &status.vertexes {
            let known = self.vertex(&v.digest);
            let number = known.number;
            if !v.error.is_empty() && !known.errored {
                known.errored = true;
                let name = known.name.clone();
                self.vertex_lines(&v.digest, true);
                self.line(&format!("#{number} ERROR: {}", v.error));
                let cancel = is_cancel(&v.error);
                if self.vertex_error.is_none() || (self.vertex_error_is_cancel && !cancel) {
                    self.vertex_error = Some((name, v.error.clone()));
                    self.vertex_error_is_cancel = cancel;
                }
            }
            let known = self.vertex(&v.digest);
            if let Some(completed) = &v.completed
                && !known.done
            {
                known.done = true;
                let quiet = known.cached || known.errored;
                self.vertex_lines(&v.digest, true);
                if !quiet {
                    let took = v.started.as_ref().map(|s| {
                        let secs = (completed.seconds - s.seconds) as f64
                            + f64::from(completed.nanos - s.nanos) / 1e9;
                        secs.max(0.0)
                    });
                    match took {
                        Some(secs) => self.line(&format!("#{number} DONE {secs:.1}s")),
                        None => self.line(&format!("#{number} DONE")),
                    }
                }
            }
        }
    }

    /// Plain `stream` text (BuildKit builds rarely send any).
    fn text(&mut self, text: &str) {
        self.partial.push_str(text);
        while let Some(pos) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=pos).collect();
            self.line(line.trim_end_matches(['\n', '\r']));
        }
    }

    /// Hand on every partial line left.
    fn finish(&mut self) {
        for digest in self.order.clone() {
            self.vertex_lines(&digest, true);
        }
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(line.trim_end_matches('\r'));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::moby::buildkit::v1::{Vertex as PbVertex, VertexLog};
    use bollard::models::{SystemVersion, SystemVersionComponents};

    fn version(os: &str, api: &str, component: &str) -> SystemVersion {
        SystemVersion {
            os: Some(os.into()),
            api_version: Some(api.into()),
            components: Some(vec![SystemVersionComponents {
                name: component.into(),
                version: "x".into(),
                details: None,
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn buildkit_needs_linux_api_1_39_and_docker() {
        assert!(offers_buildkit(&version("linux", "1.41", "Engine")));
        assert!(offers_buildkit(&version("linux", "1.39", "Engine")));
        assert!(!offers_buildkit(&version("linux", "1.38", "Engine")));
        assert!(!offers_buildkit(&version("windows", "1.41", "Engine")));
        assert!(!offers_buildkit(&version("linux", "1.41", "Podman Engine")));
        assert!(!offers_buildkit(&version("linux", "garbage", "Engine")));
        assert!(!offers_buildkit(&SystemVersion::default()));
        assert_eq!(parse_api("1.41"), Some((1, 41)));
        assert_eq!(parse_api("2"), None);
    }

    /// A vertex; `times` sets started/completed (seconds, nanos).
    fn vertex(
        digest: &str,
        name: &str,
        started: Option<(i64, i32)>,
        completed: Option<(i64, i32)>,
        error: &str,
    ) -> PbVertex {
        // The protobuf Timestamp is not re-exported by bollard; fill in
        // its default.
        let mut v = PbVertex {
            digest: digest.into(),
            name: name.into(),
            error: error.into(),
            ..Default::default()
        };
        if let Some((seconds, nanos)) = started {
            let t = v.started.get_or_insert_with(Default::default);
            t.seconds = seconds;
            t.nanos = nanos;
        }
        if let Some((seconds, nanos)) = completed {
            let t = v.completed.get_or_insert_with(Default::default);
            t.seconds = seconds;
            t.nanos = nanos;
        }
        v
    }

    fn log(digest: &str, msg: &str) -> VertexLog {
        VertexLog {
            vertex: digest.into(),
            msg: msg.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn trace_becomes_plain_lines_and_the_first_real_error_wins() {
        let mut seen = Vec::new();
        let mut on_line = |l: &str| seen.push(l.to_string());
        let mut p = Progress::new(&mut on_line);
        // Announced when it starts, not before.
        p.status(&StatusResponse {
            vertexes: vec![vertex("sha256:a", "[1/2] FROM x", None, None, "")],
            ..Default::default()
        });
        p.status(&StatusResponse {
            vertexes: vec![
                vertex("sha256:a", "[1/2] FROM x", Some((1, 0)), Some((1, 0)), ""),
                vertex(
                    "sha256:b",
                    "[2/2] RUN echo hi && exit 3",
                    Some((2, 0)),
                    None,
                    "",
                ),
            ],
            logs: vec![log("sha256:b", "hi\nhal")],
            ..Default::default()
        });
        p.status(&StatusResponse {
            logs: vec![log("sha256:b", "f line\r\n")],
            ..Default::default()
        });
        p.status(&StatusResponse {
            vertexes: vec![
                vertex(
                    "sha256:c",
                    "[other] RUN x",
                    Some((2, 0)),
                    Some((3, 0)),
                    "context canceled",
                ),
                vertex(
                    "sha256:b",
                    "[2/2] RUN echo hi && exit 3",
                    Some((2, 0)),
                    Some((2, 500_000_000)),
                    "exit code: 3",
                ),
            ],
            logs: vec![log("sha256:b", "no newline")],
            ..Default::default()
        });
        p.finish();
        let Progress {
            log, vertex_error, ..
        } = p;
        assert_eq!(
            log,
            vec![
                "#1 [1/2] FROM x",
                "#2 [2/2] RUN echo hi && exit 3",
                "#2 hi",
                "#1 DONE 0.0s",
                "#2 half line",
                "#3 [other] RUN x",
                "#3 ERROR: context canceled",
                "#2 no newline",
                "#2 ERROR: exit code: 3",
            ]
        );
        assert_eq!(
            vertex_error,
            Some(("[2/2] RUN echo hi && exit 3".into(), "exit code: 3".into()))
        );
        assert_eq!(seen, log);
    }

    #[test]
    fn cached_vertexes_say_so_and_statuses_print_once() {
        let mut on_line = |_: &str| {};
        let mut p = Progress::new(&mut on_line);
        let mut cached = vertex("sha256:a", "[2/2] RUN x", None, Some((5, 0)), "");
        cached.cached = true;
        let status = bollard::moby::buildkit::v1::VertexStatus {
            id: "transferring context:".into(),
            vertex: "sha256:ctx".into(),
            completed: cached.completed,
            ..Default::default()
        };
        let response = StatusResponse {
            vertexes: vec![cached],
            statuses: vec![status],
            ..Default::default()
        };
        p.status(&response);
        p.status(&response);
        p.finish();
        assert_eq!(
            p.log,
            vec![
                "#1 [2/2] RUN x",
                "#1 CACHED",
                "#2 transferring context: done",
            ]
        );
        assert_eq!(p.vertex_error, None);
    }
}
