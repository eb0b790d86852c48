//! A running `labforge serve` for the integration tests (`tests/hub.rs`,
//! `tests/bot.rs`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::project::Project;

pub const ADMIN: &str = "admin-token-for-tests";
pub const EVENTS: &str = "events-token-for-tests";

/// A running `labforge serve`, stopped (SIGTERM, then kill) on drop.
pub struct Server {
    child: Child,
    pub url: String,
    pub http: reqwest::blocking::Client,
}

impl Server {
    /// Start `labforge serve` in the project, polling every `refresh` seconds.
    pub fn start(project: &Project, refresh: u32) -> Server {
        Server::start_in(project.path(), refresh, &[])
    }

    /// Start `labforge serve` in `dir` with more environment variables.
    pub fn start_in(dir: &Path, refresh: u32, env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_labforge"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--refresh"])
            .arg(refresh.to_string())
            .current_dir(dir)
            .env_remove("LABFORGE_REGISTRY")
            .env_remove("LABFORGE_CONFIG")
            .env_remove("LABFORGE_STATE")
            .env("LABFORGE_HUB_ADMIN_TOKEN", ADMIN)
            .env("LABFORGE_REGISTRY_EVENTS_TOKEN", EVENTS)
            .env("LABFORGE_LOG", "info");
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("labforge serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("read the first line");
        let url = first
            .trim()
            .strip_prefix("labforge hub listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        let server = Server {
            child,
            url,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        };
        server.wait_for(|s| s.get("/readyz").status().as_u16() == 200, "ready");
        server
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn json(&self, path: &str) -> Value {
        let response = self.get(path);
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.json().expect("JSON")
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .body(body.to_string());
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().expect("POST");
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    /// Poll until `done` (the hub reloads in the background), at most 30 s.
    pub fn wait_for(&self, done: impl Fn(&Server) -> bool, what: &str) {
        let start = Instant::now();
        while !done(self) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for: {what}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The profile list (checked against KubeSpawner's contract) and its ETag.
    pub fn profiles(&self, query: &str) -> (Vec<Value>, String) {
        let response = self.get(&format!("/api/v1/profiles{query}"));
        assert_eq!(response.status().as_u16(), 200);
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .expect("an ETag")
            .to_string();
        let list: Value = response.json().expect("JSON");
        let violations = labforge_core::spawner::check(&list);
        assert!(violations.is_empty(), "contract: {violations:?}");
        (list.as_array().expect("a list").clone(), etag)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
