//! `POST /webhooks/github`: GitHub's deliveries for the image-request bot.
//!
//! In this order, and nothing else before the first step:
//! 1. the `X-Hub-Signature-256` HMAC-SHA256 over the raw body is checked
//!    against every configured secret (several, so that a secret can be
//!    rotated without losing deliveries), in constant time; a missing or
//!    wrong signature is a 401 and the body is never parsed;
//! 2. the JSON is parsed and turned into jobs ([`classify`], pure);
//! 3. the delivery and its jobs are recorded in one transaction of the
//!    state store; a delivery id seen before is a no-op;
//! 4. the answer (202, or 200 for an ignored or repeated delivery) goes
//!    back — well within GitHub's 10 s — and the workers are woken.
//!
//! The work itself (validation, comments, git, builds) happens on the
//! durable queue in [`crate::bot`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use labforge_builder::state::{Intake, NewJob};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Hub;
use crate::bot::{LANE_BUILDS, LANE_REQUESTS, Task};
use crate::metrics::Route;

/// GitHub caps webhook payloads at 25 MB; an issue event is a few KB. A
/// megabyte-sized issue body still fits, so that its sender gets an answer
/// on the issue ("the body is too long") rather than silence.
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The label GitHub's issue form puts on every request.
pub const REQUEST_LABEL: &str = "image-request";

/// Webhook secrets, newest first. `Debug` never shows them.
#[derive(Clone, Default)]
pub struct Secrets(Vec<Vec<u8>>);

impl Secrets {
    /// Blank secrets are dropped: a blank secret is no secret.
    pub fn new<I: IntoIterator<Item = String>>(secrets: I) -> Secrets {
        Secrets(
            secrets
                .into_iter()
                .map(|s| s.trim().as_bytes().to_vec())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} configured)", self.0.len())
    }
}

/// Why a delivery's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "missing X-Hub-Signature-256 header: set the webhook's secret in GitHub to LABFORGE_GITHUB_WEBHOOK_SECRET"
    )]
    Missing,
    #[error("X-Hub-Signature-256 is not `sha256=<64 hex digits>`")]
    Malformed,
    #[error(
        "X-Hub-Signature-256 does not match the body under any configured secret (a forged delivery, or the webhook's secret differs from LABFORGE_GITHUB_WEBHOOK_SECRET)"
    )]
    Mismatch,
    #[error("no webhook secret is configured: set LABFORGE_GITHUB_WEBHOOK_SECRET")]
    NoSecret,
}

/// Check `header` (`sha256=<hex>`) against the HMAC of `body` under each
/// secret. The comparison is constant-time (`Mac::verify_slice`); every
/// secret is tried, so timing does not tell which one matched.
pub fn verify(secrets: &Secrets, header: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let offered = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    if offered.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut matched = false;
    for secret in &secrets.0 {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            continue;
        };
        mac.update(body);
        matched |= mac.verify_slice(&offered).is_ok();
    }
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// `sha256=<hex>` for `body` under `secret` (what GitHub sends; for tests
/// and tools that replay deliveries).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Which deliveries concern the bot.
#[derive(Debug, Clone)]
pub struct Filter {
    /// `owner/repo` of the catalog repository.
    pub repository: String,
    /// The bot's own login: its comments are never commands.
    pub bot_login: String,
}

/// What a delivery asks for: the jobs to queue, or why it is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    Jobs(Vec<NewJob>),
    Ignored(String),
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn number(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

/// An image request: the form's label, or the form's first heading (a
/// request filed without the label is still answered).
fn is_request(issue: &Value) -> bool {
    let labelled = issue
        .get("labels")
        .and_then(Value::as_array)
        .is_some_and(|labels| {
            labels
                .iter()
                .any(|l| text(l, &["name"]) == Some(REQUEST_LABEL))
        });
    labelled || text(issue, &["body"]).is_some_and(|b| b.contains("### Environment name"))
}

fn job(lane: &str, key: String, issue: Option<u64>, task: &Task) -> Result<NewJob, String> {
    Ok(NewJob {
        lane: lane.to_string(),
        kind: task.kind().to_string(),
        key,
        issue: issue.and_then(|n| i64::try_from(n).ok()),
        payload: serde_json::to_string(task).map_err(|e| e.to_string())?,
    })
}

/// Turn a verified delivery into jobs (pure). Errors are payloads that do
/// not have the shape GitHub documents for the event.
pub fn classify(event: &str, payload: &Value, filter: &Filter) -> Result<Classified, String> {
    let ignored = |why: &str| Ok(Classified::Ignored(why.to_string()));
    if event == "ping" {
        return ignored("ping");
    }
    let Some(repository) = text(payload, &["repository", "full_name"]) else {
        return ignored("no repository in the payload");
    };
    if !repository.eq_ignore_ascii_case(&filter.repository) {
        return Ok(Classified::Ignored(format!(
            "{repository} is not the catalog repository {}",
            filter.repository
        )));
    }
    let action = text(payload, &["action"]).unwrap_or("");
    match event {
        "issues" => {
            if !matches!(action, "opened" | "edited" | "reopened") {
                return Ok(Classified::Ignored(format!("issues.{action}")));
            }
            let issue = payload
                .get("issue")
                .ok_or("issues event without an issue")?;
            let number = number(issue, &["number"]).ok_or("issue without a number")?;
            if action == "edited" {
                // A title-only edit changes nothing the bot reads; an edit
                // of a closed request (published, rejected) reopens nothing.
                if payload.pointer("/changes/body").is_none() {
                    return ignored("an edit that did not change the body");
                }
                if text(issue, &["state"]) == Some("closed") {
                    return ignored("an edit of a closed issue (reopen it to ask again)");
                }
            }
            if !is_request(issue) {
                return ignored("not an image request (no image-request label, not the form)");
            }
            let body = text(issue, &["body"]).unwrap_or("");
            let updated = text(issue, &["updated_at"]).unwrap_or("").to_string();
            let task = Task::Request {
                issue: number,
                author: text(issue, &["user", "login"]).unwrap_or("").to_string(),
                title: text(issue, &["title"]).unwrap_or("").to_string(),
                body: body.to_string(),
                updated_at: updated.clone(),
            };
            // A replay of the same event under a new delivery id is the same
            // job; two edits within GitHub's one-second `updated_at` are not.
            let digest = hex::encode(&Sha256::digest(body.as_bytes())[..8]);
            let key = format!("issue:{number}:{action}:{updated}:{digest}");
            Ok(Classified::Jobs(vec![job(
                LANE_REQUESTS,
                key,
                Some(number),
                &task,
            )?]))
        }
        "issue_comment" => {
            if action != "created" {
                return Ok(Classified::Ignored(format!("issue_comment.{action}")));
            }
            let issue = payload
                .get("issue")
                .ok_or("comment event without an issue")?;
            if issue.get("pull_request").is_some() {
                return ignored("a comment on a pull request (commands go on the request issue)");
            }
            if !is_request(issue) {
                // "/tmp is full" on a bug report is not a command.
                return ignored("a comment on an issue that is not an image request");
            }
            let comment = payload
                .get("comment")
                .ok_or("comment event without a comment")?;
            let login = text(comment, &["user", "login"]).unwrap_or("");
            if login.eq_ignore_ascii_case(&filter.bot_login)
                || text(comment, &["user", "type"]) == Some("Bot")
            {
                return ignored("a comment by a bot");
            }
            let body = text(comment, &["body"]).unwrap_or("");
            if labforge_core::request::command::parse(body).is_empty() {
                return ignored("a comment without a command");
            }
            let issue_number = number(issue, &["number"]).ok_or("issue without a number")?;
            let id = number(comment, &["id"]).ok_or("comment without an id")?;
            let task = Task::Command {
                issue: issue_number,
                comment: id,
                author: login.to_string(),
                body: body.to_string(),
                created_at: text(comment, &["created_at"]).unwrap_or("").to_string(),
            };
            Ok(Classified::Jobs(vec![job(
                LANE_REQUESTS,
                format!("comment:{id}"),
                Some(issue_number),
                &task,
            )?]))
        }
        "push" => {
            let reference = text(payload, &["ref"]).unwrap_or("");
            let default = text(payload, &["repository", "default_branch"]).unwrap_or("main");
            if reference != format!("refs/heads/{default}") {
                return Ok(Classified::Ignored(format!(
                    "a push to {reference}, not to the default branch {default}"
                )));
            }
            if payload.get("deleted").and_then(Value::as_bool) == Some(true) {
                return ignored("the default branch was deleted");
            }
            let before = text(payload, &["before"]).ok_or("push without `before`")?;
            let after = text(payload, &["after"]).ok_or("push without `after`")?;
            let task = Task::Merge {
                before: before.to_string(),
                after: after.to_string(),
            };
            Ok(Classified::Jobs(vec![job(
                LANE_BUILDS,
                format!("push:{after}"),
                None,
                &task,
            )?]))
        }
        other => Ok(Classified::Ignored(format!("the {other} event"))),
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The handler of `POST /webhooks/github`.
pub async fn receive(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> Response {
    let response = receive_inner(&hub, &headers, &body).await;
    hub.metrics
        .request(Route::WEBHOOK, response.status().as_u16());
    response
}

async fn receive_inner(hub: &Hub, headers: &HeaderMap, body: &[u8]) -> Response {
    let Some(bot) = hub.bot() else {
        return answer(
            StatusCode::NOT_FOUND,
            json!({"error": "the GitHub bot is not configured on this hub (set LABFORGE_GITHUB_WEBHOOK_SECRET and LABFORGE_CATALOG_REPO)"}),
        );
    };
    if let Err(e) = verify(
        &bot.settings.secrets,
        header(headers, "x-hub-signature-256"),
        body,
    ) {
        tracing::warn!(
            delivery = header(headers, "x-github-delivery").unwrap_or("-"),
            error = %e,
            "webhook delivery refused"
        );
        return answer(StatusCode::UNAUTHORIZED, json!({"error": e.to_string()}));
    }
    let (Some(event), Some(delivery)) = (
        header(headers, "x-github-event"),
        header(headers, "x-github-delivery"),
    ) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "missing X-GitHub-Event or X-GitHub-Delivery header"}),
        );
    };
    if delivery.is_empty() || delivery.len() > 128 {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "X-GitHub-Delivery must be 1 to 128 characters"}),
        );
    }
    let payload: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("the body is not JSON: {e}")}),
            );
        }
    };
    let classified = match classify(event, &payload, &bot.filter()) {
        Ok(c) => c,
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("a {event} delivery of unexpected shape: {e}")}),
            );
        }
    };
    let (jobs, ignored) = match classified {
        Classified::Jobs(jobs) => (jobs, None),
        Classified::Ignored(why) => (Vec::new(), Some(why)),
    };
    let now = labforge_builder::state::unix_ms_now();
    match hub
        .store()
        .accept_delivery(delivery, event, &jobs, now)
        .await
    {
        Ok(Intake::Duplicate) => {
            tracing::info!(
                delivery,
                event,
                "webhook delivery seen before: nothing to do"
            );
            answer(
                StatusCode::OK,
                json!({"delivery": delivery, "duplicate": true}),
            )
        }
        Ok(Intake::Accepted { jobs: ids }) => {
            if let Some(why) = ignored {
                tracing::info!(delivery, event, reason = %why, "webhook delivery ignored");
                return answer(
                    StatusCode::OK,
                    json!({"delivery": delivery, "ignored": why}),
                );
            }
            tracing::info!(
                delivery,
                event,
                queued = ids.len(),
                "webhook delivery accepted"
            );
            bot.wake();
            answer(
                StatusCode::ACCEPTED,
                json!({"delivery": delivery, "queued": ids.len()}),
            )
        }
        Err(e) => {
            // Not recorded: GitHub shows the failure and it can be redelivered.
            tracing::error!(delivery, error = %e, "cannot record a webhook delivery");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": format!("cannot record the delivery: {e}; redeliver it from the webhook's settings once the state store is back")}),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from GitHub's "Validating webhook deliveries" page.
    #[test]
    fn signature_matches_githubs_documented_example() {
        let secrets = Secrets::new(["It's a Secret to Everybody".to_string()]);
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign("It's a Secret to Everybody", b"Hello, World!"), header);
        assert_eq!(verify(&secrets, Some(header), b"Hello, World!"), Ok(()));
        assert_eq!(
            verify(&secrets, Some(header), b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_configured_secret_verifies_for_rotation() {
        let secrets = Secrets::new(["new".to_string(), " ".to_string(), "old".to_string()]);
        assert_eq!(format!("{secrets:?}"), "Secrets(2 configured)");
        for secret in ["new", "old"] {
            assert_eq!(verify(&secrets, Some(&sign(secret, b"{}")), b"{}"), Ok(()));
        }
        assert_eq!(
            verify(&secrets, Some(&sign("other", b"{}")), b"{}"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_malformed_and_unconfigured_are_refused() {
        let secrets = Secrets::new(["s".to_string()]);
        assert_eq!(verify(&secrets, None, b"{}"), Err(SignatureError::Missing));
        for bad in ["sha1=abcd", "sha256=xyz", "sha256=abcd", ""] {
            assert_eq!(
                verify(&secrets, Some(bad), b"{}"),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            verify(&Secrets::default(), Some(&sign("s", b"{}")), b"{}"),
            Err(SignatureError::NoSecret)
        );
    }

    fn filter() -> Filter {
        Filter {
            repository: "uni/catalog".into(),
            bot_login: "labforge-bot".into(),
        }
    }

    fn issue_payload(action: &str, labels: &[&str], body: &str) -> Value {
        json!({
            "action": action,
            "changes": {"body": {"from": "before"}},
            "repository": {"full_name": "uni/catalog", "default_branch": "main"},
            "issue": {
                "number": 12, "title": "Environment: nlp", "body": body,
                "updated_at": "2026-11-26T10:00:00Z",
                "user": {"login": "student"},
                "labels": labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
            },
        })
    }

    #[test]
    fn classify_issues_comments_and_pushes() {
        let Classified::Jobs(jobs) = classify(
            "issues",
            &issue_payload("opened", &["image-request"], "x"),
            &filter(),
        )
        .expect("classify") else {
            panic!("no jobs")
        };
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].lane, LANE_REQUESTS);
        assert!(
            jobs[0]
                .key
                .starts_with("issue:12:opened:2026-11-26T10:00:00Z:"),
            "{}",
            jobs[0].key
        );
        assert_eq!(jobs[0].issue, Some(12));
        let task: Task = serde_json::from_str(&jobs[0].payload).expect("task");
        assert!(matches!(task, Task::Request { issue: 12, .. }));
        // Two edits within the same second are two jobs.
        let mut other = issue_payload("edited", &["image-request"], "y");
        other["issue"]["updated_at"] = json!("2026-11-26T10:00:00Z");
        let mut first = other.clone();
        first["issue"]["body"] = json!("x");
        let key = |p: &Value| match classify("issues", p, &filter()) {
            Ok(Classified::Jobs(j)) => j[0].key.clone(),
            other => panic!("{other:?}"),
        };
        assert_ne!(key(&first), key(&other));

        // Not labelled and not the form; closed; another repository.
        for (event, payload) in [
            ("issues", issue_payload("opened", &["bug"], "it crashes")),
            ("issues", issue_payload("closed", &["image-request"], "x")),
            ("issues", {
                let mut p = issue_payload("opened", &["image-request"], "x");
                p["repository"]["full_name"] = json!("someone/else");
                p
            }),
            ("ping", json!({"zen": "Keep it logically awesome."})),
            // A title-only edit, and an edit of a closed request.
            ("issues", {
                let mut p = issue_payload("edited", &["image-request"], "x");
                p["changes"] = json!({"title": {"from": "old"}});
                p
            }),
            ("issues", {
                let mut p = issue_payload("edited", &["image-request"], "x");
                p["issue"]["state"] = json!("closed");
                p
            }),
            ("star", json!({"repository": {"full_name": "uni/catalog"}})),
        ] {
            assert!(
                matches!(
                    classify(event, &payload, &filter()),
                    Ok(Classified::Ignored(_))
                ),
                "{event}: {payload}"
            );
        }

        let comment = |login: &str, kind: &str, body: &str| {
            json!({
                "action": "created",
                "repository": {"full_name": "uni/catalog"},
                "issue": {"number": 12, "labels": [{"name": "image-request"}]},
                "comment": {"id": 99, "body": body, "user": {"login": login, "type": kind}},
            })
        };
        let Classified::Jobs(jobs) = classify(
            "issue_comment",
            &comment("prof", "User", "/approve"),
            &filter(),
        )
        .expect("classify") else {
            panic!("no jobs")
        };
        assert_eq!(jobs[0].key, "comment:99");
        let mut on_a_bug = comment("prof", "User", "/tmp is full");
        on_a_bug["issue"]["labels"] = json!([{"name": "bug"}]);
        for payload in [
            on_a_bug,
            comment("labforge-bot", "User", "/approve"),
            comment("dependabot", "Bot", "/approve"),
            comment("prof", "User", "thanks, looks good"),
        ] {
            let got = classify("issue_comment", &payload, &filter());
            assert!(
                matches!(got, Ok(Classified::Ignored(_))),
                "{payload}: {got:?}"
            );
        }

        let push = |reference: &str| {
            json!({
                "ref": reference, "before": "a".repeat(40), "after": "b".repeat(40),
                "repository": {"full_name": "uni/catalog", "default_branch": "main"},
            })
        };
        let Classified::Jobs(jobs) =
            classify("push", &push("refs/heads/main"), &filter()).expect("classify")
        else {
            panic!("no jobs")
        };
        assert_eq!(jobs[0].lane, LANE_BUILDS);
        assert_eq!(jobs[0].key, format!("push:{}", "b".repeat(40)));
        assert!(matches!(
            classify("push", &push("refs/heads/image-request/12"), &filter()),
            Ok(Classified::Ignored(_))
        ));
        // A payload without the documented fields is an error, not a job.
        assert!(classify("push", &json!({"ref": "refs/heads/main", "repository": {"full_name": "uni/catalog", "default_branch": "main"}}), &filter()).is_err());
    }
}
