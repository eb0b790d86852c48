//! The work clone against real repositories: a bare "GitHub" repository in
//! a temporary folder, the hub's clone made by `labforge_hub::git`, and a
//! second clone driven by the `git` command line playing the maintainer.

use std::path::{Path, PathBuf};
use std::process::Command;

use git2::{FileMode, Oid, Repository, Signature};
use labforge_hub::git::{Author, GitError, WorkClone};

const CATALOG: &str = "catalog/catalog.yaml";
const IMAGE_A: &str = "catalog/images/a.yaml";
const NEW_IMAGE: &str = "catalog/images/torch-lab.yaml";
const BRANCH: &str = "image-request/7";
const ZERO: &str = "0000000000000000000000000000000000000000";

struct Remote {
    dir: tempfile::TempDir,
    bare: PathBuf,
}

impl Remote {
    /// A bare repository with one commit on `main` (HEAD → main).
    fn seed() -> Remote {
        let dir = tempfile::tempdir().expect("tempdir");
        let bare = dir.path().join("catalog.git");
        let repo = Repository::init_bare(&bare).expect("init bare");
        let catalog = repo.blob(b"registry: example.org/lab\n").expect("blob");
        let image = repo.blob(b"name: a\nfrom: base\n").expect("blob");
        let empty = repo
            .treebuilder(None)
            .expect("treebuilder")
            .write()
            .expect("tree");
        let empty = repo.find_tree(empty).expect("empty tree");
        let tree = git2::build::TreeUpdateBuilder::new()
            .upsert(CATALOG, catalog, FileMode::Blob)
            .upsert(IMAGE_A, image, FileMode::Blob)
            .create_updated(&repo, &empty)
            .expect("seed tree");
        let tree = repo.find_tree(tree).expect("tree");
        let who = Signature::now("Seed", "seed@example.org").expect("signature");
        repo.commit(Some("refs/heads/main"), &who, &who, "seed", &tree, &[])
            .expect("seed commit");
        repo.set_head("refs/heads/main").expect("HEAD → main");
        Remote { dir, bare }
    }

    fn url(&self) -> String {
        self.bare.display().to_string()
    }

    fn tip(&self, branch: &str) -> Option<String> {
        let repo = Repository::open_bare(&self.bare).expect("open bare");
        repo.refname_to_id(&format!("refs/heads/{branch}"))
            .ok()
            .map(|o| o.to_string())
    }

    fn show(&self, rev: &str, path: &str) -> String {
        git(&self.bare, &["show", &format!("{rev}:{path}")])
    }

    /// A maintainer's clone, made with the git command line.
    fn maintainer(&self) -> PathBuf {
        let work = self.dir.path().join("maintainer");
        if !work.exists() {
            git(self.dir.path(), &["clone", "-q", &self.url(), "maintainer"]);
        } else {
            git(&work, &["fetch", "-q", "origin"]);
        }
        work
    }

    /// Make a folder for the hub's clone (not created).
    fn hub_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Run git with a fixed identity and no user configuration; stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Maintainer")
        .env("GIT_AUTHOR_EMAIL", "maintainer@example.org")
        .env("GIT_COMMITTER_NAME", "Maintainer")
        .env("GIT_COMMITTER_EMAIL", "maintainer@example.org")
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

fn bot() -> Author {
    Author {
        name: "labforge-bot".to_owned(),
        email: "bot@example.org".to_owned(),
    }
}

fn commit(clone: &WorkClone, contents: &str) -> labforge_hub::git::Committed {
    clone
        .commit_file(
            BRANCH,
            "main",
            NEW_IMAGE,
            contents.as_bytes(),
            "Add torch-lab (#7)",
            &bot(),
        )
        .expect("commit_file")
}

fn status(dir: &Path) -> String {
    git(dir, &["status", "--porcelain", "--untracked-files=no"])
}

fn head(dir: &Path) -> String {
    git(dir, &["rev-parse", "HEAD"]).trim().to_owned()
}

fn assert_send<T: Send>() {}

#[test]
fn work_clone_is_send() {
    assert_send::<WorkClone>();
}

#[test]
fn clones_an_empty_folder_then_opens_it_again() {
    let remote = Remote::seed();
    let path = remote.hub_dir("hub");
    let clone = WorkClone::open_or_clone(&remote.url(), &path, None).expect("clone");
    assert_eq!(
        std::fs::read_to_string(path.join(CATALOG)).expect("catalog in the work tree"),
        "registry: example.org/lab\n"
    );
    assert_eq!(clone.default_branch().expect("default branch"), "main");
    assert_eq!(clone.head_of("main").expect("head_of"), remote.tip("main"));
    assert_eq!(clone.head_of("nope").expect("head_of"), None);
    assert_eq!(
        clone.path().canonicalize().expect("canonical"),
        path.canonicalize().expect("canonical")
    );
    drop(clone);

    // Other spellings of the same address open the same clone.
    for url in [
        remote.url(),
        format!("{}/", remote.url()),
        format!("file://{}", remote.url()),
        remote.url().trim_end_matches(".git").to_owned(),
    ] {
        let again = WorkClone::open_or_clone(&url, &path, None)
            .unwrap_or_else(|e| panic!("open with {url}: {e}"));
        assert_eq!(again.head_of("main").expect("head_of"), remote.tip("main"));
    }

    // An existing but empty folder is cloned into as well.
    let empty = remote.hub_dir("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    WorkClone::open_or_clone(&remote.url(), &empty, None).expect("clone into empty folder");
    assert!(empty.join(IMAGE_A).is_file());
}

#[test]
fn refuses_a_clone_of_another_repository() {
    let remote = Remote::seed();
    let other = Remote::seed();
    let path = remote.hub_dir("hub");
    WorkClone::open_or_clone(&remote.url(), &path, None).expect("clone");
    let err = WorkClone::open_or_clone(&other.url(), &path, None).expect_err("other origin");
    assert!(matches!(err, GitError::OtherOrigin { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&other.url()), "{message}");
    assert!(message.contains(&remote.url()), "{message}");
}

#[test]
fn refuses_a_folder_that_holds_other_files() {
    let remote = Remote::seed();
    let path = remote.hub_dir("busy");
    std::fs::create_dir(&path).expect("mkdir");
    std::fs::write(path.join("notes.txt"), "mine").expect("write");
    let err = WorkClone::open_or_clone(&remote.url(), &path, None).expect_err("not a repository");
    assert!(matches!(err, GitError::NotARepository { .. }), "{err:?}");
    assert_eq!(
        std::fs::read_to_string(path.join("notes.txt")).expect("kept"),
        "mine"
    );
    assert!(!path.join(".git").exists());
}

#[test]
fn a_token_never_shows_in_errors_or_on_disk() {
    let remote = Remote::seed();
    let secret = "ghs_S3cretT0kenValue";
    let err = WorkClone::open_or_clone(
        &format!("https://x-access-token:{secret}@github.com/o/r.git"),
        &remote.hub_dir("a"),
        None,
    )
    .expect_err("password in the address");
    assert!(matches!(err, GitError::CredentialsInUrl { .. }), "{err:?}");
    assert!(!err.to_string().contains(secret), "{err}");

    // Nothing listens on port 1: the clone fails before any credentials.
    let path = remote.hub_dir("b");
    let err = WorkClone::open_or_clone("https://127.0.0.1:1/o/r.git", &path, Some(secret))
        .expect_err("unreachable");
    assert!(matches!(err, GitError::Remote { .. }), "{err:?}");
    let message = err.to_string();
    assert!(!message.contains(secret), "{message}");
    assert!(!format!("{err:?}").contains(secret));
    assert!(message.contains("127.0.0.1:1"), "{message}");
    if path.join(".git/config").exists() {
        let config = std::fs::read_to_string(path.join(".git/config")).expect("config");
        assert!(!config.contains(secret), "{config}");
    }

    // A clone whose origin carries a password is refused, redacted.
    let path = remote.hub_dir("d");
    WorkClone::open_or_clone(&remote.url(), &path, None).expect("clone");
    git(
        &path,
        &[
            "remote",
            "set-url",
            "origin",
            &format!("https://u:{secret}@github.com/o/r"),
        ],
    );
    let err = WorkClone::open_or_clone("https://github.com/o/r", &path, Some(secret))
        .expect_err("password in the origin");
    assert!(
        matches!(err, GitError::CredentialsInOrigin { .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains(secret), "{err}");

    // A local clone given a token keeps it out of the configuration.
    let path = remote.hub_dir("c");
    let clone = WorkClone::open_or_clone(&remote.url(), &path, Some(secret)).expect("clone");
    assert!(!format!("{clone:?}").contains(secret));
    let config = std::fs::read_to_string(path.join(".git/config")).expect("config");
    assert!(!config.contains(secret), "{config}");
}

#[test]
fn commit_and_push_propose_one_commit_without_touching_the_work_tree() {
    let remote = Remote::seed();
    let path = remote.hub_dir("hub");
    let clone = WorkClone::open_or_clone(&remote.url(), &path, None).expect("clone");
    let main = remote.tip("main").expect("main");
    let index_before = std::fs::read(path.join(".git/index")).expect("index");
    let head_before = head(&path);

    let first = commit(&clone, "name: torch-lab\n");
    assert!(first.created);
    assert!(!first.in_base);
    // The work tree, the index and HEAD are as they were.
    assert_eq!(status(&path), "");
    assert!(!path.join(NEW_IMAGE).exists());
    assert_eq!(
        std::fs::read(path.join(".git/index")).expect("index"),
        index_before
    );
    assert_eq!(head(&path), head_before);
    // Nothing on the remote before the push.
    assert_eq!(remote.tip(BRANCH), None);

    clone.push(BRANCH).expect("push");
    assert_eq!(remote.tip(BRANCH), Some(first.oid.clone()));
    assert_eq!(
        clone.head_of(BRANCH).expect("head_of"),
        Some(first.oid.clone())
    );
    assert_eq!(remote.show(BRANCH, NEW_IMAGE), "name: torch-lab\n");
    assert_eq!(remote.show(BRANCH, IMAGE_A), remote.show("main", IMAGE_A));
    let log = git(&remote.bare, &["rev-list", &format!("main..{BRANCH}")]);
    assert_eq!(log.lines().collect::<Vec<_>>(), [first.oid.as_str()]);
    assert_eq!(
        git(&remote.bare, &["rev-parse", &format!("{BRANCH}^")]).trim(),
        main
    );
    assert_eq!(
        git(
            &remote.bare,
            &["log", "-1", "--format=%an <%ae>|%s", BRANCH]
        )
        .trim(),
        "labforge-bot <bot@example.org>|Add torch-lab (#7)"
    );
    assert_eq!(
        git(&remote.bare, &["diff", "--name-only", "main", BRANCH]).trim(),
        NEW_IMAGE
    );

    // The same request again: nothing new, and the push changes nothing.
    let again = commit(&clone, "name: torch-lab\n");
    assert_eq!(
        (again.created, again.oid.as_str()),
        (false, first.oid.as_str())
    );
    clone.push(BRANCH).expect("no-op push");
    assert_eq!(remote.tip(BRANCH), Some(first.oid.clone()));

    // Edited request: a second commit on top of the first.
    let second = commit(&clone, "name: torch-lab\ngpu: true\n");
    assert!(second.created);
    assert_ne!(second.oid, first.oid);
    clone.push(BRANCH).expect("push the edit");
    assert_eq!(remote.tip(BRANCH), Some(second.oid.clone()));
    assert_eq!(
        git(&remote.bare, &["rev-parse", &format!("{BRANCH}^")]).trim(),
        first.oid
    );
    assert_eq!(
        remote.show(BRANCH, NEW_IMAGE),
        "name: torch-lab\ngpu: true\n"
    );
    assert_eq!(status(&path), "");
    assert!(!path.join(NEW_IMAGE).exists());
}

#[test]
fn content_already_on_the_base_proposes_nothing() {
    let remote = Remote::seed();
    let clone =
        WorkClone::open_or_clone(&remote.url(), &remote.hub_dir("hub"), None).expect("clone");
    // An earlier attempt left a local branch behind.
    commit(&clone, "name: torch-lab\n");
    let committed = clone
        .commit_file(
            BRANCH,
            "main",
            IMAGE_A,
            b"name: a\nfrom: base\n",
            "same",
            &bot(),
        )
        .expect("commit_file");
    assert_eq!(
        (committed.created, committed.in_base),
        (false, true),
        "{committed:?}"
    );
    assert_eq!(Some(committed.oid), remote.tip("main"));
    let err = clone.push(BRANCH).expect_err("no local branch was made");
    assert!(matches!(err, GitError::NotFound { .. }), "{err:?}");
    assert_eq!(remote.tip(BRANCH), None);
}

#[test]
fn commit_file_rejects_bad_input_and_the_checked_out_branch() {
    let remote = Remote::seed();
    let clone =
        WorkClone::open_or_clone(&remote.url(), &remote.hub_dir("hub"), None).expect("clone");
    for (branch, base, path) in [
        (BRANCH, "main", "../escape.yaml"),
        (BRANCH, "main", ".git/hooks/post-checkout"),
        ("bad..name", "main", NEW_IMAGE),
    ] {
        let err = clone
            .commit_file(branch, base, path, b"x", "m", &bot())
            .expect_err("invalid");
        assert!(matches!(err, GitError::Invalid { .. }), "{err:?}");
    }
    let err = clone
        .commit_file(BRANCH, "trunk", NEW_IMAGE, b"x", "m", &bot())
        .expect_err("no such base");
    assert!(err.to_string().contains("origin/trunk"), "{err}");
    let err = clone
        .commit_file("main", "main", NEW_IMAGE, b"x", "m", &bot())
        .expect_err("checked out");
    assert!(matches!(err, GitError::CheckedOut { .. }), "{err:?}");
    assert_eq!(remote.tip("main"), Some(head(clone.path())));
}

#[test]
fn a_push_after_someone_else_pushed_is_refused_and_their_commit_kept() {
    let remote = Remote::seed();
    let path = remote.hub_dir("hub");
    let clone = WorkClone::open_or_clone(&remote.url(), &path, None).expect("clone");
    let first = commit(&clone, "name: torch-lab\n");
    clone.push(BRANCH).expect("push");

    // A maintainer adds a commit to the request branch.
    let work = remote.maintainer();
    git(&work, &["checkout", "-q", BRANCH]);
    std::fs::write(work.join("catalog/images/torch-lab.md"), "notes\n").expect("write");
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "notes"]);
    git(&work, &["push", "-q", "origin", BRANCH]);
    let theirs = remote.tip(BRANCH).expect("their tip");
    assert_ne!(theirs, first.oid);

    // The bot, not having fetched, edits the request: its push is refused.
    let stale = commit(&clone, "name: torch-lab\ngpu: true\n");
    assert!(stale.created);
    let err = clone.push(BRANCH).expect_err("someone else pushed");
    assert!(
        matches!(
            err,
            GitError::Stale { .. } | GitError::NonFastForward { .. }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("someone else pushed"), "{message}");
    assert!(message.contains("fetch and try again"), "{message}");
    assert!(message.contains(BRANCH), "{message}");
    assert_eq!(remote.tip(BRANCH), Some(theirs.clone()));

    // After a fetch the edit goes on top of the maintainer's commit.
    clone.fetch().expect("fetch");
    let edit = commit(&clone, "name: torch-lab\ngpu: true\n");
    assert!(edit.created);
    clone.push(BRANCH).expect("push after fetch");
    assert_eq!(remote.tip(BRANCH), Some(edit.oid.clone()));
    assert_eq!(
        git(&remote.bare, &["rev-parse", &format!("{BRANCH}^")]).trim(),
        theirs
    );
    assert_eq!(
        remote.show(BRANCH, "catalog/images/torch-lab.md"),
        "notes\n"
    );
}

#[test]
fn a_force_pushed_remote_branch_is_refused_as_not_a_fast_forward() {
    let remote = Remote::seed();
    let clone =
        WorkClone::open_or_clone(&remote.url(), &remote.hub_dir("hub"), None).expect("clone");
    commit(&clone, "name: torch-lab\n");
    clone.push(BRANCH).expect("push");
    clone.fetch().expect("fetch");
    // The remote branch is rewritten to an unrelated history the bot has
    // fetched: the lease holds, but ours does not descend from it.
    let work = remote.maintainer();
    git(&work, &["checkout", "-q", "-B", BRANCH, "origin/main"]);
    std::fs::write(work.join(NEW_IMAGE), "name: torch-lab\nby: maintainer\n").expect("write");
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "rewrite"]);
    git(&work, &["push", "-q", "--force", "origin", BRANCH]);
    let theirs = remote.tip(BRANCH).expect("tip");
    clone.fetch().expect("fetch");
    // Move the local branch back to something that does not contain theirs.
    let repo = Repository::open(clone.path()).expect("open");
    let main = repo
        .refname_to_id("refs/remotes/origin/main")
        .expect("origin/main");
    repo.reference(&format!("refs/heads/{BRANCH}"), main, true, "test")
        .expect("reset local branch");
    let err = clone.push(BRANCH).expect_err("not a fast-forward");
    assert!(matches!(err, GitError::NonFastForward { .. }), "{err:?}");
    assert!(err.to_string().contains("fetch and try again"), "{err}");
    assert_eq!(remote.tip(BRANCH), Some(theirs));
}

#[test]
fn a_ref_the_remote_fails_to_update_is_an_error() {
    let remote = Remote::seed();
    let clone =
        WorkClone::open_or_clone(&remote.url(), &remote.hub_dir("hub"), None).expect("clone");
    // A stale lock on the remote branch: the objects arrive, the reference
    // update fails and is reported for that reference only.
    let lock = remote.bare.join(format!("refs/heads/{BRANCH}.lock"));
    std::fs::create_dir_all(lock.parent().expect("refs dir")).expect("mkdir");
    std::fs::write(&lock, "").expect("lock");
    commit(&clone, "name: torch-lab\n");
    let err = clone.push(BRANCH).expect_err("rejected reference");
    assert!(matches!(err, GitError::Rejected { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("refs/heads/{BRANCH}:")),
        "{message}"
    );
    assert!(message.contains("lock"), "{message}");
    assert_eq!(remote.tip(BRANCH), None);
    assert_eq!(clone.head_of(BRANCH).expect("head_of"), None);

    std::fs::remove_file(&lock).expect("unlock");
    clone.push(BRANCH).expect("push once the lock is gone");
    assert!(remote.tip(BRANCH).is_some());
}

/// The maintainer fast-forwards main to the request branch and pushes.
fn merge_request(remote: &Remote) -> PathBuf {
    let work = remote.maintainer();
    git(&work, &["checkout", "-q", "main"]);
    git(
        &work,
        &["merge", "-q", "--ff-only", &format!("origin/{BRANCH}")],
    );
    git(&work, &["push", "-q", "origin", "main"]);
    work
}

#[test]
fn after_a_merge_fetch_reports_the_changed_file_and_checkout_brings_it() {
    let remote = Remote::seed();
    let path = remote.hub_dir("hub");
    let clone = WorkClone::open_or_clone(&remote.url(), &path, None).expect("clone");
    commit(&clone, "name: torch-lab\n");
    clone.push(BRANCH).expect("push");
    merge_request(&remote);

    let before = clone.head_of("main").expect("head_of").expect("main");
    clone.fetch().expect("fetch");
    let after = clone.head_of("main").expect("head_of").expect("main");
    assert_ne!(before, after);
    assert_eq!(Some(after.clone()), remote.tip("main"));
    assert_eq!(
        clone.changed_paths(&before, &after).expect("changed_paths"),
        [NEW_IMAGE]
    );
    assert_eq!(
        clone.changed_paths(ZERO, &after).expect("changed_paths"),
        [CATALOG, IMAGE_A, NEW_IMAGE]
    );

    // The state folder is untracked and must survive.
    std::fs::create_dir_all(path.join(".labforge")).expect("mkdir");
    std::fs::write(path.join(".labforge/state"), "db").expect("state");
    clone.checkout(&after).expect("checkout");
    assert_eq!(
        std::fs::read_to_string(path.join(NEW_IMAGE)).expect("new file in the work tree"),
        "name: torch-lab\n"
    );
    assert_eq!(
        std::fs::read_to_string(path.join(".labforge/state")).expect("state kept"),
        "db"
    );
    assert_eq!(head(&path), after);
    assert_eq!(status(&path), "");
    assert_eq!(clone.default_branch().expect("default branch"), "main");
    // Checking out where HEAD already is changes nothing.
    clone.checkout(&after).expect("checkout again");
    assert_eq!(head(&path), after);
}

#[test]
fn checkout_refuses_over_local_changes_and_keeps_them() {
    let remote = Remote::seed();
    let path = remote.hub_dir("hub");
    let clone = WorkClone::open_or_clone(&remote.url(), &path, None).expect("clone");

    // main moves on: a.yaml changes.
    let work = remote.maintainer();
    std::fs::write(work.join(IMAGE_A), "name: a\nfrom: base2\n").expect("write");
    git(&work, &["commit", "-q", "-am", "a: new base"]);
    git(&work, &["push", "-q", "origin", "main"]);
    clone.fetch().expect("fetch");
    let after = clone.head_of("main").expect("head_of").expect("main");
    let before = head(&path);

    // Someone edited the same file in the hub's work tree.
    std::fs::write(path.join(IMAGE_A), "name: a\nfrom: local\n").expect("local edit");
    let err = clone.checkout(&after).expect_err("local changes");
    assert!(matches!(err, GitError::LocalChanges { .. }), "{err:?}");
    assert!(err.to_string().contains(IMAGE_A), "{err}");
    assert_eq!(
        std::fs::read_to_string(path.join(IMAGE_A)).expect("read"),
        "name: a\nfrom: local\n"
    );
    assert_eq!(head(&path), before);

    // An edit of a file the new commit leaves alone is refused too: the
    // hub must serve exactly a reviewed commit.
    git(&path, &["checkout", "-q", "--", IMAGE_A]);
    std::fs::write(path.join(CATALOG), "registry: elsewhere\n").expect("local edit");
    let err = clone.checkout(&after).expect_err("local changes");
    assert!(err.to_string().contains(CATALOG), "{err}");
    assert!(!err.to_string().contains(IMAGE_A), "{err}");
    assert_eq!(
        std::fs::read_to_string(path.join(CATALOG)).expect("read"),
        "registry: elsewhere\n"
    );
    assert_eq!(head(&path), before);

    // Cleaned up, the checkout goes through.
    git(&path, &["checkout", "-q", "--", CATALOG]);
    clone.checkout(&after).expect("checkout");
    assert_eq!(
        std::fs::read_to_string(path.join(IMAGE_A)).expect("read"),
        "name: a\nfrom: base2\n"
    );
}

#[test]
fn checkout_refuses_to_overwrite_an_untracked_file_in_the_way() {
    let remote = Remote::seed();
    let path = remote.hub_dir("hub");
    let clone = WorkClone::open_or_clone(&remote.url(), &path, None).expect("clone");
    commit(&clone, "name: torch-lab\n");
    clone.push(BRANCH).expect("push");
    merge_request(&remote);
    clone.fetch().expect("fetch");
    let after = clone.head_of("main").expect("head_of").expect("main");
    std::fs::write(path.join(NEW_IMAGE), "hand-made\n").expect("write");
    let err = clone
        .checkout(&after)
        .expect_err("untracked file in the way");
    assert!(matches!(err, GitError::InTheWay { .. }), "{err:?}");
    assert!(err.to_string().contains(NEW_IMAGE), "{err}");
    assert_eq!(
        std::fs::read_to_string(path.join(NEW_IMAGE)).expect("read"),
        "hand-made\n"
    );
}

#[test]
fn changed_paths_reports_both_sides_of_a_rename() {
    let remote = Remote::seed();
    let clone =
        WorkClone::open_or_clone(&remote.url(), &remote.hub_dir("hub"), None).expect("clone");
    let before = clone.head_of("main").expect("head_of").expect("main");
    let work = remote.maintainer();
    git(&work, &["mv", IMAGE_A, "catalog/images/b.yaml"]);
    git(&work, &["commit", "-q", "-m", "rename"]);
    git(&work, &["push", "-q", "origin", "main"]);
    clone.fetch().expect("fetch");
    let after = clone.head_of("main").expect("head_of").expect("main");
    assert_eq!(
        clone.changed_paths(&before, &after).expect("changed_paths"),
        [IMAGE_A, "catalog/images/b.yaml"]
    );
    let err = clone
        .changed_paths("not-an-oid", &after)
        .expect_err("bad id");
    assert!(matches!(err, GitError::Invalid { .. }), "{err:?}");
    let unknown = Oid::hash_object(git2::ObjectType::Blob, b"nowhere").expect("hash");
    let err = clone
        .changed_paths(&before, &unknown.to_string())
        .expect_err("unknown commit");
    assert!(err.to_string().contains("fetch first"), "{err}");
}

#[test]
fn fetch_prunes_deleted_branches_and_follows_the_remote_default_branch() {
    let remote = Remote::seed();
    let clone =
        WorkClone::open_or_clone(&remote.url(), &remote.hub_dir("hub"), None).expect("clone");
    commit(&clone, "name: torch-lab\n");
    clone.push(BRANCH).expect("push");
    assert!(clone.head_of(BRANCH).expect("head_of").is_some());

    git(&remote.bare, &["branch", "-D", BRANCH]);
    git(&remote.bare, &["branch", "trunk", "main"]);
    git(&remote.bare, &["symbolic-ref", "HEAD", "refs/heads/trunk"]);
    clone.fetch().expect("fetch");
    assert_eq!(clone.head_of(BRANCH).expect("head_of"), None);
    assert_eq!(clone.default_branch().expect("default branch"), "trunk");
}
