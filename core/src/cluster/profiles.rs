//! The profiles ConfigMap: the hub's current profile list, for clusters
//! whose JupyterHub reads it from a mounted ConfigMap instead of asking
//! the hub over HTTP.
//!
//! Keys: `profile_list.json` (the list a user in no group sees, the same
//! body as `/api/v1/profiles`), `profile_list_all.json` (every profile, as
//! staff see it) and `groups.json` (`{slug: [group, …]}` for the profiles
//! limited to groups), so that a reader can filter the full list by the
//! user's groups the way the hub does.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{Kind, Object, labels};

/// Kubernetes refuses a ConfigMap whose data exceeds 1 MiB.
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfilesError {
    #[error(
        "the profile list is {bytes} bytes, over the {MAX_DATA_BYTES} bytes a ConfigMap may hold: turn the profiles ConfigMap off ([kubernetes] profiles_configmap = false) and let JupyterHub read the list from the hub's API"
    )]
    TooLarge { bytes: usize },
}

pub struct Profiles<'a> {
    pub instance: &'a str,
    /// The list a user in no group sees (JSON).
    pub public: &'a str,
    /// Every profile (JSON).
    pub all: &'a str,
    /// The groups of each profile shown only to some, by slug.
    pub groups: &'a BTreeMap<String, Vec<String>>,
}

pub fn name(instance: &str) -> String {
    format!("{instance}-profiles")
}

pub fn configmap(p: &Profiles<'_>) -> Result<Object, ProfilesError> {
    let groups = serde_json::to_string_pretty(p.groups).unwrap_or_else(|_| "{}".into());
    let bytes = p.public.len() + p.all.len() + groups.len();
    if bytes > MAX_DATA_BYTES {
        return Err(ProfilesError::TooLarge { bytes });
    }
    let name = name(p.instance);
    let body = json!({
        "apiVersion": Kind::ConfigMap.api_version(),
        "kind": Kind::ConfigMap.name(),
        "metadata": {
            "name": name,
            "labels": Value::Object(labels(p.instance, "profiles")),
            "annotations": {},
        },
        "data": {
            "profile_list.json": p.public,
            "profile_list_all.json": p.all,
            "groups.json": groups,
        },
    });
    Ok(Object::new(Kind::ConfigMap, name, body))
}

/// The image references a profiles ConfigMap (as listed from the cluster)
/// offers in its full list: what users were offered when it was last
/// synced. Nothing when it cannot be read.
pub fn offered(configmap: &Value) -> BTreeSet<String> {
    fn walk(value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match v {
                        Value::String(s) if key == "image" && s.contains("@sha256:") => {
                            out.insert(s.clone());
                        }
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    if let Some(list) = configmap
        .pointer("/data/profile_list_all.json")
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
    {
        walk(&list, &mut out);
    }
    out
}
