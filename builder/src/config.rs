//! The configuration file (`labforge.toml`): paths, registry, base map and
//! concurrency. Loaded once by the binary; command-line flags override it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Everything in `labforge.toml`; every key is optional and unknown keys are errors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Folder holding `catalog.yaml` and `images/`.
    pub catalog: Option<PathBuf>,
    /// Folder of Dockerfile templates.
    pub dockerfiles: Option<PathBuf>,
    /// Where build logs and records go (used by `build` and `serve`).
    pub state: Option<PathBuf>,
    /// `HOST[:PORT][/PREFIX]`, overriding the catalog's registry.
    pub registry: Option<String>,
    /// Registries (`host[:port]`) to reach over plain HTTP besides loopback ones.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// How many registry requests (and later builds) run at once.
    pub jobs: Option<usize>,
    /// Real base reference (or prefix ending in `*`) to local stand-in.
    #[serde(default)]
    pub base_map: BTreeMap<String, String>,
    /// Build arguments passed to every build (and part of every identity),
    /// e.g. `CODE_SERVER_URL = "none"` to leave VS Code out locally.
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// How `labforge build` builds, tests and pushes.
    #[serde(default)]
    pub build: BuildConfig,
    /// How images are scanned before they are published.
    #[serde(default)]
    pub scan: ScanConfig,
    /// `labforge serve`, and where pipeline commands tell the hub about a
    /// publish.
    #[serde(default)]
    pub hub: HubConfig,
    /// The GitHub bot of `labforge serve` (off unless configured).
    #[serde(default)]
    pub github: GithubConfig,
    /// The Kubernetes sync (`labforge k8s sync`, and the hub with `sync = true`).
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
}

/// The `[kubernetes]` table: what labforge keeps in a cluster (the
/// profiles ConfigMap and the pre-puller DaemonSets) and how it reaches it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// `labforge serve` keeps the cluster in sync in the background
    /// [default: false]. `labforge k8s sync` works either way.
    #[serde(default)]
    pub sync: bool,
    /// Namespace of every object [default: the kubeconfig context's, or the
    /// hub pod's own].
    pub namespace: Option<String>,
    /// kubeconfig context [default: the current one, or in-cluster].
    pub context: Option<String>,
    /// Label value and name prefix of every object, so that several
    /// installations can share a namespace [default: `labforge`].
    pub instance: Option<String>,
    /// Seconds between syncs when nothing was published [default: 300];
    /// every new snapshot is synced at once.
    pub resync_seconds: Option<u64>,
    /// Keep the profiles ConfigMap `<instance>-profiles` [default: true].
    pub profiles_configmap: Option<bool>,
    /// The pre-puller DaemonSets (`[kubernetes.prepull]`).
    #[serde(default)]
    pub prepull: labforge_core::cluster::prepull::PrepullSettings,
    /// The `kubernetes` build backend (`[kubernetes.build]`), used when
    /// `[build] backend = "kubernetes"`.
    #[serde(default)]
    pub build: KubeBuildConfig,
}

/// The `[kubernetes.build]` table: builds as BuildKit Jobs, smoke tests as
/// Pods, in the `[kubernetes]` namespace.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeBuildConfig {
    /// Build Jobs at once [default: `jobs`, else 2].
    pub concurrency: Option<usize>,
    /// Where `labforge build` serves the build contexts to the Jobs
    /// [default: `0.0.0.0:7520`].
    pub listen: Option<std::net::SocketAddr>,
    /// How build pods reach that server, e.g.
    /// `http://labforge-hub.labforge.svc:7520` (required).
    pub context_url: Option<String>,
    /// Seconds a context download token works; a Job whose pod has not
    /// fetched its context by then fails [default: 600; 30 to 86400].
    pub token_ttl_seconds: Option<u64>,
    /// The build Jobs' image, resources, deadline, registry Secret and
    /// placement (`[kubernetes.build.job]`).
    #[serde(default)]
    pub job: labforge_core::cluster::job::BuildJobSettings,
    /// The smoke-test Pods' resources, pull Secret and placement, GPU nodes
    /// included (`[kubernetes.build.tests]`).
    #[serde(default)]
    pub tests: labforge_core::cluster::testpod::TestPodSettings,
}

/// The `[github]` table: the image-request bot. Secrets are not kept here:
/// the token and webhook secrets come from the environment
/// (`LABFORGE_GITHUB_TOKEN`, `LABFORGE_GITHUB_WEBHOOK_SECRET`, …) or from
/// the files named here. Where a key names its environment variable in
/// brackets, that variable wins over the key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// REST API base URL [`LABFORGE_GITHUB_API_URL`; default
    /// `https://api.github.com`; GitHub Enterprise: `https://HOST/api/v3`].
    pub api_url: Option<String>,
    /// `owner/repo` of the catalog repository [`LABFORGE_GITHUB_REPOSITORY`].
    pub repository: Option<String>,
    /// Git URL (or local path) of the catalog repository; the hub's project
    /// folder is its work clone [`LABFORGE_CATALOG_REPO`].
    pub catalog_repo: Option<String>,
    /// The work clone [default: the current folder].
    pub work_dir: Option<PathBuf>,
    /// One line: a token with issues, pull requests and contents write
    /// access [`LABFORGE_GITHUB_TOKEN`].
    pub token_file: Option<PathBuf>,
    /// Webhook secrets, one per line; several during a rotation
    /// [`LABFORGE_GITHUB_WEBHOOK_SECRET`, plus `…_SECRET_PREVIOUS`].
    pub webhook_secret_file: Option<PathBuf>,
    /// A GitHub App instead of a token [`LABFORGE_GITHUB_APP_ID`,
    /// `LABFORGE_GITHUB_APP_KEY_FILE`, `LABFORGE_GITHUB_APP_INSTALLATION_ID`].
    pub app_id: Option<u64>,
    pub app_key_file: Option<PathBuf>,
    pub app_installation_id: Option<u64>,
    /// The bot's login: only its own comments are ever edited, and they are
    /// never commands [`LABFORGE_GITHUB_BOT_LOGIN`; default: `labforge-bot`;
    /// a GitHub App's is `<app-slug>[bot]`].
    pub bot_login: Option<String>,
    /// Logins whose commands count even without write permission.
    #[serde(default)]
    pub maintainers: Vec<String>,
    /// The Dockerfile template of requested images [default:
    /// `lab.Dockerfile.tera`].
    pub request_template: Option<String>,
    /// Check that requested pip packages and VS Code extensions exist
    /// [`LABFORGE_GITHUB_CHECK_PACKAGES`; default: true].
    pub check_packages: Option<bool>,
    /// [`LABFORGE_PYPI_URL`; default: `https://pypi.org`]
    pub pypi_url: Option<String>,
    /// [`LABFORGE_OPENVSX_URL`; default: `https://open-vsx.org`]
    pub openvsx_url: Option<String>,
    /// The bot's commits [default: `labforge-bot <labforge-bot@users.noreply.github.com>`].
    pub commit_name: Option<String>,
    pub commit_email: Option<String>,
}

/// The `[hub]` table. Tokens are not kept here: they come from the
/// environment (`LABFORGE_HUB_ADMIN_TOKEN`, `LABFORGE_HUB_READ_TOKEN`,
/// `LABFORGE_REGISTRY_EVENTS_TOKEN`) or from the files named here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Address `labforge serve` listens on [default: `127.0.0.1:8080`].
    pub listen: Option<String>,
    /// The hub's URL as the pipeline reaches it (`labforge build` and
    /// `labforge rollback` ask it to reload after publishing), e.g.
    /// `http://127.0.0.1:8080`. Unset: the hub notices on its next poll.
    pub url: Option<String>,
    /// JupyterHub's public URL, for absolute launch links
    /// (`<url>/hub/spawn?profile=<slug>`). Unset: links are relative.
    pub jupyterhub_url: Option<String>,
    /// Shown in the web catalog's header [default: "Environments"].
    pub title: Option<String>,
    /// Seconds between checks of the state store for new publishes
    /// [default: 10].
    pub refresh_seconds: Option<u64>,
    /// Seconds between checks that every published digest is still in the
    /// registry [default: 300].
    pub registry_check_seconds: Option<u64>,
    /// Members of these groups see every profile, whatever its `groups`.
    #[serde(default)]
    pub staff_groups: Vec<String>,
    /// Read endpoints need the read (or admin) token [default: false].
    #[serde(default)]
    pub protect_reads: bool,
    /// Files holding the tokens (one line), instead of the environment.
    pub admin_token_file: Option<PathBuf>,
    pub read_token_file: Option<PathBuf>,
    pub events_token_file: Option<PathBuf>,
    /// What every profile respects of the hub's own spawner configuration.
    #[serde(default)]
    pub spawner: labforge_core::spawner::SpawnerSettings,
}

/// The `[scan]` table. The policy (threshold, waivers) is in the catalog;
/// this says which scanners run on this machine and where their data is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanConfig {
    /// Scanners that must all finish for an image to be judged: `trivy`
    /// and/or `osv` [default: `["trivy"]`]. An empty list turns the gate off
    /// (images are published unscanned; the SBOM is still made).
    #[serde(default = "default_scanners")]
    pub scanners: Vec<String>,
    /// A folder of OSV JSON records (e.g. OSV's per-ecosystem `all.zip`
    /// downloads, unzipped) for the `osv` scanner.
    pub osv_db: Option<PathBuf>,
    /// Seconds a scanner may run before it counts as failed [default: 900].
    pub timeout: Option<u64>,
    #[serde(default)]
    pub trivy: TrivyConfig,
}

impl Default for ScanConfig {
    fn default() -> ScanConfig {
        ScanConfig {
            scanners: default_scanners(),
            osv_db: None,
            timeout: None,
            trivy: TrivyConfig::default(),
        }
    }
}

fn default_scanners() -> Vec<String> {
    vec!["trivy".to_string()]
}

/// The `[scan.trivy]` table: where Trivy and its vulnerability database are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrivyConfig {
    /// The `trivy` binary [default: `trivy` on the PATH].
    pub binary: Option<PathBuf>,
    /// Trivy's cache folder (its database lives there).
    pub cache_dir: Option<PathBuf>,
    /// A mirror of the vulnerability database (`--db-repository`).
    pub db_repository: Option<String>,
    /// A mirror of the Java database (`--java-db-repository`).
    pub java_db_repository: Option<String>,
    /// Use the database in `cache_dir` as it is, never download (`--skip-db-update`).
    #[serde(default)]
    pub offline: bool,
}

/// The `[build]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// Extra CA certificates (PEM) that builds may use for HTTPS, for
    /// networks with a TLS-intercepting proxy. Served to the build over HTTP
    /// on the engine's bridge; never written into an image.
    pub ca_bundle: Option<PathBuf>,
    /// The port that serves `ca_bundle` to builds [default: 7519]. Fixed, so
    /// that build history and the engine's build cache stay stable.
    pub ca_port: Option<u16>,
    /// Run smoke tests marked `gpu: true` (the engine has NVIDIA GPUs).
    #[serde(default)]
    pub gpu: bool,
    /// `auto` (default: BuildKit where the engine offers it), `buildkit` or `classic`.
    pub builder: Option<String>,
    /// Layer compression for pushes: `gzip` (default) or `zstd`.
    pub compression: Option<String>,
    /// Attempts per registry request before a push fails [default: 5].
    pub push_retries: Option<u32>,
    /// Where images are built and tested: `engine` (default: the local
    /// Docker Engine) or `kubernetes` (BuildKit Jobs and test Pods, see
    /// `[kubernetes.build]`).
    pub backend: Option<String>,
}

impl Config {
    /// Load `path`; a missing file is an error only when `required`.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::default());
            }
            Err(source) => {
                return Err(ConfigError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config
            .kubernetes
            .prepull
            .check()
            .map_err(|e| ConfigError::Invalid {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        // Relative paths are relative to the configuration file.
        let dir = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.catalog,
            &mut config.dockerfiles,
            &mut config.build.ca_bundle,
            &mut config.scan.osv_db,
            &mut config.scan.trivy.cache_dir,
            &mut config.hub.admin_token_file,
            &mut config.hub.read_token_file,
            &mut config.hub.events_token_file,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        // `state` is a folder (relative to this file) or a database URL.
        if let Some(state) = &mut config.state
            && state.is_relative()
            && !state.to_string_lossy().contains("://")
        {
            *state = dir.join(&*state);
        }
        Ok(config)
    }
}
