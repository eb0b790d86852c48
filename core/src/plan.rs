//! Planning: which images must be built and why. Pure: the registry's answers
//! and the baseline (what was built before) come in as values.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::catalog::{Catalog, Registry};
use crate::graph::Graph;
use crate::identity::{Inputs, ParentInput, Prepared};
use crate::render::{APT_FILE, CONDA_FILE, PIP_FILE, VSCODE_FILE};

/// What the registry said about an image's content tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum Presence {
    /// The content tag exists, with this manifest digest.
    Present(String),
    Absent,
    /// No registry is configured, so nothing was asked.
    NotChecked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Build,
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedImage {
    pub name: String,
    pub repository: String,
    pub variant: String,
    pub level: usize,
    pub parent: String,
    pub identity: String,
    /// The immutable content tag: `<variant>-<identity[..12]>`.
    pub tag: String,
    /// `<registry>/<prefix>/<repository>:<tag>`, when a registry is configured.
    pub reference: Option<String>,
    pub registry: Presence,
    pub action: Action,
    pub reasons: Vec<String>,
    pub inputs: Inputs,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub images: usize,
    pub build: usize,
    pub skip: usize,
    pub levels: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// `host/prefix` of the registry asked, if any.
    pub registry: Option<String>,
    /// Image names per build level: parents before children, a level's images independent.
    pub levels: Vec<Vec<String>>,
    /// Images in build order.
    pub images: Vec<PlannedImage>,
    pub summary: Summary,
}

/// The content tag of an image.
pub fn content_tag(variant: &str, inputs: &Inputs) -> String {
    format!("{variant}-{}", inputs.short())
}

/// Make the plan. `presence` and `prepared` are indexed like `catalog.images`;
/// `baseline` maps image names to the inputs of their last known build.
pub fn plan(
    catalog: &Catalog,
    graph: &Graph,
    prepared: &[Prepared],
    presence: &[Presence],
    baseline: &BTreeMap<String, Inputs>,
    registry: Option<&Registry>,
) -> Plan {
    let mut images = Vec::new();
    for i in graph.order() {
        let image = &catalog.images[i];
        let inputs = &prepared[i].inputs;
        let tag = content_tag(&image.variant, inputs);
        let state = presence.get(i).cloned().unwrap_or(Presence::NotChecked);
        let (action, reasons) = match &state {
            Presence::Present(_) => (
                Action::Skip,
                vec![format!("up to date: {tag} is in the registry")],
            ),
            _ => (
                Action::Build,
                reasons(baseline.get(&image.name), inputs, &state),
            ),
        };
        images.push(PlannedImage {
            name: image.name.clone(),
            repository: image.repository.clone(),
            variant: image.variant.clone(),
            level: graph.level[i],
            parent: match &inputs.parent {
                ParentInput::Base { reference, .. } => reference.clone(),
                ParentInput::Image { name, .. } => name.clone(),
            },
            identity: inputs.identity.clone(),
            reference: registry.map(|r| format!("{}:{tag}", r.repository(&image.repository))),
            tag,
            registry: state,
            action,
            reasons,
            inputs: inputs.clone(),
        });
    }
    let levels = graph
        .levels
        .iter()
        .map(|l| l.iter().map(|&i| catalog.images[i].name.clone()).collect())
        .collect();
    let build = images.iter().filter(|i| i.action == Action::Build).count();
    Plan {
        registry: registry.map(|r| r.repository("").trim_end_matches('/').to_string()),
        summary: Summary {
            images: images.len(),
            build,
            skip: images.len() - build,
            levels: graph.levels.len(),
        },
        levels,
        images,
    }
}

/// Why an image that is not in the registry must be built.
pub fn reasons(before: Option<&Inputs>, now: &Inputs, state: &Presence) -> Vec<String> {
    let Some(before) = before else {
        return vec!["new: no earlier build of this image is known".to_string()];
    };
    if before.identity == now.identity {
        return vec![match state {
            Presence::NotChecked => {
                "inputs unchanged; no registry configured to confirm the image exists".to_string()
            }
            _ => "inputs unchanged, but the image is missing from the registry".to_string(),
        }];
    }
    let mut out = Vec::new();
    if before.platform != now.platform {
        out.push(format!(
            "platform changed: {} → {}",
            before.platform, now.platform
        ));
    }
    let parent_changed = match (&before.parent, &now.parent) {
        (
            ParentInput::Image {
                name: a,
                identity: x,
            },
            ParentInput::Image {
                name: b,
                identity: y,
            },
        ) => {
            if a != b {
                out.push(format!("parent changed: {a} → {b}"));
                true
            } else if x != y {
                out.push(format!("parent {b} changed"));
                true
            } else {
                false
            }
        }
        (ParentInput::Base { reference: a, .. }, ParentInput::Base { reference: b, .. }) => {
            if a != b {
                out.push(format!("base changed: {a} → {b}"));
            }
            a != b
        }
        (a, b) => {
            out.push(format!(
                "parent changed: {} → {}",
                parent_name(a),
                parent_name(b)
            ));
            true
        }
    };
    let mut template_changed = false;
    if before.dockerfile != now.dockerfile {
        for change in map_diff(&before.templates, &now.templates) {
            template_changed = true;
            out.push(format!("template {change}"));
        }
    }
    let lists = [
        ("apt", APT_FILE, &before.packages.apt, &now.packages.apt),
        ("pip", PIP_FILE, &before.packages.pip, &now.packages.pip),
        (
            "conda",
            CONDA_FILE,
            &before.packages.conda,
            &now.packages.conda,
        ),
        (
            "VS Code",
            VSCODE_FILE,
            &before.packages.vscode,
            &now.packages.vscode,
        ),
    ];
    let mut explained: BTreeSet<&str> = BTreeSet::new();
    for (kind, file, a, b) in lists {
        let changes = list_diff(kind, a, b);
        if !changes.is_empty() {
            explained.insert(file);
            out.extend(changes);
        }
    }
    for change in map_diff(&before.context, &now.context) {
        let path = change.split(' ').next().unwrap_or_default();
        if !explained.contains(path) {
            out.push(format!("context file {change}"));
        }
    }
    for change in map_diff(&before.build_args, &now.build_args) {
        out.push(format!("build argument {change}"));
    }
    let values_changed = before.values != now.values;
    if values_changed {
        out.push(
            "catalog entry changed (env, labels, build args, variant or base settings)".to_string(),
        );
    }
    // A package list that appears or goes away changes the Dockerfile too.
    let explained = template_changed || parent_changed || values_changed || !explained.is_empty();
    if before.dockerfile != now.dockerfile && !explained {
        out.push("Dockerfile changed".to_string());
    }
    if out.is_empty() {
        out.push("inputs changed".to_string());
    }
    out
}

fn parent_name(p: &ParentInput) -> String {
    match p {
        ParentInput::Base { name, .. } => format!("base {name}"),
        ParentInput::Image { name, .. } => name.clone(),
    }
}

/// `"<key> added"`, `"<key> removed"`, `"<key> changed"` for two maps.
fn map_diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter_map(|k| match (a.get(k), b.get(k)) {
            (None, Some(_)) => Some(format!("{k} added")),
            (Some(_), None) => Some(format!("{k} removed")),
            (Some(x), Some(y)) if x != y => Some(format!("{k} changed")),
            _ => None,
        })
        .collect()
}

fn package_name(spec: &str) -> &str {
    let end = spec
        .find(['=', '<', '>', '!', '~', '[', '@'])
        .unwrap_or(spec.len());
    &spec[..end]
}

fn list_diff(kind: &str, a: &[String], b: &[String]) -> Vec<String> {
    let by_name = |l: &[String]| -> BTreeMap<String, String> {
        l.iter()
            .map(|s| (package_name(s).to_string(), s.clone()))
            .collect()
    };
    let (a, b) = (by_name(a), by_name(b));
    let mut out = Vec::new();
    for (name, spec) in &b {
        match a.get(name) {
            None => out.push(format!("{kind} package added: {spec}")),
            Some(old) if old != spec => out.push(format!("{kind} package changed: {old} → {spec}")),
            _ => {}
        }
    }
    for spec in a
        .iter()
        .filter(|(n, _)| !b.contains_key(*n))
        .map(|(_, s)| s)
    {
        out.push(format!("{kind} package removed: {spec}"));
    }
    out
}
