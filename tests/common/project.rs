//! The sample-project harness of the tests that drive `labforge build`:
//! a copy of a project under tests/projects/ with a labforge.toml that
//! pushes under a registry prefix of its own, and helpers to read the
//! build summary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use super::copy_dir;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn registry() -> String {
    std::env::var("LABFORGE_TEST_REGISTRY").unwrap_or_else(|_| {
        panic!("LABFORGE_TEST_REGISTRY is not set: run `bash scripts/services.sh` and `. /var/lib/labforge/env` (the README's test command does)")
    })
}

/// A copy of the sample project with a labforge.toml that pushes under a
/// prefix of its own and builds on the registry's busybox stand-in.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub prefix: String,
}

impl Project {
    /// The chain sample with the default configuration.
    pub fn new(name: &str) -> Project {
        Project::of("chain", name, "")
    }

    /// A copy of `tests/projects/<sample>` whose labforge.toml pushes under
    /// a prefix of its own, maps `busybox:stable` to the registry's
    /// stand-in, scans with the OSV records in tests/fixtures/osv (unless
    /// `extra` has a `[scan]` table of its own) and ends with `extra`.
    pub fn of(sample: &str, name: &str, extra: &str) -> Project {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(&root().join("tests/projects").join(sample), dir.path());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let prefix = format!(
            "it-{sample}/{name}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let scan = if extra.contains("[scan]") {
            String::new()
        } else {
            format!(
                "\n[scan]\nscanners = [\"osv\"]\nosv_db = \"{}\"\n",
                root().join("tests/fixtures/osv").display()
            )
        };
        let config = format!(
            "registry = \"{}/{prefix}\"\nstate = \"state\"\njobs = 2\n\n[build_args]\nCODE_SERVER_URL = \"none\"\n\n[base_map]\n\"busybox:stable\" = \"{}/standin/busybox:latest\"\n{scan}{extra}",
            registry(),
            registry()
        );
        std::fs::write(dir.path().join("labforge.toml"), config).expect("config");
        Project { dir, prefix }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, file: &str, text: &str) {
        let path = self.path().join(file);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    pub fn labforge(&self, args: &[&str]) -> Output {
        self.labforge_with(args, &[])
    }

    pub fn labforge_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_labforge"));
        cmd.args(args)
            .current_dir(self.path())
            .env_remove("LABFORGE_REGISTRY")
            .env_remove("LABFORGE_CONFIG")
            .env_remove("LABFORGE_STATE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("the labforge binary runs")
    }

    /// `labforge build --json …`: the summary, and the output for messages.
    pub fn build(&self, args: &[&str], env: &[(&str, &str)]) -> (Output, Value) {
        let mut all = vec!["build", "--json"];
        all.extend_from_slice(args);
        let out = self.labforge_with(&all, env);
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "build printed no JSON summary ({e}); exit {:?}\nstderr:\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out, summary)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // Remove what the tests built from the engine (by reference prefix).
        let prefix = format!("{}/{}", registry(), self.prefix);
        if let Ok(out) = Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
        {
            let refs: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with(&prefix))
                .map(str::to_string)
                .collect();
            if !refs.is_empty() {
                let _ = Command::new("docker").arg("rmi").args(&refs).output();
            }
        }
        // Images pulled by digest have no tag (`<none>`): remove them by digest.
        if let Ok(out) = Command::new("docker")
            .args([
                "images",
                "--digests",
                "--format",
                "{{.Repository}}@{{.Digest}}",
            ])
            .output()
        {
            let refs: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with(&prefix) && !l.ends_with("@<none>"))
                .map(str::to_string)
                .collect();
            if !refs.is_empty() {
                let _ = Command::new("docker").arg("rmi").args(&refs).output();
            }
        }
    }
}

pub fn image<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|i| i["image"] == name)
        .unwrap_or_else(|| panic!("{name} is not in the summary: {summary:#}"))
}

pub fn results(summary: &Value) -> Vec<(String, String)> {
    let mut r: Vec<(String, String)> = summary["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| {
            (
                i["image"].as_str().unwrap_or_default().to_string(),
                i["result"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    r.sort();
    r
}

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut r: Vec<(String, String)> = list
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    r.sort();
    r
}

pub fn skopeo_digest(reference: &str) -> String {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ])
        .output()
        .expect("skopeo runs");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("skopeo json");
    doc["Digest"].as_str().expect("Digest").to_string()
}
