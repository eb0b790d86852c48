//! Rendering Dockerfiles and build contexts from Tera templates.
//!
//! Pure and deterministic: templates and static files come in as bytes, the
//! context is built from sorted maps, and the output is a Dockerfile string
//! plus the exact set of files its `COPY` instructions name. Package lists are
//! written into context files; no catalog value is spliced into a `RUN` line.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};

use crate::catalog::{Catalog, Image, ParentRef};

/// File names of the generated package lists inside a build context.
pub const APT_FILE: &str = "apt-packages.txt";
pub const PIP_FILE: &str = "requirements.txt";
pub const CONDA_FILE: &str = "conda-packages.txt";
pub const VSCODE_FILE: &str = "vscode-extensions.txt";
/// Static files under `dockerfiles/files/` are referenced as `files/<path>`.
pub const STATIC_PREFIX: &str = "files/";

/// The contents of `dockerfiles/`, read by the caller.
#[derive(Debug, Clone, Default)]
pub struct TemplateSet {
    /// Template sources by path relative to `dockerfiles/` (not under `files/`).
    pub templates: BTreeMap<String, String>,
    /// Static context files by path relative to `dockerfiles/files/`.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl RenderError {
    /// The image being rendered, when the error is about one.
    pub fn image(&self) -> Option<&str> {
        match self {
            RenderError::Template { .. } => None,
            RenderError::Render { image, .. } | RenderError::Context { image, .. } => Some(image),
        }
    }

    /// The template involved, when known.
    pub fn template(&self) -> Option<&str> {
        match self {
            RenderError::Template { template, .. } | RenderError::Render { template, .. } => {
                Some(template)
            }
            RenderError::Context { .. } => None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("template {template}: {message}")]
    Template { template: String, message: String },
    #[error("{image}: rendering {template} failed: {message}")]
    Render {
        image: String,
        template: String,
        message: String,
    },
    #[error("{image}: the Dockerfile {problem}")]
    Context { image: String, problem: String },
}

/// What the machine that builds adds to every image: the base map and the
/// build arguments of `labforge.toml`. Both are part of every identity: a
/// different stand-in or a different `CODE_SERVER_URL` is different content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildEnv {
    pub base_map: BaseMap,
    /// Passed to every build; they win over an image's own `build_args`.
    pub build_args: BTreeMap<String, String>,
}

impl From<BaseMap> for BuildEnv {
    fn from(base_map: BaseMap) -> BuildEnv {
        BuildEnv {
            base_map,
            build_args: BTreeMap::new(),
        }
    }
}

/// Mapping of real base references to local stand-ins. A key ending in `*`
/// matches every reference that starts with what comes before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseMap(pub BTreeMap<String, String>);

impl BaseMap {
    /// Parse `FROM=TO` pairs.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = &'a str>) -> Result<BaseMap, String> {
        let mut map = BTreeMap::new();
        for pair in pairs {
            let Some((from, to)) = pair.split_once('=') else {
                return Err(format!("base map entry {pair:?} is not FROM=TO"));
            };
            let (from, to) = (from.trim(), to.trim());
            if from.is_empty() {
                return Err(format!("base map entry {pair:?} has an empty FROM"));
            }
            crate::formats::image_reference(to)
                .map_err(|why| format!("base map entry {pair:?}: {to:?} {why}"))?;
            map.insert(from.to_string(), to.to_string());
        }
        Ok(BaseMap(map))
    }

    /// The entries that map none of `references` (likely typos).
    pub fn unused<'a>(&'a self, references: &[&str]) -> Vec<&'a str> {
        self.0
            .keys()
            .filter(|from| {
                !references.iter().any(|r| match from.strip_suffix('*') {
                    Some(prefix) => r.starts_with(prefix),
                    None => r == from,
                })
            })
            .map(String::as_str)
            .collect()
    }

    /// The reference to build from: the mapped stand-in, or `reference` itself.
    pub fn apply<'a>(&'a self, reference: &'a str) -> &'a str {
        if let Some(to) = self.0.get(reference) {
            return to;
        }
        // Longest matching prefix pattern wins.
        self.0
            .iter()
            .filter_map(|(from, to)| {
                let prefix = from.strip_suffix('*')?;
                reference.starts_with(prefix).then_some((prefix.len(), to))
            })
            .max_by_key(|(len, _)| *len)
            .map_or(reference, |(_, to)| to.as_str())
    }
}

/// One image's rendered Dockerfile and build context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub dockerfile: String,
    /// Context files by path (the Dockerfile itself is not included).
    pub context: BTreeMap<String, Vec<u8>>,
    /// The templates this image's template pulls in, itself included.
    pub templates: BTreeSet<String>,
    /// What `BASE_IMAGE` is for an image on a base (after the base map);
    /// `None` for a catalog parent, whose digest the builder passes.
    pub base_reference: Option<String>,
    /// sha256 of the catalog values the template saw (without package lists
    /// and parent), to tell "the catalog entry changed" in plan reasons.
    pub values: String,
}

/// Labels the builder adds at build time: what people read (title,
/// description, vendor, source, owners, request issue) and the input hash.
/// They describe the image but are not part of its identity.
pub fn build_labels(catalog: &Catalog, image: &Image, identity: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (
            "org.opencontainers.image.title".to_string(),
            image.profile.display_name.clone(),
        ),
        (
            "org.opencontainers.image.description".to_string(),
            image.description.replace('\n', " "),
        ),
        ("labforge.input-hash".to_string(), identity.to_string()),
    ]);
    let settings = &catalog.settings;
    if !settings.vendor.is_empty() {
        labels.insert(
            "org.opencontainers.image.vendor".into(),
            settings.vendor.clone(),
        );
    }
    if let Some(source) = &settings.source {
        labels.insert("org.opencontainers.image.source".into(), source.clone());
    }
    if !image.owners.is_empty() {
        labels.insert("labforge.owners".into(), image.owners.join(","));
    }
    if let Some(issue) = image.issue {
        labels.insert("labforge.issue".into(), issue.to_string());
    }
    labels
}

/// A Tera instance holding every template, ready to render any image.
pub struct Renderer {
    tera: tera::Tera,
    set: TemplateSet,
    includes: BTreeMap<String, BTreeSet<String>>,
    /// sha256 of each template source, computed once.
    hashes: BTreeMap<String, String>,
}

static INCLUDE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\{%-?\s*(?:include|extends|import)\s+(?:"([^"]+)"|'([^']+)')"#)
        .unwrap_or_else(|e| panic!("built-in pattern: {e}"))
});

/// Quote a value for a Dockerfile `ENV` or `LABEL` instruction.
fn docker_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' | '$' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Renderer {
    pub fn new(set: TemplateSet) -> Result<Renderer, Vec<RenderError>> {
        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec![]);
        tera.register_filter(
            "dq",
            |v: &Value, _: &std::collections::HashMap<String, Value>| -> tera::Result<Value> {
                match v {
                    Value::String(s) => Ok(Value::String(docker_quote(s))),
                    other => Ok(Value::String(docker_quote(&other.to_string()))),
                }
            },
        );
        if let Err(e) =
            tera.add_raw_templates(set.templates.iter().map(|(n, s)| (n.as_str(), s.as_str())))
        {
            // Name every template that fails on its own; otherwise the error
            // is between templates (a missing include or parent).
            let mut errors: Vec<RenderError> = set
                .templates
                .iter()
                .filter_map(|(name, source)| {
                    let mut probe = tera::Tera::default();
                    probe.add_raw_template(name, source).err().and_then(|e| {
                        let message = crate::error_chain(&e);
                        (!message.contains("not found")).then(|| RenderError::Template {
                            template: name.clone(),
                            message,
                        })
                    })
                })
                .collect();
            if errors.is_empty() {
                errors.push(RenderError::Template {
                    template: "dockerfiles/".into(),
                    message: crate::error_chain(&e),
                });
            }
            return Err(errors);
        }
        let includes = set
            .templates
            .iter()
            .map(|(name, source)| {
                let deps = INCLUDE
                    .captures_iter(source)
                    .filter_map(|c| {
                        c.get(1)
                            .or_else(|| c.get(2))
                            .map(|m| m.as_str().to_string())
                    })
                    .collect();
                (name.clone(), deps)
            })
            .collect();
        let hashes = set
            .templates
            .iter()
            .map(|(name, source)| (name.clone(), crate::identity::sha256_hex(source.as_bytes())))
            .collect();
        Ok(Renderer {
            tera,
            set,
            includes,
            hashes,
        })
    }

    pub fn has_template(&self, name: &str) -> bool {
        self.set.templates.contains_key(name)
    }

    /// sha256 (hex) of a template's source.
    pub fn template_hash(&self, name: &str) -> Option<&str> {
        self.hashes.get(name).map(String::as_str)
    }

    /// `name` and every template it includes, extends or imports, transitively.
    pub fn closure(&self, name: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![name.to_string()];
        while let Some(t) = todo.pop() {
            if out.insert(t.clone())
                && let Some(deps) = self.includes.get(&t)
            {
                todo.extend(deps.iter().cloned());
            }
        }
        out
    }

    /// Render one image. `parent_identity` is the full identity of a catalog
    /// parent (it is written into the Dockerfile so that a parent change
    /// changes the child's bytes).
    pub fn render(
        &self,
        catalog: &Catalog,
        image: &Image,
        parent_identity: Option<&str>,
        base_map: &BaseMap,
    ) -> Result<Rendered, RenderError> {
        let root = catalog.root_base(image);
        let base_reference = match &image.parent {
            ParentRef::Base(b) => catalog
                .settings
                .bases
                .get(b)
                .map(|base| base_map.apply(&base.image).to_string()),
            ParentRef::Image(_) => None,
        };
        let mut context: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        // Sorted: the order packages are listed in changes nothing.
        let mut list = |file: &str, items: &[String]| -> Value {
            if items.is_empty() {
                return Value::Null;
            }
            let mut items = items.to_vec();
            items.sort();
            let mut text = items.join("\n");
            text.push('\n');
            context.insert(file.to_string(), text.into_bytes());
            Value::String(file.to_string())
        };
        let files = json!({
            "apt": list(APT_FILE, &image.packages.apt),
            "pip": list(PIP_FILE, &image.packages.pip),
            "conda": list(CONDA_FILE, &image.packages.conda),
            "vscode": list(VSCODE_FILE, &image.vscode_extensions),
        });
        let settings = &catalog.settings;
        // Only what belongs in the image's bytes: descriptions, names shown to
        // users, owners and the like are build-time labels (`build_labels`),
        // so that rewording them rebuilds nothing.
        let mut ctx = json!({
            "image": {
                "name": image.name,
                "repository": image.repository,
                "variant": image.variant,
                "axes": image.axes.iter().cloned().collect::<BTreeMap<String, String>>(),
                "gpu": image.profile.gpus.is_some(),
            },
            "parent": match &image.parent {
                ParentRef::Base(b) => json!({"kind": "base", "name": b, "reference": base_reference}),
                ParentRef::Image(p) => json!({"kind": "image", "name": p, "identity": parent_identity}),
            },
            "base": root.map(|b| json!({
                "name": b.name, "image": b.image, "cuda": b.cuda, "cudnn": b.cudnn,
                "min_driver": b.min_driver, "os": b.os,
            })),
            "cuda": root.and_then(|b| b.cuda.clone()),
            "env": image.env,
            "labels": image.labels,
            "build_args": image.build_args.keys().collect::<Vec<_>>(),
            "code_server_version": settings.code_server_version,
        });
        // The catalog values behind this render, without the package lists,
        // the parent and the build arguments (each explained on its own in
        // plan reasons).
        let values = {
            let mut v = ctx.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("files");
                o.remove("parent");
                o.remove("build_args");
            }
            crate::identity::sha256_hex(v.to_string().as_bytes())
        };
        if let Some(o) = ctx.as_object_mut() {
            o.insert("files".into(), files);
        }
        let tctx = tera::Context::from_value(ctx).map_err(|e| RenderError::Render {
            image: image.name.clone(),
            template: image.template.clone(),
            message: crate::error_chain(&e),
        })?;
        let dockerfile =
            self.tera
                .render(&image.template, &tctx)
                .map_err(|e| RenderError::Render {
                    image: image.name.clone(),
                    template: image.template.clone(),
                    message: crate::error_chain(&e),
                })?;
        let dockerfile = tidy(&dockerfile);
        let sources = copy_sources(&dockerfile).map_err(|problem| RenderError::Context {
            image: image.name.clone(),
            problem,
        })?;
        for src in sources.iter().cloned() {
            if context.contains_key(&src) {
                continue;
            }
            let Some(rel) = src.strip_prefix(STATIC_PREFIX) else {
                return Err(RenderError::Context {
                    image: image.name.clone(),
                    problem: format!(
                        "copies {src:?}, which is not in the build context (generated lists: {APT_FILE}, {PIP_FILE}, {CONDA_FILE}, {VSCODE_FILE}, only when non-empty; static files: files/…)"
                    ),
                });
            };
            let Some(bytes) = self.set.files.get(rel) else {
                return Err(RenderError::Context {
                    image: image.name.clone(),
                    problem: format!("copies {src:?}, but dockerfiles/{src} does not exist"),
                });
            };
            context.insert(src, bytes.clone());
        }
        for generated in [APT_FILE, PIP_FILE, CONDA_FILE, VSCODE_FILE] {
            if context.contains_key(generated) && !sources.contains(generated) {
                return Err(RenderError::Context {
                    image: image.name.clone(),
                    problem: format!(
                        "never copies {generated}, so its packages would be silently left out; include partials/packages.tera or COPY it"
                    ),
                });
            }
        }
        Ok(Rendered {
            dockerfile,
            context,
            templates: self.closure(&image.template),
            base_reference,
            values,
        })
    }
}

/// Trailing spaces removed, runs of blank lines folded into one, one final newline.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = true;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            if !blank {
                out.push('\n');
            }
            blank = true;
        } else {
            out.push_str(line);
            out.push('\n');
            blank = false;
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// Sources of every `COPY`/`ADD` in a Dockerfile (without `--from` stages).
/// URLs and paths that leave the context are refused.
pub fn copy_sources(dockerfile: &str) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    let mut logical = String::new();
    let mut lines = Vec::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim_start();
        if logical.is_empty() && trimmed.starts_with('#') {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            logical.push_str(cont);
            logical.push(' ');
        } else {
            logical.push_str(line);
            lines.push(std::mem::take(&mut logical));
        }
    }
    if !logical.is_empty() {
        lines.push(logical);
    }
    for line in lines {
        let mut words = line.split_whitespace();
        let Some(instr) = words.next() else { continue };
        let instr = instr.to_ascii_uppercase();
        if instr != "COPY" && instr != "ADD" {
            continue;
        }
        let args: Vec<&str> = words.collect();
        if args.iter().any(|a| a.starts_with("--from")) {
            continue;
        }
        let paths: Vec<&str> = args.into_iter().filter(|a| !a.starts_with("--")).collect();
        if paths.len() < 2 {
            return Err(format!(
                "has a {instr} without source and destination: {line:?}"
            ));
        }
        for src in &paths[..paths.len() - 1] {
            if src.contains("://") {
                return Err(format!(
                    "downloads {src:?} with {instr}; only context files may be added"
                ));
            }
            if src.starts_with('[') || src.contains('*') || src.contains('?') {
                return Err(format!(
                    "uses an unsupported {instr} form {src:?}; name each file"
                ));
            }
            let clean = src.trim_start_matches("./");
            if clean.starts_with('/') || clean.split('/').any(|c| c == "..") {
                return Err(format!(
                    "copies {src:?}, which is outside the build context"
                ));
            }
            out.insert(clean.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_quote_escapes() {
        assert_eq!(docker_quote(r#"a "b" $HOME \x"#), r#""a \"b\" \$HOME \\x""#);
    }

    #[test]
    fn base_map_exact_and_prefix() {
        let m = BaseMap::parse([
            "nvidia/cuda:*=labforge-standin/debian:bookworm",
            "ubuntu:24.04=labforge-standin/busybox:latest",
        ])
        .expect("parses");
        assert_eq!(
            m.apply("nvidia/cuda:12.4.1-runtime-ubuntu22.04"),
            "labforge-standin/debian:bookworm"
        );
        assert_eq!(m.apply("ubuntu:24.04"), "labforge-standin/busybox:latest");
        assert_eq!(m.apply("ubuntu:22.04"), "ubuntu:22.04");
        assert_eq!(m.unused(&["ubuntu:24.04"]), ["nvidia/cuda:*"]);
        assert!(
            m.unused(&["ubuntu:24.04", "nvidia/cuda:12.4.1-runtime-ubuntu22.04"])
                .is_empty()
        );
        assert!(BaseMap::parse(["nope"]).is_err());
        assert!(BaseMap::parse(["a=UPPER"]).is_err());
    }

    #[test]
    fn copy_sources_are_parsed_and_checked() {
        let df = "FROM x:1\nCOPY --chown=1000:100 requirements.txt \\\n  /tmp/r.txt\nCOPY files/a.sh files/b.json /usr/local/bin/\nCOPY --from=build /x /y\n";
        let s = copy_sources(df).expect("ok");
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            vec!["files/a.sh", "files/b.json", "requirements.txt"]
        );
        assert!(copy_sources("ADD https://x/y /z\n").is_err());
        assert!(copy_sources("COPY ../secret /z\n").is_err());
        assert!(copy_sources("COPY /etc/passwd /z\n").is_err());
    }
}
