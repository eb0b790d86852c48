//! The GitHub client against the fake GitHub server: every call the bot
//! makes, its idempotence (one comment per kind, one pull request per
//! branch), rate limits and server errors waited out, and the fake's own
//! faithfulness (it refuses what GitHub would refuse).

#[path = "../../tests/common/fake_github.rs"]
mod fake_github;

use std::time::{Duration, Instant};

use fake_github::{Failure, FakeGithub};
use labforge_hub::github::{
    AppCredentials, Github, GithubConfig, GithubError, Permission, SecretString, parse_repo,
};
use serde_json::{Value, json};

const OWNER: &str = "uni-lab";
const REPO: &str = "images";
const TOKEN: &str = "ghp_testtoken";

fn config(fake: &FakeGithub) -> GithubConfig {
    GithubConfig {
        api_url: fake.url(),
        token: Some(SecretString::from(TOKEN)),
        app: None,
        owner: OWNER.into(),
        repo: REPO.into(),
        bot_login: fake.bot_login(),
        max_retries: 3,
        max_wait: Duration::from_secs(10),
    }
}

fn client(fake: &FakeGithub) -> Github {
    Github::new(config(fake)).expect("client")
}

fn marked(kind: &str, text: &str) -> String {
    format!("<!-- labforge:{kind} -->\n{text}")
}

fn assert_no_unexpected(fake: &FakeGithub) {
    let unexpected = fake.unexpected();
    assert!(
        unexpected.is_empty(),
        "calls GitHub would refuse: {:#?}",
        unexpected
    );
}

fn statuses(fake: &FakeGithub, method: &str, suffix: &str) -> Vec<u16> {
    fake.calls_to(method, suffix)
        .iter()
        .map(|c| c.status)
        .collect()
}

fn issue_path(rest: &str) -> String {
    format!("/repos/{OWNER}/{REPO}/{rest}")
}

#[tokio::test]
async fn permission_reads_the_role_and_unknown_logins_have_none() {
    let fake = FakeGithub::start(OWNER, REPO);
    for (login, role) in [
        ("ada", "admin"),
        ("max", "maintain"),
        ("wes", "write"),
        ("tri", "triage"),
        ("rea", "read"),
        ("nob", "none"),
    ] {
        fake.set_permission(login, role);
    }
    let gh = client(&fake);
    let cases = [
        ("ada", Permission::Admin),
        // The legacy `permission` field says "write"/"read" for these two:
        // the role name is what tells them apart.
        ("max", Permission::Maintain),
        ("wes", Permission::Write),
        ("tri", Permission::Triage),
        ("rea", Permission::Read),
        ("nob", Permission::None),
        ("stranger", Permission::None),
    ];
    for (login, expected) in cases {
        assert_eq!(
            gh.permission(login).await.expect("permission"),
            expected,
            "{login}"
        );
    }
    let calls = fake.calls_to("GET", "/permission");
    assert_eq!(calls.len(), cases.len());
    assert_eq!(calls[6].status, 404, "the unknown login is GitHub's 404");
    assert!(
        calls
            .iter()
            .all(|c| c.auth.as_deref() == Some(&format!("Bearer {TOKEN}") as &str)),
        "every call carries the token: {calls:#?}"
    );
    assert_no_unexpected(&fake);
}

#[tokio::test]
async fn comments_reads_every_page_in_order() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.add_issue(7, "alice", "Request", "body", &[]);
    for i in 0..205 {
        fake.add_user_comment(
            7,
            if i % 2 == 0 { "alice" } else { "bob" },
            &format!("c{i}"),
        );
    }
    let comments = client(&fake).comments(7).await.expect("comments");
    assert_eq!(comments.len(), 205);
    let bodies: Vec<String> = comments.iter().map(|c| c.body.clone()).collect();
    let expected: Vec<String> = (0..205).map(|i| format!("c{i}")).collect();
    assert_eq!(bodies, expected);
    assert_eq!(comments[1].user, "bob");
    assert!(comments.windows(2).all(|w| w[0].id < w[1].id));
    let pages: Vec<String> = fake
        .calls_to("GET", "/issues/7/comments")
        .iter()
        .map(|c| format!("{}/{}", c.query["page"], c.query["per_page"]))
        .collect();
    assert_eq!(pages, ["1/100", "2/100", "3/100"]);
    assert_no_unexpected(&fake);
}

#[tokio::test]
async fn comments_of_a_missing_issue_is_an_error_naming_the_call() {
    let fake = FakeGithub::start(OWNER, REPO);
    let err = client(&fake).comments(99).await.expect_err("no issue 99");
    let text = err.to_string();
    assert!(
        matches!(err, GithubError::Status { status: 404, .. }),
        "{text}"
    );
    assert!(
        text.contains("GET /repos/uni-lab/images/issues/99/comments"),
        "{text}"
    );
}

#[tokio::test]
async fn upsert_keeps_one_comment_per_kind() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.add_issue(12, "alice", "Request", "body", &[]);
    // A user quoting the marker must not make the bot edit their comment.
    let planted = fake.add_user_comment(12, "mallory", &marked("request", "fake preview"));
    let gh = client(&fake);

    let first = gh
        .upsert_comment(12, "request", &marked("request", "preview v1"), None)
        .await
        .expect("first upsert");
    assert_ne!(first, planted);
    // The same text again: nothing to change, nothing written.
    let again = gh
        .upsert_comment(12, "request", &marked("request", "preview v1"), None)
        .await
        .expect("same upsert");
    assert_eq!(again, first);
    assert!(
        fake.calls_to("PATCH", &format!("/comments/{first}"))
            .is_empty()
    );
    // New text: the comment is edited in place.
    let edited = gh
        .upsert_comment(12, "request", &marked("request", "preview v2"), None)
        .await
        .expect("edit upsert");
    assert_eq!(edited, first);
    // Another kind is another comment.
    let result = gh
        .upsert_comment(12, "result", &marked("result", "published"), None)
        .await
        .expect("result upsert");
    assert_ne!(result, first);

    let comments = fake.comments(12);
    let bot: Vec<_> = comments
        .iter()
        .filter(|c| c.author == fake.bot_login())
        .collect();
    assert_eq!(bot.len(), 2, "{comments:#?}");
    assert_eq!(bot[0].body, marked("request", "preview v2"));
    assert_eq!(bot[1].body, marked("result", "published"));
    let planted_now = comments.iter().find(|c| c.id == planted).expect("planted");
    assert_eq!(planted_now.body, marked("request", "fake preview"));
    assert_eq!(fake.calls_to("POST", "/issues/12/comments").len(), 2);
    assert_eq!(
        fake.calls_to("PATCH", &format!("/comments/{first}")).len(),
        1
    );
    assert_no_unexpected(&fake);
}

#[tokio::test]
async fn upsert_with_a_known_id_edits_it_without_listing() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.add_issue(3, "alice", "Request", "body", &[]);
    let gh = client(&fake);
    let id = gh
        .upsert_comment(3, "request", &marked("request", "v1"), None)
        .await
        .expect("post");
    let lists_before = fake.calls_to("GET", "/issues/3/comments").len();
    let same = gh
        .upsert_comment(3, "request", &marked("request", "v2"), Some(id))
        .await
        .expect("edit known");
    assert_eq!(same, id);
    assert_eq!(
        fake.calls_to("GET", "/issues/3/comments").len(),
        lists_before,
        "a known comment is edited directly"
    );
    assert_eq!(fake.comments(3)[0].body, marked("request", "v2"));

    // A stale id (the comment was deleted): found again by its marker.
    let found = gh
        .upsert_comment(3, "request", &marked("request", "v3"), Some(987_654))
        .await
        .expect("stale id");
    assert_eq!(found, id);
    assert_eq!(fake.comments(3).len(), 1);
    assert_eq!(fake.comments(3)[0].body, marked("request", "v3"));
    assert_eq!(statuses(&fake, "PATCH", "/comments/987654"), [404]);
    assert_no_unexpected(&fake);
}

#[tokio::test]
async fn upsert_refuses_a_body_without_its_marker() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.add_issue(3, "alice", "Request", "body", &[]);
    let err = client(&fake)
        .upsert_comment(3, "request", &marked("result", "wrong kind"), None)
        .await
        .expect_err("marker of another kind");
    assert!(matches!(err, GithubError::Marker { .. }), "{err}");
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn a_failed_comment_post_is_not_repeated_blindly() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.add_issue(5, "alice", "Request", "body", &[]);
    fake.fail_call("POST", "/issues/5/comments", 1, Failure::ServerError);
    let id = client(&fake)
        .upsert_comment(5, "request", &marked("request", "hello"), None)
        .await
        .expect("upsert after a 502");
    let lines: Vec<String> = fake
        .calls()
        .iter()
        .map(|c| format!("{} {}", c.method, c.status))
        .collect();
    // List, post (502), list again (nothing there), post.
    assert_eq!(lines, ["GET 200", "POST 502", "GET 200", "POST 201"]);
    assert_eq!(fake.comments(5).len(), 1);
    assert_eq!(fake.comments(5)[0].id, id);
    assert_no_unexpected(&fake);
}

#[tokio::test]
async fn add_comment_posts_as_the_bot() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.add_issue(4, "alice", "Request", "body", &[]);
    let id = client(&fake).add_comment(4, "note").await.expect("comment");
    let comments = fake.comments(4);
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].id, id);
    assert_eq!(comments[0].body, "note");
    assert_eq!(comments[0].author, fake.bot_login());
    assert_eq!(
        fake.calls_to("POST", "/issues/4/comments")[0].body,
        json!({"body": "note"})
    );
    assert_no_unexpected(&fake);
}

#[tokio::test]
async fn set_labels_adds_and_removes_and_tolerates_missing_ones() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.add_issue(8, "alice", "Request", "body", &["image-request"]);
    let gh = client(&fake);
    gh.set_labels(8, &["needs review", "gpu"], &["approved"])
        .await
        .expect("add");
    assert_eq!(
        fake.issue(8).labels,
        ["image-request", "needs review", "gpu"]
    );
    // `approved` was not there (the POST answer said so): no DELETE.
    assert!(fake.calls_to("DELETE", "/labels/approved").is_empty());
    assert_eq!(
        fake.calls_to("POST", "/issues/8/labels")[0].body,
        json!({"labels": ["needs review", "gpu"]})
    );

    gh.set_labels(8, &[], &["needs review", "never-there"])
        .await
        .expect("remove");
    assert_eq!(fake.issue(8).labels, ["image-request", "gpu"]);
    assert_eq!(statuses(&fake, "DELETE", "/labels/needs%20review"), [200]);
    assert_eq!(statuses(&fake, "DELETE", "/labels/never-there"), [404]);
    assert_no_unexpected(&fake);
}

#[tokio::test]
async fn close_issue_sets_the_reason() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.add_issue(9, "alice", "Request", "body", &[]);
    fake.add_issue(10, "alice", "Request", "body", &[]);
    let gh = client(&fake);
    gh.close_issue(9, "not_planned").await.expect("close");
    gh.close_issue(10, "completed").await.expect("close");
    assert_eq!(fake.issue(9).state, "closed");
    assert_eq!(fake.issue(9).state_reason.as_deref(), Some("not_planned"));
    assert_eq!(fake.issue(10).state_reason.as_deref(), Some("completed"));
    let err = gh.close_issue(9, "wontfix").await.expect_err("bad reason");
    assert!(matches!(err, GithubError::CloseReason(_)), "{err}");
    assert_eq!(
        fake.calls().len(),
        2,
        "a bad reason is refused before any call"
    );
    assert_no_unexpected(&fake);
}

#[tokio::test]
async fn open_or_update_pr_reuses_the_open_pull_request_of_the_branch() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.add_issue(12, "alice", "Request", "body", &[]);
    let gh = client(&fake);
    let branch = "image-request/12";

    let first = gh
        .open_or_update_pr(branch, "main", "Add image torch-course", "body v1")
        .await
        .expect("open");
    assert!(first.created);
    assert_eq!(first.number, 13, "pull requests share numbers with issues");
    assert_eq!(
        first.html_url,
        format!("https://github.com/{OWNER}/{REPO}/pull/13")
    );

    let second = gh
        .open_or_update_pr(branch, "main", "Add image torch-course", "body v2")
        .await
        .expect("update");
    assert!(!second.created);
    assert_eq!(second.number, first.number);
    let pulls = fake.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].body, "body v2");
    assert_eq!(pulls[0].head, branch);
    assert_eq!(pulls[0].base, "main");
    assert_eq!(
        fake.calls_to("PATCH", "/pulls/13")[0].body,
        json!({"body": "body v2"}),
        "only what changed is sent"
    );

    // Nothing changed: no write at all.
    gh.open_or_update_pr(branch, "main", "Add image torch-course", "body v2")
        .await
        .expect("unchanged");
    assert_eq!(fake.calls_to("PATCH", "/pulls/13").len(), 1);
    assert_eq!(fake.calls_to("POST", "/pulls").len(), 1);

    // The list asks for this repository's branch only.
    let list = &fake.calls_to("GET", "/pulls")[0];
    assert_eq!(list.query["head"], format!("{OWNER}:{branch}"));
    assert_eq!(list.query["state"], "open");

    // Once merged, a new request for the same branch opens a new one.
    fake.merge_pull(13);
    let third = gh
        .open_or_update_pr(branch, "main", "Add image torch-course", "body v3")
        .await
        .expect("reopen");
    assert!(third.created);
    assert_eq!(third.number, 14);
    assert_no_unexpected(&fake);
}

#[tokio::test]
async fn a_failed_pull_request_post_looks_again_before_retrying() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.fail_call("POST", "/pulls", 1, Failure::ServerError);
    let pr = client(&fake)
        .open_or_update_pr("image-request/1", "main", "t", "b")
        .await
        .expect("open after a 502");
    assert!(pr.created);
    assert_eq!(statuses(&fake, "POST", "/pulls"), [502, 201]);
    assert_eq!(fake.calls_to("GET", "/pulls").len(), 2);
    assert_eq!(fake.pulls().len(), 1);
    assert_no_unexpected(&fake);
}

#[tokio::test]
async fn repository_reports_the_default_branch() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.set_default_branch("trunk");
    let repo = client(&fake).repository().await.expect("repository");
    assert_eq!(repo.default_branch, "trunk");
    assert_eq!(
        repo.clone_url,
        format!("https://github.com/{OWNER}/{REPO}.git")
    );
    assert_no_unexpected(&fake);
}

#[tokio::test]
async fn the_primary_rate_limit_is_waited_out() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.set_permission("ada", "admin");
    fake.fail_next(1, Failure::RateLimit);
    let started = Instant::now();
    let permission = client(&fake)
        .permission("ada")
        .await
        .expect("after the reset");
    assert_eq!(permission, Permission::Admin);
    assert_eq!(statuses(&fake, "GET", "/ada/permission"), [403, 200]);
    // It waited for the reset (whole seconds, plus slack), not at once.
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_no_unexpected(&fake);
}

#[tokio::test]
async fn the_secondary_rate_limit_waits_retry_after() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.add_issue(2, "alice", "Request", "body", &[]);
    fake.fail_next(2, Failure::Secondary);
    let started = Instant::now();
    let comments = client(&fake).comments(2).await.expect("after retry-after");
    assert!(comments.is_empty());
    assert_eq!(
        statuses(&fake, "GET", "/issues/2/comments"),
        [403, 403, 200]
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
    assert_no_unexpected(&fake);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.add_issue(2, "alice", "Request", "body", &[]);
    fake.fail_next(2, Failure::ServerError);
    let started = Instant::now();
    client(&fake)
        .set_labels(2, &["gpu"], &[])
        .await
        .expect("after two 502s");
    assert_eq!(statuses(&fake, "POST", "/issues/2/labels"), [502, 502, 200]);
    // 500 ms then 1 s.
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(fake.issue(2).labels, ["gpu"]);
    assert_no_unexpected(&fake);
}

#[tokio::test]
async fn exhausted_retries_name_the_call_and_the_last_answer() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.set_permission("ada", "admin");
    fake.fail_next(3, Failure::ServerError);
    let gh = Github::new(GithubConfig {
        max_retries: 2,
        ..config(&fake)
    })
    .expect("client");
    let err = gh.permission("ada").await.expect_err("three 502s");
    let text = err.to_string();
    assert!(
        matches!(err, GithubError::Exhausted { attempts: 3, .. }),
        "{text}"
    );
    assert!(
        text.contains("GET /repos/uni-lab/images/collaborators/ada/permission"),
        "{text}"
    );
    assert!(text.contains("502: Server Error"), "{text}");
    assert_eq!(statuses(&fake, "GET", "/ada/permission"), [502, 502, 502]);
}

#[tokio::test]
async fn a_rate_limit_longer_than_max_wait_fails_at_once() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.set_permission("ada", "admin");
    fake.fail_next(1, Failure::Secondary);
    let gh = Github::new(GithubConfig {
        max_wait: Duration::from_millis(300),
        ..config(&fake)
    })
    .expect("client");
    let err = gh
        .permission("ada")
        .await
        .expect_err("retry-after 1 s > 300 ms");
    let text = err.to_string();
    assert!(matches!(err, GithubError::RateLimited { .. }), "{text}");
    assert!(text.contains("rate limited until 20"), "{text}");
    assert!(text.contains("/collaborators/ada/permission"), "{text}");
    assert_eq!(fake.calls().len(), 1);
}

#[tokio::test]
async fn a_github_app_trades_its_jwt_for_an_installation_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_path = dir.path().join("app.pem");
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key_path)
        .arg("2048")
        .output()
        .expect("openssl runs (it makes the App's test key)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read_to_string(&key_path).expect("key");

    let fake = FakeGithub::start(OWNER, REPO);
    fake.set_app(4242, 77);
    fake.set_permission("ada", "write");
    let gh = Github::new(GithubConfig {
        token: None,
        app: Some(AppCredentials {
            app_id: 4242,
            private_key_pem: SecretString::from(pem),
            installation_id: 77,
        }),
        ..config(&fake)
    })
    .expect("app client");
    assert_eq!(
        gh.permission("ada").await.expect("permission"),
        Permission::Write
    );
    assert_eq!(
        gh.permission("ada").await.expect("again"),
        Permission::Write
    );

    let issued = fake.issued_tokens();
    assert_eq!(issued.len(), 1, "the installation token is cached");
    let exchange = fake.calls_to("POST", "/app/installations/77/access_tokens");
    assert_eq!(exchange.len(), 1);
    let jwt = exchange[0].auth.as_deref().expect("JWT").to_string();
    assert!(jwt.starts_with("Bearer ey"), "{jwt}");
    for call in fake.calls_to("GET", "/permission") {
        assert_eq!(call.auth, Some(format!("Bearer {}", issued[0])));
    }
    use octocrab::secrecy::ExposeSecret;
    assert_eq!(
        gh.git_token().await.expect("git token").expose_secret(),
        issued[0]
    );
    assert_no_unexpected(&fake);
}

#[tokio::test]
async fn a_wrong_app_is_refused_by_the_fake_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_path = dir.path().join("app.pem");
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key_path)
        .arg("2048")
        .output()
        .expect("openssl runs");
    assert!(out.status.success());
    let pem = std::fs::read_to_string(&key_path).expect("key");
    let fake = FakeGithub::start(OWNER, REPO);
    fake.set_app(1, 77);
    let gh = Github::new(GithubConfig {
        token: None,
        app: Some(AppCredentials {
            app_id: 2,
            private_key_pem: SecretString::from(pem),
            installation_id: 77,
        }),
        ..config(&fake)
    })
    .expect("app client");
    let err = gh.permission("ada").await.expect_err("wrong app id");
    let text = err.to_string();
    assert!(
        matches!(err, GithubError::Status { status: 401, .. }),
        "{text}"
    );
    assert!(text.contains("installation token"), "{text}");
}

#[tokio::test]
async fn credentials_must_be_one_of_token_or_app() {
    let fake = FakeGithub::start(OWNER, REPO);
    let none = Github::new(GithubConfig {
        token: None,
        ..config(&fake)
    });
    assert!(matches!(none, Err(GithubError::Credentials(_))));
    let both = Github::new(GithubConfig {
        app: Some(AppCredentials {
            app_id: 1,
            private_key_pem: SecretString::from("x"),
            installation_id: 1,
        }),
        ..config(&fake)
    });
    assert!(matches!(both, Err(GithubError::Credentials(_))));
    let bad_key = Github::new(GithubConfig {
        token: None,
        app: Some(AppCredentials {
            app_id: 1,
            private_key_pem: SecretString::from("not a key"),
            installation_id: 1,
        }),
        ..config(&fake)
    });
    assert!(matches!(bad_key, Err(GithubError::Credentials(_))));
    let bad_repo = Github::new(GithubConfig {
        repo: "a/b".into(),
        ..config(&fake)
    });
    assert!(matches!(bad_repo, Err(GithubError::Repo(_))));
    assert_eq!(
        parse_repo("uni-lab/images").expect("parse"),
        (OWNER.to_string(), REPO.to_string())
    );
}

// ---------------------------------------------------------------------------
// The fake itself: it must refuse what GitHub refuses, or the tests above
// prove nothing.

async fn raw(
    fake: &FakeGithub,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    auth: bool,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method, format!("{}{path}", fake.url()));
    if auth {
        request = request.header("authorization", format!("token {TOKEN}"));
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("fake answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_fake_rejects_bodies_that_break_the_schema() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.add_issue(1, "alice", "Request", "body", &[]);
    let post = reqwest::Method::POST;
    let patch = reqwest::Method::PATCH;

    let (status, body) = raw(
        &fake,
        post.clone(),
        &issue_path("issues/1/labels"),
        Some(json!({"labels": "x"})),
        true,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let message = body["message"].as_str().expect("message");
    assert!(message.starts_with("Invalid request.\n\n"), "{message}");
    assert!(
        message.contains("For 'properties/labels', \"x\" is not an array."),
        "{message}"
    );
    assert!(
        body["documentation_url"]
            .as_str()
            .expect("docs")
            .starts_with("https://docs.github.com/rest/issues/labels")
    );

    let (status, body) = raw(
        &fake,
        post.clone(),
        &issue_path("issues/1/labels"),
        Some(json!({"labels": []})),
        true,
    )
    .await;
    assert_eq!(status, 422, "minItems: {body}");

    let (status, body) = raw(
        &fake,
        post.clone(),
        &issue_path("issues/1/comments"),
        Some(json!({"text": "hi"})),
        true,
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("\"body\" wasn't supplied."),
        "{body}"
    );

    let (status, body) = raw(
        &fake,
        patch.clone(),
        &issue_path("issues/1"),
        Some(json!({"state": "shut"})),
        true,
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("is not a member of"),
        "{body}"
    );

    let (status, _) = raw(
        &fake,
        patch.clone(),
        &issue_path("issues/1"),
        Some(json!({"state_reason": null, "body": null})),
        true,
    )
    .await;
    assert_eq!(status, 200, "nullable fields accept null");

    let (status, _) = raw(
        &fake,
        post.clone(),
        &issue_path("pulls"),
        Some(json!({"title": "t", "head": "b"})),
        true,
    )
    .await;
    assert_eq!(status, 422, "base is required");

    let (status, body) = raw(
        &fake,
        post.clone(),
        &issue_path("issues/1/comments"),
        Some(json!({"body": "hi"})),
        false,
    )
    .await;
    assert_eq!(
        (status, body["message"].clone()),
        (401, json!("Requires authentication"))
    );

    let (status, body) = raw(
        &fake,
        reqwest::Method::GET,
        &issue_path("issues/1/timeline"),
        None,
        true,
    )
    .await;
    assert_eq!((status, body["message"].clone()), (404, json!("Not Found")));

    let (status, _) = raw(
        &fake,
        reqwest::Method::GET,
        "/repos/someone/else/pulls",
        None,
        true,
    )
    .await;
    assert_eq!(status, 404, "another repository");

    let unexpected = fake.unexpected();
    assert_eq!(unexpected.len(), 8, "{unexpected:#?}");
    assert_eq!(unexpected[0].body, json!({"labels": "x"}));
    // Nothing reached the state.
    assert!(fake.issue(1).labels.is_empty());
    assert!(fake.comments(1).is_empty());
    assert!(fake.pulls().is_empty());
}

#[tokio::test]
async fn the_fake_refuses_a_second_pull_request_for_a_branch() {
    let fake = FakeGithub::start(OWNER, REPO);
    let body = json!({"title": "t", "head": "feature", "base": "main"});
    let (status, first) = raw(
        &fake,
        reqwest::Method::POST,
        &issue_path("pulls"),
        Some(body.clone()),
        true,
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(first["head"]["ref"], "feature");
    assert_eq!(first["head"]["label"], format!("{OWNER}:feature"));
    let (status, second) = raw(
        &fake,
        reqwest::Method::POST,
        &issue_path("pulls"),
        Some(body),
        true,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(second["message"], "Validation Failed");
    assert_eq!(
        second["errors"][0]["message"],
        format!("A pull request already exists for {OWNER}:feature.")
    );
    // GitHub filters by head only in the owner:branch form.
    let (_, all) = raw(
        &fake,
        reqwest::Method::GET,
        &issue_path("pulls?head=other"),
        None,
        true,
    )
    .await;
    assert_eq!(all.as_array().map(Vec::len), Some(1));
    let (_, none) = raw(
        &fake,
        reqwest::Method::GET,
        &issue_path("pulls?head=uni-lab:other"),
        None,
        true,
    )
    .await;
    assert_eq!(none.as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn the_fake_answers_package_index_lookups() {
    let fake = FakeGithub::start(OWNER, REPO);
    fake.add_pypi("Flask-Login");
    fake.add_openvsx("ms-python.python");
    let client = reqwest::Client::new();
    let get = |url: String| {
        let client = client.clone();
        async move {
            let r = client.get(url).send().await.expect("answer");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = get(format!("{}/flask_login/json", fake.pypi_url())).await;
    assert_eq!(
        (status, body["info"]["name"].clone()),
        (200, json!("Flask-Login"))
    );
    assert_eq!(
        get(format!("{}/flask-logn/json", fake.pypi_url())).await.0,
        404
    );
    let (status, body) = get(format!("{}/api/ms-python/python", fake.openvsx_url())).await;
    assert_eq!((status, body["name"].clone()), (200, json!("python")));
    let (status, body) = get(format!("{}/api/ms-python/pythn", fake.openvsx_url())).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "Extension not found: ms-python.pythn");
    assert_no_unexpected(&fake);
}

#[test]
fn the_webhook_fixtures_are_the_published_examples() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/github");
    let load = |name: &str| -> Value {
        let text = std::fs::read_to_string(dir.join(name)).expect("fixture");
        serde_json::from_str(&text).expect("JSON")
    };
    let opened = load("issues.opened.json");
    assert_eq!(opened["action"], "opened");
    assert!(opened["issue"]["number"].is_u64());
    assert_eq!(load("issues.edited.json")["action"], "edited");
    let comment = load("issue_comment.created.json");
    assert_eq!(comment["action"], "created");
    assert!(comment["installation"]["id"].is_u64());
    assert!(comment["comment"]["body"].is_string());
    let push = load("push.json");
    assert_eq!(
        push["ref"],
        format!(
            "refs/heads/{}",
            push["repository"]["default_branch"]
                .as_str()
                .expect("branch")
        )
    );
    let subset = load("openapi-subset.json");
    assert_eq!(subset["operations"].as_array().map(Vec::len), Some(12));
}
