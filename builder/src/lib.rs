//! The labforge pipeline: reading a project from disk, writing rendered build
//! contexts, planning against the registry, and building, smoke-testing,
//! pushing and recording images. Later stages (scan, publish) join here, one
//! module per outside system.

pub mod build;
pub mod buildkit;
pub mod ca;
pub mod cluster;
pub mod config;
pub mod context_server;
pub mod creds;
pub mod engine;
pub mod kube_build;
pub mod kube_test;
pub mod output;
pub mod project;
pub mod push;
pub mod registry;
pub mod rescan;
pub mod scan;
pub mod state;

use std::collections::BTreeMap;
use std::sync::Arc;

use labforge_core::catalog::Registry;
use labforge_core::identity::Inputs;
use labforge_core::plan::{self, Plan, Presence};
use labforge_core::render::BuildEnv;
use labforge_core::{Analyzed, Problem};

pub use project::{Layout, LoadError};
pub use registry::{ImageRef, RegistryClient, RegistryError, RegistryOptions};

/// Why a project could not be analysed.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the catalog has {} problem(s)", .0.len())]
    Invalid(Vec<Problem>),
}

/// Read, validate, render and identify the whole catalog.
pub fn analyze(layout: &Layout, env: &BuildEnv) -> Result<Analyzed, AnalyzeError> {
    let sources = layout.read_catalog()?;
    let templates = layout.read_templates()?;
    labforge_core::analyze(&sources, templates, env).map_err(AnalyzeError::Invalid)
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The registry error is part of the message, not a separate cause, so
    /// that it is printed once.
    #[error("{image}: {error}")]
    Registry { image: String, error: RegistryError },
    #[error("cannot set up the registry client: {0}")]
    Client(RegistryError),
    #[error("the baseline {path} is not a plan written by `labforge plan --json`: {message}")]
    Baseline { path: String, message: String },
}

/// Why a base could not be pinned to a digest.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("base {base}: {reference:?} is not an image reference: {message}")]
    Reference {
        base: String,
        reference: String,
        message: String,
    },
    #[error(
        "base {base}: {reference} is not in its registry; push it there, pin it with @sha256:…, or map it to one that is (--base-map)"
    )]
    Missing { base: String, reference: String },
    #[error(
        "base {base}: cannot resolve {reference} to a digest: {error} (check the network and that registry's login, or map the base with --base-map)"
    )]
    Registry {
        base: String,
        reference: String,
        error: RegistryError,
    },
}

/// Pin every base the catalog uses to the digest its registry has now: the
/// returned environment maps each base reference (after `env`'s base map) to
/// `name@sha256:…`, so that identities name the exact base content and a
/// moved upstream tag rebuilds everything on it. Returns that environment
/// and base reference → pinned reference. One manifest HEAD per base; bases
/// already pinned by digest cost nothing.
///
/// `only` limits it to the bases of those images (indexes into the catalog);
/// `login` gives the login for a base registry's host (see
/// [`creds::login_for`]): `options` carries none, so that the target
/// registry's login never reaches another registry.
pub async fn resolve_bases(
    analyzed: &Analyzed,
    env: &BuildEnv,
    options: RegistryOptions,
    only: Option<&[usize]>,
    login: &(dyn Fn(&str) -> Option<(String, String)> + Sync),
) -> Result<(BuildEnv, BTreeMap<String, String>), ResolveError> {
    let used: std::collections::BTreeSet<&str> = analyzed
        .catalog
        .images
        .iter()
        .enumerate()
        .filter(|(i, _)| only.is_none_or(|o| o.contains(i)))
        .filter_map(|(_, i)| match &i.parent {
            labforge_core::catalog::ParentRef::Base(b) => Some(b.as_str()),
            labforge_core::catalog::ParentRef::Image(_) => None,
        })
        .collect();
    let mut wanted: Vec<(String, String, ImageRef)> = Vec::new();
    let mut pinned: BTreeMap<String, String> = BTreeMap::new();
    for (name, base) in &analyzed.catalog.settings.bases {
        if !used.contains(name.as_str()) {
            continue;
        }
        let mapped = env.base_map.apply(&base.image).to_string();
        let parts = labforge_core::formats::split_reference(&mapped).map_err(|message| {
            ResolveError::Reference {
                base: name.clone(),
                reference: mapped.clone(),
                message,
            }
        })?;
        if parts.digest.is_some() {
            pinned.insert(base.image.clone(), mapped);
            continue;
        }
        let reference = ImageRef {
            registry: parts.registry.clone(),
            repository: parts.repository.clone(),
            reference: parts.tag.clone().unwrap_or_else(|| "latest".into()),
        };
        wanted.push((name.clone(), base.image.clone(), reference));
    }
    // One client per registry host, each with that host's own login.
    let hosts: std::collections::BTreeSet<String> =
        wanted.iter().map(|w| w.2.registry.clone()).collect();
    let mut answers = Vec::new();
    for host in hosts {
        let group: Vec<&(String, String, ImageRef)> =
            wanted.iter().filter(|w| w.2.registry == host).collect();
        let (username, password) = login(&host).unzip();
        let client = Arc::new(
            RegistryClient::new(
                RegistryOptions {
                    username,
                    password,
                    ..options.clone()
                },
                &[host.as_str()],
            )
            .map_err(|error| ResolveError::Registry {
                base: group[0].0.clone(),
                reference: group[0].2.to_string(),
                error,
            })?,
        );
        let refs: Vec<ImageRef> = group.iter().map(|w| w.2.clone()).collect();
        let found = client.presence(&refs, refs.len()).await;
        answers.extend(group.into_iter().cloned().zip(found));
    }
    {
        for ((name, original, reference), answer) in answers {
            let mapped = env.base_map.apply(&original).to_string();
            match answer {
                Ok(Some(digest)) => {
                    // `name:tag@digest` keeps the tag for people; the digest decides.
                    pinned.insert(original, format!("{mapped}@{digest}"));
                }
                Ok(None) => {
                    return Err(ResolveError::Missing {
                        base: name,
                        reference: mapped,
                    });
                }
                Err(error) => {
                    return Err(ResolveError::Registry {
                        base: name,
                        reference: reference.to_string(),
                        error,
                    });
                }
            }
        }
    }
    let base_map = labforge_core::render::BaseMap(pinned.clone());
    Ok((
        BuildEnv {
            base_map,
            build_args: env.build_args.clone(),
        },
        pinned
            .iter()
            .map(|(k, v)| (env.base_map.apply(k).to_string(), v.clone()))
            .collect(),
    ))
}

/// Read the image inputs out of a previous `labforge plan --json` document.
pub fn baseline_from_plan_json(
    path: &str,
    text: &str,
) -> Result<BTreeMap<String, Inputs>, PlanError> {
    #[derive(serde::Deserialize)]
    struct Doc {
        images: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        name: String,
        inputs: Inputs,
    }
    let doc: Doc = serde_json::from_str(text).map_err(|e| PlanError::Baseline {
        path: path.to_string(),
        message: e.to_string(),
    })?;
    Ok(doc.images.into_iter().map(|e| (e.name, e.inputs)).collect())
}

/// Plan the catalog: ask the registry (when there is one) whether each
/// image's content tag exists, concurrently, and say what to build and why.
pub async fn plan(
    analyzed: &Analyzed,
    registry: Option<&Registry>,
    options: RegistryOptions,
    baseline: &BTreeMap<String, Inputs>,
    jobs: usize,
) -> Result<(Plan, usize), PlanError> {
    let images = &analyzed.catalog.images;
    let mut presence = vec![Presence::NotChecked; images.len()];
    let mut heads = 0;
    if let Some(reg) = registry {
        let client = Arc::new(
            RegistryClient::new(options, &[reg.host.as_str()]).map_err(PlanError::Client)?,
        );
        let references: Vec<ImageRef> = images
            .iter()
            .zip(&analyzed.prepared)
            .map(|(image, p)| ImageRef {
                registry: reg.host.clone(),
                repository: reg.path(&image.repository),
                reference: plan::content_tag(&image.variant, &p.inputs),
            })
            .collect();
        let answers = client.presence(&references, jobs).await;
        heads = client.head_requests();
        for (i, answer) in answers.into_iter().enumerate() {
            presence[i] = match answer {
                Ok(Some(digest)) => Presence::Present(digest),
                Ok(None) => Presence::Absent,
                Err(error) => {
                    return Err(PlanError::Registry {
                        image: images[i].name.clone(),
                        error,
                    });
                }
            };
        }
    }
    let plan = plan::plan(
        &analyzed.catalog,
        &analyzed.graph,
        &analyzed.prepared,
        &presence,
        baseline,
        registry,
    );
    Ok((plan, heads))
}
