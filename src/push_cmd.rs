//! `labforge push IMAGE TARGET`: push one engine image to a registry, with
//! progress lines on stderr and a summary (or `--json`) on stdout.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use labforge_builder::config::Config;
use labforge_builder::creds::Lookup;
use labforge_builder::engine::Engine;
use labforge_builder::push::{self, Compression, LayerSource, PushEvent, PushOptions, Pushed};
use labforge_builder::{ImageRef, RegistryClient, RegistryOptions};

/// Push an image from the Docker Engine to a registry
///
/// Reads IMAGE from the engine, compresses its layers in parallel and
/// uploads them streaming; blobs the registry has are skipped, blobs it has
/// in another repository are mounted. The manifest is an OCI image manifest
/// whose config is the engine's own (its digest is the image ID); it is put
/// under TARGET's tag and every --tag, and the digest the registry answers
/// must match the one computed locally. A push cache in the state folder
/// makes pushing the same image again (to any repository of the registry)
/// take a few requests without reading the engine.
///
/// Credentials: LABFORGE_REGISTRY_USERNAME and LABFORGE_REGISTRY_PASSWORD,
/// else Docker's config.json ($DOCKER_CONFIG or ~/.docker: auths, credHelpers,
/// credsStore). Loopback registries and --insecure-registry hosts are spoken
/// to over plain HTTP, others over HTTPS.
#[derive(clap::Args, Clone, Debug)]
pub struct PushArgs {
    /// The engine image: a reference (name:tag) or an image ID
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Where to push: HOST[:PORT]/REPOSITORY[:TAG] (without a tag and
    /// without --tag, the tag is `latest`)
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// Another tag to point at the pushed manifest (repeatable; after
    /// TARGET's tag, in the order given)
    #[arg(long = "tag", short = 't', value_name = "TAG")]
    pub tags: Vec<String>,
    /// Layer compression: gzip (every engine pulls it) or zstd (faster and
    /// smaller; needs Docker 23+ or containerd 1.5+ to pull)
    #[arg(long, value_name = "gzip|zstd", default_value = "gzip")]
    pub compression: Compression,
    /// Compression threads [default: the number of CPUs]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Retries of a failed request (429, 5xx, lost connection), with
    /// doubling waits; 401, 403 and digest errors are never retried
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,
    /// State folder: the push cache (push-cache/) and spooled layers
    /// (spool/) [default: the configuration's `state`, else .labforge/state]
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// A registry (HOST[:PORT]) to reach over plain HTTP besides loopback
    /// ones (repeatable; adds to the configuration's insecure_registries)
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Read the image only through the engine's export API (`docker save`),
    /// never straight from a local engine's layer store (which is used, and
    /// checked against the layer digests, when the engine is local and uses
    /// overlay2)
    #[arg(long)]
    pub no_layer_store: bool,
    /// Print the result as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// `TARGET` split into registry, repository and tag.
fn parse_target(target: &str) -> Result<(String, String, Option<String>)> {
    let Some((host, rest)) = target.split_once('/') else {
        bail!("the target {target:?} has no repository: use HOST[:PORT]/REPOSITORY[:TAG]");
    };
    let host_ok = host.contains('.') || host.contains(':') || host == "localhost";
    if !host_ok || host.is_empty() {
        bail!(
            "the target {target:?} does not start with a registry host: use HOST[:PORT]/REPOSITORY[:TAG], e.g. 127.0.0.1:5000/lab/image:tag"
        );
    }
    if rest.contains('@') {
        bail!("the target {target:?} names a digest; push to a tag instead");
    }
    let (repository, tag) = match rest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
        _ => (rest, None),
    };
    let repo_ok = !repository.is_empty()
        && repository.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    if !repo_ok {
        bail!(
            "the repository {repository:?} in {target:?} is not valid: lower-case letters, digits, `.`, `_`, `-` and `/` between parts"
        );
    }
    if let Some(t) = &tag {
        check_tag(t)?;
    }
    Ok((host.to_string(), repository.to_string(), tag))
}

fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        bail!(
            "{tag:?} is not a valid tag: up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
        )
    }
}

/// Run `labforge push` on a runtime of its own.
pub fn execute(args: &PushArgs, config: &Config) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let code = runtime.block_on(run(args.clone(), config))?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(2)))
}

pub async fn run(args: PushArgs, config: &Config) -> Result<i32> {
    let started = Instant::now();
    let (host, repository, target_tag) = parse_target(&args.target)?;
    let mut tags: Vec<String> = Vec::new();
    for tag in target_tag.iter().chain(args.tags.iter()) {
        check_tag(tag)?;
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    if tags.is_empty() {
        tags.push("latest".to_string());
    }
    let state = args
        .state
        .clone()
        .or_else(|| config.state.clone())
        .unwrap_or_else(|| PathBuf::from(".labforge/state"));
    let options = PushOptions {
        compression: args.compression,
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1),
        retries: args.retries,
        retry_delay: Duration::from_millis(500),
        spool_dir: state.join("spool"),
        cache_dir: Some(state.join("push-cache")),
    };

    let credentials = Lookup::from_env()
        .credentials(&host)
        .with_context(|| format!("looking up credentials for {host}"))?;
    let (username, password) = match credentials.map(|c| c.login()) {
        Some((u, p)) => (Some(u), Some(p)),
        None => (None, None),
    };
    let mut insecure = config.insecure_registries.clone();
    insecure.extend(args.insecure_registry.iter().cloned());
    let registry = RegistryClient::new(
        RegistryOptions {
            insecure,
            username,
            password,
            timeout: None,
        },
        &[host.as_str()],
    )?;
    let engine = Engine::connect().await?;
    let target = ImageRef {
        registry: host.clone(),
        repository: repository.clone(),
        reference: tags[0].clone(),
    };

    let printer = Printer::new();
    let progress = |event: PushEvent| printer.event(event);
    let source = if args.no_layer_store {
        LayerSource::Export
    } else {
        LayerSource::Auto
    };
    let pushed = push::push_image_from(
        &engine,
        &registry,
        &args.image,
        &target,
        &tags,
        &options,
        &progress,
        source,
    )
    .await?;
    printer.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&pushed)?);
    } else {
        println!(
            "{}",
            summary(&host, &repository, &pushed, started.elapsed())
        );
    }
    Ok(0)
}

fn summary(host: &str, repository: &str, p: &Pushed, elapsed: Duration) -> String {
    let blobs = p.blobs_uploaded + p.blobs_mounted + p.blobs_present;
    format!(
        "pushed {host}/{repository}@{} ({blobs} blobs: {} uploaded {}, {} mounted, {} present; tags {}) in {:.1} s",
        p.digest,
        p.blobs_uploaded,
        push::human_bytes(p.uploaded_bytes),
        p.blobs_mounted,
        p.blobs_present,
        p.tags.join(", "),
        elapsed.as_secs_f64()
    )
}

/// Progress lines on stderr: on a terminal, upload progress rewrites one
/// line; otherwise every event is a plain line, upload progress at most
/// every few seconds per blob.
struct Printer {
    terminal: bool,
    state: Mutex<PrinterState>,
}

#[derive(Default)]
struct PrinterState {
    /// A progress line is open (no newline yet).
    open: bool,
    last_upload_line: HashMap<String, Instant>,
}

const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

impl Printer {
    fn new() -> Printer {
        Printer {
            terminal: std::io::stderr().is_terminal(),
            state: Mutex::new(PrinterState::default()),
        }
    }

    fn event(&self, event: PushEvent) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if let PushEvent::Uploading { digest, .. } = &event {
            if self.terminal {
                eprint!("\r\x1b[2K{event}");
                state.open = true;
                return;
            }
            let now = Instant::now();
            let due = state
                .last_upload_line
                .get(digest)
                .is_none_or(|t| now.duration_since(*t) >= PLAIN_PROGRESS_EVERY);
            if !due {
                return;
            }
            state.last_upload_line.insert(digest.clone(), now);
        }
        if state.open {
            eprint!("\r\x1b[2K");
            state.open = false;
        }
        eprintln!("{event}");
    }

    fn finish(&self) {
        if let Ok(mut state) = self.state.lock()
            && state.open
        {
            eprintln!();
            state.open = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("127.0.0.1:5000/lab/x:main-0123").expect("ok"),
            (
                "127.0.0.1:5000".into(),
                "lab/x".into(),
                Some("main-0123".into())
            )
        );
        assert_eq!(
            parse_target("localhost:5000/x").expect("ok"),
            ("localhost:5000".into(), "x".into(), None)
        );
        assert_eq!(
            parse_target("registry.example.edu/a/b").expect("ok"),
            ("registry.example.edu".into(), "a/b".into(), None)
        );
        for bad in [
            "ubuntu:22.04",
            "library/ubuntu",
            "r.example.edu/",
            "r.example.edu/Upper",
            "r.example.edu/x@sha256:abc",
            "r.example.edu/x:-bad",
            "r.example.edu/a//b",
        ] {
            assert!(parse_target(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn summary_line() {
        let p = Pushed {
            digest: "sha256:abc".into(),
            config_digest: "sha256:def".into(),
            size: 10,
            uploaded_bytes: 1_500_000_000,
            blobs_uploaded: 3,
            blobs_mounted: 1,
            blobs_present: 0,
            exported: true,
            tags: vec!["a".into(), "latest".into()],
        };
        assert_eq!(
            summary("r:5000", "x", &p, Duration::from_millis(9800)),
            "pushed r:5000/x@sha256:abc (4 blobs: 3 uploaded 1.50 GB, 1 mounted, 0 present; tags a, latest) in 9.8 s"
        );
    }
}
