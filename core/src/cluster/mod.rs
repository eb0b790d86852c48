//! Kubernetes objects labforge manages, as pure functions: what the
//! cluster should hold for a published catalog, and what has to change to
//! get there from what it holds.
//!
//! - [`profiles`]: the ConfigMap with the current profile list, for
//!   clusters that read it from there.
//! - [`prepull`]: one pre-puller DaemonSet per node class, so that an image
//!   is pulled exactly where its users' pods can be scheduled (GPU images on
//!   GPU nodes), by digest; and how far each has rolled out.
//! - [`job`]: the Job of one image build in a rootless BuildKit pod that
//!   fetches its context with a one-time token and pushes by content tag.
//! - [`testpod`]: the Pod of one smoke test, from the pushed image by
//!   digest, the catalog's command as one `sh -c` argument.
//! - [`plan`]: desired objects against the listed ones → create, update
//!   (with the fields that differ), unchanged, delete.
//!
//! Nothing here talks to a cluster, reads a clock or a file: the caller
//! (`labforge_builder::cluster` for the API, the hub for the inputs) hands in
//! the published catalog and the objects it listed. Every object carries
//! the same labels, so that a label selector finds exactly labforge's own
//! objects of one instance, and a hash of its body, so that a sync that has
//! nothing to change sends nothing.

pub mod job;
pub mod plan;
pub mod prepull;
pub mod profiles;
pub mod testpod;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

pub use plan::{Action, Change, plan};

/// `app.kubernetes.io/managed-by` (the recommended label) says who writes
/// an object; the selector of every listing uses it.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
/// Which labforge installation owns an object (several may share a namespace).
pub const INSTANCE: &str = "labforge.io/instance";
/// `profiles`, `prepull`, `build` or `smoke-test`.
pub const COMPONENT: &str = "labforge.io/component";
/// sha256 of the body labforge applied last, without this annotation.
pub const APPLIED_HASH: &str = "labforge.io/applied-hash";
/// The field manager of server-side apply.
pub const FIELD_MANAGER: &str = "labforge";

/// The kinds labforge keeps in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    ConfigMap,
    DaemonSet,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::ConfigMap, Kind::DaemonSet];

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::ConfigMap => "v1",
            Kind::DaemonSet => "apps/v1",
        }
    }

    /// The API group (`""` for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::ConfigMap => "",
            Kind::DaemonSet => "apps",
        }
    }

    pub fn version(self) -> &'static str {
        "v1"
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::DaemonSet => "DaemonSet",
        }
    }

    /// The plural resource name in URLs.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmaps",
            Kind::DaemonSet => "daemonsets",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::ConfigMap => "configmap",
            Kind::DaemonSet => "daemonset",
        })
    }
}

/// One object as labforge wants it: the body it server-side applies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Object {
    pub kind: Kind,
    pub name: String,
    pub body: Value,
}

impl Object {
    /// The object with `APPLIED_HASH` set from the rest of its body.
    fn new(kind: Kind, name: String, mut body: Value) -> Object {
        let hash = body_hash(&body);
        if let Some(annotations) = body
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.insert(APPLIED_HASH.into(), Value::String(hash));
        } else if let Some(metadata) = body.pointer_mut("/metadata").and_then(Value::as_object_mut)
        {
            metadata.insert("annotations".into(), json!({ APPLIED_HASH: hash }));
        }
        Object { kind, name, body }
    }

    /// The hash it was applied with.
    pub fn applied_hash(&self) -> Option<&str> {
        applied_hash(&self.body)
    }
}

/// `metadata.annotations[APPLIED_HASH]` of any object.
pub fn applied_hash(body: &Value) -> Option<&str> {
    body.pointer("/metadata/annotations")
        .and_then(|a| a.get(APPLIED_HASH))
        .and_then(Value::as_str)
}

/// sha256 over the canonical JSON of a body without its hash annotation
/// (serde_json's maps are sorted, so the bytes are canonical).
fn body_hash(body: &Value) -> String {
    let mut body = body.clone();
    if let Some(a) = body
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove(APPLIED_HASH);
    }
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The labels every object of `instance` carries.
pub fn labels(instance: &str, component: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(MANAGED_BY.into(), json!("labforge"));
    m.insert(PART_OF.into(), json!("labforge"));
    m.insert(INSTANCE.into(), json!(instance));
    m.insert(COMPONENT.into(), json!(component));
    m
}

/// The label selector that lists labforge's own objects of `instance`.
pub fn selector(instance: &str) -> String {
    format!("{MANAGED_BY}=labforge,{INSTANCE}={instance}")
}

/// The object another one is owned by (its garbage collector parent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub kind: Kind,
    pub name: String,
    pub uid: String,
}

impl Owner {
    fn reference(&self) -> Value {
        json!({
            "apiVersion": self.kind.api_version(),
            "kind": self.kind.name(),
            "name": self.name,
            "uid": self.uid,
        })
    }
}

/// A name as a DNS-1123 label: lowercase alphanumerics and `-`, at most
/// `max` characters, starting and ending alphanumeric.
pub fn dns_label(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(max);
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// The sorted string map as JSON.
fn string_map(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}
