//! Registry credentials for a registry host, found the way the Docker CLI
//! finds them, so that a machine where `docker login` worked needs nothing
//! more:
//!
//! 1. `LABFORGE_REGISTRY_USERNAME` and `LABFORGE_REGISTRY_PASSWORD` (both set);
//! 2. Docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
//!    `~/.docker/config.json`): a credential helper for the host
//!    (`credHelpers.<host>`), else the default store (`credsStore`), both run
//!    as `docker-credential-<name> get` with the host on stdin; when the
//!    helper knows nothing, the `auths.<host>` entry: `auth` (base64
//!    `user:password`), `username`/`password`, or `identitytoken`.
//!
//! It only reads: it never writes `config.json`, never stores anything and
//! never runs a helper's `store`/`erase`. Secrets are never logged.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

/// The environment variables that take precedence over Docker's configuration.
pub const USERNAME_VAR: &str = "LABFORGE_REGISTRY_USERNAME";
pub const PASSWORD_VAR: &str = "LABFORGE_REGISTRY_PASSWORD";

/// The user name credential helpers and `config.json` use for an identity token.
const TOKEN_USER: &str = "<token>";

#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("cannot read the Docker configuration {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("the Docker configuration {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "the Docker configuration {config} names the credential helper {helper:?} for {host}, but `docker-credential-{helper}` is not installed (not on PATH); install it or remove the entry"
    )]
    HelperMissing {
        config: PathBuf,
        helper: String,
        host: String,
    },
    #[error("the credential helper docker-credential-{helper} failed for {host}: {message}")]
    Helper {
        helper: String,
        host: String,
        message: String,
    },
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (or personal token used as a password).
    Basic { username: String, password: String },
    /// An identity (refresh) token from `docker login` with a token service.
    IdentityToken {
        username: Option<String>,
        token: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"…")
                .finish(),
            Credentials::IdentityToken { username, .. } => f
                .debug_struct("IdentityToken")
                .field("username", username)
                .field("token", &"…")
                .finish(),
        }
    }
}

impl Credentials {
    /// The user name and password to log in with. An identity token is sent
    /// as the password (with the stored user name, else `<token>`), which
    /// registries that issue such tokens for basic logins accept; a token
    /// service that only takes it as an OAuth2 refresh token needs a user
    /// name and password in the environment instead.
    pub fn login(&self) -> (String, String) {
        match self {
            Credentials::Basic { username, password } => (username.clone(), password.clone()),
            Credentials::IdentityToken { username, token } => (
                username.clone().unwrap_or_else(|| TOKEN_USER.to_string()),
                token.clone(),
            ),
        }
    }
}

/// Where credentials are looked for. [`Lookup::from_env`] is what the binary
/// uses; tests give their own values.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// `LABFORGE_REGISTRY_USERNAME`.
    pub username: Option<String>,
    /// `LABFORGE_REGISTRY_PASSWORD`.
    pub password: Option<String>,
    /// The Docker configuration file, if any.
    pub docker_config: Option<PathBuf>,
    /// The search path for `docker-credential-*` helpers (`PATH`).
    pub path: Option<std::ffi::OsString>,
}

/// The login for `host` as a user name and password: the environment's
/// `LABFORGE_REGISTRY_*` only when `host` is `target` (the registry images
/// are pushed to), Docker's config.json (and its helpers) for every host. A
/// login is never sent to a registry it was not given for.
pub fn login_for(host: &str, target: &str) -> Result<Option<(String, String)>, CredsError> {
    let mut lookup = Lookup::from_env();
    if host != target {
        lookup.username = None;
        lookup.password = None;
    }
    Ok(lookup.credentials(host)?.map(|c| c.login()))
}

impl Lookup {
    /// From the process environment: the two variables, `DOCKER_CONFIG`
    /// (else `$HOME/.docker`) and `PATH`.
    pub fn from_env() -> Lookup {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let dir = var("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| Path::new(&h).join(".docker")));
        Lookup {
            username: var(USERNAME_VAR),
            password: var(PASSWORD_VAR),
            docker_config: dir.map(|d| d.join("config.json")),
            path: std::env::var_os("PATH"),
        }
    }

    /// The credentials for `host` (`host[:port]`), or `None` for anonymous access.
    pub fn credentials(&self, host: &str) -> Result<Option<Credentials>, CredsError> {
        if let (Some(username), Some(password)) = (&self.username, &self.password) {
            return Ok(Some(Credentials::Basic {
                username: username.clone(),
                password: password.clone(),
            }));
        }
        let Some(path) = &self.docker_config else {
            return Ok(None);
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(CredsError::Read {
                    path: path.clone(),
                    message: e.to_string(),
                });
            }
        };
        let config: DockerConfig =
            serde_json::from_str(&text).map_err(|e| CredsError::Invalid {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let helper = config
            .cred_helpers
            .iter()
            .find(|(k, _)| same_host(k, host))
            .map(|(_, v)| v.clone())
            .or_else(|| config.creds_store.clone())
            .filter(|h| !h.is_empty());
        if let Some(helper) = helper
            && let Some(found) = self.run_helper(path, &helper, host)?
        {
            return Ok(Some(found));
        }
        let Some(entry) = config
            .auths
            .iter()
            .find(|(k, _)| same_host(k, host))
            .map(|(_, v)| v)
        else {
            return Ok(None);
        };
        entry.credentials(path, host)
    }

    /// `docker-credential-<helper> get` with the host on stdin; `None` when
    /// the helper says it has no credentials for it.
    fn run_helper(
        &self,
        config: &Path,
        helper: &str,
        host: &str,
    ) -> Result<Option<Credentials>, CredsError> {
        let fail = |message: String| CredsError::Helper {
            helper: helper.to_string(),
            host: host.to_string(),
            message,
        };
        let program = format!("docker-credential-{helper}");
        let Some(binary) = self.find_program(&program) else {
            return Err(CredsError::HelperMissing {
                config: config.to_path_buf(),
                helper: helper.to_string(),
                host: host.to_string(),
            });
        };
        let mut child = Command::new(&binary)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot start {}: {e}", binary.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading is judged by its exit status below.
            let _ = stdin.write_all(host.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail(format!("waiting for it: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let said = format!(
                "{} {}",
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            if said.to_ascii_lowercase().contains("credentials not found") {
                return Ok(None);
            }
            return Err(fail(format!(
                "it exited with {}: {}",
                out.status,
                said.trim()
            )));
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let answer: Answer = serde_json::from_str(stdout.trim())
            .map_err(|e| fail(format!("its answer is not the JSON a helper prints: {e}")))?;
        if answer.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(if answer.username == TOKEN_USER {
            Credentials::IdentityToken {
                username: None,
                token: answer.secret,
            }
        } else {
            Credentials::Basic {
                username: answer.username,
                password: answer.secret,
            }
        }))
    }

    fn find_program(&self, name: &str) -> Option<PathBuf> {
        let path = self.path.as_ref()?;
        std::env::split_paths(path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    }
}

/// The parts of Docker's `config.json` that hold credentials.
#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(rename = "credsStore", default)]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl AuthEntry {
    fn credentials(&self, path: &Path, host: &str) -> Result<Option<Credentials>, CredsError> {
        let invalid = |message: String| CredsError::Invalid {
            path: path.to_path_buf(),
            message: format!("auths entry for {host}: {message}"),
        };
        let (mut username, mut password) = (self.username.clone(), self.password.clone());
        if let Some(auth) = self.auth.as_deref().filter(|a| !a.is_empty()) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| invalid(format!("`auth` is not base64: {e}")))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| invalid("`auth` is not UTF-8 text".to_string()))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| invalid("`auth` is not user:password".to_string()))?;
            username = Some(u.to_string());
            password = Some(p.to_string());
        }
        if let Some(token) = self.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credentials::IdentityToken {
                username: username.filter(|u| !u.is_empty() && u != TOKEN_USER),
                token: token.to_string(),
            }));
        }
        Ok(match (username, password) {
            (Some(username), Some(password)) if !username.is_empty() => {
                Some(Credentials::Basic { username, password })
            }
            _ => None,
        })
    }
}

/// The `host[:port]` of a `config.json` key: keys may be bare hosts or URLs
/// (`https://host/v1/`).
fn key_host(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

/// Does the `config.json` key `key` name the registry `host`? Docker Hub's
/// names all mean the same registry.
fn same_host(key: &str, host: &str) -> bool {
    const HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
    let k = key_host(key).to_ascii_lowercase();
    let h = host.to_ascii_lowercase();
    k == h || (HUB.contains(&k.as_str()) && HUB.contains(&h.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(dir: &Path, json: &str) -> PathBuf {
        let path = dir.join("config.json");
        std::fs::write(&path, json).expect("write config.json");
        path
    }

    fn lookup(config: Option<PathBuf>) -> Lookup {
        Lookup {
            username: None,
            password: None,
            docker_config: config,
            path: Some(std::ffi::OsString::new()),
        }
    }

    fn basic(u: &str, p: &str) -> Option<Credentials> {
        Some(Credentials::Basic {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn auth_field_username_password_and_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(
            dir.path(),
            r#"{
              "auths": {
                "registry.example.edu": {"auth": "bGFiZm9yZ2U6czNjcjp0"},
                "https://other.example.edu/v1/": {"username": "u", "password": "p"},
                "tok.example.edu:5000": {"auth": "PHRva2VuPjo=", "identitytoken": "refresh-me"},
                "empty.example.edu": {}
              },
              "HttpHeaders": {"User-Agent": "x"}
            }"#,
        );
        let l = lookup(Some(config));
        // The password may hold a colon; only the first one splits.
        assert_eq!(
            l.credentials("registry.example.edu").expect("ok"),
            basic("labforge", "s3cr:t")
        );
        assert_eq!(
            l.credentials("other.example.edu").expect("ok"),
            basic("u", "p")
        );
        let token = l.credentials("tok.example.edu:5000").expect("ok");
        assert_eq!(
            token,
            Some(Credentials::IdentityToken {
                username: None,
                token: "refresh-me".into()
            })
        );
        assert_eq!(
            token.expect("some").login(),
            ("<token>".to_string(), "refresh-me".to_string())
        );
        assert_eq!(l.credentials("empty.example.edu").expect("ok"), None);
        assert_eq!(l.credentials("unknown.example.edu").expect("ok"), None);
        // The port is part of the host.
        assert_eq!(l.credentials("tok.example.edu").expect("ok"), None);
    }

    #[test]
    fn docker_hub_aliases_and_missing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(
            dir.path(),
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "aHViOnB3"}}}"#,
        );
        assert_eq!(
            lookup(Some(config)).credentials("docker.io").expect("ok"),
            basic("hub", "pw")
        );
        let missing = dir.path().join("nope/config.json");
        assert_eq!(
            lookup(Some(missing)).credentials("docker.io").expect("ok"),
            None
        );
        assert_eq!(lookup(None).credentials("docker.io").expect("ok"), None);
    }

    #[test]
    fn environment_comes_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(
            dir.path(),
            r#"{"auths": {"r.example.edu": {"auth": "YTpi"}}}"#,
        );
        let mut l = lookup(Some(config));
        l.username = Some("env-user".into());
        l.password = Some("env-pass".into());
        assert_eq!(
            l.credentials("r.example.edu").expect("ok"),
            basic("env-user", "env-pass")
        );
        // Only a user name in the environment: the file still decides.
        l.password = None;
        assert_eq!(l.credentials("r.example.edu").expect("ok"), basic("a", "b"));
    }

    #[test]
    fn broken_files_say_where() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(dir.path(), "{not json");
        let err = lookup(Some(config.clone()))
            .credentials("x")
            .expect_err("invalid");
        assert!(matches!(err, CredsError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("config.json"), "{err}");
        write_config(dir.path(), r#"{"auths": {"x": {"auth": "%%%"}}}"#);
        let err = lookup(Some(config))
            .credentials("x")
            .expect_err("bad base64");
        assert!(err.to_string().contains("base64"), "{err}");
    }

    #[cfg(unix)]
    fn helper(dir: &Path, name: &str, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&path, script).expect("write helper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[cfg(unix)]
    #[test]
    fn credential_helpers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        // Answers for the host it reads on stdin; knows only two hosts.
        helper(
            &bin,
            "fake",
            "#!/bin/sh\n[ \"$1\" = get ] || exit 9\nread host\ncase \"$host\" in\n  helped.example.edu) echo '{\"ServerURL\":\"helped.example.edu\",\"Username\":\"helper-user\",\"Secret\":\"helper-secret\"}' ;;\n  token.example.edu) echo '{\"ServerURL\":\"token.example.edu\",\"Username\":\"<token>\",\"Secret\":\"tok\"}' ;;\n  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
        );
        helper(&bin, "broken", "#!/bin/sh\necho 'boom' >&2\nexit 3\n");
        let config = write_config(
            dir.path(),
            r#"{
              "credsStore": "fake",
              "credHelpers": {"broken.example.edu": "broken", "absent.example.edu": "nothere"},
              "auths": {"fallback.example.edu": {"auth": "Zjpwdw=="}}
            }"#,
        );
        let mut l = lookup(Some(config));
        l.path = Some(bin.into_os_string());
        assert_eq!(
            l.credentials("helped.example.edu").expect("ok"),
            basic("helper-user", "helper-secret")
        );
        assert_eq!(
            l.credentials("token.example.edu").expect("ok"),
            Some(Credentials::IdentityToken {
                username: None,
                token: "tok".into()
            })
        );
        // The store knows nothing: the auths entry is used.
        assert_eq!(
            l.credentials("fallback.example.edu").expect("ok"),
            basic("f", "pw")
        );
        assert_eq!(l.credentials("nobody.example.edu").expect("ok"), None);
        let err = l
            .credentials("broken.example.edu")
            .expect_err("helper fails");
        assert!(
            matches!(err, CredsError::Helper { .. }) && err.to_string().contains("boom"),
            "{err}"
        );
        let err = l
            .credentials("absent.example.edu")
            .expect_err("helper missing");
        assert!(matches!(err, CredsError::HelperMissing { .. }), "{err}");
        assert!(
            err.to_string().contains("docker-credential-nothere"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
