//! Slash commands in issue comments: `/approve`, `/reject <reason>`,
//! `/rebuild`, `/retry`.
//!
//! A command is a line that starts with `/word` (after at most three spaces,
//! as a markdown paragraph does). Lines inside fenced code blocks, in
//! indented code and in `>` quotes are not commands, so quoting a command
//! ("did you mean /approve?") or showing it in a code block never runs it,
//! and neither does `/approve` in the middle of a sentence. Whether the
//! author may use a command is the caller's business.

/// A command a maintainer gives in a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Open (or update) the pull request with the requested catalog file.
    Approve,
    /// Turn the request down; the reason is posted and the issue closed.
    Reject { reason: String },
    /// Build the request's images again, e.g. after a base was updated.
    Rebuild,
    /// Run a failed step (pull request, build, publication) again.
    Retry,
}

/// The commands, for messages: what a maintainer can type.
pub const KNOWN: &str = "/approve, /reject <reason>, /rebuild, /retry";

/// Every command line of a comment, in order: `Ok` for a command, `Err` with
/// a message for a malformed or unknown one. Lines that are not commands
/// are not mentioned.
pub fn parse(comment_body: &str) -> Vec<Result<Command, String>> {
    let mut out = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    for raw in comment_body.lines() {
        let line = raw.trim_end_matches('\r');
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = &line[indent..];
        if let Some((ch, len)) = fence {
            if indent <= 3 && closes(rest, ch, len) {
                fence = None;
            }
            continue;
        }
        if indent > 3 || rest.starts_with('\t') {
            continue; // indented code
        }
        if let Some(open) = opens(rest) {
            fence = Some(open);
            continue;
        }
        if rest.starts_with('>') {
            continue;
        }
        if let Some(command) = command_line(rest) {
            out.push(command);
        }
    }
    out
}

/// `Some((char, length))` for a line that opens a fenced code block.
fn opens(line: &str) -> Option<(char, usize)> {
    let ch = line.chars().next().filter(|c| matches!(c, '`' | '~'))?;
    let len = line.chars().take_while(|&c| c == ch).count();
    if len < 3 {
        return None;
    }
    // A backtick fence's info string may not contain backticks.
    if ch == '`' && line[len..].contains('`') {
        return None;
    }
    Some((ch, len))
}

fn closes(line: &str, ch: char, len: usize) -> bool {
    let n = line.chars().take_while(|&c| c == ch).count();
    n >= len && line[n * ch.len_utf8()..].trim().is_empty()
}

/// The command of a line that starts with `/word`; `None` when the line
/// starts with something else (a path such as `/usr/bin` is not a command).
fn command_line(line: &str) -> Option<Result<Command, String>> {
    let after = line.strip_prefix('/')?;
    let word_len = after
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(after.len());
    let (word, rest) = after.split_at(word_len);
    if !word.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return None;
    }
    let rest = rest.trim();
    Some(match word.to_ascii_lowercase().as_str() {
        "approve" => Ok(Command::Approve),
        "rebuild" => Ok(Command::Rebuild),
        "retry" => Ok(Command::Retry),
        "reject" if rest.is_empty() => {
            Err("/reject needs a reason the requester can read: /reject <reason>".to_string())
        }
        "reject" => Ok(Command::Reject {
            reason: rest.to_string(),
        }),
        _ => Err(format!("unknown command /{word}; known: {KNOWN}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, expected: &[Result<Command, &str>]) {
        let got = parse(body);
        let expected: Vec<Result<Command, String>> = expected
            .iter()
            .map(|e| e.clone().map_err(str::to_string))
            .collect();
        assert_eq!(got, expected, "{body:?}");
    }

    #[test]
    fn commands_at_the_start_of_a_line() {
        check("/approve", &[Ok(Command::Approve)]);
        check("  /APPROVE\n", &[Ok(Command::Approve)]);
        check(
            "/Rebuild\r\n/retry",
            &[Ok(Command::Rebuild), Ok(Command::Retry)],
        );
        check("Looks good.\n\n/approve thanks!", &[Ok(Command::Approve)]);
        check(
            "/reject   we already have nlp-cpu for this  ",
            &[Ok(Command::Reject {
                reason: "we already have nlp-cpu for this".into(),
            })],
        );
    }

    #[test]
    fn a_reject_without_a_reason_is_an_error() {
        check(
            "/reject",
            &[Err(
                "/reject needs a reason the requester can read: /reject <reason>",
            )],
        );
        check(
            "/reject   \n",
            &[Err(
                "/reject needs a reason the requester can read: /reject <reason>",
            )],
        );
    }

    #[test]
    fn unknown_commands_are_errors_paths_are_not_commands() {
        check(
            "/aprove",
            &[Err(
                "unknown command /aprove; known: /approve, /reject <reason>, /rebuild, /retry",
            )],
        );
        check("/usr/bin/python is missing", &[]);
        check("/ approve", &[]);
        check("/123", &[]);
        check("/approve/now", &[]);
    }

    #[test]
    fn prose_quotes_and_code_are_not_commands() {
        check("Can someone /approve this?", &[]);
        check("> /approve\n>/reject no", &[]);
        check("```\n/approve\n```\n", &[]);
        check(
            "~~~~text\n/approve\n~~~\n/retry\n~~~~\n/rebuild",
            &[Ok(Command::Rebuild)],
        );
        check("    /approve", &[]);
        check("\t/approve", &[]);
        check("`/approve`", &[]);
        // An unclosed fence runs to the end of the comment.
        check("```\n/approve", &[]);
    }
}
