//! `labforge build`, `labforge status` and `labforge history`: options,
//! progress output and tables. The pipeline itself is `labforge_builder::build`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use labforge_builder::RegistryOptions;
use labforge_builder::build::{
    self, Backend, BuildSettings, Event, KubeBackend, Outcome, Reporter, Summary,
};
use labforge_builder::cluster::ClusterOptions;
use labforge_builder::config::Config;
use labforge_builder::push::Compression;
use labforge_builder::state::{self, BuildRecord, StateStore, TestResult};
use labforge_core::catalog::Registry;

/// Where the state store and build logs live unless told otherwise.
pub const DEFAULT_STATE: &str = ".labforge/state";

#[derive(Args)]
pub struct BuildArgs {
    /// Build these images (a concrete name like notebook-scipy-cpu, or an
    /// image file's name for all its variants) and whatever they need;
    /// default: the whole catalog
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Registry to check and push to, HOST[:PORT][/PREFIX], instead of the catalog's
    #[arg(long, env = "LABFORGE_REGISTRY", value_name = "TARGET")]
    pub registry: Option<String>,
    /// Images built at once [default: configuration `jobs`, else 2]
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// State folder (SQLite file, build logs) or a postgres:// URL [default: configuration `state`, else .labforge/state]
    #[arg(long, env = "LABFORGE_STATE", value_name = "DIR|URL")]
    pub state: Option<String>,
    /// Layer compression for the push: gzip (default, every client reads it) or zstd (faster)
    #[arg(long, value_name = "ALGORITHM")]
    pub compression: Option<Compression>,
    /// Run smoke tests marked `gpu: true` (the engine has NVIDIA GPUs)
    #[arg(long)]
    pub gpu: bool,
    /// auto (BuildKit where the engine offers it, else classic), buildkit or classic [default: configuration `build.builder`, else auto]
    #[arg(long, value_name = "BUILDER")]
    pub builder: Option<build::Builder>,
    /// Where to build and test: engine (the local Docker Engine) or
    /// kubernetes (BuildKit Jobs and test Pods in the `[kubernetes]`
    /// namespace, see `[kubernetes.build]`) [default: configuration
    /// `build.backend`, else engine]
    #[arg(long, value_name = "BACKEND")]
    pub backend: Option<String>,
    /// Print the run's summary as JSON on stdout (progress still goes to stderr)
    #[arg(long)]
    pub json: bool,
}

/// The build backend from the option or `[build] backend`, with its
/// `[kubernetes]` settings checked before anything starts.
fn backend(args: &BuildArgs, config: &Config, jobs: usize) -> Result<Backend> {
    let name = args
        .backend
        .clone()
        .or_else(|| config.build.backend.clone())
        .unwrap_or_else(|| "engine".into());
    match name.as_str() {
        "engine" => Ok(Backend::Engine),
        "kubernetes" => {
            let k8s = &config.kubernetes;
            let b = &k8s.build;
            let instance = crate::k8s_cmd::sync_settings(config)?.instance;
            let Some(context_url) = b.context_url.clone() else {
                anyhow::bail!(
                    "the kubernetes build backend needs `[kubernetes.build] context_url`: the URL at which build pods reach this machine's context server (e.g. http://labforge-hub.labforge.svc:7520, served from `listen`, default 0.0.0.0:7520)"
                );
            };
            let host = context_url
                .strip_prefix("http://")
                .or_else(|| context_url.strip_prefix("https://"))
                .map(|rest| rest.split(['/', ':']).next().unwrap_or_default());
            if host.is_none_or(str::is_empty) {
                anyhow::bail!(
                    "[kubernetes.build] context_url = {context_url:?} is not an http(s) URL with a host"
                );
            }
            Ok(Backend::Kubernetes(Box::new(KubeBackend {
                cluster: ClusterOptions {
                    namespace: k8s.namespace.clone(),
                    context: k8s.context.clone(),
                    kubeconfig: None,
                    retry: Default::default(),
                },
                instance,
                concurrency: b.concurrency.unwrap_or(jobs).max(1),
                listen: b
                    .listen
                    .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 7520))),
                context_url,
                token_ttl: Duration::from_secs(
                    b.token_ttl_seconds.unwrap_or(600).clamp(30, 86_400),
                ),
                job: b.job.clone(),
                tests: b.tests.clone(),
            })))
        }
        other => anyhow::bail!(
            "unknown build backend {other:?} (from {}): use engine or kubernetes",
            if args.backend.is_some() {
                "--backend"
            } else {
                "build.backend in the configuration"
            }
        ),
    }
}

#[derive(Args)]
pub struct ScanArgs {
    /// Scan these images (a concrete name, or an image file's name for all
    /// its variants); default: the whole catalog
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Registry the images are in, HOST[:PORT][/PREFIX], instead of the catalog's
    #[arg(long, env = "LABFORGE_REGISTRY", value_name = "TARGET")]
    pub registry: Option<String>,
    /// State folder or postgres:// URL [default: configuration `state`, else .labforge/state]
    #[arg(long, env = "LABFORGE_STATE", value_name = "DIR|URL")]
    pub state: Option<String>,
    /// Print the outcomes as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// `labforge scan`: the images in the registry, scanned again.
pub async fn rescan(args: &ScanArgs, input: BuildInputs<'_>) -> Result<ExitCode> {
    let config = input.config;
    let location = state_location(args.state.as_ref(), config);
    let store = StateStore::open(&location).await?;
    let settings = BuildSettings {
        registry: input.registry,
        registry_options: input.options,
        jobs: config.jobs.unwrap_or(2).max(1),
        selection: args.images.clone(),
        state_dir: state_dir(&location),
        ca_bundle: None,
        ca_port: config.build.ca_port.unwrap_or(7519),
        gpu: false,
        builder: build::Builder::Auto,
        compression: Compression::Gzip,
        push_retries: config.build.push_retries.unwrap_or(5),
        date: today(),
        run_id: state::new_run_id(),
        build_args: config.build_args.clone(),
        stand_ins: input.stand_ins,
        scan: config.scan.clone(),
        backend: Backend::Engine,
    };
    let started = std::time::Instant::now();
    let run_id = settings.run_id.clone();
    let registry = format!("{}/{}", settings.registry.host, settings.registry.prefix);
    let reporter: Arc<dyn Reporter> = Arc::new(PlainReporter);
    let rescanned =
        labforge_builder::rescan::rescan(input.analyzed, settings, &store, reporter).await;
    store.close().await;
    let rescanned = rescanned?;
    let summary = Summary {
        run_id,
        registry,
        images: rescanned.outcomes,
        engine_used: rescanned.engine_used,
        registry_requests: rescanned.registry_requests,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(if summary.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(Args)]
pub struct StateArgs {
    /// State folder or postgres:// URL [default: configuration `state`, else .labforge/state]
    #[arg(long, env = "LABFORGE_STATE", value_name = "DIR|URL")]
    pub state: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// The state location: the option, the configuration, or the default.
pub fn state_location(option: Option<&String>, config: &Config) -> String {
    option
        .cloned()
        .or_else(|| config.state.as_ref().map(|p| p.display().to_string()))
        .unwrap_or_else(|| DEFAULT_STATE.to_string())
}

/// The folder for logs, spool files and the push cache: the state folder,
/// or the default one when the state is a database URL.
fn state_dir(location: &str) -> PathBuf {
    let dir = if location.contains("://") {
        PathBuf::from(DEFAULT_STATE)
    } else {
        PathBuf::from(location)
    };
    // Absolute, so that recorded log paths work from anywhere.
    std::path::absolute(&dir).unwrap_or(dir)
}

pub struct BuildInputs<'a> {
    pub config: &'a Config,
    pub analyzed: &'a labforge_core::Analyzed,
    pub registry: Registry,
    pub options: RegistryOptions,
    pub stand_ins: std::collections::BTreeSet<String>,
}

pub async fn build(args: &BuildArgs, input: BuildInputs<'_>) -> Result<ExitCode> {
    let config = input.config;
    let location = state_location(args.state.as_ref(), config);
    let store = StateStore::open(&location).await?;
    let compression = match (&args.compression, &config.build.compression) {
        (Some(c), _) => *c,
        (None, Some(c)) => c
            .parse()
            .map_err(|e| anyhow::anyhow!("build.compression in the configuration: {e}"))?,
        (None, None) => Compression::Gzip,
    };
    let jobs = args.jobs.or(config.jobs).unwrap_or(2).max(1);
    let backend = backend(args, config, jobs)?;
    let settings = BuildSettings {
        registry: input.registry,
        registry_options: input.options,
        jobs,
        selection: args.images.clone(),
        state_dir: state_dir(&location),
        ca_bundle: config.build.ca_bundle.clone(),
        ca_port: config.build.ca_port.unwrap_or(7519),
        gpu: args.gpu || config.build.gpu,
        builder: match (&args.builder, &config.build.builder) {
            (Some(b), _) => *b,
            (None, Some(b)) => b
                .parse()
                .map_err(|e| anyhow::anyhow!("build.builder in the configuration: {e}"))?,
            (None, None) => build::Builder::Auto,
        },
        compression,
        push_retries: config.build.push_retries.unwrap_or(5),
        date: today(),
        run_id: state::new_run_id(),
        build_args: config.build_args.clone(),
        stand_ins: input.stand_ins,
        scan: input.config.scan.clone(),
        backend,
    };
    let reporter: Arc<dyn Reporter> = if std::io::stderr().is_terminal() {
        Arc::new(TerminalReporter::new())
    } else {
        Arc::new(PlainReporter)
    };
    let summary = build::build(input.analyzed, settings, &store, Arc::clone(&reporter)).await;
    drop(reporter);
    store.close().await;
    let summary = summary?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(if summary.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_summary(summary: &Summary) {
    eprintln!();
    let rows: Vec<Vec<String>> = summary
        .images
        .iter()
        .map(|o| {
            vec![
                o.image.clone(),
                o.result.to_string(),
                o.content_tag.clone(),
                o.digest.as_deref().map_or("-".into(), short_digest),
                tests_cell(o),
                scan_cell(o),
                seconds(o.stages.values().sum()),
                o.reason.clone(),
            ]
        })
        .collect();
    crate::print_table(
        &[
            "IMAGE", "RESULT", "TAG", "DIGEST", "TESTS", "SCAN", "TIME", "WHY",
        ],
        rows,
    );
    let count = |r: state::BuildResult| summary.images.iter().filter(|o| o.result == r).count();
    println!();
    println!(
        "{} images: {} built, {} already present, {} failed, {} rejected by the scan policy, {} blocked, in {} (registry {}, run {}{})",
        summary.images.len(),
        count(state::BuildResult::Built),
        count(state::BuildResult::Present),
        count(state::BuildResult::Failed),
        count(state::BuildResult::Rejected),
        count(state::BuildResult::Blocked),
        seconds(summary.duration_ms),
        summary.registry,
        summary.run_id,
        if summary.engine_used {
            ""
        } else {
            "; nothing to build, the engine was not contacted"
        },
    );
    for o in summary.images.iter().filter(|o| {
        matches!(
            o.result,
            state::BuildResult::Failed | state::BuildResult::Rejected
        )
    }) {
        if let Some(scan) = o.scan.as_ref().filter(|s| !s.reasons.is_empty()) {
            println!();
            println!(
                "{} was rejected by the scan policy ({}); `labforge scan-report {}@{}` shows every finding:",
                o.image,
                scan.summary,
                o.image,
                o.digest.as_deref().unwrap_or("-")
            );
            for r in &scan.reasons {
                println!("  | {r}");
            }
            if scan
                .reasons
                .iter()
                .any(|r| r.contains("scanner did not finish"))
            {
                println!(
                    "  a scanner did not finish: fix it (see [scan] in labforge.toml), then `labforge scan {}` scans the same digest again",
                    o.image
                );
            } else {
                println!(
                    "  fix the package versions, or add a waiver (id, reason, expires, approved_by) under `scan:` in its catalog file"
                );
            }
            continue;
        }
        println!();
        println!("{} failed: {}", o.image, o.reason);
        for l in &o.tail {
            println!("  | {l}");
        }
        if let Some(log) = &o.log {
            println!("  full log: {}", log.display());
        }
    }
}

fn scan_cell(o: &Outcome) -> String {
    match &o.scan {
        None => "-".into(),
        Some(s) => {
            let verdict = match s.verdict {
                labforge_core::scan::policy::Verdict::Pass => "pass",
                labforge_core::scan::policy::Verdict::Fail => "FAIL",
            };
            format!(
                "{verdict} ({}C {}H, {} blocking)",
                s.summary.critical, s.summary.high, s.summary.blocking
            )
        }
    }
}

fn tests_cell(o: &Outcome) -> String {
    if o.tests.is_empty() {
        return "-".into();
    }
    let n = |r: TestResult| o.tests.iter().filter(|t| t.result == r).count();
    let mut s = format!("{}/{} passed", n(TestResult::Passed), o.tests.len());
    if n(TestResult::Skipped) > 0 {
        s.push_str(&format!(", {} skipped", n(TestResult::Skipped)));
    }
    s
}

pub async fn status(args: &StateArgs, config: &Config) -> Result<ExitCode> {
    let location = state_location(args.state.as_ref(), config);
    let store = StateStore::open(&location).await?;
    let latest = store.latest().await?;
    store.close().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&latest)?);
        return Ok(ExitCode::SUCCESS);
    }
    if latest.is_empty() {
        println!("no builds recorded in {location} yet; `labforge build` records them");
        return Ok(ExitCode::SUCCESS);
    }
    crate::print_table(
        &["IMAGE", "RESULT", "TAG", "DIGEST", "WHEN", "RUN", "WHY"],
        latest.iter().map(record_row).collect(),
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct HistoryArgs {
    /// The image, e.g. notebook-scipy-cpu
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// At most this many records, newest first
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
    #[command(flatten)]
    pub state: StateArgs,
}

pub async fn history(args: &HistoryArgs, config: &Config) -> Result<ExitCode> {
    let location = state_location(args.state.state.as_ref(), config);
    let store = StateStore::open(&location).await?;
    let records = store.history(&args.image, args.limit).await?;
    store.close().await;
    if args.state.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(ExitCode::SUCCESS);
    }
    if records.is_empty() {
        println!(
            "no builds of {:?} recorded in {location}; `labforge status` lists the images that have some",
            args.image
        );
        return Ok(ExitCode::from(1));
    }
    crate::print_table(
        &["IMAGE", "RESULT", "TAG", "DIGEST", "WHEN", "RUN", "WHY"],
        records.iter().map(record_row).collect(),
    );
    Ok(ExitCode::SUCCESS)
}

fn record_row(r: &BuildRecord) -> Vec<String> {
    vec![
        r.image.clone(),
        r.result.to_string(),
        r.content_tag.clone(),
        r.digest.as_deref().map_or("-".into(), short_digest),
        state::format_rfc3339(r.finished_at),
        r.run_id.clone(),
        r.reason.clone(),
    ]
}

fn short_digest(d: &str) -> String {
    d.get(..19).unwrap_or(d).to_string()
}

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// Today (UTC) as `YYYYMMDD`, for the moving date tag.
fn today() -> String {
    // `2026-11-26T…` → `20261126`
    state::format_rfc3339(state::unix_ms_now())
        .chars()
        .take(10)
        .filter(char::is_ascii_digit)
        .collect()
}

/// Plain lines on stderr, each prefixed with its image: for logs and CI.
struct PlainReporter;

impl Reporter for PlainReporter {
    fn event(&self, event: Event) {
        match event {
            Event::Planned { build, present } => {
                if build.is_empty() {
                    eprintln!("nothing to build: {present} images are already in the registry");
                } else {
                    eprintln!(
                        "building {} image(s): {} ({present} already in the registry)",
                        build.len(),
                        build.join(", ")
                    );
                }
            }
            Event::Stage { image, stage } => eprintln!("[{image}] == {stage}"),
            Event::Line { image, line } => eprintln!("[{image}] {line}"),
            Event::Test { image, test } => {
                eprintln!(
                    "[{image}] test {}: {:?} {}",
                    test.name, test.result, test.detail
                )
            }
            Event::Done(o) => eprintln!("[{}] {}: {}", o.image, o.result, done_text(&o)),
        }
    }
}

fn done_text(o: &Outcome) -> String {
    match (&o.digest, o.result) {
        (Some(d), _) => format!("{}@{d}", o.repository),
        (None, _) => o.reason.clone(),
    }
}

/// A line per running image with its stage and latest output; finished
/// images are printed above it.
struct TerminalReporter {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl TerminalReporter {
    fn new() -> TerminalReporter {
        TerminalReporter {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, image: &str) -> Option<ProgressBar> {
        let mut bars = self.bars.lock().ok()?;
        Some(
            bars.entry(image.to_string())
                .or_insert_with(|| {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:.bold} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(image.to_string());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                })
                .clone(),
        )
    }
}

impl Reporter for TerminalReporter {
    fn event(&self, event: Event) {
        match event {
            Event::Planned { .. } => PlainReporter.event(event),
            Event::Stage { image, stage } => {
                if let Some(bar) = self.bar(&image) {
                    bar.set_message(format!("{stage}…"));
                }
            }
            Event::Line { image, line } => {
                if let Some(bar) = self.bar(&image) {
                    let line: String = line.chars().take(100).collect();
                    bar.set_message(line);
                }
            }
            Event::Test { image, test } => {
                let _ = self.multi.println(format!(
                    "[{image}] test {}: {:?} {}",
                    test.name, test.result, test.detail
                ));
            }
            Event::Done(o) => {
                if let Some(bar) = self.bars.lock().ok().and_then(|mut b| b.remove(&o.image)) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                let _ =
                    self.multi
                        .println(format!("[{}] {}: {}", o.image, o.result, done_text(&o)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn today_is_a_date() {
        let t = super::today();
        assert_eq!(t.len(), 8);
        assert!(t.starts_with("20"));
    }
}
