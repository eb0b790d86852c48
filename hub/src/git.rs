//! The work clone of the catalog repository, driven through git2.
//!
//! The hub's project folder (`catalog/` and `dockerfiles/`, which it serves
//! and builds from) *is* a clone of the catalog repository. The GitHub bot
//! uses it to propose an image request as a branch with one catalog file,
//! to push that branch, and, once a maintainer merged it, to bring the work
//! tree up to the merged commit.
//!
//! What this module must not touch:
//! - **The work tree and the index, except in [`WorkClone::checkout`].** The
//!   hub serves from the work tree while the bot works, so request commits
//!   are made purely in the object database (blobs and trees written
//!   directly, the branch reference moved) and never appear in the files
//!   the hub reads.
//! - **Local changes.** [`WorkClone::checkout`] refuses, naming the files,
//!   when a tracked file differs from its commit; untracked files (such as
//!   the state folder `.labforge/`) are left alone.
//! - **The token.** It is handed to libgit2 through the credentials
//!   callback only, for `https://` remotes only, as user `x-access-token`
//!   (GitHub's convention for app and fine-grained tokens). It is never put
//!   in a remote URL, in `.git/config`, in an error or in a log line.
//! - **Other people's pushes.** Pushes never force: a branch that moved on
//!   the remote since the last fetch is reported, not overwritten.
//!
//! Every function blocks (network and disk): async callers run them with
//! `tokio::task::spawn_blocking` and serialise them (one operation on the
//! clone at a time, e.g. behind a mutex), since git2 locks references but
//! not whole sequences of operations. [`WorkClone`] is `Send` but not `Sync`
//! (neither is `git2::Repository`).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use git2::{
    AutotagOption, CheckoutNotificationType, Cred, CredentialType, DiffFindOptions, ErrorClass,
    ErrorCode, FetchOptions, FetchPrune, FileMode, ObjectType, Oid, PushOptions, RemoteCallbacks,
    Repository, Signature, Status, StatusOptions,
};

/// The remote the work clone fetches from and pushes to.
const ORIGIN: &str = "origin";
/// The user name GitHub expects with an installation or personal token.
const TOKEN_USER: &str = "x-access-token";
/// The branch assumed when the remote does not say which one is its default.
const FALLBACK_BRANCH: &str = "main";

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(
        "cannot use {} as the work clone of {url}: the folder is not empty and is not a git repository; point the hub at an empty or missing folder, or move its files away", path.display()
    )]
    NotARepository { path: PathBuf, url: String },
    #[error(
        "cannot use {} as the work clone of {wanted}: it is a clone of {found}; point the hub at another folder, or change its origin with `git -C {} remote set-url origin {wanted}`", path.display(), path.display()
    )]
    OtherOrigin {
        path: PathBuf,
        wanted: String,
        found: String,
    },
    #[error(
        "cannot use {} as the work clone of {url}: it has no `origin` remote; add it with `git -C {} remote add origin {url}` or use another folder", path.display(), path.display()
    )]
    NoOrigin { path: PathBuf, url: String },
    #[error(
        "cannot use {} as the work clone of {url}: it is a bare repository, and the hub serves files from a work tree; clone it with a work tree instead", path.display()
    )]
    Bare { path: PathBuf, url: String },
    #[error(
        "the repository address {url} carries a password; give the token separately, so that it is never written to .git/config"
    )]
    CredentialsInUrl { url: String },
    #[error(
        "the origin of {} ({url}) carries a password in .git/config; remove it with `git -C {} remote set-url origin <address without credentials>` and give the token to the hub instead", path.display(), path.display()
    )]
    CredentialsInOrigin { path: PathBuf, url: String },
    /// Talking to the remote failed (network, authentication, a missing
    /// repository); `hint` says what to check.
    #[error("cannot {op} {url}: {message}; {hint}")]
    Remote {
        op: String,
        url: String,
        message: String,
        hint: &'static str,
    },
    #[error(
        "push of {branch} to {url} refused: someone else pushed to it since the last fetch (the remote has {remote}, the last fetch saw {expected}); fetch and try again"
    )]
    Stale {
        branch: String,
        url: String,
        remote: String,
        expected: String,
    },
    #[error(
        "push of {branch} to {url} rejected as not a fast-forward: someone else pushed to it; fetch and try again"
    )]
    NonFastForward { branch: String, url: String },
    #[error(
        "push of {branch} to {url} rejected by the remote: {message}; check the branch protection rules and that the token may write to the repository"
    )]
    Rejected {
        branch: String,
        url: String,
        message: String,
    },
    #[error("{what} {name} not found in {}; {hint}", path.display())]
    NotFound {
        what: &'static str,
        name: String,
        path: PathBuf,
        hint: &'static str,
    },
    #[error(
        "cannot commit to {branch} in {}: it is the branch checked out in the work tree, which the hub serves; use another branch", path.display()
    )]
    CheckedOut { branch: String, path: PathBuf },
    #[error(
        "checkout of {oid} in {} refused: tracked files were changed locally ({}), and the hub serves only reviewed commits; commit or discard the changes (`git -C {} status`), then try again", path.display(), files.join(", "), path.display()
    )]
    LocalChanges {
        oid: String,
        path: PathBuf,
        files: Vec<String>,
    },
    #[error(
        "checkout of {oid} in {} refused: files that are not in git are in the way of files of that commit ({}); move them away, then try again", path.display(), files.join(", ")
    )]
    InTheWay {
        oid: String,
        path: PathBuf,
        files: Vec<String>,
    },
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A local repository operation failed (a corrupt or locked repository,
    /// a full disk).
    #[error("cannot {op} in {}: {message}", path.display())]
    Repository {
        op: String,
        path: PathBuf,
        message: String,
    },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Who a request commit is by (the bot's identity, or the requester's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub name: String,
    pub email: String,
}

/// What [`WorkClone::commit_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The commit the local branch points at afterwards (hex).
    pub oid: String,
    /// A new commit was made; `false` when the branch already had exactly
    /// this content (or when `in_base` left nothing to propose).
    pub created: bool,
    /// The base branch already has exactly these bytes at the path. When
    /// the request branch did not exist either, nothing is committed, no
    /// branch is made (there is nothing to propose) and `oid` is the base's
    /// commit: callers skip the push and the pull request.
    pub in_base: bool,
}

/// A token that never shows in `Debug` output.
#[derive(Clone)]
struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// The hub's clone of the catalog repository. See the module docs.
pub struct WorkClone {
    repo: Repository,
    /// The work tree (the project folder the hub serves).
    path: PathBuf,
    /// The origin URL as configured (a password in it is refused).
    url: String,
    token: Option<Token>,
}

impl std::fmt::Debug for WorkClone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkClone")
            .field("path", &self.path)
            .field("url", &redact(&self.url))
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl WorkClone {
    /// Open the clone at `path` when it is a clone of `url`, or clone `url`
    /// into it when the folder is missing or empty.
    ///
    /// `url` is a local path, a `file://` URL or an `https://` URL; the two
    /// sides are compared without a trailing slash or `.git` suffix, and
    /// local paths after resolving them. A folder that holds something else
    /// (other files, a clone of another repository) is an error rather than
    /// being overwritten. `token` is used for `https://` remotes only.
    pub fn open_or_clone(
        url: &str,
        path: &Path,
        token: Option<&str>,
    ) -> Result<WorkClone, GitError> {
        if has_password(url) {
            return Err(GitError::CredentialsInUrl { url: redact(url) });
        }
        let token = token.filter(|t| !t.is_empty()).map(|t| Token(t.to_owned()));
        let empty = match std::fs::read_dir(path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(source) => {
                return Err(GitError::Io {
                    op: "read the work clone folder",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        if empty {
            return clone(url, path, token);
        }
        let repo = match Repository::open(path) {
            Ok(repo) => repo,
            Err(e) if e.code() == ErrorCode::NotFound => {
                return Err(GitError::NotARepository {
                    path: path.to_owned(),
                    url: redact(url),
                });
            }
            Err(e) => return Err(local_error("open the repository", path, &e, None)),
        };
        let Some(workdir) = repo.workdir().map(tidy) else {
            return Err(GitError::Bare {
                path: path.to_owned(),
                url: redact(url),
            });
        };
        let origin = match repo.find_remote(ORIGIN) {
            Ok(remote) => remote,
            Err(e) if e.code() == ErrorCode::NotFound => {
                return Err(GitError::NoOrigin {
                    path: path.to_owned(),
                    url: redact(url),
                });
            }
            Err(e) => return Err(local_error("read the origin remote", path, &e, None)),
        };
        let found = origin.url().unwrap_or_default().to_owned();
        if has_password(&found) {
            return Err(GitError::CredentialsInOrigin {
                path: path.to_owned(),
                url: redact(&found),
            });
        }
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        if normalise(&found, &workdir) != normalise(url, &cwd) {
            return Err(GitError::OtherOrigin {
                path: path.to_owned(),
                wanted: redact(url),
                found: redact(&found),
            });
        }
        drop(origin);
        tracing::debug!(path = %workdir.display(), url = %redact(&found), "work clone opened");
        Ok(WorkClone {
            repo,
            path: workdir,
            url: found,
            token,
        })
    }

    /// The commit the work tree is at (what the hub serves).
    pub fn head(&self) -> Result<String, GitError> {
        let head = self
            .repo
            .head()
            .map_err(|e| self.local_error("read HEAD", &e))?;
        let commit = head
            .peel_to_commit()
            .map_err(|e| self.local_error("read HEAD", &e))?;
        Ok(commit.id().to_string())
    }

    /// Use another token from now on: a GitHub App's installation tokens
    /// expire after an hour, so the bot hands a current one before each
    /// operation on the remote.
    pub fn set_token(&mut self, token: Option<&str>) {
        self.token = token.filter(|t| !t.is_empty()).map(|t| Token(t.to_owned()));
    }

    /// The work tree: the project folder the hub serves.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The origin URL, without any credentials (for messages and logs).
    pub fn url(&self) -> String {
        redact(&self.url)
    }

    /// Bring `refs/remotes/origin/*` up to date with the remote's branches,
    /// dropping the ones deleted there, and record the remote's default
    /// branch as `refs/remotes/origin/HEAD`. Leaves the work tree alone.
    pub fn fetch(&self) -> Result<(), GitError> {
        let mut remote = self.origin()?;
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(self.callbacks())
            .proxy_options(proxy())
            .prune(FetchPrune::On)
            .download_tags(AutotagOption::None);
        remote
            .fetch(
                &[format!("+refs/heads/*:refs/remotes/{ORIGIN}/*")],
                Some(&mut options),
                Some("labforge: fetch"),
            )
            .map_err(|e| self.remote_error("fetch from", &e))?;
        // The remote's HEAD stays readable after the fetch disconnected.
        // Not knowing it is not an error: default_branch() falls back.
        if let Ok(head) = remote.default_branch()
            && let Some(name) = head
                .as_str()
                .ok()
                .and_then(|h| h.strip_prefix("refs/heads/"))
        {
            let target = format!("refs/remotes/{ORIGIN}/{name}");
            if self.repo.find_reference(&target).is_ok() {
                self.repo
                    .reference_symbolic(
                        &format!("refs/remotes/{ORIGIN}/HEAD"),
                        &target,
                        true,
                        "labforge: remote HEAD",
                    )
                    .map_err(|e| self.local_error("record the remote's default branch", &e))?;
            }
        }
        tracing::debug!(url = %self.url(), "work clone fetched");
        Ok(())
    }

    /// The remote's default branch, as of the last clone or fetch (its
    /// `HEAD`), or `main` when the remote never said.
    pub fn default_branch(&self) -> Result<String, GitError> {
        match self
            .repo
            .find_reference(&format!("refs/remotes/{ORIGIN}/HEAD"))
        {
            Ok(head) => Ok(symbolic_target(&head)
                .and_then(|t| t.strip_prefix(&format!("refs/remotes/{ORIGIN}/")))
                .map_or_else(|| FALLBACK_BRANCH.to_owned(), str::to_owned)),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(FALLBACK_BRANCH.to_owned()),
            Err(e) => Err(self.local_error("read the remote's default branch", &e)),
        }
    }

    /// The commit `origin/<branch>` is at (hex), as of the last fetch or
    /// push, or `None` when the remote has no such branch.
    pub fn head_of(&self, branch: &str) -> Result<Option<String>, GitError> {
        check_branch(branch)?;
        Ok(self.remote_tip(branch)?.map(|c| c.to_string()))
    }

    /// Make `branch` hold `contents` at `path` (e.g.
    /// `catalog/images/<slug>.yaml`), without touching the work tree or
    /// the index, and point `refs/heads/<branch>` at the result.
    ///
    /// - When `origin/<branch>` does not exist: one new commit on top of
    ///   `origin/<base>`.
    /// - When it exists with exactly these bytes at `path`: nothing is
    ///   committed (`created: false`), so approving twice is harmless.
    /// - When it exists with other content: the new commit goes on top of
    ///   `origin/<branch>`, not of the base, so commits a maintainer added
    ///   to the request branch are kept and the push stays a fast-forward.
    ///
    /// Both are as of the last fetch: fetch first.
    pub fn commit_file(
        &self,
        branch: &str,
        base: &str,
        path: &str,
        contents: &[u8],
        message: &str,
        author: &Author,
    ) -> Result<Committed, GitError> {
        check_branch(branch)?;
        check_branch(base)?;
        check_file_path(path)?;
        if self.checked_out_branch()?.as_deref() == Some(branch) {
            return Err(GitError::CheckedOut {
                branch: branch.to_owned(),
                path: self.path.clone(),
            });
        }
        let base_oid = self.remote_tip(base)?.ok_or_else(|| GitError::NotFound {
            what: "remote branch",
            name: format!("{ORIGIN}/{base}"),
            path: self.path.clone(),
            hint: "fetch first, and check the name of the default branch",
        })?;
        let blob = self
            .repo
            .blob(contents)
            .map_err(|e| self.local_error("store the file", &e))?;
        let base_commit = self.commit(base_oid)?;
        let in_base = self.has_blob(&base_commit, path, blob)?;
        let parent = match self.remote_tip(branch)? {
            Some(tip) => {
                let tip = self.commit(tip)?;
                if self.has_blob(&tip, path, blob)? {
                    self.set_branch(branch, tip.id())?;
                    return Ok(Committed {
                        oid: tip.id().to_string(),
                        created: false,
                        in_base,
                    });
                }
                tip
            }
            None if in_base => {
                // A local branch left from an earlier attempt must not be
                // pushed by mistake: there is nothing to propose.
                if let Ok(mut stale) = self.repo.find_reference(&format!("refs/heads/{branch}")) {
                    stale
                        .delete()
                        .map_err(|e| self.local_error(&format!("delete branch {branch}"), &e))?;
                }
                return Ok(Committed {
                    oid: base_oid.to_string(),
                    created: false,
                    in_base,
                });
            }
            None => base_commit,
        };
        let parent_tree = parent
            .tree()
            .map_err(|e| self.local_error("read the parent commit's tree", &e))?;
        let tree_oid = git2::build::TreeUpdateBuilder::new()
            .upsert(path, blob, FileMode::Blob)
            .create_updated(&self.repo, &parent_tree)
            .map_err(|e| self.local_error(&format!("write the tree with {path}"), &e))?;
        let tree = self
            .repo
            .find_tree(tree_oid)
            .map_err(|e| self.local_error("read the new tree", &e))?;
        let signature =
            Signature::now(&author.name, &author.email).map_err(|e| GitError::Invalid {
                what: "commit author",
                value: format!("{} <{}>", author.name, author.email),
                reason: signature_problem(e.message()),
            })?;
        // No reference to update here: HEAD must not move.
        let oid = self
            .repo
            .commit(None, &signature, &signature, message, &tree, &[&parent])
            .map_err(|e| self.local_error(&format!("commit to {branch}"), &e))?;
        self.set_branch(branch, oid)?;
        tracing::info!(branch, path, commit = %oid, "request commit made");
        Ok(Committed {
            oid: oid.to_string(),
            created: true,
            in_base,
        })
    }

    /// Push `refs/heads/<branch>` to the same branch on origin, never
    /// forcing: the push is refused when the remote branch is not where the
    /// last fetch saw it (someone else pushed), or is not an ancestor of
    /// ours. A rejection by the remote (branch protection, hooks) is an
    /// error too. Pushing what the remote already has does nothing.
    pub fn push(&self, branch: &str) -> Result<(), GitError> {
        check_branch(branch)?;
        let local = format!("refs/heads/{branch}");
        if self.repo.find_reference(&local).is_err() {
            return Err(GitError::NotFound {
                what: "local branch",
                name: branch.to_owned(),
                path: self.path.clone(),
                hint: "commit_file makes it; nothing was pushed",
            });
        }
        let expected = self.remote_tip(branch)?.unwrap_or(Oid::ZERO_SHA1);
        let stale: RefCell<Option<Oid>> = RefCell::new(None);
        let rejected: RefCell<Vec<String>> = RefCell::new(Vec::new());
        let result = {
            let mut callbacks = self.callbacks();
            callbacks.push_negotiation(|updates| {
                // A lease: the remote must still be where we last saw it.
                for update in updates {
                    if update.dst_refname_bytes() == local.as_bytes() && update.src() != expected {
                        *stale.borrow_mut() = Some(update.src());
                        return Err(git2::Error::from_str(
                            "the remote branch moved since the last fetch",
                        ));
                    }
                }
                Ok(())
            });
            callbacks.push_update_reference(|reference, status| {
                if let Some(status) = status {
                    let status = status.trim_end_matches([':', ';', ' ']);
                    rejected.borrow_mut().push(format!("{reference}: {status}"));
                }
                Ok(())
            });
            let mut options = PushOptions::new();
            options.remote_callbacks(callbacks).proxy_options(proxy());
            let mut remote = self.origin()?;
            remote.push(&[format!("{local}:{local}")], Some(&mut options))
        };
        if let Some(remote) = stale.into_inner() {
            return Err(GitError::Stale {
                branch: branch.to_owned(),
                url: self.url(),
                remote: short(remote),
                expected: short(expected),
            });
        }
        if let Err(e) = result {
            if e.code() == ErrorCode::NotFastForward {
                return Err(GitError::NonFastForward {
                    branch: branch.to_owned(),
                    url: self.url(),
                });
            }
            return Err(self.remote_error(&format!("push {branch} to"), &e));
        }
        let rejected = rejected.into_inner();
        if !rejected.is_empty() {
            let message = self.scrub(&rejected.join("; "));
            if rejected
                .iter()
                .any(|r| r.contains("non-fast-forward") || r.contains("fetch first"))
            {
                return Err(GitError::NonFastForward {
                    branch: branch.to_owned(),
                    url: self.url(),
                });
            }
            return Err(GitError::Rejected {
                branch: branch.to_owned(),
                url: self.url(),
                message,
            });
        }
        tracing::info!(branch, url = %self.url(), "branch pushed");
        Ok(())
    }

    /// Move the work tree to `oid` (a fetched commit, typically the new tip
    /// of the default branch after a merge), leaving HEAD detached there.
    ///
    /// Refuses, naming the files, when any tracked file differs from the
    /// checked-out commit, even one the new commit does not change: the
    /// hub serves the work tree, so it must hold exactly a reviewed commit.
    /// Files in the way of new ones refuse it too. Untracked files (the
    /// state folder) are kept.
    pub fn checkout(&self, oid: &str) -> Result<(), GitError> {
        let oid = parse_oid(oid)?;
        let commit = self.commit(oid)?;
        let modified = self.modified_files()?;
        if !modified.is_empty() {
            return Err(GitError::LocalChanges {
                oid: oid.to_string(),
                path: self.path.clone(),
                files: modified,
            });
        }
        let conflicts: RefCell<Vec<String>> = RefCell::new(Vec::new());
        let result = {
            let mut checkout = git2::build::CheckoutBuilder::new();
            checkout
                .safe()
                .notify_on(CheckoutNotificationType::CONFLICT)
                .notify(|_, path, _, _, _| {
                    if let Some(path) = path {
                        conflicts.borrow_mut().push(path.display().to_string());
                    }
                    true
                });
            self.repo
                .checkout_tree(commit.as_object(), Some(&mut checkout))
        };
        let conflicts = conflicts.into_inner();
        if !conflicts.is_empty() {
            return Err(GitError::InTheWay {
                oid: oid.to_string(),
                path: self.path.clone(),
                files: conflicts,
            });
        }
        result.map_err(|e| self.local_error(&format!("check out {oid}"), &e))?;
        self.repo
            .set_head_detached(oid)
            .map_err(|e| self.local_error(&format!("point HEAD at {oid}"), &e))?;
        tracing::info!(commit = %oid, path = %self.path.display(), "work tree checked out");
        Ok(())
    }

    /// The files that differ between two commits, sorted; a rename counts
    /// as both its old and its new path. `from` all zeros (a branch that
    /// did not exist, as in a push event) means every file in `to`.
    pub fn changed_paths(&self, from: &str, to: &str) -> Result<Vec<String>, GitError> {
        let from = parse_oid(from)?;
        let to = parse_oid(to)?;
        let old_tree = if from.is_zero() {
            None
        } else {
            Some(self.tree_of(from)?)
        };
        let new_tree = self.tree_of(to)?;
        let mut diff = self
            .repo
            .diff_tree_to_tree(old_tree.as_ref(), Some(&new_tree), None)
            .map_err(|e| self.local_error(&format!("compare {from} with {to}"), &e))?;
        diff.find_similar(Some(DiffFindOptions::new().renames(true)))
            .map_err(|e| self.local_error("find renames", &e))?;
        let mut paths = BTreeSet::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(path) = file.path() {
                    paths.insert(path.to_string_lossy().into_owned());
                }
            }
        }
        Ok(paths.into_iter().collect())
    }

    fn origin(&self) -> Result<git2::Remote<'_>, GitError> {
        self.repo
            .find_remote(ORIGIN)
            .map_err(|e| self.local_error("read the origin remote", &e))
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        callbacks(self.token.as_ref())
    }

    fn remote_tip(&self, branch: &str) -> Result<Option<Oid>, GitError> {
        let name = format!("refs/remotes/{ORIGIN}/{branch}");
        match self.repo.refname_to_id(&name) {
            Ok(oid) => Ok(Some(oid)),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.local_error(&format!("read {name}"), &e)),
        }
    }

    fn commit(&self, oid: Oid) -> Result<git2::Commit<'_>, GitError> {
        self.repo.find_commit(oid).map_err(|e| {
            if e.code() == ErrorCode::NotFound {
                GitError::NotFound {
                    what: "commit",
                    name: oid.to_string(),
                    path: self.path.clone(),
                    hint: "fetch first",
                }
            } else {
                self.local_error(&format!("read commit {oid}"), &e)
            }
        })
    }

    fn tree_of(&self, oid: Oid) -> Result<git2::Tree<'_>, GitError> {
        self.commit(oid)?
            .tree()
            .map_err(|e| self.local_error(&format!("read the tree of {oid}"), &e))
    }

    /// Whether `commit` has exactly the blob `blob` as a regular file at `path`.
    fn has_blob(&self, commit: &git2::Commit<'_>, path: &str, blob: Oid) -> Result<bool, GitError> {
        let tree = commit
            .tree()
            .map_err(|e| self.local_error(&format!("read the tree of {}", commit.id()), &e))?;
        match tree.get_path(Path::new(path)) {
            Ok(entry) => Ok(entry.id() == blob
                && entry.kind() == Some(ObjectType::Blob)
                && entry.filemode() == i32::from(FileMode::Blob)),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(false),
            Err(e) => Err(self.local_error(&format!("look up {path}"), &e)),
        }
    }

    fn set_branch(&self, branch: &str, oid: Oid) -> Result<(), GitError> {
        self.repo
            .reference(
                &format!("refs/heads/{branch}"),
                oid,
                true,
                "labforge: request commit",
            )
            .map(drop)
            .map_err(|e| self.local_error(&format!("move branch {branch}"), &e))
    }

    /// The branch HEAD names, `None` when detached.
    fn checked_out_branch(&self) -> Result<Option<String>, GitError> {
        let head = self
            .repo
            .find_reference("HEAD")
            .map_err(|e| self.local_error("read HEAD", &e))?;
        Ok(symbolic_target(&head)
            .and_then(|t| t.strip_prefix("refs/heads/"))
            .map(str::to_owned))
    }

    /// Tracked files that differ from HEAD, in the index or the work tree.
    fn modified_files(&self) -> Result<Vec<String>, GitError> {
        let mut options = StatusOptions::new();
        options
            .include_untracked(false)
            .include_ignored(false)
            .exclude_submodules(true);
        let statuses = self
            .repo
            .statuses(Some(&mut options))
            .map_err(|e| self.local_error("list local changes", &e))?;
        let mut files = BTreeSet::new();
        for entry in statuses.iter() {
            let status = entry.status();
            if status.is_empty() || status.intersects(Status::IGNORED | Status::WT_NEW) {
                continue;
            }
            files.insert(String::from_utf8_lossy(entry.path_bytes()).into_owned());
        }
        Ok(files.into_iter().collect())
    }

    fn scrub(&self, message: &str) -> String {
        scrub(message, self.token.as_ref())
    }

    fn local_error(&self, op: &str, e: &git2::Error) -> GitError {
        local_error(op, &self.path, e, self.token.as_ref())
    }

    fn remote_error(&self, op: &str, e: &git2::Error) -> GitError {
        remote_error(op, &self.url, e, self.token.as_ref())
    }
}

/// A work tree path as libgit2 gives it, without the trailing separator.
fn tidy(path: &Path) -> PathBuf {
    path.components().collect()
}

/// The target of a symbolic reference (`None` for a direct one).
fn symbolic_target<'r>(reference: &'r git2::Reference<'_>) -> Option<&'r str> {
    reference
        .symbolic_target_bytes()
        .and_then(|t| std::str::from_utf8(t).ok())
}

fn clone(url: &str, path: &Path, token: Option<Token>) -> Result<WorkClone, GitError> {
    // A local path is stored resolved, so the clone keeps working whatever
    // the current directory of later runs is.
    let source = if is_local(url) {
        std::fs::canonicalize(url).map_or_else(|_| url.to_owned(), |p| p.display().to_string())
    } else {
        url.to_owned()
    };
    std::fs::create_dir_all(path).map_err(|source| GitError::Io {
        op: "create the work clone folder",
        path: path.to_owned(),
        source,
    })?;
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks(token.as_ref()))
        .proxy_options(proxy())
        .download_tags(AutotagOption::None);
    let repo = git2::build::RepoBuilder::new()
        .fetch_options(options)
        .clone(&source, path)
        .map_err(|e| remote_error("clone", &source, &e, token.as_ref()))?;
    let workdir = repo.workdir().map_or_else(|| path.to_owned(), tidy);
    tracing::info!(url = %redact(&source), path = %workdir.display(), "work clone made");
    Ok(WorkClone {
        repo,
        path: workdir,
        url: source,
        token,
    })
}

/// The proxy from git's configuration (`http.proxy`) or the environment
/// (`https_proxy`), as the git command line would use.
fn proxy() -> git2::ProxyOptions<'static> {
    let mut proxy = git2::ProxyOptions::new();
    proxy.auto();
    proxy
}

/// Credentials for `https://` remotes from the token; one attempt only,
/// since libgit2 asks again and again while the server refuses.
fn callbacks(token: Option<&Token>) -> RemoteCallbacks<'_> {
    let mut callbacks = RemoteCallbacks::new();
    let mut tried = false;
    callbacks.credentials(move |url, _user, allowed| {
        if !is_https(url) || !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            return Err(git2::Error::from_str(
                "the remote asks for credentials the hub cannot give (a token is used for https:// remotes only)",
            ));
        }
        let Some(token) = token else {
            return Err(git2::Error::from_str(
                "the remote asks for credentials and no GitHub token is configured",
            ));
        };
        if tried {
            return Err(git2::Error::from_str("the remote refused the token"));
        }
        tried = true;
        Cred::userpass_plaintext(TOKEN_USER, &token.0)
    });
    callbacks
}

fn remote_error(op: &str, url: &str, e: &git2::Error, token: Option<&Token>) -> GitError {
    let message = scrub(e.message(), token);
    let lower = message.to_ascii_lowercase();
    let hint = if e.code() == ErrorCode::Auth
        || lower.contains("credentials")
        || lower.contains("token")
        || lower.contains("401")
        || lower.contains("403")
        || lower.contains("authentication")
    {
        "check that the GitHub token is set, valid and allowed to read and write the repository's contents"
    } else if e.class() == ErrorClass::Net
        || e.class() == ErrorClass::Http
        || e.class() == ErrorClass::Ssl
        || e.class() == ErrorClass::Os
    {
        "check the repository address and the network, then try again"
    } else if e.code() == ErrorCode::NotFound {
        "check the repository address (and that the token can see the repository)"
    } else {
        "check the repository address, then try again"
    };
    GitError::Remote {
        op: op.to_owned(),
        url: redact(url),
        message,
        hint,
    }
}

fn local_error(op: &str, path: &Path, e: &git2::Error, token: Option<&Token>) -> GitError {
    GitError::Repository {
        op: op.to_owned(),
        path: path.to_owned(),
        message: scrub(e.message(), token),
    }
}

/// Remove the token from a message, should a library ever echo it.
fn scrub(message: &str, token: Option<&Token>) -> String {
    match token {
        Some(Token(t)) if !t.is_empty() => message.replace(t.as_str(), "***"),
        _ => message.to_owned(),
    }
}

/// Why libgit2 refused an author (its own message may quote the input).
fn signature_problem(message: &str) -> &'static str {
    if message.contains("angle") {
        "names and e-mail addresses cannot contain angle brackets"
    } else {
        "a name and an e-mail address are needed"
    }
}

/// An abbreviated commit id for messages; the zero id is a missing branch.
fn short(oid: Oid) -> String {
    if oid.is_zero() {
        "no such branch".to_owned()
    } else {
        oid.to_string().chars().take(12).collect()
    }
}

fn parse_oid(oid: &str) -> Result<Oid, GitError> {
    if oid.len() != 40 || !oid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(GitError::Invalid {
            what: "commit id",
            value: oid.chars().take(64).collect(),
            reason: "a commit id is 40 hexadecimal digits",
        });
    }
    Oid::from_str(oid).map_err(|_| GitError::Invalid {
        what: "commit id",
        value: oid.to_owned(),
        reason: "a commit id is 40 hexadecimal digits",
    })
}

fn check_branch(branch: &str) -> Result<(), GitError> {
    if branch.is_empty()
        || branch.starts_with('-')
        || !git2::Reference::is_valid_name(&format!("refs/heads/{branch}"))
    {
        return Err(GitError::Invalid {
            what: "branch name",
            value: branch.chars().take(200).collect(),
            reason: "not a valid git branch name",
        });
    }
    Ok(())
}

/// A repository-relative file path: forward slashes, no empty, `.`, `..`
/// or `.git` parts.
fn check_file_path(path: &str) -> Result<(), GitError> {
    let invalid = |reason| GitError::Invalid {
        what: "file path",
        value: path.chars().take(200).collect(),
        reason,
    };
    if path.is_empty() || path.starts_with('/') || path.ends_with('/') {
        return Err(invalid("a path relative to the repository root is needed"));
    }
    if path.contains('\\') || path.contains('\0') {
        return Err(invalid("use forward slashes, and no NUL bytes"));
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(invalid("empty, `.` and `..` parts are not allowed"));
        }
        if part.eq_ignore_ascii_case(".git") {
            return Err(invalid("files inside .git cannot be committed"));
        }
    }
    Ok(())
}

fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// Neither `scheme://…` nor scp-like `user@host:path`.
fn is_local(url: &str) -> bool {
    !url.contains("://") && !is_scp_like(url)
}

fn is_scp_like(url: &str) -> bool {
    match url.split_once(':') {
        Some((before, _)) => !before.is_empty() && !before.contains('/') && before.len() > 1,
        None => false,
    }
}

/// `scheme://user:password@host/…` → `scheme://***@host/…`; other URLs and
/// paths unchanged.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => url.to_owned(),
    }
}

fn has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// A form of `url` in which two addresses of the same repository are
/// equal: no trailing slash or `.git`, scheme and host in lower case, no
/// user info; local paths (and `file://` URLs) resolved against `base`.
fn normalise(url: &str, base: &Path) -> String {
    let url = url.trim();
    if let Some(rest) = url
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("file://"))
        .and_then(|_| url.get(7..))
    {
        return local_key(rest, base);
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        return format!(
            "{}://{}{}",
            scheme.to_ascii_lowercase(),
            host.to_ascii_lowercase(),
            strip_repo_suffix(tail)
        );
    }
    if is_scp_like(url)
        && let Some((host, tail)) = url.split_once(':')
    {
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        return format!(
            "ssh://{}/{}",
            host.to_ascii_lowercase(),
            strip_repo_suffix(tail).trim_start_matches('/')
        );
    }
    local_key(url, base)
}

fn local_key(path: &str, base: &Path) -> String {
    let path = Path::new(path);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    let resolved = std::fs::canonicalize(&absolute).unwrap_or(absolute);
    format!("file://{}", strip_repo_suffix(&resolved.to_string_lossy()))
}

fn strip_repo_suffix(path: &str) -> &str {
    let path = path.trim_end_matches('/');
    path.strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_one_repository_normalise_alike() {
        let base = Path::new("/nonexistent-base");
        let github = normalise("https://github.com/owner/catalog.git", base);
        for same in [
            "https://github.com/owner/catalog",
            "https://github.com/owner/catalog/",
            "HTTPS://GitHub.com/owner/catalog.git/",
            "https://x-access-token@github.com/owner/catalog.git",
        ] {
            assert_eq!(normalise(same, base), github, "{same}");
        }
        assert_ne!(normalise("https://github.com/owner/other", base), github);
        assert_ne!(normalise("https://github.com/Owner2/catalog", base), github);
        assert_eq!(
            normalise("/srv/catalog.git/", base),
            normalise("file:///srv/catalog", base)
        );
        assert_eq!(
            normalise("catalog.git", base),
            normalise("/nonexistent-base/catalog", base)
        );
        assert_eq!(
            normalise("git@github.com:owner/catalog.git", base),
            normalise("ssh://git@github.com/owner/catalog", base)
        );
    }

    #[test]
    fn redaction_drops_user_info_only() {
        assert_eq!(
            redact("https://x-access-token:s3cret@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(redact("https://github.com/o/r"), "https://github.com/o/r");
        assert_eq!(redact("/srv/a@b/repo"), "/srv/a@b/repo");
        assert!(has_password("https://u:p@github.com/o/r"));
        assert!(!has_password("https://u@github.com/o/r"));
        assert!(!has_password("/srv/u:p@x/repo"));
    }

    #[test]
    fn scrub_hides_the_token() {
        let token = Token("ghs_abc123".to_owned());
        assert_eq!(
            scrub("bad credentials ghs_abc123 for x", Some(&token)),
            "bad credentials *** for x"
        );
        assert_eq!(format!("{token:?}"), "Token(***)");
    }

    #[test]
    fn file_paths_and_branches_are_checked() {
        assert!(check_file_path("catalog/images/a.yaml").is_ok());
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/../b",
            "./a",
            ".git/config",
            "a\\b",
            "dir/",
        ] {
            assert!(check_file_path(bad).is_err(), "{bad}");
        }
        assert!(check_branch("image-request/12").is_ok());
        for bad in ["", "-x", "a..b", "a b", "a~1", "x.lock"] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
        assert!(parse_oid(&"0".repeat(40)).is_ok_and(|o| o.is_zero()));
        assert!(parse_oid("abc").is_err());
    }
}
