//! The pure core of labforge: the catalog model and its validation, the image
//! graph, Dockerfile rendering, content identity and planning.
//!
//! Nothing in this crate does I/O: callers read the catalog files, templates
//! and registry answers and pass them in as values. That keeps every rule here
//! testable as a plain function, and lets the builder and the hub share it
//! without one pulling in the other's outside systems.

pub mod catalog;
pub mod cluster;
pub mod formats;
pub mod graph;
pub mod identity;
mod par;
pub mod plan;
pub mod publish;
pub mod render;
pub mod request;
pub mod scan;
pub mod spawner;
pub mod yaml;

use std::fmt;

use catalog::{Catalog, Sources};
use graph::Graph;
use identity::Prepared;
use render::{BuildEnv, RenderError, Renderer, TemplateSet};
use yaml::Diagnostic;

/// A problem found by [`analyze`]: in a catalog file, or in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Catalog(Diagnostic),
    Render(RenderError),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Catalog(d) => d.fmt(f),
            Problem::Render(e) => write!(f, "dockerfiles/: {e}"),
        }
    }
}

/// A catalog that passed every check, rendered and identified.
pub struct Analyzed {
    pub catalog: Catalog,
    pub graph: Graph,
    /// Indexed like `catalog.images`.
    pub prepared: Vec<Prepared>,
}

/// Validate the catalog, check its templates, render every image and compute
/// identities. Reports every problem found; nothing is partially accepted.
pub fn analyze(
    sources: &Sources,
    templates: TemplateSet,
    env: &BuildEnv,
) -> Result<Analyzed, Vec<Problem>> {
    let catalog = catalog::load(sources);
    let renderer = Renderer::new(templates);
    let (catalog, renderer) = match (catalog, renderer) {
        (Ok(c), Ok(r)) => (c, r),
        (c, r) => {
            let mut problems: Vec<Problem> = Vec::new();
            if let Err(d) = c {
                problems.extend(d.into_iter().map(Problem::Catalog));
            }
            if let Err(e) = r {
                problems.extend(e.into_iter().map(Problem::Render));
            }
            return Err(problems);
        }
    };
    let missing: Vec<Problem> = catalog
        .images
        .iter()
        .filter(|i| !renderer.has_template(&i.template))
        .map(|i| {
            Problem::Catalog(Diagnostic {
                file: i.file.clone(),
                line: i.template_pos.line,
                col: i.template_pos.col,
                path: "template".into(),
                message: format!("{:?} is not a template in dockerfiles/", i.template),
            })
        })
        .collect();
    if !missing.is_empty() {
        let mut missing = missing;
        missing.dedup();
        return Err(missing);
    }
    let graph = Graph::new(&catalog);
    let prepared = identity::prepare(&catalog, &graph, &renderer, env)
        .map_err(|e| e.into_iter().map(Problem::Render).collect::<Vec<_>>())?;
    Ok(Analyzed {
        catalog,
        graph,
        prepared,
    })
}

/// An error with its whole source chain, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
