//! Building the profile list (see the module docs of `spawner`).
//!
//! Turns catalog entries and their published digests into KubeSpawner
//! profiles. Pure and infallible: the entries are already validated by the
//! catalog, and the hub runs [`super::check`] on the result before serving
//! it. Must not read the registry or the state store, and must not know
//! about viewers (the caller filters entries with [`super::visible`]).

use indexmap::IndexMap;
use serde_json::{Map, Number, Value, json};

use super::{Choice, Entry, ProfileOption, SpawnerProfile, SpawnerSettings, Version};
use crate::catalog::{Gpus, Memory, Toleration};
use crate::scan::policy::Date;

/// The label every spawned pod gets, naming the catalog image it runs.
const IMAGE_LABEL: &str = "hub.labforge.io/image";

/// Escape `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The profile list for the given entries (already filtered for one
/// viewer), in entry order. Exactly one profile is the default: the
/// catalog's default if it is among `entries`, else the first one.
pub fn profile_list(entries: &[Entry<'_>], settings: &SpawnerSettings) -> Vec<SpawnerProfile> {
    let default = entries
        .iter()
        .position(|e| e.image.profile.default)
        .unwrap_or(0);
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| profile(entry, i == default, settings))
        .collect()
}

fn profile(entry: &Entry<'_>, default: bool, settings: &SpawnerSettings) -> SpawnerProfile {
    let image = entry.image;
    let p = &image.profile;
    let description = if p.description.is_empty() {
        &image.description
    } else {
        &p.description
    };
    let gpus = gpu_count(p.gpus.as_ref());

    let mut o: IndexMap<String, Value> = IndexMap::new();
    if let Some(current) = entry.versions.first() {
        o.insert("image".into(), Value::String(current.reference.clone()));
    }
    if let Some(policy) = &settings.image_pull_policy {
        o.insert("image_pull_policy".into(), Value::String(policy.clone()));
    }
    if let Some(cpu) = p.cpu_limit.and_then(Number::from_f64) {
        o.insert("cpu_limit".into(), Value::Number(cpu));
    }
    if let Some(cpu) = p.cpu_guarantee.and_then(Number::from_f64) {
        o.insert("cpu_guarantee".into(), Value::Number(cpu));
    }
    if let Some(mem) = &p.mem_limit {
        o.insert("mem_limit".into(), memory(mem));
    }
    if let Some(mem) = &p.mem_guarantee {
        o.insert("mem_guarantee".into(), memory(mem));
    }
    if let Some(n) = gpus {
        o.insert(
            "extra_resource_limits".into(),
            gpu_limits(&settings.gpu_resource, n),
        );
    }
    if !p.node_selector.is_empty() {
        let selector: Map<String, Value> = p
            .node_selector
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        o.insert("node_selector".into(), Value::Object(selector));
    }
    if !p.tolerations.is_empty() {
        let mut all: Vec<&Toleration> = Vec::new();
        for t in settings.base_tolerations.iter().chain(&p.tolerations) {
            if !all.contains(&t) {
                all.push(t);
            }
        }
        o.insert(
            "tolerations".into(),
            Value::Array(all.into_iter().map(toleration).collect()),
        );
    }
    for (key, named) in [
        ("volumes", &settings.volumes),
        ("volume_mounts", &settings.volume_mounts),
    ] {
        if !named.is_empty() {
            // Keyed by name (KubeSpawner merges a dict with the hub's own);
            // each entry carries its name as Kubernetes wants it.
            let by_name: Map<String, Value> = named
                .iter()
                .map(|(name, v)| {
                    let mut v = v.clone();
                    if let Value::Object(m) = &mut v {
                        m.insert("name".into(), Value::String(name.clone()));
                    }
                    (name.clone(), v)
                })
                .collect();
            o.insert(key.into(), Value::Object(by_name));
        }
    }
    o.insert("extra_labels".into(), json!({ IMAGE_LABEL: image.name }));

    let mut options = IndexMap::new();
    options.insert(
        "version".to_string(),
        version_option(entry.versions, settings.previous_versions),
    );
    if let Some(Gpus::Choices { choices, default }) = &p.gpus {
        options.insert(
            "gpus".to_string(),
            gpu_option(choices, *default, &settings.gpu_resource),
        );
    }

    SpawnerProfile {
        slug: p.slug.clone(),
        display_name: escape_html(&p.display_name),
        description: escape_html(description),
        default,
        kubespawner_override: o,
        profile_options: options,
    }
}

/// The GPU count a profile asks for by default (`None`: a CPU profile).
fn gpu_count(gpus: Option<&Gpus>) -> Option<u32> {
    let n = match gpus? {
        Gpus::Count(n) => *n,
        Gpus::Choices { choices, default } => {
            if choices.contains(default) {
                *default
            } else {
                choices.first().copied().unwrap_or(0)
            }
        }
    };
    (n > 0).then_some(n)
}

/// `{resource: "<n>"}`: Kubernetes wants whole numbers for extended
/// resources, and KubeSpawner passes strings through unchanged.
fn gpu_limits(resource: &str, n: u32) -> Value {
    let mut m = Map::new();
    m.insert(resource.to_string(), Value::String(n.to_string()));
    Value::Object(m)
}

fn memory(m: &Memory) -> Value {
    match m {
        Memory::Bytes(b) => Value::from(*b),
        Memory::Text(t) => Value::String(t.clone()),
    }
}

/// A toleration in Kubernetes' camelCase form, with only the fields set.
pub(crate) fn toleration(t: &Toleration) -> Value {
    let mut m = Map::new();
    let fields = [
        ("key", &t.key),
        ("operator", &t.operator),
        ("value", &t.value),
        ("effect", &t.effect),
    ];
    for (name, field) in fields {
        if let Some(v) = field {
            m.insert(name.to_string(), Value::String(v.clone()));
        }
    }
    if let Some(s) = t.toleration_seconds {
        m.insert("tolerationSeconds".to_string(), Value::from(s));
    }
    Value::Object(m)
}

/// The current digest and up to `previous` earlier ones.
fn version_option(versions: &[Version], previous: usize) -> ProfileOption {
    let mut choices = IndexMap::new();
    for (i, v) in versions.iter().take(previous.saturating_add(1)).enumerate() {
        let (key, label) = match i {
            0 => ("current".to_string(), "Current".to_string()),
            1 => ("previous".to_string(), "Previous".to_string()),
            n => (format!("previous-{n}"), format!("Previous {n}")),
        };
        let date = Date::from_unix(v.published_at.div_euclid(1000));
        let short = v.digest.get(..19).unwrap_or(&v.digest);
        let mut o = IndexMap::new();
        o.insert("image".to_string(), Value::String(v.reference.clone()));
        choices.insert(
            key,
            Choice {
                display_name: escape_html(&format!("{label} · published {date} · {short}")),
                description: Some(escape_html(&v.digest)),
                default: i == 0,
                kubespawner_override: o,
            },
        );
    }
    ProfileOption {
        display_name: "Version".to_string(),
        choices,
    }
}

/// A choice of GPU counts, defaulting to the catalog's default.
fn gpu_option(counts: &[u32], default: u32, resource: &str) -> ProfileOption {
    let default = if counts.contains(&default) {
        default
    } else {
        counts.first().copied().unwrap_or(0)
    };
    let mut choices = IndexMap::new();
    for &n in counts {
        let mut o = IndexMap::new();
        o.insert("extra_resource_limits".to_string(), gpu_limits(resource, n));
        choices.insert(
            n.to_string(),
            Choice {
                display_name: if n == 1 {
                    "1 GPU".to_string()
                } else {
                    format!("{n} GPUs")
                },
                description: None,
                default: n == default,
                kubespawner_override: o,
            },
        );
    }
    ProfileOption {
        display_name: "GPUs".to_string(),
        choices,
    }
}
