//! `labforge k8s`: the Kubernetes sync, once (`sync`), the objects it would
//! apply (`manifests`), and the Role it needs (`permissions`).

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use labforge_builder::cluster::{Cluster, ClusterOptions, PERMISSIONS};
use labforge_builder::config::Config;
use labforge_builder::state::StateStore;
use labforge_builder::{Layout, RegistryOptions};
use labforge_core::cluster::{Action, Kind};
use labforge_hub::cluster::{SyncMode, SyncReport, SyncSettings};
use labforge_hub::load::Loader;
use labforge_hub::snapshot::Snapshot;

use crate::build_cmd::state_location;

#[derive(Subcommand)]
pub enum K8sCommand {
    /// Apply what the published catalog needs and delete what is stale, once
    ///
    /// Lists labforge's objects of this instance (by label), compares them
    /// with the profiles ConfigMap and pre-puller DaemonSets of the
    /// published catalog, and applies only what differs. Exits 1 when an
    /// object could not be synced (a conflict with another field manager,
    /// a refused object), 2 when the cluster or the catalog cannot be read.
    Sync(SyncArgs),
    /// Print the objects a sync applies, as a Kubernetes List, without a cluster
    ///
    /// For GitOps pipelines and review (`| kubectl apply --server-side
    /// --field-manager=labforge -f -`). Without a cluster the DaemonSets carry
    /// no owner reference, so a later `sync` updates them once.
    Manifests(ManifestArgs),
    /// Print the namespaced Role the hub's service account needs (YAML)
    Permissions,
}

#[derive(Args)]
pub struct SyncArgs {
    /// Say what would change; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Take over fields another field manager owns (a conflict otherwise)
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Args)]
pub struct TargetArgs {
    /// Namespace [default: [kubernetes] namespace, else the kubeconfig's]
    #[arg(long, env = "LABFORGE_K8S_NAMESPACE", value_name = "NAME")]
    pub namespace: Option<String>,
    /// kubeconfig context [default: [kubernetes] context, else the current one]
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    #[arg(long, env = "LABFORGE_STATE", value_name = "DIR|URL")]
    pub state: Option<String>,
}

#[derive(Args)]
pub struct ManifestArgs {
    #[arg(long, env = "LABFORGE_STATE", value_name = "DIR|URL")]
    pub state: Option<String>,
}

/// `[kubernetes]` as the sync takes it.
pub fn sync_settings(config: &Config) -> Result<SyncSettings> {
    let k8s = &config.kubernetes;
    let instance = k8s.instance.clone().unwrap_or_else(|| "labforge".into());
    // It prefixes every name (`<instance>-prepull-gpu-1a2b3c4d` must stay
    // a 63-character label with its class intact) and is a label value.
    if instance.len() > 30 || labforge_core::cluster::dns_label(&instance, 30) != instance {
        anyhow::bail!(
            "[kubernetes] instance = {instance:?}: use at most 30 lowercase letters, digits and inner dashes"
        );
    }
    Ok(SyncSettings {
        instance,
        profiles_configmap: k8s.profiles_configmap.unwrap_or(true),
        prepull: k8s.prepull.clone(),
        base_tolerations: config.hub.spawner.base_tolerations.clone(),
        resync: Duration::from_secs(k8s.resync_seconds.unwrap_or(300).max(10)),
    })
}

pub async fn connect(
    config: &Config,
    namespace: Option<&str>,
    context: Option<&str>,
) -> Result<Cluster> {
    let k8s = &config.kubernetes;
    let options = ClusterOptions {
        namespace: namespace.map(str::to_string).or(k8s.namespace.clone()),
        context: context.map(str::to_string).or(k8s.context.clone()),
        kubeconfig: None,
        retry: Default::default(),
    };
    Ok(Cluster::connect(&options).await?)
}

pub async fn run(
    command: &K8sCommand,
    config: &Config,
    layout: Layout,
    registry: RegistryOptions,
) -> Result<ExitCode> {
    match command {
        K8sCommand::Permissions => {
            print!("{}", role_yaml());
            Ok(ExitCode::SUCCESS)
        }
        K8sCommand::Manifests(args) => {
            let settings = sync_settings(config)?;
            let loader = loader(config, args.state.as_ref(), layout, registry).await?;
            let snapshot = snapshot(&loader, 1, None).await?;
            if settings.prepull.gate().is_some() {
                eprintln!(
                    "note: [kubernetes.prepull] offer_after is set, but without a cluster to read the pre-pullers' status from, the profile list here offers every current version"
                );
            }
            let objects = labforge_hub::cluster::desired(&snapshot, &settings, None)?;
            let list = serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": objects.iter().map(|o| &o.body).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&list)?);
            Ok(ExitCode::SUCCESS)
        }
        K8sCommand::Sync(args) => {
            let settings = sync_settings(config)?;
            let cluster = connect(
                config,
                args.target.namespace.as_deref(),
                args.target.context.as_deref(),
            )
            .await?;
            let loader = loader(config, args.target.state.as_ref(), layout, registry).await?;
            let mut snapshot = snapshot(&loader, 1, None).await?;
            // With `offer_after`, versions the pre-pullers do not hold on
            // enough of their nodes yet stay out of the profile list.
            let mut held = Vec::new();
            if let Some(share) = settings.prepull.gate() {
                let look = labforge_hub::cluster::look(
                    &cluster,
                    &snapshot,
                    &settings,
                    share,
                    &BTreeSet::new(),
                )
                .await
                .with_context(|| {
                    format!(
                        "reading the pre-pullers' status in namespace {} of {}",
                        cluster.namespace(),
                        cluster.url()
                    )
                })?;
                snapshot = self::snapshot(&loader, 2, Some(&look.ready)).await?;
                held = look.held;
            }
            let mode = SyncMode {
                dry_run: args.dry_run,
                force: args.force,
            };
            let report = labforge_hub::cluster::sync(&cluster, &snapshot, &settings, mode)
                .await
                .with_context(|| {
                    format!(
                        "syncing namespace {} of {}",
                        cluster.namespace(),
                        cluster.url()
                    )
                })?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report, cluster.url());
            }
            for h in &held {
                eprintln!(
                    "held back: {} {} is on {} of {} node(s), offered at {}: {}",
                    h.image, h.reference, h.pulled, h.nodes, h.needed, h.waiting
                );
            }
            Ok(if report.failed() > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// The hub's snapshot loader on the configured state store.
async fn loader(
    config: &Config,
    state: Option<&String>,
    layout: Layout,
    registry: RegistryOptions,
) -> Result<Loader> {
    let location = state_location(state, config);
    let store = StateStore::open(&location).await?;
    Ok(crate::serve_cmd::loader(config, layout, store, registry))
}

/// Load the hub's snapshot: the catalog, what the state store says is
/// published, and what the registry has (asked once; a second load uses
/// the answers). `ready`: see `Loader::load`.
async fn snapshot(
    loader: &Loader,
    generation: u64,
    ready: Option<&BTreeSet<String>>,
) -> Result<Snapshot> {
    let (snapshot, report) = loader
        .load(generation, generation == 1, ready)
        .await
        .context("loading the published catalog (as `labforge serve` would)")?;
    if generation == 1 {
        for (image, reference) in &report.missing {
            eprintln!("warning: {image}: {reference} is missing from the registry; left out");
        }
    }
    Ok(snapshot)
}

fn print_report(report: &SyncReport, url: &str) {
    println!(
        "namespace {} of {url}, catalog generation {}{}",
        report.namespace,
        report.generation,
        if report.dry_run {
            " (dry run: nothing is written)"
        } else {
            ""
        }
    );
    for outcome in &report.changes {
        let change = &outcome.change;
        let verb = match (&change.action, report.dry_run) {
            (Action::Create, false) => "created",
            (Action::Create, true) => "create",
            (Action::Update { .. }, false) => "updated",
            (Action::Update { .. }, true) => "update",
            (Action::Delete, false) => "deleted",
            (Action::Delete, true) => "delete",
            (Action::Unchanged, _) => "unchanged",
        };
        let verb = if outcome.ok { verb } else { "FAILED" };
        let mut line = format!("  {verb:<9} {}/{}", change.kind, change.name);
        if let Action::Update { fields } = &change.action {
            line.push_str(&format!("  ({})", fields.join(", ")));
        }
        if let Some(r) = &outcome.rollout
            && change.kind == Kind::DaemonSet
        {
            line.push_str(&format!("  images on {}/{} nodes", r.pulled, r.desired));
        }
        if let Some(e) = &outcome.error {
            line.push_str(&format!(": {e}"));
        }
        println!("{line}");
    }
    let writes = report.writes();
    let failed = report.failed();
    if report.dry_run {
        println!("{writes} change(s) would be made");
    } else if failed > 0 {
        println!(
            "{} change(s) made, {failed} failed",
            writes - failed.min(writes)
        );
    } else if writes == 0 {
        println!("nothing to change");
    } else {
        println!("{writes} change(s) made");
    }
}

/// The Role of `deploy/hub/role.yaml`, from [`PERMISSIONS`].
pub fn role_yaml() -> String {
    let mut out = String::from(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: labforge-hub\nrules:\n",
    );
    for p in PERMISSIONS {
        out.push_str(&format!(
            "  - apiGroups: [\"{}\"]\n    resources: [\"{}\"]\n    verbs: [{}]\n",
            p.api_group,
            p.resource,
            p.verbs
                .iter()
                .map(|v| format!("\"{v}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}
