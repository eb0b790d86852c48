//! The issue form as GitHub renders a submitted issue: for every field a
//! `### <label>` line, a blank line, the value (several lines for a
//! textarea) and a blank line; an optional field left empty reads
//! `_No response_`. Labels are mapped back to the field ids of
//! `.github/ISSUE_TEMPLATE/image-request.yml`.
//!
//! Only the structure is checked here (headings, duplicates, missing
//! fields); what a value may contain is `validate`'s business.

use indexmap::IndexMap;

use super::Problem;

/// The fields of `image-request.yml`: id, label, required. A test keeps this
/// in step with the form file.
pub const FIELDS: &[(&str, &str, bool)] = &[
    ("name", "Environment name", true),
    ("based-on", "Based on", true),
    ("gpu", "GPU needed", true),
    ("pip", "Python packages (pip)", false),
    ("apt", "System packages (apt)", false),
    ("vscode", "VS Code extensions", false),
    ("course", "Course or group", false),
    ("why", "Why", true),
];

/// What GitHub writes for an optional field left empty.
pub const NO_RESPONSE: &str = "_No response_";

/// The fields found in an issue body, in the order they appear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    /// Field id → value: line endings normalised to `\n`, trailing spaces and
    /// the blank lines around it removed, `""` for `_No response_`. Fields
    /// missing from the body are absent.
    pub fields: IndexMap<String, String>,
}

impl Form {
    /// The value of a field; `""` when it is empty or absent.
    pub fn get(&self, id: &str) -> &str {
        self.fields.get(id).map_or("", String::as_str)
    }

    /// Whether the body had the field's heading at all.
    pub fn has(&self, id: &str) -> bool {
        self.fields.contains_key(id)
    }
}

/// The label of a field id (the id itself for ids that are not in [`FIELDS`]).
pub fn label(id: &str) -> &str {
    FIELDS
        .iter()
        .find(|(i, _, _)| *i == id)
        .map_or(id, |(_, l, _)| l)
}

/// Parse an issue body. `Err` lists every structural problem: headings that
/// are not fields of the form, fields given twice, required fields missing,
/// text before the first field.
pub fn parse(body: &str) -> Result<Form, Vec<Problem>> {
    let (form, problems) = parse_lenient(body);
    if problems.is_empty() {
        Ok(form)
    } else {
        Err(problems)
    }
}

/// [`parse`], but keeping what could be read next to the problems, so that
/// validation reports the fields' problems in the same round.
pub(crate) fn parse_lenient(body: &str) -> (Form, Vec<Problem>) {
    let normalised = body.replace("\r\n", "\n").replace('\r', "\n");
    let mut problems = Vec::new();
    let mut form = Form::default();
    // (label as written, body line of the heading, value lines)
    let mut sections: Vec<(String, usize, Vec<&str>)> = Vec::new();
    let mut preamble: Vec<(usize, &str)> = Vec::new();
    for (i, line) in normalised.split('\n').enumerate() {
        if let Some(label) = heading(line) {
            sections.push((label.to_string(), i + 1, Vec::new()));
        } else if let Some((_, _, lines)) = sections.last_mut() {
            lines.push(line);
        } else {
            preamble.push((i + 1, line));
        }
    }
    if let Some((n, line)) = preamble.iter().find(|(_, l)| !l.trim().is_empty()) {
        problems.push(
            Problem::new(
                "body",
                format!(
                    "(line {n} of the issue) is text before the first field; edit the issue and keep only the form's fields"
                ),
            )
            .token(line.trim(), false),
        );
    }
    let mut seen: IndexMap<&'static str, usize> = IndexMap::new();
    for (label, at, lines) in &sections {
        let Some(&(id, known, _)) = FIELDS.iter().find(|(_, l, _)| same_label(l, label)) else {
            problems.push(
                Problem::new(
                    "body",
                    format!(
                        "(line {at} of the issue) is not a field of the form; edit the issue with the form (a heading \"### …\" inside an answer counts as one too)"
                    ),
                )
                .token(&format!("### {label}"), false),
            );
            continue;
        };
        if let Some(first) = seen.get(id) {
            problems.push(Problem::new(
                known,
                format!(
                    "appears twice (lines {first} and {at} of the issue); keep one, edit the issue with the form"
                ),
            ));
            continue;
        }
        seen.insert(id, *at);
        form.fields.insert(id.to_string(), value(lines));
    }
    for (id, known, required) in FIELDS {
        if *required && !form.has(id) {
            problems.push(Problem::new(
                known,
                "is missing from the issue; edit the issue with the form (or open a new one from the template)",
            ));
        }
    }
    (form, problems)
}

/// The label of a `### <label>` line.
fn heading(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("###")?;
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let label = rest.trim();
    (!label.is_empty()).then_some(label)
}

/// Labels match ignoring case and runs of whitespace.
fn same_label(known: &str, written: &str) -> bool {
    let mut a = known.split_whitespace();
    let mut b = written.split_whitespace();
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => {}
            _ => return false,
        }
    }
}

/// The answer between two headings, as the requester typed it.
fn value(lines: &[&str]) -> String {
    let trimmed: Vec<&str> = lines.iter().map(|l| l.trim_end()).collect();
    let start = trimmed.iter().position(|l| !l.is_empty());
    let end = trimmed.iter().rposition(|l| !l.is_empty());
    let text = match (start, end) {
        (Some(s), Some(e)) => trimmed[s..=e].join("\n"),
        _ => String::new(),
    };
    if text.trim() == NO_RESPONSE {
        String::new()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_between_headings() {
        let body = "### Environment name\r\n\r\nnlp-course  \r\n\r\n### Why\r\n\r\nline one\r\n\r\nline three\r\n\r\n### Based on\n\nnlp-cpu\n\n### GPU needed\n\nNo\n\n### Course or group\n\n_No response_\n";
        let form = parse(body).expect("valid form");
        assert_eq!(form.get("name"), "nlp-course");
        assert_eq!(form.get("why"), "line one\n\nline three");
        assert_eq!(form.get("based-on"), "nlp-cpu");
        assert_eq!(form.get("course"), "");
        assert!(form.has("course"));
        assert!(!form.has("pip"));
        assert_eq!(
            form.fields.keys().collect::<Vec<_>>(),
            ["name", "why", "based-on", "gpu", "course"]
        );
    }

    #[test]
    fn labels_match_ignoring_case_and_spacing() {
        let body = "###  environment   NAME \n\nx\n\n### based on\n\ny\n\n### GPU needed\n\nNo\n\n### Why\n\nz\n";
        let form = parse(body).expect("valid form");
        assert_eq!(form.get("name"), "x");
        assert_eq!(form.get("based-on"), "y");
    }

    #[test]
    fn structural_problems_are_all_reported() {
        let body = "hello\n### Environment name\n\nx\n\n### Environment name\n\ny\n\n### Shell\n\nrm -rf /\n\n### GPU needed\n\nNo\n";
        let problems = parse(body).expect_err("broken form");
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            text[0].starts_with("body: \"hello\" (line 1 of the issue) is text before"),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("Environment name appears twice (lines 2 and 6")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t
                    .contains("\"### Shell\" (line 10 of the issue) is not a field of the form")),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t == "Based on is missing from the issue; edit the issue with the form (or open a new one from the template)"), "{text:?}");
        assert!(
            text.iter().any(|t| t.starts_with("Why is missing")),
            "{text:?}"
        );
        assert_eq!(problems.len(), 5, "{text:?}");
        // The first value of a field given twice is kept.
        let (form, _) = parse_lenient(body);
        assert_eq!(form.get("name"), "x");
    }

    #[test]
    fn whitespace_before_the_first_heading_is_ignored() {
        let body = "\n  \n### Environment name\n\nx\n\n### Based on\n\ny\n\n### GPU needed\n\nNo\n\n### Why\n\nz";
        assert!(parse(body).is_ok());
    }

    #[test]
    fn other_heading_levels_are_part_of_the_value() {
        let body = "### Environment name\n\nx\n\n### Based on\n\ny\n\n### GPU needed\n\nNo\n\n### Why\n\n## Background\n#### Details\n###no-space\n";
        let form = parse(body).expect("valid form");
        assert_eq!(form.get("why"), "## Background\n#### Details\n###no-space");
    }
}
