//! KubeSpawner's `profile_list`, built from the published catalog and
//! checked against the contract in `SPAWNER-CONTRACT` (KubeSpawner 7.1.0):
//! what the hub serves at `/api/v1/profiles`.
//!
//! Pure: the caller hands in the catalog images, the digests that are
//! published for them and the hub's spawner settings; nothing here reads
//! the registry or the state store.
//!
//! - [`profile_list`] builds the list for one viewer (already filtered with
//!   [`visible`]): stable slugs, digest-pinned images, GPUs as
//!   `extra_resource_limits`, the hub's own tolerations repeated, exactly one
//!   default, `choices` on every option, HTML-escaped names.
//! - [`check`] is an independent check of any `profile_list` JSON against
//!   the contract; the hub refuses to publish a list that fails it.
//! - [`values_fragment`] writes the list as a zero-to-jupyterhub
//!   `singleuser.profileList` values fragment.

mod build;
mod check;
#[cfg(test)]
mod tests;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::catalog::{Base, Image, Toleration};

pub(crate) use build::toleration;
pub use build::{escape_html, profile_list};
pub use check::{Violation, check};
pub use yaml::values_fragment;

/// The extended resource name GPUs are requested under by default.
pub const NVIDIA_GPU: &str = "nvidia.com/gpu";

/// The hub's own spawner settings that profiles must respect (from
/// `[hub.spawner]` in `labforge.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpawnerSettings {
    /// The extended resource GPUs are requested as [default: `nvidia.com/gpu`].
    pub gpu_resource: String,
    /// The tolerations the hub's `singleuser` configuration already has. A
    /// `tolerations` override *replaces* KubeSpawner's list, so every profile
    /// that sets tolerations repeats these [default: zero-to-jupyterhub's two
    /// `hub.jupyter.org/dedicated=user:NoSchedule` tolerations].
    pub base_tolerations: Vec<Toleration>,
    /// `image_pull_policy` for every profile (`Always`, `IfNotPresent`,
    /// `Never`); unset leaves the hub's.
    pub image_pull_policy: Option<String>,
    /// How many earlier published digests the version option offers besides
    /// the current one [default: 2].
    pub previous_versions: usize,
    /// Volumes every profile adds (e.g. a shared datasets folder), keyed by
    /// volume name: Kubernetes `Volume` objects without `name`. Sent as a
    /// dict, so they *add to* the hub's own (the home volume) instead of
    /// replacing them. `{username}`-style fields are expanded by KubeSpawner.
    pub volumes: BTreeMap<String, serde_json::Value>,
    /// Their mounts, keyed by volume name: `VolumeMount` objects without `name`.
    pub volume_mounts: BTreeMap<String, serde_json::Value>,
}

impl Default for SpawnerSettings {
    fn default() -> SpawnerSettings {
        let dedicated = |key: &str| Toleration {
            key: Some(key.to_string()),
            operator: Some("Equal".to_string()),
            value: Some("user".to_string()),
            effect: Some("NoSchedule".to_string()),
            toleration_seconds: None,
        };
        SpawnerSettings {
            gpu_resource: NVIDIA_GPU.to_string(),
            base_tolerations: vec![
                dedicated("hub.jupyter.org/dedicated"),
                dedicated("hub.jupyter.org_dedicated"),
            ],
            image_pull_policy: None,
            previous_versions: 2,
            volumes: BTreeMap::new(),
            volume_mounts: BTreeMap::new(),
        }
    }
}

/// One published digest of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// `sha256:<64 hex>`.
    pub digest: String,
    /// `host/path/repo@sha256:…`: what the pod runs.
    pub reference: String,
    /// When it was first published (Unix ms).
    pub published_at: i64,
}

/// An image as the spawner sees it: the catalog entry and what is published.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub image: &'a Image,
    /// The base it ultimately starts from (CUDA, cuDNN, driver), if known.
    pub base: Option<&'a Base>,
    /// Newest first: `versions[0]` is current, the rest are earlier
    /// published digests (at most `previous_versions` of them are offered).
    /// Never empty: an image with nothing published is not an entry.
    pub versions: &'a [Version],
}

/// Who asks for the list: `?user=` and `?group=` of the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Viewer {
    pub user: Option<String>,
    pub groups: BTreeSet<String>,
    /// Sees every profile whatever its groups (a member of the hub's
    /// `staff_groups`).
    pub see_all: bool,
}

/// Whether `viewer` may see a profile limited to `groups` (empty: everyone).
pub fn visible(groups: &[String], viewer: &Viewer) -> bool {
    viewer.see_all || groups.is_empty() || groups.iter().any(|g| viewer.groups.contains(g))
}

/// One KubeSpawner profile, serialized in KubeSpawner's own key names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnerProfile {
    pub slug: String,
    /// HTML-escaped.
    pub display_name: String,
    /// HTML-escaped.
    pub description: String,
    pub default: bool,
    /// Trait name → JSON value, in a fixed order.
    pub kubespawner_override: IndexMap<String, serde_json::Value>,
    /// Shown as selects in this order: `version`, then `gpus` when the image
    /// offers a choice of GPU counts.
    pub profile_options: IndexMap<String, ProfileOption>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileOption {
    pub display_name: String,
    /// Always present (KubeSpawner's form and fancy-profiles need it).
    pub choices: IndexMap<String, Choice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub default: bool,
    pub kubespawner_override: IndexMap<String, serde_json::Value>,
}
