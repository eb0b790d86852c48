//! The catalog file a request becomes, and the preview of it: the new
//! catalog checked and rendered exactly as the pipeline will, before anyone
//! approves anything.
//!
//! The file holds only validated values, each written as a JSON string (a
//! JSON string is a valid YAML scalar, so no value can start a new key or a
//! comment). The requester's free text is not copied into it.

use std::collections::BTreeMap;

use crate::catalog::{Gpus, SourceFile, Sources};
use crate::formats;
use crate::render::{APT_FILE, BuildEnv, CONDA_FILE, PIP_FILE, TemplateSet, VSCODE_FILE};

use super::Request;

/// Where a request's catalog file lives in the repository.
pub fn path(slug: &str) -> String {
    format!("catalog/images/{slug}.yaml")
}

/// A value as a YAML scalar that cannot be anything but a string.
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "3 pip packages, 1 apt package and 2 VS Code extensions"; `None` when
/// the request adds no packages.
pub fn summary(request: &Request) -> Option<String> {
    let mut parts = Vec::new();
    if !request.pip.is_empty() {
        parts.push(count(request.pip.len(), "pip package", "pip packages"));
    }
    if !request.apt.is_empty() {
        parts.push(count(request.apt.len(), "apt package", "apt packages"));
    }
    if !request.vscode.is_empty() {
        parts.push(count(
            request.vscode.len(),
            "VS Code extension",
            "VS Code extensions",
        ));
    }
    let last = parts.pop()?;
    if parts.is_empty() {
        Some(last)
    } else {
        Some(format!("{} and {last}", parts.join(", ")))
    }
}

/// The description the catalog and the spawner show.
pub fn description(request: &Request) -> String {
    match summary(request) {
        Some(s) => format!(
            "Requested in #{}: {} with {s}",
            request.issue, request.based_on
        ),
        None => format!("Requested in #{}: {}", request.issue, request.based_on),
    }
}

/// The text of `catalog/images/<slug>.yaml` for a request. It loads with
/// `catalog::load` (tests hold it to that) and records the issue, so that a
/// later edit of the same issue may replace it.
pub fn catalog_file(request: &Request, template: &str) -> String {
    let mut y = String::new();
    y.push_str(&format!(
        "# Generated from issue #{} (an environment request) after review.\n",
        request.issue
    ));
    y.push_str("# Change the request by editing the issue; after the merge this file is\n");
    y.push_str("# maintained like any other catalog file.\n");
    y.push_str(&format!("name: {}\n", q(&request.slug)));
    y.push_str(&format!("description: {}\n", q(&description(request))));
    y.push_str(&format!("template: {}\n", q(template)));
    y.push_str(&format!("parent: {}\n", q(&request.based_on)));
    y.push_str(&format!("issue: {}\n", request.issue));
    if formats::github_login(&request.author).is_ok() {
        y.push_str(&format!("owners: [{}]\n", q(&request.author)));
    }
    let list = |y: &mut String, indent: &str, key: &str, items: &[String]| {
        if items.is_empty() {
            return;
        }
        y.push_str(&format!("{indent}{key}:\n"));
        for item in items {
            y.push_str(&format!("{indent}  - {}\n", q(item)));
        }
    };
    if !request.pip.is_empty() || !request.apt.is_empty() {
        y.push_str("\npackages:\n");
        list(&mut y, "  ", "pip", &request.pip);
        list(&mut y, "  ", "apt", &request.apt);
    }
    if !request.vscode.is_empty() {
        y.push_str("\nvscode:\n");
        list(&mut y, "  ", "extensions", &request.vscode);
    }
    let tests = smoke_tests(request);
    if !tests.is_empty() {
        y.push_str("\ntests:\n");
        for (name, run, vscode) in tests {
            y.push_str(&format!("  - name: {}\n    run: {}\n", q(name), q(&run)));
            if vscode {
                y.push_str("    vscode: true\n");
            }
        }
    }
    y.push_str("\nprofile:\n");
    y.push_str(&format!("  display_name: {}\n", q(&request.slug)));
    y.push_str(&format!(
        "  description: {}\n",
        q(&format!(
            "Based on {}, requested in #{}",
            request.based_on, request.issue
        ))
    ));
    if request.gpu {
        y.push_str("  gpus: 1\n");
    }
    if let Some(course) = &request.course {
        y.push_str(&format!("  groups: [{}]\n", q(course)));
    }
    y
}

/// Smoke tests that the requested packages are really installed: only for
/// the kinds requested. Names are passed as arguments, never as code.
fn smoke_tests(request: &Request) -> Vec<(&'static str, String, bool)> {
    let mut tests = Vec::new();
    if !request.pip.is_empty() {
        let names: Vec<String> = request
            .pip
            .iter()
            .map(|line| formats::parse_requirement(line).map_or_else(|_| line.clone(), |r| r.name))
            .collect();
        // `pip show` exits 0 when only some of several names are found, so
        // each name is looked up; a missing one raises PackageNotFoundError.
        tests.push((
            "requested-pip-packages",
            format!(
                "python -c 'import sys, importlib.metadata as m; [m.version(n) for n in sys.argv[1:]]' {}",
                names.join(" ")
            ),
            false,
        ));
    }
    if !request.apt.is_empty() {
        let names: Vec<&str> = request
            .apt
            .iter()
            .map(|p| p.split('=').next().unwrap_or(p))
            .collect();
        tests.push((
            "requested-apt-packages",
            format!("dpkg -s {} >/dev/null", names.join(" ")),
            false,
        ));
    }
    if !request.vscode.is_empty() {
        let ids: Vec<&str> = request
            .vscode
            .iter()
            .map(|e| e.split('@').next().unwrap_or(e))
            .collect();
        tests.push((
            "requested-vscode-extensions",
            format!(
                "installed=$(code-server --extensions-dir /opt/code-server/extensions --list-extensions) && for e in {}; do printf '%s\\n' \"$installed\" | grep -qix \"$e\" || {{ echo \"missing VS Code extension $e\" >&2; exit 1; }}; done",
                ids.join(" ")
            ),
            true,
        ));
    }
    tests
}

/// What a maintainer reviews before approving: the new file and what the
/// pipeline will make of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// Repository path of the catalog file.
    pub file: String,
    /// Its text.
    pub yaml: String,
    /// The rendered Dockerfile of the new image.
    pub dockerfile: String,
    /// The upstream base the image ultimately starts from (as the catalog
    /// names it, before any base map).
    pub base: String,
    /// e.g. "1 GPU, CUDA 12.4.1, cuDNN 9.1.0"; `None` for a CPU environment.
    pub gpu: Option<String>,
    /// The catalog image it is built on.
    pub parent: String,
    /// The generated package lists of the build context, by file name
    /// (`requirements.txt`, `apt-packages.txt`, …): the Dockerfile copies
    /// them, package names never appear in it.
    pub lists: BTreeMap<String, String>,
    /// The content identity the pipeline will build the image as.
    pub identity: String,
}

/// Add the request's file to the catalog (replacing this image's file if it
/// is already there), check and render everything as the pipeline would,
/// and return the new image's part. `Err` carries every problem, as text.
pub fn preview(
    sources: &Sources,
    templates: TemplateSet,
    env: &BuildEnv,
    request: &Request,
    template: &str,
) -> Result<Preview, Vec<String>> {
    let yaml = catalog_file(request, template);
    let mut sources = sources.clone();
    let file_name = format!("{}.yaml", request.slug);
    let same = |p: &str| {
        let name = p.rsplit('/').next().unwrap_or(p);
        name == file_name || name == format!("{}.yml", request.slug)
    };
    match sources.images.iter_mut().find(|f| same(&f.path)) {
        Some(existing) => existing.text.clone_from(&yaml),
        None => {
            // Next to the other image files, under the caller's naming.
            let settings = &sources.settings.path;
            let dir = settings.rsplit_once('/').map_or("", |(d, _)| d);
            let path = if dir.is_empty() {
                format!("images/{file_name}")
            } else {
                format!("{dir}/images/{file_name}")
            };
            sources.images.push(SourceFile {
                path,
                text: yaml.clone(),
            });
        }
    }
    let analyzed = crate::analyze(&sources, templates, env)
        .map_err(|problems| problems.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let missing = || {
        vec![format!(
            "the new image {:?} is not in the analysed catalog",
            request.slug
        )]
    };
    let index = analyzed
        .catalog
        .position(&request.slug)
        .ok_or_else(missing)?;
    let image = &analyzed.catalog.images[index];
    let prepared = analyzed.prepared.get(index).ok_or_else(missing)?;
    let root = analyzed.catalog.root_base(image);
    let gpu = image.profile.gpus.as_ref().map(|g| {
        let n = g.max();
        let mut s = match g {
            Gpus::Count(_) => count(n as usize, "GPU", "GPUs"),
            Gpus::Choices { default, .. } => format!("{default} GPU (up to {n})"),
        };
        if let Some(cuda) = root.and_then(|b| b.cuda.as_deref()) {
            s.push_str(&format!(", CUDA {cuda}"));
        }
        if let Some(cudnn) = root.and_then(|b| b.cudnn.as_deref()) {
            s.push_str(&format!(", cuDNN {cudnn}"));
        }
        s
    });
    let lists = prepared
        .rendered
        .context
        .iter()
        .filter(|(p, _)| [APT_FILE, PIP_FILE, CONDA_FILE, VSCODE_FILE].contains(&p.as_str()))
        .map(|(p, bytes)| (p.clone(), String::from_utf8_lossy(bytes).into_owned()))
        .collect();
    Ok(Preview {
        file: path(&request.slug),
        yaml,
        dockerfile: prepared.rendered.dockerfile.clone(),
        base: root.map(|b| b.image.clone()).unwrap_or_default(),
        gpu,
        parent: request.based_on.clone(),
        lists,
        identity: prepared.inputs.identity.clone(),
    })
}
