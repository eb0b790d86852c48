//! The labforge pipeline: reading a project from disk, writing rendered build
//! contexts, and planning against the registry. Later stages (build, smoke
//! test, scan, push, publish) join here, one module per outside system.

pub mod config;
pub mod engine;
pub mod output;
pub mod project;
pub mod registry;

use std::collections::BTreeMap;
use std::sync::Arc;

use labforge_core::catalog::Registry;
use labforge_core::identity::Inputs;
use labforge_core::plan::{self, Plan, Presence};
use labforge_core::render::BaseMap;
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
pub fn analyze(layout: &Layout, base_map: &BaseMap) -> Result<Analyzed, AnalyzeError> {
    let sources = layout.read_catalog()?;
    let templates = layout.read_templates()?;
    labforge_core::analyze(&sources, templates, base_map).map_err(AnalyzeError::Invalid)
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
