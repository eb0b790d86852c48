//! The build-record state store against real databases: SQLite files in
//! temporary folders, and the PostgreSQL server that `scripts/services.sh`
//! starts (`LABFORGE_TEST_POSTGRES_URL`; without it the Postgres tests fail).
//! Each Postgres test works in its own schema, so tests run in parallel and
//! again and again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use labforge_builder::state::{
    BotRequest, BuildRecord, BuildResult, Intake, JobEnd, Marker, NewJob, Pin, SCHEMA_VERSION,
    SQLITE_FILE, ScanRecord, StateError, StateStore, TestRecord, TestResult, new_run_id,
    unix_ms_now,
};
use sqlx::Connection;

/// A record with every field set; `n` varies the values.
fn sample(run_id: &str, image: &str, n: u64) -> BuildRecord {
    let started_at = unix_ms_now();
    BuildRecord {
        run_id: run_id.to_string(),
        image: image.to_string(),
        variant: "scipy-cpu".to_string(),
        hash: format!("{:064x}", n + 1),
        content_tag: format!("scipy-cpu-{:012x}", n + 1),
        repository: "127.0.0.1:5000/labforge/notebook".to_string(),
        digest: n
            .is_multiple_of(2)
            .then(|| format!("sha256:{:064x}", n + 7)),
        tags: vec![format!("scipy-cpu-{:012x}", n + 1), "latest".to_string()],
        base_digests: BTreeMap::from([(
            "labforge-standin/debian:bookworm".to_string(),
            format!("sha256:{:064x}", n + 100),
        )]),
        result: match n % 4 {
            0 => BuildResult::Built,
            1 => BuildResult::Present,
            2 => BuildResult::Failed,
            _ => BuildResult::Blocked,
        },
        reason: format!("changed: template notebook.Dockerfile.tera — «quoted» 'n={n}'"),
        stages: BTreeMap::from([
            ("build".to_string(), 1200 + n),
            ("push".to_string(), 300),
            ("render".to_string(), 4),
            ("test".to_string(), u64::MAX),
        ]),
        tests: vec![
            TestRecord {
                name: "python-imports".to_string(),
                result: TestResult::Passed,
                duration_ms: 250,
                detail: String::new(),
            },
            TestRecord {
                name: "jupyter-starts".to_string(),
                result: TestResult::Failed,
                duration_ms: 30_000,
                detail: "timed out after 30 s\nlast line: \"waiting\"".to_string(),
            },
            TestRecord {
                name: "gpu".to_string(),
                result: TestResult::Skipped,
                duration_ms: 0,
                detail: "no GPU on this runner".to_string(),
            },
        ],
        log_path: (!n.is_multiple_of(3)).then(|| format!(".labforge/logs/{run_id}/{image}.log")),
        started_at,
        finished_at: started_at + 1234,
    }
}

/// Write 3 images × 3 runs; returns the records in the order written.
async fn write_three_runs(store: &StateStore, prefix: &str) -> Vec<BuildRecord> {
    let mut written = Vec::new();
    let mut n = 0;
    for run in 0..3 {
        let run_id = format!("{prefix}run-{run}");
        for image in [
            "notebook-scipy-cpu",
            "notebook-minimal-cpu",
            "notebook-torch-gpu",
        ] {
            let rec = sample(&run_id, &format!("{prefix}{image}"), n);
            n += 1;
            store.record(&rec).await.expect("record");
            written.push(rec);
        }
    }
    written
}

/// latest, history, last_pushed and run over `write_three_runs`'s records.
async fn check_queries(store: &StateStore, prefix: &str, written: &[BuildRecord]) {
    // latest: the newest record per image, sorted by image name.
    let latest = store.latest().await.expect("latest");
    let mut expected: Vec<BuildRecord> = written[6..].to_vec();
    expected.sort_by(|a, b| a.image.cmp(&b.image));
    assert_eq!(latest, expected);

    // history: newest first, limited.
    let image = format!("{prefix}notebook-minimal-cpu");
    let history = store.history(&image, 10).await.expect("history");
    let mine: Vec<BuildRecord> = written
        .iter()
        .rev()
        .filter(|r| r.image == image)
        .cloned()
        .collect();
    assert_eq!(history.len(), 3);
    assert_eq!(history, mine);
    assert_eq!(store.history(&image, 2).await.expect("history"), mine[..2]);
    assert!(store.history(&image, 0).await.expect("history").is_empty());
    assert!(
        store
            .history(&format!("{prefix}no-such-image"), 5)
            .await
            .expect("history")
            .is_empty()
    );

    // last_pushed: the newest record with a digest.
    for image in [
        "notebook-scipy-cpu",
        "notebook-minimal-cpu",
        "notebook-torch-gpu",
    ] {
        let image = format!("{prefix}{image}");
        let want = written
            .iter()
            .rev()
            .find(|r| r.image == image && r.digest.is_some())
            .cloned();
        assert!(want.is_some());
        assert_eq!(
            store.last_pushed(&image).await.expect("last_pushed"),
            want,
            "{image}"
        );
    }
    assert_eq!(
        store
            .last_pushed(&format!("{prefix}no-such-image"))
            .await
            .expect("last_pushed"),
        None
    );

    // run: every record of one run, in recording order.
    let run = store.run(&format!("{prefix}run-1")).await.expect("run");
    assert_eq!(run, written[3..6]);
    assert!(
        store
            .run(&format!("{prefix}run-none"))
            .await
            .expect("run")
            .is_empty()
    );
}

/// A scan with every field set; `n` varies the values, `published` is set
/// on odd `n` only.
fn sample_scan(image: &str, digest: &str, n: u64) -> ScanRecord {
    ScanRecord {
        image: image.to_string(),
        repository: "127.0.0.1:5000/labforge/notebook".to_string(),
        digest: digest.to_string(),
        hash: format!("{:064x}", n + 1),
        verdict: if n.is_multiple_of(2) { "fail" } else { "pass" }.to_string(),
        published: !n.is_multiple_of(2),
        summary: serde_json::json!({
            "n": n,
            "counts": {"critical": n, "high": 2, "medium": 0},
            "blocking": [format!("CVE-2024-{n:04}"), "GHSA-xxxx-yyyy-zzzz"],
            "waived": [],
            "ratio": 0.25,
            "note": "«quoted» 'text'\nsecond line",
            "none": null,
            "ok": n.is_multiple_of(2),
        }),
        report: format!(
            "{{\n  \"findings\": [\"CVE-2024-{n:04}\"],\n  \"text\": \"tab\\there — ünïcode\"\n}}\n"
        ),
        // Large enough to catch any truncation.
        sbom: format!(
            "{{\"bomFormat\":\"CycloneDX\",\"n\":{n},\"components\":[{}]}}",
            (0..2000)
                .map(|i| format!("{{\"name\":\"pkg-{i}\",\"version\":\"1.{i}\"}}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        created_at: 1_740_832_205_250 + i64::try_from(n).expect("small"),
    }
}

/// Scan rows, pins, the change marker and the counts: what the hub reads,
/// and what `labforge rollback` writes.
async fn check_publication(store: &StateStore) {
    let empty = store.marker().await.expect("marker");
    assert_eq!(empty, Marker::default());
    assert!(store.scan_rows().await.expect("rows").is_empty());
    assert!(store.latest_pins().await.expect("pins").is_empty());
    for n in 0..4u64 {
        let digest = format!("sha256:{:064x}", n / 2);
        store
            .record_scan(&sample_scan("nb", &digest, n))
            .await
            .expect("record a scan");
    }
    let rows = store.scan_rows().await.expect("rows");
    assert_eq!(rows.len(), 4);
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    assert_eq!(
        rows.iter().map(|r| r.published).collect::<Vec<_>>(),
        [false, true, false, true]
    );
    assert_eq!(rows[3].digest, format!("sha256:{:064x}", 1));
    let after_scans = store.marker().await.expect("marker");
    assert!(after_scans.scans > 0 && after_scans.pins == 0);
    for (i, image) in ["nb", "nb", "other"].iter().enumerate() {
        store
            .record_pin(&Pin {
                image: image.to_string(),
                digest: format!("sha256:{:064x}", i),
                from_digest: (i == 1).then(|| "sha256:old".to_string()),
                after_scan: -1,
                actor: "cli:alice".to_string(),
                reason: "«broken» release".to_string(),
                created_at: 1_700_000_000_000 + i64::try_from(i).expect("small"),
            })
            .await
            .expect("record a pin");
    }
    let pins = store.latest_pins().await.expect("pins");
    assert_eq!(pins.len(), 2);
    // The store, not the caller, says which scan rows the pin comes after.
    assert_eq!(pins[0].after_scan, rows[3].id);
    assert_eq!(pins[0].image, "nb");
    assert_eq!(pins[0].digest, format!("sha256:{:064x}", 1));
    assert_eq!(pins[0].from_digest.as_deref(), Some("sha256:old"));
    assert_eq!(pins[0].reason, "«broken» release");
    assert_eq!(pins[1].from_digest, None);
    let after_pins = store.marker().await.expect("marker");
    assert!(after_pins.pins > after_scans.pins);
    assert_eq!(after_pins.scans, after_scans.scans);
    let counts = store.counts().await.expect("counts");
    assert_eq!(counts.publishes, 2);
}

/// record_scan and latest_scan: round trip, newest by row id, filtering by
/// image and digest, and `None` when there is nothing.
async fn check_scans(store: &StateStore, prefix: &str) {
    let image = format!("{prefix}notebook-scipy-cpu");
    let other = format!("{prefix}notebook-minimal-cpu");
    let d1 = format!("sha256:{:064x}", 1);
    let d2 = format!("sha256:{:064x}", 2);
    let d3 = format!("sha256:{:064x}", 3);

    // Nothing yet.
    assert_eq!(store.latest_scan(&image, None).await.expect("scan"), None);
    assert_eq!(
        store.latest_scan(&image, Some(&d1)).await.expect("scan"),
        None
    );

    // Field by field, both published values.
    let first = sample_scan(&image, &d1, 0);
    let id1 = store.record_scan(&first).await.expect("record_scan");
    let got = store
        .latest_scan(&image, Some(&d1))
        .await
        .expect("scan")
        .expect("a scan");
    assert_eq!(got.image, first.image);
    assert_eq!(got.repository, first.repository);
    assert_eq!(got.digest, first.digest);
    assert_eq!(got.hash, first.hash);
    assert_eq!(got.verdict, "fail");
    assert!(!got.published);
    assert_eq!(got.summary, first.summary);
    assert_eq!(got.summary["counts"]["high"], 2);
    assert_eq!(got.report, first.report);
    assert_eq!(got.sbom, first.sbom);
    assert!(got.sbom.len() > 50_000, "{}", got.sbom.len());
    assert_eq!(got.created_at, first.created_at);
    assert_eq!(got, first);

    // Newer rows: d1 again (published), then d2 for the same image, then d1
    // and d3 for another image. The newest row wins, whatever created_at says.
    let mut second = sample_scan(&image, &d1, 1);
    second.created_at = 5;
    let id2 = store.record_scan(&second).await.expect("record_scan");
    assert!(id2 > id1);
    let third = sample_scan(&image, &d2, 2);
    store.record_scan(&third).await.expect("record_scan");
    let other_d1 = sample_scan(&other, &d1, 3);
    store.record_scan(&other_d1).await.expect("record_scan");
    let other_d3 = sample_scan(&other, &d3, 5);
    store.record_scan(&other_d3).await.expect("record_scan");

    let got = store
        .latest_scan(&image, Some(&d1))
        .await
        .expect("scan")
        .expect("a scan");
    assert!(got.published);
    assert_eq!(got.verdict, "pass");
    assert_eq!(got, second);
    assert_eq!(
        store.latest_scan(&image, Some(&d2)).await.expect("scan"),
        Some(third.clone())
    );
    // Any digest: the newest of this image, not the newer rows of `other`.
    assert_eq!(
        store.latest_scan(&image, None).await.expect("scan"),
        Some(third)
    );
    assert_eq!(
        store.latest_scan(&other, Some(&d1)).await.expect("scan"),
        Some(other_d1)
    );
    assert_eq!(
        store.latest_scan(&other, None).await.expect("scan"),
        Some(other_d3)
    );
    // A digest only another image has, and an image with no scans.
    assert_eq!(
        store.latest_scan(&image, Some(&d3)).await.expect("scan"),
        None
    );
    assert_eq!(
        store
            .latest_scan(&format!("{prefix}no-such-image"), None)
            .await
            .expect("scan"),
        None
    );
}

/// A `Rejected` record round-trips through record / history / last_pushed.
async fn check_rejected(store: &StateStore, prefix: &str) {
    let image = format!("{prefix}notebook-rejected");
    let built = sample("run-r", &image, 0);
    let mut rejected = sample("run-r2", &image, 4);
    rejected.result = BuildResult::Rejected;
    rejected.reason = "scan policy: 1 critical finding (CVE-2024-0001)".to_string();
    store.record(&built).await.expect("record");
    store.record(&rejected).await.expect("record");
    let history = store.history(&image, 10).await.expect("history");
    assert_eq!(history, [rejected.clone(), built]);
    assert_eq!(history[0].result, BuildResult::Rejected);
    assert_eq!(
        store.last_pushed(&image).await.expect("last_pushed"),
        Some(rejected.clone())
    );
    assert_eq!(store.run("run-r2").await.expect("run"), [rejected]);
    assert_eq!(BuildResult::Rejected.as_str(), "rejected");
    assert_eq!(
        "rejected".parse::<BuildResult>().expect("parse"),
        BuildResult::Rejected
    );
    assert_eq!(
        serde_json::to_string(&BuildResult::Rejected).expect("json"),
        "\"rejected\""
    );
}

/// The version-1 schema as labforge wrote it before scans existed (only the
/// row id column differs between the backends).
fn schema_v1(id_column: &str) -> Vec<String> {
    vec![
        "CREATE TABLE IF NOT EXISTS schema_version (\
         id INTEGER PRIMARY KEY CHECK (id = 1), \
         version BIGINT NOT NULL)"
            .to_string(),
        format!(
            "CREATE TABLE IF NOT EXISTS build_records ({id_column}, run_id TEXT NOT NULL, \
             image TEXT NOT NULL, variant TEXT NOT NULL, hash TEXT NOT NULL, \
             content_tag TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT, \
             tags TEXT NOT NULL, base_digests TEXT NOT NULL, result TEXT NOT NULL, \
             reason TEXT NOT NULL, stages TEXT NOT NULL, tests TEXT NOT NULL, log_path TEXT, \
             started_at BIGINT NOT NULL, finished_at BIGINT NOT NULL)"
        ),
        "CREATE INDEX IF NOT EXISTS build_records_image_id ON build_records (image, id)"
            .to_string(),
        "CREATE INDEX IF NOT EXISTS build_records_run_id ON build_records (run_id, id)".to_string(),
        "INSERT INTO schema_version (id, version) VALUES (1, 1)".to_string(),
        "INSERT INTO build_records (run_id, image, variant, hash, content_tag, repository, \
         digest, tags, base_digests, result, reason, stages, tests, log_path, started_at, \
         finished_at) VALUES ('old-run', 'old-image', 'cpu', 'abc', 'cpu-abc', \
         'reg/lab/old', 'sha256:0123', '[\"cpu-abc\",\"latest\"]', '{\"base:1\":\"sha256:99\"}', \
         'built', 'first build', '{\"build\":12}', \
         '[{\"name\":\"t\",\"result\":\"passed\",\"duration_ms\":3,\"detail\":\"\"}]', \
         NULL, 1000, 2000)"
            .to_string(),
    ]
}

/// The row `schema_v1` wrote, as `history` must read it.
fn v1_record() -> BuildRecord {
    BuildRecord {
        run_id: "old-run".to_string(),
        image: "old-image".to_string(),
        variant: "cpu".to_string(),
        hash: "abc".to_string(),
        content_tag: "cpu-abc".to_string(),
        repository: "reg/lab/old".to_string(),
        digest: Some("sha256:0123".to_string()),
        tags: vec!["cpu-abc".to_string(), "latest".to_string()],
        base_digests: BTreeMap::from([("base:1".to_string(), "sha256:99".to_string())]),
        result: BuildResult::Built,
        reason: "first build".to_string(),
        stages: BTreeMap::from([("build".to_string(), 12)]),
        tests: vec![TestRecord {
            name: "t".to_string(),
            result: TestResult::Passed,
            duration_ms: 3,
            detail: String::new(),
        }],
        log_path: None,
        started_at: 1000,
        finished_at: 2000,
    }
}

/// After migrating a version-1 database: the old row reads, scans work and
/// new builds go after the old row.
async fn check_migrated_v1(store: &StateStore) {
    assert_eq!(
        store.history("old-image", 10).await.expect("history"),
        [v1_record()]
    );
    check_scans(store, "m-").await;
    let newer = sample("new-run", "old-image", 1);
    store.record(&newer).await.expect("record");
    assert_eq!(
        store.history("old-image", 10).await.expect("history"),
        [newer, v1_record()]
    );
}

// ---------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------

#[tokio::test]
async fn state_sqlite_round_trip_of_every_field() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = StateStore::open_dir(dir.path())
        .await
        .expect("open the store");
    assert_eq!(store.backend(), "sqlite");
    let rec = sample(&new_run_id(), "notebook-scipy-cpu", 0);
    let id1 = store.record(&rec).await.expect("record");
    let id2 = store
        .record(&sample(&rec.run_id, "x", 1))
        .await
        .expect("record");
    assert!(id2 > id1);
    assert_eq!(store.run(&rec.run_id).await.expect("run")[0], rec);
    assert_eq!(
        store
            .last_pushed("notebook-scipy-cpu")
            .await
            .expect("last_pushed"),
        Some(rec.clone())
    );
    // The record also round-trips through JSON with the documented spellings.
    let json = serde_json::to_value(&rec).expect("json");
    assert_eq!(json["result"], "built");
    assert_eq!(json["tests"][0]["result"], "passed");
    let back: BuildRecord = serde_json::from_value(json).expect("json");
    assert_eq!(back, rec);
}

#[tokio::test]
async fn state_sqlite_queries_latest_history_last_pushed_run() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = StateStore::open_dir(dir.path())
        .await
        .expect("open the store");
    let written = write_three_runs(&store, "").await;
    check_queries(&store, "", &written).await;
}

#[tokio::test]
async fn state_sqlite_latest_picks_the_newest_row_per_image() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = StateStore::open_dir(dir.path())
        .await
        .expect("open the store");
    // The newest row wins even when its clock times are older.
    let mut newer = sample("run-b", "img-a", 1);
    newer.started_at = 10;
    newer.finished_at = 11;
    store
        .record(&sample("run-a", "img-b", 0))
        .await
        .expect("record");
    store
        .record(&sample("run-a", "img-a", 0))
        .await
        .expect("record");
    store.record(&newer).await.expect("record");
    let latest = store.latest().await.expect("latest");
    let names: Vec<&str> = latest.iter().map(|r| r.image.as_str()).collect();
    assert_eq!(names, ["img-a", "img-b"]);
    assert_eq!(latest[0], newer);
    assert_eq!(latest[1].run_id, "run-a");
}

#[tokio::test]
async fn state_sqlite_reopen_keeps_the_data_and_the_schema() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let written = {
        let store = StateStore::open_dir(dir.path())
            .await
            .expect("open the store");
        let written = write_three_runs(&store, "").await;
        store.close().await;
        written
    };
    for _ in 0..3 {
        let store = StateStore::open(dir.path().to_str().expect("a UTF-8 path"))
            .await
            .expect("open the store");
        check_queries(&store, "", &written).await;
        store.close().await;
    }
    // One schema_version row, at the current version.
    let mut conn = sqlite_conn(&dir.path().join(SQLITE_FILE)).await;
    let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT id, version FROM schema_version")
        .fetch_all(&mut conn)
        .await
        .expect("query");
    assert_eq!(rows, [(1, SCHEMA_VERSION)]);
    // And through a sqlite:// URL.
    let url = format!("sqlite://{}", dir.path().join(SQLITE_FILE).display());
    let store = StateStore::open(&url).await.expect("open the store");
    assert_eq!(store.latest().await.expect("latest").len(), 3);
}

async fn sqlite_conn(file: &Path) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .expect("connect")
}

#[tokio::test]
async fn state_sqlite_file_is_in_wal_mode() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = StateStore::open_dir(&dir.path().join("nested/state"))
        .await
        .expect("open the store");
    store.record(&sample("r", "i", 0)).await.expect("record");
    // WAL is a property of the file: a fresh connection that sets nothing sees it.
    let mut conn = sqlite_conn(&dir.path().join("nested/state").join(SQLITE_FILE)).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .expect("query");
    assert_eq!(mode, "wal");
    assert!(dir.path().join("nested/state/state.db-wal").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_sqlite_two_stores_write_concurrently() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (a, b) = tokio::join!(
        StateStore::open_dir(dir.path()),
        StateStore::open_dir(dir.path())
    );
    let (a, b) = (a.expect("open the store"), b.expect("open the store"));
    let mut tasks = Vec::new();
    for (s, store) in [a.clone(), b.clone()].into_iter().enumerate() {
        for n in 0..50u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .record(&sample("concurrent", &format!("img-{s}-{n}"), n))
                    .await
            }));
        }
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.expect("join the task").expect("record"));
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    assert_eq!(a.run("concurrent").await.expect("run").len(), 100);
    assert_eq!(b.latest().await.expect("latest").len(), 100);
}

/// Run by `state_sqlite_second_process_writes_concurrently` in a child process.
#[tokio::test]
#[ignore = "helper: a second process, started by state_sqlite_second_process_writes_concurrently"]
async fn state_sqlite_child_process_writer() {
    let dir = std::env::var("LABFORGE_STATE_CHILD_DIR").expect("LABFORGE_STATE_CHILD_DIR");
    let store = StateStore::open_dir(Path::new(&dir))
        .await
        .expect("open the store");
    let mut tasks = Vec::new();
    for n in 0..50u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .record(&sample("child", &format!("child-{n}"), n))
                .await
        }));
    }
    for task in tasks {
        task.await.expect("join the task").expect("record");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_sqlite_second_process_writes_concurrently() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = StateStore::open_dir(dir.path())
        .await
        .expect("open the store");
    let child = tokio::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--ignored",
            "--exact",
            "state_sqlite_child_process_writer",
            "--nocapture",
        ])
        .env("LABFORGE_STATE_CHILD_DIR", dir.path())
        .output();
    let parent = async {
        let mut tasks = Vec::new();
        for n in 0..50u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .record(&sample("parent", &format!("parent-{n}"), n))
                    .await
            }));
        }
        for task in tasks {
            task.await.expect("join the task").expect("record");
        }
    };
    let (output, ()) = tokio::join!(child, parent);
    let output = output.expect("the child process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test: {stdout}"
    );
    assert_eq!(store.run("parent").await.expect("run").len(), 50);
    assert_eq!(store.run("child").await.expect("run").len(), 50);
    assert_eq!(store.latest().await.expect("latest").len(), 100);
}

#[tokio::test]
async fn state_sqlite_scans_record_and_latest() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = StateStore::open_dir(dir.path())
        .await
        .expect("open the store");
    check_scans(&store, "").await;
    // Still there after reopening.
    store.close().await;
    let store = StateStore::open_dir(dir.path())
        .await
        .expect("open the store");
    let got = store
        .latest_scan("notebook-scipy-cpu", None)
        .await
        .expect("scan")
        .expect("a scan");
    assert_eq!(got.digest, format!("sha256:{:064x}", 2));
}

#[tokio::test]
async fn state_sqlite_publication_rows_pins_and_marker() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = StateStore::open_dir(dir.path())
        .await
        .expect("open the store");
    check_publication(&store).await;
}

#[tokio::test]
async fn state_sqlite_rejected_round_trips() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = StateStore::open_dir(dir.path())
        .await
        .expect("open the store");
    check_rejected(&store, "").await;
}

/// The bot's queue: a delivery with its jobs in one transaction, the same
/// delivery or the same job key again adds nothing, lanes are separate,
/// claims go in order, retries wait, a restart queues running jobs again,
/// `/retry` queues failed ones; requests are upserted by issue.
async fn check_bot_queue(store: &StateStore) {
    let job = |lane: &str, key: &str, issue: i64| NewJob {
        lane: lane.into(),
        kind: "request".into(),
        key: key.into(),
        issue: Some(issue),
        payload: format!("{{\"key\":\"{key}\"}}"),
    };
    let first = store
        .accept_delivery("d-1", "issues", &[job("requests", "issue:7:a", 7)], 1_000)
        .await
        .expect("accept");
    let Intake::Accepted { jobs } = first else {
        panic!("not accepted: {first:?}")
    };
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        store
            .accept_delivery("d-1", "issues", &[job("requests", "issue:7:b", 7)], 1_001)
            .await
            .expect("again"),
        Intake::Duplicate,
        "a redelivery is a no-op"
    );
    // A new delivery id carrying an event already queued (a replay).
    assert_eq!(
        store
            .accept_delivery("d-2", "issues", &[job("requests", "issue:7:a", 7)], 1_002)
            .await
            .expect("replay"),
        Intake::Accepted { jobs: vec![] }
    );
    store
        .accept_delivery(
            "d-3",
            "push",
            &[
                job("builds", "push:abc", 7),
                job("requests", "issue:8:a", 8),
            ],
            1_003,
        )
        .await
        .expect("accept");
    assert_eq!(store.deliveries().await.expect("count"), 3);

    // Lanes are independent; claims are in id order.
    let a = store
        .claim_job("requests", 2_000)
        .await
        .expect("claim")
        .expect("a job");
    assert_eq!(
        (a.key.as_str(), a.state.as_str(), a.attempts),
        ("issue:7:a", "running", 1)
    );
    let b = store
        .claim_job("requests", 2_000)
        .await
        .expect("claim")
        .expect("a job");
    assert_eq!(b.key, "issue:8:a");
    assert!(
        store
            .claim_job("requests", 2_000)
            .await
            .expect("claim")
            .is_none()
    );
    let build = store
        .claim_job("builds", 2_000)
        .await
        .expect("claim")
        .expect("a build");
    assert_eq!(build.key, "push:abc");

    // A retry waits for its time; a failure waits for /retry.
    store
        .finish_job(
            a.id,
            &JobEnd::Retry {
                not_before: 5_000,
                error: "502".into(),
            },
            2_001,
        )
        .await
        .expect("finish");
    assert!(
        store
            .claim_job("requests", 4_999)
            .await
            .expect("claim")
            .is_none()
    );
    let again = store
        .claim_job("requests", 5_000)
        .await
        .expect("claim")
        .expect("the retry");
    assert_eq!((again.id, again.attempts), (a.id, 2));
    assert_eq!(again.error.as_deref(), Some("502"));
    store
        .finish_job(
            again.id,
            &JobEnd::Failed {
                error: "gave up".into(),
            },
            5_001,
        )
        .await
        .expect("finish");
    store
        .finish_job(b.id, &JobEnd::Done, 5_001)
        .await
        .expect("finish");
    assert!(
        store
            .claim_job("requests", 9_000)
            .await
            .expect("claim")
            .is_none()
    );
    assert_eq!(store.retry_failed(8, 9_000).await.expect("retry"), 0);
    assert_eq!(store.retry_failed(7, 9_000).await.expect("retry"), 1);
    let retried = store
        .claim_job("requests", 9_001)
        .await
        .expect("claim")
        .expect("retried");
    // `/retry` gives a job its attempts back.
    assert_eq!(
        (retried.id, retried.error.clone(), retried.attempts),
        (a.id, None, 1)
    );

    // A restart: what was running is queued again.
    assert_eq!(store.requeue_running(10_000).await.expect("requeue"), 2);
    let counts = store.job_counts().await.expect("counts");
    assert_eq!(counts.get(&("requests".into(), "queued".into())), Some(&1));
    assert_eq!(counts.get(&("builds".into(), "queued".into())), Some(&1));
    assert_eq!(counts.get(&("requests".into(), "done".into())), Some(&1));

    // Bot-made jobs dedupe by key too.
    let rebuild = job("builds", "rebuild:comment-9", 7);
    assert!(
        store
            .enqueue(&rebuild, 11_000)
            .await
            .expect("enqueue")
            .is_some()
    );
    assert!(
        store
            .enqueue(&rebuild, 11_001)
            .await
            .expect("enqueue")
            .is_none()
    );
    assert_eq!(store.jobs().await.expect("jobs").len(), 4);

    // Requests.
    assert!(store.bot_request(7).await.expect("read").is_none());
    let mut request = BotRequest {
        issue: 7,
        slug: "nlp-course".into(),
        state: "needs-review".into(),
        author: "student".into(),
        file: "name: nlp-course\n".into(),
        body: "### Environment name\n\nnlp-course\n".into(),
        version: "2026-11-26T10:00:00Z".into(),
        pr: None,
        updated_at: 12_000,
    };
    store.save_bot_request(&request).await.expect("save");
    request.state = "approved".into();
    request.pr = Some(3);
    store.save_bot_request(&request).await.expect("save");
    assert_eq!(store.bot_request(7).await.expect("read"), Some(request));
}

#[tokio::test]
async fn state_sqlite_bot_queue() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = StateStore::open_dir(dir.path())
        .await
        .expect("open the store");
    check_bot_queue(&store).await;
    // It all survives a reopen (a restart of the hub).
    store.close().await;
    let store = StateStore::open_dir(dir.path())
        .await
        .expect("open the store");
    assert_eq!(store.deliveries().await.expect("count"), 3);
    assert_eq!(store.jobs().await.expect("jobs").len(), 4);
}

#[tokio::test]
async fn state_sqlite_migrates_version_1_to_current() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let file = dir.path().join(SQLITE_FILE);
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("connect");
        for statement in schema_v1("id INTEGER PRIMARY KEY AUTOINCREMENT") {
            sqlx::query(&statement)
                .execute(&mut conn)
                .await
                .expect("version-1 schema");
        }
        let scans: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'scans'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("query");
        assert_eq!(scans, 0, "a version-1 database has no scans table");
        conn.close().await.expect("close");
    }
    let store = StateStore::open_dir(dir.path())
        .await
        .expect("open the store");
    check_migrated_v1(&store).await;
    store.close().await;
    let mut conn = sqlite_conn(&file).await;
    let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT id, version FROM schema_version")
        .fetch_all(&mut conn)
        .await
        .expect("query");
    assert_eq!(rows, [(1, SCHEMA_VERSION)]);
    assert_eq!(SCHEMA_VERSION, 4);
    // Opening again changes nothing.
    let store = StateStore::open_dir(dir.path())
        .await
        .expect("open the store");
    assert_eq!(
        store.history("old-image", 10).await.expect("history").len(),
        2
    );
}

#[tokio::test]
async fn state_sqlite_regular_file_as_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, "x").expect("write a file");
    for path in [file.clone(), file.join("below")] {
        let err = StateStore::open_dir(&path)
            .await
            .expect_err("a file is not a folder");
        assert!(
            matches!(err, StateError::NotADirectory { .. }),
            "{path:?}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("not a folder"), "{msg}");
        assert!(msg.contains("--state"), "{msg}");
    }
    // The same through open().
    let err = StateStore::open(file.to_str().expect("a UTF-8 path"))
        .await
        .expect_err("a file is not a folder");
    assert!(matches!(err, StateError::NotADirectory { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&file).expect("read a file"), "x");
}

#[tokio::test]
async fn state_sqlite_newer_schema_is_refused_and_kept() {
    let dir = tempfile::tempdir().expect("temporary folder");
    StateStore::open_dir(dir.path())
        .await
        .expect("open the store")
        .record(&sample("r", "i", 0))
        .await
        .expect("record");
    let mut conn = sqlite_conn(&dir.path().join(SQLITE_FILE)).await;
    sqlx::query("UPDATE schema_version SET version = 99")
        .execute(&mut conn)
        .await
        .expect("query");
    let err = StateStore::open_dir(dir.path())
        .await
        .expect_err("a newer schema must be refused");
    assert!(
        matches!(err, StateError::NewerSchema { found: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade labforge"), "{err}");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM build_records")
        .fetch_one(&mut conn)
        .await
        .expect("query");
    assert_eq!(count, 1);
}

#[tokio::test]
async fn state_sqlite_unreadable_row_is_reported_with_its_image() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = StateStore::open_dir(dir.path())
        .await
        .expect("open the store");
    store
        .record(&sample("r", "broken-image", 0))
        .await
        .expect("record");
    let mut conn = sqlite_conn(&dir.path().join(SQLITE_FILE)).await;
    sqlx::query("UPDATE build_records SET result = 'exploded'")
        .execute(&mut conn)
        .await
        .expect("query");
    let err = store
        .latest()
        .await
        .expect_err("an unreadable row must be reported");
    let msg = err.to_string();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
    assert!(
        msg.contains("broken-image") && msg.contains("result"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_sqlite_memory_url_is_one_database_for_the_pool() {
    let store = StateStore::open("sqlite::memory:")
        .await
        .expect("open the store");
    let mut tasks = Vec::new();
    for n in 0..10u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.record(&sample("mem", &format!("img-{n}"), n)).await
        }));
    }
    for task in tasks {
        task.await.expect("join the task").expect("record");
    }
    assert_eq!(store.latest().await.expect("latest").len(), 10);
}

#[tokio::test]
async fn state_unsupported_url_scheme_is_refused() {
    let err = StateStore::open("mysql://root:hunter2@db/labforge")
        .await
        .expect_err("mysql:// must be refused");
    let msg = err.to_string();
    assert!(matches!(err, StateError::UnsupportedUrl { .. }), "{err:?}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(msg.contains("root:***@db"), "{msg}");
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/// The server from `scripts/services.sh`. Missing is a failure, never a skip.
fn postgres_url() -> String {
    match std::env::var("LABFORGE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            let required = ["CI", "LABFORGE_REQUIRE_SERVICES"]
                .iter()
                .filter(|v| std::env::var_os(v).is_some())
                .copied()
                .collect::<Vec<_>>();
            panic!(
                "LABFORGE_TEST_POSTGRES_URL is not set{}: run `bash scripts/services.sh` \
                 (as root) and `. /var/lib/labforge/env`, then run the tests again",
                if required.is_empty() {
                    String::new()
                } else {
                    format!(" ({} set: the services are required)", required.join(", "))
                }
            )
        }
    }
}

/// A fresh schema for one test; returns the store's URL (search_path set to
/// it) and the schema name.
async fn postgres_schema(test: &str) -> (String, String) {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = postgres_url();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let schema = format!(
        "lf_test_{test}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to LABFORGE_TEST_POSTGRES_URL: {e} (run `bash scripts/services.sh`)"
            )
        });
    sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(&mut conn)
        .await
        .expect("query");
    conn.close().await.expect("close");
    let sep = if base.contains('?') { '&' } else { '?' };
    (
        format!("{base}{sep}options=-c%20search_path%3D{schema}"),
        schema,
    )
}

async fn drop_schema(schema: &str) {
    let mut conn = sqlx::PgConnection::connect(&postgres_url())
        .await
        .expect("connect");
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await
        .expect("query");
}

#[tokio::test]
async fn state_postgres_round_trip_and_queries() {
    let (url, schema) = postgres_schema("queries").await;
    let store = StateStore::open(&url).await.expect("open the store");
    assert_eq!(store.backend(), "postgres");
    let rec = sample("single", "notebook-single", 0);
    store.record(&rec).await.expect("record");
    assert_eq!(
        store.run("single").await.expect("run"),
        std::slice::from_ref(&rec)
    );
    assert_eq!(
        store
            .last_pushed("notebook-single")
            .await
            .expect("last_pushed"),
        Some(rec)
    );
    let written = write_three_runs(&store, "p-").await;
    // latest() sees every image of this schema: the single one too.
    let mut latest = store.latest().await.expect("latest");
    latest.retain(|r| r.image.starts_with("p-"));
    let mut expected = written[6..].to_vec();
    expected.sort_by(|a, b| a.image.cmp(&b.image));
    assert_eq!(latest, expected);
    store.close().await;
    // Queries on a fresh store of only the three runs.
    let (url2, schema2) = postgres_schema("queries2").await;
    let store = StateStore::open_url(&url2).await.expect("open the store");
    let written = write_three_runs(&store, "q-").await;
    check_queries(&store, "q-", &written).await;
    store.close().await;
    drop_schema(&schema).await;
    drop_schema(&schema2).await;
}

#[tokio::test]
async fn state_postgres_reopen_keeps_the_data_and_the_schema() {
    let (url, schema) = postgres_schema("reopen").await;
    let written = {
        let store = StateStore::open_url(&url).await.expect("open the store");
        let written = write_three_runs(&store, "").await;
        store.close().await;
        written
    };
    for _ in 0..3 {
        let store = StateStore::open(&url).await.expect("open the store");
        check_queries(&store, "", &written).await;
        store.close().await;
    }
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let rows: Vec<(i32, i64)> = sqlx::query_as("SELECT id, version FROM schema_version")
        .fetch_all(&mut conn)
        .await
        .expect("query");
    assert_eq!(rows, [(1, SCHEMA_VERSION)]);
    conn.close().await.expect("close");
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_postgres_two_stores_write_concurrently() {
    let (url, schema) = postgres_schema("concurrent").await;
    // Two stores opened at once on a new schema: the migration lock holds.
    let (a, b) = tokio::join!(StateStore::open_url(&url), StateStore::open_url(&url));
    let (a, b) = (a.expect("open the store"), b.expect("open the store"));
    let mut tasks = Vec::new();
    for (s, store) in [a.clone(), b.clone()].into_iter().enumerate() {
        for n in 0..50u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .record(&sample("concurrent", &format!("img-{s}-{n}"), n))
                    .await
            }));
        }
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.expect("join the task").expect("record"));
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    assert_eq!(a.run("concurrent").await.expect("run").len(), 100);
    assert_eq!(b.latest().await.expect("latest").len(), 100);
    a.close().await;
    b.close().await;
    drop_schema(&schema).await;
}

#[tokio::test]
async fn state_postgres_scans_record_and_latest() {
    let (url, schema) = postgres_schema("scans").await;
    let store = StateStore::open_url(&url).await.expect("open the store");
    check_scans(&store, "").await;
    store.close().await;
    drop_schema(&schema).await;
}

#[tokio::test]
async fn state_postgres_publication_rows_pins_and_marker() {
    let (url, schema) = postgres_schema("publication").await;
    let store = StateStore::open_url(&url).await.expect("open the store");
    check_publication(&store).await;
    store.close().await;
    drop_schema(&schema).await;
}

#[tokio::test]
async fn state_postgres_rejected_round_trips() {
    let (url, schema) = postgres_schema("rejected").await;
    let store = StateStore::open_url(&url).await.expect("open the store");
    check_rejected(&store, "").await;
    store.close().await;
    drop_schema(&schema).await;
}

#[tokio::test]
async fn state_postgres_bot_queue() {
    let (url, schema) = postgres_schema("bot").await;
    let store = StateStore::open_url(&url).await.expect("open the store");
    check_bot_queue(&store).await;
    store.close().await;
    drop_schema(&schema).await;
}

#[tokio::test]
async fn state_postgres_migrates_version_1_to_current() {
    let (url, schema) = postgres_schema("migrate").await;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    for statement in schema_v1("id BIGSERIAL PRIMARY KEY") {
        sqlx::query(&statement)
            .execute(&mut conn)
            .await
            .expect("version-1 schema");
    }
    let store = StateStore::open_url(&url).await.expect("open the store");
    check_migrated_v1(&store).await;
    store.close().await;
    let rows: Vec<(i32, i64)> = sqlx::query_as("SELECT id, version FROM schema_version")
        .fetch_all(&mut conn)
        .await
        .expect("query");
    assert_eq!(rows, [(1, SCHEMA_VERSION)]);
    let scans_schema: String = sqlx::query_scalar(
        "SELECT table_schema::text FROM information_schema.tables WHERE table_name = 'scans' \
         AND table_schema = $1",
    )
    .bind(&schema)
    .fetch_one(&mut conn)
    .await
    .expect("the scans table is in the test schema");
    assert_eq!(scans_schema, schema);
    conn.close().await.expect("close");
    drop_schema(&schema).await;
}

#[tokio::test]
async fn state_postgres_wrong_password_is_a_redacted_error() {
    let url = postgres_url();
    let bad = match url.split_once("://").and_then(|(s, rest)| {
        let (userinfo, host) = rest.split_once('@')?;
        let user = userinfo.split(':').next()?;
        Some(format!("{s}://{user}:wrong-Pa55word@{host}"))
    }) {
        Some(bad) => bad,
        None => panic!("LABFORGE_TEST_POSTGRES_URL has no user:password@: {url}"),
    };
    let err = StateStore::open(&bad)
        .await
        .expect_err("a wrong password must be refused");
    let msg = err.to_string();
    assert!(matches!(err, StateError::Open { .. }), "{err:?}");
    assert!(!msg.contains("wrong-Pa55word"), "{msg}");
    assert!(msg.contains(":***@"), "{msg}");
    assert!(msg.contains("cannot open the state database"), "{msg}");
    assert!(msg.contains("--state"), "{msg}");
}
