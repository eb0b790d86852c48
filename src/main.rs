//! The `labforge` command: a thin front over the builder library.

mod bot_cmd;
mod build_cmd;
mod k8s_cmd;
mod push_cmd;
mod scan_cmd;
mod serve_cmd;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use labforge_builder::config::Config;
use labforge_builder::{AnalyzeError, Layout, RegistryOptions};
use labforge_core::catalog::Registry;
use labforge_core::plan::{Action, Plan, Presence};
use labforge_core::render::{BaseMap, BuildEnv};
use labforge_core::{Analyzed, Problem};

/// Build, scan and publish the image catalog of a GPU JupyterHub.
///
/// labforge turns a reviewed YAML catalog (catalog/) and Tera Dockerfile
/// templates (dockerfiles/) into content-addressed images. Every image's
/// identity is a hash of its rendered Dockerfile, context files, parent and
/// build arguments, so unchanged images are never rebuilt.
#[derive(Parser)]
#[command(name = "labforge", version, propagate_version = true)]
struct Cli {
    /// Configuration file [default: labforge.toml, if present]
    #[arg(long, global = true, env = "LABFORGE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Folder holding catalog.yaml and images/ [default: catalog]
    #[arg(long, global = true, env = "LABFORGE_CATALOG", value_name = "DIR")]
    catalog: Option<PathBuf>,
    /// Folder of Dockerfile templates and partials [default: dockerfiles]
    #[arg(long, global = true, env = "LABFORGE_DOCKERFILES", value_name = "DIR")]
    dockerfiles: Option<PathBuf>,
    /// More log output on stderr (-v: info, -vv: debug); LABFORGE_LOG takes a tracing filter
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the catalog and templates, reporting every problem as file:line:col
    ///
    /// Decodes catalog.yaml and every images/*.yaml, expands variants, checks
    /// names, references, cycles and value formats (PEP 508/440, Debian,
    /// Open VSX, Kubernetes, KubeSpawner), and renders every Dockerfile.
    /// Exits 1 if anything is wrong.
    Validate {
        #[command(flatten)]
        bases: BaseMapArgs,
        /// List the concrete images after a successful check
        #[arg(long)]
        list: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Write each image's Dockerfile and build context into a folder
    ///
    /// Writes OUT/<image>/Dockerfile with the context files it copies, and
    /// OUT/index.json with identities and tags. All or nothing: on any error
    /// nothing is written and an earlier output stays as it was.
    Render {
        /// Output folder (replaced as a whole if labforge wrote it before)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        bases: BaseMapArgs,
        /// Only these images (default: all)
        #[arg(value_name = "IMAGE")]
        images: Vec<String>,
        /// Print what was written as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show what must be built, why, and in which order
    ///
    /// Computes every image's content tag (<variant>-<hash12>), asks the
    /// registry whether it exists (one manifest HEAD per image, concurrently),
    /// and gives the reason for each build: new, which input changed, or that
    /// the parent changed. With --baseline, reasons compare against an earlier
    /// `plan --json`.
    Plan {
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        bases: BaseMapArgs,
        /// An earlier `labforge plan --json` output to compare inputs with
        #[arg(long, value_name = "FILE")]
        baseline: Option<PathBuf>,
        /// How many registry requests run at once [default: 8]
        #[arg(long, short = 'j', value_name = "N")]
        jobs: Option<usize>,
        /// Print the plan as JSON
        #[arg(long)]
        json: bool,
    },
    /// Build, smoke-test and push every image the registry lacks
    ///
    /// Plans first: an image whose content tag is already in the registry is
    /// skipped without any call to the Docker Engine. The rest are built
    /// (parents before children, independent images at once up to --jobs) on
    /// their parent pinned by digest, smoke-tested in containers without
    /// network (each catalog test, plus a check that the Jupyter server's
    /// /api answers), and pushed with their content tag and the moving tags
    /// <variant>, <variant>-<date> and latest. A failure stops only the
    /// images below it. Every result is recorded in the state store; build
    /// logs go to <state>/logs/<run>/<image>.log. Exits 1 if anything failed.
    Build {
        #[command(flatten)]
        args: build_cmd::BuildArgs,
        #[command(flatten)]
        bases: BaseMapArgs,
    },
    /// Show the latest recorded build of every image
    Status {
        #[command(flatten)]
        args: build_cmd::StateArgs,
    },
    /// Show the recorded builds of one image, newest first
    History {
        #[command(flatten)]
        args: build_cmd::HistoryArgs,
    },
    /// Push an image from the Docker Engine to a registry
    ///
    /// Layers are compressed in parallel and uploaded streaming; blobs the
    /// registry has are skipped and blobs it has in another repository are
    /// mounted; the manifest (OCI, config = the engine's image config) is put
    /// under TARGET's tag and every --tag, and the digest the registry
    /// answers must match the local one. A push cache in the state folder
    /// makes pushing the same image again, to any repository of the
    /// registry, a few requests. Credentials: LABFORGE_REGISTRY_USERNAME and
    /// LABFORGE_REGISTRY_PASSWORD, else Docker's config.json (auths,
    /// credHelpers, credsStore).
    Push(push_cmd::PushArgs),
    /// Scan the images in the registry again, without rebuilding them
    ///
    /// For today's advisories, or for images pushed before the scan gate.
    /// Each image's current content tag is pulled into the engine if needed,
    /// inventoried and scanned like a fresh build; a new SBOM and report are
    /// attached; a pass publishes it (moving tags), a fail records it as not
    /// published so the hub stops offering it. Exits 1 if any is rejected.
    Scan {
        #[command(flatten)]
        args: build_cmd::ScanArgs,
        #[command(flatten)]
        bases: BaseMapArgs,
    },
    /// Print the CycloneDX SBOM attached to an image in the registry
    ///
    /// `labforge build` makes an SBOM of every image it pushes (dpkg, Python
    /// and conda packages read from the image's layers) and attaches it to
    /// the image's digest as an OCI referrer (artifact type
    /// application/vnd.cyclonedx+json). This prints it byte for byte, or as
    /// a table. With --engine, makes one from a local engine image instead.
    Sbom(scan_cmd::SbomArgs),
    /// Show the scan report attached to an image: verdict, findings, policy
    ///
    /// Each finding with its package, installed and fixed version and what
    /// the policy decided (blocking, below threshold, no fix yet, waived).
    /// Exits 1 when the verdict is fail.
    ScanReport(scan_cmd::ReportArgs),
    /// Compare the packages of two versions of an image
    ///
    /// Reads the SBOMs attached to OLD and NEW and lists the packages added,
    /// removed, upgraded and downgraded (versions compared the way dpkg and
    /// pip order them).
    Diff(scan_cmd::DiffArgs),
    /// Run the hub: the profile list for KubeSpawner, the catalog API and the web catalog
    ///
    /// Serves GET /api/v1/profiles (KubeSpawner's profile_list: digest-pinned,
    /// checked against KubeSpawner's contract; ?user=&group= filter by
    /// groups, ?format=yaml gives a zero-to-jupyterhub values fragment),
    /// /api/v1/catalog, /api/v1/images/NAME, /metrics, /healthz, /readyz and
    /// the web catalog at /. What it serves is what `labforge build`
    /// published (passed tests and scan) and the registry still has, read
    /// from the state store; it reloads when the state store or catalog
    /// changes, on POST /api/v1/publish and on registry events, and swaps the
    /// whole catalog at once. A catalog that does not load keeps the last
    /// good one and turns /readyz red. Tokens: LABFORGE_HUB_ADMIN_TOKEN
    /// (publish, rollback), LABFORGE_HUB_READ_TOKEN (reads, with [hub]
    /// protect_reads), LABFORGE_REGISTRY_EVENTS_TOKEN (registry events).
    Serve(serve_cmd::ServeArgs),
    /// Point the catalog back at an image's previous published digest
    ///
    /// Users get the earlier digest (from the hub's profile list) until a
    /// newer digest is published, while a broken release is fixed. --to picks
    /// any published digest (also to undo a rollback). Tells the hub at
    /// [hub] url to reload.
    Rollback(serve_cmd::RollbackArgs),
    /// Keep a Kubernetes cluster in line with the published catalog
    ///
    /// `sync` applies (server-side apply, field manager "labforge") the
    /// profiles ConfigMap and one pre-puller DaemonSet per node class (GPU
    /// images only where GPU pods can run, each image pulled by digest), and
    /// deletes labforge's stale ones; a second run changes nothing. The
    /// hub does the same in the background with [kubernetes] sync = true.
    /// The cluster comes from KUBECONFIG (or [kubernetes] context), or the
    /// pod's service account.
    K8s {
        #[command(subcommand)]
        command: k8s_cmd::K8sCommand,
    },
}

#[derive(Args)]
struct BaseMapArgs {
    /// Build on a stand-in instead of a real base: FROM=TO, e.g.
    /// "nvidia/cuda:*=labforge-standin/debian:bookworm" (repeatable; a FROM
    /// ending in * matches by prefix; adds to the configuration's base_map)
    #[arg(long = "base-map", value_name = "FROM=TO")]
    base_map: Vec<String>,
}

#[derive(Args)]
struct RegistryArgs {
    /// Registry to check, HOST[:PORT][/PREFIX], instead of the catalog's
    #[arg(long, env = "LABFORGE_REGISTRY", value_name = "TARGET")]
    registry: Option<String>,
    /// Ask no registry (even if one is configured): every image is planned as "to build"
    #[arg(long)]
    no_registry: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LABFORGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

struct Project {
    config: Config,
    layout: Layout,
}

fn load_context(cli: &Cli) -> Result<Project> {
    let config = match &cli.config {
        Some(path) => Config::load(path, true)?,
        None => Config::load(std::path::Path::new("labforge.toml"), false)?,
    };
    let layout = Layout {
        catalog: cli
            .catalog
            .clone()
            .or_else(|| config.catalog.clone())
            .unwrap_or_else(|| PathBuf::from("catalog")),
        dockerfiles: cli
            .dockerfiles
            .clone()
            .or_else(|| config.dockerfiles.clone())
            .unwrap_or_else(|| PathBuf::from("dockerfiles")),
    };
    Ok(Project { config, layout })
}

/// The base map (configuration, then --base-map) and the configuration's
/// build arguments: what this machine adds to every image's identity.
fn build_env(config: &Config, args: &BaseMapArgs) -> Result<BuildEnv> {
    let mut pairs: Vec<String> = config
        .base_map
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    pairs.extend(args.base_map.iter().cloned());
    let base_map = BaseMap::parse(pairs.iter().map(String::as_str)).map_err(anyhow::Error::msg)?;
    for name in config.build_args.keys() {
        labforge_core::formats::env_name(name)
            .map_err(|e| anyhow::anyhow!("build_args: {name:?}: {e}"))?;
        if name == "BASE_IMAGE" || name.starts_with("LABFORGE_") {
            anyhow::bail!(
                "build_args: {name:?} is set by labforge itself (BASE_IMAGE and LABFORGE_* are reserved)"
            );
        }
    }
    Ok(BuildEnv {
        base_map,
        build_args: config.build_args.clone(),
    })
}

/// Analyse, or print the problems and say how many.
fn analyze(ctx: &Project, bases: &BuildEnv, json: bool) -> Result<Result<Analyzed, ExitCode>> {
    match labforge_builder::analyze(&ctx.layout, bases) {
        Ok(a) => {
            let references: Vec<&str> = a
                .catalog
                .settings
                .bases
                .values()
                .map(|b| b.image.as_str())
                .collect();
            for entry in bases.base_map.unused(&references) {
                eprintln!("warning: base map entry {entry:?} matches no base in catalog.yaml");
            }
            Ok(Ok(a))
        }
        Err(AnalyzeError::Invalid(problems)) => {
            report_problems(&problems, json);
            Ok(Err(ExitCode::from(1)))
        }
        Err(e @ AnalyzeError::Load(_)) => Err(e.into()),
    }
}

fn report_problems(problems: &[Problem], json: bool) {
    if json {
        let items: Vec<serde_json::Value> = problems
            .iter()
            .map(|p| match p {
                Problem::Catalog(d) => serde_json::json!({
                    "file": d.file, "line": d.line, "column": d.col, "path": d.path, "message": d.message,
                }),
                Problem::Render(e) => serde_json::json!({
                    "file": "dockerfiles/", "image": e.image(), "template": e.template(), "message": e.to_string(),
                }),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"ok": false, "problems": items}))
                .unwrap_or_default()
        );
    } else {
        for p in problems {
            eprintln!("{p}");
        }
        eprintln!(
            "error: {} problem(s) in the catalog; nothing was changed",
            problems.len()
        );
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = load_context(&cli)?;
    match &cli.command {
        Command::Validate { bases, list, json } => {
            // The same base map as render and plan, so identities agree.
            let bases = build_env(&ctx.config, bases)?;
            let analyzed = match analyze(&ctx, &bases, *json)? {
                Ok(a) => a,
                Err(code) => return Ok(code),
            };
            let catalog = &analyzed.catalog;
            if *json {
                let images: Vec<serde_json::Value> = catalog
                    .images
                    .iter()
                    .enumerate()
                    .map(|(i, img)| {
                        serde_json::json!({
                            "name": img.name,
                            "repository": img.repository,
                            "variant": img.variant,
                            "file": img.file,
                            "level": analyzed.graph.level[i],
                            "parent": img.parent,
                            "identity": analyzed.prepared[i].inputs.identity,
                            "profile": img.profile,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"ok": true, "images": images})
                    )?
                );
                return Ok(ExitCode::SUCCESS);
            }
            let files: std::collections::BTreeSet<&str> =
                catalog.images.iter().map(|i| i.file.as_str()).collect();
            println!(
                "catalog OK: {} images from {} image files, {} bases, {} build levels",
                catalog.images.len(),
                files.len(),
                catalog.settings.bases.len(),
                analyzed.graph.levels.len()
            );
            if *list {
                print_table(
                    &["IMAGE", "LEVEL", "PARENT", "GPUS", "PROFILE"],
                    analyzed
                        .graph
                        .order()
                        .map(|i| {
                            let img = &catalog.images[i];
                            vec![
                                img.name.clone(),
                                analyzed.graph.level[i].to_string(),
                                match &img.parent {
                                    labforge_core::catalog::ParentRef::Base(b) => {
                                        format!("base {b}")
                                    }
                                    labforge_core::catalog::ParentRef::Image(p) => p.clone(),
                                },
                                img.profile
                                    .gpus
                                    .as_ref()
                                    .map_or("-".into(), |g| g.max().to_string()),
                                img.profile.display_name.clone(),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Render {
            out,
            bases,
            images,
            json,
        } => {
            let bases = build_env(&ctx.config, bases)?;
            let analyzed = match analyze(&ctx, &bases, *json)? {
                Ok(a) => a,
                Err(code) => return Ok(code),
            };
            let written = labforge_builder::output::render_to(&analyzed, out, images)
                .with_context(|| format!("rendering into {}", out.display()))?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&written)?);
            } else {
                for w in &written {
                    println!("{:<28} {}  ({} files)", w.name, w.dir.display(), w.files);
                }
                println!("rendered {} images into {}", written.len(), out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            registry,
            bases,
            baseline,
            jobs,
            json,
        } => {
            let bases = build_env(&ctx.config, bases)?;
            let analyzed = match analyze(&ctx, &bases, *json)? {
                Ok(a) => a,
                Err(code) => return Ok(code),
            };
            let target: Option<Registry> = if registry.no_registry {
                None
            } else {
                match registry.registry.as_ref().or(ctx.config.registry.as_ref()) {
                    Some(t) => Some(Registry::parse(t).map_err(anyhow::Error::msg)?),
                    None => analyzed.catalog.settings.registry.clone(),
                }
            };
            let baseline = match baseline {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading the baseline {}", path.display()))?;
                    labforge_builder::baseline_from_plan_json(&path.display().to_string(), &text)?
                }
                None => BTreeMap::new(),
            };
            let options = registry_options(&ctx.config, target.as_ref().map(|t| t.host.as_str()))?;
            let jobs = jobs.or(ctx.config.jobs).unwrap_or(8);
            let runtime = runtime()?;
            // Pin the bases as `build` does, so that the tags agree.
            let analyzed = match &target {
                None => analyzed,
                Some(t) => match runtime.block_on(labforge_builder::resolve_bases(
                    &analyzed,
                    &bases,
                    anonymous(&options),
                    None,
                    &base_login(&t.host),
                )) {
                    Ok((pinned, _)) => match analyze(&ctx, &pinned, *json)? {
                        Ok(a) => a,
                        Err(code) => return Ok(code),
                    },
                    Err(e) => {
                        eprintln!(
                            "warning: {e}; the tags below name bases by tag and may differ from what `labforge build` computes"
                        );
                        analyzed
                    }
                },
            };
            let (plan, heads) = runtime.block_on(labforge_builder::plan(
                &analyzed,
                target.as_ref(),
                options,
                &baseline,
                jobs,
            ))?;
            tracing::info!(plan.heads = heads, "registry checked");
            if *json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print_plan(&plan, heads);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { args, bases } => {
            let runtime = runtime()?;
            let Pinned {
                env,
                analyzed,
                target,
                options,
            } = match pinned_catalog(
                &ctx,
                bases,
                args.registry.as_ref(),
                &args.images,
                args.json,
                &runtime,
            )? {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            let code = runtime.block_on(build_cmd::build(
                args,
                build_cmd::BuildInputs {
                    config: &ctx.config,
                    analyzed: &analyzed,
                    registry: target,
                    options,
                    stand_ins: analyzed
                        .catalog
                        .settings
                        .bases
                        .values()
                        .filter(|b| env.base_map.apply(&b.image) != b.image)
                        .map(|b| b.image.clone())
                        .collect(),
                },
            ))?;
            runtime.block_on(serve_cmd::notify_hub(&ctx.config));
            Ok(code)
        }
        Command::Status { args } => runtime()?.block_on(build_cmd::status(args, &ctx.config)),
        Command::History { args } => runtime()?.block_on(build_cmd::history(args, &ctx.config)),
        Command::Push(args) => push_cmd::execute(args, &ctx.config),
        Command::Scan { args, bases } => {
            let runtime = runtime()?;
            let Pinned {
                analyzed,
                target,
                options,
                ..
            } = match pinned_catalog(
                &ctx,
                bases,
                args.registry.as_ref(),
                &args.images,
                args.json,
                &runtime,
            )? {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            let code = runtime.block_on(build_cmd::rescan(
                args,
                build_cmd::BuildInputs {
                    config: &ctx.config,
                    analyzed: &analyzed,
                    registry: target,
                    options,
                    stand_ins: Default::default(),
                },
            ))?;
            runtime.block_on(serve_cmd::notify_hub(&ctx.config));
            Ok(code)
        }
        Command::Sbom(args) => {
            let catalog = catalog_for_lookup(&ctx, args.image.registry.as_ref())?;
            runtime()?.block_on(scan_cmd::sbom(args, &catalog))
        }
        Command::ScanReport(args) => {
            let catalog = catalog_for_lookup(&ctx, args.image.registry.as_ref())?;
            runtime()?.block_on(scan_cmd::scan_report(args, &catalog))
        }
        Command::Diff(args) => {
            let catalog = catalog_for_lookup(&ctx, args.registry.as_ref())?;
            runtime()?.block_on(scan_cmd::diff(args, &catalog))
        }
        Command::Serve(args) => {
            let options = hub_registry_options(&ctx)?;
            runtime()?.block_on(serve_cmd::serve(
                args,
                &ctx.config,
                cli.config.as_deref(),
                ctx.layout.clone(),
                options,
            ))
        }
        Command::Rollback(args) => runtime()?.block_on(serve_cmd::rollback(args, &ctx.config)),
        Command::K8s { command } => {
            let options = hub_registry_options(&ctx)?;
            runtime()?.block_on(k8s_cmd::run(
                command,
                &ctx.config,
                ctx.layout.clone(),
                options,
            ))
        }
    }
}

/// How the hub reaches the registry: the configuration's registry, else
/// the catalog's.
fn hub_registry_options(ctx: &Project) -> Result<RegistryOptions> {
    let host = ctx
        .config
        .registry
        .as_ref()
        .and_then(|t| Registry::parse(t).ok())
        .or_else(|| {
            ctx.layout
                .read_catalog()
                .ok()
                .and_then(|s| labforge_core::catalog::load(&s).ok())
                .and_then(|c| c.settings.registry)
        })
        .map(|r| r.host);
    registry_options(&ctx.config, host.as_deref())
}

/// The catalog analysed with its bases pinned by digest, and the registry
/// its images go to.
struct Pinned {
    env: BuildEnv,
    analyzed: Analyzed,
    target: Registry,
    options: RegistryOptions,
}

/// Analyse the catalog, pick the target registry and pin the bases that
/// `images` (all when empty) need; `Err(code)` when the catalog is invalid.
fn pinned_catalog(
    ctx: &Project,
    bases: &BaseMapArgs,
    registry: Option<&String>,
    images: &[String],
    json: bool,
    runtime: &tokio::runtime::Runtime,
) -> Result<Result<Pinned, ExitCode>> {
    let env = build_env(&ctx.config, bases)?;
    let analyzed = match analyze(ctx, &env, json)? {
        Ok(a) => a,
        Err(code) => return Ok(Err(code)),
    };
    let target = match registry.or(ctx.config.registry.as_ref()) {
        Some(t) => Registry::parse(t).map_err(anyhow::Error::msg)?,
        None => analyzed.catalog.settings.registry.clone().context(
            "no registry: set `registry` in catalog.yaml or labforge.toml, or pass --registry",
        )?,
    };
    let options = registry_options(&ctx.config, Some(&target.host))?;
    let needed = labforge_builder::build::needed(&analyzed, images)?;
    let (pinned, _) = runtime.block_on(labforge_builder::resolve_bases(
        &analyzed,
        &env,
        anonymous(&options),
        Some(&needed),
        &base_login(&target.host),
    ))?;
    let analyzed = match analyze(ctx, &pinned, json)? {
        Ok(a) => a,
        Err(code) => return Ok(Err(code)),
    };
    Ok(Ok(Pinned {
        env,
        analyzed,
        target,
        options,
    }))
}

/// The catalog (if it loads), the registry its images are in and how to
/// reach it, for commands that take a catalog image name or a full reference.
fn catalog_for_lookup(ctx: &Project, registry: Option<&String>) -> Result<scan_cmd::Catalog> {
    let analyzed = labforge_builder::analyze(&ctx.layout, &BuildEnv::default())
        .map_err(|e| tracing::info!(error = %e, "no catalog to look image names up in"))
        .ok();
    let registry = registry
        .or(ctx.config.registry.as_ref())
        .and_then(|t| Registry::parse(t).ok())
        .or_else(|| {
            analyzed
                .as_ref()
                .and_then(|a| a.catalog.settings.registry.clone())
        });
    let options = registry_options(&ctx.config, registry.as_ref().map(|r| r.host.as_str()))?;
    Ok(scan_cmd::Catalog {
        analyzed,
        registry,
        options,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// How to reach registries: the configuration's insecure ones, and the
/// login for `host` (the registry images go to) from
/// LABFORGE_REGISTRY_USERNAME / LABFORGE_REGISTRY_PASSWORD, else Docker's
/// config.json and its credential helpers.
fn registry_options(config: &Config, host: Option<&str>) -> Result<RegistryOptions> {
    let login = match host {
        Some(host) => labforge_builder::creds::Lookup::from_env()
            .credentials(host)
            .with_context(|| format!("looking up credentials for {host}"))?
            .map(|c| c.login()),
        None => None,
    };
    let (username, password) = login.unzip();
    Ok(RegistryOptions {
        insecure: config.insecure_registries.clone(),
        username,
        password,
        timeout: None,
    })
}

/// `options` without a login (for registries other than the target).
fn anonymous(options: &RegistryOptions) -> RegistryOptions {
    RegistryOptions {
        username: None,
        password: None,
        ..options.clone()
    }
}

/// The login for a base registry: the environment's only for the target
/// registry, Docker's config.json for any. A lookup error (a broken
/// credential helper) is a warning: the registry may not need a login.
fn base_login(target: &str) -> impl Fn(&str) -> Option<(String, String)> + Sync + use<> {
    let target = target.to_string();
    move |host: &str| match labforge_builder::creds::login_for(host, &target) {
        Ok(login) => login,
        Err(e) => {
            eprintln!("warning: no login for {host}: {e}");
            None
        }
    }
}

fn print_plan(plan: &Plan, heads: usize) {
    let rows = plan
        .images
        .iter()
        .map(|i| {
            vec![
                i.level.to_string(),
                i.name.clone(),
                i.tag.clone(),
                match &i.registry {
                    Presence::Present(_) => "present".into(),
                    Presence::Absent => "absent".into(),
                    Presence::NotChecked => "-".into(),
                },
                match i.action {
                    Action::Build => "build".into(),
                    Action::Skip => "skip".into(),
                },
                i.reasons.join("; "),
            ]
        })
        .collect();
    print_table(
        &["LEVEL", "IMAGE", "TAG", "REGISTRY", "ACTION", "WHY"],
        rows,
    );
    println!();
    for (l, names) in plan.levels.iter().enumerate() {
        println!("level {l}: {}", names.join(", "));
    }
    let registry = match &plan.registry {
        Some(r) => format!("registry {r}, {heads} manifest HEAD requests"),
        None => "no registry checked".to_string(),
    };
    println!(
        "{} images: {} to build, {} up to date ({registry})",
        plan.summary.images, plan.summary.build, plan.summary.skip
    );
}

fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}
