//! Helpers shared by the integration tests that drive the binary and the
//! docker CLI.
#![allow(dead_code)]

pub mod project;
pub mod server;
// `fake_github.rs` (the fake GitHub REST server) is not a module here:
// only the bot's tests include it, with `#[path]`, so that every other test
// binary does not compile it.

use std::path::Path;

use labforge_builder::engine::Engine;
use std::process::{Command, Output};

/// Copy a folder tree (a sample project or the shipped catalog).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("readdir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Run the docker CLI and insist that it succeeds.
pub fn docker(args: &[&str]) -> Output {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Removes the listed engine images when dropped, newest first, even after a
/// panic: from a thread of its own with a fresh runtime and connection, since
/// the test's runtime may be unwinding.
#[derive(Default)]
pub struct Images(Vec<String>);

impl Images {
    pub fn add(&mut self, reference: &str) {
        self.0.push(reference.to_string());
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        let references = std::mem::take(&mut self.0);
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(engine) = Engine::connect().await else {
                    return;
                };
                for r in references.iter().rev() {
                    if let Err(e) = engine.remove_image(r).await {
                        eprintln!("cleanup: {}", labforge_core::error_chain(&e));
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}
