//! A fake GitHub REST API for the issue bot's tests, plus the two package
//! indexes the bot asks whether a package exists (PyPI's JSON API and Open
//! VSX).
//!
//! It answers the operations of `tests/fixtures/github/openapi-subset.json`
//! (taken from GitHub's own OpenAPI description) the way GitHub does: the
//! routes and path parameters come from the subset, every request body is
//! validated against the operation's request schema (a 422 with GitHub's
//! "Invalid request" message when it does not conform), answers are the
//! subset's example responses with the fields that matter overwritten from
//! the fake's state, an `Authorization` header is required, lists are paged
//! with `Link` headers, and rate limits look like GitHub's (headers and
//! messages). Anything the bot should never do (an unknown route, a body
//! GitHub would reject, a call without credentials, an unknown query
//! parameter) is recorded in [`FakeGithub::unexpected`], so a test can
//! insist on none.
//!
//! The server runs on a thread of its own with its own tokio runtime, so
//! blocking tests (reqwest::blocking, the `labforge` binary) and async tests
//! can both use it. It stops when the [`FakeGithub`] is dropped.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The operations, schemas and example answers, from `@octokit/openapi`.
const SUBSET: &str = include_str!("../fixtures/github/openapi-subset.json");

/// The login the bot's own comments and pull requests are authored by,
/// unless [`FakeGithub::set_bot_login`] says otherwise (a GitHub App's bot
/// user is `<app slug>[bot]`).
pub const DEFAULT_BOT_LOGIN: &str = "labforge-bot[bot]";

const RATE_LIMIT_DOCS: &str =
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api";

/// A failure the fake answers instead of the next API calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The primary rate limit: 403, `x-ratelimit-remaining: 0`, reset in 1 s.
    RateLimit,
    /// A secondary rate limit: 403 with `retry-after: 1`.
    Secondary,
    /// 502 Bad Gateway (GitHub's usual transient server error).
    ServerError,
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    /// The path as sent (still percent-encoded).
    pub path: String,
    /// The decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// The JSON body, `Null` when there was none.
    pub body: Value,
    /// The `Authorization` header, if any.
    pub auth: Option<String>,
    /// The status the fake answered.
    pub status: u16,
}

impl Call {
    /// `"GET /repos/o/r"`, for assertion messages.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// An issue (or a pull request: on GitHub every pull request is an issue).
#[derive(Debug, Clone, PartialEq)]
pub struct IssueState {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub author: String,
    pub labels: Vec<String>,
    /// `"open"` or `"closed"`.
    pub state: String,
    /// `completed`, `not_planned`, `duplicate`, `reopened` or none.
    pub state_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommentState {
    pub id: u64,
    pub issue: u64,
    pub body: String,
    pub author: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PullState {
    pub number: u64,
    pub title: String,
    /// The head branch name (without the `owner:` prefix).
    pub head: String,
    pub base: String,
    pub body: String,
    /// `"open"` or `"closed"`.
    pub state: String,
    pub merged: bool,
    pub html_url: String,
    pub author: String,
}

/// The fake server. Dropping it stops the server.
pub struct FakeGithub {
    url: String,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeGithub {
    /// Start a fake for the repository `owner/repo` on 127.0.0.1, a free port.
    pub fn start(owner: &str, repo: &str) -> FakeGithub {
        let operations = load_operations();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake GitHub");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("the fake's address")
        );
        let state = Arc::new(Mutex::new(State::new(&url, owner, repo, operations)));
        let shared = Arc::clone(&state);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-github".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the fake's runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let app = axum::Router::new().fallback(handle).with_state(shared);
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                });
            })
            .expect("spawn the fake GitHub thread");
        FakeGithub {
            url,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The API root, e.g. `http://127.0.0.1:41234` (what `api.github.com` is).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The root of the fake PyPI: `<root>/<name>/json`.
    pub fn pypi_url(&self) -> String {
        format!("{}/pypi", self.url)
    }

    /// The root of the fake Open VSX: `<root>/api/<namespace>/<name>`.
    pub fn openvsx_url(&self) -> String {
        format!("{}/openvsx", self.url)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The login that comments and pull requests made through the API are
    /// authored by.
    pub fn set_bot_login(&self, login: &str) {
        self.lock().bot_login = login.to_string();
    }

    pub fn bot_login(&self) -> String {
        self.lock().bot_login.clone()
    }

    /// The repository's default branch (`GET /repos/{owner}/{repo}`), `main`
    /// unless set.
    pub fn set_default_branch(&self, branch: &str) {
        self.lock().default_branch = branch.to_string();
    }

    /// Accept only these tokens (and installation tokens the fake issued);
    /// any other answers 401 "Bad credentials". Without a call to this, any
    /// token is accepted.
    pub fn accept_token(&self, token: &str) {
        self.lock()
            .accepted
            .get_or_insert_with(BTreeSet::new)
            .insert(token.to_string());
    }

    /// Act as GitHub for the App `app_id` installed as `installation_id`:
    /// `POST /app/installations/{installation_id}/access_tokens` with a JWT
    /// issued by the App answers a fresh installation token, and from then
    /// on only issued tokens (and those of [`Self::accept_token`]) are
    /// accepted.
    pub fn set_app(&self, app_id: u64, installation_id: u64) {
        let mut s = self.lock();
        s.app = Some((app_id, installation_id));
        s.accepted.get_or_insert_with(BTreeSet::new);
    }

    /// The installation tokens issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().issued.clone()
    }

    /// The next `n` API calls answer `failure` instead.
    pub fn fail_next(&self, n: usize, failure: Failure) {
        let mut s = self.lock();
        for _ in 0..n {
            s.failures.push_back(failure);
        }
    }

    /// The next `n` calls with this method whose path ends with `suffix`
    /// answer `failure` (to fail one step of a sequence, e.g. only the
    /// `POST` that creates a comment). Checked before [`Self::fail_next`].
    pub fn fail_call(&self, method: &str, suffix: &str, n: usize, failure: Failure) {
        let mut s = self.lock();
        for _ in 0..n {
            s.targeted
                .push((method.to_string(), suffix.to_string(), failure));
        }
    }

    /// `admin`, `maintain`, `write`, `triage`, `read` or `none`. A login
    /// never set is unknown to GitHub (the permission call answers 404).
    pub fn set_permission(&self, login: &str, permission: &str) {
        assert!(
            ["admin", "maintain", "write", "triage", "read", "none"].contains(&permission),
            "not a GitHub repository role: {permission}"
        );
        self.lock()
            .permissions
            .insert(login.to_lowercase(), permission.to_string());
    }

    /// Create (or replace) an open issue.
    pub fn add_issue(&self, number: u64, author: &str, title: &str, body: &str, labels: &[&str]) {
        let mut s = self.lock();
        let now = now_iso();
        s.issues.insert(
            number,
            Issue {
                number,
                title: title.to_string(),
                body: body.to_string(),
                author: author.to_string(),
                labels: labels.iter().map(|l| l.to_string()).collect(),
                state: "open".into(),
                state_reason: None,
                created_at: now.clone(),
                updated_at: now,
                closed_at: None,
                pull: None,
            },
        );
    }

    /// Change an issue's body, as its author editing it on GitHub would.
    pub fn edit_issue(&self, number: u64, body: &str) {
        let mut s = self.lock();
        let issue = s
            .issues
            .get_mut(&number)
            .expect("edit_issue: no such issue");
        issue.body = body.to_string();
        issue.updated_at = now_iso();
    }

    /// A comment by someone other than the bot (a maintainer's `/approve`).
    pub fn add_user_comment(&self, number: u64, author: &str, body: &str) -> u64 {
        let mut s = self.lock();
        assert!(
            s.issues.contains_key(&number),
            "add_user_comment: no issue #{number}"
        );
        s.new_comment(number, author, body)
    }

    pub fn issue(&self, number: u64) -> IssueState {
        let s = self.lock();
        let issue = s.issues.get(&number).expect("issue: no such issue");
        IssueState {
            number,
            title: issue.title.clone(),
            body: issue.body.clone(),
            author: issue.author.clone(),
            labels: issue.labels.clone(),
            state: issue.state.clone(),
            state_reason: issue.state_reason.clone(),
        }
    }

    /// The comments on an issue or pull request, oldest first.
    pub fn comments(&self, number: u64) -> Vec<CommentState> {
        self.lock()
            .comments
            .iter()
            .filter(|c| c.issue == number)
            .map(|c| CommentState {
                id: c.id,
                issue: c.issue,
                body: c.body.clone(),
                author: c.author.clone(),
            })
            .collect()
    }

    pub fn pulls(&self) -> Vec<PullState> {
        let s = self.lock();
        s.issues
            .values()
            .filter_map(|i| {
                let p = i.pull.as_ref()?;
                Some(PullState {
                    number: i.number,
                    title: i.title.clone(),
                    head: p.head.clone(),
                    base: p.base.clone(),
                    body: i.body.clone(),
                    state: i.state.clone(),
                    merged: p.merged_at.is_some(),
                    html_url: s.html_url(&format!("pull/{}", i.number)),
                    author: i.author.clone(),
                })
            })
            .collect()
    }

    /// Mark a pull request merged and closed (the test merges the branch
    /// in git itself).
    pub fn merge_pull(&self, number: u64) {
        let mut s = self.lock();
        let issue = s.issues.get_mut(&number).expect("merge_pull: no such pull");
        let pull = issue.pull.as_mut().expect("merge_pull: not a pull request");
        let now = now_iso();
        pull.merged_at = Some(now.clone());
        issue.state = "closed".into();
        issue.closed_at = Some(now.clone());
        issue.updated_at = now;
    }

    /// A package the fake PyPI knows (`GET /pypi/<name>/json` answers 200).
    pub fn add_pypi(&self, name: &str) {
        self.lock().pypi.insert(pep503(name), name.to_string());
    }

    /// An extension `namespace.name` the fake Open VSX knows.
    pub fn add_openvsx(&self, id: &str) {
        self.lock()
            .openvsx
            .insert(id.to_lowercase(), id.to_string());
    }

    /// Every request received, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The requests GitHub would have refused or that no test should cause.
    pub fn unexpected(&self) -> Vec<Call> {
        self.lock().unexpected.clone()
    }

    /// The calls to GitHub's API (not the package indexes) with this method
    /// whose path ends with `suffix`.
    pub fn calls_to(&self, method: &str, suffix: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.path.ends_with(suffix))
            .collect()
    }
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// State

struct Issue {
    number: u64,
    title: String,
    body: String,
    author: String,
    labels: Vec<String>,
    state: String,
    state_reason: Option<String>,
    created_at: String,
    updated_at: String,
    closed_at: Option<String>,
    pull: Option<Pull>,
}

struct Pull {
    head: String,
    base: String,
    draft: bool,
    merged_at: Option<String>,
}

struct Comment {
    id: u64,
    issue: u64,
    body: String,
    author: String,
    created_at: String,
    updated_at: String,
}

struct Operation {
    method: String,
    segments: Vec<String>,
    id: String,
    integer_params: BTreeSet<String>,
    query: HashMap<String, Value>,
    schema: Option<Value>,
    example: Value,
    docs: String,
}

struct State {
    url: String,
    owner: String,
    repo: String,
    bot_login: String,
    default_branch: String,
    operations: Vec<Operation>,
    issues: BTreeMap<u64, Issue>,
    comments: Vec<Comment>,
    next_comment: u64,
    permissions: HashMap<String, String>,
    repo_labels: BTreeSet<String>,
    pypi: HashMap<String, String>,
    openvsx: HashMap<String, String>,
    accepted: Option<BTreeSet<String>>,
    app: Option<(u64, u64)>,
    issued: Vec<String>,
    failures: VecDeque<Failure>,
    targeted: Vec<(String, String, Failure)>,
    remaining: u64,
    calls: Vec<Call>,
    unexpected: Vec<Call>,
}

/// What one request is answered with.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
    unexpected: bool,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
            unexpected: false,
        }
    }

    fn unexpected(mut self) -> Reply {
        self.unexpected = true;
        self
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

fn error(status: u16, message: &str, docs: &str) -> Reply {
    Reply::json(
        status,
        json!({"message": message, "documentation_url": docs, "status": status.to_string()}),
    )
}

fn not_found(docs: &str) -> Reply {
    error(404, "Not Found", docs)
}

/// The parts of a request the fake looks at.
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    query: BTreeMap<String, String>,
    body: Value,
    raw_body: &'a [u8],
    auth: Option<String>,
}

impl State {
    fn new(url: &str, owner: &str, repo: &str, operations: Vec<Operation>) -> State {
        State {
            url: url.to_string(),
            owner: owner.to_string(),
            repo: repo.to_string(),
            bot_login: DEFAULT_BOT_LOGIN.to_string(),
            default_branch: "main".into(),
            operations,
            issues: BTreeMap::new(),
            comments: Vec::new(),
            next_comment: 1_000_001,
            permissions: HashMap::new(),
            repo_labels: BTreeSet::new(),
            pypi: HashMap::new(),
            openvsx: HashMap::new(),
            accepted: None,
            app: None,
            issued: Vec::new(),
            failures: VecDeque::new(),
            targeted: Vec::new(),
            remaining: 5000,
            calls: Vec::new(),
            unexpected: Vec::new(),
        }
    }

    fn api_url(&self, rest: &str) -> String {
        format!("{}/repos/{}/{}/{rest}", self.url, self.owner, self.repo)
    }

    fn html_url(&self, rest: &str) -> String {
        format!("https://github.com/{}/{}/{rest}", self.owner, self.repo)
    }

    fn new_comment(&mut self, issue: u64, author: &str, body: &str) -> u64 {
        let id = self.next_comment;
        self.next_comment += 1;
        let now = now_iso();
        self.comments.push(Comment {
            id,
            issue,
            body: body.to_string(),
            author: author.to_string(),
            created_at: now.clone(),
            updated_at: now,
        });
        id
    }

    /// Answer one request and record it.
    fn serve(&mut self, request: Request<'_>) -> Reply {
        let mut reply = self.answer(&request);
        if !(request.path.starts_with("/pypi/") || request.path.starts_with("/openvsx/")) {
            self.remaining = self.remaining.saturating_sub(1);
            if !reply
                .headers
                .iter()
                .any(|(n, _)| n == "x-ratelimit-remaining")
            {
                let reset = now_secs() + 3600;
                reply = reply
                    .header("x-ratelimit-limit", "5000")
                    .header("x-ratelimit-remaining", self.remaining.to_string())
                    .header("x-ratelimit-used", (5000 - self.remaining).to_string())
                    .header("x-ratelimit-reset", reset.to_string())
                    .header("x-ratelimit-resource", "core");
            }
            reply = reply.header("x-github-api-version-selected", "2022-11-28");
        }
        let call = Call {
            method: request.method.to_string(),
            path: request.path.to_string(),
            query: request.query.clone(),
            body: request.body.clone(),
            auth: request.auth.clone(),
            status: reply.status,
        };
        if reply.unexpected {
            self.unexpected.push(call.clone());
        }
        self.calls.push(call);
        reply
    }

    fn answer(&mut self, request: &Request<'_>) -> Reply {
        if let Some(reply) = self.package_index(request) {
            return reply;
        }
        if let Some(i) = self.targeted.iter().position(|(m, suffix, _)| {
            m == request.method && request.path.ends_with(suffix.as_str())
        }) {
            return failure_reply(self.targeted.remove(i).2);
        }
        if let Some(failure) = self.failures.pop_front() {
            return failure_reply(failure);
        }
        let Some((index, params)) = self.route(request.method, request.path) else {
            return not_found("https://docs.github.com/rest").unexpected();
        };
        let docs = self.operations[index].docs.clone();
        let id = self.operations[index].id.clone();

        // Credentials first, as GitHub checks them before anything else.
        let Some(auth) = request.auth.as_deref() else {
            return error(401, "Requires authentication", &docs).unexpected();
        };
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("token "))
            .map(str::trim);
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return error(401, "Bad credentials", &docs).unexpected();
        };
        if id == "apps/create-installation-access-token" {
            if let Err(message) = self.check_jwt(token) {
                return error(401, &message, &docs).unexpected();
            }
        } else if let Some(accepted) = &self.accepted
            && !accepted.contains(token)
            && !self.issued.iter().any(|t| t == token)
        {
            return error(401, "Bad credentials", &docs).unexpected();
        }

        // Path parameters: integers must be integers (else GitHub's 404),
        // the repository must be this one.
        let op = &self.operations[index];
        for (name, value) in &params {
            if op.integer_params.contains(name) && value.parse::<u64>().is_err() {
                return not_found(&docs).unexpected();
            }
        }
        if let (Some(owner), Some(repo)) = (params.get("owner"), params.get("repo"))
            && (!owner.eq_ignore_ascii_case(&self.owner) || !repo.eq_ignore_ascii_case(&self.repo))
        {
            return not_found(&docs).unexpected();
        }

        // Query parameters.
        let mut stray = false;
        for (name, value) in &request.query {
            match op.query.get(name) {
                None => stray = true,
                Some(schema) => {
                    let parsed = if schema.get("type").and_then(Value::as_str) == Some("integer") {
                        value
                            .parse::<i64>()
                            .map(Value::from)
                            .unwrap_or(json!(value))
                    } else {
                        json!(value)
                    };
                    let mut errors = Vec::new();
                    validate(schema, &parsed, name, &mut errors);
                    if !errors.is_empty() {
                        return invalid(&errors, &docs);
                    }
                }
            }
        }

        // The body.
        let body = if let Some(schema) = &op.schema {
            if !request.raw_body.is_empty() && request.body.is_null() {
                return error(400, "Problems parsing JSON", &docs).unexpected();
            }
            let body = if request.body.is_null() {
                json!({})
            } else {
                request.body.clone()
            };
            let mut errors = Vec::new();
            validate(schema, &body, "", &mut errors);
            if !errors.is_empty() {
                return invalid(&errors, &docs);
            }
            body
        } else {
            if !request.raw_body.is_empty() {
                stray = true;
            }
            Value::Null
        };

        let reply = self.operation(&id, &params, &request.query, &body, &docs);
        if stray { reply.unexpected() } else { reply }
    }

    /// `GET /pypi/<name>/json` and `GET /openvsx/api/<namespace>/<name>`.
    fn package_index(&self, request: &Request<'_>) -> Option<Reply> {
        let segments: Vec<String> = request
            .path
            .split('/')
            .skip(1)
            .map(percent_decode)
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match segments.as_slice() {
            ["pypi", name, "json"] if request.method == "GET" => {
                Some(match self.pypi.get(&pep503(name)) {
                    Some(known) => Reply::json(
                        200,
                        json!({"info": {"name": known, "version": "1.0.0"}, "releases": {}}),
                    ),
                    None => Reply::json(404, json!({"message": "Not Found"})),
                })
            }
            ["openvsx", "api", namespace, name] if request.method == "GET" => {
                let id = format!("{namespace}.{name}");
                Some(match self.openvsx.get(&id.to_lowercase()) {
                    Some(known) => {
                        let (ns, n) = known.split_once('.').unwrap_or((known, known));
                        Reply::json(200, json!({"namespace": ns, "name": n, "version": "1.0.0"}))
                    }
                    None => {
                        Reply::json(404, json!({"error": format!("Extension not found: {id}")}))
                    }
                })
            }
            ["pypi", ..] | ["openvsx", ..] => {
                Some(Reply::json(404, json!({"message": "Not Found"})).unexpected())
            }
            _ => None,
        }
    }

    /// The operation matching a method and path, with its path parameters
    /// (the most literal template wins).
    fn route(&self, method: &str, path: &str) -> Option<(usize, BTreeMap<String, String>)> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let mut best: Option<(usize, usize, BTreeMap<String, String>)> = None;
        for (index, op) in self.operations.iter().enumerate() {
            if op.method != method || op.segments.len() != segments.len() {
                continue;
            }
            let mut params = BTreeMap::new();
            let mut literal = 0;
            let matched = op.segments.iter().zip(&segments).all(|(template, actual)| {
                if let Some(name) = template.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                    params.insert(name.to_string(), percent_decode(actual));
                    !actual.is_empty()
                } else {
                    literal += 1;
                    template == actual
                }
            });
            if matched && best.as_ref().is_none_or(|(_, l, _)| literal > *l) {
                best = Some((index, literal, params));
            }
        }
        best.map(|(index, _, params)| (index, params))
    }

    fn check_jwt(&self, token: &str) -> Result<(), String> {
        const BAD: &str = "A JSON web token could not be decoded";
        let Some((app_id, _)) = self.app else {
            return Err(BAD.into());
        };
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 3 {
            return Err(BAD.into());
        }
        let header: Value = base64url(parts[0])
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(BAD)?;
        let claims: Value = base64url(parts[1])
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(BAD)?;
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(BAD.into());
        }
        let iss = match claims.get("iss") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(BAD.into()),
        };
        if iss != app_id.to_string() {
            return Err(format!("'Issuer' claim ('iss') must be an Integer: {iss}"));
        }
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        if exp <= now_secs() {
            return Err("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires".into());
        }
        Ok(())
    }

    fn operation(
        &mut self,
        id: &str,
        params: &BTreeMap<String, String>,
        query: &BTreeMap<String, String>,
        body: &Value,
        docs: &str,
    ) -> Reply {
        let number = |name: &str| {
            params
                .get(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match id {
            "repos/get-collaborator-permission-level" => {
                let login = params.get("username").cloned().unwrap_or_default();
                match self.permissions.get(&login.to_lowercase()) {
                    None => not_found(docs),
                    Some(role) => {
                        let legacy = match role.as_str() {
                            "maintain" => "write",
                            "triage" => "read",
                            other => other,
                        };
                        let mut v = self.example(id);
                        v["permission"] = json!(legacy);
                        v["role_name"] = json!(role);
                        user(&mut v["user"], &login);
                        Reply::json(200, v)
                    }
                }
            }
            "issues/list-comments" => {
                let n = number("issue_number");
                if !self.issues.contains_key(&n) {
                    return not_found(docs);
                }
                let items: Vec<Value> = self
                    .comments
                    .iter()
                    .filter(|c| c.issue == n)
                    .map(|c| self.comment_json(c))
                    .collect();
                self.page(&format!("issues/{n}/comments"), query, items)
            }
            "issues/create-comment" => {
                let n = number("issue_number");
                if !self.issues.contains_key(&n) {
                    return not_found(docs);
                }
                let text = body["body"].as_str().unwrap_or_default().to_string();
                let bot = self.bot_login.clone();
                let cid = self.new_comment(n, &bot, &text);
                let v = self.comment_by_id(cid);
                let location = self.api_url(&format!("issues/comments/{cid}"));
                Reply::json(201, v).header("location", location)
            }
            "issues/update-comment" => {
                let cid = number("comment_id");
                let Some(c) = self.comments.iter_mut().find(|c| c.id == cid) else {
                    return not_found(docs);
                };
                c.body = body["body"].as_str().unwrap_or_default().to_string();
                c.updated_at = now_iso();
                Reply::json(200, self.comment_by_id(cid))
            }
            "issues/add-labels" => {
                let n = number("issue_number");
                let names: Vec<String> = body["labels"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|l| {
                                l.as_str()
                                    .or_else(|| l.get("name").and_then(Value::as_str))
                                    .map(str::to_string)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let Some(issue) = self.issues.get_mut(&n) else {
                    return not_found(docs);
                };
                for name in names {
                    if !issue.labels.iter().any(|l| l.eq_ignore_ascii_case(&name)) {
                        issue.labels.push(name.clone());
                    }
                    self.repo_labels.insert(name);
                }
                issue.updated_at = now_iso();
                let labels = issue.labels.clone();
                Reply::json(200, self.labels_json(&labels))
            }
            "issues/remove-label" => {
                let n = number("issue_number");
                let name = params.get("name").cloned().unwrap_or_default();
                let Some(issue) = self.issues.get_mut(&n) else {
                    return not_found(docs);
                };
                let before = issue.labels.len();
                issue.labels.retain(|l| !l.eq_ignore_ascii_case(&name));
                if issue.labels.len() == before {
                    return error(404, "Label does not exist", docs);
                }
                issue.updated_at = now_iso();
                let labels = issue.labels.clone();
                Reply::json(200, self.labels_json(&labels))
            }
            "issues/update" => {
                let n = number("issue_number");
                let Some(issue) = self.issues.get_mut(&n) else {
                    return not_found(docs);
                };
                apply_issue_update(issue, body);
                Reply::json(200, self.issue_json(n))
            }
            "pulls/list" => {
                let state = query.get("state").map(String::as_str).unwrap_or("open");
                // GitHub filters by head only in the `user:ref` form.
                let head = query.get("head").and_then(|h| h.split_once(':'));
                let base = query.get("base");
                let mut numbers: Vec<u64> = self
                    .issues
                    .values()
                    .filter(|i| {
                        let Some(p) = &i.pull else { return false };
                        (state == "all" || i.state == state)
                            && head.is_none_or(|(owner, branch)| {
                                owner.eq_ignore_ascii_case(&self.owner) && p.head == branch
                            })
                            && base.is_none_or(|b| &p.base == b)
                    })
                    .map(|i| i.number)
                    .collect();
                // Default order: newest first.
                if query.get("direction").map(String::as_str) != Some("asc") {
                    numbers.reverse();
                }
                let items = numbers.iter().map(|n| self.pull_json(*n, true)).collect();
                self.page("pulls", query, items)
            }
            "pulls/create" => {
                let head = body["head"].as_str().unwrap_or_default();
                let head = match head.split_once(':') {
                    Some((owner, branch)) if owner.eq_ignore_ascii_case(&self.owner) => branch,
                    Some(_) => {
                        return validation_failed(
                            docs,
                            json!({"resource": "PullRequest", "field": "head", "code": "invalid"}),
                        );
                    }
                    None => head,
                }
                .to_string();
                let base = body["base"].as_str().unwrap_or_default().to_string();
                let Some(title) = body["title"].as_str().map(str::to_string) else {
                    return validation_failed(
                        docs,
                        json!({"resource": "PullRequest", "field": "title", "code": "missing_field"}),
                    );
                };
                if head == base {
                    return validation_failed(
                        docs,
                        json!({"resource": "PullRequest", "code": "custom", "message": format!("No commits between {base} and {head}")}),
                    );
                }
                let exists = self.issues.values().any(|i| {
                    i.state == "open"
                        && i.pull
                            .as_ref()
                            .is_some_and(|p| p.head == head && p.base == base)
                });
                if exists {
                    let message =
                        format!("A pull request already exists for {}:{head}.", self.owner);
                    return validation_failed(
                        docs,
                        json!({"resource": "PullRequest", "code": "custom", "message": message}),
                    );
                }
                let n = self.issues.keys().max().copied().unwrap_or(0) + 1;
                let now = now_iso();
                self.issues.insert(
                    n,
                    Issue {
                        number: n,
                        title,
                        body: body["body"].as_str().unwrap_or_default().to_string(),
                        author: self.bot_login.clone(),
                        labels: Vec::new(),
                        state: "open".into(),
                        state_reason: None,
                        created_at: now.clone(),
                        updated_at: now,
                        closed_at: None,
                        pull: Some(Pull {
                            head,
                            base,
                            draft: body["draft"].as_bool().unwrap_or(false),
                            merged_at: None,
                        }),
                    },
                );
                let location = self.api_url(&format!("pulls/{n}"));
                Reply::json(201, self.pull_json(n, false)).header("location", location)
            }
            "pulls/update" => {
                let n = number("pull_number");
                let Some(issue) = self.issues.get_mut(&n).filter(|i| i.pull.is_some()) else {
                    return not_found(docs);
                };
                if let Some(t) = body["title"].as_str() {
                    issue.title = t.to_string();
                }
                if let Some(b) = body["body"].as_str() {
                    issue.body = b.to_string();
                }
                if let Some(s) = body["state"].as_str() {
                    issue.state = s.to_string();
                    issue.closed_at = (s == "closed").then(now_iso);
                }
                if let (Some(b), Some(pull)) = (body["base"].as_str(), issue.pull.as_mut()) {
                    pull.base = b.to_string();
                }
                issue.updated_at = now_iso();
                Reply::json(200, self.pull_json(n, false))
            }
            "repos/get" => {
                let mut v = self.example(id);
                v["name"] = json!(self.repo);
                v["full_name"] = json!(format!("{}/{}", self.owner, self.repo));
                user(&mut v["owner"], &self.owner);
                v["html_url"] = json!(self.html_url("").trim_end_matches('/'));
                v["url"] = json!(format!("{}/repos/{}/{}", self.url, self.owner, self.repo));
                v["clone_url"] = json!(format!("{}.git", self.html_url("").trim_end_matches('/')));
                v["default_branch"] = json!(self.default_branch);
                Reply::json(200, v)
            }
            "apps/create-installation-access-token" => {
                let installation = number("installation_id");
                if self.app.is_none_or(|(_, i)| i != installation) {
                    return not_found(docs);
                }
                let token = format!("ghs_fake{:032}", self.issued.len() + 1);
                self.issued.push(token.clone());
                let mut v = self.example(id);
                v["token"] = json!(token);
                v["expires_at"] = json!(iso(now_secs() + 3600));
                if let Some(o) = v.as_object_mut() {
                    o.remove("repositories");
                }
                v["repository_selection"] = json!("all");
                Reply::json(201, v)
            }
            other => error(501, &format!("the fake does not implement {other}"), docs).unexpected(),
        }
    }

    fn example(&self, id: &str) -> Value {
        let v = self
            .operations
            .iter()
            .find(|o| o.id == id)
            .map(|o| o.example.clone())
            .unwrap_or(Value::Null);
        // List operations have a list of examples: their first item is the shape.
        match v {
            Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
            other => other,
        }
    }

    fn comment_by_id(&self, id: u64) -> Value {
        self.comments
            .iter()
            .find(|c| c.id == id)
            .map(|c| self.comment_json(c))
            .unwrap_or(Value::Null)
    }

    fn comment_json(&self, c: &Comment) -> Value {
        let mut v = self.example("issues/list-comments");
        v["id"] = json!(c.id);
        v["node_id"] = json!(format!("IC_kwFake{}", c.id));
        v["url"] = json!(self.api_url(&format!("issues/comments/{}", c.id)));
        v["html_url"] = json!(self.html_url(&format!("issues/{}#issuecomment-{}", c.issue, c.id)));
        v["issue_url"] = json!(self.api_url(&format!("issues/{}", c.issue)));
        v["body"] = json!(c.body);
        v["created_at"] = json!(c.created_at);
        v["updated_at"] = json!(c.updated_at);
        v["author_association"] = json!(if c.author == self.bot_login {
            "NONE"
        } else {
            "CONTRIBUTOR"
        });
        user(&mut v["user"], &c.author);
        if c.author.ends_with("[bot]") {
            v["user"]["type"] = json!("Bot");
        }
        v
    }

    fn labels_json(&self, names: &[String]) -> Value {
        let shape = self.example("issues/add-labels");
        Value::Array(
            names
                .iter()
                .map(|name| {
                    let mut v = shape.clone();
                    let id = 300_000_000 + (fnv(name) % 100_000_000);
                    v["id"] = json!(id);
                    v["node_id"] = json!(format!("LA_kwFake{id}"));
                    v["url"] = json!(self.api_url(&format!("labels/{}", percent_encode(name))));
                    v["name"] = json!(name);
                    v["description"] = Value::Null;
                    v["color"] = json!("ededed");
                    v["default"] = json!(false);
                    v
                })
                .collect(),
        )
    }

    fn issue_json(&self, n: u64) -> Value {
        let Some(issue) = self.issues.get(&n) else {
            return Value::Null;
        };
        let mut v = self.example("issues/update");
        v["id"] = json!(500_000_000 + n);
        v["node_id"] = json!(format!("I_kwFake{n}"));
        v["number"] = json!(n);
        v["url"] = json!(self.api_url(&format!("issues/{n}")));
        v["repository_url"] = json!(format!("{}/repos/{}/{}", self.url, self.owner, self.repo));
        v["labels_url"] = json!(self.api_url(&format!("issues/{n}/labels{{/name}}")));
        v["comments_url"] = json!(self.api_url(&format!("issues/{n}/comments")));
        v["events_url"] = json!(self.api_url(&format!("issues/{n}/events")));
        v["html_url"] = json!(self.html_url(&format!("issues/{n}")));
        v["title"] = json!(issue.title);
        v["body"] = json!(issue.body);
        v["state"] = json!(issue.state);
        v["state_reason"] = json!(issue.state_reason);
        v["labels"] = self.labels_json(&issue.labels);
        v["locked"] = json!(false);
        v["active_lock_reason"] = Value::Null;
        v["comments"] = json!(self.comments.iter().filter(|c| c.issue == n).count());
        v["created_at"] = json!(issue.created_at);
        v["updated_at"] = json!(issue.updated_at);
        v["closed_at"] = json!(issue.closed_at);
        v["closed_by"] = Value::Null;
        v["assignee"] = Value::Null;
        v["assignees"] = json!([]);
        v["milestone"] = Value::Null;
        user(&mut v["user"], &issue.author);
        if let Some(o) = v.as_object_mut() {
            o.remove("pull_request");
        }
        v
    }

    fn pull_json(&self, n: u64, simple: bool) -> Value {
        let Some(issue) = self.issues.get(&n) else {
            return Value::Null;
        };
        let Some(pull) = &issue.pull else {
            return Value::Null;
        };
        let mut v = self.example(if simple { "pulls/list" } else { "pulls/create" });
        let api = self.api_url(&format!("pulls/{n}"));
        let html = self.html_url(&format!("pull/{n}"));
        let issue_api = self.api_url(&format!("issues/{n}"));
        v["id"] = json!(700_000_000 + n);
        v["node_id"] = json!(format!("PR_kwFake{n}"));
        v["number"] = json!(n);
        v["url"] = json!(api);
        v["html_url"] = json!(html);
        v["diff_url"] = json!(format!("{html}.diff"));
        v["patch_url"] = json!(format!("{html}.patch"));
        v["issue_url"] = json!(issue_api);
        v["commits_url"] = json!(format!("{api}/commits"));
        v["review_comments_url"] = json!(format!("{api}/comments"));
        v["comments_url"] = json!(format!("{issue_api}/comments"));
        v["title"] = json!(issue.title);
        v["body"] = json!(issue.body);
        v["state"] = json!(issue.state);
        v["locked"] = json!(false);
        v["active_lock_reason"] = Value::Null;
        v["draft"] = json!(pull.draft);
        v["labels"] = self.labels_json(&issue.labels);
        v["created_at"] = json!(issue.created_at);
        v["updated_at"] = json!(issue.updated_at);
        v["closed_at"] = json!(issue.closed_at);
        v["merged_at"] = json!(pull.merged_at);
        v["assignee"] = Value::Null;
        v["assignees"] = json!([]);
        v["requested_reviewers"] = json!([]);
        v["requested_teams"] = json!([]);
        v["milestone"] = Value::Null;
        user(&mut v["user"], &issue.author);
        for (side, branch) in [("head", &pull.head), ("base", &pull.base)] {
            v[side]["ref"] = json!(branch);
            v[side]["label"] = json!(format!("{}:{branch}", self.owner));
            user(&mut v[side]["user"], &self.owner);
            v[side]["repo"]["name"] = json!(self.repo);
            v[side]["repo"]["full_name"] = json!(format!("{}/{}", self.owner, self.repo));
            user(&mut v[side]["repo"]["owner"], &self.owner);
        }
        v["_links"]["self"]["href"] = json!(api);
        v["_links"]["html"]["href"] = json!(html);
        v["_links"]["issue"]["href"] = json!(issue_api);
        v["_links"]["comments"]["href"] = json!(format!("{issue_api}/comments"));
        v["_links"]["commits"]["href"] = json!(format!("{api}/commits"));
        if !simple {
            v["merged"] = json!(pull.merged_at.is_some());
            v["comments"] = json!(self.comments.iter().filter(|c| c.issue == n).count());
            v["merged_by"] = Value::Null;
        }
        v
    }

    /// One page of a list, with GitHub's `Link` header.
    fn page(&self, rest: &str, query: &BTreeMap<String, String>, items: Vec<Value>) -> Reply {
        let per_page = query
            .get("per_page")
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(30)
            .clamp(1, 100);
        let page = query
            .get("page")
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        let last = items.len().div_ceil(per_page).max(1);
        let start = (page - 1).saturating_mul(per_page).min(items.len());
        let end = (start + per_page).min(items.len());
        let body = Value::Array(items[start..end].to_vec());
        let link_to = |p: usize| {
            let mut q = query.clone();
            q.insert("per_page".into(), per_page.to_string());
            q.insert("page".into(), p.to_string());
            let qs: Vec<String> = q
                .iter()
                .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
                .collect();
            format!("<{}?{}>", self.api_url(rest), qs.join("&"))
        };
        let mut links = Vec::new();
        if page > 1 {
            links.push(format!("{}; rel=\"prev\"", link_to(page - 1)));
        }
        if page < last {
            links.push(format!("{}; rel=\"next\"", link_to(page + 1)));
            links.push(format!("{}; rel=\"last\"", link_to(last)));
        }
        if page > 1 {
            links.push(format!("{}; rel=\"first\"", link_to(1)));
        }
        let reply = Reply::json(200, body);
        if links.is_empty() {
            reply
        } else {
            reply.header("link", links.join(", "))
        }
    }
}

fn apply_issue_update(issue: &mut Issue, body: &Value) {
    if let Some(t) = body.get("title").and_then(|t| {
        t.as_str()
            .map(str::to_string)
            .or_else(|| t.as_i64().map(|n| n.to_string()))
    }) {
        issue.title = t;
    }
    if let Some(b) = body.get("body") {
        issue.body = b.as_str().unwrap_or_default().to_string();
    }
    if let Some(labels) = body.get("labels").and_then(Value::as_array) {
        issue.labels = labels
            .iter()
            .filter_map(|l| l.as_str().or_else(|| l.get("name").and_then(Value::as_str)))
            .map(str::to_string)
            .collect();
    }
    if let Some(state) = body.get("state").and_then(Value::as_str) {
        let reason = body.get("state_reason").and_then(Value::as_str);
        if state == "closed" && issue.state != "closed" {
            issue.closed_at = Some(now_iso());
            issue.state_reason = Some(reason.unwrap_or("completed").to_string());
        } else if state == "closed" {
            if let Some(r) = reason {
                issue.state_reason = Some(r.to_string());
            }
        } else if issue.state == "closed" {
            issue.closed_at = None;
            issue.state_reason = Some("reopened".into());
        }
        issue.state = state.to_string();
    }
    issue.updated_at = now_iso();
}

fn failure_reply(failure: Failure) -> Reply {
    match failure {
        Failure::RateLimit => Reply::json(
            403,
            json!({
                "message": "API rate limit exceeded for installation ID 1. If you reach out to GitHub Support for help, please include the request ID 0000:0000:0000000:0000000:00000000.",
                "documentation_url": RATE_LIMIT_DOCS,
                "status": "403",
            }),
        )
        .header("x-ratelimit-limit", "5000")
        .header("x-ratelimit-remaining", "0")
        .header("x-ratelimit-used", "5000")
        .header("x-ratelimit-reset", (now_secs() + 1).to_string())
        .header("x-ratelimit-resource", "core"),
        Failure::Secondary => Reply::json(
            403,
            json!({
                "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID 0000:0000:0000000:0000000:00000000.",
                "documentation_url": RATE_LIMIT_DOCS,
                "status": "403",
            }),
        )
        .header("retry-after", "1"),
        Failure::ServerError => Reply::json(502, json!({"message": "Server Error"})),
    }
}

fn invalid(errors: &[String], docs: &str) -> Reply {
    error(
        422,
        &format!("Invalid request.\n\n{}", errors.join("\n")),
        docs,
    )
    .unexpected()
}

fn validation_failed(docs: &str, detail: Value) -> Reply {
    Reply::json(
        422,
        json!({"message": "Validation Failed", "errors": [detail], "documentation_url": docs, "status": "422"}),
    )
}

/// Overwrite the login (and the URLs derived from it) of a user object.
fn user(v: &mut Value, login: &str) {
    if !v.is_object() {
        *v = json!({});
    }
    v["login"] = json!(login);
    v["id"] = json!(100_000 + fnv(login) % 1_000_000);
    v["url"] = json!(format!("https://api.github.com/users/{login}"));
    v["html_url"] = json!(format!("https://github.com/{login}"));
    v["type"] = json!(if login.ends_with("[bot]") {
        "Bot"
    } else {
        "User"
    });
}

// ---------------------------------------------------------------------------
// The HTTP side

async fn handle(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<State>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = uri.query().map(parse_query).unwrap_or_default();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let json_body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let reply = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.serve(Request {
            method: method.as_str(),
            path: uri.path(),
            query,
            body: json_body,
            raw_body: &body,
            auth,
        })
    };
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [("content-type", "application/json; charset=utf-8")],
        reply.body.to_string(),
    )
        .into_response();
    for (name, value) in reply.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    response
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The OpenAPI subset and the schema validator

fn load_operations() -> Vec<Operation> {
    let subset: Value = serde_json::from_str(SUBSET).expect("openapi-subset.json is JSON");
    let operations = subset["operations"]
        .as_array()
        .expect("openapi-subset.json has operations");
    operations
        .iter()
        .map(|op| {
            let path = op["path"].as_str().expect("operation path");
            let params = |key: &str| -> Vec<(String, Value)> {
                op[key]
                    .as_array()
                    .expect("parameter list")
                    .iter()
                    .map(|p| {
                        (
                            p["name"].as_str().expect("parameter name").to_string(),
                            p["schema"].clone(),
                        )
                    })
                    .collect()
            };
            let schema = match &op["request_schema"] {
                Value::Null => None,
                s => Some(s.clone()),
            };
            for (_, s) in params("path_parameters")
                .iter()
                .chain(params("query_parameters").iter())
            {
                check_keywords(s);
            }
            if let Some(s) = &schema {
                check_keywords(s);
            }
            Operation {
                method: op["method"].as_str().expect("method").to_string(),
                segments: path.split('/').skip(1).map(str::to_string).collect(),
                id: op["operation_id"]
                    .as_str()
                    .expect("operation id")
                    .to_string(),
                integer_params: params("path_parameters")
                    .into_iter()
                    .filter(|(_, s)| s["type"] == "integer")
                    .map(|(n, _)| n)
                    .collect(),
                query: params("query_parameters").into_iter().collect(),
                schema,
                example: op["response_example"].clone(),
                docs: op["documentation_url"]
                    .as_str()
                    .unwrap_or("https://docs.github.com/rest")
                    .to_string(),
            }
        })
        .collect()
}

/// The JSON-schema keywords the validator understands. `format` and
/// `default` are accepted and not checked.
const KEYWORDS: &[&str] = &[
    "type",
    "nullable",
    "required",
    "properties",
    "additionalProperties",
    "enum",
    "items",
    "minItems",
    "maxItems",
    "oneOf",
    "anyOf",
    "format",
    "default",
];

/// Refuse a subset that uses a keyword the validator would silently ignore.
fn check_keywords(schema: &Value) {
    let Some(object) = schema.as_object() else {
        return;
    };
    for (key, value) in object {
        assert!(
            KEYWORDS.contains(&key.as_str()),
            "openapi-subset.json uses the schema keyword {key:?} that the fake does not check"
        );
        match key.as_str() {
            "properties" => value
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
                .for_each(check_keywords),
            "items" | "additionalProperties" => check_keywords(value),
            "oneOf" | "anyOf" => value
                .as_array()
                .into_iter()
                .flatten()
                .for_each(check_keywords),
            _ => {}
        }
    }
}

/// Validate `value` against `schema`, adding GitHub-style messages
/// ("For 'properties/labels', "x" is not an array.") to `errors`.
pub fn validate(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        return;
    };
    let prefix = if at.is_empty() {
        String::new()
    } else {
        format!("For '{at}', ")
    };
    if value.is_null() && s.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    for (keyword, exactly_one) in [("oneOf", true), ("anyOf", false)] {
        let Some(alternatives) = s.get(keyword).and_then(Value::as_array) else {
            continue;
        };
        let results: Vec<Vec<String>> = alternatives
            .iter()
            .map(|a| {
                let mut e = Vec::new();
                validate(a, value, at, &mut e);
                e
            })
            .collect();
        let matching = results.iter().filter(|e| e.is_empty()).count();
        if matching == 0 && results.len() == 1 {
            errors.extend(results.into_iter().flatten());
        } else if matching == 0 {
            errors.push(format!(
                "{prefix}{} does not match any of the allowed shapes ({}).",
                show(value),
                results.concat().join(" ")
            ));
        } else if exactly_one && matching > 1 {
            errors.push(format!(
                "{prefix}{} matches more than one allowed shape.",
                show(value)
            ));
        }
    }
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => true,
        };
        if !ok {
            let article = if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            errors.push(format!("{prefix}{} is not {article} {t}.", show(value)));
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(show).collect();
        errors.push(format!(
            "{prefix}{} is not a member of [{}].",
            show(value),
            list.join(", ")
        ));
    }
    if let Some(object) = value.as_object() {
        for name in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = name.as_str()
                && !object.contains_key(name)
            {
                errors.push(format!("\"{name}\" wasn't supplied."));
            }
        }
        let properties = s.get("properties").and_then(Value::as_object);
        for (key, item) in object {
            let here = if at.is_empty() {
                format!("properties/{key}")
            } else {
                format!("{at}/properties/{key}")
            };
            match (
                properties.and_then(|p| p.get(key)),
                s.get("additionalProperties"),
            ) {
                (Some(p), _) => validate(p, item, &here, errors),
                (None, Some(Value::Bool(false))) => {
                    errors.push(format!("{prefix}\"{key}\" is not a permitted key."));
                }
                (None, Some(extra)) if extra.is_object() => validate(extra, item, &here, errors),
                (None, _) => {}
            }
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(min) = s.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            errors.push(format!(
                "{prefix}{} has fewer than {min} items.",
                show(value)
            ));
        }
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
            && (items.len() as u64) > max
        {
            errors.push(format!(
                "{prefix}{} has more than {max} items.",
                show(value)
            ));
        }
        if let Some(item_schema) = s.get("items") {
            let here = if at.is_empty() {
                "items".to_string()
            } else {
                format!("{at}/items")
            };
            for item in items {
                validate(item_schema, item, &here, errors);
            }
        }
    }
}

fn show(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

// ---------------------------------------------------------------------------
// Small helpers (no extra dependencies)

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now_iso() -> String {
    iso(now_secs())
}

/// `2024-05-01T12:00:00Z` from Unix seconds.
fn iso(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// PEP 503 name normalisation.
fn pep503(name: &str) -> String {
    let mut out = String::new();
    let mut separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            separator = true;
        } else {
            if separator && !out.is_empty() {
                out.push('-');
            }
            separator = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn base64url(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}
