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
        // Relative paths are relative to the configuration file.
        let dir = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.catalog,
            &mut config.dockerfiles,
            &mut config.build.ca_bundle,
            &mut config.scan.osv_db,
            &mut config.scan.trivy.cache_dir,
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
