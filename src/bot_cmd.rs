//! The GitHub bot's configuration for `labforge serve`: `[github]` in
//! labforge.toml, each key overridden by its `LABFORGE_GITHUB_*` variable;
//! secrets only from the environment or from files.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use labforge_builder::Layout;
use labforge_builder::config::Config;
use labforge_hub::bot::{Bot, BotSettings, PackageIndexes};
use labforge_hub::git::{Author, WorkClone};
use labforge_hub::github::{ExposeSecret, Github, SecretString};

use labforge_hub::pipeline::PipelineCommand;
use labforge_hub::webhook::Secrets;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn read_secret(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("reading the {what} file {}", path.display()))
}

/// The bot, when `LABFORGE_CATALOG_REPO` (or `[github] catalog_repo`) is
/// set; `None` otherwise. Half a configuration is an error that names
/// what is missing.
pub async fn bot(
    config: &Config,
    config_path: Option<&Path>,
    layout: &Layout,
    state_location: &str,
) -> Result<Option<Bot>> {
    let gh = &config.github;
    let Some(catalog_repo) = env("LABFORGE_CATALOG_REPO").or_else(|| gh.catalog_repo.clone())
    else {
        if env("LABFORGE_GITHUB_WEBHOOK_SECRET").is_some() {
            bail!(
                "LABFORGE_GITHUB_WEBHOOK_SECRET is set but LABFORGE_CATALOG_REPO is not: set it to the git URL of the catalog repository (or [github] catalog_repo)"
            );
        }
        return Ok(None);
    };
    let mut secrets = Vec::new();
    secrets.extend(env("LABFORGE_GITHUB_WEBHOOK_SECRET"));
    secrets.extend(env("LABFORGE_GITHUB_WEBHOOK_SECRET_PREVIOUS"));
    if let Some(path) = &gh.webhook_secret_file {
        secrets.extend(
            read_secret(path, "webhook secret")?
                .lines()
                .map(str::to_string),
        );
    }
    let secrets = Secrets::new(secrets);
    if secrets.is_empty() {
        bail!(
            "no webhook secret: set LABFORGE_GITHUB_WEBHOOK_SECRET (the secret of the repository's webhook) or [github] webhook_secret_file"
        );
    }
    let repository = env("LABFORGE_GITHUB_REPOSITORY")
        .or_else(|| gh.repository.clone())
        .or_else(|| repository_of_url(&catalog_repo))
        .context(
            "which GitHub repository? set LABFORGE_GITHUB_REPOSITORY=owner/repo (or [github] repository)",
        )?;
    let (owner, repo) = labforge_hub::github::parse_repo(&repository)?;
    let token = match env("LABFORGE_GITHUB_TOKEN") {
        Some(t) => Some(t),
        None => match &gh.token_file {
            Some(path) => read_secret(path, "GitHub token")?
                .lines()
                .next()
                .map(|l| l.trim().to_string()),
            None => None,
        },
    };
    let app_id = env("LABFORGE_GITHUB_APP_ID")
        .map(|v| v.parse::<u64>())
        .transpose()
        .context("LABFORGE_GITHUB_APP_ID is not a number")?
        .or(gh.app_id);
    let app = match app_id {
        Some(app_id) => {
            let key_file = env("LABFORGE_GITHUB_APP_KEY_FILE")
                .map(PathBuf::from)
                .or_else(|| gh.app_key_file.clone())
                .context("a GitHub App needs its private key: set LABFORGE_GITHUB_APP_KEY_FILE")?;
            let installation_id = env("LABFORGE_GITHUB_APP_INSTALLATION_ID")
                .map(|v| v.parse::<u64>())
                .transpose()
                .context("LABFORGE_GITHUB_APP_INSTALLATION_ID is not a number")?
                .or(gh.app_installation_id)
                .context(
                    "a GitHub App needs its installation: set LABFORGE_GITHUB_APP_INSTALLATION_ID",
                )?;
            Some(labforge_hub::github::AppCredentials {
                app_id,
                private_key_pem: SecretString::from(read_secret(&key_file, "GitHub App key")?),
                installation_id,
            })
        }
        None => None,
    };
    if token.is_none() && app.is_none() {
        bail!(
            "no GitHub credentials: set LABFORGE_GITHUB_TOKEN (or [github] token_file), or a GitHub App (LABFORGE_GITHUB_APP_ID, _KEY_FILE, _INSTALLATION_ID)"
        );
    }
    let api_url = env("LABFORGE_GITHUB_API_URL")
        .or_else(|| gh.api_url.clone())
        .unwrap_or_else(|| "https://api.github.com".to_string());
    let bot_login = env("LABFORGE_GITHUB_BOT_LOGIN")
        .or_else(|| gh.bot_login.clone())
        .unwrap_or_else(|| "labforge-bot".into());
    let github = Github::new(labforge_hub::github::GithubConfig {
        api_url: api_url.clone(),
        token: token.clone().map(SecretString::from),
        app,
        owner,
        repo,
        bot_login: bot_login.clone(),
        max_retries: 5,
        max_wait: std::time::Duration::from_secs(300),
    })?;
    let work_dir = gh.work_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    // A GitHub App's installation token for the first clone (the bot hands
    // a fresh one before each later fetch and push).
    let git_token = match &token {
        Some(t) => Some(t.clone()),
        None => Some(
            github
                .git_token()
                .await
                .context("getting an installation token of the GitHub App for git")?
                .expose_secret()
                .to_string(),
        ),
    };
    let url = catalog_repo.clone();
    let dir = work_dir.clone();
    let work = tokio::task::spawn_blocking(move || {
        WorkClone::open_or_clone(&url, &dir, git_token.as_deref())
    })
    .await
    .context("the git task stopped")?
    .with_context(|| format!("the work clone {} of {catalog_repo}", work_dir.display()))?;
    let check = env("LABFORGE_GITHUB_CHECK_PACKAGES")
        .map(|v| v != "false" && v != "0")
        .or(gh.check_packages)
        .unwrap_or(true);
    let indexes = check.then(|| PackageIndexes {
        pypi: env("LABFORGE_PYPI_URL")
            .or_else(|| gh.pypi_url.clone())
            .unwrap_or_else(|| "https://pypi.org".into()),
        openvsx: env("LABFORGE_OPENVSX_URL")
            .or_else(|| gh.openvsx_url.clone())
            .unwrap_or_else(|| "https://open-vsx.org".into()),
    });
    let mut args: Vec<OsString> = Vec::new();
    if let Some(path) = config_path {
        args.push("--config".into());
        args.push(absolute(path).into_os_string());
    }
    args.push("--catalog".into());
    args.push(absolute(&layout.catalog).into_os_string());
    args.push("--dockerfiles".into());
    args.push(absolute(&layout.dockerfiles).into_os_string());
    let state_dir = if state_location.contains("://") {
        PathBuf::from(".labforge/state")
    } else {
        PathBuf::from(state_location)
    };
    let settings = BotSettings {
        secrets,
        repository: repository.clone(),
        bot_login: bot_login.clone(),
        maintainers: gh.maintainers.clone(),
        request_template: gh
            .request_template
            .clone()
            .unwrap_or_else(|| "lab.Dockerfile.tera".into()),
        limits: labforge_core::request::Limits::default(),
        indexes,
        author: Author {
            name: gh.commit_name.clone().unwrap_or_else(|| bot_login.clone()),
            email: gh
                .commit_email
                .clone()
                .unwrap_or_else(|| format!("{bot_login}@users.noreply.github.com")),
        },
        pipeline: PipelineCommand {
            program: std::env::current_exe().context("finding the labforge binary")?,
            args,
            state: state_location.to_string(),
            log_dir: absolute(&state_dir).join("logs").join("bot"),
            timeout: std::time::Duration::from_secs(6 * 3600),
        },
        max_attempts: 5,
    };
    let bot = Bot::new(settings, github, work, layout).map_err(anyhow::Error::msg)?;
    tracing::info!(repository = %repository, api = %api_url, "GitHub bot configured");
    Ok(Some(bot))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `owner/repo` from `https://github.com/owner/repo(.git)` or
/// `git@github.com:owner/repo.git`.
fn repository_of_url(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://github.com/")
        .or_else(|| url.strip_prefix("git@github.com:"))?;
    let rest = rest.trim_end_matches('/').trim_end_matches(".git");
    let (owner, repo) = rest.split_once('/')?;
    (!owner.is_empty() && !repo.is_empty() && !repo.contains('/'))
        .then(|| format!("{owner}/{repo}"))
}

#[cfg(test)]
mod tests {
    use super::repository_of_url;

    #[test]
    fn repository_from_github_urls_only() {
        assert_eq!(
            repository_of_url("https://github.com/uni/catalog.git").as_deref(),
            Some("uni/catalog")
        );
        assert_eq!(
            repository_of_url("git@github.com:uni/catalog.git").as_deref(),
            Some("uni/catalog")
        );
        assert_eq!(repository_of_url("/srv/git/catalog.git"), None);
        assert_eq!(repository_of_url("https://github.com/uni"), None);
    }
}
