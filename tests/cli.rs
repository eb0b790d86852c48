//! The `labforge` command as a user runs it: help, the shipped catalog, and
//! malformed catalogs that must be reported at the right place while
//! `render` writes nothing.

mod common;
use common::copy_dir;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn labforge(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_labforge"))
        .args(args)
        .current_dir(dir)
        .env_remove("LABFORGE_REGISTRY")
        .env_remove("LABFORGE_CONFIG")
        .env_remove("LABFORGE_CATALOG")
        .env_remove("LABFORGE_DOCKERFILES")
        .output()
        .expect("the labforge binary runs")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch project: a copy of the shipped catalog and templates.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&root().join("catalog"), &dir.path().join("catalog"));
    copy_dir(&root().join("dockerfiles"), &dir.path().join("dockerfiles"));
    dir
}

#[test]
fn help_explains_every_command() {
    let out = labforge(&root(), &["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "validate", "render", "plan", "build", "status", "history", "push",
    ] {
        assert!(text.contains(cmd), "--help lacks {cmd}:\n{text}");
    }
    let out = labforge(&root(), &["plan", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--base-map") && text.contains("--registry") && text.contains("--json"),
        "{text}"
    );
}

#[test]
fn shipped_catalog_validates() {
    let out = labforge(&root(), &["validate", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let images = doc["images"].as_array().expect("images");
    assert!(images.len() >= 10, "only {} concrete images", images.len());
    let defaults = images
        .iter()
        .filter(|i| i["profile"]["default"] == true)
        .count();
    assert_eq!(defaults, 1, "exactly one default profile");
}

/// (file under catalog/, its whole content, the first line of the expected report)
const MALFORMED: &[(&str, &str, &str)] = &[
    (
        "images/deepml.yaml",
        "name: deepml\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cuda\npackages:\n  pip:\n    - numpy\n    - scipy\n    - pandas\n    - torch==2.*.1\n",
        r#"images/deepml.yaml:9:7: packages.pip[3]: "torch==2.*.1" is not a valid version specifier"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\npackages:\n  pip: [\"numpy; curl x|sh\"]\n",
        r#"images/bad.yaml:5:9: packages.pip[0]: "numpy; curl x|sh" has an environment marker"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\npackages:\n  pip: [\"pkg @ https://example.org/p.whl\"]\n",
        r#"images/bad.yaml:5:9: packages.pip[0]: "pkg @ https://example.org/p.whl" is a direct reference"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\npackages:\n  pip: [\"--index-url\"]\n",
        r#"images/bad.yaml:5:9: packages.pip[0]: "--index-url" is a pip option"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\npackages:\n  apt:\n    - \"-oDPkg::Pre-Invoke=touch /tmp/pwned\"\n",
        r#"images/bad.yaml:6:7: packages.apt[0]: "-oDPkg::Pre-Invoke=touch /tmp/pwned" is an apt option"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\npackages:\n  pip: [\"nump\u{0443}\"]\n",
        r#"images/bad.yaml:5:9: packages.pip[0]: "numpу" contains the character 'у'; only ASCII is allowed"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\npackages:\n  conda: [\"conda-forge::numpy\"]\n",
        r#"images/bad.yaml:5:11: packages.conda[0]: "conda-forge::numpy" names a channel"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\nvscode:\n  extensions: [pylance]\n",
        r#"images/bad.yaml:5:16: vscode.extensions[0]: "pylance" is not an Open VSX extension id"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-gpu\n",
        r#"images/bad.yaml:3:9: parent: bad: unknown parent image "notebook-scipy-gpu" (images with a similar name: "#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: notebook.Dockerfile.tera\nbase: cuda-12.5-runtime\n",
        r#"images/bad.yaml:3:7: base: bad: unknown base "cuda-12.5-runtime" (bases in catalog.yaml: "#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: bad\n",
        r#"images/bad.yaml:3:9: parent: bad: parent cycle bad -> bad"#,
    ),
    (
        "images/research.yaml",
        "name: research\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\nprofile:\n  slug: grading\n",
        r#"images/research.yaml:5:9: profile.slug: research: the profile slug "grading" is already used by grading"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\nprofile:\n  memory: {limit: 16Gi}\n",
        r#"images/bad.yaml:5:19: profile.memory.limit: "16Gi" uses a Kubernetes suffix that KubeSpawner rejects"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\nprofile:\n  cpu: {limit: \"4\"}\n",
        r#"images/bad.yaml:5:16: profile.cpu.limit: must be a number, not a string"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\nprofile:\n  gpus: 1\n",
        r#"images/bad.yaml:5:9: profile.gpus: bad: requests GPUs but is not built on a CUDA base"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cuda\nprofile:\n  gpus: 1.5\n",
        r#"images/bad.yaml:5:9: profile.gpus: GPUs are whole devices"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cuda\nprofile:\n  node_selector: {\"GPU Type\": a100}\n",
        r#"images/bad.yaml:5:19: profile.node_selector.GPU Type: "GPU Type" is not a valid Kubernetes label key"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\nprofile:\n  default: true\n",
        r#"images/bad.yaml:5:12: profile.default: bad: only one profile may be the default (also default: notebook-scipy-cpu)"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\nowner: [someone]\n",
        r#"images/bad.yaml:4:1: unknown key "owner" (allowed: "#,
    ),
    (
        "images/bad.yaml",
        "name: other\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\n",
        r#"images/bad.yaml:1:7: name: "other" does not match the file name "bad""#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: missing.Dockerfile.tera\nparent: notebook-scipy-cpu\n",
        r#"images/bad.yaml:2:11: template: "missing.Dockerfile.tera" is not a template in dockerfiles/"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\npackages:\n  pip: [numpy\n",
        r#"images/bad.yaml:"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\nenv:\n  PATH_EXTRA: \"{{ 7*7 }}\"\n  9LIVES: x\n",
        r#"images/bad.yaml:6:3: env.9LIVES: "9LIVES" is not a valid environment variable name"#,
    ),
    (
        "images/bad.yaml",
        "name: bad\ntemplate: lab.Dockerfile.tera\nparent: notebook-scipy-cpu\ntests:\n  - name: smi\n    run: nvidia-smi\n    gpu: true\n",
        r#"images/bad.yaml:5:5: tests: bad: the GPU test "smi" cannot run on an image without CUDA"#,
    ),
];

#[test]
fn malformed_catalogs_are_reported_at_the_right_place_and_render_writes_nothing() {
    assert!(MALFORMED.len() >= 20);
    for (file, content, expected) in MALFORMED {
        let dir = project();
        std::fs::write(dir.path().join("catalog").join(file), content).expect("write case");
        let out = labforge(dir.path(), &["render", "--out", "out"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "case {expected}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        let want = format!("catalog/{expected}");
        assert!(
            first.starts_with(&want),
            "expected a line starting with\n  {want}\ngot\n{stderr}"
        );
        assert!(stderr.contains("nothing was changed"), "{stderr}");
        assert!(
            !dir.path().join("out").exists(),
            "render wrote output for {file}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("readdir")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().contains("out"))
            .collect();
        assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    }
}

#[test]
fn a_failed_render_keeps_the_previous_output() {
    let dir = project();
    let out = labforge(dir.path(), &["render", "--out", "out"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = std::fs::read(dir.path().join("out/index.json")).expect("index");
    std::fs::write(
        dir.path().join("catalog/images/bad.yaml"),
        "name: bad\ntemplate: lab.Dockerfile.tera\n",
    )
    .expect("write");
    let out = labforge(dir.path(), &["render", "--out", "out"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read(dir.path().join("out/index.json")).expect("index"),
        before
    );
    // A render into a folder labforge did not write is refused.
    std::fs::remove_file(dir.path().join("catalog/images/bad.yaml")).expect("rm");
    std::fs::create_dir(dir.path().join("mine")).expect("mkdir");
    std::fs::write(dir.path().join("mine/notes.txt"), "mine").expect("write");
    let out = labforge(dir.path(), &["render", "--out", "mine"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("was not written by labforge render"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("mine/notes.txt")).expect("kept"),
        "mine"
    );
}

#[test]
fn render_writes_every_image_with_its_context() {
    let dir = project();
    let out = labforge(dir.path(), &["render", "--out", "out", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(written.as_array().expect("list").len() >= 10);
    let nb = dir.path().join("out/notebook-scipy-cpu");
    for f in [
        "Dockerfile",
        "requirements.txt",
        "vscode-extensions.txt",
        "files/vscode/labforge-code-server",
        "files/foundation/requirements.txt",
    ] {
        assert!(nb.join(f).is_file(), "missing {f}");
    }
    // Only what the Dockerfile copies is in the context.
    assert!(!nb.join("apt-packages.txt").exists());
    // Rendering only some images writes only those.
    let out = labforge(dir.path(), &["render", "--out", "some", "grading"]);
    assert!(out.status.success());
    let names: Vec<String> = std::fs::read_dir(dir.path().join("some"))
        .expect("readdir")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["grading"]);
    let out = labforge(dir.path(), &["render", "--out", "none", "no-such-image"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join("none").exists());
}

#[test]
fn plan_without_registry_builds_everything_with_reasons() {
    let out = labforge(&root(), &["plan", "--no-registry", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let images = plan["images"].as_array().expect("images");
    assert!(
        images
            .iter()
            .all(|i| i["action"] == "build" && i["registry"]["state"] == "not_checked")
    );
    assert_eq!(plan["levels"][0][0], "notebook-minimal-cpu");
    // A baseline identical to now: reasons say the inputs are unchanged.
    let dir = tempfile::tempdir().expect("tempdir");
    let baseline = dir.path().join("baseline.json");
    std::fs::write(&baseline, &out.stdout).expect("write");
    let out = labforge(
        &root(),
        &[
            "plan",
            "--no-registry",
            "--baseline",
            baseline.to_str().expect("utf8"),
        ],
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("inputs unchanged; no registry configured"),
        "{text}"
    );
}

#[test]
fn a_base_map_entry_that_matches_nothing_is_reported() {
    let out = labforge(
        &root(),
        &[
            "plan",
            "--no-registry",
            "--base-map",
            "nvidia/cuda:13*=labforge-standin/debian:bookworm",
        ],
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            r#"warning: base map entry "nvidia/cuda:13*" matches no base in catalog.yaml"#
        ),
        "{stderr}"
    );
    let out = labforge(
        &root(),
        &[
            "plan",
            "--no-registry",
            "--base-map",
            "nvidia/cuda:*=labforge-standin/debian:bookworm",
        ],
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}
