//! The image-request bot: the workers that run the jobs
//! [`crate::webhook`] queued.
//!
//! Two lanes, each one job at a time in queue order: `requests` (validate
//! a request and answer on the issue, maintainers' commands, the branch and
//! pull request of an approval) and `builds` (the pipeline after a merge or
//! a `/rebuild`), so that a student's answer never waits behind a
//! twenty-minute CUDA build.
//!
//! Every side effect is idempotent by a key, so a job that runs again (a
//! transient failure, or a restart while it ran) changes nothing twice:
//! one comment per issue and kind, edited in place (its hidden marker);
//! one branch `image-request/<issue>` whose commit is not repeated when the
//! file is already there; one pull request per branch; labels are sets;
//! closing a closed issue is a no-op.
//!
//! The hub's project folder is the work clone of the catalog repository:
//! the bot checks the merged commit out there, so the hub serves (and the
//! pipeline builds) exactly what was merged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use labforge_builder::Layout;
use labforge_builder::state::{BotRequest, Job, JobEnd, NewJob, StateError, unix_ms_now};
use labforge_core::catalog::Catalog;
use labforge_core::render::BuildEnv;
use labforge_core::request::comment::code;
use labforge_core::request::{self, Limits, Problem, Request, Validated, command::Command};
use serde::{Deserialize, Serialize};

use crate::Hub;
use crate::git::{Author, GitError, WorkClone};
use crate::github::ExposeSecret;
use crate::github::{Github, GithubError, Permission};
use crate::pipeline::{PipelineCommand, PipelineError, PipelineRun};
use crate::webhook::{Filter, REQUEST_LABEL, Secrets};

pub const LANE_REQUESTS: &str = "requests";
pub const LANE_BUILDS: &str = "builds";

/// Labels the bot sets (besides [`REQUEST_LABEL`]).
pub const LABEL_REVIEW: &str = "needs-review";
pub const LABEL_INVALID: &str = "invalid";
pub const LABEL_APPROVED: &str = "approved";
pub const LABEL_PUBLISHED: &str = "published";
pub const LABEL_FAILED: &str = "build-failed";

/// Comment kinds (one comment per issue and kind, edited in place).
const KIND_REQUEST: &str = "request";
const KIND_STATUS: &str = "status";
const KIND_RESULT: &str = "result";
const KIND_COMMAND: &str = "command";

/// A queued job's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// An issue opened, edited or reopened: validate and answer.
    Request {
        issue: u64,
        author: String,
        title: String,
        body: String,
        /// GitHub's `updated_at` of the issue with this body.
        #[serde(default)]
        updated_at: String,
    },
    /// A comment with commands.
    Command {
        issue: u64,
        comment: u64,
        author: String,
        body: String,
        /// When the comment was written (GitHub's `created_at`).
        #[serde(default)]
        created_at: String,
    },
    /// A push to the default branch.
    Merge { before: String, after: String },
    /// `/rebuild`: the pipeline for the images of one request.
    Build { issue: u64, by: String },
}

impl Task {
    pub fn kind(&self) -> &'static str {
        match self {
            Task::Request { .. } => "request",
            Task::Command { .. } => "command",
            Task::Merge { .. } => "merge",
            Task::Build { .. } => "build",
        }
    }
}

/// Where the bot checks that requested packages exist.
#[derive(Debug, Clone)]
pub struct PackageIndexes {
    /// `https://pypi.org`: `GET <pypi>/pypi/<name>/json`.
    pub pypi: String,
    /// `https://open-vsx.org`: `GET <openvsx>/api/<publisher>/<name>`.
    pub openvsx: String,
}

/// How the bot behaves.
#[derive(Debug, Clone)]
pub struct BotSettings {
    pub secrets: Secrets,
    /// `owner/repo` of the catalog repository.
    pub repository: String,
    /// The bot's login (its own comments are never commands).
    pub bot_login: String,
    /// Logins whose commands count even without write permission.
    pub maintainers: Vec<String>,
    /// The Dockerfile template of requested images.
    pub request_template: String,
    pub limits: Limits,
    /// `None`: no existence checks (no network to the indexes).
    pub indexes: Option<PackageIndexes>,
    pub author: Author,
    /// The jupyterhub URL for launch links comes from the hub's snapshot.
    pub pipeline: PipelineCommand,
    /// Attempts of a job before it fails for good (then `/retry`).
    pub max_attempts: i64,
}

/// Everything that can go wrong in a job.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error(transparent)]
    Github(#[from] GithubError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("the catalog in the work clone cannot be read: {0}")]
    Catalog(String),
    #[error("a queued job cannot be read ({0}); a labforge bug, please report it")]
    Payload(String),
    #[error("the git work clone is busy or broken: {0}")]
    Worker(String),
}

impl BotError {
    /// Worth trying again later (the network, GitHub's rate limits and
    /// 5xx, the state store, a push race), rather than failing the job at
    /// once. A catalog that does not load, or GitHub refusing a request
    /// (4xx), will not get better by waiting.
    fn transient(&self) -> bool {
        match self {
            BotError::Payload(_) | BotError::Pipeline(PipelineError::Timeout { .. }) => false,
            // 401/403: a token expired or was rotated; the rest of 4xx is
            // GitHub refusing the request as asked.
            BotError::Github(GithubError::Status { status, .. }) => {
                *status >= 500 || matches!(*status, 401 | 403 | 429)
            }
            BotError::Github(GithubError::Marker { .. } | GithubError::CloseReason(_)) => false,
            _ => true,
        }
    }
}

pub struct Bot {
    pub settings: BotSettings,
    github: Github,
    work: Arc<std::sync::Mutex<WorkClone>>,
    work_dir: PathBuf,
    /// The catalog folder relative to the work clone (`catalog`).
    catalog_rel: String,
    wake_requests: tokio::sync::Notify,
    wake_builds: tokio::sync::Notify,
    http: reqwest::Client,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot")
            .field("repository", &self.settings.repository)
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

impl Bot {
    /// `work` is the clone the hub serves from; `layout.catalog` must be
    /// inside it.
    pub fn new(
        settings: BotSettings,
        github: Github,
        work: WorkClone,
        layout: &Layout,
    ) -> Result<Bot, String> {
        let work_dir = work.path().to_path_buf();
        let root = work_dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", work_dir.display()))?;
        let catalog = layout
            .catalog
            .canonicalize()
            .map_err(|e| format!("{}: {e}", layout.catalog.display()))?;
        let catalog_rel = catalog
            .strip_prefix(&root)
            .map_err(|_| {
                format!(
                    "the catalog folder {} is not inside the work clone {} of the catalog repository: run the hub in the clone",
                    catalog.display(),
                    root.display()
                )
            })?
            .to_string_lossy()
            .into_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent("labforge-bot")
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Bot {
            settings,
            github,
            work: Arc::new(std::sync::Mutex::new(work)),
            work_dir,
            catalog_rel,
            wake_requests: tokio::sync::Notify::new(),
            wake_builds: tokio::sync::Notify::new(),
            http,
        })
    }

    pub fn filter(&self) -> Filter {
        Filter {
            repository: self.settings.repository.clone(),
            bot_login: self.settings.bot_login.clone(),
        }
    }

    /// New jobs are queued: look now rather than at the next poll.
    pub fn wake(&self) {
        self.wake_requests.notify_one();
        self.wake_builds.notify_one();
    }

    /// `catalog/images/<slug>.yaml` in the catalog repository.
    fn request_path(&self, slug: &str) -> String {
        if self.catalog_rel.is_empty() {
            format!("images/{slug}.yaml")
        } else {
            format!("{}/images/{slug}.yaml", self.catalog_rel)
        }
    }

    /// Run `f` on the work clone on a blocking thread (git2 is blocking,
    /// and one git operation runs at a time).
    async fn git<T, F>(&self, f: F) -> Result<T, BotError>
    where
        T: Send + 'static,
        F: FnOnce(&WorkClone) -> Result<T, GitError> + Send + 'static,
    {
        // A current token for this operation (a GitHub App's expire).
        let token = self.github.git_token().await?;
        let work = Arc::clone(&self.work);
        tokio::task::spawn_blocking(move || {
            let mut clone = work
                .lock()
                .map_err(|_| BotError::Worker("a git operation panicked earlier".into()))?;
            clone.set_token(Some(token.expose_secret()));
            f(&clone).map_err(BotError::from)
        })
        .await
        .map_err(|e| BotError::Worker(e.to_string()))?
    }
}

/// Queue again what a stopped hub left running, then start the two lanes.
/// (One hub per state store runs the bot: a second one would queue the
/// first one's running jobs again.)
pub async fn start(hub: &Arc<Hub>) -> Vec<tokio::task::JoinHandle<()>> {
    if hub.bot().is_none() {
        return Vec::new();
    }
    match hub.store().requeue_running(unix_ms_now()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            jobs = n,
            "bot jobs interrupted by the last stop are queued again"
        ),
        Err(e) => tracing::error!(error = %e, "cannot queue interrupted bot jobs again"),
    }
    [LANE_REQUESTS, LANE_BUILDS]
        .into_iter()
        .map(|lane| tokio::spawn(run_lane(Arc::clone(hub), lane)))
        .collect()
}

async fn run_lane(hub: Arc<Hub>, lane: &'static str) {
    let Some(bot) = hub.bot().cloned() else {
        return;
    };
    let wake = if lane == LANE_REQUESTS {
        &bot.wake_requests
    } else {
        &bot.wake_builds
    };
    loop {
        let claimed = hub.store().claim_job(lane, unix_ms_now()).await;
        match claimed {
            Ok(Some(job)) => {
                let end = run_job(&hub, &bot, &job).await;
                if let Err(e) = hub.store().finish_job(job.id, &end, unix_ms_now()).await {
                    tracing::error!(job = job.id, error = %e, "cannot record the end of a bot job");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
            Ok(None) => {
                // Woken by a delivery, else poll (retries that wait).
                let _ = tokio::time::timeout(Duration::from_secs(2), wake.notified()).await;
            }
            Err(e) => {
                tracing::error!(lane, error = %e, "cannot read the bot queue");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// Run one job and decide how it ends.
async fn run_job(hub: &Hub, bot: &Bot, job: &Job) -> JobEnd {
    let task: Task = match serde_json::from_str(&job.payload) {
        Ok(t) => t,
        Err(e) => {
            let error = BotError::Payload(e.to_string());
            tracing::error!(job = job.id, error = %error, "bot job failed");
            return JobEnd::Failed {
                error: error.to_string(),
            };
        }
    };
    tracing::info!(job = job.id, kind = task.kind(), key = %job.key, attempt = job.attempts, "bot job started");
    let result = match &task {
        Task::Request {
            issue,
            author,
            body,
            updated_at,
            ..
        } => handle_request(hub, bot, *issue, author, body, updated_at).await,
        Task::Command {
            issue,
            comment,
            author,
            body,
            created_at,
        } => handle_command(hub, bot, *issue, *comment, author, body, created_at).await,
        Task::Merge { before, after } => handle_merge(hub, bot, before, after).await,
        Task::Build { issue, by } => handle_rebuild(hub, bot, *issue, by).await,
    };
    match result {
        Ok(()) => {
            tracing::info!(job = job.id, kind = task.kind(), "bot job done");
            JobEnd::Done
        }
        Err(e) if e.transient() && job.attempts < bot.settings.max_attempts => {
            // 10 s, 20 s, 40 s, … at most 10 minutes.
            let shift = u32::try_from(job.attempts.clamp(1, 7) - 1).unwrap_or(0);
            let wait = (10_000_i64 << shift).min(600_000);
            tracing::warn!(job = job.id, error = %e, retry_in_ms = wait, "bot job failed; it runs again");
            JobEnd::Retry {
                not_before: unix_ms_now() + wait,
                error: e.to_string(),
            }
        }
        Err(e) => {
            tracing::error!(job = job.id, error = %e, "bot job failed for good");
            if let Some(issue) = job.issue.and_then(|i| u64::try_from(i).ok()) {
                // The details (paths, addresses) stay in the hub's log.
                let text = format!(
                    "I could not finish this step (job {}, {}); the hub's log has the details. A maintainer can comment `/retry` once the cause is fixed.",
                    job.id,
                    task.kind()
                );
                if let Err(e2) = bot
                    .github
                    .upsert_comment(
                        issue,
                        KIND_STATUS,
                        &request::comment::note(KIND_STATUS, &text),
                        None,
                    )
                    .await
                {
                    tracing::error!(issue, error = %e2, "cannot report the failure on the issue");
                }
            }
            JobEnd::Failed {
                error: e.to_string(),
            }
        }
    }
}

/// The catalog the hub serves (the work clone's default branch).
fn read_catalog(layout: &Layout) -> Result<(labforge_core::catalog::Sources, Catalog), BotError> {
    let sources = layout
        .read_catalog()
        .map_err(|e| BotError::Catalog(e.to_string()))?;
    let catalog = labforge_core::catalog::load(&sources).map_err(|d| {
        BotError::Catalog(
            d.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    Ok((sources, catalog))
}

/// Validate a request: the pure checks, then (when they pass and the
/// network allows) that the packages exist.
async fn validate(bot: &Bot, body: &str, issue: u64, author: &str, catalog: &Catalog) -> Validated {
    let mut validated =
        request::validate::validate(body, issue, author, catalog, &bot.settings.limits);
    if let (Some(req), Some(indexes)) = (&validated.request, &bot.settings.indexes) {
        let missing = missing_packages(bot, indexes, req).await;
        if !missing.is_empty() {
            validated.problems.extend(missing);
            validated.request = None;
        }
    }
    validated
}

/// Packages the indexes answer 404 for. An index that cannot be reached
/// is logged and skipped: existence is a courtesy check, the build is the
/// real one.
async fn missing_packages(bot: &Bot, indexes: &PackageIndexes, req: &Request) -> Vec<Problem> {
    let mut problems = Vec::new();
    let check = |field: &str, token: &str, url: String, index: &str| {
        let field = field.to_string();
        let token = token.to_string();
        let index = index.to_string();
        let http = bot.http.clone();
        async move {
            match http.get(&url).send().await {
                Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => Some(Problem {
                    field,
                    line: None,
                    token: Some(token),
                    message: format!("is not on {index}; check the spelling"),
                }),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(url = %url, error = %e, "package index unreachable; existence not checked");
                    None
                }
            }
        }
    };
    let mut pending = Vec::new();
    for line in &req.pip {
        if let Ok(r) = labforge_core::formats::parse_requirement(line) {
            let url = format!(
                "{}/pypi/{}/json",
                indexes.pypi.trim_end_matches('/'),
                r.name
            );
            pending.push(check("Python packages (pip)", line, url, "PyPI"));
        }
    }
    for id in &req.vscode {
        let bare = id.split('@').next().unwrap_or(id);
        if let Some((publisher, name)) = bare.split_once('.') {
            let url = format!(
                "{}/api/{publisher}/{name}",
                indexes.openvsx.trim_end_matches('/')
            );
            pending.push(check("VS Code extensions", id, url, "Open VSX"));
        }
    }
    problems.extend(
        futures::future::join_all(pending)
            .await
            .into_iter()
            .flatten(),
    );
    problems
}

/// A request with problems: the answer, the labels, the approval (if any)
/// withdrawn, and `row` (state `invalid`) stored.
async fn answer_invalid(
    hub: &Hub,
    bot: &Bot,
    issue: u64,
    text: &str,
    previous: Option<&BotRequest>,
    row: &BotRequest,
) -> Result<(), BotError> {
    bot.github
        .upsert_comment(issue, KIND_REQUEST, text, None)
        .await?;
    set_labels(
        bot,
        issue,
        &[REQUEST_LABEL, LABEL_INVALID],
        &[LABEL_REVIEW, LABEL_APPROVED],
    )
    .await?;
    withdraw_approval(bot, issue, previous).await?;
    hub.store().save_bot_request(row).await?;
    Ok(())
}

/// An approved request changed: its open pull request (the old version)
/// is closed, so that it cannot be merged; a new `/approve` opens another.
async fn withdraw_approval(
    bot: &Bot,
    issue: u64,
    previous: Option<&BotRequest>,
) -> Result<(), BotError> {
    if previous.is_none_or(|p| p.state != "approved") {
        return Ok(());
    }
    let closed = bot
        .github
        .close_pull(&format!("image-request/{issue}"))
        .await?;
    let text = match closed {
        Some(n) => format!(
            "The request changed after it was approved, so pull request #{n} (the approved version) is closed. A maintainer's `/approve` opens a new one for the new version."
        ),
        None => {
            "The request changed after it was approved: a maintainer needs to `/approve` it again."
                .to_string()
        }
    };
    say(bot, issue, KIND_STATUS, &text).await
}

/// One of the bot's own notes as the issue's comment of `kind`.
async fn say(bot: &Bot, issue: u64, kind: &str, text: &str) -> Result<(), BotError> {
    bot.github
        .upsert_comment(issue, kind, &request::comment::note(kind, text), None)
        .await?;
    Ok(())
}

async fn set_labels(bot: &Bot, issue: u64, add: &[&str], remove: &[&str]) -> Result<(), BotError> {
    bot.github.set_labels(issue, add, remove).await?;
    Ok(())
}

async fn handle_request(
    hub: &Hub,
    bot: &Bot,
    issue: u64,
    author: &str,
    body: &str,
    version: &str,
) -> Result<(), BotError> {
    let layout = hub.layout().clone();
    let (sources, catalog) = read_catalog(&layout)?;
    let mut validated = validate(bot, body, issue, author, &catalog).await;
    let previous = hub.store().bot_request(to_i64(issue)).await?;
    // A retried job of an older version must not undo a newer one that
    // was answered meanwhile (GitHub's times compare as text).
    if let Some(prev) = &previous
        && !version.is_empty()
        && (version < prev.version.as_str()
            || (matches!(prev.state.as_str(), "rejected" | "published")
                && version <= prev.version.as_str()))
    {
        tracing::info!(issue, version, newer = %prev.version, "an older version of the request: skipped");
        return Ok(());
    }
    let now = unix_ms_now();
    // The name is the file and the branch's content: once a pull request
    // was opened for it, it stays (a rename would leave the old file in the
    // pull request), whatever happened since.
    if let (Some(req), Some(prev)) = (&validated.request, &previous)
        && prev.pr.is_some()
        && !prev.slug.is_empty()
        && prev.slug != req.slug
    {
        validated.problems.push(Problem {
            field: request::form::label("name").to_string(),
            line: None,
            token: Some(req.slug.clone()),
            message: format!(
                "cannot replace {:?} after the request was approved; keep the name, or open a new request",
                prev.slug
            ),
        });
        validated.request = None;
    }
    let invalid = |prev: Option<BotRequest>| BotRequest {
        issue: to_i64(issue),
        slug: prev.as_ref().map(|p| p.slug.clone()).unwrap_or_default(),
        state: "invalid".into(),
        author: author.to_string(),
        file: String::new(),
        body: String::new(),
        version: version.to_string(),
        pr: prev.and_then(|p| p.pr),
        updated_at: now,
    };
    let Some(req) = validated.request else {
        let text = request::comment::problems(issue, &validated.problems, &validated.flags);
        answer_invalid(
            hub,
            bot,
            issue,
            &text,
            previous.as_ref(),
            &invalid(previous.clone()),
        )
        .await?;
        tracing::info!(
            issue,
            problems = validated.problems.len(),
            "image request has problems"
        );
        return Ok(());
    };
    let templates = layout
        .read_templates()
        .map_err(|e| BotError::Catalog(e.to_string()))?;
    let preview = match request::entry::preview(
        &sources,
        templates,
        &BuildEnv::default(),
        &req,
        &bot.settings.request_template,
    ) {
        Ok(p) => p,
        Err(messages) => {
            let problems: Vec<Problem> = messages
                .into_iter()
                .map(|message| Problem {
                    field: "catalog".into(),
                    line: None,
                    token: None,
                    message,
                })
                .collect();
            let text = request::comment::problems(issue, &problems, &validated.flags);
            return answer_invalid(
                hub,
                bot,
                issue,
                &text,
                previous.as_ref(),
                &invalid(previous.clone()),
            )
            .await;
        }
    };
    let text = request::comment::preview(&req, &preview, &validated.flags);
    bot.github
        .upsert_comment(issue, KIND_REQUEST, &text, None)
        .await?;
    set_labels(
        bot,
        issue,
        &[REQUEST_LABEL, LABEL_REVIEW],
        &[LABEL_INVALID, LABEL_APPROVED],
    )
    .await?;
    withdraw_approval(bot, issue, previous.as_ref()).await?;
    hub.store()
        .save_bot_request(&BotRequest {
            issue: to_i64(issue),
            slug: req.slug.clone(),
            state: "needs-review".into(),
            author: author.to_string(),
            file: preview.yaml.clone(),
            body: body.to_string(),
            version: version.to_string(),
            pr: previous.and_then(|p| p.pr),
            updated_at: now,
        })
        .await?;
    tracing::info!(issue, slug = %req.slug, flags = validated.flags.len(), "image request previewed");
    Ok(())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// May `login` give commands? Listed maintainers, else write permission
/// on the repository as GitHub says.
async fn allowed(bot: &Bot, login: &str) -> Result<bool, BotError> {
    if bot
        .settings
        .maintainers
        .iter()
        .any(|m| m.eq_ignore_ascii_case(login))
    {
        return Ok(true);
    }
    let permission = bot.github.permission(login).await?;
    Ok(matches!(
        permission,
        Permission::Admin | Permission::Maintain | Permission::Write
    ))
}

async fn handle_command(
    hub: &Hub,
    bot: &Bot,
    issue: u64,
    comment: u64,
    author: &str,
    body: &str,
    written_at: &str,
) -> Result<(), BotError> {
    for parsed in request::command::parse(body) {
        let command = match parsed {
            Ok(c) => c,
            Err(message) => {
                let text = request::comment::note(KIND_COMMAND, &request::comment::prose(&message));
                bot.github
                    .upsert_comment(issue, KIND_COMMAND, &text, None)
                    .await?;
                continue;
            }
        };
        let word = match &command {
            Command::Approve => "/approve",
            Command::Reject { .. } => "/reject",
            Command::Rebuild => "/rebuild",
            Command::Retry => "/retry",
        };
        if !allowed(bot, author).await? {
            tracing::info!(
                issue,
                login = author,
                command = word,
                "command refused: no write permission"
            );
            let text = request::comment::refusal(author, word);
            bot.github
                .upsert_comment(issue, KIND_COMMAND, &text, None)
                .await?;
            continue;
        }
        tracing::info!(issue, login = author, command = word, "maintainer command");
        match command {
            Command::Approve => approve(hub, bot, issue, author, written_at).await?,
            Command::Reject { reason } => reject(hub, bot, issue, author, &reason).await?,
            Command::Rebuild => {
                queue_rebuild(hub, bot, issue, comment, author).await?;
                let text = format!("Rebuild requested by {}: queued.", code(author));
                say(bot, issue, KIND_STATUS, &text).await?;
            }
            Command::Retry => {
                let n = hub
                    .store()
                    .retry_failed(to_i64(issue), unix_ms_now())
                    .await?;
                // A build that ended (and failed) is not a failed step: it
                // is built again.
                let build_failed = hub
                    .store()
                    .bot_request(to_i64(issue))
                    .await?
                    .is_some_and(|r| r.state == "failed");
                if build_failed {
                    queue_rebuild(hub, bot, issue, comment, author).await?;
                }
                bot.wake();
                let text = match (n, build_failed) {
                    (0, false) => {
                        "Nothing to retry: no step of this request has failed.".to_string()
                    }
                    (0, true) => format!("Building again, as {} asked.", code(author)),
                    (n, _) => format!("Retrying {n} failed step(s), as {} asked.", code(author)),
                };
                say(bot, issue, KIND_STATUS, &text).await?;
            }
        }
    }
    Ok(())
}

/// Queue the pipeline for the images of a request (`/rebuild`, `/retry`
/// after a failed build), once per comment.
async fn queue_rebuild(
    hub: &Hub,
    bot: &Bot,
    issue: u64,
    comment: u64,
    by: &str,
) -> Result<(), BotError> {
    let task = Task::Build {
        issue,
        by: by.to_string(),
    };
    let job = NewJob {
        lane: LANE_BUILDS.into(),
        kind: task.kind().into(),
        key: format!("rebuild:comment:{comment}"),
        issue: Some(to_i64(issue)),
        payload: serde_json::to_string(&task).map_err(|e| BotError::Payload(e.to_string()))?,
    };
    hub.store().enqueue(&job, unix_ms_now()).await?;
    bot.wake();
    Ok(())
}

async fn approve(
    hub: &Hub,
    bot: &Bot,
    issue: u64,
    by: &str,
    written_at: &str,
) -> Result<(), BotError> {
    let Some(mut stored) = hub.store().bot_request(to_i64(issue)).await? else {
        let text =
            "There is nothing to approve yet: I have not seen a valid request in this issue.";
        say(bot, issue, KIND_STATUS, text).await?;
        return Ok(());
    };
    if !matches!(stored.state.as_str(), "needs-review" | "approved") || stored.file.is_empty() {
        let text = format!(
            "I cannot approve this request while it is {}: {}",
            stored.state,
            match stored.state.as_str() {
                "invalid" => "the problems listed above need fixing first (edit the issue).",
                "rejected" => "it was rejected; reopen and edit it to ask again.",
                "published" => "its image is published; open a new request for a change.",
                _ => "it is not waiting for review.",
            }
        );
        say(bot, issue, KIND_STATUS, &text).await?;
        return Ok(());
    }
    // GitHub's timestamps are RFC 3339 in UTC (`…Z`) and compare as text:
    // an approval written before the last edit approved what it no longer
    // says.
    if !written_at.is_empty() && !stored.version.is_empty() && written_at < stored.version.as_str()
    {
        let text = format!(
            "The request was edited after the `/approve` by {} was written: look at the updated preview and comment `/approve` again.",
            code(by)
        );
        say(bot, issue, KIND_STATUS, &text).await?;
        return Ok(());
    }
    // Check again against the catalog as it is now (it may have changed
    // since the preview).
    let layout = hub.layout().clone();
    let (sources, catalog) = read_catalog(&layout)?;
    let validated = validate(bot, &stored.body, issue, &stored.author, &catalog).await;
    let Some(req) = validated.request else {
        let text = request::comment::problems(issue, &validated.problems, &validated.flags);
        bot.github
            .upsert_comment(issue, KIND_REQUEST, &text, None)
            .await?;
        set_labels(bot, issue, &[LABEL_INVALID], &[LABEL_REVIEW]).await?;
        stored.state = "invalid".into();
        stored.updated_at = unix_ms_now();
        hub.store().save_bot_request(&stored).await?;
        return Ok(());
    };
    let templates = layout
        .read_templates()
        .map_err(|e| BotError::Catalog(e.to_string()))?;
    let preview = request::entry::preview(
        &sources,
        templates,
        &BuildEnv::default(),
        &req,
        &bot.settings.request_template,
    )
    .map_err(|m| BotError::Catalog(m.join("; ")))?;
    let branch = format!("image-request/{issue}");
    let path = bot.request_path(&req.slug);
    let contents = preview.yaml.clone().into_bytes();
    let message = format!(
        "Add the {} environment (image request #{issue})\n\nRequested by {} in #{issue}; approved by {by}.",
        req.slug, req.author
    );
    let author = bot.settings.author.clone();
    let branch_for_git = branch.clone();
    let (base, committed) = bot
        .git(move |work| {
            work.fetch()?;
            let base = work.default_branch()?;
            let committed =
                work.commit_file(&branch_for_git, &base, &path, &contents, &message, &author)?;
            if !committed.in_base {
                work.push(&branch_for_git)?;
            }
            Ok((base, committed))
        })
        .await?;
    if committed.in_base {
        // Merged before: a pull request would be empty.
        let text = format!(
            "{} is already in `{base}` exactly as requested: nothing to merge. A maintainer can comment `/rebuild` to build it again.",
            code(&bot.request_path(&req.slug))
        );
        say(bot, issue, KIND_STATUS, &text).await?;
        return Ok(());
    }
    tracing::info!(issue, branch = %branch, commit = %committed.oid, created = committed.created, "request branch pushed");
    let title = format!("Add the {} environment (#{issue})", req.slug);
    let body = request::comment::pr_body(issue, &req, &preview);
    let pr = bot
        .github
        .open_or_update_pr(&branch, &base, &title, &body)
        .await?;
    stored.state = "approved".into();
    stored.pr = Some(to_i64(pr.number));
    stored.file = preview.yaml.clone();
    stored.slug = req.slug.clone();
    stored.updated_at = unix_ms_now();
    hub.store().save_bot_request(&stored).await?;
    set_labels(
        bot,
        issue,
        &[LABEL_APPROVED],
        &[LABEL_REVIEW, LABEL_INVALID],
    )
    .await?;
    let text = format!(
        "Approved by {}. Pull request #{}: {}\n\nWhen it is merged, I build the image, test and scan it, and tell you here how to start it.",
        code(by),
        pr.number,
        pr.html_url
    );
    say(bot, issue, KIND_STATUS, &text).await?;
    Ok(())
}

async fn reject(hub: &Hub, bot: &Bot, issue: u64, by: &str, reason: &str) -> Result<(), BotError> {
    let previous = hub.store().bot_request(to_i64(issue)).await?;
    // Its pull request (if approved before) must not be merged by mistake.
    let closed = bot
        .github
        .close_pull(&format!("image-request/{issue}"))
        .await?;
    let text = format!(
        "Rejected by {}: {}{}\n\nIf something can change, edit the issue and reopen it.",
        code(by),
        request::comment::inline(reason),
        closed
            .map(|n| format!("\n\nPull request #{n} is closed."))
            .unwrap_or_default()
    );
    say(bot, issue, KIND_STATUS, &text).await?;
    set_labels(bot, issue, &[], &[LABEL_REVIEW, LABEL_APPROVED]).await?;
    bot.github.close_issue(issue, "not_planned").await?;
    let mut stored = previous.unwrap_or(BotRequest {
        issue: to_i64(issue),
        slug: String::new(),
        state: String::new(),
        author: String::new(),
        file: String::new(),
        body: String::new(),
        version: String::new(),
        pr: None,
        updated_at: 0,
    });
    stored.state = "rejected".into();
    stored.updated_at = unix_ms_now();
    hub.store().save_bot_request(&stored).await?;
    Ok(())
}

/// The images of each request issue among `images` (names), by the
/// catalog's `issue:` field.
fn issues_of(catalog: &Catalog, images: &[String]) -> BTreeMap<u64, Vec<String>> {
    let mut by_issue: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for image in &catalog.images {
        if let Some(issue) = image.issue
            && images.contains(&image.name)
        {
            by_issue.entry(issue).or_default().push(image.name.clone());
        }
    }
    by_issue
}

/// The concrete images defined in a file of `changed` (paths in the repository).
fn images_in_files(catalog: &Catalog, images_dir: &str, changed: &[String]) -> Vec<String> {
    let files: Vec<&str> = changed
        .iter()
        .filter_map(|p| p.strip_prefix(images_dir))
        .collect();
    catalog
        .images
        .iter()
        .filter(|image| {
            Path::new(&image.file)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| files.contains(&n))
        })
        .map(|image| image.name.clone())
        .collect()
}

async fn handle_merge(hub: &Hub, bot: &Bot, before: &str, after: &str) -> Result<(), BotError> {
    let before = before.to_string();
    let after_oid = after.to_string();
    let changed = bot
        .git(move |work| {
            work.fetch()?;
            // A force-push can leave `before` unknown here: then everything
            // counts as changed (the plan still builds only what differs).
            let changed = match work.changed_paths(&before, &after_oid) {
                Ok(paths) => Some(paths),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot diff the push; treating every file as changed");
                    None
                }
            };
            // Only ever forward: the default branch's tip as fetched now,
            // which holds this push (a retried older push must not take the
            // served catalog back).
            let branch = work.default_branch()?;
            let tip = work.head_of(&branch)?.unwrap_or(after_oid);
            work.checkout(&tip)?;
            Ok(changed)
        })
        .await?;
    tracing::info!(commit = %after, changed = ?changed.as_ref().map(Vec::len), "default branch moved; work clone checked out");
    // The hub serves the merged catalog at once.
    hub.wake();
    if changed.as_ref().is_some_and(Vec::is_empty) {
        return Ok(());
    }
    let images_dir = bot.request_path("").trim_end_matches(".yaml").to_string();
    let (_, catalog) = read_catalog(hub.layout())?;
    // Only image files changed: build those (and what they need). Anything
    // else (templates, settings, configuration, an unknown diff): the whole
    // catalog, of which the plan builds only what changed.
    let (selection, changed_images) = match &changed {
        Some(paths) if paths.iter().all(|p| p.starts_with(&images_dir)) => {
            let images = images_in_files(&catalog, &images_dir, paths);
            if images.is_empty() {
                // Image files were only deleted.
                return Ok(());
            }
            (images.clone(), images)
        }
        // Whole-catalog runs may build any waiting request's image.
        Some(_) => (
            Vec::new(),
            catalog.images.iter().map(|i| i.name.clone()).collect(),
        ),
        None => (
            Vec::new(),
            catalog.images.iter().map(|i| i.name.clone()).collect(),
        ),
    };
    // Answer on the requests that wait for this build (approved, or a
    // build that failed before), not on every old issue an image names.
    let mut issues = BTreeMap::new();
    for (issue, images) in issues_of(&catalog, &changed_images) {
        let waiting = hub
            .store()
            .bot_request(to_i64(issue))
            .await?
            .is_some_and(|r| matches!(r.state.as_str(), "approved" | "failed"));
        if waiting {
            issues.insert(issue, images);
        }
    }
    let short = &after[..after.len().min(12)];
    build_and_report(hub, bot, &selection, &issues, &format!("merged in {short}")).await
}

async fn handle_rebuild(hub: &Hub, bot: &Bot, issue: u64, by: &str) -> Result<(), BotError> {
    let (_, catalog) = read_catalog(hub.layout())?;
    let images: Vec<String> = catalog
        .images
        .iter()
        .filter(|i| i.issue == Some(issue))
        .map(|i| i.name.clone())
        .collect();
    if images.is_empty() {
        let text = "Nothing to rebuild: no image in the catalog comes from this request yet (is its pull request merged?).";
        say(bot, issue, KIND_RESULT, text).await?;
        return Ok(());
    }
    let mut issues = BTreeMap::new();
    issues.insert(issue, images.clone());
    build_and_report(
        hub,
        bot,
        &images,
        &issues,
        &format!("rebuild asked by {}", code(by)),
    )
    .await
}

/// Run the pipeline for `selection` and answer on every request issue.
async fn build_and_report(
    hub: &Hub,
    bot: &Bot,
    selection: &[String],
    issues: &BTreeMap<u64, Vec<String>>,
    why: &str,
) -> Result<(), BotError> {
    for (issue, images) in issues {
        let names: Vec<String> = images.iter().map(|i| code(i)).collect();
        let text = format!(
            "Building {} ({why}): build, smoke tests, scan and push. This takes a while for CUDA images; I update this comment when it is done.",
            names.join(", ")
        );
        // Progress is a courtesy: the build goes ahead without it.
        if let Err(e) = bot
            .github
            .upsert_comment(
                *issue,
                KIND_RESULT,
                &request::comment::note(KIND_RESULT, &text),
                None,
            )
            .await
        {
            tracing::warn!(issue, error = %e, "cannot post the build's progress");
        }
    }
    let run = match crate::pipeline::run(&bot.settings.pipeline, &bot.work_dir, selection).await {
        Ok(run) => run,
        Err(e) if !issues.is_empty() => {
            // Told on every request, labelled; `/retry` builds again. The
            // details (log tail, paths) stay in the hub's log.
            tracing::error!(error = %e, "the build pipeline failed");
            for (issue, images) in issues {
                let failed: Vec<(String, String)> = images
                    .iter()
                    .map(|i| (i.clone(), "the build pipeline did not finish".to_string()))
                    .collect();
                let hint = "The hub's log says why. A maintainer can comment `/retry` after a fix.";
                bot.github
                    .upsert_comment(
                        *issue,
                        KIND_RESULT,
                        &request::comment::failed(&failed, hint),
                        None,
                    )
                    .await?;
                set_labels(bot, *issue, &[LABEL_FAILED], &[]).await?;
                mark(hub, *issue, "failed").await?;
            }
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    // The hub must serve the result before the issue says it is live; if
    // it cannot load, try again later (the pipeline then finds the images
    // built and only the answers remain).
    let snapshot = hub
        .reload(true)
        .await
        .map_err(|e| BotError::Worker(format!("the hub could not load the new catalog: {e}")))?;
    let mut first_error = None;
    for (issue, images) in issues {
        if let Err(e) = report(hub, bot, *issue, images, &run, Some(&snapshot)).await {
            tracing::error!(issue, error = %e, "cannot report the build on the issue");
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Set the stored state of a request the bot knows.
async fn mark(hub: &Hub, issue: u64, state: &str) -> Result<(), BotError> {
    if let Some(mut stored) = hub.store().bot_request(to_i64(issue)).await? {
        stored.state = state.to_string();
        stored.updated_at = unix_ms_now();
        hub.store().save_bot_request(&stored).await?;
    }
    Ok(())
}

async fn report(
    hub: &Hub,
    bot: &Bot,
    issue: u64,
    images: &[String],
    run: &PipelineRun,
    snapshot: Option<&crate::snapshot::Snapshot>,
) -> Result<(), BotError> {
    let mut published = Vec::new();
    let mut failed = Vec::new();
    for name in images {
        let built = run.images.iter().find(|b| &b.image == name);
        let served = snapshot.and_then(|s| s.image(name)).map(|(doc, _)| doc);
        let current = served.and_then(|doc| doc.versions.first().map(|v| (doc, v)));
        match (built, current) {
            (Some(b), Some((doc, version)))
                if b.digest.as_deref() == Some(version.digest.as_str()) =>
            {
                published.push(request::comment::Published {
                    image: name.clone(),
                    digest: version.digest.clone(),
                    reference: version.reference.clone(),
                    size: version.size_bytes,
                    scan: version
                        .scan
                        .as_ref()
                        .map(scan_line)
                        .unwrap_or_else(|| "no scan on record".into()),
                    profile: doc.display_name.clone(),
                    slug: doc.slug.clone(),
                    launch: Some(doc.launch_url.clone()),
                });
            }
            (Some(b), _) => {
                let reason = if b.reason.is_empty() {
                    format!("{} (not published)", b.result)
                } else {
                    format!("{}: {}", b.result, b.reason)
                };
                failed.push((name.clone(), reason));
            }
            (None, _) => failed.push((name.clone(), "not built by the pipeline run".to_string())),
        }
    }
    let now = unix_ms_now();
    let mut stored = hub.store().bot_request(to_i64(issue)).await?;
    if failed.is_empty() {
        let text = request::comment::published(&published);
        bot.github
            .upsert_comment(issue, KIND_RESULT, &text, None)
            .await?;
        set_labels(
            bot,
            issue,
            &[LABEL_PUBLISHED],
            &[LABEL_FAILED, LABEL_APPROVED, LABEL_REVIEW],
        )
        .await?;
        bot.github.close_issue(issue, "completed").await?;
        if let Some(s) = stored.as_mut() {
            s.state = "published".into();
        }
        tracing::info!(
            issue,
            images = published.len(),
            "request published; issue closed"
        );
    } else {
        let hint = format!(
            "The build log is `{}` in the hub's state folder. A maintainer can comment `/retry` after a fix.",
            run.log
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let text = request::comment::failed(&failed, &hint);
        bot.github
            .upsert_comment(issue, KIND_RESULT, &text, None)
            .await?;
        set_labels(bot, issue, &[LABEL_FAILED], &[]).await?;
        if let Some(s) = stored.as_mut() {
            s.state = "failed".into();
        }
        tracing::warn!(
            issue,
            failed = failed.len(),
            "request build failed; issue stays open"
        );
    }
    if let Some(mut s) = stored {
        s.updated_at = now;
        hub.store().save_bot_request(&s).await?;
    }
    Ok(())
}

fn scan_line(scan: &crate::doc::ScanDoc) -> String {
    format!("{}: {}", scan.verdict, scan.summary)
}
