//! The GitHub REST client of the issue bot: every call the bot makes to
//! GitHub (permissions, comments, labels, closing issues, pull requests),
//! on octocrab, against a configurable API root (github.com, GitHub
//! Enterprise, or the fake server of the tests).
//!
//! Every request goes through one private [`Github::send`] that reads the
//! status and the rate-limit headers itself, because octocrab's typed calls
//! hide them and the bot must wait out GitHub's limits rather than fail:
//!
//! - primary rate limit (403/429 with `x-ratelimit-remaining: 0`): wait
//!   until `x-ratelimit-reset`;
//! - secondary rate limit (`retry-after`): wait that many seconds (without
//!   the header, GitHub asks for at least a minute);
//! - 5xx answers and connection errors: exponential backoff from 500 ms.
//!
//! A wait longer than `max_wait` fails at once with "rate limited until
//! <time>"; after `max_retries` retries the error names the call and the
//! last answer. octocrab's own retry layer is not compiled in (its `retry`
//! feature is off), so nothing retries twice.
//!
//! The side effects are idempotent where GitHub lets them be: the bot keeps
//! one comment per (issue, kind), found again by the hidden marker its body
//! starts with (`labforge_core::request::comment::marker`), and one pull
//! request per branch. A request that creates something is not blindly
//! repeated after a 5xx (GitHub may have done it anyway): the client looks
//! again first.
//!
//! This module does no parsing of issue text and holds no state beyond the
//! octocrab client; the worker decides what to say.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use octocrab::Octocrab;
use octocrab::models::{AppId, InstallationId};
pub use octocrab::secrecy::ExposeSecret;
pub use octocrab::secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

/// The public GitHub API root.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// The first wait of the exponential backoff after a 5xx or a lost
/// connection.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// How long GitHub asks a client to wait after a secondary rate limit that
/// came without a `retry-after` header.
const SECONDARY_DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// Comments fetched per page (GitHub's maximum).
const PER_PAGE: u32 = 100;

/// The most pages of comments read; an issue with more than 10,000
/// comments is not one the bot should be answering.
const MAX_PAGES: u32 = 100;

/// A GitHub App installation the bot acts as: octocrab signs a JWT with the
/// App's key and trades it for installation tokens (refreshed before they
/// expire).
#[derive(Clone)]
pub struct AppCredentials {
    pub app_id: u64,
    /// The App's private key, PEM (`-----BEGIN RSA PRIVATE KEY-----`).
    pub private_key_pem: SecretString,
    pub installation_id: u64,
}

impl fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCredentials")
            .field("app_id", &self.app_id)
            .field("private_key_pem", &"[redacted]")
            .field("installation_id", &self.installation_id)
            .finish()
    }
}

/// Where the bot's GitHub is and who it is there.
#[derive(Debug, Clone)]
pub struct GithubConfig {
    /// The API root: [`DEFAULT_API_URL`], `https://<host>/api/v3` for GitHub
    /// Enterprise, the fake's URL in tests.
    pub api_url: String,
    /// A personal or installation access token. Exactly one of `token` and
    /// `app` must be given.
    pub token: Option<SecretString>,
    pub app: Option<AppCredentials>,
    pub owner: String,
    pub repo: String,
    /// The login the bot's comments are authored by (`<app-slug>[bot]` for
    /// a GitHub App, the token owner's login otherwise): only its comments
    /// are ever edited, so a user cannot plant a marker for the bot to
    /// overwrite.
    pub bot_login: String,
    /// Retries of one request after a rate limit, a 5xx or a lost
    /// connection.
    pub max_retries: u32,
    /// The longest single wait; a rate limit that resets later fails the
    /// call instead (the job is retried later by the worker).
    pub max_wait: Duration,
}

impl GithubConfig {
    /// Public GitHub, 5 retries, waits of at most 5 minutes.
    pub fn new(owner: &str, repo: &str, bot_login: &str) -> GithubConfig {
        GithubConfig {
            api_url: DEFAULT_API_URL.to_string(),
            token: None,
            app: None,
            owner: owner.to_string(),
            repo: repo.to_string(),
            bot_login: bot_login.to_string(),
            max_retries: 5,
            max_wait: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error("repository must be given as owner/repo, not {0:?}")]
    Repo(String),
    #[error("GitHub credentials: {0}")]
    Credentials(String),
    #[error("GitHub client for {api_url}: {reason}")]
    Client { api_url: String, reason: String },
    #[error(
        "{call}: rate limited until {until} (longer than the {max_wait:?} the bot waits); try again later"
    )]
    RateLimited {
        call: String,
        until: String,
        max_wait: Duration,
    },
    #[error("{call}: gave up after {attempts} attempts; last answer: {last}")]
    Exhausted {
        call: String,
        attempts: u32,
        last: String,
    },
    #[error("{call}: GitHub answered {status}: {message}")]
    Status {
        call: String,
        status: u16,
        message: String,
    },
    #[error("{call}: unreadable answer: {reason}")]
    Decode { call: String, reason: String },
    #[error("{call}: {reason}")]
    Request { call: String, reason: String },
    #[error("a {kind:?} comment must start with its marker {marker:?}")]
    Marker { kind: String, marker: String },
    #[error("close reason must be completed, not_planned or duplicate, not {0:?}")]
    CloseReason(String),
}

/// What a login may do in the repository (GitHub's role; custom roles
/// count as the base role GitHub reports for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    None,
    Read,
    Triage,
    Write,
    Maintain,
    Admin,
}

impl Permission {
    fn parse(s: &str) -> Option<Permission> {
        Some(match s {
            "admin" => Permission::Admin,
            "maintain" => Permission::Maintain,
            "write" => Permission::Write,
            "triage" => Permission::Triage,
            "read" => Permission::Read,
            "none" => Permission::None,
            _ => return None,
        })
    }

    /// May push to the repository: the bar for maintainer commands such as
    /// `/approve`.
    pub fn can_write(self) -> bool {
        self >= Permission::Write
    }
}

/// One issue comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    pub body: String,
    /// The author's login.
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    pub html_url: String,
    /// Opened by this call (false: an open one for the branch was reused).
    pub created: bool,
}

/// What the bot needs to know about the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub default_branch: String,
    pub clone_url: String,
    pub html_url: String,
}

/// The client. Cheap to clone (octocrab's client is shared).
#[derive(Clone)]
pub struct Github {
    crab: Octocrab,
    owner: String,
    repo: String,
    bot_login: String,
    max_retries: u32,
    max_wait: Duration,
    /// `Some` for a token; an App's installation token comes from octocrab.
    token: Option<SecretString>,
}

impl fmt::Debug for Github {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Github")
            .field("owner", &self.owner)
            .field("repo", &self.repo)
            .field("bot_login", &self.bot_login)
            .finish_non_exhaustive()
    }
}

/// `"owner/repo"` → `("owner", "repo")`, with GitHub's name rules (ASCII
/// letters, digits, `-`, `_`, `.`; a trailing `.git` is not part of it).
pub fn parse_repo(s: &str) -> Result<(String, String), GithubError> {
    let bad = || GithubError::Repo(s.to_string());
    let (owner, repo) = s.trim().split_once('/').ok_or_else(bad)?;
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    let valid = |part: &str| {
        !part.is_empty()
            && part.len() <= 100
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !valid(owner) || !valid(repo) {
        return Err(bad());
    }
    Ok((owner.to_string(), repo.to_string()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
    Patch,
    Delete,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Patch => "PATCH",
            Verb::Delete => "DELETE",
        })
    }
}

/// Whether a request may be sent again after an answer that does not say
/// whether it took effect (a 5xx, a lost connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Safe,
    /// Creating something: the caller looks before trying again.
    LookFirst,
}

/// One answer, read completely.
#[derive(Debug)]
struct Answer {
    call: String,
    status: u16,
    remaining: Option<u64>,
    reset: Option<u64>,
    retry_after: Option<u64>,
    next_page: bool,
    body: String,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// GitHub's `message` (and the `errors` details), else the raw body.
    fn message(&self) -> String {
        let Ok(v) = serde_json::from_str::<Value>(&self.body) else {
            return self.body.chars().take(200).collect();
        };
        let mut message = v
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        for e in v
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let detail = e
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string());
            message.push_str(&format!(" ({detail})"));
        }
        message
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, GithubError> {
        serde_json::from_str(&self.body).map_err(|e| GithubError::Decode {
            call: self.call.clone(),
            reason: e.to_string(),
        })
    }

    fn fail(&self) -> GithubError {
        GithubError::Status {
            call: self.call.clone(),
            status: self.status,
            message: self.message(),
        }
    }
}

/// What to do about one attempt.
enum Next {
    Done(Answer),
    Wait {
        wait: Duration,
        /// Unix seconds the wait ends at, for a rate limit.
        until: Option<u64>,
        last: String,
    },
    /// A request that must not be repeated blindly had an unclear outcome.
    Unclear(String),
}

impl Github {
    /// Build the client. Must run inside a tokio runtime (octocrab spawns
    /// its connection worker).
    pub fn new(config: GithubConfig) -> Result<Github, GithubError> {
        let full = format!("{}/{}", config.owner, config.repo);
        let (owner, repo) = parse_repo(&full)?;
        if config.bot_login.trim().is_empty() {
            return Err(GithubError::Credentials(
                "the bot's login is needed to recognise its own comments".into(),
            ));
        }
        let client_error = |reason: String| GithubError::Client {
            api_url: config.api_url.clone(),
            reason,
        };
        let builder = Octocrab::builder()
            .base_uri(config.api_url.trim_end_matches('/'))
            .map_err(|e| client_error(labforge_core::error_chain(&e)))?
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(60)))
            .set_write_timeout(Some(Duration::from_secs(60)));
        let (crab, token) = match (&config.token, &config.app) {
            (Some(token), None) => {
                let crab = builder
                    .personal_token(token.expose_secret().to_string())
                    .build()
                    .map_err(|e| client_error(labforge_core::error_chain(&e)))?;
                (crab, Some(token.clone()))
            }
            (None, Some(app)) => {
                let key = octocrab::jsonwebtoken::EncodingKey::from_rsa_pem(
                    app.private_key_pem.expose_secret().as_bytes(),
                )
                .map_err(|e| {
                    GithubError::Credentials(format!(
                        "the private key of GitHub App {} is not an RSA key in PEM: {e}",
                        app.app_id
                    ))
                })?;
                let crab = builder
                    .app(AppId(app.app_id), key)
                    .build()
                    .map_err(|e| client_error(labforge_core::error_chain(&e)))?;
                let crab = crab
                    .installation(InstallationId(app.installation_id))
                    .map_err(|e| client_error(labforge_core::error_chain(&e)))?;
                (crab, None)
            }
            (Some(_), Some(_)) => {
                return Err(GithubError::Credentials(
                    "give either a token or GitHub App credentials, not both".into(),
                ));
            }
            (None, None) => {
                return Err(GithubError::Credentials(
                    "no token and no GitHub App credentials".into(),
                ));
            }
        };
        Ok(Github {
            crab,
            owner,
            repo,
            bot_login: config.bot_login,
            max_retries: config.max_retries,
            max_wait: config.max_wait,
            token,
        })
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn repo(&self) -> &str {
        &self.repo
    }

    pub fn bot_login(&self) -> &str {
        &self.bot_login
    }

    /// A token for git over HTTPS (clone, fetch, push): the configured
    /// token, or a current installation token of the App (octocrab caches
    /// it and mints a new one shortly before it expires).
    pub async fn git_token(&self) -> Result<SecretString, GithubError> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        self.crab
            .installation_token()
            .await
            .map_err(|e| GithubError::Request {
                call: "installation token".into(),
                reason: labforge_core::error_chain(&e),
            })
    }

    fn repo_path(&self, rest: &str) -> String {
        format!(
            "/repos/{}/{}/{rest}",
            encode(&self.owner),
            encode(&self.repo)
        )
    }

    /// The repository's default branch and URLs.
    pub async fn repository(&self) -> Result<Repository, GithubError> {
        let path = format!("/repos/{}/{}", encode(&self.owner), encode(&self.repo));
        let answer = self.send(Verb::Get, &path, None, Repeat::Safe).await?;
        if !answer.ok() {
            return Err(answer.fail());
        }
        let repo: octocrab::models::Repository = answer.json()?;
        Ok(Repository {
            default_branch: repo.default_branch.unwrap_or_else(|| "main".into()),
            clone_url: repo.clone_url.map(|u| u.to_string()).unwrap_or_default(),
            html_url: repo.html_url.map(|u| u.to_string()).unwrap_or_default(),
        })
    }

    /// The login's role in the repository; a login GitHub does not know
    /// (404) has none.
    pub async fn permission(&self, login: &str) -> Result<Permission, GithubError> {
        #[derive(Deserialize)]
        struct Level {
            permission: String,
            role_name: Option<String>,
        }
        let path = self.repo_path(&format!("collaborators/{}/permission", encode(login)));
        let answer = self.send(Verb::Get, &path, None, Repeat::Safe).await?;
        if answer.status == 404 {
            return Ok(Permission::None);
        }
        if !answer.ok() {
            return Err(answer.fail());
        }
        let level: Level = answer.json()?;
        // `role_name` is the precise role (maintain, triage); a custom role
        // falls back to the legacy base permission.
        Ok(level
            .role_name
            .as_deref()
            .and_then(Permission::parse)
            .or_else(|| Permission::parse(&level.permission))
            .unwrap_or(Permission::None))
    }

    /// Every comment on an issue, oldest first (all pages).
    pub async fn comments(&self, issue: u64) -> Result<Vec<Comment>, GithubError> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let path = self.repo_path(&format!(
                "issues/{issue}/comments?per_page={PER_PAGE}&page={page}"
            ));
            let answer = self.send(Verb::Get, &path, None, Repeat::Safe).await?;
            if !answer.ok() {
                return Err(answer.fail());
            }
            let comments: Vec<octocrab::models::issues::Comment> = answer.json()?;
            all.extend(comments.into_iter().map(|c| Comment {
                id: c.id.0,
                body: c.body.unwrap_or_default(),
                user: c.user.login,
            }));
            if !answer.next_page {
                break;
            }
        }
        Ok(all)
    }

    /// Post a comment. Not idempotent: a retried 5xx may, rarely, post it
    /// twice; the bot's own status comments use [`Self::upsert_comment`].
    pub async fn add_comment(&self, issue: u64, body: &str) -> Result<u64, GithubError> {
        let path = self.repo_path(&format!("issues/{issue}/comments"));
        let answer = self
            .send(
                Verb::Post,
                &path,
                Some(&json!({ "body": body })),
                Repeat::Safe,
            )
            .await?;
        let id = created_comment(&answer)?;
        tracing::info!(
            github.issue = issue,
            github.comment = id,
            "commented on #{issue}"
        );
        Ok(id)
    }

    /// Keep exactly one bot comment of `kind` on the issue with this body:
    /// edit `known` if it still exists, else the bot's comment that starts
    /// with the kind's marker, else post a new one. Returns its id.
    pub async fn upsert_comment(
        &self,
        issue: u64,
        kind: &str,
        body: &str,
        known: Option<u64>,
    ) -> Result<u64, GithubError> {
        let marker = labforge_core::request::comment::marker(kind);
        if !body.trim_start().starts_with(&marker) {
            return Err(GithubError::Marker {
                kind: kind.to_string(),
                marker,
            });
        }
        if let Some(id) = known
            && self.edit_comment(issue, id, body).await?
        {
            return Ok(id);
        }
        let path = self.repo_path(&format!("issues/{issue}/comments"));
        let call = format!("POST {path}");
        let mut last = String::new();
        for attempt in 0..=self.max_retries {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt - 1)).await;
            }
            let existing = self.comments(issue).await?.into_iter().find(|c| {
                c.user.eq_ignore_ascii_case(&self.bot_login)
                    && c.body.trim_start().starts_with(&marker)
            });
            if let Some(comment) = existing {
                if comment.body == body {
                    // Already says this (an earlier attempt got through).
                    return Ok(comment.id);
                }
                if self.edit_comment(issue, comment.id, body).await? {
                    return Ok(comment.id);
                }
                // Deleted between the list and the edit: post a new one.
            }
            match self
                .send(
                    Verb::Post,
                    &path,
                    Some(&json!({ "body": body })),
                    Repeat::LookFirst,
                )
                .await
            {
                Ok(answer) => {
                    let id = created_comment(&answer)?;
                    tracing::info!(
                        github.issue = issue,
                        github.comment = id,
                        comment.kind = kind,
                        "commented on #{issue}"
                    );
                    return Ok(id);
                }
                Err(GithubError::Request { reason, .. }) => last = reason,
                Err(e) => return Err(e),
            }
        }
        Err(GithubError::Exhausted {
            call,
            attempts: self.max_retries + 1,
            last,
        })
    }

    /// PATCH a comment; false if it no longer exists.
    async fn edit_comment(&self, issue: u64, id: u64, body: &str) -> Result<bool, GithubError> {
        let path = self.repo_path(&format!("issues/comments/{id}"));
        let answer = self
            .send(
                Verb::Patch,
                &path,
                Some(&json!({ "body": body })),
                Repeat::Safe,
            )
            .await?;
        if answer.status == 404 {
            return Ok(false);
        }
        if !answer.ok() {
            return Err(answer.fail());
        }
        tracing::info!(
            github.issue = issue,
            github.comment = id,
            "updated comment {id} on #{issue}"
        );
        Ok(true)
    }

    /// Add labels (GitHub creates unknown ones) and remove others; removing
    /// a label the issue does not have is not an error.
    pub async fn set_labels(
        &self,
        issue: u64,
        add: &[&str],
        remove: &[&str],
    ) -> Result<(), GithubError> {
        let remove: Vec<&str> = remove
            .iter()
            .copied()
            .filter(|r| !add.iter().any(|a| a.eq_ignore_ascii_case(r)))
            .collect();
        // The labels the issue has after the additions, when GitHub said.
        let mut current: Option<Vec<String>> = None;
        if !add.is_empty() {
            let path = self.repo_path(&format!("issues/{issue}/labels"));
            let answer = self
                .send(
                    Verb::Post,
                    &path,
                    Some(&json!({ "labels": add })),
                    Repeat::Safe,
                )
                .await?;
            if !answer.ok() {
                return Err(answer.fail());
            }
            #[derive(Deserialize)]
            struct Label {
                name: String,
            }
            let labels: Vec<Label> = answer.json()?;
            current = Some(labels.into_iter().map(|l| l.name).collect());
            tracing::info!(github.issue = issue, labels = ?add, "labelled #{issue}");
        }
        for name in remove {
            if let Some(current) = &current
                && !current.iter().any(|c| c.eq_ignore_ascii_case(name))
            {
                continue;
            }
            let path = self.repo_path(&format!("issues/{issue}/labels/{}", encode(name)));
            let answer = self.send(Verb::Delete, &path, None, Repeat::Safe).await?;
            match answer.status {
                200..=299 => {
                    tracing::info!(github.issue = issue, label = name, "unlabelled #{issue}");
                }
                404 => {}
                _ => return Err(answer.fail()),
            }
        }
        Ok(())
    }

    /// Close an issue with GitHub's reason (`completed`, `not_planned`,
    /// `duplicate`).
    pub async fn close_issue(&self, issue: u64, reason: &str) -> Result<(), GithubError> {
        if !matches!(reason, "completed" | "not_planned" | "duplicate") {
            return Err(GithubError::CloseReason(reason.to_string()));
        }
        let path = self.repo_path(&format!("issues/{issue}"));
        let body = json!({ "state": "closed", "state_reason": reason });
        let answer = self
            .send(Verb::Patch, &path, Some(&body), Repeat::Safe)
            .await?;
        if !answer.ok() {
            return Err(answer.fail());
        }
        tracing::info!(github.issue = issue, reason, "closed #{issue}");
        Ok(())
    }

    /// Close the open pull request from `branch`, if there is one (a
    /// rejected request's); returns its number.
    pub async fn close_pull(&self, branch: &str) -> Result<Option<u64>, GithubError> {
        let Some(existing) = self.open_pull(branch).await? else {
            return Ok(None);
        };
        let path = self.repo_path(&format!("pulls/{}", existing.number));
        let answer = self
            .send(
                Verb::Patch,
                &path,
                Some(&json!({ "state": "closed" })),
                Repeat::Safe,
            )
            .await?;
        if !answer.ok() {
            return Err(answer.fail());
        }
        tracing::info!(
            github.pull = existing.number,
            branch,
            "closed pull request #{}",
            existing.number
        );
        Ok(Some(existing.number))
    }

    /// The open pull request from `branch` into `base`, with this title and
    /// body: the existing one updated (only if something changed), else a
    /// new one.
    pub async fn open_or_update_pr(
        &self,
        branch: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<PullRequest, GithubError> {
        let path = self.repo_path("pulls");
        let call = format!("POST {path}");
        let mut last = String::new();
        for attempt in 0..=self.max_retries {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt - 1)).await;
            }
            if let Some(existing) = self.open_pull(branch).await? {
                return self.update_pull(existing, base, title, body).await;
            }
            let request = json!({ "title": title, "head": branch, "base": base, "body": body });
            match self
                .send(Verb::Post, &path, Some(&request), Repeat::LookFirst)
                .await
            {
                Ok(answer) if answer.ok() => {
                    let pr: octocrab::models::pulls::PullRequest = answer.json()?;
                    let html_url = pr.html_url.map(|u| u.to_string()).unwrap_or_default();
                    tracing::info!(
                        github.pull = pr.number,
                        branch,
                        "opened pull request #{}",
                        pr.number
                    );
                    return Ok(PullRequest {
                        number: pr.number,
                        html_url,
                        created: true,
                    });
                }
                // Opened meanwhile (by an earlier attempt or another
                // worker): look again.
                Ok(answer)
                    if answer.status == 422 && answer.message().contains("already exists") =>
                {
                    last = answer.message();
                }
                Ok(answer) => return Err(answer.fail()),
                Err(GithubError::Request { reason, .. }) => last = reason,
                Err(e) => return Err(e),
            }
        }
        Err(GithubError::Exhausted {
            call,
            attempts: self.max_retries + 1,
            last,
        })
    }

    async fn open_pull(
        &self,
        branch: &str,
    ) -> Result<Option<octocrab::models::pulls::PullRequest>, GithubError> {
        let head = format!("{}:{branch}", self.owner);
        let path = self.repo_path(&format!(
            "pulls?state=open&head={}&per_page={PER_PAGE}",
            encode(&head)
        ));
        let answer = self.send(Verb::Get, &path, None, Repeat::Safe).await?;
        if !answer.ok() {
            return Err(answer.fail());
        }
        let pulls: Vec<octocrab::models::pulls::PullRequest> = answer.json()?;
        Ok(pulls.into_iter().find(|p| p.head.ref_field == branch))
    }

    async fn update_pull(
        &self,
        existing: octocrab::models::pulls::PullRequest,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<PullRequest, GithubError> {
        let number = existing.number;
        let html_url = existing
            .html_url
            .as_ref()
            .map(|u| u.to_string())
            .unwrap_or_default();
        let mut change = serde_json::Map::new();
        if existing.title.as_deref() != Some(title) {
            change.insert("title".into(), json!(title));
        }
        if existing.body.as_deref().unwrap_or("") != body {
            change.insert("body".into(), json!(body));
        }
        if existing.base.ref_field != base {
            change.insert("base".into(), json!(base));
        }
        if !change.is_empty() {
            let path = self.repo_path(&format!("pulls/{number}"));
            let answer = self
                .send(
                    Verb::Patch,
                    &path,
                    Some(&Value::Object(change)),
                    Repeat::Safe,
                )
                .await?;
            if !answer.ok() {
                return Err(answer.fail());
            }
            tracing::info!(github.pull = number, "updated pull request #{number}");
        }
        Ok(PullRequest {
            number,
            html_url,
            created: false,
        })
    }

    /// The wait before retry number `n + 1` after a 5xx or a lost
    /// connection: 500 ms, 1 s, 2 s, … capped by `max_wait`.
    fn backoff(&self, n: u32) -> Duration {
        FIRST_BACKOFF
            .saturating_mul(2u32.saturating_pow(n.min(16)))
            .min(self.max_wait)
    }

    /// Send one request, waiting out rate limits and retrying transient
    /// failures; returns the first answer that is not one of those (4xx
    /// included: the caller knows which ones are fine).
    async fn send(
        &self,
        verb: Verb,
        path: &str,
        body: Option<&Value>,
        repeat: Repeat,
    ) -> Result<Answer, GithubError> {
        let call = format!("{verb} {path}");
        let mut attempt: u32 = 0;
        loop {
            let next = self.attempt(verb, path, body, &call, attempt, repeat).await;
            let (wait, until, last) = match next {
                Next::Done(answer) => return Ok(answer),
                Next::Unclear(reason) => return Err(GithubError::Request { call, reason }),
                Next::Wait { wait, until, last } => (wait, until, last),
            };
            if wait > self.max_wait {
                let until = until.unwrap_or_else(|| now_secs() + wait.as_secs());
                let until_ms = i64::try_from(until.saturating_mul(1000)).unwrap_or(i64::MAX);
                return Err(GithubError::RateLimited {
                    call,
                    until: labforge_builder::state::format_rfc3339(until_ms),
                    max_wait: self.max_wait,
                });
            }
            if attempt >= self.max_retries {
                return Err(GithubError::Exhausted {
                    call,
                    attempts: attempt + 1,
                    last,
                });
            }
            tracing::warn!(
                github.call = %call,
                attempt = attempt + 1,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                reason = %last,
                "GitHub call failed for now; retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        verb: Verb,
        path: &str,
        body: Option<&Value>,
        call: &str,
        attempt: u32,
        repeat: Repeat,
    ) -> Next {
        let result = match verb {
            Verb::Get => self.crab._get(path).await,
            Verb::Post => self.crab._post(path, body).await,
            Verb::Patch => self.crab._patch(path, body).await,
            Verb::Delete => self.crab._delete(path, body).await,
        };
        let answer = match result {
            Ok(response) => {
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let status = response.status().as_u16();
                let remaining = header("x-ratelimit-remaining").and_then(|v| v.parse().ok());
                let reset = header("x-ratelimit-reset").and_then(|v| v.parse().ok());
                let retry_after = header("retry-after").and_then(|v| v.trim().parse().ok());
                let next_page = header("link").is_some_and(|l| l.contains("rel=\"next\""));
                match self.crab.body_to_string(response).await {
                    Ok(body) => Answer {
                        call: call.to_string(),
                        status,
                        remaining,
                        reset,
                        retry_after,
                        next_page,
                        body,
                    },
                    Err(e) => return self.transport(e, attempt, repeat),
                }
            }
            // An App's installation-token request failed inside octocrab:
            // GitHub's answer arrives as an error, with its headers.
            Err(octocrab::Error::GitHub { source, .. }) => {
                let header = |name: &str| {
                    source
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(name))
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                Answer {
                    call: format!("{call} (installation token)"),
                    status: source.status_code.as_u16(),
                    remaining: header("x-ratelimit-remaining").and_then(|v| v.parse().ok()),
                    reset: source.rate_limit_reset,
                    retry_after: header("retry-after").and_then(|v| v.trim().parse().ok()),
                    next_page: false,
                    body: json!({ "message": source.message }).to_string(),
                }
            }
            Err(e) => return self.transport(e, attempt, repeat),
        };
        self.judge(answer, attempt, repeat)
    }

    /// A request that got no answer.
    fn transport(&self, e: octocrab::Error, attempt: u32, repeat: Repeat) -> Next {
        let reason = labforge_core::error_chain(&e);
        let transient = matches!(
            e,
            octocrab::Error::Service { .. } | octocrab::Error::Hyper { .. }
        );
        if !transient || repeat == Repeat::LookFirst {
            return Next::Unclear(reason);
        }
        Next::Wait {
            wait: self.backoff(attempt),
            until: None,
            last: reason,
        }
    }

    fn judge(&self, answer: Answer, attempt: u32, repeat: Repeat) -> Next {
        let status = answer.status;
        let limited = status == 403 || status == 429;
        if limited && answer.remaining == Some(0) {
            let now_ms = now_millis();
            let until = answer.reset.unwrap_or(now_ms / 1000 + 60);
            let wait = Duration::from_millis(until.saturating_mul(1000).saturating_sub(now_ms))
                // The reset is in whole seconds: a little slack avoids
                // arriving just before it.
                + Duration::from_millis(100);
            return Next::Wait {
                wait,
                until: Some(until),
                last: format!("{status}: {}", answer.message()),
            };
        }
        if (limited || status == 503)
            && let Some(seconds) = answer.retry_after
        {
            return Next::Wait {
                wait: Duration::from_secs(seconds),
                until: Some(now_secs() + seconds),
                last: format!("{status}: {}", answer.message()),
            };
        }
        if limited
            && answer
                .message()
                .to_lowercase()
                .contains("secondary rate limit")
        {
            return Next::Wait {
                wait: SECONDARY_DEFAULT_WAIT.max(self.backoff(attempt)),
                until: None,
                last: format!("{status}: {}", answer.message()),
            };
        }
        if status == 429 || status >= 500 {
            let last = format!("{status}: {}", answer.message());
            if repeat == Repeat::LookFirst {
                return Next::Unclear(last);
            }
            return Next::Wait {
                wait: self.backoff(attempt),
                until: None,
                last,
            };
        }
        Next::Done(answer)
    }
}

fn created_comment(answer: &Answer) -> Result<u64, GithubError> {
    if !answer.ok() {
        return Err(answer.fail());
    }
    #[derive(Deserialize)]
    struct Created {
        id: u64,
    }
    Ok(answer.json::<Created>()?.id)
}

/// Percent-encode one path segment or query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn now_secs() -> u64 {
    now_millis() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_owner_slash_name() {
        assert_eq!(
            parse_repo("octo-org/hello.world").ok(),
            Some(("octo-org".into(), "hello.world".into()))
        );
        assert_eq!(
            parse_repo("octo/repo.git").ok(),
            Some(("octo".into(), "repo".into()))
        );
        for bad in [
            "",
            "octo",
            "/repo",
            "octo/",
            "octo/re po",
            "a/b/c",
            "octo/..",
            "ö/x",
        ] {
            assert!(parse_repo(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn permissions_order_by_power() {
        assert!(Permission::Admin.can_write());
        assert!(Permission::Maintain.can_write());
        assert!(Permission::Write.can_write());
        assert!(!Permission::Triage.can_write());
        assert!(!Permission::Read.can_write());
        assert!(!Permission::None.can_write());
        assert_eq!(Permission::parse("maintain"), Some(Permission::Maintain));
        assert_eq!(Permission::parse("security-manager"), None);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("needs review"), "needs%20review");
        assert_eq!(encode("owner:branch/x"), "owner%3Abranch%2Fx");
        assert_eq!(encode("image-request"), "image-request");
    }
}
