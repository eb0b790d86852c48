//! The build pipeline as the bot runs it: `labforge build --json <images>`
//! in the work clone, as a child process.
//!
//! A child rather than a call into the builder library: it reads the same
//! `labforge.toml`, base map and credentials as a maintainer's `labforge
//! build` in that folder, records into the same state store, and a crash
//! or an out-of-memory kill of a build cannot take the hub (and its
//! webhook queue) down with it. Its progress goes to a log file beside the
//! state; its JSON summary comes back on stdout.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;

/// How to start the pipeline: the program (normally the running `labforge`
/// binary) and the global arguments that come before `build`.
#[derive(Debug, Clone)]
pub struct PipelineCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The state store the hub reads (`LABFORGE_STATE` of the child), so
    /// that what the pipeline records is what the hub serves.
    pub state: String,
    /// Where each run's log goes (`<dir>/bot-<unix ms>.log`).
    pub log_dir: PathBuf,
    /// A run that takes longer is killed (a hung build must not stop the
    /// builds lane for good).
    pub timeout: std::time::Duration,
}

/// What the child must not see: the bot's credentials.
const SECRET_VARIABLES: [&str; 7] = [
    "LABFORGE_GITHUB_TOKEN",
    "LABFORGE_GITHUB_WEBHOOK_SECRET",
    "LABFORGE_GITHUB_WEBHOOK_SECRET_PREVIOUS",
    "LABFORGE_GITHUB_APP_KEY_FILE",
    "LABFORGE_HUB_READ_TOKEN",
    "LABFORGE_HUB_ADMIN_TOKEN",
    "LABFORGE_REGISTRY_EVENTS_TOKEN",
];

/// One image of the summary (the fields the bot reports).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Built {
    pub image: String,
    pub result: String,
    pub digest: Option<String>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub scan: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct Summary {
    images: Vec<Built>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct PipelineRun {
    /// The exit status was success.
    pub ok: bool,
    pub images: Vec<Built>,
    pub log: PathBuf,
    /// The last lines of the log, for the answer on a failure.
    pub tail: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot start the build pipeline {program}: {error}")]
    Start {
        program: String,
        error: std::io::Error,
    },
    #[error("cannot write the build log {path}: {error}")]
    Log { path: String, error: std::io::Error },
    #[error("the build pipeline ended without a summary (exit {status}); its log is {log}: {tail}")]
    NoSummary {
        status: String,
        log: String,
        tail: String,
    },
    #[error(
        "the build pipeline ran longer than {minutes} minutes and was stopped; its log is {log}"
    )]
    Timeout { minutes: u64, log: String },
}

const TAIL_LINES: usize = 15;

/// Run `program args… build --json images…` in `dir`; an empty `images`
/// builds the whole catalog (only what changed is built: the plan skips
/// what the registry has).
pub async fn run(
    command: &PipelineCommand,
    dir: &Path,
    images: &[String],
) -> Result<PipelineRun, PipelineError> {
    let log_path = command.log_dir.join(format!(
        "bot-{}.log",
        labforge_builder::state::unix_ms_now()
    ));
    let log_err = |error| PipelineError::Log {
        path: log_path.display().to_string(),
        error,
    };
    tokio::fs::create_dir_all(&command.log_dir)
        .await
        .map_err(log_err)?;
    let header = format!(
        "$ {} {} build --json {}\n",
        command.program.display(),
        command
            .args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        images.join(" ")
    );
    let log = std::fs::File::create(&log_path).map_err(log_err)?;
    {
        use std::io::Write;
        (&log).write_all(header.as_bytes()).map_err(log_err)?;
    }
    tracing::info!(images = ?images, log = %log_path.display(), "build pipeline started");
    // Progress goes straight to the log file, so that it survives a crash
    // of the hub and costs no memory.
    let mut child = tokio::process::Command::new(&command.program);
    child
        .args(&command.args)
        .arg("build")
        .arg("--json")
        .args(images)
        .current_dir(dir)
        .env("LABFORGE_STATE", &command.state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    for name in SECRET_VARIABLES {
        child.env_remove(name);
    }
    let running = child.spawn().map_err(|error| PipelineError::Start {
        program: command.program.display().to_string(),
        error,
    })?;
    let output = match tokio::time::timeout(command.timeout, running.wait_with_output()).await {
        Ok(output) => output.map_err(log_err)?,
        // Dropping the future kills the child (kill_on_drop).
        Err(_) => {
            return Err(PipelineError::Timeout {
                minutes: command.timeout.as_secs() / 60,
                log: log_path.display().to_string(),
            });
        }
    };
    let logged = tokio::fs::read(&log_path).await.map_err(log_err)?;
    let logged = String::from_utf8_lossy(&logged);
    let lines: Vec<&str> = logged.lines().collect();
    let tail: Vec<String> = lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|l| (*l).to_string())
        .collect();
    let summary: Option<Summary> = serde_json::from_slice(&output.stdout).ok();
    let Some(summary) = summary else {
        return Err(PipelineError::NoSummary {
            status: output.status.to_string(),
            log: log_path.display().to_string(),
            tail: tail.join(" | "),
        });
    };
    tracing::info!(
        ok = output.status.success(),
        images = summary.images.len(),
        log = %log_path.display(),
        "build pipeline finished"
    );
    Ok(PipelineRun {
        ok: output.status.success(),
        images: summary.images,
        log: log_path,
        tail,
    })
}
