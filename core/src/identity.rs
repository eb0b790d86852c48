//! Content identity: an image's identity is a hash of everything that goes
//! into its build, so that an unchanged hash means there is nothing to build.
//!
//! The hash covers the rendered Dockerfile bytes, every context file's bytes,
//! the parent (the mapped base reference, or the catalog parent's identity),
//! the build arguments and the platform. The registry the image is pushed to
//! is not part of it. [`Inputs`] also keeps the templates and package lists
//! behind those bytes, so that a plan can say *why* an identity changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::{Catalog, ParentRef};
use crate::graph::Graph;
use crate::render::{BuildEnv, RenderError, Rendered, Renderer};

/// Bumped when the hashing scheme changes, so that old identities never match.
pub const SCHEME: &str = "labforge-identity-v1";

pub fn sha256_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest.iter() {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ParentInput {
    Base { name: String, reference: String },
    Image { name: String, identity: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PackageInputs {
    pub apt: Vec<String>,
    pub pip: Vec<String>,
    pub conda: Vec<String>,
    pub vscode: Vec<String>,
}

/// Everything that went into one image's identity, with the identity itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    /// sha256 (hex) over the canonical encoding of the fields below.
    pub identity: String,
    pub platform: String,
    /// sha256 of the rendered Dockerfile.
    pub dockerfile: String,
    /// sha256 of each context file, by path.
    pub context: BTreeMap<String, String>,
    pub parent: ParentInput,
    pub build_args: BTreeMap<String, String>,
    /// sha256 of each template source the Dockerfile was rendered from (for reasons only).
    pub templates: BTreeMap<String, String>,
    /// The package lists behind the context files (for reasons only).
    pub packages: PackageInputs,
    /// sha256 of the other catalog values the template saw (for reasons only).
    #[serde(default)]
    pub values: String,
}

impl Inputs {
    /// The first 12 hex digits, as used in content tags.
    pub fn short(&self) -> &str {
        &self.identity[..12.min(self.identity.len())]
    }
}

fn identity(
    platform: &str,
    dockerfile: &str,
    context: &BTreeMap<String, String>,
    parent: &ParentInput,
    build_args: &BTreeMap<String, String>,
) -> String {
    let mut text = format!("{SCHEME}\nplatform\t{platform}\ndockerfile\t{dockerfile}\n");
    for (path, sha) in context {
        text.push_str(&format!("context\t{path}\t{sha}\n"));
    }
    match parent {
        ParentInput::Base { reference, .. } => {
            text.push_str(&format!("parent\tbase\t{reference}\n"))
        }
        ParentInput::Image { identity, .. } => {
            text.push_str(&format!("parent\timage\t{identity}\n"))
        }
    }
    for (k, v) in build_args {
        text.push_str(&format!("build-arg\t{k}\t{v}\n"));
    }
    sha256_hex(text.as_bytes())
}

/// One image rendered and identified.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub rendered: Rendered,
    pub inputs: Inputs,
}

/// Render every image in build order and compute its identity. The result is
/// indexed like `catalog.images`. Every failure is reported; an image whose
/// parent failed is left out without a second message.
pub fn prepare(
    catalog: &Catalog,
    graph: &Graph,
    renderer: &Renderer,
    env: &BuildEnv,
) -> Result<Vec<Prepared>, Vec<RenderError>> {
    let mut out: Vec<Option<Prepared>> = vec![None; catalog.images.len()];
    let mut errors = Vec::new();
    for level in &graph.levels {
        // The images of a level are independent: render them in parallel.
        let work: Vec<(usize, Option<(String, String)>)> = level
            .iter()
            .filter_map(|&i| match (&catalog.images[i].parent, graph.parent[i]) {
                (ParentRef::Image(name), Some(p)) => out[p]
                    .as_ref()
                    .map(|pp| (i, Some((name.clone(), pp.inputs.identity.clone())))),
                _ => Some((i, None)),
            })
            .collect();
        let results = crate::par::map(&work, |(i, parent)| {
            prepare_one(catalog, renderer, env, *i, parent.clone())
        });
        for ((i, _), result) in work.iter().zip(results) {
            match result {
                Ok(p) => out[*i] = Some(p),
                Err(e) => errors.push(e),
            }
        }
    }
    if errors.is_empty() {
        Ok(out.into_iter().flatten().collect())
    } else {
        Err(errors)
    }
}

/// Render image `i` and compute its inputs; `parent` is the catalog parent's
/// name and identity.
fn prepare_one(
    catalog: &Catalog,
    renderer: &Renderer,
    env: &BuildEnv,
    i: usize,
    parent: Option<(String, String)>,
) -> Result<Prepared, RenderError> {
    let image = &catalog.images[i];
    let rendered = renderer.render(
        catalog,
        image,
        parent.as_ref().map(|p| p.1.as_str()),
        &env.base_map,
    )?;
    let parent_input = match (&image.parent, parent) {
        (_, Some((name, identity))) => ParentInput::Image { name, identity },
        (ParentRef::Base(b), None) | (ParentRef::Image(b), None) => ParentInput::Base {
            name: b.clone(),
            reference: rendered.base_reference.clone().unwrap_or_default(),
        },
    };
    let context: BTreeMap<String, String> = rendered
        .context
        .iter()
        .map(|(p, bytes)| (p.clone(), sha256_hex(bytes)))
        .collect();
    let dockerfile = sha256_hex(rendered.dockerfile.as_bytes());
    let platform = catalog.settings.platform.clone();
    let mut build_args = image.build_args.clone();
    build_args.extend(env.build_args.clone());
    let id = identity(&platform, &dockerfile, &context, &parent_input, &build_args);
    let templates = rendered
        .templates
        .iter()
        .filter_map(|t| {
            renderer
                .template_hash(t)
                .map(|h| (t.clone(), h.to_string()))
        })
        .collect();
    let inputs = Inputs {
        identity: id,
        platform,
        dockerfile,
        context,
        parent: parent_input,
        build_args,
        templates,
        packages: PackageInputs {
            apt: image.packages.apt.clone(),
            pip: image.packages.pip.clone(),
            conda: image.packages.conda.clone(),
            vscode: image.vscode_extensions.clone(),
        },
        values: rendered.values.clone(),
    };
    Ok(Prepared { rendered, inputs })
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha256_hex_of_a_known_value() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
