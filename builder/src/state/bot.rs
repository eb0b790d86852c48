//! The GitHub bot's durable state (schema version 4): the webhook
//! deliveries it accepted, the queue of jobs they made, and what it knows
//! about each image request.
//!
//! A verified delivery is recorded together with its jobs in one
//! transaction *before* the hub answers GitHub, so that nothing accepted is
//! lost: a restart finds the jobs still queued (or running: those are
//! queued again, and every side effect of a job is idempotent by its key).
//! The delivery id is the primary key, so a redelivery or a replay of the
//! same delivery adds nothing; a job's `key` (the comment id of a command,
//! the commit of a push, the issue's `updated_at`) is unique too, so the same
//! event arriving under a new delivery id is not processed twice either.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Backend, StateError, StateStore};

/// Version 4: deliveries, jobs and requests.
macro_rules! bot_tables {
    ($id:literal) => {
        [
            "CREATE TABLE IF NOT EXISTS bot_deliveries (\
             delivery TEXT PRIMARY KEY, \
             event TEXT NOT NULL, \
             received_at BIGINT NOT NULL)",
            concat!(
                "CREATE TABLE IF NOT EXISTS bot_jobs (",
                $id,
                ", delivery TEXT NOT NULL",
                ", lane TEXT NOT NULL",
                ", kind TEXT NOT NULL",
                ", job_key TEXT NOT NULL UNIQUE",
                ", issue BIGINT",
                ", payload TEXT NOT NULL",
                ", state TEXT NOT NULL",
                ", attempts BIGINT NOT NULL",
                ", not_before BIGINT NOT NULL",
                ", error TEXT",
                ", created_at BIGINT NOT NULL",
                ", updated_at BIGINT NOT NULL",
                ")"
            ),
            "CREATE INDEX IF NOT EXISTS bot_jobs_lane_state ON bot_jobs (lane, state, id)",
            "CREATE TABLE IF NOT EXISTS bot_requests (\
             issue BIGINT PRIMARY KEY, \
             slug TEXT NOT NULL, \
             state TEXT NOT NULL, \
             author TEXT NOT NULL, \
             file TEXT NOT NULL, \
             body TEXT NOT NULL, \
             version TEXT NOT NULL, \
             pr BIGINT, \
             updated_at BIGINT NOT NULL)",
        ]
    };
}

pub(super) const SQLITE_TABLES: [&str; 4] = bot_tables!("id INTEGER PRIMARY KEY AUTOINCREMENT");
pub(super) const POSTGRES_TABLES: [&str; 4] = bot_tables!("id BIGSERIAL PRIMARY KEY");

/// A job to queue: what to do, in which lane, under which idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewJob {
    /// Jobs of one lane run one at a time, in order: `requests` (answers on
    /// issues, commands, pull requests) never waits behind `builds`.
    pub lane: String,
    pub kind: String,
    /// Unique over all jobs ever queued: the same event twice is one job.
    pub key: String,
    pub issue: Option<i64>,
    /// The job's input, JSON, as the bot defines it.
    pub payload: String,
}

/// A queued job as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: i64,
    pub delivery: String,
    pub lane: String,
    pub kind: String,
    pub key: String,
    pub issue: Option<i64>,
    pub payload: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub error: Option<String>,
}

/// What [`StateStore::accept_delivery`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Intake {
    /// Recorded; the ids of the jobs queued (jobs whose key was seen before
    /// are left out).
    Accepted { jobs: Vec<i64> },
    /// This delivery id was accepted before: nothing was added.
    Duplicate,
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobEnd {
    Done,
    /// A transient failure: queue it again, not before this time (Unix ms).
    Retry {
        not_before: i64,
        error: String,
    },
    /// Given up: kept with its error until `/retry` queues it again.
    Failed {
        error: String,
    },
}

/// What the bot knows about one image request (one issue).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotRequest {
    pub issue: i64,
    /// The environment name of the last valid version of the request.
    pub slug: String,
    /// `invalid`, `needs-review`, `approved`, `rejected`, `published` or
    /// `failed`.
    pub state: String,
    pub author: String,
    /// The catalog file the last valid version of the request makes.
    pub file: String,
    /// The issue body that file was made from (approval checks it again).
    pub body: String,
    /// GitHub's `updated_at` of the issue when `body` was read: an approval
    /// written before it approved an earlier version.
    pub version: String,
    pub pr: Option<i64>,
    pub updated_at: i64,
}

/// Counts of jobs by lane and state (for `/metrics` and tests).
pub type JobCounts = std::collections::BTreeMap<(String, String), i64>;

const JOB_COLUMNS: &str =
    "id, delivery, lane, kind, job_key, issue, payload, state, attempts, error";

fn job_of(row: &impl RowLike) -> Result<Job, sqlx::Error> {
    Ok(Job {
        id: row.int("id")?,
        delivery: row.text("delivery")?,
        lane: row.text("lane")?,
        kind: row.text("kind")?,
        key: row.text("job_key")?,
        issue: row.opt_int("issue")?,
        payload: row.text("payload")?,
        state: row.text("state")?,
        attempts: row.int("attempts")?,
        error: row.opt_text("error")?,
    })
}

fn request_of(row: &impl RowLike) -> Result<BotRequest, sqlx::Error> {
    Ok(BotRequest {
        issue: row.int("issue")?,
        slug: row.text("slug")?,
        state: row.text("state")?,
        author: row.text("author")?,
        file: row.text("file")?,
        body: row.text("body")?,
        version: row.text("version")?,
        pr: row.opt_int("pr")?,
        updated_at: row.int("updated_at")?,
    })
}

/// Column access over both backends' rows, so that one decoder serves both.
trait RowLike {
    fn int(&self, column: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
}

macro_rules! row_like {
    ($row:ty) => {
        impl RowLike for $row {
            fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
                self.try_get(column)
            }
            fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(column)
            }
            fn text(&self, column: &str) -> Result<String, sqlx::Error> {
                self.try_get(column)
            }
            fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(column)
            }
        }
    };
}
row_like!(sqlx::sqlite::SqliteRow);
row_like!(sqlx::postgres::PgRow);

impl StateStore {
    /// Record a verified delivery and queue its jobs, in one transaction.
    /// A delivery id seen before adds nothing ([`Intake::Duplicate`]).
    pub async fn accept_delivery(
        &self,
        delivery: &str,
        event: &str,
        jobs: &[NewJob],
        now: i64,
    ) -> Result<Intake, StateError> {
        let result: Result<Intake, sqlx::Error> = on_pool!(&self.backend, pool => async {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO bot_deliveries (delivery, event, received_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (delivery) DO NOTHING",
            )
            .bind(delivery)
            .bind(event)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                tx.rollback().await?;
                return Ok(Intake::Duplicate);
            }
            let mut ids = Vec::new();
            for job in jobs {
                let id: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO bot_jobs (delivery, lane, kind, job_key, issue, payload, state, \
                     attempts, not_before, error, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, 0, NULL, $7, $7) \
                     ON CONFLICT (job_key) DO NOTHING RETURNING id",
                )
                .bind(delivery)
                .bind(&job.lane)
                .bind(&job.kind)
                .bind(&job.key)
                .bind(job.issue)
                .bind(&job.payload)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                ids.extend(id);
            }
            tx.commit().await?;
            Ok(Intake::Accepted { jobs: ids })
        }.await);
        result.map_err(|error| self.query_error("record a webhook delivery", None, error))
    }

    /// Queue a job the bot makes itself (a `/rebuild`); `None` when a job
    /// with its key exists already.
    pub async fn enqueue(&self, job: &NewJob, now: i64) -> Result<Option<i64>, StateError> {
        let result: Result<Option<i64>, sqlx::Error> = on_pool!(&self.backend, pool => {
            sqlx::query_scalar(
                "INSERT INTO bot_jobs (delivery, lane, kind, job_key, issue, payload, state, \
                 attempts, not_before, error, created_at, updated_at) \
                 VALUES ('', $1, $2, $3, $4, $5, 'queued', 0, 0, NULL, $6, $6) \
                 ON CONFLICT (job_key) DO NOTHING RETURNING id",
            )
            .bind(&job.lane)
            .bind(&job.kind)
            .bind(&job.key)
            .bind(job.issue)
            .bind(&job.payload)
            .bind(now)
            .fetch_optional(pool)
            .await
        });
        result.map_err(|error| self.query_error("queue a bot job", None, error))
    }

    /// Take the oldest queued job of `lane` that may run at `now`, marking
    /// it running (with one more attempt). Safe against another process
    /// claiming at the same time: the update only succeeds on a job still
    /// queued.
    pub async fn claim_job(&self, lane: &str, now: i64) -> Result<Option<Job>, StateError> {
        loop {
            let candidate: Result<Option<i64>, sqlx::Error> = on_pool!(&self.backend, pool => {
                sqlx::query_scalar(
                    "SELECT id FROM bot_jobs WHERE lane = $1 AND state = 'queued' \
                     AND not_before <= $2 ORDER BY id LIMIT 1",
                )
                .bind(lane)
                .bind(now)
                .fetch_optional(pool)
                .await
            });
            let candidate = candidate
                .map_err(|error| self.query_error("find a queued bot job", None, error))?;
            let Some(id) = candidate else {
                return Ok(None);
            };
            let sql = format!(
                "UPDATE bot_jobs SET state = 'running', attempts = attempts + 1, updated_at = $1 \
                 WHERE id = $2 AND state = 'queued' RETURNING {JOB_COLUMNS}"
            );
            let claimed: Result<Option<Job>, sqlx::Error> = on_pool!(&self.backend, pool => {
                match sqlx::query(&sql).bind(now).bind(id).fetch_optional(pool).await {
                    Ok(Some(row)) => job_of(&row).map(Some),
                    Ok(None) => Ok(None),
                    Err(error) => Err(error),
                }
            });
            match claimed.map_err(|error| self.query_error("claim a bot job", None, error))? {
                Some(job) => return Ok(Some(job)),
                None => continue,
            }
        }
    }

    /// Record how a running job ended.
    pub async fn finish_job(&self, id: i64, end: &JobEnd, now: i64) -> Result<(), StateError> {
        let (state, not_before, error) = match end {
            JobEnd::Done => ("done", 0, None),
            JobEnd::Retry { not_before, error } => ("queued", *not_before, Some(error.as_str())),
            JobEnd::Failed { error } => ("failed", 0, Some(error.as_str())),
        };
        let result: Result<_, sqlx::Error> = on_pool!(&self.backend, pool => {
            sqlx::query(
                "UPDATE bot_jobs SET state = $1, not_before = $2, error = $3, updated_at = $4 \
                 WHERE id = $5",
            )
            .bind(state)
            .bind(not_before)
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(pool)
            .await
            .map(|_| ())
        });
        result.map_err(|error| self.query_error("record the end of a bot job", None, error))
    }

    /// At start: jobs left running by a process that stopped are queued
    /// again (their side effects are idempotent). Returns how many.
    pub async fn requeue_running(&self, now: i64) -> Result<u64, StateError> {
        let result: Result<u64, sqlx::Error> = on_pool!(&self.backend, pool => {
            sqlx::query(
                "UPDATE bot_jobs SET state = 'queued', not_before = 0, updated_at = $1 \
                 WHERE state = 'running'",
            )
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        });
        result.map_err(|error| self.query_error("queue interrupted bot jobs again", None, error))
    }

    /// `/retry`: queue the failed jobs of an issue again. Returns how many.
    pub async fn retry_failed(&self, issue: i64, now: i64) -> Result<u64, StateError> {
        let result: Result<u64, sqlx::Error> = on_pool!(&self.backend, pool => {
            sqlx::query(
                "UPDATE bot_jobs SET state = 'queued', not_before = 0, error = NULL, \
                 attempts = 0, updated_at = $1 WHERE issue = $2 AND state = 'failed'",
            )
            .bind(now)
            .bind(issue)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        });
        result.map_err(|error| self.query_error("queue failed bot jobs again", None, error))
    }

    /// Every job, oldest first (for tests and the status of the bot).
    pub async fn jobs(&self) -> Result<Vec<Job>, StateError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM bot_jobs ORDER BY id");
        let result: Result<Vec<Job>, sqlx::Error> = on_pool!(&self.backend, pool => {
            match sqlx::query(&sql).fetch_all(pool).await {
                Ok(rows) => rows.iter().map(job_of).collect(),
                Err(error) => Err(error),
            }
        });
        result.map_err(|error| self.query_error("read the bot jobs", None, error))
    }

    /// Jobs by lane and state.
    pub async fn job_counts(&self) -> Result<JobCounts, StateError> {
        let result: Result<Vec<(String, String, i64)>, sqlx::Error> = on_pool!(&self.backend, pool => {
            sqlx::query_as("SELECT lane, state, COUNT(*) FROM bot_jobs GROUP BY lane, state")
                .fetch_all(pool)
                .await
        });
        let rows = result.map_err(|error| self.query_error("count the bot jobs", None, error))?;
        Ok(rows
            .into_iter()
            .map(|(lane, state, n)| ((lane, state), n))
            .collect())
    }

    /// How many deliveries were accepted.
    pub async fn deliveries(&self) -> Result<i64, StateError> {
        let result: Result<i64, sqlx::Error> = on_pool!(&self.backend, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM bot_deliveries").fetch_one(pool).await
        });
        result.map_err(|error| self.query_error("count the webhook deliveries", None, error))
    }

    /// What the bot knows about the request in `issue`.
    pub async fn bot_request(&self, issue: i64) -> Result<Option<BotRequest>, StateError> {
        let result: Result<Option<BotRequest>, sqlx::Error> = on_pool!(&self.backend, pool => {
            match sqlx::query(
                "SELECT issue, slug, state, author, file, body, version, pr, updated_at FROM bot_requests \
                 WHERE issue = $1",
            )
            .bind(issue)
            .fetch_optional(pool)
            .await
            {
                Ok(Some(row)) => request_of(&row).map(Some),
                Ok(None) => Ok(None),
                Err(error) => Err(error),
            }
        });
        result.map_err(|error| self.query_error("read an image request", None, error))
    }

    /// Store what the bot knows about a request (insert or replace).
    pub async fn save_bot_request(&self, request: &BotRequest) -> Result<(), StateError> {
        let result: Result<(), sqlx::Error> = on_pool!(&self.backend, pool => {
            sqlx::query(
                "INSERT INTO bot_requests (issue, slug, state, author, file, body, version, pr, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (issue) DO UPDATE SET slug = excluded.slug, state = excluded.state, \
                 author = excluded.author, file = excluded.file, body = excluded.body, version = excluded.version, pr = excluded.pr, \
                 updated_at = excluded.updated_at",
            )
            .bind(request.issue)
            .bind(&request.slug)
            .bind(&request.state)
            .bind(&request.author)
            .bind(&request.file)
            .bind(&request.body)
            .bind(&request.version)
            .bind(request.pr)
            .bind(request.updated_at)
            .execute(pool)
            .await
            .map(|_| ())
        });
        result.map_err(|error| self.query_error("store an image request", None, error))
    }
}
