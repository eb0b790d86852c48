//! The catalog's types after decoding and variant expansion.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::scan::policy::Policy;
use crate::yaml::{Pos, Spanned};

/// The text of one catalog file and the name it is reported under.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// Everything the catalog is made of, as read by the caller.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `catalog/catalog.yaml`
    pub settings: SourceFile,
    /// `catalog/images/*.yaml`, one image (with its variants) each.
    pub images: Vec<SourceFile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Registry {
    /// `host[:port]`
    pub host: String,
    /// Repository prefix: an image `notebook` lives at `<host>/<prefix>/notebook`.
    pub prefix: String,
}

impl Registry {
    /// Parse a `HOST[:PORT][/PREFIX]` target, as given on the command line.
    pub fn parse(target: &str) -> Result<Registry, String> {
        let (host, prefix) = target.split_once('/').unwrap_or((target, ""));
        crate::formats::registry_host(host).map_err(|why| format!("registry {host:?} {why}"))?;
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            crate::formats::repository_path(prefix)
                .map_err(|why| format!("registry prefix {prefix:?} {why}"))?;
        }
        Ok(Registry {
            host: host.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// The repository path inside the registry: `<prefix>/<image>`.
    pub fn path(&self, image: &str) -> String {
        if self.prefix.is_empty() {
            image.to_string()
        } else {
            format!("{}/{image}", self.prefix)
        }
    }

    /// The full repository name: `<host>/<prefix>/<image>`.
    pub fn repository(&self, image: &str) -> String {
        format!("{}/{}", self.host, self.path(image))
    }
}

/// A named upstream image that catalog images start from.
#[derive(Debug, Clone, Serialize)]
pub struct Base {
    pub name: String,
    /// Upstream reference with a tag or digest, e.g. `nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04`.
    pub image: String,
    pub description: Option<String>,
    pub cuda: Option<String>,
    pub cudnn: Option<String>,
    /// Minimum NVIDIA driver for `cuda`.
    pub min_driver: Option<String>,
    /// `ubuntu-22.04`, `debian-12`, …
    pub os: Option<String>,
    #[serde(skip)]
    pub pos: Pos,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Toleration {
    pub key: Option<String>,
    pub operator: Option<String>,
    pub value: Option<String>,
    pub effect: Option<String>,
    #[serde(rename = "tolerationSeconds")]
    pub toleration_seconds: Option<i64>,
}

/// Node placement for GPU images, from `defaults.gpu` in the settings.
#[derive(Debug, Clone, Serialize, Default)]
pub struct GpuPool {
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub registry: Option<Registry>,
    pub platform: String,
    /// Vendor for `org.opencontainers.image.vendor`.
    pub vendor: String,
    /// URL of the catalog repository, for `org.opencontainers.image.source`.
    pub source: Option<String>,
    pub code_server_version: String,
    pub bases: BTreeMap<String, Base>,
    pub default_profile: ProfileFields,
    pub gpu_pool: GpuPool,
    /// The scan policy every image is judged by (`scan:`), unless it overrides it.
    pub scan: Policy,
}

/// What an image is built on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum ParentRef {
    /// A named base from the settings.
    Base(String),
    /// Another catalog image, by its concrete name.
    Image(String),
}

#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct Packages {
    pub apt: Vec<String>,
    /// Normalised requirement lines.
    pub pip: Vec<String>,
    pub conda: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SmokeTest {
    pub name: String,
    /// Run with `/bin/sh -c` in a container from the new image.
    pub run: String,
    /// Only run where a GPU is available; reported as skipped elsewhere.
    pub gpu: bool,
    /// Only run in builds that install VS Code (code-server); reported as
    /// skipped where the build leaves it out.
    pub vscode: bool,
    /// Checks the real base itself (e.g. CUDA's `nvcc`); skipped when the
    /// base is mapped to a stand-in.
    pub real_base: bool,
    pub timeout_seconds: u32,
    #[serde(skip)]
    pub pos: Pos,
}

/// Memory as KubeSpawner accepts it: bytes, or a number with K/M/G/T.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Memory {
    Bytes(u64),
    Text(String),
}

impl Memory {
    /// The size in bytes (K/M/G/T are 1024-based, as in KubeSpawner).
    pub fn bytes(&self) -> Option<f64> {
        match self {
            Memory::Bytes(b) => Some(*b as f64),
            Memory::Text(t) => {
                let unit = t.chars().last()?;
                let num = &t[..t.len() - unit.len_utf8()];
                let power = match unit {
                    'K' => 1,
                    'M' => 2,
                    'G' => 3,
                    'T' => 4,
                    _ => return None,
                };
                num.parse::<f64>().ok().map(|n| n * 1024f64.powi(power))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Gpus {
    Count(u32),
    Choices { choices: Vec<u32>, default: u32 },
}

impl Gpus {
    pub fn max(&self) -> u32 {
        match self {
            Gpus::Count(n) => *n,
            Gpus::Choices { choices, .. } => choices.iter().copied().max().unwrap_or(0),
        }
    }
}

/// Profile fields as written (image body, variant override or defaults).
#[derive(Debug, Clone, Serialize, Default)]
pub struct ProfileFields {
    pub display_name: Option<String>,
    pub description: Option<String>,
    #[serde(skip)]
    pub slug: Option<Spanned<String>>,
    pub default: Option<bool>,
    #[serde(skip)]
    pub default_pos: Option<Pos>,
    pub gpus: Option<Gpus>,
    #[serde(skip)]
    pub gpus_pos: Option<Pos>,
    pub cpu_limit: Option<f64>,
    pub cpu_guarantee: Option<f64>,
    pub mem_limit: Option<Memory>,
    pub mem_guarantee: Option<Memory>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Option<Vec<Toleration>>,
    pub groups: Option<Vec<String>>,
}

/// The spawner profile of one concrete image, defaults applied.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub slug: String,
    pub display_name: String,
    pub description: String,
    pub default: bool,
    /// `None` for CPU-only images.
    pub gpus: Option<Gpus>,
    pub cpu_limit: Option<f64>,
    pub cpu_guarantee: Option<f64>,
    pub mem_limit: Option<Memory>,
    pub mem_guarantee: Option<Memory>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    /// Empty: everyone may see it.
    pub groups: Vec<String>,
}

/// One concrete image: an image file with one combination of its variants.
#[derive(Debug, Clone, Serialize)]
pub struct Image {
    /// Stable concrete name, e.g. `notebook-scipy-cuda`.
    pub name: String,
    /// The image file's name; also the repository name.
    pub repository: String,
    /// Variant id used in tags, e.g. `scipy-cuda`, or `main` without variants.
    pub variant: String,
    /// The variant's axis values in axis order.
    pub axes: Vec<(String, String)>,
    pub default_variant: bool,
    pub file: String,
    #[serde(skip)]
    pub pos: Pos,
    pub description: String,
    pub template: String,
    #[serde(skip)]
    pub template_pos: Pos,
    /// Where the profile slug was written (the name, when it is derived).
    #[serde(skip)]
    pub slug_pos: Pos,
    /// Where `profile.gpus` and `profile.default` were written (else the name).
    #[serde(skip)]
    pub gpus_pos: Pos,
    #[serde(skip)]
    pub default_pos: Pos,
    pub parent: ParentRef,
    #[serde(skip)]
    pub parent_pos: Pos,
    pub packages: Packages,
    pub vscode_extensions: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub build_args: BTreeMap<String, String>,
    pub tests: Vec<SmokeTest>,
    pub profile: Profile,
    pub owners: Vec<String>,
    pub issue: Option<u64>,
    /// The builder also starts the Jupyter server and checks that `/api`
    /// answers (true unless the image file says `server_test: false`).
    pub server_test: bool,
    /// The scan policy for this image: the catalog's, with the image's
    /// `scan:` overrides and waivers applied.
    pub scan: Policy,
}

/// A validated, expanded catalog.
#[derive(Debug, Clone, Serialize)]
pub struct Catalog {
    pub settings: Settings,
    /// Concrete images in file order, variants in matrix order.
    pub images: Vec<Image>,
    /// Position of each image in `images`, by name (the first one, if a name
    /// is used twice).
    #[serde(skip)]
    pub index: HashMap<String, usize>,
}

impl Catalog {
    pub fn new(settings: Settings, images: Vec<Image>) -> Catalog {
        let mut index = HashMap::with_capacity(images.len());
        for (i, image) in images.iter().enumerate() {
            index.entry(image.name.clone()).or_insert(i);
        }
        Catalog {
            settings,
            images,
            index,
        }
    }

    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn image(&self, name: &str) -> Option<&Image> {
        self.position(name).map(|i| &self.images[i])
    }

    /// The base an image ultimately starts from (following catalog parents).
    pub fn root_base(&self, image: &Image) -> Option<&Base> {
        let mut current = image;
        for _ in 0..=self.images.len() {
            match &current.parent {
                ParentRef::Base(b) => return self.settings.bases.get(b),
                ParentRef::Image(p) => current = self.image(p)?,
            }
        }
        None
    }
}
