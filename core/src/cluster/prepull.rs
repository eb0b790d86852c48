//! Pre-puller DaemonSets: every published image pulled, by digest, onto
//! the nodes where its users' pods can be scheduled, before anyone starts
//! it.
//!
//! A *node class* is what decides where a pod may run: the profile's node
//! selector and the tolerations its pods get (the hub's base tolerations
//! and the profile's own, as KubeSpawner applies them). Images with the
//! same placement share one DaemonSet; GPU images carry the catalog's GPU
//! pool selector and tolerations, so they land only on GPU nodes, and CPU
//! images stay off tainted GPU nodes. Each image is an init container
//! (`/bin/sh -c "exit 0"`: pulled, started, done at once), and a pause
//! container keeps the pod, so that the DaemonSet's status says on how
//! many nodes every image is present. A class's name is derived from its
//! placement, so a changed image list updates that DaemonSet in place,
//! and a placement nobody uses any more leaves a stale DaemonSet that the
//! sync deletes.
//!
//! A DaemonSet's status says on how many of its nodes every image of its
//! current template is present ([`Rollout`]); [`pulling`] turns that into
//! how far each reference is, for the hub's `offer_after` gate (a new
//! version is offered once it is on enough of its nodes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Kind, Object, Owner, dns_label, labels, plan, string_map};
use crate::catalog::{Image, Toleration};

/// The label that ties a DaemonSet's pods to it (with the instance).
pub const NODE_CLASS: &str = "labforge.io/node-class";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrepullSettings {
    /// Keep pre-puller DaemonSets [default: true].
    pub enabled: bool,
    /// The container that keeps each pod running once its images are pulled.
    pub pause_image: String,
    /// Secrets (type `kubernetes.io/dockerconfigjson`) for a registry that
    /// needs a login; they must exist in the namespace.
    pub image_pull_secrets: Vec<String>,
    /// A PriorityClass for the pre-puller pods (e.g. a low one, so that they
    /// never push users' pods off a node).
    pub priority_class: Option<String>,
    /// Earlier published versions kept pulled too, beside the current one
    /// [default: 0].
    pub previous_versions: usize,
    /// Offer a new version to users only once it is pulled on this share
    /// of its nodes, in (0, 1], e.g. 0.9 [default: unset, offered at once].
    /// Meanwhile users keep the version before it; a new image appears
    /// once ready. Needs the hub's sync (`[kubernetes] sync = true`).
    pub offer_after: Option<f64>,
}

/// A `[kubernetes.prepull]` table that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "[kubernetes.prepull] offer_after = {0}: give the share of its nodes a new version must be pulled on before users are offered it, above 0 and at most 1 (e.g. 0.9), or leave it out to offer new versions at once"
    )]
    OfferAfterRange(f64),
    #[error(
        "[kubernetes.prepull] offer_after = {0} needs the pre-pullers: set enabled = true, or leave offer_after out"
    )]
    OfferAfterWithoutPrepull(f64),
}

impl PrepullSettings {
    /// Refuse settings that cannot work (checked when the configuration
    /// is loaded).
    pub fn check(&self) -> Result<(), SettingsError> {
        match self.offer_after {
            Some(share) if !(share > 0.0 && share <= 1.0) => {
                Err(SettingsError::OfferAfterRange(share))
            }
            Some(share) if !self.enabled => Err(SettingsError::OfferAfterWithoutPrepull(share)),
            _ => Ok(()),
        }
    }

    /// The share a new version waits for, when the gate is on.
    pub fn gate(&self) -> Option<f64> {
        self.offer_after.filter(|_| self.enabled)
    }
}

impl Default for PrepullSettings {
    fn default() -> PrepullSettings {
        PrepullSettings {
            enabled: true,
            pause_image: "registry.k8s.io/pause:3.10".into(),
            image_pull_secrets: Vec::new(),
            priority_class: None,
            previous_versions: 0,
            offer_after: None,
        }
    }
}

/// One published image and the references to pull (current first).
#[derive(Debug, Clone, PartialEq)]
pub struct PullImage {
    pub name: String,
    pub gpu: bool,
    pub node_selector: BTreeMap<String, String>,
    /// Only the profile's own; the hub's base tolerations are added per class.
    pub tolerations: Vec<Toleration>,
    /// `repo@sha256:…`, the current version first.
    pub references: Vec<String>,
    /// The version users are offered while the current one is held back
    /// (`offer_after`): pulled too, beyond `previous_versions`, so that it
    /// stays on its nodes (and reaches new ones) until the current one is
    /// offered.
    pub offered: Option<String>,
}

impl PullImage {
    pub fn new(image: &Image, references: Vec<String>) -> PullImage {
        PullImage {
            name: image.name.clone(),
            gpu: image.profile.gpus.is_some(),
            node_selector: image.profile.node_selector.clone(),
            tolerations: image.profile.tolerations.clone(),
            references,
            offered: None,
        }
    }
}

pub struct Prepull<'a> {
    pub instance: &'a str,
    pub images: &'a [PullImage],
    /// The tolerations every user pod gets from the hub's configuration.
    pub base_tolerations: &'a [Toleration],
    pub settings: &'a PrepullSettings,
    /// The object the DaemonSets belong to (the profiles ConfigMap), so that
    /// deleting it removes them too; unknown before it exists.
    pub owner: Option<&'a Owner>,
}

/// One node class and the images pulled on it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeClass {
    /// `gpu-<hash>` or `cpu-<hash>`.
    pub id: String,
    pub gpu: bool,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    /// (image name, reference), sorted by image name.
    pub pulls: Vec<(String, String)>,
}

/// The node classes of `images`, sorted by id.
pub fn classes(p: &Prepull<'_>) -> Vec<NodeClass> {
    let mut by_key: BTreeMap<String, NodeClass> = BTreeMap::new();
    for image in p.images {
        let mut tolerations: Vec<Toleration> = Vec::new();
        for t in p.base_tolerations.iter().chain(&image.tolerations) {
            // The API server drops empty strings: sending them would make
            // every sync see a difference.
            let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
            let t = Toleration {
                key: nonempty(&t.key),
                operator: nonempty(&t.operator),
                value: nonempty(&t.value),
                effect: nonempty(&t.effect),
                toleration_seconds: t.toleration_seconds,
            };
            if !tolerations.contains(&t) {
                tolerations.push(t);
            }
        }
        let key = json!({
            "nodeSelector": string_map(&image.node_selector),
            "tolerations": tolerations.iter().map(crate::spawner::toleration).collect::<Vec<_>>(),
        })
        .to_string();
        let class = by_key.entry(key.clone()).or_insert_with(|| NodeClass {
            id: hex8(&key),
            gpu: false,
            node_selector: image.node_selector.clone(),
            tolerations,
            pulls: Vec::new(),
        });
        class.gpu |= image.gpu;
        let wanted = 1 + p.settings.previous_versions;
        let extra = image
            .offered
            .as_ref()
            .filter(|o| !image.references.iter().take(wanted).any(|r| r == *o));
        for reference in image.references.iter().take(wanted).chain(extra) {
            class.pulls.push((image.name.clone(), reference.clone()));
        }
    }
    let mut classes: Vec<NodeClass> = by_key
        .into_values()
        .filter(|c| !c.pulls.is_empty())
        .map(|mut c| {
            c.id = format!("{}-{}", if c.gpu { "gpu" } else { "cpu" }, c.id);
            c.pulls.sort();
            c
        })
        .collect();
    classes.sort_by(|a, b| a.id.cmp(&b.id));
    classes
}

fn hex8(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn name(instance: &str, class: &str) -> String {
    dns_label(&format!("{instance}-prepull-{class}"), 63)
}

/// The DaemonSets, one per node class (none when pre-pulling is off).
pub fn daemonsets(p: &Prepull<'_>) -> Vec<Object> {
    if !p.settings.enabled {
        return Vec::new();
    }
    classes(p).iter().map(|class| daemonset(p, class)).collect()
}

fn daemonset(p: &Prepull<'_>, class: &NodeClass) -> Object {
    let name = name(p.instance, &class.id);
    let mut selector = Map::new();
    selector.insert(super::INSTANCE.into(), json!(p.instance));
    selector.insert(NODE_CLASS.into(), json!(class.id));
    let mut pod_labels = labels(p.instance, "prepull");
    pod_labels.insert(NODE_CLASS.into(), json!(class.id));

    // Nothing runs in these containers but `exit 0`: no privileges, no
    // writes, tiny limits.
    let security = json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": { "drop": ["ALL"] },
    });
    let resources = json!({
        "requests": { "cpu": "0", "memory": "0" },
        "limits": { "cpu": "100m", "memory": "64Mi" },
    });
    let mut used = Vec::new();
    let init: Vec<Value> = class
        .pulls
        .iter()
        .map(|(image, reference)| {
            let container = unique(&mut used, &format!("pull-{image}"));
            json!({
                "name": container,
                "image": reference,
                "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/sh", "-c", "exit 0"],
                "resources": resources,
                "securityContext": security,
            })
        })
        .collect();

    let mut spec = Map::new();
    spec.insert("automountServiceAccountToken".into(), json!(false));
    spec.insert("enableServiceLinks".into(), json!(false));
    spec.insert("terminationGracePeriodSeconds".into(), json!(0));
    spec.insert(
        "securityContext".into(),
        json!({
            "runAsNonRoot": true,
            "runAsUser": 65534,
            "runAsGroup": 65534,
            "seccompProfile": { "type": "RuntimeDefault" },
        }),
    );
    if !class.node_selector.is_empty() {
        spec.insert("nodeSelector".into(), string_map(&class.node_selector));
    }
    if !class.tolerations.is_empty() {
        spec.insert(
            "tolerations".into(),
            Value::Array(
                class
                    .tolerations
                    .iter()
                    .map(crate::spawner::toleration)
                    .collect(),
            ),
        );
    }
    if let Some(priority) = &p.settings.priority_class {
        spec.insert("priorityClassName".into(), json!(priority));
    }
    if !p.settings.image_pull_secrets.is_empty() {
        spec.insert(
            "imagePullSecrets".into(),
            Value::Array(
                p.settings
                    .image_pull_secrets
                    .iter()
                    .map(|s| json!({ "name": s }))
                    .collect(),
            ),
        );
    }
    spec.insert("initContainers".into(), Value::Array(init));
    spec.insert(
        "containers".into(),
        json!([{
            "name": "pause",
            "image": p.settings.pause_image,
            "imagePullPolicy": "IfNotPresent",
            "resources": {
                "requests": { "cpu": "1m", "memory": "8Mi" },
                "limits": { "cpu": "10m", "memory": "16Mi" },
            },
            "securityContext": security,
        }]),
    );

    let images: Vec<&str> = {
        let mut names: Vec<&str> = class.pulls.iter().map(|(n, _)| n.as_str()).collect();
        names.dedup();
        names
    };
    let mut metadata = json!({
        "name": name,
        "labels": Value::Object({
            let mut l = labels(p.instance, "prepull");
            l.insert(NODE_CLASS.into(), json!(class.id));
            l
        }),
        "annotations": {
            "labforge.io/images": images.join(","),
            "labforge.io/gpu": class.gpu.to_string(),
        },
    });
    if let (Some(owner), Some(m)) = (p.owner, metadata.as_object_mut()) {
        m.insert("ownerReferences".into(), json!([owner.reference()]));
    }
    let body = json!({
        "apiVersion": Kind::DaemonSet.api_version(),
        "kind": Kind::DaemonSet.name(),
        "metadata": metadata,
        "spec": {
            "selector": { "matchLabels": Value::Object(selector) },
            // Every node pulls at once: nobody waits on these pods.
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": { "maxUnavailable": "100%" },
            },
            "template": {
                "metadata": { "labels": Value::Object(pod_labels) },
                "spec": Value::Object(spec),
            },
        },
    });
    Object::new(Kind::DaemonSet, name, body)
}

/// A container name from `wanted`: a DNS label of at most 63 characters,
/// made unique among `used` with a numbered suffix.
fn unique(used: &mut Vec<String>, wanted: &str) -> String {
    let base = dns_label(wanted, 63);
    let mut candidate = base.clone();
    let mut n = 2;
    while used.contains(&candidate) {
        let suffix = format!("-{n}");
        let mut b = base.clone();
        b.truncate(63 - suffix.len());
        candidate = format!("{}{suffix}", b.trim_end_matches('-'));
        n += 1;
    }
    used.push(candidate.clone());
    candidate
}

/// How far a DaemonSet has rolled out its current template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rollout {
    /// Nodes that should run a pod.
    pub desired: u64,
    /// Pods of the current template that are available (all images pulled).
    pub pulled: u64,
    /// The controller has seen the current spec.
    pub observed: bool,
}

impl Rollout {
    /// From a DaemonSet as the API returns it.
    pub fn of(ds: &Value) -> Rollout {
        let n = |field: &str| {
            ds.pointer(&format!("/status/{field}"))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        let generation = ds.pointer("/metadata/generation").and_then(Value::as_u64);
        let observed = ds
            .pointer("/status/observedGeneration")
            .and_then(Value::as_u64);
        let observed = generation.is_some() && observed >= generation;
        Rollout {
            desired: n("desiredNumberScheduled"),
            pulled: if observed {
                n("updatedNumberScheduled").min(n("numberAvailable"))
            } else {
                0
            },
            observed,
        }
    }

    /// The share of its nodes that hold every image; `None` when no node
    /// matches its placement.
    pub fn share(&self) -> Option<f64> {
        (self.desired > 0).then(|| self.pulled as f64 / self.desired as f64)
    }
}

/// How far one reference is pulled onto the nodes of the pre-pullers
/// that pull it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pulling {
    /// Nodes that hold it, over all its pre-pullers.
    pub pulled: u64,
    /// Nodes that should.
    pub nodes: u64,
    /// On the required share of the nodes of every pre-puller that pulls it.
    pub ready: bool,
    /// Why not, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
}

/// Why a reference is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Waiting {
    /// Its pre-puller DaemonSet does not exist yet.
    Missing,
    /// Its pre-puller exists but does not pull it yet (not synced since).
    Outdated,
    /// The DaemonSet controller has not seen the current template yet.
    Unobserved,
    /// On fewer of its nodes than required.
    Pulling,
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waiting::Missing => "its pre-puller DaemonSet does not exist yet",
            Waiting::Outdated => "its pre-puller DaemonSet does not pull it yet",
            Waiting::Unobserved => {
                "the DaemonSet controller has not picked up the pre-puller's new template yet"
            }
            Waiting::Pulling => "still being pulled onto its nodes",
        })
    }
}

/// How many of `nodes` make `share`: the smallest whole number at or
/// above it, and at least one (the epsilon keeps 0.3 × 10 from rounding
/// up to 4).
pub fn needed(nodes: u64, share: f64) -> u64 {
    ((share * nodes as f64 - 1e-9).ceil().max(1.0) as u64).min(nodes.max(1))
}

/// Whether `pulled` of `nodes` reaches `share` (no node: never).
pub fn reaches(pulled: u64, nodes: u64, share: f64) -> bool {
    nodes > 0 && pulled >= needed(nodes, share)
}

/// The images of a DaemonSet's pod template's init containers.
pub fn init_images(ds: &Value) -> Vec<&str> {
    ds.pointer("/spec/template/spec/initContainers")
        .and_then(Value::as_array)
        .map(|containers| {
            containers
                .iter()
                .filter_map(|c| c.get("image").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// How far every reference of the `desired` pre-pullers is, from the
/// DaemonSets `listed` in the cluster: a reference is ready when every
/// pre-puller that should pull it exists, pulls it in a template its
/// controller has observed, and holds every image on at least `share` of
/// its nodes.
pub fn pulling(desired: &[Object], listed: &[Value], share: f64) -> BTreeMap<String, Pulling> {
    let mut out: BTreeMap<String, Pulling> = BTreeMap::new();
    for want in desired.iter().filter(|o| o.kind == Kind::DaemonSet) {
        let found = listed
            .iter()
            .find(|ds| plan::name(ds) == Some(want.name.as_str()));
        for reference in init_images(&want.body) {
            let this = match found {
                None => Pulling {
                    pulled: 0,
                    nodes: 0,
                    ready: false,
                    waiting: Some(Waiting::Missing),
                },
                Some(ds) => {
                    let rollout = Rollout::of(ds);
                    let waiting = if !init_images(ds).contains(&reference) {
                        Some(Waiting::Outdated)
                    } else if !rollout.observed {
                        Some(Waiting::Unobserved)
                    } else if rollout.desired == 0 {
                        // No node to pull onto (a GPU pool scaled to zero):
                        // nothing to wait for; the first user pod brings a
                        // node, and the pull, as it would without the gate.
                        None
                    } else if !reaches(rollout.pulled, rollout.desired, share) {
                        Some(Waiting::Pulling)
                    } else {
                        None
                    };
                    Pulling {
                        // Pods of an older template say nothing about this
                        // reference.
                        pulled: if waiting == Some(Waiting::Outdated) {
                            0
                        } else {
                            rollout.pulled
                        },
                        nodes: rollout.desired,
                        ready: waiting.is_none(),
                        waiting,
                    }
                }
            };
            out.entry(reference.to_string())
                .and_modify(|p| {
                    p.pulled += this.pulled;
                    p.nodes += this.nodes;
                    p.ready &= this.ready;
                    p.waiting = p.waiting.or(this.waiting);
                })
                .or_insert(this);
        }
    }
    out
}
