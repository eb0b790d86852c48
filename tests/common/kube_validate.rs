//! Kubernetes objects checked against the API's OpenAPI schemas of
//! Kubernetes 1.32 with `kubernetes-validate --strict` (PyPI
//! `kubernetes-validate`, installed by `scripts/services.sh`): unknown
//! fields, wrong types and missing required fields are errors.
//!
//! Strict means strict here too: an object whose kind has no schema (a typo
//! in `kind` or `apiVersion`, a custom resource) only draws a warning from
//! the tool, and counts as invalid; so does a file in which the tool found
//! no object at all. A missing tool is an error that says how to install
//! it, never a skip. Talks to no cluster.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Kubernetes version whose schemas the objects must satisfy.
pub const KUBERNETES_VERSION: &str = "1.33.0";

const TOOL: &str = "kubernetes-validate";

/// Validate every object in `files` (YAML or JSON, several documents per
/// file allowed). `Err` holds the tool's whole output when any object is
/// invalid or unchecked, or says how to install the tool.
pub fn validate(files: &[PathBuf]) -> Result<(), String> {
    if files.is_empty() {
        return Err("no files to validate".to_string());
    }
    let output = Command::new(TOOL)
        .arg("--strict")
        .arg("--kubernetes-version")
        .arg(KUBERNETES_VERSION)
        .args(files)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!("{TOOL} is not on the PATH: install it with `bash scripts/services.sh`")
            } else {
                format!("running {TOOL}: {e}; install it with `bash scripts/services.sh`")
            }
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut problems = Vec::new();
    if !output.status.success() {
        problems.push(format!("{TOOL} exited with {}", output.status));
    }
    // Warnings are objects the tool could not check (no schema for the
    // kind); FATAL is a Kubernetes version it has no schemas for.
    if let Some(line) = text
        .lines()
        .find(|l| ["ERROR", "WARN", "FATAL"].iter().any(|p| l.starts_with(p)))
    {
        problems.push(format!("{TOOL} reported: {line}"));
    }
    for file in files {
        if !passed_any(&text, file) {
            problems.push(format!("no object of {} passed", file.display()));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n--- {TOOL} output:\n{text}",
            problems.join("\n")
        ))
    }
}

/// Whether the tool's output says some object of `file` passed.
fn passed_any(output: &str, file: &Path) -> bool {
    let prefix = format!("INFO {} passed for resource ", file.display());
    output.lines().any(|l| l.starts_with(&prefix))
}

/// Validate objects given as JSON values: each is written to a file of its
/// own (named after its kind and name, so the tool's messages say which
/// object failed) in a temporary folder, and those files are validated.
pub fn validate_docs(docs: &[serde_json::Value]) -> Result<(), String> {
    if docs.is_empty() {
        return Err("no objects to validate".to_string());
    }
    let dir = tempfile::tempdir().map_err(|e| format!("creating a temporary folder: {e}"))?;
    let mut files = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let kind = doc["kind"].as_str().unwrap_or("unknown-kind");
        let name = doc["metadata"]["name"].as_str().unwrap_or("unnamed");
        let safe: String = format!("{i:03}-{kind}-{name}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.path().join(format!("{safe}.json"));
        let text = serde_json::to_string_pretty(doc)
            .map_err(|e| format!("serializing object {i} ({kind} {name}): {e}"))?;
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        files.push(path);
    }
    validate(&files)
}
