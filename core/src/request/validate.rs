//! Checking a request: every problem at once, each with its field, line and
//! the text at fault, so that one edit of the issue can fix them all.
//!
//! The bot is stricter than the catalog. A catalog file is written and
//! reviewed by maintainers; an issue is written by anyone. So on top of the
//! catalog's format checks (`formats`), a request may not contain template
//! syntax, invisible or direction-changing characters, non-ASCII letters in
//! names (look-alikes such as Cyrillic `а`), pip options, URLs, markers or
//! conda channels, and the common ways of trying those get a message of
//! their own.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::Catalog;
use crate::formats;

use super::form::{self, Form};
use super::text;
use super::typosquat;
use super::{Flag, Limits, Problem, Request, Validated};

/// More problems than this in one field are summed up in one line: a pasted
/// file should not produce a thousand messages.
const MAX_PER_FIELD: usize = 20;

/// Longest environment name: an image name has at most 40 characters (see
/// the catalog's decoder), so that variant names stay within 63.
const MAX_NAME: usize = 40;

/// Dockerfile instructions: a line starting with one of them was meant to
/// end up in a Dockerfile.
const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Check an issue body against the form, the bot's rules and the catalog.
/// `issue` is the issue number (an image whose `issue:` is this number may
/// be replaced by the request); `author` is the login that opened it.
pub fn validate(
    body: &str,
    issue: u64,
    author: &str,
    catalog: &Catalog,
    limits: &Limits,
) -> Validated {
    if body.len() > limits.body_bytes {
        // Not parsed at all: nothing in it is worth the time.
        return Validated {
            request: None,
            problems: vec![Problem::new(
                "body",
                format!(
                    "is {} bytes; the limit is {}: shorten the lists or the text, or split the request",
                    body.len(),
                    limits.body_bytes
                ),
            )],
            flags: Vec::new(),
        };
    }
    let (form, problems) = form::parse_lenient(body);
    let mut c = Checker {
        problems,
        flags: Vec::new(),
        limits,
    };
    let bad = c.characters(&form);
    let slug = c.single("name", &form, &bad, |c, s| c.name(s));
    let based_on = c.single("based-on", &form, &bad, |c, s| c.based_on(catalog, s));
    let gpu = c.single("gpu", &form, &bad, |c, s| c.gpu(s));
    let course = c.single("course", &form, &bad, |c, s| c.course(s));
    let pip = c.list("pip", &form, &bad, Checker::pip);
    let apt = c.list("apt", &form, &bad, Checker::apt);
    let vscode = c.list("vscode", &form, &bad, Checker::vscode);
    let why = c.why(&form);
    if let Some(slug) = &slug {
        c.name_is_free(catalog, slug, issue);
        if based_on.as_deref() == Some(slug.as_str()) {
            c.problems.push(
                Problem::new(
                    form::label("based-on"),
                    "is the environment being requested; choose the environment to start from",
                )
                .at(1)
                .token(slug, true),
            );
        }
    }
    if let (Some(base), Some(true)) = (&based_on, gpu) {
        c.gpu_available(catalog, base);
    }
    let nothing_added = pip.as_ref().is_some_and(Vec::is_empty)
        && apt.as_ref().is_some_and(Vec::is_empty)
        && vscode.as_ref().is_some_and(Vec::is_empty)
        && form.get("course").is_empty();
    if nothing_added && !form.fields.is_empty() {
        c.problems.push(Problem::new(
            "body",
            "asks for nothing beyond the environment it is based on: list at least one package or extension, or a course or group that should see it",
        ));
    }
    let problems = cap(in_form_order(c.problems));
    let request = match (slug, based_on, gpu, course, pip, apt, vscode, why) {
        (
            Some(slug),
            Some(based_on),
            Some(gpu),
            Some(course),
            Some(pip),
            Some(apt),
            Some(vscode),
            Some(why),
        ) if problems.is_empty() => Some(Request {
            issue,
            slug,
            based_on,
            gpu,
            pip,
            apt,
            vscode,
            course,
            why,
            author: author.to_string(),
        }),
        _ => None,
    };
    Validated {
        request,
        problems,
        flags: c.flags,
    }
}

/// One entry of a list field: its line within the field and its text.
type Entry<'a> = (usize, &'a str);

struct Checker<'l> {
    problems: Vec<Problem>,
    flags: Vec<Flag>,
    limits: &'l Limits,
}

/// Lines already reported (bad characters or template syntax), by field id:
/// their entries are not checked again.
type Reported = BTreeMap<&'static str, BTreeSet<usize>>;

impl Checker<'_> {
    fn problem(&mut self, id: &str, line: usize, token: &str, message: impl Into<String>) {
        let ascii_only = id != "why";
        self.problems.push(
            Problem::new(form::label(id), message)
                .at(line)
                .token(token, ascii_only),
        );
    }

    /// Characters refused in every field, and template syntax: one problem
    /// per line, before anything else looks at the text.
    fn characters(&mut self, form: &Form) -> Reported {
        let mut bad = Reported::new();
        for (id, _, _) in form::FIELDS {
            for (i, line) in form.get(id).lines().enumerate() {
                let n = i + 1;
                let hidden = line
                    .char_indices()
                    .find_map(|(at, c)| text::hidden(c).map(|h| (at, c, h)));
                if let Some((at, c, kind)) = hidden {
                    let column = line[..at].chars().count() + 1;
                    self.problem(
                        id,
                        n,
                        line.trim(),
                        format!(
                            "contains {}, at character {column}: {}; delete it (retyping the line removes it)",
                            text::describe(c),
                            kind.what()
                        ),
                    );
                    bad.entry(id).or_default().insert(n);
                    continue;
                }
                if let Some((at, delimiter)) = text::template_syntax(line) {
                    let column = line[..at].chars().count() + 1;
                    self.problem(
                        id,
                        n,
                        line.trim(),
                        format!(
                            "contains template syntax {delimiter:?} at character {column}; a request is plain text, remove it"
                        ),
                    );
                    bad.entry(id).or_default().insert(n);
                }
            }
        }
        bad
    }

    /// Only ASCII in names: a look-alike letter would make a different name
    /// that reads the same.
    fn ascii(&mut self, id: &str, line: usize, token: &str) -> bool {
        match token.char_indices().find(|(_, c)| !c.is_ascii()) {
            None => true,
            Some((at, c)) => {
                let column = token[..at].chars().count() + 1;
                self.problem(
                    id,
                    line,
                    token,
                    format!(
                        "contains {}, at character {column}; only ASCII letters, digits and punctuation are allowed here (retype it on a plain keyboard layout)",
                        text::describe(c)
                    ),
                );
                false
            }
        }
    }

    fn too_long(&mut self, id: &str, line: usize, token: &str) -> bool {
        let n = token.chars().count();
        if n > self.limits.token_chars {
            self.problem(
                id,
                line,
                token,
                format!(
                    "is {n} characters long; the limit is {}",
                    self.limits.token_chars
                ),
            );
            return true;
        }
        false
    }

    /// A one-line field: `check` sees its trimmed value. `None` when the
    /// field is missing, empty while required, or wrong.
    fn single<T>(
        &mut self,
        id: &'static str,
        form: &Form,
        bad: &Reported,
        check: impl FnOnce(&mut Self, &str) -> Option<T>,
    ) -> Option<T> {
        let value = form.get(id);
        let required = form::FIELDS.iter().any(|(i, _, r)| *i == id && *r);
        let lines: Vec<&str> = value.lines().collect();
        let reported = bad.get(id).is_some_and(|b| !b.is_empty());
        if let Some((i, extra)) = lines
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, l)| !l.trim().is_empty())
        {
            let n = i + 1;
            if !bad.get(id).is_some_and(|b| b.contains(&n)) {
                let mut message = "is on another line; this field takes a single line".to_string();
                if instruction(extra).is_some() {
                    message.push_str(" (and a Dockerfile instruction has no place in a request: nothing from it is run)");
                }
                self.problem(id, n, extra.trim(), message);
            }
            return None;
        }
        let token = value.trim();
        if token.is_empty() {
            if form.has(id) && required {
                self.problems.push(Problem::new(
                    form::label(id),
                    "is required; edit the issue and fill it in",
                ));
            }
            return if required { None } else { check(self, "") };
        }
        if reported || !self.ascii(id, 1, token) || self.too_long(id, 1, token) {
            return None;
        }
        check(self, token)
    }

    fn name(&mut self, s: &str) -> Option<String> {
        if let Err(why) = formats::slug(s) {
            let hint = if s.chars().any(|c| c.is_ascii_uppercase()) {
                " (write it in lowercase)"
            } else {
                ""
            };
            self.problem("name", 1, s, format!("{why}{hint}"));
            return None;
        }
        if s.len() > MAX_NAME {
            self.problem(
                "name",
                1,
                s,
                format!(
                    "is {} characters long; an environment name has at most {MAX_NAME}",
                    s.len()
                ),
            );
            return None;
        }
        Some(s.to_string())
    }

    fn based_on(&mut self, catalog: &Catalog, s: &str) -> Option<String> {
        if catalog.image(s).is_some() {
            return Some(s.to_string());
        }
        let names: Vec<&str> = catalog.images.iter().map(|i| i.name.as_str()).collect();
        self.problem(
            "based-on",
            1,
            s,
            format!(
                "is not an environment of the catalog; choose one of the form's options ({})",
                quoted_list(&names, 20)
            ),
        );
        None
    }

    fn gpu(&mut self, s: &str) -> Option<bool> {
        if s.eq_ignore_ascii_case("yes") {
            Some(true)
        } else if s.eq_ignore_ascii_case("no") {
            Some(false)
        } else {
            self.problem("gpu", 1, s, "is not an answer to \"GPU needed\": Yes or No");
            None
        }
    }

    fn course(&mut self, s: &str) -> Option<Option<String>> {
        if s.is_empty() {
            return Some(None);
        }
        match formats::group(s) {
            Ok(()) => Some(Some(s.to_string())),
            Err(why) => {
                self.problem("course", 1, s, why);
                None
            }
        }
    }

    fn why(&mut self, form: &Form) -> Option<String> {
        let value = form.get("why");
        if value.trim().is_empty() {
            if form.has("why") {
                self.problems.push(Problem::new(
                    form::label("why"),
                    "is required: say what you will use the environment for, it helps the review",
                ));
            }
            return None;
        }
        let n = value.chars().count();
        if n > self.limits.why_chars {
            self.problems.push(Problem::new(
                form::label("why"),
                format!(
                    "is {n} characters long; the limit is {}: a few sentences are enough",
                    self.limits.why_chars
                ),
            ));
            return None;
        }
        Some(value.to_string())
    }

    /// A list field: one entry per line, optionally in one code fence, with
    /// optional `- ` bullets; blank lines and `#` comments are skipped. Each
    /// entry goes through `check`, which returns the value to keep and the
    /// key duplicates are found by.
    fn list(
        &mut self,
        id: &'static str,
        form: &Form,
        bad: &Reported,
        check: fn(&mut Self, usize, &str) -> Option<(String, String)>,
    ) -> Option<Vec<String>> {
        let value = form.get(id);
        let before = self.problems.len();
        let entries = self.entries(id, value);
        if entries.len() > self.limits.packages_per_field {
            self.problems.push(Problem::new(
                form::label(id),
                format!(
                    "has {} entries; the limit is {} per field: ask for what the course needs, or ask the maintainers about a bigger environment",
                    entries.len(),
                    self.limits.packages_per_field
                ),
            ));
            return None;
        }
        let mut out = Vec::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (line, token) in entries {
            if bad.get(id).is_some_and(|b| b.contains(&line))
                || !self.ascii(id, line, token)
                || self.too_long(id, line, token)
            {
                continue;
            }
            let Some((kept, key)) = check(self, line, token) else {
                continue;
            };
            if let Some(first) = seen.get(&key) {
                self.problem(
                    id,
                    line,
                    token,
                    format!("is listed twice (also on line {first}); list each once"),
                );
                continue;
            }
            seen.insert(key, line);
            out.push(kept);
        }
        let clean = self.problems.len() == before && !bad.contains_key(id);
        clean.then_some(out)
    }

    /// The entries of a list field, with their lines.
    fn entries<'v>(&mut self, id: &str, value: &'v str) -> Vec<Entry<'v>> {
        let lines: Vec<&str> = value.lines().collect();
        let mut range = 0..lines.len();
        if let Some((ch, len)) = lines.first().and_then(|l| fence(l.trim_start())) {
            match lines.iter().rposition(|l| closes(l.trim(), ch, len)) {
                Some(last) if last > 0 && lines[last + 1..].iter().all(|l| l.trim().is_empty()) => {
                    range = 1..last;
                }
                _ => {
                    self.problem(
                        id,
                        1,
                        lines[0].trim(),
                        "opens a code block that is not closed at the end; put the whole list in one ``` block, or use none",
                    );
                    range = 1..lines.len();
                }
            }
        }
        let mut out = Vec::new();
        let mut fence_reported = false;
        for i in range {
            let mut entry = lines[i].trim();
            if fence(entry).is_some() {
                if !fence_reported {
                    self.problem(
                        id,
                        i + 1,
                        entry,
                        "is a second code block; put the whole list in one ``` block, or use none",
                    );
                    fence_reported = true;
                }
                continue;
            }
            for bullet in ["- ", "* ", "+ "] {
                if let Some(rest) = entry.strip_prefix(bullet) {
                    entry = rest.trim_start();
                    break;
                }
            }
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            // A trailing comment, as in requirements files.
            if let Some(at) = entry
                .find([' ', '\t'])
                .and_then(|s| entry[s..].find('#').map(|h| s + h))
                && entry[..at].ends_with([' ', '\t'])
            {
                entry = entry[..at].trim_end();
            }
            out.push((i + 1, entry));
        }
        out
    }

    /// Refusals that pip, apt and Open VSX entries share; `None` when none applies.
    fn common(&mut self, id: &str, line: usize, token: &str) -> Option<()> {
        if let Some(word) = instruction(token) {
            self.problem(
                id,
                line,
                token,
                format!(
                    "looks like a Dockerfile instruction ({word}); this field takes package names only, one per line (nothing from a request is ever run)"
                ),
            );
            return Some(());
        }
        None
    }

    fn shell(&mut self, id: &str, line: usize, token: &str) -> Option<()> {
        if let Some(c) = token
            .chars()
            .find(|c| "|&$`\\'\"(){}<>!*?".contains(*c) && !(id == "pip" && "<>!*".contains(*c)))
        {
            self.problem(
                id,
                line,
                token,
                format!(
                    "contains the shell character {:?}; this field takes names only (nothing from a request is ever run)",
                    c.to_string()
                ),
            );
            return Some(());
        }
        None
    }

    fn several(&mut self, id: &str, line: usize, token: &str) -> Option<()> {
        let words: Vec<&str> = token
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
            .collect();
        let name_like = |w: &&str| {
            w.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
        };
        if words.len() > 1 && words.iter().all(name_like) {
            self.problem(
                id,
                line,
                token,
                format!(
                    "has {} names on one line; put each on its own line",
                    words.len()
                ),
            );
            return Some(());
        }
        None
    }

    fn pip(&mut self, line: usize, token: &str) -> Option<(String, String)> {
        const ID: &str = "pip";
        if self.common(ID, line, token).is_some() {
            return None;
        }
        if token.starts_with('-') {
            let option = token
                .split(|c: char| c.is_whitespace() || c == '=')
                .next()
                .unwrap_or(token);
            let why = match option {
                "-e" | "--editable" => {
                    "is an editable install (pip option -e); give the package name and version, e.g. \"numpy>=1.26\""
                }
                "-r" | "--requirement" | "-c" | "--constraint" => {
                    "refers to a requirements file (a pip option); list the packages themselves, one per line"
                }
                "-i" | "--index-url" | "--extra-index-url" | "-f" | "--find-links"
                | "--trusted-host" | "--no-index" | "--pre" => {
                    "is a pip option that changes where or what pip installs; packages come from PyPI by name, options are not accepted"
                }
                _ => {
                    "is a pip option; only package names with optional version specifiers are accepted"
                }
            };
            self.problem(ID, line, token, why);
            return None;
        }
        if let Some((channel, package)) = token.split_once("::") {
            let hint = if formats::parse_requirement(package).is_ok() {
                format!("; to ask for the PyPI package, write {package:?}")
            } else {
                String::new()
            };
            self.problem(
                ID,
                line,
                token,
                format!(
                    "is conda's channel syntax (channel {channel:?}); this field takes PyPI package names{hint}"
                ),
            );
            return None;
        }
        if let Some((_, after)) = token.split_once(';') {
            let command_like = after.contains(['|', '&', '$', '`'])
                || (after.trim().contains(' ') && !after.contains(['=', '<', '>']));
            let message = if command_like {
                "has a \";\" followed by what looks like a shell command; only a package name and version specifiers are accepted (nothing from a request is ever run)"
            } else {
                "has an environment marker (after \";\"); markers are not accepted: every environment is Linux with one Python"
            };
            self.problem(ID, line, token, message);
            return None;
        }
        if token.contains('@') {
            self.problem(
                ID,
                line,
                token,
                "is a direct reference (name @ URL); give a PyPI name with optional version specifiers instead, e.g. \"torch>=2.3\"",
            );
            return None;
        }
        if token.contains("://") || token.starts_with(['.', '/', '~']) || token.contains('/') {
            self.problem(
                ID,
                line,
                token,
                "is a URL or a path; give a PyPI name with optional version specifiers instead, e.g. \"torch>=2.3\"",
            );
            return None;
        }
        if self.shell(ID, line, token).is_some() {
            return None;
        }
        match formats::parse_requirement(token) {
            Ok(req) => {
                if let Some(popular) = typosquat::suspects(&req.name) {
                    self.flags.push(Flag {
                        field: form::label(ID).to_string(),
                        token: req.name.clone(),
                        message: format!(
                            "is one typo away from the popular project {popular:?}; check the spelling: a look-alike name is a common way to slip in malware"
                        ),
                    });
                }
                Some((req.to_line(), req.name))
            }
            Err(why) => {
                if self.several(ID, line, token).is_none() {
                    self.problem(ID, line, token, why);
                }
                None
            }
        }
    }

    fn apt(&mut self, line: usize, token: &str) -> Option<(String, String)> {
        const ID: &str = "apt";
        if self.common(ID, line, token).is_some() {
            return None;
        }
        if token.starts_with('-') {
            self.problem(
                ID,
                line,
                token,
                "is an apt option (options can run commands through APT's hooks); only package names are accepted, e.g. \"libgl1\"",
            );
            return None;
        }
        if token.contains("://") || token.contains('/') {
            self.problem(
                ID,
                line,
                token,
                "is a URL, a path or a release selector; give the Debian package name only, e.g. \"libgl1\"",
            );
            return None;
        }
        if self.shell(ID, line, token).is_some() || self.several(ID, line, token).is_some() {
            return None;
        }
        match formats::apt_package(token) {
            Ok(()) => {
                let name = token.split('=').next().unwrap_or(token).to_string();
                Some((token.to_string(), name))
            }
            Err(why) => {
                let hint = if token.chars().any(|c| c.is_ascii_uppercase()) {
                    " (Debian names are lowercase)"
                } else {
                    ""
                };
                self.problem(ID, line, token, format!("{why}{hint}"));
                None
            }
        }
    }

    fn vscode(&mut self, line: usize, token: &str) -> Option<(String, String)> {
        const ID: &str = "vscode";
        if self.common(ID, line, token).is_some() {
            return None;
        }
        if token.contains("://") {
            let id = token
                .split_once("itemName=")
                .map(|(_, rest)| rest.split(['&', '#']).next().unwrap_or(rest))
                .filter(|id| formats::openvsx_id(id).is_ok());
            let hint = match id {
                Some(id) => format!("; the id in this link is {id:?}"),
                None => String::new(),
            };
            self.problem(
                ID,
                line,
                token,
                format!("is a link; give the extension id (publisher.name, e.g. \"ms-python.python\"){hint}"),
            );
            return None;
        }
        if self.shell(ID, line, token).is_some() || self.several(ID, line, token).is_some() {
            return None;
        }
        match formats::openvsx_id(token) {
            Ok(()) => {
                let key = token
                    .split('@')
                    .next()
                    .unwrap_or(token)
                    .to_ascii_lowercase();
                Some((token.to_string(), key))
            }
            Err(why) => {
                self.problem(ID, line, token, why);
                None
            }
        }
    }

    /// The new image must not take a name, repository or profile slug of
    /// the catalog, unless it is this issue's own image being changed.
    fn name_is_free(&mut self, catalog: &Catalog, slug: &str, issue: u64) {
        let taken = catalog.images.iter().find(|i| {
            (i.name == slug || i.repository == slug || i.profile.slug == slug)
                && i.issue != Some(issue)
        });
        if let Some(image) = taken {
            let what = if image.name == slug {
                format!("the environment {:?}", image.name)
            } else if image.repository == slug {
                format!(
                    "the image family {:?} (its variants include {:?})",
                    image.repository, image.name
                )
            } else {
                format!("the spawner profile of {:?}", image.name)
            };
            self.problem(
                "name",
                1,
                slug,
                format!("is already taken by {what}; choose another name"),
            );
        }
    }

    /// A GPU request needs CUDA somewhere under the chosen environment.
    fn gpu_available(&mut self, catalog: &Catalog, based_on: &str) {
        let Some(image) = catalog.image(based_on) else {
            return;
        };
        let Some(root) = catalog.root_base(image) else {
            return;
        };
        if root.cuda.is_some() {
            return;
        }
        let has_cuda = |name: &str| {
            catalog
                .image(name)
                .and_then(|i| catalog.root_base(i))
                .is_some_and(|b| b.cuda.is_some())
        };
        let preferred = based_on
            .strip_suffix("-cpu")
            .map(|stem| format!("{stem}-cuda"))
            .filter(|n| has_cuda(n));
        let suggestion = preferred.or_else(|| {
            catalog
                .images
                .iter()
                .filter(|i| i.repository == image.repository && has_cuda(&i.name))
                .map(|i| i.name.clone())
                .next()
        });
        let hint = match suggestion {
            Some(s) => format!("choose {s:?} under Based on, or answer No"),
            None => "choose an environment with CUDA under Based on, or answer No".to_string(),
        };
        self.problem(
            "gpu",
            1,
            "Yes",
            format!(
                "needs CUDA, but {based_on:?} is built without it (it starts from {:?}); {hint}",
                root.image
            ),
        );
    }
}

/// The Dockerfile instruction a line starts with (`RUN curl …`).
fn instruction(line: &str) -> Option<&'static str> {
    let line = line.trim_start();
    let word = line.split_whitespace().next()?;
    let found = INSTRUCTIONS.iter().find(|i| **i == word)?;
    (line.len() > word.len()).then_some(*found)
}

fn fence(line: &str) -> Option<(char, usize)> {
    let ch = line.chars().next().filter(|c| matches!(c, '`' | '~'))?;
    let len = line.chars().take_while(|&c| c == ch).count();
    (len >= 3).then_some((ch, len))
}

fn closes(line: &str, ch: char, len: usize) -> bool {
    let n = line.chars().take_while(|&c| c == ch).count();
    n >= len && line[n..].trim().is_empty()
}

/// `"a", "b", "c" and 4 more`.
fn quoted_list(names: &[&str], max: usize) -> String {
    let mut s: Vec<String> = names.iter().take(max).map(|n| format!("{n:?}")).collect();
    if names.len() > max {
        s.push(format!("{} more", names.len() - max));
    }
    s.join(", ")
}

/// Problems in the order of the form (the issue as a whole first), by line
/// within a field, so the comment reads top to bottom like the issue.
fn in_form_order(mut problems: Vec<Problem>) -> Vec<Problem> {
    let rank = |field: &str| {
        if field == "body" {
            return 0;
        }
        form::FIELDS
            .iter()
            .position(|(_, label, _)| *label == field)
            .map_or(usize::MAX, |i| i + 1)
    };
    problems.sort_by_key(|p| (rank(&p.field), p.line));
    problems
}

/// At most [`MAX_PER_FIELD`] problems per field, the rest summed up.
fn cap(problems: Vec<Problem>) -> Vec<Problem> {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for p in problems {
        let n = count.entry(p.field.clone()).or_default();
        *n += 1;
        if *n <= MAX_PER_FIELD {
            out.push(p);
        }
    }
    for (field, n) in count {
        if n > MAX_PER_FIELD {
            let at = out
                .iter()
                .rposition(|p| p.field == field)
                .map_or(out.len(), |i| i + 1);
            out.insert(
                at,
                Problem::new(
                    &field,
                    format!(
                        "has {} more problems like these; fix the ones above and I will list the rest",
                        n - MAX_PER_FIELD
                    ),
                ),
            );
        }
    }
    out
}
