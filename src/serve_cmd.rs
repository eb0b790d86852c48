//! `labforge serve` (the hub) and `labforge rollback`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use labforge_builder::config::{Config, HubConfig};
use labforge_builder::state::StateStore;
use labforge_builder::{Layout, RegistryOptions};
use labforge_hub::auth::{Secret, Tokens};

use crate::build_cmd::state_location;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on [default: configuration `[hub] listen`, else 127.0.0.1:8080]
    #[arg(long, env = "LABFORGE_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// State folder or postgres:// URL [default: configuration `state`, else .labforge/state]
    #[arg(long, env = "LABFORGE_STATE", value_name = "DIR|URL")]
    pub state: Option<String>,
    /// Seconds between checks of the state store and catalog for changes [default: 10]
    #[arg(long, value_name = "SECONDS")]
    pub refresh: Option<u64>,
}

#[derive(Args)]
pub struct RollbackArgs {
    /// The concrete image, e.g. notebook-scipy-cpu
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// The published digest to go to [default: the one before the current]
    #[arg(long, value_name = "DIGEST")]
    pub to: Option<String>,
    /// Why (recorded, and shown on the image's page)
    #[arg(long, default_value = "")]
    pub reason: String,
    /// State folder or postgres:// URL [default: configuration `state`, else .labforge/state]
    #[arg(long, env = "LABFORGE_STATE", value_name = "DIR|URL")]
    pub state: Option<String>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// A token from the environment variable, else from the file.
fn token(var: &str, file: Option<&Path>) -> Result<Option<Secret>> {
    if let Ok(value) = std::env::var(var) {
        return Ok(Secret::new(&value));
    }
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?;
            Ok(Secret::new(text.lines().next().unwrap_or("")))
        }
        None => Ok(None),
    }
}

fn tokens(hub: &HubConfig) -> Result<Tokens> {
    let tokens = Tokens {
        admin: token("LABFORGE_HUB_ADMIN_TOKEN", hub.admin_token_file.as_deref())?,
        read: token("LABFORGE_HUB_READ_TOKEN", hub.read_token_file.as_deref())?,
        events: token(
            "LABFORGE_REGISTRY_EVENTS_TOKEN",
            hub.events_token_file.as_deref(),
        )?,
        protect_reads: hub.protect_reads,
    };
    if tokens.protect_reads && tokens.read.is_none() && tokens.admin.is_none() {
        anyhow::bail!(
            "[hub] protect_reads is on but no token is set: set LABFORGE_HUB_READ_TOKEN (or [hub] read_token_file)"
        );
    }
    Ok(tokens)
}

/// `labforge serve`
pub async fn serve(
    args: &ServeArgs,
    config: &Config,
    config_path: Option<&Path>,
    layout: Layout,
    registry_options: RegistryOptions,
) -> Result<ExitCode> {
    let hub = &config.hub;
    let listen = args
        .listen
        .clone()
        .or_else(|| hub.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".to_string());
    let location = state_location(args.state.as_ref(), config);
    let store = StateStore::open(&location).await?;
    // Before the first load: the bot may have to clone the catalog first.
    let bot = crate::bot_cmd::bot(config, config_path, &layout, &location)
        .await
        .context(
            "setting up the GitHub bot ([github] in labforge.toml, LABFORGE_GITHUB_* variables)",
        )?;
    let registry_check = Duration::from_secs(hub.registry_check_seconds.unwrap_or(300).max(1));
    let source = labforge_builder::project::Layout::read_catalog(&layout)
        .ok()
        .and_then(|s| labforge_core::catalog::load(&s).ok())
        .and_then(|c| c.settings.source);
    let loader = loader(config, layout, store, registry_options);
    let settings = labforge_hub::Settings {
        refresh: Duration::from_secs(args.refresh.or(hub.refresh_seconds).unwrap_or(10).max(1)),
        registry_check,
        tokens: tokens(hub)?,
        site: labforge_hub::web::Site {
            title: hub
                .title
                .clone()
                .unwrap_or_else(|| "Environments".to_string()),
            source,
        },
    };
    let protect = settings.tokens.protect_reads;
    let admin = settings.tokens.admin.is_some();
    let bot_line = bot.as_ref().map(|b| {
        format!(
            "GitHub bot for {} on POST /webhooks/github",
            b.settings.repository
        )
    });
    let mut hub = labforge_hub::Hub::new(loader, settings)?;
    if let Some(bot) = bot {
        hub = hub.with_bot(bot);
    }
    let k8s = &config.kubernetes;
    let sync_line = if k8s.sync {
        let settings = crate::k8s_cmd::sync_settings(config)?;
        let cluster = crate::k8s_cmd::connect(config, None, None).await?;
        let line = format!(
            "Kubernetes sync into namespace {} of {}{}",
            cluster.namespace(),
            cluster.url(),
            match settings.prepull.gate() {
                Some(share) => format!(
                    "; new versions are offered once on {}% of their nodes",
                    share * 100.0
                ),
                None => String::new(),
            }
        );
        hub = hub.with_syncer(labforge_hub::cluster::Syncer::new(cluster, settings));
        line
    } else if k8s.prepull.gate().is_some() {
        "Kubernetes sync off ([kubernetes] sync = false): [kubernetes.prepull] offer_after has no effect, every current version is offered".to_string()
    } else {
        "Kubernetes sync off ([kubernetes] sync = false)".to_string()
    };
    let hub = Arc::new(hub);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| {
            format!("listening on {listen} (is another hub running there? pass --listen)")
        })?;
    let bound = listener.local_addr()?;
    // The first line on stdout: scripts and tests read the address from it.
    println!("labforge hub listening on http://{bound}");
    eprintln!(
        "state: {}; reads {}; admin endpoints {}",
        labforge_builder::state::redact_location(&location),
        if protect {
            "need a token"
        } else {
            "are public"
        },
        if admin {
            "enabled"
        } else {
            "disabled (no LABFORGE_HUB_ADMIN_TOKEN)"
        }
    );
    eprintln!(
        "{}",
        bot_line.unwrap_or_else(|| "GitHub bot off (no LABFORGE_CATALOG_REPO)".to_string())
    );
    eprintln!("{sync_line}");
    labforge_hub::serve(listener, hub, shutdown_signal()).await?;
    eprintln!("labforge hub stopped");
    Ok(ExitCode::SUCCESS)
}

/// The hub's snapshot loader, as `serve` and `k8s` use it.
pub fn loader(
    config: &Config,
    layout: Layout,
    store: StateStore,
    registry_options: RegistryOptions,
) -> labforge_hub::load::Loader {
    let hub = &config.hub;
    let registry_check = Duration::from_secs(hub.registry_check_seconds.unwrap_or(300).max(1));
    let options = labforge_hub::snapshot::Options {
        spawner: hub.spawner.clone(),
        jupyterhub_url: hub.jupyterhub_url.clone(),
        staff_groups: hub.staff_groups.iter().cloned().collect::<BTreeSet<_>>(),
    };
    labforge_hub::load::Loader::new(layout, store, registry_options, options, registry_check)
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing open requests");
}

/// `labforge rollback IMAGE [--to DIGEST]`
pub async fn rollback(args: &RollbackArgs, config: &Config) -> Result<ExitCode> {
    let location = state_location(args.state.as_ref(), config);
    let store = StateStore::open(&location).await?;
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    // The login for the configured registry, where the digests live.
    let host = config
        .registry
        .as_ref()
        .and_then(|t| labforge_core::catalog::Registry::parse(t).ok())
        .map(|r| r.host);
    let options = crate::registry_options(config, host.as_deref())?;
    let done = labforge_hub::rollback::rollback(
        &store,
        Some(&options),
        &args.image,
        args.to.as_deref(),
        &actor,
        &args.reason,
    )
    .await;
    store.close().await;
    let done = done?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        println!(
            "{}: rolled back from {} to {}\n  users now get {}",
            done.image, done.from, done.to, done.reference
        );
    }
    notify_hub(config).await;
    Ok(ExitCode::SUCCESS)
}

/// Ask the hub to load now (`[hub] url` with the admin token), so that a
/// publish or rollback reaches users at once; without it, the hub notices
/// on its next poll. A failure is a warning: the state store has the truth.
pub async fn notify_hub(config: &Config) {
    let Some(url) = &config.hub.url else {
        return;
    };
    let token = std::env::var("LABFORGE_HUB_ADMIN_TOKEN").ok().or_else(|| {
        let path = config.hub.admin_token_file.as_ref()?;
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.lines().next().map(str::to_string))
    });
    match labforge_hub::notify(url, token.as_deref()).await {
        Ok(generation) => eprintln!("hub {url} reloaded (generation {generation})"),
        Err(e) => eprintln!(
            "warning: could not ask the hub at {url} to reload ({e}); it picks the change up on its next poll"
        ),
    }
}
