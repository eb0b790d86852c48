//! `plan` against a registry that requires a login (the CNCF registry with
//! registry-config/htpasswd.example), started by this test on a free port.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use labforge_builder::{Layout, PlanError, RegistryError, RegistryOptions};
use labforge_core::catalog::Registry;
use labforge_core::plan::Presence;
use labforge_core::render::BuildEnv;

struct Server {
    child: Child,
    addr: String,
    _storage: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The registry from Debian's docker-registry, with htpasswd auth, on a free port.
fn start_registry_with_login() -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let addr = format!("127.0.0.1:{port}");
    let storage = tempfile::tempdir().expect("tempdir");
    let child = Command::new("docker-registry")
        .args([
            "serve",
            root()
                .join("registry-config/config.yml")
                .to_str()
                .expect("utf8"),
        ])
        .env("REGISTRY_HTTP_ADDR", &addr)
        .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", storage.path())
        .env("REGISTRY_AUTH", "htpasswd")
        .env("REGISTRY_AUTH_HTPASSWD_REALM", "labforge-test")
        .env(
            "REGISTRY_AUTH_HTPASSWD_PATH",
            root().join("registry-config/htpasswd.example"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("docker-registry is required (scripts/services.sh installs it): {e}")
        });
    let server = Server {
        child,
        addr,
        _storage: storage,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&server.addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the registry did not start on {}",
            server.addr
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn options(user: Option<&str>, password: Option<&str>) -> RegistryOptions {
    RegistryOptions {
        username: user.map(String::from),
        password: password.map(String::from),
        ..Default::default()
    }
}

#[tokio::test]
async fn plan_logs_in_once_per_repository() {
    let server = start_registry_with_login();
    let layout = Layout {
        catalog: root().join("catalog"),
        dockerfiles: root().join("dockerfiles"),
    };
    let analyzed = labforge_builder::analyze(&layout, &BuildEnv::default()).expect("valid");
    let target = Registry::parse(&format!("{}/labforge", server.addr)).expect("valid");
    let n = analyzed.catalog.images.len();
    let repositories: std::collections::BTreeSet<&str> = analyzed
        .catalog
        .images
        .iter()
        .map(|i| i.repository.as_str())
        .collect();

    // Sequentially (one job), so the count is exact: one challenged HEAD per
    // repository, then one HEAD per image with the credentials.
    let (plan, heads) = labforge_builder::plan(
        &analyzed,
        Some(&target),
        options(Some("labforge"), Some("labforge-example")),
        &BTreeMap::new(),
        1,
    )
    .await
    .expect("plan with the right login");
    assert!(plan.images.iter().all(|i| i.registry == Presence::Absent));
    assert_eq!(heads, n + repositories.len());

    for (user, password) in [(Some("labforge"), Some("wrong")), (None, None)] {
        let err = labforge_builder::plan(
            &analyzed,
            Some(&target),
            options(user, password),
            &BTreeMap::new(),
            4,
        )
        .await
        .expect_err("refused");
        assert!(
            matches!(
                err,
                PlanError::Registry {
                    error: RegistryError::Auth { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("LABFORGE_REGISTRY_USERNAME"),
            "{err}"
        );
    }
}
