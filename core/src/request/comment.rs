//! The markdown of every comment and pull request the bot writes.
//!
//! Every comment starts with a marker (`<!-- labforge:<kind> -->`) so that
//! the bot finds and updates its own comment instead of adding another.
//!
//! Text from the issue is hostile: it is only ever shown inside code spans
//! or code blocks whose fences are longer than any backtick run in it, so it
//! cannot close them, mention anyone (`@team`), link, embed images or raw
//! HTML. The bot's own sentences may quote values as `"…"`; those quotes
//! become code spans too, and the rest of the sentence is escaped.

use super::entry::{self, Preview};
use super::{Flag, Problem, Request};

/// How every bot comment starts.
pub const MARK_PREFIX: &str = "<!-- labforge:";

/// Problems shown in one comment; the rest are counted.
const MAX_PROBLEMS: usize = 50;
/// Packages of one kind listed in a comment; the rest are counted (the
/// catalog file below lists them all).
const MAX_LISTED: usize = 30;
/// GitHub refuses comments over 65,536 characters; stay clear of it.
const MAX_COMMENT: usize = 60_000;

/// The first line of a comment of `kind` ("request", "result", "command").
pub fn marker(kind: &str) -> String {
    format!("{MARK_PREFIX}{kind} -->")
}

/// The kind of a bot comment, from its marker.
pub fn kind_of(body: &str) -> Option<&str> {
    let rest = body.trim_start().strip_prefix(MARK_PREFIX)?;
    let (kind, _) = rest.split_once(" -->")?;
    let ok = !kind.is_empty()
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ok.then_some(kind)
}

/// `s` as an inline code span that nothing in `s` can end.
pub fn code(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if s.trim().is_empty() {
        return "(empty)".to_string();
    }
    let fence = "`".repeat(longest_run(&s, '`') + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') || (s.starts_with(' ') && s.ends_with(' '))
    {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// Free text from a person (a reject reason, say) quoted inside a sentence:
/// one line, cut at 500 characters, as a code span, so nothing in it is
/// markup, a mention or a link.
pub fn inline(s: &str) -> String {
    const MAX: usize = 500;
    let mut one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some((cut, _)) = one_line.char_indices().nth(MAX) {
        one_line.truncate(cut);
        one_line.push('…');
    }
    code(&one_line)
}

/// `s` as a fenced code block that nothing in `s` can close.
pub fn block(lang: &str, s: &str) -> String {
    let fence = "`".repeat((longest_run(s, '`') + 1).max(3));
    let mut body = s.to_string();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    format!("{fence}{lang}\n{body}{fence}\n")
}

fn longest_run(s: &str, ch: char) -> usize {
    let mut best = 0;
    let mut run = 0;
    for c in s.chars() {
        if c == ch {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

/// One of the bot's sentences as markdown: `"quoted"` values become code
/// spans, markdown punctuation is escaped, `@` cannot mention anyone and
/// nothing becomes HTML or a link.
pub fn prose(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '"'
            && let Some(len) = quoted_len(&s[i + 1..])
        {
            out.push_str(&code(&s[i + 1..i + 1 + len]));
            // Skip the quoted text and the closing quote.
            while chars.peek().is_some_and(|(j, _)| *j <= i + 1 + len) {
                chars.next();
            }
            continue;
        }
        match c {
            '@' => out.push_str("`@`"),
            '\n' | '\r' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|' | '~' | '&' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// The length of a `"…"` string's content (Rust debug quoting: `\"` and
/// `\\` inside), up to the closing quote.
fn quoted_len(after_open: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in after_open.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            '\n' => return None,
            _ => {}
        }
    }
    None
}

/// `1,234`
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1.4 GiB`
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

/// Items as code spans, the first `max` of them, then "… and 4,990 more".
fn code_list(items: &[String], max: usize) -> String {
    if items.is_empty() {
        return "none".to_string();
    }
    let mut s: Vec<String> = items.iter().take(max).map(|i| code(i)).collect();
    if items.len() > max {
        s.push(format!("… and {} more", thousands(items.len() - max)));
    }
    s.join(", ")
}

fn problem_line(p: &Problem) -> String {
    let field = if p.field == "body" { "Issue" } else { &p.field };
    let mut s = format!("- **{}**", prose(field));
    if let Some(line) = p.line {
        s.push_str(&format!(", line {line}"));
    }
    match &p.token {
        Some(token) => s.push_str(&format!(": {} {}", code(token), prose(&p.message))),
        None if p.line.is_some() => s.push_str(&format!(": {}", prose(&p.message))),
        None => s.push_str(&format!(" {}", prose(&p.message))),
    }
    s.push('\n');
    s
}

fn flag_lines(flags: &[Flag]) -> String {
    let mut s = String::new();
    for f in flags.iter().take(MAX_PROBLEMS) {
        s.push_str(&format!(
            "- **{}**: {} {}\n",
            prose(&f.field),
            code(&f.token),
            prose(&f.message)
        ));
    }
    if flags.len() > MAX_PROBLEMS {
        s.push_str(&format!(
            "- … and {} more\n",
            thousands(flags.len() - MAX_PROBLEMS)
        ));
    }
    s
}

const ACCEPTED: &str = "\
<details><summary>What the form accepts</summary>

- **Environment name**: lowercase letters, digits and single dashes, at most 40 characters, e.g. `nlp-course-2027`; it must not be taken yet.
- **Python packages (pip)**: one PyPI name per line, optionally with extras and version specifiers, e.g. `transformers>=4.46,<5` or `torch==2.5.*`. No URLs, `@` references, `;` markers, pip options such as `--index-url`, or conda channels.
- **System packages (apt)**: one Debian/Ubuntu package name per line, e.g. `libgl1`, optionally pinned as `name=version`. No options.
- **VS Code extensions**: one Open VSX id per line, `publisher.name`, e.g. `ms-python.python`.
- **Course or group**: the group that should see the environment, or empty for everyone.
- Lists may be wrapped in one code block and may use `- ` bullets; blank lines and lines starting with `#` are ignored.
- Only plain ASCII in names and packages: letters that merely look Latin (Cyrillic `а`, Greek `ο`, …), invisible characters and text-direction characters are refused everywhere.

</details>
";

/// The comment for a request that cannot go ahead yet: every problem with
/// where it is, and what to do.
pub fn problems(issue: u64, problems: &[Problem], flags: &[Flag]) -> String {
    let mut s = marker("request");
    s.push('\n');
    s.push_str(&format!("### Request #{issue} needs changes\n\n"));
    let n = problems.len();
    s.push_str(&format!(
        "Thanks for the request! I check every request before a maintainer looks at it, and {} this one from going ahead:\n\n",
        if n == 1 {
            "one problem stops".to_string()
        } else {
            format!("{} problems stop", thousands(n))
        }
    ));
    for p in problems.iter().take(MAX_PROBLEMS) {
        s.push_str(&problem_line(p));
    }
    if n > MAX_PROBLEMS {
        s.push_str(&format!("- … and {} more\n", thousands(n - MAX_PROBLEMS)));
    }
    if !flags.is_empty() {
        s.push_str("\nAlso worth a second look (these do not stop the request, but a maintainer will check them):\n\n");
        s.push_str(&flag_lines(flags));
    }
    s.push_str("\n**What to do next:** edit the issue (the **···** menu at the top of it, then **Edit**), fix the lines above and save. I check it again after every edit and update this comment. Nothing is built until a maintainer approves the request.\n\n");
    s.push_str(ACCEPTED);
    s
}

/// The comment for a valid request: what the environment will be, the
/// catalog file and the Dockerfile, and how a maintainer answers.
pub fn preview(request: &Request, preview: &Preview, flags: &[Flag]) -> String {
    let full = preview_text(request, preview, flags, true);
    if full.chars().count() <= MAX_COMMENT {
        return full;
    }
    preview_text(request, preview, flags, false)
}

fn preview_text(request: &Request, preview: &Preview, flags: &[Flag], files: bool) -> String {
    let mut s = marker("request");
    s.push('\n');
    s.push_str(&format!("### Preview of {}\n\n", code(&request.slug)));
    s.push_str("The request passed every check. Once a maintainer approves it, this is the environment that gets built:\n\n");
    s.push_str(&format!(
        "- **Environment name:** {}\n",
        code(&request.slug)
    ));
    let base = if preview.base.is_empty() {
        String::new()
    } else {
        format!(" (which starts from {})", code(&preview.base))
    };
    s.push_str(&format!(
        "- **Based on:** {}{base}\n",
        code(&request.based_on)
    ));
    s.push_str(&format!(
        "- **GPU:** {}\n",
        match &preview.gpu {
            Some(g) => prose(g),
            None => "no".to_string(),
        }
    ));
    s.push_str(&format!(
        "- **Visible to:** {}\n",
        match &request.course {
            Some(c) => format!("the group {}", code(c)),
            None => "everyone".to_string(),
        }
    ));
    for (what, items) in [
        ("Python packages", &request.pip),
        ("System packages", &request.apt),
        ("VS Code extensions", &request.vscode),
    ] {
        if !items.is_empty() {
            s.push_str(&format!(
                "- **{what} ({}):** {}\n",
                items.len(),
                code_list(items, MAX_LISTED)
            ));
        }
    }
    if !flags.is_empty() {
        s.push_str("\n**Needs a closer look** (a maintainer checks these before approving):\n\n");
        s.push_str(&flag_lines(flags));
    }
    if files {
        s.push_str(&format!("\n**Catalog file** {}:\n\n", code(&preview.file)));
        s.push_str(&block("yaml", &preview.yaml));
        s.push_str("\n<details><summary>Rendered Dockerfile</summary>\n\n");
        s.push_str(&block("dockerfile", &preview.dockerfile));
        s.push_str("\n</details>\n");
    } else {
        s.push_str(&format!(
            "\nThe catalog file {} and the Dockerfile are too long for a comment; the pull request shows them.\n",
            code(&preview.file)
        ));
    }
    s.push_str("\n**Next:** a maintainer can comment `/approve` to open a pull request that adds this file, or `/reject <reason>` to turn the request down. If you edit the issue, I check it again and update this preview; an approval is only for what it shows.\n");
    s
}

/// The answer to a command from someone who may not give it.
pub fn refusal(login: &str, command: &str) -> String {
    format!(
        "{}\n{} from {}: only maintainers of this repository (write access or more) can use it, so I ignored it. To change the request, edit the issue; I check it again after every edit.\n",
        marker("command"),
        code(command),
        code(login)
    )
}

/// A comment with the bot's own text (trusted markdown, not user input).
pub fn note(kind: &str, text: &str) -> String {
    format!("{}\n{text}\n", marker(kind))
}

/// One published image, for the result comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub image: String,
    pub digest: String,
    pub reference: String,
    pub size: Option<u64>,
    /// One-line scan summary.
    pub scan: String,
    /// The spawner profile's display name.
    pub profile: String,
    pub slug: String,
    /// Where to start it (the hub), if configured.
    pub launch: Option<String>,
}

/// A link target the bot may write: an http(s) URL with nothing that could
/// end the markdown link.
fn safe_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && !url
            .contains(|c: char| c.is_whitespace() || c.is_control() || "()<>[]\"'`\\".contains(c))
}

/// The comment after a successful build: where each image is and how to
/// start it.
pub fn published(results: &[Published]) -> String {
    let mut s = marker("result");
    s.push_str("\n### Published\n\n");
    s.push_str(if results.len() == 1 {
        "The environment is built, tested, scanned and published.\n\n"
    } else {
        "The environments are built, tested, scanned and published.\n\n"
    });
    for r in results {
        s.push_str(&format!("#### {}\n\n", code(&r.profile)));
        s.push_str(&format!("- **Image:** {}\n", code(&r.image)));
        s.push_str(&format!("- **Reference:** {}\n", code(&r.reference)));
        s.push_str(&format!("- **Digest:** {}\n", code(&r.digest)));
        if let Some(size) = r.size {
            s.push_str(&format!("- **Size:** {}\n", human_size(size)));
        }
        s.push_str(&format!("- **Scan:** {}\n", prose(&r.scan)));
        match &r.launch {
            Some(url) if safe_url(url) => s.push_str(&format!(
                "- **Start it:** [open JupyterHub]({url}) and choose {} (profile {})\n",
                code(&r.profile),
                code(&r.slug)
            )),
            Some(url) => s.push_str(&format!(
                "- **Start it:** at {} choose {} (profile {})\n",
                code(url),
                code(&r.profile),
                code(&r.slug)
            )),
            None => s.push_str(&format!(
                "- **Start it:** in JupyterHub, choose {} (profile {}) when you start a server\n",
                code(&r.profile),
                code(&r.slug)
            )),
        }
        s.push('\n');
    }
    s.push_str("It may take a minute before the hub lists it. If something is missing, open a new request based on it.\n");
    s
}

/// The comment after a failed build or publication. Each reason is shown
/// in a code block (it may quote anything the build printed); `log_hint`
/// is the bot's own markdown, e.g. where the full log is.
pub fn failed(images: &[(String, String)], log_hint: &str) -> String {
    let mut s = marker("result");
    s.push_str("\n### The build did not succeed\n\n");
    s.push_str("Nothing was published. What went wrong:\n\n");
    for (image, reason) in images {
        s.push_str(&format!("- {}:\n\n", code(image)));
        for line in block("text", reason).lines() {
            s.push_str("  ");
            s.push_str(line);
            s.push('\n');
        }
        s.push('\n');
    }
    if !log_hint.is_empty() {
        s.push_str(log_hint);
        s.push_str("\n\n");
    }
    s.push_str("A maintainer can comment `/retry` to run it again once the cause is fixed.\n");
    s
}

/// The body of the pull request that adds a request's catalog file.
pub fn pr_body(issue: u64, request: &Request, preview: &Preview) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Adds the environment {} requested in #{issue}.\n\n",
        code(&request.slug)
    ));
    s.push_str(&format!("- **File:** {}\n", code(&preview.file)));
    s.push_str(&format!(
        "- **Based on:** {}{}\n",
        code(&request.based_on),
        if preview.base.is_empty() {
            String::new()
        } else {
            format!(" (starts from {})", code(&preview.base))
        }
    ));
    s.push_str(&format!(
        "- **GPU:** {}\n",
        preview
            .gpu
            .as_deref()
            .map_or_else(|| "no".to_string(), prose)
    ));
    s.push_str(&format!(
        "- **Visible to:** {}\n",
        request.course.as_deref().map_or_else(
            || "everyone".to_string(),
            |c| format!("the group {}", code(c))
        )
    ));
    s.push_str(&format!(
        "- **Adds:** {}\n",
        entry::summary(request).map_or_else(|| "no packages".to_string(), |s| prose(&s))
    ));
    s.push_str(&format!("- **Requested by:** {}\n", code(&request.author)));
    s.push_str(&format!(
        "- **Content identity:** {}\n\n",
        code(&preview.identity)
    ));
    s.push_str("**Why** (the requester's words, unedited):\n\n");
    s.push_str(&block("text", &request.why));
    s.push_str("\n<details><summary>Rendered Dockerfile</summary>\n\n");
    s.push_str(&block("dockerfile", &preview.dockerfile));
    s.push_str("\n</details>\n\n");
    s.push_str(&format!(
        "Opened after a maintainer's approval on #{issue}. After the merge the pipeline builds, tests, scans and publishes the image, and the bot reports on the issue and closes it.\n"
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_cannot_be_closed_from_inside() {
        assert_eq!(code("numpy"), "`numpy`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("``x"), "``` ``x ```");
        assert_eq!(code(""), "(empty)");
        assert_eq!(code("a\nb"), "`a b`");
    }

    #[test]
    fn inline_text_is_one_inert_code_span() {
        assert_eq!(
            inline("we have  nlp-cpu\nfor this, @alice"),
            "`we have nlp-cpu for this, @alice`"
        );
        assert_eq!(inline("see `x`"), "`` see `x` ``");
        let long = inline(&"ä".repeat(600));
        assert_eq!(long.chars().count(), 500 + 1 + 2);
    }

    #[test]
    fn blocks_cannot_be_closed_from_inside() {
        let b = block("text", "x\n```\n````\ny");
        assert!(b.starts_with("`````text\n"), "{b}");
        assert!(b.ends_with("\n`````\n"), "{b}");
        assert_eq!(block("yaml", "a: 1"), "```yaml\na: 1\n```\n");
    }

    #[test]
    fn prose_quotes_become_code_and_nothing_is_markup() {
        assert_eq!(
            prose("is one typo away from \"numpy\"; check it"),
            "is one typo away from `numpy`; check it"
        );
        assert_eq!(prose("has \"a\\\"b\" x"), "has `a\\\"b` x");
        assert_eq!(
            prose("ask @admins <b>now</b>"),
            "ask `@`admins \\<b\\>now\\</b\\>"
        );
        assert_eq!(
            prose("[x](https://e.example)"),
            "\\[x\\](https://e.example)"
        );
        assert_eq!(prose("unclosed \"quote"), "unclosed \"quote");
    }

    #[test]
    fn markers_round_trip() {
        for kind in ["request", "result", "command"] {
            assert_eq!(kind_of(&format!("{}\nhello", marker(kind))), Some(kind));
        }
        assert_eq!(kind_of("hello <!-- labforge:request -->"), None);
        assert_eq!(kind_of("<!-- labforge:Bad Kind -->"), None);
        assert_eq!(kind_of(&note("result", "done")), Some("result"));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(4990), "4,990");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(
            human_size(3 * 1024 * 1024 * 1024 + 200 * 1024 * 1024),
            "3.2 GiB"
        );
        assert_eq!(human_size(700 * 1024 * 1024), "700 MiB");
    }

    #[test]
    fn long_lists_are_cut() {
        let items: Vec<String> = (0..5000).map(|i| format!("pkg{i}")).collect();
        let s = code_list(&items, 10);
        assert!(s.ends_with("… and 4,990 more"), "{s}");
        assert_eq!(s.matches('`').count(), 20);
    }

    #[test]
    fn refusals_do_not_mention_anyone() {
        let s = refusal("mallory", "/approve");
        assert!(s.starts_with("<!-- labforge:command -->\n"));
        assert!(
            s.contains("`/approve` from `mallory`: only maintainers"),
            "{s}"
        );
    }

    #[test]
    fn launch_links_only_for_plain_urls() {
        let mut p = Published {
            image: "x".into(),
            digest: "sha256:ab".into(),
            reference: "r/x@sha256:ab".into(),
            size: Some(2048),
            scan: "passed: 0 findings at or above high".into(),
            profile: "x".into(),
            slug: "x".into(),
            launch: Some("https://hub.example.edu/hub/spawn".into()),
        };
        let s = published(std::slice::from_ref(&p));
        assert!(
            s.contains("[open JupyterHub](https://hub.example.edu/hub/spawn)"),
            "{s}"
        );
        assert!(s.contains("**Size:** 2.0 KiB"), "{s}");
        p.launch = Some("https://x.example/a)(javascript:alert(1)".into());
        let s = published(&[p]);
        assert!(!s.contains("]("), "{s}");
    }

    #[test]
    fn failure_reasons_stay_in_code_blocks() {
        let s = failed(
            &[(
                "nlp-x".into(),
                "step 3 failed:\n```\n@admins <img src=x>".into(),
            )],
            "See `labforge history nlp-x`.",
        );
        assert!(
            s.contains("  ````text\n  step 3 failed:\n  ```\n  @admins <img src=x>\n  ````\n"),
            "{s}"
        );
        assert!(s.contains("See `labforge history nlp-x`."));
    }
}
