//! The build-record state store of `labforge build`: one row per image per
//! build run (what was built, pushed, skipped, failed or blocked, why, how
//! long each stage took, the smoke tests, the pushed digest), so that
//! `labforge status` can show the latest state of every image and later runs
//! can find the last pushed digest.
//!
//! Two backends behind one interface, [`StateStore`]:
//! - a SQLite file, `<dir>/state.db` (the default), in WAL mode so that
//!   several connections of one process and several processes can write at
//!   once; `synchronous=NORMAL`, foreign keys on, a 5 s busy timeout;
//! - PostgreSQL by URL (`postgres://…`), TLS through rustls.
//!
//! The schema is created or migrated when a store is opened, idempotently
//! and under a lock (`BEGIN IMMEDIATE` on SQLite, an advisory lock on
//! PostgreSQL), recorded in the one-row table `schema_version`. Migrations
//! only add; nothing is ever dropped on open.
//!
//! This module touches only the state database it is pointed at (and, for a
//! folder, creates that folder). It never logs or prints a password: every
//! location in messages goes through [`redact_location`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ColumnIndex, Decode, Row, Type};

pub use labforge_core::publish::{Pin, ScanRow};

/// The schema version this build of labforge writes and understands.
pub const SCHEMA_VERSION: i64 = 4;

/// The file name of the SQLite database inside the state folder.
pub const SQLITE_FILE: &str = "state.db";

/// How long a SQLite writer waits for another one before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections per pool. SQLite serialises writers anyway; readers in WAL
/// mode do not block them.
const MAX_CONNECTIONS: u32 = 4;

/// How long to wait for a pooled connection (and for PostgreSQL to answer).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The PostgreSQL advisory lock key that serialises schema migrations
/// (the ASCII bytes of "labforge").
const PG_MIGRATION_LOCK: i64 = 0x6c61_6266_6f72_6765;

/// What the hint at the end of an "cannot open" message says.
const LOCATION_HINT: &str = "check --state or `state` in labforge.toml";

/// How one image of one build run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BuildResult {
    /// Built (and, when a registry is configured, pushed).
    #[serde(rename = "built")]
    Built,
    /// Not built: the content tag was already present.
    #[serde(rename = "present")]
    Present,
    /// The build, a smoke test or the push failed.
    #[serde(rename = "failed")]
    Failed,
    /// Not attempted: an image it depends on failed.
    #[serde(rename = "blocked")]
    Blocked,
    /// Built, tested and pushed by its content tag, but the scan policy
    /// blocked publishing it: no moving tags, not in the catalog.
    #[serde(rename = "rejected")]
    Rejected,
}

impl BuildResult {
    /// The stored (and serialized) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildResult::Built => "built",
            BuildResult::Present => "present",
            BuildResult::Failed => "failed",
            BuildResult::Blocked => "blocked",
            BuildResult::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for BuildResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BuildResult {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "built" => Ok(BuildResult::Built),
            "present" => Ok(BuildResult::Present),
            "failed" => Ok(BuildResult::Failed),
            "blocked" => Ok(BuildResult::Blocked),
            "rejected" => Ok(BuildResult::Rejected),
            other => Err(format!(
                "unknown build result {other:?} (expected built, present, failed, blocked or rejected)"
            )),
        }
    }
}

/// How one smoke test ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestResult {
    Passed,
    Failed,
    Skipped,
}

/// One smoke test of one image in one run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestRecord {
    pub name: String,
    pub result: TestResult,
    pub duration_ms: u64,
    /// The failure output or the reason it was skipped; empty when passed.
    pub detail: String,
}

/// One image in one `labforge build` run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// One id per `labforge build` invocation ([`new_run_id`]).
    pub run_id: String,
    /// The concrete image name, e.g. `notebook-scipy-cpu`.
    pub image: String,
    pub variant: String,
    /// The full identity, hex.
    pub hash: String,
    /// `<variant>-<identity[..12]>`.
    pub content_tag: String,
    /// Registry host and path, e.g. `127.0.0.1:5000/labforge/notebook`.
    pub repository: String,
    /// The manifest digest, only when pushed and confirmed.
    pub digest: Option<String>,
    pub tags: Vec<String>,
    /// Base reference → the digest it resolved to for this build.
    pub base_digests: BTreeMap<String, String>,
    pub result: BuildResult,
    /// What triggered the build, or why it failed or was blocked.
    pub reason: String,
    /// Stage name (render, build, test, push, …) → milliseconds.
    pub stages: BTreeMap<String, u64>,
    pub tests: Vec<TestRecord>,
    pub log_path: Option<String>,
    /// Unix time in milliseconds ([`unix_ms_now`], [`format_rfc3339`]).
    pub started_at: i64,
    pub finished_at: i64,
}

/// Why the state store could not be opened, read or written. Every message
/// names the (redacted) database location and says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "the state location {path} exists and is not a folder; point --state or `state` in labforge.toml at a folder, or move the file away"
    )]
    NotADirectory { path: String },
    #[error(
        "cannot create the state folder {path}: {error} ({LOCATION_HINT}; the folder must be writable)"
    )]
    CreateDir { path: String, error: std::io::Error },
    #[error(
        "the state location {location} has the unsupported URL scheme {scheme:?}; use a folder, a sqlite:// URL or a postgres:// URL ({LOCATION_HINT})"
    )]
    UnsupportedUrl { location: String, scheme: String },
    #[error("cannot open the state database at {location}: {error} ({LOCATION_HINT})")]
    Open {
        location: String,
        error: Box<sqlx::Error>,
    },
    #[error(
        "cannot create or migrate the schema of the state database at {location}: {error} (is the database writable by this user?)"
    )]
    Schema {
        location: String,
        error: Box<sqlx::Error>,
    },
    #[error(
        "the state database at {location} has schema version {found}, newer than this labforge understands ({supported}); upgrade labforge, or point --state elsewhere"
    )]
    NewerSchema {
        location: String,
        found: i64,
        supported: i64,
    },
    #[error("cannot {operation}{} in the state database at {location}: {error} (is the database reachable and writable?)", image_suffix(.image))]
    Query {
        location: String,
        operation: String,
        image: Option<String>,
        error: Box<sqlx::Error>,
    },
    #[error(
        "cannot store the build record of {image}: {message} (a labforge bug; please report it)"
    )]
    Encode { image: String, message: String },
    #[error(
        "the state database at {location} holds an unreadable record (row {id}, image {image}): {message}; was it written by another program or a newer labforge?"
    )]
    Corrupt {
        location: String,
        id: i64,
        image: String,
        /// Names the column, then what is wrong with it.
        message: String,
    },
}

fn image_suffix(image: &Option<String>) -> String {
    match image {
        Some(image) => format!(" for {image}"),
        None => String::new(),
    }
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The build-record store: a SQLite file or a PostgreSQL database. Cheap to
/// clone (the pool is shared); safe to use from many tasks at once.
#[derive(Clone, Debug)]
pub struct StateStore {
    backend: Backend,
    /// Redacted: safe for messages and logs.
    location: String,
}

/// One step of the schema: the statements that take a database from the
/// previous version to `version`. Only ever append steps.
struct Migration {
    version: i64,
    statements: &'static [&'static str],
}

const SCHEMA_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (\
     id INTEGER PRIMARY KEY CHECK (id = 1), \
     version BIGINT NOT NULL)";

/// Columns shared by both backends; only the row id differs.
macro_rules! build_records_table {
    ($id:literal) => {
        concat!(
            "CREATE TABLE IF NOT EXISTS build_records (",
            $id,
            ", run_id TEXT NOT NULL",
            ", image TEXT NOT NULL",
            ", variant TEXT NOT NULL",
            ", hash TEXT NOT NULL",
            ", content_tag TEXT NOT NULL",
            ", repository TEXT NOT NULL",
            ", digest TEXT",
            ", tags TEXT NOT NULL",
            ", base_digests TEXT NOT NULL",
            ", result TEXT NOT NULL",
            ", reason TEXT NOT NULL",
            ", stages TEXT NOT NULL",
            ", tests TEXT NOT NULL",
            ", log_path TEXT",
            ", started_at BIGINT NOT NULL",
            ", finished_at BIGINT NOT NULL",
            ")"
        )
    };
}

const INDEXES: [&str; 2] = [
    "CREATE INDEX IF NOT EXISTS build_records_image_id ON build_records (image, id)",
    "CREATE INDEX IF NOT EXISTS build_records_run_id ON build_records (run_id, id)",
];

/// Version 2: the scan of each pushed digest (its verdict, report and SBOM).
macro_rules! scans_table {
    ($id:literal) => {
        concat!(
            "CREATE TABLE IF NOT EXISTS scans (",
            $id,
            ", image TEXT NOT NULL",
            ", repository TEXT NOT NULL",
            ", digest TEXT NOT NULL",
            ", hash TEXT NOT NULL",
            ", verdict TEXT NOT NULL",
            ", published BIGINT NOT NULL",
            ", summary TEXT NOT NULL",
            ", report TEXT NOT NULL",
            ", sbom TEXT NOT NULL",
            ", created_at BIGINT NOT NULL",
            ")"
        )
    };
}

const SCANS_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS scans_image_digest ON scans (image, digest, id)";

/// Version 3: rollbacks (`labforge rollback`): hold an image at a digest.
macro_rules! pins_table {
    ($id:literal) => {
        concat!(
            "CREATE TABLE IF NOT EXISTS pins (",
            $id,
            ", image TEXT NOT NULL",
            ", digest TEXT NOT NULL",
            ", from_digest TEXT",
            ", after_scan BIGINT NOT NULL",
            ", actor TEXT NOT NULL",
            ", reason TEXT NOT NULL",
            ", created_at BIGINT NOT NULL",
            ")"
        )
    };
}

const PINS_INDEX: &str = "CREATE INDEX IF NOT EXISTS pins_image_id ON pins (image, id)";

const SQLITE_MIGRATIONS: [Migration; 4] = [
    Migration {
        version: 1,
        statements: &[
            build_records_table!("id INTEGER PRIMARY KEY AUTOINCREMENT"),
            INDEXES[0],
            INDEXES[1],
        ],
    },
    Migration {
        version: 2,
        statements: &[
            scans_table!("id INTEGER PRIMARY KEY AUTOINCREMENT"),
            SCANS_INDEX,
        ],
    },
    Migration {
        version: 3,
        statements: &[
            pins_table!("id INTEGER PRIMARY KEY AUTOINCREMENT"),
            PINS_INDEX,
        ],
    },
    Migration {
        version: 4,
        statements: &bot::SQLITE_TABLES,
    },
];

const POSTGRES_MIGRATIONS: [Migration; 4] = [
    Migration {
        version: 1,
        statements: &[
            build_records_table!("id BIGSERIAL PRIMARY KEY"),
            INDEXES[0],
            INDEXES[1],
        ],
    },
    Migration {
        version: 2,
        statements: &[scans_table!("id BIGSERIAL PRIMARY KEY"), SCANS_INDEX],
    },
    Migration {
        version: 3,
        statements: &[pins_table!("id BIGSERIAL PRIMARY KEY"), PINS_INDEX],
    },
    Migration {
        version: 4,
        statements: &bot::POSTGRES_TABLES,
    },
];

/// Bring the schema to [`SCHEMA_VERSION`] inside the caller's locked
/// transaction `$tx`; evaluates to the version found. A macro rather than a
/// function so that it is type-checked once per backend.
macro_rules! migrate_in {
    ($tx:expr, $migrations:expr, $location:expr) => {
        async {
            let location: &str = $location;
            let schema_err = |error| StateError::Schema {
                location: location.to_string(),
                error: Box::new(error),
            };
            sqlx::query(SCHEMA_VERSION_TABLE)
                .execute(&mut *$tx)
                .await
                .map_err(schema_err)?;
            let found: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_version WHERE id = 1")
                    .fetch_optional(&mut *$tx)
                    .await
                    .map_err(schema_err)?;
            let found = found.unwrap_or(0);
            if found > SCHEMA_VERSION {
                return Err(StateError::NewerSchema {
                    location: location.to_string(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            for migration in $migrations.iter().filter(|m| m.version > found) {
                for statement in migration.statements {
                    sqlx::query(statement)
                        .execute(&mut *$tx)
                        .await
                        .map_err(schema_err)?;
                }
            }
            if found < SCHEMA_VERSION {
                sqlx::query(
                    "INSERT INTO schema_version (id, version) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                )
                .bind(SCHEMA_VERSION)
                .execute(&mut *$tx)
                .await
                .map_err(schema_err)?;
            }
            Ok::<i64, StateError>(found)
        }
    };
}

/// Run `$body` with `$pool` bound to the concrete pool of either backend;
/// the body is type-checked once per backend.
macro_rules! on_pool {
    ($backend:expr, $pool:ident => $body:expr) => {
        match $backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

// After the macros: the bot's tables and queries use them.
mod bot;
pub use bot::{BotRequest, Intake, Job, JobCounts, JobEnd, NewJob};

/// The record columns, in the order of the `INSERT` placeholders.
const COLUMNS: &str = "run_id, image, variant, hash, content_tag, repository, digest, tags, \
     base_digests, result, reason, stages, tests, log_path, started_at, finished_at";

impl StateStore {
    /// Open `location`: a `postgres://` or `postgresql://` URL, a `sqlite:`
    /// URL, or else a folder path (holding `state.db`).
    pub async fn open(location: &str) -> Result<Self, StateError> {
        if location.to_ascii_lowercase().starts_with("sqlite:") || url_scheme(location).is_some() {
            Self::open_url(location).await
        } else {
            Self::open_dir(Path::new(location)).await
        }
    }

    /// Open (creating when needed) the SQLite database `<dir>/state.db`,
    /// creating the folder too.
    pub async fn open_dir(dir: &Path) -> Result<Self, StateError> {
        let shown = dir.display().to_string();
        if dir.exists() && !dir.is_dir() {
            return Err(StateError::NotADirectory { path: shown });
        }
        std::fs::create_dir_all(dir).map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotADirectory
                || error.kind() == std::io::ErrorKind::AlreadyExists
            {
                StateError::NotADirectory {
                    path: shown.clone(),
                }
            } else {
                StateError::CreateDir {
                    path: shown.clone(),
                    error,
                }
            }
        })?;
        let file: PathBuf = dir.join(SQLITE_FILE);
        let location = file.display().to_string();
        let options = SqliteConnectOptions::new().filename(&file);
        Self::open_sqlite(options, location, false).await
    }

    /// Open a SQLite database by URL (`sqlite://path/state.db`,
    /// `sqlite::memory:`), with the same settings as [`Self::open_dir`].
    pub async fn open_sqlite_url(url: &str) -> Result<Self, StateError> {
        let location = redact_location(url);
        let options = SqliteConnectOptions::from_str(url).map_err(|error| StateError::Open {
            location: location.clone(),
            error: Box::new(error),
        })?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        Self::open_sqlite(options, location, in_memory).await
    }

    /// Open a PostgreSQL database by URL (a `sqlite:` URL works too). The
    /// tables live in the first schema of the connection's `search_path`
    /// (settable with `?options=-c%20search_path%3DNAME`); `sslmode=` works
    /// as in libpq.
    pub async fn open_url(url: &str) -> Result<Self, StateError> {
        let location = redact_location(url);
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("sqlite:") {
            return Self::open_sqlite_url(url).await;
        }
        if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
            return Err(StateError::UnsupportedUrl {
                location,
                scheme: url_scheme(url).unwrap_or_default().to_string(),
            });
        }
        let options = PgConnectOptions::from_str(url).map_err(|error| StateError::Open {
            location: location.clone(),
            error: Box::new(error),
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|error| StateError::Open {
                location: location.clone(),
                error: Box::new(error),
            })?;
        let store = StateStore {
            backend: Backend::Postgres(pool),
            location,
        };
        store.migrate().await?;
        tracing::debug!(location = %store.location, "state store opened (postgres)");
        Ok(store)
    }

    async fn open_sqlite(
        options: SqliteConnectOptions,
        location: String,
        in_memory: bool,
    ) -> Result<Self, StateError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT);
        let mut pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        if in_memory {
            // An in-memory database lives as long as one connection does.
            pool = pool
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        // Two processes creating the same new database at once: switching
        // it to WAL needs an exclusive lock, and SQLite answers SQLITE_BUSY
        // there without waiting on the busy timeout. Opening again a little
        // later finds it in WAL mode already.
        let mut attempt = 0u64;
        let pool = loop {
            attempt += 1;
            match pool.clone().connect_with(options.clone()).await {
                Ok(pool) => break pool,
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some("5") && attempt < 10 =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                }
                Err(error) => {
                    return Err(StateError::Open {
                        location: location.clone(),
                        error: Box::new(error),
                    });
                }
            }
        };
        let store = StateStore {
            backend: Backend::Sqlite(pool),
            location,
        };
        store.migrate().await?;
        tracing::debug!(location = %store.location, "state store opened (sqlite)");
        Ok(store)
    }

    /// The database location for messages, with any password redacted.
    pub fn location(&self) -> String {
        self.location.clone()
    }

    /// Which backend this store uses: `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Close the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        on_pool!(&self.backend, pool => pool.close().await)
    }

    /// Create or migrate the schema, once, under a lock, in one transaction.
    async fn migrate(&self) -> Result<(), StateError> {
        let schema_err = |error| StateError::Schema {
            location: self.location.clone(),
            error: Box::new(error),
        };
        let found = match &self.backend {
            Backend::Sqlite(pool) => {
                // IMMEDIATE: take the write lock at once, so that two
                // processes opening a new database do not both migrate.
                let mut tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(schema_err)?;
                let found = migrate_in!(tx, SQLITE_MIGRATIONS, &self.location).await?;
                tx.commit().await.map_err(schema_err)?;
                found
            }
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(schema_err)?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PG_MIGRATION_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(schema_err)?;
                // No "relation already exists, skipping" notices in the log.
                sqlx::query("SET LOCAL client_min_messages = warning")
                    .execute(&mut *tx)
                    .await
                    .map_err(schema_err)?;
                let found = migrate_in!(tx, POSTGRES_MIGRATIONS, &self.location).await?;
                tx.commit().await.map_err(schema_err)?;
                found
            }
        };
        if found < SCHEMA_VERSION {
            tracing::info!(
                location = %self.location,
                from = found,
                to = SCHEMA_VERSION,
                "state database schema migrated"
            );
        }
        Ok(())
    }

    /// Store one record; returns its row id. It is committed when this
    /// returns: on SQLite (WAL, `synchronous=NORMAL`) it survives a crash of
    /// labforge, though a power cut right after may roll the last commits
    /// back; on PostgreSQL it is as durable as the server's
    /// `synchronous_commit` makes it.
    pub async fn record(&self, rec: &BuildRecord) -> Result<i64, StateError> {
        let encode = |message: serde_json::Error| StateError::Encode {
            image: rec.image.clone(),
            message: message.to_string(),
        };
        let tags = serde_json::to_string(&rec.tags).map_err(encode)?;
        let base_digests = serde_json::to_string(&rec.base_digests).map_err(encode)?;
        let stages = serde_json::to_string(&rec.stages).map_err(encode)?;
        let tests = serde_json::to_string(&rec.tests).map_err(encode)?;
        let sql = format!(
            "INSERT INTO build_records ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             RETURNING id"
        );
        let id: Result<i64, sqlx::Error> = on_pool!(&self.backend, pool => {
            sqlx::query_scalar(&sql)
                .bind(&rec.run_id)
                .bind(&rec.image)
                .bind(&rec.variant)
                .bind(&rec.hash)
                .bind(&rec.content_tag)
                .bind(&rec.repository)
                .bind(&rec.digest)
                .bind(&tags)
                .bind(&base_digests)
                .bind(rec.result.as_str())
                .bind(&rec.reason)
                .bind(&stages)
                .bind(&tests)
                .bind(&rec.log_path)
                .bind(rec.started_at)
                .bind(rec.finished_at)
                .fetch_one(pool)
                .await
        });
        id.map_err(|error| self.query_error("record the build", Some(&rec.image), error))
    }

    /// The latest record (highest row id) of every image, sorted by image name.
    pub async fn latest(&self) -> Result<Vec<BuildRecord>, StateError> {
        let sql = format!(
            "SELECT id, {COLUMNS} FROM build_records WHERE id IN \
             (SELECT MAX(id) FROM build_records GROUP BY image)"
        );
        let mut records = self
            .select(&sql, &[], "read the latest records", None)
            .await?;
        // Byte order, whatever the database's collation.
        records.sort_by(|a, b| a.image.cmp(&b.image));
        Ok(records)
    }

    /// The records of `image`, newest first, at most `limit`.
    pub async fn history(&self, image: &str, limit: usize) -> Result<Vec<BuildRecord>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT id, {COLUMNS} FROM build_records WHERE image = $1 ORDER BY id DESC LIMIT $2"
        );
        self.select(
            &sql,
            &[Param::Text(image), Param::Int(limit)],
            "read the build history",
            Some(image),
        )
        .await
    }

    /// The newest record of `image` that has a pushed digest.
    pub async fn last_pushed(&self, image: &str) -> Result<Option<BuildRecord>, StateError> {
        let sql = format!(
            "SELECT id, {COLUMNS} FROM build_records \
             WHERE image = $1 AND digest IS NOT NULL ORDER BY id DESC LIMIT 1"
        );
        let records = self
            .select(
                &sql,
                &[Param::Text(image)],
                "read the last pushed record",
                Some(image),
            )
            .await?;
        Ok(records.into_iter().next())
    }

    /// Every record of one build run, in the order they were recorded.
    pub async fn run(&self, run_id: &str) -> Result<Vec<BuildRecord>, StateError> {
        let sql = format!("SELECT id, {COLUMNS} FROM build_records WHERE run_id = $1 ORDER BY id");
        self.select(
            &sql,
            &[Param::Text(run_id)],
            &format!("read the records of run {run_id}"),
            None,
        )
        .await
    }

    /// Store the scan of one digest; returns its row id.
    pub async fn record_scan(&self, scan: &ScanRecord) -> Result<i64, StateError> {
        let summary = serde_json::to_string(&scan.summary).map_err(|e| StateError::Encode {
            image: scan.image.clone(),
            message: e.to_string(),
        })?;
        let sql = "INSERT INTO scans (image, repository, digest, hash, verdict, published, \
                   summary, report, sbom, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id";
        let id: Result<i64, sqlx::Error> = on_pool!(&self.backend, pool => {
            sqlx::query_scalar(sql)
                .bind(&scan.image)
                .bind(&scan.repository)
                .bind(&scan.digest)
                .bind(&scan.hash)
                .bind(&scan.verdict)
                .bind(i64::from(scan.published))
                .bind(&summary)
                .bind(&scan.report)
                .bind(&scan.sbom)
                .bind(scan.created_at)
                .fetch_one(pool)
                .await
        });
        id.map_err(|error| self.query_error("record the scan", Some(&scan.image), error))
    }

    /// The newest scan of `image` at `digest` (any digest when `None`).
    pub async fn latest_scan(
        &self,
        image: &str,
        digest: Option<&str>,
    ) -> Result<Option<ScanRecord>, StateError> {
        let mut sql = String::from(
            "SELECT id, image, repository, digest, hash, verdict, published, summary, report, \
             sbom, created_at FROM scans WHERE image = $1",
        );
        if digest.is_some() {
            sql.push_str(" AND digest = $2");
        }
        sql.push_str(" ORDER BY id DESC LIMIT 1");
        let rows: Result<Vec<ScanRecord>, sqlx::Error> = on_pool!(&self.backend, pool => {
            let mut query = sqlx::query(&sql).bind(image);
            if let Some(d) = digest {
                query = query.bind(d);
            }
            match query.fetch_all(pool).await {
                Ok(rows) => rows.iter().map(ScanRecord::from_row).collect(),
                Err(error) => Err(error),
            }
        });
        let rows = rows.map_err(|error| self.query_error("read the scans", Some(image), error))?;
        Ok(rows.into_iter().next())
    }

    /// Every scan row (without the documents), oldest first: what
    /// [`labforge_core::publish::select`] decides the published digests from.
    pub async fn scan_rows(&self) -> Result<Vec<ScanRow>, StateError> {
        let sql = "SELECT id, image, repository, digest, verdict, published, created_at \
                   FROM scans ORDER BY id";
        let rows: Result<Vec<ScanRow>, sqlx::Error> = on_pool!(&self.backend, pool => {
            match sqlx::query(sql).fetch_all(pool).await {
                Ok(rows) => rows
                    .iter()
                    .map(|row| -> Result<ScanRow, sqlx::Error> {
                        let published: i64 = row.try_get("published")?;
                        Ok(ScanRow {
                            id: row.try_get("id")?,
                            image: row.try_get("image")?,
                            repository: row.try_get("repository")?,
                            digest: row.try_get("digest")?,
                            verdict: row.try_get("verdict")?,
                            published: published != 0,
                            created_at: row.try_get("created_at")?,
                        })
                    })
                    .collect(),
                Err(error) => Err(error),
            }
        });
        rows.map_err(|error| self.query_error("read the scans", None, error))
    }

    /// Hold `pin.image` at `pin.digest` (a rollback); returns the pin as
    /// stored. Its `after_scan` is the newest scan row id at the moment it is
    /// written (in the same statement): a digest first published by a later
    /// row supersedes it, whatever the clocks of the machines say.
    pub async fn record_pin(&self, pin: &Pin) -> Result<Pin, StateError> {
        let sql = "INSERT INTO pins (image, digest, from_digest, after_scan, actor, reason, created_at) \
                   VALUES ($1, $2, $3, (SELECT COALESCE(MAX(id), 0) FROM scans), $4, $5, $6) \
                   RETURNING after_scan";
        let after: Result<i64, sqlx::Error> = on_pool!(&self.backend, pool => {
            sqlx::query_scalar(sql)
                .bind(&pin.image)
                .bind(&pin.digest)
                .bind(&pin.from_digest)
                .bind(&pin.actor)
                .bind(&pin.reason)
                .bind(pin.created_at)
                .fetch_one(pool)
                .await
        });
        let after_scan = after
            .map_err(|error| self.query_error("record the rollback", Some(&pin.image), error))?;
        Ok(Pin {
            after_scan,
            ..pin.clone()
        })
    }

    /// The newest pin of every image that has one.
    pub async fn latest_pins(&self) -> Result<Vec<Pin>, StateError> {
        let sql = "SELECT image, digest, from_digest, after_scan, actor, reason, created_at FROM pins \
                   WHERE id IN (SELECT MAX(id) FROM pins GROUP BY image) ORDER BY image";
        let rows: Result<Vec<Pin>, sqlx::Error> = on_pool!(&self.backend, pool => {
            match sqlx::query(sql).fetch_all(pool).await {
                Ok(rows) => rows
                    .iter()
                    .map(|row| -> Result<Pin, sqlx::Error> {
                        Ok(Pin {
                            image: row.try_get("image")?,
                            digest: row.try_get("digest")?,
                            from_digest: row.try_get("from_digest")?,
                            after_scan: row.try_get("after_scan")?,
                            actor: row.try_get("actor")?,
                            reason: row.try_get("reason")?,
                            created_at: row.try_get("created_at")?,
                        })
                    })
                    .collect(),
                Err(error) => Err(error),
            }
        });
        rows.map_err(|error| self.query_error("read the rollbacks", None, error))
    }

    /// Counts that change whenever anything is recorded (the newest row id
    /// of each table, and the number of build records by result): cheap to
    /// poll, so that the hub reloads only when something happened.
    pub async fn marker(&self) -> Result<Marker, StateError> {
        let sql = "SELECT (SELECT COALESCE(MAX(id), 0) FROM build_records) AS builds, \
                   (SELECT COALESCE(MAX(id), 0) FROM scans) AS scans, \
                   (SELECT COALESCE(MAX(id), 0) FROM pins) AS pins";
        let marker: Result<Marker, sqlx::Error> = on_pool!(&self.backend, pool => {
            match sqlx::query(sql).fetch_one(pool).await {
                Ok(row) => (|| -> Result<Marker, sqlx::Error> {
                    Ok(Marker {
                        builds: row.try_get("builds")?,
                        scans: row.try_get("scans")?,
                        pins: row.try_get("pins")?,
                    })
                })(),
                Err(error) => Err(error),
            }
        });
        marker.map_err(|error| self.query_error("read the change marker", None, error))
    }

    /// How many build records ended with each result, and how many scans
    /// published a digest: the hub's `/metrics` counters.
    pub async fn counts(&self) -> Result<Counts, StateError> {
        let by_result: Result<Vec<(String, i64)>, sqlx::Error> = on_pool!(&self.backend, pool => {
            sqlx::query_as("SELECT result, COUNT(*) FROM build_records GROUP BY result ORDER BY result")
                .fetch_all(pool)
                .await
        });
        let builds =
            by_result.map_err(|error| self.query_error("count the builds", None, error))?;
        let published: Result<i64, sqlx::Error> = on_pool!(&self.backend, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM scans WHERE published <> 0")
                .fetch_one(pool)
                .await
        });
        let publishes =
            published.map_err(|error| self.query_error("count the publishes", None, error))?;
        Ok(Counts {
            builds: builds.into_iter().collect(),
            publishes,
        })
    }

    /// The newest build record that pushed `digest` for `image`.
    pub async fn record_of_digest(
        &self,
        image: &str,
        digest: &str,
    ) -> Result<Option<BuildRecord>, StateError> {
        let sql = format!(
            "SELECT id, {COLUMNS} FROM build_records \
             WHERE image = $1 AND digest = $2 ORDER BY id DESC LIMIT 1"
        );
        let records = self
            .select(
                &sql,
                &[Param::Text(image), Param::Text(digest)],
                "read the build record of a digest",
                Some(image),
            )
            .await?;
        Ok(records.into_iter().next())
    }

    async fn select(
        &self,
        sql: &str,
        params: &[Param<'_>],
        operation: &str,
        image: Option<&str>,
    ) -> Result<Vec<BuildRecord>, StateError> {
        let raws: Result<Vec<RawRecord>, sqlx::Error> = on_pool!(&self.backend, pool => {
            let mut query = sqlx::query(sql);
            for param in params {
                query = match *param {
                    Param::Text(text) => query.bind(text),
                    Param::Int(int) => query.bind(int),
                };
            }
            match query.fetch_all(pool).await {
                Ok(rows) => rows.iter().map(RawRecord::from_row).collect(),
                Err(error) => Err(error),
            }
        });
        let raws = raws.map_err(|error| self.query_error(operation, image, error))?;
        raws.into_iter()
            .map(|raw| raw.into_record(&self.location))
            .collect()
    }

    fn query_error(&self, operation: &str, image: Option<&str>, error: sqlx::Error) -> StateError {
        StateError::Query {
            location: self.location.clone(),
            operation: operation.to_string(),
            image: image.map(str::to_string),
            error: Box::new(error),
        }
    }
}

/// See [`StateStore::marker`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub builds: i64,
    pub scans: i64,
    pub pins: i64,
}

/// See [`StateStore::counts`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Build result (`built`, `present`, …) → records.
    pub builds: BTreeMap<String, i64>,
    /// Scans that published their digest.
    pub publishes: i64,
}

/// The scan of one pushed digest: what the policy decided and the documents
/// it decided on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRecord {
    pub image: String,
    pub repository: String,
    pub digest: String,
    /// The identity the digest was built from.
    pub hash: String,
    /// `pass` or `fail`.
    pub verdict: String,
    /// Whether the moving tags now point at this digest.
    pub published: bool,
    /// The report's summary (JSON object).
    pub summary: serde_json::Value,
    /// The scan report (JSON text, as attached to the image).
    pub report: String,
    /// The CycloneDX SBOM (JSON text, as attached to the image).
    pub sbom: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl ScanRecord {
    fn from_row<'r, R>(row: &'r R) -> Result<Self, sqlx::Error>
    where
        R: Row,
        &'static str: ColumnIndex<R>,
        String: Decode<'r, R::Database> + Type<R::Database>,
        i64: Decode<'r, R::Database> + Type<R::Database>,
    {
        let summary: String = row.try_get("summary")?;
        let published: i64 = row.try_get("published")?;
        Ok(ScanRecord {
            image: row.try_get("image")?,
            repository: row.try_get("repository")?,
            digest: row.try_get("digest")?,
            hash: row.try_get("hash")?,
            verdict: row.try_get("verdict")?,
            published: published != 0,
            summary: serde_json::from_str(&summary)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            report: row.try_get("report")?,
            sbom: row.try_get("sbom")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// A bind parameter of a `SELECT`.
enum Param<'a> {
    Text(&'a str),
    Int(i64),
}

/// A row as stored: lists and maps still JSON text.
struct RawRecord {
    id: i64,
    run_id: String,
    image: String,
    variant: String,
    hash: String,
    content_tag: String,
    repository: String,
    digest: Option<String>,
    tags: String,
    base_digests: String,
    result: String,
    reason: String,
    stages: String,
    tests: String,
    log_path: Option<String>,
    started_at: i64,
    finished_at: i64,
}

impl RawRecord {
    fn from_row<'r, R>(row: &'r R) -> Result<Self, sqlx::Error>
    where
        R: Row,
        &'static str: ColumnIndex<R>,
        String: Decode<'r, R::Database> + Type<R::Database>,
        i64: Decode<'r, R::Database> + Type<R::Database>,
    {
        Ok(RawRecord {
            id: row.try_get("id")?,
            run_id: row.try_get("run_id")?,
            image: row.try_get("image")?,
            variant: row.try_get("variant")?,
            hash: row.try_get("hash")?,
            content_tag: row.try_get("content_tag")?,
            repository: row.try_get("repository")?,
            digest: row.try_get("digest")?,
            tags: row.try_get("tags")?,
            base_digests: row.try_get("base_digests")?,
            result: row.try_get("result")?,
            reason: row.try_get("reason")?,
            stages: row.try_get("stages")?,
            tests: row.try_get("tests")?,
            log_path: row.try_get("log_path")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }

    fn into_record(self, location: &str) -> Result<BuildRecord, StateError> {
        let corrupt = |column: &'static str, message: String| StateError::Corrupt {
            location: location.to_string(),
            id: self.id,
            image: self.image.clone(),
            message: format!("column {column}: {message}"),
        };
        let result = self
            .result
            .parse::<BuildResult>()
            .map_err(|m| corrupt("result", m))?;
        let tags = serde_json::from_str(&self.tags).map_err(|e| corrupt("tags", e.to_string()))?;
        let base_digests = serde_json::from_str(&self.base_digests)
            .map_err(|e| corrupt("base_digests", e.to_string()))?;
        let stages =
            serde_json::from_str(&self.stages).map_err(|e| corrupt("stages", e.to_string()))?;
        let tests =
            serde_json::from_str(&self.tests).map_err(|e| corrupt("tests", e.to_string()))?;
        Ok(BuildRecord {
            run_id: self.run_id,
            image: self.image,
            variant: self.variant,
            hash: self.hash,
            content_tag: self.content_tag,
            repository: self.repository,
            digest: self.digest,
            tags,
            base_digests,
            result,
            reason: self.reason,
            stages,
            tests,
            log_path: self.log_path,
            started_at: self.started_at,
            finished_at: self.finished_at,
        })
    }
}

/// The scheme of `location` when it looks like a URL (`scheme://…`).
fn url_scheme(location: &str) -> Option<&str> {
    let (scheme, _) = location.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// `location` safe to show: the password of a URL's `user:password@` and any
/// `password=` query parameter become `***`. Paths come back unchanged.
pub fn redact_location(location: &str) -> String {
    let Some(scheme) = url_scheme(location) else {
        return location.to_string();
    };
    let rest = &location[scheme.len() + 3..];
    // The user info ends at the last '@' before the query; a password may
    // itself hold '/', ':' or '@' when the URL was written unencoded.
    let query_start = rest.find('?').unwrap_or(rest.len());
    let at = match rest.rfind('@') {
        Some(at) if at < query_start => Some(at),
        Some(_) | None => rest[..query_start].rfind('@'),
    };
    let mut out = format!("{scheme}://");
    let after_userinfo = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, _password)) => out.push_str(&format!("{user}:***@")),
                None => out.push_str(&format!("{userinfo}@")),
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    match after_userinfo.split_once('?') {
        None => out.push_str(after_userinfo),
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
    }
    out
}

/// Now, as Unix time in milliseconds (0 if the clock is before 1970).
pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Unix milliseconds → (year, month, day, hour, minute, second, millisecond), UTC.
fn civil(ms: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // All of these are small and non-negative by construction.
    let small = |v: i64| u32::try_from(v).unwrap_or(0);
    (
        year,
        small(month),
        small(day),
        small(in_day / 3_600_000),
        small(in_day / 60_000 % 60),
        small(in_day / 1000 % 60),
        small(in_day % 1000),
    )
}

/// Unix milliseconds as RFC 3339 in UTC, e.g. `2025-03-01T12:30:05.250Z`.
pub fn format_rfc3339(ms: i64) -> String {
    let (y, mo, d, h, mi, s, milli) = civil(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// A new build-run id: the UTC start time (so ids sort by time) and a random
/// suffix, e.g. `20250301T123005.250Z-3f9a1c07`. Safe in file names.
pub fn new_run_id() -> String {
    use std::hash::BuildHasher;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ms = unix_ms_now();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // RandomState is seeded from the OS once per thread and differs per call.
    let random = std::collections::hash_map::RandomState::new().hash_one((
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed),
    ));
    let (y, mo, d, h, mi, s, milli) = civil(ms);
    format!(
        "{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}.{milli:03}Z-{:08x}",
        random & 0xffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pooled connection has the pragmas, not only the first one.
    #[tokio::test]
    async fn sqlite_connections_have_the_pragmas() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = StateStore::open_dir(dir.path())
            .await
            .expect("open the store");
        let Backend::Sqlite(pool) = &store.backend else {
            panic!("not sqlite")
        };
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut conn = pool.acquire().await.expect("a pooled connection");
            let (journal, synchronous, foreign_keys, busy): (String, i64, i64, i64) =
                sqlx::query_as(
                    "SELECT (SELECT journal_mode FROM pragma_journal_mode), \
                            (SELECT synchronous FROM pragma_synchronous), \
                            (SELECT foreign_keys FROM pragma_foreign_keys), \
                            (SELECT timeout FROM pragma_busy_timeout)",
                )
                .fetch_one(&mut *conn)
                .await
                .expect("query");
            assert_eq!(journal, "wal");
            assert_eq!(synchronous, 1, "NORMAL");
            assert_eq!(foreign_keys, 1);
            assert_eq!(busy, 5000);
            held.push(conn);
        }
        assert_eq!(
            store.location(),
            dir.path().join(SQLITE_FILE).display().to_string()
        );
    }

    /// Small enough to sit, with an image name beside it, inside callers'
    /// error enums without boxing (clippy's result_large_err limit is 128
    /// bytes); hence the boxed `sqlx::Error`.
    #[test]
    fn state_error_is_small() {
        let size = std::mem::size_of::<StateError>();
        assert!(size + std::mem::size_of::<String>() < 128, "{size} bytes");
    }

    /// The store's futures can be spawned onto a multi-threaded runtime.
    #[test]
    fn futures_are_send() {
        fn send<T: Send>(_: T) {}
        fn check(store: &StateStore, rec: &BuildRecord) {
            send(store.record(rec));
            send(store.latest());
            send(store.history("i", 1));
            send(store.last_pushed("i"));
            send(store.run("r"));
            send(store.close());
            send(StateStore::open("x"));
        }
        let _ = check;
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            format_rfc3339(1_740_832_205_250),
            "2025-03-01T12:30:05.250Z"
        );
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn run_ids_are_unique_and_sort_by_time() {
        let a = new_run_id();
        let b = new_run_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), "20250301T123005.250Z-3f9a1c07".len());
        assert!(a[..20] <= b[..20]);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        );
    }

    #[test]
    fn locations_are_redacted() {
        assert_eq!(
            redact_location("postgres://labforge:s3cret@db:5432/labforge"),
            "postgres://labforge:***@db:5432/labforge"
        );
        assert_eq!(
            redact_location("postgresql://u:p@ss/w@rd@db/x?sslmode=require&password=hunter2"),
            "postgresql://u:***@db/x?sslmode=require&password=***"
        );
        assert_eq!(
            redact_location("postgres://db/x?user=u&password=p"),
            "postgres://db/x?user=u&password=***"
        );
        assert_eq!(redact_location("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact_location("/var/lib/labforge"), "/var/lib/labforge");
        assert_eq!(redact_location("state@home/dir"), "state@home/dir");
    }

    #[test]
    fn build_results_use_the_stored_spelling() {
        for result in [
            BuildResult::Built,
            BuildResult::Present,
            BuildResult::Failed,
            BuildResult::Blocked,
            BuildResult::Rejected,
        ] {
            let json = serde_json::to_string(&result).expect("json");
            assert_eq!(json, format!("\"{}\"", result.as_str()));
            assert_eq!(
                result.as_str().parse::<BuildResult>().expect("parse"),
                result
            );
        }
        assert_eq!(BuildResult::Present.as_str(), "present");
        assert!("skipped".parse::<BuildResult>().is_err());
        assert_eq!(
            serde_json::to_string(&TestResult::Passed).expect("json"),
            "\"passed\""
        );
    }
}
